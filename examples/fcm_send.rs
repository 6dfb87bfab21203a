//! Sends messages to one target and prints each final outcome as a JSON line.
//!
//! ```text
//! FCM_SERVER_KEY=... cargo run --example fcm_send -- --sender-id ID --to TOKEN \
//!     [--count N] [--data KEY=VALUE]... [--receipt] [--receipt-timeout S] [--ttl SECS] \
//!     [--endpoint HOST:PORT] [--domain NAME] [--ca-file PEM]
//! ```
//! Message `i` (0-based) carries `"seq": "i"` in its data. Exit 0 when every
//! message was acked, 2 when some were rejected or returned, 1 on a fatal
//! error (reason on stderr).

#[path = "common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{die, Args, Line, COMMON_FLAGS};
use fcm_xmpp::client::{Client, ClientConfig, ClientEvent, Rejection, ReturnReason};
use fcm_xmpp::Message;

/// Failed connection attempts in a row, before any success, that end the program.
const MAX_INITIAL_CONNECT_FAILURES: u32 = 5;

fn main() {
    common::init_logging();
    let args = Args::parse(&["receipt"]).unwrap_or_else(|e| die(e));
    let mut known = COMMON_FLAGS.to_vec();
    known.extend(["to", "count", "data", "receipt", "receipt-timeout", "ttl"]);
    args.check_known(&known).unwrap_or_else(|e| die(e));
    let config = common::config(&args).unwrap_or_else(|e| die(e));
    let to = args
        .get("to")
        .unwrap_or_else(|| die("--to is required"))
        .to_string();
    let count: u64 = args.number("count", 1).unwrap_or_else(|e| die(e));
    let ttl: Option<u32> = args.get("ttl").map(|v| {
        v.parse()
            .unwrap_or_else(|_| die(format!("--ttl: not a number: {v:?}")))
    });
    let receipt = args.has("receipt");
    let receipt_timeout: f64 = args
        .number("receipt-timeout", 10.0)
        .unwrap_or_else(|e| die(e));
    let mut data = Vec::new();
    for kv in args.all("data") {
        let (k, v) = kv
            .split_once('=')
            .unwrap_or_else(|| die(format!("--data wants KEY=VALUE, got {kv:?}")));
        data.push((k.to_string(), v.to_string()));
    }

    // Build and validate every message before connecting.
    let mut messages = Vec::with_capacity(count as usize);
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

    let (mut acked, mut nacked, mut receipts) = (0u64, 0u64, 0u64);
    let mut connected = false;
    let mut outcomes_done: Option<Instant> = None;
    let mut elapsed = Duration::ZERO;
    loop {
        if acked + nacked == count && outcomes_done.is_none() {
            elapsed = started.elapsed();
            outcomes_done = Some(Instant::now());
        }
        if let Some(t) = outcomes_done {
            if !receipt || receipts >= acked {
                break;
            }
            if t.elapsed().as_secs_f64() >= receipt_timeout {
                eprintln!(
                    "gave up waiting for {} receipts after {receipt_timeout} s",
                    acked - receipts
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
                let code = match &reason {
                    Rejection::Nack(n) => n.code.as_str().to_string(),
                    Rejection::StanzaError(e) => e.condition.clone(),
                    other => other.to_string(),
                };
                Line::event("nack")
                    .str("message_id", message.id())
                    .str("error", &code)
                    .print();
            }
            ClientEvent::Returned { message, reason } => {
                nacked += 1;
                let code = match &reason {
                    ReturnReason::RetriesExhausted(c) => c.as_str().to_string(),
                    other => other.to_string(),
                };
                Line::event("nack")
                    .str("message_id", message.id())
                    .str("error", &code)
                    .print();
            }
            ClientEvent::Receipt { receipt: r, .. } => {
                receipts += 1;
                Line::event("receipt")
                    .str("message_id", &r.message_id)
                    .str("original_message_id", &r.original_message_id)
                    .print();
            }
            ClientEvent::Fatal { error } => die(error),
            ClientEvent::Reconnecting {
                attempt,
                error,
                delay,
                ..
            } => {
                eprintln!("connection attempt {attempt} failed: {error}; retrying in {delay:?}");
                if !connected && attempt >= MAX_INITIAL_CONNECT_FAILURES {
                    die(format!("cannot connect: {error}"));
                }
            }
            ClientEvent::Lost { error, resent, .. } => {
                eprintln!("connection lost ({error}); resending {resent}")
            }
            ClientEvent::Draining { jid, .. } => eprintln!("connection {jid} draining"),
            other => log::info!("{other:?}"),
        }
    }
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
