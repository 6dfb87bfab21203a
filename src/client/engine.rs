//! The delivery engine: the I/O-free core of the worker [`Client`](super::Client).
//!
//! One state machine owns every message the client accepted until its final
//! outcome: the queue (in acceptance order), the retry schedule, the window
//! of every connection (at most `max_pending` each, in the order written), the
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
//!   message id is never in flight twice on one connection;
//! - messages go out in acceptance order; those coming back from a lost or
//!   draining connection go out again ahead of newer ones, in their original
//!   order;
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

use std::cmp::{Ordering as CmpOrdering, Reverse};
use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::policy::{self, LossDecision, NackDecision, Policy, SlotDecision};
use super::{
    AckHandle, AckMode, ClientConfig, ClientEvent, Metrics, Rejection, ReturnReason, SendErrorKind,
};
use crate::error::{Error, InvalidMessage};
use crate::event::{Ack, Event, Nack, NackCode, StanzaError};
use crate::message::Message;
pub(crate) use crate::time::later;

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

/// A message the engine owns until its outcome.
#[derive(Debug)]
struct Entry {
    message: Message,
    /// Acceptance order.
    seq: u64,
    /// Hash of the message id, for cheap lookups in a window.
    key: u64,
    /// Retries after a NACK so far.
    retries: u32,
    /// Lost connections this message was in flight on.
    losses: u32,
}

/// A retry due at `at`.
#[derive(Debug)]
struct Due {
    at: Instant,
    entry: Entry,
}

impl PartialEq for Due {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == CmpOrdering::Equal
    }
}
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, o: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(o))
    }
}
impl Ord for Due {
    fn cmp(&self, o: &Self) -> CmpOrdering {
        (self.at, self.entry.seq).cmp(&(o.at, o.entry.seq))
    }
}

#[derive(Debug)]
struct Conn {
    slot: usize,
    jid: String,
    up_at: Instant,
    /// In flight, in the order written.
    window: VecDeque<Entry>,
    /// Moved into the window by the last `conn_step`, not yet handed out.
    fresh: usize,
    draining_since: Option<Instant>,
    /// Decided to close; waiting for [`Engine::closed`].
    closing: bool,
    acks: Vec<(String, String)>,
    /// Manual acks queued so far (tickets) and written so far.
    acks_queued: u64,
    acks_flushed: u64,
    /// Manual acks queued and not yet written: (ticket, from, message id).
    /// They enter the dedup set only once written: one whose connection dies
    /// first is delivered to the application again when CCS redelivers it.
    acks_unwritten: VecDeque<(u64, String, String)>,
}

impl Conn {
    fn position(&self, id: &str) -> Option<usize> {
        let key = key_of(id);
        self.window
            .iter()
            .position(|e| e.key == key && e.message.id() == id)
    }
    fn has_suspect(&self) -> bool {
        self.window
            .iter()
            .any(|e| e.losses >= policy::SUSPECT_AFTER_LOSSES)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotState {
    /// May connect from this instant.
    Waiting(Instant),
    Connecting,
    Up(ConnId),
    Stopped,
}

#[derive(Debug)]
struct Slot {
    state: SlotState,
    failures: u32,
    connected_before: bool,
}

/// The last `cap` `(from, message_id)` pairs of upstream messages and receipts.
#[derive(Debug, Default)]
struct Dedup {
    cap: usize,
    seen: HashSet<(String, String)>,
    order: VecDeque<(String, String)>,
}

impl Dedup {
    fn contains(&self, from: &str, id: &str) -> bool {
        self.cap > 0 && self.seen.contains(&(from.to_string(), id.to_string()))
    }
    fn remember(&mut self, from: &str, id: &str) {
        if self.cap == 0 {
            return;
        }
        let key = (from.to_string(), id.to_string());
        if self.seen.insert(key.clone()) {
            self.order.push_back(key);
            while self.order.len() > self.cap {
                if let Some(old) = self.order.pop_front() {
                    self.seen.remove(&old);
                }
            }
        }
    }
}

fn key_of(id: &str) -> u64 {
    let mut h = DefaultHasher::new();
    id.hash(&mut h);
    h.finish()
}

/// The delivery engine. See the [module docs](self).
#[derive(Debug)]
pub struct Engine {
    policy: Policy,
    max_pending: usize,
    queue_capacity: usize,
    ack_mode: AckMode,
    drain_timeout: Duration,
    /// Waiting to be written, sorted by `seq`.
    queue: VecDeque<Entry>,
    retries: BinaryHeap<Reverse<Due>>,
    /// Per ordered group with a member in the queue, the retry schedule or a
    /// window (its head), the members accepted after it, in acceptance order.
    groups: HashMap<String, VecDeque<Entry>>,
    /// How many entries the `groups` hold.
    held: usize,
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
    /// application looked (the last [`ENDED_KEPT`]).
    ended: VecDeque<(ConnId, u64)>,
    rng: u64,
    metrics: Metrics,
    peak_conns: usize,
}

/// How many ended connections [`Engine::ack_state`] still knows about.
const ENDED_KEPT: usize = 256;

impl Engine {
    /// An engine for `config`'s pool, with its jitter drawn from `seed`.
    pub fn new(config: &ClientConfig, seed: u64, now: Instant) -> Engine {
        Engine {
            policy: Policy::new(config),
            max_pending: config.connection.max_pending.clamp(1, 100),
            queue_capacity: config.queue_capacity.max(1),
            ack_mode: config.ack_mode,
            drain_timeout: config.drain_timeout,
            queue: VecDeque::new(),
            retries: BinaryHeap::new(),
            groups: HashMap::new(),
            held: 0,
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

    // ----- the application's side -----

    /// True while [`accept`](Self::accept) would take a message now.
    pub fn has_room(&self) -> bool {
        self.queue.len() + self.retries.len() + self.held < self.queue_capacity
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
        let key = key_of(message.id());
        let entry = Entry {
            message,
            seq,
            key,
            retries: 0,
            losses: 0,
        };
        self.metrics.accepted += 1;
        if let Some(group) = entry.message.get_group() {
            if let Some(held) = self.groups.get_mut(group) {
                held.push_back(entry);
                self.held += 1;
                return Ok(());
            }
            self.groups.insert(group.to_string(), VecDeque::new());
        }
        // New messages are the newest: the back keeps the queue sorted.
        self.queue.push_back(entry);
        Ok(())
    }

    /// Queues a manual ack on the connection the event arrived on; returns
    /// the ticket to pass to [`ack_state`](Self::ack_state).
    ///
    /// # Errors
    /// [`Error::Closed`] when that connection is gone (CCS will deliver the
    /// message again on another connection).
    pub fn manual_ack(&mut self, handle: &AckHandle) -> Result<u64, Error> {
        let conn = match self.conns.get_mut(&handle.conn_id) {
            Some(c) if !c.closing => c,
            _ => return Err(Error::Closed),
        };
        conn.acks
            .push((handle.to.clone(), handle.message_id.clone()));
        conn.acks_queued += 1;
        let ticket = conn.acks_queued;
        if self.dedup.cap > 0 {
            conn.acks_unwritten
                .push_back((ticket, handle.from.clone(), handle.message_id.clone()));
        }
        Ok(ticket)
    }

    /// Whether the manual ack with `ticket` on `conn` was written.
    pub fn ack_state(&self, conn: ConnId, ticket: u64) -> AckState {
        match self.conns.get(&conn) {
            Some(c) if c.acks_flushed >= ticket => AckState::Written,
            Some(c) if !c.closing => AckState::Queued,
            Some(_) => AckState::Gone,
            None => match self.ended.iter().find(|(id, _)| *id == conn) {
                Some((_, flushed)) if *flushed >= ticket => AckState::Written,
                _ => AckState::Gone,
            },
        }
    }

    /// Remembers how many manual acks `c` wrote before it ended.
    fn note_ended(&mut self, conn: ConnId, c: &Conn) {
        if c.acks_queued == 0 {
            return;
        }
        if self.ended.len() == ENDED_KEPT {
            self.ended.pop_front();
        }
        self.ended.push_back((conn, c.acks_flushed));
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
        let mut entries = self.take_waiting();
        entries.sort_by_key(|e| e.seq);
        for e in entries {
            self.returned(e, ReturnReason::Fatal(Arc::clone(&error)));
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
        let mut all = self.take_waiting();
        for (_, c) in std::mem::take(&mut self.conns) {
            all.extend(c.window);
        }
        for s in &mut self.slots {
            s.state = SlotState::Stopped;
        }
        all.sort_by_key(|e| e.seq);
        self.metrics.pending = 0;
        all.into_iter().map(|e| e.message).collect()
    }

    /// Takes every entry not in flight: queued, scheduled and held (the
    /// groups end with them), in no particular order.
    fn take_waiting(&mut self) -> Vec<Entry> {
        let mut all: Vec<Entry> = self.queue.drain(..).collect();
        all.extend(
            std::mem::take(&mut self.retries)
                .into_iter()
                .map(|Reverse(d)| d.entry),
        );
        for (_, held) in self.groups.drain() {
            all.extend(held);
        }
        self.held = 0;
        all
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
        m.queued = (self.queue.len() + self.retries.len() + self.held) as u64;
        m
    }

    // ----- pool slots -----

    /// What slot `slot` (without a connection) should do now.
    pub fn slot_step(&mut self, slot: usize, now: Instant) -> SlotStep {
        let deadline = self.deadline;
        let stop = self.finished || self.fatal.is_some();
        let work_left = deadline.map(|d| self.work_left(d));
        let Some(s) = self.slots.get_mut(slot) else {
            return SlotStep::Stop;
        };
        let at = match s.state {
            SlotState::Stopped => return SlotStep::Stop,
            SlotState::Up(_) | SlotState::Connecting => return SlotStep::Wait(None),
            SlotState::Waiting(at) => at,
        };
        if stop {
            s.state = SlotState::Stopped;
            return SlotStep::Stop;
        }
        if let Some(d) = deadline {
            if now >= d || at >= d || work_left == Some(false) {
                s.state = SlotState::Stopped;
                return SlotStep::Stop;
            }
        }
        if now >= at {
            s.state = SlotState::Connecting;
            SlotStep::Connect { deadline }
        } else {
            SlotStep::Wait(Some(at))
        }
    }

    /// The connection attempt of `slot` failed.
    pub fn connect_failed(&mut self, slot: usize, error: Error, now: Instant) {
        let jitter = self.jitter();
        let Some(s) = self.slots.get_mut(slot) else {
            return;
        };
        if s.state != SlotState::Connecting {
            return;
        }
        match policy::on_connect_failure(&self.policy, &error, s.failures, jitter) {
            SlotDecision::Fatal => {
                s.state = SlotState::Stopped;
                self.fatal(error);
            }
            SlotDecision::Reconnect { delay, failures } => {
                s.failures = failures;
                s.state = SlotState::Waiting(later(now, delay));
                log::info!("connection attempt {failures} failed: {error}; next in {delay:?}");
                self.events.push(ClientEvent::Reconnecting {
                    slot,
                    attempt: failures,
                    delay,
                    error: Arc::new(error),
                });
            }
        }
    }

    /// `slot` is connected and authenticated as `jid`.
    pub fn connected(&mut self, slot: usize, jid: &str, now: Instant) -> ConnId {
        let id = self.next_conn;
        self.next_conn += 1;
        if let Some(s) = self.slots.get_mut(slot) {
            if s.connected_before {
                self.metrics.reconnects += 1;
            }
            s.connected_before = true;
            if s.state == SlotState::Connecting {
                s.state = SlotState::Up(id);
            }
        }
        self.conns.insert(
            id,
            Conn {
                slot,
                jid: jid.to_string(),
                up_at: now,
                window: VecDeque::with_capacity(self.max_pending),
                fresh: 0,
                draining_since: None,
                closing: false,
                acks: Vec::new(),
                acks_queued: 0,
                acks_flushed: 0,
                acks_unwritten: VecDeque::new(),
            },
        );
        self.peak_conns = self.peak_conns.max(self.conns.len());
        if self.finished {
            // Shut down meanwhile: conn_step closes it at once.
            if let Some(c) = self.conns.get_mut(&id) {
                c.closing = true;
            }
        }
        self.events.push(ClientEvent::Connected {
            slot,
            jid: jid.to_string(),
        });
        id
    }

    // ----- connections -----

    /// Whether queued or due work can still be sent before `deadline`.
    fn work_left(&self, deadline: Instant) -> bool {
        !self.queue.is_empty()
            || self
                .retries
                .peek()
                .is_some_and(|Reverse(d)| d.at < deadline)
    }

    /// Moves the retries due at `now` into the queue, in order.
    fn promote_due(&mut self, now: Instant) {
        while self.retries.peek().is_some_and(|Reverse(d)| d.at <= now) {
            if let Some(Reverse(d)) = self.retries.pop() {
                self.requeue(d.entry);
            }
        }
    }

    /// Puts an entry back in the queue at its place in acceptance order.
    fn requeue(&mut self, entry: Entry) {
        if let Some(err) = &self.fatal {
            let err = Arc::clone(err);
            self.returned(entry, ReturnReason::Fatal(err));
            return;
        }
        let at = self.queue.partition_point(|e| e.seq < entry.seq);
        self.queue.insert(at, entry);
    }

    /// What connection `conn` should do now: messages and acks to write,
    /// whether to close, when to look again.
    pub fn conn_step(&mut self, conn: ConnId, now: Instant) -> ConnStep {
        let mut step = ConnStep::default();
        let deadline = self.deadline;
        let fatal = self.fatal.is_some();
        let work_left = deadline.map(|d| self.work_left(d));
        self.promote_due(now);
        let next_retry = self.retries.peek().map(|Reverse(d)| d.at);
        let max_pending = self.max_pending;
        let drain_timeout = self.drain_timeout;
        let Some(c) = self.conns.get_mut(&conn) else {
            step.close = true;
            return step;
        };
        step.acks = std::mem::take(&mut c.acks);
        step.ack_ticket = c.acks_queued;
        if c.closing {
            step.close = true;
            return step;
        }
        let past_deadline = deadline.is_some_and(|d| now >= d);
        let drain_over = c
            .draining_since
            .is_some_and(|t| now >= later(t, drain_timeout));
        let nothing_left = (fatal || work_left == Some(false)) && c.window.is_empty();
        if past_deadline || drain_over || nothing_left {
            if drain_over {
                log::warn!(
                    "{} still open {drain_timeout:?} after draining began: closing it",
                    c.jid
                );
            }
            c.closing = true;
            step.close = true;
            return step;
        }
        let can_send = c.draining_since.is_none() && !fatal;
        if can_send {
            let mut moved = 0;
            while c.window.len() < max_pending {
                let Some(front) = self.queue.front() else {
                    break;
                };
                let suspect = front.losses >= policy::SUSPECT_AFTER_LOSSES;
                if (suspect && !c.window.is_empty()) || c.has_suspect() {
                    break;
                }
                if c.position(front.message.id()).is_some() {
                    // The same id is still in flight here: wait for its answer.
                    break;
                }
                let Some(e) = self.queue.pop_front() else {
                    break;
                };
                c.window.push_back(e);
                moved += 1;
                if suspect {
                    break;
                }
            }
            c.fresh += moved;
            step.send = c.fresh;
            self.metrics.sent += moved as u64;
            if c.window.len() < max_pending {
                step.wake = next_retry;
            }
        }
        if let Some(t) = c.draining_since {
            step.wake = min_opt(step.wake, Some(later(t, drain_timeout)));
        }
        step.wake = min_opt(step.wake, deadline);
        step
    }

    /// The messages `conn_step` told the driver to write (`send` of them),
    /// in order. Call once per step: it marks them handed out.
    pub fn outgoing(&mut self, conn: ConnId) -> impl Iterator<Item = &Message> + '_ {
        let (window, n) = match self.conns.get_mut(&conn) {
            Some(c) => {
                let n = std::mem::take(&mut c.fresh);
                (Some(&c.window), n)
            }
            None => (None, 0),
        };
        window
            .into_iter()
            .flat_map(move |w| w.range(w.len() - n..))
            .map(|e| &e.message)
    }

    /// The driver could not write message `id` on `conn` because it is
    /// invalid there (nothing was written): it is rejected.
    pub fn unsendable(&mut self, conn: ConnId, id: &str, error: InvalidMessage) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if let Some(i) = c.position(id) {
            if let Some(e) = c.window.remove(i) {
                // It was among the fresh ones at the tail.
                c.fresh = c.fresh.saturating_sub(1);
                self.metrics.sent = self.metrics.sent.saturating_sub(1);
                self.rejected(e, Rejection::Invalid(error));
            }
        }
    }

    /// The acks of `conn_step`s up to `ticket` are written.
    pub fn acks_flushed(&mut self, conn: ConnId, ticket: u64) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.acks_flushed = c.acks_flushed.max(ticket);
            while c.acks_unwritten.front().is_some_and(|a| a.0 <= ticket) {
                if let Some((_, from, id)) = c.acks_unwritten.pop_front() {
                    self.dedup.remember(&from, &id);
                }
            }
        }
    }

    /// True once `conn` was told to stop sending (draining).
    pub fn is_draining(&self, conn: ConnId) -> bool {
        self.conns
            .get(&conn)
            .is_some_and(|c| c.draining_since.is_some())
    }

    /// Messages in flight on `conn`.
    pub fn in_flight(&self, conn: ConnId) -> usize {
        self.conns.get(&conn).map_or(0, |c| c.window.len())
    }

    /// The ids in flight on `conn`, in the order written.
    pub fn in_flight_ids(&self, conn: ConnId) -> Vec<String> {
        self.conns.get(&conn).map_or_else(Vec::new, |c| {
            c.window
                .iter()
                .map(|e| e.message.id().to_string())
                .collect()
        })
    }

    /// Applies one event that arrived on `conn`.
    pub fn on_event(&mut self, conn: ConnId, event: Event, now: Instant) {
        if !self.conns.contains_key(&conn) {
            log::debug!("event for a finished connection ignored: {event:?}");
            return;
        }
        match event {
            Event::Ack(ack) => self.on_ack(conn, ack),
            Event::Nack(nack) => self.on_nack(conn, nack, now),
            Event::StanzaError(err) => self.on_stanza_error(conn, err),
            Event::Upstream(_) | Event::Receipt(_) => self.on_inbound(conn, event),
            Event::Control(ref ctl) if ctl.kind == crate::ControlKind::ConnectionDraining => {
                self.start_draining(conn, now)
            }
            other => {
                log::info!("unhandled event: {other:?}");
                self.events.push(ClientEvent::Other(other));
            }
        }
    }

    fn take_in_flight(&mut self, conn: ConnId, ids: [Option<&str>; 2]) -> Option<Entry> {
        let c = self.conns.get_mut(&conn)?;
        let i = ids.into_iter().flatten().find_map(|id| c.position(id))?;
        let e = c.window.remove(i)?;
        // An answer for a message not handed out yet cannot be; keep `fresh` sane.
        c.fresh = c.fresh.min(c.window.len());
        Some(e)
    }

    fn on_ack(&mut self, conn: ConnId, ack: Ack) {
        match self.take_in_flight(conn, [Some(&ack.message_id), None]) {
            Some(e) => {
                self.metrics.acked += 1;
                self.settled(&e);
                self.events.push(ClientEvent::Delivered {
                    message: e.message,
                    ack,
                });
            }
            None => log::debug!("ack for unknown message {}", ack.message_id),
        }
    }

    fn on_nack(&mut self, conn: ConnId, nack: Nack, now: Instant) {
        *self
            .metrics
            .nacked
            .entry(nack.code.as_str().to_string())
            .or_insert(0) += 1;
        if nack.code == NackCode::BadAck {
            // About one of our acks, never about a downstream message.
            log::warn!(
                "BAD_ACK for {}: an ack we sent was malformed",
                nack.message_id
            );
            self.events.push(ClientEvent::Other(Event::Nack(nack)));
            return;
        }
        if nack.code == NackCode::ConnectionDraining {
            self.start_draining(conn, now);
        }
        let Some(mut e) = self.take_in_flight(conn, [Some(&nack.message_id), None]) else {
            log::debug!("nack for unknown message {}", nack.message_id);
            return;
        };
        let jitter = self.jitter();
        match policy::on_nack(&self.policy, &nack.code, e.retries, jitter) {
            NackDecision::Reject => self.rejected(e, Rejection::Nack(nack)),
            NackDecision::GiveUp => {
                log::info!("{} returned after {} retries", nack.message_id, e.retries);
                self.returned(e, ReturnReason::RetriesExhausted(nack.code));
            }
            NackDecision::Resend => {
                e.retries += 1;
                self.metrics.retried += 1;
                self.requeue(e);
            }
            NackDecision::RetryAfter(delay) => {
                e.retries += 1;
                self.metrics.retried += 1;
                log::info!(
                    "{} nacked {}: retry {} in {delay:?}",
                    nack.message_id,
                    nack.code,
                    e.retries
                );
                if self.fatal.is_some() {
                    self.requeue(e);
                } else {
                    self.retries.push(Reverse(Due {
                        at: later(now, delay),
                        entry: e,
                    }));
                }
            }
        }
    }

    fn on_stanza_error(&mut self, conn: ConnId, err: StanzaError) {
        let (id, mid) = (err.id.clone(), err.message_id.clone());
        match self.take_in_flight(conn, [id.as_deref(), mid.as_deref()]) {
            Some(e) => self.rejected(e, Rejection::StanzaError(err)),
            None => {
                log::warn!("stanza error for no pending message: {err:?}");
                self.events
                    .push(ClientEvent::Other(Event::StanzaError(err)));
            }
        }
    }

    fn on_inbound(&mut self, conn: ConnId, event: Event) {
        let Some((to, id)) = event
            .ack_target()
            .map(|(t, i)| (t.to_string(), i.to_string()))
        else {
            return;
        };
        let from = match &event {
            Event::Upstream(u) => u.from.clone(),
            Event::Receipt(r) => r.from.clone(),
            _ => String::new(),
        };
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.closing {
            // It cannot be acked any more: CCS delivers it again elsewhere.
            log::debug!("{id} arrived while closing: left for redelivery");
            return;
        }
        if self.dedup.contains(&from, &id) {
            self.metrics.duplicates += 1;
            c.acks.push((to, id));
            return;
        }
        let handle = match self.ack_mode {
            AckMode::Auto => {
                c.acks.push((to, id.clone()));
                self.dedup.remember(&from, &id);
                None
            }
            AckMode::Manual => Some(AckHandle {
                conn_id: conn,
                to,
                message_id: id,
                from,
            }),
        };
        match event {
            Event::Upstream(upstream) => {
                self.metrics.upstream += 1;
                self.events.push(ClientEvent::Upstream {
                    upstream,
                    ack: handle,
                });
            }
            Event::Receipt(receipt) => {
                self.metrics.receipts += 1;
                self.events.push(ClientEvent::Receipt {
                    receipt,
                    ack: handle,
                });
            }
            _ => {}
        }
    }

    fn start_draining(&mut self, conn: ConnId, now: Instant) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.draining_since.is_some() {
            return;
        }
        c.draining_since = Some(now);
        let (slot, jid) = (c.slot, c.jid.clone());
        log::info!("{jid} is draining; opening a new connection");
        if let Some(s) = self.slots.get_mut(slot) {
            if s.state == SlotState::Up(conn) {
                s.state = SlotState::Waiting(now);
            }
        }
        self.events.push(ClientEvent::Draining { slot, jid });
    }

    /// `conn` ended without us closing it (dropped, stream error, dead peer):
    /// its in-flight messages go out again in order on the next connection,
    /// each with one more loss counted.
    pub fn lost(&mut self, conn: ConnId, error: Error, now: Instant) {
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        self.note_ended(conn, &c);
        log::info!("connection {} lost: {error}", c.jid);
        let error = Arc::new(error);
        let resent = self.settle_window(c.window, true);
        let jitter = self.jitter();
        let lifetime = now.saturating_duration_since(c.up_at);
        let mut reconnect = None;
        let stopped = self.fatal.is_some() || self.finished;
        if let Some(s) = self.slots.get_mut(c.slot) {
            if s.state == SlotState::Up(conn) && stopped {
                s.state = SlotState::Stopped;
            } else if s.state == SlotState::Up(conn) {
                match policy::on_connection_end(&self.policy, lifetime, s.failures, jitter) {
                    SlotDecision::Reconnect { delay, failures } => {
                        s.failures = failures;
                        s.state = SlotState::Waiting(later(now, delay));
                        if !delay.is_zero() {
                            reconnect = Some((failures, delay));
                        }
                    }
                    SlotDecision::Fatal => s.state = SlotState::Stopped,
                }
            }
        }
        self.events.push(ClientEvent::Lost {
            slot: c.slot,
            jid: c.jid,
            error: Arc::clone(&error),
            resent,
        });
        if let Some((attempt, delay)) = reconnect {
            log::info!("connection lived {lifetime:?}: next attempt in {delay:?}");
            self.events.push(ClientEvent::Reconnecting {
                slot: c.slot,
                attempt,
                delay,
                error,
            });
        }
    }

    /// We closed `conn` (shutdown, fatal, a drain that never ended); `late`
    /// are the events that came while closing. They settle what they
    /// settle, by the same rules as ever; the rest of the window goes out
    /// again (or back to the application at shutdown).
    pub fn closed(&mut self, conn: ConnId, late: Vec<Event>, now: Instant) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.closing = true;
        } else {
            return;
        }
        for ev in late {
            self.on_event(conn, ev, now);
        }
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        self.note_ended(conn, &c);
        let resent = self.settle_window(c.window, false);
        let stopped = self.fatal.is_some() || self.finished;
        if let Some(s) = self.slots.get_mut(c.slot) {
            if s.state == SlotState::Up(conn) {
                s.state = if stopped {
                    SlotState::Stopped
                } else {
                    SlotState::Waiting(now)
                };
            }
        }
        if resent > 0 || c.draining_since.is_some() {
            self.events.push(ClientEvent::Lost {
                slot: c.slot,
                jid: c.jid,
                error: Arc::new(Error::Closed),
                resent,
            });
        }
    }

    /// Requeues (or, fatal, returns) a window; counts a loss if `lost`.
    /// Returns how many go out again.
    fn settle_window(&mut self, window: VecDeque<Entry>, lost: bool) -> usize {
        let mut resent = 0;
        for mut e in window {
            if lost {
                e.losses += 1;
                if policy::on_loss(&self.policy, e.losses) == LossDecision::GiveUp {
                    log::warn!(
                        "{} was in flight on {} lost connections: returned",
                        e.message.id(),
                        e.losses
                    );
                    let n = e.losses;
                    self.returned(e, ReturnReason::ConnectionsLost(n));
                    continue;
                }
            }
            if self.fatal.is_none() {
                resent += 1;
            }
            self.requeue(e);
        }
        self.metrics.resent += resent as u64;
        resent
    }

    /// `e` has its final outcome: the next member of its group (if any)
    /// joins the queue at its place in acceptance order.
    fn settled(&mut self, e: &Entry) {
        let Some(group) = e.message.get_group() else {
            return;
        };
        let Some(held) = self.groups.get_mut(group) else {
            return;
        };
        match held.pop_front() {
            Some(next) => {
                self.held -= 1;
                self.requeue(next);
            }
            None => {
                self.groups.remove(group);
            }
        }
    }

    fn rejected(&mut self, e: Entry, reason: Rejection) {
        self.settled(&e);
        self.metrics.rejected += 1;
        self.events.push(ClientEvent::Rejected {
            message: e.message,
            reason,
        });
    }

    fn returned(&mut self, e: Entry, reason: ReturnReason) {
        self.settled(&e);
        self.metrics.returned += 1;
        self.events.push(ClientEvent::Returned {
            message: e.message,
            reason,
        });
    }

    /// Everything the engine holds: queued, scheduled, held, in flight.
    pub fn owned(&self) -> usize {
        self.queue.len()
            + self.retries.len()
            + self.held
            + self.conns.values().map(|c| c.window.len()).sum::<usize>()
    }

    /// The most connections that were open at once.
    pub fn peak_connections(&self) -> usize {
        self.peak_conns
    }
}

fn min_opt(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}
