//! One client connection: TLS accept, the XMPP handshake, then the CCS message loop.
//!
//! The session thread owns its TLS stream and alternates: read one block with a short
//! timeout, handle every complete stanza in it, run timers (held-back answers, draining,
//! keepalive) and script commands, then write everything queued in one write call. Ledger
//! changes and events are collected per batch and published just before that write.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Write};
use std::net::{Shutdown, TcpStream};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use miniserde::json::{Object, Value};

use native_tls::{HandshakeError, TlsStream};

use super::ledger::{LedgerOp, LiveLedger};
use super::outbound::{OutItem, OutKind};
use super::script::Script;
use super::shared::{lock, Command, SessionCtl, Shared};
use super::wire::{self, NS_BIND, NS_GCM, NS_PING, NS_ROSTER, NS_SASL, NS_SESSION, NS_STREAM};
use super::{ConnId, DownstreamOutcome, EmulatorEvent, MAX_DELAYED, WINDOW};
use crate::error::XmlError;
use crate::event::{Ack, Event, Nack, NackCode};
use crate::json;
use crate::message::Message;
use crate::xml::{Element, Packet, ReaderLimits, StanzaReader};

/// Socket timeout while the TLS handshake runs (so a silent client cannot block shutdown).
const TLS_STEP: Duration = Duration::from_millis(200);
/// Socket write timeout; a blocked write is retried until [`WRITE_STALL`] or shutdown.
const WRITE_STEP: Duration = Duration::from_millis(100);
/// A client that reads nothing for this long while we have bytes for it is dropped.
const WRITE_STALL: Duration = Duration::from_secs(30);
/// Longest resource accepted at bind (RFC 6122 allows 1023 bytes).
const MAX_RESOURCE: usize = 1023;

type Tls = TlsStream<TcpStream>;

/// Runs one connection to its end and unregisters it.
pub(crate) fn run(shared: Arc<Shared>, id: ConnId, tcp: TcpStream, ctl: Arc<SessionCtl>) {
    let mut session = Session::new(Arc::clone(&shared), id, ctl);
    // A bug must not leave the connection registered: catch it, log it, clean up.
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| match tls_accept(&shared, tcp) {
        Ok(mut tls) => session.run(&mut tls),
        Err(reason) => reason,
    }));
    let reason = outcome.unwrap_or_else(|_| {
        log::error!("ccs emulator: {id}: session thread panicked (emulator bug)");
        "emulator bug: the session panicked".to_string()
    });
    session.finish(reason);
}

fn tls_accept(shared: &Shared, tcp: TcpStream) -> Result<Tls, String> {
    let setup = tcp
        .set_read_timeout(Some(TLS_STEP))
        .and_then(|()| tcp.set_write_timeout(Some(TLS_STEP)))
        .and_then(|()| tcp.set_nodelay(true));
    if let Err(e) = setup {
        return Err(format!("socket setup failed: {e}"));
    }
    let deadline = Instant::now() + shared.settings.handshake_timeout;
    let mut attempt = shared.acceptor.accept(tcp);
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
        }
    }

    // -- the loop -------------------------------------------------------------------------

    fn run(&mut self, tls: &mut Tls) -> String {
        let setup = tls
            .get_ref()
            .set_read_timeout(Some(self.shared.settings.poll))
            .and_then(|()| tls.get_ref().set_write_timeout(Some(WRITE_STEP)));
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
                match self.reader.read_from(tls) {
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
        let _ = tls.get_ref().shutdown(Shutdown::Both);
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
            match self.reader.next_packet() {
                Ok(None) => return,
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

    fn on_stream_start(&mut self, el: &Element) {
        let expected = matches!(self.phase, Phase::Header | Phase::Header2);
        if !expected {
            self.stream_error("bad-format", Some("unexpected stream header"));
            self.end(EndMode::CloseStream, "unexpected stream header");
            return;
        }
        if let Some(to) = el.attr("to").filter(|t| !t.is_empty()) {
            self.domain = to.to_string();
        }
        let id = wire::stream_id();
        self.with_xml(|x, s| wire::stream_header(x, &s.domain, &id));
        self.header_sent = true;
        if !el.is("stream", NS_STREAM) {
            self.stream_error("invalid-namespace", None);
            self.end(EndMode::CloseStream, "stream header in the wrong namespace");
            return;
        }
        self.just_opened = true;
        if self.phase == Phase::Header {
            self.out.extend_from_slice(wire::SASL_FEATURES.as_bytes());
            self.phase = Phase::Auth;
        } else {
            self.out.extend_from_slice(wire::BIND_FEATURES.as_bytes());
            self.phase = Phase::Bind;
        }
    }

    fn on_stream_end(&mut self) {
        if self.just_opened {
            // `<stream:stream .../>` reads as a header immediately followed by its end.
            self.stream_error("bad-format", Some("self-closing stream header"));
            self.end(EndMode::CloseStream, "self-closing stream header");
        } else {
            self.end(EndMode::CloseStream, "client closed the stream");
        }
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

    fn on_auth(&mut self, el: &Element) {
        let mechanism = el.attr("mechanism").unwrap_or("");
        let result = match mechanism {
            // X-OAUTH2 and X-GOOGLE-TOKEN carry the same `\0user\0secret` blob.
            "PLAIN" | "X-OAUTH2" | "X-GOOGLE-TOKEN" => match wire::decode_plain(&el.text()) {
                Ok(plain) => {
                    let s = &self.shared.settings;
                    if wire::credentials_ok(&plain, &s.sender_id, &s.server_key) {
                        Ok(())
                    } else {
                        Err(("not-authorized", "wrong sender id or server key"))
                    }
                }
                Err(e) => Err((e.condition(), "bad PLAIN payload")),
            },
            _ => Err(("invalid-mechanism", "unknown mechanism")),
        };
        match result {
            Ok(()) => {
                self.out.extend_from_slice(wire::SASL_SUCCESS.as_bytes());
                self.reader.reset();
                self.phase = Phase::Header2;
            }
            Err((condition, why)) => {
                self.with_xml(|x, _| wire::sasl_failure(x, condition));
                self.shared.state().auth_failures += 1;
                let reason = format!("{condition} ({why}, mechanism {mechanism:?})");
                self.events.push(EmulatorEvent::AuthFailed {
                    conn: self.id,
                    reason: reason.clone(),
                });
                self.end(
                    EndMode::CloseStream,
                    &format!("authentication refused: {reason}"),
                );
            }
        }
    }

    fn on_iq(&mut self, el: &Element) {
        let id = el.attr("id");
        let kind = el.attr("type").unwrap_or("");
        if kind != "get" && kind != "set" {
            return; // results and errors from the client need no answer
        }
        if let Some(bind) = el.child("bind", NS_BIND) {
            if kind != "set" {
                self.with_xml(|x, _| wire::iq_error(x, id, "modify", "bad-request"));
            } else if self.phase == Phase::Ready {
                self.with_xml(|x, _| wire::iq_error(x, id, "cancel", "not-allowed"));
            } else {
                self.on_bind(id, bind);
            }
        } else if el.child("session", NS_SESSION).is_some() {
            self.with_xml(|x, _| wire::iq_result(x, id, None, None));
        } else if el.child("ping", NS_PING).is_some() {
            // A client that sent `to=''` got no pong from CCS (see
            // `fcm_xmpp::protocol`, section Keepalive).
            if el.attr("to") != Some("") {
                self.with_xml(|x, s| {
                    let to = Some(s.jid.as_str()).filter(|j| !j.is_empty());
                    wire::iq_result(x, id, to, Some(&s.domain));
                });
            }
        } else if el.child("query", NS_ROSTER).is_some() {
            // CCS never answered roster requests (clients waiting for it timed out).
        } else {
            self.with_xml(|x, _| wire::iq_error(x, id, "cancel", "service-unavailable"));
        }
    }

    fn on_bind(&mut self, id: Option<&str>, bind: &Element) {
        let proposed = bind
            .child("resource", NS_BIND)
            .or_else(|| bind.child_named("resource"))
            .map(|r| r.text().trim().to_string())
            .unwrap_or_default();
        if proposed.len() > MAX_RESOURCE || proposed.chars().any(|c| c.is_control()) {
            self.with_xml(|x, _| wire::iq_error(x, id, "modify", "bad-request"));
            return;
        }
        let base = if proposed.is_empty() {
            "emulator"
        } else {
            &proposed
        };
        self.jid = format!(
            "{}@gcm.googleapis.com/{base}{}",
            self.shared.settings.sender_id,
            wire::resource_suffix()
        );
        self.with_xml(|x, s| wire::bind_result(x, id, &s.jid));
        self.phase = Phase::Ready;
        let ledger = Arc::new(Mutex::new(LiveLedger::new(
            self.id,
            self.jid.clone(),
            self.shared.settings.record_ids,
        )));
        self.ledger = Some(Arc::clone(&ledger));
        {
            let mut st = self.shared.state();
            st.ledgers.push(ledger);
            if let Some(e) = st.sessions.get_mut(&self.id) {
                e.ready = true;
            }
            st.dispatch_waiting();
        }
        log::info!("ccs emulator: {} bound {}", self.id, self.jid);
        self.events.push(EmulatorEvent::Authenticated {
            conn: self.id,
            jid: self.jid.clone(),
        });
    }

    // -- CCS messages ---------------------------------------------------------------------

    fn on_message(&mut self, el: &Element) {
        self.messages += 1;
        let mut drop_here = self.script.drop_every.is_some_and(|k| self.messages >= k);
        if let Some(n) = self.drop_countdown.as_mut() {
            *n = n.saturating_sub(1);
            drop_here |= *n == 0;
        }
        let stanza_id = el.attr("id");
        let Some(gcm) = el.children().find(|c| c.is("gcm", NS_GCM)) else {
            if drop_here {
                return self.drop_unanswered(None);
            }
            let text = "InvalidJson: message without a gcm payload\n";
            return self.stanza_error_400(stanza_id, None, text, false);
        };
        let payload = gcm.text();
        let obj = match json::parse_object(&payload) {
            Ok(obj) => obj,
            Err(e) => {
                self.count_downstream();
                if drop_here {
                    return self.drop_unanswered(None);
                }
                let text = format!("InvalidJson: JSON_PARSING_ERROR : payload is {e}\n");
                return self.stanza_error_400(stanza_id, Some(&payload), &text, true);
            }
        };
        let client_ack = match obj.get("message_type") {
            Some(Value::String(t)) if t == "ack" => Some(false),
            Some(Value::String(t)) if t == "nack" => Some(true),
            _ => None,
        };
        match client_ack {
            Some(_) if drop_here => self.drop_unanswered(None),
            Some(nack) => self.on_client_ack(stanza_id, &payload, &obj, nack),
            None => self.on_downstream(stanza_id, &payload, obj, drop_here),
        }
    }

    /// Counts a downstream message stanza for the pending window.
    fn count_downstream(&mut self) {
        self.downstream_in += 1;
        let pending = self.downstream_in.saturating_sub(self.answered_written) as usize;
        self.max_pending = self.max_pending.max(pending);
        if pending > WINDOW {
            self.window_violations += 1;
            if self.shared.observed() {
                self.events.push(EmulatorEvent::WindowViolation {
                    conn: self.id,
                    pending,
                });
            }
        }
    }

    fn on_downstream(
        &mut self,
        stanza_id: Option<&str>,
        payload: &str,
        obj: Object,
        drop_here: bool,
    ) {
        self.count_downstream();
        let message_id = match obj.get("message_id") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            missing => {
                if drop_here {
                    return self.drop_unanswered(None);
                }
                let text = match missing {
                    None => wire::MISSING_ID_TEXT,
                    Some(_) => {
                        "InvalidJson: JSON_TYPE_ERROR : Field \"message_id\" must be a \
                         non-empty JSON string\n"
                    }
                };
                return self.stanza_error_400(stanza_id, Some(payload), text, true);
            }
        };
        let idx = self.received;
        self.received += 1;
        self.ops
            .push(LedgerOp::Received(if self.shared.settings.record_ids {
                message_id.clone()
            } else {
                String::new()
            }));
        let target = match (obj.get("to"), obj.get("condition")) {
            (Some(Value::String(t)), _) => t.clone(),
            (_, Some(Value::String(c))) => c.clone(),
            _ => String::new(),
        };
        if drop_here {
            return self.drop_unanswered(Some((message_id, target)));
        }
        let (nack, receipt) = if self.draining {
            let desc = "Connection is draining: send on a new connection".to_string();
            (Some((NackCode::ConnectionDraining, desc)), false)
        } else {
            match Message::from_json_value(&obj) {
                Err(invalid) => {
                    let desc = format!(
                        "InvalidJson: JSON_FIELD_ERROR : Field \"{}\": {}",
                        invalid.field, invalid.reason
                    );
                    (Some((NackCode::InvalidJson, desc)), false)
                }
                Ok(msg) => match self.script.nack_for(&message_id, msg.target()) {
                    Some(code) => {
                        let desc = nack_description(&code, msg.target());
                        (Some((code, desc)), false)
                    }
                    None => (
                        None,
                        msg.get_delivery_receipt_requested() == Some(true)
                            && msg.get_dry_run() != Some(true),
                    ),
                },
            }
        };
        let answer = Answer {
            idx,
            message_id,
            target,
            nack,
            receipt,
        };
        let delay = self.script.ack_delay;
        // Draining NACKs go out at once so a draining connection always empties.
        if delay.is_zero() || self.draining {
            return self.write_answer(answer);
        }
        if self.delayed.len() >= MAX_DELAYED {
            self.stream_error("policy-violation", Some("too many pending messages"));
            let why = format!("more than {MAX_DELAYED} answers held back");
            return self.end(EndMode::CloseStream, &why);
        }
        self.delayed.push_back((Instant::now() + delay, answer));
    }

    /// Writes an ACK or NACK (and the receipt after an ACK that asked for one).
    fn write_answer(&mut self, answer: Answer) {
        let Answer {
            idx,
            message_id,
            target,
            nack,
            receipt,
        } = answer;
        // Build the crate's own event (moving the strings in and out, no copies).
        let event = match nack {
            None => Event::Ack(Ack {
                message_id,
                from: Some(target),
                registration_id: None,
            }),
            Some((code, desc)) => Event::Nack(Nack {
                message_id,
                from: Some(target),
                code,
                description: Some(desc),
            }),
        };
        self.write_data_gcm(&event);
        self.answered_queued += 1;
        let (message_id, target, outcome) = match event {
            Event::Ack(a) => {
                self.ops.push(LedgerOp::Acked(idx));
                (a.message_id, a.from, DownstreamOutcome::Acked)
            }
            Event::Nack(n) => {
                self.ops.push(LedgerOp::Nacked(idx, n.code.clone()));
                (n.message_id, n.from, DownstreamOutcome::Nacked(n.code))
            }
            _ => return,
        };
        let target = target.unwrap_or_default();
        if receipt {
            self.write_receipt(&message_id, &target);
        }
        if self.shared.observed() {
            self.events.push(EmulatorEvent::Downstream {
                conn: self.id,
                message_id,
                target,
                outcome,
                at: Instant::now(),
            });
        }
    }

    /// Writes `event` as `<message><data:gcm xmlns:data="google:mobile:data">JSON</data:gcm>
    /// </message>` (ACK, NACK, control).
    fn write_data_gcm(&mut self, event: &Event) {
        let mut json = std::mem::take(&mut self.json);
        json.clear();
        event.write_json(&mut json);
        self.with_xml(|x, _| wire::data_gcm_message(x, &json));
        self.json = json;
    }

    /// Creates the receipt for an ACKed message and delivers it here (it is owed to this
    /// connection from now on, and goes to another one if this one ends first).
    fn write_receipt(&mut self, original_id: &str, token: &str) {
        let category = &self.shared.settings.category;
        let json: Arc<str> =
            wire::receipt_event(original_id, token, category, wire::epoch_millis())
                .to_json()
                .into();
        let id = wire::receipt_id(original_id);
        self.new_receipts.push((id.clone(), Arc::clone(&json)));
        self.deliver(OutItem {
            id,
            kind: OutKind::Receipt,
            json,
            conn: Some(self.id),
        });
    }

    /// Writes an upstream message or receipt, or holds it while [`WINDOW`] of them wait for
    /// the client's ACK (CCS stops sending to a client that stops acking,
    /// [protocol: flow control](crate::protocol#flow-control)).
    fn deliver(&mut self, item: OutItem) {
        if self.delivered.len() >= WINDOW {
            self.held.push_back(item);
            return;
        }
        self.with_xml(|x, s| wire::upstream_message(x, &s.shared.settings.sender_id, &item.json));
        self.delivered.insert(item.id.clone(), item.kind);
        let ev = match item.kind {
            OutKind::Upstream => {
                self.ops.push(LedgerOp::UpstreamSent(item.id.clone()));
                EmulatorEvent::UpstreamSent {
                    conn: self.id,
                    message_id: item.id,
                }
            }
            OutKind::Receipt => {
                self.ops.push(LedgerOp::ReceiptSent(item.id.clone()));
                EmulatorEvent::ReceiptSent {
                    conn: self.id,
                    message_id: item.id,
                }
            }
        };
        if self.shared.observed() {
            self.events.push(ev);
        }
    }

    /// Delivers held items as the client's ACKs free room.
    fn release_held(&mut self) {
        while self.delivered.len() < WINDOW {
            match self.held.pop_front() {
                Some(item) => self.deliver(item),
                None => return,
            }
        }
    }

    fn on_client_ack(&mut self, stanza_id: Option<&str>, payload: &str, obj: &Object, nack: bool) {
        let id = match obj.get("message_id") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            _ => {
                let text = wire::MISSING_ID_TEXT;
                return self.stanza_error_400(stanza_id, Some(payload), text, false);
            }
        };
        match self.delivered.remove(&id) {
            Some(kind) => {
                if nack {
                    log::warn!("ccs emulator: {} client NACKed {id:?}", self.id);
                    self.ops.push(LedgerOp::UpstreamNacked(id.clone()));
                } else if kind == OutKind::Receipt {
                    self.ops.push(LedgerOp::ReceiptAcked(id.clone()));
                } else {
                    self.ops.push(LedgerOp::UpstreamAcked(id.clone()));
                }
                if self.shared.observed() && !nack {
                    self.events.push(match kind {
                        OutKind::Upstream => EmulatorEvent::UpstreamAcked {
                            conn: self.id,
                            message_id: id.clone(),
                        },
                        OutKind::Receipt => EmulatorEvent::ReceiptAcked {
                            conn: self.id,
                            message_id: id.clone(),
                        },
                    });
                }
                self.acked_out.push(id);
            }
            None => {
                self.with_xml(|x, s| wire::stanza_error_406(x, stanza_id, &s.jid));
                self.ops.push(LedgerOp::StanzaError);
                if self.shared.observed() {
                    self.events.push(EmulatorEvent::StanzaError {
                        conn: self.id,
                        id: stanza_id.map(str::to_string),
                        code: 406,
                        reason: format!("ack for {id:?}, which was not delivered on this connection or was already acked"),
                    });
                }
            }
        }
    }

    /// Stanza error 400; `answers_downstream` if it answers a counted downstream message.
    fn stanza_error_400(
        &mut self,
        stanza_id: Option<&str>,
        payload: Option<&str>,
        text: &str,
        answers_downstream: bool,
    ) {
        self.with_xml(|x, s| wire::stanza_error_400(x, stanza_id, &s.jid, payload, text));
        if answers_downstream {
            self.answered_queued += 1;
        }
        self.ops.push(LedgerOp::StanzaError);
        if self.shared.observed() {
            self.events.push(EmulatorEvent::StanzaError {
                conn: self.id,
                id: stanza_id.map(str::to_string),
                code: 400,
                reason: text.trim_end().to_string(),
            });
        }
    }

    /// The scripted drop: answers of earlier stanzas are written, this one is not.
    fn drop_unanswered(&mut self, message: Option<(String, String)>) {
        if let Some((message_id, target)) = message {
            if self.shared.observed() {
                self.events.push(EmulatorEvent::Downstream {
                    conn: self.id,
                    message_id,
                    target,
                    outcome: DownstreamOutcome::Dropped,
                    at: Instant::now(),
                });
            }
        }
        self.delayed.clear();
        self.end(EndMode::FlushThenDrop, "dropped by the test script");
    }

    fn start_drain(&mut self) {
        if self.draining || self.phase != Phase::Ready {
            return;
        }
        self.draining = true;
        self.write_data_gcm(&wire::draining_event());
        if let Some(l) = &self.ledger {
            lock(l).drained = true;
        }
        log::info!("ccs emulator: {} draining", self.id);
        self.events
            .push(EmulatorEvent::DrainStarted { conn: self.id });
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
        log::info!("ccs emulator: {} closed: {reason}", self.id);
        self.shared.emit(EmulatorEvent::Closed {
            conn: self.id,
            reason,
        });
    }
}

fn nack_description(code: &NackCode, target: &str) -> String {
    match code {
        NackCode::BadRegistration => format!("Invalid token on 'to' field: {target}"),
        NackCode::DeviceUnregistered => "Device unregistered".to_string(),
        NackCode::DeviceMessageRateExceeded => {
            "Downstream message rate exceeded for this device".to_string()
        }
        NackCode::TopicsMessageRateExceeded => {
            "Downstream message rate exceeded for this topic".to_string()
        }
        NackCode::ServiceUnavailable => "Service temporarily unavailable".to_string(),
        NackCode::InternalServerError => "Internal server error".to_string(),
        NackCode::ConnectionDraining => "Connection is draining".to_string(),
        other => other.as_str().to_string(),
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
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
