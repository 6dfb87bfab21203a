//! `examples/ccs_bridge.rs` end to end: the built program runs as a child process
//! against the in-process emulator (judged by the independent XML parser), and test
//! apps talk to it over TCP on 127.0.0.1, one JSON object per line. Every wait is
//! bounded; a watchdog aborts a test that runs away.
//!
//! `cargo test --all-features` builds the examples first; `--test bridge` alone does
//! not (build them with `cargo build --examples --all-features`).
#![cfg(feature = "emulator")]

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use fcm_xmpp::emulator::Emulator;
use fcm_xmpp::NackCode;
use miniserde::json::{self, Object, Value};

const SENDER: &str = "123456789012";
const KEY: &str = "bridge-test-key";
/// The most any single wait in these tests takes.
const LIMIT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------------
// The bridge process

use common::example;

/// A directory under the temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "fcm-xmpp-bridge-{}-{}-{tag}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running bridge; killed on drop.
struct Bridge {
    child: Child,
    addr: SocketAddr,
    /// The startup line.
    start: Object,
    stderr: Arc<Mutex<String>>,
}

/// An emulator judged by the independent XML parser, and a file with its certificate.
struct Ccs {
    emu: common::Judged,
    dir: TempDir,
}

impl Ccs {
    fn start() -> Ccs {
        Ccs::with_receipts_for("com.example.a")
    }

    /// An emulator whose receipts carry `category`.
    fn with_receipts_for(category: &str) -> Ccs {
        let emu = common::judged(
            Emulator::builder()
                .sender_id(SENDER)
                .server_key(KEY)
                .receipt_category(category),
        );
        let dir = TempDir::new("ca");
        std::fs::write(dir.path().join("ca.pem"), Emulator::cert_pem()).expect("write ca");
        Ccs { emu, dir }
    }

    /// Starts a bridge on a free port against this emulator.
    fn bridge(&self, journal: Option<&Path>, extra: &[&str]) -> Bridge {
        let endpoint = self.emu.endpoint().to_string();
        let ca = self.dir.path().join("ca.pem");
        let mut cmd = Command::new(example("ccs_bridge"));
        cmd.args(["--endpoint", &endpoint, "--sender-id", SENDER])
            .arg("--ca-file")
            .arg(&ca)
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .env("FCM_SERVER_KEY", KEY)
            .env_remove("FCM_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(j) = journal {
            cmd.arg("--journal").arg(j);
        }
        let mut child = cmd.spawn().expect("start ccs_bridge");
        let stdout = child.stdout.take().expect("stdout");
        let mut err_pipe = child.stderr.take().expect("stderr");
        let stderr = Arc::new(Mutex::new(String::new()));
        let err = Arc::clone(&stderr);
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err_pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                err.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let line = match rx.recv_timeout(LIMIT) {
            Ok(l) => l,
            Err(e) => {
                let _ = child.kill();
                panic!(
                    "no startup line ({e:?}); stderr: {}",
                    stderr.lock().unwrap()
                );
            }
        };
        let start = object(&line);
        let addr = str_of(&start, "addr").parse().expect("startup addr");
        Bridge {
            child,
            addr,
            start,
            stderr,
        }
    }
}

impl Bridge {
    /// The startup line's count `k`.
    fn count(&self, k: &str) -> u64 {
        match self.start.get(k) {
            Some(Value::Number(n)) => n.to_string().parse().expect("count"),
            _ => panic!("startup line without {k}: {:?}", self.start),
        }
    }

    /// SIGTERM, then waits for a clean exit.
    fn terminate(mut self) {
        let pid = self.child.id().to_string();
        let ok = Command::new("kill")
            .args(["-s", "TERM", "--", &pid])
            .status()
            .expect("run kill");
        assert!(ok.success());
        let end = Instant::now() + LIMIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                assert_eq!(status.code(), Some(0), "{}", self.stderr.lock().unwrap());
                return;
            }
            assert!(Instant::now() < end, "bridge did not stop on SIGTERM");
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// Test apps

fn object(line: &str) -> Object {
    match json::from_str::<Value>(line) {
        Ok(Value::Object(o)) => o,
        _ => panic!("not a JSON object: {line:?}"),
    }
}

fn str_of<'a>(o: &'a Object, k: &str) -> &'a str {
    match o.get(k) {
        Some(Value::String(s)) => s,
        _ => panic!("no string {k} in {}", json::to_string(o)),
    }
}

fn kind(o: &Object) -> &str {
    str_of(o, "message_type")
}

/// One business application: lines out, parsed lines in (read on a thread).
struct App {
    session: String,
    stream: TcpStream,
    rx: Receiver<Object>,
}

impl App {
    fn connect(addr: SocketAddr, session: &str) -> App {
        let stream = TcpStream::connect(addr).expect("connect to the bridge");
        let read = stream.try_clone().expect("clone");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(read).lines() {
                let Ok(line) = line else { break };
                if tx.send(object(&line)).is_err() {
                    break;
                }
            }
        });
        App {
            session: session.to_string(),
            stream,
            rx,
        }
    }

    fn send(&mut self, line: &str) {
        self.stream.write_all(line.as_bytes()).expect("write");
        self.stream.write_all(b"\n").expect("write");
    }

    /// The next line, or `None` if the connection closed; fails after [`LIMIT`].
    fn recv(&self) -> Option<Object> {
        match self.rx.recv_timeout(LIMIT) {
            Ok(o) => Some(o),
            Err(RecvTimeoutError::Disconnected) => None,
            Err(RecvTimeoutError::Timeout) => panic!("{}: no line within {LIMIT:?}", self.session),
        }
    }

    fn next(&self) -> Object {
        self.recv()
            .unwrap_or_else(|| panic!("{}: connection closed", self.session))
    }

    fn logon(&mut self) -> Object {
        let l = format!(
            r#"{{"message_type":"LOGON","session_id":"{}"}}"#,
            self.session
        );
        self.send(&l);
        self.next()
    }

    fn logged_on(addr: SocketAddr, session: &str) -> App {
        let mut app = App::connect(addr, session);
        let r = app.logon();
        assert_eq!(str_of(&r, "status"), "SUCCESS", "{}", json::to_string(&r));
        app
    }

    fn downstream(&mut self, id: &str, group: Option<&str>, to: &str) {
        let group = group
            .map(|g| format!(r#","group_id":"{g}""#))
            .unwrap_or_default();
        let l = format!(
            r#"{{"message_type":"DOWNSTREAM","session_id":"{}","message_id":"{id}"{group},"fcm_data":{{"to":"{to}","data":{{"k":"v"}}}}}}"#,
            self.session
        );
        self.send(&l);
    }

    fn ack(&mut self, id: &str) {
        let l = format!(
            r#"{{"message_type":"ACK","session_id":"{}","message_id":"{id}"}}"#,
            self.session
        );
        self.send(&l);
    }

    /// Lines until `n` of kind `k` arrived (others kept in the result too).
    fn until(&self, k: &str, n: usize) -> Vec<Object> {
        let mut got = Vec::new();
        while got.iter().filter(|o| kind(o) == k).count() < n {
            got.push(self.next());
        }
        got
    }
}

impl Drop for App {
    fn drop(&mut self) {
        // The reader thread holds a clone of the socket: close it for both.
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}

fn ids<'a>(lines: &'a [Object], k: &str) -> Vec<&'a str> {
    lines
        .iter()
        .filter(|o| kind(o) == k)
        .map(|o| str_of(o, "message_id"))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Tests

#[test]
fn two_apps_get_their_own_outcomes_and_upstream_by_category() {
    let _w = common::watchdog("two_apps", Duration::from_secs(60));
    let ccs = Ccs::start();
    let bridge = ccs.bridge(None, &[]);
    let mut a = App::logged_on(bridge.addr, "com.example.a");
    let mut b = App::logged_on(bridge.addr, "com.example.b");

    // A second LOGON for a session already logged on is refused; the first stays up.
    let mut a2 = App::connect(bridge.addr, "com.example.a");
    let r = a2.logon();
    assert_eq!(str_of(&r, "status"), "FAILURE");
    assert!(str_of(&r, "error_string").contains("already logged on"));

    for i in 0..3 {
        a.downstream(&format!("a-{i}"), None, "device-a");
        b.downstream(&format!("b-{i}"), None, "device-b");
    }
    let got_a = a.until("DOWNSTREAM_ACK", 3);
    let got_b = b.until("DOWNSTREAM_ACK", 3);
    let mut ia = ids(&got_a, "DOWNSTREAM_ACK");
    let mut ib = ids(&got_b, "DOWNSTREAM_ACK");
    ia.sort_unstable();
    ib.sort_unstable();
    assert_eq!(ia, ["a-0", "a-1", "a-2"]);
    assert_eq!(ib, ["b-0", "b-1", "b-2"]);

    // Upstream goes to the app whose session id is the message's category.
    let ua = ccs
        .emu
        .inject_upstream("phone-1", "com.example.a", &[("x", "1")]);
    let ub = ccs
        .emu
        .inject_upstream("phone-2", "com.example.b", &[("y", "2")]);
    let up_a = a.until("UPSTREAM", 1);
    let up_b = b.until("UPSTREAM", 1);
    assert_eq!(ids(&up_a, "UPSTREAM"), [ua.as_str()]);
    assert_eq!(ids(&up_b, "UPSTREAM"), [ub.as_str()]);
    let u = up_a.iter().find(|o| kind(o) == "UPSTREAM").unwrap();
    let Some(Value::Object(fcm)) = u.get("fcm_data") else {
        panic!("no fcm_data")
    };
    assert_eq!(str_of(fcm, "from"), "phone-1");
    assert_eq!(str_of(fcm, "category"), "com.example.a");
    a.ack(&ua);
    b.ack(&ub);

    // What reached CCS: the six downstream ids, derived from (session, message id).
    let ledger = ccs.emu.ledger();
    let acked: BTreeMap<&str, ()> = ledger.acked_ids().into_iter().map(|i| (i, ())).collect();
    let want: Vec<String> = (0..3)
        .flat_map(|i| {
            [
                format!("com.example.a::a-{i}"),
                format!("com.example.b::b-{i}"),
            ]
        })
        .collect();
    for w in &want {
        assert!(acked.contains_key(w.as_str()), "{w} not acked: {ledger:?}");
    }
    assert!(ccs
        .emu
        .wait_until(LIMIT, |l| l.unacked_upstream().is_empty()));
    // Both ACKed: a graceful restart on an in-memory journal holds nothing anyway, so
    // check the apps saw nothing more than asked.
    assert!(a.rx.try_recv().is_err());
    bridge.terminate();
}

#[test]
fn upstream_and_outcomes_for_an_absent_app_are_held_until_it_logs_on() {
    let _w = common::watchdog("held", Duration::from_secs(60));
    let ccs = Ccs::start();
    let journal = TempDir::new("held");
    let bridge = ccs.bridge(Some(journal.path()), &[]);

    // Upstream for a session nobody logged on yet: journaled and acked to CCS.
    let up1 = ccs
        .emu
        .inject_upstream("phone-1", "com.example.late", &[("n", "1")]);
    let up2 = ccs
        .emu
        .inject_upstream("phone-1", "com.example.late", &[("n", "2")]);
    assert!(ccs
        .emu
        .wait_until(LIMIT, |l| l.unacked_upstream().is_empty()));

    // An outcome that arrives after its app left is held too.
    ccs.emu.set_ack_delay(Duration::from_millis(300));
    let mut app = App::logged_on(bridge.addr, "com.example.late");
    let first = app.until("UPSTREAM", 2);
    assert_eq!(ids(&first, "UPSTREAM"), [up1.as_str(), up2.as_str()]);
    app.downstream("m-1", None, "device-1");
    thread::sleep(Duration::from_millis(50));
    drop(app);
    assert!(ccs.emu.wait_until(LIMIT, |l| l.total_acked() == 1));

    // Logging on again: SUCCESS first, then what is held, in order: the two upstream
    // messages (never ACKed) and the outcome.
    let mut app = App::connect(bridge.addr, "com.example.late");
    let r = app.logon();
    assert_eq!(kind(&r), "LOGON_RESPONSE");
    assert_eq!(str_of(&r, "status"), "SUCCESS");
    let got = app.until("DOWNSTREAM_ACK", 1);
    assert_eq!(ids(&got, "UPSTREAM"), [up1.as_str(), up2.as_str()]);
    assert_eq!(ids(&got, "DOWNSTREAM_ACK"), ["m-1"]);
    app.ack(&up1);
    app.ack(&up2);

    // Sending m-2 twice while it is pending reaches CCS once and gets one outcome.
    app.downstream("m-2", None, "device-1");
    app.downstream("m-2", None, "device-1");
    let got = app.until("DOWNSTREAM_ACK", 1);
    assert_eq!(ids(&got, "DOWNSTREAM_ACK"), ["m-2"]);
    thread::sleep(Duration::from_millis(400));
    assert!(app.rx.try_recv().is_err(), "a second outcome for m-2");
    assert_eq!(ccs.emu.ledger().total_received(), 2);
    drop(app);

    // A second bridge on the same journal is refused.
    let endpoint = ccs.emu.endpoint().to_string();
    let out = Command::new(example("ccs_bridge"))
        .args([
            "--endpoint",
            &endpoint,
            "--sender-id",
            SENDER,
            "--listen",
            "127.0.0.1:0",
        ])
        .arg("--journal")
        .arg(journal.path())
        .env("FCM_SERVER_KEY", KEY)
        .output()
        .expect("run a second bridge");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.starts_with("error: --journal") && err.contains("locked"),
        "{err}"
    );

    // Nothing left: a restart on the same journal resends nothing and holds nothing.
    bridge.terminate();
    let again = ccs.bridge(Some(journal.path()), &[]);
    assert_eq!((again.count("resent"), again.count("held")), (0, 0));
}

#[test]
fn a_group_stays_in_order_under_service_unavailable_retries() {
    let _w = common::watchdog("group_order", Duration::from_secs(60));
    let ccs = Ccs::start();
    let bridge = ccs.bridge(None, &[]);
    // The group's first message is refused twice (retries after >= 1 s and >= 2 s).
    ccs.emu.transient_nacks(
        |id| id == "com.example.a:g:m-0",
        2,
        NackCode::ServiceUnavailable,
    );
    let mut app = App::logged_on(bridge.addr, "com.example.a");
    for i in 0..3 {
        app.downstream(&format!("m-{i}"), Some("g"), "device-1");
    }
    app.downstream("free", None, "device-2");
    // Another group, with an id longer than the client's group key limit.
    let long = "L".repeat(400);
    app.downstream("long-0", Some(&long), "device-3");
    app.downstream("long-1", Some(&long), "device-3");
    let got = app.until("DOWNSTREAM_ACK", 6);
    // The ungrouped message and the other group did not wait for the first group.
    let acks = ids(&got, "DOWNSTREAM_ACK");
    assert_eq!(&acks[3..], ["m-0", "m-1", "m-2"], "{acks:?}");
    let mut others = acks[..3].to_vec();
    others.sort_unstable();
    assert_eq!(others, ["free", "long-0", "long-1"]);
    let o = got
        .iter()
        .find(|o| str_of(o, "message_id") == "long-1")
        .unwrap();
    assert_eq!(str_of(o, "group_id"), long);

    // CCS saw m-1 only after m-0's last attempt, m-2 only after m-1.
    let ledger = ccs.emu.ledger();
    let received: Vec<&str> = ledger
        .connections
        .iter()
        .flat_map(|c| c.received.iter().map(String::as_str))
        .collect();
    let pos = |id: &str| -> Vec<usize> {
        received
            .iter()
            .enumerate()
            .filter(|(_, r)| **r == id)
            .map(|(i, _)| i)
            .collect()
    };
    let (m0, m1, m2) = (
        pos("com.example.a:g:m-0"),
        pos("com.example.a:g:m-1"),
        pos("com.example.a:g:m-2"),
    );
    assert_eq!((m0.len(), m1.len(), m2.len()), (3, 1, 1), "{received:?}");
    assert!(m0[2] < m1[0] && m1[0] < m2[0], "{received:?}");
}

#[test]
fn bad_lines_get_errors_and_the_connection_stays_up() {
    let _w = common::watchdog("bad_lines", Duration::from_secs(60));
    let ccs = Ccs::start();
    let bridge = ccs.bridge(None, &["--logon-timeout", "1"]);
    let mut app = App::connect(bridge.addr, "com.example.a");
    let cases: &[(&str, &str, &str)] = &[
        ("not json", "ERROR", "not valid JSON"),
        ("[1,2]", "ERROR", "not a JSON object"),
        (r#"{"session_id":"com.example.a"}"#, "ERROR", "message_type"),
        (
            r#"{"message_type":"DOWNSTREAM","session_id":"com.example.a","message_id":"x","fcm_data":{}}"#,
            "ERROR",
            "before LOGON",
        ),
        (
            r#"{"message_type":"LOGON","session_id":"bad id!"}"#,
            "LOGON_RESPONSE",
            "package name",
        ),
    ];
    // Every line carries `session_id` once the connection is logged on (ERROR too).
    let check = |app: &mut App, cases: &[(&str, &str, &str)], session: Option<&str>| {
        for (line, want_kind, want_text) in cases {
            app.send(line);
            let r = app.next();
            assert_eq!(kind(&r), *want_kind, "{line}: {}", json::to_string(&r));
            if let Some(s) = session {
                assert_eq!(
                    str_of(&r, "session_id"),
                    s,
                    "{line}: {}",
                    json::to_string(&r)
                );
            } else if *want_kind == "ERROR" {
                assert!(r.get("session_id").is_none(), "{}", json::to_string(&r));
            }
            assert!(
                str_of(&r, "error_string").contains(want_text),
                "{line}: {}",
                json::to_string(&r)
            );
        }
    };
    check(&mut app, cases, None);
    assert_eq!(str_of(&app.logon(), "status"), "SUCCESS");
    let long = format!("{{\"x\":\"{}\"}}", "a".repeat(70 * 1024));
    let cases: &[(&str, &str, &str)] = &[
        (&long, "ERROR", "longer than"),
        (
            r#"{"message_type":"HELLO","session_id":"com.example.a"}"#,
            "ERROR",
            "unknown message_type HELLO",
        ),
        (
            r#"{"message_type":"ACK","session_id":"com.example.a"}"#,
            "ERROR",
            "missing field message_id",
        ),
        (
            r#"{"message_type":"DOWNSTREAM","session_id":"com.example.a"}"#,
            "ERROR",
            "missing field message_id",
        ),
        (
            r#"{"message_type":"DOWNSTREAM","session_id":"com.example.b","message_id":"x","fcm_data":{"to":"d"}}"#,
            "ERROR",
            "not this connection's session",
        ),
        (
            r#"{"message_type":"DOWNSTREAM","session_id":"com.example.a","message_id":"x"}"#,
            "DOWNSTREAM_REJECT",
            "missing field fcm_data",
        ),
        (
            r#"{"message_type":"DOWNSTREAM","session_id":"com.example.a","message_id":"y","fcm_data":{"to":"d","time_to_live":"600"}}"#,
            "DOWNSTREAM_REJECT",
            "time_to_live",
        ),
        (
            r#"{"message_type":"DOWNSTREAM","session_id":"com.example.a","message_id":"a\u0001b","fcm_data":{"to":"d"}}"#,
            "DOWNSTREAM_REJECT",
            "control characters",
        ),
        (
            r#"{"message_type":"LOGON","session_id":"com.example.a"}"#,
            "ERROR",
            "already logged on",
        ),
    ];
    check(&mut app, cases, Some("com.example.a"));
    // Still up: a good message goes through. Nothing invalid reached CCS.
    app.downstream("ok", None, "device-1");
    let r = app.until("DOWNSTREAM_ACK", 1);
    assert_eq!(ids(&r, "DOWNSTREAM_ACK"), ["ok"]);
    assert_eq!(ccs.emu.ledger().total_received(), 1);

    // No LOGON in time: an error line, then the bridge closes the connection.
    let idle = App::connect(bridge.addr, "com.example.idle");
    let r = idle.next();
    assert!(str_of(&r, "error_string").contains("no LOGON"));
    assert!(idle.recv().is_none());
}

#[test]
fn a_slow_app_is_cut_off_without_holding_up_others_and_loses_nothing() {
    let _w = common::watchdog("slow_app", Duration::from_secs(90));
    const UP: usize = 2000;
    let ccs = Ccs::start();
    let bridge = ccs.bridge(None, &["--app-queue", "50"]);
    // The slow app logs on and then reads nothing (no reader thread).
    let mut slow = TcpStream::connect(bridge.addr).expect("connect");
    slow.write_all(b"{\"message_type\":\"LOGON\",\"session_id\":\"com.example.slow\"}\n")
        .unwrap();
    let big = "x".repeat(8000);
    let want: HashSet<String> = (0..UP)
        .map(|k| {
            ccs.emu
                .inject_upstream(&format!("phone-{k}"), "com.example.slow", &[("big", &big)])
        })
        .collect();
    // Another app is served all along.
    let mut fast = App::logged_on(bridge.addr, "com.example.fast");
    for i in 0..20 {
        fast.downstream(&format!("f-{i}"), None, "device-1");
    }
    assert_eq!(
        ids(&fast.until("DOWNSTREAM_ACK", 20), "DOWNSTREAM_ACK").len(),
        20
    );
    assert!(ccs
        .emu
        .wait_until(LIMIT, |l| l.unacked_upstream().is_empty()));
    // The slow app was cut off before it got everything: what it can still read ends.
    slow.set_read_timeout(Some(LIMIT)).unwrap();
    let mut seen = HashSet::new();
    for line in BufReader::new(slow).lines() {
        // The cut may come mid-line: a torn last line ends it too.
        let Ok(Value::Object(o)) = line
            .map(|l| json::from_str::<Value>(&l))
            .unwrap_or(Ok(Value::Null))
        else {
            break;
        };
        if kind(&o) == "UPSTREAM" {
            seen.insert(str_of(&o, "message_id").to_string());
        }
    }
    let before = seen.len();
    assert!(before < UP, "the slow app was never cut off");
    // ...and gets the rest when it logs on again.
    let mut again = App::logged_on(bridge.addr, "com.example.slow");
    while !want.iter().all(|id| seen.contains(id)) {
        let o = again.next();
        let id = str_of(&o, "message_id").to_string();
        again.ack(&id);
        seen.insert(id);
    }
    println!("slow app: cut off after {before} of {UP} upstream messages");
}

#[test]
fn the_readme_example_session_runs_as_written() {
    let _w = common::watchdog("readme_session", Duration::from_secs(60));
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let from = readme
        .find("An example session")
        .expect("the example session");
    let block = readme[from..]
        .split("```text\n")
        .nth(1)
        .and_then(|b| b.split("\n```").next())
        .expect("its text block");
    let ccs = Ccs::with_receipts_for("com.example.app");
    let bridge = ccs.bridge(None, &[]);
    let mut app = App::connect(bridge.addr, "com.example.app");
    let mut steps = 0;
    for line in block.lines() {
        if let Some(sent) = line.strip_prefix("> ") {
            app.send(sent);
        } else if let Some(want) = line.strip_prefix("< ") {
            if want.contains(r#""message_type":"UPSTREAM""#) {
                ccs.emu
                    .inject_upstream("phone-1", "com.example.app", &[("text", "hello")]);
            }
            let got = json::to_string(&app.next());
            assert!(
                common::glob_match(want, &got),
                "README shows\n{want}\nthe bridge wrote\n{got}"
            );
        } else {
            panic!("a line of the example session is neither > nor <: {line:?}");
        }
        steps += 1;
    }
    assert!(steps >= 10, "{block}");
    // The ACK of up-1 reached the bridge: CCS has nothing left to deliver and the app
    // nothing more to read.
    assert!(ccs
        .emu
        .wait_until(LIMIT, |l| l.unacked_upstream().is_empty()));
    thread::sleep(Duration::from_millis(200));
    assert!(app.rx.try_recv().is_err());
}

/// What one app saw across the whole kill-and-restart run.
#[derive(Default)]
struct Tally {
    /// App message id -> every outcome line kind seen (redeliveries included).
    outcomes: HashMap<String, Vec<String>>,
    /// Upstream ids seen (redeliveries included, counted in `upstream_lines`).
    upstream: HashSet<String>,
    upstream_lines: usize,
}

impl Tally {
    fn take(&mut self, app: &mut App, o: &Object) {
        match kind(o) {
            "DOWNSTREAM_ACK" | "DOWNSTREAM_REJECT" => self
                .outcomes
                .entry(str_of(o, "message_id").to_string())
                .or_default()
                .push(kind(o).to_string()),
            "UPSTREAM" => {
                let id = str_of(o, "message_id").to_string();
                app.ack(&id);
                self.upstream.insert(id);
                self.upstream_lines += 1;
            }
            other => panic!(
                "{}: unexpected {other}: {}",
                app.session,
                json::to_string(o)
            ),
        }
    }

    /// Reads until the app has outcomes for `n` ids and `up` upstream ids, or the
    /// connection closes; true if done.
    fn pump(&mut self, app: &mut App, n: usize, up: usize, stop_at: Option<usize>) -> bool {
        loop {
            if self.outcomes.len() >= n && self.upstream.len() >= up {
                return true;
            }
            if stop_at.is_some_and(|s| self.outcomes.len() >= s) {
                return false;
            }
            match app.recv() {
                Some(o) => self.take(app, &o),
                None => return false,
            }
        }
    }
}

#[test]
fn kill_and_restart_mid_run_loses_nothing() {
    let _w = common::watchdog("kill_restart", Duration::from_secs(180));
    const N: usize = 1000; // per app
    const M: usize = 100; // upstream per app, half before the kill, half after
    let ccs = Ccs::start();
    ccs.emu.set_ack_delay(Duration::from_millis(30));
    let journal = TempDir::new("kill");
    let sessions = ["com.example.a", "com.example.b"];
    let bridge = ccs.bridge(Some(journal.path()), &[]);
    let mut apps: Vec<App> = sessions
        .iter()
        .map(|s| App::logged_on(bridge.addr, s))
        .collect();
    let mut tallies: Vec<Tally> = sessions.iter().map(|_| Tally::default()).collect();
    let mut up_ids: Vec<Vec<String>> = vec![Vec::new(); 2];
    for (i, s) in sessions.iter().enumerate() {
        for k in 0..M / 2 {
            up_ids[i].push(
                ccs.emu
                    .inject_upstream(&format!("phone-{k}"), s, &[("k", "v")]),
            );
        }
    }
    // A third app logs on only after the restart: its upstream, acked to CCS before the
    // kill, exists only in the journal then.
    const LATE: &str = "com.example.late";
    let late_ids: HashSet<String> = (0..M / 2)
        .map(|k| {
            ccs.emu
                .inject_upstream(&format!("phone-{k}"), LATE, &[("k", "v")])
        })
        .collect();
    for app in apps.iter_mut() {
        for k in 0..N {
            app.downstream(&format!("m-{k}"), None, "device-1");
        }
    }
    // Kill once each app has about a third of its outcomes.
    for (app, t) in apps.iter_mut().zip(&mut tallies) {
        t.pump(app, N, 0, Some(N / 3));
    }
    assert!(ccs.emu.wait_until(LIMIT, |l| !late_ids
        .iter()
        .any(|id| l.unacked_upstream().contains(id))));
    let mut bridge = bridge;
    bridge.child.kill().expect("SIGKILL the bridge");
    let _ = bridge.child.wait();
    let at_kill: Vec<HashSet<String>> = tallies
        .iter()
        .map(|t| t.outcomes.keys().cloned().collect())
        .collect();
    drop(bridge);
    // Drain what was in flight to the apps, then the connections are gone.
    for (app, t) in apps.iter_mut().zip(&mut tallies) {
        while let Some(o) = app.recv() {
            t.take(app, &o);
        }
    }
    let before: usize = at_kill.iter().map(HashSet::len).sum();
    for (i, s) in sessions.iter().enumerate() {
        for k in M / 2..M {
            up_ids[i].push(
                ccs.emu
                    .inject_upstream(&format!("phone-{k}"), s, &[("k", "v")]),
            );
        }
    }

    // Restart on the same journal; apps log on again and resend what has no outcome.
    let bridge = ccs.bridge(Some(journal.path()), &[]);
    let resent = bridge.count("resent");
    let mut apps: Vec<App> = sessions
        .iter()
        .map(|s| App::logged_on(bridge.addr, s))
        .collect();
    let mut app_resent = 0;
    for (app, t) in apps.iter_mut().zip(&tallies) {
        for k in 0..N {
            let id = format!("m-{k}");
            if !t.outcomes.contains_key(&id) {
                app.downstream(&id, None, "device-1");
                app_resent += 1;
            }
        }
    }
    for (app, t) in apps.iter_mut().zip(&mut tallies) {
        assert!(
            t.pump(app, N, M, None),
            "{}: connection closed",
            app.session
        );
    }
    assert!(resent > 0, "nothing pending in the journal at the kill");
    let mut late = App::logged_on(bridge.addr, LATE);
    let mut late_tally = Tally::default();
    assert!(late_tally.pump(&mut late, 0, M / 2, None));
    assert_eq!(late_tally.upstream, late_ids);

    // The apps' end: one final outcome per id (an ACK), redeliveries only repeat it.
    let mut redelivered = 0;
    for (s, t) in sessions.iter().zip(&tallies) {
        assert_eq!(t.outcomes.len(), N, "{s}");
        for (id, seen) in &t.outcomes {
            assert!(
                seen.iter().all(|k| k == "DOWNSTREAM_ACK"),
                "{s} {id}: {seen:?}"
            );
            redelivered += seen.len() - 1;
        }
    }
    // Every upstream reached its app.
    for (i, t) in tallies.iter().enumerate() {
        let want: HashSet<String> = up_ids[i].iter().cloned().collect();
        assert_eq!(t.upstream, want, "{}", sessions[i]);
    }
    // CCS's end: every app message acked; repeats only for those in flight at the kill.
    assert!(ccs
        .emu
        .wait_until(LIMIT, |l| l.unacked_upstream().is_empty()));
    let ledger = ccs.emu.ledger();
    let acked = ledger.acked_ids();
    for s in &sessions {
        for k in 0..N {
            let id = format!("{s}::m-{k}");
            assert!(acked.contains(id.as_str()), "{id} never acked by CCS");
        }
    }
    let dups = ledger.duplicates();
    for d in &dups {
        let (s, mid) = d.split_once("::").expect("bridge id");
        let i = sessions.iter().position(|x| *x == s).expect("session");
        assert!(
            !at_kill[i].contains(mid),
            "{d} sent twice but had its outcome before the kill"
        );
    }
    let upstream_redelivered: usize = tallies
        .iter()
        .map(|t| t.upstream_lines - t.upstream.len())
        .sum();
    println!(
        "kill-and-restart: {n} downstream from 2 apps, {m} upstream; outcomes at the kill {before}; \
         resent from the journal on restart {resent}; resent by the apps {app_resent}; \
         sent to CCS twice {dups}; outcomes redelivered to apps {redelivered}; \
         upstream redelivered {upstream_redelivered}; CCS received {recv} stanzas for {distinct} ids",
        n = 2 * N,
        m = 2 * M,
        dups = dups.len(),
        recv = ledger.total_received(),
        distinct = ledger.distinct_received(),
    );
    // Every ACK committed: a clean stop and restart finds nothing to resend or deliver.
    thread::sleep(Duration::from_millis(300));
    drop(apps);
    drop(late);
    bridge.terminate();
    let last = ccs.bridge(Some(journal.path()), &[]);
    assert_eq!((last.count("resent"), last.count("held")), (0, 0));
}

#[test]
fn help_lists_every_flag_with_its_default_and_bad_flags_exit_1() {
    let run = |args: &[&str], key: Option<&str>| {
        let mut cmd = Command::new(example("ccs_bridge"));
        cmd.args(args).env_remove("FCM_LOG");
        match key {
            Some(k) => cmd.env("FCM_SERVER_KEY", k),
            None => cmd.env_remove("FCM_SERVER_KEY"),
        };
        cmd.output().expect("run ccs_bridge")
    };
    let help = run(&["--help"], None);
    assert_eq!(help.status.code(), Some(0));
    let text = String::from_utf8_lossy(&help.stdout);
    for want in [
        "usage: ccs_bridge ",
        "--listen HOST:PORT",
        "(default 127.0.0.1:5250)",
        "--journal DIR",
        "--logon-timeout S",
        "(default 10)",
        "--app-queue N",
        "--endpoint HOST:PORT",
        "--domain NAME",
        "--ca-file PEM",
        "--sender-id ID",
        "FCM_SERVER_KEY",
        "exit codes:",
        "  0  ",
        "  1  ",
    ] {
        assert!(text.contains(want), "--help lacks {want:?}\n{text}");
    }
    for (args, key, expect) in [
        (
            &["--listen", "127.0.0.1:0"][..],
            Some(KEY),
            "--sender-id is required",
        ),
        (&["--sender-id", SENDER][..], None, "FCM_SERVER_KEY"),
        (
            &["--sender-id", SENDER, "--listen", "nowhere"][..],
            Some(KEY),
            "--listen",
        ),
        (
            &["--sender-id", SENDER, "--bogus"][..],
            Some(KEY),
            "unknown flag --bogus",
        ),
    ] {
        let out = run(args, key);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(
            err.starts_with("error: ") && err.contains(expect),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn a_refused_server_key_ends_the_bridge_with_one_error_line() {
    let _w = common::watchdog("wrong_key", Duration::from_secs(60));
    let ccs = Ccs::start();
    let endpoint = ccs.emu.endpoint().to_string();
    let wrong = "not-the-key-4f1d";
    let mut child = Command::new(example("ccs_bridge"))
        .args([
            "--endpoint",
            &endpoint,
            "--sender-id",
            SENDER,
            "--listen",
            "127.0.0.1:0",
        ])
        .arg("--ca-file")
        .arg(ccs.dir.path().join("ca.pem"))
        .env("FCM_SERVER_KEY", wrong)
        .env_remove("FCM_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ccs_bridge");
    let end = Instant::now() + LIMIT;
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        if Instant::now() >= end {
            let _ = child.kill();
            panic!("the bridge kept running with a refused key");
        }
        thread::sleep(Duration::from_millis(10));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("error: ") && err.contains("auth"), "{err}");
    assert!(!err.contains(wrong), "{err}");
}

#[test]
fn a_message_that_keeps_killing_connections_gets_a_reject() {
    let _w = common::watchdog("connections_lost", Duration::from_secs(90));
    let ccs = Ccs::start();
    let bridge = ccs.bridge(None, &[]);
    let mut app = App::logged_on(bridge.addr, "com.example.a");
    // Every connection drops right after its first message, leaving it unanswered.
    ccs.emu.drop_every(Some(1));
    app.downstream("poison", None, "device-1");
    let mut got = app.next();
    while kind(&got) != "DOWNSTREAM_REJECT" {
        assert_ne!(kind(&got), "DOWNSTREAM_ACK");
        got = app.next();
    }
    assert_eq!(str_of(&got, "message_id"), "poison");
    assert!(
        str_of(&got, "error_string").contains("lost connections"),
        "{}",
        json::to_string(&got)
    );
    // The bridge carries on once CCS behaves again.
    ccs.emu.drop_every(None);
    app.downstream("after", None, "device-1");
    assert_eq!(
        ids(&app.until("DOWNSTREAM_ACK", 1), "DOWNSTREAM_ACK"),
        ["after"]
    );
}

#[test]
fn a_graceful_stop_keeps_unfinished_messages_for_the_next_run() {
    let _w = common::watchdog("graceful_stop", Duration::from_secs(60));
    let ccs = Ccs::start();
    let journal = TempDir::new("stop");
    let bridge = ccs.bridge(Some(journal.path()), &["--shutdown-timeout", "0.3"]);
    let mut app = App::logged_on(bridge.addr, "com.example.a");
    ccs.emu.set_ack_delay(Duration::from_secs(30));
    for i in 0..5 {
        app.downstream(&format!("m-{i}"), Some("g"), "device-1");
    }
    assert!(ccs.emu.wait_until(LIMIT, |l| l.total_received() >= 1));
    bridge.terminate();
    assert!(app.recv().is_none(), "an outcome before the stop");
    ccs.emu.set_ack_delay(Duration::ZERO);

    // The next run sends all five again, the group still in order.
    let bridge = ccs.bridge(Some(journal.path()), &[]);
    assert_eq!(bridge.count("resent"), 5);
    let app = App::logged_on(bridge.addr, "com.example.a");
    let got = app.until("DOWNSTREAM_ACK", 5);
    assert_eq!(
        ids(&got, "DOWNSTREAM_ACK"),
        ["m-0", "m-1", "m-2", "m-3", "m-4"]
    );
}
