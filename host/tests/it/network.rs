//! Outbound HTTP: only https, only granted endpoints, checked before DNS and
//! connection; restricted addresses refused after resolution; TLS ≥ 1.2 with
//! verification.

use super::harness::{DEFAULT_LIMITS, env};
use outpost_host::events::HostEvent;
use outpost_host::runtime::CallError;
use outpost_host::runtime::bindings::collector::exports::outpost::agent::collect::Trigger;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A loopback HTTPS server answering `200 hello`; counts accepted TCP connections.
struct Server {
    port: u16,
    accepted: Arc<AtomicUsize>,
}

async fn https_server(
    names: &[&str],
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Server {
    let (chain, key) = env().ca.leaf(names);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = tls
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello",
                    )
                    .await;
                let _ = tls.shutdown().await;
            });
        }
    });
    Server { port, accepted }
}

/// A server that speaks only an old TLS version (`minor` 1 = TLS 1.0, 2 = TLS
/// 1.1): it answers every ClientHello with a ServerHello of that version
/// (TLS_RSA_WITH_AES_128_CBC_SHA), as such a server does.
async fn old_tls_only_server(minor: u8) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                if tcp.read(&mut buf).await.unwrap_or(0) == 0 {
                    return;
                }
                let mut hello = vec![0x03, minor]; // server_version
                hello.extend_from_slice(&[0x42; 32]); // random
                hello.push(0); // session id
                hello.extend_from_slice(&[0x00, 0x2f]); // cipher suite
                hello.push(0); // compression
                let mut hs = vec![0x02, 0, 0, hello.len() as u8];
                hs.extend_from_slice(&hello);
                let mut rec = vec![0x16, 0x03, minor, 0, hs.len() as u8];
                rec.extend_from_slice(&hs);
                let _ = tcp.write_all(&rec).await;
                let _ = tcp.read(&mut buf).await;
            });
        }
    });
    Server { port, accepted }
}

fn caps(endpoint: &str) -> String {
    format!("endpoints = [\"{endpoint}\"]")
}

async fn fetch(name: &str, endpoint: &str, url: &str) -> Result<u32, CallError> {
    let e = env();
    let m = e.escape(name, &caps(endpoint), DEFAULT_LIMITS, "http", url);
    e.runtime
        .collect(&m, Trigger::Schedule)
        .await
        .map(|r| r.files_scanned)
}

#[test]
fn https_to_a_granted_loopback_literal_with_the_test_ca_succeeds() {
    let e = env();
    e.rt.block_on(async {
        let s = https_server(
            &["127.0.0.1"],
            &[&rustls::version::TLS13, &rustls::version::TLS12],
        )
        .await;
        let status = fetch(
            "net-ok",
            &format!("127.0.0.1:{}", s.port),
            &format!("https://127.0.0.1:{}/x", s.port),
        )
        .await;
        assert_eq!(status, Ok(200));
        // TLS 1.2 alone is accepted too (the minimum).
        let s12 = https_server(&["127.0.0.1"], &[&rustls::version::TLS12]).await;
        let status = fetch(
            "net-ok12",
            &format!("127.0.0.1:{}", s12.port),
            &format!("https://127.0.0.1:{}/", s12.port),
        )
        .await;
        assert_eq!(status, Ok(200));
    });
}

const NON_STANDARD: &str =
    "host is an IPv4 address in a non-standard spelling (only a.b.c.d is accepted)";

#[test]
fn requests_outside_the_grant_are_refused_before_any_connection() {
    let e = env();
    e.rt.block_on(async {
        let s = https_server(&["127.0.0.1", "localhost"], &[&rustls::version::TLS13]).await;
        let granted = format!("127.0.0.1:{}", s.port);
        let cases = [
            (
                "net-host",
                format!("https://127.0.0.2:{}/", s.port),
                "endpoint not granted",
            ),
            (
                "net-port",
                format!("https://127.0.0.1:{}/", s.port.wrapping_add(1)),
                "endpoint not granted",
            ),
            (
                "net-scheme",
                format!("http://127.0.0.1:{}/", s.port),
                "scheme is not https",
            ),
            // Other spellings of the granted literal: none matches it, and
            // none goes to DNS (issue #20).
            (
                "net-dot",
                format!("https://127.0.0.1.:{}/", s.port),
                "host ends with a dot (write it without the dot)",
            ),
            (
                "net-short",
                format!("https://127.1:{}/", s.port),
                NON_STANDARD,
            ),
            (
                "net-hex",
                format!("https://0x7f.0.0.1:{}/", s.port),
                NON_STANDARD,
            ),
            (
                "net-int",
                format!("https://2130706433:{}/", s.port),
                NON_STANDARD,
            ),
            (
                "net-octal",
                format!("https://0177.0.0.1:{}/", s.port),
                NON_STANDARD,
            ),
            (
                "net-mapped",
                format!("https://[::ffff:127.0.0.1]:{}/", s.port),
                "endpoint not granted",
            ),
        ];
        for (name, url, reason) in cases {
            let mut watch = e.watch(name);
            let res = fetch(name, &granted, &url).await;
            match res {
                Err(CallError::Module(m)) => {
                    assert!(m.contains("HttpRequestDenied"), "{name}: {m}")
                }
                other => panic!("{name}: expected a denial, got {other:?}"),
            }
            let refusals: Vec<_> = watch
                .drain()
                .into_iter()
                .filter_map(|ev| match ev {
                    HostEvent::RequestRefused {
                        reason, authority, ..
                    } => Some((reason, authority)),
                    _ => None,
                })
                .collect();
            assert_eq!(refusals.len(), 1, "{name}: one refusal event");
            assert_eq!(refusals[0].0, reason, "{name}");
        }
        assert_eq!(
            s.accepted.load(Ordering::SeqCst),
            0,
            "no connection was made"
        );
    });
}

#[test]
fn a_granted_name_that_resolves_to_loopback_is_refused() {
    let e = env();
    e.rt.block_on(async {
        let s = https_server(&["localhost"], &[&rustls::version::TLS13]).await;
        let mut watch = e.watch("net-rebind");
        let res = fetch(
            "net-rebind",
            &format!("localhost:{}", s.port),
            &format!("https://localhost:{}/", s.port),
        )
        .await;
        assert!(
            matches!(&res, Err(CallError::Module(m)) if m.contains("HttpRequestDenied")),
            "{res:?}"
        );
        let reasons: Vec<String> = watch
            .drain()
            .into_iter()
            .filter_map(|ev| match ev {
                HostEvent::RequestRefused { reason, .. } => Some(reason),
                _ => None,
            })
            .collect();
        assert_eq!(reasons.len(), 1);
        assert!(
            reasons[0].starts_with("resolves to restricted address"),
            "{reasons:?}"
        );
        assert_eq!(s.accepted.load(Ordering::SeqCst), 0);
    });
}

#[test]
fn tls_below_1_2_and_wrong_names_are_refused() {
    let e = env();
    e.rt.block_on(async {
        for (minor, name) in [(1u8, "net-tls10"), (2, "net-tls11")] {
            let old = old_tls_only_server(minor).await;
            let res = fetch(
                name,
                &format!("127.0.0.1:{}", old.port),
                &format!("https://127.0.0.1:{}/", old.port),
            )
            .await;
            assert!(
                matches!(&res, Err(CallError::Module(m)) if m.contains("Tls")),
                "{name}: {res:?}"
            );
            assert_eq!(
                old.accepted.load(Ordering::SeqCst),
                1,
                "{name}: the handshake was attempted and failed"
            );
        }

        let other = https_server(&["other.example"], &[&rustls::version::TLS13]).await;
        let res = fetch(
            "net-name",
            &format!("127.0.0.1:{}", other.port),
            &format!("https://127.0.0.1:{}/", other.port),
        )
        .await;
        assert!(
            matches!(&res, Err(CallError::Module(m)) if m.contains("Tls")),
            "{res:?}"
        );
    });
}
