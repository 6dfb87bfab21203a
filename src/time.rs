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

/// The earlier of two optional deadlines (`None`: no deadline).
pub(crate) fn earlier(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests;
