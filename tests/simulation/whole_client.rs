//! Seeded fault schedules of the whole worker [`Client`], started with
//! `Client::start_with` over in-memory connections to a simulated CCS
//! ([`MemCcs`]): real threads and short real time (the engine test above is
//! the simulated-time one).
//!
//! Each schedule draws its settings and its fault mix from its seed: drops
//! (a stanza that kills the connection, every connection at once, outages),
//! CONNECTION_DRAINING as control message and as NACK, SERVICE_UNAVAILABLE,
//! INTERNAL_SERVER_ERROR and unknown NACK codes, rate-limit NACKs, final
//! NACKs, stanza errors, duplicate, unknown and slow acks, silence, a poison
//! message (it kills every connection it is written on), refused and silent
//! connects, an authentication failure at connect, the application sending
//! throughout (half of the schedules with ordered groups) and shutting down
//! at a random moment with a random deadline. The server records everything
//! that crosses each connection; after the schedule these invariants are
//! checked against that record:
//!
//! - exactly one final outcome per accepted message (an event or a place in
//!   `shutdown`'s list, which keeps acceptance order), none for others;
//! - never more than `max_pending` unanswered on a connection;
//! - the messages resent after a loss, or after CONNECTION_DRAINING NACKs on
//!   one connection, are written again in their original order;
//! - no retry after SERVICE_UNAVAILABLE, INTERNAL_SERVER_ERROR or an unknown
//!   code earlier than the retry backoff's nominal delay (nor after a
//!   rate-limit NACK earlier than `rate_limited_retry`);
//! - connect attempts of a slot spaced by the reconnect backoff's nominal
//!   delay after failed attempts and short-lived connections, whatever the
//!   application does;
//! - the poison message is written at most `max_losses` times and ends
//!   returned as `ConnectionsLost` (or in shutdown's list), and no other
//!   message is returned for lost connections;
//! - `shutdown` returns within its deadline plus [`SHUTDOWN_MARGIN`] and
//!   nothing is written later than that after the deadline;
//! - queued plus in-flight messages never exceed `queue_capacity` plus the
//!   windows of the connections open at once;
//! - members of an ordered group are written one after another.
//!
//! Timing checks assert lower bounds strictly (the client may only be late)
//! and upper bounds with the margin. `WHOLE_CLIENT_SCHEDULES=N` runs N
//! schedules (default 40); `WHOLE_CLIENT_SEED=S` replays one. Thread timing
//! varies from run to run, so a replay repeats the settings, the fault mix
//! and the application's actions of the seed, not every interleaving.

#[path = "../common/mem.rs"]
mod mem;

use std::collections::{HashMap, HashSet};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fcm_xmpp::client::{
    Backoff, Client, ClientConfig, ClientEvent, Events, ReturnReason, SendError, SendErrorKind,
};
use fcm_xmpp::{Config, Error, Event, Message, NackCode, RetryClass};
use mem::{Answer, Connect, MemCcs, Wire};

use super::Rng;

/// How far past its deadline `shutdown` may return, and how far past it a
/// write may still be recorded (it was decided before the deadline, then its
/// thread lost the CPU). The client itself waits at most 100 ms past the
/// deadline for its threads; the rest is for a loaded 2-core machine, where
/// a woken thread can wait tens of milliseconds for a core.
const SHUTDOWN_MARGIN: Duration = Duration::from_millis(150);

/// Connection mode of the simulated server, set by the application thread.
const UP: u8 = 0;
const REFUSING: u8 = 1;
const SILENT: u8 = 2;

/// The settings and the fault mix of one schedule, all drawn from its seed.
#[derive(Debug, Clone)]
struct Plan {
    max_pending: usize,
    connections: usize,
    queue_capacity: usize,
    latency: Duration,
    retry: Backoff,
    reconnect: Backoff,
    stable_after: Duration,
    max_retries: u32,
    max_losses: u32,
    rate_limited_retry: Option<Duration>,
    drain_timeout: Duration,
    /// Per mille of the server's answers, by kind.
    answers: Vec<(u64, Answer)>,
    /// One in N connect attempts is refused even when the server is up.
    flaky_connects: u64,
    /// The application drops every connection now and then.
    drops: bool,
    /// Outages: refused (or silent) connects for a while.
    outages: bool,
    silent_outages: bool,
    /// Connect attempt number N fails authentication (fatal).
    auth_fail_at: Option<u64>,
    /// Which message (by index) kills every connection it is written on.
    poison: Option<u64>,
    groups: bool,
    count: u64,
    /// How long the application waits between its last send and shutdown.
    settle: Duration,
    /// Shutdown from another thread this long after the start, while the
    /// application is still sending (else after `settle`).
    shutdown_after: Option<Duration>,
    shutdown: Duration,
}

impl Plan {
    fn new(rng: &mut Rng) -> Plan {
        let poison = rng.chance(3);
        let mut answers = Vec::new();
        let mut maybe = |rng: &mut Rng, lo: u64, hi: u64, answer: Answer| {
            if rng.chance(2) {
                answers.push((lo + rng.below(hi - lo + 1), answer));
            }
        };
        if !poison {
            maybe(rng, 3, 20, Answer::Kill);
        }
        maybe(rng, 5, 60, Answer::Nack(NackCode::ServiceUnavailable));
        maybe(rng, 5, 40, Answer::Nack(NackCode::InternalServerError));
        maybe(rng, 3, 20, Answer::Nack(NackCode::Other("NEW_CODE".into())));
        maybe(
            rng,
            3,
            30,
            Answer::Nack(NackCode::DeviceMessageRateExceeded),
        );
        maybe(
            rng,
            3,
            30,
            Answer::Nack(NackCode::TopicsMessageRateExceeded),
        );
        maybe(rng, 3, 30, Answer::Nack(NackCode::DeviceUnregistered));
        maybe(rng, 2, 10, Answer::Nack(NackCode::ConnectionDraining));
        maybe(rng, 3, 20, Answer::Reply(super::stanza_error));
        maybe(rng, 5, 40, Answer::AckTwice);
        let slow = rng.ms(5, 40);
        maybe(rng, 10, 80, Answer::SlowAck(slow));
        maybe(rng, 1, 15, Answer::Silent);
        let count = 40 + rng.below(200);
        Plan {
            max_pending: 1 + rng.below(16) as usize,
            connections: 1 + rng.below(3) as usize,
            queue_capacity: if rng.chance(3) {
                1 + rng.below(10) as usize
            } else {
                1 + rng.below(200) as usize
            },
            latency: rng.ms(0, 4),
            retry: Backoff::new(rng.ms(2, 8), rng.ms(20, 40)),
            reconnect: Backoff::new(rng.ms(2, 8), rng.ms(20, 40)),
            stable_after: rng.ms(20, 60),
            max_retries: 1 + rng.below(8) as u32,
            max_losses: 1 + rng.below(5) as u32,
            rate_limited_retry: rng.chance(2).then(|| rng.ms(2, 10)),
            drain_timeout: rng.ms(50, 200),
            answers,
            flaky_connects: if rng.chance(3) { 2 + rng.below(6) } else { 0 },
            drops: !poison && rng.chance(2),
            outages: rng.chance(2),
            silent_outages: rng.chance(2),
            auth_fail_at: rng.chance(12).then(|| rng.below(12)),
            poison: poison.then(|| rng.below(count / 2)),
            groups: rng.chance(2),
            count,
            settle: rng.ms(0, 300),
            shutdown_after: rng.chance(3).then(|| rng.ms(0, 150)),
            shutdown: rng.ms(0, 300),
        }
    }

    fn config(&self) -> ClientConfig {
        ClientConfig::new(Config::new("123456789012", "k").max_pending(self.max_pending))
            .connections(self.connections)
            .queue_capacity(self.queue_capacity)
            .retry_backoff(self.retry)
            .reconnect_backoff(self.reconnect)
            .stable_after(self.stable_after)
            .max_retries(self.max_retries)
            .max_losses(self.max_losses)
            .rate_limited_retry(self.rate_limited_retry)
            .drain_timeout(self.drain_timeout)
            .drop_timeout(Duration::from_millis(200))
    }
}

/// What one schedule produced, for the checks.
struct Run {
    seed: u64,
    plan: Plan,
    /// Accepted ids in acceptance order.
    accepted: Vec<String>,
    poison: Option<String>,
    /// Ordered group members in acceptance order, by group.
    groups: HashMap<u64, Vec<String>>,
    events: Vec<ClientEvent>,
    left: Vec<Message>,
    stream_ended: bool,
    /// When shutdown was called, its timeout and how long it took.
    shutdown_at: Instant,
    took: Duration,
    /// Most queued plus in flight seen in the client's metrics.
    peak_held: u64,
    connects: Vec<mem::Attempt>,
    wire: Vec<Wire>,
    written: Vec<(u64, String, Instant)>,
    max_open: usize,
}

/// Figures over all schedules, printed at the end.
#[derive(Default)]
struct Figures {
    writes: usize,
    kills: usize,
    refused_or_silent: usize,
    taken: HashMap<&'static str, usize>,
    max_overrun: Duration,
    /// The schedule whose shutdown overran its deadline most.
    max_overrun_seed: u64,
    max_late_write: Duration,
    /// How many times each check had something to compare.
    resend_pairs: usize,
    retry_gaps: usize,
    reconnect_gaps: usize,
    poison_writes: usize,
    /// Schedules with a poison message, with a fatal error, and whose
    /// shutdown ran to its deadline.
    poisoned: usize,
    fatal: usize,
    to_deadline: usize,
}

fn schedule(seed: u64) -> Run {
    let mut rng = Rng::new(seed);
    let plan = Plan::new(&mut rng);
    let ccs = MemCcs::new(plan.latency);
    let poison = plan.poison.map(|i| format!("w{seed}-{i}"));
    {
        let mut answers = Rng::new(seed ^ 0xA5A5);
        let mix = plan.answers.clone();
        let poison = poison.clone();
        ccs.rule(move |id, _| {
            if poison.as_deref() == Some(id) {
                return Answer::Kill;
            }
            let mut r = answers.below(1000);
            for (w, a) in &mix {
                if r < *w {
                    return a.clone();
                }
                r -= w;
            }
            Answer::Ack
        });
    }
    let mode = Arc::new(AtomicU8::new(UP));
    {
        let mode = Arc::clone(&mode);
        let mut connects = Rng::new(seed ^ 0x5A5A);
        let (auth_fail_at, flaky) = (plan.auth_fail_at, plan.flaky_connects);
        let silent_for = rng.ms(5, 30);
        ccs.connect_rule(move |_, k| {
            if auth_fail_at == Some(k) {
                return Connect::AuthFail;
            }
            match mode.load(Ordering::SeqCst) {
                REFUSING => Connect::Refuse,
                SILENT => Connect::Silent(silent_for),
                _ if flaky > 0 && connects.chance(flaky) => Connect::Refuse,
                _ => Connect::Accept,
            }
        });
    }
    let (client, mut events) = Client::start_with(plan.config(), ccs.clone()).unwrap();
    let (timeout, after) = (plan.shutdown, plan.shutdown_after);
    let stopper = after.map(|after| {
        let client = client.clone();
        std::thread::spawn(move || {
            std::thread::sleep(after);
            let at = Instant::now();
            let left = client.shutdown(timeout);
            (at, at.elapsed(), left)
        })
    });
    let mut run_events = Vec::new();
    let mut peak_held = 0;
    let mut sample = |client: &Client| {
        let m = client.metrics();
        peak_held = peak_held.max(m.queued + m.pending);
    };
    let mut accepted = Vec::new();
    let mut groups: HashMap<u64, Vec<String>> = HashMap::new();
    for i in 0..plan.count {
        let id = format!("w{seed}-{i}");
        let group = (plan.groups && plan.poison != Some(i) && rng.chance(2)).then(|| rng.below(3));
        let mut m = Message::to("t").message_id(&id);
        if let Some(g) = group {
            m = m.group(format!("g{g}"));
        }
        let sent = if rng.chance(4) {
            client.try_send(m)
        } else {
            client.send_timeout(m, rng.ms(0, 20))
        };
        match sent {
            Ok(_) => {
                if let Some(g) = group {
                    groups.entry(g).or_default().push(id.clone());
                }
                accepted.push(id);
            }
            // Shut down (from the other thread) or stopped for good.
            Err(SendError {
                kind: SendErrorKind::Closed,
                ..
            }) => break,
            Err(_) => {}
        }
        sample(&client);
        if rng.chance(97) {
            ccs.broadcast(mem::draining_event());
        }
        if rng.chance(50) {
            ccs.broadcast(mem::ack_event(&format!("unknown-{i}")));
        }
        if plan.drops && rng.chance(131) {
            ccs.drop_all();
        }
        if plan.outages && rng.chance(40) {
            if mode.load(Ordering::SeqCst) == UP {
                let down = if plan.silent_outages {
                    SILENT
                } else {
                    REFUSING
                };
                mode.store(down, Ordering::SeqCst);
                if plan.drops {
                    ccs.drop_all();
                }
            } else {
                mode.store(UP, Ordering::SeqCst);
            }
        }
        if rng.chance(6) {
            std::thread::sleep(Duration::from_millis(1));
        }
        while let Ok(ev) = events.try_recv() {
            run_events.push(ev);
        }
    }
    // Half of the outages end before shutdown; the rest last through it.
    if rng.chance(2) {
        mode.store(UP, Ordering::SeqCst);
    }
    let settle_until = Instant::now()
        + if stopper.is_some() {
            Duration::ZERO
        } else {
            plan.settle
        };
    while Instant::now() < settle_until {
        match events.recv_timeout(Duration::from_millis(5)) {
            Ok(ev) => run_events.push(ev),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        sample(&client);
    }
    let (shutdown_at, took, left) = match stopper {
        Some(t) => {
            drop(client);
            t.join().unwrap()
        }
        None => {
            let at = Instant::now();
            let left = client.shutdown(plan.shutdown);
            (at, at.elapsed(), left)
        }
    };
    let stream_ended = drain(&mut events, &mut run_events);
    let st = ccs.lock();
    Run {
        seed,
        accepted,
        poison,
        groups,
        events: run_events,
        left,
        stream_ended,
        shutdown_at,
        took,
        peak_held,
        connects: st.connects.clone(),
        wire: st.wire.clone(),
        written: st.written.clone(),
        max_open: st.max_open,
        plan,
    }
}

/// Reads the rest of the event stream; false if it did not end within 5 s.
fn drain(events: &mut Events, into: &mut Vec<ClientEvent>) -> bool {
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        match events.recv_timeout(end.saturating_duration_since(Instant::now())) {
            Ok(ev) => into.push(ev),
            Err(RecvTimeoutError::Disconnected) => return true,
            Err(RecvTimeoutError::Timeout) => return false,
        }
    }
}

fn is_draining(ev: &Event) -> bool {
    ev.is_connection_draining()
}

fn kind(ev: &Event) -> &'static str {
    match ev {
        Event::Ack(_) => "ack",
        Event::Nack(n) => match n.code.retry_class() {
            RetryClass::Backoff => "backoff nack",
            RetryClass::RateLimited => "rate-limit nack",
            RetryClass::NewConnection => "draining nack",
            _ => "final nack",
        },
        Event::StanzaError(_) => "stanza error",
        Event::Control(_) => "draining control",
        _ => "other",
    }
}

/// The index and connection of the first write of `id` after wire entry `after`.
fn next_write(wire: &[Wire], id: &str, after: usize) -> Option<(usize, u64, Instant)> {
    wire.iter()
        .enumerate()
        .skip(after + 1)
        .find_map(|(i, w)| match w {
            Wire::Wrote { conn, id: w, at } if w == id => Some((i, *conn, *at)),
            _ => None,
        })
}

fn check(run: &Run, fig: &mut Figures) -> Vec<String> {
    let mut v = Vec::new();
    let plan = &run.plan;
    let order: HashMap<&str, usize> = run
        .accepted
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), i))
        .collect();

    // Exactly one final outcome per accepted message.
    let mut outcomes: HashMap<String, Vec<String>> = HashMap::new();
    for m in &run.left {
        outcomes
            .entry(m.id().to_string())
            .or_default()
            .push("left at shutdown".into());
    }
    for ev in &run.events {
        if let Some(m) = ev.message() {
            let what = match ev {
                ClientEvent::Returned { reason, .. } => format!("returned: {reason}"),
                ClientEvent::Rejected { reason, .. } => format!("rejected: {reason}"),
                _ => "delivered".into(),
            };
            outcomes.entry(m.id().to_string()).or_default().push(what);
        }
    }
    for id in &run.accepted {
        match outcomes.get(id).map_or(0, Vec::len) {
            1 => {}
            k => v.push(format!("{id} has {k} outcomes: {:?}", outcomes.get(id))),
        }
    }
    for id in outcomes.keys() {
        if !order.contains_key(id.as_str()) {
            v.push(format!("an outcome for {id}, never accepted"));
        }
    }
    let left: Vec<usize> = run
        .left
        .iter()
        .filter_map(|m| order.get(m.id()).copied())
        .collect();
    if left.windows(2).any(|w| w[0] >= w[1]) {
        v.push("shutdown's list is not in acceptance order".into());
    }
    if !run.stream_ended {
        v.push("the event stream did not end after shutdown".into());
    }
    let fatal = run
        .events
        .iter()
        .filter(|e| matches!(e, ClientEvent::Fatal { .. }))
        .count();
    fig.fatal += usize::from(fatal > 0);
    for ev in &run.events {
        if let ClientEvent::Fatal { error } = ev {
            if plan.auth_fail_at.is_none() || !matches!(**error, Error::AuthFailed { .. }) {
                v.push(format!("Fatal without an authentication failure: {error}"));
            }
        }
    }
    if fatal > 1 {
        v.push(format!("{fatal} Fatal events"));
    }

    // Replay the wire: windows, resend groups, retry delays.
    let mut windows: HashMap<u64, Vec<(String, usize)>> = HashMap::new();
    let mut drain_nacked: HashMap<u64, Vec<(String, usize)>> = HashMap::new();
    let mut drained: HashSet<u64> = HashSet::new();
    let mut killed: HashMap<u64, Instant> = HashMap::new();
    let mut backoff_nacks: HashMap<&str, u32> = HashMap::new();
    let deadline = run.shutdown_at + plan.shutdown;
    for (i, w) in run.wire.iter().enumerate() {
        match w {
            Wire::Wrote { conn, id, at } => {
                fig.writes += 1;
                let win = windows.entry(*conn).or_default();
                win.push((id.clone(), i));
                if win.len() > plan.max_pending {
                    v.push(format!(
                        "{} unanswered on connection {conn} > max_pending {}",
                        win.len(),
                        plan.max_pending
                    ));
                }
                if *at > deadline {
                    let late = *at - deadline;
                    fig.max_late_write = fig.max_late_write.max(late);
                    if late > SHUTDOWN_MARGIN {
                        v.push(format!("{id} written {late:?} after the shutdown deadline"));
                    }
                }
            }
            Wire::Took { conn, event, at } => {
                *fig.taken.entry(kind(event)).or_default() += 1;
                if is_draining(event) {
                    drained.insert(*conn);
                }
                let Some(id) = event.settled_message_id() else {
                    continue;
                };
                let win = windows.entry(*conn).or_default();
                if let Some(p) = win.iter().position(|(w, _)| w == id) {
                    win.remove(p);
                }
                let Event::Nack(nack) = event else {
                    continue;
                };
                let earliest = match nack.code.retry_class() {
                    RetryClass::Backoff => {
                        let Some((name, _)) = order.get_key_value(id) else {
                            continue;
                        };
                        let b = backoff_nacks.entry(name).or_default();
                        *b += 1;
                        Some((plan.retry.nominal(*b), "retry backoff"))
                    }
                    RetryClass::RateLimited => plan.rate_limited_retry.map(|d| (d, "rate limit")),
                    RetryClass::NewConnection => {
                        drain_nacked
                            .entry(*conn)
                            .or_default()
                            .push((id.to_string(), i));
                        None
                    }
                    _ => None,
                };
                if let (Some((min, what)), Some((_, c, next))) =
                    (earliest, next_write(&run.wire, id, i))
                {
                    fig.retry_gaps += 1;
                    let gap = next.saturating_duration_since(*at);
                    if gap < min {
                        v.push(format!(
                            "{id} written again on connection {c} {gap:?} after its {} NACK \
                             ({what} nominal {min:?})",
                            nack.code
                        ));
                    }
                }
            }
            Wire::Killed { conn, at } => {
                fig.kills += 1;
                killed.entry(*conn).or_insert(*at);
            }
            Wire::Closed { .. } => {}
        }
    }

    // Resent in their original order: what a connection held when it ended
    // (in the order written), and what it NACKed with CONNECTION_DRAINING.
    let pairs = &mut fig.resend_pairs;
    let mut check_group = |what: &str, conn: u64, group: &[(String, usize)]| {
        let next: Vec<_> = group
            .iter()
            .map(|(id, i)| next_write(&run.wire, id, *i))
            .collect();
        for a in 0..group.len() {
            for b in a + 1..group.len() {
                let (Some(na), Some(nb)) = (next[a], next[b]) else {
                    continue;
                };
                let (ia, ib) = (&group[a].0, &group[b].0);
                if na.1 != nb.1 || order.get(ia.as_str()) > order.get(ib.as_str()) {
                    continue;
                }
                *pairs += 1;
                if nb.0 < na.0 {
                    v.push(format!(
                        "{what} connection {conn}: {ib} resent before {ia} on connection {}",
                        na.1
                    ));
                }
            }
        }
    };
    for (conn, group) in &windows {
        check_group("lost with", *conn, group);
    }
    for (conn, group) in &drain_nacked {
        check_group("drain-NACKed on", *conn, group);
    }

    // Connect attempts of each slot spaced by the reconnect backoff. `low`
    // is a lower bound of the slot's failure count, raised only when the
    // record proves the engine counted a failure.
    for slot in 0..plan.connections {
        let attempts: Vec<&mem::Attempt> = run.connects.iter().filter(|a| a.slot == slot).collect();
        let mut low = 0u32;
        for (k, a) in attempts.iter().enumerate() {
            let Some(next) = attempts.get(k + 1) else {
                break;
            };
            let earliest = match a.conn {
                None => {
                    fig.refused_or_silent += 1;
                    low += 1;
                    Some((a.end, low))
                }
                // A drained connection stops serving its slot: the engine
                // counts it as a failure when it drained soon after coming
                // up and clears the count otherwise, so nothing below the
                // count is known any more.
                Some(n) if drained.contains(&n) => {
                    low = 0;
                    None
                }
                Some(n) => match killed.get(&n) {
                    // Certainly short-lived: the engine saw it up after
                    // `end` and lost before the next attempt began.
                    Some(&kill)
                        if next.start.saturating_duration_since(a.end) < plan.stable_after =>
                    {
                        let before = low;
                        low += 1;
                        (before > 0).then_some((kill, before))
                    }
                    Some(_) => {
                        low = 0;
                        None
                    }
                    None => None,
                },
            };
            if let Some((from, failures)) = earliest {
                fig.reconnect_gaps += 1;
                let min = plan.reconnect.nominal(failures);
                let gap = next.start.saturating_duration_since(from);
                if gap < min {
                    v.push(format!(
                        "slot {slot}: connect attempt {} {gap:?} after failure {failures} \
                         (reconnect backoff nominal {min:?})",
                        k + 2
                    ));
                }
            }
        }
    }

    // The poison message: bounded writes, its own outcome, nobody else's.
    if let Some(p) = &run.poison {
        let writes = run.written.iter().filter(|w| w.1 == *p).count();
        fig.poison_writes += writes;
        fig.poisoned += 1;
        if writes > plan.max_losses as usize {
            v.push(format!(
                "poison {p} written {writes} times > max_losses {}",
                plan.max_losses
            ));
        }
        if let Some(got) = outcomes.get(p) {
            let ok = got.iter().all(|o| {
                o == "left at shutdown"
                    || o.starts_with("returned: client stopped")
                    || *o
                        == format!(
                            "returned: {}",
                            ReturnReason::ConnectionsLost(plan.max_losses)
                        )
            });
            if !ok {
                v.push(format!("poison {p}: {got:?}"));
            }
        }
        if plan.max_losses > 2 {
            for ev in &run.events {
                if let ClientEvent::Returned {
                    message,
                    reason: ReturnReason::ConnectionsLost(n),
                } = ev
                {
                    if message.id() != p {
                        v.push(format!(
                            "{} returned after {n} lost connections",
                            message.id()
                        ));
                    }
                }
            }
        }
    }

    // Shutdown on time.
    if let Some(over) = run.took.checked_sub(plan.shutdown) {
        fig.to_deadline += 1;
        if over > fig.max_overrun {
            fig.max_overrun = over;
            fig.max_overrun_seed = run.seed;
        }
        if over > SHUTDOWN_MARGIN {
            v.push(format!(
                "shutdown({:?}) took {:?} (margin {SHUTDOWN_MARGIN:?})",
                plan.shutdown, run.took
            ));
        }
    }

    // Queue plus windows within the capacity plus the windows.
    let bound = (plan.queue_capacity + run.max_open * plan.max_pending) as u64;
    if run.peak_held > bound {
        v.push(format!(
            "{} queued and in flight > queue_capacity {} + {} open connections x {}",
            run.peak_held, plan.queue_capacity, run.max_open, plan.max_pending
        ));
    }

    // Ordered groups: each member first written after the last write of the
    // one before it. One that never reached the server (its connection died
    // first) may be followed only once it has its outcome.
    for members in run.groups.values() {
        for pair in members.windows(2) {
            let first = |id: &str| run.written.iter().position(|w| w.1 == id);
            let last = |id: &str| run.written.iter().rposition(|w| w.1 == id);
            match (last(&pair[0]), first(&pair[1])) {
                (Some(prev), Some(next)) if next < prev => {
                    v.push(format!("{} written before {} was done", pair[1], pair[0]))
                }
                (None, Some(_)) => {
                    let got = outcomes.get(&pair[0]);
                    if got.is_none_or(|o| o.iter().any(|o| o == "left at shutdown")) {
                        v.push(format!("{} written, {} never: {got:?}", pair[1], pair[0]));
                    }
                }
                _ => {}
            }
        }
    }
    v
}

#[test]
fn whole_client_fault_schedules() {
    let started = Instant::now();
    let seeds = super::seeds("WHOLE_CLIENT", 40, 0xC1_0000);
    let mut fig = Figures::default();
    let mut violations = 0;
    for &seed in &seeds {
        let found = match panic::catch_unwind(AssertUnwindSafe(|| check(&schedule(seed), &mut fig)))
        {
            Ok(found) => found,
            Err(e) => {
                vec![format!("panicked: {}", super::panic_text(&*e))]
            }
        };
        if !found.is_empty() {
            violations += found.len();
            eprintln!(
                "seed {seed} (replay: WHOLE_CLIENT_SEED={seed} cargo test --all-features \
                 --test simulation whole_client): {:?}",
                Plan::new(&mut Rng::new(seed))
            );
            for line in found.iter().take(20) {
                eprintln!("    {line}");
            }
        }
    }
    let mut taken: Vec<_> = fig.taken.iter().collect();
    taken.sort();
    println!(
        "whole-client: {:?} in all; {} writes, {} connections killed, {} connect attempts \
         failed, events taken {taken:?}; compared: {} resend pairs, {} retry gaps, {} reconnect \
         gaps, {} poison writes in {} schedules; {} schedules fatal; {} shutdowns ran to their \
         deadline, at most {:?} past it (seed {}); last write {:?} past it (margin {SHUTDOWN_MARGIN:?})",
        started.elapsed(),
        fig.writes,
        fig.kills,
        fig.refused_or_silent,
        fig.resend_pairs,
        fig.retry_gaps,
        fig.reconnect_gaps,
        fig.poison_writes,
        fig.poisoned,
        fig.fatal,
        fig.to_deadline,
        fig.max_overrun,
        fig.max_overrun_seed,
        fig.max_late_write,
    );
    println!(
        "whole-client schedules: {}, invariant violations: {violations}",
        seeds.len()
    );
    assert_eq!(violations, 0, "see the seeds above");
}
