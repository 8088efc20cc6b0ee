//! The update repository publisher (`outpost_cloud::repo`): keys, init,
//! add, publish, timestamp-only re-signing, and what tough's own client
//! makes of the result (loaded from disk with tough's `FilesystemTransport`).

use chrono::{Duration, Utc};
use outpost_cloud::repo::{self, Expiry, RoleKey};
use std::path::Path;

struct Keys {
    root: RoleKey,
    targets: RoleKey,
    snapshot: RoleKey,
    timestamp: RoleKey,
}

fn keys(dir: &Path) -> Keys {
    repo::keygen(dir).unwrap();
    let k = |r| repo::load_key(dir, r).unwrap();
    Keys {
        root: k("root"),
        targets: k("targets"),
        snapshot: k("snapshot"),
        timestamp: k("timestamp"),
    }
}

fn init(dir: &Path) -> Keys {
    let k = keys(&dir.join("keys"));
    repo::init(
        &dir.join("repo"),
        &k.root,
        &k.targets,
        &k.snapshot,
        &k.timestamp,
        Expiry::default(),
        Utc::now(),
    )
    .unwrap();
    k
}

/// A signed module file: an empty component with `name` and `version`.
fn module(dir: &Path, name: &str, version: &str) -> std::path::PathBuf {
    let m = outpost_signing::Manifest::from_toml(&format!(
        "name = \"{name}\"\nversion = \"{version}\"\nworld = \"collector\"\n[capabilities]\nendpoints = [\"api.vendor.example:443\"]\n"
    ))
    .unwrap();
    let key = outpost_signing::generate_signing_key();
    let bytes =
        outpost_signing::sign::sign(&outpost_signing::format::COMPONENT_HEADER, &m, &[&key])
            .unwrap();
    let p = dir.join(format!("{name}-{version}.signed.wasm"));
    std::fs::write(&p, bytes).unwrap();
    p
}

fn load(dir: &Path) -> tough::Repository {
    let base = url::Url::from_directory_path(dir.join("repo")).unwrap();
    let root = std::fs::read(dir.join("repo/metadata/1.root.json")).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(
        tough::RepositoryLoader::new(
            &root,
            base.join("metadata/").unwrap(),
            base.join("targets/").unwrap(),
        )
        .load(),
    )
    .unwrap()
}

#[test]
fn published_modules_load_with_tough_and_carry_our_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let k = init(dir.path());
    let f = module(dir.path(), "collector", "2.0.0");
    let added = repo::add(&dir.path().join("repo"), &f, &["XN-550".into()]).unwrap();
    assert_eq!(added.target, "collector-2.0.0.wasm");
    let p = repo::publish(
        &dir.path().join("repo"),
        &k.targets,
        &k.snapshot,
        &k.timestamp,
        Expiry::default(),
        Utc::now(),
    )
    .unwrap();
    assert_eq!(
        (p.targets_version, p.snapshot_version, p.timestamp_version),
        (2, 2, 2)
    );
    let r = load(dir.path());
    assert!(r.root().signed.consistent_snapshot);
    let (name, target) = r.all_targets().next().unwrap();
    assert_eq!(name.raw(), "collector-2.0.0.wasm");
    let custom: repo::ModuleTarget =
        serde_json::from_value(target.custom[repo::CUSTOM_KEY].clone()).unwrap();
    assert_eq!(custom.module, "collector");
    assert_eq!(custom.version, "2.0.0");
    assert_eq!(custom.models, ["XN-550"]);
    let m = outpost_signing::inspect_unverified(&std::fs::read(&f).unwrap())
        .unwrap()
        .manifest;
    assert_eq!(
        custom.capability_digest,
        outpost_signing::capability_digest(&m)
    );
    assert!(
        std::fs::read_dir(dir.path().join("repo/staging"))
            .unwrap()
            .next()
            .is_none(),
        "staging is emptied by publish"
    );
    // Every expiry in the TUF form `YYYY-MM-DDTHH:MM:SSZ` (python-tuf, for
    // one, refuses a fraction of a second).
    for e in std::fs::read_dir(dir.path().join("repo/metadata")).unwrap() {
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(e.unwrap().path()).unwrap()).unwrap();
        let exp = v["signed"]["expires"].as_str().unwrap();
        assert!(
            exp.len() == 20
                && exp.ends_with('Z')
                && chrono::NaiveDateTime::parse_from_str(exp, "%Y-%m-%dT%H:%M:%SZ").is_ok(),
            "{exp}"
        );
    }
    // The same version again is refused: published versions are immutable.
    let err = repo::add(&dir.path().join("repo"), &f, &[]).unwrap_err();
    assert!(err.to_string().contains("already published"), "{err}");
}

#[test]
fn timestamp_only_needs_only_the_timestamp_key_and_keeps_the_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let k = init(dir.path());
    let before = load(dir.path());
    let p = repo::publish_timestamp(
        &dir.path().join("repo"),
        &k.timestamp,
        Expiry {
            timestamp: Duration::hours(2),
            ..Expiry::default()
        },
        Utc::now(),
    )
    .unwrap();
    assert_eq!(p.timestamp_version, 2);
    let after = load(dir.path());
    assert_eq!(after.timestamp().signed.version.get(), 2);
    assert_eq!(
        after.snapshot().signed.version,
        before.snapshot().signed.version
    );
    assert!(after.timestamp().signed.expires < Utc::now() + Duration::hours(3));
    // With another role's key the publisher refuses to sign a timestamp.
    repo::publish_timestamp(
        &dir.path().join("repo"),
        &k.snapshot,
        Expiry::default(),
        Utc::now(),
    )
    .unwrap_err();
}

#[test]
fn keys_are_never_overwritten_and_modules_must_be_signed() {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path());
    let err = repo::keygen(&dir.path().join("keys")).unwrap_err();
    assert!(err.to_string().contains("existing file is kept"), "{err}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("keys/root.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "role keys are private");
    }
    let plain = dir.path().join("plain.wasm");
    std::fs::write(&plain, outpost_signing::format::COMPONENT_HEADER).unwrap();
    let err = repo::add(&dir.path().join("repo"), &plain, &[]).unwrap_err();
    assert!(
        err.to_string().contains("not a signed outpost module"),
        "{err}"
    );
    // A second init over the same repository is refused.
    let k = keys(&dir.path().join("keys2"));
    let err = repo::init(
        &dir.path().join("repo"),
        &k.root,
        &k.targets,
        &k.snapshot,
        &k.timestamp,
        Expiry::default(),
        Utc::now(),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("already holds a repository"),
        "{err}"
    );
}
