//! `outpost-cloud`: the reference fleet server and its support-staff CLI.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use outpost_cloud::limits::{
    BODY_MAX_TIME_MS, BODY_MIN_BYTES_PER_SEC, BODY_TIMEOUT_MS, HANDSHAKE_TIMEOUT_MS,
    HEADER_TIMEOUT_MS, MAX_CONNECTIONS, MAX_CONNECTIONS_PER_ADDRESS,
};
use outpost_cloud::scan::{CLAMD_REPLY_TIMEOUT_MS, ClamdAddr, ClamdConfig, Scanner};
use outpost_cloud::token::ENROLLMENT_TOKEN_ENV;
use outpost_cloud::{
    ConnectionLimits, DatabaseConfig, Enrollment, EnrollmentToken, Rate, Server, ServerConfig,
    Store, TestPki,
};
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

// `Serve` carries two socket addresses, which are larger on Windows; the
// command is parsed once at start-up, so its size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Cmd {
    /// Serve enrolment, ingest and heartbeats over HTTPS until Ctrl-C.
    ///
    /// Enrolment needs a token, read from --enrollment-token-file or from the
    /// environment variable OUTPOST_CLOUD_ENROLLMENT_TOKEN (never from the
    /// command line, which every user can read in the process list); without
    /// one the server does not start, unless
    /// --dangerous-allow-anonymous-enrollment is given.
    ///
    /// Every batch is scanned by ClamAV's clamd before it is stored
    /// (--clamd-addr or --clamd-socket); without a scanner the server does
    /// not start, unless --dangerous-no-scanner is given.
    Serve {
        /// Data directory (server.key; cloud.db unless the rows are in
        /// PostgreSQL).
        #[arg(long)]
        data: PathBuf,
        #[command(flatten)]
        database: DatabaseArgs,
        /// Address to listen on, e.g. 0.0.0.0:8443.
        #[arg(long)]
        listen: SocketAddr,
        /// Certificate chain PEM file.
        #[arg(long)]
        cert: PathBuf,
        /// Private key PEM file.
        #[arg(long)]
        key: PathBuf,
        /// File holding the enrolment token (its text without surrounding
        /// whitespace; at least 16 bytes). Make one with `new-token`.
        #[arg(long, value_name = "FILE")]
        enrollment_token_file: Option<PathBuf>,
        /// Let anyone who reaches the server enrol a device, without a token.
        /// Dangerous: only for a closed test network.
        #[arg(long)]
        dangerous_allow_anonymous_enrollment: bool,
        /// No longer accepted (a token on the command line is visible in the
        /// process list); kept only to say so.
        #[arg(long, hide = true, value_name = "TOKEN")]
        enrollment_token: Option<String>,
        /// Largest accepted ingest body in bytes.
        #[arg(long, default_value_t = MAX_ENVELOPE_BYTES)]
        max_body_bytes: usize,
        /// Most connections at once; keep it below the descriptor limit
        /// (`ulimit -n`). Connections beyond it are closed at once.
        #[arg(long, default_value_t = MAX_CONNECTIONS)]
        max_connections: usize,
        /// Most connections at once from one IPv4 address or IPv6 /64. Behind
        /// a load balancer that hides client addresses, set it to
        /// --max-connections and limit clients at the balancer.
        #[arg(long, default_value_t = MAX_CONNECTIONS_PER_ADDRESS)]
        max_connections_per_address: usize,
        /// Time a client has to finish the TLS handshake, in milliseconds.
        #[arg(long, default_value_t = HANDSHAKE_TIMEOUT_MS)]
        handshake_timeout_ms: u64,
        /// Time a client has to send a request head (and most idle time
        /// between requests), in milliseconds.
        #[arg(long, default_value_t = HEADER_TIMEOUT_MS)]
        header_timeout_ms: u64,
        /// Time a client has to send a request body before the rate credit
        /// of --body-min-bytes-per-sec, in milliseconds.
        #[arg(long, default_value_t = BODY_TIMEOUT_MS)]
        body_timeout_ms: u64,
        /// Every this many body bytes received extend the body deadline by a
        /// second (the slowest body rate kept up).
        #[arg(long, default_value_t = BODY_MIN_BYTES_PER_SEC)]
        body_min_bytes_per_sec: u64,
        /// Longest any request body may take, in milliseconds.
        #[arg(long, default_value_t = BODY_MAX_TIME_MS)]
        body_max_time_ms: u64,
        /// Serve this TUF repository of module updates (made with `repo`)
        /// read-only at /v1/updates/metadata/ and /v1/updates/targets/.
        #[arg(long, value_name = "DIR")]
        updates_repo: Option<PathBuf>,
        /// Also run the remote-support relay (#16) on this address, e.g.
        /// 0.0.0.0:8444, with the same certificate: PCs register support
        /// sessions there (proving their enrolment), engineers connect with
        /// `outpost-support`, and the relay forwards their end-to-end
        /// encrypted frames only.
        #[arg(long, value_name = "ADDR")]
        relay_listen: Option<SocketAddr>,
        /// Serve /metrics (Prometheus text) and /alerts (JSON) over plain
        /// HTTP on this address, e.g. 127.0.0.1:9464. No authentication:
        /// bind it to loopback or the management network only.
        #[arg(long, value_name = "ADDR")]
        metrics_listen: Option<SocketAddr>,
        /// Ingest and heartbeat requests one source address may make per
        /// minute (bursts of a tenth of a minute's worth, at least the
        /// default burst). Behind a load balancer that hides client
        /// addresses, raise it to the whole fleet's rate and limit clients
        /// at the balancer.
        #[arg(long, value_name = "N", default_value_t = outpost_cloud::defence::INGEST_PER_SOURCE.per_minute)]
        ingest_per_source_per_minute: u32,
        /// Ingest and heartbeat requests one device may make per minute
        /// (bursts of up to a sixth of that, at least the default burst).
        #[arg(long, value_name = "N", default_value_t = outpost_cloud::defence::INGEST_PER_DEVICE.per_minute)]
        ingest_per_device_per_minute: u32,
        /// Enrolments one source address may make per minute.
        #[arg(long, value_name = "N", default_value_t = outpost_cloud::defence::ENROLL_PER_SOURCE.per_minute)]
        enroll_per_source_per_minute: u32,
        /// Scan every batch with clamd at this TCP address (clamd.conf
        /// TCPSocket/TCPAddr), e.g. 127.0.0.1:3310. Flagged batches are
        /// quarantined; while clamd does not answer, ingest answers 503.
        #[arg(long, value_name = "ADDR")]
        clamd_addr: Option<SocketAddr>,
        /// Scan every batch with clamd at this local socket (clamd.conf
        /// LocalSocket; Unix only).
        #[arg(long, value_name = "PATH")]
        clamd_socket: Option<PathBuf>,
        /// Longest a scan may take (sending the batch and clamd's reply), in
        /// milliseconds; beyond it ingest answers 503.
        #[arg(long, default_value_t = CLAMD_REPLY_TIMEOUT_MS)]
        scan_timeout_ms: u64,
        /// Store batches without scanning them. Dangerous: only for a closed
        /// test network.
        #[arg(long)]
        dangerous_no_scanner: bool,
        /// The staff read-back API (#18): region, OpenID Connect sign-in.
        #[command(flatten)]
        staff: outpost_cloud::staff::cli::StaffArgs,
    },
    /// The TUF repository of module updates: keys, init, add, publish.
    #[command(subcommand)]
    Repo(RepoCmd),
    /// Write a new random enrolment token to a file (mode 0600 on Unix) for
    /// `serve --enrollment-token-file`; devices enrol with
    /// `outpost enroll --token`.
    NewToken {
        /// File to create (an existing file is not overwritten).
        #[arg(long)]
        out: PathBuf,
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
        /// Data directory (server.key; cloud.db unless the rows are in
        /// PostgreSQL).
        #[arg(long)]
        data: PathBuf,
        #[command(flatten)]
        database: DatabaseArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List stored batches (decrypted).
    Batches {
        /// Data directory (server.key; cloud.db unless the rows are in
        /// PostgreSQL).
        #[arg(long)]
        data: PathBuf,
        #[command(flatten)]
        database: DatabaseArgs,
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
    /// List the alerts raised for the operator (blocked sources, sources
    /// and devices over their rate), oldest first.
    Alerts {
        /// Data directory (server.key; cloud.db unless the rows are in
        /// PostgreSQL).
        #[arg(long)]
        data: PathBuf,
        #[command(flatten)]
        database: DatabaseArgs,
        /// Only the latest N.
        #[arg(long, default_value_t = 1000)]
        last: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the staff audit: every staff sign-in (success or failure),
    /// sign-out and data access, with who, what, when and from where.
    StaffAudit {
        /// Data directory (server.key; cloud.db unless the rows are in
        /// PostgreSQL).
        #[arg(long)]
        data: PathBuf,
        #[command(flatten)]
        database: DatabaseArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List quarantined batches (flagged by the scanner; content never shown).
    Quarantine {
        /// Data directory (server.key; cloud.db unless the rows are in
        /// PostgreSQL).
        #[arg(long)]
        data: PathBuf,
        #[command(flatten)]
        database: DatabaseArgs,
        /// Only this device.
        #[arg(long)]
        device: Option<DeviceId>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Set the region of an enrolled device (staff see only the devices of
    /// their regions).
    DeviceRegion {
        /// Data directory (server.key; cloud.db unless the rows are in
        /// PostgreSQL).
        #[arg(long)]
        data: PathBuf,
        #[command(flatten)]
        database: DatabaseArgs,
        /// The device.
        #[arg(long)]
        device: DeviceId,
        /// Its region.
        #[arg(long)]
        region: String,
    },
    /// Show acceptance and refusal counters (among them slow-client,
    /// connection-cap, address-cap and enrollment-rate-limited, which a
    /// running server writes every second).
    Stats {
        /// Data directory (server.key; cloud.db unless the rows are in
        /// PostgreSQL).
        #[arg(long)]
        data: PathBuf,
        #[command(flatten)]
        database: DatabaseArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum RepoCmd {
    /// Write one new Ed25519 key per role (root.key, targets.key,
    /// snapshot.key, timestamp.key; mode 0600 on Unix) into DIR.
    Keygen {
        /// Directory for the key files (existing files are never overwritten).
        #[arg(long)]
        out: PathBuf,
    },
    /// Create a repository: root version 1 signed with the root key, listing
    /// the four roles' public keys, and an empty first publish. Afterwards
    /// move root.key offline; hosts trust metadata/1.root.json.
    Init {
        /// Repository directory.
        #[arg(long)]
        repo: PathBuf,
        /// Directory holding root.key, targets.key, snapshot.key, timestamp.key.
        #[arg(long)]
        keys: PathBuf,
        /// Root validity in days.
        #[arg(long, default_value_t = 365)]
        root_days: i64,
    },
    /// Stage a signed module file for the next publish.
    Add {
        /// Repository directory.
        #[arg(long)]
        repo: PathBuf,
        /// The signed module file (`outpost sign` output).
        #[arg(long)]
        module: PathBuf,
        /// Instrument model the module applies to; repeatable (none: all).
        #[arg(long = "model")]
        models: Vec<String>,
    },
    /// Sign new targets, snapshot and timestamp metadata including the staged
    /// modules (needs targets.key, snapshot.key, timestamp.key), or with
    /// --timestamp-only re-sign only the timestamp (needs timestamp.key).
    Publish {
        /// Repository directory.
        #[arg(long)]
        repo: PathBuf,
        /// Directory holding the role keys needed.
        #[arg(long)]
        keys: PathBuf,
        /// Only re-sign the timestamp with a new expiry.
        #[arg(long)]
        timestamp_only: bool,
        /// Timestamp validity in hours.
        #[arg(long, default_value_t = 24)]
        timestamp_hours: i64,
        /// Snapshot validity in days.
        #[arg(long, default_value_t = 7)]
        snapshot_days: i64,
        /// Targets validity in days.
        #[arg(long, default_value_t = 90)]
        targets_days: i64,
    },
    /// List the published modules.
    List {
        /// Repository directory.
        #[arg(long)]
        repo: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

fn run_repo(cmd: RepoCmd) -> anyhow::Result<()> {
    use outpost_cloud::repo;
    let now = chrono::Utc::now();
    match cmd {
        RepoCmd::Keygen { out } => {
            repo::keygen(&out)?;
            println!(
                "wrote root.key, targets.key, snapshot.key and timestamp.key to {}; keep root.key offline",
                out.display()
            );
        }
        RepoCmd::Init {
            repo: dir,
            keys,
            root_days,
        } => {
            let expiry = repo::Expiry {
                root: chrono::Duration::days(root_days),
                ..repo::Expiry::default()
            };
            repo::init(
                &dir,
                &repo::load_key(&keys, "root")?,
                &repo::load_key(&keys, "targets")?,
                &repo::load_key(&keys, "snapshot")?,
                &repo::load_key(&keys, "timestamp")?,
                expiry,
                now,
            )?;
            println!(
                "created {}; hosts trust {}",
                dir.display(),
                dir.join("metadata").join("1.root.json").display()
            );
        }
        RepoCmd::Add {
            repo: dir,
            module,
            models,
        } => {
            let added = repo::add(&dir, &module, &models)?;
            println!(
                "staged {} (module {} {}, capability digest {}); run `repo publish`",
                added.target,
                added.custom.module,
                added.custom.version,
                added.custom.capability_digest
            );
        }
        RepoCmd::Publish {
            repo: dir,
            keys,
            timestamp_only,
            timestamp_hours,
            snapshot_days,
            targets_days,
        } => {
            let expiry = repo::Expiry {
                timestamp: chrono::Duration::hours(timestamp_hours),
                snapshot: chrono::Duration::days(snapshot_days),
                targets: chrono::Duration::days(targets_days),
                ..repo::Expiry::default()
            };
            let p = if timestamp_only {
                repo::publish_timestamp(&dir, &repo::load_key(&keys, "timestamp")?, expiry, now)?
            } else {
                repo::publish(
                    &dir,
                    &repo::load_key(&keys, "targets")?,
                    &repo::load_key(&keys, "snapshot")?,
                    &repo::load_key(&keys, "timestamp")?,
                    expiry,
                    now,
                )?
            };
            println!(
                "published targets v{} snapshot v{} timestamp v{}{}",
                p.targets_version,
                p.snapshot_version,
                p.timestamp_version,
                if p.added.is_empty() {
                    String::new()
                } else {
                    format!("; added {}", p.added.join(", "))
                }
            );
        }
        RepoCmd::List { repo: dir, json } => {
            let list = repo::list(&dir)?;
            if json {
                let v: Vec<_> = list
                    .iter()
                    .map(|(name, len, m)| serde_json::json!({"target": name, "length": len, "outpost": m}))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                for (name, len, m) in list {
                    println!(
                        "{name}  {len} bytes  {} {}  models: {}",
                        m.module,
                        m.version,
                        if m.models.is_empty() {
                            "all".to_owned()
                        } else {
                            m.models.join(",")
                        }
                    );
                }
            }
        }
    }
    Ok(())
}

/// Where the rows live: `cloud.db` in the data directory, or PostgreSQL.
#[derive(clap::Args)]
struct DatabaseArgs {
    /// Keep the rows in PostgreSQL (several ingest nodes share it): a file
    /// holding the connection string (`postgres://user:password@host/db`
    /// or `host=... dbname=...`; `sslmode=require` unless the server is on
    /// this machine). Or set OUTPOST_CLOUD_DATABASE_URL. Every node needs
    /// the same server.key in its --data directory.
    #[arg(long, value_name = "FILE")]
    database_url_file: Option<PathBuf>,
    /// Most PostgreSQL connections this process opens.
    #[arg(long, value_name = "N", default_value_t = outpost_cloud::db::postgres::DEFAULT_POOL_SIZE)]
    database_pool: usize,
    /// PEM file of the CA that signed the PostgreSQL server's certificate
    /// (besides the public web roots).
    #[arg(long, value_name = "FILE")]
    database_ca: Option<PathBuf>,
}

/// The environment variable that may hold the PostgreSQL connection string.
const DATABASE_URL_ENV: &str = "OUTPOST_CLOUD_DATABASE_URL";

impl DatabaseArgs {
    fn config(&self) -> anyhow::Result<DatabaseConfig> {
        let url = match (
            &self.database_url_file,
            std::env::var(DATABASE_URL_ENV).ok(),
        ) {
            (Some(_), Some(_)) => bail!(
                "the PostgreSQL connection string is given twice (--database-url-file and \
                 {DATABASE_URL_ENV}); give it one way"
            ),
            (None, None) => {
                if self.database_ca.is_some() {
                    bail!("--database-ca needs a PostgreSQL connection string");
                }
                return Ok(DatabaseConfig::Sqlite);
            }
            (Some(file), None) => {
                warn_if_readable_by_others(file);
                zeroize::Zeroizing::new(
                    std::fs::read_to_string(file)
                        .with_context(|| format!("reading {}", file.display()))?
                        .trim()
                        .to_owned(),
                )
            }
            (None, Some(url)) => zeroize::Zeroizing::new(url),
        };
        let ca_pem = match &self.database_ca {
            Some(f) => Some(
                std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?,
            ),
            None => None,
        };
        Ok(DatabaseConfig::Postgres(outpost_cloud::PostgresConfig {
            url,
            pool_size: self.database_pool,
            ca_pem,
        }))
    }
}

/// The store of a server that ran before: its data directory must hold
/// the server key (and, with SQLite, the database file); nothing is created.
fn open_existing(data: &Path, database: &DatabaseArgs) -> anyhow::Result<Store> {
    let database = database.config()?;
    let needed = match database {
        DatabaseConfig::Sqlite => outpost_cloud::store::DB_FILE,
        DatabaseConfig::Postgres(_) => outpost_cloud::store::KEY_FILE,
    };
    if !data.join(needed).exists() {
        bail!(
            "{} holds no {needed}: not the data directory of a cloud server",
            data.display()
        );
    }
    Store::open_with(data, &database)
}

/// Who may enrol, from the token file, the environment and the anonymous
/// flag: exactly one of them.
fn enrollment(
    token_file: Option<&Path>,
    token_env: Option<std::ffi::OsString>,
    anonymous: bool,
) -> anyhow::Result<Enrollment> {
    match (token_file, token_env, anonymous) {
        (None, None, true) => Ok(Enrollment::DangerousAnonymous),
        (Some(_), _, true) | (_, Some(_), true) => bail!(
            "--dangerous-allow-anonymous-enrollment contradicts the enrolment token given \
             (--enrollment-token-file or {ENROLLMENT_TOKEN_ENV}); give one or the other"
        ),
        (Some(_), Some(_), false) => bail!(
            "the enrolment token is given twice (--enrollment-token-file and \
             {ENROLLMENT_TOKEN_ENV}); give it one way"
        ),
        (Some(file), None, false) => {
            warn_if_readable_by_others(file);
            Ok(Enrollment::Token(EnrollmentToken::from_file(file)?))
        }
        (None, Some(value), false) => {
            let value = value
                .into_string()
                .map_err(|_| anyhow::anyhow!("{ENROLLMENT_TOKEN_ENV} is not valid UTF-8"))?;
            let token = EnrollmentToken::new(value.trim()).with_context(|| {
                format!("reading the enrolment token from {ENROLLMENT_TOKEN_ENV}")
            })?;
            Ok(Enrollment::Token(token))
        }
        (None, None, false) => bail!(
            "no enrolment token: give --enrollment-token-file FILE (make one with \
             `outpost-cloud new-token --out FILE`) or set {ENROLLMENT_TOKEN_ENV}; to let anyone \
             who reaches the server enrol, give --dangerous-allow-anonymous-enrollment"
        ),
    }
}

/// The upload scanner from the clamd flags and the no-scanner flag: exactly
/// one of them.
fn scanner(
    clamd_addr: Option<SocketAddr>,
    clamd_socket: Option<PathBuf>,
    no_scanner: bool,
    timeout: Duration,
) -> anyhow::Result<Option<Scanner>> {
    let addr = match (clamd_addr, clamd_socket, no_scanner) {
        (None, None, true) => return Ok(None),
        (None, None, false) => bail!(
            "no upload scanner: give --clamd-addr HOST:PORT or --clamd-socket PATH (ClamAV's \
             clamd); to store batches unscanned, give --dangerous-no-scanner"
        ),
        (Some(_), Some(_), _) => {
            bail!("--clamd-addr and --clamd-socket both given; give one")
        }
        (Some(_), None, true) | (None, Some(_), true) => bail!(
            "--dangerous-no-scanner contradicts the scanner given (--clamd-addr or \
             --clamd-socket); give one or the other"
        ),
        (Some(a), None, false) => ClamdAddr::Tcp(a),
        #[cfg(unix)]
        (None, Some(p), false) => ClamdAddr::Unix(p),
        #[cfg(not(unix))]
        (None, Some(p), false) => bail!(
            "--clamd-socket {} : local sockets are Unix only; use --clamd-addr",
            p.display()
        ),
    };
    Ok(Some(Scanner::Clamd(ClamdConfig {
        reply_timeout: timeout,
        ..ClamdConfig::new(addr)
    })))
}

#[cfg(unix)]
fn warn_if_readable_by_others(file: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(m) = std::fs::metadata(file)
        && m.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            file = %file.display(),
            "this secret file (enrolment token, OIDC client secret or SMTP password) is readable by others; chmod 600 it"
        );
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_file: &Path) {}

/// Create `out` (never overwriting) holding a new token and a newline.
fn write_new_token(out: &Path) -> anyhow::Result<()> {
    let token = EnrollmentToken::generate();
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(out)
        .with_context(|| format!("creating {}", out.display()))?;
    std::io::Write::write_all(&mut f, format!("{}\n", token.expose()).as_bytes())
        .with_context(|| format!("writing {}", out.display()))?;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Serve {
            data,
            database,
            listen,
            cert,
            key,
            enrollment_token_file,
            dangerous_allow_anonymous_enrollment,
            enrollment_token,
            max_body_bytes,
            max_connections,
            max_connections_per_address,
            handshake_timeout_ms,
            header_timeout_ms,
            body_timeout_ms,
            body_min_bytes_per_sec,
            body_max_time_ms,
            updates_repo,
            relay_listen,
            metrics_listen,
            ingest_per_source_per_minute,
            ingest_per_device_per_minute,
            enroll_per_source_per_minute,
            clamd_addr,
            clamd_socket,
            scan_timeout_ms,
            dangerous_no_scanner,
            staff,
        } => {
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
                )
                // stdout is for the "listening on" line scripts read.
                .with_writer(std::io::stderr)
                .init();
            if enrollment_token.is_some() {
                bail!(
                    "--enrollment-token is no longer accepted: a token on the command line is \
                     visible to every user in the process list; put it in a file for \
                     --enrollment-token-file or in {ENROLLMENT_TOKEN_ENV}"
                );
            }
            let enrollment = enrollment(
                enrollment_token_file.as_deref(),
                std::env::var_os(ENROLLMENT_TOKEN_ENV),
                dangerous_allow_anonymous_enrollment,
            )?;
            let scanner = scanner(
                clamd_addr,
                clamd_socket,
                dangerous_no_scanner,
                Duration::from_millis(scan_timeout_ms),
            )?;
            let cert_chain_pem = std::fs::read_to_string(&cert)
                .with_context(|| format!("reading {}", cert.display()))?;
            let key_pem = std::fs::read_to_string(&key)
                .with_context(|| format!("reading {}", key.display()))?;
            let mut cfg = ServerConfig::new(data, listen, cert_chain_pem, key_pem, enrollment);
            cfg.database = database.config()?;
            cfg.max_body_bytes = max_body_bytes;
            cfg.limits = ConnectionLimits {
                max_connections,
                max_connections_per_address,
                handshake_timeout: Duration::from_millis(handshake_timeout_ms),
                header_timeout: Duration::from_millis(header_timeout_ms),
                body_timeout: Duration::from_millis(body_timeout_ms),
                body_min_bytes_per_sec,
                body_max_time: Duration::from_millis(body_max_time_ms),
            };
            cfg.updates_repo = updates_repo;
            cfg.metrics_listen = metrics_listen;
            let d = outpost_cloud::defence::DefenceConfig::default();
            let scaled = |per_minute: u32, default: Rate, part: u32| {
                Rate::new(per_minute, (per_minute / part).max(default.burst))
            };
            cfg.defence = outpost_cloud::defence::DefenceConfig {
                ingest_per_source: scaled(ingest_per_source_per_minute, d.ingest_per_source, 10),
                ingest_per_device: scaled(ingest_per_device_per_minute, d.ingest_per_device, 6),
                enroll_per_source: scaled(enroll_per_source_per_minute, d.enroll_per_source, 6),
                ..d
            };
            cfg.scanner = scanner;
            cfg.region = staff.region.clone();
            for secret in [&staff.oidc_client_secret_file, &staff.smtp_password_file]
                .into_iter()
                .flatten()
            {
                warn_if_readable_by_others(secret);
            }
            cfg.staff = staff.config()?;
            let relay_tls = outpost_cloud::tls_config(&cfg.cert_chain_pem, &cfg.key_pem)?;
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(async {
                let server = Server::start(cfg).await?;
                println!("listening on https://{}", server.addr());
                if let Some(m) = server.metrics_addr() {
                    println!("metrics on http://{m}/metrics and http://{m}/alerts");
                }
                let _relay = match relay_listen {
                    Some(listen) => {
                        let relay = outpost_cloud::Relay::start(outpost_cloud::RelayConfig {
                            listen,
                            tls: relay_tls,
                            store: server.store().clone(),
                            limits: outpost_cloud::RelayLimits::default(),
                            tap: None,
                        })
                        .await?;
                        println!("support relay listening on {}", relay.addr());
                        Some(relay)
                    }
                    None => None,
                };
                server
                    .run_until(async {
                        let _ = tokio::signal::ctrl_c().await;
                    })
                    .await;
                anyhow::Ok(())
            })
        }
        Cmd::NewToken { out } => {
            write_new_token(&out)?;
            println!("wrote a new enrolment token to {}", out.display());
            Ok(())
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
        Cmd::Alerts {
            data,
            database,
            last,
            json,
        } => {
            let alerts = open_existing(&data, &database)?.alerts(last)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&alerts)?);
            } else {
                println!(
                    "{:>11}  {:<20}  {:<22}  {:<24}  {:>9}  device",
                    "at", "kind", "reason", "source", "block_s"
                );
                for a in alerts {
                    println!(
                        "{:>11}  {:<20}  {:<22}  {:<24}  {:>9}  {}",
                        a.at,
                        a.kind.as_str(),
                        a.reason,
                        a.source,
                        a.block_secs.map(|s| s.to_string()).unwrap_or_default(),
                        a.device.map(|d| d.to_string()).unwrap_or_default()
                    );
                }
            }
            Ok(())
        }
        Cmd::Devices {
            data,
            database,
            json,
        } => {
            let devices = open_existing(&data, &database)?.devices()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&devices)?);
            } else {
                println!(
                    "{:<32}  {:>11}  {:<16}  {:<16}  {:<24}  {:<64}  email",
                    "device", "created_at", "model", "serial", "name", "support_key"
                );
                for d in devices {
                    println!(
                        "{:<32}  {:>11}  {:<16}  {:<16}  {:<24}  {:<64}  {}",
                        d.device_id,
                        d.created_at,
                        d.instrument_model,
                        d.serial,
                        d.name,
                        d.support_key,
                        d.email
                    );
                }
            }
            Ok(())
        }
        Cmd::Batches {
            data,
            database,
            device,
            stream,
            json,
        } => {
            let batches =
                open_existing(&data, &database)?.batches(device.as_ref(), stream.as_deref())?;
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
        Cmd::Quarantine {
            data,
            database,
            device,
            json,
        } => {
            let entries = open_existing(&data, &database)?.quarantined(device.as_ref())?;
            if json {
                println!("{}", serde_json::to_string_pretty(&entries)?);
            } else {
                println!(
                    "{:<32}  {:<12}  {:>14}  {:>14}  {:>7}  signature",
                    "device", "stream", "sequence", "quarantined_at", "records"
                );
                for q in entries {
                    println!(
                        "{:<32}  {:<12}  {:>14}  {:>14}  {:>7}  {}",
                        q.device, q.stream, q.sequence, q.quarantined_at, q.records, q.signature
                    );
                }
            }
            Ok(())
        }
        Cmd::Repo(cmd) => run_repo(cmd),
        Cmd::StaffAudit {
            data,
            database,
            json,
        } => outpost_cloud::staff::cli::print_audit(&open_existing(&data, &database)?, json),
        Cmd::DeviceRegion {
            data,
            database,
            device,
            region,
        } => {
            outpost_cloud::staff::cli::set_device_region(
                &open_existing(&data, &database)?,
                &data,
                &device,
                &region,
            )?;
            println!("device {device} is now in region {region}");
            Ok(())
        }
        Cmd::Stats {
            data,
            database,
            json,
        } => {
            let counters = open_existing(&data, &database)?.counters()?;
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
