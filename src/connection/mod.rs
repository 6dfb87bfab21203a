//! One authenticated CCS connection: send downstream messages, receive typed
//! events, ack upstream messages and receipts, keep the pending count.
//!
//! Two halves: [`session`] holds the CCS state and decisions and does no I/O
//! (it is given the time, so its timers are tested on simulated time);
//! [`Connection`] is the thin driver that runs the handshake, then reads
//! packets into the session, writes what it queues and sleeps until it next
//! needs waking.

mod session;

pub(crate) use session::IdHasher;

use std::collections::VecDeque;
use std::fmt;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use native_tls::TlsStream;

use crate::client::CutOff;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::event::Event;
use crate::message::Message;
use crate::stream::{self, XmppStream};
use crate::transport::{self, SetTimeout};
use crate::xml::{Element, RawItem};

use session::Session;

/// Most events [`Connection::close`] collects: about five times what a real
/// CCS can owe us (100 pending acks plus 100 un-acked upstream messages).
const MAX_CLOSE_EVENTS: usize = 1024;

/// The stream type of a connection made by [`Connection::connect`].
pub type TlsTcpStream = TlsStream<TcpStream>;

/// One authenticated connection to CCS.
///
/// Single-threaded and blocking: whoever holds it calls [`send`](Self::send)
/// and [`recv_event`](Self::recv_event). Generic over the byte stream so tests
/// can run it over an in-memory stream; [`Connection::connect`] opens the real
/// TLS one.
///
/// ```
/// # #[cfg(feature = "emulator")] {
/// use fcm_xmpp::{Connection, Event, Message};
/// use std::time::Duration;
/// let emulator = fcm_xmpp::Emulator::start("123456789012", "key").unwrap();
/// let mut conn = Connection::connect(&emulator.client_config()).unwrap();
/// let id = conn.send(&Message::to("device-token").data("hello", "world")).unwrap();
/// let event = conn.recv_event(Some(Duration::from_secs(5))).unwrap().unwrap();
/// assert!(matches!(event, Event::Ack(ref a) if a.message_id == id));
/// conn.close().unwrap();
/// # emulator.shutdown();
/// # mod judge { include!("../../tests/common/judge_core.rs"); }
/// # let bytes = emulator.client_bytes();
/// # assert!(!bytes.is_empty() && bytes.iter().all(|r| r.complete));
/// # judge::check_all(bytes.iter().map(|r| (format!("{:?}", r.conn), &r.bytes[..]))).unwrap();
/// # }
/// ```
pub struct Connection<S> {
    io: XmppStream<S>,
    session: Session,
    jid: String,
    close_timeout: Option<Duration>,
    /// Stanzas that arrived during the handshake, handled before reading more.
    early: VecDeque<Element>,
}

impl<S> fmt::Debug for Connection<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("jid", &self.jid)
            .field("pending", &self.session.pending())
            .field("max_pending", &self.session.max_pending())
            .field("draining", &self.session.is_draining())
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}

impl Connection<TlsTcpStream> {
    /// Opens a TLS connection to `config.endpoint` and authenticates.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`], [`Error::Timeout`] (which phase), [`Error::Io`],
    /// [`Error::Tls`] (certificate, not TLS), [`Error::AuthFailed`],
    /// [`Error::StreamError`], [`Error::Protocol`], [`Error::Xml`].
    pub fn connect(config: &Config) -> Result<Self> {
        config.validate()?;
        let (tls, deadline) = transport::connect_tls(config)?;
        Connection::after_tls(tls, deadline, config)
    }
}

/// The stream of a connection whose socket a reader thread reads (the
/// worker's connections).
pub(crate) type ThreadedTlsStream = TlsStream<transport::ChannelSocket>;

impl Connection<ThreadedTlsStream> {
    /// As [`Connection::connect`], with a reader thread forwarding the
    /// socket's bytes (see [`transport::ChannelSocket`]).
    /// Past `cut_off` the socket neither reads nor writes: the attempt fails
    /// and nothing more reaches the server.
    pub(crate) fn connect_threaded(config: &Config, cut_off: &CutOff) -> Result<Self> {
        config.validate()?;
        let (tls, deadline) = transport::connect_tls_threaded(config, cut_off)?;
        let mut conn = Connection::after_tls(tls, deadline, config)?;
        // Connected: from now on the worker keeps the deadlines.
        conn.get_mut().get_mut().watch_cut_off(None);
        Ok(conn)
    }

    /// True if bytes already received wait to be decrypted or parsed.
    pub(crate) fn has_unread_input(&self) -> bool {
        let tls = self.get_ref();
        tls.get_ref().has_input() || tls.buffered_read_size().is_ok_and(|n| n > 0)
    }
}

impl<S: Read + Write + SetTimeout> Connection<S> {
    /// The XMPP handshake after the TLS one: one handshake deadline covers both.
    fn after_tls(tls: S, deadline: Option<Instant>, config: &Config) -> Result<Self> {
        match deadline {
            Some(d) => {
                let mut rest = config.clone();
                rest.timeouts.handshake = Some(
                    d.saturating_duration_since(Instant::now())
                        .max(Duration::from_millis(1)),
                );
                Connection::from_stream(tls, &rest)
            }
            None => Connection::from_stream(tls, config),
        }
    }
}

impl<S> Connection<S> {
    /// The full JID the server bound (`SENDER@gcm.googleapis.com/RESOURCE`).
    pub fn jid(&self) -> &str {
        &self.jid
    }

    /// Downstream messages sent on this connection without an ack, nack or
    /// stanza error yet.
    pub fn pending(&self) -> usize {
        self.session.pending()
    }

    /// The ids of the pending messages (no order).
    pub fn pending_ids(&self) -> impl Iterator<Item = &str> {
        self.session.pending_ids()
    }

    /// How many more messages may be sent before the window is full.
    pub fn window_free(&self) -> usize {
        self.session.window_free()
    }

    /// True once the server announced `CONNECTION_DRAINING` (by control message
    /// or nack). Sends are then refused with [`Error::Draining`]: send new
    /// messages on a new connection, and keep reading (and acking on) this one
    /// until it closes.
    pub fn is_draining(&self) -> bool {
        self.session.is_draining()
    }

    /// True once the stream is closed (by either side or by an error).
    pub fn is_closed(&self) -> bool {
        self.io.is_closed() || self.session.is_closed()
    }

    /// When the keepalive policy next needs [`tick`](Self::tick) (`None`: never).
    pub(crate) fn next_wake(&self) -> Option<Instant> {
        self.session.next_wake()
    }

    /// Lowers the time [`close`](Self::close) waits for the server to at
    /// most `timeout` (the worker's shutdown deadline).
    pub(crate) fn limit_close_timeout(&mut self, timeout: Duration) {
        self.close_timeout = Some(self.close_timeout.map_or(timeout, |t| t.min(timeout)));
    }

    /// The underlying stream.
    pub fn get_ref(&self) -> &S {
        &self.io.stream
    }

    /// The underlying stream, mutably. Reading or writing it directly corrupts the XMPP stream.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.io.stream
    }

    /// Gives up the connection and returns the stream (no close tag is sent).
    pub fn into_inner(self) -> S {
        self.io.stream
    }
}

impl<S: Read + Write + SetTimeout> Connection<S> {
    /// Runs the XMPP handshake over an already connected (and, for real CCS,
    /// TLS-wrapped) stream.
    ///
    /// # Errors
    /// As [`Connection::connect`], less the transport errors.
    pub fn from_stream(stream: S, config: &Config) -> Result<Self> {
        config.validate()?;
        let mut io = XmppStream::new(stream, config);
        let (jid, early) = stream::handshake(&mut io, config)?;
        io.stream.set_write_timeout(config.timeouts.write)?;
        Ok(Connection {
            session: Session::new(config, Instant::now()),
            io,
            jid,
            close_timeout: config.timeouts.close,
            early: early.into(),
        })
    }

    /// Sends one downstream message and returns its id.
    ///
    /// # Errors
    /// [`Error::InvalidMessage`] (nothing sent), [`Error::WindowFull`] (nothing
    /// sent; read events first), [`Error::Draining`] (nothing sent; use a new
    /// connection), [`Error::Closed`], [`Error::Io`],
    /// [`Error::Timeout`]`(Write)` (the connection is then unusable).
    pub fn send(&mut self, message: &Message) -> Result<String> {
        self.send_buffered(message)?;
        self.flush()?;
        Ok(message.id().to_string())
    }

    /// Like [`send`](Self::send) but only appends the stanza to the write
    /// buffer; [`flush`](Self::flush), `send`, `ack` and `recv_event` write it.
    /// Use it to send many messages in one write.
    ///
    /// # Errors
    /// [`Error::InvalidMessage`], [`Error::WindowFull`], [`Error::Draining`]
    /// and [`Error::Closed`], each with nothing buffered.
    pub fn send_buffered(&mut self, message: &Message) -> Result<()> {
        self.check_open()?;
        self.session.send(message, false)
    }

    /// [`send_buffered`](Self::send_buffered) for the worker: the message
    /// has passed [`Message::validate`] already (the application's `send`
    /// validated it), so it is validated once, not twice; and the driver
    /// keeps the window itself (its engine is the one owner of what is in
    /// flight): from the first call on, this connection checks and records
    /// no pending ids ([`pending`](Self::pending) stays 0), so the two can
    /// never disagree. Still refused while draining or closed.
    pub(crate) fn send_untracked(&mut self, message: &Message) -> Result<()> {
        self.check_open()?;
        self.session.untrack();
        self.session.send(message, true)
    }

    /// Writes everything buffered.
    ///
    /// # Errors
    /// [`Error::Closed`], [`Error::Io`], [`Error::Timeout`]`(Write)`.
    pub fn flush(&mut self) -> Result<()> {
        if self.io.is_closed() {
            return Err(Error::Closed);
        }
        if !self.session.has_output() {
            return Ok(());
        }
        let r = self.io.write(self.session.output());
        self.session.output().clear();
        match r {
            Ok(at) => {
                self.session.written(at);
                Ok(())
            }
            Err(e) => {
                self.session.mark_closed();
                Err(e)
            }
        }
    }

    /// Acks an upstream message or a receipt (on this connection, where it
    /// arrived) and writes it at once. Other events need no ack: no-op.
    ///
    /// # Errors
    /// [`Error::Closed`], [`Error::Io`], [`Error::Timeout`]`(Write)`.
    pub fn ack(&mut self, event: &Event) -> Result<()> {
        if self.ack_buffered(event)? {
            self.flush()?;
        }
        Ok(())
    }

    /// Appends the ack for `event` to the write buffer; returns whether the
    /// event needed one. Acks never count against the window, and are still
    /// sent on a draining connection.
    ///
    /// # Errors
    /// [`Error::Closed`].
    pub fn ack_buffered(&mut self, event: &Event) -> Result<bool> {
        let Some((to, id)) = event.ack_target() else {
            return Ok(false);
        };
        self.ack_to(to, id)?;
        Ok(true)
    }

    /// Appends an ack for message `message_id` from `to` (the worker keeps
    /// these pairs instead of whole events).
    pub(crate) fn ack_to(&mut self, to: &str, message_id: &str) -> Result<()> {
        self.check_open()?;
        self.session.ack(to, message_id)
    }

    /// Writes a single space, the XMPP whitespace keepalive.
    ///
    /// # Errors
    /// [`Error::Closed`], [`Error::Io`], [`Error::Timeout`]`(Write)`.
    pub fn send_keepalive(&mut self) -> Result<()> {
        self.check_open()?;
        self.session.keepalive()?;
        self.flush()
    }

    /// Sends an XEP-0199 ping to the server domain; the answer is consumed
    /// by `recv_event`. A connection that reads nothing at all for
    /// `keepalive.dead_after` after a ping is reported dead by
    /// [`tick`](Self::tick).
    ///
    /// # Errors
    /// [`Error::Closed`], [`Error::Io`], [`Error::Timeout`]`(Write)`.
    pub fn ping(&mut self) -> Result<()> {
        self.check_open()?;
        self.session.ping(Instant::now())?;
        self.flush()
    }

    /// Applies the keepalive policy now and writes what it queued: whitespace
    /// after write idleness, a ping after read idleness, and an error once the
    /// server stayed silent `keepalive.dead_after` past a ping or past
    /// `timeouts.read`. `recv_event` calls it; call it yourself if you hold
    /// the connection without reading.
    ///
    /// # Errors
    /// [`Error::Timeout`]`(Read)` when the server stayed silent past the
    /// deadline (the connection is closed); write errors.
    pub fn tick(&mut self) -> Result<()> {
        self.check_open()?;
        self.session.read_at(self.io.last_read);
        self.session.tick(Instant::now())?;
        self.flush()
    }

    /// Receives the next event: `timeout` `None` waits as long as it takes
    /// (keepalives still run), `Some(d)` at most `d`; `Ok(None)` when the
    /// time ran out. Buffered acks are written first. Ping answers and other
    /// stanzas that are not CCS messages are handled here and not returned.
    ///
    /// # Errors
    /// [`Error::Closed`] when the server ended the stream (EOF or
    /// `</stream:stream>`), [`Error::StreamError`], [`Error::Xml`] (the
    /// connection is then closed), [`Error::Timeout`]`(Read)` when the server
    /// went silent, [`Error::Io`]. [`Error::Protocol`] for one bad stanza (no
    /// `<gcm>` payload, bad JSON): the connection stays usable.
    pub fn recv_event(&mut self, timeout: Option<Duration>) -> Result<Option<Event>> {
        let deadline = timeout.map(|t| crate::time::later(Instant::now(), t));
        self.recv_until(deadline)
    }

    /// Receives an event only if one can be had without waiting.
    ///
    /// # Errors
    /// As [`recv_event`](Self::recv_event).
    pub fn try_recv_event(&mut self) -> Result<Option<Event>> {
        self.recv_until(Some(Instant::now()))
    }

    fn recv_until(&mut self, deadline: Option<Instant>) -> Result<Option<Event>> {
        while let Some(el) = self.early.pop_front() {
            if let Some(e) = self.session.on_stanza(&el)? {
                return Ok(Some(e));
            }
        }
        loop {
            self.tick()?;
            let wake = crate::time::earlier(deadline, self.session.next_wake());
            let item = self.io.read_item(wake);
            self.session.read_at(self.io.last_read);
            if let Some(item) = item? {
                let event = match item {
                    RawItem::Packet(p) => self.session.on_packet(p),
                    RawItem::GcmPayload(r) => match self.io.payload(&r) {
                        Ok(p) => self.session.on_gcm(p.json),
                        Err(e) => Err(e),
                    },
                };
                // A pong or other answer queued by the packet goes out now.
                if self.session.has_output() && !self.is_closed() {
                    self.flush()?;
                }
                if let Some(e) = event? {
                    return Ok(Some(e));
                }
            }
            // Also after a packet that was no event: a server sending nothing
            // but pongs or other ignored stanzas must not hold us past the deadline.
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(None);
            }
        }
    }

    /// `Err(Closed)` once the stream or the session has ended.
    fn check_open(&self) -> Result<()> {
        if self.is_closed() {
            return Err(Error::Closed);
        }
        Ok(())
    }

    /// Sends `</stream:stream>` and waits (at most `timeouts.close`) for the
    /// server's. Returns every event that arrived meanwhile (acks for messages
    /// still in flight, upstream messages: nothing is dropped), up to 1024: a
    /// server that keeps sending past that is cut off unread (CCS redelivers
    /// un-acked upstream; messages without an answer should be resent).
    ///
    /// # Errors
    /// I/O errors while writing the close tag. A server that does not answer
    /// in time is not an error: the socket is closed anyway.
    pub fn close(mut self) -> Result<Vec<Event>> {
        let mut events = Vec::new();
        while let Some(el) = self.early.pop_front() {
            if let Ok(Some(e)) = self.session.on_stanza(&el) {
                events.push(e);
            }
        }
        if self.is_closed() {
            return Ok(events);
        }
        self.session.close()?;
        self.flush()?;
        let deadline = self
            .close_timeout
            .map(|t| crate::time::later(Instant::now(), t));
        loop {
            // Past the deadline `read_packet` still takes what is already
            // here (answers read but not parsed yet) and then says `None`.
            if events.len() >= MAX_CLOSE_EVENTS {
                log::info!(
                    "server still sending after {MAX_CLOSE_EVENTS} events at close: cut off"
                );
                break;
            }
            match self.io.read_packet(deadline) {
                Ok(Some(p)) => match self.session.on_packet(p) {
                    Ok(Some(e)) => events.push(e),
                    Ok(None) => {}
                    Err(_) => break,
                },
                Ok(None) => {
                    log::debug!("server did not close its stream in time");
                    break;
                }
                Err(_) => break,
            }
        }
        self.io.mark_closed();
        Ok(events)
    }
}

#[cfg(test)]
mod tests;
