//! Sends messages to one target and prints each final outcome as a JSON line.
//!
//! ```text
//! FCM_SERVER_KEY=... cargo run --example fcm_send -- --sender-id ID --to TOKEN \
//!     [--count N] [--data KEY=VALUE]... [--receipt] [--receipt-timeout S] [--ttl SECS] \
//!     [--endpoint HOST:PORT] [--domain NAME] [--ca-file PEM]
//! ```
//!
//! Sends `--count` messages (default 1) to `--to`. Message `i` (0-based:
//! `0`, `1`, ... `N-1`) carries `"seq": "i"`, a string, in its data, next to
//! every `--data KEY=VALUE` (a `--data seq=...` is overridden). `--ttl` sets
//! `time_to_live`; `--receipt` asks for delivery receipts.
//!
//! Stdout, one JSON object per line: `{"event":"connected","jid":...}` per
//! established connection, then one line per message with its final outcome
//! (`ack`, or `nack` with the error code), with `--receipt` a `receipt` line
//! per receipt (waiting for them at most `--receipt-timeout` seconds after the
//! last outcome, default 10), and last a `summary` line. A NACK the client
//! retries is not an outcome: it is reported on stderr. Logs go to stderr
//! (`FCM_LOG`, default `warn`).
//!
//! Exit 0 when every message was acked, 2 when some were rejected or given up
//! on, 1 on a fatal error (one-line reason on stderr).

#[path = "common/mod.rs"]
mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::{die, Args, Line, COMMON_FLAGS};
use fcm_xmpp::client::{Client, ClientConfig, ClientEvent};
use fcm_xmpp::Message;

/// Failed connection attempts in a row, before any success, that end the program.
const MAX_INITIAL_CONNECT_FAILURES: u32 = 5;

/// How often the client's counters are read to report retried NACKs.
const RETRY_REPORT_EVERY: Duration = Duration::from_millis(200);

fn main() {
    common::init_logging();
    let mut known = COMMON_FLAGS.to_vec();
    known.extend(["to", "count", "data", "receipt-timeout", "ttl"]);
    let args = Args::parse(&known, &["receipt"]).unwrap_or_else(|e| die(e));
    let config = common::config(&args).unwrap_or_else(|e| die(e));
    let to = args
        .get("to")
        .unwrap_or_else(|| die("--to is required"))
        .to_string();
    let count: u64 = args.number("count", 1).unwrap_or_else(|e| die(e));
    let ttl: Option<u32> = args
        .has("ttl")
        .then(|| args.number("ttl", 0).unwrap_or_else(|e| die(e)));
    let receipt = args.has("receipt");
    let receipt_timeout = args
        .seconds("receipt-timeout", 10.0)
        .unwrap_or_else(|e| die(e));
    let mut data = Vec::new();
    for kv in args.all("data") {
        let (k, v) = kv
            .split_once('=')
            .unwrap_or_else(|| die(format!("--data wants KEY=VALUE, got {kv:?}")));
        data.push((k.to_string(), v.to_string()));
    }

    // Build and validate every message before connecting.
    let mut messages = Vec::with_capacity(count.min(1 << 20) as usize);
    for i in 0..count {
        let mut m = Message::to(to.as_str());
        for (k, v) in &data {
            m = m.data(k.as_str(), v.as_str());
        }
        m = m.data("seq", i.to_string());
        if let Some(t) = ttl {
            m = m.time_to_live(t);
        }
        if receipt {
            m = m.delivery_receipt_requested(true);
        }
        if let Err(e) = m.validate() {
            die(e);
        }
        messages.push(m);
    }
    let ours: HashSet<String> = messages.iter().map(|m| m.id().to_string()).collect();

    let queue = (count as usize).clamp(1, 100_000);
    let (client, mut events) =
        Client::start(ClientConfig::new(config).queue_capacity(queue)).unwrap_or_else(|e| die(e));
    let started = Instant::now();
    let sender = {
        let client = client.clone();
        std::thread::spawn(move || {
            for m in messages {
                if let Err(e) = client.send_timeout(m, Duration::from_secs(3600)) {
                    log::warn!("stopped sending: {e}");
                    break;
                }
            }
        })
    };

    let (mut acked, mut nacked) = (0u64, 0u64);
    let mut receipted: HashSet<String> = HashSet::new();
    let mut retries = RetryReport::default();
    let mut connected = false;
    let mut outcomes_done: Option<Instant> = None;
    let mut elapsed = Duration::ZERO;
    loop {
        retries.check(&client, false);
        if acked + nacked == count && outcomes_done.is_none() {
            elapsed = started.elapsed();
            outcomes_done = Some(Instant::now());
        }
        if let Some(t) = outcomes_done {
            if !receipt || receipted.len() as u64 >= acked {
                break;
            }
            if t.elapsed() >= receipt_timeout {
                eprintln!(
                    "gave up waiting for {} receipts after {receipt_timeout:?}",
                    acked - receipted.len() as u64
                );
                break;
            }
        }
        let ev = match events.recv_timeout(Duration::from_millis(100)) {
            Ok(ev) => ev,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
            Err(_) => die("the client stopped unexpectedly"),
        };
        match ev {
            ClientEvent::Connected { jid, .. } => {
                connected = true;
                Line::event("connected").str("jid", &jid).print();
            }
            ClientEvent::Delivered { message, .. } => {
                acked += 1;
                Line::event("ack").str("message_id", message.id()).print();
            }
            ClientEvent::Rejected { message, reason } => {
                nacked += 1;
                Line::event("nack")
                    .str("message_id", message.id())
                    .str("error", &common::rejection_code(&reason))
                    .print();
            }
            ClientEvent::Returned { message, reason } => {
                nacked += 1;
                Line::event("nack")
                    .str("message_id", message.id())
                    .str("error", &common::return_code(&reason))
                    .print();
            }
            ClientEvent::Receipt { receipt: r, .. } => {
                // Receipts for messages of an earlier run (CCS redelivers
                // un-acked ones to any connection of the sender) are not ours.
                let id = &r.original_message_id;
                if ours.contains(id) && receipted.insert(id.clone()) {
                    Line::event("receipt")
                        .str("message_id", &r.message_id)
                        .str("original_message_id", id)
                        .print();
                } else {
                    log::info!(
                        "receipt {} for a message not sent by this run",
                        r.message_id
                    );
                }
            }
            ClientEvent::Fatal { error } => die(error),
            ClientEvent::Reconnecting {
                attempt,
                error,
                delay,
                ..
            } => {
                if !connected && attempt >= MAX_INITIAL_CONNECT_FAILURES {
                    die(format!("cannot connect: {error}"));
                }
                eprintln!("connection attempt {attempt} failed: {error}; retrying in {delay:?}");
            }
            ClientEvent::Lost { error, resent, .. } => {
                eprintln!("connection lost ({error}); resending {resent}")
            }
            ClientEvent::Draining { jid, .. } => eprintln!("connection {jid} draining"),
            other => log::info!("{other:?}"),
        }
    }
    retries.check(&client, true);
    let _ = sender.join();
    let left = client.shutdown(Duration::from_secs(5));
    if !left.is_empty() {
        eprintln!("{} messages without outcome", left.len());
    }
    let secs = elapsed.as_secs_f64();
    let rate = if secs > 0.0 { count as f64 / secs } else { 0.0 };
    Line::event("summary")
        .num("sent", count)
        .num("acked", acked)
        .num("nacked", nacked)
        .num("elapsed_s", format!("{secs:.3}"))
        .num("rate", format!("{rate:.1}"))
        .print();
    std::process::exit(if acked == count { 0 } else { 2 });
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
