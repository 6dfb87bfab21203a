//! The worker client: connection threads that ack on receive, keep each window
//! at most `max_pending`, retry, fail over on draining, reconnect and resend.
//!
//! Every message [`Client::send`] accepts ends in exactly one final outcome:
//! a [`ClientEvent::Delivered`], [`ClientEvent::Rejected`] or
//! [`ClientEvent::Returned`] event, or a place in the list
//! [`Client::shutdown`] returns. Nothing vanishes.

mod backoff;
pub(crate) mod cutoff;
pub mod engine;
mod link;
mod policy;
mod shared;
mod worker;

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

pub use backoff::Backoff;
pub use cutoff::CutOff;
pub use link::{Connector, Link, TlsConnector, Waker};

use crate::config::Config;
use crate::error::{Error, InvalidMessage, Result};
use crate::event::{Ack, Event, Nack, NackCode, Receipt, StanzaError, Upstream};
use crate::message::Message;
use shared::Shared;

/// How upstream messages and receipts are acked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckMode {
    /// Ack as soon as the event is parsed (at-most-once processing).
    Auto,
    /// The application acks with [`Client::ack`] after it handled the event
    /// (at-least-once processing). Events carry an [`AckHandle`].
    Manual,
}

/// Settings of the worker [`Client`], around the per-connection [`Config`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClientConfig {
    /// Endpoint, credentials, timeouts, window size of each connection.
    pub connection: Config,
    /// How many connections share the queue (each with its own window). Default 1.
    pub connections: usize,
    /// Messages waiting for a window slot before `send` blocks (scheduled
    /// retries and held ordered-group members included). Default 10,000.
    pub queue_capacity: usize,
    /// How upstream messages and receipts are acked. Default [`AckMode::Auto`].
    pub ack_mode: AckMode,
    /// Drop upstream messages and receipts whose `(from, message_id)` was seen
    /// among the last this-many (0 = off, the default); the client acks such a
    /// duplicate itself. A message counts as seen once its ack was written: in
    /// [`AckMode::Manual`], one whose [`Client::ack`] failed (its connection
    /// was gone) or was never called reaches the application again when CCS
    /// delivers it again.
    pub dedup_window: usize,
    /// Backoff for SERVICE_UNAVAILABLE / INTERNAL_SERVER_ERROR retries. Default 1 s .. 60 s.
    /// `initial` must not be zero and `max` not below it ([`Error::InvalidConfig`]
    /// naming `retry_backoff` at start).
    pub retry_backoff: Backoff,
    /// Retries after which a message is returned. Default 8. Only NACKs
    /// that ask for a retry with backoff (SERVICE_UNAVAILABLE,
    /// INTERNAL_SERVER_ERROR, unknown codes, rate limits with
    /// `rate_limited_retry`) count: a CONNECTION_DRAINING NACK is no failure
    /// of the message, which goes out again at once on another connection
    /// whatever this is, up to 16 times
    /// ([`ReturnReason::RetriesExhausted`] with that code after that).
    pub max_retries: u32,
    /// Backoff between failed connection attempts. Default 1 s .. 60 s.
    /// `initial` must not be zero and `max` not below it ([`Error::InvalidConfig`]
    /// naming `reconnect_backoff` at start).
    pub reconnect_backoff: Backoff,
    /// `None` (default): a rate-exceeded NACK is a final rejection. `Some(d)`:
    /// retry that message after `d` (counting against `max_retries`).
    pub rate_limited_retry: Option<Duration>,
    /// How long an I/O thread blocks in one read when its [`Link`] has no
    /// [`Waker`]: the most latency a newly queued message can wait there.
    /// Also how long an I/O thread pauses while the application is behind
    /// on reading events (`max_unread_events`). The connections of
    /// [`Client::start`] have a waker: a reader thread per connection wakes
    /// the I/O thread on input, and new work wakes it at once, so they never
    /// poll and this does not bound their latency. Default 2 ms.
    pub poll_interval: Duration,
    /// How long [`Client::send`] waits for queue space. Default 30 s.
    pub send_timeout: Duration,
    /// A draining connection the server never closes is closed after this
    /// and its pending messages resent. Default 5 min.
    pub drain_timeout: Duration,
    /// Unread events after which the client stops reading from the network
    /// until the application catches up. Default 100,000.
    pub max_unread_events: usize,
    /// How long dropping the last handle waits for pending messages. Default 10 s.
    pub drop_timeout: Duration,
    /// A connection that ends (or begins to drain) sooner than this after it
    /// was established counts as a failed attempt: the first such one is
    /// replaced at once, the next ones in a row wait for the reconnect
    /// backoff. One that lived longer is replaced at once. Default 10 s.
    pub stable_after: Duration,
    /// A message in flight on this many lost connections is returned
    /// ([`ReturnReason::ConnectionsLost`]): it is most likely what kills
    /// them. From its second loss on it is sent alone. Default 4.
    pub max_losses: u32,
}

impl ClientConfig {
    /// Defaults around `connection`.
    pub fn new(connection: Config) -> Self {
        ClientConfig {
            connection,
            connections: 1,
            queue_capacity: 10_000,
            ack_mode: AckMode::Auto,
            dedup_window: 0,
            retry_backoff: Backoff::default(),
            max_retries: 8,
            reconnect_backoff: Backoff::default(),
            rate_limited_retry: None,
            poll_interval: Duration::from_millis(2),
            send_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(300),
            max_unread_events: 100_000,
            drop_timeout: Duration::from_secs(10),
            stable_after: Duration::from_secs(10),
            max_losses: 4,
        }
    }

    /// Sets [`ClientConfig::connections`].
    pub fn connections(mut self, n: usize) -> Self {
        self.connections = n;
        self
    }
    /// Sets [`ClientConfig::queue_capacity`].
    pub fn queue_capacity(mut self, n: usize) -> Self {
        self.queue_capacity = n;
        self
    }
    /// Sets [`ClientConfig::ack_mode`].
    pub fn ack_mode(mut self, mode: AckMode) -> Self {
        self.ack_mode = mode;
        self
    }
    /// Sets [`ClientConfig::dedup_window`].
    pub fn dedup_window(mut self, n: usize) -> Self {
        self.dedup_window = n;
        self
    }
    /// Sets [`ClientConfig::retry_backoff`].
    pub fn retry_backoff(mut self, b: Backoff) -> Self {
        self.retry_backoff = b;
        self
    }
    /// Sets [`ClientConfig::max_retries`].
    pub fn max_retries(mut self, n: u32) -> Self {
        self.max_retries = n;
        self
    }
    /// Sets [`ClientConfig::reconnect_backoff`].
    pub fn reconnect_backoff(mut self, b: Backoff) -> Self {
        self.reconnect_backoff = b;
        self
    }
    /// Sets [`ClientConfig::rate_limited_retry`].
    pub fn rate_limited_retry(mut self, d: Option<Duration>) -> Self {
        self.rate_limited_retry = d;
        self
    }
    /// Sets [`ClientConfig::poll_interval`].
    pub fn poll_interval(mut self, d: Duration) -> Self {
        self.poll_interval = d;
        self
    }
    /// Sets [`ClientConfig::send_timeout`].
    pub fn send_timeout(mut self, d: Duration) -> Self {
        self.send_timeout = d;
        self
    }
    /// Sets [`ClientConfig::drain_timeout`].
    pub fn drain_timeout(mut self, d: Duration) -> Self {
        self.drain_timeout = d;
        self
    }
    /// Sets [`ClientConfig::max_unread_events`].
    pub fn max_unread_events(mut self, n: usize) -> Self {
        self.max_unread_events = n;
        self
    }
    /// Sets [`ClientConfig::drop_timeout`].
    pub fn drop_timeout(mut self, d: Duration) -> Self {
        self.drop_timeout = d;
        self
    }
    /// Sets [`ClientConfig::stable_after`].
    pub fn stable_after(mut self, d: Duration) -> Self {
        self.stable_after = d;
        self
    }
    /// Sets [`ClientConfig::max_losses`].
    pub fn max_losses(mut self, n: u32) -> Self {
        self.max_losses = n;
        self
    }

    fn validate(&self) -> Result<()> {
        self.connection.validate()?;
        let bad = |field: &'static str, reason: &str| {
            Err(Error::InvalidConfig {
                field,
                reason: reason.into(),
            })
        };
        if !(1..=64).contains(&self.connections) {
            return bad("connections", "must be 1..=64");
        }
        if self.queue_capacity == 0 {
            return bad("queue_capacity", "must be at least 1");
        }
        if self.poll_interval.is_zero() || self.poll_interval > Duration::from_secs(1) {
            return bad("poll_interval", "must be in (0, 1 s]");
        }
        if self.max_unread_events == 0 {
            return bad("max_unread_events", "must be at least 1");
        }
        if self.max_losses == 0 {
            return bad("max_losses", "must be at least 1");
        }
        for (field, b) in [
            ("retry_backoff", &self.retry_backoff),
            ("reconnect_backoff", &self.reconnect_backoff),
        ] {
            // A zero first delay retries (or reconnects) in a busy loop.
            if b.initial.is_zero() {
                return bad(field, "the initial delay must not be zero");
            }
            if b.max < b.initial {
                return bad(field, "max must be at least initial");
            }
        }
        Ok(())
    }
}

/// Why a message was refused for good.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rejection {
    /// A NACK whose code must not be retried (or a rate limit, by default).
    Nack(Nack),
    /// A stanza error (e.g. 400 bad-request).
    StanzaError(StanzaError),
    /// The connection refused to write it (validated at `send`; seen only
    /// if a connection's own check disagrees).
    Invalid(InvalidMessage),
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejection::Nack(n) => f.write_str(n.code.as_str()),
            Rejection::StanzaError(e) => write!(f, "stanza error {}", e.condition),
            Rejection::Invalid(e) => write!(f, "invalid: {e}"),
        }
    }
}

/// Why a message is handed back unsent.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ReturnReason {
    /// Retried `max_retries` times, or NACKed with CONNECTION_DRAINING once
    /// more after 16 resends for it (then the code is that one); the last
    /// NACK code.
    RetriesExhausted(NackCode),
    /// The client stopped for good (authentication refused, certificate
    /// refused, a worker thread failed): the error.
    Fatal(Arc<Error>),
    /// The message was in flight on this many lost connections
    /// ([`ClientConfig::max_losses`]); it may be what kills them.
    ConnectionsLost(u32),
    /// The last handle was dropped before the message got an outcome.
    ClientDropped,
}

impl PartialEq for ReturnReason {
    fn eq(&self, other: &Self) -> bool {
        use ReturnReason::*;
        match (self, other) {
            (RetriesExhausted(a), RetriesExhausted(b)) => a == b,
            // Errors are not comparable; the same text is the same reason.
            (Fatal(a), Fatal(b)) => a.to_string() == b.to_string(),
            (ConnectionsLost(a), ConnectionsLost(b)) => a == b,
            (ClientDropped, ClientDropped) => true,
            _ => false,
        }
    }
}
impl Eq for ReturnReason {}

impl fmt::Display for ReturnReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReturnReason::RetriesExhausted(code) => write!(f, "retries exhausted ({code})"),
            ReturnReason::Fatal(e) => write!(f, "client stopped: {e}"),
            ReturnReason::ConnectionsLost(n) => {
                write!(f, "in flight on {n} lost connections")
            }
            ReturnReason::ClientDropped => f.write_str("client dropped"),
        }
    }
}

/// Where to send a manual ack: the connection the event arrived on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckHandle {
    pub(crate) conn_id: u64,
    pub(crate) to: String,
    pub(crate) message_id: String,
    pub(crate) from: String,
}

impl AckHandle {
    /// The id of the message this handle acks.
    pub fn message_id(&self) -> &str {
        &self.message_id
    }

    /// Who sent the message this handle acks: the device for an upstream
    /// message, CCS itself for a receipt (its `from`).
    pub fn from(&self) -> &str {
        &self.from
    }

    /// The connection the message arrived on, the one its ack must go out on
    /// (the id [`Engine::connected`](engine::Engine::connected) gave it).
    pub fn connection(&self) -> engine::ConnId {
        self.conn_id
    }
}

/// What the worker reports to the application.
#[derive(Debug)]
#[non_exhaustive]
#[allow(clippy::large_enum_variant)] // outcomes hand the message back without a Box allocation
pub enum ClientEvent {
    /// Final: CCS acked the message.
    Delivered {
        /// The message.
        message: Message,
        /// The ACK (with a canonical `registration_id` to store, if any).
        ack: Ack,
    },
    /// Final: CCS refused the message and it must not be retried.
    Rejected {
        /// The message.
        message: Message,
        /// The NACK or stanza error.
        reason: Rejection,
    },
    /// Final: the message is handed back unsent.
    Returned {
        /// The message.
        message: Message,
        /// Why.
        reason: ReturnReason,
    },
    /// An upstream message from a device. In manual ack mode, ack it with
    /// [`Client::ack`] once handled.
    Upstream {
        /// The message.
        upstream: Upstream,
        /// The ack handle (manual mode only).
        ack: Option<AckHandle>,
    },
    /// A delivery receipt. In manual ack mode, ack it with [`Client::ack`].
    Receipt {
        /// The receipt.
        receipt: Receipt,
        /// The ack handle (manual mode only).
        ack: Option<AckHandle>,
    },
    /// A connection is established and authenticated.
    Connected {
        /// Which pool slot.
        slot: usize,
        /// The bound JID.
        jid: String,
    },
    /// A connection is draining: no new messages go to it; a replacement is
    /// opening (after the reconnect backoff if connections keep draining
    /// sooner than [`ClientConfig::stable_after`]: a `Reconnecting` follows).
    Draining {
        /// Which pool slot.
        slot: usize,
        /// The draining connection's JID.
        jid: String,
    },
    /// A connection closed (dropped, or a draining one finished); its
    /// pending messages are being resent.
    Lost {
        /// Which pool slot.
        slot: usize,
        /// The connection's JID.
        jid: String,
        /// What ended it ([`Error::Closed`] when we closed it ourselves).
        error: Arc<Error>,
        /// How many pending messages go to be resent.
        resent: usize,
    },
    /// A connection attempt failed (or a connection ended sooner than
    /// [`ClientConfig::stable_after`]); the next attempt is after `delay`.
    Reconnecting {
        /// Which pool slot.
        slot: usize,
        /// Consecutive failed attempts.
        attempt: u32,
        /// Wait before the next attempt.
        delay: Duration,
        /// Why the attempt failed (or what ended a short-lived connection).
        error: Arc<Error>,
    },
    /// The client stopped for good (authentication refused, certificate
    /// refused, bad config). Reported once; queued messages are returned.
    Fatal {
        /// The error.
        error: Arc<Error>,
    },
    /// Any other event from the server (unknown control or message types).
    Other(Event),
}

impl ClientEvent {
    /// True for the three final outcomes of a message.
    pub fn is_outcome(&self) -> bool {
        matches!(
            self,
            ClientEvent::Delivered { .. }
                | ClientEvent::Rejected { .. }
                | ClientEvent::Returned { .. }
        )
    }

    /// The message of an outcome event.
    pub fn message(&self) -> Option<&Message> {
        match self {
            ClientEvent::Delivered { message, .. }
            | ClientEvent::Rejected { message, .. }
            | ClientEvent::Returned { message, .. } => Some(message),
            _ => None,
        }
    }
}

/// A snapshot of the client's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Metrics {
    /// Messages accepted by `send`/`try_send`.
    pub accepted: u64,
    /// Stanzas written (first sends, retries and resends).
    pub sent: u64,
    /// Final: delivered.
    pub acked: u64,
    /// NACKs received, by code (retried ones included).
    pub nacked: BTreeMap<String, u64>,
    /// Final: rejected.
    pub rejected: u64,
    /// Final: returned by the worker (not counting `shutdown`'s list).
    pub returned: u64,
    /// Retries scheduled after a NACK.
    pub retried: u64,
    /// Messages resent after a connection was lost or drained.
    pub resent: u64,
    /// Connections established after the first.
    pub reconnects: u64,
    /// Upstream messages received (after dedup).
    pub upstream: u64,
    /// Receipts received (after dedup).
    pub receipts: u64,
    /// Upstream messages and receipts dropped as duplicates.
    pub duplicates: u64,
    /// Messages sent and waiting for ack/nack, all connections.
    pub pending: u64,
    /// Messages waiting for a window slot (incl. scheduled retries and
    /// ordered-group members waiting for the one before them).
    pub queued: u64,
    /// Of `queued`, the ordered-group members waiting for the one before
    /// them to get its outcome.
    pub held: u64,
}

/// Why `send` gave the message back.
#[derive(Debug)]
#[non_exhaustive]
pub enum SendErrorKind {
    /// The message is invalid; fix it.
    Invalid(InvalidMessage),
    /// The queue stayed full for the whole timeout (or, for `try_send`, is full now).
    Full,
    /// The client is shut down or stopped for good.
    Closed,
}

/// A refused `send`: why, and the message itself.
#[derive(Debug)]
pub struct SendError {
    /// Why.
    pub kind: SendErrorKind,
    /// The message, handed back.
    pub message: Box<Message>,
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            SendErrorKind::Invalid(e) => e.fmt(f),
            SendErrorKind::Full => f.write_str("client queue is full: try again later"),
            SendErrorKind::Closed => f.write_str("client is shut down"),
        }
    }
}

impl std::error::Error for SendError {}

/// The application's end of the event stream. Iterating blocks for the next
/// event and ends once the client has stopped and every event was read.
#[derive(Debug)]
pub struct Events {
    rx: Receiver<Vec<ClientEvent>>,
    buf: VecDeque<ClientEvent>,
    shared: Arc<Shared>,
}

impl Events {
    fn take(&mut self) -> Option<ClientEvent> {
        let e = self.buf.pop_front()?;
        self.shared.unread.fetch_sub(1, Ordering::Relaxed);
        Some(e)
    }

    /// Blocks for the next event; `None` once the client stopped and all were read.
    pub fn recv(&mut self) -> Option<ClientEvent> {
        if self.buf.is_empty() {
            let batch = self.rx.recv().ok()?;
            self.buf.extend(batch);
        }
        self.take()
    }

    /// Waits at most `timeout` for the next event.
    ///
    /// # Errors
    /// `Timeout` when none arrived; `Disconnected` when the client stopped and all were read.
    pub fn recv_timeout(
        &mut self,
        timeout: Duration,
    ) -> std::result::Result<ClientEvent, RecvTimeoutError> {
        if self.buf.is_empty() {
            let batch = self.rx.recv_timeout(timeout)?;
            self.buf.extend(batch);
        }
        self.take().ok_or(RecvTimeoutError::Timeout)
    }

    /// The next event if one is ready.
    ///
    /// # Errors
    /// `Empty` or `Disconnected`.
    pub fn try_recv(&mut self) -> std::result::Result<ClientEvent, TryRecvError> {
        if self.buf.is_empty() {
            let batch = self.rx.try_recv()?;
            self.buf.extend(batch);
        }
        self.take().ok_or(TryRecvError::Empty)
    }
}

impl Iterator for Events {
    type Item = ClientEvent;
    fn next(&mut self) -> Option<ClientEvent> {
        self.recv()
    }
}

/// A cheap, cloneable, `Send` handle to the worker threads.
///
/// ```
/// # #[cfg(feature = "emulator")] {
/// use fcm_xmpp::client::{Client, ClientConfig, ClientEvent};
/// use fcm_xmpp::Message;
/// use std::time::Duration;
/// let emulator = fcm_xmpp::Emulator::start("123456789012", "key").unwrap();
/// let (client, mut events) = Client::start(ClientConfig::new(emulator.client_config())).unwrap();
/// client.send(Message::to("device-token").data("k", "v")).unwrap();
/// loop {
///     match events.recv_timeout(Duration::from_secs(10)).unwrap() {
///         ClientEvent::Delivered { .. } => break,
///         other => println!("{other:?}"),
///     }
/// }
/// assert!(client.shutdown(Duration::from_secs(5)).is_empty());
/// # emulator.shutdown();
/// # mod judge { include!("../../tests/common/judge_core.rs"); }
/// # let bytes = emulator.client_bytes();
/// # assert!(!bytes.is_empty() && bytes.iter().all(|r| r.complete));
/// # judge::check_all(bytes.iter().map(|r| (format!("{:?}", r.conn), &r.bytes[..]))).unwrap();
/// # }
/// ```
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("metrics", &self.metrics())
            .finish_non_exhaustive()
    }
}

struct Inner {
    shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// How long past its deadline [`Client::shutdown`] waits for worker threads
/// before it returns anyway (they end on their own soon after).
const SHUTDOWN_MARGIN: Duration = Duration::from_millis(100);

impl Client {
    /// Starts the worker threads (one per connection) and returns the handle
    /// and the event stream. Connections are opened in the background; watch
    /// for [`ClientEvent::Connected`] or [`ClientEvent::Fatal`].
    ///
    /// # Errors
    /// [`Error::InvalidConfig`]; [`Error::Io`] if a thread cannot be spawned.
    pub fn start(config: ClientConfig) -> Result<(Client, Events)> {
        let connector = TlsConnector::new(config.connection.clone());
        Client::start_with(config, connector)
    }

    /// Like [`start`](Self::start), but reaches the network through
    /// `connector`: for example in-memory connections to a simulated server.
    ///
    /// # Errors
    /// As [`start`](Self::start).
    pub fn start_with(
        config: ClientConfig,
        connector: impl Connector + 'static,
    ) -> Result<(Client, Events)> {
        config.validate()?;
        let (tx, rx) = mpsc::channel();
        let seed = backoff::random_u64();
        let shared = Arc::new(Shared::new(config, Box::new(connector), tx, seed));
        let mut threads = Vec::new();
        for slot in 0..shared.cfg.connections {
            let s = Arc::clone(&shared);
            shared.thread_started();
            let spawned = thread::Builder::new()
                .name(format!("fcm-xmpp-conn-{slot}"))
                .spawn(move || worker::run_slot(s, slot));
            match spawned {
                Ok(h) => threads.push(h),
                Err(e) => {
                    shared.thread_ended();
                    shared.engine().shutdown(Instant::now());
                    shared.notify_changed();
                    shared.wake_links();
                    for t in threads {
                        let _ = t.join();
                    }
                    return Err(e.into());
                }
            }
        }
        let events = Events {
            rx,
            buf: VecDeque::new(),
            shared: Arc::clone(&shared),
        };
        let client = Client {
            inner: Arc::new(Inner {
                shared,
                threads: Mutex::new(threads),
            }),
        };
        Ok((client, events))
    }

    /// Queues a message, waiting up to `send_timeout` for queue space; returns its id.
    ///
    /// Messages with the same [`Message::group`] key go to CCS strictly one
    /// after another, in the order `send` accepted them: the next is written
    /// only once the previous one has its final outcome (delivered, rejected
    /// or returned), through every retry, resend and reconnect. Meanwhile
    /// other groups and ungrouped messages flow on; the waiting members count
    /// against [`ClientConfig::queue_capacity`].
    ///
    /// # Errors
    /// [`SendError`] with the message handed back: invalid, queue full, or closed.
    pub fn send(&self, message: Message) -> std::result::Result<String, SendError> {
        let t = self.inner.shared.cfg.send_timeout;
        self.send_timeout(message, t)
    }

    /// Queues a message, waiting up to `timeout` for queue space (any
    /// duration; a huge one waits as long as it takes).
    ///
    /// # Errors
    /// As [`send`](Self::send).
    pub fn send_timeout(
        &self,
        message: Message,
        timeout: Duration,
    ) -> std::result::Result<String, SendError> {
        self.inner
            .shared
            .submit(message, Some(engine::later(Instant::now(), timeout)))
    }

    /// Queues a message only if there is room now; never blocks.
    ///
    /// # Errors
    /// As [`send`](Self::send).
    pub fn try_send(&self, message: Message) -> std::result::Result<String, SendError> {
        self.inner.shared.submit(message, None)
    }

    /// Acks an upstream message or receipt (manual ack mode) on the
    /// connection it arrived on, and returns once the ack is written.
    ///
    /// # Errors
    /// [`Error::Closed`] when that connection ended before the ack was
    /// written: CCS will deliver the message again on another connection.
    /// [`Error::Timeout`]`(Phase::Write)` if it was not written within the
    /// write timeout.
    pub fn ack(&self, handle: &AckHandle) -> Result<()> {
        let mut results = self.inner.shared.manual_acks(&[handle]);
        results.pop().unwrap_or(Err(Error::Closed))
    }

    /// Acks several upstream messages or receipts (manual ack mode) at once:
    /// every ack is queued first, each connection is woken once and writes
    /// its acks together, and the call returns when each ack is written or
    /// cannot be. Returns one result per handle, in the order given, each as
    /// [`ack`](Self::ack) would return it. Cheaper than calling `ack` in a
    /// loop, which waits for one write per handle.
    pub fn ack_all<'a>(&self, handles: impl IntoIterator<Item = &'a AckHandle>) -> Vec<Result<()>> {
        let handles: Vec<&AckHandle> = handles.into_iter().collect();
        self.inner.shared.manual_acks(&handles)
    }

    /// A snapshot of the counters.
    pub fn metrics(&self) -> Metrics {
        self.inner.shared.metrics()
    }

    /// Stops accepting messages, waits until every pending and queued message
    /// has an outcome or `timeout` passed, closes every stream and returns
    /// the messages that never got an outcome, in the order they were
    /// accepted. Nothing new is written after the deadline, and the call
    /// returns soon after it. A close in progress is cut short; so is a
    /// connection attempt in progress: it stops at the deadline at the
    /// latest and completes no authentication after it (the connector sees
    /// the deadline through its [`CutOff`]; with [`TlsConnector`] the TCP
    /// connect itself is bounded by the connect timeout). Applies to every
    /// clone of this handle.
    pub fn shutdown(self, timeout: Duration) -> Vec<Message> {
        let left = self.inner.shutdown(timeout);
        self.inner.shared.close_events();
        left
    }
}

impl Inner {
    fn shutdown(&self, timeout: Duration) -> Vec<Message> {
        let deadline = engine::later(Instant::now(), timeout);
        self.shared.engine().shutdown(deadline);
        // A connection attempt in progress stops at the deadline too.
        self.shared.cut_off.set(deadline);
        self.shared.notify_changed();
        self.shared.wake_links();
        self.shared.notify_space();
        let until = engine::later(deadline, SHUTDOWN_MARGIN);
        let all_ended = self.shared.wait_threads(until);
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        for t in threads {
            if all_ended || t.is_finished() {
                let _ = t.join();
            }
        }
        if !all_ended {
            log::warn!(
                "shutdown: worker threads still busy at the deadline; left to end on their own"
            );
        }
        let mut events = Vec::new();
        let left = {
            let mut eng = self.shared.engine();
            let left = eng.finish();
            eng.take_events(&mut events);
            left
        };
        self.shared.emit(&mut events);
        self.shared.notify_changed();
        left
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if self.shared.engine().is_finished() {
            return;
        }
        let left = self.shutdown(self.shared.cfg.drop_timeout);
        if !left.is_empty() {
            log::warn!(
                "client dropped without shutdown: {} messages returned as events",
                left.len()
            );
            let mut events: Vec<ClientEvent> = left
                .into_iter()
                .map(|message| ClientEvent::Returned {
                    message,
                    reason: ReturnReason::ClientDropped,
                })
                .collect();
            self.shared.emit(&mut events);
        }
        self.shared.close_events();
    }
}
