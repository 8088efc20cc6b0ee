//! The one error type of the protocol crate.

/// What was wrong with an envelope, a key, an identifier or a message.
///
/// Messages never contain payload content or key material.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ProtocolError {
    /// The envelope does not start with `b"OPE1"`.
    #[error("bad envelope magic (expected OPE1)")]
    BadMagic,
    /// The envelope ended before the named part was complete.
    #[error("envelope truncated in the {what}")]
    Truncated {
        /// Which part was incomplete (e.g. "stream", "nonce", "ciphertext").
        what: &'static str,
    },
    /// A stream name is empty, longer than 32 or not `[a-z0-9-]`.
    #[error("bad stream name (want 1..=32 of [a-z0-9-])")]
    BadStream,
    /// A device id is empty, longer than 64 or not `[A-Za-z0-9-]`.
    #[error("bad device id (want 1..=64 of [A-Za-z0-9-])")]
    BadDeviceId,
    /// A device key is not 64 hexadecimal characters.
    #[error("bad device key (want 64 hex characters)")]
    BadKey,
    /// The envelope is larger than [`crate::MAX_ENVELOPE_BYTES`].
    #[error("envelope too large ({len} bytes, limit {limit})")]
    TooLarge {
        /// Size of the envelope (or of the would-be envelope).
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// Wrong key, or any byte of header, nonce, ciphertext or tag changed.
    #[error("envelope authentication failed")]
    AuthenticationFailed,
    /// The authenticated plaintext is not a valid zstd stream.
    #[error("plaintext decompression failed")]
    Decompress,
    /// The decompressed plaintext exceeds [`crate::MAX_PLAINTEXT_BYTES`].
    #[error("decompressed plaintext exceeds {limit} bytes")]
    TooLargePlaintext {
        /// The limit.
        limit: usize,
    },
    /// The plaintext JSON is not a valid body (message without payload content).
    #[error("bad body: {0}")]
    BadBody(String),
    /// A request message failed validation (names the field).
    #[error("invalid request: {0}")]
    Invalid(String),
}

impl ProtocolError {
    /// A `BadBody` from a serde_json error: category, line and column only,
    /// never the offending content.
    pub(crate) fn body(err: &serde_json::Error) -> Self {
        let cat = match err.classify() {
            serde_json::error::Category::Io => "io",
            serde_json::error::Category::Syntax => "syntax",
            serde_json::error::Category::Data => "data",
            serde_json::error::Category::Eof => "eof",
        };
        // serde_json's Data messages quote unknown field / variant names,
        // which come from the payload: report only the category and position.
        ProtocolError::BadBody(format!(
            "{cat} error at line {} column {}",
            err.line(),
            err.column()
        ))
    }
}
