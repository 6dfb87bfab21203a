//! The worker's own connections (`client::TlsConnector`: TLS over a socket a
//! reader thread reads) against hostile servers: the same typed errors within
//! the same deadlines as `Connection::connect` (tests/hostile.rs), and a live
//! connection still finds a silent server dead.
#![cfg(feature = "emulator")]

mod common;

use std::time::{Duration, Instant};

use common::script::{self, until, write, ScriptServer, Step, CLIENT_HEADER_END, EMU_CERT};
use common::watchdog;
use fcm_xmpp::client::{Connector, TlsConnector};
use fcm_xmpp::{Config, Endpoint, Error, Keepalive, Phase, TlsErrorKind};

const HANDSHAKE: Duration = Duration::from_millis(300);
/// A hang detector, not a speed target.
const BOUND: Duration = Duration::from_secs(5);

fn config_for(server: &ScriptServer) -> Config {
    common::init_logging();
    Config::new("123456789012", "hostile-test-key")
        .endpoint(Endpoint::new("127.0.0.1", server.addr.port()))
        .add_root_pem(EMU_CERT)
        .connect_timeout(Some(Duration::from_secs(1)))
        .handshake_timeout(Some(HANDSHAKE))
        .close_timeout(Some(Duration::from_millis(300)))
}

fn link_err(script: Vec<Step>) -> Error {
    let server = ScriptServer::start(vec![script]);
    let t0 = Instant::now();
    let r = TlsConnector::new(config_for(&server)).connect(0, None);
    let took = t0.elapsed();
    let err = match r {
        Ok(link) => panic!("connected to a hostile server as {}", link.jid()),
        Err(e) => e,
    };
    assert!(took < BOUND, "took {took:?}: {err:?}");
    err
}

#[test]
fn silent_after_tcp_accept_is_a_tls_timeout() {
    let _w = watchdog("link_silent_tcp", Duration::from_secs(20));
    let err = link_err(vec![Step::Silent]);
    assert!(matches!(err, Error::Timeout(Phase::Tls)), "{err:?}");
}

#[test]
fn trickling_tls_handshake_is_a_tls_timeout() {
    let _w = watchdog("link_trickle_tls", Duration::from_secs(20));
    let mut record = vec![0x16, 0x03, 0x03, 0x40, 0x00];
    record.extend(std::iter::repeat_n(0u8, 16 * 1024));
    let err = link_err(vec![
        until("\u{16}\u{3}"),
        Step::Trickle {
            bytes: record,
            every: Duration::from_millis(50),
        },
    ]);
    assert!(matches!(err, Error::Timeout(Phase::Tls)), "{err:?}");
}

#[test]
fn silent_after_tls_is_a_handshake_timeout() {
    let _w = watchdog("link_silent_tls", Duration::from_secs(20));
    let err = link_err(vec![Step::Tls, Step::Silent]);
    assert!(matches!(err, Error::Timeout(Phase::Handshake)), "{err:?}");
}

#[test]
fn trickling_xmpp_handshake_is_a_handshake_timeout() {
    let _w = watchdog("link_trickle_xmpp", Duration::from_secs(20));
    let err = link_err(vec![
        Step::Tls,
        until(CLIENT_HEADER_END),
        write(script::SERVER_HEADER),
        Step::Trickle {
            bytes: vec![b' '; 1000],
            every: Duration::from_millis(20),
        },
    ]);
    assert!(matches!(err, Error::Timeout(Phase::Handshake)), "{err:?}");
}

#[test]
fn plain_tcp_where_tls_was_expected_is_not_tls() {
    let _w = watchdog("link_plain", Duration::from_secs(20));
    let err = link_err(vec![
        until("\u{16}\u{3}"),
        write(script::SERVER_HEADER),
        Step::Silent,
    ]);
    match &err {
        Error::Tls(t) => assert_eq!(t.kind(), TlsErrorKind::NotTls, "{err:?}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_server_that_goes_silent_after_the_handshake_is_found_dead() {
    let _w = watchdog("link_dead", Duration::from_secs(20));
    let mut s = script::handshake();
    s.push(Step::Silent);
    let server = ScriptServer::start(vec![s]);
    let mut keepalive = Keepalive::default();
    keepalive.whitespace_after = None;
    keepalive.ping_after = Some(Duration::from_millis(100));
    keepalive.dead_after = Duration::from_millis(200);
    let cfg = config_for(&server).keepalive(keepalive);
    let mut link = TlsConnector::new(cfg).connect(0, None).expect("handshake");
    let t0 = Instant::now();
    let err = loop {
        match link.recv_event(Duration::from_secs(1)) {
            Ok(None) => assert!(t0.elapsed() < BOUND, "never found dead"),
            Ok(Some(ev)) => panic!("{ev:?}"),
            Err(e) => break e,
        }
    };
    assert!(matches!(err, Error::Timeout(Phase::Read)), "{err:?}");
}
