//! `outpost-support`: the support engineer's client. Thin: argument parsing
//! and calls into [`outpost_support_proto::engineer`].

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use outpost_support_proto::Permission;
use outpost_support_proto::channel::EngineerAuth;
use outpost_support_proto::engineer::{self, EngineerSession};
use outpost_support_proto::relay_wire::{RelayTarget, client_tls};
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use zeroize::Zeroizing;

#[derive(Parser)]
#[command(
    name = "outpost-support",
    version,
    about = "outpost remote support: the engineer's client (end-to-end encrypted through the vendor's relay)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args)]
struct Common {
    /// The relay, host:port.
    #[arg(long)]
    relay: String,
    /// The CA certificate (PEM) that signed the relay's certificate.
    #[arg(long)]
    ca: PathBuf,
    /// The name the relay's certificate carries (default: the host of --relay).
    #[arg(long)]
    server_name: Option<String>,
    /// The session id the person at the PC read out.
    #[arg(long)]
    session: String,
    /// Your staff credential file (signed by the vendor's support authority).
    #[arg(long)]
    credential: PathBuf,
    /// Your credential's private key (outpost key file, mode 0600).
    #[arg(long)]
    key: PathBuf,
    /// The device's public key: 64 hex digits, or an outpost public key file.
    #[arg(long)]
    device_key: String,
    /// Read the one-time password from this file (default: the first line of
    /// standard input).
    #[arg(long)]
    password_file: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Open a session: prints the granted permissions, opens a local port
    /// for a VNC viewer when view or control is granted, then reads commands
    /// from standard input: `send LOCAL [NAME]`, `fetch NAME LOCAL`, `end`
    /// (end of input ends the session too, unless --control is given).
    /// With --control FILE, other `outpost-support ctl --control FILE`
    /// processes send the same commands while the session runs.
    Connect {
        #[command(flatten)]
        common: Common,
        /// Permissions to ask for, comma-separated: view, control,
        /// file-transfer.
        #[arg(long, value_delimiter = ',', default_value = "view")]
        request: Vec<Permission>,
        /// Where the local VNC port listens.
        #[arg(long, default_value = "127.0.0.1:0")]
        vnc_listen: SocketAddr,
        /// Also take commands from `outpost-support ctl`: write this file
        /// (new, owner-only: a loopback address and a random token) and
        /// remove it when the session ends. The session then runs until
        /// `end` or the PC ends it, whatever standard input does.
        #[arg(long, value_name = "FILE")]
        control: Option<PathBuf>,
    },
    /// Send a command to a running `connect --control FILE`: `send LOCAL
    /// [--as NAME]`, `fetch NAME LOCAL` or `end`.
    Ctl {
        /// The control file `connect --control` wrote.
        #[arg(long, value_name = "FILE")]
        control: PathBuf,
        #[command(subcommand)]
        cmd: CtlCmd,
    },
    /// Open a session asking for file transfer, send one file, end.
    Send {
        #[command(flatten)]
        common: Common,
        /// The local file.
        local: PathBuf,
        /// Its name in the PC's granted folder (default: the file's name).
        #[arg(long = "as")]
        name: Option<String>,
    },
    /// Open a session asking for file transfer, fetch one file, end.
    Fetch {
        #[command(flatten)]
        common: Common,
        /// The file's name in the PC's granted folder.
        name: String,
        /// The new local file (never overwritten).
        local: PathBuf,
    },
}

#[derive(Subcommand)]
enum CtlCmd {
    /// Send a local file into the PC's granted folder.
    Send {
        /// The local file.
        local: PathBuf,
        /// Its name in the PC's granted folder (default: the file's name).
        #[arg(long = "as")]
        name: Option<String>,
    },
    /// Fetch a file from the PC's granted folder.
    Fetch {
        /// The file's name in the PC's granted folder.
        name: String,
        /// The new local file (never overwritten).
        local: PathBuf,
    },
    /// End the session.
    End,
}

/// A command of a running session, from standard input or `ctl`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case")]
enum Command {
    Send { local: PathBuf, name: String },
    Fetch { name: String, local: PathBuf },
    End,
}

/// What `connect --control` writes: where its endpoint listens and the
/// token a command must carry.
#[derive(Serialize, Deserialize)]
struct ControlFile {
    addr: SocketAddr,
    token: String,
}

/// One command over the control endpoint (one JSON line).
#[derive(Serialize, Deserialize)]
struct ControlRequest {
    token: String,
    #[serde(flatten)]
    command: Command,
}

/// The answer (one JSON line).
#[derive(Serialize, Deserialize)]
struct ControlReply {
    ok: bool,
    message: String,
}

/// Longest control request line.
const MAX_CONTROL_LINE: u64 = 64 * 1024;
/// How long a control client has to send its line.
const CONTROL_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The control file, removed when the session ends (also on an error).
struct ControlGuard(PathBuf);

impl Drop for ControlGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Write the control file: created new (a file already there is refused,
/// never followed or replaced), owner-only on Unix.
fn write_control(path: &Path, c: &ControlFile) -> anyhow::Result<ControlGuard> {
    use std::io::Write;
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    let mut f = o.open(path).with_context(|| {
        format!(
            "creating the control file {} (is another connect using it? remove a stale one)",
            path.display()
        )
    })?;
    f.write_all(&serde_json::to_vec(c)?)?;
    f.sync_all()?;
    Ok(ControlGuard(path.to_path_buf()))
}

/// A command, and where its reply goes (a control connection), with a
/// signal back once the reply is written (so `end` is answered before the
/// process exits).
type Queued = (
    Command,
    Option<oneshot::Sender<(ControlReply, oneshot::Sender<()>)>>,
);

/// Serve the control endpoint: each connection sends one request line with
/// the token; its command is queued and the reply written back.
async fn serve_control(listener: TcpListener, token: String, tx: mpsc::Sender<Queued>) {
    let want = Sha256::digest(token.as_bytes());
    loop {
        let Ok((conn, peer)) = listener.accept().await else {
            return;
        };
        if !peer.ip().is_loopback() {
            continue;
        }
        let (tx, want) = (tx.clone(), want);
        tokio::spawn(async move {
            let (r, mut w) = conn.into_split();
            let mut line = String::new();
            let read = tokio::time::timeout(
                CONTROL_READ_TIMEOUT,
                BufReader::new(r.take(MAX_CONTROL_LINE)).read_line(&mut line),
            )
            .await;
            let ended = || ControlReply {
                ok: false,
                message: "the session has ended".into(),
            };
            let mut written = None;
            let reply = match (read, serde_json::from_str::<ControlRequest>(&line)) {
                (Ok(Ok(_)), Ok(req)) if Sha256::digest(req.token.as_bytes()) == want => {
                    let (rtx, rrx) = oneshot::channel();
                    if tx.send((req.command, Some(rtx))).await.is_err() {
                        ended()
                    } else {
                        match rrx.await {
                            Ok((reply, done)) => {
                                written = Some(done);
                                reply
                            }
                            Err(_) => ended(),
                        }
                    }
                }
                (Ok(Ok(_)), Ok(_)) => ControlReply {
                    ok: false,
                    message: "the control token is wrong".into(),
                },
                _ => ControlReply {
                    ok: false,
                    message: "not a control request".into(),
                },
            };
            if let Ok(mut out) = serde_json::to_vec(&reply) {
                out.push(b'\n');
                let _ = w.write_all(&out).await;
                let _ = w.shutdown().await;
            }
            if let Some(done) = written {
                let _ = done.send(());
            }
        });
    }
}

/// Read commands typed on standard input (a thread of its own: reading
/// blocks). End of input is `end` unless `keep_on_eof`.
fn read_stdin(tx: mpsc::Sender<Queued>, keep_on_eof: bool) {
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        for line in stdin.lock().lines() {
            let Ok(line) = line else { break };
            let words: Vec<&str> = line.split_whitespace().collect();
            let cmd = match words.as_slice() {
                [] => continue,
                ["end"] => Command::End,
                ["send", local] | ["send", local, _] => {
                    let local = PathBuf::from(local);
                    let name = match words.get(2) {
                        Some(n) => (*n).to_owned(),
                        None => match file_name(&local) {
                            Ok(n) => n,
                            Err(e) => {
                                eprintln!("outpost-support: send: {e}");
                                continue;
                            }
                        },
                    };
                    Command::Send { local, name }
                }
                ["fetch", name, local] => Command::Fetch {
                    name: (*name).to_owned(),
                    local: PathBuf::from(local),
                },
                _ => {
                    eprintln!("commands: send LOCAL [NAME] | fetch NAME LOCAL | end");
                    continue;
                }
            };
            if tx.blocking_send((cmd, None)).is_err() {
                return;
            }
        }
        if !keep_on_eof {
            let _ = tx.blocking_send((Command::End, None));
        }
    });
}

/// Run one command on the session; the reply (also printed here).
async fn run_command(s: &EngineerSession, cmd: &Command) -> ControlReply {
    let r = match cmd {
        Command::Send { local, name } => s
            .send_file(local, name)
            .await
            .map(|d| format!("sent {} ({} bytes, sha256 {})", d.name, d.size, d.sha256))
            .map_err(|e| format!("send: {e}")),
        Command::Fetch { name, local } => s
            .fetch_file(name, local)
            .await
            .map(|d| format!("fetched {} ({} bytes, sha256 {})", d.name, d.size, d.sha256))
            .map_err(|e| format!("fetch: {e}")),
        Command::End => Ok("ending the session".into()),
    };
    match r {
        Ok(message) => {
            println!("{message}");
            ControlReply { ok: true, message }
        }
        Err(message) => {
            eprintln!("outpost-support: {message}");
            ControlReply { ok: false, message }
        }
    }
}

/// `ctl`: one command to a running `connect --control`.
async fn control_client(control: &Path, cmd: CtlCmd) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(control)
        .with_context(|| format!("reading the control file {}", control.display()))?;
    let c: ControlFile = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a control file", control.display()))?;
    let command = match cmd {
        CtlCmd::Send { local, name } => {
            let name = match name {
                Some(n) => n,
                None => file_name(&local)?,
            };
            // The connect process may run in another directory.
            let local = std::path::absolute(&local)
                .with_context(|| format!("resolving {}", local.display()))?;
            Command::Send { local, name }
        }
        CtlCmd::Fetch { name, local } => Command::Fetch {
            name,
            local: std::path::absolute(&local)
                .with_context(|| format!("resolving {}", local.display()))?,
        },
        CtlCmd::End => Command::End,
    };
    let mut conn = TcpStream::connect(c.addr)
        .await
        .with_context(|| format!("no session answers at {} (has its connect ended?)", c.addr))?;
    let mut line = serde_json::to_vec(&ControlRequest {
        token: c.token,
        command,
    })?;
    line.push(b'\n');
    conn.write_all(&line).await?;
    let mut answer = String::new();
    BufReader::new(conn.take(MAX_CONTROL_LINE))
        .read_line(&mut answer)
        .await?;
    let reply: ControlReply =
        serde_json::from_str(&answer).context("the session's answer is not a control reply")?;
    if !reply.ok {
        bail!("{}", reply.message);
    }
    println!("{}", reply.message);
    Ok(())
}

fn device_key(arg: &str) -> anyhow::Result<outpost_signing::VerifyingKey> {
    let p = Path::new(arg);
    if p.exists() {
        return outpost_signing::load_public_key(p)
            .with_context(|| format!("reading the device key {}", p.display()));
    }
    outpost_signing::public_key_from_hex(arg).context("the --device-key")
}

fn password(common: &Common, stdin: &mut impl BufRead) -> anyhow::Result<Zeroizing<String>> {
    let mut line = Zeroizing::new(String::new());
    match &common.password_file {
        Some(f) => {
            *line = std::fs::read_to_string(f)
                .with_context(|| format!("reading the password file {}", f.display()))?;
        }
        None => {
            eprint!("one-time password: ");
            stdin.read_line(&mut line).context("reading the password")?;
        }
    }
    let pw = Zeroizing::new(line.trim().to_owned());
    if pw.is_empty() {
        bail!("no password given");
    }
    Ok(pw)
}

async fn open(
    common: &Common,
    requested: Vec<Permission>,
    stdin: &mut impl BufRead,
) -> anyhow::Result<EngineerSession> {
    let ca = std::fs::read_to_string(&common.ca)
        .with_context(|| format!("reading {}", common.ca.display()))?;
    let host = common
        .server_name
        .clone()
        .unwrap_or_else(|| match common.relay.rsplit_once(':') {
            Some((h, _)) => h.trim_matches(['[', ']']).to_owned(),
            None => common.relay.clone(),
        });
    let target = RelayTarget::new(common.relay.clone(), &host, client_tls(&ca)?)?;
    let credential = std::fs::read(&common.credential)
        .with_context(|| format!("reading {}", common.credential.display()))?;
    let key = outpost_signing::load_signing_key(&common.key)
        .with_context(|| format!("reading {}", common.key.display()))?;
    let device = device_key(&common.device_key)?;
    let auth = EngineerAuth {
        credential,
        key,
        password: password(common, stdin)?,
        requested,
    };
    let s = engineer::connect(&target, &common.session, &device, &auth)
        .await
        .context("connecting to the PC")?;
    let perms: Vec<&str> = s.grant().permissions.iter().map(|p| p.as_str()).collect();
    println!(
        "connected as {}; granted: {}",
        s.grant().engineer,
        if perms.is_empty() {
            "nothing".to_owned()
        } else {
            perms.join(", ")
        }
    );
    Ok(s)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        match cli.cmd {
            Cmd::Connect {
                common,
                request,
                vnc_listen,
                control,
            } => {
                let s = open(&common, request, &mut std::io::stdin().lock()).await?;
                if s.grant().allows(Permission::View) || s.grant().allows(Permission::Control) {
                    let addr = s.open_vnc_listener(vnc_listen).await?;
                    println!("VNC viewer: connect to {addr}");
                }
                let (tx, mut rx) = mpsc::channel::<Queued>(8);
                let _guard = match &control {
                    Some(path) => {
                        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
                        let mut t = [0u8; 32];
                        OsRng.fill_bytes(&mut t);
                        let file = ControlFile {
                            addr: listener.local_addr()?,
                            token: hex::encode(t),
                        };
                        let guard = write_control(path, &file)?;
                        tokio::spawn(serve_control(listener, file.token, tx.clone()));
                        println!("control: outpost-support ctl --control {}", path.display());
                        Some(guard)
                    }
                    None => None,
                };
                read_stdin(tx, control.is_some());
                loop {
                    let (cmd, reply) = tokio::select! {
                        next = rx.recv() => match next {
                            Some(n) => n,
                            None => break,
                        },
                        why = s.closed() => {
                            println!("session ended by the PC: {why}");
                            return Ok(());
                        }
                    };
                    let answer = run_command(&s, &cmd).await;
                    if let Some(r) = reply {
                        let (done, written) = oneshot::channel();
                        if r.send((answer, done)).is_ok() && matches!(cmd, Command::End) {
                            // The asking process gets its answer before this
                            // one ends (a runtime shut down mid-write would
                            // leave it an empty reply).
                            let _ = tokio::time::timeout(Duration::from_secs(5), written).await;
                        }
                    }
                    if matches!(cmd, Command::End) {
                        break;
                    }
                }
                s.end("ended by the engineer").await?;
                println!("session ended");
                Ok(())
            }
            Cmd::Ctl { control, cmd } => control_client(&control, cmd).await,
            Cmd::Send {
                common,
                local,
                name,
            } => {
                let name = match name {
                    Some(n) => n,
                    None => file_name(&local)?,
                };
                let s = open(
                    &common,
                    vec![Permission::FileTransfer],
                    &mut std::io::stdin().lock(),
                )
                .await?;
                let r = s.send_file(&local, &name).await;
                s.end("ended by the engineer").await?;
                let d = r.with_context(|| format!("sending {}", local.display()))?;
                println!("sent {} ({} bytes, sha256 {})", d.name, d.size, d.sha256);
                Ok(())
            }
            Cmd::Fetch {
                common,
                name,
                local,
            } => {
                let s = open(
                    &common,
                    vec![Permission::FileTransfer],
                    &mut std::io::stdin().lock(),
                )
                .await?;
                let r = s.fetch_file(&name, &local).await;
                s.end("ended by the engineer").await?;
                let d = r.with_context(|| format!("fetching {name}"))?;
                println!("fetched {} ({} bytes, sha256 {})", d.name, d.size, d.sha256);
                Ok(())
            }
        }
    })
}

fn file_name(p: &Path) -> anyhow::Result<String> {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .with_context(|| format!("{} has no file name; give --as NAME", p.display()))
}
