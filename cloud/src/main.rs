//! `outpost-cloud`: the reference fleet server and its support-staff CLI.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Parser, Subcommand};
use outpost_cloud::{Server, ServerConfig, Store, TestPki};
use outpost_protocol::{DeviceId, MAX_ENVELOPE_BYTES};

#[derive(Parser)]
#[command(
    name = "outpost-cloud",
    version,
    about = "outpost reference fleet server"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve enrolment, ingest and heartbeats over HTTPS until Ctrl-C.
    Serve {
        /// Data directory (cloud.db, server.key).
        #[arg(long)]
        data: PathBuf,
        /// Address to listen on, e.g. 0.0.0.0:8443.
        #[arg(long)]
        listen: SocketAddr,
        /// Certificate chain PEM file.
        #[arg(long)]
        cert: PathBuf,
        /// Private key PEM file.
        #[arg(long)]
        key: PathBuf,
        /// Require this token for enrolment.
        #[arg(long)]
        enrollment_token: Option<String>,
        /// Largest accepted ingest body in bytes.
        #[arg(long, default_value_t = MAX_ENVELOPE_BYTES)]
        max_body_bytes: usize,
    },
    /// Generate a test CA and server certificate (ca.pem, server.pem, server.key.pem).
    TestPki {
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// Server name (DNS name or IP); repeatable. Default: localhost and 127.0.0.1.
        #[arg(long = "name")]
        names: Vec<String>,
    },
    /// List enrolled devices (decrypted).
    Devices {
        /// Data directory.
        #[arg(long)]
        data: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List stored batches (decrypted).
    Batches {
        /// Data directory.
        #[arg(long)]
        data: PathBuf,
        /// Only this device.
        #[arg(long)]
        device: Option<DeviceId>,
        /// Only this stream.
        #[arg(long)]
        stream: Option<String>,
        /// Print the decrypted batches as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show acceptance and refusal counters.
    Stats {
        /// Data directory.
        #[arg(long)]
        data: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

fn open_existing(data: &Path) -> anyhow::Result<Store> {
    if !data.join(outpost_cloud::store::DB_FILE).exists() {
        anyhow::bail!("{} holds no cloud database", data.display());
    }
    Store::open(data)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Serve {
            data,
            listen,
            cert,
            key,
            enrollment_token,
            max_body_bytes,
        } => {
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
                )
                .init();
            let cert_chain_pem = std::fs::read_to_string(&cert)
                .with_context(|| format!("reading {}", cert.display()))?;
            let key_pem = std::fs::read_to_string(&key)
                .with_context(|| format!("reading {}", key.display()))?;
            let mut cfg = ServerConfig::new(data, listen, cert_chain_pem, key_pem);
            cfg.enrollment_token = enrollment_token;
            cfg.max_body_bytes = max_body_bytes;
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(async {
                let server = Server::start(cfg).await?;
                println!("listening on https://{}", server.addr());
                server
                    .run_until(async {
                        let _ = tokio::signal::ctrl_c().await;
                    })
                    .await;
                anyhow::Ok(())
            })
        }
        Cmd::TestPki { out, names } => {
            let names = if names.is_empty() {
                vec!["localhost".to_owned(), "127.0.0.1".to_owned()]
            } else {
                names
            };
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            TestPki::generate(&refs)?.write(&out)?;
            println!(
                "wrote {0}/ca.pem, {0}/server.pem, {0}/server.key.pem",
                out.display()
            );
            Ok(())
        }
        Cmd::Devices { data, json } => {
            let devices = open_existing(&data)?.devices()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&devices)?);
            } else {
                println!(
                    "{:<32}  {:>11}  {:<16}  {:<16}  {:<24}  email",
                    "device", "created_at", "model", "serial", "name"
                );
                for d in devices {
                    println!(
                        "{:<32}  {:>11}  {:<16}  {:<16}  {:<24}  {}",
                        d.device_id, d.created_at, d.instrument_model, d.serial, d.name, d.email
                    );
                }
            }
            Ok(())
        }
        Cmd::Batches {
            data,
            device,
            stream,
            json,
        } => {
            let batches = open_existing(&data)?.batches(device.as_ref(), stream.as_deref())?;
            if json {
                println!("{}", serde_json::to_string_pretty(&batches)?);
            } else {
                println!(
                    "{:<32}  {:<12}  {:>14}  {:>11}  {:>7}  kinds",
                    "device", "stream", "sequence", "received_at", "records"
                );
                for b in batches {
                    let mut kinds: Vec<&str> = b.body.records.iter().map(|r| r.kind()).collect();
                    kinds.sort_unstable();
                    kinds.dedup();
                    println!(
                        "{:<32}  {:<12}  {:>14}  {:>11}  {:>7}  {}",
                        b.device,
                        b.stream,
                        b.sequence,
                        b.received_at,
                        b.body.records.len(),
                        kinds.join(",")
                    );
                }
            }
            Ok(())
        }
        Cmd::Stats { data, json } => {
            let counters = open_existing(&data)?.counters()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&counters)?);
            } else {
                for (k, v) in counters {
                    println!("{k:<24} {v}");
                }
            }
            Ok(())
        }
    }
}
