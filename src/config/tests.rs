use super::*;

#[test]
fn key_is_redacted() {
    let c = Config::new("123", "s3cr3t-key");
    let dbg = format!("{c:?} {:?} {}", c.server_key, c.server_key);
    assert!(!dbg.contains("s3cr3t"), "{dbg}");
    assert!(dbg.contains("<redacted>"));
}

#[test]
fn endpoint_parse() {
    let e: Endpoint = "127.0.0.1:5235".parse().unwrap();
    assert_eq!(e, Endpoint::new("127.0.0.1", 5235));
    let e: Endpoint = "[::1]:9".parse().unwrap();
    assert_eq!(e.host, "::1");
    assert_eq!(e.to_string(), "[::1]:9");
    assert!("nohost".parse::<Endpoint>().is_err());
    assert!(":5".parse::<Endpoint>().is_err());
    assert!("h:99999".parse::<Endpoint>().is_err());
    // URLs and paths are not addresses (the scheme used to end up in the host).
    for bad in ["https://host:5235", "tls://h:1", "host/path:5", "user@h:5"] {
        let e = bad.parse::<Endpoint>().unwrap_err();
        assert!(e.to_string().contains("expected HOST:PORT"), "{bad}: {e}");
    }
}

const CERT: &[u8] = include_bytes!("../../tests/fixtures/other_name-cert.pem");
const CERT2: &[u8] = include_bytes!("../../tests/fixtures/expired-cert.pem");

fn roots_error(pem: &[u8]) -> String {
    match Config::new("1", "k").add_root_pem(pem).validate() {
        Err(Error::InvalidConfig {
            field: "extra_root_pems",
            reason,
        }) => reason,
        other => panic!("{other:?}"),
    }
}

#[test]
fn validate_parses_extra_roots() {
    let one = Config::new("1", "k").add_root_pem(CERT);
    assert!(one.validate().is_ok());
    assert_eq!(crate::transport::parse_roots(CERT).unwrap().len(), 1);
    // A bundle: every certificate in it counts.
    let bundle = [CERT, CERT2].concat();
    assert_eq!(crate::transport::parse_roots(&bundle).unwrap().len(), 2);
    assert!(Config::new("1", "k")
        .add_root_pem(bundle)
        .validate()
        .is_ok());

    assert!(roots_error(b"").contains("no PEM certificate"));
    assert!(roots_error(b"not a certificate at all").contains("no PEM certificate"));
    // A key file is PEM, but not a certificate.
    let key = include_bytes!("../../tests/fixtures/other_name-key.pem");
    assert!(roots_error(key).contains("no PEM certificate"));
    // A certificate whose base64 is damaged.
    let text = String::from_utf8(CERT.to_vec()).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines[3] = "!!!! not base64 !!!!";
    let broken = lines.join("\n");
    assert!(roots_error(broken.as_bytes()).contains("entry 1 of 1"));
    // One good certificate and one broken one in a bundle: refused, not half-added.
    let half = [CERT, broken.as_bytes()].concat();
    assert!(!roots_error(&half).is_empty());
}

#[test]
fn add_root_pem_file_names_the_file() {
    let dir = std::env::temp_dir().join(format!("fcm-xmpp-roots-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let empty = dir.join("empty.pem");
    std::fs::write(&empty, b"").unwrap();
    let good = dir.join("good.pem");
    std::fs::write(&good, CERT).unwrap();
    let missing = dir.join("missing.pem");
    for path in [&empty, &missing] {
        let e = Config::new("1", "k").add_root_pem_file(path).unwrap_err();
        let text = e.to_string();
        assert!(text.contains(&path.display().to_string()), "{text}");
        assert!(matches!(
            e,
            Error::InvalidConfig {
                field: "extra_root_pems",
                ..
            }
        ));
    }
    let c = Config::new("1", "k").add_root_pem_file(&good).unwrap();
    assert_eq!(c.extra_root_pems, vec![CERT.to_vec()]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn presets() {
    assert_eq!(Endpoint::fcm_production().port, 5235);
    assert_eq!(Endpoint::fcm_preproduction().port, 5236);
    assert_eq!(Endpoint::gcm_production().host, "gcm.googleapis.com");
}

#[test]
fn validate_names_field() {
    let ok = Config::new("123", "k");
    assert!(ok.validate().is_ok());
    let e = ok.clone().max_pending(101).validate().unwrap_err();
    assert!(matches!(
        e,
        Error::InvalidConfig {
            field: "max_pending",
            ..
        }
    ));
    let e = Config::new("", "k").validate().unwrap_err();
    assert!(matches!(
        e,
        Error::InvalidConfig {
            field: "sender_id",
            ..
        }
    ));
    let e = Config::new("1", "").validate().unwrap_err();
    assert!(matches!(
        e,
        Error::InvalidConfig {
            field: "server_key",
            ..
        }
    ));
}

#[test]
fn names_that_reach_the_wire_are_checked() {
    // Each of these would put a character XML 1.0 forbids (or markup) into the stream
    // header, the auth payload's JID or the bind request.
    let field_of = |c: Config| match c.validate() {
        Err(Error::InvalidConfig { field, .. }) => Some(field),
        _ => None,
    };
    let ok = Config::new("123", "k");
    for domain in [
        "",
        "gcm.googleapis.com\u{1}",
        "a b.com",
        "a\"b.com",
        "a..b",
        "x.com.",
        "a<b>.com",
        "ex\u{e9}.com",
    ] {
        let c = ok.clone().domain(domain);
        assert_eq!(field_of(c), Some("domain"), "{domain:?}");
    }
    for resource in [
        "",
        "r\u{1}",
        "r\u{7f}",
        "r\u{fffe}",
        "a<b",
        &"r".repeat(1024),
    ] {
        let c = ok.clone().resource(resource);
        assert_eq!(field_of(c), Some("resource"), "{resource:?}");
    }
    for sender in ["1\u{0}", "1\u{1b}2", "1 2", "a@b"] {
        assert_eq!(
            field_of(Config::new(sender, "k")),
            Some("sender_id"),
            "{sender:?}"
        );
    }
    for domain in [
        "gcm.googleapis.com",
        "localhost",
        "fcm-xmpp.googleapis.com",
        "a1.b-2.c",
    ] {
        assert_eq!(field_of(ok.clone().domain(domain)), None, "{domain:?}");
    }
    assert_eq!(field_of(ok.clone().resource("app-server \u{e9} 1")), None);
}
