//! XML namespaces of XMPP and CCS, one definition for every layer.

/// Stanzas of a client stream.
pub(crate) const CLIENT: &str = "jabber:client";
/// The stream root, features and stream errors' container.
pub(crate) const STREAM: &str = "http://etherx.jabber.org/streams";
/// SASL negotiation.
pub(crate) const SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
/// Resource binding.
pub(crate) const BIND: &str = "urn:ietf:params:xml:ns:xmpp-bind";
/// Session establishment.
pub(crate) const SESSION: &str = "urn:ietf:params:xml:ns:xmpp-session";
/// Stanza error conditions.
pub(crate) const STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
/// Stream error conditions.
pub(crate) const STREAMS_ERR: &str = "urn:ietf:params:xml:ns:xmpp-streams";
/// XEP-0199 ping.
pub(crate) const PING: &str = "urn:xmpp:ping";
/// The CCS payload element `<gcm>`.
pub(crate) const GCM: &str = "google:mobile:data";
/// Roster queries (which CCS clients must never send).
#[cfg(feature = "emulator")]
pub(crate) const ROSTER: &str = "jabber:iq:roster";
