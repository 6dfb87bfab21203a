//! The durable journal: real-file tests (torn tails at every byte, garbage,
//! damage in the middle, the lock) and a seeded crash simulation over an
//! in-memory storage that tears writes and drops un-synced data.
//!
//! `JOURNAL_SCHEDULES=N` sets how many crash schedules run (default 2000),
//! `JOURNAL_SEED=S` replays one.

use fcm_xmpp::journal::{Journal, JournalError, LOG_FILE};
use std::fs;
use std::path::{Path, PathBuf};

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("fcm-xmpp-journal-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        TempDir(dir)
    }
    fn path(&self) -> &Path {
        &self.0
    }
    fn log(&self) -> PathBuf {
        self.0.join(LOG_FILE)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

type State = Vec<(String, Vec<u8>)>;

fn state(j: &Journal) -> State {
    j.entries()
        .map(|(k, v)| (k.to_owned(), v.to_vec()))
        .collect()
}

fn kv(pairs: &[(&str, &[u8])]) -> State {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_vec()))
        .collect()
}

#[test]
fn committed_batches_survive_reopen_in_first_put_order() {
    let dir = TempDir::new("reopen");
    let mut j = Journal::open(dir.path()).unwrap();
    assert!(j.is_empty());
    assert_eq!(j.commit().unwrap(), 0, "nothing buffered");
    j.put("b", b"1");
    j.put("a", b"2");
    j.put("c", b"3");
    assert_eq!(j.get("a"), Some(&b"2"[..]), "visible before commit");
    assert_eq!(j.commit().unwrap(), 3);
    j.put("b", b"replaced"); // keeps its place
    j.remove("a");
    j.remove("absent"); // no-op, no record
    j.put("a", b"again"); // first put again: goes last
    assert_eq!(j.commit().unwrap(), 3);
    j.put("uncommitted", b"x");
    let expected = kv(&[("b", b"replaced"), ("c", b"3"), ("a", b"again")]);
    drop(j);
    let j = Journal::open(dir.path()).unwrap();
    assert_eq!(state(&j), expected);
    assert_eq!(j.len(), 3);
    assert!(j.contains("c") && !j.contains("uncommitted"));
}

#[test]
fn second_open_is_locked_out_until_the_first_is_dropped() {
    let dir = TempDir::new("lock");
    let mut first = Journal::open(dir.path()).unwrap();
    first.put("k", b"v");
    first.commit().unwrap();
    match Journal::open(dir.path()) {
        Err(e @ JournalError::Locked { .. }) => {
            assert!(e.to_string().contains("journal.lock"), "{e}");
        }
        other => panic!("expected Locked, got {other:?}"),
    }
    drop(first);
    let second = Journal::open(dir.path()).unwrap();
    assert_eq!(second.get("k"), Some(&b"v"[..]));
}
