//! The crate's one error type.
//!
//! Top-level variants are decisions a caller can act on; detail lives in the
//! sub-enums [`XmlError`], [`ProtocolError`] and [`InvalidMessage`]. No variant
//! ever carries the server key.

use std::fmt;
use std::io;

/// `Result` with this crate's [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong talking to CCS.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// An I/O error on the socket (other than a timeout).
    Io(io::Error),
    /// TLS setup or handshake failed: the certificate did not verify, the peer
    /// does not speak TLS, or the TLS library refused the configuration.
    Tls(TlsError),
    /// A blocking step did not finish within its configured timeout.
    Timeout(Phase),
    /// The server refused the SASL credentials. Final: do not retry with the same key.
    AuthFailed {
        /// The SASL failure condition the server gave (`not-authorized`, ...), or
        /// `connection-closed` when the server hung up right after `<auth>`.
        condition: String,
    },
    /// The server ended the stream with `<stream:error>`.
    StreamError {
        /// The stream error condition, e.g. `invalid-xml`.
        condition: String,
        /// The optional human-readable text the server sent.
        text: Option<String>,
    },
    /// The bytes from the server were not well-formed or exceeded a limit.
    Xml(XmlError),
    /// The server broke the XMPP or CCS protocol.
    Protocol(ProtocolError),
    /// A downstream message failed validation; nothing was sent.
    InvalidMessage(InvalidMessage),
    /// The configuration is unusable (which field and why).
    InvalidConfig {
        /// The configuration field at fault.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The connection already has its maximum of pending (un-acked) messages.
    /// Read events until an ack or nack frees a slot, then send again.
    WindowFull,
    /// The connection is closed (by the server, by a drop, or by `close`).
    Closed,
    /// The server announced `CONNECTION_DRAINING` on this connection: it takes
    /// no new downstream messages. Nothing was sent; send on a new connection,
    /// and keep reading (and acking on) this one until the server closes it.
    Draining,
    /// A worker thread of the [`Client`](crate::client::Client) panicked (a
    /// bug in this crate). The client stopped; its messages were returned.
    WorkerPanicked,
}

/// Which blocking step timed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Phase {
    /// Name resolution.
    Resolve,
    /// The TCP connect.
    Connect,
    /// The TLS handshake.
    Tls,
    /// The XMPP handshake (stream header, SASL, bind, session).
    Handshake,
    /// Reading from an established connection.
    Read,
    /// Writing to an established connection.
    Write,
    /// Waiting for the server's `</stream:stream>` after ours.
    Close,
    /// Waiting for a client call (send into a full queue, shutdown).
    Wait,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Resolve => "name resolution",
            Phase::Connect => "tcp connect",
            Phase::Tls => "tls handshake",
            Phase::Handshake => "xmpp handshake",
            Phase::Read => "read",
            Phase::Write => "write",
            Phase::Close => "close",
            Phase::Wait => "wait",
        })
    }
}

/// A TLS failure, with a short description of what went wrong.
#[derive(Debug)]
pub struct TlsError {
    kind: TlsErrorKind,
    source: Option<Box<native_tls::Error>>,
    detail: String,
}

/// The broad class of a [`TlsError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TlsErrorKind {
    /// The server's certificate did not verify (unknown issuer, wrong name, expired).
    Certificate,
    /// The peer did not answer with TLS (a plaintext server on a TLS port).
    NotTls,
    /// A configured root certificate could not be parsed.
    BadRootCertificate,
    /// Anything else the TLS library reported.
    Other,
}

impl TlsError {
    pub(crate) fn new(kind: TlsErrorKind, detail: impl Into<String>) -> Self {
        TlsError {
            kind,
            source: None,
            detail: detail.into(),
        }
    }

    pub(crate) fn with_source(mut self, source: native_tls::Error) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// The broad class of failure.
    pub fn kind(&self) -> TlsErrorKind {
        self.kind
    }
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            TlsErrorKind::Certificate => "server certificate did not verify",
            TlsErrorKind::NotTls => "server did not answer with TLS (is this a TLS port?)",
            TlsErrorKind::BadRootCertificate => "extra root certificate is not valid PEM",
            TlsErrorKind::Other => "tls failed",
        };
        if self.detail.is_empty() {
            f.write_str(what)
        } else {
            write!(f, "{what}: {}", self.detail)
        }
    }
}

impl std::error::Error for TlsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// Malformed or oversized XML from the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum XmlError {
    /// The bytes are not well-formed XML (`detail` says where and why).
    Malformed {
        /// What the parser saw.
        detail: String,
    },
    /// The bytes are not valid UTF-8.
    InvalidUtf8,
    /// A DOCTYPE or DTD appeared; XMPP forbids them.
    Doctype,
    /// An entity reference other than the five predefined ones.
    UnknownEntity {
        /// The entity name as written.
        name: String,
    },
    /// A stanza grew past the configured size limit.
    StanzaTooLarge {
        /// The configured limit in bytes.
        max: usize,
    },
    /// Elements nested deeper than the configured limit.
    TooDeep {
        /// The configured depth limit.
        max: usize,
    },
    /// The stream ended in the middle of a stanza.
    Truncated,
}

impl fmt::Display for XmlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            XmlError::Malformed { detail } => write!(f, "malformed xml: {detail}"),
            XmlError::InvalidUtf8 => f.write_str("xml is not valid utf-8"),
            XmlError::Doctype => f.write_str("xml doctype/dtd is not allowed"),
            XmlError::UnknownEntity { name } => write!(f, "unknown xml entity &{name};"),
            XmlError::StanzaTooLarge { max } => write!(f, "stanza larger than {max} bytes"),
            XmlError::TooDeep { max } => write!(f, "xml nested deeper than {max} levels"),
            XmlError::Truncated => f.write_str("stream ended inside a stanza"),
        }
    }
}

impl std::error::Error for XmlError {}

/// The server broke the XMPP or CCS protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProtocolError {
    /// Something other than the expected element arrived (`expected`, `got`).
    Unexpected {
        /// What the client was waiting for.
        expected: &'static str,
        /// What arrived instead (element name or a short description).
        got: String,
    },
    /// The server offers no SASL mechanism this client can use.
    NoPlainMechanism,
    /// The server refused resource binding or session establishment.
    BindFailed {
        /// The error condition the server gave.
        condition: String,
    },
    /// A CCS `<gcm>` payload was not a JSON object, or lacked a required field.
    BadPayload {
        /// Why the payload was refused.
        detail: String,
    },
    /// A `<message>` stanza had no `<gcm xmlns="google:mobile:data">` child.
    MissingPayload,
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::Unexpected { expected, got } => {
                write!(f, "expected {expected}, got {got}")
            }
            ProtocolError::NoPlainMechanism => f.write_str("server does not offer sasl PLAIN"),
            ProtocolError::BindFailed { condition } => {
                write!(f, "resource bind refused: {condition}")
            }
            ProtocolError::BadPayload { detail } => write!(f, "bad ccs payload: {detail}"),
            ProtocolError::MissingPayload => f.write_str("message stanza without a gcm payload"),
        }
    }
}

impl std::error::Error for ProtocolError {}

/// A downstream message that CCS would refuse; names the field and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidMessage {
    /// The JSON field at fault (`to`, `time_to_live`, `data`, ...).
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

impl InvalidMessage {
    /// Builds an `InvalidMessage` for `field`.
    pub fn new(field: &'static str, reason: impl Into<String>) -> Self {
        InvalidMessage {
            field,
            reason: reason.into(),
        }
    }
}

impl fmt::Display for InvalidMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid message field `{}`: {}", self.field, self.reason)
    }
}

impl std::error::Error for InvalidMessage {}

impl Error {
    /// True for timeouts of any phase.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout(_))
    }

    /// True when the connection is gone and a new one is needed.
    pub fn is_closed(&self) -> bool {
        match self {
            Error::Closed | Error::StreamError { .. } | Error::Xml(XmlError::Truncated) => true,
            Error::Io(e) => matches!(
                e.kind(),
                io::ErrorKind::UnexpectedEof
                    | io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::BrokenPipe
            ),
            _ => false,
        }
    }

    /// True when trying again later (on a new connection) may succeed. False for
    /// refused credentials, bad configuration, invalid messages and certificate
    /// failures, which need a fix first.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Io(_)
            | Error::Timeout(_)
            | Error::StreamError { .. }
            | Error::Xml(_)
            | Error::Protocol(_)
            | Error::WindowFull
            | Error::Closed
            | Error::Draining => true,
            Error::Tls(t) => matches!(t.kind, TlsErrorKind::Other),
            Error::AuthFailed { .. }
            | Error::InvalidMessage(_)
            | Error::InvalidConfig { .. }
            | Error::WorkerPanicked => false,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(e) => write!(f, "i/o error: {e}"),
            Error::Tls(e) => e.fmt(f),
            Error::Timeout(phase) => write!(f, "timed out during {phase}"),
            Error::AuthFailed { condition } => write!(
                f,
                "authentication refused ({condition}): check the sender id and server key"
            ),
            Error::StreamError { condition, text } => match text {
                Some(t) => write!(f, "server stream error {condition}: {t}"),
                None => write!(f, "server stream error {condition}"),
            },
            Error::Xml(e) => e.fmt(f),
            Error::Protocol(e) => write!(f, "protocol error: {e}"),
            Error::InvalidMessage(e) => e.fmt(f),
            Error::InvalidConfig { field, reason } => {
                write!(f, "invalid config `{field}`: {reason}")
            }
            Error::WindowFull => f.write_str("pending window is full: read acks before sending"),
            Error::Closed => f.write_str("connection closed"),
            Error::Draining => {
                f.write_str("connection draining: send new messages on a new connection")
            }
            Error::WorkerPanicked => f.write_str(
                "internal error: a worker thread panicked (a bug in fcm-xmpp; please report it)",
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(e),
            Error::Tls(e) => Some(e),
            Error::Xml(e) => Some(e),
            Error::Protocol(e) => Some(e),
            Error::InvalidMessage(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Io(e)
    }
}

impl From<XmlError> for Error {
    fn from(e: XmlError) -> Self {
        Error::Xml(e)
    }
}

impl From<ProtocolError> for Error {
    fn from(e: ProtocolError) -> Self {
        Error::Protocol(e)
    }
}

impl From<InvalidMessage> for Error {
    fn from(e: InvalidMessage) -> Self {
        Error::InvalidMessage(e)
    }
}

impl From<TlsError> for Error {
    fn from(e: TlsError) -> Self {
        Error::Tls(e)
    }
}

#[cfg(test)]
mod tests;
