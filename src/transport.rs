//! Transport: TCP + direct TLS (no STARTTLS), with every blocking step bounded.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use native_tls::{Certificate, HandshakeError, TlsConnector, TlsStream};

use crate::config::Config;
use crate::error::{Error, Phase, Result, TlsError, TlsErrorKind};

/// Timeout control over a stream, so [`Connection`](crate::Connection) can stay
/// generic over any `Read + Write` (TLS socket, plain socket, in-memory mock).
pub trait SetTimeout {
    /// Sets how long one `read` may block; `None` blocks forever.
    fn set_read_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()>;
    /// Sets how long one `write` may block; `None` blocks forever.
    fn set_write_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()>;
    /// Switches nonblocking mode: reads return `WouldBlock` at once when no
    /// data is ready. Only used around reads; writes always block (bounded).
    fn set_nonblocking(&mut self, nonblocking: bool) -> io::Result<()>;

    /// True if the stream is encrypted and authenticated (TLS). The handshake
    /// refuses to send the server key over a stream that says `false`, so a
    /// stream type wrapping another TLS library must return `true` here.
    fn is_encrypted(&self) -> bool {
        false
    }
}

impl SetTimeout for TcpStream {
    fn set_read_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        TcpStream::set_read_timeout(self, normalise(timeout))
    }
    fn set_write_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        TcpStream::set_write_timeout(self, normalise(timeout))
    }
    fn set_nonblocking(&mut self, nonblocking: bool) -> io::Result<()> {
        TcpStream::set_nonblocking(self, nonblocking)
    }
}

impl<S: SetTimeout + Read + Write> SetTimeout for TlsStream<S> {
    fn set_read_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.get_mut().set_read_timeout(timeout)
    }
    fn set_write_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.get_mut().set_write_timeout(timeout)
    }
    fn set_nonblocking(&mut self, nonblocking: bool) -> io::Result<()> {
        self.get_mut().set_nonblocking(nonblocking)
    }
    fn is_encrypted(&self) -> bool {
        true
    }
}

impl<S: SetTimeout + ?Sized> SetTimeout for Box<S> {
    fn set_read_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        (**self).set_read_timeout(timeout)
    }
    fn set_write_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        (**self).set_write_timeout(timeout)
    }
    fn set_nonblocking(&mut self, nonblocking: bool) -> io::Result<()> {
        (**self).set_nonblocking(nonblocking)
    }
    fn is_encrypted(&self) -> bool {
        (**self).is_encrypted()
    }
}

/// `set_read_timeout(Some(0))` is an error in std; treat it as the smallest wait.
fn normalise(t: Option<Duration>) -> Option<Duration> {
    t.map(|d| d.max(Duration::from_millis(1)))
}

/// True for the two ways platforms report a read/write timeout.
pub(crate) fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Resolves `host:port`, bounded by `timeout` (name lookup runs on a helper
/// thread because `getaddrinfo` has no timeout of its own).
fn resolve(host: &str, port: u16, timeout: Option<Duration>) -> Result<Vec<SocketAddr>> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let (tx, rx) = mpsc::channel();
    let target = (host.to_string(), port);
    thread::Builder::new()
        .name("fcm-xmpp-resolve".into())
        .spawn(move || {
            let r = target.to_socket_addrs().map(|a| a.collect::<Vec<_>>());
            let _ = tx.send(r);
        })?;
    let answer = match timeout {
        Some(t) => rx
            .recv_timeout(t)
            .map_err(|_| Error::Timeout(Phase::Resolve))?,
        None => rx.recv().map_err(|_| Error::Timeout(Phase::Resolve))?,
    };
    let addrs = answer?;
    if addrs.is_empty() {
        return Err(Error::Io(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{host} has no addresses"),
        )));
    }
    Ok(addrs)
}

/// Opens the TCP connection, trying each resolved address in turn.
pub(crate) fn connect_tcp(config: &Config) -> Result<TcpStream> {
    let ep = &config.endpoint;
    let timeout = config.timeouts.connect;
    let mut last = None;
    for addr in resolve(&ep.host, ep.port, timeout)? {
        let r = match timeout {
            Some(t) => TcpStream::connect_timeout(&addr, t.max(Duration::from_millis(1))),
            None => TcpStream::connect(addr),
        };
        match r {
            Ok(s) => {
                s.set_nodelay(true)?;
                log::debug!("tcp connected to {addr}");
                return Ok(s);
            }
            Err(e) if is_timeout(&e) => last = Some(Error::Timeout(Phase::Connect)),
            Err(e) => last = Some(Error::Io(e)),
        }
    }
    Err(last.unwrap_or(Error::Timeout(Phase::Connect)))
}

/// Every certificate in a PEM text (one, or a bundle); an error if the text
/// is not PEM, a certificate in it does not parse, or it holds none.
pub(crate) fn parse_roots(pem: &[u8]) -> std::result::Result<Vec<Certificate>, String> {
    const BEGIN: &[u8] = b"-----BEGIN CERTIFICATE-----";
    let blocks = pem.windows(BEGIN.len()).filter(|w| *w == BEGIN).count();
    if blocks == 0 {
        return Err("no PEM certificate in it (want -----BEGIN CERTIFICATE-----)".into());
    }
    let certs = Certificate::stack_from_pem(pem)
        .map_err(|e| format!("not a valid PEM certificate: {e}"))?;
    if certs.len() != blocks {
        return Err(format!(
            "{} of its {blocks} certificates parse",
            certs.len()
        ));
    }
    Ok(certs)
}

/// Builds the TLS connector: system roots, extra roots, verification on.
pub(crate) fn tls_connector(config: &Config) -> Result<TlsConnector> {
    let mut b = TlsConnector::builder();
    for pem in &config.extra_root_pems {
        let certs =
            parse_roots(pem).map_err(|why| TlsError::new(TlsErrorKind::BadRootCertificate, why))?;
        for cert in certs {
            b.add_root_certificate(cert);
        }
    }
    if config.danger_accept_invalid_certs {
        log::warn!("certificate verification is disabled (danger_accept_invalid_certs)");
        b.danger_accept_invalid_certs(true);
    }
    b.build().map_err(|e| {
        TlsError::new(TlsErrorKind::Other, "building connector")
            .with_source(e)
            .into()
    })
}

/// Classifies a TLS handshake failure from the library's message.
fn classify_tls(e: native_tls::Error) -> Error {
    let text = e.to_string();
    let lower = text.to_ascii_lowercase();
    let kind = if lower.contains("certificate")
        || lower.contains("verify")
        || lower.contains("hostname")
        || lower.contains("ip address mismatch")
    {
        TlsErrorKind::Certificate
    } else if lower.contains("wrong version number")
        || lower.contains("packet length too long")
        || lower.contains("unknown protocol")
        || lower.contains("record layer failure")
    {
        TlsErrorKind::NotTls
    } else {
        TlsErrorKind::Other
    };
    Error::Tls(TlsError::new(kind, text).with_source(e))
}

/// TCP connect + TLS handshake with SNI = the endpoint host, bounded by the
/// connect and handshake timeouts.
///
/// The handshake runs on a nonblocking socket and waits for the server
/// between steps with a bounded `peek`, so the handshake timeout bounds the
/// whole TLS handshake: a server that trickles a byte at a time cannot stretch
/// it (a per-read timeout would restart with every byte).
/// Returns the stream and the handshake deadline, which the XMPP handshake
/// that follows shares.
pub(crate) fn connect_tls(config: &Config) -> Result<(TlsStream<TcpStream>, Option<Instant>)> {
    let connector = tls_connector(config)?;
    let tcp = connect_tcp(config)?;
    let deadline = config
        .timeouts
        .handshake
        .map(|t| crate::time::later(Instant::now(), t));
    tcp.set_nonblocking(true)?;
    let mut attempt = connector.connect(&config.endpoint.host, tcp);
    loop {
        match attempt {
            Ok(mut s) => {
                SetTimeout::set_nonblocking(&mut s, false)?;
                SetTimeout::set_write_timeout(&mut s, config.timeouts.handshake)?;
                log::debug!("tls established with {}", config.endpoint);
                return Ok((s, deadline));
            }
            Err(HandshakeError::Failure(e)) => return Err(handshake_failure(e)),
            Err(HandshakeError::WouldBlock(mid)) => {
                wait_readable(mid.get_ref(), deadline)?;
                attempt = mid.handshake();
            }
        }
    }
}

/// Blocks until `tcp` has data (or EOF, or an error, which the next handshake
/// step reports) or `deadline` passes (`Timeout(Tls)`). Leaves it nonblocking.
/// The handshake's own flights are a few KiB, so a nonblocking write does not
/// stall on a fresh socket; if it ever did, the deadline still ends the wait.
fn wait_readable(tcp: &TcpStream, deadline: Option<Instant>) -> Result<()> {
    let wait = match deadline {
        Some(d) => {
            let now = Instant::now();
            if now >= d {
                return Err(Error::Timeout(Phase::Tls));
            }
            Some(d - now)
        }
        None => None,
    };
    tcp.set_nonblocking(false)?;
    tcp.set_read_timeout(normalise(wait))?;
    let r = tcp.peek(&mut [0u8; 1]);
    tcp.set_nonblocking(true)?;
    match r {
        Err(e) if is_timeout(&e) => Err(Error::Timeout(Phase::Tls)),
        _ => Ok(()),
    }
}

/// Maps a failed TLS handshake to a typed error.
fn handshake_failure(e: native_tls::Error) -> Error {
    // A timeout surfaces as an I/O error inside the TLS error text.
    let msg = e.to_string().to_ascii_lowercase();
    if msg.contains("timed out")
        || msg.contains("would block")
        || msg.contains("resource temporarily unavailable")
    {
        Error::Timeout(Phase::Tls)
    } else if msg.contains("unexpected eof") || msg.contains("connection reset") {
        Error::Tls(
            TlsError::new(TlsErrorKind::NotTls, "peer closed during the tls handshake")
                .with_source(e),
        )
    } else {
        classify_tls(e)
    }
}
