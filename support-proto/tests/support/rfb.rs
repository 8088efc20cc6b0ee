//! The PC's half of the VNC security handshake with a screen backend,
//! against fake-but-real RFB servers on 127.0.0.1 for the odd cases (the
//! real x11vnc is in `vnc.rs` and the host's `it::support::screen`).

use std::time::Duration;

use outpost_support_proto::rfb::{RfbError, VncPassword, authenticate_backend_within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A fake backend running `script` on the one connection it accepts;
/// returns the PC's result and what the script returned.
async fn against<F, Fut, T>(
    password: Option<&VncPassword>,
    limit: Duration,
    script: F,
) -> (Result<(), RfbError>, T)
where
    F: FnOnce(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T> + Send,
    T: Send + 'static,
{
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (s, _) = l.accept().await.unwrap();
        script(s).await
    });
    let mut c = TcpStream::connect(addr).await.unwrap();
    let r = authenticate_backend_within(&mut c, password, limit).await;
    drop(c);
    (r, server.await.unwrap())
}

const LIMIT: Duration = Duration::from_secs(10);

async fn reason(s: &mut TcpStream, text: &str) {
    s.write_all(&(text.len() as u32).to_be_bytes())
        .await
        .unwrap();
    s.write_all(text.as_bytes()).await.unwrap();
}

/// A 3.8 server asking for `server_pw`: answers the PC's response and
/// returns whether it matched and the ClientInit byte (if it got that far).
async fn vnc_auth_server(mut s: TcpStream, server_pw: &'static str) -> (bool, Option<u8>) {
    s.write_all(b"RFB 003.008\n").await.unwrap();
    let mut v = [0u8; 12];
    s.read_exact(&mut v).await.unwrap();
    assert_eq!(&v, b"RFB 003.008\n");
    s.write_all(&[2, 2, 1 + 15]).await.unwrap(); // VNC auth and type 16 (Tight)
    assert_eq!(s.read_u8().await.unwrap(), 2, "the PC must choose VNC auth");
    let challenge: [u8; 16] = *b"0123456789abcdef";
    s.write_all(&challenge).await.unwrap();
    let mut resp = [0u8; 16];
    s.read_exact(&mut resp).await.unwrap();
    let ok = resp == VncPassword::from_text(server_pw).respond(&challenge);
    if ok {
        s.write_all(&0u32.to_be_bytes()).await.unwrap();
        (true, s.read_u8().await.ok())
    } else {
        s.write_all(&1u32.to_be_bytes()).await.unwrap();
        reason(&mut s, "Authentication failed, too many tries").await;
        (false, None)
    }
}

#[tokio::test]
async fn the_right_password_passes_vnc_authentication() {
    let pw = VncPassword::from_text("s3cret.x");
    let (r, (ok, _)) = against(Some(&pw), LIMIT, |s| vnc_auth_server(s, "s3cret.x")).await;
    r.unwrap();
    assert!(ok);
}

#[tokio::test]
async fn a_wrong_password_fails_with_the_servers_reason() {
    let pw = VncPassword::from_text("wrong-pw");
    let (r, (ok, _)) = against(Some(&pw), LIMIT, |s| vnc_auth_server(s, "s3cret.x")).await;
    assert!(!ok);
    let e = r.unwrap_err();
    assert!(
        matches!(&e, RfbError::AuthFailed(m) if m == "Authentication failed, too many tries"),
        "{e}"
    );
    assert!(
        e.to_string().contains("refused the session's password"),
        "{e}"
    );
}

#[tokio::test]
async fn a_backend_that_asks_for_no_password_is_refused_when_one_was_set() {
    let pw = VncPassword::generate();
    let (r, chose) = against(Some(&pw), LIMIT, |mut s| async move {
        s.write_all(b"RFB 003.008\n").await.unwrap();
        let mut v = [0u8; 12];
        s.read_exact(&mut v).await.unwrap();
        s.write_all(&[1, 1]).await.unwrap(); // None only
        // The PC chooses nothing and hangs up.
        s.read_u8().await.ok()
    })
    .await;
    assert_eq!(chose, None, "the PC must not choose None");
    let e = r.unwrap_err();
    assert!(matches!(&e, RfbError::NoVncAuth(t) if t == &[1]), "{e}");
    assert!(
        e.to_string()
            .contains("no VNC Authentication (security type 2)"),
        "{e}"
    );
}

#[tokio::test]
async fn a_backend_refusing_the_connection_names_its_reason() {
    let (r, ()) = against(Some(&VncPassword::generate()), LIMIT, |mut s| async move {
        s.write_all(b"RFB 003.008\n").await.unwrap();
        let mut v = [0u8; 12];
        s.read_exact(&mut v).await.unwrap();
        s.write_all(&[0]).await.unwrap();
        reason(&mut s, "Too many security failures").await;
    })
    .await;
    let e = r.unwrap_err();
    assert!(
        matches!(&e, RfbError::Refused(m) if m == "Too many security failures"),
        "{e}"
    );
}

#[tokio::test]
async fn a_stalling_backend_times_out_naming_what_it_waited_for() {
    let limit = Duration::from_millis(300);
    // Stalls before its version.
    let (r, ()) = against(Some(&VncPassword::generate()), limit, |s| async move {
        tokio::time::sleep(Duration::from_secs(2)).await;
        drop(s);
    })
    .await;
    let e = r.unwrap_err();
    assert!(matches!(e, RfbError::Timeout { stage: "version" }), "{e}");
    // Stalls after the challenge was answered.
    let (r, ()) = against(Some(&VncPassword::generate()), limit, |mut s| async move {
        s.write_all(b"RFB 003.008\n").await.unwrap();
        let mut v = [0u8; 12];
        s.read_exact(&mut v).await.unwrap();
        s.write_all(&[1, 2]).await.unwrap();
        s.read_u8().await.unwrap();
        s.write_all(&[9; 16]).await.unwrap();
        let mut resp = [0u8; 16];
        s.read_exact(&mut resp).await.unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
    })
    .await;
    let e = r.unwrap_err();
    assert!(
        matches!(
            e,
            RfbError::Timeout {
                stage: "security result"
            }
        ),
        "{e}"
    );
    assert!(
        e.to_string()
            .contains("did not finish the VNC security handshake")
            && e.to_string().contains("security result"),
        "{e}"
    );
}

#[tokio::test]
async fn older_servers_and_no_password() {
    // RFB 3.3: the server names the type; VNC auth's result has no reason.
    let pw = VncPassword::from_text("abcdefgh");
    let (r, ok) = against(Some(&pw), LIMIT, |mut s| async move {
        s.write_all(b"RFB 003.003\n").await.unwrap();
        let mut v = [0u8; 12];
        s.read_exact(&mut v).await.unwrap();
        assert_eq!(&v, b"RFB 003.003\n");
        s.write_all(&2u32.to_be_bytes()).await.unwrap();
        s.write_all(&[5; 16]).await.unwrap();
        let mut resp = [0u8; 16];
        s.read_exact(&mut resp).await.unwrap();
        let ok = resp == VncPassword::from_text("abcdefgh").respond(&[5; 16]);
        s.write_all(&u32::from(!ok).to_be_bytes()).await.unwrap();
        ok
    })
    .await;
    r.unwrap();
    assert!(ok);
    // No password set: a backend asking for one is refused, clearly.
    let (r, ()) = against(None, LIMIT, |mut s| async move {
        s.write_all(b"RFB 003.008\n").await.unwrap();
        let mut v = [0u8; 12];
        s.read_exact(&mut v).await.unwrap();
        s.write_all(&[1, 2]).await.unwrap();
        let _ = s.read_u8().await;
    })
    .await;
    let e = r.unwrap_err();
    assert!(
        matches!(&e, RfbError::PasswordNeeded(t) if t == &[2]),
        "{e}"
    );
    // Something that is not RFB.
    let (r, ()) = against(None, LIMIT, |mut s| async move {
        s.write_all(b"SSH-2.0-Open").await.unwrap();
        let _ = s.read_u8().await;
    })
    .await;
    let e = r.unwrap_err();
    assert!(
        matches!(
            e,
            RfbError::NotRfb {
                peer: "screen backend",
                ..
            }
        ),
        "{e}"
    );
}
