//! The sender: delivers spooled envelopes to the cloud, oldest first, and
//! sends heartbeats.
//!
//! - HTTPS only, by reqwest over the host's rustls configuration (TLS 1.2 or
//!   1.3, certificates verified against the built-in roots and the operator's
//!   `extra-ca-files`); no redirects are followed.
//! - Endpoints come from the region profile (`[uplink] region`) or the
//!   operator's `endpoint`; on a connection failure the next endpoint of the
//!   set is tried.
//! - Outcome of `POST /v1/ingest`:
//!   - `200` with the cloud's `IngestAck` naming this device and this
//!     sequence → acknowledged: the batch is deleted from the spool (any other
//!     `2xx` — a proxy's page, an ack for another sequence — is a failure and
//!     deletes nothing);
//!     A retry of a batch the cloud already stored is answered the same way
//!     (`duplicate: true`): at-least-once delivery, exactly-once effect;
//!   - `409 sequence-conflict` → the cloud holds this sequence with other
//!     content (this database was restored from a backup): the batch is
//!     resealed under a new sequence and sent again;
//!   - `429` / `503` → wait `Retry-After` seconds (capped at an hour), else
//!     back off;
//!   - connection errors, timeouts and other `5xx` → exponential back-off with
//!     jitter (half to all of the delay), from `retry-initial-ms` to
//!     `retry-max-ms`;
//!   - `400 bad-envelope`, `413 too-large` → the cloud refuses this one
//!     envelope: it moves to the dead-letter table (kept, sealed, counted,
//!     raised as `uplink-dead-letter:<stream>`) and the rest goes on;
//!   - other `400`s, `401`, `403`, other `409`s, `413` → the cloud refuses this device: nothing
//!     is deleted (no data loss), a `uplink-rejected` setting problem is raised
//!     and the sender backs off at the maximum delay.
//! - Bandwidth: a token bucket over envelope bytes at `bandwidth-mbit`
//!   (default 6 Mbit/s), burst of one second.
//! - Heartbeat every `heartbeat-interval-secs`: online status, software
//!   status, batches waiting and dropped, sealed like any batch on stream
//!   `heartbeat` with the Unix time in milliseconds as its sequence.

use super::Uplink;
use crate::events::{Events, HostEvent};
use outpost_protocol as p;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Most bytes of a server's answer read.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Longest `Retry-After` honoured.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Sender settings.
#[derive(Clone, Debug)]
pub struct SenderConfig {
    /// Base URLs (`https://host[:port]`), tried in order.
    pub endpoints: Vec<String>,
    /// Upload rate cap in bytes per second.
    pub bytes_per_sec: u64,
    /// Time between heartbeats.
    pub heartbeat_interval: Duration,
    /// First retry delay.
    pub retry_initial: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
    /// Per-request timeout (connect + send + response).
    pub request_timeout: Duration,
    /// Software status reported in heartbeats.
    pub software: Vec<p::SoftwareStatus>,
}

/// A token bucket over bytes.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    capacity: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// `bytes_per_sec`, with a burst of one second's worth.
    pub fn new(bytes_per_sec: u64) -> Self {
        let rate = bytes_per_sec.max(1) as f64;
        TokenBucket {
            rate,
            capacity: rate,
            tokens: rate,
            last: Instant::now(),
        }
    }

    /// How long to wait before `n` bytes may be sent; takes them.
    pub fn take(&mut self, n: u64) -> Duration {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64() * self.rate)
            .min(self.capacity);
        self.last = now;
        self.tokens -= n as f64;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

/// What one delivery attempt came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Stored now or before (200 with the cloud's ack).
    Acked,
    /// Try again after this long (429/503 with Retry-After).
    RetryAfter(Duration),
    /// Try again after the back-off (network error, timeout, 5xx).
    Transient(String),
    /// The cloud refuses this device (401, 403, 400 authentication-failed,
    /// anything unexplained): everything is kept and the sender holds back.
    Rejected(String),
    /// The cloud refuses this one envelope (400 bad-envelope, 413 too-large):
    /// it is moved to the dead-letter table and the rest goes on.
    Refused(String),
    /// The cloud holds this sequence with other content: send the batch
    /// again under a new sequence (409 `sequence-conflict`).
    Conflict,
}

/// Classify a response to an ingest or heartbeat request.
pub fn classify(status: u16, retry_after: Option<&str>, body: &[u8]) -> Outcome {
    let api: Option<p::ApiError> = serde_json::from_slice(body).ok();
    let code = api.as_ref().map(|a| a.error);
    match status {
        200..=299 => Outcome::Acked,
        // A heartbeat older than the last one: nothing to keep.
        409 if code == Some(p::ErrorCode::StaleHeartbeat) => Outcome::Acked,
        409 if code == Some(p::ErrorCode::SequenceConflict) => Outcome::Conflict,
        429 | 503 => match retry_after.and_then(|v| v.trim().parse::<u64>().ok()) {
            Some(s) => Outcome::RetryAfter(Duration::from_secs(s).min(MAX_RETRY_AFTER)),
            None => Outcome::Transient(format!("HTTP {status}")),
        },
        400 | 413
            if matches!(
                code,
                Some(p::ErrorCode::BadEnvelope | p::ErrorCode::TooLarge)
            ) =>
        {
            Outcome::Refused(format!(
                "HTTP {status} {}",
                code.map(|c| c.as_str()).unwrap_or_default()
            ))
        }
        400 | 401 | 403 | 409 | 413 => Outcome::Rejected(match code {
            Some(c) => format!("HTTP {status} {}", c.as_str()),
            None => format!("HTTP {status}"),
        }),
        _ => Outcome::Transient(format!("HTTP {status}")),
    }
}

/// Whether a `2xx` body is the cloud's acknowledgement of `sequence` from
/// `device` (an `IngestAck` naming both).
pub fn acknowledges(body: &[u8], device: &p::DeviceId, sequence: u64) -> bool {
    serde_json::from_slice::<p::IngestAck>(body)
        .is_ok_and(|a| a.device_id == *device && a.sequence == sequence)
}

/// The sender task.
pub struct Sender {
    uplink: Arc<Uplink>,
    events: Events,
    client: reqwest::Client,
    cfg: SenderConfig,
    endpoint: usize,
}

impl Sender {
    /// A sender over `uplink` using `tls` (the host's rustls client config).
    pub fn new(
        uplink: Arc<Uplink>,
        events: Events,
        tls: &rustls::ClientConfig,
        cfg: SenderConfig,
    ) -> anyhow::Result<Sender> {
        anyhow::ensure!(!cfg.endpoints.is_empty(), "no uplink endpoint configured");
        for e in &cfg.endpoints {
            anyhow::ensure!(
                e.starts_with("https://"),
                "uplink endpoint {e} is not https://"
            );
        }
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls.clone())
            .https_only(true)
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(cfg.request_timeout.min(Duration::from_secs(15)))
            .timeout(cfg.request_timeout)
            .user_agent(concat!("outpost/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Sender {
            uplink,
            events,
            client,
            cfg,
            endpoint: 0,
        })
    }

    async fn post(
        &mut self,
        path: &str,
        body: Vec<u8>,
        device: &p::DeviceId,
        sequence: u64,
    ) -> Outcome {
        let url = format!(
            "{}{path}",
            self.cfg.endpoints[self.endpoint].trim_end_matches('/')
        );
        let res = self
            .client
            .post(&url)
            .header("content-type", "application/octet-stream")
            .body(body)
            .send()
            .await;
        match res {
            Ok(r) => {
                let status = r.status().as_u16();
                let retry = r
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                // An answer is a small JSON document; read at most 64 KiB.
                let mut r = r;
                let mut body = Vec::new();
                while let Ok(Some(chunk)) = r.chunk().await {
                    body.extend_from_slice(
                        &chunk[..chunk.len().min(MAX_ANSWER_BYTES - body.len())],
                    );
                    if body.len() >= MAX_ANSWER_BYTES {
                        break;
                    }
                }
                match classify(status, retry.as_deref(), &body) {
                    Outcome::Acked
                        if (200..300).contains(&status)
                            && !acknowledges(&body, device, sequence) =>
                    {
                        Outcome::Transient(format!(
                            "HTTP {status} without the cloud's acknowledgement of sequence {sequence} (a proxy?)"
                        ))
                    }
                    other => other,
                }
            }
            Err(e) => {
                if e.is_connect() && self.cfg.endpoints.len() > 1 {
                    self.endpoint = (self.endpoint + 1) % self.cfg.endpoints.len();
                }
                // The error chain names the cause (refused, TLS, timeout); no payload.
                let mut text = e.to_string();
                let mut src = std::error::Error::source(&e);
                while let Some(s) = src {
                    text = format!("{text}: {s}");
                    src = s.source();
                }
                Outcome::Transient(text)
            }
        }
    }

    fn heartbeat_body(&self) -> p::HeartbeatBody {
        let spool = self.uplink.spool();
        p::HeartbeatBody {
            online: true,
            software: self.cfg.software.clone(),
            queued_batches: spool.pending().map(|(n, _)| n).unwrap_or(0),
            // Batches dropped when the spool was full, and refused by the guard.
            dropped: spool
                .counters()
                .unwrap_or_default()
                .iter()
                .filter(|(k, _)| k.starts_with("dropped:") || *k == "guard-refused")
                .map(|(_, v)| v)
                .sum(),
        }
    }

    /// Send one heartbeat now.
    pub async fn heartbeat(&mut self) -> Outcome {
        let Some(id) = self.uplink.identity() else {
            return Outcome::Transient("not enrolled".into());
        };
        let seq = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        match p::seal_heartbeat(&id.key, &id.device_id, seq, &self.heartbeat_body()) {
            Ok(env) => self.post(p::HEARTBEAT_PATH, env, &id.device_id, seq).await,
            Err(e) => Outcome::Rejected(format!("cannot seal a heartbeat: {e}")),
        }
    }

    /// Deliver what is spooled until the spool is empty or an attempt fails;
    /// returns the failing outcome, if any, and the number delivered.
    pub async fn drain(&mut self, bucket: &mut TokenBucket) -> (Option<Outcome>, u64) {
        let mut delivered = 0;
        loop {
            let batches = match self.uplink.spool().list_from(0, 32) {
                Ok(b) => b,
                Err(e) => return (Some(Outcome::Transient(e.to_string())), delivered),
            };
            if batches.is_empty() {
                return (None, delivered);
            }
            for b in batches {
                let body = match self.uplink.spool().body(b.seq) {
                    Ok(body) => body,
                    // Dropped meanwhile (spool full): go on.
                    Err(crate::store::DbError::Sqlite(rusqlite::Error::QueryReturnedNoRows)) => {
                        continue;
                    }
                    Err(e) => return (Some(Outcome::Transient(e.to_string())), delivered),
                };
                let wait = bucket.take(body.len() as u64);
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
                let header = match p::EnvelopeHeader::parse(&body) {
                    Ok((h, _)) => h,
                    Err(e) => {
                        return (
                            Some(Outcome::Rejected(format!("spooled batch {}: {e}", b.seq))),
                            delivered,
                        );
                    }
                };
                match self
                    .post(p::INGEST_PATH, body, &header.device, header.sequence)
                    .await
                {
                    Outcome::Acked => {
                        if let Err(e) = self.uplink.spool().ack(b.seq) {
                            return (Some(Outcome::Transient(e.to_string())), delivered);
                        }
                        delivered += 1;
                        tracing::debug!(seq = b.seq, stream = %b.stream, "batch delivered");
                    }
                    Outcome::Refused(reason) => {
                        match self.uplink.spool().dead_letter(b.seq, &reason) {
                            Ok(_) => {
                                tracing::error!(seq = b.seq, stream = %b.stream, %reason, "the cloud refused this batch; moved to the dead-letter table");
                                self.events.emit(HostEvent::SettingProblem {
                                code: format!("uplink-dead-letter:{}", b.stream),
                                text: format!("the cloud refused one batch of `{}` ({reason}); it is kept aside for support and the others go on", b.stream),
                            });
                            }
                            Err(e) => return (Some(Outcome::Transient(e.to_string())), delivered),
                        }
                    }
                    Outcome::Conflict => match self.uplink.renumber(b.seq) {
                        Ok(new) => {
                            tracing::warn!(old = b.seq, new, stream = %b.stream, "the cloud holds this sequence with other content; batch renumbered");
                        }
                        Err(e) => return (Some(Outcome::Transient(e.to_string())), delivered),
                    },
                    other => return (Some(other), delivered),
                }
            }
        }
    }

    /// Run until `shutdown` resolves.
    pub async fn run(mut self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut bucket = TokenBucket::new(self.cfg.bytes_per_sec);
        let mut backoff = self.cfg.retry_initial;
        let mut failing: Option<String> = None;
        let mut next_heartbeat = tokio::time::Instant::now();
        loop {
            let mut wait = self.cfg.heartbeat_interval;
            if self.uplink.identity().is_some() {
                if tokio::time::Instant::now() >= next_heartbeat {
                    let hb = self.heartbeat().await;
                    if hb == Outcome::Acked {
                        next_heartbeat = tokio::time::Instant::now() + self.cfg.heartbeat_interval;
                    } else {
                        next_heartbeat = tokio::time::Instant::now() + backoff;
                    }
                }
                let (outcome, delivered) = self.drain(&mut bucket).await;
                match outcome {
                    None => {
                        backoff = self.cfg.retry_initial;
                        if let Some(reason) = failing.take() {
                            tracing::info!(previous = %reason, "uplink recovered");
                            self.events.emit(HostEvent::SettingProblem {
                                code: "uplink-recovered".into(),
                                text: format!(
                                    "uploads work again ({delivered} batch(es) delivered)"
                                ),
                            });
                        }
                    }
                    Some(Outcome::RetryAfter(d)) => {
                        wait = d;
                        note_failure(
                            &self.events,
                            &mut failing,
                            "the cloud asked to retry later".into(),
                        );
                    }
                    Some(Outcome::Transient(reason)) => {
                        wait = jitter(backoff);
                        backoff = (backoff * 2).min(self.cfg.retry_max);
                        note_failure(&self.events, &mut failing, reason);
                    }
                    Some(Outcome::Rejected(reason)) => {
                        wait = self.cfg.retry_max;
                        if failing.as_deref() != Some(reason.as_str()) {
                            tracing::error!(%reason, "the cloud refuses this device's uploads; nothing is deleted");
                            self.events.emit(HostEvent::SettingProblem {
                                code: "uplink-rejected".into(),
                                text: format!("the cloud refuses this device's uploads ({reason}); data is kept; enrolment may need to be renewed"),
                            });
                        }
                        failing = Some(reason);
                    }
                    Some(Outcome::Acked | Outcome::Conflict | Outcome::Refused(_)) => {}
                }
                if failing.is_some() {
                    // No heartbeat either before the retry is due.
                    next_heartbeat = next_heartbeat.max(tokio::time::Instant::now() + wait);
                }
                wait = wait.min(
                    next_heartbeat
                        .saturating_duration_since(tokio::time::Instant::now())
                        .max(Duration::from_millis(10)),
                );
                if failing.is_none() {
                    wait = wait.min(self.cfg.heartbeat_interval);
                }
            }
            tokio::select! {
                _ = &mut shutdown => return,
                _ = self.uplink.queued(), if failing.is_none() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}

fn note_failure(events: &Events, failing: &mut Option<String>, reason: String) {
    if failing.is_none() {
        tracing::warn!(%reason, "upload failed; will retry (data stays in the spool)");
        events.emit(HostEvent::SettingProblem {
            code: "uplink-unreachable".into(),
            text: format!("uploads are failing, data is kept and retried: {reason}"),
        });
    }
    *failing = Some(reason);
}

/// Half to all of `d`, at random ("equal jitter"), so that many devices
/// coming back after an outage spread out.
pub fn jitter(d: Duration) -> Duration {
    use rand_core::RngCore;
    let r = rand_core::OsRng.next_u32() as f64 / u32::MAX as f64;
    d.mul_f64(0.5 + 0.5 * r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_are_classified() {
        let conflict = br#"{"error":"sequence-conflict","message":"other content"}"#;
        let stale = br#"{"error":"stale-heartbeat","message":"older"}"#;
        assert_eq!(classify(200, None, b"{}"), Outcome::Acked);
        assert_eq!(classify(409, None, conflict), Outcome::Conflict);
        assert_eq!(classify(409, None, stale), Outcome::Acked);
        assert_eq!(
            classify(429, Some("7"), b""),
            Outcome::RetryAfter(Duration::from_secs(7))
        );
        assert_eq!(
            classify(503, Some("999999"), b""),
            Outcome::RetryAfter(MAX_RETRY_AFTER)
        );
        assert!(matches!(classify(503, None, b""), Outcome::Transient(_)));
        assert!(matches!(classify(500, None, b""), Outcome::Transient(_)));
        let unknown = br#"{"error":"unknown-device","message":"x"}"#;
        assert_eq!(
            classify(401, None, unknown),
            Outcome::Rejected("HTTP 401 unknown-device".into())
        );
        assert!(matches!(classify(409, None, b"{}"), Outcome::Rejected(_)));
        let too_large = br#"{"error":"too-large","message":"x"}"#;
        let bad = br#"{"error":"bad-envelope","message":"x"}"#;
        let auth = br#"{"error":"authentication-failed","message":"x"}"#;
        assert!(matches!(
            classify(413, None, too_large),
            Outcome::Refused(_)
        ));
        assert!(matches!(classify(400, None, bad), Outcome::Refused(_)));
        assert!(matches!(classify(400, None, auth), Outcome::Rejected(_)));
        assert!(matches!(
            classify(413, None, b"<html>"),
            Outcome::Rejected(_)
        ));
    }

    #[test]
    fn only_the_clouds_ack_of_this_sequence_counts() {
        let dev = p::DeviceId::parse("dev-1").unwrap();
        let ack = br#"{"device-id":"dev-1","sequence":7,"duplicate":false}"#;
        assert!(acknowledges(ack, &dev, 7));
        assert!(!acknowledges(ack, &dev, 8));
        assert!(!acknowledges(ack, &p::DeviceId::parse("dev-2").unwrap(), 7));
        assert!(!acknowledges(b"<html>blocked by policy</html>", &dev, 7));
    }

    #[test]
    fn bucket_paces_to_the_rate() {
        let mut b = TokenBucket::new(1000);
        assert_eq!(b.take(1000), Duration::ZERO, "one second of burst");
        let w = b.take(500);
        assert!(
            w > Duration::from_millis(400) && w <= Duration::from_millis(500),
            "{w:?}"
        );
        for _ in 0..100 {
            let j = jitter(Duration::from_secs(10));
            assert!(j >= Duration::from_secs(5) && j <= Duration::from_secs(10));
        }
    }
}
