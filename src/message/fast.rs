//! The fast path of [`Message::from_json`] for the downstream messages the
//! emulator reads most: a [`json::Lexer`] pass straight into a [`Message`],
//! no `miniserde` value tree.
//!
//! It answers only for valid messages in a simple form: plain strings (no
//! escapes), non-negative integers, booleans, a `data` object of plain
//! strings, distinct keys, no `notification`, no `message_type`. Anything
//! else, and every message [`Message::validate`] refuses, is `None`: the
//! caller takes the general path, which gives every error its exact text. The
//! tests beside this file compare both paths on many payloads.

use super::{Message, Priority};
use crate::json::{Lexer, SeenKeys};

/// Most top-level keys read here; more go the general way.
const MAX_KEYS: usize = 24;

/// The message `text` holds, if it is valid and in the simple form.
pub(crate) fn from_json(text: &str) -> Option<Message> {
    let mut m = Message::blank();
    let mut message_id = None;
    let mut keys = SeenKeys::<MAX_KEYS>::new();
    let mut lx = Lexer::new(text);
    lx.object(|lx, key| {
        keys.first(key)?;
        let s = |lx: &mut Lexer<'_>| lx.string().map(|v| Some(v.to_owned()));
        match key {
            "to" => m.to = s(lx)?,
            "condition" => m.condition = s(lx)?,
            "message_id" => message_id = Some(lx.string()?),
            "collapse_key" => m.collapse_key = s(lx)?,
            "priority" => m.priority = Some(Priority::from_name(lx.string()?)?),
            "time_to_live" => {
                // Above the maximum: `validate` refuses it below.
                m.time_to_live = Some(u32::try_from(lx.uint()?).ok()?);
            }
            "content_available" => m.content_available = Some(lx.boolean()?),
            "mutable_content" => m.mutable_content = Some(lx.boolean()?),
            "delay_while_idle" => m.delay_while_idle = Some(lx.boolean()?),
            "delivery_receipt_requested" => m.delivery_receipt_requested = Some(lx.boolean()?),
            "dry_run" => m.dry_run = Some(lx.boolean()?),
            "data" => {
                lx.object(|lx, k| {
                    let v = lx.string()?;
                    m.data.push((k.to_owned(), v.to_owned()));
                    Some(())
                })?;
                // The general path keeps `data` in key order (a map): sort, and
                // leave duplicate keys to it.
                m.data.sort_unstable_by(|a, b| a.0.cmp(&b.0));
                if m.data.windows(2).any(|w| w[0].0 == w[1].0) {
                    return None;
                }
            }
            "notification" | "message_type" => return None,
            // Unknown fields are ignored, as on the general path.
            _ => lx.scalar()?,
        }
        Some(())
    })?;
    lx.end()?;
    m.message_id = message_id?.to_owned();
    m.validate().ok()?;
    Some(m)
}

#[cfg(test)]
mod tests;
