//! Test helpers: a watchdog, an event collector, a freezable TCP proxy.
#![allow(dead_code)] // each test file uses a different subset

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use fcm_xmpp::client::{ClientEvent, Events};

#[cfg(feature = "emulator")]
pub mod judge;
pub mod script;

#[cfg(feature = "emulator")]
#[allow(unused_imports)] // each test file uses a different subset
pub use judge::{judged, judged_recording, start, Judged};

/// Aborts the test process if the guard is still alive after `limit`:
/// network tests must stop by themselves.
pub struct Watchdog(Arc<AtomicBool>);

pub fn watchdog(name: &'static str, limit: Duration) -> Watchdog {
    let done = Arc::new(AtomicBool::new(false));
    let d = Arc::clone(&done);
    thread::spawn(move || {
        let start = Instant::now();
        while start.elapsed() < limit {
            if d.load(Ordering::Relaxed) {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
        eprintln!("watchdog: test {name} still running after {limit:?}; aborting");
        std::process::abort();
    });
    Watchdog(done)
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Logs to stderr when `FCM_TEST_LOG` is set (e.g. `FCM_TEST_LOG=debug`).
pub fn init_logging() {
    struct L;
    impl log::Log for L {
        fn enabled(&self, m: &log::Metadata) -> bool {
            m.level() <= log::max_level()
        }
        fn log(&self, r: &log::Record) {
            eprintln!(
                "[{:?} {}] {}",
                thread::current().name(),
                r.level(),
                r.args()
            );
        }
        fn flush(&self) {}
    }
    static LOGGER: L = L;
    let level = match std::env::var("FCM_TEST_LOG").as_deref() {
        Ok("trace") => log::LevelFilter::Trace,
        Ok("debug") => log::LevelFilter::Debug,
        Ok("info") => log::LevelFilter::Info,
        Ok(_) => log::LevelFilter::Warn,
        Err(_) => return,
    };
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(level);
    }
}

/// What a test saw of each message.
#[derive(Debug, Default)]
pub struct Seen {
    /// message id -> outcome names ("delivered", "rejected:CODE", "returned:REASON").
    pub outcomes: HashMap<String, Vec<String>>,
    /// Every other event, in order.
    pub other: Vec<ClientEvent>,
}

impl Seen {
    pub fn outcome_count(&self) -> usize {
        self.outcomes.values().map(Vec::len).sum()
    }

    pub fn record(&mut self, ev: ClientEvent) {
        let name = match &ev {
            ClientEvent::Delivered { .. } => "delivered".to_string(),
            ClientEvent::Rejected { reason, .. } => format!("rejected:{reason}"),
            ClientEvent::Returned { reason, .. } => format!("returned:{reason}"),
            _ => {
                self.other.push(ev);
                return;
            }
        };
        let id = ev.message().map(|m| m.id().to_string()).unwrap_or_default();
        self.outcomes.entry(id).or_default().push(name);
    }

    /// Reads events until `done(self)` or `limit`; true if `done` was reached.
    pub fn collect(
        &mut self,
        events: &mut Events,
        limit: Duration,
        mut done: impl FnMut(&Seen) -> bool,
    ) -> bool {
        let end = Instant::now() + limit;
        while !done(self) {
            let now = Instant::now();
            if now >= end {
                return false;
            }
            match events.recv_timeout((end - now).min(Duration::from_millis(100))) {
                Ok(ev) => self.record(ev),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(_) => return done(self),
            }
        }
        true
    }

    pub fn count_other(&self, pred: impl Fn(&ClientEvent) -> bool) -> usize {
        self.other.iter().filter(|e| pred(e)).count()
    }
}

/// A TCP proxy in front of a server; `freeze()` makes every connection open
/// now go silent in both directions (bytes are held, never forwarded), as a
/// server that hangs would. Connections made later forward normally.
pub struct Proxy {
    pub addr: SocketAddr,
    frozen: Arc<Mutex<Vec<Arc<AtomicBool>>>>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    pub fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let frozen: Arc<Mutex<Vec<Arc<AtomicBool>>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (f, s) = (Arc::clone(&frozen), Arc::clone(&stop));
        thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let Ok(server) = TcpStream::connect(target) else {
                            continue;
                        };
                        let flag = Arc::new(AtomicBool::new(false));
                        f.lock().unwrap().push(Arc::clone(&flag));
                        pipe(
                            client.try_clone().unwrap(),
                            server.try_clone().unwrap(),
                            Arc::clone(&flag),
                            Arc::clone(&s),
                        );
                        pipe(server, client, flag, Arc::clone(&s));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Proxy { addr, frozen, stop }
    }

    pub fn freeze(&self) {
        for f in self.frozen.lock().unwrap().iter() {
            f.store(true, Ordering::Relaxed);
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream, frozen: Arc<AtomicBool>, stop: Arc<AtomicBool>) {
    thread::spawn(move || {
        from.set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let mut buf = [0u8; 16 * 1024];
        loop {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            if frozen.load(Ordering::Relaxed) {
                // Hold the line open, forward nothing, until the other side gives up.
                let mut probe = [0u8; 1];
                if let Ok(0) = to.peek(&mut probe) {
                    break;
                }
                thread::sleep(Duration::from_millis(20));
                continue;
            }
            match from.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if frozen.load(Ordering::Relaxed) {
                        continue;
                    }
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => break,
            }
        }
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
}

/// `text` matches `pattern`, where `…` in the pattern stands for any text.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('…').collect();
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if parts.len() == 1 {
        return text == pattern;
    }
    if !text.starts_with(first) || !text[first.len()..].ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(at) => rest = &rest[at + mid.len()..],
            None => return false,
        }
    }
    true
}

/// `target/<profile>/examples/NAME`, next to this test's `deps` directory.
pub fn example(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the test binary is in target/<profile>/deps");
    let path = dir
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "example program {} not found: build the examples first \
         (`cargo test --all-features` does; `cargo test --test programs` alone does not)",
        path.display()
    );
    // `cargo test --test programs` does not rebuild the examples: say so if they look
    // older than their sources (shown with the output of a failing test).
    let built = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let newest = [root.join("examples"), root.join("src")]
        .iter()
        .filter_map(|d| newest_rs(d))
        .max();
    if let (Some(built), Some(newest)) = (built, newest) {
        if newest > built {
            eprintln!(
                "note: {} is older than the sources; rebuild it with \
                 `cargo build --examples --all-features`",
                path.display()
            );
        }
    }
    path
}

/// The newest modification time of the `.rs` files under `dir`.
fn newest_rs(dir: &std::path::Path) -> Option<std::time::SystemTime> {
    let mut newest = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let t = if path.is_dir() {
            newest_rs(&path)
        } else if path.extension().is_some_and(|e| e == "rs") {
            entry.metadata().and_then(|m| m.modified()).ok()
        } else {
            None
        };
        newest = newest.max(t);
    }
    newest
}
