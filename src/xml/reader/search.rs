//! Word-at-a-time byte search (safe SWAR), for the scanner and the tree
//! builder.
//!
//! Each mask below has the high bit set in the bytes of `x` that match; a
//! false positive can only appear in a byte above (more significant than) a
//! true match, so with little-endian loads the lowest flagged byte is always
//! the first real match.

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

fn word(chunk: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(chunk);
    u64::from_le_bytes(w)
}

/// Bytes of `x` equal to `b`.
fn eq_mask(x: u64, b: u8) -> u64 {
    let y = x ^ (LO * u64::from(b));
    y.wrapping_sub(LO) & !y & HI
}

/// Bytes of `x` below `n` (`n` <= 0x80).
fn lt_mask(x: u64, n: u8) -> u64 {
    x.wrapping_sub(LO * u64::from(n)) & !x & HI
}

/// The first index in `hay` where `mask` flags a byte (or, for the tail
/// shorter than a word, where `test` holds).
fn find_by(hay: &[u8], mask: impl Fn(u64) -> u64, test: impl Fn(u8) -> bool) -> Option<usize> {
    let mut words = hay.chunks_exact(8);
    let mut base = 0;
    for chunk in &mut words {
        let m = mask(word(chunk));
        if m != 0 {
            return Some(base + (m.trailing_zeros() / 8) as usize);
        }
        base += 8;
    }
    words
        .remainder()
        .iter()
        .position(|&b| test(b))
        .map(|n| base + n)
}

/// The first index of `needle` in `hay`.
pub(super) fn find_byte(hay: &[u8], needle: u8) -> Option<usize> {
    find_by(hay, |x| eq_mask(x, needle), |b| b == needle)
}

/// Bytes character data cannot simply be copied past: `&`, `>` (for
/// `]]>`), C0 controls (`\r` needs normalising, tab and LF are fine, the
/// rest are not allowed) and 0xEF (which leads U+FFFE and U+FFFF).
pub(super) fn find_text_special(hay: &[u8]) -> Option<usize> {
    find_by(
        hay,
        |x| lt_mask(x, 0x20) | eq_mask(x, b'&') | eq_mask(x, b'>') | eq_mask(x, 0xEF),
        |b| b < 0x20 || b == b'&' || b == b'>' || b == 0xEF,
    )
}
