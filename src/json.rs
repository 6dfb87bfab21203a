//! Small JSON helpers shared by the CCS model: an escaping string writer, an
//! integer writer, a panic-free parse entry point and typed field readers for
//! `miniserde::json::Object`.
//!
//! Parsing goes through `miniserde::json::from_str::<Value>`, which is
//! iterative (no recursion on nesting depth, non-recursive drop), refuses
//! numbers that overflow `f64` (`1e999999`, a 10,000-digit integer) instead of
//! producing infinity, and refuses lone or reversed UTF-16 surrogate escapes.
//! Our tests below pin that behaviour. Do not `Clone` or `Debug`-format a
//! parsed `Value`: those impls are recursive and a hostile depth would overflow
//! the stack. `miniserde::json::to_string` is iterative and safe.

use std::fmt;

use miniserde::json::{Number, Object, Value};

use crate::xml::search::find_json_special;

/// Appends `s` as a JSON string literal (with quotes) to `out`.
///
/// Escapes `"` and `\` and every control character (U+0000..U+001F): the
/// short forms `\b \f \n \r \t`, the rest as `\u00XX`; and U+FFFE and U+FFFF, which
/// XML 1.0 forbids in the `<gcm>` text the JSON travels in, as `\ufffe` and `\uffff`.
/// Everything else, non-ASCII included, is copied through as UTF-8. Unescaped runs are found a
/// machine word at a time and copied with a single `push_str`.
pub(crate) fn write_str(s: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.reserve(s.len() + 2);
    out.push('"');
    let bytes = s.as_bytes();
    let mut start = 0;
    let mut from = 0;
    while let Some(n) = find_json_special(&bytes[from..]) {
        let i = from + n;
        let b = bytes[i];
        let (short, len) = match b {
            b'"' => ("\\\"", 1),
            b'\\' => ("\\\\", 1),
            b'\n' => ("\\n", 1),
            b'\r' => ("\\r", 1),
            b'\t' => ("\\t", 1),
            0x08 => ("\\b", 1),
            0x0c => ("\\f", 1),
            0x00..=0x1f => ("", 1),
            // U+FFFE and U+FFFF (EF BF BE / EF BF BF): legal JSON, but XML 1.0 forbids
            // them, so they travel as JSON escapes and the XML text stays legal.
            0xEF if bytes.get(i + 1) == Some(&0xBF) && bytes.get(i + 2) == Some(&0xBE) => {
                ("\\ufffe", 3)
            }
            0xEF if bytes.get(i + 1) == Some(&0xBF) && bytes.get(i + 2) == Some(&0xBF) => {
                ("\\uffff", 3)
            }
            // Another character led by 0xEF: copied through.
            _ => {
                from = i + 1;
                continue;
            }
        };
        // `i` is at an ASCII byte or a lead byte, hence on a char boundary.
        out.push_str(&s[start..i]);
        if short.is_empty() {
            out.push_str("\\u00");
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        } else {
            out.push_str(short);
        }
        start = i + len;
        from = start;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// Appends the decimal digits of `n` to `out` (no allocation beyond `out`).
pub(crate) fn write_u64(mut n: u64, out: &mut String) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        // `n % 10` is below 10, so the cast cannot truncate.
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &d in &buf[i..] {
        out.push(char::from(d));
    }
}

/// Appends `"key":` (escaped key, then a colon), preceded by a comma unless
/// `*first`; clears `*first`.
pub(crate) fn write_key(key: &str, first: &mut bool, out: &mut String) {
    if !*first {
        out.push(',');
    }
    *first = false;
    write_str(key, out);
    out.push(':');
}

/// Most fields [`scan_flat`] reads; objects with more take the general path.
const MAX_FLAT: usize = 8;

/// A JSON object whose values are all strings without escapes, borrowed
/// from its text: the shape of every ack and nack CCS sends.
#[derive(Debug)]
pub(crate) struct Flat<'a> {
    fields: [(&'a str, &'a str); MAX_FLAT],
    len: usize,
}

impl<'a> Flat<'a> {
    /// The value of `key`, if present.
    pub(crate) fn get(&self, key: &str) -> Option<&'a str> {
        self.fields[..self.len]
            .iter()
            .find(|(k, _)| *k == key)
            .map(|&(_, v)| v)
    }
}

/// Reads `text` as a flat object of plain strings without building a value
/// tree: `{"k":"v",...}` with JSON white space, at most 8 fields, distinct
/// keys, and no backslash or control character in any key or value. `None`
/// for anything else, valid JSON or not: the caller then parses it with
/// [`parse_object`], which accepts everything this accepts, with the same
/// keys and values.
pub(crate) fn scan_flat(text: &str) -> Option<Flat<'_>> {
    let mut flat = Flat {
        fields: [("", ""); MAX_FLAT],
        len: 0,
    };
    let mut lx = Lexer::new(text);
    lx.object(|lx, key| {
        let value = lx.string()?;
        if flat.len == MAX_FLAT || flat.get(key).is_some() {
            return None;
        }
        flat.fields[flat.len] = (key, value);
        flat.len += 1;
        Some(())
    })?;
    lx.end()?;
    Some(flat)
}

/// The keys of one object a fast path has read, at most `N`: the fast paths
/// take only objects with distinct keys (duplicates go the general way).
pub(crate) struct SeenKeys<'a, const N: usize> {
    keys: [&'a str; N],
    len: usize,
}

impl<'a, const N: usize> SeenKeys<'a, N> {
    pub(crate) fn new() -> Self {
        SeenKeys {
            keys: [""; N],
            len: 0,
        }
    }

    /// Notes `key`; `None` if it came before or `N` keys did (so that a
    /// lexer callback can end with `?`).
    pub(crate) fn first(&mut self, key: &'a str) -> Option<()> {
        if self.len == N || self.keys[..self.len].contains(&key) {
            return None;
        }
        self.keys[self.len] = key;
        self.len += 1;
        Some(())
    }
}

/// A borrowing reader of the simple JSON the fast paths take: plain strings
/// (no escapes, no controls), unsigned integers, booleans and objects of
/// those. Every method returns `None` on anything else, valid JSON or not,
/// so that the caller can fall back to [`parse_object`].
pub(crate) struct Lexer<'a> {
    text: &'a str,
    i: usize,
}

impl<'a> Lexer<'a> {
    pub(crate) fn new(text: &'a str) -> Self {
        Lexer { text, i: 0 }
    }

    /// Skips JSON white space; the next byte, if any.
    fn peek(&mut self) -> Option<u8> {
        let b = self.text.as_bytes();
        while matches!(b.get(self.i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
        b.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.peek()? == c).then(|| self.i += 1)
    }

    /// Only white space is left.
    pub(crate) fn end(&mut self) -> Option<()> {
        self.peek().is_none().then_some(())
    }

    /// A string literal without escapes or controls: its contents.
    pub(crate) fn string(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        let b = self.text.as_bytes();
        let from = self.i;
        let mut at = from;
        loop {
            at += find_json_special(&b[at..])?;
            match b[at] {
                b'"' => break,
                // A lead byte of some other character: fine here.
                0xEF => at += 1,
                _ => return None,
            }
        }
        self.i = at + 1;
        // Quotes are ASCII, so both ends are char boundaries.
        self.text.get(from..at)
    }

    /// A non-negative integer without fraction or exponent that fits a `u64`.
    pub(crate) fn uint(&mut self) -> Option<u64> {
        self.peek()?;
        let b = self.text.as_bytes();
        let from = self.i;
        while b.get(self.i).is_some_and(u8::is_ascii_digit) {
            self.i += 1;
        }
        let digits = &self.text[from..self.i];
        // JSON allows no leading zeros; a fraction or exponent goes the general way.
        if digits.is_empty()
            || (digits.len() > 1 && digits.starts_with('0'))
            || matches!(b.get(self.i), Some(b'.' | b'e' | b'E'))
        {
            return None;
        }
        digits.parse().ok()
    }

    /// `true` or `false`.
    pub(crate) fn boolean(&mut self) -> Option<bool> {
        self.peek()?;
        let rest = &self.text[self.i..];
        let (v, n) = if rest.starts_with("true") {
            (true, 4)
        } else if rest.starts_with("false") {
            (false, 5)
        } else {
            return None;
        };
        self.i += n;
        Some(v)
    }

    /// Any plain string, integer or boolean, skipped.
    pub(crate) fn scalar(&mut self) -> Option<()> {
        match self.peek()? {
            b'"' => self.string().map(drop),
            b't' | b'f' => self.boolean().map(drop),
            _ => self.uint().map(drop),
        }
    }

    /// An object: calls `field` with each key, the lexer just past its colon
    /// (`field` reads the value). Duplicate keys are the caller's to refuse.
    pub(crate) fn object(
        &mut self,
        mut field: impl FnMut(&mut Self, &'a str) -> Option<()>,
    ) -> Option<()> {
        self.eat(b'{')?;
        if self.eat(b'}').is_some() {
            return Some(());
        }
        loop {
            let key = self.string()?;
            self.eat(b':')?;
            field(self, key)?;
            match self.peek()? {
                b',' => self.i += 1,
                b'}' => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }
}

/// Why a text could not be taken as a JSON object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ParseError {
    /// Not well-formed JSON (or a number out of `f64` range, a bad escape...).
    Invalid,
    /// Well-formed JSON, but not an object; names what it was.
    NotObject(&'static str),
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::Invalid => f.write_str("not valid JSON"),
            ParseError::NotObject(kind) => write!(f, "a JSON {kind}, not an object"),
        }
    }
}

/// Parses `text` (surrounding whitespace ignored) as a JSON value. Never panics.
pub(crate) fn parse(text: &str) -> Result<Value, ParseError> {
    miniserde::json::from_str::<Value>(text.trim()).map_err(|_| ParseError::Invalid)
}

/// Parses `text` (surrounding whitespace ignored) as a JSON object.
pub(crate) fn parse_object(text: &str) -> Result<Object, ParseError> {
    match parse(text)? {
        Value::Object(obj) => Ok(obj),
        other => Err(ParseError::NotObject(kind(&other))),
    }
}

/// The JSON type name of `v`, for error messages.
pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// `v` as compact JSON text (iterative; safe on deep nesting).
pub(crate) fn to_text(v: &Value) -> String {
    miniserde::json::to_string(v)
}

/// A field that is missing or of the wrong JSON type or range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FieldError {
    /// The JSON field name.
    pub(crate) field: &'static str,
    /// What is wrong with it.
    pub(crate) reason: String,
}

impl FieldError {
    pub(crate) fn new(field: &'static str, reason: impl Into<String>) -> Self {
        FieldError {
            field,
            reason: reason.into(),
        }
    }

    /// The field is absent (or `null`); the reason is exactly `missing`.
    pub(crate) fn missing(field: &'static str) -> Self {
        FieldError::new(field, "missing")
    }

    fn wrong_type(field: &'static str, expected: &str, got: &Value) -> Self {
        FieldError::new(field, format!("must be {expected}, got {}", kind(got)))
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "field `{}`: {}", self.field, self.reason)
    }
}

/// `obj[field]`, with JSON `null` treated as absent.
fn present<'a>(obj: &'a Object, field: &str) -> Option<&'a Value> {
    match obj.get(field) {
        None | Some(Value::Null) => None,
        Some(v) => Some(v),
    }
}

/// An optional string field.
pub(crate) fn opt_str<'a>(
    obj: &'a Object,
    field: &'static str,
) -> Result<Option<&'a str>, FieldError> {
    match present(obj, field) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(FieldError::wrong_type(field, "a string", other)),
    }
}

/// A required string field (`missing` when absent or `null`).
pub(crate) fn req_str<'a>(obj: &'a Object, field: &'static str) -> Result<&'a str, FieldError> {
    opt_str(obj, field)?.ok_or_else(|| FieldError::missing(field))
}

/// An optional boolean field (a JSON boolean, not the string `"true"`).
pub(crate) fn opt_bool(obj: &Object, field: &'static str) -> Result<Option<bool>, FieldError> {
    match present(obj, field) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(FieldError::wrong_type(field, "a boolean", other)),
    }
}

/// 2^64 as an `f64` (exactly representable).
const TWO_POW_64: f64 = 18_446_744_073_709_551_616.0;

/// An optional non-negative integer field in `0..=max`.
///
/// Accepts a JSON number without a fractional part (`600`, also `6e2` and
/// `600.0`, which JSON does not distinguish); refuses strings (`"600"`),
/// negatives, fractions and values above `max`.
pub(crate) fn opt_u64(
    obj: &Object,
    field: &'static str,
    max: u64,
) -> Result<Option<u64>, FieldError> {
    let range = || FieldError::new(field, format!("must be an integer between 0 and {max}"));
    match present(obj, field) {
        None => Ok(None),
        Some(Value::Number(n)) => match *n {
            Number::U64(v) if v <= max => Ok(Some(v)),
            // Integral and below 2^64, so the cast is exact; then range-check
            // as an integer (comparing against `max as f64` would round).
            Number::F64(f) if f >= 0.0 && f.fract() == 0.0 && f < TWO_POW_64 && f as u64 <= max => {
                Ok(Some(f as u64))
            }
            _ => Err(range()),
        },
        Some(other) => Err(FieldError::wrong_type(field, "a number", other)),
    }
}

/// An optional object field.
pub(crate) fn opt_object<'a>(
    obj: &'a Object,
    field: &'static str,
) -> Result<Option<&'a Object>, FieldError> {
    match present(obj, field) {
        None => Ok(None),
        Some(Value::Object(o)) => Ok(Some(o)),
        Some(other) => Err(FieldError::wrong_type(field, "an object", other)),
    }
}

/// An optional array-of-strings field.
pub(crate) fn opt_str_array(
    obj: &Object,
    field: &'static str,
) -> Result<Option<Vec<String>>, FieldError> {
    match present(obj, field) {
        None => Ok(None),
        Some(Value::Array(items)) => {
            let mut out = Vec::with_capacity(items.len());
            for item in items.iter() {
                match item {
                    Value::String(s) => out.push(s.clone()),
                    other => {
                        return Err(FieldError::new(
                            field,
                            format!("must be an array of strings, found a {}", kind(other)),
                        ))
                    }
                }
            }
            Ok(Some(out))
        }
        Some(other) => Err(FieldError::wrong_type(field, "an array of strings", other)),
    }
}

#[cfg(test)]
mod tests;
