//! `DtlsSocket` over real UDP sockets on 127.0.0.1: tether <-> tether in DTLS 1.2 and 1.3 (no
//! packaged peer speaks 1.3), both roles, with client certificates; through a lossy UDP proxy
//! (10% dropped, some duplicated and reordered, seeded) handshakes complete by retransmission,
//! every record that arrives is intact and arrives at most once, and an ECHO loop with
//! application-level retry completes; non-blocking use; the MTU limit; the handshake timeout.
//!
//! Every thread is joined, every wait has a deadline (the sockets' handshake and I/O timeouts).

#![cfg(feature = "dtls")]

mod dtls_support;
mod support;

use std::collections::HashSet;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use tether::dtls::{self, DtlsSocket, DtlsVersion, UdpDtlsSocket};
use tether::error::{CertificateError, Timeout, TransportError};
use tether::net::StdClock;
use tether::{ClientAuth, Error};

use dtls_support::*;
use support::{Joined, Pki, spawn};

/// A tether DTLS server on 127.0.0.1 serving one peer with `f` on its own thread.
fn server<T: Send + 'static>(
    config: dtls::ServerConfig,
    f: impl FnOnce(Result<UdpDtlsSocket, Error>) -> T + Send + 'static,
) -> (SocketAddr, Joined<T>) {
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = udp.local_addr().unwrap();
    let joined = spawn("dtls-server", move || f(dtls::accept_one(udp, &config)));
    (addr, joined)
}

/// The records an echo server received, or its error.
type EchoResult = Result<Vec<Vec<u8>>, Error>;

/// An echo server: sends every record back until a `bye` record, close_notify, or `idle`
/// without records (close_notify is sent once and may be lost: clients say `bye` a few times
/// first). Returns the records it received (without `bye`).
fn echo_server(config: dtls::ServerConfig, idle: Duration) -> (SocketAddr, Joined<EchoResult>) {
    server(config, move |r| {
        let mut sock = r?;
        sock.set_io_timeout(Some(idle));
        let mut got = Vec::new();
        let mut buf = vec![0u8; 65536];
        loop {
            match sock.recv(&mut buf) {
                Ok(0) => break,
                Ok(n) if &buf[..n] == b"bye" => break,
                Ok(n) => {
                    got.push(buf[..n].to_vec());
                    sock.send(&buf[..n])?;
                }
                Err(Error::Timeout(Timeout::Io)) => break,
                Err(e) => return Err(e),
            }
        }
        let _ = sock.close();
        Ok(got)
    })
}

/// Ends an echo session: `bye` a few times (any one ends the server), then close_notify.
fn bye(mut sock: UdpDtlsSocket) {
    for _ in 0..3 {
        let _ = sock.send(b"bye");
    }
    let _ = sock.close();
}

fn client_to(addr: SocketAddr, config: &dtls::ClientConfig) -> Result<UdpDtlsSocket, Error> {
    dtls::connect_named(&addr.to_string(), "localhost", config)
}

#[test]
fn tether_to_tether_each_version_both_roles_with_client_certificates() {
    let pki = Pki::new();
    for (c, s, expect) in [
        (V13, V13, DtlsVersion::Dtls13),
        (BOTH, BOTH, DtlsVersion::Dtls13),
        (V12, BOTH, DtlsVersion::Dtls12),
        (BOTH, V12, DtlsVersion::Dtls12),
    ] {
        for mtls in [false, true] {
            let (addr, srv) = server(server_config(&pki, s, mtls), |r| {
                let mut sock = r.unwrap();
                sock.set_io_timeout(Some(Duration::from_secs(10)));
                let mut buf = [0u8; 256];
                let n = sock.recv(&mut buf).unwrap();
                let line = buf[..n].to_vec();
                sock.send(b"hello from the tether server").unwrap();
                // The client closes: recv reads 0.
                assert_eq!(sock.recv(&mut buf).unwrap(), 0);
                (
                    line,
                    sock.session().version(),
                    sock.session().peer_certificate().map(|c| c.to_vec()),
                )
            });
            let mut sock = client_to(addr, &client_config(&pki, c, mtls)).unwrap();
            sock.set_io_timeout(Some(Duration::from_secs(10)));
            assert_eq!(sock.session().version(), Some(expect));
            sock.send(b"hello from the tether client").unwrap();
            let mut buf = [0u8; 256];
            let n = sock.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"hello from the tether server");
            sock.close().unwrap();
            let (line, version, peer) = srv.join();
            assert_eq!(line, b"hello from the tether client");
            assert_eq!(version, Some(expect), "{c:?} {s:?}");
            assert_eq!(peer.as_deref(), mtls.then(|| pki.client.der()));
        }
    }
}

/// The ECHO loop of the acceptance test: `count` exchanges, each retried by the application
/// until its reply comes back. Checks that every record arriving at either end is intact and
/// new (DTLS drops the proxy's duplicates as replays).
fn echo_through_proxy(versions: (DtlsVersion, DtlsVersion), seed: u64, count: u32) {
    let pki = Pki::new();
    let server_config = dtls::ServerConfig::builder(pki.server.identity())
        .versions(versions.0, versions.1)
        .client_auth(ClientAuth::Required(pki.trust()))
        .retransmission(Duration::from_millis(100), 8)
        .build()
        .unwrap();
    let (addr, srv) = echo_server(server_config, Duration::from_secs(3));
    let proxy = LossyProxy::start(addr, Faults::LOSSY, seed);
    let client_config = client_builder(pki.trust(), versions)
        .identity(pki.client.identity())
        .retransmission(Duration::from_millis(100), 8)
        .build()
        .unwrap();
    let start = Instant::now();
    let mut sock = client_to(proxy.addr, &client_config)
        .unwrap_or_else(|e| panic!("{versions:?} seed {seed}: handshake through the proxy: {e}"));
    let handshake = start.elapsed();

    // Each request is "ECHO id attempt payload" with a payload made from the id: a reply
    // names its request, and a changed byte would show.
    let request = |id: u32, attempt: u32| {
        let payload = "0123456789abcdef".repeat(1 + (id as usize * 7) % 60);
        format!("ECHO {id} {attempt} {payload}").into_bytes()
    };
    let mut replies_seen = HashSet::new();
    let mut retries = 0;
    let mut buf = vec![0u8; 65536];
    let loop_deadline = Instant::now() + Duration::from_secs(20);
    for id in 0..count {
        let mut attempt = 0;
        'attempts: loop {
            assert!(Instant::now() < loop_deadline, "ECHO loop too slow at {id}");
            sock.send(&request(id, attempt)).unwrap();
            sock.set_io_timeout(Some(Duration::from_millis(150)));
            loop {
                match sock.recv(&mut buf) {
                    Ok(n) => {
                        let reply = buf[..n].to_vec();
                        let text = String::from_utf8(reply.clone()).expect("intact reply");
                        let mut parts = text.splitn(4, ' ');
                        let (_, rid, ratt) = (parts.next(), parts.next(), parts.next());
                        let (rid, ratt): (u32, u32) = (
                            rid.unwrap().parse().unwrap(),
                            ratt.unwrap().parse().unwrap(),
                        );
                        assert_eq!(reply, request(rid, ratt), "a reply arrived changed");
                        assert!(replies_seen.insert((rid, ratt)), "a reply arrived twice");
                        if rid == id {
                            break 'attempts;
                        }
                        // A late reply to an earlier attempt: keep waiting for ours.
                    }
                    Err(Error::Timeout(Timeout::Io)) => {
                        attempt += 1;
                        retries += 1;
                        continue 'attempts;
                    }
                    Err(e) => panic!("{versions:?}: {e}"),
                }
            }
        }
    }
    bye(sock);
    let got = srv.join().unwrap();
    let mut seen = HashSet::new();
    for r in &got {
        let text = String::from_utf8(r.clone()).expect("intact request");
        let mut parts = text.splitn(4, ' ');
        let _ = parts.next();
        let id: u32 = parts.next().unwrap().parse().unwrap();
        let attempt: u32 = parts.next().unwrap().parse().unwrap();
        assert_eq!(r, &request(id, attempt), "a request arrived changed");
        assert!(seen.insert((id, attempt)), "a request arrived twice");
    }
    let dropped = proxy.dropped.load(std::sync::atomic::Ordering::SeqCst);
    assert!(dropped > 0, "the proxy dropped nothing");
    support::note(&format!(
        "{versions:?} seed {seed}: handshake {:.0} ms, {count} exchanges, {retries} retries, \
         {dropped} datagrams dropped",
        handshake.as_secs_f64() * 1e3
    ));
}

#[test]
fn echo_through_a_lossy_proxy_dtls12() {
    echo_through_proxy(V12, 12, 60);
}

#[test]
fn echo_through_a_lossy_proxy_dtls13() {
    echo_through_proxy(V13, 13, 60);
}

/// Handshakes under heavier faults (20% dropped, 10% duplicated, 20% reordered), each followed
/// by one echo with application retry (a DTLS 1.2 server whose last flight was lost finishes
/// when the client's retransmission reaches it, so the server keeps reading).
#[test]
fn handshakes_through_a_lossy_proxy() {
    let pki = Pki::new();
    let faults = Faults {
        drop: 20,
        duplicate: 10,
        reorder: 20,
    };
    for versions in [V12, V13] {
        for seed in 100..104u64 {
            let server_config = dtls::ServerConfig::builder(pki.server.identity())
                .versions(versions.0, versions.1)
                .retransmission(Duration::from_millis(50), 10)
                .build()
                .unwrap();
            // The server outlives the client's handshake deadline (10 s): under heavy loss the
            // client may complete long after the server did (DTLS 1.2: the server's last
            // flight was lost), and `bye` ends it at once otherwise.
            let (addr, srv) = echo_server(server_config, Duration::from_secs(11));
            let proxy = LossyProxy::start(addr, faults, seed);
            let config = client_builder(pki.trust(), versions)
                .retransmission(Duration::from_millis(50), 10)
                .build()
                .unwrap();
            let mut sock = client_to(proxy.addr, &config)
                .unwrap_or_else(|e| panic!("{versions:?} seed {seed}: {e}"));
            assert_eq!(sock.session().version(), Some(versions.0));
            sock.set_io_timeout(Some(Duration::from_millis(150)));
            let mut buf = [0u8; 64];
            let deadline = Instant::now() + Duration::from_secs(10);
            let echoed = loop {
                if Instant::now() >= deadline {
                    drop(proxy);
                    panic!(
                        "{versions:?} seed {seed}: no echo; server: {:?}",
                        srv.join()
                    );
                }
                sock.send(b"ping").unwrap();
                match sock.recv(&mut buf) {
                    Ok(n) => break buf[..n].to_vec(),
                    Err(Error::Timeout(Timeout::Io)) => continue,
                    Err(e) => panic!("{versions:?} seed {seed}: {e}"),
                }
            };
            assert_eq!(echoed, b"ping");
            bye(sock);
            let got = srv.join().unwrap();
            assert!(got.iter().all(|r| r == b"ping"));
        }
    }
}

#[test]
fn nonblocking_client() {
    let pki = Pki::new();
    for v in [V12, V13] {
        let (addr, srv) = echo_server(server_config(&pki, v, false), Duration::from_secs(5));
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        udp.connect(addr).unwrap();
        let config = client_config(&pki, v, false);
        let mut sock = DtlsSocket::client(udp, &config, "localhost", StdClock::new()).unwrap();
        sock.set_nonblocking(true).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut would_block = 0;
        let mut poll = |r: Result<(), Error>| match r {
            Ok(()) => true,
            Err(e) if e.is_would_block() => {
                would_block += 1;
                assert!(Instant::now() < deadline, "no progress");
                std::thread::sleep(Duration::from_millis(1));
                false
            }
            Err(e) => panic!("{v:?}: {e}"),
        };
        while !poll(sock.handshake()) {}
        assert_eq!(sock.session().version().map(|_| ()), Some(()));
        let mut buf = [0u8; 128];
        // Nothing sent yet: recv returns at once.
        assert!(sock.recv(&mut buf).unwrap_err().is_would_block());
        while !poll(sock.send(b"non-blocking hello")) {}
        let n = loop {
            match sock.recv(&mut buf) {
                Ok(n) => break n,
                Err(e) => {
                    poll(Err(e));
                }
            }
        };
        assert_eq!(&buf[..n], b"non-blocking hello");
        while !poll(sock.close()) {}
        // (How often a call would block depends on scheduling: a loaded machine can have every
        // answer waiting before the next call. The would-block above, with nothing sent, is
        // the deterministic check.)
        let _ = would_block;
        assert_eq!(srv.join().unwrap(), vec![b"non-blocking hello".to_vec()]);
    }
}

#[test]
fn records_larger_than_the_mtu_are_refused_and_the_socket_goes_on() {
    let pki = Pki::new();
    let (addr, srv) = echo_server(server_config(&pki, V13, false), Duration::from_secs(5));
    let config = client_builder(pki.trust(), V13).mtu(500).build().unwrap();
    let mut sock = client_to(addr, &config).unwrap();
    sock.set_io_timeout(Some(Duration::from_secs(5)));
    let max = sock.session().max_send_size();
    let err = sock.send(&vec![b'x'; max + 1]).unwrap_err();
    assert!(
        matches!(&err, Error::Transport(TransportError::Other(m)) if m.contains("MTU of 500")),
        "{err}"
    );
    let io: std::io::Error = err.into();
    assert!(io.to_string().contains("never splits or truncates"));
    sock.send(&vec![b'y'; max]).unwrap();
    let mut buf = vec![0u8; 2048];
    assert_eq!(sock.recv(&mut buf).unwrap(), max);
    // A buffer too small for the record: refused, and the record is kept.
    let mut small = [0u8; 8];
    sock.send(b"0123456789").unwrap();
    assert_eq!(
        sock.recv(&mut small),
        Err(Error::BufferTooSmall { needed: 10 })
    );
    assert_eq!(sock.recv(&mut buf).unwrap(), 10);
    sock.close().unwrap();
    assert_eq!(srv.join().unwrap().len(), 2);
}

#[test]
fn a_silent_peer_times_out_the_handshake() {
    let pki = Pki::new();
    // Bound but never answering.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let config = client_builder(pki.trust(), BOTH)
        .handshake_timeout(Duration::from_millis(800))
        .retransmission(Duration::from_millis(100), 10)
        .build()
        .unwrap();
    let start = Instant::now();
    let err = client_to(silent.local_addr().unwrap(), &config).unwrap_err();
    assert_eq!(err, Error::Timeout(Timeout::Handshake));
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(700) && took < Duration::from_secs(3),
        "{took:?}"
    );
    // It retransmitted meanwhile.
    silent.set_nonblocking(true).unwrap();
    let mut n = 0;
    let mut buf = [0u8; 4096];
    while silent.recv_from(&mut buf).is_ok() {
        n += 1;
    }
    assert!(n >= 3, "{n} datagrams");
}

#[test]
fn a_refused_server_certificate_fails_the_socket_and_tells_the_server() {
    let pki = Pki::new();
    let other = Pki::with_ca_name("another CA");
    let (addr, srv) = server(server_config(&pki, V12, false), |r| r.map(|_| ()));
    let err = client_to(addr, &client_config(&other, V12, false)).unwrap_err();
    assert_eq!(err, Error::Certificate(CertificateError::UnknownIssuer));
    let err = srv.join().unwrap_err();
    assert!(
        matches!(err, Error::Handshake(tether::error::HandshakeError::AlertReceived(a)) if a.0 == 48),
        "{err}"
    );
}
