//! What the emulator saw and answered, per connection, for tests to assert on.
//!
//! Each session owns a [`LiveLedger`] behind its own mutex and applies a batch of
//! [`LedgerOp`]s once per write, so recording costs one uncontended lock per batch.
//! [`Emulator::ledger`](super::Emulator::ledger) copies every live ledger into a [`Ledger`].
//!
//! Size: the ledger keeps every message id a test sends (a few dozen bytes each) until the
//! emulator is dropped; nothing else grows with traffic. Long benchmarks can switch id
//! recording off with [`EmulatorBuilder::record_ids`](super::EmulatorBuilder::record_ids) and
//! keep only the counts.

use std::collections::{HashMap, HashSet};

use super::ConnId;
use crate::event::NackCode;

/// A snapshot of everything the emulator recorded, from [`Emulator::ledger`](super::Emulator::ledger).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Ledger {
    /// Every connection that authenticated and bound a resource, in order of creation
    /// (closed ones included).
    pub connections: Vec<ConnLedger>,
    /// Upstream messages and receipts not acked yet (in flight or waiting for a connection),
    /// in the order they were created.
    pub upstream_unacked: Vec<String>,
    /// TCP connections accepted so far (including ones that never authenticated).
    pub connections_accepted: usize,
    /// Connections whose SASL authentication was refused.
    pub auth_failures: usize,
}

/// What one connection saw.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnLedger {
    /// The connection.
    pub id: ConnId,
    /// The full JID bound on it.
    pub jid: String,
    /// Downstream message ids in arrival order (repeats kept). Empty when id recording is off.
    pub received: Vec<String>,
    /// Downstream message ids ACKed on this connection, in the order the ACKs were written.
    pub acked: Vec<String>,
    /// Downstream message ids NACKed on this connection, with the code, in write order.
    pub nacked: Vec<(String, NackCode)>,
    /// Downstream messages received (counted even when id recording is off).
    pub received_count: u64,
    /// ACKs written.
    pub acked_count: u64,
    /// NACKs written.
    pub nacked_count: u64,
    /// The most downstream messages that were pending at once, counted at each arrival as
    /// messages received minus answers already written (a lower bound of the client's own
    /// count, so a value above 100 is a real violation).
    pub max_pending: usize,
    /// Downstream messages that arrived while 100 or more were already pending.
    pub window_violations: usize,
    /// Upstream message ids written to this connection.
    pub upstream_sent: Vec<String>,
    /// Upstream message ids the client ACKed on this connection.
    pub upstream_acked: Vec<String>,
    /// Upstream message or receipt ids the client NACKed (clients should never do this).
    pub upstream_nacked: Vec<String>,
    /// Receipt ids (`dr2:...`) written to this connection.
    pub receipts_sent: Vec<String>,
    /// Receipt ids the client ACKed on this connection.
    pub receipts_acked: Vec<String>,
    /// Stanza errors sent (400 for a missing `message_id` or unreadable JSON, 406 for a bad ACK).
    pub stanza_errors: usize,
    /// The connection has ended.
    pub closed: bool,
    /// The connection was drained (control `CONNECTION_DRAINING` sent).
    pub drained: bool,
}

impl Ledger {
    /// The ledger of connection `id`, if it authenticated.
    pub fn conn(&self, id: ConnId) -> Option<&ConnLedger> {
        self.connections.iter().find(|c| c.id == id)
    }

    /// Downstream messages received over all connections, repeats included.
    pub fn total_received(&self) -> u64 {
        self.connections.iter().map(|c| c.received_count).sum()
    }

    /// ACKs written over all connections.
    pub fn total_acked(&self) -> u64 {
        self.connections.iter().map(|c| c.acked_count).sum()
    }

    /// NACKs written over all connections.
    pub fn total_nacked(&self) -> u64 {
        self.connections.iter().map(|c| c.nacked_count).sum()
    }

    /// Window violations over all connections.
    pub fn window_violations(&self) -> usize {
        self.connections.iter().map(|c| c.window_violations).sum()
    }

    /// Stanza errors sent over all connections.
    pub fn stanza_errors(&self) -> usize {
        self.connections.iter().map(|c| c.stanza_errors).sum()
    }

    /// Distinct downstream message ids received (needs id recording).
    pub fn distinct_received(&self) -> usize {
        let mut seen = HashSet::new();
        for c in &self.connections {
            for id in &c.received {
                seen.insert(id.as_str());
            }
        }
        seen.len()
    }

    /// Downstream message ids received more than once (on one or several connections), in
    /// the order of their first arrival (needs id recording).
    pub fn duplicates(&self) -> Vec<String> {
        let mut counts: HashMap<&str, (usize, usize)> = HashMap::new();
        let mut order = 0;
        for c in &self.connections {
            for id in &c.received {
                let e = counts.entry(id.as_str()).or_insert((order, 0));
                e.1 += 1;
                order += 1;
            }
        }
        let mut dups: Vec<(usize, &str)> = counts
            .into_iter()
            .filter(|(_, (_, n))| *n > 1)
            .map(|(id, (first, _))| (first, id))
            .collect();
        dups.sort_unstable();
        dups.into_iter().map(|(_, id)| id.to_string()).collect()
    }

    /// Distinct downstream message ids that got an ACK on some connection (needs id recording).
    pub fn acked_ids(&self) -> HashSet<&str> {
        self.connections
            .iter()
            .flat_map(|c| c.acked.iter().map(String::as_str))
            .collect()
    }

    /// Upstream messages and receipts created and not acked yet.
    pub fn unacked_upstream(&self) -> &[String] {
        &self.upstream_unacked
    }
}

/// One change to a connection's ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LedgerOp {
    /// A downstream message arrived (index = its `received_count` before this one).
    Received(String),
    /// The ACK for the message at this arrival index was written.
    Acked(u64),
    /// The NACK for the message at this arrival index was written.
    Nacked(u64, NackCode),
    /// A stanza error was written.
    StanzaError,
    /// An upstream message was written.
    UpstreamSent(String),
    /// A receipt was written.
    ReceiptSent(String),
    /// The client acked an upstream message.
    UpstreamAcked(String),
    /// The client acked a receipt.
    ReceiptAcked(String),
    /// The client NACKed an upstream message or receipt.
    UpstreamNacked(String),
}

impl LedgerOp {
    /// True for ops that describe something the emulator wrote, which did not happen if the
    /// write failed.
    pub(crate) fn needs_write(&self) -> bool {
        matches!(
            self,
            LedgerOp::Acked(_)
                | LedgerOp::Nacked(..)
                | LedgerOp::StanzaError
                | LedgerOp::UpstreamSent(_)
                | LedgerOp::ReceiptSent(_)
        )
    }
}

/// The mutable ledger of one connection.
#[derive(Debug)]
pub(crate) struct LiveLedger {
    id: ConnId,
    jid: String,
    record_ids: bool,
    received: Vec<String>,
    acked: Vec<u64>,
    nacked: Vec<(u64, NackCode)>,
    received_count: u64,
    acked_count: u64,
    nacked_count: u64,
    pub(crate) max_pending: usize,
    pub(crate) window_violations: usize,
    upstream_sent: Vec<String>,
    upstream_acked: Vec<String>,
    upstream_nacked: Vec<String>,
    receipts_sent: Vec<String>,
    receipts_acked: Vec<String>,
    stanza_errors: usize,
    pub(crate) closed: bool,
    pub(crate) drained: bool,
}

impl LiveLedger {
    pub(crate) fn new(id: ConnId, jid: String, record_ids: bool) -> Self {
        LiveLedger {
            id,
            jid,
            record_ids,
            received: Vec::new(),
            acked: Vec::new(),
            nacked: Vec::new(),
            received_count: 0,
            acked_count: 0,
            nacked_count: 0,
            max_pending: 0,
            window_violations: 0,
            upstream_sent: Vec::new(),
            upstream_acked: Vec::new(),
            upstream_nacked: Vec::new(),
            receipts_sent: Vec::new(),
            receipts_acked: Vec::new(),
            stanza_errors: 0,
            closed: false,
            drained: false,
        }
    }

    /// Applies one op.
    pub(crate) fn apply(&mut self, op: LedgerOp) {
        match op {
            LedgerOp::Received(id) => {
                self.received_count += 1;
                if self.record_ids {
                    self.received.push(id);
                }
            }
            LedgerOp::Acked(idx) => {
                self.acked_count += 1;
                if self.record_ids {
                    self.acked.push(idx);
                }
            }
            LedgerOp::Nacked(idx, code) => {
                self.nacked_count += 1;
                if self.record_ids {
                    self.nacked.push((idx, code));
                }
            }
            LedgerOp::StanzaError => self.stanza_errors += 1,
            LedgerOp::UpstreamSent(id) if self.record_ids => self.upstream_sent.push(id),
            LedgerOp::ReceiptSent(id) if self.record_ids => self.receipts_sent.push(id),
            LedgerOp::UpstreamAcked(id) if self.record_ids => self.upstream_acked.push(id),
            LedgerOp::ReceiptAcked(id) if self.record_ids => self.receipts_acked.push(id),
            LedgerOp::UpstreamSent(_)
            | LedgerOp::ReceiptSent(_)
            | LedgerOp::UpstreamAcked(_)
            | LedgerOp::ReceiptAcked(_) => {}
            LedgerOp::UpstreamNacked(id) => self.upstream_nacked.push(id),
        }
    }

    fn id_at(&self, idx: u64) -> String {
        usize::try_from(idx)
            .ok()
            .and_then(|i| self.received.get(i))
            .cloned()
            .unwrap_or_default()
    }

    /// A copy for a [`Ledger`].
    pub(crate) fn snapshot(&self) -> ConnLedger {
        ConnLedger {
            id: self.id,
            jid: self.jid.clone(),
            received: self.received.clone(),
            acked: self.acked.iter().map(|&i| self.id_at(i)).collect(),
            nacked: self
                .nacked
                .iter()
                .map(|(i, c)| (self.id_at(*i), c.clone()))
                .collect(),
            received_count: self.received_count,
            acked_count: self.acked_count,
            nacked_count: self.nacked_count,
            max_pending: self.max_pending,
            window_violations: self.window_violations,
            upstream_sent: self.upstream_sent.clone(),
            upstream_acked: self.upstream_acked.clone(),
            upstream_nacked: self.upstream_nacked.clone(),
            receipts_sent: self.receipts_sent.clone(),
            receipts_acked: self.receipts_acked.clone(),
            stanza_errors: self.stanza_errors,
            closed: self.closed,
            drained: self.drained,
        }
    }
}

#[cfg(test)]
mod tests;
