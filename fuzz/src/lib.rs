//! The properties the fuzz targets check, one entry point per target.
//!
//! Each `check_*` function takes the raw fuzzer input, decodes it as its
//! target's input format (documented on the function and in `fuzz/README.md`)
//! and panics if a property fails. The fuzz targets in `fuzz_targets/` are
//! one-line wrappers around them, and the crate root's
//! `tests/fuzz_regressions.rs` includes this file as a module (`#[path]`) to
//! replay the committed seeds and every minimised finding under plain
//! `cargo test`. So this file must build both ways: it uses only `std` and
//! `fcm_xmpp`'s public API, never `libfuzzer-sys`.

use std::collections::BTreeMap;
use std::io::{self, Read};

use fcm_xmpp::event::write_ack_json;
use fcm_xmpp::xml::{write_element, Element, Item, Node, Packet, ReaderLimits, StanzaReader};
use fcm_xmpp::{AckRefusal, Event, Message, Notification, Priority, XmlError};

/// The stanza error in an event, and whether it came as a refused ack.
fn stanza_error_of(ev: &Event) -> Option<(&fcm_xmpp::StanzaError, bool)> {
    match ev {
        Event::StanzaError(se) => Some((se, false)),
        Event::AckRefused(a) => match &a.reason {
            AckRefusal::StanzaError(se) => {
                assert_eq!(a.message_id, se.message_id);
                Some((se, true))
            }
            _ => None,
        },
        _ => None,
    }
}

const NS_CLIENT: &str = "jabber:client";
const NS_GCM: &str = "google:mobile:data";
const NS_SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
const NS_STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";

/// A stream header for re-reading serialised stanzas.
const HEADER: &str =
    "<stream:stream xmlns:stream='http://etherx.jabber.org/streams' xmlns='jabber:client'>";

/// The largest chunk the `stanza_reader` target feeds at once: one
/// [`StanzaReader::READ_BLOCK`].
pub const MAX_CHUNK: usize = 16 * 1024;

/// Limits for re-reading serialised stanzas: escaping can make a stanza
/// several times longer than the one that was read.
const REREAD_LIMITS: ReaderLimits = ReaderLimits {
    max_stanza_size: 1 << 24,
    max_depth: 64,
};

// ---------------------------------------------------------------------------
// stanza_reader
// ---------------------------------------------------------------------------

/// How the `stanza_reader` target feeds its stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReaderInput<'a> {
    /// The reader's limits.
    pub limits: ReaderLimits,
    /// Feed through [`StanzaReader::read_from`] instead of [`StanzaReader::feed`].
    pub use_read_from: bool,
    /// Chunk sizes, used in turn until the stream is exhausted (never empty).
    pub sizes: Vec<usize>,
    /// The bytes of the stream.
    pub stream: &'a [u8],
}

/// Decodes a `stanza_reader` input:
///
/// - byte 0, bits 0-1: limits: 0 or 1 = 4096 bytes / depth 16, 2 = 512 / 4,
///   3 = 64 / 1; bit 2: use `read_from` instead of `feed`; bits 3-7: `n`,
///   the number of chunk-size codes that follow (0-31);
/// - the next `n` bytes: chunk sizes, used in turn: a code below 0x80 means
///   `code + 1` bytes (1-128), from 0x80 up `(code - 0x7f) * 128` bytes
///   (128-16384). No codes means one byte at a time;
/// - the rest: the stream.
pub fn decode_reader_input(data: &[u8]) -> ReaderInput<'_> {
    let (flags, rest) = data.split_first().map_or((0, data), |(f, r)| (*f, r));
    let limits = match flags & 3 {
        0 | 1 => (4096, 16),
        2 => (512, 4),
        _ => (64, 1),
    };
    let n = usize::from(flags >> 3).min(rest.len());
    let (codes, stream) = rest.split_at(n);
    let mut sizes: Vec<usize> = codes.iter().map(|&c| chunk_size(c)).collect();
    if sizes.is_empty() {
        sizes.push(1);
    }
    ReaderInput {
        limits: ReaderLimits {
            max_stanza_size: limits.0,
            max_depth: limits.1,
        },
        use_read_from: flags & 4 != 0,
        sizes,
        stream,
    }
}

fn chunk_size(code: u8) -> usize {
    if code < 0x80 {
        usize::from(code) + 1
    } else {
        usize::from(code - 0x7f) * 128
    }
}

/// What a reader made of a stream: the packets, then how it ended (the first
/// error, or the result of `finish`).
pub type Outcome = (Vec<Packet>, Result<(), XmlError>);

/// Takes packets until `Ok(None)`, restarting the stream after SASL
/// `<success/>` as the stream layer does.
fn drain(r: &mut StanzaReader, out: &mut Vec<Packet>) -> Result<(), XmlError> {
    while let Some(p) = r.next_packet()? {
        let restart = matches!(&p, Packet::Stanza(e) if e.is("success", NS_SASL));
        out.push(p);
        if restart {
            r.reset();
        }
    }
    Ok(())
}

/// The fast path (`next_item`) on the input's chunking against the reference: the same
/// packets and the same error, a payload only where the reference has a `<message>` in
/// `jabber:client`, not `type="error"`, whose `<gcm>` has exactly that text and whose `id`
/// is that id.
fn check_fast_path(input: &ReaderInput<'_>, expected: &Outcome) {
    let mut r = StanzaReader::new(input.limits);
    let mut got: Vec<Result<Packet, (Option<String>, String)>> = Vec::new();
    let (mut rest, mut k) = (input.stream, 0);
    let end;
    'feed: loop {
        let want = input.sizes[k % input.sizes.len()];
        k += 1;
        let (chunk, tail) = rest.split_at(want.min(rest.len()));
        rest = tail;
        r.feed(chunk);
        loop {
            match r.next_item() {
                Ok(Some(Item::Packet(p))) => {
                    let restart = matches!(&p, Packet::Stanza(e) if e.is("success", NS_SASL));
                    got.push(Ok(p));
                    if restart {
                        r.reset();
                    }
                }
                Ok(Some(Item::GcmPayload(g))) => {
                    got.push(Err((g.id.map(str::to_owned), g.json.to_owned())))
                }
                Ok(None) => break,
                Err(e) => {
                    end = Err(e);
                    break 'feed;
                }
            }
        }
        if chunk.is_empty() && rest.is_empty() {
            end = r.finish();
            break;
        }
    }
    assert_eq!(end, expected.1, "fast path, chunked {:?}", input.sizes);
    assert_eq!(
        got.len(),
        expected.0.len(),
        "fast path, chunked {:?}",
        input.sizes
    );
    for (g, e) in got.iter().zip(&expected.0) {
        match (g, e) {
            (Ok(p), e) => assert_eq!(p, e),
            (Err((id, json)), Packet::Stanza(el)) => {
                assert!(el.is("message", "jabber:client"), "{el:?}");
                assert_ne!(el.attr("type"), Some("error"), "{el:?}");
                let gcm = el.child("gcm", "google:mobile:data").expect("a gcm child");
                assert_eq!((el.attr("id"), gcm.text()), (id.as_deref(), json.clone()));
            }
            (Err(g), e) => panic!("fast path gave {g:?} where the reference has {e:?}"),
        }
    }
}

/// The reference: the whole stream fed at once.
pub fn read_whole(limits: ReaderLimits, stream: &[u8]) -> Outcome {
    let mut r = StanzaReader::new(limits);
    let mut out = Vec::new();
    r.feed(stream);
    if let Err(e) = drain(&mut r, &mut out) {
        return (out, Err(e));
    }
    assert!(r.buffered() <= limits.max_stanza_size, "{r:?}");
    let end = r.finish();
    (out, end)
}

/// A `Read` that hands out the stream in the given chunk sizes.
struct Chunked<'a> {
    rest: &'a [u8],
    sizes: &'a [usize],
    next: usize,
}

impl Read for Chunked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = self.sizes[self.next % self.sizes.len()];
        self.next += 1;
        let n = want.min(buf.len()).min(self.rest.len());
        buf[..n].copy_from_slice(&self.rest[..n]);
        self.rest = &self.rest[n..];
        Ok(n)
    }
}

/// The stream fed in the input's chunking, checking the buffer bound on the
/// way: at most `max_stanza_size` bytes stay buffered once `next_packet`
/// returned `Ok(None)`, so at most that plus one chunk after a feed.
pub fn read_chunked(input: &ReaderInput<'_>) -> Outcome {
    let max = input.limits.max_stanza_size;
    let mut r = StanzaReader::new(input.limits);
    let mut out = Vec::new();
    let mut src = Chunked {
        rest: input.stream,
        sizes: &input.sizes,
        next: 0,
    };
    loop {
        let n = if input.use_read_from {
            r.read_from(&mut src).expect("Chunked never fails")
        } else {
            let want = src.sizes[src.next % src.sizes.len()];
            src.next += 1;
            let (chunk, rest) = src.rest.split_at(want.min(src.rest.len()));
            src.rest = rest;
            r.feed(chunk);
            chunk.len()
        };
        assert!(n <= MAX_CHUNK);
        assert!(r.buffered() <= max + n, "{n} bytes fed: {r:?}");
        if let Err(e) = drain(&mut r, &mut out) {
            return (out, Err(e));
        }
        assert!(r.buffered() <= max, "{r:?}");
        if n == 0 && src.rest.is_empty() {
            break;
        }
    }
    let end = r.finish();
    (out, end)
}

/// True if writing `el` and reading it back should give `el` again: the
/// writer emits attribute names as stored and declares no prefixes, so a
/// prefixed attribute (other than `xml:`) would be unbound on re-reading.
fn rereadable(el: &Element) -> bool {
    el.attrs()
        .iter()
        .all(|(name, _)| !name.contains(':') || name.starts_with("xml:"))
        && el.children().all(rereadable)
}

/// Serialises `el` with [`write_element`] inside a `jabber:client` stream
/// and reads it back with a fresh reader.
pub fn write_and_reread(el: &Element) -> Result<Element, XmlError> {
    let mut text = String::from(HEADER);
    write_element(el, NS_CLIENT, &mut text);
    let (packets, end) = read_whole(REREAD_LIMITS, text.as_bytes());
    end?;
    match <[Packet; 2]>::try_from(packets) {
        Ok([Packet::StreamStart(_), Packet::Stanza(back)]) => Ok(back),
        Ok(other) => panic!("re-reading {text:?} gave {other:?}"),
        Err(other) => panic!("re-reading {text:?} gave {other:?}"),
    }
}

/// The `stanza_reader` target (input format: [`decode_reader_input`]).
///
/// Never panics; the chunked run keeps the buffer bound and gives exactly
/// the packets and the error (or `finish` result) of the whole-stream run;
/// every stanza read, written back with [`write_element`] and read again,
/// is the same element (for stanzas without prefixed attributes).
pub fn check_reader(data: &[u8]) {
    let input = decode_reader_input(data);
    let expected = read_whole(input.limits, input.stream);
    let got = read_chunked(&input);
    assert_eq!(got, expected, "chunked {:?}", input.sizes);
    check_fast_path(&input, &expected);
    for p in &expected.0 {
        if let Packet::Stanza(el) = p {
            if rereadable(el) {
                assert_eq!(write_and_reread(el).as_ref(), Ok(el));
            }
        }
    }
}

// ---------------------------------------------------------------------------
// event_json
// ---------------------------------------------------------------------------

/// A condition element name made of the input: the ASCII letters and `-`
/// of `s`, or `bad-request` if none (the writer needs a valid XML name).
fn condition_name(s: &str) -> String {
    let name: String = s
        .chars()
        .filter(|c| c.is_ascii_alphabetic() || *c == '-')
        .skip_while(|c| *c == '-')
        .collect();
    if name.is_empty() {
        "bad-request".to_owned()
    } else {
        name
    }
}

/// Checks what must hold for any event parsed from JSON: `emulator::event_json` parses
/// back to the same event, and the ack for it (if any) is an ack for it.
pub fn check_event_round_trip(ev: &Event) {
    let text = fcm_xmpp::emulator::event_json(ev);
    match Event::from_json(&text) {
        Ok(back) => assert_eq!(&back, ev, "{text}"),
        Err(e) => panic!("{ev:?} wrote {text:?}, which does not parse: {e}"),
    }
    let _ = (ev.message_id(), ev.settled_message_id(), ev.needs_ack());
    let _ = ev.is_connection_draining();
    if let Some((to, id)) = ev.ack_target() {
        let mut ack = String::new();
        write_ack_json(to, id, &mut ack);
        match Event::from_json(&ack) {
            Ok(Event::Ack(a)) => assert_eq!(a.message_id, id, "{ack}"),
            other => panic!("ack {ack:?} for {ev:?} read back as {other:?}"),
        }
    }
}

/// The `event_json` target. The input, as lossy UTF-8, is split at U+001F:
/// the first part is a `<gcm>` JSON payload, the next ones the stanza `id`,
/// the `<error>` `code` and `type`, the condition and the `<text>` of an
/// error stanza around it (missing parts are left out).
///
/// Never panics; a parsed event round-trips through `emulator::event_json`; the payload
/// in a `<message>` stanza gives the same result as on its own, also after
/// writing the stanza as XML and reading it back; an error stanza always
/// gives a stanza error (as an `Event::AckRefused` exactly when it is about
/// one of our acks) that round-trips through `emulator::stanza_error_element`, also
/// through XML.
pub fn check_event(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.split('\u{1f}');
    let json = parts.next().unwrap_or_default();
    let parsed = Event::from_json(json);
    if let Ok(ev) = &parsed {
        check_event_round_trip(ev);
    }
    // The writer turns the characters XML 1.0 forbids, which no XML can carry,
    // into U+FFFD (in the payload and in every attribute and text made of the
    // input).
    let xml_ok = !text.chars().any(|c| {
        !matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
    });

    // The payload in the two wrappers CCS uses (see `fcm_xmpp::protocol`,
    // section Reading stanzas).
    let gcm = Element::new("gcm", NS_GCM).with_text(json);
    let expected = parsed.clone().map(Some);
    for msg in [
        Element::new("message", NS_CLIENT).with_child(gcm.clone()),
        Element::new("message", NS_CLIENT)
            .with_attr("to", "123456789012@gcm.googleapis.com")
            .with_attr("from", "devices@gcm.googleapis.com")
            .with_attr("type", "normal")
            .with_child(gcm.clone()),
    ] {
        assert_eq!(Event::from_stanza(&msg), expected);
        if xml_ok {
            let back = write_and_reread(&msg).expect("a written stanza reads back");
            // An empty text node is not written, so it does not come back.
            if !json.is_empty() {
                assert_eq!(back, msg);
            }
            assert_eq!(Event::from_stanza(&back), expected);
        }
    }

    // An error stanza echoing the payload (see `fcm_xmpp::protocol`, section
    // Stanza and stream errors).
    let mut msg = Element::new("message", NS_CLIENT);
    let id = parts.next();
    if let Some(id) = id {
        msg.set_attr("id", id);
    }
    msg.set_attr("type", "error");
    let mut err = Element::new("error", NS_CLIENT);
    if let Some(code) = parts.next() {
        err.set_attr("code", code);
    }
    if let Some(kind) = parts.next() {
        err.set_attr("type", kind);
    }
    let condition = condition_name(parts.next().unwrap_or_default());
    err.push(Node::Element(Element::new(condition, NS_STANZAS)));
    if let Some(t) = parts.next() {
        err.push(Node::Element(Element::new("text", NS_STANZAS).with_text(t)));
    }
    let msg = msg.with_child(gcm).with_child(err);
    // About one of our acks (an `fx-ack-` id, or no id and an echoed ack):
    // a refused ack, never a plain stanza error.
    let first = Event::from_stanza(&msg);
    let (se, about_ack) = match first
        .as_ref()
        .ok()
        .and_then(|e| e.as_ref())
        .and_then(stanza_error_of)
    {
        Some((se, about_ack)) => (se.clone(), about_ack),
        None => panic!("error stanza {msg:?} gave {first:?}"),
    };
    if let Some(id) = id {
        assert_eq!(about_ack, id.starts_with("fx-ack-"), "{msg:?}");
    }
    assert_eq!(se.id.as_deref(), id);
    for echo in [Some(json), None] {
        let el = fcm_xmpp::emulator::stanza_error_element(&se, echo);
        let back = Event::from_stanza(&el);
        // The stub echoed without a payload is no ack: only the id tells then.
        let want_ack = match echo {
            Some(_) => about_ack,
            None => id.is_some_and(|id| id.starts_with("fx-ack-")),
        };
        let got = back
            .as_ref()
            .ok()
            .and_then(|e| e.as_ref())
            .and_then(stanza_error_of);
        assert_eq!(got, Some((&se, want_ack)), "{el:?}");
        if xml_ok {
            let reread = write_and_reread(&el).expect("a written stanza reads back");
            assert_eq!(Event::from_stanza(&reread), back);
        }
    }
}

// ---------------------------------------------------------------------------
// message_validation
// ---------------------------------------------------------------------------

/// A cursor over fuzzer bytes; reads past the end give zeros.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }

    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.byte(), self.byte(), self.byte(), self.byte()])
    }

    /// A length byte, then that many bytes as lossy UTF-8.
    fn string(&mut self) -> String {
        let n = usize::from(self.byte()).min(self.0.len());
        let (s, rest) = self.0.split_at(n);
        self.0 = rest;
        String::from_utf8_lossy(s).into_owned()
    }

    /// Two bits of `flags` from `shift`: (present, value).
    fn flag(flags: u8, shift: u8) -> Option<bool> {
        ((flags >> shift) & 1 != 0).then_some((flags >> (shift + 1)) & 1 != 0)
    }
}

/// Decodes a message from fuzzer bytes (the `message_validation` target's
/// builder half):
///
/// - byte 0: bits 0-1 recipient (0 and 3 `Message::to`, 1
///   `Message::to_topic`, 2 `Message::to_condition`); bit 2 `message_id`
///   given (else a generated one); bit 3 `collapse_key`; bit 4 `priority`
///   (bit 5: high); bit 6 `time_to_live`; bit 7 `notification`;
/// - byte 1: two bits (present, value) each for `content_available`,
///   `mutable_content`, `delay_while_idle`, `delivery_receipt_requested`;
/// - byte 2: bits 0-1 the same for `dry_run`; bits 2-7 the number of `data`
///   pairs (0-63);
/// - then the recipient, the `message_id`, the `collapse_key` (strings:
///   a length byte, then that many bytes as lossy UTF-8), the
///   `time_to_live` (u32 little-endian), the `data` keys and values, and
///   for a notification two flag bytes (bits 0-11 the string fields in JSON
///   order, 12 and 13 `body_loc_args` and `title_loc_args`), the strings,
///   and for each args list a count byte (mod 8) and its strings.
///
/// Missing bytes read as zeros.
pub fn decode_message(data: &[u8]) -> Message {
    let mut b = Bytes(data);
    let (f0, f1, f2) = (b.byte(), b.byte(), b.byte());
    let target = b.string();
    let mut m = match f0 & 3 {
        1 => Message::to_topic(target),
        2 => Message::to_condition(target),
        _ => Message::to(target),
    };
    if f0 & 4 != 0 {
        m = m.message_id(b.string());
    }
    if f0 & 8 != 0 {
        m = m.collapse_key(b.string());
    }
    if f0 & 16 != 0 {
        m = m.priority(if f0 & 32 != 0 {
            Priority::High
        } else {
            Priority::Normal
        });
    }
    if f0 & 64 != 0 {
        m = m.time_to_live(b.u32());
    }
    if let Some(v) = Bytes::flag(f1, 0) {
        m = m.content_available(v);
    }
    if let Some(v) = Bytes::flag(f1, 2) {
        m = m.mutable_content(v);
    }
    if let Some(v) = Bytes::flag(f1, 4) {
        m = m.delay_while_idle(v);
    }
    if let Some(v) = Bytes::flag(f1, 6) {
        m = m.delivery_receipt_requested(v);
    }
    if let Some(v) = Bytes::flag(f2, 0) {
        m = m.dry_run(v);
    }
    for _ in 0..f2 >> 2 {
        let k = b.string();
        let v = b.string();
        m = m.data(k, v);
    }
    if f0 & 128 != 0 {
        let flags = u16::from_le_bytes([b.byte(), b.byte()]);
        let mut n = Notification::new();
        type Setter = fn(Notification, String) -> Notification;
        let setters: [Setter; 12] = [
            |n, v| n.title(v),
            |n, v| n.body(v),
            |n, v| n.android_channel_id(v),
            |n, v| n.icon(v),
            |n, v| n.sound(v),
            |n, v| n.tag(v),
            |n, v| n.color(v),
            |n, v| n.click_action(v),
            |n, v| n.badge(v),
            |n, v| n.subtitle(v),
            |n, v| n.body_loc_key(v),
            |n, v| n.title_loc_key(v),
        ];
        for (bit, set) in setters.iter().enumerate() {
            if (flags >> bit) & 1 != 0 {
                n = set(n, b.string());
            }
        }
        if (flags >> 12) & 1 != 0 {
            let args: Vec<String> = (0..b.byte() % 8).map(|_| b.string()).collect();
            n = n.body_loc_args(args);
        }
        if (flags >> 13) & 1 != 0 {
            let args: Vec<String> = (0..b.byte() % 8).map(|_| b.string()).collect();
            n = n.title_loc_args(args);
        }
        m = m.notification(n);
    }
    m
}

/// `m` with its `data` pairs in key order: what parsing its JSON gives,
/// since a JSON object's members have no order (`Message::data_pairs` is
/// documented to be in key order for parsed messages).
pub fn with_sorted_data(m: &Message) -> Message {
    let mut out = match (m.get_to(), m.get_condition()) {
        (Some(to), _) => Message::to(to),
        (None, Some(c)) => Message::to_condition(c),
        (None, None) => panic!("a built message has a recipient"),
    }
    .message_id(m.id());
    if let Some(k) = m.get_collapse_key() {
        out = out.collapse_key(k);
    }
    if let Some(p) = m.get_priority() {
        out = out.priority(p);
    }
    if let Some(v) = m.get_content_available() {
        out = out.content_available(v);
    }
    if let Some(v) = m.get_mutable_content() {
        out = out.mutable_content(v);
    }
    if let Some(v) = m.get_time_to_live() {
        out = out.time_to_live(v);
    }
    if let Some(v) = m.get_delay_while_idle() {
        out = out.delay_while_idle(v);
    }
    if let Some(v) = m.get_delivery_receipt_requested() {
        out = out.delivery_receipt_requested(v);
    }
    if let Some(v) = m.get_dry_run() {
        out = out.dry_run(v);
    }
    let sorted: BTreeMap<&str, &str> = m
        .data_pairs()
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(sorted.len(), m.data_pairs().len(), "duplicate data keys");
    for (k, v) in sorted {
        out = out.data(k, v);
    }
    if let Some(n) = m.get_notification() {
        out = out.notification(n.clone());
    }
    out
}

/// Checks a built message: `to_json` always gives a JSON object that
/// `Message::from_json` accepts exactly when `validate` does, and then
/// parses back to the same message (data in key order).
pub fn check_message(m: &Message) {
    let valid = m.validate();
    let text = m.to_json();
    match (Message::from_json(&text), valid) {
        (Ok(back), Ok(())) => assert_eq!(back, with_sorted_data(m), "{text}"),
        (Err(e), Err(_)) => assert_ne!(e.field, "json", "{m:?} wrote bad JSON {text:?}: {e}"),
        (Ok(back), Err(e)) => panic!("{m:?} does not validate ({e}), but parses as {back:?}"),
        (Err(e), Ok(())) => panic!("{m:?} validates, but its JSON {text:?} does not: {e}"),
    }
}

/// Checks `Message::from_json` on any text: never panics, and a message it
/// accepts validates and round-trips through `to_json`.
pub fn check_message_json(text: &str) {
    if let Ok(m) = Message::from_json(text) {
        assert_eq!(m.validate(), Ok(()), "{text}");
        let again = m.to_json();
        assert_eq!(Message::from_json(&again).as_ref(), Ok(&m), "{again}");
    }
}

/// The `message_validation` target: the input as lossy UTF-8 through
/// [`check_message_json`], and the input decoded as a built message
/// ([`decode_message`]) through [`check_message`].
pub fn check_message_bytes(data: &[u8]) {
    check_message_json(&String::from_utf8_lossy(data));
    check_message(&decode_message(data));
}
