//! The emulator's serializers against the client's parser: every event kind
//! written as CCS would write it reads back equal.

use super::*;
use crate::event::{Ack, Control, ControlKind, NackCode, Receipt, UnknownMessage, Upstream};
use std::collections::BTreeMap;

fn round_trip(e: Event) {
    let text = event_json(&e);
    assert_eq!(Event::from_json(&text).unwrap(), e, "{text}");
}

#[test]
fn to_json_round_trips_every_kind() {
    round_trip(Event::Ack(Ack {
        message_id: "m\"1".into(),
        from: Some("tok\\".into()),
        registration_id: Some("canon".into()),
    }));
    round_trip(Event::Ack(Ack {
        message_id: "m".into(),
        from: None,
        registration_id: None,
    }));
    round_trip(Event::Nack(Nack {
        message_id: "m".into(),
        from: Some("tok".into()),
        code: NackCode::DeviceUnregistered,
        description: Some("gone\n".into()),
    }));
    round_trip(Event::Nack(Nack {
        message_id: "m".into(),
        from: None,
        code: NackCode::Other("NEW".into()),
        description: None,
    }));
    round_trip(Event::Receipt(Receipt {
        message_id: "dr2:m-1".into(),
        from: "gcm.googleapis.com".into(),
        original_message_id: "m-1".into(),
        status: "MESSAGE_SENT_TO_DEVICE".into(),
        device_registration_id: Some("REG".into()),
        sent_timestamp: Some(1_430_277_821_658),
        category: Some("com.example".into()),
    }));
    round_trip(Event::Receipt(Receipt {
        message_id: "dr2:m-2".into(),
        from: "gcm.googleapis.com".into(),
        original_message_id: "other".into(),
        status: "MESSAGE_SENT_TO_DEVICE".into(),
        device_registration_id: None,
        sent_timestamp: None,
        category: None,
    }));
    round_trip(Event::Control(Control {
        kind: ControlKind::ConnectionDraining,
    }));
    round_trip(Event::Control(Control {
        kind: ControlKind::Other("X".into()),
    }));
    let mut data = BTreeMap::new();
    data.insert("k".to_string(), "a & b < c".to_string());
    data.insert("é".to_string(), "\u{1}\"".to_string());
    round_trip(Event::Upstream(Upstream {
        from: "DEVICE".into(),
        category: Some("com.example".into()),
        message_id: "u-1".into(),
        data,
        time_to_live: Some(0),
    }));
    round_trip(Event::Upstream(Upstream {
        from: "DEVICE".into(),
        category: None,
        message_id: "u-2".into(),
        data: BTreeMap::new(),
        time_to_live: None,
    }));
    round_trip(Event::Unknown(UnknownMessage {
        message_type: "future".into(),
        json: r#"{"message_type":"future"}"#.into(),
    }));
}

#[test]
fn receipt_json_has_the_documented_shape() {
    let e = Event::Receipt(Receipt {
        message_id: "dr2:m-1".into(),
        from: "gcm.googleapis.com".into(),
        original_message_id: "m-1".into(),
        status: "MESSAGE_SENT_TO_DEVICE".into(),
        device_registration_id: Some("REG".into()),
        sent_timestamp: Some(1_430_277_821_658),
        category: Some("com.example".into()),
    });
    assert_eq!(
        event_json(&e),
        concat!(
            r#"{"message_type":"receipt","message_id":"dr2:m-1","from":"gcm.googleapis.com","#,
            r#""category":"com.example","data":{"message_status":"MESSAGE_SENT_TO_DEVICE","#,
            r#""original_message_id":"m-1","device_registration_id":"REG","#,
            r#""message_sent_timestamp":"1430277821658"},"time_to_live":0}"#
        )
    );
    let c = Event::Control(Control {
        kind: ControlKind::ConnectionDraining,
    });
    assert_eq!(
        event_json(&c),
        r#"{"message_type":"control","control_type":"CONNECTION_DRAINING"}"#
    );
    let a = Event::Ack(Ack {
        message_id: "m".into(),
        from: Some("t".into()),
        registration_id: None,
    });
    assert_eq!(
        event_json(&a),
        r#"{"from":"t","message_id":"m","message_type":"ack"}"#
    );
}

#[test]
fn stanza_error_round_trips_through_to_stanza() {
    let se = StanzaError {
        id: Some("m-42".into()),
        message_id: Some("m-42".into()),
        code: Some(400),
        error_type: Some("modify".into()),
        condition: "bad-request".into(),
        text: Some("InvalidJson: JSON_PARSING_ERROR : Missing Required Field: message_id\n".into()),
    };
    let el = stanza_error_element(&se, None);
    assert_eq!(el.attr("type"), Some("error"));
    let back = Event::from_stanza(&el).unwrap().unwrap();
    assert_eq!(back, Event::StanzaError(se.clone()));
    let el = stanza_error_element(&se, Some(r#"{"to":"T","message_id":"m-42"}"#));
    assert_eq!(
        el.child("gcm", NS_GCM).unwrap().text(),
        r#"{"to":"T","message_id":"m-42"}"#
    );
    assert_eq!(
        Event::from_stanza(&el).unwrap().unwrap(),
        Event::StanzaError(se.clone())
    );
    let bare = StanzaError {
        id: None,
        message_id: None,
        code: None,
        error_type: None,
        condition: "not-acceptable".into(),
        text: None,
    };
    let el = stanza_error_element(&bare, None);
    assert!(el.child("gcm", NS_GCM).is_none());
    assert_eq!(
        Event::from_stanza(&el).unwrap().unwrap(),
        Event::StanzaError(bare.clone())
    );
    assert_eq!(event_json(&Event::StanzaError(bare)), "{}");
    assert_eq!(
        event_json(&Event::StanzaError(se)),
        r#"{"message_id":"m-42"}"#
    );
}
