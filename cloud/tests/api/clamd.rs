//! A real ClamAV `clamd` for tests and the scan bench: its own config, a
//! signature database holding one test signature for the EICAR test string,
//! TCP on a free loopback port; killed on drop. Shared by `tests/api.rs`
//! and `benches/scan.rs` (included by path).

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use outpost_cloud::{ClamdAddr, ClamdConfig, Scanner};

/// Set to 1 to make a missing clamd a failure (CI's Linux run).
pub const REQUIRE_ENV: &str = "OUTPOST_REQUIRE_CLAMD";
/// Longest clamd may take to answer `PING` after starting.
const START_GUARD: Duration = Duration::from_secs(60);
/// Name of the test signature (clamd reports it with `.UNOFFICIAL`).
pub const SIGNATURE: &str = "Outpost.Test.Eicar";

/// The EICAR anti-virus test string, assembled at run time so that this
/// source file itself does not carry it (and trip scanners on the repo).
pub fn eicar() -> String {
    let head = ["X5O!P%@AP[4", "\\PZX54(P^)7CC)7}$"].concat();
    let tail = ["EICAR-STANDARD-", "ANTIVIRUS-TEST-", "FILE!$H+H*"].concat();
    head + &tail
}

/// The `.ndb` body signature: the EICAR string anywhere in any file type,
/// its backslash optionally doubled (as JSON escapes it).
fn ndb() -> String {
    let e = eicar();
    let (a, b) = e.split_once('\\').unwrap();
    format!(
        "{SIGNATURE}:0:*:{}5c{{0-1}}{}\n",
        hex(a.as_bytes()),
        hex(b.as_bytes())
    )
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Where clamd is: `OUTPOST_CLAMD`, else `clamd` on `PATH`, else
/// `/usr/sbin/clamd` (Debian's, outside a normal user's `PATH`).
fn find_clamd() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("OUTPOST_CLAMD") {
        return Some(PathBuf::from(p));
    }
    let exe = if cfg!(windows) { "clamd.exe" } else { "clamd" };
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.push("/usr/sbin".into());
    dirs.into_iter().map(|d| d.join(exe)).find(|p| p.is_file())
}

/// A running clamd, killed on drop.
pub struct Clamd {
    exe: PathBuf,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl Clamd {
    /// Start clamd, or `None` after printing why when it is not installed
    /// (a panic instead when [`REQUIRE_ENV`] is 1).
    pub fn start(test: &str) -> Option<Clamd> {
        let Some(exe) = find_clamd() else {
            let why = "clamd not found (apt-get install clamav-daemon, or set OUTPOST_CLAMD)";
            if std::env::var(REQUIRE_ENV).as_deref() == Ok("1") {
                panic!("{test}: {why}, and {REQUIRE_ENV}=1");
            }
            eprintln!("{test}: skipped: {why}");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db");
        std::fs::create_dir(&db).unwrap();
        std::fs::write(db.join("outpost-test.ndb"), ndb()).unwrap();
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        // Runs as the user starting it, root included (no `User` line:
        // clamd only drops privileges when told to). No LocalSocket, no
        // PidFile: nothing outside the temp dir.
        let conf = format!(
            "Foreground yes\n\
             TCPSocket {port}\n\
             TCPAddr 127.0.0.1\n\
             DatabaseDirectory {}\n\
             LogFile {}\n\
             TemporaryDirectory {}\n\
             StreamMaxLength 64M\n\
             MaxThreads 4\n\
             SelfCheck 0\n\
             {}",
            db.display(),
            dir.path().join("clamd.log").display(),
            dir.path().display(),
            if cfg!(unix) {
                format!("LocalSocket {}\n", dir.path().join("clamd.sock").display())
            } else {
                String::new()
            },
        );
        std::fs::write(dir.path().join("clamd.conf"), conf).unwrap();
        let mut c = Clamd {
            exe,
            dir,
            child: None,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        };
        c.restart();
        Some(c)
    }

    fn conf(&self) -> PathBuf {
        self.dir.path().join("clamd.conf")
    }

    /// Start (again, on the same port) and wait for `PING` → `PONG`.
    pub fn restart(&mut self) {
        self.stop();
        let out = std::fs::File::create(self.dir.path().join("stdout.log")).unwrap();
        let child = Command::new(&self.exe)
            .arg("-c")
            .arg(self.conf())
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", self.exe.display()));
        self.child = Some(child);
        let start = Instant::now();
        while !ping(self.addr) {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("clamd exited ({status}) before answering:\n{}", self.log());
            }
            assert!(
                start.elapsed() < START_GUARD,
                "clamd did not answer PING within {START_GUARD:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kill it (its port refuses connections afterwards).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Its log and output, for failure messages.
    pub fn log(&self) -> String {
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        format!(
            "{}{}",
            read(&self.dir.path().join("stdout.log")),
            read(&self.dir.path().join("clamd.log"))
        )
    }

    /// A scanner for its local socket, with the default limits.
    #[cfg(unix)]
    pub fn socket_scanner(&self) -> Scanner {
        Scanner::Clamd(ClamdConfig::new(ClamdAddr::Unix(
            self.dir.path().join("clamd.sock"),
        )))
    }

    /// A scanner for it, with the default limits.
    pub fn scanner(&self) -> Scanner {
        Scanner::Clamd(ClamdConfig::new(ClamdAddr::Tcp(self.addr)))
    }
}

impl Drop for Clamd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether clamd at `addr` answers `PING` with `PONG`.
fn ping(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"zPING\0").is_err() {
        return false;
    }
    let mut buf = [0u8; 5];
    s.read_exact(&mut buf).is_ok() && &buf == b"PONG\0"
}
