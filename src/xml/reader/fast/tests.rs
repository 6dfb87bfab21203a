//! The fast path against the tree builder: wherever [`gcm_payload`] says yes,
//! the general path must build the stanza without error and give `<gcm>`
//! exactly that text; and it must say yes for the shapes CCS sends.

use crate::test_rng::Rng;
use super::gcm_payload;
use crate::ns;
use crate::xml::reader::{Item, Packet, ReaderLimits, StanzaReader};

const HEADER: &str = "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>";


/// A random stanza, mostly of the common shape, often a little off it.
fn stanza(r: &mut Rng) -> String {
    const WS: &[&str] = &["", "", "", " ", "\n", "\t", "\r\n", "  "];
    const NAMES: &[&str] = &["id", "to", "from", "type", "xml:lang", "xmlns", "a-b", "_x", "x.y", "1a", "id"];
    const VALUES: &[&str] = &[
        "m-1", "", "error", "normal", "a&amp;b", "a<b", "tab\there", "q'q", "q\"q", "\u{e9}",
        "\u{FFFE}", "\u{1}", "cr\r", "x]]>y", "gcm.googleapis.com",
    ];
    const TEXT: &[&str] = &[
        r#"{"message_type":"ack","message_id":"m-1","from":"tok"}"#,
        r#"{"message_type":"nack","message_id":"m-2","error":"BAD_REGISTRATION"}"#,
        "plain",
        "",
        " {} ",
        "a&amp;b",
        "a&#x41;b",
        "<![CDATA[x]]>",
        "x]]>y",
        "x]>y",
        "x>y",
        "line\r\nend",
        "tab\tand\nlf",
        "\u{1}",
        "\u{FFFE}",
        "\u{FEFF}\u{e9}\u{1F600}",
        "<!-- c -->",
        "<?pi x?>",
        "<b/>",
    ];
    const ELEMENT: &[&str] = &["message", "message", "message", "messages", "iq", "data:message"];
    const GCM: &[&str] = &["gcm", "data:gcm", "gcmx", "data:gcmx", "xml:gcm", "d:gcm", "data:"];
    const GCM_NS: &[&str] = &[
        " xmlns=\"google:mobile:data\"",
        " xmlns:data=\"google:mobile:data\"",
        " xmlns='google:mobile:data'",
        " xmlns = \"google:mobile:data\"",
        "xmlns=\"google:mobile:data\"",
        " xmlns=\"google:mobile:other\"",
        "",
        " xmlns:data=\"google:mobile:data\" xmlns=\"google:mobile:data\"",
        " xmlns:d=\"google:mobile:data\"",
        " xmlns:data=\"google:mobile:data\" xmlns:data=\"x\"",
        " xmlnsx=\"google:mobile:data\"",
        " xmlns:datax=\"google:mobile:data\"",
        " xmlns=\"google:mobile:data\" a=\"1\"",
    ];
    let el = r.mostly(1, ELEMENT);
    let mut s = format!("<{el}");
    for _ in 0..r.below(4) {
        let q = if r.below(4) == 0 { '\'' } else { '"' };
        s.push_str(if r.below(10) == 0 { "" } else { " " });
        s.push_str(r.mostly(5, NAMES));
        s.push_str(r.pick(&["=", "=", " = "]));
        s.push(q);
        s.push_str(r.mostly(4, VALUES));
        s.push(q);
    }
    s.push_str(r.pick(WS));
    s.push('>');
    s.push_str(r.pick(WS));
    let gcm = r.mostly(2, GCM);
    s.push('<');
    s.push_str(gcm);
    s.push_str(r.mostly(4, GCM_NS));
    s.push_str(r.pick(WS));
    s.push('>');
    for _ in 0..1 + r.below(2) {
        s.push_str(r.mostly(5, TEXT));
    }
    s.push_str("</");
    // Now and then an end tag that does not match.
    s.push_str(if r.below(20) == 0 { r.pick(GCM) } else { gcm });
    s.push_str(r.pick(WS));
    s.push('>');
    s.push_str(r.pick(WS));
    if r.below(20) == 0 {
        s.push_str("<x/>");
    }
    s.push_str("</");
    s.push_str(el);
    s.push_str(r.pick(WS));
    s.push('>');
    s
}

/// Reads `stanza` inside a stream twice, the general way and the fast way.
#[allow(clippy::type_complexity)]
fn both(
    header: &str,
    stanza: &str,
) -> (Result<Option<Packet>, String>, Result<Option<(Option<String>, String)>, String>) {
    let mut general = StanzaReader::new(ReaderLimits::default());
    general.feed(header.as_bytes());
    general.feed(stanza.as_bytes());
    assert!(matches!(general.next_packet(), Ok(Some(Packet::StreamStart(_)))));
    let g = general.next_packet().map_err(|e| e.to_string());
    let mut fast = StanzaReader::new(ReaderLimits::default());
    fast.feed(header.as_bytes());
    fast.feed(stanza.as_bytes());
    assert!(matches!(fast.next_item(), Ok(Some(Item::Packet(Packet::StreamStart(_))))));
    let f = match fast.next_item() {
        Ok(Some(Item::GcmPayload(p))) => Ok(Some((p.id.map(str::to_owned), p.json.to_owned()))),
        Ok(Some(Item::Packet(p))) => {
            // Not taken: the same packet as the general path.
            assert_eq!(Ok(Some(p)), g.clone(), "{stanza:?}");
            Ok(None)
        }
        Ok(None) => Ok(None),
        Err(e) => {
            assert_eq!(Err(e.to_string()), g.clone().map(|_| ()), "{stanza:?}");
            Err(e.to_string())
        }
    };
    (g, f)
}

#[test]
fn agrees_with_the_tree_builder_on_random_stanzas() {
    let mut r = Rng(0x9E37_79B9_7F4A_7C15);
    let (mut fast, mut errors) = (0, 0);
    for _ in 0..20_000 {
        let s = stanza(&mut r);
        let header = if r.below(8) == 0 {
            "<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams'>"
        } else {
            HEADER
        };
        let (g, f) = both(header, &s);
        errors += g.is_err() as usize;
        if let Ok(Some((id, json))) = f {
            fast += 1;
            let Ok(Some(Packet::Stanza(el))) = g else {
                panic!("fast path took {s:?}, general path gave {g:?}");
            };
            assert!(el.is("message", ns::CLIENT), "{s:?}");
            assert_ne!(el.attr("type"), Some("error"), "{s:?}");
            let gcm = el.child("gcm", ns::GCM).expect("a gcm child");
            assert_eq!(gcm.text(), json, "{s:?}");
            assert_eq!(el.attr("id"), id.as_deref(), "{s:?}");
        }
    }
    // The generator must exercise both paths and the errors.
    assert!(fast > 2_000, "only {fast} stanzas took the fast path");
    assert!(errors > 1_000, "only {errors} malformed stanzas");
}

#[test]
fn takes_the_shapes_ccs_sends() {
    for s in [
        r#"<message><gcm xmlns="google:mobile:data">{"a":"b"}</gcm></message>"#,
        r#"<message id=""><gcm xmlns="google:mobile:data">{"a":"b"}</gcm></message>"#,
        "<message id='x' to='y'>\n  <gcm xmlns='google:mobile:data'>{}</gcm>\n</message >",
        r#"<message type="normal" id="1"><gcm xmlns="google:mobile:data" >x</gcm ></message>"#,
        r#"<message><data:gcm xmlns:data="google:mobile:data">{"a":"b"}</data:gcm></message>"#,
    ] {
        assert!(gcm_payload(s.as_bytes(), true).is_some(), "{s}");
        assert!(gcm_payload(s.as_bytes(), false).is_none(), "{s}");
    }
    for s in [
        r#"<message type="error"><gcm xmlns="google:mobile:data">x</gcm></message>"#,
        r#"<message id="1" id="2"><gcm xmlns="google:mobile:data">x</gcm></message>"#,
        r#"<message xmlns="jabber:client"><gcm xmlns="google:mobile:data">x</gcm></message>"#,
        r#"<message><gcm xmlns="google:mobile:data">a&amp;b</gcm></message>"#,
        r#"<message><gcm xmlns="google:mobile:data">x</gcm><y/></message>"#,
    ] {
        assert!(gcm_payload(s.as_bytes(), true).is_none(), "{s}");
    }
}
