//! Length-prefixed frames: a 2-byte big-endian length, then that many bytes
//! (1 to [`MAX_FRAME_BYTES`]). Every Noise message travels in one frame; the
//! relay's hello messages use the same framing with a smaller cap.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest frame body: the Noise protocol's message limit.
pub const MAX_FRAME_BYTES: usize = 65_535;

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The connection failed.
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    /// The peer closed the connection between frames.
    #[error("the connection was closed")]
    Closed,
    /// The peer closed the connection inside a frame.
    #[error("the connection was closed inside a frame")]
    Truncated,
    /// A zero-length frame (never sent by a well-behaved peer).
    #[error("an empty frame")]
    Empty,
    /// A frame over the cap of its context.
    #[error("a frame of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// The frame's length.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// Read one frame of at most `max` bytes into `buf` (replacing its content).
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> Result<(), FrameError> {
    let mut len = [0u8; 2];
    match r.read_exact(&mut len[..1]).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(FrameError::Closed),
        Err(e) => return Err(e.into()),
    }
    read_exact_or_truncated(r, &mut len[1..]).await?;
    let len = usize::from(u16::from_be_bytes(len));
    if len == 0 {
        return Err(FrameError::Empty);
    }
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    buf.resize(len, 0);
    read_exact_or_truncated(r, buf).await
}

async fn read_exact_or_truncated<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut [u8],
) -> Result<(), FrameError> {
    match r.read_exact(buf).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(FrameError::Truncated),
        Err(e) => Err(e.into()),
    }
}

/// Write `body` as one frame (not flushed).
pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, body: &[u8]) -> Result<(), FrameError> {
    if body.is_empty() {
        return Err(FrameError::Empty);
    }
    let len = u16::try_from(body.len()).map_err(|_| FrameError::TooLarge {
        len: body.len(),
        max: MAX_FRAME_BYTES,
    })?;
    let mut head = [0u8; 2];
    head.copy_from_slice(&len.to_be_bytes());
    w.write_all(&head).await?;
    w.write_all(body).await?;
    Ok(())
}
