//! Where the journal's bytes live: the [`Storage`] trait and [`FileStorage`],
//! its implementation on a real directory.

use super::error::JournalError;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The log's file name inside the journal directory.
pub const LOG_FILE: &str = "journal.log";
/// The compaction's temporary file name inside the journal directory.
pub const TEMP_FILE: &str = "journal.log.tmp";
/// The lock file's name inside the journal directory.
pub const LOCK_FILE: &str = "journal.lock";

/// The file operations a [`Journal`](super::Journal) needs from its directory:
/// one log it reads, appends to and truncates, and one temporary file that
/// compaction fills and renames over the log.
///
/// [`FileStorage`] is the real thing; [`Journal::open_with`](super::Journal::open_with)
/// takes any implementation, so tests can simulate a crash at any operation
/// (a torn write, un-synced data lost). Durability is what the journal
/// assumes of an implementation: after `sync_log` returns, the log's bytes
/// survive a crash; after `sync_temp`, the temporary file's; after
/// `sync_dir`, the last rename. Before that, a crash may keep any prefix of
/// un-synced appends, and either side of an un-synced rename.
pub trait Storage: Send {
    /// The journal directory, for error messages.
    fn dir(&self) -> &Path;
    /// The log's length in bytes, or `None` if there is no log yet.
    fn log_len(&mut self) -> io::Result<Option<u64>>;
    /// Fills `buf` from the log at `offset` (all of it, or an error).
    fn read_log(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Appends all of `bytes` to the end of the log.
    fn append_log(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// Makes the log's content durable (fsync).
    fn sync_log(&mut self) -> io::Result<()>;
    /// Cuts the log to `len` bytes.
    fn truncate_log(&mut self, len: u64) -> io::Result<()>;
    /// Creates the temporary file empty, replacing any old one.
    fn create_temp(&mut self) -> io::Result<()>;
    /// Appends all of `bytes` to the temporary file.
    fn append_temp(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// Makes the temporary file's content durable (fsync).
    fn sync_temp(&mut self) -> io::Result<()>;
    /// Atomically renames the temporary file over the log; from then on the
    /// former temporary file is the log that `append_log` writes to.
    fn rename_temp(&mut self) -> io::Result<()>;
    /// Makes the directory's entries (the last rename or creation) durable.
    fn sync_dir(&mut self) -> io::Result<()>;
    /// Removes the temporary file if there is one.
    fn remove_temp(&mut self) -> io::Result<()>;
}

/// [`Storage`] on a directory of the real file system, holding an exclusive
/// lock on its [`LOCK_FILE`] for as long as it lives.
///
/// The lock is an advisory `flock`-style lock (`File::try_lock`): the
/// operating system releases it when the process ends, however it ends
/// (SIGKILL included), so a killed process never blocks its restart.
#[derive(Debug)]
pub struct FileStorage {
    dir: PathBuf,
    log: Option<File>,
    temp: Option<File>,
    /// Held (and locked) for the storage's lifetime; never read.
    _lock: File,
}

/// How long [`FileStorage::open`] waits for a lock that is held, before it
/// reports [`JournalError::Locked`].
pub const LOCK_PATIENCE: std::time::Duration = std::time::Duration::from_millis(250);

impl FileStorage {
    /// Opens `dir` (creating it if missing) and takes its lock, waiting up to
    /// [`LOCK_PATIENCE`] for a lock that is held.
    ///
    /// # Errors
    ///
    /// [`JournalError::Locked`] if another open journal holds the lock;
    /// [`JournalError::Io`] if the directory or lock file cannot be made.
    pub fn open(dir: impl AsRef<Path>) -> Result<FileStorage, JournalError> {
        let dir = dir.as_ref().to_path_buf();
        let io_err = |path: &Path, op, source| JournalError::Io {
            path: path.to_path_buf(),
            op,
            source,
        };
        // Directories this call creates: each one's entry in its parent must
        // reach the disk too, or a crash could take the whole journal away.
        let created: Vec<PathBuf> = dir
            .ancestors()
            .take_while(|a| !a.as_os_str().is_empty() && !a.exists())
            .map(Path::to_path_buf)
            .collect();
        fs::create_dir_all(&dir).map_err(|e| io_err(&dir, "create directory", e))?;
        for made in created.iter().rev() {
            let parent = match made.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            sync_directory(parent).map_err(|e| io_err(parent, "fsync directory", e))?;
        }
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| io_err(&lock_path, "open lock file", e))?;
        // A lock that is busy only for a moment is waited for: a child process
        // this process starts shares the lock file's descriptor between its fork
        // and its exec, so a journal closed just then stays locked that long.
        let give_up = std::time::Instant::now() + LOCK_PATIENCE;
        loop {
            match lock.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) if std::time::Instant::now() < give_up => {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                Err(TryLockError::WouldBlock) => {
                    return Err(JournalError::Locked { path: lock_path })
                }
                Err(TryLockError::Error(e)) => return Err(io_err(&lock_path, "lock", e)),
            }
        }
        Ok(FileStorage {
            dir,
            log: None,
            temp: None,
            _lock: lock,
        })
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join(LOG_FILE)
    }

    fn temp_path(&self) -> PathBuf {
        self.dir.join(TEMP_FILE)
    }

    fn log(&mut self) -> io::Result<&mut File> {
        if self.log.is_none() {
            let file = OpenOptions::new()
                .read(true)
                .append(true)
                .open(self.log_path())?;
            self.log = Some(file);
        }
        Ok(self.log.as_mut().expect("just opened"))
    }

    fn temp(&mut self) -> io::Result<&mut File> {
        self.temp
            .as_mut()
            .ok_or_else(|| io::Error::other("no temporary file open"))
    }
}

impl Storage for FileStorage {
    fn dir(&self) -> &Path {
        &self.dir
    }

    fn log_len(&mut self) -> io::Result<Option<u64>> {
        match self.log() {
            Ok(file) => Ok(Some(file.metadata()?.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn read_log(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let file = self.log()?;
        file.seek(SeekFrom::Start(offset))?;
        file.read_exact(buf)
    }

    fn append_log(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.log()?.write_all(bytes)
    }

    fn sync_log(&mut self) -> io::Result<()> {
        self.log()?.sync_data()
    }

    fn truncate_log(&mut self, len: u64) -> io::Result<()> {
        let file = self.log()?;
        file.set_len(len)?;
        // The new length is metadata: make sure it is on disk, not only the data.
        file.sync_all()
    }

    fn create_temp(&mut self) -> io::Result<()> {
        self.remove_temp()?;
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create_new(true)
            .open(self.temp_path())?;
        self.temp = Some(file);
        Ok(())
    }

    fn append_temp(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.temp()?.write_all(bytes)
    }

    fn sync_temp(&mut self) -> io::Result<()> {
        self.temp()?.sync_all()
    }

    fn rename_temp(&mut self) -> io::Result<()> {
        self.temp()?;
        fs::rename(self.temp_path(), self.log_path())?;
        self.log = self.temp.take();
        Ok(())
    }

    fn sync_dir(&mut self) -> io::Result<()> {
        sync_directory(&self.dir)
    }

    fn remove_temp(&mut self) -> io::Result<()> {
        self.temp = None;
        match fs::remove_file(self.temp_path()) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// Makes a directory's entries durable.
fn sync_directory(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        // Windows cannot open a directory as a file; its renames are
        // durable through the file system's own journal.
        let _ = dir;
        Ok(())
    }
}
