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
