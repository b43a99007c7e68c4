//! Hostile input: random and mutated bytes into client and server sessions never panic, never
//! hang, and never produce application data.

mod common;

use common::*;
use proptest::prelude::*;
use tether::{Instant, Recv, Session};

/// A real first flight from each side, to mutate.
fn flights() -> (Vec<u8>, Vec<u8>) {
    let cc = client_config(BOTH, true);
    let sc = server_config(BOTH, true);
    let mut client = Session::client(&cc, "localhost", Instant::ZERO).unwrap();
    let mut server = Session::server(&sc, Instant::ZERO).unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let n = client.poll_transmit(&mut buf);
    let hello = buf[..n].to_vec();
    server.handle_input(Instant::ZERO, &hello).unwrap();
    let mut reply = Vec::new();
    loop {
        let n = server.poll_transmit(&mut buf);
        if n == 0 {
            break;
        }
        reply.extend_from_slice(&buf[..n]);
    }
    (hello, reply)
}

/// Feeds `chunks` to `session`; checks that no application data comes out.
fn feed(session: &mut Session, chunks: &[Vec<u8>]) {
    let mut out = vec![0u8; 64 * 1024];
    let mut buf = [0u8; 256];
    for c in chunks {
        if session.handle_input(Instant::ZERO, c).is_err() {
            break;
        }
        let _ = session.poll_transmit(&mut out);
        if let Ok(Recv::Data(n)) = session.recv(&mut buf) {
            panic!("{n} bytes of application data from hostile input");
        }
    }
    session.handle_eof();
    assert!(!matches!(session.recv(&mut buf), Ok(Recv::Data(_))));
}

fn mutate(base: &[u8], edits: &[(usize, u8)], cut: usize) -> Vec<u8> {
    let mut v = base.to_vec();
    for &(at, b) in edits {
        if !v.is_empty() {
            let i = at % v.len();
            v[i] ^= b;
        }
    }
    v.truncate(cut.max(1).min(v.len()));
    v
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_into_a_server(chunks in proptest::collection::vec(
        proptest::collection::vec(any::<u8>(), 0..600), 1..6)) {
        let mut s = Session::server(&server_config(BOTH, true), Instant::ZERO).unwrap();
        feed(&mut s, &chunks);
    }

    #[test]
    fn random_bytes_into_a_client(chunks in proptest::collection::vec(
        proptest::collection::vec(any::<u8>(), 0..600), 1..6)) {
        let mut c = Session::client(&client_config(BOTH, true), "localhost", Instant::ZERO).unwrap();
        feed(&mut c, &chunks);
    }

    #[test]
    fn mutated_client_hello_into_a_server(
        edits in proptest::collection::vec((any::<usize>(), 1u8..=255), 1..8),
        cut in 1usize..4096,
    ) {
        let (hello, _) = flights();
        let mut s = Session::server(&server_config(BOTH, true), Instant::ZERO).unwrap();
        feed(&mut s, &[mutate(&hello, &edits, cut)]);
    }
}

#[test]
fn mutated_server_flights_into_a_client() {
    // Each case needs the client that sent the hello the flight answers: build pairs.
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 128,
        ..ProptestConfig::default()
    });
    runner
        .run(
            &(
                proptest::collection::vec((any::<usize>(), 1u8..=255), 1..8),
                1usize..8192,
            ),
            |(edits, cut)| {
                let cc = client_config(BOTH, true);
                let sc = server_config(BOTH, true);
                let mut p = Pair::new(&cc, "localhost", &sc);
                let mut buf = vec![0u8; 64 * 1024];
                let n = p.client.poll_transmit(&mut buf);
                p.server.handle_input(p.now, &buf[..n]).unwrap();
                let mut flight = Vec::new();
                loop {
                    let n = p.server.poll_transmit(&mut buf);
                    if n == 0 {
                        break;
                    }
                    flight.extend_from_slice(&buf[..n]);
                }
                feed(&mut p.client, &[mutate(&flight, &edits, cut)]);
                Ok(())
            },
        )
        .unwrap();
}
