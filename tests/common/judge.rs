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

mod core {
    include!("judge_core.rs");
}
#[allow(unused_imports)] // each test file uses a different subset
pub use self::core::check_stream;

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
    self::core::check_all(
        recordings
            .iter()
            .map(|r| (format!("{:?}", r.conn), &r.bytes[..])),
    )
}
