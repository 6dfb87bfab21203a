//! The worker over real TLS connections to the emulator: the I/O threads
//! wake for work and input, not on a timer.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::client::{Client, ClientConfig, ClientEvent, Events};
use crate::{Emulator, Message};

fn delivered(events: &mut Events, n: usize) {
    let mut got = 0;
    while got < n {
        match events.recv_timeout(Duration::from_secs(20)) {
            Ok(ClientEvent::Delivered { .. }) => got += 1,
            Ok(ClientEvent::Connected { .. }) => {}
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn idle_tls_connections_make_no_io_passes_and_a_send_takes_a_few() {
    let emu = Emulator::start("123456789012", "key").unwrap();
    // A worker that polled would pass every 1 ms (8 ms on this kernel).
    let cfg = ClientConfig::new(emu.client_config())
        .connections(4)
        .poll_interval(Duration::from_millis(1));
    let (client, mut events) = Client::start(cfg).unwrap();
    for i in 0..8 {
        client
            .send(Message::to("t").message_id(format!("w{i}")))
            .unwrap();
    }
    delivered(&mut events, 8);
    let passes = || client.inner.shared.io_passes.load(Ordering::Relaxed);
    // Let every connection settle into its wait.
    std::thread::sleep(Duration::from_millis(100));
    let before = passes();
    std::thread::sleep(Duration::from_millis(400));
    let idle = passes() - before;
    // Four connections idle for 0.4 s: at most one safety re-check each.
    assert!(idle <= 4, "{idle} I/O passes while idle");

    let before = passes();
    client.send(Message::to("t").message_id("one")).unwrap();
    delivered(&mut events, 1);
    let busy = passes() - before;
    // The wake-up of each connection, the ack's bytes, a spare or two.
    assert!(busy <= 4 * 2 + 4, "{busy} I/O passes for one message");
    assert!(client.shutdown(Duration::from_secs(5)).is_empty());
}
