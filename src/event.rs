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
use crate::message::ACK_STANZA_ID_PREFIX;
use crate::xml::Element;

use crate::ns::{CLIENT as NS_CLIENT, GCM as NS_GCM, STANZAS as NS_STANZAS};

mod fast;
pub(crate) use fast::Settlement;
/// The `message_id` prefix of delivery receipts.
pub(crate) const RECEIPT_PREFIX: &str = "dr2:";

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
}

/// The server refused one of our acks (of an upstream message or a receipt).
///
/// Never about a downstream message, so it settles none: a device's upstream
/// id and an application's downstream id may well be equal (both often count
/// from 1), and an error about the ack of upstream `u-1` must not end the
/// pending downstream message `u-1`. [`Event::settled_message_id`] is `None`
/// for it, and [`Connection`](crate::Connection) leaves its window alone.
///
/// It arrives as a stanza error whose stanza `id` is one of our ack ids
/// (`fx-ack-N`) or, without an `id`, whose echoed payload is an ack; or as a
/// `BAD_ACK` nack, which by definition is about an ack. CCS redelivers the
/// message that was not acked; a malformed ack is a bug in this crate.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AckRefused {
    /// The id of the upstream message or receipt the ack was for, when the
    /// server echoed it.
    pub message_id: Option<String>,
    /// How the server said it.
    pub reason: AckRefusal,
}

/// How the server refused an ack.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AckRefusal {
    /// A stanza error about the ack stanza (e.g. 406 for an id that was not
    /// delivered on this connection).
    StanzaError(StanzaError),
    /// A `BAD_ACK` nack.
    Nack(Nack),
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
    /// A stanza error about a downstream message (or about nothing we can
    /// tell); errors about our acks are [`Event::AckRefused`].
    StanzaError(StanzaError),
    /// A payload with an unknown `message_type`.
    Unknown(UnknownMessage),
    /// The server refused one of our acks: a stanza error or `BAD_ACK` nack
    /// about an ack, never about a downstream message.
    AckRefused(AckRefused),
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

pub(crate) fn owned(s: Option<&str>) -> Option<String> {
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
        if let Some(s) = Settlement::scan(text) {
            let id = s.message_id().to_owned();
            return Ok(s.into_event(id));
        }
        if let Some(event) = fast::inbound(text) {
            return Ok(event);
        }
        Event::from_json_tree(text)
    }

    /// [`Event::from_json`] through a `miniserde` value tree, whatever the
    /// shape: the general path (`text` already trimmed).
    pub(crate) fn from_json_tree(text: &str) -> Result<Event, ProtocolError> {
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
                let nack = Nack {
                    message_id: json::req_str(obj, "message_id").map_err(bad)?.to_owned(),
                    from: owned(lenient(json::opt_str(obj, "from"), "nack")),
                    code,
                    description: owned(lenient(json::opt_str(obj, "error_description"), "nack")),
                };
                if nack.code == NackCode::BadAck {
                    return Ok(Event::AckRefused(AckRefused {
                        message_id: Some(nack.message_id.clone()),
                        reason: AckRefusal::Nack(nack),
                    }));
                }
                Ok(Event::Nack(nack))
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
    /// - `type="error"` about one of our acks (stanza `id` starting `fx-ack-`,
    ///   or no `id` and an echoed ack payload): [`Event::AckRefused`];
    /// - other `type="error"`: [`Event::StanzaError`] with the stanza `id`, the
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
            let (error, echoed_ack) = parse_stanza_error(el);
            let about_ack = match &error.id {
                Some(id) => id.starts_with(ACK_STANZA_ID_PREFIX),
                None => echoed_ack,
            };
            if about_ack {
                return Ok(Some(Event::AckRefused(AckRefused {
                    message_id: error.message_id.clone(),
                    reason: AckRefusal::StanzaError(error),
                })));
            }
            return Ok(Some(Event::StanzaError(error)));
        }
        match el.child("gcm", NS_GCM) {
            Some(gcm) => Event::from_json(&gcm.text()).map(Some),
            None => Err(ProtocolError::MissingPayload),
        }
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
    /// id (`dr2:...` for receipts), the acked/nacked id, for a stanza error
    /// the echoed JSON `message_id`, else the stanza `id`, and for a refused
    /// ack the upstream or receipt id it acked. `None` for control and unknown
    /// messages.
    pub fn message_id(&self) -> Option<&str> {
        match self {
            Event::Upstream(u) => Some(&u.message_id),
            Event::Ack(a) => Some(&a.message_id),
            Event::Nack(n) => Some(&n.message_id),
            Event::Receipt(r) => Some(&r.message_id),
            Event::StanzaError(e) => e.target_message_id(),
            Event::AckRefused(a) => a.message_id.as_deref(),
            Event::Control(_) | Event::Unknown(_) => None,
        }
    }

    /// The id of the downstream message this event settles: the acked or
    /// nacked id, or the stanza error's message id. `None` otherwise
    /// (receipts arrive after their message was acked; an
    /// [`Event::AckRefused`] is about an ack, never a downstream message).
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
    AckRefused(AckRefused): is_ack_refused, as_ack_refused, into_ack_refused, "a refused ack";
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

/// The stanza error, and whether its echoed payload is an ack.
fn parse_stanza_error(el: &Element) -> (StanzaError, bool) {
    let echo = el
        .child("gcm", NS_GCM)
        .and_then(|gcm| json::parse_object(&gcm.text()).ok());
    let echoed = |field| {
        echo.as_ref()
            .and_then(|obj| json::opt_str(obj, field).ok().flatten())
            .map(str::to_owned)
    };
    let message_id = echoed("message_id");
    let echoed_ack = echoed("message_type").as_deref() == Some("ack");
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
    let error = StanzaError {
        id: el.attr("id").map(str::to_owned),
        message_id,
        code,
        error_type,
        condition: condition.unwrap_or_else(|| "undefined-condition".to_owned()),
        text,
    };
    (error, echoed_ack)
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod settlement_tests;
