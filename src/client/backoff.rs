//! Exponential backoff with jitter, and the tiny random source behind it.

use std::cell::Cell;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// Exponential backoff: `initial * 2^(attempt-1)`, capped at `max`, with
/// "equal jitter" (a random point in the upper half), so a retry never comes
/// sooner than half the nominal delay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Backoff {
    /// The delay before the first retry. Default 1 s.
    pub initial: Duration,
    /// The largest delay. Default 60 s.
    pub max: Duration,
}

impl Backoff {
    /// A backoff from `initial`, doubling, capped at `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff { initial, max }
    }

    /// The nominal (un-jittered) delay before retry number `attempt` (1-based).
    pub fn nominal(&self, attempt: u32) -> Duration {
        let shift = attempt.saturating_sub(1).min(30);
        self.initial
            .checked_mul(1u32 << shift)
            .unwrap_or(self.max)
            .min(self.max)
    }

    /// The jittered delay: uniformly in `[nominal/2, nominal]`.
    pub fn delay(&self, attempt: u32) -> Duration {
        let n = self.nominal(attempt);
        let half = n / 2;
        let span = (n - half).as_nanos() as u64;
        half + Duration::from_nanos(if span == 0 {
            0
        } else {
            random_u64() % (span + 1)
        })
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(Duration::from_secs(1), Duration::from_secs(60))
    }
}

thread_local! {
    static RNG: Cell<u64> = Cell::new({
        let mut h = RandomState::new().build_hasher();
        h.write_u64(std::process::id() as u64);
        h.finish() | 1
    });
}

/// xorshift64*: plenty for jitter, seeded per thread from std's random keys.
pub(crate) fn random_u64() -> u64 {
    RNG.with(|s| {
        let mut x = s.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        s.set(x);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_and_caps() {
        let b = Backoff::new(Duration::from_secs(1), Duration::from_secs(10));
        assert_eq!(b.nominal(1), Duration::from_secs(1));
        assert_eq!(b.nominal(2), Duration::from_secs(2));
        assert_eq!(b.nominal(4), Duration::from_secs(8));
        assert_eq!(b.nominal(5), Duration::from_secs(10));
        assert_eq!(b.nominal(500), Duration::from_secs(10));
    }

    #[test]
    fn jitter_stays_in_the_upper_half() {
        let b = Backoff::default();
        let mut seen_low = false;
        let mut seen_high = false;
        for _ in 0..2000 {
            let d = b.delay(3);
            assert!(
                d >= Duration::from_secs(2) && d <= Duration::from_secs(4),
                "{d:?}"
            );
            seen_low |= d < Duration::from_millis(2500);
            seen_high |= d > Duration::from_millis(3500);
        }
        assert!(seen_low && seen_high, "jitter should spread over the range");
    }
}
