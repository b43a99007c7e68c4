//! Hostile bytes into a client session (after its ClientHello): never a panic, never
//! application data.
#![no_main]

#[path = "common.rs"]
mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut s =
        tether::Session::client(common::client_config(), "localhost", tether::Instant::ZERO)
            .unwrap();
    let mut hello = vec![0u8; 4096];
    let _ = s.poll_transmit(&mut hello);
    common::feed(s, data);
});
