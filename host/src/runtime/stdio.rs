//! Module stdout/stderr → the host log, one line at a time, tagged with the
//! module. Bounded: long lines are cut and a call's total output is capped.
//! Each line goes through the PHI guard like `log.write` lines
//! ([`super::host::loggable`]).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

/// Longest line forwarded (bytes); the rest of the line is dropped.
pub const MAX_LINE_BYTES: usize = 4096;
/// Most bytes of output forwarded per stream per call.
pub const MAX_OUTPUT_BYTES_PER_CALL: usize = 64 * 1024;

/// Which stream.
#[derive(Clone, Copy, Debug)]
pub enum Stream {
    /// stdout
    Stdout,
    /// stderr
    Stderr,
}

/// A `StdoutStream` that writes lines to tracing.
#[derive(Clone)]
pub struct LogStream {
    module: Arc<str>,
    stream: Stream,
}

impl LogStream {
    /// Output of `module` on `stream`.
    pub fn new(module: Arc<str>, stream: Stream) -> Self {
        LogStream { module, stream }
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
            module: self.module.clone(),
            stream: self.stream,
            line: Vec::new(),
            total: 0,
        })
    }
}

struct LineWriter {
    module: Arc<str>,
    stream: Stream,
    line: Vec<u8>,
    total: usize,
}

impl LineWriter {
    fn flush_line(&mut self) {
        if self.line.is_empty() {
            return;
        }
        let text = String::from_utf8_lossy(&self.line);
        let text = super::host::loggable(text.trim_end());
        match self.stream {
            Stream::Stdout => {
                tracing::info!(target: "outpost.module.stdout", module = %self.module, "{text}")
            }
            Stream::Stderr => {
                tracing::warn!(target: "outpost.module.stderr", module = %self.module, "{text}")
            }
        }
        self.line.clear();
    }
}

impl AsyncWrite for LineWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        let allowed = MAX_OUTPUT_BYTES_PER_CALL
            .saturating_sub(this.total)
            .min(buf.len());
        this.total += buf.len();
        for &b in &buf[..allowed] {
            if b == b'\n' {
                this.flush_line();
            } else if this.line.len() < MAX_LINE_BYTES {
                this.line.push(b);
            }
        }
        // Report everything as written: output beyond the cap is dropped, not an error.
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.flush_line();
        Poll::Ready(Ok(()))
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        self.flush_line();
    }
}
