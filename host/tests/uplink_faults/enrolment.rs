//! Enrolment against servers that are not what they should be: each failure
//! comes out as the exact words an operator reads (also through the real
//! `outpost enroll` binary), and a hostile answer cannot fill the memory.

use super::*;
use outpost_host::net::MAX_ANSWER_BYTES;
use outpost_host::uplink::enroll::enroll_within;

/// A CA made for the test that issues leaves with chosen names and validity
/// (its name differs from `TestPki`'s, so one does not pass for the other).
pub(crate) struct TestCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pem: String,
}

impl TestCa {
    pub(crate) fn new() -> TestCa {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "outpost enrolment test CA");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let cert = params.self_signed(&key).unwrap();
        TestCa {
            pem: cert.pem(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// A server leaf for `names`; when `expired`, valid from 2020-01-01 to
    /// 2021-01-02 (midnight UTC).
    pub(crate) fn leaf(&self, names: &[&str], expired: bool) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 2);
        }
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// The host's TLS configuration trusting only this CA.
    fn client(&self) -> Arc<rustls::ClientConfig> {
        outpost_host::net::tls_config(&[self.pem.as_bytes().to_vec()], true).unwrap()
    }
}

fn registration() -> Registration {
    Registration {
        email: "lab-it@example.org".into(),
        name: "Lab IT".into(),
        instrument_model: "XN-550".into(),
        instrument_id: "HEM-1".into(),
        serial: "SN-1".into(),
        token: None,
    }
}

/// The prefix of every handshake failure's message.
fn tls_refused(url: &str) -> String {
    format!("server {url} reached, TLS refused: ")
}

const UNKNOWN_ISSUER: &str = "the server's certificate is issued by an unknown certificate authority; if the server uses a private CA, add that CA's certificate to `[network] extra-ca-files` in the host config";
const EXPIRED: &str = "the server's certificate expired on 2021-01-02T00:00:00Z";
const WRONG_NAME: &str =
    "the server's certificate is not valid for 127.0.0.1 (it names other.example)";
const NO_COMMON_CIPHER: &str = "no common cipher suite or protocol version: the server ended the handshake (this host needs TLS 1.2 or 1.3 with a current cipher suite)";
const OLD_TLS: &str = "no common protocol version: the server does not offer TLS 1.2 or 1.3";

/// A certificate that expired on 2021-01-02, from the trusted CA.
fn expired_leaf(ca: &TestCa) -> (String, String) {
    ca.leaf(&["127.0.0.1"], true)
}

/// A real rustls server that finds no cipher suite in common with any
/// client: TLS 1.2 only, and its one suite (ECDHE-RSA) cannot be used with
/// its ECDSA key. It ends the handshake with a `handshake_failure` alert, as
/// a server with no shared cipher does. Counts accepted connections.
async fn no_common_cipher_server(ca: &TestCa) -> (String, Arc<AtomicUsize>) {
    let (cert, key) = ca.leaf(&["127.0.0.1"], false);
    let chain = rustls_pemfile::certs(&mut cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls_pemfile::private_key(&mut key.as_bytes())
        .unwrap()
        .unwrap();
    let provider = rustls::crypto::CryptoProvider {
        cipher_suites: vec![
            rustls::crypto::ring::cipher_suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        ],
        ..rustls::crypto::ring::default_provider()
    };
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if acceptor.accept(tcp).await.is_ok() {
                    panic!("the no-common-cipher server completed a handshake");
                }
            });
        }
    });
    (url(addr), accepted)
}

/// What a hostile answer server sends after reading the request.
#[derive(Clone, Copy)]
enum Answer {
    /// Headers announcing 100 bytes, one byte, then nothing.
    HeadersThenStall,
    /// `200`, chunked, and body bytes without end (until the client hangs
    /// up, or `ENDLESS_STOP_BYTES`, far beyond any cap, protecting the test
    /// machine from a client without one).
    Endless,
    /// `200` announcing a 1 GiB body, and body bytes as for `Endless`.
    HugeLength,
}

/// Where an endless answer gives up if the client never hangs up.
const ENDLESS_STOP_BYTES: u64 = 256 << 20;

struct AnswerServer {
    url: String,
    /// Body bytes written before the client hung up (or the stop).
    written: Arc<std::sync::atomic::AtomicU64>,
    /// Resolves when the server stopped writing.
    done: tokio::sync::oneshot::Receiver<()>,
}

/// A loopback TLS server (certificate from `pki`) answering one request as `answer`.
async fn answer_server(pki: &TestPki, answer: Answer) -> AnswerServer {
    let acceptor = tokio_rustls::TlsAcceptor::from(
        outpost_cloud::tls_config(&pki.server_cert_pem, &pki.server_key_pem).unwrap(),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let written = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (tx, done) = tokio::sync::oneshot::channel();
    let count = written.clone();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut tls = acceptor.accept(tcp).await.unwrap();
        let st = Stats::default();
        read_request(&mut tls, &st).await.unwrap();
        match answer {
            Answer::HeadersThenStall => {
                let _ = tls
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{",
                    )
                    .await;
                let _ = tls.flush().await;
                // Hold the connection open and silent until the client gives up.
                let mut buf = [0u8; 64];
                let _ = tls.read(&mut buf).await;
            }
            Answer::Endless | Answer::HugeLength => {
                let head: &[u8] = match answer {
                    Answer::HugeLength => {
                        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1073741824\r\n\r\n"
                    }
                    _ => b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n",
                };
                if tls.write_all(head).await.is_ok() {
                    let data = vec![b' '; 16 * 1024];
                    let mut chunk = format!("{:x}\r\n", data.len()).into_bytes();
                    chunk.extend_from_slice(&data);
                    chunk.extend_from_slice(b"\r\n");
                    let piece: &[u8] = match answer {
                        Answer::HugeLength => &data,
                        _ => &chunk,
                    };
                    while count.load(Ordering::SeqCst) < ENDLESS_STOP_BYTES {
                        if tls.write_all(piece).await.is_err() {
                            break;
                        }
                        count.fetch_add(data.len() as u64, Ordering::SeqCst);
                    }
                }
            }
        }
        let _ = tx.send(());
    });
    AnswerServer {
        url: url(addr),
        written,
        done,
    }
}

// ---------------------------------------------------------------------------
// 11. TLS failures, in the operator's words.
// ---------------------------------------------------------------------------

/// Each way TLS can fail with a server that was reached produces its own
/// message: unknown CA (with the config key that fixes it), expired (with
/// the date), wrong name (with the name expected), no common cipher, TLS
/// below 1.2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrolment_names_why_tls_was_refused() {
    let ca = TestCa::new();
    let trusted = ca.client();
    let stranger = TestPki::generate(&["127.0.0.1"]).unwrap();
    let (wrong_cert, wrong_key) = ca.leaf(&["other.example"], false);
    let (old_cert, old_key) = expired_leaf(&ca);

    let unknown = fake_server(
        &stranger.server_cert_pem,
        &stranger.server_key_pem,
        answer(200),
    )
    .await;
    let expired = fake_server(&old_cert, &old_key, answer(200)).await;
    let wrong = fake_server(&wrong_cert, &wrong_key, answer(200)).await;
    let (no_cipher, no_cipher_accepted) = no_common_cipher_server(&ca).await;
    let tls10 = old_tls_server(1).await;

    let cases: [(&str, &str, &str); 5] = [
        ("unknown CA", &unknown.url, UNKNOWN_ISSUER),
        ("expired", &expired.url, EXPIRED),
        ("wrong name", &wrong.url, WRONG_NAME),
        ("no common cipher", &no_cipher, NO_COMMON_CIPHER),
        ("TLS 1.0 only", &tls10.url, OLD_TLS),
    ];
    for (what, server, why) in cases {
        let err = enroll_within(server, &trusted, &registration(), Duration::from_secs(10))
            .await
            .expect_err(what);
        assert_eq!(
            err.to_string(),
            format!("{}{why}", tls_refused(server)),
            "{what}"
        );
    }
    for (what, s) in [
        ("unknown CA", &unknown),
        ("expired", &expired),
        ("wrong name", &wrong),
    ] {
        assert_eq!(s.stats.accepted(), 1, "{what}: the server was reached");
        assert_eq!(s.stats.handshakes(), 0, "{what}: no TLS session");
        assert_eq!(s.stats.requests(), 0, "{what}: no request");
    }
    assert_eq!(no_cipher_accepted.load(Ordering::SeqCst), 1);
    assert_eq!(tls10.accepted.load(Ordering::SeqCst), 1);
}

/// The same messages through the real `outpost enroll`, as the operator
/// sees them on the console (exit code 1, one line on stderr).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outpost_enroll_prints_why_tls_was_refused() {
    let ca = TestCa::new();
    let stranger = TestPki::generate(&["127.0.0.1"]).unwrap();
    let (old_cert, old_key) = expired_leaf(&ca);
    let (wrong_cert, wrong_key) = ca.leaf(&["other.example"], false);
    let unknown = fake_server(
        &stranger.server_cert_pem,
        &stranger.server_key_pem,
        answer(200),
    )
    .await;
    let expired = fake_server(&old_cert, &old_key, answer(200)).await;
    let wrong = fake_server(&wrong_cert, &wrong_key, answer(200)).await;

    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    for (what, server, why) in [
        ("unknown CA", &unknown.url, UNKNOWN_ISSUER),
        ("expired", &expired.url, EXPIRED),
        ("wrong name", &wrong.url, WRONG_NAME),
    ] {
        let config = dir.path().join(format!("{}.toml", what.replace(' ', "-")));
        std::fs::write(
            &config,
            format!(
                "state-dir = \"state-{}\"\n[network]\nextra-ca-files = [{ca_file:?}]\nonly-extra-cas = true\n[uplink]\nendpoint = \"{server}\"\n",
                what.replace(' ', "-")
            ),
        )
        .unwrap();
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_outpost"))
                .args(["enroll", "--config"])
                .arg(&config)
                .args([
                    "--email",
                    "lab.it@hospital.example",
                    "--name",
                    "Lab IT",
                    "--instrument-model",
                    "XN-550",
                    "--instrument-id",
                    "HEM-01",
                    "--serial",
                    "SN-20431",
                ])
                .env_remove("OUTPOST_LOG")
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        assert_eq!(out.status.code(), Some(1), "{what}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            stderr.trim_end(),
            format!("outpost: {}{why}", tls_refused(server)),
            "{what}"
        );
        assert!(
            !dir.path()
                .join(format!("state-{}/device.json", what.replace(' ', "-")))
                .exists(),
            "{what}: no identity written"
        );
    }
}

/// A server that sends the answer's headers and then stalls: a timeout,
/// said as one (not "not an enrolment response"); one that never answers:
/// a timeout too, said differently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_answer_is_reported_as_a_timeout() {
    let (pki, tls) = pki();
    let limit = Duration::from_secs(2);

    let stall = answer_server(&pki, Answer::HeadersThenStall).await;
    let err = enroll_within(&stall.url, &tls, &registration(), limit)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "server {} started its answer, then stopped sending it: timed out after 2s",
            stall.url
        )
    );

    let silent = fake_server(
        &pki.server_cert_pem,
        &pki.server_key_pem,
        Behaviour::SilentHttp,
    )
    .await;
    let err = enroll_within(&silent.url, &tls, &registration(), limit)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "server {} reached, but it did not answer within 2s (timeout)",
            silent.url
        )
    );
    assert_eq!(silent.stats.requests(), 1);
}

// ---------------------------------------------------------------------------
// 9. An endless answer.
// ---------------------------------------------------------------------------

/// Most body bytes the server may push before the client hangs up: the cap
/// plus what the socket buffers between the two can hold (on these machines
/// at most 4 MiB sent and 32 MiB received, `tcp_wmem` / `tcp_rmem`; about
/// 4 MiB is seen). A client without a cap reads until `ENDLESS_STOP_BYTES`.
const MOST_WRITTEN_BYTES: u64 = 40 << 20;

/// A hostile server answering enrolment with a body without end (chunked),
/// or announcing 1 GiB: enrolment stops at the cap, says so, and hangs up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_enrolment_answer_is_cut_off_at_the_cap() {
    let (pki, tls) = pki();
    for (what, answer) in [
        ("chunked", Answer::Endless),
        ("1 GiB length", Answer::HugeLength),
    ] {
        let s = answer_server(&pki, answer).await;
        let err = enroll_within(&s.url, &tls, &registration(), Duration::from_secs(60))
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "the answer of server {} is larger than {MAX_ANSWER_BYTES} bytes, the most this host reads of an answer",
                s.url
            ),
            "{what}"
        );
        tokio::time::timeout(Duration::from_secs(60), s.done)
            .await
            .expect("the server noticed the client hang up")
            .unwrap();
        let written = s.written.load(Ordering::SeqCst);
        assert!(
            written < MOST_WRITTEN_BYTES,
            "{what}: the server wrote {written} body bytes before the client hung up"
        );
    }
}
