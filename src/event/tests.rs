use super::*;

const ALL_CODES: [(&str, RetryClass); 11] = [
    ("SERVICE_UNAVAILABLE", RetryClass::Backoff),
    ("INTERNAL_SERVER_ERROR", RetryClass::Backoff),
    ("CONNECTION_DRAINING", RetryClass::NewConnection),
    ("DEVICE_MESSAGE_RATE_EXCEEDED", RetryClass::RateLimited),
    ("TOPICS_MESSAGE_RATE_EXCEEDED", RetryClass::RateLimited),
    ("QUOTA_EXCEEDED", RetryClass::RateLimited),
    ("BAD_REGISTRATION", RetryClass::Final),
    ("DEVICE_UNREGISTERED", RetryClass::Final),
    ("INVALID_JSON", RetryClass::Final),
    ("BAD_ACK", RetryClass::Final),
    ("INVALID_APNS_CREDENTIAL", RetryClass::Final),
];

fn ev(text: &str) -> Event {
    Event::from_json(text).unwrap_or_else(|e| panic!("{text}: {e}"))
}

fn bad_detail(text: &str) -> String {
    match Event::from_json(text) {
        Err(ProtocolError::BadPayload { detail }) => detail,
        other => panic!("{:.60}: expected BadPayload, got {other:?}", text),
    }
}

fn ack(to: &str, id: &str) -> String {
    let mut out = String::new();
    write_ack_json(to, id, &mut out);
    out
}

#[test]
fn every_nack_code_is_typed_classified_and_round_trips() {
    for (code, class) in ALL_CODES {
        let typed = NackCode::from_code(code);
        assert!(!matches!(typed, NackCode::Other(_)), "{code}");
        assert_eq!(typed.as_str(), code);
        assert_eq!(typed.to_string(), code);
        assert_eq!(typed.retry_class(), class, "{code}");
        assert_eq!(
            typed.is_retryable(),
            matches!(class, RetryClass::Backoff | RetryClass::NewConnection)
        );
        let text = format!(
            r#"{{"message_type":"nack","message_id":"m-1","from":"tok","error":"{code}","error_description":"d"}}"#
        );
        let e = ev(&text);
        let nack = match &e {
            // BAD_ACK is about one of our acks, never a downstream message.
            Event::AckRefused(AckRefused {
                message_id,
                reason: AckRefusal::Nack(n),
            }) if typed == NackCode::BadAck => {
                assert_eq!(message_id.as_deref(), Some("m-1"));
                n
            }
            other => other.as_nack().unwrap(),
        };
        assert_eq!(nack.code, typed);
        #[cfg(feature = "emulator")]
        assert_eq!(
            Event::from_json(&crate::emulator::event_json(&e)).unwrap(),
            e
        );
    }
    assert!(NackCode::ServiceUnavailable.is_retryable());
    assert!(NackCode::ConnectionDraining.is_retryable());
    assert!(!NackCode::DeviceMessageRateExceeded.is_retryable());
    assert!(!NackCode::DeviceUnregistered.is_retryable());
}

#[test]
fn unknown_nack_code_is_kept_and_backs_off() {
    let code = NackCode::from_code("SOMETHING_NEW");
    assert_eq!(code, NackCode::Other("SOMETHING_NEW".into()));
    assert_eq!(code.as_str(), "SOMETHING_NEW");
    assert_eq!(code.retry_class(), RetryClass::Backoff);
    assert!(code.is_retryable());
    // Case matters: CCS codes are upper case.
    assert!(matches!(NackCode::from_code("bad_ack"), NackCode::Other(_)));
    let e = ev(r#"{"message_type":"nack","message_id":"m","error":"SOMETHING_NEW"}"#);
    assert_eq!(e.as_nack().unwrap().code, code);
    #[cfg(feature = "emulator")]
    assert_eq!(
        Event::from_json(&crate::emulator::event_json(&e)).unwrap(),
        e
    );
}

#[test]
fn nack_fields_and_leniency() {
    let e = ev(
        r#"{"message_type":"nack","message_id":"m-7","from":"tok","error":"INVALID_JSON",
          "error_description":"InvalidJson: JSON_TYPE_ERROR : Field \"time_to_live\" must be a JSON java.lang.Number: abc"}"#,
    );
    let n = e.as_nack().unwrap();
    assert_eq!(n.message_id, "m-7");
    assert_eq!(n.from.as_deref(), Some("tok"));
    assert_eq!(n.code, NackCode::InvalidJson);
    assert!(n
        .description
        .as_deref()
        .unwrap()
        .starts_with("InvalidJson: JSON_TYPE_ERROR"));
    let e = ev(r#"{"message_type":"nack","message_id":"m"}"#);
    assert_eq!(e.as_nack().unwrap().code, NackCode::Other(String::new()));
    assert_eq!(e.as_nack().unwrap().code.retry_class(), RetryClass::Backoff);
    let e = ev(r#"{"message_type":"nack","message_id":"m","error":5,"from":7}"#);
    assert_eq!(e.as_nack().unwrap().code, NackCode::Other("5".into()));
    assert_eq!(e.as_nack().unwrap().from, None);
    assert!(bad_detail(r#"{"message_type":"nack","error":"BAD_ACK"}"#).contains("message_id"));
}

#[test]
fn ack_fields() {
    let e = ev(r#"{"from":"tok","message_id":"m-1","message_type":"ack"}"#);
    assert!(e.is_ack());
    let a = e.as_ack().unwrap();
    assert_eq!(
        (a.message_id.as_str(), a.from.as_deref()),
        ("m-1", Some("tok"))
    );
    assert_eq!(a.registration_id, None);
    assert_eq!(e.message_id(), Some("m-1"));
    assert_eq!(e.settled_message_id(), Some("m-1"));
    assert!(!e.needs_ack());
    assert_eq!(e.ack_target(), None);
    let e = ev(r#"{"message_type":"ack","message_id":"m-2","registration_id":"canon"}"#);
    assert_eq!(
        e.as_ack().unwrap().registration_id.as_deref(),
        Some("canon")
    );
    assert_eq!(e.as_ack().unwrap().from, None);
    let d = bad_detail(r#"{"from":"tok","message_type":"ack"}"#);
    assert!(d.contains("`message_id`") && d.contains("missing"), "{d}");
    let d = bad_detail(r#"{"message_id":7,"message_type":"ack"}"#);
    assert!(d.contains("`message_id`"), "{d}");
}

#[test]
fn receipt_fields() {
    let text = r#"{"category":"com.example.app","data":{"message_status":"MESSAGE_SENT_TO_DEVICE",
        "original_message_id":"m-1366082849205","device_registration_id":"REG",
        "message_sent_timestamp":"1430277821658"},"message_id":"dr2:m-1366082849205",
        "message_type":"receipt","time_to_live":0,"from":"gcm.googleapis.com"}"#;
    let e = ev(text);
    assert!(e.is_receipt() && e.needs_ack());
    let r = e.as_receipt().unwrap();
    assert_eq!(r.message_id, "dr2:m-1366082849205");
    assert_eq!(r.from, "gcm.googleapis.com");
    assert_eq!(r.original_message_id, "m-1366082849205");
    assert_eq!(r.status, "MESSAGE_SENT_TO_DEVICE");
    assert_eq!(r.device_registration_id.as_deref(), Some("REG"));
    assert_eq!(r.sent_timestamp, Some(1_430_277_821_658));
    assert_eq!(r.category.as_deref(), Some("com.example.app"));
    assert_eq!(
        e.ack_target(),
        Some(("gcm.googleapis.com", "dr2:m-1366082849205"))
    );
    assert_eq!(e.settled_message_id(), None);
    // Timestamp as a number; original id from the dr2: prefix.
    let e = ev(
        r#"{"message_type":"receipt","message_id":"dr2:m-9","from":"gcm.googleapis.com",
                  "data":{"message_status":"MESSAGE_SENT_TO_DEVICE","message_sent_timestamp":1430277821658}}"#,
    );
    let r = e.as_receipt().unwrap();
    assert_eq!(r.sent_timestamp, Some(1_430_277_821_658));
    assert_eq!(r.original_message_id, "m-9");
    // Junk informational fields do not lose the receipt.
    let e = ev(
        r#"{"message_type":"receipt","message_id":"x-1","from":"gcm.googleapis.com",
                  "category":5,"data":{"message_sent_timestamp":"soon","device_registration_id":[]}}"#,
    );
    let r = e.as_receipt().unwrap();
    assert_eq!((r.sent_timestamp, r.category.as_ref()), (None, None));
    assert_eq!(r.original_message_id, "x-1");
    assert_eq!(r.status, "");
    let e = ev(r#"{"message_type":"receipt","message_id":"dr2:a","from":"g","data":"?"}"#);
    assert_eq!(e.as_receipt().unwrap().original_message_id, "a");
    // The ack ids are required.
    assert!(bad_detail(r#"{"message_type":"receipt","message_id":"dr2:a"}"#).contains("`from`"));
    assert!(bad_detail(r#"{"message_type":"receipt","from":"g"}"#).contains("`message_id`"));
}

#[test]
fn control_without_message_id() {
    let e = ev(r#"{"message_type":"control","control_type":"CONNECTION_DRAINING"}"#);
    assert_eq!(
        e,
        Event::Control(Control {
            kind: ControlKind::ConnectionDraining
        })
    );
    assert_eq!(e.message_id(), None);
    assert!(e.is_connection_draining());
    assert!(!e.needs_ack());
    let e = ev(r#"{"message_type":"control","control_type":"SOMETHING_ELSE"}"#);
    assert_eq!(
        e.as_control().unwrap().kind,
        ControlKind::Other("SOMETHING_ELSE".into())
    );
    assert!(!e.is_connection_draining());
    assert_eq!(e.as_control().unwrap().kind.to_string(), "SOMETHING_ELSE");
    assert!(bad_detail(r#"{"message_type":"control"}"#).contains("`control_type`"));
    let nack = ev(r#"{"message_type":"nack","message_id":"m","error":"CONNECTION_DRAINING"}"#);
    assert!(nack.is_connection_draining());
}

#[test]
fn upstream_fields_and_non_string_data() {
    let e = ev(
        r#"{"from":"DEVICE","category":"com.example","message_id":"u-1","time_to_live":86400,
        "data":{"s":"text","n":5,"f":1.5,"b":true,"z":null,"o":{"a":[1,"x"]},"a":[]}}"#,
    );
    assert!(e.is_upstream() && e.needs_ack());
    let u = e.as_upstream().unwrap();
    assert_eq!(u.from, "DEVICE");
    assert_eq!(u.category.as_deref(), Some("com.example"));
    assert_eq!(u.message_id, "u-1");
    assert_eq!(u.time_to_live, Some(86_400));
    let d = |k: &str| u.data.get(k).map(String::as_str);
    assert_eq!(d("s"), Some("text"));
    assert_eq!(d("n"), Some("5"));
    assert_eq!(d("f"), Some("1.5"));
    assert_eq!(d("b"), Some("true"));
    assert_eq!(d("z"), Some("null"));
    assert_eq!(d("o"), Some(r#"{"a":[1,"x"]}"#));
    assert_eq!(d("a"), Some("[]"));
    assert_eq!(e.ack_target(), Some(("DEVICE", "u-1")));
    // Minimal upstream: no data, no ttl; a junk ttl is ignored.
    let e = ev(r#"{"from":"D","message_id":"u-2","time_to_live":"1"}"#);
    let u = e.as_upstream().unwrap();
    assert!(u.data.is_empty());
    assert_eq!((u.time_to_live, u.category.as_ref()), (None, None));
    assert!(bad_detail(r#"{"message_id":"u","data":{}}"#).contains("`from`"));
    assert!(bad_detail(r#"{"from":"D","data":{}}"#).contains("`message_id`"));
    assert!(bad_detail(r#"{"from":"D","message_id":"u","data":"x"}"#).contains("`data`"));
    assert!(
        bad_detail(r#"{"message_type":5,"from":"D","message_id":"u"}"#).contains("`message_type`")
    );
    // message_type null counts as absent.
    assert!(ev(r#"{"message_type":null,"from":"D","message_id":"u"}"#).is_upstream());
}

#[test]
fn unknown_message_type_is_kept() {
    let text = r#"{"message_type":"future","message_id":"x","payload":{"k":1}}"#;
    let e = ev(&format!("\n  {text}\n"));
    assert_eq!(
        e,
        Event::Unknown(UnknownMessage {
            message_type: "future".into(),
            json: text.into()
        })
    );
    assert_eq!(e.message_id(), None);
    #[cfg(feature = "emulator")]
    assert_eq!(crate::emulator::event_json(&e), text);
    assert!(e.is_unknown());
}

#[test]
fn surrounding_whitespace_and_newlines() {
    let e = ev("\n\n   {\"message_type\":\"ack\",\"message_id\":\"m\"}\r\n\t  \n");
    assert_eq!(e.message_id(), Some("m"));
    let e = ev("\n{\n  \"message_type\" : \"ack\" ,\n  \"message_id\" : \"m2\"\n}\n");
    assert_eq!(e.message_id(), Some("m2"));
}

#[test]
fn garbage_is_an_error_not_a_panic() {
    let huge_int = format!(
        "{{\"message_type\":\"ack\",\"message_id\":\"m\",\"x\":{}}}",
        "1".repeat(10_000)
    );
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let deep_obj = "{\"a\":".repeat(100_000);
    for text in [
        "",
        " \n ",
        "garbage",
        "<gcm/>",
        "[]",
        r#"[{"message_type":"ack","message_id":"m"}]"#,
        "\"ack\"",
        "42",
        "null",
        "{\"message_type\":\"ack\"",
        "{\"message_type\":\"ack\",\"message_id\":\"m\"}}",
        "{\"message_id\":1e999999,\"from\":\"d\"}",
        "{\"message_id\":\"\\ud800\",\"from\":\"d\"}",
        huge_int.as_str(),
        deep.as_str(),
        deep_obj.as_str(),
    ] {
        let d = bad_detail(text);
        assert!(d.starts_with("gcm payload is "), "{d}");
    }
    // Deep nesting inside upstream data is kept as text, iteratively.
    let nested = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let e = ev(&format!(
        r#"{{"from":"D","message_id":"u","data":{{"deep":{nested}}}}}"#
    ));
    assert_eq!(e.as_upstream().unwrap().data["deep"].len(), 200_000);
}

#[test]
fn ack_bytes_are_exact() {
    assert_eq!(
        ack("DEVICE_TOKEN", "m-123"),
        r#"{"to":"DEVICE_TOKEN","message_id":"m-123","message_type":"ack"}"#
    );
    assert_eq!(
        ack("gcm.googleapis.com", "dr2:m-1"),
        r#"{"to":"gcm.googleapis.com","message_id":"dr2:m-1","message_type":"ack"}"#
    );
    assert_eq!(
        ack(r#"a"b\c"#, "x\ny"),
        r#"{"to":"a\"b\\c","message_id":"x\ny","message_type":"ack"}"#
    );
    let mut out = String::from("keep");
    write_ack_json("t", "m", &mut out);
    assert_eq!(
        out,
        r#"keep{"to":"t","message_id":"m","message_type":"ack"}"#
    );
    // What we send parses to exactly these three string fields.
    let obj = json::parse_object(&ack(r#"a"b\c"#, "x\ny")).unwrap();
    assert_eq!(obj.len(), 3);
    assert_eq!(json::opt_str(&obj, "to"), Ok(Some(r#"a"b\c"#)));
    assert_eq!(json::opt_str(&obj, "message_id"), Ok(Some("x\ny")));
    assert_eq!(json::opt_str(&obj, "message_type"), Ok(Some("ack")));
    // And an event's ack target feeds it directly.
    let up = ev(r#"{"from":"D\"","message_id":"u\\1","data":{}}"#);
    let (to, id) = up.ack_target().unwrap();
    assert_eq!(
        ack(to, id),
        r#"{"to":"D\"","message_id":"u\\1","message_type":"ack"}"#
    );
}

fn gcm_message(json_text: &str) -> Element {
    Element::new("message", NS_CLIENT).with_child(Element::new("gcm", NS_GCM).with_text(json_text))
}

#[test]
fn stanza_with_prefixed_data_gcm_ack() {
    // <message><data:gcm xmlns:data="google:mobile:data">JSON</data:gcm></message>:
    // after prefix resolution the reader gives local name `gcm` in the ns.
    let el = gcm_message("\n{\"message_type\":\"ack\",\"message_id\":\"m-1\",\"from\":\"t\"}\n");
    let e = Event::from_stanza(&el).unwrap().unwrap();
    assert_eq!(e.as_ack().unwrap().message_id, "m-1");
    // Split text nodes are concatenated.
    let el = Element::new("message", NS_CLIENT).with_child(
        Element::new("gcm", NS_GCM)
            .with_text("{\"message_type\":\"ack\",")
            .with_text("\"message_id\":\"m-2\"}"),
    );
    assert_eq!(
        Event::from_stanza(&el).unwrap().unwrap().message_id(),
        Some("m-2")
    );
}

#[test]
fn stanza_payload_selected_by_namespace() {
    // A decoy `gcm` in another namespace first, then the real one.
    let el = Element::new("message", NS_CLIENT)
        .with_attr("type", "normal")
        .with_child(Element::new("gcm", "urn:other").with_text("{}"))
        .with_child(
            Element::new("gcm", NS_GCM)
                .with_text(r#"{"from":"D","message_id":"u","data":{"k":"v"}}"#),
        );
    let e = Event::from_stanza(&el).unwrap().unwrap();
    assert_eq!(e.as_upstream().unwrap().data["k"], "v");
    // A gcm element in the wrong namespace only: missing payload.
    let el = Element::new("message", NS_CLIENT).with_child(
        Element::new("gcm", "").with_text(r#"{"message_type":"ack","message_id":"m"}"#),
    );
    assert_eq!(Event::from_stanza(&el), Err(ProtocolError::MissingPayload));
    let el = Element::new("message", NS_CLIENT).with_child(Element::new("body", NS_CLIENT));
    assert_eq!(Event::from_stanza(&el), Err(ProtocolError::MissingPayload));
    // Bad JSON inside a gcm payload is BadPayload.
    let el = gcm_message("oops");
    assert!(matches!(
        Event::from_stanza(&el),
        Err(ProtocolError::BadPayload { .. })
    ));
}

#[test]
fn non_message_stanzas_are_ignored() {
    let pong = Element::new("iq", NS_CLIENT)
        .with_attr("type", "result")
        .with_attr("id", "p7");
    assert_eq!(Event::from_stanza(&pong), Ok(None));
    let presence = Element::new("presence", NS_CLIENT);
    assert_eq!(Event::from_stanza(&presence), Ok(None));
    let foreign = Element::new("message", "jabber:server")
        .with_child(Element::new("gcm", NS_GCM).with_text("{}"));
    assert_eq!(Event::from_stanza(&foreign), Ok(None));
}

#[test]
fn stanza_error_400_with_echoed_payload() {
    let el = Element::new("message", NS_CLIENT)
        .with_attr("id", "m-42")
        .with_attr("type", "error")
        .with_attr("to", "123@gcm.googleapis.com/fcmxmpp5D0C9A1E")
        .with_child(
            Element::new("gcm", NS_GCM)
                .with_text(r#"{"to":"TOKEN","message_id":"m-42-json","time_to_live":600}"#),
        )
        .with_child(
            Element::new("error", NS_CLIENT)
                .with_attr("code", "400")
                .with_attr("type", "modify")
                .with_child(Element::new("bad-request", NS_STANZAS))
                .with_child(Element::new("text", NS_STANZAS).with_text(
                    "InvalidJson: JSON_PARSING_ERROR : Missing Required Field: message_id\n",
                )),
        );
    let e = Event::from_stanza(&el).unwrap().unwrap();
    let se = e.as_stanza_error().unwrap();
    assert_eq!(se.id.as_deref(), Some("m-42"));
    assert_eq!(se.message_id.as_deref(), Some("m-42-json"));
    assert_eq!(se.code, Some(400));
    assert_eq!(se.error_type.as_deref(), Some("modify"));
    assert_eq!(se.condition, "bad-request");
    assert_eq!(
        se.text.as_deref(),
        Some("InvalidJson: JSON_PARSING_ERROR : Missing Required Field: message_id\n")
    );
    assert_eq!(e.message_id(), Some("m-42-json"));
    assert_eq!(e.settled_message_id(), Some("m-42-json"));
    assert!(!e.needs_ack());
}

#[test]
fn stanza_error_406_and_sparse_forms() {
    // 406 for acking something not received: text before condition, no
    // echoed message_id (payload without one).
    let el = Element::new("message", NS_CLIENT)
        .with_attr("id", "a-9")
        .with_attr("type", "error")
        .with_child(Element::new("gcm", NS_GCM).with_text(r#"{"to":"D","message_type":"ack"}"#))
        .with_child(
            Element::new("error", NS_CLIENT)
                .with_attr("code", "406")
                .with_attr("type", "modify")
                .with_child(Element::new("text", NS_STANZAS).with_text("not acceptable"))
                .with_child(Element::new("x-app", "urn:app"))
                .with_child(Element::new("not-acceptable", NS_STANZAS)),
        );
    let se = Event::from_stanza(&el)
        .unwrap()
        .unwrap()
        .into_stanza_error()
        .unwrap();
    assert_eq!(se.code, Some(406));
    assert_eq!(se.condition, "not-acceptable");
    assert_eq!(se.text.as_deref(), Some("not acceptable"));
    assert_eq!(se.message_id, None);
    assert_eq!(se.target_message_id(), Some("a-9"));
    // No <error>, unparsable echo, no id: still a stanza error.
    let el = Element::new("message", NS_CLIENT)
        .with_attr("type", "error")
        .with_child(Element::new("gcm", NS_GCM).with_text("{broken"));
    let se = Event::from_stanza(&el)
        .unwrap()
        .unwrap()
        .into_stanza_error()
        .unwrap();
    assert_eq!(se.condition, "undefined-condition");
    assert_eq!(
        (se.id, se.message_id, se.code, se.text),
        (None, None, None, None)
    );
    // A non-numeric code is dropped, not an error.
    let el = Element::new("message", NS_CLIENT)
        .with_attr("type", "error")
        .with_child(
            Element::new("error", NS_CLIENT)
                .with_attr("code", "abc")
                .with_child(Element::new("bad-request", NS_STANZAS)),
        );
    let se = Event::from_stanza(&el)
        .unwrap()
        .unwrap()
        .into_stanza_error()
        .unwrap();
    assert_eq!((se.code, se.condition.as_str()), (None, "bad-request"));
}

#[test]
fn helpers() {
    let e = ev(r#"{"message_type":"ack","message_id":"m"}"#);
    assert!(e.is_ack() && !e.is_nack() && !e.is_upstream() && !e.is_receipt());
    assert!(!e.is_control() && !e.is_stanza_error() && !e.is_unknown());
    assert!(e.as_nack().is_none());
    let e = e.into_nack().unwrap_err();
    assert_eq!(e.into_ack().unwrap().message_id, "m");
    let e = ev(r#"{"message_type":"control","control_type":"CONNECTION_DRAINING"}"#);
    assert_eq!(
        e.clone().into_control().unwrap().kind,
        ControlKind::ConnectionDraining
    );
    assert!(e.into_upstream().is_err());
    assert!(RetryClass::Backoff.is_retryable());
    assert!(!RetryClass::Final.is_retryable());
    assert_eq!(
        ControlKind::from_type("CONNECTION_DRAINING").as_str(),
        "CONNECTION_DRAINING"
    );
}
