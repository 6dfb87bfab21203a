//! One connection's window: the messages in flight on it, the only record
//! of them (the connection itself keeps none while the worker drives it).
//!
//! Kept in acceptance order (by [`Entry::seq`]), looked up by message id
//! through an index from the id's hash to its `seq`: an ack or NACK finds
//! its entry in O(1) plus a binary search, whatever order answers come in.
//! Two different ids with the same 64-bit hash in one window (astronomically
//! rare, never a wrong answer) fall back to a scan of the window. The
//! engine never puts more than `max_pending` here, nor one id twice.

use std::collections::hash_map::Entry as IndexEntry;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasherDefault;

use super::queue::{key_of, Entry};
use crate::connection::IdHasher;
use crate::message::Message;

#[derive(Debug, Default)]
pub(super) struct Window {
    /// In flight, sorted by `seq`.
    entries: VecDeque<Entry>,
    /// The hash of each id to its entry's `seq` (the first entry with that
    /// hash, if two share it).
    index: HashMap<u64, u64, BuildHasherDefault<IdHasher>>,
    /// Entries whose hash another entry holds in `index`.
    collisions: usize,
    /// Entries with [`Attempts::is_suspect`](crate::client::policy::Attempts::is_suspect).
    suspects: usize,
    /// The `seq`s added since they were last handed out, in the order added
    /// (the order to write them).
    fresh: Vec<u64>,
    /// The `seq`s of the last hand-out (kept for their buffer).
    handed: Vec<u64>,
}

impl Window {
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// An entry that is a suspect is in flight here.
    pub(super) fn has_suspect(&self) -> bool {
        self.suspects > 0
    }

    /// How many entries wait to be handed out to the driver.
    pub(super) fn fresh(&self) -> usize {
        self.fresh.len()
    }

    fn slot(&self, seq: u64) -> Option<usize> {
        self.entries.binary_search_by_key(&seq, |e| e.seq).ok()
    }

    /// Where the entry for `id` is, if it is in flight here.
    fn find(&self, id: &str) -> Option<usize> {
        let key = key_of(id);
        let hit = self
            .index
            .get(&key)
            .and_then(|&seq| self.slot(seq))
            .filter(|&i| self.entries[i].message.id() == id);
        if hit.is_some() || self.collisions == 0 {
            return hit;
        }
        self.entries.iter().position(|e| e.message.id() == id)
    }

    /// True if a message with this id is in flight here.
    pub(super) fn contains(&self, id: &str) -> bool {
        self.find(id).is_some()
    }

    /// Adds an entry (its id not in flight here); it is fresh until the
    /// next [`hand_out`](Self::hand_out).
    pub(super) fn insert(&mut self, e: Entry) {
        debug_assert!(!self.contains(e.message.id()), "one id twice in a window");
        match self.index.entry(e.key) {
            IndexEntry::Occupied(_) => self.collisions += 1,
            IndexEntry::Vacant(v) => {
                v.insert(e.seq);
            }
        }
        if e.attempts.is_suspect() {
            self.suspects += 1;
        }
        self.fresh.push(e.seq);
        let at = match self.entries.back() {
            Some(last) if last.seq > e.seq => self.entries.partition_point(|x| x.seq < e.seq),
            _ => self.entries.len(),
        };
        self.entries.insert(at, e);
    }

    /// Takes the entry for `id` out of the window, if it is in flight here.
    pub(super) fn remove(&mut self, id: &str) -> Option<Entry> {
        let i = self.find(id)?;
        let e = self.entries.remove(i)?;
        if self.index.get(&e.key) == Some(&e.seq) {
            self.index.remove(&e.key);
            if self.collisions > 0 {
                // Another entry with this hash takes its place in the index.
                if let Some(o) = self.entries.iter().find(|o| o.key == e.key) {
                    self.index.insert(o.key, o.seq);
                    self.collisions -= 1;
                }
            }
        } else {
            self.collisions -= 1;
        }
        if e.attempts.is_suspect() {
            self.suspects -= 1;
        }
        if let Some(f) = self.fresh.iter().position(|&s| s == e.seq) {
            // Never handed out (the driver could not write it).
            self.fresh.remove(f);
        }
        Some(e)
    }

    /// The fresh entries' messages, in the order added; marks them handed out.
    pub(super) fn hand_out(&mut self) -> impl Iterator<Item = &Message> + '_ {
        self.handed.clear();
        std::mem::swap(&mut self.fresh, &mut self.handed);
        let (handed, entries) = (&self.handed, &self.entries);
        handed.iter().filter_map(move |&seq| {
            let i = entries.binary_search_by_key(&seq, |e| e.seq).ok()?;
            Some(&entries[i].message)
        })
    }

    /// The entries, in acceptance order.
    pub(super) fn iter(&self) -> impl Iterator<Item = &Entry> + '_ {
        self.entries.iter()
    }

    /// Every entry, in acceptance order.
    pub(super) fn into_entries(self) -> VecDeque<Entry> {
        self.entries
    }
}

#[cfg(test)]
mod tests;
