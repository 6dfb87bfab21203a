//! Measures the durable journal on this machine's disk: group commits of 1, 10
//! and 100 records (about 400 bytes each, as a journaled downstream message),
//! in a steady state where each commit adds a batch and removes an older one
//! (so compaction runs too); beside each, the bare disk's rate of appending
//! as many value bytes to a plain file with one fdatasync each; and the replay
//! speed on open (big frames, and one-record frames). Prints one
//! `name: value unit` line per figure. A "record" is a put or a remove: in the
//! steady state each commit of N puts also carries N removes.
//!
//! `cargo run --release --example journal_bench -- --seconds 2`

#[path = "common/mod.rs"]
mod common;

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{die, Args, Flag, Program};
use fcm_xmpp::journal::{FileStorage, Journal, Storage};

const PROGRAM: Program = Program {
    name: "journal_bench",
    about: "commits/s and records/s of the durable journal on this machine's disk",
    usage: "[--dir PATH] [--seconds S] [--record-bytes N]",
    groups: &[(
        "bench",
        &[
            Flag::value(
                "dir",
                "PATH",
                "",
                "directory to measure in, created and emptied (default: a new one under the temp dir, removed after)",
            ),
            Flag::value("seconds", "S", "2", "seconds per measured case"),
            Flag::value("record-bytes", "N", "400", "value size of each record"),
        ],
    )],
    notes: "Output: one `name: value unit` line per figure on stdout.\n",
    exits: &[(0, "measured"), (1, "usage or I/O error")],
};

fn main() {
    let args = Args::parse(&PROGRAM);
    let seconds = Args::or_die(args.seconds("seconds", 2.0));
    let record: usize = Args::or_die(args.number("record-bytes", 400));
    let (root, remove_after) = match args.get("dir") {
        Some(d) => (PathBuf::from(d), false),
        None => (
            std::env::temp_dir().join(format!("fcm-xmpp-journal-bench-{}", std::process::id())),
            true,
        ),
    };
    println!("journal_bench_dir: {}", root.display());
    for batch in [1usize, 10, 100] {
        let raw = raw_fsyncs(&root.join("raw"), batch * record, seconds);
        println!("raw_append_fsync_batch{batch}: {raw:.0} appends/s");
        let dir = root.join(format!("batch-{batch}"));
        let _ = std::fs::remove_dir_all(&dir);
        let mut journal = Journal::open(&dir).unwrap_or_else(|e| die(e));
        let value = vec![b'x'; record];
        let mut latencies = Vec::new();
        let mut seq = 0u64;
        let mut records = 0usize;
        let started = Instant::now();
        while started.elapsed() < seconds {
            for _ in 0..batch {
                journal.put(&format!("session/{seq}"), &value);
                // The message put two batches ago got its outcome.
                if let Some(old) = seq.checked_sub(2 * batch as u64) {
                    journal.remove(&format!("session/{old}"));
                }
                seq += 1;
            }
            let t = Instant::now();
            records += journal.commit().unwrap_or_else(|e| die(e));
            latencies.push(t.elapsed());
        }
        let elapsed = started.elapsed().as_secs_f64();
        let commits = latencies.len();
        latencies.sort();
        let at = |q: f64| latencies[((commits - 1) as f64 * q) as usize];
        println!(
            "journal_commits_batch{batch}: {:.0} commits/s",
            commits as f64 / elapsed
        );
        println!(
            "journal_records_batch{batch}: {:.0} records/s",
            records as f64 / elapsed
        );
        println!(
            "journal_messages_batch{batch}: {:.0} puts/s",
            (seq as f64) / elapsed
        );
        println!("journal_commit_p50_batch{batch}: {:.3} ms", ms(at(0.5)));
        println!("journal_commit_p99_batch{batch}: {:.3} ms", ms(at(0.99)));
        println!("journal_file_batch{batch}: {} bytes", journal.file_len());
        drop(journal);
    }
    // Replay: a log of many live records, opened again.
    let dir = root.join("replay");
    let _ = std::fs::remove_dir_all(&dir);
    let mut journal = Journal::open(&dir).unwrap_or_else(|e| die(e));
    let value = vec![b'y'; record];
    for i in 0..100_000u32 {
        journal.put(&format!("session/{i}"), &value);
        if i % 1000 == 999 {
            journal.commit().unwrap_or_else(|e| die(e));
        }
    }
    journal.commit().unwrap_or_else(|e| die(e));
    replay(journal, &dir, "journal_replay", "entries");
    // Replay of a log of one-record frames (a backlog committed a message at a
    // time), built without fsyncs to save time: replay reads the same bytes.
    let dir = root.join("replay-small");
    let _ = std::fs::remove_dir_all(&dir);
    let storage = NoSync(FileStorage::open(&dir).unwrap_or_else(|e| die(e)));
    let mut journal = Journal::open_with(storage).unwrap_or_else(|e| die(e));
    for i in 0..100_000u32 {
        journal.put(&format!("session/{i}"), &value);
        journal.commit().unwrap_or_else(|e| die(e));
    }
    replay(journal, &dir, "journal_replay_small", "frames");
    if remove_after {
        let _ = std::fs::remove_dir_all(&root);
    }
}

/// The disk's own rate: append `bytes` to a plain file and fdatasync, in a loop.
fn raw_fsyncs(dir: &Path, bytes: usize, seconds: Duration) -> f64 {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap_or_else(|e| die(e));
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("raw.log"))
        .unwrap_or_else(|e| die(e));
    let value = vec![b'z'; bytes];
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < seconds {
        file.write_all(&value).unwrap_or_else(|e| die(e));
        file.sync_data().unwrap_or_else(|e| die(e));
        n += 1;
    }
    n as f64 / started.elapsed().as_secs_f64()
}

/// A [`FileStorage`] whose fsyncs do nothing: only to build a big log quickly.
struct NoSync(FileStorage);

impl Storage for NoSync {
    fn dir(&self) -> &Path {
        self.0.dir()
    }
    fn log_len(&mut self) -> std::io::Result<Option<u64>> {
        self.0.log_len()
    }
    fn read_log(&mut self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.0.read_log(offset, buf)
    }
    fn append_log(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.0.append_log(bytes)
    }
    fn sync_log(&mut self) -> std::io::Result<()> {
        Ok(())
    }
    fn truncate_log(&mut self, len: u64) -> std::io::Result<()> {
        self.0.truncate_log(len)
    }
    fn create_temp(&mut self) -> std::io::Result<()> {
        self.0.create_temp()
    }
    fn append_temp(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.0.append_temp(bytes)
    }
    fn sync_temp(&mut self) -> std::io::Result<()> {
        Ok(())
    }
    fn rename_temp(&mut self) -> std::io::Result<()> {
        self.0.rename_temp()
    }
    fn sync_dir(&mut self) -> std::io::Result<()> {
        Ok(())
    }
    fn remove_temp(&mut self) -> std::io::Result<()> {
        self.0.remove_temp()
    }
}

/// Closes `journal`, reopens `dir` and prints how fast the replay read its
/// log: `{name}_{unit}` (how many it replayed), `{name}` (MB/s) and
/// `{name}_time`.
fn replay(journal: Journal, dir: &Path, name: &str, unit: &str) {
    let bytes = journal.file_len();
    drop(journal);
    let t = Instant::now();
    let journal = Journal::open(dir).unwrap_or_else(|e| die(e));
    let took = t.elapsed();
    println!("{name}_{unit}: {} {unit}", journal.len());
    println!(
        "{name}: {:.0} MB/s",
        bytes as f64 / 1e6 / took.as_secs_f64()
    );
    println!("{name}_time: {:.1} ms", ms(took));
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
