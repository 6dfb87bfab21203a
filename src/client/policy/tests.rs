use super::*;
use crate::config::Config;
use crate::error::{Phase, TlsError, TlsErrorKind};

fn policy() -> Policy {
    Policy::new(&ClientConfig::new(Config::new("1", "k")))
}

#[test]
fn nack_classes() {
    let p = policy();
    assert_eq!(
        on_nack(&p, &NackCode::DeviceUnregistered, 0, 0),
        NackDecision::Reject
    );
    assert_eq!(
        on_nack(&p, &NackCode::DeviceMessageRateExceeded, 0, 0),
        NackDecision::Reject
    );
    assert_eq!(
        on_nack(&p, &NackCode::ConnectionDraining, 0, 0),
        NackDecision::Resend
    );
    match on_nack(&p, &NackCode::ServiceUnavailable, 0, u64::MAX) {
        NackDecision::RetryAfter(d) => assert!(d >= Duration::from_secs(1), "{d:?}"),
        other => panic!("{other:?}"),
    }
    match on_nack(&p, &NackCode::Other("NEW_CODE".into()), 2, 0) {
        NackDecision::RetryAfter(d) => assert_eq!(d, Duration::from_secs(4)),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        on_nack(&p, &NackCode::InternalServerError, p.max_retries, 0),
        NackDecision::GiveUp
    );
    let mut p2 = p.clone();
    p2.rate_limited_retry = Some(Duration::from_secs(7));
    assert_eq!(
        on_nack(&p2, &NackCode::QuotaExceeded, 0, 0),
        NackDecision::RetryAfter(Duration::from_secs(7))
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
    assert_eq!(on_loss(&p, p.max_losses - 1), LossDecision::Resend);
    assert_eq!(on_loss(&p, p.max_losses), LossDecision::GiveUp);
}
