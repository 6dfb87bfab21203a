//! CCS answering once bound: downstream messages validated as CCS does and
//! answered (ack, nack, stanza error, receipt, held back under an ack delay),
//! the client's acks of upstream messages and receipts, outbound delivery,
//! scripted drops and draining.

use std::sync::Arc;
use std::time::Instant;

use miniserde::json::{Object, Value};

use super::super::json::{event_json, write_event_json};
use super::super::ledger::LedgerOp;
use super::super::outbound::{OutItem, OutKind};
use super::super::shared::lock;
use super::super::wire::{self, NS_GCM};
use super::super::{DownstreamOutcome, EmulatorEvent, MAX_DELAYED, WINDOW};
use super::{Answer, EndMode, Phase, Session};
use crate::error::InvalidMessage;
use crate::event::{Ack, Event, Nack, NackCode};
use crate::json;
use crate::message::Message;
use crate::xml::Element;

impl Session {
    pub(super) fn on_message(&mut self, el: &Element) {
        let payload = el
            .children()
            .find(|c| c.is("gcm", NS_GCM))
            .map(Element::text);
        self.on_message_parts(el.attr("id"), payload.as_deref());
    }

    /// A `<message>` by its parts: the stanza `id` and the text of its `<gcm>`
    /// child (`None`: no such child). The reader's fast path comes here directly.
    pub(super) fn on_message_parts(&mut self, stanza_id: Option<&str>, payload: Option<&str>) {
        self.messages += 1;
        let mut drop_here = self.script.drop_every.is_some_and(|k| self.messages >= k);
        if let Some(n) = self.drop_countdown.as_mut() {
            *n = n.saturating_sub(1);
            drop_here |= *n == 0;
        }
        let Some(payload) = payload else {
            if drop_here {
                return self.drop_unanswered(None);
            }
            let text = "InvalidJson: message without a gcm payload\n";
            return self.stanza_error_400(stanza_id, None, text, false);
        };
        // A valid downstream message in the simple form skips the value tree.
        if let Some(msg) = crate::message::fast::from_json(payload) {
            self.count_downstream();
            let target = msg.target().to_owned();
            let message_id = msg.id().to_owned();
            return self.answer_downstream(message_id, target, drop_here, || Ok(msg));
        }
        let obj = match json::parse_object(payload) {
            Ok(obj) => obj,
            Err(e) => {
                self.count_downstream();
                if drop_here {
                    return self.drop_unanswered(None);
                }
                let text = format!("InvalidJson: JSON_PARSING_ERROR : payload is {e}\n");
                return self.stanza_error_400(stanza_id, Some(payload), &text, true);
            }
        };
        let client_ack = match obj.get("message_type") {
            Some(Value::String(t)) if t == "ack" => Some(false),
            Some(Value::String(t)) if t == "nack" => Some(true),
            _ => None,
        };
        match client_ack {
            Some(_) if drop_here => self.drop_unanswered(None),
            Some(nack) => self.on_client_ack(stanza_id, payload, &obj, nack),
            None => self.on_downstream(stanza_id, payload, obj, drop_here),
        }
    }

    /// Counts a downstream message stanza for the pending window.
    pub(super) fn count_downstream(&mut self) {
        self.downstream_in += 1;
        let pending = self.downstream_in.saturating_sub(self.answered_written) as usize;
        self.max_pending = self.max_pending.max(pending);
        if pending > WINDOW {
            self.window_violations += 1;
            if self.shared.observed() {
                self.events.push(EmulatorEvent::WindowViolation {
                    conn: self.id,
                    pending,
                });
            }
        }
    }

    pub(super) fn on_downstream(
        &mut self,
        stanza_id: Option<&str>,
        payload: &str,
        obj: Object,
        drop_here: bool,
    ) {
        self.count_downstream();
        let message_id = match obj.get("message_id") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            missing => {
                if drop_here {
                    return self.drop_unanswered(None);
                }
                let text = match missing {
                    None => wire::MISSING_ID_TEXT,
                    Some(_) => {
                        "InvalidJson: JSON_TYPE_ERROR : Field \"message_id\" must be a \
                         non-empty JSON string\n"
                    }
                };
                return self.stanza_error_400(stanza_id, Some(payload), text, true);
            }
        };
        let target = match (obj.get("to"), obj.get("condition")) {
            (Some(Value::String(t)), _) => t.clone(),
            (_, Some(Value::String(c))) => c.clone(),
            _ => String::new(),
        };
        self.answer_downstream(message_id, target, drop_here, || {
            Message::from_json_value(&obj)
        });
    }

    /// A downstream message with an id: recorded, then dropped, nacked or acked.
    /// `parse` gives the message, or why it is invalid (called only when needed).
    fn answer_downstream(
        &mut self,
        message_id: String,
        target: String,
        drop_here: bool,
        parse: impl FnOnce() -> Result<Message, InvalidMessage>,
    ) {
        let idx = self.received;
        self.received += 1;
        self.ops
            .push(LedgerOp::Received(if self.shared.settings.record_ids {
                message_id.clone()
            } else {
                String::new()
            }));
        if drop_here {
            return self.drop_unanswered(Some((message_id, target)));
        }
        let (nack, receipt) = if self.draining {
            let desc = "Connection is draining: send on a new connection".to_string();
            (Some((NackCode::ConnectionDraining, desc)), false)
        } else {
            match parse() {
                Err(invalid) => {
                    let desc = format!(
                        "InvalidJson: JSON_FIELD_ERROR : Field \"{}\": {}",
                        invalid.field, invalid.reason
                    );
                    (Some((NackCode::InvalidJson, desc)), false)
                }
                Ok(msg) => match self.script.nack_for(&message_id, msg.target()) {
                    Some(code) => {
                        let desc = nack_description(&code, msg.target());
                        (Some((code, desc)), false)
                    }
                    None => (
                        None,
                        msg.get_delivery_receipt_requested() == Some(true)
                            && msg.get_dry_run() != Some(true),
                    ),
                },
            }
        };
        let answer = Answer {
            idx,
            message_id,
            target,
            nack,
            receipt,
        };
        let delay = self.script.ack_delay;
        // Draining NACKs go out at once so a draining connection always empties.
        if delay.is_zero() || self.draining {
            return self.write_answer(answer);
        }
        if self.delayed.len() >= MAX_DELAYED {
            self.stream_error("policy-violation", Some("too many pending messages"));
            let why = format!("more than {MAX_DELAYED} answers held back");
            return self.end(EndMode::CloseStream, &why);
        }
        let due = crate::time::later(Instant::now(), delay);
        self.delayed.push_back((due, answer));
    }

    /// Writes an ACK or NACK (and the receipt after an ACK that asked for one).
    pub(super) fn write_answer(&mut self, answer: Answer) {
        let Answer {
            idx,
            message_id,
            target,
            nack,
            receipt,
        } = answer;
        // Build the crate's own event (moving the strings in and out, no copies).
        let event = match nack {
            None => Event::Ack(Ack {
                message_id,
                from: Some(target),
                registration_id: None,
            }),
            Some((code, desc)) => Event::Nack(Nack {
                message_id,
                from: Some(target),
                code,
                description: Some(desc),
            }),
        };
        self.write_data_gcm(&event);
        self.answered_queued += 1;
        let (message_id, target, outcome) = match event {
            Event::Ack(a) => {
                self.ops.push(LedgerOp::Acked(idx));
                (a.message_id, a.from, DownstreamOutcome::Acked)
            }
            Event::Nack(n) => {
                self.ops.push(LedgerOp::Nacked(idx, n.code.clone()));
                (n.message_id, n.from, DownstreamOutcome::Nacked(n.code))
            }
            _ => return,
        };
        let target = target.unwrap_or_default();
        if receipt {
            self.write_receipt(&message_id, &target);
        }
        if self.shared.observed() {
            self.events.push(EmulatorEvent::Downstream {
                conn: self.id,
                message_id,
                target,
                outcome,
                at: Instant::now(),
            });
        }
    }

    /// Writes `event` as `<message><data:gcm xmlns:data="google:mobile:data">JSON</data:gcm>
    /// </message>` (ACK, NACK, control).
    pub(super) fn write_data_gcm(&mut self, event: &Event) {
        let mut json = std::mem::take(&mut self.json);
        self.with_xml(|x, _| {
            wire::data_gcm_message_with(x, &mut json, |x| write_event_json(event, x))
        });
        self.json = json;
    }

    /// Creates the receipt for an ACKed message and delivers it here (it is owed to this
    /// connection from now on, and goes to another one if this one ends first).
    pub(super) fn write_receipt(&mut self, original_id: &str, token: &str) {
        let category = &self.shared.settings.category;
        let json: Arc<str> = event_json(&wire::receipt_event(
            original_id,
            token,
            category,
            wire::epoch_millis(),
        ))
        .into();
        let id = wire::receipt_id(original_id);
        self.new_receipts.push((id.clone(), Arc::clone(&json)));
        self.deliver(OutItem {
            id,
            kind: OutKind::Receipt,
            json,
            conn: Some(self.id),
        });
    }

    /// Writes an upstream message or receipt, or holds it while [`WINDOW`] of them wait for
    /// the client's ACK (CCS stops sending to a client that stops acking,
    /// [protocol: flow control](crate::protocol#flow-control)).
    pub(super) fn deliver(&mut self, item: OutItem) {
        if self.delivered.len() >= WINDOW {
            self.held.push_back(item);
            return;
        }
        self.with_xml(|x, s| wire::upstream_message(x, &s.shared.settings.sender_id, &item.json));
        self.delivered.insert(item.id.clone(), item.kind);
        let ev = match item.kind {
            OutKind::Upstream => {
                self.ops.push(LedgerOp::UpstreamSent(item.id.clone()));
                EmulatorEvent::UpstreamSent {
                    conn: self.id,
                    message_id: item.id,
                }
            }
            OutKind::Receipt => {
                self.ops.push(LedgerOp::ReceiptSent(item.id.clone()));
                EmulatorEvent::ReceiptSent {
                    conn: self.id,
                    message_id: item.id,
                }
            }
        };
        if self.shared.observed() {
            self.events.push(ev);
        }
    }

    /// Delivers held items as the client's ACKs free room.
    pub(super) fn release_held(&mut self) {
        while self.delivered.len() < WINDOW {
            match self.held.pop_front() {
                Some(item) => self.deliver(item),
                None => return,
            }
        }
    }

    pub(super) fn on_client_ack(
        &mut self,
        stanza_id: Option<&str>,
        payload: &str,
        obj: &Object,
        nack: bool,
    ) {
        let id = match obj.get("message_id") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            _ => {
                let text = wire::MISSING_ID_TEXT;
                return self.stanza_error_400(stanza_id, Some(payload), text, false);
            }
        };
        match self.delivered.remove(&id) {
            Some(kind) => {
                if nack {
                    log::warn!("ccs emulator: {} client NACKed {id:?}", self.id);
                    self.ops.push(LedgerOp::UpstreamNacked(id.clone()));
                } else if kind == OutKind::Receipt {
                    self.ops.push(LedgerOp::ReceiptAcked(id.clone()));
                } else {
                    self.ops.push(LedgerOp::UpstreamAcked(id.clone()));
                }
                if self.shared.observed() && !nack {
                    self.events.push(match kind {
                        OutKind::Upstream => EmulatorEvent::UpstreamAcked {
                            conn: self.id,
                            message_id: id.clone(),
                        },
                        OutKind::Receipt => EmulatorEvent::ReceiptAcked {
                            conn: self.id,
                            message_id: id.clone(),
                        },
                    });
                }
                self.acked_out.push(id);
            }
            None => {
                self.with_xml(|x, s| wire::stanza_error_406(x, stanza_id, &s.jid, payload));
                self.ops.push(LedgerOp::StanzaError);
                if self.shared.observed() {
                    self.events.push(EmulatorEvent::StanzaError {
                        conn: self.id,
                        id: stanza_id.map(str::to_string),
                        code: 406,
                        reason: format!("ack for {id:?}, which was not delivered on this connection or was already acked"),
                    });
                }
            }
        }
    }

    /// Stanza error 400; `answers_downstream` if it answers a counted downstream message.
    pub(super) fn stanza_error_400(
        &mut self,
        stanza_id: Option<&str>,
        payload: Option<&str>,
        text: &str,
        answers_downstream: bool,
    ) {
        self.with_xml(|x, s| wire::stanza_error_400(x, stanza_id, &s.jid, payload, text));
        if answers_downstream {
            self.answered_queued += 1;
        }
        self.ops.push(LedgerOp::StanzaError);
        if self.shared.observed() {
            self.events.push(EmulatorEvent::StanzaError {
                conn: self.id,
                id: stanza_id.map(str::to_string),
                code: 400,
                reason: text.trim_end().to_string(),
            });
        }
    }

    /// The scripted drop: answers of earlier stanzas are written, this one is not.
    pub(super) fn drop_unanswered(&mut self, message: Option<(String, String)>) {
        if let Some((message_id, target)) = message {
            if self.shared.observed() {
                self.events.push(EmulatorEvent::Downstream {
                    conn: self.id,
                    message_id,
                    target,
                    outcome: DownstreamOutcome::Dropped,
                    at: Instant::now(),
                });
            }
        }
        self.delayed.clear();
        self.end(EndMode::FlushThenDrop, "dropped by the test script");
    }

    pub(super) fn start_drain(&mut self) {
        if self.draining || self.phase != Phase::Ready {
            return;
        }
        self.draining = true;
        self.write_data_gcm(&wire::draining_event());
        if let Some(l) = &self.ledger {
            lock(l).drained = true;
        }
        log::info!("ccs emulator: {} draining", self.id);
        self.events
            .push(EmulatorEvent::DrainStarted { conn: self.id });
    }
}

fn nack_description(code: &NackCode, target: &str) -> String {
    match code {
        NackCode::BadRegistration => format!("Invalid token on 'to' field: {target}"),
        NackCode::DeviceUnregistered => "Device unregistered".to_string(),
        NackCode::DeviceMessageRateExceeded => {
            "Downstream message rate exceeded for this device".to_string()
        }
        NackCode::TopicsMessageRateExceeded => {
            "Downstream message rate exceeded for this topic".to_string()
        }
        NackCode::ServiceUnavailable => "Service temporarily unavailable".to_string(),
        NackCode::InternalServerError => "Internal server error".to_string(),
        NackCode::ConnectionDraining => "Connection is draining".to_string(),
        other => other.as_str().to_string(),
    }
}
