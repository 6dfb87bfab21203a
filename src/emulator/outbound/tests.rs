use super::*;

#[test]
fn lifecycle() {
    let mut o = Outbound::default();
    let json: Arc<str> = Arc::from("{}");
    o.add(
        "u1".into(),
        OutKind::Upstream,
        json.clone(),
        Some(ConnId(1)),
    );
    o.add("u2".into(), OutKind::Upstream, json.clone(), None);
    o.add(
        "dr2:m".into(),
        OutKind::Receipt,
        json.clone(),
        Some(ConnId(1)),
    );
    assert_eq!(o.len(), 3);
    assert!(
        !o.acked("u1", ConnId(2)),
        "only on the connection it went to"
    );
    assert!(o.acked("u1", ConnId(1)));
    assert!(!o.acked("u1", ConnId(1)), "only once");
    assert_eq!(o.release(ConnId(1)), 1);
    assert!(o.has_waiting());
    assert_eq!(o.take_first_waiting(ConnId(3)).unwrap().id, "u2");
    assert_eq!(o.take_first_waiting(ConnId(3)).unwrap().id, "dr2:m");
    assert!(o.take_first_waiting(ConnId(4)).is_none());
    assert!(!o.has_waiting());
    assert_eq!(o.unacked_ids(), ["u2", "dr2:m"]);
    assert!(o.acked("dr2:m", ConnId(3)));
    assert!(o.acked("u2", ConnId(3)));
    assert_eq!(o.len(), 0);
}

#[test]
fn duplicate_ids_tracked_separately() {
    let mut o = Outbound::default();
    let json: Arc<str> = Arc::from("{}");
    o.add(
        "dr2:m".into(),
        OutKind::Receipt,
        json.clone(),
        Some(ConnId(1)),
    );
    o.add("dr2:m".into(), OutKind::Receipt, json, Some(ConnId(2)));
    assert!(o.acked("dr2:m", ConnId(2)));
    assert_eq!(o.unacked_ids(), ["dr2:m"]);
    assert!(o.acked("dr2:m", ConnId(1)));
    assert_eq!(o.len(), 0);
}
