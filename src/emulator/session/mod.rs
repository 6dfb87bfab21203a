//! One client connection: TLS accept, the XMPP handshake, then the CCS message loop.
//!
//! This file is the I/O loop; [`handshake`] answers the XMPP handshake and
//! [`ccs`] the CCS traffic once bound, both on the session's buffers only, so
//! their tests (in `tests.rs`) need no socket.
//!
//! The session thread owns its TLS stream, whose bytes a reader thread forwards (see
//! `transport::ChannelSocket`), and alternates: wait for bytes at most until the next
//! held-back answer is due or the poll interval passes (a channel wait, exact to well
//! under a millisecond, where a socket read timeout would be rounded up to the kernel's
//! tick), handle every complete stanza in it, run timers (held-back answers, draining,
//! keepalive) and script commands, then write everything queued in one write call. Ledger
//! changes and events are collected per batch and published just before that write.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use native_tls::{HandshakeError, TlsStream};

use super::ledger::{LedgerOp, LiveLedger};
use super::outbound::{OutItem, OutKind};
use super::script::Script;
use super::shared::{lock, Command, SessionCtl, Shared};
use super::wire::{self, NS_SASL};
use super::{ClientBytes, ConnId, EmulatorEvent};
use crate::error::XmlError;
use crate::event::NackCode;
use crate::transport::{is_timeout, ChannelSocket, SetTimeout};
use crate::xml::{
    first_forbidden_char, Element, GcmPayload, Node, Packet, RawItem, RawPayload, ReaderLimits,
    StanzaReader,
};

/// Socket timeout while the TLS handshake runs (so a silent client cannot block shutdown).
const TLS_STEP: Duration = Duration::from_millis(200);
/// Socket write timeout; a blocked write is retried until [`WRITE_STALL`] or shutdown.
const WRITE_STEP: Duration = Duration::from_millis(100);
/// A client that reads nothing for this long while we have bytes for it is dropped.
const WRITE_STALL: Duration = Duration::from_secs(30);
/// Longest resource accepted at bind (RFC 6122 allows 1023 bytes).
const MAX_RESOURCE: usize = 1023;

type Tls = TlsStream<ChannelSocket>;

mod ccs;
mod handshake;
#[cfg(test)]
mod tests;

/// Runs one connection to its end and unregisters it.
pub(crate) fn run(shared: Arc<Shared>, id: ConnId, tcp: TcpStream, ctl: Arc<SessionCtl>) {
    let mut session = Session::new(Arc::clone(&shared), id, Arc::clone(&ctl));
    // A bug must not leave the connection registered: catch it, log it, clean up.
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| match tls_accept(&shared, tcp, &ctl) {
        Ok(mut tls) => session.run(&mut tls),
        Err(reason) => reason,
    }));
    let reason = outcome.unwrap_or_else(|_| {
        log::error!("ccs emulator: {id}: session thread panicked (emulator bug)");
        "emulator bug: the session panicked".to_string()
    });
    session.finish(reason);
}

fn tls_accept(shared: &Shared, tcp: TcpStream, ctl: &SessionCtl) -> Result<Tls, String> {
    let setup = tcp
        .set_write_timeout(Some(TLS_STEP))
        .and_then(|()| tcp.set_nodelay(true))
        .and_then(|()| ChannelSocket::named(tcp, "fcm-emu-read"))
        .and_then(|mut sock| {
            sock.set_read_timeout(Some(TLS_STEP))?;
            Ok(sock)
        });
    let sock = match setup {
        Ok(sock) => sock,
        Err(e) => return Err(format!("socket setup failed: {e}")),
    };
    // Scripting commands cut the session's wait short.
    ctl.set_waker(sock.wake_sender());
    let deadline = crate::time::later(Instant::now(), shared.settings.handshake_timeout);
    let mut attempt = shared.acceptor.accept(sock);
    loop {
        match attempt {
            Ok(tls) => return Ok(tls),
            Err(HandshakeError::Failure(e)) => {
                return Err(format!("tls handshake failed (not a TLS client?): {e}"))
            }
            Err(HandshakeError::WouldBlock(mid)) => {
                if shared.stop.load(Ordering::Acquire) {
                    return Err("emulator shut down during the tls handshake".to_string());
                }
                if Instant::now() >= deadline {
                    return Err("tls handshake timed out".to_string());
                }
                attempt = mid.handshake();
            }
        }
    }
}

/// Where the XMPP handshake is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the client's first stream header.
    Header,
    /// Header answered with the SASL features; waiting for `<auth>`.
    Auth,
    /// SASL succeeded; waiting for the restarted stream header.
    Header2,
    /// Restarted stream answered with bind/session features; waiting for bind.
    Bind,
    /// Bound: CCS traffic.
    Ready,
}

/// How a session ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EndMode {
    /// Write what is queued plus `</stream:stream>`, then close TLS and TCP.
    CloseStream,
    /// Write what is queued, then close TCP without `</stream:stream>`.
    FlushThenDrop,
    /// Close TCP at once, writing nothing more.
    Abrupt,
}

/// An answer to a downstream message, written now or after the ack delay.
#[derive(Debug)]
struct Answer {
    /// Arrival index of the message on this connection (for the ledger).
    idx: u64,
    message_id: String,
    target: String,
    nack: Option<(NackCode, String)>,
    receipt: bool,
}

struct Session {
    shared: Arc<Shared>,
    id: ConnId,
    ctl: Arc<SessionCtl>,
    script: Arc<Script>,
    script_version: u64,
    reader: StanzaReader,
    /// Bytes to write at the end of this batch.
    out: Vec<u8>,
    /// Scratch for building one stanza.
    xml: String,
    /// The stanza id and payload of a message taken by the reader's fast path.
    fast_payload: String,
    /// Scratch for building one JSON payload.
    json: String,
    phase: Phase,
    header_sent: bool,
    /// A stream header was just read and nothing after it yet (self-closing detection).
    just_opened: bool,
    domain: String,
    jid: String,
    ledger: Option<Arc<Mutex<LiveLedger>>>,
    ops: Vec<LedgerOp>,
    events: Vec<EmulatorEvent>,
    delayed: VecDeque<(Instant, Answer)>,
    /// Upstream messages and receipts written here and not acked yet (at most [`WINDOW`]).
    delivered: HashMap<String, OutKind>,
    /// Upstream messages and receipts for this connection waiting for room in `delivered`.
    held: VecDeque<OutItem>,
    /// Outbound ids the client acked in this batch (removed from the shared store at flush).
    acked_out: Vec<String>,
    /// Receipts written in this batch (registered in the shared store at flush).
    new_receipts: Vec<(String, Arc<str>)>,
    /// Downstream messages with a usable `message_id` (the ledger's arrival index).
    received: u64,
    /// Every downstream message stanza, for the pending count.
    downstream_in: u64,
    /// Answers (ack, nack, stanza error) already written.
    answered_written: u64,
    /// Answers queued in `out`, not yet written.
    answered_queued: u64,
    max_pending: usize,
    window_violations: usize,
    /// Message stanzas since bind (for `drop_every`).
    messages: usize,
    /// Message stanzas still to receive before a `drop_after`.
    drop_countdown: Option<usize>,
    draining: bool,
    /// Since when nothing has been in flight on a draining connection.
    drain_quiet_since: Option<Instant>,
    started: Instant,
    last_write: Instant,
    ending: Option<(EndMode, String)>,
    /// What the client wrote, when recording is on (see `Tap`).
    recorded: Option<ClientBytes>,
}

impl Session {
    fn new(shared: Arc<Shared>, id: ConnId, ctl: Arc<SessionCtl>) -> Self {
        let (script, script_version) = shared.script.snapshot();
        let limits = ReaderLimits {
            max_stanza_size: shared.settings.max_stanza_size,
            ..ReaderLimits::default()
        };
        let now = Instant::now();
        Session {
            shared,
            id,
            ctl,
            script,
            script_version,
            reader: StanzaReader::new(limits),
            out: Vec::with_capacity(16 * 1024),
            xml: String::with_capacity(1024),
            fast_payload: String::with_capacity(1024),
            json: String::with_capacity(512),
            phase: Phase::Header,
            header_sent: false,
            just_opened: false,
            domain: wire::DEFAULT_DOMAIN.to_string(),
            jid: String::new(),
            ledger: None,
            ops: Vec::new(),
            events: Vec::new(),
            delayed: VecDeque::new(),
            delivered: HashMap::new(),
            held: VecDeque::new(),
            acked_out: Vec::new(),
            new_receipts: Vec::new(),
            received: 0,
            downstream_in: 0,
            answered_written: 0,
            answered_queued: 0,
            max_pending: 0,
            window_violations: 0,
            messages: 0,
            drop_countdown: None,
            draining: false,
            drain_quiet_since: None,
            started: now,
            last_write: now,
            ending: None,
            recorded: None,
        }
    }

    // -- the loop -------------------------------------------------------------------------

    fn run(&mut self, tls: &mut Tls) -> String {
        if self.shared.settings.record_client_bytes > 0 {
            self.recorded = Some(ClientBytes {
                conn: self.id,
                bytes: Vec::new(),
                complete: true,
            });
        }
        let poll = self.shared.settings.poll;
        let setup = SetTimeout::set_write_timeout(tls, Some(WRITE_STEP));
        if let Err(e) = setup {
            return format!("socket setup failed: {e}");
        }
        loop {
            if self.shared.stop.load(Ordering::Acquire) {
                self.end(EndMode::CloseStream, "emulator shut down");
            }
            if self.ending.is_none() {
                self.poll_commands();
                self.refresh_script();
                self.timers(Instant::now());
            }
            if self.ending.is_none() && !self.out.is_empty() {
                if let Err(e) = self.flush(tls) {
                    return format!("write failed: {e}");
                }
            }
            if self.ending.is_none() {
                // Wake for the next held-back answer when it is due.
                let now = Instant::now();
                let wait = self.delayed.front().map_or(poll, |(due, _)| {
                    due.saturating_duration_since(now).min(poll)
                });
                if let Err(e) = SetTimeout::set_read_timeout(tls, Some(wait)) {
                    return format!("socket setup failed: {e}");
                }
                let read = match &mut self.recorded {
                    None => self.reader.read_from(tls),
                    Some(rec) => self.reader.read_from(&mut Tap {
                        inner: tls,
                        rec,
                        budget: &self.shared.record_budget,
                    }),
                };
                match read {
                    Ok(0) => {
                        let why = match self.reader.finish() {
                            Err(_) => "client closed the connection inside a stanza",
                            Ok(()) => "client closed the connection (eof)",
                        };
                        self.end(EndMode::Abrupt, why);
                    }
                    Ok(_) => {
                        // Commands and rules issued before these bytes were sent apply to them.
                        self.poll_commands();
                        self.refresh_script();
                        self.process_packets();
                    }
                    Err(e) if is_timeout(&e) => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => self.end(EndMode::Abrupt, &format!("read failed: {e}")),
                }
            }
            if self.ending.is_none() {
                self.timers(Instant::now());
            }
            if let Some((mode, reason)) = self.ending.take() {
                self.close(tls, mode);
                return reason;
            }
            if let Err(e) = self.flush(tls) {
                return format!("write failed: {e}");
            }
        }
    }

    fn end(&mut self, mode: EndMode, reason: &str) {
        if self.ending.is_none() {
            self.ending = Some((mode, reason.to_string()));
        }
    }

    fn close(&mut self, tls: &mut Tls, mode: EndMode) {
        match mode {
            EndMode::CloseStream => {
                if self.header_sent {
                    self.out.extend_from_slice(wire::STREAM_END.as_bytes());
                }
                if self.flush(tls).is_ok() {
                    let _ = tls.shutdown();
                }
            }
            EndMode::FlushThenDrop => {
                let _ = self.flush(tls);
            }
            EndMode::Abrupt => {
                self.out.clear();
                self.publish(false);
            }
        }
        let _ = tls.get_ref().shutdown();
    }

    /// Writes everything queued in one write call (retried across socket timeouts).
    ///
    /// The batch's ledger changes and events are published just before the write, so a
    /// client that reads an answer finds it in the ledger already. (A write that then fails
    /// ends the connection; its answers stay recorded as sent, as a server would see it.)
    fn flush(&mut self, tls: &mut Tls) -> io::Result<()> {
        self.publish_outbound();
        self.publish(true);
        if self.out.is_empty() {
            return Ok(());
        }
        let result = write_all(tls, &self.out, &self.shared);
        self.out.clear();
        if result.is_ok() {
            self.answered_written += self.answered_queued;
            self.last_write = Instant::now();
        }
        self.answered_queued = 0;
        result
    }

    /// Updates the shared outbound store: upstream acked in this batch, receipts created.
    fn publish_outbound(&mut self) {
        if self.acked_out.is_empty() && self.new_receipts.is_empty() {
            return;
        }
        let mut st = self.shared.state();
        for id in self.acked_out.drain(..) {
            st.outbound.acked(&id, self.id);
        }
        for (id, json) in self.new_receipts.drain(..) {
            st.outbound.add(id, OutKind::Receipt, json, Some(self.id));
        }
    }

    /// Applies the batch's ledger ops (the ones describing output only if that output is
    /// going out: `written`) and sends the events.
    fn publish(&mut self, written: bool) {
        if let Some(ledger) = &self.ledger {
            if !self.ops.is_empty() || self.window_violations > 0 {
                let mut l = lock(ledger);
                for op in self.ops.drain(..) {
                    if written || !op.needs_write() {
                        l.apply(op);
                    }
                }
                l.max_pending = self.max_pending;
                l.window_violations = self.window_violations;
            }
        }
        self.ops.clear();
        for ev in self.events.drain(..) {
            self.shared.emit(ev);
        }
    }

    fn refresh_script(&mut self) {
        if self.shared.script.version() != self.script_version {
            let (script, version) = self.shared.script.snapshot();
            self.script = script;
            self.script_version = version;
        }
    }

    fn poll_commands(&mut self) {
        for cmd in self.ctl.take() {
            if self.ending.is_some() {
                // Undelivered items go back to the shared store in `finish`.
                continue;
            }
            match cmd {
                Command::Raw(bytes) => self.out.extend_from_slice(&bytes),
                Command::Deliver(item) => self.deliver(item),
                Command::Drain => self.start_drain(),
                Command::DropNow => self.end(EndMode::Abrupt, "dropped by the test script"),
                Command::DropAfter(0) => self.end(EndMode::Abrupt, "dropped by the test script"),
                Command::DropAfter(k) => self.drop_countdown = Some(k),
            }
        }
    }

    fn timers(&mut self, now: Instant) {
        if !self.held.is_empty() {
            self.release_held();
        }
        while self.delayed.front().is_some_and(|(due, _)| *due <= now) {
            if let Some((_, answer)) = self.delayed.pop_front() {
                self.write_answer(answer);
            }
        }
        if self.draining {
            if self.delayed.is_empty() {
                let quiet = *self.drain_quiet_since.get_or_insert(now);
                if now.duration_since(quiet) >= self.shared.settings.drain_grace {
                    self.end(EndMode::CloseStream, "drained");
                }
            } else {
                self.drain_quiet_since = None;
            }
        }
        if self.phase != Phase::Ready
            && now.duration_since(self.started) >= self.shared.settings.handshake_timeout
        {
            self.stream_error("connection-timeout", Some("handshake took too long"));
            self.end(EndMode::CloseStream, "handshake timed out");
        }
        if let Some(interval) = self.shared.settings.keepalive {
            if self.header_sent
                && self.out.is_empty()
                && now.duration_since(self.last_write) >= interval
            {
                self.out.push(b' ');
            }
        }
    }

    // -- packets --------------------------------------------------------------------------

    fn process_packets(&mut self) {
        while self.ending.is_none() {
            // Once bound, message stanzas of the common shape skip the element tree;
            // they hold no references, so no character XML forbids either.
            let packet = if self.phase == Phase::Ready {
                match self.reader.next_raw_item() {
                    Ok(Some(RawItem::GcmPayload(p))) => {
                        self.on_fast_message(&p);
                        continue;
                    }
                    Ok(Some(RawItem::Packet(p))) => Ok(Some(p)),
                    Ok(None) => Ok(None),
                    Err(e) => Err(e),
                }
            } else {
                self.reader.next_packet()
            };
            match packet {
                Ok(None) => return,
                Ok(Some(Packet::StreamStart(el) | Packet::Stanza(el)))
                    if forbidden_char(&el).is_some() =>
                {
                    // Our reader decodes `&#x1;` and friends; a conforming XML parser, as a
                    // real server runs, refuses them.
                    let c = forbidden_char(&el).unwrap_or_default();
                    log::debug!(
                        "ccs emulator: {} sent U+{:04X}, which XML 1.0 forbids",
                        self.id,
                        u32::from(c)
                    );
                    self.stream_error("invalid-xml", None);
                    self.end(
                        EndMode::CloseStream,
                        &format!("invalid xml: character U+{:04X}", u32::from(c)),
                    );
                }
                Ok(Some(Packet::StreamStart(el))) => self.on_stream_start(&el),
                Ok(Some(Packet::Stanza(el))) => {
                    self.just_opened = false;
                    self.on_stanza(&el);
                }
                Ok(Some(Packet::StreamEnd)) => self.on_stream_end(),
                Err(e) => {
                    let (condition, why) = match e {
                        XmlError::StanzaTooLarge { .. } | XmlError::TooDeep { .. } => {
                            ("policy-violation", "stanza too large or too deep")
                        }
                        XmlError::Doctype => ("restricted-xml", "doctype not allowed"),
                        _ => ("invalid-xml", "unparsable xml"),
                    };
                    log::debug!("ccs emulator: {} sent bad xml: {e}", self.id);
                    self.stream_error(condition, None);
                    self.end(EndMode::CloseStream, &format!("{why}: {e}"));
                }
            }
        }
    }

    /// A message stanza from the reader's fast path, as [`on_stanza`](Self::on_stanza)
    /// would take it in the `Ready` phase.
    fn on_fast_message(&mut self, p: &RawPayload) {
        self.just_opened = false;
        let mut buf = std::mem::take(&mut self.fast_payload);
        buf.clear();
        let (id, json) = match self.reader.payload(p) {
            Ok(GcmPayload { id, json }) => {
                buf.push_str(id.unwrap_or(""));
                buf.push_str(json);
                (id.map(str::len), json.len())
            }
            // The reader checked these bytes: cannot happen.
            Err(_) => (None, 0),
        };
        let (id_text, json_text) = buf.split_at(id.unwrap_or(0));
        self.on_message_parts(id.map(|_| id_text), Some(&json_text[..json]));
        self.fast_payload = buf;
    }

    fn on_stanza(&mut self, el: &Element) {
        match self.phase {
            Phase::Header | Phase::Header2 => {
                self.stream_error("bad-format", Some("stanza before the stream header"));
                self.end(EndMode::CloseStream, "stanza before the stream header");
            }
            Phase::Auth => {
                if el.is("auth", NS_SASL) {
                    self.on_auth(el);
                } else {
                    self.stream_error("not-authorized", None);
                    self.end(
                        EndMode::CloseStream,
                        &format!("<{}> before authentication", el.name()),
                    );
                }
            }
            Phase::Bind | Phase::Ready => match el.name() {
                "iq" => self.on_iq(el),
                "message" if self.phase == Phase::Ready => self.on_message(el),
                "message" => {
                    self.stream_error("not-authorized", None);
                    self.end(EndMode::CloseStream, "message before resource bind");
                }
                // Presence, stream management and anything else: ignored, as CCS did.
                _ => log::debug!("ccs emulator: {} ignoring <{}>", self.id, el.name()),
            },
        }
    }

    fn stream_error(&mut self, condition: &str, text: Option<&str>) {
        if !self.header_sent {
            let id = wire::stream_id();
            self.with_xml(|x, s| wire::stream_header(x, &s.domain, &id));
            self.header_sent = true;
        }
        self.with_xml(|x, _| wire::stream_error(x, condition, text));
    }

    /// Builds one stanza in the scratch string and appends it to the output.
    fn with_xml(&mut self, build: impl FnOnce(&mut String, &Session)) {
        let mut xml = std::mem::take(&mut self.xml);
        xml.clear();
        build(&mut xml, self);
        self.out.extend_from_slice(xml.as_bytes());
        self.xml = xml;
    }

    // -- the end --------------------------------------------------------------------------

    /// Unregisters the session: un-acked upstream goes back to the shared store for the
    /// next connection; the ledger is marked closed.
    fn finish(mut self, reason: String) {
        self.publish_outbound();
        self.publish(false);
        {
            let mut st = self.shared.state();
            st.sessions.remove(&self.id);
            if st.outbound.release(self.id) > 0 {
                st.dispatch_waiting();
            }
        }
        if let Some(l) = &self.ledger {
            lock(l).closed = true;
        }
        if let Some(rec) = self.recorded.take() {
            self.shared.state().client_bytes.push(rec);
        }
        log::info!("ccs emulator: {} closed: {reason}", self.id);
        self.shared.emit(EmulatorEvent::Closed {
            conn: self.id,
            reason,
        });
    }
}

/// The first character XML 1.0 forbids in an element's attributes or text, at any depth.
fn forbidden_char(el: &Element) -> Option<char> {
    for (name, value) in el.attrs() {
        if let Some(c) = first_forbidden_char(name).or_else(|| first_forbidden_char(value)) {
            return Some(c);
        }
    }
    el.nodes().iter().find_map(|node| match node {
        Node::Element(child) => forbidden_char(child),
        Node::Text(text) => first_forbidden_char(text),
    })
}

/// A reader that copies what it reads into a connection's recording, within the shared
/// budget (what does not fit is not recorded and marks the recording incomplete).
struct Tap<'a, R> {
    inner: &'a mut R,
    rec: &'a mut ClientBytes,
    budget: &'a AtomicUsize,
}

impl<R: Read> Read for Tap<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n > 0 && self.rec.complete {
            let took = self
                .budget
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| {
                    left.checked_sub(n)
                });
            match took {
                Ok(_) => self.rec.bytes.extend_from_slice(&buf[..n]),
                Err(_) => self.rec.complete = false,
            }
        }
        Ok(n)
    }
}

/// Writes all of `buf`, retrying across socket write timeouts (with OpenSSL the retry must
/// pass the same bytes, which it does) until [`WRITE_STALL`] or shutdown.
fn write_all(tls: &mut Tls, buf: &[u8], shared: &Shared) -> io::Result<()> {
    let mut pos = 0;
    let mut stalled_since: Option<Instant> = None;
    while pos < buf.len() {
        match tls.write(&buf[pos..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                pos += n;
                stalled_since = None;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if is_timeout(&e) => {
                let since = *stalled_since.get_or_insert_with(Instant::now);
                if shared.stop.load(Ordering::Acquire) || since.elapsed() >= WRITE_STALL {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "client stopped reading",
                    ));
                }
            }
            Err(e) => return Err(e),
        }
    }
    tls.flush()
}
