//! The emulator checked with a bare native-tls client writing literal XMPP, independently of
//! the crate's own client code. Every read has a timeout; everything runs on 127.0.0.1:0.
#![cfg(feature = "emulator")]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use fcm_xmpp::emulator::{ConnId, EmulatorEvent};
use fcm_xmpp::{Emulator, NackCode};

const SENDER: &str = "123456789012";
const KEY: &str = "raw-test-key";
const HEADER: &str = "<stream:stream to=\"gcm.googleapis.com\" version=\"1.0\" \
                      xmlns=\"jabber:client\" xmlns:stream=\"http://etherx.jabber.org/streams\">";
const WAIT: Duration = Duration::from_secs(5);

/// A minimal client: writes strings, reads bytes until a marker shows up.
struct Raw {
    tls: native_tls::TlsStream<TcpStream>,
    /// Everything read and not consumed by `until` yet.
    pending: String,
}

impl Raw {
    fn connect(emu: &Emulator) -> Raw {
        let connector = native_tls::TlsConnector::builder()
            .add_root_certificate(native_tls::Certificate::from_pem(Emulator::cert_pem()).unwrap())
            .build()
            .unwrap();
        let tcp = TcpStream::connect(emu.addr()).unwrap();
        // The TLS handshake gets the full wait (a loaded machine is slow);
        // reads after it poll in short slices.
        tcp.set_read_timeout(Some(WAIT)).unwrap();
        tcp.set_write_timeout(Some(WAIT)).unwrap();
        let tls = connector.connect("127.0.0.1", tcp).unwrap();
        tls.get_ref()
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        Raw {
            tls,
            pending: String::new(),
        }
    }

    fn send(&mut self, s: &str) {
        self.tls.write_all(s.as_bytes()).unwrap();
    }

    /// Reads until `marker` appears; returns everything up to and including it.
    fn until(&mut self, marker: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(i) = self.pending.find(marker) {
                let rest = self.pending.split_off(i + marker.len());
                return std::mem::replace(&mut self.pending, rest);
            }
            assert!(
                Instant::now() < deadline,
                "no {marker:?} within {WAIT:?}; got {:?}",
                self.pending
            );
            let mut buf = [0u8; 8192];
            match self.tls.read(&mut buf) {
                Ok(0) => panic!("eof while waiting for {marker:?}; got {:?}", self.pending),
                Ok(n) => self
                    .pending
                    .push_str(std::str::from_utf8(&buf[..n]).expect("utf-8 from the emulator")),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!("read failed waiting for {marker:?}: {e}"),
            }
        }
    }

    /// Reads until the server closes the connection; returns what came before.
    fn until_closed(&mut self) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            assert!(
                Instant::now() < deadline,
                "not closed; got {:?}",
                self.pending
            );
            let mut buf = [0u8; 8192];
            match self.tls.read(&mut buf) {
                Ok(0) => return std::mem::take(&mut self.pending),
                Ok(n) => self.pending.push_str(&String::from_utf8_lossy(&buf[..n])),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return std::mem::take(&mut self.pending),
            }
        }
    }

    /// Stream header and SASL; returns the features text.
    fn authenticate(&mut self, plain: &[u8]) -> String {
        self.send(HEADER);
        let features = self.until("</stream:features>");
        let b64 = base64::engine::general_purpose::STANDARD.encode(plain);
        self.send(&format!(
            "<auth xmlns=\"urn:ietf:params:xml:ns:xmpp-sasl\" mechanism=\"PLAIN\">{b64}</auth>"
        ));
        features
    }

    /// The whole handshake; returns the bound JID.
    fn login(emu: &Emulator) -> (Raw, String) {
        let mut raw = Raw::connect(emu);
        raw.authenticate(format!("\0{SENDER}@gcm.googleapis.com\0{KEY}").as_bytes());
        raw.until("<success xmlns=\"urn:ietf:params:xml:ns:xmpp-sasl\"/>");
        raw.send(HEADER);
        raw.until("</stream:features>");
        raw.send(
            "<iq type=\"set\" id=\"b1\"><bind xmlns=\"urn:ietf:params:xml:ns:xmpp-bind\">\
             <resource>raw</resource></bind></iq>",
        );
        let bound = raw.until("</iq>");
        let jid = between(&bound, "<jid>", "</jid>").to_string();
        raw.send(
            "<iq type=\"set\" id=\"s1\"><session xmlns=\"urn:ietf:params:xml:ns:xmpp-session\"/></iq>",
        );
        // Keep whatever arrived before the session result (upstream waiting for this
        // connection may overtake it).
        let got = raw.until("id=\"s1\"/>");
        let before = &got[..got.rfind("<iq").unwrap_or(0)];
        raw.pending.insert_str(0, before);
        (raw, jid)
    }
}

fn between<'a>(s: &'a str, start: &str, end: &str) -> &'a str {
    let a = s
        .find(start)
        .unwrap_or_else(|| panic!("no {start:?} in {s:?}"))
        + start.len();
    let b = a + s[a..]
        .find(end)
        .unwrap_or_else(|| panic!("no {end:?} in {s:?}"));
    &s[a..b]
}

fn emulator() -> Emulator {
    Emulator::builder()
        .sender_id(SENDER)
        .server_key(KEY)
        .drain_grace(Duration::from_millis(50))
        .start()
        .unwrap()
}

fn downstream(id: &str, to: &str) -> String {
    format!(
        "<message id=\"{id}\"><gcm xmlns=\"google:mobile:data\">\
         {{\"to\":\"{to}\",\"message_id\":\"{id}\",\"data\":{{\"k\":\"a &amp; b &lt; c\"}}}}\
         </gcm></message>"
    )
}

fn is_upper_hex(s: &str) -> bool {
    s.bytes()
        .all(|c| c.is_ascii_digit() || (b'A'..=b'F').contains(&c))
}

#[test]
fn handshake_message_ack_and_close() {
    let emu = emulator();
    let mut raw = Raw::connect(&emu);
    let features = raw.authenticate(format!("\0{SENDER}@gcm.googleapis.com\0{KEY}").as_bytes());
    let id = between(&features, " id=\"", "\"");
    assert_eq!(id.len(), 16, "{features}");
    assert!(is_upper_hex(id), "{features}");
    assert!(
        features.contains("from=\"gcm.googleapis.com\""),
        "{features}"
    );
    for m in ["X-OAUTH2", "X-GOOGLE-TOKEN", "PLAIN"] {
        assert!(
            features.contains(&format!("<mechanism>{m}</mechanism>")),
            "{features}"
        );
    }
    raw.until("<success xmlns=\"urn:ietf:params:xml:ns:xmpp-sasl\"/>");
    raw.send(HEADER);
    let features2 = raw.until("</stream:features>");
    assert_ne!(between(&features2, " id=\"", "\""), id, "a new stream id");
    assert!(features2.contains("<bind xmlns=\"urn:ietf:params:xml:ns:xmpp-bind\"/>"));
    assert!(features2.contains("<session xmlns=\"urn:ietf:params:xml:ns:xmpp-session\"/>"));
    raw.send(
        "<iq type=\"set\" id=\"b1\"><bind xmlns=\"urn:ietf:params:xml:ns:xmpp-bind\">\
         <resource>fcmxmpp</resource></bind></iq>",
    );
    let bound = raw.until("</iq>");
    let jid = between(&bound, "<jid>", "</jid>");
    let suffix = jid
        .strip_prefix(&format!("{SENDER}@gcm.googleapis.com/fcmxmpp"))
        .unwrap_or_else(|| panic!("{jid}"));
    assert_eq!(suffix.len(), 8, "{jid}");
    assert!(is_upper_hex(suffix), "{jid}");

    raw.send(&downstream("m-1", "tok-1"));
    let ack = raw.until("</message>");
    assert!(
        ack.trim_start()
            .starts_with("<message><data:gcm xmlns:data=\"google:mobile:data\">"),
        "{ack}"
    );
    assert!(
        ack.contains("&quot;message_type&quot;:&quot;ack&quot;")
            || ack.contains("\"message_type\":\"ack\""),
        "{ack}"
    );
    assert!(ack.contains("m-1") && ack.contains("tok-1"), "{ack}");

    raw.send("</stream:stream>");
    raw.until("</stream:stream>");
    raw.until_closed();

    assert!(emu.wait_until(WAIT, |l| l.connections.first().is_some_and(|c| c.closed)));
    let ledger = emu.ledger();
    let c = &ledger.connections[0];
    assert_eq!(c.jid, jid);
    assert_eq!(c.received, ["m-1"]);
    assert_eq!(c.acked, ["m-1"]);
    assert_eq!(c.max_pending, 1);
    assert_eq!(c.window_violations, 0);
}

#[test]
fn ack_parses_back_through_the_crate() {
    use fcm_xmpp::xml::{Packet, ReaderLimits, StanzaReader};
    let emu = emulator();
    let (mut raw, _) = Raw::login(&emu);
    raw.send(&downstream("m-2", "tok"));
    let stanza = raw.until("</message>");
    let mut reader = StanzaReader::new(ReaderLimits::default());
    reader.feed(HEADER.as_bytes());
    reader.feed(stanza.trim_start().as_bytes());
    assert!(matches!(
        reader.next_packet(),
        Ok(Some(Packet::StreamStart(_)))
    ));
    let Ok(Some(Packet::Stanza(el))) = reader.next_packet() else {
        panic!("no stanza in {stanza:?}");
    };
    match fcm_xmpp::Event::from_stanza(&el) {
        Ok(Some(fcm_xmpp::Event::Ack(a))) => {
            assert_eq!(a.message_id, "m-2");
            assert_eq!(a.from.as_deref(), Some("tok"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn other_plain_encodings_accepted() {
    let emu = emulator();
    for plain in [
        format!("\0{SENDER}@fcm.googleapis.com\0{KEY}"),
        format!("{SENDER}@gcm.googleapis.com\0{SENDER}\0{KEY}"),
    ] {
        let mut raw = Raw::connect(&emu);
        raw.authenticate(plain.as_bytes());
        raw.until("<success xmlns=\"urn:ietf:params:xml:ns:xmpp-sasl\"/>");
    }
}

#[test]
fn wrong_key_is_not_authorized_and_closed() {
    let emu = emulator();
    let mut raw = Raw::connect(&emu);
    raw.authenticate(format!("\0{SENDER}@gcm.googleapis.com\0wrong").as_bytes());
    raw.until("<failure xmlns=\"urn:ietf:params:xml:ns:xmpp-sasl\"><not-authorized/></failure>");
    raw.until_closed();
    assert!(emu.wait_until(WAIT, |l| l.auth_failures == 1));
    assert!(emu.ledger().connections.is_empty());
}

#[test]
fn wrapped_base64_is_incorrect_encoding() {
    let emu = emulator();
    let mut raw = Raw::connect(&emu);
    raw.send(HEADER);
    raw.until("</stream:features>");
    let b64 = base64::engine::general_purpose::STANDARD
        .encode(format!("\0{SENDER}@gcm.googleapis.com\0{KEY}"));
    let (a, b) = b64.split_at(10);
    raw.send(&format!(
        "<auth xmlns=\"urn:ietf:params:xml:ns:xmpp-sasl\" mechanism=\"PLAIN\">{a}\r\n{b}</auth>"
    ));
    raw.until("<incorrect-encoding/></failure>");
    raw.until_closed();
}

#[test]
fn message_before_bind_is_not_authorized() {
    let emu = emulator();
    let mut raw = Raw::connect(&emu);
    raw.authenticate(format!("\0{SENDER}@gcm.googleapis.com\0{KEY}").as_bytes());
    raw.until("<success");
    raw.send(HEADER);
    raw.until("</stream:features>");
    raw.send(&downstream("m-early", "tok"));
    raw.until("<not-authorized xmlns=\"urn:ietf:params:xml:ns:xmpp-streams\"/>");
    raw.until_closed();
}

#[test]
fn missing_message_id_is_stanza_error_400_with_echo() {
    let emu = emulator();
    let (mut raw, _) = Raw::login(&emu);
    raw.send(
        "<message id=\"s-9\"><gcm xmlns=\"google:mobile:data\">{\"to\":\"tok\"}</gcm></message>",
    );
    let err = raw.until("</message>");
    assert!(err.contains("id=\"s-9\""), "{err}");
    assert!(err.contains("type=\"error\""), "{err}");
    assert!(err.contains("<gcm xmlns=\"google:mobile:data\">"), "{err}");
    assert!(err.contains("code=\"400\""), "{err}");
    assert!(
        err.contains("<bad-request xmlns=\"urn:ietf:params:xml:ns:xmpp-stanzas\"/>"),
        "{err}"
    );
    assert!(
        err.contains("InvalidJson: JSON_PARSING_ERROR : Missing Required Field: message_id"),
        "{err}"
    );
    assert_eq!(emu.ledger().stanza_errors(), 1);
}

#[test]
fn invalid_fields_get_nack_invalid_json() {
    let emu = emulator();
    let (mut raw, _) = Raw::login(&emu);
    raw.send(
        "<message id=\"m-ttl\"><gcm xmlns=\"google:mobile:data\">\
         {\"to\":\"tok\",\"message_id\":\"m-ttl\",\"time_to_live\":\"600\"}</gcm></message>",
    );
    let nack = raw.until("</message>");
    assert!(nack.contains("<message><data:gcm"), "{nack}");
    assert!(
        nack.contains("INVALID_JSON") && nack.contains("time_to_live"),
        "{nack}"
    );
    assert!(emu.wait_until(WAIT, |l| l.total_nacked() == 1));
    assert_eq!(
        emu.ledger().connections[0].nacked,
        [("m-ttl".to_string(), NackCode::InvalidJson)]
    );
}

#[test]
fn rejected_token_and_transient_nacks() {
    let emu = emulator();
    emu.reject_token("dead", NackCode::DeviceUnregistered);
    emu.transient_nacks(|id| id == "m-t", 2, NackCode::ServiceUnavailable);
    let (mut raw, _) = Raw::login(&emu);
    raw.send(&downstream("m-d", "dead"));
    assert!(raw.until("</message>").contains("DEVICE_UNREGISTERED"));
    for _ in 0..2 {
        raw.send(&downstream("m-t", "tok"));
        assert!(raw.until("</message>").contains("SERVICE_UNAVAILABLE"));
    }
    raw.send(&downstream("m-t", "tok"));
    let ack = raw.until("</message>");
    assert!(!ack.contains("nack"), "{ack}");
    let ledger = emu.ledger();
    assert_eq!(ledger.duplicates(), ["m-t"]);
    assert_eq!(ledger.distinct_received(), 2);
    assert_eq!(ledger.total_received(), 4);
}

#[test]
fn ack_for_unknown_id_is_406() {
    let emu = emulator();
    let (mut raw, jid) = Raw::login(&emu);
    raw.send(
        "<message id=\"a-1\"><gcm xmlns=\"google:mobile:data\">\
         {\"to\":\"tok\",\"message_id\":\"nope\",\"message_type\":\"ack\"}</gcm></message>",
    );
    let err = raw.until("</message>");
    assert!(err.contains("code=\"406\""), "{err}");
    assert!(
        err.contains("<not-acceptable xmlns=\"urn:ietf:params:xml:ns:xmpp-stanzas\"/>"),
        "{err}"
    );
    assert!(err.contains("id=\"a-1\""), "{err}");
    assert!(err.contains(&format!("to=\"{jid}\"")), "{err}");
}

#[test]
fn ping_is_answered() {
    let emu = emulator();
    let (mut raw, _) = Raw::login(&emu);
    raw.send(
        "<iq to=\"gcm.googleapis.com\" id=\"p7\" type=\"get\"><ping xmlns=\"urn:xmpp:ping\"/></iq>",
    );
    let pong = raw.until("/>");
    assert!(pong.contains("type=\"result\""), "{pong}");
    assert!(pong.contains("id=\"p7\""), "{pong}");
    assert!(pong.contains("from=\"gcm.googleapis.com\""), "{pong}");
}

#[test]
fn receipt_after_ack_and_upstream_resent_on_next_connection() {
    let emu = emulator();
    let (mut raw, _) = Raw::login(&emu);
    raw.send(
        "<message id=\"m-r\"><gcm xmlns=\"google:mobile:data\">\
         {\"to\":\"tok\",\"message_id\":\"m-r\",\"delivery_receipt_requested\":true}</gcm></message>",
    );
    let ack = raw.until("</message>");
    assert!(ack.contains("<data:gcm"), "{ack}");
    let receipt = raw.until("</message>");
    assert!(
        receipt.contains(&format!(
            "<message to=\"{SENDER}@gcm.googleapis.com\" from=\"devices@gcm.googleapis.com\" type=\"normal\"><gcm xmlns=\"google:mobile:data\">"
        )),
        "{receipt}"
    );
    assert!(
        receipt.contains("dr2:m-r") && receipt.contains("MESSAGE_SENT_TO_DEVICE"),
        "{receipt}"
    );

    let up = emu.inject_upstream("device-1", "com.example", &[("hello", "world")]);
    let stanza = raw.until("</message>");
    assert!(
        stanza.contains(&up) && stanza.contains("device-1"),
        "{stanza}"
    );
    assert_eq!(emu.ledger().unacked_upstream(), ["dr2:m-r", up.as_str()]);

    // Ack the receipt only, then drop: the upstream comes back on the next connection.
    raw.send(
        "<message id=\"a-2\"><gcm xmlns=\"google:mobile:data\">\
         {\"to\":\"gcm.googleapis.com\",\"message_id\":\"dr2:m-r\",\"message_type\":\"ack\"}</gcm></message>",
    );
    assert!(emu.wait_until(WAIT, |l| l.unacked_upstream() == [up.as_str()]));
    drop(raw);
    assert!(emu.wait_until(WAIT, |l| l.connections[0].closed));

    let (mut raw2, _) = Raw::login(&emu);
    let again = raw2.until("</message>");
    assert!(again.contains(&up), "{again}");
    raw2.send(&format!(
        "<message id=\"a-3\"><gcm xmlns=\"google:mobile:data\">\
         {{\"to\":\"device-1\",\"message_id\":\"{up}\",\"message_type\":\"ack\"}}</gcm></message>"
    ));
    assert!(emu.wait_until(WAIT, |l| l.unacked_upstream().is_empty()));
    let ledger = emu.ledger();
    assert_eq!(ledger.connections[0].receipts_acked, ["dr2:m-r"]);
    assert_eq!(ledger.connections[1].upstream_acked, [up]);
}

#[test]
fn drain_nacks_new_messages_then_closes() {
    let (tx, rx) = mpsc::channel();
    let emu = Emulator::builder()
        .sender_id(SENDER)
        .server_key(KEY)
        .drain_grace(Duration::from_millis(300))
        .observer(tx)
        .start()
        .unwrap();
    let (mut raw, _) = Raw::login(&emu);
    let conn = emu.connections()[0];
    assert!(emu.drain(conn));
    let control = raw.until("</message>");
    assert!(
        control.contains("CONNECTION_DRAINING") && control.contains("control"),
        "{control}"
    );
    raw.send(&downstream("m-late", "tok"));
    let nack = raw.until("</message>");
    assert!(
        nack.contains("nack") && nack.contains("CONNECTION_DRAINING"),
        "{nack}"
    );
    raw.until("</stream:stream>");
    raw.until_closed();
    assert!(emu.wait_until(WAIT, |l| l.connections[0].closed
        && l.connections[0].drained));
    let events: Vec<EmulatorEvent> = rx.try_iter().collect();
    assert!(events
        .iter()
        .any(|e| matches!(e, EmulatorEvent::DrainStarted { conn: c } if *c == conn)));
    for e in &events {
        assert!(!e.to_string().contains('\n'), "{e}");
    }
}

#[test]
fn drop_after_leaves_last_message_unanswered() {
    let emu = emulator();
    let (mut raw, _) = Raw::login(&emu);
    emu.drop_after(2);
    // Both in one write: the first is answered, the second is not.
    raw.send(&(downstream("m-a", "tok") + &downstream("m-b", "tok")));
    let rest = raw.until_closed();
    assert!(rest.contains("m-a"), "{rest}");
    assert!(!rest.contains("m-b"), "{rest}");
    assert!(!rest.contains("</stream:stream>"), "{rest}");
    assert!(emu.wait_until(WAIT, |l| l.connections[0].closed));
    let c = &emu.ledger().connections[0];
    assert_eq!(c.received, ["m-a", "m-b"]);
    assert_eq!(c.acked, ["m-a"]);
}

#[test]
fn ack_delay_holds_answers_and_counts_the_window() {
    let emu = emulator();
    emu.set_ack_delay(Duration::from_millis(300));
    let (mut raw, _) = Raw::login(&emu);
    let burst: String = (0..105)
        .map(|i| downstream(&format!("w-{i}"), "tok"))
        .collect();
    let t = Instant::now();
    raw.send(&burst);
    raw.until("w-104");
    assert!(t.elapsed() >= Duration::from_millis(250));
    let c = &emu.ledger().connections[0];
    assert_eq!(c.max_pending, 105);
    assert_eq!(c.window_violations, 5);
}

#[test]
fn garbage_gets_invalid_xml_and_send_raw_reaches_client() {
    let emu = emulator();
    let (mut raw, _) = Raw::login(&emu);
    let conn: ConnId = emu.connections()[0];
    assert!(emu.send_raw(conn, "<message><oops/></message>"));
    raw.until("<oops/></message>");
    raw.send("<message><<<not xml>>>");
    raw.until("<invalid-xml xmlns=\"urn:ietf:params:xml:ns:xmpp-streams\"/>");
    raw.until_closed();
    assert!(emu.wait_until(WAIT, |l| l.connections[0].closed));
    assert!(emu.connections().is_empty());
}

#[test]
fn characters_xml_forbids_get_invalid_xml_in_any_form() {
    // As a conforming parser does: the crate's own reader would decode them.
    for bad in [
        "<message id=\"m-&#x1;\"><gcm xmlns=\"google:mobile:data\">{}</gcm></message>",
        "<message id=\"m-1\"><gcm xmlns=\"google:mobile:data\">&#xFFFF;</gcm></message>",
        "<message id=\"m-1\"><gcm xmlns=\"google:mobile:data\">&#65534;</gcm></message>",
        "<message id=\"m-\u{1b}\"><gcm xmlns=\"google:mobile:data\">{}</gcm></message>",
    ] {
        let emu = emulator();
        let (mut raw, _) = Raw::login(&emu);
        raw.send(bad);
        let got = raw.until("<invalid-xml xmlns=\"urn:ietf:params:xml:ns:xmpp-streams\"/>");
        assert!(
            !got.contains("\"message_type\":\"ack\""),
            "{bad:?} was acked: {got}"
        );
        raw.until_closed();
        assert!(emu.wait_until(WAIT, |l| l.connections[0].closed), "{bad:?}");
        assert!(emu.ledger().connections[0].received.is_empty(), "{bad:?}");
    }
}

#[test]
fn shutdown_closes_clients_promptly() {
    let emu = emulator();
    let (mut raw, _) = Raw::login(&emu);
    let t = Instant::now();
    emu.shutdown();
    assert!(t.elapsed() < Duration::from_secs(2));
    raw.until("</stream:stream>");
    raw.until_closed();
}

#[test]
fn pipelined_handshake_works() {
    let emu = emulator();
    let mut raw = Raw::connect(&emu);
    let b64 = base64::engine::general_purpose::STANDARD
        .encode(format!("\0{SENDER}@gcm.googleapis.com\0{KEY}"));
    // Everything in one write: the reader must keep the bytes after <auth> across the
    // stream restart.
    raw.send(&format!(
        "{HEADER}<auth xmlns=\"urn:ietf:params:xml:ns:xmpp-sasl\" mechanism=\"PLAIN\">{b64}</auth>\
         {HEADER}<iq type=\"set\" id=\"b1\"><bind xmlns=\"urn:ietf:params:xml:ns:xmpp-bind\"/></iq>\
         {}",
        downstream("m-p", "tok")
    ));
    let all = raw.until("m-p");
    assert!(all.contains("<success"), "{all}");
    let jid = between(&all, "<jid>", "</jid>");
    let suffix = jid
        .strip_prefix(&format!("{SENDER}@gcm.googleapis.com/"))
        .unwrap();
    assert!(suffix.len() > 8, "a resource is generated: {jid}");
    raw.until("</message>");
    assert_eq!(emu.ledger().connections[0].acked, ["m-p"]);
}

#[test]
fn self_closing_stream_header_is_refused() {
    let emu = emulator();
    let mut raw = Raw::connect(&emu);
    raw.send(
        "<stream:stream to=\"gcm.googleapis.com\" version=\"1.0\" xmlns=\"jabber:client\" \
         xmlns:stream=\"http://etherx.jabber.org/streams\"/>",
    );
    let rest = raw.until_closed();
    assert!(rest.contains("<stream:error>"), "{rest}");
    assert!(
        !rest.contains("<mechanism>"),
        "no features for a closed stream: {rest}"
    );
}

#[test]
fn whitespace_keepalive_when_idle() {
    let emu = Emulator::builder()
        .sender_id(SENDER)
        .server_key(KEY)
        .keepalive_interval(Duration::from_millis(50))
        .start()
        .unwrap();
    let (mut raw, _) = Raw::login(&emu);
    std::thread::sleep(Duration::from_millis(150));
    raw.until(" ");
}

#[test]
fn silent_client_times_out_in_handshake() {
    let emu = Emulator::builder()
        .sender_id(SENDER)
        .server_key(KEY)
        .handshake_timeout(Duration::from_millis(200))
        .start()
        .unwrap();
    let mut raw = Raw::connect(&emu);
    raw.send(HEADER);
    let rest = raw.until_closed();
    assert!(rest.contains("<connection-timeout"), "{rest}");
    // A client that does not even finish TLS is closed too.
    let mut tcp = TcpStream::connect(emu.addr()).unwrap();
    tcp.set_read_timeout(Some(WAIT)).unwrap();
    let mut buf = [0u8; 16];
    assert!(matches!(tcp.read(&mut buf), Ok(0) | Err(_)));
}

#[test]
fn drop_every_and_drop_now() {
    let emu = emulator();
    emu.drop_every(Some(3));
    let (mut raw, _) = Raw::login(&emu);
    for i in 0..3 {
        raw.send(&downstream(&format!("e-{i}"), "tok"));
    }
    let rest = raw.until_closed();
    assert!(rest.contains("e-1") && !rest.contains("e-2"), "{rest}");
    emu.drop_every(None);
    let (mut raw2, _) = Raw::login(&emu);
    for i in 3..6 {
        raw2.send(&downstream(&format!("e-{i}"), "tok"));
        raw2.until("</message>");
    }
    let conn = *emu.connections().last().unwrap();
    assert!(emu.drop_now(conn));
    raw2.until_closed();
    assert!(emu.wait_until(WAIT, |l| l.connections.iter().all(|c| c.closed)));
    assert!(!emu.drop_now(conn), "already gone");
    let l = emu.ledger();
    assert_eq!(l.total_received(), 6);
    assert_eq!(l.total_acked(), 5);
}

#[test]
fn many_connections_at_once() {
    let emu = emulator();
    let handles: Vec<_> = (0..8)
        .map(|t| {
            let (mut raw, _) = Raw::login(&emu);
            std::thread::spawn(move || {
                for i in 0..50 {
                    raw.send(&downstream(&format!("c{t}-{i}"), "tok"));
                    raw.until("</message>");
                }
                raw
            })
        })
        .collect();
    let raws: Vec<Raw> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(emu.connections().len(), 8);
    drop(raws);
    let l = emu.ledger();
    assert_eq!(l.total_acked(), 400);
    assert_eq!(l.distinct_received(), 400);
    assert!(l.duplicates().is_empty());
}

#[test]
fn hostile_bytes_never_hang_or_crash() {
    let emu = emulator();
    let inputs: [&[u8]; 8] = [
        b"\xff\xfe\x00garbage",
        b"<stream:stream xmlns:stream='http://etherx.jabber.org/streams'><!DOCTYPE x []>",
        b"<?xml version='1.0'?><a><b><c><d>",
        b"<stream:stream xmlns:stream='http://etherx.jabber.org/streams'><auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>====</auth>",
        b"<stream:stream xmlns:stream='http://etherx.jabber.org/streams'><message><gcm xmlns='google:mobile:data'>{}</gcm></message>",
        b"<stream:stream xmlns:stream='http://etherx.jabber.org/streams'><auth mechanism='X'/>",
        b"</stream:stream>",
        b"<stream:stream xmlns:stream='http://etherx.jabber.org/streams'>&unknown;",
    ];
    for input in inputs {
        let mut raw = Raw::connect(&emu);
        raw.tls.write_all(input).unwrap();
        raw.until_closed();
    }
    // An oversized stanza after login.
    let (mut raw, _) = Raw::login(&emu);
    let big = format!(
        "<message><gcm xmlns=\"google:mobile:data\">{}</gcm></message>",
        "x".repeat(70 * 1024)
    );
    let _ = raw.tls.write_all(big.as_bytes());
    let rest = raw.until_closed();
    assert!(rest.contains("policy-violation"), "{rest}");
    // Still serving.
    let (mut ok, _) = Raw::login(&emu);
    ok.send(&downstream("after", "tok"));
    ok.until("</message>");
}

#[test]
fn at_most_100_unacked_upstream_per_connection() {
    let emu = emulator();
    let (mut raw, _) = Raw::login(&emu);
    let ids: Vec<String> = (0..130)
        .map(|i| emu.inject_upstream("dev", "app", &[("n", &i.to_string())]))
        .collect();
    raw.until(&format!("\"{}\"", ids[99]));
    std::thread::sleep(Duration::from_millis(200));
    raw.send("<iq type=\"get\" id=\"p1\"><ping xmlns=\"urn:xmpp:ping\"/></iq>");
    let more = raw.until("id=\"p1\"");
    assert!(!more.contains(&format!("\"{}\"", ids[100])), "{more}");
    for id in &ids[..10] {
        raw.send(&format!(
            "<message><gcm xmlns=\"google:mobile:data\">\
             {{\"to\":\"dev\",\"message_id\":\"{id}\",\"message_type\":\"ack\"}}</gcm></message>"
        ));
    }
    raw.until(&format!("\"{}\"", ids[109]));
    let l = emu.ledger();
    assert_eq!(l.connections[0].upstream_sent.len(), 110);
    assert_eq!(l.connections[0].upstream_acked.len(), 10);
    assert_eq!(l.unacked_upstream().len(), 120);
}

#[test]
fn drain_still_acks_in_flight_messages() {
    let emu = emulator();
    emu.set_ack_delay(Duration::from_millis(200));
    let (mut raw, _) = Raw::login(&emu);
    raw.send(&(downstream("f-1", "tok") + &downstream("f-2", "tok")));
    assert!(emu.wait_until(WAIT, |l| l.total_received() == 2));
    emu.drain_all();
    raw.until("CONNECTION_DRAINING");
    raw.send(&downstream("f-3", "tok"));
    let rest = raw.until("</stream:stream>");
    let (f1, f2, f3) = (
        rest.find("f-1").unwrap(),
        rest.find("f-2").unwrap(),
        rest.find("f-3").unwrap(),
    );
    // f-3 is refused at once; f-1 and f-2 are acked when their delay is over.
    assert!(f3 < f1 && f1 < f2, "{rest}");
    raw.until_closed();
    assert!(emu.wait_until(WAIT, |l| l.connections[0].closed));
    let c = &emu.ledger().connections[0];
    assert_eq!(c.acked, ["f-1", "f-2"]);
    assert_eq!(
        c.nacked,
        [("f-3".to_string(), NackCode::ConnectionDraining)]
    );
    assert!(c.drained);
}

/// The emulator reads message stanzas of the common shape without an element tree, and
/// valid downstream JSON in a simple form without a value tree; the same stanzas with a
/// comment inside `<message>`, or a `null` field in the JSON (which keep them off those
/// paths), must get byte-identical answers, for every kind of answer.
#[test]
fn fast_and_general_message_paths_answer_alike() {
    let stanzas = [
        downstream("f-1", "tok"),
        "<message id=\"f-2\"><gcm xmlns=\"google:mobile:data\">{\"to\":\"tok\"}</gcm></message>"
            .to_string(),
        "<message id=\"f-3\"><gcm xmlns=\"google:mobile:data\">\
         {\"to\":\"tok\",\"message_id\":\"f-3\",\"time_to_live\":\"600\"}</gcm></message>"
            .to_string(),
        "<message id='f-4'><gcm xmlns='google:mobile:data'>not json</gcm></message>".to_string(),
        "<message><gcm xmlns=\"google:mobile:data\">\
         {\"to\":\"tok\",\"message_id\":\"f-5\",\"data\":{\"x\":\"y\"}}</gcm></message>"
            .to_string(),
        "<message id=\"f-6\"><gcm xmlns=\"google:mobile:data\">\
         {\"to\":\"dev\",\"message_id\":\"u-none\",\"message_type\":\"ack\"}</gcm></message>"
            .to_string(),
        "<message id=\"f-7\" type=\"normal\"><data:gcm xmlns:data=\"google:mobile:data\">\
         {\"to\":\"tok\",\"message_id\":\"f-7\"}</data:gcm></message>"
            .to_string(),
    ];
    let answers = |variant: u8| {
        let emu = emulator();
        let (mut raw, jid) = Raw::login(&emu);
        let mut got = Vec::new();
        for s in &stanzas {
            let s = match variant {
                0 => s.clone(),
                1 => s.replacen("</message>", "<!-- general path --></message>", 1),
                _ => s.replacen(">{\"", ">{\"unknown\":null,\"", 1),
            };
            raw.send(&s);
            // Each connection has a JID of its own.
            // Errors echo the payload: without the added field, it is the original.
            let answer = raw.until("</message>").replace(&jid, "JID");
            got.push(answer.replace("{\"unknown\":null,", "{"));
        }
        got
    };
    let fast = answers(0);
    assert_eq!(fast, answers(1));
    assert_eq!(fast, answers(2));
    // The answers are the real ones: an ack, a 400, a nack, ...
    assert!(fast[0].contains("\"message_type\":\"ack\""), "{}", fast[0]);
    assert!(fast[1].contains("code=\"400\""), "{}", fast[1]);
    assert!(fast[2].contains("INVALID_JSON"), "{}", fast[2]);
}
