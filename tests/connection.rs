//! The single `Connection` over the real TLS path, against the emulator on 127.0.0.1.
//! Every test is bounded by a watchdog and every wait has a deadline.
#![cfg(feature = "emulator")]

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::watchdog;
use fcm_xmpp::emulator::ConnId;
use fcm_xmpp::{
    Config, Connection, ControlKind, Emulator, Error, Event, Message, NackCode, ServerKey,
    TlsErrorKind, TlsTcpStream,
};

const SENDER: &str = "123456789012";
const KEY: &str = "connection-test-key-s3cr3t";
/// Generous bound for one answer from the emulator: a hang detector, not a speed target.
const WAIT: Duration = Duration::from_secs(5);

fn emulator() -> common::Judged {
    common::init_logging();
    common::start(SENDER, KEY)
}

fn config(emu: &Emulator) -> Config {
    emu.client_config()
        .handshake_timeout(Some(Duration::from_secs(5)))
        .close_timeout(Some(Duration::from_secs(2)))
}

fn connect(emu: &Emulator) -> (Connection<TlsTcpStream>, ConnId) {
    let conn = Connection::connect(&config(emu)).expect("connect to the emulator");
    // The emulator lists a connection once it has bound; connect returns after that.
    assert!(emu.wait_for_connections(1, WAIT));
    let id = *emu.connections().last().unwrap();
    (conn, id)
}

/// The next event, which must arrive within `WAIT`.
fn next(conn: &mut Connection<TlsTcpStream>) -> Event {
    match conn.recv_event(Some(WAIT)) {
        Ok(Some(ev)) => ev,
        Ok(None) => panic!("no event within {WAIT:?}"),
        Err(e) => panic!("recv_event: {e:?}"),
    }
}

#[test]
fn handshake_binds_a_full_jid() {
    let _w = watchdog("handshake", Duration::from_secs(20));
    let emu = emulator();
    let (conn, id) = connect(&emu);
    let jid = conn.jid();
    let suffix = jid
        .strip_prefix(&format!("{SENDER}@gcm.googleapis.com/fcmxmpp"))
        .unwrap_or_else(|| panic!("unexpected jid {jid}"));
    assert_eq!(suffix.len(), 8, "{jid}");
    assert!(
        suffix
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b)),
        "{jid}"
    );
    assert_eq!(emu.ledger().conn(id).unwrap().jid, jid);
    assert_eq!(conn.pending(), 0);
    assert!(!conn.is_draining());
    assert!(!conn.is_closed());
    assert!(conn.close().unwrap().is_empty());
}

#[test]
fn wrong_key_is_auth_failed_and_never_shows_the_key() {
    let _w = watchdog("wrong_key", Duration::from_secs(20));
    let emu = emulator();
    let wrong = "wrong-key-0123456789-SECRET";
    let mut cfg = config(&emu);
    cfg.server_key = ServerKey::new(wrong);
    let t = Instant::now();
    let err = Connection::connect(&cfg).unwrap_err();
    assert!(t.elapsed() < WAIT);
    assert!(
        matches!(&err, Error::AuthFailed { condition } if condition == "not-authorized"),
        "{err:?}"
    );
    assert!(!err.is_retryable());
    let shown = format!("{err} {err:?} {cfg:?}");
    assert!(!shown.contains(wrong), "{shown}");
    assert!(!shown.contains(KEY), "{shown}");
    assert_eq!(emu.ledger().auth_failures, 1);
}

#[test]
fn acks_nacks_and_a_stanza_error() {
    let _w = watchdog("acks_nacks", Duration::from_secs(20));
    let emu = emulator();
    emu.reject_token("gone-token", NackCode::DeviceUnregistered);
    emu.reject_token("bad-token", NackCode::BadRegistration);
    let (mut conn, _) = connect(&emu);

    let ok = conn
        .send(&Message::to("good-token").message_id("m-ok"))
        .unwrap();
    let gone = conn
        .send(&Message::to("gone-token").message_id("m-gone"))
        .unwrap();
    let bad = conn
        .send(&Message::to("bad-token").message_id("m-bad"))
        .unwrap();
    assert_eq!(conn.pending(), 3);

    let ev = next(&mut conn);
    assert!(matches!(&ev, Event::Ack(a) if a.message_id == ok), "{ev:?}");
    let ev = next(&mut conn);
    assert!(
        matches!(&ev, Event::Nack(n) if n.message_id == gone && n.code == NackCode::DeviceUnregistered),
        "{ev:?}"
    );
    let ev = next(&mut conn);
    assert!(
        matches!(&ev, Event::Nack(n) if n.message_id == bad && n.code == NackCode::BadRegistration),
        "{ev:?}"
    );
    assert_eq!(conn.pending(), 0);

    // A message without message_id can only be written by hand: the builder always sets one.
    conn.get_mut()
        .write_all(b"<message id=\"raw-1\"><gcm xmlns=\"google:mobile:data\">{\"to\":\"t\"}</gcm></message>")
        .unwrap();
    conn.get_mut().flush().unwrap();
    let ev = next(&mut conn);
    match &ev {
        Event::StanzaError(e) => {
            assert_eq!(e.code, Some(400));
            assert_eq!(e.condition, "bad-request");
            assert_eq!(e.id.as_deref(), Some("raw-1"));
        }
        other => panic!("{other:?}"),
    }
    // The connection is still usable after a stanza error.
    let again = conn.send(&Message::to("good-token")).unwrap();
    let ev = next(&mut conn);
    assert!(
        matches!(&ev, Event::Ack(a) if a.message_id == again),
        "{ev:?}"
    );
    assert_eq!(emu.ledger().stanza_errors(), 1);
}

#[test]
fn receipt_follows_the_ack_and_is_acked() {
    let _w = watchdog("receipt", Duration::from_secs(20));
    let emu = emulator();
    let (mut conn, id) = connect(&emu);
    let mid = conn
        .send(&Message::to("dev-1").delivery_receipt_requested(true))
        .unwrap();
    let ev = next(&mut conn);
    assert!(
        matches!(&ev, Event::Ack(a) if a.message_id == mid),
        "{ev:?}"
    );
    let ev = next(&mut conn);
    let receipt = match &ev {
        Event::Receipt(r) => r.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(receipt.original_message_id, mid);
    assert_eq!(receipt.message_id, format!("dr2:{mid}"));
    assert!(ev.needs_ack());
    conn.ack(&ev).unwrap();
    assert!(emu.wait_until(WAIT, |l| {
        l.conn(id).unwrap().receipts_acked == [receipt.message_id.clone()]
    }));
    assert_eq!(conn.pending(), 0);
}

#[test]
fn upstream_is_received_and_acked() {
    let _w = watchdog("upstream", Duration::from_secs(20));
    let emu = emulator();
    let (mut conn, id) = connect(&emu);
    let up = emu.inject_upstream("device-7", "com.example", &[("k", "a & b < c")]);
    let ev = next(&mut conn);
    match &ev {
        Event::Upstream(u) => {
            assert_eq!(u.message_id, up);
            assert_eq!(u.from, "device-7");
            assert_eq!(u.data.get("k").map(String::as_str), Some("a & b < c"));
        }
        other => panic!("{other:?}"),
    }
    conn.ack(&ev).unwrap();
    assert!(emu.wait_until(WAIT, |l| l.conn(id).unwrap().upstream_acked == [up.clone()]));
    assert!(emu.ledger().upstream_unacked.is_empty());
}

#[test]
fn draining_delivers_in_flight_acks_then_closes() {
    let _w = watchdog("draining", Duration::from_secs(20));
    let emu = common::judged(
        Emulator::builder()
            .sender_id(SENDER)
            .server_key(KEY)
            .drain_grace(Duration::from_millis(50)),
    );
    let (mut conn, id) = connect(&emu);
    // Hold the acks back so the messages are still in flight when the drain starts.
    emu.set_ack_delay(Duration::from_millis(500));
    let ids: Vec<String> = (0..3)
        .map(|i| conn.send(&Message::to(format!("dev-{i}"))).unwrap())
        .collect();
    assert!(emu.wait_until(WAIT, |l| l.total_received() == 3));
    assert!(emu.drain(id));

    let ev = next(&mut conn);
    assert!(
        matches!(&ev, Event::Control(c) if c.kind == ControlKind::ConnectionDraining),
        "{ev:?}"
    );
    assert!(conn.is_draining());
    let mut acked = Vec::new();
    let deadline = Instant::now() + WAIT;
    let end = loop {
        assert!(
            Instant::now() < deadline,
            "draining connection never closed"
        );
        match conn.recv_event(Some(WAIT)) {
            Ok(Some(Event::Ack(a))) => acked.push(a.message_id),
            Ok(Some(other)) => panic!("unexpected {other:?}"),
            Ok(None) => {}
            Err(e) => break e,
        }
    };
    assert_eq!(acked, ids);
    assert!(matches!(end, Error::Closed), "{end:?}");
    assert!(conn.is_closed());
    assert_eq!(conn.pending(), 0);
    assert!(emu.ledger().conn(id).unwrap().drained);
}

#[test]
fn the_window_holds_100_and_reopens_after_acks() {
    let _w = watchdog("window", Duration::from_secs(20));
    let emu = emulator();
    let (mut conn, id) = connect(&emu);
    // Answers held back a little, so the server really sees 100 in flight.
    emu.set_ack_delay(Duration::from_millis(100));
    for i in 0..100 {
        conn.send(&Message::to("dev").message_id(format!("w-{i}")))
            .unwrap();
    }
    assert_eq!(conn.pending(), 100);
    assert_eq!(conn.window_free(), 0);
    let err = conn
        .send(&Message::to("dev").message_id("w-100"))
        .unwrap_err();
    assert!(matches!(err, Error::WindowFull), "{err:?}");
    let ev = next(&mut conn);
    assert!(
        matches!(&ev, Event::Ack(a) if a.message_id == "w-0"),
        "{ev:?}"
    );
    assert_eq!(conn.pending(), 99);
    conn.send(&Message::to("dev").message_id("w-100")).unwrap();
    for i in 1..=100 {
        let ev = next(&mut conn);
        assert!(
            matches!(&ev, Event::Ack(a) if a.message_id == format!("w-{i}")),
            "{ev:?}"
        );
    }
    assert_eq!(conn.pending(), 0);
    let l = emu.ledger();
    assert_eq!(l.window_violations(), 0);
    assert_eq!(l.conn(id).unwrap().max_pending, 100);
}

#[test]
fn abrupt_drop_is_a_closed_error() {
    let _w = watchdog("abrupt_drop", Duration::from_secs(20));
    let emu = emulator();
    let (mut conn, id) = connect(&emu);
    assert!(emu.drop_now(id));
    let t = Instant::now();
    let err = match conn.recv_event(Some(WAIT)) {
        Ok(None) => panic!("no error within {WAIT:?} of the drop"),
        Ok(Some(ev)) => panic!("unexpected {ev:?}"),
        Err(e) => e,
    };
    assert!(t.elapsed() < WAIT);
    assert!(err.is_closed(), "{err:?}");
    assert!(conn.is_closed());
    assert!(matches!(conn.send(&Message::to("t")), Err(Error::Closed)));
}

#[test]
fn untrusted_certificate_is_a_certificate_error() {
    let _w = watchdog("untrusted", Duration::from_secs(20));
    let emu = emulator();
    // Same endpoint and credentials, but without the emulator's root.
    let cfg = Config::new(SENDER, KEY)
        .endpoint(emu.endpoint())
        .handshake_timeout(Some(Duration::from_secs(5)));
    let t = Instant::now();
    let err = Connection::connect(&cfg).unwrap_err();
    assert!(t.elapsed() < WAIT);
    match &err {
        Error::Tls(e) => assert_eq!(e.kind(), TlsErrorKind::Certificate, "{err:?}"),
        other => panic!("{other:?}"),
    }
    assert!(!err.is_retryable());
}

#[test]
fn close_returns_acks_not_read_yet() {
    let _w = watchdog("close", Duration::from_secs(20));
    let emu = emulator();
    let (mut conn, id) = connect(&emu);
    let a = conn.send(&Message::to("dev").message_id("c-1")).unwrap();
    let b = conn.send(&Message::to("dev").message_id("c-2")).unwrap();
    assert!(emu.wait_until(WAIT, |l| l.total_acked() == 2));
    let events = conn.close().unwrap();
    let acked: Vec<&str> = events
        .iter()
        .map(|e| match e {
            Event::Ack(a) => a.message_id.as_str(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(acked, [a.as_str(), b.as_str()]);
    assert!(emu.wait_until(WAIT, |l| l.conn(id).unwrap().closed));
}

#[test]
fn upstream_waiting_before_connect_is_delivered() {
    let _w = watchdog("early_upstream", Duration::from_secs(20));
    let emu = emulator();
    // Injected with no connection: the emulator sends it right after the next bind,
    // before the session result, so it arrives while the client is still handshaking.
    let ups: Vec<String> = (0..3)
        .map(|i| emu.inject_upstream(&format!("dev-{i}"), "com.example", &[("n", "1")]))
        .collect();
    let (mut conn, id) = connect(&emu);
    for up in &ups {
        let ev = next(&mut conn);
        assert!(
            matches!(&ev, Event::Upstream(u) if &u.message_id == up),
            "{ev:?}"
        );
        conn.ack(&ev).unwrap();
    }
    assert!(emu.wait_until(WAIT, |l| l.conn(id).unwrap().upstream_acked == ups));
    assert_eq!(conn.try_recv_event().unwrap(), None);
}
#[test]
fn the_judge_refuses_what_xml_forbids_and_accepts_a_stream() {
    let header =
        "<stream:stream to=\"gcm.googleapis.com\" version=\"1.0\" xmlns=\"jabber:client\" \
                  xmlns:stream=\"http://etherx.jabber.org/streams\">";
    let good = format!("{header}<auth mechanism=\"PLAIN\">AA==</auth>{header}<message id=\"a\"/> ");
    assert_eq!(common::judge::check_stream(good.as_bytes()), Ok(()));
    assert_eq!(
        common::judge::check_stream(format!("{good}</stream:stream>").as_bytes()),
        Ok(())
    );
    // A stanza cut short by the end of the connection.
    assert_eq!(
        common::judge::check_stream(format!("{good}<message id=\"b\"><gc").as_bytes()),
        Ok(())
    );
    for bad in [
        "<message id=\"&#x1;\"/>",
        "<message>&#xFFFF;</message>",
        "<message>&#xFFFE;</message>",
        "<message>\u{1}</message>",
        "<message>\u{FFFF}</message>",
        "<message id=\"a\" id=\"b\"/>",
        "<message><a></b></message>",
        "<x:message/>",
        "<message>&nbsp;</message>",
    ] {
        let err = common::judge::check_stream(format!("{header}{bad}").as_bytes());
        assert!(err.is_err(), "{bad:?} passed the judge");
    }
    assert!(common::judge::check_stream(format!("{header}<message>\u{1}").as_bytes()).is_err());
}

#[test]
fn characters_xml_forbids_never_reach_the_wire() {
    let _w = watchdog("forbidden_chars", Duration::from_secs(20));
    let emu = emulator();
    let (mut conn, id) = connect(&emu);
    for (message, field) in [
        (Message::to("t").message_id("m-\u{1}"), "message_id"),
        (Message::to("t").data("k", "a\u{FFFF}"), "data"),
        (Message::to("t").data("k\u{FFFE}", "v"), "data"),
        (Message::to("t").collapse_key("c\u{1b}"), "collapse_key"),
    ] {
        let err = conn.send(&message).unwrap_err();
        assert!(
            matches!(&err, Error::InvalidMessage(m) if m.field == field),
            "{err:?}"
        );
    }
    assert_eq!(conn.pending(), 0);
    // Nothing was written: the connection goes on, and the next message is acked.
    let ok = conn
        .send(
            &Message::to("t")
                .message_id("m-ok")
                .data("k", "tab\tcr\r\u{FFFD}"),
        )
        .unwrap();
    assert!(matches!(next(&mut conn), Event::Ack(a) if a.message_id == ok));
    let ledger = emu.ledger();
    assert_eq!(ledger.conn(id).unwrap().received, ["m-ok"]);
    conn.close().unwrap();
    // Dropping `emu` passes every byte the client wrote through the independent judge.
}

#[test]
fn a_refused_ack_leaves_the_downstream_message_of_the_same_id_pending() {
    let _w = watchdog("refused_ack", Duration::from_secs(20));
    let emu = emulator();
    let (mut conn, _) = connect(&emu);
    // Our downstream "u-1" stays in flight while the ack of a device's "u-1"
    // (never delivered on this connection) is refused with a 406.
    emu.set_ack_delay(Duration::from_millis(300));
    conn.send(&Message::to("tok").message_id("u-1")).unwrap();
    let upstream = Event::from_json(r#"{"from":"DEV","message_id":"u-1","data":{}}"#).unwrap();
    conn.ack(&upstream).unwrap();
    let ev = next(&mut conn);
    let refused = ev.as_ack_refused().unwrap_or_else(|| panic!("{ev:?}"));
    assert_eq!(refused.message_id.as_deref(), Some("u-1"));
    assert!(
        matches!(&refused.reason, fcm_xmpp::AckRefusal::StanzaError(e) if e.code == Some(406)),
        "{refused:?}"
    );
    assert_eq!(
        conn.pending(),
        1,
        "an error about an ack settled a downstream message"
    );
    assert!(matches!(next(&mut conn), Event::Ack(a) if a.message_id == "u-1"));
    assert_eq!(conn.pending(), 0);
    conn.close().unwrap();
}
