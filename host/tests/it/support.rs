//! Remote support, the PC's side (#16): the broker with the real
//! session-policy module, real SQLite, real Ed25519 credentials made in the
//! test, and an injected clock; the CLI and API through the real binary.

use super::harness::{env, path};
use Permission::{Control, FileTransfer, View};
use outpost_host::agent::Agent;
use outpost_host::config::Config;
use outpost_host::events::{Events, HostEvent};
use outpost_host::store::Db;
use outpost_host::supervisor::Supervisor;
use outpost_host::support::audit::{AuditChain, checkpoint_key};
use outpost_host::support::{
    Broker, ConnectAttempt, ManualClock, Permission, SessionGrant, SessionState, SupportError,
    SystemClock,
};
use outpost_signing::support::{CredentialClaims, issue_credential, sign_challenge};
use outpost_signing::{SigningKey, public_key_to_hex};
use std::sync::Arc;
use std::time::Duration;

/// A PC with the session-policy module (or none), trusting `authority`.
struct Desk {
    dir: tempfile::TempDir,
    config: Config,
    authority: SigningKey,
    engineer: SigningKey,
    clock: ManualClock,
    events: Events,
    supervisor: Arc<Supervisor>,
    broker: Arc<Broker>,
    agent: Agent,
}

const DEVICE_KEY: [u8; 32] = [5; 32];
/// The channel binding of the direct-API attempts (the Noise handshake hash
/// in the real channel).
const BINDING: [u8; 32] = [6; 32];

fn key(b: u8) -> SigningKey {
    SigningKey::from_bytes(&[b; 32])
}

struct Setup {
    phi: bool,
    policy: bool,
    /// The hostile-policy fixture instead of the session-policy module.
    hostile: bool,
    support: &'static str,
}

const DEFAULT: Setup = Setup {
    phi: false,
    policy: true,
    hostile: false,
    support: "",
};

/// Build inside the test runtime (the supervisor spawns its tasks there).
fn desk(s: Setup) -> Desk {
    let e = env();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("session-policy.wasm");
    let (wasm, manifest) = if s.hostile {
        (
            outpost_artifacts::FIXTURE_HOSTILE_POLICY,
            outpost_artifacts::FIXTURE_HOSTILE_POLICY_MANIFEST,
        )
    } else {
        (
            outpost_artifacts::SESSION_POLICY,
            outpost_artifacts::SESSION_POLICY_MANIFEST,
        )
    };
    let manifest =
        outpost_signing::Manifest::from_toml(&std::fs::read_to_string(manifest).unwrap()).unwrap();
    std::fs::write(&file, e.signed(wasm, &manifest)).unwrap();
    let authority = key(11);
    let module = if s.policy {
        format!(
            "[[module]]\nname = \"{}\"\nfile = \"{}\"\n",
            manifest.name,
            path(&file)
        )
    } else {
        String::new()
    };
    // A screen backend is configured (it is started only in the screen
    // tests): without one, view and control are not offered (the default
    // on Windows).
    let screen = if s.support.contains("screen-command") {
        ""
    } else {
        "screen-command = [\"vnc-server\", \"-rfbport\", \"{port}\", \"-passwdfile\", \"{passwdfile}\"]\n"
    };
    let text = format!(
        "state-dir = \"state\"\n[site]\nholds-patient-data = {}\n[policy]\nmax-state-quota-bytes = 1048576\npermissions = [\"view\", \"control\", \"file-transfer\"]\n[[trust.keys]]\nname = \"test-publisher\"\npublic-key = \"{}\"\n[support]\nregion = \"eu\"\nauthority-keys = [\"{}\"]\n{screen}{}\n{module}",
        s.phi,
        public_key_to_hex(&e.key.verifying_key()),
        public_key_to_hex(&authority.verifying_key()),
        s.support,
    );
    let config_path = dir.path().join("outpost.toml");
    std::fs::write(&config_path, text).unwrap();
    let config = Config::load(&config_path).unwrap();
    let events = Events::default();
    let agent = Agent::build(config.clone(), events.clone()).unwrap();
    assert!(agent.refused.is_empty(), "{:?}", agent.refused);
    let supervisor = Arc::new(Supervisor::start(&agent, events.clone()));
    let clock = ManualClock::at(outpost_host::support::Clock::now_ms(&SystemClock));
    let broker = Arc::new(
        Broker::new(
            &config,
            agent.runtime.services().db.clone(),
            supervisor.clone(),
            events.clone(),
            Arc::new(clock.clone()),
        )
        .unwrap()
        .with_checkpoint_key(checkpoint_key(&DEVICE_KEY)),
    );
    Desk {
        dir,
        config,
        authority,
        engineer: key(22),
        clock,
        events,
        supervisor,
        broker,
        agent,
    }
}

impl Desk {
    fn now_s(&self) -> i64 {
        outpost_host::support::Clock::now_ms(&self.clock) / 1000
    }

    /// A credential for `id` in `regions`, valid for an hour from now,
    /// signed by `authority`.
    fn credential(
        &self,
        authority: &SigningKey,
        id: &str,
        regions: &[&str],
        expires_in: i64,
    ) -> Vec<u8> {
        issue_credential(
            &CredentialClaims {
                engineer_id: id.into(),
                display_name: "Ada Engineer".into(),
                regions: regions.iter().map(|r| r.to_string()).collect(),
                certifications: vec!["privacy-training".into()],
                not_before: self.now_s() - 3600,
                expires: self.now_s() + expires_in,
                engineer_key: self.engineer.verifying_key(),
            },
            authority,
        )
        .unwrap()
    }

    fn good_credential(&self) -> Vec<u8> {
        self.credential(&self.authority, "eng-0042", &["eu"], 3600)
    }

    /// One attempt as the relay would make it: a challenge, signed by
    /// `signer`, then connect.
    async fn attempt_with(
        &self,
        id: &str,
        password: &str,
        credential: Vec<u8>,
        signer: &SigningKey,
        requested: &[Permission],
    ) -> Result<SessionGrant, SupportError> {
        let nonce = self.broker.challenge(id).unwrap_or([0; 32]);
        let sig = sign_challenge(signer, id, &nonce, &BINDING);
        self.broker
            .connect(ConnectAttempt {
                channel_binding: BINDING,
                session_id: id.into(),
                password: password.into(),
                credential,
                challenge_signature: sig.to_vec(),
                requested: requested.to_vec(),
                connection: "relay-conn-1".into(),
            })
            .await
    }

    async fn attempt(
        &self,
        id: &str,
        password: &str,
        requested: &[Permission],
    ) -> Result<SessionGrant, SupportError> {
        let engineer = self.engineer.clone();
        self.attempt_with(id, password, self.good_credential(), &engineer, requested)
            .await
    }

    fn request(&self) -> (String, String) {
        let n = self.broker.request("test").unwrap();
        assert_eq!(n.session.state, SessionState::Open);
        (n.session.id.clone(), n.password.to_string())
    }

    fn audit(&self) -> AuditChain {
        AuditChain::new(Db::open(&self.config.state_dir).unwrap())
    }

    fn kinds(&self, session: &str) -> Vec<String> {
        self.audit()
            .entries(Some(&session.replace('-', "")), 1000)
            .unwrap()
            .into_iter()
            .map(|e| e.kind)
            .collect()
    }

    /// Connect in the background; answer the approval prompt with `accept`
    /// once it is asked (None: never answer).
    async fn connect_and_answer(
        &self,
        id: &str,
        password: &str,
        requested: &[Permission],
        accept: Option<&[Permission]>,
    ) -> (Result<SessionGrant, SupportError>, Vec<String>) {
        let mut rx = self.events.subscribe();
        let (id2, pw2, req2) = (id.to_owned(), password.to_owned(), requested.to_vec());
        let broker = self.broker.clone();
        let cred = self.good_credential();
        let engineer = self.engineer.clone();
        let task = tokio::spawn(async move {
            let nonce = broker.challenge(&id2).unwrap();
            let sig = sign_challenge(&engineer, &id2, &nonce, &BINDING);
            broker
                .connect(ConnectAttempt {
                    channel_binding: BINDING,
                    session_id: id2,
                    password: pw2,
                    credential: cred,
                    challenge_signature: sig.to_vec(),
                    requested: req2,
                    connection: "relay-conn-2".into(),
                })
                .await
        });
        let mut offered = Vec::new();
        loop {
            match rx.recv().await.unwrap() {
                HostEvent::SupportApprovalNeeded {
                    session,
                    offered: o,
                    engineer,
                    display_name,
                    regions,
                } => {
                    assert_eq!(session, id);
                    assert_eq!(
                        (engineer.as_str(), display_name.as_str()),
                        ("eng-0042", "Ada Engineer")
                    );
                    assert_eq!(regions, vec!["eu".to_owned()]);
                    let v = self.broker.get(id).unwrap();
                    assert_eq!(v.state, SessionState::AwaitingApproval);
                    offered = o;
                    if let Some(accept) = accept {
                        self.broker.decide(id, accept, "test-person").unwrap();
                    }
                    break;
                }
                HostEvent::SupportRefused { .. } | HostEvent::SupportSessionEnded { .. } => break,
                _ => {}
            }
        }
        (task.await.unwrap(), offered)
    }
}

#[test]
fn support_grants_exactly_the_permissions_the_person_accepted() {
    env().rt.block_on(async {
        let d = desk(DEFAULT);
        let (id, pw) = d.request();
        assert!(pw.len() >= 10);
        let (grant, offered) = d
            .connect_and_answer(&id, &pw, &[View, Control, FileTransfer], Some(&[View]))
            .await;
        assert_eq!(offered, vec!["view", "control", "file-transfer"]);
        let grant = grant.unwrap();
        assert_eq!(grant.permissions, vec![View]);
        assert_eq!(grant.engineer, "eng-0042");
        assert_eq!(grant.session_id, id);
        // Using what was granted is recorded; anything else is refused.
        d.broker
            .use_permission(&id, View, serde_json::json!({ "backend": "vnc" }))
            .unwrap();
        assert!(matches!(
            d.broker.use_permission(&id, Control, serde_json::json!({})),
            Err(SupportError::NotPermitted { .. })
        ));
        let mut ended = d.broker.ended(&id).unwrap();
        // The same session id again, even with the right password: refused.
        let again = d.attempt(&id, &pw, &[View]).await.unwrap_err();
        assert!(matches!(again, SupportError::Replayed(_)), "{again}");
        let v = d.broker.end(&id, "test-person").unwrap();
        assert_eq!(v.state, SessionState::Ended);
        ended.changed().await.unwrap();
        assert!(*ended.borrow());
        assert_eq!(
            d.kinds(&id),
            [
                "support-request",
                "authenticated",
                "policy-decision",
                "approval-answered",
                "approval",
                "refusal",
                "refusal",
                "session-started",
                "permission-use",
                "permission-refused",
                "connect-refused",
                "session-ended"
            ]
        );
        let v = d
            .audit()
            .verify(Some(&checkpoint_key(&DEVICE_KEY).verifying_key()))
            .unwrap();
        assert_eq!(v.first_bad, None);
        // Signed at the session's end, covering every entry.
        assert_eq!(v.checkpoints, 1);
        assert_eq!(v.checkpointed_seq, v.entries as i64);
        // The password is nowhere in the audit chain or the database file.
        let all = d.audit().entries(None, 10_000).unwrap();
        let compact = pw.replace('-', "");
        assert!(
            all.iter()
                .all(|e| !e.detail.contains(&compact) && !e.detail.contains(&pw))
        );
        let bytes = std::fs::read(d.config.state_dir.join("outpost.db")).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains(&compact));
        drop(d.dir);
    });
}

#[test]
fn support_refusals_name_what_was_wrong_and_are_audited() {
    env().rt.block_on(async {
        let d = desk(DEFAULT);
        let (id, pw) = d.request();
        let eng = d.engineer.clone();
        // Signed by an authority this PC does not trust.
        let other = d.credential(&key(99), "eng-0042", &["eu"], 3600);
        let e = d
            .attempt_with(&id, &pw, other, &eng, &[View])
            .await
            .unwrap_err();
        assert!(matches!(e, SupportError::UntrustedAuthority(_)), "{e}");
        // Expired.
        let expired = d.credential(&d.authority, "eng-0042", &["eu"], -1);
        let e = d
            .attempt_with(&id, &pw, expired, &eng, &[View])
            .await
            .unwrap_err();
        assert!(matches!(e, SupportError::CredentialExpired(_)), "{e}");
        // Another region.
        let us = d.credential(&d.authority, "eng-0042", &["us", "cn"], 3600);
        let e = d
            .attempt_with(&id, &pw, us, &eng, &[View])
            .await
            .unwrap_err();
        assert!(matches!(e, SupportError::RegionRefused(_)), "{e}");
        // A stolen credential without its key: the proof fails.
        let e = d
            .attempt_with(&id, &pw, d.good_credential(), &key(33), &[View])
            .await
            .unwrap_err();
        assert!(matches!(e, SupportError::BadProof(_)), "{e}");
        // Garbage as a credential.
        let e = d
            .attempt_with(&id, &pw, vec![7; 300], &eng, &[View])
            .await
            .unwrap_err();
        assert!(matches!(e, SupportError::BadCredential(_)), "{e}");
        // An engineer the policy does not know: not on its allowlist and
        // without its certification (the credential itself is valid).
        let uncertified = issue_credential(
            &CredentialClaims {
                engineer_id: "eng-0666".into(),
                display_name: "Mallory".into(),
                regions: vec!["eu".into()],
                certifications: Vec::new(),
                not_before: d.now_s() - 60,
                expires: d.now_s() + 3600,
                engineer_key: d.engineer.verifying_key(),
            },
            &d.authority,
        )
        .unwrap();
        let (id0, pw0) = d.request();
        let e = d
            .attempt_with(&id0, &pw0, uncertified, &eng, &[View])
            .await
            .unwrap_err();
        let SupportError::PolicyRefused { reason } = &e else {
            panic!("{e}")
        };
        assert!(
            reason.contains("eng-0666") && reason.contains("privacy-training"),
            "{reason}"
        );
        assert!(d.kinds(&id0).contains(&"policy-decision".to_owned()));
        assert_eq!(d.broker.get(&id0).unwrap().state, SessionState::Ended);
        // An unknown session id.
        let e = d.attempt("ZZZZ-ZZZZ-ZZZZ", &pw, &[View]).await.unwrap_err();
        assert!(matches!(e, SupportError::UnknownSession(_)), "{e}");
        // None of these counted as a password guess against the session.
        assert_eq!(d.broker.get(&id).unwrap().failures, 0);
        assert_eq!(
            d.kinds(&id)
                .iter()
                .filter(|k| *k == "connect-refused")
                .count(),
            5
        );
        // A newer request retires the old password; the old password does
        // not open the new session.
        d.clock.advance(Duration::from_secs(3600));
        let (id2, pw2) = d.request();
        let e = d.attempt(&id, &pw, &[View]).await.unwrap_err();
        assert!(matches!(e, SupportError::PasswordRetired(_)), "{e}");
        let e = d.attempt(&id2, &pw, &[View]).await.unwrap_err();
        assert!(
            matches!(e, SupportError::WrongPassword { remaining: 4 }),
            "{e}"
        );
        assert_eq!(d.broker.get(&id2).unwrap().failures, 1);
        assert!(d.kinds(&id2).contains(&"auth-failed".to_owned()));
        let _ = pw2;
        assert_eq!(d.audit().verify(None).unwrap().first_bad, None);
    });
}

#[test]
fn support_lock_out_survives_a_restart_and_refuses_even_the_right_password() {
    env().rt.block_on(async {
        let d = desk(DEFAULT);
        let (id, pw) = d.request();
        for (n, remaining) in [(1u32, 4u32), (2, 3), (3, 2), (4, 1)] {
            let e = d.attempt(&id, "WRONG-WRONG", &[View]).await.unwrap_err();
            assert!(
                matches!(e, SupportError::WrongPassword { remaining: r } if r == remaining),
                "{n}: {e}"
            );
            // Locked now: the right password is refused unevaluated.
            let e = d.attempt(&id, &pw, &[View]).await.unwrap_err();
            assert!(matches!(e, SupportError::Locked { .. }), "{n}: {e}");
            d.clock
                .advance(outpost_host::support::lockout::lock_after(n));
        }
        let e = d.attempt(&id, "WRONG-WRONG", &[View]).await.unwrap_err();
        assert!(matches!(e, SupportError::PasswordRetired(_)), "{e}");
        d.clock.advance(Duration::from_secs(3600));
        let e = d.attempt(&id, &pw, &[View]).await.unwrap_err();
        assert!(matches!(e, SupportError::PasswordRetired(_)), "{e}");
        // The device counter: five failures so far; one more on a new session
        // locks the device for lock_after(6) = 32 s, across a restart.
        let (id2, pw2) = d.request();
        let e = d.attempt(&id2, "WRONG-WRONG", &[View]).await.unwrap_err();
        assert!(matches!(e, SupportError::WrongPassword { .. }), "{e}");
        let restarted = Broker::new(
            &d.config,
            Db::open(&d.config.state_dir).unwrap(),
            d.supervisor.clone(),
            d.events.clone(),
            Arc::new(d.clock.clone()),
        )
        .unwrap();
        let nonce = restarted.challenge(&id2).unwrap();
        let attempt = ConnectAttempt {
            channel_binding: BINDING,
            session_id: id2.clone(),
            password: pw2.clone(),
            credential: d.good_credential(),
            challenge_signature: sign_challenge(&d.engineer, &id2, &nonce, &BINDING).to_vec(),
            requested: vec![View],
            connection: "relay-conn-3".into(),
        };
        let e = restarted.connect(attempt).await.unwrap_err();
        let SupportError::Locked { until_ms } = e else {
            panic!("{e}")
        };
        let now = outpost_host::support::Clock::now_ms(&d.clock);
        assert_eq!(until_ms - now, 32_000);
        assert!(e.to_string().contains("locked"), "{e}");
        assert!(d.kinds(&id2).contains(&"locked-out".to_owned()));
        // After the lock: the right password gets through to the approval.
        d.clock.advance(Duration::from_secs(32));
        let (grant, _) = d
            .connect_and_answer(&id2, &pw2, &[View], Some(&[View]))
            .await;
        assert_eq!(grant.unwrap().permissions, vec![View]);
    });
}

#[test]
fn support_without_an_answer_in_time_is_refused() {
    env().rt.block_on(async {
        let d = desk(Setup {
            support: "approval-timeout-secs = 1",
            ..DEFAULT
        });
        let (id, pw) = d.request();
        let (grant, offered) = d.connect_and_answer(&id, &pw, &[View, Control], None).await;
        assert_eq!(offered, vec!["view", "control"]);
        assert!(matches!(grant, Err(SupportError::NotApproved)), "{grant:?}");
        let v = d.broker.get(&id).unwrap();
        assert_eq!(v.state, SessionState::Ended);
        assert_eq!(v.end_reason.as_deref(), Some("not-approved"));
        let kinds = d.kinds(&id);
        assert_eq!(kinds.iter().filter(|k| *k == "refusal").count(), 2);
        // Refusing everything explicitly ends it the same way.
        let (id, pw) = d.request();
        let (grant, _) = d.connect_and_answer(&id, &pw, &[View], Some(&[])).await;
        assert!(matches!(grant, Err(SupportError::NotApproved)), "{grant:?}");
    });
}

#[test]
fn support_on_a_pc_with_patient_data_never_offers_file_transfer() {
    env().rt.block_on(async {
        let d = desk(Setup {
            phi: true,
            ..DEFAULT
        });
        let (id, pw) = d.request();
        let mut rx = d.events.subscribe();
        let broker = d.broker.clone();
        let (id2, pw2) = (id.clone(), pw.clone());
        let cred = d.good_credential();
        let eng = d.engineer.clone();
        let task = tokio::spawn(async move {
            let nonce = broker.challenge(&id2).unwrap();
            broker
                .connect(ConnectAttempt {
                    channel_binding: BINDING,
                    session_id: id2.clone(),
                    password: pw2,
                    credential: cred,
                    challenge_signature: sign_challenge(&eng, &id2, &nonce, &BINDING).to_vec(),
                    requested: vec![View, FileTransfer],
                    connection: "c".into(),
                })
                .await
        });
        loop {
            if let HostEvent::SupportApprovalNeeded { offered, .. } = rx.recv().await.unwrap() {
                assert_eq!(offered, vec!["view"]);
                break;
            }
        }
        // The person would accept file transfer: it was never offered.
        let e = d
            .broker
            .decide(&id, &[View, FileTransfer], "person")
            .unwrap_err();
        assert!(
            matches!(
                e,
                SupportError::NotPermitted {
                    what: "offered",
                    ..
                }
            ),
            "{e}"
        );
        d.broker.decide(&id, &[View], "person").unwrap();
        assert_eq!(task.await.unwrap().unwrap().permissions, vec![View]);
        // Asking for file transfer alone: nothing to offer, refused.
        let (id, pw) = d.request();
        let e = d.attempt(&id, &pw, &[FileTransfer]).await.unwrap_err();
        assert!(matches!(e, SupportError::PolicyRefused { .. }), "{e}");
    });
}

#[test]
fn support_without_a_policy_module_is_refused() {
    env().rt.block_on(async {
        let d = desk(Setup {
            policy: false,
            ..DEFAULT
        });
        let (id, pw) = d.request();
        let e = d.attempt(&id, &pw, &[View]).await.unwrap_err();
        assert!(matches!(e, SupportError::PolicyFailed(_)), "{e}");
        assert_eq!(d.broker.get(&id).unwrap().state, SessionState::Ended);
        assert!(d.kinds(&id).contains(&"connect-refused".to_owned()));
    });
}

#[test]
fn support_sessions_end_at_the_idle_and_total_timeouts() {
    env().rt.block_on(async {
        let d = desk(Setup {
            support: "idle-timeout-secs = 60\ntotal-timeout-secs = 300",
            ..DEFAULT
        });
        let (id, pw) = d.request();
        let (g, _) = d.connect_and_answer(&id, &pw, &[View], Some(&[View])).await;
        assert_eq!(g.unwrap().idle_timeout, Duration::from_secs(60));
        d.clock.advance(Duration::from_secs(59));
        assert_eq!(d.broker.expire_due().unwrap(), 0);
        d.broker.touch(&id);
        d.clock.advance(Duration::from_secs(59));
        assert_eq!(
            d.broker.expire_due().unwrap(),
            0,
            "traffic reset the idle timer"
        );
        d.clock.advance(Duration::from_secs(1));
        assert_eq!(d.broker.expire_due().unwrap(), 1);
        assert_eq!(
            d.broker.get(&id).unwrap().end_reason.as_deref(),
            Some("idle-timeout")
        );
        // Total: busy all the time, ended at 300 s.
        let (id, pw) = d.request();
        let (g, _) = d.connect_and_answer(&id, &pw, &[View], Some(&[View])).await;
        g.unwrap();
        for _ in 0..6 {
            d.clock.advance(Duration::from_secs(50));
            d.broker.touch(&id);
            let _ = d.broker.expire_due().unwrap();
        }
        assert_eq!(
            d.broker.get(&id).unwrap().end_reason.as_deref(),
            Some("total-timeout")
        );
        // An open request nobody takes up expires.
        let (id, pw) = d.request();
        d.clock.advance(Duration::from_secs(31 * 60));
        let e = d.attempt(&id, &pw, &[View]).await.unwrap_err();
        assert!(matches!(e, SupportError::SessionExpired(_)), "{e}");
    });
}

/// The real binary: `outpost support` through the running service's API,
/// the event stream, then `outpost audit verify` on the state it left,
/// before and after one entry is edited in SQLite.
#[test]
fn support_cli_and_api_on_the_running_host_and_audit_verify_names_an_edited_entry() {
    use super::api::{Host, site};
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let config = site(dir.path(), &logs);
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "\n[support]\nregion = \"eu\"\nauthority-keys = [\"{}\"]\n",
        public_key_to_hex(&key(11).verifying_key())
    ));
    // [support] must come before the [[module]] tables: put it first.
    let (head, modules) = text.split_at(text.find("[[module]]").unwrap());
    let (modules, support) = modules.split_at(modules.find("\n[support]").unwrap());
    let text = format!("{head}{support}\n{modules}");
    std::fs::write(&config, text).unwrap();
    let host = Host::start(&config);
    let json = |out: std::process::Output| -> serde_json::Value {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let mut events = env().rt.block_on(super::api::subscribe(&host));
    let first = json(host.cli(&["support", "request", "--json"]));
    let id1 = first["session"]["id"].as_str().unwrap().to_owned();
    let pw1 = first["password"].as_str().unwrap().to_owned();
    assert_eq!(pw1.len(), 14, "{pw1}");
    let (kind, ev) = env().rt.block_on(async {
        loop {
            let (k, v) = events.recv().await.unwrap();
            if k.starts_with("support") {
                return (k, v);
            }
        }
    });
    assert_eq!(kind, "support-requested");
    assert_eq!(ev["session"], id1.as_str());
    assert!(!ev.to_string().contains(&pw1));
    // A second request retires the first.
    let second = json(host.cli(&["support", "request", "--json"]));
    let id2 = second["session"]["id"].as_str().unwrap().to_owned();
    let list = json(host.cli(&["support", "status", "--json"]));
    assert_eq!(list[0]["id"], id2.as_str());
    assert_eq!(list[0]["state"], "open");
    assert_eq!(list[1]["id"], id1.as_str());
    assert_eq!(list[1]["state"], "retired");
    assert!(
        !list.to_string().contains(&pw1),
        "no password in the status"
    );
    // Text output in plain words.
    let out = host.cli(&["support", "status", &id2]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("session {id2} (open)")), "{text}");
    // Nobody is waiting for an answer: approving is a conflict.
    let out = host.cli(&["support", "approve", &id2, "view"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("409") && err.contains("is open"), "{err}");
    let out = host.cli(&["support", "approve", &id2, "everything"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown permission"));
    let (status, _) = env().rt.block_on(host.call(
        reqwest::Method::GET,
        "/api/v1/support/sessions/ZZZZ-ZZZZ-ZZZZ",
    ));
    assert_eq!(status, 404);
    let ended = json(host.cli(&["support", "end", &id2, "--json"]));
    assert_eq!(ended["state"], "ended");
    assert_eq!(ended["end_reason"], "ended");
    drop(host);
    // The audit chain the service wrote.
    let cli = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_outpost"))
            .args(args)
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap()
    };
    let shown = json(cli(&["audit", "show", "--json"]));
    let kinds: Vec<&str> = shown
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "support-request",
            "password-retired",
            "support-request",
            "session-ended"
        ]
    );
    let v = json(cli(&["audit", "verify", "--json"]));
    assert_eq!(v["entries"], 4);
    assert!(v["first_bad"].is_null());
    // The host signed a checkpoint with the device's key at the session's end.
    assert_eq!(
        (&v["checkpoints"], &v["checkpointed_seq"]),
        (&serde_json::json!(1), &serde_json::json!(4))
    );
    let out = cli(&["audit", "verify"]);
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("1 signed checkpoint(s) verified, up to entry 4")
    );
    let db = rusqlite::Connection::open(dir.path().join("state/outpost.db")).unwrap();
    db.execute(
        "UPDATE audit_chain SET detail = '{\"client\":\"someone else\"}' WHERE seq = 3",
        [],
    )
    .unwrap();
    drop(db);
    let out = cli(&["audit", "verify"]);
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("BROKEN at entry 3"), "{text}");
}

/// The dashboard's remote-support card in headless Chromium, over the API
/// of a host in this process (the engineer's side is the broker's
/// `connect`, as the relay will call it): the person asks, reads the
/// session and password off the page, the engineer connects with them, the
/// page asks in plain words, the person allows SEE only, then ends it.
#[test]
fn support_dashboard_asks_in_plain_words_and_grants_what_was_ticked() {
    use super::browser::{
        Driver, browser, click, count, displayed, query, text, until, with_screenshot,
    };
    use anyhow::ensure;
    let Some((chromium, chromedriver)) = browser() else {
        return;
    };
    env().rt.block_on(async {
        let d = desk(DEFAULT);
        let ctx = outpost_host::api::ApiContext {
            supervisor: d.supervisor.clone(),
            services: d.agent.runtime.services().clone(),
            events: d.events.clone(),
            agent: outpost_host::api::AgentFacts::of(&d.agent),
            support: Some(d.broker.clone()),
            config: d.config.clone(),
        };
        let api = outpost_host::api::start(
            ctx,
            "127.0.0.1:0".parse().unwrap(),
            &d.config.state_dir,
            Default::default(),
        )
        .await
        .unwrap();
        let origin = format!("http://127.0.0.1:{}", api.addr().port());
        let token = std::fs::read_to_string(d.config.state_dir.join("api.token")).unwrap();
        let body = super::api::Host::client()
            .post(format!("{origin}/api/v1/login-codes"))
            .bearer_auth(token.trim())
            .header("x-outpost-client", "test")
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let login: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let url = login["url"].as_str().unwrap().to_owned();
        let driver = Driver::start(chromium, &chromedriver);
        let client = driver.session().await;
        with_screenshot("support-dashboard", &client, async {
            client.goto(&url).await?;
            until(Duration::from_secs(10), "the page after login", || async {
                displayed(&client, "app").await
            })
            .await?;
            ensure!(!displayed(&client, "support-new").await?);
            click(&client, "#support-request").await?;
            until(Duration::from_secs(10), "the new password", || async {
                displayed(&client, "support-new").await
            })
            .await?;
            let id = text(&client, "support-id").await?;
            let password = text(&client, "support-password").await?;
            ensure!(password.len() == 14, "password {password:?}");
            // The engineer connects with what the person read out.
            let broker = d.broker.clone();
            let (cred, engineer) = (d.good_credential(), d.engineer.clone());
            let (id2, pw2) = (id.clone(), password.clone());
            let task = tokio::spawn(async move {
                let nonce = broker.challenge(&id2)?;
                broker
                    .connect(ConnectAttempt {
                        channel_binding: BINDING,
                        challenge_signature: sign_challenge(&engineer, &id2, &nonce, &BINDING)
                            .to_vec(),
                        session_id: id2,
                        password: pw2,
                        credential: cred,
                        requested: vec![View, Control, FileTransfer],
                        connection: "relay-conn-web".into(),
                    })
                    .await
            });
            until(Duration::from_secs(20), "the approval prompt", || async {
                Ok(count(&client, "li.support-session.awaiting-approval").await? == 1)
            })
            .await?;
            ensure!(
                !displayed(&client, "support-new").await?,
                "the used password is no longer shown"
            );
            let words = query(
                &client,
                "return document.querySelector(arguments[0]).innerText;",
                "li.support-session",
            )
            .await?;
            let words = words.as_str().unwrap_or_default().to_owned();
            for want in [
                "A support engineer, Ada Engineer (eng-0042, region eu), asks to:",
                "SEE your screen",
                "CONTROL your keyboard and mouse",
                "TRANSFER FILES to and from this PC",
                "Anything not ticked is refused",
            ] {
                ensure!(words.contains(want), "{want:?} not in {words:?}");
            }
            click(&client, "input.perm[value=view]").await?;
            click(&client, "button.allow").await?;
            let grant = task.await??;
            ensure!(grant.permissions == vec![View], "{:?}", grant.permissions);
            until(Duration::from_secs(10), "the running session", || async {
                Ok(count(&client, "li.support-session.active").await? == 1)
            })
            .await?;
            let words = query(
                &client,
                "return document.querySelector(arguments[0]).innerText;",
                "li.support-session.active",
            )
            .await?;
            ensure!(
                words
                    .as_str()
                    .unwrap_or_default()
                    .contains("The engineer may: SEE your screen."),
                "{words}"
            );
            click(&client, "button.end").await?;
            until(
                Duration::from_secs(10),
                "the session gone from the page",
                || async { Ok(count(&client, "li.support-session").await? == 0) },
            )
            .await?;
            let v = d.broker.get(&id)?;
            ensure!(v.state == SessionState::Ended, "{:?}", v.state);
            ensure!(d.kinds(&id).contains(&"session-ended".to_owned()));
            Ok(())
        })
        .await;
        let _ = client.close().await;
        api.shutdown().await;
    });
}

/// A policy module that traps or spins refuses the session and leaves the
/// host working; one that offers everything cannot widen the request, skip
/// the patient-data rule or the person's approval.
#[test]
fn support_with_a_trapping_spinning_or_loosening_policy_module_the_host_holds() {
    env().rt.block_on(async {
        let d = desk(Setup {
            hostile: true,
            phi: true,
            ..DEFAULT
        });
        let eng = d.engineer.clone();
        for who in ["trap", "spin"] {
            let (id, pw) = d.request();
            let cred = d.credential(&d.authority, who, &["eu"], 3600);
            let e = d
                .attempt_with(&id, &pw, cred, &eng, &[View])
                .await
                .unwrap_err();
            assert!(matches!(e, SupportError::PolicyFailed(_)), "{who}: {e}");
            assert_eq!(d.broker.get(&id).unwrap().state, SessionState::Ended);
            assert!(d.kinds(&id).contains(&"connect-refused".to_owned()));
        }
        let health = &d.supervisor.health()["fixture-hostile-policy"];
        assert_eq!(health.calls_failed, 2);
        // "loosen" offers everything: only what was asked, and on this PC
        // (patient data) not file transfer, reaches the person.
        let (id, pw) = d.request();
        let mut rx = d.events.subscribe();
        let broker = d.broker.clone();
        let cred = d.credential(&d.authority, "loosen", &["eu"], 3600);
        let (id2, pw2) = (id.clone(), pw.clone());
        let task = tokio::spawn(async move {
            let nonce = broker.challenge(&id2).unwrap();
            broker
                .connect(ConnectAttempt {
                    channel_binding: BINDING,
                    challenge_signature: sign_challenge(&eng, &id2, &nonce, &BINDING).to_vec(),
                    session_id: id2,
                    password: pw2,
                    credential: cred,
                    requested: vec![View, FileTransfer],
                    connection: "c".into(),
                })
                .await
        });
        loop {
            if let HostEvent::SupportApprovalNeeded { offered, .. } = rx.recv().await.unwrap() {
                assert_eq!(offered, vec!["view"]);
                break;
            }
        }
        let e = d.broker.decide(&id, &[Control], "person").unwrap_err();
        assert!(matches!(e, SupportError::NotPermitted { .. }), "{e}");
        d.broker.decide(&id, &[View], "person").unwrap();
        assert_eq!(task.await.unwrap().unwrap().permissions, vec![View]);
    });
}

/// The relay (the cloud's, on loopback with a test CA), an enrolled device,
/// and a desk whose `[support]` points at the relay and whose `[network]`
/// trusts the test CA: the running host's link serves its requests.
struct RelayDesk {
    d: Desk,
    relay: outpost_cloud::relay::RunningRelay,
    target: outpost_support_proto::relay_wire::RelayTarget,
    device_key: outpost_signing::VerifyingKey,
    folder: std::path::PathBuf,
    seen: Arc<std::sync::Mutex<Vec<u8>>>,
    _link: tokio::task::JoinHandle<()>,
    _cloud: tempfile::TempDir,
}

async fn relay_desk() -> RelayDesk {
    relay_desk_with("").await
}

/// [`relay_desk`] with more `[support]` lines.
async fn relay_desk_with(more_support: &str) -> RelayDesk {
    use outpost_cloud::relay::{RelayConfig, RelayLimits};
    use outpost_cloud::{NewDevice, Relay, Store, TestPki};
    let cloud = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(&["localhost", "127.0.0.1"]).unwrap();
    let store = Store::open(&cloud.path().join("cloud")).unwrap();
    let envelope = outpost_protocol::DeviceKey::generate();
    let device_id = store
        .enroll(&NewDevice {
            email: "lab@example.org".into(),
            name: "Lab".into(),
            instrument_model: "XR-1".into(),
            instrument_id: "i-1".into(),
            serial: "S-1".into(),
            device_key: envelope.clone(),
        })
        .unwrap();
    // The engineer is given the device's support key by the vendor's cloud.
    let support_key = store
        .devices()
        .unwrap()
        .into_iter()
        .find(|d| d.device_id == device_id)
        .unwrap()
        .support_key;
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let tap = seen.clone();
    let relay = Relay::start(RelayConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        tls: outpost_cloud::tls_config(&pki.server_cert_pem, &pki.server_key_pem).unwrap(),
        store,
        limits: RelayLimits::default(),
        tap: Some(Arc::new(move |b: &[u8]| {
            tap.lock().unwrap().extend_from_slice(b)
        })),
    })
    .await
    .unwrap();
    let ca = cloud.path().join("ca.pem");
    std::fs::write(&ca, &pki.ca_cert_pem).unwrap();
    let folder = cloud.path().join("granted");
    std::fs::create_dir_all(&folder).unwrap();
    let support = format!(
        "{more_support}\nrelay = \"{}\"\nrelay-server-name = \"localhost\"\nfile-folder = \"{}\"\n[network]\nextra-ca-files = [\"{}\"]\nonly-extra-cas = true\n",
        relay.addr(),
        path(&folder),
        path(&ca),
    );
    let d = desk(Setup {
        support: Box::leak(support.into_boxed_str()),
        ..DEFAULT
    });
    let uplink = d.agent.runtime.services().uplink.clone();
    uplink.set_identity(Some(outpost_host::uplink::identity::Identity {
        device_id,
        key: envelope.clone(),
        server: "https://localhost".into(),
        enrolled_at: 0,
    }));
    // The host's own TLS client configuration (its [network] trust).
    let link = outpost_host::support::link::Link::from_config(
        &d.config.support,
        d.agent.runtime.services().tls.clone(),
        uplink,
    )
    .unwrap()
    .expect("a relay is configured");
    let link = d.broker.spawn_link(link);
    // The engineer trusts the relay's CA and is given the device's public
    // support key (what the vendor derives from the enrolled envelope key).
    let target = outpost_support_proto::relay_wire::RelayTarget::new(
        relay.addr().to_string(),
        "localhost",
        outpost_support_proto::relay_wire::client_tls(&pki.ca_cert_pem).unwrap(),
    )
    .unwrap();
    let device_key = outpost_signing::public_key_from_hex(&support_key).unwrap();
    assert_eq!(
        device_key,
        outpost_support_proto::pc::device_identity_key(&envelope).verifying_key()
    );
    RelayDesk {
        d,
        relay,
        target,
        device_key,
        folder,
        seen,
        _link: link,
        _cloud: cloud,
    }
}

impl RelayDesk {
    fn registered(&self) -> u64 {
        self.relay
            .stats()
            .registered
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Wait until the relay counted `n` registrations (a hang guard, not a
    /// timing assertion).
    async fn wait_registered(&self, n: u64) {
        for _ in 0..1000 {
            if self.registered() >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!(
            "the host did not register at the relay ({} registrations)",
            self.registered()
        );
    }

    fn auth(
        &self,
        password: &str,
        requested: &[Permission],
    ) -> outpost_support_proto::channel::EngineerAuth {
        outpost_support_proto::channel::EngineerAuth {
            credential: self.d.good_credential(),
            key: self.d.engineer.clone(),
            password: zeroize::Zeroizing::new(password.to_owned()),
            requested: requested.to_vec(),
        }
    }
}

#[test]
fn support_through_the_relay_serves_exactly_what_the_person_accepted() {
    use outpost_support_proto::engineer::{self, EngineerError};
    env().rt.block_on(async {
        let r = relay_desk().await;
        let d = &r.d;
        let (id, pw) = d.request();
        r.wait_registered(1).await;
        // The engineer asks for the screen and file transfer; the person
        // accepts file transfer only.
        let mut rx = d.events.subscribe();
        let (target, device_key, auth) = (
            r.target.clone(),
            r.device_key,
            r.auth(&pw, &[View, FileTransfer]),
        );
        let id2 = id.clone();
        let eng =
            tokio::spawn(async move { engineer::connect(&target, &id2, &device_key, &auth).await });
        loop {
            if let HostEvent::SupportApprovalNeeded {
                session, offered, ..
            } = rx.recv().await.unwrap()
            {
                assert_eq!(session, id);
                assert_eq!(offered, vec!["view", "file-transfer"]);
                break;
            }
        }
        d.broker
            .decide(&id, &[FileTransfer], "test-person")
            .unwrap();
        let s = eng.await.unwrap().unwrap();
        assert_eq!(s.grant().permissions, vec![FileTransfer]);
        assert_eq!(s.grant().engineer, "eng-0042");
        assert_eq!(d.broker.get(&id).unwrap().state, SessionState::Active);

        // The refused screen: a viewer's connection is closed after the
        // PC's denial, and the denial is audited.
        let vnc = s
            .open_vnc_listener("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let mut viewer = tokio::net::TcpStream::connect(vnc).await.unwrap();
        let mut buf = [0u8; 16];
        let n = tokio::io::AsyncReadExt::read(&mut viewer, &mut buf)
            .await
            .unwrap_or(0);
        assert_eq!(n, 0, "no screen byte may arrive");

        // The granted file transfer: the file arrives with its hash; a path
        // outside the folder is refused.
        let local = d.dir.path().join("firmware-notes.txt");
        let content: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&local, &content).unwrap();
        let done = s.send_file(&local, "firmware-notes.txt").await.unwrap();
        assert_eq!(
            std::fs::read(r.folder.join("firmware-notes.txt")).unwrap(),
            content
        );
        let e = s.send_file(&local, "../escape.txt").await.unwrap_err();
        assert!(matches!(e, EngineerError::Denied(_)), "{e}");
        assert!(!r.folder.parent().unwrap().join("escape.txt").exists());

        // The person ends it at the PC: the engineer's side closes.
        let closed = s.closed();
        d.broker.end(&id, "test-person").unwrap();
        let why = tokio::time::timeout(Duration::from_secs(20), closed)
            .await
            .expect("the engineer's session did not close");
        assert!(why.contains("ended by the PC"), "{why}");
        assert_eq!(d.broker.get(&id).unwrap().state, SessionState::Ended);

        let entries = d.audit().entries(Some(&id.replace('-', "")), 1000).unwrap();
        let kinds: Vec<&str> = entries.iter().map(|e| e.kind.as_str()).collect();
        let at = |k: &str| {
            kinds
                .iter()
                .position(|x| *x == k)
                .unwrap_or_else(|| panic!("no {k} in {kinds:?}"))
        };
        assert!(at("support-request") < at("authenticated"));
        assert!(at("authenticated") < at("session-started"));
        assert!(at("session-started") < at("permission-refused"));
        assert!(at("permission-refused") < at("session-ended"));
        assert_eq!(kinds.last(), Some(&"session-ended"));
        let transfers: Vec<_> = entries
            .iter()
            .filter(|e| e.kind == "file-transfer")
            .collect();
        assert_eq!(transfers.len(), 2, "{kinds:?}");
        assert!(
            transfers[0].detail.contains(&done.sha256),
            "{}",
            transfers[0].detail
        );
        assert!(
            transfers[0].detail.contains("\"done\""),
            "{}",
            transfers[0].detail
        );
        assert!(
            transfers[1].detail.contains("escape.txt"),
            "{}",
            transfers[1].detail
        );
        assert!(
            !transfers[1].detail.contains("\"done\""),
            "{}",
            transfers[1].detail
        );
        // Connections are named by the relay's report of the engineer.
        assert!(
            entries
                .iter()
                .any(|e| e.kind == "authenticated" && e.detail.contains("relay 127.0.0.1:"))
        );
        let v = d
            .audit()
            .verify(Some(&checkpoint_key(&DEVICE_KEY).verifying_key()))
            .unwrap();
        assert_eq!(v.first_bad, None);
        // Nothing readable passed the relay: not the password, not the file.
        let seen = r.seen.lock().unwrap().clone();
        assert!(
            seen.len() > content.len(),
            "the file went through the relay"
        );
        for needle in [pw.as_bytes(), &content[1000..1032], b"firmware-notes"] {
            assert!(
                !seen.windows(needle.len()).any(|w| w == needle),
                "plaintext at the relay"
            );
        }
    });
}

#[test]
fn support_through_the_relay_counts_wrong_passwords_and_binds_the_proof_to_its_channel() {
    use outpost_support_proto::RefusalCode;
    use outpost_support_proto::channel::ChannelError;
    use outpost_support_proto::engineer::{self, EngineerError};
    env().rt.block_on(async {
        let r = relay_desk().await;
        let d = &r.d;
        let (id, pw) = d.request();
        r.wait_registered(1).await;
        let refused = |res: Result<engineer::EngineerSession, EngineerError>| match res {
            Err(EngineerError::Channel(ChannelError::Refused(r))) => r,
            Err(e) => panic!("expected a refusal, got {e}"),
            Ok(_) => panic!("expected a refusal, got a session"),
        };
        // A wrong password through the channel counts against the session
        // and the device.
        let e = refused(
            engineer::connect(
                &r.target,
                &id,
                &r.device_key,
                &r.auth("WRONG-PASS-WORD", &[View]),
            )
            .await,
        );
        assert_eq!(e.code, RefusalCode::BadPassword, "{}", e.message);
        let v = d.broker.get(&id).unwrap();
        assert_eq!(v.failures, 1);
        assert!(v.locked_until_ms.is_some());
        // The request stays open: the host registers it again; now even
        // the right password is refused until the lock ends, unevaluated.
        r.wait_registered(2).await;
        let e =
            refused(engineer::connect(&r.target, &id, &r.device_key, &r.auth(&pw, &[View])).await);
        assert_eq!(e.code, RefusalCode::LockedOut, "{}", e.message);
        assert_eq!(d.broker.get(&id).unwrap().failures, 1);
        r.wait_registered(3).await;
        // A second wrong guess after the lock: the lock grows.
        d.clock.advance(Duration::from_secs(2));
        let e = refused(
            engineer::connect(
                &r.target,
                &id,
                &r.device_key,
                &r.auth("WRONG-PASS-AGAIN", &[View]),
            )
            .await,
        );
        assert_eq!(e.code, RefusalCode::BadPassword, "{}", e.message);
        let v = d.broker.get(&id).unwrap();
        assert_eq!(v.failures, 2);
        let lock_ms = v.locked_until_ms.unwrap() - outpost_host::support::Clock::now_ms(&d.clock);
        assert!(lock_ms >= 2_000, "the second lock lasts {lock_ms} ms");
        let kinds = d.kinds(&id);
        assert_eq!(
            kinds.iter().filter(|k| *k == "auth-failed").count(),
            2,
            "{kinds:?}"
        );
        assert!(kinds.contains(&"locked-out".to_owned()), "{kinds:?}");

        // A proof made for one channel, replayed on another (a relay or a
        // device posing as the PC passing it on): refused, and audited.
        d.clock.advance(Duration::from_secs(3600));
        let (id2, pw2) = d.request();
        let nonce = d.broker.challenge(&id2).unwrap();
        let on_channel_a = sign_challenge(&d.engineer, &id2, &nonce, &[1; 32]);
        let e = d
            .broker
            .connect(ConnectAttempt {
                session_id: id2.clone(),
                password: pw2.clone(),
                credential: d.good_credential(),
                challenge_signature: on_channel_a.to_vec(),
                channel_binding: [2; 32],
                requested: vec![View],
                connection: "relay-conn-b".into(),
            })
            .await
            .unwrap_err();
        assert!(matches!(e, SupportError::BadProof(_)), "{e}");
        assert!(d.kinds(&id2).contains(&"connect-refused".to_owned()));
        assert_eq!(
            outpost_host::support::link::refusal(&e).code,
            RefusalCode::BadCredential
        );

        // A refusal that ends the session (the policy does not know the
        // engineer) still reaches the engineer with its reason.
        let (id3, pw3) = d.request();
        let mut auth = r.auth(&pw3, &[View]);
        auth.credential = issue_credential(
            &CredentialClaims {
                engineer_id: "eng-0666".into(),
                display_name: "Mallory".into(),
                regions: vec!["eu".into()],
                certifications: Vec::new(),
                not_before: d.now_s() - 60,
                expires: d.now_s() + 3600,
                engineer_key: d.engineer.verifying_key(),
            },
            &d.authority,
        )
        .unwrap();
        // (The engineer tries again until the PC waits at the relay.)
        let mut res = engineer::connect(&r.target, &id3, &r.device_key, &auth).await;
        for _ in 0..1000 {
            let Err(EngineerError::Relay(outpost_support_proto::relay_wire::RelayError::Refused {
                code: outpost_support_proto::relay_wire::RelayErrorCode::UnknownSession,
                ..
            })) = &res
            else {
                break;
            };
            tokio::time::sleep(Duration::from_millis(20)).await;
            res = engineer::connect(&r.target, &id3, &r.device_key, &auth).await;
        }
        let e = refused(res);
        assert_eq!(e.code, RefusalCode::Policy, "{}", e.message);
        assert!(e.message.contains("eng-0666"), "{}", e.message);
        assert_eq!(d.broker.get(&id3).unwrap().state, SessionState::Ended);
        assert_eq!(d.audit().verify(None).unwrap().first_bad, None);
    });
}

/// The screen backend the host starts per session, on an Xvfb display the
/// test makes: skipped with a message when Xvfb or x11vnc is missing, unless
/// `OUTPOST_REQUIRE_VNC=1`.
#[cfg(unix)]
mod screen {
    use super::*;
    use std::io::{Read, Write};
    use std::process::{Child, Command, Stdio};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    struct Kill(Child);

    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn installed(tool: &str) -> bool {
        Command::new(tool)
            .arg("-help")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    }

    /// An Xvfb display; `None` when the tools are missing.
    async fn display() -> Option<(Kill, u32)> {
        if !installed("Xvfb") || !installed("x11vnc") {
            assert!(
                std::env::var("OUTPOST_REQUIRE_VNC").as_deref() != Ok("1"),
                "OUTPOST_REQUIRE_VNC=1 but Xvfb or x11vnc is not installed (apt-get install xvfb x11vnc)"
            );
            eprintln!("skipped: Xvfb or x11vnc is not installed (apt-get install xvfb x11vnc)");
            return None;
        }
        // A display of its own per test (two tests of this process run at
        // once: the counter keeps them from picking the same free one).
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = (400..800)
            .map(|n| {
                n + std::process::id() % 300
                    + 7 * NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            })
            .find(|n| {
                !std::path::Path::new(&format!("/tmp/.X11-unix/X{n}")).exists()
                    && !std::path::Path::new(&format!("/tmp/.X{n}-lock")).exists()
            })
            .unwrap();
        let xvfb = Command::new("Xvfb")
            .args([
                format!(":{n}"),
                "-screen".into(),
                "0".into(),
                "320x240x24".into(),
                "-nolisten".into(),
                "tcp".into(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let guard = Kill(xvfb);
        let sock = format!("/tmp/.X11-unix/X{n}");
        for _ in 0..1000 {
            if std::path::Path::new(&sock).exists() {
                return Some((guard, n));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("Xvfb :{n} did not start");
    }

    /// The X server's own view of the keyboard: how many keys are down
    /// (core protocol `QueryKeymap` over the display's socket).
    fn keys_down(display: u32) -> u32 {
        let mut x =
            std::os::unix::net::UnixStream::connect(format!("/tmp/.X11-unix/X{display}")).unwrap();
        // Connection setup, little-endian, protocol 11.0, no authorization.
        x.write_all(&[0x6c, 0, 11, 0, 0, 0, 0, 0, 0, 0, 0, 0])
            .unwrap();
        let mut head = [0u8; 8];
        x.read_exact(&mut head).unwrap();
        assert_eq!(head[0], 1, "the X server refused the connection");
        let mut rest = vec![0u8; usize::from(u16::from_le_bytes([head[6], head[7]])) * 4];
        x.read_exact(&mut rest).unwrap();
        // QueryKeymap: opcode 44, length 1.
        x.write_all(&[44, 0, 1, 0]).unwrap();
        let mut reply = [0u8; 40];
        x.read_exact(&mut reply).unwrap();
        assert_eq!(reply[0], 1, "expected the QueryKeymap reply");
        reply[8..].iter().map(|b| b.count_ones()).sum()
    }

    /// Through the engineer's local VNC port: the RFB handshake, a key
    /// pressed (`a`, not released), then a full framebuffer request whose
    /// answer means the server has handled the key event before it.
    async fn press_a_key(viewer: &mut tokio::net::TcpStream) {
        let mut version = [0u8; 12];
        viewer.read_exact(&mut version).await.unwrap();
        assert_eq!(&version, b"RFB 003.008\n");
        viewer.write_all(b"RFB 003.008\n").await.unwrap();
        let n = viewer.read_u8().await.unwrap();
        let mut types = vec![0u8; usize::from(n)];
        viewer.read_exact(&mut types).await.unwrap();
        assert!(types.contains(&1), "no 'None' security type: {types:?}");
        viewer.write_all(&[1]).await.unwrap();
        assert_eq!(viewer.read_u32().await.unwrap(), 0, "security failed");
        viewer.write_all(&[1]).await.unwrap(); // ClientInit, shared
        let w = viewer.read_u16().await.unwrap();
        let h = viewer.read_u16().await.unwrap();
        let mut pixel_format = [0u8; 16];
        viewer.read_exact(&mut pixel_format).await.unwrap();
        let name_len = viewer.read_u32().await.unwrap();
        let mut name = vec![0u8; name_len as usize];
        viewer.read_exact(&mut name).await.unwrap();
        // KeyEvent: down, keysym `a`.
        viewer
            .write_all(&[4, 1, 0, 0, 0, 0, 0, 0x61])
            .await
            .unwrap();
        let mut req = vec![3u8, 0, 0, 0, 0, 0];
        req.extend_from_slice(&w.to_be_bytes());
        req.extend_from_slice(&h.to_be_bytes());
        viewer.write_all(&req).await.unwrap();
        assert_eq!(
            viewer.read_u8().await.unwrap(),
            0,
            "expected a FramebufferUpdate"
        );
    }

    /// One session through the relay with `accept` approved; presses a key
    /// through the screen stream; returns the backend's port (from the
    /// audit) after the person ended the session.
    async fn session(r: &RelayDesk, display: u32, accept: &[Permission]) -> (u32, u16) {
        let d = &r.d;
        let before = r.registered();
        let (id, pw) = d.request();
        r.wait_registered(before + 1).await;
        let mut rx = d.events.subscribe();
        let (target, device_key, auth) = (
            r.target.clone(),
            r.device_key,
            r.auth(&pw, &[View, Control]),
        );
        let id2 = id.clone();
        let eng = tokio::spawn(async move {
            outpost_support_proto::engineer::connect(&target, &id2, &device_key, &auth).await
        });
        while !matches!(
            rx.recv().await.unwrap(),
            HostEvent::SupportApprovalNeeded { .. }
        ) {}
        d.broker.decide(&id, accept, "test-person").unwrap();
        let s = eng.await.unwrap().unwrap();
        assert_eq!(s.grant().permissions, accept);
        // Before the engineer's viewer: a local process straight at the
        // backend's loopback port is refused, with no password or a wrong
        // one, and the password is on no command line.
        let port = started_port(d, &id).await;
        intruders_are_refused(port).await;
        #[cfg(target_os = "linux")]
        no_password_on_the_command_line(port, None);
        let local = s
            .open_vnc_listener("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let mut viewer = tokio::net::TcpStream::connect(local).await.unwrap();
        tokio::time::timeout(Duration::from_secs(60), press_a_key(&mut viewer))
            .await
            .expect("the screen did not answer through the channel");
        let mut down = keys_down(display);
        if accept.contains(&Control) {
            // Control: the key reaches the display (the observer can see
            // it; a hang guard, not a timing assertion).
            for _ in 0..500 {
                if down > 0 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
                down = keys_down(display);
            }
        }
        let closed = s.closed();
        d.broker.end(&id, "test-person").unwrap();
        tokio::time::timeout(Duration::from_secs(20), closed)
            .await
            .expect("the engineer's session did not close");
        let started: Vec<_> = d
            .audit()
            .entries(Some(&id.replace('-', "")), 1000)
            .unwrap()
            .into_iter()
            .filter(|e| e.kind == "screen-backend-started")
            .collect();
        assert_eq!(started.len(), 1, "one backend per session");
        let detail: serde_json::Value = serde_json::from_str(&started[0].detail).unwrap();
        assert_eq!(detail["control"], accept.contains(&Control));
        (down, detail["port"].as_u64().unwrap() as u16)
    }

    /// The port of the session's backend, once the audit says it started.
    async fn started_port(d: &Desk, id: &str) -> u16 {
        for _ in 0..1000 {
            if let Some(e) = d
                .audit()
                .entries(Some(&id.replace('-', "")), 1000)
                .unwrap()
                .into_iter()
                .find(|e| e.kind == "screen-backend-started")
            {
                let detail: serde_json::Value = serde_json::from_str(&e.detail).unwrap();
                return detail["port"].as_u64().unwrap() as u16;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the screen backend did not start");
    }

    /// A local client at the backend's port: choosing no security is
    /// refused, and so is a wrong password. (x11vnc may still be busy with
    /// the previous client's close and deny one at once: tried again.)
    async fn intruders_are_refused(port: u16) {
        use outpost_support_proto::rfb::{RfbError, VncPassword, authenticate_backend};
        let connect = || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .unwrap()
        };
        let mut no_password = None;
        let mut wrong_password = None;
        let mut insisting = None;
        for _ in 0..100 {
            if no_password.is_none() {
                match authenticate_backend(&mut connect().await, None).await {
                    Err(RfbError::Io(_)) => {}
                    r => no_password = Some(r),
                }
            }
            if wrong_password.is_none() {
                let guess = VncPassword::from_text("guess123");
                match authenticate_backend(&mut connect().await, Some(&guess)).await {
                    Err(RfbError::Io(_)) => {}
                    r => wrong_password = Some(r),
                }
            }
            if insisting.is_none() {
                // Choosing None although it is not offered.
                let mut c = connect().await;
                let mut v = [0u8; 12];
                let mut n = [0u8; 1];
                if c.read_exact(&mut v).await.is_ok()
                    && c.write_all(&v).await.is_ok()
                    && c.read_exact(&mut n).await.is_ok()
                {
                    let mut types = vec![0u8; usize::from(n[0])];
                    c.read_exact(&mut types).await.unwrap();
                    c.write_all(&[1]).await.unwrap();
                    let mut rest = Vec::new();
                    let _ = tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut rest))
                        .await;
                    insisting = Some((types, rest));
                }
            }
            if no_password.is_some() && wrong_password.is_some() && insisting.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let e = no_password
            .expect("the backend never answered")
            .unwrap_err();
        assert!(
            matches!(&e, RfbError::PasswordNeeded(t) if !t.contains(&1)),
            "the backend let a client in without a password: {e}"
        );
        let e = wrong_password
            .expect("the backend never answered")
            .unwrap_err();
        assert!(
            matches!(e, RfbError::AuthFailed(_)),
            "a wrong password: {e}"
        );
        let (types, rest) = insisting.expect("the backend never answered");
        assert!(!types.contains(&1), "{types:?}");
        assert!(
            rest.len() < 4 || rest[..4] != [0, 0, 0, 0],
            "security type None was accepted: {rest:?}"
        );
    }

    /// The x11vnc serving `port`: its command line names a password file
    /// (removed once read), never a password (nor `password`, if known).
    #[cfg(target_os = "linux")]
    fn no_password_on_the_command_line(port: u16, password: Option<&str>) {
        let needle = format!("\0-rfbport\0{port}\0");
        let argv: Vec<String> = std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .find(|c| c.starts_with("x11vnc\0") && c.contains(&needle))
            .expect("the backend's process")
            .split('\0')
            .map(str::to_owned)
            .collect();
        assert!(
            !argv
                .iter()
                .any(|a| a == "-nopw" || a == "-passwd" || a == "-rfbauth"),
            "{argv:?}"
        );
        let i = argv
            .iter()
            .position(|a| a == "-passwdfile")
            .expect("-passwdfile");
        let file = argv[i + 1].strip_prefix("rm:").expect("rm:FILE");
        assert!(
            !std::path::Path::new(file).exists(),
            "x11vnc did not remove the password file {file}"
        );
        if let Some(pw) = password {
            assert!(
                !argv.iter().any(|a| a.contains(pw)),
                "the password is on the command line"
            );
        }
    }

    /// The host's own start of the backend: the password it made opens the
    /// backend, other passwords and none do not, and it is on no command
    /// line; after the guard is dropped the backend is gone.
    #[test]
    fn support_screen_backend_takes_the_sessions_password_from_a_private_file() {
        use outpost_host::support::SupportConfig;
        use outpost_host::support::screen::ScreenCommand;
        use outpost_support_proto::rfb::authenticate_backend;
        env().rt.block_on(async {
            let Some((_x, n)) = display().await else {
                return;
            };
            let cfg = SupportConfig {
                screen_command: Some(
                    [
                        "x11vnc",
                        "-display",
                        &format!(":{n}"),
                        "-localhost",
                        "-rfbport",
                        "{port}",
                        "-once",
                        "-shared",
                        "-passwdfile",
                        "rm:{passwdfile}",
                        "-quiet",
                        "-norc",
                    ]
                    .map(String::from)
                    .to_vec(),
                ),
                ..SupportConfig::default()
            };
            cfg.validate().unwrap();
            let cmd = ScreenCommand::of(&cfg).unwrap();
            let b = cmd.start(false).await.unwrap();
            let pw = b.password.clone().expect("a password");
            let port = b.addr.port();
            #[cfg(target_os = "linux")]
            no_password_on_the_command_line(port, Some(pw.expose()));
            assert!(!format!("{b:?}").contains(pw.expose()));
            intruders_are_refused(port).await;
            // A local process that holds a connection without finishing
            // the handshake does not shut the PC out (`-shared`).
            let mut stalled = tokio::net::TcpStream::connect(b.addr).await.unwrap();
            let mut v = [0u8; 12];
            stalled.read_exact(&mut v).await.unwrap();
            let mut c = tokio::net::TcpStream::connect(b.addr).await.unwrap();
            authenticate_backend(&mut c, Some(&pw)).await.unwrap();
            c.write_all(&[1]).await.unwrap(); // ClientInit
            let w = c.read_u16().await.unwrap();
            assert_eq!(w, 320);
            drop(c);
            drop(stalled);
            // A second start has another password.
            let b2 = cmd.start(true).await.unwrap();
            assert_ne!(b2.password.as_ref().unwrap().expose(), pw.expose());
            drop(b2);
            drop(b);
            stopped(port).await;
        });
    }

    async fn stopped(port: u16) {
        for _ in 0..1000 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_err()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the screen backend on port {port} still listens after the session ended");
    }

    #[test]
    fn support_screen_backend_keeps_key_presses_off_the_display_under_view_only() {
        env().rt.block_on(async {
            let Some((_x, n)) = display().await else {
                return;
            };
            let r = relay_desk_with(&format!(
                "screen-command = [\"x11vnc\", \"-display\", \":{n}\", \"-localhost\", \"-rfbport\", \"{{port}}\", \"-once\", \"-shared\", \"-passwdfile\", \"rm:{{passwdfile}}\", \"-quiet\", \"-norc\"]"
            ))
            .await;
            assert_eq!(keys_down(n), 0);
            // View only: the key press never reaches the display.
            let (down, port) = session(&r, n, &[View]).await;
            assert_eq!(down, 0, "a key press reached the display under view-only");
            stopped(port).await;
            // Control approved: the same key press arrives.
            let (down, port) = session(&r, n, &[View, Control]).await;
            assert!(down > 0, "with control the key press must reach the display");
            stopped(port).await;
        });
    }

    #[test]
    fn support_without_a_screen_backend_offers_neither_view_nor_control() {
        env().rt.block_on(async {
            let d = desk(Setup {
                support: "screen-command = []",
                ..DEFAULT
            });
            let (id, pw) = d.request();
            let e = d.attempt(&id, &pw, &[View, Control]).await.unwrap_err();
            let SupportError::PolicyRefused { reason } = &e else {
                panic!("{e}")
            };
            assert!(reason.contains("no screen backend"), "{reason}");
            let (id, pw) = d.request();
            let (grant, offered) = d
                .connect_and_answer(&id, &pw, &[View, FileTransfer], Some(&[FileTransfer]))
                .await;
            assert_eq!(offered, vec!["file-transfer"]);
            assert_eq!(grant.unwrap().permissions, vec![FileTransfer]);
        });
    }
}

/// `outpost run` serves support requests through the relay: the request
/// and the approval through the CLI (the local API), the engineer through
/// the relay, the end from the CLI closing the engineer's side.
#[test]
fn support_on_the_running_host_is_served_through_the_relay_and_ended_from_the_cli() {
    use super::api::{Host, site};
    use outpost_cloud::relay::{RelayConfig, RelayLimits};
    use outpost_cloud::{NewDevice, Relay, Store, TestPki};
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(&["localhost", "127.0.0.1"]).unwrap();
    let store = Store::open(&dir.path().join("cloud")).unwrap();
    let envelope = outpost_protocol::DeviceKey::generate();
    let device_id = store
        .enroll(&NewDevice {
            email: "lab@example.org".into(),
            name: "Lab".into(),
            instrument_model: "XN-550".into(),
            instrument_id: "i-1".into(),
            serial: "SN-20431".into(),
            device_key: envelope.clone(),
        })
        .unwrap();
    let relay = env().rt.block_on(async {
        Relay::start(RelayConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            tls: outpost_cloud::tls_config(&pki.server_cert_pem, &pki.server_key_pem).unwrap(),
            store,
            limits: RelayLimits::default(),
            tap: None,
        })
        .await
        .unwrap()
    });
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let config = site(dir.path(), &logs);
    outpost_host::uplink::identity::Identity {
        device_id,
        key: envelope.clone(),
        server: "https://127.0.0.1:9".into(),
        enrolled_at: 0,
    }
    .save(&dir.path().join("state"))
    .unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &pki.ca_cert_pem).unwrap();
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "extra-ca-files = []",
        &format!("extra-ca-files = [\"{}\"]", path(&ca)),
    );
    let authority = key(11);
    let support = format!(
        "[support]\nregion = \"eu\"\nauthority-keys = [\"{}\"]\nrelay = \"{}\"\nrelay-server-name = \"localhost\"\nscreen-command = [\"vnc-server-not-installed\", \"{{port}}\", \"{{passwdfile}}\"]\n",
        public_key_to_hex(&authority.verifying_key()),
        relay.addr()
    );
    let (head, modules) = text.split_at(text.find("[[module]]").unwrap());
    std::fs::write(&config, format!("{head}{support}\n{modules}")).unwrap();
    let host = Host::start(&config);
    let json = |out: std::process::Output| -> serde_json::Value {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let registered = || {
        relay
            .stats()
            .registered
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let req = json(host.cli(&["support", "request", "--json"]));
    let id = req["session"]["id"].as_str().unwrap().to_owned();
    let pw = req["password"].as_str().unwrap().to_owned();
    for _ in 0..1500 {
        if registered() >= 1 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        registered(),
        1,
        "the running host did not register the request"
    );
    // The engineer, with the credential and the device's support key.
    let engineer = key(22);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let auth = outpost_support_proto::channel::EngineerAuth {
        credential: issue_credential(
            &CredentialClaims {
                engineer_id: "eng-0042".into(),
                display_name: "Ada Engineer".into(),
                regions: vec!["eu".into()],
                certifications: vec!["privacy-training".into()],
                not_before: now - 60,
                expires: now + 3600,
                engineer_key: engineer.verifying_key(),
            },
            &authority,
        )
        .unwrap(),
        key: engineer,
        password: zeroize::Zeroizing::new(pw.clone()),
        requested: vec![View, Control, FileTransfer],
    };
    let target = outpost_support_proto::relay_wire::RelayTarget::new(
        relay.addr().to_string(),
        "localhost",
        outpost_support_proto::relay_wire::client_tls(&pki.ca_cert_pem).unwrap(),
    )
    .unwrap();
    let device_key = outpost_support_proto::pc::device_identity_key(&envelope).verifying_key();
    let id2 = id.clone();
    let eng = env().rt.spawn(async move {
        outpost_support_proto::engineer::connect(&target, &id2, &device_key, &auth).await
    });
    // The person sees the request and approves view only (file transfer is
    // not offered: this PC holds patient data).
    let mut offered = serde_json::Value::Null;
    for _ in 0..1500 {
        let s = json(host.cli(&["support", "status", &id, "--json"]));
        if s["state"] == "awaiting-approval" {
            offered = s["offered"].clone();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(offered, serde_json::json!(["view", "control"]));
    let out = host.cli(&["support", "approve", &id, "view"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = env().rt.block_on(eng).unwrap().unwrap();
    assert_eq!(s.grant().permissions, vec![View]);
    assert_eq!(
        json(host.cli(&["support", "status", &id, "--json"]))["state"],
        "active"
    );
    // The screen backend was asked for once the grant held view; this one
    // cannot start, and that is recorded.
    let mut shown = serde_json::Value::Null;
    for _ in 0..1500 {
        shown = json(host.cli(&["audit", "show", "--session", &id, "--json"]));
        if shown.to_string().contains("screen-backend-failed") {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        shown.to_string().contains("screen-backend-failed"),
        "{shown}"
    );
    // Ended at the PC: the engineer's side closes.
    let ended = json(host.cli(&["support", "end", &id, "--json"]));
    assert_eq!(ended["state"], "ended");
    let why = env().rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(20), s.closed())
            .await
            .expect("the engineer's session did not close")
    });
    assert!(why.contains("ended by the PC"), "{why}");
    drop(host);
}
