//! No value a user can pass panics the client: every duration, count and
//! backoff of `Config`, `Keepalive`, `ClientConfig` and `Backoff` is either
//! refused at start with a typed error naming the field, or saturates.

#[path = "common/mem.rs"]
mod mem;

use std::time::{Duration, Instant};

use fcm_xmpp::client::{Backoff, Client, ClientConfig, ClientEvent, Events};
use fcm_xmpp::{Config, Error, Message, NackCode};
use mem::{Answer, MemCcs};

/// The field `start_with` refused, or `None` if it started.
fn refused_field(cfg: ClientConfig) -> Option<&'static str> {
    match Client::start_with(cfg, MemCcs::new(Duration::ZERO)) {
        Ok((client, _events)) => {
            client.shutdown(Duration::ZERO);
            None
        }
        Err(Error::InvalidConfig { field, .. }) => Some(field),
        Err(e) => panic!("not an InvalidConfig: {e:?}"),
    }
}

/// A zero first delay would retry or reconnect in a busy loop; a `max`
/// below `initial` is a typo. Both are refused for both backoffs, and the
/// error names the backoff that is wrong.
#[test]
fn zero_or_inverted_backoffs_are_refused_naming_the_field() {
    let base = || ClientConfig::new(Config::new("123456789012", "k"));
    let zero = Backoff::new(Duration::ZERO, Duration::from_secs(1));
    let inverted = Backoff::new(Duration::from_secs(2), Duration::from_secs(1));
    for bad in [zero, inverted] {
        assert_eq!(
            refused_field(base().retry_backoff(bad)),
            Some("retry_backoff"),
            "{bad:?}"
        );
        assert_eq!(
            refused_field(base().reconnect_backoff(bad)),
            Some("reconnect_backoff"),
            "{bad:?}"
        );
    }
    // The smallest valid ones start.
    let tiny = Backoff::new(Duration::from_nanos(1), Duration::from_nanos(1));
    assert_eq!(
        refused_field(base().retry_backoff(tiny).reconnect_backoff(tiny)),
        None
    );
}

/// `Backoff` itself at its extremes: no overflow for any attempt.
#[test]
fn backoff_saturates_at_any_attempt() {
    let huge = Backoff::new(Duration::MAX, Duration::MAX);
    for attempt in [0, 1, 2, 31, 64, u32::MAX] {
        assert_eq!(huge.nominal(attempt), Duration::MAX);
        assert_eq!(huge.delay_with(attempt, u64::MAX), Duration::MAX);
        let small = Backoff::new(Duration::from_nanos(1), Duration::MAX);
        assert!(small.delay(attempt) >= small.nominal(attempt));
    }
}

/// Waits for `n` outcomes; panics past `limit`.
fn outcomes(events: &mut Events, n: usize, limit: Duration) -> Vec<ClientEvent> {
    let end = Instant::now() + limit;
    let mut got = Vec::new();
    while got.len() < n {
        let left = end.saturating_duration_since(Instant::now());
        match events.recv_timeout(left) {
            Ok(ev) if ev.is_outcome() => got.push(ev),
            Ok(_) => {}
            Err(e) => panic!("{e:?} after {} outcomes", got.len()),
        }
    }
    got
}

/// Every `ClientConfig` duration and count at its largest, and both
/// backoffs at `Duration::MAX`: messages are delivered, a NACKed one waits
/// for its (huge) retry, a dropped connection is replaced, and `shutdown`
/// returns the waiting message on time.
#[test]
fn every_client_setting_at_its_largest_never_panics() {
    let ccs = MemCcs::new(Duration::ZERO);
    // "busy" is NACKed SERVICE_UNAVAILABLE, "slow" rate-limited, "kill"
    // drops its first connection; the rest are acked.
    ccs.rule(|id, k| match (id, k) {
        ("busy", _) => Answer::Nack(NackCode::ServiceUnavailable),
        ("slow", _) => Answer::Nack(NackCode::DeviceMessageRateExceeded),
        ("kill", 0) => Answer::Kill,
        _ => Answer::Ack,
    });
    let huge = Backoff::new(Duration::MAX, Duration::MAX);
    let d = Duration::MAX;
    let cfg = ClientConfig::new(Config::new("123456789012", "k"))
        .connections(2)
        .queue_capacity(usize::MAX)
        .dedup_window(usize::MAX)
        .retry_backoff(huge)
        .max_retries(u32::MAX)
        .reconnect_backoff(huge)
        .rate_limited_retry(Some(d))
        .send_timeout(d)
        .drain_timeout(d)
        .max_unread_events(usize::MAX)
        .drop_timeout(d)
        .stable_after(d)
        .max_losses(u32::MAX);
    let (client, mut events) = Client::start_with(cfg, ccs.clone()).unwrap();
    for id in ["a", "busy", "slow", "kill", "b"] {
        client
            .send_timeout(Message::to("t").message_id(id), d)
            .unwrap();
    }
    let got = outcomes(&mut events, 3, Duration::from_secs(10));
    let mut delivered: Vec<&str> = got
        .iter()
        .filter(|e| matches!(e, ClientEvent::Delivered { .. }))
        .map(|e| e.message().unwrap().id())
        .collect();
    delivered.sort_unstable();
    assert_eq!(delivered, ["a", "b", "kill"], "{got:?}");
    let t = Instant::now();
    let left = client.shutdown(Duration::from_millis(200));
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    let mut left: Vec<&str> = left.iter().map(|m| m.id()).collect();
    left.sort_unstable();
    assert_eq!(left, ["busy", "slow"]);
    let st = ccs.lock();
    let writes = |id: &str| st.written.iter().filter(|(_, w, _)| w == id).count();
    assert_eq!((writes("busy"), writes("slow")), (1, 1), "no early retry");
}

/// The connection settings at their largest, through the whole client over
/// real connections (TLS to the emulator on 127.0.0.1): the keepalive and
/// read-timeout deadlines saturate. With an unchecked `Instant + Duration`
/// every `recv_event` panicked and the client stopped with `WorkerPanicked`.
#[cfg(feature = "emulator")]
#[test]
fn every_connection_setting_at_its_largest_never_panics() {
    use fcm_xmpp::Keepalive;
    let emu = fcm_xmpp::Emulator::start("123456789012", "k").unwrap();
    let d = Duration::MAX;
    for keepalive in [
        Keepalive::default()
            .whitespace_after(Some(d))
            .ping_after(Some(d))
            .dead_after(d),
        // A ping at once, then `dead_after` runs.
        Keepalive::default()
            .whitespace_after(None)
            .ping_after(Some(Duration::ZERO))
            .dead_after(d),
    ] {
        let conn = emu
            .client_config()
            .connect_timeout(Some(d))
            .handshake_timeout(Some(d))
            .read_timeout(Some(d))
            .write_timeout(Some(d))
            .close_timeout(Some(d))
            .max_stanza_size(usize::MAX)
            .keepalive(keepalive);
        let (client, mut events) = Client::start(ClientConfig::new(conn)).unwrap();
        client.send(Message::to("t").message_id("m")).unwrap();
        let got = outcomes(&mut events, 1, Duration::from_secs(10));
        assert!(
            matches!(got[0], ClientEvent::Delivered { .. }),
            "{keepalive:?}: {got:?}"
        );
        let t = Instant::now();
        assert!(client.shutdown(Duration::from_secs(2)).is_empty());
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
        for ev in events {
            assert!(!matches!(ev, ClientEvent::Fatal { .. }), "{ev:?}");
        }
    }
    emu.shutdown();
}
