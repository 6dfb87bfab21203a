use super::*;
use crate::config::Config;
use crate::error::{Phase, TlsError, TlsErrorKind};
use crate::event::NackCode;

fn policy() -> Policy {
    Policy::new(&ClientConfig::new(Config::new("1", "k")))
}

fn nack(code: NackCode) -> Nack {
    Nack {
        message_id: "m-1".into(),
        from: None,
        code,
        description: None,
    }
}

fn counts(retries: u32, losses: u32, drains: u32) -> Attempts {
    Attempts {
        retries,
        losses,
        drains,
    }
}

fn stopped() -> Arc<Error> {
    Arc::new(Error::AuthFailed {
        condition: "not-authorized".into(),
    })
}

#[test]
fn nack_classes() {
    let p = policy();
    let none = Attempts::default();
    for code in [
        NackCode::DeviceUnregistered,
        NackCode::DeviceMessageRateExceeded,
    ] {
        let n = nack(code);
        assert_eq!(
            on_nack(&p, n.clone(), none, None, 0),
            (Fate::Reject(Rejection::Nack(n)), none)
        );
    }
    assert_eq!(
        on_nack(&p, nack(NackCode::ConnectionDraining), none, None, 0),
        (Fate::Resend, counts(0, 0, 1))
    );
    match on_nack(&p, nack(NackCode::ServiceUnavailable), none, None, u64::MAX) {
        (Fate::RetryAfter(d), a) => {
            assert!(d >= Duration::from_secs(1), "{d:?}");
            assert_eq!(a, counts(1, 0, 0));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        on_nack(
            &p,
            nack(NackCode::Other("NEW_CODE".into())),
            counts(2, 1, 0),
            None,
            0
        ),
        (Fate::RetryAfter(Duration::from_secs(4)), counts(3, 1, 0))
    );
    let last = counts(p.max_retries, 0, 0);
    assert_eq!(
        on_nack(&p, nack(NackCode::InternalServerError), last, None, 0),
        (
            Fate::Return(ReturnReason::RetriesExhausted(
                NackCode::InternalServerError
            )),
            last
        )
    );
    let mut p2 = p.clone();
    p2.rate_limited_retry = Some(Duration::from_secs(7));
    assert_eq!(
        on_nack(&p2, nack(NackCode::QuotaExceeded), none, None, 0),
        (Fate::RetryAfter(Duration::from_secs(7)), counts(1, 0, 0))
    );
    p2.max_retries = 0;
    assert_eq!(
        on_nack(&p2, nack(NackCode::QuotaExceeded), none, None, 0).0,
        Fate::Return(ReturnReason::RetriesExhausted(NackCode::QuotaExceeded))
    );
}

#[test]
fn a_drain_nack_is_no_retry_and_is_bounded_on_its_own() {
    let mut p = policy();
    p.max_retries = 0;
    // No retry left, and still resent: a drain is no failure of the message.
    let spent = counts(0, 0, 0);
    assert_eq!(
        on_nack(&p, nack(NackCode::ConnectionDraining), spent, None, 0),
        (Fate::Resend, counts(0, 0, 1))
    );
    // Retries used up by other NACKs do not stop it either, nor do losses.
    p.max_retries = 3;
    assert_eq!(
        on_nack(
            &p,
            nack(NackCode::ConnectionDraining),
            counts(3, 2, 5),
            None,
            0
        ),
        (Fate::Resend, counts(3, 2, 6))
    );
    // It never loops forever: after MAX_DRAIN_RESENDS drains it is returned.
    let mut a = Attempts::default();
    let mut resends = 0;
    loop {
        let (fate, next) = on_nack(&p, nack(NackCode::ConnectionDraining), a, None, 0);
        a = next;
        match fate {
            Fate::Resend => resends += 1,
            Fate::Return(r) => {
                assert_eq!(
                    r,
                    ReturnReason::RetriesExhausted(NackCode::ConnectionDraining)
                );
                break;
            }
            other => panic!("{other:?}"),
        }
        assert!(resends <= MAX_DRAIN_RESENDS, "drain resends unbounded");
    }
    assert_eq!(resends, MAX_DRAIN_RESENDS);
    assert_eq!(a.retries, 0);
}

#[test]
fn a_stopped_client_returns_what_would_go_out_again() {
    let p = policy();
    let err = stopped();
    let fatal = Fate::Return(ReturnReason::Fatal(Arc::clone(&err)));
    let none = Attempts::default();
    assert_eq!(requeue(Some(&err)), fatal);
    assert_eq!(requeue(None), Fate::Resend);
    assert_eq!(on_fatal(&err), ReturnReason::Fatal(Arc::clone(&err)));
    for code in [NackCode::ServiceUnavailable, NackCode::ConnectionDraining] {
        let (fate, a) = on_nack(&p, nack(code), none, Some(&err), 0);
        assert_eq!(fate, fatal);
        assert_ne!(a, none, "the attempt is still counted");
    }
    // Final decisions stay what they are.
    let n = nack(NackCode::BadRegistration);
    assert_eq!(
        on_nack(&p, n.clone(), none, Some(&err), 0).0,
        Fate::Reject(Rejection::Nack(n))
    );
    assert_eq!(on_loss(&p, none, Some(&err)), (fatal, counts(0, 1, 0)));
    let last = counts(0, p.max_losses - 1, 0);
    assert_eq!(
        on_loss(&p, last, Some(&err)).0,
        Fate::Return(ReturnReason::ConnectionsLost(p.max_losses))
    );
}

#[test]
fn stanza_errors_and_unsendable_messages_are_rejected() {
    let err = StanzaError {
        id: Some("m-1".into()),
        message_id: None,
        code: Some(400),
        error_type: Some("modify".into()),
        condition: "bad-request".into(),
        text: None,
    };
    assert_eq!(
        on_stanza_error(err.clone()),
        Fate::Reject(Rejection::StanzaError(err))
    );
    let bad = InvalidMessage::new("to", "empty");
    assert_eq!(on_unsendable(bad.clone()), Rejection::Invalid(bad));
}

#[test]
fn losses_resend_until_max_losses_and_mark_suspects() {
    let p = policy();
    let mut a = Attempts::default();
    for n in 1..p.max_losses {
        let (fate, next) = on_loss(&p, a, None);
        assert_eq!(fate, Fate::Resend, "loss {n}");
        assert_eq!(next.losses, n);
        assert_eq!(next.is_suspect(), n >= SUSPECT_AFTER_LOSSES);
        a = next;
    }
    assert_eq!(
        on_loss(&p, a, None).0,
        Fate::Return(ReturnReason::ConnectionsLost(p.max_losses))
    );
}

#[test]
fn connect_failures_follow_is_retryable() {
    let p = policy();
    let cases = [
        (Error::Timeout(Phase::Connect), false),
        (
            Error::AuthFailed {
                condition: "not-authorized".into(),
            },
            true,
        ),
        (
            Error::Tls(TlsError::new(TlsErrorKind::NotTls, "plain")),
            true,
        ),
        (
            Error::Tls(TlsError::new(TlsErrorKind::Certificate, "name")),
            true,
        ),
        (Error::Tls(TlsError::new(TlsErrorKind::Other, "x")), false),
    ];
    for (e, fatal) in cases {
        assert_eq!(!e.is_retryable(), fatal, "{e}");
        let d = on_connect_failure(&p, &e, 2, 0);
        assert_eq!(d == SlotDecision::Fatal, fatal, "{e}: {d:?}");
        if let SlotDecision::Reconnect { delay, failures } = d {
            assert_eq!(failures, 3);
            assert_eq!(delay, Duration::from_secs(4));
        }
    }
}

#[test]
fn short_lived_connections_count_as_failures() {
    let p = policy();
    assert_eq!(
        on_connection_end(&p, p.stable_after, 5, 0),
        SlotDecision::Reconnect {
            delay: Duration::ZERO,
            failures: 0
        }
    );
    assert_eq!(
        on_connection_end(&p, Duration::from_millis(10), 0, 0),
        SlotDecision::Reconnect {
            delay: Duration::ZERO,
            failures: 1
        }
    );
    assert_eq!(
        on_connection_end(&p, Duration::from_millis(10), 1, 0),
        SlotDecision::Reconnect {
            delay: Duration::from_secs(1),
            failures: 2
        }
    );
}
