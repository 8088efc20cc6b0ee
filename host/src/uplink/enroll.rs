//! Enrolment: register this device with the vendor's cloud and keep the
//! identity it is given.
//!
//! The device makes its own 256-bit key (OS RNG) and sends it once, with the
//! registrant's e-mail and name and the instrument's model, id and serial, in
//! `POST /v1/enroll` over verified TLS (1.2 minimum); the cloud answers with
//! the device id. The identity is then written to the state directory (see
//! [`super::identity`]). Nothing of the registration is logged.

use super::identity::Identity;
use anyhow::Context;
use outpost_protocol as p;

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

/// Enrol with the cloud at `server` (`https://host[:port]`).
pub async fn enroll(
    server: &str,
    tls: &rustls::ClientConfig,
    reg: &Registration,
) -> anyhow::Result<Identity> {
    anyhow::ensure!(
        server.starts_with("https://"),
        "the enrolment server {server} must be https://"
    );
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
        .map_err(|e| anyhow::anyhow!("registration details: {e}"))?;
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(tls.clone())
        .https_only(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(30))
        .build()?;
    let url = format!("{}{}", server.trim_end_matches('/'), p::ENROLL_PATH);
    let response = client
        .post(&url)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&request)?)
        .send()
        .await
        .with_context(|| format!("cannot reach the enrolment server {server}"))?;
    let status = response.status();
    let body = response.bytes().await.unwrap_or_default();
    if !status.is_success() {
        let why = serde_json::from_slice::<p::ApiError>(&body)
            .map(|e| format!("{}: {}", e.error.as_str(), e.message))
            .unwrap_or_else(|_| "no details".into());
        anyhow::bail!("the server refused the enrolment (HTTP {status}): {why}");
    }
    let answer: p::EnrollResponse = serde_json::from_slice(&body)
        .context("the server's answer is not an enrolment response")?;
    Ok(Identity {
        device_id: answer.device_id,
        key,
        server: server.trim_end_matches('/').to_owned(),
        enrolled_at: crate::store::now_secs(),
    })
}
