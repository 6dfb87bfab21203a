//! Server-to-client events (protocol: [server messages](crate::protocol#server-messages),
//! [NACK codes](crate::protocol#nack-codes),
//! [stanza errors](crate::protocol#stanza-and-stream-errors), [acks](crate::protocol#acks)).
//!
//! [`Event::from_stanza`] turns a `<message>` stanza into an [`Event`];
//! [`Event::from_json`] does the same for the JSON inside `<gcm>`.
//! [`write_ack_json`] is the one place that builds the acks we send.
//!
//! ```
//! use fcm_xmpp::{Event, NackCode, RetryClass};
//!
//! let ev = Event::from_json(
//!     r#"{"message_type":"nack","message_id":"m-1","from":"tok","error":"DEVICE_UNREGISTERED"}"#,
//! ).unwrap();
//! let nack = ev.as_nack().unwrap();
//! assert_eq!(nack.code, NackCode::DeviceUnregistered);
//! assert_eq!(nack.code.retry_class(), RetryClass::Final);
//! ```

use std::collections::BTreeMap;
use std::fmt;

use miniserde::json::{Number, Object, Value};

use crate::error::ProtocolError;
use crate::json::{self, FieldError};
use crate::xml::Element;

use crate::ns::{CLIENT as NS_CLIENT, GCM as NS_GCM, STANZAS as NS_STANZAS};
/// The `message_id` prefix of delivery receipts.
const RECEIPT_PREFIX: &str = "dr2:";

/// A NACK error code, typed, with unknown codes kept by name.
///
/// What to do with each is in [`NackCode::retry_class`] and
/// [protocol: NACK codes](crate::protocol#nack-codes).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NackCode {
    /// `SERVICE_UNAVAILABLE`: CCS is overloaded. Retry on the same connection
    /// with exponential backoff (from 1 s, with jitter, capped).
    ServiceUnavailable,
    /// `INTERNAL_SERVER_ERROR`: a CCS fault. Retry on the same connection with
    /// exponential backoff.
    InternalServerError,
    /// `CONNECTION_DRAINING`: this connection is closing. Resend at once on a
    /// new connection and send nothing new on this one.
    ConnectionDraining,
    /// `DEVICE_MESSAGE_RATE_EXCEEDED`: too many messages to this device. Do not
    /// retry now; back off for this target only, never stall other targets.
    DeviceMessageRateExceeded,
    /// `TOPICS_MESSAGE_RATE_EXCEEDED`: too many messages to this topic. Do not
    /// retry now; back off for this topic only.
    TopicsMessageRateExceeded,
    /// `QUOTA_EXCEEDED` (legacy): treat like `DEVICE_MESSAGE_RATE_EXCEEDED`.
    QuotaExceeded,
    /// `BAD_REGISTRATION`: the token is invalid or belongs to another sender.
    /// Do not retry; stop using the token.
    BadRegistration,
    /// `DEVICE_UNREGISTERED`: the app was uninstalled or the token expired. Do
    /// not retry; delete the token.
    DeviceUnregistered,
    /// `INVALID_JSON`: a bad field type, reserved key, bad TTL, missing target
    /// or oversized payload. Do not retry; fix the request.
    InvalidJson,
    /// `BAD_ACK`: an ack we sent was malformed. A protocol bug in this client:
    /// log loudly and report it.
    BadAck,
    /// `INVALID_APNS_CREDENTIAL` (unconfirmed): the APNs certificate/key for
    /// the iOS app is missing or wrong. Do not retry; fix the project config.
    InvalidApnsCredential,
    /// Any other code, kept as sent; retried like `INTERNAL_SERVER_ERROR`.
    Other(String),
}

impl NackCode {
    /// The code as CCS writes it, e.g. `DEVICE_UNREGISTERED`.
    pub fn as_str(&self) -> &str {
        match self {
            NackCode::ServiceUnavailable => "SERVICE_UNAVAILABLE",
            NackCode::InternalServerError => "INTERNAL_SERVER_ERROR",
            NackCode::ConnectionDraining => "CONNECTION_DRAINING",
            NackCode::DeviceMessageRateExceeded => "DEVICE_MESSAGE_RATE_EXCEEDED",
            NackCode::TopicsMessageRateExceeded => "TOPICS_MESSAGE_RATE_EXCEEDED",
            NackCode::QuotaExceeded => "QUOTA_EXCEEDED",
            NackCode::BadRegistration => "BAD_REGISTRATION",
            NackCode::DeviceUnregistered => "DEVICE_UNREGISTERED",
            NackCode::InvalidJson => "INVALID_JSON",
            NackCode::BadAck => "BAD_ACK",
            NackCode::InvalidApnsCredential => "INVALID_APNS_CREDENTIAL",
            NackCode::Other(code) => code,
        }
    }

    /// Types a code as CCS writes it (exact, case-sensitive); anything else
    /// becomes [`NackCode::Other`].
    pub fn from_code(code: &str) -> NackCode {
        match code {
            "SERVICE_UNAVAILABLE" => NackCode::ServiceUnavailable,
            "INTERNAL_SERVER_ERROR" => NackCode::InternalServerError,
            "CONNECTION_DRAINING" => NackCode::ConnectionDraining,
            "DEVICE_MESSAGE_RATE_EXCEEDED" => NackCode::DeviceMessageRateExceeded,
            "TOPICS_MESSAGE_RATE_EXCEEDED" => NackCode::TopicsMessageRateExceeded,
            "QUOTA_EXCEEDED" => NackCode::QuotaExceeded,
            "BAD_REGISTRATION" => NackCode::BadRegistration,
            "DEVICE_UNREGISTERED" => NackCode::DeviceUnregistered,
            "INVALID_JSON" => NackCode::InvalidJson,
            "BAD_ACK" => NackCode::BadAck,
            "INVALID_APNS_CREDENTIAL" => NackCode::InvalidApnsCredential,
            other => NackCode::Other(other.to_owned()),
        }
    }

    /// How a message NACKed with this code may be retried
    /// ([protocol: NACK codes](crate::protocol#nack-codes)).
    pub fn retry_class(&self) -> RetryClass {
        match self {
            NackCode::ServiceUnavailable | NackCode::InternalServerError | NackCode::Other(_) => {
                RetryClass::Backoff
            }
            NackCode::ConnectionDraining => RetryClass::NewConnection,
            NackCode::DeviceMessageRateExceeded
            | NackCode::TopicsMessageRateExceeded
            | NackCode::QuotaExceeded => RetryClass::RateLimited,
            NackCode::BadRegistration
            | NackCode::DeviceUnregistered
            | NackCode::InvalidJson
            | NackCode::BadAck
            | NackCode::InvalidApnsCredential => RetryClass::Final,
        }
    }

    /// True if the message should be resent automatically: [`RetryClass::Backoff`]
    /// or [`RetryClass::NewConnection`]. Rate-limited codes are not: they are
    /// not retried now (see [`RetryClass::RateLimited`]).
    pub fn is_retryable(&self) -> bool {
        self.retry_class().is_retryable()
    }
}

impl fmt::Display for NackCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a NACKed message may be retried
/// ([protocol: NACK codes](crate::protocol#nack-codes)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RetryClass {
    /// Retry on the same connection with exponential backoff.
    Backoff,
    /// Retry at once on a new connection (this one is draining).
    NewConnection,
    /// The target is throttled: do not retry now; never stall other targets.
    RateLimited,
    /// Do not retry: fix the request, the token or the configuration.
    Final,
}

impl RetryClass {
    /// True for [`RetryClass::Backoff`] and [`RetryClass::NewConnection`].
    pub fn is_retryable(self) -> bool {
        matches!(self, RetryClass::Backoff | RetryClass::NewConnection)
    }
}

/// An ACK: CCS accepted the message.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Ack {
    /// The acked message id.
    pub message_id: String,
    /// The target the message was sent to.
    pub from: Option<String>,
    /// The canonical registration token to store instead of `from`, if CCS sent one.
    pub registration_id: Option<String>,
}

/// A NACK: CCS refused the message.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Nack {
    /// The refused message id.
    pub message_id: String,
    /// The target the message was sent to.
    pub from: Option<String>,
    /// The typed error code.
    pub code: NackCode,
    /// CCS's free-text `error_description`.
    pub description: Option<String>,
}

/// An upstream message from a device.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Upstream {
    /// The device's registration token.
    pub from: String,
    /// The app's package name / bundle id.
    pub category: Option<String>,
    /// The upstream message id (ack it with this id).
    pub message_id: String,
    /// The data payload (non-string JSON values kept as their JSON text).
    pub data: BTreeMap<String, String>,
    /// `time_to_live`, if the device set one.
    pub time_to_live: Option<u64>,
}

/// A delivery receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Receipt {
    /// The receipt's own id, `dr2:<original>`; ack it with this id.
    pub message_id: String,
    /// Who sent the receipt (`gcm.googleapis.com`); the ack goes `to` it.
    pub from: String,
    /// The id of the downstream message this receipt is for.
    pub original_message_id: String,
    /// `message_status`, e.g. `MESSAGE_SENT_TO_DEVICE`.
    pub status: String,
    /// The device token the message went to.
    pub device_registration_id: Option<String>,
    /// When the message reached the device, epoch milliseconds.
    pub sent_timestamp: Option<u64>,
    /// The app's package name.
    pub category: Option<String>,
}

/// What a control message announces.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ControlKind {
    /// `CONNECTION_DRAINING`: open a new connection; stop sending on this one.
    ConnectionDraining,
    /// Any other `control_type`, kept as sent (log and ignore it).
    Other(String),
}

impl ControlKind {
    /// The `control_type` as CCS writes it.
    pub fn as_str(&self) -> &str {
        match self {
            ControlKind::ConnectionDraining => "CONNECTION_DRAINING",
            ControlKind::Other(t) => t,
        }
    }

    /// Types a `control_type`; anything but `CONNECTION_DRAINING` is `Other`.
    pub fn from_type(control_type: &str) -> ControlKind {
        match control_type {
            "CONNECTION_DRAINING" => ControlKind::ConnectionDraining,
            other => ControlKind::Other(other.to_owned()),
        }
    }
}

impl fmt::Display for ControlKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A control message.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Control {
    /// What it announces.
    pub kind: ControlKind,
}

/// A stanza-level error (e.g. 400 bad-request for a missing `message_id`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StanzaError {
    /// The stanza `id` attribute echoed back (equal to our `message_id`).
    pub id: Option<String>,
    /// The `message_id` from the echoed `<gcm>` JSON, if parseable.
    pub message_id: Option<String>,
    /// The legacy numeric `code` attribute (400, 406, ...).
    pub code: Option<u16>,
    /// The error `type` attribute (`modify`, `cancel`, ...).
    pub error_type: Option<String>,
    /// The defined condition element name (`bad-request`, ...).
    pub condition: String,
    /// The `<text>` content.
    pub text: Option<String>,
}

impl StanzaError {
    /// The id of the message this error is about: the echoed JSON
    /// `message_id`, else the stanza `id`.
    pub fn target_message_id(&self) -> Option<&str> {
        self.message_id.as_deref().or(self.id.as_deref())
    }

    /// Builds the `<message type="error">` stanza CCS would send (for the
    /// emulator): the `id` attribute, the echoed `<gcm>` payload, then
    /// `<error code type><condition/><text/></error>`.
    ///
    /// `echoed_payload` is the client's JSON to echo; when `None`, a minimal
    /// `{"message_id":...}` is echoed if [`StanzaError::message_id`] is set.
    pub fn to_stanza(&self, echoed_payload: Option<&str>) -> Element {
        let mut msg = Element::new("message", NS_CLIENT);
        if let Some(id) = &self.id {
            msg = msg.with_attr("id", id.as_str());
        }
        msg = msg.with_attr("type", "error");
        let echo = match (echoed_payload, &self.message_id) {
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
        if let Some(code) = self.code {
            err = err.with_attr("code", code.to_string());
        }
        if let Some(t) = &self.error_type {
            err = err.with_attr("type", t.as_str());
        }
        err = err.with_child(Element::new(self.condition.as_str(), NS_STANZAS));
        if let Some(text) = &self.text {
            err = err.with_child(Element::new("text", NS_STANZAS).with_text(text.as_str()));
        }
        msg.with_child(err)
    }
}

/// A `<gcm>` payload with a `message_type` this crate does not know (kept, never dropped).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct UnknownMessage {
    /// The `message_type` value.
    pub message_type: String,
    /// The whole JSON text.
    pub json: String,
}

/// Something the server sent.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// An upstream message from a device (needs an ack).
    Upstream(Upstream),
    /// A downstream message was accepted.
    Ack(Ack),
    /// A downstream message was refused.
    Nack(Nack),
    /// A delivery receipt (needs an ack).
    Receipt(Receipt),
    /// A control message (draining).
    Control(Control),
    /// A stanza error.
    StanzaError(StanzaError),
    /// A payload with an unknown `message_type`.
    Unknown(UnknownMessage),
}

/// Appends the one and only ack JSON this crate sends (protocol:
/// [stanza errors](crate::protocol#stanza-and-stream-errors), [acks](crate::protocol#acks)):
/// exactly `{"to":"<to>","message_id":"<message_id>","message_type":"ack"}`,
/// with JSON escaping.
///
/// A mistyped ack (e.g. a wrong `message_type` key) would be taken by CCS as
/// a new downstream message and reach the device as an empty push, so every
/// ack goes through here. For an upstream message `to` is the device token
/// and `message_id` its id; for a receipt `to` is the receipt's `from`
/// (`gcm.googleapis.com`) and `message_id` the full `dr2:` id. See
/// [`Event::ack_target`].
pub fn write_ack_json(to: &str, message_id: &str, out: &mut String) {
    out.push_str("{\"to\":");
    json::write_str(to, out);
    out.push_str(",\"message_id\":");
    json::write_str(message_id, out);
    out.push_str(",\"message_type\":\"ack\"}");
}

/// Converts a field error into the protocol error for a bad payload.
fn bad(e: FieldError) -> ProtocolError {
    ProtocolError::BadPayload {
        detail: e.to_string(),
    }
}

/// An informational field: a wrong type is logged and dropped rather than
/// failing the whole event (see [`Event::from_json`]).
fn lenient<T>(r: Result<Option<T>, FieldError>, what: &str) -> Option<T> {
    r.unwrap_or_else(|e| {
        log::debug!("ignoring malformed {what} {e}");
        None
    })
}

fn owned(s: Option<&str>) -> Option<String> {
    s.map(str::to_owned)
}

impl Event {
    /// Parses the JSON inside a `<gcm>` element (surrounding whitespace and
    /// newlines allowed) and classifies it by `message_type`: `ack`, `nack`,
    /// `receipt`, `control`, absent = upstream, anything else
    /// [`Event::Unknown`] (kept, never dropped).
    ///
    /// Required fields: `message_id` (all but control), `from` (upstream and
    /// receipt), `control_type` (control); `data` must be an object when
    /// present. Other fields are informational: a wrong JSON type there is
    /// dropped with a `debug` log instead of failing the event, because an
    /// event that fails to parse is never acked and CCS would redeliver it
    /// forever. A nack without `error` gets `NackCode::Other("")` (retried like
    /// an unknown code). Receipt timestamps may be a string or a number of
    /// epoch milliseconds; a missing `original_message_id` is taken from
    /// `message_id` minus `dr2:`. Never panics.
    ///
    /// # Errors
    ///
    /// [`ProtocolError::BadPayload`] naming the field or saying the text is
    /// not a JSON object.
    pub fn from_json(text: &str) -> Result<Event, ProtocolError> {
        let text = text.trim();
        let obj = json::parse_object(text).map_err(|e| ProtocolError::BadPayload {
            detail: format!("gcm payload is {e}"),
        })?;
        Event::from_object(&obj, text)
    }

    /// Classifies a parsed payload; `text` is kept for [`Event::Unknown`].
    fn from_object(obj: &Object, text: &str) -> Result<Event, ProtocolError> {
        let message_type = json::opt_str(obj, "message_type").map_err(bad)?;
        match message_type {
            None => parse_upstream(obj).map(Event::Upstream),
            Some("ack") => Ok(Event::Ack(Ack {
                message_id: json::req_str(obj, "message_id").map_err(bad)?.to_owned(),
                from: owned(lenient(json::opt_str(obj, "from"), "ack")),
                registration_id: owned(lenient(json::opt_str(obj, "registration_id"), "ack")),
            })),
            Some("nack") => {
                let code = match obj.get("error") {
                    None | Some(Value::Null) => NackCode::Other(String::new()),
                    Some(Value::String(s)) => NackCode::from_code(s),
                    Some(other) => NackCode::Other(json::to_text(other)),
                };
                Ok(Event::Nack(Nack {
                    message_id: json::req_str(obj, "message_id").map_err(bad)?.to_owned(),
                    from: owned(lenient(json::opt_str(obj, "from"), "nack")),
                    code,
                    description: owned(lenient(json::opt_str(obj, "error_description"), "nack")),
                }))
            }
            Some("receipt") => parse_receipt(obj).map(Event::Receipt),
            Some("control") => Ok(Event::Control(Control {
                kind: ControlKind::from_type(json::req_str(obj, "control_type").map_err(bad)?),
            })),
            Some(other) => Ok(Event::Unknown(UnknownMessage {
                message_type: other.to_owned(),
                json: text.to_owned(),
            })),
        }
    }

    /// Turns a stanza from the server into an event.
    ///
    /// - not a `<message>` in `jabber:client` (pongs, other iq, presence):
    ///   `Ok(None)`;
    /// - `type="error"`: [`Event::StanzaError`] with the stanza `id`, the
    ///   `<error>` `code` and `type`, the first condition element (in
    ///   `urn:ietf:params:xml:ns:xmpp-stanzas`, other than `text`;
    ///   `undefined-condition` if none), the `<text>`, and the `message_id`
    ///   of the echoed `<gcm>` JSON if it parses;
    /// - otherwise the child `gcm` in namespace `google:mobile:data`,
    ///   selected by namespace and local name whatever its prefix, through
    ///   [`Event::from_json`].
    ///
    /// # Errors
    ///
    /// [`ProtocolError::MissingPayload`] for a message without that `<gcm>`
    /// child; [`ProtocolError::BadPayload`] from [`Event::from_json`].
    pub fn from_stanza(el: &Element) -> Result<Option<Event>, ProtocolError> {
        if !el.is("message", NS_CLIENT) {
            return Ok(None);
        }
        if el.attr("type") == Some("error") {
            return Ok(Some(Event::StanzaError(parse_stanza_error(el))));
        }
        match el.child("gcm", NS_GCM) {
            Some(gcm) => Event::from_json(&gcm.text()).map(Some),
            None => Err(ProtocolError::MissingPayload),
        }
    }

    /// The JSON CCS would send inside `<gcm>` for this event (for the emulator).
    pub fn to_json(&self) -> String {
        let mut out = String::with_capacity(160);
        self.write_json(&mut out);
        out
    }

    /// Appends the JSON CCS would send inside `<gcm>` for this event:
    ///
    /// - ack: `from`, `message_id`, `registration_id` if set, `message_type`;
    /// - nack: `from`, `message_id`, `error`, `error_description` if set,
    ///   `message_type`;
    /// - receipt: `message_type`, `message_id`, `from`, `category`, `data`
    ///   with `message_status`, `original_message_id`,
    ///   `device_registration_id` and `message_sent_timestamp` (a string),
    ///   then `time_to_live: 0` ([protocol](crate::protocol#server-messages));
    /// - control: `message_type`, `control_type`;
    /// - upstream: `from`, `category`, `message_id`, `data` (all strings),
    ///   `time_to_live`; no `message_type`;
    /// - unknown: its JSON text as received;
    /// - stanza error (not a `<gcm>` payload; see [`StanzaError::to_stanza`]):
    ///   the echo stub `{"message_id":...}`, or `{}`.
    pub fn write_json(&self, out: &mut String) {
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
        match self {
            Event::Unknown(u) => {
                out.push_str(&u.json);
                return;
            }
            Event::Ack(a) => {
                out.push('{');
                opt("from", &a.from, f, out);
                field("message_id", &a.message_id, f, out);
                opt("registration_id", &a.registration_id, f, out);
                field("message_type", "ack", f, out);
            }
            Event::Nack(n) => {
                out.push('{');
                opt("from", &n.from, f, out);
                field("message_id", &n.message_id, f, out);
                field("error", n.code.as_str(), f, out);
                opt("error_description", &n.description, f, out);
                field("message_type", "nack", f, out);
            }
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

    /// The `(to, message_id)` to ack this event with via [`write_ack_json`]:
    /// for [`Event::Upstream`] the device token and its id, for
    /// [`Event::Receipt`] the receipt's `from` and its full `dr2:` id; `None`
    /// for everything else (never ack acks, nacks or control messages).
    pub fn ack_target(&self) -> Option<(&str, &str)> {
        match self {
            Event::Upstream(u) => Some((&u.from, &u.message_id)),
            Event::Receipt(r) => Some((&r.from, &r.message_id)),
            _ => None,
        }
    }

    /// True for events we must ack (upstream messages and receipts).
    pub fn needs_ack(&self) -> bool {
        self.ack_target().is_some()
    }

    /// The message id this event carries or is about: the upstream/receipt
    /// id (`dr2:...` for receipts), the acked/nacked id, and for a stanza error
    /// the echoed JSON `message_id`, else the stanza `id`. `None` for control
    /// and unknown messages.
    pub fn message_id(&self) -> Option<&str> {
        match self {
            Event::Upstream(u) => Some(&u.message_id),
            Event::Ack(a) => Some(&a.message_id),
            Event::Nack(n) => Some(&n.message_id),
            Event::Receipt(r) => Some(&r.message_id),
            Event::StanzaError(e) => e.target_message_id(),
            Event::Control(_) | Event::Unknown(_) => None,
        }
    }

    /// The id of the downstream message this event settles: the acked or
    /// nacked id, or the stanza error's message id. `None` otherwise
    /// (receipts arrive after their message was acked).
    pub fn settled_message_id(&self) -> Option<&str> {
        match self {
            Event::Ack(_) | Event::Nack(_) | Event::StanzaError(_) => self.message_id(),
            _ => None,
        }
    }

    /// True for a control `CONNECTION_DRAINING` or a nack with that code: stop
    /// sending on this connection and open a new one
    /// ([protocol: draining](crate::protocol#draining)).
    pub fn is_connection_draining(&self) -> bool {
        match self {
            Event::Control(c) => c.kind == ControlKind::ConnectionDraining,
            Event::Nack(n) => n.code == NackCode::ConnectionDraining,
            _ => false,
        }
    }
}

macro_rules! event_helpers {
    ($($variant:ident($ty:ty): $is:ident, $as_:ident, $into:ident, $what:literal;)*) => {
        impl Event {
            $(
                #[doc = concat!("True if this is ", $what, ".")]
                pub fn $is(&self) -> bool {
                    matches!(self, Event::$variant(_))
                }

                #[doc = concat!("The payload if this is ", $what, ".")]
                pub fn $as_(&self) -> Option<&$ty> {
                    match self {
                        Event::$variant(v) => Some(v),
                        _ => None,
                    }
                }

                #[doc = concat!("The payload if this is ", $what, ", else the event back.")]
                ///
                /// # Errors
                ///
                /// Returns `self` unchanged for any other kind of event.
                // Handing the event back is the point; boxing it would allocate
                // on every miss to save stack space the caller already has.
                #[allow(clippy::result_large_err)]
                pub fn $into(self) -> Result<$ty, Event> {
                    match self {
                        Event::$variant(v) => Ok(v),
                        other => Err(other),
                    }
                }
            )*
        }
    };
}

event_helpers! {
    Upstream(Upstream): is_upstream, as_upstream, into_upstream, "an upstream message";
    Ack(Ack): is_ack, as_ack, into_ack, "an ack";
    Nack(Nack): is_nack, as_nack, into_nack, "a nack";
    Receipt(Receipt): is_receipt, as_receipt, into_receipt, "a delivery receipt";
    Control(Control): is_control, as_control, into_control, "a control message";
    StanzaError(StanzaError): is_stanza_error, as_stanza_error, into_stanza_error, "a stanza error";
    Unknown(UnknownMessage): is_unknown, as_unknown, into_unknown, "a payload of unknown type";
}

fn parse_upstream(obj: &Object) -> Result<Upstream, ProtocolError> {
    let from = json::req_str(obj, "from").map_err(bad)?.to_owned();
    let message_id = json::req_str(obj, "message_id").map_err(bad)?.to_owned();
    let mut data = BTreeMap::new();
    if let Some(d) = json::opt_object(obj, "data").map_err(bad)? {
        for (k, v) in d.iter() {
            let text = match v {
                Value::String(s) => s.clone(),
                other => json::to_text(other),
            };
            data.insert(k.clone(), text);
        }
    }
    Ok(Upstream {
        from,
        category: owned(lenient(json::opt_str(obj, "category"), "upstream")),
        message_id,
        data,
        time_to_live: lenient(json::opt_u64(obj, "time_to_live", u64::MAX), "upstream"),
    })
}

fn parse_receipt(obj: &Object) -> Result<Receipt, ProtocolError> {
    let message_id = json::req_str(obj, "message_id").map_err(bad)?.to_owned();
    let from = json::req_str(obj, "from").map_err(bad)?.to_owned();
    let category = owned(lenient(json::opt_str(obj, "category"), "receipt"));
    let empty = Object::new();
    let data = lenient(json::opt_object(obj, "data"), "receipt").unwrap_or(&empty);
    let s = |field: &'static str| owned(lenient(json::opt_str(data, field), "receipt data"));
    let original_message_id = s("original_message_id").unwrap_or_else(|| {
        message_id
            .strip_prefix(RECEIPT_PREFIX)
            .unwrap_or(&message_id)
            .to_owned()
    });
    let sent_timestamp = match data.get("message_sent_timestamp") {
        None | Some(Value::Null) => None,
        Some(Value::String(t)) => match t.trim().parse::<u64>() {
            Ok(ms) => Some(ms),
            Err(_) => {
                log::debug!("ignoring unparsable receipt message_sent_timestamp {t:?}");
                None
            }
        },
        Some(Value::Number(Number::U64(ms))) => Some(*ms),
        Some(other) => {
            log::debug!(
                "ignoring receipt message_sent_timestamp of type {}",
                json::kind(other)
            );
            None
        }
    };
    Ok(Receipt {
        message_id,
        from,
        original_message_id,
        status: s("message_status").unwrap_or_default(),
        device_registration_id: s("device_registration_id"),
        sent_timestamp,
        category,
    })
}

fn parse_stanza_error(el: &Element) -> StanzaError {
    let message_id = el.child("gcm", NS_GCM).and_then(|gcm| {
        let obj = json::parse_object(&gcm.text()).ok()?;
        json::opt_str(&obj, "message_id")
            .ok()
            .flatten()
            .map(str::to_owned)
    });
    // `<error>` inherits the stanza's namespace; accept it by local name.
    let error = el
        .child("error", el.ns())
        .or_else(|| el.child_named("error"));
    let (code, error_type, condition, text) = match error {
        None => (None, None, None, None),
        Some(err) => (
            err.attr("code").and_then(|c| c.trim().parse::<u16>().ok()),
            err.attr("type").map(str::to_owned),
            err.children()
                .find(|c| c.ns() == NS_STANZAS && c.name() != "text")
                .map(|c| c.name().to_owned()),
            err.child("text", NS_STANZAS).map(Element::text),
        ),
    };
    StanzaError {
        id: el.attr("id").map(str::to_owned),
        message_id,
        code,
        error_type,
        condition: condition.unwrap_or_else(|| "undefined-condition".to_owned()),
        text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL_CODES: [(&str, RetryClass); 11] = [
        ("SERVICE_UNAVAILABLE", RetryClass::Backoff),
        ("INTERNAL_SERVER_ERROR", RetryClass::Backoff),
        ("CONNECTION_DRAINING", RetryClass::NewConnection),
        ("DEVICE_MESSAGE_RATE_EXCEEDED", RetryClass::RateLimited),
        ("TOPICS_MESSAGE_RATE_EXCEEDED", RetryClass::RateLimited),
        ("QUOTA_EXCEEDED", RetryClass::RateLimited),
        ("BAD_REGISTRATION", RetryClass::Final),
        ("DEVICE_UNREGISTERED", RetryClass::Final),
        ("INVALID_JSON", RetryClass::Final),
        ("BAD_ACK", RetryClass::Final),
        ("INVALID_APNS_CREDENTIAL", RetryClass::Final),
    ];

    fn ev(text: &str) -> Event {
        Event::from_json(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn bad_detail(text: &str) -> String {
        match Event::from_json(text) {
            Err(ProtocolError::BadPayload { detail }) => detail,
            other => panic!("{:.60}: expected BadPayload, got {other:?}", text),
        }
    }

    fn ack(to: &str, id: &str) -> String {
        let mut out = String::new();
        write_ack_json(to, id, &mut out);
        out
    }

    #[test]
    fn every_nack_code_is_typed_classified_and_round_trips() {
        for (code, class) in ALL_CODES {
            let typed = NackCode::from_code(code);
            assert!(!matches!(typed, NackCode::Other(_)), "{code}");
            assert_eq!(typed.as_str(), code);
            assert_eq!(typed.to_string(), code);
            assert_eq!(typed.retry_class(), class, "{code}");
            assert_eq!(
                typed.is_retryable(),
                matches!(class, RetryClass::Backoff | RetryClass::NewConnection)
            );
            let text = format!(
                r#"{{"message_type":"nack","message_id":"m-1","from":"tok","error":"{code}","error_description":"d"}}"#
            );
            let e = ev(&text);
            assert_eq!(e.as_nack().unwrap().code, typed);
            assert_eq!(Event::from_json(&e.to_json()).unwrap(), e);
        }
        assert!(NackCode::ServiceUnavailable.is_retryable());
        assert!(NackCode::ConnectionDraining.is_retryable());
        assert!(!NackCode::DeviceMessageRateExceeded.is_retryable());
        assert!(!NackCode::DeviceUnregistered.is_retryable());
    }

    #[test]
    fn unknown_nack_code_is_kept_and_backs_off() {
        let code = NackCode::from_code("SOMETHING_NEW");
        assert_eq!(code, NackCode::Other("SOMETHING_NEW".into()));
        assert_eq!(code.as_str(), "SOMETHING_NEW");
        assert_eq!(code.retry_class(), RetryClass::Backoff);
        assert!(code.is_retryable());
        // Case matters: CCS codes are upper case.
        assert!(matches!(NackCode::from_code("bad_ack"), NackCode::Other(_)));
        let e = ev(r#"{"message_type":"nack","message_id":"m","error":"SOMETHING_NEW"}"#);
        assert_eq!(e.as_nack().unwrap().code, code);
        assert_eq!(Event::from_json(&e.to_json()).unwrap(), e);
    }

    #[test]
    fn nack_fields_and_leniency() {
        let e = ev(
            r#"{"message_type":"nack","message_id":"m-7","from":"tok","error":"INVALID_JSON",
              "error_description":"InvalidJson: JSON_TYPE_ERROR : Field \"time_to_live\" must be a JSON java.lang.Number: abc"}"#,
        );
        let n = e.as_nack().unwrap();
        assert_eq!(n.message_id, "m-7");
        assert_eq!(n.from.as_deref(), Some("tok"));
        assert_eq!(n.code, NackCode::InvalidJson);
        assert!(n
            .description
            .as_deref()
            .unwrap()
            .starts_with("InvalidJson: JSON_TYPE_ERROR"));
        let e = ev(r#"{"message_type":"nack","message_id":"m"}"#);
        assert_eq!(e.as_nack().unwrap().code, NackCode::Other(String::new()));
        assert_eq!(e.as_nack().unwrap().code.retry_class(), RetryClass::Backoff);
        let e = ev(r#"{"message_type":"nack","message_id":"m","error":5,"from":7}"#);
        assert_eq!(e.as_nack().unwrap().code, NackCode::Other("5".into()));
        assert_eq!(e.as_nack().unwrap().from, None);
        assert!(bad_detail(r#"{"message_type":"nack","error":"BAD_ACK"}"#).contains("message_id"));
    }

    #[test]
    fn ack_fields() {
        let e = ev(r#"{"from":"tok","message_id":"m-1","message_type":"ack"}"#);
        assert!(e.is_ack());
        let a = e.as_ack().unwrap();
        assert_eq!(
            (a.message_id.as_str(), a.from.as_deref()),
            ("m-1", Some("tok"))
        );
        assert_eq!(a.registration_id, None);
        assert_eq!(e.message_id(), Some("m-1"));
        assert_eq!(e.settled_message_id(), Some("m-1"));
        assert!(!e.needs_ack());
        assert_eq!(e.ack_target(), None);
        let e = ev(r#"{"message_type":"ack","message_id":"m-2","registration_id":"canon"}"#);
        assert_eq!(
            e.as_ack().unwrap().registration_id.as_deref(),
            Some("canon")
        );
        assert_eq!(e.as_ack().unwrap().from, None);
        let d = bad_detail(r#"{"from":"tok","message_type":"ack"}"#);
        assert!(d.contains("`message_id`") && d.contains("missing"), "{d}");
        let d = bad_detail(r#"{"message_id":7,"message_type":"ack"}"#);
        assert!(d.contains("`message_id`"), "{d}");
    }

    #[test]
    fn receipt_fields() {
        let text = r#"{"category":"com.example.app","data":{"message_status":"MESSAGE_SENT_TO_DEVICE",
            "original_message_id":"m-1366082849205","device_registration_id":"REG",
            "message_sent_timestamp":"1430277821658"},"message_id":"dr2:m-1366082849205",
            "message_type":"receipt","time_to_live":0,"from":"gcm.googleapis.com"}"#;
        let e = ev(text);
        assert!(e.is_receipt() && e.needs_ack());
        let r = e.as_receipt().unwrap();
        assert_eq!(r.message_id, "dr2:m-1366082849205");
        assert_eq!(r.from, "gcm.googleapis.com");
        assert_eq!(r.original_message_id, "m-1366082849205");
        assert_eq!(r.status, "MESSAGE_SENT_TO_DEVICE");
        assert_eq!(r.device_registration_id.as_deref(), Some("REG"));
        assert_eq!(r.sent_timestamp, Some(1_430_277_821_658));
        assert_eq!(r.category.as_deref(), Some("com.example.app"));
        assert_eq!(
            e.ack_target(),
            Some(("gcm.googleapis.com", "dr2:m-1366082849205"))
        );
        assert_eq!(e.settled_message_id(), None);
        // Timestamp as a number; original id from the dr2: prefix.
        let e = ev(
            r#"{"message_type":"receipt","message_id":"dr2:m-9","from":"gcm.googleapis.com",
                      "data":{"message_status":"MESSAGE_SENT_TO_DEVICE","message_sent_timestamp":1430277821658}}"#,
        );
        let r = e.as_receipt().unwrap();
        assert_eq!(r.sent_timestamp, Some(1_430_277_821_658));
        assert_eq!(r.original_message_id, "m-9");
        // Junk informational fields do not lose the receipt.
        let e = ev(
            r#"{"message_type":"receipt","message_id":"x-1","from":"gcm.googleapis.com",
                      "category":5,"data":{"message_sent_timestamp":"soon","device_registration_id":[]}}"#,
        );
        let r = e.as_receipt().unwrap();
        assert_eq!((r.sent_timestamp, r.category.as_ref()), (None, None));
        assert_eq!(r.original_message_id, "x-1");
        assert_eq!(r.status, "");
        let e = ev(r#"{"message_type":"receipt","message_id":"dr2:a","from":"g","data":"?"}"#);
        assert_eq!(e.as_receipt().unwrap().original_message_id, "a");
        // The ack ids are required.
        assert!(
            bad_detail(r#"{"message_type":"receipt","message_id":"dr2:a"}"#).contains("`from`")
        );
        assert!(bad_detail(r#"{"message_type":"receipt","from":"g"}"#).contains("`message_id`"));
    }

    #[test]
    fn control_without_message_id() {
        let e = ev(r#"{"message_type":"control","control_type":"CONNECTION_DRAINING"}"#);
        assert_eq!(
            e,
            Event::Control(Control {
                kind: ControlKind::ConnectionDraining
            })
        );
        assert_eq!(e.message_id(), None);
        assert!(e.is_connection_draining());
        assert!(!e.needs_ack());
        let e = ev(r#"{"message_type":"control","control_type":"SOMETHING_ELSE"}"#);
        assert_eq!(
            e.as_control().unwrap().kind,
            ControlKind::Other("SOMETHING_ELSE".into())
        );
        assert!(!e.is_connection_draining());
        assert_eq!(e.as_control().unwrap().kind.to_string(), "SOMETHING_ELSE");
        assert!(bad_detail(r#"{"message_type":"control"}"#).contains("`control_type`"));
        let nack = ev(r#"{"message_type":"nack","message_id":"m","error":"CONNECTION_DRAINING"}"#);
        assert!(nack.is_connection_draining());
    }

    #[test]
    fn upstream_fields_and_non_string_data() {
        let e = ev(
            r#"{"from":"DEVICE","category":"com.example","message_id":"u-1","time_to_live":86400,
            "data":{"s":"text","n":5,"f":1.5,"b":true,"z":null,"o":{"a":[1,"x"]},"a":[]}}"#,
        );
        assert!(e.is_upstream() && e.needs_ack());
        let u = e.as_upstream().unwrap();
        assert_eq!(u.from, "DEVICE");
        assert_eq!(u.category.as_deref(), Some("com.example"));
        assert_eq!(u.message_id, "u-1");
        assert_eq!(u.time_to_live, Some(86_400));
        let d = |k: &str| u.data.get(k).map(String::as_str);
        assert_eq!(d("s"), Some("text"));
        assert_eq!(d("n"), Some("5"));
        assert_eq!(d("f"), Some("1.5"));
        assert_eq!(d("b"), Some("true"));
        assert_eq!(d("z"), Some("null"));
        assert_eq!(d("o"), Some(r#"{"a":[1,"x"]}"#));
        assert_eq!(d("a"), Some("[]"));
        assert_eq!(e.ack_target(), Some(("DEVICE", "u-1")));
        // Minimal upstream: no data, no ttl; a junk ttl is ignored.
        let e = ev(r#"{"from":"D","message_id":"u-2","time_to_live":"1"}"#);
        let u = e.as_upstream().unwrap();
        assert!(u.data.is_empty());
        assert_eq!((u.time_to_live, u.category.as_ref()), (None, None));
        assert!(bad_detail(r#"{"message_id":"u","data":{}}"#).contains("`from`"));
        assert!(bad_detail(r#"{"from":"D","data":{}}"#).contains("`message_id`"));
        assert!(bad_detail(r#"{"from":"D","message_id":"u","data":"x"}"#).contains("`data`"));
        assert!(
            bad_detail(r#"{"message_type":5,"from":"D","message_id":"u"}"#)
                .contains("`message_type`")
        );
        // message_type null counts as absent.
        assert!(ev(r#"{"message_type":null,"from":"D","message_id":"u"}"#).is_upstream());
    }

    #[test]
    fn unknown_message_type_is_kept() {
        let text = r#"{"message_type":"future","message_id":"x","payload":{"k":1}}"#;
        let e = ev(&format!("\n  {text}\n"));
        assert_eq!(
            e,
            Event::Unknown(UnknownMessage {
                message_type: "future".into(),
                json: text.into()
            })
        );
        assert_eq!(e.message_id(), None);
        assert_eq!(e.to_json(), text);
        assert!(e.is_unknown());
    }

    #[test]
    fn surrounding_whitespace_and_newlines() {
        let e = ev("\n\n   {\"message_type\":\"ack\",\"message_id\":\"m\"}\r\n\t  \n");
        assert_eq!(e.message_id(), Some("m"));
        let e = ev("\n{\n  \"message_type\" : \"ack\" ,\n  \"message_id\" : \"m2\"\n}\n");
        assert_eq!(e.message_id(), Some("m2"));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let huge_int = format!(
            "{{\"message_type\":\"ack\",\"message_id\":\"m\",\"x\":{}}}",
            "1".repeat(10_000)
        );
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let deep_obj = "{\"a\":".repeat(100_000);
        for text in [
            "",
            " \n ",
            "garbage",
            "<gcm/>",
            "[]",
            r#"[{"message_type":"ack","message_id":"m"}]"#,
            "\"ack\"",
            "42",
            "null",
            "{\"message_type\":\"ack\"",
            "{\"message_type\":\"ack\",\"message_id\":\"m\"}}",
            "{\"message_id\":1e999999,\"from\":\"d\"}",
            "{\"message_id\":\"\\ud800\",\"from\":\"d\"}",
            huge_int.as_str(),
            deep.as_str(),
            deep_obj.as_str(),
        ] {
            let d = bad_detail(text);
            assert!(d.starts_with("gcm payload is "), "{d}");
        }
        // Deep nesting inside upstream data is kept as text, iteratively.
        let nested = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let e = ev(&format!(
            r#"{{"from":"D","message_id":"u","data":{{"deep":{nested}}}}}"#
        ));
        assert_eq!(e.as_upstream().unwrap().data["deep"].len(), 200_000);
    }

    fn round_trip(e: Event) {
        let text = e.to_json();
        assert_eq!(Event::from_json(&text).unwrap(), e, "{text}");
    }

    #[test]
    fn to_json_round_trips_every_kind() {
        round_trip(Event::Ack(Ack {
            message_id: "m\"1".into(),
            from: Some("tok\\".into()),
            registration_id: Some("canon".into()),
        }));
        round_trip(Event::Ack(Ack {
            message_id: "m".into(),
            from: None,
            registration_id: None,
        }));
        round_trip(Event::Nack(Nack {
            message_id: "m".into(),
            from: Some("tok".into()),
            code: NackCode::DeviceUnregistered,
            description: Some("gone\n".into()),
        }));
        round_trip(Event::Nack(Nack {
            message_id: "m".into(),
            from: None,
            code: NackCode::Other("NEW".into()),
            description: None,
        }));
        round_trip(Event::Receipt(Receipt {
            message_id: "dr2:m-1".into(),
            from: "gcm.googleapis.com".into(),
            original_message_id: "m-1".into(),
            status: "MESSAGE_SENT_TO_DEVICE".into(),
            device_registration_id: Some("REG".into()),
            sent_timestamp: Some(1_430_277_821_658),
            category: Some("com.example".into()),
        }));
        round_trip(Event::Receipt(Receipt {
            message_id: "dr2:m-2".into(),
            from: "gcm.googleapis.com".into(),
            original_message_id: "other".into(),
            status: "MESSAGE_SENT_TO_DEVICE".into(),
            device_registration_id: None,
            sent_timestamp: None,
            category: None,
        }));
        round_trip(Event::Control(Control {
            kind: ControlKind::ConnectionDraining,
        }));
        round_trip(Event::Control(Control {
            kind: ControlKind::Other("X".into()),
        }));
        let mut data = BTreeMap::new();
        data.insert("k".to_string(), "a & b < c".to_string());
        data.insert("é".to_string(), "\u{1}\"".to_string());
        round_trip(Event::Upstream(Upstream {
            from: "DEVICE".into(),
            category: Some("com.example".into()),
            message_id: "u-1".into(),
            data,
            time_to_live: Some(0),
        }));
        round_trip(Event::Upstream(Upstream {
            from: "DEVICE".into(),
            category: None,
            message_id: "u-2".into(),
            data: BTreeMap::new(),
            time_to_live: None,
        }));
        round_trip(Event::Unknown(UnknownMessage {
            message_type: "future".into(),
            json: r#"{"message_type":"future"}"#.into(),
        }));
    }

    #[test]
    fn receipt_json_has_the_documented_shape() {
        let e = Event::Receipt(Receipt {
            message_id: "dr2:m-1".into(),
            from: "gcm.googleapis.com".into(),
            original_message_id: "m-1".into(),
            status: "MESSAGE_SENT_TO_DEVICE".into(),
            device_registration_id: Some("REG".into()),
            sent_timestamp: Some(1_430_277_821_658),
            category: Some("com.example".into()),
        });
        assert_eq!(
            e.to_json(),
            concat!(
                r#"{"message_type":"receipt","message_id":"dr2:m-1","from":"gcm.googleapis.com","#,
                r#""category":"com.example","data":{"message_status":"MESSAGE_SENT_TO_DEVICE","#,
                r#""original_message_id":"m-1","device_registration_id":"REG","#,
                r#""message_sent_timestamp":"1430277821658"},"time_to_live":0}"#
            )
        );
        let c = Event::Control(Control {
            kind: ControlKind::ConnectionDraining,
        });
        assert_eq!(
            c.to_json(),
            r#"{"message_type":"control","control_type":"CONNECTION_DRAINING"}"#
        );
        let a = Event::Ack(Ack {
            message_id: "m".into(),
            from: Some("t".into()),
            registration_id: None,
        });
        assert_eq!(
            a.to_json(),
            r#"{"from":"t","message_id":"m","message_type":"ack"}"#
        );
    }

    #[test]
    fn ack_bytes_are_exact() {
        assert_eq!(
            ack("DEVICE_TOKEN", "m-123"),
            r#"{"to":"DEVICE_TOKEN","message_id":"m-123","message_type":"ack"}"#
        );
        assert_eq!(
            ack("gcm.googleapis.com", "dr2:m-1"),
            r#"{"to":"gcm.googleapis.com","message_id":"dr2:m-1","message_type":"ack"}"#
        );
        assert_eq!(
            ack(r#"a"b\c"#, "x\ny"),
            r#"{"to":"a\"b\\c","message_id":"x\ny","message_type":"ack"}"#
        );
        let mut out = String::from("keep");
        write_ack_json("t", "m", &mut out);
        assert_eq!(
            out,
            r#"keep{"to":"t","message_id":"m","message_type":"ack"}"#
        );
        // What we send parses to exactly these three string fields.
        let obj = json::parse_object(&ack(r#"a"b\c"#, "x\ny")).unwrap();
        assert_eq!(obj.len(), 3);
        assert_eq!(json::opt_str(&obj, "to"), Ok(Some(r#"a"b\c"#)));
        assert_eq!(json::opt_str(&obj, "message_id"), Ok(Some("x\ny")));
        assert_eq!(json::opt_str(&obj, "message_type"), Ok(Some("ack")));
        // And an event's ack target feeds it directly.
        let up = ev(r#"{"from":"D\"","message_id":"u\\1","data":{}}"#);
        let (to, id) = up.ack_target().unwrap();
        assert_eq!(
            ack(to, id),
            r#"{"to":"D\"","message_id":"u\\1","message_type":"ack"}"#
        );
    }

    fn gcm_message(json_text: &str) -> Element {
        Element::new("message", NS_CLIENT)
            .with_child(Element::new("gcm", NS_GCM).with_text(json_text))
    }

    #[test]
    fn stanza_with_prefixed_data_gcm_ack() {
        // <message><data:gcm xmlns:data="google:mobile:data">JSON</data:gcm></message>:
        // after prefix resolution the reader gives local name `gcm` in the ns.
        let el =
            gcm_message("\n{\"message_type\":\"ack\",\"message_id\":\"m-1\",\"from\":\"t\"}\n");
        let e = Event::from_stanza(&el).unwrap().unwrap();
        assert_eq!(e.as_ack().unwrap().message_id, "m-1");
        // Split text nodes are concatenated.
        let el = Element::new("message", NS_CLIENT).with_child(
            Element::new("gcm", NS_GCM)
                .with_text("{\"message_type\":\"ack\",")
                .with_text("\"message_id\":\"m-2\"}"),
        );
        assert_eq!(
            Event::from_stanza(&el).unwrap().unwrap().message_id(),
            Some("m-2")
        );
    }

    #[test]
    fn stanza_payload_selected_by_namespace() {
        // A decoy `gcm` in another namespace first, then the real one.
        let el = Element::new("message", NS_CLIENT)
            .with_attr("type", "normal")
            .with_child(Element::new("gcm", "urn:other").with_text("{}"))
            .with_child(
                Element::new("gcm", NS_GCM)
                    .with_text(r#"{"from":"D","message_id":"u","data":{"k":"v"}}"#),
            );
        let e = Event::from_stanza(&el).unwrap().unwrap();
        assert_eq!(e.as_upstream().unwrap().data["k"], "v");
        // A gcm element in the wrong namespace only: missing payload.
        let el = Element::new("message", NS_CLIENT).with_child(
            Element::new("gcm", "").with_text(r#"{"message_type":"ack","message_id":"m"}"#),
        );
        assert_eq!(Event::from_stanza(&el), Err(ProtocolError::MissingPayload));
        let el = Element::new("message", NS_CLIENT).with_child(Element::new("body", NS_CLIENT));
        assert_eq!(Event::from_stanza(&el), Err(ProtocolError::MissingPayload));
        // Bad JSON inside a gcm payload is BadPayload.
        let el = gcm_message("oops");
        assert!(matches!(
            Event::from_stanza(&el),
            Err(ProtocolError::BadPayload { .. })
        ));
    }

    #[test]
    fn non_message_stanzas_are_ignored() {
        let pong = Element::new("iq", NS_CLIENT)
            .with_attr("type", "result")
            .with_attr("id", "p7");
        assert_eq!(Event::from_stanza(&pong), Ok(None));
        let presence = Element::new("presence", NS_CLIENT);
        assert_eq!(Event::from_stanza(&presence), Ok(None));
        let foreign = Element::new("message", "jabber:server")
            .with_child(Element::new("gcm", NS_GCM).with_text("{}"));
        assert_eq!(Event::from_stanza(&foreign), Ok(None));
    }

    #[test]
    fn stanza_error_400_with_echoed_payload() {
        let el = Element::new("message", NS_CLIENT)
            .with_attr("id", "m-42")
            .with_attr("type", "error")
            .with_attr("to", "123@gcm.googleapis.com/fcmxmpp5D0C9A1E")
            .with_child(
                Element::new("gcm", NS_GCM)
                    .with_text(r#"{"to":"TOKEN","message_id":"m-42-json","time_to_live":600}"#),
            )
            .with_child(
                Element::new("error", NS_CLIENT)
                    .with_attr("code", "400")
                    .with_attr("type", "modify")
                    .with_child(Element::new("bad-request", NS_STANZAS))
                    .with_child(Element::new("text", NS_STANZAS).with_text(
                        "InvalidJson: JSON_PARSING_ERROR : Missing Required Field: message_id\n",
                    )),
            );
        let e = Event::from_stanza(&el).unwrap().unwrap();
        let se = e.as_stanza_error().unwrap();
        assert_eq!(se.id.as_deref(), Some("m-42"));
        assert_eq!(se.message_id.as_deref(), Some("m-42-json"));
        assert_eq!(se.code, Some(400));
        assert_eq!(se.error_type.as_deref(), Some("modify"));
        assert_eq!(se.condition, "bad-request");
        assert_eq!(
            se.text.as_deref(),
            Some("InvalidJson: JSON_PARSING_ERROR : Missing Required Field: message_id\n")
        );
        assert_eq!(e.message_id(), Some("m-42-json"));
        assert_eq!(e.settled_message_id(), Some("m-42-json"));
        assert!(!e.needs_ack());
    }

    #[test]
    fn stanza_error_406_and_sparse_forms() {
        // 406 for acking something not received: text before condition, no
        // echoed message_id (payload without one).
        let el = Element::new("message", NS_CLIENT)
            .with_attr("id", "a-9")
            .with_attr("type", "error")
            .with_child(Element::new("gcm", NS_GCM).with_text(r#"{"to":"D","message_type":"ack"}"#))
            .with_child(
                Element::new("error", NS_CLIENT)
                    .with_attr("code", "406")
                    .with_attr("type", "modify")
                    .with_child(Element::new("text", NS_STANZAS).with_text("not acceptable"))
                    .with_child(Element::new("x-app", "urn:app"))
                    .with_child(Element::new("not-acceptable", NS_STANZAS)),
            );
        let se = Event::from_stanza(&el)
            .unwrap()
            .unwrap()
            .into_stanza_error()
            .unwrap();
        assert_eq!(se.code, Some(406));
        assert_eq!(se.condition, "not-acceptable");
        assert_eq!(se.text.as_deref(), Some("not acceptable"));
        assert_eq!(se.message_id, None);
        assert_eq!(se.target_message_id(), Some("a-9"));
        // No <error>, unparsable echo, no id: still a stanza error.
        let el = Element::new("message", NS_CLIENT)
            .with_attr("type", "error")
            .with_child(Element::new("gcm", NS_GCM).with_text("{broken"));
        let se = Event::from_stanza(&el)
            .unwrap()
            .unwrap()
            .into_stanza_error()
            .unwrap();
        assert_eq!(se.condition, "undefined-condition");
        assert_eq!(
            (se.id, se.message_id, se.code, se.text),
            (None, None, None, None)
        );
        // A non-numeric code is dropped, not an error.
        let el = Element::new("message", NS_CLIENT)
            .with_attr("type", "error")
            .with_child(
                Element::new("error", NS_CLIENT)
                    .with_attr("code", "abc")
                    .with_child(Element::new("bad-request", NS_STANZAS)),
            );
        let se = Event::from_stanza(&el)
            .unwrap()
            .unwrap()
            .into_stanza_error()
            .unwrap();
        assert_eq!((se.code, se.condition.as_str()), (None, "bad-request"));
    }

    #[test]
    fn stanza_error_round_trips_through_to_stanza() {
        let se = StanzaError {
            id: Some("m-42".into()),
            message_id: Some("m-42".into()),
            code: Some(400),
            error_type: Some("modify".into()),
            condition: "bad-request".into(),
            text: Some(
                "InvalidJson: JSON_PARSING_ERROR : Missing Required Field: message_id\n".into(),
            ),
        };
        let el = se.to_stanza(None);
        assert_eq!(el.attr("type"), Some("error"));
        let back = Event::from_stanza(&el).unwrap().unwrap();
        assert_eq!(back, Event::StanzaError(se.clone()));
        let el = se.to_stanza(Some(r#"{"to":"T","message_id":"m-42"}"#));
        assert_eq!(
            el.child("gcm", NS_GCM).unwrap().text(),
            r#"{"to":"T","message_id":"m-42"}"#
        );
        assert_eq!(
            Event::from_stanza(&el).unwrap().unwrap(),
            Event::StanzaError(se.clone())
        );
        let bare = StanzaError {
            id: None,
            message_id: None,
            code: None,
            error_type: None,
            condition: "not-acceptable".into(),
            text: None,
        };
        let el = bare.to_stanza(None);
        assert!(el.child("gcm", NS_GCM).is_none());
        assert_eq!(
            Event::from_stanza(&el).unwrap().unwrap(),
            Event::StanzaError(bare.clone())
        );
        assert_eq!(Event::StanzaError(bare).to_json(), "{}");
        assert_eq!(Event::StanzaError(se).to_json(), r#"{"message_id":"m-42"}"#);
    }

    #[test]
    fn helpers() {
        let e = ev(r#"{"message_type":"ack","message_id":"m"}"#);
        assert!(e.is_ack() && !e.is_nack() && !e.is_upstream() && !e.is_receipt());
        assert!(!e.is_control() && !e.is_stanza_error() && !e.is_unknown());
        assert!(e.as_nack().is_none());
        let e = e.into_nack().unwrap_err();
        assert_eq!(e.into_ack().unwrap().message_id, "m");
        let e = ev(r#"{"message_type":"control","control_type":"CONNECTION_DRAINING"}"#);
        assert_eq!(
            e.clone().into_control().unwrap().kind,
            ControlKind::ConnectionDraining
        );
        assert!(e.into_upstream().is_err());
        assert!(RetryClass::Backoff.is_retryable());
        assert!(!RetryClass::Final.is_retryable());
        assert_eq!(
            ControlKind::from_type("CONNECTION_DRAINING").as_str(),
            "CONNECTION_DRAINING"
        );
    }
}
