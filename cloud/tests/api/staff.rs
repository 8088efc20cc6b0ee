//! The staff read-back API behind OpenID Connect (#18), against a real
//! OpenID provider on loopback: node's `oidc-provider` (tests/oidc/). The
//! browser side is driven by hand: an HTTP client following redirects,
//! cookies kept per host and port. Without node (or `npm ci --prefix
//! cloud/tests/oidc`), the tests say they skipped, unless
//! OUTPOST_REQUIRE_OIDC=1.

use super::*;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};

use outpost_cloud::StaffConfig;
use outpost_cloud::staff::newloc::MailConfig;
use serde_json::Value;

pub(super) const CLIENT_ID: &str = "outpost-staff";
pub(super) const CLIENT_SECRET: &str = "staff-client-secret-5d1e0c7b9a";

/// A running `node provider.js`; killed on drop.
pub struct Provider {
    child: Child,
    pub issuer: String,
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn required() -> bool {
    std::env::var("OUTPOST_REQUIRE_OIDC").is_ok_and(|v| v == "1")
}

fn skip(why: &str) -> Option<Provider> {
    assert!(!required(), "OUTPOST_REQUIRE_OIDC=1 but {why}");
    eprintln!("skipped: {why} (install node and run `npm ci --prefix cloud/tests/oidc`)");
    None
}

impl Provider {
    /// Start a provider whose client redirects to `redirect_uri`; `None`
    /// (skipped) when node or the provider's packages are missing.
    pub fn start(redirect_uri: &str, env: &[(&str, &str)]) -> Option<Provider> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oidc");
        if !dir.join("node_modules/oidc-provider").is_dir() {
            return skip("cloud/tests/oidc/node_modules/oidc-provider is missing");
        }
        let mut cmd = Command::new("node");
        cmd.arg("provider.js")
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => return skip(&format!("node could not be started: {e}")),
        };
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let port: u16 = line
            .trim()
            .strip_prefix("port=")
            .unwrap_or_else(|| panic!("provider said {line:?}"))
            .parse()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        writeln!(stdin, "{redirect_uri} {CLIENT_SECRET}").unwrap();
        line.clear();
        out.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready", "provider did not start");
        // Keep stdin open (and the pipe drained) for the provider's life.
        std::thread::spawn(move || {
            let _stdin = stdin;
            let mut sink = String::new();
            while out.read_line(&mut sink).is_ok_and(|n| n > 0) {
                sink.clear();
            }
        });
        Some(Provider {
            child,
            issuer: format!("http://127.0.0.1:{port}"),
        })
    }
}

/// A free loopback port (bound, then released for the server to take).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A response as the browser saw it.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: hyper::HeaderMap,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A browser: cookies by host:port (by hand), the test CA trusted.
pub struct Browser {
    ca_pem: String,
    pub jar: HashMap<String, HashMap<String, String>>,
    pub user_agent: String,
}

impl Browser {
    pub fn new(ca_pem: &str) -> Browser {
        Browser {
            ca_pem: ca_pem.to_owned(),
            jar: HashMap::new(),
            user_agent: "outpost-staff-test/1".into(),
        }
    }

    pub async fn request(&mut self, method: &str, url: &str) -> Resp {
        let u = url::Url::parse(url).unwrap();
        let host = u.host_str().unwrap().to_owned();
        let port = u.port_or_known_default().unwrap();
        let authority = format!("{host}:{port}");
        let tcp = TcpStream::connect((host.as_str(), port)).await.unwrap();
        let mut path = u.path().to_owned();
        if let Some(q) = u.query() {
            path = format!("{path}?{q}");
        }
        let cookies = self
            .jar
            .get(&authority)
            .map(|c| {
                c.iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join("; ")
            })
            .unwrap_or_default();
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", &authority)
            .header("user-agent", &self.user_agent);
        if !cookies.is_empty() {
            req = req.header("cookie", cookies);
        }
        let req = req.body(Full::new(Bytes::new())).unwrap();
        let resp = if u.scheme() == "https" {
            let connector = TlsConnector::from(client_config(&self.ca_pem, false));
            let tls = connector
                .connect(ServerName::try_from(host.clone()).unwrap(), tcp)
                .await
                .unwrap();
            exchange(tls, req).await
        } else {
            exchange(tcp, req).await
        };
        for v in resp.headers.get_all("set-cookie") {
            let v = v.to_str().unwrap();
            let first = v.split(';').next().unwrap();
            let (k, val) = first.split_once('=').unwrap();
            let gone = val.is_empty()
                || v.to_ascii_lowercase().contains("max-age=0")
                || v.to_ascii_lowercase().contains("expires=thu, 01 jan 1970");
            let jar = self.jar.entry(authority.clone()).or_default();
            if gone {
                jar.remove(k);
            } else {
                jar.insert(k.to_owned(), val.to_owned());
            }
        }
        resp
    }

    pub async fn get(&mut self, url: &str) -> Resp {
        self.request("GET", url).await
    }

    /// Follow redirects from `url` until a response that is not one, or a
    /// redirect to a URL starting with `stop_at` (returned, not fetched).
    pub async fn follow(&mut self, url: &str, stop_at: Option<&str>) -> (Resp, String) {
        let mut url = url::Url::parse(url).unwrap();
        for _ in 0..20 {
            let r = self.get(url.as_str()).await;
            if !r.status.is_redirection() {
                return (r, url.to_string());
            }
            let loc = r.headers["location"].to_str().unwrap();
            url = url.join(loc).unwrap();
            if stop_at.is_some_and(|s| url.as_str().starts_with(s)) {
                return (r, url.to_string());
            }
        }
        panic!("too many redirects");
    }
}

async fn exchange<S>(io: S, req: hyper::Request<Full<Bytes>>) -> Resp
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    Resp {
        status,
        headers,
        body,
    }
}

/// A server with the staff API on, its provider, and two devices with one
/// batch each: `eu_dev` in region `eu`, `us_dev` in region `us`.
pub struct StaffFixture {
    pub fx: Fixture,
    pub provider: Provider,
    pub base: String,
    pub eu_dev: DeviceId,
    pub us_dev: DeviceId,
}

impl StaffFixture {
    pub async fn start(provider_env: &[(&str, &str)]) -> Option<StaffFixture> {
        Self::start_mail(provider_env, None).await
    }

    pub async fn start_mail(
        provider_env: &[(&str, &str)],
        mail: Option<MailConfig>,
    ) -> Option<StaffFixture> {
        let port = free_port();
        let base = format!("https://127.0.0.1:{port}");
        let provider = Provider::start(&format!("{base}/staff/callback"), provider_env)?;
        let issuer = provider.issuer.clone();
        let b = base.clone();
        let fx = start_with(move |cfg| {
            cfg.listen = format!("127.0.0.1:{port}").parse().unwrap();
            cfg.region = "eu".into();
            let mut staff = StaffConfig::new(&issuer, CLIENT_ID, CLIENT_SECRET, &b);
            staff.new_location = mail;
            cfg.staff = Some(staff);
        })
        .await;
        let mut devs = Vec::new();
        for _ in 0..2 {
            let key = DeviceKey::generate();
            let dev = fx.enroll(&key).await;
            let (s, b) = fx
                .post(INGEST_PATH, seal(&key, &dev, "qc", 1, &batch()).unwrap())
                .await;
            assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
            devs.push(dev);
        }
        let us_dev = devs.pop().unwrap();
        let eu_dev = devs.pop().unwrap();
        outpost_cloud::staff::set_region(fx.server.store(), &us_dev, "us").unwrap();
        Some(StaffFixture {
            fx,
            provider,
            base,
            eu_dev,
            us_dev,
        })
    }

    pub fn ca(&self) -> &str {
        &self.fx.pki.ca_cert_pem
    }

    /// Sign `user` in with a new browser; the callback's response and the
    /// browser.
    pub async fn sign_in(&self, user: &str) -> (Resp, Browser) {
        let mut b = Browser::new(self.ca());
        let r = self.sign_in_with(&mut b, user).await;
        (r, b)
    }

    /// Sign `user` in with browser `b`.
    pub async fn sign_in_with(&self, b: &mut Browser, user: &str) -> Resp {
        b.follow(
            &format!("{}/staff/login?login_hint={user}", self.base),
            None,
        )
        .await
        .0
    }

    pub fn audit(&self) -> Vec<outpost_cloud::staff::db::AuditEntry> {
        outpost_cloud::staff::audit_entries(self.fx.server.store()).unwrap()
    }
}

#[tokio::test]
async fn staff_sign_in_sees_only_their_region_and_every_access_is_audited() {
    let Some(sf) = StaffFixture::start(&[]).await else {
        return;
    };
    let base = sf.base.clone();

    // No session: 401 on every data route.
    let mut anon = Browser::new(sf.ca());
    for path in [
        "/staff/devices".to_owned(),
        format!("/staff/devices/{}/batches", sf.eu_dev),
        format!("/staff/devices/{}/status", sf.eu_dev),
    ] {
        let r = anon.get(&format!("{base}{path}")).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{path}: {}", r.text());
        assert!(r.text().contains("no staff session"), "{}", r.text());
    }
    // A made-up session cookie is no session either.
    anon.jar
        .entry(format!("127.0.0.1:{}", sf.fx.addr().port()))
        .or_default()
        .insert("__Host-outpost-staff".into(), "00".repeat(32));
    let r = anon.get(&format!("{base}/staff/devices")).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    // alice: support, trained, region eu.
    let (r, mut alice) = sf.sign_in("alice").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["subject"], "alice");
    assert_eq!(r.json()["regions"], serde_json::json!(["eu"]));
    let cookie = r
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|v| v.starts_with("__Host-outpost-staff="))
        .unwrap();
    for attr in ["Secure", "HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(
            cookie.contains(attr),
            "session cookie lacks {attr}: {cookie}"
        );
    }

    let r = alice.get(&format!("{base}/staff/devices")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let list = r.json();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["device-id"], sf.eu_dev.as_str());
    assert_eq!(list[0]["region"], "eu");
    assert_eq!(list[0]["instrument-model"], MODEL);
    // Only what support needs: no contact data, no serial.
    for personal in [EMAIL, NAME, SERIAL] {
        assert!(!r.text().contains(personal), "device list shows {personal}");
    }

    let r = alice
        .get(&format!("{base}/staff/devices/{}/batches", sf.eu_dev))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let batches: Vec<outpost_cloud::StoredBatch> = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(batches.len(), 1);
    assert_eq!(batches[0].body, batch());
    let r = alice
        .get(&format!("{base}/staff/devices/{}/status", sf.eu_dev))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());

    // Another region's device, or one that does not exist: the same 404.
    for dev in [
        sf.us_dev.as_str(),
        "0123456789abcdef0123456789abcdef",
        "not%20a%20device",
    ] {
        for what in ["batches", "status"] {
            let r = alice
                .get(&format!("{base}/staff/devices/{dev}/{what}"))
                .await;
            assert_eq!(
                r.status,
                StatusCode::NOT_FOUND,
                "{dev}/{what}: {}",
                r.text()
            );
            assert_eq!(r.json()["error"], "no such device");
        }
    }

    // bob: region us sees the us device only, and not alice's.
    let (r, mut bob) = sf.sign_in("bob").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let r = bob.get(&format!("{base}/staff/devices")).await;
    let list = r.json();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["device-id"], sf.us_dev.as_str());
    let r = bob
        .get(&format!("{base}/staff/devices/{}/batches", sf.eu_dev))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = bob
        .get(&format!("{base}/staff/devices/{}/batches", sf.us_dev))
        .await;
    assert_eq!(r.status, StatusCode::OK);

    // Sign-out ends the session at the server, not only in the browser.
    let stolen = alice.jar.clone();
    let r = alice.request("POST", &format!("{base}/staff/logout")).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    let r = alice.get(&format!("{base}/staff/devices")).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    alice.jar = stolen;
    let r = alice.get(&format!("{base}/staff/devices")).await;
    assert_eq!(
        r.status,
        StatusCode::UNAUTHORIZED,
        "a signed-out session id still works"
    );

    // The audit: who, what, when, from where, for each access.
    let audit = sf.audit();
    let rows: Vec<(Option<&str>, &str, Option<&str>, &str)> = audit
        .iter()
        .map(|e| {
            (
                e.subject.as_deref(),
                e.action.as_str(),
                e.device.as_deref(),
                e.outcome.as_str(),
            )
        })
        .collect();
    let (eu, us) = (Some(sf.eu_dev.as_str()), Some(sf.us_dev.as_str()));
    let mut want = vec![
        (Some("alice"), "sign-in", None, "ok"),
        (Some("alice"), "list-devices", None, "ok"),
        (Some("alice"), "read-batches", eu, "ok"),
        (Some("alice"), "read-status", eu, "ok"),
    ];
    for dev in [us, Some("0123456789abcdef0123456789abcdef"), None] {
        want.push((Some("alice"), "read-batches", dev, "not-found"));
        want.push((Some("alice"), "read-status", dev, "not-found"));
    }
    want.extend([
        (Some("bob"), "sign-in", None, "ok"),
        (Some("bob"), "list-devices", None, "ok"),
        (Some("bob"), "read-batches", eu, "not-found"),
        (Some("bob"), "read-batches", us, "ok"),
        (Some("alice"), "sign-out", None, "ok"),
    ]);
    assert_eq!(rows, want);
    for e in &audit {
        assert_eq!(e.issuer.as_deref(), Some(sf.provider.issuer.as_str()));
        assert_eq!(e.peer, "127.0.0.1");
        assert!(e.at > 1_700_000_000);
    }
    assert_eq!(audit[2].route, "/staff/devices/{device}/batches");

    // The operator's CLI prints the same audit, and moves a device.
    let bin = env!("CARGO_BIN_EXE_outpost-cloud");
    let data = sf.fx.server.store().dir().to_path_buf();
    let out = Command::new(bin)
        .args(["staff-audit", "--json", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed.as_array().unwrap().len(), audit.len());
    assert_eq!(printed[0]["subject"], "alice");
    assert_eq!(printed[0]["peer"], "127.0.0.1");
    let out = Command::new(bin)
        .args(["staff-audit", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("read-batches") && text.contains("not-found"),
        "{text}"
    );
    let out = Command::new(bin)
        .args([
            "device-region",
            "--region",
            "eu",
            "--device",
            sf.us_dev.as_str(),
            "--data",
        ])
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = bob.get(&format!("{base}/staff/devices")).await;
    assert_eq!(
        r.json(),
        serde_json::json!([]),
        "bob still sees the moved device"
    );
    let out = Command::new(bin)
        .args([
            "device-region",
            "--region",
            "eu",
            "--device",
            "0123456789abcdef0123456789abcdef",
            "--data",
        ])
        .arg(&data)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no device"));
    sf.fx.server.shutdown().await;
}

#[tokio::test]
async fn missing_training_or_role_claim_is_403_naming_it() {
    let Some(sf) = StaffFixture::start(&[]).await else {
        return;
    };
    let (r, mut carol) = sf.sign_in("carol").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
    assert!(r.text().contains("privacy_trained"), "{}", r.text());
    assert!(
        r.headers
            .get_all("set-cookie")
            .iter()
            .all(|v| !v.to_str().unwrap().starts_with("__Host-outpost-staff="))
    );
    let r = carol.get(&format!("{}/staff/devices", sf.base)).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    let (r, _) = sf.sign_in("dave").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
    assert!(r.text().contains("outpost_role"), "{}", r.text());

    let audit = sf.audit();
    assert_eq!(audit.len(), 2);
    for e in &audit {
        assert_eq!(e.action, "sign-in");
        assert_eq!(e.outcome, "refused");
        assert!(e.detail.as_deref().unwrap().contains("access denied"));
    }
    sf.fx.server.shutdown().await;
}

#[tokio::test]
async fn forged_stolen_or_replayed_callbacks_are_refused() {
    let Some(sf) = StaffFixture::start(&[]).await else {
        return;
    };
    let cb = format!("{}/staff/callback", sf.base);
    let mut b = Browser::new(sf.ca());
    let (_, callback) = b
        .follow(
            &format!("{}/staff/login?login_hint=alice", sf.base),
            Some(&cb),
        )
        .await;
    assert!(callback.contains("code="), "{callback}");

    // The state altered: refused.
    let u = url::Url::parse(&callback).unwrap();
    let state = u
        .query_pairs()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .into_owned();
    let forged = callback.replace(&format!("state={state}"), "state=forged");
    let r = b.get(&forged).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text());
    assert!(r.text().contains("state"), "{}", r.text());

    // The right callback in another browser (no login cookie): refused,
    // and the state is spent.
    let mut thief = Browser::new(sf.ca());
    let r = thief.get(&callback).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text());
    let r = b.get(&callback).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text());

    // A fresh sign-in works, and its callback cannot be replayed.
    let (_, callback) = b
        .follow(
            &format!("{}/staff/login?login_hint=alice", sf.base),
            Some(&cb),
        )
        .await;
    let login_cookies = b.jar.clone();
    let r = b.get(&callback).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    b.jar = login_cookies;
    let r = b.get(&callback).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text());

    let refused = sf
        .audit()
        .iter()
        .filter(|e| e.action == "sign-in" && e.outcome == "refused")
        .count();
    assert_eq!(refused, 4);
    sf.fx.server.shutdown().await;
}

#[tokio::test]
async fn a_code_from_another_provider_is_refused() {
    let Some(sf) = StaffFixture::start(&[]).await else {
        return;
    };
    // A second provider instance (its own keys), the same client.
    let other = Provider::start(&format!("{}/staff/callback", sf.base), &[]).unwrap();
    let mut b = Browser::new(sf.ca());
    let r = b
        .get(&format!("{}/staff/login?login_hint=alice", sf.base))
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let to_real = r.headers["location"].to_str().unwrap();
    assert!(to_real.starts_with(&sf.provider.issuer));
    // The browser is sent to the other provider with the same request.
    let to_other = to_real.replacen(&sf.provider.issuer, &other.issuer, 1);
    let cb = format!("{}/staff/callback", sf.base);
    let (_, callback) = b.follow(&to_other, Some(&cb)).await;
    let r = b.get(&callback).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text());
    assert!(r.text().contains("sign-in refused"), "{}", r.text());
    sf.fx.server.shutdown().await;
}

#[tokio::test]
async fn an_expired_id_token_is_refused() {
    // The provider's clock runs two hours behind: every ID token it signs
    // expired an hour before it reaches us (its lifetime is 600 s).
    let Some(sf) = StaffFixture::start(&[("CLOCK_OFFSET_SECS", "-7200")]).await else {
        return;
    };
    let (r, _) = sf.sign_in("alice").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text());
    assert!(r.text().contains("xpired"), "{}", r.text());
    let audit = sf.audit();
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].outcome, "refused");
    sf.fx.server.shutdown().await;
}

/// A running `python3 smtpd.py` (aiosmtpd, STARTTLS required); killed on
/// drop. Its mails arrive on `mails`.
pub struct Smtpd {
    child: Child,
    port: u16,
    ca_pem: String,
    mails: std::sync::mpsc::Receiver<Value>,
    _dir: tempfile::TempDir,
}

impl Drop for Smtpd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Smtpd {
    pub fn start() -> Option<Smtpd> {
        let require = std::env::var("OUTPOST_REQUIRE_SMTP").is_ok_and(|v| v == "1");
        let skip = |why: String| {
            assert!(!require, "OUTPOST_REQUIRE_SMTP=1 but {why}");
            eprintln!("skipped: {why} (pip install aiosmtpd)");
            None
        };
        let ok = Command::new("python3")
            .args(["-c", "import aiosmtpd"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return skip("python3 with aiosmtpd is not available".into());
        }
        let dir = tempfile::tempdir().unwrap();
        let pki = TestPki::generate(&["127.0.0.1"]).unwrap();
        let (cert, key) = (dir.path().join("smtp.pem"), dir.path().join("smtp.key.pem"));
        std::fs::write(&cert, &pki.server_cert_pem).unwrap();
        std::fs::write(&key, &pki.server_key_pem).unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/smtp/smtpd.py");
        let mut child = match Command::new("python3")
            .arg(script)
            .arg(&cert)
            .arg(&key)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(c) => c,
            Err(e) => return skip(format!("python3 could not be started: {e}")),
        };
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let port: u16 = line
            .trim()
            .strip_prefix("port=")
            .unwrap_or_else(|| panic!("smtpd said {line:?}"))
            .parse()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let (tx, mails) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _stdin = stdin;
            let mut l = String::new();
            while out.read_line(&mut l).is_ok_and(|n| n > 0) {
                if let Ok(v) = serde_json::from_str::<Value>(&l) {
                    let _ = tx.send(v);
                }
                l.clear();
            }
        });
        Some(Smtpd {
            child,
            port,
            ca_pem: pki.ca_cert_pem.clone(),
            mails,
            _dir: dir,
        })
    }

    pub fn config(&self) -> MailConfig {
        MailConfig {
            smtp_host: "127.0.0.1".into(),
            smtp_port: self.port,
            from: "outpost-cloud@example.test".into(),
            smtp_ca_pem: Some(self.ca_pem.clone()),
            credentials: None,
        }
    }

    /// The next mail received (it is in before the sender's `250`, so
    /// before the server answered the browser).
    pub fn next_mail(&self) -> Value {
        self.mails
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("no mail")
    }

    pub fn no_mail(&self) {
        assert!(self.mails.try_recv().is_err(), "unexpected mail");
    }
}

/// The confirmation link in a mail body.
fn link_in(mail: &Value) -> String {
    let body = mail["body"].as_str().unwrap();
    body.lines()
        .map(str::trim)
        .find(|l| l.contains("/staff/confirm?token="))
        .unwrap_or_else(|| panic!("no link in {body}"))
        .to_owned()
}

#[tokio::test]
async fn a_sign_in_from_a_new_network_or_browser_waits_for_the_mailed_link() {
    let Some(smtp) = Smtpd::start() else {
        return;
    };
    let Some(sf) = StaffFixture::start_mail(&[], Some(smtp.config())).await else {
        return;
    };
    let base = sf.base.clone();

    // The first sign-in is held: no session until the link is opened.
    let mut alice = Browser::new(sf.ca());
    let r = sf.sign_in_with(&mut alice, "alice").await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text());
    assert!(r.text().contains("e-mail"), "{}", r.text());
    let r = alice.get(&format!("{base}/staff/devices")).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let mail = smtp.next_mail();
    assert_eq!(mail["rcpt_tos"], serde_json::json!(["alice@example.test"]));
    assert_eq!(mail["tls"], true, "the mail went without STARTTLS");
    assert!(mail["body"].as_str().unwrap().contains("127.0.0.0/24"));
    let link = link_in(&mail);
    assert!(
        link.starts_with(&format!("{base}/staff/confirm?token=")),
        "{link}"
    );

    // A wrong code is refused (and does not spend the right one).
    let wrong = format!("{base}/staff/confirm?token={}", "0".repeat(64));
    let r = alice.get(&wrong).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text());
    // The link from the mail completes the sign-in.
    let r = alice.get(&link).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["subject"], "alice");
    let r = alice.get(&format!("{base}/staff/devices")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    // Used once: a second time it is refused.
    let r = alice.get(&link).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text());

    // Same network, same browser: straight in, no mail.
    let r = sf.sign_in_with(&mut alice, "alice").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    smtp.no_mail();

    // Another browser: held again; its link opened in a third party's
    // browser is refused, and then spent.
    let mut other = Browser::new(sf.ca());
    other.user_agent = "another-browser/2".into();
    let r = sf.sign_in_with(&mut other, "alice").await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text());
    let link = link_in(&smtp.next_mail());
    let mut thief = Browser::new(sf.ca());
    thief.user_agent = "another-browser/2".into();
    let r = thief.get(&link).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text());
    let r = other.get(&link).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text());

    // No e-mail claim: a new place cannot be confirmed.
    let r = sf.sign_in("erin").await.0;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
    assert!(r.text().contains("e-mail"), "{}", r.text());
    smtp.no_mail();

    let rows: Vec<(Option<String>, String, String)> = sf
        .audit()
        .into_iter()
        .map(|e| (e.subject, e.route, e.outcome))
        .collect();
    let a = || Some("alice".to_owned());
    let (cb, cf) = ("/staff/callback".to_owned(), "/staff/confirm".to_owned());
    assert_eq!(
        rows,
        vec![
            (a(), cb.clone(), "held".into()),
            (None, cf.clone(), "refused".into()),
            (a(), cf.clone(), "ok".into()),
            (a(), "/staff/devices".into(), "ok".into()),
            (None, cf.clone(), "refused".into()),
            (a(), cb.clone(), "ok".into()),
            (a(), cb.clone(), "held".into()),
            (None, cf.clone(), "refused".into()),
            (None, cf.clone(), "refused".into()),
            (Some("erin".into()), cb.clone(), "refused".into()),
        ]
    );
    sf.fx.server.shutdown().await;
}

/// Needs no provider: a callback whose state the server never issued is
/// refused before the provider is asked.
#[tokio::test]
async fn sign_ins_from_one_address_are_rate_limited_and_not_audited_past_the_limit() {
    let port = free_port();
    let base = format!("https://127.0.0.1:{port}");
    let b = base.clone();
    let fx = start_with(move |cfg| {
        cfg.listen = format!("127.0.0.1:{port}").parse().unwrap();
        // Nobody listens there: nothing below reaches the provider.
        cfg.staff = Some(StaffConfig::new(
            "http://127.0.0.1:9",
            CLIENT_ID,
            CLIENT_SECRET,
            &b,
        ));
        cfg.defence.sign_in_per_source = outpost_cloud::Rate::new(6, 3);
    })
    .await;
    let mut browser = Browser::new(&fx.pki.ca_cert_pem);
    let cb = format!("{base}/staff/callback?code=guess&state=guess");
    for _ in 0..3 {
        let r = browser.get(&cb).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text());
    }
    let r = browser.get(&cb).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.text());
    let wait: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=10).contains(&wait), "{wait}");
    assert_eq!(fx.counter("rate-limited"), 1);
    // Starting a sign-in draws on the same rate (it keeps a row): refused
    // too, and nothing kept.
    let r = browser.get(&format!("{base}/staff/login")).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.text());
    assert!(r.headers.get("location").is_none());
    assert_eq!(fx.counter("rate-limited"), 2);
    // The three looked at are audited as refused; the limited one is only
    // counted (a flood costs no writes).
    let refused = outpost_cloud::staff::audit_entries(fx.server.store())
        .unwrap()
        .iter()
        .filter(|e| e.action == "sign-in" && e.outcome == "refused")
        .count();
    assert_eq!(refused, 3);
    let alerts = fx.server.recent_alerts();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].kind, outpost_cloud::AlertKind::SourceRateExceeded);
    assert_eq!(alerts[0].reason, "sign-in");
    fx.server.shutdown().await;
}
