//! Giving back memory the host does not use while it waits (#14: idle RSS).
//!
//! A host waiting for its next collection still holds pages it touched
//! while it started or worked: code of its binary and libraries (the kernel
//! maps up to 16 neighbours around every page a fault brings in, so a few
//! hundred kilobytes of code run become megabytes resident) and heap the
//! allocator freed but kept. None of it is needed to wait. Once the process
//! has used under [`IDLE_CPU_PERMILLE`] of one CPU for a whole period
//! (`[supervisor] idle-trim-secs`), the trimmer hands it back: once after
//! each busy stretch, and again whenever the idle process has grown by
//! [`REGROWTH_BYTES`] since its last trim:
//!
//! - Linux: `malloc_trim(0)` (glibc) returns freed heap to the system; then
//!   each mapping of the executable or a shared library that is not
//!   writable and holds no private (copied-on-write) page is dropped from the
//!   process with `madvise(MADV_DONTNEED)`. Its pages stay in the page cache
//!   and come back through a minor fault when used again; the bytes are the
//!   file's either way. A mapping holding a private page (read-only data the
//!   loader relocated) is left alone: dropping it would bring back the
//!   file's unrelocated bytes.
//! - Windows: `SetProcessWorkingSetSize(process, -1, -1)`, the documented
//!   way to empty a working set; the pages move to the standby list and come
//!   back on use.
//! - elsewhere: nothing is trimmed.
//!
//! Architecture Invariant: a trim never changes a byte the process can
//! read; it only changes which pages are resident.
#![allow(unsafe_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Below this much CPU time per wall time (per mille of one CPU) a period
/// counts as idle.
pub const IDLE_CPU_PERMILLE: u64 = 10;

static TRIMS: AtomicU64 = AtomicU64::new(0);

/// Trims done since the process started (`outpost_idle_trims` on `/metrics`).
pub fn trims_total() -> u64 {
    TRIMS.load(Ordering::Relaxed)
}

/// What one trim did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Trimmed {
    /// Mappings dropped (Linux) or 1 for the working set (Windows).
    pub regions: u32,
    /// Bytes of the address space those mappings cover (Linux).
    pub bytes: u64,
}

/// An idle host whose resident memory grew by this much since its last
/// trim (timers, heartbeats and module calls map code back in) trims again.
pub const REGROWTH_BYTES: u64 = 1 << 20;

/// Start the trimmer thread: every `period`, if the process was idle for the
/// whole period and either was busy since its last trim or has grown by
/// [`REGROWTH_BYTES`] since, trim. The thread ends with the process.
pub fn spawn(period: Duration) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("outpost-trim".into())
        .spawn(move || {
            let mut last = cpu_time();
            let mut policy = Policy::default();
            loop {
                std::thread::sleep(period);
                let (Some(before), Some(after)) = (last, cpu_time()) else {
                    // No CPU clock on this platform: never trim.
                    return;
                };
                if policy.should_trim(period, after.saturating_sub(before), resident_bytes()) {
                    match trim() {
                        Ok(t) => tracing::debug!(
                            target: "outpost.trim",
                            regions = t.regions,
                            mib = t.bytes >> 20,
                            "idle: memory handed back"
                        ),
                        Err(e) => {
                            tracing::debug!(target: "outpost.trim", error = %e, "idle trim failed")
                        }
                    }
                    policy.trimmed(resident_bytes());
                }
                // The trim's own CPU time does not count against the next period.
                last = cpu_time();
            }
        })
        .map(drop)
}

/// When to trim.
#[derive(Debug)]
struct Policy {
    /// Busy since the last trim (or never trimmed).
    busy_since: bool,
    /// Resident bytes right after the last trim.
    after_last: Option<u64>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            busy_since: true,
            after_last: None,
        }
    }
}

impl Policy {
    /// A period of `period` ended in which the process used `cpu`; it holds
    /// `resident` bytes now.
    fn should_trim(&mut self, period: Duration, cpu: Duration, resident: Option<u64>) -> bool {
        let idle = cpu.as_micros() * 1000 < period.as_micros() * IDLE_CPU_PERMILLE as u128;
        if !idle {
            self.busy_since = true;
            return false;
        }
        let regrown = match (self.after_last, resident) {
            (Some(after), Some(now)) => now >= after.saturating_add(REGROWTH_BYTES),
            _ => false,
        };
        self.busy_since || regrown
    }

    fn trimmed(&mut self, resident: Option<u64>) {
        self.busy_since = false;
        self.after_last = resident;
    }
}

/// Trim now (see the module docs).
pub fn trim() -> std::io::Result<Trimmed> {
    let t = imp::trim()?;
    TRIMS.fetch_add(1, Ordering::Relaxed);
    Ok(t)
}

/// Bytes resident now (VmRSS on Linux, the working set on Windows), if
/// known (`outpost_process_resident_bytes`).
pub fn resident_bytes() -> Option<u64> {
    imp::resident_bytes()
}

/// CPU time (user + system) of this process so far.
pub fn cpu_time() -> Option<Duration> {
    imp::cpu_time()
}

#[cfg(target_os = "linux")]
mod imp {
    use super::Trimmed;
    use std::time::Duration;

    pub fn trim() -> std::io::Result<Trimmed> {
        #[cfg(target_env = "gnu")]
        // SAFETY: malloc_trim only returns free memory of the allocator's
        // arenas to the system; it takes the arenas' locks itself.
        unsafe {
            libc::malloc_trim(0);
        }
        let smaps = std::fs::read_to_string("/proc/self/smaps")?;
        let exe = std::fs::read_link("/proc/self/exe").ok();
        let mut t = Trimmed::default();
        for region in droppable(&smaps, exe.as_deref()) {
            // SAFETY: the range is a whole mapping of a file that is not
            // writable and holds no private page (read from smaps just
            // before): after MADV_DONTNEED its pages read back the file's
            // bytes, which are the bytes it held. No Rust object lives in it.
            let rc = unsafe {
                libc::madvise(
                    region.start as *mut libc::c_void,
                    region.len,
                    libc::MADV_DONTNEED,
                )
            };
            if rc == 0 {
                t.regions += 1;
                t.bytes += region.len as u64;
            }
        }
        Ok(t)
    }

    /// One mapping that may be dropped.
    #[derive(Debug, PartialEq, Eq)]
    pub struct Region {
        pub start: usize,
        pub len: usize,
    }

    /// The mappings of `smaps` that may be dropped: of the executable
    /// (`exe`) or a shared library, not writable, no private page
    /// (`Anonymous: 0 kB`), not locked.
    pub fn droppable(smaps: &str, exe: Option<&std::path::Path>) -> Vec<Region> {
        let mut out = Vec::new();
        let mut current: Option<(Region, bool)> = None;
        let flush = |c: Option<(Region, bool)>, out: &mut Vec<Region>| {
            if let Some((r, true)) = c {
                out.push(r);
            }
        };
        for line in smaps.lines() {
            let mut fields = line.split_ascii_whitespace();
            let first = fields.next().unwrap_or("");
            if let Some((a, b)) = first.split_once('-')
                && let (Ok(start), Ok(end)) =
                    (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
            {
                flush(current.take(), &mut out);
                let perms = fields.next().unwrap_or("");
                let path = fields.nth(3).unwrap_or("");
                let rest: Vec<&str> = fields.collect();
                let file = path.starts_with('/') && rest.is_empty();
                let ours =
                    exe.is_some_and(|e| std::path::Path::new(path) == e) || path.contains(".so");
                let ok = file
                    && ours
                    && !path.starts_with("/memfd:")
                    && perms.starts_with('r')
                    && perms.as_bytes().get(1) == Some(&b'-')
                    && perms.ends_with('p')
                    && end > start;
                current = Some((
                    Region {
                        start,
                        len: end - start,
                    },
                    ok,
                ));
                continue;
            }
            // Private, locked or huge pages in the mapping: leave it.
            let counted = matches!(first, "Anonymous:" | "Locked:" | "AnonHugePages:");
            if counted
                && fields.next().is_none_or(|v| v != "0")
                && let Some((_, ok)) = current.as_mut()
            {
                *ok = false;
            }
        }
        flush(current.take(), &mut out);
        out
    }

    pub fn resident_bytes() -> Option<u64> {
        let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
        let pages: u64 = statm.split_ascii_whitespace().nth(1)?.parse().ok()?;
        Some(pages * 4096)
    }

    pub fn cpu_time() -> Option<Duration> {
        super::unix_cpu_time()
    }
}

#[cfg(windows)]
mod imp {
    use super::Trimmed;
    use std::time::Duration;
    use windows_sys::Win32::Foundation::FILETIME;
    use windows_sys::Win32::System::ProcessStatus::{
        K32GetProcessMemoryInfo, PROCESS_MEMORY_COUNTERS,
    };
    use windows_sys::Win32::System::Threading::{
        GetCurrentProcess, GetProcessTimes, SetProcessWorkingSetSize,
    };

    pub fn trim() -> std::io::Result<Trimmed> {
        // SAFETY: the pseudo-handle of this process; (-1, -1) asks the
        // system to remove as many pages as it can from the working set.
        let ok = unsafe { SetProcessWorkingSetSize(GetCurrentProcess(), usize::MAX, usize::MAX) };
        if ok == 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Trimmed {
            regions: 1,
            bytes: 0,
        })
    }

    pub fn resident_bytes() -> Option<u64> {
        // SAFETY: the counters struct is ours and its size is passed.
        unsafe {
            let mut c: PROCESS_MEMORY_COUNTERS = std::mem::zeroed();
            c.cb = std::mem::size_of::<PROCESS_MEMORY_COUNTERS>() as u32;
            (K32GetProcessMemoryInfo(GetCurrentProcess(), &mut c, c.cb) != 0)
                .then_some(c.WorkingSetSize as u64)
        }
    }

    pub fn cpu_time() -> Option<Duration> {
        let zero = FILETIME {
            dwLowDateTime: 0,
            dwHighDateTime: 0,
        };
        let (mut created, mut exited, mut kernel, mut user) = (zero, zero, zero, zero);
        // SAFETY: four FILETIMEs we own.
        let ok = unsafe {
            GetProcessTimes(
                GetCurrentProcess(),
                &mut created,
                &mut exited,
                &mut kernel,
                &mut user,
            )
        };
        if ok == 0 {
            return None;
        }
        let ticks = |f: FILETIME| ((f.dwHighDateTime as u64) << 32) | f.dwLowDateTime as u64;
        // FILETIME counts 100 ns.
        Some(Duration::from_nanos((ticks(kernel) + ticks(user)) * 100))
    }
}

#[cfg(not(any(target_os = "linux", windows)))]
mod imp {
    use super::Trimmed;
    use std::time::Duration;

    pub fn trim() -> std::io::Result<Trimmed> {
        Ok(Trimmed::default())
    }

    pub fn resident_bytes() -> Option<u64> {
        None
    }

    pub fn cpu_time() -> Option<Duration> {
        #[cfg(unix)]
        {
            super::unix_cpu_time()
        }
        #[cfg(not(unix))]
        {
            None
        }
    }
}

#[cfg(unix)]
fn unix_cpu_time() -> Option<Duration> {
    // SAFETY: getrusage writes into the struct we own.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } != 0 {
        return None;
    }
    let t = |v: libc::timeval| {
        Duration::from_secs(v.tv_sec as u64) + Duration::from_micros(v.tv_usec as u64)
    };
    Some(t(u.ru_utime) + t(u.ru_stime))
}

#[cfg(test)]
mod policy_tests {
    use super::{Policy, REGROWTH_BYTES};
    use std::time::Duration;

    #[test]
    fn trims_once_idle_and_again_only_after_work_or_regrowth() {
        let p = Duration::from_secs(30);
        let mut policy = Policy::default();
        let mib = 1 << 20;
        // Starting up: busy.
        assert!(!policy.should_trim(p, Duration::from_secs(2), Some(30 * mib)));
        // The first idle period trims.
        assert!(policy.should_trim(p, Duration::from_millis(20), Some(30 * mib)));
        policy.trimmed(Some(14 * mib));
        // Idle, grown less than the threshold: no trim.
        assert!(!policy.should_trim(
            p,
            Duration::from_millis(5),
            Some(14 * mib + REGROWTH_BYTES - 1)
        ));
        // Idle and regrown: trim again.
        assert!(policy.should_trim(p, Duration::from_millis(5), Some(14 * mib + REGROWTH_BYTES)));
        policy.trimmed(Some(14 * mib));
        // 1 % of the period or more is not idle; the next idle period trims.
        assert!(!policy.should_trim(p, Duration::from_millis(300), Some(14 * mib)));
        assert!(policy.should_trim(p, Duration::from_millis(299), Some(14 * mib)));
        policy.trimmed(None);
        // Without a resident figure, only work re-arms it.
        assert!(!policy.should_trim(p, Duration::ZERO, None));
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::imp::{Region, droppable};

    const SMAPS: &str = "\
55d0c0000000-55d0c1000000 r--p 00000000 fd:01 123 /opt/outpost/bin/outpost
Size:              16384 kB
Rss:                4000 kB
Anonymous:             0 kB
Locked:                0 kB
55d0c1000000-55d0c3000000 r-xp 01000000 fd:01 123 /opt/outpost/bin/outpost
Rss:               14000 kB
Anonymous:             0 kB
55d0c3000000-55d0c3100000 r--p 03000000 fd:01 123 /opt/outpost/bin/outpost
Rss:                1000 kB
Anonymous:          1000 kB
55d0c3100000-55d0c3200000 rw-p 03100000 fd:01 123 /opt/outpost/bin/outpost
Anonymous:            40 kB
7f00a0000000-7f00a0200000 r-xp 00000000 fd:01 77 /usr/lib/x86_64-linux-gnu/libc.so.6
Anonymous:             0 kB
7f00a0200000-7f00a0300000 r-xp 00000000 00:00 0
Anonymous:             0 kB
7f00a0300000-7f00a0400000 r--p 00000000 00:01 9 /memfd:wasm-memory-image (deleted)
Anonymous:             0 kB
7f00a0400000-7f00a0500000 r--p 00000000 fd:01 55 /var/lib/outpost/data.bin
Anonymous:             0 kB
7f00a0500000-7f00a0600000 r-xp 00000000 fd:01 56 /usr/lib/libmlocked.so
Anonymous:             0 kB
Locked:              512 kB
7f00a0600000-7f00a0700000 r--s 00000000 fd:01 57 /usr/lib/libshared.so
Anonymous:             0 kB
";

    #[test]
    fn only_unwritable_file_mappings_without_private_pages_are_dropped() {
        let exe = std::path::Path::new("/opt/outpost/bin/outpost");
        let got = droppable(SMAPS, Some(exe));
        assert_eq!(
            got,
            [
                Region {
                    start: 0x55d0c0000000,
                    len: 0x1000000
                },
                Region {
                    start: 0x55d0c1000000,
                    len: 0x2000000
                },
                Region {
                    start: 0x7f00a0000000,
                    len: 0x200000
                },
            ],
            "not: relocated read-only data, writable data, anonymous code, memfd, other files, locked or shared mappings"
        );
    }

    #[test]
    fn a_trim_keeps_every_byte_the_process_reads() {
        // The executable's code and a static table before and after.
        static TABLE: [u64; 4096] = {
            let mut t = [0u64; 4096];
            let mut i = 0;
            while i < 4096 {
                t[i] = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                i += 1;
            }
            t
        };
        let sum = |t: &[u64]| t.iter().fold(0u64, |a, b| a.wrapping_add(*b));
        let before = sum(std::hint::black_box(&TABLE));
        let t = super::trim().unwrap();
        assert!(t.regions > 0, "{t:?}");
        assert_eq!(sum(std::hint::black_box(&TABLE)), before);
        assert!(super::trims_total() >= 1);
        assert!(super::resident_bytes().unwrap() > 0);
    }
}
