//! The JSON and stanzas CCS sends, built from the crate's event types: what
//! the emulator writes. The client never needs them (it only parses events).

use crate::event::{AckRefusal, AckRefused, Event, Nack, StanzaError};
use crate::json;
use crate::ns::{CLIENT as NS_CLIENT, GCM as NS_GCM, STANZAS as NS_STANZAS};
use crate::xml::Element;

/// The JSON CCS would send inside `<gcm>` for `event` (see [`write_event_json`]).
pub fn event_json(event: &Event) -> String {
    let mut out = String::with_capacity(160);
    write_event_json(event, &mut out);
    out
}

/// Appends the JSON CCS would send inside `<gcm>` for `event`:
///
/// - ack: `from`, `message_id`, `registration_id` if set, `message_type`;
/// - nack (also a refused ack's `BAD_ACK`): `from`, `message_id`, `error`,
///   `error_description` if set, `message_type`;
/// - receipt: `message_type`, `message_id`, `from`, `category`, `data`
///   with `message_status`, `original_message_id`,
///   `device_registration_id` and `message_sent_timestamp` (a string),
///   then `time_to_live: 0` ([protocol](crate::protocol#server-messages));
/// - control: `message_type`, `control_type`;
/// - upstream: `from`, `category`, `message_id`, `data` (all strings),
///   `time_to_live`; no `message_type`;
/// - unknown: its JSON text as received;
/// - stanza error (not a `<gcm>` payload; see [`stanza_error_element`]):
///   the echo stub `{"message_id":...}`, or `{}`.
pub fn write_event_json(event: &Event, out: &mut String) {
    let mut first = true;
    let f = &mut first;
    let field = |name: &str, value: &str, first: &mut bool, out: &mut String| {
        json::write_key(name, first, out);
        json::write_str(value, out);
    };
    let opt = |name: &str, value: &Option<String>, first: &mut bool, out: &mut String| {
        if let Some(v) = value {
            json::write_key(name, first, out);
            json::write_str(v, out);
        }
    };
    match event {
        Event::Unknown(u) => {
            out.push_str(&u.json);
            return;
        }
        // As the server sent it: the nack, or the stanza error's echo stub.
        Event::AckRefused(AckRefused {
            reason: AckRefusal::Nack(n),
            ..
        }) => nack_fields(n, f, out),
        Event::AckRefused(AckRefused {
            reason: AckRefusal::StanzaError(e),
            ..
        }) => {
            out.push('{');
            opt("message_id", &e.message_id, f, out);
        }
        Event::Ack(a) => {
            out.push('{');
            opt("from", &a.from, f, out);
            field("message_id", &a.message_id, f, out);
            opt("registration_id", &a.registration_id, f, out);
            field("message_type", "ack", f, out);
        }
        Event::Nack(n) => nack_fields(n, f, out),
        Event::Receipt(r) => {
            out.push('{');
            field("message_type", "receipt", f, out);
            field("message_id", &r.message_id, f, out);
            field("from", &r.from, f, out);
            opt("category", &r.category, f, out);
            json::write_key("data", f, out);
            out.push('{');
            let mut df = true;
            field("message_status", &r.status, &mut df, out);
            field("original_message_id", &r.original_message_id, &mut df, out);
            opt(
                "device_registration_id",
                &r.device_registration_id,
                &mut df,
                out,
            );
            if let Some(ts) = r.sent_timestamp {
                json::write_key("message_sent_timestamp", &mut df, out);
                out.push('"');
                json::write_u64(ts, out);
                out.push('"');
            }
            out.push('}');
            json::write_key("time_to_live", f, out);
            out.push('0');
        }
        Event::Control(c) => {
            out.push('{');
            field("message_type", "control", f, out);
            field("control_type", c.kind.as_str(), f, out);
        }
        Event::Upstream(u) => {
            out.push('{');
            field("from", &u.from, f, out);
            opt("category", &u.category, f, out);
            field("message_id", &u.message_id, f, out);
            json::write_key("data", f, out);
            out.push('{');
            let mut df = true;
            for (k, v) in &u.data {
                field(k, v, &mut df, out);
            }
            out.push('}');
            if let Some(ttl) = u.time_to_live {
                json::write_key("time_to_live", f, out);
                json::write_u64(ttl, out);
            }
        }
        Event::StanzaError(e) => {
            out.push('{');
            opt("message_id", &e.message_id, f, out);
        }
    }
    out.push('}');
}

/// Opens the object and writes a nack's fields (the caller closes it).
fn nack_fields(n: &Nack, first: &mut bool, out: &mut String) {
    out.push('{');
    for (name, value) in [
        ("from", n.from.as_deref()),
        ("message_id", Some(n.message_id.as_str())),
        ("error", Some(n.code.as_str())),
        ("error_description", n.description.as_deref()),
        ("message_type", Some("nack")),
    ] {
        if let Some(v) = value {
            json::write_key(name, first, out);
            json::write_str(v, out);
        }
    }
}

/// Builds the `<message type="error">` stanza CCS would send for `error`: the
/// `id` attribute, the echoed `<gcm>` payload, then `<error code type>
/// <condition/><text/></error>`.
///
/// `echoed_payload` is the client's JSON to echo; when `None`, a minimal
/// `{"message_id":...}` is echoed if [`StanzaError::message_id`] is set.
pub fn stanza_error_element(error: &StanzaError, echoed_payload: Option<&str>) -> Element {
    let mut msg = Element::new("message", NS_CLIENT);
    if let Some(id) = &error.id {
        msg = msg.with_attr("id", id.as_str());
    }
    msg = msg.with_attr("type", "error");
    let echo = match (echoed_payload, &error.message_id) {
        (Some(p), _) => Some(p.to_owned()),
        (None, Some(mid)) => {
            let mut s = String::from("{");
            let mut first = true;
            json::write_key("message_id", &mut first, &mut s);
            json::write_str(mid, &mut s);
            s.push('}');
            Some(s)
        }
        (None, None) => None,
    };
    if let Some(echo) = echo {
        msg = msg.with_child(Element::new("gcm", NS_GCM).with_text(echo));
    }
    let mut err = Element::new("error", NS_CLIENT);
    if let Some(code) = error.code {
        err = err.with_attr("code", code.to_string());
    }
    if let Some(t) = &error.error_type {
        err = err.with_attr("type", t.as_str());
    }
    err = err.with_child(Element::new(error.condition.as_str(), NS_STANZAS));
    if let Some(text) = &error.text {
        err = err.with_child(Element::new("text", NS_STANZAS).with_text(text.as_str()));
    }
    msg.with_child(err)
}

#[cfg(test)]
mod tests;
