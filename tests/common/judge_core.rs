// The independent judge's checks, kept free of this crate's types so that the crate's
// own doc tests and unit tests can include them as well (`mod judge { include!(..) }`).
// Written out here, on purpose not shared with the crate: a conforming XML 1.0 parser
// (the `xml` crate) decides.

use xml::common::Position;
use xml::reader::{ErrorKind, ParserConfig, XmlEvent};

/// Judges recorded client streams, each named for the error message.
pub fn check_all<'a>(streams: impl IntoIterator<Item = (String, &'a [u8])>) -> Result<(), String> {
    for (name, bytes) in streams {
        check_stream(bytes).map_err(|e| format!("{name}: {e}"))?;
    }
    Ok(())
}

/// True for the characters of XML 1.0's `Char` production (written out here, on purpose
/// not shared with the crate).
fn xml10_char(c: char) -> bool {
    matches!(c as u32, 0x9 | 0xA | 0xD | 0x20..=0xD7FF | 0xE000..=0xFFFD | 0x10000..=0x10FFFF)
}

/// Checks what a client wrote on one connection: an XMPP stream, i.e. an XML document whose
/// root (and, after a stream restart, a nested root) may still be open at the end.
///
/// The bytes up to the last `>` must parse, with the still-open elements closed, as a
/// well-formed XML 1.0 document with namespaces; what follows the last `>` (whitespace
/// keepalives, or a stanza cut short when the connection ended) must be valid UTF-8 (or
/// end inside a character) without characters XML 1.0 forbids.
pub fn check_stream(bytes: &[u8]) -> Result<(), String> {
    let cut = bytes.iter().rposition(|&b| b == b'>').map_or(0, |i| i + 1);
    let (body, tail) = bytes.split_at(cut);
    let tail = match std::str::from_utf8(tail) {
        Ok(t) => t,
        Err(e) if e.error_len().is_none() => std::str::from_utf8(&tail[..e.valid_up_to()])
            .map_err(|e| format!("tail after the last '>': {e}"))?,
        Err(e) => return Err(format!("tail after the last '>' is not UTF-8: {e}")),
    };
    if let Some(c) = tail.chars().find(|&c| !xml10_char(c)) {
        return Err(format!(
            "tail after the last '>' holds U+{:04X}, which XML 1.0 forbids",
            c as u32
        ));
    }
    if body.is_empty() {
        return Ok(());
    }
    // Pass 1: parse, keeping the names of the elements still open at the end.
    let mut open: Vec<String> = Vec::new();
    let reader = ParserConfig::new().create_reader(body);
    for event in reader {
        match event {
            Ok(XmlEvent::StartElement { name, .. }) => open.push(match name.prefix {
                Some(p) => format!("{p}:{}", name.local_name),
                None => name.local_name,
            }),
            Ok(XmlEvent::EndElement { .. }) => {
                open.pop();
            }
            Ok(XmlEvent::EndDocument) => break,
            Ok(_) => {}
            Err(e) if is_end_of_input(&e) => break,
            Err(e) => return Err(describe(body, &e)),
        }
    }
    // Pass 2: the same bytes with the open elements closed must be a whole document.
    let mut closed = body.to_vec();
    for name in open.iter().rev() {
        closed.extend_from_slice(format!("</{name}>").as_bytes());
    }
    for event in ParserConfig::new().create_reader(&closed[..]) {
        match event {
            Ok(XmlEvent::EndDocument) => return Ok(()),
            Ok(_) => {}
            Err(e) => return Err(describe(&closed, &e)),
        }
    }
    Err("the parser stopped before the end of the document".into())
}

/// True for the error a parser gives at the end of an unfinished document.
fn is_end_of_input(e: &xml::reader::Error) -> bool {
    match e.kind() {
        ErrorKind::UnexpectedEof => true,
        ErrorKind::Syntax(msg) => msg.starts_with("Unexpected end of stream"),
        _ => false,
    }
}

/// The error with the text around it (the client writes one line; the SASL payload is
/// hidden).
fn describe(bytes: &[u8], e: &xml::reader::Error) -> String {
    let text = String::from_utf8_lossy(bytes);
    let pos = e.position();
    let line = text.lines().nth(pos.row as usize).unwrap_or("");
    let chars: Vec<char> = line.chars().collect();
    let at = (pos.column as usize).min(chars.len());
    let from = at.saturating_sub(80);
    let to = (at + 40).min(chars.len());
    let mut near: String = chars[from..to].iter().collect();
    if let (Some(a), Some(b)) = (near.find("<auth "), near.find("</auth>")) {
        if a < b {
            near.replace_range(a..b, "<auth <redacted>");
        }
    }
    format!("{e} near {near:?}")
}
