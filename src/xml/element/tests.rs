use super::*;

#[test]
fn accessors() {
    let e = Element::new("message", "jabber:client")
        .with_attr("id", "m1")
        .with_child(Element::new("gcm", "google:mobile:data").with_text("{}"))
        .with_text("x");
    assert!(e.is("message", "jabber:client"));
    assert_eq!(e.attr("id"), Some("m1"));
    assert_eq!(e.attr("to"), None);
    assert_eq!(e.child("gcm", "google:mobile:data").unwrap().text(), "{}");
    assert!(e.child("gcm", "other").is_none());
    assert_eq!(e.child_named("gcm").unwrap().ns(), "google:mobile:data");
    assert_eq!(e.text(), "x");
    let mut e = e;
    e.set_attr("id", "m2");
    assert_eq!(e.attrs().len(), 1);
    assert_eq!(e.attr("id"), Some("m2"));
}
