//! `ccs_bridge`: an app-server daemon. It holds the CCS connection and lets business
//! applications in any language send and receive messages over plain TCP, one JSON
//! object per line; a journal keeps every accepted message until its outcome reached
//! its app, and every upstream message until its app acked it.
//!
//! ```text
//! FCM_SERVER_KEY=... cargo run --example ccs_bridge -- --sender-id ID \
//!     [--listen HOST:PORT] [--journal DIR] [--endpoint HOST:PORT] [--ca-file PEM] ...
//! ```
//!
//! The protocol, the journal's guarantees and an example session are in the README's
//! "ccs_bridge" section. On start it prints one line on stdout,
//! `{"event":"listening","addr":"HOST:PORT","resent":N,"held":M}`; logs go to stderr.
//! SIGINT or SIGTERM stop it gracefully (unfinished messages stay in the journal).
//!
//! Threads: one journal owner (group commit), one for the client's events, one
//! reader and one writer per app connection, plus the client's own.

#[path = "ccs_bridge/app.rs"]
mod app;
#[path = "common/mod.rs"]
mod common;
#[path = "ccs_bridge/events.rs"]
mod events;
#[path = "ccs_bridge/proto.rs"]
mod proto;
#[path = "ccs_bridge/state.rs"]
mod state;
#[path = "ccs_bridge/store.rs"]
mod store;

use std::io::{ErrorKind, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::{die, Args, Flag, Program};
use fcm_xmpp::client::{AckMode, Client, ClientConfig};

const PROGRAM: Program = Program {
    name: "ccs_bridge",
    about: "an app-server daemon: business applications send and receive CCS messages over TCP",
    usage: "--sender-id ID [--listen HOST:PORT] [--journal DIR] [FLAGS]",
    groups: &[
        (
            "bridge",
            &[
                Flag::value(
                    "listen",
                    "HOST:PORT",
                    "127.0.0.1:5250",
                    "where applications connect (port 0: any free port)",
                ),
                Flag::value(
                    "journal",
                    "DIR",
                    "",
                    "keep state in this directory (default: in memory, lost on exit)",
                ),
                Flag::value(
                    "logon-timeout",
                    "S",
                    "10",
                    "seconds an application has to send LOGON",
                ),
                Flag::value(
                    "app-queue",
                    "N",
                    "10000",
                    "lines queued for one application before it is cut off as too slow",
                ),
                Flag::value("max-apps", "N", "256", "application connections at once"),
                Flag::value(
                    "connections",
                    "N",
                    "1",
                    "CCS connections (each with its own window)",
                ),
                Flag::value(
                    "shutdown-timeout",
                    "S",
                    "5",
                    "on SIGINT/SIGTERM, seconds to wait for outcomes of messages in flight",
                ),
            ],
        ),
        ("connection", common::CONNECTION_FLAGS),
    ],
    notes: concat!(
        "output: one line on stdout once it listens:\n",
        "  {\"event\":\"listening\",\"addr\":\"HOST:PORT\",\"resent\":N,\"held\":M}\n",
        "(resent: journaled messages sent again; held: records waiting for their apps).\n\n",
        "environment:\n",
        "  FCM_SERVER_KEY  the server key (required; never taken from a flag, never printed)\n",
        "  FCM_LOG         stderr log level: off, error, warn, info, debug, trace (default warn)"
    ),
    exits: &[
        (0, "stopped by SIGINT or SIGTERM"),
        (
            1,
            "fatal or usage error (one line on stderr), e.g. authentication refused",
        ),
    ],
};

fn main() {
    common::init_logging();
    let args = Args::parse(&PROGRAM);
    let config = Args::or_die(common::config(&args));
    let listen: SocketAddr = Args::or_die(
        args.get("listen")
            .unwrap_or("127.0.0.1:5250")
            .parse()
            .map_err(|e| format!("--listen wants HOST:PORT with an IP address: {e}")),
    );
    let journal = args.get("journal").map(PathBuf::from);
    let logon_timeout = Args::or_die(args.seconds("logon-timeout", 10.0));
    let queue: usize = Args::or_die(args.number("app-queue", 10_000));
    let max_apps: usize = Args::or_die(args.number("max-apps", 256));
    let connections: usize = Args::or_die(args.number("connections", 1));
    let shutdown_timeout = Args::or_die(args.seconds("shutdown-timeout", 5.0));
    if queue == 0 || max_apps == 0 {
        die("--app-queue and --max-apps must be at least 1");
    }

    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(sig, Arc::clone(&stop)) {
            die(format!("cannot handle signal {sig}: {e}"));
        }
    }

    let store = Args::or_die(store::Store::open(journal.as_deref()));
    let st = state::State::new(store);
    let pending: Vec<_> = st
        .store
        .entries()
        .filter(|(k, _)| k.starts_with("d:"))
        .filter_map(|(k, v)| {
            let m = app::Down::from_record(v);
            if m.is_none() && v.first() == Some(&b'P') {
                log::warn!("journal record {k:?} is unreadable; left alone");
            }
            m
        })
        .collect();
    let held = st.store.len() - pending.len();

    let cfg = ClientConfig::new(config)
        .ack_mode(AckMode::Manual)
        .dedup_window(100_000)
        .connections(connections)
        .queue_capacity(100_000);
    let (client, client_events) = Client::start(cfg).unwrap_or_else(|e| die(e));
    let (handle, journal_thread) = state::start(st);
    let ev_thread = {
        let (c, h) = (client.clone(), handle.clone());
        thread::Builder::new()
            .name("events".into())
            .spawn(move || events::run(client_events, c, h))
            .unwrap_or_else(|e| die(e))
    };
    let resent = pending.len();
    for m in pending {
        app::submit(&client, &handle, &stop, m);
    }

    let listener = TcpListener::bind(listen)
        .unwrap_or_else(|e| die(format!("cannot listen on {listen}: {e}")));
    let addr = listener.local_addr().unwrap_or(listen);
    listener
        .set_nonblocking(true)
        .unwrap_or_else(|e| die(format!("cannot listen on {listen}: {e}")));
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "{{\"event\":\"listening\",\"addr\":\"{addr}\",\"resent\":{resent},\"held\":{held}}}"
        );
        let _ = out.flush();
    }

    let ctx = Arc::new(app::Ctx {
        state: handle.clone(),
        client: client.clone(),
        stop: Arc::clone(&stop),
        logon_timeout,
        queue,
    });
    let live = Arc::new(AtomicUsize::new(0));
    let mut conn_id = 0u64;
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((s, peer)) => {
                conn_id += 1;
                accept(&ctx, &live, max_apps, s, peer, conn_id);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => thread::sleep(Duration::from_millis(20)),
            Err(e) => log::warn!("accept: {e}"),
        }
    }

    eprintln!(
        "stopping: waiting up to {} for outcomes",
        common::human(shutdown_timeout)
    );
    drop(listener);
    let left = client.shutdown(shutdown_timeout);
    let _ = ev_thread.join();
    handle.stop();
    let _ = journal_thread.join();
    eprintln!(
        "stopped: {} messages kept in the journal for the next run",
        left.len()
    );
}

/// Starts serving an app connection on its own thread (or turns it away when there are
/// `max` already).
fn accept(
    ctx: &Arc<app::Ctx>,
    live: &Arc<AtomicUsize>,
    max: usize,
    mut s: TcpStream,
    peer: SocketAddr,
    conn: u64,
) {
    if s.set_nonblocking(false).is_err() {
        return;
    }
    if live.fetch_add(1, Ordering::AcqRel) >= max {
        live.fetch_sub(1, Ordering::AcqRel);
        log::warn!("app {peer}: too many connections ({max}); refused");
        let _ = s.set_write_timeout(Some(Duration::from_secs(1)));
        let _ = writeln!(s, "{}", proto::error_line(None, "too many connections"));
        return;
    }
    let (ctx, live) = (Arc::clone(ctx), Arc::clone(live));
    let spawned = thread::Builder::new()
        .name(format!("app-{conn}"))
        .spawn(move || {
            app::serve(ctx, s, conn);
            live.fetch_sub(1, Ordering::AcqRel);
        });
    if let Err(e) = spawned {
        log::warn!("app {peer}: cannot start a thread: {e}");
    }
}
