use super::*;

#[test]
fn ids_have_ccs_format() {
    let a = stream_id();
    let b = stream_id();
    assert_eq!(a.len(), 16);
    assert!(
        a.bytes()
            .all(|c| c.is_ascii_digit() || (b'A'..=b'F').contains(&c)),
        "{a}"
    );
    assert_ne!(a, b);
    let s = resource_suffix();
    assert_eq!(s.len(), 8);
    assert!(
        s.bytes()
            .all(|c| c.is_ascii_digit() || (b'A'..=b'F').contains(&c)),
        "{s}"
    );
}

#[test]
fn plain_three_encodings_accepted() {
    for (z, c) in [
        ("", "123@gcm.googleapis.com"),
        ("", "123@fcm.googleapis.com"),
        ("123@gcm.googleapis.com", "123"),
        ("123@fcm.googleapis.com", "123"),
    ] {
        let p = decode_plain(&encode_plain(z, c, "key")).unwrap();
        assert_eq!((p.authzid.as_str(), p.authcid.as_str()), (z, c));
        assert!(credentials_ok(&p, "123", "key"), "{z:?} {c:?}");
    }
}

#[test]
fn plain_wrong_credentials_refused() {
    for (z, c, k) in [
        ("", "123@gcm.googleapis.com", "wrong"),
        ("", "999@gcm.googleapis.com", "key"),
        ("", "123@fcm-xmpp.googleapis.com", "key"),
        ("", "123", "key"),
        ("", "123@gcm.googleapis.com/res", "key"),
        ("123@gcm.googleapis.com", "999", "key"),
        ("123", "123", "key"),
        ("other@gcm.googleapis.com", "123@gcm.googleapis.com", "key"),
        ("", "", ""),
    ] {
        let p = decode_plain(&encode_plain(z, c, k)).unwrap();
        assert!(!credentials_ok(&p, "123", "key"), "{z:?} {c:?} {k:?}");
    }
}

#[test]
fn plain_encoding_errors() {
    let good = encode_plain("", "123@gcm.googleapis.com", "key");
    let (a, b) = good.split_at(8);
    for bad in [
        format!("{a}\n{b}"),
        format!("{a}\r\n{b}"),
        format!("{good}\n"),
        format!(" {good}"),
        "not base64!".to_string(),
        String::new(),
        good.trim_end_matches('=').to_string() + "x",
    ] {
        assert_eq!(
            decode_plain(&bad),
            Err(PlainError::IncorrectEncoding),
            "{bad:?}"
        );
    }
    let two_parts = base64::engine::general_purpose::STANDARD.encode("a\0b");
    assert_eq!(decode_plain(&two_parts), Err(PlainError::Malformed));
    let four_parts = base64::engine::general_purpose::STANDARD.encode("a\0b\0c\0d");
    assert_eq!(decode_plain(&four_parts), Err(PlainError::Malformed));
    let not_utf8 = base64::engine::general_purpose::STANDARD.encode([0xff, 0, 0x41, 0, 0x42]);
    assert_eq!(decode_plain(&not_utf8), Err(PlainError::Malformed));
    assert_eq!(
        PlainError::IncorrectEncoding.condition(),
        "incorrect-encoding"
    );
}

// -- stanzas parse back through the crate's own reader and model ------------------------

use crate::event::{Ack, AckRefusal, Nack, NackCode};
use crate::xml::{Element, Packet, ReaderLimits, StanzaReader};

/// Parses `stanza` as the first stanza of a server stream.
fn parse(stanza: &str) -> Element {
    let mut header = String::new();
    stream_header(&mut header, DEFAULT_DOMAIN, &stream_id());
    let mut reader = StanzaReader::new(ReaderLimits::default());
    reader.feed(header.as_bytes());
    reader.feed(stanza.as_bytes());
    match reader.next_packet() {
        Ok(Some(Packet::StreamStart(h))) => {
            assert!(h.is("stream", NS_STREAM));
            assert_eq!(h.attr("from"), Some(DEFAULT_DOMAIN));
            assert_eq!(h.attr("id").map(str::len), Some(16));
        }
        other => panic!("{other:?}"),
    }
    match reader.next_packet() {
        Ok(Some(Packet::Stanza(el))) => el,
        other => panic!("{other:?} for {stanza}"),
    }
}

fn event_of(stanza: &str) -> Event {
    Event::from_stanza(&parse(stanza)).unwrap().unwrap()
}

#[test]
fn ack_and_nack_in_observed_form() {
    let ack = Event::Ack(Ack {
        message_id: "m<1>".into(),
        from: Some("tok&en".into()),
        registration_id: None,
    });
    let mut out = String::new();
    data_gcm_message(&mut out, &crate::emulator::event_json(&ack));
    assert!(
        out.starts_with("<message><data:gcm xmlns:data=\"google:mobile:data\">{"),
        "{out}"
    );
    assert!(
        out.contains("m&lt;1&gt;") && out.contains("tok&amp;en"),
        "{out}"
    );
    let el = parse(&out);
    assert!(el.attrs().is_empty(), "no id, no type: {out}");
    assert_eq!(event_of(&out), ack);

    let nack = Event::Nack(Nack {
        message_id: "m-2".into(),
        from: Some("tok".into()),
        code: NackCode::DeviceMessageRateExceeded,
        description: Some("slow down".into()),
    });
    out.clear();
    data_gcm_message(&mut out, &crate::emulator::event_json(&nack));
    assert_eq!(event_of(&out), nack);

    out.clear();
    data_gcm_message(&mut out, &crate::emulator::event_json(&draining_event()));
    assert!(event_of(&out).is_connection_draining(), "{out}");
}

#[test]
fn upstream_and_receipt_in_observed_form() {
    let up = upstream_event("up-1", "dev", "com.example", &[("k", "a & <b>")]);
    let mut out = String::new();
    upstream_message(&mut out, "123", &crate::emulator::event_json(&up));
    assert!(
        out.starts_with(
            "<message to=\"123@gcm.googleapis.com\" from=\"devices@gcm.googleapis.com\" \
             type=\"normal\"><gcm xmlns=\"google:mobile:data\">"
        ),
        "{out}"
    );
    match event_of(&out) {
        Event::Upstream(u) => {
            assert_eq!((u.message_id.as_str(), u.from.as_str()), ("up-1", "dev"));
            assert_eq!(u.category.as_deref(), Some("com.example"));
            assert_eq!(u.data.get("k").map(String::as_str), Some("a & <b>"));
        }
        other => panic!("{other:?}"),
    }

    out.clear();
    let receipt = receipt_event("m-3", "tok", "com.example", 1_430_277_821_658);
    upstream_message(&mut out, "123", &crate::emulator::event_json(&receipt));
    assert!(
        out.contains("\"message_sent_timestamp\":\"1430277821658\""),
        "{out}"
    );
    match event_of(&out) {
        Event::Receipt(r) => {
            assert_eq!(r.message_id, "dr2:m-3");
            assert_eq!(r.from, "gcm.googleapis.com");
            assert_eq!(r.original_message_id, "m-3");
            assert_eq!(r.status, "MESSAGE_SENT_TO_DEVICE");
            assert_eq!(r.device_registration_id.as_deref(), Some("tok"));
            assert_eq!(r.sent_timestamp, Some(1_430_277_821_658));
            assert_eq!(r.category.as_deref(), Some("com.example"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn stanza_errors_400_and_406() {
    let mut out = String::new();
    let payload = r#"{"to":"tok","data":{"k":"<&>"}}"#;
    stanza_error_400(
        &mut out,
        Some("s-1"),
        "1@gcm.googleapis.com/r",
        Some(payload),
        MISSING_ID_TEXT,
    );
    let el = parse(&out);
    assert_eq!(el.attr("to"), Some("1@gcm.googleapis.com/r"));
    assert_eq!(el.child("gcm", NS_GCM).unwrap().text(), payload);
    match Event::from_stanza(&el).unwrap().unwrap() {
        Event::StanzaError(e) => {
            assert_eq!(e.id.as_deref(), Some("s-1"));
            assert_eq!(e.code, Some(400));
            assert_eq!(e.error_type.as_deref(), Some("modify"));
            assert_eq!(e.condition, "bad-request");
            assert_eq!(e.text.as_deref(), Some(MISSING_ID_TEXT));
        }
        other => panic!("{other:?}"),
    }
    out.clear();
    let ack = r#"{"to":"DEV","message_id":"up-1","message_type":"ack"}"#;
    stanza_error_406(&mut out, Some("fx-ack-1"), "1@gcm.googleapis.com/r", ack);
    let el = parse(&out);
    assert_eq!(
        el.child("gcm", NS_GCM).map(Element::text).as_deref(),
        Some(ack)
    );
    match Event::from_stanza(&el).unwrap().unwrap() {
        Event::AckRefused(a) => {
            assert_eq!(a.message_id.as_deref(), Some("up-1"));
            let AckRefusal::StanzaError(e) = a.reason else {
                panic!("{a:?}");
            };
            assert_eq!(e.id.as_deref(), Some("fx-ack-1"));
            assert_eq!(e.code, Some(406));
            assert_eq!(e.condition, "not-acceptable");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn handshake_stanzas_parse() {
    let features = parse(SASL_FEATURES);
    let mechs = features.child("mechanisms", NS_SASL).unwrap();
    let names: Vec<String> = mechs.children().map(Element::text).collect();
    assert_eq!(names, ["X-OAUTH2", "X-GOOGLE-TOKEN", "PLAIN"]);
    let features = parse(BIND_FEATURES);
    assert!(features.child("bind", NS_BIND).is_some());
    assert!(features.child("session", NS_SESSION).is_some());
    assert!(parse(SASL_SUCCESS).is("success", NS_SASL));
    let mut out = String::new();
    sasl_failure(&mut out, "not-authorized");
    let f = parse(&out);
    assert!(f.is("failure", NS_SASL) && f.child("not-authorized", NS_SASL).is_some());
    out.clear();
    bind_result(&mut out, Some("b1"), "1@gcm.googleapis.com/r0A1B2C3D");
    let iq = parse(&out);
    let jid = iq
        .child("bind", NS_BIND)
        .unwrap()
        .child("jid", NS_BIND)
        .unwrap();
    assert_eq!(jid.text(), "1@gcm.googleapis.com/r0A1B2C3D");
    out.clear();
    iq_result(&mut out, Some("p7"), None, Some(DEFAULT_DOMAIN));
    assert_eq!(
        out,
        "<iq type=\"result\" id=\"p7\" from=\"gcm.googleapis.com\"/>"
    );
    out.clear();
    stream_error(&mut out, "invalid-xml", Some("a < b"));
    let e = parse(&out);
    assert!(e.is("error", NS_STREAM));
    assert!(e
        .child("invalid-xml", "urn:ietf:params:xml:ns:xmpp-streams")
        .is_some());
}
