//! Upstream messages and receipts on their way to the client: kept until the client ACKs them
//! on the connection they were delivered on; released for redelivery when that connection
//! ends un-acked ([protocol: acks](crate::protocol#acks)). Lives inside the emulator's state
//! mutex.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use super::ConnId;

/// Upstream message or delivery receipt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OutKind {
    /// An upstream message from a device.
    Upstream,
    /// A delivery receipt.
    Receipt,
}

/// One unacked outbound message.
#[derive(Debug, Clone)]
pub(crate) struct OutItem {
    pub id: String,
    pub kind: OutKind,
    /// The JSON payload (unescaped).
    pub json: Arc<str>,
    /// The connection it was handed to, `None` while it waits for one.
    pub conn: Option<ConnId>,
}

/// Every unacked upstream message and receipt, in creation order.
#[derive(Debug, Default)]
pub(crate) struct Outbound {
    items: BTreeMap<u64, OutItem>,
    by_id: HashMap<String, Vec<u64>>,
    waiting: BTreeSet<u64>,
    next_seq: u64,
}

impl Outbound {
    /// Adds an item, handed to `conn` or waiting when `None`.
    pub(crate) fn add(&mut self, id: String, kind: OutKind, json: Arc<str>, conn: Option<ConnId>) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.by_id.entry(id.clone()).or_default().push(seq);
        if conn.is_none() {
            self.waiting.insert(seq);
        }
        self.items.insert(
            seq,
            OutItem {
                id,
                kind,
                json,
                conn,
            },
        );
    }

    /// True if some item waits for a connection.
    pub(crate) fn has_waiting(&self) -> bool {
        !self.waiting.is_empty()
    }

    /// Hands the oldest waiting item to `conn`.
    pub(crate) fn take_first_waiting(&mut self, conn: ConnId) -> Option<OutItem> {
        let seq = self.waiting.pop_first()?;
        let item = self.items.get_mut(&seq)?;
        item.conn = Some(conn);
        Some(item.clone())
    }

    /// The client acked `id` on `conn`: forget it. False if no such item was handed to `conn`.
    pub(crate) fn acked(&mut self, id: &str, conn: ConnId) -> bool {
        let Some(seqs) = self.by_id.get_mut(id) else {
            return false;
        };
        let Some(pos) = seqs
            .iter()
            .position(|s| self.items.get(s).is_some_and(|i| i.conn == Some(conn)))
        else {
            return false;
        };
        let seq = seqs.remove(pos);
        if seqs.is_empty() {
            self.by_id.remove(id);
        }
        self.items.remove(&seq);
        true
    }

    /// `conn` ended: everything handed to it waits for the next connection. Returns how many.
    pub(crate) fn release(&mut self, conn: ConnId) -> usize {
        let mut n = 0;
        for (seq, item) in self.items.iter_mut() {
            if item.conn == Some(conn) {
                item.conn = None;
                self.waiting.insert(*seq);
                n += 1;
            }
        }
        n
    }

    /// Ids of every unacked item, oldest first.
    pub(crate) fn unacked_ids(&self) -> Vec<String> {
        self.items.values().map(|i| i.id.clone()).collect()
    }

    /// Number of unacked items.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }
}

#[cfg(test)]
mod tests;
