//! Hostile datagrams into a DTLS server session (1.2 and 1.3 enabled): never a panic, never
//! Connected, never application data.
//!
//! The first input byte picks the mode: raw datagrams only (a length byte, then the bytes), or
//! a real ClientHello first (DTLS 1.2 only, or 1.2 + 1.3 offered) changed by the next 48 input
//! bytes as in `common::changed`, then the rest as raw datagrams.
#![no_main]

#[path = "common.rs"]
mod common;

use std::sync::OnceLock;

use tether::Instant;
use tether::dtls::{DtlsVersion, Session};

fn hellos() -> &'static [Vec<u8>; 2] {
    static H: OnceLock<[Vec<u8>; 2]> = OnceLock::new();
    H.get_or_init(|| {
        [DtlsVersion::Dtls12, DtlsVersion::Dtls13].map(|max| {
            let config = common::dtls_client_config_for(DtlsVersion::Dtls12, max);
            let mut client = Session::client(config, "localhost", Instant::ZERO).unwrap();
            client.pop_datagram().unwrap()
        })
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let s = Session::server(common::dtls_server_config(), Instant::ZERO).unwrap();
    match mode % 3 {
        0 => common::feed_dtls(s, common::datagrams(rest)),
        m => {
            let (ops, tail) = rest.split_at(rest.len().min(48));
            let hello = common::changed(&hellos()[usize::from(m - 1)], ops);
            let first = core::iter::once(&hello[..]);
            common::feed_dtls(s, first.chain(common::datagrams(tail)));
        }
    }
});
