//! Word-at-a-time byte search (safe SWAR), for the reader's scanner and
//! tree builder and for the escaping writers (XML and JSON).
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
pub(crate) fn find_byte(hay: &[u8], needle: u8) -> Option<usize> {
    find_by(hay, |x| eq_mask(x, needle), |b| b == needle)
}

/// Bytes character data cannot simply be copied past: `&`, `>` (for
/// `]]>`), C0 controls (`\r` needs normalising, tab and LF are fine, the
/// rest are not allowed) and 0xEF (which leads U+FFFE and U+FFFF).
pub(crate) fn find_text_special(hay: &[u8]) -> Option<usize> {
    find_by(
        hay,
        |x| lt_mask(x, 0x20) | eq_mask(x, b'&') | eq_mask(x, b'>') | eq_mask(x, 0xEF),
        |b| b < 0x20 || b == b'&' || b == b'>' || b == 0xEF,
    )
}

/// Bytes XML character data may need escaped: `&`, `<`, `>`, C0 controls
/// (tab and LF need nothing, the caller checks) and 0xEF (which leads U+FFFE
/// and U+FFFF).
pub(crate) fn find_xml_text_special(hay: &[u8]) -> Option<usize> {
    find_by(
        hay,
        |x| {
            lt_mask(x, 0x20)
                | eq_mask(x, b'&')
                | eq_mask(x, b'<')
                | eq_mask(x, b'>')
                | eq_mask(x, 0xEF)
        },
        |b| b < 0x20 || matches!(b, b'&' | b'<' | b'>' | 0xEF),
    )
}

/// As [`find_xml_text_special`], plus the quotes an attribute value escapes.
pub(crate) fn find_xml_attr_special(hay: &[u8]) -> Option<usize> {
    find_by(
        hay,
        |x| {
            lt_mask(x, 0x20)
                | eq_mask(x, b'&')
                | eq_mask(x, b'<')
                | eq_mask(x, b'>')
                | eq_mask(x, b'"')
                | eq_mask(x, b'\'')
                | eq_mask(x, 0xEF)
        },
        |b| b < 0x20 || matches!(b, b'&' | b'<' | b'>' | b'"' | b'\'' | 0xEF),
    )
}

/// Bytes a JSON string literal may need escaped: `"`, `\\`, C0 controls and
/// 0xEF (U+FFFE and U+FFFF travel as escapes).
pub(crate) fn find_json_special(hay: &[u8]) -> Option<usize> {
    find_by(
        hay,
        |x| lt_mask(x, 0x20) | eq_mask(x, b'"') | eq_mask(x, b'\\') | eq_mask(x, 0xEF),
        |b| b < 0x20 || matches!(b, b'"' | b'\\' | 0xEF),
    )
}

/// The first byte that may start a character XML 1.0 forbids: a C0
/// control (tab, LF and CR are allowed, the caller checks) or 0xEF.
pub(crate) fn find_control_or_ef(hay: &[u8]) -> Option<usize> {
    find_by(
        hay,
        |x| lt_mask(x, 0x20) | eq_mask(x, 0xEF),
        |b| b < 0x20 || b == 0xEF,
    )
}

/// The first `&`, `<` or `>`.
pub(crate) fn find_markup(hay: &[u8]) -> Option<usize> {
    find_by(
        hay,
        |x| eq_mask(x, b'&') | eq_mask(x, b'<') | eq_mask(x, b'>'),
        |b| matches!(b, b'&' | b'<' | b'>'),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every search against the byte-at-a-time definition, at every offset
    /// and length (so word and tail positions are both covered).
    #[test]
    fn word_searches_agree_with_bytewise_ones() {
        type Search = fn(&[u8]) -> Option<usize>;
        type Case = (Search, fn(u8) -> bool);
        let cases: [Case; 5] = [
            (find_control_or_ef, |b| b < 0x20 || b == 0xEF),
            (find_xml_text_special, |b| {
                b < 0x20 || matches!(b, b'&' | b'<' | b'>' | 0xEF)
            }),
            (find_xml_attr_special, |b| {
                b < 0x20 || matches!(b, b'&' | b'<' | b'>' | b'"' | b'\'' | 0xEF)
            }),
            (find_json_special, |b| {
                b < 0x20 || matches!(b, b'"' | b'\\' | 0xEF)
            }),
            (find_markup, |b| matches!(b, b'&' | b'<' | b'>')),
        ];
        let alphabet = [
            b'a', b'"', b'\\', b'\'', b'&', b'<', b'>', 0, 0x1f, 0x20, 0x7f, 0x80, 0xEE, 0xEF,
            0xF0, 0xFF,
        ];
        let mut seed = 0x1234_5678_9abc_def1_u64;
        for _ in 0..3_000 {
            let len = (seed % 40) as usize;
            let hay: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    // Mostly plain bytes, so matches land at every position.
                    if seed.is_multiple_of(6) {
                        alphabet[(seed >> 8) as usize % alphabet.len()]
                    } else {
                        b'a' + (seed >> 16) as u8 % 26
                    }
                })
                .collect();
            for (search, test) in cases {
                for from in 0..hay.len() {
                    let want = hay[from..].iter().position(|&b| test(b));
                    assert_eq!(search(&hay[from..]), want, "{:?}", &hay[from..]);
                }
            }
        }
    }
}
