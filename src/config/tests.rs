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
