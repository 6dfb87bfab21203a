//! The example programs' command-line contract, end to end: each program is run
//! as a child process against an emulator and its stdout (one JSON object per
//! line), stderr and exit code are checked, and so is what reached the server.
//!
//! `cargo test --all-features` builds the examples into `target/<profile>/examples/`
//! before it runs the tests; running only this file (`--test programs`) does not.
#![cfg(feature = "emulator")]

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use fcm_xmpp::emulator::Emulator;
use fcm_xmpp::xml::{Packet, ReaderLimits, StanzaReader};
use fcm_xmpp::NackCode;
use miniserde::json::{self, Number, Object, Value};

const SENDER: &str = "123456789012";
const KEY: &str = "programs-test-key";
/// The most any one program run may take before it is killed and the test fails.
const LIMIT: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------------------------
// Running the programs

use common::example;

/// A file in the temp directory, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    /// A unique path; the file is not created.
    fn reserve(tag: &str) -> TempFile {
        static N: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        TempFile(std::env::temp_dir().join(format!(
            "fcm-xmpp-programs-{}-{}-{nanos}-{tag}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        )))
    }

    fn with(tag: &str, bytes: &[u8]) -> TempFile {
        let f = TempFile::reserve(tag);
        std::fs::write(&f.0, bytes).expect("write temp file");
        f
    }

    fn path(&self) -> &str {
        self.0.to_str().expect("utf-8 temp path")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A running example program; killed on drop if still running.
struct Proc {
    name: String,
    child: Child,
    lines: Receiver<String>,
    /// Stdout lines already taken with `next_line`.
    taken: Vec<String>,
    stderr: Arc<Mutex<String>>,
    readers: Vec<thread::JoinHandle<()>>,
}

/// How a program ended.
struct Finished {
    name: String,
    code: Option<i32>,
    stdout: Vec<String>,
    stderr: String,
}

impl Proc {
    /// Starts `name` with `args`; `FCM_SERVER_KEY` is `key` (unset for `None`),
    /// `FCM_LOG` is unset.
    fn spawn(name: &str, args: &[&str], key: Option<&str>) -> Proc {
        Proc::spawn_with(name, args, key, &[], None)
    }

    /// Like [`Proc::spawn`], with extra environment variables and, for `Some`, these
    /// bytes on stdin (then left open until the program exits).
    fn spawn_with(
        name: &str,
        args: &[&str],
        key: Option<&str>,
        env: &[(&str, &str)],
        stdin: Option<&[u8]>,
    ) -> Proc {
        let mut cmd = Command::new(example(name));
        cmd.args(args)
            .env_remove("FCM_LOG")
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        match key {
            Some(k) => cmd.env("FCM_SERVER_KEY", k),
            None => cmd.env_remove("FCM_SERVER_KEY"),
        };
        cmd.envs(env.iter().copied());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        if let (Some(bytes), Some(pipe)) = (stdin, child.stdin.as_mut()) {
            pipe.write_all(bytes).expect("write the program's stdin");
            pipe.flush().expect("flush the program's stdin");
        }
        let stdout = child.stdout.take().unwrap();
        let mut stderr_pipe = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        let stderr = Arc::new(Mutex::new(String::new()));
        let err = Arc::clone(&stderr);
        let readers = vec![
            thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            }),
            thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = stderr_pipe.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    err.lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            }),
        ];
        Proc {
            name: name.to_string(),
            child,
            lines,
            taken: Vec::new(),
            stderr,
            readers,
        }
    }

    /// The next stdout line, waiting at most `limit`.
    fn next_line(&mut self, limit: Duration) -> String {
        match self.lines.recv_timeout(limit) {
            Ok(line) => {
                self.taken.push(line.clone());
                line
            }
            Err(e) => {
                let _ = self.child.kill();
                panic!(
                    "{}: no stdout line within {limit:?} ({e:?}); stdout so far: {:?}; stderr: {}",
                    self.name,
                    self.taken,
                    self.stderr.lock().unwrap()
                );
            }
        }
    }

    /// Waits for the program to exit, at most `limit`; kills it and fails the test after that.
    fn wait(mut self, limit: Duration) -> Finished {
        let deadline = Instant::now() + limit;
        let status = loop {
            match self.child.try_wait().expect("try_wait") {
                Some(status) => break Some(status),
                None if Instant::now() >= deadline => break None,
                None => thread::sleep(Duration::from_millis(5)),
            }
        };
        if status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        let mut stdout = std::mem::take(&mut self.taken);
        stdout.extend(self.lines.try_iter());
        let done = Finished {
            name: self.name.clone(),
            code: status.and_then(|s| s.code()),
            stdout,
            stderr: self.stderr.lock().unwrap().clone(),
        };
        assert!(
            status.is_some(),
            "still running after {limit:?}, killed\n{done}"
        );
        done
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Finished {
    /// Every stdout line parsed as a JSON object.
    fn json(&self) -> Vec<Object> {
        self.stdout
            .iter()
            .map(|line| match json::from_str::<Value>(line) {
                Ok(Value::Object(o)) => o,
                _ => panic!("stdout line is not a JSON object: {line:?}\n{self}"),
            })
            .collect()
    }

    fn stderr_lines(&self) -> Vec<&str> {
        self.stderr.lines().collect()
    }
}

impl fmt::Display for Finished {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} exit code {:?}", self.name, self.code)?;
        writeln!(f, "--- stdout")?;
        for l in &self.stdout {
            writeln!(f, "{l}")?;
        }
        write!(f, "--- stderr\n{}---", self.stderr)
    }
}

/// Runs a program to its end.
fn run(name: &str, args: &[&str], key: Option<&str>) -> Finished {
    Proc::spawn(name, args, key).wait(LIMIT)
}

/// The common flags for a server at `endpoint` whose certificate is in `ca`.
fn flags<'a>(endpoint: &'a str, ca: &'a TempFile) -> Vec<&'a str> {
    vec![
        "--endpoint",
        endpoint,
        "--ca-file",
        ca.path(),
        "--sender-id",
        SENDER,
    ]
}

fn emulator() -> common::Judged {
    common::judged(Emulator::builder().sender_id(SENDER).server_key(KEY))
}

fn endpoint_of(emu: &Emulator) -> String {
    emu.endpoint().to_string()
}

// ---------------------------------------------------------------------------------------------
// Reading JSON lines

fn str_of<'a>(o: &'a Object, key: &str) -> &'a str {
    match o.get(key) {
        Some(Value::String(s)) => s,
        other => panic!("{key:?} is not a string in {}: {other:?}", show(o)),
    }
}

fn num_of(o: &Object, key: &str) -> f64 {
    match o.get(key) {
        Some(Value::Number(Number::U64(n))) => *n as f64,
        Some(Value::Number(Number::I64(n))) => *n as f64,
        Some(Value::Number(Number::F64(n))) => *n,
        other => panic!("{key:?} is not a number in {}: {other:?}", show(o)),
    }
}

fn event(o: &Object) -> &str {
    str_of(o, "event")
}

fn keys(o: &Object) -> Vec<&str> {
    o.keys().map(String::as_str).collect()
}

/// A JSON object of strings as a map (panics on other values).
fn string_map(v: Option<&Value>) -> BTreeMap<String, String> {
    match v {
        Some(Value::Object(o)) => o
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => (k.clone(), s.clone()),
                other => panic!("{k:?} is not a string: {other:?}"),
            })
            .collect(),
        other => panic!("not an object: {other:?}"),
    }
}

fn show(o: &Object) -> String {
    json::to_string(&Value::Object(o.clone()))
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The `connected` line: exactly `event` and a JID of the test sender.
fn assert_connected(o: &Object) {
    assert_eq!(event(o), "connected", "{}", show(o));
    assert_eq!(keys(o), ["event", "jid"], "{}", show(o));
    let jid = str_of(o, "jid");
    assert!(
        jid.starts_with(&format!("{SENDER}@gcm.googleapis.com/")),
        "{jid}"
    );
}

/// Checks the `summary` line: its exact keys, the counts, numeric `elapsed_s` and `rate`.
fn assert_summary(o: &Object, sent: u64, acked: u64, nacked: u64) {
    assert_eq!(event(o), "summary", "{}", show(o));
    let mut k = keys(o);
    k.sort_unstable();
    assert_eq!(
        k,
        ["acked", "elapsed_s", "event", "nacked", "rate", "sent"],
        "{}",
        show(o)
    );
    assert_eq!(num_of(o, "sent"), sent as f64, "{}", show(o));
    assert_eq!(num_of(o, "acked"), acked as f64, "{}", show(o));
    assert_eq!(num_of(o, "nacked"), nacked as f64, "{}", show(o));
    let elapsed = num_of(o, "elapsed_s");
    let rate = num_of(o, "rate");
    assert!(
        elapsed.is_finite() && (0.0..60.0).contains(&elapsed),
        "{}",
        show(o)
    );
    assert!(rate.is_finite() && rate >= 0.0, "{}", show(o));
}

/// The `message_id`s of the lines with this event, in order.
fn ids_of(lines: &[Object], ev: &str) -> Vec<String> {
    lines
        .iter()
        .filter(|o| event(o) == ev)
        .map(|o| str_of(o, "message_id").to_string())
        .collect()
}

fn distinct(ids: &[String]) -> HashSet<String> {
    let set: HashSet<String> = ids.iter().cloned().collect();
    assert_eq!(set.len(), ids.len(), "repeated ids: {ids:?}");
    set
}

// ---------------------------------------------------------------------------------------------
// A TLS-terminating tap: sits between a program and the emulator with the emulator's own
// certificate and records, in plain text, what the program sent. The emulator's ledger has
// message ids only; the tap shows the messages' fields.

/// The emulator's private key (committed, test-only; see `Emulator::cert_pem`).
const EMULATOR_KEY_PEM: &[u8] = include_bytes!("../src/emulator/testdata/key.pem");

/// What the client sent on one connection, in plain text.
type Record = Arc<Mutex<Vec<u8>>>;

struct Tap {
    addr: SocketAddr,
    /// Per connection, the plain-text bytes the client sent.
    sent: Arc<Mutex<Vec<Record>>>,
    stop: Arc<AtomicBool>,
}

impl Tap {
    fn start(target: SocketAddr) -> Tap {
        let identity =
            native_tls::Identity::from_pkcs8(Emulator::cert_pem(), EMULATOR_KEY_PEM).unwrap();
        let acceptor = native_tls::TlsAcceptor::new(identity).unwrap();
        let connector = native_tls::TlsConnector::builder()
            .add_root_certificate(native_tls::Certificate::from_pem(Emulator::cert_pem()).unwrap())
            .build()
            .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let sent: Arc<Mutex<Vec<Record>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (all, s) = (Arc::clone(&sent), Arc::clone(&stop));
        thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((tcp, _)) => {
                        let record = Arc::new(Mutex::new(Vec::new()));
                        all.lock().unwrap().push(Arc::clone(&record));
                        let (acceptor, connector, s) =
                            (acceptor.clone(), connector.clone(), Arc::clone(&s));
                        thread::spawn(move || {
                            if let Err(e) = relay(tcp, target, &acceptor, &connector, &record, &s) {
                                eprintln!("tap: {e}");
                            }
                        });
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Tap { addr, sent, stop }
    }

    fn endpoint(&self) -> String {
        self.addr.to_string()
    }

    /// Every downstream message the clients sent (JSON objects with `to` and no
    /// `message_type`; acks of upstream messages are left out), in order per connection.
    fn downstream(&self) -> Vec<Object> {
        let mut out = Vec::new();
        for record in self.sent.lock().unwrap().iter() {
            let bytes = record.lock().unwrap().clone();
            for o in gcm_payloads(&String::from_utf8_lossy(&bytes)) {
                if o.contains_key("to") && !o.contains_key("message_type") {
                    out.push(o);
                }
            }
        }
        out
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn relay(
    tcp: TcpStream,
    target: SocketAddr,
    acceptor: &native_tls::TlsAcceptor,
    connector: &native_tls::TlsConnector,
    record: &Mutex<Vec<u8>>,
    stop: &AtomicBool,
) -> Result<(), String> {
    tcp.set_nonblocking(false).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let mut client = acceptor.accept(tcp).map_err(|e| e.to_string())?;
    let up = TcpStream::connect(target).map_err(|e| e.to_string())?;
    up.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let mut server = connector
        .connect("127.0.0.1", up)
        .map_err(|e| e.to_string())?;
    // Short read timeouts: one thread pumps both directions.
    let poll = Some(Duration::from_millis(2));
    client.get_ref().set_read_timeout(poll).unwrap();
    server.get_ref().set_read_timeout(poll).unwrap();
    let mut buf = vec![0u8; 16 * 1024];
    while !stop.load(Ordering::Relaxed) {
        match pump(&mut client, &mut server, &mut buf, Some(record)) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => return Err(format!("client side: {e}")),
        }
        match pump(&mut server, &mut client, &mut buf, None) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => return Err(format!("server side: {e}")),
        }
    }
    let _ = client.shutdown();
    let _ = server.shutdown();
    Ok(())
}

/// Moves what `from` has (if anything) to `to`; false at the end of `from`.
fn pump(
    from: &mut native_tls::TlsStream<TcpStream>,
    to: &mut native_tls::TlsStream<TcpStream>,
    buf: &mut [u8],
    record: Option<&Mutex<Vec<u8>>>,
) -> std::io::Result<bool> {
    match from.read(buf) {
        Ok(0) => Ok(false),
        Ok(n) => {
            if let Some(r) = record {
                r.lock().unwrap().extend_from_slice(&buf[..n]);
            }
            to.write_all(&buf[..n])?;
            to.flush()?;
            Ok(true)
        }
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok(false),
        Err(e) => Err(e),
    }
}

/// The JSON payloads of the `<message>` stanzas in a client's plain-text stream, each
/// parsed with the crate's own stanza reader (the escaped JSON holds no `<`).
fn gcm_payloads(stream: &str) -> Vec<Object> {
    let mut out = Vec::new();
    let mut rest = stream;
    while let Some(start) = rest.find("<message") {
        let Some(len) = rest[start..].find("</message>") else {
            break;
        };
        let end = start + len + "</message>".len();
        let mut reader = StanzaReader::new(ReaderLimits::default());
        reader.feed(
            b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>",
        );
        reader.feed(&rest.as_bytes()[start..end]);
        assert!(matches!(
            reader.next_packet(),
            Ok(Some(Packet::StreamStart(_)))
        ));
        match reader.next_packet() {
            Ok(Some(Packet::Stanza(el))) => {
                let gcm = el
                    .child("gcm", "google:mobile:data")
                    .unwrap_or_else(|| panic!("no gcm payload: {}", &rest[start..end]));
                match json::from_str::<Value>(&gcm.text()) {
                    Ok(Value::Object(o)) => out.push(o),
                    _ => panic!("payload is not a JSON object: {}", gcm.text()),
                }
            }
            other => panic!("{other:?} for {}", &rest[start..end]),
        }
        rest = &rest[end..];
    }
    out
}

// ---------------------------------------------------------------------------------------------
// fcm_send

#[test]
fn fcm_send_acks_every_message() {
    let emu = emulator();
    let tap = Tap::start(emu.addr());
    let ca = TempFile::with("ca.pem", Emulator::cert_pem());
    let endpoint = tap.endpoint();
    let mut args = flags(&endpoint, &ca);
    args.extend([
        "--to", "device-1", "--count", "25", "--data", "a=b", "--ttl", "60",
    ]);
    let out = run("fcm_send", &args, Some(KEY));
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(
        out.stderr, "",
        "nothing on stderr when all goes well\n{out}"
    );
    let lines = out.json();
    assert_eq!(lines.len(), 27, "{out}");
    assert_connected(&lines[0]);
    for o in &lines[1..26] {
        assert_eq!(event(o), "ack", "{out}");
        assert_eq!(keys(o), ["event", "message_id"], "{out}");
    }
    let acks = ids_of(&lines, "ack");
    let acked = distinct(&acks);
    assert_eq!(acked.len(), 25);
    assert_summary(&lines[26], 25, 25, 0);

    // What the server saw: these 25 messages, once each, all acked.
    let ledger = emu.ledger();
    assert_eq!(ledger.total_received(), 25, "{ledger:?}");
    assert!(ledger.duplicates().is_empty(), "{ledger:?}");
    let received: HashSet<String> = ledger
        .connections
        .iter()
        .flat_map(|c| c.received.iter().cloned())
        .collect();
    assert_eq!(received, acked);
    let server_acked: HashSet<String> = ledger.acked_ids().into_iter().map(String::from).collect();
    assert_eq!(server_acked, acked);

    // Their fields: seq "0".."24" (0-based, strings, in sending order), a=b, the TTL.
    let sent = tap.downstream();
    assert_eq!(
        sent.len(),
        25,
        "{:?}",
        sent.iter().map(show).collect::<Vec<_>>()
    );
    for (i, m) in sent.iter().enumerate() {
        assert!(acked.contains(str_of(m, "message_id")), "{}", show(m));
        assert_eq!(str_of(m, "to"), "device-1", "{}", show(m));
        assert_eq!(num_of(m, "time_to_live"), 60.0, "{}", show(m));
        assert_eq!(
            string_map(m.get("data")),
            map(&[("a", "b"), ("seq", &i.to_string())]),
            "{}",
            show(m)
        );
    }
}

#[test]
fn fcm_send_reports_rejections_and_exits_2() {
    let emu = emulator();
    emu.reject_token("dead-token", NackCode::DeviceUnregistered);
    let ca = TempFile::with("ca.pem", Emulator::cert_pem());
    let endpoint = endpoint_of(&emu);
    let mut args = flags(&endpoint, &ca);
    args.extend(["--to", "dead-token", "--count", "3"]);
    let out = run("fcm_send", &args, Some(KEY));
    assert_eq!(out.code, Some(2), "{out}");
    let lines = out.json();
    assert_eq!(lines.len(), 5, "{out}");
    assert_connected(&lines[0]);
    for o in &lines[1..4] {
        assert_eq!(event(o), "nack", "{out}");
        assert_eq!(keys(o), ["error", "event", "message_id"], "{out}");
        assert_eq!(str_of(o, "error"), "DEVICE_UNREGISTERED", "{out}");
    }
    let nacks = distinct(&ids_of(&lines, "nack"));
    assert_summary(&lines[4], 3, 0, 3);
    let ledger = emu.ledger();
    let server_nacked: HashSet<String> = ledger
        .connections
        .iter()
        .flat_map(|c| c.nacked.iter().map(|(id, _)| id.clone()))
        .collect();
    assert_eq!(server_nacked, nacks);
    assert_eq!(ledger.total_received(), 3, "rejections are not retried");
}

#[test]
fn fcm_send_retries_transient_nacks_quietly() {
    let emu = emulator();
    // Every message is NACKed SERVICE_UNAVAILABLE once, then acked.
    emu.transient_nacks(|_| true, 1, NackCode::ServiceUnavailable);
    let ca = TempFile::with("ca.pem", Emulator::cert_pem());
    let endpoint = endpoint_of(&emu);
    let mut args = flags(&endpoint, &ca);
    args.extend(["--to", "device-2", "--count", "20"]);
    let out = run("fcm_send", &args, Some(KEY));
    assert_eq!(out.code, Some(0), "{out}");
    let lines = out.json();
    assert_eq!(lines.len(), 22, "a retried NACK is not an outcome\n{out}");
    assert_connected(&lines[0]);
    assert!(lines[1..21].iter().all(|o| event(o) == "ack"), "{out}");
    assert_eq!(distinct(&ids_of(&lines, "ack")).len(), 20);
    assert_summary(&lines[21], 20, 20, 0);
    // The retries are on stderr, summed up rather than one line per NACK.
    let err = out.stderr_lines();
    assert!(
        !err.is_empty() && err.len() <= 3,
        "expected one or two retry lines on stderr\n{out}"
    );
    assert!(
        out.stderr.contains("retry") && out.stderr.contains("SERVICE_UNAVAILABLE"),
        "{out}"
    );
    let ledger = emu.ledger();
    assert_eq!(ledger.total_received(), 40, "{ledger:?}");
    assert_eq!(ledger.total_nacked(), 20);
    assert_eq!(ledger.duplicates().len(), 20);
}

#[test]
fn fcm_send_waits_for_receipts() {
    let emu = emulator();
    let ca = TempFile::with("ca.pem", Emulator::cert_pem());
    let endpoint = endpoint_of(&emu);
    let mut args = flags(&endpoint, &ca);
    args.extend(["--to", "device-3", "--count", "3", "--receipt"]);
    let out = run("fcm_send", &args, Some(KEY));
    assert_eq!(out.code, Some(0), "{out}");
    let lines = out.json();
    assert_eq!(lines.len(), 8, "{out}");
    assert_connected(&lines[0]);
    assert_summary(&lines[7], 3, 3, 0);
    let acks = distinct(&ids_of(&lines, "ack"));
    assert_eq!(acks.len(), 3, "{out}");
    let receipts: Vec<&Object> = lines.iter().filter(|o| event(o) == "receipt").collect();
    assert_eq!(receipts.len(), 3, "{out}");
    let mut originals = HashSet::new();
    for r in &receipts {
        let mut k = keys(r);
        k.sort_unstable();
        assert_eq!(k, ["event", "message_id", "original_message_id"], "{out}");
        assert!(!str_of(r, "message_id").is_empty());
        assert_ne!(str_of(r, "message_id"), str_of(r, "original_message_id"));
        originals.insert(str_of(r, "original_message_id").to_string());
    }
    assert_eq!(originals, acks, "one receipt per acked message\n{out}");
    // The program acked the receipts (CCS would redeliver them otherwise).
    assert!(
        emu.wait_until(Duration::from_secs(5), |l| {
            l.connections
                .iter()
                .map(|c| c.receipts_acked.len())
                .sum::<usize>()
                == 3
        }),
        "{:?}",
        emu.ledger()
    );
}

#[test]
fn fcm_send_wrong_key_is_fatal_with_one_line() {
    let emu = emulator();
    let ca = TempFile::with("ca.pem", Emulator::cert_pem());
    let endpoint = endpoint_of(&emu);
    let mut args = flags(&endpoint, &ca);
    args.extend(["--to", "device-4", "--count", "2"]);
    let wrong = "wrong-key-7f3a9c";
    let out = run("fcm_send", &args, Some(wrong));
    assert_eq!(out.code, Some(1), "{out}");
    assert!(out.stdout.is_empty(), "{out}");
    let err = out.stderr_lines();
    assert_eq!(err.len(), 1, "{out}");
    assert!(err[0].starts_with("error:"), "{out}");
    assert!(
        !out.stderr.contains(wrong) && !out.stderr.contains(KEY),
        "{out}"
    );
    assert!(emu.ledger().auth_failures >= 1);
    assert_eq!(emu.ledger().total_received(), 0);
}

/// Runs a program that must refuse its arguments before connecting: exit 1, nothing on
/// stdout, one `error:` line on stderr mentioning `expect`.
fn assert_usage_error(name: &str, args: &[&str], key: Option<&str>, expect: &str) {
    let out = run(name, args, key);
    assert_eq!(out.code, Some(1), "{args:?}\n{out}");
    assert!(out.stdout.is_empty(), "{args:?}\n{out}");
    let err = out.stderr_lines();
    assert_eq!(err.len(), 1, "{args:?}\n{out}");
    assert!(
        err[0].starts_with("error:") && err[0].contains(expect),
        "{args:?}: want {expect:?}\n{out}"
    );
}

#[test]
fn programs_refuse_bad_arguments_with_one_line() {
    // Nothing listens on port 9 (discard); none of these get as far as connecting.
    let base = ["--endpoint", "127.0.0.1:9", "--sender-id", SENDER];
    let with = |extra: &[&'static str]| -> Vec<&str> {
        base.iter().chain(extra.iter()).copied().collect::<Vec<_>>()
    };
    let key = Some(KEY);
    assert_usage_error("fcm_send", &with(&["--count", "2"]), key, "--to");
    assert_usage_error("fcm_send", &with(&["--to", "t", "--bogus"]), key, "--bogus");
    assert_usage_error("fcm_send", &with(&["--bogus", "--to", "t"]), key, "--bogus");
    assert_usage_error("fcm_send", &with(&["--to", "--count", "2"]), key, "--to");
    assert_usage_error(
        "fcm_send",
        &with(&["--to", "t", "--count", "x"]),
        key,
        "--count",
    );
    assert_usage_error(
        "fcm_send",
        &with(&["--to", "t", "--data", "k"]),
        key,
        "--data",
    );
    assert_usage_error(
        "fcm_send",
        &with(&["--to", "t", "--receipt-timeout", "-1"]),
        key,
        "--receipt-timeout",
    );
    assert_usage_error("fcm_send", &with(&["--to", "t"]), None, "FCM_SERVER_KEY");
    // The key is taken from the environment only.
    assert_usage_error(
        "fcm_send",
        &with(&["--to", "t", "--server-key", "k"]),
        key,
        "unknown flag --server-key",
    );
    assert_usage_error(
        "fcm_send",
        &["--endpoint", "127.0.0.1:9", "--to", "t"],
        key,
        "--sender-id",
    );
    assert_usage_error(
        "echo_server",
        &with(&["--max-upstream", "many"]),
        key,
        "--max-upstream",
    );
    assert_usage_error("echo_server", &with(&["--to", "t"]), key, "--to");
}

// ---------------------------------------------------------------------------------------------
// echo_server

#[test]
fn echo_server_echoes_and_exits_after_max_upstream() {
    let emu = emulator();
    let tap = Tap::start(emu.addr());
    let ca = TempFile::with("ca.pem", Emulator::cert_pem());
    let endpoint = tap.endpoint();
    let mut args = flags(&endpoint, &ca);
    args.extend(["--max-upstream", "5"]);
    let mut prog = Proc::spawn("echo_server", &args, Some(KEY));
    let first = prog.next_line(LIMIT);
    assert!(first.contains("\"connected\""), "{first}");

    let mut injected = HashMap::new(); // from -> (upstream id, data)
    for i in 0..5 {
        let from = format!("device-{i}");
        let (k, n) = (format!("v{i}"), i.to_string());
        let data = [("k", k.as_str()), ("n", n.as_str())];
        let id = emu.inject_upstream(&from, "com.example.echo", &data);
        injected.insert(from, (id, map(&data)));
    }
    let out = prog.wait(LIMIT);
    assert_eq!(out.code, Some(0), "{out}");
    let lines = out.json();
    assert_connected(&lines[0]);
    let upstream: Vec<&Object> = lines.iter().filter(|o| event(o) == "upstream").collect();
    assert_eq!(upstream.len(), 5, "{out}");
    for u in &upstream {
        let mut k = keys(u);
        k.sort_unstable();
        assert_eq!(
            k,
            ["category", "data", "event", "from", "message_id"],
            "{out}"
        );
        let (id, data) = &injected[str_of(u, "from")];
        assert_eq!(str_of(u, "message_id"), id, "{out}");
        assert_eq!(str_of(u, "category"), "com.example.echo", "{out}");
        assert_eq!(&string_map(u.get("data")), data, "{out}");
    }
    // The echoes' outcomes, and nothing else.
    let acks = distinct(&ids_of(&lines, "ack"));
    assert_eq!(acks.len(), 5, "{out}");
    assert_eq!(lines.len(), 11, "{out}");

    // The server: every upstream message acked, five echoes received and acked.
    let ledger = emu.ledger();
    assert!(ledger.unacked_upstream().is_empty(), "{ledger:?}");
    let up_acked: HashSet<&str> = ledger
        .connections
        .iter()
        .flat_map(|c| c.upstream_acked.iter().map(String::as_str))
        .collect();
    let want: HashSet<&str> = injected.values().map(|(id, _)| id.as_str()).collect();
    assert_eq!(up_acked, want);
    assert_eq!(ledger.total_received(), 5, "{ledger:?}");
    let server_acked: HashSet<String> = ledger.acked_ids().into_iter().map(String::from).collect();
    assert_eq!(server_acked, acks);

    // Each echo went to the device it came from, with its data plus "echo".
    let echoes = tap.downstream();
    assert_eq!(
        echoes.len(),
        5,
        "{:?}",
        echoes.iter().map(show).collect::<Vec<_>>()
    );
    for e in &echoes {
        assert!(acks.contains(str_of(e, "message_id")), "{}", show(e));
        let (id, data) = &injected[str_of(e, "to")];
        let mut want = data.clone();
        want.insert("echo".to_string(), id.clone());
        assert_eq!(string_map(e.get("data")), want, "{}", show(e));
    }
}

#[test]
fn echo_server_counts_distinct_upstream_across_a_dropped_connection() {
    let emu = emulator();
    let ca = TempFile::with("ca.pem", Emulator::cert_pem());
    let endpoint = endpoint_of(&emu);
    let mut args = flags(&endpoint, &ca);
    args.extend(["--max-upstream", "6"]);
    let mut prog = Proc::spawn("echo_server", &args, Some(KEY));
    let first = prog.next_line(LIMIT);
    assert!(first.contains("\"connected\""), "{first}");
    // The connection drops after the 5th message stanza from the program (echoes and
    // upstream acks both count): some upstream messages are delivered again, some
    // echoes are resent.
    emu.drop_after(5);
    let ids: HashSet<String> = (0..6)
        .map(|i| emu.inject_upstream(&format!("device-{i}"), "com.example.echo", &[("k", "v")]))
        .collect();
    let out = prog.wait(LIMIT);
    assert_eq!(out.code, Some(0), "{out}");
    let lines = out.json();
    assert!(
        lines.iter().filter(|o| event(o) == "connected").count() >= 2,
        "{out}"
    );
    // One upstream line and one echo outcome per distinct upstream message.
    assert_eq!(distinct(&ids_of(&lines, "upstream")), ids, "{out}");
    assert_eq!(distinct(&ids_of(&lines, "ack")).len(), 6, "{out}");
    let ledger = emu.ledger();
    assert!(ledger.unacked_upstream().is_empty(), "{ledger:?}");
    assert!(ledger.acked_ids().len() >= 6, "{ledger:?}");
}

#[test]
fn echo_server_exits_3_when_echoes_stay_pending() {
    let emu = emulator();
    emu.set_ack_delay(Duration::from_secs(60));
    let ca = TempFile::with("ca.pem", Emulator::cert_pem());
    let endpoint = endpoint_of(&emu);
    let mut args = flags(&endpoint, &ca);
    args.extend(["--max-upstream", "2", "--drain-timeout", "1"]);
    let mut prog = Proc::spawn("echo_server", &args, Some(KEY));
    let first = prog.next_line(LIMIT);
    assert!(first.contains("\"connected\""), "{first}");
    let ids: HashSet<String> = (0..2)
        .map(|i| emu.inject_upstream(&format!("device-{i}"), "com.example.echo", &[("k", "v")]))
        .collect();
    let started = Instant::now();
    let out = prog.wait(LIMIT);
    assert_eq!(out.code, Some(3), "{out}");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "left before --drain-timeout"
    );
    let lines = out.json();
    assert_connected(&lines[0]);
    assert_eq!(lines.len(), 3, "no echo got an outcome\n{out}");
    assert_eq!(distinct(&ids_of(&lines, "upstream")), ids);
    assert!(out.stderr.contains("pending"), "{out}");
    // The upstream messages themselves were acked: their echoes were queued.
    assert!(emu.ledger().unacked_upstream().is_empty());
    assert_eq!(emu.ledger().total_received(), 2);
}

// ---------------------------------------------------------------------------------------------
// ccs_emulator

/// The address in the emulator program's first line,
/// `ccs emulator listening on ADDR (dial ...), sender id ...`.
fn listening_addr(line: &str) -> SocketAddr {
    line.strip_prefix("ccs emulator listening on ")
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("not a listening line: {line:?}"))
}

#[test]
fn ccs_emulator_program_serves_fcm_send() {
    let cert = TempFile::reserve("emulator-ca.pem");
    let mut emu = Proc::spawn(
        "ccs_emulator",
        &[
            "--listen",
            "127.0.0.1:0",
            "--sender-id",
            SENDER,
            "--cert-out",
            cert.path(),
            "--reject",
            "dead-token=DEVICE_UNREGISTERED",
        ],
        Some(KEY), // the server key from the environment
    );
    let addr = listening_addr(&emu.next_line(LIMIT));
    assert_eq!(addr.ip().to_string(), "127.0.0.1");
    assert_ne!(addr.port(), 0);
    let second = emu.next_line(LIMIT);
    assert!(second.contains(cert.path()), "{second}");
    assert_eq!(std::fs::read(&cert.0).unwrap(), Emulator::cert_pem());

    let endpoint = addr.to_string();
    let mut args = flags(&endpoint, &cert);
    args.extend(["--to", "device-9", "--count", "3"]);
    let out = run("fcm_send", &args, Some(KEY));
    assert_eq!(out.code, Some(0), "{out}");
    let lines = out.json();
    assert_summary(lines.last().unwrap(), 3, 3, 0);
    let acks = distinct(&ids_of(&lines, "ack"));

    let mut args = flags(&endpoint, &cert);
    args.extend(["--to", "dead-token"]);
    let out = run("fcm_send", &args, Some(KEY));
    assert_eq!(out.code, Some(2), "{out}");
    let nack = ids_of(&out.json(), "nack");
    assert_eq!(nack.len(), 1, "{out}");

    // The emulator printed a line for each message, with its answer.
    let mut want: HashSet<String> = acks
        .iter()
        .map(|id| format!("downstream {id:?} to \"device-9\": ack"))
        .collect();
    want.insert(format!(
        "downstream {:?} to \"dead-token\": nack DEVICE_UNREGISTERED",
        nack[0]
    ));
    let deadline = Instant::now() + LIMIT;
    while !want.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = emu.next_line(left);
        want.retain(|w| !line.ends_with(w.as_str()));
    }
}

#[test]
fn ccs_emulator_program_stops_after_duration() {
    let out = run(
        "ccs_emulator",
        &[
            "--listen",
            "127.0.0.1:0",
            "--server-key",
            "k",
            "--duration",
            "0.2",
        ],
        None,
    );
    assert_eq!(out.code, Some(0), "{out}");
    listening_addr(&out.stdout[0]);
    let last = out.stdout.last().unwrap();
    assert!(last.starts_with("stopped: 0 connections"), "{out}");
}

// ---------------------------------------------------------------------------------------------
// The command-line tools as people meet them: --help, flag forms, connect failures

#[test]
fn every_program_has_help_with_flags_defaults_and_exit_codes() {
    let defaults = fcm_xmpp::Timeouts::default();
    let secs = |d: Option<Duration>| d.unwrap().as_secs().to_string();
    let programs: [(&str, &[&str]); 3] = [
        (
            "fcm_send",
            &[
                "--to TOKEN",
                "--count N",
                "--data KEY=VALUE",
                "--ttl SECS",
                "--receipt",
                "--receipt-timeout S",
                "--progress",
                "--endpoint HOST:PORT",
                "--domain NAME",
                "--ca-file PEM",
                "--sender-id ID",
                "--connect-timeout S",
                "--handshake-timeout S",
                "--max-connect-attempts N",
                "FCM_SERVER_KEY",
                "FCM_LOG",
                "  0  ",
                "  1  ",
                "  2  ",
            ],
        ),
        (
            "echo_server",
            &[
                "--max-upstream N",
                "--drain-timeout S",
                "--endpoint HOST:PORT",
                "--connect-timeout S",
                "--max-connect-attempts N",
                "FCM_SERVER_KEY",
                "  0  ",
                "  1  ",
                "  3  ",
            ],
        ),
        (
            "ccs_emulator",
            &[
                "--listen HOST:PORT",
                "--sender-id ID",
                "--server-key KEY",
                "--reject TOKEN=CODE",
                "--cert-out PATH",
                "--cert PEM",
                "--key PEM",
                "--duration SECS",
                "--keepalive SECS",
                "--upstream-count M",
                "--upstream-rate N/s",
                "--upstream-from TOKEN",
                "--stdin",
                "  0  ",
                "  1  ",
            ],
        ),
    ];
    for (name, wanted) in programs {
        let long = run(name, &["--help"], None);
        assert_eq!(long.code, Some(0), "{long}");
        assert_eq!(long.stderr, "", "{long}");
        let text = long.stdout.join("\n");
        assert!(text.contains(&format!("usage: {name} ")), "{text}");
        assert!(text.contains("-h, --help"), "{text}");
        assert!(text.contains("exit codes:"), "{text}");
        for w in wanted {
            assert!(text.contains(w), "{name} --help lacks {w:?}\n{text}");
        }
        // Every flag line with a default says it the same way.
        if name != "ccs_emulator" {
            let line = |flag: &str| {
                text.lines()
                    .find(|l| l.trim_start().starts_with(flag))
                    .unwrap_or_else(|| panic!("no {flag} line\n{text}"))
                    .to_string()
            };
            let connect = line("--connect-timeout");
            assert!(
                connect.ends_with(&format!("(default {})", secs(defaults.connect))),
                "{connect}"
            );
            let handshake = line("--handshake-timeout");
            assert!(
                handshake.ends_with(&format!("(default {})", secs(defaults.handshake))),
                "{handshake}"
            );
        }
        // -h is the same, and help wins over other arguments.
        let short = run(name, &["--bogus-is-ignored-after-help", "-h"], None);
        assert_eq!(
            short.code,
            Some(1),
            "an unknown flag before -h is still an error\n{short}"
        );
        let short = run(name, &["-h", "--bogus"], None);
        assert_eq!(short.code, Some(0), "{short}");
        assert_eq!(short.stdout, long.stdout);
    }
}

#[test]
fn flags_take_their_value_after_an_equals_sign_too() {
    let emu = emulator();
    let ca = TempFile::with("ca.pem", Emulator::cert_pem());
    let endpoint = format!("--endpoint={}", endpoint_of(&emu));
    let ca_flag = format!("--ca-file={}", ca.path());
    let args = [
        endpoint.as_str(),
        ca_flag.as_str(),
        "--sender-id=123456789012",
        "--to=device-eq",
        "--count=4",
        "--data=k=v=w",
    ];
    let out = run("fcm_send", &args, Some(KEY));
    assert_eq!(out.code, Some(0), "{out}");
    assert_summary(out.json().last().unwrap(), 4, 4, 0);
    assert_eq!(emu.ledger().total_received(), 4);
}

#[test]
fn programs_refuse_urls_bad_ca_files_and_bad_emulator_flags() {
    let key = Some(KEY);
    let base = |ep: &'static str| vec!["--endpoint", ep, "--sender-id", SENDER, "--to", "t"];
    assert_usage_error(
        "fcm_send",
        &base("https://127.0.0.1:5235"),
        key,
        "not a URL",
    );
    assert_usage_error("fcm_send", &base("127.0.0.1:5235/path"), key, "HOST:PORT");
    assert_usage_error("echo_server", &base("tls://h:1")[..4], key, "not a URL");
    // A CA file that is empty, not a certificate, or missing: refused before connecting,
    // naming the file.
    for (tag, bytes) in [("empty.pem", &b""[..]), ("junk.pem", b"hello")] {
        let f = TempFile::with(tag, bytes);
        let mut args = base("127.0.0.1:9");
        args.extend(["--ca-file", f.path()]);
        assert_usage_error("fcm_send", &args, key, f.path());
        assert_usage_error(
            "echo_server",
            &args[..4]
                .iter()
                .chain(&args[6..])
                .copied()
                .collect::<Vec<_>>(),
            key,
            f.path(),
        );
    }
    let missing = TempFile::reserve("missing.pem");
    let mut args = base("127.0.0.1:9");
    args.extend(["--ca-file", missing.path()]);
    assert_usage_error("fcm_send", &args, key, missing.path());
    // The emulator: one error line, exit 1, like the others.
    assert_usage_error("ccs_emulator", &["--bogus"], None, "--bogus");
    assert_usage_error("ccs_emulator", &["--reject", "nocode"], None, "TOKEN=CODE");
    assert_usage_error(
        "ccs_emulator",
        &["--upstream-rate", "fast"],
        None,
        "--upstream-rate",
    );
    assert_usage_error(
        "ccs_emulator",
        &["--cert", "/nonexistent.pem"],
        None,
        "--key",
    );
    assert_usage_error("ccs_emulator", &["--listen", "no-port"], None, "--listen");
}

#[test]
fn an_unknown_fcm_log_value_is_reported() {
    let out = Proc::spawn_with(
        "fcm_send",
        &["--endpoint", "127.0.0.1:9", "--sender-id", SENDER],
        Some(KEY),
        &[("FCM_LOG", "verbose")],
        None,
    )
    .wait(LIMIT);
    assert_eq!(out.code, Some(1), "{out}");
    let err = out.stderr_lines();
    assert_eq!(err.len(), 2, "{out}");
    assert!(err[0].starts_with("warning: FCM_LOG=\"verbose\""), "{out}");
    assert!(
        err[1].starts_with("error:") && err[1].contains("--to"),
        "{out}"
    );
}

/// `connection attempt K failed: REASON; retrying in DURATION`, DURATION like `250ms` or `1.2s`.
fn assert_retry_line(line: &str, k: u32) {
    let rest = line
        .strip_prefix(&format!("connection attempt {k} failed: "))
        .unwrap_or_else(|| panic!("not a retry line: {line:?}"));
    let (_, delay) = rest
        .rsplit_once("; retrying in ")
        .unwrap_or_else(|| panic!("no delay: {line:?}"));
    let number = delay
        .strip_suffix("ms")
        .map(|n| (n, false))
        .or_else(|| delay.strip_suffix('s').map(|n| (n, true)));
    let ok = match number {
        Some((n, false)) => n.parse::<u64>().is_ok(),
        Some((n, true)) => {
            n.parse::<f64>().is_ok() && n.split_once('.').is_some_and(|(_, f)| f.len() == 1)
        }
        None => false,
    };
    assert!(ok, "delay not for people: {line:?}");
}

#[test]
fn connect_failures_name_the_endpoint_and_stop_after_max_attempts() {
    // A port nothing listens on: refused at once, twice, then the end.
    let free = TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = free.local_addr().unwrap().to_string();
    drop(free);
    for name in ["fcm_send", "echo_server"] {
        let mut args = vec!["--endpoint", &closed, "--sender-id", SENDER];
        args.extend(["--max-connect-attempts", "2"]);
        if name == "fcm_send" {
            args.extend(["--to", "t"]);
        }
        let out = run(name, &args, Some(KEY));
        assert_eq!(out.code, Some(1), "{out}");
        assert!(out.stdout.is_empty(), "{out}");
        let err = out.stderr_lines();
        assert_eq!(err.len(), 2, "{out}");
        assert_retry_line(err[0], 1);
        assert!(
            err[1].starts_with(&format!("error: cannot connect to {closed} (2 attempts")),
            "{out}"
        );
    }

    // A server that accepts and never speaks: the handshake timeout ends each attempt.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    let held = Arc::new(Mutex::new(Vec::new()));
    let keep = Arc::clone(&held);
    thread::spawn(move || {
        for s in silent.incoming().take(4).flatten() {
            keep.lock().unwrap().push(s);
        }
    });
    let started = Instant::now();
    let out = run(
        "fcm_send",
        &[
            "--endpoint",
            &addr,
            "--sender-id",
            SENDER,
            "--to",
            "t",
            "--handshake-timeout",
            "0.3",
            "--max-connect-attempts",
            "1",
        ],
        Some(KEY),
    );
    assert_eq!(out.code, Some(1), "{out}");
    let err = out.stderr_lines();
    assert_eq!(err.len(), 1, "{out}");
    assert!(
        err[0].starts_with(&format!("error: cannot connect to {addr} (1 attempts")),
        "{out}"
    );
    assert!(err[0].contains("timed out"), "{out}");
    assert!(started.elapsed() < Duration::from_secs(10), "{out}");
}

#[test]
fn fcm_send_prints_the_summary_after_a_fatal_error() {
    let emu = emulator();
    emu.set_ack_delay(Duration::from_secs(60)); // nothing gets its outcome
    let ca = TempFile::with("ca.pem", Emulator::cert_pem());
    let endpoint = endpoint_of(&emu);
    let mut args = flags(&endpoint, &ca);
    args.extend([
        "--to",
        "device-f",
        "--count",
        "5",
        "--max-connect-attempts",
        "1",
    ]);
    let mut prog = Proc::spawn("fcm_send", &args, Some(KEY));
    assert_connected(&json_line(&prog.next_line(LIMIT)));
    assert!(emu.wait_until(LIMIT, |l| l.total_received() == 5));
    emu.shutdown(); // the connection ends and the one attempt to reconnect fails
    let out = prog.wait(LIMIT);
    assert_eq!(out.code, Some(1), "{out}");
    let lines = out.json();
    assert_summary(lines.last().unwrap(), 5, 0, 0);
    let last_err = out.stderr_lines().last().copied().unwrap_or("");
    assert!(
        last_err.starts_with(&format!("error: cannot connect to {endpoint}")),
        "{out}"
    );
}

fn json_line(line: &str) -> Object {
    match json::from_str::<Value>(line) {
        Ok(Value::Object(o)) => o,
        _ => panic!("not a JSON object: {line:?}"),
    }
}

#[test]
fn fcm_send_names_the_message_that_is_too_large() {
    // "big" + 4089 bytes + "seq" + 1 digit = 4096 bytes: messages 0..=9 fit, 10 does not.
    let big = format!("big={}", "x".repeat(4089));
    let base = [
        "--endpoint",
        "127.0.0.1:9",
        "--sender-id",
        SENDER,
        "--to",
        "t",
    ];
    let mut args = base.to_vec();
    args.extend(["--data", &big, "--count", "11"]);
    assert_usage_error("fcm_send", &args, Some(KEY), "message 10 (0-based)");
    let out = run("fcm_send", &args, Some(KEY));
    assert!(out.stderr.contains("\"seq\""), "{out}");
}

#[test]
fn fcm_send_shows_progress_on_stderr_when_asked() {
    let emu = emulator();
    let ca = TempFile::with("ca.pem", Emulator::cert_pem());
    let endpoint = endpoint_of(&emu);
    let mut args = flags(&endpoint, &ca);
    args.extend(["--to", "device-p", "--count", "30", "--progress"]);
    let out = run("fcm_send", &args, Some(KEY));
    assert_eq!(out.code, Some(0), "{out}");
    let last = out.stderr_lines().last().copied().unwrap_or("").to_string();
    assert!(
        last.starts_with("progress: 30 sent, 30 acked, 0 nacked, ") && last.contains(" msg/s, "),
        "{out}"
    );
    // Not asked, stderr not a terminal: no progress.
    let mut args = flags(&endpoint, &ca);
    args.extend(["--to", "device-p", "--count", "3"]);
    let out = run("fcm_send", &args, Some(KEY));
    assert_eq!(out.stderr, "", "{out}");
}

/// Sends SIGTERM to a running program (by its pid).
fn terminate(p: &Proc) {
    let status = Command::new("kill")
        .args(["-s", "TERM", "--", &p.child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
}

#[test]
fn ccs_emulator_plays_devices_for_echo_server_and_sums_up_on_sigterm() {
    let cert = TempFile::reserve("devices-ca.pem");
    let stdin = concat!(
        "{\"from\":\"tablet-2\",\"category\":\"com.example.tab\",\"data\":{\"hello\":\"world\"}}\n",
        "not json\n",
        "{\"from\":\"tablet-3\"}\n",
    );
    let mut emu = Proc::spawn_with(
        "ccs_emulator",
        &[
            "--listen",
            "localhost:0",
            "--sender-id",
            SENDER,
            "--cert-out",
            cert.path(),
            "--upstream-count",
            "3",
            "--upstream-rate",
            "200/s",
            "--upstream-from",
            "phone-1",
            "--upstream-data",
            "k=v",
            "--stdin",
            "--reject",
            "gone=NOT_A_CODE",
        ],
        Some(KEY),
        &[],
        Some(stdin.as_bytes()),
    );
    let addr = listening_addr(&emu.next_line(LIMIT));
    assert_eq!(
        addr.ip().to_string(),
        "127.0.0.1",
        "localhost resolved to IPv4"
    );
    let _ = emu.next_line(LIMIT);
    let endpoint = addr.to_string();
    let mut args = flags(&endpoint, &cert);
    args.extend(["--max-upstream", "5"]);
    let out = run("echo_server", &args, Some(KEY));
    assert_eq!(out.code, Some(0), "{out}");
    let lines = out.json();
    let upstream: Vec<&Object> = lines.iter().filter(|o| event(o) == "upstream").collect();
    assert_eq!(upstream.len(), 5, "{out}");
    let mut seqs = Vec::new();
    for u in &upstream {
        let data = string_map(u.get("data"));
        match str_of(u, "from") {
            "phone-1" => {
                assert_eq!(str_of(u, "category"), "com.example.app");
                assert_eq!(data["k"], "v");
                seqs.push(data["seq"].clone());
            }
            "tablet-2" => {
                assert_eq!(str_of(u, "category"), "com.example.tab");
                assert_eq!(data, map(&[("hello", "world")]));
            }
            "tablet-3" => assert!(data.is_empty()),
            other => panic!("from {other}\n{out}"),
        }
    }
    seqs.sort();
    assert_eq!(seqs, ["0", "1", "2"], "{out}");
    assert_eq!(distinct(&ids_of(&lines, "ack")).len(), 5, "{out}");

    // Wait for the echoes to show in the emulator's output, then stop it with SIGTERM.
    let deadline = Instant::now() + LIMIT;
    let mut acks = 0;
    while acks < 5 {
        let line = emu.next_line(deadline.saturating_duration_since(Instant::now()));
        if line.ends_with(": ack") {
            acks += 1;
        }
    }
    terminate(&emu);
    let done = emu.wait(LIMIT);
    assert_eq!(done.code, Some(0), "{done}");
    let last = done.stdout.last().unwrap();
    assert_eq!(
        last,
        "stopped: 1 connections, 5 downstream received, 5 acked, 0 nacked, 5 upstream sent, 5 upstream acked",
        "{done}"
    );
    let err = done.stderr_lines();
    assert!(
        err.iter()
            .any(|l| l.starts_with("warning: --reject gone=NOT_A_CODE")),
        "{done}"
    );
    assert!(
        err.iter()
            .any(|l| l.starts_with("warning: stdin line 2: not a JSON object")),
        "{done}"
    );
}

#[test]
fn ccs_emulator_serves_a_user_supplied_certificate() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let cert_path = root.join("other_name-cert.pem");
    let key_path = root.join("other_name-key.pem");
    let out_cert = TempFile::reserve("user-ca.pem");
    let mut emu = Proc::spawn(
        "ccs_emulator",
        &[
            "--listen",
            "127.0.0.1:0",
            "--cert",
            cert_path.to_str().unwrap(),
            "--key",
            key_path.to_str().unwrap(),
            "--cert-out",
            out_cert.path(),
        ],
        Some(KEY),
    );
    let addr = listening_addr(&emu.next_line(LIMIT));
    assert_eq!(
        std::fs::read(&out_cert.0).unwrap(),
        std::fs::read(&cert_path).unwrap(),
        "--cert-out writes the certificate served"
    );
    // That certificate names other.example, so a client dialling 127.0.0.1 refuses it
    // (the bundled identity would have been accepted).
    let endpoint = addr.to_string();
    let mut args = flags(&endpoint, &out_cert);
    args.extend(["--to", "t"]);
    let out = run("fcm_send", &args, Some(KEY));
    assert_eq!(out.code, Some(1), "{out}");
    assert!(out.stderr.contains("certificate"), "{out}");
    terminate(&emu);
    assert_eq!(emu.wait(LIMIT).code, Some(0));
}

// ---------------------------------------------------------------------------------------------
// The docs' shell snippets, run as written

/// The ```sh blocks of a Markdown file, each with the ```text block right after it (the
/// output it prints), if any.
fn snippets(markdown: &str) -> Vec<(String, Option<String>)> {
    let mut blocks: Vec<(String, String)> = Vec::new(); // (language, body)
    let mut lines = markdown.lines();
    while let Some(line) = lines.next() {
        if let Some(lang) = line.strip_prefix("```") {
            let body: Vec<&str> = lines
                .by_ref()
                .take_while(|l| !l.starts_with("```"))
                .collect();
            blocks.push((lang.trim().to_string(), body.join("\n")));
        }
    }
    let mut out = Vec::new();
    for (i, (lang, body)) in blocks.iter().enumerate() {
        if lang == "sh" {
            let expected = blocks
                .get(i + 1)
                .filter(|(l, _)| l == "text")
                .map(|(_, b)| b.clone());
            out.push((body.clone(), expected));
        }
    }
    out
}

/// The snippet as the test runs it: the examples are already built (`cargo test` built
/// them; cargo cannot run inside its own test run), so `cargo build --examples` lines go,
/// `cargo run --example NAME ... [--]` and `target/debug/examples` point at the built
/// programs, `cargo test` (this run) is left out; port 5235 becomes a free port and `/tmp/`
/// a directory of this test.
fn as_run(snippet: &str, examples: &str, port: u16, tmp: &str) -> String {
    let mut out = String::new();
    for line in snippet.lines() {
        let cmd = line.split("  #").next().unwrap_or(line).trim_end();
        if cmd.starts_with("cargo build") || cmd.starts_with("cargo test") {
            continue;
        }
        let line = match cmd.strip_prefix("cargo run --example ") {
            Some(rest) => {
                let (name, rest) = rest.split_once(' ').unwrap_or((rest, ""));
                let rest = rest.trim_start_matches("--features emulator").trim_start();
                let rest = rest.strip_prefix("--").unwrap_or(rest);
                format!("target/debug/examples/{name}{rest}")
            }
            None => line.to_string(),
        };
        // `/tmp/` first: the examples' own path may well lie under it.
        let line = line
            .replace("/tmp/", &format!("{tmp}/"))
            .replace(":5235", &format!(":{port}"))
            .replace("target/debug/examples", examples);
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// Runs one snippet with bash in its own process group (killed whole if it overruns).
fn run_snippet(script: &str) -> Finished {
    use std::os::unix::process::CommandExt;
    let mut child = Command::new("bash")
        .args(["-c", script])
        .env_remove("FCM_LOG")
        .env_remove("FCM_SERVER_KEY")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run bash");
    let pid = child.id();
    let (mut so, mut se) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let outs = thread::spawn(move || {
        let mut s = String::new();
        let _ = so.read_to_string(&mut s);
        s
    });
    let errs = thread::spawn(move || {
        let mut s = String::new();
        let _ = se.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        match child.try_wait().expect("try_wait") {
            Some(s) => break Some(s),
            None if Instant::now() >= deadline => break None,
            None => thread::sleep(Duration::from_millis(20)),
        }
    };
    // Whatever the snippet left behind goes with its group. The `--` matters: without
    // it procps-ng's kill 4.0 reads `-KILL -PGID` as options and signals pid -1, which
    // is every process this user may signal.
    let _ = Command::new("kill")
        .args(["-s", "KILL", "--", &format!("-{pid}")])
        .status();
    let _ = child.wait();
    Finished {
        name: "snippet".to_string(),
        code: status.and_then(|s| s.code()),
        stdout: outs.join().unwrap().lines().map(String::from).collect(),
        stderr: errs.join().unwrap(),
    }
}

#[test]
fn the_readme_snippets_run_as_written() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let examples = example("fcm_send").parent().unwrap().display().to_string();
    let mut ran = 0;
    for file in ["README.md", "examples/README.md"] {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        for (i, (snippet, expected)) in snippets(&text).into_iter().enumerate() {
            let tmp = TempDir::new(&format!("snippet-{i}"));
            let port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let script = as_run(&snippet, &examples, port, tmp.path());
            let out = run_snippet(&script);
            let context = format!("{file} snippet {i}:\n{script}\n{out}");
            assert_eq!(out.code, Some(0), "{context}");
            assert!(
                !out.stderr.contains("command not found") && !out.stderr.contains("No such file"),
                "{context}"
            );
            if let Some(expected) = expected {
                let want: Vec<&str> = expected.lines().collect();
                let mut unused: Vec<&str> = out.stdout.iter().map(String::as_str).collect();
                for w in &want {
                    let w = w.replace(":5235", &format!(":{port}"));
                    let at = unused.iter().position(|line| common::glob_match(&w, line));
                    let at = at.unwrap_or_else(|| panic!("no output line like {w:?}\n{context}"));
                    unused.remove(at);
                }
                assert!(
                    unused.is_empty(),
                    "lines the docs do not show: {unused:?}\n{context}"
                );
            }
            ran += 1;
        }
    }
    // The opening block of README.md, the whole loop, and examples/README.md's recipe.
    assert_eq!(ran, 3);
}

/// A directory in the temp directory, removed with its contents on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let f = TempFile::reserve(tag);
        let path = f.0.clone();
        drop(f);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().expect("utf-8 temp path")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn glob_match_is_strict_outside_the_ellipsis() {
    assert!(common::glob_match("a…c", "abbbc"));
    assert!(common::glob_match("{\"x\":…,\"y\":…}", "{\"x\":1,\"y\":2}"));
    assert!(!common::glob_match("a…c", "abbb"));
    assert!(!common::glob_match("abc", "abcd"));
    assert!(common::glob_match("…", ""));
}

#[test]
fn snippets_run_from_a_checkout_under_tmp_too() {
    // CI may clone the repository under /tmp: the examples' path must survive the
    // rewriting of the snippet's own /tmp/ files.
    let script = as_run(
        "E=target/debug/examples\nrm -f /tmp/ca.pem\n$E/fcm_send --endpoint 127.0.0.1:5235\n\
         cargo run --example quickstart --features emulator   # main job\n\
         cargo test --all-features   # the tests",
        "/tmp/ci/target/debug/examples",
        4242,
        "/tmp/t1",
    );
    assert_eq!(
        script,
        "E=/tmp/ci/target/debug/examples\nrm -f /tmp/t1/ca.pem\n\
         $E/fcm_send --endpoint 127.0.0.1:4242\n/tmp/ci/target/debug/examples/quickstart\n"
    );
}
