//! The DTLS session in memory: a client and a server over a deterministic link with a simulated
//! clock (tests/dtls_support). Handshakes for DTLS 1.2, 1.3 and the auto range, client
//! certificates, data both ways, refusals with the TLS error categories (and no data, no
//! Connected), loss/duplication/reordering, timers, the MTU limit, and configs dimpl cannot serve.

#![cfg(feature = "dtls")]

mod dtls_support;
mod support;

use std::sync::Arc;
use std::time::Duration;

use tether::dtls::{self, DtlsVersion, Session};
use tether::error::{
    Alert, CertificateError, ConfigError, HandshakeError, Timeout, TransportError, VersionError,
};
use tether::{ClientAuth, Error, Event, Identity, Instant, MemoryTofuStore, Recv, Trust};
use tether_pki::{IssueOptions, KeyKind};

use dtls_support::*;
use support::Pki;

fn roundtrip(pair: &mut Pair) {
    pair.client.send(b"ping from client").unwrap();
    pair.server.send(b"pong from server").unwrap();
    pair.settle().unwrap();
    assert_eq!(pair.server_got, vec![b"ping from client".to_vec()]);
    assert_eq!(pair.client_got, vec![b"pong from server".to_vec()]);
}

fn connect(
    versions_c: (DtlsVersion, DtlsVersion),
    versions_s: (DtlsVersion, DtlsVersion),
    mtls: bool,
) -> (Pki, Pair) {
    let pki = Pki::new();
    let mut pair = Pair::new(
        &client_config(&pki, versions_c, mtls),
        "localhost",
        &server_config(&pki, versions_s, mtls),
    );
    pair.handshake().unwrap();
    (pki, pair)
}

#[test]
fn handshake_and_data_each_version_with_and_without_client_certificates() {
    for (c, s, expect) in [
        (V12, V12, DtlsVersion::Dtls12),
        (V13, V13, DtlsVersion::Dtls13),
        (BOTH, BOTH, DtlsVersion::Dtls13),
        (BOTH, V12, DtlsVersion::Dtls12),
        (V12, BOTH, DtlsVersion::Dtls12),
        (V13, BOTH, DtlsVersion::Dtls13),
    ] {
        for mtls in [false, true] {
            let (pki, mut pair) = connect(c, s, mtls);
            let what = format!("client {c:?} server {s:?} mtls {mtls}");
            assert_eq!(pair.client.version(), Some(expect), "{what}");
            assert_eq!(pair.server.version(), Some(expect), "{what}");
            assert_eq!(pair.client_events, vec![Event::Connected], "{what}");
            assert_eq!(pair.server_events, vec![Event::Connected], "{what}");
            assert_eq!(
                pair.client.peer_certificate().unwrap().as_ref(),
                pki.server.der(),
                "{what}"
            );
            if mtls {
                assert_eq!(
                    pair.server.peer_certificate().unwrap().as_ref(),
                    pki.client.der(),
                    "{what}"
                );
            } else {
                assert!(pair.server.peer_certificate().is_none(), "{what}");
            }
            assert!(pair.client.cipher_suite().is_some(), "{what}");
            assert_eq!(
                pair.client.cipher_suite(),
                pair.server.cipher_suite(),
                "{what}"
            );
            assert!(pair.client.kx_group().is_some(), "{what}");
            assert!(pair.client.handshake_duration().is_some());
            roundtrip(&mut pair);
        }
    }
}

#[test]
fn close_notify_reads_as_closed_after_the_data() {
    for v in [V12, V13] {
        let (_pki, mut pair) = connect(v, v, false);
        pair.client.send(b"last words").unwrap();
        pair.client.close();
        assert!(pair.client.is_close_sent());
        assert!(matches!(pair.client.send(b"more"), Err(Error::Closed)));
        // Collect without draining the server's records, to see the order of events.
        while let Some(d) = pair.client.pop_datagram() {
            pair.server.handle_datagram(pair.now, &d).unwrap();
        }
        assert!(pair.server.is_peer_closed(), "{v:?}");
        // PeerClosed only once every record was read.
        assert_eq!(pair.server.poll_event(), None);
        let mut buf = [0u8; 64];
        assert_eq!(pair.server.recv(&mut buf).unwrap(), Recv::Data(10));
        assert_eq!(pair.server.poll_event(), Some(Event::PeerClosed));
        assert_eq!(pair.server.recv(&mut buf).unwrap(), Recv::Closed);
    }
}

/// Records taken owned (no copy) and buffers given back to the pool: every record arrives
/// intact and in order, through many rounds that reuse the pooled buffers, for both versions;
/// then close_notify reads as no record and a closed peer.
#[test]
fn owned_records_and_recycled_buffers_carry_every_record_intact() {
    for v in [V12, V13] {
        let (_pki, mut pair) = connect(v, v, false);
        for round in 0..50u32 {
            let sent: Vec<Vec<u8>> = (0..4u32)
                .map(|k| {
                    let n = 1 + ((round * 97 + k * 331) % 1200) as usize;
                    (0..n).map(|i| (i as u32 ^ round ^ k) as u8).collect()
                })
                .collect();
            for m in &sent {
                pair.client.send(m).unwrap();
            }
            while let Some(d) = pair.client.pop_datagram() {
                pair.server.handle_datagram(pair.now, &d).unwrap();
                dtls::recycle(d);
            }
            let mut got = Vec::new();
            while let Some(r) = pair.server.recv_owned().unwrap() {
                got.push(r.clone());
                dtls::recycle(r);
            }
            assert_eq!(got, sent, "{v:?} round {round}");
        }
        pair.client.close();
        while let Some(d) = pair.client.pop_datagram() {
            pair.server.handle_datagram(pair.now, &d).unwrap();
        }
        assert_eq!(pair.server.recv_owned().unwrap(), None);
        assert!(pair.server.is_peer_closed());
        // A buffer of any size may be given back; odd ones are just freed.
        dtls::recycle(Vec::new());
        dtls::recycle(vec![0; 1 << 20]);
    }
}

/// Refused peers: the error category of TLS, no Connected event, no data, on either side.
fn assert_refused(pair: &mut Pair, refuser_is_client: bool, check: impl Fn(&Error) -> bool) {
    let r = pair.handshake();
    let (refuser, other) = if refuser_is_client {
        (&pair.client, &pair.server)
    } else {
        (&pair.server, &pair.client)
    };
    let err = refuser
        .error()
        .cloned()
        .unwrap_or_else(|| panic!("not refused: {r:?}"));
    assert!(check(&err), "unexpected error: {err:?} ({err})");
    assert!(r.is_err());
    let events = if refuser_is_client {
        &pair.client_events
    } else {
        &pair.server_events
    };
    assert!(events.is_empty(), "refuser reported {events:?}");
    assert!(refuser.is_handshaking());
    assert!(pair.client_got.is_empty() && pair.server_got.is_empty());
    let _ = other;
}

#[test]
fn wrong_ca_is_unknown_issuer() {
    let pki = Pki::new();
    let other = Pki::with_ca_name("another CA");
    for v in [V12, V13] {
        let mut pair = Pair::new(
            &client_config(&other, v, false),
            "localhost",
            &server_config(&pki, v, false),
        );
        assert_refused(&mut pair, true, |e| {
            matches!(e, Error::Certificate(CertificateError::UnknownIssuer))
        });
        // The refused server never completed either (our last flight never left).
        assert!(pair.server.is_handshaking(), "{v:?}");
        // It is told why, where it still reads unprotected alerts (DTLS 1.2).
        let _ = pair.settle();
        if v == V12 {
            assert_eq!(
                pair.server.error(),
                Some(&Error::Handshake(HandshakeError::AlertReceived(Alert(48))))
            );
        }
    }
}

#[test]
fn hostname_mismatch_is_name_mismatch() {
    let pki = Pki::new();
    for v in [V12, V13] {
        let mut pair = Pair::new(
            &client_config(&pki, v, false),
            "not-the-server.example",
            &server_config(&pki, v, false),
        );
        assert_refused(&mut pair, true, |e| {
            matches!(e, Error::Certificate(CertificateError::NameMismatch { expected })
                if expected == "not-the-server.example")
        });
    }
}

#[test]
fn pins_match_or_are_refused() {
    let pki = Pki::new();
    let other = Pki::new();
    for v in [V12, V13] {
        // Pin alone, right key: connects without any CA.
        let ok = client_builder(Trust::new().with_pin(pki.server.pin()), v)
            .build()
            .unwrap();
        let mut pair = Pair::new(&ok, "anything", &server_config(&pki, v, false));
        pair.handshake().unwrap();
        roundtrip(&mut pair);

        // Pin of another key, with or without the right CA: refused.
        for trust in [
            Trust::new().with_pin(other.server.pin()),
            pki.trust().with_pin(other.server.pin()),
        ] {
            let bad = client_builder(trust, v).build().unwrap();
            let mut pair = Pair::new(&bad, "localhost", &server_config(&pki, v, false));
            let presented = pki.server.pin();
            assert_refused(
                &mut pair,
                true,
                |e| matches!(e, Error::PinMismatch { presented: p } if *p == presented),
            );
        }
    }
}

#[test]
fn tofu_remembers_the_first_key_and_refuses_a_change() {
    let pki = Pki::new();
    let impostor = Pki::new();
    let store = Arc::new(MemoryTofuStore::new());
    let config = client_builder(Trust::new().with_tofu(store.clone()), V13)
        .build()
        .unwrap();
    let mut first = Pair::new(&config, "device.example", &server_config(&pki, V13, false));
    first.handshake().unwrap();
    let mut again = Pair::new(&config, "device.example", &server_config(&pki, V13, false));
    again.handshake().unwrap();
    let mut changed = Pair::new(
        &config,
        "device.example",
        &server_config(&impostor, V13, false),
    );
    assert_refused(
        &mut changed,
        true,
        |e| matches!(e, Error::TofuKeyChanged { host, .. } if host == "device.example"),
    );
}

#[test]
fn client_certificates_are_verified_by_the_server() {
    let pki = Pki::new();
    let other = Pki::with_ca_name("another CA");
    for v in [V12, V13] {
        // A client certificate from another CA.
        let stranger = client_builder(pki.trust(), v)
            .identity(other.client.identity())
            .build()
            .unwrap();
        let mut pair = Pair::new(&stranger, "localhost", &server_config(&pki, v, true));
        assert_refused(&mut pair, false, |e| {
            matches!(e, Error::Certificate(CertificateError::UnknownIssuer))
        });
        // The client is told why: DTLS 1.2 reads the server's unprotected unknown_ca; DTLS 1.3
        // must ignore it (its flight is protected by then), keeps it, and reports it as the
        // likely reason when the silence that follows times out.
        let _ = pair.settle();
        if v == V12 {
            assert_eq!(
                pair.client.error(),
                Some(&Error::Handshake(HandshakeError::AlertReceived(Alert(48))))
            );
        } else {
            assert_eq!(pair.client.error(), None);
            assert_eq!(pair.client.unauthenticated_alert(), Some(Alert(48)));
        }

        // No client identity: the throwaway certificate is refused the same way.
        let anonymous = client_config(&pki, v, false);
        let mut pair = Pair::new(&anonymous, "localhost", &server_config(&pki, v, true));
        assert_refused(&mut pair, false, |e| matches!(e, Error::Certificate(_)));

        // A server certificate used as a client certificate: wrong purpose.
        let wrong_purpose = client_builder(pki.trust(), v)
            .identity(pki.server.identity())
            .build()
            .unwrap();
        let mut pair = Pair::new(&wrong_purpose, "localhost", &server_config(&pki, v, true));
        assert_refused(&mut pair, false, |e| {
            matches!(e, Error::Certificate(CertificateError::WrongPurpose))
        });

        // Pins on client keys.
        let pinned = dtls::ServerConfig::builder(pki.server.identity())
            .versions(v.0, v.1)
            .client_auth(ClientAuth::Required(
                Trust::new().with_pin(pki.client.pin()),
            ))
            .build()
            .unwrap();
        let mut pair = Pair::new(&client_config(&pki, v, true), "localhost", &pinned);
        pair.handshake().unwrap();
        roundtrip(&mut pair);
    }
}

#[test]
fn expired_server_certificate_is_refused() {
    let pki = Pki::new();
    let expired = pki.issue_server(
        "expired",
        &["localhost"],
        &IssueOptions {
            not_before: Some(tether_pki::date(2020, 1, 1).unwrap()),
            not_after: Some(tether_pki::date(2020, 12, 31).unwrap()),
            ..IssueOptions::default()
        },
    );
    let server = dtls::ServerConfig::builder(expired.identity())
        .build()
        .unwrap();
    let mut pair = Pair::new(&client_config(&pki, BOTH, false), "localhost", &server);
    assert_refused(&mut pair, true, |e| {
        matches!(e, Error::Certificate(CertificateError::Expired))
    });
}

#[test]
fn no_version_in_common_fails_without_fallback() {
    let pki = Pki::new();
    for (c, s) in [(V13, V12), (V12, V13)] {
        let mut pair = Pair::new(
            &client_config(&pki, c, false),
            "localhost",
            &server_config(&pki, s, false),
        );
        assert!(pair.handshake().is_err());
        // Deliver the server's alert.
        let _ = pair.settle();
        assert!(
            matches!(
                pair.server.error(),
                Some(Error::Version(VersionError::NotAllowed(_)))
            ),
            "{:?}",
            pair.server.error()
        );
        assert_eq!(
            pair.client.error(),
            Some(&Error::Version(VersionError::PeerRefused)),
            "client {c:?} server {s:?}"
        );
        assert!(pair.client_events.is_empty() && pair.server_events.is_empty());
    }
}

#[test]
fn handshake_completes_through_loss_duplication_and_reordering() {
    let pki = Pki::new();
    for v in [V12, V13, BOTH] {
        for seed in 1..=4u64 {
            let client = client_builder(pki.trust(), v)
                .identity(pki.client.identity())
                .retransmission(Duration::from_millis(100), 8)
                .build()
                .unwrap();
            let mut pair = Pair::new(&client, "localhost", &server_config(&pki, v, true))
                .lossy(Faults::LOSSY, seed);
            pair.handshake()
                .unwrap_or_else(|e| panic!("{v:?} seed {seed}: {e}"));
            // Records: each arrives intact and at most once (replays dropped), some are lost.
            let sent: Vec<Vec<u8>> = (0..100u32)
                .map(|i| format!("record {i} {}", "x".repeat(i as usize % 300)).into_bytes())
                .collect();
            for r in &sent {
                pair.client.send(r).unwrap();
                pair.step().1.unwrap();
            }
            pair.settle().unwrap();
            let got = &pair.server_got;
            assert!(got.len() <= sent.len());
            assert!(
                got.len() >= sent.len() / 2,
                "{v:?} seed {seed}: {} arrived",
                got.len()
            );
            let mut seen = std::collections::HashSet::new();
            for g in got {
                assert!(sent.contains(g), "a record arrived changed");
                assert!(seen.insert(g.clone()), "a record arrived twice");
            }
        }
    }
}

#[test]
fn lost_first_flight_is_retransmitted_on_timeout() {
    let pki = Pki::new();
    let client = client_builder(pki.trust(), V12)
        .retransmission(Duration::from_millis(500), 4)
        .build()
        .unwrap();
    let now = Instant::from_millis(5_000);
    let mut c = Session::client(&client, "localhost", now).unwrap();
    let first = c.pop_datagram().expect("a ClientHello");
    assert!(c.pop_datagram().is_none());
    let t = c.poll_timeout().expect("a retransmission timer");
    assert!(t > now && t <= now + Duration::from_millis(700), "{t:?}");
    c.handle_timeout(t).unwrap();
    let again = c.pop_datagram().expect("the ClientHello again");
    assert_eq!(again.len(), first.len());
}

#[test]
fn handshake_deadline_fails_with_timeout() {
    let pki = Pki::new();
    let client = client_builder(pki.trust(), V13)
        .handshake_timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    let now = Instant::from_millis(1_000);
    let mut c = Session::client(&client, "localhost", now).unwrap();
    // Nobody answers: timers run until the deadline.
    let mut t = now;
    for _ in 0..100 {
        let Some(next) = c.poll_timeout() else { break };
        t = next;
        if c.handle_timeout(t).is_err() {
            break;
        }
        while c.pop_datagram().is_some() {}
    }
    assert_eq!(c.error(), Some(&Error::Timeout(Timeout::Handshake)));
    assert!(t <= now + Duration::from_secs(3));
    assert!(c.poll_timeout().is_none());
    // The failure sticks.
    assert_eq!(
        c.handle_datagram(t, b"late"),
        Err(Error::Timeout(Timeout::Handshake))
    );
}

/// A DTLS record: content type, DTLS 1.2 version bytes, epoch 0, sequence number, body.
fn plaintext_record(content_type: u8, sequence: u8, body: &[u8]) -> Vec<u8> {
    let mut r = vec![content_type, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, sequence];
    r.extend_from_slice(&(body.len() as u16).to_be_bytes());
    r.extend_from_slice(body);
    r
}

/// DTLS 1.3: a fatal alert in plaintext once the handshake is encrypted is ignored (anyone could
/// forge it), not acted on; if the handshake then times out, the error names it; the peer's
/// data after it makes the session forget it.
#[test]
fn an_unprotected_alert_is_ignored_and_named_when_the_silence_times_out() {
    let pki = Pki::new();
    let forged = plaintext_record(21, 40, &[2, 49]); // fatal access_denied

    // Connected: ignored, kept, then forgotten when the server's data arrives.
    let mut pair = Pair::new(
        &client_config(&pki, V13, false),
        "localhost",
        &server_config(&pki, V13, false),
    );
    pair.handshake().unwrap();
    pair.client.handle_datagram(pair.now, &forged).unwrap();
    assert_eq!(pair.client.unauthenticated_alert(), Some(Alert(49)));
    assert!(!pair.client.is_failed());
    pair.server.send(b"still here").unwrap();
    pair.settle().unwrap();
    assert_eq!(pair.client_got, vec![b"still here".to_vec()]);
    assert_eq!(pair.client.unauthenticated_alert(), None);

    // Handshaking: the server's first answer arrives, the rest of its flight never does.
    let client = client_builder(pki.trust(), V13)
        .handshake_timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    // A small MTU: the server's flight takes several datagrams, the ServerHello the first.
    let server = dtls::ServerConfig::builder(pki.server.identity())
        .versions(V13.0, V13.1)
        .mtu(256)
        .build()
        .unwrap();
    let mut pair = Pair::new(&client, "localhost", &server);
    let mut cut = false;
    for _ in 0..10 {
        while let Some(d) = pair.client.pop_datagram() {
            pair.server.handle_datagram(pair.now, &d).unwrap();
        }
        let flight: Vec<_> = std::iter::from_fn(|| pair.server.pop_datagram()).collect();
        // A one-datagram answer (the cookie request) goes whole; of the ServerHello's flight,
        // only the first datagram.
        cut = flight.len() > 1;
        for d in flight.iter().take(if cut { 1 } else { flight.len() }) {
            pair.client.handle_datagram(pair.now, d).unwrap();
        }
        if cut {
            break;
        }
    }
    assert!(cut, "the server's flight fit one datagram");
    assert!(pair.client.is_handshaking());
    pair.client.handle_datagram(pair.now, &forged).unwrap();
    assert_eq!(pair.client.unauthenticated_alert(), Some(Alert(49)));
    let deadline = pair.now + Duration::from_secs(3);
    let mut t = pair.now;
    while t < deadline {
        t = pair.client.poll_timeout().expect("a timer").max(t);
        if pair.client.handle_timeout(t).is_err() {
            break;
        }
        while pair.client.pop_datagram().is_some() {}
    }
    let err = pair.client.error().cloned().expect("timed out");
    assert_eq!(
        err,
        Error::Handshake(HandshakeError::UnauthenticatedAlert(Alert(49)))
    );
    let text = err.to_string();
    assert!(
        text.contains("access_denied") && text.contains("without protection"),
        "{text}"
    );
}

#[test]
fn records_that_do_not_fit_the_mtu_are_refused_not_truncated() {
    let pki = Pki::new();
    for v in [V12, V13] {
        let client = client_builder(pki.trust(), v).mtu(600).build().unwrap();
        let mut pair = Pair::new(&client, "localhost", &server_config(&pki, v, false));
        pair.handshake().unwrap();
        let max = pair.client.max_send_size();
        assert!(max > 500 && max < 600, "{max}");
        let too_big = vec![7u8; max + 1];
        let err = pair.client.send(&too_big).unwrap_err();
        assert!(
            matches!(err, Error::Transport(TransportError::Other(ref m)) if m.contains("MTU")),
            "{err}"
        );
        assert!(!pair.client.wants_transmit());
        // The session is still fine, and a record of the maximum size goes through whole.
        let fits = vec![9u8; max];
        pair.client.send(&fits).unwrap();
        let d = pair.client.pop_datagram().unwrap();
        assert!(d.len() <= 600, "{} > MTU", d.len());
        pair.server.handle_datagram(pair.now, &d).unwrap();
        let mut small = [0u8; 16];
        assert_eq!(
            pair.server.recv(&mut small),
            Err(Error::BufferTooSmall { needed: max })
        );
        let mut buf = vec![0u8; max];
        assert_eq!(pair.server.recv(&mut buf).unwrap(), Recv::Data(max));
        assert_eq!(buf, fits);
    }
}

#[test]
fn garbage_datagrams_are_dropped_and_the_handshake_goes_on() {
    let pki = Pki::new();
    for v in [V12, V13, BOTH] {
        let mut pair = Pair::new(
            &client_config(&pki, v, true),
            "localhost",
            &server_config(&pki, v, true),
        );
        let mut rng = Rng::new(7);
        for len in [0usize, 1, 12, 13, 14, 60, 200, 1200] {
            let mut g: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            // Some look like DTLS handshake records.
            if len > 13 {
                g[0] = 22;
                g[1] = 0xfe;
                g[2] = 0xfd;
            }
            let _ = pair.server.handle_datagram(pair.now, &g);
            let _ = pair.client.handle_datagram(pair.now, &g);
        }
        pair.handshake().unwrap();
        roundtrip(&mut pair);
    }
}

#[test]
fn configs_dimpl_cannot_serve_are_refused_clearly() {
    let pki = Pki::new();
    for (kind, word) in [(KeyKind::Rsa2048, "RSA"), (KeyKind::Ed25519, "Ed25519")] {
        let f = pki.issue_server("k", &["localhost"], &IssueOptions::with_key(kind));
        let id =
            Identity::from_pem(f.issued.cert_pem.as_bytes(), f.issued.key_pem.as_bytes()).unwrap();
        let err = dtls::ServerConfig::builder(id.clone()).build().unwrap_err();
        assert!(
            matches!(&err, Error::Config(ConfigError::BadKey(m)) if m.contains(word) && m.contains("ECDSA")),
            "{err}"
        );
        let err = dtls::ClientConfig::builder(pki.trust())
            .identity(id)
            .build()
            .unwrap_err();
        assert!(
            matches!(err, Error::Config(ConfigError::BadKey(_))),
            "{err}"
        );
    }
    let err = dtls::ServerConfig::builder(pki.server.identity())
        .client_auth(ClientAuth::Optional(pki.trust()))
        .build()
        .unwrap_err();
    assert!(
        matches!(err, Error::Config(ConfigError::Inconsistent(_))),
        "{err}"
    );
    let err = dtls::ClientConfig::builder(Trust::new())
        .build()
        .unwrap_err();
    assert_eq!(err, Error::Config(ConfigError::NoTrustAnchors));
    let err = dtls::ClientConfig::builder(pki.trust())
        .versions(DtlsVersion::Dtls13, DtlsVersion::Dtls12)
        .build()
        .unwrap_err();
    assert!(
        matches!(err, Error::Config(ConfigError::Inconsistent(_))),
        "{err}"
    );
}

#[test]
fn sending_before_the_handshake_is_an_error() {
    let pki = Pki::new();
    let mut c =
        Session::client(&client_config(&pki, V13, false), "localhost", Instant::ZERO).unwrap();
    assert!(matches!(c.send(b"early"), Err(Error::Handshake(_))));
    let mut buf = [0u8; 8];
    assert_eq!(c.recv(&mut buf).unwrap(), Recv::Pending);
    assert!(matches!(
        Session::client(
            &client_config(&pki, V13, false),
            "not a name!",
            Instant::ZERO
        ),
        Err(Error::Config(ConfigError::BadServerName(_)))
    ));
}

/// Hostile input: every datagram of real handshakes (both directions, each version), mutated
/// (bit flips, truncation, extension, spliced headers) and replayed out of order into fresh
/// sessions of the other side. No panic, no failure of the engine itself, and never Connected or
/// data, since no mutated flight can authenticate.
#[test]
fn mutated_flights_never_panic_connect_or_deliver_data() {
    let pki = Pki::new();
    let mut rng = Rng::new(0x5eed);
    for v in [V12, V13, BOTH] {
        let client_config = client_config(&pki, v, true);
        let server_config = server_config(&pki, v, true);
        // Record one clean handshake.
        let mut pair = Pair::new(&client_config, "localhost", &server_config);
        let mut c2s = Vec::new();
        let mut s2c = Vec::new();
        for _ in 0..50 {
            let mut moved = false;
            while let Some(d) = pair.client.pop_datagram() {
                c2s.push(d.clone());
                let _ = pair.server.handle_datagram(pair.now, &d);
                moved = true;
            }
            while let Some(d) = pair.server.pop_datagram() {
                s2c.push(d.clone());
                let _ = pair.client.handle_datagram(pair.now, &d);
                moved = true;
            }
            if !moved {
                break;
            }
        }
        assert!(!pair.client.is_handshaking() && !pair.server.is_handshaking());
        for round in 0..100 {
            let mut server = Session::server(&server_config, Instant::ZERO).unwrap();
            let mut client = Session::client(&client_config, "localhost", Instant::ZERO).unwrap();
            let _ = client.pop_datagram();
            for (to_server, flights) in [(true, &c2s), (false, &s2c)] {
                for _ in 0..flights.len() * 2 {
                    let mut d = flights[rng.next() as usize % flights.len()].clone();
                    mutate(&mut d, &mut rng);
                    let now = Instant::from_millis(round);
                    let (s, r) = if to_server {
                        let r = server.handle_datagram(now, &d);
                        (&mut server, r)
                    } else {
                        let r = client.handle_datagram(now, &d);
                        (&mut client, r)
                    };
                    if let Err(Error::Protocol(m)) = &r {
                        assert!(!m.contains("internally"), "{v:?}: dimpl panicked: {m}");
                    }
                    assert!(s.is_handshaking(), "{v:?}: a mutated flight connected");
                    assert_ne!(s.poll_event(), Some(Event::Connected));
                    let mut buf = [0u8; 2048];
                    assert!(!matches!(s.recv(&mut buf), Ok(Recv::Data(_))));
                }
            }
        }
    }
}

fn mutate(d: &mut Vec<u8>, rng: &mut Rng) {
    match rng.next() % 6 {
        0 => {
            let i = rng.next() as usize % d.len();
            d[i] ^= 1 << (rng.next() % 8);
        }
        1 => {
            let n = rng.next() as usize % d.len();
            d.truncate(n);
        }
        2 => {
            let n = rng.next() as usize % 64;
            d.extend((0..n).map(|_| rng.next() as u8));
        }
        3 => {
            // A random byte in the record or handshake header.
            let i = rng.next() as usize % d.len().min(26);
            d[i] = rng.next() as u8;
        }
        // A random record length field.
        4 if d.len() > 13 => {
            d[11] = rng.next() as u8;
            d[12] = rng.next() as u8;
        }
        _ => {}
    }
}
