//! XML layer: an incremental stanza reader over `xmlparser`, a small element
//! tree, and an escaping writer. Knows nothing of sockets or CCS.

mod element;
mod reader;
pub(crate) mod search;
mod writer;

pub use element::{Element, Node};
pub use reader::{GcmPayload, Item, Packet, ReaderLimits, StanzaReader};
pub(crate) use reader::{RawItem, RawPayload};
pub(crate) use writer::{append_json_text, first_forbidden_char, is_xml_char};
pub use writer::{escape_attr, escape_text, write_element};
