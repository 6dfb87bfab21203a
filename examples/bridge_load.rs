//! Load driver for `ccs_bridge`: messages per second through the bridge with its
//! journal on disk and with the journal in memory only, measured in one run against
//! an in-process emulator on 127.0.0.1.
//!
//! ```text
//! cargo build --release --examples --features emulator
//! target/release/examples/bridge_load [--count N] [--apps K]
//! ```
//!
//! It starts the `ccs_bridge` program built next to it twice (`--journal` in a
//! temporary directory, then without), logs `K` apps on, has each send its share of
//! `N` DOWNSTREAM lines as fast as the bridge reads them, and times from the first line
//! to the last outcome. One `name: value unit` line per figure on stdout.

#[path = "common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::{die, Args, Flag, Program};
use fcm_xmpp::Emulator;

const PROGRAM: Program = Program {
    name: "bridge_load",
    about: "messages/s through ccs_bridge, journaled and in memory, in one run",
    usage: "[--count N] [--apps K] [--bridge PATH]",
    groups: &[(
        "load",
        &[
            Flag::value(
                "count",
                "N",
                "20000",
                "DOWNSTREAM messages per mode, all apps",
            ),
            Flag::value(
                "apps",
                "K",
                "2",
                "apps logged on at once, each its own session",
            ),
            Flag::value(
                "bridge",
                "PATH",
                "",
                "the ccs_bridge program (default: the one built next to this one)",
            ),
        ],
    )],
    notes: "output: one `name: value unit` line per figure on stdout",
    exits: &[
        (0, "measured"),
        (1, "fatal or usage error (one line on stderr)"),
    ],
};

const SENDER: &str = "123456789012";
const KEY: &str = "bridge-load-key";
/// The most one mode may take before the run is given up.
const LIMIT: Duration = Duration::from_secs(300);

fn main() {
    common::init_logging();
    let args = Args::parse(&PROGRAM);
    let count: usize = Args::or_die(args.number("count", 20_000));
    let apps: usize = Args::or_die(args.number("apps", 2));
    if count == 0 || apps == 0 {
        die("--count and --apps must be at least 1");
    }
    let bridge = match args.get("bridge") {
        Some(p) => PathBuf::from(p),
        None => std::env::current_exe()
            .ok()
            .and_then(|e| Some(e.parent()?.join("ccs_bridge")))
            .unwrap_or_else(|| die("cannot find ccs_bridge: give --bridge PATH")),
    };
    let emu = Emulator::builder()
        .sender_id(SENDER)
        .server_key(KEY)
        .record_ids(false)
        .start()
        .unwrap_or_else(|e| die(format!("cannot start the emulator: {e}")));
    let tmp = std::env::temp_dir().join(format!("bridge-load-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(tmp.join("journal")).unwrap_or_else(|e| die(e));
    let ca = tmp.join("ca.pem");
    std::fs::write(&ca, Emulator::cert_pem()).unwrap_or_else(|e| die(e));
    let endpoint = emu.endpoint().to_string();

    println!("messages: {count} count");
    println!("apps: {apps} count");
    let mut rates = Vec::new();
    for (name, journal) in [
        ("journaled", Some(tmp.join("journal"))),
        ("in_memory", None),
    ] {
        let (rate, per_commit) = measure(&bridge, &endpoint, &ca, journal.as_deref(), count, apps);
        println!("{name}: {rate:.0} msg/s");
        if let Some(r) = per_commit {
            println!("{name}_records_per_commit: {r:.1} count");
        }
        rates.push(rate);
    }
    println!("journaled_over_in_memory: {:.2} ratio", rates[0] / rates[1]);
    let _ = std::fs::remove_dir_all(&tmp);
}

/// A bridge child process; killed on drop.
struct Running(Child);

impl Running {
    /// SIGTERM, then up to 10 s for a clean exit.
    fn stop(&mut self) {
        let pid = self.0.id().to_string();
        let _ = Command::new("kill")
            .args(["-s", "TERM", "--", &pid])
            .status();
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn measure(
    bridge: &Path,
    endpoint: &str,
    ca: &Path,
    journal: Option<&Path>,
    count: usize,
    apps: usize,
) -> (f64, Option<f64>) {
    let mut cmd = Command::new(bridge);
    cmd.args([
        "--endpoint",
        endpoint,
        "--sender-id",
        SENDER,
        "--listen",
        "127.0.0.1:0",
    ])
    .arg("--ca-file")
    .arg(ca)
    .env("FCM_SERVER_KEY", KEY)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    if let Some(j) = journal {
        cmd.arg("--journal").arg(j);
    }
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| die(format!("cannot start {}: {e}", bridge.display())));
    let stdout = child.stdout.take().unwrap_or_else(|| die("no stdout"));
    let stderr = child.stderr.take().unwrap_or_else(|| die("no stderr"));
    // Its stderr passes through; the journal's summary line gives records per commit.
    let summary = thread::spawn(move || {
        let mut per_commit = None;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("{line}");
            if let Some(rest) = line.strip_prefix("journal: ") {
                per_commit = rest
                    .split('(')
                    .nth(1)
                    .and_then(|r| r.split(' ').next())
                    .and_then(|r| r.parse::<f64>().ok());
            }
        }
        per_commit
    });
    let mut child = Running(child);
    let mut first = String::new();
    BufReader::new(stdout)
        .read_line(&mut first)
        .unwrap_or_else(|e| die(e));
    let addr: SocketAddr = first
        .split("\"addr\":\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| die(format!("no address in the bridge's first line: {first:?}")));

    let (done_tx, done_rx) = mpsc::channel();
    let mut streams = Vec::new();
    for a in 0..apps {
        let session = format!("com.example.load{a}");
        let mut s = TcpStream::connect(addr).unwrap_or_else(|e| die(e));
        let _ = s.set_read_timeout(Some(LIMIT));
        writeln!(s, r#"{{"message_type":"LOGON","session_id":"{session}"}}"#)
            .unwrap_or_else(|e| die(e));
        let mut r = BufReader::new(s.try_clone().unwrap_or_else(|e| die(e)));
        let mut line = String::new();
        r.read_line(&mut line).unwrap_or_else(|e| die(e));
        if !line.contains("SUCCESS") {
            die(format!("LOGON refused: {line}"));
        }
        let n = count / apps + usize::from(a < count % apps);
        streams.push((s, r, session, n));
    }
    let start = Instant::now();
    let mut threads = Vec::new();
    for (mut s, mut r, session, n) in streams {
        let done = done_tx.clone();
        // Write and read on two threads: an app that stops reading gets cut off.
        threads.push(thread::spawn(move || {
            let mut buf = Vec::with_capacity(256 * 1024);
            for i in 0..n {
                let _ = writeln!(
                    buf,
                    "{{\"message_type\":\"DOWNSTREAM\",\"session_id\":\"{session}\",\"message_id\":\"m-{i}\",\"fcm_data\":{{\"to\":\"device-1\",\"data\":{{\"k\":\"v\"}}}}}}"
                );
                if buf.len() > 200 * 1024 || i + 1 == n {
                    if s.write_all(&buf).is_err() {
                        return;
                    }
                    buf.clear();
                }
            }
        }));
        threads.push(thread::spawn(move || {
            let mut line = String::new();
            let mut outcomes = 0;
            while outcomes < n {
                line.clear();
                match r.read_line(&mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(_) if line.contains("DOWNSTREAM_ACK") || line.contains("REJECT") => {
                        outcomes += 1
                    }
                    Ok(_) => {}
                }
            }
            let _ = done.send(());
        }));
    }
    drop(done_tx);
    for _ in 0..apps {
        if done_rx.recv_timeout(LIMIT).is_err() {
            die("not every outcome arrived in time");
        }
    }
    let elapsed = start.elapsed();
    for t in threads {
        let _ = t.join();
    }
    child.stop();
    drop(child);
    let per_commit = summary.join().ok().flatten();
    (count as f64 / elapsed.as_secs_f64(), per_commit)
}
