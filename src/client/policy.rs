//! The delivery policy: for each NACK, stanza error, loss or failed connect,
//! what happens to the message or the slot. Pure functions of their inputs;
//! the engine applies them.

use std::time::Duration;

use super::{Backoff, ClientConfig};
use crate::error::Error;
use crate::event::{NackCode, RetryClass};

/// The numbers the policy needs, taken from [`ClientConfig`].
#[derive(Debug, Clone)]
pub(crate) struct Policy {
    pub(crate) retry_backoff: Backoff,
    pub(crate) max_retries: u32,
    pub(crate) reconnect_backoff: Backoff,
    pub(crate) rate_limited_retry: Option<Duration>,
    pub(crate) stable_after: Duration,
    pub(crate) max_losses: u32,
}

impl Policy {
    pub(crate) fn new(cfg: &ClientConfig) -> Self {
        Policy {
            retry_backoff: cfg.retry_backoff,
            max_retries: cfg.max_retries,
            reconnect_backoff: cfg.reconnect_backoff,
            rate_limited_retry: cfg.rate_limited_retry,
            stable_after: cfg.stable_after,
            max_losses: cfg.max_losses,
        }
    }
}

/// What happens to a NACKed message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NackDecision {
    /// Final: the code must not be retried (or a rate limit, by default).
    Reject,
    /// Retried `max_retries` times already: hand it back.
    GiveUp,
    /// Send it again after this delay (its retry count goes up by one).
    RetryAfter(Duration),
    /// Send it again at once on another connection, ahead of newer messages,
    /// in acceptance order (CONNECTION_DRAINING).
    Resend,
}

/// `retries` is how many times the message was retried before this NACK;
/// `jitter` a random number for the backoff.
pub(crate) fn on_nack(p: &Policy, code: &NackCode, retries: u32, jitter: u64) -> NackDecision {
    let class = code.retry_class();
    let delay = match class {
        RetryClass::Final => return NackDecision::Reject,
        RetryClass::RateLimited => match p.rate_limited_retry {
            None => return NackDecision::Reject,
            Some(d) => d,
        },
        RetryClass::NewConnection => Duration::ZERO,
        // `Backoff` and any class added later: retry with backoff.
        _ => p.retry_backoff.delay_with(retries + 1, jitter),
    };
    if retries >= p.max_retries {
        return NackDecision::GiveUp;
    }
    if class == RetryClass::NewConnection {
        NackDecision::Resend
    } else {
        NackDecision::RetryAfter(delay)
    }
}

/// What happens to a message that was in flight on a connection that was lost,
/// given how many losses it has now seen (this one included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LossDecision {
    /// Resend it on the next connection, in order, ahead of newer messages.
    Resend,
    /// It was in flight on `max_losses` lost connections: most likely it is
    /// what kills them. Hand it back.
    GiveUp,
}

pub(crate) fn on_loss(p: &Policy, losses: u32) -> LossDecision {
    if losses >= p.max_losses {
        LossDecision::GiveUp
    } else {
        LossDecision::Resend
    }
}

/// A message seen on this many lost connections is a suspect: it is written
/// alone (nothing else in flight on its connection) until it has an outcome,
/// so that a message that kills connections takes no other message with it.
pub(crate) const SUSPECT_AFTER_LOSSES: u32 = 2;

/// What a pool slot does after a connection attempt failed or a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SlotDecision {
    /// No reconnect can fix this: the client stops for good.
    Fatal,
    /// Connect again after `delay`; `failures` consecutive failures so far
    /// (0 after a healthy connection).
    Reconnect { delay: Duration, failures: u32 },
}

/// A connection attempt failed with `error`, after `failures` earlier
/// consecutive failures. Fatal exactly when [`Error::is_retryable`] is false.
pub(crate) fn on_connect_failure(
    p: &Policy,
    error: &Error,
    failures: u32,
    jitter: u64,
) -> SlotDecision {
    if !error.is_retryable() {
        return SlotDecision::Fatal;
    }
    let failures = failures.saturating_add(1);
    SlotDecision::Reconnect {
        delay: p.reconnect_backoff.delay_with(failures, jitter),
        failures,
    }
}

/// An authenticated connection ended after `lifetime`. A healthy one
/// (at least `stable_after`) is replaced at once and clears the failure
/// count; a short-lived one counts as a failed attempt, so a server that
/// accepts and then drops us is not hammered: the first is still replaced at
/// once, the next ones wait for the reconnect backoff.
pub(crate) fn on_connection_end(
    p: &Policy,
    lifetime: Duration,
    failures: u32,
    jitter: u64,
) -> SlotDecision {
    if lifetime >= p.stable_after {
        return SlotDecision::Reconnect {
            delay: Duration::ZERO,
            failures: 0,
        };
    }
    // The first drop is replaced at once (CCS: no backoff after a drop);
    // from the second short-lived connection in a row on, back off.
    let delay = if failures == 0 {
        Duration::ZERO
    } else {
        p.reconnect_backoff.delay_with(failures, jitter)
    };
    SlotDecision::Reconnect {
        delay,
        failures: failures.saturating_add(1),
    }
}

#[cfg(test)]
mod tests;
