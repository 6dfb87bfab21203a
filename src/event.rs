//! Server-to-client events (PROTOCOL.md §7-§9). STUB: being implemented.

use std::collections::BTreeMap;

/// A NACK error code, typed, with unknown codes kept by name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NackCode {
    /// `SERVICE_UNAVAILABLE`.
    ServiceUnavailable,
    /// `INTERNAL_SERVER_ERROR`.
    InternalServerError,
    /// `CONNECTION_DRAINING`.
    ConnectionDraining,
    /// `DEVICE_MESSAGE_RATE_EXCEEDED`.
    DeviceMessageRateExceeded,
    /// `TOPICS_MESSAGE_RATE_EXCEEDED`.
    TopicsMessageRateExceeded,
    /// `QUOTA_EXCEEDED` (legacy).
    QuotaExceeded,
    /// `BAD_REGISTRATION`.
    BadRegistration,
    /// `DEVICE_UNREGISTERED`.
    DeviceUnregistered,
    /// `INVALID_JSON`.
    InvalidJson,
    /// `BAD_ACK`.
    BadAck,
    /// `INVALID_APNS_CREDENTIAL`.
    InvalidApnsCredential,
    /// Any other code, kept as sent; retried like `INTERNAL_SERVER_ERROR`.
    Other(String),
}

/// How a NACKed message may be retried (PROTOCOL.md §8).
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
    /// Any other `control_type`, kept as sent.
    Other(String),
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

// Temporary stubs until the model lands.
impl Event {
    /// Parses a `<message>` stanza.
    pub fn from_stanza(
        _el: &crate::xml::Element,
    ) -> Result<Option<Event>, crate::error::ProtocolError> {
        todo!()
    }
    /// `(to, message_id)` for events that need an ack.
    pub fn ack_target(&self) -> Option<(&str, &str)> {
        todo!()
    }
}

/// Builds the one ACK JSON.
pub fn write_ack_json(_to: &str, _message_id: &str, _out: &mut String) {
    todo!()
}
