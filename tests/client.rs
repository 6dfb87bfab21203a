//! The worker client through the emulator: the delivery guarantee under faults.
#![cfg(feature = "emulator")]

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::{watchdog, Proxy, Seen};
use fcm_xmpp::client::{AckMode, Backoff, Client, ClientConfig, ClientEvent, SendErrorKind};
use fcm_xmpp::emulator::{DownstreamOutcome, Emulator, EmulatorEvent};
use fcm_xmpp::{Endpoint, Error, Keepalive, Message, NackCode};

const SENDER: &str = "123456789012";
const KEY: &str = "test-server-key";

fn fast(cfg: fcm_xmpp::Config) -> ClientConfig {
    ClientConfig::new(cfg)
        .retry_backoff(Backoff::new(
            Duration::from_millis(40),
            Duration::from_millis(400),
        ))
        .reconnect_backoff(Backoff::new(
            Duration::from_millis(20),
            Duration::from_millis(200),
        ))
        .max_retries(5)
}

/// A stable pseudo-random choice of message ids.
fn pick(id: &str, one_in: u64) -> bool {
    let h = id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    });
    h % one_in == 0
}

#[test]
fn ten_thousand_messages_survive_drops_draining_and_throttling() {
    common::init_logging();
    let _w = watchdog("ten_thousand", Duration::from_secs(120));
    const N: usize = 10_000;
    let (obs_tx, obs_rx) = mpsc::channel();
    let emu = common::judged(
        Emulator::builder()
            .sender_id(SENDER)
            .server_key(KEY)
            .drain_grace(Duration::from_millis(100))
            .observer(obs_tx),
    );
    // One message in 10 is refused with SERVICE_UNAVAILABLE twice before it is accepted.
    emu.transient_nacks(|id| pick(id, 10), 2, NackCode::ServiceUnavailable);

    // Timestamp what the emulator saw, to check the retry delays afterwards.
    let observer = thread::spawn(move || {
        let mut log: Vec<(Instant, EmulatorEvent)> = Vec::new();
        while let Ok(ev) = obs_rx.recv() {
            log.push((Instant::now(), ev));
        }
        log
    });

    let cfg = fast(emu.client_config());
    let backoff = cfg.retry_backoff;
    let (client, mut events) = Client::start(cfg).unwrap();
    let sender = {
        let client = client.clone();
        thread::spawn(move || {
            let mut ids = Vec::with_capacity(N);
            for i in 0..N {
                let m = Message::to(format!("device-{}", i % 97)).data("seq", i.to_string());
                ids.push(client.send(m).expect("accepted"));
            }
            ids
        })
    };

    // Faults while the traffic flows: two abrupt drops, then a drain with acks
    // held back (so the old connection has messages in flight and must keep
    // reading), then another drop.
    let mut seen = Seen::default();
    let mut step = 0;
    let mut drained_at = None;
    let ok = seen.collect(&mut events, Duration::from_secs(90), |s| {
        let done = s.outcome_count();
        // Faults follow the client's live progress (stanzas written), not the
        // outcomes this thread has read so far, which lag behind.
        let sent = client.metrics().sent;
        let lost = s.count_other(|e| matches!(e, ClientEvent::Lost { .. }));
        // A fault is only scripted once the previous one was seen and a
        // connection is up, so none lands between connections.
        let live = !emu.connections().is_empty();
        match step {
            0 if sent >= 1_500 && live => {
                emu.drop_after(20);
                step = 1;
            }
            1 if sent >= 3_500 && lost >= 1 && live => {
                emu.drop_after(5);
                step = 2;
            }
            2 if sent >= 5_500 && lost >= 2 && live => {
                emu.set_ack_delay(Duration::from_millis(150));
                thread::sleep(Duration::from_millis(20));
                emu.drain_all();
                drained_at = Some(Instant::now());
                step = 3;
            }
            3 if drained_at.is_some_and(|t| t.elapsed() > Duration::from_millis(300)) => {
                emu.set_ack_delay(Duration::ZERO);
                step = 4;
            }
            4 if sent >= 8_000 && live => {
                emu.drop_after(50);
                step = 5;
            }
            _ => {}
        }
        done >= N
    });
    let ids = sender.join().unwrap();
    let left = client.shutdown(Duration::from_secs(5));
    // Events still on their way (a drained connection's closing report).
    while let Some(ev) = events.recv() {
        seen.record(ev);
    }
    assert!(ok, "only {} of {N} outcomes arrived", seen.outcome_count());
    assert!(
        left.is_empty(),
        "{} messages left without outcome",
        left.len()
    );

    // Exactly one final outcome each, all delivered.
    assert_eq!(ids.len(), N);
    for id in &ids {
        let o = seen
            .outcomes
            .get(id)
            .unwrap_or_else(|| panic!("{id} has no outcome"));
        assert_eq!(o, &vec!["delivered".to_string()], "{id}");
    }
    assert_eq!(seen.outcomes.len(), N, "outcomes for unknown ids");

    let ledger = emu.ledger();
    drop(emu); // ends the observer stream
    let log = observer.join().unwrap();

    // Every message arrived; the window never passed 100 on any connection.
    let acked = ledger.acked_ids();
    for id in &ids {
        assert!(
            acked.contains(id.as_str()),
            "{id} never acked by the emulator"
        );
    }
    assert_eq!(ledger.window_violations(), 0);
    for c in &ledger.connections {
        assert!(
            c.max_pending <= 100,
            "{} had {} pending",
            c.jid,
            c.max_pending
        );
    }
    let drops = seen.count_other(|e| matches!(e, ClientEvent::Lost { .. }));
    assert!(drops >= 3, "expected the scripted drops, saw {drops}");
    assert!(
        ledger.connections.len() >= 4,
        "{} connections",
        ledger.connections.len()
    );

    // The drained connection kept reading: it acked messages after the drain
    // began, and those were not sent again elsewhere.
    let drained: Vec<_> = ledger.connections.iter().filter(|c| c.drained).collect();
    assert!(!drained.is_empty(), "no connection was drained");
    let old = drained[0];
    let late: Vec<&String> = old
        .acked
        .iter()
        .filter(|id| {
            log.iter().any(|(_, ev)| {
                matches!(ev, EmulatorEvent::Downstream { conn, message_id, outcome: DownstreamOutcome::Acked, at, .. }
                    if *conn == old.id && message_id == *id && drained_at.is_some_and(|d| *at > d))
            })
        })
        .collect();
    assert!(
        !late.is_empty(),
        "the draining connection acked nothing after the drain began ({} received, {} acked, {} nacked, {} drained connections; last answers {:?})",
        old.received.len(),
        old.acked.len(),
        old.nacked.len(),
        drained.len(),
        log.iter()
            .filter_map(|(_, ev)| match ev {
                EmulatorEvent::Downstream { conn, outcome, at, .. } if *conn == old.id => {
                    Some((outcome.to_string(), drained_at.map(|d| at.duration_since(d).as_secs_f64() - d.duration_since(*at).as_secs_f64())))
                }
                _ => None,
            })
            .rev()
            .take(5)
            .collect::<Vec<_>>()
    );
    // Not sent again anywhere after that ack (an earlier attempt on another
    // connection, e.g. a NACKed one, is no resend of an acked message).
    for id in &late {
        let acked_at = log.iter().find_map(|(_, ev)| match ev {
            EmulatorEvent::Downstream {
                conn,
                message_id,
                outcome: DownstreamOutcome::Acked,
                at,
                ..
            } if *conn == old.id && message_id == *id => Some(*at),
            _ => None,
        });
        let again: Vec<String> = log
            .iter()
            .filter(|(_, ev)| {
                matches!(ev, EmulatorEvent::Downstream { conn, message_id, at, .. }
                if *conn != old.id && message_id == *id && acked_at.is_some_and(|t| *at > t))
            })
            .map(|(_, ev)| format!("{ev:?}"))
            .collect();
        assert!(
            again.is_empty(),
            "{id} was acked on the draining connection but resent: {again:?}"
        );
    }

    // Retry delays respected the backoff: the n-th retry of a message came no
    // sooner than half the nominal delay after the nack (equal jitter).
    // (A NACK written just before a drop may never reach the client, which
    // then resends the still-pending message at once on the next connection:
    // only retries on the connection that carried the NACK are timed.)
    let mut last_nack: HashMap<&str, (Instant, u32, _)> = HashMap::new();
    let mut checked = 0;
    for (_, ev) in &log {
        if let EmulatorEvent::Downstream {
            conn,
            message_id,
            outcome,
            at: t,
            ..
        } = ev
        {
            if let Some((nacked_at, n, on)) = last_nack.get(message_id.as_str()) {
                if on == conn {
                    let min = backoff.nominal(*n) / 2;
                    let gap = t.duration_since(*nacked_at);
                    assert!(
                        gap >= min,
                        "{message_id}: retry {n} after {gap:?} < {min:?}"
                    );
                    checked += 1;
                }
            }
            match outcome {
                DownstreamOutcome::Nacked(NackCode::ServiceUnavailable) => {
                    let n = last_nack.get(message_id.as_str()).map_or(1, |x| x.1 + 1);
                    last_nack.insert(message_id, (*t, n, *conn));
                }
                _ => {
                    last_nack.remove(message_id.as_str());
                }
            }
        }
    }
    assert!(checked >= 500, "only {checked} retries observed");
    eprintln!(
        "fault test: {N} messages, {} connections, {drops} losses, {} resent, {} retries checked against the backoff, max window {}, {} ids received more than once (retries + resends)",
        ledger.connections.len(),
        client_metrics_resent(&seen),
        checked,
        ledger.connections.iter().map(|c| c.max_pending).max().unwrap_or(0),
        ledger.duplicates().len()
    );
}

fn client_metrics_resent(seen: &Seen) -> usize {
    seen.other
        .iter()
        .map(|e| match e {
            ClientEvent::Lost { resent, .. } => *resent,
            _ => 0,
        })
        .sum()
}

#[test]
fn wrong_key_is_one_clear_authentication_error() {
    let _w = watchdog("wrong_key", Duration::from_secs(30));
    let emu = common::start(SENDER, KEY);
    let cfg = emu.client_config();
    let cfg = fcm_xmpp::Config::new(SENDER, "not-the-key")
        .endpoint(cfg.endpoint.clone())
        .add_root_pem(Emulator::cert_pem());
    let (client, mut events) = Client::start(fast(cfg)).unwrap();
    let id = client.send(Message::to("t")).ok();
    let mut seen = Seen::default();
    seen.collect(&mut events, Duration::from_secs(10), |s| {
        s.count_other(|e| matches!(e, ClientEvent::Fatal { .. })) > 0
    });
    // Give a retry loop the chance to show itself.
    thread::sleep(Duration::from_millis(300));
    while let Ok(ev) = events.try_recv() {
        seen.record(ev);
    }
    let fatal: Vec<_> = seen
        .other
        .iter()
        .filter(|e| matches!(e, ClientEvent::Fatal { .. }))
        .collect();
    assert_eq!(fatal.len(), 1, "{:?}", seen.other);
    match fatal[0] {
        ClientEvent::Fatal { error } => match &**error {
            Error::AuthFailed { condition } => assert_eq!(condition, "not-authorized"),
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
    assert!(!format!("{:?}", seen.other).contains("not-the-key"));
    assert_eq!(
        emu.ledger().auth_failures,
        1,
        "the client must not retry a refused key"
    );
    // The message accepted before the failure is handed back, not lost.
    if let Some(id) = id {
        let o = &seen.outcomes[&id];
        assert_eq!(o.len(), 1);
        assert!(o[0].starts_with("returned:"), "{o:?}");
    }
    assert!(matches!(
        client.try_send(Message::to("t")).unwrap_err().kind,
        SendErrorKind::Closed
    ));
    assert!(client.shutdown(Duration::from_secs(1)).is_empty());
}

#[test]
fn upstream_is_acked_and_echoed_at_least_once_through_drops() {
    common::init_logging();
    let _w = watchdog("upstream", Duration::from_secs(60));
    const N: usize = 1_000;
    let emu = common::start(SENDER, KEY);
    let cfg = fast(emu.client_config())
        .ack_mode(AckMode::Manual)
        .dedup_window(10_000);
    let (client, mut events) = Client::start(cfg).unwrap();
    assert!(emu.wait_for_connections(1, Duration::from_secs(10)));

    let mut injected = HashSet::new();
    for i in 0..N {
        injected.insert(emu.inject_upstream(
            &format!("device-{}", i % 13),
            "com.example",
            &[("n", &i.to_string())],
        ));
        if i == 300 || i == 700 {
            emu.drop_after(3);
        }
    }
    let mut upstream_seen: HashMap<String, usize> = HashMap::new();
    let mut echoes: HashSet<String> = HashSet::new();
    let mut delivered: HashSet<String> = HashSet::new();
    let end = Instant::now() + Duration::from_secs(45);
    while (upstream_seen.len() < N || delivered.len() < echoes.len() || echoes.len() < N)
        && Instant::now() < end
    {
        let Ok(ev) = events.recv_timeout(Duration::from_millis(100)) else {
            continue;
        };
        match ev {
            ClientEvent::Upstream { upstream, ack } => {
                let n = upstream_seen
                    .entry(upstream.message_id.clone())
                    .or_default();
                *n += 1;
                // At-least-once: a redelivery (its first ack raced a drop)
                // is acked again but echoed only once.
                if *n == 1 {
                    let echo = Message::to(upstream.from.as_str())
                        .data("echo", upstream.message_id.as_str());
                    echoes.insert(client.send(echo).unwrap());
                }
                // Acked after handling; if the connection is gone, CCS redelivers.
                let _ = client.ack(&ack.expect("manual mode gives a handle"));
            }
            ClientEvent::Delivered { message, .. } => {
                delivered.insert(message.id().to_string());
            }
            other => assert!(!other.is_outcome(), "{other:?}"),
        }
    }
    assert!(
        emu.wait_until(Duration::from_secs(10), |l| l.upstream_unacked.is_empty()),
        "unacked upstream remains"
    );
    let ledger = emu.ledger();
    let acked: HashSet<&str> = ledger
        .connections
        .iter()
        .flat_map(|c| c.upstream_acked.iter().map(String::as_str))
        .collect();
    for id in &injected {
        assert!(acked.contains(id.as_str()), "{id} never acked");
        assert!(
            upstream_seen.contains_key(id),
            "{id} never reached the application"
        );
    }
    let redelivered = upstream_seen.values().filter(|n| **n > 1).count();
    eprintln!(
        "manual acks through drops: {N} upstream, {redelivered} redelivered before their ack"
    );
    assert_eq!(echoes.len(), N);
    assert_eq!(delivered, echoes, "every echo delivered");
    assert!(client.shutdown(Duration::from_secs(5)).is_empty());
}

#[test]
fn final_codes_reject_at_once_and_retries_run_out() {
    let _w = watchdog("final_codes", Duration::from_secs(30));
    let emu = common::start(SENDER, KEY);
    emu.reject_token("gone", NackCode::DeviceUnregistered);
    emu.reject_token("bad", NackCode::BadRegistration);
    emu.reject_token("busy", NackCode::DeviceMessageRateExceeded);
    emu.transient_nacks(
        |id| id.starts_with("flaky"),
        100,
        NackCode::InternalServerError,
    );
    let (client, mut events) = Client::start(fast(emu.client_config()).max_retries(2)).unwrap();
    client
        .send(Message::to("gone").message_id("m-gone"))
        .unwrap();
    client.send(Message::to("bad").message_id("m-bad")).unwrap();
    client
        .send(Message::to("busy").message_id("m-busy"))
        .unwrap();
    client
        .send(Message::to("ok").message_id("flaky-1"))
        .unwrap();
    client.send(Message::to("ok").message_id("m-ok")).unwrap();
    let mut seen = Seen::default();
    assert!(
        seen.collect(&mut events, Duration::from_secs(15), |s| s.outcome_count()
            >= 5)
    );
    assert_eq!(
        seen.outcomes["m-gone"],
        vec!["rejected:DEVICE_UNREGISTERED"]
    );
    assert_eq!(seen.outcomes["m-bad"], vec!["rejected:BAD_REGISTRATION"]);
    assert_eq!(
        seen.outcomes["m-busy"],
        vec!["rejected:DEVICE_MESSAGE_RATE_EXCEEDED"]
    );
    assert_eq!(seen.outcomes["m-ok"], vec!["delivered"]);
    assert_eq!(
        seen.outcomes["flaky-1"],
        vec!["returned:retries exhausted (INTERNAL_SERVER_ERROR)"]
    );
    let ledger = emu.ledger();
    let tries = ledger
        .connections
        .iter()
        .flat_map(|c| &c.received)
        .filter(|id| *id == "flaky-1")
        .count();
    assert_eq!(tries, 3, "first send plus max_retries");
    let gone = ledger
        .connections
        .iter()
        .flat_map(|c| &c.received)
        .filter(|id| *id == "m-gone")
        .count();
    assert_eq!(gone, 1, "final codes are never retried");
    let m = client.metrics();
    assert_eq!(m.acked, 1);
    assert_eq!(m.rejected, 3);
    assert_eq!(m.returned, 1);
    assert_eq!(m.nacked.get("INTERNAL_SERVER_ERROR"), Some(&3));
    assert!(client.shutdown(Duration::from_secs(2)).is_empty());
}

#[test]
fn rate_limited_messages_can_be_retried_later_when_asked() {
    let _w = watchdog("rate_limited", Duration::from_secs(30));
    let emu = common::start(SENDER, KEY);
    emu.transient_nacks(|id| id == "slow", 1, NackCode::DeviceMessageRateExceeded);
    let cfg = fast(emu.client_config()).rate_limited_retry(Some(Duration::from_millis(100)));
    let (client, mut events) = Client::start(cfg).unwrap();
    client.send(Message::to("t").message_id("slow")).unwrap();
    let mut seen = Seen::default();
    assert!(
        seen.collect(&mut events, Duration::from_secs(10), |s| s.outcome_count()
            >= 1)
    );
    assert_eq!(seen.outcomes["slow"], vec!["delivered"]);
    client.shutdown(Duration::from_secs(1));
}

#[test]
fn shutdown_hands_back_what_has_no_outcome() {
    let _w = watchdog("shutdown", Duration::from_secs(30));
    let emu = common::start(SENDER, KEY);
    emu.set_ack_delay(Duration::from_secs(30));
    let (client, mut events) = Client::start(fast(emu.client_config())).unwrap();
    let mut ids = Vec::new();
    for i in 0..150 {
        ids.push(
            client
                .send(Message::to("t").message_id(format!("s-{i}")))
                .unwrap(),
        );
    }
    assert!(emu.wait_until(Duration::from_secs(10), |l| l.total_received() >= 100));
    let t = Instant::now();
    let left = client.shutdown(Duration::from_millis(300));
    assert!(t.elapsed() < Duration::from_secs(10));
    let left_ids: Vec<&str> = left.iter().map(|m| m.id()).collect();
    let mut seen = Seen::default();
    while let Some(ev) = events.recv() {
        seen.record(ev);
    }
    // Each message either had an outcome event or is in the returned list, never both.
    for id in &ids {
        let evs = seen.outcomes.get(id).map_or(0, Vec::len);
        let back = left_ids.iter().filter(|l| **l == id.as_str()).count();
        assert_eq!(evs + back, 1, "{id}: {evs} events, {back} returned");
    }
    assert_eq!(left.len(), 150, "no acks came, so all come back");
    assert_eq!(
        left_ids,
        ids.iter().map(String::as_str).collect::<Vec<_>>(),
        "in send order"
    );
}

#[test]
fn dropping_the_last_handle_returns_messages_as_events() {
    let _w = watchdog("drop_handle", Duration::from_secs(30));
    let emu = common::start(SENDER, KEY);
    emu.set_ack_delay(Duration::from_secs(30));
    let cfg = fast(emu.client_config()).drop_timeout(Duration::from_millis(200));
    let (client, mut events) = Client::start(cfg).unwrap();
    let id = client.send(Message::to("t")).unwrap();
    assert!(emu.wait_until(Duration::from_secs(10), |l| l.total_received() >= 1));
    drop(client);
    let mut seen = Seen::default();
    while let Some(ev) = events.recv() {
        seen.record(ev);
    }
    assert_eq!(seen.outcomes[&id], vec!["returned:client dropped"]);
}

#[test]
fn queue_full_hands_the_message_back() {
    let _w = watchdog("queue_full", Duration::from_secs(30));
    // No server at all: nothing leaves the queue.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = dead.local_addr().unwrap().port();
    drop(dead);
    let cfg = fcm_xmpp::Config::new(SENDER, KEY).endpoint(Endpoint::new("127.0.0.1", port));
    let (client, _events) = Client::start(fast(cfg).queue_capacity(2)).unwrap();
    client.try_send(Message::to("t")).unwrap();
    client.try_send(Message::to("t")).unwrap();
    let err = client
        .try_send(Message::to("t").message_id("third"))
        .unwrap_err();
    assert!(matches!(err.kind, SendErrorKind::Full));
    assert_eq!(err.message.id(), "third");
    let t = Instant::now();
    let err = client
        .send_timeout(Message::to("t"), Duration::from_millis(100))
        .unwrap_err();
    assert!(matches!(err.kind, SendErrorKind::Full));
    assert!(t.elapsed() >= Duration::from_millis(100));
    let err = client
        .try_send(Message::to("t").time_to_live(5_000_000))
        .unwrap_err();
    assert!(matches!(err.kind, SendErrorKind::Invalid(ref e) if e.field == "time_to_live"));
    assert_eq!(client.shutdown(Duration::from_millis(100)).len(), 2);
}

#[test]
fn a_silent_server_is_declared_dead_and_replaced() {
    common::init_logging();
    let _w = watchdog("silent", Duration::from_secs(30));
    let emu = common::start(SENDER, KEY);
    let proxy = Proxy::start(emu.addr());
    let ka = Keepalive::default()
        .whitespace_after(None)
        .ping_after(Some(Duration::from_millis(200)))
        .dead_after(Duration::from_millis(300));
    let mut cfg = emu.client_config();
    cfg.endpoint = Endpoint::new("127.0.0.1", proxy.addr.port());
    let (client, mut events) = Client::start(fast(cfg.keepalive(ka))).unwrap();
    let mut seen = Seen::default();
    assert!(seen.collect(&mut events, Duration::from_secs(10), |s| {
        s.count_other(|e| matches!(e, ClientEvent::Connected { .. })) >= 1
    }));
    emu.set_ack_delay(Duration::from_secs(1));
    let id = client.send(Message::to("t")).unwrap();
    assert!(emu.wait_until(Duration::from_secs(5), |l| l.total_received() >= 1));
    proxy.freeze();
    emu.set_ack_delay(Duration::ZERO);
    assert!(seen.collect(&mut events, Duration::from_secs(15), |s| s
        .outcomes
        .contains_key(&id)));
    assert_eq!(seen.outcomes[&id], vec!["delivered"]);
    let lost = seen.other.iter().find_map(|e| match e {
        ClientEvent::Lost { error, resent, .. } => Some((error.clone(), *resent)),
        _ => None,
    });
    let (error, resent) = lost.expect("the silent connection was declared lost");
    assert!(matches!(*error, Error::Timeout(_)), "{error}");
    assert_eq!(resent, 1);
    assert!(seen.count_other(|e| matches!(e, ClientEvent::Connected { .. })) >= 2);
    client.shutdown(Duration::from_secs(1));
}

#[test]
fn a_pool_shares_one_queue() {
    let _w = watchdog("pool", Duration::from_secs(60));
    let emu = common::start(SENDER, KEY);
    let (client, mut events) = Client::start(fast(emu.client_config()).connections(3)).unwrap();
    // All three up, and answers slow enough that one window cannot carry it all.
    assert!(emu.wait_for_connections(3, Duration::from_secs(10)));
    emu.set_ack_delay(Duration::from_millis(5));
    for i in 0..3_000 {
        client.send(Message::to(format!("d{i}"))).unwrap();
    }
    let mut seen = Seen::default();
    assert!(
        seen.collect(&mut events, Duration::from_secs(30), |s| s.outcome_count()
            >= 3_000)
    );
    assert!(seen
        .outcomes
        .values()
        .all(|o| o == &vec!["delivered".to_string()]));
    let ledger = emu.ledger();
    assert_eq!(ledger.connections.len(), 3);
    assert!(
        ledger.connections.iter().all(|c| c.received_count > 0),
        "every connection carried traffic"
    );
    assert_eq!(ledger.window_violations(), 0);
    let m = client.metrics();
    assert_eq!(
        (m.accepted, m.acked, m.pending, m.queued),
        (3_000, 3_000, 0, 0)
    );
    assert!(client.shutdown(Duration::from_secs(2)).is_empty());
}

#[test]
fn receipts_are_acked_in_auto_mode() {
    let _w = watchdog("receipts", Duration::from_secs(30));
    let emu = common::start(SENDER, KEY);
    let (client, mut events) = Client::start(fast(emu.client_config())).unwrap();
    let id = client
        .send(Message::to("t").delivery_receipt_requested(true))
        .unwrap();
    let mut seen = Seen::default();
    assert!(seen.collect(&mut events, Duration::from_secs(10), |s| {
        s.count_other(|e| matches!(e, ClientEvent::Receipt { .. })) >= 1
    }));
    match seen
        .other
        .iter()
        .find(|e| matches!(e, ClientEvent::Receipt { .. }))
        .unwrap()
    {
        ClientEvent::Receipt { receipt, ack } => {
            assert_eq!(receipt.original_message_id, id);
            assert!(ack.is_none(), "auto mode acks by itself");
        }
        _ => unreachable!(),
    }
    let rid = format!("dr2:{id}");
    assert!(emu.wait_until(Duration::from_secs(5), |l| l
        .connections
        .iter()
        .any(|c| c.receipts_acked.contains(&rid))));
    client.shutdown(Duration::from_secs(1));
}

#[test]
fn duplicate_upstream_is_filtered_only_when_asked() {
    let _w = watchdog("dedup", Duration::from_secs(30));
    let stanza = |id: &str| {
        format!(
            "<message to=\"{SENDER}@gcm.googleapis.com\" from=\"devices@gcm.googleapis.com\" type=\"normal\">\
             <gcm xmlns=\"google:mobile:data\">{{\"from\":\"dev\",\"category\":\"c\",\"message_id\":\"{id}\",\"data\":{{}}}}</gcm></message>"
        )
    };
    for (window, expected) in [(100, 1), (0, 2)] {
        let emu = common::start(SENDER, KEY);
        let (client, mut events) =
            Client::start(fast(emu.client_config()).dedup_window(window)).unwrap();
        assert!(emu.wait_for_connections(1, Duration::from_secs(10)));
        let conn = emu.connections()[0];
        // The same upstream message twice, as a server redelivering it would, then a marker.
        assert!(emu.send_raw(conn, stanza("dup-1")));
        assert!(emu.send_raw(conn, stanza("dup-1")));
        assert!(emu.send_raw(conn, stanza("marker")));
        let mut seen: Vec<String> = Vec::new();
        let end = Instant::now() + Duration::from_secs(10);
        while !seen.iter().any(|s| s == "marker") && Instant::now() < end {
            if let Ok(ClientEvent::Upstream { upstream, .. }) =
                events.recv_timeout(Duration::from_millis(100))
            {
                seen.push(upstream.message_id);
            }
        }
        let copies = seen.iter().filter(|s| *s == "dup-1").count();
        assert_eq!(copies, expected, "dedup window {window}: {seen:?}");
        assert_eq!(client.metrics().duplicates, 2 - expected as u64);
        client.shutdown(Duration::from_secs(1));
    }
}

#[test]
fn a_drained_connection_that_never_closes_is_given_up_and_its_messages_resent() {
    let _w = watchdog("drain_timeout", Duration::from_secs(30));
    let emu = common::start(SENDER, KEY);
    let cfg = fast(emu.client_config()).drain_timeout(Duration::from_millis(300));
    let (client, mut events) = Client::start(cfg).unwrap();
    assert!(emu.wait_for_connections(1, Duration::from_secs(10)));
    let old = emu.connections()[0];
    // Answers held far longer than the drain timeout: the old connection
    // would stay open (draining) with these in flight.
    emu.set_ack_delay(Duration::from_secs(60));
    let ids: Vec<String> = (0..5)
        .map(|i| client.send(Message::to(format!("d{i}"))).unwrap())
        .collect();
    assert!(emu.wait_until(Duration::from_secs(5), |l| l.total_received() >= 5));
    emu.set_ack_delay(Duration::ZERO);
    assert!(emu.drain(old));
    let mut seen = Seen::default();
    assert!(
        seen.collect(&mut events, Duration::from_secs(10), |s| s.outcome_count()
            >= 5),
        "{:?}",
        seen.other
    );
    for id in &ids {
        assert_eq!(seen.outcomes[id], vec!["delivered"], "{id}");
    }
    let ledger = emu.ledger();
    let first = ledger.conn(old).unwrap();
    assert!(first.drained && first.acked.is_empty(), "{first:?}");
    // Every message went out again on the new connection.
    let resent: usize = ledger
        .connections
        .iter()
        .filter(|c| c.id != old)
        .map(|c| c.received.iter().filter(|id| ids.contains(id)).count())
        .sum();
    assert_eq!(resent, 5);
    assert!(emu.wait_until(Duration::from_secs(5), |l| l
        .conn(old)
        .is_some_and(|c| c.closed)));
    assert!(client.shutdown(Duration::from_secs(2)).is_empty());
}
