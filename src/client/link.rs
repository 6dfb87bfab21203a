//! How the worker reaches the network: a [`Connector`] opens [`Link`]s.
//!
//! [`Client::start`](super::Client::start) uses [`TlsConnector`] (TLS to the
//! configured endpoint); [`Client::start_with`](super::Client::start_with)
//! takes any connector, so the whole client also runs over in-memory
//! connections, for example against a simulated server in tests.

use std::fmt;
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::cutoff::CutOff;
use crate::config::Config;
use crate::connection::{Connection, ThreadedTlsStream};
use crate::error::{Error, Phase, Result};
use crate::event::Event;
use crate::message::Message;
use crate::time::later;
use crate::transport::{SetTimeout, Waited, WakeSender};

/// Wakes the thread driving a [`Link`] that waits in
/// [`recv_event`](Link::recv_event): it returns `Ok(None)` soon, so the worker
/// looks at new work (messages to send, acks, shutdown) without polling.
#[derive(Clone)]
pub struct Waker(Arc<dyn Fn() + Send + Sync>);

impl Waker {
    /// A waker that calls `wake` (from any thread, any number of times; it
    /// should coalesce wake-ups and must not block).
    pub fn new(wake: impl Fn() + Send + Sync + 'static) -> Waker {
        Waker(Arc::new(wake))
    }

    /// Wakes the driving thread.
    pub fn wake(&self) {
        (self.0)();
    }
}

impl fmt::Debug for Waker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Waker").finish_non_exhaustive()
    }
}

/// One authenticated connection as the worker drives it. Used by one thread
/// at a time.
pub trait Link: Send {
    /// The bound JID.
    fn jid(&self) -> &str;
    /// Appends a downstream message to the write buffer.
    ///
    /// # Errors
    /// [`Error::InvalidMessage`](crate::Error::InvalidMessage) when nothing was
    /// written; any other error means the connection is unusable.
    fn send_buffered(&mut self, message: &Message) -> Result<()>;
    /// Appends an ack for `message_id` from `to` to the write buffer.
    ///
    /// # Errors
    /// The connection is unusable.
    fn ack_buffered(&mut self, to: &str, message_id: &str) -> Result<()>;
    /// Writes everything buffered.
    ///
    /// # Errors
    /// The connection is unusable.
    fn flush(&mut self) -> Result<()>;
    /// Waits at most `timeout` for the next event (`Ok(None)`: none came).
    ///
    /// # Errors
    /// [`Error::Protocol`](crate::Error::Protocol) for one bad stanza (the
    /// connection stays usable); anything else ends the connection.
    fn recv_event(&mut self, timeout: Duration) -> Result<Option<Event>>;
    /// The next event if one is ready without waiting.
    ///
    /// # Errors
    /// As [`recv_event`](Self::recv_event).
    fn try_recv_event(&mut self) -> Result<Option<Event>>;
    /// Closes the stream, waiting for the server at most its own close
    /// timeout and at most `limit`, and returns the events that arrived
    /// meanwhile.
    fn close(self: Box<Self>, limit: Option<Duration>) -> Vec<Event>;
    /// A way to cut [`recv_event`](Self::recv_event) short from another
    /// thread. With one, the worker waits for input or a wake-up and never
    /// polls; without one (the default) it waits at most
    /// [`ClientConfig::poll_interval`](super::ClientConfig::poll_interval)
    /// per call, so new work waits up to that long.
    fn waker(&self) -> Option<Waker> {
        None
    }
}

/// Opens connections for the worker.
pub trait Connector: Send + Sync {
    /// Opens and authenticates a connection for pool slot `slot`, giving up
    /// at `deadline` if one is set.
    ///
    /// # Errors
    /// Why it failed; [`Error::is_retryable`](crate::Error::is_retryable)
    /// tells whether the worker tries again.
    fn connect(&self, slot: usize, deadline: Option<Instant>) -> Result<Box<dyn Link>>;

    /// Like [`connect`](Self::connect), but the deadline may be set while
    /// the attempt runs: the worker calls this one, and `cut_off` is set when
    /// `Client::shutdown` (or the drop of the last handle) begins. Past it the
    /// attempt must write nothing more (no authentication completes after
    /// `shutdown` returned) and fail soon.
    ///
    /// The default calls [`connect`](Self::connect) with the deadline set
    /// when the attempt begins, so a connector that does not override it is
    /// only bounded by its own timeouts once it runs. [`TlsConnector`]
    /// overrides it.
    ///
    /// # Errors
    /// As [`connect`](Self::connect).
    fn connect_until(&self, slot: usize, cut_off: &CutOff) -> Result<Box<dyn Link>> {
        self.connect(slot, cut_off.at())
    }
}

impl<S: Read + Write + SetTimeout + Send> Link for Connection<S> {
    fn jid(&self) -> &str {
        Connection::jid(self)
    }
    fn send_buffered(&mut self, message: &Message) -> Result<()> {
        // The engine only holds messages `Client::send` validated, and keeps
        // the window: the connection keeps no second one.
        self.send_untracked(message)
    }
    fn ack_buffered(&mut self, to: &str, message_id: &str) -> Result<()> {
        self.ack_to(to, message_id)
    }
    fn flush(&mut self) -> Result<()> {
        Connection::flush(self)
    }
    fn recv_event(&mut self, timeout: Duration) -> Result<Option<Event>> {
        Connection::recv_event(self, Some(timeout))
    }
    fn try_recv_event(&mut self) -> Result<Option<Event>> {
        Connection::try_recv_event(self)
    }
    fn close(mut self: Box<Self>, limit: Option<Duration>) -> Vec<Event> {
        if let Some(t) = limit {
            self.limit_close_timeout(t);
        }
        match Connection::close(*self) {
            Ok(events) => events,
            Err(e) => {
                log::debug!("close: {e}");
                Vec::new()
            }
        }
    }
}

/// The link [`TlsConnector`] opens: a reader thread forwards the socket's
/// bytes, so [`recv_event`](Link::recv_event) wakes on input or on its
/// [`Waker`] at once, whatever the timeout.
struct ThreadedLink {
    conn: Connection<ThreadedTlsStream>,
    wake: WakeSender,
}

impl Link for ThreadedLink {
    fn jid(&self) -> &str {
        self.conn.jid()
    }
    fn send_buffered(&mut self, message: &Message) -> Result<()> {
        // As for `Connection` above.
        self.conn.send_untracked(message)
    }
    fn ack_buffered(&mut self, to: &str, message_id: &str) -> Result<()> {
        self.conn.ack_to(to, message_id)
    }
    fn flush(&mut self) -> Result<()> {
        self.conn.flush()
    }
    fn recv_event(&mut self, timeout: Duration) -> Result<Option<Event>> {
        let until = later(Instant::now(), timeout);
        loop {
            // Runs the keepalive timers and takes what is already here.
            if let Some(ev) = self.conn.try_recv_event()? {
                return Ok(Some(ev));
            }
            if Instant::now() >= until {
                return Ok(None);
            }
            if self.conn.has_unread_input() {
                continue;
            }
            let wait = self.conn.next_wake().map_or(until, |w| w.min(until));
            if self.conn.get_mut().get_mut().wait_input(Some(wait)) == Waited::Woken {
                return Ok(None);
            }
        }
    }
    fn try_recv_event(&mut self) -> Result<Option<Event>> {
        self.conn.try_recv_event()
    }
    fn close(self: Box<Self>, limit: Option<Duration>) -> Vec<Event> {
        Box::new(self.conn).close(limit)
    }
    fn waker(&self) -> Option<Waker> {
        let wake = self.wake.clone();
        Some(Waker::new(move || wake.wake()))
    }
}

/// The connector [`Client::start`](super::Client::start) uses: TLS to
/// `config.endpoint`, each attempt bounded by the configured timeouts and by
/// the deadline it is given.
#[derive(Debug, Clone)]
pub struct TlsConnector {
    config: Config,
}

impl TlsConnector {
    /// A connector for `config`.
    pub fn new(config: Config) -> Self {
        TlsConnector { config }
    }
}

impl Connector for TlsConnector {
    fn connect(&self, slot: usize, deadline: Option<Instant>) -> Result<Box<dyn Link>> {
        let cut_off = CutOff::new();
        if let Some(d) = deadline {
            cut_off.set(d);
        }
        self.connect_until(slot, &cut_off)
    }

    /// Every step stops at the cut-off: name lookup and TCP connect are
    /// bounded by the deadline known when they begin; the TLS and XMPP
    /// handshakes wake when it is set, and past it the socket neither reads
    /// nor writes, so no `<auth>` or bind goes out after it.
    fn connect_until(&self, _slot: usize, cut_off: &CutOff) -> Result<Box<dyn Link>> {
        let mut cfg = self.config.clone();
        if let Some(d) = cut_off.at() {
            let left = d
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1));
            let t = &mut cfg.timeouts;
            t.connect = Some(t.connect.map_or(left, |c| c.min(left)));
            t.handshake = Some(t.handshake.map_or(left, |c| c.min(left)));
        }
        let conn = match Connection::connect_threaded(&cfg, cut_off) {
            Ok(conn) => conn,
            // Whatever step the cut-off broke, the attempt ran out of time.
            Err(e) if cut_off.is_past(Instant::now()) => {
                log::debug!("connect cut short at the shutdown deadline: {e}");
                return Err(Error::Timeout(Phase::Handshake));
            }
            Err(e) => return Err(e),
        };
        let wake = conn.get_ref().get_ref().wake_sender();
        Ok(Box::new(ThreadedLink { conn, wake }))
    }
}
