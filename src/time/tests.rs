use super::*;

#[test]
fn saturates() {
    let now = Instant::now();
    assert_eq!(
        later(now, Duration::from_secs(1)),
        now + Duration::from_secs(1)
    );
    assert!(later(now, Duration::MAX) > now + Duration::from_secs(86_400 * 365));
}
