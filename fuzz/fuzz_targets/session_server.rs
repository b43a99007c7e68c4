//! Hostile bytes into a server session: never a panic, never application data.
#![no_main]

#[path = "common.rs"]
mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let s = tether::Session::server(common::server_config(), tether::Instant::ZERO).unwrap();
    common::feed(s, data);
});
