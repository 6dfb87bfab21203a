//! What the emulator writes on the wire, byte for byte as CCS did (PROTOCOL.md §3, §4, §7, §9),
//! plus SASL PLAIN decoding and the random ids CCS hands out. Pure functions, no I/O.

use std::collections::hash_map::RandomState;
use std::fmt::Write as _;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;

use crate::xml::{escape_attr, escape_text};

pub(crate) const NS_STREAM: &str = "http://etherx.jabber.org/streams";
pub(crate) const NS_SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
pub(crate) const NS_BIND: &str = "urn:ietf:params:xml:ns:xmpp-bind";
pub(crate) const NS_SESSION: &str = "urn:ietf:params:xml:ns:xmpp-session";
pub(crate) const NS_GCM: &str = "google:mobile:data";
pub(crate) const NS_PING: &str = "urn:xmpp:ping";
pub(crate) const NS_ROSTER: &str = "jabber:iq:roster";

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
/// wrapped lines (PROTOCOL.md §13).
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

/// The user domains CCS accepted after `SENDER@` (PROTOCOL.md §3).
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
// JSON (the five server-side shapes; parsing always goes through miniserde)
// ---------------------------------------------------------------------------------------------

/// Appends `s` as a JSON string literal, quotes included.
pub(crate) fn json_str(out: &mut String, s: &str) {
    out.push('"');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let esc: &str = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        if esc.is_empty() {
            let _ = write!(out, "\\u{:04x}", b);
        } else {
            out.push_str(esc);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// `{"from":FROM,"message_id":ID,"message_type":"ack"}` as in Google's captures.
pub(crate) fn ack_json(out: &mut String, message_id: &str, from: &str) {
    out.push_str("{\"from\":");
    json_str(out, from);
    out.push_str(",\"message_id\":");
    json_str(out, message_id);
    out.push_str(",\"message_type\":\"ack\"}");
}

/// `{"message_type":"nack","message_id":ID,"from":FROM,"error":CODE,"error_description":TEXT}`.
pub(crate) fn nack_json(out: &mut String, message_id: &str, from: &str, code: &str, desc: &str) {
    out.push_str("{\"message_type\":\"nack\",\"message_id\":");
    json_str(out, message_id);
    out.push_str(",\"from\":");
    json_str(out, from);
    out.push_str(",\"error\":");
    json_str(out, code);
    out.push_str(",\"error_description\":");
    json_str(out, desc);
    out.push('}');
}

/// `{"message_type":"control","control_type":"CONNECTION_DRAINING"}` (no `message_id`).
pub(crate) fn draining_json(out: &mut String) {
    out.push_str("{\"message_type\":\"control\",\"control_type\":\"CONNECTION_DRAINING\"}");
}

/// A delivery receipt for `original_id`, sent to `token` (PROTOCOL.md §7).
pub(crate) fn receipt_json(
    out: &mut String,
    original_id: &str,
    token: &str,
    category: &str,
    sent_ms: u64,
) {
    out.push_str("{\"message_type\":\"receipt\",\"message_id\":");
    json_str(out, &receipt_id(original_id));
    out.push_str(",\"from\":\"gcm.googleapis.com\",\"category\":");
    json_str(out, category);
    out.push_str(
        ",\"data\":{\"message_status\":\"MESSAGE_SENT_TO_DEVICE\",\"original_message_id\":",
    );
    json_str(out, original_id);
    out.push_str(",\"device_registration_id\":");
    json_str(out, token);
    let _ = write!(
        out,
        ",\"message_sent_timestamp\":\"{sent_ms}\"}},\"time_to_live\":0}}"
    );
}

/// The id of the receipt for `original_id`: `dr2:<original>`.
pub(crate) fn receipt_id(original_id: &str) -> String {
    format!("dr2:{original_id}")
}

/// An upstream message from a device (PROTOCOL.md §7: no `message_type`).
pub(crate) fn upstream_json(
    out: &mut String,
    message_id: &str,
    from: &str,
    category: &str,
    data: &[(&str, &str)],
) {
    out.push_str("{\"category\":");
    json_str(out, category);
    out.push_str(",\"data\":{");
    for (i, (k, v)) in data.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        json_str(out, k);
        out.push(':');
        json_str(out, v);
    }
    out.push_str("},\"message_id\":");
    json_str(out, message_id);
    out.push_str(",\"from\":");
    json_str(out, from);
    out.push('}');
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
pub(crate) fn data_gcm_message(out: &mut String, json: &str) {
    out.push_str("<message><data:gcm xmlns:data=\"google:mobile:data\">");
    escape_text(json, out);
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

/// Stanza error 400 bad-request for a downstream message CCS could not read: echoes the stanza
/// `id` and the `<gcm>` payload (PROTOCOL.md §9).
pub(crate) fn stanza_error_400(
    out: &mut String,
    id: Option<&str>,
    to: &str,
    payload: &str,
    text: &str,
) {
    out.push_str("<message");
    opt_attr(out, "id", id);
    out.push_str(" type=\"error\"");
    opt_attr(out, "to", Some(to));
    out.push_str("><gcm xmlns=\"google:mobile:data\">");
    escape_text(payload, out);
    out.push_str(
        "</gcm><error code=\"400\" type=\"modify\">\
         <bad-request xmlns=\"urn:ietf:params:xml:ns:xmpp-stanzas\"/>\
         <text xmlns=\"urn:ietf:params:xml:ns:xmpp-stanzas\">",
    );
    escape_text(text, out);
    out.push_str("</text></error></message>");
}

/// Stanza error 406 not-acceptable for an ACK of a message not delivered on this connection.
pub(crate) fn stanza_error_406(out: &mut String, id: Option<&str>, to: &str) {
    out.push_str("<message type=\"error\"");
    opt_attr(out, "id", id);
    opt_attr(out, "to", Some(to));
    out.push_str(
        "><error code=\"406\" type=\"modify\">\
         <not-acceptable xmlns=\"urn:ietf:params:xml:ns:xmpp-stanzas\"/></error></message>",
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_ccs_format() {
        let a = stream_id();
        let b = stream_id();
        assert_eq!(a.len(), 16);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_digit() || (b'A'..=b'F').contains(&c)),
            "{a}"
        );
        assert_ne!(a, b);
        let s = resource_suffix();
        assert_eq!(s.len(), 8);
        assert!(
            s.bytes()
                .all(|c| c.is_ascii_digit() || (b'A'..=b'F').contains(&c)),
            "{s}"
        );
    }

    #[test]
    fn plain_three_encodings_accepted() {
        for (z, c) in [
            ("", "123@gcm.googleapis.com"),
            ("", "123@fcm.googleapis.com"),
            ("123@gcm.googleapis.com", "123"),
            ("123@fcm.googleapis.com", "123"),
        ] {
            let p = decode_plain(&encode_plain(z, c, "key")).unwrap();
            assert_eq!((p.authzid.as_str(), p.authcid.as_str()), (z, c));
            assert!(credentials_ok(&p, "123", "key"), "{z:?} {c:?}");
        }
    }

    #[test]
    fn plain_wrong_credentials_refused() {
        for (z, c, k) in [
            ("", "123@gcm.googleapis.com", "wrong"),
            ("", "999@gcm.googleapis.com", "key"),
            ("", "123@fcm-xmpp.googleapis.com", "key"),
            ("", "123", "key"),
            ("", "123@gcm.googleapis.com/res", "key"),
            ("123@gcm.googleapis.com", "999", "key"),
            ("123", "123", "key"),
            ("other@gcm.googleapis.com", "123@gcm.googleapis.com", "key"),
            ("", "", ""),
        ] {
            let p = decode_plain(&encode_plain(z, c, k)).unwrap();
            assert!(!credentials_ok(&p, "123", "key"), "{z:?} {c:?} {k:?}");
        }
    }

    #[test]
    fn plain_encoding_errors() {
        let good = encode_plain("", "123@gcm.googleapis.com", "key");
        let (a, b) = good.split_at(8);
        for bad in [
            format!("{a}\n{b}"),
            format!("{a}\r\n{b}"),
            format!("{good}\n"),
            format!(" {good}"),
            "not base64!".to_string(),
            String::new(),
            good.trim_end_matches('=').to_string() + "x",
        ] {
            assert_eq!(
                decode_plain(&bad),
                Err(PlainError::IncorrectEncoding),
                "{bad:?}"
            );
        }
        let two_parts = base64::engine::general_purpose::STANDARD.encode("a\0b");
        assert_eq!(decode_plain(&two_parts), Err(PlainError::Malformed));
        let four_parts = base64::engine::general_purpose::STANDARD.encode("a\0b\0c\0d");
        assert_eq!(decode_plain(&four_parts), Err(PlainError::Malformed));
        let not_utf8 = base64::engine::general_purpose::STANDARD.encode([0xff, 0, 0x41, 0, 0x42]);
        assert_eq!(decode_plain(&not_utf8), Err(PlainError::Malformed));
        assert_eq!(
            PlainError::IncorrectEncoding.condition(),
            "incorrect-encoding"
        );
    }

    #[test]
    fn json_strings_escape() {
        let mut s = String::new();
        json_str(&mut s, "a\"b\\c\nd\u{1}é<&>");
        assert_eq!(s, r#""a\"b\\c\nd\u0001é<&>""#);
        let v: miniserde::json::Value = miniserde::json::from_str(&s).unwrap();
        match v {
            miniserde::json::Value::String(t) => assert_eq!(t, "a\"b\\c\nd\u{1}é<&>"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn json_shapes() {
        let mut s = String::new();
        ack_json(&mut s, "m-1", "tok");
        assert_eq!(
            s,
            r#"{"from":"tok","message_id":"m-1","message_type":"ack"}"#
        );
        s.clear();
        nack_json(&mut s, "m-2", "tok", "BAD_REGISTRATION", "Invalid token");
        assert_eq!(
            s,
            r#"{"message_type":"nack","message_id":"m-2","from":"tok","error":"BAD_REGISTRATION","error_description":"Invalid token"}"#
        );
        s.clear();
        draining_json(&mut s);
        assert_eq!(
            s,
            r#"{"message_type":"control","control_type":"CONNECTION_DRAINING"}"#
        );
        s.clear();
        receipt_json(&mut s, "m-3", "tok", "com.example", 1_430_277_821_658);
        assert_eq!(
            s,
            r#"{"message_type":"receipt","message_id":"dr2:m-3","from":"gcm.googleapis.com","category":"com.example","data":{"message_status":"MESSAGE_SENT_TO_DEVICE","original_message_id":"m-3","device_registration_id":"tok","message_sent_timestamp":"1430277821658"},"time_to_live":0}"#
        );
        s.clear();
        upstream_json(
            &mut s,
            "up-1",
            "dev",
            "com.example",
            &[("k", "v"), ("a&b", "<c>")],
        );
        assert_eq!(
            s,
            r#"{"category":"com.example","data":{"k":"v","a&b":"<c>"},"message_id":"up-1","from":"dev"}"#
        );
        assert!(miniserde::json::from_str::<miniserde::json::Value>(&s).is_ok());
    }
}
