//! Hostile and broken servers: each case is a scripted raw TLS/TCP server (or the emulator's
//! `send_raw`) on 127.0.0.1, and each must end in the exact typed error, or a clean reconnect,
//! within a bounded time and with bounded memory.
#![cfg(feature = "emulator")]

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::{Duration, Instant};

use common::script::{
    self, until, write, ScriptServer, Step, CLIENT_HEADER_END, EMU_CERT, SERVER_HEADER,
};
use common::{watchdog, Seen};
use fcm_xmpp::client::{Backoff, Client, ClientConfig, ClientEvent};
use fcm_xmpp::emulator::ConnId;
use fcm_xmpp::{
    Config, Connection, Emulator, Endpoint, Error, Event, Message, Phase, ProtocolError,
    TlsErrorKind, TlsTcpStream, XmlError,
};

const SENDER: &str = "123456789012";
const KEY: &str = "hostile-test-key";
/// A hang detector, not a speed target: every case must end well within this.
const BOUND: Duration = Duration::from_secs(5);
/// The handshake timeout the client is given against silent servers.
const HANDSHAKE: Duration = Duration::from_millis(300);
/// The client's stanza size limit (the default).
const MAX_STANZA: usize = 64 * 1024;
/// The stanza reader's read block.
const READ_BLOCK: usize = 16 * 1024;

// -- heap accounting ------------------------------------------------------------------------

/// Counts the heap bytes each thread holds, so a test can bound what the client buffered
/// while it handled a hostile server (the client runs on the test's own thread; OpenSSL's
/// buffers are malloc'ed outside Rust's allocator and not counted).
struct Counting;

thread_local! {
    static HELD: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn track(delta: isize) {
    let _ = HELD.try_with(|h| {
        let now = h.get() + delta;
        h.set(now);
        let _ = PEAK.try_with(|p| p.set(p.get().max(now)));
    });
}

// SAFETY: every call is forwarded unchanged to `System`; the counters are const-initialised
// thread-locals without destructors, so touching them never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            track(layout.size() as isize);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            track(layout.size() as isize);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        track(-(layout.size() as isize));
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            track(new_size as isize - layout.size() as isize);
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Runs `f` and returns its result, how long it took and the most heap it held on top of
/// what this thread held before.
fn measured<T>(f: impl FnOnce() -> T) -> (T, Duration, usize) {
    let base = HELD.with(Cell::get);
    PEAK.with(|p| p.set(base));
    let t = Instant::now();
    let r = f();
    let took = t.elapsed();
    let peak = PEAK.with(Cell::get) - base;
    (r, took, peak.max(0) as usize)
}

/// Heap a failed connect may use at most: the reader's buffer at its limit plus one read
/// block, the write buffer, and small change. Anything that buffers a hostile stream
/// without a limit blows through it.
const CONNECT_HEAP: usize = MAX_STANZA + READ_BLOCK + 64 * 1024;

// -- helpers --------------------------------------------------------------------------------

fn config_for(server: &ScriptServer) -> Config {
    common::init_logging();
    Config::new(SENDER, KEY)
        .endpoint(Endpoint::new("127.0.0.1", server.addr.port()))
        .add_root_pem(EMU_CERT)
        .connect_timeout(Some(Duration::from_secs(1)))
        .handshake_timeout(Some(HANDSHAKE))
        .close_timeout(Some(Duration::from_millis(300)))
}

/// Connects with `cfg`, which must fail; returns the error, checked for time and heap.
fn connect_err_with(server: ScriptServer, cfg: Config) -> Error {
    connect_err_within(server, cfg, CONNECT_HEAP)
}

/// As `connect_err_with`, with a heap bound of `max_heap` bytes.
fn connect_err_within(server: ScriptServer, cfg: Config, max_heap: usize) -> Error {
    let (r, took, heap) = measured(|| Connection::connect(&cfg));
    let err = match r {
        Ok(conn) => panic!("connected to a hostile server: {conn:?}"),
        Err(e) => e,
    };
    assert!(took < BOUND, "took {took:?}: {err:?}");
    assert!(heap < max_heap, "held {heap} bytes: {err:?}");
    drop(server);
    err
}

/// `connect_err_with` against a server playing `script`.
fn connect_err(script: Vec<Step>) -> Error {
    let server = ScriptServer::start(vec![script]);
    let cfg = config_for(&server);
    connect_err_with(server, cfg)
}

/// A connection through a scripted full handshake; once the client sends a message, the
/// server plays `after`.
fn connected_then(after: Vec<Step>) -> (ScriptServer, Connection<TlsTcpStream>) {
    let mut s = script::handshake();
    s.push(until("</message>"));
    s.extend(after);
    let server = ScriptServer::start(vec![s]);
    let mut conn = Connection::connect(&config_for(&server)).expect("scripted handshake");
    assert_eq!(conn.jid(), script::BOUND_JID);
    conn.send(&Message::to("device").message_id("m-1")).unwrap();
    (server, conn)
}

/// The error the next `recv_event` ends in, checked for time and heap.
fn recv_err(conn: &mut Connection<TlsTcpStream>) -> Error {
    let (r, took, heap) = measured(|| match conn.recv_event(Some(BOUND)) {
        Ok(Some(ev)) => panic!("unexpected event {ev:?}"),
        Ok(None) => panic!("no error within {BOUND:?}"),
        Err(e) => e,
    });
    assert!(took < BOUND, "took {took:?}: {r:?}");
    assert!(heap < CONNECT_HEAP, "held {heap} bytes: {r:?}");
    r
}

fn emulator() -> common::Judged {
    common::init_logging();
    common::start(SENDER, KEY)
}

fn emulator_conn(emu: &Emulator) -> (Connection<TlsTcpStream>, ConnId) {
    let conn = Connection::connect(&emu.client_config()).unwrap();
    assert!(emu.wait_for_connections(1, BOUND));
    (conn, emu.connections()[0])
}

fn next(conn: &mut Connection<TlsTcpStream>) -> Result<Event, Error> {
    match conn.recv_event(Some(BOUND)) {
        Ok(Some(ev)) => Ok(ev),
        Ok(None) => panic!("nothing within {BOUND:?}"),
        Err(e) => Err(e),
    }
}

/// The connection still works: a message gets its ack.
fn still_usable(conn: &mut Connection<TlsTcpStream>) {
    assert!(!conn.is_closed());
    let id = conn.send(&Message::to("device")).unwrap();
    let ev = next(conn).unwrap();
    assert!(matches!(&ev, Event::Ack(a) if a.message_id == id), "{ev:?}");
}

fn is_timeout(err: &Error, phase: Phase) -> bool {
    matches!(err, Error::Timeout(p) if *p == phase)
}

fn tls_kind(err: &Error) -> Option<TlsErrorKind> {
    match err {
        Error::Tls(t) => Some(t.kind()),
        _ => None,
    }
}

// -- a server that never answers, at each handshake step ------------------------------------

#[test]
fn silent_after_tcp_accept_is_a_tls_timeout() {
    let _w = watchdog("silent_tcp", Duration::from_secs(20));
    let err = connect_err(vec![Step::Silent]);
    assert!(is_timeout(&err, Phase::Tls), "{err:?}");
}

#[test]
fn silent_after_tls_is_a_handshake_timeout() {
    let _w = watchdog("silent_tls", Duration::from_secs(20));
    let err = connect_err(vec![Step::Tls, Step::Silent]);
    assert!(is_timeout(&err, Phase::Handshake), "{err:?}");
}

#[test]
fn silent_after_stream_header_is_a_handshake_timeout() {
    let _w = watchdog("silent_header", Duration::from_secs(20));
    let err = connect_err(vec![
        Step::Tls,
        until(CLIENT_HEADER_END),
        write(SERVER_HEADER),
        Step::Silent,
    ]);
    assert!(is_timeout(&err, Phase::Handshake), "{err:?}");
}

#[test]
fn silent_after_auth_is_a_handshake_timeout() {
    let _w = watchdog("silent_auth", Duration::from_secs(20));
    let mut s = script::until_auth();
    s.push(Step::Silent);
    let err = connect_err(s);
    assert!(is_timeout(&err, Phase::Handshake), "{err:?}");
}

#[test]
fn silent_after_bind_is_a_handshake_timeout() {
    let _w = watchdog("silent_bind", Duration::from_secs(20));
    let mut s = script::until_bind();
    s.push(Step::Silent);
    let err = connect_err(s);
    assert!(is_timeout(&err, Phase::Handshake), "{err:?}");
}

#[test]
fn silent_after_bind_result_is_a_handshake_timeout() {
    let _w = watchdog("silent_session", Duration::from_secs(20));
    let mut s = script::until_bind();
    s.extend([write(script::bind_result()), Step::Silent]);
    let err = connect_err(s);
    assert!(is_timeout(&err, Phase::Handshake), "{err:?}");
}

// -- a server that trickles: the timeouts bound each phase as a whole, not each read --------

#[test]
fn trickling_tls_handshake_is_a_tls_timeout() {
    let _w = watchdog("trickle_tls", Duration::from_secs(20));
    // A TLS handshake record announcing 16 KiB, then one byte every 50 ms: every read
    // returns something, so only a deadline over the whole TLS handshake ends it.
    let mut record = vec![0x16, 0x03, 0x03, 0x40, 0x00];
    record.extend(std::iter::repeat_n(0u8, 16 * 1024));
    let err = connect_err(vec![
        until("\u{16}\u{3}"),
        Step::Trickle {
            bytes: record,
            every: Duration::from_millis(50),
        },
    ]);
    assert!(is_timeout(&err, Phase::Tls), "{err:?}");
}

#[test]
fn trickling_xmpp_handshake_is_a_handshake_timeout() {
    let _w = watchdog("trickle_xmpp", Duration::from_secs(20));
    // Whitespace keepalives forever instead of the stream features.
    let err = connect_err(vec![
        Step::Tls,
        until(CLIENT_HEADER_END),
        write(SERVER_HEADER),
        Step::Trickle {
            bytes: vec![b' '; 1000],
            every: Duration::from_millis(20),
        },
    ]);
    assert!(is_timeout(&err, Phase::Handshake), "{err:?}");
}

// -- a server that never stops talking: deadlines hold, memory stays bounded ---------------

const UPSTREAM: &str = "<message to=\"123456789012@gcm.googleapis.com\" from=\"devices@gcm.googleapis.com\" type=\"normal\"><gcm xmlns=\"google:mobile:data\">{\"message_id\":\"up-1\",\"from\":\"device\",\"category\":\"com.example\",\"data\":{\"k\":\"v\"}}</gcm></message>";

#[test]
fn flood_of_stanzas_while_waiting_for_bind_is_refused() {
    let _w = watchdog("flood_bind", Duration::from_secs(20));
    // CCS sends waiting upstream right after bind, at most 100 un-acked; a server that
    // never stops must not fill memory with them while the client waits for its bind result.
    let mut s = script::until_bind();
    s.push(Step::Flood(UPSTREAM.as_bytes().to_vec()));
    let server = ScriptServer::start(vec![s]);
    let cfg = config_for(&server);
    // At most 256 small stanzas kept (about 1.4 KiB each here).
    let err = connect_err_within(server, cfg, 1024 * 1024);
    assert!(
        matches!(
            &err,
            Error::Protocol(ProtocolError::Unexpected {
                expected: "bind result",
                ..
            })
        ),
        "{err:?}"
    );
}

#[test]
fn flood_of_ignored_stanzas_does_not_starve_the_deadline() {
    let _w = watchdog("flood_ignored", Duration::from_secs(20));
    let (_server, mut conn) = connected_then(vec![Step::Flood(
        b"<iq type=\"result\" id=\"x\"/>".to_vec(),
    )]);
    let (r, took, heap) = measured(|| conn.recv_event(Some(Duration::from_millis(200))));
    assert_eq!(r.unwrap(), None);
    assert!(took < Duration::from_secs(2), "took {took:?}");
    assert!(heap < CONNECT_HEAP, "held {heap} bytes");
    let (r, took, _) = measured(|| conn.try_recv_event());
    assert_eq!(r.unwrap(), None);
    assert!(took < Duration::from_secs(2), "took {took:?}");
}

#[test]
fn close_under_a_flood_ends_in_time() {
    let _w = watchdog("flood_close", Duration::from_secs(20));
    let (_server, conn) = connected_then(vec![Step::Flood(UPSTREAM.as_bytes().to_vec())]);
    // close_timeout is 300 ms; close collects at most 1024 events.
    let (events, took, heap) = measured(|| conn.close().unwrap());
    assert!(took < Duration::from_secs(2), "took {took:?}");
    assert!(!events.is_empty());
    assert!(events.len() <= 1024, "{}", events.len());
    assert!(events.iter().all(|e| e.is_upstream()));
    assert!(heap < 2 * 1024 * 1024, "held {heap} bytes");
}

// -- a server that closes mid-stanza --------------------------------------------------------

#[test]
fn close_mid_stanza_in_the_handshake_is_truncated() {
    let _w = watchdog("close_mid_handshake", Duration::from_secs(20));
    let err = connect_err(vec![
        Step::Tls,
        until(CLIENT_HEADER_END),
        write(format!(
            "{SERVER_HEADER}<stream:features><mechanisms xmlns=\"urn:ietf:params:xml:ns:xmpp-sasl\"><mecha"
        )),
        Step::Close,
    ]);
    assert!(matches!(err, Error::Xml(XmlError::Truncated)), "{err:?}");
}

#[test]
fn close_mid_stanza_after_connect_is_truncated_and_closed() {
    let _w = watchdog("close_mid_stanza", Duration::from_secs(20));
    let (_server, mut conn) = connected_then(vec![
        write(
            "<message><data:gcm xmlns:data=\"google:mobile:data\">{\"message_type\":\"ack\",\"mess",
        ),
        Step::Close,
    ]);
    let err = recv_err(&mut conn);
    assert!(matches!(err, Error::Xml(XmlError::Truncated)), "{err:?}");
    assert!(err.is_closed());
    assert!(conn.is_closed());
    assert_eq!(conn.pending(), 1, "the unanswered message stays pending");
    assert!(matches!(conn.send(&Message::to("t")), Err(Error::Closed)));
}

// -- entity expansion bombs -----------------------------------------------------------------

fn billion_laughs() -> String {
    let mut dtd = String::from("<!DOCTYPE lolz [<!ENTITY lol \"lol\">");
    for i in 1..=9 {
        let prev = if i == 1 {
            "lol".to_string()
        } else {
            format!("lol{}", i - 1)
        };
        dtd.push_str(&format!(
            "<!ENTITY lol{i} \"{}\">",
            format!("&{prev};").repeat(10)
        ));
    }
    dtd.push_str("]>");
    dtd
}

#[test]
fn doctype_bomb_before_the_stream_header_is_refused() {
    let _w = watchdog("doctype_bomb", Duration::from_secs(20));
    let err = connect_err(vec![
        Step::Tls,
        until(CLIENT_HEADER_END),
        write(format!(
            "<?xml version=\"1.0\"?>{}{SERVER_HEADER}",
            billion_laughs()
        )),
        Step::Silent,
    ]);
    assert!(matches!(err, Error::Xml(XmlError::Doctype)), "{err:?}");
}

#[test]
fn doctype_and_entity_inside_the_stream_are_refused() {
    let _w = watchdog("doctype_in_stream", Duration::from_secs(20));
    let (_server, mut conn) = connected_then(vec![write(billion_laughs()), Step::Silent]);
    let err = recv_err(&mut conn);
    assert!(matches!(err, Error::Xml(XmlError::Doctype)), "{err:?}");
    assert!(conn.is_closed());

    let (_server, mut conn) = connected_then(vec![
        write("<message><gcm xmlns=\"google:mobile:data\">&lol9;</gcm></message>"),
        Step::Silent,
    ]);
    let err = recv_err(&mut conn);
    assert!(
        matches!(&err, Error::Xml(XmlError::UnknownEntity { name }) if name == "lol9"),
        "{err:?}"
    );
}

// -- oversized, deep, undecodable -----------------------------------------------------------

#[test]
fn multi_megabyte_stanza_is_refused_without_buffering_it() {
    let _w = watchdog("huge_stanza", Duration::from_secs(20));
    let (_server, mut conn) = connected_then(vec![
        Step::WriteRepeated {
            head: b"<message><gcm xmlns=\"google:mobile:data\">{\"message_id\":\"".to_vec(),
            fill: vec![b'a'; 16 * 1024],
            times: 256, // 4 MiB
            tail: b"\"}</gcm></message>".to_vec(),
        },
        Step::Silent,
    ]);
    let (err, took, heap) = measured(|| recv_err(&mut conn));
    assert!(
        matches!(err, Error::Xml(XmlError::StanzaTooLarge { max }) if max == MAX_STANZA),
        "{err:?}"
    );
    assert!(took < Duration::from_secs(2), "took {took:?}");
    assert!(
        heap <= MAX_STANZA + READ_BLOCK + 4096,
        "buffered {heap} bytes for a {MAX_STANZA}-byte limit"
    );
    assert!(conn.is_closed());
}

#[test]
fn ten_thousand_deep_nesting_is_too_deep() {
    let _w = watchdog("deep", Duration::from_secs(20));
    let (_server, mut conn) = connected_then(vec![
        write(format!("<message>{}", "<a>".repeat(10_000))),
        Step::Silent,
    ]);
    let err = recv_err(&mut conn);
    assert!(
        matches!(err, Error::Xml(XmlError::TooDeep { max: 32 })),
        "{err:?}"
    );
    assert!(conn.is_closed());
}

#[test]
fn invalid_utf8_is_refused() {
    let _w = watchdog("utf8", Duration::from_secs(20));
    let mut bytes =
        b"<message><gcm xmlns=\"google:mobile:data\">{\"message_type\":\"ack\",\"message_id\":\""
            .to_vec();
    bytes.extend_from_slice(b"\xff\xfe\xc3");
    bytes.extend_from_slice(b"\"}</gcm></message>");
    let (_server, mut conn) = connected_then(vec![Step::Write(bytes), Step::Silent]);
    let err = recv_err(&mut conn);
    assert!(matches!(err, Error::Xml(XmlError::InvalidUtf8)), "{err:?}");
    assert!(conn.is_closed());
}

#[test]
fn invalid_utf8_in_the_stream_header_is_refused() {
    let _w = watchdog("utf8_header", Duration::from_secs(20));
    let mut header = SERVER_HEADER.as_bytes().to_vec();
    // Inside the id attribute value.
    let at = SERVER_HEADER.find("3F2A").unwrap();
    header[at] = 0xc0;
    let err = connect_err(vec![
        Step::Tls,
        until(CLIENT_HEADER_END),
        Step::Write(header),
        Step::Silent,
    ]);
    assert!(matches!(err, Error::Xml(XmlError::InvalidUtf8)), "{err:?}");
}

// -- not XMPP at all ------------------------------------------------------------------------

#[test]
fn http_banner_is_a_typed_error_at_once() {
    let _w = watchdog("http_banner", Duration::from_secs(20));
    let err = connect_err(vec![
        Step::Tls,
        until(CLIENT_HEADER_END),
        write("HTTP/1.1 400 Bad Request\r\nContent-Type: text/html\r\nContent-Length: 11\r\n\r\nBad Request"),
        // Stays open: the client must not wait for more.
        Step::Silent,
    ]);
    assert!(
        matches!(err, Error::Xml(XmlError::Malformed { .. })),
        "{err:?}"
    );
}

#[test]
fn plain_tcp_where_tls_was_expected_is_not_tls() {
    let _w = watchdog("plain_tcp", Duration::from_secs(20));
    // A plaintext XMPP server: it reads the client's first bytes (a TLS ClientHello) and
    // answers with its stream header.
    let err = connect_err(vec![
        until("\u{16}\u{3}"),
        write(SERVER_HEADER),
        Step::Silent,
    ]);
    assert_eq!(tls_kind(&err), Some(TlsErrorKind::NotTls), "{err:?}");
    assert!(err.to_string().contains("TLS"), "{err}");

    // The same that speaks first, before reading anything.
    let err = connect_err(vec![write(SERVER_HEADER), Step::Silent]);
    assert_eq!(tls_kind(&err), Some(TlsErrorKind::NotTls), "{err:?}");

    // One that hangs up on the ClientHello gives no sign of speaking plaintext:
    // a TLS failure worth retrying, not `NotTls`.
    let err = connect_err(vec![until("\u{16}\u{3}"), Step::Close]);
    assert_eq!(tls_kind(&err), Some(TlsErrorKind::Other), "{err:?}");
    assert!(err.is_retryable(), "{err:?}");
    assert!(err.to_string().contains("peer closed"), "{err}");
}

// -- certificates ---------------------------------------------------------------------------

const OTHER_NAME_CERT: &[u8] = include_bytes!("fixtures/other_name-cert.pem");
const OTHER_NAME_KEY: &[u8] = include_bytes!("fixtures/other_name-key.pem");
const EXPIRED_CERT: &[u8] = include_bytes!("fixtures/expired-cert.pem");
const EXPIRED_KEY: &[u8] = include_bytes!("fixtures/expired-key.pem");

fn certificate_err(cert: &'static [u8], key: &'static [u8]) -> Error {
    let server = ScriptServer::with_identity(cert, key, vec![vec![Step::Tls, Step::Silent]]);
    // Trusts exactly this certificate (and not the emulator's).
    let mut cfg = config_for(&server);
    cfg.extra_root_pems = vec![cert.to_vec()];
    connect_err_with(server, cfg)
}

#[test]
fn certificate_for_another_name_is_refused() {
    let _w = watchdog("other_name", Duration::from_secs(20));
    let err = certificate_err(OTHER_NAME_CERT, OTHER_NAME_KEY);
    assert_eq!(tls_kind(&err), Some(TlsErrorKind::Certificate), "{err:?}");
    assert!(!err.is_retryable());
}

#[test]
fn expired_certificate_is_refused() {
    let _w = watchdog("expired", Duration::from_secs(20));
    let err = certificate_err(EXPIRED_CERT, EXPIRED_KEY);
    assert_eq!(tls_kind(&err), Some(TlsErrorKind::Certificate), "{err:?}");
    assert!(err.to_string().contains("expired"), "{err}");
    assert!(!err.is_retryable());
}

// -- XMPP-level refusals --------------------------------------------------------------------

#[test]
fn stream_error_in_the_handshake() {
    let _w = watchdog("stream_error_handshake", Duration::from_secs(20));
    let err = connect_err(vec![
        Step::Tls,
        until(CLIENT_HEADER_END),
        write(format!("{SERVER_HEADER}<stream:error><host-unknown xmlns=\"urn:ietf:params:xml:ns:xmpp-streams\"/><text xmlns=\"urn:ietf:params:xml:ns:xmpp-streams\">no such host</text></stream:error></stream:stream>")),
        Step::Silent,
    ]);
    match &err {
        Error::StreamError { condition, text } => {
            assert_eq!(condition, "host-unknown");
            assert_eq!(text.as_deref(), Some("no such host"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn stream_error_after_connect_closes() {
    let _w = watchdog("stream_error", Duration::from_secs(20));
    let emu = emulator();
    let (mut conn, id) = emulator_conn(&emu);
    assert!(emu.send_raw(
        id,
        "<stream:error><system-shutdown xmlns=\"urn:ietf:params:xml:ns:xmpp-streams\"/></stream:error></stream:stream>"
    ));
    let err = recv_err(&mut conn);
    assert!(
        matches!(&err, Error::StreamError { condition, text: None } if condition == "system-shutdown"),
        "{err:?}"
    );
    assert!(err.is_closed());
    assert!(conn.is_closed());
}

#[test]
fn sasl_failure_is_auth_failed() {
    let _w = watchdog("sasl_failure", Duration::from_secs(20));
    let mut s = script::until_auth();
    s.extend([
        write("<failure xmlns=\"urn:ietf:params:xml:ns:xmpp-sasl\"><account-disabled/><text xml:lang=\"en\">disabled</text></failure>"),
        Step::Silent,
    ]);
    let err = connect_err(s);
    assert!(
        matches!(&err, Error::AuthFailed { condition } if condition == "account-disabled"),
        "{err:?}"
    );
    assert!(!err.is_retryable());

    // A server that just hangs up after <auth> (see `fcm_xmpp::protocol`,
    // section Handshake).
    let mut s = script::until_auth();
    s.push(Step::Close);
    let err = connect_err(s);
    assert!(
        matches!(&err, Error::AuthFailed { condition } if condition == "connection-closed"),
        "{err:?}"
    );
}

#[test]
fn bind_error_is_bind_failed() {
    let _w = watchdog("bind_error", Duration::from_secs(20));
    let mut s = script::until_bind();
    s.extend([
        write("<iq type=\"error\" id=\"bind1\"><error type=\"cancel\"><not-allowed xmlns=\"urn:ietf:params:xml:ns:xmpp-stanzas\"/></error></iq>"),
        Step::Silent,
    ]);
    let err = connect_err(s);
    assert!(
        matches!(&err, Error::Protocol(ProtocolError::BindFailed { condition }) if condition == "not-allowed"),
        "{err:?}"
    );
}

// -- bad CCS payloads: one stanza refused, the connection stays usable ----------------------

#[test]
fn message_without_gcm_is_missing_payload() {
    let _w = watchdog("no_gcm", Duration::from_secs(20));
    let emu = emulator();
    let (mut conn, id) = emulator_conn(&emu);
    assert!(emu.send_raw(
        id,
        "<message from=\"devices@gcm.googleapis.com\"><body>hello</body></message>"
    ));
    let err = next(&mut conn).unwrap_err();
    assert!(
        matches!(err, Error::Protocol(ProtocolError::MissingPayload)),
        "{err:?}"
    );
    still_usable(&mut conn);
}

#[test]
fn json_that_is_not_an_object_is_bad_payload() {
    let _w = watchdog("json_array", Duration::from_secs(20));
    let emu = emulator();
    let (mut conn, id) = emulator_conn(&emu);
    for json in ["[1,2,3]", "\"ack\"", "{\"message_type\":", "null"] {
        assert!(emu.send_raw(
            id,
            format!(
                "<message><data:gcm xmlns:data=\"google:mobile:data\">{json}</data:gcm></message>"
            )
        ));
        let err = next(&mut conn).unwrap_err();
        assert!(
            matches!(err, Error::Protocol(ProtocolError::BadPayload { .. })),
            "{json}: {err:?}"
        );
    }
    still_usable(&mut conn);
}

#[test]
fn huge_json_number_is_bad_payload() {
    let _w = watchdog("json_number", Duration::from_secs(20));
    let emu = emulator();
    let (mut conn, id) = emulator_conn(&emu);
    let digits = "9".repeat(40_000);
    for json in [
        format!("{{\"message_type\":\"ack\",\"message_id\":\"x\",\"n\":{digits}}}"),
        "{\"message_id\":\"u\",\"from\":\"d\",\"time_to_live\":1e999999}".to_string(),
    ] {
        assert!(emu.send_raw(
            id,
            format!("<message><gcm xmlns=\"google:mobile:data\">{json}</gcm></message>")
        ));
        let err = next(&mut conn).unwrap_err();
        assert!(
            matches!(err, Error::Protocol(ProtocolError::BadPayload { .. })),
            "{err:?}"
        );
    }
    still_usable(&mut conn);
}

fn ack_stanza(id: &str) -> String {
    format!("<message><data:gcm xmlns:data=\"google:mobile:data\">{{\"message_type\":\"ack\",\"message_id\":\"{id}\",\"from\":\"device\"}}</data:gcm></message>")
}

#[test]
fn ack_for_an_unknown_id_is_returned_and_changes_nothing() {
    let _w = watchdog("unknown_ack", Duration::from_secs(20));
    let emu = emulator();
    let (mut conn, id) = emulator_conn(&emu);
    // One real message in flight (its answer held back past the end of the test) while
    // the stray ack arrives.
    emu.set_ack_delay(Duration::from_secs(60));
    let real = conn.send(&Message::to("device")).unwrap();
    assert!(emu.wait_until(BOUND, |l| l.total_received() == 1));
    assert!(emu.send_raw(id, ack_stanza("never-sent")));
    let ev = next(&mut conn).unwrap();
    assert!(
        matches!(&ev, Event::Ack(a) if a.message_id == "never-sent"),
        "{ev:?}"
    );
    assert_eq!(conn.pending(), 1);
    assert_eq!(conn.pending_ids().collect::<Vec<_>>(), [real.as_str()]);
    assert_eq!(conn.try_recv_event().unwrap(), None);
    assert_eq!(conn.pending(), 1);
}

#[test]
fn duplicate_acks_are_returned_and_the_count_stays_right() {
    let _w = watchdog("duplicate_acks", Duration::from_secs(20));
    let emu = emulator();
    let (mut conn, id) = emulator_conn(&emu);
    let m = conn
        .send(&Message::to("device").message_id("dup-1"))
        .unwrap();
    let ev = next(&mut conn).unwrap();
    assert!(matches!(&ev, Event::Ack(a) if a.message_id == m), "{ev:?}");
    assert_eq!(conn.pending(), 0);
    assert!(emu.send_raw(id, format!("{}{}", ack_stanza(&m), ack_stanza(&m))));
    for _ in 0..2 {
        let ev = next(&mut conn).unwrap();
        assert!(matches!(&ev, Event::Ack(a) if a.message_id == m), "{ev:?}");
        assert_eq!(conn.pending(), 0);
    }
    // A second message with the same id may be sent again and is counted once.
    conn.send(&Message::to("device").message_id("dup-1"))
        .unwrap();
    assert_eq!(conn.pending(), 1);
    let ev = next(&mut conn).unwrap();
    assert!(matches!(&ev, Event::Ack(a) if a.message_id == m), "{ev:?}");
    assert_eq!(conn.pending(), 0);
    assert_eq!(conn.window_free(), 100);
}

// -- the worker client: a drop mid-stanza is a clean reconnect ------------------------------

/// A worker config for `server`, whose later connections relay to `emu`:
/// short handshake timeout and reconnect backoff.
fn relayed_config(emu: &Emulator, server: &ScriptServer) -> ClientConfig {
    let mut cfg = emu.client_config();
    cfg.endpoint = Endpoint::new("127.0.0.1", server.addr.port());
    ClientConfig::new(cfg.handshake_timeout(Some(Duration::from_secs(2)))).reconnect_backoff(
        Backoff::new(Duration::from_millis(20), Duration::from_millis(200)),
    )
}

#[test]
fn worker_reconnects_after_a_mid_stanza_drop_and_delivers() {
    let _w = watchdog("worker_mid_stanza", Duration::from_secs(30));
    let emu = emulator();
    // First connection: a scripted CCS that takes the message, starts an answer and hangs
    // up mid-stanza. Every later connection is relayed to the emulator.
    let mut first = script::handshake();
    first.extend([
        until("</message>"),
        write(
            "<message><data:gcm xmlns:data=\"google:mobile:data\">{\"message_type\":\"ack\",\"mes",
        ),
        Step::Close,
    ]);
    let server = ScriptServer::start(vec![first, vec![Step::Relay(emu.addr())]]);
    let (client, mut events) = Client::start(relayed_config(&emu, &server)).unwrap();
    let id = client.send(Message::to("device")).unwrap();
    let mut seen = Seen::default();
    let t = Instant::now();
    assert!(
        seen.collect(&mut events, BOUND, |s| s.outcomes.contains_key(&id)),
        "no outcome; saw {:?}",
        seen.other
    );
    assert!(t.elapsed() < BOUND);
    assert_eq!(seen.outcomes[&id], ["delivered"]);
    let order: Vec<&str> = seen
        .other
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Connected { jid, .. } if jid == script::BOUND_JID => Some("connected"),
            ClientEvent::Connected { .. } => Some("reconnected"),
            ClientEvent::Lost { .. } => Some("lost"),
            ClientEvent::Reconnecting { .. } => Some("reconnecting"),
            _ => None,
        })
        .collect();
    assert_eq!(order, ["connected", "lost", "reconnected"]);
    let lost = seen.other.iter().find_map(|e| match e {
        ClientEvent::Lost { error, resent, .. } => Some((error.clone(), *resent)),
        _ => None,
    });
    let (error, resent) = lost.unwrap();
    assert_eq!(resent, 1);
    assert!(
        matches!(*error, fcm_xmpp::Error::Xml(fcm_xmpp::XmlError::Truncated)),
        "{error}"
    );
    assert_eq!(server.accepted(), 2);
    let ledger = emu.ledger();
    assert_eq!(ledger.total_received(), 1);
    assert_eq!(ledger.total_acked(), 1);
    client.shutdown(Duration::from_secs(1));
}

#[test]
fn worker_retries_a_server_that_hangs_up_during_the_tls_handshake() {
    let _w = watchdog("worker_tls_hang_up", Duration::from_secs(30));
    let emu = emulator();
    // The first connection is cut on the ClientHello (a restarting front end,
    // a load balancer): no sign of a plaintext server, so it is worth another
    // attempt. Later connections reach the emulator.
    let server = ScriptServer::start(vec![
        vec![until("\u{16}\u{3}"), Step::Close],
        vec![Step::Relay(emu.addr())],
    ]);
    let (client, mut events) = Client::start(relayed_config(&emu, &server)).unwrap();
    let id = client.send(Message::to("device")).unwrap();
    let mut seen = Seen::default();
    assert!(
        seen.collect(&mut events, BOUND, |s| s.outcomes.contains_key(&id)),
        "no outcome; saw {:?}",
        seen.other
    );
    assert_eq!(seen.outcomes[&id], ["delivered"]);
    let retried = seen.other.iter().find_map(|e| match e {
        ClientEvent::Reconnecting { error, .. } => Some(error.clone()),
        _ => None,
    });
    let error = retried.expect("a Reconnecting event for the cut handshake");
    assert!(error.is_retryable(), "{error:?}");
    assert!(
        matches!(&*error, fcm_xmpp::Error::Tls(t) if t.kind() == TlsErrorKind::Other),
        "{error:?}"
    );
    assert!(!seen
        .other
        .iter()
        .any(|e| matches!(e, ClientEvent::Fatal { .. })));
    assert_eq!(server.accepted(), 2);
    client.shutdown(Duration::from_secs(1));
}
