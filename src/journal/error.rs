//! [`JournalError`]: what can go wrong opening or committing a journal.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Why a journal could not be opened or a batch not committed.
///
/// Every variant names the file concerned. None carries a key or a value:
/// values may hold message payloads.
#[derive(Debug)]
#[non_exhaustive]
pub enum JournalError {
    /// An I/O operation on the file failed.
    Io {
        /// The file (or directory) the operation was on.
        path: PathBuf,
        /// What the journal was doing, e.g. `"fsync"`.
        op: &'static str,
        /// The operating system's error.
        source: io::Error,
    },
    /// Another open journal (in this process or another) holds the lock on the
    /// directory. Close it first; a lock dies with the process that held it.
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// The file is not a journal, or its content is damaged somewhere other
    /// than its last commit (which would have been dropped as torn). Nothing
    /// was changed; restore the file or move it away.
    Corrupt {
        /// The journal file.
        path: PathBuf,
        /// Byte offset of the damaged header or frame.
        offset: u64,
        /// What is wrong there.
        reason: &'static str,
    },
    /// The file is a journal of a format version this crate does not read.
    UnsupportedVersion {
        /// The journal file.
        path: PathBuf,
        /// The version the file declares.
        version: u32,
    },
    /// A put or a batch exceeded a size limit. The refused put was not applied
    /// (nor visible to `get`); nothing was written, and the rest of the batch
    /// stays buffered for the next commit.
    TooLarge {
        /// The journal file.
        path: PathBuf,
        /// Which limit: `"key"`, `"value"` or `"batch"`.
        what: &'static str,
        /// The refused size in bytes.
        len: usize,
        /// The limit in bytes.
        max: usize,
    },
    /// An earlier write, fsync or compaction step failed, so what is on disk is
    /// no longer known. The journal takes no more commits; drop it and open it
    /// again, which recovers the last durable state.
    Poisoned {
        /// The journal file.
        path: PathBuf,
    },
}

impl fmt::Display for JournalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JournalError::Io { path, op, source } => {
                write!(f, "journal {}: {op} failed: {source}", path.display())
            }
            JournalError::Locked { path } => write!(
                f,
                "journal {}: locked by another open journal (one process per journal)",
                path.display()
            ),
            JournalError::Corrupt {
                path,
                offset,
                reason,
            } => write!(
                f,
                "journal {}: corrupt at byte {offset}: {reason}; restore or move the file away",
                path.display()
            ),
            JournalError::UnsupportedVersion { path, version } => write!(
                f,
                "journal {}: format version {version} is not supported",
                path.display()
            ),
            JournalError::TooLarge {
                path,
                what,
                len,
                max,
            } => write!(
                f,
                "journal {}: {what} of {len} bytes refused (limit {max} bytes)",
                path.display()
            ),
            JournalError::Poisoned { path } => write!(
                f,
                "journal {}: an earlier write failed; reopen the journal",
                path.display()
            ),
        }
    }
}

impl std::error::Error for JournalError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            JournalError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
