//! How the worker reaches the network: a [`Connector`] opens [`Link`]s.
//!
//! [`Client::start`](super::Client::start) uses [`TlsConnector`] (TLS to the
//! configured endpoint); [`Client::start_with`](super::Client::start_with)
//! takes any connector, so the whole client also runs over in-memory
//! connections, for example against a simulated server in tests.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::connection::Connection;
use crate::error::Result;
use crate::event::Event;
use crate::message::Message;
use crate::transport::SetTimeout;

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
}

impl<S: Read + Write + SetTimeout + Send> Link for Connection<S> {
    fn jid(&self) -> &str {
        Connection::jid(self)
    }
    fn send_buffered(&mut self, message: &Message) -> Result<()> {
        // The engine only holds messages `Client::send` validated.
        self.send_validated(message)
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
    fn connect(&self, _slot: usize, deadline: Option<Instant>) -> Result<Box<dyn Link>> {
        let conn = match deadline {
            None => Connection::connect(&self.config)?,
            Some(d) => {
                let left = d
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(1));
                let mut cfg = self.config.clone();
                let t = &mut cfg.timeouts;
                t.connect = Some(t.connect.map_or(left, |c| c.min(left)));
                t.handshake = Some(t.handshake.map_or(left, |c| c.min(left)));
                Connection::connect(&cfg)?
            }
        };
        Ok(Box::new(conn))
    }
}
