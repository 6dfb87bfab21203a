//! An in-memory CCS for the whole worker `Client`: a [`Connector`] whose
//! [`Link`]s talk to a simulated server in this process (no sockets, no
//! TLS, no XML), scriptable per message and per connection.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use fcm_xmpp::client::{Connector, CutOff, Link};
use fcm_xmpp::{Error, Event, Message, NackCode, Phase};

/// What the server does with one downstream message.
#[derive(Debug, Clone)]
pub enum Answer {
    Ack,
    Nack(NackCode),
    /// No answer at all.
    Silent,
    /// Drop the connection instead of answering.
    Kill,
    /// The event this makes of the message id (e.g. a stanza error).
    Reply(fn(&str) -> Event),
    /// An ack this much later than the link's latency; later answers to
    /// other messages may overtake it.
    SlowAck(Duration),
    /// An ack, and the same ack again right after it.
    AckTwice,
}

/// What the server does with one connect attempt.
#[derive(Debug, Clone)]
pub enum Connect {
    /// Accepts and authenticates.
    Accept,
    /// Refused at once (connection refused).
    Refuse,
    /// Never answers: the attempt fails after this long (or at its deadline).
    Silent(Duration),
    /// Refuses the credentials (a fatal error).
    AuthFail,
}

type Rule = Box<dyn FnMut(&str, u64) -> Answer + Send>;
type ConnectRule = Box<dyn FnMut(usize, u64) -> Connect + Send>;

/// One connect attempt as the server saw it.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub slot: usize,
    pub start: Instant,
    /// When the connector returned.
    pub end: Instant,
    /// The connection number, if it succeeded.
    pub conn: Option<u64>,
}

/// What crossed a connection, in the order it happened (all connections).
#[derive(Debug, Clone)]
pub enum Wire {
    /// The client wrote this downstream message.
    Wrote { conn: u64, id: String, at: Instant },
    /// The client took this event (from a read, or from `close`).
    Took {
        conn: u64,
        event: Event,
        at: Instant,
    },
    /// The server dropped the connection.
    Killed { conn: u64, at: Instant },
    /// The client closed it.
    Closed { conn: u64, at: Instant },
}

/// Server state shared by every link.
pub struct State {
    /// Connect attempts so far, with their instants.
    pub attempts: Vec<Instant>,
    /// Every downstream message written: (connection number, id, instant).
    pub written: Vec<(u64, String, Instant)>,
    /// Acks the client wrote: (connection number, message id).
    pub acks: Vec<(u64, String)>,
    /// Most messages unanswered on one connection at once.
    pub max_unanswered: usize,
    /// Connect attempts fail while this is set.
    pub refuse: Option<Error>,
    /// Each connect attempt takes this long (a slow handshake).
    pub connect_delay: Duration,
    /// Connections made although the attempt's cut-off had passed.
    pub completed_after_cut: usize,
    /// Panic in `send_buffered` (a bug in a link).
    pub panic_on_send: bool,
    /// Fail every flush (the connection died) while set.
    pub fail_flush: bool,
    /// Every connect attempt, in order.
    pub connects: Vec<Attempt>,
    /// Everything that crossed any connection, in order.
    pub wire: Vec<Wire>,
    /// Links the client holds now, and the most it held at once.
    pub open: usize,
    pub max_open: usize,
    conns: u64,
    live: Vec<Arc<ConnState>>,
    rule: Option<Rule>,
    connect_rule: Option<ConnectRule>,
}

pub struct ConnState {
    pub n: u64,
    inbox: Mutex<Inbox>,
    ready: Condvar,
}

#[derive(Default)]
struct Inbox {
    events: VecDeque<(Instant, Event)>,
    dead: bool,
    unanswered: usize,
}

#[derive(Clone)]
pub struct MemCcs {
    pub state: Arc<Mutex<State>>,
    pub latency: Duration,
}

impl MemCcs {
    pub fn new(latency: Duration) -> Self {
        MemCcs {
            state: Arc::new(Mutex::new(State {
                attempts: Vec::new(),
                written: Vec::new(),
                acks: Vec::new(),
                max_unanswered: 0,
                refuse: None,
                connect_delay: Duration::ZERO,
                completed_after_cut: 0,
                panic_on_send: false,
                fail_flush: false,
                connects: Vec::new(),
                wire: Vec::new(),
                open: 0,
                max_open: 0,
                conns: 0,
                live: Vec::new(),
                rule: None,
                connect_rule: None,
            })),
            latency,
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How the server answers message `id` (its `k`-th write, from 0).
    pub fn rule(&self, rule: impl FnMut(&str, u64) -> Answer + Send + 'static) {
        self.lock().rule = Some(Box::new(rule));
    }

    /// How the server answers connect attempt number `k` (from 0, all
    /// slots) of pool slot `slot`; `refuse` and `connect_delay` still apply.
    pub fn connect_rule(&self, rule: impl FnMut(usize, u64) -> Connect + Send + 'static) {
        self.lock().connect_rule = Some(Box::new(rule));
    }

    /// Sends an event to every live connection (e.g. CONNECTION_DRAINING).
    pub fn broadcast(&self, ev: Event) {
        let live = self.lock().live.clone();
        for c in live {
            c.push(ev.clone(), Instant::now());
        }
    }

    /// Sends these events to every live connection at once: the client reads
    /// them in one batch.
    pub fn broadcast_all(&self, evs: &[Event]) {
        let live = self.lock().live.clone();
        let now = Instant::now();
        for c in live {
            let mut i = c.inbox.lock().unwrap();
            i.events.extend(evs.iter().map(|e| (now, e.clone())));
            c.ready.notify_all();
        }
    }

    /// Drops every live connection.
    pub fn drop_all(&self) {
        let mut st = self.lock();
        let live = std::mem::take(&mut st.live);
        let at = Instant::now();
        for c in live {
            if c.kill() {
                st.wire.push(Wire::Killed { conn: c.n, at });
            }
        }
    }
}

impl ConnState {
    fn push(&self, ev: Event, at: Instant) {
        let mut i = self.inbox.lock().unwrap();
        i.events.push_back((at, ev));
        self.ready.notify_all();
    }
    /// Marks the connection dead; true if it was alive.
    fn kill(&self) -> bool {
        let was = !std::mem::replace(&mut self.inbox.lock().unwrap().dead, true);
        self.ready.notify_all();
        was
    }
}

pub struct MemLink {
    ccs: MemCcs,
    conn: Arc<ConnState>,
    jid: String,
    out: Vec<Message>,
    acks: Vec<(String, String)>,
}

impl Connector for MemCcs {
    fn connect(&self, slot: usize, deadline: Option<Instant>) -> fcm_xmpp::Result<Box<dyn Link>> {
        let cut_off = CutOff::new();
        if let Some(d) = deadline {
            cut_off.set(d);
        }
        self.connect_until(slot, &cut_off)
    }

    /// A `connect_delay` (or a silent connect) is a handshake in progress:
    /// the cut-off ends it, and then no connection is made
    /// (`completed_after_cut` counts any).
    fn connect_until(&self, slot: usize, cut_off: &CutOff) -> fcm_xmpp::Result<Box<dyn Link>> {
        let start = Instant::now();
        let result = self.attempt(slot, start, cut_off);
        let mut st = self.lock();
        let conn = result.as_ref().ok().map(|l| l.conn.n);
        st.connects.push(Attempt {
            slot,
            start,
            end: Instant::now(),
            conn,
        });
        if conn.is_some() {
            st.open += 1;
            st.max_open = st.max_open.max(st.open);
        }
        result.map(|l| l as Box<dyn Link>)
    }
}

impl MemCcs {
    fn attempt(
        &self,
        slot: usize,
        start: Instant,
        cut_off: &CutOff,
    ) -> fcm_xmpp::Result<Box<MemLink>> {
        let (delay, answer) = {
            let mut st = self.lock();
            st.attempts.push(start);
            let k = st.attempts.len() as u64 - 1;
            let answer = st
                .connect_rule
                .as_mut()
                .map_or(Connect::Accept, |r| r(slot, k));
            (st.connect_delay, answer)
        };
        match answer {
            Connect::Accept => {}
            Connect::Refuse => {
                return Err(Error::Io(std::io::Error::from(
                    std::io::ErrorKind::ConnectionRefused,
                )))
            }
            Connect::AuthFail => {
                return Err(Error::AuthFailed {
                    condition: "not-authorized".into(),
                })
            }
            Connect::Silent(d) => {
                cut_off.sleep_until(start + d);
                return Err(Error::Timeout(Phase::Connect));
            }
        }
        if !delay.is_zero() && !cut_off.sleep_until(Instant::now() + delay) {
            return Err(Error::Timeout(Phase::Handshake));
        }
        let mut st = self.lock();
        if cut_off.is_past(Instant::now()) {
            st.completed_after_cut += 1;
        }
        if let Some(e) = &st.refuse {
            return Err(match e {
                Error::AuthFailed { condition } => Error::AuthFailed {
                    condition: condition.clone(),
                },
                _ => Error::Timeout(Phase::Connect),
            });
        }
        st.conns += 1;
        let conn = Arc::new(ConnState {
            n: st.conns,
            inbox: Mutex::new(Inbox::default()),
            ready: Condvar::new(),
        });
        st.live.push(Arc::clone(&conn));
        Ok(Box::new(MemLink {
            ccs: self.clone(),
            jid: format!("123456789012@gcm.googleapis.com/mem{}", conn.n),
            conn,
            out: Vec::new(),
            acks: Vec::new(),
        }))
    }
}

pub fn ack_event(id: &str) -> Event {
    let mut ev = Event::from_json(r#"{"message_type":"ack","message_id":"x","from":"d"}"#).unwrap();
    if let Event::Ack(a) = &mut ev {
        a.message_id = id.to_string();
    }
    ev
}

pub fn nack_event(id: &str, code: NackCode) -> Event {
    let mut ev = Event::from_json(
        r#"{"message_type":"nack","message_id":"x","from":"d","error":"BAD_REGISTRATION"}"#,
    )
    .unwrap();
    if let Event::Nack(n) = &mut ev {
        n.message_id = id.to_string();
        n.code = code;
    }
    ev
}

pub fn upstream_event(from: &str, id: &str) -> Event {
    let mut ev =
        Event::from_json(r#"{"from":"dev","category":"app","message_id":"x","data":{}}"#).unwrap();
    if let Event::Upstream(u) = &mut ev {
        u.from = from.to_string();
        u.message_id = id.to_string();
    }
    ev
}

pub fn draining_event() -> Event {
    Event::from_json(r#"{"message_type":"control","control_type":"CONNECTION_DRAINING"}"#).unwrap()
}

impl MemLink {
    /// Notes that the client took `event` from this connection.
    fn took(&self, event: &Event) {
        let at = Instant::now();
        self.ccs.lock().wire.push(Wire::Took {
            conn: self.conn.n,
            event: event.clone(),
            at,
        });
    }
}

impl Link for MemLink {
    fn jid(&self) -> &str {
        &self.jid
    }
    fn send_buffered(&mut self, message: &Message) -> fcm_xmpp::Result<()> {
        if self.ccs.lock().panic_on_send {
            panic!("a link bug");
        }
        if self.conn.inbox.lock().unwrap().dead {
            return Err(Error::Closed);
        }
        self.out.push(message.clone());
        Ok(())
    }
    fn ack_buffered(&mut self, to: &str, message_id: &str) -> fcm_xmpp::Result<()> {
        self.acks.push((to.to_string(), message_id.to_string()));
        Ok(())
    }
    fn flush(&mut self) -> fcm_xmpp::Result<()> {
        let now = Instant::now();
        let mut st = self.ccs.lock();
        if st.fail_flush || self.conn.inbox.lock().unwrap().dead {
            if self.conn.kill() {
                st.wire.push(Wire::Killed {
                    conn: self.conn.n,
                    at: now,
                });
            }
            return Err(Error::Closed);
        }
        for (_, id) in self.acks.drain(..) {
            st.acks.push((self.conn.n, id));
        }
        let mut kill = false;
        for m in self.out.drain(..) {
            let id = m.id().to_string();
            let k = st.written.iter().filter(|(_, w, _)| *w == id).count() as u64;
            st.written.push((self.conn.n, id.clone(), now));
            st.wire.push(Wire::Wrote {
                conn: self.conn.n,
                id: id.clone(),
                at: now,
            });
            if kill {
                // Written after the stanza that killed the connection: lost.
                continue;
            }
            let answer = match st.rule.as_mut() {
                Some(r) => r(&id, k),
                None => Answer::Ack,
            };
            let mut inbox = self.conn.inbox.lock().unwrap();
            let at = now + self.ccs.latency;
            match answer {
                Answer::Ack => inbox.events.push_back((at, ack_event(&id))),
                Answer::Nack(code) => inbox.events.push_back((at, nack_event(&id, code))),
                Answer::Reply(make) => inbox.events.push_back((at, make(&id))),
                Answer::SlowAck(d) => inbox.events.push_back((at + d, ack_event(&id))),
                Answer::AckTwice => {
                    inbox.events.push_back((at, ack_event(&id)));
                    inbox.events.push_back((at, ack_event(&id)));
                }
                Answer::Silent => {}
                Answer::Kill => kill = true,
            }
            // Written and not answered yet, as the client sees it.
            inbox.unanswered += 1;
            st.max_unanswered = st.max_unanswered.max(inbox.unanswered);
        }
        if kill && self.conn.kill() {
            st.wire.push(Wire::Killed {
                conn: self.conn.n,
                at: now,
            });
        }
        drop(st);
        self.conn.ready.notify_all();
        Ok(())
    }
    fn recv_event(&mut self, timeout: Duration) -> fcm_xmpp::Result<Option<Event>> {
        let until = Instant::now() + timeout.min(Duration::from_secs(3600));
        let mut inbox = self.conn.inbox.lock().unwrap();
        loop {
            let now = Instant::now();
            // The first event due (a slow ack lets later answers pass it).
            if let Some(i) = inbox.events.iter().position(|(at, _)| *at <= now) {
                let (_, ev) = inbox.events.remove(i).unwrap();
                if ev.settled_message_id().is_some() {
                    inbox.unanswered = inbox.unanswered.saturating_sub(1);
                }
                drop(inbox);
                self.took(&ev);
                return Ok(Some(ev));
            }
            if inbox.dead {
                // What was still on its way is lost with the connection.
                return Err(Error::Closed);
            }
            if now >= until {
                return Ok(None);
            }
            let wake = inbox
                .events
                .iter()
                .map(|(at, _)| *at)
                .min()
                .map_or(until, |at| at.min(until));
            inbox = self
                .conn
                .ready
                .wait_timeout(inbox, wake.saturating_duration_since(now))
                .unwrap()
                .0;
        }
    }
    fn try_recv_event(&mut self) -> fcm_xmpp::Result<Option<Event>> {
        self.recv_event(Duration::ZERO)
    }
    fn close(self: Box<Self>, _limit: Option<Duration>) -> Vec<Event> {
        let mut inbox = self.conn.inbox.lock().unwrap();
        let was_dead = std::mem::replace(&mut inbox.dead, true);
        let now = Instant::now();
        let soon = now + Duration::from_millis(20);
        // Answers on their way now arrive while we close; a dead
        // connection only gives what had already arrived.
        let horizon = if was_dead { now } else { soon };
        let (late, rest): (VecDeque<_>, VecDeque<_>) =
            inbox.events.drain(..).partition(|(at, _)| *at <= horizon);
        inbox.events = rest;
        let late: Vec<Event> = late.into_iter().map(|(_, e)| e).collect();
        drop(inbox);
        let n = self.conn.n;
        let mut st = self.ccs.lock();
        st.live.retain(|c| c.n != n);
        for event in &late {
            st.wire.push(Wire::Took {
                conn: n,
                event: event.clone(),
                at: now,
            });
        }
        st.wire.push(Wire::Closed { conn: n, at: now });
        drop(st);
        late
    }
}

impl Drop for MemLink {
    fn drop(&mut self) {
        let mut st = self.ccs.lock();
        st.open = st.open.saturating_sub(1);
    }
}
