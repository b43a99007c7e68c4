//! An established session's own record layer (records opened in place, crate-private module
//! `record`), client and server, each fed its peer's records in memory: records in any split,
//! several per input, tickets that arrive after the switch, and hostile records: a changed
//! byte, an oversized length, an unencrypted record. Each of those fails the receiving session
//! with a clear error, hands nothing to the application, and sends the alert RFC 8446 names,
//! which the peer reads. Real peers (every cipher suite, padding, key updates, renegotiation
//! requests, each way) are in `interop.rs`; the bounds on a misbehaving peer in the crate's
//! own tests (`session::record_layer_tests`).

mod common;

use common::*;
use tether::error::{Alert, HandshakeError};
use tether::{Error, Recv, Session};

fn versions() -> [(tether::TlsVersion, tether::TlsVersion); 2] {
    [V12, V13]
}

/// Which session reads the records under test.
#[derive(Clone, Copy, Debug)]
enum To {
    Client,
    Server,
}

const BOTH: [To; 2] = [To::Client, To::Server];

fn each_side_and_version() -> impl Iterator<Item = (To, (tether::TlsVersion, tether::TlsVersion))> {
    BOTH.into_iter().flat_map(|to| versions().map(|v| (to, v)))
}

/// (the receiver, its peer).
fn ends(p: &mut Pair, to: To) -> (&mut Session, &mut Session) {
    match to {
        To::Client => (&mut p.client, &mut p.server),
        To::Server => (&mut p.server, &mut p.client),
    }
}

/// A connected pair with the handshake's leftovers (tickets) delivered.
fn connected(v: (tether::TlsVersion, tether::TlsVersion)) -> Pair {
    let mut p = Pair::new(
        &client_config(v, false),
        "localhost",
        &server_config(v, false),
    );
    p.handshake().expect("handshake");
    p.run().expect("settle");
    p
}

/// The peer's records for `data`, not delivered.
fn peer_records(p: &mut Pair, to: To, data: &[u8]) -> Vec<u8> {
    let mut wire = Vec::new();
    send_all(ends(p, to).1, data, &mut wire);
    wire
}

/// Feeds `wire` to the receiver and reads what it gives: (data, the error that ended it).
fn feed(p: &mut Pair, to: To, wire: &[u8], piece: usize) -> (Vec<u8>, Option<Error>) {
    let now = p.now;
    let receiver = ends(p, to).0;
    let mut got = Vec::new();
    let mut buf = [0u8; 700];
    for chunk in wire.chunks(piece) {
        if let Err(e) = receiver.handle_input(now, chunk) {
            return (got, Some(e));
        }
        loop {
            match receiver.recv(&mut buf) {
                Ok(Recv::Data(n)) => got.extend_from_slice(&buf[..n]),
                Ok(_) => break,
                Err(e) => return (got, Some(e)),
            }
        }
    }
    (got, None)
}

/// The alert the peer reads from the receiver's output.
fn alert_at_peer(p: &mut Pair, to: To) -> Error {
    let now = p.now;
    let (receiver, peer) = ends(p, to);
    let alert = take_output(receiver);
    assert!(!alert.is_empty(), "{to:?}: no alert sent");
    peer.handle_input(now, &alert)
        .expect_err("the peer reads a fatal alert")
}

#[test]
fn records_in_any_split_and_several_per_input_arrive_intact() {
    for (to, v) in each_side_and_version() {
        for piece in [1, 7, 1000, 40_000] {
            let mut p = connected(v);
            let data: Vec<u8> = (0..40_000u32).map(|i| (i % 253) as u8).collect();
            // Three records of 16 KiB, 16 KiB and the rest, then two small ones.
            let mut wire = peer_records(&mut p, to, &data);
            wire.extend(peer_records(&mut p, to, b"tail one"));
            wire.extend(peer_records(&mut p, to, b"tail two"));
            let (got, err) = feed(&mut p, to, &wire, piece);
            assert_eq!(err, None, "{to:?} {v:?} piece {piece}");
            let mut want = data.clone();
            want.extend_from_slice(b"tail onetail two");
            assert!(
                got == want,
                "{to:?} {v:?} piece {piece}: {} bytes differ",
                got.len()
            );
            // And the other way, after reading.
            match to {
                To::Client => p.client_send(b"reply"),
                To::Server => p.server_send(b"reply"),
            }
            p.run().unwrap();
            let replied = match to {
                To::Client => &p.server_got,
                To::Server => &p.client_got,
            };
            assert_eq!(replied, b"reply", "{to:?} {v:?}");
        }
    }
}

#[test]
fn a_changed_byte_is_bad_record_mac_and_no_data() {
    for (to, v) in each_side_and_version() {
        let mut p = connected(v);
        let mut wire = peer_records(&mut p, to, b"secret command");
        let last = wire.len() - 20;
        wire[last] ^= 0x01;
        let (got, err) = feed(&mut p, to, &wire, 4096);
        assert!(
            got.is_empty(),
            "{to:?} {v:?}: data from a changed record reached the application"
        );
        assert_eq!(
            err,
            Some(Error::Protocol(
                "a record failed to decrypt (bad_record_mac)".into()
            )),
            "{to:?} {v:?}"
        );
        // The session stays failed, and the peer reads bad_record_mac (20).
        assert!(ends(&mut p, to).0.is_failed());
        assert_eq!(
            alert_at_peer(&mut p, to),
            Error::Handshake(HandshakeError::AlertReceived(Alert(20))),
            "{to:?} {v:?}"
        );
    }
}

#[test]
fn an_oversized_record_is_record_overflow() {
    for (to, v) in each_side_and_version() {
        let mut p = connected(v);
        // Application data with a length past what either version allows.
        let header = [23u8, 3, 3, 0x48, 0x01];
        let (got, err) = feed(&mut p, to, &header, 5);
        assert!(got.is_empty());
        assert_eq!(
            err,
            Some(Error::Protocol("the peer sent an oversized record".into())),
            "{to:?} {v:?}"
        );
        assert_eq!(
            alert_at_peer(&mut p, to),
            Error::Handshake(HandshakeError::AlertReceived(Alert(22))),
            "{to:?} {v:?}"
        );
    }
}

#[test]
fn an_unencrypted_record_after_a_tls13_handshake_is_unexpected_message() {
    for to in BOTH {
        let mut p = connected(V13);
        // A plaintext handshake record (a ClientHello-like body) where only application_data
        // is allowed.
        let record = [22u8, 3, 3, 0, 4, 1, 0, 0, 0];
        let (got, err) = feed(&mut p, to, &record, 9);
        assert!(got.is_empty());
        match err {
            Some(Error::Protocol(m)) => assert!(m.contains("unexpected message"), "{m}"),
            other => panic!("{to:?}: {other:?}"),
        }
        assert_eq!(
            alert_at_peer(&mut p, to),
            Error::Handshake(HandshakeError::AlertReceived(Alert(10)))
        );
    }
}

#[test]
fn a_send_buffer_too_small_for_a_record_leaves_the_session_usable() {
    for v in versions() {
        let mut p = connected(v);
        let mut tiny = [0u8; 10];
        for s in [&mut p.client, &mut p.server] {
            match s.send(b"hello", &mut tiny) {
                Err(Error::BufferTooSmall { needed }) => {
                    assert!(needed > 10 && needed <= 5 + 29)
                }
                other => panic!("{v:?}: {other:?}"),
            }
        }
        p.client_send(b"hello");
        p.server_send(b"olleh");
        p.run().unwrap();
        assert_eq!(p.server_got, b"hello", "{v:?}");
        assert_eq!(p.client_got, b"olleh", "{v:?}");
    }
}

#[test]
fn tickets_that_arrive_after_the_switch_resume_the_next_connection() {
    // The server's TLS 1.3 ticket comes after the handshake, so the client's record layer
    // hands it to rustls; the next connection from the same config resumes with it.
    let client = client_config(V13, false);
    let server = server_config(V13, false);
    let mut first = Pair::new(&client, "localhost", &server);
    first.handshake().unwrap();
    first.run().unwrap();
    assert!(!first.client.is_resumed());
    let mut second = Pair::new(&client, "localhost", &server);
    second.handshake().unwrap();
    assert!(second.client.is_resumed());
    assert!(second.server.is_resumed());
}

#[test]
fn the_server_chain_is_kept_after_the_handshake_unless_asked_not_to() {
    let server = server_config(V13, false);
    let mut p = Pair::new(&client_config(V13, false), "localhost", &server);
    p.handshake().unwrap();
    p.run().unwrap();
    let chain = p.client.peer_certificates().expect("the chain, kept");
    assert_eq!(chain[0].as_ref(), identity("server").leaf().as_ref());

    let lean = tether::ClientConfig::builder(ca_trust())
        .versions(V13.0, V13.1)
        .keep_peer_certificates(false)
        .build()
        .unwrap();
    let mut p = Pair::new(&lean, "localhost", &server);
    p.handshake().unwrap();
    p.run().unwrap();
    assert_eq!(p.client.peer_certificates(), None);
    // Everything else the handshake settled is still there.
    assert_eq!(p.client.version(), Some(tether::TlsVersion::Tls13));
    assert!(p.client.cipher_suite().is_some());
    assert!(p.client.kx_group().is_some());
}

/// Records after the handshake, mutated (bytes changed, the stream cut short, cut into
/// pieces) into an established client or server: no panic, and what reaches the application
/// is always a prefix of what the peer sent (a record either opens whole or fails the
/// session).
#[test]
fn mutated_records_into_an_established_session() {
    use proptest::prelude::*;
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 128,
        ..ProptestConfig::default()
    });
    let data: Vec<u8> = (0..20_000u32).map(|i| (i % 241) as u8).collect();
    runner
        .run(
            &(
                0usize..2,
                0usize..2,
                proptest::collection::vec((any::<usize>(), 1u8..=255), 0..6),
                any::<usize>(),
                1usize..3000,
            ),
            |(side, version, edits, cut, piece)| {
                let to = BOTH[side];
                let mut p = connected(versions()[version]);
                let mut wire = peer_records(&mut p, to, &data);
                let peer = ends(&mut p, to).1;
                peer.close();
                wire.extend(take_output(peer));
                for (at, x) in &edits {
                    let i = at % wire.len();
                    wire[i] ^= x;
                }
                // A quarter of the cases keep the whole stream.
                let full = wire.len();
                let keep = if cut % 4 == 0 { full } else { 1 + cut % full };
                wire.truncate(keep);
                let (got, err) = feed(&mut p, to, &wire, piece);
                prop_assert!(
                    data.starts_with(&got),
                    "{} bytes reached the application that the peer did not send",
                    got.len()
                );
                if edits.is_empty() && keep == full {
                    // Untouched: everything arrives, then the close.
                    prop_assert_eq!(err, None);
                    prop_assert_eq!(got.len(), data.len());
                    prop_assert!(ends(&mut p, to).0.is_peer_closed());
                }
                Ok(())
            },
        )
        .unwrap();
}
