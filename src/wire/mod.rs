//! Every stanza the client writes, in one place: the stream header, SASL PLAIN
//! auth, resource bind, session, downstream messages, acks, pings, pongs, the
//! whitespace keepalive and the closing tag.
//!
//! Each function appends one complete stanza to a caller-owned buffer (nothing
//! else allocates), takes its namespaces from [`crate::ns`], and escapes every
//! value with [`crate::xml`]'s writer, which never writes a character XML 1.0
//! forbids. The exact bytes of each are pinned by the tests beside this file.

use crate::event::write_ack_json;
use crate::message::{Message, ACK_STANZA_ID_PREFIX};
use crate::ns;
use crate::xml::{append_json_text, escape_attr, escape_text};

/// The stanza `id` of our resource-bind request.
pub(crate) const BIND_ID: &str = "bind1";
/// The stanza `id` of our session request.
pub(crate) const SESSION_ID: &str = "sess1";
/// Ping ids are this prefix and a sequence number.
const PING_ID_PREFIX: &str = "ping";

/// Appends ` name="value"` with `value` escaped.
fn attr(out: &mut String, name: &str, value: &str) {
    out.push(' ');
    out.push_str(name);
    out.push_str("=\"");
    escape_attr(value, out);
    out.push('"');
}

/// Appends a decimal number.
fn number(out: &mut String, n: u64) {
    crate::json::write_u64(n, out);
}

/// `<stream:stream to="DOMAIN" version="1.0" xmlns="jabber:client"
/// xmlns:stream="http://etherx.jabber.org/streams">`, never self-closing.
pub(crate) fn stream_header(out: &mut String, domain: &str) {
    out.push_str("<stream:stream");
    attr(out, "to", domain);
    attr(out, "version", "1.0");
    attr(out, "xmlns", ns::CLIENT);
    attr(out, "xmlns:stream", ns::STREAM);
    out.push('>');
}

/// `<auth xmlns="urn:ietf:params:xml:ns:xmpp-sasl" mechanism="PLAIN">PAYLOAD</auth>`.
/// `payload` is the base64 blob (one line, no escaping needed); trace logs
/// redact everything between `<auth ...>` and `</auth>`.
pub(crate) fn auth_plain(out: &mut String, payload: &str) {
    out.push_str("<auth");
    attr(out, "xmlns", ns::SASL);
    attr(out, "mechanism", "PLAIN");
    out.push('>');
    escape_text(payload, out);
    out.push_str("</auth>");
}

/// Appends `<iq type="set" id="ID"><NAME xmlns="NS"` (the caller closes both).
fn iq_set(out: &mut String, id: &str, name: &str, ns: &str) {
    out.push_str("<iq");
    attr(out, "type", "set");
    attr(out, "id", id);
    out.push_str("><");
    out.push_str(name);
    attr(out, "xmlns", ns);
}

/// `<iq type="set" id="bind1"><bind xmlns="urn:ietf:params:xml:ns:xmpp-bind">
/// <resource>RESOURCE</resource></bind></iq>`.
pub(crate) fn bind(out: &mut String, resource: &str) {
    iq_set(out, BIND_ID, "bind", ns::BIND);
    out.push_str("><resource>");
    escape_text(resource, out);
    out.push_str("</resource></bind></iq>");
}

/// `<iq type="set" id="sess1"><session xmlns="urn:ietf:params:xml:ns:xmpp-session"/></iq>`.
pub(crate) fn session(out: &mut String) {
    iq_set(out, SESSION_ID, "session", ns::SESSION);
    out.push_str("/></iq>");
}

/// Appends `<gcm xmlns="google:mobile:data">JSON</gcm></message>` (the end of
/// every CCS message stanza).
fn gcm_payload(out: &mut String, json: &str) {
    out.push_str("<gcm");
    attr(out, "xmlns", ns::GCM);
    out.push('>');
    escape_text(json, out);
    out.push_str("</gcm></message>");
}

/// A downstream message: `<message id="MESSAGE_ID"><gcm
/// xmlns="google:mobile:data">JSON</gcm></message>`, the stanza id equal to
/// the JSON `message_id` so stanza errors can be matched. `json` is scratch
/// space (cleared, then reused). The message must have passed
/// [`Message::validate`].
pub(crate) fn message(out: &mut String, message: &Message, json: &mut String) {
    out.push_str("<message");
    attr(out, "id", message.id());
    out.push_str("><gcm");
    attr(out, "xmlns", ns::GCM);
    out.push('>');
    // Straight into `out`; escaped through `json` only if it holds `&`, `<` or `>`.
    append_json_text(out, json, |out| message.write_json(out));
    out.push_str("</gcm></message>");
}

/// The ack of an upstream message or receipt: `<message id="fx-ack-SEQ"><gcm
/// xmlns="google:mobile:data">{"to":TO,"message_id":ID,"message_type":"ack"}
/// </gcm></message>`.
///
/// The stanza id comes from a space of its own (downstream message ids may not
/// start with `fx-ack-`), so a stanza error about an ack can never be taken for
/// one about a downstream message. `json` is scratch space.
pub(crate) fn ack(out: &mut String, seq: u64, to: &str, message_id: &str, json: &mut String) {
    json.clear();
    write_ack_json(to, message_id, json);
    out.push_str("<message id=\"");
    out.push_str(ACK_STANZA_ID_PREFIX);
    number(out, seq);
    out.push_str("\">");
    gcm_payload(out, json);
}

/// An XEP-0199 ping to the server domain:
/// `<iq to="DOMAIN" id="pingSEQ" type="get"><ping xmlns="urn:xmpp:ping"/></iq>`.
pub(crate) fn ping(out: &mut String, domain: &str, seq: u64) {
    out.push_str("<iq");
    attr(out, "to", domain);
    out.push_str(" id=\"");
    out.push_str(PING_ID_PREFIX);
    number(out, seq);
    out.push('"');
    attr(out, "type", "get");
    out.push_str("><ping");
    attr(out, "xmlns", ns::PING);
    out.push_str("/></iq>");
}

/// The sequence number of one of our ping ids (`ping7` -> 7).
pub(crate) fn ping_seq(id: &str) -> Option<u64> {
    id.strip_prefix(PING_ID_PREFIX)?.parse().ok()
}

/// The answer to the server's ping `id`: `<iq type="result" id="ID" to="FROM"/>`
/// (`to` only when the ping named its sender).
pub(crate) fn pong(out: &mut String, id: &str, to: Option<&str>) {
    out.push_str("<iq");
    attr(out, "type", "result");
    attr(out, "id", id);
    if let Some(to) = to {
        attr(out, "to", to);
    }
    out.push_str("/>");
}

/// The XMPP whitespace keepalive: one space.
pub(crate) fn keepalive(out: &mut String) {
    out.push(' ');
}

/// The end of our stream: `</stream:stream>`.
pub(crate) fn close(out: &mut String) {
    out.push_str("</stream:stream>");
}

#[cfg(test)]
mod tests;
