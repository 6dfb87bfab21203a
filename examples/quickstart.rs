//! The main job, end to end on any machine: starts the bundled CCS emulator,
//! connects to it over TLS (trusting its test certificate), sends a few
//! messages (one to a token the emulator rejects), receives an upstream
//! message and a delivery receipt, acks them, and prints every event.
//!
//! `cargo run --example quickstart --features emulator`

use std::error::Error;
use std::time::{Duration, Instant};

use fcm_xmpp::emulator::Emulator;
use fcm_xmpp::{Connection, Event, Message, NackCode, Notification, Priority};

fn main() -> Result<(), Box<dyn Error>> {
    let emulator = Emulator::builder()
        .sender_id("123456789012")
        .server_key("quickstart-server-key")
        .start()?;
    emulator.reject_token("stale-token", NackCode::DeviceUnregistered);
    println!(
        "emulator  listening on {} (TLS, self-signed test certificate)",
        emulator.addr()
    );

    // Everything a real app server needs: endpoint, sender id, key, trust.
    let config = emulator.client_config();
    let mut conn = Connection::connect(&config)?;
    println!("connected as {}", conn.jid());

    let messages = [
        Message::to("device-token-1")
            .data("greeting", "hello & welcome <3")
            .time_to_live(600),
        Message::to("stale-token").data("greeting", "nobody home"),
        Message::to_topic("news")
            .notification(
                Notification::new()
                    .title("Quickstart")
                    .body("A topic message"),
            )
            .priority(Priority::High),
        Message::to("device-token-2")
            .data("greeting", "tell me when it arrives")
            .delivery_receipt_requested(true),
    ];
    for m in &messages {
        let id = conn.send(m)?;
        println!("sent      {id} -> {}", m.target());
    }
    let upstream_id = emulator.inject_upstream(
        "device-token-1",
        "com.example.app",
        &[("text", "hi from the device")],
    );
    println!("device    sends upstream message {upstream_id}");

    // Read until every message has an outcome and the upstream message and
    // the receipt have arrived (and been acked).
    let (mut outcomes, mut upstream, mut receipts) = (0, 0, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while outcomes < messages.len() || upstream < 1 || receipts < 1 {
        if Instant::now() > deadline {
            return Err("timed out waiting for events".into());
        }
        let Some(event) = conn.recv_event(Some(Duration::from_millis(500)))? else {
            continue;
        };
        match &event {
            Event::Ack(a) => {
                outcomes += 1;
                println!(
                    "ack       {} (delivered to {})",
                    a.message_id,
                    a.from.as_deref().unwrap_or("?")
                );
            }
            Event::Nack(n) => {
                outcomes += 1;
                println!(
                    "nack      {} {} (retry: {:?}) {}",
                    n.message_id,
                    n.code,
                    n.code.retry_class(),
                    n.description.as_deref().unwrap_or("")
                );
            }
            Event::StanzaError(e) => {
                outcomes += 1;
                println!("error     {:?}: {}", e.id, e.condition);
            }
            Event::Upstream(u) => {
                upstream += 1;
                println!("upstream  {} from {}: {:?}", u.message_id, u.from, u.data);
            }
            Event::Receipt(r) => {
                receipts += 1;
                println!(
                    "receipt   {} for {} ({})",
                    r.message_id, r.original_message_id, r.status
                );
            }
            other => println!("event     {other:?}"),
        }
        // Upstream messages and receipts must be acked on this connection.
        conn.ack(&event)?;
    }
    for late in conn.close()? {
        println!("late      {late:?}");
    }

    let ledger = emulator.ledger();
    println!(
        "emulator  saw {} downstream messages, {} upstream acks, {} receipt acks",
        ledger.total_received(),
        ledger
            .connections
            .iter()
            .map(|c| c.upstream_acked.len())
            .sum::<usize>(),
        ledger
            .connections
            .iter()
            .map(|c| c.receipts_acked.len())
            .sum::<usize>(),
    );
    emulator.shutdown();
    println!("done");
    Ok(())
}
