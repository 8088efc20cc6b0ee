//! A real PostgreSQL server for tests and the ingest bench: a fresh
//! cluster (`initdb`) in a temporary directory, password authentication
//! (SCRAM), TCP on a free 127.0.0.1 port; stopped on drop. Shared by
//! `tests/api.rs` and `benches/ingest.rs` (included by path). Linux only:
//! the server is a Linux process (ARCHITECTURE.md, the Windows run).
//!
//! Run as root (CI), the cluster belongs to the `postgres` user, which
//! Debian's `postgresql` package creates (`initdb` refuses to run as root).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Set to 1 to make a missing PostgreSQL a failure (CI's Linux run).
pub const REQUIRE_ENV: &str = "OUTPOST_REQUIRE_POSTGRES";
/// The cluster's superuser.
pub const USER: &str = "outpost";
/// Longest the server may take to accept connections.
const START_GUARD: Duration = Duration::from_secs(60);

/// Where `initdb` and `postgres` are: `OUTPOST_PG_BINDIR`, else the newest
/// `/usr/lib/postgresql/N/bin` (Debian), else `initdb` on `PATH`.
fn find_bindir() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("OUTPOST_PG_BINDIR") {
        return Some(PathBuf::from(p));
    }
    let mut debian: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((v, bin))
        })
        .collect();
    debian.sort();
    if let Some((_, bin)) = debian.pop() {
        return Some(bin);
    }
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .find(|d| d.join("initdb").is_file())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// How the server is tuned.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Every commit reaches the disk (the bench: as in production).
    Full,
    /// No fsync (tests: only behaviour matters).
    Off,
}

/// A running PostgreSQL server, stopped on drop.
pub struct PgServer {
    child: Child,
    dir: tempfile::TempDir,
    bindir: PathBuf,
    /// Its TCP port on 127.0.0.1.
    pub port: u16,
    password: String,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl PgServer {
    /// Start a fresh cluster, or `None` after printing why when PostgreSQL
    /// is not installed (a panic instead when [`REQUIRE_ENV`] is 1).
    pub fn start(test: &str, durability: Durability) -> Option<PgServer> {
        let required = std::env::var(REQUIRE_ENV).as_deref() == Ok("1");
        let skip = |why: &str| {
            if required {
                panic!("{test}: {why}, and {REQUIRE_ENV}=1");
            }
            eprintln!("{test}: skipped: {why}");
        };
        let Some(bindir) = find_bindir() else {
            skip("PostgreSQL not found (apt-get install postgresql, or set OUTPOST_PG_BINDIR)");
            return None;
        };
        let root = is_root();
        // As root the cluster belongs to `postgres`, who must reach it:
        // under /tmp, not a TMPDIR that may be private to root.
        let new_dir = || {
            if root {
                tempfile::tempdir_in("/tmp").unwrap()
            } else {
                tempfile::tempdir().unwrap()
            }
        };
        let mut dir = new_dir();
        let password = format!("pw-{}", free_port());
        std::fs::write(dir.path().join("pw"), &password).unwrap();
        if root {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                skip("running as root and there is no postgres user to own the cluster");
                return None;
            }
        }
        let as_owner = |exe: &str| {
            let exe = bindir.join(exe);
            if root {
                let mut c = Command::new("setpriv");
                c.args([
                    "--reuid=postgres",
                    "--regid=postgres",
                    "--init-groups",
                    "--",
                ])
                .arg(exe);
                c
            } else {
                Command::new(exe)
            }
        };
        let data = dir.path().join("data");
        let out = as_owner("initdb")
            .arg("-D")
            .arg(&data)
            .args(["-U", USER, "-A", "scram-sha-256", "-E", "UTF8", "--no-sync"])
            .arg(format!("--pwfile={}", dir.path().join("pw").display()))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{test}: initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        for attempt in 0..5 {
            let port = free_port();
            let log =
                std::fs::File::create(dir.path().join(format!("server-{attempt}.log"))).unwrap();
            let mut cmd = as_owner("postgres");
            cmd.arg("-D")
                .arg(&data)
                .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-k"])
                .arg(dir.path())
                .args(["-c", "max_connections=300"]);
            if durability == Durability::Off {
                cmd.args(["-c", "fsync=off", "-c", "synchronous_commit=off"]);
            }
            let child = cmd
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap();
            let mut server = PgServer {
                child,
                dir,
                bindir: bindir.clone(),
                port,
                password: password.clone(),
            };
            if server.wait_ready() {
                return Some(server);
            }
            // The port was taken between probe and bind: stop and retry.
            server.stop();
            dir = std::mem::replace(&mut server.dir, new_dir());
        }
        panic!("{test}: PostgreSQL did not start; see its logs");
    }

    fn wait_ready(&mut self) -> bool {
        let start = Instant::now();
        while start.elapsed() < START_GUARD {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if self.psql("postgres", "SELECT 1").is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// Run one statement with `psql` (the client beside the server).
    pub fn psql(&self, database: &str, sql: &str) -> Result<String, String> {
        let psql = [self.bindir.join("psql"), PathBuf::from("psql")]
            .into_iter()
            .find(|p| p.is_file())
            .unwrap_or_else(|| PathBuf::from("psql"));
        let out = Command::new(psql)
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                USER,
                "-d",
            ])
            .arg(database)
            .args(["-c", sql])
            .env("PGPASSWORD", &self.password)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("psql: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Create database `name` and return its connection URL.
    pub fn database(&self, name: &str) -> String {
        self.psql("postgres", &format!("CREATE DATABASE {name}"))
            .unwrap_or_else(|e| panic!("creating database {name}: {e}"));
        self.url(name)
    }

    /// The connection URL of database `name` (password included).
    pub fn url(&self, name: &str) -> String {
        format!(
            "postgres://{USER}:{}@127.0.0.1:{}/{name}",
            self.password, self.port
        )
    }

    /// The password (to check it never appears in output).
    pub fn password(&self) -> &str {
        &self.password
    }

    /// Where the cluster lives.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn stop(&mut self) {
        // Fast shutdown (SIGINT), then a kill if it lingers.
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop();
    }
}
