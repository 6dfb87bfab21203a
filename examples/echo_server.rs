//! An app server that echoes every upstream message back to its sender.
//!
//! ```text
//! FCM_SERVER_KEY=... cargo run --example echo_server -- --sender-id ID \
//!     [--max-upstream N] [--drain-timeout S] [--endpoint HOST:PORT] [--domain NAME] [--ca-file PEM]
//! ```
//! Prints `{"event":"upstream",...}` per upstream message and an ack/nack
//! line per echo. Upstream messages are acked only once their echo is queued
//! (at-least-once). With `--max-upstream N` it exits after N distinct upstream
//! messages were handled and their echoes got outcomes (waiting at most
//! `--drain-timeout` seconds, default 5): exit 0, or 3 if echoes were still
//! pending. Exit 1 on a fatal error.

#[path = "common/mod.rs"]
mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::{die, Args, Line, COMMON_FLAGS};
use fcm_xmpp::client::{AckMode, Client, ClientConfig, ClientEvent, Rejection, ReturnReason};
use fcm_xmpp::Message;

fn main() {
    common::init_logging();
    let args = Args::parse(&[]).unwrap_or_else(|e| die(e));
    let mut known = COMMON_FLAGS.to_vec();
    known.extend(["max-upstream", "drain-timeout"]);
    args.check_known(&known).unwrap_or_else(|e| die(e));
    let config = common::config(&args).unwrap_or_else(|e| die(e));
    let max: Option<u64> = args.get("max-upstream").map(|v| {
        v.parse()
            .unwrap_or_else(|_| die(format!("--max-upstream: not a number: {v:?}")))
    });
    let drain_timeout: f64 = args.number("drain-timeout", 5.0).unwrap_or_else(|e| die(e));

    let cfg = ClientConfig::new(config)
        .ack_mode(AckMode::Manual)
        .dedup_window(100_000);
    let (client, mut events) = Client::start(cfg).unwrap_or_else(|e| die(e));
    let mut handled = 0u64;
    let mut echoes: HashSet<String> = HashSet::new();
    let mut reached: Option<Instant> = None;
    loop {
        if let (Some(max), None) = (max, reached) {
            if handled >= max {
                reached = Some(Instant::now());
            }
        }
        if let Some(t) = reached {
            if echoes.is_empty() {
                break;
            }
            if t.elapsed().as_secs_f64() >= drain_timeout {
                eprintln!(
                    "{} echoes still pending after {drain_timeout} s",
                    echoes.len()
                );
                let _ = client.shutdown(Duration::from_secs(1));
                std::process::exit(3);
            }
        }
        let ev = match events.recv_timeout(Duration::from_millis(100)) {
            Ok(ev) => ev,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
            Err(_) => die("the client stopped unexpectedly"),
        };
        match ev {
            ClientEvent::Connected { jid, .. } => Line::event("connected").str("jid", &jid).print(),
            ClientEvent::Upstream { upstream: up, ack } => {
                if reached.is_some() {
                    // Not acked: CCS delivers it again to the next app server.
                    continue;
                }
                Line::event("upstream")
                    .str("from", &up.from)
                    .str("message_id", &up.message_id)
                    .opt("category", up.category.as_deref())
                    .map(
                        "data",
                        up.data.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                    )
                    .print();
                let mut echo = Message::to(up.from.as_str());
                for (k, v) in &up.data {
                    if k != "echo" {
                        echo = echo.data(k.as_str(), v.as_str());
                    }
                }
                echo = echo.data("echo", up.message_id.as_str());
                match client.send(echo) {
                    Ok(id) => {
                        echoes.insert(id);
                    }
                    Err(e) => eprintln!("echo for {} not sent: {e}", up.message_id),
                }
                if let Some(h) = ack {
                    if let Err(e) = client.ack(&h) {
                        eprintln!(
                            "ack for {} not sent ({e}); CCS will redeliver it",
                            up.message_id
                        );
                        continue;
                    }
                }
                handled += 1;
            }
            ClientEvent::Receipt { ack: Some(h), .. } => {
                let _ = client.ack(&h);
            }
            ClientEvent::Delivered { message, .. } => {
                if echoes.remove(message.id()) {
                    Line::event("ack").str("message_id", message.id()).print();
                }
            }
            ClientEvent::Rejected { message, reason } => {
                if echoes.remove(message.id()) {
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
            }
            ClientEvent::Returned { message, reason } => {
                if echoes.remove(message.id()) {
                    let code = match &reason {
                        ReturnReason::RetriesExhausted(c) => c.as_str().to_string(),
                        other => other.to_string(),
                    };
                    Line::event("nack")
                        .str("message_id", message.id())
                        .str("error", &code)
                        .print();
                }
            }
            ClientEvent::Fatal { error } => die(error),
            ClientEvent::Reconnecting {
                attempt,
                error,
                delay,
                ..
            } => {
                eprintln!("connection attempt {attempt} failed: {error}; retrying in {delay:?}")
            }
            ClientEvent::Lost { error, .. } => eprintln!("connection lost: {error}"),
            other => log::info!("{other:?}"),
        }
    }
    let _ = client.shutdown(Duration::from_secs(2));
}
