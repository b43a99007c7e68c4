//! The gateway over real sockets on 127.0.0.1: tether clients, openssl s_client, the HTTP API.
//!
//! Each test starts its own gateway (ports picked by the kernel, read back) on a tokio runtime
//! in a thread; the `Running` guard drains it and joins the thread, also when the test fails.

#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

mod common;

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use tether::error::{Alert, HandshakeError};
use tether::net::TcpTlsSocket;
use tether::{ClientConfig, Identity, TicketKey, TlsVersion};
use tether_gateway::{AllowList, ClientAuthPolicy, DtlsListen, Gateway, TicketSource};
use tether_pki::{Ca, IssueOptions, Issued, KeyKind};
use tether_wire::{Decoder, ErrorCode, Frame, FrameType};

use common::*;

// ---------------------------------------------------------------------------------------------
// Harness (the shared part is in tests/common)

fn pki() -> Pki {
    common::pki("gateway test CA")
}

impl Pki {
    fn client(&self, device: Option<&Issued>, version: Option<TlsVersion>) -> ClientConfig {
        let mut b = ClientConfig::builder(self.trust()).handshake_timeout(Duration::from_secs(20));
        if let Some(d) = device {
            b = b
                .identity(Identity::from_pem(d.cert_pem.as_bytes(), d.key_pem.as_bytes()).unwrap());
        }
        if let Some(v) = version {
            b = b.versions(v, v);
        }
        b.build().unwrap()
    }

    fn device_client(&self) -> ClientConfig {
        self.client(Some(&self.device), None)
    }
}

impl Running {
    fn connect(&self, config: &ClientConfig) -> Result<TcpTlsSocket, tether::Error> {
        tether::net::connect_named(&self.tls.to_string(), "localhost", config)
    }
}

/// ECHO, REVERSE and TIME with `tag`, encoded.
fn requests(tag: &[u8]) -> Vec<u8> {
    encode(&request_frames(tag))
}

/// Reads until `n` frames have arrived.
/// What a refused device sees: the access_denied alert, not data and not a close_notify.
fn denied() -> tether::Error {
    tether::Error::Handshake(HandshakeError::AlertReceived(Alert::ACCESS_DENIED))
}

/// The device's next read finds the gateway's refusal.
fn assert_access_denied(s: &mut TcpTlsSocket) {
    let mut b = [0u8; 64];
    let read = s.read(&mut b);
    assert!(read.is_err(), "expected access_denied, read {read:?}");
    assert_eq!(s.session().error(), Some(&denied()), "{read:?}");
}

/// A device the gateway refuses after the handshake: in TLS 1.2 the alert can come with the
/// gateway's last flight (the connect fails with it), in TLS 1.3 it follows the device's
/// Finished (the first read finds it).
fn assert_refused(connected: Result<TcpTlsSocket, tether::Error>) {
    match connected {
        Err(e) => assert_eq!(e, denied()),
        Ok(mut s) => {
            let _ = s.write_all(&requests(b"x"));
            assert_access_denied(&mut s);
        }
    }
}

/// The error `Gateway::bind` gives for `config` (which must not bind).
fn bind_error(config: tether_gateway::GatewayConfig) -> String {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    match rt.block_on(Gateway::bind(config)) {
        Ok(gw) => panic!("bound on {}", gw.local_addr()),
        Err(e) => e.to_string(),
    }
}

fn read_frames(s: &mut TcpTlsSocket, n: usize) -> Vec<Frame> {
    let mut d = Decoder::default();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while got.len() < n {
        let k = s.read(&mut buf).expect("read replies");
        assert!(k > 0, "closed after {} of {n} frames", got.len());
        d.push(&buf[..k]);
        while let Some(f) = d.next_frame().unwrap() {
            got.push(f);
        }
    }
    got
}

// ---------------------------------------------------------------------------------------------
// Tests

#[test]
fn thousand_concurrent_mtls_clients_echo_reverse_time() {
    const CLIENTS: usize = 1000;
    const THREADS: usize = 8;
    let pki = pki();
    let mut config = pki.config();
    config.handshake_timeout = Duration::from_secs(30);
    let gw = Running::start(config);
    let client = Arc::new(pki.device_client());
    let started = Instant::now();
    let barrier = Arc::new(std::sync::Barrier::new(THREADS + 1));
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let (client, barrier, addr) = (client.clone(), barrier.clone(), gw.tls.to_string());
            thread::spawn(move || {
                // Phase 1: every client connects (mTLS handshake) and stays connected.
                let mut socks: Vec<TcpTlsSocket> = (0..CLIENTS / THREADS)
                    .map(|_| tether::net::connect_named(&addr, "localhost", &client).unwrap())
                    .collect();
                barrier.wait(); // all 1,000 are connected
                barrier.wait(); // the test has looked at /devices
                // Phase 2: every client sends its three requests, then every client reads.
                let before = now_ms();
                for (i, s) in socks.iter_mut().enumerate() {
                    s.write_all(&requests(format!("client {t}/{i}").as_bytes()))
                        .unwrap();
                }
                for (i, s) in socks.iter_mut().enumerate() {
                    let replies = read_frames(s, 3);
                    check_replies(format!("client {t}/{i}").as_bytes(), &replies, before);
                }
                for s in &mut socks {
                    s.close().unwrap();
                }
            })
        })
        .collect();
    barrier.wait();
    let connected = started.elapsed();
    // A TLS 1.3 client is done when it sends its Finished; the gateway a moment later.
    let mut devices = Vec::new();
    wait_until("1,000 devices in /devices", Duration::from_secs(30), || {
        let (status, body) = gw.get("/devices");
        assert_eq!(status, 200);
        devices = serde_json::from_str::<Vec<serde_json::Value>>(&body).unwrap();
        devices.len() == CLIENTS
    });
    assert!(devices.iter().all(|d| d["device_id"] == "device-1"));
    barrier.wait();
    for w in workers {
        w.join().unwrap();
    }
    let m = gw.prometheus();
    assert_eq!(m["tether_handshakes_total{result=\"ok\"}"], CLIENTS as f64);
    assert_eq!(
        m["tether_frames_total{direction=\"in\",type=\"echo\"}"],
        CLIENTS as f64
    );
    assert_eq!(
        m["tether_frames_total{direction=\"out\",type=\"time\"}"],
        CLIENTS as f64
    );
    eprintln!(
        "{CLIENTS} clients connected in {connected:?} ({} resumed), all done in {:?}",
        m["tether_handshakes_resumed_total"],
        started.elapsed()
    );
}

#[test]
fn silent_peer_is_cut_at_the_handshake_timeout_while_others_work() {
    let pki = pki();
    let mut config = pki.config();
    config.handshake_timeout = Duration::from_secs(1);
    let gw = Running::start(config);
    let mut silent = TcpStream::connect(gw.tls).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let opened = Instant::now();
    // Others keep working meanwhile.
    let client = pki.device_client();
    for i in 0..3 {
        let mut s = gw.connect(&client).unwrap();
        let before = now_ms();
        s.write_all(&requests(format!("busy {i}").as_bytes()))
            .unwrap();
        check_replies(
            format!("busy {i}").as_bytes(),
            &read_frames(&mut s, 3),
            before,
        );
    }
    let mut buf = [0u8; 16];
    let n = silent.read(&mut buf).unwrap_or(0);
    let took = opened.elapsed();
    assert_eq!(n, 0, "the gateway sent {n} bytes to a silent peer");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "cut after {took:?}"
    );
    let m = gw.prometheus();
    assert_eq!(
        m["tether_handshake_failures_total{category=\"timeout\",reason=\"timeout\"}"],
        1.0
    );
}

#[test]
fn clients_without_certificate_or_from_another_ca_are_refused_and_counted() {
    let pki = pki();
    let gw = Running::start(pki.config());
    let other_ca = Ca::init(KeyKind::EcdsaP256, "some other CA").unwrap();
    let stranger = other_ca
        .issue_client("device-1", &IssueOptions::default())
        .unwrap();
    for version in [TlsVersion::Tls13, TlsVersion::Tls12] {
        for device in [None, Some(&stranger)] {
            let config = pki.client(device, Some(version));
            // TLS 1.3: the client finishes first and reads the refusal; TLS 1.2: the handshake fails.
            let result = gw.connect(&config).and_then(|mut s| {
                s.write_all(&requests(b"x"))?;
                let mut b = [0u8; 64];
                s.read(&mut b)
            });
            assert!(
                result.is_err(),
                "{version:?} {:?} was served",
                device.is_some()
            );
        }
    }
    let m = gw.prometheus();
    let failures = |reason: &str| {
        m[&format!(
            "tether_handshake_failures_total{{category=\"certificate\",reason=\"{reason}\"}}"
        )]
    };
    assert_eq!(failures("missing_client_cert"), 2.0);
    assert_eq!(failures("unknown_issuer"), 2.0);
    assert_eq!(m["tether_handshakes_total{result=\"failed\"}"], 4.0);
    assert_eq!(m["tether_handshakes_total{result=\"ok\"}"], 0.0);
}

#[test]
fn a_device_flight_larger_than_one_handshake_read_completes() {
    // The gateway reads 4 KiB at a time during the handshake: a device chain padded with
    // copies of the CA certificate (ignored by path building) makes its flight over 5 KiB.
    let pki = pki();
    let gw = Running::start(pki.config());
    let mut chain = pki.device.cert_pem.clone();
    for _ in 0..20 {
        chain.push_str(pki.ca.cert_pem());
    }
    // PEM is 4/3 of the DER that goes on the wire.
    assert!(chain.len() * 3 / 4 > 2 * 4096, "{}", chain.len());
    let identity = Identity::from_pem(chain.as_bytes(), pki.device.key_pem.as_bytes()).unwrap();
    let config = ClientConfig::builder(pki.trust())
        .identity(identity)
        .build()
        .unwrap();
    for _ in 0..2 {
        let mut s = gw.connect(&config).unwrap();
        let before = now_ms();
        s.write_all(&requests(b"long chain")).unwrap();
        check_replies(b"long chain", &read_frames(&mut s, 3), before);
        let (_, devices) = gw.get("/devices");
        assert!(devices.contains("\"device-1\""), "{devices}");
    }
}

#[test]
fn allow_list_refuses_unlisted_devices() {
    let pki = pki();
    let mut config = pki.config();
    config.client_auth = ClientAuthPolicy::Required {
        trust: pki.trust(),
        allow: Some(AllowList::new(["device-1"])),
    };
    let gw = Running::start(config);
    let other = pki
        .ca
        .issue_client("device-2", &IssueOptions::default())
        .unwrap();
    // Told why, in either version: access_denied, sealed like any record after the handshake.
    for v in [TlsVersion::Tls12, TlsVersion::Tls13] {
        assert_refused(gw.connect(&pki.client(Some(&other), Some(v))));
    }
    let mut ok = gw.connect(&pki.device_client()).unwrap();
    ok.write_all(&requests(b"listed")).unwrap();
    assert_eq!(read_frames(&mut ok, 3).len(), 3);
    let m = gw.prometheus();
    assert_eq!(
        m["tether_handshake_failures_total{category=\"policy\",reason=\"not_allowed\"}"],
        2.0
    );
}

#[test]
fn a_changed_allow_list_file_closes_the_sessions_of_devices_it_drops() {
    let pki = pki();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("allow.txt");
    std::fs::write(&file, "device-1\ndevice-2\n").unwrap();
    let config = pki.with_allow_file(pki.config(), &file);
    let gw = Running::start(config);
    let second = pki
        .ca
        .issue_client("device-2", &IssueOptions::default())
        .unwrap();
    let second_client = pki.client(Some(&second), None);

    let mut one = gw.connect(&pki.device_client()).unwrap();
    let mut two = gw.connect(&second_client).unwrap();
    for (s, tag) in [(&mut one, &b"one"[..]), (&mut two, &b"two"[..])] {
        s.write_all(&requests(tag)).unwrap();
        assert_eq!(read_frames(s, 3).len(), 3);
    }

    // device-2 leaves the list: its open session is ended with access_denied, device-1's
    // goes on.
    std::fs::write(&file, "device-1\n").unwrap();
    two.set_io_timeout(Some(Duration::from_secs(10)));
    assert_access_denied(&mut two);
    one.write_all(&requests(b"still one")).unwrap();
    assert_eq!(read_frames(&mut one, 3).len(), 3);
    // And it cannot come back, not even by resuming its session (the ticket carries its
    // certificate, so its id is checked again).
    let mut again = gw.connect(&second_client).unwrap();
    assert!(
        again.session().is_resumed(),
        "expected a resumption attempt"
    );
    let _ = again.write_all(&requests(b"x"));
    assert_access_denied(&mut again);

    // A file that does not parse keeps the list in force.
    std::fs::write(&file, "device-1\nnot an id!\n").unwrap();
    thread::sleep(Duration::from_millis(400));
    let mut fresh = gw.connect(&pki.device_client()).unwrap();
    fresh.write_all(&requests(b"fresh")).unwrap();
    assert_eq!(read_frames(&mut fresh, 3).len(), 3);
    assert_refused(gw.connect(&second_client));

    let m = gw.prometheus();
    assert_eq!(
        m["tether_connections_closed_total{reason=\"revoked\"}"],
        1.0
    );
    assert_eq!(m["tether_allow_list_ids"], 1.0);
    assert_eq!(
        m["tether_allow_list_reloads_total{result=\"installed\"}"],
        1.0
    );
    assert!(m["tether_allow_list_reloads_total{result=\"failed\"}"] >= 1.0);
    assert_eq!(
        m["tether_handshake_failures_total{category=\"policy\",reason=\"not_allowed\"}"],
        2.0
    );
    let (_, devices) = gw.get("/devices");
    assert!(!devices.contains("\"device-2\""), "{devices}");
}

#[test]
fn oversize_frame_gets_error_then_close_notify_and_unknown_type_an_error() {
    let pki = pki();
    let mut config = pki.config();
    config.max_frame = 1024;
    let gw = Running::start(config);
    let mut s = gw.connect(&pki.device_client()).unwrap();
    // An unknown type: ERROR code 2, and the connection goes on.
    s.write_all(&encode(&[Frame::new(FrameType::from(77), b"?".to_vec())]))
        .unwrap();
    let err = &read_frames(&mut s, 1)[0];
    assert_eq!(err.parse_error().unwrap().0, ErrorCode::UnknownType);
    s.write_all(&requests(b"still here")).unwrap();
    assert_eq!(read_frames(&mut s, 3).len(), 3);
    // Over the limit: ERROR code 1, then close_notify (read returns 0).
    let mut big = Vec::new();
    Frame::new(FrameType::Echo, vec![7u8; 4096]).encode_into(&mut big);
    s.write_all(&big).unwrap();
    let err = &read_frames(&mut s, 1)[0];
    assert_eq!(err.kind, FrameType::Error);
    assert_eq!(err.parse_error().unwrap().0, ErrorCode::TooLarge);
    let mut b = [0u8; 64];
    assert_eq!(s.read(&mut b).unwrap(), 0, "expected close_notify");
    let m = gw.prometheus();
    assert_eq!(
        m["tether_connections_closed_total{reason=\"frame_too_large\"}"],
        1.0
    );
    assert_eq!(
        m["tether_frames_total{direction=\"out\",type=\"error\"}"],
        2.0
    );
    assert_eq!(
        m["tether_frames_total{direction=\"in\",type=\"unknown\"}"],
        1.0
    );
}

/// Reads raw bytes until the gateway closes the connection (EOF or reset), within `limit`.
fn read_until_closed(tcp: &mut TcpStream, limit: Duration) -> Vec<u8> {
    let start = Instant::now();
    tcp.set_read_timeout(Some(limit)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tcp.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the gateway did not close within {limit:?}: {e}"),
        }
    }
    assert!(
        start.elapsed() < limit,
        "closed only after {:?}",
        start.elapsed()
    );
    got
}

#[test]
fn hostile_peers_are_cut_and_counted_and_tampered_records_never_reach_the_frame_handler() {
    let pki = pki();
    let mut config = pki.config();
    // Long enough that a close caused by the timeout cannot pass for one caused by the input.
    config.handshake_timeout = Duration::from_secs(60);
    let gw = Running::start(config);
    let quick = Duration::from_secs(5);

    // Not TLS at all (a plain HTTP request on the TLS port), and a record header that claims
    // more than a TLS record may hold: each refused at once, as a protocol failure.
    for hostile in [
        &b"GET /v1/models HTTP/1.1\r\nHost: gateway\r\n\r\n"[..],
        &[0x16, 0x03, 0x01, 0xff, 0xff, 1, 0, 0, 0][..],
    ] {
        let mut tcp = TcpStream::connect(gw.tls).unwrap();
        tcp.write_all(hostile).unwrap();
        let answer = read_until_closed(&mut tcp, quick);
        // At most a plaintext alert record (type 21), never a handshake.
        assert!(
            answer.is_empty() || answer[0] == 21,
            "answered {answer:02x?}"
        );
    }

    // A verified device whose first application record was altered on the way: the gateway
    // sends bad_record_mac and closes; the frames in it are not answered nor counted.
    let socket = gw.connect(&pki.device_client()).unwrap();
    let (mut tcp, mut session) = socket.into_parts();
    let mut out = vec![0u8; 4096];
    let sent = session.send(&requests(b"tampered"), &mut out).unwrap();
    assert_eq!(sent.consumed, requests(b"tampered").len());
    out[sent.written - 3] ^= 0x01;
    tcp.write_all(&out[..sent.written]).unwrap();
    let answer = read_until_closed(&mut tcp, quick);
    let err = session
        .handle_input(tether::Instant::ZERO, &answer)
        .expect_err("the gateway must refuse the altered record");
    assert!(err.to_string().contains("bad_record_mac"), "{err}");

    // Others are served as before.
    let mut ok = gw.connect(&pki.device_client()).unwrap();
    let before = now_ms();
    ok.write_all(&requests(b"honest")).unwrap();
    check_replies(b"honest", &read_frames(&mut ok, 3), before);

    let m = gw.prometheus();
    assert_eq!(
        m["tether_handshake_failures_total{category=\"protocol\",reason=\"protocol\"}"],
        2.0
    );
    assert_eq!(
        m["tether_connections_closed_total{reason=\"tls_error\"}"],
        1.0
    );
    // Only the honest device's frames reached the handler.
    assert_eq!(
        m["tether_frames_total{direction=\"in\",type=\"echo\"}"],
        1.0
    );
    assert_eq!(
        m["tether_frames_total{direction=\"out\",type=\"echo\"}"],
        1.0
    );
}

#[test]
fn idle_connection_gets_close_notify_at_the_idle_timeout() {
    let pki = pki();
    let mut config = pki.config();
    config.idle_timeout = Duration::from_secs(1);
    let gw = Running::start(config);
    let mut s = gw.connect(&pki.device_client()).unwrap();
    s.write_all(&requests(b"once")).unwrap();
    read_frames(&mut s, 3);
    let quiet = Instant::now();
    let mut b = [0u8; 64];
    assert_eq!(s.read(&mut b).unwrap(), 0);
    assert!(quiet.elapsed() >= Duration::from_millis(900));
    wait_until(
        "the idle close to be counted",
        Duration::from_secs(5),
        || gw.prometheus()["tether_connections_closed_total{reason=\"idle_timeout\"}"] == 1.0,
    );
}

#[test]
fn per_ip_limit_closes_extra_connections_and_counts_them() {
    let pki = pki();
    let mut config = pki.config();
    config.max_per_ip = 2;
    let gw = Running::start(config);
    let client = pki.device_client();
    let _a = gw.connect(&client).unwrap();
    let _b = gw.connect(&client).unwrap();
    assert!(gw.connect(&client).is_err());
    let m = gw.prometheus();
    assert_eq!(
        m["tether_connections_rejected_total{reason=\"per_ip_limit\"}"],
        1.0
    );
    assert_eq!(m["tether_connections_open"], 2.0);
}

#[test]
fn global_limit_closes_extra_connections_and_counts_them() {
    let pki = pki();
    let mut config = pki.config();
    config.max_connections = 3;
    let gw = Running::start(config);
    let client = pki.device_client();
    let held: Vec<_> = (0..3).map(|_| gw.connect(&client).unwrap()).collect();
    // A fourth and a fifth: closed at once, before any handshake.
    assert!(gw.connect(&client).is_err());
    assert!(gw.connect(&client).is_err());
    let m = gw.prometheus();
    assert_eq!(
        m["tether_connections_rejected_total{reason=\"global_limit\"}"],
        2.0
    );
    assert_eq!(m["tether_connections_open"], 3.0);
    // A slot freed is a slot for the next device.
    drop(held);
    wait_until("the closes to be counted", Duration::from_secs(5), || {
        gw.prometheus()["tether_connections_open"] == 0.0
    });
    let before = now_ms();
    let mut s = gw.connect(&client).unwrap();
    s.write_all(&requests(b"after the limit")).unwrap();
    check_replies(b"after the limit", &read_frames(&mut s, 3), before);
}

#[test]
fn http_api_health_devices_metrics_and_drain() {
    let pki = pki();
    let mut gw = Running::start(pki.config());
    let (status, body) = gw.get("/health");
    assert_eq!(status, 200);
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["status"], "ok");

    let mut s = gw
        .connect(&pki.client(Some(&pki.device), Some(TlsVersion::Tls12)))
        .unwrap();
    s.write_all(&requests(b"api")).unwrap();
    read_frames(&mut s, 3);
    let (status, body) = gw.get("/devices");
    assert_eq!(status, 200);
    let devices: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    assert_eq!(devices.len(), 1);
    let d = &devices[0];
    assert_eq!(d["device_id"], "device-1");
    assert_eq!(d["tls_version"], "TLSv1.2");
    assert!(
        d["cipher_suite"]
            .as_str()
            .unwrap()
            .starts_with("TLS_ECDHE_ECDSA_WITH_")
    );
    assert_eq!(d["frames_in"], 3);
    assert_eq!(d["frames_out"], 3);
    assert_eq!(d["bytes_in"], 2 * (8 + 3) + 8);
    assert_eq!(d["bytes_out"], 2 * (8 + 3) + 16);
    let since = d["connected_since"].as_str().unwrap();
    assert!(since.len() == 20 && since.ends_with('Z'), "{since}");
    let local = s.transport().local_addr().unwrap();
    assert_eq!(d["remote_addr"], local.to_string());

    let m = gw.prometheus();
    assert_eq!(m["tether_connections_open"], 1.0);
    assert_eq!(m["tether_handshake_duration_seconds_count"], 1.0);
    assert_eq!(
        m["tether_handshake_duration_seconds_bucket{le=\"+Inf\"}"],
        1.0
    );
    assert!(m["tether_bytes_total{direction=\"in\"}"] > 0.0);
    assert_eq!(m["tether_draining"], 0.0);

    // Drain with half a frame in: /health says 503, the frame is answered when complete, then
    // close_notify.
    let frame = requests(b"last");
    s.write_all(&frame[..5]).unwrap();
    thread::sleep(Duration::from_millis(100));
    gw.shutdown();
    wait_until("/health to say draining", Duration::from_secs(5), || {
        gw.get("/health").0 == 503
    });
    wait_until("the listener to close", Duration::from_secs(5), || {
        TcpStream::connect(gw.tls).is_err()
    });
    s.write_all(&frame[5..]).unwrap();
    let before = now_ms() - 1000;
    check_replies(b"last", &read_frames(&mut s, 3), before);
    let mut b = [0u8; 16];
    assert_eq!(s.read(&mut b).unwrap(), 0, "expected close_notify");
    gw.stop();
}

/// A drain reaches sessions that wait with nothing in flight: each gets close_notify at once,
/// not at the drain timeout (5 s here, when the gateway cuts what is still open without one).
#[test]
fn drain_sends_close_notify_to_idle_sessions_at_once() {
    let pki = pki();
    let mut gw = Running::start(pki.config());
    let config = pki.client(Some(&pki.device), None);
    let mut sessions: Vec<_> = (0..3)
        .map(|i| {
            let mut s = gw.connect(&config).unwrap();
            s.write_all(&requests(format!("idle-{i}").as_bytes()))
                .unwrap();
            read_frames(&mut s, 3);
            s
        })
        .collect();
    thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    gw.shutdown();
    for s in &mut sessions {
        let mut b = [0u8; 16];
        assert_eq!(s.read(&mut b).unwrap(), 0, "expected close_notify");
    }
    let took = started.elapsed();
    assert!(took < Duration::from_secs(2), "close_notify after {took:?}");
    gw.stop();
}

#[test]
fn server_only_tls_serves_anonymous_devices() {
    let pki = pki();
    let mut config = pki.config();
    config.client_auth = ClientAuthPolicy::ServerOnly;
    config.min_tls = TlsVersion::Tls13;
    let gw = Running::start(config);
    let mut s = gw.connect(&pki.client(None, None)).unwrap();
    s.write_all(&requests(b"anon")).unwrap();
    read_frames(&mut s, 3);
    let (_, body) = gw.get("/devices");
    let devices: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    assert!(devices[0]["device_id"].is_null());
    assert_eq!(devices[0]["tls_version"], "TLSv1.3");
    // TLS 1.2 is below the minimum.
    assert!(
        gw.connect(&pki.client(None, Some(TlsVersion::Tls12)))
            .is_err()
    );
}

#[test]
fn gateways_sharing_a_ticket_key_file_resume_each_others_sessions() {
    let pki = pki();
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("tickets.key");
    let mut bytes = TicketKey::generate().unwrap().to_bytes().to_vec();
    bytes.extend(TicketKey::generate().unwrap().to_bytes());
    std::fs::write(&keys, &bytes).unwrap();
    let with_keys = |p: &Path| {
        let mut c = pki.config();
        c.tickets = TicketSource::File {
            path: p.to_owned(),
            reload_every: Duration::from_secs(60),
        };
        c
    };
    let first = Running::start(with_keys(&keys));
    let second = Running::start(with_keys(&keys));
    // A gateway with other keys: no resumption there.
    let other_keys = dir.path().join("other.key");
    std::fs::write(&other_keys, TicketKey::generate().unwrap().to_bytes()).unwrap();
    let third = Running::start(with_keys(&other_keys));
    for version in [TlsVersion::Tls13, TlsVersion::Tls12] {
        let client = pki.client(Some(&pki.device), Some(version));
        let mut a = first.connect(&client).unwrap();
        a.write_all(&requests(b"first")).unwrap();
        read_frames(&mut a, 3); // the TLS 1.3 tickets arrive with the replies
        assert!(!a.session().is_resumed());
        let mut b = second.connect(&client).unwrap();
        b.write_all(&requests(b"second")).unwrap();
        read_frames(&mut b, 3);
        assert!(
            b.session().is_resumed(),
            "{version:?}: not resumed on the second gateway"
        );
        let c = third.connect(&client).unwrap();
        assert!(
            !c.session().is_resumed(),
            "{version:?}: resumed with other keys"
        );
    }
    assert_eq!(second.prometheus()["tether_handshakes_resumed_total"], 2.0);
    let (_, body) = second.get("/devices");
    let devices: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    assert!(
        devices
            .iter()
            .all(|d| d["resumed"] == true && d["device_id"] == "device-1")
    );
}

/// Two gateways on one TLS port with `reuse_port` (as two `tether serve --reuse-port`
/// processes): the kernel spreads devices over both, every device is served, and a device
/// whose session was made on one resumes wherever it lands (shared ticket keys). Without the
/// option the second bind finds the port in use; with the DTLS listener on the TLS port the
/// option is refused by name.
#[test]
fn gateways_sharing_one_port_with_reuse_port_split_the_devices() {
    let pki = pki();
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("tickets.key");
    std::fs::write(&keys, TicketKey::generate().unwrap().to_bytes()).unwrap();
    let config = |port: u16, reuse_port: bool| {
        let mut c = pki.config();
        c.listen = SocketAddr::from(([127, 0, 0, 1], port));
        c.reuse_port = reuse_port;
        c.dtls = DtlsListen::At("127.0.0.1:0".parse().unwrap());
        c.tickets = TicketSource::File {
            path: keys.clone(),
            reload_every: Duration::from_secs(60),
        };
        c
    };
    let first = Running::start(config(0, true));
    let port = first.tls.port();
    let second = Running::start(config(port, true));
    assert_eq!(second.tls, first.tls);

    let client = pki.client(Some(&pki.device), Some(TlsVersion::Tls13));
    let mut resumed = 0;
    for i in 0..40u32 {
        let mut s = first.connect(&client).unwrap();
        let tag = format!("device {i}");
        let before = now_ms();
        s.write_all(&requests(tag.as_bytes())).unwrap();
        check_replies(tag.as_bytes(), &read_frames(&mut s, 3), before);
        resumed += usize::from(s.session().is_resumed());
        s.close().unwrap();
    }
    let served = |gw: &Running| gw.prometheus()["tether_handshakes_total{result=\"ok\"}"];
    let (a, b) = (served(&first), served(&second));
    assert_eq!(a + b, 40.0);
    // Spread by the kernel's hash of the 4-tuple: all 40 on one side has odds of 2^-39.
    assert!(a > 0.0 && b > 0.0, "{a} and {b}");
    // Every connection after the first resumed, on either gateway.
    assert_eq!(resumed, 39);

    // Without the option, a port in use is still an error...
    let taken = bind_error(config(port, false));
    assert!(taken.contains("in use"), "{taken}");
    // ...and the DTLS listener on a shared TLS port is refused, saying why.
    let mut same = config(port, true);
    same.dtls = DtlsListen::SameAsTls;
    let refused = bind_error(same);
    assert!(
        refused.contains("reuse_port") && refused.contains("DTLS listener off"),
        "{refused}"
    );
}

/// A renewed server certificate written over the files goes in force for new handshakes
/// without a restart; an open session keeps working; a bad key file or a key that does not
/// match the certificate keeps the certificate in force and is counted.
#[test]
fn a_renewed_server_certificate_goes_in_force_without_a_restart() {
    let pki = pki();
    let dir = tempfile::tempdir().unwrap();
    let (config, cert, key) = pki.with_identity_files(pki.config(), dir.path());
    let gw = Running::start(config);
    // Full handshakes only: a resumed session reports the certificate of the session it
    // resumes.
    let d = &pki.device;
    let client = ClientConfig::builder(pki.trust())
        .identity(Identity::from_pem(d.cert_pem.as_bytes(), d.key_pem.as_bytes()).unwrap())
        .resumption(false)
        .build()
        .unwrap();
    let seen = |gw: &Running| {
        let s = gw.connect(&client).unwrap();
        s.session().peer_certificates().unwrap()[0].to_vec()
    };
    let reloads = |gw: &Running, result: &str| {
        gw.prometheus()
            .get(&format!(
                "tether_certificate_reloads_total{{result=\"{result}\"}}"
            ))
            .copied()
            .unwrap_or(-1.0)
    };
    assert_eq!(seen(&gw), pki.server.cert_der);
    let expiry = |c: &Issued| {
        tether_pki::describe(&c.cert_der)
            .unwrap()
            .not_after
            .unix_timestamp() as f64
    };
    assert_eq!(
        gw.prometheus()["tether_certificate_expiry_timestamp_seconds"],
        expiry(&pki.server)
    );
    let mut open = gw.connect(&client).unwrap();

    let renewed = pki.renewed_server(90);
    std::fs::write(&cert, &renewed.cert_pem).unwrap();
    std::fs::write(&key, &renewed.key_pem).unwrap();
    wait_until("the renewed certificate", Duration::from_secs(10), || {
        seen(&gw) == renewed.cert_der
    });
    assert_eq!(reloads(&gw, "installed"), 1.0);
    assert_eq!(reloads(&gw, "failed"), 0.0);
    assert_eq!(
        gw.prometheus()["tether_certificate_expiry_timestamp_seconds"],
        expiry(&renewed)
    );
    // The session made before the renewal goes on.
    open.write_all(&requests(b"still here")).unwrap();
    assert_eq!(read_frames(&mut open, 3)[0].body, b"still here");

    // Not a key: the renewed certificate stays in force.
    std::fs::write(&key, "not a key\n").unwrap();
    wait_until("a failed reload", Duration::from_secs(10), || {
        reloads(&gw, "failed") >= 1.0
    });
    assert_eq!(seen(&gw), renewed.cert_der);
    // A certificate with somebody else's key (the first one's): refused as well.
    let third = pki.renewed_server(30);
    std::fs::write(&cert, &third.cert_pem).unwrap();
    std::fs::write(&key, &renewed.key_pem).unwrap();
    // Two failures more: at least one attempt read the new pair twice.
    let failed = reloads(&gw, "failed");
    wait_until("a refused pair", Duration::from_secs(10), || {
        reloads(&gw, "failed") >= failed + 2.0
    });
    assert_eq!(seen(&gw), renewed.cert_der);
    assert_eq!(reloads(&gw, "installed"), 1.0);
}

/// A device CA added to the CA file (a CA rotation) is trusted for new handshakes without a
/// restart; devices of the first CA still connect; a CA file with no certificate in it keeps
/// the CAs in force.
#[test]
fn a_device_ca_added_to_the_ca_file_is_trusted_without_a_restart() {
    let pki = pki();
    let dir = tempfile::tempdir().unwrap();
    let (mut config, _, _) = pki.with_identity_files(pki.config(), dir.path());
    let ca_file = dir.path().join("devices-ca.pem");
    std::fs::write(&ca_file, pki.ca.cert_pem()).unwrap();
    config.ca_file = Some(ca_file.clone());
    let gw = Running::start(config);
    let new_ca = Ca::init(KeyKind::EcdsaP256, "next device CA").unwrap();
    let newcomer = new_ca
        .issue_client("device-2", &IssueOptions::default())
        .unwrap();
    let served = |device: &Issued| {
        gw.connect(&pki.client(Some(device), None))
            .and_then(|mut s| {
                s.write_all(&requests(b"x"))?;
                let mut b = [0u8; 64];
                s.read(&mut b)
            })
            .is_ok_and(|n| n > 0)
    };
    assert!(served(&pki.device));
    assert!(
        !served(&newcomer),
        "a device of a CA not in the file was served"
    );

    std::fs::write(
        &ca_file,
        format!("{}{}", pki.ca.cert_pem(), new_ca.cert_pem()),
    )
    .unwrap();
    wait_until("the new device CA", Duration::from_secs(10), || {
        served(&newcomer)
    });
    assert!(served(&pki.device));

    // No certificate in the file: refused, both CAs stay trusted.
    std::fs::write(&ca_file, "nothing here\n").unwrap();
    let reloads = |result: &str| {
        gw.prometheus()[&format!("tether_certificate_reloads_total{{result=\"{result}\"}}")]
    };
    wait_until("a failed reload", Duration::from_secs(10), || {
        reloads("failed") >= 1.0
    });
    assert!(served(&newcomer) && served(&pki.device));
    assert_eq!(reloads("installed"), 1.0);
}

#[test]
fn a_rewritten_ticket_key_file_is_installed_while_running() {
    let pki = pki();
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = (
        TicketKey::generate().unwrap(),
        TicketKey::generate().unwrap(),
    );
    let shared = dir.path().join("tickets.key");
    std::fs::write(&shared, old.to_bytes()).unwrap();
    let only_new = dir.path().join("new.key");
    std::fs::write(&only_new, new.to_bytes()).unwrap();
    let with_keys = |p: &Path| {
        let mut c = pki.config();
        c.tickets = TicketSource::File {
            path: p.to_owned(),
            reload_every: Duration::from_millis(100),
        };
        c
    };
    let first = Running::start(with_keys(&shared));
    let second = Running::start(with_keys(&only_new));
    // The fleet rotates: the new key first, the old one second.
    let mut rotated = new.to_bytes().to_vec();
    rotated.extend(old.to_bytes());
    std::fs::write(&shared, rotated).unwrap();
    thread::sleep(Duration::from_millis(600));
    // Tickets the first gateway seals now open on a gateway that knows only the new key.
    let client = pki.device_client();
    let mut a = first.connect(&client).unwrap();
    a.write_all(&requests(b"after rotation")).unwrap();
    read_frames(&mut a, 3);
    let b = second.connect(&client).unwrap();
    assert!(
        b.session().is_resumed(),
        "the rewritten key file was not installed"
    );
}

#[test]
fn openssl_s_client_talks_raw_frames_tls12_and_tls13() {
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
    let gw = Running::start(pki.config());
    for version in [testpeers::Version::Tls12, testpeers::Version::Tls13] {
        let mut peer = testpeers::openssl_s_client(
            gw.tls.port(),
            &testpeers::SClientOpts {
                ca_file: Some(ca.clone()),
                cert: Some(cert.clone()),
                key: Some(key.clone()),
                servername: Some("localhost".into()),
                verify_hostname: Some("localhost".into()),
                version: Some(version),
                quiet: true,
                ..Default::default()
            },
        )
        .unwrap();
        // ECHO "ping" and REVERSE "abc", as raw bytes on s_client's stdin.
        let mut wire = Vec::new();
        Frame::new(FrameType::Echo, b"ping".to_vec()).encode_into(&mut wire);
        Frame::new(FrameType::Reverse, b"abc".to_vec()).encode_into(&mut wire);
        peer.send(&wire).unwrap();
        // The replies are printed raw on stdout: header bytes, then the bodies.
        peer.wait_for_output("cba", Duration::from_secs(20))
            .unwrap();
        let out = peer.stdout_so_far().into_bytes();
        let mut expected = Vec::new();
        Frame::new(FrameType::Echo, b"ping".to_vec()).encode_into(&mut expected);
        Frame::new(FrameType::Reverse, b"cba".to_vec()).encode_into(&mut expected);
        assert!(
            out.windows(expected.len())
                .any(|w| w == expected.as_slice()),
            "{version:?}: replies not found in s_client's output {out:?}"
        );
    }
    let m = gw.prometheus();
    assert_eq!(m["tether_handshakes_total{result=\"ok\"}"], 2.0);
}
