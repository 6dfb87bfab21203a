//! Incremental stanza reader: bytes in, complete XMPP packets out.
//!
//! Two stages:
//!
//! 1. A byte-level scanner (`Scan`) that keeps its state across feeds. It
//!    finds where markup starts and ends (tags, quoted attribute values,
//!    comments, CDATA, processing instructions), tracks the element depth,
//!    rejects DTDs, and enforces the size and depth limits before more bytes
//!    are buffered. Every byte is scanned once, so feeding one byte at a
//!    time costs the same as feeding everything at once.
//! 2. When the scanner sees a stream header or a top-level stanza end, exactly
//!    that byte range is checked as UTF-8 and built into an [`Element`] tree
//!    with namespace resolution and nesting, duplicate-attribute and entity
//!    checks. Markup (each start tag with its attributes, comments, PIs) is
//!    tokenized with `xmlparser`; character data is validated (the XML `Char`
//!    production, no `]]>`) and unescaped here, a machine word at a time.
//!    `xmlparser` walks text a `char` at a time, which alone costs about as
//!    much as tokenizing the whole stanza, and text (the JSON payloads) is
//!    most of the bytes.
//!
//! The fast path ([`StanzaReader::next_item`]): a CCS message stanza of the
//! common shape, `<message ...><gcm xmlns="google:mobile:data">JSON</gcm></message>`,
//! is recognised in one pass over its bytes (before the scanner when it is
//! already buffered whole, else where the scanner ends it) and handed out as
//! borrowed text, no tree and no allocation (`reader/fast.rs`). It only takes
//! stanzas the tree builder would build without error and with the same
//! text; everything else takes the two stages above.
//!
//! Throughput against plain `xmlparser` tokenization of the same bytes (the
//! bench's `parse` section): the fast path is about twice as fast as the
//! tokenizer on a CCS inbound stream; the tree path about 0.55x, its floor
//! being the tree itself: every element costs two `String`s (name,
//! namespace) and a children `Vec`.
//!
//! Deliberate leniency, so that [`super::escape_text`] output always reads
//! back: numeric character references may name any Unicode scalar value
//! except U+0000, including the control characters XML 1.0 does not allow
//! (`&#x1;`). Literal control characters are still rejected.
//!
//! As XML requires, literal line ends are normalised (`\r\n` and `\r` become
//! `\n`) and literal tab, CR and LF in attribute values become spaces; the
//! writer emits those characters as character references, which are kept.
//!
//! Files: the scanner and the reader's public face are here; the tree builder
//! (stage 2) is in `reader/build.rs`, the fast path in `reader/fast.rs`, the
//! word-at-a-time byte search all of them use in `xml/search.rs`. Tests: `reader/tests.rs` (whole streams,
//! chunking, buffering, limits, framing errors),
//! `reader/build/tests.rs` (namespaces, text, attributes, references) and
//! the ignored throughput comparison in `reader/perf.rs`, the fast path
//! against the tree builder in `reader/fast/tests.rs`.

mod build;
mod fast;
#[cfg(test)]
mod perf;

#[cfg(test)]
mod tests;

use super::Element;
use crate::error::XmlError;
use crate::xml::search::find_byte;
use build::{parse_header, Builder, Scratch};
use std::fmt;
use std::io::{self, Read};
use std::mem;
use std::ops::Range;
use xmlparser::{Token, Tokenizer};

const READ_BLOCK: usize = StanzaReader::READ_BLOCK;
const MAX_ATTRIBUTES: usize = StanzaReader::MAX_ATTRIBUTES;

const STREAM_NS: &str = "http://etherx.jabber.org/streams";

/// Limits the reader enforces before buffering more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReaderLimits {
    /// Largest stream header or stanza, in bytes.
    pub max_stanza_size: usize,
    /// Deepest nesting below the stream root.
    pub max_depth: usize,
}

impl Default for ReaderLimits {
    fn default() -> Self {
        ReaderLimits {
            max_stanza_size: 64 * 1024,
            max_depth: 32,
        }
    }
}

/// One unit read from an XMPP stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// The opening `<stream:stream ...>` (an element with its attributes, no children).
    StreamStart(Element),
    /// A complete top-level stanza (a child of the stream root).
    Stanza(Element),
    /// `</stream:stream>`: the peer closed its stream.
    StreamEnd,
}

/// One unit read from an XMPP stream by [`StanzaReader::next_item`]: a
/// packet, or the JSON payload of a CCS message stanza of the common shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item<'a> {
    /// Anything but the common shape, as [`StanzaReader::next_packet`] gives it.
    Packet(Packet),
    /// The stanza `<message ...><gcm xmlns="google:mobile:data">JSON</gcm></message>`
    /// in `jabber:client`, not `type="error"` (the `gcm` element may be
    /// prefixed, as CCS writes acks: `<data:gcm xmlns:data="google:mobile:data">`).
    GcmPayload(GcmPayload<'a>),
}

/// The parts of a CCS message stanza of the common shape, borrowed from
/// the reader's buffer: exactly what the element tree would hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GcmPayload<'a> {
    /// The `<message>`'s `id` attribute.
    pub id: Option<&'a str>,
    /// The text of its `<gcm>` child, as [`Element::text`] would give it.
    pub json: &'a str,
}

/// What the scanner found: a packet, or where a `<gcm>` payload is.
enum Raw {
    Packet(Packet),
    Payload(RawPayload),
}

/// [`GcmPayload`] as ranges of the reader's buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RawPayload {
    pub(crate) id: Option<Range<usize>>,
    pub(crate) json: Range<usize>,
}

/// [`Item`] with the payload as a range of the reader's buffer.
#[derive(Debug)]
pub(crate) enum RawItem {
    Packet(Packet),
    GcmPayload(RawPayload),
}

/// Where the scanner is. Everything but `Idle` means an item (header,
/// stanza, or a comment/PI between them) is in progress from `start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scan {
    /// Depth 0 or 1, outside markup: only whitespace may follow.
    Idle,
    /// Character data inside a stanza.
    Content,
    /// Just after `<`.
    TagOpen,
    /// After `<!`: `seen` bytes matched so far against the candidates in `cands`.
    Bang { seen: u8, cands: u8 },
    /// Inside `<!-- -->`, `dashes` consecutive `-` just seen (0..=2).
    Comment { dashes: u8 },
    /// Inside `<![CDATA[ ]]>`, `brackets` consecutive `]` just seen (0..=2).
    Cdata { brackets: u8 },
    /// Inside `<? ?>`, `question` if the last byte was `?`.
    Pi { question: bool },
    /// Inside a start tag; `quote` is the open quote byte (0: none), `slash`
    /// whether the last byte outside quotes was `/`.
    StartTag { quote: u8, slash: bool },
    /// Inside an end tag.
    EndTag,
}

/// What may follow `<!`: a comment, CDATA, or a (forbidden) DOCTYPE.
const BANG: [&[u8]; 3] = [b"--", b"[CDATA[", b"DOCTYPE"];
const BANG_COMMENT: u8 = 1;
const BANG_CDATA: u8 = 2;
const BANG_DOCTYPE: u8 = 4;

/// Bytes in, complete stanzas out.
///
/// Feed bytes with [`feed`](Self::feed) or [`read_from`](Self::read_from),
/// then call [`next_packet`](Self::next_packet) until it returns `Ok(None)`
/// before reading again; that keeps the buffer within
/// `max_stanza_size` + [`READ_BLOCK`](Self::READ_BLOCK) bytes.
///
/// The stream root must be `stream` in namespace
/// `http://etherx.jabber.org/streams`; its namespace declarations (usually
/// `xmlns="jabber:client"`) are inherited by every stanza. Whitespace between
/// stanzas (keepalives) is discarded, as are comments and processing
/// instructions outside stanzas. Errors are sticky: once `next_packet`
/// failed, it keeps returning the same error.
pub struct StanzaReader {
    limits: ReaderLimits,
    /// Storage; `buf[start..end]` holds unconsumed bytes, `buf[end..]` is
    /// spare space (initialised, so reads go straight into it).
    buf: Vec<u8>,
    /// Consumed offset; also the first byte of the item in progress.
    start: usize,
    /// Scanner position: `buf[start..scan]` has been scanned.
    scan: usize,
    /// End of valid data.
    end: usize,
    state: Scan,
    /// Open elements, the stream root included.
    depth: usize,
    /// The stream root's namespace declarations (prefix, URI); `""` = default.
    root_scope: Vec<(String, String)>,
    /// The stream root's qualified name as written, to check its end tag.
    root_qname: String,
    /// The stream root makes `jabber:client` the default namespace.
    root_client: bool,
    /// Allocations the tree builder reuses from stanza to stanza.
    scratch: Scratch,
    /// Nothing but whitespace seen since the start (or `reset`): an XML
    /// declaration may still come.
    decl_ok: bool,
    /// The current call wants `<gcm>` payloads of the common shape without a tree.
    fast: bool,
    failed: Option<XmlError>,
}

impl fmt::Debug for StanzaReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StanzaReader")
            .field("limits", &self.limits)
            .field("buffered", &self.buffered())
            .field("scanned", &(self.scan - self.start))
            .field("state", &self.state)
            .field("depth", &self.depth)
            .field("root", &self.root_qname)
            .field("failed", &self.failed)
            .finish()
    }
}

impl StanzaReader {
    /// Bytes [`read_from`](Self::read_from) reads at most per call (and
    /// keeps free for it).
    pub const READ_BLOCK: usize = 16 * 1024;

    /// Most attributes (namespace declarations included) one element may
    /// carry; more is [`XmlError::Malformed`].
    ///
    /// XMPP elements carry a handful; the cap keeps attribute bookkeeping,
    /// which is linear per attribute, from being turned into quadratic work.
    pub const MAX_ATTRIBUTES: usize = 64;

    /// A reader at the start of a stream.
    pub fn new(limits: ReaderLimits) -> Self {
        StanzaReader {
            limits,
            buf: Vec::new(),
            start: 0,
            scan: 0,
            end: 0,
            state: Scan::Idle,
            depth: 0,
            root_scope: Vec::new(),
            root_qname: String::new(),
            root_client: false,
            scratch: Scratch::default(),
            decl_ok: true,
            fast: false,
            failed: None,
        }
    }

    /// The limits this reader enforces.
    pub fn limits(&self) -> ReaderLimits {
        self.limits
    }

    /// Appends bytes.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.make_room(bytes.len());
        let to = self.end + bytes.len();
        self.buf[self.end..to].copy_from_slice(bytes);
        self.end = to;
    }

    /// Reads once from `r` into the internal buffer (one block); 0 means EOF.
    ///
    /// Exactly one `read` call, straight into the buffer's free space, of at
    /// most [`READ_BLOCK`](Self::READ_BLOCK) bytes.
    ///
    /// # Errors
    ///
    /// Whatever `r.read` returns (including `WouldBlock`, `TimedOut`,
    /// `Interrupted`); nothing is buffered then.
    pub fn read_from<R: Read>(&mut self, r: &mut R) -> io::Result<usize> {
        self.make_room(READ_BLOCK);
        let n = r.read(&mut self.buf[self.end..self.end + READ_BLOCK])?;
        // A broken reader claiming more than it was given must not corrupt us.
        let n = n.min(READ_BLOCK);
        self.end += n;
        Ok(n)
    }

    /// Unconsumed bytes currently buffered (a partial stanza, or bytes not
    /// yet looked at by [`next_packet`](Self::next_packet)).
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// True if, as far as [`next_packet`](Self::next_packet) has looked, a
    /// header, stanza, comment or PI has started but not ended.
    pub fn is_mid_stanza(&self) -> bool {
        self.state != Scan::Idle
    }

    /// The next complete packet, `Ok(None)` if more bytes are needed.
    ///
    /// # Errors
    ///
    /// - [`XmlError::Malformed`]: not well-formed, not namespace-well-formed,
    ///   text between stanzas, a stanza before the stream header, a
    ///   self-closing or non-`stream:stream` root, a mismatched end tag, a
    ///   duplicate attribute, an unbound prefix, more than
    ///   [`MAX_ATTRIBUTES`](Self::MAX_ATTRIBUTES) attributes on an element.
    /// - [`XmlError::InvalidUtf8`], [`XmlError::Doctype`],
    ///   [`XmlError::UnknownEntity`].
    /// - [`XmlError::StanzaTooLarge`] as soon as a header, stanza, comment or
    ///   PI exceeds `max_stanza_size` bytes, complete or not.
    /// - [`XmlError::TooDeep`] when an element would nest deeper than
    ///   `max_depth` below the stream root.
    ///
    /// Errors are sticky: later calls return the same error.
    pub fn next_packet(&mut self) -> Result<Option<Packet>, XmlError> {
        match self.next_raw(false)? {
            Some(Raw::Packet(p)) => Ok(Some(p)),
            // Not asked for: the scanner never takes the fast path then.
            Some(Raw::Payload(_)) => Err(malformed("internal: unexpected fast path")),
            None => Ok(None),
        }
    }

    /// Like [`next_packet`](Self::next_packet), but a CCS message stanza of
    /// the common shape (`<message ...><gcm xmlns="google:mobile:data">JSON</gcm></message>`,
    /// see [`Item::GcmPayload`]) comes as its JSON text, borrowed, with no
    /// element tree built and nothing allocated. Every other stanza, and every
    /// malformed one, takes the general path with the same result and the same
    /// errors as `next_packet`.
    ///
    /// # Errors
    ///
    /// As [`next_packet`](Self::next_packet).
    pub fn next_item(&mut self) -> Result<Option<Item<'_>>, XmlError> {
        Ok(match self.next_raw(true)? {
            Some(Raw::Packet(p)) => Some(Item::Packet(p)),
            Some(Raw::Payload(r)) => Some(Item::GcmPayload(self.payload(&r)?)),
            None => None,
        })
    }

    /// [`next_item`](Self::next_item) without the borrow: a payload comes as
    /// its range in the buffer, valid until the next `feed` or `read_from`
    /// (read it with [`payload`](Self::payload)).
    pub(crate) fn next_raw_item(&mut self) -> Result<Option<RawItem>, XmlError> {
        Ok(match self.next_raw(true)? {
            Some(Raw::Packet(p)) => Some(RawItem::Packet(p)),
            Some(Raw::Payload(r)) => Some(RawItem::GcmPayload(r)),
            None => None,
        })
    }

    /// The text of a payload from [`next_raw_item`](Self::next_raw_item).
    pub(crate) fn payload(&self, r: &RawPayload) -> Result<GcmPayload<'_>, XmlError> {
        let text = |r: &Range<usize>| {
            self.buf
                .get(r.clone())
                .map_or(Err(XmlError::Truncated), utf8)
        };
        Ok(GcmPayload {
            id: r.id.as_ref().map(text).transpose()?,
            json: text(&r.json)?,
        })
    }

    fn next_raw(&mut self, fast: bool) -> Result<Option<Raw>, XmlError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        self.fast = fast;
        match self.advance() {
            Ok(p) => Ok(p),
            Err(e) => {
                self.failed = Some(e.clone());
                Err(e)
            }
        }
    }

    /// Starts a new stream (after SASL success); unconsumed bytes are kept.
    ///
    /// Forgets the stream root, its namespaces and the depth; bytes already
    /// buffered (the next stream header may be among them) are scanned
    /// afresh. A sticky error is not cleared.
    pub fn reset(&mut self) {
        self.depth = 0;
        self.root_scope.clear();
        self.root_client = false;
        self.root_qname.clear();
        self.decl_ok = true;
        self.state = Scan::Idle;
        self.scan = self.start;
    }

    /// Called at EOF: `Err(Truncated)` if a stanza was cut off.
    ///
    /// Call it after [`next_packet`](Self::next_packet) returned `Ok(None)`.
    /// A stream that is still open between stanzas is fine (Google servers
    /// just hang up); a whitespace-only remainder is fine.
    ///
    /// # Errors
    ///
    /// [`XmlError::Truncated`] if a header, stanza, comment or PI was only
    /// partly received; the sticky error if `next_packet` had failed.
    pub fn finish(&self) -> Result<(), XmlError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if self.state != Scan::Idle || self.buf[self.scan..self.end].iter().any(|&b| !is_space(b)) {
            return Err(XmlError::Truncated);
        }
        Ok(())
    }

    /// Makes `buf[end..end + n]` available: drops consumed bytes when that
    /// is free (nothing left) or needed, then grows.
    fn make_room(&mut self, n: usize) {
        if self.start == self.end {
            // Everything consumed: rewind without moving anything.
            self.start = 0;
            self.scan = 0;
            self.end = 0;
        }
        if self.buf.len() - self.end >= n {
            return;
        }
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.scan -= self.start;
            self.end -= self.start;
            self.start = 0;
        }
        let need = self.end.saturating_add(n);
        if self.buf.len() < need {
            // Grow geometrically, but not past what the limits can need.
            let cap = self
                .limits
                .max_stanza_size
                .saturating_add(READ_BLOCK)
                .saturating_add(1);
            let target = need.max(self.buf.len().saturating_mul(2).min(cap));
            self.buf.reserve_exact(target - self.buf.len());
            self.buf.resize(target, 0);
        }
    }

    /// Runs the scanner until a packet is complete or the bytes run out.
    fn advance(&mut self) -> Result<Option<Raw>, XmlError> {
        loop {
            if self.state == Scan::Idle {
                // Between items: whitespace (keepalives) is consumed at once.
                let rest = &self.buf[self.scan..self.end];
                let Some(n) = rest.iter().position(|&b| !is_space(b)) else {
                    self.scan = self.end;
                    self.start = self.end;
                    return Ok(None);
                };
                let at = self.scan + n;
                self.start = at;
                self.scan = at;
                if self.buf[at] != b'<' {
                    return Err(malformed(if self.depth == 0 {
                        "text before the stream header"
                    } else {
                        "text between stanzas"
                    }));
                }
                if let Some(raw) = self.whole_gcm_stanza(at) {
                    return Ok(Some(raw));
                }
                self.scan = at + 1;
                self.state = Scan::TagOpen;
                continue;
            }

            // An item is in progress from `start`; it may use bytes up to `limit`.
            let limit = self
                .end
                .min(self.start.saturating_add(self.limits.max_stanza_size));
            let i = self.scan;
            if i >= limit {
                return if limit < self.end {
                    Err(XmlError::StanzaTooLarge {
                        max: self.limits.max_stanza_size,
                    })
                } else {
                    Ok(None)
                };
            }
            let b = self.buf[i];
            match self.state {
                // Handled at the top of the loop.
                Scan::Idle => {}
                Scan::Content => match find_byte(&self.buf[i..limit], b'<') {
                    Some(n) => {
                        self.scan = i + n + 1;
                        self.state = Scan::TagOpen;
                    }
                    None => self.scan = limit,
                },
                Scan::TagOpen => {
                    self.scan = i + 1;
                    self.state = match b {
                        b'/' => Scan::EndTag,
                        b'!' => Scan::Bang {
                            seen: 0,
                            cands: BANG_COMMENT | BANG_CDATA | BANG_DOCTYPE,
                        },
                        b'?' => Scan::Pi { question: false },
                        _ => {
                            // A new element nests `depth` levels below the root.
                            if self.depth > self.limits.max_depth {
                                return Err(XmlError::TooDeep {
                                    max: self.limits.max_depth,
                                });
                            }
                            // The byte belongs to the tag name: rescan it there.
                            self.scan = i;
                            Scan::StartTag {
                                quote: 0,
                                slash: false,
                            }
                        }
                    };
                }
                Scan::Bang { seen, cands } => {
                    self.scan = i + 1;
                    self.state = self.bang(seen, cands, b)?;
                }
                Scan::Comment { dashes } => {
                    if dashes == 0 {
                        match find_byte(&self.buf[i..limit], b'-') {
                            Some(n) => {
                                self.scan = i + n + 1;
                                self.state = Scan::Comment { dashes: 1 };
                            }
                            None => self.scan = limit,
                        }
                        continue;
                    }
                    self.scan = i + 1;
                    match b {
                        b'-' => self.state = Scan::Comment { dashes: 2 },
                        b'>' if dashes == 2 => self.markup_end(i)?,
                        _ if dashes == 2 => return Err(malformed("`--` inside a comment")),
                        _ => self.state = Scan::Comment { dashes: 0 },
                    }
                }
                Scan::Cdata { brackets } => {
                    if brackets == 0 {
                        match find_byte(&self.buf[i..limit], b']') {
                            Some(n) => {
                                self.scan = i + n + 1;
                                self.state = Scan::Cdata { brackets: 1 };
                            }
                            None => self.scan = limit,
                        }
                        continue;
                    }
                    self.scan = i + 1;
                    match b {
                        b']' => self.state = Scan::Cdata { brackets: 2 },
                        b'>' if brackets == 2 => self.state = Scan::Content,
                        _ => self.state = Scan::Cdata { brackets: 0 },
                    }
                }
                Scan::Pi { question } => {
                    if !question {
                        match find_byte(&self.buf[i..limit], b'?') {
                            Some(n) => {
                                self.scan = i + n + 1;
                                self.state = Scan::Pi { question: true };
                            }
                            None => self.scan = limit,
                        }
                        continue;
                    }
                    self.scan = i + 1;
                    match b {
                        b'?' => {}
                        b'>' => self.markup_end(i)?,
                        _ => self.state = Scan::Pi { question: false },
                    }
                }
                Scan::StartTag { quote, slash } => {
                    if quote != 0 {
                        match find_byte(&self.buf[i..limit], quote) {
                            Some(n) => {
                                self.scan = i + n + 1;
                                self.state = Scan::StartTag {
                                    quote: 0,
                                    slash: false,
                                };
                            }
                            None => self.scan = limit,
                        }
                        continue;
                    }
                    let found = self.buf[i..limit]
                        .iter()
                        .position(|&c| matches!(c, b'"' | b'\'' | b'>' | b'/' | b'<'));
                    let Some(n) = found else {
                        self.scan = limit;
                        self.state = Scan::StartTag {
                            quote: 0,
                            slash: false,
                        };
                        continue;
                    };
                    let at = i + n;
                    let slash = slash && n == 0;
                    self.scan = at + 1;
                    match self.buf[at] {
                        b'>' => {
                            if let Some(p) = self.start_tag_end(at, slash)? {
                                return Ok(Some(p));
                            }
                        }
                        b'/' => {
                            self.state = Scan::StartTag {
                                quote: 0,
                                slash: true,
                            }
                        }
                        b'<' => return Err(malformed("`<` inside a tag")),
                        q => {
                            self.state = Scan::StartTag {
                                quote: q,
                                slash: false,
                            }
                        }
                    }
                }
                Scan::EndTag => {
                    let found = self.buf[i..limit]
                        .iter()
                        .position(|&c| c == b'>' || c == b'<');
                    let Some(n) = found else {
                        self.scan = limit;
                        continue;
                    };
                    let at = i + n;
                    self.scan = at + 1;
                    if self.buf[at] == b'<' {
                        return Err(malformed("`<` inside an end tag"));
                    }
                    if let Some(p) = self.end_tag_end(at)? {
                        return Ok(Some(p));
                    }
                }
            }
        }
    }

    /// On the fast path, a whole stanza of the common shape already buffered
    /// from `at` (its `<`), read in one pass without the scanner: its payload,
    /// consumed. `None` (nothing consumed) for anything else, incomplete
    /// stanzas included: the scanner takes those.
    fn whole_gcm_stanza(&mut self, at: usize) -> Option<Raw> {
        // `<gcm>` nests two levels below the root.
        if !self.fast || self.depth != 1 || self.limits.max_depth < 2 {
            return None;
        }
        let end = self.end.min(at.saturating_add(self.limits.max_stanza_size));
        let (p, len) = fast::gcm_prefix(&self.buf[at..end], self.root_client)?;
        // The general path refuses invalid UTF-8 anywhere in a stanza.
        utf8(&self.buf[at..at + len]).ok()?;
        let abs = |r: Range<usize>| at + r.start..at + r.end;
        let raw = Raw::Payload(RawPayload {
            id: p.id.map(abs),
            json: abs(p.json),
        });
        self.consume_through(at + len - 1);
        Some(raw)
    }

    /// One byte after `<!`: narrows the candidates, or enters a comment or CDATA.
    fn bang(&self, seen: u8, cands: u8, b: u8) -> Result<Scan, XmlError> {
        let k = usize::from(seen);
        let mut left = 0;
        for (bit, pat) in BANG.iter().enumerate() {
            let flag = 1 << bit;
            let byte = if flag == BANG_DOCTYPE {
                b.to_ascii_uppercase()
            } else {
                b
            };
            if cands & flag != 0 && pat.get(k) == Some(&byte) {
                left |= flag;
            }
        }
        let seen = k + 1;
        if left & BANG_COMMENT != 0 && seen == BANG[0].len() {
            return Ok(Scan::Comment { dashes: 0 });
        }
        if left & BANG_CDATA != 0 && seen == BANG[1].len() {
            if self.depth < 2 {
                return Err(malformed("CDATA outside a stanza"));
            }
            return Ok(Scan::Cdata { brackets: 0 });
        }
        if left & BANG_DOCTYPE != 0 && seen == BANG[2].len() {
            return Err(XmlError::Doctype);
        }
        if left == 0 {
            return Err(malformed("unknown markup after `<!`"));
        }
        // `seen` < 7 here: every candidate has at most 7 bytes.
        Ok(Scan::Bang {
            seen: seen as u8,
            cands: left,
        })
    }

    /// A comment or PI ended at `at`.
    fn markup_end(&mut self, at: usize) -> Result<(), XmlError> {
        if self.depth >= 2 {
            // Inside a stanza: the tree builder deals with it.
            self.state = Scan::Content;
            return Ok(());
        }
        // Between stanzas or before the header: check it, then drop it.
        let text = utf8(&self.buf[self.start..=at])?;
        check_misc(text, self.decl_ok)?;
        self.decl_ok = false;
        self.consume_through(at);
        Ok(())
    }

    /// The `>` of a start tag at `at`; `empty` for `/>`.
    fn start_tag_end(&mut self, at: usize, empty: bool) -> Result<Option<Raw>, XmlError> {
        if self.depth == 0 {
            if empty {
                return Err(malformed("the stream header must not be self-closing"));
            }
            let text = utf8(&self.buf[self.start..=at])?;
            let (root, scope, qname) = parse_header(text)?;
            self.root_client = scope
                .iter()
                .any(|(p, uri)| p.is_empty() && uri == crate::ns::CLIENT);
            self.root_scope = scope;
            self.root_qname = qname;
            self.depth = 1;
            self.decl_ok = false;
            self.consume_through(at);
            return Ok(Some(Raw::Packet(Packet::StreamStart(root))));
        }
        if empty {
            if self.depth == 1 {
                return self.stanza_end(at).map(Some);
            }
        } else {
            self.depth = self.depth.saturating_add(1);
        }
        self.state = Scan::Content;
        Ok(None)
    }

    /// The `>` of an end tag at `at`.
    fn end_tag_end(&mut self, at: usize) -> Result<Option<Raw>, XmlError> {
        match self.depth {
            0 => Err(malformed("end tag before the stream header")),
            1 => {
                let text = utf8(&self.buf[self.start..=at])?;
                let name = text[2..text.len() - 1].trim_end_matches(is_space_char);
                if name != self.root_qname {
                    return Err(malformed(format!(
                        "`</{name}>` does not close the stream root `{}`",
                        self.root_qname
                    )));
                }
                self.depth = 0;
                self.root_scope.clear();
                self.root_client = false;
                self.root_qname.clear();
                self.consume_through(at);
                Ok(Some(Raw::Packet(Packet::StreamEnd)))
            }
            2 => {
                self.depth = 1;
                self.stanza_end(at).map(Some)
            }
            _ => {
                self.depth -= 1;
                self.state = Scan::Content;
                Ok(None)
            }
        }
    }

    /// A top-level stanza ended at `at`: build it (or, on the fast path,
    /// find its payload) and consume it.
    fn stanza_end(&mut self, at: usize) -> Result<Raw, XmlError> {
        let bytes = &self.buf[self.start..=at];
        let text = utf8(bytes)?;
        if self.fast {
            if let Some(p) = fast::gcm_payload(bytes, self.root_client) {
                let abs = |r: Range<usize>| self.start + r.start..self.start + r.end;
                let r = RawPayload {
                    id: p.id.map(abs),
                    json: abs(p.json),
                };
                self.consume_through(at);
                return Ok(Raw::Payload(r));
            }
        }
        let mut b = Builder::new(&self.root_scope, mem::take(&mut self.scratch));
        let el = b.stanza(text);
        self.scratch = b.into_scratch();
        let el = el?;
        self.consume_through(at);
        Ok(Raw::Packet(Packet::Stanza(el)))
    }

    fn consume_through(&mut self, at: usize) {
        self.start = at + 1;
        self.scan = at + 1;
        self.state = Scan::Idle;
    }
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

fn is_space_char(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

fn utf8(bytes: &[u8]) -> Result<&str, XmlError> {
    std::str::from_utf8(bytes).map_err(|_| XmlError::InvalidUtf8)
}

fn malformed(detail: impl Into<String>) -> XmlError {
    XmlError::Malformed {
        detail: detail.into(),
    }
}

fn parse_error(e: xmlparser::Error) -> XmlError {
    malformed(e.to_string())
}

/// Checks a comment, PI or (if `decl_ok`) XML declaration found outside stanzas.
fn check_misc(text: &str, decl_ok: bool) -> Result<(), XmlError> {
    let mut tokens = Tokenizer::from(text);
    match tokens.next() {
        Some(Ok(Token::Comment { .. } | Token::ProcessingInstruction { .. })) => {}
        Some(Ok(Token::Declaration { .. })) if decl_ok => {}
        Some(Ok(Token::Declaration { .. })) => return Err(malformed("misplaced XML declaration")),
        Some(Err(e)) => return Err(parse_error(e)),
        Some(Ok(_)) | None => return Err(malformed("unexpected markup")),
    }
    match tokens.next() {
        None => Ok(()),
        Some(Err(e)) => Err(parse_error(e)),
        Some(Ok(_)) => Err(malformed("unexpected markup")),
    }
}
