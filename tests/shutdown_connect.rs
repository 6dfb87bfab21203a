//! A connection attempt in progress when `shutdown` begins stops at the
//! shutdown deadline: `shutdown` returns on time, no authentication
//! completes after it, and the connecting thread ends by itself soon after.
//! In memory (`MemCcs` with a slow handshake) and over TLS on 127.0.0.1
//! against a server that stalls the handshake.

#[path = "common/mem.rs"]
mod mem;
#[allow(dead_code)]
#[path = "common/script.rs"]
mod script;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use fcm_xmpp::client::{Backoff, Client, ClientConfig};
use fcm_xmpp::{Config, Endpoint, Message};
use mem::MemCcs;
use script::{ScriptServer, Step, CLIENT_HEADER_END, EMU_CERT, SASL_FEATURES, SERVER_HEADER};

/// The tests count this process's worker threads: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// How long past its deadline `shutdown` may take on a loaded 2-core
/// machine (the client's own margin is 100 ms).
const SLACK: Duration = Duration::from_millis(400);

/// Threads of this process whose name starts with `prefix`.
fn threads_named(prefix: &str) -> usize {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    dir.filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with(prefix))
        .count()
}

/// Waits up to `limit` for every worker thread (slots and reader threads)
/// to end; how long it took, or `None` if some still run.
fn workers_end_within(limit: Duration) -> Option<Duration> {
    let t = Instant::now();
    while threads_named("fcm-xmpp-") > 0 {
        if t.elapsed() >= limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Some(t.elapsed())
}

#[test]
fn a_slow_in_memory_handshake_is_cut_at_the_deadline() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let ccs = MemCcs::new(Duration::ZERO);
    ccs.lock().connect_delay = Duration::from_secs(3);
    let cfg = ClientConfig::new(Config::new("123456789012", "k"));
    let (client, _events) = Client::start_with(cfg, ccs.clone()).unwrap();
    client.send(Message::to("t").message_id("m")).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let t = Instant::now();
    let left = client.shutdown(Duration::from_millis(100));
    let took = t.elapsed();
    assert!(took < Duration::from_millis(100) + SLACK, "took {took:?}");
    assert_eq!(left.len(), 1);
    let ended = workers_end_within(Duration::from_millis(500));
    assert!(
        ended.is_some(),
        "the connecting thread still runs 500 ms later"
    );
    let st = ccs.lock();
    assert_eq!(st.attempts.len(), 1);
    assert_eq!(st.completed_after_cut, 0);
    assert!(st.written.is_empty());
}

/// The server accepts TLS, then trickles its stream header and SASL
/// features a byte every 4 ms (about 2 s), so the client's `<auth>` would
/// go out long after a `shutdown(100 ms)`. It must not: the server never
/// reaches the `<auth>` note, and the connecting thread ends at the
/// deadline instead of when the handshake timeout (20 s) runs out.
#[test]
fn a_stalled_tls_handshake_never_authenticates_after_shutdown() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let trickled = format!("{SERVER_HEADER}{SASL_FEATURES}").into_bytes();
    let every = Duration::from_millis(4);
    let trickle_time = every * trickled.len() as u32;
    let server = ScriptServer::start(vec![vec![
        Step::Tls,
        Step::Note("tls"),
        Step::Until(CLIENT_HEADER_END),
        Step::Trickle {
            bytes: trickled,
            every,
        },
        Step::Note("features sent"),
        Step::Until("</auth>"),
        Step::Note("auth"),
        Step::Silent,
    ]]);
    let conn = Config::new("123456789012", "k")
        .endpoint(Endpoint::new("127.0.0.1", server.addr.port()))
        .add_root_pem(EMU_CERT);
    let cfg = ClientConfig::new(conn).reconnect_backoff(Backoff::new(
        Duration::from_secs(10),
        Duration::from_secs(10),
    ));
    let (client, _events) = Client::start(cfg).unwrap();
    client.send(Message::to("t").message_id("m")).unwrap();
    // Into the trickle: TLS is up, the client waits for the features.
    let t = Instant::now();
    while !server.notes().iter().any(|(n, _)| *n == "tls") {
        assert!(t.elapsed() < Duration::from_secs(5), "no TLS handshake");
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(100));

    let t = Instant::now();
    let left = client.shutdown(Duration::from_millis(100));
    let took = t.elapsed();
    let deadline = t + Duration::from_millis(100);
    assert!(took < Duration::from_millis(100) + SLACK, "took {took:?}");
    assert_eq!(left.len(), 1);
    let ended = workers_end_within(Duration::from_millis(500));

    // Give the trickle time to finish: an attempt still running would
    // answer it with `<auth>`.
    std::thread::sleep(trickle_time + Duration::from_millis(300));
    let notes = server.notes();
    let after: Vec<_> = notes
        .iter()
        .filter(|(_, at)| *at > deadline)
        .map(|(n, _)| *n)
        .collect();
    assert!(
        !notes.iter().any(|(n, _)| *n == "auth"),
        "the server saw <auth> (notes after the deadline: {after:?}); \
         shutdown took {took:?}, threads ended {ended:?} after"
    );
    assert!(
        ended.is_some(),
        "the connecting thread still ran 500 ms later"
    );
    assert_eq!(server.accepted(), 1, "no new attempt after shutdown");
}
