//! The local API of the real `outpost` binary: who may call it, what it
//! shows, the live stream, and notifications acknowledged and dismissed
//! across restarts (issue #14).

use super::harness::{env, offline_identity};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `outpost run` with the example config on `logs`, its API on a
/// free loopback port, enrolled offline (uploads go nowhere).
pub(super) struct Host {
    child: Child,
    config: PathBuf,
    state: PathBuf,
    pub(super) addr: std::net::SocketAddr,
    pub(super) token: String,
}

pub(super) fn site(dir: &Path, logs: &Path) -> PathBuf {
    site_with_interval(dir, logs, 1)
}

/// [`site`] with the collector's interval set to `interval_secs`.
pub(super) fn site_with_interval(dir: &Path, logs: &Path, interval_secs: u64) -> PathBuf {
    let state = dir.join("state");
    let sample =
        Path::new(outpost_artifacts::WORKSPACE_ROOT).join("examples/sample-data/instrument-logs");
    let text = outpost_artifacts::example_config(&state, interval_secs)
        .replace(&format!("{sample:?}"), &format!("{logs:?}"))
        .replace("listen = \"127.0.0.1:8787\"", "listen = \"127.0.0.1:0\"")
        .replace(
            "# endpoint = \"https://ingest.private-cloud.example\"",
            "endpoint = \"https://127.0.0.1:9\"",
        );
    assert!(
        text.contains("127.0.0.1:0"),
        "the example config has [api] listen"
    );
    let path = dir.join("outpost.toml");
    std::fs::write(&path, text).unwrap();
    std::fs::create_dir_all(&state).unwrap();
    offline_identity(&state);
    path
}

impl Host {
    pub(super) fn start(config: &Path) -> Host {
        Self::start_with_stdout(config, Stdio::null())
    }

    /// [`Host::start`] with its standard output going to `stdout`.
    pub(super) fn start_with_stdout(config: &Path, stdout: Stdio) -> Host {
        let state = config.parent().unwrap().join("state");
        let _ = std::fs::remove_file(state.join("api.addr"));
        let child = Command::new(env!("CARGO_BIN_EXE_outpost"))
            .args(["run", "--json", "--config"])
            .arg(config)
            .env("OUTPOST_LOG", "error")
            .stdout(stdout)
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(120);
        let addr = loop {
            if let Some(a) = outpost_host::api::published_addr(&state) {
                break a;
            }
            assert!(Instant::now() < deadline, "the API did not start");
            std::thread::sleep(Duration::from_millis(50));
        };
        let token = std::fs::read_to_string(state.join("api.token"))
            .unwrap()
            .trim()
            .to_owned();
        Host {
            child,
            config: config.to_owned(),
            state,
            addr,
            token,
        }
    }

    pub(super) fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.addr.port())
    }

    pub(super) fn client() -> reqwest::Client {
        outpost_host::api::client::plain_http_client().unwrap()
    }

    /// `method path` with the token, as JSON.
    pub(super) async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
    ) -> (u16, serde_json::Value) {
        let res = Self::client()
            .request(method, self.url(path))
            .bearer_auth(&self.token)
            .header("x-outpost-client", "test")
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        let body = res.bytes().await.unwrap();
        let v = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
        (status, v)
    }

    /// The host's process id.
    #[cfg(unix)]
    pub(super) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Wait for the host to exit by itself (it is killed after `limit`).
    #[cfg(unix)]
    pub(super) fn wait_exit(mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the host did not exit within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The `outpost` CLI against this host's config.
    pub(super) fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_outpost"))
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .env("OUTPOST_LOG", "error")
            .output()
            .unwrap()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Events of `/api/v1/events` as (kind, JSON), read by a task.
pub(super) async fn subscribe(
    host: &Host,
) -> tokio::sync::mpsc::UnboundedReceiver<(String, serde_json::Value)> {
    let mut res = Host::client()
        .get(host.url("/api/v1/events"))
        .bearer_auth(&host.token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut buf = String::new();
        while let Ok(Some(chunk)) = res.chunk().await {
            buf.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buf.find("\n\n") {
                let block: String = buf.drain(..end + 2).collect();
                let mut kind = String::new();
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(k) = line.strip_prefix("event:") {
                        kind = k.trim().to_owned();
                    } else if let Some(d) = line.strip_prefix("data:") {
                        data.push_str(d.trim_start());
                    }
                }
                if !kind.is_empty()
                    && tx
                        .send((kind, serde_json::from_str(&data).unwrap_or_default()))
                        .is_err()
                {
                    return;
                }
            }
        }
    });
    rx
}

pub(super) async fn next_of(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<(String, serde_json::Value)>,
    kind: &str,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let (k, v) = rx.recv().await.expect("stream open");
            if k == kind && pred(&v) {
                return v;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {kind} event"))
}

#[test]
fn a_notification_reaches_the_stream_is_acknowledged_and_dismissed_across_restarts() {
    let e = env();
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let config = site(dir.path(), &logs);
    let host = Host::start(&config);
    let id = e.rt.block_on(async {
        let mut rx = subscribe(&host).await;
        // An instrument error written after the client connected: the
        // collector reads it (interval 1 s), the notifier raises it.
        std::fs::write(
            logs.join("analyzer.log"),
            "2026-12-04 10:00:00 ERROR XN-550 SN-20431 E-1203 Aspiration error on sampler\n",
        )
        .unwrap();
        let raised = next_of(&mut rx, "notification-raised", |v| {
            v["key"].as_str().is_some_and(|k| k.contains("E-1203"))
        })
        .await;
        let id = raised["id"].as_i64().unwrap();
        let (status, n) = host
            .call(
                reqwest::Method::POST,
                &format!("/api/v1/notifications/{id}/acknowledge"),
            )
            .await;
        assert_eq!(status, 200, "{n}");
        assert_eq!(n["acknowledged_by"], "test");
        let acked = next_of(&mut rx, "notification-acknowledged", |v| v["id"] == id).await;
        assert_eq!(acked["client"], "test");
        id
    });
    host.kill();

    // After a restart the notification is still active, still acknowledged.
    let host = Host::start(&config);
    e.rt.block_on(async {
        let (_, list) = host
            .call(reqwest::Method::GET, "/api/v1/notifications")
            .await;
        let n = list["active"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["id"] == id)
            .unwrap_or_else(|| panic!("#{id} lost in the restart: {list}"))
            .clone();
        assert_eq!(n["acknowledged_by"], "test");
    });
    // Dismissed through the CLI, recorded as such.
    let out = host.cli(&["dismiss", &id.to_string()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    host.kill();
    let host = Host::start(&config);
    e.rt.block_on(async {
        let (_, list) = host
            .call(reqwest::Method::GET, "/api/v1/notifications?history=10")
            .await;
        assert!(
            list["active"]
                .as_array()
                .unwrap()
                .iter()
                .all(|n| n["id"] != id),
            "{list}"
        );
        let ended = list["history"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["id"] == id)
            .expect("kept as history");
        assert_eq!(ended["cleared_by"], "cli");
    });
    drop(host);
}

#[test]
fn the_api_refuses_strangers_foreign_hosts_and_other_origins() {
    let e = env();
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let host = Host::start(&site(dir.path(), &logs));
    let port = host.addr.port();
    e.rt.block_on(async {
        let c = Host::client();
        let get = |path: &str| c.get(host.url(path));
        // No token, a wrong one.
        assert_eq!(get("/api/v1/status").send().await.unwrap().status(), 401);
        let wrong = get("/api/v1/status")
            .bearer_auth("0".repeat(64))
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status(), 401);
        assert_eq!(get("/metrics").send().await.unwrap().status(), 401);
        // DNS rebinding: a name that resolved to 127.0.0.1.
        let rebound = get("/api/v1/status")
            .bearer_auth(&host.token)
            .header("host", format!("attacker.example:{port}"))
            .send()
            .await
            .unwrap();
        assert_eq!(rebound.status(), 421);
        let rebound = get("/")
            .header("host", format!("127.0.0.1.nip.io:{port}"))
            .send()
            .await
            .unwrap();
        assert_eq!(rebound.status(), 421, "even the public page");
        // The right token works, from each loopback name.
        for h in [format!("127.0.0.1:{port}"), format!("localhost:{port}")] {
            let ok = get("/api/v1/status")
                .bearer_auth(&host.token)
                .header("host", h)
                .send()
                .await
                .unwrap();
            assert_eq!(ok.status(), 200);
            assert!(ok.headers().get("access-control-allow-origin").is_none());
        }
        // A login URL works once.
        let (_, code) = host
            .call(reqwest::Method::POST, "/api/v1/login-codes")
            .await;
        let url = code["url"].as_str().unwrap().to_owned();
        let login = c.get(&url).send().await.unwrap();
        assert_eq!(login.status(), 303);
        let cookie = login
            .headers()
            .get("set-cookie")
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
            "{cookie}"
        );
        let session = cookie.split(';').next().unwrap().to_owned();
        assert_eq!(c.get(&url).send().await.unwrap().status(), 403, "replayed");
        // The session reads ...
        let read = get("/api/v1/status")
            .header("cookie", &session)
            .send()
            .await
            .unwrap();
        assert_eq!(read.status(), 200);
        // ... but a state change with it from another origin, or with no
        // origin at all, is refused; from the dashboard's origin it passes.
        let post = |origin: Option<&str>| {
            let r = c
                .post(host.url("/api/v1/modules/collector/release"))
                .header("cookie", &session);
            match origin {
                Some(o) => r.header("origin", o),
                None => r,
            }
        };
        assert_eq!(
            post(Some("http://evil.example"))
                .send()
                .await
                .unwrap()
                .status(),
            403
        );
        assert_eq!(post(None).send().await.unwrap().status(), 403);
        assert_eq!(
            post(Some(&format!("http://127.0.0.1:{port}")))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
        // A browser session cannot mint login URLs.
        let mint = c
            .post(host.url("/api/v1/login-codes"))
            .header("cookie", &session)
            .header("origin", format!("http://127.0.0.1:{port}"))
            .send()
            .await
            .unwrap();
        assert_eq!(mint.status(), 403);
        // No CORS preflight is ever approved.
        let preflight = c
            .request(reqwest::Method::OPTIONS, host.url("/api/v1/status"))
            .header("origin", "http://evil.example")
            .header("access-control-request-method", "POST")
            .send()
            .await
            .unwrap();
        assert_eq!(preflight.status(), 405);
        assert!(
            preflight
                .headers()
                .get("access-control-allow-origin")
                .is_none()
        );
    });
}

#[test]
fn status_metrics_and_the_cli_show_the_running_host() {
    let e = env();
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let host = Host::start(&site(dir.path(), &logs));
    e.rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            let (code, s) = host.call(reqwest::Method::GET, "/api/v1/status").await;
            assert_eq!(code, 200);
            let calls: u64 = s["modules"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["calls_ok"].as_u64().unwrap_or(0))
                .sum();
            if calls > 0 || Instant::now() > deadline {
                break s;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let names: Vec<&str> = status["modules"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            ["collector", "notifier", "session-policy"],
            "{status}"
        );
        assert_eq!(status["enrolment"]["enrolled"], true);
        assert!(status["modules"][0]["grant"]["directories"].is_array());
        let metrics = Host::client()
            .get(host.url("/metrics"))
            .bearer_auth(&host.token)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        for want in [
            "outpost_module_calls_total{",
            "outpost_module_call_seconds_bucket{",
            "outpost_instantiate_seconds_count",
            "outpost_spool_batches",
            "outpost_api_requests_total{",
            "# EOF",
        ] {
            assert!(metrics.contains(want), "{want} not in\n{metrics}");
        }
        // The OpenAPI document is the one in the repository.
        let doc = Host::client()
            .get(host.url("/api/v1/openapi.json"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(doc, outpost_host::api::OPENAPI);
    });
    let out = host.cli(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("module     collector"), "{text}");
    let out = host.cli(&["notifications", "--json"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["active"].is_array());
    let out = host.cli(&["dashboard"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(
            "http://127.0.0.1:{}/login?code=",
            host.addr.port()
        )),
        "{text}"
    );
    let state = host.state.clone();
    host.kill();
    // No service: the CLI says so.
    let out = Command::new(env!("CARGO_BIN_EXE_outpost"))
        .args(["status", "--config"])
        .arg(dir.path().join("outpost.toml"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no outpost service is running"), "{err}");
    assert!(state.join("api.token").exists());
}

#[test]
fn a_non_loopback_listen_address_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let config = site(dir.path(), &logs);
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("listen = \"127.0.0.1:0\"", "listen = \"0.0.0.0:8787\"");
    std::fs::write(&config, text).unwrap();
    for cmd in ["check-config", "run"] {
        let mut c = Command::new(env!("CARGO_BIN_EXE_outpost"));
        c.arg(cmd);
        if cmd == "check-config" {
            c.arg(&config);
        } else {
            c.args(["--seconds", "1", "--config"]).arg(&config);
        }
        let out = c.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{cmd}");
        assert!(
            err.contains("0.0.0.0:8787") && err.contains("loopback"),
            "{cmd}: {err}"
        );
    }
}

/// `outpost run` whose standard output nobody reads (a full pipe) keeps
/// collecting and answering; what it could not print is counted and said
/// once the output is read again.
#[test]
fn a_stdout_nobody_reads_does_not_stall_the_host() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    // Thousands of events: far more than a pipe and the output queue hold
    // (each line its own code, so that no two alerts of a call coalesce).
    let mut text = String::new();
    for i in 0..6000 {
        text.push_str(&format!(
            "2026-12-04 10:00:00 ERROR XN-550 SN-20431 E-{:04} Aspiration error on sampler {i}\n",
            1000 + i
        ));
    }
    std::fs::write(logs.join("analyzer.log"), text).unwrap();
    let config = site(dir.path(), &logs);
    let mut host = Host::start_with_stdout(&config, Stdio::piped());
    let stdout = host.child.stdout.take().unwrap();
    let calls = |host: &Host| -> u64 {
        let (status, s) = env()
            .rt
            .block_on(host.call(reqwest::Method::GET, "/api/v1/status"));
        assert_eq!(status, 200, "{s}");
        s["modules"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == "collector")
            .and_then(|m| m["calls_ok"].as_u64())
            .unwrap_or(0)
    };
    // The file is read and queued, and the collector goes on being called
    // on its interval (1 s) while nobody reads the output.
    let deadline = Instant::now() + Duration::from_secs(120);
    let first = loop {
        let (_, s) = env()
            .rt
            .block_on(host.call(reqwest::Method::GET, "/api/v1/status"));
        if s["uplink"]["waiting_batches"].as_u64().unwrap_or(0) > 0 {
            break calls(&host);
        }
        assert!(Instant::now() < deadline, "nothing was queued: {s}");
        std::thread::sleep(Duration::from_millis(200));
    };
    while calls(&host) < first + 3 {
        assert!(
            Instant::now() < deadline,
            "the collector stopped being called while the output was full"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Read again: the host says how many events it could not print.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let skipped = loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("no line saying what was skipped");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        if v["event"] == "output-skipped" {
            break v["events"].as_u64().unwrap();
        }
    };
    assert!(skipped > 0);
}

/// An idle host hands back memory (#14: idle RSS) and goes on working:
/// after the trim, a line written into the collector's folder is read and
/// queued, and the API answers. (Linux: on Windows the trim is
/// `SetProcessWorkingSetSize`, which Wine does not implement.)
#[cfg(target_os = "linux")]
#[test]
fn an_idle_host_hands_back_memory_and_goes_on_working() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let config = site_with_interval(dir.path(), &logs, 3600);
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("idle-trim-secs = 30\n"));
    std::fs::write(
        &config,
        text.replace("idle-trim-secs = 30\n", "idle-trim-secs = 1\n"),
    )
    .unwrap();
    let host = Host::start(&config);
    let metric = |name: &str| -> u64 {
        let text = env().rt.block_on(async {
            Host::client()
                .get(host.url("/metrics"))
                .bearer_auth(&host.token)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        });
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("{name} not in\n{text}"))
            .trim()
            .parse()
            .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    while metric("outpost_idle_trims") == 0 {
        assert!(Instant::now() < deadline, "the idle host never trimmed");
        std::thread::sleep(Duration::from_secs(2));
    }
    assert!(metric("outpost_process_resident_bytes") > 0);
    // After the trim: the collector's code and the host's run as before.
    std::fs::write(
        logs.join("analyzer.log"),
        "2026-12-04 10:00:00 ERROR XN-550 SN-20431 E-1203 Aspiration error on sampler 2\n",
    )
    .unwrap();
    loop {
        let (status, s) = env()
            .rt
            .block_on(host.call(reqwest::Method::GET, "/api/v1/status"));
        assert_eq!(status, 200, "{s}");
        if s["uplink"]["waiting_batches"].as_u64().unwrap_or(0) > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the line written after the trim was not queued: {s}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    host.kill();
}
