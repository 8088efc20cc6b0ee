//! A hostile relay between the parties: it speaks the hello protocol like the
//! real one, then flips a byte, replays a frame or reorders two frames. Each
//! must end the session with `Tampered`, and nothing half-written remains.

use std::time::Duration;

use outpost_support_proto::Permission;
use outpost_support_proto::channel::ChannelError;
use outpost_support_proto::engineer::{self, EngineerError};
use outpost_support_proto::frame::{MAX_FRAME_BYTES, read_frame, write_frame};
use outpost_support_proto::pc::{EndReason, PcError};
use outpost_support_proto::relay_wire::{self, RelayMsg, RelayTarget, client_tls};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::common::*;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Dir {
    ToPc,
    ToEngineer,
}

#[derive(Clone, Copy, Debug)]
enum Attack {
    Flip(Dir, usize),
    Replay(Dir, usize),
    Reorder(Dir, usize),
}

/// Start a hostile relay for one PC and one engineer; returns its target.
async fn hostile_relay(
    w: &World,
    attack: Attack,
) -> (RelayTarget, tokio::sync::oneshot::Receiver<()>) {
    let (registered_tx, registered) = tokio::sync::oneshot::channel();
    let tls = outpost_cloud::tls_config(&w.pki.server_cert_pem, &w.pki.server_key_pem).unwrap();
    let acceptor = TlsAcceptor::from(tls);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut pc = acceptor.accept(tcp).await.unwrap();
        assert!(matches!(
            relay_wire::recv(&mut pc).await.unwrap(),
            RelayMsg::RegisterPc { .. }
        ));
        relay_wire::send(
            &mut pc,
            &RelayMsg::Nonce {
                nonce: hex::encode([0u8; 32]),
            },
        )
        .await
        .unwrap();
        let _proof = relay_wire::recv(&mut pc).await.unwrap();
        relay_wire::send(&mut pc, &RelayMsg::Registered)
            .await
            .unwrap();
        let _ = registered_tx.send(());
        let (tcp, peer) = listener.accept().await.unwrap();
        let mut eng = acceptor.accept(tcp).await.unwrap();
        let _connect = relay_wire::recv(&mut eng).await.unwrap();
        relay_wire::send(
            &mut pc,
            &RelayMsg::Paired {
                peer: peer.to_string(),
            },
        )
        .await
        .unwrap();
        relay_wire::send(&mut eng, &RelayMsg::Paired { peer: "pc".into() })
            .await
            .unwrap();
        let (pr, pw) = tokio::io::split(pc);
        let (er, ew) = tokio::io::split(eng);
        tokio::join!(
            pump(er, pw, Dir::ToPc, attack),
            pump(pr, ew, Dir::ToEngineer, attack)
        );
    });
    let target = RelayTarget::new(
        addr.to_string(),
        "localhost",
        client_tls(&w.pki.ca_cert_pem).unwrap(),
    )
    .unwrap();
    (target, registered)
}

async fn pump<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    mut r: R,
    mut w: W,
    dir: Dir,
    attack: Attack,
) {
    let mut buf = Vec::new();
    let mut held: Option<Vec<u8>> = None;
    let mut idx = 0usize;
    while read_frame(&mut r, &mut buf, MAX_FRAME_BYTES).await.is_ok() {
        let mut out: Vec<Vec<u8>> = Vec::new();
        match attack {
            Attack::Flip(d, i) if d == dir && i == idx => {
                let mut f = buf.clone();
                let mid = f.len() / 2;
                f[mid] ^= 0x01;
                out.push(f);
            }
            Attack::Replay(d, i) if d == dir && i == idx => {
                out.push(buf.clone());
                out.push(buf.clone());
            }
            Attack::Reorder(d, i) if d == dir && i == idx => held = Some(buf.clone()),
            _ => {
                out.push(buf.clone());
                if let Some(h) = held.take() {
                    out.push(h);
                }
            }
        }
        for f in out {
            if write_frame(&mut w, &f).await.is_err() || w.flush().await.is_err() {
                return;
            }
        }
        idx += 1;
    }
    let _ = w.shutdown().await;
}

/// Run a session through a hostile relay; the engineer sends a 200 KB file
/// (PutStart = frame 2, chunks = frames 3..=6, PutEnd = frame 7 towards the
/// PC). Returns the engineer's outcome and the PC's.
async fn run(
    attack: Attack,
) -> (
    World,
    Result<(), EngineerError>,
    Result<outpost_support_proto::pc::SessionReport, PcError>,
) {
    let w = World::new().await;
    let (target, registered) = hostile_relay(&w, attack).await;
    let authz = TestAuthorizer::new(w.authority.verifying_key(), &[Permission::FileTransfer]);
    let mut cfg = w.pc_config("sess-hostile");
    cfg.relay = target.clone();
    let backends = w.backends();
    let pc = tokio::spawn(async move {
        outpost_support_proto::pc::serve(&cfg, authz, backends, std::future::pending()).await
    });
    let auth = w.engineer_auth(PASSWORD, &[Permission::FileTransfer]);
    let local = w.scratch().join("f.bin");
    std::fs::write(&local, random_bytes(200 * 1024)).unwrap();
    let eng = async {
        let _ = registered.await;
        let s = engineer::connect(
            &target,
            "sess-hostile",
            &w.device_key.verifying_key(),
            &auth,
        )
        .await?;
        let r = s.send_file(&local, "f.bin").await.map(|_| ());
        let _ = s.end("bye").await;
        r
    };
    let eng = tokio::time::timeout(Duration::from_secs(30), eng)
        .await
        .expect("the engineer side ended");
    let pcr = tokio::time::timeout(Duration::from_secs(30), pc)
        .await
        .expect("the PC side ended")
        .unwrap();
    (w, eng, pcr)
}

fn assert_no_file(w: &World) {
    let names: Vec<_> = std::fs::read_dir(&w.folder)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(names.is_empty(), "left behind: {names:?}");
}

fn assert_pc_tampered(pc: &Result<outpost_support_proto::pc::SessionReport, PcError>) {
    match pc {
        Ok(r) => assert!(
            matches!(r.ended, EndReason::Channel(ChannelError::Tampered)),
            "{}",
            r.ended
        ),
        Err(e) => assert!(matches!(e, PcError::Channel(ChannelError::Tampered)), "{e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_in_a_file_chunk_ends_the_session() {
    let (w, eng, pc) = run(Attack::Flip(Dir::ToPc, 4)).await;
    assert!(eng.is_err());
    assert_pc_tampered(&pc);
    assert_no_file(&w);
    let audit = w.audit.lock().unwrap().clone();
    assert!(audit.iter().all(|a| a.outcome.is_err()), "{audit:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_frame_ends_the_session() {
    let (w, eng, pc) = run(Attack::Replay(Dir::ToPc, 3)).await;
    assert!(eng.is_err());
    assert_pc_tampered(&pc);
    assert_no_file(&w);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reordered_frames_end_the_session() {
    let (w, eng, pc) = run(Attack::Reorder(Dir::ToPc, 3)).await;
    assert!(eng.is_err());
    assert_pc_tampered(&pc);
    assert_no_file(&w);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_in_the_pcs_decision_is_caught_by_the_engineer() {
    let (w, eng, _pc) = run(Attack::Flip(Dir::ToEngineer, 1)).await;
    assert!(
        matches!(eng, Err(EngineerError::Channel(ChannelError::Tampered))),
        "{eng:?}"
    );
    assert_no_file(&w);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_in_the_handshake_fails_it() {
    // Message 3 carries the password and credential: altered, the PC
    // refuses to read it, and the broker is never asked.
    let (w, eng, pc) = run(Attack::Flip(Dir::ToPc, 1)).await;
    assert!(eng.is_err());
    assert!(
        matches!(pc, Err(PcError::Channel(ChannelError::Tampered))),
        "{pc:?}"
    );
    assert_no_file(&w);
}
