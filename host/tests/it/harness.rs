//! Shared test harness: one tokio runtime, one engine, components compiled
//! once per test binary.

use outpost_host::events::{Events, HostEvent};
use outpost_host::grants::{Grant, Policy};
use outpost_host::runtime::{LoadedModule, Runtime, Services};
use outpost_host::store::Db;
use outpost_host::store::state::ModuleState;
use outpost_signing::Manifest;
use outpost_signing::SigningKey;
use outpost_signing::trust::{TrustStore, TrustedKey};
use outpost_signing::verify::{Expectation, VerifiedModule, verify};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

pub struct Env {
    pub rt: tokio::runtime::Runtime,
    pub runtime: Arc<Runtime>,
    pub events: Events,
    pub db: Db,
    /// Holds `instrument-logs/` (granted) and `secret.txt` (beside it, not granted).
    pub root: PathBuf,
    pub ca: TestCa,
    /// The publisher key tests sign with, trusted by `trust`.
    pub key: SigningKey,
    pub trust: TrustStore,
    raw: Mutex<HashMap<&'static str, Arc<Vec<u8>>>>,
    _dir: tempfile::TempDir,
}

pub fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_owned();
        std::fs::create_dir_all(root.join("instrument-logs")).unwrap();
        std::fs::write(
            root.join("instrument-logs/sample.log"),
            "2026-11-01 10:00:00 INFO ready\n",
        )
        .unwrap();
        std::fs::write(root.join("secret.txt"), "not for modules").unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let ca = TestCa::new();
        let events = Events::default();
        let db = Db::open(&root.join("state")).unwrap();
        let tls = outpost_host::net::tls_config(&[ca.pem.clone().into_bytes()], true).unwrap();
        let services = Services::new(
            db.clone(),
            events.clone(),
            vec![outpost_host::config::Instrument {
                model: "XN-550".into(),
                serial: "SN-TEST-1".into(),
            }],
            tls,
        );
        services
            .uplink
            .set_identity(Some(outpost_host::uplink::identity::Identity {
                device_id: outpost_protocol::DeviceId::parse("test-device").unwrap(),
                key: outpost_protocol::DeviceKey::generate(),
                server: "https://127.0.0.1".into(),
                enrolled_at: 0,
            }));
        let runtime = {
            let _g = rt.enter();
            Arc::new(Runtime::new(services, 256, None).unwrap())
        };
        let key = outpost_signing::generate_signing_key();
        let mut trust = TrustStore::new();
        trust
            .add_key(TrustedKey::new("test-publisher", key.verifying_key()))
            .unwrap();
        Env {
            rt,
            runtime,
            events,
            db,
            root,
            ca,
            key,
            trust,
            raw: Mutex::default(),
            _dir: dir,
        }
    })
}

impl Env {
    /// The unsigned component at `path` (read once per test binary).
    pub fn raw(&self, path: &'static str) -> Arc<Vec<u8>> {
        let mut c = self.raw.lock().unwrap();
        c.entry(path)
            .or_insert_with(|| Arc::new(std::fs::read(path).unwrap()))
            .clone()
    }

    /// `wasm` signed by the test publisher over `manifest`.
    pub fn signed(&self, wasm: &'static str, manifest: &Manifest) -> Vec<u8> {
        outpost_signing::sign::sign(&self.raw(wasm), manifest, &[&self.key]).unwrap()
    }

    /// `wasm` signed over `manifest` and verified, as the host's loader sees it.
    pub fn verified(&self, wasm: &'static str, manifest: &Manifest) -> VerifiedModule {
        let expect = Expectation {
            name: &manifest.name,
            highest_installed: None,
            now: std::time::SystemTime::now(),
        };
        verify(self.signed(wasm, manifest), &self.trust, &expect).unwrap()
    }

    pub fn dirs(&self) -> BTreeMap<String, PathBuf> {
        [(
            "instrument-logs".to_string(),
            self.root.join("instrument-logs"),
        )]
        .into()
    }

    /// Load `wasm` with a manifest built from `caps`/`limits` TOML, under a
    /// policy that allows exactly what the manifest asks.
    pub fn load(
        &self,
        wasm: &'static str,
        name: &str,
        world: &str,
        caps: &str,
        limits: &str,
    ) -> Arc<LoadedModule> {
        self.load_with_dirs(wasm, &manifest(name, world, caps, limits), &self.dirs())
    }

    /// Load `wasm` signed over `manifest`, with logical directories `dirs`.
    pub fn load_with_dirs(
        &self,
        wasm: &'static str,
        manifest: &Manifest,
        dirs: &BTreeMap<String, PathBuf>,
    ) -> Arc<LoadedModule> {
        let verified = self.verified(wasm, manifest);
        let grant = Grant::new(&verified, &[&permissive(manifest)], dirs).unwrap();
        Arc::new(self.runtime.load(&verified, grant).unwrap())
    }

    /// The escapes fixture under `name`, set to try `escape` with `arg`.
    pub fn escape(
        &self,
        name: &str,
        caps: &str,
        limits: &str,
        escape: &str,
        arg: &str,
    ) -> Arc<LoadedModule> {
        // The fixture imports wasi:http, which links only with an endpoint grant.
        let endpoints = if caps.contains("endpoints") {
            ""
        } else {
            "endpoints = [\"unused.invalid:443\"]\n"
        };
        let caps = format!("state-quota-bytes = 65536\n{endpoints}{caps}");
        let m = self.load(
            outpost_artifacts::FIXTURE_ESCAPES,
            name,
            "collector",
            &caps,
            limits,
        );
        let st = ModuleState::new(self.db.clone(), name, 65536);
        st.set("escape", escape.as_bytes()).unwrap();
        st.set("arg", arg.as_bytes()).unwrap();
        m
    }

    /// The escapes fixture under `name` with logical directories `dirs`,
    /// set to try `escape` with `arg`. (Only the Unix FIFO tests use it.)
    #[cfg(unix)]
    pub fn escape_in(
        &self,
        name: &str,
        dirs: &BTreeMap<String, PathBuf>,
        limits: &str,
        escape: &str,
        arg: &str,
    ) -> Arc<LoadedModule> {
        let names: Vec<String> = dirs.keys().map(|k| format!("{k:?}")).collect();
        let caps = format!(
            "state-quota-bytes = 65536\nendpoints = [\"unused.invalid:443\"]\ndirectories = [{}]\n",
            names.join(", ")
        );
        let m = self.load_with_dirs(
            outpost_artifacts::FIXTURE_ESCAPES,
            &manifest(name, "collector", &caps, limits),
            dirs,
        );
        let st = ModuleState::new(self.db.clone(), name, 65536);
        st.set("escape", escape.as_bytes()).unwrap();
        st.set("arg", arg.as_bytes()).unwrap();
        m
    }

    /// Events about `module` published from now on.
    pub fn watch(&self, module: &str) -> EventWatch {
        EventWatch {
            rx: self.events.subscribe(),
            module: module.to_owned(),
        }
    }
}

pub struct EventWatch {
    rx: tokio::sync::broadcast::Receiver<HostEvent>,
    module: String,
}

impl EventWatch {
    /// Every event about the module received so far.
    pub fn drain(&mut self) -> Vec<HostEvent> {
        std::iter::from_fn(|| {
            loop {
                match self.rx.try_recv() {
                    Ok(e) if e.module() == Some(self.module.as_str()) => return Some(e),
                    Ok(_) => continue,
                    Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) => continue,
                    Err(_) => return None,
                }
            }
        })
        .collect()
    }
}

pub fn manifest(name: &str, world: &str, caps: &str, limits: &str) -> Manifest {
    Manifest::from_toml(&format!(
        "name = \"{name}\"\nversion = \"0.1.0\"\nworld = \"{world}\"\n[capabilities]\n{caps}\n[limits]\n{limits}\n"
    ))
    .unwrap_or_else(|e| panic!("test manifest: {e}"))
}

/// A policy allowing exactly what `m` asks (limits up to 256 MiB / 60 s).
pub fn permissive(m: &Manifest) -> Policy {
    let c = &m.capabilities;
    Policy {
        directories: c.directories.clone(),
        endpoints: c.endpoints.clone(),
        uplink_streams: c.uplink_streams.clone(),
        notify: c.notify,
        max_state_quota_bytes: c.state_quota_bytes,
        permissions: c.permissions.clone(),
        max_memory_mib: 256,
        max_cpu_ms_per_call: 60_000,
        max_wall_ms_per_call: 60_000,
    }
}

pub const DEFAULT_LIMITS: &str =
    "memory-mib = 64\ncpu-ms-per-call = 5000\nwall-ms-per-call = 20000";

/// A test certificate authority and leaf certificates it issues.
pub struct TestCa {
    pub pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl TestCa {
    pub fn new() -> TestCa {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "outpost test CA");
        let cert = params.self_signed(&key).unwrap();
        TestCa {
            pem: cert.pem(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// A leaf for `names` (DNS names or IP literals): (cert chain DER, key DER).
    pub fn leaf(
        &self,
        names: &[&str],
    ) -> (
        Vec<rustls::pki_types::CertificateDer<'static>>,
        rustls::pki_types::PrivateKeyDer<'static>,
    ) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
    }
}

/// `p` as the inside of a TOML basic string.
pub fn path(p: &Path) -> String {
    // Windows paths hold backslashes, which a TOML basic string escapes.
    p.to_string_lossy().replace('\\', "\\\\")
}

/// The plaintext JSON of spooled batch `seq` (opened with the test device key).
pub fn batch_json(seq: i64) -> String {
    let body = env().runtime.services().uplink.read_back(seq).unwrap();
    serde_json::to_string(&body).unwrap()
}

/// An enrolled-looking device identity in `state_dir` (no cloud involved), so
/// an agent built on it seals and spools; pair it with an `[uplink] endpoint`
/// on a closed loopback port (see [`OFFLINE_UPLINK`]).
pub fn offline_identity(state_dir: &std::path::Path) {
    outpost_host::uplink::identity::Identity {
        device_id: outpost_protocol::DeviceId::parse("offline-device").unwrap(),
        key: outpost_protocol::DeviceKey::generate(),
        server: "https://127.0.0.1:9".into(),
        enrolled_at: 0,
    }
    .save(state_dir)
    .unwrap();
}

/// Config section for agents that must not reach any network: the sender
/// only ever tries a closed loopback port.
pub const OFFLINE_UPLINK: &str = "[uplink]\nendpoint = \"https://127.0.0.1:9\"\n";

/// A `Write` into a shared buffer: the host log as a test reads it.
#[derive(Clone)]
pub struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// The host log's lines so far that mention `module`.
    pub fn lines_of(&self, module: &str) -> Vec<String> {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .filter(|l| l.contains(module))
            .map(str::to_owned)
            .collect()
    }

    /// The whole host log so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// This test binary's host log. Module stdout and stderr reach it from
/// wasmtime-wasi's writer tasks on the runtime's worker threads, so the
/// subscriber is the process-wide default (no other test sets one).
pub fn host_log() -> &'static Captured {
    static LOG: std::sync::OnceLock<Captured> = std::sync::OnceLock::new();
    LOG.get_or_init(|| {
        let captured = Captured(Default::default());
        let writer = captured.clone();
        // The filter `outpost` uses with OUTPOST_LOG=debug.
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_env_filter(outpost_host::cli::log_filter("debug"))
            .finish();
        tracing::subscriber::set_global_default(subscriber)
            .expect("no other test sets a global subscriber");
        captured
    })
}
