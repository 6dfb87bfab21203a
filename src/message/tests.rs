use super::*;
use miniserde::json::Number;
use std::collections::HashSet;

fn field(r: Result<(), InvalidMessage>) -> &'static str {
    r.expect_err("expected a validation error").field
}

fn parsed(msg: &Message) -> Object {
    json::parse_object(&msg.to_json()).expect("our JSON parses")
}

fn full() -> Message {
    Message::to("tok\"en\\1")
        .message_id("m-1\n")
        .collapse_key("ck")
        .priority(Priority::High)
        .content_available(true)
        .mutable_content(false)
        .time_to_live(600)
        .delay_while_idle(false)
        .delivery_receipt_requested(true)
        .dry_run(true)
        .data("a", "1")
        .data("b", "x & <y> \"z\" é\t")
        .notification(
            Notification::new()
                .title("T")
                .body("B")
                .android_channel_id("ch")
                .icon("ic")
                .sound("default")
                .tag("tg")
                .color("#ff0000")
                .click_action("OPEN")
                .badge("3")
                .subtitle("sub")
                .body_loc_key("bk")
                .body_loc_args(["b1", "b2"])
                .title_loc_key("tk")
                .title_loc_args(Vec::<String>::new()),
        )
}

#[test]
fn every_builder_field_is_in_the_json() {
    let m = full();
    assert!(m.validate().is_ok());
    let o = parsed(&m);
    let str_of = |o: &Object, k: &str| match o.get(k) {
        Some(Value::String(s)) => s.clone(),
        other => panic!(
            "{k}: not a string: {}",
            other.map(json::kind).unwrap_or("absent")
        ),
    };
    let bool_of = |k: &str| match o.get(k) {
        Some(Value::Bool(b)) => *b,
        _ => panic!("{k}: not a bool"),
    };
    assert_eq!(str_of(&o, "to"), "tok\"en\\1");
    assert!(!o.contains_key("condition"));
    assert_eq!(str_of(&o, "message_id"), "m-1\n");
    assert_eq!(str_of(&o, "collapse_key"), "ck");
    assert_eq!(str_of(&o, "priority"), "high");
    assert!(bool_of("content_available"));
    assert!(!bool_of("mutable_content"));
    assert!(matches!(
        o.get("time_to_live"),
        Some(Value::Number(Number::U64(600)))
    ));
    assert!(!bool_of("delay_while_idle"));
    assert!(bool_of("delivery_receipt_requested"));
    assert!(bool_of("dry_run"));
    let Some(Value::Object(d)) = o.get("data") else {
        panic!("data")
    };
    assert_eq!(d.len(), 2);
    assert_eq!(str_of(d, "a"), "1");
    assert_eq!(str_of(d, "b"), "x & <y> \"z\" é\t");
    let Some(Value::Object(n)) = o.get("notification") else {
        panic!("notification")
    };
    for (k, v) in [
        ("title", "T"),
        ("body", "B"),
        ("android_channel_id", "ch"),
        ("icon", "ic"),
        ("sound", "default"),
        ("tag", "tg"),
        ("color", "#ff0000"),
        ("click_action", "OPEN"),
        ("badge", "3"),
        ("subtitle", "sub"),
        ("body_loc_key", "bk"),
        ("title_loc_key", "tk"),
    ] {
        assert_eq!(str_of(n, k), v, "{k}");
    }
    let Some(Value::Array(args)) = n.get("body_loc_args") else {
        panic!("args")
    };
    assert_eq!(args.len(), 2);
    assert!(matches!(&args[1], Value::String(s) if s == "b2"));
    assert!(matches!(n.get("title_loc_args"), Some(Value::Array(a)) if a.is_empty()));
    assert_eq!(n.len(), 14);
    assert_eq!(o.len(), 12);
}

#[test]
fn exact_minimal_json() {
    let m = Message::to("T")
        .message_id("m-42")
        .time_to_live(600)
        .data("k", "a & b < c");
    assert_eq!(
        m.to_json(),
        r#"{"to":"T","message_id":"m-42","time_to_live":600,"data":{"k":"a & b < c"}}"#
    );
    let c = Message::to_condition("'a' in topics").message_id("x");
    assert_eq!(
        c.to_json(),
        r#"{"condition":"'a' in topics","message_id":"x"}"#
    );
    let mut out = String::from("prefix");
    c.write_json(&mut out);
    assert!(out.starts_with("prefix{"));
}

#[test]
fn unset_optionals_are_omitted() {
    let m = Message::to("T");
    let o = parsed(&m);
    assert_eq!(o.len(), 2, "{}", m.to_json());
    assert!(o.contains_key("to") && o.contains_key("message_id"));
    let n = Message::to("T").notification(Notification::new()).to_json();
    assert!(n.ends_with(r#""notification":{}}"#), "{n}");
}

#[test]
fn ttl_zero_is_sent() {
    let m = Message::to("T").time_to_live(0);
    assert!(m.to_json().contains(r#""time_to_live":0"#));
    assert!(matches!(
        parsed(&m).get("time_to_live"),
        Some(Value::Number(Number::U64(0)))
    ));
    assert_eq!(m.get_time_to_live(), Some(0));
    let back = Message::from_json(&m.to_json()).unwrap();
    assert_eq!(back.get_time_to_live(), Some(0));
    let max = Message::to("T").time_to_live(MAX_TIME_TO_LIVE);
    assert!(max.validate().is_ok());
    assert_eq!(
        field(
            Message::to("T")
                .time_to_live(MAX_TIME_TO_LIVE + 1)
                .validate()
        ),
        "time_to_live"
    );
    assert_eq!(
        field(Message::to("T").time_to_live(u32::MAX).validate()),
        "time_to_live"
    );
}

#[test]
fn json_round_trips() {
    // data from JSON comes back in key order, so build it sorted here.
    let mut m = full();
    assert_eq!(Message::from_json(&m.to_json()).unwrap(), m);
    m = Message::to_condition("'a' in topics || 'b' in topics").priority(Priority::Normal);
    assert_eq!(Message::from_json(&m.to_json()).unwrap(), m);
    m = Message::to_topic("news")
        .time_to_live(0)
        .data("z", "")
        .data("\r\n", "crlf");
    let back = Message::from_json(&m.to_json()).unwrap();
    let mut sorted = m.data.clone();
    sorted.sort();
    assert_eq!(back.data_pairs(), &sorted[..]);
    assert_eq!(back.id(), m.id());
    assert_eq!(back.get_time_to_live(), Some(0));
}

#[test]
fn constructors_and_getters() {
    let t = Message::to_topic("news");
    assert_eq!(t.target(), "/topics/news");
    assert_eq!(t.topic(), Some("news"));
    assert!(!t.is_condition());
    assert_eq!(Message::to_topic("/topics/x").target(), "/topics/x");
    let c = Message::to_condition("'a' in topics");
    assert!(c.is_condition());
    assert_eq!(c.target(), "'a' in topics");
    assert_eq!(c.get_to(), None);
    assert_eq!(c.get_condition(), Some("'a' in topics"));
    assert_eq!(c.topic(), None);
    for m in [
        Message::to("a"),
        Message::to_topic("b"),
        Message::to_condition("c"),
    ] {
        assert!(!m.id().is_empty());
        assert!(m.id().starts_with("fx-"));
    }
    let m = full();
    assert_eq!(m.get_collapse_key(), Some("ck"));
    assert_eq!(m.get_priority(), Some(Priority::High));
    assert_eq!(m.get_content_available(), Some(true));
    assert_eq!(m.get_mutable_content(), Some(false));
    assert_eq!(m.get_time_to_live(), Some(600));
    assert_eq!(m.get_delay_while_idle(), Some(false));
    assert_eq!(m.get_delivery_receipt_requested(), Some(true));
    assert_eq!(m.get_dry_run(), Some(true));
    assert_eq!(m.data_value("a"), Some("1"));
    assert_eq!(m.data_value("zz"), None);
    assert_eq!(m.get_notification().unwrap().title.as_deref(), Some("T"));
    assert_eq!(Priority::Normal.to_string(), "normal");
}

#[test]
fn data_keeps_insertion_order_and_replaces() {
    let m = Message::to("T")
        .data("z", "1")
        .data("a", "2")
        .data("m", "3")
        .data("a", "4");
    let keys: Vec<&str> = m.data_pairs().iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["z", "a", "m"]);
    assert_eq!(m.data_value("a"), Some("4"));
    assert!(m.to_json().contains(r#""data":{"z":"1","a":"4","m":"3"}"#));
}

#[test]
fn message_ids_are_unique() {
    let n = 100_000;
    let ids: HashSet<String> = (0..n).map(|_| next_message_id()).collect();
    assert_eq!(ids.len(), n);
    let id = next_message_id();
    let parts: Vec<&str> = id.split('-').collect();
    assert_eq!(parts.len(), 3, "{id}");
    assert_eq!(parts[0], "fx");
    assert_eq!(parts[1].len(), 16);
    assert!(parts[1].chars().all(|c| c.is_ascii_hexdigit()));
    assert!(parts[2].parse::<u64>().is_ok());
}

#[test]
fn message_ids_unique_across_threads() {
    let handles: Vec<_> = (0..4)
        .map(|_| std::thread::spawn(|| (0..10_000).map(|_| next_message_id()).collect::<Vec<_>>()))
        .collect();
    let mut all = HashSet::new();
    for h in handles {
        for id in h.join().unwrap() {
            assert!(all.insert(id));
        }
    }
    assert_eq!(all.len(), 40_000);
}

#[test]
fn recipient_rules() {
    assert!(Message::to("token").validate().is_ok());
    assert_eq!(field(Message::to("").validate()), "to");
    let mut both = Message::to("a");
    both.condition = Some("'a' in topics".into());
    assert_eq!(field(both.validate()), "to");
    let mut neither = Message::to("a");
    neither.to = None;
    assert_eq!(field(neither.validate()), "to");
}

#[test]
fn topic_name_rules() {
    for ok in ["a", "news", "A-Z_a.z~0%9", "%20", "x".repeat(900).as_str()] {
        assert!(Message::to_topic(ok).validate().is_ok(), "{ok}");
    }
    for bad in ["", "a b", "a/b", "né", "a+b", "a#", "a:b", "a\n"] {
        let m = Message::to(format!("/topics/{bad}"));
        assert_eq!(field(m.validate()), "to", "{bad:?}");
    }
    // Only the /topics/ prefix triggers the rule; tokens have ':' etc.
    assert!(Message::to("APA91b:xy-z_").validate().is_ok());
}

#[test]
fn condition_rules() {
    for ok in [
        "'a' in topics",
        "'a' in topics && 'b' in topics",
        "'a' in topics && ('b' in topics || 'c' in topics)",
    ] {
        assert!(Message::to_condition(ok).validate().is_ok(), "{ok}");
    }
    for bad in [
        "",
        "   ",
        "'a' in topics && 'b' in topics && 'c' in topics && 'd' in topics",
        "'a' in topics || 'b' in topics || 'c' in topics || 'd' in topics",
        "'a' in topics && 'b' in topics || 'c' in topics && 'd' in topics",
    ] {
        assert_eq!(
            field(Message::to_condition(bad).validate()),
            "condition",
            "{bad:?}"
        );
    }
}

#[test]
fn message_id_rules() {
    assert_eq!(
        field(Message::to("T").message_id("").validate()),
        "message_id"
    );
    assert!(Message::to("T").message_id("x").validate().is_ok());
    // The stanza ids of acks are a space of their own.
    let err = Message::to("T")
        .message_id("fx-ack-1")
        .validate()
        .unwrap_err();
    assert_eq!(err.field, "message_id");
    assert!(err.reason.contains("reserved"), "{err}");
    assert!(Message::to("T").message_id("fx-ac").validate().is_ok());
    assert!(!Message::to("T").id().starts_with(ACK_STANZA_ID_PREFIX));
}

#[test]
fn characters_xml_forbids_are_refused_in_every_field() {
    let n = Notification::new;
    for bad in [
        '\u{0}', '\u{1}', '\u{8}', '\u{b}', '\u{1f}', '\u{fffe}', '\u{ffff}',
    ] {
        let s = format!("a{bad}b");
        let cases: Vec<(Message, &str)> = vec![
            (Message::to(s.as_str()), "to"),
            (Message::to_condition(s.as_str()), "condition"),
            (Message::to("T").message_id(s.as_str()), "message_id"),
            (Message::to("T").collapse_key(s.as_str()), "collapse_key"),
            (Message::to("T").data(s.as_str(), "v"), "data"),
            (Message::to("T").data("k", s.as_str()), "data"),
            (
                Message::to("T").notification(n().title(s.as_str())),
                "notification.title",
            ),
            (
                Message::to("T").notification(n().body(s.as_str())),
                "notification.body",
            ),
            (
                Message::to("T").notification(n().android_channel_id(s.as_str())),
                "notification.android_channel_id",
            ),
            (
                Message::to("T").notification(n().icon(s.as_str())),
                "notification.icon",
            ),
            (
                Message::to("T").notification(n().sound(s.as_str())),
                "notification.sound",
            ),
            (
                Message::to("T").notification(n().tag(s.as_str())),
                "notification.tag",
            ),
            (
                Message::to("T").notification(n().color(s.as_str())),
                "notification.color",
            ),
            (
                Message::to("T").notification(n().click_action(s.as_str())),
                "notification.click_action",
            ),
            (
                Message::to("T").notification(n().badge(s.as_str())),
                "notification.badge",
            ),
            (
                Message::to("T").notification(n().subtitle(s.as_str())),
                "notification.subtitle",
            ),
            (
                Message::to("T").notification(n().body_loc_key(s.as_str())),
                "notification.body_loc_key",
            ),
            (
                Message::to("T").notification(n().title_loc_key(s.as_str())),
                "notification.title_loc_key",
            ),
            (
                Message::to("T").notification(n().body_loc_args(["x", s.as_str()])),
                "notification.body_loc_args",
            ),
            (
                Message::to("T").notification(n().title_loc_args([s.as_str()])),
                "notification.title_loc_args",
            ),
        ];
        for (m, want) in cases {
            let err = m.validate().unwrap_err();
            assert_eq!(err.field, want, "{bad:?}");
            assert!(
                err.reason.contains(&format!("U+{:04X}", u32::from(bad))),
                "{err}"
            );
        }
    }
    // Tab, LF, CR and the characters around the forbidden ones are fine.
    let ok = "t\tl\nc\r\u{7f}\u{fffd}\u{10000}é";
    assert!(Message::to("T")
        .message_id(ok)
        .collapse_key(ok)
        .data("k", ok)
        .notification(n().title(ok).body_loc_args([ok]))
        .validate()
        .is_ok());
}

#[test]
fn reserved_and_empty_data_keys() {
    for bad in [
        "from",
        "message_type",
        "google",
        "google.x",
        "gcm",
        "gcm.notification",
        "",
    ] {
        let m = Message::to("T").data(bad, "v");
        assert_eq!(field(m.validate()), "data", "{bad:?}");
    }
    for ok in [
        "From", "fromx", "xgoogle", "Google", "gc", "message", "type", "to",
    ] {
        assert!(Message::to("T").data(ok, "v").validate().is_ok(), "{ok:?}");
    }
}

#[test]
fn data_size_boundary() {
    // key "k" (1 byte) + value: 4096 total is fine, 4097 is not.
    let ok = Message::to("T").data("k", "v".repeat(4095));
    assert!(ok.validate().is_ok());
    let bad = Message::to("T").data("k", "v".repeat(4096));
    assert_eq!(field(bad.validate()), "data");
    // Keys count too, across pairs, in bytes (é is 2 bytes).
    let split = Message::to("T")
        .data("ab", "x".repeat(2046))
        .data("cd", "y".repeat(2046));
    assert!(split.validate().is_ok());
    let over = split.clone().data("e", "");
    assert_eq!(field(over.validate()), "data");
    let multibyte = Message::to("T").data("k", "é".repeat(2048));
    assert_eq!(field(multibyte.validate()), "data");
    let just = Message::to("T").data("k", format!("{}{}", "é".repeat(2047), "x"));
    assert!(just.validate().is_ok());
}

fn from_json_field(text: &str) -> (&'static str, String) {
    let e = Message::from_json(text).expect_err(text);
    (e.field, e.reason)
}

#[test]
fn from_json_accepts_a_normal_message() {
    let m = Message::from_json(
        " \n{\"to\":\"T\",\"message_id\":\"m-42\",\"time_to_live\":600,\"data\":{\"k\":\"a & b\"},\
         \"unknown\":[1,{\"x\":null}],\"message_type\":\"whatever\"}\n ",
    )
    .unwrap();
    assert_eq!(m.target(), "T");
    assert_eq!(m.id(), "m-42");
    assert_eq!(m.get_time_to_live(), Some(600));
    assert_eq!(m.data_pairs(), &[("k".to_string(), "a & b".to_string())]);
}

#[test]
fn from_json_is_strict_about_types() {
    let cases: &[(&str, &str)] = &[
        (
            r#"{"to":"T","message_id":"m","time_to_live":"600"}"#,
            "time_to_live",
        ),
        (
            r#"{"to":"T","message_id":"m","time_to_live":-1}"#,
            "time_to_live",
        ),
        (
            r#"{"to":"T","message_id":"m","time_to_live":1.5}"#,
            "time_to_live",
        ),
        (
            r#"{"to":"T","message_id":"m","time_to_live":2419201}"#,
            "time_to_live",
        ),
        (
            r#"{"to":"T","message_id":"m","time_to_live":99999999999999999999}"#,
            "time_to_live",
        ),
        (
            r#"{"to":"T","message_id":"m","delay_while_idle":"true"}"#,
            "delay_while_idle",
        ),
        (
            r#"{"to":"T","message_id":"m","content_available":1}"#,
            "content_available",
        ),
        (
            r#"{"to":"T","message_id":"m","mutable_content":"false"}"#,
            "mutable_content",
        ),
        (
            r#"{"to":"T","message_id":"m","delivery_receipt_requested":0}"#,
            "delivery_receipt_requested",
        ),
        (r#"{"to":"T","message_id":"m","dry_run":"yes"}"#, "dry_run"),
        (
            r#"{"to":"T","message_id":"m","priority":"urgent"}"#,
            "priority",
        ),
        (r#"{"to":"T","message_id":"m","priority":10}"#, "priority"),
        (
            r#"{"to":"T","message_id":"m","collapse_key":5}"#,
            "collapse_key",
        ),
        (r#"{"to":5,"message_id":"m"}"#, "to"),
        (r#"{"to":["a"],"message_id":"m"}"#, "to"),
        (r#"{"message_id":"m"}"#, "to"),
        (
            r#"{"to":"a","condition":"'b' in topics","message_id":"m"}"#,
            "to",
        ),
        (r#"{"condition":7,"message_id":"m"}"#, "condition"),
        (r#"{"to":"T","message_id":42}"#, "message_id"),
        (r#"{"to":"T","message_id":""}"#, "message_id"),
        (r#"{"to":"T","message_id":"m","data":{"n":5}}"#, "data"),
        (r#"{"to":"T","message_id":"m","data":{"b":true}}"#, "data"),
        (r#"{"to":"T","message_id":"m","data":{"o":{}}}"#, "data"),
        (r#"{"to":"T","message_id":"m","data":{"z":null}}"#, "data"),
        (r#"{"to":"T","message_id":"m","data":"k=v"}"#, "data"),
        (r#"{"to":"T","message_id":"m","data":{"from":"x"}}"#, "data"),
        (
            r#"{"to":"T","message_id":"m","data":{"gcm.x":"x"}}"#,
            "data",
        ),
        (
            r#"{"to":"T","message_id":"m","notification":"hi"}"#,
            "notification",
        ),
        (
            r#"{"to":"T","message_id":"m","notification":{"title":1}}"#,
            "title",
        ),
        (
            r#"{"to":"T","message_id":"m","notification":{"body_loc_args":"[]"}}"#,
            "body_loc_args",
        ),
        (
            r#"{"to":"T","message_id":"m","notification":{"title_loc_args":[1]}}"#,
            "title_loc_args",
        ),
        (r#"{"to":"/topics/a b","message_id":"m"}"#, "to"),
    ];
    for (text, want) in cases {
        assert_eq!(from_json_field(text).0, *want, "{text}");
    }
    let (f, reason) = from_json_field(r#"{"to":"T","message_id":"m","time_to_live":"600"}"#);
    assert_eq!(f, "time_to_live");
    assert!(reason.contains("string"), "{reason}");
}

#[test]
fn from_json_missing_message_id_reason_is_exactly_missing() {
    for text in [r#"{"to":"T"}"#, r#"{"to":"T","message_id":null}"#, r#"{}"#] {
        assert_eq!(
            from_json_field(text),
            ("message_id", "missing".to_string()),
            "{text}"
        );
    }
    // Other message_id problems are not "missing".
    assert_ne!(from_json_field(r#"{"to":"T","message_id":1}"#).1, "missing");
}

#[test]
fn from_json_refuses_non_objects_and_garbage() {
    let huge = format!(
        "{{\"to\":\"T\",\"message_id\":\"m\",\"time_to_live\":{}}}",
        "9".repeat(10_000)
    );
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    for text in [
        "",
        "   ",
        "[]",
        "[{\"to\":\"T\",\"message_id\":\"m\"}]",
        "\"str\"",
        "null",
        "{",
        "{\"to\":\"T\",}",
        "not json",
        "{\"time_to_live\":1e999999}",
        huge.as_str(),
        deep.as_str(),
        "{\"to\":\"\\ud800\",\"message_id\":\"m\"}",
    ] {
        assert_eq!(from_json_field(text).0, "json", "{:.40}", text);
    }
    // Deep nesting inside an ignored field is fine.
    let deep_field = format!(
        "{{\"to\":\"T\",\"message_id\":\"m\",\"x\":{}{}}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    assert!(Message::from_json(&deep_field).is_ok());
}

#[test]
fn from_json_value_lets_caller_look_first() {
    let obj = json::parse_object(r#"{"to":"T","message_id":"m","message_type":"ack"}"#).unwrap();
    assert!(matches!(obj.get("message_type"), Some(Value::String(s)) if s == "ack"));
    let m = Message::from_json_value(&obj).unwrap();
    assert_eq!(m.id(), "m");
}

#[test]
fn from_json_accepts_nulls_as_absent_and_integral_floats() {
    let m =
        Message::from_json(r#"{"to":"T","message_id":"m","collapse_key":null,"time_to_live":6e2}"#)
            .unwrap();
    assert_eq!(m.get_collapse_key(), None);
    assert_eq!(m.get_time_to_live(), Some(600));
}

#[test]
fn a_group_key_is_client_side_only_and_bounded() {
    let plain = Message::to("T").message_id("m").data("k", "v");
    let grouped = plain.clone().group("orders-42");
    assert_eq!(grouped.get_group(), Some("orders-42"));
    assert_eq!(plain.get_group(), None);
    assert_eq!(plain.clone().group("").get_group(), None, "empty: no group");
    // Never on the wire: the JSON and the whole stanza are the same bytes.
    assert_eq!(grouped.to_json(), plain.to_json());
    let (mut a, mut b, mut scratch) = (String::new(), String::new(), String::new());
    crate::wire::message(&mut a, &grouped, &mut scratch);
    crate::wire::message(&mut b, &plain, &mut scratch);
    assert_eq!(a, b);
    assert!(!a.contains("orders-42"));
    // 256 bytes are fine, 257 are not (bytes, not chars).
    assert!(plain.clone().group("g".repeat(256)).validate().is_ok());
    assert_eq!(
        field(plain.clone().group("g".repeat(257)).validate()),
        "group"
    );
    assert_eq!(field(plain.group("é".repeat(129)).validate()), "group");
}
