use super::*;

fn entry(id: &str, seq: u64) -> Entry {
    Entry::new(Message::to("device").message_id(id), seq)
}

fn ids(w: &Window) -> Vec<String> {
    w.iter().map(|e| e.message.id().to_string()).collect()
}

#[test]
fn kept_in_acceptance_order_whatever_the_insert_order() {
    let mut w = Window::default();
    for (id, seq) in [("c", 7), ("a", 2), ("d", 9), ("b", 5)] {
        w.insert(entry(id, seq));
    }
    assert_eq!(ids(&w), ["a", "b", "c", "d"]);
    // Handed out in the order added (the order they were written).
    let out: Vec<&str> = w.hand_out().map(Message::id).collect();
    assert_eq!(out, ["c", "a", "d", "b"]);
    assert_eq!(w.fresh(), 0);
    assert_eq!(w.hand_out().count(), 0, "handed out once");
}

#[test]
fn answers_find_their_entry_in_any_order() {
    let mut w = Window::default();
    for i in 0..100 {
        w.insert(entry(&format!("m-{i}"), i));
    }
    let _ = w.hand_out().count();
    for i in (0..100).rev().step_by(2) {
        let e = w.remove(&format!("m-{i}")).expect("in flight");
        assert_eq!(e.seq, i);
        assert!(!w.contains(&format!("m-{i}")));
    }
    assert_eq!(w.len(), 50);
    assert!(w.remove("m-99").is_none(), "removed already");
    assert!(w.remove("unknown").is_none());
    assert_eq!(
        ids(&w),
        (0..100)
            .step_by(2)
            .map(|i| format!("m-{i}"))
            .collect::<Vec<_>>()
    );
}

/// Two ids with the same hash (found by solving the hasher's two rounds
/// for a second 16-byte id).
const A: &str = "msg-aaaa01000004";
const B: &str = "E0nCYwtZ5ztGZxHx";

#[test]
fn ids_with_the_same_hash_are_still_told_apart() {
    assert_eq!(key_of(A), key_of(B), "the hasher changed: find a new pair");
    for first in [A, B] {
        let second = if first == A { B } else { A };
        let mut w = Window::default();
        w.insert(entry(first, 1));
        w.insert(entry("other", 2));
        w.insert(entry(second, 3));
        assert!(w.contains(A) && w.contains(B) && w.contains("other"));
        assert!(!w.contains("four"));
        assert_eq!(w.collisions, 1);
        // Removing the indexed one hands the index to the other.
        assert_eq!(w.remove(first).map(|e| e.seq), Some(1));
        assert!(w.contains(second) && !w.contains(first));
        assert_eq!(w.collisions, 0);
        assert_eq!(w.remove(second).map(|e| e.seq), Some(3));
        assert!(w.remove(second).is_none());
        assert_eq!(w.remove("other").map(|e| e.seq), Some(2));
        assert!(w.is_empty());
        assert_eq!((w.collisions, w.index.len()), (0, 0));
    }
    // The one not in the index leaves first: the index stays as it is.
    let mut w = Window::default();
    w.insert(entry(A, 1));
    w.insert(entry(B, 2));
    assert_eq!(w.remove(B).map(|e| e.seq), Some(2));
    assert_eq!(w.collisions, 0);
    assert!(w.contains(A));
    assert_eq!(w.remove(A).map(|e| e.seq), Some(1));
    assert_eq!((w.collisions, w.index.len()), (0, 0));
}

#[test]
fn a_removed_fresh_entry_is_not_handed_out_and_suspects_are_counted() {
    let mut w = Window::default();
    let mut s = entry("suspect", 1);
    s.attempts.losses = crate::client::policy::SUSPECT_AFTER_LOSSES;
    w.insert(s);
    w.insert(entry("m", 2));
    assert!(w.has_suspect());
    assert_eq!(w.fresh(), 2);
    assert!(w.remove("suspect").is_some());
    assert!(!w.has_suspect());
    let out: Vec<&str> = w.hand_out().map(Message::id).collect();
    assert_eq!(out, ["m"]);
}
