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

const WRONG: &str = "BBBB-WrongServerKey-0123456789";

/// Every form in which `key` could leak.
fn forms(key: &str) -> Vec<String> {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let mut forms = vec![key.to_string(), b64(key)];
    // The SASL PLAIN blob in both encodings CCS accepts, and without its padding.
    for plain in [
        format!("\0{SENDER}@gcm.googleapis.com\0{key}"),
        format!("{SENDER}@gcm.googleapis.com\0{SENDER}\0{key}"),
    ] {
        let blob = b64(&plain);
        forms.push(blob.trim_end_matches('=').to_string());
        forms.push(blob);
    }
    // Any 16-char slice of the key is a leak too.
    forms.push(key[4..20].to_string());
    forms
}

fn assert_clean(what: &str, text: &str) {
    for key in [KEY, WRONG] {
        for f in forms(key) {
            assert!(!text.contains(&f), "{what} contains a key (as {f:?})");
        }
    }
}

#[test]
fn the_key_never_reaches_logs_debug_or_errors() {
    log::set_logger(&LOGGER).unwrap();
    log::set_max_level(log::LevelFilter::Trace);
    let _w = common::watchdog("secrets", Duration::from_secs(60));

    // The emulator holds the key too: its builder and handle redact it.
    let builder = Emulator::builder().sender_id(SENDER).server_key(KEY);
    assert_clean("EmulatorBuilder Debug", &format!("{builder:?}"));
    let emu = common::start(SENDER, KEY);
    assert_clean("Emulator Debug", &format!("{:?}", *emu));
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
    let wrong = WRONG;
    let bad = Config::new(SENDER, wrong)
        .endpoint(config.endpoint.clone())
        .add_root_pem(Emulator::cert_pem());
    let err = Connection::connect(&bad).unwrap_err();
    assert!(matches!(err, Error::AuthFailed { .. }), "{err:?}");
    let text = format!("{err} {err:?} {bad:?}");
    assert_clean("AuthFailed", &text);
    // The emulator's view of the refused connection, as the test sees it.
    assert_clean("emulator ledger", &format!("{:?}", emu.ledger()));

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
    // Both keys, in every encoding, from the client's and the emulator's logs.
    assert_clean("logs", &logs);
}
