//! Module output → the host log: `log.write` lines and stdout/stderr, one
//! line at a time, tagged with the module.
//!
//! Bounded: every line is cut to [`crate::untrusted::MAX_LOG_LINE_BYTES`],
//! passes the PHI guard and has its control characters escaped
//! ([`crate::untrusted::clean`]); and all three paths of one call share one
//! budget of lines and bytes per call, and each module one per minute
//! ([`OutputBudget`]), so reopening stderr or switching streams gains
//! nothing. What is over budget is dropped and counted; the count is logged
//! once per call and kept per module ([`ModuleOutput`]).

use crate::untrusted;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

/// Most lines one call may log (all paths together).
pub const MAX_OUTPUT_LINES_PER_CALL: u32 = 1_000;
/// Most bytes one call may log (all paths together, before escaping).
pub const MAX_OUTPUT_BYTES_PER_CALL: u64 = 256 * 1024;
/// Most lines one module may log per minute.
pub const MAX_OUTPUT_LINES_PER_MINUTE: u32 = 3_000;
/// Most bytes one module may log per minute.
pub const MAX_OUTPUT_BYTES_PER_MINUTE: u64 = 1 << 20;
/// Bytes of one stdout/stderr line buffered before the rest of the line is
/// dropped (the line is then cut to the log line limit anyway).
const MAX_PENDING_LINE_BYTES: usize = untrusted::MAX_LOG_LINE_BYTES + 1;

/// Which path a line came by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    /// stdout
    Stdout,
    /// stderr
    Stderr,
    /// `log.write` at debug level.
    LogDebug,
    /// `log.write` at info or notice level.
    LogInfo,
    /// `log.write` at warning level.
    LogWarn,
    /// `log.write` at error or critical level.
    LogError,
}

/// A module's output counters, kept across calls.
#[derive(Default)]
pub struct ModuleOutput {
    window: Mutex<Window>,
    /// Lines dropped over budget since the host started.
    pub cut_lines: AtomicU64,
    /// Bytes dropped over budget since the host started.
    pub cut_bytes: AtomicU64,
}

struct Window {
    start: Instant,
    lines: u32,
    bytes: u64,
}

impl Default for Window {
    fn default() -> Self {
        Window {
            start: Instant::now(),
            lines: 0,
            bytes: 0,
        }
    }
}

impl ModuleOutput {
    fn admit_per_minute(&self, bytes: u64) -> bool {
        let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
        if w.start.elapsed() >= Duration::from_secs(60) {
            *w = Window::default();
        }
        if w.lines >= MAX_OUTPUT_LINES_PER_MINUTE
            || w.bytes.saturating_add(bytes) > MAX_OUTPUT_BYTES_PER_MINUTE
        {
            return false;
        }
        w.lines += 1;
        w.bytes += bytes;
        true
    }
}

/// The output budget of one call, shared by `log.write`, stdout and stderr.
pub struct OutputBudget {
    module: Arc<str>,
    totals: Arc<ModuleOutput>,
    lines: u32,
    bytes: u64,
    cut_lines: u64,
    cut_bytes: u64,
}

/// A call's budget as its three writers hold it.
pub type SharedBudget = Arc<Mutex<OutputBudget>>;

impl OutputBudget {
    /// A fresh budget for one call of `module`.
    pub fn new(module: Arc<str>, totals: Arc<ModuleOutput>) -> SharedBudget {
        Arc::new(Mutex::new(OutputBudget {
            module,
            totals,
            lines: 0,
            bytes: 0,
            cut_lines: 0,
            cut_bytes: 0,
        }))
    }

    fn admit(&mut self, bytes: u64) -> bool {
        let ok = self.lines < MAX_OUTPUT_LINES_PER_CALL
            && self.bytes.saturating_add(bytes) <= MAX_OUTPUT_BYTES_PER_CALL
            && self.totals.admit_per_minute(bytes);
        if ok {
            self.lines += 1;
            self.bytes += bytes;
        } else {
            self.cut(1, bytes);
        }
        ok
    }

    fn cut(&mut self, lines: u64, bytes: u64) {
        self.cut_lines += lines;
        self.cut_bytes += bytes;
    }

    /// Log one line `text` that the module wrote on `stream`, if the budget
    /// allows; otherwise count it as cut.
    pub fn line(&mut self, stream: Stream, text: &str) {
        self.line_of(stream, text, text.len() as u64);
    }

    /// Like [`OutputBudget::line`] for a line the module wrote as `written`
    /// bytes, of which `text` is what was kept.
    fn line_of(&mut self, stream: Stream, text: &str, written: u64) {
        if !self.admit(written) {
            return;
        }
        let text = untrusted::clean(text, untrusted::MAX_LOG_LINE_BYTES);
        let module = &*self.module;
        match stream {
            Stream::Stdout => {
                tracing::info!(target: "outpost.module.stdout", module, "{text}")
            }
            Stream::Stderr => {
                tracing::warn!(target: "outpost.module.stderr", module, "{text}")
            }
            Stream::LogDebug => tracing::debug!(target: "outpost.module", module, "{text}"),
            Stream::LogInfo => tracing::info!(target: "outpost.module", module, "{text}"),
            Stream::LogWarn => tracing::warn!(target: "outpost.module", module, "{text}"),
            Stream::LogError => tracing::error!(target: "outpost.module", module, "{text}"),
        }
    }
}

impl Drop for OutputBudget {
    fn drop(&mut self) {
        if self.cut_lines == 0 && self.cut_bytes == 0 {
            return;
        }
        self.totals
            .cut_lines
            .fetch_add(self.cut_lines, Ordering::Relaxed);
        self.totals
            .cut_bytes
            .fetch_add(self.cut_bytes, Ordering::Relaxed);
        tracing::warn!(
            target: "outpost.module",
            module = &*self.module,
            lines_cut = self.cut_lines,
            bytes_cut = self.cut_bytes,
            "module output over its budget was dropped"
        );
    }
}

/// A `StdoutStream` that writes lines to the call's [`OutputBudget`].
#[derive(Clone)]
pub struct LogStream {
    budget: SharedBudget,
    stream: Stream,
}

impl LogStream {
    /// Output on `stream`, charged to `budget`.
    pub fn new(budget: SharedBudget, stream: Stream) -> Self {
        LogStream { budget, stream }
    }
}

impl IsTerminal for LogStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogStream {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(LineWriter {
            budget: self.budget.clone(),
            stream: self.stream,
            line: Vec::new(),
            dropped: 0,
        })
    }
}

struct LineWriter {
    budget: SharedBudget,
    stream: Stream,
    line: Vec<u8>,
    /// Bytes of the current line beyond what is buffered.
    dropped: u64,
}

impl LineWriter {
    fn flush_line(&mut self, budget: &mut OutputBudget) {
        if self.line.is_empty() && self.dropped == 0 {
            return;
        }
        let text = String::from_utf8_lossy(&self.line);
        let written = self.line.len() as u64 + self.dropped;
        budget.line_of(self.stream, text.trim_end(), written);
        self.line.clear();
        self.dropped = 0;
    }
}

impl AsyncWrite for LineWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        let budget = this.budget.clone();
        let mut budget = budget.lock().unwrap_or_else(|p| p.into_inner());
        if budget.lines >= MAX_OUTPUT_LINES_PER_CALL || budget.bytes >= MAX_OUTPUT_BYTES_PER_CALL {
            // Over budget: count and drop without looking at the bytes.
            let lines = memchr_count(buf);
            budget.cut(lines, buf.len() as u64);
            return Poll::Ready(Ok(buf.len()));
        }
        let mut rest = buf;
        while !rest.is_empty() {
            match rest.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    this.push(&rest[..i]);
                    this.flush_line(&mut budget);
                    rest = &rest[i + 1..];
                }
                None => {
                    this.push(rest);
                    rest = &[];
                }
            }
        }
        // Report everything as written: output beyond the budget is dropped,
        // not an error the module could loop on.
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.flush_pending();
        Poll::Ready(Ok(()))
    }
}

impl LineWriter {
    fn push(&mut self, bytes: &[u8]) {
        let room = MAX_PENDING_LINE_BYTES.saturating_sub(self.line.len());
        let take = room.min(bytes.len());
        self.line.extend_from_slice(&bytes[..take]);
        self.dropped += (bytes.len() - take) as u64;
    }

    fn flush_pending(&mut self) {
        let budget = self.budget.clone();
        let mut budget = budget.lock().unwrap_or_else(|p| p.into_inner());
        self.flush_line(&mut budget);
    }
}

fn memchr_count(buf: &[u8]) -> u64 {
    buf.iter().filter(|&&b| b == b'\n').count() as u64
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        self.flush_pending();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget() -> (SharedBudget, Arc<ModuleOutput>) {
        let totals = Arc::new(ModuleOutput::default());
        (OutputBudget::new("m".into(), totals.clone()), totals)
    }

    #[test]
    fn the_call_budget_is_shared_by_every_path() {
        let (b, _) = budget();
        let out = Box::into_pin(LogStream::new(b.clone(), Stream::Stdout).async_stream());
        let err = Box::into_pin(LogStream::new(b.clone(), Stream::Stderr).async_stream());
        let mut writers = [out, err];
        let mut cx = Context::from_waker(std::task::Waker::noop());
        for i in 0..MAX_OUTPUT_LINES_PER_CALL {
            if i % 3 == 0 {
                b.lock().unwrap().line(Stream::LogInfo, "from log.write");
            } else {
                let w = &mut writers[(i % 3 - 1) as usize];
                let r = w.as_mut().poll_write(&mut cx, b"line\n");
                assert!(matches!(r, Poll::Ready(Ok(5))));
            }
        }
        assert_eq!(b.lock().unwrap().lines, MAX_OUTPUT_LINES_PER_CALL);
        assert!(!b.lock().unwrap().admit(10), "one line more is cut");
        assert_eq!(b.lock().unwrap().cut_lines, 1);
    }

    #[test]
    fn reopening_a_stream_does_not_reset_the_budget() {
        let (b, totals) = budget();
        let s = LogStream::new(b.clone(), Stream::Stderr);
        let mut line = vec![b'x'; 64 * 1024];
        line.push(b'\n');
        let mut written = 0u64;
        // 20 "reopens", each writing 64 KiB lines: 1.25 MiB in all.
        for _ in 0..20 {
            let mut w = Box::into_pin(s.async_stream());
            let mut cx = Context::from_waker(std::task::Waker::noop());
            let Poll::Ready(Ok(n)) = w.as_mut().poll_write(&mut cx, &line) else {
                panic!("write");
            };
            written += n as u64;
        }
        assert_eq!(written, 20 * (64 * 1024 + 1));
        let logged = b.lock().unwrap().bytes;
        assert!(logged <= MAX_OUTPUT_BYTES_PER_CALL, "{logged}");
        drop(s);
        drop(b);
        assert!(totals.cut_lines.load(Ordering::Relaxed) > 0);
    }

    #[test]
    fn the_minute_budget_spans_calls() {
        let totals = Arc::new(ModuleOutput::default());
        let mut admitted = 0;
        for _ in 0..10 {
            let b = OutputBudget::new("m".into(), totals.clone());
            let mut b = b.lock().unwrap();
            while b.admit(1) {
                admitted += 1;
            }
        }
        assert_eq!(admitted, MAX_OUTPUT_LINES_PER_MINUTE);
    }
}
