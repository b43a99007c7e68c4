//! Hostile datagrams into a DTLS client session that has sent its ClientHello: never a panic,
//! never Connected, never application data.
#![no_main]

#[path = "common.rs"]
mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut c = tether::dtls::Session::client(
        common::dtls_client_config_for(
            tether::dtls::DtlsVersion::Dtls12,
            tether::dtls::DtlsVersion::Dtls13,
        ),
        "localhost",
        tether::Instant::ZERO,
    )
    .unwrap();
    while c.pop_datagram().is_some() {}
    common::feed_dtls(c, common::datagrams(data));
});
