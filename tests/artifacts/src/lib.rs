//! Paths of the Wasm guest components built for tests, and of their manifests.
//!
//! `build.rs` builds every guest with `cargo build --profile guest --target
//! wasm32-wasip2 --locked` into its own target directory under `OUT_DIR` and
//! checks that each output is a component. Depend on this crate (as a
//! dev-dependency) to get absolute paths that are valid for the current build.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

/// The collector module component.
pub const COLLECTOR: &str = env!("OUTPOST_WASM_COLLECTOR");
/// The notifier module component.
pub const NOTIFIER: &str = env!("OUTPOST_WASM_NOTIFIER");
/// The session-policy module component.
pub const SESSION_POLICY: &str = env!("OUTPOST_WASM_SESSION_POLICY");
/// The adversarial fixture: tries the escape named by its state key `escape`.
pub const FIXTURE_ESCAPES: &str = env!("OUTPOST_WASM_FIXTURE_ESCAPES");
/// The fixture that exports `notify-handler` but imports `uplink`.
pub const FIXTURE_FOREIGN_IMPORT: &str = env!("OUTPOST_WASM_FIXTURE_FOREIGN_IMPORT");

/// `manifest.toml` of the collector module.
pub const COLLECTOR_MANIFEST: &str = env!("OUTPOST_MANIFEST_COLLECTOR");
/// `manifest.toml` of the notifier module.
pub const NOTIFIER_MANIFEST: &str = env!("OUTPOST_MANIFEST_NOTIFIER");
/// `manifest.toml` of the session-policy module.
pub const SESSION_POLICY_MANIFEST: &str = env!("OUTPOST_MANIFEST_SESSION_POLICY");
/// Default `manifest.toml` of the escapes fixture.
pub const FIXTURE_ESCAPES_MANIFEST: &str = env!("OUTPOST_MANIFEST_FIXTURE_ESCAPES");
/// `manifest.toml` of the foreign-import fixture (`world = "notifier"`).
pub const FIXTURE_FOREIGN_IMPORT_MANIFEST: &str = env!("OUTPOST_MANIFEST_FIXTURE_FOREIGN_IMPORT");

/// One built guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Artifact {
    /// The `name` in its manifest.
    pub name: &'static str,
    /// Absolute path of the component (`.wasm`).
    pub wasm: &'static str,
    /// Absolute path of its `manifest.toml`.
    pub manifest: &'static str,
}

/// Every built guest.
pub const ALL: &[Artifact] = &[
    Artifact {
        name: "collector",
        wasm: COLLECTOR,
        manifest: COLLECTOR_MANIFEST,
    },
    Artifact {
        name: "notifier",
        wasm: NOTIFIER,
        manifest: NOTIFIER_MANIFEST,
    },
    Artifact {
        name: "session-policy",
        wasm: SESSION_POLICY,
        manifest: SESSION_POLICY_MANIFEST,
    },
    Artifact {
        name: "fixture-escapes",
        wasm: FIXTURE_ESCAPES,
        manifest: FIXTURE_ESCAPES_MANIFEST,
    },
    Artifact {
        name: "fixture-foreign-import",
        wasm: FIXTURE_FOREIGN_IMPORT,
        manifest: FIXTURE_FOREIGN_IMPORT_MANIFEST,
    },
];

/// The guest whose manifest is named `name`.
pub fn by_name(name: &str) -> Option<&'static Artifact> {
    ALL.iter().find(|a| a.name == name)
}

/// Path of the manifest of the guest named `name`.
pub fn manifest(name: &str) -> Option<std::path::PathBuf> {
    by_name(name).map(|a| a.manifest.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_artifact_is_a_component_with_a_manifest() {
        for a in ALL {
            let bytes = std::fs::read(a.wasm).unwrap();
            assert_eq!(&bytes[..8], b"\0asm\x0d\x00\x01\x00", "{}", a.wasm);
            let manifest = std::fs::read_to_string(a.manifest).unwrap();
            assert!(
                manifest.contains(&format!("name = \"{}\"", a.name)),
                "{}",
                a.manifest
            );
        }
        assert_eq!(
            manifest("notifier").as_deref(),
            Some(std::path::Path::new(NOTIFIER_MANIFEST))
        );
        assert!(by_name("nope").is_none());
    }
}
