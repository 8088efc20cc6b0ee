//! `outpost-support`: the support engineer's client. Thin: argument parsing
//! and calls into [`outpost_support_proto::engineer`].

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use outpost_support_proto::Permission;
use outpost_support_proto::channel::EngineerAuth;
use outpost_support_proto::engineer::{self, EngineerSession};
use outpost_support_proto::relay_wire::{RelayTarget, client_tls};
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
    /// (end of input ends the session too).
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
    let stdin = std::io::stdin();
    let mut stdin = stdin.lock();
    rt.block_on(async {
        match cli.cmd {
            Cmd::Connect {
                common,
                request,
                vnc_listen,
            } => {
                let s = open(&common, request, &mut stdin).await?;
                if s.grant().allows(Permission::View) || s.grant().allows(Permission::Control) {
                    let addr = s.open_vnc_listener(vnc_listen).await?;
                    println!("VNC viewer: connect to {addr}");
                }
                let mut line = String::new();
                loop {
                    line.clear();
                    // Commands are few and typed by a person: reading them
                    // blocks this thread only between them.
                    let n = tokio::task::block_in_place(|| stdin.read_line(&mut line))?;
                    let words: Vec<&str> = line.split_whitespace().collect();
                    match words.as_slice() {
                        [] if n == 0 => break,
                        [] => continue,
                        ["end"] => break,
                        ["send", local] | ["send", local, _] => {
                            let local = Path::new(local);
                            let name = match words.get(2) {
                                Some(n) => (*n).to_owned(),
                                None => file_name(local)?,
                            };
                            match s.send_file(local, &name).await {
                                Ok(d) => println!(
                                    "sent {} ({} bytes, sha256 {})",
                                    d.name, d.size, d.sha256
                                ),
                                Err(e) => eprintln!("outpost-support: send: {e}"),
                            }
                        }
                        ["fetch", name, local] => {
                            match s.fetch_file(name, Path::new(local)).await {
                                Ok(d) => println!(
                                    "fetched {} ({} bytes, sha256 {})",
                                    d.name, d.size, d.sha256
                                ),
                                Err(e) => eprintln!("outpost-support: fetch: {e}"),
                            }
                        }
                        _ => eprintln!("commands: send LOCAL [NAME] | fetch NAME LOCAL | end"),
                    }
                }
                s.end("ended by the engineer").await?;
                println!("session ended");
                Ok(())
            }
            Cmd::Send {
                common,
                local,
                name,
            } => {
                let name = match name {
                    Some(n) => n,
                    None => file_name(&local)?,
                };
                let s = open(&common, vec![Permission::FileTransfer], &mut stdin).await?;
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
                let s = open(&common, vec![Permission::FileTransfer], &mut stdin).await?;
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
