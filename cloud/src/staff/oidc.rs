//! OpenID Connect for staff sign-in (`openidconnect` 4): discovery, the
//! authorization-code request with PKCE (S256), state and nonce, the code
//! exchange, the ID token's validation (signature against the provider's
//! JWKS, issuer, audience, expiry, nonce) and the authorisation claims.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use openidconnect::core::{
    CoreAuthDisplay, CoreAuthPrompt, CoreAuthenticationFlow, CoreErrorResponseType,
    CoreGenderClaim, CoreJsonWebKey, CoreJsonWebKeySet, CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm, CoreProviderMetadata, CoreRevocableToken, CoreRevocationErrorResponse,
    CoreTokenIntrospectionResponse, CoreTokenType,
};
use openidconnect::{
    AdditionalClaims, AuthorizationCode, Client, ClientId, ClientSecret, CsrfToken,
    EmptyExtraTokenFields, EndpointMaybeSet, EndpointNotSet, EndpointSet, IdToken, IdTokenFields,
    IdTokenVerifier, IssuerUrl, Nonce, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl,
    StandardErrorResponse, StandardTokenResponse,
};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use super::db::check_region;
use super::http::ProviderHttp;

/// How long discovered provider metadata (and its JWKS) is used before it
/// is fetched again.
pub const PROVIDER_METADATA_REFRESH_SECS: u64 = 900;

/// ID token signature algorithms accepted (asymmetric only: no `none`, no
/// HMAC with the client secret).
const ALLOWED_ALGS: [CoreJwsSigningAlgorithm; 9] = [
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha384,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha512,
    CoreJwsSigningAlgorithm::RsaSsaPssSha256,
    CoreJwsSigningAlgorithm::RsaSsaPssSha384,
    CoreJwsSigningAlgorithm::RsaSsaPssSha512,
    CoreJwsSigningAlgorithm::EcdsaP256Sha256,
    CoreJwsSigningAlgorithm::EcdsaP384Sha384,
    CoreJwsSigningAlgorithm::EdDsa,
];

/// The claims that say what a staff member may do, by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimNames {
    /// Claim holding the role (a string or an array of strings).
    pub role: String,
    /// The role value that grants support access.
    pub support_role: String,
    /// Claim holding the region(s) (a string or an array of strings).
    pub regions: String,
    /// Claim that must be boolean `true`: privacy training done.
    pub privacy_trained: String,
}

impl Default for ClaimNames {
    /// `outpost_role` = `support`, `outpost_regions`, `privacy_trained`.
    fn default() -> Self {
        ClaimNames {
            role: "outpost_role".into(),
            support_role: "support".into(),
            regions: "outpost_regions".into(),
            privacy_trained: "privacy_trained".into(),
        }
    }
}

/// Every claim of the ID token beyond the standard ones.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ExtraClaims(pub serde_json::Map<String, serde_json::Value>);
impl AdditionalClaims for ExtraClaims {}

type StaffIdTokenFields = IdTokenFields<
    ExtraClaims,
    EmptyExtraTokenFields,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;
type StaffTokenResponse = StandardTokenResponse<StaffIdTokenFields, CoreTokenType>;
/// An ID token carrying [`ExtraClaims`].
pub type StaffIdToken = IdToken<
    ExtraClaims,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;
type StaffClient = Client<
    ExtraClaims,
    CoreAuthDisplay,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJsonWebKey,
    CoreAuthPrompt,
    StandardErrorResponse<CoreErrorResponseType>,
    StaffTokenResponse,
    CoreTokenIntrospectionResponse,
    CoreRevocableToken,
    CoreRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// Why a sign-in was refused.
#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    /// The provider could not be reached or its metadata is unusable.
    #[error("the OpenID provider is unavailable: {0}")]
    Provider(String),
    /// The callback's state is unknown, expired, used, or not this browser's.
    #[error("sign-in state is unknown, expired, already used or not this browser's")]
    State,
    /// The provider answered the authorization request with an error.
    #[error("the OpenID provider refused the sign-in: {0}")]
    ProviderRefused(String),
    /// The code exchange failed.
    #[error("exchanging the authorization code failed: {0}")]
    Exchange(String),
    /// The token response held no ID token.
    #[error("the token response holds no ID token")]
    NoIdToken,
    /// The ID token failed validation (signature, issuer, audience, expiry,
    /// nonce).
    #[error("the ID token is not valid: {0}")]
    IdToken(String),
    /// Valid token, but a claim needed for support access is missing or
    /// has the wrong value.
    #[error("access denied: {0}")]
    Forbidden(String),
}

/// Who signed in and what they may see.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Identity {
    /// The provider's issuer URL.
    pub issuer: String,
    /// The subject at that provider.
    pub subject: String,
    /// Regions whose devices this staff member sees.
    pub regions: BTreeSet<String>,
    /// The `email` claim, if any: where the new-location check sends its
    /// link. Never logged (not in `Debug`).
    pub email: Option<String>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("issuer", &self.issuer)
            .field("subject", &self.subject)
            .field("regions", &self.regions)
            .finish_non_exhaustive()
    }
}

/// What the ID token must say.
#[derive(Debug, Clone)]
pub struct Expected {
    /// Issuer URL (exact).
    pub issuer: IssuerUrl,
    /// Our client id (the audience).
    pub client_id: ClientId,
    /// The claims to authorise with.
    pub claims: ClaimNames,
}

/// Validate `token` (signature against `jwks`, issuer, audience, expiry at
/// `now`, `nonce`) and authorise from its claims.
pub fn validate_id_token(
    token: &StaffIdToken,
    expected: &Expected,
    jwks: CoreJsonWebKeySet,
    nonce: &Nonce,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Identity, SignInError> {
    let verifier: IdTokenVerifier<'_, CoreJsonWebKey> = IdTokenVerifier::new_public_client(
        expected.client_id.clone(),
        expected.issuer.clone(),
        jwks,
    )
    .set_allowed_algs(ALLOWED_ALGS)
    .set_time_fn(move || now);
    let claims = token
        .claims(&verifier, nonce)
        .map_err(|e| SignInError::IdToken(error_chain(&e)))?;
    let extra = &claims.additional_claims().0;
    let names = &expected.claims;
    let has_role = match extra.get(&names.role) {
        Some(serde_json::Value::String(r)) => *r == names.support_role,
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .any(|v| v.as_str() == Some(names.support_role.as_str())),
        _ => false,
    };
    if !has_role {
        return Err(SignInError::Forbidden(format!(
            "the role claim `{}` does not name `{}`",
            names.role, names.support_role
        )));
    }
    if extra.get(&names.privacy_trained) != Some(&serde_json::Value::Bool(true)) {
        return Err(SignInError::Forbidden(format!(
            "the privacy-training claim `{}` is not true",
            names.privacy_trained
        )));
    }
    let regions: BTreeSet<String> = match extra.get(&names.regions) {
        Some(serde_json::Value::String(r)) => [r.clone()].into(),
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_str())
            .filter(|r| check_region(r).is_ok())
            .map(str::to_owned)
            .collect(),
        _ => BTreeSet::new(),
    };
    if regions.iter().any(|r| check_region(r).is_err()) || regions.is_empty() {
        return Err(SignInError::Forbidden(format!(
            "the region claim `{}` names no region",
            names.regions
        )));
    }
    Ok(Identity {
        issuer: claims.issuer().as_str().to_owned(),
        subject: claims.subject().as_str().to_owned(),
        regions,
        email: claims.email().map(|e| e.as_str().to_owned()),
    })
}

/// A sign-in started and not finished: kept by the server (sealed in the
/// shared `staff_state` table), found by state.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct Pending {
    verifier: String,
    nonce: String,
}

impl Drop for Pending {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.verifier.zeroize();
        self.nonce.zeroize();
    }
}

/// The OpenID provider as this server uses it.
pub struct Oidc {
    http: ProviderHttp,
    expected: Expected,
    secret: ClientSecret,
    redirect: RedirectUrl,
    metadata: Mutex<Option<(Instant, CoreProviderMetadata)>>,
}

impl Oidc {
    /// A provider at `issuer`; nothing is fetched until the first sign-in.
    pub fn new(
        http: ProviderHttp,
        expected: Expected,
        secret: ClientSecret,
        redirect: RedirectUrl,
    ) -> Oidc {
        Oidc {
            http,
            expected,
            secret,
            redirect,
            metadata: Mutex::new(None),
        }
    }

    /// The issuer URL.
    pub fn issuer(&self) -> &str {
        self.expected.issuer.as_str()
    }

    async fn metadata(&self) -> Result<CoreProviderMetadata, SignInError> {
        let mut cached = self.metadata.lock().await;
        if let Some((at, m)) = &*cached
            && at.elapsed() < Duration::from_secs(PROVIDER_METADATA_REFRESH_SECS)
        {
            return Ok(m.clone());
        }
        let m = CoreProviderMetadata::discover_async(self.expected.issuer.clone(), &self.http)
            .await
            .map_err(|e| SignInError::Provider(error_chain(&e)))?;
        *cached = Some((Instant::now(), m.clone()));
        Ok(m)
    }

    fn client(&self, m: CoreProviderMetadata) -> StaffClient {
        StaffClient::from_provider_metadata(
            m,
            self.expected.client_id.clone(),
            Some(self.secret.clone()),
        )
        .set_redirect_uri(self.redirect.clone())
    }

    /// Start a sign-in: the provider URL to send the browser to, the state
    /// and what to keep until the callback.
    pub async fn begin(
        &self,
        login_hint: Option<&str>,
    ) -> Result<(url::Url, String, Pending), SignInError> {
        let m = self.metadata().await?;
        let client = self.client(m);
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut req = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .set_pkce_challenge(challenge);
        if let Some(h) = login_hint {
            req = req.add_extra_param("login_hint", h.to_owned());
        }
        let (url, state, nonce) = req.url();
        Ok((
            url,
            state.secret().clone(),
            Pending {
                verifier: verifier.secret().clone(),
                nonce: nonce.secret().clone(),
            },
        ))
    }

    /// Finish a sign-in: exchange `code` (with the PKCE verifier), validate
    /// the ID token and authorise.
    pub async fn finish(&self, code: &str, pending: Pending) -> Result<Identity, SignInError> {
        let m = self.metadata().await?;
        let jwks = m.jwks().clone();
        let client = self.client(m);
        let resp = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|e| SignInError::Provider(e.to_string()))?
            .set_pkce_verifier(PkceCodeVerifier::new(pending.verifier.clone()))
            .request_async(&self.http)
            .await
            .map_err(|e| SignInError::Exchange(error_chain(&e)))?;
        let token = openidconnect::TokenResponse::id_token(&resp).ok_or(SignInError::NoIdToken)?;
        validate_id_token(
            token,
            &self.expected,
            jwks,
            &Nonce::new(pending.nonce.clone()),
            chrono::Utc::now(),
        )
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    //! The token-level refusals with tokens signed here (ES256, ring); the
    //! whole flow is tested against a real provider in `tests/api/staff.rs`.
    use super::*;
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    use ring::rand::SystemRandom;
    use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
    use serde_json::{Value, json};

    const ISS: &str = "https://idp.example.test";
    const AUD: &str = "outpost-staff";
    const NOW: i64 = 1_800_000_000;
    const NONCE: &str = "nonce-4d2f";

    struct Key(EcdsaKeyPair);

    impl Key {
        fn new() -> Key {
            let rng = SystemRandom::new();
            let pkcs8 =
                EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
            Key(
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
                    .unwrap(),
            )
        }

        fn jwks(&self) -> CoreJsonWebKeySet {
            let p = self.0.public_key().as_ref();
            serde_json::from_value(json!({"keys": [{
                "kty": "EC", "crv": "P-256", "kid": "k1", "use": "sig", "alg": "ES256",
                "x": B64.encode(&p[1..33]), "y": B64.encode(&p[33..65]),
            }]}))
            .unwrap()
        }

        fn sign(&self, header: &Value, claims: &Value) -> StaffIdToken {
            let input = format!(
                "{}.{}",
                B64.encode(header.to_string()),
                B64.encode(claims.to_string())
            );
            let sig = self.0.sign(&SystemRandom::new(), input.as_bytes()).unwrap();
            let jwt = format!("{input}.{}", B64.encode(sig.as_ref()));
            serde_json::from_value(Value::String(jwt)).unwrap()
        }
    }

    fn header() -> Value {
        json!({"alg": "ES256", "kid": "k1", "typ": "JWT"})
    }

    fn claims() -> Value {
        json!({
            "iss": ISS, "aud": AUD, "sub": "staff-7", "iat": NOW - 10, "exp": NOW + 300,
            "nonce": NONCE, "outpost_role": "support", "outpost_regions": ["eu", "ch"],
            "privacy_trained": true,
        })
    }

    fn with(f: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Value {
        let mut c = claims();
        f(c.as_object_mut().unwrap());
        c
    }

    fn expected() -> Expected {
        Expected {
            issuer: IssuerUrl::new(ISS.into()).unwrap(),
            client_id: ClientId::new(AUD.into()),
            claims: ClaimNames::default(),
        }
    }

    fn check(
        key: &Key,
        token: &StaffIdToken,
        nonce: &str,
        now: i64,
    ) -> Result<Identity, SignInError> {
        validate_id_token(
            token,
            &expected(),
            key.jwks(),
            &Nonce::new(nonce.into()),
            chrono::DateTime::from_timestamp(now, 0).unwrap(),
        )
    }

    fn refused(r: Result<Identity, SignInError>, want: &str) {
        match r {
            Err(e) => assert!(
                e.to_string().to_lowercase().contains(want),
                "want {want:?} in {e}"
            ),
            Ok(i) => panic!("accepted {i:?}; want refusal {want:?}"),
        }
    }

    #[test]
    fn a_good_token_names_subject_issuer_and_regions() {
        let key = Key::new();
        let id = check(&key, &key.sign(&header(), &claims()), NONCE, NOW).unwrap();
        assert_eq!(id.subject, "staff-7");
        assert_eq!(id.issuer, ISS);
        assert_eq!(id.regions, ["ch".to_owned(), "eu".to_owned()].into());
        // A role array and a single region string are read too.
        let c = with(|c| {
            c.insert("outpost_role".into(), json!(["viewer", "support"]));
            c.insert("outpost_regions".into(), json!("us"));
        });
        let id = check(&key, &key.sign(&header(), &c), NONCE, NOW).unwrap();
        assert_eq!(id.regions, ["us".to_owned()].into());
    }

    #[test]
    fn token_level_refusals() {
        let key = Key::new();
        let other = Key::new();
        // Signed by another key under the same key id.
        refused(
            check(&key, &other.sign(&header(), &claims()), NONCE, NOW),
            "signature",
        );
        // Expired (exp is NOW + 300).
        let t = key.sign(&header(), &claims());
        refused(check(&key, &t, NONCE, NOW + 301), "expired");
        // Another audience, another issuer, another nonce.
        let t = key.sign(
            &header(),
            &with(|c| drop(c.insert("aud".into(), json!("other-app")))),
        );
        refused(check(&key, &t, NONCE, NOW), "audience");
        let t = key.sign(
            &header(),
            &with(|c| drop(c.insert("iss".into(), json!("https://evil.test")))),
        );
        refused(check(&key, &t, NONCE, NOW), "issuer");
        refused(
            check(&key, &key.sign(&header(), &claims()), "other-nonce", NOW),
            "nonce",
        );
        let t = key.sign(&header(), &with(|c| drop(c.remove("nonce"))));
        refused(check(&key, &t, NONCE, NOW), "nonce");
        // A token altered after signing.
        let good = key.sign(&header(), &claims());
        let s = serde_json::to_value(&good).unwrap();
        let parts: Vec<&str> = s.as_str().unwrap().split('.').collect();
        let forged_claims = with(|c| drop(c.insert("outpost_regions".into(), json!(["us"]))));
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            B64.encode(forged_claims.to_string()),
            parts[2]
        );
        let forged: StaffIdToken = serde_json::from_value(Value::String(forged)).unwrap();
        refused(check(&key, &forged, NONCE, NOW), "signature");
        // An algorithm this server never accepts (HMAC with the client secret).
        let t = key.sign(&json!({"alg": "HS256", "kid": "k1"}), &claims());
        refused(check(&key, &t, NONCE, NOW), "algorithm");
    }

    #[test]
    fn missing_claims_are_named() {
        let key = Key::new();
        let cases: [(&str, Value, &str); 6] = [
            ("outpost_role", json!(null), "outpost_role"),
            ("outpost_role", json!("admin"), "outpost_role"),
            ("privacy_trained", json!(false), "privacy_trained"),
            ("privacy_trained", json!("true"), "privacy_trained"),
            ("outpost_regions", json!([]), "outpost_regions"),
            ("outpost_regions", json!(["bad region!"]), "outpost_regions"),
        ];
        for (claim, value, named) in cases {
            let c = with(|c| {
                if value.is_null() {
                    c.remove(claim);
                } else {
                    c.insert(claim.into(), value.clone());
                }
            });
            match check(&key, &key.sign(&header(), &c), NONCE, NOW) {
                Err(SignInError::Forbidden(m)) => {
                    assert!(m.contains(named), "{claim}={value}: {m}")
                }
                other => panic!("{claim}={value}: {other:?}"),
            }
        }
    }
}
