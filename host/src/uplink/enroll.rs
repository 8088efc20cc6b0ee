//! Enrolment: register this device with the vendor's cloud and keep the
//! identity it is given.
//!
//! The device makes its own 256-bit key (OS RNG) and sends it once, with the
//! registrant's e-mail and name and the instrument's model, id and serial, in
//! `POST /v1/enroll` over verified TLS (1.2 minimum); the cloud answers with
//! the device id. The identity is then written to the state directory (see
//! [`super::identity`]). Nothing of the registration is logged.
//!
//! The whole exchange has [`ENROLL_TIMEOUT_MS`]; the answer is read up to
//! [`MAX_ANSWER_BYTES`] (a longer one is refused without holding it); every
//! failure to get an answer is a [`ConnectError`] in the operator's words
//! (connection refused, "server … reached, TLS refused: …", timeouts).

use super::identity::Identity;
use crate::net::{ConnectError, MAX_ANSWER_BYTES, Target, read_answer};
use outpost_protocol as p;
use std::time::Duration;

/// Time an enrolment request is given, from connecting to the answer's
/// last byte.
pub const ENROLL_TIMEOUT_MS: u64 = 30_000;

/// Why enrolment failed.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    /// The server is not `https://`.
    #[error("the enrolment server {0} must be https://")]
    NotHttps(String),
    /// The registration details are not acceptable.
    #[error("registration details: {0}")]
    Registration(String),
    /// No usable answer: unreachable, TLS refused, timeout, oversized or
    /// broken answer (see [`ConnectError`]).
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The server answered with an error status.
    #[error("the server {server} refused the enrolment (HTTP {status}): {why}")]
    Refused {
        /// The server.
        server: String,
        /// The HTTP status.
        status: u16,
        /// The cloud's error code and message, or "no details".
        why: String,
    },
    /// A success status, but not the cloud's enrolment answer.
    #[error("the answer of {server} is not an enrolment response: {reason}")]
    NotEnrollResponse {
        /// The server.
        server: String,
        /// The parser's words.
        reason: String,
    },
    /// The HTTP client could not be built or the request encoded.
    #[error("cannot prepare the enrolment request: {0}")]
    Client(String),
}

/// What the registrant enters.
#[derive(Clone)]
pub struct Registration {
    /// Registrant's e-mail.
    pub email: String,
    /// Registrant's name.
    pub name: String,
    /// Instrument model.
    pub instrument_model: String,
    /// Instrument id (the lab's own).
    pub instrument_id: String,
    /// Instrument serial number.
    pub serial: String,
    /// Enrolment token, when the cloud requires one.
    pub token: Option<String>,
}

/// Enrol with the cloud at `server` (`https://host[:port]`) within
/// [`ENROLL_TIMEOUT_MS`].
pub async fn enroll(
    server: &str,
    tls: &rustls::ClientConfig,
    reg: &Registration,
) -> Result<Identity, EnrollError> {
    enroll_within(server, tls, reg, Duration::from_millis(ENROLL_TIMEOUT_MS)).await
}

/// [`enroll`] with the whole request (connect to the answer's last byte)
/// limited to `timeout`.
pub async fn enroll_within(
    server: &str,
    tls: &rustls::ClientConfig,
    reg: &Registration,
    timeout: Duration,
) -> Result<Identity, EnrollError> {
    if !server.starts_with("https://") {
        return Err(EnrollError::NotHttps(server.to_owned()));
    }
    let key = p::DeviceKey::generate();
    let request = p::EnrollRequest {
        email: reg.email.clone(),
        name: reg.name.clone(),
        instrument_model: reg.instrument_model.clone(),
        instrument_id: reg.instrument_id.clone(),
        serial: reg.serial.clone(),
        device_key: key.to_hex(),
        enrollment_token: reg.token.clone(),
    };
    request
        .validate()
        .map_err(|e| EnrollError::Registration(e.to_string()))?;
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(tls.clone())
        .https_only(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .build()
        .map_err(|e| EnrollError::Client(e.to_string()))?;
    let server = server.trim_end_matches('/');
    let target = Target { server, timeout };
    let url = format!("{server}{}", p::ENROLL_PATH);
    let body = serde_json::to_vec(&request).map_err(|e| EnrollError::Client(e.to_string()))?;
    let response = client
        .post(&url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| ConnectError::from_reqwest(&e, &target))?;
    let status = response.status();
    let body = read_answer(response, MAX_ANSWER_BYTES, &target).await?;
    if !status.is_success() {
        let why = serde_json::from_slice::<p::ApiError>(&body)
            .map(|e| format!("{}: {}", e.error.as_str(), e.message))
            .unwrap_or_else(|_| "no details".into());
        return Err(EnrollError::Refused {
            server: server.to_owned(),
            status: status.as_u16(),
            why,
        });
    }
    let answer: p::EnrollResponse =
        serde_json::from_slice(&body).map_err(|e| EnrollError::NotEnrollResponse {
            server: server.to_owned(),
            reason: e.to_string(),
        })?;
    Ok(Identity {
        device_id: answer.device_id,
        key,
        server: server.to_owned(),
        enrolled_at: crate::store::now_secs(),
    })
}
