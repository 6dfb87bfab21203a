//! [`CutOff`]: the shutdown deadline as a connection attempt in progress sees it.

use std::fmt;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

use super::link::Waker;

/// The moment a connection attempt must give up, which may be set while
/// the attempt runs: unset until [`Client::shutdown`](super::Client::shutdown)
/// (or the drop of the last handle) begins, then its deadline (an earlier
/// one wins, it never moves later).
///
/// [`Connector::connect_until`](super::Connector::connect_until) is given
/// one. A connector bounds its waits by [`at`](Self::at), looks at
/// [`is_past`](Self::is_past) between its steps, or sleeps with
/// [`sleep_until`](Self::sleep_until), which the cut-off ends early; past
/// the cut-off it writes nothing more and fails the attempt. Cheap to clone:
/// clones share the one deadline.
#[derive(Clone, Default)]
pub struct CutOff(Arc<Inner>);

#[derive(Default)]
struct Inner {
    state: Mutex<State>,
    set: Condvar,
}

#[derive(Default)]
struct State {
    at: Option<Instant>,
    /// Called once when the deadline is set (or moves earlier).
    wakers: Vec<(u64, Waker)>,
    next_id: u64,
}

impl CutOff {
    /// A cut-off not set yet.
    pub fn new() -> CutOff {
        CutOff::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.0.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The deadline, once set.
    pub fn at(&self) -> Option<Instant> {
        self.lock().at
    }

    /// True once the deadline is set and `now` has reached it.
    pub fn is_past(&self, now: Instant) -> bool {
        self.at().is_some_and(|at| now >= at)
    }

    /// Sets the deadline to `at`, or keeps the one set if it is earlier, and
    /// wakes everyone waiting on this cut-off so they bound their waits by it.
    pub fn set(&self, at: Instant) {
        let wakers: Vec<Waker> = {
            let mut st = self.lock();
            if st.at.is_some_and(|old| old <= at) {
                return;
            }
            st.at = Some(at);
            st.wakers.iter().map(|(_, w)| w.clone()).collect()
        };
        self.0.set.notify_all();
        for w in wakers {
            w.wake();
        }
    }

    /// Sleeps until `until` or the deadline, whichever comes first; true if
    /// `until` came first (the attempt may go on), false once cut off.
    pub fn sleep_until(&self, until: Instant) -> bool {
        let mut st = self.lock();
        loop {
            let now = Instant::now();
            if st.at.is_some_and(|at| now >= at) {
                return false;
            }
            if now >= until {
                return true;
            }
            let end = st.at.map_or(until, |at| at.min(until));
            st = match self.0.set.wait_timeout(st, end - now) {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            };
        }
    }

    /// Calls `waker` whenever the deadline is set or moves earlier, until
    /// the returned guard is dropped.
    pub(crate) fn on_set(&self, waker: Waker) -> OnSet {
        let mut st = self.lock();
        let id = st.next_id;
        st.next_id += 1;
        st.wakers.push((id, waker));
        OnSet {
            cut: self.clone(),
            id,
        }
    }
}

impl fmt::Debug for CutOff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CutOff").field("at", &self.at()).finish()
    }
}

/// A waker registered with [`CutOff::on_set`]; dropping it forgets the waker.
pub(crate) struct OnSet {
    cut: CutOff,
    id: u64,
}

impl OnSet {
    /// The cut-off this watches.
    pub(crate) fn cut_off(&self) -> &CutOff {
        &self.cut
    }
}

impl Drop for OnSet {
    fn drop(&mut self) {
        let id = self.id;
        self.cut.lock().wakers.retain(|(i, _)| *i != id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[test]
    fn earlier_wins_and_wakes_the_registered() {
        let cut = CutOff::new();
        let woken = Arc::new(AtomicUsize::new(0));
        let w = Arc::clone(&woken);
        let guard = cut.on_set(Waker::new(move || {
            w.fetch_add(1, Ordering::SeqCst);
        }));
        let t0 = Instant::now();
        assert!(!cut.is_past(t0));
        cut.set(t0 + Duration::from_secs(10));
        cut.set(t0 + Duration::from_secs(20));
        assert_eq!(cut.at(), Some(t0 + Duration::from_secs(10)));
        cut.set(t0);
        assert_eq!(woken.load(Ordering::SeqCst), 2, "set, then moved earlier");
        assert!(cut.clone().is_past(t0));
        drop(guard);
        cut.set(t0 - Duration::from_millis(1));
        assert_eq!(woken.load(Ordering::SeqCst), 2, "forgotten");
    }

    #[test]
    fn a_sleep_ends_at_the_cut_off() {
        let cut = CutOff::new();
        assert!(cut.sleep_until(Instant::now() + Duration::from_millis(5)));
        let c = cut.clone();
        let setter = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            c.set(Instant::now() + Duration::from_millis(20));
        });
        let t = Instant::now();
        assert!(!cut.sleep_until(t + Duration::from_secs(30)));
        let took = t.elapsed();
        assert!(took >= Duration::from_millis(50), "{took:?}");
        assert!(took < Duration::from_secs(10), "{took:?}");
        setter.join().unwrap();
    }
}
