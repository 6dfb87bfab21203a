//! A durable key-value journal in one directory, `std` only: what a server
//! must not lose across a crash (accepted downstream messages, upstream
//! messages not yet handed on, outcomes not yet delivered).
//!
//! [`Journal::put`] and [`Journal::remove`] change the in-memory live set at
//! once and buffer a record; [`Journal::commit`] writes every buffered record
//! as one frame with one write and one fsync (group commit), so a caller
//! acknowledges a whole batch after one disk flush. After a crash,
//! [`Journal::open`] recovers exactly the batches whose commit returned `Ok`,
//! plus the batch in flight if and only if all of it reached the disk.
//!
//! ```
//! # let dir = std::env::temp_dir().join(format!("fcm-xmpp-doc-journal-{}", std::process::id()));
//! # let _ = std::fs::remove_dir_all(&dir);
//! use fcm_xmpp::journal::Journal;
//!
//! let mut journal = Journal::open(&dir).unwrap();
//! journal.put("app/m-1", b"{\"to\":\"device\"}");
//! journal.put("app/m-2", b"{\"to\":\"other\"}");
//! assert_eq!(journal.commit().unwrap(), 2); // one fsync for both
//! journal.remove("app/m-1");
//! journal.commit().unwrap();
//! drop(journal);
//!
//! let journal = Journal::open(&dir).unwrap();
//! let keys: Vec<&str> = journal.entries().map(|(k, _)| k).collect();
//! assert_eq!(keys, ["app/m-2"]);
//! # drop(journal);
//! # std::fs::remove_dir_all(&dir).unwrap();
//! ```
//!
//! # Files
//!
//! The directory holds [`LOG_FILE`] (the log), [`LOCK_FILE`] (locked while a
//! journal is open, so a second open fails with [`JournalError::Locked`]; the
//! lock dies with its process, even on SIGKILL) and, during a compaction,
//! [`TEMP_FILE`].
//!
//! # Format (version 1)
//!
//! All integers are little-endian; checksums are CRC-32C (Castagnoli).
//!
//! The log starts with a 24-byte header:
//!
//! | bytes | field |
//! |---|---|
//! | 0..8 | magic `FCMXJRNL` |
//! | 8..12 | format version, `1` |
//! | 12..20 | salt: a random number chosen when the file is written |
//! | 20..24 | CRC-32C of bytes 0..20 |
//!
//! Then one frame per commit, each a 12-byte frame header and a payload:
//!
//! | bytes | field |
//! |---|---|
//! | 0..4 | payload length `n` |
//! | 4..8 | CRC-32C of the payload |
//! | 8..12 | CRC-32C of the salt (8 bytes), then bytes 0..8 of this header |
//! | 12..12+n | payload: one or more records |
//!
//! A record is a put, `0x01`, key length (2 bytes), key (UTF-8), value length
//! (4 bytes), value; or a remove, `0x02`, key length (2 bytes), key. Replay
//! applies the records in file order: a put inserts or replaces (a replaced key
//! keeps its place in [`Journal::entries`]), a remove deletes.
//!
//! Limits: keys up to [`MAX_KEY_LEN`] bytes, values up to [`MAX_VALUE_LEN`],
//! a batch up to [`MAX_BATCH_LEN`]. Over a limit a put is refused
//! ([`JournalError::TooLarge`]), never truncated.
//!
//! # Recovery
//!
//! On open, frames are read in order. A frame is valid when its header
//! checksum holds (which, through the salt, also rejects frames of another
//! file), the payload fits in the file and the payload checksum holds. At
//! the first invalid frame the rest of the file is searched for any valid
//! frame: if there is none, the invalid frame is a torn last commit (a crash
//! in the middle of its write, or garbage after it): it is dropped and the
//! file is truncated to the last valid frame. If a valid frame follows, the
//! damage is in the middle of the log and open fails with
//! [`JournalError::Corrupt`] naming the file and the offset; nothing is
//! skipped silently or changed. A file that does not start with a valid
//! header is refused the same way.
//!
//! # Compaction
//!
//! When, after a commit, the log is larger than twice the live set (encoded)
//! plus [`COMPACT_MIN_LEN`], the live set is written to [`TEMP_FILE`], which is
//! fsynced, renamed over the log, and the directory fsynced. A crash at any
//! point leaves either the old complete log or the new one: both hold every
//! committed batch. The log so stays below about twice the live data plus 1
//! MiB (plus the last batch). A new journal's empty log is made the same way,
//! so a log file, once there, is always whole up to its last frame.
//!
//! # Failures
//!
//! A failed write or fsync leaves the file's state unknown (an fsync that
//! failed may have dropped data from the page cache): the journal is then
//! *poisoned* and every later commit fails with [`JournalError::Poisoned`].
//! Reading stays possible; dropping and reopening the journal recovers the
//! durable state.
//!
//! # Secrets
//!
//! Values may hold message payloads: no log line, error or `Debug` output
//! shows a key or a value (`Debug` shows counts).

mod crc;
mod error;
mod format;
mod storage;
mod store;

pub use error::JournalError;
pub use storage::{FileStorage, Storage, LOCK_FILE, LOCK_PATIENCE, LOG_FILE, TEMP_FILE};
pub use store::{Journal, COMPACT_MIN_LEN, MAX_BATCH_LEN, MAX_KEY_LEN, MAX_VALUE_LEN};
