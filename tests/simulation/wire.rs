//! Byte-level fault simulation of the whole worker `Client`.
//!
//! The engine simulation above works on events. Here every connection is a
//! real [`Connection`] (XML writer, stanza reader, XMPP handshake, session)
//! over an in-memory duplex byte pipe, and the server end is a small CCS
//! written for this test alone: it parses what the client writes with an
//! independent XML parser (the `xml` crate), checks the credentials, plays
//! the handshake, answers each downstream message with an ack, a NACK
//! (retryable, final, draining and unknown codes), a stanza error or
//! silence, and now and then sends an upstream message. It drops
//! connections at every handshake stage, cuts the client's writes at a
//! random byte, stops half-way through writing its own answer, sends
//! CONNECTION_DRAINING, stream errors, garbage, bad JSON and a stanza over
//! the size limit, and splits what it writes into random pieces. Each
//! schedule draws all of that from its seed (the threads' timing is real).
//!
//! After every schedule: every accepted message has exactly one final outcome
//! (or a place in `shutdown`'s list) and the outcome matches what the server
//! answered; the server never sees more than `max_pending` unanswered on a
//! connection; every byte the client wrote is well-formed XML (a stanza cut
//! short only where a write failed); messages coming back from a lost or
//! draining connection reach the next one in acceptance order; a retry after
//! SERVICE_UNAVAILABLE on the same connection waits the initial backoff; an
//! ack the client read is reported; upstream messages are acked on their own
//! connection, to their sender, once; no thread panics; `shutdown` returns
//! within its deadline plus a margin, and nothing new reaches the server
//! after it.
//!
//! `WIRE_SCHEDULES=N` runs N schedules, `WIRE_SEED=S` replays one.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::io::{self, BufReader, Read, Write};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use base64::Engine as _;
use fcm_xmpp::client::{
    AckMode, Backoff, Client, ClientConfig, ClientEvent, Connector, Link, Rejection, ReturnReason,
};
use fcm_xmpp::{Config, Connection, Error, Keepalive, Message, SetTimeout};
use xml::reader::{ParserConfig, XmlEvent};

use super::Rng;

#[allow(dead_code)] // `check_all` serves the other files that include it
mod judge {
    include!("../common/judge_core.rs");
}

const SENDER: &str = "123456789012";
const NS_STREAM: &str = "http://etherx.jabber.org/streams";
const NS_SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
const NS_BIND: &str = "urn:ietf:params:xml:ns:xmpp-bind";
const NS_SESSION: &str = "urn:ietf:params:xml:ns:xmpp-session";
const NS_CLIENT: &str = "jabber:client";
const NS_GCM: &str = "google:mobile:data";
const NS_PING: &str = "urn:xmpp:ping";
/// What CCS answers to XML it cannot parse, and then closes.
const STREAM_ERROR: &str = "<stream:error><invalid-xml \
    xmlns=\"urn:ietf:params:xml:ns:xmpp-streams\"/></stream:error></stream:stream>";
/// The largest stanza the client accepts (the oversized one is bigger).
const MAX_STANZA: usize = 4096;
/// How late `shutdown` may return past its deadline: the client's own
/// margin (100 ms) plus room for a loaded machine.
const SHUTDOWN_SLACK: Duration = Duration::from_millis(600);

// ----- the in-memory duplex pipe -----

/// One direction of a connection: bounded, in segments (a read returns at
/// most one write's bytes, so the writer's chunking reaches the reader).
#[derive(Default)]
struct DirState {
    segs: VecDeque<Vec<u8>>,
    len: usize,
    /// The writer closed (or was cut off): the reader drains, then reads EOF.
    closed: bool,
    /// Connection reset: unread bytes are gone, reads fail.
    reset: bool,
    /// The reader is gone: writes fail.
    reader_gone: bool,
    /// Bytes accepted so far, and where the writer is cut off.
    total: u64,
    cut_at: Option<u64>,
    /// A write failed (or was cut short): a stanza may be half written.
    write_failed: bool,
}

struct Dir {
    st: Mutex<DirState>,
    cv: Condvar,
    /// Bytes buffered before a write waits.
    capacity: usize,
}

impl Dir {
    fn new(capacity: usize) -> Dir {
        Dir {
            st: Mutex::default(),
            cv: Condvar::new(),
            capacity,
        }
    }

    fn lock(&self) -> MutexGuard<'_, DirState> {
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self, buf: &[u8], timeout: Option<Duration>) -> io::Result<usize> {
        let until = Instant::now() + timeout.unwrap_or(Duration::from_secs(10));
        let mut st = self.lock();
        loop {
            if st.closed || st.reset || st.reader_gone {
                st.write_failed = true;
                return Err(io::ErrorKind::BrokenPipe.into());
            }
            if st.cut_at.is_some_and(|c| st.total >= c) {
                st.closed = true;
                st.write_failed = true;
                self.cv.notify_all();
                return Err(io::ErrorKind::ConnectionReset.into());
            }
            let room = self.capacity.saturating_sub(st.len);
            if room > 0 {
                let mut n = buf.len().min(room);
                if let Some(c) = st.cut_at {
                    n = n.min((c - st.total) as usize);
                }
                st.segs.push_back(buf[..n].to_vec());
                st.len += n;
                st.total += n as u64;
                self.cv.notify_all();
                return Ok(n);
            }
            let now = Instant::now();
            if now >= until {
                st.write_failed = true;
                return Err(io::ErrorKind::TimedOut.into());
            }
            st = self
                .cv
                .wait_timeout(st, until - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// `None`: nonblocking; `Some(t)`: wait at most `t`.
    fn read(&self, out: &mut [u8], wait: Option<Duration>) -> io::Result<usize> {
        let until = wait.map(|t| Instant::now() + t);
        let mut st = self.lock();
        loop {
            if st.reset {
                return Err(io::ErrorKind::ConnectionReset.into());
            }
            if let Some(seg) = st.segs.front_mut() {
                let n = out.len().min(seg.len());
                out[..n].copy_from_slice(&seg[..n]);
                seg.drain(..n);
                if seg.is_empty() {
                    st.segs.pop_front();
                }
                st.len -= n;
                self.cv.notify_all();
                return Ok(n);
            }
            if st.closed {
                return Ok(0);
            }
            let now = Instant::now();
            match until {
                Some(u) if now < u => {
                    st = self
                        .cv
                        .wait_timeout(st, u - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
                // A socket's read timeout reads as WouldBlock on Unix.
                _ => return Err(io::ErrorKind::WouldBlock.into()),
            }
        }
    }

    /// The writer is done (FIN): the reader drains, then reads EOF.
    fn close(&self) {
        self.lock().closed = true;
        self.cv.notify_all();
    }

    /// Reset (RST): unread bytes are dropped, reads and writes fail.
    fn reset(&self) {
        let mut st = self.lock();
        st.reset = true;
        st.segs.clear();
        st.len = 0;
        self.cv.notify_all();
    }

    fn drop_reader(&self) {
        self.lock().reader_gone = true;
        self.cv.notify_all();
    }

    /// Cuts the writer off `bytes` from what it has written so far.
    fn cut_after(&self, bytes: u64) {
        let mut st = self.lock();
        st.cut_at = Some(st.total + bytes);
    }
}

/// The client's end: what `Connection::from_stream` runs on.
struct ClientEnd {
    up: Arc<Dir>,
    down: Arc<Dir>,
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
    nonblocking: bool,
}

impl Read for ClientEnd {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let wait = if self.nonblocking {
            None
        } else {
            Some(self.read_timeout.unwrap_or(Duration::from_secs(10)))
        };
        self.down.read(buf, wait)
    }
}

impl Write for ClientEnd {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.up.write(buf, self.write_timeout)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl SetTimeout for ClientEnd {
    fn set_read_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.read_timeout = timeout;
        Ok(())
    }
    fn set_write_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.write_timeout = timeout;
        Ok(())
    }
    fn set_nonblocking(&mut self, nonblocking: bool) -> io::Result<()> {
        self.nonblocking = nonblocking;
        Ok(())
    }
    /// Stands in for TLS: the handshake refuses to authenticate otherwise.
    fn is_encrypted(&self) -> bool {
        true
    }
}

impl Drop for ClientEnd {
    fn drop(&mut self) {
        self.up.close();
        self.down.drop_reader();
    }
}

/// The server's reading end; records every byte the client wrote.
struct Recorder {
    up: Arc<Dir>,
    bytes: Arc<Mutex<Vec<u8>>>,
}

impl Read for Recorder {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.up.read(buf, Some(Duration::from_secs(10)))?;
        lock(&self.bytes).extend_from_slice(&buf[..n]);
        Ok(n)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

// ----- what the server reads: elements from the independent parser -----

#[derive(Debug, Default, Clone)]
struct Elem {
    name: String,
    ns: String,
    attrs: Vec<(String, String)>,
    text: String,
    children: Vec<Elem>,
}

impl Elem {
    fn is(&self, name: &str, ns: &str) -> bool {
        self.name == name && self.ns == ns
    }
    fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    fn child(&self, name: &str, ns: &str) -> Option<&Elem> {
        self.children.iter().find(|c| c.is(name, ns))
    }
}

enum In {
    Header,
    Stanza(Elem),
    /// The client closed a stream (`</stream:stream>`).
    StreamEnd,
    /// Input ended (EOF, a cut, a reset).
    Eof,
    /// The client wrote something the parser refuses.
    Bad(String),
}

/// Parses the client's bytes into stream headers and stanzas. A stream
/// restart is a nested `<stream:stream>`: both are stream level.
fn read_client(rec: Recorder, tx: Sender<In>, mid_stanza: Arc<AtomicBool>) {
    let reader = ParserConfig::new().create_reader(BufReader::new(rec));
    let mut stack: Vec<Elem> = Vec::new();
    for ev in reader {
        match ev {
            Ok(XmlEvent::StartElement {
                name, attributes, ..
            }) => {
                let ns = name.namespace.clone().unwrap_or_default();
                if stack.is_empty() && name.local_name == "stream" && ns == NS_STREAM {
                    let _ = tx.send(In::Header);
                    continue;
                }
                stack.push(Elem {
                    name: name.local_name,
                    ns,
                    attrs: attributes
                        .into_iter()
                        .map(|a| (a.name.local_name, a.value))
                        .collect(),
                    ..Elem::default()
                });
            }
            Ok(XmlEvent::EndElement { .. }) => match stack.pop() {
                None => {
                    let _ = tx.send(In::StreamEnd);
                }
                Some(el) => match stack.last_mut() {
                    Some(parent) => parent.children.push(el),
                    None => {
                        let _ = tx.send(In::Stanza(el));
                    }
                },
            },
            Ok(XmlEvent::Characters(t)) | Ok(XmlEvent::CData(t)) => match stack.last_mut() {
                Some(el) => el.text.push_str(&t),
                None => {
                    let _ = tx.send(In::Bad(format!("text {t:?} between stanzas")));
                    return;
                }
            },
            Ok(XmlEvent::EndDocument) => break,
            Ok(_) => {}
            Err(e) => {
                let eof = matches!(e.kind(), xml::reader::ErrorKind::UnexpectedEof)
                    || matches!(e.kind(), xml::reader::ErrorKind::Io(_))
                    || e.to_string().contains("Unexpected end of stream");
                if eof {
                    // Inside a stanza; a cut inside a tag shows in the bytes.
                    mid_stanza.store(!stack.is_empty(), Ordering::Relaxed);
                    let _ = tx.send(In::Eof);
                } else {
                    let _ = tx.send(In::Bad(e.to_string()));
                }
                return;
            }
        }
    }
    mid_stanza.store(!stack.is_empty(), Ordering::Relaxed);
    let _ = tx.send(In::Eof);
}

// ----- the schedule: what the server does, drawn from the seed -----

/// A fault during the handshake of one connection.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Hs {
    None,
    /// Accept, then hang up before the stream header.
    BeforeHeader,
    /// Hang up half-way through writing the features.
    MidFeatures,
    /// Cut the client's writes this many bytes into the connection.
    CutWrite(u64),
    /// Hang up right after the client's `<auth>` (reads as refused: fatal).
    AfterAuth,
    /// `<failure><not-authorized/>` (fatal).
    AuthFail,
    AfterSuccess,
    AfterRestart,
    /// Hang up with the bind request unanswered.
    MidBind,
    AfterBind,
    MidSession,
    /// Never answer the header: the client's handshake timeout.
    NoHeader,
}

/// A fault once the connection is up, after `after` messages arrived.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Run {
    None,
    /// Hang up (FIN, or RST: unread bytes lost).
    Drop {
        after: u32,
        rst: bool,
    },
    /// Cut the client's write this many bytes further on.
    CutClient {
        after: u32,
        bytes: u64,
    },
    /// Stop half-way through writing answer number `at`, then hang up.
    CutOwn {
        at: u32,
    },
    Garbage {
        after: u32,
        kind: u8,
    },
    Oversize {
        after: u32,
    },
    /// An ack with bad JSON: a stanza error for the client, the connection stays.
    BadJson {
        after: u32,
    },
    Drain {
        after: u32,
        close_in: Duration,
    },
    /// Answer nothing more (pings neither): the keepalive gives up.
    Silent {
        after: u32,
    },
    /// A stream error, then the end of the stream.
    StreamError {
        after: u32,
    },
}

#[derive(Debug, Clone, PartialEq)]
enum Answer {
    Ack,
    Nack(&'static str),
    StanzaError,
}

/// What happens on the server's side, in order.
#[derive(Debug, Clone)]
enum What {
    Wrote(String),
    Answered(String, Answer),
    Ended,
}

#[derive(Debug, Clone)]
struct Rec {
    conn: u64,
    at: Instant,
    what: What,
}

/// One connection as the judge sees it afterwards.
struct ConnRecord {
    n: u64,
    bytes: Arc<Mutex<Vec<u8>>>,
    up: Arc<Dir>,
    down: Arc<Dir>,
    mid_stanza: Arc<AtomicBool>,
    hs: Hs,
    run: Run,
}

/// The server of one schedule: the connector and everything it records.
struct World {
    seed: u64,
    key: String,
    max_pending: usize,
    /// Faults that refuse authentication may be drawn (fatal for the client).
    fatal_ok: bool,
    /// One in N connect attempts is refused; one in N connections gets a
    /// handshake fault, one in N a fault once up.
    refuse: u64,
    hs_fault: u64,
    run_fault: u64,
    /// Per mille of answers that are not a plain ack.
    odd_answers: u64,
    /// Bytes each direction of a pipe buffers: small ones make the client's
    /// and the server's writes wait for the reader, a piece at a time.
    pipe_capacity: usize,
    attempts: AtomicU64,
    log: Mutex<Vec<Rec>>,
    violations: Mutex<Vec<String>>,
    conns: Mutex<Vec<ConnRecord>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// The server refused authentication at least once.
    refused_auth: AtomicBool,
    /// How often each fault happened.
    fired: Mutex<BTreeMap<String, u64>>,
    cfg: Config,
}

/// A fault's name without its numbers.
fn fault_name(f: &impl std::fmt::Debug) -> String {
    let s = format!("{f:?}");
    s.split([' ', '{', '(']).next().unwrap_or("").to_string()
}

impl World {
    fn violation(&self, what: String) {
        let mut v = lock(&self.violations);
        if v.len() < 20 {
            v.push(what);
        }
    }
    /// Counts a fault that happened.
    fn fired(&self, what: &str) {
        *lock(&self.fired).entry(what.to_string()).or_default() += 1;
    }
    fn record(&self, conn: u64, what: What) {
        lock(&self.log).push(Rec {
            conn,
            at: Instant::now(),
            what,
        });
    }
}

/// The connector: each connect builds a pipe and a server for its far end.
struct WireCcs(Arc<World>);

impl Connector for WireCcs {
    fn connect(&self, _slot: usize, deadline: Option<Instant>) -> fcm_xmpp::Result<Box<dyn Link>> {
        let w = &self.0;
        let n = w.attempts.fetch_add(1, Ordering::Relaxed) + 1;
        let mut rng = Rng::new(w.seed ^ n.wrapping_mul(0xA24B_AED4_963E_E407));
        if rng.chance(w.refuse) {
            return Err(Error::Io(io::ErrorKind::ConnectionRefused.into()));
        }
        let hs = if rng.chance(w.hs_fault) {
            let fatal = w.fatal_ok && rng.chance(4);
            match rng.below(10) {
                0 => Hs::BeforeHeader,
                1 => Hs::MidFeatures,
                2 => Hs::CutWrite(1 + rng.below(600)),
                3 if fatal => Hs::AfterAuth,
                3 if rng.chance(2) => Hs::NoHeader,
                3 => Hs::AfterSuccess,
                4 if fatal => Hs::AuthFail,
                4 => Hs::AfterSuccess,
                5 => Hs::AfterRestart,
                6 => Hs::MidBind,
                7 => Hs::AfterBind,
                8 => Hs::MidSession,
                _ => Hs::CutWrite(100 + rng.below(400)),
            }
        } else {
            Hs::None
        };
        let run = if rng.chance(w.run_fault) {
            let after = rng.below(8) as u32;
            match rng.below(9) {
                0 => Run::Drop {
                    after,
                    rst: rng.chance(2),
                },
                1 => Run::CutClient {
                    after,
                    bytes: 1 + rng.below(400),
                },
                2 => Run::CutOwn { at: after },
                3 => Run::Garbage {
                    after,
                    kind: rng.below(4) as u8,
                },
                4 => Run::Oversize { after },
                5 => Run::BadJson { after },
                6 => Run::Drain {
                    after,
                    close_in: rng.ms(5, 60),
                },
                7 => Run::StreamError { after },
                _ => Run::Silent { after },
            }
        } else {
            Run::None
        };
        let up = Arc::new(Dir::new(w.pipe_capacity));
        let down = Arc::new(Dir::new(w.pipe_capacity));
        let bytes = Arc::new(Mutex::new(Vec::new()));
        let mid_stanza = Arc::new(AtomicBool::new(false));
        if let Hs::CutWrite(b) = hs {
            up.cut_after(b);
        }
        lock(&w.conns).push(ConnRecord {
            n,
            bytes: Arc::clone(&bytes),
            up: Arc::clone(&up),
            down: Arc::clone(&down),
            mid_stanza: Arc::clone(&mid_stanza),
            hs,
            run,
        });
        let (tx, rx) = mpsc::channel();
        let rec = Recorder {
            up: Arc::clone(&up),
            bytes,
        };
        let reader = thread::Builder::new()
            .name(format!("wire-read-{n}"))
            .spawn(move || read_client(rec, tx, mid_stanza))
            .map_err(Error::Io)?;
        let server = Server {
            w: Arc::clone(w),
            n,
            rng,
            rx,
            up: Arc::clone(&up),
            down: Arc::clone(&down),
            hs,
            run,
            received: 0,
            answers: 0,
            unanswered: Vec::new(),
            later: Vec::new(),
            draining: false,
            close_at: None,
            silent: false,
            upstream: HashMap::new(),
            upstream_sent: 0,
            fin: true,
        };
        let srv = thread::Builder::new()
            .name(format!("wire-ccs-{n}"))
            .spawn(move || server.run())
            .map_err(Error::Io)?;
        lock(&w.threads).extend([reader, srv]);
        let end = ClientEnd {
            up,
            down,
            read_timeout: None,
            write_timeout: None,
            nonblocking: false,
        };
        let mut cfg = w.cfg.clone();
        if let Some(d) = deadline {
            let left = d
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1));
            let t = &mut cfg.timeouts;
            t.handshake = Some(t.handshake.map_or(left, |h| h.min(left)));
        }
        let conn = Connection::from_stream(end, &cfg)?;
        Ok(Box::new(conn))
    }
}

/// The data value of message `id`: markup, quotes, `]]>` and non-ASCII, so
/// that the writer's escaping is exercised on every message.
fn value_of(id: &str) -> String {
    format!("<&>\"'{id}]]> é ✓ </gcm>&amp;")
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The server's end of one connection.
struct Server {
    w: Arc<World>,
    n: u64,
    rng: Rng,
    rx: Receiver<In>,
    up: Arc<Dir>,
    down: Arc<Dir>,
    hs: Hs,
    run: Run,
    /// Messages received, answers written.
    received: u32,
    answers: u32,
    /// Received and not answered, in arrival order.
    unanswered: Vec<String>,
    /// Slow answers: (due, id, answer).
    later: Vec<(Instant, String, Answer)>,
    draining: bool,
    close_at: Option<Instant>,
    silent: bool,
    /// Upstream messages sent here and not acked yet: id -> sender.
    upstream: HashMap<String, String>,
    upstream_sent: u32,
    /// Hang up with FIN (the client reads what was written) or RST.
    fin: bool,
}

/// Why the server stops serving a connection.
struct Hangup;

impl Server {
    fn run(mut self) {
        let _ = self.serve();
        self.w.record(self.n, What::Ended);
        if self.fin {
            self.down.close();
        } else {
            self.down.reset();
        }
        // The reader drains what is buffered, then reads EOF.
        self.up.close();
    }

    /// Writes `s` in random pieces (each one read separately).
    fn send(&mut self, s: &str) -> Result<(), Hangup> {
        let b = s.as_bytes();
        let mut at = 0;
        while at < b.len() {
            let n = if self.rng.chance(3) {
                1 + self.rng.below((b.len() - at) as u64) as usize
            } else {
                b.len() - at
            };
            let mut piece = &b[at..at + n];
            while !piece.is_empty() {
                match self.down.write(piece, Some(Duration::from_secs(5))) {
                    Ok(k) => piece = &piece[k..],
                    Err(_) => return Err(Hangup),
                }
            }
            at += n;
        }
        Ok(())
    }

    /// Writes a strict prefix of `s`, then hangs up.
    fn send_part(&mut self, s: &str) -> Result<(), Hangup> {
        let cut = 1 + self.rng.below(s.len() as u64 - 1) as usize;
        let _ = self
            .down
            .write(&s.as_bytes()[..cut], Some(Duration::from_secs(5)));
        Err(Hangup)
    }

    /// The next input, waiting at most until `until`; `Ok(None)` on time-out.
    fn next(&mut self, until: Instant) -> Result<Option<In>, Hangup> {
        let wait = until.saturating_duration_since(Instant::now());
        match self.rx.recv_timeout(wait) {
            Ok(In::Bad(why)) => {
                self.w
                    .violation(format!("conn {}: client wrote bad XML: {why}", self.n));
                let _ = self.send(STREAM_ERROR);
                Err(Hangup)
            }
            Ok(In::Eof) | Err(RecvTimeoutError::Disconnected) => Err(Hangup),
            Ok(i) => Ok(Some(i)),
            Err(RecvTimeoutError::Timeout) => Ok(None),
        }
    }

    /// During the handshake: the next input must come within 3 s.
    fn expect(&mut self) -> Result<In, Hangup> {
        self.next(Instant::now() + Duration::from_secs(3))?
            .ok_or(Hangup)
    }

    fn expect_header(&mut self, stage: &str) -> Result<(), Hangup> {
        match self.expect()? {
            In::Header => Ok(()),
            _ => {
                let n = self.n;
                self.w
                    .violation(format!("conn {n}: expected a stream header {stage}"));
                Err(Hangup)
            }
        }
    }

    fn expect_stanza(&mut self, stage: &str) -> Result<Elem, Hangup> {
        match self.expect()? {
            In::Stanza(el) => Ok(el),
            // The client gave up (its handshake timeout) and closes.
            In::StreamEnd => Err(Hangup),
            In::Header => {
                let n = self.n;
                self.w
                    .violation(format!("conn {n}: stream header instead of {stage}"));
                Err(Hangup)
            }
            In::Eof | In::Bad(_) => Err(Hangup),
        }
    }

    fn header(&mut self) -> Result<(), Hangup> {
        let id: String = (0..16)
            .map(|_| char::from(b"0123456789ABCDEF"[self.rng.below(16) as usize]))
            .collect();
        self.send(&format!(
            "<stream:stream from=\"gcm.googleapis.com\" id=\"{id}\" version=\"1.0\" \
             xmlns:stream=\"{NS_STREAM}\" xmlns=\"{NS_CLIENT}\">"
        ))
    }

    /// True (and counted) if the handshake fault is `stage`.
    fn hs_at(&self, stage: Hs) -> bool {
        let at = self.hs == stage;
        if at {
            self.w.fired(&format!("{stage:?}"));
        }
        at
    }

    fn handshake(&mut self) -> Result<(), Hangup> {
        let hs = self.hs;
        if self.hs_at(Hs::BeforeHeader) {
            return Err(Hangup);
        }
        self.expect_header("to open the stream")?;
        if self.hs_at(Hs::NoHeader) {
            // Wait for the client to give up.
            while self
                .next(Instant::now() + Duration::from_secs(3))?
                .is_some()
            {}
            return Err(Hangup);
        }
        self.header()?;
        let features = format!(
            "<stream:features><mechanisms xmlns=\"{NS_SASL}\"><mechanism>X-OAUTH2</mechanism>\
             <mechanism>PLAIN</mechanism></mechanisms></stream:features>"
        );
        if self.hs_at(Hs::MidFeatures) {
            return self.send_part(&features);
        }
        self.send(&features)?;
        let auth = self.expect_stanza("<auth>")?;
        let blob = base64::engine::general_purpose::STANDARD.decode(auth.text.trim());
        let want = format!("\0{SENDER}@gcm.googleapis.com\0{}", self.w.key);
        if !auth.is("auth", NS_SASL)
            || auth.attr("mechanism") != Some("PLAIN")
            || blob.as_deref() != Ok(want.as_bytes())
        {
            let n = self.n;
            self.w
                .violation(format!("conn {n}: bad <auth> (wrong credentials or shape)"));
            let _ = self.send(&format!(
                "<failure xmlns=\"{NS_SASL}\"><not-authorized/></failure>"
            ));
            return Err(Hangup);
        }
        match hs {
            Hs::AfterAuth => {
                self.w.fired("AfterAuth");
                self.w.refused_auth.store(true, Ordering::Relaxed);
                return Err(Hangup);
            }
            Hs::AuthFail => {
                self.w.fired("AuthFail");
                self.w.refused_auth.store(true, Ordering::Relaxed);
                self.send(&format!(
                    "<failure xmlns=\"{NS_SASL}\"><not-authorized/></failure>"
                ))?;
                // The client gives up; wait for it to go.
                while self
                    .next(Instant::now() + Duration::from_secs(3))?
                    .is_some()
                {}
                return Err(Hangup);
            }
            _ => {}
        }
        self.send(&format!("<success xmlns=\"{NS_SASL}\"/>"))?;
        if self.hs_at(Hs::AfterSuccess) {
            return Err(Hangup);
        }
        self.expect_header("after the restart")?;
        if self.hs_at(Hs::AfterRestart) {
            return Err(Hangup);
        }
        self.header()?;
        self.send(&format!(
            "<stream:features><bind xmlns=\"{NS_BIND}\"/><session xmlns=\"{NS_SESSION}\"/>\
             </stream:features>"
        ))?;
        let bind = self.expect_stanza("the bind iq")?;
        let resource = bind
            .child("bind", NS_BIND)
            .and_then(|b| b.child("resource", NS_BIND))
            .map(|r| r.text.clone());
        let (Some(id), Some(res)) = (bind.attr("id").map(str::to_string), resource) else {
            let n = self.n;
            self.w.violation(format!("conn {n}: bad bind iq {bind:?}"));
            return Err(Hangup);
        };
        let answer = format!(
            "<iq type=\"result\" id=\"{}\"><bind xmlns=\"{NS_BIND}\"><jid>{SENDER}@gcm.googleapis.com/{}{:08X}</jid></bind></iq>",
            escape(&id),
            escape(&res),
            self.n
        );
        if self.hs_at(Hs::MidBind) {
            return if self.rng.chance(2) {
                self.send_part(&answer)
            } else {
                Err(Hangup)
            };
        }
        self.send(&answer)?;
        // CCS sends waiting upstream messages right after bind, before the
        // session answer: the client keeps them for after the handshake.
        if self.rng.chance(4) {
            self.send_upstream()?;
        }
        if self.hs_at(Hs::AfterBind) {
            return Err(Hangup);
        }
        let session = self.expect_stanza("the session iq")?;
        if session.child("session", NS_SESSION).is_none() {
            let n = self.n;
            self.w
                .violation(format!("conn {n}: bad session iq {session:?}"));
            return Err(Hangup);
        }
        if self.hs_at(Hs::MidSession) {
            return Err(Hangup);
        }
        let id = escape(session.attr("id").unwrap_or(""));
        self.send(&format!("<iq type=\"result\" id=\"{id}\"/>"))
    }

    fn serve(&mut self) -> Result<(), Hangup> {
        self.handshake()?;
        self.fault_after(0)?;
        loop {
            self.due_answers()?;
            if self.close_at.is_some_and(|t| Instant::now() >= t)
                || (self.draining && self.unanswered.is_empty() && self.later.is_empty())
            {
                // A draining server closes its stream when done.
                let _ = self.send("</stream:stream>");
                return Err(Hangup);
            }
            let mut until = Instant::now() + Duration::from_secs(3);
            if let Some(t) = self.later.iter().map(|l| l.0).min() {
                until = until.min(t);
            }
            if let Some(t) = self.close_at {
                until = until.min(t);
            }
            let Some(input) = self.next(until)? else {
                if self.later.is_empty() && self.close_at.is_none() {
                    // Three seconds without a byte: the client is gone.
                    return Err(Hangup);
                }
                continue;
            };
            match input {
                In::StreamEnd => {
                    let _ = self.send("</stream:stream>");
                    return Err(Hangup);
                }
                In::Header => {
                    let n = self.n;
                    self.w
                        .violation(format!("conn {n}: a stream header after the handshake"));
                    return Err(Hangup);
                }
                In::Stanza(el) => self.stanza(el)?,
                In::Eof | In::Bad(_) => return Err(Hangup),
            }
        }
    }

    fn stanza(&mut self, el: Elem) -> Result<(), Hangup> {
        let n = self.n;
        if el.is("iq", NS_CLIENT) && el.child("ping", NS_PING).is_some() {
            if !self.silent {
                let id = escape(el.attr("id").unwrap_or(""));
                self.send(&format!(
                    "<iq from=\"gcm.googleapis.com\" id=\"{id}\" type=\"result\"/>"
                ))?;
            }
            return Ok(());
        }
        let Some(gcm) = el
            .child("gcm", NS_GCM)
            .filter(|_| el.is("message", NS_CLIENT))
        else {
            self.w
                .violation(format!("conn {n}: unexpected stanza {el:?}"));
            return Err(Hangup);
        };
        let json: miniserde::json::Value = match miniserde::json::from_str(gcm.text.trim()) {
            Ok(v) => v,
            Err(_) => {
                self.w.violation(format!(
                    "conn {n}: JSON the server cannot read: {:?}",
                    gcm.text
                ));
                return Err(Hangup);
            }
        };
        let field = |k: &str| match &json {
            miniserde::json::Value::Object(o) => o.get(k).cloned(),
            _ => None,
        };
        let text = |v: Option<miniserde::json::Value>| match v {
            Some(miniserde::json::Value::String(s)) => Some(s),
            _ => None,
        };
        let Some(id) = text(field("message_id")) else {
            self.w
                .violation(format!("conn {n}: message without message_id"));
            return Err(Hangup);
        };
        if let Some(kind) = field("message_type") {
            // An ack of an upstream message: only for one sent on this
            // connection, to its sender, once.
            let to = text(field("to")).unwrap_or_default();
            let ok = matches!(&kind, miniserde::json::Value::String(k) if k == "ack")
                && self.upstream.remove(&id).is_some_and(|from| from == to);
            if !ok {
                self.w.violation(format!(
                    "conn {n}: ack of {id} to {to:?}: not an upstream message out on this connection"
                ));
            }
            return Ok(());
        }
        if el.attr("id") != Some(id.as_str()) {
            self.w
                .violation(format!("conn {n}: stanza id {:?} for {id}", el.attr("id")));
        }
        let value = match field("data") {
            Some(miniserde::json::Value::Object(d)) => text(d.get("v").cloned()),
            _ => None,
        };
        if value.as_deref() != Some(value_of(&id).as_str()) {
            self.w
                .violation(format!("conn {n}: {id} arrived with data {value:?}"));
        }
        if self.unanswered.contains(&id) {
            self.w
                .violation(format!("conn {n}: {id} written twice while in flight"));
        }
        self.w.record(n, What::Wrote(id.clone()));
        self.received += 1;
        self.unanswered.push(id.clone());
        if self.unanswered.len() > self.w.max_pending {
            let k = self.unanswered.len();
            self.w.violation(format!(
                "conn {n}: {k} unanswered > max_pending {}",
                self.w.max_pending
            ));
        }
        if self.draining {
            return self.answer(&id, Answer::Nack("CONNECTION_DRAINING"));
        }
        if self.silent {
            return self.fault_after(self.received);
        }
        let odd = self.rng.below(1000) < self.w.odd_answers;
        let answer = if !odd {
            Answer::Ack
        } else {
            match self.rng.below(13) {
                0 => Answer::Nack("SERVICE_UNAVAILABLE"),
                1 => Answer::Nack("SERVICE_UNAVAILABLE"),
                2 => Answer::Nack("INTERNAL_SERVER_ERROR"),
                3 => Answer::Nack("CONNECTION_DRAINING"),
                4 => Answer::Nack("BAD_REGISTRATION"),
                5 => Answer::Nack("DEVICE_MESSAGE_RATE_EXCEEDED"),
                6 => Answer::Nack("DEVICE_UNREGISTERED"),
                7 => Answer::Nack("SOME_FUTURE_CODE"),
                8 => Answer::StanzaError,
                // No answer at all.
                9 => {
                    self.fault_after(self.received)?;
                    return Ok(());
                }
                _ => {
                    let due = Instant::now() + self.rng.ms(1, 15);
                    self.later.push((due, id, Answer::Ack));
                    return self.fault_after(self.received);
                }
            }
        };
        self.answer(&id, answer)?;
        if self.rng.chance(6) {
            self.send_upstream()?;
        }
        self.fault_after(self.received)
    }

    /// An upstream message from a device, which the client must ack here.
    fn send_upstream(&mut self) -> Result<(), Hangup> {
        self.upstream_sent += 1;
        let id = format!("up-{}-{}", self.n, self.upstream_sent);
        let from = format!("dev-{}", self.rng.below(5));
        let json = format!(
            r#"{{"from":"{from}","category":"app","message_id":"{id}","data":{{"t":"<&>]]>"}}}}"#
        );
        self.send(&format!(
            "<message to=\"{SENDER}@gcm.googleapis.com\" from=\"devices@gcm.googleapis.com\" \
             type=\"normal\"><gcm xmlns=\"{NS_GCM}\">{}</gcm></message>",
            escape(&json)
        ))?;
        self.upstream.insert(id, from);
        Ok(())
    }

    fn due_answers(&mut self) -> Result<(), Hangup> {
        let now = Instant::now();
        while let Some(i) = self.later.iter().position(|l| l.0 <= now) {
            let (_, id, a) = self.later.remove(i);
            if !self.silent {
                self.answer(&id, a)?;
            }
        }
        Ok(())
    }

    fn answer(&mut self, id: &str, a: Answer) -> Result<(), Hangup> {
        let gcm = |json: String| {
            format!(
                "<message><data:gcm xmlns:data=\"{NS_GCM}\">{}</data:gcm></message>",
                escape(&json)
            )
        };
        let stanza = match &a {
            Answer::Ack => gcm(format!(
                r#"{{"message_type":"ack","message_id":"{id}","from":"tok"}}"#
            )),
            Answer::Nack(code) => gcm(format!(
                r#"{{"message_type":"nack","message_id":"{id}","from":"tok","error":"{code}","error_description":"<{code}>"}}"#
            )),
            Answer::StanzaError => format!(
                "<message id=\"{id}\" type=\"error\" to=\"{SENDER}@gcm.googleapis.com/x\">\
                 <gcm xmlns=\"{NS_GCM}\">{}</gcm><error code=\"400\" type=\"modify\">\
                 <bad-request xmlns=\"urn:ietf:params:xml:ns:xmpp-stanzas\"/></error></message>",
                escape(&format!(r#"{{"to":"tok","message_id":"{id}"}}"#))
            ),
        };
        // CCS's whitespace keepalive, now and then between stanzas.
        let stanza = if self.rng.chance(6) {
            format!(" {stanza}")
        } else {
            stanza
        };
        let at = self.answers;
        self.answers += 1;
        if self.run == (Run::CutOwn { at }) {
            self.w.fired("CutOwn");
            return self.send_part(&stanza);
        }
        self.send(&stanza)?;
        self.unanswered.retain(|u| u != id);
        if a == Answer::Nack("CONNECTION_DRAINING") {
            self.start_draining();
        }
        let ack = a == Answer::Ack;
        self.w.record(self.n, What::Answered(id.to_string(), a));
        // Now and then the same ack twice, an ack for a message never sent,
        // or a control message of a type the client does not know.
        match self.rng.below(40) {
            0 if ack => self.send(&stanza)?,
            1 => self.send(&format!(
                "<message><data:gcm xmlns:data=\"{NS_GCM}\">{{\"message_type\":\"ack\",\
                 \"message_id\":\"zz-{}\",\"from\":\"tok\"}}</data:gcm></message>",
                self.n
            ))?,
            2 => self.send(&format!(
                "<message><data:gcm xmlns:data=\"{NS_GCM}\">{{\"message_type\":\"control\",\
                 \"control_type\":\"SOMETHING_NEW\"}}</data:gcm></message>"
            ))?,
            _ => {}
        }
        Ok(())
    }

    fn start_draining(&mut self) {
        if !self.draining {
            self.draining = true;
            let close_in = self.rng.ms(5, 60);
            self.close_at = Some(Instant::now() + close_in);
        }
    }

    /// The connection's fault, once `after` messages have arrived.
    fn fault_after(&mut self, received: u32) -> Result<(), Hangup> {
        let fires = match self.run {
            Run::None | Run::CutOwn { .. } => false,
            Run::Drop { after, .. }
            | Run::CutClient { after, .. }
            | Run::Garbage { after, .. }
            | Run::Oversize { after }
            | Run::BadJson { after }
            | Run::Drain { after, .. }
            | Run::Silent { after }
            | Run::StreamError { after } => after == received,
        };
        if fires {
            self.w.fired(&fault_name(&self.run));
        }
        match self.run {
            Run::Drop { after, rst } if after == received => {
                self.fin = !rst;
                Err(Hangup)
            }
            Run::CutClient { after, bytes } if after == received => {
                self.up.cut_after(bytes);
                Ok(())
            }
            Run::Garbage { after, kind } if after == received => {
                let junk = match kind {
                    0 => "<<not xml>",
                    1 => "</message>",
                    2 => "<message><gcm xmlns=\"google:mobile:data\">&bogus;</gcm></message>",
                    _ => "<message a=\"1\" a=\"2\"/>",
                };
                self.send(junk)
            }
            Run::Oversize { after } if after == received => {
                let big = "x".repeat(MAX_STANZA + 512);
                self.send(&format!(
                    "<message><gcm xmlns=\"{NS_GCM}\">{{\"from\":\"dev\",\"message_id\":\"u-1\",\
                     \"category\":\"c\",\"data\":{{\"b\":\"{big}\"}}}}</gcm></message>"
                ))
            }
            Run::BadJson { after } if after == received => self.send(&format!(
                "<message><data:gcm xmlns:data=\"{NS_GCM}\">{{\"message_type\":\"ack\",</data:gcm></message>"
            )),
            Run::Drain { after, close_in } if after == received => {
                self.send(&format!(
                    "<message><data:gcm xmlns:data=\"{NS_GCM}\">{{\"message_type\":\"control\",\
                     \"control_type\":\"CONNECTION_DRAINING\"}}</data:gcm></message>"
                ))?;
                self.draining = true;
                self.close_at = Some(Instant::now() + close_in);
                Ok(())
            }
            Run::StreamError { after } if after == received => {
                let _ = self.send(STREAM_ERROR);
                Err(Hangup)
            }
            Run::Silent { after } if after == received => {
                self.silent = true;
                self.later.clear();
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

// ----- one schedule -----

struct Outcome {
    /// Accepted message ids in acceptance order.
    accepted: Vec<String>,
    events: Vec<ClientEvent>,
    /// How many of `events` came before `shutdown` was called.
    before_shutdown: usize,
    left: Vec<Message>,
    shutdown_timeout: Duration,
    shutdown_took: Duration,
    /// When `shutdown` was called.
    shutdown_at: Instant,
    cfg: ClientConfig,
}

fn client_config(rng: &mut Rng, key: &str) -> ClientConfig {
    let max_pending = 1 + rng.below(8) as usize;
    let keepalive = Keepalive::default()
        .whitespace_after(rng.chance(2).then(|| rng.ms(3, 30)))
        .ping_after(Some(rng.ms(20, 60)))
        .dead_after(rng.ms(60, 150));
    let conn = Config::new(SENDER, key)
        .max_pending(max_pending)
        .max_stanza_size(MAX_STANZA)
        .handshake_timeout(Some(rng.ms(150, 400)))
        .close_timeout(Some(rng.ms(5, 50)))
        .read_timeout(Some(Duration::from_secs(2)))
        .write_timeout(Some(Duration::from_secs(2)))
        .keepalive(keepalive);
    ClientConfig::new(conn)
        .connections(1 + rng.below(3) as usize)
        .queue_capacity(4 + rng.below(60) as usize)
        .retry_backoff(Backoff::new(rng.ms(1, 5), Duration::from_millis(20)))
        .max_retries(1 + rng.below(4) as u32)
        .reconnect_backoff(Backoff::new(rng.ms(1, 5), Duration::from_millis(20)))
        .stable_after(rng.ms(10, 80))
        .max_losses(2 + rng.below(3) as u32)
        .drain_timeout(rng.ms(50, 200))
        .rate_limited_retry(rng.chance(3).then(|| rng.ms(1, 5)))
        .poll_interval(Duration::from_millis(1))
        .send_timeout(Duration::from_millis(50))
        .drop_timeout(Duration::from_millis(200))
        .ack_mode(if rng.chance(3) {
            AckMode::Manual
        } else {
            AckMode::Auto
        })
}

/// Keeps an event; in manual ack mode, acks an upstream message first.
fn handle(client: &Client, ev: ClientEvent, got: &mut Vec<ClientEvent>) {
    if let ClientEvent::Upstream { ack: Some(h), .. } = &ev {
        // Fails when its connection is gone: CCS delivers it again.
        let _ = client.ack(h);
    }
    got.push(ev);
}

fn run_schedule(seed: u64) -> (Arc<World>, Outcome) {
    let mut rng = Rng::new(seed);
    let key = format!("k3y/+={seed}&<x>");
    let cfg = client_config(&mut rng, &key);
    let world = Arc::new(World {
        seed,
        key,
        max_pending: cfg.connection.max_pending,
        fatal_ok: rng.chance(8),
        refuse: 2 + rng.below(10),
        hs_fault: 2 + rng.below(6),
        run_fault: 1 + rng.below(3),
        odd_answers: rng.below(400),
        pipe_capacity: if rng.chance(3) {
            16 + rng.below(512) as usize
        } else {
            16 << 10
        },
        attempts: AtomicU64::new(0),
        log: Mutex::new(Vec::new()),
        violations: Mutex::new(Vec::new()),
        conns: Mutex::new(Vec::new()),
        threads: Mutex::new(Vec::new()),
        refused_auth: AtomicBool::new(false),
        fired: Mutex::new(BTreeMap::new()),
        cfg: cfg.connection.clone(),
    });
    let (client, mut events) =
        Client::start_with(cfg.clone(), WireCcs(Arc::clone(&world))).expect("the client starts");
    let mut got = Vec::new();
    let mut accepted = Vec::new();
    let total = 5 + rng.below(40);
    for i in 0..total {
        let id = format!("w{i}");
        let m = Message::to("tok").message_id(&id).data("v", value_of(&id));
        if client.send(m).is_ok() {
            accepted.push(id);
        }
        if rng.chance(3) {
            thread::sleep(rng.ms(0, 3));
        }
        while let Ok(ev) = events.try_recv() {
            handle(&client, ev, &mut got);
        }
    }
    // Let it run a while (to the end, often), then shut down at a random moment.
    let settle = Instant::now() + rng.ms(0, 400);
    while Instant::now() < settle && got.iter().filter(|e| e.is_outcome()).count() < accepted.len()
    {
        if let Ok(ev) = events.recv_timeout(Duration::from_millis(5)) {
            handle(&client, ev, &mut got);
        }
    }
    let shutdown_timeout = rng.ms(0, 150);
    let before_shutdown = got.len();
    let t0 = Instant::now();
    let left = client.shutdown(shutdown_timeout);
    let shutdown_took = t0.elapsed();
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        match events.recv_timeout(until.saturating_duration_since(Instant::now())) {
            Ok(ev) => got.push(ev),
            Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => {
                world.violation("the event stream did not end 5 s after shutdown".into());
                break;
            }
        }
    }
    (
        world,
        Outcome {
            accepted,
            events: got,
            before_shutdown,
            left,
            shutdown_timeout,
            shutdown_took,
            shutdown_at: t0,
            cfg,
        },
    )
}

/// Waits (bounded) for the server threads, then judges the schedule.
fn judge_schedule(w: &World, out: &Outcome, stats: &mut BTreeMap<String, u64>) -> Vec<String> {
    let until = Instant::now() + Duration::from_secs(10);
    let threads = std::mem::take(&mut *lock(&w.threads));
    for t in threads {
        while !t.is_finished() && Instant::now() < until {
            thread::sleep(Duration::from_millis(2));
        }
        if !t.is_finished() {
            w.violation("a server thread still runs 10 s after shutdown".into());
            continue;
        }
        if t.join().is_err() {
            w.violation("a server thread panicked".into());
        }
    }
    let mut v = std::mem::take(&mut *lock(&w.violations));
    let log = lock(&w.log).clone();
    let seq: HashMap<&str, usize> = out
        .accepted
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), i))
        .collect();

    // Every byte the client wrote is well-formed; a stanza is cut short only
    // where a write failed.
    for c in lock(&w.conns).iter() {
        let bytes = lock(&c.bytes).clone();
        if let Err(e) = judge::check_stream(&bytes) {
            v.push(format!(
                "conn {} ({:?}, {:?}): not well-formed: {e}",
                c.n, c.hs, c.run
            ));
        }
        let cut = bytes.iter().rposition(|&b| b == b'>').map_or(0, |i| i + 1);
        let tail_text = bytes[cut..].iter().any(|b| !b.is_ascii_whitespace());
        let (failed, cut) = {
            let st = c.up.lock();
            (st.write_failed, st.cut_at.is_some_and(|at| st.total >= at))
        };
        let partial = c.mid_stanza.load(Ordering::Relaxed) || tail_text;
        if cut {
            *stats.entry("client writes cut".into()).or_default() += 1;
        }
        if partial && failed {
            *stats.entry("client stanzas cut short".into()).or_default() += 1;
        }
        if partial && !failed {
            v.push(format!(
                "conn {} ({:?}, {:?}): the client's bytes end inside a stanza, no write failed",
                c.n, c.hs, c.run
            ));
        }
    }

    // An ack the client read is reported. Judged where that is certain: the
    // client reported the connection lost before `shutdown` was called (so
    // it handled all it had read), read every byte the server wrote, never
    // failed a write there (it stops reading then), and the server sent no
    // garbage (the client stops at the first bad stanza).
    let delivered: HashSet<&str> = out
        .events
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Delivered { message, .. } => Some(message.id()),
            _ => None,
        })
        .collect();
    let lost_early: HashSet<String> = out.events[..out.before_shutdown]
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Lost { jid, .. } => jid.get(jid.len().saturating_sub(8)..),
            _ => None,
        })
        .map(str::to_string)
        .collect();
    for c in lock(&w.conns).iter() {
        let drained = {
            let d = c.down.lock();
            d.segs.is_empty() && !d.reset
        };
        let clean = !matches!(c.run, Run::Garbage { .. } | Run::Oversize { .. })
            && !c.up.lock().write_failed;
        if !(drained && clean && lost_early.contains(&format!("{:08X}", c.n))) {
            continue;
        }
        *stats
            .entry("connections judged for lost acks".into())
            .or_default() += 1;
        for r in log.iter().filter(|r| r.conn == c.n) {
            if let What::Answered(id, Answer::Ack) = &r.what {
                if !delivered.contains(id.as_str()) {
                    v.push(format!(
                        "conn {} ({:?}, {:?}): the client read the ack of {id} and never reported it",
                        c.n, c.hs, c.run
                    ));
                }
            }
        }
    }

    // Exactly one final outcome per accepted message, matching the server.
    let mut outcomes: HashMap<String, u32> = HashMap::new();
    let answered = |id: &str, want: &dyn Fn(&Answer) -> bool| {
        log.iter()
            .any(|r| matches!(&r.what, What::Answered(i, a) if i == id && want(a)))
    };
    let fatal = out.events.iter().find_map(|e| match e {
        ClientEvent::Fatal { error } => Some(error.to_string()),
        _ => None,
    });
    for ev in &out.events {
        let kind = format!("{ev:?}");
        let kind = kind.split([' ', '{', '(']).next().unwrap_or("");
        *stats.entry(format!("event {kind}")).or_default() += 1;
        if let ClientEvent::Fatal { error } = ev {
            let expected = matches!(**error, Error::AuthFailed { .. })
                && w.refused_auth.load(Ordering::Relaxed);
            if !expected {
                v.push(format!("unexpected Fatal: {error}"));
            }
        }
        let Some(m) = ev.message() else { continue };
        let id = m.id().to_string();
        *outcomes.entry(id.clone()).or_default() += 1;
        match ev {
            ClientEvent::Delivered { .. } if !answered(&id, &|a| *a == Answer::Ack) => {
                v.push(format!("{id} delivered, the server never acked it"));
            }
            ClientEvent::Rejected { reason, .. } => {
                let ok = match reason {
                    Rejection::Nack(n) => answered(
                        &id,
                        &|a| matches!(a, Answer::Nack(c) if *c == n.code.as_str()),
                    ),
                    Rejection::StanzaError(_) => answered(&id, &|a| *a == Answer::StanzaError),
                    _ => false,
                };
                if !ok {
                    v.push(format!(
                        "{id} rejected ({reason}), the server never said so"
                    ));
                }
            }
            ClientEvent::Returned {
                reason: ReturnReason::RetriesExhausted(code),
                ..
            } => {
                // Every retried NACK counts, whatever its code.
                let nacks = log
                    .iter()
                    .filter(|r| {
                        matches!(&r.what, What::Answered(i, Answer::Nack(c))
                            if *i == id && !matches!(*c, "BAD_REGISTRATION" | "DEVICE_UNREGISTERED"))
                    })
                    .count() as u32;
                if nacks <= out.cfg.max_retries {
                    v.push(format!("{id} returned after {nacks} {code} NACKs"));
                }
            }
            ClientEvent::Returned {
                reason: ReturnReason::Fatal(_),
                ..
            } if fatal.is_none() => v.push(format!("{id} returned as fatal, no Fatal event")),
            _ => {}
        }
    }
    for m in &out.left {
        *outcomes.entry(m.id().to_string()).or_default() += 1;
    }
    for id in &out.accepted {
        match outcomes.get(id) {
            Some(1) => {}
            n => v.push(format!("{id} has {} outcomes", n.copied().unwrap_or(0))),
        }
    }
    for id in outcomes.keys() {
        if !seq.contains_key(id.as_str()) {
            v.push(format!("an outcome for {id}, never accepted"));
        }
    }
    let left: Vec<usize> = out.left.iter().map(|m| seq[m.id()]).collect();
    if left.windows(2).any(|p| p[0] > p[1]) {
        v.push(format!(
            "shutdown's list is not in acceptance order: {left:?}"
        ));
    }

    // Messages coming back from a connection reach the next one in order;
    // a retry on the same connection after a backoff NACK waits for it.
    check_returns(&log, &seq, out.cfg.retry_backoff.initial, &mut v, stats);
    for (k, n) in lock(&w.fired).iter() {
        *stats.entry(format!("fault {k}")).or_default() += n;
    }
    *stats.entry("shutdown list".into()).or_default() += out.left.len() as u64;

    // Nothing new is written after the shutdown deadline: the server reads
    // a write a little after it was made, so it allows the same slack.
    let deadline = out.shutdown_at + out.shutdown_timeout;
    for r in &log {
        if let What::Wrote(id) = &r.what {
            if r.at > deadline {
                *stats
                    .entry("received after the deadline".into())
                    .or_default() += 1;
            }
            if r.at > deadline + SHUTDOWN_SLACK {
                let late = r.at - deadline;
                v.push(format!(
                    "{id} reached conn {} {late:?} after the deadline",
                    r.conn
                ));
            }
        }
    }
    if out.shutdown_took > out.shutdown_timeout + SHUTDOWN_SLACK {
        v.push(format!(
            "shutdown({:?}) took {:?}",
            out.shutdown_timeout, out.shutdown_took
        ));
    }
    v
}

/// Messages that come back from connection `k` (unanswered when it ended, or
/// NACKed CONNECTION_DRAINING on it) are written next in acceptance order
/// wherever they land: `a` before `b` when `a` was accepted first and came
/// back no later than `b` (a drain NACK comes back when the client reads it,
/// everything still pending when the connection ends).
fn check_returns(
    log: &[Rec],
    seq: &HashMap<&str, usize>,
    initial: Duration,
    v: &mut Vec<String>,
    stats: &mut BTreeMap<String, u64>,
) {
    // (id, from connection, came back at (log position; MAX: at the end), written at)
    let mut back: Vec<(String, u64, usize, usize)> = Vec::new();
    let mut open: HashMap<u64, Vec<(String, usize)>> = HashMap::new();
    for (pos, r) in log.iter().enumerate() {
        match &r.what {
            What::Wrote(id) => open.entry(r.conn).or_default().push((id.clone(), pos)),
            What::Answered(id, a) => {
                let list = open.entry(r.conn).or_default();
                if let Some(i) = list.iter().position(|(u, _)| u == id) {
                    let (_, wrote) = list.remove(i);
                    if *a == Answer::Nack("CONNECTION_DRAINING") {
                        back.push((id.clone(), r.conn, pos, wrote));
                    }
                    let backoff = matches!(
                        a,
                        Answer::Nack(
                            "SERVICE_UNAVAILABLE" | "INTERNAL_SERVER_ERROR" | "SOME_FUTURE_CODE"
                        )
                    );
                    if backoff {
                        let next = log[pos..]
                            .iter()
                            .find(|n| matches!(&n.what, What::Wrote(i) if i == id));
                        if let Some(n) = next.filter(|n| n.conn == r.conn) {
                            *stats.entry("backoff gaps checked".into()).or_default() += 1;
                            let gap = n.at.saturating_duration_since(r.at);
                            if gap < initial {
                                v.push(format!(
                                    "{id} retried {gap:?} after {a:?} on conn {}, backoff {initial:?}",
                                    r.conn
                                ));
                            }
                        }
                    }
                }
            }
            What::Ended => {
                for (id, wrote) in open.remove(&r.conn).unwrap_or_default() {
                    back.push((id, r.conn, usize::MAX, wrote));
                }
            }
        }
    }
    // Where each comes back: its next write after the one on `k`.
    let mut next: Vec<(u64, u64, usize, usize, usize, &str)> = Vec::new();
    for (id, k, came, wrote) in &back {
        let Some(&s) = seq.get(id.as_str()) else {
            continue;
        };
        let again = log[wrote + 1..]
            .iter()
            .enumerate()
            .find(|(_, n)| matches!(&n.what, What::Wrote(i) if i == id));
        if let Some((off, n)) = again {
            next.push((*k, n.conn, s, *came, wrote + 1 + off, id));
        }
    }
    // Where each connection ended. A message that came back may be handed
    // to another connection that dies before (or while) writing it: it comes
    // back once more, unseen, and its next write seen is no longer its next
    // write. So a pair is judged only when no connection but the two ended
    // between `a` coming back and its next write.
    let ended: Vec<(usize, u64)> = log
        .iter()
        .enumerate()
        .filter(|(_, r)| matches!(r.what, What::Ended))
        .map(|(pos, r)| (pos, r.conn))
        .collect();
    for a in &next {
        let came = match a.3 {
            usize::MAX => ended
                .iter()
                .find(|(_, c)| *c == a.0)
                .map_or(usize::MAX, |(pos, _)| *pos),
            pos => pos,
        };
        let detour = ended
            .iter()
            .any(|&(pos, c)| c != a.0 && c != a.1 && pos > came && pos < a.4);
        if detour {
            *stats
                .entry("resend pairs skipped (another connection ended between)".into())
                .or_default() += 1;
            continue;
        }
        for b in &next {
            let same = a.0 == b.0 && a.1 == b.1;
            if same && a.2 < b.2 && a.3 <= b.3 {
                *stats.entry("resend pairs checked".into()).or_default() += 1;
            }
            if same && a.2 < b.2 && a.3 <= b.3 && a.4 > b.4 {
                v.push(format!(
                    "{} and {} came back from conn {} and reached conn {} out of acceptance order",
                    a.5, b.5, a.0, a.1
                ));
            }
        }
    }
}

#[test]
fn wire_fault_schedules() {
    let started = Instant::now();
    let seeds = super::seeds("WIRE", 70, 0x3172_0000);
    let mut violations = 0;
    let mut stats: BTreeMap<String, u64> = BTreeMap::new();
    for &seed in &seeds {
        let result = panic::catch_unwind(AssertUnwindSafe(|| {
            let (world, out) = run_schedule(seed);
            let mut st = BTreeMap::new();
            let v = judge_schedule(&world, &out, &mut st);
            *st.entry("connections".into()).or_default() += lock(&world.conns).len() as u64;
            let received = lock(&world.log)
                .iter()
                .filter(|r| matches!(r.what, What::Wrote(_)))
                .count();
            *st.entry("messages received".into()).or_default() += received as u64;
            (v, st)
        }));
        let v = match result {
            Ok((v, st)) => {
                for (k, n) in st {
                    *stats.entry(k).or_default() += n;
                }
                v
            }
            Err(p) => {
                vec![format!("panicked: {}", super::panic_text(&*p))]
            }
        };
        if !v.is_empty() {
            violations += v.len();
            eprintln!(
                "seed {seed} (replay: WIRE_SEED={seed} cargo test --all-features --test simulation wire)"
            );
            for line in &v {
                eprintln!("    {line}");
            }
        }
    }
    let tally: Vec<String> = stats.iter().map(|(k, n)| format!("{k}: {n}")).collect();
    println!("wire ({:?}): {}", started.elapsed(), tally.join(", "));
    println!(
        "wire schedules: {}, invariant violations: {violations}",
        seeds.len()
    );
    assert_eq!(violations, 0, "see the seeds above");
}
