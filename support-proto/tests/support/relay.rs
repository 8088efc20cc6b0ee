//! The real relay's pairing rules and caps.

use std::sync::atomic::Ordering;
use std::time::Duration;

use outpost_cloud::relay::RelayLimits;
use outpost_protocol::DeviceKey;
use outpost_support_proto::Permission;
use outpost_support_proto::engineer::{self, EngineerError};
use outpost_support_proto::relay_wire::{
    self, RelayError, RelayErrorCode, connect_engineer, register_pc,
};

use super::common::*;

fn refused_with(e: &RelayError, code: RelayErrorCode) -> bool {
    matches!(e, RelayError::Refused { code: c, .. } if *c == code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_or_used_session_id_is_refused() {
    let w = World::new().await;
    let e = connect_engineer(&w.target, "no-such-session")
        .await
        .unwrap_err();
    assert!(refused_with(&e, RelayErrorCode::UnknownSession), "{e}");

    // A session id pairs once: replaying it afterwards finds nothing.
    let authz = TestAuthorizer::new(w.authority.verifying_key(), &[Permission::View]);
    let pc = w.start_pc("sess-once", authz, w.backends()).await;
    let auth = w.engineer_auth(PASSWORD, &[Permission::View]);
    let s = engineer::connect(&w.target, "sess-once", &w.device_key.verifying_key(), &auth)
        .await
        .unwrap();
    let e = engineer::connect(&w.target, "sess-once", &w.device_key.verifying_key(), &auth)
        .await
        .unwrap_err();
    assert!(
        matches!(e, EngineerError::Relay(ref r) if refused_with(r, RelayErrorCode::UnknownSession)),
        "{e}"
    );
    s.end("bye").await.unwrap();
    pc.result().await.unwrap();
    assert_eq!(w.relay.stats().unknown_session.load(Ordering::Relaxed), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pc_without_the_enrolled_key_cannot_register() {
    let w = World::new().await;
    let e = register_pc(&w.target, &w.device_id, &DeviceKey::generate(), "sess-x")
        .await
        .unwrap_err();
    assert!(refused_with(&e, RelayErrorCode::BadProof), "{e}");
    let unknown = outpost_protocol::DeviceId::generate();
    let e = register_pc(&w.target, &unknown, &w.relay_key, "sess-x")
        .await
        .unwrap_err();
    assert!(refused_with(&e, RelayErrorCode::BadProof), "{e}");
    assert_eq!(w.relay.stats().bad_proof.load(Ordering::Relaxed), 2);
    assert_eq!(w.relay.pending(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_sessions_are_capped_per_device_and_unique() {
    let w = World::with_limits(RelayLimits {
        max_pending_per_device: 2,
        ..RelayLimits::default()
    })
    .await;
    let _a = register_pc(&w.target, &w.device_id, &w.relay_key, "sess-a")
        .await
        .unwrap();
    let e = register_pc(&w.target, &w.device_id, &w.relay_key, "sess-a")
        .await
        .unwrap_err();
    assert!(refused_with(&e, RelayErrorCode::DuplicateSession), "{e}");
    let _b = register_pc(&w.target, &w.device_id, &w.relay_key, "sess-b")
        .await
        .unwrap();
    let e = register_pc(&w.target, &w.device_id, &w.relay_key, "sess-c")
        .await
        .unwrap_err();
    assert!(refused_with(&e, RelayErrorCode::Busy), "{e}");
    assert_eq!(w.relay.pending(), 2);
    // A PC that goes away frees its place.
    drop(_a);
    wait_for(|| w.relay.pending() == 1).await;
    let _c = register_pc(&w.target, &w.device_id, &w.relay_key, "sess-c")
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_paired_session_is_closed_by_the_relay() {
    let w = World::with_limits(RelayLimits {
        idle_timeout: Duration::from_millis(300),
        ..RelayLimits::default()
    })
    .await;
    let mut pc = register_pc(&w.target, &w.device_id, &w.relay_key, "sess-idle")
        .await
        .unwrap();
    let mut eng = connect_engineer(&w.target, "sess-idle").await.unwrap();
    relay_wire::wait_paired(&mut pc).await.unwrap();
    // Nobody sends: the relay closes both sides.
    let mut buf = Vec::new();
    let r = tokio::time::timeout(
        Duration::from_secs(20),
        outpost_support_proto::frame::read_frame(&mut eng, &mut buf, 1024),
    )
    .await
    .unwrap();
    assert!(r.is_err());
    wait_for(|| w.relay.stats().idle_closed.load(Ordering::Relaxed) == 1).await;
    assert_eq!(w.relay.paired(), 0);
}
