//! The whole worker `Client` over in-memory connections (no sockets): the
//! recovery defects the delivery engine fixed, each pinned on its own.

#[path = "common/mem.rs"]
mod mem;

use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use fcm_xmpp::client::{AckMode, Backoff, Client, ClientConfig, ClientEvent, Events, ReturnReason};
use fcm_xmpp::{Config, Error, Message, Phase};
use mem::{upstream_event, MemCcs};

fn config() -> ClientConfig {
    ClientConfig::new(Config::new("123456789012", "k"))
        .reconnect_backoff(Backoff::new(
            Duration::from_millis(200),
            Duration::from_secs(2),
        ))
        .retry_backoff(Backoff::new(
            Duration::from_millis(50),
            Duration::from_millis(500),
        ))
}

/// Reads events until the stream ends (or `limit` passes: a failure).
fn drain(events: &mut Events, limit: Duration) -> Vec<ClientEvent> {
    let end = Instant::now() + limit;
    let mut all = Vec::new();
    loop {
        let left = end.saturating_duration_since(Instant::now());
        match events.recv_timeout(left) {
            Ok(ev) => all.push(ev),
            Err(RecvTimeoutError::Disconnected) => return all,
            Err(RecvTimeoutError::Timeout) => panic!("the event stream did not end: {all:?}"),
        }
    }
}

#[test]
fn sending_does_not_defeat_the_reconnect_backoff() {
    let ccs = MemCcs::new(Duration::ZERO);
    ccs.lock().refuse = Some(Error::Timeout(Phase::Connect));
    let cfg = config();
    let backoff = cfg.reconnect_backoff;
    let (client, _events) = Client::start_with(cfg, ccs.clone()).unwrap();
    let t0 = Instant::now();
    let mut i = 0;
    while t0.elapsed() < Duration::from_millis(1000) {
        let _ = client.try_send(Message::to("t").message_id(format!("m{i}")));
        i += 1;
        std::thread::sleep(Duration::from_millis(10));
    }
    let attempts = ccs.lock().attempts.clone();
    // 0, >= 0.2 s, >= 0.6 s (then >= 1.4 s): three attempts in the first second.
    assert!(
        attempts.len() <= 3,
        "{} attempts in 1 s with {i} sends",
        attempts.len()
    );
    for (k, w) in attempts.windows(2).enumerate() {
        let gap = w[1] - w[0];
        assert!(
            gap >= backoff.nominal(k as u32 + 1),
            "attempt {}: {gap:?}",
            k + 2
        );
    }
    let t = Instant::now();
    let left = client.shutdown(Duration::from_millis(300));
    assert!(
        t.elapsed() < Duration::from_millis(800),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(left.len(), i.min(10_000));
    assert!(ccs.lock().attempts.len() <= 4);
}

#[test]
fn dropping_a_client_against_a_refusing_server_does_not_spin() {
    let ccs = MemCcs::new(Duration::ZERO);
    ccs.lock().refuse = Some(Error::Timeout(Phase::Connect));
    let cfg = config().drop_timeout(Duration::from_millis(300));
    let (client, mut events) = Client::start_with(cfg, ccs.clone()).unwrap();
    client.try_send(Message::to("t")).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    drop(client);
    let all = drain(&mut events, Duration::from_secs(5));
    let reconnecting = all
        .iter()
        .filter(|e| matches!(e, ClientEvent::Reconnecting { .. }))
        .count();
    assert!(reconnecting <= 3, "{reconnecting} Reconnecting events");
    assert!(ccs.lock().attempts.len() <= 3);
    assert!(all.iter().any(|e| matches!(
        e,
        ClientEvent::Returned {
            reason: ReturnReason::ClientDropped,
            ..
        }
    )));
}

#[test]
fn shutdown_cuts_a_slow_handshake_short() {
    let ccs = MemCcs::new(Duration::ZERO);
    ccs.lock().connect_delay = Duration::from_secs(3);
    let (client, _events) = Client::start_with(config(), ccs.clone()).unwrap();
    client.send(Message::to("t").message_id("m")).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let t = Instant::now();
    let left = client.shutdown(Duration::from_millis(100));
    let took = t.elapsed();
    assert!(
        took < Duration::from_millis(600),
        "shutdown(100 ms) took {took:?}"
    );
    assert_eq!(left.len(), 1);
    assert!(ccs.lock().written.is_empty());
}

#[test]
fn a_panicking_worker_becomes_fatal_and_returns_its_messages() {
    let ccs = MemCcs::new(Duration::ZERO);
    ccs.lock().panic_on_send = true;
    let (client, mut events) = Client::start_with(config(), ccs.clone()).unwrap();
    client.send(Message::to("t").message_id("m")).unwrap();
    let all = drain(&mut events, Duration::from_secs(5));
    let fatal = all
        .iter()
        .filter(|e| matches!(e, ClientEvent::Fatal { error } if matches!(**error, Error::WorkerPanicked)))
        .count();
    assert_eq!(fatal, 1, "{all:?}");
    let returned: Vec<&str> = all
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Returned {
                message,
                reason: ReturnReason::Fatal(_),
            } => Some(message.id()),
            _ => None,
        })
        .collect();
    assert_eq!(returned, ["m"]);
    assert!(client.shutdown(Duration::from_millis(100)).is_empty());
}

#[test]
fn a_fatal_error_ends_the_event_stream() {
    let ccs = MemCcs::new(Duration::ZERO);
    ccs.lock().refuse = Some(Error::AuthFailed {
        condition: "not-authorized".into(),
    });
    let (client, mut events) = Client::start_with(config().connections(3), ccs.clone()).unwrap();
    let accepted = client.send(Message::to("t").message_id("m")).is_ok();
    // `for ev in events` ends on its own after Fatal, without shutdown.
    let all = drain(&mut events, Duration::from_secs(5));
    assert_eq!(
        all.iter()
            .filter(|e| matches!(e, ClientEvent::Fatal { .. }))
            .count(),
        1
    );
    let outcome = all.iter().filter(|e| e.is_outcome()).count();
    assert_eq!(outcome, usize::from(accepted), "{all:?}");
    assert!(client.try_send(Message::to("t")).is_err());
}

#[test]
fn a_manual_ack_for_a_dead_connection_is_an_error() {
    let ccs = MemCcs::new(Duration::ZERO);
    let cfg = config().ack_mode(AckMode::Manual);
    let (client, mut events) = Client::start_with(cfg, ccs.clone()).unwrap();
    let handle = |events: &mut Events| loop {
        match events.recv_timeout(Duration::from_secs(5)).unwrap() {
            ClientEvent::Upstream { ack: Some(h), .. } => break h,
            _ => continue,
        }
    };
    // Wait for the connection, then a device speaks.
    let end = Instant::now() + Duration::from_secs(5);
    while ccs.lock().attempts.is_empty() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(50));
    ccs.broadcast(upstream_event("dev-1", "up-1"));
    let h = handle(&mut events);
    client.ack(&h).unwrap();
    assert_eq!(ccs.lock().acks, [(1, "up-1".to_string())]);

    ccs.broadcast(upstream_event("dev-1", "up-2"));
    let h = handle(&mut events);
    ccs.drop_all();
    loop {
        if let ClientEvent::Lost { .. } = events.recv_timeout(Duration::from_secs(5)).unwrap() {
            break;
        }
    }
    assert!(matches!(client.ack(&h), Err(Error::Closed)));
    assert_eq!(ccs.lock().acks.len(), 1, "the second ack was never written");
    client.shutdown(Duration::from_millis(200));
}

#[test]
fn ack_all_acks_together_and_answers_for_each_handle() {
    let ccs = MemCcs::new(Duration::ZERO);
    let cfg = config().ack_mode(AckMode::Manual);
    let (client, mut events) = Client::start_with(cfg, ccs.clone()).unwrap();
    let handles = |events: &mut Events, n: usize| {
        let mut hs = Vec::new();
        while hs.len() < n {
            if let ClientEvent::Upstream { ack: Some(h), .. } =
                events.recv_timeout(Duration::from_secs(5)).unwrap()
            {
                hs.push(h);
            }
        }
        hs
    };
    let end = Instant::now() + Duration::from_secs(5);
    while ccs.lock().attempts.is_empty() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(50));
    // One message on a connection that then dies, before it is acked.
    ccs.broadcast(upstream_event("dev-1", "old"));
    let old = handles(&mut events, 1);
    ccs.drop_all();
    loop {
        match events.recv_timeout(Duration::from_secs(5)).unwrap() {
            ClientEvent::Connected { .. } => break,
            _ => continue,
        }
    }
    std::thread::sleep(Duration::from_millis(20));
    // Three on the new connection.
    for id in ["up-1", "up-2", "up-3"] {
        ccs.broadcast(upstream_event("dev-1", id));
    }
    let new = handles(&mut events, 3);
    let all = [&new[0], &old[0], &new[1], &new[2]];
    let results = client.ack_all(all);
    assert_eq!(results.len(), 4);
    assert!(results[0].is_ok(), "{results:?}");
    assert!(matches!(results[1], Err(Error::Closed)), "{results:?}");
    assert!(results[2].is_ok() && results[3].is_ok(), "{results:?}");
    // Written on the connection each arrived on, in the order given; the
    // dead connection's ack never.
    let acks = ccs.lock().acks.clone();
    assert_eq!(
        acks,
        [
            (2, "up-1".to_string()),
            (2, "up-2".to_string()),
            (2, "up-3".to_string())
        ]
    );
    assert!(client.ack_all([]).is_empty());
    client.shutdown(Duration::from_millis(200));
}

#[test]
fn acks_due_when_the_connection_closes_are_written_first() {
    // At shutdown the last downstream message's ACK and an upstream message
    // arrive together: the engine closes the connection in the same step that
    // hands out the upstream's ack. It must be written before the close, or
    // CCS delivers the message again to someone who already has it.
    let ccs = MemCcs::new(Duration::ZERO);
    ccs.rule(|_, _| mem::Answer::Silent);
    let (client, _events) = Client::start_with(config(), ccs.clone()).unwrap();
    client
        .send(Message::to("device").message_id("m-1"))
        .unwrap();
    let end = Instant::now() + Duration::from_secs(5);
    while ccs.lock().written.is_empty() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(5));
    }
    let server = ccs.clone();
    let late = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(150));
        server.broadcast_all(&[mem::ack_event("m-1"), upstream_event("dev-1", "up-1")]);
    });
    let left = client.shutdown(Duration::from_secs(3));
    late.join().unwrap();
    assert!(left.is_empty(), "{left:?}");
    assert_eq!(ccs.lock().acks, [(1, "up-1".to_string())]);
}

#[test]
fn huge_timeouts_do_not_panic() {
    let ccs = MemCcs::new(Duration::ZERO);
    let cfg = config()
        .send_timeout(Duration::MAX)
        .drain_timeout(Duration::MAX)
        .drop_timeout(Duration::from_secs(1));
    let (client, mut events) = Client::start_with(cfg, ccs).unwrap();
    client
        .send_timeout(Message::to("t").message_id("a"), Duration::MAX)
        .unwrap();
    client.send(Message::to("t").message_id("b")).unwrap();
    let mut delivered = 0;
    while delivered < 2 {
        if let ClientEvent::Delivered { .. } = events.recv_timeout(Duration::from_secs(5)).unwrap()
        {
            delivered += 1;
        }
    }
    assert!(client.shutdown(Duration::MAX).is_empty());
}

#[test]
fn an_ordered_group_is_written_one_after_another_through_a_retry() {
    use fcm_xmpp::NackCode;
    let ccs = MemCcs::new(Duration::from_millis(5));
    // The group's head is NACKed SERVICE_UNAVAILABLE once; the rest acked.
    ccs.rule(|id, k| {
        if id == "g-1" && k == 0 {
            mem::Answer::Nack(NackCode::ServiceUnavailable)
        } else {
            mem::Answer::Ack
        }
    });
    let (client, mut events) = Client::start_with(config(), ccs.clone()).unwrap();
    for id in ["g-1", "u-1", "g-2", "u-2", "g-3", "u-3"] {
        let m = Message::to("t").message_id(id);
        let m = if id.starts_with('g') { m.group("g") } else { m };
        client.send(m).unwrap();
    }
    let mut delivered = Vec::new();
    while delivered.len() < 6 {
        if let ClientEvent::Delivered { message, .. } =
            events.recv_timeout(Duration::from_secs(5)).unwrap()
        {
            delivered.push(message.id().to_string());
        }
    }
    assert!(client.shutdown(Duration::from_secs(1)).is_empty());
    let written = ccs.lock().written.clone();
    let order: Vec<&str> = written.iter().map(|(_, id, _)| id.as_str()).collect();
    let group: Vec<&str> = order
        .iter()
        .copied()
        .filter(|id| id.starts_with('g'))
        .collect();
    assert_eq!(group, ["g-1", "g-1", "g-2", "g-3"], "{order:?}");
    // Each member waits for the answer to the one before it (5 ms away);
    // the ungrouped ones went out while g-1 waited for its retry.
    let at = |id: &str, nth: usize| {
        written
            .iter()
            .filter(|(_, w, _)| w == id)
            .nth(nth)
            .map(|(_, _, t)| *t)
            .unwrap()
    };
    assert!(at("g-1", 1) >= at("g-1", 0) + Duration::from_millis(50));
    assert!(at("g-2", 0) >= at("g-1", 1) + Duration::from_millis(5));
    assert!(at("g-3", 0) >= at("g-2", 0) + Duration::from_millis(5));
    for u in ["u-1", "u-2", "u-3"] {
        assert!(
            at(u, 0) < at("g-1", 1),
            "{u} waited behind the group: {order:?}"
        );
    }
    let pos = |id: &str| delivered.iter().position(|d| d == id).unwrap();
    assert!(
        pos("g-1") < pos("g-2") && pos("g-2") < pos("g-3"),
        "{delivered:?}"
    );
}
