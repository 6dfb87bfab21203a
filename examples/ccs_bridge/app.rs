//! One business application's TCP connection: a reader (this thread) that parses its
//! lines, and a writer thread with a bounded queue, so a slow app never holds up others.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::io::{self, BufRead, BufReader, BufWriter, ErrorKind, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use fcm_xmpp::client::{Client, SendErrorKind};
use fcm_xmpp::message::MAX_GROUP_BYTES;
use fcm_xmpp::Message;
use miniserde::json::{self, Object, Value};

use crate::proto::{self, Line, MAX_LINE};
use crate::state::{Done, Entry, Handle, Mail, Out, Outbox, Session, State};

/// What every connection shares.
pub struct Ctx {
    pub state: Handle,
    pub client: Client,
    pub stop: Arc<AtomicBool>,
    pub logon_timeout: Duration,
    /// Lines queued for one app before it counts as too slow and is cut off.
    pub queue: usize,
}

/// How often a blocked read wakes up to look at the LOGON deadline and the stop flag.
const READ_TICK: Duration = Duration::from_millis(200);
/// A write to an app that takes longer than this cuts the app off.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Lines taken into one journal batch at most.
const MAX_LINES: usize = 512;

/// A downstream message from an app, checked, with its journal record.
pub struct Down {
    pub session: String,
    pub message_id: String,
    pub message: Message,
    /// `b'P'` + the record's JSON: what a restart needs to send it again.
    pub record: Vec<u8>,
}

impl Down {
    /// Checks a `DOWNSTREAM` line of `session`. `Err((message_id, why))`: a
    /// `DOWNSTREAM_REJECT` is due (or an error line without a message id).
    pub fn parse(session: &str, o: &Object) -> Result<Down, (Option<String>, String)> {
        let mid = proto::req_str(o, "message_id").map_err(|e| (None, e))?;
        let fail = |e: String| (Some(mid.to_string()), e);
        let group = proto::opt_str(o, "group_id")
            .map_err(fail)?
            .filter(|g| !g.is_empty());
        for (field, v) in [("message_id", Some(mid)), ("group_id", group)] {
            if let Some(v) = v.filter(|v| !proto::valid_id(v)) {
                return Err(fail(format!(
                    "{field} must be at most {} bytes without control characters, got {} bytes",
                    proto::MAX_ID,
                    v.len()
                )));
            }
        }
        let mut data = match o.get("fcm_data") {
            Some(Value::Object(d)) => d.clone(),
            Some(_) => return Err(fail("field fcm_data must be an object".into())),
            None => return Err(fail("missing field fcm_data".into())),
        };
        let id = proto::ccs_id(session, group, mid);
        data.insert("message_id".into(), Value::String(id));
        let message = Message::from_json_value(&data).map_err(|e| fail(e.to_string()))?;
        let record = Line::new("DOWNSTREAM")
            .str("session_id", session)
            .str("message_id", mid)
            .opt("group_id", group)
            .value("fcm_data", Value::Object(data))
            .finish();
        let mut rec = Vec::with_capacity(record.len() + 1);
        rec.push(b'P');
        rec.extend_from_slice(record.as_bytes());
        Ok(Down {
            session: session.to_string(),
            message_id: mid.to_string(),
            message: grouped(message, session, group),
            record: rec,
        })
    }

    /// The message of a pending record (`b'P'` + JSON), to send again after a restart.
    pub fn from_record(value: &[u8]) -> Option<Message> {
        let text = std::str::from_utf8(value.strip_prefix(b"P")?).ok()?;
        let Ok(Value::Object(o)) = json::from_str::<Value>(text) else {
            return None;
        };
        let session = proto::req_str(&o, "session_id").ok()?;
        let group = proto::opt_str(&o, "group_id").ok()?;
        let Some(Value::Object(data)) = o.get("fcm_data") else {
            return None;
        };
        let message = Message::from_json_value(data).ok()?;
        Some(grouped(message, session, group))
    }
}

/// The client-side group key: per session, so groups of two apps never merge.
fn grouped(message: Message, session: &str, group: Option<&str>) -> Message {
    match group {
        Some(g) => message.group(group_key(session, g)),
        None => message,
    }
}

/// `SESSION\0GROUP`, or past the client's limit a 128-bit digest of it (two groups
/// that shared a digest would only be ordered together, never reordered).
fn group_key(session: &str, group: &str) -> String {
    let key = format!("{session}\u{0}{group}");
    if key.len() <= MAX_GROUP_BYTES {
        return key;
    }
    let digest = |salt: u8| {
        let mut h = DefaultHasher::new();
        salt.hash(&mut h);
        key.hash(&mut h);
        h.finish()
    };
    format!("#{:016x}{:016x}", digest(1), digest(2))
}

/// Records an outcome for the app's downstream `ccs_id` (replacing its pending record)
/// and adds it to `mail` if its app is logged on. Nothing for an id that is not ours,
/// not pending, or already settled.
pub fn settle(
    st: &mut State,
    mail: &mut Mail,
    ccs_id: &str,
    error: Option<&str>,
    registration_id: Option<&str>,
) {
    let Some((session, group, mid)) = proto::parse_ccs_id(ccs_id) else {
        log::warn!("outcome for a message id that is not the bridge's: {ccs_id:?}");
        return;
    };
    let key = proto::down_key(&session, &mid);
    if st.store.get(&key).and_then(|v| v.first()) != Some(&b'P') {
        return;
    }
    let line = proto::outcome_line(&session, &mid, group.as_deref(), error, registration_id);
    let mut rec = Vec::with_capacity(line.len() + 1);
    rec.push(b'O');
    rec.extend_from_slice(line.as_bytes());
    st.store.put(&key, &rec);
    if st.logged_on(&session) {
        let out = Out {
            line,
            remove_after_flush: Some(key),
        };
        mail.push(&session, out);
    }
}

/// Hands a journaled message to the client, waiting for queue space as long as the
/// bridge runs. One the client refuses as invalid gets its final outcome.
pub fn submit(client: &Client, state: &Handle, stop: &AtomicBool, mut message: Message) {
    loop {
        match client.send_timeout(message, Duration::from_secs(1)) {
            Ok(_) => return,
            Err(e) => match e.kind {
                SendErrorKind::Full if !stop.load(Ordering::Relaxed) => message = *e.message,
                SendErrorKind::Invalid(why) => {
                    let id = e.message.id().to_string();
                    let why = why.to_string();
                    state.call(move |st| {
                        let mut mail = Mail::default();
                        settle(st, &mut mail, &id, Some(&why), None);
                        ((), Some(mail.into_done()))
                    });
                    return;
                }
                // Stopping: it stays in the journal for the next run.
                _ => return,
            },
        }
    }
}

/// Reads lines of at most [`MAX_LINE`] bytes; longer ones are refused whole.
struct LineReader {
    r: BufReader<TcpStream>,
    buf: Vec<u8>,
    skipping: bool,
}

enum Read {
    Line,
    TooLong,
    Idle,
    Eof,
}

impl LineReader {
    fn next(&mut self) -> io::Result<Read> {
        loop {
            let avail = match self.r.fill_buf() {
                Ok(b) => b,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Ok(Read::Idle)
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if avail.is_empty() {
                return Ok(Read::Eof);
            }
            let (chunk, end) = match avail.iter().position(|&b| b == b'\n') {
                Some(i) => (i, true),
                None => (avail.len(), false),
            };
            let was_skipping = self.skipping;
            if !self.skipping {
                self.buf.extend_from_slice(&avail[..chunk]);
            }
            self.r.consume(chunk + usize::from(end));
            if !self.skipping && self.buf.len() > MAX_LINE {
                self.buf.clear();
                self.skipping = !end;
                return Ok(Read::TooLong);
            }
            if end {
                self.skipping = false;
                if !was_skipping {
                    return Ok(Read::Line);
                }
            }
        }
    }

    fn has_line(&self) -> bool {
        self.r.buffer().contains(&b'\n')
    }
}

/// What a logged-on app asked for, batched into one journal call.
enum Op {
    Down(Box<Down>),
    Ack(String),
}

/// Serves one app connection until it closes, is cut off or the bridge stops.
pub fn serve(ctx: Arc<Ctx>, stream: TcpStream, conn: u64) {
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let setup = stream
        .set_read_timeout(Some(READ_TICK))
        .and_then(|()| stream.set_write_timeout(Some(WRITE_TIMEOUT)))
        .and_then(|()| stream.set_nodelay(true))
        .and_then(|()| Ok((stream.try_clone()?, stream.try_clone()?)));
    let (wstream, kick) = match setup {
        Ok(s) => s,
        Err(e) => {
            log::warn!("app {peer}: {e}");
            return;
        }
    };
    let (outbox, rx, queued) = Outbox::new(ctx.queue);
    let state = ctx.state.clone();
    let writer = thread::Builder::new()
        .name(format!("app-{conn}-writer"))
        .spawn(move || write_loop(wstream, rx, &queued, state));
    let Ok(writer) = writer else {
        return;
    };
    let mut app = App {
        ctx: &ctx,
        conn,
        outbox,
        kick,
        session: None,
    };
    app.read_loop(stream);
    if let Some(s) = app.session.take() {
        ctx.state.post(move |st| {
            if st.sessions.get(&s).map(|x| x.conn) == Some(conn) {
                st.sessions.remove(&s);
            }
        });
    }
    drop(app);
    let _ = writer.join();
    log::info!("app {peer} (connection {conn}) closed");
}

struct App<'a> {
    ctx: &'a Ctx,
    conn: u64,
    outbox: Outbox,
    kick: TcpStream,
    session: Option<String>,
}

impl App<'_> {
    fn read_loop(&mut self, stream: TcpStream) {
        let mut lr = LineReader {
            r: BufReader::with_capacity(64 * 1024, stream),
            buf: Vec::new(),
            skipping: false,
        };
        // A huge --logon-timeout has no deadline (`Instant + Duration` would overflow).
        let deadline = Instant::now().checked_add(self.ctx.logon_timeout);
        loop {
            let mut batch = Vec::new();
            let mut eof = false;
            loop {
                match lr.next() {
                    Ok(Read::Line) => {
                        batch.push(proto::parse_line(&lr.buf));
                        lr.buf.clear();
                    }
                    Ok(Read::TooLong) => {
                        batch.push(Err(format!("line longer than {MAX_LINE} bytes refused")))
                    }
                    Ok(Read::Idle) => break,
                    Ok(Read::Eof) | Err(_) => {
                        eof = true;
                        break;
                    }
                }
                if batch.len() >= MAX_LINES || !lr.has_line() {
                    break;
                }
            }
            if !self.handle(batch) || eof || self.ctx.stop.load(Ordering::Relaxed) {
                return;
            }
            if self.session.is_none() && deadline.is_some_and(|d| Instant::now() >= d) {
                self.error("no LOGON in time: closing");
                return;
            }
        }
    }

    /// Queues an `ERROR` line naming the problem (with the session, once logged on).
    fn error(&self, text: &str) -> bool {
        self.say(proto::error_line(self.session.as_deref(), text))
    }

    /// Queues a line for this app; false (and the connection cut) if its queue is full.
    fn say(&self, line: String) -> bool {
        if self.outbox.push(vec![Out::plain(line)], true) {
            return true;
        }
        let _ = self.kick.shutdown(Shutdown::Both);
        false
    }

    /// Handles a batch of lines in order; false to close the connection.
    fn handle(&mut self, batch: Vec<Result<Object, String>>) -> bool {
        let mut ops = Vec::new();
        for line in batch {
            let o = match line {
                Ok(o) => o,
                Err(e) => {
                    self.error(&e);
                    continue;
                }
            };
            let kind = match proto::req_str(&o, "message_type") {
                Ok(k) => k.to_string(),
                Err(e) => {
                    self.error(&e);
                    continue;
                }
            };
            let session = match proto::req_str(&o, "session_id") {
                Ok(s) => s.to_string(),
                Err(e) => {
                    self.error(&e);
                    continue;
                }
            };
            match (kind.as_str(), &self.session) {
                ("LOGON", None) => {
                    self.run(std::mem::take(&mut ops));
                    self.logon(session);
                }
                ("LOGON", Some(s)) => {
                    self.error(&format!("already logged on as {s}"));
                }
                ("DOWNSTREAM" | "ACK", None) => {
                    self.error(&format!("{kind} before LOGON"));
                }
                ("DOWNSTREAM" | "ACK", Some(s)) if *s != session => {
                    self.error(&format!(
                        "session_id {session} is not this connection's session {s}"
                    ));
                }
                ("DOWNSTREAM", Some(s)) => match Down::parse(s, &o) {
                    Ok(d) => ops.push(Op::Down(Box::new(d))),
                    Err((Some(mid), why)) => {
                        let group = proto::opt_str(&o, "group_id").ok().flatten();
                        self.say(proto::outcome_line(s, &mid, group, Some(&why), None));
                    }
                    Err((None, why)) => {
                        self.error(&format!("DOWNSTREAM: {why}"));
                    }
                },
                ("ACK", Some(_)) => match proto::req_str(&o, "message_id") {
                    Ok(mid) => ops.push(Op::Ack(mid.to_string())),
                    Err(e) => {
                        self.error(&format!("ACK: {e}"));
                    }
                },
                (other, _) => {
                    self.error(&format!("unknown message_type {other}"));
                }
            }
        }
        self.run(ops)
    }

    fn logon(&mut self, session: String) {
        if !proto::valid_session(&session) {
            self.say(logon_line(
                &session,
                Some("session_id must be a package name: letters, digits, _ and ."),
            ));
            return;
        }
        let Ok(stream) = self.kick.try_clone() else {
            return;
        };
        let (s, outbox, conn) = (session.clone(), self.outbox.clone(), self.conn);
        let ok = self.ctx.state.call(move |st| {
            if st.logged_on(&s) {
                return (false, None);
            }
            st.sessions.insert(
                s.clone(),
                Session {
                    conn,
                    outbox,
                    stream,
                },
            );
            let held = st.held(&s);
            let mut outs = vec![Out::plain(logon_line(&s, None))];
            outs.extend(held);
            let done: Done = Box::new(move |st: &mut State| {
                st.deliver_backlog(&s, outs);
            });
            (true, Some(done))
        });
        match ok {
            Some(true) => self.session = Some(session),
            Some(false) => {
                self.say(logon_line(&session, Some("session is already logged on")));
            }
            None => {}
        }
    }

    /// Journals a batch of downstream messages and acks in one call, then hands the new
    /// messages to the client. False if the bridge is stopping.
    fn run(&self, ops: Vec<Op>) -> bool {
        let Some(session) = self.session.clone() else {
            return true;
        };
        if ops.is_empty() {
            return true;
        }
        let sent = self.ctx.state.call(move |st| {
            let mut new = Vec::new();
            let mut again = Vec::new();
            for op in ops {
                match op {
                    Op::Down(d) => {
                        let key = proto::down_key(&d.session, &d.message_id);
                        match st.store.get(&key) {
                            None => {
                                st.store.put(&key, &d.record);
                                new.push(d.message);
                            }
                            Some([b'O', line @ ..]) => again.push(Out {
                                line: String::from_utf8_lossy(line).into_owned(),
                                remove_after_flush: Some(key),
                            }),
                            // Pending: its outcome comes when it comes.
                            Some(_) => {}
                        }
                    }
                    Op::Ack(mid) => {
                        if !st.ack_upstream(&session, &mid) {
                            log::debug!("session {session}: ACK for unknown upstream {mid}");
                        }
                    }
                }
            }
            let done: Done = Box::new(move |st: &mut State| {
                st.deliver(&session, again);
            });
            (new, Some(done))
        });
        let Some(new) = sent else { return false };
        for m in new {
            submit(&self.ctx.client, &self.ctx.state, &self.ctx.stop, m);
        }
        true
    }
}

fn logon_line(session: &str, error: Option<&str>) -> String {
    Line::new("LOGON_RESPONSE")
        .str("session_id", session)
        .str(
            "status",
            if error.is_none() {
                "SUCCESS"
            } else {
                "FAILURE"
            },
        )
        .opt("error_string", error)
        .finish()
}

/// Writes queued lines in batches (one flush per batch); once a batch is flushed, the
/// records it delivered for good leave the journal.
fn write_loop(stream: TcpStream, rx: Receiver<Entry>, queued: &AtomicUsize, state: Handle) {
    let mut w = BufWriter::with_capacity(64 * 1024, stream);
    while let Ok(first) = rx.recv() {
        let mut keys = Vec::new();
        let mut next = Some(first);
        let mut n = 0;
        let mut ok = true;
        'batch: while let Some(entry) = next.take() {
            queued.fetch_sub(entry.counted(), Ordering::AcqRel);
            for o in entry.outs {
                if w.write_all(o.line.as_bytes()).is_err() || w.write_all(b"\n").is_err() {
                    ok = false;
                    break 'batch;
                }
                keys.extend(o.remove_after_flush);
                n += 1;
            }
            if n < 4096 {
                next = rx.try_recv().ok();
            }
        }
        if !ok || w.flush().is_err() {
            let _ = w.get_ref().shutdown(Shutdown::Both);
            return;
        }
        if !keys.is_empty() {
            state.post(move |st| {
                for k in keys {
                    st.store.remove(&k);
                }
            });
        }
    }
}
