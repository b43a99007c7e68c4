//! The stateless cookie exchange of `dtls::Acceptor`, in memory: first ClientHellos answered
//! with a cookie request and nothing kept, sessions only for a ClientHello that echoes a valid
//! cookie from the same address, every version pairing, with and without client certificates.

#![cfg(feature = "dtls")]

mod dtls_support;
mod support;

use std::net::SocketAddr;
use std::time::Duration;

use tether::dtls::{Accept, Acceptor, DropReason, DtlsVersion, Session};
use tether::{Event, Instant, Recv};

use dtls_support::*;
use support::Pki;

const PEER: &str = "127.0.0.1:40000";

/// Runs a client through an acceptor: returns the connected (client, server) pair.
fn through_acceptor(
    client: &mut Session,
    acceptor: &mut Acceptor,
    from: SocketAddr,
    now: Instant,
) -> Session {
    let mut server: Option<Session> = None;
    for _ in 0..50 {
        let out: Vec<Vec<u8>> = std::iter::from_fn(|| client.pop_datagram()).collect();
        for d in out {
            match &mut server {
                Some(s) => s.handle_datagram(now, &d).unwrap(),
                None => match acceptor.accept(now, from, &d) {
                    Accept::Reply(replies) => {
                        for r in replies {
                            client.handle_datagram(now, &r).unwrap();
                        }
                    }
                    Accept::Session(s) => server = Some(*s),
                    Accept::Drop(why) => panic!("dropped: {why:?}"),
                },
            }
        }
        if let Some(s) = &mut server {
            while let Some(d) = s.pop_datagram() {
                client.handle_datagram(now, &d).unwrap();
            }
            if !client.is_handshaking() && !s.is_handshaking() {
                return server.unwrap();
            }
        }
    }
    panic!("no handshake through the acceptor");
}

#[test]
fn every_version_pairing_connects_through_stateless_cookies() {
    let pki = Pki::new();
    let now = Instant::ZERO;
    for (c, s, expect) in [
        (V12, V12, DtlsVersion::Dtls12),
        (V13, V13, DtlsVersion::Dtls13),
        (BOTH, BOTH, DtlsVersion::Dtls13),
        (V12, BOTH, DtlsVersion::Dtls12),
        (BOTH, V12, DtlsVersion::Dtls12),
        (V13, BOTH, DtlsVersion::Dtls13),
    ] {
        for mtls in [false, true] {
            let what = format!("client {c:?} server {s:?} mtls {mtls}");
            let mut acceptor = Acceptor::new(&server_config(&pki, s, mtls), now).unwrap();
            let mut client =
                Session::client(&client_config(&pki, c, mtls), "localhost", now).unwrap();
            let mut server =
                through_acceptor(&mut client, &mut acceptor, PEER.parse().unwrap(), now);
            assert_eq!(client.version(), Some(expect), "{what}");
            assert_eq!(server.version(), Some(expect), "{what}");
            assert_eq!(client.poll_event(), Some(Event::Connected), "{what}");
            assert_eq!(server.poll_event(), Some(Event::Connected), "{what}");
            client.send(b"ping").unwrap();
            while let Some(d) = client.pop_datagram() {
                server.handle_datagram(now, &d).unwrap();
            }
            let mut buf = [0u8; 64];
            assert_eq!(server.recv(&mut buf).unwrap(), Recv::Data(4), "{what}");
            assert_eq!(&buf[..4], b"ping");
        }
    }
}

/// The client's second ClientHello (the one with the cookie) for `from`.
fn second_hello(
    pki: &Pki,
    versions: (DtlsVersion, DtlsVersion),
    acceptor: &mut Acceptor,
    from: SocketAddr,
) -> (Vec<u8>, Vec<u8>) {
    let now = Instant::ZERO;
    let mut client =
        Session::client(&client_config(pki, versions, true), "localhost", now).unwrap();
    let first = client.pop_datagram().unwrap();
    let Accept::Reply(replies) = acceptor.accept(now, from, &first) else {
        panic!("no cookie request");
    };
    for r in replies {
        client.handle_datagram(now, &r).unwrap();
    }
    (first, client.pop_datagram().unwrap())
}

#[test]
fn cookies_bind_the_address_and_the_secret() {
    let pki = Pki::new();
    let now = Instant::ZERO;
    for v in [V12, V13] {
        let config = server_config(&pki, BOTH, true);
        let mut acceptor = Acceptor::with_secret(&config, [7; 32], now);
        let from: SocketAddr = PEER.parse().unwrap();
        let (first, second) = second_hello(&pki, v, &mut acceptor, from);
        // The first ClientHello again: another cookie request, nothing kept.
        assert!(matches!(
            acceptor.accept(now, from, &first),
            Accept::Reply(_)
        ));
        // The cookie from another port or another address is refused.
        for other in ["127.0.0.1:40001", "127.0.0.2:40000"] {
            assert!(
                matches!(
                    acceptor.accept(now, other.parse().unwrap(), &second),
                    Accept::Drop(DropReason::BadCookie)
                ),
                "{v:?} {other}"
            );
        }
        // Another secret refuses it too.
        let mut other = Acceptor::with_secret(&config, [8; 32], now);
        assert!(matches!(
            other.accept(now, from, &second),
            Accept::Drop(DropReason::BadCookie)
        ));
        // A changed client random (what the cookie is computed over) is refused; the
        // genuine ClientHello makes a session.
        let hello = second.clone();
        for i in [27, 40, 58] {
            let mut changed = hello.clone();
            changed[i] ^= 0x40;
            assert!(
                matches!(
                    acceptor.accept(now, from, &changed),
                    Accept::Drop(DropReason::BadCookie)
                ),
                "{v:?} byte {i}"
            );
        }
        assert!(matches!(
            acceptor.accept(now, from, &hello),
            Accept::Session(_)
        ));
        // After two rotations the cookie has expired.
        let later = now + Duration::from_secs(31);
        acceptor.handle_timeout(later);
        assert!(matches!(
            acceptor.accept(later, from, &hello),
            Accept::Session(_)
        ));
        let much_later = later + Duration::from_secs(31);
        acceptor.handle_timeout(much_later);
        assert!(matches!(
            acceptor.accept(much_later, from, &hello),
            Accept::Drop(DropReason::BadCookie)
        ));
    }
}

#[test]
fn garbage_and_fragments_are_dropped() {
    let pki = Pki::new();
    let now = Instant::ZERO;
    let mut acceptor = Acceptor::new(&server_config(&pki, BOTH, true), now).unwrap();
    let from: SocketAddr = PEER.parse().unwrap();
    let mut client = Session::client(&client_config(&pki, BOTH, true), "localhost", now).unwrap();
    let hello = client.pop_datagram().unwrap();
    for bad in [
        Vec::new(),
        vec![0x16; 13],
        vec![0xff; 200],
        hello[..hello.len() - 1].to_vec(),
        hello[..40].to_vec(),
    ] {
        assert!(
            matches!(
                acceptor.accept(now, from, &bad),
                Accept::Drop(DropReason::NotClientHello)
            ),
            "{} bytes",
            bad.len()
        );
    }
}

/// Every first ClientHello from a new address gets a cookie reply and nothing else: no
/// session, whatever the number of addresses. With `--release -- --nocapture` it also prints
/// what one costs (docs/PERFORMANCE.md, DTLS: the price of a spoofed ClientHello):
/// `cargo test --release -p tether --features dtls --test dtls_listen cookie_reply -- --nocapture`.
#[test]
fn every_new_address_gets_a_cookie_reply_and_no_session() {
    let pki = Pki::new();
    let now = Instant::ZERO;
    let mut acceptor = Acceptor::new(&server_config(&pki, BOTH, true), now).unwrap();
    let mut client = Session::client(&client_config(&pki, BOTH, true), "localhost", now).unwrap();
    let hello = client.pop_datagram().unwrap();
    let n = 200;
    let t = std::time::Instant::now();
    for i in 0..n {
        let from = SocketAddr::from(([127, 0, 0, 1], 1000 + i as u16));
        assert!(
            matches!(acceptor.accept(now, from, &hello), Accept::Reply(_)),
            "address {i}"
        );
    }
    eprintln!("cookie request: {:?} each", t.elapsed() / n);
}

/// Mutated first and second ClientHellos (bit flips, bytes replaced, truncations) into the
/// acceptor: no panic, and a session only for a second ClientHello whose random, suites and
/// cookie are intact (the bytes the cookie covers or is).
#[test]
fn mutated_client_hellos_never_panic_and_never_forge_a_session() {
    let pki = Pki::new();
    let now = Instant::ZERO;
    let config = server_config(&pki, BOTH, true);
    let from: SocketAddr = PEER.parse().unwrap();
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for v in [V12, V13] {
        let mut acceptor = Acceptor::with_secret(&config, [3; 32], now);
        let (first, second) = second_hello(&pki, v, &mut acceptor, from);
        for (name, hello) in [("first", &first), ("second", &second)] {
            for _ in 0..500 {
                let mut d = hello.clone();
                let i = (next() as usize) % d.len();
                match next() % 3 {
                    0 => d[i] ^= 1 << (next() % 8),
                    1 => d[i] = next() as u8,
                    _ => d.truncate(i),
                }
                // Bytes 27..59 are the client random (record 13 + handshake 12 + version 2).
                let random_changed = d.len() < 59 || d[27..59] != hello[27..59];
                if let Accept::Session(_) = acceptor.accept(now, from, &d) {
                    assert!(
                        name == "second" && !random_changed,
                        "{v:?}: a session from a {name} ClientHello with byte {i} changed"
                    );
                }
            }
        }
    }
}
