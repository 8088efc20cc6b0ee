//! What is refused at load time, and that each refusal names what was wrong.

use super::harness::{DEFAULT_LIMITS, env, manifest, permissive};
use outpost_host::grants::{Grant, Policy};
use outpost_host::runtime::LoadError;

#[test]
fn a_component_importing_outside_its_world_is_refused_naming_the_import() {
    let e = env();
    let m = manifest("foreign", "notifier", "notify = true", DEFAULT_LIMITS);
    let verified = e.verified(outpost_artifacts::FIXTURE_FOREIGN_IMPORT, &m);
    let grant = Grant::new(&verified, &[&permissive(&m)], &e.dirs()).unwrap();
    let err = e.runtime.load(&verified, grant).err().expect("refused");
    let text = err.to_string();
    assert!(matches!(err, LoadError::Imports(_)), "{text}");
    assert!(
        text.contains("`outpost:agent/uplink@0.3.0` (not in the notifier world)"),
        "{text}"
    );
}

#[test]
fn an_import_the_grant_does_not_cover_is_refused() {
    let e = env();
    // The collector imports uplink; without a granted stream the import is refused.
    let m = manifest(
        "collector",
        "collector",
        "directories = [\"instrument-logs\"]\nstate-quota-bytes = 1024",
        DEFAULT_LIMITS,
    );
    let verified = e.verified(outpost_artifacts::COLLECTOR, &m);
    let grant = Grant::new(&verified, &[&permissive(&m)], &e.dirs()).unwrap();
    let err = e
        .runtime
        .load(&verified, grant)
        .err()
        .expect("refused")
        .to_string();
    assert!(
        err.contains("`outpost:agent/uplink@0.3.0` (no uplink stream is granted)"),
        "{err}"
    );
}

#[test]
fn a_manifest_asking_for_a_forbidden_endpoint_is_refused_naming_it() {
    let e = env();
    let m = manifest(
        "greedy",
        "collector",
        "endpoints = [\"api.vendor.example:443\", \"evil.example:443\"]\nuplink-streams = [\"qc\"]",
        DEFAULT_LIMITS,
    );
    let policy = Policy {
        endpoints: vec!["*.vendor.example:443".into()],
        ..Policy::default()
    };
    let verified = e.verified(outpost_artifacts::FIXTURE_ESCAPES, &m);
    let err = Grant::new(&verified, &[&policy], &e.dirs())
        .unwrap_err()
        .to_string();
    assert!(err.contains("endpoint `evil.example:443`"), "{err}");
    assert!(err.contains("uplink stream `qc`"), "{err}");
    assert!(
        !err.contains("api.vendor.example"),
        "allowed endpoint not reported: {err}"
    );
}

#[test]
fn a_signed_file_that_is_not_a_component_for_this_engine_is_refused() {
    let e = env();
    // Well-framed sections (so it signs and verifies) around a body the
    // compiler rejects: a core-module section holding garbage.
    let m = manifest("bogus", "collector", "", DEFAULT_LIMITS);
    let mut body = b"\0asm\x0d\0\x01\0".to_vec();
    body.extend_from_slice(&[0x01, 0x03, 0xff, 0xff, 0xff]);
    let signed = outpost_signing::sign::sign(&body, &m, &[&e.key]).unwrap();
    let expect = outpost_signing::verify::Expectation {
        name: "bogus",
        highest_installed: None,
        now: std::time::SystemTime::now(),
    };
    let verified = outpost_signing::verify::verify(signed, &e.trust, &expect).unwrap();
    let grant = Grant::new(&verified, &[&permissive(&m)], &e.dirs()).unwrap();
    let err = e.runtime.load(&verified, grant).err().unwrap().to_string();
    assert!(
        err.contains("module `bogus` is not a valid component"),
        "{err}"
    );
}

#[test]
fn a_component_without_its_worlds_export_is_refused() {
    let e = env();
    // The session policy exports `policy`, not `collect`.
    let m = manifest("session-policy", "collector", "", DEFAULT_LIMITS);
    let verified = e.verified(outpost_artifacts::SESSION_POLICY, &m);
    let grant = Grant::new(&verified, &[&permissive(&m)], &e.dirs()).unwrap();
    let err = e.runtime.load(&verified, grant).err().unwrap().to_string();
    assert!(
        err.contains("cannot be linked as a collector module"),
        "{err}"
    );
}

#[test]
fn interfaces_read_without_compiling_are_those_of_the_compiled_component() {
    use outpost_host::runtime::{component_interfaces, interfaces};
    let e = env();
    for a in outpost_artifacts::ALL
        .iter()
        .filter(|a| a.name != "fixture-two-memories")
    {
        let bytes = std::fs::read(a.wasm).unwrap();
        let read = interfaces::read(&bytes).unwrap();
        // Test only: compile unverified bytes to compare with the engine's view.
        let c = wasmtime::component::Component::new(e.runtime.engine(), &bytes).unwrap();
        let (mut imports, mut exports) = component_interfaces(e.runtime.engine(), &c);
        let (mut read_imports, mut read_exports) = (read.imports, read.exports);
        for v in [
            &mut imports,
            &mut exports,
            &mut read_imports,
            &mut read_exports,
        ] {
            v.sort();
        }
        assert_eq!(read_imports, imports, "{}", a.name);
        assert_eq!(read_exports, exports, "{}", a.name);
        assert!(!read_exports.is_empty(), "{}", a.name);
    }
}
