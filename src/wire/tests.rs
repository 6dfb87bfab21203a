use super::*;

fn one(write: impl FnOnce(&mut String)) -> String {
    let mut out = String::from("x");
    write(&mut out);
    // Every function appends, never clears.
    assert!(out.starts_with('x'));
    out.split_off(1)
}

#[test]
fn stream_header_and_close() {
    assert_eq!(
        one(|o| stream_header(o, "gcm.googleapis.com")),
        "<stream:stream to=\"gcm.googleapis.com\" version=\"1.0\" xmlns=\"jabber:client\" \
         xmlns:stream=\"http://etherx.jabber.org/streams\">"
    );
    assert_eq!(
        one(|o| stream_header(o, "a\"<b")),
        "<stream:stream to=\"a&quot;&lt;b\" version=\"1.0\" xmlns=\"jabber:client\" \
         xmlns:stream=\"http://etherx.jabber.org/streams\">"
    );
    assert_eq!(one(close), "</stream:stream>");
    assert_eq!(one(keepalive), " ");
}

#[test]
fn auth_bind_and_session() {
    assert_eq!(
        one(|o| auth_plain(o, "AGE+YgBj")),
        "<auth xmlns=\"urn:ietf:params:xml:ns:xmpp-sasl\" mechanism=\"PLAIN\">AGE+YgBj</auth>"
    );
    assert_eq!(
        one(|o| bind(o, "fcmxmpp")),
        "<iq type=\"set\" id=\"bind1\"><bind xmlns=\"urn:ietf:params:xml:ns:xmpp-bind\">\
         <resource>fcmxmpp</resource></bind></iq>"
    );
    assert_eq!(
        one(|o| bind(o, "a<b&c")),
        "<iq type=\"set\" id=\"bind1\"><bind xmlns=\"urn:ietf:params:xml:ns:xmpp-bind\">\
         <resource>a&lt;b&amp;c</resource></bind></iq>"
    );
    assert_eq!(
        one(session),
        "<iq type=\"set\" id=\"sess1\"><session xmlns=\"urn:ietf:params:xml:ns:xmpp-session\"/></iq>"
    );
}

#[test]
fn downstream_message() {
    let mut json = String::from("stale scratch");
    let m = Message::to("tok").message_id("m<1>").data("k", "a & b < c");
    assert_eq!(
        one(|o| message(o, &m, &mut json)),
        "<message id=\"m&lt;1&gt;\"><gcm xmlns=\"google:mobile:data\">\
         {\"to\":\"tok\",\"message_id\":\"m&lt;1&gt;\",\"data\":{\"k\":\"a &amp; b &lt; c\"}}\
         </gcm></message>"
    );
}

#[test]
fn ack_has_an_id_of_its_own() {
    let mut json = String::new();
    assert_eq!(
        one(|o| ack(o, 7, "DEV", "up-1", &mut json)),
        "<message id=\"fx-ack-7\"><gcm xmlns=\"google:mobile:data\">\
         {\"to\":\"DEV\",\"message_id\":\"up-1\",\"message_type\":\"ack\"}</gcm></message>"
    );
    assert_eq!(
        one(|o| ack(o, 8, "gcm.googleapis.com", "dr2:m<", &mut json)),
        "<message id=\"fx-ack-8\"><gcm xmlns=\"google:mobile:data\">\
         {\"to\":\"gcm.googleapis.com\",\"message_id\":\"dr2:m&lt;\",\"message_type\":\"ack\"}\
         </gcm></message>"
    );
    // No downstream message can carry an ack's stanza id.
    assert!(Message::to("t").message_id("fx-ack-8").validate().is_err());
}

#[test]
fn ping_and_pong() {
    assert_eq!(
        one(|o| ping(o, "gcm.googleapis.com", 3)),
        "<iq to=\"gcm.googleapis.com\" id=\"ping3\" type=\"get\"><ping xmlns=\"urn:xmpp:ping\"/></iq>"
    );
    assert_eq!(ping_seq("ping3"), Some(3));
    assert_eq!(ping_seq("ping"), None);
    assert_eq!(ping_seq("p3"), None);
    assert_eq!(
        one(|o| pong(o, "s1", Some("gcm.googleapis.com"))),
        "<iq type=\"result\" id=\"s1\" to=\"gcm.googleapis.com\"/>"
    );
    assert_eq!(
        one(|o| pong(o, "a\"b", None)),
        "<iq type=\"result\" id=\"a&quot;b\"/>"
    );
}

/// Every stanza, with hostile values, through a conforming XML 1.0 parser (the
/// `xml` crate, a dev-dependency independent of our reader).
#[test]
fn every_stanza_is_well_formed_xml() {
    use xml::reader::{ParserConfig, XmlEvent};
    let nasty = "a\u{1}<&>\"'\u{FFFF}\u{FFFE}\r\n\t]]>\0é";
    let mut json = String::new();
    let mut doc = String::new();
    stream_header(&mut doc, nasty);
    auth_plain(&mut doc, "AGE=");
    stream_header(&mut doc, "gcm.googleapis.com");
    bind(&mut doc, nasty);
    session(&mut doc);
    // Built directly: `validate` would refuse these characters.
    let m = Message::to(nasty).message_id(nasty).data(nasty, nasty);
    message(&mut doc, &m, &mut json);
    ack(&mut doc, 1, nasty, nasty, &mut json);
    ping(&mut doc, nasty, 2);
    pong(&mut doc, nasty, Some(nasty));
    keepalive(&mut doc);
    doc.push_str("</stream:stream>");
    close(&mut doc);
    let mut ended = false;
    for event in ParserConfig::new().create_reader(doc.as_bytes()) {
        match event {
            Ok(XmlEvent::EndDocument) => ended = true,
            Ok(_) => {}
            Err(e) => panic!("{e} in {doc:?}"),
        }
    }
    assert!(ended);
}

/// `message` writes the JSON straight into the output; it must equal the
/// JSON written apart and then escaped as XML text, whatever the payload.
#[test]
fn message_equals_json_escaped_as_text() {
    let mut r = crate::test_rng::Rng(0x5EED_0F0A_115A_1E00);
    let (mut out, mut json) = (String::new(), String::new());
    for _ in 0..5_000 {
        let mut m = Message::to(r.text(20)).message_id(r.text(10));
        for _ in 0..r.below(4) {
            m = m.data(r.text(8), r.text(30));
        }
        out.clear();
        message(&mut out, &m, &mut json);
        let mut want = String::from("<message id=\"");
        escape_attr(m.id(), &mut want);
        want.push_str("\"><gcm xmlns=\"google:mobile:data\">");
        escape_text(&m.to_json(), &mut want);
        want.push_str("</gcm></message>");
        assert_eq!(out, want);
    }
}
