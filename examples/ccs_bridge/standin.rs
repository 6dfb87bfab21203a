//! TEMPORARY stand-in for `fcm_xmpp::journal::Journal` until it lands on main: the
//! same interface, in memory only. Deleted when the real journal is merged.

use std::path::Path;

use crate::store::MemJournal;

pub struct Journal(MemJournal);

impl Journal {
    pub fn open(_dir: &Path) -> Result<Journal, String> {
        log::warn!("journal stand-in: records are kept in memory only");
        Ok(Journal(MemJournal::default()))
    }
    pub fn entries(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.0.entries()
    }
    pub fn get(&self, key: &str) -> Option<&[u8]> {
        self.0.get(key)
    }
    pub fn put(&mut self, key: &str, value: &[u8]) {
        self.0.put(key, value)
    }
    pub fn remove(&mut self, key: &str) {
        self.0.remove(key)
    }
    pub fn commit(&mut self) -> Result<usize, String> {
        self.0.commit()
    }
}
