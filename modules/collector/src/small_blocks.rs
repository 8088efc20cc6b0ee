//! The module's global allocator: the C library's `malloc` (wasi-libc's
//! dlmalloc, as Rust's default allocator on `wasm32-wasip2`), with freed small
//! blocks kept on per-size free lists and handed out again without a call into
//! `malloc`.
//!
//! Why: parsing allocates a few strings per record and frees them a batch
//! later. In the module, dlmalloc's `malloc` and `free` and the calls leading
//! to them took about a tenth of the collector's samples; a free-list push or
//! pop is a few instructions. With this allocator dlmalloc takes under 1 %,
//! and the module's code 8 % fewer samples.
//!
//! Why not a different allocator (such as `talc`): the standard library's
//! `cabi_realloc`, which the host calls to hand lists and strings to the
//! guest, allocates through the global allocator, and wasi-libc releases the
//! WASI results it receives with `free`. Every block must therefore be a
//! `malloc` block (an allocator with a heap of its own corrupted dlmalloc's
//! on the first such `free`: tried). Here it is: a small block is `malloc`ed at its class's
//! full size, kept on its class's list when freed, and is still the same
//! `malloc` block whoever frees it in the end.
//!
//! Bounds: sizes up to [`LARGEST`] bytes with alignment up to [`ALIGN`] are
//! rounded up to a multiple of [`GRAIN`]; a class keeps at most
//! [`KEPT_BYTES_PER_CLASS`] of freed blocks and frees the rest, so the lists
//! hold at most `CLASSES * KEPT_BYTES_PER_CLASS` (2 MiB). Everything else goes
//! to `malloc`, `realloc` and `free` unchanged.
//!
//! One thread: `wasm32-wasip2` has no threads, and the allocator calls nothing
//! that allocates through it, so its lists are never entered twice at once.
//! The global instance is registered for `wasm32` only; the tests use their
//! own instances natively.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;
use std::ptr::null_mut;

/// Size classes are multiples of this many bytes.
pub const GRAIN: usize = 16;
/// Largest size kept on a list.
pub const LARGEST: usize = 512;
/// Largest alignment of a kept block: what `malloc` gives every block on
/// `wasm32` (the standard library's `System` calls `malloc` up to it).
pub const ALIGN: usize = 8;
/// Number of size classes: `GRAIN`, `2 * GRAIN`, ... `LARGEST`.
pub const CLASSES: usize = LARGEST / GRAIN;
/// Most bytes of freed blocks one class keeps.
pub const KEPT_BYTES_PER_CLASS: usize = 64 * 1024;

/// A freed block on a list: its first bytes point to the next one.
struct Free {
    next: *mut Free,
}

/// One class's freed blocks.
#[derive(Clone, Copy)]
struct List {
    head: *mut Free,
    len: usize,
}

/// `malloc` with per-class lists of freed small blocks (see the module
/// documentation).
pub struct SmallBlocks {
    lists: UnsafeCell<[List; CLASSES]>,
}

// SAFETY: only ever used by one thread at a time: the global instance lives
// in a `wasm32-wasip2` module, which has no threads, and each test uses its
// own instance on its own thread.
unsafe impl Sync for SmallBlocks {}

impl Default for SmallBlocks {
    fn default() -> SmallBlocks {
        SmallBlocks::new()
    }
}

impl SmallBlocks {
    /// Empty lists.
    pub const fn new() -> SmallBlocks {
        SmallBlocks {
            lists: UnsafeCell::new(
                [List {
                    head: null_mut(),
                    len: 0,
                }; CLASSES],
            ),
        }
    }

    /// The class of a block of `layout`, if it is small enough to keep.
    fn class(layout: Layout) -> Option<usize> {
        (layout.size() <= LARGEST && layout.align() <= ALIGN)
            .then(|| layout.size().saturating_sub(1) / GRAIN)
    }

    /// The layout every block of class `class` is `malloc`ed with.
    fn block(class: usize) -> Layout {
        // A multiple of GRAIN up to LARGEST, aligned to ALIGN: always valid.
        Layout::from_size_align((class + 1) * GRAIN, ALIGN).expect("a valid block layout")
    }

    /// Most blocks class `class` keeps.
    fn kept(class: usize) -> usize {
        KEPT_BYTES_PER_CLASS / ((class + 1) * GRAIN)
    }

    /// Blocks now kept on each class's list (tests).
    #[cfg(test)]
    fn lengths(&self) -> [usize; CLASSES] {
        // SAFETY: one thread (see `Sync`); the reference does not outlive
        // this statement.
        unsafe { *self.lists.get() }.map(|l| l.len)
    }
}

// SAFETY: every block handed out is a `malloc` block at least as large and as
// aligned as its layout asks: a kept class's blocks are all `malloc`ed at the
// class's full size (`block`), and only blocks of that class (by the layout
// they were allocated with, which `dealloc` and `realloc` are given again)
// go back on its list; other layouts go to `System` unchanged.
unsafe impl GlobalAlloc for SmallBlocks {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some(class) = Self::class(layout) else {
            // SAFETY: the caller's layout, passed on.
            return unsafe { System.alloc(layout) };
        };
        // SAFETY: one thread, and nothing below allocates through us.
        let list = unsafe { &mut (*self.lists.get())[class] };
        let head = list.head;
        if head.is_null() {
            // SAFETY: a non-zero size.
            return unsafe { System.alloc(Self::block(class)) };
        }
        // SAFETY: `head` is a freed block of this class that `dealloc` put
        // here, with the next pointer written into its first bytes.
        list.head = unsafe { (*head).next };
        list.len -= 1;
        head.cast()
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let Some(class) = Self::class(layout) else {
            // SAFETY: allocated by `System` with this layout (`alloc`).
            return unsafe { System.dealloc(ptr, layout) };
        };
        // SAFETY: one thread, and nothing below allocates through us.
        let list = unsafe { &mut (*self.lists.get())[class] };
        if list.len >= Self::kept(class) {
            // SAFETY: a block of this class was `malloc`ed as `block(class)`.
            return unsafe { System.dealloc(ptr, Self::block(class)) };
        }
        let free: *mut Free = ptr.cast();
        // SAFETY: the block is at least GRAIN bytes and ALIGN-aligned
        // (`block`), enough for the pointer written into it, and the caller
        // gave it up.
        unsafe { free.write(Free { next: list.head }) };
        list.head = free;
        list.len += 1;
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller promises a valid size for this alignment.
        let new = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        match (Self::class(layout), Self::class(new)) {
            // The block already holds `new_size` bytes.
            (Some(old), Some(now)) if old == now => ptr,
            // SAFETY: allocated by `System` with `layout`.
            (None, None) => unsafe { System.realloc(ptr, layout, new_size) },
            _ => {
                // SAFETY: a non-zero size (the caller's promise).
                let moved = unsafe { self.alloc(new) };
                if !moved.is_null() {
                    // SAFETY: both blocks hold at least the bytes copied,
                    // and they are different blocks.
                    unsafe {
                        std::ptr::copy_nonoverlapping(ptr, moved, layout.size().min(new_size));
                        self.dealloc(ptr, layout);
                    }
                }
                moved
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Live blocks, each filled with its own byte: any block handed out
    /// twice, or overlapping another, or not holding its size, shows as a
    /// byte changed under a live block.
    struct Live {
        blocks: Vec<(*mut u8, Layout, u8)>,
    }

    impl Live {
        fn fill(ptr: *mut u8, layout: Layout, byte: u8) {
            // SAFETY: the block holds `layout.size()` bytes.
            unsafe { std::ptr::write_bytes(ptr, byte, layout.size()) };
        }

        fn check(&self) {
            for &(ptr, layout, byte) in &self.blocks {
                assert_eq!(ptr as usize % layout.align(), 0, "aligned");
                // SAFETY: a live block of `layout.size()` bytes.
                let bytes = unsafe { std::slice::from_raw_parts(ptr, layout.size()) };
                assert!(bytes.iter().all(|b| *b == byte), "block intact");
            }
        }
    }

    #[test]
    fn blocks_are_reused_never_shared_and_keep_their_bytes() {
        let a = SmallBlocks::new();
        let mut live = Live { blocks: Vec::new() };
        let mut state = 0x853C_49E6_748F_EA9Bu64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut reused = 0;
        for step in 0..200_000u32 {
            let byte = (step % 251) as u8;
            match next() % 4 {
                0 | 1 => {
                    let size = 1 + (next() % 700) as usize;
                    let align = [1, 2, 4, 8, 16][(next() % 5) as usize];
                    let layout = Layout::from_size_align(size, align).unwrap();
                    let before = a.lengths();
                    // SAFETY: a non-zero size.
                    let ptr = unsafe { a.alloc(layout) };
                    assert!(!ptr.is_null());
                    if let Some(c) = SmallBlocks::class(layout) {
                        reused += usize::from(a.lengths()[c] < before[c]);
                    }
                    Live::fill(ptr, layout, byte);
                    live.blocks.push((ptr, layout, byte));
                }
                2 if !live.blocks.is_empty() => {
                    let i = (next() % live.blocks.len() as u64) as usize;
                    let (ptr, layout, _) = live.blocks.swap_remove(i);
                    // SAFETY: allocated by `a` with `layout`, freed once.
                    unsafe { a.dealloc(ptr, layout) };
                }
                _ if !live.blocks.is_empty() => {
                    let i = (next() % live.blocks.len() as u64) as usize;
                    let (ptr, layout, old) = live.blocks[i];
                    let size = 1 + (next() % 700) as usize;
                    // SAFETY: allocated by `a` with `layout`; a non-zero size.
                    let moved = unsafe { a.realloc(ptr, layout, size) };
                    assert!(!moved.is_null());
                    let new = Layout::from_size_align(size, layout.align()).unwrap();
                    // SAFETY: the moved block holds `size` bytes.
                    let kept =
                        unsafe { std::slice::from_raw_parts(moved, layout.size().min(size)) };
                    assert!(kept.iter().all(|b| *b == old), "realloc keeps the bytes");
                    Live::fill(moved, new, byte);
                    live.blocks[i] = (moved, new, byte);
                }
                _ => {}
            }
            if step % 1000 == 0 {
                live.check();
                for (class, len) in a.lengths().into_iter().enumerate() {
                    assert!(len <= SmallBlocks::kept(class), "class {class} keeps {len}");
                }
            }
        }
        live.check();
        assert!(
            reused > 10_000,
            "freed blocks were handed out again: {reused}"
        );
        for (ptr, layout, _) in live.blocks.drain(..) {
            // SAFETY: allocated by `a` with `layout`, freed once.
            unsafe { a.dealloc(ptr, layout) };
        }
    }

    #[test]
    fn classes_bound_what_they_keep() {
        let a = SmallBlocks::new();
        let layout = Layout::from_size_align(24, 8).unwrap();
        let blocks: Vec<*mut u8> = (0..10_000)
            // SAFETY: a non-zero size.
            .map(|_| unsafe { a.alloc(layout) })
            .collect();
        for ptr in blocks {
            // SAFETY: allocated by `a` with `layout`, freed once.
            unsafe { a.dealloc(ptr, layout) };
        }
        let class = SmallBlocks::class(layout).unwrap();
        assert_eq!(a.lengths()[class], KEPT_BYTES_PER_CLASS / 32);
        assert_eq!(a.lengths().iter().sum::<usize>(), KEPT_BYTES_PER_CLASS / 32);
        // Larger or over-aligned layouts are never kept.
        for layout in [
            Layout::from_size_align(LARGEST + 1, 8).unwrap(),
            Layout::from_size_align(64, 16).unwrap(),
        ] {
            assert_eq!(SmallBlocks::class(layout), None);
        }
    }
}
