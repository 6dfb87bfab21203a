//! Exponential backoff with jitter, and the tiny random source behind it.

use std::cell::Cell;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// Exponential backoff: `initial * 2^(attempt-1)`, capped at `max`, plus a
/// random jitter of up to half that nominal delay. Jitter only ever adds: a
/// retry never comes sooner than its nominal delay (CCS asks for "exponential
/// backoff with an initial delay of 1 second").
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

    /// The jittered delay: uniformly in `[nominal, nominal * 1.5]`.
    pub fn delay(&self, attempt: u32) -> Duration {
        self.delay_with(attempt, random_u64())
    }

    /// The delay with the jitter drawn from `random` (any value): `nominal`
    /// plus `random` mod (`nominal / 2` + 1 ns). For deterministic schedules.
    pub fn delay_with(&self, attempt: u32, random: u64) -> Duration {
        let n = self.nominal(attempt);
        let span = u64::try_from((n / 2).as_nanos()).unwrap_or(u64::MAX);
        let extra = match span.checked_add(1) {
            Some(m) => random % m,
            None => random,
        };
        n.saturating_add(Duration::from_nanos(extra))
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
mod tests;
