//! The business-application protocol: one JSON object per line. Line building, the
//! CCS message ids derived from (session, group, message id), and the journal keys.

use miniserde::json::{self, Number, Object, Value};

/// The longest line an app may send, in bytes (longer ones are refused whole).
pub const MAX_LINE: usize = 64 * 1024;

/// A session id is a package name: letters, digits, `_` and `.`, 1 to 255 bytes.
pub fn valid_session(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
}

/// The longest app `message_id` or `group_id`, in bytes.
pub const MAX_ID: usize = 512;

/// An app's message or group id: 1 to [`MAX_ID`] bytes, no control characters (it
/// becomes part of a journal key and of the CCS message id).
pub fn valid_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_ID && !s.chars().any(char::is_control)
}

/// `%` and `:` escaped, so the text can sit between `:` separators.
fn escape(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '%' => out.push_str("%25"),
            ':' => out.push_str("%3A"),
            c => out.push(c),
        }
    }
}

fn unescape(s: &str) -> String {
    s.replace("%3A", ":").replace("%25", "%")
}

/// The CCS `message_id` of an app's downstream message:
/// `SESSION:GROUP:MESSAGE_ID` (group escaped, empty without one). The same after a
/// restart, and [`parse_ccs_id`] takes it apart again.
pub fn ccs_id(session: &str, group: Option<&str>, message_id: &str) -> String {
    let mut id = String::with_capacity(session.len() + message_id.len() + 8);
    id.push_str(session);
    id.push(':');
    escape(group.unwrap_or(""), &mut id);
    id.push(':');
    id.push_str(message_id);
    id
}

/// `(session, group, app message id)` of a CCS id made by [`ccs_id`].
pub fn parse_ccs_id(id: &str) -> Option<(String, Option<String>, String)> {
    let (session, rest) = id.split_once(':')?;
    let (group, mid) = rest.split_once(':')?;
    if !valid_session(session) || mid.is_empty() {
        return None;
    }
    let group = (!group.is_empty()).then(|| unescape(group));
    Some((session.to_string(), group, mid.to_string()))
}

/// Journal key of an app's downstream message (pending, or its outcome).
pub fn down_key(session: &str, message_id: &str) -> String {
    format!("d:{session}:{message_id}")
}

/// Journal key of an upstream message for `session`.
pub fn up_key(session: &str, from: &str, message_id: &str) -> String {
    let mut k = format!("u:{session}:");
    escape(from, &mut k);
    k.push(':');
    k.push_str(message_id);
    k
}

/// Journal key of a receipt for `session`.
pub fn receipt_key(session: &str, receipt_id: &str) -> String {
    format!("r:{session}:{receipt_id}")
}

/// `(kind, session)` of a journal key.
pub fn key_session(key: &str) -> Option<(char, &str)> {
    let mut parts = key.splitn(3, ':');
    let kind = parts.next()?.chars().next()?;
    Some((kind, parts.next()?))
}

/// `(session, upstream message id)` of an upstream key.
pub fn up_key_ids(key: &str) -> Option<(&str, &str)> {
    let rest = key.strip_prefix("u:")?;
    let (session, rest) = rest.split_once(':')?;
    let (_from, mid) = rest.split_once(':')?;
    Some((session, mid))
}

/// One JSON object, built field by field; `finish` gives the line (no newline).
pub struct Line(Object);

impl Line {
    pub fn new(message_type: &str) -> Line {
        let mut o = Object::new();
        o.insert("message_type".into(), Value::String(message_type.into()));
        Line(o)
    }

    /// An object without `message_type`.
    pub fn object() -> Line {
        Line(Object::new())
    }

    pub fn into_value(self) -> Value {
        Value::Object(self.0)
    }

    pub fn str(mut self, k: &str, v: &str) -> Line {
        self.0.insert(k.into(), Value::String(v.into()));
        self
    }

    pub fn opt(self, k: &str, v: Option<&str>) -> Line {
        match v {
            Some(v) => self.str(k, v),
            None => self,
        }
    }

    pub fn value(mut self, k: &str, v: Value) -> Line {
        self.0.insert(k.into(), v);
        self
    }

    pub fn finish(self) -> String {
        json::to_string(&Value::Object(self.0))
    }
}

/// A string-to-string map as a JSON object.
pub fn string_map<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Value {
    let mut o = Object::new();
    for (k, v) in pairs {
        o.insert(k.into(), Value::String(v.into()));
    }
    Value::Object(o)
}

/// An unsigned number as a JSON value.
pub fn number(n: u64) -> Value {
    Value::Number(Number::U64(n))
}

/// `{"message_type":"ERROR","session_id":...,"error_string":...}` (`session_id` once the
/// connection is logged on).
pub fn error_line(session: Option<&str>, text: &str) -> String {
    Line::new("ERROR")
        .opt("session_id", session)
        .str("error_string", text)
        .finish()
}

/// A `DOWNSTREAM_ACK`/`_REJECT` line for the app.
pub fn outcome_line(
    session: &str,
    message_id: &str,
    group: Option<&str>,
    error: Option<&str>,
    registration_id: Option<&str>,
) -> String {
    let kind = match error {
        None => "DOWNSTREAM_ACK",
        Some(_) => "DOWNSTREAM_REJECT",
    };
    Line::new(kind)
        .str("session_id", session)
        .str("message_id", message_id)
        .opt("group_id", group)
        .opt("error_string", error)
        .opt("registration_id", registration_id)
        .finish()
}

/// The string field `k`: `Ok(None)` if absent or null, `Err` if not a string.
pub fn opt_str<'a>(o: &'a Object, k: &str) -> Result<Option<&'a str>, String> {
    match o.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("field {k} must be a string")),
    }
}

/// The string field `k`, required and non-empty.
pub fn req_str<'a>(o: &'a Object, k: &str) -> Result<&'a str, String> {
    match opt_str(o, k)? {
        Some(s) if !s.is_empty() => Ok(s),
        Some(_) => Err(format!("field {k} must not be empty")),
        None => Err(format!("missing field {k}")),
    }
}

/// A line as a JSON object, or what is wrong with it.
pub fn parse_line(bytes: &[u8]) -> Result<Object, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "line is not UTF-8".to_string())?;
    match json::from_str::<Value>(text.trim_end_matches('\r')) {
        Ok(Value::Object(o)) => Ok(o),
        Ok(_) => Err("line is not a JSON object".into()),
        Err(_) => Err("line is not valid JSON".into()),
    }
}
