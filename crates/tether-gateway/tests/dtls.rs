//! The gateway's DTLS listener over real UDP sockets on 127.0.0.1: tether DTLS 1.2 and 1.3
//! clients, openssl s_client -dtls1_2, 500 concurrent clients, garbage, a spoofed ClientHello
//! flood, a client of another CA, idle expiry, drain, and the HTTP API's view of it all.
//!
//! Each test starts its own gateway (ports picked by the kernel, read back) on a tokio runtime
//! in a thread; the `Running` guard drains it and joins the thread, also when the test fails.

#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use tether::Identity;
use tether::dtls::{self, DtlsVersion, UdpDtlsSocket};
use tether_gateway::{DtlsDrop, GatewayConfig};
use tether_pki::{Ca, IssueOptions, Issued, KeyKind};
use tether_wire::{Decoder, Frame, FrameType};

use common::*;

// ---------------------------------------------------------------------------------------------
// Harness (the shared part is in tests/common)

fn pki() -> Pki {
    common::pki("gateway DTLS test CA")
}

impl Pki {
    /// The shared configuration with a 20 s handshake timeout (500 clients at once).
    fn dtls_config(&self) -> GatewayConfig {
        let mut c = self.config();
        c.handshake_timeout = Duration::from_secs(20);
        c
    }

    /// A DTLS client config: `version` only (or both), with `device`'s certificate.
    fn client(&self, version: Option<DtlsVersion>, device: Option<&Issued>) -> dtls::ClientConfig {
        let mut b = dtls::ClientConfig::builder(self.trust())
            .handshake_timeout(Duration::from_secs(20))
            .retransmission(Duration::from_millis(500), 6);
        if let Some(v) = version {
            b = b.versions(v, v);
        }
        if let Some(d) = device {
            b = b
                .identity(Identity::from_pem(d.cert_pem.as_bytes(), d.key_pem.as_bytes()).unwrap());
        }
        b.build().unwrap()
    }
}

impl Running {
    fn connect(&self, config: &dtls::ClientConfig) -> Result<UdpDtlsSocket, tether::Error> {
        let mut s = dtls::connect_named(&self.dtls.to_string(), "localhost", config)?;
        s.set_io_timeout(Some(Duration::from_secs(20)));
        Ok(s)
    }

    fn devices(&self) -> Vec<serde_json::Value> {
        let (status, body) = self.get("/devices");
        assert_eq!(status, 200);
        serde_json::from_str(&body).unwrap()
    }
}

/// Reads records until `n` frames have arrived.
fn read_frames(s: &mut UdpDtlsSocket, n: usize) -> Vec<Frame> {
    let mut d = Decoder::default();
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    while got.len() < n {
        let k = s.recv(&mut buf).expect("read replies");
        assert!(k > 0, "closed after {} of {n} frames", got.len());
        d.push(&buf[..k]);
        while let Some(f) = d.next_frame().unwrap() {
            got.push(f);
        }
    }
    got
}

fn requests(tag: &[u8]) -> Vec<Frame> {
    request_frames(tag)
}

/// The ECHO reply to `tag`, sending it again (at most 5 times) when no reply arrives within
/// 2 s: DTLS records may be lost (here: when the kernel's buffers overflow), and protocols
/// over DTLS retry. `send_first`: send before the first wait.
fn echo_with_retry(s: &mut UdpDtlsSocket, tag: &[u8], send_first: bool) -> Frame {
    let request = encode(&[Frame::new(FrameType::Echo, tag.to_vec())]);
    s.set_io_timeout(Some(Duration::from_secs(2)));
    if send_first {
        s.send(&request).unwrap();
    }
    let mut buf = [0u8; 2048];
    for _ in 0..5 {
        match s.recv(&mut buf) {
            Ok(n) => {
                let mut d = Decoder::default();
                d.push(&buf[..n]);
                return d.next_frame().unwrap().expect("one whole frame per reply");
            }
            Err(tether::Error::Timeout(_)) => s.send(&request).unwrap(),
            Err(e) => panic!("{e}"),
        }
    }
    panic!("no ECHO reply after 5 tries");
}

/// The first datagram a DTLS client sends (its ClientHello).
fn client_hello(config: &dtls::ClientConfig) -> Vec<u8> {
    let mut s = dtls::Session::client(config, "localhost", tether::Instant::ZERO).unwrap();
    s.pop_datagram().unwrap()
}

// ---------------------------------------------------------------------------------------------
// Tests

#[test]
fn dtls12_and_dtls13_devices_exchange_frames_and_are_listed() {
    let pki = pki();
    let gw = Running::start(pki.dtls_config());
    assert_eq!(
        gw.dtls, gw.tls,
        "DTLS listens on the TLS listener's address by default"
    );
    let mut socks = Vec::new();
    for (i, v) in [DtlsVersion::Dtls12, DtlsVersion::Dtls13]
        .into_iter()
        .enumerate()
    {
        let mut s = gw.connect(&pki.client(Some(v), Some(&pki.device))).unwrap();
        assert_eq!(s.session().version(), Some(v));
        // Three frames in one record.
        let tag = format!("device {i} over {v}");
        let before = now_ms();
        s.send(&encode(&requests(tag.as_bytes()))).unwrap();
        check_replies(tag.as_bytes(), &read_frames(&mut s, 3), before);
        // One frame spread over three records.
        let wire = encode(&[Frame::new(
            FrameType::Reverse,
            b"spread over records".to_vec(),
        )]);
        for part in wire.chunks(7) {
            s.send(part).unwrap();
        }
        assert_eq!(
            read_frames(&mut s, 1),
            vec![Frame::new(
                FrameType::Reverse,
                b"sdrocer revo daerps".to_vec()
            )]
        );
        // Large frames: one per record each way (two do not fit one record: refused, never
        // truncated).
        let big = vec![b'x'; 1200];
        s.send(&encode(&[
            Frame::new(FrameType::Echo, big.clone()),
            Frame::new(FrameType::Echo, big.clone()),
        ]))
        .unwrap_err();
        s.send(&encode(&[Frame::new(FrameType::Echo, big.clone())]))
            .unwrap();
        s.send(&encode(&[Frame::new(FrameType::Echo, big.clone())]))
            .unwrap();
        let got = read_frames(&mut s, 2);
        assert!(got.iter().all(|f| f.body == big));
        socks.push(s);
    }
    // A TLS device at the same time, on the same port number.
    let tls_config = tether::ClientConfig::builder(pki.trust())
        .identity(
            Identity::from_pem(
                pki.device.cert_pem.as_bytes(),
                pki.device.key_pem.as_bytes(),
            )
            .unwrap(),
        )
        .build()
        .unwrap();
    let mut tls =
        tether::net::connect_named(&gw.tls.to_string(), "localhost", &tls_config).unwrap();
    tls.write_all(&encode(&[Frame::new(FrameType::Echo, b"tcp".to_vec())]))
        .unwrap();
    let mut buf = [0u8; 64];
    let n = tls.read(&mut buf).unwrap();
    assert_eq!(&buf[8..n], b"tcp");

    let mut devices = Vec::new();
    wait_until("3 devices in /devices", Duration::from_secs(10), || {
        devices = gw.devices();
        devices.len() == 3
    });
    let dtls: Vec<_> = devices
        .iter()
        .filter(|d| d["transport"] == "dtls")
        .collect();
    assert_eq!(dtls.len(), 2, "{devices:?}");
    assert_eq!(dtls[0]["tls_version"], "DTLSv1.2");
    assert_eq!(dtls[1]["tls_version"], "DTLSv1.3");
    for d in &dtls {
        assert_eq!(d["device_id"], "device-1");
        assert_eq!(d["frames_in"], 6);
        assert_eq!(d["frames_out"], 6);
        assert!(d["cipher_suite"].as_str().unwrap().contains("AES"), "{d}");
        let remote: SocketAddr = d["remote_addr"].as_str().unwrap().parse().unwrap();
        assert!(remote.ip().is_loopback());
    }
    let tcp: Vec<_> = devices.iter().filter(|d| d["transport"] == "tls").collect();
    assert_eq!(tcp.len(), 1);

    let m = gw.prometheus();
    let dtls_ok = "tether_handshakes_total{transport=\"dtls\",result=\"ok\"}";
    assert_eq!(m[dtls_ok], 2.0);
    assert_eq!(
        m["tether_handshakes_total{result=\"ok\"}"], 1.0,
        "TLS series"
    );
    assert_eq!(m["tether_connections_open{transport=\"dtls\"}"], 2.0);
    assert_eq!(
        m["tether_frames_total{transport=\"dtls\",direction=\"in\",type=\"echo\"}"],
        6.0
    );
    assert_eq!(
        m["tether_frames_total{transport=\"dtls\",direction=\"out\",type=\"time\"}"],
        2.0
    );
    assert_eq!(
        m["tether_frames_total{direction=\"in\",type=\"echo\"}"],
        1.0
    );
    assert_eq!(
        m["tether_handshake_duration_seconds_count{transport=\"dtls\"}"],
        2.0
    );
    assert!(m["tether_bytes_total{transport=\"dtls\",direction=\"in\"}"] > 2400.0);
    assert_eq!(m["tether_dtls_cookie_requests_total"], 2.0);
    assert_eq!(m["tether_dtls_sessions_handshaking"], 0.0);

    // close_notify from the device ends its session.
    for mut s in socks {
        s.close().unwrap();
    }
    wait_until("DTLS sessions closed", Duration::from_secs(10), || {
        gw.metrics.dtls().open_connections() == 0
    });
    let m = gw.prometheus();
    assert_eq!(
        m["tether_connections_closed_total{transport=\"dtls\",reason=\"peer_closed\"}"],
        2.0
    );
    assert_eq!(gw.devices().len(), 1);
}

#[test]
fn openssl_s_client_dtls12_talks_raw_frames() {
    if !testpeers::skip_or_fail("openssl") {
        return;
    }
    let pki = pki();
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let ca = write("ca.pem", pki.ca.cert_pem());
    let cert = write("device.pem", &pki.device.cert_pem);
    let key = write("device.key", &pki.device.key_pem);
    let gw = Running::start(pki.dtls_config());
    let mut peer = testpeers::openssl_s_client(
        gw.dtls.port(),
        &testpeers::SClientOpts {
            ca_file: Some(ca),
            cert: Some(cert),
            key: Some(key),
            verify_hostname: Some("localhost".into()),
            version: Some(testpeers::Version::Dtls12),
            quiet: true,
            ..Default::default()
        },
    )
    .unwrap();
    // ECHO "ping" and REVERSE "abc", as raw bytes on s_client's stdin (one record).
    peer.send(&encode(&[
        Frame::new(FrameType::Echo, b"ping".to_vec()),
        Frame::new(FrameType::Reverse, b"abc".to_vec()),
    ]))
    .unwrap();
    peer.wait_for_output("cba", Duration::from_secs(20))
        .unwrap();
    let out = peer.stdout_so_far().into_bytes();
    let expected = encode(&[
        Frame::new(FrameType::Echo, b"ping".to_vec()),
        Frame::new(FrameType::Reverse, b"cba".to_vec()),
    ]);
    assert!(
        out.windows(expected.len())
            .any(|w| w == expected.as_slice()),
        "replies not found in s_client's output {out:?}"
    );
    let devices = gw.devices();
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0]["transport"], "dtls");
    assert_eq!(devices[0]["tls_version"], "DTLSv1.2");
    assert_eq!(devices[0]["device_id"], "device-1");
    peer.kill();
}

#[test]
fn five_hundred_concurrent_dtls_clients_exchange_echo() {
    const CLIENTS: usize = 500;
    const THREADS: usize = 10;
    let pki = pki();
    let gw = Running::start(pki.dtls_config());
    let barrier = Arc::new(std::sync::Barrier::new(THREADS + 1));
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            // Half the threads speak DTLS 1.2, half DTLS 1.3.
            let version = if t % 2 == 0 {
                DtlsVersion::Dtls12
            } else {
                DtlsVersion::Dtls13
            };
            let config = pki.client(Some(version), Some(&pki.device));
            let (barrier, addr) = (barrier.clone(), gw.dtls.to_string());
            thread::spawn(move || {
                // Phase 1: every client connects and stays connected.
                let mut socks: Vec<UdpDtlsSocket> = (0..CLIENTS / THREADS)
                    .map(|_| {
                        let mut s = dtls::connect_named(&addr, "localhost", &config).unwrap();
                        s.set_io_timeout(Some(Duration::from_secs(20)));
                        s
                    })
                    .collect();
                barrier.wait(); // all are connected
                barrier.wait(); // the test has looked at /devices
                // Phase 2: every client sends, then every client reads its reply.
                for (i, s) in socks.iter_mut().enumerate() {
                    let tag = format!("client {t}/{i}");
                    s.send(&encode(&[Frame::new(FrameType::Echo, tag.into_bytes())]))
                        .unwrap();
                }
                for (i, s) in socks.iter_mut().enumerate() {
                    let tag = format!("client {t}/{i}");
                    assert_eq!(
                        echo_with_retry(s, tag.as_bytes(), false),
                        Frame::new(FrameType::Echo, tag.into_bytes())
                    );
                }
                for s in &mut socks {
                    s.close().unwrap();
                }
            })
        })
        .collect();
    barrier.wait();
    let mut devices = Vec::new();
    wait_until(
        "500 DTLS devices in /devices",
        Duration::from_secs(30),
        || {
            devices = gw.devices();
            devices.len() == CLIENTS
        },
    );
    assert!(
        devices
            .iter()
            .all(|d| d["device_id"] == "device-1" && d["transport"] == "dtls")
    );
    barrier.wait();
    for w in workers {
        w.join().unwrap();
    }
    let m = gw.prometheus();
    assert_eq!(
        m["tether_handshakes_total{transport=\"dtls\",result=\"ok\"}"],
        CLIENTS as f64
    );
    // (More if a record was lost and a client asked again.)
    assert!(
        m["tether_frames_total{transport=\"dtls\",direction=\"out\",type=\"echo\"}"]
            >= CLIENTS as f64
    );
    wait_until("every session closed", Duration::from_secs(10), || {
        gw.metrics.dtls().open_connections() == 0
    });
}

#[test]
fn garbage_datagrams_are_dropped_and_counted() {
    let pki = pki();
    let gw = Running::start(pki.dtls_config());
    let hello = client_hello(&pki.client(None, Some(&pki.device)));
    let mut garbage: Vec<Vec<u8>> = vec![
        Vec::new(),
        vec![0],
        vec![0xff; 1400],
        vec![0x16; 13],
        b"GET / HTTP/1.1\r\n\r\n".to_vec(),
        hello[..hello.len() / 2].to_vec(),
        // A record header claiming more than the datagram holds.
        vec![
            0x16, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 1, 2, 3,
        ],
    ];
    // An application-data record (epoch 1) of no session, and a plaintext alert.
    garbage.push(vec![
        23, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 5, 0, 4, 1, 2, 3, 4,
    ]);
    garbage.push(vec![21, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 2, 40]);
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    for g in &garbage {
        udp.send_to(g, gw.dtls).unwrap();
    }
    let sent = garbage.len() as u64;
    wait_until("the garbage counted", Duration::from_secs(10), || {
        gw.metrics.dtls_drops(DtlsDrop::Garbage) == sent
    });
    // Nothing came back, nothing was kept, and the listener still serves devices.
    udp.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 2048];
    assert!(udp.recv_from(&mut buf).is_err(), "an answer to garbage");
    assert_eq!(gw.metrics.dtls().open_connections(), 0);
    let mut s = gw.connect(&pki.client(None, Some(&pki.device))).unwrap();
    s.send(&encode(&[Frame::new(
        FrameType::Echo,
        b"still here".to_vec(),
    )]))
    .unwrap();
    assert_eq!(read_frames(&mut s, 1)[0].body, b"still here");
    let m = gw.prometheus();
    assert_eq!(
        m["tether_dtls_datagrams_dropped_total{reason=\"garbage\"}"],
        sent as f64
    );
}

#[test]
fn spoofed_client_hello_flood_holds_no_state() {
    const FLOOD: usize = 10_000;
    let pki = pki();
    let gw = Running::start(pki.dtls_config());
    let slots_before = gw.metrics.dtls_peer_table_slots();
    let config = pki.client(None, Some(&pki.device));
    let hello = client_hello(&config);
    // A ClientHello with a genuine cookie, for one address; replayed from others it is a
    // forgery.
    let real = UdpSocket::bind("127.0.0.1:0").unwrap();
    real.send_to(&hello, gw.dtls).unwrap();
    let mut session = dtls::Session::client(&config, "localhost", tether::Instant::ZERO).unwrap();
    let _ = session.pop_datagram();
    real.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = [0u8; 2048];
    let (n, _) = real.recv_from(&mut buf).unwrap();
    // The cookie request answers `hello`, not this session's own ClientHello; the session only
    // needs to build a second ClientHello with that cookie (its random differs, so the
    // cookie cannot verify even from `real`'s address: a forgery in every way).
    session
        .handle_datagram(tether::Instant::ZERO, &buf[..n])
        .unwrap();
    let forged = session.pop_datagram().unwrap();
    let started = Instant::now();
    // Spoofed sources: a new socket (a new source port, over 127.0.0.1..127.0.0.4) per
    // datagram, which never reads its answer. Paced so that the kernel's receive buffer never
    // overflows (every datagram must reach the listener to be counted).
    let base = gw.metrics.dtls_datagrams_in();
    for i in 0..FLOOD {
        let sent = i as u64 + 1;
        let ip = [127, 0, 0, 1 + (i % 4) as u8];
        let spoofed = UdpSocket::bind(SocketAddr::from((ip, 0))).unwrap();
        let d = if i % 10 == 9 { &forged } else { &hello };
        spoofed.send_to(d, gw.dtls).unwrap();
        wait_until("the listener to keep up", Duration::from_secs(30), || {
            gw.metrics.dtls_datagrams_in() + 32 > base + sent
        });
    }
    wait_until("every datagram handled", Duration::from_secs(30), || {
        gw.metrics.dtls_cookie_requests() + gw.metrics.dtls_drops(DtlsDrop::BadCookie)
            == FLOOD as u64 + 1
    });
    eprintln!(
        "{FLOOD} spoofed ClientHellos handled in {:?}",
        started.elapsed()
    );
    assert_eq!(
        gw.metrics.dtls_cookie_requests(),
        1 + (FLOOD - FLOOD / 10) as u64
    );
    assert_eq!(
        gw.metrics.dtls_drops(DtlsDrop::BadCookie),
        (FLOOD / 10) as u64
    );
    // No session, no handshake, no table growth.
    assert_eq!(gw.metrics.dtls().open_connections(), 0);
    assert_eq!(gw.metrics.dtls_handshaking(), 0);
    assert_eq!(gw.metrics.dtls_peer_table_slots(), slots_before);
    let m = gw.prometheus();
    assert_eq!(
        m["tether_connections_accepted_total{transport=\"dtls\"}"],
        0.0
    );
    assert_eq!(
        m["tether_handshakes_total{transport=\"dtls\",result=\"failed\"}"],
        0.0
    );
    assert_eq!(m["tether_dtls_peer_table_slots"], slots_before as f64);
}

#[test]
fn wrong_ca_and_anonymous_clients_are_refused_and_counted() {
    let pki = pki();
    let gw = Running::start(pki.dtls_config());
    let other = Ca::init(KeyKind::EcdsaP256, "gateway DTLS test CA").unwrap();
    let stranger = other
        .issue_client("device-1", &IssueOptions::default())
        .unwrap();
    // DTLS 1.2: the client hears the alert (unknown_ca).
    let config = dtls::ClientConfig::builder(pki.trust())
        .versions(DtlsVersion::Dtls12, DtlsVersion::Dtls12)
        .identity(
            Identity::from_pem(stranger.cert_pem.as_bytes(), stranger.key_pem.as_bytes()).unwrap(),
        )
        .handshake_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let err = gw.connect(&config).unwrap_err();
    assert!(
        matches!(err, tether::Error::Handshake(_) | tether::Error::Timeout(_)),
        "{err}"
    );
    // DTLS 1.3: refused as well (the gateway's unprotected alert is ignored by 1.3 clients,
    // which time out and then name it); and a client without a certificate.
    let config13 = dtls::ClientConfig::builder(pki.trust())
        .versions(DtlsVersion::Dtls13, DtlsVersion::Dtls13)
        .identity(
            Identity::from_pem(stranger.cert_pem.as_bytes(), stranger.key_pem.as_bytes()).unwrap(),
        )
        .handshake_timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    // The DTLS 1.3 client sends its certificate in its last flight and counts itself
    // connected; the gateway refuses it and never answers but with that alert.
    let err = match gw.connect(&config13) {
        Ok(mut s) => {
            s.set_io_timeout(Some(Duration::from_secs(2)));
            let _ = s.send(&encode(&[Frame::new(
                FrameType::Echo,
                b"let me in".to_vec(),
            )]));
            let mut buf = [0u8; 256];
            s.recv(&mut buf)
                .expect_err("a refused DTLS 1.3 client got an answer")
        }
        Err(e) => e,
    };
    // unknown_ca, or bad_certificate when webpki finds the same-named CA's signature bad.
    assert!(
        matches!(
            &err,
            tether::Error::Handshake(tether::error::HandshakeError::UnauthenticatedAlert(a))
                if matches!(a.0, 42 | 48)
        ),
        "{err}"
    );
    assert!(tether::reconnect::refused(&err), "{err}");
    let anonymous = dtls::ClientConfig::builder(pki.trust())
        .versions(DtlsVersion::Dtls12, DtlsVersion::Dtls12)
        .handshake_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    assert!(gw.connect(&anonymous).is_err());
    wait_until("3 failures counted", Duration::from_secs(15), || {
        let m = gw.prometheus();
        m["tether_handshakes_total{transport=\"dtls\",result=\"failed\"}"] == 3.0
    });
    let m = gw.prometheus();
    let unknown = "tether_handshake_failures_total{transport=\"dtls\",category=\"certificate\",reason=\"unknown_issuer\"}";
    let bad_sig = "tether_handshake_failures_total{transport=\"dtls\",category=\"certificate\",reason=\"bad_signature\"}";
    // Another CA with the same name: webpki may report the issuer unknown or its signature
    // bad; either way a certificate failure, counted by reason.
    assert!(m[unknown] + m[bad_sig] >= 2.0, "{m:?}");
    let other_certificate: f64 = m
        .iter()
        .filter(|(k, _)| {
            k.starts_with(
                "tether_handshake_failures_total{transport=\"dtls\",category=\"certificate\"",
            )
        })
        .map(|(_, v)| v)
        .sum();
    assert_eq!(other_certificate, 3.0, "the anonymous client: {m:?}");
    assert_eq!(
        m["tether_handshakes_total{transport=\"dtls\",result=\"ok\"}"],
        0.0
    );
    assert!(gw.devices().is_empty());
    assert_eq!(gw.metrics.dtls().open_connections(), 0);
}

#[test]
fn idle_sessions_expire_with_close_notify() {
    let pki = pki();
    let mut config = pki.dtls_config();
    config.idle_timeout = Duration::from_secs(1);
    let gw = Running::start(config);
    let mut s = gw.connect(&pki.client(None, Some(&pki.device))).unwrap();
    s.send(&encode(&[Frame::new(
        FrameType::Echo,
        b"then idle".to_vec(),
    )]))
    .unwrap();
    assert_eq!(read_frames(&mut s, 1)[0].body, b"then idle");
    // The gateway closes the idle session: the device reads close_notify (0).
    let mut buf = [0u8; 256];
    assert_eq!(s.recv(&mut buf).unwrap(), 0);
    wait_until("the idle close counted", Duration::from_secs(10), || {
        gw.metrics
            .dtls()
            .closes(tether_gateway::metrics::CloseReason::IdleTimeout)
            == 1
    });
    assert_eq!(gw.metrics.dtls().open_connections(), 0);
    assert!(gw.devices().is_empty());
}

#[test]
fn a_device_dropped_from_the_allow_list_file_gets_close_notify_over_dtls() {
    let pki = pki();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("allow.txt");
    std::fs::write(&file, "device-1\n").unwrap();
    let config = pki.with_allow_file(pki.dtls_config(), &file);
    let gw = Running::start(config);
    let mut s = gw.connect(&pki.client(None, Some(&pki.device))).unwrap();
    s.send(&encode(&[Frame::new(FrameType::Echo, b"listed".to_vec())]))
        .unwrap();
    assert_eq!(read_frames(&mut s, 1)[0].body, b"listed");
    // An allow-list without device-1 (comments only).
    std::fs::write(&file, "# nobody\n").unwrap();
    let mut buf = [0u8; 256];
    assert_eq!(s.recv(&mut buf).unwrap(), 0, "expected close_notify");
    wait_until("the revoked close counted", Duration::from_secs(10), || {
        gw.metrics
            .dtls()
            .closes(tether_gateway::metrics::CloseReason::Revoked)
            == 1
    });
    assert!(gw.devices().is_empty());
}

/// A renewed server certificate written over the files is what new DTLS devices see, without
/// a restart; a session made before keeps working.
#[test]
fn a_renewed_server_certificate_reaches_new_dtls_handshakes() {
    let pki = pki();
    let dir = tempfile::tempdir().unwrap();
    let (config, cert, key) = pki.with_identity_files(pki.dtls_config(), dir.path());
    let gw = Running::start(config);
    let client = pki.client(None, Some(&pki.device));
    let seen = |gw: &Running| {
        let s = gw.connect(&client).unwrap();
        s.session().peer_certificate().unwrap().to_vec()
    };
    assert_eq!(seen(&gw), pki.server.cert_der);
    let mut open = gw.connect(&client).unwrap();
    let renewed = pki.renewed_server(90);
    std::fs::write(&cert, &renewed.cert_pem).unwrap();
    std::fs::write(&key, &renewed.key_pem).unwrap();
    wait_until("the renewed certificate", Duration::from_secs(10), || {
        seen(&gw) == renewed.cert_der
    });
    assert_eq!(
        echo_with_retry(&mut open, b"still here", true).body,
        b"still here"
    );
}

#[test]
fn drain_sends_close_notify_to_dtls_sessions() {
    let pki = pki();
    let mut gw = Running::start(pki.dtls_config());
    let mut socks: Vec<UdpDtlsSocket> = [DtlsVersion::Dtls12, DtlsVersion::Dtls13]
        .into_iter()
        .map(|v| gw.connect(&pki.client(Some(v), Some(&pki.device))).unwrap())
        .collect();
    for s in &mut socks {
        s.send(&encode(&[Frame::new(FrameType::Echo, b"before".to_vec())]))
            .unwrap();
        assert_eq!(read_frames(s, 1)[0].body, b"before");
    }
    let metrics = gw.metrics.clone();
    gw.stop();
    for s in &mut socks {
        let mut buf = [0u8; 256];
        assert_eq!(s.recv(&mut buf).unwrap(), 0, "close_notify at drain");
    }
    assert_eq!(
        metrics
            .dtls()
            .closes(tether_gateway::metrics::CloseReason::Drain),
        2
    );
}

#[test]
fn handshake_limit_holds_new_peers_off_until_a_handshake_ends() {
    let pki = pki();
    let mut config = pki.dtls_config();
    config.dtls_max_handshaking = 1;
    config.handshake_timeout = Duration::from_secs(1);
    let gw = Running::start(config);
    let client_config = pki.client(Some(DtlsVersion::Dtls12), Some(&pki.device));
    // A peer that sends its second ClientHello (with the cookie) and then nothing: a session
    // in its handshake.
    let stalled = UdpSocket::bind("127.0.0.1:0").unwrap();
    stalled.connect(gw.dtls).unwrap();
    stalled
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut s = dtls::Session::client(&client_config, "localhost", tether::Instant::ZERO).unwrap();
    stalled.send(&s.pop_datagram().unwrap()).unwrap();
    let mut buf = [0u8; 2048];
    let n = stalled.recv(&mut buf).unwrap();
    s.handle_datagram(tether::Instant::ZERO, &buf[..n]).unwrap();
    while let Some(d) = s.pop_datagram() {
        stalled.send(&d).unwrap();
    }
    wait_until(
        "one session in its handshake",
        Duration::from_secs(10),
        || gw.metrics.dtls_handshaking() == 1,
    );
    // Over the limit: another peer's ClientHello gets no answer, and is counted.
    let other = UdpSocket::bind("127.0.0.1:0").unwrap();
    other.connect(gw.dtls).unwrap();
    other.send(&client_hello(&client_config)).unwrap();
    wait_until(
        "the ClientHello over the limit dropped",
        Duration::from_secs(10),
        || gw.metrics.dtls_drops(DtlsDrop::HandshakeLimit) == 1,
    );
    other
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    assert!(other.recv(&mut buf).is_err(), "an answer over the limit");
    assert_eq!(gw.metrics.dtls().open_connections(), 1);
    // The stalled handshake times out (1 s); then a device gets in.
    wait_until(
        "the stalled handshake timed out",
        Duration::from_secs(15),
        || gw.metrics.dtls_handshaking() == 0,
    );
    assert_eq!(
        gw.metrics
            .dtls()
            .handshake_failures(tether_gateway::metrics::FailReason::Timeout),
        1
    );
    let mut device = gw.connect(&pki.client(None, Some(&pki.device))).unwrap();
    device
        .send(&encode(&[Frame::new(FrameType::Echo, b"my turn".to_vec())]))
        .unwrap();
    assert_eq!(read_frames(&mut device, 1)[0].body, b"my turn");
}

#[test]
fn oversize_frame_gets_error_then_close_notify() {
    let pki = pki();
    let mut config = pki.dtls_config();
    config.max_frame = 16;
    let gw = Running::start(config);
    let mut s = gw.connect(&pki.client(None, Some(&pki.device))).unwrap();
    // Within the limit: answered (straight from the record).
    s.send(&encode(&[Frame::new(FrameType::Echo, vec![b'a'; 16])]))
        .unwrap();
    assert_eq!(read_frames(&mut s, 1)[0].body, vec![b'a'; 16]);
    // Over it: ERROR (too large), then close_notify.
    s.send(&encode(&[Frame::new(FrameType::Echo, vec![b'b'; 40])]))
        .unwrap();
    let err = read_frames(&mut s, 1).remove(0);
    assert_eq!(
        err.parse_error().unwrap().0,
        tether_wire::ErrorCode::TooLarge
    );
    let mut buf = [0u8; 256];
    assert_eq!(s.recv(&mut buf).unwrap(), 0, "close_notify after the ERROR");
    wait_until("the close counted", Duration::from_secs(10), || {
        gw.metrics
            .dtls()
            .closes(tether_gateway::metrics::CloseReason::FrameTooLarge)
            == 1
    });
}

#[test]
fn a_device_that_restarts_on_the_same_port_replaces_its_session() {
    let pki = pki();
    let gw = Running::start(pki.dtls_config());
    let config = pki.client(None, Some(&pki.device));
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.connect(gw.dtls).unwrap();
    let mut first =
        dtls::DtlsSocket::connect(udp, &config, "localhost", tether::net::StdClock::new()).unwrap();
    first.set_io_timeout(Some(Duration::from_secs(20)));
    first
        .send(&encode(&[Frame::new(FrameType::Echo, b"before".to_vec())]))
        .unwrap();
    assert_eq!(read_frames(&mut first, 1)[0].body, b"before");
    // The device "restarts": its session is gone without close_notify, the port stays.
    let (udp, _lost) = first.into_parts();
    let mut second =
        dtls::DtlsSocket::connect(udp, &config, "localhost", tether::net::StdClock::new()).unwrap();
    second.set_io_timeout(Some(Duration::from_secs(20)));
    second
        .send(&encode(&[Frame::new(FrameType::Echo, b"after".to_vec())]))
        .unwrap();
    assert_eq!(read_frames(&mut second, 1)[0].body, b"after");
    let mut devices = Vec::new();
    wait_until("one DTLS device listed", Duration::from_secs(10), || {
        devices = gw.devices();
        devices.len() == 1 && devices[0]["frames_in"] == 1
    });
    assert_eq!(
        gw.metrics
            .dtls()
            .closes(tether_gateway::metrics::CloseReason::Replaced),
        1
    );
    assert_eq!(gw.metrics.dtls().open_connections(), 1);
    let m = gw.prometheus();
    assert_eq!(
        m["tether_connections_closed_total{transport=\"dtls\",reason=\"replaced\"}"],
        1.0
    );
    assert_eq!(
        m["tether_handshakes_total{transport=\"dtls\",result=\"ok\"}"],
        2.0
    );
}
