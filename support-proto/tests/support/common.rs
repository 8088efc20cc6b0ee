//! The parts every test uses: a test PKI, an enrolled device in a real cloud
//! store, the real relay, a test broker, and helpers to run both sides.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use outpost_cloud::relay::{FrameTap, RelayConfig, RelayLimits, RunningRelay};
use outpost_cloud::{NewDevice, Relay, Store, TestPki};
use outpost_protocol::{DeviceId, DeviceKey};
use outpost_support_proto::channel::EngineerAuth;
use outpost_support_proto::files::{FileAudit, FileBackend};
use outpost_support_proto::pc::{Backends, PcConfig, PcError, SessionReport};
use outpost_support_proto::relay_wire::{RelayTarget, client_tls};
use outpost_support_proto::{
    Authorizer, ConnectAttempt, Grant, Permission, Refusal, RefusalCode, challenge_message,
};
use rand_core::{OsRng, RngCore};
use tokio::sync::oneshot;

pub const PASSWORD: &str = "K7QX-M3PW-9TRV";

/// A stand-in for the host's broker: a fixed password, credentials signed by
/// an authority key made in the test (authority signature ‖ engineer public
/// key ‖ engineer name), and the permissions "the person" approves.
pub struct TestAuthorizer {
    pub authority: VerifyingKey,
    pub approve: Vec<Permission>,
    pub challenges: Mutex<HashMap<String, [u8; 32]>>,
    pub attempts: Mutex<Vec<String>>,
}

impl TestAuthorizer {
    pub fn new(authority: VerifyingKey, approve: &[Permission]) -> Arc<Self> {
        Arc::new(TestAuthorizer {
            authority,
            approve: approve.to_vec(),
            challenges: Mutex::new(HashMap::new()),
            attempts: Mutex::new(Vec::new()),
        })
    }
}

#[async_trait::async_trait]
impl Authorizer for TestAuthorizer {
    fn challenge(&self, session_id: &str) -> Result<[u8; 32], Refusal> {
        let mut c = [0u8; 32];
        OsRng.fill_bytes(&mut c);
        self.challenges
            .lock()
            .unwrap()
            .insert(session_id.to_owned(), c);
        Ok(c)
    }

    async fn connect(&self, a: ConnectAttempt) -> Result<Grant, Refusal> {
        self.attempts.lock().unwrap().push(a.connection.clone());
        let challenge = self
            .challenges
            .lock()
            .unwrap()
            .remove(&a.session_id)
            .ok_or_else(|| Refusal::new(RefusalCode::UnknownSession, "no challenge"))?;
        if a.password != PASSWORD {
            return Err(Refusal::new(RefusalCode::BadPassword, "wrong password"));
        }
        let bad = || Refusal::new(RefusalCode::BadCredential, "credential refused");
        if a.credential.len() < 96 {
            return Err(bad());
        }
        let auth_sig = Signature::from_bytes(&a.credential[..64].try_into().unwrap());
        self.authority
            .verify(&a.credential[64..], &auth_sig)
            .map_err(|_| bad())?;
        let eng = VerifyingKey::from_bytes(&a.credential[64..96].try_into().unwrap())
            .map_err(|_| bad())?;
        let sig = Signature::from_slice(&a.challenge_signature).map_err(|_| bad())?;
        eng.verify_strict(
            &challenge_message(&a.session_id, &challenge, &a.channel_binding),
            &sig,
        )
        .map_err(|_| bad())?;
        Ok(Grant {
            permissions: self.approve.clone(),
            engineer: String::from_utf8_lossy(&a.credential[96..]).into_owned(),
            idle_timeout: Duration::from_secs(60),
            total_timeout: Duration::from_secs(600),
        })
    }
}

/// A staff credential for `name` signed by `authority`, and its key.
pub fn credential(authority: &SigningKey, name: &str) -> (Vec<u8>, SigningKey) {
    let key = SigningKey::generate(&mut OsRng);
    let mut body = key.verifying_key().to_bytes().to_vec();
    body.extend_from_slice(name.as_bytes());
    let mut cred = authority.sign(&body).to_bytes().to_vec();
    cred.extend_from_slice(&body);
    (cred, key)
}

/// What a tap saw of the forwarded frames.
#[derive(Default)]
pub struct TapLog {
    pub bytes: AtomicU64,
    pub leaked: AtomicBool,
    pub needles: Mutex<Vec<Vec<u8>>>,
}

impl TapLog {
    pub fn tap(self: &Arc<Self>) -> FrameTap {
        let me = self.clone();
        Arc::new(move |frame: &[u8]| {
            me.bytes.fetch_add(frame.len() as u64, Ordering::Relaxed);
            for n in me.needles.lock().unwrap().iter() {
                if memchr::memmem::find(frame, n).is_some() {
                    me.leaked.store(true, Ordering::Relaxed);
                }
            }
        })
    }
}

pub struct World {
    pub _dir: tempfile::TempDir,
    pub pki: TestPki,
    pub relay: RunningRelay,
    pub target: RelayTarget,
    pub device_id: DeviceId,
    pub relay_key: DeviceKey,
    pub device_key: SigningKey,
    pub authority: SigningKey,
    pub tap: Arc<TapLog>,
    pub folder: PathBuf,
    pub audit: Arc<Mutex<Vec<FileAudit>>>,
}

impl World {
    pub async fn new() -> World {
        Self::with_limits(RelayLimits::default()).await
    }

    pub async fn with_limits(limits: RelayLimits) -> World {
        let dir = tempfile::tempdir().unwrap();
        let pki = TestPki::generate(&["localhost", "127.0.0.1"]).unwrap();
        let store = Store::open(&dir.path().join("cloud")).unwrap();
        let relay_key = DeviceKey::generate();
        let device_id = store
            .enroll(&NewDevice {
                email: "lab@example.org".into(),
                name: "Lab".into(),
                instrument_model: "XR-1".into(),
                instrument_id: "i-1".into(),
                serial: "S-1".into(),
                device_key: relay_key.clone(),
            })
            .unwrap();
        let tap = Arc::new(TapLog::default());
        let relay = Relay::start(RelayConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            tls: outpost_cloud::tls_config(&pki.server_cert_pem, &pki.server_key_pem).unwrap(),
            store,
            limits,
            tap: Some(tap.tap()),
        })
        .await
        .unwrap();
        let target = RelayTarget::new(
            relay.addr().to_string(),
            "localhost",
            client_tls(&pki.ca_cert_pem).unwrap(),
        )
        .unwrap();
        let folder = dir.path().join("granted");
        std::fs::create_dir_all(&folder).unwrap();
        World {
            _dir: dir,
            pki,
            relay,
            target,
            device_id,
            relay_key,
            device_key: SigningKey::generate(&mut OsRng),
            authority: SigningKey::generate(&mut OsRng),
            tap,
            folder,
            audit: Arc::new(Mutex::new(Vec::new())),
        }
    }

    pub fn scratch(&self) -> PathBuf {
        let p = self._dir.path().join("engineer");
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    pub fn pc_config(&self, session: &str) -> PcConfig {
        PcConfig {
            relay: self.target.clone(),
            device_id: self.device_id.clone(),
            relay_key: self.relay_key.clone(),
            device_key: self.device_key.clone(),
            session_id: session.to_owned(),
        }
    }

    pub fn backends(&self) -> Backends {
        let audit = self.audit.clone();
        Backends {
            vnc: None,
            vnc_password: None,
            files: Some(FileBackend::new(
                &self.folder,
                Arc::new(move |a: &FileAudit| audit.lock().unwrap().push(a.clone())),
            )),
            events: None,
            screen: None,
        }
    }

    pub fn engineer_auth(&self, password: &str, requested: &[Permission]) -> EngineerAuth {
        let (credential, key) = credential(&self.authority, "eng-anna");
        EngineerAuth {
            credential,
            key,
            password: zeroize::Zeroizing::new(password.to_owned()),
            requested: requested.to_vec(),
        }
    }

    /// Start the PC side of `session` with `authorizer` and wait until the
    /// relay holds its registration. `stop` ends it.
    pub async fn start_pc(
        &self,
        session: &str,
        authorizer: Arc<dyn Authorizer>,
        backends: Backends,
    ) -> PcHandle {
        let before = self.relay.stats().registered.load(Ordering::Relaxed);
        let cfg = self.pc_config(session);
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            outpost_support_proto::pc::serve(&cfg, authorizer, backends, async {
                let _ = stop_rx.await;
            })
            .await
        });
        wait_for(|| self.relay.stats().registered.load(Ordering::Relaxed) > before).await;
        PcHandle {
            task,
            stop: Some(stop_tx),
        }
    }
}

pub struct PcHandle {
    pub task: tokio::task::JoinHandle<Result<SessionReport, PcError>>,
    pub stop: Option<oneshot::Sender<()>>,
}

impl PcHandle {
    pub async fn result(self) -> Result<SessionReport, PcError> {
        tokio::time::timeout(Duration::from_secs(60), self.task)
            .await
            .expect("the PC side ended")
            .unwrap()
    }
}

/// Wait (bounded) until `cond` holds: a condition, not a fixed sleep.
pub async fn wait_for(cond: impl Fn() -> bool) {
    let until = tokio::time::Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(tokio::time::Instant::now() < until, "condition never held");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    OsRng.fill_bytes(&mut v);
    v
}

pub fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}
