//! The session on simulated time: every timer is checked at the exact moment
//! it is due and just before, without sleeping.

use super::*;
use crate::event::AckRefusal;
use crate::xml::{ReaderLimits, StanzaReader};

const S: Duration = Duration::from_secs(1);

/// Defaults but for the read timeout, which stays out of the way unless set.
fn config() -> Config {
    Config::new("123456789012", "key").read_timeout(Some(S * 300))
}

fn session(config: &Config) -> (Session, Instant) {
    let t0 = Instant::now();
    (Session::new(config, t0), t0)
}

/// The packets in `xml`, read by the crate's reader after a stream header.
fn packets(xml: &str) -> Vec<Packet> {
    let mut r = StanzaReader::new(ReaderLimits {
        max_stanza_size: 1 << 16,
        max_depth: 16,
    });
    r.feed(
        b"<stream:stream xmlns:stream='http://etherx.jabber.org/streams' xmlns='jabber:client'>",
    );
    r.feed(xml.as_bytes());
    let mut out = Vec::new();
    while let Some(p) = r.next_packet().unwrap() {
        if !matches!(p, Packet::StreamStart(_)) {
            out.push(p);
        }
    }
    out
}

fn one(xml: &str) -> Packet {
    let mut p = packets(xml);
    assert_eq!(p.len(), 1, "{xml}");
    p.remove(0)
}

fn ccs(json: &str) -> Packet {
    one(&format!(
        "<message><data:gcm xmlns:data=\"google:mobile:data\">{json}</data:gcm></message>"
    ))
}

/// Takes the output as a driver would after writing it at `at`.
fn drain(s: &mut Session, at: Instant) -> String {
    let out = std::mem::take(s.output());
    s.written(at);
    out
}

fn ping(n: u64) -> String {
    format!("<iq to=\"gcm.googleapis.com\" id=\"ping{n}\" type=\"get\"><ping xmlns=\"urn:xmpp:ping\"/></iq>")
}

#[test]
fn whitespace_goes_out_after_write_idleness_only() {
    let cfg = config().keepalive(Keepalive::default().ping_after(None));
    let (mut s, t0) = session(&cfg);
    assert_eq!(s.next_wake(), Some(t0 + S * 60));
    s.tick(t0 + S * 59).unwrap();
    assert!(!s.has_output());
    s.tick(t0 + S * 60).unwrap();
    assert_eq!(drain(&mut s, t0 + S * 60), " ");
    assert_eq!(s.next_wake(), Some(t0 + S * 120));
    // Other writes reset the idle time.
    s.ack("DEV", "up-1").unwrap();
    drain(&mut s, t0 + S * 100);
    s.tick(t0 + S * 159).unwrap();
    assert!(!s.has_output());
    s.tick(t0 + S * 160).unwrap();
    assert_eq!(drain(&mut s, t0 + S * 160), " ");
}

#[test]
fn unanswered_ping_is_dead_after_dead_after() {
    let cfg = config().keepalive(Keepalive::default().whitespace_after(None));
    let (mut s, t0) = session(&cfg);
    assert_eq!(s.next_wake(), Some(t0 + S * 120));
    s.tick(t0 + S * 119).unwrap();
    assert!(!s.has_output());
    s.tick(t0 + S * 120).unwrap();
    assert_eq!(drain(&mut s, t0 + S * 120), ping(1));
    assert_eq!(s.next_wake(), Some(t0 + S * 150));
    s.tick(t0 + S * 149).unwrap();
    assert!(!s.has_output(), "one ping in flight at a time");
    let err = s.tick(t0 + S * 150).unwrap_err();
    assert!(matches!(err, Error::Timeout(Phase::Read)), "{err:?}");
    assert!(s.is_closed());
    assert_eq!(s.next_wake(), None);
    assert!(matches!(
        s.send(&Message::to("t"), false),
        Err(Error::Closed)
    ));
}

#[test]
fn a_pong_retires_the_ping() {
    let cfg = config().keepalive(Keepalive::default().whitespace_after(None));
    let (mut s, t0) = session(&cfg);
    s.tick(t0 + S * 120).unwrap();
    assert_eq!(drain(&mut s, t0 + S * 120), ping(1));
    s.read_at(t0 + S * 121);
    let pong = one("<iq from=\"gcm.googleapis.com\" id=\"ping1\" type=\"result\"/>");
    assert_eq!(s.on_packet(pong).unwrap(), None);
    // Alive: the next ping is due after another read-idle period, not dead at 150 s.
    assert_eq!(s.next_wake(), Some(t0 + S * 241));
    s.tick(t0 + S * 240).unwrap();
    assert!(!s.has_output());
    s.tick(t0 + S * 241).unwrap();
    assert_eq!(drain(&mut s, t0 + S * 241), ping(2));
}

/// A lost pong must not switch liveness off: other bytes prove the server
/// alive at the time, and once it falls silent a new ping goes out and the
/// dead peer is found `ping_after + dead_after` after its last byte, long
/// before the read timeout.
#[test]
fn liveness_survives_a_lost_pong() {
    let cfg = config().keepalive(Keepalive::default().whitespace_after(None));
    let (mut s, t0) = session(&cfg);
    s.tick(t0 + S * 120).unwrap();
    assert_eq!(drain(&mut s, t0 + S * 120), ping(1));
    // No pong; the server goes on sending other things for a while, then stops.
    for at in [125, 140, 170, 200] {
        s.read_at(t0 + S * at);
        let ev = s.on_packet(ccs(r#"{"message_type":"control","control_type":"X"}"#));
        assert!(ev.unwrap().is_some());
        s.tick(t0 + S * at).unwrap();
        assert!(!s.has_output());
    }
    assert_eq!(s.next_wake(), Some(t0 + S * 320));
    s.tick(t0 + S * 319).unwrap();
    assert!(!s.has_output());
    s.tick(t0 + S * 320).unwrap();
    assert_eq!(
        drain(&mut s, t0 + S * 320),
        ping(2),
        "no new ping after a lost pong"
    );
    s.tick(t0 + S * 349).unwrap();
    let err = s.tick(t0 + S * 350).unwrap_err();
    assert!(matches!(err, Error::Timeout(Phase::Read)), "{err:?}");
    // The old pong, arriving late, is no answer to the new ping.
    let (mut s, t0) = session(&cfg);
    s.tick(t0 + S * 120).unwrap();
    s.ping(t0 + S * 120).unwrap();
    drain(&mut s, t0 + S * 120);
    s.read_at(t0 + S * 121);
    s.tick(t0 + S * 121).unwrap();
    s.tick(t0 + S * 241).unwrap();
    assert_eq!(drain(&mut s, t0 + S * 241), ping(3));
    s.on_packet(one("<iq id=\"ping1\" type=\"result\"/>"))
        .unwrap();
    let err = s.tick(t0 + S * 271).unwrap_err();
    assert!(matches!(err, Error::Timeout(Phase::Read)), "{err:?}");
}

#[test]
fn total_silence_past_the_read_timeout_is_dead() {
    let cfg = config()
        .keepalive(Keepalive::default().ping_after(None).whitespace_after(None))
        .read_timeout(Some(S * 60));
    let (mut s, t0) = session(&cfg);
    s.read_at(t0 + S * 10);
    assert_eq!(s.next_wake(), Some(t0 + S * 70));
    s.tick(t0 + S * 69).unwrap();
    let err = s.tick(t0 + S * 70).unwrap_err();
    assert!(matches!(err, Error::Timeout(Phase::Read)), "{err:?}");
    assert!(s.is_closed());
    // Without a read timeout and keepalives, nothing is ever due.
    let cfg = cfg.read_timeout(None);
    let (s, _) = session(&cfg);
    assert_eq!(s.next_wake(), None);
}

#[test]
fn server_pings_are_answered() {
    let (mut s, t0) = session(&config());
    let p = one("<iq from=\"gcm.googleapis.com\" id=\"s1\" type=\"get\"><ping xmlns=\"urn:xmpp:ping\"/></iq>");
    assert_eq!(s.on_packet(p).unwrap(), None);
    assert_eq!(
        drain(&mut s, t0),
        "<iq type=\"result\" id=\"s1\" to=\"gcm.googleapis.com\"/>"
    );
}

#[test]
fn the_window_counts_downstream_outcomes_only() {
    let (mut s, _) = session(&config().max_pending(2));
    s.send(&Message::to("a").message_id("u-1"), false).unwrap();
    s.send(&Message::to("b").message_id("m-2"), false).unwrap();
    assert!(matches!(
        s.send(&Message::to("c"), false),
        Err(Error::WindowFull)
    ));
    let dup = s
        .send(&Message::to("a").message_id("u-1"), false)
        .unwrap_err();
    assert!(matches!(dup, Error::WindowFull | Error::InvalidMessage(_)));
    // Acks go out with the window full, each with a stanza id of its own.
    s.ack("DEV", "u-1").unwrap();
    s.ack("gcm.googleapis.com", "dr2:m-0").unwrap();
    let out = std::mem::take(s.output());
    assert!(out.contains("<message id=\"fx-ack-1\">"), "{out}");
    assert!(out.contains("<message id=\"fx-ack-2\">"), "{out}");
    // An error about the ack of upstream "u-1" leaves downstream "u-1" pending.
    let echo = r#"{"to":"DEV","message_id":"u-1","message_type":"ack"}"#;
    let err = one(&format!(
        "<message id=\"fx-ack-1\" type=\"error\"><gcm xmlns=\"google:mobile:data\">{echo}</gcm>\
         <error code=\"406\"><not-acceptable xmlns=\"urn:ietf:params:xml:ns:xmpp-stanzas\"/></error></message>"
    ));
    let ev = s.on_packet(err).unwrap().unwrap();
    assert!(
        matches!(&ev, Event::AckRefused(a) if matches!(&a.reason, AckRefusal::StanzaError(e) if e.code == Some(406))),
        "{ev:?}"
    );
    let bad_ack = ccs(r#"{"message_type":"nack","message_id":"u-1","error":"BAD_ACK"}"#);
    assert!(s.on_packet(bad_ack).unwrap().unwrap().is_ack_refused());
    assert_eq!(s.pending(), 2);
    // Downstream outcomes free it: ack, nack, stanza error by id.
    s.on_packet(ccs(r#"{"message_type":"ack","message_id":"u-1"}"#))
        .unwrap();
    assert_eq!(s.pending(), 1);
    let se = one("<message id=\"m-2\" type=\"error\"><error code=\"400\"><bad-request xmlns=\"urn:ietf:params:xml:ns:xmpp-stanzas\"/></error></message>");
    assert!(s.on_packet(se).unwrap().unwrap().is_stanza_error());
    assert_eq!(s.pending(), 0);
    assert_eq!(s.window_free(), 2);
}

#[test]
fn draining_refuses_sends_and_keeps_acking() {
    let (mut s, _) = session(&config());
    s.send(&Message::to("a").message_id("m-1"), false).unwrap();
    let nack = ccs(r#"{"message_type":"nack","message_id":"m-1","error":"CONNECTION_DRAINING"}"#);
    assert!(s.on_packet(nack).unwrap().unwrap().is_nack());
    assert!(s.is_draining());
    assert_eq!(s.pending(), 0);
    s.output().clear();
    assert!(matches!(
        s.send(&Message::to("a"), false),
        Err(Error::Draining)
    ));
    assert!(!s.has_output());
    s.ack("DEV", "up-1").unwrap();
    assert!(s.has_output());
}

#[test]
fn close_stops_writing_but_keeps_reading() {
    let (mut s, t0) = session(&config());
    s.close().unwrap();
    assert_eq!(drain(&mut s, t0), "</stream:stream>");
    assert!(matches!(
        s.send(&Message::to("a"), false),
        Err(Error::Closed)
    ));
    assert!(matches!(s.ack("DEV", "up-1"), Err(Error::Closed)));
    assert_eq!(s.next_wake(), None);
    s.tick(t0 + S * 1000).unwrap();
    assert!(!s.has_output());
    // Late events still come through; a server ping is not answered any more.
    let ping = one("<iq id=\"s2\" type=\"get\"><ping xmlns=\"urn:xmpp:ping\"/></iq>");
    assert_eq!(s.on_packet(ping).unwrap(), None);
    assert!(!s.has_output());
    let ack = ccs(r#"{"message_type":"ack","message_id":"m-1"}"#);
    assert!(s.on_packet(ack).unwrap().unwrap().is_ack());
    let end = packets("</stream:stream>").remove(0);
    assert!(matches!(s.on_packet(end), Err(Error::Closed)));
    assert!(s.is_closed());
}

#[test]
fn stream_errors_and_a_second_header_close() {
    let (mut s, _) = session(&config());
    let se = one(
        "<stream:error><conflict xmlns=\"urn:ietf:params:xml:ns:xmpp-streams\"/></stream:error>",
    );
    assert!(matches!(
        s.on_packet(se),
        Err(Error::StreamError { ref condition, .. }) if condition == "conflict"
    ));
    assert!(s.is_closed());
    let (mut s, _) = session(&config());
    let el = Element::new("stream", ns::STREAM);
    assert!(matches!(
        s.on_packet(Packet::StreamStart(el)),
        Err(Error::Protocol(_))
    ));
    assert!(s.is_closed());
}

/// The pending set's hasher spreads ids that differ in one character (in the
/// eight-byte words and in the tail) over the table, so the set stays fast.
#[test]
fn id_hasher_spreads_similar_ids() {
    use std::hash::{BuildHasher, BuildHasherDefault};
    let b = BuildHasherDefault::<super::IdHasher>::default();
    let mut top = std::collections::HashSet::new();
    let mut low = std::collections::HashSet::new();
    for i in 0..1_000u32 {
        let h = b.hash_one(format!("fx-3f9a1c0d5e7b2a64-{i}"));
        top.insert(h >> 57);
        low.insert(h & 0x3ff);
    }
    // 7-bit control tags and 10 low bits: nearly all values taken.
    assert!(top.len() > 100, "{} tags", top.len());
    assert!(low.len() > 500, "{} buckets", low.len());
}

/// The timers of a session with the largest durations a user can set are
/// far away, never an overflow: `next_wake` saturates, and `tick` at any
/// later moment does nothing.
#[test]
fn huge_durations_saturate() {
    let ka = Keepalive {
        whitespace_after: Some(Duration::MAX),
        ping_after: Some(Duration::MAX),
        dead_after: Duration::MAX,
    };
    let (mut s, t0) = session(&config().read_timeout(Some(Duration::MAX)).keepalive(ka));
    let wake = s.next_wake().expect("timers are set");
    assert!(wake > t0 + S * 86_400 * 365, "saturates far ahead");
    s.tick(t0 + S * 86_400).unwrap();
    assert!(s.output().is_empty());
    // A ping in flight with a huge `dead_after`.
    s.ping(t0).unwrap();
    assert!(s.next_wake().expect("the ping's deadline") > t0 + S * 86_400 * 365);
    s.tick(t0 + S * 86_400).unwrap();
}
