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
//! Throughput, measured against plain `xmlparser` tokenization of the same
//! bytes (the ignored `perf` test): about 0.75x on upstream-sized messages
//! and 0.5x on small acks. For small stanzas the floor is the tree itself:
//! every element costs two `String`s (name, namespace) and a children `Vec`.
//!
//! Deliberate leniency, so that [`super::escape_text`] output always reads
//! back: numeric character references may name any Unicode scalar value
//! except U+0000, including the control characters XML 1.0 does not allow
//! (`&#x1;`). Literal control characters are still rejected.
//!
//! As XML requires, literal line ends are normalised (`\r\n` and `\r` become
//! `\n`) and literal tab, CR and LF in attribute values become spaces; the
//! writer emits those characters as character references, which are kept.

use super::{Element, Node};
use crate::error::XmlError;
use std::borrow::Cow;
use std::fmt;
use std::io::{self, Read};
use std::mem;
use xmlparser::{ElementEnd, Token, Tokenizer};

const READ_BLOCK: usize = StanzaReader::READ_BLOCK;
const MAX_ATTRIBUTES: usize = StanzaReader::MAX_ATTRIBUTES;

const XML_NS: &str = "http://www.w3.org/XML/1998/namespace";
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
    /// Allocations the tree builder reuses from stanza to stanza.
    scratch: Scratch,
    /// Nothing but whitespace seen since the start (or `reset`): an XML
    /// declaration may still come.
    decl_ok: bool,
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
            scratch: Scratch::default(),
            decl_ok: true,
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
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
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
    fn advance(&mut self) -> Result<Option<Packet>, XmlError> {
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
    fn start_tag_end(&mut self, at: usize, empty: bool) -> Result<Option<Packet>, XmlError> {
        if self.depth == 0 {
            if empty {
                return Err(malformed("the stream header must not be self-closing"));
            }
            let text = utf8(&self.buf[self.start..=at])?;
            let (root, scope, qname) = parse_header(text)?;
            self.root_scope = scope;
            self.root_qname = qname;
            self.depth = 1;
            self.decl_ok = false;
            self.consume_through(at);
            return Ok(Some(Packet::StreamStart(root)));
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
    fn end_tag_end(&mut self, at: usize) -> Result<Option<Packet>, XmlError> {
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
                self.root_qname.clear();
                self.consume_through(at);
                Ok(Some(Packet::StreamEnd))
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

    /// A top-level stanza ended at `at`: build it and consume it.
    fn stanza_end(&mut self, at: usize) -> Result<Packet, XmlError> {
        let text = utf8(&self.buf[self.start..=at])?;
        let mut b = Builder::new(&self.root_scope, mem::take(&mut self.scratch));
        let el = b.stanza(text);
        self.scratch = b.into_scratch();
        let el = el?;
        self.consume_through(at);
        Ok(Packet::Stanza(el))
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

// ---- word-at-a-time byte search (safe SWAR) ----
//
// Each mask below has the high bit set in the bytes of `x` that match; a
// false positive can only appear in a byte above (more significant than) a
// true match, so with little-endian loads the lowest flagged byte is always
// the first real match.

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

fn word(chunk: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(chunk);
    u64::from_le_bytes(w)
}

/// Bytes of `x` equal to `b`.
fn eq_mask(x: u64, b: u8) -> u64 {
    let y = x ^ (LO * u64::from(b));
    y.wrapping_sub(LO) & !y & HI
}

/// Bytes of `x` below `n` (`n` <= 0x80).
fn lt_mask(x: u64, n: u8) -> u64 {
    x.wrapping_sub(LO * u64::from(n)) & !x & HI
}

/// The first index in `hay` where `mask` flags a byte (or, for the tail
/// shorter than a word, where `test` holds).
fn find_by(hay: &[u8], mask: impl Fn(u64) -> u64, test: impl Fn(u8) -> bool) -> Option<usize> {
    let mut words = hay.chunks_exact(8);
    let mut base = 0;
    for chunk in &mut words {
        let m = mask(word(chunk));
        if m != 0 {
            return Some(base + (m.trailing_zeros() / 8) as usize);
        }
        base += 8;
    }
    words
        .remainder()
        .iter()
        .position(|&b| test(b))
        .map(|n| base + n)
}

fn find_byte(hay: &[u8], needle: u8) -> Option<usize> {
    find_by(hay, |x| eq_mask(x, needle), |b| b == needle)
}

/// Bytes character data cannot simply be copied past: `&`, `>` (for
/// `]]>`), C0 controls (`\r` needs normalising, tab and LF are fine, the
/// rest are not allowed) and 0xEF (which leads U+FFFE and U+FFFF).
fn find_text_special(hay: &[u8]) -> Option<usize> {
    find_by(
        hay,
        |x| lt_mask(x, 0x20) | eq_mask(x, b'&') | eq_mask(x, b'>') | eq_mask(x, 0xEF),
        |b| b < 0x20 || b == b'&' || b == b'>' || b == 0xEF,
    )
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

/// Parses the stream header open tag: the root element, its namespace
/// declarations, and its qualified name.
#[allow(clippy::type_complexity)] // a private one-off triple
fn parse_header(text: &str) -> Result<(Element, Vec<(String, String)>, String), XmlError> {
    let mut b = Builder::new(&[], Scratch::default());
    let (open, empty) = b.start_tag(text, 0..text.len())?;
    if empty {
        return Err(malformed("the stream header must not be self-closing"));
    }
    let qname = qualified(open.prefix, open.local);
    if !open.el.is("stream", STREAM_NS) {
        return Err(malformed(format!(
            "expected the stream header <stream xmlns=\"{STREAM_NS}\">, got <{qname}>"
        )));
    }
    let scope = b
        .bindings
        .into_iter()
        .map(|(p, uri)| (p.to_owned(), uri.into_owned()))
        .collect();
    Ok((open.el, scope, qname))
}

/// The tree builder's working vectors, kept (empty) between stanzas so their
/// allocations are reused.
#[derive(Default)]
struct Scratch {
    bindings: Vec<(&'static str, Cow<'static, str>)>,
    stack: Vec<Open<'static>>,
    attrs: Vec<(&'static str, &'static str, String)>,
}

/// Reuses the allocation of `v`, emptied, for a vector of another type of
/// the same layout (here: the same type with another lifetime). The
/// standard library collects `into_iter` chains in place, so this neither
/// allocates nor copies.
fn recycle<T, U>(mut v: Vec<T>) -> Vec<U> {
    v.clear();
    v.into_iter().filter_map(|_| None).collect()
}

/// An element whose start tag has been read.
struct Open<'a> {
    el: Element,
    prefix: &'a str,
    local: &'a str,
    /// `bindings.len()` before this element's declarations.
    mark: usize,
    has_elements: bool,
}

/// Builds an element tree from one complete stanza (or a stream header).
///
/// Markup (start tags with their attributes, comments, PIs) is tokenized
/// with `xmlparser`; character data is validated and unescaped here, a word
/// at a time, which is several times faster than a char-by-char tokenizer
/// on the JSON payloads that make up most of the bytes.
struct Builder<'a, 'r> {
    /// Declarations in scope from outside the text (the stream root's).
    outer: &'r [(String, String)],
    /// Declarations made inside the text: (prefix, URI), `""` = default.
    bindings: Vec<(&'a str, Cow<'a, str>)>,
    stack: Vec<Open<'a>>,
    /// Character data not yet attached to the innermost open element.
    text: String,
    /// Attributes of the start tag being read: (prefix, local, value).
    attrs: Vec<(&'a str, &'a str, String)>,
}

impl<'a, 'r> Builder<'a, 'r> {
    fn new(outer: &'r [(String, String)], scratch: Scratch) -> Self {
        Builder {
            outer,
            bindings: recycle(scratch.bindings),
            stack: recycle(scratch.stack),
            text: String::new(),
            attrs: recycle(scratch.attrs),
        }
    }

    /// Hands the working vectors back for the next stanza.
    fn into_scratch(self) -> Scratch {
        Scratch {
            bindings: recycle(self.bindings),
            stack: recycle(self.stack),
            attrs: recycle(self.attrs),
        }
    }

    /// One complete element: the whole of `text`, which starts with `<`
    /// and ends with `>`.
    fn stanza(&mut self, text: &'a str) -> Result<Element, XmlError> {
        let bytes = text.as_bytes();
        let mut pos = 0;
        while pos < bytes.len() {
            let lt = find_byte(&bytes[pos..], b'<').map_or(bytes.len(), |n| pos + n);
            if lt > pos {
                if self.stack.is_empty() {
                    return Err(malformed("text outside the stanza"));
                }
                // Unescaping never lengthens text: one allocation suffices.
                self.text.reserve(lt - pos);
                text_into(&text[pos..lt], &mut self.text)?;
                pos = lt;
                continue;
            }
            let rest = &bytes[lt..];
            let (next, finished) = if rest.starts_with(b"</") {
                let gt = find_byte(rest, b'>')
                    .map(|n| lt + n)
                    .ok_or_else(|| malformed("unterminated end tag"))?;
                let name = text[lt + 2..gt].trim_end_matches(is_space_char);
                (gt + 1, self.end_tag(name)?)
            } else if rest.starts_with(b"<![CDATA[") {
                let body = lt + 9;
                let end = text[body..]
                    .find("]]>")
                    .map(|n| body + n)
                    .ok_or_else(|| malformed("unterminated CDATA section"))?;
                if self.stack.is_empty() {
                    return Err(malformed("CDATA outside the stanza"));
                }
                let cdata = &text[body..end];
                check_chars(cdata)?;
                push_normalised(cdata, &mut self.text);
                (end + 3, None)
            } else if rest.starts_with(b"<!--") || rest.starts_with(b"<?") {
                // Search after the opener: `<!-->` does not close a comment.
                let (open, close) = if rest[1] == b'!' {
                    (4, "-->")
                } else {
                    (2, "?>")
                };
                let end = text[lt + open..]
                    .find(close)
                    .map(|n| lt + open + n + close.len())
                    .ok_or_else(|| malformed("unterminated comment or PI"))?;
                let mut tokens = Tokenizer::from_fragment(text, lt..end);
                match (tokens.next(), tokens.next()) {
                    (
                        Some(Ok(Token::Comment { .. } | Token::ProcessingInstruction { .. })),
                        None,
                    ) => {}
                    (Some(Err(e)), _) | (_, Some(Err(e))) => return Err(parse_error(e)),
                    _ => return Err(malformed("unexpected markup")),
                }
                (end, None)
            } else if rest.starts_with(b"<!") {
                // DOCTYPE never gets here: the scanner refuses it first.
                return Err(malformed("unknown markup after `<!`"));
            } else {
                let gt = tag_end(bytes, lt).ok_or_else(|| malformed("unterminated start tag"))?;
                self.flush_text(true);
                if let Some(parent) = self.stack.last_mut() {
                    parent.has_elements = true;
                }
                let (open, empty) = self.start_tag(text, lt..gt + 1)?;
                if empty {
                    self.bindings.truncate(open.mark);
                    (gt + 1, self.attach(open.el))
                } else {
                    self.stack.push(open);
                    (gt + 1, None)
                }
            };
            if let Some(el) = finished {
                if next != bytes.len() {
                    return Err(malformed("content after the stanza"));
                }
                return Ok(el);
            }
            pos = next;
        }
        Err(malformed("incomplete stanza"))
    }

    /// Closes the innermost element with the end tag `</name>`; returns the
    /// stanza if that was its end.
    fn end_tag(&mut self, name: &str) -> Result<Option<Element>, XmlError> {
        let Some(top) = self.stack.last() else {
            return Err(malformed("end tag without a start tag"));
        };
        let (p, l) = (top.prefix, top.local);
        let matches = if p.is_empty() {
            same(name, l)
        } else {
            name.len() == p.len() + 1 + l.len()
                && name.as_bytes()[p.len()] == b':'
                && same(&name[..p.len()], p)
                && same(&name[p.len() + 1..], l)
        };
        if !matches {
            return Err(malformed(format!(
                "`</{name}>` does not close `<{}>`",
                qualified(top.prefix, top.local)
            )));
        }
        self.flush_text(false);
        match self.stack.pop() {
            Some(open) => {
                self.bindings.truncate(open.mark);
                Ok(self.attach(open.el))
            }
            None => Ok(None),
        }
    }

    /// Hangs a finished element on its parent; returns it if it was the top one.
    fn attach(&mut self, el: Element) -> Option<Element> {
        match self.stack.last_mut() {
            Some(parent) => {
                parent.el.push(Node::Element(el));
                None
            }
            None => Some(el),
        }
    }

    /// Attaches pending character data to the innermost open element.
    /// Whitespace-only runs are dropped in elements that have child elements.
    fn flush_text(&mut self, child_follows: bool) {
        if self.text.is_empty() {
            return;
        }
        let Some(top) = self.stack.last_mut() else {
            self.text.clear();
            return;
        };
        if (child_follows || top.has_elements) && self.text.bytes().all(is_space) {
            self.text.clear();
            return;
        }
        top.el.push(Node::Text(mem::take(&mut self.text)));
    }

    /// Tokenizes the start tag `text[range]` (`<` to `>`) into an element;
    /// also returns whether it was self-closing. Its namespace declarations
    /// are pushed onto `bindings`.
    fn start_tag(
        &mut self,
        text: &'a str,
        range: std::ops::Range<usize>,
    ) -> Result<(Open<'a>, bool), XmlError> {
        let mark = self.bindings.len();
        let mut name = None;
        self.attrs.clear();
        let mut tokens = Tokenizer::from_fragment(text, range);
        let empty = loop {
            match tokens.next() {
                Some(Ok(Token::ElementStart { prefix, local, .. })) if name.is_none() => {
                    name = Some((prefix.as_str(), local.as_str()));
                }
                Some(Ok(Token::Attribute {
                    prefix,
                    local,
                    value,
                    ..
                })) if name.is_some() => {
                    self.attribute(mark, prefix.as_str(), local.as_str(), value.as_str())?;
                }
                Some(Ok(Token::ElementEnd { end, .. })) if name.is_some() => match end {
                    ElementEnd::Open => break false,
                    ElementEnd::Empty => break true,
                    ElementEnd::Close(..) => return Err(malformed("unexpected end tag")),
                },
                Some(Err(e)) => return Err(parse_error(e)),
                Some(Ok(_)) | None => return Err(malformed("malformed start tag")),
            }
        };
        match tokens.next() {
            None => {}
            Some(Err(e)) => return Err(parse_error(e)),
            Some(Ok(_)) => return Err(malformed("malformed start tag")),
        }
        let Some((prefix, local)) = name else {
            return Err(malformed("malformed start tag"));
        };
        if prefix == "xmlns" {
            return Err(malformed("element with the reserved prefix `xmlns`"));
        }
        let ns = self.resolve(prefix)?;
        let mut el = Element::new(local, ns);
        for (p, l, value) in self.attrs.drain(..) {
            if !p.is_empty() && !is_bound(&self.bindings, self.outer, p) {
                return Err(malformed(format!("unbound namespace prefix `{p}`")));
            }
            el.set_attr(qualified(p, l), value);
        }
        let open = Open {
            el,
            prefix,
            local,
            mark,
            has_elements: false,
        };
        Ok((open, empty))
    }

    fn attribute(
        &mut self,
        mark: usize,
        prefix: &'a str,
        local: &'a str,
        raw: &'a str,
    ) -> Result<(), XmlError> {
        if self.attrs.len() + (self.bindings.len() - mark) >= MAX_ATTRIBUTES {
            return Err(malformed(format!(
                "more than {MAX_ATTRIBUTES} attributes on one element"
            )));
        }
        let declared = if prefix.is_empty() && local == "xmlns" {
            Some("")
        } else if prefix == "xmlns" {
            Some(local)
        } else {
            None
        };
        let Some(declared) = declared else {
            if self
                .attrs
                .iter()
                .any(|(p, l, _)| same(p, prefix) && same(l, local))
            {
                return Err(malformed(format!(
                    "duplicate attribute `{}`",
                    qualified(prefix, local)
                )));
            }
            let mut value = String::with_capacity(raw.len());
            attr_into(raw, &mut value)?;
            self.attrs.push((prefix, local, value));
            return Ok(());
        };
        if self.bindings[mark..].iter().any(|(p, _)| same(p, declared)) {
            return Err(malformed(format!(
                "duplicate namespace declaration for `{declared}`"
            )));
        }
        let uri = attr_cow(raw)?;
        if declared == "xmlns" || (declared == "xml") != (uri == XML_NS) {
            return Err(malformed(format!("reserved namespace prefix `{declared}`")));
        }
        if !declared.is_empty() && uri.is_empty() {
            return Err(malformed(format!(
                "prefix `{declared}` bound to an empty namespace"
            )));
        }
        self.bindings.push((declared, uri));
        Ok(())
    }

    /// The namespace URI bound to `prefix` (`""` = default namespace).
    fn resolve(&self, prefix: &str) -> Result<&str, XmlError> {
        if let Some((_, uri)) = self.bindings.iter().rev().find(|(p, _)| same(p, prefix)) {
            return Ok(uri);
        }
        if let Some((_, uri)) = self.outer.iter().rev().find(|(p, _)| same(p, prefix)) {
            return Ok(uri);
        }
        match prefix {
            "" => Ok(""),
            "xml" => Ok(XML_NS),
            _ => Err(malformed(format!("unbound namespace prefix `{prefix}`"))),
        }
    }
}

fn is_bound(bindings: &[(&str, Cow<'_, str>)], outer: &[(String, String)], p: &str) -> bool {
    p == "xml" || bindings.iter().any(|(b, _)| same(b, p)) || outer.iter().any(|(b, _)| same(b, p))
}

/// String equality without a `memcmp` call: the names compared are short.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).all(|(x, y)| x == y)
}

fn qualified(prefix: &str, local: &str) -> String {
    if prefix.is_empty() {
        return local.to_owned();
    }
    let mut s = String::with_capacity(prefix.len() + 1 + local.len());
    s.push_str(prefix);
    s.push(':');
    s.push_str(local);
    s
}

/// The `>` ending the start tag that begins at `lt`, skipping quoted values.
fn tag_end(bytes: &[u8], lt: usize) -> Option<usize> {
    let mut i = lt + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'>' => return Some(i),
            q @ (b'"' | b'\'') => i += 1 + find_byte(&bytes[i + 1..], q)?,
            _ => {}
        }
        i += 1;
    }
    None
}

/// Appends character data to `out`: references resolved, line ends
/// normalised, characters XML does not allow (and `]]>`) refused.
fn text_into(raw: &str, out: &mut String) -> Result<(), XmlError> {
    let bytes = raw.as_bytes();
    let mut copied = 0;
    let mut from = 0;
    while let Some(n) = find_text_special(&bytes[from..]) {
        let at = from + n;
        from = at + 1;
        match bytes[at] {
            b'\t' | b'\n' => {}
            b'>' => {
                if at >= 2 && &bytes[at - 2..at] == b"]]" {
                    return Err(malformed("`]]>` in character data"));
                }
            }
            0xEF => {
                if bytes.get(at + 1) == Some(&0xBF)
                    && matches!(bytes.get(at + 2), Some(0xBE | 0xBF))
                {
                    return Err(malformed("U+FFFE/U+FFFF in character data"));
                }
            }
            b'&' => {
                out.push_str(&raw[copied..at]);
                let (c, next) = reference(raw, at)?;
                out.push(c);
                copied = next;
                from = next;
            }
            b'\r' => {
                out.push_str(&raw[copied..at]);
                out.push('\n');
                if bytes.get(at + 1) == Some(&b'\n') {
                    from = at + 2;
                }
                copied = from;
            }
            _ => return Err(malformed("control character in character data")),
        }
    }
    out.push_str(&raw[copied..]);
    Ok(())
}

/// Refuses characters XML does not allow literally (CDATA content).
fn check_chars(raw: &str) -> Result<(), XmlError> {
    if raw.chars().any(|c| {
        (c < ' ' && !matches!(c, '\t' | '\n' | '\r')) || c == '\u{FFFE}' || c == '\u{FFFF}'
    }) {
        return Err(malformed("character not allowed in XML"));
    }
    Ok(())
}

/// Appends CDATA content with line ends normalised.
fn push_normalised(raw: &str, out: &mut String) {
    let bytes = raw.as_bytes();
    let mut last = 0;
    while let Some(n) = find_byte(&bytes[last..], b'\r') {
        let at = last + n;
        out.push_str(&raw[last..at]);
        out.push('\n');
        last = if bytes.get(at + 1) == Some(&b'\n') {
            at + 2
        } else {
            at + 1
        };
    }
    out.push_str(&raw[last..]);
}

/// An attribute value unescaped, borrowed when nothing needed changing.
fn attr_cow(raw: &str) -> Result<Cow<'_, str>, XmlError> {
    if !raw
        .bytes()
        .any(|b| matches!(b, b'&' | b'\r' | b'\n' | b'\t'))
    {
        return Ok(Cow::Borrowed(raw));
    }
    let mut s = String::with_capacity(raw.len());
    attr_into(raw, &mut s)?;
    Ok(Cow::Owned(s))
}

/// Appends an attribute value (as `xmlparser` checked it) to `out` with
/// references resolved and whitespace normalised as XML 1.0 prescribes:
/// literal tab, LF, CR and CRLF become one space each.
fn attr_into(raw: &str, out: &mut String) -> Result<(), XmlError> {
    let bytes = raw.as_bytes();
    let mut last = 0;
    while let Some(n) = bytes[last..]
        .iter()
        .position(|&b| matches!(b, b'&' | b'\r' | b'\n' | b'\t'))
    {
        let at = last + n;
        out.push_str(&raw[last..at]);
        if bytes[at] == b'&' {
            let (c, next) = reference(raw, at)?;
            out.push(c);
            last = next;
        } else {
            out.push(' ');
            last = if bytes[at] == b'\r' && bytes.get(at + 1) == Some(&b'\n') {
                at + 2
            } else {
                at + 1
            };
        }
    }
    out.push_str(&raw[last..]);
    Ok(())
}

/// Resolves the reference starting with the `&` at `at`; returns the
/// character and the index after the `;`.
fn reference(raw: &str, at: usize) -> Result<(char, usize), XmlError> {
    let bytes = raw.as_bytes();
    // The name runs to the first byte that cannot be in one, so a bare `&`
    // costs a short look, however many there are.
    let name_len = bytes[at + 1..]
        .iter()
        .position(|&b| !is_ref_byte(b))
        .unwrap_or(bytes.len() - at - 1);
    let semi = at + 1 + name_len;
    if name_len == 0 || bytes.get(semi) != Some(&b';') {
        return Err(malformed("`&` not starting a reference"));
    }
    Ok((resolve_ref(&raw[at + 1..semi])?, semi + 1))
}

/// Bytes that may appear in an entity name or character reference.
/// Non-ASCII bytes count, so a name never ends inside a character.
fn is_ref_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'#' | b'_' | b'-' | b'.' | b':') || b >= 0x80
}

/// Resolves the reference `&name;`: the five predefined entities, and
/// character references to any scalar value but U+0000 (see the module docs).
fn resolve_ref(name: &str) -> Result<char, XmlError> {
    let (digits, radix) = match name {
        "lt" => return Ok('<'),
        "gt" => return Ok('>'),
        "amp" => return Ok('&'),
        "apos" => return Ok('\''),
        "quot" => return Ok('"'),
        _ => match name.strip_prefix('#') {
            Some(hex) if hex.starts_with('x') => (&hex[1..], 16),
            Some(dec) => (dec, 10),
            None => {
                return Err(XmlError::UnknownEntity {
                    name: name.to_owned(),
                })
            }
        },
    };
    let bad = || malformed(format!("invalid character reference `&{name};`"));
    if digits.is_empty() {
        return Err(bad());
    }
    let mut value: u32 = 0;
    for c in digits.chars() {
        let d = c.to_digit(radix).ok_or_else(bad)?;
        value = value
            .checked_mul(radix)
            .and_then(|v| v.checked_add(d))
            .ok_or_else(bad)?;
    }
    match char::from_u32(value) {
        Some(c) if c != '\0' => Ok(c),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
    const BIND: &str = "urn:ietf:params:xml:ns:xmpp-bind";
    const SESSION: &str = "urn:ietf:params:xml:ns:xmpp-session";
    const STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
    const GCM: &str = "google:mobile:data";
    const CLIENT: &str = "jabber:client";

    /// A minimal stream header for error tests.
    const HDR: &str = "<stream:stream xmlns:stream='http://etherx.jabber.org/streams' \
                       xmlns='jabber:client'>";

    /// The server's side of a refused SASL handshake
    /// ([protocol: handshake](crate::protocol#handshake)).
    const HANDSHAKE_FAILURE: &str = r#"<?xml version='1.0'?>
<stream:stream from="gcm.googleapis.com" id="3F2A9C0D11B7E845" version="1.0" xmlns:stream="http://etherx.jabber.org/streams" xmlns="jabber:client"><stream:features><mechanisms xmlns="urn:ietf:params:xml:ns:xmpp-sasl">
  <mechanism>X-OAUTH2</mechanism><mechanism>X-GOOGLE-TOKEN</mechanism>
  <mechanism>PLAIN</mechanism></mechanisms></stream:features><failure xmlns="urn:ietf:params:xml:ns:xmpp-sasl"><not-authorized/></failure></stream:stream>"#;

    /// The server's side of a handshake (SASL accepted, restart, bind, session,
    /// see [protocol: handshake](crate::protocol#handshake)), then traffic as in
    /// [protocol: reading stanzas](crate::protocol#reading-stanzas).
    const SESSION_STREAM: &str = concat!(
        r#"<?xml version='1.0'?><stream:stream from="gcm.googleapis.com" id="3F2A9C0D11B7E845" version="1.0" xmlns:stream="http://etherx.jabber.org/streams" xmlns="jabber:client">"#,
        r#"<stream:features><mechanisms xmlns="urn:ietf:params:xml:ns:xmpp-sasl"><mechanism>X-OAUTH2</mechanism><mechanism>X-GOOGLE-TOKEN</mechanism><mechanism>PLAIN</mechanism></mechanisms></stream:features>"#,
        r#"<success xmlns="urn:ietf:params:xml:ns:xmpp-sasl"/>"#,
        "\n",
        r#"<stream:stream from='gcm.googleapis.com' id='9B1E4C7A22D3F560' version='1.0' xml:lang='en' xmlns:stream='http://etherx.jabber.org/streams' xmlns='jabber:client'>"#,
        r#"<str:features xmlns:str="http://etherx.jabber.org/streams"><bind xmlns="urn:ietf:params:xml:ns:xmpp-bind"/><session xmlns="urn:ietf:params:xml:ns:xmpp-session"/></str:features>"#,
        r#"<iq type="result" id="bind1"><bind xmlns="urn:ietf:params:xml:ns:xmpp-bind"><jid>123456789012@gcm.googleapis.com/fcmxmpp5D0C9A1E</jid></bind></iq>"#,
        r#"<iq type="result" id="sess1"/>"#,
        " \n \t  ",
        r#"<message><data:gcm xmlns:data="google:mobile:data">{"from":"tok-é","message_id":"m-1","message_type":"ack"}</data:gcm></message>"#,
        " ",
        " ",
        r#"<message to="123456789012@gcm.googleapis.com" from="devices@gcm.googleapis.com" type="normal"><gcm xmlns="google:mobile:data">"#,
        "\n  {\"category\":\"com.example\",\"data\":{\"k\":\"a &amp; b &lt; c &gt; d\",\"e\":\"&#38;&#x26;&#x1F600;&quot;&apos;\"},\"message_id\":\"u-1\",\"from\":\"dev\"}\n",
        r#"</gcm></message>"#,
        r#"<message id="m-42" type="error" to="123456789012@gcm.googleapis.com/fcmxmpp5D0C9A1E"><gcm xmlns="google:mobile:data">{"to":"x","data":{}}</gcm><error code="400" type="modify"><bad-request xmlns="urn:ietf:params:xml:ns:xmpp-stanzas"/><text xmlns="urn:ietf:params:xml:ns:xmpp-stanzas">InvalidJson: JSON_PARSING_ERROR : Missing Required Field: message_id
</text></error></message>"#,
        r#"<message><gcm xmlns="google:mobile:data"><![CDATA[{"a":"<b> & ]] > 😀"}]]></gcm></message>"#,
        "<!-- a comment between stanzas -->",
        "</stream:stream>",
    );

    fn header(from: &str, id: &str) -> Element {
        Element::new("stream", STREAM_NS)
            .with_attr("from", from)
            .with_attr("id", id)
            .with_attr("version", "1.0")
    }

    fn mechanisms() -> Element {
        let mut mechs = Element::new("mechanisms", SASL);
        for m in ["X-OAUTH2", "X-GOOGLE-TOKEN", "PLAIN"] {
            mechs.push(Node::Element(Element::new("mechanism", SASL).with_text(m)));
        }
        Element::new("features", STREAM_NS).with_child(mechs)
    }

    fn expected_failure() -> Vec<Packet> {
        vec![
            Packet::StreamStart(header("gcm.googleapis.com", "3F2A9C0D11B7E845")),
            Packet::Stanza(mechanisms()),
            Packet::Stanza(
                Element::new("failure", SASL).with_child(Element::new("not-authorized", SASL)),
            ),
            Packet::StreamEnd,
        ]
    }

    fn expected_session() -> Vec<Packet> {
        let upstream_json = "\n  {\"category\":\"com.example\",\"data\":{\"k\":\"a & b < c > d\",\
                             \"e\":\"&&\u{1F600}\"'\"},\"message_id\":\"u-1\",\"from\":\"dev\"}\n";
        vec![
            Packet::StreamStart(header("gcm.googleapis.com", "3F2A9C0D11B7E845")),
            Packet::Stanza(mechanisms()),
            Packet::Stanza(Element::new("success", SASL)),
            Packet::StreamStart(
                header("gcm.googleapis.com", "9B1E4C7A22D3F560").with_attr("xml:lang", "en"),
            ),
            Packet::Stanza(
                Element::new("features", STREAM_NS)
                    .with_child(Element::new("bind", BIND))
                    .with_child(Element::new("session", SESSION)),
            ),
            Packet::Stanza(
                Element::new("iq", CLIENT)
                    .with_attr("type", "result")
                    .with_attr("id", "bind1")
                    .with_child(
                        Element::new("bind", BIND).with_child(
                            Element::new("jid", BIND)
                                .with_text("123456789012@gcm.googleapis.com/fcmxmpp5D0C9A1E"),
                        ),
                    ),
            ),
            Packet::Stanza(
                Element::new("iq", CLIENT)
                    .with_attr("type", "result")
                    .with_attr("id", "sess1"),
            ),
            Packet::Stanza(
                Element::new("message", CLIENT).with_child(
                    Element::new("gcm", GCM)
                        .with_text(r#"{"from":"tok-é","message_id":"m-1","message_type":"ack"}"#),
                ),
            ),
            Packet::Stanza(
                Element::new("message", CLIENT)
                    .with_attr("to", "123456789012@gcm.googleapis.com")
                    .with_attr("from", "devices@gcm.googleapis.com")
                    .with_attr("type", "normal")
                    .with_child(Element::new("gcm", GCM).with_text(upstream_json)),
            ),
            Packet::Stanza(
                Element::new("message", CLIENT)
                    .with_attr("id", "m-42")
                    .with_attr("type", "error")
                    .with_attr("to", "123456789012@gcm.googleapis.com/fcmxmpp5D0C9A1E")
                    .with_child(Element::new("gcm", GCM).with_text(r#"{"to":"x","data":{}}"#))
                    .with_child(
                        Element::new("error", CLIENT)
                            .with_attr("code", "400")
                            .with_attr("type", "modify")
                            .with_child(Element::new("bad-request", STANZAS))
                            .with_child(Element::new("text", STANZAS).with_text(
                                "InvalidJson: JSON_PARSING_ERROR : Missing Required Field: \
                                 message_id\n",
                            )),
                    ),
            ),
            Packet::Stanza(Element::new("message", CLIENT).with_child(
                Element::new("gcm", GCM).with_text("{\"a\":\"<b> & ]] > \u{1F600}\"}"),
            )),
            Packet::StreamEnd,
        ]
    }

    /// What a reader made of some input: the packets, then how it ended
    /// (the first error, or the result of `finish`).
    type Outcome = (Vec<Packet>, Result<(), XmlError>);

    /// Drains packets, restarting the stream after SASL success as the
    /// stream layer does.
    fn drain(r: &mut StanzaReader, out: &mut Vec<Packet>) -> Result<(), XmlError> {
        while let Some(p) = r.next_packet()? {
            let restart = matches!(&p, Packet::Stanza(e) if e.is("success", SASL));
            out.push(p);
            if restart {
                r.reset();
            }
        }
        Ok(())
    }

    fn run<'a>(limits: ReaderLimits, chunks: impl IntoIterator<Item = &'a [u8]>) -> Outcome {
        let mut r = StanzaReader::new(limits);
        let mut out = Vec::new();
        for chunk in chunks {
            r.feed(chunk);
            if let Err(e) = drain(&mut r, &mut out) {
                return (out, Err(e));
            }
            assert!(r.buffered() <= limits.max_stanza_size, "{r:?}");
        }
        let end = r.finish();
        (out, end)
    }

    fn whole(input: &[u8]) -> Outcome {
        run(ReaderLimits::default(), [input])
    }

    /// Feeds `input` whole, in two chunks split at every offset, and one byte
    /// at a time; asserts all agree and returns the outcome.
    fn all_ways(limits: ReaderLimits, input: &[u8]) -> Outcome {
        let expected = run(limits, [input]);
        for k in 0..=input.len() {
            let (a, b) = input.split_at(k);
            assert_eq!(run(limits, [a, b]), expected, "split at {k}");
        }
        assert_eq!(run(limits, input.chunks(1)), expected, "byte at a time");
        assert_eq!(run(limits, input.chunks(7)), expected, "7 bytes at a time");
        expected
    }

    fn error_of(input: &[u8]) -> XmlError {
        match all_ways(ReaderLimits::default(), input).1 {
            Err(e) => e,
            Ok(()) => panic!("no error for {:?}", String::from_utf8_lossy(input)),
        }
    }

    fn stanza(xml: &str) -> Element {
        let input = format!("{HDR}{xml}");
        let (packets, end) = whole(input.as_bytes());
        assert_eq!(end, Ok(()), "{xml}");
        match packets.as_slice() {
            [Packet::StreamStart(_), Packet::Stanza(e)] => e.clone(),
            other => panic!("unexpected packets {other:?}"),
        }
    }

    fn is_malformed(e: &XmlError) -> bool {
        matches!(e, XmlError::Malformed { .. })
    }

    #[test]
    fn fixtures_contain_multibyte_chars() {
        assert!(SESSION_STREAM.contains('é') && SESSION_STREAM.contains('😀'));
    }

    #[test]
    fn handshake_failure_every_split() {
        let got = all_ways(ReaderLimits::default(), HANDSHAKE_FAILURE.as_bytes());
        assert_eq!(got, (expected_failure(), Ok(())));
    }

    #[test]
    fn session_stream_every_split() {
        let got = all_ways(ReaderLimits::default(), SESSION_STREAM.as_bytes());
        assert_eq!(got, (expected_session(), Ok(())));
    }

    #[test]
    fn session_stream_accessors() {
        let (packets, _) = whole(SESSION_STREAM.as_bytes());
        let Packet::Stanza(ack) = &packets[7] else {
            panic!("{:?}", packets[7]);
        };
        let gcm = ack.child("gcm", GCM).expect("payload by namespace");
        assert!(gcm.text().contains("\"message_type\":\"ack\""));
        assert!(ack.attrs().is_empty());
        let Packet::Stanza(features) = &packets[4] else {
            panic!("{:?}", packets[4]);
        };
        assert!(features.is("features", STREAM_NS));
        let Packet::StreamStart(h) = &packets[3] else {
            panic!("{:?}", packets[3]);
        };
        // Declarations are folded into namespaces, not kept as attributes.
        assert!(h.attrs().iter().all(|(n, _)| !n.starts_with("xmlns")));
        assert_eq!(h.attr("xml:lang"), Some("en"));
    }

    #[test]
    fn prefixed_and_default_namespaces_resolve_alike() {
        let a =
            stanza(r#"<message><data:gcm xmlns:data="google:mobile:data">{}</data:gcm></message>"#);
        let b = stanza(r#"<message><gcm xmlns="google:mobile:data">{}</gcm></message>"#);
        assert_eq!(a, b);
        assert!(a.is("message", CLIENT));
        let c = stanza("<message><body>hi</body></message>");
        assert!(c.child("body", CLIENT).is_some());
        // A prefix declared on an ancestor, and an undeclared default.
        let d = stanza(r#"<x:a xmlns:x="urn:x"><x:b/><c xmlns=""/></x:a>"#);
        assert!(d.is("a", "urn:x"));
        assert!(d.child("b", "urn:x").is_some());
        assert!(d.child("c", "").is_some());
        // Scope ends with the declaring element.
        let e = stanza(r#"<m><a xmlns="urn:a"/><b/></m>"#);
        assert!(e.child("a", "urn:a").is_some() && e.child("b", CLIENT).is_some());
    }

    #[test]
    fn stream_prefix_can_be_any_name() {
        let input = "<s:stream xmlns:s='http://etherx.jabber.org/streams' xmlns='jabber:client'>\
                     <s:features/><iq/></s:stream>";
        let (packets, end) = all_ways(ReaderLimits::default(), input.as_bytes());
        assert_eq!(end, Ok(()));
        assert_eq!(
            packets,
            vec![
                Packet::StreamStart(Element::new("stream", STREAM_NS)),
                Packet::Stanza(Element::new("features", STREAM_NS)),
                Packet::Stanza(Element::new("iq", CLIENT)),
                Packet::StreamEnd,
            ]
        );
    }

    #[test]
    fn text_is_unescaped_exactly() {
        let e = stanza("<m><b>a &amp; b &lt; c &gt; d &quot;&apos;</b></m>");
        assert_eq!(e.child_named("b").unwrap().text(), "a & b < c > d \"'");
        let e = stanza(
            "<m><b>&#38;&#x26;&#X;</b></m>"
                .replace("&#X;", "&#xE9;&#233;")
                .as_str(),
        );
        assert_eq!(e.child_named("b").unwrap().text(), "&&éé");
        // Controls XML 1.0 forbids literally are accepted as references.
        let e = stanza("<m><b>&#x1;&#31;&#xFFFE;&#xD;&#x9;</b></m>");
        assert_eq!(
            e.child_named("b").unwrap().text(),
            "\u{1}\u{1f}\u{fffe}\r\t"
        );
        let e = stanza("<m><b>\n  {\"k\": 1}\n\t </b></m>");
        assert_eq!(e.child_named("b").unwrap().text(), "\n  {\"k\": 1}\n\t ");
        let e = stanza("<m><b>x<![CDATA[<&>]]>y<!-- c -->z<![CDATA[]]></b></m>");
        let b = e.child_named("b").unwrap();
        assert_eq!(b.nodes(), &[Node::Text("x<&>yz".into())]);
    }

    #[test]
    fn line_ends_and_attribute_whitespace_are_normalised() {
        let e = stanza("<m a='x\ty\nz\r\nw&#xA;&#x9;&#xD;'><b>1\r\n2\r3<![CDATA[4\r\n]]></b></m>");
        assert_eq!(e.attr("a"), Some("x y z w\n\t\r"));
        assert_eq!(e.child_named("b").unwrap().text(), "1\n2\n34\n");
    }

    #[test]
    fn whitespace_between_child_elements_is_dropped() {
        let e = stanza("<m>\n  <a> </a>\n  <b/>\n</m>");
        assert_eq!(
            e,
            Element::new("m", CLIENT)
                .with_child(Element::new("a", CLIENT).with_text(" "))
                .with_child(Element::new("b", CLIENT))
        );
        let e = stanza("<m>x <a/> y</m>");
        assert_eq!(e.nodes().len(), 3);
        assert_eq!(e.text(), "x  y");
    }

    #[test]
    fn attributes_keep_qualified_names_and_order() {
        let e = stanza(r#"<m xmlns:p="urn:p" id="1" p:x="&lt;2&gt;" xml:lang="de" to='a"b'/>"#);
        let names: Vec<_> = e
            .attrs()
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("id", "1"),
                ("p:x", "<2>"),
                ("xml:lang", "de"),
                ("to", "a\"b")
            ]
        );
    }

    #[test]
    fn quoted_gt_does_not_end_a_tag() {
        let e = stanza(r#"<m a="x>y" b='/>'><c d="/m>"/></m>"#);
        assert_eq!(e.attr("a"), Some("x>y"));
        assert_eq!(e.attr("b"), Some("/>"));
        assert_eq!(e.child_named("c").unwrap().attr("d"), Some("/m>"));
    }

    #[test]
    fn comments_and_pis_inside_stanzas_are_skipped() {
        let e = stanza("<m><!-- <x> --><?pi data?><a/><!----></m>");
        assert_eq!(
            e,
            Element::new("m", CLIENT).with_child(Element::new("a", CLIENT))
        );
    }

    #[test]
    fn prolog_may_hold_declaration_comments_and_whitespace() {
        let input = format!("\n<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!-- hi -->\n{HDR}<a/>");
        let (packets, end) = all_ways(ReaderLimits::default(), input.as_bytes());
        assert_eq!(end, Ok(()));
        assert_eq!(packets.len(), 2);
    }

    #[test]
    fn keepalives_are_consumed_not_buffered() {
        let limits = ReaderLimits {
            max_stanza_size: 256,
            max_depth: 4,
        };
        let mut r = StanzaReader::new(limits);
        r.feed(HDR.as_bytes());
        assert!(matches!(r.next_packet(), Ok(Some(Packet::StreamStart(_)))));
        let spaces = vec![b' '; 10_000];
        for _ in 0..200 {
            r.feed(&spaces);
            assert_eq!(r.next_packet(), Ok(None));
            assert_eq!(r.buffered(), 0);
            assert!(!r.is_mid_stanza());
        }
        assert!(r.buf.len() <= 256 + READ_BLOCK + 1, "{}", r.buf.len());
        r.feed(b"\n<iq/>\n");
        assert_eq!(
            r.next_packet(),
            Ok(Some(Packet::Stanza(Element::new("iq", CLIENT))))
        );
        assert_eq!(r.next_packet(), Ok(None));
        assert_eq!(r.finish(), Ok(()));
    }

    #[test]
    fn reset_rescans_a_buffered_header() {
        // Even if the caller kept reading past <success/> before resetting.
        let input = format!("{HDR}<success xmlns='{SASL}'/>{HDR}<iq/>");
        let mut r = StanzaReader::new(ReaderLimits::default());
        r.feed(input.as_bytes());
        assert!(matches!(r.next_packet(), Ok(Some(Packet::StreamStart(_)))));
        assert!(matches!(r.next_packet(), Ok(Some(Packet::Stanza(_)))));
        // Without reset the new header is just an unfinished stanza.
        assert_eq!(r.next_packet(), Ok(None));
        assert!(r.is_mid_stanza());
        r.reset();
        assert!(matches!(r.next_packet(), Ok(Some(Packet::StreamStart(_)))));
        assert_eq!(
            r.next_packet(),
            Ok(Some(Packet::Stanza(Element::new("iq", CLIENT))))
        );
        assert_eq!(r.next_packet(), Ok(None));
    }

    #[test]
    fn a_new_stream_may_follow_stream_end() {
        let input = format!("{HDR}</stream:stream>\n{HDR}<a/>");
        let (packets, end) = all_ways(ReaderLimits::default(), input.as_bytes());
        assert_eq!(end, Ok(()));
        assert_eq!(packets.len(), 4);
        assert_eq!(packets[1], Packet::StreamEnd);
    }

    #[test]
    fn read_from_reads_one_block_and_reports_eof() {
        struct Big(usize);
        impl Read for Big {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                assert!(buf.len() >= READ_BLOCK);
                self.0 += 1;
                buf.fill(b' ');
                Ok(buf.len())
            }
        }
        let mut r = StanzaReader::new(ReaderLimits::default());
        let mut big = Big(0);
        assert_eq!(r.read_from(&mut big).unwrap(), READ_BLOCK);
        assert_eq!(big.0, 1);
        assert_eq!(r.buffered(), READ_BLOCK);
        let mut cursor = io::Cursor::new(format!("{HDR}<a/>").into_bytes());
        let mut r = StanzaReader::new(ReaderLimits::default());
        let n = r.read_from(&mut cursor).unwrap();
        assert_eq!(n, HDR.len() + 4);
        assert!(matches!(r.next_packet(), Ok(Some(Packet::StreamStart(_)))));
        assert!(matches!(r.next_packet(), Ok(Some(Packet::Stanza(_)))));
        assert_eq!(r.read_from(&mut cursor).unwrap(), 0);
        assert_eq!(r.finish(), Ok(()));
    }

    #[test]
    fn long_streams_reuse_a_bounded_buffer() {
        // 5,000 stanzas through read_from in odd-sized reads.
        let mut input = String::from(HDR);
        for i in 0..5000 {
            input.push_str(&format!(
                "<message id='{i}'><gcm xmlns='google:mobile:data'>{{\"n\":{i}}}</gcm></message> "
            ));
        }
        struct Trickle<'a>(&'a [u8], usize);
        impl Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                self.1 = self.1 % 5000 + 977;
                let n = self.1.min(buf.len()).min(self.0.len());
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let limits = ReaderLimits {
            max_stanza_size: 1024,
            max_depth: 8,
        };
        let mut r = StanzaReader::new(limits);
        let mut src = Trickle(input.as_bytes(), 0);
        let mut count = 0;
        while r.read_from(&mut src).unwrap() > 0 {
            while let Some(p) = r.next_packet().unwrap() {
                if let Packet::Stanza(m) = p {
                    assert_eq!(m.attr("id"), Some(count.to_string().as_str()));
                    count += 1;
                }
            }
            assert!(r.buffered() <= 1024);
            assert!(r.buf.len() <= 1024 + READ_BLOCK + 1, "{}", r.buf.len());
        }
        assert_eq!(count, 5000);
        assert_eq!(r.finish(), Ok(()));
    }

    #[test]
    fn byte_at_a_time_is_linear() {
        // A quadratic reader would need ~10^9 steps here and time out.
        let body = "x".repeat(60_000);
        let input = format!("{HDR}<message><gcm xmlns='google:mobile:data'>{body}</gcm></message>");
        let started = std::time::Instant::now();
        let mut r = StanzaReader::new(ReaderLimits::default());
        let mut stanzas = 0;
        for b in input.as_bytes() {
            r.feed(std::slice::from_ref(b));
            while let Some(p) = r.next_packet().unwrap() {
                stanzas += matches!(p, Packet::Stanza(_)) as usize;
            }
        }
        assert_eq!(stanzas, 1);
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }

    // ---- errors ----

    #[test]
    fn doctype_is_rejected_everywhere() {
        let billion_laughs = r#"<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol9 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
]>
<stream:stream xmlns:stream='http://etherx.jabber.org/streams'><lolz>&lol9;</lolz>"#;
        assert_eq!(error_of(billion_laughs.as_bytes()), XmlError::Doctype);
        for input in [
            "<!DOCTYPE stream>".to_string(),
            "<!doctype stream>".to_string(),
            format!("{HDR}<!DOCTYPE x>"),
            format!("{HDR}<message><!DOCTYPE x></message>"),
        ] {
            assert_eq!(error_of(input.as_bytes()), XmlError::Doctype, "{input}");
        }
        // Caught on the keyword, before anything after it is buffered.
        let mut r = StanzaReader::new(ReaderLimits::default());
        r.feed(b"<!DOCTYPE");
        assert_eq!(r.next_packet(), Err(XmlError::Doctype));
        assert_eq!(r.next_packet(), Err(XmlError::Doctype), "sticky");
        assert_eq!(r.finish(), Err(XmlError::Doctype));
    }

    #[test]
    fn unknown_entities() {
        let input = format!("{HDR}<message><body>a &foo; b</body></message>");
        assert_eq!(
            error_of(input.as_bytes()),
            XmlError::UnknownEntity { name: "foo".into() }
        );
        let input = format!("{HDR}<message id='&nbsp;'/>");
        assert_eq!(
            error_of(input.as_bytes()),
            XmlError::UnknownEntity {
                name: "nbsp".into()
            }
        );
    }

    #[test]
    fn bad_references_are_malformed() {
        for body in [
            "&#0;",
            "&#x0;",
            "&#xD800;",
            "&#x110000;",
            "&#99999999999;",
            "&#x;",
            "&#;",
            "&#x1g;",
            "a & b",
            "&amp",
            "&;",
            "&lt b;",
        ] {
            let input = format!("{HDR}<m><b>{body}</b></m>");
            assert!(is_malformed(&error_of(input.as_bytes())), "{body}");
        }
    }

    #[test]
    fn mismatched_tags_are_malformed() {
        for s in [
            "<message><body></message></body>",
            "<a></b>",
            "<a><b></c></a>",
            "<x:a xmlns:x='u' xmlns:y='u'></y:a>",
        ] {
            let input = format!("{HDR}{s}");
            assert!(is_malformed(&error_of(input.as_bytes())), "{s}");
        }
        let input = format!("{HDR}<a/></stream:other>");
        assert!(is_malformed(&error_of(input.as_bytes())));
    }

    #[test]
    fn unbound_prefixes_are_malformed() {
        for s in [
            "<foo:bar/>",
            "<message foo:id='1'/>",
            "<a><x:b xmlns:x='u'/><x:c/></a>",
            "<xmlns:a/>",
            "<a xmlns:x=''/>",
            "<a xmlns:xml='urn:other'/>",
        ] {
            let input = format!("{HDR}{s}");
            assert!(is_malformed(&error_of(input.as_bytes())), "{s}");
        }
        let input = "<stream:stream xmlns='jabber:client'>";
        assert!(is_malformed(&error_of(input.as_bytes())));
    }

    #[test]
    fn duplicate_attributes_are_malformed() {
        for s in [
            "<message id='1' id='2'/>",
            "<a xmlns:x='u' xmlns:x='v'/>",
            "<a xmlns='u' xmlns='u'/>",
            "<m><a b='1' c='2' b='3'></a></m>",
        ] {
            let input = format!("{HDR}{s}");
            assert!(is_malformed(&error_of(input.as_bytes())), "{s}");
        }
    }

    #[test]
    fn too_many_attributes_are_malformed() {
        let attrs: String = (0..MAX_ATTRIBUTES).map(|i| format!(" a{i}=''")).collect();
        let ok = stanza(&format!("<a{attrs}/>"));
        assert_eq!(ok.attrs().len(), MAX_ATTRIBUTES);
        let input = format!("{HDR}<a{attrs} z=''/>");
        assert!(is_malformed(&error_of(input.as_bytes())));
    }

    #[test]
    fn invalid_utf8_is_reported() {
        let cases: [&[u8]; 6] = [
            b"<m><b>\xff</b></m>",
            b"<m><b>\xc3</b></m>",
            b"<mess\xffage/>",
            b"<m a='\xe2\x82'/>",
            b"<!-- \xff -->",
            b"</stream:stre\xffam>",
        ];
        for s in cases {
            let mut input = HDR.as_bytes().to_vec();
            input.extend_from_slice(s);
            assert_eq!(error_of(&input), XmlError::InvalidUtf8, "{s:?}");
        }
        let input = b"<stream:stream a='\xff' xmlns:stream='http://etherx.jabber.org/streams'>";
        assert_eq!(error_of(input), XmlError::InvalidUtf8);
    }

    #[test]
    fn stanza_size_limit_is_exact() {
        let limits = ReaderLimits {
            max_stanza_size: 100,
            max_depth: 8,
        };
        let fits = format!("<m>{}</m>", "x".repeat(100 - 7));
        assert_eq!(fits.len(), 100);
        let input = format!("{HDR}{fits}");
        let (packets, end) = all_ways(limits, input.as_bytes());
        assert_eq!((packets.len(), end), (2, Ok(())));
        let input = format!("{HDR}<m>{}</m>", "x".repeat(100 - 6));
        let (packets, end) = all_ways(limits, input.as_bytes());
        assert_eq!(packets.len(), 1);
        assert_eq!(end, Err(XmlError::StanzaTooLarge { max: 100 }));
        // The header counts too.
        let hdr = |pad: usize| {
            format!(
                "<stream:stream xmlns:stream='http://etherx.jabber.org/streams' p='{}'>",
                "x".repeat(pad)
            )
        };
        assert_eq!(hdr(32).len(), 100);
        let (packets, end) = all_ways(limits, hdr(32).as_bytes());
        assert_eq!((packets.len(), end), (1, Ok(())));
        let (packets, end) = all_ways(limits, hdr(33).as_bytes());
        assert_eq!(packets.len(), 0);
        assert_eq!(end, Err(XmlError::StanzaTooLarge { max: 100 }));
        // And comments between stanzas.
        let input = format!("{HDR}<!--{}-->", "-x".repeat(60));
        let (_, end) = all_ways(limits, input.as_bytes());
        assert_eq!(end, Err(XmlError::StanzaTooLarge { max: 100 }));
    }

    #[test]
    fn endless_stanza_fails_at_the_limit_without_buffering_more() {
        /// 10 MB of a tag that never ends, produced lazily.
        struct Endless {
            sent: usize,
        }
        impl Read for Endless {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                const TOTAL: usize = 10 << 20;
                let mut n = 0;
                if self.sent == 0 {
                    n = HDR.len() + 9;
                    buf[..HDR.len()].copy_from_slice(HDR.as_bytes());
                    buf[HDR.len()..n].copy_from_slice(b"<message ");
                }
                let n2 = buf.len().min(TOTAL.saturating_sub(self.sent));
                buf[n..n2].fill(b'x');
                self.sent += n2;
                Ok(n2)
            }
        }
        for body_in_text in [false, true] {
            let limits = ReaderLimits::default();
            let mut r = StanzaReader::new(limits);
            let mut src = Endless { sent: 0 };
            if body_in_text {
                r.feed(HDR.as_bytes());
                r.feed(b"<message>");
                src.sent = 1;
            }
            let err = loop {
                let n = r.read_from(&mut src).unwrap();
                assert!(n > 0, "ran out of input without an error");
                assert!(r.buffered() <= limits.max_stanza_size + READ_BLOCK);
                assert!(r.buf.len() <= limits.max_stanza_size + READ_BLOCK + 1);
                match r.next_packet() {
                    Ok(_) => {}
                    Err(e) => break e,
                }
            };
            assert_eq!(err, XmlError::StanzaTooLarge { max: 64 * 1024 });
            assert!(
                src.sent <= limits.max_stanza_size + 2 * READ_BLOCK,
                "{}",
                src.sent
            );
        }
    }

    #[test]
    fn nesting_limit_is_exact() {
        let limits = ReaderLimits::default();
        let ok = format!("{HDR}{}{}", "<a>".repeat(32), "</a>".repeat(32));
        let (packets, end) = run(limits, [ok.as_bytes()]);
        assert_eq!((packets.len(), end), (2, Ok(())));
        let ok = format!("{HDR}{}<b/>{}", "<a>".repeat(31), "</a>".repeat(31));
        let (packets, end) = run(limits, [ok.as_bytes()]);
        assert_eq!((packets.len(), end), (2, Ok(())));
        let deep = format!("{HDR}{}<b/>{}", "<a>".repeat(32), "</a>".repeat(32));
        assert_eq!(error_of(deep.as_bytes()), XmlError::TooDeep { max: 32 });
        let bomb = format!("{HDR}{}", "<a>".repeat(10_000));
        assert_eq!(error_of(bomb.as_bytes()), XmlError::TooDeep { max: 32 });
    }

    #[test]
    fn text_outside_stanzas_is_malformed() {
        for input in [
            format!("{HDR}x"),
            format!("{HDR}<a/>x<b/>"),
            format!("{HDR}&amp;"),
            format!("{HDR}<![CDATA[ ]]>"),
            "hello".to_string(),
            "\u{feff}<stream:stream>".to_string(),
        ] {
            assert!(is_malformed(&error_of(input.as_bytes())), "{input}");
        }
    }

    #[test]
    fn a_stream_must_start_with_a_stream_header() {
        for input in [
            "<message/>",
            "<message><body>hi</body></message>",
            "</stream:stream>",
            "<stream:stream xmlns:stream='http://etherx.jabber.org/streams'/>",
            "<stream xmlns='jabber:client'>",
            "<?xml version='1.0'?><?xml version='1.0'?>",
        ] {
            assert!(is_malformed(&error_of(input.as_bytes())), "{input}");
        }
    }

    #[test]
    fn other_malformed_markup() {
        for s in [
            "<a>]]></a>",
            "<a>\u{1}</a>",
            "<a b></a>",
            "<a b=c/>",
            "<a <b/>",
            "< a/>",
            "<!-- a -- b -->",
            "<!ENTITY x 'y'>",
            "<a><!-- a -- b --></a>",
            "<?xml version='1.0'?>",
        ] {
            let input = format!("{HDR}{s}");
            assert!(is_malformed(&error_of(input.as_bytes())), "{s}");
        }
    }

    #[test]
    fn finish_reports_truncation() {
        let cut = &SESSION_STREAM[..SESSION_STREAM.find("message_id\":\"u-1").unwrap()];
        let (packets, end) = all_ways(ReaderLimits::default(), cut.as_bytes());
        assert_eq!(packets.len(), 8);
        assert_eq!(end, Err(XmlError::Truncated));
        for input in [
            "<stream:stream xmlns:stream='http://etherx.jabber.org/streams'".to_string(),
            format!("{HDR}<a"),
            format!("{HDR}<a/><!-- "),
            format!("{HDR}<a></a"),
            "<?xml ".to_string(),
        ] {
            assert_eq!(
                whole(input.as_bytes()).1,
                Err(XmlError::Truncated),
                "{input}"
            );
        }
        for input in [String::new(), "  \n".to_string(), format!("{HDR}<a/> \n ")] {
            assert_eq!(whole(input.as_bytes()).1, Ok(()), "{input}");
        }
        // Bytes fed but not yet looked at are not lost silently either.
        let mut r = StanzaReader::new(ReaderLimits::default());
        r.feed(b"<stream");
        assert_eq!(r.finish(), Err(XmlError::Truncated));
    }

    #[test]
    fn literal_noncharacters_are_malformed() {
        for s in [
            "<a>\u{FFFE}</a>",
            "<a>x\u{FFFF}</a>",
            "<a><![CDATA[\u{1}]]></a>",
        ] {
            let input = format!("{HDR}{s}");
            assert!(is_malformed(&error_of(input.as_bytes())), "{s:?}");
        }
        // Other characters led by 0xEF are fine.
        assert_eq!(
            stanza("<a>\u{FFFD}\u{FEFF}\u{F000}</a>").text(),
            "\u{FFFD}\u{FEFF}\u{F000}"
        );
    }

    /// Our own character-data check accepts exactly what `xmlparser` does
    /// (text without references, where neither resolves anything).
    #[test]
    fn text_validation_agrees_with_xmlparser() {
        const ALPHABET: &[&str] = &[
            "a", " ", "\t", "\n", "\r", ">", "]", "]]", "\u{1}", "\u{1f}", "\u{7f}", "\u{fffe}",
            "\u{ffff}", "\u{fffd}", "\u{ef}", "é", "😀", "\u{feff}", "\u{b}",
        ];
        let mut rng = Rng(42);
        for _ in 0..5000 {
            let len = rng.below(8);
            let text: String = (0..len)
                .map(|_| ALPHABET[rng.below(ALPHABET.len())])
                .collect();
            let doc = format!("<a>{text}</a>");
            let theirs = Tokenizer::from(doc.as_str()).all(|t| t.is_ok());
            let ours = Builder::new(&[], Scratch::default()).stanza(&doc).is_ok();
            assert_eq!(ours, theirs, "{text:?}");
        }
    }

    #[test]
    fn odd_but_valid_comments() {
        let e = stanza("<a><!-->x--><!---->y</a>");
        assert_eq!(e.text(), "y");
        let input = format!("{HDR}<!-->x-->\n<b/>");
        let (packets, end) = all_ways(ReaderLimits::default(), input.as_bytes());
        assert_eq!((packets.len(), end), (2, Ok(())));
    }

    #[test]
    fn word_search_matches_naive_search() {
        let mut rng = Rng(7);
        let naive_special = |b: u8| b < 0x20 || b == b'&' || b == b'>' || b == 0xEF;
        for _ in 0..20_000 {
            let len = rng.below(40);
            let hay: Vec<u8> = (0..len)
                .map(|_| match rng.below(4) {
                    0 => b"<&>\x00\x1f\x20\xef\xff\x80\x7f\t\n"[rng.below(12)],
                    _ => rng.next() as u8,
                })
                .collect();
            let needle = b"<&-?]\x00\xef\xff"[rng.below(8)];
            assert_eq!(
                find_byte(&hay, needle),
                hay.iter().position(|&b| b == needle),
                "{hay:?} {needle}"
            );
            assert_eq!(
                find_text_special(&hay),
                hay.iter().position(|&b| naive_special(b)),
                "{hay:?}"
            );
        }
    }

    // ---- fuzz-style ----

    use crate::mock::Rng;

    fn mutate(rng: &mut Rng, input: &mut Vec<u8>) {
        const SPICE: &[u8] = b"<>/&;\"'=![]?-:x \n\r\t#\xc3\xa9\xff\x00";
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(input.len() + 1);
            match rng.below(6) {
                0 if at < input.len() => input[at] = SPICE[rng.below(SPICE.len())],
                1 => input.insert(at, SPICE[rng.below(SPICE.len())]),
                2 if at < input.len() => {
                    let to = (at + rng.below(16)).min(input.len());
                    input.drain(at..to);
                }
                3 if at < input.len() => {
                    let to = (at + rng.below(64)).min(input.len());
                    let copy = input[at..to].to_vec();
                    let dest = rng.below(input.len() + 1);
                    input.splice(dest..dest, copy);
                }
                4 => input.truncate(at),
                _ => input.insert(at, rng.next() as u8),
            }
        }
    }

    fn random_chunks<'a>(rng: &mut Rng, input: &'a [u8]) -> Vec<&'a [u8]> {
        let mut chunks = Vec::new();
        let mut rest = input;
        while !rest.is_empty() {
            let span = if rng.below(4) == 0 { 300 } else { 12 };
            let n = (1 + rng.below(span)).min(rest.len());
            let (a, b) = rest.split_at(n);
            chunks.push(a);
            rest = b;
        }
        chunks
    }

    #[test]
    fn fuzz_never_panics_and_ignores_chunking() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let fixtures = [SESSION_STREAM, HANDSHAKE_FAILURE];
        let tight = ReaderLimits {
            max_stanza_size: 200,
            max_depth: 3,
        };
        let mut outcomes = [0usize; 2];
        for round in 0..3000 {
            let input: Vec<u8> = if round % 10 == 9 {
                (0..rng.below(400)).map(|_| rng.next() as u8).collect()
            } else {
                let mut v = fixtures[rng.below(2)].as_bytes().to_vec();
                mutate(&mut rng, &mut v);
                v
            };
            let limits = if round % 3 == 0 {
                tight
            } else {
                ReaderLimits::default()
            };
            let expected = run(limits, [input.as_slice()]);
            outcomes[usize::from(expected.1.is_ok())] += 1;
            let chunks = random_chunks(&mut rng, &input);
            let max_chunk = chunks.iter().map(|c| c.len()).max().unwrap_or(0);
            let mut r = StanzaReader::new(limits);
            let mut packets = Vec::new();
            let mut result = Ok(());
            for chunk in &chunks {
                r.feed(chunk);
                assert!(r.buffered() <= limits.max_stanza_size + max_chunk);
                assert!(r.buf.len() <= limits.max_stanza_size + READ_BLOCK + 1);
                result = drain(&mut r, &mut packets);
                if result.is_err() {
                    break;
                }
                assert!(r.buffered() <= limits.max_stanza_size);
            }
            if result.is_ok() {
                result = r.finish();
            }
            assert_eq!((packets, result), expected, "round {round}");
        }
        // Both outcomes were exercised.
        assert!(outcomes[0] > 300 && outcomes[1] > 100, "{outcomes:?}");
    }
}

#[cfg(test)]
mod perf {
    use super::*;
    use std::time::{Duration, Instant};

    const ACK: &str = "<message><data:gcm xmlns:data=\"google:mobile:data\">{\"from\":\
                       \"dQw4w9WgXcQ:APA91bHun4MxP5egoKMwt2KZFBaFUH-1RYqx\",\"message_id\":\
                       \"m-1234567\",\"message_type\":\"ack\"}</data:gcm></message>";

    fn upstream(i: usize) -> String {
        format!(
            "<message to=\"123456789012@gcm.googleapis.com\" from=\"devices@gcm.googleapis.com\" \
             type=\"normal\"><gcm xmlns=\"google:mobile:data\">{{\"category\":\"com.example.app\",\
             \"data\":{{\"text\":\"{}\",\"n\":\"a &amp; b &lt; c\"}},\"message_id\":\"u-{i}\",\
             \"from\":\"eXaMpLeToKeN{i:08}\",\"time_to_live\":86400}}</gcm></message> ",
            "lorem ipsum dolor sit amet ".repeat(1 + i % 40)
        )
    }

    /// A stream of `n` stanzas: acks (`mix` 1), upstream messages (2), or
    /// both alternating (0).
    fn traffic(n: usize, mix: usize) -> String {
        let mut s = String::from(
            "<stream:stream from='gcm.googleapis.com' id='1' version='1.0' \
             xmlns:stream='http://etherx.jabber.org/streams' xmlns='jabber:client'>",
        );
        for i in 0..n {
            if mix == 1 || (mix == 0 && i % 2 == 0) {
                s.push_str(ACK);
            } else {
                s.push_str(&upstream(i));
            }
        }
        s
    }

    fn best(f: &dyn Fn() -> usize) -> Duration {
        (0..9)
            .map(|_| {
                let t = Instant::now();
                std::hint::black_box(f());
                t.elapsed()
            })
            .min()
            .unwrap_or_default()
    }

    /// Reader throughput over raw `xmlparser` tokenization of `input`.
    fn ratio(name: &str, input: &str) -> f64 {
        let raw = best(&|| Tokenizer::from(input).filter(|t| t.is_ok()).count());
        let ours = best(&|| {
            let mut r = StanzaReader::new(ReaderLimits::default());
            let mut n = 0;
            for chunk in input.as_bytes().chunks(READ_BLOCK) {
                r.feed(chunk);
                while let Ok(Some(p)) = r.next_packet() {
                    n += matches!(p, Packet::Stanza(_)) as usize;
                }
            }
            n
        });
        let ratio = raw.as_secs_f64() / ours.as_secs_f64();
        let mb = input.len() as f64 / (1 << 20) as f64;
        println!(
            "{name}: {mb:.1} MiB, xmlparser {:.0} MiB/s, reader {:.0} MiB/s, ratio {ratio:.2}",
            mb / raw.as_secs_f64(),
            mb / ours.as_secs_f64()
        );
        ratio
    }

    /// Throughput against raw `xmlparser` tokenization of the same bytes.
    /// Run with `cargo test --release --lib perf -- --ignored --nocapture`.
    #[test]
    #[ignore = "timing; run in release"]
    fn reader_vs_raw_tokenizer() {
        let mixed = ratio("mixed", &traffic(20_000, 0));
        let acks = ratio("acks", &traffic(40_000, 1));
        let upstream = ratio("upstream", &traffic(10_000, 2));
        // A regression guard, not the 0.8 goal: at the time of writing the
        // ratios were about 0.65 (mixed), 0.48 (acks), 0.74 (upstream); see
        // the module docs for where the time goes.
        if !cfg!(debug_assertions) {
            for (name, r) in [("mixed", mixed), ("acks", acks), ("upstream", upstream)] {
                assert!(r >= 0.35, "{name}: reader at {r:.2}x of raw xmlparser");
            }
        }
    }
}
