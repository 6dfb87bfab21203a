//! The delivery policy: for each NACK, stanza error, loss, closed connection
//! or fatal error, what happens to the message ([`Fate`]), and for each
//! failed or short-lived connection when its slot may connect again. Pure
//! functions of their inputs; the engine applies them and decides nothing
//! itself.

use std::sync::Arc;
use std::time::Duration;

use super::{Backoff, ClientConfig, Rejection, ReturnReason};
use crate::error::{Error, InvalidMessage};
use crate::event::{Nack, RetryClass, StanzaError};

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

/// How often a message has been sent again, and why: the counts every
/// decision about it depends on. Kept with the message until its outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Attempts {
    /// Retries after a retryable NACK (SERVICE_UNAVAILABLE and the like, or
    /// a rate limit with `rate_limited_retry`); bounded by `max_retries`.
    pub(crate) retries: u32,
    /// Lost connections it was in flight on; bounded by `max_losses`.
    pub(crate) losses: u32,
    /// CONNECTION_DRAINING NACKs; bounded by [`MAX_DRAIN_RESENDS`].
    pub(crate) drains: u32,
}

impl Attempts {
    /// In flight on [`SUSPECT_AFTER_LOSSES`] lost connections or more: it
    /// travels alone until it has an outcome.
    pub(crate) fn is_suspect(&self) -> bool {
        self.losses >= SUSPECT_AFTER_LOSSES
    }
}

/// What happens to one message. The engine applies it as it is.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Fate {
    /// Final: the message is rejected (a code that must not be retried, a
    /// rate limit by default, a stanza error).
    Reject(Rejection),
    /// Handed back to the application, unsent, for this reason.
    Return(ReturnReason),
    /// Sent again after this delay (from the retry schedule).
    RetryAfter(Duration),
    /// Sent again at once, ahead of newer messages, in acceptance order:
    /// on another connection after a drain, on the next one after a loss.
    Resend,
}

/// How many times one message is resent after a CONNECTION_DRAINING NACK;
/// the next such NACK returns it ([`ReturnReason::RetriesExhausted`] with
/// that code).
///
/// A drain NACK is no failure of the message: CCS asks for it to be sent
/// again on another connection, at once, and it does not count against
/// `max_retries` (with `max_retries(0)` a drained message is still resent).
/// This bound only keeps a server that drains every connection a message is
/// written on from bouncing it forever; real CCS drains a connection rarely
/// (maintenance), so 16 drains of one message is far beyond any honest run.
pub(crate) const MAX_DRAIN_RESENDS: u32 = 16;

/// A message that goes back to the queue to be written again (after a drain
/// or a loss, a closed connection's window, a released group member): sent
/// again at once, unless the client stopped for good (`stopped`), when no
/// connection will ever take it and it is returned.
pub(crate) fn requeue(stopped: Option<&Arc<Error>>) -> Fate {
    match stopped {
        Some(e) => Fate::Return(ReturnReason::Fatal(Arc::clone(e))),
        None => Fate::Resend,
    }
}

/// The client stopped for good with `error`: a message not in flight
/// (queued, scheduled for a retry, held behind its group) is returned at
/// once, for this reason. A message in flight keeps its place until its
/// answer comes (which settles it as ever) or its connection ends
/// ([`requeue`] then returns it).
pub(crate) fn on_fatal(error: &Arc<Error>) -> ReturnReason {
    ReturnReason::Fatal(Arc::clone(error))
}

/// `nack` answers a message with `attempts` so far; `jitter` is a random
/// number for the backoff, `stopped` the fatal error if the client stopped.
/// Gives the fate and the message's counts after it.
pub(crate) fn on_nack(
    p: &Policy,
    nack: Nack,
    attempts: Attempts,
    stopped: Option<&Arc<Error>>,
    jitter: u64,
) -> (Fate, Attempts) {
    let mut a = attempts;
    let fate = match nack.code.retry_class() {
        RetryClass::Final => Fate::Reject(Rejection::Nack(nack)),
        RetryClass::RateLimited if p.rate_limited_retry.is_none() => {
            Fate::Reject(Rejection::Nack(nack))
        }
        RetryClass::NewConnection => {
            // Not a failure of the message: no retry counted, no backoff.
            if a.drains >= MAX_DRAIN_RESENDS {
                Fate::Return(ReturnReason::RetriesExhausted(nack.code))
            } else {
                a.drains += 1;
                requeue(stopped)
            }
        }
        _ if a.retries >= p.max_retries => Fate::Return(ReturnReason::RetriesExhausted(nack.code)),
        class => {
            let delay = match (class, p.rate_limited_retry) {
                (RetryClass::RateLimited, Some(d)) => d,
                // `Backoff` and any class added later: retry with backoff.
                _ => p.retry_backoff.delay_with(a.retries + 1, jitter),
            };
            a.retries += 1;
            match stopped {
                Some(_) => requeue(stopped),
                None => Fate::RetryAfter(delay),
            }
        }
    };
    (fate, a)
}

/// A stanza error that names a message in flight: the server refused the
/// stanza itself (a malformed or incomplete request, CCS answers this way
/// for a missing `message_id`). Sending it unchanged again cannot help: it
/// is rejected, whatever the counts or the client's state.
pub(crate) fn on_stanza_error(error: StanzaError) -> Fate {
    Fate::Reject(Rejection::StanzaError(error))
}

/// The connection refused to write a message (`error`; nothing was
/// written): it was validated when accepted, so only a connection whose own
/// check disagrees gets here. It is rejected for this reason: it would be
/// refused again on any connection.
pub(crate) fn on_unsendable(error: InvalidMessage) -> Rejection {
    Rejection::Invalid(error)
}

/// A message was in flight on a connection that was lost: one more loss is
/// counted. After `max_losses` it is most likely what kills the connections
/// and is returned; otherwise it is resent on the next connection, in
/// order, ahead of newer messages ([`requeue`]).
pub(crate) fn on_loss(
    p: &Policy,
    attempts: Attempts,
    stopped: Option<&Arc<Error>>,
) -> (Fate, Attempts) {
    let mut a = attempts;
    a.losses = a.losses.saturating_add(1);
    let fate = if a.losses >= p.max_losses {
        Fate::Return(ReturnReason::ConnectionsLost(a.losses))
    } else {
        requeue(stopped)
    };
    (fate, a)
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
