//! The fast path for the one stanza shape CCS sends most:
//! `<message ATTRS><gcm xmlns="google:mobile:data">JSON</gcm></message>`.
//!
//! [`gcm_payload`] recognises that shape in the bytes of a complete stanza
//! (already delimited, and checked as UTF-8, by the scanner) and returns where
//! the JSON text is, without building a tree and without allocating. It only
//! says yes where the tree builder would build that element without error and
//! `<gcm>`'s text would be exactly those bytes: no references, no CDATA, no
//! comments, no carriage returns (which the builder normalises), no character
//! XML forbids, no prefixes, no namespace declaration other than `<gcm>`'s
//! own, no duplicate attribute, and not `type="error"` (stanza errors take the
//! general path). Anything else, well-formed or not, is `None`: the caller
//! then takes the general path, which gives every malformed stanza its typed
//! error. The tests beside this file compare both paths on many stanzas.

use std::ops::Range;

use crate::xml::search::find_xml_text_special;

/// At most this many attributes on `<message>` here; more go the general way.
const MAX_FAST_ATTRS: usize = 8;

/// Where the parts of a stanza of the simple shape are, as byte ranges of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Parts {
    /// The value of `<message>`'s `id` attribute, if it has one.
    pub(super) id: Option<Range<usize>>,
    /// The text of `<gcm>`.
    pub(super) json: Range<usize>,
}

/// Where the stanza id and the JSON text are in `s` if `s` is a CCS
/// `<message><gcm>` stanza of the simple shape (see the module docs).
/// `default_is_client`: the stream's default namespace is `jabber:client`.
pub(super) fn gcm_payload(s: &[u8], default_is_client: bool) -> Option<Parts> {
    gcm_prefix(s, default_is_client).and_then(|(parts, len)| (len == s.len()).then_some(parts))
}

/// As [`gcm_payload`] for a stanza at the start of `s`, with whatever follows
/// it: its parts and its length. The reader tries this before scanning, so
/// the stanza CCS sends most is read in one pass.
pub(super) fn gcm_prefix(s: &[u8], default_is_client: bool) -> Option<(Parts, usize)> {
    if !default_is_client {
        return None;
    }
    let mut c = Cursor { s, i: 0 };
    c.lit(b"<message")?;
    let mut names: [&[u8]; MAX_FAST_ATTRS] = [&[]; MAX_FAST_ATTRS];
    let mut count = 0;
    let mut id = None;
    loop {
        let spaced = c.spaces();
        if c.peek()? == b'>' {
            c.i += 1;
            break;
        }
        if !spaced || count == MAX_FAST_ATTRS {
            return None;
        }
        let (name, range) = c.attribute()?;
        let value = &s[range.clone()];
        if name == b"xmlns"
            || names[..count].contains(&name)
            || (name == b"type" && value == b"error")
        {
            return None;
        }
        if name == b"id" {
            id = Some(range);
        }
        names[count] = name;
        count += 1;
    }
    c.spaces();
    // `<gcm xmlns="google:mobile:data">` or, as CCS writes its acks,
    // `<P:gcm xmlns:P="google:mobile:data">`.
    c.lit(b"<")?;
    let first = c.name()?;
    let prefix: &[u8] = if c.peek()? == b':' {
        c.i += 1;
        if reserved(first) || c.name()? != b"gcm" {
            return None;
        }
        first
    } else if first == b"gcm" {
        b""
    } else {
        return None;
    };
    if !c.spaces() {
        return None;
    }
    c.lit(b"xmlns")?;
    if !prefix.is_empty() {
        c.lit(b":")?;
        if c.name()? != prefix {
            return None;
        }
    } else if c.peek()? != b'=' && !c.spaces() {
        return None;
    }
    if s[c.value()?] != *b"google:mobile:data" {
        return None;
    }
    c.spaces();
    c.lit(b">")?;
    let from = c.i;
    let to = from + text_end(&s[from..])?;
    c.i = to;
    c.lit(b"</")?;
    if !prefix.is_empty() {
        c.lit(prefix)?;
        c.lit(b":")?;
    }
    c.lit(b"gcm")?;
    c.spaces();
    c.lit(b">")?;
    c.spaces();
    c.lit(b"</message")?;
    c.spaces();
    c.lit(b">")?;
    Some((Parts { id, json: from..to }, c.i))
}

/// The length of plain character data at the start of `t`, up to its `<`:
/// `None` if it holds a reference, a CR, a character XML forbids (or a
/// byte that may lead one), or `]]>`.
fn text_end(t: &[u8]) -> Option<usize> {
    let mut from = 0;
    loop {
        let i = from + find_xml_text_special(&t[from..])?;
        match t[i] {
            b'<' => return Some(i),
            b'>' if i >= 2 && t[i - 2] == b']' && t[i - 1] == b']' => return None,
            b'>' | b'\t' | b'\n' => from = i + 1,
            _ => return None,
        }
    }
}

/// Names starting with `xml` (any case) are reserved; the general path
/// has the last word on them.
fn reserved(name: &[u8]) -> bool {
    name.len() >= 3 && name[..3].eq_ignore_ascii_case(b"xml")
}

struct Cursor<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    /// Skips XML white space; true if there was any.
    fn spaces(&mut self) -> bool {
        let from = self.i;
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
        self.i > from
    }

    fn lit(&mut self, l: &[u8]) -> Option<()> {
        if self.s[self.i..].starts_with(l) {
            self.i += l.len();
            Some(())
        } else {
            None
        }
    }

    /// An unprefixed ASCII name: `[A-Za-z_][A-Za-z0-9_.-]*`.
    fn name(&mut self) -> Option<&'a [u8]> {
        let from = self.i;
        match self.peek()? {
            b'a'..=b'z' | b'A'..=b'Z' | b'_' => self.i += 1,
            _ => return None,
        }
        while matches!(
            self.peek()?,
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-' | b'.'
        ) {
            self.i += 1;
        }
        Some(&self.s[from..self.i])
    }

    /// `name = "value"` with a [`name`](Self::name) not starting with `xml`
    /// (except exactly `xmlns`, which the caller refuses).
    fn attribute(&mut self) -> Option<(&'a [u8], Range<usize>)> {
        let name = self.name()?;
        if reserved(name) && name != b"xmlns" {
            return None;
        }
        Some((name, self.value()?))
    }

    /// `= "value"` (either quote), where the value is: one that reads back as written: no
    /// references, tabs, line ends or other controls, nothing led by 0xEF.
    fn value(&mut self) -> Option<Range<usize>> {
        self.spaces();
        self.lit(b"=")?;
        self.spaces();
        let quote = self.peek()?;
        if quote != b'"' && quote != b'\'' {
            return None;
        }
        self.i += 1;
        let start = self.i;
        loop {
            match self.peek()? {
                b if b == quote => break,
                b'<' | b'&' | 0xEF => return None,
                b if b < 0x20 => return None,
                _ => self.i += 1,
            }
        }
        let value = start..self.i;
        self.i += 1;
        Some(value)
    }
}

#[cfg(test)]
mod tests;
