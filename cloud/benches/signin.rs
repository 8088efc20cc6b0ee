//! Staff sign-in latency (#18): the full authorization-code flow against a
//! real OpenID provider on loopback (node's oidc-provider, tests/oidc/),
//! as a browser sees it: /staff/login → provider → sign-in and consent
//! interactions → /staff/callback (code exchange with PKCE, ID token
//! validated against the JWKS, session) — and, separately, the callback
//! alone. `BENCH_SIGNINS` (default 50) sign-ins; the first (discovery)
//! is reported apart. Needs node and `npm ci --prefix cloud/tests/oidc`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use outpost_cloud::{Enrollment, EnrollmentToken, Server, ServerConfig, StaffConfig, TestPki};
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const SECRET: &str = "bench-client-secret-2b8e41f0";

struct Browser {
    tls: TlsConnector,
    jar: HashMap<String, HashMap<String, String>>,
}

impl Browser {
    async fn get(&mut self, url: &url::Url) -> (u16, Option<String>) {
        let host = url.host_str().unwrap().to_owned();
        let port = url.port_or_known_default().unwrap();
        let authority = format!("{host}:{port}");
        let tcp = TcpStream::connect((host.as_str(), port)).await.unwrap();
        let path = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        };
        let mut req = hyper::Request::get(path).header("host", &authority);
        if let Some(c) = self.jar.get(&authority) {
            let c: Vec<String> = c.iter().map(|(k, v)| format!("{k}={v}")).collect();
            req = req.header("cookie", c.join("; "));
        }
        let req = req.body(Full::new(Bytes::new())).unwrap();
        let resp = if url.scheme() == "https" {
            let tls = self
                .tls
                .connect(ServerName::try_from(host).unwrap(), tcp)
                .await
                .unwrap();
            send(tls, req).await
        } else {
            send(tcp, req).await
        };
        for v in resp.headers().get_all("set-cookie") {
            let v = v.to_str().unwrap();
            let (k, val) = v.split(';').next().unwrap().split_once('=').unwrap();
            let jar = self.jar.entry(authority.clone()).or_default();
            if val.is_empty() || v.contains("Max-Age=0") || v.contains("max-age=0") {
                jar.remove(k);
            } else {
                jar.insert(k.to_owned(), val.to_owned());
            }
        }
        let loc = resp
            .headers()
            .get("location")
            .map(|l| l.to_str().unwrap().to_owned());
        let status = resp.status().as_u16();
        let _ = resp.into_body().collect().await.unwrap();
        (status, loc)
    }
}

async fn send<S>(io: S, req: hyper::Request<Full<Bytes>>) -> hyper::Response<hyper::body::Incoming>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    s.send_request(req).await.unwrap()
}

fn stats(name: &str, mut v: Vec<Duration>) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let p = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    println!(
        "| {name:<34} | {:>4} | {:>8.2} | {:>8.2} | {:>8.2} | {:>8.2} |",
        v.len(),
        ms(v[0]),
        ms(p(0.5)),
        ms(p(0.9)),
        ms(v[v.len() - 1])
    );
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("BENCH_SIGNINS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oidc");
    if !dir.join("node_modules/oidc-provider").is_dir() {
        println!("skipped: run `npm ci --prefix cloud/tests/oidc` first (needs node)");
        return;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!("https://127.0.0.1:{port}");
    let mut child = match Command::new("node")
        .arg("provider.js")
        .current_dir(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            println!("skipped: node could not be started: {e}");
            return;
        }
    };
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let issuer = format!(
        "http://127.0.0.1:{}",
        line.trim().strip_prefix("port=").unwrap()
    );
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "{base}/staff/callback {SECRET}").unwrap();
    line.clear();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    std::thread::spawn(move || {
        let _stdin = stdin;
        let mut s = String::new();
        while out.read_line(&mut s).is_ok_and(|n| n > 0) {
            s.clear();
        }
    });

    let data = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(&["127.0.0.1"]).unwrap();
    let mut cfg = ServerConfig::new(
        data.path().to_path_buf(),
        format!("127.0.0.1:{port}").parse().unwrap(),
        pki.server_cert_pem.clone(),
        pki.server_key_pem.clone(),
        Enrollment::Token(EnrollmentToken::new("bench-enrolment-token-1234").unwrap()),
    );
    // The bench measures sign-in latency, not the sign-in rate limit.
    cfg.defence = outpost_cloud::DefenceConfig::without_rate_limits();
    cfg.staff = Some(StaffConfig::new(&issuer, "outpost-staff", SECRET, &base));
    let server = Server::start(cfg).await.unwrap();

    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(pki.ca_cert_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let tls = TlsConnector::from(Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth(),
    ));

    let callback_prefix = format!("{base}/staff/callback");
    let (mut full, mut cb) = (Vec::new(), Vec::new());
    let mut first = None;
    for i in 0..=n {
        let mut b = Browser {
            tls: tls.clone(),
            jar: HashMap::new(),
        };
        let start = Instant::now();
        let mut url = url::Url::parse(&format!("{base}/staff/login?login_hint=alice")).unwrap();
        let cb_time = loop {
            let is_cb = url.as_str().starts_with(&callback_prefix);
            let t = Instant::now();
            let (status, loc) = b.get(&url).await;
            if is_cb {
                assert_eq!(status, 200, "sign-in failed");
                break t.elapsed();
            }
            url = url.join(&loc.expect("a redirect")).unwrap();
        };
        let total = start.elapsed();
        if i == 0 {
            first = Some(total);
        } else {
            full.push(total);
            cb.push(cb_time);
        }
    }
    println!("staff sign-in against oidc-provider on loopback (cargo bench: release build)\n");
    println!(
        "| step                               |    n |   min ms |   med ms |   p90 ms |   max ms |"
    );
    println!(
        "| ---------------------------------- | ---- | -------- | -------- | -------- | -------- |"
    );
    stats("first sign-in (with discovery)", vec![first.unwrap()]);
    stats("full sign-in (7 requests)", full);
    stats("callback (exchange + validation)", cb);
    server.shutdown().await;
    let _ = child.kill();
    let _ = child.wait();
}
