//! The RFB (VNC) security handshake, ended at the PC on both sides.
//!
//! The per-session screen backend listens on loopback with a fresh random
//! password ([`VncPassword`]), so a local process that connects to its port
//! before the engineer is refused. The PC, not the engineer, knows that
//! password: [`authenticate_backend`] runs the client's half of the
//! handshake against the backend (RFB 3.3, 3.7 or 3.8; security type 2,
//! "VNC Authentication", a DES challenge-response), and
//! [`ViewerHandshake`] runs the server's half towards the engineer's viewer
//! through the end-to-end channel, offering only security type 1 ("None").
//! After both, the two streams are joined from the viewer's `ClientInit`
//! on, whose format is the same in every version.
//!
//! Architecture Invariant: the backend's password never leaves the PC: it
//! is not sent through the channel, not logged, and not shown by `Debug`.
//! The channel itself (Noise, the engineer's credential, the person's
//! approval) is what admits the engineer; VNC authentication only keeps
//! other local processes off the backend's loopback port.

use std::time::Duration;

use des::Des;
use des::cipher::{BlockEncrypt, KeyInit, generic_array::GenericArray};
use rand_core::{OsRng, RngCore};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use zeroize::Zeroizing;

/// Characters in a backend password: VNC Authentication uses at most 8.
pub const VNC_PASSWORD_CHARS: usize = 8;
/// The characters of backend passwords: 64, so each byte of OS randomness
/// maps without bias (48 bits in all). None of them starts a comment or a
/// special line in x11vnc's password file.
const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.-";
/// How long the backend may take over its half of the handshake.
pub const BACKEND_HANDSHAKE_TIMEOUT_MS: u64 = 5_000;
/// The longest reason string read from a backend.
const MAX_REASON_BYTES: u32 = 4_096;
/// The version the PC speaks on both sides.
const VERSION_3_8: &[u8; 12] = b"RFB 003.008\n";

/// RFB security type 1.
const SECURITY_NONE: u8 = 1;
/// RFB security type 2.
const SECURITY_VNC_AUTH: u8 = 2;

/// A screen backend's per-session password: 8 characters drawn from the OS
/// CSPRNG. Zeroed when dropped; `Debug` shows no character of it.
#[derive(Clone)]
pub struct VncPassword(Zeroizing<String>);

impl VncPassword {
    /// A new random password.
    pub fn generate() -> VncPassword {
        let mut bytes = Zeroizing::new([0u8; VNC_PASSWORD_CHARS]);
        OsRng.fill_bytes(&mut bytes[..]);
        let mut s = Zeroizing::new(String::with_capacity(VNC_PASSWORD_CHARS));
        for b in bytes.iter() {
            s.push(ALPHABET[usize::from(b % 64)] as char);
        }
        VncPassword(s)
    }

    /// A given password (a backend set up by hand; tests). VNC
    /// Authentication uses its first 8 bytes.
    pub fn from_text(text: &str) -> VncPassword {
        VncPassword(Zeroizing::new(text.to_owned()))
    }

    /// The password in clear, for the backend's password file only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The DES key of VNC Authentication: the first 8 bytes, zero-padded,
    /// each byte's bits reversed (VNC's historical quirk).
    fn des_key(&self) -> Zeroizing<[u8; 8]> {
        let mut key = Zeroizing::new([0u8; 8]);
        for (k, b) in key.iter_mut().zip(self.0.as_bytes()) {
            *k = b.reverse_bits();
        }
        key
    }

    /// The answer to a VNC Authentication challenge: both 8-byte halves
    /// encrypted with DES under [`Self::des_key`].
    pub fn respond(&self, challenge: &[u8; 16]) -> [u8; 16] {
        let key = self.des_key();
        let des = Des::new_from_slice(&key[..]).expect("DES takes an 8-byte key");
        let mut out = *challenge;
        for half in out.chunks_exact_mut(8) {
            des.encrypt_block(GenericArray::from_mut_slice(half));
        }
        out
    }
}

impl std::fmt::Debug for VncPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VncPassword(..)")
    }
}

/// Why a VNC security handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum RfbError {
    /// The backend did not finish its half in time.
    #[error(
        "the screen backend did not finish the VNC security handshake within {} ms (waiting for its {stage})",
        BACKEND_HANDSHAKE_TIMEOUT_MS
    )]
    Timeout {
        /// What the PC was waiting for.
        stage: &'static str,
    },
    /// The peer does not speak RFB 3.x.
    #[error("the {peer} does not speak RFB 3.x (it sent {version:?})")]
    NotRfb {
        /// "screen backend" or "viewer".
        peer: &'static str,
        /// What it sent instead of a version.
        version: String,
    },
    /// The backend refused the connection before security (its reason).
    #[error("the screen backend refused the connection: {0}")]
    Refused(String),
    /// The backend was given a password but does not ask for one.
    #[error(
        "the screen backend offers no VNC Authentication (security type 2), only types {0:?}: it would let any local process in"
    )]
    NoVncAuth(Vec<u8>),
    /// The backend asks for a password but none was set for it.
    #[error(
        "the screen backend offers no security type 1 (None), only types {0:?}, and no password was set for it"
    )]
    PasswordNeeded(Vec<u8>),
    /// The backend refused the password.
    #[error("the screen backend refused the session's password: {0}")]
    AuthFailed(String),
    /// The viewer broke the handshake.
    #[error("the viewer broke the VNC handshake: {0}")]
    Viewer(String),
    /// Reading or writing failed.
    #[error("the VNC handshake with the screen backend failed: {0}")]
    Io(#[from] std::io::Error),
}

/// The RFB 3.x minor version both sides then speak: 3.8, 3.7, or 3.3 for
/// anything older (RFC 6143 §7.1.1).
fn parse_version(peer: &'static str, v: &[u8; 12]) -> Result<u8, RfbError> {
    let bad = || RfbError::NotRfb {
        peer,
        version: String::from_utf8_lossy(v).escape_debug().to_string(),
    };
    if &v[..4] != b"RFB " || v[7] != b'.' || v[11] != b'\n' {
        return Err(bad());
    }
    let num = |s: &[u8]| -> Option<u32> { std::str::from_utf8(s).ok()?.parse().ok() };
    let (Some(major), Some(minor)) = (num(&v[4..7]), num(&v[8..11])) else {
        return Err(bad());
    };
    if major != 3 {
        return Err(bad());
    }
    Ok(match minor {
        m if m >= 8 => 8,
        7 => 7,
        _ => 3,
    })
}

async fn read_reason<S: AsyncRead + Unpin>(s: &mut S) -> Result<String, RfbError> {
    let n = s.read_u32().await?;
    let mut b = vec![0u8; n.min(MAX_REASON_BYTES) as usize];
    s.read_exact(&mut b).await?;
    Ok(String::from_utf8_lossy(&b).into_owned())
}

/// The client's half of the security handshake with the screen backend,
/// within [`BACKEND_HANDSHAKE_TIMEOUT_MS`]: with `password`, only VNC
/// Authentication is accepted (a backend that does not ask for it is
/// refused: anyone local could reach it); without, only None. On success
/// the backend waits for the viewer's `ClientInit`.
pub async fn authenticate_backend<S>(
    s: &mut S,
    password: Option<&VncPassword>,
) -> Result<(), RfbError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    authenticate_backend_within(
        s,
        password,
        Duration::from_millis(BACKEND_HANDSHAKE_TIMEOUT_MS),
    )
    .await
}

/// [`authenticate_backend`] with another time limit.
pub async fn authenticate_backend_within<S>(
    s: &mut S,
    password: Option<&VncPassword>,
    limit: Duration,
) -> Result<(), RfbError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut stage = "version";
    let r = tokio::time::timeout(limit, backend_handshake(s, password, &mut stage)).await;
    match r {
        Ok(r) => r,
        Err(_) => Err(RfbError::Timeout { stage }),
    }
}

async fn backend_handshake<S>(
    s: &mut S,
    password: Option<&VncPassword>,
    stage: &mut &'static str,
) -> Result<(), RfbError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut v = [0u8; 12];
    s.read_exact(&mut v).await?;
    let minor = parse_version("screen backend", &v)?;
    s.write_all(format!("RFB 003.00{minor}\n").as_bytes())
        .await?;
    s.flush().await?;
    *stage = "security types";
    let chosen = if minor >= 7 {
        let n = s.read_u8().await?;
        if n == 0 {
            return Err(RfbError::Refused(read_reason(s).await?));
        }
        let mut types = vec![0u8; usize::from(n)];
        s.read_exact(&mut types).await?;
        let want = if password.is_some() {
            SECURITY_VNC_AUTH
        } else {
            SECURITY_NONE
        };
        if !types.contains(&want) {
            return Err(if password.is_some() {
                RfbError::NoVncAuth(types)
            } else {
                RfbError::PasswordNeeded(types)
            });
        }
        s.write_all(&[want]).await?;
        s.flush().await?;
        want
    } else {
        // RFB 3.3: the server decides.
        let t = s.read_u32().await?;
        match (t, password.is_some()) {
            (0, _) => return Err(RfbError::Refused(read_reason(s).await?)),
            (2, true) => SECURITY_VNC_AUTH,
            (1, false) => SECURITY_NONE,
            (t, true) => return Err(RfbError::NoVncAuth(vec![t as u8])),
            (t, false) => return Err(RfbError::PasswordNeeded(vec![t as u8])),
        }
    };
    if let (SECURITY_VNC_AUTH, Some(pw)) = (chosen, password) {
        *stage = "challenge";
        let mut challenge = [0u8; 16];
        s.read_exact(&mut challenge).await?;
        s.write_all(&pw.respond(&challenge)).await?;
        s.flush().await?;
    }
    // RFB 3.8 always sends a result; 3.3 and 3.7 only after a password.
    if minor == 8 || chosen == SECURITY_VNC_AUTH {
        *stage = "security result";
        match s.read_u32().await? {
            0 => {}
            _ if minor == 8 => return Err(RfbError::AuthFailed(read_reason(s).await?)),
            _ => return Err(RfbError::AuthFailed("no reason given".into())),
        }
    }
    Ok(())
}

/// The server's half of the security handshake towards the engineer's
/// viewer, fed the bytes the viewer sends through the channel: it offers
/// RFB 3.8 and security type None only (the PC authenticated to the
/// backend itself). Older viewers (3.3, 3.7) get their version's form.
#[derive(Debug)]
pub struct ViewerHandshake {
    buf: Vec<u8>,
    stage: ViewerStage,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ViewerStage {
    Version,
    Choice { minor: u8 },
    Done,
}

/// What one [`ViewerHandshake::feed`] produced.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Fed {
    /// To send to the viewer.
    pub reply: Vec<u8>,
    /// The viewer's bytes past the handshake, for the backend.
    pub forward: Vec<u8>,
    /// The handshake is over: from now on bytes go straight through.
    pub done: bool,
}

impl Default for ViewerHandshake {
    fn default() -> Self {
        ViewerHandshake::new()
    }
}

impl ViewerHandshake {
    /// A handshake waiting for the viewer's version.
    pub fn new() -> ViewerHandshake {
        ViewerHandshake {
            buf: Vec::new(),
            stage: ViewerStage::Version,
        }
    }

    /// The server's first message (its version), sent before anything.
    pub fn greeting() -> &'static [u8] {
        VERSION_3_8
    }

    /// Take bytes from the viewer.
    pub fn feed(&mut self, data: &[u8]) -> Result<Fed, RfbError> {
        self.buf.extend_from_slice(data);
        let mut fed = Fed::default();
        loop {
            match self.stage {
                ViewerStage::Version => {
                    if self.buf.len() < 12 {
                        return Ok(fed);
                    }
                    let v: [u8; 12] = self.buf[..12].try_into().expect("12 bytes");
                    self.buf.drain(..12);
                    let minor = parse_version("viewer", &v)?;
                    if minor >= 7 {
                        fed.reply.extend_from_slice(&[1, SECURITY_NONE]);
                        self.stage = ViewerStage::Choice { minor };
                    } else {
                        fed.reply
                            .extend_from_slice(&u32::from(SECURITY_NONE).to_be_bytes());
                        self.stage = ViewerStage::Done;
                    }
                }
                ViewerStage::Choice { minor } => {
                    let Some(&t) = self.buf.first() else {
                        return Ok(fed);
                    };
                    self.buf.drain(..1);
                    if t != SECURITY_NONE {
                        if minor == 8 {
                            let reason = b"only security type 1 (None) is offered";
                            fed.reply.extend_from_slice(&1u32.to_be_bytes());
                            fed.reply
                                .extend_from_slice(&(reason.len() as u32).to_be_bytes());
                            fed.reply.extend_from_slice(reason);
                        }
                        return Err(RfbError::Viewer(format!(
                            "it chose security type {t}, which was not offered"
                        )));
                    }
                    if minor == 8 {
                        fed.reply.extend_from_slice(&0u32.to_be_bytes());
                    }
                    self.stage = ViewerStage::Done;
                }
                ViewerStage::Done => {
                    fed.forward.append(&mut self.buf);
                    fed.done = true;
                    return Ok(fed);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vnc_authentication_matches_a_known_answer() {
        // The DES key of "password" with VNC's bit-reversed bytes, checked
        // against a plain DES of the reversed key: a zero challenge under
        // key bytes reversed is DES_k(0).
        let pw = VncPassword::from_text("password");
        let key: Vec<u8> = b"password".iter().map(|b| b.reverse_bits()).collect();
        let des = Des::new_from_slice(&key).unwrap();
        let mut block = [0u8; 8];
        des.encrypt_block(GenericArray::from_mut_slice(&mut block));
        let got = pw.respond(&[0u8; 16]);
        assert_eq!(&got[..8], &block);
        assert_eq!(&got[8..], &block);
        // Known answer, from OpenSSL's DES-ECB (legacy provider) under the
        // bit-reversed key 0e86ceceeef64e26 of "password".
        assert_eq!(hex::encode(&got[..8]), "ff97502e9422f089");
        // Only the first 8 bytes count; short passwords are zero-padded.
        assert_eq!(
            VncPassword::from_text("password-and-more").respond(&[7; 16]),
            pw.respond(&[7; 16])
        );
        assert_ne!(
            VncPassword::from_text("pass").respond(&[7; 16]),
            pw.respond(&[7; 16])
        );
    }

    #[test]
    fn generated_passwords_are_8_characters_and_differ() {
        let a = VncPassword::generate();
        let b = VncPassword::generate();
        assert_eq!(a.expose().len(), VNC_PASSWORD_CHARS);
        assert!(a.expose().bytes().all(|c| ALPHABET.contains(&c)));
        assert_ne!(a.expose(), b.expose());
        assert_eq!(format!("{a:?}"), "VncPassword(..)");
    }

    fn feed_all(parts: &[&[u8]]) -> (Vec<u8>, Vec<u8>, bool) {
        let mut h = ViewerHandshake::new();
        let (mut reply, mut forward, mut done) = (Vec::new(), Vec::new(), false);
        for p in parts {
            let f = h.feed(p).unwrap();
            reply.extend(f.reply);
            forward.extend(f.forward);
            done |= f.done;
        }
        (reply, forward, done)
    }

    #[test]
    fn the_viewer_is_offered_none_in_its_own_version() {
        // 3.8 in pieces, then ClientInit and more in the same read.
        let (reply, fwd, done) = feed_all(&[b"RFB 003", b".008\n", &[1, 1, 3, 0]]);
        assert_eq!(reply, [1, 1, 0, 0, 0, 0]);
        assert_eq!(fwd, [1, 3, 0]);
        assert!(done);
        // 3.7: no security result after None.
        let (reply, fwd, done) = feed_all(&[b"RFB 003.007\n", &[1]]);
        assert_eq!(reply, [1, 1]);
        assert!(fwd.is_empty());
        assert!(done);
        // 3.3 (and 3.5): the server names the type as a u32.
        let (reply, fwd, done) = feed_all(&[b"RFB 003.005\n\x01"]);
        assert_eq!(reply, [0, 0, 0, 1]);
        assert_eq!(fwd, [1]);
        assert!(done);
        // Apple's 3.889 counts as 3.8.
        let (reply, _, _) = feed_all(&[b"RFB 003.889\n"]);
        assert_eq!(reply, [1, 1]);
    }

    #[test]
    fn the_viewer_may_not_choose_another_type_or_speak_no_rfb() {
        let mut h = ViewerHandshake::new();
        h.feed(b"RFB 003.008\n").unwrap();
        let e = h.feed(&[2]).unwrap_err();
        assert!(e.to_string().contains("security type 2"), "{e}");
        let e = ViewerHandshake::new()
            .feed(b"GET / HTTP/1.1\r\n")
            .unwrap_err();
        assert!(matches!(e, RfbError::NotRfb { peer: "viewer", .. }), "{e}");
        let e = ViewerHandshake::new().feed(b"RFB 004.000\n").unwrap_err();
        assert!(matches!(e, RfbError::NotRfb { .. }), "{e}");
    }
}
