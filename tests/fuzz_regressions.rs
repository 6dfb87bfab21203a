//! The fuzz targets' properties under plain `cargo test`: every committed
//! seed (`fuzz/seeds/<target>/`) and every minimised finding goes through
//! the same check the fuzzer runs. The checks live in `fuzz/src/lib.rs`,
//! included here as a module; see `fuzz/README.md` for running the fuzzers.
//! They use the emulator's serializers to write events as CCS would.
#![cfg(feature = "emulator")]

#[path = "../fuzz/src/lib.rs"]
mod props;

use std::fs;
use std::path::{Path, PathBuf};

use fcm_xmpp::xml::{Element, Packet, ReaderLimits};
use fcm_xmpp::{Event, ProtocolError};

/// The committed seeds of `target`, sorted by name.
fn seeds(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds")
        .join(target);
    let mut out: Vec<_> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("readable seed directory").path();
            let bytes = fs::read(&path).expect("readable seed");
            (path, bytes)
        })
        .collect();
    out.sort();
    assert!(out.len() >= 10, "too few seeds in {}", dir.display());
    out
}

/// Runs `check` on each seed, naming the seed if it panics.
fn replay(target: &str, check: fn(&[u8])) {
    for (path, bytes) in seeds(target) {
        let r = std::panic::catch_unwind(|| check(&bytes));
        assert!(r.is_ok(), "{target} seed {} failed", path.display());
    }
}

fn seed(target: &str, name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds")
        .join(target)
        .join(name);
    fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

// ---- the seeds -------------------------------------------------------------

#[test]
fn stanza_reader_seeds() {
    replay("stanza_reader", props::check_reader);
}

#[test]
fn event_json_seeds() {
    replay("event_json", props::check_event);
}

#[test]
fn message_validation_seeds() {
    replay("message_validation", props::check_message_bytes);
}

/// The seeds mean what their names say, so the fuzzer starts from real
/// traffic rather than from early errors.
#[test]
fn seeds_are_what_they_claim() {
    let input = seed("stanza_reader", "session_stream.a");
    let input = props::decode_reader_input(&input);
    assert_eq!(input.sizes, [1, 7, 2176]);
    assert!(!input.use_read_from);
    let (packets, end) = props::read_whole(input.limits, input.stream);
    assert_eq!(end, Ok(()));
    assert_eq!(packets.len(), 12);
    assert_eq!(packets.last(), Some(&Packet::StreamEnd));

    let input = seed("stanza_reader", "protocol_s4_s7_traffic.b");
    let input = props::decode_reader_input(&input);
    assert!(input.use_read_from);
    let (packets, end) = props::read_whole(input.limits, input.stream);
    assert_eq!((packets.len(), end), (7, Ok(())));
    let events: Vec<_> = packets
        .iter()
        .filter_map(|p| match p {
            Packet::Stanza(el) => fcm_xmpp::Event::from_stanza(el).expect("valid event"),
            _ => None,
        })
        .collect();
    assert_eq!(events.len(), 5);

    let input = seed("stanza_reader", "reader_oddities.c");
    let input = props::decode_reader_input(&input);
    assert_eq!(
        input.limits,
        ReaderLimits {
            max_stanza_size: 512,
            max_depth: 4
        }
    );
    assert_eq!(props::read_whole(input.limits, input.stream).1, Ok(()));

    for name in ["error_doctype.a", "error_entity.a", "error_too_deep.a"] {
        let input = seed("stanza_reader", name);
        let input = props::decode_reader_input(&input);
        assert!(props::read_whole(input.limits, input.stream).1.is_err());
    }

    for name in ["ack", "nack_draining", "receipt", "control", "upstream"] {
        let text = String::from_utf8(seed("event_json", name)).expect("UTF-8");
        assert!(fcm_xmpp::Event::from_json(&text).is_ok(), "{name}");
    }

    for name in ["protocol_s6", "condition", "topic_notification"] {
        let text = String::from_utf8(seed("message_validation", name)).expect("UTF-8");
        assert!(fcm_xmpp::Message::from_json(&text).is_ok(), "{name}");
    }
    let built = props::decode_message(&seed("message_validation", "built_topic"));
    assert_eq!(built.validate(), Ok(()));
    assert_eq!(built.get_to(), Some("/topics/news"));
    assert_eq!(
        built
            .get_notification()
            .and_then(|n| n.body_loc_args.clone()),
        Some(vec!["x".to_owned(), "y".to_owned()])
    );
    let built = props::decode_message(&seed("message_validation", "built_to"));
    assert_eq!(built.get_time_to_live(), Some(600));
    assert_eq!(built.data_pairs().len(), 2);
}

// ---- findings ----------------------------------------------------------------
//
// No run found a crash, hang or property failure in the crate (see the table
// in fuzz/README.md). The two findings below were in the harness's own
// expectations; they stay here because they pin the writer behaviour the
// harness relies on.

/// event_json, first minute: U+0000 in the error `type` attribute. The
/// writer documents that it writes U+0000, which XML cannot carry, as
/// U+FFFD, so the XML round trip changes the value; the harness skipped the
/// XML steps only for U+0000 in the payload, now for any in the input.
#[test]
fn event_json_nul_outside_the_payload() {
    let input = b"\x1f\x1f \x1f\x00\x1f";
    props::check_event(input);
    let el = Element::new("message", "jabber:client").with_attr("type", "\0");
    let back = props::write_and_reread(&el).expect("reads back");
    assert_eq!(back.attr("type"), Some("\u{FFFD}"));
}

/// event_json seed `stanza_error_bare`: an empty payload is an empty text
/// node, which the writer leaves out (`<gcm></gcm>`), so the element read
/// back has no text node; the event is the same (no payload is a bad one).
#[test]
fn event_json_empty_payload() {
    props::check_event(b"\x1f\x1f \x1f\x1f");
    let msg = Element::new("message", "jabber:client")
        .with_child(Element::new("gcm", "google:mobile:data").with_text(""));
    let back = props::write_and_reread(&msg).expect("reads back");
    assert_eq!(
        back,
        Element::new("message", "jabber:client")
            .with_child(Element::new("gcm", "google:mobile:data"))
    );
    let ev = Event::from_stanza(&back);
    assert!(
        matches!(ev, Err(ProtocolError::BadPayload { .. })),
        "{ev:?}"
    );
    assert_eq!(ev, Event::from_stanza(&msg));
}
