//! Where the bridge keeps its records: the crate's durable journal (`--journal DIR`),
//! or the same interface in memory only (nothing survives a restart).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use fcm_xmpp::journal::Journal;

/// Records in memory, with the journal's interface: live entries in first-put order,
/// `put`/`remove` visible at once, `commit` a no-op.
#[derive(Default)]
pub struct MemJournal {
    /// Insertion sequence -> (key, value).
    order: BTreeMap<u64, (String, Vec<u8>)>,
    /// Key -> its insertion sequence.
    index: HashMap<String, u64>,
    next: u64,
    /// Changes since the last commit (the count `commit` reports).
    dirty: usize,
}

impl MemJournal {
    /// Live entries in first-put order.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.order.values().map(|(k, v)| (k.as_str(), v.as_slice()))
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn get(&self, key: &str) -> Option<&[u8]> {
        let seq = self.index.get(key)?;
        self.order.get(seq).map(|(_, v)| v.as_slice())
    }

    /// Sets `key` to `value`; a key already there keeps its place in the order.
    pub fn put(&mut self, key: &str, value: &[u8]) {
        self.dirty += 1;
        if let Some(seq) = self.index.get(key) {
            if let Some(slot) = self.order.get_mut(seq) {
                slot.1 = value.to_vec();
                return;
            }
        }
        let seq = self.next;
        self.next += 1;
        self.index.insert(key.to_string(), seq);
        self.order.insert(seq, (key.to_string(), value.to_vec()));
    }

    pub fn remove(&mut self, key: &str) {
        if let Some(seq) = self.index.remove(key) {
            self.order.remove(&seq);
            self.dirty += 1;
        }
    }

    /// Nothing to write: reports how many changes the batch had.
    pub fn commit(&mut self) -> Result<usize, String> {
        Ok(std::mem::take(&mut self.dirty))
    }
}

/// The bridge's records: durable or in memory, the same code either way.
pub struct Store {
    inner: Inner,
    /// Bytes put since the last commit (about: keys, values, record overhead).
    pending: usize,
}

enum Inner {
    /// The crate's journal in a directory.
    Disk(Journal),
    /// In memory only (no `--journal`).
    Mem(MemJournal),
}

impl Store {
    /// The journal in `dir` (replayed), or an empty store in memory for `None`.
    pub fn open(dir: Option<&Path>) -> Result<Store, String> {
        let inner = match dir {
            Some(d) => Journal::open(d)
                .map(Inner::Disk)
                .map_err(|e| format!("--journal {}: {e}", d.display()))?,
            None => Inner::Mem(MemJournal::default()),
        };
        Ok(Store { inner, pending: 0 })
    }

    /// Live records in first-put order, borrowed (nothing is copied).
    pub fn entries(&self) -> Box<dyn Iterator<Item = (&str, &[u8])> + '_> {
        match &self.inner {
            Inner::Disk(j) => Box::new(j.entries()),
            Inner::Mem(m) => Box::new(m.entries()),
        }
    }

    pub fn get(&self, key: &str) -> Option<&[u8]> {
        match &self.inner {
            Inner::Disk(j) => j.get(key),
            Inner::Mem(m) => m.get(key),
        }
    }

    pub fn put(&mut self, key: &str, value: &[u8]) {
        self.pending += key.len() + value.len() + 16;
        match &mut self.inner {
            Inner::Disk(j) => j.put(key, value),
            Inner::Mem(m) => m.put(key, value),
        }
    }

    pub fn remove(&mut self, key: &str) {
        self.pending += key.len() + 16;
        match &mut self.inner {
            Inner::Disk(j) => j.remove(key),
            Inner::Mem(m) => m.remove(key),
        }
    }

    /// Live records.
    pub fn len(&self) -> usize {
        match &self.inner {
            Inner::Disk(j) => j.len(),
            Inner::Mem(m) => m.len(),
        }
    }

    /// About how many bytes the next commit writes.
    pub fn pending(&self) -> usize {
        self.pending
    }

    /// Makes every change so far durable (one write and one fsync for the journal).
    pub fn commit(&mut self) -> Result<usize, String> {
        self.pending = 0;
        match &mut self.inner {
            Inner::Disk(j) => j.commit().map_err(|e| e.to_string()),
            Inner::Mem(m) => m.commit(),
        }
    }
}
