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
        if r.is_multiple_of(3) {
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

/// The escaping as first written, a byte at a time: the definition the
/// word-at-a-time search must reproduce exactly.
fn escape_bytewise(s: &str, attr: bool) -> String {
    let mut out = String::new();
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let rest = &s[i..];
        let c = rest.chars().next().unwrap();
        let rep = match c {
            '&' => "&amp;",
            '<' => "&lt;",
            '>' => "&gt;",
            '\r' => "&#xD;",
            '"' if attr => "&quot;",
            '\'' if attr => "&apos;",
            '\t' if attr => "&#x9;",
            '\n' if attr => "&#xA;",
            '\t' | '\n' => "",
            c if !is_xml_char(c) => "\u{FFFD}",
            _ => "",
        };
        if rep.is_empty() {
            out.push(c);
        } else {
            out.push_str(rep);
        }
        i += c.len_utf8();
    }
    out
}

#[test]
fn escapes_agree_with_the_bytewise_definition() {
    let mut r = crate::test_rng::Rng(0xDEAD_BEEF_CAFE_F00D);
    for _ in 0..20_000 {
        let s = r.text(40);
        assert_eq!(text(&s), escape_bytewise(&s, false), "{s:?}");
        assert_eq!(attr(&s), escape_bytewise(&s, true), "{s:?}");
        let want = s.chars().find(|&c| !is_xml_char(c));
        assert_eq!(first_forbidden_char(&s), want, "{s:?}");
    }
}
