//! Connection configuration: endpoint, credentials, timeouts, limits, TLS roots.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::error::{Error, Result};

/// A CCS host and port. Presets cover the documented endpoints
/// ([protocol: endpoints](crate::protocol#endpoints)); [`Endpoint::new`] or
/// [`str::parse`] take any other.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// Host name (used for SNI and certificate verification) or IP literal.
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl Endpoint {
    /// Any host and port.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Endpoint {
            host: host.into(),
            port,
        }
    }

    /// FCM production: `fcm-xmpp.googleapis.com:5235`.
    pub fn fcm_production() -> Self {
        Endpoint::new("fcm-xmpp.googleapis.com", 5235)
    }

    /// FCM pre-production (testing): `fcm-xmpp.googleapis.com:5236`.
    pub fn fcm_preproduction() -> Self {
        Endpoint::new("fcm-xmpp.googleapis.com", 5236)
    }

    /// Legacy GCM production: `gcm.googleapis.com:5235`.
    pub fn gcm_production() -> Self {
        Endpoint::new("gcm.googleapis.com", 5235)
    }

    /// Legacy GCM production, alternative name: `gcm-xmpp.googleapis.com:5235`.
    pub fn gcm_xmpp_production() -> Self {
        Endpoint::new("gcm-xmpp.googleapis.com", 5235)
    }

    /// Legacy GCM pre-production: `gcm-preprod.googleapis.com:5236`.
    pub fn gcm_preproduction() -> Self {
        Endpoint::new("gcm-preprod.googleapis.com", 5236)
    }

    /// Legacy GCM staging: `gcm-staging.googleapis.com:5236`.
    pub fn gcm_staging() -> Self {
        Endpoint::new("gcm-staging.googleapis.com", 5236)
    }
}

impl Default for Endpoint {
    fn default() -> Self {
        Endpoint::fcm_production()
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl FromStr for Endpoint {
    type Err = Error;

    /// Parses `HOST:PORT` (or `[IPV6]:PORT`).
    fn from_str(s: &str) -> Result<Self> {
        let bad = |reason: &str| Error::InvalidConfig {
            field: "endpoint",
            reason: format!("{reason} in {s:?}; expected HOST:PORT"),
        };
        if s.contains("://") {
            return Err(bad("a URL, not an address"));
        }
        let (host, port) = s.rsplit_once(':').ok_or_else(|| bad("no port"))?;
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if host.is_empty() {
            return Err(bad("empty host"));
        }
        if host.contains(['/', '@', ' ', '?', '#']) {
            return Err(bad("not a host name"));
        }
        let port: u16 = port.parse().map_err(|_| bad("bad port"))?;
        Ok(Endpoint::new(host, port))
    }
}

/// The server key. Its `Debug` and `Display` print `<redacted>`; the only way
/// to read it is the crate-internal SASL code.
#[derive(Clone, PartialEq, Eq)]
pub struct ServerKey(String);

impl ServerKey {
    /// Wraps a server key.
    pub fn new(key: impl Into<String>) -> Self {
        ServerKey(key.into())
    }

    pub(crate) fn expose(&self) -> &str {
        &self.0
    }

    /// True if the key is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for ServerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for ServerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Timeouts for each blocking phase. `None` waits forever (not recommended).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Timeouts {
    /// Name resolution plus TCP connect, per address. Default 10 s.
    pub connect: Option<Duration>,
    /// TLS plus XMPP handshake (stream, SASL, bind, session), one deadline
    /// for both, counted from the end of the TCP connect. Default 20 s.
    pub handshake: Option<Duration>,
    /// The longest silence (not a byte, not even a whitespace keepalive) from
    /// an established connection before it is declared dead, whatever the
    /// keepalive pings do. Default 5 min.
    pub read: Option<Duration>,
    /// One blocked write on an established connection. Default 30 s.
    pub write: Option<Duration>,
    /// Waiting for the server's `</stream:stream>` in `close`. Default 5 s.
    pub close: Option<Duration>,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Some(Duration::from_secs(10)),
            handshake: Some(Duration::from_secs(20)),
            read: Some(Duration::from_secs(300)),
            write: Some(Duration::from_secs(30)),
            close: Some(Duration::from_secs(5)),
        }
    }
}

/// Keepalive policy ([protocol: keepalive](crate::protocol#keepalive)), applied
/// by the worker client and by [`Connection::tick`](crate::Connection::tick),
/// which [`Connection::recv_event`](crate::Connection::recv_event) calls while it waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Keepalive {
    /// Send a single space after this long without writing. Default 60 s.
    pub whitespace_after: Option<Duration>,
    /// Send an XEP-0199 ping after this long without reading. Default 120 s.
    pub ping_after: Option<Duration>,
    /// Declare the connection dead when nothing at all (pong or any other byte) was read
    /// for this long after a ping. Any byte read after the ping proves the server alive
    /// and retires the ping, so a lost pong never stops later pings. Default 30 s.
    pub dead_after: Duration,
}

impl Keepalive {
    /// Sets [`Keepalive::whitespace_after`] (`None`: never).
    pub fn whitespace_after(mut self, d: Option<Duration>) -> Self {
        self.whitespace_after = d;
        self
    }

    /// Sets [`Keepalive::ping_after`] (`None`: never).
    pub fn ping_after(mut self, d: Option<Duration>) -> Self {
        self.ping_after = d;
        self
    }

    /// Sets [`Keepalive::dead_after`].
    pub fn dead_after(mut self, d: Duration) -> Self {
        self.dead_after = d;
        self
    }
}

impl Default for Keepalive {
    fn default() -> Self {
        Keepalive {
            whitespace_after: Some(Duration::from_secs(60)),
            ping_after: Some(Duration::from_secs(120)),
            dead_after: Duration::from_secs(30),
        }
    }
}

/// Everything needed to open one authenticated CCS connection.
///
/// ```
/// use fcm_xmpp::{Config, Endpoint};
/// let config = Config::new("123456789012", "SERVER_KEY")
///     .endpoint(Endpoint::fcm_preproduction())
///     .domain("gcm.googleapis.com");
/// assert!(!format!("{config:?}").contains("SERVER_KEY"));
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct Config {
    /// Where to connect. Default: FCM production.
    pub endpoint: Endpoint,
    /// XMPP domain: stream `to` and SASL user suffix; letters, digits, `-` and `.`
    /// ([`validate`](Config::validate) checks). Default `gcm.googleapis.com`.
    pub domain: String,
    /// The sender id (project number).
    pub sender_id: String,
    /// The server key (redacted in `Debug`).
    pub server_key: ServerKey,
    /// The resource proposed at bind; the server appends a suffix. 1 to 1023 bytes of
    /// plain text (no markup characters, no control characters). Default `fcmxmpp`.
    pub resource: String,
    /// Per-phase timeouts.
    pub timeouts: Timeouts,
    /// Keepalive policy.
    pub keepalive: Keepalive,
    /// Largest stanza accepted from the server, in bytes. Default 65536.
    pub max_stanza_size: usize,
    /// Deepest element nesting accepted from the server. Default 32.
    pub max_depth: usize,
    /// Most downstream messages in flight (sent, no ack/nack yet) on one
    /// connection: 1..=100, default 100.
    pub max_pending: usize,
    /// Extra trusted root certificates, PEM encoded; each entry holds one
    /// certificate or a bundle of several (every one is added). Parsed by
    /// [`Config::validate`].
    pub extra_root_pems: Vec<Vec<u8>>,
    /// Accept any certificate. Tests only: it makes TLS worthless.
    pub danger_accept_invalid_certs: bool,
}

impl Config {
    /// A config for `sender_id` with `server_key` and every other field at its default.
    pub fn new(sender_id: impl Into<String>, server_key: impl Into<String>) -> Self {
        Config {
            endpoint: Endpoint::default(),
            domain: "gcm.googleapis.com".to_string(),
            sender_id: sender_id.into(),
            server_key: ServerKey::new(server_key),
            resource: "fcmxmpp".to_string(),
            timeouts: Timeouts::default(),
            keepalive: Keepalive::default(),
            max_stanza_size: 64 * 1024,
            max_depth: 32,
            max_pending: 100,
            extra_root_pems: Vec::new(),
            danger_accept_invalid_certs: false,
        }
    }

    /// Sets [`Config::endpoint`].
    pub fn endpoint(mut self, endpoint: Endpoint) -> Self {
        self.endpoint = endpoint;
        self
    }

    /// Sets [`Config::domain`].
    pub fn domain(mut self, domain: impl Into<String>) -> Self {
        self.domain = domain.into();
        self
    }

    /// Sets [`Config::resource`].
    pub fn resource(mut self, resource: impl Into<String>) -> Self {
        self.resource = resource.into();
        self
    }

    /// Sets [`Config::timeouts`].
    pub fn timeouts(mut self, timeouts: Timeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    /// Sets the connect timeout.
    pub fn connect_timeout(mut self, t: Option<Duration>) -> Self {
        self.timeouts.connect = t;
        self
    }

    /// Sets the handshake timeout.
    pub fn handshake_timeout(mut self, t: Option<Duration>) -> Self {
        self.timeouts.handshake = t;
        self
    }

    /// Sets the close timeout.
    pub fn close_timeout(mut self, t: Option<Duration>) -> Self {
        self.timeouts.close = t;
        self
    }

    /// Sets the read (silence) timeout.
    pub fn read_timeout(mut self, t: Option<Duration>) -> Self {
        self.timeouts.read = t;
        self
    }

    /// Sets the write timeout.
    pub fn write_timeout(mut self, t: Option<Duration>) -> Self {
        self.timeouts.write = t;
        self
    }

    /// Sets [`Config::keepalive`].
    pub fn keepalive(mut self, keepalive: Keepalive) -> Self {
        self.keepalive = keepalive;
        self
    }

    /// Sets [`Config::max_stanza_size`].
    pub fn max_stanza_size(mut self, bytes: usize) -> Self {
        self.max_stanza_size = bytes;
        self
    }

    /// Sets [`Config::max_depth`].
    pub fn max_depth(mut self, depth: usize) -> Self {
        self.max_depth = depth;
        self
    }

    /// Sets [`Config::max_pending`] (1..=100).
    pub fn max_pending(mut self, n: usize) -> Self {
        self.max_pending = n;
        self
    }

    /// Adds trusted root certificates in PEM form: one certificate, or a
    /// bundle of several (each is added). [`Config::validate`] (and so
    /// `Connection::connect` and `Client::start`) refuses an entry that is not
    /// PEM or holds no certificate.
    pub fn add_root_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.extra_root_pems.push(pem.into());
        self
    }

    /// Reads a PEM file (one certificate or a bundle) and adds every
    /// certificate in it as a trusted root, checking them at once.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for `extra_root_pems`, naming the file, if it
    /// cannot be read, is not PEM, or holds no certificate.
    pub fn add_root_pem_file(self, path: impl AsRef<std::path::Path>) -> Result<Self> {
        let path = path.as_ref();
        let bad = |reason: String| Error::InvalidConfig {
            field: "extra_root_pems",
            reason: format!("{}: {reason}", path.display()),
        };
        let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
        crate::transport::parse_roots(&pem).map_err(bad)?;
        Ok(self.add_root_pem(pem))
    }

    /// Accept any server certificate. Only for tests: this disables the
    /// protection TLS gives the server key.
    pub fn danger_accept_invalid_certs(mut self, yes: bool) -> Self {
        self.danger_accept_invalid_certs = yes;
        self
    }

    /// Checks every field once; `Connection::connect` calls it.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the first bad field.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &'static str, reason: &str| {
            Err(Error::InvalidConfig {
                field,
                reason: reason.to_string(),
            })
        };
        if self.endpoint.host.is_empty() {
            return bad("endpoint", "empty host");
        }
        if self.endpoint.port == 0 {
            return bad("endpoint", "port 0");
        }
        let dns_name = |s: &str| {
            !s.is_empty()
                && s.len() <= 253
                && s.split('.').all(|label| {
                    !label.is_empty()
                        && label.len() <= 63
                        && label
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                })
        };
        if !dns_name(&self.domain) {
            return bad(
                "domain",
                "must be a bare domain such as gcm.googleapis.com (letters, digits, '-', '.')",
            );
        }
        let plain = |s: &str| {
            s.chars()
                .all(|c| crate::xml::is_xml_char(c) && !c.is_control())
        };
        if self.sender_id.is_empty()
            || self.sender_id.len() > 1023
            || self.sender_id.contains(['@', '/', ' '])
            || !plain(&self.sender_id)
        {
            return bad("sender_id", "must be the bare sender id (project number)");
        }
        if self.server_key.is_empty() || self.server_key.expose().contains('\0') {
            return bad("server_key", "must be non-empty and contain no NUL");
        }
        if self.resource.is_empty()
            || self.resource.len() > 1023
            || self.resource.contains(['<', '&', '>'])
            || !plain(&self.resource)
        {
            return bad(
                "resource",
                "must be 1 to 1023 bytes of plain text without control characters",
            );
        }
        if !(1..=100).contains(&self.max_pending) {
            return bad(
                "max_pending",
                "must be 1..=100 (CCS allows 100 pending messages)",
            );
        }
        if self.max_stanza_size < 1024 {
            return bad("max_stanza_size", "must be at least 1024 bytes");
        }
        if !(4..=1024).contains(&self.max_depth) {
            return bad("max_depth", "must be 4..=1024");
        }
        for (i, pem) in self.extra_root_pems.iter().enumerate() {
            if let Err(why) = crate::transport::parse_roots(pem) {
                let n = self.extra_root_pems.len();
                return bad("extra_root_pems", &format!("entry {} of {n}: {why}", i + 1));
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("endpoint", &self.endpoint)
            .field("domain", &self.domain)
            .field("sender_id", &self.sender_id)
            .field("server_key", &self.server_key)
            .field("resource", &self.resource)
            .field("timeouts", &self.timeouts)
            .field("keepalive", &self.keepalive)
            .field("max_stanza_size", &self.max_stanza_size)
            .field("max_depth", &self.max_depth)
            .field("max_pending", &self.max_pending)
            .field("extra_root_pems", &self.extra_root_pems.len())
            .field(
                "danger_accept_invalid_certs",
                &self.danger_accept_invalid_certs,
            )
            .finish()
    }
}

#[cfg(test)]
mod tests;
