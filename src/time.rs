//! Deadlines that never overflow: any `Duration` a user passes is fine.

use std::time::{Duration, Instant};

/// `now + d`, saturating about 30 years ahead instead of overflowing
/// (`Instant + Duration` panics on overflow).
pub(crate) fn later(now: Instant, d: Duration) -> Instant {
    if let Some(t) = now.checked_add(d) {
        return t;
    }
    let mut step = Duration::from_secs(1 << 30);
    loop {
        if let Some(t) = now.checked_add(step) {
            return t;
        }
        step /= 2;
    }
}

#[cfg(test)]
mod tests;
