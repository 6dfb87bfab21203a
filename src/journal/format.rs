//! Encoding and decoding of the journal's file header, frames and records
//! (the layout is documented on the [`journal`](super) module).

use super::crc::{crc32c, Crc32c};

/// First eight bytes of every journal file.
pub(crate) const MAGIC: [u8; 8] = *b"FCMXJRNL";
/// The format version this code writes and reads.
pub(crate) const VERSION: u32 = 1;
/// File header: magic, version, salt, checksum.
pub(crate) const HEADER_LEN: usize = 8 + 4 + 8 + 4;
/// Frame header: payload length, payload checksum, header checksum.
pub(crate) const FRAME_HEADER_LEN: usize = 12;

pub(crate) const TAG_PUT: u8 = 1;
pub(crate) const TAG_REMOVE: u8 = 2;

/// Encoded size of a put record.
pub(crate) fn put_len(key: &str, value: &[u8]) -> usize {
    1 + 2 + key.len() + 4 + value.len()
}

pub(crate) fn encode_put(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    out.push(TAG_PUT);
    out.extend_from_slice(&(key.len() as u16).to_le_bytes());
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    out.extend_from_slice(value);
}

pub(crate) fn encode_remove(out: &mut Vec<u8>, key: &str) {
    out.push(TAG_REMOVE);
    out.extend_from_slice(&(key.len() as u16).to_le_bytes());
    out.extend_from_slice(key.as_bytes());
}

pub(crate) fn encode_header(salt: u64) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(&MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h[12..20].copy_from_slice(&salt.to_le_bytes());
    let crc = crc32c(&h[..20]);
    h[20..].copy_from_slice(&crc.to_le_bytes());
    h
}

/// What is wrong with a file header.
pub(crate) enum HeaderError {
    Magic,
    Checksum,
    Version(u32),
}

/// Checks a file header and returns its salt.
pub(crate) fn decode_header(h: &[u8; HEADER_LEN]) -> Result<u64, HeaderError> {
    if h[..8] != MAGIC {
        return Err(HeaderError::Magic);
    }
    if crc32c(&h[..20]) != le32(&h[20..24]) {
        return Err(HeaderError::Checksum);
    }
    let version = le32(&h[8..12]);
    if version != VERSION {
        return Err(HeaderError::Version(version));
    }
    Ok(u64::from_le_bytes(h[12..20].try_into().expect("8 bytes")))
}

fn header_crc(salt: u64, len: u32, payload_crc: u32) -> u32 {
    let mut c = Crc32c::new();
    c.update(&salt.to_le_bytes());
    c.update(&len.to_le_bytes());
    c.update(&payload_crc.to_le_bytes());
    c.finish()
}

/// Fills the first [`FRAME_HEADER_LEN`] bytes of `frame` (reserved by the
/// caller) for the payload that follows them.
pub(crate) fn seal_frame(frame: &mut [u8], salt: u64) {
    let (head, payload) = frame.split_at_mut(FRAME_HEADER_LEN);
    let len = payload.len() as u32;
    let payload_crc = crc32c(payload);
    head[0..4].copy_from_slice(&len.to_le_bytes());
    head[4..8].copy_from_slice(&payload_crc.to_le_bytes());
    head[8..12].copy_from_slice(&header_crc(salt, len, payload_crc).to_le_bytes());
}

/// A frame header whose own checksum holds: the payload's length and checksum.
pub(crate) struct FrameHeader {
    pub(crate) len: u32,
    pub(crate) payload_crc: u32,
}

/// Checks a frame header against the file's salt.
pub(crate) fn decode_frame_header(h: &[u8], salt: u64) -> Option<FrameHeader> {
    let len = le32(&h[0..4]);
    let payload_crc = le32(&h[4..8]);
    (header_crc(salt, len, payload_crc) == le32(&h[8..12]))
        .then_some(FrameHeader { len, payload_crc })
}

/// One decoded record, borrowing from the payload.
pub(crate) enum Record<'a> {
    Put(&'a str, &'a [u8]),
    Remove(&'a str),
}

/// Decodes every record of a payload whose checksum already held. An error
/// says what is malformed.
pub(crate) fn decode_records(
    mut p: &[u8],
    max_value: usize,
    mut each: impl FnMut(Record<'_>),
) -> Result<(), &'static str> {
    fn take<'a>(p: &mut &'a [u8], n: usize) -> Result<&'a [u8], &'static str> {
        if p.len() < n {
            return Err("record runs past the end of its frame");
        }
        let (head, rest) = p.split_at(n);
        *p = rest;
        Ok(head)
    }
    if p.is_empty() {
        return Err("empty frame");
    }
    while !p.is_empty() {
        let tag = take(&mut p, 1)?[0];
        let klen = u16::from_le_bytes(take(&mut p, 2)?.try_into().expect("2 bytes"));
        let key = std::str::from_utf8(take(&mut p, usize::from(klen))?)
            .map_err(|_| "key is not UTF-8")?;
        match tag {
            TAG_PUT => {
                let vlen = le32(take(&mut p, 4)?) as usize;
                if vlen > max_value {
                    return Err("value over the size limit");
                }
                each(Record::Put(key, take(&mut p, vlen)?));
            }
            TAG_REMOVE => each(Record::Remove(key)),
            _ => return Err("unknown record tag"),
        }
    }
    Ok(())
}

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes(b[..4].try_into().expect("4 bytes"))
}
