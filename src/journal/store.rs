//! [`Journal`]: the live set in memory, its replay, group commit and compaction.

use super::error::JournalError;
use super::format::{self, Record, FRAME_HEADER_LEN, HEADER_LEN};
use super::storage::{FileStorage, Storage, LOG_FILE};
use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::BuildHasher;
use std::io;
use std::path::{Path, PathBuf};

/// Longest key, in bytes (UTF-8).
pub const MAX_KEY_LEN: usize = u16::MAX as usize;
/// Longest value, in bytes: 16 MiB.
pub const MAX_VALUE_LEN: usize = 16 << 20;
/// Largest batch (the records of one commit, encoded), in bytes: 1 GiB.
pub const MAX_BATCH_LEN: usize = 1 << 30;
/// Compaction never runs on a log smaller than this, and starts once the log
/// is larger than twice the live data plus this: 1 MiB.
pub const COMPACT_MIN_LEN: u64 = 1 << 20;
/// Compaction writes the live set in frames of about this many bytes.
const COMPACT_FRAME_LEN: usize = 1 << 20;
/// A batch buffer larger than this is given back to the allocator after its commit.
const KEEP_BUFFER_LEN: usize = 1 << 20;
/// The tail scan after a bad frame reads this much at a time.
const SCAN_CHUNK_LEN: usize = 64 << 10;

/// A durable key-value journal in one directory: an append-only log of
/// group-committed batches, replayed on open, compacted as it grows.
///
/// See the [module documentation](super) for the file format and the crash
/// guarantees. One process (and one `Journal`) per directory at a time.
/// Dropping a journal discards what is buffered and not committed.
pub struct Journal {
    storage: Box<dyn Storage>,
    path: PathBuf,
    salt: u64,
    file_len: u64,
    live: Live,
    /// The batch: a reserved frame header, then the encoded records.
    batch: Vec<u8>,
    batch_records: usize,
    refused: Option<JournalError>,
    poisoned: bool,
    /// After a failed compaction, the next one waits until the log reaches this.
    compact_floor: u64,
}

/// The live entries, in the order each key was first put.
#[derive(Default)]
struct Live {
    seq_of: HashMap<String, u64>,
    by_seq: BTreeMap<u64, (String, Vec<u8>)>,
    next_seq: u64,
    /// Size of the live set encoded as put records.
    encoded: u64,
}

impl Live {
    fn put(&mut self, key: &str, value: &[u8]) {
        let add = format::put_len(key, value) as u64;
        if let Some(seq) = self.seq_of.get(key) {
            let slot = &mut self.by_seq.get_mut(seq).expect("indexed").1;
            self.encoded = self.encoded - format::put_len(key, slot) as u64 + add;
            // A fresh allocation: a value that shrinks gives its memory back.
            *slot = value.to_vec();
        } else {
            let seq = self.next_seq;
            self.next_seq += 1;
            self.seq_of.insert(key.to_owned(), seq);
            self.by_seq.insert(seq, (key.to_owned(), value.to_vec()));
            self.encoded += add;
        }
    }

    fn remove(&mut self, key: &str) -> bool {
        match self.seq_of.remove(key) {
            Some(seq) => {
                let (k, v) = self.by_seq.remove(&seq).expect("indexed");
                self.encoded -= format::put_len(&k, &v) as u64;
                true
            }
            None => false,
        }
    }

    fn get(&self, key: &str) -> Option<&[u8]> {
        let seq = self.seq_of.get(key)?;
        Some(&self.by_seq[seq].1)
    }
}

impl fmt::Debug for Journal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Counts only: keys and values may carry message content.
        f.debug_struct("Journal")
            .field("path", &self.path)
            .field("entries", &self.live.by_seq.len())
            .field("buffered_records", &self.batch_records)
            .field("file_len", &self.file_len)
            .field("poisoned", &self.poisoned)
            .finish_non_exhaustive()
    }
}

/// How a frame at some offset failed to read.
enum Frame {
    /// A whole frame whose checksums hold: its payload and where the next starts.
    Good(Vec<u8>, u64),
    /// Not a valid frame (torn, or damaged): why.
    Bad(&'static str),
}

/// A compaction failure: before the rename (the old log is intact and still
/// in use) or after it (what is on disk is unknown).
enum CompactError {
    Before(JournalError),
    After(JournalError),
}

impl Journal {
    /// Opens (creating dir and file if missing) and replays the journal in `dir`; a torn or corrupt
    /// tail (an incomplete last commit) is detected, dropped and truncated away. Fails with a typed
    /// error if another process holds the journal open.
    ///
    /// # Errors
    ///
    /// [`JournalError::Locked`] if the journal is open elsewhere,
    /// [`JournalError::Corrupt`] or [`JournalError::UnsupportedVersion`] if the
    /// file is not a journal this crate reads or is damaged before its last
    /// commit, [`JournalError::Io`] if a file operation fails.
    pub fn open(dir: impl AsRef<Path>) -> Result<Journal, JournalError> {
        Journal::open_with(FileStorage::open(dir)?)
    }

    /// Opens and replays the journal kept in `storage`, as [`Journal::open`]
    /// does on a directory (which is `open_with(FileStorage::open(dir)?)`).
    ///
    /// # Errors
    ///
    /// As [`Journal::open`], but for the lock, which is the storage's business.
    pub fn open_with(storage: impl Storage + 'static) -> Result<Journal, JournalError> {
        let path = storage.dir().join(LOG_FILE);
        let mut journal = Journal {
            storage: Box::new(storage),
            path,
            salt: 0,
            file_len: 0,
            live: Live::default(),
            batch: vec![0; FRAME_HEADER_LEN],
            batch_records: 0,
            refused: None,
            poisoned: false,
            compact_floor: 0,
        };
        let op = "remove stale temporary file";
        journal
            .storage
            .remove_temp()
            .map_err(|e| journal.io(op, e))?;
        match journal
            .storage
            .log_len()
            .map_err(|e| journal.io("open", e))?
        {
            None => match journal.compact() {
                Ok(()) => {}
                Err(CompactError::Before(e) | CompactError::After(e)) => return Err(e),
            },
            Some(len) => {
                journal.replay(len)?;
                // The log's name may not be durable yet (a crash right after
                // its creation or compaction, before the directory fsync).
                let op = "fsync directory";
                journal.storage.sync_dir().map_err(|e| journal.io(op, e))?;
                if let Err(CompactError::After(e)) = journal.maybe_compact() {
                    return Err(e);
                }
            }
        }
        Ok(journal)
    }

    /// Live entries, in the order each key was first put.
    ///
    /// A key removed and put again counts as first put at that second put.
    /// Buffered (not yet committed) changes are included.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &[u8])> + '_ {
        self.live
            .by_seq
            .values()
            .map(|(k, v)| (k.as_str(), v.as_slice()))
    }

    /// The value of `key`, including buffered changes.
    pub fn get(&self, key: &str) -> Option<&[u8]> {
        self.live.get(key)
    }

    /// Whether `key` has a value, including buffered changes.
    pub fn contains(&self, key: &str) -> bool {
        self.live.seq_of.contains_key(key)
    }

    /// Number of live entries, including buffered changes.
    pub fn len(&self) -> usize {
        self.live.by_seq.len()
    }

    /// Whether there are no live entries, including buffered changes.
    pub fn is_empty(&self) -> bool {
        self.live.by_seq.is_empty()
    }

    /// Number of records buffered for the next [`commit`](Journal::commit).
    pub fn buffered(&self) -> usize {
        self.batch_records
    }

    /// Current length of the log file in bytes (header and committed frames).
    pub fn file_len(&self) -> u64 {
        self.file_len
    }

    /// The journal's log file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Buffers an insert-or-replace; visible to get() at once, durable after the next commit().
    ///
    /// A key over [`MAX_KEY_LEN`] bytes, a value over [`MAX_VALUE_LEN`], or a
    /// put that would grow the batch past [`MAX_BATCH_LEN`] is refused: not
    /// applied, and reported by the next `commit` as
    /// [`JournalError::TooLarge`]. [`Journal::try_put`] reports it at once.
    pub fn put(&mut self, key: &str, value: &[u8]) {
        if let Err(e) = self.try_put(key, value) {
            log::debug!("{e}");
            self.refused.get_or_insert(e);
        }
    }

    /// As [`Journal::put`], but a put over a limit is refused here, with
    /// nothing applied, instead of at the next commit.
    ///
    /// # Errors
    ///
    /// [`JournalError::TooLarge`] naming the limit.
    pub fn try_put(&mut self, key: &str, value: &[u8]) -> Result<(), JournalError> {
        let record = format::put_len(key, value);
        let batch = self.batch.len() - FRAME_HEADER_LEN;
        let over = if key.len() > MAX_KEY_LEN {
            Some(("key", key.len(), MAX_KEY_LEN))
        } else if value.len() > MAX_VALUE_LEN {
            Some(("value", value.len(), MAX_VALUE_LEN))
        } else if batch + record > MAX_BATCH_LEN {
            Some(("batch", batch + record, MAX_BATCH_LEN))
        } else {
            None
        };
        if let Some((what, len, max)) = over {
            return Err(JournalError::TooLarge {
                path: self.path.clone(),
                what,
                len,
                max,
            });
        }
        format::encode_put(&mut self.batch, key, value);
        self.batch_records += 1;
        self.live.put(key, value);
        Ok(())
    }

    /// Buffers a removal (no-op if absent).
    pub fn remove(&mut self, key: &str) {
        if self.live.remove(key) {
            format::encode_remove(&mut self.batch, key);
            self.batch_records += 1;
        }
    }

    /// Writes everything buffered since the last commit as one atomic batch: one write, one fsync
    /// (group commit). After a crash a batch is recovered whole or not at all. Compacts the file
    /// when dead records clearly outweigh live ones (past a minimum size). Returns how many
    /// records the batch held (0: nothing to do, no fsync).
    ///
    /// Compaction runs after the batch is durable, so its failure does not
    /// fail this commit: a failure before the new file replaces the old is
    /// logged and retried later; one after poisons the journal for the next
    /// commit.
    ///
    /// # Errors
    ///
    /// [`JournalError::TooLarge`] if a put since the last commit was refused
    /// (nothing written, the rest stays buffered: commit again);
    /// [`JournalError::Io`] if the write or fsync failed, after which the
    /// journal is poisoned; [`JournalError::Poisoned`] ever after. After an
    /// `Io` error acknowledge nothing of the batch: it may or may not be on
    /// disk. Reopening recovers the durable state, with that batch wholly
    /// present or wholly absent.
    pub fn commit(&mut self) -> Result<usize, JournalError> {
        if self.poisoned {
            return Err(JournalError::Poisoned {
                path: self.path.clone(),
            });
        }
        if let Some(e) = self.refused.take() {
            return Err(e);
        }
        if self.batch_records == 0 {
            return Ok(0);
        }
        format::seal_frame(&mut self.batch, self.salt);
        if let Err(e) = self.storage.append_log(&self.batch) {
            return Err(self.poison("write", e));
        }
        if let Err(e) = self.storage.sync_log() {
            return Err(self.poison("fsync", e));
        }
        self.file_len += self.batch.len() as u64;
        let records = self.batch_records;
        self.batch_records = 0;
        if self.batch.capacity() > KEEP_BUFFER_LEN {
            self.batch = Vec::new();
        }
        self.batch.clear();
        self.batch.resize(FRAME_HEADER_LEN, 0);
        if let Err(CompactError::After(e)) = self.maybe_compact() {
            log::warn!("{e}; the journal takes no more commits until reopened");
        }
        Ok(records)
    }

    fn io(&self, op: &'static str, source: io::Error) -> JournalError {
        JournalError::Io {
            path: self.path.clone(),
            op,
            source,
        }
    }

    fn poison(&mut self, op: &'static str, source: io::Error) -> JournalError {
        self.poisoned = true;
        self.io(op, source)
    }

    fn corrupt(&self, offset: u64, reason: &'static str) -> JournalError {
        JournalError::Corrupt {
            path: self.path.clone(),
            offset,
            reason,
        }
    }

    /// Reads the header and every frame of a log of `len` bytes into the live
    /// set; drops a bad tail, fails on damage before it.
    fn replay(&mut self, len: u64) -> Result<(), JournalError> {
        if len < HEADER_LEN as u64 {
            return Err(self.corrupt(0, "file shorter than a journal header"));
        }
        let mut header = [0u8; HEADER_LEN];
        self.storage
            .read_log(0, &mut header)
            .map_err(|e| self.io("read", e))?;
        self.salt = match format::decode_header(&header) {
            Ok(salt) => salt,
            Err(format::HeaderError::Magic) => {
                return Err(self.corrupt(0, "not a journal (bad magic)"))
            }
            Err(format::HeaderError::Checksum) => {
                return Err(self.corrupt(0, "header checksum mismatch"))
            }
            Err(format::HeaderError::Version(version)) => {
                return Err(JournalError::UnsupportedVersion {
                    path: self.path.clone(),
                    version,
                })
            }
        };
        let mut offset = HEADER_LEN as u64;
        while offset < len {
            match self.read_frame(offset, len)? {
                Frame::Good(payload, next) => {
                    let live = &mut self.live;
                    let applied = format::decode_records(&payload, MAX_VALUE_LEN, |r| match r {
                        Record::Put(k, v) => live.put(k, v),
                        Record::Remove(k) => {
                            live.remove(k);
                        }
                    });
                    if let Err(reason) = applied {
                        return Err(self.corrupt(offset, reason));
                    }
                    offset = next;
                }
                Frame::Bad(reason) => {
                    if self.find_frame(offset + 1, len)?.is_some() {
                        return Err(self.corrupt(offset, reason));
                    }
                    log::warn!(
                        "journal {}: dropped a torn last commit ({} bytes at byte {offset}: {reason})",
                        self.path.display(),
                        len - offset
                    );
                    self.storage
                        .truncate_log(offset)
                        .map_err(|e| self.io("truncate", e))?;
                    self.storage.sync_log().map_err(|e| self.io("fsync", e))?;
                    break;
                }
            }
        }
        self.file_len = offset;
        Ok(())
    }

    /// Reads the frame at `offset` of a log of `len` bytes.
    fn read_frame(&mut self, offset: u64, len: u64) -> Result<Frame, JournalError> {
        let left = len - offset;
        if left < FRAME_HEADER_LEN as u64 {
            return Ok(Frame::Bad("torn frame header"));
        }
        let mut head = [0u8; FRAME_HEADER_LEN];
        self.storage
            .read_log(offset, &mut head)
            .map_err(|e| self.io("read", e))?;
        let Some(h) = format::decode_frame_header(&head, self.salt) else {
            return Ok(Frame::Bad("frame header checksum mismatch"));
        };
        let end = FRAME_HEADER_LEN as u64 + u64::from(h.len);
        if end > left {
            return Ok(Frame::Bad("frame runs past the end of the file"));
        }
        // `h.len` is at most what the file holds: no allocation beyond its size.
        let mut payload = vec![0u8; h.len as usize];
        self.storage
            .read_log(offset + FRAME_HEADER_LEN as u64, &mut payload)
            .map_err(|e| self.io("read", e))?;
        if super::crc::crc32c(&payload) != h.payload_crc {
            return Ok(Frame::Bad("frame checksum mismatch"));
        }
        Ok(Frame::Good(payload, offset + end))
    }

    /// The first offset in `from..len` where a whole valid frame starts.
    /// Tells a damaged frame in the middle (valid frames follow) from a torn
    /// tail (none do).
    fn find_frame(&mut self, from: u64, len: u64) -> Result<Option<u64>, JournalError> {
        let header = FRAME_HEADER_LEN as u64;
        let mut start = from;
        let mut buf = Vec::new();
        while start + header <= len {
            let chunk = (len - start).min((SCAN_CHUNK_LEN + FRAME_HEADER_LEN) as u64) as usize;
            buf.resize(chunk, 0);
            self.storage
                .read_log(start, &mut buf)
                .map_err(|e| self.io("read", e))?;
            let candidates = chunk - FRAME_HEADER_LEN + 1;
            for i in 0..candidates {
                let h = &buf[i..i + FRAME_HEADER_LEN];
                if format::decode_frame_header(h, self.salt).is_some() {
                    let at = start + i as u64;
                    if let Frame::Good(..) = self.read_frame(at, len)? {
                        return Ok(Some(at));
                    }
                }
            }
            start += candidates as u64;
        }
        Ok(None)
    }

    /// Compacts if the log has grown past twice the live data plus
    /// [`COMPACT_MIN_LEN`]. A failure before the rename is logged here.
    fn maybe_compact(&mut self) -> Result<(), CompactError> {
        let live = HEADER_LEN as u64 + self.live.encoded;
        if self.file_len <= 2 * live + COMPACT_MIN_LEN || self.file_len < self.compact_floor {
            return Ok(());
        }
        match self.compact() {
            Ok(()) => {
                self.compact_floor = 0;
                Ok(())
            }
            Err(CompactError::Before(e)) => {
                log::warn!("{e}; compaction skipped, the log stays as it is");
                self.compact_floor = self.file_len + COMPACT_MIN_LEN;
                Err(CompactError::Before(e))
            }
            Err(CompactError::After(e)) => {
                self.poisoned = true;
                Err(CompactError::After(e))
            }
        }
    }

    /// Writes the live set to the temporary file, fsyncs it, renames it over
    /// the log and fsyncs the directory. A crash at any point leaves the old
    /// complete log or the new one.
    fn compact(&mut self) -> Result<(), CompactError> {
        let salt = fresh_salt();
        let written = self.write_temp(salt).map_err(|e| {
            let _ = self.storage.remove_temp();
            CompactError::Before(e)
        })?;
        if let Err(e) = self.storage.rename_temp() {
            let _ = self.storage.remove_temp();
            return Err(CompactError::Before(self.io("rename", e)));
        }
        // The new file is the log from here on, whatever happens next.
        self.salt = salt;
        self.file_len = written;
        self.storage
            .sync_dir()
            .map_err(|e| CompactError::After(self.io("fsync directory", e)))?;
        log::debug!(
            "journal {}: compacted to {written} bytes",
            self.path.display()
        );
        Ok(())
    }

    /// Writes header and live set to the temporary file and fsyncs it; returns its length.
    fn write_temp(&mut self, salt: u64) -> Result<u64, JournalError> {
        self.storage
            .create_temp()
            .map_err(|e| self.io("create temporary file", e))?;
        let header = format::encode_header(salt);
        let mut written = header.len() as u64;
        self.storage
            .append_temp(&header)
            .map_err(|e| self.io("write temporary file", e))?;
        let mut frame = vec![0u8; FRAME_HEADER_LEN];
        let mut entries = self.live.by_seq.values().peekable();
        while let Some((k, v)) = entries.next() {
            format::encode_put(&mut frame, k, v);
            let full = frame.len() - FRAME_HEADER_LEN >= COMPACT_FRAME_LEN;
            if full || entries.peek().is_none() {
                format::seal_frame(&mut frame, salt);
                if let Err(e) = self.storage.append_temp(&frame) {
                    return Err(self.io("write temporary file", e));
                }
                written += frame.len() as u64;
                frame.clear();
                frame.resize(FRAME_HEADER_LEN, 0);
            }
        }
        self.storage
            .sync_temp()
            .map_err(|e| self.io("fsync temporary file", e))?;
        Ok(written)
    }
}

/// A salt no earlier file is likely to share, so frames left over from
/// another file (or bytes inside a value) are never taken for this file's.
fn fresh_salt() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    RandomState::new().hash_one((nanos, std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_journal_can_move_to_another_thread() {
        fn send<T: Send>() {}
        send::<Journal>();
        send::<JournalError>();
    }

    #[test]
    fn live_size_follows_puts_replaces_and_removes() {
        let mut live = Live::default();
        live.put("a", b"12345");
        live.put("bb", b"1");
        assert_eq!(live.encoded, (7 + 1 + 5) + (7 + 2 + 1));
        live.put("a", b"");
        assert_eq!(live.encoded, (7 + 1) + (7 + 2 + 1));
        assert!(live.remove("bb") && !live.remove("bb"));
        assert_eq!(live.encoded, 7 + 1);
        live.put("bb", b"x");
        let order: Vec<&str> = live.by_seq.values().map(|(k, _)| k.as_str()).collect();
        assert_eq!(order, ["a", "bb"]);
    }
}
