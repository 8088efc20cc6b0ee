//! The `outpost` binary's signing commands, run as a user would: `keygen`,
//! `sign`, `verify` and `inspect` on the real guest components.

use outpost_signing::Manifest;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The outcome of one `outpost` run.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    #[track_caller]
    fn ok(self) -> Run {
        assert_eq!(
            self.code, 0,
            "stdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    /// Refused with exit code 1 and `text` on stdout or stderr.
    #[track_caller]
    fn refused(self, text: &str) -> Run {
        assert_eq!(
            self.code, 1,
            "stdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        assert!(
            self.stdout.contains(text) || self.stderr.contains(text),
            "{text:?} not in\nstdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("{e}: {}", self.stdout))
    }
}

fn outpost<I, S>(args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let out = Command::new(env!("CARGO_BIN_EXE_outpost"))
        .args(args)
        .env("OUTPOST_LOG", "error")
        .output()
        .expect("the outpost binary runs");
    Run {
        code: out.status.code().expect("exited normally"),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

/// A scratch directory holding a key made by `outpost keygen`.
struct Keys {
    dir: tempfile::TempDir,
}

impl Keys {
    fn new() -> Keys {
        Keys {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `outpost keygen -o <name>.key`; returns the key id it printed.
    fn keygen(&self, name: &str) -> String {
        let run = outpost([
            "keygen".as_ref(),
            "-o".as_ref(),
            self.path(&format!("{name}.key")).as_os_str(),
            "--json".as_ref(),
        ])
        .ok();
        run.json()["key_id"].as_str().unwrap().to_string()
    }

    /// `outpost sign` `component` over `manifest` with the named keys into `out`.
    fn sign(&self, component: &str, manifest: &Path, keys: &[&str], out: &str) -> PathBuf {
        let out = self.path(out);
        let mut args: Vec<PathBuf> = vec!["sign".into()];
        for k in keys {
            args.push("--key".into());
            args.push(self.path(&format!("{k}.key")));
        }
        args.extend([
            "--manifest".into(),
            manifest.to_owned(),
            component.into(),
            "-o".into(),
            out.clone(),
        ]);
        outpost(&args).ok();
        out
    }
}

#[test]
fn keygen_writes_key_files_and_a_trust_snippet() {
    let keys = Keys::new();
    let secret = keys.path("release.key");
    let run = outpost([
        "keygen".as_ref(),
        "-o".as_ref(),
        secret.as_os_str(),
        "--name".as_ref(),
        "vendor-release".as_ref(),
    ])
    .ok();
    let public = std::fs::read_to_string(keys.path("release.key.pub")).unwrap();
    let public_hex = public.lines().nth(1).unwrap();
    for want in [
        "key id",
        public_hex,
        "release.key.wasmsign2.pub",
        "[[trust.keys]]\nname = \"vendor-release\"",
        &format!("public-key = \"{public_hex}\""),
    ] {
        assert!(run.stdout.contains(want), "{want:?} not in\n{}", run.stdout);
    }
    let raw = std::fs::read(keys.path("release.key.wasmsign2.pub")).unwrap();
    assert_eq!(raw.len(), 33);
    assert_eq!(raw[0], 0x01);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&secret).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

#[test]
fn keygen_refuses_to_overwrite() {
    let keys = Keys::new();
    keys.keygen("release");
    let before = std::fs::read(keys.path("release.key")).unwrap();
    outpost([
        "keygen".as_ref(),
        "-o".as_ref(),
        keys.path("release.key").as_os_str(),
    ])
    .refused("exists already");
    assert_eq!(std::fs::read(keys.path("release.key")).unwrap(), before);
    // A leftover public key file alone is enough to refuse, and nothing is written.
    std::fs::write(keys.path("other.key.pub"), "x").unwrap();
    outpost([
        "keygen".as_ref(),
        "-o".as_ref(),
        keys.path("other.key").as_os_str(),
    ])
    .refused("other.key.pub exists already");
    assert!(!keys.path("other.key").exists());
}

#[test]
fn signed_module_verifies_with_its_public_key_only() {
    let keys = Keys::new();
    let id = keys.keygen("release");
    let other_id = keys.keygen("other");
    let signed = keys.sign(
        outpost_artifacts::COLLECTOR,
        Path::new(outpost_artifacts::COLLECTOR_MANIFEST),
        &["release"],
        "collector.wasm",
    );
    let pubkey = |k: &str| keys.path(&format!("{k}.key.pub"));

    let run = outpost([
        "verify".as_ref(),
        signed.as_os_str(),
        "--public-key".as_ref(),
        pubkey("release").as_os_str(),
    ])
    .ok();
    for want in ["collector 0.1.0", &format!("release ({id})"), "OK"] {
        assert!(run.stdout.contains(want), "{want:?} not in\n{}", run.stdout);
    }

    // The raw wasmsign2 key file is the same key.
    let run = outpost([
        "verify".as_ref(),
        signed.as_os_str(),
        "--public-key".as_ref(),
        keys.path("release.key.wasmsign2.pub").as_os_str(),
        "--json".as_ref(),
    ])
    .ok();
    let json = run.json();
    assert_eq!(json["ok"], true);
    assert_eq!(json["name"], "collector");
    assert_eq!(json["signers"][0]["key_id"], id.as_str());

    // Another key: refused, naming the key that signed.
    outpost([
        "verify".as_ref(),
        signed.as_os_str(),
        "--public-key".as_ref(),
        pubkey("other").as_os_str(),
    ])
    .refused(&format!("module is signed by unknown key {id}"));
    assert_ne!(id, other_id);

    // Installed under another name: refused.
    outpost([
        "verify".as_ref(),
        signed.as_os_str(),
        "--public-key".as_ref(),
        pubkey("release").as_os_str(),
        "--name".as_ref(),
        "notifier".as_ref(),
    ])
    .refused("being installed as \"notifier\"");

    // The unsigned component: refused.
    outpost([
        "verify".as_ref(),
        outpost_artifacts::COLLECTOR.as_ref(),
        "--public-key".as_ref(),
        pubkey("release").as_os_str(),
    ])
    .refused("module is not signed");
}

#[test]
fn verify_refuses_a_file_changed_after_signing() {
    let keys = Keys::new();
    keys.keygen("release");
    let signed = keys.sign(
        outpost_artifacts::COLLECTOR,
        Path::new(outpost_artifacts::COLLECTOR_MANIFEST),
        &["release"],
        "collector.wasm",
    );
    let mut bytes = std::fs::read(&signed).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    let tampered = keys.path("tampered.wasm");
    std::fs::write(&tampered, &bytes).unwrap();
    let run = outpost([
        "verify".as_ref(),
        tampered.as_os_str(),
        "--public-key".as_ref(),
        keys.path("release.key.pub").as_os_str(),
        "--json".as_ref(),
    ])
    .refused("the file was changed after signing");
    assert_eq!(run.json()["ok"], false);
}

#[test]
fn verify_with_a_host_config_uses_its_trust_and_leaves_state_alone() {
    let dir = tempfile::tempdir().unwrap();
    let dev_key = outpost_artifacts::DEV_PUBLIC_KEY_HEX;
    let config = |allow: bool| {
        let path = dir.path().join(format!("outpost-{allow}.toml"));
        std::fs::write(
            &path,
            format!(
                "state-dir = \"state\"\n\
                 [trust]\nallow-development-key = {allow}\n\
                 [[trust.keys]]\nname = \"workspace-development\"\npublic-key = \"{dev_key}\"\ndevelopment = true\n\
                 [[module]]\nname = \"collector\"\nfile = \"{}\"\n",
                outpost_artifacts::COLLECTOR_SIGNED.replace('\\', "\\\\")
            ),
        )
        .unwrap();
        path
    };
    let signed = outpost_artifacts::COLLECTOR_SIGNED;
    outpost([
        "verify".as_ref(),
        signed.as_ref(),
        "--config".as_ref(),
        config(false).as_os_str(),
    ])
    .refused("allow-development-key is false");
    let run = outpost([
        "verify".as_ref(),
        signed.as_ref(),
        "--config".as_ref(),
        config(true).as_os_str(),
    ])
    .ok();
    for want in [
        "collector",
        "workspace-development",
        outpost_artifacts::DEV_KEY_ID,
        "DEVELOPMENT KEY",
        "OK",
    ] {
        assert!(run.stdout.contains(want), "{want:?} not in\n{}", run.stdout);
    }
    assert!(
        !dir.path().join("state").exists(),
        "verify must not create the host's state"
    );
}

#[test]
fn inspect_reads_everything_from_the_signed_file() {
    let keys = Keys::new();
    let id = keys.keygen("release");
    let signed = keys.sign(
        outpost_artifacts::COLLECTOR,
        Path::new(outpost_artifacts::COLLECTOR_MANIFEST),
        &["release"],
        "collector.wasm",
    );
    let run = outpost(["inspect".as_ref(), signed.as_os_str()]).ok();
    for want in [
        "collector 0.1.0 (collector world)",
        &id,
        "NOT verified",
        "outpost verify",
        "instrument-logs",
        "heartbeat, events",
        "1048576 bytes",
        "64 MiB memory",
        "outpost:agent/uplink@",
        "outpost:agent/collect@",
    ] {
        assert!(run.stdout.contains(want), "{want:?} not in\n{}", run.stdout);
    }

    let json = outpost(["inspect".as_ref(), signed.as_os_str(), "--json".as_ref()])
        .ok()
        .json();
    assert_eq!(json["signed"], true);
    assert_eq!(json["unverified_key_ids"][0], id.as_str());
    assert_eq!(json["manifest"]["name"], "collector");
    assert_eq!(json["manifest"]["version"], "0.1.0");
    assert_eq!(
        json["manifest"]["capabilities"]["directories"][0],
        "instrument-logs"
    );
    let imports: Vec<&str> = json["imports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        imports
            .iter()
            .any(|i| i.starts_with("outpost:agent/uplink@")),
        "{imports:?}"
    );

    // An unsigned component still shows its imports and exports.
    let run = outpost(["inspect", outpost_artifacts::NOTIFIER]).ok();
    for want in [
        "unsigned: no manifest/signature",
        "outpost:agent/notify@",
        "outpost:agent/notify-handler@",
    ] {
        assert!(run.stdout.contains(want), "{want:?} not in\n{}", run.stdout);
    }
}

#[test]
fn inspect_diff_lists_what_an_upgrade_adds() {
    let keys = Keys::new();
    keys.keygen("release");
    let old = keys.sign(
        outpost_artifacts::COLLECTOR,
        Path::new(outpost_artifacts::COLLECTOR_MANIFEST),
        &["release"],
        "old.wasm",
    );
    let text = std::fs::read_to_string(outpost_artifacts::COLLECTOR_MANIFEST).unwrap();
    let mut manifest = Manifest::from_toml(&text).unwrap();
    manifest.version = "0.2.0".into();
    manifest
        .capabilities
        .endpoints
        .push("api.vendor.example:443".into());
    manifest.capabilities.directories.push("qc-results".into());
    let wider = keys.path("wider.toml");
    std::fs::write(&wider, toml::to_string(&manifest).unwrap()).unwrap();
    let new = keys.sign(
        outpost_artifacts::COLLECTOR,
        &wider,
        &["release"],
        "new.wasm",
    );

    let run = outpost([
        "inspect".as_ref(),
        "--diff".as_ref(),
        old.as_os_str(),
        new.as_os_str(),
    ])
    .ok();
    for want in [
        "collector 0.1.0",
        "collector 0.2.0",
        "+ directory qc-results",
        "+ endpoint api.vendor.example:443",
        "asks for more",
    ] {
        assert!(run.stdout.contains(want), "{want:?} not in\n{}", run.stdout);
    }

    let json = outpost([
        "inspect".as_ref(),
        "--diff".as_ref(),
        old.as_os_str(),
        new.as_os_str(),
        "--json".as_ref(),
    ])
    .ok()
    .json();
    assert_eq!(
        json["added"],
        serde_json::json!(["directory qc-results", "endpoint api.vendor.example:443"])
    );
    assert_eq!(json["removed"], serde_json::json!([]));
    assert_eq!(json["imports_added"], serde_json::json!([]));
    assert_eq!(json["asks_for_more"], true);
}

#[test]
fn inspect_reads_a_component_the_engine_would_not_compile() {
    // Two memories in one core module: valid WebAssembly, but the host's
    // engine refuses to compile it. inspect compiles nothing, so it shows
    // the file anyway.
    let run = outpost(["inspect", outpost_artifacts::FIXTURE_TWO_MEMORIES_SIGNED]).ok();
    for want in ["fixture-two-memories 0.1.0", "outpost:agent/collect@0.3.0"] {
        assert!(run.stdout.contains(want), "{want:?} not in\n{}", run.stdout);
    }
}

#[test]
fn inspect_refuses_what_is_not_a_valid_component_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let core = dir.path().join("core.wasm");
    // A core module (version 1), not a component.
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    outpost(["inspect".as_ref(), core.as_os_str()]).refused("not a WebAssembly component");
    let broken = dir.path().join("broken.wasm");
    let mut bytes = std::fs::read(outpost_artifacts::NOTIFIER).unwrap();
    bytes.truncate(bytes.len() / 2);
    std::fs::write(&broken, &bytes).unwrap();
    outpost(["inspect".as_ref(), broken.as_os_str()]).refused("not a valid component");
}
