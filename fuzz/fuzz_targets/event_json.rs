//! `cargo fuzz run event_json`: see `fcm_xmpp_fuzz::check_event` for the input format and
//! the properties checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fcm_xmpp_fuzz::check_event(data));
