//! Remote-support benchmark through the real relay on loopback: session
//! set-up time (relay registration to the PC's decision at the engineer;
//! and to the first screen frame at a VNC viewer on the engineer's local
//! port, from an RFB backend that answers the viewer's first update
//! request with a 64×64 raw rectangle, and from a real view-only x11vnc
//! on a 1280×1024 Xvfb display started for each session once the grant is
//! known, when both are installed),
//! file-transfer throughput, the latency a small screen frame gains through
//! PC ↔ relay ↔ engineer (round trips of 64 bytes through the engineer's
//! local VNC port to an RFB echo backend, against the same bytes over
//! plain loopback TCP to the same echo), and relay memory per idle
//! (pending) session. Prints a table. `cargo bench -p
//! outpost-support-proto --bench support` (BENCH_MB sets the file size,
//! default 200; BENCH_FRAMES the round trips, default 2000).

use std::sync::Arc;
use std::time::{Duration, Instant};

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use outpost_cloud::relay::{RelayConfig, RelayLimits};
use outpost_cloud::{NewDevice, Relay, Store, TestPki};
use outpost_protocol::DeviceKey;
use outpost_support_proto::channel::EngineerAuth;
use outpost_support_proto::files::{FileAudit, FileBackend};
use outpost_support_proto::pc::{self, Backends, PcConfig};
use outpost_support_proto::relay_wire::{RelayTarget, client_tls, register_pc};
use outpost_support_proto::{
    Authorizer, ConnectAttempt, Grant, Permission, Refusal, RefusalCode, challenge_message,
    engineer,
};
use rand_core::{OsRng, RngCore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The small frame of the latency measure (a pointer event is 6 bytes, a
/// small framebuffer update a few dozen).
const FRAME_BYTES: usize = 64;

/// An echo server on loopback; with `rfb`, each connection first passes an
/// RFB 3.8 handshake offering security type None (what `pc::serve` expects
/// of a backend given no password), then echoes.
async fn echo_server(rfb: bool) -> std::net::SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let _ = s.set_nodelay(true);
                if rfb {
                    let mut v = [0u8; 12];
                    if s.write_all(b"RFB 003.008\n").await.is_err()
                        || s.read_exact(&mut v).await.is_err()
                        || s.write_all(&[1, 1]).await.is_err()
                        || s.read_u8().await.is_err()
                        || s.write_all(&0u32.to_be_bytes()).await.is_err()
                    {
                        return;
                    }
                }
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if s.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}

/// Width and height of the first frame's rectangle (32-bit pixels).
const FIRST_FRAME_SIDE: u16 = 64;

/// A VNC server stand-in on loopback: RFB 3.8, security None, then
/// ServerInit for a [`FIRST_FRAME_SIDE`]² screen and, for each
/// FramebufferUpdateRequest, one raw rectangle of that size.
async fn frame_server() -> std::net::SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let _ = s.set_nodelay(true);
                let mut v = [0u8; 12];
                if s.write_all(b"RFB 003.008\n").await.is_err()
                    || s.read_exact(&mut v).await.is_err()
                    || s.write_all(&[1, 1]).await.is_err()
                    || s.read_u8().await.is_err()
                    || s.write_all(&0u32.to_be_bytes()).await.is_err()
                    || s.read_u8().await.is_err()
                {
                    return;
                }
                let side = FIRST_FRAME_SIDE;
                let mut init = Vec::new();
                init.extend_from_slice(&side.to_be_bytes());
                init.extend_from_slice(&side.to_be_bytes());
                // 32 bpp, depth 24, little endian, true colour, 255/255/255, shifts 16/8/0.
                init.extend_from_slice(&[32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0]);
                init.extend_from_slice(&5u32.to_be_bytes());
                init.extend_from_slice(b"bench");
                if s.write_all(&init).await.is_err() {
                    return;
                }
                let mut req = [0u8; 10];
                while s.read_exact(&mut req).await.is_ok() {
                    if req[0] != 3 {
                        continue;
                    }
                    let mut update = vec![0u8, 0];
                    update.extend_from_slice(&1u16.to_be_bytes());
                    for v in [0, 0, side, side] {
                        update.extend_from_slice(&v.to_be_bytes());
                    }
                    update.extend_from_slice(&0i32.to_be_bytes());
                    update.resize(
                        update.len() + usize::from(side) * usize::from(side) * 4,
                        0x7f,
                    );
                    if s.write_all(&update).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// A viewer on the engineer's local port: the RFB handshake the PC offers
/// (type None), ClientInit, ServerInit, one update request for the whole
/// screen; returns when the first update's pixels (raw rectangles, the
/// encoding a server uses when the viewer names none) have arrived.
async fn first_frame(local: std::net::SocketAddr) {
    let mut viewer = TcpStream::connect(local).await.unwrap();
    viewer.set_nodelay(true).unwrap();
    let mut v = [0u8; 12];
    viewer.read_exact(&mut v).await.unwrap();
    viewer.write_all(b"RFB 003.008\n").await.unwrap();
    let n = viewer.read_u8().await.unwrap();
    let mut types = vec![0u8; usize::from(n)];
    viewer.read_exact(&mut types).await.unwrap();
    viewer.write_all(&[1]).await.unwrap();
    assert_eq!(viewer.read_u32().await.unwrap(), 0);
    viewer.write_all(&[1]).await.unwrap(); // ClientInit: shared
    let mut init = [0u8; 20];
    viewer.read_exact(&mut init).await.unwrap();
    let name_len = viewer.read_u32().await.unwrap();
    let mut name = vec![0u8; name_len as usize];
    viewer.read_exact(&mut name).await.unwrap();
    let (w, h) = (
        u16::from_be_bytes([init[0], init[1]]),
        u16::from_be_bytes([init[2], init[3]]),
    );
    let bytes_per_pixel = usize::from(init[4] / 8);
    let mut req = vec![3u8, 0, 0, 0, 0, 0];
    req.extend_from_slice(&w.to_be_bytes());
    req.extend_from_slice(&h.to_be_bytes());
    viewer.write_all(&req).await.unwrap();
    // Server messages until the first FramebufferUpdate (a server may send
    // a bell or colour map first).
    loop {
        let kind = viewer.read_u8().await.unwrap();
        assert_eq!(
            kind, 0,
            "unexpected server message {kind} before the first frame"
        );
        let _pad = viewer.read_u8().await.unwrap();
        let rects = viewer.read_u16().await.unwrap();
        let mut pixels = 0usize;
        for _ in 0..rects {
            let mut head = [0u8; 12];
            viewer.read_exact(&mut head).await.unwrap();
            let (rw, rh) = (
                u16::from_be_bytes([head[4], head[5]]),
                u16::from_be_bytes([head[6], head[7]]),
            );
            let enc = i32::from_be_bytes([head[8], head[9], head[10], head[11]]);
            assert_eq!(enc, 0, "a raw rectangle");
            let mut data = vec![0u8; usize::from(rw) * usize::from(rh) * bytes_per_pixel];
            viewer.read_exact(&mut data).await.unwrap();
            pixels += usize::from(rw) * usize::from(rh);
        }
        if pixels > 0 {
            return;
        }
    }
}

/// Kills a backend process when its session ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An Xvfb display for the x11vnc rows, when Xvfb and x11vnc are
/// installed (Debian: xvfb, x11vnc).
fn xvfb() -> Option<(KillOnDrop, u32)> {
    let installed = |tool: &str| {
        std::process::Command::new(tool)
            .arg("-help")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok()
    };
    if !installed("Xvfb") || !installed("x11vnc") {
        return None;
    }
    let display = (60..400)
        .map(|n| n + std::process::id() % 300)
        .find(|n| !std::path::Path::new(&format!("/tmp/.X11-unix/X{n}")).exists())?;
    let child = std::process::Command::new("Xvfb")
        .args([
            format!(":{display}"),
            "-screen".into(),
            "0".into(),
            "1280x1024x24".into(),
            "-nolisten".into(),
            "tcp".into(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let guard = KillOnDrop(child);
    let start = Instant::now();
    while !std::path::Path::new(&format!("/tmp/.X11-unix/X{display}")).exists() {
        if start.elapsed() > Duration::from_secs(20) {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Some((guard, display))
}

/// A screen starter as the host's: a view-only x11vnc on a free loopback
/// port of `display`, started once the grant is known, killed at the end.
fn x11vnc_starter(display: u32) -> pc::ScreenStarter {
    Arc::new(move |_grant: &Grant| {
        Box::pin(async move {
            let failed = |why: String| Refusal::new(RefusalCode::Internal, why);
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map_err(|e| failed(e.to_string()))?
                .port();
            let child = std::process::Command::new("x11vnc")
                .args([
                    "-display".to_owned(),
                    format!(":{display}"),
                    "-rfbport".into(),
                    port.to_string(),
                    "-localhost".into(),
                    "-viewonly".into(),
                    "-nopw".into(),
                    "-once".into(),
                    "-quiet".into(),
                ])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .map_err(|e| failed(e.to_string()))?;
            let guard = KillOnDrop(child);
            let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
            let start = Instant::now();
            while TcpStream::connect(addr).await.is_err() {
                if start.elapsed() > Duration::from_secs(20) {
                    return Err(failed("x11vnc never listened".into()));
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Ok(pc::ScreenBackend {
                addr,
                password: None,
                guard: Box::new(guard),
            })
        })
    })
}

/// `n` round trips of one [`FRAME_BYTES`] frame on `s`, sorted.
async fn round_trips(s: &mut TcpStream, n: usize) -> Vec<Duration> {
    let frame = [0x5au8; FRAME_BYTES];
    let mut back = [0u8; FRAME_BYTES];
    let mut out = Vec::with_capacity(n);
    for i in 0..n + n / 10 {
        let t = Instant::now();
        s.write_all(&frame).await.unwrap();
        s.read_exact(&mut back).await.unwrap();
        // The first tenth warms up (not counted).
        if i >= n / 10 {
            out.push(t.elapsed());
        }
    }
    assert_eq!(back, frame);
    out.sort();
    out
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Approves file transfer for a credential that is the engineer's public key.
struct Approve {
    challenges: std::sync::Mutex<std::collections::HashMap<String, [u8; 32]>>,
}

#[async_trait::async_trait]
impl Authorizer for Approve {
    fn challenge(&self, session_id: &str) -> Result<[u8; 32], Refusal> {
        let mut c = [0u8; 32];
        OsRng.fill_bytes(&mut c);
        self.challenges.lock().unwrap().insert(session_id.into(), c);
        Ok(c)
    }
    async fn connect(&self, a: ConnectAttempt) -> Result<Grant, Refusal> {
        let c = self.challenges.lock().unwrap().remove(&a.session_id);
        let bad = || Refusal::new(RefusalCode::BadCredential, "bad");
        let key = VerifyingKey::from_bytes(&a.credential[..32].try_into().map_err(|_| bad())?)
            .map_err(|_| bad())?;
        let sig = Signature::from_slice(&a.challenge_signature).map_err(|_| bad())?;
        key.verify_strict(
            &challenge_message(&a.session_id, &c.ok_or_else(bad)?, &a.channel_binding),
            &sig,
        )
        .map_err(|_| bad())?;
        Ok(Grant {
            permissions: a.requested,
            engineer: "bench".into(),
            idle_timeout: Duration::from_secs(600),
            total_timeout: Duration::from_secs(3600),
        })
    }
}

/// The PC side of the bench's sessions, all through one relay.
struct Pcs<'a> {
    relay: &'a outpost_cloud::RunningRelay,
    target: RelayTarget,
    device_id: outpost_protocol::DeviceId,
    relay_key: DeviceKey,
    device_key: SigningKey,
    authz: Arc<dyn Authorizer>,
}

type PcTask = tokio::task::JoinHandle<Result<pc::SessionReport, pc::PcError>>;

impl Pcs<'_> {
    /// The PC registers `session` at the relay with `backends`; once the
    /// relay holds it, the engineer connects with `auth`. The session, the
    /// PC's task and when the registration started.
    async fn open(
        &self,
        session: &str,
        backends: Backends,
        auth: &EngineerAuth,
    ) -> (engineer::EngineerSession, PcTask, Instant) {
        let cfg = PcConfig {
            relay: self.target.clone(),
            device_id: self.device_id.clone(),
            relay_key: self.relay_key.clone(),
            device_key: self.device_key.clone(),
            session_id: session.to_owned(),
        };
        let registered = || {
            self.relay
                .stats()
                .registered
                .load(std::sync::atomic::Ordering::Relaxed)
        };
        let before = registered();
        let t0 = Instant::now();
        let a = self.authz.clone();
        let pc_task =
            tokio::spawn(async move { pc::serve(&cfg, a, backends, std::future::pending()).await });
        while registered() == before {
            tokio::task::yield_now().await;
        }
        let s = engineer::connect(
            &self.target,
            session,
            &self.device_key.verifying_key(),
            auth,
        )
        .await
        .unwrap();
        (s, pc_task, t0)
    }
}

fn rss_kib() -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        let s = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run());
}

async fn run() {
    let mb: usize = std::env::var("BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(&["localhost"]).unwrap();
    let store = Store::open(&dir.path().join("cloud")).unwrap();
    let relay_key = DeviceKey::generate();
    let device_id = store
        .enroll(&NewDevice {
            email: "b@example.org".into(),
            name: "B".into(),
            instrument_model: "M".into(),
            instrument_id: "I".into(),
            serial: "S".into(),
            device_key: relay_key.clone(),
        })
        .unwrap();
    let relay = Relay::start(RelayConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        tls: outpost_cloud::tls_config(&pki.server_cert_pem, &pki.server_key_pem).unwrap(),
        store,
        limits: RelayLimits {
            max_pending_per_device: 100_000,
            max_pending: 100_000,
            max_handshakes: 1024,
            ..RelayLimits::default()
        },
        tap: None,
    })
    .await
    .unwrap();
    let target = RelayTarget::new(
        relay.addr().to_string(),
        "localhost",
        client_tls(&pki.ca_cert_pem).unwrap(),
    )
    .unwrap();
    let device_key = SigningKey::generate(&mut OsRng);
    let eng_key = SigningKey::generate(&mut OsRng);
    let folder = dir.path().join("folder");
    std::fs::create_dir_all(&folder).unwrap();
    let authz: Arc<dyn Authorizer> = Arc::new(Approve {
        challenges: Default::default(),
    });
    let auth = EngineerAuth {
        credential: eng_key.verifying_key().to_bytes().to_vec(),
        key: eng_key.clone(),
        password: zeroize::Zeroizing::new("pw".into()),
        requested: vec![Permission::FileTransfer],
    };
    let _ = eng_key.sign(b"warm-up");
    let pcs = Pcs {
        relay: &relay,
        target: target.clone(),
        device_id: device_id.clone(),
        relay_key: relay_key.clone(),
        device_key: device_key.clone(),
        authz: authz.clone(),
    };

    // Relay memory per idle session: pending registrations held open
    // (first, before the large buffers of the measures below, which the
    // allocator would reuse).
    let idle = 500;
    let before = rss_kib();
    let mut held = Vec::new();
    for i in 0..idle {
        held.push(
            register_pc(&target, &device_id, &relay_key, &format!("idle-{i}"))
                .await
                .unwrap(),
        );
    }
    let after = rss_kib();
    drop(held);

    // Session set-up: from the PC's registration to the grant at the engineer.
    let rounds = 20;
    let mut setups = Vec::new();
    let mut transfer = None;
    for i in 0..rounds {
        let session = format!("bench-{i}");
        let backends = Backends {
            vnc: None,
            vnc_password: None,
            files: Some(
                FileBackend::new(&folder, Arc::new(|_: &FileAudit| {}))
                    .with_max_file_bytes(u64::MAX),
            ),
            events: None,
            screen: None,
        };
        let (s, pc_task, t0) = pcs.open(&session, backends, &auth).await;
        setups.push(t0.elapsed());
        if i == rounds - 1 {
            let mut data = vec![0u8; mb * 1024 * 1024];
            OsRng.fill_bytes(&mut data);
            let local = dir.path().join("big.bin");
            std::fs::write(&local, &data).unwrap();
            drop(data);
            let t = Instant::now();
            s.send_file(&local, "big.bin").await.unwrap();
            let up = t.elapsed();
            let t = Instant::now();
            s.fetch_file("big.bin", &dir.path().join("back.bin"))
                .await
                .unwrap();
            transfer = Some((up, t.elapsed()));
        }
        s.end("bench").await.unwrap();
        pc_task.await.unwrap().unwrap();
    }
    setups.sort();

    // Request to first screen frame: the PC registers the request, the
    // engineer connects asking to view, opens the local port, and a
    // viewer there has the first frame's pixels.
    let screen = frame_server().await;
    let view_auth = EngineerAuth {
        credential: auth.credential.clone(),
        key: auth.key.clone(),
        password: auth.password.clone(),
        requested: vec![Permission::View],
    };
    let mut first_frames = Vec::new();
    for i in 0..rounds {
        let session = format!("bench-frame-{i}");
        let backends = Backends {
            vnc: Some(screen),
            ..Backends::default()
        };
        let (s, pc_task, t0) = pcs.open(&session, backends, &view_auth).await;
        let local = s
            .open_vnc_listener("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        first_frame(local).await;
        first_frames.push(t0.elapsed());
        s.end("bench").await.unwrap();
        pc_task.await.unwrap().unwrap();
    }
    first_frames.sort();

    // The same through a real x11vnc on Xvfb, started for each session once
    // the grant is known (as the host's screen backend is): its start and
    // its first screen are part of the time.
    let display = xvfb();
    let mut x11vnc_frames = Vec::new();
    if let Some((_xvfb, display)) = &display {
        for i in 0..rounds {
            let session = format!("bench-x11vnc-{i}");
            let backends = Backends {
                screen: Some(x11vnc_starter(*display)),
                ..Backends::default()
            };
            let (s, pc_task, t0) = pcs.open(&session, backends, &view_auth).await;
            let local = s
                .open_vnc_listener("127.0.0.1:0".parse().unwrap())
                .await
                .unwrap();
            first_frame(local).await;
            x11vnc_frames.push(t0.elapsed());
            s.end("bench").await.unwrap();
            pc_task.await.unwrap().unwrap();
        }
        x11vnc_frames.sort();
    }

    // Added latency per frame: the same echo, once through the channel and
    // once over plain loopback TCP.
    let frames: usize = std::env::var("BENCH_FRAMES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let plain_echo = echo_server(false).await;
    let mut plain = TcpStream::connect(plain_echo).await.unwrap();
    plain.set_nodelay(true).unwrap();
    let direct = round_trips(&mut plain, frames).await;
    drop(plain);
    let rfb_echo = echo_server(true).await;
    let session = "bench-latency".to_owned();
    let backends = Backends {
        vnc: Some(rfb_echo),
        ..Backends::default()
    };
    let (s, pc_task, _) = pcs.open(&session, backends, &view_auth).await;
    let local = s
        .open_vnc_listener("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let mut viewer = TcpStream::connect(local).await.unwrap();
    viewer.set_nodelay(true).unwrap();
    // The viewer's half of the PC's RFB handshake (type None).
    let mut v = [0u8; 12];
    viewer.read_exact(&mut v).await.unwrap();
    viewer.write_all(b"RFB 003.008\n").await.unwrap();
    let mut types = [0u8; 2];
    viewer.read_exact(&mut types).await.unwrap();
    viewer.write_all(&[1]).await.unwrap();
    assert_eq!(viewer.read_u32().await.unwrap(), 0);
    let relayed = round_trips(&mut viewer, frames).await;
    drop(viewer);
    s.end("bench").await.unwrap();
    pc_task.await.unwrap().unwrap();

    println!("remote support through the relay on loopback ({rounds} sessions, {mb} MiB file)");
    println!("{:<50} {:>12}", "measure", "value");
    println!(
        "{:<50} {:>9.1} ms",
        "session set-up, median",
        setups[rounds / 2].as_secs_f64() * 1e3
    );
    println!(
        "{:<50} {:>9.1} ms",
        "session set-up, slowest",
        setups[rounds - 1].as_secs_f64() * 1e3
    );
    println!(
        "{:<50} {:>9.1} ms",
        "request to first screen frame, median",
        first_frames[rounds / 2].as_secs_f64() * 1e3
    );
    println!(
        "{:<50} {:>9.1} ms",
        "request to first screen frame, slowest",
        first_frames[rounds - 1].as_secs_f64() * 1e3
    );
    if x11vnc_frames.is_empty() {
        println!(
            "{:<50} {:>12}",
            "first frame through x11vnc (1280x1024)", "n/a (no Xvfb/x11vnc)"
        );
    } else {
        println!(
            "{:<50} {:>9.1} ms",
            "request to first frame, x11vnc 1280x1024, median",
            x11vnc_frames[rounds / 2].as_secs_f64() * 1e3
        );
        println!(
            "{:<50} {:>9.1} ms",
            "request to first frame, x11vnc 1280x1024, slowest",
            x11vnc_frames[rounds - 1].as_secs_f64() * 1e3
        );
    }
    if let Some((up, down)) = transfer {
        let mbs = |d: Duration| mb as f64 * 1.048_576 / d.as_secs_f64();
        println!(
            "{:<50} {:>8.1} MB/s",
            "file transfer engineer → PC",
            mbs(up)
        );
        println!(
            "{:<50} {:>8.1} MB/s",
            "file transfer PC → engineer",
            mbs(down)
        );
    }
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    for (what, p) in [("median", 0.5), ("p99", 0.99)] {
        let (d, r) = (percentile(&direct, p), percentile(&relayed, p));
        println!(
            "{:<50} {:>9.3} ms",
            format!("{FRAME_BYTES}-byte round trip, loopback TCP, {what}"),
            ms(d)
        );
        println!(
            "{:<50} {:>9.3} ms",
            format!("{FRAME_BYTES}-byte round trip, through relay, {what}"),
            ms(r)
        );
        println!(
            "{:<50} {:>9.3} ms",
            format!("added latency per frame, {what}"),
            ms(r.saturating_sub(d))
        );
    }
    match (before, after) {
        (Some(b), Some(a)) => println!(
            "{:<50} {:>9.1} KiB",
            format!("RSS per idle session (both ends, {idle})"),
            a.saturating_sub(b) as f64 / idle as f64
        ),
        _ => println!("{:<50} {:>12}", "RSS per idle session", "n/a"),
    }
    relay.shutdown().await;
}
