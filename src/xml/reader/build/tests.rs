//! Tests of the tree builder: namespaces, text and attribute values,
//! references, nesting and attribute errors, and its character check
//! against `xmlparser`'s.

use super::*;
use crate::mock::Rng;
use crate::xml::reader::tests::{all_ways, error_of, is_malformed, stanza, CLIENT, HDR};
use crate::xml::reader::{Packet, ReaderLimits};

#[test]
fn prefixed_and_default_namespaces_resolve_alike() {
    let a = stanza(r#"<message><data:gcm xmlns:data="google:mobile:data">{}</data:gcm></message>"#);
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
fn comments_and_pis_inside_stanzas_are_skipped() {
    let e = stanza("<m><!-- <x> --><?pi data?><a/><!----></m>");
    assert_eq!(
        e,
        Element::new("m", CLIENT).with_child(Element::new("a", CLIENT))
    );
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
