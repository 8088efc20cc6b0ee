//! What one client may cost the server: connection caps (global and per
//! source address), the slow-client timeouts, and the lock-out of addresses
//! that guess enrolment tokens.
//!
//! # Timeouts
//!
//! | phase | limit | on expiry |
//! | --- | --- | --- |
//! | TLS handshake | [`HANDSHAKE_TIMEOUT_MS`] | connection closed |
//! | request head (also an idle kept-alive connection waiting for its next request) | [`HEADER_TIMEOUT_MS`] | connection closed |
//! | request body | [`BODY_TIMEOUT_MS`] plus one second per [`BODY_MIN_BYTES_PER_SEC`] bytes received, never beyond [`BODY_MAX_TIME_MS`] | `408 request-timeout`, connection closed |
//!
//! The body rule is a deadline with a minimum rate (as Apache's
//! `mod_reqtimeout` `body=10-300,MinRate=1024`), not a per-read idle timeout:
//! an idle timeout alone lets a client hold a connection for ever by
//! trickling one byte just inside it. Under this rule a client must keep
//! an average of [`BODY_MIN_BYTES_PER_SEC`] after the first
//! [`BODY_TIMEOUT_MS`], and no body may take longer than [`BODY_MAX_TIME_MS`]
//! (at the default 16 MiB body limit that is ≈ 56 KiB/s; batches from the
//! host are far smaller). Timeouts of connections that never completed a
//! request are counted `slow-client`; an idle kept-alive connection closed
//! after it served requests is not.
//!
//! # Connection caps
//!
//! At most [`MAX_CONNECTIONS`] connections at once, and at most
//! [`MAX_CONNECTIONS_PER_ADDRESS`] from one source (an IPv4 address, or an
//! IPv6 /64, which one subscriber usually holds whole). A connection beyond
//! either cap is accepted and closed at once (counted `connection-cap` or
//! `address-cap`), so the listen backlog never fills with clients that wait
//! for ever. Keep [`MAX_CONNECTIONS`] below the process's descriptor limit
//! (`ulimit -n`), with room for the database and the log.
//!
//! Behind NAT, a whole site shares one address: the per-address cap must
//! cover its devices (each holds one connection, two at most while a
//! heartbeat and a batch overlap). Behind a load balancer or reverse proxy
//! that does not preserve source addresses, every connection comes from the
//! balancer's few addresses: then set the per-address cap to the global cap
//! (`--max-connections-per-address` = `--max-connections`) and enforce
//! per-client limits and timeouts at the balancer; the enrolment guess
//! lock-out below then also applies to the balancer's address, i.e. to
//! everybody behind it. The server does not read `X-Forwarded-For` or the
//! PROXY protocol (a client could forge the former).
//!
//! # Enrolment guesses
//!
//! After [`ENROLL_WRONG_TOKENS_BEFORE_LOCKOUT`] wrong tokens from one source,
//! every enrolment from it is refused with `429 rate-limited` and
//! `Retry-After` for [`ENROLL_LOCKOUT_MS`], doubling with each further wrong
//! token up to [`ENROLL_LOCKOUT_MAX_MS`] (counted
//! `enrollment-rate-limited`; the token is not even looked at while locked
//! out). A right token clears the source's record; a record without a wrong
//! token for [`ENROLL_FORGET_MS`] is forgotten. At most
//! [`MAX_TRACKED_SOURCES`] sources are remembered; beyond that, new sources
//! share one record (fail closed: a distributed guesser then locks out new
//! sources together, never gets more guesses). A guesser gets at most one
//! guess per connection in flight past the limit, so at most
//! [`MAX_CONNECTIONS_PER_ADDRESS`] extra.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::store::Store;

/// Most connections open at once.
pub const MAX_CONNECTIONS: usize = 512;
/// Most connections open at once from one source address (IPv4 address or
/// IPv6 /64).
pub const MAX_CONNECTIONS_PER_ADDRESS: usize = 64;
/// Time a client has to finish the TLS handshake.
pub const HANDSHAKE_TIMEOUT_MS: u64 = 10_000;
/// Time a client has to send a request head, from the connection's start or
/// the end of its previous response.
pub const HEADER_TIMEOUT_MS: u64 = 30_000;
/// Time a client has to send a request body before any rate credit.
pub const BODY_TIMEOUT_MS: u64 = 10_000;
/// Every this many body bytes received extend the body deadline by a second.
pub const BODY_MIN_BYTES_PER_SEC: u64 = 1024;
/// Longest any request body may take.
pub const BODY_MAX_TIME_MS: u64 = 300_000;
/// Wrong enrolment tokens from one source before it is locked out.
pub const ENROLL_WRONG_TOKENS_BEFORE_LOCKOUT: u32 = 5;
/// First lock-out; doubles with every further wrong token.
pub const ENROLL_LOCKOUT_MS: u64 = 60_000;
/// Longest lock-out.
pub const ENROLL_LOCKOUT_MAX_MS: u64 = 3_600_000;
/// A source without a wrong token for this long starts afresh.
pub const ENROLL_FORGET_MS: u64 = 86_400_000;
/// Most sources whose wrong tokens are remembered.
pub const MAX_TRACKED_SOURCES: usize = 100_000;
/// How often the connection-level refusal counters are written to the
/// store (they are counted in memory so that a flood costs no disk writes).
pub const COUNTER_FLUSH_MS: u64 = 1_000;

/// Connection caps and slow-client timeouts (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Most connections at once ([`MAX_CONNECTIONS`]).
    pub max_connections: usize,
    /// Most connections at once from one source
    /// ([`MAX_CONNECTIONS_PER_ADDRESS`]); set it to `max_connections` behind
    /// a balancer that hides client addresses.
    pub max_connections_per_address: usize,
    /// TLS handshake ([`HANDSHAKE_TIMEOUT_MS`]).
    pub handshake_timeout: Duration,
    /// Request head, and idle time between requests ([`HEADER_TIMEOUT_MS`]).
    pub header_timeout: Duration,
    /// Body time before rate credit ([`BODY_TIMEOUT_MS`]).
    pub body_timeout: Duration,
    /// Body rate that earns a second per this many bytes
    /// ([`BODY_MIN_BYTES_PER_SEC`]).
    pub body_min_bytes_per_sec: u64,
    /// Longest body ([`BODY_MAX_TIME_MS`]).
    pub body_max_time: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_connections: MAX_CONNECTIONS,
            max_connections_per_address: MAX_CONNECTIONS_PER_ADDRESS,
            handshake_timeout: Duration::from_millis(HANDSHAKE_TIMEOUT_MS),
            header_timeout: Duration::from_millis(HEADER_TIMEOUT_MS),
            body_timeout: Duration::from_millis(BODY_TIMEOUT_MS),
            body_min_bytes_per_sec: BODY_MIN_BYTES_PER_SEC,
            body_max_time: Duration::from_millis(BODY_MAX_TIME_MS),
        }
    }
}

impl ConnectionLimits {
    /// Check the limits make sense; the error names the limit.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_connections == 0 {
            return Err("max-connections must be at least 1".into());
        }
        if self.max_connections_per_address == 0 {
            return Err("max-connections-per-address must be at least 1".into());
        }
        if self.body_min_bytes_per_sec == 0 {
            return Err("body-min-bytes-per-sec must be at least 1".into());
        }
        for (name, d) in [
            ("handshake-timeout", self.handshake_timeout),
            ("header-timeout", self.header_timeout),
            ("body-timeout", self.body_timeout),
            ("body-max-time", self.body_max_time),
        ] {
            if d.is_zero() {
                return Err(format!("{name} must be more than zero"));
            }
        }
        Ok(())
    }

    /// When a body that started at `start` and has delivered `received`
    /// bytes so far must be complete.
    pub(crate) fn body_deadline(&self, start: Instant, received: usize) -> Instant {
        let credit = Duration::from_secs_f64(received as f64 / self.body_min_bytes_per_sec as f64);
        start + (self.body_timeout + credit).min(self.body_max_time)
    }
}

/// The enrolment guess lock-out (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrollGuessLimit {
    /// Wrong tokens before the first lock-out
    /// ([`ENROLL_WRONG_TOKENS_BEFORE_LOCKOUT`]).
    pub wrong_before_lockout: u32,
    /// First lock-out ([`ENROLL_LOCKOUT_MS`]).
    pub lockout: Duration,
    /// Longest lock-out ([`ENROLL_LOCKOUT_MAX_MS`]).
    pub max_lockout: Duration,
    /// Forget a source after this long without a wrong token
    /// ([`ENROLL_FORGET_MS`]).
    pub forget_after: Duration,
}

impl Default for EnrollGuessLimit {
    fn default() -> Self {
        EnrollGuessLimit {
            wrong_before_lockout: ENROLL_WRONG_TOKENS_BEFORE_LOCKOUT,
            lockout: Duration::from_millis(ENROLL_LOCKOUT_MS),
            max_lockout: Duration::from_millis(ENROLL_LOCKOUT_MAX_MS),
            forget_after: Duration::from_millis(ENROLL_FORGET_MS),
        }
    }
}

/// Whom a limit counts against: an IPv4 address (an IPv4-mapped IPv6
/// address counts as its IPv4 address), an IPv6 /64, or — once
/// [`MAX_TRACKED_SOURCES`] are remembered — everybody new.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Source {
    V4([u8; 4]),
    V6Net([u8; 8]),
    Overflow,
}

impl Source {
    pub(crate) fn of(ip: IpAddr) -> Source {
        match ip {
            IpAddr::V4(a) => Source::V4(a.octets()),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(v4) => Source::V4(v4.octets()),
                None => {
                    let mut net = [0u8; 8];
                    net.copy_from_slice(&a.octets()[..8]);
                    Source::V6Net(net)
                }
            },
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The data stays consistent under every panic point (plain counters).
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Why a connection was closed at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConnRefusal {
    /// [`ConnectionLimits::max_connections`] reached.
    Global,
    /// [`ConnectionLimits::max_connections_per_address`] reached for its source.
    PerAddress,
}

#[derive(Default)]
struct Open {
    total: usize,
    per_source: HashMap<Source, usize>,
}

/// Open connections, in total and per source.
pub(crate) struct ConnTracker {
    open: Mutex<Open>,
    max_total: usize,
    max_per_source: usize,
}

/// One admitted connection; dropping it frees its place.
pub(crate) struct ConnSlot {
    tracker: Arc<ConnTracker>,
    source: Source,
}

impl ConnTracker {
    pub(crate) fn new(limits: &ConnectionLimits) -> Arc<ConnTracker> {
        Arc::new(ConnTracker {
            open: Mutex::new(Open::default()),
            max_total: limits.max_connections,
            max_per_source: limits.max_connections_per_address,
        })
    }

    /// Admit a connection from `ip`, or say which cap it hit.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<ConnSlot, ConnRefusal> {
        let source = Source::of(ip);
        let mut open = lock(&self.open);
        if open.total >= self.max_total {
            return Err(ConnRefusal::Global);
        }
        let n = open.per_source.entry(source).or_insert(0);
        if *n >= self.max_per_source {
            return Err(ConnRefusal::PerAddress);
        }
        *n += 1;
        open.total += 1;
        Ok(ConnSlot {
            tracker: Arc::clone(self),
            source,
        })
    }

    /// Connections open now.
    pub(crate) fn open(&self) -> usize {
        lock(&self.open).total
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        let mut open = lock(&self.tracker.open);
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.per_source.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                open.per_source.remove(&self.source);
            }
        }
    }
}

struct Guesses {
    wrong: u32,
    last_wrong: Instant,
    locked_until: Option<Instant>,
}

struct GuessTable {
    by_source: HashMap<Source, Guesses>,
    last_prune: Option<Instant>,
}

/// Wrong enrolment tokens per source, and their lock-outs.
pub(crate) struct GuessLimiter {
    limit: EnrollGuessLimit,
    max_sources: usize,
    table: Mutex<GuessTable>,
}

impl GuessLimiter {
    pub(crate) fn new(limit: EnrollGuessLimit, max_sources: usize) -> GuessLimiter {
        GuessLimiter {
            limit,
            max_sources,
            table: Mutex::new(GuessTable {
                by_source: HashMap::new(),
                last_prune: None,
            }),
        }
    }

    /// `Err(retry_after)` while `ip` is locked out at `now`.
    pub(crate) fn check(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let t = lock(&self.table);
        let key = Self::key(&t, Source::of(ip));
        match t.by_source.get(&key).and_then(|g| g.locked_until) {
            Some(until) if until > now => Err(until - now),
            _ => Ok(()),
        }
    }

    /// Note a wrong token from `ip` at `now`; returns the lock-out it
    /// started, if any.
    pub(crate) fn wrong(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let mut t = lock(&self.table);
        let mut key = Self::key(&t, Source::of(ip));
        if !t.by_source.contains_key(&key) && t.by_source.len() >= self.max_sources {
            self.prune(&mut t, now);
            if t.by_source.len() >= self.max_sources {
                key = Source::Overflow;
            }
        }
        let g = t.by_source.entry(key).or_insert(Guesses {
            wrong: 0,
            last_wrong: now,
            locked_until: None,
        });
        if now.saturating_duration_since(g.last_wrong) >= self.limit.forget_after {
            g.wrong = 0;
        }
        g.wrong = g.wrong.saturating_add(1);
        g.last_wrong = now;
        if g.wrong < self.limit.wrong_before_lockout.max(1) {
            return None;
        }
        let doublings = (g.wrong - self.limit.wrong_before_lockout.max(1)).min(31);
        let period = self
            .limit
            .lockout
            .saturating_mul(1u32 << doublings)
            .min(self.limit.max_lockout);
        g.locked_until = Some(now + period);
        Some(period)
    }

    /// A right token from `ip`: forget its wrong ones.
    pub(crate) fn right(&self, ip: IpAddr) {
        let mut t = lock(&self.table);
        t.by_source.remove(&Source::of(ip));
    }

    /// Sources remembered now.
    #[cfg(test)]
    fn tracked(&self) -> usize {
        lock(&self.table).by_source.len()
    }

    fn key(t: &GuessTable, s: Source) -> Source {
        // A source not remembered while the table holds the overflow record
        // is judged by it (it may be one of the sources that overflowed).
        if !t.by_source.contains_key(&s) && t.by_source.contains_key(&Source::Overflow) {
            Source::Overflow
        } else {
            s
        }
    }

    /// Drop records that are neither locked nor recent. At most once a
    /// second, so a full table costs a scan per second, not per request.
    fn prune(&self, t: &mut GuessTable, now: Instant) {
        if t.last_prune
            .is_some_and(|p| now.saturating_duration_since(p) < Duration::from_secs(1))
        {
            return;
        }
        t.last_prune = Some(now);
        let forget = self.limit.forget_after;
        t.by_source.retain(|_, g| {
            g.locked_until.is_some_and(|u| u > now)
                || now.saturating_duration_since(g.last_wrong) < forget
        });
    }
}

/// Refusals counted in memory and written to the store every
/// [`COUNTER_FLUSH_MS`] (a flood of refused connections costs no disk
/// write each).
#[derive(Default)]
pub(crate) struct RefusalCounters {
    slow_client: AtomicU64,
    connection_cap: AtomicU64,
    address_cap: AtomicU64,
    enrollment_rate_limited: AtomicU64,
    rate_limited: AtomicU64,
    source_blocked: AtomicU64,
    /// Held while flushing or reading, so that a count is never seen twice
    /// or missed between the store and memory.
    flush: Mutex<()>,
}

/// A counter kept in memory by [`RefusalCounters`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// A handshake, request head or body timed out (`slow-client`).
    SlowClient,
    /// Over the global connection cap (`connection-cap`).
    ConnectionCap,
    /// Over the per-address connection cap (`address-cap`).
    AddressCap,
    /// Enrolment while locked out for wrong tokens (`enrollment-rate-limited`).
    EnrollmentRateLimited,
    /// A source or device over its request rate (`rate-limited`,
    /// [`crate::defence`]).
    RateLimited,
    /// A request from a blocked source (`source-blocked`).
    SourceBlocked,
}

impl RefusalCounters {
    fn cells(&self) -> [(&'static str, &AtomicU64); 6] {
        [
            ("slow-client", &self.slow_client),
            ("connection-cap", &self.connection_cap),
            ("address-cap", &self.address_cap),
            ("enrollment-rate-limited", &self.enrollment_rate_limited),
            ("rate-limited", &self.rate_limited),
            ("source-blocked", &self.source_blocked),
        ]
    }

    pub(crate) fn count(&self, r: Refusal) {
        let cell = match r {
            Refusal::SlowClient => &self.slow_client,
            Refusal::ConnectionCap => &self.connection_cap,
            Refusal::AddressCap => &self.address_cap,
            Refusal::EnrollmentRateLimited => &self.enrollment_rate_limited,
            Refusal::RateLimited => &self.rate_limited,
            Refusal::SourceBlocked => &self.source_blocked,
        };
        cell.fetch_add(1, Ordering::Relaxed);
    }

    /// Move the counts into the store (blocking: SQLite). On failure they
    /// stay in memory for the next flush.
    pub(crate) fn flush(&self, store: &Store) -> anyhow::Result<()> {
        let _g = lock(&self.flush);
        let taken: Vec<(&'static str, u64)> = self
            .cells()
            .iter()
            .map(|(name, cell)| (*name, cell.swap(0, Ordering::Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect();
        if taken.is_empty() {
            return Ok(());
        }
        if let Err(e) = store.add_counts(&taken) {
            for (name, n) in taken {
                if let Some((_, cell)) = self.cells().into_iter().find(|(c, _)| *c == name) {
                    cell.fetch_add(n, Ordering::Relaxed);
                }
            }
            return Err(e);
        }
        Ok(())
    }

    /// The store's counters plus what is not flushed yet (blocking).
    pub(crate) fn snapshot(
        &self,
        store: &Store,
    ) -> anyhow::Result<std::collections::BTreeMap<String, u64>> {
        let _g = lock(&self.flush);
        let mut m = store.counters()?;
        for (name, cell) in self.cells() {
            *m.entry(name.to_owned()).or_default() += cell.load(Ordering::Relaxed);
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));

    fn limit() -> EnrollGuessLimit {
        EnrollGuessLimit {
            wrong_before_lockout: 3,
            lockout: Duration::from_secs(10),
            max_lockout: Duration::from_secs(35),
            forget_after: Duration::from_secs(1000),
        }
    }

    #[test]
    fn lockout_starts_after_n_wrong_tokens_and_doubles_up_to_the_cap() {
        let l = GuessLimiter::new(limit(), 100);
        let t0 = Instant::now();
        let s = Duration::from_secs;
        assert_eq!(l.wrong(A, t0), None);
        assert_eq!(l.wrong(A, t0), None);
        assert_eq!(l.check(A, t0), Ok(()));
        // The third wrong token locks the source out for 10 s ...
        assert_eq!(l.wrong(A, t0), Some(s(10)));
        assert_eq!(l.check(A, t0 + s(4)), Err(s(6)));
        // ... others are not affected ...
        assert_eq!(l.check(B, t0), Ok(()));
        // ... then each further wrong token doubles it, up to 35 s.
        assert_eq!(l.check(A, t0 + s(10)), Ok(()));
        assert_eq!(l.wrong(A, t0 + s(10)), Some(s(20)));
        assert_eq!(l.check(A, t0 + s(29)), Err(s(1)));
        assert_eq!(l.wrong(A, t0 + s(30)), Some(s(35)));
        assert_eq!(l.wrong(A, t0 + s(70)), Some(s(35)));
        // A right token clears the record.
        l.right(A);
        assert_eq!(l.check(A, t0 + s(71)), Ok(()));
        assert_eq!(l.wrong(A, t0 + s(71)), None);
    }

    #[test]
    fn wrong_tokens_are_forgotten_after_the_quiet_period() {
        let l = GuessLimiter::new(limit(), 100);
        let t0 = Instant::now();
        l.wrong(A, t0);
        l.wrong(A, t0);
        assert_eq!(l.wrong(A, t0 + Duration::from_secs(1000)), None);
    }

    #[test]
    fn a_full_table_puts_new_sources_under_one_shared_record() {
        let l = GuessLimiter::new(limit(), 2);
        let t0 = Instant::now();
        l.wrong(A, t0);
        l.wrong(B, t0);
        let c = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 3));
        let d = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 4));
        // Nothing prunable: C and D share the overflow record and lock it
        // together after three wrong tokens between them.
        assert_eq!(l.wrong(c, t0), None);
        assert_eq!(l.wrong(d, t0), None);
        assert_eq!(l.wrong(c, t0), Some(Duration::from_secs(10)));
        assert!(l.check(d, t0).is_err());
        assert!(l.check(A, t0).is_ok());
        assert_eq!(l.tracked(), 3);
    }

    #[test]
    fn ipv6_sources_are_per_64_and_mapped_ipv4_is_ipv4() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(Source::of(a), Source::of(b));
        assert_ne!(Source::of(a), Source::of(c));
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(Source::of(mapped), Source::of(A));
    }

    #[test]
    fn connection_caps_count_per_source_and_free_on_drop() {
        let limits = ConnectionLimits {
            max_connections: 3,
            max_connections_per_address: 2,
            ..ConnectionLimits::default()
        };
        let t = ConnTracker::new(&limits);
        let a1 = t.admit(A).unwrap();
        let _a2 = t.admit(A).unwrap();
        assert!(matches!(t.admit(A), Err(ConnRefusal::PerAddress)));
        let _b1 = t.admit(B).unwrap();
        assert!(matches!(t.admit(B), Err(ConnRefusal::Global)));
        drop(a1);
        assert_eq!(t.open(), 2);
        let _b2 = t.admit(B).unwrap();
        assert!(matches!(t.admit(A), Err(ConnRefusal::Global)));
    }

    #[test]
    fn body_deadline_grows_with_bytes_and_stops_at_the_maximum() {
        let limits = ConnectionLimits {
            body_timeout: Duration::from_secs(10),
            body_min_bytes_per_sec: 1000,
            body_max_time: Duration::from_secs(60),
            ..ConnectionLimits::default()
        };
        let t0 = Instant::now();
        assert_eq!(limits.body_deadline(t0, 0), t0 + Duration::from_secs(10));
        assert_eq!(limits.body_deadline(t0, 5000), t0 + Duration::from_secs(15));
        assert_eq!(
            limits.body_deadline(t0, 10_000_000),
            t0 + Duration::from_secs(60)
        );
    }
}
