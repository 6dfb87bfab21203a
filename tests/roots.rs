//! Extra trusted roots are checked before anything connects: a bad PEM is an error
//! from `Config::validate`, `Connection::connect` and `Client::start`, and a bundle
//! adds every certificate in it. The emulator on 127.0.0.1 is the server.
#![cfg(feature = "emulator")]

use std::time::Duration;

use fcm_xmpp::client::{Client, ClientConfig};
use fcm_xmpp::{Config, Connection, Emulator, Error};

const SENDER: &str = "123456789012";
const KEY: &str = "roots-test-key";
/// A certificate that is valid PEM but not the emulator's.
const OTHER: &[u8] = include_bytes!("fixtures/other_name-cert.pem");

fn config(emu: &Emulator, root: &[u8]) -> Config {
    Config::new(SENDER, KEY)
        .endpoint(emu.endpoint())
        .add_root_pem(root.to_vec())
        .handshake_timeout(Some(Duration::from_secs(5)))
}

fn is_roots_error(e: &Error) -> bool {
    matches!(
        e,
        Error::InvalidConfig {
            field: "extra_root_pems",
            ..
        }
    )
}

#[test]
fn a_bad_root_is_refused_before_connecting() {
    let emu = Emulator::start(SENDER, KEY).unwrap();
    for bad in [
        &b""[..],
        b"garbage",
        b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    ] {
        let cfg = config(&emu, bad);
        assert!(is_roots_error(&cfg.validate().unwrap_err()));
        let e = Connection::connect(&cfg).expect_err("connect must refuse");
        assert!(is_roots_error(&e), "{e}");
        let e = Client::start(ClientConfig::new(cfg)).expect_err("start must refuse");
        assert!(is_roots_error(&e), "{e}");
    }
    // Nothing reached the server.
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(emu.ledger().connections_accepted, 0);
}

#[test]
fn a_bundle_adds_every_certificate() {
    let emu = Emulator::start(SENDER, KEY).unwrap();
    // The emulator's certificate second in the bundle: only trusted if every one is added.
    let bundle = [OTHER, Emulator::cert_pem()].concat();
    let conn = Connection::connect(&config(&emu, &bundle)).expect("connect with the bundle");
    conn.close().unwrap();
    // The other certificate alone does not make the emulator trusted.
    let e = Connection::connect(&config(&emu, OTHER)).expect_err("untrusted");
    assert!(matches!(e, Error::Tls(_)), "{e}");
}
