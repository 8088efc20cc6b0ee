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
//!   - connection errors, TLS failures, timeouts and other `5xx` →
//!     exponential back-off with jitter (half to all of the delay), from
//!     `retry-initial-ms` to `retry-max-ms`;
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
//! - One back-off for everything: a failed heartbeat backs off exactly like
//!   a failed batch (nothing queued is no proof that the cloud is
//!   reachable), and no request of either kind leaves before the retry is
//!   due. After [`problem::FAILURES_BEFORE_PROBLEM`] failed attempts in a
//!   row a setting problem is raised once — [`Setting::UplinkTlsRefused`] when
//!   the server was reached but TLS failed, [`Setting::UplinkUnreachable`]
//!   otherwise, again only if the kind changes — and the first exchange
//!   that works resolves it (`HostEvent::SettingResolved`) and resets the back-off.
//! - Failures are worded by [`crate::net::ConnectError`] ("server … reached,
//!   TLS refused: the server's certificate expired on …"); answers are read
//!   up to [`MAX_ANSWER_BYTES`], a longer one is a failure, not cut short.

use super::{Uplink, problem};
use crate::events::{Events, HostEvent, Setting};
use crate::net::{ConnectError, Target, read_answer};
use outpost_protocol as p;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Most bytes of a server's answer read (shared with enrolment).
pub const MAX_ANSWER_BYTES: usize = crate::net::MAX_ANSWER_BYTES;

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
    /// Try again after the back-off (5xx, an answer that is not the
    /// cloud's acknowledgement, a local error).
    Transient(String),
    /// Try again after the back-off: no usable answer (unreachable, TLS
    /// refused, timeout, oversized or broken answer).
    Network(ConnectError),
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
        let server = self.cfg.endpoints[self.endpoint].trim_end_matches('/');
        let target = Target {
            server,
            timeout: self.cfg.request_timeout,
        };
        let res = self
            .client
            .post(&url)
            .header("content-type", "application/octet-stream")
            .body(body)
            .send()
            .await;
        let r = match res {
            Ok(r) => r,
            Err(e) => {
                let failure = ConnectError::from_reqwest(&e, &target);
                if e.is_connect() && self.cfg.endpoints.len() > 1 {
                    self.endpoint = (self.endpoint + 1) % self.cfg.endpoints.len();
                }
                return Outcome::Network(failure);
            }
        };
        let status = r.status().as_u16();
        let retry = r
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        // An answer is a small JSON document: a longer one, a stalled or a
        // broken one is a failure, never cut short and read as an answer.
        let body = match read_answer(r, MAX_ANSWER_BYTES, &target).await {
            Ok(body) => body,
            Err(e) => return Outcome::Network(e),
        };
        match classify(status, retry.as_deref(), &body) {
            Outcome::Acked
                if (200..300).contains(&status) && !acknowledges(&body, device, sequence) =>
            {
                Outcome::Transient(format!(
                    "HTTP {status} without the cloud's acknowledgement of sequence {sequence} (a proxy?)"
                ))
            }
            other => other,
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
                                self.events.emit(HostEvent::DeadLettered {
                                    id: crate::store::deadletter::DeadLetterId {
                                        source: crate::store::deadletter::Source::Cloud,
                                        n: b.seq,
                                    }
                                    .to_string(),
                                    source: crate::store::deadletter::Source::Cloud,
                                    module: b.module.clone(),
                                    stream: b.stream.clone(),
                                    reason: reason.clone(),
                                    field: None,
                                    repeated: false,
                                });
                                self.events.emit(HostEvent::problem(
                                    Setting::UplinkDeadLetter(b.stream.clone()),
                                    format!("the cloud refused one batch of `{}` ({reason}); it is kept aside for support and the others go on", b.stream),
                                ));
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
        use tokio::time::Instant;
        tokio::pin!(shutdown);
        let mut bucket = TokenBucket::new(self.cfg.bytes_per_sec);
        let mut health = Health::new(self.cfg.retry_initial);
        let mut next_heartbeat = Instant::now();
        loop {
            let mut wake = Instant::now() + self.cfg.heartbeat_interval;
            if self.uplink.identity().is_some() {
                let now = Instant::now();
                if health.retry_at.is_none_or(|t| now >= t) {
                    let heartbeat_due = now >= next_heartbeat;
                    let mut failure = None;
                    let mut exchanged = false;
                    if heartbeat_due {
                        match self.heartbeat().await {
                            Outcome::Acked => {
                                exchanged = true;
                                next_heartbeat = Instant::now() + self.cfg.heartbeat_interval;
                            }
                            other => failure = Some(other),
                        }
                    }
                    if failure.is_none() {
                        let (outcome, delivered) = self.drain(&mut bucket).await;
                        exchanged |= delivered > 0;
                        failure = outcome;
                    }
                    match failure {
                        Some(
                            f @ (Outcome::Transient(_)
                            | Outcome::Network(_)
                            | Outcome::RetryAfter(_)
                            | Outcome::Rejected(_)),
                        ) => {
                            let wait = health.failed(f, &self.cfg, &self.events);
                            let retry_at = Instant::now() + wait;
                            health.retry_at = Some(retry_at);
                            // A failed heartbeat is tried again when the
                            // retry is due; none leaves before it.
                            if heartbeat_due && !exchanged {
                                next_heartbeat = retry_at;
                            }
                            next_heartbeat = next_heartbeat.max(retry_at);
                        }
                        Some(Outcome::Acked | Outcome::Conflict | Outcome::Refused(_)) | None => {
                            health.retry_at = None;
                            if exchanged {
                                health.succeeded(&self.cfg, &self.events);
                            }
                        }
                    }
                }
                wake = health.retry_at.unwrap_or(next_heartbeat);
            }
            let wake = wake.max(Instant::now() + Duration::from_millis(10));
            tokio::select! {
                _ = &mut shutdown => return,
                _ = self.uplink.queued(), if health.retry_at.is_none() => {}
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
    }
}

/// The sender's view of the cloud: back-off, failures in a row, and the
/// problem raised about them (if any).
struct Health {
    backoff: Duration,
    /// No request before this (a back-off or Retry-After is running).
    retry_at: Option<tokio::time::Instant>,
    failures: u32,
    /// The problem raised (and its reason, for rejections).
    raised: Option<(Setting, String)>,
}

impl Health {
    fn new(initial: Duration) -> Health {
        Health {
            backoff: initial,
            retry_at: None,
            failures: 0,
            raised: None,
        }
    }

    /// Count a failed attempt, raise a problem when it is time, and return
    /// how long to wait before the next attempt.
    fn failed(&mut self, outcome: Outcome, cfg: &SenderConfig, events: &Events) -> Duration {
        self.failures += 1;
        let (wait, code, reason) = match outcome {
            Outcome::Rejected(reason) => (cfg.retry_max, Setting::UplinkRejected, reason),
            Outcome::RetryAfter(d) => (
                d,
                Setting::UplinkUnreachable,
                format!("the cloud asked to retry after {d:?}"),
            ),
            Outcome::Network(e) => {
                let wait = jitter(self.backoff);
                self.backoff = (self.backoff * 2).min(cfg.retry_max);
                let code = if e.is_tls() {
                    Setting::UplinkTlsRefused
                } else {
                    Setting::UplinkUnreachable
                };
                (wait, code, e.to_string())
            }
            Outcome::Transient(reason) => {
                let wait = jitter(self.backoff);
                self.backoff = (self.backoff * 2).min(cfg.retry_max);
                (wait, Setting::UplinkUnreachable, reason)
            }
            Outcome::Acked | Outcome::Conflict | Outcome::Refused(_) => {
                return self.backoff;
            }
        };
        if code == Setting::UplinkRejected {
            if self.raised.as_ref().map(|(c, r)| (c, r.as_str())) != Some((&code, reason.as_str()))
            {
                tracing::error!(%reason, "the cloud refuses this device's uploads; nothing is deleted");
                let text = format!(
                    "the cloud refuses this device's uploads ({reason}); data is kept; enrolment may need to be renewed"
                );
                self.raise(code, text, reason, events);
            }
        } else if self.failures >= problem::FAILURES_BEFORE_PROBLEM
            && self.raised.as_ref().map(|(c, _)| c) != Some(&code)
        {
            tracing::warn!(%reason, failures = self.failures, "uploads and heartbeats are failing; will retry (data stays in the spool)");
            let text = format!(
                "the cloud cannot be used ({} attempts in a row failed); data is kept and retried: {reason}",
                self.failures
            );
            self.raise(code, text, reason, events);
        } else {
            tracing::debug!(%reason, failures = self.failures, "upload or heartbeat failed; will retry");
        }
        wait
    }

    /// Raise `setting` (resolving a different one raised before).
    fn raise(&mut self, setting: Setting, text: String, reason: String, events: &Events) {
        if let Some((old, _)) = self.raised.take()
            && old != setting
        {
            events.emit(HostEvent::SettingResolved { setting: old });
        }
        events.emit(HostEvent::problem(setting.clone(), text));
        self.raised = Some((setting, reason));
    }

    /// An exchange with the cloud worked: reset, and resolve the problem
    /// raised, if any.
    fn succeeded(&mut self, cfg: &SenderConfig, events: &Events) {
        if let Some((setting, reason)) = self.raised.take() {
            tracing::info!(previous = %reason, "uplink recovered");
            events.emit(HostEvent::SettingResolved { setting });
        }
        self.failures = 0;
        self.backoff = cfg.retry_initial;
        self.retry_at = None;
    }
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
