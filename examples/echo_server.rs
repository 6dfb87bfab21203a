//! An app server that echoes every upstream message back to its sender.
//!
//! ```text
//! FCM_SERVER_KEY=... cargo run --example echo_server -- --sender-id ID \
//!     [--max-upstream N] [--drain-timeout S] [--endpoint HOST:PORT] [--domain NAME] [--ca-file PEM] \
//!     [--connect-timeout S] [--handshake-timeout S] [--max-connect-attempts N]
//! ```
//!
//! For every upstream message it prints
//! `{"event":"upstream","from":...,"message_id":...,"category":...,"data":{...}}`
//! (`category` is `null` if the message had none), sends back to `from` a
//! message with the same data plus `"echo": <upstream message_id>`, and acks
//! the upstream message once the echo is queued (at-least-once: an upstream
//! message whose echo cannot be queued is not acked, so CCS delivers it
//! again; one delivered again after it was echoed is only acked). Each
//! echo's final outcome is printed as an `ack` or `nack` line
//! (like `fcm_send`'s), each established connection as a `connected` line.
//! Logs go to stderr (`FCM_LOG`, default `warn`).
//!
//! Without `--max-upstream` it runs until killed. With `--max-upstream N` it
//! exits after N distinct upstream messages were handled and their echoes got
//! outcomes, waiting for those at most `--drain-timeout` seconds (default 5):
//! exit 0 if every echo got its outcome, 3 if some were still pending.
//! Upstream messages arriving after the N-th are left un-acked (CCS delivers
//! them again later). Exit 1 on a fatal error (one-line reason on stderr),
//! including `--max-connect-attempts N` failed connection attempts in a row
//! (default 0: keep trying).

#[path = "common/mod.rs"]
mod common;

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use common::{die, Args, Flag, Line, Program};
use fcm_xmpp::client::{AckMode, Client, ClientConfig, ClientEvent, SendErrorKind};
use fcm_xmpp::Message;

const PROGRAM: Program = Program {
    name: "echo_server",
    about: "an app server that echoes every upstream message back to the device it came from",
    usage: "--sender-id ID [--max-upstream N] [--drain-timeout S] [FLAGS]",
    groups: &[
        (
            "echo",
            &[
                Flag::value(
                    "max-upstream",
                    "N",
                    "",
                    "exit after N distinct upstream messages (default: run until killed)",
                ),
                Flag::value(
                    "drain-timeout",
                    "S",
                    "5",
                    "with --max-upstream: seconds to wait for the echoes' outcomes",
                ),
            ],
        ),
        ("connection", common::CONNECTION_FLAGS),
        (
            "",
            &[Flag::value(
                "max-connect-attempts",
                "N",
                "0",
                "failed connection attempts in a row that end the run; 0 = keep trying",
            )],
        ),
    ],
    notes: concat!(
        "output: one JSON object per line on stdout: a \"connected\" line per connection, an\n",
        "\"upstream\" line per upstream message, an \"ack\" or \"nack\" line per echo.\n\n",
        "environment:\n",
        "  FCM_SERVER_KEY  the server key (required; never taken from a flag, never printed)\n",
        "  FCM_LOG         stderr log level: off, error, warn, info, debug, trace (default warn)"
    ),
    exits: &[
        (
            0,
            "stopped after --max-upstream N with every echo's outcome in",
        ),
        (1, "fatal or usage error (one line on stderr)"),
        (
            3,
            "stopped after --max-upstream N with echoes still pending after --drain-timeout",
        ),
    ],
};

fn main() {
    common::init_logging();
    let args = Args::parse(&PROGRAM);
    let config = Args::or_die(common::config(&args));
    let endpoint = config.endpoint.to_string();
    let max_attempts = Args::or_die(common::max_connect_attempts(&args, 0));
    let max: Option<u64> = args
        .has("max-upstream")
        .then(|| Args::or_die(args.number("max-upstream", 0)));
    let drain_timeout = Args::or_die(args.seconds("drain-timeout", 5.0));

    let cfg = ClientConfig::new(config)
        .ack_mode(AckMode::Manual)
        .dedup_window(100_000);
    let (client, mut events) = Client::start(cfg).unwrap_or_else(|e| die(e));
    let mut handled = 0u64;
    let mut seen = Seen::default();
    let mut echoes: HashSet<String> = HashSet::new();
    let mut reached: Option<Instant> = None;
    let mut connected = false;
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
            if t.elapsed() >= drain_timeout {
                eprintln!(
                    "{} echoes still pending after {}",
                    echoes.len(),
                    common::human(drain_timeout)
                );
                let _ = client.shutdown(Duration::from_secs(1));
                std::process::exit(common::EXIT_PENDING);
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
                Line::event("connected").str("jid", &jid).print()
            }
            ClientEvent::Upstream { upstream: up, ack } => {
                let key = (up.from.clone(), up.message_id.clone());
                if !seen.contains(&key) {
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
                        echo = echo.data(k.as_str(), v.as_str());
                    }
                    echo = echo.data("echo", up.message_id.as_str());
                    match client.send(echo) {
                        Ok(id) => {
                            echoes.insert(id);
                        }
                        Err(e) if matches!(e.kind, SendErrorKind::Invalid(_)) => {
                            // It will never be valid: ack the upstream message anyway.
                            eprintln!("no echo for {}: {e}", up.message_id);
                        }
                        Err(e) => {
                            eprintln!(
                                "echo for {} not queued ({e}); not acked, CCS will redeliver it",
                                up.message_id
                            );
                            continue;
                        }
                    }
                    seen.insert(key.clone(), false);
                } else {
                    // Delivered again (the first ack was lost or crossed it): echoed
                    // already, so only ack it.
                    log::info!("upstream {} again from {}", up.message_id, up.from);
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
                if seen.mark_acked(&key) {
                    handled += 1;
                }
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
                    Line::event("nack")
                        .str("message_id", message.id())
                        .str("error", &common::rejection_code(&reason))
                        .print();
                }
            }
            ClientEvent::Returned { message, reason } => {
                if echoes.remove(message.id()) {
                    Line::event("nack")
                        .str("message_id", message.id())
                        .str("error", &common::return_code(&reason))
                        .print();
                }
            }
            ClientEvent::Fatal { error } if connected => die(error),
            ClientEvent::Fatal { error } => die(format!("cannot connect to {endpoint}: {error}")),
            ClientEvent::Reconnecting {
                attempt,
                error,
                delay,
                ..
            } => {
                if max_attempts.is_some_and(|max| attempt >= max) {
                    die(format!(
                        "cannot connect to {endpoint} ({attempt} attempts in a row failed): {error}"
                    ));
                }
                eprintln!(
                    "connection attempt {attempt} failed: {error}; retrying in {}",
                    common::human(delay)
                )
            }
            ClientEvent::Lost { error, .. } => eprintln!("connection lost: {error}"),
            other => log::info!("{other:?}"),
        }
    }
    let _ = client.shutdown(Duration::from_secs(2));
}

/// Upstream messages already echoed, by `(from, message_id)`, and whether
/// they were acked; the last [`Seen::CAP`] are kept. The client drops most
/// duplicates itself, but not one that arrives again before its ack went out.
#[derive(Default)]
struct Seen {
    map: HashMap<(String, String), bool>,
    order: VecDeque<(String, String)>,
}

impl Seen {
    const CAP: usize = 100_000;

    fn contains(&self, key: &(String, String)) -> bool {
        self.map.contains_key(key)
    }

    fn insert(&mut self, key: (String, String), acked: bool) {
        if self.map.insert(key.clone(), acked).is_none() {
            self.order.push_back(key);
            if self.order.len() > Self::CAP {
                if let Some(old) = self.order.pop_front() {
                    self.map.remove(&old);
                }
            }
        }
    }

    /// Records the ack; true the first time.
    fn mark_acked(&mut self, key: &(String, String)) -> bool {
        match self.map.get_mut(key) {
            Some(acked) if !*acked => {
                *acked = true;
                true
            }
            Some(_) => false,
            None => {
                self.insert(key.clone(), true);
                true
            }
        }
    }
}
