//! The engine's waiting side: messages accepted and not in flight. The queue
//! (in acceptance order), the retry schedule, and the ordered groups' held
//! members; plus the outcomes that settle a message and release the next
//! member of its group.

use std::cmp::{Ordering as CmpOrdering, Reverse};
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::time::Instant;

use super::{later, Engine};
use crate::client::policy::{self, Attempts, Fate};
use crate::client::{ClientEvent, Rejection, ReturnReason};
use crate::connection::IdHasher;
use crate::event::Ack;
use crate::message::Message;

/// A message the engine owns until its outcome.
#[derive(Debug)]
pub(super) struct Entry {
    pub(super) message: Message,
    /// Acceptance order.
    pub(super) seq: u64,
    /// Hash of the message id, for cheap lookups in a window.
    pub(super) key: u64,
    /// Retries, losses and drains so far: what the policy decides by.
    pub(super) attempts: Attempts,
}

impl Entry {
    pub(super) fn new(message: Message, seq: u64) -> Entry {
        Entry {
            key: key_of(message.id()),
            message,
            seq,
            attempts: Attempts::default(),
        }
    }
}

/// The hash of a message id a window indexes it by.
pub(super) fn key_of(id: &str) -> u64 {
    let mut h = IdHasher::default();
    id.hash(&mut h);
    h.finish()
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

/// Everything accepted and not in flight.
///
/// An ordered group is *open* while one member (its head) is in the queue,
/// the retry schedule or a window; the members accepted after it wait in
/// the group's own FIFO, outside the queue, so nothing else queues behind
/// them. When the head settles, [`release`](Waiting::release) hands out the
/// next one (O(1)); the group closes when its FIFO is empty.
#[derive(Debug, Default)]
pub(super) struct Waiting {
    /// Ready to be written, sorted by `seq`.
    queue: VecDeque<Entry>,
    retries: BinaryHeap<Reverse<Due>>,
    /// Per open group, the members waiting for the head, in acceptance order.
    groups: HashMap<String, VecDeque<Entry>>,
    /// How many entries `groups` hold.
    held: usize,
}

impl Waiting {
    /// Queued, scheduled and held: what counts against `queue_capacity`.
    pub(super) fn len(&self) -> usize {
        self.queue.len() + self.retries.len() + self.held
    }

    /// Group members waiting for their head.
    pub(super) fn held(&self) -> usize {
        self.held
    }

    /// Entries ready to be written now (not scheduled, not held).
    pub(super) fn ready(&self) -> usize {
        self.queue.len()
    }

    /// A newly accepted entry: queued at the back (it is the newest), or held
    /// behind its group's head.
    pub(super) fn add(&mut self, entry: Entry) {
        if let Some(group) = entry.message.get_group() {
            if let Some(held) = self.groups.get_mut(group) {
                held.push_back(entry);
                self.held += 1;
                return;
            }
            self.groups.insert(group.to_string(), VecDeque::new());
        }
        self.queue.push_back(entry);
    }

    /// Puts an entry (back) in the queue at its place in acceptance order.
    pub(super) fn requeue(&mut self, entry: Entry) {
        let at = self.queue.partition_point(|e| e.seq < entry.seq);
        self.queue.insert(at, entry);
    }

    /// Schedules a retry of `entry` at `at`.
    pub(super) fn schedule(&mut self, at: Instant, entry: Entry) {
        self.retries.push(Reverse(Due { at, entry }));
    }

    /// Moves the retries due at `now` into the queue, in order.
    pub(super) fn promote_due(&mut self, now: Instant) {
        while self.retries.peek().is_some_and(|Reverse(d)| d.at <= now) {
            if let Some(Reverse(d)) = self.retries.pop() {
                self.requeue(d.entry);
            }
        }
    }

    /// When the next scheduled retry is due.
    pub(super) fn next_retry(&self) -> Option<Instant> {
        self.retries.peek().map(|Reverse(d)| d.at)
    }

    /// Whether queued or due work can still be sent before `deadline` (held
    /// members cannot: their heads are counted where they are).
    pub(super) fn work_before(&self, deadline: Instant) -> bool {
        !self.queue.is_empty() || self.next_retry().is_some_and(|at| at < deadline)
    }

    /// The next entry to write.
    pub(super) fn front(&self) -> Option<&Entry> {
        self.queue.front()
    }

    /// Takes the next entry to write.
    pub(super) fn pop_front(&mut self) -> Option<Entry> {
        self.queue.pop_front()
    }

    /// `e` has its final outcome: the next member of its group, if any, to
    /// be requeued by the caller. Closes the group when none is left.
    pub(super) fn release(&mut self, e: &Entry) -> Option<Entry> {
        let group = e.message.get_group()?;
        let held = self.groups.get_mut(group)?;
        let next = held.pop_front();
        match next {
            Some(_) => self.held -= 1,
            None => {
                self.groups.remove(group);
            }
        }
        next
    }

    /// Takes every entry, queued, scheduled and held (the groups close), in
    /// no particular order.
    pub(super) fn take_all(&mut self) -> Vec<Entry> {
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
}

impl Engine {
    /// Applies the policy's decision about `e`.
    pub(super) fn apply(&mut self, e: Entry, fate: Fate, now: Instant) {
        match fate {
            Fate::Reject(reason) => self.rejected(e, reason),
            Fate::Return(reason) => {
                log::warn!("{} returned: {reason}", e.message.id());
                self.returned(e, reason);
            }
            Fate::RetryAfter(delay) => {
                log::info!(
                    "{}: retry {} in {delay:?}",
                    e.message.id(),
                    e.attempts.retries
                );
                self.waiting.schedule(later(now, delay), e);
            }
            Fate::Resend => self.waiting.requeue(e),
        }
    }

    /// Puts an entry back in the queue at its place in acceptance order (or,
    /// after a fatal error, returns it: [`policy::requeue`]).
    pub(super) fn requeue(&mut self, entry: Entry) {
        match policy::requeue(self.fatal.as_ref()) {
            Fate::Return(reason) => self.returned(entry, reason),
            _ => self.waiting.requeue(entry),
        }
    }

    /// `e` has its final outcome, `event(message)`: the next member of its
    /// group (if any) joins the queue at its place in acceptance order.
    fn settle(&mut self, e: Entry, event: impl FnOnce(Message) -> ClientEvent) {
        if let Some(next) = self.waiting.release(&e) {
            self.requeue(next);
        }
        self.events.push(event(e.message));
    }

    pub(super) fn delivered(&mut self, e: Entry, ack: Ack) {
        self.metrics.acked += 1;
        self.settle(e, |message| ClientEvent::Delivered { message, ack });
    }

    pub(super) fn rejected(&mut self, e: Entry, reason: Rejection) {
        self.metrics.rejected += 1;
        self.settle(e, |message| ClientEvent::Rejected { message, reason });
    }

    pub(super) fn returned(&mut self, e: Entry, reason: ReturnReason) {
        self.metrics.returned += 1;
        self.settle(e, |message| ClientEvent::Returned { message, reason });
    }
}
