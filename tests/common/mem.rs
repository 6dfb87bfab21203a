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
}

type Rule = Box<dyn FnMut(&str, u64) -> Answer + Send>;

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
    conns: u64,
    live: Vec<Arc<ConnState>>,
    rule: Option<Rule>,
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
                conns: 0,
                live: Vec::new(),
                rule: None,
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
        let live = std::mem::take(&mut self.lock().live);
        for c in live {
            c.kill();
        }
    }
}

impl ConnState {
    fn push(&self, ev: Event, at: Instant) {
        let mut i = self.inbox.lock().unwrap();
        i.events.push_back((at, ev));
        self.ready.notify_all();
    }
    fn kill(&self) {
        self.inbox.lock().unwrap().dead = true;
        self.ready.notify_all();
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

    /// A `connect_delay` is a handshake in progress: the cut-off ends it,
    /// and then no connection is made (`completed_after_cut` counts any).
    fn connect_until(&self, _slot: usize, cut_off: &CutOff) -> fcm_xmpp::Result<Box<dyn Link>> {
        let delay = {
            let mut st = self.lock();
            st.attempts.push(Instant::now());
            st.connect_delay
        };
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
            self.conn.kill();
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
            let answer = match st.rule.as_mut() {
                Some(r) => r(&id, k),
                None => Answer::Ack,
            };
            let mut inbox = self.conn.inbox.lock().unwrap();
            let at = now + self.ccs.latency;
            match answer {
                Answer::Ack => inbox.events.push_back((at, ack_event(&id))),
                Answer::Nack(code) => inbox.events.push_back((at, nack_event(&id, code))),
                Answer::Silent => {}
                Answer::Kill => kill = true,
            }
            // Written and not answered yet, as the client sees it.
            inbox.unanswered += 1;
            st.max_unanswered = st.max_unanswered.max(inbox.unanswered);
        }
        drop(st);
        if kill {
            self.conn.kill();
        }
        self.conn.ready.notify_all();
        Ok(())
    }
    fn recv_event(&mut self, timeout: Duration) -> fcm_xmpp::Result<Option<Event>> {
        let until = Instant::now() + timeout.min(Duration::from_secs(3600));
        let mut inbox = self.conn.inbox.lock().unwrap();
        loop {
            let now = Instant::now();
            if let Some((at, _)) = inbox.events.front() {
                if *at <= now {
                    let (_, ev) = inbox.events.pop_front().unwrap();
                    if ev.settled_message_id().is_some() {
                        inbox.unanswered = inbox.unanswered.saturating_sub(1);
                    }
                    return Ok(Some(ev));
                }
            } else if inbox.dead {
                return Err(Error::Closed);
            }
            if now >= until {
                return Ok(None);
            }
            let wake = inbox
                .events
                .front()
                .map_or(until, |(at, _)| (*at).min(until));
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
        inbox.dead = true;
        let now = Instant::now();
        let late = inbox
            .events
            .drain(..)
            .filter(|(at, _)| *at <= now + Duration::from_millis(20))
            .map(|(_, e)| e)
            .collect();
        drop(inbox);
        let n = self.conn.n;
        self.ccs.lock().live.retain(|c| c.n != n);
        late
    }
}
