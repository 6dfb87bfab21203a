//! The fast path of [`Event::from_json`] ([`Settlement`]) against the value
//! tree: on every input where the fast path answers, the general path must
//! give the same event; and it must answer for what CCS sends.

use super::{Event, Settlement};
use crate::test_rng::Rng;

/// A random JSON-ish object, mostly an ack or nack, often a little off.
fn payload(r: &mut Rng) -> String {
    const KEYS: &[&str] = &[
        "\"message_type\"",
        "\"message_id\"",
        "\"from\"",
        "\"registration_id\"",
        "\"error\"",
        "\"error_description\"",
        "\"message_id\"",
        "\"x\"",
        "\"data\"",
        "\"control_type\"",
        "\"message\\u005ftype\"",
        "message_id",
        "\"\"",
    ];
    const VALUES: &[&str] = &[
        "\"ack\"",
        "\"nack\"",
        "\"m-1\"",
        "\"BAD_ACK\"",
        "\"CONNECTION_DRAINING\"",
        "\"DEVICE_UNREGISTERED\"",
        "\"\"",
        "\"caf\u{e9} \u{1F600}\"",
        "\"a\\\"b\"",
        "\"tab\\tx\"",
        "\"raw\tcontrol\"",
        "null",
        "12",
        "-1.5e3",
        "true",
        "{\"a\":\"b\"}",
        "[\"x\"]",
        "\"control\"",
        "\"receipt\"",
        "\"unterminated",
    ];
    const WS: &[&str] = &["", "", "", " ", "\n", "\t ", "\r\n", "\u{a0}"];
    let mut s = String::from(r.pick(WS));
    s.push('{');
    let fields = 1 + r.below(6);
    for i in 0..fields {
        if i > 0 {
            s.push_str(r.mostly(2, &[",", ", ", ",,", ""]));
        }
        s.push_str(r.pick(WS));
        let k = match KEYS.get(i) {
            Some(&k) if i < 2 && r.below(4) > 0 => k,
            _ => r.mostly(7, KEYS),
        };
        s.push_str(k);
        s.push_str(r.pick(WS));
        s.push_str(r.mostly(2, &[":", " : ", ""]));
        s.push_str(r.pick(WS));
        let v = match (i, r.below(3)) {
            (0, 0 | 1) => VALUES[r.below(2)],
            (1, 0 | 1) => "\"m-1\"",
            _ => r.mostly(8, VALUES),
        };
        s.push_str(v);
    }
    s.push_str(r.pick(WS));
    s.push_str(r.mostly(1, &["}", "} x", "},", ""]));
    s.push_str(r.pick(WS));
    s
}

#[test]
fn agrees_with_the_value_tree_on_random_payloads() {
    let mut r = Rng(0x2545_F491_4F6C_DD1D);
    let (mut fast, mut bad) = (0, 0);
    for _ in 0..50_000 {
        let text = payload(&mut r);
        let tree = Event::from_json_tree(text.trim());
        bad += tree.is_err() as usize;
        // The public entry point agrees with the tree whichever path it takes.
        assert_eq!(Event::from_json(&text), tree, "{text:?}");
        if let Some(s) = Settlement::scan(text.trim()) {
            fast += 1;
            let id = s.message_id().to_owned();
            let settles = s.settles();
            let ev = s.into_event(id);
            assert_eq!(Ok(&ev), tree.as_ref(), "{text:?}");
            assert_eq!(settles, ev.settled_message_id().is_some(), "{text:?}");
        }
    }
    assert!(fast > 1_500, "only {fast} payloads took the fast path");
    assert!(bad > 5_000, "only {bad} malformed payloads");
}

#[test]
fn takes_acks_and_nacks_as_ccs_sends_them() {
    for text in [
        r#"{"message_type":"ack","message_id":"m-1","from":"tok"}"#,
        r#"{"from":"tok","message_id":"m-1","message_type":"ack","registration_id":"new"}"#,
        r#" { "message_type" : "nack", "message_id":"m-2", "error":"BAD_REGISTRATION",
             "error_description":"x" } "#,
    ] {
        assert!(Settlement::scan(text.trim()).is_some(), "{text}");
    }
    for text in [
        r#"{"message_type":"ack"}"#,
        r#"{"message_type":"receipt","message_id":"dr2:m"}"#,
        r#"{"message_type":"ack","message_id":"m","message_id":"n"}"#,
        r#"{"message_type":"ack","message_id":"m\u0031"}"#,
        r#"{"message_type":"ack","message_id":"m","time_to_live":3}"#,
    ] {
        assert!(Settlement::scan(text).is_none(), "{text}");
    }
}

/// A random upstream message or receipt, mostly well-typed, often not.
fn inbound_payload(r: &mut Rng) -> String {
    const KEYS: &[&str] = &[
        "\"from\"",
        "\"message_id\"",
        "\"category\"",
        "\"data\"",
        "\"time_to_live\"",
        "\"message_type\"",
        "\"x\"",
        "\"from\"",
    ];
    const VALUES: &[&str] = &[
        "\"tok\"",
        "\"dr2:m-1\"",
        "\"com.example\"",
        "\"receipt\"",
        "600",
        "0",
        "\"\"",
        "\"caf\u{e9}\"",
        "\"a\\nb\"",
        "null",
        "true",
        "-3",
        "1e3",
        "\"control\"",
        "\"ack\"",
        "[1]",
    ];
    const DATA: &[&str] = &[
        "{\"k\":\"v\",\"a\":\"b\"}",
        "{}",
        "{\"message_status\":\"MESSAGE_SENT_TO_DEVICE\",\"original_message_id\":\"m-1\",\
         \"device_registration_id\":\"tok\",\"message_sent_timestamp\":\"1440000000000\"}",
        "{\"message_sent_timestamp\":\" 12 \"}",
        "{\"message_sent_timestamp\":\"x\"}",
        "{\"message_sent_timestamp\":12}",
        "{\"k\":\"1\",\"k\":\"2\"}",
        "{\"k\":{\"n\":\"x\"}}",
        "\"notanobject\"",
    ];
    let mut s = String::from("{");
    for i in 0..1 + r.below(6) {
        if i > 0 {
            s.push(',');
        }
        let key = match i {
            0 if r.below(6) > 0 => "\"from\"",
            1 if r.below(6) > 0 => "\"message_id\"",
            _ => r.mostly(6, KEYS),
        };
        s.push_str(key);
        s.push(':');
        s.push_str(match key {
            "\"data\"" => r.mostly(4, DATA),
            "\"message_type\"" if r.below(3) > 0 => "\"receipt\"",
            "\"time_to_live\"" if r.below(3) > 0 => "600",
            _ => r.mostly(4, VALUES),
        });
    }
    s.push_str(r.mostly(1, &["}", "}}", ""]));
    s
}

#[test]
fn upstream_and_receipts_agree_with_the_value_tree() {
    let mut r = Rng(0x1357_9BDF_2468_ACE0);
    let (mut fast, mut receipts) = (0, 0);
    for _ in 0..50_000 {
        let text = inbound_payload(&mut r);
        let tree = Event::from_json_tree(&text);
        assert_eq!(Event::from_json(&text), tree, "{text:?}");
        if let Some(ev) = super::fast::inbound(&text) {
            fast += 1;
            receipts += ev.is_receipt() as usize;
            assert_eq!(Ok(&ev), tree.as_ref(), "{text:?}");
        }
    }
    assert!(fast > 3_000, "only {fast} payloads took the fast path");
    assert!(
        receipts > 500,
        "only {receipts} receipts took the fast path"
    );
}
