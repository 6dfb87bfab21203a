//! A tiny seeded generator (xorshift64) for the tests that compare a fast
//! path against its general path on many inputs: deterministic, so every
//! failure reproduces.

pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number in `0..n` (`n` > 0).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// One of `xs`.
    pub(crate) fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len())]
    }

    /// Nine times in ten one of the first `good` of `xs`, else any of them.
    pub(crate) fn mostly<'a>(&mut self, good: usize, xs: &[&'a str]) -> &'a str {
        if self.below(10) == 0 {
            self.pick(xs)
        } else {
            xs[self.below(good)]
        }
    }

    /// Up to `max` characters, mostly plain letters, with everything the
    /// escaping writers treat specially mixed in: quotes, backslash, markup,
    /// controls, CR/LF/tab, non-ASCII, U+FFFE/U+FFFF and U+FFFD (0xEF leads).
    pub(crate) fn text(&mut self, max: usize) -> String {
        const ODD: &[&str] = &[
            "\"",
            "'",
            "\\",
            "&",
            "<",
            ">",
            "]]>",
            "\u{0}",
            "\u{1}",
            "\u{1f}",
            "\r",
            "\n",
            "\t",
            "\r\n",
            "\u{7f}",
            "\u{e9}",
            "\u{2028}",
            "\u{FEFF}",
            "\u{FFFD}",
            "\u{FFFE}",
            "\u{FFFF}",
            "\u{1F600}",
            "&amp;",
            " ",
        ];
        let len = self.below(max + 1);
        let mut s = String::with_capacity(len);
        for _ in 0..len {
            if self.below(5) == 0 {
                s.push_str(self.pick(ODD));
            } else {
                s.push(char::from(b'a' + self.below(26) as u8));
            }
        }
        s
    }
}
