//! XMPP stream layer: framing over a byte stream, the stream header, SASL PLAIN,
//! stream restart, resource bind, session, stream errors, keepalive and close.
//! Knows nothing of CCS JSON.

use std::fmt;
use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use base64::Engine as _;

use crate::config::Config;
use crate::error::{Error, Phase, ProtocolError, Result, TlsError, TlsErrorKind};
use crate::transport::{is_timeout, SetTimeout};
use crate::xml::{
    escape_attr, Element, GcmPayload, Packet, RawItem, RawPayload, ReaderLimits, StanzaReader,
};

use crate::ns::{
    BIND as NS_BIND, CLIENT as NS_CLIENT, SASL as NS_SASL, SESSION as NS_SESSION,
    STANZAS as NS_STANZAS, STREAM as NS_STREAM, STREAMS_ERR as NS_STREAMS_ERR,
};
use crate::wire;

/// A byte stream framed into XMPP packets, with a write buffer.
///
/// Writes are appended to `out` and go to the socket in one `write_all` on
/// [`XmppStream::flush`]. A failed or timed-out write poisons the stream
/// (a stanza may be half written), so every later call returns `Closed`.
pub(crate) struct XmppStream<S> {
    pub(crate) stream: S,
    reader: StanzaReader,
    out: String,
    /// The read timeout last set on the socket (`None`: never set), cached
    /// so socket options are only touched when they change.
    read_timeout: Option<Option<Duration>>,
    nonblocking: bool,
    closed: bool,
    pub(crate) last_read: Instant,
    pub(crate) last_write: Instant,
}

impl<S> fmt::Debug for XmppStream<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("XmppStream")
            .field("buffered_out", &self.out.len())
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

impl<S> XmppStream<S> {
    pub(crate) fn is_closed(&self) -> bool {
        self.closed
    }
}

impl<S: Read + Write + SetTimeout> XmppStream<S> {
    pub(crate) fn new(stream: S, config: &Config) -> Self {
        let now = Instant::now();
        XmppStream {
            stream,
            reader: StanzaReader::new(ReaderLimits {
                max_stanza_size: config.max_stanza_size,
                max_depth: config.max_depth,
            }),
            // The handshake's stanzas are a few hundred bytes each.
            out: String::with_capacity(1024),
            read_timeout: None,
            nonblocking: false,
            closed: false,
            last_read: now,
            last_write: now,
        }
    }

    pub(crate) fn mark_closed(&mut self) {
        self.closed = true;
    }

    /// The handshake's write buffer; callers append whole stanzas only.
    fn out(&mut self) -> &mut String {
        &mut self.out
    }

    /// Writes the handshake's buffer in one call.
    fn flush(&mut self) -> Result<()> {
        let out = std::mem::take(&mut self.out);
        let r = self.write(&out);
        self.out = out;
        self.out.clear();
        r.map(|_| ())
    }

    /// Writes `buf` in one call and returns when that finished. A failed or
    /// timed-out write closes the stream (a stanza may be half written).
    pub(crate) fn write(&mut self, buf: &str) -> Result<Instant> {
        if self.closed {
            return Err(Error::Closed);
        }
        if buf.is_empty() {
            return Ok(self.last_write);
        }
        log::trace!("send {} bytes: {}", buf.len(), redact(buf));
        if self.nonblocking {
            if let Err(e) = self.stream.set_nonblocking(false) {
                self.closed = true;
                return Err(Error::Io(e));
            }
            self.nonblocking = false;
        }
        let r = self
            .stream
            .write_all(buf.as_bytes())
            .and_then(|_| self.stream.flush());
        match r {
            Ok(()) => {
                self.last_write = Instant::now();
                Ok(self.last_write)
            }
            Err(e) => {
                self.closed = true;
                if is_timeout(&e) {
                    Err(Error::Timeout(Phase::Write))
                } else {
                    Err(Error::Io(e))
                }
            }
        }
    }

    /// Prepares the socket for one read: `Some(ZERO)` means nonblocking.
    fn set_read_mode(&mut self, wait: Option<Duration>) -> io::Result<()> {
        if wait == Some(Duration::ZERO) {
            if !self.nonblocking {
                self.stream.set_nonblocking(true)?;
                self.nonblocking = true;
            }
            return Ok(());
        }
        if self.nonblocking {
            self.stream.set_nonblocking(false)?;
            self.nonblocking = false;
        }
        // Round up to whole milliseconds so a shrinking deadline does not
        // cost a setsockopt on every read.
        let timeout = wait.map(|d| {
            let ms = d.as_micros().div_ceil(1000).clamp(1, u64::MAX as u128) as u64;
            Duration::from_millis(ms)
        });
        if self.read_timeout != Some(timeout) {
            self.stream.set_read_timeout(timeout)?;
            self.read_timeout = Some(timeout);
        }
        Ok(())
    }

    /// The next packet, waiting at most until `deadline` (`None`: no limit).
    /// At least one read is attempted (nonblocking once the deadline has
    /// passed), so a past deadline means "only what is ready now".
    /// `Ok(None)` when nothing complete arrived in time. EOF between stanzas
    /// is `Err(Closed)`; EOF inside one is `Err(Xml(Truncated))`.
    pub(crate) fn read_packet(&mut self, deadline: Option<Instant>) -> Result<Option<Packet>> {
        self.read_next(deadline, Self::next_buffered)
    }

    /// As [`read_packet`](Self::read_packet), with CCS message stanzas of the
    /// common shape as their payload's range ([`StanzaReader::next_item`]);
    /// read it with [`payload`](Self::payload) before reading again.
    pub(crate) fn read_item(&mut self, deadline: Option<Instant>) -> Result<Option<RawItem>> {
        self.read_next(deadline, Self::next_buffered_item)
    }

    /// The text of a payload from [`read_item`](Self::read_item).
    pub(crate) fn payload(&self, r: &RawPayload) -> Result<GcmPayload<'_>> {
        self.reader.payload(r).map_err(Error::Xml)
    }

    fn read_next<T>(
        &mut self,
        deadline: Option<Instant>,
        next: fn(&mut Self) -> Result<Option<T>>,
    ) -> Result<Option<T>> {
        let mut tried = false;
        loop {
            if let Some(p) = next(self)? {
                return Ok(Some(p));
            }
            if self.closed {
                return Err(Error::Closed);
            }
            let wait = match deadline {
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        if tried {
                            return Ok(None);
                        }
                        Some(Duration::ZERO)
                    } else {
                        Some(d - now)
                    }
                }
                None => None,
            };
            tried = true;
            if let Err(e) = self.set_read_mode(wait) {
                self.closed = true;
                return Err(Error::Io(e));
            }
            match self.reader.read_from(&mut self.stream) {
                Ok(0) => {
                    self.closed = true;
                    self.reader.finish()?;
                    return Err(Error::Closed);
                }
                Ok(_) => self.last_read = Instant::now(),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // Timed out: the loop head decides whether time is really up.
                Err(e) if is_timeout(&e) => {}
                Err(e) => {
                    self.closed = true;
                    return Err(Error::Io(e));
                }
            }
        }
    }

    /// A packet already buffered, without touching the socket.
    pub(crate) fn next_buffered(&mut self) -> Result<Option<Packet>> {
        match self.reader.next_packet() {
            Ok(p) => {
                if log::log_enabled!(log::Level::Trace) {
                    if let Some(p) = &p {
                        trace_packet(p);
                    }
                }
                Ok(p)
            }
            Err(e) => {
                self.closed = true;
                Err(Error::Xml(e))
            }
        }
    }

    /// An item already buffered, without touching the socket.
    fn next_buffered_item(&mut self) -> Result<Option<RawItem>> {
        match self.reader.next_raw_item() {
            Ok(item) => {
                if log::log_enabled!(log::Level::Trace) {
                    match &item {
                        Some(RawItem::Packet(p)) => trace_packet(p),
                        Some(RawItem::GcmPayload(r)) => {
                            log::trace!("recv gcm payload: {:?}", self.reader.payload(r))
                        }
                        None => {}
                    }
                }
                Ok(item)
            }
            Err(e) => {
                self.closed = true;
                Err(Error::Xml(e))
            }
        }
    }

    /// Reads the next stanza during the handshake; stream errors and
    /// stream end become errors, timeouts become `Timeout(Handshake)`.
    fn handshake_stanza(
        &mut self,
        deadline: Option<Instant>,
        expected: &'static str,
    ) -> Result<Element> {
        match self.read_packet(deadline) {
            Ok(Some(Packet::Stanza(el))) => {
                if el.is("error", NS_STREAM) {
                    self.closed = true;
                    return Err(stream_error(&el));
                }
                Ok(el)
            }
            Ok(Some(Packet::StreamStart(_))) => Err(ProtocolError::Unexpected {
                expected,
                got: "a second stream header".into(),
            }
            .into()),
            Ok(Some(Packet::StreamEnd)) => {
                self.closed = true;
                Err(Error::Closed)
            }
            Ok(None) => Err(Error::Timeout(Phase::Handshake)),
            Err(Error::Timeout(_)) => Err(Error::Timeout(Phase::Handshake)),
            Err(e) => Err(e),
        }
    }

    fn handshake_header(&mut self, deadline: Option<Instant>) -> Result<Element> {
        match self.read_packet(deadline) {
            Ok(Some(Packet::StreamStart(el))) => {
                if !el.is("stream", NS_STREAM) {
                    return Err(ProtocolError::Unexpected {
                        expected: "<stream:stream>",
                        got: format!("<{}> in {:?}", el.name(), el.ns()),
                    }
                    .into());
                }
                Ok(el)
            }
            Ok(Some(Packet::Stanza(el))) => Err(ProtocolError::Unexpected {
                expected: "<stream:stream>",
                got: format!("<{}>", el.name()),
            }
            .into()),
            Ok(Some(Packet::StreamEnd)) => Err(Error::Closed),
            Ok(None) => Err(Error::Timeout(Phase::Handshake)),
            Err(Error::Timeout(_)) => Err(Error::Timeout(Phase::Handshake)),
            Err(e) => Err(e),
        }
    }

    /// Sends our stream header and reads the server's header and features.
    fn open_stream(&mut self, domain: &str, deadline: Option<Instant>) -> Result<Element> {
        self.write_header(domain);
        self.flush()?;
        self.handshake_header(deadline)?;
        let features = self.handshake_stanza(deadline, "<stream:features>")?;
        if !features.is("features", NS_STREAM) {
            return Err(unexpected("<stream:features>", &features));
        }
        Ok(features)
    }

    /// Waits for the answer to our iq `id`; other stanzas that arrive
    /// meanwhile are kept in `early` for the caller.
    fn await_iq(
        &mut self,
        id: &str,
        expected: &'static str,
        deadline: Option<Instant>,
        early: &mut Vec<Element>,
    ) -> Result<Element> {
        loop {
            let el = self.handshake_stanza(deadline, expected)?;
            if el.is("iq", NS_CLIENT) && el.attr("id") == Some(id) {
                return Ok(el);
            }
            keep_early(early, el, expected)?;
        }
    }

    fn write_header(&mut self, domain: &str) {
        wire::stream_header(&mut self.out, domain);
    }
}

/// Logs a received packet at trace level, as XML.
fn trace_packet(p: &Packet) {
    let mut text = String::new();
    match p {
        Packet::StreamStart(el) => {
            text.push_str("<stream:stream");
            for (k, v) in el.attrs() {
                text.push(' ');
                text.push_str(k);
                text.push_str("=\"");
                escape_attr(v, &mut text);
                text.push('"');
            }
            text.push('>');
        }
        Packet::Stanza(el) => crate::xml::write_element(el, NS_CLIENT, &mut text),
        Packet::StreamEnd => text.push_str("</stream:stream>"),
    }
    log::trace!("recv {} bytes: {text}", text.len());
}

/// The SASL PLAIN blob, base64 on one line: `\0SENDER@DOMAIN\0KEY`.
pub(crate) fn plain_auth_payload(config: &Config) -> String {
    let mut raw = Vec::with_capacity(64);
    raw.push(0);
    raw.extend_from_slice(config.sender_id.as_bytes());
    raw.push(b'@');
    raw.extend_from_slice(config.domain.as_bytes());
    raw.push(0);
    raw.extend_from_slice(config.server_key.expose().as_bytes());
    base64::engine::general_purpose::STANDARD.encode(raw)
}

/// Replaces the content of any `<auth ...>...</auth>` with `<redacted>` for trace logs.
pub(crate) fn redact(s: &str) -> std::borrow::Cow<'_, str> {
    match s.find("<auth ") {
        None => std::borrow::Cow::Borrowed(s),
        Some(start) => {
            let mut out = String::with_capacity(s.len());
            out.push_str(&s[..start]);
            match s[start..].find('>') {
                Some(gt) => {
                    out.push_str(&s[start..start + gt + 1]);
                    out.push_str("<redacted/>");
                    if let Some(end) = s[start..].find("</auth>") {
                        out.push_str(&redact(&s[start + end..]));
                    }
                }
                None => out.push_str("<auth <redacted/>"),
            }
            std::borrow::Cow::Owned(out)
        }
    }
}

/// Builds `Error::StreamError` from a `<stream:error>` element.
pub(crate) fn stream_error(el: &Element) -> Error {
    let mut condition = None;
    let mut text = None;
    for c in el.children() {
        if c.ns() == NS_STREAMS_ERR {
            if c.name() == "text" {
                text = Some(c.text());
            } else if condition.is_none() {
                condition = Some(c.name().to_string());
            }
        }
    }
    Error::StreamError {
        condition: condition.unwrap_or_else(|| "undefined-condition".into()),
        text,
    }
}

/// Most stanzas kept while waiting for the bind and session answers. CCS sends
/// at most 100 un-acked upstream messages and receipts per connection; a
/// server that sends more is refused rather than allowed to fill memory.
const MAX_EARLY: usize = 256;

/// Keeps a stanza that arrived before the bind or session answer.
fn keep_early(early: &mut Vec<Element>, el: Element, expected: &'static str) -> Result<()> {
    if early.len() >= MAX_EARLY {
        return Err(ProtocolError::Unexpected {
            expected,
            got: format!("more than {MAX_EARLY} other stanzas before it"),
        }
        .into());
    }
    early.push(el);
    Ok(())
}

/// Runs the whole client handshake; returns the bound JID and the stanzas
/// that arrived while it waited for the bind and session answers (CCS sends
/// waiting upstream messages and receipts right after bind: they must reach
/// the caller, never be dropped).
pub(crate) fn handshake<S: Read + Write + SetTimeout>(
    io: &mut XmppStream<S>,
    config: &Config,
) -> Result<(String, Vec<Element>)> {
    let mut early = Vec::new();
    let deadline = config
        .timeouts
        .handshake
        .map(|t| crate::time::later(Instant::now(), t));
    io.stream.set_write_timeout(config.timeouts.handshake)?;

    // 1. Stream header and SASL features.
    let features = io.open_stream(&config.domain, deadline)?;
    let mechanisms = features
        .child("mechanisms", NS_SASL)
        .ok_or(ProtocolError::NoPlainMechanism)?;
    if !mechanisms
        .children()
        .any(|m| m.name() == "mechanism" && m.text().trim() == "PLAIN")
    {
        return Err(ProtocolError::NoPlainMechanism.into());
    }

    // 2. SASL PLAIN, never in the clear.
    if !io.stream.is_encrypted() {
        return Err(TlsError::new(
            TlsErrorKind::NotTls,
            "refusing to send the server key over an unencrypted stream",
        )
        .into());
    }
    let payload = plain_auth_payload(config);
    wire::auth_plain(io.out(), &payload);
    drop(payload);
    io.flush()?;
    match io.handshake_stanza(deadline, "<success/>") {
        Ok(el) if el.is("success", NS_SASL) => {}
        Ok(el) if el.is("failure", NS_SASL) => {
            let condition = el
                .children()
                .find(|c| c.name() != "text")
                .map(|c| c.name().to_string())
                .unwrap_or_else(|| "not-authorized".into());
            log::info!("authentication refused: {condition}");
            io.mark_closed();
            return Err(Error::AuthFailed { condition });
        }
        Ok(el) => return Err(unexpected("<success/>", &el)),
        // Some servers just hang up after a bad <auth> (see
        // `fcm_xmpp::protocol`, section Handshake).
        Err(Error::Closed) | Err(Error::Xml(crate::XmlError::Truncated)) => {
            return Err(Error::AuthFailed {
                condition: "connection-closed".into(),
            })
        }
        Err(Error::Io(e))
            if matches!(
                e.kind(),
                io::ErrorKind::ConnectionReset | io::ErrorKind::UnexpectedEof
            ) =>
        {
            return Err(Error::AuthFailed {
                condition: "connection-closed".into(),
            })
        }
        Err(e) => return Err(e),
    }
    log::info!("authenticated as sender {}", config.sender_id);

    // 3. Restart the stream; bind.
    io.reader.reset();
    let features = io.open_stream(&config.domain, deadline)?;
    if features.child("bind", NS_BIND).is_none() {
        return Err(ProtocolError::BindFailed {
            condition: "server offered no resource binding".into(),
        }
        .into());
    }
    let session = features.child("session", NS_SESSION).is_some();

    wire::bind(io.out(), &config.resource);
    io.flush()?;
    let el = io.await_iq(wire::BIND_ID, "bind result", deadline, &mut early)?;
    if el.attr("type") != Some("result") {
        return Err(ProtocolError::BindFailed {
            condition: iq_error_condition(&el),
        }
        .into());
    }
    let jid = el
        .child("bind", NS_BIND)
        .and_then(|b| b.child("jid", NS_BIND))
        .map(|j| j.text().trim().to_string())
        .filter(|j| !j.is_empty())
        .ok_or_else(|| ProtocolError::BindFailed {
            condition: "bind result without a jid".into(),
        })?;

    // 4. Session, when offered (harmless; CCS answers it).
    if session {
        wire::session(io.out());
        io.flush()?;
        let el = io.await_iq(wire::SESSION_ID, "session result", deadline, &mut early)?;
        if el.attr("type") != Some("result") {
            return Err(ProtocolError::BindFailed {
                condition: format!("session: {}", iq_error_condition(&el)),
            }
            .into());
        }
    }
    log::info!("connected as {jid}");
    Ok((jid, early))
}

fn unexpected(expected: &'static str, el: &Element) -> Error {
    ProtocolError::Unexpected {
        expected,
        got: format!("<{}>", el.name()),
    }
    .into()
}

/// The defined condition of an `<iq type="error">`.
pub(crate) fn iq_error_condition(el: &Element) -> String {
    el.child("error", NS_CLIENT)
        .or_else(|| el.child_named("error"))
        .and_then(|e| {
            e.children()
                .find(|c| c.ns() == NS_STANZAS && c.name() != "text")
        })
        .map(|c| c.name().to_string())
        .unwrap_or_else(|| format!("type={}", el.attr("type").unwrap_or("?")))
}

#[cfg(test)]
mod tests;
