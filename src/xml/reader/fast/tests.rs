//! The fast path against the tree builder: wherever [`gcm_payload`] says yes,
//! the general path must build the stanza without error and give `<gcm>`
//! exactly that text; and it must say yes for the shapes CCS sends.

use super::gcm_payload;
use crate::ns;
use crate::test_rng::Rng;
use crate::xml::reader::{Item, Packet, ReaderLimits, StanzaReader};

const HEADER: &str =
    "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>";

/// A random stanza, mostly of the common shape, often a little off it.
fn stanza(r: &mut Rng) -> String {
    const WS: &[&str] = &["", "", "", " ", "\n", "\t", "\r\n", "  "];
    const NAMES: &[&str] = &[
        "id", "to", "from", "type", "xml:lang", "xmlns", "a-b", "_x", "x.y", "1a", "id",
    ];
    const VALUES: &[&str] = &[
        "m-1",
        "",
        "error",
        "normal",
        "a&amp;b",
        "a<b",
        "tab\there",
        "q'q",
        "q\"q",
        "\u{e9}",
        "\u{FFFE}",
        "\u{1}",
        "cr\r",
        "x]]>y",
        "gcm.googleapis.com",
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
    const ELEMENT: &[&str] = &[
        "message",
        "message",
        "message",
        "messages",
        "iq",
        "data:message",
    ];
    const GCM: &[&str] = &[
        "gcm",
        "data:gcm",
        "gcmx",
        "data:gcmx",
        "xml:gcm",
        "d:gcm",
        "data:",
    ];
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

/// What a reader made of a stream: its packets (payloads as the message's
/// id and `<gcm>` text), then the error that ended it, if any.
#[derive(Debug, PartialEq)]
enum Got {
    Packet(Packet),
    Payload(Option<String>, String),
    Error(String),
}

/// Feeds `text` to a reader in chunks of the given sizes (cycled), taking
/// every packet after each feed, the fast way or the general way.
fn read_all(text: &str, chunks: &[usize], fast: bool) -> Vec<Got> {
    let mut r = StanzaReader::new(ReaderLimits::default());
    let mut got = Vec::new();
    let bytes = text.as_bytes();
    let (mut at, mut k) = (0, 0);
    while at < bytes.len() {
        let n = chunks[k % chunks.len()].min(bytes.len() - at);
        k += 1;
        r.feed(&bytes[at..at + n]);
        at += n;
        loop {
            let item = if fast {
                r.next_item().map(|i| {
                    i.map(|i| match i {
                        Item::Packet(p) => Got::Packet(p),
                        Item::GcmPayload(p) => {
                            Got::Payload(p.id.map(str::to_owned), p.json.to_owned())
                        }
                    })
                })
            } else {
                r.next_packet().map(|p| p.map(Got::Packet))
            };
            match item {
                Ok(Some(g)) => got.push(g),
                Ok(None) => break,
                Err(e) => {
                    got.push(Got::Error(e.to_string()));
                    return got;
                }
            }
        }
    }
    got
}

/// The general reading turned into what the fast path should have said.
fn as_fast(general: Vec<Got>, fast: &[Got]) -> Vec<Got> {
    general
        .into_iter()
        .zip(fast.iter().map(Some).chain(std::iter::repeat(None)))
        .map(|(g, f)| match (g, f) {
            (Got::Packet(Packet::Stanza(el)), Some(Got::Payload(..))) => {
                // Taken by the fast path: it must be a message of the common shape.
                assert!(el.is("message", ns::CLIENT), "{el:?}");
                assert_ne!(el.attr("type"), Some("error"), "{el:?}");
                let gcm = el.child("gcm", ns::GCM).expect("a gcm child");
                Got::Payload(el.attr("id").map(str::to_owned), gcm.text())
            }
            (g, _) => g,
        })
        .collect()
}

#[test]
fn agrees_with_the_tree_builder_on_random_stanzas() {
    let mut r = Rng(0x9E37_79B9_7F4A_7C15);
    let (mut fast, mut errors) = (0, 0);
    for _ in 0..10_000 {
        let header = if r.below(8) == 0 {
            "<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams'>"
        } else {
            HEADER
        };
        let mut text = String::from(header);
        for _ in 0..1 + r.below(3) {
            text.push_str(&stanza(&mut r));
            text.push_str(r.pick(&["", " ", "\n"]));
        }
        if r.below(4) == 0 {
            // A stanza cut off, or something after the last one.
            text.push_str(r.pick(&["<message><gcm xmlns='google:mobile:data'>{", "<iq/>", "x"]));
        }
        // Whole, in small pieces, or in pieces that split stanzas anywhere.
        let chunks: Vec<usize> = match r.below(3) {
            0 => vec![text.len()],
            1 => vec![1],
            _ => (0..5).map(|_| 1 + r.below(80)).collect(),
        };
        let f = read_all(&text, &chunks, true);
        let g = read_all(&text, &chunks, false);
        fast += f.iter().filter(|x| matches!(x, Got::Payload(..))).count();
        errors += g.iter().filter(|x| matches!(x, Got::Error(_))).count();
        assert_eq!(f, as_fast(g, &f), "{text:?} in chunks {chunks:?}");
    }
    // The generator must exercise both paths and the errors.
    assert!(fast > 2_000, "only {fast} stanzas took the fast path");
    assert!(errors > 1_000, "only {errors} malformed streams");
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
