//! State shared by the accept loop, the session threads and the [`Emulator`](super::Emulator)
//! handle: fixed settings, the session registry with each session's command mailbox, the
//! outbound store, and the accept loop itself.
//!
//! Lock order: `State` before a session's command mailbox or ledger; the script cell, the
//! mailboxes and the ledgers are leaves (nothing is locked while holding them).

use std::collections::BTreeMap;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use native_tls::TlsAcceptor;

use super::ledger::LiveLedger;
use super::outbound::{OutItem, Outbound};
use super::script::ScriptCell;
use super::{session, ClientBytes, ConnId, EmulatorEvent};
use crate::config::ServerKey;
use crate::transport::WakeSender;

/// Settings fixed at start.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub sender_id: String,
    /// Redacted in `Debug`, like the client's key.
    pub server_key: ServerKey,
    pub keepalive: Option<Duration>,
    pub drain_grace: Duration,
    pub handshake_timeout: Duration,
    pub category: String,
    pub record_ids: bool,
    pub max_stanza_size: usize,
    pub max_connections: usize,
    pub poll: Duration,
    /// Most client bytes recorded over all connections (0: recording off).
    pub record_client_bytes: usize,
}

/// A command from a scripting call to one session.
#[derive(Debug)]
pub(crate) enum Command {
    /// Write these bytes as they are.
    Raw(Vec<u8>),
    /// Deliver this upstream message or receipt.
    Deliver(OutItem),
    /// Start draining.
    Drain,
    /// Close the TCP connection now, writing nothing more.
    DropNow,
    /// Drop after this many more message stanzas.
    DropAfter(usize),
}

/// The mailbox of one session: commands plus a flag the session checks with one atomic load.
#[derive(Debug, Default)]
pub(crate) struct SessionCtl {
    pending: AtomicBool,
    cmds: Mutex<Vec<Command>>,
    /// Wakes the session's thread from its wait for bytes (set once its socket is up).
    waker: OnceLock<WakeSender>,
}

impl SessionCtl {
    pub(crate) fn push(&self, cmd: Command) {
        lock(&self.cmds).push(cmd);
        self.pending.store(true, Ordering::Release);
        if let Some(w) = self.waker.get() {
            w.wake();
        }
    }

    /// Lets [`push`](Self::push) wake the session's thread.
    pub(crate) fn set_waker(&self, waker: WakeSender) {
        let _ = self.waker.set(waker);
    }

    /// Takes all queued commands (cheap when there are none).
    pub(crate) fn take(&self) -> Vec<Command> {
        if !self.pending.swap(false, Ordering::AcqRel) {
            return Vec::new();
        }
        std::mem::take(&mut *lock(&self.cmds))
    }
}

/// A live session as the registry sees it.
#[derive(Debug)]
pub(crate) struct SessionEntry {
    pub ctl: Arc<SessionCtl>,
    /// A clone of the socket, to unblock the session at shutdown.
    pub tcp: Option<TcpStream>,
    pub ready: bool,
    pub draining: bool,
}

/// Mutable state shared by the sessions and the scripting API.
#[derive(Debug, Default)]
pub(crate) struct State {
    pub sessions: BTreeMap<ConnId, SessionEntry>,
    pub ledgers: Vec<Arc<Mutex<LiveLedger>>>,
    pub outbound: Outbound,
    pub next_conn: u64,
    pub last_rr: u64,
    pub accepted: usize,
    pub auth_failures: usize,
    /// What finished connections wrote, when recording is on.
    pub client_bytes: Vec<ClientBytes>,
}

impl State {
    /// The next live, ready, not draining session after the last one picked (round-robin).
    pub(crate) fn pick_session(&mut self) -> Option<ConnId> {
        let ready = |e: &SessionEntry| e.ready && !e.draining;
        let pick = self
            .sessions
            .range(ConnId(self.last_rr + 1)..)
            .chain(self.sessions.range(..=ConnId(self.last_rr)))
            .find(|(_, e)| ready(e))
            .map(|(id, _)| *id)?;
        self.last_rr = pick.0;
        Some(pick)
    }

    /// Hands every waiting outbound item to live sessions, round-robin, oldest first.
    pub(crate) fn dispatch_waiting(&mut self) {
        while self.outbound.has_waiting() {
            let Some(conn) = self.pick_session() else {
                return;
            };
            if let Some(item) = self.outbound.take_first_waiting(conn) {
                if let Some(e) = self.sessions.get(&conn) {
                    e.ctl.push(Command::Deliver(item));
                }
            }
        }
    }
}

/// Everything the accept loop, the sessions and the [`Emulator`] handle share.
pub(crate) struct Shared {
    pub settings: Settings,
    pub acceptor: TlsAcceptor,
    pub stop: AtomicBool,
    /// Set first at shutdown: the accept loop ends (and the listener closes) before the
    /// sessions see `stop`, so a client reconnecting at once is refused, not reset.
    pub stop_accepting: AtomicBool,
    pub script: ScriptCell,
    pub state: Mutex<State>,
    pub observer: Option<Sender<EmulatorEvent>>,
    pub threads: Mutex<Vec<JoinHandle<()>>>,
    pub upstream_seq: AtomicU64,
    /// Client-byte recording budget still unused, over all connections.
    pub record_budget: AtomicUsize,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("settings", &self.settings.sender_id)
            .field("stop", &self.stop)
            .finish_non_exhaustive()
    }
}

impl Shared {
    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Sends an event to the observer, if there is one.
    pub(crate) fn emit(&self, event: EmulatorEvent) {
        if let Some(tx) = &self.observer {
            let _ = tx.send(event);
        }
    }

    pub(crate) fn observed(&self) -> bool {
        self.observer.is_some()
    }
}

/// Locks a mutex, ignoring poisoning: every critical section leaves the data consistent.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub(crate) fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for incoming in listener.incoming() {
        if shared.stop_accepting.load(Ordering::Acquire) {
            break;
        }
        match incoming {
            Ok(tcp) => spawn_session(&shared, tcp),
            Err(e) => {
                log::warn!("ccs emulator: accept failed: {e}");
                thread::sleep(Duration::from_millis(10));
            }
        }
        lock(&shared.threads).retain(|h| !h.is_finished());
    }
}

fn spawn_session(shared: &Arc<Shared>, tcp: TcpStream) {
    let peer = tcp
        .peer_addr()
        .unwrap_or_else(|_| SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)));
    let ctl = Arc::new(SessionCtl::default());
    let id = {
        let mut st = shared.state();
        if st.sessions.len() >= shared.settings.max_connections {
            drop(st);
            log::warn!(
                "ccs emulator: refusing {peer}: {} connections open",
                shared.settings.max_connections
            );
            let _ = tcp.shutdown(std::net::Shutdown::Both);
            return;
        }
        st.next_conn += 1;
        st.accepted += 1;
        let id = ConnId(st.next_conn);
        st.sessions.insert(
            id,
            SessionEntry {
                ctl: Arc::clone(&ctl),
                tcp: tcp.try_clone().ok(),
                ready: false,
                draining: false,
            },
        );
        id
    };
    shared.emit(EmulatorEvent::Opened { conn: id, peer });
    log::debug!("ccs emulator: {id} accepted from {peer}");
    let session_shared = Arc::clone(shared);
    let spawned = thread::Builder::new()
        .name(format!("fcm-emu-{}", id.0))
        .spawn(move || session::run(session_shared, id, tcp, ctl));
    match spawned {
        Ok(h) => crate::threads::push_reaping(&mut lock(&shared.threads), h),
        Err(e) => {
            log::warn!("ccs emulator: cannot start a thread for {id}: {e}");
            shared.state().sessions.remove(&id);
            shared.emit(EmulatorEvent::Closed {
                conn: id,
                reason: format!("no thread: {e}"),
            });
        }
    }
}
