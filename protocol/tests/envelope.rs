//! Envelope properties: round trip, tamper and swap resistance, limits.

use std::io::Write;

use outpost_protocol::*;

fn inst() -> Instrument {
    Instrument {
        model: "XN-550".into(),
        serial: "SN-778899".into(),
    }
}

fn body() -> BatchBody {
    BatchBody {
        created_at: 1_700_000_123,
        records: vec![
            Record::Qc(QcResult {
                instrument: inst(),
                analyte: "WBC".into(),
                value: "7.1".into(),
                unit: "10*3/uL".into(),
                reference_range: "6.5-7.5".into(),
                flags: vec!["H".into()],
                control_lot: "LOT42".into(),
                control_level: "1".into(),
                run_time: Some(Timestamp {
                    seconds: 1_700_000_000,
                    nanoseconds: 250,
                }),
            }),
            Record::Maintenance(MaintenanceEvent {
                instrument: inst(),
                action: "probe cleaning".into(),
                outcome: "ok".into(),
                time: None,
            }),
            Record::Event(InstrumentEvent {
                instrument: inst(),
                severity: Severity::Critical,
                code: "E-1203".into(),
                text: "aspiration error".into(),
                time: None,
            }),
            Record::Software(SoftwareStatus {
                instrument: inst(),
                component: "analyzer-firmware".into(),
                version: "4.2.1".into(),
                state: InstallState::Failed,
            }),
            Record::Heartbeat(Heartbeat {
                instrument: inst(),
                time: Timestamp {
                    seconds: 1,
                    nanoseconds: 2,
                },
            }),
        ],
    }
}

fn dev() -> DeviceId {
    DeviceId::parse("0123456789abcdef0123456789abcdef").unwrap()
}

#[test]
fn round_trip() {
    let key = DeviceKey::generate();
    let b = body();
    let env = seal(&key, &dev(), "qc", 42, &b).unwrap();
    assert_eq!(&env[..4], b"OPE1");
    let (h, hlen) = EnvelopeHeader::parse(&env).unwrap();
    assert_eq!(h.device, dev());
    assert_eq!(h.stream, "qc");
    assert_eq!(h.sequence, 42);
    assert_eq!(hlen, 4 + 1 + 2 + 1 + 32 + 8);
    assert_eq!(&env[hlen - 8..hlen], &42u64.to_be_bytes());
    let o = open(&key, &env).unwrap();
    assert_eq!(o.header, h);
    assert_eq!(o.body, b);
    assert_eq!(o.plaintext_len, serde_json::to_vec(&b).unwrap().len());
    assert_eq!(env.len(), hlen + NONCE_LEN + o.compressed_len + TAG_LEN);
    // Two seals of the same content differ (random nonce).
    let env2 = seal(&key, &dev(), "qc", 42, &b).unwrap();
    assert_ne!(env, env2);
    // seal_bytes of the same JSON opens to the same body.
    let env3 = seal_bytes(&key, &dev(), "qc", 42, &serde_json::to_vec(&b).unwrap()).unwrap();
    assert_eq!(open(&key, &env3).unwrap().body, b);
}

#[test]
fn every_single_byte_flip_is_refused() {
    let key = DeviceKey::generate();
    let env = seal(&key, &dev(), "qc", 7, &body()).unwrap();
    for i in 0..env.len() {
        for mask in [0x01u8, 0x80, 0xff] {
            let mut t = env.clone();
            t[i] ^= mask;
            match open(&key, &t) {
                Err(
                    ProtocolError::AuthenticationFailed
                    | ProtocolError::BadMagic
                    | ProtocolError::BadStream
                    | ProtocolError::BadDeviceId
                    | ProtocolError::Truncated { .. },
                ) => {}
                other => panic!("flip at {i} mask {mask:#x}: {other:?}"),
            }
        }
    }
}

#[test]
fn truncations_and_extensions_are_refused() {
    let key = DeviceKey::generate();
    let env = seal(&key, &dev(), "qc", 7, &body()).unwrap();
    for n in 0..env.len() {
        assert!(open(&key, &env[..n]).is_err(), "prefix {n}");
    }
    let mut longer = env.clone();
    longer.push(0);
    assert_eq!(
        open(&key, &longer).unwrap_err(),
        ProtocolError::AuthenticationFailed
    );
    assert_eq!(
        EnvelopeHeader::parse(b"XXXX").unwrap_err(),
        ProtocolError::BadMagic
    );
}

#[test]
fn wrong_key_is_refused() {
    let key = DeviceKey::generate();
    let env = seal(&key, &dev(), "qc", 7, &body()).unwrap();
    assert_eq!(
        open(&DeviceKey::generate(), &env).unwrap_err(),
        ProtocolError::AuthenticationFailed
    );
}

/// Rebuild `env` with its nonce and ciphertext under another header.
fn reheader(env: &[u8], device: &DeviceId, stream: &str, sequence: u64) -> Vec<u8> {
    let (_, hlen) = EnvelopeHeader::parse(env).unwrap();
    let mut out = EnvelopeHeader {
        device: device.clone(),
        stream: stream.into(),
        sequence,
    }
    .encode()
    .unwrap();
    out.extend_from_slice(&env[hlen..]);
    out
}

#[test]
fn header_swap_is_refused() {
    let key = DeviceKey::generate();
    let env = seal(&key, &dev(), "qc", 7, &body()).unwrap();
    // Sanity: the same header re-encoded opens.
    assert!(open(&key, &reheader(&env, &dev(), "qc", 7)).is_ok());
    let other_dev = DeviceId::parse("other-device").unwrap();
    for swapped in [
        reheader(&env, &dev(), "qc", 8),
        reheader(&env, &dev(), "qd", 7),
        reheader(&env, &dev(), "logs", 7),
        reheader(&env, &other_dev, "qc", 7),
    ] {
        assert_eq!(
            open(&key, &swapped).unwrap_err(),
            ProtocolError::AuthenticationFailed
        );
    }
}

#[test]
fn zip_bomb_is_refused_while_decompressing() {
    let key = DeviceKey::generate();
    // ~80 MiB of zeros streamed through the encoder: never held in memory.
    let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 19).unwrap();
    let chunk = vec![b' '; 1024 * 1024];
    enc.write_all(b"{\"created-at\":1,\"records\":[").unwrap();
    for _ in 0..80 {
        enc.write_all(&chunk).unwrap();
    }
    enc.write_all(b"]}").unwrap();
    let compressed = enc.finish().unwrap();
    assert!(compressed.len() < 64 * 1024, "{}", compressed.len());
    let env = seal_compressed(&key, &dev(), "qc", 1, &compressed).unwrap();
    assert!(env.len() < MAX_ENVELOPE_BYTES);
    assert_eq!(
        open(&key, &env).unwrap_err(),
        ProtocolError::TooLargePlaintext {
            limit: MAX_PLAINTEXT_BYTES
        }
    );
    // The bounded decoder stops at limit + 1 bytes.
    assert_eq!(
        decompress_bounded(&compressed, 1000).unwrap_err(),
        ProtocolError::TooLargePlaintext { limit: 1000 }
    );
}

#[test]
fn garbage_plaintext_is_decompress_error() {
    let key = DeviceKey::generate();
    let env = seal_compressed(&key, &dev(), "qc", 1, b"not zstd at all").unwrap();
    assert_eq!(open(&key, &env).unwrap_err(), ProtocolError::Decompress);
}

#[test]
fn unknown_json_fields_are_refused() {
    let key = DeviceKey::generate();
    let mut v = serde_json::to_value(body()).unwrap();
    v["records"][0]["patient-name"] = "John Doe".into();
    let env = seal_bytes(&key, &dev(), "qc", 1, &serde_json::to_vec(&v).unwrap()).unwrap();
    let err = open(&key, &env).unwrap_err();
    assert!(matches!(err, ProtocolError::BadBody(_)), "{err:?}");
    // The message names no payload content.
    let msg = err.to_string();
    assert!(!msg.contains("patient") && !msg.contains("John"), "{msg}");

    let mut v = serde_json::to_value(body()).unwrap();
    v["extra"] = 1.into();
    let env = seal_bytes(&key, &dev(), "qc", 1, &serde_json::to_vec(&v).unwrap()).unwrap();
    assert!(matches!(
        open(&key, &env).unwrap_err(),
        ProtocolError::BadBody(_)
    ));
}

#[test]
fn limits_and_names_are_checked_when_sealing() {
    let key = DeviceKey::generate();
    assert_eq!(
        seal(&key, &dev(), "QC", 1, &body()).unwrap_err(),
        ProtocolError::BadStream
    );
    assert_eq!(
        seal(&key, &dev(), &"a".repeat(33), 1, &body()).unwrap_err(),
        ProtocolError::BadStream
    );
    let big = vec![0u8; MAX_ENVELOPE_BYTES];
    assert!(matches!(
        seal_compressed(&key, &dev(), "qc", 1, &big).unwrap_err(),
        ProtocolError::TooLarge { .. }
    ));
    let huge = vec![0u8; MAX_ENVELOPE_BYTES + 1];
    assert!(matches!(
        EnvelopeHeader::parse(&huge).unwrap_err(),
        ProtocolError::TooLarge { .. }
    ));
}

#[test]
fn device_key_debug_is_redacted() {
    let key = DeviceKey::generate();
    let dbg = format!("{key:?} {:#?}", key);
    assert!(!dbg.contains(&key.to_hex()));
    assert!(dbg.contains("<redacted>"));
}
