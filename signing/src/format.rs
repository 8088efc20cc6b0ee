//! Low-level reading and writing of the signed-module container: the
//! top-level section list of a component and the `signature` section payload.
//!
//! Everything here is a strict parser: LEB128 numbers must be minimally
//! encoded, every length must fit inside its enclosing item, and nothing may
//! trail an item. The byte layout is documented in the crate root.

use std::ops::Range;

/// The 8-byte preamble of a WebAssembly component (magic `\0asm`, version
/// `0x0d 0x00`, layer `0x01 0x00`).
pub const COMPONENT_HEADER: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];
/// The 8-byte preamble of a core WebAssembly module (refused: outpost runs components).
pub const CORE_MODULE_HEADER: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];

/// Name of the custom section holding the signatures (tool-conventions / wasmsign2).
pub const SIGNATURE_SECTION_NAME: &str = "signature";
/// Name of the wasmsign2 partial-signing delimiter section (refused by outpost).
pub const SIGNATURE_DELIMITER_SECTION_NAME: &str = "signature_delimiter";
/// Name of the custom section holding the canonical-JSON manifest.
pub const MANIFEST_SECTION_NAME: &str = "outpost-manifest";

/// Domain-separation prefix of the signed message.
pub const SIGNATURE_DOMAIN: &[u8; 7] = b"wasmsig";
/// Signature format version (`specification_version`).
pub const SPEC_VERSION: u8 = 0x01;
/// Content type: a WebAssembly module (wasmsign2 uses it for components too).
pub const CONTENT_TYPE_WASM_MODULE: u8 = 0x01;
/// Hash function identifier: SHA-256.
pub const HASH_SHA256: u8 = 0x01;
/// Signature algorithm identifier: Ed25519.
pub const ALG_ED25519: u8 = 0x01;

/// Length of a key id in bytes.
pub const KEY_ID_BYTES: usize = 12;
/// Length of an Ed25519 signature in bytes.
pub const SIGNATURE_BYTES: usize = 64;
/// Largest signed file accepted (bytes).
pub const MAX_SIGNED_MODULE_BYTES: usize = 256 * 1024 * 1024;
/// Most signatures accepted in one file (bounds verification work).
pub const MAX_SIGNATURES: usize = 16;
/// Most signed-hash sets accepted in one `signature` section.
pub const MAX_SIGNED_HASH_SETS: usize = 4;
/// Largest manifest section payload accepted (bytes).
pub const MAX_MANIFEST_BYTES: usize = 64 * 1024;

/// Why bytes could not be read as a signed module container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FormatError {
    /// Byte offset in the file where the problem is.
    pub offset: usize,
    /// What is wrong there.
    pub reason: String,
}

impl FormatError {
    pub(crate) fn at(offset: usize, reason: impl Into<String>) -> FormatError {
        FormatError {
            offset,
            reason: reason.into(),
        }
    }
}

/// A strict cursor over a byte slice; offsets are absolute within the file.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    base: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8], base: usize) -> Reader<'a> {
        Reader {
            bytes,
            pos: 0,
            base,
        }
    }

    pub(crate) fn offset(&self) -> usize {
        self.base + self.pos
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.pos == self.bytes.len()
    }

    pub(crate) fn byte(&mut self, what: &str) -> Result<u8, FormatError> {
        let b = *self.bytes.get(self.pos).ok_or_else(|| {
            FormatError::at(
                self.offset(),
                format!("unexpected end of input reading {what}"),
            )
        })?;
        self.pos += 1;
        Ok(b)
    }

    /// An unsigned LEB128 `u32`, minimally encoded.
    pub(crate) fn leb_u32(&mut self, what: &str) -> Result<u32, FormatError> {
        let start = self.offset();
        let mut value: u64 = 0;
        for i in 0..5u32 {
            let b = self.byte(what)?;
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                if i > 0 && b == 0 {
                    return Err(FormatError::at(
                        start,
                        format!("{what} is not minimally encoded"),
                    ));
                }
                return u32::try_from(value).map_err(|_| {
                    FormatError::at(start, format!("{what} does not fit in 32 bits"))
                });
            }
        }
        Err(FormatError::at(
            start,
            format!("{what} is longer than 5 bytes"),
        ))
    }

    pub(crate) fn take(&mut self, len: usize, what: &str) -> Result<&'a [u8], FormatError> {
        let end = self
            .pos
            .checked_add(len)
            .filter(|end| *end <= self.bytes.len())
            .ok_or_else(|| {
                FormatError::at(
                    self.offset(),
                    format!(
                        "{what} of {len} bytes runs past the end ({} bytes left)",
                        self.bytes.len() - self.pos
                    ),
                )
            })?;
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    /// A `vec(byte)`: LEB128 length then that many bytes.
    pub(crate) fn slice(&mut self, what: &str) -> Result<&'a [u8], FormatError> {
        let len = self.leb_u32(what)? as usize;
        self.take(len, what)
    }

    pub(crate) fn expect_end(&self, what: &str) -> Result<(), FormatError> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(FormatError::at(
                self.offset(),
                format!(
                    "{} unexpected trailing bytes after {what}",
                    self.bytes.len() - self.pos
                ),
            ))
        }
    }
}

/// Append `v` as minimal unsigned LEB128.
pub(crate) fn put_leb(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let mut b = (v & 0x7f) as u8;
        v >>= 7;
        if v != 0 {
            b |= 0x80;
        }
        out.push(b);
        if v == 0 {
            return;
        }
    }
}

/// Append a length-prefixed byte vector.
pub(crate) fn put_slice(out: &mut Vec<u8>, bytes: &[u8]) {
    put_leb(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// Encode a whole custom section (id 0, size, name, payload).
pub(crate) fn custom_section(name: &str, payload: &[u8]) -> Vec<u8> {
    let mut inner = Vec::with_capacity(name.len() + payload.len() + 5);
    put_slice(&mut inner, name.as_bytes());
    inner.extend_from_slice(payload);
    let mut out = Vec::with_capacity(inner.len() + 6);
    out.push(0);
    put_slice(&mut out, &inner);
    out
}

/// One top-level section of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RawSection<'a> {
    /// Section id (0 = custom).
    pub id: u8,
    /// Byte range of the whole section (id byte to end of payload) in the file.
    pub range: Range<usize>,
    /// Custom-section name (only for id 0).
    pub name: Option<&'a str>,
    /// Payload after the custom-section name (or whole payload for other ids).
    pub payload: &'a [u8],
    /// Offset of `payload` in the file.
    pub payload_offset: usize,
}

/// Split a component into its top-level sections. The header must be the
/// component header; section payloads other than custom-section names are
/// not interpreted (the compiler validates them later, after verification).
pub(crate) fn sections(bytes: &[u8]) -> Result<Vec<RawSection<'_>>, FormatError> {
    if bytes.len() > MAX_SIGNED_MODULE_BYTES {
        return Err(FormatError::at(
            MAX_SIGNED_MODULE_BYTES,
            format!(
                "file is {} bytes, at most {MAX_SIGNED_MODULE_BYTES} accepted",
                bytes.len()
            ),
        ));
    }
    if bytes.len() < 8 {
        return Err(FormatError::at(
            0,
            "file is shorter than the 8-byte wasm header",
        ));
    }
    if bytes[..8] == CORE_MODULE_HEADER {
        return Err(FormatError::at(
            0,
            "file is a core wasm module, not a component (header 00 61 73 6d 0d 00 01 00 expected)",
        ));
    }
    if bytes[..8] != COMPONENT_HEADER {
        return Err(FormatError::at(
            0,
            "file does not start with the component header 00 61 73 6d 0d 00 01 00",
        ));
    }
    let mut r = Reader::new(&bytes[8..], 8);
    let mut out = Vec::new();
    while !r.is_empty() {
        let start = r.offset();
        let id = r.byte("section id")?;
        if id & 0x80 != 0 {
            return Err(FormatError::at(
                start,
                format!("section id 0x{id:02x} is not valid"),
            ));
        }
        let payload = r.slice("section")?;
        let payload_offset = r.offset() - payload.len();
        let (name, payload, payload_offset) = if id == 0 {
            let mut pr = Reader::new(payload, payload_offset);
            let name_bytes = pr.slice("custom section name")?;
            let name = std::str::from_utf8(name_bytes)
                .map_err(|_| FormatError::at(payload_offset, "custom section name is not UTF-8"))?;
            let rest_offset = pr.offset();
            let rest = &payload[rest_offset - payload_offset..];
            (Some(name), rest, rest_offset)
        } else {
            (None, payload, payload_offset)
        };
        out.push(RawSection {
            id,
            range: start..r.offset(),
            name,
            payload,
            payload_offset,
        });
    }
    Ok(out)
}

/// One signature inside a signed-hash set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RawSignature {
    pub key_id: [u8; KEY_ID_BYTES],
    pub signature: [u8; SIGNATURE_BYTES],
    /// Offset of the signature bytes in the file (for diagnostics and tests).
    #[allow(dead_code)]
    pub offset: usize,
}

/// A set of hashes and the signatures over them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RawSignedHashes {
    pub hashes: Vec<[u8; 32]>,
    pub signatures: Vec<RawSignature>,
}

/// Parse the payload of the `signature` section (after its name).
pub(crate) fn parse_signature_payload(
    payload: &[u8],
    offset: usize,
) -> Result<Vec<RawSignedHashes>, FormatError> {
    let mut r = Reader::new(payload, offset);
    let at = r.offset();
    let version = r.byte("specification version")?;
    if version != SPEC_VERSION {
        return Err(FormatError::at(
            at,
            format!("specification version 0x{version:02x} is not supported (0x01 expected)"),
        ));
    }
    let at = r.offset();
    let content = r.byte("content type")?;
    if content != CONTENT_TYPE_WASM_MODULE {
        return Err(FormatError::at(
            at,
            format!("content type 0x{content:02x} is not supported (0x01 expected)"),
        ));
    }
    let at = r.offset();
    let hash_fn = r.byte("hash function")?;
    if hash_fn != HASH_SHA256 {
        return Err(FormatError::at(
            at,
            format!("hash function 0x{hash_fn:02x} is not supported (0x01 sha-256 expected)"),
        ));
    }
    let at = r.offset();
    let sets = r.leb_u32("signed hash set count")? as usize;
    if sets == 0 || sets > MAX_SIGNED_HASH_SETS {
        return Err(FormatError::at(
            at,
            format!("{sets} signed hash sets, 1..={MAX_SIGNED_HASH_SETS} accepted"),
        ));
    }
    let mut out = Vec::with_capacity(sets);
    let mut total_signatures = 0usize;
    for _ in 0..sets {
        let set_bytes = r.slice("signed hash set")?;
        let mut s = Reader::new(set_bytes, r.offset() - set_bytes.len());
        let at = s.offset();
        let hash_count = s.leb_u32("hash count")? as usize;
        if hash_count != 1 {
            return Err(FormatError::at(
                at,
                format!(
                    "{hash_count} hashes in a signed hash set; exactly 1 accepted (partial signatures are refused)"
                ),
            ));
        }
        let hash: [u8; 32] = s.take(32, "sha-256 hash")?.try_into().expect("32 bytes");
        let at = s.offset();
        let sig_count = s.leb_u32("signature count")? as usize;
        total_signatures += sig_count;
        if sig_count == 0 || total_signatures > MAX_SIGNATURES {
            return Err(FormatError::at(
                at,
                format!("{sig_count} signatures in a set; 1..={MAX_SIGNATURES} in total accepted"),
            ));
        }
        let mut signatures = Vec::with_capacity(sig_count);
        for _ in 0..sig_count {
            let sig_bytes = s.slice("signature entry")?;
            let mut e = Reader::new(sig_bytes, s.offset() - sig_bytes.len());
            let at = e.offset();
            let key_id = e.slice("key id")?;
            let key_id: [u8; KEY_ID_BYTES] = key_id.try_into().map_err(|_| {
                FormatError::at(
                    at,
                    format!("key id is {} bytes, {KEY_ID_BYTES} expected (signatures without a key id are refused)", key_id.len()),
                )
            })?;
            let at = e.offset();
            let alg = e.byte("algorithm id")?;
            if alg != ALG_ED25519 {
                return Err(FormatError::at(
                    at,
                    format!(
                        "signature algorithm 0x{alg:02x} is not supported (0x01 ed25519 expected)"
                    ),
                ));
            }
            let at = e.offset();
            let sig = e.slice("signature")?;
            let signature: [u8; SIGNATURE_BYTES] = sig.try_into().map_err(|_| {
                FormatError::at(
                    at,
                    format!(
                        "signature is {} bytes, {SIGNATURE_BYTES} expected",
                        sig.len()
                    ),
                )
            })?;
            e.expect_end("signature entry")?;
            signatures.push(RawSignature {
                key_id,
                signature,
                offset: e.offset() - SIGNATURE_BYTES,
            });
        }
        s.expect_end("signed hash set")?;
        out.push(RawSignedHashes {
            hashes: vec![hash],
            signatures,
        });
    }
    r.expect_end("signature section")?;
    Ok(out)
}

/// Encode a `signature` section payload (after the name).
pub(crate) fn encode_signature_payload(sets: &[RawSignedHashes]) -> Vec<u8> {
    let mut out = vec![SPEC_VERSION, CONTENT_TYPE_WASM_MODULE, HASH_SHA256];
    put_leb(&mut out, sets.len() as u64);
    for set in sets {
        let mut s = Vec::new();
        put_leb(&mut s, set.hashes.len() as u64);
        for h in &set.hashes {
            s.extend_from_slice(h);
        }
        put_leb(&mut s, set.signatures.len() as u64);
        for sig in &set.signatures {
            let mut e = Vec::with_capacity(2 + KEY_ID_BYTES + 2 + SIGNATURE_BYTES);
            put_slice(&mut e, &sig.key_id);
            e.push(ALG_ED25519);
            put_slice(&mut e, &sig.signature);
            put_slice(&mut s, &e);
        }
        put_slice(&mut out, &s);
    }
    out
}

/// The message an Ed25519 signature covers: `"wasmsig" ‖ 01 ‖ 01 ‖ 01 ‖ hash`.
pub(crate) fn signed_message(hash: &[u8; 32]) -> [u8; 42] {
    let mut msg = [0u8; 42];
    msg[..7].copy_from_slice(SIGNATURE_DOMAIN);
    msg[7] = SPEC_VERSION;
    msg[8] = CONTENT_TYPE_WASM_MODULE;
    msg[9] = HASH_SHA256;
    msg[10..].copy_from_slice(hash);
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leb(bytes: &[u8]) -> Result<u32, FormatError> {
        let mut r = Reader::new(bytes, 0);
        let v = r.leb_u32("n")?;
        r.expect_end("n")?;
        Ok(v)
    }

    #[test]
    fn leb128_is_strict() {
        for (bytes, want) in [
            (&[0x00][..], Some(0)),
            (&[0x7f], Some(127)),
            (&[0x80, 0x01], Some(128)),
            (&[0xff, 0xff, 0xff, 0xff, 0x0f], Some(u32::MAX)),
            (&[0x80, 0x00], None),                         // not minimal
            (&[0xff, 0xff, 0xff, 0xff, 0x1f], None),       // > u32
            (&[0x80, 0x80, 0x80, 0x80, 0x80, 0x00], None), // too long
            (&[0x80], None),                               // truncated
        ] {
            assert_eq!(leb(bytes).ok(), want, "{bytes:02x?}");
        }
        for v in [0u64, 1, 127, 128, 16383, 16384, u32::MAX as u64] {
            let mut out = Vec::new();
            put_leb(&mut out, v);
            assert_eq!(leb(&out).unwrap() as u64, v);
        }
    }

    #[test]
    fn sections_split_and_refuse_bad_shapes() {
        let mut file = COMPONENT_HEADER.to_vec();
        file.extend(custom_section("a", b"xyz"));
        file.extend([0x01, 0x02, 0xaa, 0xbb]);
        let s = sections(&file).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].name, Some("a"));
        assert_eq!(s[0].payload, b"xyz");
        assert_eq!(s[1].id, 1);
        assert_eq!(s[1].payload, [0xaa, 0xbb]);
        assert_eq!(s[1].range, file.len() - 4..file.len());

        let mut truncated = file.clone();
        truncated.pop();
        assert!(sections(&truncated).is_err());
        let mut core = file.clone();
        core[..8].copy_from_slice(&CORE_MODULE_HEADER);
        let FormatError { reason, .. } = sections(&core).unwrap_err();
        assert!(reason.contains("core wasm module"), "{reason}");
        assert!(sections(&file[..7]).is_err());
    }

    #[test]
    fn signature_payload_round_trips() {
        let sets = vec![RawSignedHashes {
            hashes: vec![[7; 32]],
            signatures: vec![
                RawSignature {
                    key_id: [1; 12],
                    signature: [2; 64],
                    offset: 0,
                },
                RawSignature {
                    key_id: [3; 12],
                    signature: [4; 64],
                    offset: 0,
                },
            ],
        }];
        let bytes = encode_signature_payload(&sets);
        let back = parse_signature_payload(&bytes, 0).unwrap();
        assert_eq!(back[0].hashes, sets[0].hashes);
        assert_eq!(back[0].signatures[1].signature, [4; 64]);
        assert_eq!(back[0].signatures[1].key_id, [3; 12]);
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(parse_signature_payload(&longer, 0).is_err());
    }
}
