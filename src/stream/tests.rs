use super::*;

#[test]
fn plain_payload_is_one_line() {
    let c = Config::new("123456789012", "KEY");
    let p = plain_auth_payload(&c);
    assert!(!p.contains('\n'));
    let raw = base64::engine::general_purpose::STANDARD.decode(p).unwrap();
    assert_eq!(raw, b"\x00123456789012@gcm.googleapis.com\x00KEY");
}

#[test]
fn redact_hides_auth() {
    let s = "<x/><auth xmlns=\"urn:ietf:params:xml:ns:xmpp-sasl\" mechanism=\"PLAIN\">AGFiYwBrZXk=</auth><y/>";
    let r = redact(s);
    assert!(!r.contains("AGFiYwBrZXk="), "{r}");
    assert!(r.contains("<y/>"));
    assert_eq!(redact("<a/>"), "<a/>");
    assert!(!redact("<auth mechanism=\"PLAIN\">SECRET").contains("SECRET"));
}
