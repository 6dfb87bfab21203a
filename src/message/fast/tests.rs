//! The fast path against the general one: wherever `from_json` answers, the
//! value tree must give the same message; and it must answer for the
//! messages clients send.

use super::from_json;
use crate::json::parse_object;
use crate::message::Message;
use crate::test_rng::Rng;

/// The general path alone: the value tree, then the strict field reader.
fn general(text: &str) -> Result<Message, String> {
    let obj = parse_object(text)
        .map_err(|e| crate::error::InvalidMessage::new("json", e.to_string()).to_string())?;
    Message::from_json_value(&obj).map_err(|e| e.to_string())
}

/// A random downstream payload: mostly well-formed and valid, often not.
fn payload(r: &mut Rng) -> String {
    const KEYS: &[&str] = &[
        "\"message_id\"",
        "\"to\"",
        "\"time_to_live\"",
        "\"data\"",
        "\"priority\"",
        "\"dry_run\"",
        "\"delivery_receipt_requested\"",
        "\"collapse_key\"",
        "\"condition\"",
        "\"content_available\"",
        "\"mutable_content\"",
        "\"delay_while_idle\"",
        "\"extra\"",
        "\"message_type\"",
        "\"notification\"",
        "\"to\"",
        "\"m\\u0073g\"",
    ];
    const VALUES: &[&str] = &[
        "\"m-1\"",
        "\"tok\"",
        "600",
        "0",
        "2419200",
        "2419201",
        "true",
        "false",
        "\"high\"",
        "\"normal\"",
        "\"/topics/news\"",
        "\"/topics/bad topic\"",
        "\"'a' in topics && 'b' in topics\"",
        "\"\"",
        "\"fx-ack-1\"",
        "\"caf\u{e9}\u{1F600}\"",
        "\"a\\\"b\"",
        "\"\u{FFFE}\"",
        "\"\u{FFFD}\"",
        "null",
        "-1",
        "1.5",
        "6e2",
        "007",
        "99999999999999999999999",
        "[\"x\"]",
        "{\"title\":\"t\"}",
        "\"ack\"",
    ];
    const DATA: &[&str] = &[
        "{\"k\":\"v\"}",
        "{}",
        "{\"b\":\"2\",\"a\":\"1\"}",
        "{\"seq\":\"1\",\"text\":\"hello, world\"}",
        "{\"a\":\"1\",\"a\":\"2\"}",
        "{\"k\":1}",
        "{\"k\":\"\\n\"}",
        "{\"from\":\"x\"}",
        "{\"k\":\"\u{1}\"}",
    ];
    let mut s = String::from(r.pick(&["", " ", "\n"]));
    s.push('{');
    let fields = r.below(7);
    for i in 0..fields {
        if i > 0 {
            s.push_str(r.mostly(1, &[",", ", ", ",,", ""]));
        }
        let key = match i {
            0 if r.below(5) > 0 => "\"message_id\"",
            1 if r.below(5) > 0 => "\"to\"",
            _ => r.mostly(12, KEYS),
        };
        s.push_str(key);
        s.push_str(r.mostly(1, &[":", " : ", ""]));
        let value = match key {
            "\"data\"" if r.below(5) > 0 => r.mostly(4, DATA),
            "\"message_id\"" | "\"to\"" if r.below(5) > 0 => r.pick(&["\"m-1\"", "\"tok\""]),
            "\"time_to_live\"" if r.below(3) > 0 => r.pick(&["600", "0", "2419200"]),
            _ => r.pick(VALUES),
        };
        s.push_str(value);
    }
    s.push_str(r.mostly(1, &["}", "} x", "},", ""]));
    s
}

#[test]
fn agrees_with_the_value_tree_on_random_payloads() {
    let mut r = Rng(0x0BAD_5EED_1234_5678);
    let (mut fast, mut valid) = (0, 0);
    for _ in 0..50_000 {
        let text = payload(&mut r);
        let g = general(&text);
        valid += g.is_ok() as usize;
        if let Some(m) = from_json(&text) {
            fast += 1;
            assert_eq!(Ok(&m), g.as_ref(), "{text:?}");
        }
        // The public entry point agrees with the general path whichever it takes.
        assert_eq!(
            Message::from_json(&text).map_err(|e| e.to_string()),
            g,
            "{text:?}"
        );
    }
    assert!(fast > 3_000, "only {fast} payloads took the fast path");
    assert!(valid > fast, "{valid} valid, {fast} fast");
}

#[test]
fn takes_what_clients_send() {
    let m = Message::to("tok")
        .message_id("m-1")
        .time_to_live(600)
        .data("seq", "1")
        .data("text", "hello")
        .delivery_receipt_requested(true);
    assert_eq!(from_json(&m.to_json()), Some(m));
    assert_eq!(
        from_json(r#"{"to":"tok","message_id":"x","notification":{}}"#),
        None
    );
}
