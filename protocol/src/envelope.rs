//! The sealed envelope: layout, sealing and opening. The byte-by-byte layout
//! is documented in the crate docs.

use std::io::Read;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use rand_core::{OsRng, RngCore};
use serde::de::DeserializeOwned;

use crate::identity::{DeviceId, DeviceKey, validate_stream};
use crate::{BatchBody, ProtocolError};

/// The four magic bytes at the start of every envelope (format version 1).
pub const MAGIC: &[u8; 4] = b"OPE1";
/// Largest envelope accepted or produced: 16 MiB.
pub const MAX_ENVELOPE_BYTES: usize = 16 * 1024 * 1024;
/// Largest decompressed plaintext accepted or produced: 64 MiB.
pub const MAX_PLAINTEXT_BYTES: usize = 64 * 1024 * 1024;
/// Length of the AES-GCM nonce.
pub const NONCE_LEN: usize = 12;
/// Length of the AES-GCM tag appended to the ciphertext.
pub const TAG_LEN: usize = 16;
/// zstd compression level of the plaintext.
pub const ZSTD_LEVEL: i32 = 3;
/// Largest zstd window the decoder accepts (2^27 = 128 MiB, zstd's default
/// limit), bounding the decoder's own memory for hostile frames.
const ZSTD_WINDOW_LOG_MAX: u32 = 27;

/// The cleartext, authenticated header of an envelope (readable without a key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvelopeHeader {
    /// The sending device.
    pub device: DeviceId,
    /// The uplink stream (`[a-z0-9-]`, 1..=32).
    pub stream: String,
    /// The device's sequence number for this envelope.
    pub sequence: u64,
}

impl EnvelopeHeader {
    /// Parse the header of `bytes` without a key (the server uses it to find
    /// the device's key). Returns the header and its length in bytes (the
    /// nonce starts there). Also checks the overall size limit and that a
    /// nonce and at least a tag follow. Nothing here is authenticated yet.
    pub fn parse(bytes: &[u8]) -> Result<(EnvelopeHeader, usize), ProtocolError> {
        if bytes.len() > MAX_ENVELOPE_BYTES {
            return Err(ProtocolError::TooLarge {
                len: bytes.len(),
                limit: MAX_ENVELOPE_BYTES,
            });
        }
        let mut r = Cursor { b: bytes, pos: 0 };
        let magic = r.take(4, "magic")?;
        if magic != MAGIC {
            return Err(ProtocolError::BadMagic);
        }
        let slen = usize::from(r.take(1, "stream length")?[0]);
        let stream = r.take(slen, "stream")?;
        let stream = std::str::from_utf8(stream).map_err(|_| ProtocolError::BadStream)?;
        validate_stream(stream)?;
        let dlen = usize::from(r.take(1, "device id length")?[0]);
        let device = r.take(dlen, "device id")?;
        let device = std::str::from_utf8(device).map_err(|_| ProtocolError::BadDeviceId)?;
        let device = DeviceId::parse(device)?;
        let seq = r.take(8, "sequence")?;
        let mut s = [0u8; 8];
        s.copy_from_slice(seq);
        let sequence = u64::from_be_bytes(s);
        let header_len = r.pos;
        r.take(NONCE_LEN, "nonce")?;
        r.take(TAG_LEN, "ciphertext")?;
        Ok((
            EnvelopeHeader {
                device,
                stream: stream.to_owned(),
                sequence,
            },
            header_len,
        ))
    }

    /// Encode the header (magic through sequence): these bytes are the AAD.
    pub fn encode(&self) -> Result<Vec<u8>, ProtocolError> {
        validate_stream(&self.stream)?;
        // DeviceId is valid by construction.
        let d = self.device.as_str().as_bytes();
        let s = self.stream.as_bytes();
        let mut out = Vec::with_capacity(4 + 1 + s.len() + 1 + d.len() + 8);
        out.extend_from_slice(MAGIC);
        out.push(u8::try_from(s.len()).map_err(|_| ProtocolError::BadStream)?);
        out.extend_from_slice(s);
        out.push(u8::try_from(d.len()).map_err(|_| ProtocolError::BadDeviceId)?);
        out.extend_from_slice(d);
        out.extend_from_slice(&self.sequence.to_be_bytes());
        Ok(out)
    }
}

struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], ProtocolError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or(ProtocolError::Truncated { what })?;
        let s = &self.b[self.pos..end];
        self.pos = end;
        Ok(s)
    }
}

/// A successfully opened batch envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// The authenticated header.
    pub header: EnvelopeHeader,
    /// The decoded batch.
    pub body: BatchBody,
    /// Length of the compressed plaintext (ciphertext length minus tag).
    pub compressed_len: usize,
    /// Length of the decompressed JSON.
    pub plaintext_len: usize,
}

/// zstd-compress (level [`ZSTD_LEVEL`]) a plaintext of at most
/// [`MAX_PLAINTEXT_BYTES`].
pub fn compress(plaintext: &[u8]) -> Result<Vec<u8>, ProtocolError> {
    if plaintext.len() > MAX_PLAINTEXT_BYTES {
        return Err(ProtocolError::TooLargePlaintext {
            limit: MAX_PLAINTEXT_BYTES,
        });
    }
    // One compression context per thread, reused: a fresh one per batch
    // costs an allocation and a clear of its tables; and the one-shot API
    // knows the input's size, so a small batch gets small tables (and the
    // frame names its content size).
    thread_local! {
        static COMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Compressor<'static>>> =
            const { std::cell::RefCell::new(None) };
    }
    COMPRESSOR
        .with(|c| {
            let mut c = c.borrow_mut();
            if c.is_none() {
                *c = Some(zstd::bulk::Compressor::new(ZSTD_LEVEL)?);
            }
            c.as_mut().expect("set above").compress(plaintext)
        })
        .map_err(|_| ProtocolError::Decompress)
}

/// Decompress zstd data, refusing (with
/// [`ProtocolError::TooLargePlaintext`]) as soon as the output would exceed
/// `limit` bytes: at most `limit + 1` bytes are ever produced.
pub fn decompress_bounded(compressed: &[u8], limit: usize) -> Result<Vec<u8>, ProtocolError> {
    let mut dec = zstd::stream::read::Decoder::with_buffer(compressed)
        .map_err(|_| ProtocolError::Decompress)?;
    dec.window_log_max(ZSTD_WINDOW_LOG_MAX)
        .map_err(|_| ProtocolError::Decompress)?;
    let mut out = Vec::with_capacity(compressed.len().saturating_mul(4).min(limit));
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    dec.take(cap)
        .read_to_end(&mut out)
        .map_err(|_| ProtocolError::Decompress)?;
    if out.len() > limit {
        return Err(ProtocolError::TooLargePlaintext { limit });
    }
    Ok(out)
}

/// Seal a batch: canonical JSON of `body`, zstd, AES-256-GCM under `key`.
pub fn seal(
    key: &DeviceKey,
    device: &DeviceId,
    stream: &str,
    sequence: u64,
    body: &BatchBody,
) -> Result<Vec<u8>, ProtocolError> {
    let json = serde_json::to_vec(body).map_err(|e| ProtocolError::body(&e))?;
    seal_bytes(key, device, stream, sequence, &json)
}

/// Seal an already-serialized JSON plaintext (the host stores batches as
/// JSON). The JSON is not checked here; the receiver checks it.
pub fn seal_bytes(
    key: &DeviceKey,
    device: &DeviceId,
    stream: &str,
    sequence: u64,
    plaintext_json: &[u8],
) -> Result<Vec<u8>, ProtocolError> {
    let compressed = compress(plaintext_json)?;
    seal_compressed(key, device, stream, sequence, &compressed)
}

/// Low-level: seal bytes that are already zstd-compressed (no check that they
/// are). Used by tests to build hostile envelopes with a valid tag.
pub fn seal_compressed(
    key: &DeviceKey,
    device: &DeviceId,
    stream: &str,
    sequence: u64,
    compressed: &[u8],
) -> Result<Vec<u8>, ProtocolError> {
    let header = EnvelopeHeader {
        device: device.clone(),
        stream: stream.to_owned(),
        sequence,
    }
    .encode()?;
    let total = header.len() + NONCE_LEN + compressed.len() + TAG_LEN;
    if total > MAX_ENVELOPE_BYTES {
        return Err(ProtocolError::TooLarge {
            len: total,
            limit: MAX_ENVELOPE_BYTES,
        });
    }
    let mut nonce = [0u8; NONCE_LEN];
    OsRng.fill_bytes(&mut nonce);
    let cipher = Aes256Gcm::new(key.as_bytes().into());
    let ct = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: compressed,
                aad: &header,
            },
        )
        // Encryption fails only for inputs beyond GCM's length limit.
        .map_err(|_| ProtocolError::TooLarge {
            len: total,
            limit: MAX_ENVELOPE_BYTES,
        })?;
    let mut out = header;
    out.reserve_exact(NONCE_LEN + ct.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    Ok(out)
}

/// Authenticate and decrypt an envelope, returning the header and the
/// still-compressed plaintext (what the cloud stores). Nothing of the
/// plaintext is looked at.
pub fn open_compressed(
    key: &DeviceKey,
    bytes: &[u8],
) -> Result<(EnvelopeHeader, Vec<u8>), ProtocolError> {
    let (header, hlen) = EnvelopeHeader::parse(bytes)?;
    let aad = &bytes[..hlen];
    let nonce = &bytes[hlen..hlen + NONCE_LEN];
    let ct = &bytes[hlen + NONCE_LEN..];
    let cipher = Aes256Gcm::new(key.as_bytes().into());
    let compressed = cipher
        .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad })
        .map_err(|_| ProtocolError::AuthenticationFailed)?;
    Ok((header, compressed))
}

/// Authenticate, decrypt and decompress (bounded) an envelope, returning the
/// header, the plaintext JSON bytes and the compressed length.
pub fn open_bytes(
    key: &DeviceKey,
    bytes: &[u8],
) -> Result<(EnvelopeHeader, Vec<u8>, usize), ProtocolError> {
    let (header, compressed) = open_compressed(key, bytes)?;
    let plain = decompress_bounded(&compressed, MAX_PLAINTEXT_BYTES)?;
    Ok((header, plain, compressed.len()))
}

pub(crate) fn parse_json<T: DeserializeOwned>(plain: &[u8]) -> Result<T, ProtocolError> {
    serde_json::from_slice(plain).map_err(|e| ProtocolError::body(&e))
}

/// Open a batch envelope: authenticate, decrypt, decompress (bounded) and
/// parse the [`BatchBody`] (unknown fields refused).
pub fn open(key: &DeviceKey, bytes: &[u8]) -> Result<Opened, ProtocolError> {
    let (header, plain, compressed_len) = open_bytes(key, bytes)?;
    let body = parse_json(&plain)?;
    Ok(Opened {
        header,
        body,
        compressed_len,
        plaintext_len: plain.len(),
    })
}
