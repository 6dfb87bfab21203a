//! Escaping writer: element trees and strings to XML text.
//!
//! Everything appends to a caller-owned `String`; nothing allocates besides
//! that string's growth.
//!
//! Characters XML 1.0 cannot carry literally (C0 controls other than tab,
//! LF and CR, plus U+FFFE and U+FFFF) are written as numeric character
//! references such as `&#x1;`, which our reader accepts, so writer and reader
//! round-trip every string. The one exception is U+0000, which no XML can
//! carry in any form: it is written as U+FFFD (the replacement character).
//! The JSON layer escapes control characters itself, so payloads never hit
//! these paths.

use super::{Element, Node};

/// Appends `text` escaped for XML character data.
///
/// Escapes `&`, `<` and `>` (so `]]>` never appears), writes `\r` as `&#xD;`
/// (a literal CR would be read back as LF), and writes characters XML 1.0
/// forbids as character references (see the module docs; U+0000 becomes
/// U+FFFD).
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

/// True for bytes that may need escaping; `0xEF` leads U+FFFE/U+FFFF.
fn is_special(b: u8, attr: bool) -> bool {
    match b {
        b'&' | b'<' | b'>' | b'\r' | 0xEF => true,
        b'"' | b'\'' | b'\t' | b'\n' => attr,
        _ => b < 0x20,
    }
}

fn escape(s: &str, attr: bool, out: &mut String) {
    let bytes = s.as_bytes();
    let mut last = 0;
    let mut from = 0;
    while let Some(n) = bytes[from..].iter().position(|&b| is_special(b, attr)) {
        let at = from + n;
        let b = bytes[at];
        // `at` is a char boundary: every special byte is ASCII or a lead byte.
        let (rep, len): (&str, usize) = match b {
            b'&' => ("&amp;", 1),
            b'<' => ("&lt;", 1),
            b'>' => ("&gt;", 1),
            b'"' => ("&quot;", 1),
            b'\'' => ("&apos;", 1),
            b'\t' => ("&#x9;", 1),
            b'\n' => ("&#xA;", 1),
            b'\r' => ("&#xD;", 1),
            0 => ("\u{FFFD}", 1),
            0xEF => match (bytes.get(at + 1), bytes.get(at + 2)) {
                (Some(0xBF), Some(0xBE)) => ("&#xFFFE;", 3),
                (Some(0xBF), Some(0xBF)) => ("&#xFFFF;", 3),
                _ => {
                    // Some other character: nothing to escape.
                    from = at + 1;
                    continue;
                }
            },
            _ => (CONTROL_REFS[usize::from(b)], 1),
        };
        out.push_str(&s[last..at]);
        out.push_str(rep);
        last = at + len;
        from = last;
    }
    out.push_str(&s[last..]);
}

/// Character references for the C0 controls.
const CONTROL_REFS: [&str; 32] = [
    "&#x0;", "&#x1;", "&#x2;", "&#x3;", "&#x4;", "&#x5;", "&#x6;", "&#x7;", "&#x8;", "&#x9;",
    "&#xA;", "&#xB;", "&#xC;", "&#xD;", "&#xE;", "&#xF;", "&#x10;", "&#x11;", "&#x12;", "&#x13;",
    "&#x14;", "&#x15;", "&#x16;", "&#x17;", "&#x18;", "&#x19;", "&#x1A;", "&#x1B;", "&#x1C;",
    "&#x1D;", "&#x1E;", "&#x1F;",
];
