//! A blocking client for the Firebase Cloud Messaging XMPP Connection Server (CCS).
//!
//! Layers, bottom up: `transport` (TCP + TLS), [`xml`] (incremental stanza
//! reader), `stream` (XMPP handshake), [`message`] and [`event`] (the CCS
//! model), [`Connection`] (one authenticated connection).
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(missing_debug_implementations)]

pub mod client;
mod config;
mod connection;
#[cfg(feature = "emulator")]
pub mod emulator;
mod error;
pub mod event;
mod json;
pub mod message;
#[cfg(test)]
mod mock;
mod stream;
mod transport;
pub mod xml;

pub use config::{Config, Endpoint, Keepalive, ServerKey, Timeouts};
pub use connection::{Connection, TlsTcpStream};
pub use error::{
    Error, InvalidMessage, Phase, ProtocolError, Result, TlsError, TlsErrorKind, XmlError,
};
pub use event::{
    Ack, Control, ControlKind, Event, Nack, NackCode, Receipt, RetryClass, StanzaError,
    UnknownMessage, Upstream,
};
pub use message::{Message, Notification, Priority};
pub use transport::SetTimeout;

#[cfg(feature = "emulator")]
pub use emulator::Emulator;
