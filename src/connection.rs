//! One authenticated CCS connection: send downstream messages, receive typed
//! events, ack upstream messages and receipts, keep the pending count.

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use native_tls::TlsStream;

use crate::config::{Config, Keepalive};
use crate::error::{Error, InvalidMessage, Phase, Result};
use crate::event::{write_ack_json, ControlKind, Event, NackCode};
use crate::message::Message;
use crate::stream::{self, XmppStream, NS_CLIENT, NS_PING, NS_STREAM};
use crate::transport::{self, SetTimeout};
use crate::xml::{escape_attr, escape_text, Element, Packet};

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
/// # }
/// ```
pub struct Connection<S> {
    io: XmppStream<S>,
    jid: String,
    domain: String,
    keepalive: Keepalive,
    close_timeout: Option<Duration>,
    read_timeout: Option<Duration>,
    max_pending: usize,
    pending: HashSet<String>,
    draining: bool,
    ping: Option<(u64, Instant)>,
    ping_seq: u64,
    json: String,
    /// Stanzas that arrived during the handshake, handled before reading more.
    early: VecDeque<Element>,
}

impl<S> fmt::Debug for Connection<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("jid", &self.jid)
            .field("pending", &self.pending.len())
            .field("max_pending", &self.max_pending)
            .field("draining", &self.draining)
            .field("closed", &self.io.is_closed())
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
        // One handshake deadline covers TLS and XMPP together.
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
            io,
            jid,
            domain: config.domain.clone(),
            keepalive: config.keepalive,
            close_timeout: config.timeouts.close,
            read_timeout: config.timeouts.read,
            max_pending: config.max_pending,
            pending: HashSet::with_capacity(config.max_pending),
            draining: false,
            ping: None,
            ping_seq: 0,
            json: String::with_capacity(1024),
            early: early.into(),
        })
    }

    /// The full JID the server bound (`SENDER@gcm.googleapis.com/RESOURCE`).
    pub fn jid(&self) -> &str {
        &self.jid
    }

    /// Downstream messages sent on this connection without an ack, nack or
    /// stanza error yet.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// The ids of the pending messages (no order).
    pub fn pending_ids(&self) -> impl Iterator<Item = &str> {
        self.pending.iter().map(String::as_str)
    }

    /// How many more messages may be sent before the window is full.
    pub fn window_free(&self) -> usize {
        self.max_pending.saturating_sub(self.pending.len())
    }

    /// True once the server announced `CONNECTION_DRAINING` (by control message
    /// or nack). Send new messages on a new connection; keep reading this one
    /// until it closes.
    pub fn is_draining(&self) -> bool {
        self.draining
    }

    /// True once the stream is closed (by either side or by an error).
    pub fn is_closed(&self) -> bool {
        self.io.is_closed()
    }

    /// Sends one downstream message and returns its id.
    ///
    /// # Errors
    /// [`Error::InvalidMessage`] (nothing sent), [`Error::WindowFull`] (nothing
    /// sent; read events first), [`Error::Closed`], [`Error::Io`],
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
    /// As [`send`](Self::send).
    pub fn send_buffered(&mut self, message: &Message) -> Result<()> {
        if self.io.is_closed() {
            return Err(Error::Closed);
        }
        message.validate()?;
        if self.pending.len() >= self.max_pending {
            return Err(Error::WindowFull);
        }
        if self.pending.contains(message.id()) {
            return Err(InvalidMessage::new(
                "message_id",
                "a message with this id is already pending on this connection",
            )
            .into());
        }
        self.json.clear();
        message.write_json(&mut self.json);
        let out = self.io.out();
        out.push_str("<message id=\"");
        escape_attr(message.id(), out);
        out.push_str("\"><gcm xmlns=\"google:mobile:data\">");
        escape_text(&self.json, out);
        out.push_str("</gcm></message>");
        self.pending.insert(message.id().to_string());
        Ok(())
    }

    /// Writes everything buffered.
    ///
    /// # Errors
    /// [`Error::Closed`], [`Error::Io`], [`Error::Timeout`]`(Write)`.
    pub fn flush(&mut self) -> Result<()> {
        self.io.flush()
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
    /// event needed one. Acks never count against the window.
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
        if self.io.is_closed() {
            return Err(Error::Closed);
        }
        self.json.clear();
        write_ack_json(to, message_id, &mut self.json);
        let out = self.io.out();
        out.push_str("<message><gcm xmlns=\"google:mobile:data\">");
        escape_text(&self.json, out);
        out.push_str("</gcm></message>");
        Ok(())
    }

    /// Writes a single space, the XMPP whitespace keepalive.
    ///
    /// # Errors
    /// [`Error::Closed`], [`Error::Io`], [`Error::Timeout`]`(Write)`.
    pub fn send_keepalive(&mut self) -> Result<()> {
        if self.io.is_closed() {
            return Err(Error::Closed);
        }
        self.io.out().push(' ');
        self.flush()
    }

    /// Sends an XEP-0199 ping to the server domain; the answer is consumed
    /// by `recv_event`. A connection with an unanswered ping older than
    /// `keepalive.dead_after` is reported dead by [`tick`](Self::tick).
    ///
    /// # Errors
    /// [`Error::Closed`], [`Error::Io`], [`Error::Timeout`]`(Write)`.
    pub fn ping(&mut self) -> Result<()> {
        if self.io.is_closed() {
            return Err(Error::Closed);
        }
        self.ping_seq += 1;
        let seq = self.ping_seq;
        let out = self.io.out();
        out.push_str("<iq to=\"");
        escape_attr(&self.domain, out);
        out.push_str("\" id=\"ping");
        out.push_str(&seq.to_string());
        out.push_str("\" type=\"get\"><ping xmlns=\"urn:xmpp:ping\"/></iq>");
        if self.ping.is_none() {
            self.ping = Some((seq, Instant::now()));
        }
        self.flush()
    }

    /// Applies the keepalive policy: whitespace after write idleness, ping
    /// after read idleness, and an error once a ping went unanswered too
    /// long or the server stayed silent past `timeouts.read`. `recv_event` calls it; call it yourself if you hold the
    /// connection without reading.
    ///
    /// # Errors
    /// [`Error::Timeout`]`(Read)` when the server stayed silent past the
    /// deadline (the connection is closed); write errors.
    pub fn tick(&mut self) -> Result<()> {
        let now = Instant::now();
        if let Some(limit) = self.read_timeout {
            if now.duration_since(self.io.last_read) >= limit {
                log::info!("server silent for {limit:?}: connection dead");
                self.io.mark_closed();
                return Err(Error::Timeout(Phase::Read));
            }
        }
        if let Some((_, sent)) = self.ping {
            if now.duration_since(sent) >= self.keepalive.dead_after && self.io.last_read <= sent {
                log::info!(
                    "server silent {:?} after ping: connection dead",
                    self.keepalive.dead_after
                );
                self.io.mark_closed();
                return Err(Error::Timeout(Phase::Read));
            }
        }
        if let Some(after) = self.keepalive.ping_after {
            if self.ping.is_none() && now.duration_since(self.io.last_read) >= after {
                self.ping()?;
                return Ok(());
            }
        }
        if let Some(after) = self.keepalive.whitespace_after {
            if now.duration_since(self.io.last_write) >= after {
                self.send_keepalive()?;
            }
        }
        Ok(())
    }

    /// The next moment `tick` has work to do.
    fn next_tick(&self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut consider = |t: Instant| next = Some(next.map_or(t, |n| n.min(t)));
        if let Some(limit) = self.read_timeout {
            consider(self.io.last_read + limit);
        }
        if let Some((_, sent)) = self.ping {
            consider(sent + self.keepalive.dead_after);
        } else if let Some(after) = self.keepalive.ping_after {
            consider(self.io.last_read + after);
        }
        if let Some(after) = self.keepalive.whitespace_after {
            consider(self.io.last_write + after);
        }
        next
    }

    /// Receives the next event: `timeout` `None` waits as long as it takes
    /// (keepalives still run), `Some(d)` at most `d`; `Ok(None)` when the
    /// time ran out. Buffered acks are written first. Ping answers and other
    /// stanzas that are not CCS messages are handled here and not returned.
    ///
    /// # Errors
    /// [`Error::Closed`] when the server ended the stream (EOF or
    /// `</stream:stream>`), [`Error::StreamError`], [`Error::Xml`] (the
    /// connection is then closed), [`Error::Timeout`]`(Read)` when a ping went
    /// unanswered, [`Error::Io`]. [`Error::Protocol`] for one bad stanza (no
    /// `<gcm>` payload, bad JSON): the connection stays usable.
    pub fn recv_event(&mut self, timeout: Option<Duration>) -> Result<Option<Event>> {
        let deadline = timeout.map(|t| Instant::now() + t);
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
            if let Some(e) = self.handle_packet(Packet::Stanza(el))? {
                return Ok(Some(e));
            }
        }
        loop {
            if self.io.has_unflushed() {
                self.io.flush()?;
            }
            self.tick()?;
            let wake = match (deadline, self.next_tick()) {
                (Some(d), Some(t)) => Some(d.min(t)),
                (d, t) => d.or(t),
            };
            if let Some(p) = self.io.read_packet(wake)? {
                if let Some(e) = self.handle_packet(p)? {
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

    /// Turns one packet into an event, or handles it (pings, iq results).
    fn handle_packet(&mut self, packet: Packet) -> Result<Option<Event>> {
        let el = match packet {
            Packet::Stanza(el) => el,
            Packet::StreamEnd => {
                self.io.mark_closed();
                log::info!("server closed the stream");
                return Err(Error::Closed);
            }
            Packet::StreamStart(_) => {
                self.io.mark_closed();
                return Err(crate::ProtocolError::Unexpected {
                    expected: "a stanza",
                    got: "a second stream header".into(),
                }
                .into());
            }
        };
        if el.is("message", NS_CLIENT) {
            let event = Event::from_stanza(&el)?;
            if let Some(ev) = &event {
                self.account(ev);
            }
            return Ok(event);
        }
        if el.is("iq", NS_CLIENT) {
            self.handle_iq(&el);
            return Ok(None);
        }
        if el.is("error", NS_STREAM) {
            self.io.mark_closed();
            let e = stream::stream_error(&el);
            log::info!("{e}");
            return Err(e);
        }
        log::debug!("ignoring <{}> stanza", el.name());
        Ok(None)
    }

    fn handle_iq(&mut self, el: &Element) {
        let id = el.attr("id").unwrap_or("");
        match el.attr("type") {
            Some("result") | Some("error") => {
                if let Some((seq, _)) = self.ping {
                    if id.strip_prefix("ping").and_then(|n| n.parse::<u64>().ok()) == Some(seq) {
                        self.ping = None;
                    }
                }
            }
            Some("get") if el.child("ping", NS_PING).is_some() => {
                let out = self.io.out();
                out.push_str("<iq type=\"result\" id=\"");
                escape_attr(id, out);
                out.push('"');
                if let Some(from) = el.attr("from") {
                    out.push_str(" to=\"");
                    escape_attr(from, out);
                    out.push('"');
                }
                out.push_str("/>");
            }
            _ => log::debug!("ignoring iq {id}"),
        }
    }

    /// Pending-count and draining bookkeeping for an incoming event.
    fn account(&mut self, event: &Event) {
        match event {
            Event::Ack(a) if !self.pending.remove(&a.message_id) => {
                log::debug!("ack for a message not pending here: {}", a.message_id);
            }
            Event::Nack(n) => {
                if !self.pending.remove(&n.message_id) {
                    log::debug!("nack for a message not pending here: {}", n.message_id);
                }
                if n.code == NackCode::ConnectionDraining && !self.draining {
                    log::info!("connection draining (nack)");
                    self.draining = true;
                }
            }
            Event::StanzaError(e) => {
                let removed = e.id.as_deref().is_some_and(|id| self.pending.remove(id));
                if !removed {
                    if let Some(id) = e.message_id.as_deref() {
                        self.pending.remove(id);
                    }
                }
            }
            Event::Control(c) if c.kind == ControlKind::ConnectionDraining && !self.draining => {
                log::info!("connection draining (control)");
                self.draining = true;
            }
            _ => {}
        }
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
            if let Ok(Some(e)) = self.handle_packet(Packet::Stanza(el)) {
                events.push(e);
            }
        }
        if self.io.is_closed() {
            return Ok(events);
        }
        self.io.out().push_str("</stream:stream>");
        self.io.flush()?;
        let deadline = self.close_timeout.map(|t| Instant::now() + t);
        loop {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                log::debug!("server did not close its stream in time");
                break;
            }
            if events.len() >= MAX_CLOSE_EVENTS {
                log::info!(
                    "server still sending after {MAX_CLOSE_EVENTS} events at close: cut off"
                );
                break;
            }
            match self.io.read_packet(deadline) {
                Ok(Some(p)) => match self.handle_packet(p) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mock::{AtEnd, MockStream};
    use crate::XmlError;

    const HEADER: &str = "<stream:stream from=\"gcm.googleapis.com\" id=\"3F2A9C0D11B7E845\" version=\"1.0\" xmlns:stream=\"http://etherx.jabber.org/streams\" xmlns=\"jabber:client\">";
    const SASL_FEATURES: &str = "<stream:features><mechanisms xmlns=\"urn:ietf:params:xml:ns:xmpp-sasl\"><mechanism>X-OAUTH2</mechanism><mechanism>X-GOOGLE-TOKEN</mechanism><mechanism>PLAIN</mechanism></mechanisms></stream:features>";
    const SUCCESS: &str = "<success xmlns=\"urn:ietf:params:xml:ns:xmpp-sasl\"/>";
    const BIND_FEATURES: &str = "<stream:features><bind xmlns=\"urn:ietf:params:xml:ns:xmpp-bind\"/><session xmlns=\"urn:ietf:params:xml:ns:xmpp-session\"/></stream:features>";
    const BIND_RESULT: &str = "<iq type=\"result\" id=\"bind1\"><bind xmlns=\"urn:ietf:params:xml:ns:xmpp-bind\"><jid>123456789012@gcm.googleapis.com/fcmxmpp5D0C9A1E</jid></bind></iq>";
    const SESSION_RESULT: &str = "<iq type=\"result\" id=\"sess1\"/>";
    const KEY: &str = "AIzaSy-very-secret-key";

    fn config() -> Config {
        Config::new("123456789012", KEY).handshake_timeout(Some(Duration::from_millis(200)))
    }

    fn server_script() -> String {
        [
            HEADER,
            SASL_FEATURES,
            SUCCESS,
            HEADER,
            BIND_FEATURES,
            BIND_RESULT,
            SESSION_RESULT,
        ]
        .concat()
    }

    fn connected(after: &str) -> Connection<MockStream> {
        let mock = MockStream::new(server_script() + after).at_end(AtEnd::Silent);
        Connection::from_stream(mock, &config()).expect("handshake")
    }

    fn ccs(json: &str) -> String {
        format!("<message><data:gcm xmlns:data=\"google:mobile:data\">{json}</data:gcm></message>")
    }

    #[test]
    fn handshake_writes_exact_bytes() {
        let conn = connected("");
        assert_eq!(
            conn.jid(),
            "123456789012@gcm.googleapis.com/fcmxmpp5D0C9A1E"
        );
        let header = "<stream:stream to=\"gcm.googleapis.com\" version=\"1.0\" xmlns=\"jabber:client\" xmlns:stream=\"http://etherx.jabber.org/streams\">";
        let expected = [
            header,
            "<auth xmlns=\"urn:ietf:params:xml:ns:xmpp-sasl\" mechanism=\"PLAIN\">ADEyMzQ1Njc4OTAxMkBnY20uZ29vZ2xlYXBpcy5jb20AQUl6YVN5LXZlcnktc2VjcmV0LWtleQ==</auth>",
            header,
            "<iq type=\"set\" id=\"bind1\"><bind xmlns=\"urn:ietf:params:xml:ns:xmpp-bind\"><resource>fcmxmpp</resource></bind></iq>",
            "<iq type=\"set\" id=\"sess1\"><session xmlns=\"urn:ietf:params:xml:ns:xmpp-session\"/></iq>",
        ]
        .concat();
        assert_eq!(conn.get_ref().written_str(), expected);
        // One write per handshake step, never one per fragment.
        assert_eq!(conn.get_ref().writes, 5);
    }

    #[test]
    fn stanzas_before_the_bind_and_session_answers_are_kept() {
        let up = "<message type=\"normal\"><gcm xmlns=\"google:mobile:data\">{\"message_id\":\"up-early\",\"from\":\"DEV\",\"data\":{}}</gcm></message>";
        let rc = "<message type=\"normal\"><gcm xmlns=\"google:mobile:data\">{\"message_type\":\"receipt\",\"message_id\":\"dr2:m\",\"from\":\"gcm.googleapis.com\",\"data\":{\"message_status\":\"MESSAGE_SENT_TO_DEVICE\",\"original_message_id\":\"m\"}}</gcm></message>";
        let script = [
            HEADER,
            SASL_FEATURES,
            SUCCESS,
            HEADER,
            BIND_FEATURES,
            up,
            BIND_RESULT,
            rc,
            SESSION_RESULT,
        ]
        .concat();
        let mut conn =
            Connection::from_stream(MockStream::new(script).at_end(AtEnd::Silent), &config())
                .unwrap();
        let a = conn
            .recv_event(Some(Duration::from_millis(50)))
            .unwrap()
            .unwrap();
        assert_eq!(a.message_id(), Some("up-early"));
        let b = conn
            .recv_event(Some(Duration::from_millis(50)))
            .unwrap()
            .unwrap();
        assert_eq!(b.message_id(), Some("dr2:m"));
    }

    #[test]
    fn handshake_survives_one_byte_reads() {
        let mock = MockStream::new(server_script())
            .chunk(1)
            .at_end(AtEnd::Silent);
        let conn = Connection::from_stream(mock, &config()).unwrap();
        assert!(conn.jid().ends_with("/fcmxmpp5D0C9A1E"));
    }

    #[test]
    fn handshake_without_session_feature() {
        let features =
            "<stream:features><bind xmlns=\"urn:ietf:params:xml:ns:xmpp-bind\"/></stream:features>";
        let script = [
            HEADER,
            SASL_FEATURES,
            SUCCESS,
            HEADER,
            features,
            BIND_RESULT,
        ]
        .concat();
        let conn =
            Connection::from_stream(MockStream::new(script).at_end(AtEnd::Silent), &config())
                .unwrap();
        assert!(!conn.get_ref().written_str().contains("sess1"));
    }

    #[test]
    fn prefixed_features_are_accepted() {
        let features = SASL_FEATURES
            .replace("stream:features", "str:features")
            .replacen(
                "<str:features>",
                "<str:features xmlns:str=\"http://etherx.jabber.org/streams\">",
                1,
            );
        let script = [
            HEADER,
            &features,
            SUCCESS,
            HEADER,
            BIND_FEATURES,
            BIND_RESULT,
            SESSION_RESULT,
        ]
        .concat();
        Connection::from_stream(MockStream::new(script).at_end(AtEnd::Silent), &config()).unwrap();
    }

    #[test]
    fn auth_failure_carries_condition_not_key() {
        let failure =
            "<failure xmlns=\"urn:ietf:params:xml:ns:xmpp-sasl\"><not-authorized/></failure>";
        let script = [HEADER, SASL_FEATURES, failure].concat();
        let err = Connection::from_stream(MockStream::new(script), &config()).unwrap_err();
        match &err {
            Error::AuthFailed { condition } => assert_eq!(condition, "not-authorized"),
            other => panic!("{other:?}"),
        }
        assert!(!err.is_retryable());
        assert!(!format!("{err} {err:?}").contains(KEY));
    }

    #[test]
    fn auth_then_hang_up_is_auth_failure() {
        let script = [HEADER, SASL_FEATURES].concat();
        let err = Connection::from_stream(MockStream::new(script), &config()).unwrap_err();
        assert!(
            matches!(&err, Error::AuthFailed { condition } if condition == "connection-closed"),
            "{err:?}"
        );
    }

    #[test]
    fn the_key_is_never_sent_in_the_clear() {
        let mut mock = MockStream::new(server_script());
        mock.encrypted = false;
        let err = Connection::from_stream(mock, &config()).unwrap_err();
        assert!(
            matches!(&err, Error::Tls(t) if t.kind() == crate::TlsErrorKind::NotTls),
            "{err:?}"
        );
    }

    #[test]
    fn no_plain_mechanism() {
        let features = "<stream:features><mechanisms xmlns=\"urn:ietf:params:xml:ns:xmpp-sasl\"><mechanism>X-OAUTH2</mechanism></mechanisms></stream:features>";
        let err = Connection::from_stream(MockStream::new([HEADER, features].concat()), &config())
            .unwrap_err();
        assert!(
            matches!(err, Error::Protocol(crate::ProtocolError::NoPlainMechanism)),
            "{err:?}"
        );
    }

    #[test]
    fn stream_error_during_handshake() {
        let se = "<stream:error><host-unknown xmlns=\"urn:ietf:params:xml:ns:xmpp-streams\"/><text xmlns=\"urn:ietf:params:xml:ns:xmpp-streams\">no such host</text></stream:error>";
        let err =
            Connection::from_stream(MockStream::new([HEADER, se].concat()), &config()).unwrap_err();
        match err {
            Error::StreamError { condition, text } => {
                assert_eq!(condition, "host-unknown");
                assert_eq!(text.as_deref(), Some("no such host"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bind_error() {
        let bind_err = "<iq type=\"error\" id=\"bind1\"><error type=\"cancel\"><conflict xmlns=\"urn:ietf:params:xml:ns:xmpp-stanzas\"/></error></iq>";
        let script = [
            HEADER,
            SASL_FEATURES,
            SUCCESS,
            HEADER,
            BIND_FEATURES,
            bind_err,
        ]
        .concat();
        let err = Connection::from_stream(MockStream::new(script), &config()).unwrap_err();
        assert!(
            matches!(&err, Error::Protocol(crate::ProtocolError::BindFailed { condition }) if condition == "conflict"),
            "{err:?}"
        );
    }

    #[test]
    fn silent_server_times_out_in_handshake() {
        let mock = MockStream::new(HEADER).at_end(AtEnd::Silent);
        let t = Instant::now();
        let err = Connection::from_stream(mock, &config()).unwrap_err();
        assert!(matches!(err, Error::Timeout(Phase::Handshake)), "{err:?}");
        assert!(t.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn server_close_after_connect_is_closed() {
        let mut conn = connected("</stream:stream>");
        let err = conn
            .recv_event(Some(Duration::from_millis(50)))
            .unwrap_err();
        assert!(matches!(err, Error::Closed), "{err:?}");
        assert!(conn.is_closed());
        assert!(matches!(conn.send(&Message::to("t")), Err(Error::Closed)));
    }

    #[test]
    fn eof_mid_stanza_is_truncated() {
        let mock = MockStream::new(server_script() + "<message><data:gcm xmlns:data=\"google:mob");
        let mut conn = Connection::from_stream(mock, &config()).unwrap();
        let err = conn
            .recv_event(Some(Duration::from_millis(50)))
            .unwrap_err();
        assert!(matches!(err, Error::Xml(XmlError::Truncated)), "{err:?}");
        assert!(err.is_closed());
    }

    #[test]
    fn acks_nacks_and_errors_free_the_window() {
        let mut conn = connected("");
        let cfg_max = 100;
        assert_eq!(conn.window_free(), cfg_max);
        let a = conn.send(&Message::to("tok-a").message_id("m-1")).unwrap();
        let b = conn.send(&Message::to("tok-b").message_id("m-2")).unwrap();
        let c = conn.send(&Message::to("tok-c").message_id("m-3")).unwrap();
        assert_eq!((a.as_str(), b.as_str(), c.as_str()), ("m-1", "m-2", "m-3"));
        assert_eq!(conn.pending(), 3);
        let written = conn.get_ref().written_str();
        assert!(written.ends_with("<message id=\"m-3\"><gcm xmlns=\"google:mobile:data\">{\"to\":\"tok-c\",\"message_id\":\"m-3\"}</gcm></message>"), "{written}");

        conn.get_mut().push_input(ccs(
            r#"{"message_type":"ack","message_id":"m-1","from":"tok-a"}"#,
        ));
        conn.get_mut().push_input("  \n ");
        conn.get_mut().push_input(ccs(r#"{"message_type":"nack","message_id":"m-2","from":"tok-b","error":"DEVICE_UNREGISTERED","error_description":"gone"}"#));
        conn.get_mut().push_input("<message id=\"m-3\" type=\"error\"><gcm xmlns=\"google:mobile:data\">{\"to\":\"tok-c\"}</gcm><error code=\"400\" type=\"modify\"><bad-request xmlns=\"urn:ietf:params:xml:ns:xmpp-stanzas\"/></error></message>");
        let e1 = conn
            .recv_event(Some(Duration::from_millis(100)))
            .unwrap()
            .unwrap();
        assert!(
            matches!(&e1, Event::Ack(a) if a.message_id == "m-1"),
            "{e1:?}"
        );
        assert_eq!(conn.pending(), 2);
        let e2 = conn
            .recv_event(Some(Duration::from_millis(100)))
            .unwrap()
            .unwrap();
        assert!(
            matches!(&e2, Event::Nack(n) if n.code == NackCode::DeviceUnregistered),
            "{e2:?}"
        );
        let e3 = conn
            .recv_event(Some(Duration::from_millis(100)))
            .unwrap()
            .unwrap();
        assert!(
            matches!(&e3, Event::StanzaError(s) if s.condition == "bad-request"),
            "{e3:?}"
        );
        assert_eq!(conn.pending(), 0);
        // Duplicate or unknown acks never push the count below zero.
        conn.get_mut().push_input(ccs(
            r#"{"message_type":"ack","message_id":"m-1","from":"tok-a"}"#,
        ));
        conn.recv_event(Some(Duration::from_millis(100)))
            .unwrap()
            .unwrap();
        assert_eq!(conn.pending(), 0);
        assert_eq!(
            conn.recv_event(Some(Duration::from_millis(10))).unwrap(),
            None
        );
    }

    #[test]
    fn window_full_sends_nothing() {
        let mock = MockStream::new(server_script()).at_end(AtEnd::Silent);
        let mut conn = Connection::from_stream(mock, &config().max_pending(2)).unwrap();
        conn.send(&Message::to("t")).unwrap();
        conn.send(&Message::to("t")).unwrap();
        let before = conn.get_ref().written.len();
        assert!(matches!(
            conn.send(&Message::to("t")),
            Err(Error::WindowFull)
        ));
        assert_eq!(conn.get_ref().written.len(), before);
    }

    #[test]
    fn invalid_message_sends_nothing() {
        let mut conn = connected("");
        let before = conn.get_ref().written.len();
        let err = conn
            .send(&Message::to("t").time_to_live(2_419_201))
            .unwrap_err();
        assert!(
            matches!(&err, Error::InvalidMessage(m) if m.field == "time_to_live"),
            "{err:?}"
        );
        assert_eq!(conn.get_ref().written.len(), before);
        assert_eq!(conn.pending(), 0);
    }

    #[test]
    fn upstream_and_receipt_acks_are_exact() {
        let mut conn = connected(
            &("<message to=\"123456789012@gcm.googleapis.com\" from=\"devices@gcm.googleapis.com\" type=\"normal\"><gcm xmlns=\"google:mobile:data\">{\"category\":\"com.example\",\"data\":{\"k\":\"a &amp; b\"},\"message_id\":\"up-1\",\"from\":\"DEV\"}</gcm></message>".to_string()
                + "<message to=\"123456789012@gcm.googleapis.com\" from=\"devices@gcm.googleapis.com\" type=\"normal\"><gcm xmlns=\"google:mobile:data\">{\"message_type\":\"receipt\",\"message_id\":\"dr2:m-9\",\"from\":\"gcm.googleapis.com\",\"category\":\"com.example\",\"data\":{\"message_status\":\"MESSAGE_SENT_TO_DEVICE\",\"original_message_id\":\"m-9\",\"device_registration_id\":\"DEV\",\"message_sent_timestamp\":\"1430277821658\"}}</gcm></message>"),
        );
        let before = conn.get_ref().written.len();
        let up = conn
            .recv_event(Some(Duration::from_millis(100)))
            .unwrap()
            .unwrap();
        match &up {
            Event::Upstream(u) => assert_eq!(u.data.get("k").map(String::as_str), Some("a & b")),
            other => panic!("{other:?}"),
        }
        conn.ack(&up).unwrap();
        let rc = conn
            .recv_event(Some(Duration::from_millis(100)))
            .unwrap()
            .unwrap();
        assert!(matches!(&rc, Event::Receipt(r) if r.original_message_id == "m-9"));
        conn.ack(&rc).unwrap();
        let written = &conn.get_ref().written_str()[before..];
        assert_eq!(
            written,
            "<message><gcm xmlns=\"google:mobile:data\">{\"to\":\"DEV\",\"message_id\":\"up-1\",\"message_type\":\"ack\"}</gcm></message>\
             <message><gcm xmlns=\"google:mobile:data\">{\"to\":\"gcm.googleapis.com\",\"message_id\":\"dr2:m-9\",\"message_type\":\"ack\"}</gcm></message>"
        );
    }

    #[test]
    fn acks_ignore_the_window() {
        let up = "<message type=\"normal\"><gcm xmlns=\"google:mobile:data\">{\"message_id\":\"up-1\",\"from\":\"DEV\",\"data\":{}}</gcm></message>";
        let mock = MockStream::new(server_script() + up).at_end(AtEnd::Silent);
        let mut conn = Connection::from_stream(mock, &config().max_pending(1)).unwrap();
        conn.send(&Message::to("t")).unwrap();
        let ev = conn
            .recv_event(Some(Duration::from_millis(100)))
            .unwrap()
            .unwrap();
        conn.ack(&ev).unwrap();
        assert!(conn
            .get_ref()
            .written_str()
            .ends_with("\"message_type\":\"ack\"}</gcm></message>"));
    }

    #[test]
    fn draining_by_control_and_by_nack() {
        let mut conn = connected(&ccs(
            r#"{"message_type":"control","control_type":"CONNECTION_DRAINING"}"#,
        ));
        assert!(!conn.is_draining());
        let ev = conn
            .recv_event(Some(Duration::from_millis(100)))
            .unwrap()
            .unwrap();
        assert!(matches!(&ev, Event::Control(c) if c.kind == ControlKind::ConnectionDraining));
        assert!(conn.is_draining());

        let mut conn = connected(&ccs(
            r#"{"message_type":"nack","message_id":"x","error":"CONNECTION_DRAINING"}"#,
        ));
        conn.recv_event(Some(Duration::from_millis(100)))
            .unwrap()
            .unwrap();
        assert!(conn.is_draining());
    }

    #[test]
    fn server_ping_is_answered_and_pong_consumed() {
        let mut conn = connected("<iq from=\"gcm.googleapis.com\" id=\"s1\" type=\"get\"><ping xmlns=\"urn:xmpp:ping\"/></iq>");
        assert_eq!(
            conn.recv_event(Some(Duration::from_millis(30))).unwrap(),
            None
        );
        // The pong is flushed by the next I/O call.
        conn.flush().unwrap();
        assert!(conn
            .get_ref()
            .written_str()
            .ends_with("<iq type=\"result\" id=\"s1\" to=\"gcm.googleapis.com\"/>"));

        conn.ping().unwrap();
        assert!(conn.get_ref().written_str().ends_with("<iq to=\"gcm.googleapis.com\" id=\"ping1\" type=\"get\"><ping xmlns=\"urn:xmpp:ping\"/></iq>"));
        assert!(conn.ping.is_some());
        conn.get_mut()
            .push_input("<iq from=\"gcm.googleapis.com\" id=\"ping1\" type=\"result\"/>");
        assert_eq!(
            conn.recv_event(Some(Duration::from_millis(30))).unwrap(),
            None
        );
        assert!(conn.ping.is_none());
    }

    #[test]
    fn unanswered_ping_declares_the_connection_dead() {
        let ka = Keepalive {
            whitespace_after: None,
            ping_after: Some(Duration::from_millis(20)),
            dead_after: Duration::from_millis(40),
        };
        let mock = MockStream::new(server_script()).at_end(AtEnd::Silent);
        let mut conn = Connection::from_stream(mock, &config().keepalive(ka)).unwrap();
        let t = Instant::now();
        let err = conn.recv_event(None).unwrap_err();
        assert!(matches!(err, Error::Timeout(Phase::Read)), "{err:?}");
        assert!(t.elapsed() < Duration::from_secs(2));
        assert!(conn
            .get_ref()
            .written_str()
            .contains("<ping xmlns=\"urn:xmpp:ping\"/>"));
        assert!(conn.is_closed());
    }

    #[test]
    fn total_silence_past_the_read_timeout_is_dead() {
        let ka = Keepalive::default().ping_after(None).whitespace_after(None);
        let mock = MockStream::new(server_script()).at_end(AtEnd::Silent);
        let cfg = config()
            .keepalive(ka)
            .read_timeout(Some(Duration::from_millis(60)));
        let mut conn = Connection::from_stream(mock, &cfg).unwrap();
        let t = Instant::now();
        let err = conn.recv_event(None).unwrap_err();
        assert!(matches!(err, Error::Timeout(Phase::Read)), "{err:?}");
        assert!(t.elapsed() >= Duration::from_millis(50) && t.elapsed() < Duration::from_secs(2));
        assert!(conn.is_closed());
    }

    #[test]
    fn whitespace_keepalive_after_idle_writes() {
        let ka = Keepalive {
            whitespace_after: Some(Duration::from_millis(10)),
            ping_after: None,
            dead_after: Duration::from_secs(30),
        };
        let mock = MockStream::new(server_script()).at_end(AtEnd::Silent);
        let mut conn = Connection::from_stream(mock, &config().keepalive(ka)).unwrap();
        assert_eq!(
            conn.recv_event(Some(Duration::from_millis(50))).unwrap(),
            None
        );
        assert!(conn.get_ref().written_str().ends_with(' '));
    }

    #[test]
    fn try_recv_does_not_wait() {
        let mut conn = connected("");
        let t = Instant::now();
        assert_eq!(conn.try_recv_event().unwrap(), None);
        assert!(t.elapsed() < Duration::from_millis(50));
        assert!(conn.get_ref().nonblocking, "a zero wait reads nonblocking");
        conn.get_mut().push_input(ccs(
            r#"{"message_type":"control","control_type":"SOMETHING_NEW"}"#,
        ));
        let ev = conn.try_recv_event().unwrap().unwrap();
        assert!(
            matches!(ev, Event::Control(c) if c.kind == ControlKind::Other("SOMETHING_NEW".into()))
        );
        // Writes switch the socket back to blocking.
        conn.send(&Message::to("t")).unwrap();
        assert!(!conn.get_ref().nonblocking);
    }

    #[test]
    fn bad_payload_is_not_fatal() {
        let mut conn = connected(
            &("<message><other xmlns=\"x\"/></message>".to_string()
                + &ccs("[1,2]")
                + &ccs(r#"{"message_type":"ack","message_id":"m-1"}"#)),
        );
        let e = conn
            .recv_event(Some(Duration::from_millis(50)))
            .unwrap_err();
        assert!(
            matches!(e, Error::Protocol(crate::ProtocolError::MissingPayload)),
            "{e:?}"
        );
        let e = conn
            .recv_event(Some(Duration::from_millis(50)))
            .unwrap_err();
        assert!(
            matches!(e, Error::Protocol(crate::ProtocolError::BadPayload { .. })),
            "{e:?}"
        );
        assert!(!conn.is_closed());
        let ev = conn
            .recv_event(Some(Duration::from_millis(50)))
            .unwrap()
            .unwrap();
        assert!(ev.is_ack());
    }

    #[test]
    fn malformed_xml_closes() {
        let mut conn = connected("<message><a></b></message>");
        let e = conn
            .recv_event(Some(Duration::from_millis(50)))
            .unwrap_err();
        assert!(matches!(e, Error::Xml(_)), "{e:?}");
        assert!(conn.is_closed());
    }

    #[test]
    fn close_returns_late_events() {
        let mut conn = connected("");
        conn.send(&Message::to("t").message_id("m-1")).unwrap();
        conn.get_mut().push_input(ccs(
            r#"{"message_type":"ack","message_id":"m-1","from":"t"}"#,
        ));
        conn.get_mut().push_input("</stream:stream>");
        let events = conn.close().unwrap();
        assert_eq!(events.len(), 1);
        assert!(events[0].is_ack());
    }

    #[test]
    fn failed_write_poisons_the_connection() {
        let mut conn = connected("");
        let at = conn.get_ref().written.len();
        conn.get_mut().fail_write_after = Some((at, std::io::ErrorKind::WouldBlock));
        let err = conn.send(&Message::to("t")).unwrap_err();
        assert!(matches!(err, Error::Timeout(Phase::Write)), "{err:?}");
        assert!(conn.is_closed());
        assert!(matches!(conn.send(&Message::to("t")), Err(Error::Closed)));
    }

    #[test]
    fn json_is_escaped_in_the_stanza() {
        let mut conn = connected("");
        conn.send(&Message::to("t").message_id("m<1>").data("k", "a & b < c"))
            .unwrap();
        let w = conn.get_ref().written_str();
        assert!(w.contains("<message id=\"m&lt;1&gt;\">"), "{w}");
        assert!(w.contains("\"k\":\"a &amp; b &lt; c\""), "{w}");
    }
}
