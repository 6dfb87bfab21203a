//! The CCS session after the handshake, free of I/O: it holds no stream and is
//! given the time.
//!
//! It takes what the server sent (one packet at a time, and the moments bytes
//! arrived or were written) and the timer ticks, and answers with events,
//! errors, the bytes to write (its output buffer) and when it next needs to be
//! woken. It owns the pending window, the draining flag, ack ids, the
//! keepalive and ping timers and the closed state; [`Connection`](super::Connection)
//! only moves bytes.

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};
use std::time::{Duration, Instant};

use crate::config::{Config, Keepalive};
use crate::error::{Error, InvalidMessage, Phase, ProtocolError, Result};
use crate::event::{ControlKind, Event, NackCode, Settlement};
use crate::message::Message;
use crate::ns;
use crate::stream::stream_error;
use crate::time::later;
use crate::wire;
use crate::xml::{Element, Packet};

/// The pending set's hasher: a multiply-rotate mix of eight bytes at a time,
/// several times cheaper than the standard SipHash on message ids. The set
/// holds at most `max_pending` (100) ids, so even ids chosen to collide cost
/// no more than a scan of the window.
#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(K);
        }
        for &b in chunks.remainder() {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(K);
        }
    }

    fn finish(&self) -> u64 {
        // hashbrown takes its control bits from the top byte: fold the low ones in.
        self.0 ^ (self.0 >> 29)
    }
}

/// Post-handshake CCS state (see the module docs).
#[derive(Debug)]
pub(crate) struct Session {
    domain: String,
    keepalive: Keepalive,
    read_timeout: Option<Duration>,
    max_pending: usize,
    pending: HashSet<String, BuildHasherDefault<IdHasher>>,
    /// False once the driver's caller keeps the window itself
    /// ([`untrack`](Self::untrack)): `pending` stays empty then.
    tracked: bool,
    draining: bool,
    /// The stream ended (either side, an error, or the peer was found dead).
    closed: bool,
    /// Our `</stream:stream>` is queued: nothing more may be written.
    closing: bool,
    /// The ping in flight: its sequence number and when it was sent.
    ping: Option<(u64, Instant)>,
    ping_seq: u64,
    ack_seq: u64,
    last_read: Instant,
    last_write: Instant,
    /// Stanzas to write, whole ones only.
    out: String,
    /// Scratch for one JSON payload.
    json: String,
}

impl Session {
    /// A session that starts at `now` (the end of the handshake).
    pub(crate) fn new(config: &Config, now: Instant) -> Self {
        Session {
            domain: config.domain.clone(),
            keepalive: config.keepalive,
            read_timeout: config.timeouts.read,
            max_pending: config.max_pending,
            pending: HashSet::with_capacity_and_hasher(config.max_pending, Default::default()),
            tracked: true,
            draining: false,
            closed: false,
            closing: false,
            ping: None,
            ping_seq: 0,
            ack_seq: 0,
            last_read: now,
            last_write: now,
            out: String::with_capacity(16 * 1024),
            json: String::with_capacity(1024),
        }
    }

    pub(crate) fn pending(&self) -> usize {
        self.pending.len()
    }

    pub(crate) fn pending_ids(&self) -> impl Iterator<Item = &str> {
        self.pending.iter().map(String::as_str)
    }

    pub(crate) fn window_free(&self) -> usize {
        self.max_pending.saturating_sub(self.pending.len())
    }

    pub(crate) fn max_pending(&self) -> usize {
        self.max_pending
    }

    /// The caller keeps the window from now on (the worker's engine: one
    /// owner of in-flight state): [`send`](Self::send) no longer checks or
    /// records pending ids, and answers are not matched against them. The
    /// caller keeps at most `max_pending` in flight and never one id twice.
    pub(crate) fn untrack(&mut self) {
        if self.tracked {
            self.tracked = false;
            self.pending = HashSet::default();
        }
    }

    pub(crate) fn is_draining(&self) -> bool {
        self.draining
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed
    }

    /// Marks the session closed (the driver's stream failed or was given up).
    pub(crate) fn mark_closed(&mut self) {
        self.closed = true;
    }

    /// The bytes to write; the driver writes and clears them, then calls
    /// [`written`](Self::written).
    pub(crate) fn output(&mut self) -> &mut String {
        &mut self.out
    }

    pub(crate) fn has_output(&self) -> bool {
        !self.out.is_empty()
    }

    /// Bytes from the server arrived at `at`.
    pub(crate) fn read_at(&mut self, at: Instant) {
        self.last_read = self.last_read.max(at);
    }

    /// The output was written at `at`.
    pub(crate) fn written(&mut self, at: Instant) {
        self.last_write = self.last_write.max(at);
    }

    /// `Err(Closed)` once nothing more may be written.
    fn writable(&self) -> Result<()> {
        if self.closed || self.closing {
            return Err(Error::Closed);
        }
        Ok(())
    }

    /// Queues one downstream message; `validated`: the caller has already
    /// run [`Message::validate`] on it (the worker's messages were validated
    /// when the application handed them over), so it is not run twice.
    pub(crate) fn send(&mut self, message: &Message, validated: bool) -> Result<()> {
        self.writable()?;
        if self.draining {
            return Err(Error::Draining);
        }
        if validated {
            debug_assert!(message.validate().is_ok(), "not validated");
        } else {
            message.validate()?;
        }
        if !self.tracked {
            wire::message(&mut self.out, message, &mut self.json);
            return Ok(());
        }
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
        wire::message(&mut self.out, message, &mut self.json);
        self.pending.insert(message.id().to_string());
        Ok(())
    }

    /// Queues the ack of message `message_id` from `to`, draining or not;
    /// acks never count against the window.
    pub(crate) fn ack(&mut self, to: &str, message_id: &str) -> Result<()> {
        self.writable()?;
        self.ack_seq += 1;
        wire::ack(&mut self.out, self.ack_seq, to, message_id, &mut self.json);
        Ok(())
    }

    /// Queues a whitespace keepalive.
    pub(crate) fn keepalive(&mut self) -> Result<()> {
        self.writable()?;
        wire::keepalive(&mut self.out);
        Ok(())
    }

    /// Queues a ping; its answer (or any other bytes) must come within
    /// `keepalive.dead_after` of `now`.
    pub(crate) fn ping(&mut self, now: Instant) -> Result<()> {
        self.writable()?;
        self.ping_seq += 1;
        wire::ping(&mut self.out, &self.domain, self.ping_seq);
        if self.ping.is_none() {
            self.ping = Some((self.ping_seq, now));
        }
        Ok(())
    }

    /// Queues `</stream:stream>`; later writes are refused, while what the
    /// server still sends is handled as before.
    pub(crate) fn close(&mut self) -> Result<()> {
        self.writable()?;
        wire::close(&mut self.out);
        self.closing = true;
        Ok(())
    }

    /// Runs the timers at `now`: the connection is dead after `timeouts.read`
    /// of silence, or `keepalive.dead_after` of silence since a ping; a ping
    /// goes out after `keepalive.ping_after` of silence, a space after
    /// `keepalive.whitespace_after` without writing.
    ///
    /// Any bytes read after a ping prove the server alive, pong or not: the
    /// ping is retired then, so a lost pong never stops later pings.
    pub(crate) fn tick(&mut self, now: Instant) -> Result<()> {
        if self.closed || self.closing {
            return Ok(());
        }
        if let Some(limit) = self.read_timeout {
            if now.saturating_duration_since(self.last_read) >= limit {
                log::info!("server silent for {limit:?}: connection dead");
                self.closed = true;
                return Err(Error::Timeout(Phase::Read));
            }
        }
        if let Some((_, sent)) = self.ping {
            if self.last_read > sent {
                log::debug!("server alive without answering our ping");
                self.ping = None;
            } else if now.saturating_duration_since(sent) >= self.keepalive.dead_after {
                log::info!(
                    "server silent {:?} after ping: connection dead",
                    self.keepalive.dead_after
                );
                self.closed = true;
                return Err(Error::Timeout(Phase::Read));
            }
        }
        if let Some(after) = self.keepalive.ping_after {
            if self.ping.is_none() && now.saturating_duration_since(self.last_read) >= after {
                return self.ping(now);
            }
        }
        if let Some(after) = self.keepalive.whitespace_after {
            if self.out.is_empty() && now.saturating_duration_since(self.last_write) >= after {
                self.keepalive()?;
            }
        }
        Ok(())
    }

    /// The next moment [`tick`](Self::tick) has work to do (`None`: never).
    pub(crate) fn next_wake(&self) -> Option<Instant> {
        if self.closed || self.closing {
            return None;
        }
        let mut next: Option<Instant> = None;
        let mut consider = |t: Instant| next = Some(next.map_or(t, |n| n.min(t)));
        if let Some(limit) = self.read_timeout {
            consider(later(self.last_read, limit));
        }
        match self.ping {
            // Bytes after the ping: due now, to retire it.
            Some((_, sent)) if self.last_read > sent => consider(self.last_read),
            Some((_, sent)) => consider(later(sent, self.keepalive.dead_after)),
            None => {
                if let Some(after) = self.keepalive.ping_after {
                    consider(later(self.last_read, after));
                }
            }
        }
        if let Some(after) = self.keepalive.whitespace_after {
            consider(later(self.last_write, after));
        }
        next
    }

    /// Handles one packet from the server: an event, `None` (pings, pongs,
    /// ignored stanzas), or an error. Stream end, stream errors and a second
    /// stream header close the session; a bad `<gcm>` payload is an error for
    /// that stanza only.
    pub(crate) fn on_packet(&mut self, packet: Packet) -> Result<Option<Event>> {
        if self.closed {
            return Err(Error::Closed);
        }
        let el = match packet {
            Packet::Stanza(el) => el,
            Packet::StreamEnd => {
                self.closed = true;
                log::info!("server closed the stream");
                return Err(Error::Closed);
            }
            Packet::StreamStart(_) => {
                self.closed = true;
                return Err(ProtocolError::Unexpected {
                    expected: "a stanza",
                    got: "a second stream header".into(),
                }
                .into());
            }
        };
        self.on_stanza(&el)
    }

    /// Handles the `<gcm>` payload of a message stanza of the common shape
    /// (the reader's fast path), exactly as [`on_packet`](Self::on_packet)
    /// handles the whole stanza. An ack or nack of a pending message takes
    /// the pending id's `String` as its `message_id`: no allocation for it.
    pub(crate) fn on_gcm(&mut self, json: &str) -> Result<Option<Event>> {
        if self.closed {
            return Err(Error::Closed);
        }
        let json = json.trim();
        if let Some(s) = Settlement::scan(json).filter(Settlement::settles) {
            let id = match self.tracked {
                true => self.pending.take(s.message_id()),
                false => Some(s.message_id().to_string()),
            };
            if let Some(id) = id {
                let event = s.into_event(id);
                if event.is_connection_draining() && !self.draining {
                    log::info!("connection draining (nack)");
                    self.draining = true;
                }
                return Ok(Some(event));
            }
        }
        let event = Event::from_json(json)?;
        self.account(&event);
        Ok(Some(event))
    }

    /// As [`on_packet`](Self::on_packet), for a stanza that arrived during
    /// the handshake, and while closing (after our `</stream:stream>`).
    pub(crate) fn on_stanza(&mut self, el: &Element) -> Result<Option<Event>> {
        if el.is("message", ns::CLIENT) {
            let event = Event::from_stanza(el)?;
            if let Some(ev) = &event {
                self.account(ev);
            }
            return Ok(event);
        }
        if el.is("iq", ns::CLIENT) {
            self.on_iq(el);
            return Ok(None);
        }
        if el.is("error", ns::STREAM) {
            self.closed = true;
            let e = stream_error(el);
            log::info!("{e}");
            return Err(e);
        }
        log::debug!("ignoring <{}> stanza", el.name());
        Ok(None)
    }

    /// Pongs retire our ping; pings from the server are answered.
    fn on_iq(&mut self, el: &Element) {
        let id = el.attr("id").unwrap_or("");
        match el.attr("type") {
            Some("result") | Some("error") => {
                if let Some((seq, _)) = self.ping {
                    if wire::ping_seq(id) == Some(seq) {
                        self.ping = None;
                    }
                }
            }
            Some("get") if el.child("ping", ns::PING).is_some() => {
                if self.writable().is_ok() {
                    wire::pong(&mut self.out, id, el.attr("from"));
                }
            }
            _ => log::debug!("ignoring iq {id}"),
        }
    }

    /// Window and draining bookkeeping for an incoming event. Only acks,
    /// nacks and stanza errors about downstream messages free the window; an
    /// [`Event::AckRefused`] never does.
    fn account(&mut self, event: &Event) {
        match event {
            Event::Ack(a) if self.tracked && !self.pending.remove(&a.message_id) => {
                log::debug!("ack for a message not pending here: {}", a.message_id);
            }
            Event::Nack(n) => {
                if self.tracked && !self.pending.remove(&n.message_id) {
                    log::debug!("nack for a message not pending here: {}", n.message_id);
                }
                if n.code == NackCode::ConnectionDraining && !self.draining {
                    log::info!("connection draining (nack)");
                    self.draining = true;
                }
            }
            Event::StanzaError(e) if self.tracked => {
                let removed = e.id.as_deref().is_some_and(|id| self.pending.remove(id));
                if !removed {
                    if let Some(id) = e.message_id.as_deref() {
                        self.pending.remove(id);
                    }
                }
            }
            Event::AckRefused(a) => {
                log::warn!(
                    "the server refused our ack of {:?}: {:?}",
                    a.message_id,
                    a.reason
                );
            }
            Event::Control(c) if c.kind == ControlKind::ConnectionDraining && !self.draining => {
                log::info!("connection draining (control)");
                self.draining = true;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests;
