//! The engine's inbound side: ACKs, NACKs and stanza errors that settle or
//! retry a message in flight, upstream messages and receipts with their
//! acks (automatic or manual) and the duplicate filter.

use std::collections::{HashSet, VecDeque};
use std::time::Instant;

use super::conns::Conn;
use super::queue::Entry;
use super::{AckState, ConnId, Engine};
use crate::client::policy;
use crate::client::{AckHandle, AckMode, ClientEvent};
use crate::error::Error;
use crate::event::{Ack, Event, Nack, NackCode, StanzaError};

/// How many ended connections [`Engine::ack_state`] still knows about.
pub(super) const ENDED_KEPT: usize = 256;

/// The last `cap` `(from, message_id)` pairs of upstream messages and receipts.
#[derive(Debug, Default)]
pub(super) struct Dedup {
    pub(super) cap: usize,
    pub(super) seen: HashSet<(String, String)>,
    pub(super) order: VecDeque<(String, String)>,
}

impl Dedup {
    pub(super) fn contains(&self, from: &str, id: &str) -> bool {
        self.cap > 0 && self.seen.contains(&(from.to_string(), id.to_string()))
    }
    pub(super) fn remember(&mut self, from: &str, id: &str) {
        if self.cap == 0 {
            return;
        }
        let key = (from.to_string(), id.to_string());
        if self.seen.insert(key.clone()) {
            self.order.push_back(key);
            while self.order.len() > self.cap {
                if let Some(old) = self.order.pop_front() {
                    self.seen.remove(&old);
                }
            }
        }
    }
}

impl Engine {
    /// Applies one event that arrived on `conn`.
    pub fn on_event(&mut self, conn: ConnId, event: Event, now: Instant) {
        if !self.conns.contains_key(&conn) {
            log::debug!("event for a finished connection ignored: {event:?}");
            return;
        }
        match event {
            Event::Ack(ack) => self.on_ack(conn, ack),
            Event::Nack(nack) => self.on_nack(conn, nack, now),
            Event::StanzaError(err) => self.on_stanza_error(conn, err, now),
            Event::Upstream(_) | Event::Receipt(_) => self.on_inbound(conn, event),
            Event::Control(ref ctl) if ctl.kind == crate::ControlKind::ConnectionDraining => {
                self.start_draining(conn, now)
            }
            other => {
                log::info!("unhandled event: {other:?}");
                self.events.push(ClientEvent::Other(other));
            }
        }
    }

    fn take_in_flight(&mut self, conn: ConnId, ids: [Option<&str>; 2]) -> Option<Entry> {
        let c = self.conns.get_mut(&conn)?;
        ids.into_iter().flatten().find_map(|id| c.window.remove(id))
    }

    fn on_ack(&mut self, conn: ConnId, ack: Ack) {
        match self.take_in_flight(conn, [Some(&ack.message_id), None]) {
            Some(e) => self.delivered(e, ack),
            None => log::debug!("ack for unknown message {}", ack.message_id),
        }
    }

    fn on_nack(&mut self, conn: ConnId, nack: Nack, now: Instant) {
        *self
            .metrics
            .nacked
            .entry(nack.code.as_str().to_string())
            .or_insert(0) += 1;
        if nack.code == NackCode::BadAck {
            // About one of our acks, never about a downstream message.
            log::warn!(
                "BAD_ACK for {}: an ack we sent was malformed",
                nack.message_id
            );
            self.events.push(ClientEvent::Other(Event::Nack(nack)));
            return;
        }
        if nack.code == NackCode::ConnectionDraining {
            self.start_draining(conn, now);
        }
        let Some(mut e) = self.take_in_flight(conn, [Some(&nack.message_id), None]) else {
            log::debug!("nack for unknown message {}", nack.message_id);
            return;
        };
        let jitter = self.jitter();
        let before = e.attempts;
        let (fate, attempts) =
            policy::on_nack(&self.policy, nack, before, self.fatal.as_ref(), jitter);
        if attempts != before {
            self.metrics.retried += 1;
        }
        e.attempts = attempts;
        self.apply(e, fate, now);
    }

    fn on_stanza_error(&mut self, conn: ConnId, err: StanzaError, now: Instant) {
        let (id, mid) = (err.id.clone(), err.message_id.clone());
        match self.take_in_flight(conn, [id.as_deref(), mid.as_deref()]) {
            Some(e) => self.apply(e, policy::on_stanza_error(err), now),
            None => {
                log::warn!("stanza error for no pending message: {err:?}");
                self.events
                    .push(ClientEvent::Other(Event::StanzaError(err)));
            }
        }
    }

    fn on_inbound(&mut self, conn: ConnId, event: Event) {
        let Some((to, id)) = event
            .ack_target()
            .map(|(t, i)| (t.to_string(), i.to_string()))
        else {
            return;
        };
        let from = match &event {
            Event::Upstream(u) => u.from.clone(),
            Event::Receipt(r) => r.from.clone(),
            _ => String::new(),
        };
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.closing {
            // It cannot be acked any more: CCS delivers it again elsewhere.
            log::debug!("{id} arrived while closing: left for redelivery");
            return;
        }
        if self.dedup.contains(&from, &id) {
            self.metrics.duplicates += 1;
            c.acks.push((to, id));
            return;
        }
        let handle = match self.ack_mode {
            AckMode::Auto => {
                c.acks.push((to, id.clone()));
                self.dedup.remember(&from, &id);
                None
            }
            AckMode::Manual => Some(AckHandle {
                conn_id: conn,
                to,
                message_id: id,
                from,
            }),
        };
        match event {
            Event::Upstream(upstream) => {
                self.metrics.upstream += 1;
                self.events.push(ClientEvent::Upstream {
                    upstream,
                    ack: handle,
                });
            }
            Event::Receipt(receipt) => {
                self.metrics.receipts += 1;
                self.events.push(ClientEvent::Receipt {
                    receipt,
                    ack: handle,
                });
            }
            _ => {}
        }
    }

    /// Queues a manual ack on the connection the event arrived on; returns
    /// the ticket to pass to [`ack_state`](Self::ack_state).
    ///
    /// # Errors
    /// [`Error::Closed`] when that connection is gone (CCS will deliver the
    /// message again on another connection).
    pub fn manual_ack(&mut self, handle: &AckHandle) -> Result<u64, Error> {
        let conn = match self.conns.get_mut(&handle.conn_id) {
            Some(c) if !c.closing => c,
            _ => return Err(Error::Closed),
        };
        conn.acks
            .push((handle.to.clone(), handle.message_id.clone()));
        conn.acks_queued += 1;
        let ticket = conn.acks_queued;
        if self.dedup.cap > 0 {
            conn.acks_unwritten
                .push_back((ticket, handle.from.clone(), handle.message_id.clone()));
        }
        Ok(ticket)
    }

    /// Whether the manual ack with `ticket` on `conn` was written.
    pub fn ack_state(&self, conn: ConnId, ticket: u64) -> AckState {
        match self.conns.get(&conn) {
            Some(c) if c.acks_flushed >= ticket => AckState::Written,
            Some(c) if !c.closing => AckState::Queued,
            Some(_) => AckState::Gone,
            None => match self.ended.iter().find(|(id, _)| *id == conn) {
                Some((_, flushed)) if *flushed >= ticket => AckState::Written,
                _ => AckState::Gone,
            },
        }
    }

    /// The acks of `conn_step`s up to `ticket` are written.
    pub fn acks_flushed(&mut self, conn: ConnId, ticket: u64) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.acks_flushed = c.acks_flushed.max(ticket);
            while c.acks_unwritten.front().is_some_and(|a| a.0 <= ticket) {
                if let Some((_, from, id)) = c.acks_unwritten.pop_front() {
                    self.dedup.remember(&from, &id);
                }
            }
        }
    }

    /// Remembers how many manual acks `c` wrote before it ended.
    pub(super) fn note_ended(&mut self, conn: ConnId, c: &Conn) {
        if c.acks_queued == 0 {
            return;
        }
        if self.ended.len() == ENDED_KEPT {
            self.ended.pop_front();
        }
        self.ended.push_back((conn, c.acks_flushed));
    }
}
