//! Who may call the local API, and from where.
//!
//! Threat model: the API listens on loopback, so the callers to fear are
//! other programs on the PC and, above all, web pages open in a browser on
//! the PC, which can make the browser send requests to `127.0.0.1`.
//!
//! - **Programs** (the CLI, scripts of lab IT) present the API token in
//!   `Authorization: Bearer …`. The token is 32 random bytes in
//!   `STATE/api.token`, readable only by the service account and
//!   administrators (mode 0600 on Unix; on Windows the state directory's ACL,
//!   which the installer restricts to the service account and the
//!   Administrators group). It is compared in constant time.
//! - **The browser** gets in through a one-time login URL
//!   (`outpost dashboard`): a code valid for [`LOGIN_CODE_TTL_SECS`], used
//!   once, exchanged for a session cookie (`HttpOnly; SameSite=Strict`) that
//!   lasts [`SESSION_TTL_SECS`]. A web page cannot read the cookie, and
//!   SameSite=Strict keeps the browser from sending it with requests other
//!   sites start.
//! - **DNS rebinding**: a request whose `Host` is not the loopback name and
//!   port the API listens on is refused before anything else.
//! - **Cross-site requests**: a state-changing request that relies on the
//!   cookie must carry an `Origin` naming the API itself; no CORS header is
//!   ever sent, so no other origin can read an answer.

use rand_core::RngCore;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// File name of the API token in the state directory.
pub const TOKEN_FILE: &str = "api.token";
/// How long a login code from `outpost dashboard` stays valid.
pub const LOGIN_CODE_TTL_SECS: u64 = 120;
/// How long a dashboard session lasts.
pub const SESSION_TTL_SECS: u64 = 12 * 3600;
/// Login codes waiting to be used at once (older ones are dropped).
pub const MAX_LOGIN_CODES: usize = 16;
/// Dashboard sessions at once (the oldest is dropped).
pub const MAX_SESSIONS: usize = 64;
/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "outpost_session";

/// Why the API token cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Reading or writing the file failed.
    #[error("cannot use the API token {path}: {error}")]
    Io {
        /// The token file.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// The file does not hold a token.
    #[error(
        "the API token {0} is not 64 hex digits; delete it and restart the service to make a new one"
    )]
    Malformed(PathBuf),
    /// Others than the owner may read it.
    #[error(
        "{}",
        crate::secret_file::exposed_message("the API token", path, exposure)
    )]
    Exposed {
        /// The token file.
        path: PathBuf,
        /// Who else may read it.
        exposure: crate::secret_file::Exposure,
    },
}

/// The API token. Its `Debug` never shows it.
#[derive(Clone)]
pub struct ApiToken {
    digest: [u8; 32],
    text: zeroize::Zeroizing<String>,
}

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiToken(<hidden>)")
    }
}

impl ApiToken {
    fn from_text(text: String) -> ApiToken {
        ApiToken {
            digest: Sha256::digest(text.as_bytes()).into(),
            text: zeroize::Zeroizing::new(text),
        }
    }

    /// The path of the token in `state_dir`.
    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join(TOKEN_FILE)
    }

    /// Read the token of `state_dir`, making one (0600) if there is none.
    pub fn load_or_create(state_dir: &Path) -> Result<ApiToken, TokenError> {
        let path = Self::path(state_dir);
        match Self::load(state_dir) {
            Err(TokenError::Io { error, .. }) if error.kind() == std::io::ErrorKind::NotFound => {
                let mut bytes = [0u8; 32];
                rand_core::OsRng.fill_bytes(&mut bytes);
                let text: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
                write_private(&path, text.as_bytes()).map_err(|error| TokenError::Io {
                    path: path.clone(),
                    error,
                })?;
                Ok(ApiToken::from_text(text))
            }
            other => other,
        }
    }

    /// Read the token of `state_dir`.
    pub fn load(state_dir: &Path) -> Result<ApiToken, TokenError> {
        let path = Self::path(state_dir);
        let io = |error| TokenError::Io {
            path: path.clone(),
            error,
        };
        let text = std::fs::read_to_string(&path).map_err(io)?;
        if let Some(exposure) = crate::secret_file::exposure(&path).map_err(io)? {
            return Err(TokenError::Exposed { path, exposure });
        }
        let text = text.trim().to_owned();
        if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(TokenError::Malformed(path));
        }
        Ok(ApiToken::from_text(text))
    }

    /// The token, for a client to present.
    pub fn secret(&self) -> &str {
        &self.text
    }

    /// Whether `given` is the token (constant time over fixed-size digests,
    /// so neither the content nor the length leaks through timing).
    pub fn matches(&self, given: &str) -> bool {
        let d: [u8; 32] = Sha256::digest(given.as_bytes()).into();
        constant_time_eq(&d, &self.digest)
    }
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}

fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    crate::secret_file::write_private(path, data)
}

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand_core::OsRng.fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// One-time login codes and dashboard sessions (in memory: a restart of the
/// service logs the dashboard out, which is the safe direction).
pub struct Sessions {
    code_ttl: Duration,
    inner: Mutex<SessionsInner>,
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions::new(Duration::from_secs(LOGIN_CODE_TTL_SECS))
    }
}

#[derive(Default)]
struct SessionsInner {
    /// sha256(code) → expiry.
    codes: HashMap<[u8; 32], Instant>,
    /// sha256(session id) → expiry.
    sessions: HashMap<[u8; 32], Instant>,
}

fn digest(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

impl Sessions {
    /// Sessions whose login codes stay valid for `code_ttl`.
    pub fn new(code_ttl: Duration) -> Sessions {
        Sessions {
            code_ttl,
            inner: Mutex::default(),
        }
    }

    /// How long a login code stays valid.
    pub fn code_ttl(&self) -> Duration {
        self.code_ttl
    }

    /// A new one-time login code, valid for the code lifetime.
    pub fn new_login_code(&self) -> String {
        let code = random_hex(16);
        let mut s = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        s.codes.retain(|_, exp| *exp > now);
        if s.codes.len() >= MAX_LOGIN_CODES
            && let Some(oldest) = s.codes.iter().min_by_key(|(_, e)| **e).map(|(k, _)| *k)
        {
            s.codes.remove(&oldest);
        }
        s.codes.insert(digest(&code), now + self.code_ttl);
        code
    }

    /// Use login code `code`: a new session id if the code was valid and
    /// unused (it is spent either way).
    pub fn redeem(&self, code: &str) -> Option<String> {
        let mut s = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let exp = s.codes.remove(&digest(code))?;
        let now = Instant::now();
        if exp <= now {
            return None;
        }
        s.sessions.retain(|_, exp| *exp > now);
        if s.sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = s.sessions.iter().min_by_key(|(_, e)| **e).map(|(k, _)| *k)
        {
            s.sessions.remove(&oldest);
        }
        let id = random_hex(32);
        s.sessions
            .insert(digest(&id), now + Duration::from_secs(SESSION_TTL_SECS));
        Some(id)
    }

    /// Whether `id` is a live session.
    pub fn valid(&self, id: &str) -> bool {
        let s = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        s.sessions
            .get(&digest(id))
            .is_some_and(|exp| *exp > Instant::now())
    }

    /// End session `id`.
    pub fn end(&self, id: &str) {
        let mut s = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        s.sessions.remove(&digest(id));
    }
}

/// The `Host` values the API answers to: the loopback names with its port.
pub fn allowed_hosts(port: u16) -> Vec<String> {
    vec![
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
    ]
}

/// The session id in a `Cookie` header, if any.
pub fn session_from_cookie(header: &str) -> Option<&str> {
    header.split(';').find_map(|c| {
        let (name, value) = c.trim().split_once('=')?;
        (name == SESSION_COOKIE).then_some(value)
    })
}

/// A client name as recorded with acknowledgements and decisions:
/// `[a-z0-9-:_.]` (so the CLI's `cli:<user>`), at most 64 characters; `api`
/// when nothing usable is given.
pub fn client_name(given: Option<&str>) -> String {
    let name: String = given
        .unwrap_or("")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | ':' | '_' | '.'))
        .take(64)
        .collect::<String>()
        .to_ascii_lowercase();
    if name.is_empty() { "api".into() } else { name }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_made_private_and_compared_whole() {
        let dir = tempfile::tempdir().unwrap();
        let t = ApiToken::load_or_create(dir.path()).unwrap();
        assert_eq!(t.secret().len(), 64);
        assert!(t.matches(t.secret()));
        assert!(!t.matches(&t.secret()[..63]));
        assert!(!t.matches(""));
        let again = ApiToken::load_or_create(dir.path()).unwrap();
        assert_eq!(again.secret(), t.secret(), "kept across restarts");
        assert_eq!(format!("{t:?}"), "ApiToken(<hidden>)");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let p = ApiToken::path(dir.path());
            assert_eq!(
                std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
                0o600
            );
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
            let err = ApiToken::load(dir.path()).unwrap_err().to_string();
            assert!(err.contains("chmod 600"), "{err}");
        }
    }

    #[test]
    fn a_login_code_works_once() {
        let s = Sessions::default();
        let code = s.new_login_code();
        let id = s.redeem(&code).expect("first use");
        assert!(s.valid(&id));
        assert!(s.redeem(&code).is_none(), "replayed");
        assert!(s.redeem("0000").is_none(), "unknown");
        let short = Sessions::new(Duration::ZERO);
        let code = short.new_login_code();
        assert!(short.redeem(&code).is_none(), "expired");
        assert!(!s.valid("nope"));
        s.end(&id);
        assert!(!s.valid(&id));
    }

    #[test]
    fn cookies_and_client_names() {
        assert_eq!(
            session_from_cookie("a=1; outpost_session=abc; b=2"),
            Some("abc")
        );
        assert_eq!(session_from_cookie("outpost_sessionx=abc"), None);
        assert_eq!(client_name(Some("CLI")), "cli");
        assert_eq!(client_name(Some("x\ny<script>")), "xyscript");
        assert_eq!(client_name(None), "api");
        assert_eq!(client_name(Some("cli:Lab_Tech.2")), "cli:lab_tech.2");
        assert_eq!(client_name(Some(&"a".repeat(100))).len(), 64);
    }
}
