//! The durable journal: real-file tests (torn tails at every byte, garbage,
//! damage in the middle, the lock) and a seeded crash simulation over an
//! in-memory storage that tears writes and drops un-synced data.
//!
//! `JOURNAL_SCHEDULES=N` sets how many crash schedules run (default 2000),
//! `JOURNAL_SEED=S` replays one; `JOURNAL_FUZZ_ROUNDS=N` how many damaged logs
//! the in-memory replay check opens (default 20,000).

use fcm_xmpp::journal::{
    Journal, JournalError, COMPACT_MIN_LEN, LOG_FILE, MAX_KEY_LEN, MAX_VALUE_LEN,
};
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

#[test]
fn a_lock_held_for_a_moment_is_waited_for() {
    // A child process started while a journal is open shares its lock for the moment
    // between fork and exec; here a second handle on the lock file stands in for it.
    let dir = TempDir::new("lock-moment");
    drop(Journal::open(dir.path()).unwrap());
    let holder = fs::OpenOptions::new()
        .write(true)
        .open(dir.path().join(fcm_xmpp::journal::LOCK_FILE))
        .unwrap();
    holder.try_lock().unwrap();
    let release = std::thread::spawn(move || {
        std::thread::sleep(fcm_xmpp::journal::LOCK_PATIENCE / 5);
        drop(holder);
    });
    let reopened = Journal::open(dir.path());
    release.join().unwrap();
    assert!(reopened.is_ok(), "{reopened:?}");
}

/// A journal with three commits; returns the file length after each.
fn three_commits(dir: &TempDir) -> (Vec<u64>, [State; 3]) {
    let mut j = Journal::open(dir.path()).unwrap();
    let mut lens = vec![j.file_len()];
    j.put("m-1", &[1; 100]);
    j.put("m-2", &[2; 100]);
    j.commit().unwrap();
    lens.push(j.file_len());
    let s1 = state(&j);
    j.remove("m-1");
    j.put("m-3", b"third");
    j.commit().unwrap();
    lens.push(j.file_len());
    let s2 = state(&j);
    j.put("m-2", b"replaced");
    j.put("m-4", &[4; 40]);
    j.commit().unwrap();
    lens.push(j.file_len());
    let s3 = state(&j);
    assert_eq!(
        fs::metadata(dir.log()).unwrap().len(),
        *lens.last().unwrap()
    );
    (lens, [s1, s2, s3])
}

#[test]
fn a_torn_last_frame_is_dropped_at_every_byte_and_the_journal_goes_on() {
    let dir = TempDir::new("torn");
    let (lens, [_, s2, s3]) = three_commits(&dir);
    let full = fs::read(dir.log()).unwrap();
    let (start, end) = (lens[2] as usize, lens[3] as usize);
    for cut in start..=end {
        fs::write(dir.log(), &full[..cut]).unwrap();
        let mut j = Journal::open(dir.path()).unwrap();
        let (expected, len) = if cut == end { (&s3, end) } else { (&s2, start) };
        assert_eq!(&state(&j), expected, "cut at {cut}");
        assert_eq!(
            fs::metadata(dir.log()).unwrap().len() as usize,
            len,
            "cut at {cut}: tail truncated"
        );
        // Appends land after the last good frame, so they survive a reopen.
        j.put("next", b"n");
        j.commit().unwrap();
        drop(j);
        let j = Journal::open(dir.path()).unwrap();
        assert_eq!(j.get("next"), Some(&b"n"[..]), "cut at {cut}");
        assert_eq!(j.len(), expected.len() + 1, "cut at {cut}");
    }
}

#[test]
fn garbage_after_the_last_frame_is_dropped() {
    let dir = TempDir::new("garbage");
    let (lens, [_, _, s3]) = three_commits(&dir);
    let full = fs::read(dir.log()).unwrap();
    let mut rng = sim::Rng::new(7);
    for n in [1usize, 5, 11, 12, 13, 40, 1000, 70_000] {
        for zeros in [true, false] {
            let mut bytes = full.clone();
            if zeros {
                bytes.resize(full.len() + n, 0);
            } else {
                bytes.extend(rng.bytes(n));
            }
            fs::write(dir.log(), &bytes).unwrap();
            let j = Journal::open(dir.path()).unwrap();
            assert_eq!(state(&j), s3, "{n} bytes of garbage (zeros: {zeros})");
            assert_eq!(fs::metadata(dir.log()).unwrap().len(), lens[3]);
        }
    }
}

#[test]
fn a_flipped_byte_before_the_last_frame_is_an_error_naming_file_and_offset() {
    let dir = TempDir::new("flip");
    let (lens, _) = three_commits(&dir);
    let full = fs::read(dir.log()).unwrap();
    // Every byte of the first two frames: damage with a good frame after it.
    for at in lens[0] as usize..lens[2] as usize {
        let mut bytes = full.clone();
        bytes[at] ^= 0x40;
        fs::write(dir.log(), &bytes).unwrap();
        let frame = if (at as u64) < lens[1] {
            lens[0]
        } else {
            lens[1]
        };
        match Journal::open(dir.path()) {
            Err(JournalError::Corrupt { path, offset, .. }) => {
                assert_eq!(path, dir.log(), "byte {at}");
                assert_eq!(offset, frame, "byte {at}");
            }
            other => panic!("byte {at}: expected Corrupt, got {other:?}"),
        }
        // Nothing was changed: the damaged file is left for inspection.
        assert_eq!(fs::read(dir.log()).unwrap(), bytes, "byte {at}");
    }
    let mut bytes = full.clone();
    bytes[lens[0] as usize + 20] ^= 1;
    fs::write(dir.log(), &bytes).unwrap();
    let e = Journal::open(dir.path()).unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("journal.log") && text.contains(&format!("byte {}", lens[0])),
        "{text}"
    );
}

#[test]
fn a_damaged_or_foreign_header_is_refused() {
    let dir = TempDir::new("header");
    let (_, _) = three_commits(&dir);
    let full = fs::read(dir.log()).unwrap();
    for cut in 0..24 {
        fs::write(dir.log(), &full[..cut]).unwrap();
        assert!(
            matches!(
                Journal::open(dir.path()),
                Err(JournalError::Corrupt { offset: 0, .. })
            ),
            "header cut at {cut}"
        );
    }
    for at in 0..24 {
        let mut bytes = full.clone();
        bytes[at] ^= 0x01;
        fs::write(dir.log(), &bytes).unwrap();
        assert!(
            matches!(
                Journal::open(dir.path()),
                Err(JournalError::Corrupt { offset: 0, .. })
            ),
            "header byte {at} flipped"
        );
    }
    fs::write(dir.log(), b"{\"not\": \"a journal\"} and some more text").unwrap();
    let e = Journal::open(dir.path()).unwrap_err();
    assert!(e.to_string().contains("not a journal"), "{e}");
}

#[test]
fn random_files_never_panic_the_replay() {
    let dir = TempDir::new("fuzz");
    let (_, _) = three_commits(&dir);
    let full = fs::read(dir.log()).unwrap();
    let mut rng = sim::Rng::new(11);
    let mut opened = 0;
    for round in 0..200 {
        let mut bytes = match round % 3 {
            0 => {
                let n = rng.below(3000) as usize;
                rng.bytes(n)
            }
            _ => full.clone(),
        };
        // Damage a few bytes anywhere (header included) and maybe cut the file.
        for _ in 0..rng.below(4) {
            if !bytes.is_empty() {
                let at = rng.below(bytes.len() as u64) as usize;
                bytes[at] = rng.next() as u8;
            }
        }
        if rng.chance(2) {
            bytes.truncate(rng.below(bytes.len() as u64 + 1) as usize);
        }
        fs::write(dir.log(), &bytes).unwrap();
        match Journal::open(dir.path()) {
            Ok(j) => {
                opened += 1;
                assert!(j.file_len() <= bytes.len() as u64);
            }
            Err(JournalError::Corrupt { .. } | JournalError::UnsupportedVersion { .. }) => {}
            Err(e) => panic!("round {round}: {e}"),
        }
    }
    assert!(opened > 0, "some damaged tails are recoverable");
}

#[test]
fn a_put_over_a_limit_is_refused_and_loses_nothing_else() {
    let dir = TempDir::new("limits");
    let mut j = Journal::open(dir.path()).unwrap();
    j.put("kept", b"v1");
    j.commit().unwrap();
    let len = j.file_len();
    j.put("other", b"buffered");
    let huge = vec![0u8; MAX_VALUE_LEN + 1];
    j.put("kept", &huge); // refused: "kept" keeps v1
    assert_eq!(j.get("kept"), Some(&b"v1"[..]));
    match j.commit() {
        Err(JournalError::TooLarge {
            what: "value",
            len,
            max,
            ..
        }) => {
            assert_eq!((len, max), (MAX_VALUE_LEN + 1, MAX_VALUE_LEN));
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert_eq!(j.file_len(), len, "nothing written");
    assert_eq!(j.commit().unwrap(), 1, "the rest of the batch commits next");
    let long_key = "k".repeat(MAX_KEY_LEN + 1);
    assert!(matches!(
        j.try_put(&long_key, b"x"),
        Err(JournalError::TooLarge { what: "key", .. })
    ));
    assert!(!j.contains(&long_key));
    assert_eq!(
        j.commit().unwrap(),
        0,
        "try_put refused at once, nothing pending"
    );
    let max_key = "k".repeat(MAX_KEY_LEN);
    j.try_put(&max_key, &vec![7u8; MAX_VALUE_LEN]).unwrap();
    j.commit().unwrap();
    drop(j);
    let j = Journal::open(dir.path()).unwrap();
    let keys: Vec<usize> = j.entries().map(|(k, _)| k.len()).collect();
    assert_eq!(keys, [4, 5, MAX_KEY_LEN]);
    assert_eq!(j.get(&max_key).map(<[u8]>::len), Some(MAX_VALUE_LEN));
}

#[test]
fn compaction_bounds_the_file_and_keeps_order_and_values() {
    let dir = TempDir::new("compact");
    let mut j = Journal::open(dir.path()).unwrap();
    let mut model = Model::default();
    let mut max_len = 0;
    let mut shrank = 0;
    for round in 0..6000u32 {
        let key = format!("session/{}", round % 17);
        let value = vec![round as u8; 400 + (round % 7) as usize * 50];
        j.put(&key, &value);
        model.put(&key, &value);
        if round % 5 == 0 {
            let gone = format!("session/{}", (round / 5) % 17);
            j.remove(&gone);
            model.remove(&gone);
        }
        if round % 10 != 9 {
            continue; // ten puts per commit
        }
        let before = j.file_len();
        j.commit().unwrap();
        if j.file_len() < before {
            shrank += 1;
        }
        let bound = 2 * model.live_len() + COMPACT_MIN_LEN + 10_000;
        assert!(
            j.file_len() <= bound,
            "round {round}: {} > {bound}",
            j.file_len()
        );
        assert_eq!(fs::metadata(dir.log()).unwrap().len(), j.file_len());
        max_len = max_len.max(j.file_len());
    }
    assert!(
        shrank >= 1,
        "the log was compacted (largest {max_len} bytes)"
    );
    assert!(!dir.path().join(fcm_xmpp::journal::TEMP_FILE).exists());
    drop(j);
    let j = Journal::open(dir.path()).unwrap();
    assert_eq!(Model(state(&j)), model);
}

#[test]
fn debug_and_errors_show_no_keys_or_values() {
    let dir = TempDir::new("redact");
    let mut j = Journal::open(dir.path()).unwrap();
    j.put("secret-key-name", b"secret-payload");
    j.put("k", &vec![1; MAX_VALUE_LEN + 1]);
    let debug = format!("{j:?}");
    assert!(
        debug.contains("entries: 1") && debug.contains("buffered_records: 1"),
        "{debug}"
    );
    let e = j.commit().unwrap_err();
    for text in [debug, e.to_string(), format!("{e:?}")] {
        assert!(!text.contains("secret"), "{text}");
    }
}

/// Not a test by itself: the child process of
/// `a_sigkilled_holder_does_not_keep_the_lock`, which opens the journal in
/// `JOURNAL_LOCK_CHILD_DIR`, says so on stdout and waits to be killed.
#[test]
#[ignore = "run by a_sigkilled_holder_does_not_keep_the_lock as a child process"]
fn lock_holder_child() {
    let dir = std::env::var("JOURNAL_LOCK_CHILD_DIR").expect("run by the parent test");
    let mut j = Journal::open(&dir).unwrap();
    j.put("from-child", b"1");
    j.commit().unwrap();
    println!("LOCKED");
    use std::io::Write;
    std::io::stdout().flush().unwrap();
    // Bounded: the parent kills us long before this.
    std::thread::sleep(std::time::Duration::from_secs(30));
}

#[cfg(unix)]
#[test]
fn a_sigkilled_holder_does_not_keep_the_lock() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let dir = TempDir::new("sigkill");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "lock_holder_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("JOURNAL_LOCK_CHILD_DIR", dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("LOCKED") {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "child ended before locking"
        );
    }
    assert!(matches!(
        Journal::open(dir.path()),
        Err(JournalError::Locked { .. })
    ));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let j = Journal::open(dir.path()).unwrap();
    assert_eq!(j.get("from-child"), Some(&b"1"[..]));
}

// ----- the seeded crash simulation -----

#[path = "common/rng.rs"]
mod rng;

mod sim {
    use fcm_xmpp::journal::{Storage, LOG_FILE, TEMP_FILE};
    use std::collections::HashMap;
    use std::io;
    use std::path::{Path, PathBuf};
    use std::sync::{Arc, Mutex};

    pub use super::rng::Rng;

    /// One file's bytes: what an fsync made durable, and what a read sees now.
    #[derive(Clone, Default)]
    struct Inode {
        durable: Vec<u8>,
        current: Vec<u8>,
    }

    #[derive(Clone, Copy)]
    enum DirOp {
        Link(&'static str, usize),
        Unlink(&'static str),
    }

    /// What goes wrong at the chosen operation.
    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    pub enum Fault {
        /// The process dies: the operation may half happen, nothing after it does.
        Crash,
        /// The operation fails with an I/O error (a write may half happen); the process goes on.
        Error,
    }

    /// Where the fault hit, for the coverage counts.
    #[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
    pub enum Site {
        Read,
        Append,
        SyncLog,
        Truncate,
        Compaction,
        Other,
    }

    /// A directory on a simulated disk: a crash keeps what was fsynced, a
    /// random prefix of every un-synced append (sometimes followed by
    /// garbage), and a random prefix of the un-synced directory changes.
    pub struct Disk {
        inodes: Vec<Inode>,
        names: HashMap<&'static str, usize>,
        durable_names: HashMap<&'static str, usize>,
        dir_log: Vec<DirOp>,
        ops: u64,
        fault_at: Option<(u64, Fault)>,
        crashed: bool,
        pub fault_site: Option<Site>,
        in_compaction: bool,
        /// The log inode and end offset of the last append to the log, and whether it was synced.
        last_append: Option<(usize, usize, bool)>,
        rng: Rng,
        /// Test knob: a broken storage whose fsync of the temporary file does nothing.
        pub skip_temp_sync: bool,
    }

    pub type Shared = Arc<Mutex<Disk>>;

    impl Disk {
        pub fn new(seed: u64) -> Shared {
            Arc::new(Mutex::new(Disk {
                inodes: Vec::new(),
                names: HashMap::new(),
                durable_names: HashMap::new(),
                dir_log: Vec::new(),
                ops: 0,
                fault_at: None,
                crashed: false,
                fault_site: None,
                in_compaction: false,
                last_append: None,
                rng: Rng::new(seed ^ 0xD15C),
                skip_temp_sync: false,
            }))
        }

        /// A disk whose journal directory holds a log of exactly `bytes`, all durable.
        pub fn with_log(seed: u64, bytes: Vec<u8>) -> Shared {
            let disk = Disk::new(seed);
            {
                let mut d = disk.lock().unwrap();
                d.inodes.push(Inode {
                    durable: bytes.clone(),
                    current: bytes,
                });
                d.names.insert(LOG_FILE, 0);
                d.durable_names.insert(LOG_FILE, 0);
            }
            disk
        }

        /// Arms a fault at the `n`th storage operation from now (1 = the next).
        pub fn arm(&mut self, n: u64, fault: Fault) {
            self.fault_at = Some((self.ops + n, fault));
        }

        pub fn disarm(&mut self) {
            self.fault_at = None;
        }

        pub fn crashed(&self) -> bool {
            self.crashed
        }

        pub fn faulted(&self) -> bool {
            self.fault_site.is_some()
        }

        /// The log's current length, as a reader sees it.
        pub fn log_len(&self) -> Option<usize> {
            self.names
                .get(LOG_FILE)
                .map(|&i| self.inodes[i].current.len())
        }

        /// Counts an operation; `Ok(Some(fault))` when it is the faulty one.
        fn step(&mut self, site: Site) -> io::Result<Option<Fault>> {
            if self.crashed {
                return Err(io::Error::other("simulated: process is dead"));
            }
            self.ops += 1;
            match self.fault_at {
                Some((at, fault)) if at == self.ops => {
                    self.fault_at = None;
                    self.fault_site = Some(if self.in_compaction {
                        Site::Compaction
                    } else {
                        site
                    });
                    if fault == Fault::Crash {
                        self.crashed = true;
                    }
                    Ok(Some(fault))
                }
                _ => Ok(None),
            }
        }

        fn link(&mut self, name: &'static str, ino: usize) {
            self.names.insert(name, ino);
            self.dir_log.push(DirOp::Link(name, ino));
        }

        fn append(&mut self, ino: usize, bytes: &[u8], site: Site) -> io::Result<()> {
            let fault = self.step(site)?;
            let n = match fault {
                Some(_) => self.rng.below(bytes.len() as u64 + 1) as usize,
                None => bytes.len(),
            };
            self.inodes[ino].current.extend_from_slice(&bytes[..n]);
            if site == Site::Append {
                self.last_append =
                    Some((ino, self.inodes[ino].current.len() + bytes.len() - n, false));
            }
            match fault {
                Some(_) => Err(io::Error::other("simulated: write failed")),
                None => Ok(()),
            }
        }

        fn sync(&mut self, ino: usize, site: Site) -> io::Result<()> {
            if self.step(site)?.is_some() {
                return Err(io::Error::other("simulated: fsync failed"));
            }
            let inode = &mut self.inodes[ino];
            inode.durable = inode.current.clone();
            if let Some((i, _, synced)) = &mut self.last_append {
                if *i == ino {
                    *synced = true;
                }
            }
            Ok(())
        }

        /// The disk after a crash (and, if `crashed` is false, after an
        /// orderly stop: nothing lost but the un-synced, which may survive).
        /// Returns whether the last append to the log survived whole.
        pub fn reboot(&mut self) -> bool {
            let rng = &mut self.rng;
            let keep = rng.below(self.dir_log.len() as u64 + 1) as usize;
            let mut names = self.durable_names.clone();
            for op in &self.dir_log[..keep] {
                match *op {
                    DirOp::Link(name, ino) => {
                        // A rename moves the name: the temporary one goes with it.
                        names.retain(|_, i| *i != ino);
                        names.insert(name, ino);
                    }
                    DirOp::Unlink(name) => {
                        names.remove(name);
                    }
                }
            }
            let mut inodes = vec![Inode::default(); self.inodes.len()];
            // Per inode: how many of its bytes are the ones written (before any garbage).
            let mut intact = vec![0; self.inodes.len()];
            for (ino, inode) in self.inodes.iter().enumerate() {
                let d = &inode.durable;
                let c = &inode.current;

                let bytes = if c.starts_with(d) {
                    let extra = c.len() - d.len();
                    let kept = match rng.below(3) {
                        0 => 0,
                        1 => extra,
                        _ => rng.below(extra as u64 + 1) as usize,
                    };
                    let mut b = c[..d.len() + kept].to_vec();
                    intact[ino] = b.len();
                    if kept < extra && rng.chance(4) {
                        // Later blocks reached the disk before earlier ones.
                        let n = 1 + rng.below(64) as usize;
                        if rng.chance(2) {
                            b.resize(b.len() + n, 0);
                        } else {
                            b.extend(rng.bytes(n));
                        }
                    }
                    b
                } else {
                    // Cut since its last fsync: the cut may or may not have reached the disk.
                    let b = if rng.chance(2) { d.clone() } else { c.clone() };
                    intact[ino] = b.len().min(c.len());
                    b
                };
                inodes[ino] = Inode {
                    durable: bytes.clone(),
                    current: bytes,
                };
            }
            let landed = match self.last_append {
                Some((_, _, true)) => true,
                Some((ino, end, false)) => {
                    names.get(LOG_FILE) == Some(&ino)
                        && self.inodes[ino].current.len() >= end
                        && intact[ino] >= end
                }
                None => false,
            };
            self.inodes = inodes;
            self.durable_names = names.clone();
            self.names = names;
            self.dir_log.clear();
            self.crashed = false;
            self.fault_at = None;
            self.in_compaction = false;
            self.last_append = None;
            landed
        }
    }

    /// The journal's view of a [`Disk`]: like a process's open files.
    pub struct SimStorage {
        disk: Shared,
        dir: PathBuf,
        log: Option<usize>,
        temp: Option<usize>,
    }

    impl SimStorage {
        pub fn new(disk: &Shared) -> SimStorage {
            SimStorage {
                disk: Arc::clone(disk),
                dir: PathBuf::from("sim"),
                log: None,
                temp: None,
            }
        }

        fn disk(&self) -> std::sync::MutexGuard<'_, Disk> {
            self.disk.lock().unwrap()
        }

        fn log_ino(&mut self) -> io::Result<usize> {
            if self.log.is_none() {
                let ino = self.disk().names.get(LOG_FILE).copied();
                self.log = ino;
            }
            self.log
                .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no log"))
        }

        fn temp_ino(&self) -> io::Result<usize> {
            self.temp
                .ok_or_else(|| io::Error::other("no temporary file"))
        }
    }

    fn fail(fault: Option<Fault>, what: &str) -> io::Result<()> {
        match fault {
            Some(_) => Err(io::Error::other(format!("simulated: {what} failed"))),
            None => Ok(()),
        }
    }

    impl Storage for SimStorage {
        fn dir(&self) -> &Path {
            &self.dir
        }

        fn log_len(&mut self) -> io::Result<Option<u64>> {
            fail(self.disk().step(Site::Read)?, "stat")?;
            match self.log_ino() {
                Ok(ino) => Ok(Some(self.disk().inodes[ino].current.len() as u64)),
                Err(_) => Ok(None),
            }
        }

        fn read_log(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
            let ino = self.log_ino()?;
            let mut disk = self.disk();
            fail(disk.step(Site::Read)?, "read")?;
            let data = &disk.inodes[ino].current;
            let start = offset as usize;
            if start + buf.len() > data.len() {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "short read"));
            }
            buf.copy_from_slice(&data[start..start + buf.len()]);
            Ok(())
        }

        fn append_log(&mut self, bytes: &[u8]) -> io::Result<()> {
            let ino = self.log_ino()?;
            self.disk().append(ino, bytes, Site::Append)
        }

        fn sync_log(&mut self) -> io::Result<()> {
            let ino = self.log_ino()?;
            self.disk().sync(ino, Site::SyncLog)
        }

        fn truncate_log(&mut self, len: u64) -> io::Result<()> {
            let ino = self.log_ino()?;
            let mut disk = self.disk();
            fail(disk.step(Site::Truncate)?, "truncate")?;
            disk.inodes[ino].current.truncate(len as usize);
            Ok(())
        }

        fn create_temp(&mut self) -> io::Result<()> {
            let mut disk = self.disk();
            disk.in_compaction = true;
            fail(disk.step(Site::Other)?, "create")?;
            let ino = disk.inodes.len();
            disk.inodes.push(Inode::default());
            disk.link(TEMP_FILE, ino);
            drop(disk);
            self.temp = Some(ino);
            Ok(())
        }

        fn append_temp(&mut self, bytes: &[u8]) -> io::Result<()> {
            let ino = self.temp_ino()?;
            self.disk().append(ino, bytes, Site::Other)
        }

        fn sync_temp(&mut self) -> io::Result<()> {
            let ino = self.temp_ino()?;
            let mut disk = self.disk();
            if disk.skip_temp_sync {
                return fail(disk.step(Site::Other)?, "fsync");
            }
            disk.sync(ino, Site::Other)
        }

        fn rename_temp(&mut self) -> io::Result<()> {
            let ino = self.temp_ino()?;
            let mut disk = self.disk();
            fail(disk.step(Site::Other)?, "rename")?;
            disk.names.remove(TEMP_FILE);
            disk.link(LOG_FILE, ino);
            drop(disk);
            self.log = self.temp.take();
            Ok(())
        }

        fn sync_dir(&mut self) -> io::Result<()> {
            let mut disk = self.disk();
            let fault = disk.step(Site::Other)?;
            disk.in_compaction = false;
            fail(fault, "fsync directory")?;
            disk.durable_names = disk.names.clone();
            disk.dir_log.clear();
            Ok(())
        }

        fn remove_temp(&mut self) -> io::Result<()> {
            self.temp = None;
            let mut disk = self.disk();
            disk.in_compaction = false;
            fail(disk.step(Site::Other)?, "unlink")?;
            if disk.names.remove(TEMP_FILE).is_some() {
                disk.dir_log.push(DirOp::Unlink(TEMP_FILE));
            }
            Ok(())
        }
    }
}

use sim::{Disk, Fault, Rng, SimStorage, Site};
use std::collections::HashMap;

/// The journal's state as a model sees it: entries in first-put order.
#[derive(Clone, Default, PartialEq, Eq)]
struct Model(State);

impl Model {
    fn put(&mut self, k: &str, v: &[u8]) {
        match self.0.iter_mut().find(|(key, _)| key == k) {
            Some(slot) => slot.1 = v.to_vec(),
            None => self.0.push((k.to_owned(), v.to_vec())),
        }
    }
    fn remove(&mut self, k: &str) {
        self.0.retain(|(key, _)| key != k);
    }
    /// Encoded size of the live set plus the file header (what compaction writes, near enough).
    fn live_len(&self) -> u64 {
        24 + self
            .0
            .iter()
            .map(|(k, v)| (7 + k.len() + v.len()) as u64)
            .sum::<u64>()
    }
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(k, v)| format!("{k}={}B", v.len())))
            .finish()
    }
}

/// What one schedule saw: which operation the fault hit, or a violation.
struct Outcome {
    site: Option<Site>,
    compactions: u64,
}

fn schedules() -> u64 {
    std::env::var("JOURNAL_SCHEDULES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000)
}

/// One schedule: random puts, removes and commits on a simulated disk, a
/// fault (crash, or an I/O error and later a crash) at a random storage
/// operation, reboot, reopen (which may crash again), and the check: the
/// recovered state is exactly the state after the last commit that returned
/// `Ok`, or after the one in flight if and only if it fully landed.
fn run_schedule(seed: u64, broken_temp_sync: bool) -> Result<Outcome, String> {
    let mut rng = Rng::new(seed);
    let disk = Disk::new(seed);
    disk.lock().unwrap().skip_temp_sync = broken_temp_sync;
    let big = rng.chance(3);
    let steps = 20 + rng.below(if big { 100 } else { 200 });
    let fault = if rng.chance(6) {
        Fault::Error
    } else {
        Fault::Crash
    };
    disk.lock()
        .unwrap()
        .arm(1 + rng.below(steps * 2 / 3), fault);
    let keys = 1 + rng.below(12);

    let mut committed = Model::default();
    let mut current = Model::default();
    // The commit in flight when the fault hit: (state before, state after).
    let mut in_flight: Option<(Model, Model)> = None;
    let mut poisoned = false;
    let mut compactions = 0;

    let mut journal = match Journal::open_with(SimStorage::new(&disk)) {
        Ok(j) => Some(j),
        Err(e) if disk.lock().unwrap().faulted() => {
            let _ = e;
            None
        }
        Err(e) => return Err(format!("open failed without a fault: {e}")),
    };
    if journal.is_none() && !disk.lock().unwrap().crashed() {
        // An I/O error during the first open: open again, as a caller would.
        journal = Some(
            Journal::open_with(SimStorage::new(&disk)).map_err(|e| format!("second open: {e}"))?,
        );
    }
    if let Some(j) = journal.as_mut() {
        for step in 0..steps {
            if disk.lock().unwrap().crashed() {
                break;
            }
            let key = format!("key-{}", rng.below(keys));
            match rng.below(10) {
                0..=4 => {
                    let len = if big {
                        10_000 + rng.below(40_000)
                    } else {
                        rng.below(600)
                    } as usize;
                    let value = rng.bytes(len);
                    j.put(&key, &value);
                    current.put(&key, &value);
                }
                5..=6 => {
                    j.remove(&key);
                    current.remove(&key);
                }
                _ => {
                    let before_len = j.file_len();
                    let result = j.commit();
                    let crashed = disk.lock().unwrap().crashed();
                    if crashed {
                        if !poisoned {
                            in_flight = Some((committed.clone(), current.clone()));
                        }
                        break;
                    }
                    match result {
                        Ok(_) if poisoned => {
                            return Err(format!("step {step}: commit Ok after a failed one"))
                        }
                        Ok(_) => {
                            committed = current.clone();
                            if j.file_len() < before_len {
                                compactions += 1;
                            }
                        }
                        Err(JournalError::Poisoned { .. }) if disk.lock().unwrap().faulted() => {
                            poisoned = true;
                        }
                        Err(JournalError::Io { .. })
                            if disk.lock().unwrap().faulted() && !poisoned =>
                        {
                            poisoned = true;
                            in_flight = Some((committed.clone(), current.clone()));
                        }
                        Err(e) => return Err(format!("step {step}: commit failed: {e}")),
                    }
                    if !disk.lock().unwrap().faulted() {
                        let on_disk = disk.lock().unwrap().log_len().unwrap_or(0) as u64;
                        if on_disk != j.file_len() {
                            return Err(format!(
                                "file_len {} but the log holds {on_disk}",
                                j.file_len()
                            ));
                        }
                        let bound = 2 * committed.live_len()
                            + COMPACT_MIN_LEN
                            + (on_disk - before_len.min(on_disk));
                        if on_disk > bound {
                            return Err(format!("log of {on_disk} bytes over its bound {bound}"));
                        }
                    }
                }
            }
            if Model(state(j)) != current {
                return Err(format!(
                    "step {step}: entries {:?} != model {current:?}",
                    Model(state(j))
                ));
            }
        }
    }
    drop(journal);
    let site = disk.lock().unwrap().fault_site;
    let landed = disk.lock().unwrap().reboot();
    let expected = match &in_flight {
        Some((before, after)) if poisoned => {
            // A commit that returned an I/O error: either is right.
            vec![before.clone(), after.clone()]
        }
        Some((before, after)) => vec![if landed {
            after.clone()
        } else {
            before.clone()
        }],
        None => vec![committed.clone()],
    };
    // Reopen; the recovery itself may crash (up to twice), which must change nothing.
    let mut recovered = None;
    for attempt in 0..3 {
        if attempt < 2 && rng.chance(3) {
            disk.lock().unwrap().arm(1 + rng.below(6), Fault::Crash);
        }
        match Journal::open_with(SimStorage::new(&disk)) {
            Ok(j) => {
                recovered = Some(j);
                break;
            }
            Err(e) if disk.lock().unwrap().crashed() => {
                let _ = e;
                disk.lock().unwrap().reboot();
            }
            Err(e) => {
                return Err(format!(
                    "reopen {attempt} failed: {e} (expected {expected:?})"
                ))
            }
        }
    }
    disk.lock().unwrap().disarm();
    let mut j = recovered.ok_or("reopen never succeeded")?;
    let got = Model(state(&j));
    if !expected.contains(&got) {
        return Err(format!(
            "recovered {got:?}, expected {} {expected:?} (fault at {site:?}, landed {landed})",
            if expected.len() > 1 { "one of" } else { "" }
        ));
    }
    // The recovered journal goes on: one more commit, an orderly stop, a reopen.
    let mut after = got;
    j.put("after-recovery", b"ok");
    after.put("after-recovery", b"ok");
    j.commit()
        .map_err(|e| format!("commit after recovery: {e}"))?;
    drop(j);
    disk.lock().unwrap().reboot();
    let j = Journal::open_with(SimStorage::new(&disk)).map_err(|e| format!("final reopen: {e}"))?;
    if Model(state(&j)) != after {
        return Err(format!(
            "after recovery and one commit: {:?} != {after:?}",
            Model(state(&j))
        ));
    }
    Ok(Outcome { site, compactions })
}

/// The seeds to run: `JOURNAL_SEED`, or `JOURNAL_SCHEDULES` of them from a fixed base.
fn seeds() -> Vec<u64> {
    match std::env::var("JOURNAL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        Some(seed) => vec![seed],
        None => (0..schedules()).map(|i| 0x10_0000 + i).collect(),
    }
}

fn run_schedules(
    seeds: &[u64],
    broken_temp_sync: bool,
) -> (u64, Vec<String>, HashMap<String, u64>) {
    let mut failures = Vec::new();
    let mut sites: HashMap<String, u64> = HashMap::new();
    for &seed in seeds {
        match run_schedule(seed, broken_temp_sync) {
            Ok(o) => {
                *sites.entry(format!("{:?}", o.site)).or_default() += 1;
                *sites.entry("compactions".into()).or_default() += o.compactions;
            }
            Err(e) if broken_temp_sync => failures.push(format!("seed {seed}: {e}")),
            Err(e) => failures.push(format!(
                "seed {seed} (replay: JOURNAL_SEED={seed} cargo test --test journal): {e}"
            )),
        }
    }
    (seeds.len() as u64, failures, sites)
}

#[test]
fn seeded_crash_schedules() {
    let started = std::time::Instant::now();
    let (n, failures, sites) = run_schedules(&seeds(), false);
    for f in failures.iter().take(5) {
        eprintln!("{f}");
    }
    let mut sites: Vec<_> = sites.into_iter().collect();
    sites.sort();
    println!(
        "journal schedules: {n}, failed: {}, fault sites and compactions: {sites:?} ({:?})",
        failures.len(),
        started.elapsed()
    );
    assert!(failures.is_empty(), "see the seeds above");
}

/// The simulation's teeth: on a storage whose fsync of the temporary file
/// does nothing (as if compaction renamed before its data was durable), some
/// crash during compaction recovers the wrong state, and the check says so.
#[test]
fn the_simulation_catches_a_rename_before_the_data_is_durable() {
    let seeds: Vec<u64> = (0..1000).map(|i| 0x10_0000 + i).collect();
    let (n, failures, _) = run_schedules(&seeds, true);
    println!("broken storage: {} of {n} schedules failed", failures.len());
    for f in failures.iter().take(3) {
        println!("{f}");
    }
    assert!(
        !failures.is_empty(),
        "no schedule noticed the missing fsync"
    );
}

#[test]
fn open_creates_missing_parent_directories() {
    let dir = TempDir::new("nested");
    let deep = dir.path().join("a/b/c");
    let mut j = Journal::open(&deep).unwrap();
    j.put("k", b"v");
    j.commit().unwrap();
    drop(j);
    assert_eq!(Journal::open(&deep).unwrap().get("k"), Some(&b"v"[..]));
}

/// Damaged logs by the thousand, in memory: flipped, inserted and deleted
/// bytes anywhere, cuts, glued copies. Replay never panics; it opens or gives
/// a typed error, and an open journal holds no more than the file did.
#[test]
fn damaged_logs_in_memory_never_panic_the_replay() {
    let rounds: u64 = std::env::var("JOURNAL_FUZZ_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    // A real log to damage: several commits, a compaction's worth of frames.
    let dir = TempDir::new("fuzz-mem");
    let (_, _) = three_commits(&dir);
    let full = fs::read(dir.log()).unwrap();
    let mut rng = sim::Rng::new(0xF022);
    let (mut opened, mut refused) = (0u64, 0u64);
    for round in 0..rounds {
        let mut bytes = full.clone();
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(bytes.len() as u64 + 1) as usize;
            match rng.below(5) {
                0 if at < bytes.len() => bytes[at] ^= 1 << rng.below(8),
                1 => bytes.insert(at, rng.next() as u8),
                2 if at < bytes.len() => {
                    bytes.remove(at);
                }
                3 => bytes.truncate(at),
                _ => {
                    let tail = bytes[at..].to_vec();
                    bytes.extend(tail);
                }
            }
        }
        let len = bytes.len();
        let disk = Disk::with_log(round, bytes);
        match Journal::open_with(SimStorage::new(&disk)) {
            Ok(j) => {
                opened += 1;
                assert!(j.file_len() <= len as u64, "round {round}");
                let held: usize = j.entries().map(|(k, v)| k.len() + v.len()).sum();
                assert!(held <= len, "round {round}");
            }
            Err(JournalError::Corrupt { .. } | JournalError::UnsupportedVersion { .. }) => {
                refused += 1;
            }
            Err(e) => panic!("round {round}: {e}"),
        }
    }
    println!("damaged logs: {rounds}, opened {opened}, refused {refused}");
    assert!(opened > 0 && refused > 0, "both outcomes occur");
}
