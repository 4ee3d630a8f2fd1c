//! Retry backoff: GitLab's `Delay` module (Sidekiq's formula) with a cap.
//!
//! `delay(n) = n⁴ + 15 + rand(0..30)·(n+1)` seconds, where `n` is the retry count after the
//! failure was recorded. The next retry is
//! `min(now + delay(n), now + cap + delay(1))`: the wait grows with every failure until it
//! reaches the cap, and retries never stop.
//!
//! | n | delay(n) | | n | delay(n) |
//! |---|---|---|---|---|
//! | 0 | 15–44 s | | 4 | 271–416 s |
//! | 1 | 16–74 s | | 5 | 640–814 s |
//! | 2 | 31–118 s | | 6 | 1311–1514 s (≈ 22–25 min) |
//! | 3 | 96–212 s | | 7 | 2416–2648 s (≈ 40–44 min) |
//!
//! From n = 8 (4111 s minimum) the cap wins with the default cap of 1 h: the wait is then
//! `cap + delay(1)`, i.e. 1 h 0 min 16 s to 1 h 1 min 14 s. When the file is missing on the primary
//! the cap is 4 h, reached from n = 11. A negative count is treated as 0; very large counts
//! saturate instead of overflowing.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use crate::clock::{RandomSource, saturating_add};

/// The jitter range: `rand(0..30)`.
pub const JITTER_RANGE: u32 = 30;

/// The constant term of the delay, in seconds.
pub const BASE_DELAY_SECS: u64 = 15;

/// The default cap on the backoff: 1 hour.
pub const DEFAULT_CAP: Duration = Duration::from_secs(60 * 60);

/// The cap when the file is missing on the primary: 4 hours (it will not come back soon).
pub const MISSING_ON_PRIMARY_CAP: Duration = Duration::from_secs(4 * 60 * 60);

/// Which cap applies to a retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum BackoffCap {
    /// 1 hour ([`DEFAULT_CAP`]).
    #[default]
    Default,
    /// 4 hours ([`MISSING_ON_PRIMARY_CAP`]): the primary answered that the file is gone.
    MissingOnPrimary,
    /// A configured cap.
    Custom(Duration),
}

impl BackoffCap {
    /// [`MissingOnPrimary`](BackoffCap::MissingOnPrimary) when `missing_on_primary`, else
    /// [`Default`](BackoffCap::Default).
    pub fn for_missing_on_primary(missing_on_primary: bool) -> Self {
        if missing_on_primary {
            BackoffCap::MissingOnPrimary
        } else {
            BackoffCap::Default
        }
    }

    /// The cap as a duration.
    pub fn duration(self) -> Duration {
        match self {
            BackoffCap::Default => DEFAULT_CAP,
            BackoffCap::MissingOnPrimary => MISSING_ON_PRIMARY_CAP,
            BackoffCap::Custom(d) => d,
        }
    }
}

/// `delay(n)` in whole seconds for a given jitter draw `jitter` (expected in `0..30`; larger
/// values are clamped to 29). Saturates at `u64::MAX` instead of overflowing; a negative `n`
/// counts as 0.
pub fn delay_secs_with(n: i64, jitter: u32) -> u64 {
    let n = n.max(0) as u64;
    let jitter = u64::from(jitter.min(JITTER_RANGE - 1));
    n.saturating_pow(4)
        .saturating_add(BASE_DELAY_SECS)
        .saturating_add(jitter.saturating_mul(n.saturating_add(1)))
}

/// The smallest possible `delay(n)` in seconds (jitter 0).
pub fn min_delay_secs(n: i64) -> u64 {
    delay_secs_with(n, 0)
}

/// The largest possible `delay(n)` in seconds (jitter 29).
pub fn max_delay_secs(n: i64) -> u64 {
    delay_secs_with(n, JITTER_RANGE - 1)
}

/// `delay(n)` in seconds with a jitter drawn from `rng`.
pub fn delay_secs(n: i64, rng: &dyn RandomSource) -> u64 {
    delay_secs_with(n, rng.below(JITTER_RANGE))
}

/// Converts whole seconds to a `TimeDelta`, saturating at `TimeDelta::MAX`.
fn secs_to_delta(secs: u64) -> TimeDelta {
    i64::try_from(secs)
        .ok()
        .and_then(TimeDelta::try_seconds)
        .unwrap_or(TimeDelta::MAX)
}

/// Converts a `Duration` to a `TimeDelta`, saturating at `TimeDelta::MAX`.
fn duration_to_delta(d: Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)
}

/// How long to wait after the `retry_count`-th failure: `min(delay(n), cap + delay(1))`, drawing
/// one jitter for `delay(n)` and one for `delay(1)` as GitLab does.
pub fn retry_wait(retry_count: i64, cap: BackoffCap, rng: &dyn RandomSource) -> TimeDelta {
    let grown = secs_to_delta(delay_secs(retry_count, rng));
    let capped = duration_to_delta(cap.duration())
        .checked_add(&secs_to_delta(delay_secs(1, rng)))
        .unwrap_or(TimeDelta::MAX);
    grown.min(capped)
}

/// `next_retry_time(n, cap) = min(now + delay(n), now + cap + delay(1))`.
///
/// The result is always after `now` (the smallest delay is 15 s) and never later than
/// `now + cap + 74 s`; it saturates at the largest representable time.
pub fn next_retry_time(
    now: DateTime<Utc>,
    retry_count: i64,
    cap: BackoffCap,
    rng: &dyn RandomSource,
) -> DateTime<Utc> {
    saturating_add(now, retry_wait(retry_count, cap, rng))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{FixedRandom, SeededRandom};
    use chrono::TimeZone;
    use proptest::prelude::*;

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 5, 6, 7, 8, 9).unwrap()
    }

    #[test]
    fn documented_delay_ranges() {
        let table = [
            (0, 15, 44),
            (1, 16, 74),
            (2, 31, 118),
            (3, 96, 212),
            (4, 271, 416),
            (5, 640, 814),
            (6, 1311, 1514),
            (7, 2416, 2648),
            (8, 4111, 4372),
        ];
        for (n, lo, hi) in table {
            assert_eq!(min_delay_secs(n), lo, "min delay({n})");
            assert_eq!(max_delay_secs(n), hi, "max delay({n})");
            assert_eq!(delay_secs(n, &FixedRandom(0)), lo);
            assert_eq!(delay_secs(n, &FixedRandom(u32::MAX)), hi);
        }
    }

    #[test]
    fn exact_next_retry_time_for_small_counts() {
        for (n, lo, hi) in [(1, 16, 74), (2, 31, 118), (3, 96, 212)] {
            let min = next_retry_time(t0(), n, BackoffCap::Default, &FixedRandom(0));
            let max = next_retry_time(t0(), n, BackoffCap::Default, &FixedRandom(29));
            assert_eq!(min, t0() + TimeDelta::seconds(lo));
            assert_eq!(max, t0() + TimeDelta::seconds(hi));
        }
    }

    #[test]
    fn cap_applies_from_eight_and_from_twelve_when_missing() {
        let r = FixedRandom(0);
        // Default cap: 3600 + delay(1) = 3616 s with jitter 0.
        assert_eq!(
            next_retry_time(t0(), 7, BackoffCap::Default, &r),
            t0() + TimeDelta::seconds(2416)
        );
        assert_eq!(
            next_retry_time(t0(), 8, BackoffCap::Default, &r),
            t0() + TimeDelta::seconds(3616)
        );
        // Missing on primary: 14400 + 16 s; 11⁴ + 15 = 14656 > 14416, 10⁴ + 15 = 10015 < 14416.
        assert_eq!(
            next_retry_time(t0(), 10, BackoffCap::MissingOnPrimary, &r),
            t0() + TimeDelta::seconds(10015)
        );
        assert_eq!(
            next_retry_time(t0(), 11, BackoffCap::MissingOnPrimary, &r),
            t0() + TimeDelta::seconds(14416)
        );
        assert_eq!(
            next_retry_time(t0(), 8, BackoffCap::Custom(Duration::from_secs(60)), &r),
            t0() + TimeDelta::seconds(76)
        );
    }

    #[test]
    fn extremes_saturate() {
        let r = FixedRandom(29);
        assert_eq!(delay_secs_with(i64::MAX, 29), u64::MAX);
        assert_eq!(min_delay_secs(-5), 15);
        let t = next_retry_time(t0(), i64::MAX, BackoffCap::Default, &r);
        assert_eq!(t, t0() + TimeDelta::seconds(3600 + 74));
        let huge = BackoffCap::Custom(Duration::MAX);
        // No cap to speak of: delay(100) = 10⁸ + 15 + 29·101 s (about 3.2 years).
        assert_eq!(
            next_retry_time(t0(), 100, huge, &r),
            t0() + TimeDelta::seconds(100_002_944)
        );
        // delay(i16::MAX) is beyond TimeDelta's range: saturates.
        assert_eq!(
            next_retry_time(t0(), i64::from(i16::MAX), huge, &r),
            DateTime::<Utc>::MAX_UTC
        );
        assert_eq!(
            next_retry_time(DateTime::<Utc>::MAX_UTC, 3, BackoffCap::Default, &r),
            DateTime::<Utc>::MAX_UTC
        );
        assert_eq!(
            next_retry_time(t0(), i64::MAX, huge, &r),
            DateTime::<Utc>::MAX_UTC
        );
    }

    #[test]
    fn missing_on_primary_cap_selection() {
        assert_eq!(
            BackoffCap::for_missing_on_primary(true).duration(),
            Duration::from_secs(14400)
        );
        assert_eq!(
            BackoffCap::for_missing_on_primary(false).duration(),
            Duration::from_secs(3600)
        );
    }

    proptest! {
        #[test]
        fn retry_time_is_within_bounds(n in any::<i16>(), seed in any::<u64>(), cap_secs in 0u64..1_000_000) {
            let rng = SeededRandom::new(seed);
            for cap in [BackoffCap::Default, BackoffCap::MissingOnPrimary, BackoffCap::Custom(Duration::from_secs(cap_secs))] {
                let t = next_retry_time(t0(), i64::from(n), cap, &rng);
                let upper = t0() + TimeDelta::seconds(cap.duration().as_secs() as i64 + 74);
                prop_assert!(t > t0());
                prop_assert!(t <= upper, "n={n} cap={cap:?} t={t} upper={upper}");
                let lower = t0() + TimeDelta::seconds(min_delay_secs(i64::from(n)).min(cap.duration().as_secs() + 16) as i64);
                prop_assert!(t >= lower);
            }
        }

        #[test]
        fn bounds_are_monotone_in_n(n in 0i64..i64::from(i16::MAX)) {
            prop_assert!(min_delay_secs(n) <= min_delay_secs(n + 1));
            prop_assert!(max_delay_secs(n) <= max_delay_secs(n + 1));
            prop_assert!(min_delay_secs(n) <= max_delay_secs(n));
            let lo = |k| next_retry_time(t0(), k, BackoffCap::Default, &FixedRandom(0));
            let hi = |k| next_retry_time(t0(), k, BackoffCap::Default, &FixedRandom(29));
            prop_assert!(lo(n) <= lo(n + 1));
            prop_assert!(hi(n) <= hi(n + 1));
        }

        #[test]
        fn jitter_stays_in_documented_range(n in 0i64..100, seed in any::<u64>()) {
            let d = delay_secs(n, &SeededRandom::new(seed));
            prop_assert!(d >= min_delay_secs(n) && d <= max_delay_secs(n));
        }
    }
}
