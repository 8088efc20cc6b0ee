//! Lock-out against guessing: after the n-th consecutive failed password a
//! scope (one session, and the whole device) is locked for
//! [`lock_after`]`(n)`; every attempt during a lock is refused unevaluated,
//! the right password included. The counters are kept in SQLite, so a
//! restart does not reset them.

use std::time::Duration;

/// Lock after the first failure.
pub const LOCK_BASE_MS: u64 = 1_000;
/// Longest single lock (4 hours).
pub const LOCK_CAP_MS: u64 = 4 * 60 * 60 * 1_000;

/// The lock that follows the `failures`-th consecutive failure: 1 s, 2 s,
/// 4 s ... doubling up to [`LOCK_CAP_MS`]. None before any failure.
pub fn lock_after(failures: u32) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    let shift = (failures - 1).min(40);
    Duration::from_millis(LOCK_BASE_MS.saturating_mul(1u64 << shift).min(LOCK_CAP_MS))
}

/// The least time `guesses` evaluated guesses take: the locks after the
/// first `guesses - 1` failures.
pub fn least_time_for(guesses: u32) -> Duration {
    (1..guesses).map(lock_after).sum()
}

/// Consecutive failures of one scope and the end of its lock.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    /// Consecutive failures.
    pub failures: u32,
    /// Locked until (Unix milliseconds); 0 = not locked.
    pub locked_until_ms: i64,
}

impl Counter {
    /// Record a failure at `now_ms`.
    pub fn fail(&mut self, now_ms: i64) {
        self.failures = self.failures.saturating_add(1);
        self.locked_until_ms = now_ms + lock_after(self.failures).as_millis() as i64;
    }

    /// The end of the lock, if locked at `now_ms`.
    pub fn locked(&self, now_ms: i64) -> Option<i64> {
        (now_ms < self.locked_until_ms).then_some(self.locked_until_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_curve_doubles_then_caps() {
        assert_eq!(lock_after(0), Duration::ZERO);
        assert_eq!(lock_after(1), Duration::from_secs(1));
        assert_eq!(lock_after(2), Duration::from_secs(2));
        assert_eq!(lock_after(10), Duration::from_secs(512));
        assert_eq!(lock_after(14), Duration::from_secs(8_192));
        assert_eq!(lock_after(15), Duration::from_secs(4 * 3600));
        assert_eq!(lock_after(u32::MAX), Duration::from_secs(4 * 3600));
    }

    #[test]
    fn twenty_four_wrong_guesses_take_at_least_seventeen_hours() {
        let t = least_time_for(24);
        assert!(t >= Duration::from_secs(17 * 3600), "{t:?}");
        assert_eq!(t, Duration::from_secs(16_383 + 9 * 14_400));
    }

    /// 10 000 wrong guesses from 8 connections, one every 10 ms in turn,
    /// against one device counter with an injected clock: only those made
    /// while no lock holds are evaluated, and the curve says how many.
    #[test]
    fn ten_thousand_guesses_from_eight_connections() {
        let mut device = Counter::default();
        let (mut evaluated, mut refused) = (0u32, 0u32);
        let mut per_connection = [0u32; 8];
        let start = 1_700_000_000_000i64;
        let mut now = start;
        for i in 0..10_000u32 {
            now = start + i64::from(i) * 10;
            if device.locked(now).is_some() {
                refused += 1;
                continue;
            }
            evaluated += 1;
            per_connection[(i % 8) as usize] += 1;
            device.fail(now);
        }
        let elapsed = Duration::from_millis((now - start) as u64);
        // 100 s of guessing: the 7th guess waits 63 s, the 8th would wait 127 s.
        assert_eq!(elapsed, Duration::from_millis(99_990));
        assert!(least_time_for(evaluated) <= elapsed);
        assert!(least_time_for(evaluated + 1) > elapsed);
        assert_eq!(evaluated, 7);
        assert_eq!(refused, 9_993);
        assert_eq!(per_connection.iter().sum::<u32>(), 7);
        // A patient attacker making each guess the moment a lock ends:
        // 10 000 guesses take more than four years.
        let mut patient = Counter::default();
        let mut t = start;
        for _ in 0..10_000 {
            assert!(patient.locked(t).is_none());
            patient.fail(t);
            t = patient.locked_until_ms;
        }
        let total = Duration::from_millis((t - start) as u64);
        assert_eq!(total, least_time_for(10_001));
        assert!(total > Duration::from_secs(4 * 365 * 86_400), "{total:?}");
    }
}
