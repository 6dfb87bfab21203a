//! State shared by the handle and the worker threads: the queue, scheduled
//! retries, counters, manual-ack inboxes and the shutdown protocol.

use std::cmp::{Ordering as CmpOrdering, Reverse};
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Instant;

use super::{
    AckHandle, ClientConfig, ClientEvent, Metrics, ReturnReason, SendError, SendErrorKind,
};
use crate::error::{Error, Result};
use crate::message::Message;

/// A message the client owns until its outcome.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) message: Message,
    /// Submission order, for in-order resends.
    pub(crate) seq: u64,
    /// Retries so far.
    pub(crate) attempts: u32,
}

/// A retry scheduled for `at`.
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

#[derive(Debug, Default)]
struct State {
    /// New messages at the back; resends pushed to the front in order.
    queue: VecDeque<Entry>,
    retries: BinaryHeap<Reverse<Due>>,
    /// Entries new `submit`s count against capacity.
    accepting: bool,
    /// Set by shutdown: finish by then.
    deadline: Option<Instant>,
    /// Set once on a fatal error.
    fatal: bool,
    /// Pending messages given up at the shutdown deadline.
    leftovers: Vec<Entry>,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) accepted: AtomicU64,
    pub(crate) sent: AtomicU64,
    pub(crate) acked: AtomicU64,
    pub(crate) rejected: AtomicU64,
    pub(crate) returned: AtomicU64,
    pub(crate) retried: AtomicU64,
    pub(crate) resent: AtomicU64,
    pub(crate) reconnects: AtomicU64,
    pub(crate) upstream: AtomicU64,
    pub(crate) receipts: AtomicU64,
    pub(crate) duplicates: AtomicU64,
    pub(crate) pending: AtomicU64,
}

pub(crate) struct Shared {
    pub(crate) cfg: ClientConfig,
    state: Mutex<State>,
    /// Signalled when queue space frees up or the client stops.
    space: Condvar,
    /// Signalled when work arrives or the client stops (wakes idle/backing-off slots).
    work: Condvar,
    tx: Mutex<Option<Sender<Vec<ClientEvent>>>>,
    pub(crate) unread: AtomicUsize,
    pub(crate) counters: Counters,
    nacked: Mutex<BTreeMap<String, u64>>,
    seq: AtomicU64,
    next_conn: AtomicU64,
    /// Manual acks waiting for their connection's thread, by connection id.
    inboxes: Mutex<HashMap<u64, Vec<(String, String)>>>,
    drainers: Mutex<Vec<JoinHandle<()>>>,
    shut_down: AtomicBool,
    fatal_reported: AtomicBool,
    dedup: Mutex<Dedup>,
}

/// The last `cap` `(from, message_id)` pairs seen.
#[derive(Debug, Default)]
struct Dedup {
    cap: usize,
    seen: HashSet<(String, String)>,
    order: VecDeque<(String, String)>,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A worker that panicked must not take the others down with it.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    pub(crate) fn new(cfg: ClientConfig, tx: Sender<Vec<ClientEvent>>) -> Self {
        Shared {
            state: Mutex::new(State {
                accepting: true,
                ..State::default()
            }),
            space: Condvar::new(),
            work: Condvar::new(),
            tx: Mutex::new(Some(tx)),
            unread: AtomicUsize::new(0),
            counters: Counters::default(),
            nacked: Mutex::new(BTreeMap::new()),
            seq: AtomicU64::new(0),
            next_conn: AtomicU64::new(1),
            inboxes: Mutex::new(HashMap::new()),
            drainers: Mutex::new(Vec::new()),
            shut_down: AtomicBool::new(false),
            fatal_reported: AtomicBool::new(false),
            dedup: Mutex::new(Dedup {
                cap: cfg.dedup_window,
                ..Dedup::default()
            }),
            cfg,
        }
    }

    // ----- application side -----

    pub(crate) fn submit(
        &self,
        message: Message,
        deadline: Option<Instant>,
    ) -> std::result::Result<String, SendError> {
        let refuse = |kind, message| {
            Err(SendError {
                kind,
                message: Box::new(message),
            })
        };
        if let Err(e) = message.validate() {
            return refuse(SendErrorKind::Invalid(e), message);
        }
        let mut st = lock(&self.state);
        loop {
            if !st.accepting {
                drop(st);
                return refuse(SendErrorKind::Closed, message);
            }
            if st.queue.len() < self.cfg.queue_capacity {
                let id = message.id().to_string();
                let seq = self.seq.fetch_add(1, Ordering::Relaxed);
                st.queue.push_back(Entry {
                    message,
                    seq,
                    attempts: 0,
                });
                drop(st);
                self.counters.accepted.fetch_add(1, Ordering::Relaxed);
                self.work.notify_all();
                return Ok(id);
            }
            let Some(d) = deadline else {
                drop(st);
                return refuse(SendErrorKind::Full, message);
            };
            let now = Instant::now();
            if now >= d {
                drop(st);
                return refuse(SendErrorKind::Full, message);
            }
            st = self
                .space
                .wait_timeout(st, d - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    pub(crate) fn manual_ack(&self, h: &AckHandle) -> Result<()> {
        let mut inboxes = lock(&self.inboxes);
        match inboxes.get_mut(&h.conn_id) {
            Some(inbox) => {
                inbox.push((h.to.clone(), h.message_id.clone()));
                drop(inboxes);
                self.remember(&h.from, &h.message_id);
                Ok(())
            }
            None => Err(Error::Closed),
        }
    }

    /// True if `(from, id)` is among the recently handled upstream/receipts.
    pub(crate) fn is_duplicate(&self, from: &str, id: &str) -> bool {
        let d = lock(&self.dedup);
        d.cap > 0 && d.seen.contains(&(from.to_string(), id.to_string()))
    }

    /// Records `(from, id)` as handled (auto mode: on arrival; manual: on ack).
    pub(crate) fn remember(&self, from: &str, id: &str) {
        let mut d = lock(&self.dedup);
        if d.cap == 0 {
            return;
        }
        let key = (from.to_string(), id.to_string());
        if d.seen.insert(key.clone()) {
            d.order.push_back(key);
            while d.order.len() > d.cap {
                if let Some(old) = d.order.pop_front() {
                    d.seen.remove(&old);
                }
            }
        }
    }

    pub(crate) fn metrics(&self) -> Metrics {
        let c = &self.counters;
        let (queued, _) = {
            let st = lock(&self.state);
            (st.queue.len() + st.retries.len(), ())
        };
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Metrics {
            accepted: get(&c.accepted),
            sent: get(&c.sent),
            acked: get(&c.acked),
            nacked: lock(&self.nacked).clone(),
            rejected: get(&c.rejected),
            returned: get(&c.returned),
            retried: get(&c.retried),
            resent: get(&c.resent),
            reconnects: get(&c.reconnects),
            upstream: get(&c.upstream),
            receipts: get(&c.receipts),
            duplicates: get(&c.duplicates),
            pending: get(&c.pending),
            queued: queued as u64,
        }
    }

    // ----- worker side -----

    /// Events to the application, one channel message per batch.
    pub(crate) fn emit(&self, events: &mut Vec<ClientEvent>) {
        if events.is_empty() {
            return;
        }
        let batch = std::mem::take(events);
        let n = batch.len();
        let tx = lock(&self.tx);
        if let Some(tx) = tx.as_ref() {
            self.unread.fetch_add(n, Ordering::Relaxed);
            if tx.send(batch).is_err() {
                self.unread.fetch_sub(n, Ordering::Relaxed);
                log::debug!("{n} events dropped: the application dropped its event stream");
            }
        }
    }

    /// True while the application has fallen behind on reading events.
    pub(crate) fn backlogged(&self) -> bool {
        self.unread.load(Ordering::Relaxed) >= self.cfg.max_unread_events
    }

    pub(crate) fn count_nack(&self, code: &str) {
        *lock(&self.nacked).entry(code.to_string()).or_insert(0) += 1;
    }

    /// Up to `n` entries to send now: due retries first, then the queue.
    pub(crate) fn take(&self, n: usize, out: &mut Vec<Entry>) {
        if n == 0 {
            return;
        }
        let mut st = lock(&self.state);
        let now = Instant::now();
        while out.len() < n {
            match st.retries.peek() {
                Some(Reverse(d)) if d.at <= now => {
                    let Some(Reverse(d)) = st.retries.pop() else {
                        break;
                    };
                    out.push(d.entry);
                }
                _ => break,
            }
        }
        let before = st.queue.len();
        while out.len() < n {
            match st.queue.pop_front() {
                Some(e) => out.push(e),
                None => break,
            }
        }
        let took = before != st.queue.len();
        drop(st);
        if took {
            self.space.notify_all();
        }
    }

    /// True if `take` would return something now.
    pub(crate) fn has_work(&self) -> bool {
        let st = lock(&self.state);
        !st.queue.is_empty()
            || st
                .retries
                .peek()
                .is_some_and(|Reverse(d)| d.at <= Instant::now())
    }

    /// When the earliest scheduled retry is due.
    pub(crate) fn next_retry(&self) -> Option<Instant> {
        lock(&self.state).retries.peek().map(|Reverse(d)| d.at)
    }

    /// Puts entries back at the front of the queue, in `seq` order.
    pub(crate) fn requeue_front(&self, mut entries: Vec<Entry>) {
        if entries.is_empty() {
            return;
        }
        entries.sort_by_key(|e| e.seq);
        let mut st = lock(&self.state);
        for e in entries.into_iter().rev() {
            st.queue.push_front(e);
        }
        drop(st);
        self.work.notify_all();
    }

    pub(crate) fn schedule_retry(&self, entry: Entry, at: Instant) {
        lock(&self.state).retries.push(Reverse(Due { at, entry }));
        self.work.notify_all();
    }

    /// Waits until `until`, or until work arrives or the client stops.
    pub(crate) fn idle_wait(&self, until: Instant) {
        let st = lock(&self.state);
        let now = Instant::now();
        if now >= until || st.deadline.is_some() || st.fatal {
            return;
        }
        let _ = self.work.wait_timeout(st, until - now);
    }

    /// A new connection id with an empty manual-ack inbox.
    pub(crate) fn register_conn(&self) -> u64 {
        let id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        lock(&self.inboxes).insert(id, Vec::new());
        id
    }

    pub(crate) fn unregister_conn(&self, id: u64) {
        lock(&self.inboxes).remove(&id);
    }

    /// Manual acks waiting for connection `id`.
    pub(crate) fn take_acks(&self, id: u64, out: &mut Vec<(String, String)>) {
        if let Some(inbox) = lock(&self.inboxes).get_mut(&id) {
            out.append(inbox);
        }
    }

    /// Keeps a drainer's handle (joining the ones already finished).
    pub(crate) fn add_drainer(&self, h: JoinHandle<()>) {
        crate::threads::push_reaping(&mut lock(&self.drainers), h);
    }

    pub(crate) fn join_drainers(&self) {
        loop {
            let hs = std::mem::take(&mut *lock(&self.drainers));
            if hs.is_empty() {
                break;
            }
            for h in hs {
                let _ = h.join();
            }
        }
    }

    // ----- stopping -----

    /// The shutdown deadline, if shutting down.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        lock(&self.state).deadline
    }

    pub(crate) fn is_fatal(&self) -> bool {
        lock(&self.state).fatal
    }

    /// True when a slot has nothing left to do: stopped for good, past the
    /// shutdown deadline, or shutting down with nothing queued.
    pub(crate) fn slot_done(&self) -> bool {
        let st = lock(&self.state);
        if st.fatal {
            return true;
        }
        match st.deadline {
            Some(d) => Instant::now() >= d || (st.queue.is_empty() && st.retries.is_empty()),
            None => false,
        }
    }

    pub(crate) fn begin_shutdown(&self, deadline: Instant) {
        let mut st = lock(&self.state);
        st.accepting = false;
        st.deadline = Some(st.deadline.map_or(deadline, |d| d.min(deadline)));
        drop(st);
        self.space.notify_all();
        self.work.notify_all();
    }

    /// Pending entries a worker gave up at the deadline.
    pub(crate) fn add_leftovers(&self, entries: impl IntoIterator<Item = Entry>) {
        lock(&self.state).leftovers.extend(entries);
    }

    /// Everything without an outcome, in submission order; ends the client.
    pub(crate) fn take_leftovers(&self) -> Vec<Message> {
        let mut st = lock(&self.state);
        let mut all: Vec<Entry> = std::mem::take(&mut st.leftovers);
        all.extend(st.queue.drain(..));
        all.extend(
            std::mem::take(&mut st.retries)
                .into_iter()
                .map(|Reverse(d)| d.entry),
        );
        drop(st);
        all.sort_by_key(|e| e.seq);
        self.shut_down.store(true, Ordering::SeqCst);
        all.into_iter().map(|e| e.message).collect()
    }

    /// Drops the event sender: the stream ends once the application read what is left.
    pub(crate) fn close_events(&self) {
        lock(&self.tx).take();
    }

    pub(crate) fn is_shut_down(&self) -> bool {
        self.shut_down.load(Ordering::SeqCst)
    }

    /// A fatal error: report it once, stop accepting, return every queued message.
    pub(crate) fn fatal(&self, error: Error) {
        if self.fatal_reported.swap(true, Ordering::SeqCst) {
            return;
        }
        log::error!("client stopped: {error}");
        let text = error.to_string();
        let mut st = lock(&self.state);
        st.fatal = true;
        st.accepting = false;
        let mut entries: Vec<Entry> = st.queue.drain(..).collect();
        entries.extend(
            std::mem::take(&mut st.retries)
                .into_iter()
                .map(|Reverse(d)| d.entry),
        );
        drop(st);
        self.space.notify_all();
        self.work.notify_all();
        entries.sort_by_key(|e| e.seq);
        let mut events = vec![ClientEvent::Fatal { error }];
        let n = entries.len() as u64;
        events.extend(entries.into_iter().map(|e| ClientEvent::Returned {
            message: e.message,
            reason: ReturnReason::Fatal(text.clone()),
        }));
        self.counters.returned.fetch_add(n, Ordering::Relaxed);
        self.emit(&mut events);
    }

    /// Sends messages back as `Returned` events (dropping the last handle).
    pub(crate) fn emit_returned(&self, messages: Vec<Message>, reason: ReturnReason) {
        let n = messages.len() as u64;
        let mut events: Vec<ClientEvent> = messages
            .into_iter()
            .map(|message| ClientEvent::Returned {
                message,
                reason: reason.clone(),
            })
            .collect();
        self.counters.returned.fetch_add(n, Ordering::Relaxed);
        self.emit(&mut events);
    }
}
