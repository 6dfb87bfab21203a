//! The emulator's session loop: a held-back answer leaves when it is due and
//! a scripted message when it is injected, not when the connection's thread
//! next wakes for its poll interval (60 s here).
#![cfg(feature = "emulator")]

use std::time::Duration;

use fcm_xmpp::{Connection, Emulator, Event, Message};

#[test]
fn a_held_back_answer_leaves_when_due_not_at_the_next_poll() {
    // A session that waited for its poll interval would answer after 60 s.
    let emu = Emulator::builder()
        .poll_interval(Duration::from_secs(60))
        .start()
        .unwrap();
    emu.set_ack_delay(Duration::from_millis(20));
    let mut conn = Connection::connect(&emu.client_config()).unwrap();
    for round in 0..3 {
        let id = conn
            .send(&Message::to("device").message_id(format!("m{round}")))
            .unwrap();
        match conn.recv_event(Some(Duration::from_secs(20))).unwrap() {
            Some(Event::Ack(a)) => assert_eq!(a.message_id, id),
            other => panic!("round {round}: {other:?}"),
        }
    }
    conn.close().unwrap();
}

#[test]
fn an_injected_upstream_message_reaches_an_idle_connection_before_the_next_poll() {
    let emu = Emulator::builder()
        .poll_interval(Duration::from_secs(60))
        .start()
        .unwrap();
    let mut conn = Connection::connect(&emu.client_config()).unwrap();
    // Idle: the session waits for bytes; the injection must wake it.
    assert!(conn
        .recv_event(Some(Duration::from_millis(50)))
        .unwrap()
        .is_none());
    emu.inject_upstream("device", "com.example", &[("k", "v")]);
    match conn.recv_event(Some(Duration::from_secs(20))).unwrap() {
        Some(Event::Upstream(u)) => assert_eq!(u.data.get("k").map(String::as_str), Some("v")),
        other => panic!("{other:?}"),
    }
    conn.close().unwrap();
}
