//! The session's answers, without a socket: bytes go into its reader, what it
//! would write comes out of its buffer.

use super::*;
use crate::emulator::Emulator;

const HEADER: &str =
    "<stream:stream to=\"gcm.googleapis.com\" version=\"1.0\" xmlns=\"jabber:client\" \
                      xmlns:stream=\"http://etherx.jabber.org/streams\">";

/// A session of a (listening, unused) emulator with sender `123` and key `k`.
fn session(emu: &Emulator) -> Session {
    Session::new(
        Arc::clone(&emu.shared),
        ConnId(1),
        Arc::new(SessionCtl::default()),
    )
}

fn emulator() -> Emulator {
    Emulator::builder()
        .sender_id("123")
        .server_key("k")
        .keepalive_interval(Duration::ZERO)
        .start()
        .unwrap()
}

/// Feeds `input` and returns what the session queued in answer.
fn feed(s: &mut Session, input: &str) -> String {
    s.reader.feed(input.as_bytes());
    s.process_packets();
    let out = String::from_utf8(std::mem::take(&mut s.out)).unwrap();
    s.publish(true);
    out
}

fn auth(user: &str, key: &str) -> String {
    format!(
        "<auth xmlns=\"urn:ietf:params:xml:ns:xmpp-sasl\" mechanism=\"PLAIN\">{}</auth>",
        wire::encode_plain("", user, key)
    )
}

const BIND: &str = "<iq type=\"set\" id=\"b1\"><bind xmlns=\"urn:ietf:params:xml:ns:xmpp-bind\">\
                    <resource>r</resource></bind></iq>";

/// A session through the whole handshake.
fn bound(emu: &Emulator) -> Session {
    let mut s = session(emu);
    feed(&mut s, HEADER);
    feed(&mut s, &auth("123@gcm.googleapis.com", "k"));
    feed(&mut s, HEADER);
    let out = feed(&mut s, BIND);
    assert!(out.contains("<jid>123@gcm.googleapis.com/r"), "{out}");
    assert_eq!(s.phase, Phase::Ready);
    s
}

fn downstream(id: &str, to: &str) -> String {
    format!(
        "<message id=\"{id}\"><gcm xmlns=\"google:mobile:data\">\
         {{\"to\":\"{to}\",\"message_id\":\"{id}\"}}</gcm></message>"
    )
}

#[test]
fn handshake_answers_each_step() {
    let emu = emulator();
    let mut s = session(&emu);
    let out = feed(&mut s, HEADER);
    assert!(
        out.starts_with("<stream:stream from=\"gcm.googleapis.com\" id=\""),
        "{out}"
    );
    assert!(out.ends_with(wire::SASL_FEATURES), "{out}");
    assert_eq!(s.phase, Phase::Auth);
    assert_eq!(
        feed(&mut s, &auth("123@gcm.googleapis.com", "k")),
        wire::SASL_SUCCESS
    );
    assert_eq!(s.phase, Phase::Header2);
    let out = feed(&mut s, HEADER);
    assert!(out.ends_with(wire::BIND_FEATURES), "{out}");
    let out = feed(&mut s, BIND);
    let jid = out
        .split("<jid>")
        .nth(1)
        .and_then(|j| j.split("</jid>").next())
        .unwrap();
    let suffix = jid.strip_prefix("123@gcm.googleapis.com/r").unwrap();
    assert_eq!(suffix.len(), 8, "{jid}");
    let out = feed(
        &mut s,
        "<iq type=\"set\" id=\"s1\"><session xmlns=\"urn:ietf:params:xml:ns:xmpp-session\"/></iq>",
    );
    assert!(
        out.contains("type=\"result\"") && out.contains("id=\"s1\""),
        "{out}"
    );
    let out = feed(
        &mut s,
        "<iq to=\"gcm.googleapis.com\" id=\"p1\" type=\"get\"><ping xmlns=\"urn:xmpp:ping\"/></iq>",
    );
    assert!(
        out.contains("id=\"p1\"") && out.contains("type=\"result\""),
        "{out}"
    );
    assert!(s.ending.is_none());
}

#[test]
fn a_wrong_key_is_not_authorized_in_either_encoding() {
    let emu = emulator();
    for user in ["123@gcm.googleapis.com", "123"] {
        let mut s = session(&emu);
        feed(&mut s, HEADER);
        let out = feed(&mut s, &auth(user, "wrong"));
        assert!(out.contains("<not-authorized/>"), "{out}");
        assert!(!out.contains("wrong"), "{out}");
        assert!(matches!(s.ending, Some((EndMode::CloseStream, _))));
    }
}

#[test]
fn downstream_is_acked_and_an_unknown_ack_gets_406_with_its_echo() {
    let emu = emulator();
    let mut s = bound(&emu);
    let out = feed(&mut s, &downstream("m-1", "tok"));
    assert!(
        out.contains("\"message_id\":\"m-1\"") && out.contains("\"message_type\":\"ack\""),
        "{out}"
    );
    let ack = "<message id=\"fx-ack-1\"><gcm xmlns=\"google:mobile:data\">\
               {\"to\":\"DEV\",\"message_id\":\"up-9\",\"message_type\":\"ack\"}</gcm></message>";
    let out = feed(&mut s, ack);
    assert!(
        out.contains("id=\"fx-ack-1\"") && out.contains("code=\"406\""),
        "{out}"
    );
    assert!(
        out.contains("\"message_id\":\"up-9\""),
        "the payload is echoed: {out}"
    );
    let ledger = emu.ledger();
    let c = ledger.conn(ConnId(1)).unwrap();
    assert_eq!(c.received, ["m-1"]);
    assert_eq!(c.stanza_errors, 1);
}

#[test]
fn missing_message_id_is_a_400_and_a_bad_field_an_invalid_json_nack() {
    let emu = emulator();
    let mut s = bound(&emu);
    let out = feed(
        &mut s,
        "<message id=\"x\"><gcm xmlns=\"google:mobile:data\">{\"to\":\"t\"}</gcm></message>",
    );
    assert!(
        out.contains("code=\"400\"") && out.contains("Missing Required Field"),
        "{out}"
    );
    let out = feed(
        &mut s,
        "<message id=\"m-2\"><gcm xmlns=\"google:mobile:data\">\
         {\"to\":\"t\",\"message_id\":\"m-2\",\"time_to_live\":99999999}</gcm></message>",
    );
    assert!(out.contains("\"error\":\"INVALID_JSON\""), "{out}");
}

#[test]
fn characters_xml_forbids_end_the_stream_with_invalid_xml() {
    let emu = emulator();
    for bad in [
        "<message id=\"m-&#x1;\"/>",
        "<message><gcm xmlns=\"google:mobile:data\">&#xFFFE;</gcm></message>",
        "<message id=\"m-\u{8}\"/>",
    ] {
        let mut s = bound(&emu);
        let out = feed(&mut s, bad);
        assert!(
            out.contains("<invalid-xml xmlns=\"urn:ietf:params:xml:ns:xmpp-streams\"/>"),
            "{bad:?}: {out}"
        );
        assert!(!out.contains("message_type"), "{bad:?} was answered: {out}");
        assert!(
            matches!(s.ending, Some((EndMode::CloseStream, _))),
            "{bad:?}"
        );
    }
    // Even in the stream header.
    let mut s = session(&emu);
    let out = feed(&mut s, &HEADER.replace("gcm.googleapis.com", "gcm&#x1;"));
    assert!(out.contains("<invalid-xml"), "{out}");
}

#[test]
fn messages_before_bind_and_garbage_end_the_stream() {
    let emu = emulator();
    let mut s = session(&emu);
    feed(&mut s, HEADER);
    let out = feed(&mut s, &downstream("m-1", "t"));
    assert!(out.contains("<not-authorized"), "{out}");
    let mut s = bound(&emu);
    let out = feed(&mut s, "<message><<<");
    assert!(out.contains("<invalid-xml"), "{out}");
}

#[test]
fn drain_nacks_new_messages() {
    let emu = emulator();
    let mut s = bound(&emu);
    s.start_drain();
    let out = String::from_utf8(std::mem::take(&mut s.out)).unwrap();
    assert!(out.contains("CONNECTION_DRAINING"), "{out}");
    let out = feed(&mut s, &downstream("m-3", "t"));
    assert!(
        out.contains("\"error\":\"CONNECTION_DRAINING\"") && out.contains("\"message_id\":\"m-3\""),
        "{out}"
    );
}
