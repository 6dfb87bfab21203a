//! What the emulator writes on the wire, byte for byte as CCS did ([protocol](crate::protocol):
//! [handshake](crate::protocol#handshake), [reading stanzas](crate::protocol#reading-stanzas),
//! [server messages](crate::protocol#server-messages),
//! [stanza errors](crate::protocol#stanza-and-stream-errors)),
//! plus SASL PLAIN decoding and the random ids CCS hands out. Pure functions, no I/O. JSON
//! payloads are the crate's own [`Event`] values written by `Event::write_json`.

use std::collections::hash_map::RandomState;
use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;

use crate::event::{Control, ControlKind, Event, Receipt, StanzaError, Upstream};
use crate::xml::{append_json_text, escape_attr, escape_text, write_element};

pub(crate) use crate::ns::{
    BIND as NS_BIND, CLIENT as NS_CLIENT, GCM as NS_GCM, PING as NS_PING, ROSTER as NS_ROSTER,
    SASL as NS_SASL, SESSION as NS_SESSION, STREAM as NS_STREAM,
};

/// The domain CCS uses in `from` when the client did not name one.
pub(crate) const DEFAULT_DOMAIN: &str = "gcm.googleapis.com";

/// The text CCS puts in the 400 stanza error for a downstream message without `message_id`.
pub(crate) const MISSING_ID_TEXT: &str =
    "InvalidJson: JSON_PARSING_ERROR : Missing Required Field: message_id\n";

/// A fresh pseudo-random number: a per-process random seed (std's `RandomState`) hashed with a
/// counter and the clock. Unpredictable enough for stream ids; not for cryptography.
pub(crate) fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(n);
    h.write_u64(nanos);
    h.finish()
}

/// A stream id as CCS sends it: 16 upper-case hex characters.
pub(crate) fn stream_id() -> String {
    format!("{:016X}", random_u64())
}

/// The suffix CCS appends to the proposed resource: 8 upper-case hex characters.
pub(crate) fn resource_suffix() -> String {
    format!("{:08X}", random_u64() as u32)
}

/// Milliseconds since the Unix epoch (for receipts' `message_sent_timestamp`).
pub(crate) fn epoch_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// SASL PLAIN
// ---------------------------------------------------------------------------------------------

/// The three parts of a SASL PLAIN message (RFC 4616): `authzid \0 authcid \0 password`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plain {
    pub authzid: String,
    pub authcid: String,
    pub password: String,
}

/// Why a PLAIN payload could not be decoded; each maps to a SASL failure condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PlainError {
    /// Not one unbroken line of padded standard base64 (`incorrect-encoding`).
    IncorrectEncoding,
    /// Decoded, but not `authzid\0authcid\0password` in UTF-8 (`malformed-request`).
    Malformed,
}

impl PlainError {
    /// The SASL failure condition element name.
    pub(crate) fn condition(self) -> &'static str {
        match self {
            PlainError::IncorrectEncoding => "incorrect-encoding",
            PlainError::Malformed => "malformed-request",
        }
    }
}

/// Decodes the text of `<auth mechanism="PLAIN">`. Any whitespace, including a line break or
/// a trailing newline, is `incorrect-encoding`, as CCS answered a client whose base64 library
/// wrapped lines ([protocol: encoding](crate::protocol#encoding)).
pub(crate) fn decode_plain(b64: &str) -> Result<Plain, PlainError> {
    if b64.is_empty() || b64.bytes().any(|b| b.is_ascii_whitespace()) {
        return Err(PlainError::IncorrectEncoding);
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| PlainError::IncorrectEncoding)?;
    let text = String::from_utf8(raw).map_err(|_| PlainError::Malformed)?;
    let mut parts = text.split('\0');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(authzid), Some(authcid), Some(password), None) => Ok(Plain {
            authzid: authzid.to_string(),
            authcid: authcid.to_string(),
            password: password.to_string(),
        }),
        _ => Err(PlainError::Malformed),
    }
}

/// The user domains CCS accepted after `SENDER@`
/// ([protocol: handshake](crate::protocol#handshake)).
const USER_DOMAINS: [&str; 2] = ["gcm.googleapis.com", "fcm.googleapis.com"];

fn is_sender_jid(s: &str, sender_id: &str) -> bool {
    match s.split_once('@') {
        Some((user, domain)) => user == sender_id && USER_DOMAINS.contains(&domain),
        None => false,
    }
}

/// True if `plain` carries `sender_id` and `server_key` in one of the encodings CCS accepted:
/// `\0SENDER@gcm.googleapis.com\0KEY`, `\0SENDER@fcm.googleapis.com\0KEY`, or xmpppy's
/// `SENDER@gcm.googleapis.com\0SENDER\0KEY`.
pub(crate) fn credentials_ok(plain: &Plain, sender_id: &str, server_key: &str) -> bool {
    if plain.password != server_key || sender_id.is_empty() {
        return false;
    }
    if plain.authzid.is_empty() {
        is_sender_jid(&plain.authcid, sender_id)
    } else {
        is_sender_jid(&plain.authzid, sender_id) && plain.authcid == sender_id
    }
}

/// Encodes a PLAIN payload (for tests and the raw client test).
#[cfg(test)]
pub(crate) fn encode_plain(authzid: &str, authcid: &str, password: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("{authzid}\0{authcid}\0{password}"))
}

// ---------------------------------------------------------------------------------------------
// JSON: built as the crate's `Event` values and written by `Event::write_json`
// ---------------------------------------------------------------------------------------------

/// The id of the receipt for `original_id`: `dr2:<original>`.
pub(crate) fn receipt_id(original_id: &str) -> String {
    format!("dr2:{original_id}")
}

/// The receipt CCS sends once a downstream message reached the device
/// ([protocol: server messages](crate::protocol#server-messages)).
pub(crate) fn receipt_event(original_id: &str, token: &str, category: &str, sent_ms: u64) -> Event {
    Event::Receipt(Receipt {
        message_id: receipt_id(original_id),
        from: DEFAULT_DOMAIN.to_string(),
        original_message_id: original_id.to_string(),
        status: "MESSAGE_SENT_TO_DEVICE".to_string(),
        device_registration_id: Some(token.to_string()),
        sent_timestamp: Some(sent_ms),
        category: Some(category.to_string()),
    })
}

/// An upstream message from a device (no `message_type`).
pub(crate) fn upstream_event(
    message_id: &str,
    from: &str,
    category: &str,
    data: &[(&str, &str)],
) -> Event {
    Event::Upstream(Upstream {
        from: from.to_string(),
        category: Some(category.to_string()),
        message_id: message_id.to_string(),
        data: data
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        time_to_live: None,
    })
}

/// The control message announcing draining (no `message_id`).
pub(crate) fn draining_event() -> Event {
    Event::Control(Control {
        kind: ControlKind::ConnectionDraining,
    })
}

// ---------------------------------------------------------------------------------------------
// Stanzas
// ---------------------------------------------------------------------------------------------

/// The server's stream header: `from` = the client's `to`, a fresh `id`.
pub(crate) fn stream_header(out: &mut String, from: &str, id: &str) {
    out.push_str("<stream:stream from=\"");
    escape_attr(from, out);
    out.push_str("\" id=\"");
    escape_attr(id, out);
    out.push_str(
        "\" version=\"1.0\" xmlns:stream=\"http://etherx.jabber.org/streams\" \
         xmlns=\"jabber:client\">",
    );
}

/// Features before authentication: the three mechanisms CCS offered.
pub(crate) const SASL_FEATURES: &str = "<stream:features>\
<mechanisms xmlns=\"urn:ietf:params:xml:ns:xmpp-sasl\">\
<mechanism>X-OAUTH2</mechanism><mechanism>X-GOOGLE-TOKEN</mechanism>\
<mechanism>PLAIN</mechanism></mechanisms></stream:features>";

/// Features after authentication: bind and session.
pub(crate) const BIND_FEATURES: &str = "<stream:features>\
<bind xmlns=\"urn:ietf:params:xml:ns:xmpp-bind\"/>\
<session xmlns=\"urn:ietf:params:xml:ns:xmpp-session\"/></stream:features>";

/// SASL success.
pub(crate) const SASL_SUCCESS: &str = "<success xmlns=\"urn:ietf:params:xml:ns:xmpp-sasl\"/>";

/// The end of the server's stream.
pub(crate) const STREAM_END: &str = "</stream:stream>";

/// `<failure xmlns="urn:ietf:params:xml:ns:xmpp-sasl"><CONDITION/></failure>`.
pub(crate) fn sasl_failure(out: &mut String, condition: &str) {
    out.push_str("<failure xmlns=\"urn:ietf:params:xml:ns:xmpp-sasl\"><");
    out.push_str(condition);
    out.push_str("/></failure>");
}

/// `<stream:error><CONDITION xmlns="urn:ietf:params:xml:ns:xmpp-streams"/>[<text>]</stream:error>`.
pub(crate) fn stream_error(out: &mut String, condition: &str, text: Option<&str>) {
    out.push_str("<stream:error><");
    out.push_str(condition);
    out.push_str(" xmlns=\"urn:ietf:params:xml:ns:xmpp-streams\"/>");
    if let Some(text) = text {
        out.push_str("<text xmlns=\"urn:ietf:params:xml:ns:xmpp-streams\">");
        escape_text(text, out);
        out.push_str("</text>");
    }
    out.push_str("</stream:error>");
}

fn opt_attr(out: &mut String, name: &str, value: Option<&str>) {
    if let Some(v) = value {
        out.push(' ');
        out.push_str(name);
        out.push_str("=\"");
        escape_attr(v, out);
        out.push('"');
    }
}

/// `<iq type="result" id=ID [to=TO] [from=FROM]/>` (session result, ping pong).
pub(crate) fn iq_result(out: &mut String, id: Option<&str>, to: Option<&str>, from: Option<&str>) {
    out.push_str("<iq type=\"result\"");
    opt_attr(out, "id", id);
    opt_attr(out, "to", to);
    opt_attr(out, "from", from);
    out.push_str("/>");
}

/// The bind result carrying the full JID.
pub(crate) fn bind_result(out: &mut String, id: Option<&str>, jid: &str) {
    out.push_str("<iq type=\"result\"");
    opt_attr(out, "id", id);
    out.push_str("><bind xmlns=\"urn:ietf:params:xml:ns:xmpp-bind\"><jid>");
    escape_text(jid, out);
    out.push_str("</jid></bind></iq>");
}

/// `<iq type="error" id=ID><error type=TYPE><CONDITION xmlns=stanzas/></error></iq>`.
pub(crate) fn iq_error(out: &mut String, id: Option<&str>, error_type: &str, condition: &str) {
    out.push_str("<iq type=\"error\"");
    opt_attr(out, "id", id);
    out.push_str("><error type=\"");
    out.push_str(error_type);
    out.push_str("\"><");
    out.push_str(condition);
    out.push_str(" xmlns=\"urn:ietf:params:xml:ns:xmpp-stanzas\"/></error></iq>");
}

/// ACK, NACK and control: `<message><data:gcm xmlns:data="google:mobile:data">JSON</data:gcm>
/// </message>`, prefixed, no `id`, no `type` (observed wire form).
#[cfg(test)]
pub(crate) fn data_gcm_message(out: &mut String, json: &str) {
    data_gcm_message_with(out, &mut String::new(), |out| out.push_str(json));
}

/// [`data_gcm_message`] with the JSON written by `write` straight into `out`
/// ([`append_json_text`]: it must be the crate's JSON writer's output).
pub(crate) fn data_gcm_message_with(
    out: &mut String,
    scratch: &mut String,
    write: impl FnOnce(&mut String),
) {
    out.push_str("<message><data:gcm xmlns:data=\"google:mobile:data\">");
    append_json_text(out, scratch, write);
    out.push_str("</data:gcm></message>");
}

/// Upstream and receipts: `<message to="SENDER@gcm.googleapis.com"
/// from="devices@gcm.googleapis.com" type="normal"><gcm xmlns="google:mobile:data">JSON</gcm>
/// </message>`.
pub(crate) fn upstream_message(out: &mut String, sender_id: &str, json: &str) {
    out.push_str("<message to=\"");
    escape_attr(sender_id, out);
    out.push_str(
        "@gcm.googleapis.com\" from=\"devices@gcm.googleapis.com\" type=\"normal\">\
         <gcm xmlns=\"google:mobile:data\">",
    );
    escape_text(json, out);
    out.push_str("</gcm></message>");
}

/// A stanza error as CCS sent it ([protocol](crate::protocol#stanza-and-stream-errors)), built
/// by [`StanzaError::to_stanza`]:
/// `<message id=.. type="error" to=JID>[<gcm>echoed payload</gcm>]<error code=.. type="modify">
/// <CONDITION xmlns=stanzas/>[<text>]</error></message>`.
pub(crate) fn stanza_error(
    out: &mut String,
    id: Option<&str>,
    to: &str,
    code: u16,
    condition: &str,
    payload: Option<&str>,
    text: Option<&str>,
) {
    let error = StanzaError {
        id: id.map(str::to_string),
        message_id: None,
        code: Some(code),
        error_type: Some("modify".to_string()),
        condition: condition.to_string(),
        text: text.map(str::to_string),
    };
    let mut el = super::json::stanza_error_element(&error, payload);
    if !to.is_empty() {
        el.set_attr("to", to);
    }
    write_element(&el, NS_CLIENT, out);
}

/// Stanza error 400 bad-request for a downstream message CCS could not read: echoes the stanza
/// `id` and the `<gcm>` payload.
pub(crate) fn stanza_error_400(
    out: &mut String,
    id: Option<&str>,
    to: &str,
    payload: Option<&str>,
    text: &str,
) {
    stanza_error(out, id, to, 400, "bad-request", payload, Some(text));
}

/// Stanza error 406 not-acceptable for an ACK of a message not delivered on this connection:
/// echoes the stanza `id` and the ack's `<gcm>` payload, as the 400 does.
pub(crate) fn stanza_error_406(out: &mut String, id: Option<&str>, to: &str, payload: &str) {
    stanza_error(out, id, to, 406, "not-acceptable", Some(payload), None);
}

#[cfg(test)]
mod tests;
