//! The worker's I/O thread with a link that can be woken: it waits for input
//! or a wake-up, never polls, and new work (a message, a manual ack,
//! shutdown) ends its wait at once. A scripted link records every wait and
//! why it ended, so the order is asserted, not the speed.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use fcm_xmpp::client::{
    AckMode, Client, ClientConfig, ClientEvent, Connector, Events, Link, Waker,
};
use fcm_xmpp::{Config, Event, Message, Result};

/// What the link saw, in order.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    /// `recv_event` began to wait this long.
    Wait(Duration),
    /// The wait ended by a wake-up.
    Woken,
    /// The wait ran out.
    TimedOut,
    /// The test is about to hand the client work.
    Marker(&'static str),
    Sent(String),
    Acked(String),
}

#[derive(Default)]
struct State {
    log: Vec<Step>,
    woken: bool,
    /// Calls of the waker.
    wakes: usize,
    /// The server does not answer while set.
    hold_acks: bool,
    /// Events the server has for the client.
    inbox: Vec<Event>,
}

#[derive(Clone, Default)]
struct Probe(Arc<(Mutex<State>, Condvar)>);

impl Probe {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0 .0.lock().unwrap()
    }
    fn mark(&self, what: &'static str) {
        self.state().log.push(Step::Marker(what));
    }
    fn log(&self) -> Vec<Step> {
        self.state().log.clone()
    }
    /// Waits (bounded) until the link is waiting in `recv_event`.
    fn await_waiting(&self) {
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            if matches!(self.state().log.last(), Some(Step::Wait(_))) {
                return;
            }
            assert!(
                Instant::now() < end,
                "the link never waited: {:?}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    /// The steps after the last `Marker(what)`.
    fn after(&self, what: &'static str) -> Vec<Step> {
        let log = self.log();
        let at = log
            .iter()
            .rposition(|s| *s == Step::Marker(what))
            .expect("marker");
        log[at + 1..].to_vec()
    }
}

struct ProbeLink {
    probe: Probe,
    unflushed: Vec<Step>,
}

impl Link for ProbeLink {
    fn jid(&self) -> &str {
        "123456789012@gcm.googleapis.com/probe"
    }
    fn send_buffered(&mut self, message: &Message) -> Result<()> {
        self.unflushed.push(Step::Sent(message.id().to_string()));
        Ok(())
    }
    fn ack_buffered(&mut self, _to: &str, message_id: &str) -> Result<()> {
        self.unflushed.push(Step::Acked(message_id.to_string()));
        Ok(())
    }
    fn flush(&mut self) -> Result<()> {
        let mut st = self.probe.state();
        for step in self.unflushed.drain(..) {
            if let (Step::Sent(id), false) = (&step, st.hold_acks) {
                let json = format!(r#"{{"message_type":"ack","message_id":"{id}","from":"t"}}"#);
                st.inbox.push(Event::from_json(&json).unwrap());
            }
            st.log.push(step);
        }
        Ok(())
    }
    fn recv_event(&mut self, timeout: Duration) -> Result<Option<Event>> {
        let (m, cv) = &*self.probe.0;
        let mut st = m.lock().unwrap();
        if !st.inbox.is_empty() {
            return Ok(Some(st.inbox.remove(0)));
        }
        st.log.push(Step::Wait(timeout));
        let end = Instant::now() + timeout;
        loop {
            if std::mem::take(&mut st.woken) {
                st.log.push(Step::Woken);
                return Ok(None);
            }
            let now = Instant::now();
            if now >= end {
                st.log.push(Step::TimedOut);
                return Ok(None);
            }
            st = cv.wait_timeout(st, end - now).unwrap().0;
        }
    }
    fn try_recv_event(&mut self) -> Result<Option<Event>> {
        let mut st = self.probe.state();
        Ok((!st.inbox.is_empty()).then(|| st.inbox.remove(0)))
    }
    fn close(self: Box<Self>, _limit: Option<Duration>) -> Vec<Event> {
        Vec::new()
    }
    fn waker(&self) -> Option<Waker> {
        let probe = self.probe.clone();
        Some(Waker::new(move || {
            let (m, cv) = &*probe.0;
            let mut st = m.lock().unwrap();
            st.woken = true;
            st.wakes += 1;
            cv.notify_all();
        }))
    }
}

struct ProbeConnector(Probe);

impl Connector for ProbeConnector {
    fn connect(&self, _slot: usize, _deadline: Option<Instant>) -> Result<Box<dyn Link>> {
        Ok(Box::new(ProbeLink {
            probe: self.0.clone(),
            unflushed: Vec::new(),
        }))
    }
}

/// A client whose poll interval is 1 ms: a worker that polled would wait
/// 1 ms at a time.
fn start(mode: AckMode) -> (Client, Events, Probe) {
    let probe = Probe::default();
    let cfg = ClientConfig::new(Config::new("123456789012", "k"))
        .poll_interval(Duration::from_millis(1))
        .ack_mode(mode);
    let (client, events) = Client::start_with(cfg, ProbeConnector(probe.clone())).unwrap();
    probe.await_waiting();
    (client, events, probe)
}

/// The next event other than `Connected`.
fn next_event(events: &mut Events) -> ClientEvent {
    loop {
        match events.recv_timeout(Duration::from_secs(10)) {
            Ok(ClientEvent::Connected { .. }) => {}
            Ok(ev) => return ev,
            Err(e) => panic!("no event within 10 s: {e:?}"),
        }
    }
}

/// Every wait of an idle connection lasts the idle re-check (1 s), not the
/// poll interval.
fn assert_no_polling(log: &[Step]) {
    for s in log {
        if let Step::Wait(t) = s {
            assert!(*t >= Duration::from_millis(500), "polled: {log:?}");
        }
    }
}

#[test]
fn a_message_to_an_idle_connection_ends_the_wait_at_once() {
    let (client, mut events, probe) = start(AckMode::Auto);
    probe.mark("send");
    let id = client.send(Message::to("t").message_id("m1")).unwrap();
    assert!(matches!(
        next_event(&mut events),
        ClientEvent::Delivered { .. }
    ));
    let after = probe.after("send");
    // The wait that was running ended by the wake-up, then the message went out.
    let sent = after
        .iter()
        .position(|s| *s == Step::Sent(id.clone()))
        .unwrap_or_else(|| panic!("not sent: {after:?}"));
    assert_eq!(after[..sent], [Step::Woken], "{after:?}");
    assert_no_polling(&probe.log());
    client.shutdown(Duration::from_secs(5));
}

#[test]
fn a_manual_ack_ends_the_wait_at_once() {
    let (client, mut events, probe) = start(AckMode::Manual);
    {
        let ev = Event::from_json(r#"{"from":"dev","category":"app","message_id":"u1","data":{}}"#)
            .unwrap();
        let (m, cv) = &*probe.0;
        let mut st = m.lock().unwrap();
        st.inbox.push(ev);
        st.woken = true;
        cv.notify_all();
    }
    let handle = match next_event(&mut events) {
        ClientEvent::Upstream { ack, .. } => ack.expect("manual mode hands out a handle"),
        other => panic!("{other:?}"),
    };
    probe.await_waiting();
    probe.mark("ack");
    client.ack(&handle).unwrap();
    let after = probe.after("ack");
    assert_eq!(
        after[..2],
        [Step::Woken, Step::Acked("u1".into())],
        "{after:?}"
    );
    // `ack` returned once the ack was written, not once the next wait ended.
    assert!(!after.contains(&Step::TimedOut), "{after:?}");
    assert_no_polling(&probe.log());
    client.shutdown(Duration::from_secs(5));
}

#[test]
fn shutdown_ends_the_wait_at_once_and_the_thread_ends() {
    let (client, events, probe) = start(AckMode::Auto);
    probe.mark("shutdown");
    let left = client.shutdown(Duration::from_secs(5));
    assert!(left.is_empty());
    let after = probe.after("shutdown");
    assert_eq!(after.first(), Some(&Step::Woken), "{after:?}");
    assert!(!after.contains(&Step::TimedOut), "{after:?}");
    // The stream ends: every worker thread is gone.
    let mut events = events;
    let end = Instant::now() + Duration::from_secs(10);
    while events.recv_timeout(Duration::from_secs(10)).is_ok() {
        assert!(Instant::now() < end, "the event stream did not end");
    }
}

#[test]
fn messages_queued_behind_a_full_window_wake_nobody() {
    let (client, _events, probe) = start(AckMode::Auto);
    probe.state().hold_acks = true;
    for i in 0..100 {
        client
            .send(Message::to("t").message_id(format!("a{i}")))
            .unwrap();
    }
    let end = Instant::now() + Duration::from_secs(10);
    let sent = || {
        probe
            .log()
            .iter()
            .filter(|s| matches!(s, Step::Sent(_)))
            .count()
    };
    while sent() < 100 {
        assert!(Instant::now() < end, "the window never filled");
        std::thread::sleep(Duration::from_millis(1));
    }
    let wakes = probe.state().wakes;
    for i in 0..500 {
        client
            .send(Message::to("t").message_id(format!("b{i}")))
            .unwrap();
    }
    // They wait for acks; waking the I/O thread for each would be useless
    // work. The first finds the queue empty (the window took all before it):
    // one wake-up for the 500.
    let more = probe.state().wakes - wakes;
    assert!(
        more <= 1,
        "{more} wake-ups for 500 messages behind a full window"
    );
    assert_eq!(sent(), 100);
    client.shutdown(Duration::from_millis(100));
}

/// Opens a new link with a probe of its own on every connect.
#[derive(Clone, Default)]
struct EachOwnProbe(Arc<Mutex<Vec<Probe>>>);

impl EachOwnProbe {
    fn probe(&self, n: usize) -> Probe {
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(p) = self.0.lock().unwrap().get(n) {
                return p.clone();
            }
            assert!(Instant::now() < end, "connection {n} never opened");
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

impl Connector for EachOwnProbe {
    fn connect(&self, _slot: usize, _deadline: Option<Instant>) -> Result<Box<dyn Link>> {
        let probe = Probe::default();
        self.0.lock().unwrap().push(probe.clone());
        Ok(Box::new(ProbeLink {
            probe,
            unflushed: Vec::new(),
        }))
    }
}

/// Puts `event` in the link's inbox and wakes it.
fn deliver(probe: &Probe, event: Event) {
    let (m, cv) = &*probe.0;
    let mut st = m.lock().unwrap();
    st.inbox.push(event);
    st.woken = true;
    cv.notify_all();
}

#[test]
fn an_outcome_on_a_draining_connection_wakes_the_one_that_sends_the_next_of_its_group() {
    let links = EachOwnProbe::default();
    let cfg = ClientConfig::new(Config::new("123456789012", "k"));
    let (client, _events) = Client::start_with(cfg, links.clone()).unwrap();
    let first = links.probe(0);
    first.await_waiting();
    first.state().hold_acks = true;
    client
        .send(Message::to("t").message_id("g1").group("g"))
        .unwrap();
    client
        .send(Message::to("t").message_id("g2").group("g"))
        .unwrap();
    let draining = r#"{"message_type":"control","control_type":"CONNECTION_DRAINING"}"#;
    deliver(&first, Event::from_json(draining).unwrap());
    // The replacement opens and waits; g2 waits for g1's outcome.
    let second = links.probe(1);
    second.await_waiting();
    second.mark("ack");
    let ack = r#"{"message_type":"ack","message_id":"g1","from":"t"}"#;
    deliver(&first, Event::from_json(ack).unwrap());
    let end = Instant::now() + Duration::from_secs(10);
    while !second.log().contains(&Step::Sent("g2".into())) {
        assert!(Instant::now() < end, "g2 never sent: {:?}", second.log());
        std::thread::sleep(Duration::from_millis(1));
    }
    let after = second.after("ack");
    assert_eq!(
        after[..2],
        [Step::Woken, Step::Sent("g2".into())],
        "{after:?}"
    );
    client.shutdown(Duration::from_millis(200));
}

/// A pool of `n` idle connections, each with its own probe, all waiting.
fn idle_pool(n: usize, hold_acks: bool) -> (Client, Events, Vec<Probe>) {
    let links = EachOwnProbe::default();
    let cfg = ClientConfig::new(Config::new("123456789012", "k")).connections(n);
    let (client, events) = Client::start_with(cfg, links.clone()).unwrap();
    let probes: Vec<Probe> = (0..n).map(|i| links.probe(i)).collect();
    for p in &probes {
        p.state().hold_acks = hold_acks;
        p.await_waiting();
    }
    (client, events, probes)
}

fn sent_by(p: &Probe) -> usize {
    p.log()
        .iter()
        .filter(|s| matches!(s, Step::Sent(_)))
        .count()
}

#[test]
fn a_message_for_an_idle_pool_wakes_one_connection_not_all() {
    let (client, mut events, probes) = idle_pool(8, false);
    let before: usize = probes.iter().map(|p| p.state().wakes).sum();
    client.send(Message::to("t").message_id("only")).unwrap();
    assert!(matches!(
        next_event(&mut events),
        ClientEvent::Delivered { .. }
    ));
    let after: usize = probes.iter().map(|p| p.state().wakes).sum();
    // Waking the whole pool for one message is 7 useless thread wake-ups.
    assert_eq!(
        after - before,
        1,
        "wake-ups for one message to 8 idle connections"
    );
    assert_eq!(probes.iter().map(sent_by).sum::<usize>(), 1);
    client.shutdown(Duration::from_millis(100));
}

#[test]
fn a_backlog_spreads_over_every_connection_with_room() {
    // Acks held: each connection can take 100. 350 messages sent at once must reach
    // four connections' windows, not wait behind the first one's.
    let (client, _events, probes) = idle_pool(4, true);
    for p in &probes {
        p.mark("send");
    }
    for i in 0..350 {
        client
            .send(Message::to("t").message_id(format!("m{i}")))
            .unwrap();
    }
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let counts: Vec<usize> = probes.iter().map(sent_by).collect();
        if counts.iter().sum::<usize>() == 350 {
            assert!(counts.iter().all(|&c| c <= 100), "{counts:?}");
            break;
        }
        assert!(
            Instant::now() < end,
            "the backlog did not spread: {counts:?}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    // Each connection was woken for its share; none found it only at the idle
    // re-check (a wait that ran out).
    for (i, p) in probes.iter().enumerate() {
        let steps = p.after("send");
        let first = steps.iter().position(|s| matches!(s, Step::Sent(_)));
        let first = first.unwrap_or_else(|| panic!("connection {i} sent nothing: {steps:?}"));
        assert!(
            !steps[..first].contains(&Step::TimedOut),
            "connection {i} found its work only at the idle re-check: {steps:?}"
        );
    }
    client.shutdown(Duration::from_millis(100));
}
