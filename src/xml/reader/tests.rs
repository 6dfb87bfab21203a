//! Tests of the reader as a whole: the handshake and session fixtures in
//! every chunking, stream framing, buffering, limits and the errors the
//! scanner raises, and a fuzz-style round. The fixtures and helpers are shared
//! with the tree builder's tests (`build/tests.rs`).

use super::*;
use crate::xml::search::{find_byte, find_text_special};
use crate::xml::Node;

const SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
const BIND: &str = "urn:ietf:params:xml:ns:xmpp-bind";
const SESSION: &str = "urn:ietf:params:xml:ns:xmpp-session";
const STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
const GCM: &str = "google:mobile:data";
pub(super) const CLIENT: &str = "jabber:client";

/// A minimal stream header for error tests.
pub(super) const HDR: &str = "<stream:stream xmlns:stream='http://etherx.jabber.org/streams' \
                   xmlns='jabber:client'>";

/// The server's side of a refused SASL handshake
/// ([protocol: handshake](crate::protocol#handshake)).
const HANDSHAKE_FAILURE: &str = r#"<?xml version='1.0'?>
<stream:stream from="gcm.googleapis.com" id="3F2A9C0D11B7E845" version="1.0" xmlns:stream="http://etherx.jabber.org/streams" xmlns="jabber:client"><stream:features><mechanisms xmlns="urn:ietf:params:xml:ns:xmpp-sasl">
  <mechanism>X-OAUTH2</mechanism><mechanism>X-GOOGLE-TOKEN</mechanism>
  <mechanism>PLAIN</mechanism></mechanisms></stream:features><failure xmlns="urn:ietf:params:xml:ns:xmpp-sasl"><not-authorized/></failure></stream:stream>"#;

/// The server's side of a handshake (SASL accepted, restart, bind, session,
/// see [protocol: handshake](crate::protocol#handshake)), then traffic as in
/// [protocol: reading stanzas](crate::protocol#reading-stanzas).
const SESSION_STREAM: &str = concat!(
    r#"<?xml version='1.0'?><stream:stream from="gcm.googleapis.com" id="3F2A9C0D11B7E845" version="1.0" xmlns:stream="http://etherx.jabber.org/streams" xmlns="jabber:client">"#,
    r#"<stream:features><mechanisms xmlns="urn:ietf:params:xml:ns:xmpp-sasl"><mechanism>X-OAUTH2</mechanism><mechanism>X-GOOGLE-TOKEN</mechanism><mechanism>PLAIN</mechanism></mechanisms></stream:features>"#,
    r#"<success xmlns="urn:ietf:params:xml:ns:xmpp-sasl"/>"#,
    "\n",
    r#"<stream:stream from='gcm.googleapis.com' id='9B1E4C7A22D3F560' version='1.0' xml:lang='en' xmlns:stream='http://etherx.jabber.org/streams' xmlns='jabber:client'>"#,
    r#"<str:features xmlns:str="http://etherx.jabber.org/streams"><bind xmlns="urn:ietf:params:xml:ns:xmpp-bind"/><session xmlns="urn:ietf:params:xml:ns:xmpp-session"/></str:features>"#,
    r#"<iq type="result" id="bind1"><bind xmlns="urn:ietf:params:xml:ns:xmpp-bind"><jid>123456789012@gcm.googleapis.com/fcmxmpp5D0C9A1E</jid></bind></iq>"#,
    r#"<iq type="result" id="sess1"/>"#,
    " \n \t  ",
    r#"<message><data:gcm xmlns:data="google:mobile:data">{"from":"tok-é","message_id":"m-1","message_type":"ack"}</data:gcm></message>"#,
    " ",
    " ",
    r#"<message to="123456789012@gcm.googleapis.com" from="devices@gcm.googleapis.com" type="normal"><gcm xmlns="google:mobile:data">"#,
    "\n  {\"category\":\"com.example\",\"data\":{\"k\":\"a &amp; b &lt; c &gt; d\",\"e\":\"&#38;&#x26;&#x1F600;&quot;&apos;\"},\"message_id\":\"u-1\",\"from\":\"dev\"}\n",
    r#"</gcm></message>"#,
    r#"<message id="m-42" type="error" to="123456789012@gcm.googleapis.com/fcmxmpp5D0C9A1E"><gcm xmlns="google:mobile:data">{"to":"x","data":{}}</gcm><error code="400" type="modify"><bad-request xmlns="urn:ietf:params:xml:ns:xmpp-stanzas"/><text xmlns="urn:ietf:params:xml:ns:xmpp-stanzas">InvalidJson: JSON_PARSING_ERROR : Missing Required Field: message_id
</text></error></message>"#,
    r#"<message><gcm xmlns="google:mobile:data"><![CDATA[{"a":"<b> & ]] > 😀"}]]></gcm></message>"#,
    "<!-- a comment between stanzas -->",
    "</stream:stream>",
);

fn header(from: &str, id: &str) -> Element {
    Element::new("stream", STREAM_NS)
        .with_attr("from", from)
        .with_attr("id", id)
        .with_attr("version", "1.0")
}

fn mechanisms() -> Element {
    let mut mechs = Element::new("mechanisms", SASL);
    for m in ["X-OAUTH2", "X-GOOGLE-TOKEN", "PLAIN"] {
        mechs.push(Node::Element(Element::new("mechanism", SASL).with_text(m)));
    }
    Element::new("features", STREAM_NS).with_child(mechs)
}

fn expected_failure() -> Vec<Packet> {
    vec![
        Packet::StreamStart(header("gcm.googleapis.com", "3F2A9C0D11B7E845")),
        Packet::Stanza(mechanisms()),
        Packet::Stanza(
            Element::new("failure", SASL).with_child(Element::new("not-authorized", SASL)),
        ),
        Packet::StreamEnd,
    ]
}

fn expected_session() -> Vec<Packet> {
    let upstream_json = "\n  {\"category\":\"com.example\",\"data\":{\"k\":\"a & b < c > d\",\
                         \"e\":\"&&\u{1F600}\"'\"},\"message_id\":\"u-1\",\"from\":\"dev\"}\n";
    vec![
        Packet::StreamStart(header("gcm.googleapis.com", "3F2A9C0D11B7E845")),
        Packet::Stanza(mechanisms()),
        Packet::Stanza(Element::new("success", SASL)),
        Packet::StreamStart(
            header("gcm.googleapis.com", "9B1E4C7A22D3F560").with_attr("xml:lang", "en"),
        ),
        Packet::Stanza(
            Element::new("features", STREAM_NS)
                .with_child(Element::new("bind", BIND))
                .with_child(Element::new("session", SESSION)),
        ),
        Packet::Stanza(
            Element::new("iq", CLIENT)
                .with_attr("type", "result")
                .with_attr("id", "bind1")
                .with_child(
                    Element::new("bind", BIND).with_child(
                        Element::new("jid", BIND)
                            .with_text("123456789012@gcm.googleapis.com/fcmxmpp5D0C9A1E"),
                    ),
                ),
        ),
        Packet::Stanza(
            Element::new("iq", CLIENT)
                .with_attr("type", "result")
                .with_attr("id", "sess1"),
        ),
        Packet::Stanza(
            Element::new("message", CLIENT).with_child(
                Element::new("gcm", GCM)
                    .with_text(r#"{"from":"tok-é","message_id":"m-1","message_type":"ack"}"#),
            ),
        ),
        Packet::Stanza(
            Element::new("message", CLIENT)
                .with_attr("to", "123456789012@gcm.googleapis.com")
                .with_attr("from", "devices@gcm.googleapis.com")
                .with_attr("type", "normal")
                .with_child(Element::new("gcm", GCM).with_text(upstream_json)),
        ),
        Packet::Stanza(
            Element::new("message", CLIENT)
                .with_attr("id", "m-42")
                .with_attr("type", "error")
                .with_attr("to", "123456789012@gcm.googleapis.com/fcmxmpp5D0C9A1E")
                .with_child(Element::new("gcm", GCM).with_text(r#"{"to":"x","data":{}}"#))
                .with_child(
                    Element::new("error", CLIENT)
                        .with_attr("code", "400")
                        .with_attr("type", "modify")
                        .with_child(Element::new("bad-request", STANZAS))
                        .with_child(Element::new("text", STANZAS).with_text(
                            "InvalidJson: JSON_PARSING_ERROR : Missing Required Field: \
                             message_id\n",
                        )),
                ),
        ),
        Packet::Stanza(
            Element::new("message", CLIENT)
                .with_child(Element::new("gcm", GCM).with_text("{\"a\":\"<b> & ]] > \u{1F600}\"}")),
        ),
        Packet::StreamEnd,
    ]
}

/// What a reader made of some input: the packets, then how it ended
/// (the first error, or the result of `finish`).
type Outcome = (Vec<Packet>, Result<(), XmlError>);

/// Drains packets, restarting the stream after SASL success as the
/// stream layer does.
fn drain(r: &mut StanzaReader, out: &mut Vec<Packet>) -> Result<(), XmlError> {
    while let Some(p) = r.next_packet()? {
        let restart = matches!(&p, Packet::Stanza(e) if e.is("success", SASL));
        out.push(p);
        if restart {
            r.reset();
        }
    }
    Ok(())
}

pub(super) fn run<'a>(limits: ReaderLimits, chunks: impl IntoIterator<Item = &'a [u8]>) -> Outcome {
    let mut r = StanzaReader::new(limits);
    let mut out = Vec::new();
    for chunk in chunks {
        r.feed(chunk);
        if let Err(e) = drain(&mut r, &mut out) {
            return (out, Err(e));
        }
        assert!(r.buffered() <= limits.max_stanza_size, "{r:?}");
    }
    let end = r.finish();
    (out, end)
}

pub(super) fn whole(input: &[u8]) -> Outcome {
    run(ReaderLimits::default(), [input])
}

/// Feeds `input` whole, in two chunks split at every offset, and one byte
/// at a time; asserts all agree and returns the outcome.
pub(super) fn all_ways(limits: ReaderLimits, input: &[u8]) -> Outcome {
    let expected = run(limits, [input]);
    for k in 0..=input.len() {
        let (a, b) = input.split_at(k);
        assert_eq!(run(limits, [a, b]), expected, "split at {k}");
    }
    assert_eq!(run(limits, input.chunks(1)), expected, "byte at a time");
    assert_eq!(run(limits, input.chunks(7)), expected, "7 bytes at a time");
    expected
}

pub(super) fn error_of(input: &[u8]) -> XmlError {
    match all_ways(ReaderLimits::default(), input).1 {
        Err(e) => e,
        Ok(()) => panic!("no error for {:?}", String::from_utf8_lossy(input)),
    }
}

pub(super) fn stanza(xml: &str) -> Element {
    let input = format!("{HDR}{xml}");
    let (packets, end) = whole(input.as_bytes());
    assert_eq!(end, Ok(()), "{xml}");
    match packets.as_slice() {
        [Packet::StreamStart(_), Packet::Stanza(e)] => e.clone(),
        other => panic!("unexpected packets {other:?}"),
    }
}

pub(super) fn is_malformed(e: &XmlError) -> bool {
    matches!(e, XmlError::Malformed { .. })
}

#[test]
fn fixtures_contain_multibyte_chars() {
    assert!(SESSION_STREAM.contains('é') && SESSION_STREAM.contains('😀'));
}

#[test]
fn handshake_failure_every_split() {
    let got = all_ways(ReaderLimits::default(), HANDSHAKE_FAILURE.as_bytes());
    assert_eq!(got, (expected_failure(), Ok(())));
}

#[test]
fn session_stream_every_split() {
    let got = all_ways(ReaderLimits::default(), SESSION_STREAM.as_bytes());
    assert_eq!(got, (expected_session(), Ok(())));
}

#[test]
fn session_stream_accessors() {
    let (packets, _) = whole(SESSION_STREAM.as_bytes());
    let Packet::Stanza(ack) = &packets[7] else {
        panic!("{:?}", packets[7]);
    };
    let gcm = ack.child("gcm", GCM).expect("payload by namespace");
    assert!(gcm.text().contains("\"message_type\":\"ack\""));
    assert!(ack.attrs().is_empty());
    let Packet::Stanza(features) = &packets[4] else {
        panic!("{:?}", packets[4]);
    };
    assert!(features.is("features", STREAM_NS));
    let Packet::StreamStart(h) = &packets[3] else {
        panic!("{:?}", packets[3]);
    };
    // Declarations are folded into namespaces, not kept as attributes.
    assert!(h.attrs().iter().all(|(n, _)| !n.starts_with("xmlns")));
    assert_eq!(h.attr("xml:lang"), Some("en"));
}

#[test]
fn quoted_gt_does_not_end_a_tag() {
    let e = stanza(r#"<m a="x>y" b='/>'><c d="/m>"/></m>"#);
    assert_eq!(e.attr("a"), Some("x>y"));
    assert_eq!(e.attr("b"), Some("/>"));
    assert_eq!(e.child_named("c").unwrap().attr("d"), Some("/m>"));
}

#[test]
fn prolog_may_hold_declaration_comments_and_whitespace() {
    let input = format!("\n<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!-- hi -->\n{HDR}<a/>");
    let (packets, end) = all_ways(ReaderLimits::default(), input.as_bytes());
    assert_eq!(end, Ok(()));
    assert_eq!(packets.len(), 2);
}

#[test]
fn keepalives_are_consumed_not_buffered() {
    let limits = ReaderLimits {
        max_stanza_size: 256,
        max_depth: 4,
    };
    let mut r = StanzaReader::new(limits);
    r.feed(HDR.as_bytes());
    assert!(matches!(r.next_packet(), Ok(Some(Packet::StreamStart(_)))));
    let spaces = vec![b' '; 10_000];
    for _ in 0..200 {
        r.feed(&spaces);
        assert_eq!(r.next_packet(), Ok(None));
        assert_eq!(r.buffered(), 0);
        assert!(!r.is_mid_stanza());
    }
    assert!(r.buf.len() <= 256 + READ_BLOCK + 1, "{}", r.buf.len());
    r.feed(b"\n<iq/>\n");
    assert_eq!(
        r.next_packet(),
        Ok(Some(Packet::Stanza(Element::new("iq", CLIENT))))
    );
    assert_eq!(r.next_packet(), Ok(None));
    assert_eq!(r.finish(), Ok(()));
}

#[test]
fn reset_rescans_a_buffered_header() {
    // Even if the caller kept reading past <success/> before resetting.
    let input = format!("{HDR}<success xmlns='{SASL}'/>{HDR}<iq/>");
    let mut r = StanzaReader::new(ReaderLimits::default());
    r.feed(input.as_bytes());
    assert!(matches!(r.next_packet(), Ok(Some(Packet::StreamStart(_)))));
    assert!(matches!(r.next_packet(), Ok(Some(Packet::Stanza(_)))));
    // Without reset the new header is just an unfinished stanza.
    assert_eq!(r.next_packet(), Ok(None));
    assert!(r.is_mid_stanza());
    r.reset();
    assert!(matches!(r.next_packet(), Ok(Some(Packet::StreamStart(_)))));
    assert_eq!(
        r.next_packet(),
        Ok(Some(Packet::Stanza(Element::new("iq", CLIENT))))
    );
    assert_eq!(r.next_packet(), Ok(None));
}

#[test]
fn a_new_stream_may_follow_stream_end() {
    let input = format!("{HDR}</stream:stream>\n{HDR}<a/>");
    let (packets, end) = all_ways(ReaderLimits::default(), input.as_bytes());
    assert_eq!(end, Ok(()));
    assert_eq!(packets.len(), 4);
    assert_eq!(packets[1], Packet::StreamEnd);
}

#[test]
fn read_from_reads_one_block_and_reports_eof() {
    struct Big(usize);
    impl Read for Big {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            assert!(buf.len() >= READ_BLOCK);
            self.0 += 1;
            buf.fill(b' ');
            Ok(buf.len())
        }
    }
    let mut r = StanzaReader::new(ReaderLimits::default());
    let mut big = Big(0);
    assert_eq!(r.read_from(&mut big).unwrap(), READ_BLOCK);
    assert_eq!(big.0, 1);
    assert_eq!(r.buffered(), READ_BLOCK);
    let mut cursor = io::Cursor::new(format!("{HDR}<a/>").into_bytes());
    let mut r = StanzaReader::new(ReaderLimits::default());
    let n = r.read_from(&mut cursor).unwrap();
    assert_eq!(n, HDR.len() + 4);
    assert!(matches!(r.next_packet(), Ok(Some(Packet::StreamStart(_)))));
    assert!(matches!(r.next_packet(), Ok(Some(Packet::Stanza(_)))));
    assert_eq!(r.read_from(&mut cursor).unwrap(), 0);
    assert_eq!(r.finish(), Ok(()));
}

#[test]
fn long_streams_reuse_a_bounded_buffer() {
    // 5,000 stanzas through read_from in odd-sized reads.
    let mut input = String::from(HDR);
    for i in 0..5000 {
        input.push_str(&format!(
            "<message id='{i}'><gcm xmlns='google:mobile:data'>{{\"n\":{i}}}</gcm></message> "
        ));
    }
    struct Trickle<'a>(&'a [u8], usize);
    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.1 = self.1 % 5000 + 977;
            let n = self.1.min(buf.len()).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }
    let limits = ReaderLimits {
        max_stanza_size: 1024,
        max_depth: 8,
    };
    let mut r = StanzaReader::new(limits);
    let mut src = Trickle(input.as_bytes(), 0);
    let mut count = 0;
    while r.read_from(&mut src).unwrap() > 0 {
        while let Some(p) = r.next_packet().unwrap() {
            if let Packet::Stanza(m) = p {
                assert_eq!(m.attr("id"), Some(count.to_string().as_str()));
                count += 1;
            }
        }
        assert!(r.buffered() <= 1024);
        assert!(r.buf.len() <= 1024 + READ_BLOCK + 1, "{}", r.buf.len());
    }
    assert_eq!(count, 5000);
    assert_eq!(r.finish(), Ok(()));
}

#[test]
fn byte_at_a_time_is_linear() {
    // A quadratic reader would need ~10^9 steps here and time out.
    let body = "x".repeat(60_000);
    let input = format!("{HDR}<message><gcm xmlns='google:mobile:data'>{body}</gcm></message>");
    let started = std::time::Instant::now();
    let mut r = StanzaReader::new(ReaderLimits::default());
    let mut stanzas = 0;
    for b in input.as_bytes() {
        r.feed(std::slice::from_ref(b));
        while let Some(p) = r.next_packet().unwrap() {
            stanzas += matches!(p, Packet::Stanza(_)) as usize;
        }
    }
    assert_eq!(stanzas, 1);
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}

// ---- errors ----

#[test]
fn doctype_is_rejected_everywhere() {
    let billion_laughs = r#"<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol9 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
]>
<stream:stream xmlns:stream='http://etherx.jabber.org/streams'><lolz>&lol9;</lolz>"#;
    assert_eq!(error_of(billion_laughs.as_bytes()), XmlError::Doctype);
    for input in [
        "<!DOCTYPE stream>".to_string(),
        "<!doctype stream>".to_string(),
        format!("{HDR}<!DOCTYPE x>"),
        format!("{HDR}<message><!DOCTYPE x></message>"),
    ] {
        assert_eq!(error_of(input.as_bytes()), XmlError::Doctype, "{input}");
    }
    // Caught on the keyword, before anything after it is buffered.
    let mut r = StanzaReader::new(ReaderLimits::default());
    r.feed(b"<!DOCTYPE");
    assert_eq!(r.next_packet(), Err(XmlError::Doctype));
    assert_eq!(r.next_packet(), Err(XmlError::Doctype), "sticky");
    assert_eq!(r.finish(), Err(XmlError::Doctype));
}

#[test]
fn invalid_utf8_is_reported() {
    let cases: [&[u8]; 6] = [
        b"<m><b>\xff</b></m>",
        b"<m><b>\xc3</b></m>",
        b"<mess\xffage/>",
        b"<m a='\xe2\x82'/>",
        b"<!-- \xff -->",
        b"</stream:stre\xffam>",
    ];
    for s in cases {
        let mut input = HDR.as_bytes().to_vec();
        input.extend_from_slice(s);
        assert_eq!(error_of(&input), XmlError::InvalidUtf8, "{s:?}");
    }
    let input = b"<stream:stream a='\xff' xmlns:stream='http://etherx.jabber.org/streams'>";
    assert_eq!(error_of(input), XmlError::InvalidUtf8);
}

#[test]
fn stanza_size_limit_is_exact() {
    let limits = ReaderLimits {
        max_stanza_size: 100,
        max_depth: 8,
    };
    let fits = format!("<m>{}</m>", "x".repeat(100 - 7));
    assert_eq!(fits.len(), 100);
    let input = format!("{HDR}{fits}");
    let (packets, end) = all_ways(limits, input.as_bytes());
    assert_eq!((packets.len(), end), (2, Ok(())));
    let input = format!("{HDR}<m>{}</m>", "x".repeat(100 - 6));
    let (packets, end) = all_ways(limits, input.as_bytes());
    assert_eq!(packets.len(), 1);
    assert_eq!(end, Err(XmlError::StanzaTooLarge { max: 100 }));
    // The header counts too.
    let hdr = |pad: usize| {
        format!(
            "<stream:stream xmlns:stream='http://etherx.jabber.org/streams' p='{}'>",
            "x".repeat(pad)
        )
    };
    assert_eq!(hdr(32).len(), 100);
    let (packets, end) = all_ways(limits, hdr(32).as_bytes());
    assert_eq!((packets.len(), end), (1, Ok(())));
    let (packets, end) = all_ways(limits, hdr(33).as_bytes());
    assert_eq!(packets.len(), 0);
    assert_eq!(end, Err(XmlError::StanzaTooLarge { max: 100 }));
    // And comments between stanzas.
    let input = format!("{HDR}<!--{}-->", "-x".repeat(60));
    let (_, end) = all_ways(limits, input.as_bytes());
    assert_eq!(end, Err(XmlError::StanzaTooLarge { max: 100 }));
}

#[test]
fn endless_stanza_fails_at_the_limit_without_buffering_more() {
    /// 10 MB of a tag that never ends, produced lazily.
    struct Endless {
        sent: usize,
    }
    impl Read for Endless {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            const TOTAL: usize = 10 << 20;
            let mut n = 0;
            if self.sent == 0 {
                n = HDR.len() + 9;
                buf[..HDR.len()].copy_from_slice(HDR.as_bytes());
                buf[HDR.len()..n].copy_from_slice(b"<message ");
            }
            let n2 = buf.len().min(TOTAL.saturating_sub(self.sent));
            buf[n..n2].fill(b'x');
            self.sent += n2;
            Ok(n2)
        }
    }
    for body_in_text in [false, true] {
        let limits = ReaderLimits::default();
        let mut r = StanzaReader::new(limits);
        let mut src = Endless { sent: 0 };
        if body_in_text {
            r.feed(HDR.as_bytes());
            r.feed(b"<message>");
            src.sent = 1;
        }
        let err = loop {
            let n = r.read_from(&mut src).unwrap();
            assert!(n > 0, "ran out of input without an error");
            assert!(r.buffered() <= limits.max_stanza_size + READ_BLOCK);
            assert!(r.buf.len() <= limits.max_stanza_size + READ_BLOCK + 1);
            match r.next_packet() {
                Ok(_) => {}
                Err(e) => break e,
            }
        };
        assert_eq!(err, XmlError::StanzaTooLarge { max: 64 * 1024 });
        assert!(
            src.sent <= limits.max_stanza_size + 2 * READ_BLOCK,
            "{}",
            src.sent
        );
    }
}

#[test]
fn nesting_limit_is_exact() {
    let limits = ReaderLimits::default();
    let ok = format!("{HDR}{}{}", "<a>".repeat(32), "</a>".repeat(32));
    let (packets, end) = run(limits, [ok.as_bytes()]);
    assert_eq!((packets.len(), end), (2, Ok(())));
    let ok = format!("{HDR}{}<b/>{}", "<a>".repeat(31), "</a>".repeat(31));
    let (packets, end) = run(limits, [ok.as_bytes()]);
    assert_eq!((packets.len(), end), (2, Ok(())));
    let deep = format!("{HDR}{}<b/>{}", "<a>".repeat(32), "</a>".repeat(32));
    assert_eq!(error_of(deep.as_bytes()), XmlError::TooDeep { max: 32 });
    let bomb = format!("{HDR}{}", "<a>".repeat(10_000));
    assert_eq!(error_of(bomb.as_bytes()), XmlError::TooDeep { max: 32 });
}

#[test]
fn text_outside_stanzas_is_malformed() {
    for input in [
        format!("{HDR}x"),
        format!("{HDR}<a/>x<b/>"),
        format!("{HDR}&amp;"),
        format!("{HDR}<![CDATA[ ]]>"),
        "hello".to_string(),
        "\u{feff}<stream:stream>".to_string(),
    ] {
        assert!(is_malformed(&error_of(input.as_bytes())), "{input}");
    }
}

#[test]
fn a_stream_must_start_with_a_stream_header() {
    for input in [
        "<message/>",
        "<message><body>hi</body></message>",
        "</stream:stream>",
        "<stream:stream xmlns:stream='http://etherx.jabber.org/streams'/>",
        "<stream xmlns='jabber:client'>",
        "<?xml version='1.0'?><?xml version='1.0'?>",
    ] {
        assert!(is_malformed(&error_of(input.as_bytes())), "{input}");
    }
}

#[test]
fn other_malformed_markup() {
    for s in [
        "<a>]]></a>",
        "<a>\u{1}</a>",
        "<a b></a>",
        "<a b=c/>",
        "<a <b/>",
        "< a/>",
        "<!-- a -- b -->",
        "<!ENTITY x 'y'>",
        "<a><!-- a -- b --></a>",
        "<?xml version='1.0'?>",
    ] {
        let input = format!("{HDR}{s}");
        assert!(is_malformed(&error_of(input.as_bytes())), "{s}");
    }
}

#[test]
fn finish_reports_truncation() {
    let cut = &SESSION_STREAM[..SESSION_STREAM.find("message_id\":\"u-1").unwrap()];
    let (packets, end) = all_ways(ReaderLimits::default(), cut.as_bytes());
    assert_eq!(packets.len(), 8);
    assert_eq!(end, Err(XmlError::Truncated));
    for input in [
        "<stream:stream xmlns:stream='http://etherx.jabber.org/streams'".to_string(),
        format!("{HDR}<a"),
        format!("{HDR}<a/><!-- "),
        format!("{HDR}<a></a"),
        "<?xml ".to_string(),
    ] {
        assert_eq!(
            whole(input.as_bytes()).1,
            Err(XmlError::Truncated),
            "{input}"
        );
    }
    for input in [String::new(), "  \n".to_string(), format!("{HDR}<a/> \n ")] {
        assert_eq!(whole(input.as_bytes()).1, Ok(()), "{input}");
    }
    // Bytes fed but not yet looked at are not lost silently either.
    let mut r = StanzaReader::new(ReaderLimits::default());
    r.feed(b"<stream");
    assert_eq!(r.finish(), Err(XmlError::Truncated));
}

#[test]
fn odd_but_valid_comments() {
    let e = stanza("<a><!-->x--><!---->y</a>");
    assert_eq!(e.text(), "y");
    let input = format!("{HDR}<!-->x-->\n<b/>");
    let (packets, end) = all_ways(ReaderLimits::default(), input.as_bytes());
    assert_eq!((packets.len(), end), (2, Ok(())));
}

#[test]
fn word_search_matches_naive_search() {
    let mut rng = Rng(7);
    let naive_special = |b: u8| b < 0x20 || b == b'&' || b == b'>' || b == 0xEF;
    for _ in 0..20_000 {
        let len = rng.below(40);
        let hay: Vec<u8> = (0..len)
            .map(|_| match rng.below(4) {
                0 => b"<&>\x00\x1f\x20\xef\xff\x80\x7f\t\n"[rng.below(12)],
                _ => rng.next() as u8,
            })
            .collect();
        let needle = b"<&-?]\x00\xef\xff"[rng.below(8)];
        assert_eq!(
            find_byte(&hay, needle),
            hay.iter().position(|&b| b == needle),
            "{hay:?} {needle}"
        );
        assert_eq!(
            find_text_special(&hay),
            hay.iter().position(|&b| naive_special(b)),
            "{hay:?}"
        );
    }
}

// ---- fuzz-style ----

use crate::mock::Rng;

fn mutate(rng: &mut Rng, input: &mut Vec<u8>) {
    const SPICE: &[u8] = b"<>/&;\"'=![]?-:x \n\r\t#\xc3\xa9\xff\x00";
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(input.len() + 1);
        match rng.below(6) {
            0 if at < input.len() => input[at] = SPICE[rng.below(SPICE.len())],
            1 => input.insert(at, SPICE[rng.below(SPICE.len())]),
            2 if at < input.len() => {
                let to = (at + rng.below(16)).min(input.len());
                input.drain(at..to);
            }
            3 if at < input.len() => {
                let to = (at + rng.below(64)).min(input.len());
                let copy = input[at..to].to_vec();
                let dest = rng.below(input.len() + 1);
                input.splice(dest..dest, copy);
            }
            4 => input.truncate(at),
            _ => input.insert(at, rng.next() as u8),
        }
    }
}

fn random_chunks<'a>(rng: &mut Rng, input: &'a [u8]) -> Vec<&'a [u8]> {
    let mut chunks = Vec::new();
    let mut rest = input;
    while !rest.is_empty() {
        let span = if rng.below(4) == 0 { 300 } else { 12 };
        let n = (1 + rng.below(span)).min(rest.len());
        let (a, b) = rest.split_at(n);
        chunks.push(a);
        rest = b;
    }
    chunks
}

#[test]
fn fuzz_never_panics_and_ignores_chunking() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let fixtures = [SESSION_STREAM, HANDSHAKE_FAILURE];
    let tight = ReaderLimits {
        max_stanza_size: 200,
        max_depth: 3,
    };
    let mut outcomes = [0usize; 2];
    for round in 0..3000 {
        let input: Vec<u8> = if round % 10 == 9 {
            (0..rng.below(400)).map(|_| rng.next() as u8).collect()
        } else {
            let mut v = fixtures[rng.below(2)].as_bytes().to_vec();
            mutate(&mut rng, &mut v);
            v
        };
        let limits = if round % 3 == 0 {
            tight
        } else {
            ReaderLimits::default()
        };
        let expected = run(limits, [input.as_slice()]);
        outcomes[usize::from(expected.1.is_ok())] += 1;
        let chunks = random_chunks(&mut rng, &input);
        let max_chunk = chunks.iter().map(|c| c.len()).max().unwrap_or(0);
        let mut r = StanzaReader::new(limits);
        let mut packets = Vec::new();
        let mut result = Ok(());
        for chunk in &chunks {
            r.feed(chunk);
            assert!(r.buffered() <= limits.max_stanza_size + max_chunk);
            assert!(r.buf.len() <= limits.max_stanza_size + READ_BLOCK + 1);
            result = drain(&mut r, &mut packets);
            if result.is_err() {
                break;
            }
            assert!(r.buffered() <= limits.max_stanza_size);
        }
        if result.is_ok() {
            result = r.finish();
        }
        assert_eq!((packets, result), expected, "round {round}");
    }
    // Both outcomes were exercised.
    assert!(outcomes[0] > 300 && outcomes[1] > 100, "{outcomes:?}");
}
