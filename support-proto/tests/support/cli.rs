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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_with_a_control_file_takes_send_fetch_and_end_from_other_processes() {
    let w = World::new().await;
    let authz = TestAuthorizer::new(w.authority.verifying_key(), &[Permission::FileTransfer]);
    let pc = w.start_pc("sess-ctl", authz, w.backends()).await;
    let f = files(&w, PASSWORD);
    let device_hex = outpost_signing::public_key_to_hex(&w.device_key.verifying_key());
    let control = w.scratch().join("session.control");
    let mut args = vec!["connect".to_owned()];
    args.extend(common(&w, &f, "sess-ctl", &device_hex));
    args.extend([
        "--request".into(),
        "file-transfer".into(),
        "--control".into(),
        control.to_str().unwrap().to_owned(),
    ]);
    // Standard input is closed at once: with --control the session stays.
    let connect = std::process::Command::new(env!("CARGO_BIN_EXE_outpost-support"))
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while !control.exists() {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(30),
            "no control file"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&control).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let ctl = |rest: &[&str]| {
        let mut a = vec![
            "ctl".to_owned(),
            "--control".into(),
            control.to_str().unwrap().to_owned(),
        ];
        a.extend(rest.iter().map(|s| s.to_string()));
        a
    };

    // Another process sends a file through the running session...
    let local = w.scratch().join("report.bin");
    let body = random_bytes(200_000);
    std::fs::write(&local, &body).unwrap();
    let out = run(ctl(&["send", local.to_str().unwrap(), "--as", "r.bin"])).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(&sha256_hex(&body)), "{stdout}");
    assert_eq!(std::fs::read(w.folder.join("r.bin")).unwrap(), body);
    // ...and a third fetches it back.
    let back = w.scratch().join("back.bin");
    let out = run(ctl(&["fetch", "r.bin", back.to_str().unwrap()])).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(&back).unwrap(), body);

    // A control file with another token opens nothing.
    let forged = w.scratch().join("forged.control");
    let mut c: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&control).unwrap()).unwrap();
    c["token"] = "00".repeat(32).into();
    std::fs::write(&forged, c.to_string()).unwrap();
    let mut a = vec![
        "ctl".to_owned(),
        "--control".into(),
        forged.to_str().unwrap().to_owned(),
    ];
    a.extend([
        "send".into(),
        local.to_str().unwrap().into(),
        "--as".into(),
        "forged.bin".into(),
    ]);
    let out = run(a.clone()).await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("the control token is wrong"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!w.folder.join("forged.bin").exists());

    // `end` from yet another process ends the session and the connect.
    let out = run(ctl(&["end"])).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let done = tokio::task::spawn_blocking(move || connect.wait_with_output().unwrap())
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&done.stdout);
    assert!(done.status.success(), "{stdout}");
    assert!(
        stdout.contains("connected as eng-cli; granted: file-transfer"),
        "{stdout}"
    );
    assert!(stdout.contains("session ended"), "{stdout}");
    assert!(!control.exists(), "the control file outlived the session");
    pc.result().await.unwrap();
    // Nothing answers any more.
    let out = run(a).await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no session answers"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
