//! The `outpost-support` binary against the real relay and PC side.

use std::path::PathBuf;
use std::process::Output;

use outpost_support_proto::Permission;

use super::common::*;

struct Files {
    ca: PathBuf,
    credential: PathBuf,
    key: PathBuf,
    password: PathBuf,
}

fn files(w: &World, password: &str) -> Files {
    let dir = w.scratch();
    let (credential, key) = credential(&w.authority, "eng-cli");
    let f = Files {
        ca: dir.join("ca.pem"),
        credential: dir.join("anna.credential"),
        key: dir.join("anna.key"),
        password: dir.join("password.txt"),
    };
    std::fs::write(&f.ca, &w.pki.ca_cert_pem).unwrap();
    std::fs::write(&f.credential, credential).unwrap();
    outpost_signing::save_signing_key(&f.key, &key).unwrap();
    std::fs::write(&f.password, format!("{password}\n")).unwrap();
    f
}

async fn run(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_outpost-support"))
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

fn common(w: &World, f: &Files, session: &str, device_key: &str) -> Vec<String> {
    [
        "--relay",
        &w.relay.addr().to_string(),
        "--server-name",
        "localhost",
        "--ca",
        f.ca.to_str().unwrap(),
        "--session",
        session,
        "--credential",
        f.credential.to_str().unwrap(),
        "--key",
        f.key.to_str().unwrap(),
        "--device-key",
        device_key,
        "--password-file",
        f.password.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outpost_support_send_delivers_a_file_and_prints_the_grant() {
    let w = World::new().await;
    let authz = TestAuthorizer::new(w.authority.verifying_key(), &[Permission::FileTransfer]);
    let pc = w.start_pc("sess-cli", authz, w.backends()).await;
    let f = files(&w, PASSWORD);
    let local = w.scratch().join("report.txt");
    let body = random_bytes(300_000);
    std::fs::write(&local, &body).unwrap();
    let device_hex = outpost_signing::public_key_to_hex(&w.device_key.verifying_key());
    let mut args = vec!["send".to_owned()];
    args.extend(common(&w, &f, "sess-cli", &device_hex));
    args.extend([
        local.to_str().unwrap().to_owned(),
        "--as".into(),
        "in/report.txt".into(),
    ]);
    std::fs::create_dir_all(w.folder.join("in")).unwrap();
    let out = run(args).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("connected as eng-cli; granted: file-transfer"),
        "{stdout}"
    );
    assert!(stdout.contains(&sha256_hex(&body)), "{stdout}");
    assert_eq!(
        sha256_hex(&std::fs::read(w.folder.join("in/report.txt")).unwrap()),
        sha256_hex(&body)
    );
    pc.result().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outpost_support_refuses_a_pc_that_does_not_prove_the_device_key() {
    let w = World::new().await;
    let authz = TestAuthorizer::new(w.authority.verifying_key(), &[Permission::FileTransfer]);
    let pc = w
        .start_pc("sess-cli-bad", authz.clone(), w.backends())
        .await;
    let f = files(&w, PASSWORD);
    let other = ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng);
    let other_hex = outpost_signing::public_key_to_hex(&other.verifying_key());
    let mut args = vec!["fetch".to_owned()];
    args.extend(common(&w, &f, "sess-cli-bad", &other_hex));
    args.extend([
        "x.txt".to_owned(),
        w.scratch().join("x").to_str().unwrap().to_owned(),
    ]);
    let out = run(args).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("did not prove it holds the expected device key"),
        "{stderr}"
    );
    assert!(authz.attempts.lock().unwrap().is_empty());
    assert!(pc.result().await.is_err());
}
