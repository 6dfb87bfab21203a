use super::*;

#[test]
fn transient_counts_per_id_then_lets_through() {
    let cell = ScriptCell::default();
    cell.update(|s| {
        s.transient.push(Arc::new(TransientRule::new(
            Box::new(|id: &str| id.starts_with("t-")),
            2,
            NackCode::ServiceUnavailable,
        )))
    });
    let (script, v) = cell.snapshot();
    assert_eq!(v, 1);
    assert_eq!(
        script.nack_for("t-1", "tok"),
        Some(NackCode::ServiceUnavailable)
    );
    assert_eq!(
        script.nack_for("t-2", "tok"),
        Some(NackCode::ServiceUnavailable)
    );
    assert_eq!(
        script.nack_for("t-1", "tok"),
        Some(NackCode::ServiceUnavailable)
    );
    assert_eq!(script.nack_for("t-1", "tok"), None);
    assert_eq!(script.nack_for("x-1", "tok"), None);
    // A later snapshot shares the counters.
    cell.update(|s| s.ack_delay = Duration::from_millis(1));
    let (script2, v2) = cell.snapshot();
    assert_eq!(v2, 2);
    assert_eq!(
        script2.nack_for("t-2", "tok"),
        Some(NackCode::ServiceUnavailable)
    );
    assert_eq!(script2.nack_for("t-2", "tok"), None);
}

#[test]
fn token_rules_after_transient() {
    let cell = ScriptCell::default();
    cell.update(|s| {
        s.reject.insert("dead".into(), NackCode::DeviceUnregistered);
        s.transient.push(Arc::new(TransientRule::new(
            Box::new(|_: &str| true),
            1,
            NackCode::InternalServerError,
        )));
    });
    let (script, _) = cell.snapshot();
    assert_eq!(
        script.nack_for("m", "dead"),
        Some(NackCode::InternalServerError)
    );
    assert_eq!(
        script.nack_for("m", "dead"),
        Some(NackCode::DeviceUnregistered)
    );
    assert_eq!(
        script.nack_for("n", "live"),
        Some(NackCode::InternalServerError)
    );
    assert_eq!(script.nack_for("n", "live"), None);
}
