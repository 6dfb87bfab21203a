use super::*;

fn w(s: &str) -> String {
    let mut out = String::new();
    write_str(s, &mut out);
    out
}

fn obj(text: &str) -> Object {
    parse_object(text).expect("test fixture is an object")
}

#[test]
fn write_str_escapes() {
    assert_eq!(w(""), r#""""#);
    assert_eq!(w("plain"), r#""plain""#);
    assert_eq!(w(r#"a"b\c"#), r#""a\"b\\c""#);
    assert_eq!(w("\n\r\t\u{8}\u{c}"), r#""\n\r\t\b\f""#);
    assert_eq!(w("\u{0}\u{1}\u{1f}"), r#""\u0000\u0001\u001f""#);
    assert_eq!(w("x\u{1b}y"), r#""x\u001by""#);
    // Non-ASCII passes through; `/`, `<`, `&` and DEL are not escaped.
    assert_eq!(w("é€😀/<&\u{7f}"), "\"é€😀/<&\u{7f}\"");
    // The two non-characters XML forbids travel escaped; their neighbours do not.
    assert_eq!(
        w("a\u{fffe}b\u{ffff}\u{fffd}\u{fefe}"),
        "\"a\\ufffeb\\uffff\u{fffd}\u{fefe}\""
    );
    let back: String = miniserde::json::from_str(&w("\u{ffff}x\u{fffe}")).unwrap();
    assert_eq!(back, "\u{ffff}x\u{fffe}");
}

#[test]
fn write_str_round_trips_every_control_char() {
    let mut s = String::new();
    for c in 0u32..0x80 {
        s.push(char::from_u32(c).unwrap());
    }
    s.push_str("héllo\u{2028}😀\"\\");
    let text = w(&s);
    assert!(
        !text.bytes().any(|b| b < 0x20),
        "raw control char in {text:?}"
    );
    let back: String = miniserde::json::from_str(&text).unwrap();
    assert_eq!(back, s);
}

#[test]
fn write_str_appends() {
    let mut out = String::from("{");
    write_str("k", &mut out);
    out.push(':');
    write_str("v", &mut out);
    assert_eq!(out, r#"{"k":"v""#);
}

#[test]
fn write_u64_digits() {
    for n in [0, 1, 9, 10, 600, 2_419_200, u64::from(u32::MAX), u64::MAX] {
        let mut out = String::from("x");
        write_u64(n, &mut out);
        assert_eq!(out, format!("x{n}"));
    }
}

#[test]
fn parse_trims_whitespace() {
    assert!(parse_object("\n  {\"a\":1}\r\n\t ").is_ok());
    assert_eq!(parse_object("").err(), Some(ParseError::Invalid));
    assert_eq!(parse_object("   ").err(), Some(ParseError::Invalid));
}

#[test]
fn parse_refuses_garbage_and_non_objects() {
    for bad in [
        "{",
        "}",
        "{\"a\"}",
        "{\"a\":}",
        "{'a':1}",
        "{\"a\":1,}",
        "{} {}",
        "nul",
    ] {
        assert_eq!(parse_object(bad).err(), Some(ParseError::Invalid), "{bad}");
    }
    assert_eq!(
        parse_object("[1,2]").err(),
        Some(ParseError::NotObject("array"))
    );
    assert_eq!(
        parse_object("\"s\"").err(),
        Some(ParseError::NotObject("string"))
    );
    assert_eq!(
        parse_object("12").err(),
        Some(ParseError::NotObject("number"))
    );
    assert_eq!(
        parse_object("null").err(),
        Some(ParseError::NotObject("null"))
    );
    assert_eq!(
        parse_object("true").err(),
        Some(ParseError::NotObject("boolean"))
    );
}

#[test]
fn huge_numbers_are_errors_not_panics_or_infinity() {
    assert_eq!(parse("1e999999").err(), Some(ParseError::Invalid));
    assert!(parse("-1e999999").is_err());
    assert!(parse("1e99999999999999999999").is_err());
    let long = "9".repeat(10_000);
    assert!(parse(&long).is_err());
    assert!(parse(&format!("{{\"ttl\":{long}}}")).is_err());
    // Tiny magnitudes underflow to zero rather than failing.
    assert!(matches!(parse("1e-999999"), Ok(Value::Number(Number::F64(f))) if f == 0.0));
    // u64 overflow falls back to a float; our integer reader refuses it.
    let o = obj("{\"n\":18446744073709551616}");
    assert!(opt_u64(&o, "n", u64::MAX).is_err());
}

#[test]
fn deep_nesting_is_fine() {
    let depth = 200_000;
    let text = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    assert!(matches!(
        parse_object(&text),
        Err(ParseError::NotObject("array"))
    ));
    let text = format!("{{\"a\":{}{}}}", "[".repeat(depth), "]".repeat(depth));
    let o = parse_object(&text).unwrap();
    // Serialising it back is iterative too.
    assert_eq!(to_text(o.get("a").unwrap()).len(), 2 * depth);
    let unbalanced = "[".repeat(depth);
    assert!(parse(&unbalanced).is_err());
    let text = "{\"a\":".repeat(depth);
    assert!(parse(&text).is_err());
}

#[test]
fn bad_escapes_are_errors() {
    for bad in [
        r#""\ud800""#,
        r#""\udc00""#,
        r#""\ud800\u0041""#,
        r#""\ud800x""#,
        r#""\x41""#,
        r#""\u12""#,
        r#""\u12G4""#,
        "\"a\u{1}b\"",
        "\"unterminated",
    ] {
        assert!(parse(bad).is_err(), "{bad}");
    }
    assert!(matches!(parse(r#""\ud83d\ude00""#), Ok(Value::String(s)) if s == "😀"));
}

#[test]
fn field_readers() {
    let o = obj(
        r#"{"s":"x","n":600,"f":6e2,"frac":1.5,"neg":-1,"b":true,"bs":"true",
           "ns":"600","nul":null,"o":{},"a":["x","y"],"am":["x",1]}"#,
    );
    assert_eq!(opt_str(&o, "s"), Ok(Some("x")));
    assert_eq!(opt_str(&o, "absent"), Ok(None));
    assert_eq!(opt_str(&o, "nul"), Ok(None));
    assert_eq!(opt_str(&o, "n").unwrap_err().field, "n");
    assert_eq!(req_str(&o, "s"), Ok("x"));
    assert_eq!(req_str(&o, "nul"), Err(FieldError::missing("nul")));
    assert_eq!(req_str(&o, "absent").unwrap_err().reason, "missing");
    assert_eq!(opt_bool(&o, "b"), Ok(Some(true)));
    let e = opt_bool(&o, "bs").unwrap_err();
    assert_eq!(
        (e.field, e.reason.as_str()),
        ("bs", "must be a boolean, got string")
    );
    assert_eq!(opt_u64(&o, "n", 2_419_200), Ok(Some(600)));
    assert_eq!(opt_u64(&o, "f", 2_419_200), Ok(Some(600)));
    assert_eq!(opt_u64(&o, "n", 599).unwrap_err().field, "n");
    assert!(opt_u64(&o, "frac", 10).is_err());
    assert!(opt_u64(&o, "neg", 10).is_err());
    let e = opt_u64(&o, "ns", 10_000).unwrap_err();
    assert_eq!(e.reason, "must be a number, got string");
    assert_eq!(opt_u64(&o, "nul", 1), Ok(None));
    assert!(opt_object(&o, "o").unwrap().is_some());
    assert!(opt_object(&o, "a").is_err());
    assert_eq!(
        opt_str_array(&o, "a"),
        Ok(Some(vec!["x".to_string(), "y".to_string()]))
    );
    assert_eq!(opt_str_array(&o, "am").unwrap_err().field, "am");
    assert_eq!(opt_str_array(&o, "s").unwrap_err().field, "s");
    assert_eq!(
        FieldError::missing("message_id").to_string(),
        "field `message_id`: missing"
    );
}

#[test]
fn duplicate_keys_last_wins() {
    let o = obj(r#"{"a":"1","a":"2"}"#);
    assert_eq!(opt_str(&o, "a"), Ok(Some("2")));
}

/// The string writer as first written, a character at a time: the
/// definition the word-at-a-time search must reproduce exactly.
fn write_str_charwise(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{0}'..='\u{1f}' => out.push_str(&format!("\\u{:04x}", c as u32)),
            '\u{FFFE}' => out.push_str("\\ufffe"),
            '\u{FFFF}' => out.push_str("\\uffff"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[test]
fn write_str_agrees_with_the_charwise_definition() {
    let mut r = crate::test_rng::Rng(0x0123_4567_89AB_CDEF);
    for _ in 0..20_000 {
        let s = r.text(40);
        assert_eq!(w(&s), write_str_charwise(&s), "{s:?}");
        // And it reads back as the same string.
        let text = w(&s);
        assert_eq!(
            parse(&text).ok().and_then(|v| match v {
                Value::String(t) => Some(t),
                _ => None,
            }),
            Some(s.clone()),
            "{s:?}"
        );
    }
}
