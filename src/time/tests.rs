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

#[test]
fn earlier_of_two_optional_deadlines() {
    let a = Instant::now();
    let b = a + Duration::from_secs(1);
    assert_eq!(earlier(Some(a), Some(b)), Some(a));
    assert_eq!(earlier(Some(b), Some(a)), Some(a));
    assert_eq!(earlier(None, Some(b)), Some(b));
    assert_eq!(earlier(Some(a), None), Some(a));
    assert_eq!(earlier(None, None), None);
}
