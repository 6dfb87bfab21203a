//! The delivery engine: the I/O-free core of the worker [`Client`](super::Client).
//!
//! One state machine owns every message the client accepted until its final
//! outcome: the queue (in acceptance order), the retry schedule, the window
//! of every connection (at most `max_pending` each, in acceptance order), the
//! reconnect schedule of every pool slot, and shutdown. It holds no thread,
//! socket, lock or clock: the caller passes `now` in and performs what the
//! engine answers (connect this slot, write these messages and acks on this
//! connection, close that one, hand these [`ClientEvent`]s to the
//! application). The worker threads only move bytes and call it; the seeded
//! simulation in `tests/simulation.rs` drives it on simulated time.
//!
//! What it guarantees, whatever order inputs come in:
//! - every accepted message ends in exactly one of [`ClientEvent::Delivered`],
//!   [`ClientEvent::Rejected`], [`ClientEvent::Returned`], or a place in the
//!   list [`Engine::finish`] returns;
//! - at most `max_pending` messages are in flight on a connection, and a
//!   message id is never in flight twice on one connection; the engine's
//!   window is the one record of them (kept in acceptance order, looked up
//!   by id), the connection keeps none of its own;
//! - messages go out in acceptance order (a member of an ordered group once
//!   the one before it has its outcome, see below); those coming back from a
//!   lost or draining connection go out again ahead of newer ones, in their
//!   original order;
//! - a retry after SERVICE_UNAVAILABLE or INTERNAL_SERVER_ERROR waits at least
//!   the retry backoff's nominal delay; connect attempts of a slot are spaced
//!   by the reconnect backoff, whatever else happens;
//! - a message in flight on too many lost connections is handed back instead
//!   of killing connections forever, and while it is suspect it travels alone;
//! - messages of one ordered group ([`Message::group`]) are written strictly
//!   one after another, in acceptance order: the next only once the previous
//!   one has its final outcome, whatever retries, resends and reconnects it
//!   takes; the rest of a group waits outside the queue, so other groups and
//!   ungrouped messages flow around it;
//! - the queue, the retry schedule and the held group members never grow past
//!   `queue_capacity` by accepting;
//! - after the shutdown deadline nothing new is written.
//!
//! The code is split by concern: this module holds the engine's state and the
//! application's side (accept, shutdown, fatal, finish); `queue` the waiting
//! side (queue, retry schedule, ordered groups) and the outcomes; `conns` the
//! pool slots, windows, draining and lost or closed connections; `inbound`
//! ACKs, NACKs, stanza errors, upstream messages and manual acks.

mod conns;
mod inbound;
mod queue;
mod window;

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::policy::{self, Policy};
use super::{AckMode, ClientConfig, ClientEvent, Metrics, SendErrorKind};
use crate::error::Error;
use crate::message::Message;
pub(crate) use crate::time::later;
use conns::{Conn, Slot, SlotState};
use inbound::Dedup;
use queue::{Entry, Waiting};

/// Identifies one connection for the life of an engine (never reused).
pub type ConnId = u64;

/// What a pool slot without a connection should do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotStep {
    /// Open a connection; give up on it at `deadline` (the shutdown deadline).
    Connect {
        /// Abandon the attempt at this instant, if set.
        deadline: Option<Instant>,
    },
    /// Nothing to do before this instant (`None`: until woken).
    Wait(Option<Instant>),
    /// The slot is finished: shutdown or a fatal error.
    Stop,
}

/// What a connection's driver should do now (from [`Engine::conn_step`]).
#[derive(Debug, Default)]
pub struct ConnStep {
    /// How many messages to write: the last `send` of
    /// [`Engine::outgoing`], in that order.
    pub send: usize,
    /// Acks to write, `(to, message_id)`, in order.
    pub acks: Vec<(String, String)>,
    /// The manual-ack ticket these acks reach; report it to
    /// [`Engine::acks_flushed`] once they are written.
    pub ack_ticket: u64,
    /// Close the connection (then report [`Engine::closed`]).
    pub close: bool,
    /// Call `conn_step` again by then even if nothing arrives.
    pub wake: Option<Instant>,
}

/// Whether a manual ack reached the wire (see [`Engine::ack_state`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckState {
    /// Written and flushed.
    Written,
    /// Queued, not written yet.
    Queued,
    /// The connection ended first: the ack will never be written.
    Gone,
}

/// The delivery engine. See the [module docs](self).
#[derive(Debug)]
pub struct Engine {
    policy: Policy,
    max_pending: usize,
    queue_capacity: usize,
    ack_mode: AckMode,
    drain_timeout: Duration,
    /// Accepted and not in flight: queue, retry schedule, held group members.
    waiting: Waiting,
    conns: BTreeMap<ConnId, Conn>,
    slots: Vec<Slot>,
    next_conn: ConnId,
    next_seq: u64,
    accepting: bool,
    deadline: Option<Instant>,
    fatal: Option<Arc<Error>>,
    finished: bool,
    events: Vec<ClientEvent>,
    dedup: Dedup,
    /// Recently ended connections that had manual acks, with how many of
    /// them were written: [`ack_state`](Engine::ack_state) answers for a
    /// connection that ended after the ack was written and before the
    /// application looked (the last [`ENDED_KEPT`](inbound::ENDED_KEPT)).
    ended: VecDeque<(ConnId, u64)>,
    rng: u64,
    metrics: Metrics,
    peak_conns: usize,
}

impl Engine {
    /// An engine for `config`'s pool, with its jitter drawn from `seed`.
    pub fn new(config: &ClientConfig, seed: u64, now: Instant) -> Engine {
        Engine {
            policy: Policy::new(config),
            max_pending: config.connection.max_pending.clamp(1, 100),
            queue_capacity: config.queue_capacity.max(1),
            ack_mode: config.ack_mode,
            drain_timeout: config.drain_timeout,
            waiting: Waiting::default(),
            conns: BTreeMap::new(),
            slots: (0..config.connections.max(1))
                .map(|_| Slot {
                    state: SlotState::Waiting(now),
                    failures: 0,
                    connected_before: false,
                })
                .collect(),
            next_conn: 1,
            next_seq: 0,
            accepting: true,
            deadline: None,
            fatal: None,
            finished: false,
            events: Vec::new(),
            dedup: Dedup {
                cap: config.dedup_window,
                ..Dedup::default()
            },
            ended: VecDeque::new(),
            rng: seed | 1,
            metrics: Metrics::default(),
            peak_conns: 0,
        }
    }

    fn jitter(&mut self) -> u64 {
        // xorshift64*
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// True while [`accept`](Self::accept) would take a message now.
    pub fn has_room(&self) -> bool {
        self.waiting.len() < self.queue_capacity
    }

    /// True until shutdown or a fatal error.
    pub fn is_accepting(&self) -> bool {
        self.accepting
    }

    /// Takes ownership of a (validated) message. The queue, the retry
    /// schedule and the held group members never exceed `queue_capacity`
    /// through this. A message whose [group](Message::group) has a member
    /// without an outcome yet is held until that one has it.
    ///
    /// # Errors
    /// The message back with [`SendErrorKind::Full`] or [`SendErrorKind::Closed`].
    #[allow(clippy::result_large_err)] // hands the message back without an allocation
    pub fn accept(&mut self, message: Message) -> Result<(), (Message, SendErrorKind)> {
        if !self.accepting {
            return Err((message, SendErrorKind::Closed));
        }
        if !self.has_room() {
            return Err((message, SendErrorKind::Full));
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.metrics.accepted += 1;
        self.waiting.add(Entry::new(message, seq));
        Ok(())
    }

    /// Stops accepting; finish by `deadline` (an earlier one wins).
    pub fn shutdown(&mut self, deadline: Instant) {
        self.accepting = false;
        self.deadline = Some(self.deadline.map_or(deadline, |d| d.min(deadline)));
    }

    /// Stops for good: reports `error` once, returns everything not in
    /// flight; what is in flight still gets its outcome or is returned when
    /// its connection ends.
    pub fn fatal(&mut self, error: Error) {
        if self.fatal.is_some() || self.finished {
            return;
        }
        log::error!("client stopped: {error}");
        let error = Arc::new(error);
        self.fatal = Some(Arc::clone(&error));
        self.accepting = false;
        self.events.push(ClientEvent::Fatal {
            error: Arc::clone(&error),
        });
        let mut entries = self.waiting.take_all();
        entries.sort_by_key(|e| e.seq);
        for e in entries {
            self.returned(e, policy::on_fatal(&error));
        }
        for s in &mut self.slots {
            if !matches!(s.state, SlotState::Up(_)) {
                s.state = SlotState::Stopped;
            }
        }
    }

    /// Ends the engine: everything still without an outcome, in acceptance
    /// order. Later inputs about connections are ignored.
    pub fn finish(&mut self) -> Vec<Message> {
        self.finished = true;
        self.accepting = false;
        let mut all = self.waiting.take_all();
        for (_, c) in std::mem::take(&mut self.conns) {
            all.extend(c.window.into_entries());
        }
        for s in &mut self.slots {
            s.state = SlotState::Stopped;
        }
        all.sort_by_key(|e| e.seq);
        self.metrics.pending = 0;
        all.into_iter().map(|e| e.message).collect()
    }

    /// True once nothing more can happen: every slot stopped and no
    /// connection left.
    pub fn is_done(&self) -> bool {
        self.conns.is_empty() && self.slots.iter().all(|s| s.state == SlotState::Stopped)
    }

    /// Time left until the shutdown deadline, if shutting down.
    pub fn deadline_left(&self, now: Instant) -> Option<Duration> {
        self.deadline.map(|d| d.saturating_duration_since(now))
    }

    /// True once [`finish`](Self::finish) was called.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// True once [`fatal`](Self::fatal) was called.
    pub fn is_fatal(&self) -> bool {
        self.fatal.is_some()
    }

    /// Moves the events for the application into `out`.
    pub fn take_events(&mut self, out: &mut Vec<ClientEvent>) {
        if out.is_empty() {
            std::mem::swap(out, &mut self.events);
        } else {
            out.append(&mut self.events);
        }
    }

    /// A snapshot of the counters.
    pub fn metrics(&self) -> Metrics {
        let mut m = self.metrics.clone();
        m.pending = self.conns.values().map(|c| c.window.len() as u64).sum();
        m.queued = self.waiting.len() as u64;
        m.held = self.waiting.held() as u64;
        m
    }

    /// Messages ready for a window now (not scheduled retries, not held
    /// behind their group, not in flight).
    pub fn ready(&self) -> usize {
        self.waiting.ready()
    }

    /// Everything the engine holds: queued, scheduled, held, in flight.
    pub fn owned(&self) -> usize {
        self.waiting.len() + self.conns.values().map(|c| c.window.len()).sum::<usize>()
    }

    /// The most connections that were open at once.
    pub fn peak_connections(&self) -> usize {
        self.peak_conns
    }
}
