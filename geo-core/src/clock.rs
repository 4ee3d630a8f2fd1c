//! Injectable time and randomness.
//!
//! Every decision that depends on "now" or on a random draw (backoff jitter, temporary file
//! names) takes them from an [`Env`], so tests can pin both: a [`ManualClock`] that only moves
//! when told to, and a [`FixedRandom`] or [`SeededRandom`] source.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, TimeDelta, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// A source of the current time.
pub trait Clock: Send + Sync {
    /// The current time in UTC.
    fn now(&self) -> DateTime<Utc>;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock for tests: it shows a fixed time until [`set`](ManualClock::set) or
/// [`advance`](ManualClock::advance) moves it. Clones share the same time.
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<Mutex<DateTime<Utc>>>,
}

impl ManualClock {
    /// A clock showing `start`.
    pub fn new(start: DateTime<Utc>) -> Self {
        ManualClock {
            now: Arc::new(Mutex::new(start)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, DateTime<Utc>> {
        // A poisoned lock still holds a valid time; a panicking test elsewhere must not
        // cascade into this one.
        self.now.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets the time to `t`.
    pub fn set(&self, t: DateTime<Utc>) {
        *self.lock() = t;
    }

    /// Moves the time forward by `by` (backwards if negative), saturating at the limits of
    /// `DateTime<Utc>`.
    pub fn advance(&self, by: TimeDelta) {
        let mut now = self.lock();
        *now = saturating_add(*now, by);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.lock()
    }
}

/// `t + d`, clamped to the range of `DateTime<Utc>` instead of overflowing.
pub fn saturating_add(t: DateTime<Utc>, d: TimeDelta) -> DateTime<Utc> {
    t.checked_add_signed(d).unwrap_or(if d < TimeDelta::zero() {
        DateTime::<Utc>::MIN_UTC
    } else {
        DateTime::<Utc>::MAX_UTC
    })
}

/// A source of uniformly distributed random integers.
pub trait RandomSource: Send + Sync {
    /// A number in `0..n`; `0` when `n` is `0`.
    fn below(&self, n: u32) -> u32;
}

/// Randomness from the thread-local generator of `rand` (the production default).
#[derive(Debug, Clone, Copy, Default)]
pub struct ThreadRandom;

impl RandomSource for ThreadRandom {
    fn below(&self, n: u32) -> u32 {
        if n == 0 {
            0
        } else {
            rand::rng().random_range(0..n)
        }
    }
}

/// A "random" source that always answers the same value, clamped to `n - 1`.
///
/// `FixedRandom(0)` gives the shortest backoff delays, `FixedRandom(u32::MAX)` the longest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FixedRandom(pub u32);

impl RandomSource for FixedRandom {
    fn below(&self, n: u32) -> u32 {
        self.0.min(n.saturating_sub(1))
    }
}

/// A reproducible pseudo-random source seeded with a `u64` (for property tests and
/// simulations).
pub struct SeededRandom {
    rng: Mutex<StdRng>,
}

impl SeededRandom {
    /// A generator seeded with `seed`; the same seed gives the same sequence.
    pub fn new(seed: u64) -> Self {
        SeededRandom {
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
        }
    }
}

impl fmt::Debug for SeededRandom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SeededRandom").finish_non_exhaustive()
    }
}

impl RandomSource for SeededRandom {
    fn below(&self, n: u32) -> u32 {
        if n == 0 {
            return 0;
        }
        self.rng
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .random_range(0..n)
    }
}

/// The clock and the random source, bundled. Cheap to clone (two `Arc`s).
#[derive(Clone)]
pub struct Env {
    /// Where "now" comes from.
    pub clock: Arc<dyn Clock>,
    /// Where random draws come from.
    pub rng: Arc<dyn RandomSource>,
}

impl Env {
    /// An environment from any clock and random source.
    pub fn new(clock: Arc<dyn Clock>, rng: Arc<dyn RandomSource>) -> Self {
        Env { clock, rng }
    }

    /// The production environment: [`SystemClock`] and [`ThreadRandom`].
    pub fn system() -> Self {
        Env::new(Arc::new(SystemClock), Arc::new(ThreadRandom))
    }

    /// A test environment: a [`ManualClock`] starting at `start` (returned too, so the test can
    /// move it) and a [`FixedRandom`] answering `random`.
    pub fn manual(start: DateTime<Utc>, random: u32) -> (Self, ManualClock) {
        let clock = ManualClock::new(start);
        (
            Env::new(Arc::new(clock.clone()), Arc::new(FixedRandom(random))),
            clock,
        )
    }

    /// The current time.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// A random number in `0..n` (`0` when `n` is `0`).
    pub fn below(&self, n: u32) -> u32 {
        self.rng.below(n)
    }

    /// When the `retry_count`-th retry after a failure at `now` is due
    /// ([`next_retry_time`](crate::backoff::next_retry_time) with this environment's randomness).
    pub fn retry_time(
        &self,
        now: DateTime<Utc>,
        retry_count: i16,
        cap: crate::backoff::BackoffCap,
    ) -> DateTime<Utc> {
        crate::backoff::next_retry_time(now, i64::from(retry_count), cap, self.rng.as_ref())
    }
}

impl Default for Env {
    fn default() -> Self {
        Env::system()
    }
}

impl fmt::Debug for Env {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Env")
            .field("now", &self.clock.now())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap()
    }

    #[test]
    fn manual_clock_moves_only_when_told_and_clones_share_time() {
        let clock = ManualClock::new(t0());
        let other = clock.clone();
        assert_eq!(clock.now(), t0());
        clock.advance(TimeDelta::seconds(90));
        assert_eq!(other.now(), t0() + TimeDelta::seconds(90));
        other.set(t0());
        assert_eq!(clock.now(), t0());
    }

    #[test]
    fn manual_clock_saturates() {
        let clock = ManualClock::new(t0());
        clock.advance(TimeDelta::MAX);
        assert_eq!(clock.now(), DateTime::<Utc>::MAX_UTC);
        clock.advance(TimeDelta::MIN);
        clock.advance(TimeDelta::MIN);
        assert_eq!(clock.now(), DateTime::<Utc>::MIN_UTC);
    }

    #[test]
    fn fixed_random_is_clamped() {
        assert_eq!(FixedRandom(5).below(30), 5);
        assert_eq!(FixedRandom(99).below(30), 29);
        assert_eq!(FixedRandom(99).below(0), 0);
    }

    #[test]
    fn random_sources_stay_below_n() {
        let seeded = SeededRandom::new(7);
        for n in [1u32, 2, 30, 1000] {
            for _ in 0..200 {
                assert!(seeded.below(n) < n);
                assert!(ThreadRandom.below(n) < n);
            }
        }
        assert_eq!(seeded.below(0), 0);
        assert_eq!(ThreadRandom.below(0), 0);
    }

    #[test]
    fn seeded_random_is_reproducible() {
        let a = SeededRandom::new(42);
        let b = SeededRandom::new(42);
        let xs: Vec<u32> = (0..20).map(|_| a.below(1000)).collect();
        let ys: Vec<u32> = (0..20).map(|_| b.below(1000)).collect();
        assert_eq!(xs, ys);
        // Not constant: a seeded generator that always answered the same would be a bug.
        assert!(xs.iter().any(|x| *x != xs[0]));
    }

    #[test]
    fn env_manual_uses_given_clock_and_random() {
        let (env, clock) = Env::manual(t0(), 3);
        assert_eq!(env.now(), t0());
        clock.advance(TimeDelta::minutes(1));
        assert_eq!(env.now(), t0() + TimeDelta::minutes(1));
        assert_eq!(env.below(30), 3);
        let cloned = env.clone();
        assert_eq!(cloned.now(), env.now());
    }
}
