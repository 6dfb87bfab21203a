//! A local CCS server for tests, demos and users' own tests (cargo feature `emulator`).
//!
//! [`Emulator`] is a real server: a [`TcpListener`] wrapped with a native-tls acceptor, one
//! thread per connection, speaking the CCS wire protocol ([`crate::protocol`], from the
//! [handshake](crate::protocol#handshake) on; what it reproduces is listed under
//! [emulator fidelity](crate::protocol#emulator-fidelity)) and validating
//! what clients send as CCS does. Tests script it while it runs (rejected tokens, transient
//! NACKs, delayed ACKs, upstream injection, draining, abrupt drops, raw bytes) and read back a
//! [`Ledger`] of everything it saw.
//!
//! ```
//! use fcm_xmpp::Emulator;
//! let emu = Emulator::start("123456789012", "test-server-key")?;
//! let config = emu.client_config(); // endpoint, credentials and the emulator's test CA
//! assert_eq!(config.endpoint.port, emu.addr().port());
//! assert!(emu.connections().is_empty());
//! emu.shutdown();
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! # What it does like CCS
//! TLS from the first byte with a committed self-signed certificate for `localhost` and
//! `127.0.0.1` ([`Emulator::cert_pem`]); stream headers with 16-hex-digit ids; SASL PLAIN in
//! the encodings CCS accepted (anything else gets `not-authorized`, bad base64
//! `incorrect-encoding`); bind appends 8 hex digits to the resource; session and XEP-0199 pings
//! answered; ACK/NACK/control as prefixed `data:gcm` without attributes; upstream and receipts
//! from `devices@gcm.googleapis.com` with `type="normal"`; stanza error 400 for a missing
//! `message_id` and 406 for an ACK of something not delivered on that connection; INVALID_JSON
//! NACKs for invalid fields; un-acked upstream and receipts redelivered on a later connection;
//! draining; whitespace keepalives.
//!
//! # Resource use
//! One thread per connection (at most [`EmulatorBuilder::max_connections`]), reading with a
//! 5 ms timeout so it can also run timers and script commands. Per-connection buffers are
//! bounded: the stanza size limit for input, one read block's answers for output, at most
//! [`MAX_DELAYED`] held-back answers and [`WINDOW`] un-acked upstream messages in flight.
//! What grows with traffic is data a test asked for: the [`Ledger`] keeps every message id
//! until the emulator is dropped (switch that off with [`EmulatorBuilder::record_ids`]), and
//! upstream messages and receipts wait, un-acked, until a client acks them. The observer
//! channel is unbounded: read it, or do not install one.
//!
//! # Not emulated
//! Real delivery to devices (every valid message is ACKed unless a script says otherwise),
//! `registration_id` canonical-token hints in ACKs, topics and notification keys as
//! anything but opaque targets, TTL expiry of stored upstream messages, rate limits
//! (script them with [`Emulator::reject_token`] or [`Emulator::transient_nacks`]), and
//! the X-OAUTH2 / X-GOOGLE-TOKEN mechanisms (offered, and accepted with the same
//! `\0user\0key` payload as PLAIN).

mod json;
mod ledger;
mod outbound;
mod script;
mod session;
mod shared;
mod wire;

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use native_tls::{Identity, TlsAcceptor};

use crate::config::{Config, Endpoint, ServerKey};
use crate::event::NackCode;

pub use json::{event_json, stanza_error_element, write_event_json};
pub use ledger::{ConnLedger, Ledger};

use outbound::OutKind;
use script::{ScriptCell, TransientRule};
use shared::{accept_loop, lock, Command, Settings, Shared, State};

/// The emulator's certificate (PEM), self-signed, for `localhost` and `127.0.0.1`.
const CERT_PEM: &[u8] = include_bytes!("testdata/cert.pem");
/// The matching private key (PKCS#8 PEM). Public on purpose: it protects nothing.
const KEY_PEM: &[u8] = include_bytes!("testdata/key.pem");

/// How many bytes clients write an emulator records by default (over all connections), so
/// that a test can judge the client's wire with its own parser; see
/// [`EmulatorBuilder::record_client_bytes`].
pub const DEFAULT_RECORD_BYTES: usize = 256 * 1024;

/// Most answers a connection holds back under [`Emulator::set_ack_delay`]; a client that
/// pushes past this (ten times the CCS window) gets a `policy-violation` stream error.
pub const MAX_DELAYED: usize = 1000;

/// The CCS limit of pending downstream messages per connection
/// ([protocol: flow control](crate::protocol#flow-control)).
pub const WINDOW: usize = 100;

/// The shortest [`EmulatorBuilder::poll_interval`].
const MIN_POLL: Duration = Duration::from_micros(100);
/// The longest poll interval: a session sees the stop flag within it.
const MAX_POLL: Duration = Duration::from_secs(1);

/// Identifies one connection to the emulator (numbered from 1 in order of acceptance).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(pub u64);

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "conn#{}", self.0)
    }
}

/// How the emulator answered one downstream message.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DownstreamOutcome {
    /// ACKed.
    Acked,
    /// NACKed with this code.
    Nacked(NackCode),
    /// Never answered: the connection was dropped right after it arrived.
    Dropped,
}

impl fmt::Display for DownstreamOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DownstreamOutcome::Acked => f.write_str("ack"),
            DownstreamOutcome::Nacked(code) => write!(f, "nack {}", code.as_str()),
            DownstreamOutcome::Dropped => f.write_str("dropped unanswered"),
        }
    }
}

/// Something that happened in the emulator, sent to the [`EmulatorBuilder::observer`].
/// `Display` prints one readable line.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EmulatorEvent {
    /// A TCP connection was accepted.
    Opened {
        /// The new connection.
        conn: ConnId,
        /// The client's address.
        peer: SocketAddr,
    },
    /// A connection authenticated and bound a resource.
    Authenticated {
        /// The connection.
        conn: ConnId,
        /// The full JID it was given.
        jid: String,
    },
    /// SASL authentication was refused.
    AuthFailed {
        /// The connection.
        conn: ConnId,
        /// The SASL failure condition and why.
        reason: String,
    },
    /// A connection ended.
    Closed {
        /// The connection.
        conn: ConnId,
        /// Why it ended.
        reason: String,
    },
    /// A downstream message was answered (or dropped unanswered).
    Downstream {
        /// The connection it arrived on.
        conn: ConnId,
        /// Its `message_id`.
        message_id: String,
        /// Its `to` (or `condition`); empty if the message was invalid before that was known.
        target: String,
        /// The answer.
        outcome: DownstreamOutcome,
        /// When the answer was written (or the message dropped): the emulator's
        /// own clock, free of the observer's scheduling delays.
        at: Instant,
    },
    /// A stanza error was sent.
    StanzaError {
        /// The connection.
        conn: ConnId,
        /// The stanza `id` it echoes.
        id: Option<String>,
        /// 400 (bad request) or 406 (ack not acceptable).
        code: u16,
        /// Why.
        reason: String,
    },
    /// A downstream message arrived while 100 or more were already pending.
    WindowViolation {
        /// The connection.
        conn: ConnId,
        /// How many were pending, this one included.
        pending: usize,
    },
    /// An upstream message was written to a connection.
    UpstreamSent {
        /// The connection.
        conn: ConnId,
        /// The upstream `message_id`.
        message_id: String,
    },
    /// The client acked an upstream message.
    UpstreamAcked {
        /// The connection.
        conn: ConnId,
        /// The upstream `message_id`.
        message_id: String,
    },
    /// A delivery receipt was written to a connection.
    ReceiptSent {
        /// The connection.
        conn: ConnId,
        /// The receipt id (`dr2:...`).
        message_id: String,
    },
    /// The client acked a delivery receipt.
    ReceiptAcked {
        /// The connection.
        conn: ConnId,
        /// The receipt id (`dr2:...`).
        message_id: String,
    },
    /// Draining started: control `CONNECTION_DRAINING` sent.
    DrainStarted {
        /// The connection.
        conn: ConnId,
    },
}

impl fmt::Display for EmulatorEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EmulatorEvent::Opened { conn, peer } => write!(f, "{conn} opened from {peer}"),
            EmulatorEvent::Authenticated { conn, jid } => {
                write!(f, "{conn} authenticated as {jid}")
            }
            EmulatorEvent::AuthFailed { conn, reason } => {
                write!(f, "{conn} authentication refused: {reason}")
            }
            EmulatorEvent::Closed { conn, reason } => write!(f, "{conn} closed: {reason}"),
            EmulatorEvent::Downstream {
                conn,
                message_id,
                target,
                outcome,
                ..
            } => write!(
                f,
                "{conn} downstream {message_id:?} to {target:?}: {outcome}"
            ),
            EmulatorEvent::StanzaError {
                conn,
                id,
                code,
                reason,
            } => match id {
                Some(id) => write!(f, "{conn} stanza error {code} for id {id:?}: {reason}"),
                None => write!(f, "{conn} stanza error {code}: {reason}"),
            },
            EmulatorEvent::WindowViolation { conn, pending } => write!(
                f,
                "{conn} window violation: {pending} downstream messages pending (limit {WINDOW})"
            ),
            EmulatorEvent::UpstreamSent { conn, message_id } => {
                write!(f, "{conn} upstream {message_id:?} sent")
            }
            EmulatorEvent::UpstreamAcked { conn, message_id } => {
                write!(f, "{conn} upstream {message_id:?} acked")
            }
            EmulatorEvent::ReceiptSent { conn, message_id } => {
                write!(f, "{conn} receipt {message_id:?} sent")
            }
            EmulatorEvent::ReceiptAcked { conn, message_id } => {
                write!(f, "{conn} receipt {message_id:?} acked")
            }
            EmulatorEvent::DrainStarted { conn } => {
                write!(f, "{conn} draining (CONNECTION_DRAINING sent)")
            }
        }
    }
}

/// What one client connection wrote, recorded when
/// [`EmulatorBuilder::record_client_bytes`] is on. `Debug` shows sizes only: the bytes hold
/// the SASL exchange.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientBytes {
    /// The connection.
    pub conn: ConnId,
    /// Every byte the client wrote, in order (or the first ones, see `complete`).
    pub bytes: Vec<u8>,
    /// False when the recording budget ran out during this connection: `bytes` is a prefix.
    pub complete: bool,
}

impl fmt::Debug for ClientBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBytes")
            .field("conn", &self.conn)
            .field("len", &self.bytes.len())
            .field("complete", &self.complete)
            .finish()
    }
}

/// Configures and starts an [`Emulator`].
#[derive(Debug, Clone)]
pub struct EmulatorBuilder {
    sender_id: String,
    /// Redacted in `Debug` (a [`ServerKey`]).
    server_key: ServerKey,
    bind: SocketAddr,
    keepalive: Duration,
    drain_grace: Duration,
    handshake_timeout: Duration,
    category: String,
    record_ids: bool,
    max_stanza_size: usize,
    max_connections: usize,
    poll: Duration,
    observer: Option<Sender<EmulatorEvent>>,
    record_client_bytes: usize,
    identity: Option<IdentityPem>,
}

/// A certificate chain and its private key, PEM; `Debug` leaves the key out.
#[derive(Clone)]
struct IdentityPem {
    cert: Vec<u8>,
    key: Vec<u8>,
}

impl fmt::Debug for IdentityPem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdentityPem")
            .field("cert", &format_args!("{} bytes", self.cert.len()))
            .field("key", &format_args!("<redacted>"))
            .finish()
    }
}

impl Default for EmulatorBuilder {
    fn default() -> Self {
        EmulatorBuilder {
            sender_id: "123456789012".to_string(),
            server_key: ServerKey::new("emulator-server-key"),
            bind: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            keepalive: Duration::from_secs(30),
            drain_grace: Duration::from_millis(200),
            handshake_timeout: Duration::from_secs(30),
            category: "com.example.app".to_string(),
            record_ids: true,
            max_stanza_size: 64 * 1024,
            max_connections: 1000,
            poll: Duration::from_millis(5),
            observer: None,
            record_client_bytes: DEFAULT_RECORD_BYTES,
            identity: None,
        }
    }
}

impl EmulatorBuilder {
    /// The sender id clients must authenticate as. Default `123456789012`.
    pub fn sender_id(mut self, sender_id: impl Into<String>) -> Self {
        self.sender_id = sender_id.into();
        self
    }

    /// The server key clients must present. Default `emulator-server-key`.
    pub fn server_key(mut self, key: impl Into<String>) -> Self {
        self.server_key = ServerKey::new(key);
        self
    }

    /// Where to listen. Default `127.0.0.1:0` (a free port; see [`Emulator::addr`]).
    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.bind = addr;
        self
    }

    /// Write a single space after this long without writing anything. Default 30 s;
    /// [`Duration::ZERO`] turns keepalives off.
    pub fn keepalive_interval(mut self, interval: Duration) -> Self {
        self.keepalive = interval;
        self
    }

    /// How long a draining connection stays open after its last in-flight message was
    /// answered. Default 200 ms.
    pub fn drain_grace(mut self, grace: Duration) -> Self {
        self.drain_grace = grace;
        self
    }

    /// Close connections that have not bound a resource this long after they were accepted.
    /// Default 30 s.
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// The `category` (app package name) of receipts. Default `com.example.app`.
    pub fn receipt_category(mut self, category: impl Into<String>) -> Self {
        self.category = category.into();
        self
    }

    /// Record every message id in the [`Ledger`] (default `true`): downstream ids and
    /// the upstream and receipt ids sent and acked. With `false` only counts are kept,
    /// for benchmarks and soaks that push millions of messages.
    pub fn record_ids(mut self, yes: bool) -> Self {
        self.record_ids = yes;
        self
    }

    /// The largest stanza accepted from a client (larger gets `policy-violation`).
    /// Default 64 KiB.
    pub fn max_stanza_size(mut self, bytes: usize) -> Self {
        self.max_stanza_size = bytes;
        self
    }

    /// Most connections open at once (one thread each); more are closed right after
    /// accept. Default 1000, the GCM per-sender limit.
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = n.max(1);
        self
    }

    /// How long a connection's thread waits for bytes before it looks at its timers
    /// (keepalive, draining, the handshake limit) and the script. Held-back answers
    /// under [`Emulator::set_ack_delay`] leave when due, and scripting commands (an
    /// injected upstream message, drain, drop) wake the thread at once, whatever this
    /// is. Default 5 ms; at least 100 µs and at most 1 s (the stop flag is looked at
    /// once a poll). Shorter costs more CPU on idle connections.
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll = interval.clamp(MIN_POLL, MAX_POLL);
        self
    }

    /// Send every [`EmulatorEvent`] to this channel.
    pub fn observer(mut self, tx: Sender<EmulatorEvent>) -> Self {
        self.observer = Some(tx);
        self
    }

    /// Record every byte clients write, up to `max_bytes` over all connections together
    /// (default [`DEFAULT_RECORD_BYTES`]; 0: off). Read the recordings with [`Emulator::client_bytes`]; a test can pass
    /// them through an XML parser of its own to judge the client's wire independently of
    /// this emulator's reader. The recordings hold the SASL exchange, so the server key in
    /// base64: keep them out of logs.
    pub fn record_client_bytes(mut self, max_bytes: usize) -> Self {
        self.record_client_bytes = max_bytes;
        self
    }

    /// Serve this certificate (PEM: the server certificate, then any intermediates)
    /// and its PKCS#8 private key (PEM, `-----BEGIN PRIVATE KEY-----`) instead of the
    /// bundled test identity ([`Emulator::cert_pem`]). Clients must then trust the
    /// issuer of `cert_pem`. The key never appears in `Debug` output.
    pub fn identity_pem(
        mut self,
        cert_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
    ) -> Self {
        self.identity = Some(IdentityPem {
            cert: cert_pem.into(),
            key: key_pem.into(),
        });
        self
    }

    /// Binds the listener and starts accepting connections.
    ///
    /// # Errors
    /// The bind error, or an `io::Error` of kind `InvalidInput` if the TLS identity
    /// (the bundled one, or the one given to [`EmulatorBuilder::identity_pem`]) does
    /// not load, or an `io::Error` if a thread cannot be set up.
    pub fn start(self) -> io::Result<Emulator> {
        let identity = match &self.identity {
            Some(id) => Identity::from_pkcs8(&id.cert, &id.key),
            None => Identity::from_pkcs8(CERT_PEM, KEY_PEM),
        }
        .map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("tls certificate and key do not load: {e}"),
            )
        })?;
        let acceptor = TlsAcceptor::new(identity).map_err(io::Error::other)?;
        let listener = TcpListener::bind(self.bind)?;
        let addr = listener.local_addr()?;
        let settings = Settings {
            sender_id: self.sender_id,
            server_key: self.server_key,
            keepalive: Some(self.keepalive).filter(|d| !d.is_zero()),
            drain_grace: self.drain_grace,
            handshake_timeout: self.handshake_timeout,
            category: self.category,
            record_ids: self.record_ids,
            max_stanza_size: self.max_stanza_size.max(1024),
            max_connections: self.max_connections,
            poll: self.poll,
            record_client_bytes: self.record_client_bytes,
        };
        let shared = Arc::new(Shared {
            settings,
            acceptor,
            stop: AtomicBool::new(false),
            stop_accepting: AtomicBool::new(false),
            script: ScriptCell::default(),
            state: Mutex::new(State::default()),
            observer: self.observer,
            threads: Mutex::new(Vec::new()),
            upstream_seq: AtomicU64::new(0),
            record_budget: AtomicUsize::new(self.record_client_bytes),
        });
        let accept_shared = Arc::clone(&shared);
        let acceptor_thread = thread::Builder::new()
            .name("fcm-emu-accept".to_string())
            .spawn(move || accept_loop(listener, accept_shared))?;
        log::info!("ccs emulator listening on {addr}");
        Ok(Emulator {
            addr,
            shared,
            acceptor_thread: Mutex::new(Some(acceptor_thread)),
        })
    }
}

/// A running local CCS server. Dropping it shuts it down (see [`Emulator::shutdown`]).
///
/// Every method takes `&self` and may be called from any thread while clients are connected.
#[derive(Debug)]
pub struct Emulator {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor_thread: Mutex<Option<JoinHandle<()>>>,
}

impl Emulator {
    /// A builder with the defaults (listen on `127.0.0.1:0`, sender `123456789012`).
    pub fn builder() -> EmulatorBuilder {
        EmulatorBuilder::default()
    }

    /// Starts an emulator on `127.0.0.1:0` for `sender_id` and `server_key`.
    ///
    /// # Errors
    /// As [`EmulatorBuilder::start`].
    pub fn start(sender_id: impl Into<String>, server_key: impl Into<String>) -> io::Result<Self> {
        Emulator::builder()
            .sender_id(sender_id)
            .server_key(server_key)
            .start()
    }

    /// The emulator's certificate (PEM): trust it as a root to connect
    /// ([`Config::add_root_pem`]). Self-signed, for `localhost` and `127.0.0.1`, valid
    /// 2000-2100. Its private key is committed in the crate: trust it in tests only.
    pub fn cert_pem() -> &'static [u8] {
        CERT_PEM
    }

    /// The address the listener is bound to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The endpoint to dial: `127.0.0.1:PORT` (`localhost:PORT` for an IPv6 listener), a
    /// name the certificate covers.
    pub fn endpoint(&self) -> Endpoint {
        let host = if self.addr.is_ipv4() {
            "127.0.0.1"
        } else {
            "localhost"
        };
        Endpoint::new(host, self.addr.port())
    }

    /// The sender id clients must authenticate as.
    pub fn sender_id(&self) -> &str {
        &self.shared.settings.sender_id
    }

    /// A client [`Config`] for this emulator: endpoint, sender id, server key and the
    /// emulator's certificate as an extra root.
    pub fn client_config(&self) -> Config {
        Config::new(
            self.shared.settings.sender_id.clone(),
            self.shared.settings.server_key.expose(),
        )
        .endpoint(self.endpoint())
        .add_root_pem(Emulator::cert_pem())
    }

    // -- scripting ------------------------------------------------------------------------

    /// Messages to `token` get a NACK with `code` (from now on, on every connection).
    pub fn reject_token(&self, token: impl Into<String>, code: NackCode) {
        let token = token.into();
        self.shared.script.update(|s| {
            s.reject.insert(token, code);
        });
    }

    /// Undoes [`Emulator::reject_token`] for `token`.
    pub fn allow_token(&self, token: &str) {
        self.shared.script.update(|s| {
            s.reject.remove(token);
        });
    }

    /// A downstream message whose id matches `pred` is NACKed with `code` the first `times`
    /// times it arrives (counted per message id, across connections), then handled
    /// normally. Rules are checked in the order they were added, before token rules.
    pub fn transient_nacks(
        &self,
        pred: impl Fn(&str) -> bool + Send + Sync + 'static,
        times: u32,
        code: NackCode,
    ) {
        let rule = Arc::new(TransientRule::new(Box::new(pred), times, code));
        self.shared.script.update(|s| s.transient.push(rule));
    }

    /// Hold answers (ACK, NACK and the receipt after an ACK) to downstream messages back
    /// this long. Connections keep reading meanwhile. `Duration::ZERO` answers at once.
    pub fn set_ack_delay(&self, delay: Duration) {
        self.shared.script.update(|s| s.ack_delay = delay);
    }

    /// Every connection, open now or later, drops abruptly (TCP close, no
    /// `</stream:stream>`) right after it has received `k` message stanzas since it bound,
    /// leaving the `k`-th unanswered. `None` turns this off.
    pub fn drop_every(&self, k: Option<usize>) {
        self.shared.script.update(|s| s.drop_every = k);
    }

    /// Clears every scripted rule: rejected tokens, transient NACKs, ack delay, `drop_every`.
    pub fn reset_script(&self) {
        self.shared
            .script
            .update(|s| *s = script::Script::default());
    }

    /// Injects an upstream message from device `from` (app `category`) with `data`, and
    /// returns its `message_id`. It goes to one live authenticated connection (round-robin;
    /// if there is none, to the next one that binds), is kept until the client ACKs it on
    /// that connection, and is redelivered on another connection if that one ends first.
    pub fn inject_upstream(&self, from: &str, category: &str, data: &[(&str, &str)]) -> String {
        let n = self.shared.upstream_seq.fetch_add(1, Ordering::Relaxed) + 1;
        let id = format!("up-{n}");
        let json = json::event_json(&wire::upstream_event(&id, from, category, data));
        let mut st = self.shared.state();
        st.outbound
            .add(id.clone(), OutKind::Upstream, Arc::from(json), None);
        st.dispatch_waiting();
        id
    }

    /// Drains connection `conn`: control `CONNECTION_DRAINING`, then a `CONNECTION_DRAINING`
    /// NACK for every new downstream message, while answers for earlier messages still go
    /// out and upstream ACKs are accepted; then `</stream:stream>` and close once nothing is
    /// in flight and the drain grace has passed. False if `conn` is not live.
    pub fn drain(&self, conn: ConnId) -> bool {
        let mut st = self.shared.state();
        match st.sessions.get_mut(&conn) {
            Some(e) if e.ready => {
                e.draining = true;
                e.ctl.push(Command::Drain);
                true
            }
            _ => false,
        }
    }

    /// Drains every live authenticated connection.
    pub fn drain_all(&self) {
        let mut st = self.shared.state();
        for e in st.sessions.values_mut().filter(|e| e.ready) {
            e.draining = true;
            e.ctl.push(Command::Drain);
        }
    }

    /// Every connection open now drops abruptly (TCP close, no `</stream:stream>`) right
    /// after it receives `k` more message stanzas, leaving the last one unanswered.
    /// `k == 0` drops them at once.
    pub fn drop_after(&self, k: usize) {
        let st = self.shared.state();
        for e in st.sessions.values() {
            e.ctl.push(Command::DropAfter(k));
        }
    }

    /// Drops connection `conn` at once (TCP close, nothing more written). False if it is
    /// not open.
    pub fn drop_now(&self, conn: ConnId) -> bool {
        self.command(conn, Command::DropNow)
    }

    /// Writes `bytes` to connection `conn` as they are (garbage, oversized stanzas, stream
    /// errors...). False if it is not open.
    pub fn send_raw(&self, conn: ConnId, bytes: impl Into<Vec<u8>>) -> bool {
        self.command(conn, Command::Raw(bytes.into()))
    }

    fn command(&self, conn: ConnId, cmd: Command) -> bool {
        let st = self.shared.state();
        match st.sessions.get(&conn) {
            Some(e) => {
                e.ctl.push(cmd);
                true
            }
            None => false,
        }
    }

    // -- observation ----------------------------------------------------------------------

    /// Live authenticated connections, in order of creation (draining ones included).
    pub fn connections(&self) -> Vec<ConnId> {
        let st = self.shared.state();
        st.sessions
            .iter()
            .filter(|(_, e)| e.ready)
            .map(|(id, _)| *id)
            .collect()
    }

    /// A snapshot of everything recorded so far. Costs a copy of the recorded ids
    /// (about a millisecond per 10,000 messages).
    pub fn ledger(&self) -> Ledger {
        let (ledgers, upstream_unacked, connections_accepted, auth_failures) = {
            let st = self.shared.state();
            (
                st.ledgers.clone(),
                st.outbound.unacked_ids(),
                st.accepted,
                st.auth_failures,
            )
        };
        let mut connections: Vec<ConnLedger> = ledgers.iter().map(|l| lock(l).snapshot()).collect();
        connections.sort_by_key(|c| c.id);
        Ledger {
            connections,
            upstream_unacked,
            connections_accepted,
            auth_failures,
        }
    }

    /// Polls the ledger every few milliseconds until `pred` holds or `timeout` passes;
    /// returns whether it held.
    pub fn wait_until(&self, timeout: Duration, mut pred: impl FnMut(&Ledger) -> bool) -> bool {
        let deadline = crate::time::later(Instant::now(), timeout);
        loop {
            if pred(&self.ledger()) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits until at least `n` authenticated connections are live; returns whether that
    /// happened within `timeout`.
    pub fn wait_for_connections(&self, n: usize, timeout: Duration) -> bool {
        let deadline = crate::time::later(Instant::now(), timeout);
        loop {
            if self.connections().len() >= n {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// What each finished connection wrote, in order of closing (empty unless
    /// [`EmulatorBuilder::record_client_bytes`] is on). Connections still open are not in
    /// it yet: call [`Emulator::shutdown`] first to have them all.
    pub fn client_bytes(&self) -> Vec<ClientBytes> {
        self.shared.state().client_bytes.clone()
    }

    /// Stops accepting, ends every connection (`</stream:stream>` where the client still
    /// reads, TCP close otherwise) and joins all threads, within about a second even with
    /// stuck clients. Idempotent; [`Drop`] calls it. The ledger stays readable.
    pub fn shutdown(&self) {
        if self.shared.stop_accepting.swap(true, Ordering::AcqRel) {
            return;
        }
        // Wake the blocking accept() with a connection of our own.
        let wake = match self.addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => {
                SocketAddr::from((Ipv4Addr::LOCALHOST, self.addr.port()))
            }
            IpAddr::V6(ip) if ip.is_unspecified() => {
                SocketAddr::from((Ipv6Addr::LOCALHOST, self.addr.port()))
            }
            _ => self.addr,
        };
        let woke = TcpStream::connect_timeout(&wake, Duration::from_secs(1)).is_ok();
        if let Some(handle) = lock(&self.acceptor_thread).take() {
            if woke {
                let _ = handle.join();
            } else {
                log::warn!("ccs emulator: could not wake the accept thread; leaving it");
            }
        }
        // The listener is closed now (or left to a stuck accept thread): end the sessions.
        self.shared.stop.store(true, Ordering::Release);
        // Sessions see the stop flag within one poll and close politely; force the rest.
        let deadline = Instant::now() + Duration::from_millis(500);
        loop {
            let all_done = lock(&self.shared.threads).iter().all(|h| h.is_finished());
            if all_done || Instant::now() >= deadline {
                break;
            }
            thread::sleep(Duration::from_millis(2));
        }
        for e in self.shared.state().sessions.values() {
            if let Some(tcp) = &e.tcp {
                let _ = tcp.shutdown(std::net::Shutdown::Both);
            }
        }
        let handles = std::mem::take(&mut *lock(&self.shared.threads));
        for h in handles {
            let _ = h.join();
        }
        log::info!("ccs emulator on {} shut down", self.addr);
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests;
