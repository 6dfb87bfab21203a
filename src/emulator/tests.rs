use super::shared::{Command, SessionEntry, State};
use super::*;

#[test]
fn handle_types_are_thread_safe() {
    fn check<T: Send + Sync>() {}
    check::<Emulator>();
    check::<Ledger>();
    check::<EmulatorEvent>();
    check::<EmulatorBuilder>();
}

#[test]
fn poll_interval_reaches_the_sessions_with_a_floor() {
    let poll = |b: EmulatorBuilder| b.start().unwrap().shared.settings.poll;
    assert_eq!(poll(Emulator::builder()), Duration::from_millis(5));
    let one_ms = Duration::from_millis(1);
    assert_eq!(poll(Emulator::builder().poll_interval(one_ms)), one_ms);
    // A zero read timeout is refused by the socket: the floor applies.
    assert_eq!(
        poll(Emulator::builder().poll_interval(Duration::ZERO)),
        MIN_POLL
    );
}

#[test]
fn identity_loads_and_cert_is_pem() {
    assert!(Emulator::cert_pem().starts_with(b"-----BEGIN CERTIFICATE-----"));
    assert!(KEY_PEM.starts_with(b"-----BEGIN PRIVATE KEY-----"));
    Identity::from_pkcs8(CERT_PEM, KEY_PEM).unwrap();
    native_tls::Certificate::from_pem(CERT_PEM).unwrap();
}

#[test]
fn start_and_shutdown_quickly() {
    let emu = Emulator::start("42", "k").unwrap();
    assert!(emu.addr().ip().is_loopback());
    assert_ne!(emu.addr().port(), 0);
    assert_eq!(emu.endpoint().host, "127.0.0.1");
    let c = emu.client_config();
    assert_eq!(c.sender_id, "42");
    assert_eq!(c.extra_root_pems.len(), 1);
    let t = Instant::now();
    emu.shutdown();
    emu.shutdown();
    assert!(t.elapsed() < Duration::from_secs(2));
}

fn tls_connect(emu: &Emulator, host: &str) -> Result<native_tls::TlsStream<TcpStream>, String> {
    let connector = native_tls::TlsConnector::builder()
        .add_root_certificate(native_tls::Certificate::from_pem(Emulator::cert_pem()).unwrap())
        .build()
        .unwrap();
    let tcp = TcpStream::connect(emu.addr()).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    tcp.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    connector.connect(host, tcp).map_err(|e| e.to_string())
}

#[test]
fn certificate_verifies_for_ip_and_localhost_only() {
    let emu = Emulator::start("1", "k").unwrap();
    tls_connect(&emu, "127.0.0.1").unwrap();
    tls_connect(&emu, "localhost").unwrap();
    let err = tls_connect(&emu, "gcm.googleapis.com").unwrap_err();
    assert!(
        err.contains("certificate") || err.contains("hostname"),
        "{err}"
    );
}

#[test]
fn plaintext_client_is_dropped_and_server_keeps_serving() {
    use std::io::{Read, Write};
    let emu = Emulator::start("1", "k").unwrap();
    let mut tcp = TcpStream::connect(emu.addr()).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    tcp.write_all(b"<stream:stream to='gcm.googleapis.com' version='1.0'>")
        .unwrap();
    let mut buf = [0u8; 512];
    let t = Instant::now();
    // The server answers with a TLS alert (first byte 0x15) or just closes.
    loop {
        match tcp.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => assert_eq!(buf[0], 0x15, "{:?}", &buf[..n]),
        }
    }
    assert!(t.elapsed() < Duration::from_secs(4));
    tls_connect(&emu, "127.0.0.1").unwrap();
    assert_eq!(emu.ledger().connections_accepted, 2);
}

#[test]
fn display_lines() {
    let e = EmulatorEvent::Downstream {
        conn: ConnId(3),
        message_id: "m-1".into(),
        target: "tok".into(),
        outcome: DownstreamOutcome::Nacked(NackCode::BadRegistration),
        at: Instant::now(),
    };
    assert_eq!(
        e.to_string(),
        r#"conn#3 downstream "m-1" to "tok": nack BAD_REGISTRATION"#
    );
    let e = EmulatorEvent::Authenticated {
        conn: ConnId(1),
        jid: "1@gcm.googleapis.com/rAB".into(),
    };
    assert_eq!(
        e.to_string(),
        "conn#1 authenticated as 1@gcm.googleapis.com/rAB"
    );
    assert!(!EmulatorEvent::DrainStarted { conn: ConnId(2) }
        .to_string()
        .contains('\n'));
}

#[test]
fn round_robin_skips_draining_and_unready() {
    let mut st = State::default();
    for (id, ready, draining) in [
        (1, true, false),
        (2, false, false),
        (3, true, true),
        (4, true, false),
    ] {
        st.sessions.insert(
            ConnId(id),
            SessionEntry {
                ctl: Arc::default(),
                tcp: None,
                ready,
                draining,
            },
        );
    }
    let picks: Vec<u64> = (0..4).map(|_| st.pick_session().unwrap().0).collect();
    assert_eq!(picks, [1, 4, 1, 4]);
}

#[test]
fn waiting_upstream_spread_over_sessions() {
    let mut st = State::default();
    for id in [1, 2] {
        st.sessions.insert(
            ConnId(id),
            SessionEntry {
                ctl: Arc::default(),
                tcp: None,
                ready: true,
                draining: false,
            },
        );
    }
    for n in 0..3 {
        st.outbound
            .add(format!("u{n}"), OutKind::Upstream, Arc::from("{}"), None);
    }
    st.dispatch_waiting();
    let got = |st: &State, id: u64| -> Vec<String> {
        st.sessions[&ConnId(id)]
            .ctl
            .take()
            .into_iter()
            .map(|c| match c {
                Command::Deliver(i) => i.id,
                other => panic!("{other:?}"),
            })
            .collect()
    };
    assert_eq!(got(&st, 1), ["u0", "u2"]);
    assert_eq!(got(&st, 2), ["u1"]);
}

#[test]
fn serves_a_user_supplied_identity() {
    let cert = include_bytes!("../../tests/fixtures/other_name-cert.pem");
    let key = include_bytes!("../../tests/fixtures/other_name-key.pem");
    let builder = Emulator::builder().identity_pem(&cert[..], &key[..]);
    let dbg = format!("{builder:?}");
    assert!(
        dbg.contains("<redacted>") && !dbg.contains("PRIVATE KEY"),
        "{dbg}"
    );
    let emu = builder.start().unwrap();
    // The bundled certificate no longer verifies: the server shows the other one.
    assert!(tls_connect(&emu, "127.0.0.1").is_err());
    let connector = native_tls::TlsConnector::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let tcp = TcpStream::connect(emu.addr()).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let tls = connector.connect("127.0.0.1", tcp).unwrap();
    let served = tls.peer_certificate().unwrap().unwrap().to_der().unwrap();
    let want = native_tls::Certificate::from_pem(cert)
        .unwrap()
        .to_der()
        .unwrap();
    assert_eq!(served, want);

    // A key that does not load is refused at start, as InvalidInput.
    let e = Emulator::builder()
        .identity_pem(&cert[..], &b"not a key"[..])
        .start()
        .unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
}

/// The largest value of every duration and count the builder and the
/// scripting calls take: deadlines saturate (an unchecked `Instant +
/// Duration` panicked in the session thread and in `wait_until`), the poll
/// interval is capped, and the emulator still serves and stops on time.
#[test]
fn huge_settings_never_panic() {
    let emu = Emulator::builder()
        .sender_id("42")
        .server_key("k")
        .keepalive_interval(Duration::MAX)
        .drain_grace(Duration::MAX)
        .handshake_timeout(Duration::MAX)
        .max_stanza_size(usize::MAX)
        .max_connections(usize::MAX)
        .poll_interval(Duration::MAX)
        .record_client_bytes(usize::MAX)
        .start()
        .unwrap();
    assert_eq!(emu.shared.settings.poll, MAX_POLL);
    emu.set_ack_delay(Duration::MAX);
    emu.drop_every(Some(usize::MAX));
    emu.transient_nacks(|_| true, u32::MAX, NackCode::ServiceUnavailable);
    let mut conn = crate::Connection::connect(&emu.client_config()).unwrap();
    assert!(emu.wait_for_connections(1, Duration::MAX));
    emu.drop_after(usize::MAX);
    conn.send(&crate::Message::to("t")).unwrap();
    assert!(emu.wait_until(Duration::MAX, |l| l.total_received() == 1));
    // The answer is held back "forever": none comes.
    assert_eq!(
        conn.recv_event(Some(Duration::from_millis(50))).unwrap(),
        None
    );
    let t = Instant::now();
    emu.shutdown();
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
}
