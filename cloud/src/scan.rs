//! Upload scanning (issue #18): every ingested batch passes a scanner before
//! it is stored.
//!
//! The one scanner today is ClamAV's `clamd`, spoken to over its `INSTREAM`
//! protocol, written here by hand over tokio (the protocol is a command, a
//! few length-prefixed chunks and a one-line reply; the crates that wrap it
//! are thin, little used and either blocking or tied to another runtime):
//!
//! ```text
//! client: "zINSTREAM\0" { u32 BE length, bytes }* u32 0
//! clamd:  "stream: OK\0" | "stream: NAME FOUND\0" | "... ERROR\0"
//! ```
//!
//! Every exchange has a connect timeout and an overall reply deadline (a
//! clamd that stalls, closes early or answers garbage is an error, never a
//! verdict), the stream is bounded ([`ClamdConfig::max_stream_bytes`]) and
//! the reply is read up to [`MAX_REPLY_BYTES`]. A scan that fails for any
//! reason is a [`ScanError`]: the server answers "retry later" and stores
//! nothing (fail closed).

use std::net::SocketAddr;
#[cfg(unix)]
use std::path::PathBuf;
use std::time::Duration;

use outpost_protocol::MAX_PLAINTEXT_BYTES;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Time to connect to clamd, in milliseconds.
pub const CLAMD_CONNECT_TIMEOUT_MS: u64 = 2_000;
/// Time from connecting to clamd's whole reply (sending the stream and
/// clamd scanning it), in milliseconds.
pub const CLAMD_REPLY_TIMEOUT_MS: u64 = 30_000;
/// Bytes per `INSTREAM` chunk.
pub const CLAMD_CHUNK_BYTES: usize = 64 * 1024;
/// Longest reply line read from clamd.
pub const MAX_REPLY_BYTES: usize = 4 * 1024;
/// Longest signature name accepted in a reply (it is logged and stored).
pub const MAX_SIGNATURE_BYTES: usize = 256;

/// Where clamd listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClamdAddr {
    /// A TCP socket (`TCPSocket`/`TCPAddr` in clamd.conf), e.g. 127.0.0.1:3310.
    Tcp(SocketAddr),
    /// A local socket (`LocalSocket` in clamd.conf).
    #[cfg(unix)]
    Unix(PathBuf),
}

impl std::fmt::Display for ClamdAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClamdAddr::Tcp(a) => write!(f, "tcp {a}"),
            #[cfg(unix)]
            ClamdAddr::Unix(p) => write!(f, "socket {}", p.display()),
        }
    }
}

/// How to reach clamd and how long to wait for it.
#[derive(Debug, Clone)]
pub struct ClamdConfig {
    /// Where clamd listens.
    pub addr: ClamdAddr,
    /// Time to connect ([`CLAMD_CONNECT_TIMEOUT_MS`]).
    pub connect_timeout: Duration,
    /// Time from connecting to the whole reply ([`CLAMD_REPLY_TIMEOUT_MS`]).
    pub reply_timeout: Duration,
    /// Largest stream sent; a larger one is [`ScanError::SizeLimit`] without
    /// contacting clamd. Default [`MAX_PLAINTEXT_BYTES`], the largest batch
    /// plaintext: clamd's `StreamMaxLength` must be at least this.
    pub max_stream_bytes: usize,
}

impl ClamdConfig {
    /// clamd at `addr` with the default timeouts and stream limit.
    pub fn new(addr: ClamdAddr) -> Self {
        ClamdConfig {
            addr,
            connect_timeout: Duration::from_millis(CLAMD_CONNECT_TIMEOUT_MS),
            reply_timeout: Duration::from_millis(CLAMD_REPLY_TIMEOUT_MS),
            max_stream_bytes: MAX_PLAINTEXT_BYTES,
        }
    }
}

/// A scanner every ingested batch passes before it is stored.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Scanner {
    /// ClamAV's clamd over `INSTREAM`.
    Clamd(ClamdConfig),
}

/// What a scan found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing found.
    Clean,
    /// A signature matched.
    Infected {
        /// The scanner's name of the signature (printable ASCII, at most
        /// [`MAX_SIGNATURE_BYTES`]).
        signature: String,
    },
}

/// Why a scan gave no verdict. Every one means "not scanned": the batch is
/// not stored and the device is told to retry later.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// clamd could not be reached or the connection failed.
    #[error("clamd at {addr} is unavailable: {source}")]
    Unavailable {
        /// Where clamd was expected.
        addr: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// clamd did not accept the connection or did not answer in time.
    #[error("clamd at {addr} did not {stage} within {after:?}")]
    Timeout {
        /// Where clamd was expected.
        addr: String,
        /// "connect" or "reply".
        stage: &'static str,
        /// The timeout that ran out.
        after: Duration,
    },
    /// The stream is larger than this client or clamd (`StreamMaxLength`)
    /// accepts.
    #[error(
        "the stream of {len} bytes is over the scan limit (max_stream_bytes {limit}, or clamd's StreamMaxLength)"
    )]
    SizeLimit {
        /// Bytes to scan.
        len: usize,
        /// This client's limit.
        limit: usize,
    },
    /// clamd answered `... ERROR`.
    #[error("clamd at {addr} reported an error: {message}")]
    Clamd {
        /// Where clamd was.
        addr: String,
        /// Its message (printable ASCII, truncated).
        message: String,
    },
    /// The reply was not one of clamd's (closed early, too long, garbage).
    #[error("clamd at {addr} answered outside the protocol: {what}")]
    Protocol {
        /// Where clamd was expected.
        addr: String,
        /// What was wrong.
        what: String,
    },
}

impl ScanError {
    /// A short kebab-case name for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            ScanError::Unavailable { .. } => "unavailable",
            ScanError::Timeout { .. } => "timeout",
            ScanError::SizeLimit { .. } => "size-limit",
            ScanError::Clamd { .. } => "scanner-error",
            ScanError::Protocol { .. } => "protocol",
        }
    }
}

/// A bidirectional byte stream to clamd.
trait Conn: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Conn for T {}

impl Scanner {
    /// A clamd scanner at `addr` with the default limits.
    pub fn clamd(addr: ClamdAddr) -> Self {
        Scanner::Clamd(ClamdConfig::new(addr))
    }

    /// Where the scanner is, for logs.
    pub fn describe(&self) -> String {
        match self {
            Scanner::Clamd(c) => format!("clamd ({})", c.addr),
        }
    }

    /// Scan `data`.
    pub async fn scan(&self, data: &[u8]) -> Result<Verdict, ScanError> {
        match self {
            Scanner::Clamd(c) => clamd_scan(c, data).await,
        }
    }

    /// Check the scanner answers (`PING` → `PONG` for clamd).
    pub async fn ping(&self) -> Result<(), ScanError> {
        match self {
            Scanner::Clamd(c) => clamd_ping(c).await,
        }
    }
}

async fn connect(c: &ClamdConfig) -> Result<Box<dyn Conn>, ScanError> {
    let addr = c.addr.to_string();
    let fut = async {
        match &c.addr {
            ClamdAddr::Tcp(a) => tokio::net::TcpStream::connect(a)
                .await
                .map(|s| Box::new(s) as Box<dyn Conn>),
            #[cfg(unix)]
            ClamdAddr::Unix(p) => tokio::net::UnixStream::connect(p)
                .await
                .map(|s| Box::new(s) as Box<dyn Conn>),
        }
    };
    match tokio::time::timeout(c.connect_timeout, fut).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(source)) => Err(ScanError::Unavailable { addr, source }),
        Err(_) => Err(ScanError::Timeout {
            addr,
            stage: "connect",
            after: c.connect_timeout,
        }),
    }
}

/// `fut` within the reply deadline of `c`.
async fn within_reply_deadline<T>(
    c: &ClamdConfig,
    fut: impl Future<Output = Result<T, ScanError>>,
) -> Result<T, ScanError> {
    match tokio::time::timeout(c.reply_timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(ScanError::Timeout {
            addr: c.addr.to_string(),
            stage: "reply",
            after: c.reply_timeout,
        }),
    }
}

async fn clamd_ping(c: &ClamdConfig) -> Result<(), ScanError> {
    let addr = c.addr.to_string();
    let mut conn = connect(c).await?;
    let reply = within_reply_deadline(c, async {
        conn.write_all(b"zPING\0")
            .await
            .map_err(|source| ScanError::Unavailable {
                addr: addr.clone(),
                source,
            })?;
        read_reply(&mut conn, &addr).await
    })
    .await?;
    if reply == "PONG" {
        Ok(())
    } else {
        Err(ScanError::Protocol {
            addr,
            what: format!("PING answered {:?}", printable(&reply)),
        })
    }
}

async fn clamd_scan(c: &ClamdConfig, data: &[u8]) -> Result<Verdict, ScanError> {
    if data.len() > c.max_stream_bytes {
        return Err(ScanError::SizeLimit {
            len: data.len(),
            limit: c.max_stream_bytes,
        });
    }
    let addr = c.addr.to_string();
    let mut conn = connect(c).await?;
    let reply = within_reply_deadline(c, async {
        match send_stream(&mut conn, data).await {
            Ok(()) => read_reply(&mut conn, &addr).await,
            // clamd closes a stream over its StreamMaxLength while we still
            // write, after saying so: read what it said, if anything.
            Err(source) => match read_reply(&mut conn, &addr).await {
                Ok(reply) => Ok(reply),
                Err(_) => Err(ScanError::Unavailable {
                    addr: addr.clone(),
                    source,
                }),
            },
        }
    })
    .await?;
    parse_reply(&reply, &addr, data.len(), c.max_stream_bytes)
}

async fn send_stream(conn: &mut Box<dyn Conn>, data: &[u8]) -> std::io::Result<()> {
    conn.write_all(b"zINSTREAM\0").await?;
    for chunk in data.chunks(CLAMD_CHUNK_BYTES) {
        // Chunks are at most CLAMD_CHUNK_BYTES, far below u32::MAX.
        let len = u32::try_from(chunk.len()).unwrap_or(u32::MAX);
        conn.write_all(&len.to_be_bytes()).await?;
        conn.write_all(chunk).await?;
    }
    conn.write_all(&0u32.to_be_bytes()).await?;
    conn.flush().await
}

/// Read one `\0`-terminated reply (a closed connection also ends it, as
/// long as something came), at most [`MAX_REPLY_BYTES`].
async fn read_reply(conn: &mut Box<dyn Conn>, addr: &str) -> Result<String, ScanError> {
    let mut buf = Vec::with_capacity(64);
    let mut chunk = [0u8; 512];
    loop {
        let n = conn
            .read(&mut chunk)
            .await
            .map_err(|source| ScanError::Unavailable {
                addr: addr.to_owned(),
                source,
            })?;
        if n == 0 {
            if buf.is_empty() {
                return Err(ScanError::Protocol {
                    addr: addr.to_owned(),
                    what: "connection closed before a reply".into(),
                });
            }
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.iter().position(|&b| b == 0) {
            buf.truncate(end);
            break;
        }
        if buf.len() > MAX_REPLY_BYTES {
            return Err(ScanError::Protocol {
                addr: addr.to_owned(),
                what: format!("reply longer than {MAX_REPLY_BYTES} bytes"),
            });
        }
    }
    let text = String::from_utf8(buf).map_err(|_| ScanError::Protocol {
        addr: addr.to_owned(),
        what: "reply is not UTF-8".into(),
    })?;
    Ok(text.trim_end_matches(['\n', '\r']).to_owned())
}

/// `s` with anything but printable ASCII replaced and cut to 120 characters
/// (for messages).
fn printable(s: &str) -> String {
    s.chars()
        .take(120)
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect()
}

fn parse_reply(reply: &str, addr: &str, len: usize, limit: usize) -> Result<Verdict, ScanError> {
    let protocol = |what: String| ScanError::Protocol {
        addr: addr.to_owned(),
        what,
    };
    if let Some(msg) = reply.strip_suffix(" ERROR") {
        if msg.contains("size limit exceeded") {
            return Err(ScanError::SizeLimit { len, limit });
        }
        return Err(ScanError::Clamd {
            addr: addr.to_owned(),
            message: printable(msg),
        });
    }
    let Some(rest) = reply.strip_prefix("stream: ") else {
        return Err(protocol(format!("unexpected reply {:?}", printable(reply))));
    };
    if rest == "OK" {
        return Ok(Verdict::Clean);
    }
    let Some(signature) = rest.strip_suffix(" FOUND") else {
        return Err(protocol(format!("unexpected reply {:?}", printable(reply))));
    };
    if signature.is_empty()
        || signature.len() > MAX_SIGNATURE_BYTES
        || !signature.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
    {
        return Err(protocol(format!(
            "signature name is empty, longer than {MAX_SIGNATURE_BYTES} bytes or not printable ASCII"
        )));
    }
    Ok(Verdict::Infected {
        signature: signature.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    fn check(reply: &str, want: Result<Verdict, &str>) {
        let got = parse_reply(reply, "tcp 127.0.0.1:1", 10, 100);
        match (got, want) {
            (Ok(g), Ok(w)) => assert_eq!(g, w, "{reply:?}"),
            (Err(g), Err(kind)) => assert_eq!(g.kind(), kind, "{reply:?}: {g}"),
            (g, w) => panic!("{reply:?}: got {g:?}, want {w:?}"),
        }
    }

    #[test]
    fn replies() {
        let found = |s: &str| {
            Ok(Verdict::Infected {
                signature: s.into(),
            })
        };
        check("stream: OK", Ok(Verdict::Clean));
        check(
            "stream: Eicar-Test-Signature FOUND",
            found("Eicar-Test-Signature"),
        );
        check(
            "stream: Outpost.Test.Eicar.UNOFFICIAL FOUND",
            found("Outpost.Test.Eicar.UNOFFICIAL"),
        );
        check("INSTREAM size limit exceeded. ERROR", Err("size-limit"));
        check("stream: Can't allocate memory ERROR", Err("scanner-error"));
        check("", Err("protocol"));
        check("PONG", Err("protocol"));
        check("stream: FOUND", Err("protocol"));
        check("stream:  FOUND", Err("protocol"));
        check("stream: bad\x1bname FOUND", Err("protocol"));
        check(
            &format!("stream: {} FOUND", "A".repeat(300)),
            Err("protocol"),
        );
        check("stream: ok", Err("protocol"));
    }

    /// A fake clamd on 127.0.0.1 that reads the request, then does `act`
    /// with the connection; its address.
    async fn fake(
        act: impl Fn(tokio::net::TcpStream) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>>
        + Send
        + Sync
        + 'static,
    ) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                tokio::spawn(act(s));
            }
        });
        addr
    }

    /// Read a whole INSTREAM request (up to the zero-length chunk); false
    /// if it ended early or was malformed.
    async fn read_instream(s: &mut tokio::net::TcpStream) -> bool {
        let mut cmd = [0u8; 10];
        if s.read_exact(&mut cmd).await.is_err() || &cmd != b"zINSTREAM\0" {
            return false;
        }
        loop {
            let mut len = [0u8; 4];
            if s.read_exact(&mut len).await.is_err() {
                return false;
            }
            let len = u32::from_be_bytes(len) as usize;
            if len == 0 {
                return true;
            }
            if len > CLAMD_CHUNK_BYTES {
                return false;
            }
            let mut chunk = vec![0u8; len];
            if s.read_exact(&mut chunk).await.is_err() {
                return false;
            }
        }
    }

    fn scanner(addr: SocketAddr) -> Scanner {
        Scanner::Clamd(ClamdConfig {
            reply_timeout: Duration::from_millis(500),
            connect_timeout: Duration::from_millis(500),
            ..ClamdConfig::new(ClamdAddr::Tcp(addr))
        })
    }

    #[tokio::test]
    async fn a_well_behaved_peer_gets_chunked_streams_and_its_verdicts_are_read() {
        let addr = fake(|mut s| {
            Box::pin(async move {
                if read_instream(&mut s).await {
                    let _ = s.write_all(b"stream: OK\0").await;
                }
            })
        })
        .await;
        // Three chunks and a remainder.
        let data = vec![7u8; CLAMD_CHUNK_BYTES * 3 + 5];
        assert_eq!(scanner(addr).scan(&data).await.unwrap(), Verdict::Clean);
        assert_eq!(scanner(addr).scan(b"").await.unwrap(), Verdict::Clean);
    }

    #[tokio::test]
    async fn odd_peers_are_errors_never_verdicts() {
        // Stalls: accepts, reads, never answers.
        let stall = fake(|mut s| {
            Box::pin(async move {
                let _ = read_instream(&mut s).await;
                tokio::time::sleep(Duration::from_secs(3600)).await;
            })
        })
        .await;
        // Closes at once, without reading.
        let closes = fake(|s| Box::pin(async move { drop(s) })).await;
        // Reads the request, answers garbage.
        let garbage = fake(|mut s| {
            Box::pin(async move {
                let _ = read_instream(&mut s).await;
                let _ = s.write_all(b"\xff\xfe not clamd at all\0").await;
            })
        })
        .await;
        // Answers an endless line without a terminator.
        let endless = fake(|mut s| {
            Box::pin(async move {
                let _ = read_instream(&mut s).await;
                let line = vec![b'A'; 1024];
                while s.write_all(&line).await.is_ok() {}
            })
        })
        .await;
        // Never reads: the stream fills the socket buffers.
        let deaf = fake(|s| {
            Box::pin(async move {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                drop(s);
            })
        })
        .await;
        // Nobody listens.
        let nobody = {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            l.local_addr().unwrap()
        };
        let big = vec![1u8; 8 * 1024 * 1024];
        for (name, addr, data, kinds) in [
            ("stall", stall, &b"x"[..], &["timeout"][..]),
            ("closes", closes, &big[..], &["unavailable", "protocol"][..]),
            ("garbage", garbage, &b"x"[..], &["protocol"][..]),
            ("endless", endless, &b"x"[..], &["protocol"][..]),
            ("deaf", deaf, &big[..], &["timeout"][..]),
            ("nobody", nobody, &b"x"[..], &["unavailable"][..]),
        ] {
            let e = scanner(addr).scan(data).await.unwrap_err();
            assert!(kinds.contains(&e.kind()), "{name}: {e}");
            assert!(!e.to_string().is_empty());
        }
        // Too large: refused before connecting.
        let mut s = scanner(nobody);
        let Scanner::Clamd(c) = &mut s;
        c.max_stream_bytes = 4;
        let e = s.scan(b"12345").await.unwrap_err();
        assert!(
            matches!(e, ScanError::SizeLimit { len: 5, limit: 4 }),
            "{e}"
        );
    }
}
