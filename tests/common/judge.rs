//! The independent judge: every byte a client writes to the emulator must be well-formed
//! XML 1.0 to a conforming parser (the `xml` crate, which refuses the characters and
//! character references XML 1.0 forbids), not only to this crate's lenient reader, which
//! the emulator shares with the client.
//!
//! Start emulators for client tests with [`start`] or [`judged`]: the returned [`Judged`]
//! records what clients write and, when dropped, shuts the emulator down and judges every
//! connection's bytes (it panics, failing the test, on the first bad one).

use std::ops::Deref;

use fcm_xmpp::emulator::{ClientBytes, Emulator, EmulatorBuilder};
use xml::common::Position;
use xml::reader::{ErrorKind, ParserConfig, XmlEvent};

/// Client bytes recorded per emulator, over all its connections (soaks record a prefix).
pub const RECORD_BYTES: usize = 64 << 20;

/// An emulator whose clients' bytes are judged when it is dropped.
pub struct Judged(Option<Emulator>);

impl Deref for Judged {
    type Target = Emulator;
    fn deref(&self) -> &Emulator {
        self.0.as_ref().expect("emulator")
    }
}

impl Drop for Judged {
    fn drop(&mut self) {
        let Some(emu) = self.0.take() else { return };
        emu.shutdown();
        if std::thread::panicking() {
            return;
        }
        if let Err(e) = judge(&emu.client_bytes()) {
            panic!("independent XML judge: {e}");
        }
    }
}

/// Starts an emulator for `sender_id` and `server_key` whose clients are judged.
pub fn start(sender_id: &str, server_key: &str) -> Judged {
    judged(
        Emulator::builder()
            .sender_id(sender_id)
            .server_key(server_key),
    )
}

/// Starts `builder`'s emulator with recording on; its clients are judged.
pub fn judged(builder: EmulatorBuilder) -> Judged {
    judged_recording(builder, RECORD_BYTES)
}

/// As [`judged`], recording at most `max_bytes` (the judge then sees a prefix).
pub fn judged_recording(builder: EmulatorBuilder, max_bytes: usize) -> Judged {
    Judged(Some(
        builder
            .record_client_bytes(max_bytes)
            .start()
            .expect("start the emulator"),
    ))
}

/// Judges every recorded connection.
pub fn judge(recordings: &[ClientBytes]) -> Result<(), String> {
    for rec in recordings {
        check_stream(&rec.bytes).map_err(|e| format!("{:?}: {e}", rec.conn))?;
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
