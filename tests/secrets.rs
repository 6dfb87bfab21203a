//! The server key never reaches logs (at any level), `Debug`, `Display` or
//! errors. Alone in its own test binary because it installs the global logger.
#![cfg(feature = "emulator")]

mod common;

use std::sync::Mutex;
use std::time::Duration;

use base64::Engine as _;
use fcm_xmpp::client::{Client, ClientConfig, ClientEvent};
use fcm_xmpp::emulator::Emulator;
use fcm_xmpp::{Config, Connection, Error, Message};

const SENDER: &str = "123456789012";
const KEY: &str = "AAAA-SecretServerKey-9f8e7d6c5b4a";

static CAPTURED: Mutex<String> = Mutex::new(String::new());

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, r: &log::Record) {
        let line = format!("{} {}: {}\n", r.level(), r.target(), r.args());
        CAPTURED.lock().unwrap().push_str(&line);
    }
    fn flush(&self) {}
}

static LOGGER: Capture = Capture;

/// Every form in which the key could leak.
fn forms() -> Vec<String> {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    vec![
        KEY.to_string(),
        b64(&format!("\0{SENDER}@gcm.googleapis.com\0{KEY}")),
        b64(KEY),
        // Any 16-char slice of the key is a leak too.
        KEY[4..20].to_string(),
    ]
}

fn assert_clean(what: &str, text: &str) {
    for f in forms() {
        assert!(!text.contains(&f), "{what} contains the key (as {f:?})");
    }
}

#[test]
fn the_key_never_reaches_logs_debug_or_errors() {
    log::set_logger(&LOGGER).unwrap();
    log::set_max_level(log::LevelFilter::Trace);
    let _w = common::watchdog("secrets", Duration::from_secs(60));

    let emu = Emulator::start(SENDER, KEY).unwrap();
    let config = emu.client_config();
    assert_clean(
        "Config Debug",
        &format!("{config:?} {:?} {}", config.server_key, config.server_key),
    );

    // A full session on one connection, at trace level.
    let mut conn = Connection::connect(&config).unwrap();
    assert_clean("Connection Debug", &format!("{conn:?}"));
    let up = emu.inject_upstream("device", "com.example", &[("k", "v")]);
    conn.send(
        &Message::to("device")
            .data("a", "b")
            .delivery_receipt_requested(true),
    )
    .unwrap();
    let mut seen = 0;
    while seen < 3 {
        if let Some(ev) = conn.recv_event(Some(Duration::from_secs(5))).unwrap() {
            assert_clean("Event Debug", &format!("{ev:?}"));
            conn.ack(&ev).unwrap();
            seen += 1;
        }
    }
    conn.close().unwrap();
    assert!(emu.wait_until(Duration::from_secs(5), |l| l
        .connections
        .iter()
        .any(|c| c.upstream_acked.contains(&up))));

    // The worker, with its metrics and events.
    let (client, mut events) = Client::start(ClientConfig::new(config.clone())).unwrap();
    let id = client.send(Message::to("device")).unwrap();
    loop {
        let ev = events.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_clean("ClientEvent Debug", &format!("{ev:?}"));
        if matches!(&ev, ClientEvent::Delivered { message, .. } if message.id() == id) {
            break;
        }
    }
    assert_clean(
        "Client Debug",
        &format!("{client:?} {:?}", client.metrics()),
    );
    client.shutdown(Duration::from_secs(2));

    // A refused key: the error names the condition, never the key it sent.
    let wrong = "BBBB-WrongServerKey-0123456789";
    let bad = Config::new(SENDER, wrong)
        .endpoint(config.endpoint.clone())
        .add_root_pem(Emulator::cert_pem());
    let err = Connection::connect(&bad).unwrap_err();
    assert!(matches!(err, Error::AuthFailed { .. }), "{err:?}");
    let text = format!("{err} {err:?} {bad:?}");
    assert!(!text.contains(wrong), "{text}");
    assert_clean("AuthFailed", &text);

    drop(emu);
    let logs = CAPTURED.lock().unwrap().clone();
    // The capture really saw the wire: trace lines of the SASL exchange.
    assert!(
        logs.contains("<auth "),
        "trace logging did not capture the handshake"
    );
    assert!(
        logs.contains("<success"),
        "trace logging did not capture the server side"
    );
    assert_clean("logs", &logs);
    assert!(!logs.contains(wrong), "logs contain the wrong key");
}
