//! Dead letters (issue #19): nothing the uplink refuses is dropped silently.
//! A record the PHI guard refuses is kept sealed (never plaintext in the
//! database), counted and announced; a batch the cloud refuses is listed with
//! them; `outpost uplink dead-letters` lists, retries and discards, each
//! action audited.

use outpost_host::events::{Events, HostEvent};
use outpost_host::store::Db;
use outpost_host::store::deadletter::{DeadLetterId, Refusal, Source};
use outpost_host::store::spool::Spool;
use outpost_host::uplink::identity::Identity;
use outpost_host::uplink::{EnqueueError, Uplink};
use outpost_protocol as p;
use std::path::Path;
use std::process::Command;

/// An SSN in free text, which the guard refuses (and which must never be
/// found in the database file in the clear).
const SSN_TEXT: &str = "operator pasted SSN 321-54-9876 into the comment";

fn identity() -> Identity {
    Identity {
        device_id: p::DeviceId::parse("dead-letter-test").unwrap(),
        key: p::DeviceKey::generate(),
        server: "https://127.0.0.1:9".into(),
        enrolled_at: 0,
    }
}

fn uplink_in(state: &Path, id: Identity) -> (Uplink, Events) {
    let (uplink, events, _) = uplink_with_db(state, id);
    (uplink, events)
}

fn uplink_with_db(state: &Path, id: Identity) -> (Uplink, Events, Db) {
    let events = Events::default();
    let db = Db::open(state).unwrap();
    let uplink = Uplink::new(Spool::new(db.clone()), events.clone());
    uplink.set_identity(Some(id));
    (uplink, events, db)
}

fn event(text: &str) -> p::Record {
    p::Record::Event(p::InstrumentEvent {
        instrument: p::Instrument {
            model: "XN-550".into(),
            serial: "SN-1".into(),
        },
        severity: p::Severity::Warning,
        code: "W-0412".into(),
        text: text.into(),
        time: None,
    })
}

/// Every byte SQLite holds for the state directory (database and WAL).
fn database_bytes(state: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    for f in std::fs::read_dir(state).unwrap() {
        let f = f.unwrap().path();
        if f.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("outpost.db")
        {
            all.extend(std::fs::read(f).unwrap());
        }
    }
    all
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[test]
fn a_record_the_guard_refuses_is_kept_sealed_counted_and_announced_once() {
    let dir = tempfile::tempdir().unwrap();
    let (uplink, events) = uplink_in(dir.path(), identity());
    let mut rx = events.subscribe();
    let batch = vec![event("W-0001 fine"), event(SSN_TEXT), event("W-0003 fine")];
    let err = uplink
        .enqueue("collector", "events", batch.clone())
        .unwrap_err();
    let EnqueueError::Guard(v) = err else {
        panic!("{err:?}")
    };
    assert_eq!((v.record, v.field), (1, "text"));
    // The module drops the record and queues the rest (as the collector does).
    uplink
        .enqueue(
            "collector",
            "events",
            vec![batch[0].clone(), batch[2].clone()],
        )
        .unwrap();
    // The same record refused again (a re-read after a crash): one dead
    // letter, counted twice.
    uplink
        .enqueue("collector", "events", vec![event(SSN_TEXT)])
        .unwrap_err();

    let held = uplink.spool().dead_letters().list().unwrap();
    assert_eq!(held.len(), 1, "{held:?}");
    let d = &held[0];
    assert_eq!(d.id.source, Source::Guard);
    assert_eq!(
        (
            d.module.as_str(),
            d.stream.as_str(),
            d.reason.as_str(),
            d.field.as_deref(),
            d.records,
            d.refusals
        ),
        ("collector", "events", "ssn", Some("text"), 1, 2)
    );
    let counters = uplink.spool().counters().unwrap();
    assert_eq!(counters["guard-refused"], 2);
    assert_eq!(counters["guard-dead-letter:events"], 1);
    assert_eq!(counters["guard-dead-letter-repeat"], 1);
    let seen: Vec<HostEvent> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
    let dead: Vec<_> = seen
        .iter()
        .filter_map(|e| match e {
            HostEvent::DeadLettered {
                id,
                source,
                reason,
                field,
                repeated,
                ..
            } => Some((
                id.clone(),
                *source,
                reason.clone(),
                field.clone(),
                *repeated,
            )),
            _ => None,
        })
        .collect();
    let id = d.id.to_string();
    assert_eq!(
        dead,
        [
            (
                id.clone(),
                Source::Guard,
                "ssn".into(),
                Some("text".into()),
                false
            ),
            (id, Source::Guard, "ssn".into(), Some("text".into()), true),
        ]
    );
    // Neither the event nor the database holds the value.
    assert!(!format!("{seen:?}").contains("321-54-9876"));
    let bytes = database_bytes(dir.path());
    assert!(!contains(&bytes, "321-54-9876") && !contains(&bytes, "pasted"));
    // The sealed record opens with the device key, and only with it.
    let (_, _, sealed) = uplink.spool().dead_letters().body(d.id).unwrap().unwrap();
    let opened = p::open(&uplink.identity().unwrap().key, &sealed).unwrap();
    assert_eq!(opened.body.records, [event(SSN_TEXT)]);
    assert!(p::open(&p::DeviceKey::generate(), &sealed).is_err());
}

#[test]
fn a_retry_checks_again_and_a_passing_record_is_queued_once() {
    let dir = tempfile::tempdir().unwrap();
    let (uplink, _events) = uplink_in(dir.path(), identity());
    uplink
        .enqueue("collector", "events", vec![event(SSN_TEXT)])
        .unwrap_err();
    let refused = uplink.spool().dead_letters().list().unwrap()[0].id;
    // Refused again: kept, and the audit says why (no value).
    let err = uplink.retry_dead_letter(refused, "tester").unwrap_err();
    assert!(
        err.to_string().contains("refused by the guard again"),
        "{err}"
    );
    assert!(!err.to_string().contains("321"), "{err}");
    assert_eq!(uplink.spool().dead_letters().list().unwrap().len(), 1);

    // A record a later guard passes (kept by an older one): stored as the
    // host stores a refusal, then retried into the outbox exactly once.
    let id = uplink.identity().unwrap();
    let fine = event("W-0007 now passes");
    let kept = uplink
        .spool()
        .dead_letters()
        .keep_refused(
            Refusal {
                module: "collector",
                stream: "events",
                finding: "person-name",
                field: "text",
                digest: b"older guard",
            },
            |row| {
                p::seal(
                    &id.key,
                    &id.device_id,
                    "events",
                    row as u64,
                    &p::BatchBody {
                        created_at: 0,
                        records: vec![fine.clone()],
                    },
                )
                .map_err(|e| e.to_string())
            },
        )
        .unwrap();
    let seq = uplink.retry_dead_letter(kept.id, "tester").unwrap();
    let batches = uplink.spool().list().unwrap();
    assert_eq!(batches.len(), 1);
    assert_eq!(
        (batches[0].seq as u64, batches[0].stream.as_str()),
        (seq, "events")
    );
    assert_eq!(uplink.read_back(seq as i64).unwrap().records, [fine]);
    // Gone from the dead letters; a second retry finds nothing.
    assert!(matches!(
        uplink.retry_dead_letter(kept.id, "tester"),
        Err(outpost_host::store::deadletter::DeadLetterError::NotFound(
            _
        ))
    ));
    assert_eq!(uplink.spool().list().unwrap().len(), 1);
    let audit = uplink.spool().dead_letters().audit(10).unwrap();
    let actions: Vec<_> = audit
        .iter()
        .rev()
        .map(|a| {
            (
                a.who.as_str(),
                a.action.as_str(),
                a.target.clone(),
                a.outcome.clone(),
            )
        })
        .collect();
    assert_eq!(actions.len(), 3);
    assert!(actions[0].3.starts_with("kept: refused by the guard again"));
    assert_eq!(actions[1].3, format!("queued as batch {seq}"));
    assert_eq!(actions[2].3, "not found");
    assert!(actions.iter().all(|a| a.0 == "tester" && a.1 == "retry"));
}

/// A dead-letter store that cannot keep the refused record answers
/// `unavailable`-like (the module keeps its data): refused into nowhere never.
#[test]
fn a_refusal_that_cannot_be_kept_is_not_a_refusal() {
    let dir = tempfile::tempdir().unwrap();
    let (uplink, _events, db) = uplink_with_db(dir.path(), identity());
    uplink
        .enqueue("collector", "events", vec![event("W-1 warm up")])
        .unwrap();
    // The database cannot grow: the dead letter cannot be written.
    db.limit_size(1).unwrap();
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let big: String = (0..2000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            format!("{x:016x} ")
        })
        .collect();
    let err = uplink
        .enqueue(
            "collector",
            "events",
            vec![event(&format!("SSN 321-54-9876 {big}"))],
        )
        .unwrap_err();
    assert!(matches!(err, EnqueueError::DeadLetter(_)), "{err:?}");
    assert!(uplink.spool().dead_letters().list().unwrap().is_empty());
}

fn outpost(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_outpost"))
        .args(args)
        .env("USER", "lab-admin")
        .env("USERNAME", "lab-admin")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn outpost_uplink_dead_letters_lists_retries_and_discards_with_an_audit() {
    let site = tempfile::tempdir().unwrap();
    let state = site.path().join("state");
    let config = site.path().join("outpost.toml");
    std::fs::write(&config, outpost_artifacts::example_config(&state, 300)).unwrap();
    let id = identity();
    id.save(&state).unwrap();
    let (uplink, _events) = uplink_in(&state, Identity::load(&state).unwrap());
    uplink
        .enqueue("collector", "events", vec![event(SSN_TEXT)])
        .unwrap_err();
    // A batch the cloud refused (as the sender moves it aside).
    let seq = uplink
        .enqueue("collector", "events", vec![event("W-0009 big one")])
        .unwrap();
    uplink
        .spool()
        .dead_letter(seq as i64, "the server refused the batch: 413 too large")
        .unwrap();
    let config = config.to_str().unwrap();

    let (ok, out, err) = outpost(&["uplink", "dead-letters", "--config", config]);
    assert!(ok, "{err}");
    assert!(
        out.contains("g1 ") && out.contains(&format!("c{seq} ")),
        "{out}"
    );
    assert!(
        out.contains("ssn in text") && out.contains("413 too large"),
        "{out}"
    );
    assert!(!out.contains("321-54") && !out.contains("W-0009"), "{out}");

    let (ok, out, err) = outpost(&["uplink", "dead-letters", "--json", "--config", config]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let list = v["dead-letters"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["id"], "g1");
    assert_eq!(list[0]["source"], "guard");
    assert_eq!(list[0]["field"], "text");
    assert_eq!(list[1]["source"], "cloud");
    assert_eq!(list[1]["records"], 1);

    // Retry both: the cloud's batch goes back to the outbox under a new
    // sequence; the guard's record is refused again and stays (exit 1).
    let (ok, out, _) = outpost(&[
        "uplink",
        "dead-letters",
        "retry",
        "--all",
        "--config",
        config,
    ]);
    assert!(!ok, "one stays: {out}");
    assert!(
        out.contains("g1: kept: ") && out.contains(&format!("c{seq}: queued as batch")),
        "{out}"
    );
    let waiting = uplink.spool().list().unwrap();
    assert_eq!(waiting.len(), 1);
    assert!(waiting[0].seq > seq as i64);
    assert_eq!(
        uplink.read_back(waiting[0].seq).unwrap().records,
        [event("W-0009 big one")]
    );

    // Bad ids are named; discard the rest.
    let (ok, _, err) = outpost(&[
        "uplink",
        "dead-letters",
        "discard",
        "x7",
        "--config",
        config,
    ]);
    assert!(!ok && err.contains("`x7` is not a dead-letter id"), "{err}");
    let (ok, out, err) = outpost(&[
        "uplink",
        "dead-letters",
        "discard",
        "g1",
        "--config",
        config,
    ]);
    assert!(ok, "{out}{err}");
    assert!(uplink.spool().dead_letters().list().unwrap().is_empty());
    let (ok, out, _) = outpost(&[
        "uplink",
        "dead-letters",
        "discard",
        "g1",
        "--config",
        config,
    ]);
    assert!(!ok && out.contains("no dead letter g1"), "{out}");

    // Every action is in the audit, with who.
    let (_, out, _) = outpost(&["uplink", "dead-letters", "--json", "--config", config]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let audit: Vec<(String, String, String)> = v["audit"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .map(|a| {
            assert_eq!(a["who"], "lab-admin (cli)");
            (
                a["action"].as_str().unwrap().into(),
                a["target"].as_str().unwrap().into(),
                a["outcome"].as_str().unwrap().chars().take(9).collect(),
            )
        })
        .collect();
    assert_eq!(
        audit,
        [
            ("retry".into(), "g1".into(), "kept: ref".into()),
            ("retry".into(), format!("c{seq}"), "queued as".into()),
            ("discard".into(), "g1".into(), "discarded".into()),
            ("discard".into(), "g1".into(), "not found".into()),
        ]
    );
    let (_, out, _) = outpost(&["uplink", "--json", "--config", config]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["dead-letters"]["guard"], 0);
    assert_eq!(v["counters"]["retried-dead-letters"], 1);
    assert_eq!(v["counters"]["discarded-dead-letters"], 1);
}

#[test]
fn dead_letter_ids_parse_strictly() {
    for (text, id) in [("g12", (Source::Guard, 12)), ("C7", (Source::Cloud, 7))] {
        let got: DeadLetterId = text.parse().unwrap();
        assert_eq!((got.source, got.n), id);
    }
    for bad in [
        "",
        "g",
        "12",
        "g-1",
        "g1x",
        "x1",
        "g99999999999999999999",
        "g 1",
    ] {
        assert!(bad.parse::<DeadLetterId>().is_err(), "{bad:?}");
    }
}
