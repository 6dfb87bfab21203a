//! The I/O threads: one per pool slot (connect, send, read, reconnect) and one
//! per draining connection (read and ack until the server closes it).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use super::shared::{Entry, Shared};
use super::{AckHandle, AckMode, ClientEvent, Rejection, ReturnReason};
use crate::connection::{Connection, TlsTcpStream};
use crate::error::{Error, TlsErrorKind};
use crate::event::{Ack, Event, RetryClass};

type Conn = Connection<TlsTcpStream>;

/// Most events handled between two chances to write.
const READ_BATCH: usize = 512;

/// How a connection's life ended.
enum Ended {
    /// Lost (dropped, closed, dead): reconnect at once.
    Lost,
    /// Draining: handed to a drainer thread; open a new one at once.
    Draining,
    /// Nothing left to do (shutdown or fatal).
    Done,
}

/// Errors that no reconnect can fix.
fn is_fatal(e: &Error) -> bool {
    match e {
        Error::AuthFailed { .. } | Error::InvalidConfig { .. } => true,
        Error::Tls(t) => matches!(
            t.kind(),
            TlsErrorKind::Certificate | TlsErrorKind::BadRootCertificate
        ),
        _ => false,
    }
}

/// One pool slot: keeps a connection up until shutdown.
pub(crate) fn run_slot(shared: Arc<Shared>, slot: usize) {
    let mut failures = 0u32;
    let mut connected_before = false;
    loop {
        if shared.slot_done() {
            break;
        }
        match Connection::connect(&shared.cfg.connection) {
            Ok(conn) => {
                failures = 0;
                if connected_before {
                    shared.counters.reconnects.fetch_add(1, Ordering::Relaxed);
                }
                connected_before = true;
                shared.emit(&mut vec![ClientEvent::Connected {
                    slot,
                    jid: conn.jid().to_string(),
                }]);
                match run_connection(&shared, slot, conn) {
                    Ended::Lost | Ended::Draining => continue,
                    Ended::Done => break,
                }
            }
            Err(e) if is_fatal(&e) => {
                shared.fatal(e);
                break;
            }
            Err(e) => {
                failures += 1;
                let delay = shared.cfg.reconnect_backoff.delay(failures);
                log::info!("connect attempt {failures} failed: {e}; next in {delay:?}");
                shared.emit(&mut vec![ClientEvent::Reconnecting {
                    slot,
                    attempt: failures,
                    delay,
                    error: e.to_string(),
                }]);
                shared.idle_wait(Instant::now() + delay);
            }
        }
    }
}

/// Per-connection bookkeeping, shared by the slot loop and the drainer.
struct Link {
    slot: usize,
    conn_id: u64,
    jid: String,
    /// Sent and not yet answered, by message id.
    pending: HashMap<String, Entry>,
    events: Vec<ClientEvent>,
    acks: Vec<(String, String)>,
}

impl Link {
    fn new(shared: &Shared, slot: usize, jid: &str) -> Self {
        Link {
            slot,
            conn_id: shared.register_conn(),
            jid: jid.to_string(),
            pending: HashMap::with_capacity(shared.cfg.connection.max_pending),
            events: Vec::new(),
            acks: Vec::new(),
        }
    }

    /// Buffers the manual acks the application queued for this connection.
    fn write_manual_acks(&mut self, shared: &Shared, conn: &mut Conn) -> crate::Result<()> {
        shared.take_acks(self.conn_id, &mut self.acks);
        for (to, id) in self.acks.drain(..) {
            conn.ack_to(&to, &id)?;
        }
        Ok(())
    }

    /// Final outcome: delivered.
    fn deliver(&mut self, shared: &Shared, ack: Ack) {
        match self.pending.remove(&ack.message_id) {
            Some(e) => {
                shared.counters.pending.fetch_sub(1, Ordering::Relaxed);
                shared.counters.acked.fetch_add(1, Ordering::Relaxed);
                self.events.push(ClientEvent::Delivered {
                    message: e.message,
                    ack,
                });
            }
            None => log::debug!("ack for unknown message {}", ack.message_id),
        }
    }

    /// Final outcome: rejected. The pending entry is found by `ids` in turn.
    fn reject(&mut self, shared: &Shared, ids: [Option<&str>; 2], reason: Rejection) {
        let entry = ids
            .into_iter()
            .flatten()
            .find_map(|id| self.pending.remove(id));
        match entry {
            Some(e) => {
                shared.counters.pending.fetch_sub(1, Ordering::Relaxed);
                shared.counters.rejected.fetch_add(1, Ordering::Relaxed);
                self.events.push(ClientEvent::Rejected {
                    message: e.message,
                    reason,
                });
            }
            None => log::warn!("rejection for no pending message: {reason:?}"),
        }
    }

    /// Applies one event: outcomes, retries, acks, and what to report.
    fn handle(&mut self, shared: &Shared, conn: &mut Conn, event: Event) -> crate::Result<()> {
        let c = &shared.counters;
        match event {
            Event::Ack(ack) => self.deliver(shared, ack),
            Event::Nack(nack) => {
                shared.count_nack(nack.code.as_str());
                let class = nack.code.retry_class();
                let retryable = match class {
                    RetryClass::Backoff | RetryClass::NewConnection => true,
                    RetryClass::RateLimited => shared.cfg.rate_limited_retry.is_some(),
                    _ => false,
                };
                if !retryable {
                    if nack.code == crate::NackCode::BadAck {
                        log::warn!(
                            "BAD_ACK for {}: an ack we sent was malformed",
                            nack.message_id
                        );
                    }
                    let id = nack.message_id.clone();
                    self.reject(shared, [Some(&id), None], Rejection::Nack(nack));
                    return Ok(());
                }
                let Some(mut e) = self.pending.remove(&nack.message_id) else {
                    log::debug!("nack for unknown message {}", nack.message_id);
                    return Ok(());
                };
                c.pending.fetch_sub(1, Ordering::Relaxed);
                if e.attempts >= shared.cfg.max_retries {
                    log::info!("{} returned after {} retries", nack.message_id, e.attempts);
                    c.returned.fetch_add(1, Ordering::Relaxed);
                    self.events.push(ClientEvent::Returned {
                        message: e.message,
                        reason: ReturnReason::RetriesExhausted(nack.code),
                    });
                    return Ok(());
                }
                e.attempts += 1;
                c.retried.fetch_add(1, Ordering::Relaxed);
                match class {
                    // Draining: straight to the front of the queue, for a new connection.
                    RetryClass::NewConnection => shared.requeue_front(vec![e]),
                    _ => {
                        let delay = match shared.cfg.rate_limited_retry {
                            Some(d) if class == RetryClass::RateLimited => d,
                            _ => shared.cfg.retry_backoff.delay(e.attempts),
                        };
                        log::info!(
                            "{} nacked {}: retry {} in {delay:?}",
                            nack.message_id,
                            nack.code,
                            e.attempts
                        );
                        shared.schedule_retry(e, Instant::now() + delay);
                    }
                }
            }
            Event::StanzaError(err) => {
                let (id, mid) = (err.id.clone(), err.message_id.clone());
                self.reject(
                    shared,
                    [id.as_deref(), mid.as_deref()],
                    Rejection::StanzaError(err),
                );
            }
            Event::Upstream(_) | Event::Receipt(_) => {
                let (to, id) = match event.ack_target() {
                    Some((to, id)) => (to.to_string(), id.to_string()),
                    None => return Ok(()),
                };
                let from = match &event {
                    Event::Upstream(u) => u.from.clone(),
                    Event::Receipt(r) => r.from.clone(),
                    _ => String::new(),
                };
                if shared.is_duplicate(&from, &id) {
                    c.duplicates.fetch_add(1, Ordering::Relaxed);
                    conn.ack_to(&to, &id)?;
                    return Ok(());
                }
                let handle = match shared.cfg.ack_mode {
                    AckMode::Auto => {
                        conn.ack_to(&to, &id)?;
                        shared.remember(&from, &id);
                        None
                    }
                    AckMode::Manual => Some(AckHandle {
                        conn_id: self.conn_id,
                        to,
                        message_id: id,
                        from,
                    }),
                };
                match event {
                    Event::Upstream(upstream) => {
                        c.upstream.fetch_add(1, Ordering::Relaxed);
                        self.events.push(ClientEvent::Upstream {
                            upstream,
                            ack: handle,
                        })
                    }
                    Event::Receipt(receipt) => {
                        c.receipts.fetch_add(1, Ordering::Relaxed);
                        self.events.push(ClientEvent::Receipt {
                            receipt,
                            ack: handle,
                        })
                    }
                    _ => {}
                }
            }
            // Draining is reported by the loop once it sees `conn.is_draining()`.
            Event::Control(ref ctl) if ctl.kind == crate::ControlKind::ConnectionDraining => {}
            other => {
                log::info!("unhandled event: {other:?}");
                self.events.push(ClientEvent::Other(other));
            }
        }
        Ok(())
    }

    /// The pending entries, for a resend elsewhere (the caller sorts).
    fn take_pending(&mut self, shared: &Shared) -> Vec<Entry> {
        let n = self.pending.len() as u64;
        shared.counters.pending.fetch_sub(n, Ordering::Relaxed);
        self.pending.drain().map(|(_, e)| e).collect()
    }

    /// Requeues what is pending and reports the loss.
    fn lost(&mut self, shared: &Shared, error: &str) {
        let entries = self.take_pending(shared);
        let n = entries.len();
        shared
            .counters
            .resent
            .fetch_add(n as u64, Ordering::Relaxed);
        if shared.deadline().is_some_and(|d| Instant::now() >= d) {
            shared.add_leftovers(entries);
        } else {
            shared.requeue_front(entries);
        }
        self.events.push(ClientEvent::Lost {
            slot: self.slot,
            jid: self.jid.clone(),
            error: error.to_string(),
            resent: n,
        });
        shared.emit(&mut self.events);
        shared.unregister_conn(self.conn_id);
    }
}

/// Drives one connection until it is lost, drains, or the client stops.
fn run_connection(shared: &Arc<Shared>, slot: usize, mut conn: Conn) -> Ended {
    let mut link = Link::new(shared, slot, conn.jid());
    let mut batch: Vec<Entry> = Vec::with_capacity(shared.cfg.connection.max_pending);
    let poll = shared.cfg.poll_interval;
    loop {
        let step = (|| -> crate::Result<Option<Ended>> {
            link.write_manual_acks(shared, &mut conn)?;

            // Write what the window allows, in one write.
            if !conn.is_draining() {
                shared.take(conn.window_free(), &mut batch);
                let mut entries = batch.drain(..);
                while let Some(e) = entries.next() {
                    match conn.send_buffered(&e.message) {
                        Ok(()) => {
                            shared.counters.sent.fetch_add(1, Ordering::Relaxed);
                            shared.counters.pending.fetch_add(1, Ordering::Relaxed);
                            link.pending.insert(e.message.id().to_string(), e);
                        }
                        Err(Error::InvalidMessage(m)) => {
                            // Validated at submit; only a duplicate id in flight lands here.
                            log::warn!("message {} not sent: {m}", e.message.id());
                            shared.schedule_retry(e, Instant::now() + poll);
                        }
                        Err(err) => {
                            // This one and the rest of the batch go back, in order.
                            let mut back = vec![e];
                            back.extend(entries);
                            shared.requeue_front(back);
                            return Err(err);
                        }
                    }
                }
            }
            conn.flush()?;

            // Read: without waiting while there is more to write, else up to
            // the poll interval (or the next retry).
            let mut read = 0;
            if !shared.backlogged() {
                let busy = !conn.is_draining() && conn.window_free() > 0 && shared.has_work();
                let first = if busy {
                    conn.try_recv_event()
                } else {
                    let mut wait = poll;
                    if let Some(at) = shared.next_retry() {
                        wait = wait.min(at.saturating_duration_since(Instant::now()));
                    }
                    conn.recv_event(Some(wait))
                };
                let mut next = first;
                loop {
                    match next {
                        Ok(Some(ev)) => {
                            link.handle(shared, &mut conn, ev)?;
                            read += 1;
                        }
                        Ok(None) => break,
                        Err(Error::Protocol(p)) => log::warn!("skipping a bad stanza: {p}"),
                        Err(e) => return Err(e),
                    }
                    if read >= READ_BATCH {
                        break;
                    }
                    next = conn.try_recv_event();
                }
            } else {
                thread::sleep(poll);
            }
            shared.emit(&mut link.events);

            if conn.is_draining() {
                return Ok(Some(Ended::Draining));
            }
            if let Some(deadline) = shared.deadline() {
                let idle =
                    link.pending.is_empty() && !shared.has_work() && shared.next_retry().is_none();
                if idle || Instant::now() >= deadline || shared.is_fatal() {
                    return Ok(Some(Ended::Done));
                }
            }
            Ok(None)
        })();
        match step {
            Ok(None) => {}
            Ok(Some(Ended::Draining)) => {
                log::info!("{} is draining; opening a new connection", link.jid);
                link.events.push(ClientEvent::Draining {
                    slot,
                    jid: link.jid.clone(),
                });
                shared.emit(&mut link.events);
                // The drainer takes the connection out of this cell; if the
                // thread cannot start, this thread drains it instead, so its
                // pending messages are never dropped with the closure.
                let cell = Arc::new(std::sync::Mutex::new(Some((link, conn))));
                let (s, c) = (Arc::clone(shared), Arc::clone(&cell));
                let spawned = thread::Builder::new()
                    .name(format!("fcm-xmpp-drain-{slot}"))
                    .spawn(move || {
                        let taken = c.lock().unwrap_or_else(|e| e.into_inner()).take();
                        if let Some((link, conn)) = taken {
                            run_drainer(s, link, conn);
                        }
                    });
                match spawned {
                    Ok(h) => shared.add_drainer(h),
                    Err(e) => {
                        log::warn!("cannot spawn a drainer thread ({e}): draining here");
                        let taken = cell.lock().unwrap_or_else(|e| e.into_inner()).take();
                        if let Some((link, conn)) = taken {
                            run_drainer(Arc::clone(shared), link, conn);
                        }
                    }
                }
                return Ended::Draining;
            }
            Ok(Some(_)) => {
                close_gracefully(shared, &mut link, conn, Leftover::GiveBack);
                return Ended::Done;
            }
            Err(e) => {
                log::info!("connection {} lost: {e}", link.jid);
                link.lost(shared, &e.to_string());
                if shared.slot_done() {
                    return Ended::Done;
                }
                return Ended::Lost;
            }
        }
    }
}

/// What happens to messages still pending when we close a connection.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Leftover {
    /// Shutdown: handed back by `Client::shutdown`.
    GiveBack,
    /// A drained connection the server never closed: sent again elsewhere.
    Resend,
}

/// Closes the stream ourselves, settles what the late events settle, and
/// gives back or resends what is left.
fn close_gracefully(shared: &Shared, link: &mut Link, mut conn: Conn, leftover: Leftover) {
    let _ = link.write_manual_acks(shared, &mut conn);
    match conn.close() {
        // The stream is gone: late acks and final rejections still settle
        // their messages; a retryable NACK cannot be retried now, and upstream
        // that arrives now cannot be acked (CCS will redeliver it).
        Ok(events) => {
            for ev in events {
                match ev {
                    Event::Ack(ack) => link.deliver(shared, ack),
                    Event::Nack(nack) if nack.code.retry_class() == RetryClass::Final => {
                        shared.count_nack(nack.code.as_str());
                        let id = nack.message_id.clone();
                        link.reject(shared, [Some(&id), None], Rejection::Nack(nack));
                    }
                    Event::StanzaError(err) => {
                        let (id, mid) = (err.id.clone(), err.message_id.clone());
                        link.reject(
                            shared,
                            [id.as_deref(), mid.as_deref()],
                            Rejection::StanzaError(err),
                        );
                    }
                    _ => {}
                }
            }
        }
        Err(e) => log::debug!("close: {e}"),
    }
    let left = link.take_pending(shared);
    match leftover {
        Leftover::GiveBack => shared.add_leftovers(left),
        Leftover::Resend => {
            shared
                .counters
                .resent
                .fetch_add(left.len() as u64, Ordering::Relaxed);
            shared.requeue_front(left);
        }
    }
    shared.emit(&mut link.events);
    shared.unregister_conn(link.conn_id);
}

/// Reads a draining connection until the server closes it: outcomes for its
/// in-flight messages, acks for upstream; whatever is still pending at the
/// end goes back to the queue.
fn run_drainer(shared: Arc<Shared>, mut link: Link, mut conn: Conn) {
    let started = Instant::now();
    let why = loop {
        if let Err(e) = link.write_manual_acks(&shared, &mut conn) {
            break e.to_string();
        }
        match conn.recv_event(Some(Duration::from_millis(50))) {
            Ok(Some(ev)) => {
                if let Err(e) = link.handle(&shared, &mut conn, ev) {
                    break e.to_string();
                }
                if let Err(e) = conn.flush() {
                    break e.to_string();
                }
            }
            Ok(None) => {}
            Err(Error::Protocol(p)) => log::warn!("skipping a bad stanza: {p}"),
            Err(e) => break e.to_string(),
        }
        shared.emit(&mut link.events);
        if started.elapsed() >= shared.cfg.drain_timeout {
            log::warn!(
                "{} still open {:?} after draining began: closing it",
                link.jid,
                shared.cfg.drain_timeout
            );
            close_gracefully(&shared, &mut link, conn, Leftover::Resend);
            return;
        }
        if shared.deadline().is_some_and(|d| Instant::now() >= d) {
            close_gracefully(&shared, &mut link, conn, Leftover::GiveBack);
            return;
        }
    };
    log::info!("draining connection {} ended: {why}", link.jid);
    link.lost(&shared, &why);
}
