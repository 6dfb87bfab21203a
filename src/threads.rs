//! Thread bookkeeping shared by the worker and the emulator.

use std::thread::JoinHandle;

/// Adds `handle` to `handles` after joining (and dropping) the ones that have
/// finished, so a long-running process holds no dead threads' stacks.
pub(crate) fn push_reaping(handles: &mut Vec<JoinHandle<()>>, handle: JoinHandle<()>) {
    let mut i = 0;
    while i < handles.len() {
        if handles[i].is_finished() {
            let _ = handles.swap_remove(i).join();
        } else {
            i += 1;
        }
    }
    handles.push(handle);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn finished_threads_are_joined() {
        let mut hs = Vec::new();
        for _ in 0..5 {
            push_reaping(&mut hs, std::thread::spawn(|| {}));
        }
        let end = Instant::now() + Duration::from_secs(5);
        while hs.iter().any(|h| !h.is_finished()) && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(5));
        }
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        push_reaping(
            &mut hs,
            std::thread::spawn(move || {
                let _ = rx.recv();
            }),
        );
        assert_eq!(hs.len(), 1, "only the running thread is kept");
        drop(tx);
        for h in hs {
            h.join().unwrap();
        }
    }
}
