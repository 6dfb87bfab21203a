use super::*;

#[test]
fn doubles_and_caps() {
    let b = Backoff::new(Duration::from_secs(1), Duration::from_secs(10));
    assert_eq!(b.nominal(1), Duration::from_secs(1));
    assert_eq!(b.nominal(2), Duration::from_secs(2));
    assert_eq!(b.nominal(4), Duration::from_secs(8));
    assert_eq!(b.nominal(5), Duration::from_secs(10));
    assert_eq!(b.nominal(500), Duration::from_secs(10));
}

#[test]
fn jitter_only_adds() {
    let b = Backoff::default();
    let mut seen_low = false;
    let mut seen_high = false;
    for _ in 0..2000 {
        let d = b.delay(3);
        assert!(
            d >= Duration::from_secs(4) && d <= Duration::from_secs(6),
            "{d:?}"
        );
        seen_low |= d < Duration::from_millis(4500);
        seen_high |= d > Duration::from_millis(5500);
    }
    assert!(seen_low && seen_high, "jitter should spread over the range");
    // The first retry of the default backoff: never before 1 s.
    for r in [0, 1, u64::MAX / 2, u64::MAX] {
        let d = b.delay_with(1, r);
        assert!(
            d >= Duration::from_secs(1) && d <= Duration::from_millis(1500),
            "{d:?}"
        );
    }
}

#[test]
fn extreme_values_saturate() {
    let b = Backoff::new(Duration::MAX, Duration::MAX);
    assert_eq!(b.delay_with(u32::MAX, u64::MAX), Duration::MAX);
    let z = Backoff::new(Duration::ZERO, Duration::ZERO);
    assert_eq!(z.delay_with(7, 12345), Duration::ZERO);
}
