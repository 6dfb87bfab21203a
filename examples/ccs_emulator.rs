//! A local CCS server: point any CCS client at it (TLS, trust the printed/written test CA).
//! It also plays the devices: upstream messages at a rate, or from JSON lines on stdin.
//!
//! ```text
//! cargo run --example ccs_emulator --features emulator -- \
//!     --listen 127.0.0.1:5235 --sender-id 123456789012 --server-key KEY \
//!     --reject dead-token=DEVICE_UNREGISTERED --cert-out /tmp/ccs-emulator-ca.pem \
//!     [--upstream-count M --upstream-rate N/s --upstream-from TOKEN] [--stdin] \
//!     [--cert PEM --key PEM] [--duration SECS] [--keepalive SECS]
//! ```
//!
//! Its first line is `ccs emulator listening on ADDR (dial ENDPOINT), sender id ID`, then
//! one line per event on stdout; `--cert-out` is written once it listens (so a client can
//! wait for the file). It runs until SIGINT/SIGTERM or for `--duration SECS`, then prints
//! a `stopped: ...` summary line and exits 0; exit 1 on a usage or start-up error (one
//! `error:` line on stderr).
//!
//! Devices: `--upstream-count M` upstream messages from `--upstream-from TOKEN` at
//! `--upstream-rate N/s`, each with `"seq": "i"` (0-based) and every `--upstream-data
//! KEY=VALUE`; with `--stdin`, one upstream message per JSON line on stdin,
//! `{"from":"TOKEN","category":"APP","data":{"KEY":"VALUE",...}}` (`category` and `data`
//! optional). Each goes to a connected client (or waits for one) and is delivered again
//! until acked. Receipts are sent for every acked message that asked for one.

#[path = "common/mod.rs"]
mod common;

use std::io::{BufRead, Read, Write as _};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use common::{die, Args, Flag, Program};
use fcm_xmpp::{Emulator, NackCode};
use miniserde::json::{self, Value};

const PROGRAM: Program = Program {
    name: "ccs_emulator",
    about: "a local CCS server over TLS that also plays the devices",
    usage: "[--listen HOST:PORT] [--sender-id ID] [--server-key KEY] [--reject TOKEN=CODE]... [FLAGS]",
    groups: &[
        (
            "server",
            &[
                Flag::value("listen", "HOST:PORT", "127.0.0.1:5235", "where to listen (port 0 picks a free port)"),
                Flag::value("sender-id", "ID", "123456789012", "the sender id clients authenticate as"),
                Flag::value("server-key", "KEY", "", "the key clients must present (default: env FCM_SERVER_KEY, else emulator-server-key)"),
                Flag::value("reject", "TOKEN=CODE", "", "NACK messages to TOKEN with CODE, e.g. DEVICE_UNREGISTERED (repeatable)"),
                Flag::value("cert-out", "PATH", "", "write the certificate clients must trust (PEM) to PATH once listening"),
                Flag::value("cert", "PEM", "", "serve this certificate (chain) instead of the bundled test one; needs --key"),
                Flag::value("key", "PEM", "", "the PKCS#8 private key of --cert"),
                Flag::value("keepalive", "SECS", "30", "whitespace keepalive interval, 0 = off"),
                Flag::value("duration", "SECS", "", "stop after SECS seconds (default: run until SIGINT/SIGTERM)"),
            ],
        ),
        (
            "devices",
            &[
                Flag::value("upstream-count", "M", "0", "send M upstream messages from --upstream-from"),
                Flag::value("upstream-rate", "N/s", "10/s", "how fast the --upstream-count messages go out"),
                Flag::value("upstream-from", "TOKEN", "device-1", "the device token they come from"),
                Flag::value("upstream-category", "APP", "com.example.app", "their category (the app's package name)"),
                Flag::value("upstream-data", "KEY=VALUE", "", "a data field of each, next to \"seq\": \"i\" (repeatable)"),
                Flag::switch("stdin", "read upstream messages as JSON lines on stdin: {\"from\":...,\"category\":...,\"data\":{...}}"),
            ],
        ),
    ],
    notes: "output: the listening line, a line per event on stdout, and a \"stopped: ...\" summary\nline at the end (after --duration, SIGINT or SIGTERM).",
    exits: &[
        (0, "stopped by --duration, SIGINT or SIGTERM"),
        (1, "usage or start-up error (one line on stderr)"),
    ],
};

/// The longest stdin line accepted; longer ones are skipped with a warning.
const MAX_LINE: usize = 64 * 1024;

/// `--listen`: `HOST:PORT`, resolved; an IPv4 address is preferred (`localhost`).
fn listen_addr(text: &str) -> Result<SocketAddr, String> {
    let addrs: Vec<SocketAddr> = text
        .to_socket_addrs()
        .map_err(|e| format!("--listen {text:?}: {e} (want HOST:PORT)"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| format!("--listen {text:?}: no address"))
}

/// `--upstream-rate`: `N/s` or `N`, more than 0.
fn rate(text: &str) -> Result<f64, String> {
    let n = text.strip_suffix("/s").unwrap_or(text);
    match n.trim().parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err(format!(
            "--upstream-rate {text:?}: want messages per second, e.g. 100/s"
        )),
    }
}

fn key_value(flag: &str, kv: &str) -> Result<(String, String), String> {
    match kv.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("--{flag} {kv:?}: expected KEY=VALUE")),
    }
}

/// An upstream message to inject: `(from, category, data)`.
type Upstream = (String, String, Vec<(String, String)>);

/// One stdin line as an upstream message.
fn upstream_line(line: &str, default_category: &str) -> Result<Upstream, String> {
    let Ok(Value::Object(o)) = json::from_str::<Value>(line) else {
        return Err("not a JSON object".to_string());
    };
    let text = |key: &str| match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
        Some(_) => Err(format!("\"{key}\" must be a non-empty string")),
    };
    let from = text("from")?.ok_or("\"from\" (the device token) is missing")?;
    let category = text("category")?.unwrap_or_else(|| default_category.to_string());
    let mut data = Vec::new();
    match o.get("data") {
        None | Some(Value::Null) => {}
        Some(Value::Object(d)) => {
            for (k, v) in d.iter() {
                match v {
                    Value::String(s) => data.push((k.clone(), s.clone())),
                    _ => {
                        return Err(format!(
                            "data \"{k}\" must be a string (CCS data values are strings)"
                        ))
                    }
                }
            }
        }
        Some(_) => return Err("\"data\" must be an object of strings".to_string()),
    }
    Ok((from, category, data))
}

/// Reads stdin line by line (each at most [`MAX_LINE`] bytes) and injects each as an
/// upstream message; a bad line is reported on stderr and skipped.
fn read_stdin(emu: &Emulator, category: &str, injected: &AtomicU64) {
    let mut input = std::io::stdin().lock();
    let mut buf = Vec::new();
    for n in 1.. {
        buf.clear();
        let read = (&mut input)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut buf);
        match read {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) => {
                eprintln!("warning: stdin: {e}; no more upstream messages from stdin");
                return;
            }
        }
        if buf.len() > MAX_LINE && buf.last() != Some(&b'\n') {
            // Skip the rest of the line, bounded per read.
            loop {
                buf.clear();
                match (&mut input)
                    .take(MAX_LINE as u64)
                    .read_until(b'\n', &mut buf)
                {
                    Ok(0) | Err(_) => break,
                    Ok(_) if buf.last() == Some(&b'\n') => break,
                    Ok(_) => {}
                }
            }
            eprintln!("warning: stdin line {n}: longer than {MAX_LINE} bytes; skipped");
            continue;
        }
        let Ok(line) = std::str::from_utf8(&buf) else {
            eprintln!("warning: stdin line {n}: not UTF-8; skipped");
            continue;
        };
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        match upstream_line(line, category) {
            Ok((from, category, data)) => {
                let pairs: Vec<(&str, &str)> =
                    data.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                emu.inject_upstream(&from, &category, &pairs);
                injected.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => eprintln!("warning: stdin line {n}: {e}; skipped"),
        }
    }
}

/// `--upstream-count` messages at `--upstream-rate`, sent as they fall due.
struct Schedule {
    from: String,
    category: String,
    data: Vec<(String, String)>,
    count: u64,
    rate: f64,
    sent: u64,
    started: Instant,
}

impl Schedule {
    /// Injects the messages due by now; the wait until the next one (`None` when done).
    fn run(&mut self, emu: &Emulator, injected: &AtomicU64) -> Option<Duration> {
        let due = ((self.started.elapsed().as_secs_f64() * self.rate) as u64 + 1).min(self.count);
        while self.sent < due {
            let seq = self.sent.to_string();
            let mut pairs: Vec<(&str, &str)> = self
                .data
                .iter()
                .filter(|(k, _)| k != "seq")
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            pairs.push(("seq", &seq));
            emu.inject_upstream(&self.from, &self.category, &pairs);
            injected.fetch_add(1, Ordering::Relaxed);
            self.sent += 1;
        }
        (self.sent < self.count).then(|| {
            let next = Duration::from_secs_f64(self.sent as f64 / self.rate);
            next.saturating_sub(self.started.elapsed())
        })
    }
}

/// Writes `bytes` to `path` through a temporary file and a rename, so a reader never
/// sees a half-written file.
fn write_atomically(path: &str, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = format!("{path}.tmp-{}", std::process::id());
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

fn main() {
    common::init_logging();
    let args = Args::parse(&PROGRAM);
    let listen = Args::or_die(listen_addr(args.get("listen").unwrap_or("127.0.0.1:5235")));
    let sender_id = args.get("sender-id").unwrap_or("123456789012").to_string();
    let server_key = args
        .get("server-key")
        .map(str::to_string)
        .or_else(|| std::env::var("FCM_SERVER_KEY").ok())
        .unwrap_or_else(|| "emulator-server-key".to_string());
    let mut reject = Vec::new();
    for v in args.all("reject") {
        let (token, code) = match v.split_once('=') {
            Some((t, c)) if !t.is_empty() && !c.is_empty() => (t, c),
            _ => die(format!("--reject {v:?}: expected TOKEN=CODE")),
        };
        let code = NackCode::from_code(code);
        if matches!(code, NackCode::Other(_)) {
            eprintln!(
                "warning: --reject {v}: {} is not a NACK code CCS documents; sent as given",
                code.as_str()
            );
        }
        reject.push((token.to_string(), code));
    }
    let duration = Args::or_die(args.opt_seconds("duration"));
    let keepalive = Args::or_die(args.number::<u64>("keepalive", 30));
    let identity = match (args.get("cert"), args.get("key")) {
        (None, None) => None,
        (Some(c), Some(k)) => {
            let read = |flag: &str, path: &str| {
                std::fs::read(path).unwrap_or_else(|e| die(format!("--{flag} {path}: {e}")))
            };
            Some((read("cert", c), read("key", k)))
        }
        _ => die("--cert and --key go together"),
    };
    let category = args
        .get("upstream-category")
        .unwrap_or("com.example.app")
        .to_string();
    let mut schedule = Schedule {
        from: args.get("upstream-from").unwrap_or("device-1").to_string(),
        category: category.clone(),
        data: Args::or_die(
            args.all("upstream-data")
                .map(|kv| key_value("upstream-data", kv))
                .collect(),
        ),
        count: Args::or_die(args.number("upstream-count", 0)),
        rate: Args::or_die(rate(args.get("upstream-rate").unwrap_or("10/s"))),
        sent: 0,
        started: Instant::now(),
    };

    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(sig, Arc::clone(&stop)) {
            die(format!("cannot handle signal {sig}: {e}"));
        }
    }

    let (tx, rx) = mpsc::channel();
    let mut builder = Emulator::builder()
        .bind(listen)
        .sender_id(sender_id.clone())
        .server_key(server_key)
        .keepalive_interval(Duration::from_secs(keepalive))
        .observer(tx);
    let trust: &[u8] = match &identity {
        Some((cert, key)) => {
            builder = builder.identity_pem(cert.clone(), key.clone());
            cert
        }
        None => Emulator::cert_pem(),
    };
    let emu = match builder.start() {
        Ok(e) => Arc::new(e),
        Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => die(format!("--cert/--key: {e}")),
        Err(e) => die(format!("cannot listen on {listen}: {e}")),
    };
    for (token, code) in reject {
        emu.reject_token(token, code);
    }
    if let Some(path) = args.get("cert-out") {
        if let Err(e) = write_atomically(path, trust) {
            die(format!("cannot write {path}: {e}"));
        }
    }
    println!(
        "ccs emulator listening on {} (dial {}), sender id {sender_id}",
        emu.addr(),
        emu.endpoint(),
    );
    match args.get("cert-out") {
        Some(path) => println!("trust the test CA written to {path}"),
        None => println!("trust the test CA (--cert-out PATH writes it)"),
    }

    let injected = Arc::new(AtomicU64::new(0));
    if args.has("stdin") {
        let (emu, injected) = (Arc::clone(&emu), Arc::clone(&injected));
        std::thread::spawn(move || read_stdin(&emu, &category, &injected));
    }
    schedule.started = Instant::now();
    // A huge --duration runs until a signal (`Instant + Duration` would overflow).
    let deadline = duration.and_then(|d| Instant::now().checked_add(d));
    let mut out = std::io::BufWriter::new(std::io::stdout());
    let _ = out.flush();
    loop {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let mut wait = Duration::from_millis(100);
        if let Some(next) = schedule.run(&emu, &injected) {
            wait = wait.min(next);
        }
        if let Some(d) = deadline {
            match d.checked_duration_since(Instant::now()) {
                Some(left) => wait = wait.min(left),
                None => break,
            }
        }
        match rx.recv_timeout(wait) {
            Ok(event) => {
                let _ = writeln!(out, "{event}");
                for event in rx.try_iter().take(4096) {
                    let _ = writeln!(out, "{event}");
                }
                let _ = out.flush();
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    emu.shutdown();
    for event in rx.try_iter() {
        let _ = writeln!(out, "{event}");
    }
    let ledger = emu.ledger();
    let upstream_acked: usize = ledger
        .connections
        .iter()
        .map(|c| c.upstream_acked.len())
        .sum();
    let _ = writeln!(
        out,
        "stopped: {} connections, {} downstream received, {} acked, {} nacked, {} upstream sent, {} upstream acked",
        ledger.connections_accepted,
        ledger.total_received(),
        ledger.total_acked(),
        ledger.total_nacked(),
        injected.load(Ordering::Relaxed),
        upstream_acked,
    );
    let _ = out.flush();
}
