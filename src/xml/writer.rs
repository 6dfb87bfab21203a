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
        assert_eq!(text("\u{1}\u{8}\u{b}\u{1f}"), "&#x1;&#x8;&#xB;&#x1F;");
        assert_eq!(
            text("\u{fffe}\u{ffff}\u{fffd}\u{ef}"),
            "&#xFFFE;&#xFFFF;\u{fffd}\u{ef}"
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

    #[test]
    fn any_string_round_trips_as_text_and_attribute() {
        let mut rng = Rng(0xD1B5_4A32_D192_ED03);
        for _ in 0..3000 {
            let s = random_string(&mut rng);
            let el = Element::new("message", "jabber:client")
                .with_attr("a", s.as_str())
                .with_child(Element::new("gcm", "google:mobile:data").with_text(s.as_str()));
            let back = read_back(&el);
            assert_eq!(back.attr("a"), Some(s.as_str()), "{s:?}");
            let gcm = back.child("gcm", "google:mobile:data").expect("payload");
            assert_eq!(gcm.text(), s, "{s:?}");
        }
    }

    #[test]
    fn nul_is_the_one_lossy_character() {
        let el = Element::new("m", "jabber:client").with_text("a\0b");
        assert_eq!(read_back(&el).text(), "a\u{fffd}b");
    }
}
