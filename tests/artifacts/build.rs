//! Builds the Wasm guest components with the workspace's own cargo, into a
//! target directory of their own under `OUT_DIR` (building into the outer
//! target directory would deadlock on its lock), and exports their paths to the
//! library as `OUTPOST_WASM_*` / `OUTPOST_MANIFEST_*` environment variables.
//!
//! Then it signs every guest over its `manifest.toml` with a *development*
//! key kept at `$OUT_DIR/dev-signing.key` (created once per build directory,
//! mode 0600, reused afterwards) and exports the signed files as
//! `OUTPOST_SIGNED_*`, the key file as `OUTPOST_DEV_SIGNING_KEY` and its public
//! half as `OUTPOST_DEV_PUBLIC_KEY_HEX` / `OUTPOST_DEV_KEY_ID`. The key never
//! leaves `OUT_DIR`; the host refuses it unless its `[trust]` table says
//! `allow-development-key = true`. Never sign a release with it.

use std::env;
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use outpost_signing::{
    KeyError, Manifest, SigningKey, generate_signing_key, key_id, load_signing_key,
    public_key_to_hex, save_signing_key,
};

const GUEST_TARGET: &str = "wasm32-wasip2";
const GUEST_PROFILE: &str = "guest";

/// File name of the development signing key, in `OUT_DIR`.
const DEV_KEY_FILE: &str = "dev-signing.key";

/// The first 8 bytes of a WebAssembly *component* (magic, version 0x0d, layer 1).
const COMPONENT_HEADER: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];

/// (env suffix, package, crate directory relative to the workspace root)
const GUESTS: &[(&str, &str, &str)] = &[
    ("COLLECTOR", "outpost-collector", "modules/collector"),
    ("NOTIFIER", "outpost-notifier", "modules/notifier"),
    (
        "SESSION_POLICY",
        "outpost-session-policy",
        "modules/session-policy",
    ),
    (
        "FIXTURE_ESCAPES",
        "outpost-fixture-escapes",
        "tests/fixtures/escapes",
    ),
    (
        "FIXTURE_FOREIGN_IMPORT",
        "outpost-fixture-foreign-import",
        "tests/fixtures/foreign-import",
    ),
    (
        "FIXTURE_HOSTILE_NOTIFIER",
        "outpost-fixture-hostile-notifier",
        "tests/fixtures/hostile-notifier",
    ),
    (
        "FIXTURE_HOSTILE_POLICY",
        "outpost-fixture-hostile-policy",
        "tests/fixtures/hostile-policy",
    ),
];

/// Components written by hand in WebAssembly text: (env suffix, directory
/// holding `component.wat` and `manifest.toml`).
const WAT_GUESTS: &[(&str, &str)] = &[
    ("FIXTURE_MULTI_MEMORY", "tests/fixtures/multi-memory"),
    ("FIXTURE_TWO_MEMORIES", "tests/fixtures/two-memories"),
];

/// Sources whose change rebuilds the guests.
const WATCHED: &[&str] = &[
    "sdk",
    "collector-core/src",
    "collector-core/Cargo.toml",
    "modules",
    "tests/fixtures",
    "wit",
    "Cargo.toml",
    "Cargo.lock",
];

fn main() {
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let root = manifest_dir
        .join("../..")
        .canonicalize()
        .expect("while locating the workspace root");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());

    for watched in WATCHED {
        watch(&root.join(watched));
    }

    ensure_target(&rustc, &root);
    println!(
        "cargo:rustc-env=OUTPOST_WORKSPACE_ROOT={}",
        target_path(&root)
    );

    let target_dir = out_dir.join("guests");
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(&root)
        .arg("build")
        .args([
            "--profile",
            GUEST_PROFILE,
            "--target",
            GUEST_TARGET,
            "--locked",
        ])
        .arg("--target-dir")
        .arg(&target_dir);
    for (_, package, _) in GUESTS {
        cmd.args(["-p", package]);
    }
    scrub_env(&mut cmd);
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("while running {cmd:?}: {e}"));
    assert!(
        status.success(),
        "building the guest components failed ({status}): {cmd:?}"
    );

    let dev_key_path = out_dir.join(DEV_KEY_FILE);
    let dev_key = dev_signing_key(&dev_key_path);
    let dev_public = dev_key.verifying_key();
    println!(
        "cargo:rustc-env=OUTPOST_DEV_SIGNING_KEY={}",
        target_path(&dev_key_path)
    );
    println!(
        "cargo:rustc-env=OUTPOST_DEV_PUBLIC_KEY_HEX={}",
        public_key_to_hex(&dev_public)
    );
    println!("cargo:rustc-env=OUTPOST_DEV_KEY_ID={}", key_id(&dev_public));

    let wasm_dir = target_dir.join(GUEST_TARGET).join(GUEST_PROFILE);
    for (var, package, dir) in GUESTS {
        let wasm = wasm_dir.join(format!("{}.wasm", package.replace('-', "_")));
        let bytes =
            fs::read(&wasm).unwrap_or_else(|e| panic!("while reading {}: {e}", wasm.display()));
        assert!(
            bytes.starts_with(&COMPONENT_HEADER),
            "{} is not a WebAssembly component (header {:02x?})",
            wasm.display(),
            &bytes[..bytes.len().min(8)]
        );
        let manifest = root.join(dir).join("manifest.toml");
        assert!(manifest.is_file(), "missing {}", manifest.display());
        println!("cargo:rustc-env=OUTPOST_WASM_{var}={}", target_path(&wasm));
        println!(
            "cargo:rustc-env=OUTPOST_MANIFEST_{var}={}",
            target_path(&manifest)
        );
        let signed = wasm.with_extension("signed.wasm");
        sign_guest(&bytes, &wasm, &manifest, &dev_key, &signed);
        println!(
            "cargo:rustc-env=OUTPOST_SIGNED_{var}={}",
            target_path(&signed)
        );
    }

    let wat_dir = out_dir.join("wat-guests");
    fs::create_dir_all(&wat_dir)
        .unwrap_or_else(|e| panic!("while creating {}: {e}", wat_dir.display()));
    for (var, dir) in WAT_GUESTS {
        let source = root.join(dir).join("component.wat");
        let bytes = wat::parse_file(&source)
            .unwrap_or_else(|e| panic!("while parsing {}: {e}", source.display()));
        assert!(
            bytes.starts_with(&COMPONENT_HEADER),
            "{} is not a component",
            source.display()
        );
        let wasm = wat_dir.join(format!("{}.wasm", var.to_lowercase()));
        fs::write(&wasm, &bytes)
            .unwrap_or_else(|e| panic!("while writing {}: {e}", wasm.display()));
        let manifest = root.join(dir).join("manifest.toml");
        println!("cargo:rustc-env=OUTPOST_WASM_{var}={}", target_path(&wasm));
        println!(
            "cargo:rustc-env=OUTPOST_MANIFEST_{var}={}",
            target_path(&manifest)
        );
        let signed = wasm.with_extension("signed.wasm");
        sign_guest(&bytes, &wasm, &manifest, &dev_key, &signed);
        println!(
            "cargo:rustc-env=OUTPOST_SIGNED_{var}={}",
            target_path(&signed)
        );
    }
}

/// `path` (absolute, on the machine running this script) as the program
/// being built must spell it. The same path, except when a Unix machine
/// builds for Windows: those programs run under Wine, which shows the Unix
/// root as drive `Z:` (its default), while a bare `/work/...` would be
/// taken relative to whatever drive the current directory is on.
fn target_path(path: &Path) -> String {
    let text = path.display().to_string();
    let for_windows = env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "windows");
    if cfg!(unix) && for_windows {
        format!("Z:{}", text.replace('/', "\\"))
    } else {
        text
    }
}

/// The development key at `path`: loaded if the file exists, otherwise
/// generated and saved there (owner-only; `save_signing_key` never
/// overwrites).
fn dev_signing_key(path: &Path) -> SigningKey {
    if !path.exists() {
        let key = generate_signing_key();
        match save_signing_key(path, &key) {
            Ok(()) => return key,
            // Created by someone else in between: use theirs.
            Err(KeyError::Exists(_)) => {}
            Err(e) => panic!("while creating the development signing key: {e}"),
        }
    }
    load_signing_key(path).unwrap_or_else(|e| {
        panic!(
            "while loading the development signing key: {e}\n\
             (it is generated per build directory; delete {} to get a new one)",
            path.display()
        )
    })
}

/// Sign `component` (read from `wasm`) over the manifest at `manifest` with
/// `key` and write the result to `signed`, replacing any previous file.
fn sign_guest(component: &[u8], wasm: &Path, manifest: &Path, key: &SigningKey, signed: &Path) {
    let text = fs::read_to_string(manifest)
        .unwrap_or_else(|e| panic!("while reading {}: {e}", manifest.display()));
    let parsed = Manifest::from_toml(&text)
        .unwrap_or_else(|e| panic!("manifest {} is not valid: {e}", manifest.display()));
    let bytes = outpost_signing::sign::sign(component, &parsed, &[key]).unwrap_or_else(|e| {
        panic!(
            "while signing {} with manifest {}: {e}",
            wasm.display(),
            manifest.display()
        )
    });
    // Write beside and rename, so a reader never sees a half-written file.
    let partial = signed.with_extension("wasm.partial");
    fs::write(&partial, &bytes)
        .unwrap_or_else(|e| panic!("while writing {}: {e}", partial.display()));
    fs::rename(&partial, signed).unwrap_or_else(|e| {
        panic!(
            "while renaming {} to {}: {e}",
            partial.display(),
            signed.display()
        )
    });
}

/// Make sure the sysroot has the guest target; install it with rustup if not.
fn ensure_target(rustc: &OsString, root: &Path) {
    let output = Command::new(rustc)
        .current_dir(root)
        .args(["--print", "sysroot"])
        .output()
        .unwrap_or_else(|e| panic!("while running {rustc:?} --print sysroot: {e}"));
    let sysroot = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    if sysroot.join("lib/rustlib").join(GUEST_TARGET).is_dir() {
        return;
    }
    let install = format!("rustup target add {GUEST_TARGET}");
    println!("cargo:warning=the {GUEST_TARGET} target is missing; running `{install}`");
    let ok = Command::new("rustup")
        .current_dir(root)
        .args(["target", "add", GUEST_TARGET])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ok,
        "the {GUEST_TARGET} target is missing and could not be installed; run `{install}`"
    );
}

/// Remove the outer build's settings so that they do not leak into the guest
/// build (flags for the host target, the outer target directory, profile
/// overrides, wrappers such as clippy-driver).
fn scrub_env(cmd: &mut Command) {
    for (key, _) in env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        let drop = matches!(
            key,
            "CARGO_ENCODED_RUSTFLAGS"
                | "RUSTFLAGS"
                | "RUSTC_WRAPPER"
                | "RUSTC_WORKSPACE_WRAPPER"
                | "CARGO_TARGET_DIR"
        ) || key.starts_with("CARGO_BUILD_")
            || key.starts_with("CARGO_PROFILE_")
            || key.starts_with("CARGO_TARGET_");
        if drop {
            cmd.env_remove(key);
        }
    }
}

/// Print `rerun-if-changed` for `path` and, for a directory, every file and
/// directory below it (except build output).
fn watch(path: &Path) {
    if !path.exists() {
        return;
    }
    println!("cargo:rerun-if-changed={}", path.display());
    if !path.is_dir() {
        return;
    }
    let mut entries: Vec<_> = fs::read_dir(path)
        .unwrap_or_else(|e| panic!("while listing {}: {e}", path.display()))
        .filter_map(Result::ok)
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name();
        if name == "target" || name.to_string_lossy().starts_with('.') {
            continue;
        }
        watch(&entry.path());
    }
}
