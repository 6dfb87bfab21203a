//! The engine's connection side: pool slots (connect, reconnect schedule),
//! each connection's window, draining, and what a lost or closed connection
//! leaves behind.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::queue::Entry;
use super::window::Window;
use super::{later, ConnId, ConnStep, Engine, SlotStep};
use crate::client::policy::{self, Fate, SlotDecision};
use crate::client::ClientEvent;
use crate::error::{Error, InvalidMessage};
use crate::event::Event;
use crate::message::Message;
use crate::time::earlier;

#[derive(Debug)]
pub(super) struct Conn {
    pub(super) slot: usize,
    pub(super) jid: String,
    pub(super) up_at: Instant,
    /// In flight: the one record of it.
    pub(super) window: Window,
    pub(super) draining_since: Option<Instant>,
    /// Decided to close; waiting for [`Engine::closed`].
    pub(super) closing: bool,
    pub(super) acks: Vec<(String, String)>,
    /// Manual acks queued so far (tickets) and written so far.
    pub(super) acks_queued: u64,
    pub(super) acks_flushed: u64,
    /// Manual acks queued and not yet written: (ticket, from, message id).
    /// They enter the dedup set only once written: one whose connection dies
    /// first is delivered to the application again when CCS redelivers it.
    pub(super) acks_unwritten: VecDeque<(u64, String, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SlotState {
    /// May connect from this instant.
    Waiting(Instant),
    Connecting,
    Up(ConnId),
    Stopped,
}

#[derive(Debug)]
pub(super) struct Slot {
    pub(super) state: SlotState,
    pub(super) failures: u32,
    pub(super) connected_before: bool,
}

impl Engine {
    /// What slot `slot` (without a connection) should do now.
    pub fn slot_step(&mut self, slot: usize, now: Instant) -> SlotStep {
        let deadline = self.deadline;
        let stop = self.finished || self.fatal.is_some();
        let work_left = deadline.map(|d| self.waiting.work_before(d));
        let Some(s) = self.slots.get_mut(slot) else {
            return SlotStep::Stop;
        };
        let at = match s.state {
            SlotState::Stopped => return SlotStep::Stop,
            SlotState::Up(_) | SlotState::Connecting => return SlotStep::Wait(None),
            SlotState::Waiting(at) => at,
        };
        if stop {
            s.state = SlotState::Stopped;
            return SlotStep::Stop;
        }
        if let Some(d) = deadline {
            if now >= d || at >= d || work_left == Some(false) {
                s.state = SlotState::Stopped;
                return SlotStep::Stop;
            }
        }
        if now >= at {
            s.state = SlotState::Connecting;
            SlotStep::Connect { deadline }
        } else {
            SlotStep::Wait(Some(at))
        }
    }

    /// The connection attempt of `slot` failed.
    pub fn connect_failed(&mut self, slot: usize, error: Error, now: Instant) {
        let jitter = self.jitter();
        let Some(s) = self.slots.get_mut(slot) else {
            return;
        };
        if s.state != SlotState::Connecting {
            return;
        }
        match policy::on_connect_failure(&self.policy, &error, s.failures, jitter) {
            SlotDecision::Fatal => {
                s.state = SlotState::Stopped;
                self.fatal(error);
            }
            SlotDecision::Reconnect { delay, failures } => {
                s.failures = failures;
                s.state = SlotState::Waiting(later(now, delay));
                log::info!("connection attempt {failures} failed: {error}; next in {delay:?}");
                self.events.push(ClientEvent::Reconnecting {
                    slot,
                    attempt: failures,
                    delay,
                    error: Arc::new(error),
                });
            }
        }
    }

    /// `slot` is connected and authenticated as `jid`.
    pub fn connected(&mut self, slot: usize, jid: &str, now: Instant) -> ConnId {
        let id = self.next_conn;
        self.next_conn += 1;
        if let Some(s) = self.slots.get_mut(slot) {
            if s.connected_before {
                self.metrics.reconnects += 1;
            }
            s.connected_before = true;
            if s.state == SlotState::Connecting {
                s.state = SlotState::Up(id);
            }
        }
        self.conns.insert(
            id,
            Conn {
                slot,
                jid: jid.to_string(),
                up_at: now,
                window: Window::default(),
                draining_since: None,
                closing: false,
                acks: Vec::new(),
                acks_queued: 0,
                acks_flushed: 0,
                acks_unwritten: VecDeque::new(),
            },
        );
        self.peak_conns = self.peak_conns.max(self.conns.len());
        if self.finished {
            // Shut down meanwhile: conn_step closes it at once.
            if let Some(c) = self.conns.get_mut(&id) {
                c.closing = true;
            }
        }
        self.events.push(ClientEvent::Connected {
            slot,
            jid: jid.to_string(),
        });
        id
    }

    /// What connection `conn` should do now: messages and acks to write,
    /// whether to close, when to look again.
    pub fn conn_step(&mut self, conn: ConnId, now: Instant) -> ConnStep {
        let mut step = ConnStep::default();
        let deadline = self.deadline;
        let fatal = self.fatal.is_some();
        let work_left = deadline.map(|d| self.waiting.work_before(d));
        self.waiting.promote_due(now);
        let next_retry = self.waiting.next_retry();
        let max_pending = self.max_pending;
        let drain_timeout = self.drain_timeout;
        let Some(c) = self.conns.get_mut(&conn) else {
            step.close = true;
            return step;
        };
        step.acks = std::mem::take(&mut c.acks);
        step.ack_ticket = c.acks_queued;
        if c.closing {
            step.close = true;
            return step;
        }
        let past_deadline = deadline.is_some_and(|d| now >= d);
        let drain_over = c
            .draining_since
            .is_some_and(|t| now >= later(t, drain_timeout));
        let nothing_left = (fatal || work_left == Some(false)) && c.window.is_empty();
        if past_deadline || drain_over || nothing_left {
            if drain_over {
                log::warn!(
                    "{} still open {drain_timeout:?} after draining began: closing it",
                    c.jid
                );
            }
            c.closing = true;
            step.close = true;
            return step;
        }
        let can_send = c.draining_since.is_none() && !fatal;
        if can_send {
            let mut moved = 0;
            while c.window.len() < max_pending {
                let Some(front) = self.waiting.front() else {
                    break;
                };
                let suspect = front.attempts.is_suspect();
                if (suspect && !c.window.is_empty()) || c.window.has_suspect() {
                    break;
                }
                if c.window.contains(front.message.id()) {
                    // The same id is still in flight here: wait for its answer.
                    break;
                }
                let Some(e) = self.waiting.pop_front() else {
                    break;
                };
                c.window.insert(e);
                moved += 1;
                if suspect {
                    break;
                }
            }
            step.send = c.window.fresh();
            self.metrics.sent += moved as u64;
            if c.window.len() < max_pending {
                step.wake = next_retry;
            }
        }
        if let Some(t) = c.draining_since {
            step.wake = earlier(step.wake, Some(later(t, drain_timeout)));
        }
        step.wake = earlier(step.wake, deadline);
        step
    }

    /// The messages `conn_step` told the driver to write (`send` of them),
    /// in order. Call once per step: it marks them handed out.
    pub fn outgoing(&mut self, conn: ConnId) -> impl Iterator<Item = &Message> + '_ {
        self.conns
            .get_mut(&conn)
            .into_iter()
            .flat_map(|c| c.window.hand_out())
    }

    /// The driver could not write message `id` on `conn` because it is
    /// invalid there (nothing was written): it is rejected.
    pub fn unsendable(&mut self, conn: ConnId, id: &str, error: InvalidMessage) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if let Some(e) = c.window.remove(id) {
            self.metrics.sent = self.metrics.sent.saturating_sub(1);
            self.rejected(e, policy::on_unsendable(error));
        }
    }

    /// True once `conn` was told to stop sending (draining).
    pub fn is_draining(&self, conn: ConnId) -> bool {
        self.conns
            .get(&conn)
            .is_some_and(|c| c.draining_since.is_some())
    }

    /// The open connection (other than `except`) with the most room in its
    /// window for new messages, if any has room: the one to wake for work.
    pub fn roomiest(&self, except: Option<ConnId>) -> Option<ConnId> {
        self.conns
            .iter()
            .filter(|(id, c)| {
                Some(**id) != except
                    && !c.closing
                    && c.draining_since.is_none()
                    && c.window.len() < self.max_pending
            })
            .min_by_key(|(_, c)| c.window.len())
            .map(|(id, _)| *id)
    }

    /// Messages in flight on `conn`.
    pub fn in_flight(&self, conn: ConnId) -> usize {
        self.conns.get(&conn).map_or(0, |c| c.window.len())
    }

    /// The ids in flight on `conn`, in acceptance order.
    pub fn in_flight_ids(&self, conn: ConnId) -> Vec<String> {
        self.conns.get(&conn).map_or_else(Vec::new, |c| {
            c.window
                .iter()
                .map(|e| e.message.id().to_string())
                .collect()
        })
    }

    pub(super) fn start_draining(&mut self, conn: ConnId, now: Instant) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.draining_since.is_some() {
            return;
        }
        c.draining_since = Some(now);
        let (slot, jid) = (c.slot, c.jid.clone());
        let lifetime = now.saturating_duration_since(c.up_at);
        log::info!("{jid} is draining; opening a new connection");
        // It stays open until the server closes it: one drained right after
        // it came up counts as short-lived, so a server that drains every
        // connection at once gets the reconnect backoff, not a new
        // connection per drain.
        let reconnect = self.replace(slot, conn, lifetime, now);
        self.events.push(ClientEvent::Draining { slot, jid });
        if let Some((attempt, delay)) = reconnect {
            log::info!("drained after {lifetime:?}: next connection in {delay:?}");
            self.events.push(ClientEvent::Reconnecting {
                slot,
                attempt,
                delay,
                error: Arc::new(Error::Draining),
            });
        }
    }

    /// `conn`, up for `lifetime`, no longer serves `slot` (lost or
    /// draining): the slot connects again at once after a healthy
    /// connection, after the reconnect backoff after short-lived ones
    /// ([`policy::on_connection_end`]). The attempt count and delay to
    /// announce, if it waits.
    fn replace(
        &mut self,
        slot: usize,
        conn: ConnId,
        lifetime: Duration,
        now: Instant,
    ) -> Option<(u32, Duration)> {
        let jitter = self.jitter();
        let s = self.slots.get_mut(slot)?;
        if s.state != SlotState::Up(conn) {
            return None;
        }
        match policy::on_connection_end(&self.policy, lifetime, s.failures, jitter) {
            SlotDecision::Reconnect { delay, failures } => {
                s.failures = failures;
                s.state = SlotState::Waiting(later(now, delay));
                (!delay.is_zero()).then_some((failures, delay))
            }
            SlotDecision::Fatal => {
                s.state = SlotState::Stopped;
                None
            }
        }
    }

    /// `conn` ended without us closing it (dropped, stream error, dead peer):
    /// its in-flight messages go out again in order on the next connection,
    /// each with one more loss counted.
    pub fn lost(&mut self, conn: ConnId, error: Error, now: Instant) {
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        self.note_ended(conn, &c);
        log::info!("connection {} lost: {error}", c.jid);
        let error = Arc::new(error);
        let resent = self.settle_window(c.window.into_entries(), true, now);
        let lifetime = now.saturating_duration_since(c.up_at);
        let stopped = self.fatal.is_some() || self.finished;
        let mut reconnect = None;
        match self.slots.get_mut(c.slot) {
            Some(s) if s.state == SlotState::Up(conn) && stopped => s.state = SlotState::Stopped,
            _ => reconnect = self.replace(c.slot, conn, lifetime, now),
        }
        self.events.push(ClientEvent::Lost {
            slot: c.slot,
            jid: c.jid,
            error: Arc::clone(&error),
            resent,
        });
        if let Some((attempt, delay)) = reconnect {
            log::info!("connection lived {lifetime:?}: next attempt in {delay:?}");
            self.events.push(ClientEvent::Reconnecting {
                slot: c.slot,
                attempt,
                delay,
                error,
            });
        }
    }

    /// We closed `conn` (shutdown, fatal, a drain that never ended); `late`
    /// are the events that came while closing. They settle what they
    /// settle, by the same rules as ever; the rest of the window goes out
    /// again (or back to the application at shutdown).
    pub fn closed(&mut self, conn: ConnId, late: Vec<Event>, now: Instant) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.closing = true;
        } else {
            return;
        }
        for ev in late {
            self.on_event(conn, ev, now);
        }
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        self.note_ended(conn, &c);
        let resent = self.settle_window(c.window.into_entries(), false, now);
        let stopped = self.fatal.is_some() || self.finished;
        if let Some(s) = self.slots.get_mut(c.slot) {
            if s.state == SlotState::Up(conn) {
                s.state = if stopped {
                    SlotState::Stopped
                } else {
                    SlotState::Waiting(now)
                };
            }
        }
        if resent > 0 || c.draining_since.is_some() {
            self.events.push(ClientEvent::Lost {
                slot: c.slot,
                jid: c.jid,
                error: Arc::new(Error::Closed),
                resent,
            });
        }
    }

    /// Settles a window that ended: each message's fate is the policy's
    /// ([`policy::on_loss`] if `lost`, else [`policy::requeue`]). Returns
    /// how many go out again.
    fn settle_window(&mut self, window: VecDeque<Entry>, lost: bool, now: Instant) -> usize {
        let mut resent = 0;
        for mut e in window {
            let stopped = self.fatal.as_ref();
            let fate = if lost {
                let (fate, attempts) = policy::on_loss(&self.policy, e.attempts, stopped);
                e.attempts = attempts;
                fate
            } else {
                policy::requeue(stopped)
            };
            if fate == Fate::Resend {
                resent += 1;
            }
            self.apply(e, fate, now);
        }
        self.metrics.resent += resent as u64;
        resent
    }
}
