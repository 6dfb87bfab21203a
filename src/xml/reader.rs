//! Incremental stanza reader over `xmlparser`. STUB: being implemented.

use super::Element;
use crate::error::XmlError;
use std::io::{self, Read};

/// Limits the reader enforces before buffering more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReaderLimits {
    /// Largest stream header or stanza, in bytes.
    pub max_stanza_size: usize,
    /// Deepest nesting below the stream root.
    pub max_depth: usize,
}

impl Default for ReaderLimits {
    fn default() -> Self {
        ReaderLimits {
            max_stanza_size: 64 * 1024,
            max_depth: 32,
        }
    }
}

/// One unit read from an XMPP stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// The opening `<stream:stream ...>` (an element with its attributes, no children).
    StreamStart(Element),
    /// A complete top-level stanza (a child of the stream root).
    Stanza(Element),
    /// `</stream:stream>`: the peer closed its stream.
    StreamEnd,
}

/// Bytes in, complete stanzas out.
#[derive(Debug)]
pub struct StanzaReader {
    _limits: ReaderLimits,
}

impl StanzaReader {
    /// A reader at the start of a stream.
    pub fn new(limits: ReaderLimits) -> Self {
        StanzaReader { _limits: limits }
    }

    /// Appends bytes.
    pub fn feed(&mut self, _bytes: &[u8]) {
        todo!()
    }

    /// Reads once from `r` into the internal buffer (one block); 0 means EOF.
    pub fn read_from<R: Read>(&mut self, _r: &mut R) -> io::Result<usize> {
        todo!()
    }

    /// The next complete packet, `Ok(None)` if more bytes are needed.
    pub fn next_packet(&mut self) -> Result<Option<Packet>, XmlError> {
        todo!()
    }

    /// Starts a new stream (after SASL success); unconsumed bytes are kept.
    pub fn reset(&mut self) {
        todo!()
    }

    /// Called at EOF: `Err(Truncated)` if a stanza was cut off.
    pub fn finish(&self) -> Result<(), XmlError> {
        todo!()
    }
}
