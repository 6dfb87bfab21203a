//! Fast paths of [`Event::from_json`] for the payloads CCS sends most, read
//! with the borrowing [`json::Lexer`] instead of a `miniserde` value tree:
//! acks and nacks ([`Settlement`], whose `message_id` the session fills from
//! its pending set without allocating), and upstream messages and receipts
//! ([`inbound`]). Each answers only for payloads in a simple, well-typed form
//! (plain strings, integers, a `data` object of plain strings, distinct keys)
//! and then gives exactly the event the general path gives; for anything
//! else it is `None` and the caller takes the general path. The tests in
//! `settlement_tests.rs` compare both on many payloads.

use std::collections::BTreeMap;

use super::{
    owned, Ack, AckRefusal, AckRefused, Event, Nack, NackCode, Receipt, Upstream, RECEIPT_PREFIX,
};
use crate::json::{self, Lexer, SeenKeys};

/// An ack or nack read without a value tree, borrowing its strings from the
/// JSON text: the fast path of [`Event::from_json`] for the payloads CCS
/// sends most. Only flat objects of plain strings
/// ([`json::scan_flat`]) with `message_type` `ack` or `nack` and a
/// `message_id` qualify; [`Settlement::into_event`] then gives exactly the
/// event the general path would.
#[derive(Debug)]
pub(crate) enum Settlement<'a> {
    Ack {
        message_id: &'a str,
        from: Option<&'a str>,
        registration_id: Option<&'a str>,
    },
    Nack {
        message_id: &'a str,
        from: Option<&'a str>,
        error: Option<&'a str>,
        description: Option<&'a str>,
    },
}

impl<'a> Settlement<'a> {
    /// The fast path's reading of `text` (trimmed), or `None` for the general path.
    pub(crate) fn scan(text: &'a str) -> Option<Self> {
        let f = json::scan_flat(text)?;
        let message_id = f.get("message_id")?;
        match f.get("message_type")? {
            "ack" => Some(Settlement::Ack {
                message_id,
                from: f.get("from"),
                registration_id: f.get("registration_id"),
            }),
            "nack" => Some(Settlement::Nack {
                message_id,
                from: f.get("from"),
                error: f.get("error"),
                description: f.get("error_description"),
            }),
            _ => None,
        }
    }

    /// The acked or nacked message id.
    pub(crate) fn message_id(&self) -> &'a str {
        match self {
            Settlement::Ack { message_id, .. } | Settlement::Nack { message_id, .. } => message_id,
        }
    }

    /// True if this settles a downstream message (a `BAD_ACK` nack does not:
    /// it becomes [`Event::AckRefused`]).
    pub(crate) fn settles(&self) -> bool {
        !matches!(
            self,
            Settlement::Nack {
                error: Some("BAD_ACK"),
                ..
            }
        )
    }

    /// The event, with `message_id` (equal to [`Self::message_id`]) already owned.
    pub(crate) fn into_event(self, message_id: String) -> Event {
        match self {
            Settlement::Ack {
                from,
                registration_id,
                ..
            } => Event::Ack(Ack {
                message_id,
                from: owned(from),
                registration_id: owned(registration_id),
            }),
            Settlement::Nack {
                from,
                error,
                description,
                ..
            } => {
                let nack = Nack {
                    message_id,
                    from: owned(from),
                    code: error.map_or(NackCode::Other(String::new()), NackCode::from_code),
                    description: owned(description),
                };
                if nack.code == NackCode::BadAck {
                    return Event::AckRefused(AckRefused {
                        message_id: Some(nack.message_id.clone()),
                        reason: AckRefusal::Nack(nack),
                    });
                }
                Event::Nack(nack)
            }
        }
    }
}

/// Most top-level keys, and most `data` keys, [`inbound`] reads.
const MAX_KEYS: usize = 16;

/// An upstream message or a receipt in the simple form (see the module docs).
pub(super) fn inbound(text: &str) -> Option<Event> {
    let (mut from, mut message_id, mut category, mut message_type) = (None, None, None, None);
    let mut time_to_live = None;
    let mut data: Option<Vec<(&str, &str)>> = None;
    let mut keys = SeenKeys::<MAX_KEYS>::new();
    let mut lx = Lexer::new(text);
    lx.object(|lx, key| {
        keys.first(key)?;
        match key {
            "from" => from = Some(lx.string()?),
            "message_id" => message_id = Some(lx.string()?),
            "category" => category = Some(lx.string()?),
            "message_type" => message_type = Some(lx.string()?),
            "time_to_live" => time_to_live = Some(lx.uint()?),
            "data" => {
                let mut pairs = Vec::new();
                lx.object(|lx, k| {
                    let v = lx.string()?;
                    (pairs.len() < MAX_KEYS && !pairs.iter().any(|&(p, _)| p == k))
                        .then(|| pairs.push((k, v)))
                })?;
                data = Some(pairs);
            }
            _ => lx.scalar()?,
        }
        Some(())
    })?;
    lx.end()?;
    let from = from?.to_owned();
    let message_id = message_id?.to_owned();
    let category = owned(category);
    let data = data.unwrap_or_default();
    match message_type {
        None => Some(Event::Upstream(Upstream {
            from,
            category,
            message_id,
            data: data
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect::<BTreeMap<_, _>>(),
            time_to_live,
        })),
        Some("receipt") => {
            let get = |k: &str| data.iter().find(|&&(p, _)| p == k).map(|&(_, v)| v);
            let original_message_id = get("original_message_id").map_or_else(
                || {
                    message_id
                        .strip_prefix(RECEIPT_PREFIX)
                        .unwrap_or(&message_id)
                        .to_owned()
                },
                str::to_owned,
            );
            let sent_timestamp = get("message_sent_timestamp").and_then(|t| t.trim().parse().ok());
            Some(Event::Receipt(Receipt {
                original_message_id,
                status: get("message_status").unwrap_or_default().to_owned(),
                device_registration_id: owned(get("device_registration_id")),
                sent_timestamp,
                category,
                message_id,
                from,
            }))
        }
        Some(_) => None,
    }
}
