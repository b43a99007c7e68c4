//! Session tests through the in-memory harness: handshakes, data, every failure category.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use tether::error::{CertificateError, HandshakeError, Timeout, VersionError};
use tether::{
    CertificateDer, ClientAuth, ClientConfig, Error, Event, Instant, MemoryTofuStore, Pin, Recv,
    ServerConfig, Session, TimePolicy, TlsVersion, Trust,
};

fn leaf_pin(name: &str) -> Pin {
    let id = identity(name);
    Pin::of_certificate(id.leaf()).unwrap()
}

#[test]
fn handshake_and_data_all_versions_with_and_without_mtls() {
    for versions in [V12, V13, BOTH] {
        for mtls in [false, true] {
            let mut p = Pair::new(
                &client_config(versions, mtls),
                "localhost",
                &server_config(versions, mtls),
            );
            p.handshake().unwrap();
            assert_eq!(p.client.poll_event(), Some(Event::Connected));
            assert_eq!(p.server.poll_event(), Some(Event::Connected));
            let expect = if versions == V12 {
                TlsVersion::Tls12
            } else {
                TlsVersion::Tls13
            };
            assert_eq!(p.client.version(), Some(expect));
            assert_eq!(p.server.version(), Some(expect));
            assert!(p.client.cipher_suite().is_some());
            assert!(p.client.kx_group().is_some());
            assert_eq!(p.server.peer_certificates().is_some(), mtls);

            let big: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
            p.client_send(&big);
            p.server_send(b"pong");
            p.run().unwrap();
            assert_eq!(p.server_got, big, "{versions:?} mtls={mtls}");
            assert_eq!(p.client_got, b"pong");
        }
    }
}

#[test]
fn connect_by_ip_address() {
    let mut p = Pair::new(
        &client_config(BOTH, false),
        "127.0.0.1",
        &server_config(BOTH, false),
    );
    p.handshake().unwrap();
}

#[test]
fn records_split_at_every_byte_boundary() {
    // Capture the client's first flight and the server's reply flight, then replay each split
    // in two at every offset into fresh sessions.
    for versions in [V12, V13] {
        let cc = client_config(versions, true);
        let sc = server_config(versions, true);
        // The whole conversation as recorded in one run: client flights and server flights.
        let mut p = Pair::new(&cc, "localhost", &sc);
        let mut buf = vec![0u8; 64 * 1024];
        let n = p.client.poll_transmit(&mut buf);
        let client_hello = buf[..n].to_vec();
        for split in 0..=client_hello.len() {
            let mut server = Session::server(&sc, Instant::ZERO).unwrap();
            server
                .handle_input(Instant::ZERO, &client_hello[..split])
                .unwrap();
            if split < client_hello.len() {
                assert_eq!(
                    server.poll_transmit(&mut buf),
                    0,
                    "reply before a whole hello"
                );
            }
            server
                .handle_input(Instant::ZERO, &client_hello[split..])
                .unwrap();
            assert!(server.wants_transmit(), "no reply at split {split}");
        }
        // The server's flight split at every byte on its way to the client: a fresh pair per
        // split, since each flight answers one ClientHello.
        let flight_len = {
            let mut p = Pair::new(&cc, "localhost", &sc);
            let n = p.client.poll_transmit(&mut buf);
            p.server.handle_input(p.now, &buf[..n]).unwrap();
            let mut len = 0;
            loop {
                let n = p.server.poll_transmit(&mut buf);
                if n == 0 {
                    break len;
                }
                len += n;
            }
        };
        for split in 0..=flight_len {
            let mut p = Pair::new(&cc, "localhost", &sc);
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
            // Flights differ in length by a few bytes (signatures); clamp the split.
            let at = split.min(flight.len());
            p.client.handle_input(p.now, &flight[..at]).unwrap();
            p.client.handle_input(p.now, &flight[at..]).unwrap();
            p.handshake()
                .unwrap_or_else(|e| panic!("{versions:?} split {split}: {e}"));
        }
    }
}

#[test]
fn application_record_split_at_every_byte() {
    let mut p = Pair::new(
        &client_config(V13, false),
        "localhost",
        &server_config(V13, false),
    );
    p.handshake().unwrap();
    let mut out = vec![0u8; 4096];
    let sent = p.client.send(b"split me into pieces", &mut out).unwrap();
    let record = out[..sent.written].to_vec();
    // Deliver byte by byte: data appears only when the record is complete.
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    for (i, b) in record.iter().enumerate() {
        p.server.handle_input(p.now, &[*b]).unwrap();
        match p.server.recv(&mut buf).unwrap() {
            Recv::Data(n) => {
                assert_eq!(i, record.len() - 1, "data before the record was complete");
                got.extend_from_slice(&buf[..n]);
            }
            Recv::Pending => {}
            Recv::Closed => panic!("closed"),
        }
    }
    assert_eq!(got, b"split me into pieces");
}

#[test]
fn small_recv_buffers_lose_nothing() {
    let mut p = Pair::new(
        &client_config(V13, false),
        "localhost",
        &server_config(V13, false),
    );
    p.handshake().unwrap();
    let msg: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
    p.client_send(&msg);
    let wire = std::mem::take(&mut p.c2s);
    p.server.handle_input(p.now, &wire).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 7];
    while let Recv::Data(n) = p.server.recv(&mut buf).unwrap() {
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(got, msg);
}

#[test]
fn a_bad_record_behind_the_last_flight_fails_the_connection_after_a_completed_handshake() {
    // TLS 1.3: the client may send data right behind its Finished, and a server reads both at
    // once. An altered record there fails the session, delivers nothing, and leaves the
    // handshake reported as completed (the peer was verified): the failure is the
    // connection's, which is how a gateway counts it.
    let mut p = Pair::new(
        &client_config(V13, true),
        "localhost",
        &server_config(V13, true),
    );
    let mut buf = vec![0u8; 8192];
    let n = p.client.poll_transmit(&mut buf);
    p.server.handle_input(p.now, &buf[..n]).unwrap();
    let n = p.server.poll_transmit(&mut buf);
    p.client.handle_input(p.now, &buf[..n]).unwrap();
    assert!(!p.client.is_handshaking());
    let n = p.client.poll_transmit(&mut buf);
    let mut wire = buf[..n].to_vec();
    let sent = p.client.send(b"never delivered", &mut buf).unwrap();
    buf[sent.written - 1] ^= 0x80;
    wire.extend_from_slice(&buf[..sent.written]);

    let err = p.server.handle_input(p.now, &wire).unwrap_err();
    assert!(!p.server.is_handshaking(), "the handshake itself completed");
    assert!(p.server.is_failed());
    assert!(
        p.server.peer_certificates().is_some(),
        "the client was verified"
    );
    assert_eq!(
        p.server.recv(&mut buf),
        Err(err.clone()),
        "nothing delivered"
    );
    // bad_record_mac goes back to the client.
    let n = p.server.poll_transmit(&mut buf);
    let e = p.client.handle_input(p.now, &buf[..n]).unwrap_err();
    assert!(e.to_string().contains("bad_record_mac"), "{e}");
}

#[test]
fn a_peer_that_does_not_speak_tls_is_named_by_what_it_sent() {
    let cases: [(&[u8], &str); 3] = [
        (
            b"HTTP/1.1 400 Bad Request\r\nServer: x\r\n\r\n",
            "\"HTTP/1.1 400 Bad Request\"",
        ),
        (
            b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n",
            "\"SSH-2.0-OpenSSH_9.2p1 Debian-2\"",
        ),
        (
            &[0xff, 0x00, 0x13, 0x37, 0, 0, 0, 0, 9],
            "the bytes ff 00 13 37 00 00 00 00",
        ),
    ];
    for (answer, shown) in cases {
        let mut client =
            Session::client(&client_config(BOTH, false), "localhost", Instant::ZERO).unwrap();
        let mut hello = vec![0u8; 4096];
        assert!(client.poll_transmit(&mut hello) > 0);
        let err = client.handle_input(Instant::ZERO, answer).unwrap_err();
        assert_eq!(err.category(), "protocol");
        let text = err.to_string();
        assert!(text.contains("does not speak TLS"), "{text}");
        assert!(text.contains(shown), "{text}");
    }
    // A server reading a plaintext request says the same.
    let mut server = Session::server(&server_config(BOTH, false), Instant::ZERO).unwrap();
    let err = server
        .handle_input(
            Instant::ZERO,
            b"GET /v1/models HTTP/1.1\r\nHost: api\r\n\r\n",
        )
        .unwrap_err();
    assert!(
        err.to_string().contains("\"GET /v1/models HTTP/1.1\""),
        "{err}"
    );
}

fn client_err(p: &mut Pair) -> Error {
    let _ = p.run();
    assert!(
        p.client_got.is_empty() && p.server_got.is_empty(),
        "data leaked"
    );
    p.client
        .error()
        .cloned()
        .expect("client should have failed")
}

#[test]
fn unknown_ca_is_refused() {
    let sc = ServerConfig::builder(identity("other-server"))
        .build()
        .unwrap();
    let mut p = Pair::new(&client_config(BOTH, false), "localhost", &sc);
    p.server_send_after_handshake_attempt();
    assert_eq!(
        client_err(&mut p),
        Error::Certificate(CertificateError::UnknownIssuer)
    );
    assert!(p.server.is_failed(), "server should see the client's alert");
}

/// The test CA as a firmware image holds it (`Trust::with_static_root`).
static STATIC_CA: CertificateDer<'static> =
    CertificateDer::from_slice(include_bytes!("data/ca.der"));

#[test]
fn a_ca_built_into_the_image_verifies_like_a_copied_one() {
    let config = |trust: Trust| ClientConfig::builder(trust).build().unwrap();
    let trust = Trust::new().with_static_root(&STATIC_CA).unwrap();
    assert_eq!(trust.root_count(), 1);
    let mut p = Pair::new(&config(trust), "localhost", &server_config(BOTH, false));
    p.handshake().expect("a server of the CA is accepted");

    // The same anchor refuses a server of another CA, and a name the server does not have.
    let other = ServerConfig::builder(identity("other-server"))
        .build()
        .unwrap();
    let static_trust = || Trust::new().with_static_root(&STATIC_CA).unwrap();
    let mut p = Pair::new(&config(static_trust()), "localhost", &other);
    assert_eq!(
        client_err(&mut p),
        Error::Certificate(CertificateError::UnknownIssuer)
    );
    let mut p = Pair::new(
        &config(static_trust()),
        "example.com",
        &server_config(BOTH, false),
    );
    assert!(
        matches!(
            client_err(&mut p),
            Error::Certificate(CertificateError::NameMismatch { .. })
        ),
        "a wrong name is refused"
    );
}

#[test]
fn a_static_root_that_is_no_certificate_is_refused_by_name() {
    static NOT_A_CERT: CertificateDer<'static> = CertificateDer::from_slice(b"ca.pem, not DER");
    let err = Trust::new().with_static_root(&NOT_A_CERT).unwrap_err();
    assert!(
        err.to_string().contains("not a usable CA certificate"),
        "{err}"
    );
}

impl Pair {
    /// Queues nothing: a hook to make the intent explicit in negative tests.
    fn server_send_after_handshake_attempt(&mut self) {}
}

#[test]
fn hostname_and_ip_mismatch_are_refused() {
    for (name, expected) in [("example.com", "example.com"), ("127.0.0.2", "127.0.0.2")] {
        let mut p = Pair::new(
            &client_config(BOTH, false),
            name,
            &server_config(BOTH, false),
        );
        match client_err(&mut p) {
            Error::Certificate(CertificateError::NameMismatch { expected: e }) => {
                assert!(e.contains(expected), "{e}")
            }
            other => panic!("{name}: {other:?}"),
        }
    }
}

#[test]
fn expired_and_not_yet_valid_by_the_wall_clock() {
    // 2200-01-01: after every fixture's notAfter. 2000-01-01: before their notBefore.
    for (unix, want) in [
        (7_258_118_400u64, CertificateError::Expired),
        (946_684_800, CertificateError::NotValidYet),
    ] {
        let cc = ClientConfig::builder(ca_trust())
            .time_policy(clock_at(unix))
            .build()
            .unwrap();
        let mut p = Pair::new(&cc, "localhost", &server_config(BOTH, false));
        assert_eq!(client_err(&mut p), Error::Certificate(want));
    }
}

#[test]
fn no_wall_clock_fails_closed_and_ignore_policy_is_explicit() {
    let cc = ClientConfig::builder(ca_trust())
        .time_policy(TimePolicy::Unavailable)
        .build()
        .unwrap();
    let mut p = Pair::new(&cc, "localhost", &server_config(BOTH, false));
    assert_eq!(
        client_err(&mut p),
        Error::Certificate(CertificateError::NoWallClock)
    );

    let cc = ClientConfig::builder(ca_trust())
        .time_policy(TimePolicy::IgnoreValidityTime)
        .build()
        .unwrap();
    let mut p = Pair::new(&cc, "localhost", &server_config(BOTH, false));
    p.handshake().unwrap();
    // Ignoring time does not ignore names.
    let mut p = Pair::new(&cc, "example.com", &server_config(BOTH, false));
    assert!(matches!(
        client_err(&mut p),
        Error::Certificate(CertificateError::NameMismatch { .. })
    ));
}

#[test]
fn pins_alone_and_on_top_of_a_ca() {
    let good = leaf_pin("server");
    let bad = leaf_pin("other-server");
    // Pin alone: no CA needed.
    let cc = ClientConfig::builder(Trust::new().with_pin(good))
        .build()
        .unwrap();
    Pair::new(&cc, "localhost", &server_config(BOTH, false))
        .handshake()
        .unwrap();
    // CA + right pin.
    let cc = ClientConfig::builder(ca_trust().with_pin(good))
        .build()
        .unwrap();
    Pair::new(&cc, "localhost", &server_config(BOTH, false))
        .handshake()
        .unwrap();
    // CA + wrong pin, and pin alone wrong.
    for trust in [ca_trust().with_pin(bad), Trust::new().with_pin(bad)] {
        let cc = ClientConfig::builder(trust).build().unwrap();
        let mut p = Pair::new(&cc, "localhost", &server_config(BOTH, false));
        assert_eq!(client_err(&mut p), Error::PinMismatch { presented: good });
    }
}

#[test]
fn tofu_accepts_first_key_and_refuses_a_change() {
    let store = Arc::new(MemoryTofuStore::new());
    let cc = ClientConfig::builder(Trust::new().with_tofu(store.clone()))
        .build()
        .unwrap();
    Pair::new(&cc, "localhost", &server_config(BOTH, false))
        .handshake()
        .unwrap();
    // Same key again: fine.
    Pair::new(&cc, "localhost", &server_config(BOTH, false))
        .handshake()
        .unwrap();
    // A different key for the same host: refused, loudly.
    let other = ServerConfig::builder(identity("other-server"))
        .build()
        .unwrap();
    let mut p = Pair::new(&cc, "localhost", &other);
    match client_err(&mut p) {
        Error::TofuKeyChanged {
            host,
            stored,
            presented,
        } => {
            assert_eq!(host, "localhost");
            assert_eq!(stored, leaf_pin("server"));
            assert_eq!(presented, leaf_pin("other-server"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn version_mismatch_is_a_version_error_not_a_fallback() {
    let mut p = Pair::new(
        &client_config(V13, false),
        "localhost",
        &server_config(V12, false),
    );
    let e = client_err(&mut p);
    assert!(
        matches!(e, Error::Version(VersionError::PeerRefused)),
        "{e:?}"
    );
    assert!(
        matches!(p.server.error(), Some(Error::Version(_))),
        "{:?}",
        p.server.error()
    );
}

#[test]
fn missing_client_certificate_is_refused() {
    let mut p = Pair::new(
        &client_config(BOTH, false),
        "localhost",
        &server_config(BOTH, true),
    );
    let _ = p.run();
    assert_eq!(
        p.server.error(),
        Some(&Error::Certificate(CertificateError::Missing))
    );
    assert!(
        matches!(
            p.client.error(),
            Some(Error::Handshake(HandshakeError::AlertReceived(_)))
        ),
        "{:?}",
        p.client.error()
    );
    assert!(p.server_got.is_empty());
}

#[test]
fn client_certificate_from_another_ca_is_refused() {
    let cc = ClientConfig::builder(ca_trust())
        .identity(identity("other-client"))
        .build()
        .unwrap();
    let mut p = Pair::new(&cc, "localhost", &server_config(BOTH, true));
    let _ = p.run();
    assert_eq!(
        p.server.error(),
        Some(&Error::Certificate(CertificateError::UnknownIssuer))
    );
}

#[test]
fn optional_client_auth_accepts_both() {
    let sc = ServerConfig::builder(identity("server"))
        .client_auth(ClientAuth::Optional(ca_trust()))
        .build()
        .unwrap();
    let mut p = Pair::new(&client_config(BOTH, false), "localhost", &sc);
    p.handshake().unwrap();
    assert!(p.server.peer_certificates().is_none());
    let mut p = Pair::new(&client_config(BOTH, true), "localhost", &sc);
    p.handshake().unwrap();
    assert!(p.server.peer_certificates().is_some());
}

#[test]
fn close_notify_is_a_clean_end_and_eof_without_it_is_truncation() {
    for versions in [V12, V13] {
        let mut p = Pair::new(
            &client_config(versions, false),
            "localhost",
            &server_config(versions, false),
        );
        p.handshake().unwrap();
        p.server_send(b"last words");
        p.server.close();
        assert!(p.server.is_close_sent());
        p.run().unwrap();
        assert_eq!(p.client_got, b"last words");
        let mut buf = [0u8; 16];
        assert_eq!(p.client.recv(&mut buf).unwrap(), Recv::Closed);
        assert_eq!(p.client.poll_event(), Some(Event::Connected));
        assert_eq!(p.client.poll_event(), Some(Event::PeerClosed));
        p.client.handle_eof();
        assert_eq!(p.client.recv(&mut buf).unwrap(), Recv::Closed);

        let mut p = Pair::new(
            &client_config(versions, false),
            "localhost",
            &server_config(versions, false),
        );
        p.handshake().unwrap();
        p.server_send(b"cut");
        p.run().unwrap();
        p.client.handle_eof();
        assert_eq!(p.client.recv(&mut buf), Err(Error::Truncated));
        assert_eq!(p.client_got, b"cut");
    }
}

#[test]
fn eof_during_handshake_is_a_handshake_error() {
    let mut client =
        Session::client(&client_config(BOTH, false), "localhost", Instant::ZERO).unwrap();
    client.handle_eof();
    assert_eq!(
        client.error(),
        Some(&Error::Handshake(HandshakeError::PeerClosed))
    );
}

#[test]
fn handshake_timeout_from_the_injected_clock() {
    let cc = ClientConfig::builder(ca_trust())
        .handshake_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let start = Instant::from_millis(500);
    let mut client = Session::client(&cc, "localhost", start).unwrap();
    assert_eq!(client.poll_timeout(), Some(Instant::from_millis(5_500)));
    client.handle_timeout(Instant::from_millis(5_499)).unwrap();
    assert_eq!(
        client.handle_timeout(Instant::from_millis(5_500)),
        Err(Error::Timeout(Timeout::Handshake))
    );
    // Failed sessions stay failed.
    assert_eq!(
        client.handle_input(Instant::from_millis(6_000), b"x"),
        Err(Error::Timeout(Timeout::Handshake))
    );
    // A completed handshake has no deadline.
    let mut p = Pair::new(
        &client_config(BOTH, false),
        "localhost",
        &server_config(BOTH, false),
    );
    p.handshake().unwrap();
    assert_eq!(p.client.poll_timeout(), None);
    p.advance(Duration::from_secs(3600));
    p.client.handle_timeout(p.now).unwrap();
}

#[test]
fn resumption_tls12_and_tls13() {
    for versions in [V12, V13] {
        let cc = client_config(versions, true);
        let sc = server_config(versions, true);
        let mut p = Pair::new(&cc, "localhost", &sc);
        p.handshake().unwrap();
        // TLS 1.3 tickets arrive after the handshake: let them through.
        p.server_send(b"x");
        p.run().unwrap();
        assert!(!p.client.is_resumed());
        let mut p = Pair::new(&cc, "localhost", &sc);
        p.handshake().unwrap();
        assert!(p.client.is_resumed(), "{versions:?}: client did not resume");
        assert!(p.server.is_resumed(), "{versions:?}: server did not resume");
        // The resumed session still knows the verified client.
        assert!(p.server.peer_certificates().is_some());
    }
}

#[test]
fn calls_between_input_buffer_and_commit_input_lose_and_invent_nothing() {
    let mut p = Pair::new(
        &client_config(BOTH, false),
        "localhost",
        &server_config(BOTH, false),
    );
    p.handshake().unwrap();
    let mut wire = vec![0u8; 4096];
    let sent = p.client.send(b"hello, reserved", &mut wire).unwrap();
    let record = &wire[..sent.written];
    let half = record.len() / 2;
    // Half a record read into the space, then other calls (as after a cancelled async read)
    // before the commit: the uncommitted zeros are never parsed as records.
    let space = p.server.input_buffer(4096);
    space[..half].copy_from_slice(&record[..half]);
    let mut got = [0u8; 64];
    assert_eq!(p.server.recv(&mut got).unwrap(), Recv::Pending);
    let mut out = vec![0u8; 4096];
    let _ = p.server.send(b"meanwhile", &mut out).unwrap();
    p.server.handle_timeout(p.now).unwrap();
    p.server.commit_input(p.now, half).unwrap();
    // A reservation given up (nothing read) is no input either.
    let _ = p.server.input_buffer(100);
    assert_eq!(p.server.recv(&mut got).unwrap(), Recv::Pending);
    p.server.commit_input(p.now, 0).unwrap();
    p.server.handle_input(p.now, &record[half..]).unwrap();
    assert_eq!(p.server.recv(&mut got).unwrap(), Recv::Data(15));
    assert_eq!(&got[..15], b"hello, reserved");

    // A session that fails while space is reserved: the commit reports the failure, no panic.
    let cc = ClientConfig::builder(ca_trust())
        .handshake_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let mut client = Session::client(&cc, "localhost", Instant::ZERO).unwrap();
    let _ = client.input_buffer(64);
    assert!(client.handle_timeout(Instant::from_millis(5_000)).is_err());
    assert_eq!(
        client.commit_input(Instant::from_millis(5_000), 10),
        Err(Error::Timeout(Timeout::Handshake))
    );
}

#[test]
fn tls13_tickets_per_handshake() {
    // Each TLS 1.3 ticket resumes once: after one full handshake, two client sessions made
    // before either resumes show how many tickets the server sent.
    for (tickets, want) in [
        (None, [true, false]),
        (Some(0), [false, false]),
        (Some(2), [true, true]),
    ] {
        let mut b = ServerConfig::builder(identity("server"))
            .client_auth(ClientAuth::Required(ca_trust()))
            .versions(TlsVersion::Tls13, TlsVersion::Tls13);
        if let Some(n) = tickets {
            b = b.tls13_tickets(n);
        }
        let sc = b.build().unwrap();
        let cc = client_config(V13, true);
        let mut p = Pair::new(&cc, "localhost", &sc);
        p.handshake().unwrap();
        p.server_send(b"x");
        p.run().unwrap();
        let mut first = Pair::new(&cc, "localhost", &sc);
        let mut second = Pair::new(&cc, "localhost", &sc);
        first.handshake().unwrap();
        second.handshake().unwrap();
        let got = [first.client.is_resumed(), second.client.is_resumed()];
        assert_eq!(got, want, "tls13_tickets({tickets:?})");
    }
}

/// RFC 9149: a client with resumption off asks for no TLS 1.3 tickets and a tether server
/// sends none; a client that resumes gets the server's number.
#[test]
fn a_client_that_does_not_resume_asks_for_no_tls13_tickets() {
    let server_sent = |resumption: bool, tickets: Option<usize>| {
        let cc = ClientConfig::builder(ca_trust())
            .versions(TlsVersion::Tls13, TlsVersion::Tls13)
            .resumption(resumption)
            .build()
            .unwrap();
        let mut b = ServerConfig::builder(identity("server"))
            .versions(TlsVersion::Tls13, TlsVersion::Tls13);
        if let Some(n) = tickets {
            b = b.tls13_tickets(n);
        }
        let mut p = Pair::new(&cc, "localhost", &b.build().unwrap());
        p.handshake().unwrap();
        p.run().unwrap();
        p.server_sent
    };
    // The handshake alone (ECDSA signatures vary by a few bytes in length).
    let bare = server_sent(true, Some(0));
    let close = |a: usize, b: usize| a.abs_diff(b) < 8;
    for tickets in [None, Some(1), Some(3)] {
        let asked_none = server_sent(false, tickets);
        assert!(
            close(asked_none, bare),
            "{tickets:?}: {asked_none} vs {bare}"
        );
    }
    // A NewSessionTicket record is well over 100 bytes.
    let one = server_sent(true, None);
    let three = server_sent(true, Some(3));
    assert!(one > bare + 100, "{one} vs {bare}");
    // Three tickets (they may share a record).
    assert!(three > one + 2 * 100, "{three}, {one}, {bare}");
}

#[test]
fn tickets_shared_between_servers_with_one_key() {
    let key = tether::TicketKey::from_bytes(&[42u8; 48]).unwrap();
    let mk = || {
        ServerConfig::builder(identity("server"))
            .ticketer(Arc::new(tether::Ticketer::with_key(key.clone())))
            .build()
            .unwrap()
    };
    let (s1, s2) = (mk(), mk());
    let cc = client_config(V13, false);
    let mut p = Pair::new(&cc, "localhost", &s1);
    p.handshake().unwrap();
    p.server_send(b"x");
    p.run().unwrap();
    let mut p = Pair::new(&cc, "localhost", &s2);
    p.handshake().unwrap();
    assert!(p.client.is_resumed());
}

/// Sizes outside what a config accepts are refused when it is built, with the range named.
#[test]
fn out_of_range_sizes_are_config_errors() {
    let client = |b: tether::ClientConfigBuilder| b.build().unwrap_err().to_string();
    let server = |b: tether::ServerConfigBuilder| b.build().unwrap_err().to_string();
    let cb = || ClientConfig::builder(ca_trust());
    let sb = || ServerConfig::builder(identity("server"));
    for (msg, range) in [
        (
            client(cb().read_chunk(63)),
            "read chunk 63 is outside 64..=65536",
        ),
        (
            client(cb().read_chunk(65537)),
            "read chunk 65537 is outside",
        ),
        (
            server(sb().read_chunk(0)),
            "read chunk 0 is outside 64..=65536",
        ),
        (
            client(cb().max_record_size(31)),
            "max record size 31 is outside 32..=16384",
        ),
        (
            server(sb().max_record_size(16385)),
            "max record size 16385 is outside",
        ),
    ] {
        assert!(msg.contains(range), "{msg}");
    }
    // The bounds themselves are accepted, and a session starts with the chunk.
    for chunk in [64, 65536] {
        let c = cb().read_chunk(chunk).build().unwrap();
        let s = Session::client(&c, "localhost", Instant::from_millis(0)).unwrap();
        assert_eq!(s.read_chunk(), chunk);
        let sc = sb().read_chunk(chunk).build().unwrap();
        assert_eq!(
            Session::server(&sc, Instant::from_millis(0))
                .unwrap()
                .read_chunk(),
            chunk
        );
    }
}

#[test]
fn small_records_and_small_output_buffers() {
    let cc = ClientConfig::builder(ca_trust())
        .max_record_size(512)
        .build()
        .unwrap();
    let mut p = Pair::new(&cc, "localhost", &server_config(BOTH, false));
    p.handshake().unwrap();
    // An output buffer of 600 bytes holds one 512-byte record.
    let mut out = [0u8; 600];
    let sent = p.client.send(&[1u8; 2000], &mut out).unwrap();
    assert!(sent.consumed >= 512 && sent.written <= 600, "{sent:?}");
    // Every record carries at most 512 bytes of plaintext (+ type byte and tag in TLS 1.3).
    let mut rest = &out[..sent.written];
    while !rest.is_empty() {
        let len = u16::from_be_bytes([rest[3], rest[4]]) as usize;
        assert!(len <= 512 + 17, "record of {len} bytes");
        rest = &rest[5 + len..];
    }
    // A tiny buffer is refused with the size needed, not a panic.
    let mut tiny = [0u8; 10];
    assert!(matches!(
        p.client.send(b"abc", &mut tiny),
        Err(Error::BufferTooSmall { .. })
    ));
}

#[test]
fn config_errors_are_clear() {
    let e = ClientConfig::builder(Trust::new()).build().unwrap_err();
    assert!(e.to_string().contains("no way to verify the peer"), "{e}");
    let e = ClientConfig::builder(ca_trust())
        .versions(TlsVersion::Tls13, TlsVersion::Tls12)
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("above the maximum"), "{e}");
    let e = Session::client(&client_config(BOTH, false), "not a name!", Instant::ZERO).unwrap_err();
    assert!(e.to_string().contains("not a valid DNS name"), "{e}");
    assert!(Trust::from_pem(b"garbage").is_err());
    assert!("sha256/tooshort".parse::<Pin>().is_err());
}

#[test]
fn garbage_from_the_peer_is_a_protocol_error_not_a_panic() {
    let mut server = Session::server(&server_config(BOTH, false), Instant::ZERO).unwrap();
    let r = server.handle_input(Instant::ZERO, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(r.is_err(), "{r:?}");
    let mut client =
        Session::client(&client_config(BOTH, false), "localhost", Instant::ZERO).unwrap();
    let r = client.handle_input(
        Instant::ZERO,
        &[0x16, 0x03, 0x03, 0x00, 0x05, 1, 2, 3, 4, 5],
    );
    assert!(r.is_err(), "{r:?}");
}

#[test]
fn danger_accept_any_accepts_anything() {
    let cc = ClientConfig::builder(Trust::danger_accept_any())
        .build()
        .unwrap();
    let sc = ServerConfig::builder(identity("other-server"))
        .build()
        .unwrap();
    Pair::new(&cc, "example.com", &sc).handshake().unwrap();
}

#[test]
fn default_suites_follow_mozilla_intermediate_order() {
    for (versions, want) in [
        (V13, tether::CipherSuite::TLS13_AES_128_GCM_SHA256),
        (
            V12,
            tether::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        ),
    ] {
        let mut p = Pair::new(
            &client_config(versions, false),
            "localhost",
            &server_config(versions, false),
        );
        p.handshake().unwrap();
        assert_eq!(p.client.cipher_suite(), Some(want));
    }
    // A restricted list is honoured.
    let cc = ClientConfig::builder(ca_trust())
        .cipher_suites(&[tether::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256])
        .build()
        .unwrap();
    let mut p = Pair::new(&cc, "localhost", &server_config(BOTH, false));
    p.handshake().unwrap();
    assert_eq!(
        p.server.cipher_suite(),
        Some(tether::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256)
    );
}

#[test]
fn suites_of_versions_left_out_are_refused_by_name() {
    // Only TLS 1.2 suites for a TLS 1.3 configuration: nothing could be negotiated.
    let err = ClientConfig::builder(ca_trust())
        .versions(TlsVersion::Tls13, TlsVersion::Tls13)
        .cipher_suites(&[tether::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256])
        .build()
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256") && msg.contains("is for TLSv1.3"),
        "{msg}"
    );
    let err = ServerConfig::builder(identity("server"))
        .versions(TlsVersion::Tls12, TlsVersion::Tls12)
        .cipher_suites(&[tether::CipherSuite::TLS13_AES_128_GCM_SHA256])
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("is for TLSv1.2"), "{err}");
    // A version range that is empty says so (not that no suite fits it).
    let err = ClientConfig::builder(ca_trust())
        .versions(TlsVersion::Tls13, TlsVersion::Tls12)
        .cipher_suites(&[tether::CipherSuite::TLS13_AES_128_GCM_SHA256])
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("is above the maximum"), "{err}");
    // A suite of each enabled version is kept: both negotiate.
    let suites = [
        tether::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
        tether::CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    ];
    for (versions, want) in [(V13, suites[0]), (V12, suites[1])] {
        let cc = ClientConfig::builder(ca_trust())
            .versions(TlsVersion::Tls12, TlsVersion::Tls13)
            .cipher_suites(&suites)
            .build()
            .unwrap();
        let mut p = Pair::new(&cc, "localhost", &server_config(versions, false));
        p.handshake().unwrap();
        assert_eq!(p.client.cipher_suite(), Some(want));
    }
}

/// The server's first flight for a fresh TLS 1.3 client, and the length of its first record
/// (the ServerHello).
fn first_flight(client: &mut Session, server: &mut Session) -> (Vec<u8>, usize) {
    let hello = take_output(client);
    server
        .handle_input(Instant::from_millis(1_000), &hello)
        .unwrap();
    let flight = take_output(server);
    let server_hello = 5 + usize::from(u16::from_be_bytes([flight[3], flight[4]]));
    (flight, server_hello)
}

const CCS: [u8; 6] = [0x14, 0x03, 0x03, 0x00, 0x01, 0x01];

#[test]
fn a_tls13_clients_dummy_ccs_leaves_with_its_second_flight() {
    let now = Instant::from_millis(1_000);
    let mut client = Session::client(&client_config(V13, false), "localhost", now).unwrap();
    let mut server = Session::server(&server_config(V13, false), now).unwrap();
    let (flight, server_hello) = first_flight(&mut client, &mut server);
    // The ServerHello and the start of the encrypted flight: rustls queues the client's
    // change_cipher_spec here; it waits.
    client
        .handle_input(now, &flight[..server_hello + 20])
        .unwrap();
    assert!(client.is_handshaking());
    assert!(!client.wants_transmit());
    assert_eq!(client.transmit_len(), 0);
    assert_eq!(client.poll_transmit(&mut [0u8; 64]), 0);
    // The rest: the CCS and the Finished go together.
    client
        .handle_input(now, &flight[server_hello + 20..])
        .unwrap();
    assert!(!client.is_handshaking());
    let len = client.transmit_len();
    let second = take_output(&mut client);
    assert_eq!(second.len(), len);
    assert_eq!(second[..6], CCS, "{second:02x?}");
    assert_eq!(second[6], 0x17, "the Finished, encrypted, right behind it");
    server.handle_input(now, &second).unwrap();
    assert!(!server.is_handshaking());
}

#[test]
fn a_held_ccs_goes_out_before_an_alert() {
    let now = Instant::from_millis(1_000);
    // A failure after the ServerHello: the alert goes, the CCS before it.
    let mut client = Session::client(&client_config(V13, false), "localhost", now).unwrap();
    let mut server = Session::server(&server_config(V13, false), now).unwrap();
    let (flight, server_hello) = first_flight(&mut client, &mut server);
    client.handle_input(now, &flight[..server_hello]).unwrap();
    assert!(!client.wants_transmit());
    let mut bad = flight[server_hello..].to_vec();
    let last = bad.len() - 1;
    bad[last] ^= 0x01; // the encrypted flight's last tag byte
    assert!(client.handle_input(now, &bad).is_err());
    let out = take_output(&mut client);
    assert_eq!(out[..6], CCS, "{out:02x?}");
    assert!(out.len() > 6, "an alert after the CCS: {out:02x?}");
}
