//! The XMPP handshake as the server runs it: stream headers, SASL PLAIN,
//! stream restart, resource bind, session, pings and the iq stanzas CCS
//! ignored or refused.

use std::sync::{Arc, Mutex};

use super::super::ledger::LiveLedger;
use super::super::wire::{self, NS_BIND, NS_PING, NS_ROSTER, NS_SESSION, NS_STREAM};
use super::super::EmulatorEvent;
use super::{EndMode, Phase, Session, MAX_RESOURCE};
use crate::xml::Element;

impl Session {
    pub(super) fn on_stream_start(&mut self, el: &Element) {
        let expected = matches!(self.phase, Phase::Header | Phase::Header2);
        if !expected {
            self.stream_error("bad-format", Some("unexpected stream header"));
            self.end(EndMode::CloseStream, "unexpected stream header");
            return;
        }
        if let Some(to) = el.attr("to").filter(|t| !t.is_empty()) {
            self.domain = to.to_string();
        }
        let id = wire::stream_id();
        self.with_xml(|x, s| wire::stream_header(x, &s.domain, &id));
        self.header_sent = true;
        if !el.is("stream", NS_STREAM) {
            self.stream_error("invalid-namespace", None);
            self.end(EndMode::CloseStream, "stream header in the wrong namespace");
            return;
        }
        self.just_opened = true;
        if self.phase == Phase::Header {
            self.out.extend_from_slice(wire::SASL_FEATURES.as_bytes());
            self.phase = Phase::Auth;
        } else {
            self.out.extend_from_slice(wire::BIND_FEATURES.as_bytes());
            self.phase = Phase::Bind;
        }
    }

    pub(super) fn on_stream_end(&mut self) {
        if self.just_opened {
            // `<stream:stream .../>` reads as a header immediately followed by its end.
            self.stream_error("bad-format", Some("self-closing stream header"));
            self.end(EndMode::CloseStream, "self-closing stream header");
        } else {
            self.end(EndMode::CloseStream, "client closed the stream");
        }
    }

    pub(super) fn on_auth(&mut self, el: &Element) {
        let mechanism = el.attr("mechanism").unwrap_or("");
        let result = match mechanism {
            // X-OAUTH2 and X-GOOGLE-TOKEN carry the same `\0user\0secret` blob.
            "PLAIN" | "X-OAUTH2" | "X-GOOGLE-TOKEN" => match wire::decode_plain(&el.text()) {
                Ok(plain) => {
                    let s = &self.shared.settings;
                    if wire::credentials_ok(&plain, &s.sender_id, s.server_key.expose()) {
                        Ok(())
                    } else {
                        Err(("not-authorized", "wrong sender id or server key"))
                    }
                }
                Err(e) => Err((e.condition(), "bad PLAIN payload")),
            },
            _ => Err(("invalid-mechanism", "unknown mechanism")),
        };
        match result {
            Ok(()) => {
                self.out.extend_from_slice(wire::SASL_SUCCESS.as_bytes());
                self.reader.reset();
                self.phase = Phase::Header2;
            }
            Err((condition, why)) => {
                self.with_xml(|x, _| wire::sasl_failure(x, condition));
                self.shared.state().auth_failures += 1;
                let reason = format!("{condition} ({why}, mechanism {mechanism:?})");
                self.events.push(EmulatorEvent::AuthFailed {
                    conn: self.id,
                    reason: reason.clone(),
                });
                self.end(
                    EndMode::CloseStream,
                    &format!("authentication refused: {reason}"),
                );
            }
        }
    }

    pub(super) fn on_iq(&mut self, el: &Element) {
        let id = el.attr("id");
        let kind = el.attr("type").unwrap_or("");
        if kind != "get" && kind != "set" {
            return; // results and errors from the client need no answer
        }
        if let Some(bind) = el.child("bind", NS_BIND) {
            if kind != "set" {
                self.with_xml(|x, _| wire::iq_error(x, id, "modify", "bad-request"));
            } else if self.phase == Phase::Ready {
                self.with_xml(|x, _| wire::iq_error(x, id, "cancel", "not-allowed"));
            } else {
                self.on_bind(id, bind);
            }
        } else if el.child("session", NS_SESSION).is_some() {
            self.with_xml(|x, _| wire::iq_result(x, id, None, None));
        } else if el.child("ping", NS_PING).is_some() {
            // A client that sent `to=''` got no pong from CCS (see
            // `fcm_xmpp::protocol`, section Keepalive).
            if el.attr("to") != Some("") {
                self.with_xml(|x, s| {
                    let to = Some(s.jid.as_str()).filter(|j| !j.is_empty());
                    wire::iq_result(x, id, to, Some(&s.domain));
                });
            }
        } else if el.child("query", NS_ROSTER).is_some() {
            // CCS never answered roster requests (clients waiting for it timed out).
        } else {
            self.with_xml(|x, _| wire::iq_error(x, id, "cancel", "service-unavailable"));
        }
    }

    pub(super) fn on_bind(&mut self, id: Option<&str>, bind: &Element) {
        let proposed = bind
            .child("resource", NS_BIND)
            .or_else(|| bind.child_named("resource"))
            .map(|r| r.text().trim().to_string())
            .unwrap_or_default();
        if proposed.len() > MAX_RESOURCE || proposed.chars().any(|c| c.is_control()) {
            self.with_xml(|x, _| wire::iq_error(x, id, "modify", "bad-request"));
            return;
        }
        let base = if proposed.is_empty() {
            "emulator"
        } else {
            &proposed
        };
        self.jid = format!(
            "{}@gcm.googleapis.com/{base}{}",
            self.shared.settings.sender_id,
            wire::resource_suffix()
        );
        self.with_xml(|x, s| wire::bind_result(x, id, &s.jid));
        self.phase = Phase::Ready;
        let ledger = Arc::new(Mutex::new(LiveLedger::new(
            self.id,
            self.jid.clone(),
            self.shared.settings.record_ids,
        )));
        self.ledger = Some(Arc::clone(&ledger));
        {
            let mut st = self.shared.state();
            st.ledgers.push(ledger);
            if let Some(e) = st.sessions.get_mut(&self.id) {
                e.ready = true;
            }
            st.dispatch_waiting();
        }
        log::info!("ccs emulator: {} bound {}", self.id, self.jid);
        self.events.push(EmulatorEvent::Authenticated {
            conn: self.id,
            jid: self.jid.clone(),
        });
    }
}
