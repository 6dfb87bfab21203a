//! The I/O threads: one per pool slot (connect, then drive the connection)
//! and one per draining connection. They only move bytes and call the
//! [`Engine`](super::engine::Engine); every decision is the engine's.

use std::cell::Cell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use super::engine::{ConnId, Engine, SlotStep};
use super::link::Link;
use super::shared::Shared;
use super::ClientEvent;
use crate::error::Error;

/// Most events handled between two chances to write.
const READ_BATCH: usize = 512;

/// Longest wait of an I/O thread whose link has a [`Waker`](super::Waker)
/// and no timer: a safety net only (new work wakes it), a pass a second.
const IDLE_RECHECK: Duration = Duration::from_secs(1);

/// Keeps a connection's waker registered while it is driven; forgets it
/// however the driving ends, and wakes the other connections, which may
/// now have its messages to send.
struct Registered<'a> {
    shared: &'a Shared,
    id: ConnId,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.shared.drop_waker(self.id);
        self.shared.wake_links();
    }
}

/// Runs `body` on this thread; a panic inside becomes a fatal error, and
/// the connection it was driving is given up so its messages are returned.
fn guarded(shared: &Arc<Shared>, body: impl FnOnce(&Cell<Option<ConnId>>)) {
    let current = Cell::new(None);
    let result = panic::catch_unwind(AssertUnwindSafe(|| body(&current)));
    if result.is_err() {
        let mut eng = shared.engine();
        eng.fatal(Error::WorkerPanicked);
        if let Some(conn) = current.get() {
            eng.lost(conn, Error::WorkerPanicked, Instant::now());
        }
        hand_over(shared, eng, &mut Vec::new());
    }
    shared.thread_ended();
}

/// One pool slot: keeps a connection up until shutdown or a fatal error.
pub(crate) fn run_slot(shared: Arc<Shared>, slot: usize) {
    guarded(&shared.clone(), |current| slot_loop(&shared, slot, current));
}

fn slot_loop(shared: &Arc<Shared>, slot: usize, current: &Cell<Option<ConnId>>) {
    let mut events = Vec::new();
    loop {
        let step = {
            let mut eng = shared.engine();
            loop {
                match eng.slot_step(slot, Instant::now()) {
                    SlotStep::Wait(until) => eng = shared.wait_changed(eng, until),
                    other => break other,
                }
            }
        };
        let deadline = match step {
            SlotStep::Stop => return,
            SlotStep::Connect { deadline } => deadline,
            SlotStep::Wait(_) => continue,
        };
        if let Some(d) = deadline {
            shared.cut_off.set(d);
        }
        let attempt = shared.connector.connect_until(slot, &shared.cut_off);
        let now = Instant::now();
        let conn = {
            let mut eng = shared.engine();
            let conn = match attempt {
                Ok(link) => Some((eng.connected(slot, link.jid(), now), link)),
                Err(e) => {
                    eng.connect_failed(slot, e, now);
                    None
                }
            };
            eng.take_events(&mut events);
            conn
        };
        shared.emit(&mut events);
        shared.notify_changed();
        let Some((id, link)) = conn else {
            continue;
        };
        current.set(Some(id));
        if let Some(link) = drive(shared, id, link, true) {
            // Draining: a thread of its own reads it to the end; this slot
            // opens the replacement at once.
            hand_off(shared, id, link);
        }
        current.set(None);
    }
}

/// Gives a draining connection to a thread of its own. If no thread can be
/// started, this one drives it to the end (the slot waits meanwhile): its
/// messages are never dropped.
fn hand_off(shared: &Arc<Shared>, id: ConnId, link: Box<dyn Link>) {
    let cell = Arc::new(std::sync::Mutex::new(Some(link)));
    let (s, c) = (Arc::clone(shared), Arc::clone(&cell));
    shared.thread_started();
    let spawned = thread::Builder::new()
        .name("fcm-xmpp-drain".into())
        .spawn(move || {
            let taken = c.lock().unwrap_or_else(|e| e.into_inner()).take();
            guarded(&s.clone(), |current| {
                if let Some(link) = taken {
                    current.set(Some(id));
                    drive(&s, id, link, false);
                }
            });
        });
    match spawned {
        Ok(h) => shared.add_thread(h),
        Err(e) => {
            shared.thread_ended();
            log::warn!("cannot spawn a drainer thread ({e}): draining here");
            let taken = cell.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(link) = taken {
                drive(shared, id, link, false);
            }
        }
    }
}

/// After a connection ended (or the engine went fatal): hands its events to
/// the application, unlocks the engine, and wakes everyone who waits on it
/// (slots, `Client::ack`, senders waiting for room).
fn hand_over(shared: &Shared, mut eng: MutexGuard<'_, Engine>, events: &mut Vec<ClientEvent>) {
    eng.take_events(events);
    drop(eng);
    shared.emit(events);
    shared.notify_changed();
    shared.notify_space();
}

/// Tells the engine which manual acks are written (a ticket of 0: none new).
fn report_flushed(eng: &mut Engine, id: ConnId, ticket: &mut u64) {
    if *ticket > 0 {
        eng.acks_flushed(id, std::mem::take(ticket));
    }
}

/// Drives connection `id` until it ends. A slot thread (`hand_off_drain`)
/// gets the link back once it is draining.
fn drive(
    shared: &Arc<Shared>,
    id: ConnId,
    mut link: Box<dyn Link>,
    hand_off_drain: bool,
) -> Option<Box<dyn Link>> {
    let poll = shared.cfg.poll_interval;
    let waker = link.waker();
    let _registered = waker.map(|w| {
        shared.add_waker(id, w);
        Registered { shared, id }
    });
    // With a waker, new work cuts a wait short: no polling.
    let idle_wait = if _registered.is_some() {
        IDLE_RECHECK
    } else {
        poll
    };
    let mut events: Vec<ClientEvent> = Vec::new();
    let mut unsendable = Vec::new();
    // Grows with the traffic: an idle connection keeps nothing here.
    let mut inbound = Vec::new();
    let mut flushed_ticket = 0;
    loop {
        shared.io_passes.fetch_add(1, Ordering::Relaxed);
        // 1. Ask the engine what to write, and buffer it.
        let now = Instant::now();
        let mut failed: Option<Error> = None;
        let acked = flushed_ticket > 0;
        let (step, next) = {
            let mut eng = shared.engine();
            report_flushed(&mut eng, id, &mut flushed_ticket);
            let step = eng.conn_step(id, now);
            if !step.close {
                for m in eng.outgoing(id) {
                    match link.send_buffered(m) {
                        Ok(()) => {}
                        Err(Error::InvalidMessage(e)) => unsendable.push((m.id().to_string(), e)),
                        Err(e) => {
                            failed = Some(e);
                            break;
                        }
                    }
                }
                for (mid, e) in unsendable.drain(..) {
                    log::warn!("message {mid} not sent: {e}");
                    eng.unsendable(id, &mid, e);
                }
            }
            // Messages still ready after this connection took what its window
            // holds: pass them on to the connection with the most room.
            let next = if !step.close && eng.ready() > 0 {
                eng.roomiest(Some(id))
            } else {
                None
            };
            eng.take_events(&mut events);
            (step, next)
        };
        if let Some(other) = next {
            shared.wake_link(other);
        }
        shared.emit(&mut events);
        if step.send > 0 {
            shared.notify_space();
        }
        if acked {
            // `Client::ack` waits for this.
            shared.notify_changed();
        }
        if step.close {
            // Acks handed out with the close go first: the application has
            // those messages, and CCS would deliver them again otherwise.
            let written = failed.is_none()
                && !step.acks.is_empty()
                && step
                    .acks
                    .iter()
                    .all(|(to, mid)| link.ack_buffered(to, mid).is_ok())
                && link.flush().is_ok();
            if written {
                flushed_ticket = step.ack_ticket;
            }
            let left = shared.engine().deadline_left(Instant::now());
            let late = link.close(left);
            let mut eng = shared.engine();
            report_flushed(&mut eng, id, &mut flushed_ticket);
            eng.closed(id, late, Instant::now());
            hand_over(shared, eng, &mut events);
            return None;
        }
        if failed.is_none() {
            for (to, mid) in &step.acks {
                if let Err(e) = link.ack_buffered(to, mid) {
                    failed = Some(e);
                    break;
                }
            }
        }
        if failed.is_none() {
            match link.flush() {
                Ok(()) => flushed_ticket = step.ack_ticket,
                Err(e) => failed = Some(e),
            }
        }
        if flushed_ticket > 0 {
            // `Client::ack` waits for this: tell it before a wait that may be long.
            report_flushed(&mut shared.engine(), id, &mut flushed_ticket);
            shared.notify_changed();
        }

        // 2. Read what arrived, up to the poll interval (or the next timer).
        if failed.is_none() {
            if shared.backlogged() {
                thread::sleep(poll);
            } else {
                let wait = step.wake.map_or(idle_wait, |w| {
                    w.saturating_duration_since(Instant::now()).min(idle_wait)
                });
                let mut next = link.recv_event(wait);
                loop {
                    match next {
                        Ok(Some(ev)) => inbound.push(ev),
                        Ok(None) => break,
                        Err(Error::Protocol(p)) => log::warn!("skipping a bad stanza: {p}"),
                        Err(e) => {
                            failed = Some(e);
                            break;
                        }
                    }
                    if inbound.len() >= READ_BATCH {
                        break;
                    }
                    next = link.try_recv_event();
                }
            }
        }

        // 3. Hand it to the engine.
        let now = Instant::now();
        let acked = flushed_ticket > 0;
        let (draining, released) = {
            let mut eng = shared.engine();
            report_flushed(&mut eng, id, &mut flushed_ticket);
            let ready = eng.ready();
            for ev in inbound.drain(..) {
                eng.on_event(id, ev, now);
            }
            // An outcome can make queued messages ready (the next of an ordered
            // group, a requeued NACK): another connection may have room for them.
            let released = eng.ready() > ready;
            if let Some(e) = failed.take() {
                eng.lost(id, e, now);
                hand_over(shared, eng, &mut events);
                return None;
            }
            eng.take_events(&mut events);
            (eng.is_draining(id), released)
        };
        if released {
            shared.wake_others(id);
        }
        if !events.is_empty() || acked {
            shared.emit(&mut events);
            shared.notify_space();
            shared.notify_changed();
        }
        if draining && hand_off_drain {
            // Its queue share goes to the others (and the replacement).
            shared.wake_links();
            return Some(link);
        }
    }
}

#[cfg(all(test, feature = "emulator"))]
mod tests;
