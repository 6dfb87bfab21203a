//! Downstream validation as CCS does it (PROTOCOL.md §6, §14), on the JSON object parsed by
//! miniserde. Answers the few facts the emulator needs about a valid message.
//!
//! TEMPORARY: this is a minimal private stand-in until `Message::from_json_value` lands in
//! `message.rs`; then this module only adapts that function's result.

use miniserde::json::{Number, Object, Value};

use crate::error::InvalidMessage;

/// What the emulator needs to know about a valid downstream message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Downstream {
    /// `to`, or `condition` when there is no `to`.
    pub target: String,
    /// `delivery_receipt_requested` is `true`.
    pub receipt: bool,
    /// `dry_run` is `true`.
    pub dry_run: bool,
}

const MAX_TTL: u64 = 2_419_200;
const MAX_DATA_BYTES: usize = 4096;
const BOOL_FIELDS: [&str; 5] = [
    "content_available",
    "mutable_content",
    "delay_while_idle",
    "delivery_receipt_requested",
    "dry_run",
];

fn bad(field: &'static str, reason: impl Into<String>) -> InvalidMessage {
    InvalidMessage::new(field, reason)
}

fn as_bool(obj: &Object, field: &'static str) -> Result<Option<bool>, InvalidMessage> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(bad(field, "must be a JSON boolean")),
    }
}

fn as_str<'a>(obj: &'a Object, field: &'static str) -> Result<Option<&'a str>, InvalidMessage> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(bad(field, "must be a JSON string")),
    }
}

/// Validates a downstream message object (its `message_id` is checked by the caller).
pub(crate) fn downstream(obj: &Object) -> Result<Downstream, InvalidMessage> {
    let to = as_str(obj, "to")?.filter(|s| !s.is_empty());
    let condition = as_str(obj, "condition")?.filter(|s| !s.is_empty());
    if obj.contains_key("registration_ids") {
        return Err(bad(
            "registration_ids",
            "not supported by the XMPP connection server: one recipient per message",
        ));
    }
    let target = match (to, condition) {
        (Some(t), None) => t.to_string(),
        (None, Some(c)) => c.to_string(),
        (None, None) => return Err(bad("to", "missing recipient (`to` or `condition`)")),
        (Some(_), Some(_)) => return Err(bad("condition", "use either `to` or `condition`")),
    };
    if let Some(ttl) = obj.get("time_to_live") {
        match ttl {
            Value::Number(Number::U64(n)) if *n <= MAX_TTL => {}
            Value::Number(Number::I64(n)) if (0..=MAX_TTL as i64).contains(n) => {}
            Value::Number(_) => {
                return Err(bad("time_to_live", "must be an integer from 0 to 2419200"))
            }
            _ => return Err(bad("time_to_live", "must be a JSON number")),
        }
    }
    if let Some(p) = as_str(obj, "priority")? {
        if p != "normal" && p != "high" {
            return Err(bad("priority", "must be \"normal\" or \"high\""));
        }
    }
    as_str(obj, "collapse_key")?;
    for field in BOOL_FIELDS {
        as_bool(obj, field)?;
    }
    match obj.get("data") {
        None | Some(Value::Null) => {}
        Some(Value::Object(data)) => {
            let mut size = 0;
            for (k, v) in data.iter() {
                if k == "from"
                    || k == "message_type"
                    || k.starts_with("google")
                    || k.starts_with("gcm")
                {
                    return Err(bad("data", format!("reserved key {k:?}")));
                }
                match v {
                    Value::String(s) => size += k.len() + s.len(),
                    _ => return Err(bad("data", format!("value of {k:?} must be a string"))),
                }
            }
            if size > MAX_DATA_BYTES {
                return Err(bad(
                    "data",
                    format!("payload of {size} bytes exceeds {MAX_DATA_BYTES}"),
                ));
            }
        }
        Some(_) => return Err(bad("data", "must be a JSON object")),
    }
    match obj.get("notification") {
        None | Some(Value::Null) | Some(Value::Object(_)) => {}
        Some(_) => return Err(bad("notification", "must be a JSON object")),
    }
    Ok(Downstream {
        target,
        receipt: as_bool(obj, "delivery_receipt_requested")?.unwrap_or(false),
        dry_run: as_bool(obj, "dry_run")?.unwrap_or(false),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(json: &str) -> Result<Downstream, InvalidMessage> {
        match miniserde::json::from_str::<Value>(json).unwrap() {
            Value::Object(o) => downstream(&o),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn valid() {
        let d = check(
            r#"{"to":"tok","message_id":"m","time_to_live":0,"delivery_receipt_requested":true,
               "data":{"k":"v"},"priority":"high"}"#,
        )
        .unwrap();
        assert_eq!(d.target, "tok");
        assert!(d.receipt && !d.dry_run);
        let d = check(r#"{"condition":"'a' in topics","message_id":"m","dry_run":true}"#).unwrap();
        assert_eq!(d.target, "'a' in topics");
        assert!(d.dry_run);
    }

    #[test]
    fn invalid_fields_named() {
        for (json, field) in [
            (r#"{"message_id":"m"}"#, "to"),
            (r#"{"to":"t","condition":"c"}"#, "condition"),
            (r#"{"to":"t","time_to_live":2419201}"#, "time_to_live"),
            (r#"{"to":"t","time_to_live":-1}"#, "time_to_live"),
            (r#"{"to":"t","time_to_live":"600"}"#, "time_to_live"),
            (
                r#"{"to":"t","delay_while_idle":"true"}"#,
                "delay_while_idle",
            ),
            (r#"{"to":"t","priority":"urgent"}"#, "priority"),
            (r#"{"to":"t","data":{"from":"x"}}"#, "data"),
            (r#"{"to":"t","data":{"google.x":"x"}}"#, "data"),
            (r#"{"to":"t","data":{"gcmx":"x"}}"#, "data"),
            (r#"{"to":"t","data":{"n":1}}"#, "data"),
            (r#"{"to":"t","data":[]}"#, "data"),
            (r#"{"to":"t","registration_ids":["a"]}"#, "registration_ids"),
            (r#"{"to":7}"#, "to"),
        ] {
            assert_eq!(check(json).unwrap_err().field, field, "{json}");
        }
        let big = format!(r#"{{"to":"t","data":{{"k":"{}"}}}}"#, "x".repeat(4096));
        assert_eq!(check(&big).unwrap_err().field, "data");
    }
}
