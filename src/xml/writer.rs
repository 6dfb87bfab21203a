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

/// True for the characters XML 1.0 allows in a document (its `Char` production):
/// tab, LF, CR, U+0020..=U+D7FF, U+E000..=U+FFFD and U+10000 up. Surrogates cannot
/// occur in a Rust `char`, so this only refuses the other C0 controls, U+FFFE and U+FFFF.
pub(crate) const fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// The first character of `s` that XML 1.0 forbids, if any.
pub(crate) fn first_forbidden_char(s: &str) -> Option<char> {
    // Fast path: every forbidden character is below U+0020 or encodes with lead byte 0xEF.
    if !s.bytes().any(|b| b < 0x20 || b == 0xEF) {
        return None;
    }
    s.chars().find(|&c| !is_xml_char(c))
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
            0xEF => match (bytes.get(at + 1), bytes.get(at + 2)) {
                (Some(0xBF), Some(0xBE | 0xBF)) => (REPLACEMENT, 3),
                _ => {
                    // Some other character: nothing to escape.
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
mod tests {
    use super::*;
    use crate::xml::{Packet, ReaderLimits, StanzaReader};

    const HDR: &str = "<stream:stream xmlns:stream='http://etherx.jabber.org/streams' \
                       xmlns='jabber:client'>";

    fn text(s: &str) -> String {
        let mut out = String::new();
        escape_text(s, &mut out);
        out
    }

    fn attr(s: &str) -> String {
        let mut out = String::new();
        escape_attr(s, &mut out);
        out
    }

    fn xml(el: &Element, parent_ns: &str) -> String {
        let mut out = String::new();
        write_element(el, parent_ns, &mut out);
        out
    }

    /// Writes `el` as a stanza of a `jabber:client` stream and reads it back.
    fn read_back(el: &Element) -> Element {
        let mut input = String::from(HDR);
        write_element(el, "jabber:client", &mut input);
        let mut r = StanzaReader::new(ReaderLimits {
            max_stanza_size: 1 << 20,
            max_depth: 32,
        });
        r.feed(input.as_bytes());
        assert!(matches!(r.next_packet(), Ok(Some(Packet::StreamStart(_)))));
        match r.next_packet() {
            Ok(Some(Packet::Stanza(e))) => e,
            other => panic!("{other:?} reading back {input:?}"),
        }
    }

    #[test]
    fn text_escaping() {
        assert_eq!(text("plain é 😀"), "plain é 😀");
        assert_eq!(text("a & b < c > d"), "a &amp; b &lt; c &gt; d");
        assert_eq!(text("]]>"), "]]&gt;");
        assert_eq!(text("\"quotes' stay\""), "\"quotes' stay\"");
        assert_eq!(text("tab\tlf\ncr\r"), "tab\tlf\ncr&#xD;");
        // Characters XML 1.0 forbids cannot be written in any form.
        assert_eq!(
            text("\u{1}\u{8}\u{b}\u{1f}"),
            "\u{fffd}\u{fffd}\u{fffd}\u{fffd}"
        );
        assert_eq!(
            text("\u{fffe}\u{ffff}\u{fffd}\u{ef}\u{fefe}"),
            "\u{fffd}\u{fffd}\u{fffd}\u{ef}\u{fefe}"
        );
        assert_eq!(text("a\0b"), "a\u{fffd}b");
        assert_eq!(text(""), "");
        // Appends, never clears.
        let mut out = String::from("x");
        escape_text("<", &mut out);
        assert_eq!(out, "x&lt;");
    }

    #[test]
    fn attribute_escaping() {
        assert_eq!(attr("a\"b'c"), "a&quot;b&apos;c");
        assert_eq!(attr("<&>"), "&lt;&amp;&gt;");
        assert_eq!(attr("\t\n\r"), "&#x9;&#xA;&#xD;");
        assert_eq!(attr("\u{7f}é"), "\u{7f}é");
        assert_eq!(attr("m-\u{1}\u{ffff}"), "m-\u{fffd}\u{fffd}");
    }

    #[test]
    fn namespaces_only_where_they_change() {
        let el = Element::new("message", "jabber:client")
            .with_attr("id", "m-1")
            .with_child(Element::new("gcm", "google:mobile:data").with_text("{\"a\":\"<&>\"}"))
            .with_child(Element::new("body", "jabber:client").with_text("hi"));
        assert_eq!(
            xml(&el, "jabber:client"),
            "<message id=\"m-1\"><gcm xmlns=\"google:mobile:data\">{\"a\":\"&lt;&amp;&gt;\"}\
             </gcm><body>hi</body></message>"
        );
        assert_eq!(
            xml(&el, ""),
            "<message xmlns=\"jabber:client\" id=\"m-1\"><gcm xmlns=\"google:mobile:data\">\
             {\"a\":\"&lt;&amp;&gt;\"}</gcm><body>hi</body></message>"
        );
        // Children inherit from their parent, not from `parent_ns`.
        let nested = Element::new("iq", "jabber:client").with_child(
            Element::new("bind", "urn:ietf:params:xml:ns:xmpp-bind")
                .with_child(Element::new("resource", "urn:ietf:params:xml:ns:xmpp-bind")),
        );
        assert_eq!(
            xml(&nested, "jabber:client"),
            "<iq><bind xmlns=\"urn:ietf:params:xml:ns:xmpp-bind\"><resource/></bind></iq>"
        );
        // Leaving a namespace for none writes an undeclaration.
        let none = Element::new("a", "jabber:client").with_child(Element::new("b", ""));
        assert_eq!(xml(&none, "jabber:client"), "<a><b xmlns=\"\"/></a>");
    }

    #[test]
    fn empty_elements_self_close_and_attributes_are_escaped() {
        let el = Element::new("iq", "jabber:client")
            .with_attr("type", "set")
            .with_attr("xml:lang", "en")
            .with_attr("to", "a\"b<c>&d\n");
        assert_eq!(
            xml(&el, "jabber:client"),
            "<iq type=\"set\" xml:lang=\"en\" to=\"a&quot;b&lt;c&gt;&amp;d&#xA;\"/>"
        );
        let empty_text = Element::new("b", "x").with_text("");
        assert_eq!(xml(&empty_text, "x"), "<b></b>");
    }

    #[test]
    fn written_trees_read_back_equal() {
        let el = Element::new("message", "jabber:client")
            .with_attr("id", "m-42")
            .with_attr("to", "a'b\"c\t\r\n")
            .with_child(
                Element::new("gcm", "google:mobile:data")
                    .with_text("\n {\"k\":\"a & b < c\", \"e\":\"😀\"}\n"),
            )
            .with_child(
                Element::new("error", "jabber:client")
                    .with_attr("code", "400")
                    .with_child(Element::new(
                        "bad-request",
                        "urn:ietf:params:xml:ns:xmpp-stanzas",
                    ))
                    .with_child(Element::new("x", "")),
            );
        assert_eq!(read_back(&el), el);
    }

    use crate::mock::Rng;

    fn random_string(rng: &mut Rng) -> String {
        const TRICKY: &[&str] = &[
            "<",
            ">",
            "&",
            "&amp;",
            "&#x1;",
            "\"",
            "'",
            "]]>",
            "]]",
            "<![CDATA[",
            "<!--",
            "-->",
            "\r",
            "\n",
            "\r\n",
            "\t",
            " ",
            "\u{1}",
            "\u{1f}",
            "\u{7f}",
            "\u{85}",
            "\u{fffe}",
            "\u{ffff}",
            "\u{fffd}",
            "é",
            "😀",
            "中",
            "\u{10ffff}",
            "\u{2028}",
            "{\"a\":1}",
            "x",
            "</gcm>",
            "?>",
            "\\",
        ];
        let len = (rng.next() % 24) as usize;
        let mut s = String::new();
        for _ in 0..len {
            let r = rng.next();
            if r % 3 == 0 {
                // Any scalar value but U+0000.
                let c = loop {
                    let v = (rng.next() % 0x11_0000) as u32;
                    if let Some(c) = char::from_u32(v).filter(|&c| c != '\0') {
                        break c;
                    }
                };
                s.push(c);
            } else {
                s.push_str(TRICKY[(r >> 8) as usize % TRICKY.len()]);
            }
        }
        s
    }

    /// `s` with every character XML 1.0 forbids replaced by U+FFFD.
    fn legal(s: &str) -> String {
        s.chars()
            .map(|c| if is_xml_char(c) { c } else { '\u{FFFD}' })
            .collect()
    }

    #[test]
    fn any_string_round_trips_as_text_and_attribute() {
        let mut rng = Rng(0xD1B5_4A32_D192_ED03);
        for _ in 0..3000 {
            let s = random_string(&mut rng);
            let el = Element::new("message", "jabber:client")
                .with_attr("a", s.as_str())
                .with_child(Element::new("gcm", "google:mobile:data").with_text(s.as_str()));
            let back = read_back(&el);
            let want = legal(&s);
            assert_eq!(back.attr("a"), Some(want.as_str()), "{s:?}");
            let gcm = back.child("gcm", "google:mobile:data").expect("payload");
            assert_eq!(gcm.text(), want, "{s:?}");
        }
    }

    #[test]
    fn output_never_holds_a_character_xml_forbids() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for _ in 0..3000 {
            let mut s = random_string(&mut rng);
            s.push('\0');
            let mut out = String::new();
            escape_text(&s, &mut out);
            escape_attr(&s, &mut out);
            assert_eq!(first_forbidden_char(&out), None, "{s:?} -> {out:?}");
            // Nor as a reference: the only ones written are &#x9; &#xA; &#xD;.
            let mut refs = out.match_indices("&#");
            assert!(
                refs.all(|(at, _)| ["&#x9;", "&#xA;", "&#xD;"]
                    .iter()
                    .any(|r| out[at..].starts_with(r))),
                "{s:?} -> {out:?}"
            );
        }
    }

    #[test]
    fn xml_char_is_the_char_production() {
        for c in [
            '\t',
            '\n',
            '\r',
            ' ',
            '\u{D7FF}',
            '\u{E000}',
            '\u{FFFD}',
            '\u{10000}',
            '\u{10FFFF}',
        ] {
            assert!(is_xml_char(c), "{c:?}");
        }
        for c in [
            '\0', '\u{1}', '\u{8}', '\u{B}', '\u{C}', '\u{1F}', '\u{FFFE}', '\u{FFFF}',
        ] {
            assert!(!is_xml_char(c), "{c:?}");
        }
        assert_eq!(first_forbidden_char("ok é 😀 \u{fffd}"), None);
        assert_eq!(first_forbidden_char("a\u{ffff}b\u{1}"), Some('\u{ffff}'));
        assert_eq!(first_forbidden_char("a\u{1b}"), Some('\u{1b}'));
    }
}
