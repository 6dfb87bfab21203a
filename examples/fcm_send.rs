//! Sends messages to one target and prints each final outcome as a JSON line.
//!
//! ```text
//! FCM_SERVER_KEY=... cargo run --example fcm_send -- --sender-id ID --to TOKEN \
//!     [--count N] [--data KEY=VALUE]... [--receipt] [--receipt-timeout S] [--ttl SECS] \
//!     [--progress] [--endpoint HOST:PORT] [--domain NAME] [--ca-file PEM] \
//!     [--connect-timeout S] [--handshake-timeout S] [--max-connect-attempts N]
//! ```
//!
//! Sends `--count` messages (default 1) to `--to`. Message `i` (0-based:
//! `0`, `1`, ... `N-1`) carries `"seq": "i"`, a string, in its data, next to
//! every `--data KEY=VALUE` (a `--data seq=...` is overridden). `--ttl` sets
//! `time_to_live`; `--receipt` asks for delivery receipts. The messages are
//! made as they are sent, so memory stays flat whatever `--count` is; the
//! first and the last (the largest, its `seq` is longest) are checked before
//! connecting.
//!
//! Stdout, one JSON object per line: `{"event":"connected","jid":...}` per
//! established connection, then one line per message with its final outcome
//! (`ack`, or `nack` with the error code), with `--receipt` a `receipt` line
//! per receipt (waiting for them at most `--receipt-timeout` seconds after the
//! last outcome, default 10), and last a `summary` line, also after a fatal
//! error once a connection was up. A NACK the client retries is not an outcome:
//! it is reported on stderr. With `--progress`, or when stderr is a terminal,
//! a progress line goes to stderr about once a second. Logs go to stderr
//! (`FCM_LOG`, default `warn`).
//!
//! Exit 0 when every message was acked, 2 when some were rejected or given up
//! on, 1 on a fatal error (one-line reason on stderr), including
//! `--max-connect-attempts` failed connection attempts in a row (default 5).

#[path = "common/mod.rs"]
mod common;

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{die, Args, Flag, Line, Out, Program};
use fcm_xmpp::client::{Client, ClientConfig, ClientEvent};
use fcm_xmpp::Message;

const PROGRAM: Program = Program {
    name: "fcm_send",
    about: "send messages to one device token or topic and print each outcome as a JSON line",
    usage: "--sender-id ID --to TOKEN [--count N] [--data KEY=VALUE]... [FLAGS]",
    groups: &[
        (
            "messages",
            &[
                Flag::value("to", "TOKEN", "", "the target: a registration token or /topics/NAME; required"),
                Flag::value("count", "N", "1", "how many messages; message i carries \"seq\": \"i\" (0-based)"),
                Flag::value("data", "KEY=VALUE", "", "a data field of every message (repeatable)"),
                Flag::value("ttl", "SECS", "", "time_to_live of every message (CCS default: 4 weeks)"),
                Flag::switch("receipt", "ask for delivery receipts and print a receipt line for each"),
                Flag::value("receipt-timeout", "S", "10", "seconds to wait for receipts after the last outcome"),
                Flag::switch("progress", "a progress line on stderr about once a second (on when stderr is a terminal)"),
            ],
        ),
        ("connection", common::CONNECTION_FLAGS),
        (
            "",
            &[Flag::value(
                "max-connect-attempts",
                "N",
                "5",
                "failed connection attempts in a row that end the run; 0 = keep trying",
            )],
        ),
    ],
    notes: concat!(
        "output: one JSON object per line on stdout: a \"connected\" line per connection, an \"ack\"\n",
        "or \"nack\" line per message, \"receipt\" lines with --receipt, a \"summary\" line last.\n\n",
        "environment:\n",
        "  FCM_SERVER_KEY  the server key (required; never taken from a flag, never printed)\n",
        "  FCM_LOG         stderr log level: off, error, warn, info, debug, trace (default warn)"
    ),
    exits: &[
        (0, "every message was acked"),
        (1, "fatal or usage error (one line on stderr)"),
        (2, "some messages were rejected or given up on"),
    ],
};

/// How often the client's counters are read to report retried NACKs.
const RETRY_REPORT_EVERY: Duration = Duration::from_millis(200);
/// How often a progress line is printed.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);
/// Messages queued in the client at most: the sender blocks beyond that, so memory
/// does not grow with `--count`.
const QUEUE: u64 = 4096;

/// How the messages of this run are made: message `i` on demand, and its id, from
/// which `i` is read back (for receipts) without keeping any id.
struct Recipe {
    to: String,
    data: Vec<(String, String)>,
    ttl: Option<u32>,
    receipt: bool,
    /// A per-run prefix: receipts for an earlier run's messages do not match.
    run: String,
}

impl Recipe {
    fn message(&self, i: u64) -> Message {
        let mut m = Message::to(self.to.as_str()).message_id(format!("{}{i}", self.run));
        for (k, v) in &self.data {
            m = m.data(k.as_str(), v.as_str());
        }
        m = m.data("seq", i.to_string());
        if let Some(t) = self.ttl {
            m = m.time_to_live(t);
        }
        if self.receipt {
            m = m.delivery_receipt_requested(true);
        }
        m
    }

    /// The `i` of one of this run's message ids.
    fn index(&self, id: &str) -> Option<u64> {
        id.strip_prefix(&self.run)?.parse().ok()
    }

    /// Checks message `i`; the error names it.
    fn check(&self, i: u64) -> Result<(), String> {
        self.message(i).validate().map_err(|e| {
            let mut text = format!("message {i} (0-based) is invalid: {e}");
            if e.field == "data" {
                text.push_str(" (the \"seq\" fcm_send adds to each message counts too)");
            }
            text
        })
    }
}

/// One bit per message: which ones got their receipt.
struct Bits(Vec<u64>);

impl Bits {
    fn new(n: u64) -> Bits {
        Bits(vec![0; n.div_ceil(64) as usize])
    }

    /// Sets bit `i`; true if it was clear.
    fn insert(&mut self, i: u64) -> bool {
        let Some(word) = self.0.get_mut((i / 64) as usize) else {
            return false;
        };
        let mask = 1u64 << (i % 64);
        let was_clear = *word & mask == 0;
        *word |= mask;
        was_clear
    }
}

fn main() {
    common::init_logging();
    let args = Args::parse(&PROGRAM);
    let config = Args::or_die(common::config(&args));
    let endpoint = config.endpoint.to_string();
    let max_attempts = Args::or_die(common::max_connect_attempts(&args, 5));
    let to = args
        .get("to")
        .unwrap_or_else(|| die("--to is required"))
        .to_string();
    let count: u64 = Args::or_die(args.number("count", 1));
    let ttl: Option<u32> = args.has("ttl").then(|| Args::or_die(args.number("ttl", 0)));
    let receipt = args.has("receipt");
    let receipt_timeout = Args::or_die(args.seconds("receipt-timeout", 10.0));
    let progress = args.has("progress") || std::io::stderr().is_terminal();
    let mut data = Vec::new();
    for kv in args.all("data") {
        let (k, v) = kv
            .split_once('=')
            .unwrap_or_else(|| die(format!("--data wants KEY=VALUE, got {kv:?}")));
        data.push((k.to_string(), v.to_string()));
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let recipe = Arc::new(Recipe {
        to,
        data,
        ttl,
        receipt,
        run: format!("fs-{:x}-", nanos ^ u64::from(std::process::id()) << 40),
    });
    // Message sizes grow with i (the seq's digits only): the first and the last bound them.
    if count > 0 {
        Args::or_die(recipe.check(0));
        Args::or_die(recipe.check(count - 1));
    }

    let queue = count.clamp(1, QUEUE) as usize;
    let (client, mut events) =
        Client::start(ClientConfig::new(config).queue_capacity(queue)).unwrap_or_else(|e| die(e));
    let started = Instant::now();
    let handed = Arc::new(AtomicU64::new(0));
    let sender = {
        let (client, recipe, handed) = (client.clone(), Arc::clone(&recipe), Arc::clone(&handed));
        std::thread::spawn(move || {
            for i in 0..count {
                if let Err(e) = client.send_timeout(recipe.message(i), Duration::from_secs(3600)) {
                    log::warn!("stopped sending at message {i}: {e}");
                    break;
                }
                handed.fetch_add(1, Ordering::Relaxed);
            }
        })
    };

    let mut out = Out::new();
    let (mut acked, mut nacked) = (0u64, 0u64);
    let mut receipted = Bits::new(if receipt { count } else { 0 });
    let mut receipts = 0u64;
    let mut retries = RetryReport::default();
    let mut progress = progress.then(|| Progress::new(started));
    let mut connected = false;
    let mut outcomes_done: Option<Instant> = None;
    let mut elapsed = Duration::ZERO;
    let summary = |out: &mut Out, acked: u64, nacked: u64, elapsed: Duration| {
        let secs = elapsed.as_secs_f64();
        let rate = if secs > 0.0 {
            acked.saturating_add(nacked) as f64 / secs
        } else {
            0.0
        };
        out.line(
            Line::event("summary")
                .num("sent", handed.load(Ordering::Relaxed))
                .num("acked", acked)
                .num("nacked", nacked)
                .num("elapsed_s", format!("{secs:.3}"))
                .num("rate", format!("{rate:.1}")),
        );
        out.flush();
    };
    loop {
        retries.check(&client, false);
        if let Some(p) = &mut progress {
            p.tick(handed.load(Ordering::Relaxed), acked, nacked, false);
        }
        if acked + nacked == count && outcomes_done.is_none() {
            elapsed = started.elapsed();
            outcomes_done = Some(Instant::now());
        }
        if let Some(t) = outcomes_done {
            if !receipt || receipts >= acked {
                break;
            }
            if t.elapsed() >= receipt_timeout {
                out.flush();
                eprintln!(
                    "gave up waiting for {} receipts after {}",
                    acked - receipts,
                    common::human(receipt_timeout)
                );
                break;
            }
        }
        let first = match events.recv_timeout(Duration::from_millis(100)) {
            Ok(ev) => ev,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                out.flush();
                continue;
            }
            Err(_) => die("the client stopped unexpectedly"),
        };
        // Whatever else is waiting, up to a batch, then one write to stdout.
        let batch = std::iter::once(first).chain(std::iter::from_fn(|| events.try_recv().ok()));
        for ev in batch.take(1024) {
            match ev {
                ClientEvent::Connected { jid, .. } => {
                    connected = true;
                    out.line(Line::event("connected").str("jid", &jid));
                }
                ClientEvent::Delivered { message, .. } => {
                    acked += 1;
                    out.line(Line::event("ack").str("message_id", message.id()));
                }
                ClientEvent::Rejected { message, reason } => {
                    nacked += 1;
                    out.line(
                        Line::event("nack")
                            .str("message_id", message.id())
                            .str("error", &common::rejection_code(&reason)),
                    );
                }
                ClientEvent::Returned { message, reason } => {
                    nacked += 1;
                    out.line(
                        Line::event("nack")
                            .str("message_id", message.id())
                            .str("error", &common::return_code(&reason)),
                    );
                }
                ClientEvent::Receipt { receipt: r, .. } => {
                    // Receipts for messages of an earlier run (CCS redelivers
                    // un-acked ones to any connection of the sender) are not ours.
                    let id = &r.original_message_id;
                    match recipe.index(id) {
                        Some(i) if receipted.insert(i) => {
                            receipts += 1;
                            out.line(
                                Line::event("receipt")
                                    .str("message_id", &r.message_id)
                                    .str("original_message_id", id),
                            );
                        }
                        _ => log::info!(
                            "receipt {} for a message not sent by this run",
                            r.message_id
                        ),
                    }
                }
                ClientEvent::Fatal { error } => {
                    if connected {
                        summary(&mut out, acked, nacked, started.elapsed());
                        die(error);
                    }
                    out.flush();
                    die(format!("cannot connect to {endpoint}: {error}"));
                }
                ClientEvent::Reconnecting {
                    attempt,
                    error,
                    delay,
                    ..
                } => {
                    out.flush();
                    if max_attempts.is_some_and(|max| attempt >= max) {
                        if connected {
                            summary(&mut out, acked, nacked, started.elapsed());
                        }
                        die(format!(
                            "cannot connect to {endpoint} ({attempt} attempts in a row failed): {error}"
                        ));
                    }
                    eprintln!(
                        "connection attempt {attempt} failed: {error}; retrying in {}",
                        common::human(delay)
                    );
                }
                ClientEvent::Lost { error, resent, .. } => {
                    out.flush();
                    eprintln!("connection lost ({error}); resending {resent}")
                }
                ClientEvent::Draining { jid, .. } => {
                    out.flush();
                    eprintln!("connection {jid} draining")
                }
                other => log::info!("{other:?}"),
            }
        }
        out.flush();
    }
    out.flush();
    retries.check(&client, true);
    if let Some(p) = &mut progress {
        p.tick(handed.load(Ordering::Relaxed), acked, nacked, true);
    }
    let _ = sender.join();
    let left = client.shutdown(Duration::from_secs(5));
    if !left.is_empty() {
        eprintln!("{} messages without outcome", left.len());
    }
    summary(&mut out, acked, nacked, elapsed);
    drop(out);
    std::process::exit(if acked == count {
        common::EXIT_OK
    } else {
        common::EXIT_REJECTED
    });
}

/// The progress line on stderr: messages handed to the client, outcomes, and the
/// outcome rate since the last line.
struct Progress {
    started: Instant,
    last: Instant,
    last_done: u64,
}

impl Progress {
    fn new(started: Instant) -> Progress {
        Progress {
            started,
            last: started,
            last_done: 0,
        }
    }

    fn tick(&mut self, sent: u64, acked: u64, nacked: u64, now: bool) {
        let since = self.last.elapsed();
        if !now && since < PROGRESS_EVERY {
            return;
        }
        let done = acked + nacked;
        let rate = (done - self.last_done) as f64 / since.as_secs_f64().max(1e-3);
        eprintln!(
            "progress: {sent} sent, {acked} acked, {nacked} nacked, {rate:.0} msg/s, {} elapsed",
            common::human(self.started.elapsed())
        );
        self.last = Instant::now();
        self.last_done = done;
    }
}

/// Reports NACKs the client retries (not outcomes, so not on stdout) on
/// stderr: at most one line per [`RETRY_REPORT_EVERY`], from its counters.
#[derive(Default)]
struct RetryReport {
    last_check: Option<Instant>,
    retried: u64,
}

impl RetryReport {
    fn check(&mut self, client: &Client, now: bool) {
        if !now
            && self
                .last_check
                .is_some_and(|t| t.elapsed() < RETRY_REPORT_EVERY)
        {
            return;
        }
        self.last_check = Some(Instant::now());
        let m = client.metrics();
        if m.retried > self.retried {
            let codes: Vec<String> = m.nacked.iter().map(|(c, n)| format!("{c} {n}")).collect();
            eprintln!(
                "nacked, will retry: {} message(s) ({} retries so far; nacks by code: {})",
                m.retried - self.retried,
                m.retried,
                codes.join(", ")
            );
            self.retried = m.retried;
        }
    }
}
