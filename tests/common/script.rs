//! A scripted server on 127.0.0.1:0 for hostile-server tests: each accepted
//! connection plays a list of [`Step`]s (TLS accept, wait for the client's
//! bytes, write, go silent, close, relay). Every blocking call polls a stop
//! flag, so dropping the server ends every connection thread promptly.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use native_tls::{HandshakeError, Identity, TlsAcceptor, TlsStream};

/// The emulator's committed test identity (trusted by `Emulator::client_config()`).
pub const EMU_CERT: &[u8] = include_bytes!("../../src/emulator/testdata/cert.pem");
pub const EMU_KEY: &[u8] = include_bytes!("../../src/emulator/testdata/key.pem");

/// How often blocked reads and writes look at the stop flag.
const POLL: Duration = Duration::from_millis(10);

/// One step of a connection's script.
#[derive(Debug, Clone)]
pub enum Step {
    /// Accept TLS with the server's identity.
    Tls,
    /// Read until the bytes received since the previous `Until` match contain
    /// the marker; the script ends if the client closes first.
    Until(&'static str),
    /// Write these bytes (in 16 KiB pieces; the script ends on a write error).
    Write(Vec<u8>),
    /// Write `head`, then `fill` repeated `times`, then `tail`, without
    /// building the whole thing in memory first.
    WriteRepeated {
        head: Vec<u8>,
        fill: Vec<u8>,
        times: usize,
        tail: Vec<u8>,
    },
    /// Write these bytes one at a time, `every` apart (a server that trickles).
    Trickle { bytes: Vec<u8>, every: Duration },
    /// Write these bytes again and again until the client goes away (a server
    /// that never stops talking).
    Flood(Vec<u8>),
    /// Stay connected, read and discard, never write, until the client
    /// closes or the server stops.
    Silent,
    /// Close the TCP connection (no TLS close_notify, no `</stream:stream>`).
    Close,
    /// Forward raw bytes both ways to this address (use before any `Tls`).
    Relay(SocketAddr),
    /// Record that the script got here, and when ([`ScriptServer::notes`]).
    Note(&'static str),
}

/// Shorthand for `Step::Write` of text.
pub fn write(s: impl AsRef<str>) -> Step {
    Step::Write(s.as_ref().as_bytes().to_vec())
}

/// Shorthand for `Step::Until`.
pub fn until(marker: &'static str) -> Step {
    Step::Until(marker)
}

pub const SERVER_HEADER: &str = "<stream:stream from=\"gcm.googleapis.com\" id=\"3F2A9C0D11B7E845\" version=\"1.0\" xmlns:stream=\"http://etherx.jabber.org/streams\" xmlns=\"jabber:client\">";
pub const SASL_FEATURES: &str = "<stream:features><mechanisms xmlns=\"urn:ietf:params:xml:ns:xmpp-sasl\"><mechanism>X-OAUTH2</mechanism><mechanism>X-GOOGLE-TOKEN</mechanism><mechanism>PLAIN</mechanism></mechanisms></stream:features>";
pub const SUCCESS: &str = "<success xmlns=\"urn:ietf:params:xml:ns:xmpp-sasl\"/>";
pub const BIND_FEATURES: &str = "<stream:features><bind xmlns=\"urn:ietf:params:xml:ns:xmpp-bind\"/><session xmlns=\"urn:ietf:params:xml:ns:xmpp-session\"/></stream:features>";
pub const BOUND_JID: &str = "123456789012@gcm.googleapis.com/fcmxmppDEADBEEF";
pub const SESSION_RESULT: &str = "<iq type=\"result\" id=\"sess1\"/>";
/// The end of the client's stream header.
pub const CLIENT_HEADER_END: &str = "etherx.jabber.org/streams\">";

pub fn bind_result() -> String {
    format!("<iq type=\"result\" id=\"bind1\"><bind xmlns=\"urn:ietf:params:xml:ns:xmpp-bind\"><jid>{BOUND_JID}</jid></bind></iq>")
}

/// TLS, stream header and SASL features, up to the client's `<auth>`.
pub fn until_auth() -> Vec<Step> {
    vec![
        Step::Tls,
        until(CLIENT_HEADER_END),
        write(format!("{SERVER_HEADER}{SASL_FEATURES}")),
        until("</auth>"),
    ]
}

/// `until_auth`, success, the restarted stream and bind features, up to the
/// client's bind request.
pub fn until_bind() -> Vec<Step> {
    let mut s = until_auth();
    s.extend([
        write(SUCCESS),
        until(CLIENT_HEADER_END),
        write(format!("{SERVER_HEADER}{BIND_FEATURES}")),
        until("</iq>"),
    ]);
    s
}

/// A whole successful handshake, as CCS answers it.
pub fn handshake() -> Vec<Step> {
    let mut s = until_bind();
    s.extend([write(bind_result()), until("</iq>"), write(SESSION_RESULT)]);
    s
}

/// Runs scripts: connection `i` plays `scripts[i]`, later connections the last one.
pub struct ScriptServer {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicUsize>,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
    acceptor: Option<JoinHandle<()>>,
    notes: Notes,
}

/// Every `Step::Note` reached, with its instant.
type Notes = Arc<Mutex<Vec<(&'static str, Instant)>>>;

impl ScriptServer {
    /// A server with the emulator's identity.
    pub fn start(scripts: Vec<Vec<Step>>) -> ScriptServer {
        ScriptServer::with_identity(EMU_CERT, EMU_KEY, scripts)
    }

    /// A server whose `Step::Tls` presents this PEM certificate and PKCS#8 key.
    pub fn with_identity(cert: &[u8], key: &[u8], scripts: Vec<Vec<Step>>) -> ScriptServer {
        assert!(!scripts.is_empty());
        let identity = Identity::from_pkcs8(cert, key).expect("test identity");
        let tls = Arc::new(TlsAcceptor::new(identity).expect("tls acceptor"));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        let threads: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let notes = Notes::default();
        let (s, a, t, nt) = (
            Arc::clone(&stop),
            Arc::clone(&accepted),
            Arc::clone(&threads),
            Arc::clone(&notes),
        );
        let acceptor = thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((tcp, _)) => {
                        let n = a.fetch_add(1, Ordering::SeqCst);
                        let script = scripts[n.min(scripts.len() - 1)].clone();
                        let conn = Conn {
                            io: Io::Plain(tcp),
                            seen: Vec::new(),
                            cursor: 0,
                            stop: Arc::clone(&s),
                            notes: Arc::clone(&nt),
                        };
                        let tls = Arc::clone(&tls);
                        let h = thread::spawn(move || {
                            // Ends early when the client goes away: that is the point.
                            let _ = conn.play(&tls, script);
                        });
                        t.lock().unwrap().push(h);
                    }
                    Err(_) => thread::sleep(POLL),
                }
            }
        });
        ScriptServer {
            addr,
            stop,
            accepted,
            threads,
            acceptor: Some(acceptor),
            notes,
        }
    }

    /// The `Step::Note`s reached so far, in order, with their instants.
    pub fn notes(&self) -> Vec<(&'static str, Instant)> {
        self.notes.lock().unwrap().clone()
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for ScriptServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
        for h in std::mem::take(&mut *self.threads.lock().unwrap()) {
            let _ = h.join();
        }
    }
}

enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    Gone,
}

struct Conn {
    io: Io,
    seen: Vec<u8>,
    cursor: usize,
    stop: Arc<AtomicBool>,
    notes: Notes,
}

fn stopped() -> io::Error {
    io::Error::other("script server stopped")
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

impl Conn {
    fn tcp(&self) -> &TcpStream {
        match &self.io {
            Io::Plain(t) => t,
            Io::Tls(t) => t.get_ref(),
            Io::Gone => unreachable!(),
        }
    }

    /// Plays the script; `Err` when it ended early (client gone, stop, TLS failure).
    fn play(mut self, tls: &TlsAcceptor, script: Vec<Step>) -> io::Result<()> {
        self.tcp().set_read_timeout(Some(POLL))?;
        self.tcp().set_write_timeout(Some(POLL))?;
        let r = script.into_iter().try_for_each(|step| self.step(tls, step));
        if !matches!(self.io, Io::Gone) {
            let _ = self.tcp().shutdown(Shutdown::Both);
        }
        r
    }

    fn step(&mut self, tls: &TlsAcceptor, step: Step) -> io::Result<()> {
        if self.stop.load(Ordering::Relaxed) {
            return Err(stopped());
        }
        match step {
            Step::Tls => {
                let Io::Plain(tcp) = std::mem::replace(&mut self.io, Io::Gone) else {
                    panic!("Step::Tls twice");
                };
                let mut r = tls.accept(tcp);
                loop {
                    match r {
                        Ok(s) => {
                            self.io = Io::Tls(Box::new(s));
                            return Ok(());
                        }
                        Err(HandshakeError::WouldBlock(mid)) => {
                            if self.stop.load(Ordering::Relaxed) {
                                return Err(stopped());
                            }
                            r = mid.handshake();
                        }
                        Err(HandshakeError::Failure(e)) => return Err(io::Error::other(e)),
                    }
                }
            }
            Step::Until(marker) => loop {
                let m = marker.as_bytes();
                if let Some(i) = self.seen[self.cursor..]
                    .windows(m.len())
                    .position(|w| w == m)
                {
                    self.cursor += i + m.len();
                    return Ok(());
                }
                if self.read_some()? == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
            },
            Step::Write(bytes) => self.write_all(&bytes),
            Step::WriteRepeated {
                head,
                fill,
                times,
                tail,
            } => {
                self.write_all(&head)?;
                for _ in 0..times {
                    self.write_all(&fill)?;
                }
                self.write_all(&tail)
            }
            Step::Trickle { bytes, every } => {
                for b in bytes {
                    self.write_all(&[b])?;
                    self.pause(every)?;
                }
                Ok(())
            }
            Step::Flood(bytes) => {
                let block = bytes.repeat((16 * 1024 / bytes.len().max(1)).max(1));
                loop {
                    self.write_all(&block)?;
                }
            }
            Step::Silent => loop {
                if self.read_some()? == 0 {
                    return Ok(());
                }
            },
            Step::Note(what) => {
                self.notes.lock().unwrap().push((what, Instant::now()));
                Ok(())
            }
            Step::Close => {
                let _ = self.tcp().shutdown(Shutdown::Both);
                Ok(())
            }
            Step::Relay(to) => {
                let Io::Plain(client) = std::mem::replace(&mut self.io, Io::Gone) else {
                    panic!("Step::Relay after Step::Tls");
                };
                let server = TcpStream::connect(to)?;
                let a = relay(
                    client.try_clone()?,
                    server.try_clone()?,
                    Arc::clone(&self.stop),
                );
                let b = relay(server, client, Arc::clone(&self.stop));
                let _ = a.join();
                let _ = b.join();
                Ok(())
            }
        }
    }

    /// Sleeps `d`, watching the stop flag.
    fn pause(&self, d: Duration) -> io::Result<()> {
        let end = std::time::Instant::now() + d;
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return Err(stopped());
            }
            let now = std::time::Instant::now();
            if now >= end {
                return Ok(());
            }
            thread::sleep((end - now).min(POLL));
        }
    }

    /// One read (retried across timeouts); 0 at EOF.
    fn read_some(&mut self) -> io::Result<usize> {
        let mut buf = [0u8; 16 * 1024];
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return Err(stopped());
            }
            let r = match &mut self.io {
                Io::Plain(t) => t.read(&mut buf),
                Io::Tls(t) => t.read(&mut buf),
                Io::Gone => unreachable!(),
            };
            match r {
                Ok(n) => {
                    self.seen.extend_from_slice(&buf[..n]);
                    return Ok(n);
                }
                Err(e) if is_timeout(&e) => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        for piece in bytes.chunks(16 * 1024) {
            let mut done = 0;
            while done < piece.len() {
                if self.stop.load(Ordering::Relaxed) {
                    return Err(stopped());
                }
                // A timed-out TLS write must be retried with the same bytes.
                let r = match &mut self.io {
                    Io::Plain(t) => t.write(&piece[done..]),
                    Io::Tls(t) => t.write(&piece[done..]),
                    Io::Gone => unreachable!(),
                };
                match r {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => done += n,
                    Err(e) if is_timeout(&e) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }
}

/// Copies `from` to `to` until EOF, an error or the stop flag.
fn relay(mut from: TcpStream, mut to: TcpStream, stop: Arc<AtomicBool>) -> JoinHandle<()> {
    thread::spawn(move || {
        let _ = from.set_read_timeout(Some(POLL));
        let _ = to.set_write_timeout(Some(Duration::from_secs(2)));
        let mut buf = [0u8; 16 * 1024];
        while !stop.load(Ordering::Relaxed) {
            match from.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                Err(e) if is_timeout(&e) => {}
                Err(_) => break,
            }
        }
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    })
}
