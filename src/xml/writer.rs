//! Escaping writer: element trees and strings to XML text.
//!
//! Everything appends to a caller-owned `String`; nothing allocates besides
//! that string's growth.
//!
//! The output is always legal XML 1.0. Characters XML 1.0 forbids (C0 controls
//! other than tab, LF and CR, plus U+FFFE and U+FFFF) cannot be carried at all,
//! neither literally nor as character references (`&#x1;` is as illegal as a raw
//! U+0001, and a conforming server answers either with an `invalid-xml` stream
//! error), so they are written as U+FFFD, the replacement character. Nothing the
//! client sends takes that path: [`Message::validate`](crate::Message::validate)
//! refuses such characters with a typed error naming the field, and the JSON layer
//! escapes controls and U+FFFE/U+FFFF itself, so payloads and acks never contain
//! them.

use super::search::{
    find_control_or_ef, find_markup, find_xml_attr_special, find_xml_text_special,
};
use super::{Element, Node};

/// Appends `text` escaped for XML character data.
///
/// Escapes `&`, `<` and `>` (so `]]>` never appears), writes `\r` as `&#xD;`
/// (a literal CR would be read back as LF), and writes characters XML 1.0
/// forbids as U+FFFD (see the module docs).
pub fn escape_text(text: &str, out: &mut String) {
    escape(text, false, out);
}

/// Appends `value` escaped for a double-quoted attribute value.
///
/// Like [`escape_text`], and additionally escapes `"` and `'`, and writes
/// tab, LF and CR as character references (literal ones would be read back
/// as spaces).
pub fn escape_attr(value: &str, out: &mut String) {
    escape(value, true, out);
}

/// Appends `el` serialised; `parent_ns` is the namespace in scope.
///
/// Writes `xmlns="..."` only where an element's namespace differs from the
/// one in scope (its parent's, or `parent_ns` for `el` itself). Names and
/// attribute names are written as they are stored (attribute names
/// qualified, e.g. `xml:lang`); attribute values and text are escaped. An
/// element without children is written self-closing (`<x/>`).
pub fn write_element(el: &Element, parent_ns: &str, out: &mut String) {
    out.push('<');
    out.push_str(el.name());
    if el.ns() != parent_ns {
        out.push_str(" xmlns=\"");
        escape_attr(el.ns(), out);
        out.push('"');
    }
    for (name, value) in el.attrs() {
        out.push(' ');
        out.push_str(name);
        out.push_str("=\"");
        escape_attr(value, out);
        out.push('"');
    }
    if el.nodes().is_empty() {
        out.push_str("/>");
        return;
    }
    out.push('>');
    for node in el.nodes() {
        match node {
            Node::Element(child) => write_element(child, el.ns(), out),
            Node::Text(text) => escape_text(text, out),
        }
    }
    out.push_str("</");
    out.push_str(el.name());
    out.push('>');
}

/// Appends JSON text that `write` appends, escaped for XML character data,
/// without a copy in the common case: `write` writes straight into `out`,
/// and only output holding `&`, `<` or `>` is moved to `scratch` and escaped
/// back. `write` must produce what the crate's JSON writer produces: no
/// control characters, no U+FFFE/U+FFFF (it escapes them), so that `&`, `<`
/// and `>` are all [`escape_text`] would change.
pub(crate) fn append_json_text(
    out: &mut String,
    scratch: &mut String,
    write: impl FnOnce(&mut String),
) {
    let from = out.len();
    write(out);
    if find_markup(&out.as_bytes()[from..]).is_some() {
        scratch.clear();
        scratch.push_str(&out[from..]);
        out.truncate(from);
        escape_text(scratch, out);
    }
    debug_assert!(first_forbidden_char(&out[from..]).is_none());
}

/// True for the characters XML 1.0 allows in a document (its `Char` production):
/// tab, LF, CR, U+0020..=U+D7FF, U+E000..=U+FFFD and U+10000 up. Surrogates cannot
/// occur in a Rust `char`, so this only refuses the other C0 controls, U+FFFE and U+FFFF.
pub(crate) const fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// The first character of `s` that XML 1.0 forbids, if any.
pub(crate) fn first_forbidden_char(s: &str) -> Option<char> {
    // Every forbidden character is below U+0020 or encodes with lead byte 0xEF;
    // such a byte is on a char boundary.
    let at = find_control_or_ef(s.as_bytes())?;
    s.get(at..)?.chars().find(|&c| !is_xml_char(c))
}

fn escape(s: &str, attr: bool, out: &mut String) {
    let bytes = s.as_bytes();
    let find = if attr {
        find_xml_attr_special
    } else {
        find_xml_text_special
    };
    let mut last = 0;
    let mut from = 0;
    while let Some(n) = find(&bytes[from..]) {
        let at = from + n;
        let b = bytes[at];
        // `at` is a char boundary: every special byte is ASCII or a lead byte.
        let (rep, len): (&str, usize) = match b {
            b'&' => ("&amp;", 1),
            b'<' => ("&lt;", 1),
            b'>' => ("&gt;", 1),
            b'"' => ("&quot;", 1),
            b'\'' => ("&apos;", 1),
            b'\t' if attr => ("&#x9;", 1),
            b'\n' if attr => ("&#xA;", 1),
            b'\r' => ("&#xD;", 1),
            // Tab and LF in text, and other characters led by 0xEF: kept.
            b'\t' | b'\n' => {
                from = at + 1;
                continue;
            }
            0xEF => match (bytes.get(at + 1), bytes.get(at + 2)) {
                (Some(0xBF), Some(0xBE | 0xBF)) => (REPLACEMENT, 3),
                _ => {
                    from = at + 1;
                    continue;
                }
            },
            // The other C0 controls, U+0000 included.
            _ => (REPLACEMENT, 1),
        };
        out.push_str(&s[last..at]);
        out.push_str(rep);
        last = at + len;
        from = last;
    }
    out.push_str(&s[last..]);
}

/// What a character XML 1.0 forbids is written as: U+FFFD.
const REPLACEMENT: &str = "\u{FFFD}";

#[cfg(test)]
mod tests;
