//! The screen through the channel: Xvfb + x11vnc (view-only) on loopback as
//! the PC's backend, reached only through the engineer client's local port.
//! Skipped with a message when Xvfb or x11vnc is not installed, unless
//! `OUTPOST_REQUIRE_VNC=1` (CI) makes that a failure.

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use outpost_support_proto::Permission;
use outpost_support_proto::engineer;
use outpost_support_proto::pc::{Backends, SessionEvent};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::common::*;

const WIDTH: u16 = 320;
const HEIGHT: u16 = 240;

struct Kill(Vec<Child>);

impl Drop for Kill {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn installed(tool: &str) -> bool {
    Command::new(tool)
        .arg("-help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Start Xvfb and a view-only x11vnc on loopback; `None` when not installed.
async fn screen() -> Option<(Kill, std::net::SocketAddr)> {
    if !installed("Xvfb") || !installed("x11vnc") {
        assert!(
            std::env::var("OUTPOST_REQUIRE_VNC").as_deref() != Ok("1"),
            "OUTPOST_REQUIRE_VNC=1 but Xvfb or x11vnc is not installed (apt-get install xvfb x11vnc)"
        );
        eprintln!("skipped: Xvfb or x11vnc is not installed (apt-get install xvfb x11vnc)");
        return None;
    }
    let display = (50..400)
        .map(|n| n + std::process::id() % 300)
        .find(|n| !std::path::Path::new(&format!("/tmp/.X11-unix/X{n}")).exists())
        .unwrap();
    let xvfb = Command::new("Xvfb")
        .args([
            format!(":{display}"),
            "-screen".into(),
            "0".into(),
            format!("{WIDTH}x{HEIGHT}x24"),
            "-nolisten".into(),
            "tcp".into(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut guard = Kill(vec![xvfb]);
    let sock = format!("/tmp/.X11-unix/X{display}");
    wait_for(|| std::path::Path::new(&sock).exists()).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let vnc = Command::new("x11vnc")
        .args([
            "-display".to_owned(),
            format!(":{display}"),
            "-rfbport".into(),
            port.to_string(),
            "-localhost".into(),
            "-viewonly".into(),
            "-nopw".into(),
            "-forever".into(),
            "-quiet".into(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    guard.0.push(vnc);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let until = tokio::time::Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(addr).await.is_err() {
        assert!(tokio::time::Instant::now() < until, "x11vnc never listened");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Some((guard, addr))
}

/// RFB 3.8 up to the server's init and one framebuffer update header.
async fn rfb_screen_size(s: &mut TcpStream) -> (u16, u16) {
    let mut version = [0u8; 12];
    s.read_exact(&mut version).await.unwrap();
    assert_eq!(&version, b"RFB 003.008\n");
    s.write_all(b"RFB 003.008\n").await.unwrap();
    let n = s.read_u8().await.unwrap();
    let mut types = vec![0u8; usize::from(n)];
    s.read_exact(&mut types).await.unwrap();
    assert!(types.contains(&1), "no 'None' security type: {types:?}");
    s.write_all(&[1]).await.unwrap();
    assert_eq!(s.read_u32().await.unwrap(), 0, "security failed");
    s.write_all(&[1]).await.unwrap(); // ClientInit, shared
    let w = s.read_u16().await.unwrap();
    let h = s.read_u16().await.unwrap();
    let mut pixel_format = [0u8; 16];
    s.read_exact(&mut pixel_format).await.unwrap();
    let name_len = s.read_u32().await.unwrap();
    let mut name = vec![0u8; name_len as usize];
    s.read_exact(&mut name).await.unwrap();
    // FramebufferUpdateRequest for the whole screen: the screen arrives.
    let mut req = vec![3u8, 0, 0, 0, 0, 0];
    req.extend_from_slice(&w.to_be_bytes());
    req.extend_from_slice(&h.to_be_bytes());
    s.write_all(&req).await.unwrap();
    assert_eq!(
        s.read_u8().await.unwrap(),
        0,
        "expected a FramebufferUpdate"
    );
    (w, h)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_screen_reaches_the_engineer_only_through_the_channel_and_only_when_granted() {
    let Some((_screen, vnc)) = screen().await else {
        return;
    };
    let w = World::new().await;
    let events = Arc::new(Mutex::new(Vec::new()));
    let log = events.clone();
    let backends = Backends {
        vnc: Some(vnc),
        events: Some(Arc::new(move |e: &SessionEvent| {
            log.lock().unwrap().push(e.clone())
        })),
        ..w.backends()
    };

    // View granted: a VNC client on the engineer's local port sees the screen.
    let authz = TestAuthorizer::new(w.authority.verifying_key(), &[Permission::View]);
    let pc = w.start_pc("sess-vnc", authz, backends.clone()).await;
    let auth = w.engineer_auth(PASSWORD, &[Permission::View]);
    let s = engineer::connect(&w.target, "sess-vnc", &w.device_key.verifying_key(), &auth)
        .await
        .unwrap();
    let local = s
        .open_vnc_listener("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let mut viewer = TcpStream::connect(local).await.unwrap();
    let size = tokio::time::timeout(Duration::from_secs(30), rfb_screen_size(&mut viewer))
        .await
        .unwrap();
    assert_eq!(size, (WIDTH, HEIGHT));
    drop(viewer);
    s.end("bye").await.unwrap();
    pc.result().await.unwrap();
    assert!(matches!(
        events.lock().unwrap().as_slice(),
        [SessionEvent::ScreenOpened { .. }]
    ));

    // Only file transfer granted: the screen stream is denied and closed.
    let authz = TestAuthorizer::new(w.authority.verifying_key(), &[Permission::FileTransfer]);
    let pc = w.start_pc("sess-novnc", authz, backends).await;
    let auth = w.engineer_auth(PASSWORD, &[Permission::FileTransfer]);
    let s = engineer::connect(
        &w.target,
        "sess-novnc",
        &w.device_key.verifying_key(),
        &auth,
    )
    .await
    .unwrap();
    let local = s
        .open_vnc_listener("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let mut viewer = TcpStream::connect(local).await.unwrap();
    let mut buf = [0u8; 12];
    let n = tokio::time::timeout(Duration::from_secs(30), viewer.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0, "screen bytes arrived without the view grant");
    s.end("bye").await.unwrap();
    pc.result().await.unwrap();
    assert!(matches!(
        events.lock().unwrap().as_slice(),
        [
            SessionEvent::ScreenOpened { .. },
            SessionEvent::ScreenDenied { reason, .. }
        ] if reason.code == outpost_support_proto::RefusalCode::NotApproved
    ));
}
