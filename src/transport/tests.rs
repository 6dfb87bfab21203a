use super::*;
use std::net::TcpListener;

/// A connected loopback pair: (our side as a `ChannelSocket`, the peer).
fn pair() -> (ChannelSocket, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let ours = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (peer, _) = l.accept().unwrap();
    (ChannelSocket::new(ours).unwrap(), peer)
}

fn soon() -> Option<Instant> {
    Some(Instant::now() + Duration::from_secs(5))
}

#[test]
fn bytes_arrive_in_order_and_the_stream_ends_at_eof() {
    let (mut sock, mut peer) = pair();
    peer.write_all(b"hello ").unwrap();
    peer.write_all(b"world").unwrap();
    drop(peer);
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut got = Vec::new();
    sock.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"hello world");
    assert_eq!(
        sock.wait_input(soon()),
        Waited::Input,
        "EOF counts as input"
    );
}

#[test]
fn the_reader_thread_ends_when_the_peer_closes() {
    let (mut sock, peer) = pair();
    drop(peer);
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(sock.read(&mut [0; 8]).unwrap(), 0);
    let reader = sock.reader.as_ref().unwrap();
    let end = Instant::now() + Duration::from_secs(5);
    while !reader.is_finished() {
        assert!(
            Instant::now() < end,
            "reader thread still running after EOF"
        );
        thread::sleep(Duration::from_millis(1));
    }
}

/// Drops `sock` on a thread of its own and fails unless that returns within
/// 5 s: drop joins the reader thread, so it returns only once that ended.
fn drop_ends_the_reader_thread(sock: ChannelSocket) {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        drop(sock);
        let _ = tx.send(());
    });
    rx.recv_timeout(Duration::from_secs(5))
        .expect("drop did not end the reader thread");
}

#[test]
fn dropping_the_socket_ends_its_reader_thread_while_the_peer_stays_open() {
    let (sock, _peer) = pair();
    drop_ends_the_reader_thread(sock);
}

#[test]
fn dropping_the_socket_ends_a_reader_blocked_on_a_full_channel() {
    let (sock, mut peer) = pair();
    // More blocks than the channel holds, none taken.
    let chunk = vec![b'x'; 1024];
    for _ in 0..INBOUND_BLOCKS * 4 {
        peer.write_all(&chunk).unwrap();
        thread::sleep(Duration::from_micros(200));
    }
    drop_ends_the_reader_thread(sock);
}

#[test]
fn many_wake_ups_make_one() {
    let (mut sock, _peer) = pair();
    let waker = sock.wake_sender();
    for _ in 0..1000 {
        waker.wake();
    }
    assert_eq!(sock.wait_input(soon()), Waited::Woken);
    let short = Some(Instant::now() + Duration::from_millis(20));
    assert_eq!(sock.wait_input(short), Waited::TimedOut);
    // Taken: the next one gets through.
    waker.wake();
    assert_eq!(sock.wait_input(soon()), Waited::Woken);
}

#[test]
fn a_wake_up_that_finds_the_channel_full_does_not_block_later_ones() {
    let (mut sock, _peer) = pair();
    let waker = sock.wake_sender();
    let mut filled = 0;
    while sock.tx.try_send(Inbound::Bytes(vec![b'x'])).is_ok() {
        filled += 1;
    }
    waker.wake(); // no room: nothing queued
    sock.set_nonblocking(true).unwrap();
    let mut taken = 0;
    let mut buf = [0u8; 4];
    loop {
        match sock.read(&mut buf) {
            Ok(n) => taken += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(taken, filled);
    waker.wake();
    assert_eq!(sock.wait_input(soon()), Waited::Woken);
}

#[test]
fn a_wake_up_met_inside_a_read_is_kept_for_the_wait() {
    let (mut sock, mut peer) = pair();
    let waker = sock.wake_sender();
    peer.write_all(b"a").unwrap();
    assert_eq!(sock.wait_input(soon()), Waited::Input);
    waker.wake();
    sock.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 8];
    assert_eq!(sock.read(&mut buf).unwrap(), 1);
    assert_eq!(
        sock.read(&mut buf).unwrap_err().kind(),
        io::ErrorKind::WouldBlock
    );
    assert_eq!(sock.wait_input(soon()), Waited::Woken);
}

#[test]
fn a_wake_up_ends_a_blocking_read() {
    let (mut sock, _peer) = pair();
    sock.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    sock.wake_sender().wake();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let r = sock.read(&mut [0; 8]).map_err(|e| e.kind());
        let _ = tx.send(r);
    });
    let r = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("the read went on after the wake-up");
    assert_eq!(r, Err(io::ErrorKind::WouldBlock));
}

#[test]
fn a_read_timeout_is_would_block_which_openssl_retries() {
    let (mut sock, _peer) = pair();
    sock.set_read_timeout(Some(Duration::from_millis(5)))
        .unwrap();
    let e = sock.read(&mut [0; 8]).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
}

#[test]
fn a_peer_that_stops_reading_does_not_block_the_reader() {
    let (mut sock, mut peer) = pair();
    peer.write_all(b"first").unwrap();
    sock.set_write_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    // Write until the peer's window and ours are full and a write times out.
    let chunk = vec![0u8; 64 * 1024];
    let mut stuck = false;
    for _ in 0..2000 {
        match sock.write(&chunk) {
            Ok(_) => {}
            Err(e) if is_timeout(&e) => {
                stuck = true;
                break;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(stuck, "the writes never blocked");
    peer.write_all(b" second").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    while got.len() < b"first second".len() {
        let n = sock.read(&mut buf).unwrap();
        assert!(n > 0, "eof");
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(got, b"first second");
}

#[test]
fn a_connector_is_built_once_per_tls_setting_and_the_cache_stays_bounded() {
    let pem: &[u8] = include_bytes!("../emulator/testdata/cert.pem");
    // Settings no other test uses: the certificate k times over.
    let config = |k: usize| {
        let mut c = Config::new("1", "k");
        c.extra_root_pems = vec![pem.to_vec(); 10 + k];
        c
    };
    let key = |k: usize| (config(k).extra_root_pems, false);
    let held = |k: usize| CACHE.lock().unwrap().iter().any(|(c, _)| *c == key(k));
    shared_connector(&config(0)).unwrap();
    assert!(held(0), "the connector is kept");
    for k in 1..=CONNECTOR_CACHE * 2 {
        shared_connector(&config(k)).unwrap();
    }
    assert!(CACHE.lock().unwrap().len() <= CONNECTOR_CACHE);
    assert!(held(CONNECTOR_CACHE * 2), "the newest is kept");
    assert!(!held(0), "the oldest went first");
}
