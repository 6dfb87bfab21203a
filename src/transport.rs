//! Transport: TCP + direct TLS (no STARTTLS), with every blocking step bounded.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use native_tls::{Certificate, HandshakeError, TlsConnector, TlsStream};

use crate::client::cutoff::{CutOff, OnSet};
use crate::client::Waker;
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

/// Most distinct TLS settings (extra roots, verification switch) whose
/// connector [`shared_connector`] keeps.
const CONNECTOR_CACHE: usize = 8;

/// The TLS settings a connector is built from.
type ConnectorKey = (Vec<Vec<u8>>, bool);

/// The connectors [`shared_connector`] built, newest last.
static CACHE: Mutex<Vec<(ConnectorKey, TlsConnector)>> = Mutex::new(Vec::new());

/// The TLS connector for `config`, built once per process for each distinct
/// set of TLS settings and then shared by every connection that uses them.
///
/// Building one loads the system root store into a new OpenSSL context
/// (close to 1 MiB resident and tens of milliseconds of CPU); a clone of a
/// built connector shares that context. The cache holds at most
/// [`CONNECTOR_CACHE`] settings (the oldest goes first); a failed build is not
/// kept, and the system root store is read when a setting is first used.
pub(crate) fn shared_connector(config: &Config) -> Result<TlsConnector> {
    let key = (
        config.extra_root_pems.clone(),
        config.danger_accept_invalid_certs,
    );
    {
        let cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, c)) = cache.iter().find(|(k, _)| *k == key) {
            if config.danger_accept_invalid_certs {
                log::warn!("certificate verification is disabled (danger_accept_invalid_certs)");
            }
            return Ok(c.clone());
        }
    }
    // Built outside the lock: two first connects may both build; one is kept.
    let built = tls_connector(config)?;
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if !cache.iter().any(|(k, _)| *k == key) {
        if cache.len() >= CONNECTOR_CACHE {
            cache.remove(0);
        }
        cache.push((key, built.clone()));
    }
    Ok(built)
}

/// Builds a TLS connector: system roots, extra roots, verification on.
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
    let connector = shared_connector(config)?;
    let tcp = connect_tcp(config)?;
    let deadline = config
        .timeouts
        .handshake
        .map(|t| crate::time::later(Instant::now(), t));
    tcp.set_nonblocking(true)?;
    let mut s = tls_handshake(&connector, config, tcp, |tcp| wait_readable(tcp, deadline))?;
    SetTimeout::set_write_timeout(&mut s, config.timeouts.handshake)?;
    Ok((s, deadline))
}

/// Runs the TLS handshake over `stream` (nonblocking), calling `wait` whenever
/// it needs the server's next bytes; leaves the stream blocking.
fn tls_handshake<S: Read + Write + fmt::Debug + 'static>(
    connector: &TlsConnector,
    config: &Config,
    stream: S,
    mut wait: impl FnMut(&mut S) -> Result<()>,
) -> Result<TlsStream<S>>
where
    TlsStream<S>: SetTimeout,
{
    let mut attempt = connector.connect(&config.endpoint.host, stream);
    loop {
        match attempt {
            Ok(mut s) => {
                SetTimeout::set_nonblocking(&mut s, false)?;
                log::debug!("tls established with {}", config.endpoint);
                return Ok(s);
            }
            Err(HandshakeError::Failure(e)) => return Err(handshake_failure(e)),
            Err(HandshakeError::WouldBlock(mut mid)) => {
                wait(mid.get_mut())?;
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
        // No sign of a plaintext server (that would answer with bytes that are
        // not TLS: `NotTls`): a hang-up mid-handshake is worth another attempt.
        Error::Tls(
            TlsError::new(TlsErrorKind::Other, "peer closed during the tls handshake")
                .with_source(e),
        )
    } else {
        classify_tls(e)
    }
}

/// Size of the blocks a reader thread reads from its socket (at most this
/// much per block; a block holds what the kernel had).
const READ_BLOCK: usize = 16 * 1024;

/// Blocks a reader thread may have forwarded and the I/O thread not yet
/// taken; past this the reader stops reading (the peer then sees a full
/// window), so at most `READ_BLOCK * INBOUND_BLOCKS` (1 MiB) wait per
/// connection.
const INBOUND_BLOCKS: usize = 64;

/// What a reader thread forwards to its connection's I/O thread, on the
/// same channel as the wake-ups other threads send it.
pub(crate) enum Inbound {
    /// Raw bytes from the socket, in the order they arrived.
    Bytes(Vec<u8>),
    /// The socket ended: `None` at EOF, else the read error.
    End(Option<io::Error>),
    /// Work for the I/O thread (something to write, shutdown): return from
    /// [`ChannelSocket::wait_input`] at once.
    Wake,
}

/// What [`ChannelSocket::wait_input`] returned for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Waited {
    /// Bytes (or the end of the stream) are ready to read.
    Input,
    /// Another thread asked the I/O thread to look at its work.
    Woken,
    /// The time ran out.
    TimedOut,
}

/// Sends wake-ups to one [`ChannelSocket`], at most one in its channel at a
/// time: a busy I/O thread is not woken once per message.
#[derive(Clone)]
pub(crate) struct WakeSender {
    tx: mpsc::SyncSender<Inbound>,
    /// True while a wake-up is in the channel, not yet taken.
    queued: Arc<AtomicBool>,
}

impl fmt::Debug for WakeSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WakeSender").finish_non_exhaustive()
    }
}

impl WakeSender {
    /// Makes the I/O thread look at its work soon. When the channel is
    /// full of bytes no wake-up is queued: the I/O thread has input to take
    /// and looks at its work after taking it.
    pub(crate) fn wake(&self) {
        if !self.queued.swap(true, AtomicOrdering::AcqRel)
            && self.tx.try_send(Inbound::Wake).is_err()
        {
            self.queued.store(false, AtomicOrdering::Release);
        }
    }
}

/// A socket whose reads come from a reader thread and whose writes go
/// straight to the socket, so the one thread that owns a TLS session can
/// wait for bytes from the network and for work from other threads at once.
///
/// The reader thread blocks in `read` on a clone of the socket and forwards
/// each block over a bounded channel; [`WakeSender`]s share that channel.
/// Timeouts and nonblocking mode are kept here, never set on the socket
/// (the clone shares them). Dropping it shuts the socket down and joins the
/// reader thread.
pub(crate) struct ChannelSocket {
    tcp: TcpStream,
    rx: Option<mpsc::Receiver<Inbound>>,
    tx: mpsc::SyncSender<Inbound>,
    queued: Arc<AtomicBool>,
    block: Vec<u8>,
    at: usize,
    /// The stream ended; the error (if any) is returned by the next read.
    ended: bool,
    error: Option<io::Error>,
    woken: bool,
    read_timeout: Option<Duration>,
    nonblocking: bool,
    reader: Option<thread::JoinHandle<()>>,
    /// While connecting: the shutdown deadline, which wakes the waits when
    /// it is set; past it nothing is read or written.
    cut_off: Option<OnSet>,
}

impl fmt::Debug for ChannelSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChannelSocket")
            .field("buffered", &(self.block.len() - self.at))
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

impl ChannelSocket {
    /// Shuts the socket down (both directions): the reader thread then ends.
    #[cfg(feature = "emulator")]
    pub(crate) fn shutdown(&self) -> io::Result<()> {
        self.tcp.shutdown(std::net::Shutdown::Both)
    }

    /// Starts the reader thread on a clone of `tcp`.
    ///
    /// # Errors
    /// The socket cannot be cloned, or no thread can be started.
    pub(crate) fn new(tcp: TcpStream) -> io::Result<ChannelSocket> {
        ChannelSocket::named(tcp, "fcm-xmpp-read")
    }

    /// As [`new`](Self::new), naming the reader thread `name`.
    ///
    /// # Errors
    /// As [`new`](Self::new).
    pub(crate) fn named(tcp: TcpStream, name: &str) -> io::Result<ChannelSocket> {
        let mut source = tcp.try_clone()?;
        // The clone shares the socket's options: reads block with no
        // timeout; the I/O thread's waits are bounded on the channel.
        tcp.set_read_timeout(None)?;
        tcp.set_nonblocking(false)?;
        let (tx, rx) = mpsc::sync_channel(INBOUND_BLOCKS);
        let forward = tx.clone();
        let reader = thread::Builder::new()
            .name(name.into())
            .spawn(move || forward_blocks(&mut source, &forward))?;
        Ok(ChannelSocket {
            tcp,
            rx: Some(rx),
            tx,
            queued: Arc::new(AtomicBool::new(false)),
            block: Vec::new(),
            at: 0,
            ended: false,
            error: None,
            woken: false,
            read_timeout: None,
            nonblocking: false,
            reader: Some(reader),
            cut_off: None,
        })
    }

    /// A handle other threads use to wake the I/O thread.
    pub(crate) fn wake_sender(&self) -> WakeSender {
        WakeSender {
            tx: self.tx.clone(),
            queued: Arc::clone(&self.queued),
        }
    }

    /// Bounds every wait by `cut_off` and stops all reads and writes past it
    /// (`None`: no more).
    pub(crate) fn watch_cut_off(&mut self, cut_off: Option<&CutOff>) {
        self.cut_off = cut_off.map(|c| {
            let wake = self.wake_sender();
            c.on_set(Waker::new(move || wake.wake()))
        });
    }

    /// The cut-off deadline, if one is watched and set.
    fn cut_at(&self) -> Option<Instant> {
        self.cut_off.as_ref().and_then(|c| c.cut_off().at())
    }

    /// `Err` once the watched cut-off has passed. Not a timeout kind: the
    /// stream's read loops must not wait for more.
    fn check_cut_off(&self) -> io::Result<()> {
        match self.cut_at() {
            Some(at) if Instant::now() >= at => Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "connection attempt cut short at the shutdown deadline",
            )),
            _ => Ok(()),
        }
    }

    /// True if bytes (or the end of the stream) are here to read now.
    pub(crate) fn has_input(&self) -> bool {
        self.at < self.block.len() || self.ended
    }

    /// Waits until input is ready, a wake-up comes or `until` passes
    /// (`None`: no limit).
    pub(crate) fn wait_input(&mut self, until: Option<Instant>) -> Waited {
        loop {
            let until = crate::time::earlier(until, self.cut_at());
            if self.woken {
                self.woken = false;
                return Waited::Woken;
            }
            if self.has_input() {
                return Waited::Input;
            }
            let Some(rx) = &self.rx else {
                self.ended = true;
                continue;
            };
            let got = match until {
                None => rx.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected),
                Some(u) => {
                    let now = Instant::now();
                    if now >= u {
                        return Waited::TimedOut;
                    }
                    rx.recv_timeout(u - now)
                }
            };
            match got {
                Ok(m) => self.take(m),
                Err(mpsc::RecvTimeoutError::Timeout) => return Waited::TimedOut,
                Err(mpsc::RecvTimeoutError::Disconnected) => self.ended = true,
            }
        }
    }

    fn take(&mut self, m: Inbound) {
        match m {
            Inbound::Bytes(b) => {
                self.block = b;
                self.at = 0;
            }
            Inbound::End(e) => {
                self.ended = true;
                self.error = e;
            }
            Inbound::Wake => {
                self.queued.store(false, AtomicOrdering::Release);
                self.woken = true;
            }
        }
    }
}

/// The reader thread: forwards what `source` reads until it ends or the
/// [`ChannelSocket`] is gone. It waits for data with `peek` and only then
/// allocates a block, so an idle connection holds no read buffer here.
fn forward_blocks(source: &mut TcpStream, tx: &mpsc::SyncSender<Inbound>) {
    loop {
        let got = source.peek(&mut [0u8; 1]).and_then(|ready| {
            if ready == 0 {
                return Ok(Vec::new());
            }
            let mut block = vec![0u8; READ_BLOCK];
            let n = source.read(&mut block)?;
            block.truncate(n);
            Ok(block)
        });
        match got {
            Ok(block) if block.is_empty() => {
                let _ = tx.send(Inbound::End(None));
                return;
            }
            Ok(block) => {
                if tx.send(Inbound::Bytes(block)).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                let _ = tx.send(Inbound::End(Some(e)));
                return;
            }
        }
    }
}

impl Read for ChannelSocket {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        self.check_cut_off()?;
        let until = self
            .read_timeout
            .map(|t| crate::time::later(Instant::now(), t));
        let until = crate::time::earlier(until, self.cut_at());
        loop {
            if self.at < self.block.len() {
                let n = out.len().min(self.block.len() - self.at);
                out[..n].copy_from_slice(&self.block[self.at..self.at + n]);
                self.at += n;
                if self.at == self.block.len() {
                    // An idle connection keeps no block.
                    self.block = Vec::new();
                    self.at = 0;
                }
                return Ok(n);
            }
            if self.ended {
                return match self.error.take() {
                    Some(e) => Err(e),
                    None => Ok(0),
                };
            }
            let Some(rx) = &self.rx else {
                self.ended = true;
                continue;
            };
            let got = if self.nonblocking {
                rx.try_recv().map_err(|e| match e {
                    mpsc::TryRecvError::Empty => mpsc::RecvTimeoutError::Timeout,
                    mpsc::TryRecvError::Disconnected => mpsc::RecvTimeoutError::Disconnected,
                })
            } else {
                match until {
                    None => rx.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected),
                    Some(u) => rx.recv_timeout(u.saturating_duration_since(Instant::now())),
                }
            };
            match got {
                // A wake-up ends a blocking read (as its timeout would); one met
                // while draining without blocking is kept for `wait_input`.
                Ok(Inbound::Wake) if !self.nonblocking => {
                    self.take(Inbound::Wake);
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                Ok(m) => self.take(m),
                // `WouldBlock` as a socket's timeout reports it on Linux: OpenSSL
                // retries only that one (a `TimedOut` would fail the session).
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err(io::ErrorKind::WouldBlock.into())
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => self.ended = true,
            }
        }
    }
}

impl Write for ChannelSocket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.check_cut_off()?;
        self.tcp.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.tcp.flush()
    }
}

impl SetTimeout for ChannelSocket {
    fn set_read_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.read_timeout = timeout;
        Ok(())
    }
    fn set_write_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        TcpStream::set_write_timeout(&self.tcp, normalise(timeout))
    }
    fn set_nonblocking(&mut self, nonblocking: bool) -> io::Result<()> {
        self.nonblocking = nonblocking;
        Ok(())
    }
}

impl Drop for ChannelSocket {
    fn drop(&mut self) {
        // Ends the reader's `read`; dropping the receiver ends a `send`
        // blocked on a full channel. Then the thread is joined, not leaked.
        let _ = self.tcp.shutdown(std::net::Shutdown::Both);
        self.rx.take();
        if let Some(h) = self.reader.take() {
            let _ = h.join();
        }
    }
}

/// Like [`connect_tls`], but the TLS session runs over a [`ChannelSocket`]:
/// a reader thread forwards the socket's bytes. The handshake deadline
/// bounds the whole TLS handshake as there.
pub(crate) fn connect_tls_threaded(
    config: &Config,
    cut_off: &CutOff,
) -> Result<(TlsStream<ChannelSocket>, Option<Instant>)> {
    let connector = shared_connector(config)?;
    let tcp = connect_tcp(config)?;
    if cut_off.is_past(Instant::now()) {
        return Err(Error::Timeout(Phase::Connect));
    }
    let deadline = config
        .timeouts
        .handshake
        .map(|t| crate::time::later(Instant::now(), t));
    tcp.set_write_timeout(normalise(config.timeouts.handshake))?;
    let mut sock = ChannelSocket::new(tcp)?;
    sock.watch_cut_off(Some(cut_off));
    sock.nonblocking = true;
    let s = tls_handshake(&connector, config, sock, |sock| {
        match sock.wait_input(deadline) {
            Waited::TimedOut => Err(Error::Timeout(Phase::Tls)),
            _ => Ok(()),
        }
    })?;
    Ok((s, deadline))
}

#[cfg(test)]
mod tests;
