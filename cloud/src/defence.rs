//! Intrusion defence: request rates per source address and per device,
//! strikes that block a misbehaving source for a while, and the alerts an
//! operator sees (`outpost-cloud alerts`, the metrics listener's `/alerts`).
//!
//! One shape for every endpoint: a handler asks [`Defence::admit`] before it
//! reads anything of a request (blocked source, or the source over its rate
//! for that [`Endpoint`] → `429 rate-limited` with `Retry-After`), asks
//! [`Defence::admit_device`] once an envelope has authenticated (the device
//! over its own rate → `429`), and reports what the request turned out to be
//! with [`Defence::strike`].
//!
//! # Rates
//!
//! Token buckets ([`Rate`]: a sustained rate per minute and a burst). Per
//! source (an IPv4 address or IPv6 /64, as [`crate::limits`]): enrolments
//! ([`ENROLL_PER_SOURCE`]), ingest and heartbeats together
//! ([`INGEST_PER_SOURCE`], sized for a site of many devices behind one NAT
//! address draining their backlogs) and staff sign-ins ([`SIGN_IN_PER_SOURCE`]).
//! Per device, checked only after its envelope authenticated so that nobody
//! can spend a device's allowance by sending forgeries under its id:
//! [`INGEST_PER_DEVICE`]. The host's uplink waits out `Retry-After` and
//! sends the same batch again, so a rate refusal loses nothing.
//!
//! # Strikes and blocks
//!
//! Each request that fails authentication or looks like an attack is a
//! strike against its source ([`Strike`]: authentication failed, unknown
//! device, bad envelope, wrong enrolment token, replayed batch, sequence
//! conflict). [`STRIKES_BEFORE_BLOCK`] strikes within [`STRIKE_WINDOW_MS`]
//! block the source for [`BLOCK_MS`], doubling with every further block up
//! to [`BLOCK_MAX_MS`]; a blocked source's requests are refused before their
//! body is read (counted `source-blocked`). A replay is normal once in a
//! while (an acknowledgement lost on the way back), so it weighs little:
//! only a burst of them blocks. Behind NAT a whole site shares its address:
//! one device with a wrong key can get the site blocked for a while; the
//! alert names the device to fix.
//!
//! # Alerts
//!
//! A block, a source or device first going over a rate in a
//! [`STRIKE_WINDOW_MS`], and a batch the upload scanner quarantined raise one
//! [`Alert`] (logged as a warning and written
//! to the store's `alerts` table by the counter flush). Alerts carry the
//! source address and the device id when known — never a payload or a token.
//!
//! At most [`MAX_TRACKED`] sources and devices are remembered; beyond that,
//! new ones share one record (fail closed, as the enrolment guess lock-out).

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use outpost_protocol::DeviceId;
use serde::{Deserialize, Serialize};

use crate::limits::Source;

/// Enrolments per source: sustained per minute, burst.
pub const ENROLL_PER_SOURCE: Rate = Rate::new(10, 30);
/// Ingest and heartbeat requests per source: sustained per minute, burst.
pub const INGEST_PER_SOURCE: Rate = Rate::new(6_000, 1_000);
/// Ingest and heartbeat requests per authenticated device: sustained per
/// minute, burst.
pub const INGEST_PER_DEVICE: Rate = Rate::new(1_200, 200);
/// Staff sign-ins per source: sustained per minute, burst.
pub const SIGN_IN_PER_SOURCE: Rate = Rate::new(10, 20);
/// Strike weight that blocks a source within one window.
pub const STRIKES_BEFORE_BLOCK: u32 = 20;
/// The window strikes are counted in.
pub const STRIKE_WINDOW_MS: u64 = 600_000;
/// First block; doubles with every further block.
pub const BLOCK_MS: u64 = 60_000;
/// Longest block.
pub const BLOCK_MAX_MS: u64 = 3_600_000;
/// Most sources (and, separately, devices) remembered.
pub const MAX_TRACKED: usize = 100_000;
/// Alerts kept in memory for `/alerts` before the oldest are dropped from
/// the in-memory view (every alert is also in the store).
const RECENT_ALERTS: usize = 1_000;

/// A token-bucket rate: `per_minute` sustained, up to `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Sustained requests per minute.
    pub per_minute: u32,
    /// Requests allowed at once from a full bucket.
    pub burst: u32,
}

impl Rate {
    /// A rate of `per_minute` with a burst of `burst`.
    pub const fn new(per_minute: u32, burst: u32) -> Rate {
        Rate { per_minute, burst }
    }

    fn validate(&self, name: &str) -> Result<(), String> {
        if self.per_minute == 0 || self.burst == 0 {
            return Err(format!("{name}: rate and burst must be at least 1"));
        }
        Ok(())
    }
}

/// The defence settings (see the module documentation for the defaults).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefenceConfig {
    /// Enrolments per source ([`ENROLL_PER_SOURCE`]).
    pub enroll_per_source: Rate,
    /// Ingest and heartbeats per source ([`INGEST_PER_SOURCE`]).
    pub ingest_per_source: Rate,
    /// Ingest and heartbeats per device ([`INGEST_PER_DEVICE`]).
    pub ingest_per_device: Rate,
    /// Staff sign-ins per source ([`SIGN_IN_PER_SOURCE`]).
    pub sign_in_per_source: Rate,
    /// Strike weight that blocks ([`STRIKES_BEFORE_BLOCK`]).
    pub strikes_before_block: u32,
    /// Strike window ([`STRIKE_WINDOW_MS`]).
    pub strike_window: Duration,
    /// First block ([`BLOCK_MS`]).
    pub block: Duration,
    /// Longest block ([`BLOCK_MAX_MS`]).
    pub max_block: Duration,
    /// Most sources and devices remembered ([`MAX_TRACKED`]).
    pub max_tracked: usize,
}

impl Default for DefenceConfig {
    fn default() -> Self {
        DefenceConfig {
            enroll_per_source: ENROLL_PER_SOURCE,
            ingest_per_source: INGEST_PER_SOURCE,
            ingest_per_device: INGEST_PER_DEVICE,
            sign_in_per_source: SIGN_IN_PER_SOURCE,
            strikes_before_block: STRIKES_BEFORE_BLOCK,
            strike_window: Duration::from_millis(STRIKE_WINDOW_MS),
            block: Duration::from_millis(BLOCK_MS),
            max_block: Duration::from_millis(BLOCK_MAX_MS),
            max_tracked: MAX_TRACKED,
        }
    }
}

impl DefenceConfig {
    /// The defaults without request rates (strikes and blocks stay): for
    /// benchmarks that measure throughput, never for a served cloud.
    pub fn without_rate_limits() -> DefenceConfig {
        let unlimited = Rate::new(u32::MAX, u32::MAX);
        DefenceConfig {
            enroll_per_source: unlimited,
            ingest_per_source: unlimited,
            ingest_per_device: unlimited,
            sign_in_per_source: unlimited,
            ..DefenceConfig::default()
        }
    }

    /// Check the settings make sense; the error names the setting.
    pub fn validate(&self) -> Result<(), String> {
        self.enroll_per_source.validate("enroll-per-source")?;
        self.ingest_per_source.validate("ingest-per-source")?;
        self.ingest_per_device.validate("ingest-per-device")?;
        self.sign_in_per_source.validate("sign-in-per-source")?;
        if self.strikes_before_block == 0 {
            return Err("strikes-before-block must be at least 1".into());
        }
        for (name, d) in [
            ("strike-window", self.strike_window),
            ("block", self.block),
            ("max-block", self.max_block),
        ] {
            if d.is_zero() {
                return Err(format!("{name} must be more than zero"));
            }
        }
        if self.max_tracked == 0 {
            return Err("max-tracked must be at least 1".into());
        }
        Ok(())
    }
}

/// What a request is for (each has its own per-source rate).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `POST /v1/enroll`.
    Enroll,
    /// `POST /v1/ingest` and `POST /v1/heartbeat`.
    Ingest,
    /// A staff sign-in.
    SignIn,
}

impl Endpoint {
    /// Its name in logs and alerts.
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Enroll => "enroll",
            Endpoint::Ingest => "ingest",
            Endpoint::SignIn => "sign-in",
        }
    }
}

/// A request that counts against its source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strike {
    /// An envelope whose tag did not verify under the device's key.
    AuthenticationFailed,
    /// An envelope for a device that is not enrolled.
    UnknownDevice,
    /// An envelope that could not be parsed or opened.
    BadEnvelope,
    /// A wrong or missing enrolment token.
    WrongEnrollmentToken,
    /// A failed staff sign-in.
    SignInFailed,
    /// A batch stored before, sent again.
    Replay,
    /// A sequence stored before with other content.
    SequenceConflict,
}

impl Strike {
    /// Its name in logs and alerts.
    pub fn as_str(self) -> &'static str {
        match self {
            Strike::AuthenticationFailed => "authentication-failed",
            Strike::UnknownDevice => "unknown-device",
            Strike::BadEnvelope => "bad-envelope",
            Strike::WrongEnrollmentToken => "wrong-enrollment-token",
            Strike::SignInFailed => "sign-in-failed",
            Strike::Replay => "replay",
            Strike::SequenceConflict => "sequence-conflict",
        }
    }

    /// Its weight against [`DefenceConfig::strikes_before_block`], in
    /// quarters: a replay, which a lost acknowledgement explains, counts a
    /// quarter of a failure.
    fn quarters(self) -> u32 {
        match self {
            Strike::Replay => 1,
            _ => 4,
        }
    }
}

/// What an alert is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AlertKind {
    /// A source was blocked; `reason` is the strike that blocked it.
    SourceBlocked,
    /// A source went over its rate for an endpoint.
    SourceRateExceeded,
    /// A device went over its ingest rate.
    DeviceRateExceeded,
    /// The upload scanner flagged a batch, which was quarantined
    /// ([`crate::quarantine`]); `reason` is the signature's name.
    BatchQuarantined,
}

impl AlertKind {
    /// Its name in the store, logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::SourceBlocked => "source-blocked",
            AlertKind::SourceRateExceeded => "source-rate-exceeded",
            AlertKind::DeviceRateExceeded => "device-rate-exceeded",
            AlertKind::BatchQuarantined => "batch-quarantined",
        }
    }

    /// Every kind, for metrics.
    pub const ALL: [AlertKind; 4] = [
        AlertKind::SourceBlocked,
        AlertKind::SourceRateExceeded,
        AlertKind::DeviceRateExceeded,
        AlertKind::BatchQuarantined,
    ];

    /// Parse [`AlertKind::as_str`].
    pub fn parse(s: &str) -> Option<AlertKind> {
        AlertKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// One alert for the operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Alert {
    /// When, unix seconds.
    pub at: i64,
    /// What happened.
    pub kind: AlertKind,
    /// Why: the strike that blocked (`source-blocked`), the endpoint whose
    /// rate was exceeded, or the scanner's signature name
    /// (`batch-quarantined`).
    pub reason: String,
    /// The source: an IPv4 address, or an IPv6 /64 as `2001:db8:1:2::/64`.
    pub source: String,
    /// The device, when the request named one that is enrolled.
    pub device: Option<DeviceId>,
    /// For a block: its length in seconds.
    pub block_secs: Option<u64>,
}

/// Why [`Defence::admit`] refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The source is blocked; retry after this long.
    Blocked(Duration),
    /// The source or device is over its rate; retry after this long.
    RateLimited(Duration),
}

impl Refused {
    /// How long the client should wait.
    pub fn wait(self) -> Duration {
        match self {
            Refused::Blocked(d) | Refused::RateLimited(d) => d,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(rate: Rate, now: Instant) -> Bucket {
        Bucket {
            tokens: f64::from(rate.burst),
            at: now,
        }
    }

    /// Take one token, or say how long until one is there.
    fn take(&mut self, rate: Rate, now: Instant) -> Result<(), Duration> {
        let per_sec = f64::from(rate.per_minute) / 60.0;
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * per_sec).min(f64::from(rate.burst));
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / per_sec))
        }
    }
}

struct SourceRecord {
    buckets: HashMap<Endpoint, Bucket>,
    /// Strike weight in quarters within the current window.
    quarters: u32,
    window_start: Instant,
    blocked_until: Option<Instant>,
    blocks: u32,
    last_seen: Instant,
    rate_alerted: HashMap<Endpoint, Instant>,
}

impl SourceRecord {
    fn new(now: Instant) -> SourceRecord {
        SourceRecord {
            buckets: HashMap::new(),
            quarters: 0,
            window_start: now,
            blocked_until: None,
            blocks: 0,
            last_seen: now,
            rate_alerted: HashMap::new(),
        }
    }
}

struct DeviceRecord {
    bucket: Bucket,
    last_seen: Instant,
    rate_alerted: Option<Instant>,
}

/// A table of at most `max` records keyed by `K`, sharing one overflow
/// record beyond that.
struct Table<K, V> {
    map: HashMap<K, V>,
    overflow: Option<V>,
    last_prune: Option<Instant>,
}

impl<K: Hash + Eq + Clone, V> Table<K, V> {
    fn new() -> Self {
        Table {
            map: HashMap::new(),
            overflow: None,
            last_prune: None,
        }
    }

    fn get_or_insert(
        &mut self,
        key: &K,
        max: usize,
        now: Instant,
        new: impl Fn() -> V,
        keep: impl Fn(&V, Instant) -> bool,
    ) -> &mut V {
        if !self.map.contains_key(key) && self.map.len() >= max {
            let due = self
                .last_prune
                .is_none_or(|p| now.saturating_duration_since(p) >= Duration::from_secs(1));
            if due {
                self.last_prune = Some(now);
                self.map.retain(|_, v| keep(v, now));
            }
            if self.map.len() >= max {
                return self.overflow.get_or_insert_with(new);
            }
        }
        self.map.entry(key.clone()).or_insert_with(new)
    }
}

struct State {
    sources: Table<Source, SourceRecord>,
    devices: Table<DeviceId, DeviceRecord>,
}

/// Rates, strikes, blocks and alerts of one server (see the module
/// documentation).
pub struct Defence {
    cfg: DefenceConfig,
    state: Mutex<State>,
    pending: Mutex<Vec<Alert>>,
    recent: Mutex<std::collections::VecDeque<Alert>>,
}

impl std::fmt::Debug for Defence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Defence")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// How a source is written in alerts.
pub(crate) fn source_text(ip: IpAddr) -> String {
    match Source::of(ip) {
        Source::V4(a) => std::net::Ipv4Addr::from(a).to_string(),
        Source::V6Net(n) => {
            let mut full = [0u8; 16];
            full[..8].copy_from_slice(&n);
            format!("{}/64", std::net::Ipv6Addr::from(full))
        }
        Source::Overflow => "(many sources)".into(),
    }
}

impl Defence {
    /// A defence with `cfg` (check it with [`DefenceConfig::validate`]).
    pub fn new(cfg: DefenceConfig) -> Defence {
        Defence {
            cfg,
            state: Mutex::new(State {
                sources: Table::new(),
                devices: Table::new(),
            }),
            pending: Mutex::new(Vec::new()),
            recent: Mutex::new(std::collections::VecDeque::new()),
        }
    }

    fn rate(&self, endpoint: Endpoint) -> Rate {
        match endpoint {
            Endpoint::Enroll => self.cfg.enroll_per_source,
            Endpoint::Ingest => self.cfg.ingest_per_source,
            Endpoint::SignIn => self.cfg.sign_in_per_source,
        }
    }

    fn source<'a>(&self, st: &'a mut State, ip: IpAddr, now: Instant) -> &'a mut SourceRecord {
        let window = self.cfg.strike_window;
        st.sources.get_or_insert(
            &Source::of(ip),
            self.cfg.max_tracked,
            now,
            || SourceRecord::new(now),
            |r, now| {
                r.blocked_until.is_some_and(|u| u > now)
                    || now.saturating_duration_since(r.last_seen) < window
            },
        )
    }

    /// May a request from `ip` for `endpoint` go on? Called before anything
    /// of the request is read.
    pub fn admit(&self, ip: IpAddr, endpoint: Endpoint) -> Result<(), Refused> {
        self.admit_at(ip, endpoint, Instant::now())
    }

    pub(crate) fn admit_at(
        &self,
        ip: IpAddr,
        endpoint: Endpoint,
        now: Instant,
    ) -> Result<(), Refused> {
        let rate = self.rate(endpoint);
        let window = self.cfg.strike_window;
        let mut st = lock(&self.state);
        let rec = self.source(&mut st, ip, now);
        rec.last_seen = now;
        if let Some(until) = rec.blocked_until
            && until > now
        {
            return Err(Refused::Blocked(until - now));
        }
        let bucket = rec
            .buckets
            .entry(endpoint)
            .or_insert_with(|| Bucket::full(rate, now));
        let Err(wait) = bucket.take(rate, now) else {
            return Ok(());
        };
        let alert = match rec.rate_alerted.get(&endpoint) {
            Some(at) if now.saturating_duration_since(*at) < window => false,
            _ => {
                rec.rate_alerted.insert(endpoint, now);
                true
            }
        };
        drop(st);
        if alert {
            self.raise(Alert {
                at: unix_now(),
                kind: AlertKind::SourceRateExceeded,
                reason: endpoint.as_str().into(),
                source: source_text(ip),
                device: None,
                block_secs: None,
            });
        }
        Err(Refused::RateLimited(wait))
    }

    /// May an authenticated request of `device` (from `ip`) go on?
    pub fn admit_device(&self, ip: IpAddr, device: &DeviceId) -> Result<(), Refused> {
        self.admit_device_at(ip, device, Instant::now())
    }

    pub(crate) fn admit_device_at(
        &self,
        ip: IpAddr,
        device: &DeviceId,
        now: Instant,
    ) -> Result<(), Refused> {
        let rate = self.cfg.ingest_per_device;
        let window = self.cfg.strike_window;
        let mut st = lock(&self.state);
        let rec = st.devices.get_or_insert(
            device,
            self.cfg.max_tracked,
            now,
            || DeviceRecord {
                bucket: Bucket::full(rate, now),
                last_seen: now,
                rate_alerted: None,
            },
            |r, now| now.saturating_duration_since(r.last_seen) < window,
        );
        rec.last_seen = now;
        let Err(wait) = rec.bucket.take(rate, now) else {
            return Ok(());
        };
        let alert = match rec.rate_alerted {
            Some(at) if now.saturating_duration_since(at) < window => false,
            _ => {
                rec.rate_alerted = Some(now);
                true
            }
        };
        drop(st);
        if alert {
            self.raise(Alert {
                at: unix_now(),
                kind: AlertKind::DeviceRateExceeded,
                reason: Endpoint::Ingest.as_str().into(),
                source: source_text(ip),
                device: Some(device.clone()),
                block_secs: None,
            });
        }
        Err(Refused::RateLimited(wait))
    }

    /// Count `strike` against the source of `ip` (naming `device` when the
    /// request named an enrolled one). Returns the block it caused, if any.
    pub fn strike(
        &self,
        ip: IpAddr,
        strike: Strike,
        device: Option<&DeviceId>,
    ) -> Option<Duration> {
        self.strike_at(ip, strike, device, Instant::now())
    }

    pub(crate) fn strike_at(
        &self,
        ip: IpAddr,
        strike: Strike,
        device: Option<&DeviceId>,
        now: Instant,
    ) -> Option<Duration> {
        let cfg = &self.cfg;
        let mut st = lock(&self.state);
        let rec = self.source(&mut st, ip, now);
        rec.last_seen = now;
        if rec.blocked_until.is_some_and(|u| u > now) {
            return None;
        }
        if now.saturating_duration_since(rec.window_start) >= cfg.strike_window {
            rec.window_start = now;
            rec.quarters = 0;
        }
        rec.quarters = rec.quarters.saturating_add(strike.quarters());
        if rec.quarters < cfg.strikes_before_block.saturating_mul(4) {
            return None;
        }
        let period = cfg
            .block
            .saturating_mul(1u32 << rec.blocks.min(31))
            .min(cfg.max_block);
        rec.blocks = rec.blocks.saturating_add(1);
        rec.blocked_until = Some(now + period);
        rec.quarters = 0;
        rec.window_start = now;
        drop(st);
        self.raise(Alert {
            at: unix_now(),
            kind: AlertKind::SourceBlocked,
            reason: strike.as_str().into(),
            source: source_text(ip),
            device: device.cloned(),
            block_secs: Some(period.as_secs()),
        });
        Some(period)
    }

    /// Sources blocked now.
    pub fn blocked_sources(&self) -> usize {
        let now = Instant::now();
        let st = lock(&self.state);
        st.sources
            .map
            .values()
            .chain(st.sources.overflow.iter())
            .filter(|r| r.blocked_until.is_some_and(|u| u > now))
            .count()
    }

    /// Raise an alert about a batch the scanner flagged.
    pub(crate) fn quarantined(&self, ip: IpAddr, device: &DeviceId, signature: &str) {
        self.raise(Alert {
            at: unix_now(),
            kind: AlertKind::BatchQuarantined,
            reason: signature.to_owned(),
            source: source_text(ip),
            device: Some(device.clone()),
            block_secs: None,
        });
    }

    fn raise(&self, alert: Alert) {
        tracing::warn!(
            kind = alert.kind.as_str(),
            reason = %alert.reason,
            source = %alert.source,
            device = alert.device.as_ref().map(|d| d.to_string()),
            block_secs = alert.block_secs,
            "alert"
        );
        lock(&self.pending).push(alert.clone());
        let mut recent = lock(&self.recent);
        if recent.len() >= RECENT_ALERTS {
            recent.pop_front();
        }
        recent.push_back(alert);
    }

    /// Take the alerts not yet written to the store.
    pub(crate) fn take_pending(&self) -> Vec<Alert> {
        std::mem::take(&mut *lock(&self.pending))
    }

    /// The alerts not yet written to the store.
    pub(crate) fn pending_alerts(&self) -> Vec<Alert> {
        lock(&self.pending).clone()
    }

    /// Put alerts back whose write failed (written first next time).
    pub(crate) fn put_back(&self, mut alerts: Vec<Alert>) {
        let mut p = lock(&self.pending);
        alerts.append(&mut p);
        *p = alerts;
    }

    /// The most recent alerts of this process, oldest first.
    pub fn recent_alerts(&self) -> Vec<Alert> {
        lock(&self.recent).iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));

    fn cfg() -> DefenceConfig {
        DefenceConfig {
            enroll_per_source: Rate::new(60, 3),
            ingest_per_device: Rate::new(120, 2),
            strikes_before_block: 3,
            strike_window: Duration::from_secs(100),
            block: Duration::from_secs(10),
            max_block: Duration::from_secs(25),
            ..DefenceConfig::default()
        }
    }

    fn dev(n: u8) -> DeviceId {
        DeviceId::parse(&format!("dev-{:032x}", n)).unwrap()
    }

    #[test]
    fn a_source_gets_its_burst_then_one_per_period_and_others_are_not_affected() {
        let d = Defence::new(cfg());
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(d.admit_at(A, Endpoint::Enroll, t0), Ok(()));
        }
        // 60 a minute: the next token comes in a second.
        assert_eq!(
            d.admit_at(A, Endpoint::Enroll, t0),
            Err(Refused::RateLimited(Duration::from_secs(1)))
        );
        assert_eq!(d.admit_at(B, Endpoint::Enroll, t0), Ok(()));
        // Another endpoint has its own bucket.
        assert_eq!(d.admit_at(A, Endpoint::Ingest, t0), Ok(()));
        assert_eq!(
            d.admit_at(A, Endpoint::Enroll, t0 + Duration::from_secs(1)),
            Ok(())
        );
        // One alert for the first refusal in the window, not one per refusal.
        d.admit_at(A, Endpoint::Enroll, t0 + Duration::from_secs(1))
            .unwrap_err();
        let alerts = d.take_pending();
        assert_eq!(alerts.len(), 1, "{alerts:?}");
        assert_eq!(alerts[0].kind, AlertKind::SourceRateExceeded);
        assert_eq!(alerts[0].reason, "enroll");
        assert_eq!(alerts[0].source, "192.0.2.1");
    }

    #[test]
    fn strikes_block_the_source_for_a_doubling_time_up_to_the_cap() {
        let d = Defence::new(cfg());
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let device = dev(1);
        assert_eq!(
            d.strike_at(A, Strike::AuthenticationFailed, Some(&device), t0),
            None
        );
        assert_eq!(d.strike_at(A, Strike::UnknownDevice, None, t0), None);
        assert_eq!(d.strike_at(A, Strike::BadEnvelope, None, t0), Some(s(10)));
        assert_eq!(
            d.admit_at(A, Endpoint::Ingest, t0 + s(4)),
            Err(Refused::Blocked(s(6)))
        );
        assert_eq!(d.admit_at(B, Endpoint::Ingest, t0 + s(4)), Ok(()));
        assert_eq!(d.blocked_sources(), 1);
        // Strikes while blocked do not extend it; after it, three more block
        // for twice as long, then the cap.
        assert_eq!(d.strike_at(A, Strike::BadEnvelope, None, t0 + s(5)), None);
        assert_eq!(d.admit_at(A, Endpoint::Ingest, t0 + s(10)), Ok(()));
        for _ in 0..2 {
            assert_eq!(d.strike_at(A, Strike::BadEnvelope, None, t0 + s(10)), None);
        }
        assert_eq!(
            d.strike_at(A, Strike::BadEnvelope, None, t0 + s(10)),
            Some(s(20))
        );
        for _ in 0..2 {
            d.strike_at(A, Strike::BadEnvelope, None, t0 + s(30));
        }
        assert_eq!(
            d.strike_at(A, Strike::BadEnvelope, None, t0 + s(30)),
            Some(s(25))
        );
        let alerts = d.take_pending();
        assert_eq!(alerts.len(), 3);
        assert!(alerts.iter().all(|a| a.kind == AlertKind::SourceBlocked));
        assert_eq!(alerts[0].reason, "bad-envelope");
        assert_eq!(alerts[0].block_secs, Some(10));
    }

    #[test]
    fn a_replay_weighs_a_quarter_and_strikes_are_forgotten_after_the_window() {
        let d = Defence::new(cfg());
        let t0 = Instant::now();
        for _ in 0..11 {
            assert_eq!(d.strike_at(A, Strike::Replay, None, t0), None);
        }
        assert!(d.strike_at(A, Strike::Replay, None, t0).is_some());
        let d = Defence::new(cfg());
        d.strike_at(A, Strike::SequenceConflict, None, t0);
        d.strike_at(A, Strike::SequenceConflict, None, t0);
        assert_eq!(
            d.strike_at(
                A,
                Strike::SequenceConflict,
                None,
                t0 + Duration::from_secs(100)
            ),
            None
        );
    }

    #[test]
    fn a_device_over_its_rate_is_refused_whatever_its_source() {
        let d = Defence::new(cfg());
        let t0 = Instant::now();
        let device = dev(2);
        assert_eq!(d.admit_device_at(A, &device, t0), Ok(()));
        assert_eq!(d.admit_device_at(B, &device, t0), Ok(()));
        assert_eq!(
            d.admit_device_at(A, &device, t0),
            Err(Refused::RateLimited(Duration::from_millis(500)))
        );
        assert_eq!(d.admit_device_at(A, &dev(3), t0), Ok(()));
        let alerts = d.take_pending();
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].kind, AlertKind::DeviceRateExceeded);
        assert_eq!(alerts[0].device.as_ref(), Some(&device));
    }

    #[test]
    fn a_full_table_puts_new_sources_under_one_shared_record() {
        let d = Defence::new(DefenceConfig {
            max_tracked: 2,
            ..cfg()
        });
        let t0 = Instant::now();
        d.admit_at(A, Endpoint::Enroll, t0).unwrap();
        d.admit_at(B, Endpoint::Enroll, t0).unwrap();
        let c = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 3));
        let e = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 4));
        // C and E share one bucket of 3.
        d.admit_at(c, Endpoint::Enroll, t0).unwrap();
        d.admit_at(e, Endpoint::Enroll, t0).unwrap();
        d.admit_at(c, Endpoint::Enroll, t0).unwrap();
        assert!(d.admit_at(e, Endpoint::Enroll, t0).is_err());
        // Once the others are quiet past the window, they are pruned and a
        // new source gets its own record again.
        let later = t0 + Duration::from_secs(200);
        d.admit_at(c, Endpoint::Enroll, later).unwrap();
        assert_eq!(lock(&d.state).sources.map.len(), 1);
    }

    #[test]
    fn ipv6_sources_are_written_as_their_64() {
        let ip: IpAddr = "2001:db8:1:2:abcd::9".parse().unwrap();
        assert_eq!(source_text(ip), "2001:db8:1:2::/64");
        assert_eq!(source_text(A), "192.0.2.1");
    }

    #[test]
    fn settings_that_make_no_sense_are_refused_by_name() {
        let bad = DefenceConfig {
            ingest_per_device: Rate::new(0, 5),
            ..DefenceConfig::default()
        };
        assert!(bad.validate().unwrap_err().contains("ingest-per-device"));
        assert!(DefenceConfig::default().validate().is_ok());
    }
}
