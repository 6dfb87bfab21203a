//! The crate's public XML writer judged by an independent, conforming XML 1.0
//! parser (the `xml` crate): whatever string it is given, what it writes is a
//! well-formed document. Self-contained on purpose: it uses only API that
//! every version of the writer had, so it runs on old code too.

use fcm_xmpp::xml::{escape_attr, escape_text, write_element, Element};
use xml::reader::{ParserConfig, XmlEvent};

/// Parses `doc` to its end; the first error, if any.
fn judge(doc: &str) -> Result<(), String> {
    for event in ParserConfig::new().create_reader(doc.as_bytes()) {
        match event {
            Ok(XmlEvent::EndDocument) => return Ok(()),
            Ok(_) => {}
            Err(e) => return Err(format!("{e} in {doc:?}")),
        }
    }
    Err(format!("no end of document in {doc:?}"))
}

#[test]
fn every_string_is_written_as_legal_xml() {
    let mut samples: Vec<String> = (0u32..0x20)
        .chain([
            0x7F, 0xD7FF, 0xE000, 0xFFFD, 0xFFFE, 0xFFFF, 0x10000, 0x10FFFF,
        ])
        .filter_map(char::from_u32)
        .map(|c| format!("a{c}b"))
        .collect();
    samples.extend(["<&>\"']]>".to_string(), "\r\n\t".to_string(), String::new()]);
    for s in &samples {
        let mut doc = String::from("<r a=\"");
        escape_attr(s, &mut doc);
        doc.push_str("\">");
        escape_text(s, &mut doc);
        let el = Element::new("m", "jabber:client")
            .with_attr("id", s.as_str())
            .with_text(s.as_str());
        write_element(&el, "", &mut doc);
        doc.push_str("</r>");
        if let Err(e) = judge(&doc) {
            panic!("the writer wrote illegal XML for {s:?}: {e}");
        }
    }
}
