//! The journal-owner thread. It owns the store and the table of logged-on sessions;
//! everyone else sends it jobs. It drains every job queued, runs them in order,
//! commits once (one write + one fsync for the whole batch: group commit), and only
//! then runs their second halves, which write to apps and answer the callers.
//!
//! A job's first half decides (is this id new? is its session logged on?) and changes
//! the store; its second half acts (queues lines for apps). Because both halves run on
//! this one thread, in job order, a record put before a LOGON is found by that LOGON's
//! scan and one put after it goes straight to the app: each line is queued once.

use std::collections::{HashMap, VecDeque};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use crate::proto;
use crate::store::Store;

/// What a writer thread gets: a line, and the journal key to remove once it was flushed
/// to the app (outcomes and receipts; upstream messages wait for the app's `ACK`).
pub struct Out {
    pub line: String,
    pub remove_after_flush: Option<String>,
}

impl Out {
    /// A line that leaves nothing to remove.
    pub fn plain(line: String) -> Out {
        Out {
            line,
            remove_after_flush: None,
        }
    }
}

/// Lines for apps, gathered per session in order, queued after the commit: one queue
/// entry per session per batch, however many lines.
#[derive(Default)]
pub struct Mail(Vec<(String, Vec<Out>)>);

impl Mail {
    pub fn push(&mut self, session: &str, out: Out) {
        match self.0.iter_mut().find(|(s, _)| s == session) {
            Some((_, v)) => v.push(out),
            None => self.0.push((session.to_string(), vec![out])),
        }
    }

    /// The second half that queues it all.
    pub fn into_done(self) -> Done {
        Box::new(move |st: &mut State| {
            for (s, outs) in self.0 {
                st.deliver(&s, outs);
            }
        })
    }
}

/// What a writer thread takes from its queue.
pub struct Entry {
    pub outs: Vec<Out>,
    /// Counted against the queue's line limit (a LOGON backlog, already held in memory
    /// by the journal, is not).
    counted: bool,
}

/// An app's writer queue: at most `limit` lines queued, not counting a LOGON backlog.
#[derive(Clone)]
pub struct Outbox {
    tx: SyncSender<Entry>,
    queued: Arc<AtomicUsize>,
    limit: usize,
}

impl Outbox {
    /// The queue and the writer's end.
    pub fn new(limit: usize) -> (Outbox, Receiver<Entry>, Arc<AtomicUsize>) {
        let (tx, rx) = mpsc::sync_channel(limit);
        let queued = Arc::new(AtomicUsize::new(0));
        let q = Arc::clone(&queued);
        (Outbox { tx, queued, limit }, rx, q)
    }

    /// Queues `outs`; false if that would pass the limit (a batch of any size goes into
    /// an empty queue) or the writer is gone.
    pub fn push(&self, outs: Vec<Out>, counted: bool) -> bool {
        let n = if counted { outs.len() } else { 0 };
        let before = self.queued.fetch_add(n, Ordering::AcqRel);
        if before > 0 && before + n > self.limit {
            self.queued.fetch_sub(n, Ordering::AcqRel);
            return false;
        }
        match self.tx.try_send(Entry { outs, counted }) {
            Ok(()) => true,
            Err(_) => {
                self.queued.fetch_sub(n, Ordering::AcqRel);
                false
            }
        }
    }
}

impl Entry {
    /// Lines of this entry that counted against the limit.
    pub fn counted(&self) -> usize {
        if self.counted {
            self.outs.len()
        } else {
            0
        }
    }
}

/// A logged-on app.
pub struct Session {
    /// Which connection (a second connection's logoff must not end the first's session).
    pub conn: u64,
    pub outbox: Outbox,
    /// A clone of its socket, to cut off an app whose queue is full.
    pub stream: TcpStream,
}

/// What a job's second half does, after the commit.
pub type Done = Box<dyn FnOnce(&mut State) + Send>;
type Job = Box<dyn FnOnce(&mut State) -> Done + Send>;

/// The store, the logged-on sessions and an index of upstream records by app-visible id.
pub struct State {
    pub store: Store,
    pub sessions: HashMap<String, Session>,
    /// `(session, upstream message_id)` -> journal keys, oldest first: an app's `ACK`
    /// names only the message id.
    upstream: HashMap<(String, String), VecDeque<String>>,
    stopping: bool,
    /// Commits that wrote something, and the records they held.
    commits: u64,
    records: u64,
}

impl State {
    /// Wraps `store`, indexing the upstream records it holds.
    pub fn new(store: Store) -> State {
        let mut st = State {
            store,
            sessions: HashMap::new(),
            upstream: HashMap::new(),
            stopping: false,
            commits: 0,
            records: 0,
        };
        let keys: Vec<String> = st
            .store
            .entries()
            .filter(|(k, _)| proto::up_key_ids(k).is_some())
            .map(|(k, _)| k.to_string())
            .collect();
        for k in keys {
            st.index_upstream(&k);
        }
        st
    }

    fn index_upstream(&mut self, key: &str) {
        if let Some((s, mid)) = proto::up_key_ids(key) {
            self.upstream
                .entry((s.to_string(), mid.to_string()))
                .or_default()
                .push_back(key.to_string());
        }
    }

    /// Puts an upstream record (key from [`proto::up_key`]); false if it was there.
    pub fn put_upstream(&mut self, key: &str, line: &str) -> bool {
        if self.store.get(key).is_some() {
            return false;
        }
        self.store.put(key, line.as_bytes());
        self.index_upstream(key);
        true
    }

    /// Removes the oldest upstream record of `session` with `message_id`; false if none.
    pub fn ack_upstream(&mut self, session: &str, message_id: &str) -> bool {
        let id = (session.to_string(), message_id.to_string());
        let Some(keys) = self.upstream.get_mut(&id) else {
            return false;
        };
        let key = keys.pop_front();
        if keys.is_empty() {
            self.upstream.remove(&id);
        }
        match key {
            Some(k) => {
                self.store.remove(&k);
                true
            }
            None => false,
        }
    }

    pub fn logged_on(&self, session: &str) -> bool {
        self.sessions.contains_key(session)
    }

    /// Queues `outs` for `session`'s app. An app whose queue is full is cut off (its
    /// records stay in the journal for its next LOGON). False if not queued.
    pub fn deliver(&mut self, session: &str, outs: Vec<Out>) -> bool {
        self.queue(session, outs, true)
    }

    /// Like [`State::deliver`] for a LOGON backlog (not counted against the limit).
    pub fn deliver_backlog(&mut self, session: &str, outs: Vec<Out>) -> bool {
        self.queue(session, outs, false)
    }

    fn queue(&mut self, session: &str, outs: Vec<Out>, counted: bool) -> bool {
        let Some(s) = self.sessions.get(session) else {
            return false;
        };
        if outs.is_empty() || s.outbox.push(outs, counted) {
            return true;
        }
        log::warn!("session {session}: app too slow (queue full), disconnecting it");
        self.kick(session);
        false
    }

    /// Logs `session` off and shuts its socket.
    pub fn kick(&mut self, session: &str) {
        if let Some(s) = self.sessions.remove(session) {
            let _ = s.stream.shutdown(Shutdown::Both);
        }
    }

    /// The lines held for `session`, in first-put order: outcomes and receipts (removed
    /// once flushed) and upstream messages (removed on the app's `ACK`).
    pub fn held(&self, session: &str) -> Vec<Out> {
        let mut out = Vec::new();
        for (key, value) in self.store.entries() {
            let Some((kind, s)) = proto::key_session(key) else {
                continue;
            };
            if s != session {
                continue;
            }
            let (line, remove) = match (kind, value.split_first()) {
                ('d', Some((b'O', rest))) => (rest, true),
                ('d', _) => continue, // pending: its outcome comes later
                ('u', _) => (value, false),
                ('r', _) => (value, true),
                _ => continue,
            };
            if let Ok(line) = std::str::from_utf8(line) {
                out.push(Out {
                    line: line.to_string(),
                    remove_after_flush: remove.then(|| key.to_string()),
                });
            }
        }
        out
    }
}

/// A handle on the journal-owner thread.
#[derive(Clone)]
pub struct Handle {
    tx: Sender<Job>,
}

/// Starts the owner thread with `state`. A failed commit stops the process (exit 1):
/// nothing of that batch was acknowledged to anyone.
pub fn start(state: State) -> (Handle, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel::<Job>();
    let t = thread::Builder::new()
        .name("journal".into())
        .spawn(move || run(state, rx))
        .expect("spawn the journal thread");
    (Handle { tx }, t)
}

/// Jobs taken into one commit at most.
const MAX_BATCH: usize = 8192;
/// A batch that grows past this many bytes is committed before the next job runs
/// (the journal refuses batches past 1 GiB).
const MAX_BATCH_BYTES: usize = 64 << 20;

/// Commits, then runs the second halves of the jobs it covered.
fn finish(state: &mut State, dones: &mut Vec<Done>) {
    match state.store.commit() {
        Ok(0) => {}
        Ok(n) => {
            state.commits += 1;
            state.records += n as u64;
        }
        Err(e) => crate::common::die(format!("journal commit failed: {e}")),
    }
    for d in dones.drain(..) {
        d(state);
    }
}

fn run(mut state: State, rx: Receiver<Job>) {
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        let mut dones: Vec<Done> = Vec::with_capacity(jobs.len());
        for job in jobs {
            dones.push(job(&mut state));
            if state.store.pending() > MAX_BATCH_BYTES {
                finish(&mut state, &mut dones);
            }
        }
        finish(&mut state, &mut dones);
        if state.stopping {
            break;
        }
    }
    for (_, s) in state.sessions.drain() {
        let _ = s.stream.shutdown(Shutdown::Both);
    }
    eprintln!(
        "journal: {} commits, {} records ({:.1} per commit), {} records left",
        state.commits,
        state.records,
        state.records as f64 / state.commits.max(1) as f64,
        state.store.len()
    );
}

impl Handle {
    /// Runs `f` on the owner thread, then its returned second half after the commit;
    /// returns the first half's result once the commit is done. `None` if the thread
    /// has stopped.
    pub fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut State) -> (R, Option<Done>) + Send + 'static,
    ) -> Option<R> {
        let (tx, rx) = mpsc::sync_channel(1);
        let job: Job = Box::new(move |st| {
            let (r, done) = f(st);
            Box::new(move |st: &mut State| {
                if let Some(d) = done {
                    d(st);
                }
                let _ = tx.send(r);
            })
        });
        self.tx.send(job).ok()?;
        rx.recv().ok()
    }

    /// Like [`Handle::call`] without waiting for the commit.
    pub fn post(&self, f: impl FnOnce(&mut State) + Send + 'static) {
        let job: Job = Box::new(move |st| {
            f(st);
            Box::new(|_: &mut State| {})
        });
        let _ = self.tx.send(job);
    }

    /// Stops the owner thread after the jobs queued before this one.
    pub fn stop(&self) {
        self.post(|st| st.stopping = true);
    }
}
