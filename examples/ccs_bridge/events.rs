//! The client's event loop: outcomes, upstream messages and receipts, taken in
//! batches, journaled in one call per batch, acked to CCS only after that commit.

use std::sync::mpsc;
use std::thread;

use fcm_xmpp::client::{AckHandle, Client, ClientEvent, Events, ReturnReason};
use fcm_xmpp::{Receipt, Upstream};

use crate::app::settle;
use crate::proto::{self, Line};
use crate::state::{Done, Handle, Mail, Out, State};

/// Events taken into one journal call at most.
const MAX_EVENTS: usize = 4096;

/// One event the journal has to see.
enum Item {
    Outcome {
        id: String,
        error: Option<String>,
        registration_id: Option<String>,
    },
    Upstream(Upstream, Option<AckHandle>),
    Receipt(Receipt, Option<AckHandle>),
}

/// Runs until the client's event stream ends.
pub fn run(mut events: Events, client: Client, state: Handle) {
    // Acks wait until written: an acker thread writes them so outcomes keep flowing.
    let (ack_tx, ack_rx) = mpsc::sync_channel::<Vec<AckHandle>>(64);
    let acker = thread::Builder::new()
        .name("acks".into())
        .spawn(move || {
            for batch in ack_rx {
                write_acks(&client, &batch);
            }
        })
        .unwrap_or_else(|e| crate::common::die(format!("cannot start a thread: {e}")));
    while let Some(first) = events.recv() {
        let mut items = Vec::new();
        take(first, &mut items);
        while items.len() < MAX_EVENTS {
            match events.try_recv() {
                Ok(ev) => take(ev, &mut items),
                Err(_) => break,
            }
        }
        if items.is_empty() {
            continue;
        }
        let Some(acks) = state.call(move |st| journal(st, items)) else {
            break;
        };
        if !acks.is_empty() && ack_tx.send(acks).is_err() {
            break;
        }
    }
    drop(ack_tx);
    let _ = acker.join();
}

/// Acks a batch together (one write per connection); waits until each is written.
fn write_acks(client: &Client, batch: &[AckHandle]) {
    for (h, r) in batch.iter().zip(client.ack_all(batch)) {
        if let Err(e) = r {
            // CCS delivers it again; the journal already has it, so it is only acked.
            log::info!("ack for {} not written ({e})", h.message_id());
        }
    }
}

fn take(ev: ClientEvent, items: &mut Vec<Item>) {
    let outcome =
        |m: &fcm_xmpp::Message, error: Option<String>, reg: Option<String>| Item::Outcome {
            id: m.id().to_string(),
            error,
            registration_id: reg,
        };
    match ev {
        ClientEvent::Delivered { message, ack } => {
            items.push(outcome(&message, None, ack.registration_id))
        }
        ClientEvent::Rejected { message, reason } => {
            items.push(outcome(&message, Some(reason.to_string()), None))
        }
        ClientEvent::Returned { message, reason } => match reason {
            ReturnReason::ConnectionsLost(_) | ReturnReason::RetriesExhausted(_) => {
                items.push(outcome(&message, Some(reason.to_string()), None))
            }
            // Not final for the app: the record stays for the next run.
            other => log::warn!("{} returned ({other}); kept for the next run", message.id()),
        },
        ClientEvent::Upstream { upstream, ack } => items.push(Item::Upstream(upstream, ack)),
        ClientEvent::Receipt { receipt, ack } => items.push(Item::Receipt(receipt, ack)),
        ClientEvent::Fatal { error } => crate::common::die(format!("client stopped: {error}")),
        ClientEvent::Connected { jid, .. } => log::info!("connected as {jid}"),
        ClientEvent::Lost { error, .. } => log::warn!("connection lost: {error}"),
        ClientEvent::Reconnecting { attempt, error, .. } => {
            log::warn!("connection attempt {attempt} failed: {error}")
        }
        other => log::debug!("{other:?}"),
    }
}

/// Journals a batch; returns the acks to write once it is committed.
fn journal(st: &mut State, items: Vec<Item>) -> (Vec<AckHandle>, Option<Done>) {
    let mut acks = Vec::new();
    let mut mail = Mail::default();
    for item in items {
        match item {
            Item::Outcome {
                id,
                error,
                registration_id,
            } => settle(
                st,
                &mut mail,
                &id,
                error.as_deref(),
                registration_id.as_deref(),
            ),
            Item::Upstream(up, ack) => {
                acks.extend(ack);
                let Some(session) = up.category.clone().filter(|c| proto::valid_session(c)) else {
                    log::warn!(
                        "upstream {} from {} has no valid category: acked, not delivered",
                        up.message_id,
                        up.from
                    );
                    continue;
                };
                let key = proto::up_key(&session, &up.from, &up.message_id);
                let line = upstream_line(&session, &up);
                if st.put_upstream(&key, &line) && st.logged_on(&session) {
                    mail.push(&session, Out::plain(line));
                }
            }
            Item::Receipt(r, ack) => {
                acks.extend(ack);
                let Some((session, group, mid)) = proto::parse_ccs_id(&r.original_message_id)
                else {
                    log::warn!("receipt for a message id that is not the bridge's: {r:?}");
                    continue;
                };
                let key = proto::receipt_key(&session, &r.message_id);
                if st.store.get(&key).is_some() {
                    continue;
                }
                let line = receipt_line(&session, group.as_deref(), &mid, &r);
                st.store.put(&key, line.as_bytes());
                if st.logged_on(&session) {
                    let out = Out {
                        line,
                        remove_after_flush: Some(key),
                    };
                    mail.push(&session, out);
                }
            }
        }
    }
    (acks, Some(mail.into_done()))
}

fn upstream_line(session: &str, up: &Upstream) -> String {
    let mut data = Line::object()
        .str("from", &up.from)
        .str("message_id", &up.message_id)
        .opt("category", up.category.as_deref())
        .value(
            "data",
            proto::string_map(up.data.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
        );
    if let Some(ttl) = up.time_to_live {
        data = data.value("time_to_live", proto::number(ttl));
    }
    Line::new("UPSTREAM")
        .str("session_id", session)
        .str("message_id", &up.message_id)
        .value("fcm_data", data.into_value())
        .finish()
}

fn receipt_line(session: &str, group: Option<&str>, mid: &str, r: &Receipt) -> String {
    let mut data = Vec::new();
    data.push(("message_status", r.status.as_str()));
    data.push(("original_message_id", r.original_message_id.as_str()));
    if let Some(d) = &r.device_registration_id {
        data.push(("device_registration_id", d.as_str()));
    }
    let ts = r.sent_timestamp.map(|t| t.to_string());
    if let Some(t) = &ts {
        data.push(("message_sent_timestamp", t.as_str()));
    }
    let fcm = Line::object()
        .str("message_type", "receipt")
        .str("message_id", &r.message_id)
        .str("from", &r.from)
        .opt("category", r.category.as_deref())
        .value("data", proto::string_map(data));
    Line::new("DOWNSTREAM_RECEIPT")
        .str("session_id", session)
        .str("message_id", mid)
        .opt("group_id", group)
        .value("fcm_data", fcm.into_value())
        .finish()
}
