//! Seeded fault simulation of the delivery engine, on simulated time.
//!
//! Each schedule builds an [`Engine`] with random settings and drives it
//! against a simulated CCS through a random fault schedule: drops at any
//! moment, CONNECTION_DRAINING (control message and NACK), SERVICE_UNAVAILABLE,
//! INTERNAL_SERVER_ERROR and unknown NACK codes, rate limits, final NACKs,
//! stanza errors, duplicate and unknown acks, slow acks, a poison message,
//! outages (refused and silent connects), an authentication failure, writes
//! cut mid-stanza (CCS got the stanzas before the cut, never answered),
//! upstream messages CCS delivers again (after a lost connection, a lost ack,
//! or twice in a row), the application sending throughout (in half of the
//! schedules spreading its messages over a few ordered groups, some left
//! ungrouped) and shutting down at a random moment with a random deadline.
//!
//! Checked during and after every schedule:
//! - every accepted message gets exactly one final outcome (an event, or a
//!   place in what shutdown returns); no outcome for an unknown id;
//! - never more than `max_pending` in flight on one connection, as the engine
//!   and as the simulated server count;
//! - one batch is written in acceptance order, and messages coming back from
//!   a lost connection or a drain NACK reach the next connection in their
//!   original order;
//! - no SERVICE_UNAVAILABLE or INTERNAL_SERVER_ERROR retry is written before
//!   the retry backoff's nominal delay (1 s for the first by default);
//! - connect attempts of a slot are spaced by the reconnect backoff's nominal
//!   delay, whatever the application does;
//! - a poison message (every connection it is written on dies) is written at
//!   most `max_losses` times and returned as `ConnectionsLost`, while every
//!   other message is delivered;
//! - after the shutdown deadline nothing is written and no connect starts
//!   without the deadline; shortly after it the engine is done;
//! - queue plus retry schedule plus held group members never exceed
//!   `queue_capacity` (plus the windows);
//! - a retryable NACK code is never reported as a rejection; at most one
//!   `Fatal`;
//! - ordered groups: no member is written while an earlier-accepted member
//!   has no outcome, and members are first written in acceptance order;
//! - upstream: every message acked for the application reached it; with
//!   manual acks, nothing is acked for the application whose own ack never
//!   reached CCS, and `Client::ack`'s answer (written or gone) matches what
//!   was written.
//!
//! `SIM_SCHEDULES=N` runs N schedules (default 10,000); `SIM_SEED=S` replays
//! one schedule. A failure (a violated invariant or a panic) prints its seed;
//! the last line is `simulated schedules: N, invariant violations: V`.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use fcm_xmpp::client::engine::{AckState, ConnId, Engine, SlotStep};
use fcm_xmpp::client::{AckMode, Backoff, ClientConfig, ClientEvent, Rejection, ReturnReason};
use fcm_xmpp::xml::Element;
use fcm_xmpp::{Config, Control, ControlKind, Error, Event, Message, NackCode, Phase, RetryClass};

#[path = "common/rng.rs"]
mod rng;
#[path = "simulation/whole_client.rs"]
mod whole_client;

use rng::Rng;
#[path = "simulation/wire.rs"]
mod wire;

/// The fault mix of one schedule.
#[derive(Debug, Clone)]
struct Faults {
    /// Mean time between drops of a connection (None: no drops).
    drop_every: Option<Duration>,
    drain_every: Option<Duration>,
    /// One in N answers is each of these.
    transient_nack: u64,
    final_nack: u64,
    rate_nack: u64,
    drain_nack: u64,
    stanza_error: u64,
    duplicate_ack: u64,
    unknown_ack: u64,
    /// One in N messages is never answered.
    silent: u64,
    slow_ack: u64,
    /// One in N connect attempts fails; silent ones take the whole deadline.
    connect_fail: u64,
    connect_silent: u64,
    auth_failure: bool,
    poison: bool,
    upstream_every: Option<Duration>,
    /// One in N upstream messages is delivered twice; one in N upstream acks
    /// is lost on the server's side (the message comes again later).
    upstream_twice: u64,
    ack_lost: u64,
    /// One in N connection steps that write something fail (the connection
    /// is lost and nothing of that step reached the server).
    write_fail: u64,
}

impl Faults {
    fn random(rng: &mut Rng) -> Self {
        let off = u64::MAX;
        let mut pick = |n: u64| {
            if rng.chance(3) {
                off
            } else {
                n + rng.below(n * 4)
            }
        };
        let f = Faults {
            drop_every: None,
            drain_every: None,
            transient_nack: pick(6),
            final_nack: pick(20),
            rate_nack: pick(20),
            drain_nack: pick(40),
            stanza_error: pick(40),
            duplicate_ack: pick(20),
            unknown_ack: pick(30),
            silent: pick(200),
            slow_ack: pick(10),
            connect_fail: pick(3),
            connect_silent: pick(6),
            auth_failure: false,
            poison: false,
            upstream_every: None,
            upstream_twice: pick(10),
            ack_lost: pick(10),
            write_fail: pick(30),
        };
        Faults {
            drop_every: (!rng.chance(3)).then(|| rng.ms(300, 20_000)),
            drain_every: rng.chance(2).then(|| rng.ms(1_000, 20_000)),
            auth_failure: rng.chance(40),
            poison: rng.chance(8),
            upstream_every: rng.chance(2).then(|| rng.ms(50, 1000)),
            ..f
        }
    }

    /// Only the poison message: every other message must be delivered.
    fn poison_only() -> Self {
        Faults {
            drop_every: None,
            drain_every: None,
            transient_nack: u64::MAX,
            final_nack: u64::MAX,
            rate_nack: u64::MAX,
            drain_nack: u64::MAX,
            stanza_error: u64::MAX,
            duplicate_ack: u64::MAX,
            unknown_ack: u64::MAX,
            silent: u64::MAX,
            slow_ack: u64::MAX,
            connect_fail: u64::MAX,
            connect_silent: u64::MAX,
            auth_failure: false,
            poison: true,
            upstream_every: None,
            upstream_twice: u64::MAX,
            ack_lost: u64::MAX,
            write_fail: u64::MAX,
        }
    }
}

const POISON: &str = "poison";

/// The server's side of one connection.
struct ServerConn {
    slot: usize,
    up_at: Instant,
    /// Events on their way to the client: (arrival, event).
    to_client: VecDeque<(Instant, Event)>,
    /// Messages received and not answered yet (server view of the window).
    unanswered: Vec<String>,
    /// The server will drop the connection at this instant.
    kill_at: Option<Instant>,
    drain_at: Option<Instant>,
    draining: bool,
    close_at: Option<Instant>,
    /// Written messages in order: (time, id).
    writes: Vec<(Instant, String)>,
    /// Per batch of returning messages, the last acceptance seq written here.
    batch_last: HashMap<Why, u64>,
}

/// Why a message was queued last (for the order check).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Why {
    New,
    Backoff,
    /// Coming back from a lost or closed connection (`Lost`) or NACKed
    /// CONNECTION_DRAINING on one (`Drain`); the connection id.
    Lost(ConnId),
    /// The connection and the simulation round the NACK was handled in.
    Drain(ConnId, u64),
}

/// The server's view of one upstream message.
struct Up {
    on: Option<ConnId>,
    acked: bool,
}

#[derive(Default)]
struct Track {
    seq: u64,
    outcomes: u32,
    /// Non-final NACKs handled by the engine (its retry count).
    retries: u32,
    /// CONNECTION_DRAINING NACKs handled by the engine (not retries).
    drains: u32,
    /// The NACK code after which the rules say its retries are used up.
    exhausted_by: Option<NackCode>,
    /// The earliest time the next write may come.
    not_before: Option<Instant>,
    why: Option<Why>,
    writes: u32,
    delivered: bool,
    /// Its ordered group, if any.
    group: Option<String>,
    returned_lost: bool,
}

struct Sim {
    rng: Rng,
    /// Accepted messages without an outcome yet, as the application counts.
    open: usize,
    faults: Faults,
    cfg: ClientConfig,
    engine: Engine,
    now: Instant,
    start: Instant,
    conns: BTreeMap<ConnId, ServerConn>,
    /// Slot -> (completes at, result ok?, begun after shutdown was asked for?).
    connecting: HashMap<usize, (Instant, bool, bool)>,
    slot_wake: HashMap<usize, Instant>,
    conn_wake: HashMap<ConnId, Instant>,
    /// Slot -> consecutive failures as the rules count them; earliest next attempt.
    slot_failures: HashMap<usize, u32>,
    slot_not_before: HashMap<usize, Instant>,
    msgs: HashMap<String, Track>,
    next_msg: u64,
    app_next: Instant,
    app_stop: Instant,
    app_gap: Duration,
    shutdown_at: Instant,
    deadline: Option<Instant>,
    manual: VecDeque<(Instant, fcm_xmpp::client::AckHandle)>,
    upstream_next: Option<Instant>,
    upstream_n: u64,
    /// The server's upstream messages, by `(from, message_id)`: the connection
    /// each is out on (None: waiting for one) and whether CCS has its ack.
    ups: HashMap<(String, String), Up>,
    /// Unacked upstream messages whose connection ended: CCS delivers them
    /// again on the next connection, in this order.
    redeliver: VecDeque<(String, String)>,
    /// Upstream messages the application was given at least once.
    app_seen: std::collections::HashSet<(String, String)>,
    /// Manual acks the application made (`manual_ack` said yes): key and
    /// the connection of its handle.
    app_acked: std::collections::HashSet<((String, String), ConnId)>,
    /// Upstream messages whose ack from the application reached CCS, and
    /// on which connection.
    app_ack_written: std::collections::HashSet<(String, String)>,
    /// Per connection, the manual-ack tickets written so far.
    tickets_written: HashMap<ConnId, u64>,
    /// When the application looks whether its manual ack was written:
    /// (at, key, connection, ticket).
    ack_checks: VecDeque<(Instant, (String, String), ConnId, u64)>,
    fatal_seen: bool,
    poison_only: bool,
    round: u64,
    violations: Vec<String>,
    max_pending: usize,
    /// How many ordered groups the application spreads messages over (0: none).
    groups: u64,
    /// Per group, the acceptance seqs of members without an outcome yet.
    group_open: HashMap<String, BTreeSet<u64>>,
    /// Per group, the seq of the latest member written for the first time.
    group_first: HashMap<String, u64>,
}

impl Sim {
    fn new(seed: u64, poison_only: bool) -> Sim {
        let mut rng = Rng::new(seed);
        let faults = if poison_only {
            Faults::poison_only()
        } else {
            Faults::random(&mut rng)
        };
        let max_pending = match rng.below(4) {
            0 => 1,
            1 => 100,
            _ => 1 + rng.below(10) as usize,
        };
        let connection = Config::new("123456789012", "k").max_pending(max_pending);
        let cfg = ClientConfig::new(connection)
            .connections(1 + rng.below(3) as usize)
            .queue_capacity(1 + rng.below(300) as usize)
            .max_retries(rng.below(6) as u32)
            .retry_backoff(Backoff::new(
                Duration::from_secs(1),
                Duration::from_secs(1 + rng.below(30)),
            ))
            .reconnect_backoff(Backoff::new(
                Duration::from_millis(100 + rng.below(2000)),
                Duration::from_secs(5 + rng.below(30)),
            ))
            .rate_limited_retry(rng.chance(3).then(|| rng.ms(500, 5000)))
            .ack_mode(if rng.chance(3) {
                AckMode::Manual
            } else {
                AckMode::Auto
            })
            .dedup_window(rng.below(3) as usize * 50)
            .drain_timeout(rng.ms(2_000, 60_000));
        let start = Instant::now();
        let engine = Engine::new(&cfg, seed, start);
        let app_stop = start + rng.ms(500, 30_000);
        // 20 to 400 messages, spread over the sending period.
        let count = 20 + rng.below(380);
        let app_gap = (app_stop - start) / count as u32;
        // Poison-only schedules give every other message time to get through.
        let shutdown_at = app_stop
            + if poison_only {
                Duration::from_secs(400)
            } else {
                rng.ms(0, 60_000)
            };
        let upstream_next = faults.upstream_every.map(|_| start);
        // Half of the schedules spread messages over a few ordered groups.
        let groups = if rng.chance(2) { 1 + rng.below(4) } else { 0 };
        Sim {
            rng,
            open: 0,
            faults,
            cfg,
            engine,
            now: start,
            start,
            conns: BTreeMap::new(),
            connecting: HashMap::new(),
            slot_wake: HashMap::new(),
            conn_wake: HashMap::new(),
            slot_failures: HashMap::new(),
            slot_not_before: HashMap::new(),
            msgs: HashMap::new(),
            next_msg: 0,
            app_next: start,
            app_stop,
            app_gap,
            shutdown_at,
            deadline: None,
            manual: VecDeque::new(),
            upstream_next,
            upstream_n: 0,
            ups: HashMap::new(),
            redeliver: VecDeque::new(),
            app_seen: Default::default(),
            app_acked: Default::default(),
            app_ack_written: Default::default(),
            tickets_written: HashMap::new(),
            ack_checks: VecDeque::new(),
            fatal_seen: false,
            poison_only,
            round: 0,
            violations: Vec::new(),
            max_pending,
            groups,
            group_open: HashMap::new(),
            group_first: HashMap::new(),
        }
    }

    fn violation(&mut self, what: String) {
        if self.violations.len() < 10 {
            let t = self.now.duration_since(self.start);
            self.violations.push(format!("t={t:?}: {what}"));
        }
    }

    fn run(&mut self) {
        let limit = self.start + Duration::from_secs(900);
        loop {
            self.round += 1;
            self.app();
            self.server();
            self.slots();
            self.drive_conns();
            self.events();
            self.check_held();
            if self.now >= self.shutdown_at && self.deadline.is_none() {
                let d = self.now + self.rng.ms(0, 20_000);
                self.deadline = Some(d);
                self.engine.shutdown(d);
            }
            if self.engine.is_done() && (self.deadline.is_some() || self.engine.is_fatal()) {
                break;
            }
            if let Some(d) = self.deadline {
                // The worker stops waiting for its threads here and finishes
                // the engine; only a connect attempt begun before shutdown
                // was asked for may still be running (it cannot know the
                // deadline; its thread ends on its own).
                if self.now >= d + Duration::from_millis(200) {
                    let stuck = self
                        .connecting
                        .values()
                        .any(|(_, _, after_shutdown)| *after_shutdown);
                    if !self.conns.is_empty() || stuck {
                        self.violation(format!(
                            "not done {:?} after the shutdown deadline: {} connections open",
                            self.now - d,
                            self.conns.len()
                        ));
                    }
                    break;
                }
            }
            if self.now >= limit {
                self.violation("simulation did not finish".into());
                break;
            }
            self.advance();
        }
        let left = self.engine.finish();
        self.events();
        for m in left {
            self.outcome(m.id(), "left");
        }
        self.check_end();
    }

    fn advance(&mut self) {
        let mut next: Option<Instant> = None;
        let mut consider = |t: Instant| {
            next = Some(next.map_or(t, |n: Instant| n.min(t)));
        };
        if self.now < self.app_stop && self.engine.is_accepting() {
            consider(self.app_next);
        }
        if let Some(t) = self.upstream_next {
            consider(t);
        }
        for c in self.conns.values() {
            if let Some((t, _)) = c.to_client.front() {
                consider(*t);
            }
            for t in [c.kill_at, c.drain_at, c.close_at].into_iter().flatten() {
                consider(t);
            }
        }
        for (t, _, _) in self.connecting.values() {
            consider(*t);
        }
        for t in self.slot_wake.values().chain(self.conn_wake.values()) {
            consider(*t);
        }
        if let Some((t, _)) = self.manual.front() {
            consider(*t);
        }
        if let Some((t, ..)) = self.ack_checks.front() {
            consider(*t);
        }
        if self.deadline.is_none() {
            consider(self.shutdown_at);
        } else if let Some(d) = self.deadline {
            consider(d);
        }
        let floor = self.now + Duration::from_micros(100);
        self.now = next.unwrap_or(floor).max(floor);
    }

    // ----- the application -----

    fn app(&mut self) {
        while self.now < self.app_stop && self.now >= self.app_next && self.engine.is_accepting() {
            let id = if self.faults.poison && self.next_msg == 3 {
                POISON.to_string()
            } else {
                format!("m{}", self.next_msg)
            };
            // Some messages of a grouped schedule stay ungrouped.
            let group = (self.groups > 0 && !self.rng.chance(3))
                .then(|| format!("grp-{}", self.rng.below(self.groups)));
            let mut msg = Message::to(format!("device-{}", self.next_msg % 7)).message_id(&id);
            if let Some(g) = &group {
                msg = msg.group(g.as_str());
            }
            match self.engine.accept(msg) {
                Ok(()) => {
                    let seq = self.next_msg;
                    self.next_msg += 1;
                    if let Some(g) = &group {
                        self.group_open.entry(g.clone()).or_default().insert(seq);
                    }
                    self.msgs.insert(
                        id,
                        Track {
                            seq,
                            group,
                            why: Some(Why::New),
                            ..Track::default()
                        },
                    );
                    // What the engine says it holds, and (independently of
                    // its own accounting) what was accepted and has no
                    // outcome yet: neither passes the queue plus the windows.
                    self.open += 1;
                    let owned = self.engine.owned();
                    let bound = self.cfg.queue_capacity
                        + self.max_pending * self.engine.peak_connections().max(1);
                    if owned > bound {
                        self.violation(format!("engine holds {owned} > {bound}"));
                    }
                    if self.open > bound {
                        let open = self.open;
                        self.violation(format!(
                            "{open} accepted without an outcome > {bound} (queue + windows)"
                        ));
                    }
                    let gap = self.app_gap.as_millis() as u64;
                    self.app_next = self.now + self.rng.ms(0, 2 * gap);
                }
                Err((_, _)) => {
                    self.app_next = self.now + self.rng.ms(5, 200);
                    break;
                }
            }
        }
        while self.manual.front().is_some_and(|(t, _)| *t <= self.now) {
            let (_, h) = self.manual.pop_front().unwrap();
            if let Ok(ticket) = self.engine.manual_ack(&h) {
                let key = (h.from().to_string(), h.message_id().to_string());
                self.app_acked.insert((key.clone(), h.connection()));
                let at = self.now + self.rng.ms(0, 100);
                let i = self.ack_checks.partition_point(|x| x.0 <= at);
                self.ack_checks.insert(i, (at, key, h.connection(), ticket));
            }
        }
        self.check_acks();
    }

    /// What `Client::ack` answers: written, or gone without being written.
    fn check_acks(&mut self) {
        let mut again = Vec::new();
        while self.ack_checks.front().is_some_and(|c| c.0 <= self.now) {
            let (_, key, conn, ticket) = self.ack_checks.pop_front().unwrap();
            let written = self
                .tickets_written
                .get(&conn)
                .is_some_and(|t| *t >= ticket);
            match self.engine.ack_state(conn, ticket) {
                AckState::Written if !written => {
                    self.violation(format!("ack of {key:?} reported written, it was not"));
                }
                AckState::Gone if written => {
                    self.violation(format!("ack of {key:?} reported gone, it was written"));
                }
                AckState::Queued if !self.conns.contains_key(&conn) => {
                    self.violation(format!("ack of {key:?} queued on a connection gone"));
                }
                AckState::Queued => {
                    again.push((self.now + Duration::from_millis(20), key, conn, ticket))
                }
                _ => {}
            }
        }
        for c in again {
            let at = self.ack_checks.partition_point(|x| x.0 <= c.0);
            self.ack_checks.insert(at, c);
        }
    }

    // ----- the simulated server -----

    fn server(&mut self) {
        let now = self.now;
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for id in ids {
            // Upstream from devices.
            let first = id == *self.conns.keys().next().unwrap();
            if first {
                // Those a lost connection left unacked come first, in order.
                while let Some(key) = self.redeliver.pop_front() {
                    self.send_upstream(id, key);
                }
            }
            if let (Some(t), Some(every)) = (self.upstream_next, self.faults.upstream_every) {
                if t <= now && first {
                    self.upstream_n += 1;
                    let key = (
                        format!("dev-{}", self.upstream_n % 5),
                        format!("up-{}", self.upstream_n),
                    );
                    self.send_upstream(id, key.clone());
                    if self.rng.chance(self.faults.upstream_twice) {
                        self.send_upstream(id, key);
                    }
                    self.upstream_next = Some(now + every);
                }
            }
            let c = self.conns.get_mut(&id).unwrap();
            if c.drain_at.is_some_and(|t| t <= now) && !c.draining {
                c.draining = true;
                c.drain_at = None;
                let ev = Event::Control(control_draining());
                c.to_client.push_back((now + Duration::from_millis(1), ev));
                c.close_at = Some(now + Duration::from_millis(500 + id % 3000));
            }
            // Deliver what is due, in order.
            while let Some(c) = self.conns.get_mut(&id) {
                if c.to_client.front().is_none_or(|(t, _)| *t > now) {
                    break;
                }
                let (_, ev) = c.to_client.pop_front().unwrap();
                if let Some(mid) = ev.settled_message_id() {
                    if let Some(i) = c.unanswered.iter().position(|m| m == mid) {
                        c.unanswered.remove(i);
                    }
                }
                self.deliver(id, ev);
            }
            let Some(c) = self.conns.get_mut(&id) else {
                continue;
            };
            let dead = [c.kill_at, c.close_at]
                .into_iter()
                .flatten()
                .any(|t| t <= now);
            if dead {
                let c = self.conns.remove(&id).unwrap();
                self.conn_wake.remove(&id);
                self.lost(id, c.slot, c.up_at, Error::Closed);
            }
        }
        if self.upstream_next.is_some_and(|t| t <= now) && self.conns.is_empty() {
            self.upstream_next = self.faults.upstream_every.map(|e| now + e);
        }
    }

    fn send_upstream(&mut self, conn: ConnId, key: (String, String)) {
        let at = self.now + Duration::from_millis(1);
        let c = self.conns.get_mut(&conn).unwrap();
        c.to_client
            .push_back((at, upstream(key.0.clone(), key.1.clone())));
        let up = self.ups.entry(key).or_insert(Up {
            on: None,
            acked: false,
        });
        up.on = Some(conn);
    }

    /// The acks `conn` wrote, as CCS reads them.
    fn acks_written(&mut self, conn: ConnId, acks: Vec<(String, String)>) {
        let manual = self.cfg.ack_mode == AckMode::Manual;
        for key in acks {
            let Some(up) = self.ups.get(&key) else {
                self.violation(format!("ack for {key:?}, never sent upstream"));
                continue;
            };
            if up.on != Some(conn) && !up.acked {
                let on = up.on;
                self.violation(format!("ack for {key:?} on {conn}, it is out on {on:?}"));
                continue;
            }
            if manual {
                // The client may ack on the application's behalf only what
                // the application itself acked before (a duplicate).
                if self.app_acked.contains(&(key.clone(), conn)) {
                    self.app_ack_written.insert(key.clone());
                } else if !self.app_ack_written.contains(&key) {
                    self.violation(format!(
                        "{key:?} acked for the application, whose own ack never reached CCS"
                    ));
                }
            }
            if !self.rng.chance(self.faults.ack_lost) {
                if let Some(up) = self.ups.get_mut(&key) {
                    up.acked = true;
                }
            }
        }
    }

    /// The connection ended: CCS delivers its unacked upstream messages again.
    fn upstream_orphaned(&mut self, conn: ConnId) {
        let mut keys: Vec<(String, String)> = self
            .ups
            .iter()
            .filter(|(_, u)| u.on == Some(conn) && !u.acked)
            .map(|(k, _)| k.clone())
            .collect();
        keys.sort_by_key(|(_, id)| id[3..].parse::<u64>().unwrap_or(0));
        for k in keys {
            if let Some(u) = self.ups.get_mut(&k) {
                u.on = None;
            }
            self.redeliver.push_back(k);
        }
    }

    fn deliver(&mut self, conn: ConnId, ev: Event) {
        // Track what the engine will do with the message this settles.
        if let Event::Nack(n) = &ev {
            let in_window = self.engine.in_flight_ids(conn).contains(&n.message_id);
            if in_window {
                let class = n.code.retry_class();
                let retried = match class {
                    RetryClass::Backoff | RetryClass::NewConnection => true,
                    RetryClass::RateLimited => self.cfg.rate_limited_retry.is_some(),
                    _ => false,
                };
                let max_retries = self.cfg.max_retries;
                let backoff = self.cfg.retry_backoff;
                let round = self.round;
                let now = self.now;
                if let Some(t) = self.msgs.get_mut(&n.message_id) {
                    // A drain NACK is no retry: bounded by its own count.
                    let left = if class == RetryClass::NewConnection {
                        t.drains < 16
                    } else {
                        t.retries < max_retries
                    };
                    let counted = retried && n.code != NackCode::BadAck;
                    t.exhausted_by = (counted && !left).then(|| n.code.clone());
                    if counted && left {
                        if class == RetryClass::NewConnection {
                            t.drains += 1;
                        } else {
                            t.retries += 1;
                        }
                        match class {
                            RetryClass::Backoff => {
                                t.not_before = Some(now + backoff.nominal(t.retries));
                                t.why = Some(Why::Backoff);
                            }
                            RetryClass::RateLimited => {
                                t.not_before = self.cfg.rate_limited_retry.map(|d| now + d);
                                t.why = Some(Why::Backoff);
                            }
                            _ => {
                                t.not_before = None;
                                t.why = Some(Why::Drain(conn, round));
                            }
                        }
                    }
                }
            }
        }
        let was_draining = self.engine.is_draining(conn);
        self.engine.on_event(conn, ev, self.now);
        if !was_draining && self.engine.is_draining(conn) {
            // It no longer serves its slot: the slot is replaced as if it ended.
            if let Some((slot, up_at)) = self.conns.get(&conn).map(|c| (c.slot, c.up_at)) {
                self.slot_replaced(slot, up_at);
            }
        }
    }

    /// The reconnect rule when a connection stops serving its slot (lost,
    /// or draining): one that served it for less than `stable_after` counts
    /// as a failed attempt (the first is replaced at once, the next ones
    /// back off); a healthy one clears the count.
    fn slot_replaced(&mut self, slot: usize, up_at: Instant) {
        let n = self.slot_failures.entry(slot).or_insert(0);
        if self.now.duration_since(up_at) >= self.cfg.stable_after {
            *n = 0;
            self.slot_not_before.remove(&slot);
        } else {
            let before = *n;
            *n += 1;
            if before == 0 {
                self.slot_not_before.remove(&slot);
            } else {
                let nominal = self.cfg.reconnect_backoff.nominal(before);
                self.slot_not_before.insert(slot, self.now + nominal);
            }
        }
    }

    fn lost(&mut self, conn: ConnId, slot: usize, up_at: Instant, error: Error) {
        self.mark_returning(conn);
        self.upstream_orphaned(conn);
        // A draining connection was replaced when it began to drain.
        if !self.engine.is_draining(conn) {
            self.slot_replaced(slot, up_at);
        }
        self.engine.lost(conn, error, self.now);
    }

    /// The messages in flight on `conn` go out again as one group.
    fn mark_returning(&mut self, conn: ConnId) {
        for id in self.engine.in_flight_ids(conn) {
            if let Some(t) = self.msgs.get_mut(&id) {
                t.why = Some(Why::Lost(conn));
                t.not_before = None;
            }
        }
    }

    fn answer(&mut self, conn: ConnId, id: &str) {
        let now = self.now;
        let f = self.faults.clone();
        let lat = if self.rng.chance(f.slow_ack) {
            self.rng.ms(500, 4_000)
        } else {
            self.rng.ms(1, 80)
        };
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.unanswered.push(id.to_string());
        if id == POISON {
            c.kill_at = Some(c.kill_at.map_or(now + Duration::from_millis(3), |k| {
                k.min(now + Duration::from_millis(3))
            }));
            return;
        }
        let rng = &mut self.rng;
        let nack = |code: NackCode| nack(id, code);
        let ev = if c.draining || rng.chance(f.drain_nack) {
            nack(NackCode::ConnectionDraining)
        } else if rng.chance(f.silent) {
            return;
        } else if rng.chance(f.transient_nack) {
            match rng.below(3) {
                0 => nack(NackCode::ServiceUnavailable),
                1 => nack(NackCode::InternalServerError),
                _ => nack(NackCode::Other("SOMETHING_NEW".into())),
            }
        } else if rng.chance(f.final_nack) {
            nack(NackCode::DeviceUnregistered)
        } else if rng.chance(f.rate_nack) {
            nack(NackCode::DeviceMessageRateExceeded)
        } else if rng.chance(f.stanza_error) {
            stanza_error(id)
        } else {
            ack(id)
        };
        c.to_client.push_back((now + lat, ev));
        if rng.chance(f.duplicate_ack) {
            c.to_client.push_back((now + lat, ack(id)));
        }
        if rng.chance(f.unknown_ack) {
            c.to_client.push_back((now + lat, ack("nobody")));
        }
        // Keep arrival order on the wire.
        let mut v: Vec<_> = c.to_client.drain(..).collect();
        v.sort_by_key(|(t, _)| *t);
        c.to_client = v.into();
    }

    // ----- slots and connections -----

    fn slots(&mut self) {
        let now = self.now;
        for slot in 0..self.cfg.connections {
            if let Some(&(at, ok, _)) = self.connecting.get(&slot) {
                if at > now {
                    continue;
                }
                self.connecting.remove(&slot);
                if ok {
                    let jid = format!("123456789012@gcm.googleapis.com/s{slot}");
                    let id = self.engine.connected(slot, &jid, now);
                    let f = self.faults.clone();
                    let kill_at = f
                        .drop_every
                        .map(|d| now + self.rng.ms(0, 2 * d.as_millis() as u64));
                    let drain_at = f
                        .drain_every
                        .map(|d| now + self.rng.ms(0, 2 * d.as_millis() as u64));
                    self.conns.insert(
                        id,
                        ServerConn {
                            slot,
                            up_at: now,
                            to_client: VecDeque::new(),
                            unanswered: Vec::new(),
                            kill_at,
                            drain_at,
                            draining: false,
                            close_at: None,
                            writes: Vec::new(),
                            batch_last: HashMap::new(),
                        },
                    );
                } else {
                    let err = if self.faults.auth_failure && self.rng.chance(3) {
                        Error::AuthFailed {
                            condition: "not-authorized".into(),
                        }
                    } else {
                        Error::Timeout(Phase::Connect)
                    };
                    let fatal = !err.is_retryable();
                    self.engine.connect_failed(slot, err, now);
                    if !fatal {
                        let n = self.slot_failures.entry(slot).or_insert(0);
                        *n += 1;
                        let nominal = self.cfg.reconnect_backoff.nominal(*n);
                        self.slot_not_before.insert(slot, now + nominal);
                    }
                }
            }
            if self.connecting.contains_key(&slot) {
                continue;
            }
            match self.engine.slot_step(slot, now) {
                SlotStep::Connect { deadline } => {
                    self.slot_wake.remove(&slot);
                    if let Some(nb) = self.slot_not_before.get(&slot) {
                        if now < *nb {
                            let early = *nb - now;
                            self.violation(format!("slot {slot} connects {early:?} early"));
                        }
                    }
                    if deadline != self.deadline {
                        self.violation("connect without the shutdown deadline".into());
                    }
                    let f = &self.faults;
                    let (fail, silent) = (f.connect_fail, f.connect_silent);
                    let (at, ok) = if self.faults.auth_failure && self.rng.chance(4) {
                        (now + self.rng.ms(5, 50), false)
                    } else if self.rng.chance(silent) {
                        // A silent server: the attempt runs into its deadline.
                        let t = now + Duration::from_secs(30);
                        (deadline.map_or(t, |d| d.min(t)), false)
                    } else if self.rng.chance(fail) {
                        (now + self.rng.ms(1, 20), false)
                    } else {
                        let t = now + self.rng.ms(5, 100);
                        (
                            deadline.map_or(t, |d| d.min(t)),
                            deadline.is_none_or(|d| t < d),
                        )
                    };
                    self.connecting.insert(slot, (at, ok, deadline.is_some()));
                }
                SlotStep::Wait(Some(t)) => {
                    self.slot_wake.insert(slot, t);
                }
                SlotStep::Wait(None) | SlotStep::Stop => {
                    self.slot_wake.remove(&slot);
                }
            }
        }
    }

    fn drive_conns(&mut self) {
        let now = self.now;
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for id in ids {
            // Outcomes the last inputs produced are seen before anything is
            // written: the group check needs them.
            self.events();
            let step = self.engine.conn_step(id, now);
            if step.close {
                // The acks handed out with the close are written first.
                if !step.acks.is_empty() {
                    self.acks_written(id, step.acks);
                }
                self.engine.acks_flushed(id, step.ack_ticket);
                self.tickets_written.insert(id, step.ack_ticket);
                // Events already on the wire arrive while we close.
                let c = self.conns.remove(&id).unwrap();
                self.conn_wake.remove(&id);
                let late: Vec<Event> = c
                    .to_client
                    .into_iter()
                    .filter(|(t, _)| *t <= now + Duration::from_millis(50))
                    .map(|(_, e)| e)
                    .collect();
                for ev in late {
                    self.deliver(id, ev);
                }
                self.mark_returning(id);
                self.upstream_orphaned(id);
                self.engine.closed(id, Vec::new(), now);
                continue;
            }
            let sent: Vec<String> = self
                .engine
                .outgoing(id)
                .map(|m| m.id().to_string())
                .collect();
            if sent.len() != step.send {
                self.violation(format!("step said {} but gave {}", step.send, sent.len()));
            }
            // The write fails: the connection drops mid-stanza. CCS got the
            // whole stanzas before the cut (never answered: the connection is
            // gone) and none of the acks; the rest never reached it.
            let mut sent = sent;
            let cut = (!sent.is_empty() || !step.acks.is_empty())
                && self.rng.chance(self.faults.write_fail);
            if cut {
                let reached = self.rng.below(sent.len() as u64 + 1) as usize;
                sent.truncate(reached);
            }
            if let Some(d) = self.deadline {
                if now >= d && !sent.is_empty() {
                    self.violation(format!(
                        "{} written after the shutdown deadline",
                        sent.len()
                    ));
                }
            }
            let mut last_seq = None;
            for mid in &sent {
                let Some(t) = self.msgs.get_mut(mid) else {
                    self.violation(format!("wrote unknown {mid}"));
                    continue;
                };
                let first_write = t.writes == 0;
                t.writes += 1;
                if let Some(g) = t.group.clone() {
                    let seq = t.seq;
                    self.check_group(mid, &g, seq, first_write);
                }
                let Some(t) = self.msgs.get_mut(mid) else {
                    continue;
                };
                if let Some(nb) = t.not_before {
                    if now < nb {
                        let early = nb - now;
                        let n = t.retries;
                        self.violations.push(format!(
                            "{mid}: retry {n} written {early:?} before its nominal backoff"
                        ));
                    }
                }
                if last_seq.is_some_and(|s| s > t.seq) {
                    self.violations.push(format!(
                        "{mid} written out of acceptance order in one batch"
                    ));
                }
                last_seq = Some(t.seq);
                t.not_before = None;
                let why = t.why.take();
                let seq = t.seq;
                let c = self.conns.get_mut(&id).unwrap();
                // Messages coming back from one connection reach the next in
                // their original order.
                if let Some(batch @ (Why::Lost(_) | Why::Drain(..))) = why {
                    if let Some(prev) = c.batch_last.insert(batch, seq) {
                        if prev > seq {
                            self.violations.push(format!(
                                "{mid} resent out of order ({batch:?}: {seq} after {prev})"
                            ));
                        }
                    }
                }
                c.writes.push((now, mid.clone()));
                if !cut {
                    self.answer(id, mid);
                }
            }
            if cut {
                let c = self.conns.remove(&id).unwrap();
                self.conn_wake.remove(&id);
                self.lost(id, c.slot, c.up_at, Error::Closed);
                continue;
            }
            let in_flight = self.engine.in_flight(id);
            if in_flight > self.max_pending {
                self.violation(format!("{in_flight} in flight > {}", self.max_pending));
            }
            if let Some(c) = self.conns.get(&id) {
                if c.unanswered.len() > self.max_pending {
                    let n = c.unanswered.len();
                    self.violation(format!("server sees {n} unanswered > {}", self.max_pending));
                }
            }
            match step.wake {
                Some(t) => {
                    self.conn_wake
                        .insert(id, t.max(now + Duration::from_micros(100)));
                }
                None => {
                    self.conn_wake.remove(&id);
                }
            }
            if !step.acks.is_empty() {
                self.acks_written(id, step.acks);
            }
            self.engine.acks_flushed(id, step.ack_ticket);
            self.tickets_written.insert(id, step.ack_ticket);
        }
    }

    // ----- what the application sees -----

    fn events(&mut self) {
        let mut evs = Vec::new();
        self.engine.take_events(&mut evs);
        for ev in evs {
            match ev {
                ClientEvent::Delivered { message, .. } => {
                    if let Some(t) = self.msgs.get_mut(message.id()) {
                        t.delivered = true;
                    }
                    self.outcome(message.id(), "delivered");
                }
                ClientEvent::Rejected { message, reason } => {
                    if matches!(reason, Rejection::Nack(ref n) if n.code.is_retryable()) {
                        self.violation(format!("{} rejected with a retryable code", message.id()));
                    }
                    self.outcome(message.id(), "rejected");
                }
                ClientEvent::Returned { message, reason } => {
                    if let ReturnReason::RetriesExhausted(code) = &reason {
                        let by = self
                            .msgs
                            .get(message.id())
                            .and_then(|t| t.exhausted_by.as_ref());
                        if by != Some(code) {
                            self.violation(format!(
                                "{} returned as retries exhausted ({code:?}) with retries left",
                                message.id()
                            ));
                        }
                    }
                    if matches!(reason, ReturnReason::ConnectionsLost(_)) {
                        if let Some(t) = self.msgs.get_mut(message.id()) {
                            t.returned_lost = true;
                        }
                    }
                    self.outcome(message.id(), "returned");
                }
                ClientEvent::Upstream { upstream, ack } => {
                    self.app_seen
                        .insert((upstream.from.clone(), upstream.message_id.clone()));
                    if let Some(h) = ack {
                        let t = self.now + self.rng.ms(0, 50);
                        self.manual.push_back((t, h));
                    }
                }
                ClientEvent::Fatal { .. } => {
                    if self.fatal_seen {
                        self.violation("two Fatal events".into());
                    }
                    self.fatal_seen = true;
                }
                _ => {}
            }
        }
    }

    /// Exactly the members of each group after its earliest one without an
    /// outcome are held: none stalls behind a head that settled, none is
    /// released early.
    fn check_held(&mut self) {
        let expected: usize = self
            .group_open
            .values()
            .map(|open| open.len().saturating_sub(1))
            .sum();
        let held = self.engine.metrics().held as usize;
        if held != expected {
            self.violation(format!("{held} group members held, expected {expected}"));
        }
    }

    /// `mid` of group `g` is being written: every member accepted before it
    /// has its outcome, and members are first written in acceptance order.
    fn check_group(&mut self, mid: &str, g: &str, seq: u64, first_write: bool) {
        let earlier = self
            .group_open
            .get(g)
            .and_then(|open| open.first().copied())
            .filter(|first| *first < seq);
        if let Some(first) = earlier {
            self.violation(format!(
                "{mid} (group {g}) written while m{first} of its group has no outcome"
            ));
        }
        if first_write {
            let last = self.group_first.insert(g.to_string(), seq);
            if let Some(last) = last.filter(|l| *l > seq) {
                self.violation(format!(
                    "{mid} (group {g}) first written after a later member (m{last})"
                ));
            }
        }
    }

    fn outcome(&mut self, id: &str, _what: &str) {
        match self.msgs.get_mut(id) {
            Some(t) => {
                if let Some(g) = &t.group {
                    if let Some(open) = self.group_open.get_mut(g) {
                        open.remove(&t.seq);
                    }
                }
                t.outcomes += 1;
                if t.outcomes == 1 {
                    self.open -= 1;
                }
                if t.outcomes > 1 {
                    let n = t.outcomes;
                    self.violation(format!("{id} has {n} outcomes"));
                }
            }
            None => self.violation(format!("outcome for unknown {id}")),
        }
    }

    fn check_end(&mut self) {
        let mut unseen: Vec<&(String, String)> = self
            .ups
            .iter()
            .filter(|(k, u)| u.acked && !self.app_seen.contains(*k))
            .map(|(k, _)| k)
            .collect();
        unseen.sort();
        if let Some(first) = unseen.first() {
            let n = unseen.len();
            let what = format!("{n} upstream messages acked, never given to the app: {first:?}");
            self.violation(what);
        }
        let mut missing = Vec::new();
        for (id, t) in &self.msgs {
            if t.outcomes == 0 {
                missing.push(id.clone());
            }
        }
        missing.sort();
        if !missing.is_empty() {
            let n = missing.len();
            self.violation(format!(
                "{n} messages without an outcome: {:?}",
                &missing[..n.min(5)]
            ));
        }
        if self.faults.poison {
            if let Some((writes, outcomes, returned_lost)) = self
                .msgs
                .get(POISON)
                .map(|p| (p.writes, p.outcomes, p.returned_lost))
            {
                let max = self.cfg.max_losses;
                if writes > max {
                    let w = writes;
                    self.violation(format!(
                        "the poison message was written {w} times (> {max})"
                    ));
                }
                if self.poison_only && !self.fatal_seen {
                    if outcomes == 1 && !returned_lost && writes > 0 {
                        self.violation(
                            "the poison message was not returned as ConnectionsLost".into(),
                        );
                    }
                    let not_delivered: Vec<String> = self
                        .msgs
                        .iter()
                        .filter(|(id, t)| id.as_str() != POISON && !t.delivered)
                        .map(|(id, _)| id.clone())
                        .collect();
                    if !not_delivered.is_empty() {
                        let n = not_delivered.len();
                        self.violations.push(format!(
                            "{n} innocent messages not delivered beside the poison"
                        ));
                    }
                }
            }
        }
    }
}

fn control_draining() -> Control {
    match Event::from_json(r#"{"message_type":"control","control_type":"CONNECTION_DRAINING"}"#) {
        Ok(Event::Control(c)) if c.kind == ControlKind::ConnectionDraining => c,
        other => panic!("{other:?}"),
    }
}

thread_local! {
    // Parsed once: the simulation only changes the public fields.
    static TEMPLATES: (Event, Event, Event) = (
        Event::from_json(r#"{"message_type":"ack","message_id":"x","from":"d"}"#).unwrap(),
        Event::from_json(r#"{"message_type":"nack","message_id":"x","from":"d","error":"BAD_REGISTRATION"}"#).unwrap(),
        Event::from_json(r#"{"from":"dev","category":"app","message_id":"x","data":{}}"#).unwrap(),
    );
}

fn ack(id: &str) -> Event {
    let mut ev = TEMPLATES.with(|t| t.0.clone());
    if let Event::Ack(a) = &mut ev {
        a.message_id = id.to_string();
    }
    ev
}

fn nack(id: &str, code: NackCode) -> Event {
    let mut ev = TEMPLATES.with(|t| t.1.clone());
    if let Event::Nack(n) = &mut ev {
        n.message_id = id.to_string();
        n.code = code;
    }
    ev
}

fn upstream(from: String, id: String) -> Event {
    let mut ev = TEMPLATES.with(|t| t.2.clone());
    if let Event::Upstream(u) = &mut ev {
        u.from = from;
        u.message_id = id;
    }
    ev
}

fn stanza_error(id: &str) -> Event {
    let el = Element::new("message", "jabber:client")
        .with_attr("id", id)
        .with_attr("type", "error")
        .with_child(
            Element::new("error", "jabber:client")
                .with_attr("code", "400")
                .with_attr("type", "modify")
                .with_child(Element::new(
                    "bad-request",
                    "urn:ietf:params:xml:ns:xmpp-stanzas",
                )),
        );
    match Event::from_stanza(&el) {
        Ok(Some(ev @ Event::StanzaError(_))) => ev,
        other => panic!("{other:?}"),
    }
}

/// What a caught panic says (its message, when it is text).
fn panic_text(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("(not a string)")
}

/// The seeds a seeded simulation runs: the one in `$PREFIX_SEED` (a replay),
/// else `$PREFIX_SCHEDULES` (default `default`) seeds counted up from `base`.
fn seeds(prefix: &str, default: u64, base: u64) -> Vec<u64> {
    let var = |name: &str| {
        std::env::var(format!("{prefix}_{name}"))
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
    };
    match var("SEED") {
        Some(seed) => vec![seed],
        None => (0..var("SCHEDULES").unwrap_or(default))
            .map(|i| base + i)
            .collect(),
    }
}

#[test]
fn seeded_fault_schedules() {
    let started = Instant::now();
    let seeds = seeds("SIM", 10_000, 0x5EED_0000);
    let mut violations = 0;
    let mut failed = Vec::new();
    // Grouped schedules, grouped messages, and those written more than once.
    let (mut grouped, mut members, mut rewritten) = (0, 0, 0);
    for &seed in &seeds {
        let run = std::panic::catch_unwind(|| {
            let mut sim = Sim::new(seed, seed % 11 == 0);
            sim.run();
            sim
        });
        let sim = match run {
            Ok(sim) => sim,
            Err(panic) => {
                let what = panic_text(&*panic);
                violations += 1;
                eprintln!("seed {seed} (replay: SIM_SEED={seed} cargo test --test simulation): panicked: {what}");
                continue;
            }
        };
        grouped += u64::from(sim.groups > 0);
        for t in sim.msgs.values().filter(|t| t.group.is_some()) {
            members += 1;
            rewritten += u64::from(t.writes > 1);
        }
        if !sim.violations.is_empty() {
            violations += sim.violations.len();
            if failed.len() < 5 {
                failed.push((seed, sim.faults.clone(), sim.violations.clone()));
            }
        }
    }
    for (seed, faults, v) in &failed {
        eprintln!("seed {seed} (replay: SIM_SEED={seed} cargo test --test simulation): {faults:?}");
        for line in v {
            eprintln!("    {line}");
        }
    }
    println!(
        "{:?} simulated; {grouped} schedules with ordered groups, \
         {members} group members, {rewritten} of them written more than once",
        started.elapsed()
    );
    println!(
        "simulated schedules: {}, invariant violations: {violations}",
        seeds.len()
    );
    assert_eq!(violations, 0, "see the seeds above");
}

// ----- the defects the engine fixes, each pinned on its own -----

fn engine(cfg: ClientConfig) -> (Engine, Instant) {
    let t0 = Instant::now();
    (Engine::new(&cfg, 7, t0), t0)
}

fn config(max_pending: usize) -> ClientConfig {
    ClientConfig::new(Config::new("123456789012", "k").max_pending(max_pending))
}

/// Connects slot 0 at `now` and returns the connection.
fn up(e: &mut Engine, now: Instant) -> ConnId {
    assert!(matches!(e.slot_step(0, now), SlotStep::Connect { .. }));
    e.connected(0, "s@gcm.googleapis.com/r", now)
}

fn written(e: &mut Engine, conn: ConnId, now: Instant) -> Vec<String> {
    let step = e.conn_step(conn, now);
    e.outgoing(conn)
        .map(|m| m.id().to_string())
        .collect::<Vec<_>>()[..step.send]
        .to_vec()
}

fn msg(id: &str) -> Message {
    Message::to("device").message_id(id)
}

fn outcomes(e: &mut Engine) -> Vec<(String, String)> {
    let mut evs = Vec::new();
    e.take_events(&mut evs);
    evs.into_iter()
        .filter_map(|ev| match ev {
            ClientEvent::Delivered { message, .. } => {
                Some((message.id().to_string(), "delivered".into()))
            }
            ClientEvent::Rejected { message, reason } => {
                Some((message.id().to_string(), format!("rejected:{reason}")))
            }
            ClientEvent::Returned { message, reason } => {
                Some((message.id().to_string(), format!("returned:{reason}")))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn drain_nacks_are_resent_in_their_original_order() {
    let (mut e, t0) = engine(config(100));
    let c1 = up(&mut e, t0);
    for i in 0..5 {
        e.accept(msg(&format!("m-{i}"))).unwrap();
    }
    assert_eq!(written(&mut e, c1, t0), ["m-0", "m-1", "m-2", "m-3", "m-4"]);
    for i in 0..5 {
        e.on_event(
            c1,
            nack(&format!("m-{i}"), NackCode::ConnectionDraining),
            t0,
        );
    }
    assert!(e.is_draining(c1));
    assert!(
        written(&mut e, c1, t0).is_empty(),
        "nothing new on a draining connection"
    );
    let c2 = up(&mut e, t0);
    assert_eq!(written(&mut e, c2, t0), ["m-0", "m-1", "m-2", "m-3", "m-4"]);
}

#[test]
fn a_drain_nack_does_not_use_up_a_retry() {
    let (mut e, t0) = engine(config(100).max_retries(0));
    let c1 = up(&mut e, t0);
    e.accept(msg("m-0")).unwrap();
    e.accept(msg("m-1")).unwrap();
    assert_eq!(written(&mut e, c1, t0), ["m-0", "m-1"]);
    e.on_event(c1, nack("m-0", NackCode::ConnectionDraining), t0);
    e.on_event(c1, nack("m-1", NackCode::ServiceUnavailable), t0);
    // No retry allowed: m-1 comes back at once; m-0 was only drained.
    let c2 = up(&mut e, t0);
    assert_eq!(written(&mut e, c2, t0), ["m-0"]);
    e.on_event(c2, ack("m-0"), t0);
    let got = outcomes(&mut e);
    assert_eq!(
        got,
        [
            (
                "m-1".to_string(),
                "returned:retries exhausted (SERVICE_UNAVAILABLE)".to_string()
            ),
            ("m-0".to_string(), "delivered".to_string())
        ]
    );
}

#[test]
fn a_message_drained_on_every_connection_is_returned_after_a_bound() {
    let (mut e, t0) = engine(config(100).max_retries(0));
    e.accept(msg("m")).unwrap();
    let mut writes = 0;
    let mut got = Vec::new();
    // Each connection serves 11 s (healthy, so it is replaced at once).
    for i in 0..100 {
        let t = t0 + Duration::from_secs(11 * i);
        let c = up(&mut e, t);
        let w = written(&mut e, c, t);
        if w.is_empty() {
            break;
        }
        assert_eq!(w, ["m"]);
        writes += 1;
        let drained = t + Duration::from_secs(11);
        e.on_event(c, nack("m", NackCode::ConnectionDraining), drained);
        got.extend(outcomes(&mut e));
        if !got.is_empty() {
            break;
        }
    }
    assert_eq!(
        got,
        [(
            "m".to_string(),
            "returned:retries exhausted (CONNECTION_DRAINING)".to_string()
        )]
    );
    // The first write and 16 resends (the documented bound), no more.
    assert_eq!(writes, 17);
}

#[test]
fn service_unavailable_is_retried_no_sooner_than_one_second() {
    let (mut e, t0) = engine(config(100));
    let c = up(&mut e, t0);
    e.accept(msg("m")).unwrap();
    assert_eq!(written(&mut e, c, t0), ["m"]);
    e.on_event(c, nack("m", NackCode::ServiceUnavailable), t0);
    let step = e.conn_step(c, t0);
    assert_eq!(step.send, 0);
    let wake = step.wake.expect("a retry timer");
    assert!(wake >= t0 + Duration::from_secs(1), "{:?}", wake - t0);
    assert!(written(&mut e, c, t0 + Duration::from_millis(999)).is_empty());
    assert_eq!(written(&mut e, c, wake), ["m"]);
}

#[test]
fn throttled_retries_count_against_the_queue_capacity() {
    let (mut e, t0) = engine(config(100).queue_capacity(10));
    let c = up(&mut e, t0);
    for i in 0..10 {
        e.accept(msg(&format!("m{i}"))).unwrap();
    }
    assert_eq!(written(&mut e, c, t0).len(), 10);
    // Ten more fit while those are in flight.
    for i in 10..20 {
        e.accept(msg(&format!("m{i}"))).unwrap();
    }
    assert_eq!(written(&mut e, c, t0).len(), 10);
    for i in 0..20 {
        e.on_event(c, nack(&format!("m{i}"), NackCode::ServiceUnavailable), t0);
    }
    // Twenty scheduled retries: no room until they leave.
    assert!(e.accept(msg("more")).is_err());
    assert_eq!(e.owned(), 20);
}

#[test]
fn a_poison_message_is_returned_and_the_others_delivered() {
    let (mut e, mut now) = engine(config(100).stable_after(Duration::from_secs(10)));
    for i in 0..20 {
        let id = if i == 5 {
            "poison".to_string()
        } else {
            format!("m{i}")
        };
        e.accept(msg(&id)).unwrap();
    }
    let mut poison_writes = 0;
    for _ in 0..200 {
        if let SlotStep::Connect { .. } = e.slot_step(0, now) {
            let c = e.connected(0, "j", now);
            let ids = written(&mut e, c, now);
            if ids.iter().any(|i| i == "poison") {
                poison_writes += 1;
                // Everything before it got its ack; then the server kills the stream.
                for id in ids.iter().take_while(|i| *i != "poison") {
                    e.on_event(c, ack(id), now);
                }
                e.lost(
                    c,
                    Error::StreamError {
                        condition: "invalid-xml".into(),
                        text: None,
                    },
                    now,
                );
            } else {
                for id in &ids {
                    e.on_event(c, ack(id), now);
                }
                if e.owned() == 0 {
                    break;
                }
                // Keep driving the same connection until it is idle.
                loop {
                    let more = written(&mut e, c, now);
                    if more.is_empty() {
                        break;
                    }
                    if more.iter().any(|i| i == "poison") {
                        poison_writes += 1;
                        e.lost(
                            c,
                            Error::StreamError {
                                condition: "invalid-xml".into(),
                                text: None,
                            },
                            now,
                        );
                        break;
                    }
                    for id in &more {
                        e.on_event(c, ack(id), now);
                    }
                }
                if e.owned() == 0 {
                    break;
                }
            }
        }
        now += Duration::from_millis(500);
    }
    let got = outcomes(&mut e);
    assert_eq!(got.len(), 20, "{got:?}");
    for (id, what) in &got {
        if id == "poison" {
            assert_eq!(what, "returned:in flight on 4 lost connections");
        } else {
            assert_eq!(what, "delivered", "{id}");
        }
    }
    assert_eq!(poison_writes, 4);
}

/// A reconnect backoff from 2 s; connections count as healthy after 10 s.
fn slow_reconnects() -> ClientConfig {
    config(100)
        .reconnect_backoff(Backoff::new(
            Duration::from_secs(2),
            Duration::from_secs(60),
        ))
        .stable_after(Duration::from_secs(10))
}

#[test]
fn a_short_lived_connection_counts_as_a_failed_attempt() {
    let (mut e, t0) = engine(slow_reconnects());
    let c = up(&mut e, t0);
    // The first drop is replaced at once, the second short-lived one waits.
    e.lost(c, Error::Closed, t0 + Duration::from_millis(50));
    let c = up(&mut e, t0 + Duration::from_millis(50));
    e.lost(c, Error::Closed, t0 + Duration::from_millis(100));
    // However much the application sends meanwhile, no attempt before 2 s.
    for i in 0..100 {
        let t = t0 + Duration::from_millis(100 + i * 19);
        let _ = e.accept(msg(&format!("m{i}")));
        assert!(
            matches!(e.slot_step(0, t), SlotStep::Wait(Some(_))),
            "attempt at {i}"
        );
    }
    // The nominal 2 s plus at most half of it in jitter.
    assert!(matches!(
        e.slot_step(0, t0 + Duration::from_millis(2099)),
        SlotStep::Wait(_)
    ));
    let t = t0 + Duration::from_millis(3101);
    assert!(matches!(e.slot_step(0, t), SlotStep::Connect { .. }));
    // A healthy connection is replaced at once.
    let c = e.connected(0, "j", t);
    e.lost(c, Error::Closed, t + Duration::from_secs(11));
    assert!(matches!(
        e.slot_step(0, t + Duration::from_secs(11)),
        SlotStep::Connect { .. }
    ));
}

#[test]
fn a_server_that_drains_every_new_connection_is_not_hammered() {
    // Draining connections stay open until the server closes them (or the
    // drain timeout): a server that drains each connection as soon as it is
    // up must not make the client open one after another without pause.
    let (mut e, t0) = engine(slow_reconnects());
    let c = up(&mut e, t0);
    e.on_event(c, draining_control(), t0 + Duration::from_millis(10));
    // The first drained connection is replaced at once.
    let c = up(&mut e, t0 + Duration::from_millis(10));
    e.on_event(c, draining_control(), t0 + Duration::from_millis(20));
    // The second, drained right after it came up, waits the reconnect
    // backoff, however much the application sends.
    for i in 0..50 {
        let t = t0 + Duration::from_millis(20 + i * 39);
        let _ = e.accept(msg(&format!("m{i}")));
        assert!(
            matches!(e.slot_step(0, t), SlotStep::Wait(Some(_))),
            "attempt at {t:?}"
        );
    }
    let mut evs = Vec::new();
    e.take_events(&mut evs);
    assert!(
        evs.iter()
            .any(|ev| matches!(ev, ClientEvent::Reconnecting { delay, .. } if *delay >= Duration::from_secs(2))),
        "{evs:?}"
    );
    let t = t0 + Duration::from_millis(3021);
    assert!(matches!(e.slot_step(0, t), SlotStep::Connect { .. }));
    // A connection that was healthy for a while is replaced at once when it drains.
    let c = e.connected(0, "j", t);
    e.on_event(c, draining_control(), t + Duration::from_secs(11));
    assert!(matches!(
        e.slot_step(0, t + Duration::from_secs(11)),
        SlotStep::Connect { .. }
    ));
}

#[test]
fn a_rate_limited_nack_at_close_is_final() {
    let (mut e, t0) = engine(config(100));
    let c = up(&mut e, t0);
    e.accept(msg("m")).unwrap();
    assert_eq!(written(&mut e, c, t0), ["m"]);
    e.shutdown(t0 + Duration::from_secs(1));
    let step = e.conn_step(c, t0 + Duration::from_secs(1));
    assert!(step.close);
    e.closed(
        c,
        vec![nack("m", NackCode::DeviceMessageRateExceeded)],
        t0 + Duration::from_secs(1),
    );
    assert_eq!(
        outcomes(&mut e),
        [(
            "m".to_string(),
            "rejected:DEVICE_MESSAGE_RATE_EXCEEDED".to_string()
        )]
    );
    assert!(e.finish().is_empty());
}

#[test]
fn nothing_is_written_after_the_shutdown_deadline() {
    let (mut e, t0) = engine(config(2));
    let c = up(&mut e, t0);
    for i in 0..5 {
        e.accept(msg(&format!("m{i}"))).unwrap();
    }
    assert_eq!(written(&mut e, c, t0), ["m0", "m1"]);
    let deadline = t0 + Duration::from_secs(1);
    e.shutdown(deadline);
    assert!(e.accept(msg("late")).is_err());
    e.on_event(c, ack("m0"), t0);
    assert_eq!(
        written(&mut e, c, t0),
        ["m2"],
        "before the deadline it keeps sending"
    );
    e.on_event(c, ack("m1"), deadline);
    let step = e.conn_step(c, deadline);
    assert!(step.close && step.send == 0);
    e.closed(c, Vec::new(), deadline);
    assert!(matches!(e.slot_step(0, deadline), SlotStep::Stop));
    let left: Vec<String> = e.finish().iter().map(|m| m.id().to_string()).collect();
    assert_eq!(left, ["m2", "m3", "m4"]);
}

#[test]
fn bad_ack_never_settles_a_downstream_message() {
    let (mut e, t0) = engine(config(100));
    let c = up(&mut e, t0);
    e.accept(msg("u-1")).unwrap();
    assert_eq!(written(&mut e, c, t0), ["u-1"]);
    e.on_event(c, nack("u-1", NackCode::BadAck), t0);
    assert_eq!(e.in_flight(c), 1);
    assert!(outcomes(&mut e).is_empty());
}

#[test]
fn huge_durations_saturate() {
    let cfg = config(100)
        .drain_timeout(Duration::MAX)
        .retry_backoff(Backoff::new(Duration::MAX, Duration::MAX))
        .rate_limited_retry(Some(Duration::MAX));
    let (mut e, t0) = engine(cfg);
    let c = up(&mut e, t0);
    e.accept(msg("m")).unwrap();
    written(&mut e, c, t0);
    e.on_event(c, nack("m", NackCode::ServiceUnavailable), t0);
    e.on_event(c, draining_control(), t0);
    let step = e.conn_step(c, t0);
    assert!(!step.close);
    // The retry and the drain timer are "never", not a panic.
    assert!(step
        .wake
        .is_some_and(|w| w > t0 + Duration::from_secs(86_400 * 365)));
}

fn draining_control() -> Event {
    Event::Control(control_draining())
}

// ----- ordered groups -----

fn grouped(id: &str, group: &str) -> Message {
    msg(id).group(group)
}

#[test]
fn group_order_holds_through_service_unavailable_retries() {
    let (mut e, t0) = engine(config(100));
    let c = up(&mut e, t0);
    e.accept(grouped("g-1", "g")).unwrap();
    e.accept(grouped("g-2", "g")).unwrap();
    e.accept(msg("u-1")).unwrap();
    e.accept(grouped("h-1", "h")).unwrap();
    // The head of each group and the ungrouped message; g-2 waits for g-1.
    assert_eq!(written(&mut e, c, t0), ["g-1", "u-1", "h-1"]);
    e.on_event(c, nack("g-1", NackCode::ServiceUnavailable), t0);
    e.on_event(c, ack("u-1"), t0);
    e.on_event(c, ack("h-1"), t0);
    // While g-1 waits for its retry, other traffic flows; g-2 does not.
    let t = t0 + Duration::from_millis(100);
    e.accept(msg("u-2")).unwrap();
    e.accept(grouped("h-2", "h")).unwrap();
    assert_eq!(written(&mut e, c, t), ["u-2", "h-2"]);
    let step = e.conn_step(c, t);
    assert_eq!(step.send, 0);
    let retry1 = step.wake.expect("a retry timer");
    // The first retry: nominal 1 s, jitter adds at most half.
    assert!(retry1 >= t0 + Duration::from_secs(1), "{:?}", retry1 - t0);
    assert!(
        retry1 <= t0 + Duration::from_millis(1500),
        "{:?}",
        retry1 - t0
    );
    assert!(written(&mut e, c, retry1 - Duration::from_millis(1)).is_empty());
    assert_eq!(written(&mut e, c, retry1), ["g-1"]);
    // NACKed again: the second retry waits at least 2 s; g-2 still waits.
    e.on_event(c, nack("g-1", NackCode::ServiceUnavailable), retry1);
    e.accept(msg("u-3")).unwrap();
    assert_eq!(written(&mut e, c, retry1), ["u-3"]);
    let retry2 = e.conn_step(c, retry1).wake.expect("a retry timer");
    assert!(
        retry2 >= retry1 + Duration::from_secs(2),
        "{:?}",
        retry2 - retry1
    );
    assert!(
        retry2 <= retry1 + Duration::from_secs(3),
        "{:?}",
        retry2 - retry1
    );
    assert!(written(&mut e, c, retry2 - Duration::from_millis(1)).is_empty());
    assert_eq!(written(&mut e, c, retry2), ["g-1"]);
    // Written is not enough: g-2 goes only once g-1 has its outcome.
    assert!(written(&mut e, c, retry2 + Duration::from_millis(5)).is_empty());
    let done = retry2 + Duration::from_millis(10);
    e.on_event(c, ack("g-1"), done);
    assert_eq!(written(&mut e, c, done), ["g-2"]);
    e.on_event(c, ack("g-2"), done);
    for id in ["u-2", "h-2", "u-3"] {
        e.on_event(c, ack(id), done);
    }
    let got: Vec<String> = outcomes(&mut e)
        .into_iter()
        .map(|(id, what)| format!("{id}:{what}"))
        .collect();
    assert_eq!(
        got,
        [
            "u-1:delivered",
            "h-1:delivered",
            "g-1:delivered",
            "g-2:delivered",
            "u-2:delivered",
            "h-2:delivered",
            "u-3:delivered"
        ]
    );
    assert_eq!(e.owned(), 0);
}

#[test]
fn a_group_head_lost_with_its_connection_is_resent_before_its_successor() {
    let (mut e, t0) = engine(config(100));
    let c1 = up(&mut e, t0);
    e.accept(grouped("g-1", "g")).unwrap();
    e.accept(grouped("g-2", "g")).unwrap();
    e.accept(msg("u-1")).unwrap();
    assert_eq!(written(&mut e, c1, t0), ["g-1", "u-1"]);
    e.lost(c1, Error::Closed, t0);
    let c2 = up(&mut e, t0);
    // The head comes back first; its successor still waits for its outcome.
    assert_eq!(written(&mut e, c2, t0), ["g-1", "u-1"]);
    e.on_event(c2, ack("u-1"), t0);
    assert!(written(&mut e, c2, t0).is_empty());
    e.on_event(c2, ack("g-1"), t0);
    assert_eq!(written(&mut e, c2, t0), ["g-2"]);
}

#[test]
fn a_group_head_returned_after_lost_connections_releases_the_next() {
    let (mut e, mut now) = engine(config(100).max_losses(2));
    e.accept(grouped("poison", "g")).unwrap();
    e.accept(grouped("g-2", "g")).unwrap();
    for _ in 0..2 {
        let c = up(&mut e, now);
        assert_eq!(written(&mut e, c, now), ["poison"]);
        e.lost(c, Error::Closed, now);
        now += Duration::from_secs(20);
    }
    assert_eq!(
        outcomes(&mut e),
        [(
            "poison".to_string(),
            "returned:in flight on 2 lost connections".to_string()
        )]
    );
    let c = up(&mut e, now);
    assert_eq!(written(&mut e, c, now), ["g-2"]);
}

#[test]
fn held_group_members_count_against_the_queue_capacity_and_come_back() {
    let (mut e, t0) = engine(config(100).queue_capacity(3));
    let c = up(&mut e, t0);
    e.accept(grouped("g-1", "g")).unwrap();
    assert_eq!(written(&mut e, c, t0), ["g-1"]);
    for id in ["g-2", "u-1", "g-3"] {
        e.accept(grouped(id, if id == "u-1" { "" } else { "g" }))
            .unwrap();
    }
    assert!(
        !e.has_room(),
        "two held and one queued fill a capacity of 3"
    );
    assert!(matches!(
        e.accept(msg("more")),
        Err((_, fcm_xmpp::client::SendErrorKind::Full))
    ));
    assert_eq!(e.metrics().queued, 3);
    assert_eq!(written(&mut e, c, t0), ["u-1"]);
    e.shutdown(t0 + Duration::from_secs(1));
    let left: Vec<String> = e.finish().iter().map(|m| m.id().to_string()).collect();
    assert_eq!(left, ["g-1", "g-2", "u-1", "g-3"], "acceptance order");
    assert_eq!(e.owned(), 0);
}

#[test]
fn a_fatal_error_returns_held_group_members_in_acceptance_order() {
    let (mut e, t0) = engine(config(100));
    let c = up(&mut e, t0);
    for (id, g) in [("g-1", "g"), ("g-2", "g"), ("u-1", ""), ("g-3", "g")] {
        e.accept(grouped(id, g)).unwrap();
    }
    assert_eq!(written(&mut e, c, t0), ["g-1", "u-1"]);
    e.on_event(c, ack("u-1"), t0);
    e.fatal(Error::AuthFailed {
        condition: "not-authorized".into(),
    });
    let got: Vec<String> = outcomes(&mut e).into_iter().map(|(id, _)| id).collect();
    assert_eq!(got, ["u-1", "g-2", "g-3"]);
    // The head in flight still gets its outcome, and releases nothing.
    e.on_event(c, ack("g-1"), t0);
    assert_eq!(
        outcomes(&mut e),
        [("g-1".to_string(), "delivered".to_string())]
    );
    assert_eq!(e.owned(), 0);
}
