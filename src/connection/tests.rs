use super::*;
use crate::config::Keepalive;
use crate::error::Phase;
use crate::event::{AckRefusal, ControlKind, NackCode};
use crate::mock::{AtEnd, MockStream};
use crate::XmlError;

const HEADER: &str = "<stream:stream from=\"gcm.googleapis.com\" id=\"3F2A9C0D11B7E845\" version=\"1.0\" xmlns:stream=\"http://etherx.jabber.org/streams\" xmlns=\"jabber:client\">";
const SASL_FEATURES: &str = "<stream:features><mechanisms xmlns=\"urn:ietf:params:xml:ns:xmpp-sasl\"><mechanism>X-OAUTH2</mechanism><mechanism>X-GOOGLE-TOKEN</mechanism><mechanism>PLAIN</mechanism></mechanisms></stream:features>";
const SUCCESS: &str = "<success xmlns=\"urn:ietf:params:xml:ns:xmpp-sasl\"/>";
const BIND_FEATURES: &str = "<stream:features><bind xmlns=\"urn:ietf:params:xml:ns:xmpp-bind\"/><session xmlns=\"urn:ietf:params:xml:ns:xmpp-session\"/></stream:features>";
const BIND_RESULT: &str = "<iq type=\"result\" id=\"bind1\"><bind xmlns=\"urn:ietf:params:xml:ns:xmpp-bind\"><jid>123456789012@gcm.googleapis.com/fcmxmpp5D0C9A1E</jid></bind></iq>";
const SESSION_RESULT: &str = "<iq type=\"result\" id=\"sess1\"/>";
const KEY: &str = "AIzaSy-very-secret-key";

fn config() -> Config {
    Config::new("123456789012", KEY).handshake_timeout(Some(Duration::from_millis(200)))
}

fn server_script() -> String {
    [
        HEADER,
        SASL_FEATURES,
        SUCCESS,
        HEADER,
        BIND_FEATURES,
        BIND_RESULT,
        SESSION_RESULT,
    ]
    .concat()
}

fn connected(after: &str) -> Connection<MockStream> {
    let mock = MockStream::new(server_script() + after).at_end(AtEnd::Silent);
    Connection::from_stream(mock, &config()).expect("handshake")
}

fn ccs(json: &str) -> String {
    format!("<message><data:gcm xmlns:data=\"google:mobile:data\">{json}</data:gcm></message>")
}

#[test]
fn handshake_writes_exact_bytes() {
    let conn = connected("");
    assert_eq!(
        conn.jid(),
        "123456789012@gcm.googleapis.com/fcmxmpp5D0C9A1E"
    );
    let header = "<stream:stream to=\"gcm.googleapis.com\" version=\"1.0\" xmlns=\"jabber:client\" xmlns:stream=\"http://etherx.jabber.org/streams\">";
    let expected = [
        header,
        "<auth xmlns=\"urn:ietf:params:xml:ns:xmpp-sasl\" mechanism=\"PLAIN\">ADEyMzQ1Njc4OTAxMkBnY20uZ29vZ2xlYXBpcy5jb20AQUl6YVN5LXZlcnktc2VjcmV0LWtleQ==</auth>",
        header,
        "<iq type=\"set\" id=\"bind1\"><bind xmlns=\"urn:ietf:params:xml:ns:xmpp-bind\"><resource>fcmxmpp</resource></bind></iq>",
        "<iq type=\"set\" id=\"sess1\"><session xmlns=\"urn:ietf:params:xml:ns:xmpp-session\"/></iq>",
    ]
    .concat();
    assert_eq!(conn.get_ref().written_str(), expected);
    // One write per handshake step, never one per fragment.
    assert_eq!(conn.get_ref().writes, 5);
}

#[test]
fn stanzas_before_the_bind_and_session_answers_are_kept() {
    let up = "<message type=\"normal\"><gcm xmlns=\"google:mobile:data\">{\"message_id\":\"up-early\",\"from\":\"DEV\",\"data\":{}}</gcm></message>";
    let rc = "<message type=\"normal\"><gcm xmlns=\"google:mobile:data\">{\"message_type\":\"receipt\",\"message_id\":\"dr2:m\",\"from\":\"gcm.googleapis.com\",\"data\":{\"message_status\":\"MESSAGE_SENT_TO_DEVICE\",\"original_message_id\":\"m\"}}</gcm></message>";
    let script = [
        HEADER,
        SASL_FEATURES,
        SUCCESS,
        HEADER,
        BIND_FEATURES,
        up,
        BIND_RESULT,
        rc,
        SESSION_RESULT,
    ]
    .concat();
    let mut conn =
        Connection::from_stream(MockStream::new(script).at_end(AtEnd::Silent), &config()).unwrap();
    let a = conn
        .recv_event(Some(Duration::from_millis(50)))
        .unwrap()
        .unwrap();
    assert_eq!(a.message_id(), Some("up-early"));
    let b = conn
        .recv_event(Some(Duration::from_millis(50)))
        .unwrap()
        .unwrap();
    assert_eq!(b.message_id(), Some("dr2:m"));
}

#[test]
fn handshake_survives_one_byte_reads() {
    let mock = MockStream::new(server_script())
        .chunk(1)
        .at_end(AtEnd::Silent);
    let conn = Connection::from_stream(mock, &config()).unwrap();
    assert!(conn.jid().ends_with("/fcmxmpp5D0C9A1E"));
}

#[test]
fn handshake_without_session_feature() {
    let features =
        "<stream:features><bind xmlns=\"urn:ietf:params:xml:ns:xmpp-bind\"/></stream:features>";
    let script = [
        HEADER,
        SASL_FEATURES,
        SUCCESS,
        HEADER,
        features,
        BIND_RESULT,
    ]
    .concat();
    let conn =
        Connection::from_stream(MockStream::new(script).at_end(AtEnd::Silent), &config()).unwrap();
    assert!(!conn.get_ref().written_str().contains("sess1"));
}

#[test]
fn prefixed_features_are_accepted() {
    let features = SASL_FEATURES
        .replace("stream:features", "str:features")
        .replacen(
            "<str:features>",
            "<str:features xmlns:str=\"http://etherx.jabber.org/streams\">",
            1,
        );
    let script = [
        HEADER,
        &features,
        SUCCESS,
        HEADER,
        BIND_FEATURES,
        BIND_RESULT,
        SESSION_RESULT,
    ]
    .concat();
    Connection::from_stream(MockStream::new(script).at_end(AtEnd::Silent), &config()).unwrap();
}

#[test]
fn auth_failure_carries_condition_not_key() {
    let failure = "<failure xmlns=\"urn:ietf:params:xml:ns:xmpp-sasl\"><not-authorized/></failure>";
    let script = [HEADER, SASL_FEATURES, failure].concat();
    let err = Connection::from_stream(MockStream::new(script), &config()).unwrap_err();
    match &err {
        Error::AuthFailed { condition } => assert_eq!(condition, "not-authorized"),
        other => panic!("{other:?}"),
    }
    assert!(!err.is_retryable());
    assert!(!format!("{err} {err:?}").contains(KEY));
}

#[test]
fn auth_then_hang_up_is_auth_failure() {
    let script = [HEADER, SASL_FEATURES].concat();
    let err = Connection::from_stream(MockStream::new(script), &config()).unwrap_err();
    assert!(
        matches!(&err, Error::AuthFailed { condition } if condition == "connection-closed"),
        "{err:?}"
    );
}

#[test]
fn the_key_is_never_sent_in_the_clear() {
    let mut mock = MockStream::new(server_script());
    mock.encrypted = false;
    let err = Connection::from_stream(mock, &config()).unwrap_err();
    assert!(
        matches!(&err, Error::Tls(t) if t.kind() == crate::TlsErrorKind::NotTls),
        "{err:?}"
    );
}

#[test]
fn no_plain_mechanism() {
    let features = "<stream:features><mechanisms xmlns=\"urn:ietf:params:xml:ns:xmpp-sasl\"><mechanism>X-OAUTH2</mechanism></mechanisms></stream:features>";
    let err = Connection::from_stream(MockStream::new([HEADER, features].concat()), &config())
        .unwrap_err();
    assert!(
        matches!(err, Error::Protocol(crate::ProtocolError::NoPlainMechanism)),
        "{err:?}"
    );
}

#[test]
fn stream_error_during_handshake() {
    let se = "<stream:error><host-unknown xmlns=\"urn:ietf:params:xml:ns:xmpp-streams\"/><text xmlns=\"urn:ietf:params:xml:ns:xmpp-streams\">no such host</text></stream:error>";
    let err =
        Connection::from_stream(MockStream::new([HEADER, se].concat()), &config()).unwrap_err();
    match err {
        Error::StreamError { condition, text } => {
            assert_eq!(condition, "host-unknown");
            assert_eq!(text.as_deref(), Some("no such host"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn bind_error() {
    let bind_err = "<iq type=\"error\" id=\"bind1\"><error type=\"cancel\"><conflict xmlns=\"urn:ietf:params:xml:ns:xmpp-stanzas\"/></error></iq>";
    let script = [
        HEADER,
        SASL_FEATURES,
        SUCCESS,
        HEADER,
        BIND_FEATURES,
        bind_err,
    ]
    .concat();
    let err = Connection::from_stream(MockStream::new(script), &config()).unwrap_err();
    assert!(
        matches!(&err, Error::Protocol(crate::ProtocolError::BindFailed { condition }) if condition == "conflict"),
        "{err:?}"
    );
}

#[test]
fn silent_server_times_out_in_handshake() {
    let mock = MockStream::new(HEADER).at_end(AtEnd::Silent);
    let t = Instant::now();
    let err = Connection::from_stream(mock, &config()).unwrap_err();
    assert!(matches!(err, Error::Timeout(Phase::Handshake)), "{err:?}");
    assert!(t.elapsed() < Duration::from_secs(5));
}

#[test]
fn server_close_after_connect_is_closed() {
    let mut conn = connected("</stream:stream>");
    let err = conn
        .recv_event(Some(Duration::from_millis(50)))
        .unwrap_err();
    assert!(matches!(err, Error::Closed), "{err:?}");
    assert!(conn.is_closed());
    assert!(matches!(conn.send(&Message::to("t")), Err(Error::Closed)));
}

#[test]
fn eof_mid_stanza_is_truncated() {
    let mock = MockStream::new(server_script() + "<message><data:gcm xmlns:data=\"google:mob");
    let mut conn = Connection::from_stream(mock, &config()).unwrap();
    let err = conn
        .recv_event(Some(Duration::from_millis(50)))
        .unwrap_err();
    assert!(matches!(err, Error::Xml(XmlError::Truncated)), "{err:?}");
    assert!(err.is_closed());
}

#[test]
fn acks_nacks_and_errors_free_the_window() {
    let mut conn = connected("");
    let cfg_max = 100;
    assert_eq!(conn.window_free(), cfg_max);
    let a = conn.send(&Message::to("tok-a").message_id("m-1")).unwrap();
    let b = conn.send(&Message::to("tok-b").message_id("m-2")).unwrap();
    let c = conn.send(&Message::to("tok-c").message_id("m-3")).unwrap();
    assert_eq!((a.as_str(), b.as_str(), c.as_str()), ("m-1", "m-2", "m-3"));
    assert_eq!(conn.pending(), 3);
    let written = conn.get_ref().written_str();
    assert!(written.ends_with("<message id=\"m-3\"><gcm xmlns=\"google:mobile:data\">{\"to\":\"tok-c\",\"message_id\":\"m-3\"}</gcm></message>"), "{written}");

    conn.get_mut().push_input(ccs(
        r#"{"message_type":"ack","message_id":"m-1","from":"tok-a"}"#,
    ));
    conn.get_mut().push_input("  \n ");
    conn.get_mut().push_input(ccs(r#"{"message_type":"nack","message_id":"m-2","from":"tok-b","error":"DEVICE_UNREGISTERED","error_description":"gone"}"#));
    conn.get_mut().push_input("<message id=\"m-3\" type=\"error\"><gcm xmlns=\"google:mobile:data\">{\"to\":\"tok-c\"}</gcm><error code=\"400\" type=\"modify\"><bad-request xmlns=\"urn:ietf:params:xml:ns:xmpp-stanzas\"/></error></message>");
    let e1 = conn
        .recv_event(Some(Duration::from_millis(100)))
        .unwrap()
        .unwrap();
    assert!(
        matches!(&e1, Event::Ack(a) if a.message_id == "m-1"),
        "{e1:?}"
    );
    assert_eq!(conn.pending(), 2);
    let e2 = conn
        .recv_event(Some(Duration::from_millis(100)))
        .unwrap()
        .unwrap();
    assert!(
        matches!(&e2, Event::Nack(n) if n.code == NackCode::DeviceUnregistered),
        "{e2:?}"
    );
    let e3 = conn
        .recv_event(Some(Duration::from_millis(100)))
        .unwrap()
        .unwrap();
    assert!(
        matches!(&e3, Event::StanzaError(s) if s.condition == "bad-request"),
        "{e3:?}"
    );
    assert_eq!(conn.pending(), 0);
    // Duplicate or unknown acks never push the count below zero.
    conn.get_mut().push_input(ccs(
        r#"{"message_type":"ack","message_id":"m-1","from":"tok-a"}"#,
    ));
    conn.recv_event(Some(Duration::from_millis(100)))
        .unwrap()
        .unwrap();
    assert_eq!(conn.pending(), 0);
    assert_eq!(
        conn.recv_event(Some(Duration::from_millis(10))).unwrap(),
        None
    );
}

#[test]
fn window_full_sends_nothing() {
    let mock = MockStream::new(server_script()).at_end(AtEnd::Silent);
    let mut conn = Connection::from_stream(mock, &config().max_pending(2)).unwrap();
    conn.send(&Message::to("t")).unwrap();
    conn.send(&Message::to("t")).unwrap();
    let before = conn.get_ref().written.len();
    assert!(matches!(
        conn.send(&Message::to("t")),
        Err(Error::WindowFull)
    ));
    assert_eq!(conn.get_ref().written.len(), before);
}

#[test]
fn invalid_message_sends_nothing() {
    let mut conn = connected("");
    let before = conn.get_ref().written.len();
    let err = conn
        .send(&Message::to("t").time_to_live(2_419_201))
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidMessage(m) if m.field == "time_to_live"),
        "{err:?}"
    );
    assert_eq!(conn.get_ref().written.len(), before);
    assert_eq!(conn.pending(), 0);
}

#[test]
fn upstream_and_receipt_acks_are_exact() {
    let mut conn = connected(
        &("<message to=\"123456789012@gcm.googleapis.com\" from=\"devices@gcm.googleapis.com\" type=\"normal\"><gcm xmlns=\"google:mobile:data\">{\"category\":\"com.example\",\"data\":{\"k\":\"a &amp; b\"},\"message_id\":\"up-1\",\"from\":\"DEV\"}</gcm></message>".to_string()
            + "<message to=\"123456789012@gcm.googleapis.com\" from=\"devices@gcm.googleapis.com\" type=\"normal\"><gcm xmlns=\"google:mobile:data\">{\"message_type\":\"receipt\",\"message_id\":\"dr2:m-9\",\"from\":\"gcm.googleapis.com\",\"category\":\"com.example\",\"data\":{\"message_status\":\"MESSAGE_SENT_TO_DEVICE\",\"original_message_id\":\"m-9\",\"device_registration_id\":\"DEV\",\"message_sent_timestamp\":\"1430277821658\"}}</gcm></message>"),
    );
    let before = conn.get_ref().written.len();
    let up = conn
        .recv_event(Some(Duration::from_millis(100)))
        .unwrap()
        .unwrap();
    match &up {
        Event::Upstream(u) => assert_eq!(u.data.get("k").map(String::as_str), Some("a & b")),
        other => panic!("{other:?}"),
    }
    conn.ack(&up).unwrap();
    let rc = conn
        .recv_event(Some(Duration::from_millis(100)))
        .unwrap()
        .unwrap();
    assert!(matches!(&rc, Event::Receipt(r) if r.original_message_id == "m-9"));
    conn.ack(&rc).unwrap();
    let written = &conn.get_ref().written_str()[before..];
    assert_eq!(
        written,
        "<message id=\"fx-ack-1\"><gcm xmlns=\"google:mobile:data\">{\"to\":\"DEV\",\"message_id\":\"up-1\",\"message_type\":\"ack\"}</gcm></message>\
         <message id=\"fx-ack-2\"><gcm xmlns=\"google:mobile:data\">{\"to\":\"gcm.googleapis.com\",\"message_id\":\"dr2:m-9\",\"message_type\":\"ack\"}</gcm></message>"
    );
}

#[test]
fn acks_ignore_the_window() {
    let up = "<message type=\"normal\"><gcm xmlns=\"google:mobile:data\">{\"message_id\":\"up-1\",\"from\":\"DEV\",\"data\":{}}</gcm></message>";
    let mock = MockStream::new(server_script() + up).at_end(AtEnd::Silent);
    let mut conn = Connection::from_stream(mock, &config().max_pending(1)).unwrap();
    conn.send(&Message::to("t")).unwrap();
    let ev = conn
        .recv_event(Some(Duration::from_millis(100)))
        .unwrap()
        .unwrap();
    conn.ack(&ev).unwrap();
    assert!(conn
        .get_ref()
        .written_str()
        .ends_with("\"message_type\":\"ack\"}</gcm></message>"));
}

#[test]
fn draining_by_control_and_by_nack() {
    let mut conn = connected(&ccs(
        r#"{"message_type":"control","control_type":"CONNECTION_DRAINING"}"#,
    ));
    assert!(!conn.is_draining());
    let ev = conn
        .recv_event(Some(Duration::from_millis(100)))
        .unwrap()
        .unwrap();
    assert!(matches!(&ev, Event::Control(c) if c.kind == ControlKind::ConnectionDraining));
    assert!(conn.is_draining());

    let mut conn = connected(&ccs(
        r#"{"message_type":"nack","message_id":"x","error":"CONNECTION_DRAINING"}"#,
    ));
    conn.recv_event(Some(Duration::from_millis(100)))
        .unwrap()
        .unwrap();
    assert!(conn.is_draining());
}

#[test]
fn server_ping_is_answered_and_pong_consumed() {
    let mut conn = connected("<iq from=\"gcm.googleapis.com\" id=\"s1\" type=\"get\"><ping xmlns=\"urn:xmpp:ping\"/></iq>");
    assert_eq!(
        conn.recv_event(Some(Duration::from_millis(30))).unwrap(),
        None
    );
    // The pong is flushed by the next I/O call.
    conn.flush().unwrap();
    assert!(conn
        .get_ref()
        .written_str()
        .ends_with("<iq type=\"result\" id=\"s1\" to=\"gcm.googleapis.com\"/>"));

    conn.ping().unwrap();
    assert!(conn.get_ref().written_str().ends_with("<iq to=\"gcm.googleapis.com\" id=\"ping1\" type=\"get\"><ping xmlns=\"urn:xmpp:ping\"/></iq>"));
    conn.get_mut()
        .push_input("<iq from=\"gcm.googleapis.com\" id=\"ping1\" type=\"result\"/>");
    assert_eq!(
        conn.recv_event(Some(Duration::from_millis(30))).unwrap(),
        None
    );
}

/// The driver sleeps until the session's next timer and acts on it (the
/// timers themselves are tested on simulated time in `session::tests`).
#[test]
fn unanswered_ping_declares_the_connection_dead() {
    let ka = Keepalive {
        whitespace_after: None,
        ping_after: Some(Duration::from_millis(20)),
        dead_after: Duration::from_millis(40),
    };
    let mock = MockStream::new(server_script()).at_end(AtEnd::Silent);
    let mut conn = Connection::from_stream(mock, &config().keepalive(ka)).unwrap();
    let t = Instant::now();
    let err = conn.recv_event(None).unwrap_err();
    assert!(matches!(err, Error::Timeout(Phase::Read)), "{err:?}");
    assert!(t.elapsed() < Duration::from_secs(2));
    assert!(conn
        .get_ref()
        .written_str()
        .contains("<ping xmlns=\"urn:xmpp:ping\"/>"));
    assert!(conn.is_closed());
}

#[test]
fn try_recv_does_not_wait() {
    let mut conn = connected("");
    let t = Instant::now();
    assert_eq!(conn.try_recv_event().unwrap(), None);
    assert!(t.elapsed() < Duration::from_millis(50));
    assert!(conn.get_ref().nonblocking, "a zero wait reads nonblocking");
    conn.get_mut().push_input(ccs(
        r#"{"message_type":"control","control_type":"SOMETHING_NEW"}"#,
    ));
    let ev = conn.try_recv_event().unwrap().unwrap();
    assert!(
        matches!(ev, Event::Control(c) if c.kind == ControlKind::Other("SOMETHING_NEW".into()))
    );
    // Writes switch the socket back to blocking.
    conn.send(&Message::to("t")).unwrap();
    assert!(!conn.get_ref().nonblocking);
}

#[test]
fn bad_payload_is_not_fatal() {
    let mut conn = connected(
        &("<message><other xmlns=\"x\"/></message>".to_string()
            + &ccs("[1,2]")
            + &ccs(r#"{"message_type":"ack","message_id":"m-1"}"#)),
    );
    let e = conn
        .recv_event(Some(Duration::from_millis(50)))
        .unwrap_err();
    assert!(
        matches!(e, Error::Protocol(crate::ProtocolError::MissingPayload)),
        "{e:?}"
    );
    let e = conn
        .recv_event(Some(Duration::from_millis(50)))
        .unwrap_err();
    assert!(
        matches!(e, Error::Protocol(crate::ProtocolError::BadPayload { .. })),
        "{e:?}"
    );
    assert!(!conn.is_closed());
    let ev = conn
        .recv_event(Some(Duration::from_millis(50)))
        .unwrap()
        .unwrap();
    assert!(ev.is_ack());
}

#[test]
fn malformed_xml_closes() {
    let mut conn = connected("<message><a></b></message>");
    let e = conn
        .recv_event(Some(Duration::from_millis(50)))
        .unwrap_err();
    assert!(matches!(e, Error::Xml(_)), "{e:?}");
    assert!(conn.is_closed());
}

/// A connection that sent `m-1` and has its ack waiting, unread.
fn sent_and_acked() -> Connection<MockStream> {
    let mut conn = connected("");
    conn.send(&Message::to("t").message_id("m-1")).unwrap();
    conn.get_mut().push_input(ccs(
        r#"{"message_type":"ack","message_id":"m-1","from":"t"}"#,
    ));
    conn
}

#[test]
fn close_returns_late_events() {
    let mut conn = sent_and_acked();
    conn.get_mut().push_input("</stream:stream>");
    let events = conn.close().unwrap();
    assert_eq!(events.len(), 1);
    assert!(events[0].is_ack());
}

#[test]
fn close_past_its_deadline_still_returns_what_already_arrived() {
    // At shutdown the worker closes with no time left: the answers already
    // here are still read (else their messages come back as unanswered and
    // get sent twice), only the wait for more is skipped.
    let mut conn = sent_and_acked();
    conn.limit_close_timeout(Duration::ZERO);
    let t = Instant::now();
    let events = conn.close().unwrap();
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(events[0].is_ack());
}

#[test]
fn failed_write_poisons_the_connection() {
    let mut conn = connected("");
    let at = conn.get_ref().written.len();
    conn.get_mut().fail_write_after = Some((at, std::io::ErrorKind::WouldBlock));
    let err = conn.send(&Message::to("t")).unwrap_err();
    assert!(matches!(err, Error::Timeout(Phase::Write)), "{err:?}");
    assert!(conn.is_closed());
    assert!(matches!(conn.send(&Message::to("t")), Err(Error::Closed)));
}

#[test]
fn json_is_escaped_in_the_stanza() {
    let mut conn = connected("");
    conn.send(&Message::to("t").message_id("m<1>").data("k", "a & b < c"))
        .unwrap();
    let w = conn.get_ref().written_str();
    assert!(w.contains("<message id=\"m&lt;1&gt;\">"), "{w}");
    assert!(w.contains("\"k\":\"a &amp; b &lt; c\""), "{w}");
}

#[test]
fn an_error_about_an_ack_never_settles_a_downstream_message() {
    // The device's upstream id and our downstream id are both "u-1".
    let up = "<message type=\"normal\"><gcm xmlns=\"google:mobile:data\">{\"message_id\":\"u-1\",\"from\":\"DEV\",\"data\":{}}</gcm></message>";
    let mut conn = connected(up);
    conn.send(&Message::to("tok").message_id("u-1")).unwrap();
    let ev = conn
        .recv_event(Some(Duration::from_millis(50)))
        .unwrap()
        .unwrap();
    assert!(ev.is_upstream());
    conn.ack(&ev).unwrap();
    assert!(conn
        .get_ref()
        .written_str()
        .contains("<message id=\"fx-ack-1\">"));
    assert_eq!(conn.pending(), 1);
    let echo = r#"{"to":"DEV","message_id":"u-1","message_type":"ack"}"#;
    let error = "<error code=\"406\" type=\"cancel\"><not-acceptable xmlns=\"urn:ietf:params:xml:ns:xmpp-stanzas\"/></error>";
    // By the echoed stanza id; without one, by the echoed ack payload; and a BAD_ACK nack.
    conn.get_mut().push_input(format!(
        "<message id=\"fx-ack-1\" type=\"error\"><gcm xmlns=\"google:mobile:data\">{echo}</gcm>{error}</message>"
    ));
    conn.get_mut().push_input(format!(
        "<message type=\"error\"><gcm xmlns=\"google:mobile:data\">{echo}</gcm>{error}</message>"
    ));
    conn.get_mut().push_input(ccs(
        r#"{"message_type":"nack","message_id":"u-1","from":"DEV","error":"BAD_ACK"}"#,
    ));
    for want_nack in [false, false, true] {
        let ev = conn
            .recv_event(Some(Duration::from_millis(50)))
            .unwrap()
            .unwrap();
        let refused = ev.as_ack_refused().unwrap_or_else(|| panic!("{ev:?}"));
        assert_eq!(refused.message_id.as_deref(), Some("u-1"));
        assert_eq!(
            matches!(refused.reason, AckRefusal::Nack(_)),
            want_nack,
            "{ev:?}"
        );
        assert_eq!(ev.settled_message_id(), None);
        assert_eq!(conn.pending(), 1, "{ev:?} touched the window");
    }
    // The downstream message's own ack still settles it.
    conn.get_mut().push_input(ccs(
        r#"{"message_type":"ack","message_id":"u-1","from":"tok"}"#,
    ));
    assert!(conn
        .recv_event(Some(Duration::from_millis(50)))
        .unwrap()
        .unwrap()
        .is_ack());
    assert_eq!(conn.pending(), 0);
}

#[test]
fn a_draining_connection_refuses_sends_but_still_acks() {
    let up = "<message type=\"normal\"><gcm xmlns=\"google:mobile:data\">{\"message_id\":\"up-1\",\"from\":\"DEV\",\"data\":{}}</gcm></message>";
    let mut conn = connected(
        &(ccs(r#"{"message_type":"control","control_type":"CONNECTION_DRAINING"}"#) + up),
    );
    conn.recv_event(Some(Duration::from_millis(50)))
        .unwrap()
        .unwrap();
    assert!(conn.is_draining());
    let before = conn.get_ref().written.len();
    let buffered = conn.send_buffered(&Message::to("t"));
    assert!(matches!(buffered, Err(Error::Draining)), "{buffered:?}");
    let sent = conn.send(&Message::to("t"));
    assert!(matches!(sent, Err(Error::Draining)), "{sent:?}");
    conn.flush().unwrap();
    assert_eq!(
        conn.get_ref().written.len(),
        before,
        "a refused message was written"
    );
    assert_eq!(conn.pending(), 0);
    let ev = conn
        .recv_event(Some(Duration::from_millis(50)))
        .unwrap()
        .unwrap();
    conn.ack(&ev).unwrap();
    assert!(conn.get_ref().written_str()[before..].contains("\"message_type\":\"ack\""));
}

#[test]
fn driven_as_a_worker_link_the_connection_keeps_no_window_of_its_own() {
    use crate::client::Link;
    // The worker's engine owns the window: past the connection's own
    // `max_pending` the link still writes (the engine never asks that, but
    // if the two ever disagreed, a refused write would cost the connection).
    let mock = MockStream::new(server_script()).at_end(AtEnd::Silent);
    let mut conn = Connection::from_stream(mock, &config().max_pending(2)).unwrap();
    for i in 0..3 {
        let m = Message::to("tok").message_id(format!("m-{i}"));
        Link::send_buffered(&mut conn, &m).unwrap();
    }
    Link::flush(&mut conn).unwrap();
    assert_eq!(conn.pending(), 0);
    let w = conn.get_ref().written_str();
    assert!(w.contains("<message id=\"m-2\">"), "{w}");

    // Answers are decoded exactly as before, known ids or not.
    conn.get_mut().push_input(ccs(
        r#"{"message_type":"ack","message_id":"m-0","from":"tok"}"#,
    ));
    conn.get_mut().push_input(ccs(
        r#"{"message_type":"nack","message_id":"m-1","from":"tok","error":"SERVICE_UNAVAILABLE"}"#,
    ));
    conn.get_mut().push_input(ccs(
        r#"{"message_type":"ack","message_id":"never-sent","from":"tok"}"#,
    ));
    conn.get_mut().push_input("<message id=\"m-2\" type=\"error\"><gcm xmlns=\"google:mobile:data\">{\"to\":\"tok\"}</gcm><error code=\"400\" type=\"modify\"><bad-request xmlns=\"urn:ietf:params:xml:ns:xmpp-stanzas\"/></error></message>");
    let mut got = Vec::new();
    while let Some(ev) = Link::recv_event(&mut conn, Duration::from_millis(50)).unwrap() {
        got.push(ev);
    }
    assert_eq!(got.len(), 4, "{got:?}");
    assert!(
        matches!(&got[0], Event::Ack(a) if a.message_id == "m-0" && a.from.as_deref() == Some("tok"))
    );
    assert!(
        matches!(&got[1], Event::Nack(n) if n.message_id == "m-1" && n.code == NackCode::ServiceUnavailable)
    );
    assert!(matches!(&got[2], Event::Ack(a) if a.message_id == "never-sent"));
    assert!(matches!(&got[3], Event::StanzaError(s) if s.id.as_deref() == Some("m-2")));
    assert_eq!(conn.pending(), 0);

    // A drain NACK still marks it draining, and a draining connection
    // still refuses new messages.
    conn.get_mut().push_input(ccs(
        r#"{"message_type":"nack","message_id":"m-9","error":"CONNECTION_DRAINING"}"#,
    ));
    let ev = Link::recv_event(&mut conn, Duration::from_millis(50)).unwrap();
    assert!(matches!(ev, Some(Event::Nack(n)) if n.code == NackCode::ConnectionDraining));
    assert!(conn.is_draining());
    assert!(matches!(
        Link::send_buffered(&mut conn, &Message::to("tok").message_id("m-10")),
        Err(Error::Draining)
    ));
}

/// Every duration a user can configure, however large, is a deadline that
/// saturates: `recv_event` and `try_recv_event` run the timers and must not
/// overflow `Instant + Duration` (they panicked with `Duration::MAX`).
#[test]
fn huge_timeouts_and_keepalives_never_panic() {
    for d in [Duration::MAX, Duration::from_secs(u64::MAX / 2)] {
        let ka = |whitespace, ping| Keepalive {
            whitespace_after: whitespace,
            ping_after: ping,
            dead_after: d,
        };
        let configs = [
            config().read_timeout(Some(d)),
            config().keepalive(ka(Some(d), None)),
            config().keepalive(ka(None, Some(d))),
            // A ping goes out at once and stays unanswered: `dead_after` runs.
            config().keepalive(ka(None, Some(Duration::ZERO))),
            config()
                .read_timeout(Some(d))
                .write_timeout(Some(d))
                .close_timeout(Some(d))
                .handshake_timeout(Some(d))
                .keepalive(ka(Some(d), Some(d))),
        ];
        for (i, cfg) in configs.iter().enumerate() {
            let mock = MockStream::new(server_script()).at_end(AtEnd::Silent);
            let mut conn = Connection::from_stream(mock, cfg).expect("handshake");
            assert_eq!(conn.try_recv_event().unwrap(), None, "config {i}");
            assert!(conn.next_wake().is_some(), "config {i}: a timer is set");
            let t = Instant::now();
            assert_eq!(
                conn.recv_event(Some(Duration::from_millis(20))).unwrap(),
                None,
                "config {i}"
            );
            assert!(t.elapsed() < Duration::from_secs(2), "config {i}");
            conn.send(&Message::to("t")).unwrap();
            conn.tick().unwrap();
            if i == 3 {
                assert!(conn.get_ref().written_str().contains("urn:xmpp:ping"));
            }
            // A huge close timeout waits for the server's close tag, which comes.
            conn.get_mut().push_input("</stream:stream>");
            conn.close().unwrap();
        }
    }
}
