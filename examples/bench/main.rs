//! Benchmarks: throughput, latency, parse speed and cost per message, against the
//! bundled emulator over loopback TLS. Prints figures; asserts nothing about speed.
//!
//! ```text
//! cargo run --release --features emulator --example bench              # everything, ~2 minutes
//! cargo run --release --features emulator --example bench -- --quick   # under 60 s
//! cargo run --features emulator --example bench -- --smoke             # tiny counts (CI)
//! cargo run --release --features emulator --example bench -- --only parse,cost
//! ```
//!
//! Stdout: one figure per line, `name: value unit`; lines starting with `#` are
//! context (machine, load average, what a section measures). Progress and
//! problems go to stderr. Exit 0 when every run delivered every message, 1 when
//! a run failed (a lost message, a stall, a connection error): a figure from a
//! broken run is never printed.
//!
//! Sections:
//! - **cost** (first, in a fresh process, with the emulator in a child process so
//!   every CPU second and heap allocation counted belongs to the client): resident
//!   memory and heap per idle connection with 100 open (30 with `--quick`), the
//!   time and CPU of a connect, CPU of an idle worker with 16 connections over 10 s
//!   (5 s with `--quick`), client and emulator CPU and client heap allocations per
//!   downstream and upstream message. Allocations are counted by a global
//!   allocator in this program only. CPU comes from `/proc/self/stat` (10 ms
//!   ticks: the full run's counts keep that under 1%).
//!
//! Modes `--serve-emulator` (an emulator on a free port: prints `port N`, reads
//! `inject N` lines, stops at EOF) and `--peer-client PORT COUNT` serve
//! `benches/peers/run.sh` and `benches/profile.sh`.
//! - **machine**: what a 1, 2 and 5 ms socket read timeout really waits, a 1 ms
//!   sleep, a channel round trip between two threads: the floors under polling
//!   I/O threads and thread hand-offs.
//! - **throughput** (emulator in process, on the same cores): a bare `Connection`
//!   in a tight loop and the worker `Client` at windows 1, 10 and 100, pools of 1,
//!   4 and 16 connections, ~100-byte data, ~3.5 KB data and notifications.
//! - **latency**: send-to-ack p50/p99/max at light load (one message at a time to
//!   an idle connection) and at full load (window 100, queue of 100).
//! - **latency-bound**: acks held back 20 ms, one connection and a pool of 16,
//!   against `connections x window / RTT`, printed as a ratio.
//! - **upstream**: upstream messages received and acked per second.
//! - **parse**: the stanza reader's MB/s on a realistic inbound byte stream against
//!   raw `xmlparser` tokenization of the same bytes, as the client reads
//!   (`next_item`: the common CCS message shape without a tree) and with every
//!   stanza built into a tree (`next_packet`, the `reader_tree_*` figures); JSON
//!   decode of events.
//!
//! Files: this one (settings, flags, the counting allocator), `common.rs` (process
//! readings, messages, worker and bare-`Connection` drivers), `sections.rs` (machine,
//! throughput, latency, latency-bound, upstream), `parse.rs`, `cost.rs` (and the
//! `--serve-emulator` mode).

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{BufRead, BufReader, Write as _};
use std::net::TcpStream;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::thread;
use std::time::{Duration, Instant};

use fcm_xmpp::client::{Client, ClientConfig, ClientEvent, Events};
use fcm_xmpp::emulator::Emulator;
use fcm_xmpp::xml::{Item, Packet, ReaderLimits, StanzaReader};
use fcm_xmpp::{Config, Connection, Endpoint, Event, Message, Notification};

mod common;
mod cost;
mod parse;
mod sections;

use common::*;
use cost::*;
use parse::*;
use sections::*;

// -- a counting allocator (this program only, never the library) ------------------------

/// Counts heap allocations (`alloc`, `alloc_zeroed`, `realloc`) and live bytes of the
/// whole process, then defers to the system allocator.
pub(crate) struct Counting;

pub(crate) static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
pub(crate) static LIVE_BYTES: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is forwarded unchanged to `System`; the counters are atomics that
// never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        LIVE_BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        LIVE_BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        System.alloc_zeroed(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as u64, Ordering::Relaxed);
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        LIVE_BYTES.fetch_add(new_size as u64, Ordering::Relaxed);
        LIVE_BYTES.fetch_sub(layout.size() as u64, Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
pub(crate) static GLOBAL: Counting = Counting;

// -- settings ------------------------------------------------------------------------------

pub(crate) const SENDER: &str = "123456789012";
pub(crate) const KEY: &str = "bench-server-key";
/// A registration token of the length FCM issues (152 characters).
pub(crate) const TOKEN: &str =
    "dQw4w9WgXcQ:APA91bHun4MxP5egoKMwt2KZFBaFUH-1RYqx1mUe3KbZ7vVnJq0HwXyTcLsP9aRfOe\
                     4uIgD8kNmB6jWtQpZr2xYs5vC1oL7hGdA3fEiMbU0nKwRqTz9ySaXcVjPlHgF4eDuI-Ox_Nk";
/// The emulator's default poll (see `EmulatorBuilder::poll_interval`).
pub(crate) const EMULATOR_POLL: Duration = Duration::from_millis(5);
/// What a send-to-ack wait, an event wait or a connect may take before the run fails.
pub(crate) const STALL: Duration = Duration::from_secs(20);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Mode {
    Full,
    Quick,
    Smoke,
}

impl Mode {
    /// Scales a full-run message count.
    pub(crate) fn n(self, full: usize) -> usize {
        match self {
            Mode::Full => full,
            Mode::Quick => (full / 5).max(200),
            Mode::Smoke => (full / 200).max(100),
        }
    }
    /// Scales a full-run duration.
    pub(crate) fn secs(self, full: f64) -> f64 {
        match self {
            Mode::Full => full,
            Mode::Quick => full / 2.0,
            Mode::Smoke => full / 40.0,
        }
    }
}

pub(crate) type Res<T> = Result<T, String>;

/// One part of the run.
pub(crate) type Section = fn(Mode) -> Res<()>;

pub(crate) const USAGE: &str = "usage: bench [--quick | --smoke] [--only SECTION,...]

Benchmarks against the bundled emulator; one `name: value unit` line per figure on
stdout, `#` lines for context, progress on stderr. Build with --release.

  --quick              smaller counts, under 60 s
  --smoke              tiny counts, for CI (checks the output, not speed)
  --only SECTION,...   only these of: cost, machine, throughput, latency,
                       latency-bound, upstream, parse (default: all)
  -h, --help           this text

  --serve-emulator           an emulator on a free port: prints `port N`, reads
                             `inject N` lines, stops at EOF on stdin
  --peer-client PORT COUNT   COUNT messages through the worker to 127.0.0.1:PORT

exit codes:
  0  every run delivered every message
  1  a run failed (lost message, stall, connection error) or a usage error";

/// Ends the program with a one-line `error:` on stderr, exit code 1.
pub(crate) fn fail(e: impl std::fmt::Display) -> ! {
    eprintln!("error: {e}");
    std::process::exit(1);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return;
    }
    if args.first().map(String::as_str) == Some("--serve-emulator") {
        serve_emulator();
        return;
    }
    if args.first().map(String::as_str) == Some("--peer-client") {
        if let Err(e) = peer_client(&args[1..]) {
            fail(e);
        }
        return;
    }
    let mut mode = Mode::Full;
    let mut only: Option<Vec<String>> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => mode = Mode::Quick,
            "--smoke" => mode = Mode::Smoke,
            "--only" => match it.next() {
                Some(v) => only = Some(v.split(',').map(str::to_string).collect()),
                None => fail("--only wants a list of sections (see --help)"),
            },
            other => fail(format!("unknown argument {other:?} (see --help)")),
        }
    }
    let sections: [(&str, Section); 7] = [
        ("cost", cost),
        ("machine", machine),
        ("throughput", throughput),
        ("latency", latency),
        ("latency-bound", latency_bound),
        ("upstream", upstream),
        ("parse", parse),
    ];
    for x in only.iter().flatten() {
        if !sections.iter().any(|(name, _)| name == x) {
            fail(format!("no section {x:?} (see --help)"));
        }
    }
    let started = Instant::now();
    println!("# fcm-xmpp bench, mode {mode:?}");
    println!(
        "cores: {} cores",
        thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("# loadavg at start: {}", loadavg());
    if cfg!(debug_assertions) {
        println!("# debug build: figures are not representative (use --release)");
    }
    for (name, f) in sections {
        if only.as_ref().is_some_and(|o| !o.iter().any(|x| x == name)) {
            continue;
        }
        eprintln!(
            "bench: {name} ({:.0} s in) ...",
            started.elapsed().as_secs_f64()
        );
        println!("# -- {name}");
        if let Err(e) = f(mode) {
            fail(format!("{name}: {e}"));
        }
    }
    println!("# loadavg at end: {}", loadavg());
    println!("bench_wall_s: {:.1} s", started.elapsed().as_secs_f64());
}

/// The `--peer-client PORT COUNT` mode of `benches/peers/run.sh`: COUNT messages through
/// the worker (one connection, window 100) to an emulator on 127.0.0.1:PORT, each built
/// as it is sent, as the peer clients do; then the rate and this process's peak RSS.
pub(crate) fn peer_client(args: &[String]) -> Res<()> {
    let [port, count] = args else {
        return Err("usage: bench --peer-client PORT COUNT".into());
    };
    let port = port.parse().map_err(|_| format!("bad port {port:?}"))?;
    let n = count.parse().map_err(|_| format!("bad count {count:?}"))?;
    let cfg = Config::new(SENDER, KEY)
        .endpoint(Endpoint::new("127.0.0.1", port))
        .add_root_pem(Emulator::cert_pem());
    let r = worker_run(cfg, 1, 100, 10_000, lazy_messages(n, Payload::Small), false)?;
    figure("peer_client_msgs_per_s", r.msgs_per_s, "msg/s");
    figure("peer_client_peak_rss_kib", status_kib("VmHWM:"), "KiB");
    Ok(())
}

/// Prints one figure.
pub(crate) fn figure(name: &str, value: f64, unit: &str) {
    let v = if value.abs() >= 100.0 {
        format!("{value:.0}")
    } else if value.abs() >= 1.0 {
        format!("{value:.2}")
    } else {
        format!("{value:.3}")
    };
    println!("{name}: {v} {unit}");
}
