//! The engineer's side: connect through the relay, verify the PC's device
//! key, authenticate, and use the granted session: a local port for a VNC
//! viewer, files sent into and fetched from the PC's granted folder, `end`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use ed25519_dalek::VerifyingKey;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::authz::{Grant, Refusal};
use crate::channel::{ChannelError, EngineerAuth, OpenReader, SealWriter, initiate, msg_name};
use crate::msg::{FileDone, MAX_DATA_BYTES, Msg, PutHeader};
use crate::pc::spawn_writer;
use crate::relay_wire::{self, RelayError, RelayTarget};

/// Depth of each stream's or transfer's incoming queue.
const IN_QUEUE: usize = 64;

/// Why an engineer operation failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineerError {
    /// The relay refused or could not be reached.
    #[error(transparent)]
    Relay(#[from] RelayError),
    /// The handshake failed, the PC refused, or the channel broke.
    #[error(transparent)]
    Channel(#[from] ChannelError),
    /// The PC denied this request.
    #[error("the PC denied it: {}", .0.message)]
    Denied(Refusal),
    /// The session is over.
    #[error("the session ended: {0}")]
    Ended(String),
    /// A local file operation failed.
    #[error("{what}: {source}")]
    Local {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// The received file does not match what the PC said it sent.
    #[error("file {name:?} arrived damaged: {why}")]
    Integrity {
        /// The file.
        name: String,
        /// What did not match.
        why: String,
    },
}

struct Shared {
    next_id: AtomicU32,
    routes: Mutex<HashMap<u32, mpsc::Sender<Msg>>>,
    ended: watch::Sender<Option<String>>,
}

impl Shared {
    fn route(&self, id: u32) -> mpsc::Receiver<Msg> {
        let (tx, rx) = mpsc::channel(IN_QUEUE);
        if let Ok(mut r) = self.routes.lock() {
            r.insert(id, tx);
        }
        rx
    }

    fn unroute(&self, id: u32) {
        if let Ok(mut r) = self.routes.lock() {
            r.remove(&id);
        }
    }

    fn end(&self, why: String) {
        self.ended.send_if_modified(|e| {
            if e.is_none() {
                *e = Some(why);
                true
            } else {
                false
            }
        });
        if let Ok(mut r) = self.routes.lock() {
            r.clear();
        }
    }

    fn ended(&self) -> String {
        self.ended
            .borrow()
            .clone()
            .unwrap_or_else(|| "the connection closed".into())
    }
}

/// An open session.
pub struct EngineerSession {
    grant: Grant,
    tx: mpsc::Sender<Msg>,
    shared: Arc<Shared>,
    ended_rx: watch::Receiver<Option<String>>,
    writer: tokio::task::JoinHandle<Result<(), ChannelError>>,
}

/// How long [`EngineerSession::end`] waits for the `end` message to leave.
const END_FLUSH_MS: u64 = 2_000;

impl std::fmt::Debug for EngineerSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineerSession")
            .field("grant", &self.grant)
            .finish_non_exhaustive()
    }
}

/// Connect to the PC of `session_id` through the relay, require that it
/// proves `device_key`, authenticate with `auth`, and return the session
/// with what the person at the PC approved.
pub async fn connect(
    relay: &RelayTarget,
    session_id: &str,
    device_key: &VerifyingKey,
    auth: &EngineerAuth,
) -> Result<EngineerSession, EngineerError> {
    let mut s = relay_wire::connect_engineer(relay, session_id).await?;
    let (transport, grant) = initiate(&mut s, session_id, device_key, auth).await?;
    let (rd, wr) = tokio::io::split(s);
    let mut reader = OpenReader::new(rd, transport.clone());
    let (tx, rx) = mpsc::channel(64);
    let writer = spawn_writer(SealWriter::new(wr, transport), rx);
    let (ended, ended_rx) = watch::channel(None);
    let shared = Arc::new(Shared {
        next_id: AtomicU32::new(1),
        routes: Mutex::new(HashMap::new()),
        ended,
    });
    let sh = shared.clone();
    tokio::spawn(async move {
        let why = loop {
            match reader.recv().await {
                Ok(Msg::End(reason)) => break format!("ended by the PC: {reason}"),
                Ok(m) => {
                    let id = match &m {
                        Msg::TcpData(id, _)
                        | Msg::TcpClose(id)
                        | Msg::PutReady(id)
                        | Msg::GetMeta(id, _)
                        | Msg::GetChunk(id, _)
                        | Msg::GetEnd(id, _)
                        | Msg::FileOk(id, _)
                        | Msg::Deny(id, _) => *id,
                        other => {
                            break format!(
                                "protocol violation: the PC may not send {}",
                                msg_name(other)
                            );
                        }
                    };
                    let route = sh.routes.lock().ok().and_then(|r| r.get(&id).cloned());
                    if let Some(route) = route {
                        // A slow consumer slows the session (back-pressure).
                        let _ = route.send(m).await;
                    }
                }
                Err(e) => break e.to_string(),
            }
        };
        sh.end(why);
    });
    Ok(EngineerSession {
        grant,
        tx,
        shared,
        ended_rx,
        writer,
    })
}

impl EngineerSession {
    /// What the person at the PC approved.
    pub fn grant(&self) -> &Grant {
        &self.grant
    }

    async fn send(&self, m: Msg) -> Result<(), EngineerError> {
        self.tx
            .send(m)
            .await
            .map_err(|_| EngineerError::Ended(self.shared.ended()))
    }

    async fn next(&self, rx: &mut mpsc::Receiver<Msg>) -> Result<Msg, EngineerError> {
        rx.recv()
            .await
            .ok_or_else(|| EngineerError::Ended(self.shared.ended()))
    }

    /// Wait until the session ends; returns why.
    pub async fn closed(&self) -> String {
        let mut rx = self.ended_rx.clone();
        let _ = rx.wait_for(|e| e.is_some()).await;
        self.shared.ended()
    }

    /// Listen on `bind` (use `127.0.0.1:0`) and carry every connection a
    /// VNC viewer makes there to the PC's screen backend. Returns the bound
    /// address. Only meaningful with view or control granted; otherwise
    /// every connection is closed after the PC's denial.
    pub async fn open_vnc_listener(&self, bind: SocketAddr) -> Result<SocketAddr, EngineerError> {
        let listener = TcpListener::bind(bind)
            .await
            .map_err(|source| EngineerError::Local {
                what: format!("listening on {bind}"),
                source,
            })?;
        let addr = listener
            .local_addr()
            .map_err(|source| EngineerError::Local {
                what: "local address".into(),
                source,
            })?;
        let shared = self.shared.clone();
        let tx = self.tx.clone();
        let mut ended = self.ended_rx.clone();
        tokio::spawn(async move {
            loop {
                let (sock, _) = tokio::select! {
                    a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
                    _ = ended.wait_for(|e| e.is_some()) => return,
                };
                let _ = sock.set_nodelay(true);
                let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
                let mut rx = shared.route(id);
                if tx.send(Msg::TcpOpen(id)).await.is_err() {
                    return;
                }
                let tx = tx.clone();
                let sh = shared.clone();
                tokio::spawn(async move {
                    let (mut r, mut w) = sock.into_split();
                    let up_tx = tx.clone();
                    let up = tokio::spawn(async move {
                        let mut buf = vec![0u8; MAX_DATA_BYTES];
                        loop {
                            match r.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => {
                                    if up_tx
                                        .send(Msg::TcpData(id, buf[..n].to_vec()))
                                        .await
                                        .is_err()
                                    {
                                        return;
                                    }
                                }
                            }
                        }
                        let _ = up_tx.send(Msg::TcpClose(id)).await;
                    });
                    while let Some(m) = rx.recv().await {
                        match m {
                            Msg::TcpData(_, d) => {
                                if w.write_all(&d).await.is_err() {
                                    let _ = tx.send(Msg::TcpClose(id)).await;
                                    break;
                                }
                            }
                            Msg::Deny(_, r) => {
                                tracing::warn!(target: "outpost.support", stream = id, reason = %r.message, "screen stream denied");
                                break;
                            }
                            _ => break,
                        }
                    }
                    up.abort();
                    let _ = w.shutdown().await;
                    sh.unroute(id);
                });
            }
        });
        Ok(addr)
    }

    /// Send the local file `local` into the PC's folder as `name`.
    pub async fn send_file(&self, local: &Path, name: &str) -> Result<FileDone, EngineerError> {
        let local_err = |what: String| move |source| EngineerError::Local { what, source };
        let mut f = tokio::fs::File::open(local)
            .await
            .map_err(local_err(format!("opening {}", local.display())))?;
        let size = f
            .metadata()
            .await
            .map_err(local_err(format!("reading {}", local.display())))?
            .len();
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let mut rx = self.shared.route(id);
        let result = async {
            self.send(Msg::PutStart(
                id,
                PutHeader {
                    name: name.to_owned(),
                    size,
                },
            ))
            .await?;
            match self.next(&mut rx).await? {
                Msg::PutReady(_) => {}
                Msg::Deny(_, r) => return Err(EngineerError::Denied(r)),
                other => {
                    return Err(ChannelError::Protocol(format!(
                        "expected put-ready, got {}",
                        msg_name(&other)
                    ))
                    .into());
                }
            }
            let mut hasher = Sha256::new();
            let mut sent = 0u64;
            let mut buf = vec![0u8; MAX_DATA_BYTES];
            while sent < size {
                let n = f
                    .read(&mut buf)
                    .await
                    .map_err(local_err(format!("reading {}", local.display())))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                sent += n as u64;
                // A denial mid-way (e.g. the session ended) shows up here.
                if let Ok(Msg::Deny(_, r)) = rx.try_recv() {
                    return Err(EngineerError::Denied(r));
                }
                self.send(Msg::PutChunk(id, buf[..n].to_vec())).await?;
            }
            let digest: [u8; 32] = hasher.finalize().into();
            self.send(Msg::PutEnd(id, digest)).await?;
            loop {
                match self.next(&mut rx).await? {
                    Msg::FileOk(_, done) => {
                        if done.sha256 != hex::encode(digest) || done.size != sent {
                            return Err(EngineerError::Integrity {
                                name: name.to_owned(),
                                why: "the PC stored another size or hash".into(),
                            });
                        }
                        return Ok(done);
                    }
                    Msg::Deny(_, r) => return Err(EngineerError::Denied(r)),
                    _ => continue,
                }
            }
        }
        .await;
        self.shared.unroute(id);
        result
    }

    /// Fetch `name` from the PC's folder into the new local file `dest`
    /// (never overwritten; written to a temporary file, checked against the
    /// PC's SHA-256, fsynced and renamed).
    pub async fn fetch_file(&self, name: &str, dest: &Path) -> Result<FileDone, EngineerError> {
        let parent: PathBuf = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let mut rx = self.shared.route(id);
        let result = async {
            self.send(Msg::GetStart(id, name.to_owned())).await?;
            let size = match self.next(&mut rx).await? {
                Msg::GetMeta(_, size) => size,
                Msg::Deny(_, r) => return Err(EngineerError::Denied(r)),
                other => {
                    return Err(ChannelError::Protocol(format!(
                        "expected get-meta, got {}",
                        msg_name(&other)
                    ))
                    .into());
                }
            };
            let tmp = tempfile::NamedTempFile::new_in(&parent).map_err(|source| {
                EngineerError::Local {
                    what: format!("creating a temporary file in {}", parent.display()),
                    source,
                }
            })?;
            let (std_file, tmp_path) = tmp.into_parts();
            let mut file = tokio::fs::File::from_std(std_file);
            let mut hasher = Sha256::new();
            let mut got = 0u64;
            let local_err = |source| EngineerError::Local {
                what: format!("writing {}", dest.display()),
                source,
            };
            loop {
                match self.next(&mut rx).await? {
                    Msg::GetChunk(_, d) => {
                        got += d.len() as u64;
                        if got > size {
                            return Err(EngineerError::Integrity {
                                name: name.to_owned(),
                                why: format!("more than the announced {size} bytes"),
                            });
                        }
                        hasher.update(&d);
                        file.write_all(&d).await.map_err(local_err)?;
                    }
                    Msg::GetEnd(_, h) => {
                        let digest: [u8; 32] = hasher.finalize().into();
                        if got != size || h != digest {
                            return Err(EngineerError::Integrity {
                                name: name.to_owned(),
                                why: "size or SHA-256 differ from the PC's".into(),
                            });
                        }
                        file.flush().await.map_err(local_err)?;
                        file.sync_all().await.map_err(local_err)?;
                        drop(file);
                        tmp_path
                            .persist_noclobber(dest)
                            .map_err(|e| EngineerError::Local {
                                what: format!("storing {}", dest.display()),
                                source: e.error,
                            })?;
                        return Ok(FileDone {
                            name: name.to_owned(),
                            size,
                            sha256: hex::encode(digest),
                        });
                    }
                    Msg::Deny(_, r) => return Err(EngineerError::Denied(r)),
                    other => {
                        return Err(ChannelError::Protocol(format!(
                            "unexpected {} during a fetch",
                            msg_name(&other)
                        ))
                        .into());
                    }
                }
            }
        }
        .await;
        self.shared.unroute(id);
        result
    }

    /// End the session (the PC closes its side and the screen backend).
    pub async fn end(self, reason: &str) -> Result<(), EngineerError> {
        let _ = self.tx.send(Msg::End(reason.to_owned())).await;
        drop(self.tx);
        let _ =
            tokio::time::timeout(std::time::Duration::from_millis(END_FLUSH_MS), self.writer).await;
        Ok(())
    }
}
