//! The end-to-end channel between the engineer and the PC: a Noise
//! `XX` handshake (X25519, ChaCha20-Poly1305, SHA-256) over whatever byte
//! stream the relay pairs, then Noise transport messages, each in one
//! length-prefixed frame.
//!
//! * Message 1, engineer → PC: `e`.
//! * Message 2, PC → engineer: `e, ee, s, es`; payload: the device's Ed25519
//!   signature over [`device_binding_message`] (the session id and the PC's
//!   fresh Noise static key) and the broker's 32-byte challenge. The engineer
//!   verifies the signature with the device key it was given: a relay (or
//!   anyone) without the device key cannot complete the handshake.
//! * Message 3, engineer → PC: `s, se`; payload: the staff credential, the
//!   one-time password, the requested permissions and the credential key's
//!   signature over [`challenge_message`] (session id, challenge and
//!   handshake hash: the signature is valid for this channel only).
//! * Then the PC's first transport message is [`Msg::Welcome`] or
//!   [`Msg::Refused`].
//!
//! Transport nonces are implicit and counted by each side: a frame altered,
//! dropped, replayed or reordered on the way fails to decrypt, and the
//! session ends with [`ChannelError::Tampered`]; nothing after it is read.

use std::sync::{Arc, Mutex};

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use zeroize::{Zeroize, Zeroizing};

use crate::authz::{
    Authorizer, ConnectAttempt, Grant, Permission, Refusal, RefusalCode, challenge_message,
};
use crate::frame::{FrameError, MAX_FRAME_BYTES, read_frame};
use crate::msg::{MAX_PLAINTEXT_BYTES, Msg, MsgError};

/// The Noise protocol name. `XX`: neither side knows the other's Noise
/// static key in advance; identities are proven by Ed25519 signatures in the
/// handshake payloads (the device key over the PC's static key, the staff
/// credential key over the handshake hash), and both statics travel
/// encrypted, so the relay learns neither.
pub const NOISE_PARAMS: &str = "Noise_XX_25519_ChaChaPoly_SHA256";
/// Prologue prefix (the session id follows): both sides must agree on the
/// protocol version and the session, or the handshake fails.
pub const PROLOGUE_CONTEXT: &[u8] = b"outpost-support/v1 noise\0";
/// Domain separation of the device's signature over the PC's Noise key.
pub const DEVICE_BINDING_CONTEXT: &[u8] = b"outpost-support/v1 pc-static\0";
/// How long the PC waits for each of the engineer's handshake messages
/// (the broker's decision, which may wait for the person, is not bounded
/// here).
pub const HANDSHAKE_READ_TIMEOUT_MS: u64 = 30_000;
/// Largest message-3 payload the PC accepts.
const MAX_HELLO_PAYLOAD: usize = 16 * 1024;

/// Why the channel failed.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// Reading or writing a frame failed.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// A frame did not decrypt: altered, replayed, reordered or dropped on
    /// the way. The session is over.
    #[error(
        "the end-to-end channel is broken: a frame was altered, replayed, reordered or dropped on the way"
    )]
    Tampered,
    /// The Noise handshake failed for another reason.
    #[error("noise handshake: {0}")]
    Handshake(String),
    /// The PC's Noise key is not signed by the device key the engineer
    /// expects.
    #[error(
        "the PC did not prove it holds the expected device key (a wrong device key, or someone in the middle)"
    )]
    WrongDevice,
    /// The PC refused the attempt.
    #[error("refused by the PC: {0}")]
    Refused(Refusal),
    /// A message did not parse.
    #[error(transparent)]
    Msg(#[from] MsgError),
    /// The peer broke the protocol.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// The engineer did not send its handshake message in time.
    #[error(
        "the engineer's handshake message did not arrive within {HANDSHAKE_READ_TIMEOUT_MS} ms"
    )]
    HandshakeTimeout,
}

async fn read_in_time<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
) -> Result<(), ChannelError> {
    tokio::time::timeout(
        std::time::Duration::from_millis(HANDSHAKE_READ_TIMEOUT_MS),
        read_frame(r, buf, MAX_FRAME_BYTES),
    )
    .await
    .map_err(|_| ChannelError::HandshakeTimeout)??;
    Ok(())
}

fn noise_err(e: snow::Error) -> ChannelError {
    match e {
        snow::Error::Decrypt => ChannelError::Tampered,
        other => ChannelError::Handshake(other.to_string()),
    }
}

/// The bytes the device key signs: a context, the session id and the PC's
/// Noise static public key.
pub fn device_binding_message(session_id: &str, pc_static: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(DEVICE_BINDING_CONTEXT.len() + 1 + session_id.len() + 32);
    m.extend_from_slice(DEVICE_BINDING_CONTEXT);
    // Session ids are at most 64 bytes (relay_wire::validate_session_id).
    m.push(u8::try_from(session_id.len()).unwrap_or(u8::MAX));
    m.extend_from_slice(session_id.as_bytes());
    m.extend_from_slice(pc_static);
    m
}

fn prologue(session_id: &str) -> Vec<u8> {
    let mut p = PROLOGUE_CONTEXT.to_vec();
    p.extend_from_slice(session_id.as_bytes());
    p
}

/// What the engineer presents in message 3. `Debug` hides the password.
#[derive(Serialize, Deserialize)]
struct EngineerHello {
    credential: String,
    signature: String,
    password: String,
    requested: Vec<Permission>,
}

impl Drop for EngineerHello {
    fn drop(&mut self) {
        self.password.zeroize();
    }
}

/// How the engineer authenticates.
pub struct EngineerAuth {
    /// The staff credential (opaque to this crate; the PC's broker verifies it).
    pub credential: Vec<u8>,
    /// The credential's private key.
    pub key: SigningKey,
    /// The session's one-time password.
    pub password: Zeroizing<String>,
    /// The permissions to ask for.
    pub requested: Vec<Permission>,
}

impl std::fmt::Debug for EngineerAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineerAuth")
            .field("requested", &self.requested)
            .finish_non_exhaustive()
    }
}

/// A completed handshake's transport keys and counters, shared by the
/// reading and the writing half.
#[derive(Clone)]
pub struct Transport(Arc<Mutex<snow::TransportState>>);

impl Transport {
    fn new(t: snow::TransportState) -> Self {
        Transport(Arc::new(Mutex::new(t)))
    }

    fn seal(&self, plain: &[u8], out: &mut [u8]) -> Result<usize, ChannelError> {
        let mut t = self
            .0
            .lock()
            .map_err(|_| ChannelError::Protocol("poisoned".into()))?;
        t.write_message(plain, out).map_err(noise_err)
    }

    fn open(&self, cipher: &[u8], out: &mut [u8]) -> Result<usize, ChannelError> {
        let mut t = self
            .0
            .lock()
            .map_err(|_| ChannelError::Protocol("poisoned".into()))?;
        t.read_message(cipher, out).map_err(|e| match e {
            snow::Error::Decrypt | snow::Error::Input => ChannelError::Tampered,
            other => ChannelError::Handshake(other.to_string()),
        })
    }
}

/// The sending half: encodes, encrypts and frames [`Msg`]s.
pub struct SealWriter<W> {
    w: W,
    t: Transport,
    plain: Vec<u8>,
    framed: Vec<u8>,
}

impl<W: AsyncWrite + Unpin> SealWriter<W> {
    /// A writer over `w` with the keys of `t`.
    pub fn new(w: W, t: Transport) -> Self {
        SealWriter {
            w,
            t,
            plain: Vec::with_capacity(MAX_PLAINTEXT_BYTES),
            framed: vec![0; 2 + MAX_FRAME_BYTES],
        }
    }

    /// Send one message (buffered; see [`SealWriter::flush`]).
    pub async fn send(&mut self, m: &Msg) -> Result<(), ChannelError> {
        m.encode(&mut self.plain);
        if self.plain.len() > MAX_PLAINTEXT_BYTES {
            return Err(ChannelError::Protocol(format!(
                "a message of {} bytes exceeds {MAX_PLAINTEXT_BYTES}",
                self.plain.len()
            )));
        }
        let n = self.t.seal(&self.plain, &mut self.framed[2..])?;
        let len = u16::try_from(n).map_err(|_| ChannelError::Protocol("frame too large".into()))?;
        self.framed[..2].copy_from_slice(&len.to_be_bytes());
        self.w
            .write_all(&self.framed[..2 + n])
            .await
            .map_err(FrameError::Io)?;
        Ok(())
    }

    /// Flush buffered messages to the connection.
    pub async fn flush(&mut self) -> Result<(), ChannelError> {
        self.w.flush().await.map_err(FrameError::Io)?;
        Ok(())
    }

    /// Flush and close the sending direction.
    pub async fn shutdown(&mut self) -> Result<(), ChannelError> {
        self.w.shutdown().await.map_err(FrameError::Io)?;
        Ok(())
    }
}

/// The receiving half: reads frames, decrypts and decodes [`Msg`]s.
pub struct OpenReader<R> {
    r: R,
    t: Transport,
    frame: Vec<u8>,
    plain: Vec<u8>,
}

impl<R: AsyncRead + Unpin> OpenReader<R> {
    /// A reader over `r` with the keys of `t`.
    pub fn new(r: R, t: Transport) -> Self {
        OpenReader {
            r,
            t,
            frame: Vec::with_capacity(MAX_FRAME_BYTES),
            plain: vec![0; MAX_FRAME_BYTES],
        }
    }

    /// The next message. Any error ends the session: after it, nothing more
    /// may be read.
    pub async fn recv(&mut self) -> Result<Msg, ChannelError> {
        read_frame(&mut self.r, &mut self.frame, MAX_FRAME_BYTES).await?;
        let n = self.t.open(&self.frame, &mut self.plain)?;
        Ok(Msg::decode(&self.plain[..n])?)
    }
}

async fn send_raw<S: AsyncWrite + Unpin>(s: &mut S, body: &[u8]) -> Result<(), ChannelError> {
    crate::frame::write_frame(s, body).await?;
    s.flush().await.map_err(FrameError::Io)?;
    Ok(())
}

/// The engineer's side of the handshake over `s` (already paired by the
/// relay): verify the PC's device binding, authenticate, and read the PC's
/// decision. Returns the transport keys and the grant.
pub async fn initiate<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    session_id: &str,
    device_key: &VerifyingKey,
    auth: &EngineerAuth,
) -> Result<(Transport, Grant), ChannelError> {
    let params: snow::params::NoiseParams = NOISE_PARAMS
        .parse()
        .map_err(|e: snow::Error| ChannelError::Handshake(e.to_string()))?;
    let static_key = snow::Builder::new(params.clone())
        .generate_keypair()
        .map_err(noise_err)?;
    let prologue = prologue(session_id);
    let mut hs = snow::Builder::new(params)
        .local_private_key(&static_key.private)
        .and_then(|b| b.prologue(&prologue))
        .and_then(|b| b.build_initiator())
        .map_err(noise_err)?;

    let mut out = vec![0u8; MAX_FRAME_BYTES];
    let mut inb = Vec::with_capacity(MAX_FRAME_BYTES);
    let mut payload = vec![0u8; MAX_FRAME_BYTES];

    let n = hs.write_message(&[], &mut out).map_err(noise_err)?;
    send_raw(s, &out[..n]).await?;

    read_frame(s, &mut inb, MAX_FRAME_BYTES).await?;
    let n = hs.read_message(&inb, &mut payload).map_err(noise_err)?;
    if n != 96 {
        return Err(ChannelError::Protocol(format!(
            "the PC's handshake payload holds {n} bytes, not 96"
        )));
    }
    let pc_static = hs
        .get_remote_static()
        .ok_or_else(|| ChannelError::Handshake("no PC static key".into()))?
        .to_vec();
    let sig_bytes: [u8; 64] = payload[..64]
        .try_into()
        .map_err(|_| ChannelError::WrongDevice)?;
    let sig = ed25519_dalek::Signature::from_bytes(&sig_bytes);
    device_key
        .verify_strict(&device_binding_message(session_id, &pc_static), &sig)
        .map_err(|_| ChannelError::WrongDevice)?;
    let mut challenge = [0u8; 32];
    challenge.copy_from_slice(&payload[64..96]);
    let binding: [u8; 32] = hs
        .get_handshake_hash()
        .try_into()
        .map_err(|_| ChannelError::Handshake("handshake hash is not 32 bytes".into()))?;

    let signature = auth
        .key
        .sign(&challenge_message(session_id, &challenge, &binding));
    let mut requested = auth.requested.clone();
    requested.sort_unstable();
    requested.dedup();
    let hello = EngineerHello {
        credential: hex::encode(&auth.credential),
        signature: hex::encode(signature.to_bytes()),
        password: auth.password.as_str().to_owned(),
        requested,
    };
    let body = Zeroizing::new(
        serde_json::to_vec(&hello).map_err(|e| ChannelError::Protocol(e.to_string()))?,
    );
    drop(hello);
    let n = hs.write_message(&body, &mut out).map_err(noise_err)?;
    send_raw(s, &out[..n]).await?;
    out[..n].zeroize();

    let t = Transport::new(hs.into_transport_mode().map_err(noise_err)?);
    let mut reader = OpenReader::new(&mut *s, t.clone());
    match reader.recv().await? {
        Msg::Welcome(grant) => Ok((t, grant)),
        Msg::Refused(r) => Err(ChannelError::Refused(r)),
        other => Err(ChannelError::Protocol(format!(
            "expected the PC's decision, got {}",
            msg_name(&other)
        ))),
    }
}

/// What the PC's side of the handshake produced.
pub struct Accepted {
    /// Transport keys.
    pub transport: Transport,
    /// The grant, already sent to the engineer.
    pub grant: Grant,
}

/// The PC's side of the handshake over `s`: prove the device key, take the
/// engineer's presentation to `authorizer`, and send its decision. The grant
/// is narrowed to the permissions the engineer asked for (a broker cannot
/// grant more than was requested).
pub async fn respond<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    session_id: &str,
    device_key: &SigningKey,
    authorizer: &dyn Authorizer,
    connection: String,
) -> Result<Accepted, ChannelError> {
    let params: snow::params::NoiseParams = NOISE_PARAMS
        .parse()
        .map_err(|e: snow::Error| ChannelError::Handshake(e.to_string()))?;
    let static_key = snow::Builder::new(params.clone())
        .generate_keypair()
        .map_err(noise_err)?;
    let prologue = prologue(session_id);
    let mut hs = snow::Builder::new(params)
        .local_private_key(&static_key.private)
        .and_then(|b| b.prologue(&prologue))
        .and_then(|b| b.build_responder())
        .map_err(noise_err)?;

    let mut out = vec![0u8; MAX_FRAME_BYTES];
    let mut inb = Vec::with_capacity(MAX_FRAME_BYTES);
    let mut payload = Zeroizing::new(vec![0u8; MAX_FRAME_BYTES]);

    read_in_time(s, &mut inb).await?;
    hs.read_message(&inb, &mut payload).map_err(noise_err)?;

    // A refused challenge still completes the handshake, so the refusal
    // reaches the engineer encrypted and authenticated.
    let challenge = authorizer.challenge(session_id);
    let challenge_bytes = *challenge.as_ref().unwrap_or(&[0u8; 32]);
    let sig = device_key.sign(&device_binding_message(session_id, &static_key.public));
    let mut p2 = Vec::with_capacity(96);
    p2.extend_from_slice(&sig.to_bytes());
    p2.extend_from_slice(&challenge_bytes);
    let n = hs.write_message(&p2, &mut out).map_err(noise_err)?;
    send_raw(s, &out[..n]).await?;
    let binding: [u8; 32] = hs
        .get_handshake_hash()
        .try_into()
        .map_err(|_| ChannelError::Handshake("handshake hash is not 32 bytes".into()))?;

    read_in_time(s, &mut inb).await?;
    let n = hs.read_message(&inb, &mut payload).map_err(noise_err)?;
    let t = Transport::new(hs.into_transport_mode().map_err(noise_err)?);
    let mut w = SealWriter::new(&mut *s, t.clone());

    let decision = match (challenge, parse_hello(&payload[..n])) {
        (Err(r), _) => Err(r),
        (Ok(_), Err(r)) => Err(r),
        (Ok(_), Ok(hello)) => {
            let requested = hello.requested.clone();
            let attempt = ConnectAttempt {
                session_id: session_id.to_owned(),
                password: hello.password.clone(),
                credential: hex::decode(&hello.credential).unwrap_or_default(),
                challenge_signature: hex::decode(&hello.signature).unwrap_or_default(),
                channel_binding: binding,
                requested: requested.clone(),
                connection,
            };
            drop(hello);
            authorizer.connect(attempt).await.map(|mut g| {
                g.permissions.retain(|p| requested.contains(p));
                g.permissions.sort_unstable();
                g.permissions.dedup();
                g
            })
        }
    };
    match decision {
        Ok(grant) => {
            w.send(&Msg::Welcome(grant.clone())).await?;
            w.flush().await?;
            Ok(Accepted {
                transport: t,
                grant,
            })
        }
        Err(r) => {
            w.send(&Msg::Refused(r.clone())).await?;
            w.flush().await?;
            let _ = w.shutdown().await;
            Err(ChannelError::Refused(r))
        }
    }
}

fn parse_hello(b: &[u8]) -> Result<EngineerHello, Refusal> {
    if b.len() > MAX_HELLO_PAYLOAD {
        return Err(Refusal::new(
            RefusalCode::BadCredential,
            format!("the engineer's presentation exceeds {MAX_HELLO_PAYLOAD} bytes"),
        ));
    }
    let hello: EngineerHello = serde_json::from_slice(b).map_err(|_| {
        Refusal::new(
            RefusalCode::BadCredential,
            "the engineer's presentation is malformed",
        )
    })?;
    if hex::decode(&hello.credential).is_err() || hex::decode(&hello.signature).is_err() {
        return Err(Refusal::new(
            RefusalCode::BadCredential,
            "the engineer's credential or signature is not hex",
        ));
    }
    Ok(hello)
}

/// A message's kind, for errors (never its content).
pub fn msg_name(m: &Msg) -> &'static str {
    match m {
        Msg::Welcome(_) => "welcome",
        Msg::Refused(_) => "refused",
        Msg::End(_) => "end",
        Msg::TcpOpen(_) => "tcp-open",
        Msg::TcpData(..) => "tcp-data",
        Msg::TcpClose(_) => "tcp-close",
        Msg::PutStart(..) => "put-start",
        Msg::PutReady(_) => "put-ready",
        Msg::PutChunk(..) => "put-chunk",
        Msg::PutEnd(..) => "put-end",
        Msg::GetStart(..) => "get-start",
        Msg::GetMeta(..) => "get-meta",
        Msg::GetChunk(..) => "get-chunk",
        Msg::GetEnd(..) => "get-end",
        Msg::FileOk(..) => "file-ok",
        Msg::Deny(..) => "deny",
    }
}
