//! What the handle and the worker threads share: the engine behind one lock,
//! the condition variables that wake waiters, the event channel, the
//! connector and the thread bookkeeping.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::cutoff::CutOff;
use super::engine::{later, AckState, ConnId, Engine};
use super::link::{Connector, Waker};
use super::{AckHandle, ClientConfig, ClientEvent, Metrics, SendError, SendErrorKind};
use crate::error::{Error, Phase, Result};
use crate::message::Message;

pub(crate) struct Shared {
    pub(crate) cfg: ClientConfig,
    engine: Mutex<Engine>,
    /// Signalled when queue space frees up or the client stops.
    space: Condvar,
    /// Signalled on shutdown, fatal errors, written manual acks and ended
    /// connections: wakes slots waiting to reconnect and `Client::ack`.
    changed: Condvar,
    tx: Mutex<Option<Sender<Vec<ClientEvent>>>>,
    pub(crate) unread: AtomicUsize,
    pub(crate) connector: Box<dyn Connector>,
    /// The shutdown deadline, for the connection attempts in progress.
    pub(crate) cut_off: CutOff,
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// Worker threads still running, and the signal when one ends.
    live: Mutex<usize>,
    ended: Condvar,
    /// The wakers of the connections being driven, to tell their I/O
    /// threads about new work.
    wakers: Mutex<Vec<(ConnId, Waker)>>,
    /// Passes through the I/O loops of all connections (a test hook: an
    /// idle connection must not make any).
    pub(crate) io_passes: AtomicU64,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A worker that panicked must not take the others down with it.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    pub(crate) fn new(
        cfg: ClientConfig,
        connector: Box<dyn Connector>,
        tx: Sender<Vec<ClientEvent>>,
        seed: u64,
    ) -> Self {
        let engine = Engine::new(&cfg, seed, Instant::now());
        Shared {
            cfg,
            engine: Mutex::new(engine),
            space: Condvar::new(),
            changed: Condvar::new(),
            tx: Mutex::new(Some(tx)),
            unread: AtomicUsize::new(0),
            connector,
            cut_off: CutOff::new(),
            threads: Mutex::new(Vec::new()),
            live: Mutex::new(0),
            ended: Condvar::new(),
            wakers: Mutex::new(Vec::new()),
            io_passes: AtomicU64::new(0),
        }
    }

    pub(crate) fn engine(&self) -> MutexGuard<'_, Engine> {
        lock(&self.engine)
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
        let id = message.id().to_string();
        let mut eng = self.engine();
        let mut message = message;
        loop {
            // Only the first message into an empty queue wakes an I/O thread,
            // and only one: the connection with the most room. If it cannot take
            // everything that queues up, it wakes the next one with room (see
            // the worker's step); a connection with a full window takes more
            // when its acks arrive. A busy client makes no wake-up per message,
            // and a pool is not woken whole for every message.
            let was_empty = eng.ready() == 0;
            match eng.accept(message) {
                Ok(()) => {
                    let wake = if was_empty { eng.roomiest(None) } else { None };
                    drop(eng);
                    if let Some(conn) = wake {
                        self.wake_link(conn);
                    }
                    return Ok(id);
                }
                Err((m, SendErrorKind::Full)) => {
                    let now = Instant::now();
                    match deadline {
                        Some(d) if now < d => {
                            message = m;
                            eng = self
                                .space
                                .wait_timeout(eng, d - now)
                                .unwrap_or_else(|e| e.into_inner())
                                .0;
                        }
                        _ => {
                            drop(eng);
                            return refuse(SendErrorKind::Full, m);
                        }
                    }
                }
                Err((m, kind)) => {
                    drop(eng);
                    return refuse(kind, m);
                }
            }
        }
    }

    /// Queues a manual ack and waits until it is written (or its connection
    /// ends, or the write timeout passes).
    /// Queues the manual acks of `handles` together (one wake-up per
    /// connection) and waits until each is written, its connection ended, or
    /// the write timeout passed. One result per handle, in order.
    pub(crate) fn manual_acks(&self, handles: &[&AckHandle]) -> Vec<Result<()>> {
        let mut eng = self.engine();
        // `None`: queued, not yet known to be written.
        let mut done: Vec<Option<Result<()>>> = Vec::with_capacity(handles.len());
        let mut tickets = Vec::with_capacity(handles.len());
        let mut woken: Vec<ConnId> = Vec::new();
        for h in handles {
            match eng.manual_ack(h) {
                Ok(ticket) => {
                    done.push(None);
                    tickets.push(ticket);
                    if !woken.contains(&h.conn_id) {
                        woken.push(h.conn_id);
                        self.wake_link(h.conn_id);
                    }
                }
                Err(e) => {
                    done.push(Some(Err(e)));
                    tickets.push(0);
                }
            }
        }
        let wait = self
            .cfg
            .connection
            .timeouts
            .write
            .unwrap_or(Duration::from_secs(30));
        let deadline = later(Instant::now(), wait);
        loop {
            let mut open = false;
            for ((h, ticket), slot) in handles.iter().zip(&tickets).zip(done.iter_mut()) {
                if slot.is_some() {
                    continue;
                }
                match eng.ack_state(h.conn_id, *ticket) {
                    AckState::Written => *slot = Some(Ok(())),
                    AckState::Gone => *slot = Some(Err(Error::Closed)),
                    AckState::Queued => open = true,
                }
            }
            let now = Instant::now();
            if !open || now >= deadline {
                break;
            }
            eng = self
                .changed
                .wait_timeout(eng, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        done.into_iter()
            .map(|r| r.unwrap_or(Err(Error::Timeout(Phase::Write))))
            .collect()
    }

    pub(crate) fn metrics(&self) -> Metrics {
        self.engine().metrics()
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

    /// Wakes senders waiting for room.
    pub(crate) fn notify_space(&self) {
        self.space.notify_all();
    }

    /// Wakes waiting slots and manual acks.
    pub(crate) fn notify_changed(&self) {
        self.changed.notify_all();
    }

    /// Waits until `until` (or until woken) with the engine lock held.
    pub(crate) fn wait_changed<'a>(
        &self,
        eng: MutexGuard<'a, Engine>,
        until: Option<Instant>,
    ) -> MutexGuard<'a, Engine> {
        // Re-check at least once a second whatever happens.
        let cap = Duration::from_secs(1);
        let wait = until.map_or(cap, |u| {
            u.saturating_duration_since(Instant::now()).min(cap)
        });
        if wait.is_zero() {
            return eng;
        }
        self.changed
            .wait_timeout(eng, wait)
            .unwrap_or_else(|e| e.into_inner())
            .0
    }

    /// Registers the waker of connection `id` (until [`drop_waker`](Self::drop_waker)).
    pub(crate) fn add_waker(&self, id: ConnId, waker: Waker) {
        lock(&self.wakers).push((id, waker));
    }

    /// Forgets the waker of connection `id`.
    pub(crate) fn drop_waker(&self, id: ConnId) {
        lock(&self.wakers).retain(|(c, _)| *c != id);
    }

    /// Tells every connection's I/O thread to look at the engine: new
    /// messages, requeued ones, shutdown. Coalesced per connection.
    pub(crate) fn wake_links(&self) {
        for (_, w) in lock(&self.wakers).iter() {
            w.wake();
        }
    }

    /// Tells the I/O threads of every connection but `id` to look at the engine.
    pub(crate) fn wake_others(&self, id: ConnId) {
        for (_, w) in lock(&self.wakers).iter().filter(|(c, _)| *c != id) {
            w.wake();
        }
    }

    /// Tells the I/O thread of connection `id` to look at the engine.
    pub(crate) fn wake_link(&self, id: ConnId) {
        for (_, w) in lock(&self.wakers).iter().filter(|(c, _)| *c == id) {
            w.wake();
        }
    }

    // ----- threads -----

    /// Counts a worker thread in; [`thread_ended`](Self::thread_ended) counts it out.
    pub(crate) fn thread_started(&self) {
        *lock(&self.live) += 1;
    }

    /// A worker thread ends: once a fatal error left the engine nothing to
    /// do, the event stream ends too (shutdown ends it itself, after the
    /// last events).
    pub(crate) fn thread_ended(&self) {
        let done = {
            let eng = self.engine();
            eng.is_fatal() && eng.is_done()
        };
        let mut live = lock(&self.live);
        *live = live.saturating_sub(1);
        let last = *live == 0;
        drop(live);
        if last && done {
            self.close_events();
        }
        self.ended.notify_all();
        self.changed.notify_all();
        self.space.notify_all();
    }

    /// Keeps a thread's handle (joining the ones already finished).
    pub(crate) fn add_thread(&self, h: JoinHandle<()>) {
        crate::threads::push_reaping(&mut lock(&self.threads), h);
    }

    /// Waits until every worker thread ended or `until` passed; joins the
    /// ended ones and leaves the rest running detached (they stop on their
    /// own once they see the engine finished). True if all ended.
    pub(crate) fn wait_threads(&self, until: Instant) -> bool {
        let mut live = lock(&self.live);
        while *live > 0 {
            let now = Instant::now();
            if now >= until {
                break;
            }
            live = self
                .ended
                .wait_timeout(live, until - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        let all = *live == 0;
        drop(live);
        let hs = std::mem::take(&mut *lock(&self.threads));
        for h in hs {
            if all || h.is_finished() {
                let _ = h.join();
            }
        }
        all
    }

    /// Drops the event sender: the stream ends once the application read what is left.
    pub(crate) fn close_events(&self) {
        lock(&self.tx).take();
    }
}
