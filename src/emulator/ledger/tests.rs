use super::*;

fn conn(id: u64, ops: Vec<LedgerOp>) -> ConnLedger {
    let mut l = LiveLedger::new(ConnId(id), format!("1@gcm.googleapis.com/r{id}"), true);
    for op in ops {
        l.apply(op);
    }
    l.snapshot()
}

#[test]
fn indexes_resolve_to_ids() {
    let c = conn(
        1,
        vec![
            LedgerOp::Received("a".into()),
            LedgerOp::Received("b".into()),
            LedgerOp::Nacked(1, NackCode::BadRegistration),
            LedgerOp::Acked(0),
            LedgerOp::StanzaError,
        ],
    );
    assert_eq!(c.received, ["a", "b"]);
    assert_eq!(c.acked, ["a"]);
    assert_eq!(c.nacked, [("b".to_string(), NackCode::BadRegistration)]);
    assert_eq!((c.received_count, c.acked_count, c.nacked_count), (2, 1, 1));
    assert_eq!(c.stanza_errors, 1);
}

#[test]
fn aggregates() {
    let ledger = Ledger {
        connections: vec![
            conn(
                1,
                vec![
                    LedgerOp::Received("a".into()),
                    LedgerOp::Received("b".into()),
                    LedgerOp::Received("c".into()),
                    LedgerOp::Acked(0),
                ],
            ),
            conn(
                2,
                vec![
                    LedgerOp::Received("c".into()),
                    LedgerOp::Received("b".into()),
                    LedgerOp::Received("d".into()),
                    LedgerOp::Received("b".into()),
                    LedgerOp::Acked(0),
                    LedgerOp::Acked(1),
                    LedgerOp::Acked(2),
                ],
            ),
        ],
        upstream_unacked: vec!["up-1".into()],
        connections_accepted: 3,
        auth_failures: 1,
    };
    assert_eq!(ledger.total_received(), 7);
    assert_eq!(ledger.distinct_received(), 4);
    assert_eq!(ledger.duplicates(), ["b", "c"]);
    assert_eq!(ledger.total_acked(), 4);
    assert_eq!(ledger.acked_ids().len(), 4);
    assert_eq!(ledger.unacked_upstream(), ["up-1"]);
    assert_eq!(ledger.conn(ConnId(2)).unwrap().received.len(), 4);
    assert!(ledger.conn(ConnId(9)).is_none());
}

#[test]
fn counts_without_ids() {
    let mut l = LiveLedger::new(ConnId(1), "j".into(), false);
    l.apply(LedgerOp::Received("a".into()));
    l.apply(LedgerOp::Acked(0));
    let c = l.snapshot();
    assert!(c.received.is_empty() && c.acked.is_empty());
    assert_eq!((c.received_count, c.acked_count), (1, 1));
}

#[test]
fn write_dependent_ops() {
    assert!(!LedgerOp::Received("a".into()).needs_write());
    assert!(!LedgerOp::UpstreamAcked("a".into()).needs_write());
    assert!(LedgerOp::Acked(0).needs_write());
    assert!(LedgerOp::ReceiptSent("dr2:a".into()).needs_write());
}
