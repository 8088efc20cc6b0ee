//! The whole flow through the real relay: connect, grant, file transfer,
//! refusals, end.

use std::sync::atomic::Ordering;

use outpost_support_proto::channel::ChannelError;
use outpost_support_proto::engineer::{self, EngineerError};
use outpost_support_proto::files::Direction;
use outpost_support_proto::pc::{EndReason, PcError};
use outpost_support_proto::{Permission, RefusalCode};

use super::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_megabytes_arrive_with_their_hash_and_the_relay_sees_no_plaintext() {
    let w = World::new().await;
    let marker = b"PATIENT-NAME: Jane Example, DOB 1970-01-01".to_vec();
    let file_name = "service-log-7f3a9.txt";
    w.tap.needles.lock().unwrap().extend([
        marker.clone(),
        PASSWORD.as_bytes().to_vec(),
        file_name.as_bytes().to_vec(),
        b"eng-anna".to_vec(),
    ]);
    let authz = TestAuthorizer::new(
        w.authority.verifying_key(),
        &[Permission::View, Permission::FileTransfer],
    );
    let pc = w.start_pc("sess-flow-1", authz.clone(), w.backends()).await;
    let auth = w.engineer_auth(PASSWORD, &[Permission::View, Permission::FileTransfer]);
    let s = engineer::connect(
        &w.target,
        "sess-flow-1",
        &w.device_key.verifying_key(),
        &auth,
    )
    .await
    .unwrap();
    assert_eq!(
        s.grant().permissions,
        vec![Permission::View, Permission::FileTransfer]
    );
    assert_eq!(s.grant().engineer, "eng-anna");
    assert!(authz.attempts.lock().unwrap()[0].starts_with("relay 127.0.0.1:"));

    // 50 MB of random bytes with a known plaintext inside.
    let mut big = random_bytes(50 * 1024 * 1024);
    big[1000..1000 + marker.len()].copy_from_slice(&marker);
    let scratch = w.scratch();
    let local = scratch.join("big.bin");
    std::fs::write(&local, &big).unwrap();
    let done = s.send_file(&local, file_name).await.unwrap();
    let want = sha256_hex(&big);
    assert_eq!(done.sha256, want);
    assert_eq!(done.size, big.len() as u64);
    let arrived = std::fs::read(w.folder.join(file_name)).unwrap();
    assert_eq!(sha256_hex(&arrived), want);
    drop(arrived);

    // Fetch it back into a new local file.
    let back = scratch.join("back.bin");
    let fetched = s.fetch_file(file_name, &back).await.unwrap();
    assert_eq!(fetched.sha256, want);
    assert_eq!(sha256_hex(&std::fs::read(&back).unwrap()), want);

    // Never overwritten, on either side.
    let again = s.send_file(&local, file_name).await.unwrap_err();
    assert!(
        matches!(again, EngineerError::Denied(ref r) if r.message.contains("exists")),
        "{again}"
    );
    assert!(s.fetch_file(file_name, &back).await.is_err());

    // Paths outside the folder are refused, and nothing is left behind.
    for bad in ["../escape.txt", "/tmp/escape.txt", "sub/../../escape.txt"] {
        let e = s.send_file(&local, bad).await.unwrap_err();
        assert!(matches!(e, EngineerError::Denied(_)), "{bad}: {e}");
        let e = s.fetch_file(bad, &scratch.join("x")).await.unwrap_err();
        assert!(matches!(e, EngineerError::Denied(_)), "{bad}: {e}");
    }
    assert!(!w.folder.parent().unwrap().join("escape.txt").exists());
    #[cfg(unix)]
    {
        let outside = w.folder.parent().unwrap().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("secret.txt"), b"outside").unwrap();
        std::os::unix::fs::symlink(&outside, w.folder.join("link")).unwrap();
        let e = s.send_file(&local, "link/planted.bin").await.unwrap_err();
        assert!(matches!(e, EngineerError::Denied(_)), "{e}");
        let e = s
            .fetch_file("link/secret.txt", &scratch.join("secret"))
            .await
            .unwrap_err();
        assert!(matches!(e, EngineerError::Denied(_)), "{e}");
        assert!(!outside.join("planted.bin").exists());
    }
    let leftovers: Vec<_> = std::fs::read_dir(&w.folder)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".outpost-upload-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    s.end("done").await.unwrap();
    let report = pc.result().await.unwrap();
    assert!(
        matches!(report.ended, EndReason::Engineer(ref r) if r == "done"),
        "{}",
        report.ended
    );

    // The audit holds the transfers with name, size, hash and direction.
    let audit = w.audit.lock().unwrap().clone();
    assert!(audit.iter().any(|a| a.name == file_name
        && a.direction == Direction::ToPc
        && a.sha256 == want
        && a.size == big.len() as u64
        && a.outcome.is_ok()));
    assert!(audit.iter().any(|a| a.name == file_name
        && a.direction == Direction::FromPc
        && a.sha256 == want
        && a.outcome.is_ok()));
    assert!(
        audit
            .iter()
            .any(|a| a.name == "../escape.txt" && a.outcome.is_err())
    );

    // Everything passed through the relay, and nothing of it was readable.
    assert!(w.tap.bytes.load(Ordering::Relaxed) > 2 * big.len() as u64);
    assert!(
        !w.tap.leaked.load(Ordering::Relaxed),
        "the relay saw plaintext"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_file_transfer_grant_files_are_refused_and_audited() {
    let w = World::new().await;
    // The engineer asks for file transfer; the person approves view only.
    let authz = TestAuthorizer::new(w.authority.verifying_key(), &[Permission::View]);
    let pc = w.start_pc("sess-noft", authz, w.backends()).await;
    let auth = w.engineer_auth(PASSWORD, &[Permission::View, Permission::FileTransfer]);
    let s = engineer::connect(&w.target, "sess-noft", &w.device_key.verifying_key(), &auth)
        .await
        .unwrap();
    assert_eq!(s.grant().permissions, vec![Permission::View]);
    let local = w.scratch().join("f.txt");
    std::fs::write(&local, b"hello").unwrap();
    let e = s.send_file(&local, "f.txt").await.unwrap_err();
    assert!(
        matches!(e, EngineerError::Denied(ref r) if r.code == RefusalCode::NotApproved),
        "{e}"
    );
    std::fs::write(w.folder.join("there.txt"), b"x").unwrap();
    let e = s
        .fetch_file("there.txt", &w.scratch().join("there"))
        .await
        .unwrap_err();
    assert!(matches!(e, EngineerError::Denied(_)), "{e}");
    assert!(!w.folder.join("f.txt").exists());
    s.end("bye").await.unwrap();
    pc.result().await.unwrap();
    let audit = w.audit.lock().unwrap().clone();
    assert_eq!(audit.len(), 2, "{audit:?}");
    assert!(audit.iter().all(|a| a.outcome.is_err()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_never_exceeds_the_request() {
    let w = World::new().await;
    // A broker that approves more than was asked.
    let authz = TestAuthorizer::new(
        w.authority.verifying_key(),
        &[
            Permission::View,
            Permission::Control,
            Permission::FileTransfer,
        ],
    );
    let pc = w.start_pc("sess-narrow", authz, w.backends()).await;
    let auth = w.engineer_auth(PASSWORD, &[Permission::View]);
    let s = engineer::connect(
        &w.target,
        "sess-narrow",
        &w.device_key.verifying_key(),
        &auth,
    )
    .await
    .unwrap();
    assert_eq!(s.grant().permissions, vec![Permission::View]);
    let local = w.scratch().join("f.txt");
    std::fs::write(&local, b"hello").unwrap();
    assert!(s.send_file(&local, "f.txt").await.is_err());
    s.end("bye").await.unwrap();
    pc.result().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_device_key_is_refused_by_the_engineer_client() {
    let w = World::new().await;
    let authz = TestAuthorizer::new(w.authority.verifying_key(), &[Permission::View]);
    let pc = w
        .start_pc("sess-wrongdev", authz.clone(), w.backends())
        .await;
    let auth = w.engineer_auth(PASSWORD, &[Permission::View]);
    let other = ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng);
    let e = engineer::connect(&w.target, "sess-wrongdev", &other.verifying_key(), &auth)
        .await
        .unwrap_err();
    assert!(
        matches!(e, EngineerError::Channel(ChannelError::WrongDevice)),
        "{e}"
    );
    // The engineer stopped before presenting anything: the broker saw no
    // attempt (no password went to a PC it could not authenticate).
    assert!(authz.attempts.lock().unwrap().is_empty());
    assert!(pc.result().await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_and_foreign_credential_are_refused_with_their_reason() {
    let w = World::new().await;
    let authz = TestAuthorizer::new(w.authority.verifying_key(), &[Permission::View]);

    let pc = w.start_pc("sess-badpw", authz.clone(), w.backends()).await;
    let auth = w.engineer_auth("WRONG-PASSWORD", &[Permission::View]);
    let e = engineer::connect(
        &w.target,
        "sess-badpw",
        &w.device_key.verifying_key(),
        &auth,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(e, EngineerError::Channel(ChannelError::Refused(ref r)) if r.code == RefusalCode::BadPassword),
        "{e}"
    );
    assert!(matches!(
        pc.result().await,
        Err(PcError::Channel(ChannelError::Refused(_)))
    ));

    // A credential signed by another authority.
    let pc = w.start_pc("sess-badcred", authz, w.backends()).await;
    let other_authority = ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng);
    let (credential, key) = credential(&other_authority, "mallory");
    let auth = outpost_support_proto::channel::EngineerAuth {
        credential,
        key,
        password: zeroize::Zeroizing::new(PASSWORD.into()),
        requested: vec![Permission::View],
    };
    let e = engineer::connect(
        &w.target,
        "sess-badcred",
        &w.device_key.verifying_key(),
        &auth,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(e, EngineerError::Channel(ChannelError::Refused(ref r)) if r.code == RefusalCode::BadCredential),
        "{e}"
    );
    assert!(pc.result().await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_person_at_the_pc_ends_the_session() {
    let w = World::new().await;
    let authz = TestAuthorizer::new(w.authority.verifying_key(), &[Permission::View]);
    let mut pc = w.start_pc("sess-stop", authz, w.backends()).await;
    let auth = w.engineer_auth(PASSWORD, &[Permission::View]);
    let s = engineer::connect(&w.target, "sess-stop", &w.device_key.verifying_key(), &auth)
        .await
        .unwrap();
    pc.stop.take().unwrap().send(()).unwrap();
    let why = tokio::time::timeout(std::time::Duration::from_secs(20), s.closed())
        .await
        .unwrap();
    assert!(why.contains("ended at the PC"), "{why}");
    assert!(matches!(
        pc.result().await.unwrap().ended,
        EndReason::Stopped
    ));
}
