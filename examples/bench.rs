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
//!   raw `xmlparser` tokenization of the same bytes; JSON decode of events.

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
use fcm_xmpp::xml::{Packet, ReaderLimits, StanzaReader};
use fcm_xmpp::{Config, Connection, Endpoint, Event, Message, Notification};

// -- a counting allocator (this program only, never the library) ------------------------

/// Counts heap allocations (`alloc`, `alloc_zeroed`, `realloc`) and live bytes of the
/// whole process, then defers to the system allocator.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static LIVE_BYTES: AtomicU64 = AtomicU64::new(0);

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
static GLOBAL: Counting = Counting;

// -- settings ------------------------------------------------------------------------------

const SENDER: &str = "123456789012";
const KEY: &str = "bench-server-key";
/// A registration token of the length FCM issues (152 characters).
const TOKEN: &str =
    "dQw4w9WgXcQ:APA91bHun4MxP5egoKMwt2KZFBaFUH-1RYqx1mUe3KbZ7vVnJq0HwXyTcLsP9aRfOe\
                     4uIgD8kNmB6jWtQpZr2xYs5vC1oL7hGdA3fEiMbU0nKwRqTz9ySaXcVjPlHgF4eDuI-Ox_Nk";
/// The emulator's default poll (see `EmulatorBuilder::poll_interval`).
const EMULATOR_POLL: Duration = Duration::from_millis(5);
/// What a send-to-ack wait, an event wait or a connect may take before the run fails.
const STALL: Duration = Duration::from_secs(20);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Full,
    Quick,
    Smoke,
}

impl Mode {
    /// Scales a full-run message count.
    fn n(self, full: usize) -> usize {
        match self {
            Mode::Full => full,
            Mode::Quick => (full / 5).max(200),
            Mode::Smoke => (full / 200).max(100),
        }
    }
    /// Scales a full-run duration.
    fn secs(self, full: f64) -> f64 {
        match self {
            Mode::Full => full,
            Mode::Quick => full / 2.0,
            Mode::Smoke => full / 40.0,
        }
    }
}

type Res<T> = Result<T, String>;

/// One part of the run.
type Section = fn(Mode) -> Res<()>;

const USAGE: &str = "usage: bench [--quick | --smoke] [--only SECTION,...]

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
fn fail(e: impl std::fmt::Display) -> ! {
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
fn peer_client(args: &[String]) -> Res<()> {
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
fn figure(name: &str, value: f64, unit: &str) {
    let v = if value.abs() >= 100.0 {
        format!("{value:.0}")
    } else if value.abs() >= 1.0 {
        format!("{value:.2}")
    } else {
        format!("{value:.3}")
    };
    println!("{name}: {v} {unit}");
}

// -- process readings ----------------------------------------------------------------------

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// CPU time (user + system) of this process, exited threads included, in seconds.
fn process_cpu_s() -> f64 {
    cpu_s("self")
}

/// CPU time (user + system) of process `pid` (`self` for this one), in seconds.
fn cpu_s(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // USER_HZ, 100 on Linux.
    (ticks(11) + ticks(12)) / 100.0
}

/// Resident memory of this process, KiB.
fn rss_kib() -> f64 {
    status_kib("VmRSS:")
}

/// A `kB` field of `/proc/self/status` (`VmRSS:`, `VmHWM:`), KiB.
fn status_kib(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// CPU seconds and heap allocations at one moment.
#[derive(Clone, Copy)]
struct Snapshot {
    cpu: f64,
    allocs: u64,
    at: Instant,
}

impl Snapshot {
    fn now() -> Self {
        Snapshot {
            cpu: process_cpu_s(),
            allocs: ALLOCATIONS.load(Ordering::Relaxed),
            at: Instant::now(),
        }
    }
    /// (CPU µs per unit, allocations per unit, wall seconds) since `self`.
    fn per(&self, units: usize) -> (f64, f64, f64) {
        let now = Snapshot::now();
        let n = units.max(1) as f64;
        (
            (now.cpu - self.cpu) * 1e6 / n,
            (now.allocs - self.allocs) as f64 / n,
            now.at.duration_since(self.at).as_secs_f64(),
        )
    }
}

// -- messages ------------------------------------------------------------------------------

#[derive(Clone, Copy)]
enum Payload {
    /// About 100 bytes of data.
    Small,
    /// About 3.5 KB of data (CCS allows 4 KB).
    Large,
    /// A notification message, no data.
    Notification,
}

static RUN: AtomicUsize = AtomicUsize::new(0);

/// `n` messages with ids `r{run}-{i}`, so an outcome's index is its id's suffix.
fn messages(n: usize, payload: Payload) -> Vec<Message> {
    lazy_messages(n, payload).collect()
}

/// The same, built one by one as they are taken.
fn lazy_messages(n: usize, payload: Payload) -> impl Iterator<Item = Message> + Send {
    let run = RUN.fetch_add(1, Ordering::Relaxed);
    let large = "0123456789abcdef".repeat(219); // 3504 bytes
    (0..n).map(move |i| {
        let m = Message::to(TOKEN)
            .message_id(format!("r{run}-{i}"))
            .time_to_live(600);
        match payload {
            Payload::Small => m.data("seq", i.to_string()).data(
                "text",
                "Your order #8812 has shipped and arrives Tuesday 9-12; track it in our app",
            ),
            Payload::Large => m.data("seq", i.to_string()).data("blob", large.as_str()),
            Payload::Notification => m.notification(
                Notification::new()
                    .title("Portugal vs. Denmark")
                    .body("great match! 2-1 after extra time")
                    .icon("ic_launcher"),
            ),
        }
    })
}

fn index_of(id: &str) -> Res<usize> {
    id.rsplit('-')
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("unexpected message id {id:?}"))
}

/// An emulator in this process: ids not recorded (counts only), no keepalives, its
/// connection threads looking at held-back answers every `poll`.
fn local_emulator(poll: Duration) -> Res<Emulator> {
    Emulator::builder()
        .poll_interval(poll)
        .sender_id(SENDER)
        .server_key(KEY)
        .record_ids(false)
        .keepalive_interval(Duration::ZERO)
        .start()
        .map_err(|e| format!("emulator: {e}"))
}

// -- the worker ----------------------------------------------------------------------------

/// One worker run's results.
struct WorkerRun {
    msgs_per_s: f64,
    /// Send-to-ack latency per message (from `send` returning to the outcome), when asked.
    latencies: Vec<Duration>,
}

/// Starts a worker and waits until all its connections are up.
fn start_worker(config: ClientConfig) -> Res<(Client, Events)> {
    let want = config.connections;
    let (client, mut events) = Client::start(config).map_err(|e| format!("client: {e}"))?;
    count_events(&mut events, want, "connections", |e| {
        matches!(e, ClientEvent::Connected { .. })
    })?;
    Ok((client, events))
}

/// Reads events until `n` of them were `wanted`; fails on a stop, a failed connection
/// attempt, a lost connection or a stall.
fn count_events(
    events: &mut Events,
    n: usize,
    what: &str,
    wanted: fn(&ClientEvent) -> bool,
) -> Res<()> {
    let mut got = 0;
    while got < n {
        match events.recv_timeout(STALL) {
            Ok(e) if wanted(&e) => got += 1,
            Ok(ClientEvent::Fatal { error }) => return Err(format!("client: {error}")),
            Ok(ClientEvent::Reconnecting { error, .. }) => return Err(format!("connect: {error}")),
            Ok(ClientEvent::Lost { error, .. }) => return Err(format!("connection lost: {error}")),
            Ok(_) => {}
            Err(e) => return Err(format!("{what}: stalled at {got} of {n}: {e:?}")),
        }
    }
    Ok(())
}

/// Waits for the outcome of every message in `sent` (indexed by id suffix); fails on
/// anything but a delivery. Returns the time of each delivery when `times`.
fn await_deliveries(events: &mut Events, n: usize, times: bool) -> Res<Vec<Option<Instant>>> {
    let mut delivered = 0;
    let mut at = if times { vec![None; n] } else { Vec::new() };
    while delivered < n {
        match events.recv_timeout(STALL) {
            Ok(ClientEvent::Delivered { message, .. }) => {
                delivered += 1;
                if times {
                    at[index_of(message.id())?] = Some(Instant::now());
                }
            }
            Ok(ev @ (ClientEvent::Rejected { .. } | ClientEvent::Returned { .. })) => {
                return Err(format!("not delivered: {ev:?}"));
            }
            Ok(ClientEvent::Fatal { error }) => return Err(format!("client: {error}")),
            Ok(ClientEvent::Lost { error, .. }) => eprintln!("bench: connection lost: {error}"),
            Ok(_) => {}
            Err(RecvTimeoutError::Timeout) => {
                return Err(format!("stalled at {delivered} of {n} outcomes"))
            }
            Err(RecvTimeoutError::Disconnected) => return Err("client stopped".into()),
        }
    }
    Ok(at)
}

/// Pushes `msgs` through a worker with `conns` connections of window `window`.
fn worker_run(
    base: Config,
    conns: usize,
    window: usize,
    queue: usize,
    msgs: impl IntoIterator<Item = Message, IntoIter: Send + 'static>,
    record_latency: bool,
) -> Res<WorkerRun> {
    let msgs = msgs.into_iter();
    let n = msgs.size_hint().0;
    let (client, mut events) = start_worker(
        ClientConfig::new(base.max_pending(window))
            .connections(conns)
            .queue_capacity(queue),
    )?;
    let t0 = Instant::now();
    let sender = {
        let client = client.clone();
        thread::spawn(move || -> Res<Vec<Instant>> {
            let mut sent = Vec::with_capacity(if record_latency { n } else { 0 });
            for m in msgs {
                client
                    .send_timeout(m, STALL)
                    .map_err(|e| format!("send: {e}"))?;
                if record_latency {
                    sent.push(Instant::now());
                }
            }
            Ok(sent)
        })
    };
    let got = await_deliveries(&mut events, n, record_latency);
    let elapsed = t0.elapsed();
    let sent = sender
        .join()
        .map_err(|_| "sender thread panicked".to_string())??;
    let delivered = got?;
    let unsent = client.shutdown(Duration::from_secs(5));
    if !unsent.is_empty() {
        return Err(format!("{} messages unsent at shutdown", unsent.len()));
    }
    let latencies = sent
        .iter()
        .zip(&delivered)
        .filter_map(|(s, d)| d.map(|d| d.saturating_duration_since(*s)))
        .collect();
    Ok(WorkerRun {
        msgs_per_s: n as f64 / elapsed.as_secs_f64(),
        latencies,
    })
}

// -- a bare Connection ---------------------------------------------------------------------

/// Handles one event of a raw run: an ack counts, anything else fails.
fn raw_event(ev: Event) -> Res<()> {
    match ev {
        Event::Ack(_) => Ok(()),
        other => Err(format!("unexpected event {other:?}")),
    }
}

/// Pushes `msgs` through one `Connection` in a tight loop: fill the window, one write,
/// read what has arrived. Returns messages/s.
fn raw_run(config: &Config, window: usize, msgs: &[Message]) -> Res<f64> {
    let config = config.clone().max_pending(window);
    let mut conn = Connection::connect(&config).map_err(|e| format!("connect: {e}"))?;
    let t0 = Instant::now();
    raw_push(&mut conn, msgs)?;
    let elapsed = t0.elapsed();
    conn.close().map_err(|e| format!("close: {e}"))?;
    Ok(msgs.len() as f64 / elapsed.as_secs_f64())
}

fn raw_push<S>(conn: &mut Connection<S>, msgs: &[Message]) -> Res<()>
where
    S: std::io::Read + std::io::Write + fcm_xmpp::SetTimeout,
{
    let (mut sent, mut acked) = (0, 0);
    let e = |e: fcm_xmpp::Error| e.to_string();
    while acked < msgs.len() {
        while conn.window_free() > 0 && sent < msgs.len() {
            conn.send_buffered(&msgs[sent]).map_err(e)?;
            sent += 1;
        }
        conn.flush().map_err(e)?;
        match conn.recv_event(Some(STALL)).map_err(e)? {
            Some(ev) => raw_event(ev)?,
            None => return Err(format!("stalled at {acked} of {} acks", msgs.len())),
        }
        acked += 1;
        while let Some(ev) = conn.try_recv_event().map_err(e)? {
            raw_event(ev)?;
            acked += 1;
        }
    }
    Ok(())
}

// -- the machine's own limits -------------------------------------------------------------

/// Median of `k` timings of `f`, µs.
fn median_us(k: usize, mut f: impl FnMut()) -> f64 {
    let mut v: Vec<Duration> = (0..k)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    v.sort();
    percentile(&v, 0.5)
}

/// What a blocking read with a short timeout really waits, a 1 ms sleep, and waking a
/// thread through a channel: the floors under polling I/O threads and hand-offs.
fn machine(mode: Mode) -> Res<()> {
    use std::io::Read;
    let k = mode.n(100).min(50);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let mut c = TcpStream::connect(listener.local_addr().map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    let _peer = listener.accept().map_err(|e| e.to_string())?;
    println!("# socket read timeouts (SO_RCVTIMEO) on an idle socket, median of {k}");
    for ms in [1, 2, 5] {
        c.set_read_timeout(Some(Duration::from_millis(ms)))
            .map_err(|e| e.to_string())?;
        let us = median_us(k, || {
            let _ = c.read(&mut [0u8; 16]);
        });
        figure(&format!("read_timeout_{ms}ms_waits_us"), us, "us");
    }
    let us = median_us(k, || thread::sleep(Duration::from_millis(1)));
    figure("sleep_1ms_waits_us", us, "us");
    let (to_tx, to_rx) = std::sync::mpsc::channel::<()>();
    let (back_tx, back_rx) = std::sync::mpsc::channel::<()>();
    let echo = thread::spawn(move || {
        while to_rx.recv().is_ok() {
            if back_tx.send(()).is_err() {
                break;
            }
        }
    });
    let us = median_us(k * 10, || {
        let _ = to_tx.send(());
        let _ = back_rx.recv();
    });
    drop(to_tx);
    let _ = echo.join();
    figure("channel_wakeup_round_trip_us", us, "us");
    Ok(())
}

// -- throughput ----------------------------------------------------------------------------

fn throughput(mode: Mode) -> Res<()> {
    let emu = local_emulator(EMULATOR_POLL)?;
    let cfg = emu.client_config();
    println!("# downstream messages/s, emulator in this process, ~100-byte data unless named");
    for (name, payload) in [
        ("small", Payload::Small),
        ("data3500", Payload::Large),
        ("notification", Payload::Notification),
    ] {
        let mut json = String::new();
        messages(1, payload)[0].write_json(&mut json);
        figure(
            &format!("message_json_bytes_{name}"),
            json.len() as f64,
            "bytes",
        );
    }
    let mut raw100 = 0.0;
    for (window, full) in [(1, 20_000), (10, 100_000), (100, 200_000)] {
        let msgs = messages(mode.n(full), Payload::Small);
        let rate = raw_run(&cfg, window, &msgs)?;
        figure(
            &format!("raw_connection_msgs_per_s_window{window}"),
            rate,
            "msg/s",
        );
        if window == 100 {
            raw100 = rate;
        }
    }
    let mut worker100 = 0.0;
    for (window, full) in [(1, 20_000), (10, 100_000), (100, 200_000)] {
        let msgs = messages(mode.n(full), Payload::Small);
        let r = worker_run(cfg.clone(), 1, window, 10_000, msgs, false)?;
        figure(
            &format!("downstream_msgs_per_s_window{window}"),
            r.msgs_per_s,
            "msg/s",
        );
        if window == 100 {
            worker100 = r.msgs_per_s;
        }
    }
    figure("worker_vs_raw_ratio_window100", worker100 / raw100, "ratio");
    for conns in [1, 4, 16] {
        let msgs = messages(mode.n(200_000), Payload::Small);
        let r = worker_run(cfg.clone(), conns, 100, 10_000, msgs, false)?;
        figure(&format!("pool{conns}_msgs_per_s"), r.msgs_per_s, "msg/s");
    }
    for (name, payload, full) in [
        ("data3500", Payload::Large, 50_000),
        ("notification", Payload::Notification, 200_000),
    ] {
        let msgs = messages(mode.n(full), payload);
        let r = worker_run(cfg.clone(), 1, 100, 10_000, msgs, false)?;
        figure(
            &format!("downstream_msgs_per_s_{name}"),
            r.msgs_per_s,
            "msg/s",
        );
        if let Payload::Large = payload {
            figure(
                "downstream_mb_per_s_data3500",
                r.msgs_per_s * 3504.0 / 1e6,
                "MB/s",
            );
        }
    }
    emu.shutdown();
    Ok(())
}

// -- latency -------------------------------------------------------------------------------

fn percentile(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1].as_secs_f64() * 1e6
}

fn print_latency(prefix: &str, mut l: Vec<Duration>) {
    l.sort();
    figure(&format!("{prefix}_p50_us"), percentile(&l, 0.50), "us");
    figure(&format!("{prefix}_p99_us"), percentile(&l, 0.99), "us");
    figure(&format!("{prefix}_max_us"), percentile(&l, 1.0), "us");
}

fn latency(mode: Mode) -> Res<()> {
    let emu = local_emulator(EMULATOR_POLL)?;
    let cfg = emu.client_config();
    let gap = Duration::from_millis(5);
    let k = mode.n(2_000).min(2_000);
    println!(
        "# light load: one message at a time, {} ms idle between, {k} messages",
        gap.as_millis()
    );

    // The worker: the connection is idle when each message is sent.
    let (client, mut events) = start_worker(ClientConfig::new(cfg.clone()))?;
    let mut l = Vec::with_capacity(k);
    for m in messages(k, Payload::Small) {
        thread::sleep(gap);
        let t = Instant::now();
        client.send(m).map_err(|e| format!("send: {e}"))?;
        await_deliveries(&mut events, 1, false)?;
        l.push(t.elapsed());
    }
    client.shutdown(Duration::from_secs(5));
    print_latency("send_to_ack", l);

    // The same through a bare Connection: the floor the worker adds to.
    print_latency("raw_connection_send_to_ack", one_at_a_time(&cfg, k, gap)?);

    println!("# full load: window 100, queue of 100, latency from send() returning to the outcome");
    let msgs = messages(mode.n(100_000), Payload::Small);
    let r = worker_run(cfg, 1, 100, 100, msgs, true)?;
    print_latency("send_to_ack_full_load", r.latencies);
    figure("send_to_ack_full_load_msgs_per_s", r.msgs_per_s, "msg/s");
    emu.shutdown();
    Ok(())
}

/// Send-to-ack of `k` messages sent one at a time through a bare `Connection`, `gap`
/// apart.
fn one_at_a_time(cfg: &Config, k: usize, gap: Duration) -> Res<Vec<Duration>> {
    let mut conn = Connection::connect(cfg).map_err(|e| format!("connect: {e}"))?;
    let mut l = Vec::with_capacity(k);
    for m in messages(k, Payload::Small) {
        thread::sleep(gap);
        let t = Instant::now();
        conn.send(&m).map_err(|e| format!("send: {e}"))?;
        match conn.recv_event(Some(STALL)) {
            Ok(Some(ev)) => raw_event(ev)?,
            other => return Err(format!("waiting for an ack: {other:?}")),
        }
        l.push(t.elapsed());
    }
    let _ = conn.close();
    Ok(l)
}

fn latency_bound(mode: Mode) -> Res<()> {
    // Held-back acks leave when due (the emulator's sessions wait on a channel until
    // then), so its poll interval does not matter here.
    let emu = local_emulator(EMULATOR_POLL)?;
    let rtt = Duration::from_millis(20);
    emu.set_ack_delay(rtt);
    println!("# every ack held back 20 ms; limit = connections x window / RTT");
    // What one round trip really takes: one message at a time through a bare Connection.
    let mut rtts = one_at_a_time(&emu.client_config(), mode.n(50).min(50), Duration::ZERO)?;
    rtts.sort();
    let effective = percentile(&rtts, 0.5) / 1e6;
    figure("rtt20ms_effective_rtt_us", effective * 1e6, "us");
    let n = (5000.0 * mode.secs(4.0)) as usize;
    let rate = raw_run(&emu.client_config(), 100, &messages(n, Payload::Small))?;
    figure("rtt20ms_raw_connection_ratio", rate / 5000.0, "ratio");
    for (name, conns) in [("one_connection", 1usize), ("pool16", 16)] {
        let limit = conns as f64 * 100.0 / rtt.as_secs_f64();
        let n = (limit * mode.secs(4.0)) as usize;
        let msgs = messages(n, Payload::Small);
        let r = worker_run(emu.client_config(), conns, 100, 10_000, msgs, false)?;
        figure(&format!("rtt20ms_{name}_msgs_per_s"), r.msgs_per_s, "msg/s");
        figure(&format!("rtt20ms_{name}_limit_msgs_per_s"), limit, "msg/s");
        figure(
            &format!("rtt20ms_{name}_ratio"),
            r.msgs_per_s / limit,
            "ratio",
        );
        // The same against the round trip the emulator really gives (see above).
        figure(
            &format!("rtt20ms_{name}_ratio_to_effective_rtt"),
            r.msgs_per_s * effective / (conns as f64 * 100.0),
            "ratio",
        );
    }
    emu.shutdown();
    Ok(())
}

// -- upstream ------------------------------------------------------------------------------

/// Counts `n` upstream events.
fn await_upstream(events: &mut Events, n: usize) -> Res<()> {
    count_events(events, n, "upstream", |e| {
        matches!(e, ClientEvent::Upstream { .. })
    })
}

const UPSTREAM_DATA: [(&str, &str); 2] = [
    ("text", "Reply from the device: on my way, see you at eight"),
    ("thread", "c-2231"),
];

fn upstream(mode: Mode) -> Res<()> {
    let emu = local_emulator(EMULATOR_POLL)?;
    let n = mode.n(200_000);
    let (client, mut events) = start_worker(ClientConfig::new(emu.client_config()))?;
    let t0 = Instant::now();
    thread::scope(|s| -> Res<()> {
        s.spawn(|| {
            for _ in 0..n {
                emu.inject_upstream(TOKEN, "com.example.app", &UPSTREAM_DATA);
            }
        });
        await_upstream(&mut events, n)
    })?;
    // Handled means acked: wait until the emulator has every ack.
    let deadline = Instant::now() + STALL;
    while !emu.ledger().upstream_unacked.is_empty() {
        if Instant::now() > deadline {
            return Err("upstream acks missing".into());
        }
        thread::sleep(Duration::from_millis(1));
    }
    let rate = n as f64 / t0.elapsed().as_secs_f64();
    println!("# upstream: {n} injected by the in-process emulator, received, acked");
    figure("upstream_msgs_per_s", rate, "msg/s");
    client.shutdown(Duration::from_secs(5));
    emu.shutdown();
    Ok(())
}

// -- parse speed ---------------------------------------------------------------------------

/// A client's inbound stream: per 10 stanzas, 8 acks, 1 upstream message, 1 receipt.
fn inbound_stream(stanzas: usize) -> String {
    let mut s = String::from(
        "<stream:stream from=\"gcm.googleapis.com\" id=\"A1B2C3D4\" version=\"1.0\" \
         xmlns:stream=\"http://etherx.jabber.org/streams\" xmlns=\"jabber:client\">",
    );
    for i in 0..stanzas {
        let json = match i % 10 {
            8 => upstream_json(i),
            9 => format!(
                "{{\"category\":\"com.example.app\",\"data\":{{\"message_status\":\
                 \"MESSAGE_SENT_TO_DEVICE\",\"original_message_id\":\"m-{i}\",\
                 \"device_registration_id\":\"{TOKEN}\",\"message_sent_timestamp\":\
                 \"1440000000000\"}},\"time_to_live\":0,\"from\":\"gcm.googleapis.com\",\
                 \"message_id\":\"dr2:m-{i}\",\"message_type\":\"receipt\"}}"
            ),
            _ => ack_json(i),
        };
        s.push_str("<message><data:gcm xmlns:data=\"google:mobile:data\">");
        s.push_str(&json.replace('&', "&amp;").replace('<', "&lt;"));
        s.push_str("</data:gcm></message>");
    }
    s
}

fn ack_json(i: usize) -> String {
    format!("{{\"from\":\"{TOKEN}\",\"message_id\":\"m-{i}\",\"message_type\":\"ack\"}}")
}

fn upstream_json(i: usize) -> String {
    format!(
        "{{\"category\":\"com.example.app\",\"data\":{{\"text\":\"{}\",\"thread\":\"{}\"}},\
         \"message_id\":\"u-{i}\",\"from\":\"{TOKEN}\",\"time_to_live\":86400}}",
        UPSTREAM_DATA[0].1, UPSTREAM_DATA[1].1
    )
}

/// Fastest of `runs` timings of `f`, which returns a count that must equal `want`.
fn best_of(runs: usize, want: usize, f: &dyn Fn() -> usize) -> Res<f64> {
    let mut best = f64::INFINITY;
    for _ in 0..runs {
        let t = Instant::now();
        let got = std::hint::black_box(f());
        best = best.min(t.elapsed().as_secs_f64());
        if got != want {
            return Err(format!("counted {got}, expected {want}"));
        }
    }
    Ok(best)
}

fn parse(mode: Mode) -> Res<()> {
    let n = mode.n(200_000);
    let text = inbound_stream(n);
    let mb = text.len() as f64 / 1e6;
    println!(
        "# {n} inbound stanzas (8 acks : 1 upstream : 1 receipt), {mb:.1} MB, fed in 16 KiB blocks"
    );
    let reader = best_of(5, n, &|| {
        let mut r = StanzaReader::new(ReaderLimits::default());
        let mut stanzas = 0;
        for block in text.as_bytes().chunks(StanzaReader::READ_BLOCK) {
            r.feed(block);
            while let Ok(Some(p)) = r.next_packet() {
                stanzas += matches!(p, Packet::Stanza(_)) as usize;
            }
        }
        stanzas
    })?;
    // Raw tokenization: every token of the same text, no tree, no checks of our own.
    let tokens = xmlparser::Tokenizer::from(text.as_str()).count();
    let tokenizer = best_of(5, tokens, &|| {
        xmlparser::Tokenizer::from(text.as_str())
            .filter(|t| t.is_ok())
            .count()
    })?;
    figure("reader_mb_per_s", mb / reader, "MB/s");
    figure("tokenizer_mb_per_s", mb / tokenizer, "MB/s");
    figure("reader_vs_tokenizer_ratio", tokenizer / reader, "ratio");
    figure("reader_stanzas_per_s", n as f64 / reader, "stanza/s");

    let k = mode.n(200_000);
    for (name, json) in [("ack", ack_json(7)), ("upstream", upstream_json(7))] {
        let secs = best_of(3, k, &|| {
            (0..k)
                .filter(|_| Event::from_json(std::hint::black_box(&json)).is_ok())
                .count()
        })?;
        figure(
            &format!("json_decode_{name}_events_per_s"),
            k as f64 / secs,
            "event/s",
        );
    }
    Ok(())
}

// -- cost per message, with the emulator in a child process --------------------------------

/// The emulator as a child process of this program: its CPU and heap are not ours.
struct ChildEmulator {
    child: Child,
    stdin: Option<ChildStdin>,
    port: u16,
}

impl ChildEmulator {
    fn start() -> Res<Self> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut child = Command::new(exe)
            .arg("--serve-emulator")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("emulator process: {e}"))?;
        let stdin = child.stdin.take();
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            let _ = BufReader::new(out).read_line(&mut line);
        }
        let port = line
            .trim()
            .strip_prefix("port ")
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| format!("emulator process said {line:?}"))?;
        Ok(ChildEmulator { child, stdin, port })
    }

    fn config(&self) -> Config {
        Config::new(SENDER, KEY)
            .endpoint(Endpoint::new("127.0.0.1", self.port))
            .add_root_pem(Emulator::cert_pem())
    }

    /// The child's CPU time so far, seconds.
    fn cpu_s(&self) -> f64 {
        cpu_s(&self.child.id().to_string())
    }

    /// Asks the child to inject `n` upstream messages.
    fn inject(&mut self, n: usize) -> Res<()> {
        let stdin = self.stdin.as_mut().ok_or("emulator process has no stdin")?;
        writeln!(stdin, "inject {n}").map_err(|e| format!("emulator process: {e}"))
    }
}

impl Drop for ChildEmulator {
    fn drop(&mut self) {
        // EOF on its stdin stops it.
        self.stdin.take();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `--serve-emulator` mode: an emulator on a free port; prints `port N`, then reads
/// commands (`inject N`) until stdin closes.
fn serve_emulator() {
    let emu = match Emulator::builder()
        .sender_id(SENDER)
        .server_key(KEY)
        .record_ids(false)
        .start()
    {
        Ok(e) => e,
        Err(e) => fail(format!("emulator: {e}")),
    };
    println!("port {}", emu.addr().port());
    let _ = std::io::stdout().flush();
    for line in std::io::stdin().lines() {
        let Ok(line) = line else { break };
        if let Some(n) = line
            .strip_prefix("inject ")
            .and_then(|n| n.parse::<usize>().ok())
        {
            for _ in 0..n {
                emu.inject_upstream(TOKEN, "com.example.app", &UPSTREAM_DATA);
            }
        }
    }
    emu.shutdown();
}

/// A TLS connector trusting the emulator, built as the library builds one per connection.
fn tls_connector() -> Res<native_tls::TlsConnector> {
    let ca = native_tls::Certificate::from_pem(Emulator::cert_pem()).map_err(|e| e.to_string())?;
    native_tls::TlsConnector::builder()
        .add_root_certificate(ca)
        .build()
        .map_err(|e| e.to_string())
}

/// A TLS connection to the emulator and nothing more (no XMPP).
fn tls_only(
    connector: &native_tls::TlsConnector,
    config: &Config,
) -> Res<native_tls::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(("127.0.0.1", config.endpoint.port)).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(STALL))
        .map_err(|e| e.to_string())?;
    connector
        .connect("127.0.0.1", tcp)
        .map_err(|e| format!("tls: {e}"))
}

fn cost(mode: Mode) -> Res<()> {
    let mut emu = ChildEmulator::start()?;
    let cfg = emu.config();
    println!("# emulator in a child process: CPU, memory and allocations below are the client's");

    // Memory per idle connection: this process is still fresh, so growth is new memory.
    let warm = Connection::connect(&cfg).map_err(|e| format!("connect: {e}"))?;
    let _ = warm.close();
    // The first connect builds the process's TLS connector (the system's root
    // certificates, about 0.1 s of CPU); the later ones share it.
    let conns = match mode {
        Mode::Full => 100,
        Mode::Quick => 30,
        Mode::Smoke => 10,
    };
    let per = |d: f64| d / conns as f64;
    let r0 = rss_kib();
    let shared = tls_connector()?;
    let tls_shared: Vec<_> = (0..conns)
        .map(|_| tls_only(&shared, &cfg))
        .collect::<Res<_>>()?;
    let r1 = rss_kib();
    let tls: Vec<_> = (0..conns)
        .map(|_| tls_only(&tls_connector()?, &cfg))
        .collect::<Res<_>>()?;
    let r2 = rss_kib();
    let heap0 = LIVE_BYTES.load(Ordering::Relaxed);
    let connects = Snapshot::now();
    let open: Vec<_> = (0..conns)
        .map(|_| Connection::connect(&cfg).map_err(|e| format!("connect: {e}")))
        .collect::<Res<_>>()?;
    let (connect_cpu_us, _, connect_wall) = connects.per(conns);
    let heap1 = LIVE_BYTES.load(Ordering::Relaxed);
    let r3 = rss_kib();
    println!("# {conns} connections of each kind held open at once; RSS growth per connection");
    let tls_conn_kib = per(r1 - r0);
    figure("tls_only_shared_connector_rss_kib", tls_conn_kib, "KiB");
    figure("tls_only_connection_rss_kib", per(r2 - r1), "KiB");
    figure("idle_connection_rss_kib", per(r3 - r2), "KiB");
    // The crate shares one connector between connections, so the TLS part is a
    // connection of the shared connector.
    figure(
        "idle_connection_rss_beyond_tls_kib",
        per((r3 - r2) - (r1 - r0)),
        "KiB",
    );
    figure(
        "idle_connection_rust_heap_kib",
        per(heap1.saturating_sub(heap0) as f64 / 1024.0),
        "KiB",
    );
    figure("connect_ms", connect_wall * 1e3 / conns as f64, "ms");
    figure("connect_client_cpu_ms", connect_cpu_us / 1e3, "ms");
    drop(tls_shared);
    drop(tls);
    for c in open {
        let _ = c.close();
    }

    // An idle worker with 16 connections.
    let r0 = rss_kib();
    let heap0 = LIVE_BYTES.load(Ordering::Relaxed);
    let (client, events) = start_worker(ClientConfig::new(cfg.clone()).connections(16))?;
    let heap1 = LIVE_BYTES.load(Ordering::Relaxed);
    let r1 = rss_kib();
    thread::sleep(Duration::from_millis(500));
    let idle = Duration::from_secs_f64(mode.secs(10.0));
    let s = Snapshot::now();
    thread::sleep(idle);
    let (cpu_us, _, wall) = s.per(1);
    figure("idle_pool16_cpu_percent", cpu_us / 1e6 / wall * 100.0, "%");
    figure("idle_pool16_seconds", wall, "s");
    figure("idle_worker_connection_rss_kib", (r1 - r0) / 16.0, "KiB");
    figure(
        "idle_worker_connection_rss_beyond_tls_kib",
        (r1 - r0) / 16.0 - tls_conn_kib,
        "KiB",
    );
    figure(
        "idle_worker_connection_rust_heap_kib",
        heap1.saturating_sub(heap0) as f64 / 1024.0 / 16.0,
        "KiB",
    );
    client.shutdown(Duration::from_secs(5));
    drop(events);

    // Downstream through the worker, one connection, window 100, steady state.
    let n = mode.n(200_000);
    let build = Snapshot::now();
    let warmup = messages(n / 5, Payload::Small);
    let msgs = messages(n, Payload::Small);
    let (_, build_allocs, _) = build.per(n + n / 5);
    let (client, mut events) = start_worker(ClientConfig::new(cfg.clone()))?;
    let send_all = |client: &Client, events: &mut Events, msgs: Vec<Message>| -> Res<()> {
        let k = msgs.len();
        thread::scope(|s| {
            let sender = s.spawn(|| {
                for m in msgs {
                    client
                        .send_timeout(m, STALL)
                        .map_err(|e| format!("send: {e}"))?;
                }
                Ok::<(), String>(())
            });
            let got = await_deliveries(events, k, false);
            sender.join().map_err(|_| "sender panicked".to_string())??;
            got.map(|_| ())
        })
    };
    send_all(&client, &mut events, warmup)?;
    let emu_cpu = emu.cpu_s();
    let s = Snapshot::now();
    send_all(&client, &mut events, msgs)?;
    let (cpu, allocs, wall) = s.per(n);
    let emu_us = (emu.cpu_s() - emu_cpu) * 1e6 / n as f64;
    client.shutdown(Duration::from_secs(5));
    figure("client_cpu_us_per_msg", cpu, "us");
    figure("allocs_per_send", allocs, "allocs");
    figure("allocs_per_message_build", build_allocs, "allocs");
    figure("cost_run_msgs_per_s", n as f64 / wall, "msg/s");
    figure("emulator_cpu_us_per_msg", emu_us, "us");

    // The same through a bare Connection.
    let warmup = messages(n / 5, Payload::Small);
    let msgs = messages(n, Payload::Small);
    let mut conn = Connection::connect(&cfg).map_err(|e| format!("connect: {e}"))?;
    raw_push(&mut conn, &warmup)?;
    let s = Snapshot::now();
    raw_push(&mut conn, &msgs)?;
    let (cpu, allocs, _) = s.per(n);
    let _ = conn.close();
    figure("raw_connection_cpu_us_per_msg", cpu, "us");
    figure("raw_connection_allocs_per_send", allocs, "allocs");

    // Upstream: received, parsed, acked by the worker, handed to the application.
    let (client, mut events) = start_worker(ClientConfig::new(cfg))?;
    emu.inject(n / 5)?;
    await_upstream(&mut events, n / 5)?;
    let s = Snapshot::now();
    emu.inject(n)?;
    await_upstream(&mut events, n)?;
    let (cpu, allocs, _) = s.per(n);
    client.shutdown(Duration::from_secs(5));
    figure("upstream_cpu_us_per_msg", cpu, "us");
    figure("allocs_per_upstream", allocs, "allocs");
    Ok(())
}
