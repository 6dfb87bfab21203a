//! `cargo fuzz run message_validation`: see `fcm_xmpp_fuzz::check_message_bytes` for the input format and
//! the properties checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fcm_xmpp_fuzz::check_message_bytes(data));
