//! Stage 2 of the reader: builds an [`Element`] tree from the bytes of one
//! complete stanza or stream header, which the scanner has delimited.
//! Namespaces are resolved and nesting, duplicate attributes, references and
//! the characters of text are checked here.

#[cfg(test)]
mod tests;

use super::{is_space, is_space_char, malformed, parse_error, MAX_ATTRIBUTES, STREAM_NS};
use crate::error::XmlError;
use crate::xml::search::{find_byte, find_text_special};
use crate::xml::{Element, Node};
use std::borrow::Cow;
use std::mem;
use xmlparser::{ElementEnd, Token, Tokenizer};

const XML_NS: &str = "http://www.w3.org/XML/1998/namespace";

/// Parses the stream header open tag: the root element, its namespace
/// declarations, and its qualified name.
#[allow(clippy::type_complexity)] // a one-off triple private to the reader
pub(super) fn parse_header(
    text: &str,
) -> Result<(Element, Vec<(String, String)>, String), XmlError> {
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
pub(super) struct Scratch {
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
pub(super) struct Builder<'a, 'r> {
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
    pub(super) fn new(outer: &'r [(String, String)], scratch: Scratch) -> Self {
        Builder {
            outer,
            bindings: recycle(scratch.bindings),
            stack: recycle(scratch.stack),
            text: String::new(),
            attrs: recycle(scratch.attrs),
        }
    }

    /// Hands the working vectors back for the next stanza.
    pub(super) fn into_scratch(self) -> Scratch {
        Scratch {
            bindings: recycle(self.bindings),
            stack: recycle(self.stack),
            attrs: recycle(self.attrs),
        }
    }

    /// One complete element: the whole of `text`, which starts with `<`
    /// and ends with `>`.
    pub(super) fn stanza(&mut self, text: &'a str) -> Result<Element, XmlError> {
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
