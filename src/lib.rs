//! A blocking, dependency-light client for the Firebase Cloud Messaging (formerly
//! Google Cloud Messaging) XMPP Connection Server, "CCS", with a local CCS
//! emulator for tests.
//!
//! No async runtime: `std` threads and channels only. Runtime dependencies:
//! `native-tls`, `xmlparser`, `miniserde`, `log`, `base64`.
//!
//! # Quickstart
//!
//! One authenticated [`Connection`], here against the bundled [`emulator`]
//! (feature `emulator`); for Google's server use [`Config::new`] with your
//! sender id and server key and [`Endpoint::fcm_production`].
//!
//! ```
//! # #[cfg(feature = "emulator")] {
//! use fcm_xmpp::emulator::Emulator;
//! use fcm_xmpp::{Connection, Event, Message, NackCode};
//! use std::time::Duration;
//!
//! let emulator = Emulator::start("123456789012", "server-key").unwrap();
//! emulator.reject_token("stale-token", NackCode::DeviceUnregistered);
//!
//! let mut conn = Connection::connect(&emulator.client_config()).unwrap();
//! let ok = conn.send(&Message::to("device-token").data("score", "5x1").time_to_live(0)).unwrap();
//! let gone = conn.send(&Message::to("stale-token")).unwrap();
//! for _ in 0..2 {
//!     match conn.recv_event(Some(Duration::from_secs(5))).unwrap().unwrap() {
//!         Event::Ack(a) => assert_eq!(a.message_id, ok),
//!         Event::Nack(n) => {
//!             assert_eq!(n.message_id, gone);
//!             assert_eq!(n.code, NackCode::DeviceUnregistered); // delete the token
//!         }
//!         other => panic!("{other:?}"),
//!     }
//! }
//! conn.close().unwrap();
//! # emulator.shutdown();
//! # mod judge { include!("../tests/common/judge_core.rs"); }
//! # let bytes = emulator.client_bytes();
//! # assert!(!bytes.is_empty() && bytes.iter().all(|r| r.complete));
//! # judge::check_all(bytes.iter().map(|r| (format!("{:?}", r.conn), &r.bytes[..]))).unwrap();
//! # }
//! ```
//!
//! For a server, use the worker [`client::Client`]: it acks upstream messages,
//! keeps each connection's window at 100 pending messages, retries, fails
//! over on draining, reconnects and resends, and gives every accepted message
//! exactly one final outcome.
//!
//! # Layers
//!
//! Bottom up: transport (TCP + direct TLS), [`xml`] (incremental stanza reader
//! and escaping writer), the XMPP stream (header, SASL PLAIN, bind, session),
//! [`message`] and [`event`] (the CCS model), [`Connection`] (one
//! authenticated connection, generic over any `Read + Write` stream that
//! implements [`SetTimeout`]), [`client`] (the worker), [`emulator`].
//!
//! # Errors
//!
//! One [`Error`] type. Its top-level variants are decisions: retry on a new
//! connection ([`Error::is_retryable`], [`Error::is_closed`]), fix the
//! configuration or message, or give up ([`Error::AuthFailed`] is final). A
//! NACK is not an error but an [`Event::Nack`]; [`NackCode::retry_class`] says
//! how it may be retried. No error, `Debug` output or log line contains the
//! server key.
//!
//! # Features
//!
//! | feature | what | extra dependencies | default |
//! |---|---|---|---|
//! | `emulator` | [`emulator::Emulator`], a local CCS server over TLS for tests and demos | none | no |
//!
//! # Threading
//!
//! A [`Connection`] is single-threaded and blocking: whoever holds it calls
//! `send` and `recv_event`. The [`client::Client`] runs one I/O thread per
//! connection (plus one per draining connection) and talks to the application
//! only through `std::sync::mpsc` channels and a cloneable `Send` handle.
//!
//! # Log levels
//!
//! Through the `log` crate. `error`: a client stopping for good. `warn`:
//! misconfiguration and server misbehaviour. `info`: connect, authentication,
//! draining, reconnects, retries. `debug`: state changes. `trace`: the bytes
//! on the wire, with the SASL payload redacted.
//!
//! # Protocol
//!
//! The crate follows Google's GCM/FCM XMPP documentation (the legacy XMPP API
//! was shut down in 2024): RFC 6120 stream and SASL PLAIN, resource binding,
//! XEP-0199 ping, CCS JSON payloads inside `<gcm xmlns="google:mobile:data">`.
//! [`protocol`] sets out what the code relies on, section by section: endpoints,
//! handshake, reading rules, keepalive, message fields, NACK codes and their
//! retry classes, errors, flow control, draining, acks and encoding.
//!
//! # MSRV
//!
//! Rust 1.89 (the `rust-version` in `Cargo.toml`, set by `std::fs::File::try_lock`,
//! which the [`journal`] uses for its lock). Raising
//! it is a minor-version change.
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
pub mod journal;
mod json;
pub mod message;
#[cfg(test)]
mod mock;
mod ns;
pub mod protocol;
mod stream;
#[cfg(test)]
mod test_rng;
mod threads;
mod time;
mod transport;
mod wire;
pub mod xml;

pub use config::{Config, Endpoint, Keepalive, ServerKey, Timeouts};
pub use connection::{Connection, TlsTcpStream};
pub use error::{
    Error, InvalidMessage, Phase, ProtocolError, Result, TlsError, TlsErrorKind, XmlError,
};
pub use event::{
    Ack, AckRefusal, AckRefused, Control, ControlKind, Event, Nack, NackCode, Receipt, RetryClass,
    StanzaError, UnknownMessage, Upstream,
};
pub use message::{Message, Notification, Priority};
pub use transport::SetTimeout;

#[cfg(feature = "emulator")]
pub use emulator::Emulator;
