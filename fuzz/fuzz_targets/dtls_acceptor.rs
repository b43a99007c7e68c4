//! Hostile datagrams into the stateless cookie acceptor the DTLS listeners put in front of
//! every new address: never a panic, and never a session except from a second ClientHello that
//! carries the acceptor's own cookie for its client random.
//!
//! The first input byte picks the mode: raw datagrams (a length byte, then the bytes), or one
//! of four real ClientHellos (first or second, DTLS 1.2 only or 1.2 + 1.3 offered) changed by
//! the rest of the input, three bytes per change (a position, then a value XORed in there; a
//! zero value cuts the datagram at that position instead).
#![no_main]

#[path = "common.rs"]
mod common;

use std::net::SocketAddr;
use std::sync::OnceLock;

use tether::Instant;
use tether::dtls::{Accept, Acceptor, DtlsVersion, Session};

const SECRET: [u8; 32] = [7; 32];
/// Bytes 27..59 of a DTLS ClientHello datagram: the client random (record header 13,
/// handshake header 12, version 2).
const RANDOM: core::ops::Range<usize> = 27..59;

fn from() -> SocketAddr {
    "192.0.2.1:4433".parse().unwrap()
}

fn acceptor() -> Acceptor {
    Acceptor::with_secret(common::dtls_server_config(), SECRET, Instant::ZERO)
}

/// First and second ClientHellos of a DTLS 1.2-only client and of one offering 1.2 and 1.3.
fn hellos() -> &'static [Vec<u8>; 4] {
    static H: OnceLock<[Vec<u8>; 4]> = OnceLock::new();
    H.get_or_init(|| {
        let pair = |max: DtlsVersion| {
            let config = common::dtls_client_config_for(DtlsVersion::Dtls12, max);
            let mut client = Session::client(config, "localhost", Instant::ZERO).unwrap();
            let first = client.pop_datagram().unwrap();
            let Accept::Reply(replies) = acceptor().accept(Instant::ZERO, from(), &first) else {
                panic!("no cookie request");
            };
            for r in replies {
                client.handle_datagram(Instant::ZERO, &r).unwrap();
            }
            (first, client.pop_datagram().unwrap())
        };
        let (a, b) = pair(DtlsVersion::Dtls12);
        let (c, d) = pair(DtlsVersion::Dtls13);
        [a, b, c, d]
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut acceptor = acceptor();
    let mut accept = |d: &[u8], may_connect: bool| match acceptor.accept(Instant::ZERO, from(), d) {
        Accept::Session(_) => assert!(may_connect, "a session from a changed ClientHello"),
        Accept::Reply(replies) => assert!(!replies.is_empty()),
        Accept::Drop(_) => {}
    };
    match mode % 5 {
        0 => {
            for d in common::datagrams(rest) {
                accept(d, false);
            }
        }
        m => {
            let original = &hellos()[usize::from(m - 1)];
            let hello = common::changed(original, rest);
            // Only a second ClientHello whose random is intact may pass: the cookie is bound
            // to it (and to the address and the secret).
            let second = m % 2 == 0;
            let intact = hello.len() >= RANDOM.end && hello[RANDOM] == original[RANDOM];
            accept(&hello, second && intact);
        }
    }
});
