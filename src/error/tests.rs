use super::*;

#[test]
fn error_stays_small() {
    assert!(
        std::mem::size_of::<Error>() <= 56,
        "{}",
        std::mem::size_of::<Error>()
    );
}

#[test]
fn predicates() {
    assert!(Error::Timeout(Phase::Read).is_timeout());
    assert!(Error::Closed.is_closed());
    assert!(!Error::AuthFailed {
        condition: "not-authorized".into()
    }
    .is_retryable());
    assert!(Error::Closed.is_retryable());
    let e = Error::Io(io::Error::from(io::ErrorKind::ConnectionReset));
    assert!(e.is_closed());
    // A draining connection is still open; the message can go elsewhere.
    assert!(!Error::Draining.is_closed());
    assert!(Error::Draining.is_retryable());
    assert_eq!(
        Error::Draining.to_string(),
        "connection draining: send new messages on a new connection"
    );
}

#[test]
fn display_is_lowercase_and_actionable() {
    let e = Error::AuthFailed {
        condition: "not-authorized".into(),
    };
    assert_eq!(
        e.to_string(),
        "authentication refused (not-authorized): check the sender id and server key"
    );
}
