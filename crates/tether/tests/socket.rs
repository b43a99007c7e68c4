//! `TlsSocket` over real sockets on 127.0.0.1: every failure category with the right error and
//! no application data delivered, timeouts, truncation, the `io::Error` mapping, and one thread
//! driving 200 non-blocking clients. Then `TlsSocket` over an in-memory transport with an
//! injected clock: non-blocking steps, partial writes, timeouts fired by moving the clock.
//!
//! Certificates are made at test time by `tether_pki`; real peers are started through
//! `testpeers` (killed on drop); every thread is joined or bounded by a deadline.

mod support;

use std::collections::VecDeque;
use std::io::{ErrorKind, Read as _};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use testpeers::{Peer, SClientOpts, SServerOpts, free_port, openssl_s_client, openssl_s_server};
use tether::TlsVersion::{Tls12, Tls13};
use tether::error::{
    Alert, CertificateError, HandshakeError, Timeout, TransportError, VersionError,
};
use tether::net::{FileTofuStore, StdClock, TcpTlsSocket};
use tether::socket::{TlsSocket, Transport, TransportMode};
use tether::{ClientConfig, Error, Instant, ServerConfig, TlsVersion, Trust};
use tether_pki::{IssueOptions, date};

use support::*;

// ---------------------------------------------------------------------------------------------
// Helpers

/// `openssl s_server` (stdio mode) presenting `files`.
fn s_server(files: &Files, opts: SServerOpts) -> (Peer, u16) {
    let port = free_port();
    let peer = openssl_s_server(port, &files.cert, &files.key, &opts).unwrap();
    (peer, port)
}

/// Reads from a socket whose handshake must fail: the read (which runs the handshake) returns
/// an error, never data, and so does every later read and write.
fn read_fails<T: Transport, C: tether::time::Clock>(sock: &mut TlsSocket<T, C>) -> Error {
    let mut buf = [0u8; 1024];
    let err = match sock.read(&mut buf) {
        Ok(n) => panic!(
            "read returned Ok({n}) {:?} instead of failing",
            String::from_utf8_lossy(&buf[..n])
        ),
        Err(e) => e,
    };
    match sock.read(&mut buf) {
        Ok(n) => panic!("second read returned Ok({n}) after {err:?}"),
        Err(again) => assert_eq!(again, err, "a failed socket must stay failed"),
    }
    assert!(sock.write(b"late").is_err(), "write after {err:?}");
    err
}

/// One line each way over an established socket to `openssl s_server` in stdio mode.
fn exchange_with_s_server(sock: &mut TcpTlsSocket, server: &mut Peer, tag: &str) {
    sock.write_all(format!("from tether {tag}\n").as_bytes())
        .unwrap();
    server
        .wait_for_output(&format!("from tether {tag}"), WAIT)
        .unwrap();
    server.send_line(&format!("from openssl {tag}")).unwrap();
    assert_eq!(read_line(sock).unwrap(), format!("from openssl {tag}\n"));
}

fn elapsed_ms(start: std::time::Instant) -> u128 {
    start.elapsed().as_millis()
}

// ---------------------------------------------------------------------------------------------
// Certificate, pin, TOFU and version failures against openssl s_server

#[test]
fn unknown_ca_is_a_certificate_error() {
    if !testpeers::skip_or_fail("openssl") {
        return;
    }
    let pki = Pki::new();
    // The server's certificate comes from a second CA the client does not trust.
    let other = Pki::with_ca_name("another test CA");
    let (server, port) = s_server(&other.server, SServerOpts::default());
    let config = pki.client_config(BOTH, false);
    let mut sock = client_socket(port, &config, "localhost");
    let err = read_fails(&mut sock);
    assert_eq!(err, Error::Certificate(CertificateError::UnknownIssuer));
    assert_eq!(std::io::Error::from(err).kind(), ErrorKind::InvalidData);
    // tether told the server why (alert 48, unknown_ca).
    server.wait_for_output("alert unknown ca", WAIT).unwrap();
}

/// Two CAs made with the same common name (every `tether pki init` without `--cn` makes a
/// "tether CA"): webpki finds the trusted root by name, then its signature check fails, so
/// the reason is `BadSignature`, not `UnknownIssuer`; the message names the likely cause.
#[test]
fn unrelated_ca_with_the_same_name_is_refused() {
    if !testpeers::skip_or_fail("openssl") {
        return;
    }
    let pki = Pki::new();
    let same_name = Pki::new();
    let (_server, port) = s_server(&same_name.server, SServerOpts::default());
    let config = pki.client_config(BOTH, false);
    let mut sock = client_socket(port, &config, "localhost");
    let err = read_fails(&mut sock);
    assert_eq!(err, Error::Certificate(CertificateError::BadSignature));
    assert!(
        err.to_string().contains("different CA with the same name"),
        "{err}"
    );
}

#[test]
fn expired_certificate_is_a_certificate_error() {
    if !testpeers::skip_or_fail("openssl") {
        return;
    }
    let pki = Pki::new();
    let expired = pki.issue_server(
        "expired",
        &["localhost", "127.0.0.1"],
        &IssueOptions {
            not_before: Some(date(2020, 1, 1).unwrap()),
            not_after: Some(date(2020, 12, 31).unwrap()),
            ..IssueOptions::default()
        },
    );
    let (server, port) = s_server(&expired, SServerOpts::default());
    let config = pki.client_config(BOTH, false);
    let mut sock = client_socket(port, &config, "localhost");
    assert_eq!(
        read_fails(&mut sock),
        Error::Certificate(CertificateError::Expired)
    );
    server
        .wait_for_output("alert certificate expired", WAIT)
        .unwrap();
}

#[test]
fn hostname_and_ip_mismatch_are_name_errors() {
    if !testpeers::skip_or_fail("openssl") {
        return;
    }
    let pki = Pki::new();
    // Valid for 127.0.0.1 only: no DNS name at all.
    let ip_only = pki.issue_server("ip-only", &["127.0.0.1"], &IssueOptions::default());
    let (mut server, port) = s_server(&ip_only, SServerOpts::default());
    let config = pki.client_config(BOTH, false);

    // Control: the name the certificate is for works, over the same server.
    let mut sock = connect(port, &config, "127.0.0.1").unwrap();
    exchange_with_s_server(&mut sock, &mut server, "control");
    sock.close().unwrap();

    // A DNS name the certificate does not list.
    let mut sock = client_socket(port, &config, "wrong.example");
    assert_eq!(
        read_fails(&mut sock),
        Error::Certificate(CertificateError::NameMismatch {
            expected: "wrong.example".into()
        })
    );
    // Another IP address on the same 127.0.0.1 socket.
    let err = match connect(port, &config, "127.0.0.2") {
        Ok(_) => panic!("connected as 127.0.0.2 with a certificate for 127.0.0.1"),
        Err(e) => e,
    };
    assert_eq!(
        err,
        Error::Certificate(CertificateError::NameMismatch {
            expected: "127.0.0.2".into()
        })
    );
    assert!(err.to_string().contains("127.0.0.2"), "{err}");
    // And "localhost", which resolves here but is not in the certificate either.
    let mut sock = client_socket(port, &config, "localhost");
    assert!(matches!(
        read_fails(&mut sock),
        Error::Certificate(CertificateError::NameMismatch { .. })
    ));
    server
        .wait_for_output("alert bad certificate", WAIT)
        .unwrap();
}

#[test]
fn pin_mismatch_with_and_without_a_ca() {
    if !testpeers::skip_or_fail("openssl") {
        return;
    }
    let pki = Pki::new();
    let (mut server, port) = s_server(&pki.server, SServerOpts::default());
    let right = pki.server.pin();
    let wrong = pki.client.pin();
    assert_ne!(right, wrong);

    // Controls: the right pin passes, alone and on top of the CA.
    for trust in [
        Trust::new().with_pin(right),
        pki.trust().with_pin(wrong).with_pin(right),
    ] {
        let config = ClientConfig::builder(trust)
            .resumption(false)
            .build()
            .unwrap();
        let mut sock = connect(port, &config, "localhost").unwrap();
        exchange_with_s_server(&mut sock, &mut server, "pinned");
        sock.close().unwrap();
        server.wait_for_output("DONE", WAIT).unwrap();
    }

    for trust in [Trust::new().with_pin(wrong), pki.trust().with_pin(wrong)] {
        let config = ClientConfig::builder(trust).build().unwrap();
        let mut sock = client_socket(port, &config, "localhost");
        let err = read_fails(&mut sock);
        assert_eq!(err, Error::PinMismatch { presented: right });
        assert!(err.to_string().contains(&right.to_string()), "{err}");
        assert_eq!(std::io::Error::from(err).kind(), ErrorKind::InvalidData);
    }
}

#[test]
fn tofu_key_change_is_refused_and_the_store_kept() {
    if !testpeers::skip_or_fail("openssl") {
        return;
    }
    let pki = Pki::new();
    let store_path = pki.dir.path().join("known_hosts");
    let tofu_config = || {
        let store = Arc::new(FileTofuStore::new(&store_path));
        // No resumption: every connection shows its certificate to the verifier.
        ClientConfig::builder(Trust::new().with_tofu(store))
            .resumption(false)
            .build()
            .unwrap()
    };
    let config = tofu_config();
    let key_a = pki.server.pin();

    // Server A: first use stores its key; a second connection matches it.
    let (mut server_a, port_a) = s_server(&pki.server, SServerOpts::default());
    for i in 0..2 {
        let mut sock = connect(port_a, &config, "localhost").unwrap();
        exchange_with_s_server(&mut sock, &mut server_a, &format!("A{i}"));
        sock.close().unwrap();
        let text = std::fs::read_to_string(&store_path).unwrap();
        assert_eq!(text, format!("localhost {key_a}\n"));
    }

    // Server B: another key under the same name.
    let other_key = pki.issue_server("b", &["localhost"], &IssueOptions::default());
    let key_b = other_key.pin();
    assert_ne!(key_a, key_b);
    let (_server_b, port_b) = s_server(&other_key, SServerOpts::default());
    let expected = Error::TofuKeyChanged {
        host: "localhost".into(),
        stored: key_a,
        presented: key_b,
    };
    let mut sock = client_socket(port_b, &config, "localhost");
    let err = read_fails(&mut sock);
    assert_eq!(err, expected);
    assert!(err.to_string().contains("localhost"), "{err}");
    // Also with a fresh config over the same file (a restarted client).
    let mut sock = client_socket(port_b, &tofu_config(), "localhost");
    assert_eq!(read_fails(&mut sock), expected);
    // The stored key was not replaced.
    let text = std::fs::read_to_string(&store_path).unwrap();
    assert_eq!(text, format!("localhost {key_a}\n"));
}

#[test]
fn no_version_fallback() {
    if !testpeers::skip_or_fail("openssl") {
        return;
    }
    let pki = Pki::new();
    // A TLS 1.2-only server and a client that requires 1.3, and the other way round.
    for (server_v, client_v) in [(Tls12, Tls13), (Tls13, Tls12)] {
        let (_server, port) = s_server(
            &pki.server,
            SServerOpts {
                version: Some(peer_version(server_v)),
                ..SServerOpts::default()
            },
        );
        let config = pki.client_config(only(client_v), false);
        let mut sock = client_socket(port, &config, "localhost");
        let err = read_fails(&mut sock);
        // OpenSSL answers with a protocol_version alert; tether does not retry lower.
        assert_eq!(
            err,
            Error::Version(VersionError::PeerRefused),
            "server {server_v}, client {client_v}"
        );
        assert_eq!(std::io::Error::from(err).kind(), ErrorKind::Unsupported);
        assert_eq!(sock.session().version(), None);
    }
}

// ---------------------------------------------------------------------------------------------
// Client certificates required but missing

#[test]
fn missing_client_certificate_against_openssl_server() {
    if !testpeers::skip_or_fail("openssl") {
        return;
    }
    let pki = Pki::new();
    for v in VERSIONS {
        let (server, port) = s_server(
            &pki.server,
            SServerOpts {
                version: Some(peer_version(v)),
                client_ca: Some(pki.ca_pem.clone()),
                ..SServerOpts::default()
            },
        );
        let config = pki.client_config(only(v), false);
        let mut sock = client_socket(port, &config, "localhost");
        let err = read_fails(&mut sock);
        // TLS 1.2: handshake_failure during the handshake; TLS 1.3: certificate_required
        // after the client's Finished (the client's handshake had completed).
        let alert = match v {
            Tls12 => 40,
            Tls13 => 116,
        };
        assert_eq!(
            err,
            Error::Handshake(HandshakeError::AlertReceived(Alert(alert))),
            "{v}"
        );
        assert!(err.to_string().contains("client certificate"), "{err}");
        server
            .wait_for_output("peer did not return a certificate", WAIT)
            .unwrap();
    }
}

#[test]
fn missing_client_certificate_at_tether_server() {
    if !testpeers::skip_or_fail("openssl") {
        return;
    }
    let pki = Pki::new();
    for v in VERSIONS {
        // openssl s_client without a certificate.
        let (port, server) = tether_server(pki.server_config(only(v), true), |r| r.err());
        let client = openssl_s_client(
            port,
            &SClientOpts {
                ca_file: Some(pki.ca_pem.clone()),
                version: Some(peer_version(v)),
                ..SClientOpts::default()
            },
        )
        .unwrap();
        assert_eq!(
            server.join(),
            Some(Error::Certificate(CertificateError::Missing)),
            "{v}"
        );
        // rustls' server says why: certificate_required.
        client
            .wait_for_output("SSL alert number 116", WAIT)
            .unwrap();
        drop(client);

        // A tether client without identity: both sides fail, the client with an alert.
        let (port, server) = tether_server(pki.server_config(only(v), true), |r| r.err());
        let config = pki.client_config(only(v), false);
        let mut sock = client_socket(port, &config, "localhost");
        let err = read_fails(&mut sock);
        assert!(
            matches!(err, Error::Handshake(HandshakeError::AlertReceived(_))),
            "{v}: {err:?}"
        );
        assert_eq!(
            server.join(),
            Some(Error::Certificate(CertificateError::Missing)),
            "{v}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Closing: close_notify and truncation

#[test]
fn close_notify_reads_as_zero_and_a_bare_eof_is_truncation() {
    let pki = Pki::new();
    for v in VERSIONS {
        for clean in [true, false] {
            let (port, server) = tether_server(pki.server_config(only(v), false), move |r| {
                let mut sock = r.unwrap();
                sock.write_all(b"last words").unwrap();
                if clean {
                    sock.close().unwrap();
                } else {
                    // Gone without close_notify: the TCP connection just ends.
                    let (tcp, _session) = sock.into_parts();
                    tcp.shutdown(Shutdown::Both).unwrap();
                    drop(tcp);
                }
            });
            let config = pki.client_config(only(v), false);
            let mut sock = connect(port, &config, "localhost").unwrap();
            server.join();
            let mut buf = [0u8; 64];
            let n = sock.read(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"last words");
            if clean {
                assert_eq!(sock.read(&mut buf).unwrap(), 0);
                assert_eq!(sock.read(&mut buf).unwrap(), 0, "EOF stays EOF");
                assert!(sock.session().is_peer_closed());
            } else {
                assert_eq!(sock.read(&mut buf), Err(Error::Truncated), "{v}");
                assert_eq!(sock.read(&mut buf), Err(Error::Truncated), "{v}");
                assert!(!sock.session().is_peer_closed());
            }
        }
    }
}

/// A peer process that dies mid-connection (no close_notify, the kernel closes its socket):
/// the data it sent is delivered, then the read fails as truncated.
#[test]
fn killed_peer_is_truncation() {
    if !testpeers::skip_or_fail("openssl") {
        return;
    }
    let pki = Pki::new();
    for v in VERSIONS {
        let (mut server, port) = s_server(
            &pki.server,
            SServerOpts {
                version: Some(peer_version(v)),
                ..SServerOpts::default()
            },
        );
        let config = pki.client_config(only(v), false);
        let mut sock = connect(port, &config, "localhost").unwrap();
        exchange_with_s_server(&mut sock, &mut server, "before kill");
        server.send_line("last line").unwrap();
        assert_eq!(read_line(&mut sock).unwrap(), "last line\n");
        server.kill();
        let mut buf = [0u8; 64];
        let err = sock.read(&mut buf).unwrap_err();
        assert_eq!(err, Error::Truncated, "{v}");
        assert_eq!(std::io::Error::from(err).kind(), ErrorKind::UnexpectedEof);
    }
}

// ---------------------------------------------------------------------------------------------
// Timeouts

#[test]
fn handshake_timeout_against_a_silent_server() {
    // A listener that never accepts: the kernel completes the TCP handshake, nobody answers.
    let (listener, port) = listen();
    let pki = Pki::new();
    let config = ClientConfig::builder(pki.trust())
        .handshake_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let start = std::time::Instant::now();
    let err = match connect(port, &config, "localhost") {
        Ok(_) => panic!("a silent server completed a handshake"),
        Err(e) => e,
    };
    let ms = elapsed_ms(start);
    assert_eq!(err, Error::Timeout(Timeout::Handshake));
    assert!((900..3000).contains(&ms), "timed out after {ms} ms");
    assert_eq!(std::io::Error::from(err).kind(), ErrorKind::TimedOut);
    drop(listener);
}

#[test]
fn handshake_timeout_against_a_silent_client() {
    let pki = Pki::new();
    let config = ServerConfig::builder(pki.server.identity())
        .handshake_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let (port, server) = tether_server(config, |r| r.err());
    // Connects and says nothing.
    let start = std::time::Instant::now();
    let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let err = server.join();
    let ms = elapsed_ms(start);
    assert_eq!(err, Some(Error::Timeout(Timeout::Handshake)));
    assert!((900..3000).contains(&ms), "timed out after {ms} ms");
    drop(tcp);
}

#[test]
fn io_timeout_leaves_the_connection_usable() {
    let pki = Pki::new();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let (port, server) = tether_server(pki.server_config(BOTH, false), move |r| {
        let mut sock = r.unwrap();
        // Silent until the client has timed out once.
        go_rx.recv_timeout(WAIT).unwrap();
        sock.write_all(b"late reply").unwrap();
        sock.close().unwrap();
    });
    let config = pki.client_config(BOTH, false);
    let mut sock = connect(port, &config, "localhost").unwrap();
    sock.set_io_timeout(Some(Duration::from_millis(300)));
    let start = std::time::Instant::now();
    let mut buf = [0u8; 64];
    assert_eq!(sock.read(&mut buf), Err(Error::Timeout(Timeout::Io)));
    let ms = elapsed_ms(start);
    assert!((250..2000).contains(&ms), "I/O timeout after {ms} ms");
    go_tx.send(()).unwrap();
    sock.set_io_timeout(Some(WAIT));
    assert_eq!(read_to_close(&mut sock).unwrap(), b"late reply");
    server.join();
}

#[test]
fn io_timeout_bounds_a_blocked_write() {
    let pki = Pki::new();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    // A server that completes the handshake and then never reads.
    let (port, server) = tether_server(pki.server_config(BOTH, false), move |r| {
        let sock = r.unwrap();
        let _ = done_rx.recv_timeout(WAIT);
        drop(sock);
    });
    let config = pki.client_config(BOTH, false);
    let mut sock = connect(port, &config, "localhost").unwrap();
    sock.set_io_timeout(Some(Duration::from_millis(300)));
    let chunk = vec![7u8; 16 * 1024];
    let mut sent = 0usize;
    let start = std::time::Instant::now();
    let err = loop {
        match sock.write(&chunk) {
            Ok(n) => sent += n,
            Err(e) => break e,
        }
        assert!(sent < 1 << 30, "1 GiB written to a peer that does not read");
    };
    let ms = elapsed_ms(start);
    // The server may have given up waiting already.
    let _ = done_tx.send(());
    server.join();
    assert_eq!(err, Error::Timeout(Timeout::Io), "after {sent} bytes");
    assert!(ms < 5000, "write timed out after {ms} ms");
}

/// A write that times out must not lose or repeat data: what `write` reported as taken is
/// exactly what the peer gets once it reads again.
#[test]
fn write_timeout_neither_loses_nor_repeats_data() {
    let pki = Pki::new();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    // Reads nothing until told, then everything until close_notify.
    let (port, server) = tether_server(pki.server_config(BOTH, false), move |r| {
        let mut sock = r.unwrap();
        go_rx.recv_timeout(WAIT).unwrap();
        read_to_close(&mut sock).unwrap()
    });
    let config = pki.client_config(BOTH, false);
    let mut sock = connect(port, &config, "localhost").unwrap();
    sock.set_io_timeout(Some(Duration::from_millis(300)));
    // Numbered bytes, so a repeated or missing chunk shows.
    let pattern: Vec<u8> = (0..251u8).collect();
    let data: Vec<u8> = pattern.repeat((32 << 20) / 251);
    let mut taken = 0usize;
    let err = loop {
        match sock.write(&data[taken..]) {
            Ok(n) => taken += n,
            Err(e) => break e,
        }
        assert!(
            taken < data.len(),
            "32 MiB taken by a peer that does not read"
        );
    };
    assert_eq!(err, Error::Timeout(Timeout::Io));
    go_tx.send(()).unwrap();
    // What is still queued goes out now, then close_notify.
    sock.set_io_timeout(Some(WAIT));
    sock.close().unwrap();
    let got = server.join();
    assert_eq!(
        got.len(),
        taken,
        "the peer got what write reported as taken"
    );
    assert!(got == data[..taken], "the bytes differ");
}

// ---------------------------------------------------------------------------------------------
// io::Error mapping

#[test]
fn io_error_kinds_for_would_block_and_truncation() {
    let pki = Pki::new();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let (port, server) = tether_server(pki.server_config(BOTH, false), move |r| {
        let mut sock = r.unwrap();
        go_rx.recv_timeout(WAIT).unwrap();
        sock.write_all(b"data").unwrap();
        let (tcp, _) = sock.into_parts();
        drop(tcp);
    });
    let config = pki.client_config(BOTH, false);
    let mut sock = connect(port, &config, "localhost").unwrap();

    // Non-blocking with nothing to read: WouldBlock, through std::io::Read too.
    sock.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 64];
    let e = std::io::Read::read(&mut sock, &mut buf).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::WouldBlock, "{e}");
    let e = sock.read(&mut buf).unwrap_err();
    assert!(e.is_would_block(), "{e:?}");

    // Then the data, then an EOF without close_notify: UnexpectedEof.
    sock.set_nonblocking(false).unwrap();
    go_tx.send(()).unwrap();
    server.join();
    let mut got = Vec::new();
    let e = sock.read_to_end(&mut got).unwrap_err();
    assert_eq!(got, b"data");
    assert_eq!(e.kind(), ErrorKind::UnexpectedEof, "{e}");
    let inner = e.into_inner().unwrap().downcast::<Error>().unwrap();
    assert_eq!(*inner, Error::Truncated);
}

// ---------------------------------------------------------------------------------------------
// One thread, 200 non-blocking clients

const CLIENTS: usize = 200;
const MSG_LEN: usize = 12;
const NB_DEADLINE: Duration = Duration::from_secs(60);

#[derive(Debug)]
enum ServerStep {
    Handshake,
    Read(Vec<u8>),
    Echo(Vec<u8>),
    Flush,
    AwaitClose,
    Done,
}

fn would_block(r: &Result<(), Error>) -> bool {
    matches!(r, Err(e) if e.is_would_block())
}

/// A non-blocking echo server on one thread: handshake, read MSG_LEN bytes, echo them, wait
/// for the client's close_notify. Returns how many connections completed.
fn nonblocking_echo_server(
    listener: TcpListener,
    config: ServerConfig,
    deadline: std::time::Instant,
) -> Result<usize, String> {
    listener.set_nonblocking(true).unwrap();
    let mut conns: Vec<(TcpTlsSocket, ServerStep)> = Vec::new();
    let mut buf = [0u8; 256];
    loop {
        if std::time::Instant::now() > deadline {
            let open: Vec<_> = conns.iter().map(|(_, s)| s).collect();
            return Err(format!("server deadline; states {open:?}"));
        }
        let mut progress = false;
        loop {
            match listener.accept() {
                Ok((tcp, _)) => {
                    tcp.set_nodelay(true).unwrap();
                    let mut sock = TlsSocket::server(tcp, &config, StdClock::new()).unwrap();
                    sock.set_nonblocking(true).unwrap();
                    conns.push((sock, ServerStep::Handshake));
                    progress = true;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => return Err(format!("accept: {e}")),
            }
        }
        for (sock, step) in conns.iter_mut() {
            loop {
                let next = match step {
                    ServerStep::Handshake => match sock.handshake() {
                        Ok(()) => ServerStep::Read(Vec::new()),
                        Err(e) if e.is_would_block() => break,
                        Err(e) => return Err(format!("server handshake: {e}")),
                    },
                    ServerStep::Read(got) => match sock.read(&mut buf) {
                        Ok(0) => return Err("client closed before its message".into()),
                        Ok(n) => {
                            got.extend_from_slice(&buf[..n]);
                            if got.len() < MSG_LEN {
                                continue;
                            }
                            ServerStep::Echo(std::mem::take(got))
                        }
                        Err(e) if e.is_would_block() => break,
                        Err(e) => return Err(format!("server read: {e}")),
                    },
                    ServerStep::Echo(got) => match sock.write(got) {
                        Ok(n) => {
                            assert_eq!(n, got.len(), "a small write is taken whole");
                            ServerStep::Flush
                        }
                        Err(e) if e.is_would_block() => break,
                        Err(e) => return Err(format!("server write: {e}")),
                    },
                    ServerStep::Flush => {
                        let r = sock.flush();
                        if would_block(&r) {
                            break;
                        }
                        r.map_err(|e| format!("server flush: {e}"))?;
                        ServerStep::AwaitClose
                    }
                    ServerStep::AwaitClose => match sock.read(&mut buf) {
                        Ok(0) => {
                            // Best effort: the client may already have gone.
                            let _ = sock.close();
                            ServerStep::Done
                        }
                        Ok(n) => return Err(format!("{n} unexpected bytes")),
                        Err(e) if e.is_would_block() => break,
                        Err(e) => return Err(format!("server await close: {e}")),
                    },
                    ServerStep::Done => break,
                };
                *step = next;
                progress = true;
            }
        }
        let done = conns
            .iter()
            .filter(|(_, s)| matches!(s, ServerStep::Done))
            .count();
        if done == CLIENTS {
            return Ok(done);
        }
        if !progress {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

#[derive(Debug)]
enum ClientStep {
    Handshake,
    Write,
    Flush,
    Read(Vec<u8>),
    Close,
    Done,
}

#[test]
fn one_thread_drives_200_nonblocking_clients() {
    let pki = Pki::new();
    let (listener, port) = listen();
    let deadline = std::time::Instant::now() + NB_DEADLINE;
    let server_config = pki.server_config(BOTH, false);
    let server = spawn("nonblocking-server", move || {
        nonblocking_echo_server(listener, server_config, deadline)
    });
    // Half the clients speak TLS 1.3, half TLS 1.2; each config is shared by its clients.
    let configs = [
        pki.client_config(only(Tls13), false),
        pki.client_config(only(Tls12), false),
    ];
    let start = std::time::Instant::now();
    let mut clients: Vec<(TcpTlsSocket, ClientStep, Vec<u8>)> = Vec::new();
    let mut buf = [0u8; 256];
    let mut resumed = 0;
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "deadline: {} of {CLIENTS} clients done; states {:?}",
            clients
                .iter()
                .filter(|c| matches!(c.1, ClientStep::Done))
                .count(),
            clients.iter().map(|c| &c.1).collect::<Vec<_>>()
        );
        // Open connections gradually, so the listen backlog never overflows.
        let busy = clients
            .iter()
            .filter(|c| !matches!(c.1, ClientStep::Done))
            .count();
        for _ in 0..(64usize.saturating_sub(busy)).min(CLIENTS - clients.len()) {
            let i = clients.len();
            let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
            tcp.set_nodelay(true).unwrap();
            let mut sock =
                TlsSocket::client(tcp, &configs[i % 2], "localhost", StdClock::new()).unwrap();
            sock.set_nonblocking(true).unwrap();
            let msg = format!("client {i:04}\n").into_bytes();
            assert_eq!(msg.len(), MSG_LEN);
            clients.push((sock, ClientStep::Handshake, msg));
        }
        let mut progress = false;
        for (i, (sock, step, msg)) in clients.iter_mut().enumerate() {
            loop {
                let next = match step {
                    ClientStep::Handshake => match sock.handshake() {
                        Ok(()) => {
                            let v = sock.session().version();
                            assert_eq!(v, Some([Tls13, Tls12][i % 2]), "client {i}");
                            resumed += usize::from(sock.session().is_resumed());
                            ClientStep::Write
                        }
                        Err(e) if e.is_would_block() => break,
                        Err(e) => panic!("client {i} handshake: {e}"),
                    },
                    ClientStep::Write => match sock.write(msg) {
                        Ok(n) => {
                            assert_eq!(n, MSG_LEN);
                            ClientStep::Flush
                        }
                        Err(e) if e.is_would_block() => break,
                        Err(e) => panic!("client {i} write: {e}"),
                    },
                    ClientStep::Flush => {
                        let r = sock.flush();
                        if would_block(&r) {
                            break;
                        }
                        r.unwrap();
                        ClientStep::Read(Vec::new())
                    }
                    ClientStep::Read(got) => match sock.read(&mut buf) {
                        Ok(0) => panic!("client {i}: server closed before echoing"),
                        Ok(n) => {
                            got.extend_from_slice(&buf[..n]);
                            if got.len() < MSG_LEN {
                                continue;
                            }
                            assert_eq!(got, msg, "client {i} echo");
                            ClientStep::Close
                        }
                        Err(e) if e.is_would_block() => break,
                        Err(e) => panic!("client {i} read: {e}"),
                    },
                    ClientStep::Close => {
                        let r = sock.close();
                        if would_block(&r) {
                            break;
                        }
                        r.unwrap();
                        ClientStep::Done
                    }
                    ClientStep::Done => break,
                };
                *step = next;
                progress = true;
            }
        }
        let done = clients
            .iter()
            .filter(|c| matches!(c.1, ClientStep::Done))
            .count();
        if done == CLIENTS {
            break;
        }
        if !progress {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    assert_eq!(server.join(), Ok(CLIENTS));
    note(&format!(
        "{CLIENTS} non-blocking clients on one thread: {} ms, {resumed} resumed",
        elapsed_ms(start)
    ));
}

// ---------------------------------------------------------------------------------------------
// TlsSocket over an in-memory transport, with an injected clock

/// One direction of an in-memory wire.
#[derive(Default)]
struct Wire {
    data: VecDeque<u8>,
    closed: bool,
}

/// What a test can see and change of a [`Mem`] transport.
#[derive(Default, Debug)]
struct Knobs {
    /// At most this many bytes per `write` call (0: no limit).
    max_write: usize,
    /// Bytes the transport accepts before writes would block (`None`: no limit).
    budget: Option<usize>,
    /// Bytes accepted so far, and in how many calls.
    written: usize,
    write_calls: usize,
    /// Every `set_read_timeout` the socket made.
    read_timeouts: Vec<Option<Duration>>,
    /// The buffer each `read` call offered, in order.
    reads: Vec<usize>,
    shut_down: bool,
}

/// A transport over two in-memory wires. Non-blocking reads of an empty wire would block; a
/// blocking read of an empty wire "waits" its whole read timeout by moving the shared clock
/// forward (the peer runs on the same thread, so nothing can arrive meanwhile).
struct Mem {
    rx: Arc<Mutex<Wire>>,
    tx: Arc<Mutex<Wire>>,
    knobs: Arc<Mutex<Knobs>>,
    time: Arc<AtomicU64>,
    nonblocking: bool,
    read_timeout: Option<Duration>,
}

impl Transport for Mem {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, TransportError> {
        self.knobs.lock().unwrap().reads.push(buf.len());
        let mut rx = self.rx.lock().unwrap();
        if !rx.data.is_empty() {
            let n = rx.data.len().min(buf.len());
            for (b, d) in buf.iter_mut().zip(rx.data.drain(..n)) {
                *b = d;
            }
            return Ok(n);
        }
        if rx.closed {
            return Ok(0);
        }
        if self.nonblocking {
            return Err(TransportError::WouldBlock);
        }
        let t = self
            .read_timeout
            .expect("a blocking read with no timeout would wait forever");
        self.time.fetch_add(t.as_millis() as u64, Ordering::SeqCst);
        Err(TransportError::WouldBlock)
    }

    fn write(&mut self, buf: &[u8]) -> Result<usize, TransportError> {
        let mut k = self.knobs.lock().unwrap();
        let mut tx = self.tx.lock().unwrap();
        if tx.closed {
            return Err(TransportError::Reset);
        }
        let mut n = buf.len();
        if k.max_write > 0 {
            n = n.min(k.max_write);
        }
        if let Some(budget) = k.budget {
            if budget == 0 {
                return Err(TransportError::WouldBlock);
            }
            n = n.min(budget);
            k.budget = Some(budget - n);
        }
        tx.data.extend(&buf[..n]);
        k.written += n;
        k.write_calls += 1;
        Ok(n)
    }

    fn set_read_timeout(&mut self, timeout: Option<Duration>) -> Result<(), TransportError> {
        self.knobs.lock().unwrap().read_timeouts.push(timeout);
        self.read_timeout = timeout;
        Ok(())
    }

    fn set_nonblocking(&mut self, nonblocking: bool) -> Result<(), TransportError> {
        self.nonblocking = nonblocking;
        Ok(())
    }

    fn shutdown(&mut self) {
        self.tx.lock().unwrap().closed = true;
        self.knobs.lock().unwrap().shut_down = true;
    }
}

/// The injected clock: a closure over a counter the test moves.
type TestClock = Box<dyn Fn() -> Instant>;
type MemSocket = TlsSocket<Mem, TestClock>;

fn clock(time: &Arc<AtomicU64>) -> TestClock {
    let time = time.clone();
    Box::new(move || Instant::from_millis(time.load(Ordering::SeqCst)))
}

/// A client and a server socket over in-memory wires, both non-blocking, sharing one clock
/// that starts at 1000 ms.
struct MemPair {
    client: MemSocket,
    server: MemSocket,
    client_knobs: Arc<Mutex<Knobs>>,
    server_knobs: Arc<Mutex<Knobs>>,
    time: Arc<AtomicU64>,
}

fn mem_transports(time: &Arc<AtomicU64>) -> (Mem, Mem) {
    let a = Arc::new(Mutex::new(Wire::default()));
    let b = Arc::new(Mutex::new(Wire::default()));
    let end = |rx: &Arc<Mutex<Wire>>, tx: &Arc<Mutex<Wire>>| Mem {
        rx: rx.clone(),
        tx: tx.clone(),
        knobs: Arc::default(),
        time: time.clone(),
        nonblocking: false,
        read_timeout: None,
    };
    (end(&a, &b), end(&b, &a))
}

fn mem_pair(client: &ClientConfig, server: &ServerConfig) -> MemPair {
    let time = Arc::new(AtomicU64::new(1000));
    let (c, s) = mem_transports(&time);
    let (client_knobs, server_knobs) = (c.knobs.clone(), s.knobs.clone());
    let mut client = TlsSocket::client(c, client, "localhost", clock(&time)).unwrap();
    let mut server = TlsSocket::server(s, server, clock(&time)).unwrap();
    client.set_nonblocking(true).unwrap();
    server.set_nonblocking(true).unwrap();
    MemPair {
        client,
        server,
        client_knobs,
        server_knobs,
        time,
    }
}

impl MemPair {
    /// Steps both handshakes in turn until both are done; returns the number of rounds.
    fn handshake(&mut self) -> usize {
        for round in 1..=20 {
            let c = self.client.handshake();
            let s = self.server.handshake();
            match (&c, &s) {
                (Ok(()), Ok(())) => return round,
                _ => {
                    for r in [c, s] {
                        if let Err(e) = r {
                            assert!(e.is_would_block(), "round {round}: {e:?}");
                        }
                    }
                }
            }
        }
        panic!("handshake did not complete in 20 rounds");
    }
}

fn mem_configs(v: TlsVersion) -> (ClientConfig, ServerConfig, Pki) {
    let pki = Pki::new();
    (
        pki.client_config(only(v), false),
        pki.server_config(only(v), false),
        pki,
    )
}

#[test]
fn mem_nonblocking_handshake_in_steps() {
    for v in VERSIONS {
        let (cc, sc, _pki) = mem_configs(v);
        let mut p = mem_pair(&cc, &sc);
        // The server has nothing yet; the client sends its hello and waits.
        assert!(p.server.handshake().unwrap_err().is_would_block());
        assert!(p.client.handshake().unwrap_err().is_would_block());
        assert!(p.client.is_handshaking());
        assert!(
            p.client_knobs.lock().unwrap().written > 0,
            "ClientHello sent"
        );
        let rounds = p.handshake();
        // Each side had to wait for the other at least once (TLS 1.2 takes one more round).
        assert!(rounds >= 2, "{v}: {rounds} rounds");
        assert_eq!(p.client.session().version(), Some(v));
        assert_eq!(p.server.session().version(), Some(v));
        // Data both ways, and would-block when there is none.
        assert_eq!(p.client.write(b"ping").unwrap(), 4);
        let mut buf = [0u8; 16];
        assert_eq!(p.server.read(&mut buf).unwrap(), 4);
        assert_eq!(&buf[..4], b"ping");
        assert!(p.server.read(&mut buf).unwrap_err().is_would_block());
        p.server.write_all(b"pong").unwrap();
        assert_eq!(p.client.read(&mut buf).unwrap(), 4);
        assert_eq!(&buf[..4], b"pong");
        assert!(p.client.read(&mut buf).unwrap_err().is_would_block());
    }
}

/// The config's read chunk reaches the socket before its first read: a client built with
/// `read_chunk(1024)` offers its transport 1024 bytes from the first read after the
/// ServerHello on (which a client reads alone), one with the default 4096 (a socket's
/// `set_read_chunk` comes after `connect`, too late for the handshake's reads), and the
/// server takes its own from its config. A record larger than
/// the chunk is completed by one read of what it lacks, never more.
#[test]
fn mem_config_read_chunk_bounds_every_read_from_the_first() {
    for v in VERSIONS {
        let pki = Pki::new();
        let client = |chunk: Option<usize>| {
            let b = ClientConfig::builder(pki.trust()).versions(v, v);
            chunk
                .map_or(b.clone(), |c| b.read_chunk(c))
                .build()
                .unwrap()
        };
        let server = ServerConfig::builder(pki.server.identity())
            .versions(v, v)
            .read_chunk(512)
            .build()
            .unwrap();
        for (chunk, expect) in [(Some(1024), 1024), (None, 4096)] {
            let config = client(chunk);
            assert_eq!(config_chunk(&config), expect);
            let mut p = mem_pair(&config, &server);
            p.handshake();
            p.client.write_all(&[7u8; 3000]).unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            while got.len() < 3000 {
                match p.server.read(&mut buf) {
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                    Err(e) => assert!(e.is_would_block(), "{e:?}"),
                }
            }
            p.server.write_all(&got).unwrap();
            got.clear();
            while got.len() < 3000 {
                match p.client.read(&mut buf) {
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                    Err(e) => assert!(e.is_would_block(), "{e:?}"),
                }
            }
            assert_eq!(got, [7u8; 3000]);
            for (knobs, chunk, is_client) in [
                (&p.client_knobs, expect, true),
                (&p.server_knobs, 512, false),
            ] {
                let reads = knobs.lock().unwrap().reads.clone();
                // A client reads the server's first record (its ServerHello) alone, 64 bytes
                // first (again if nothing had come yet); its first chunk is the read after.
                if is_client {
                    assert_eq!(reads[0], 64, "{v}: {reads:?}");
                }
                let first = reads.iter().position(|&r| r == chunk);
                assert!(
                    first.is_some_and(|i| reads[..i].iter().all(|&r| r < chunk)),
                    "{v}: {reads:?}"
                );
                // The 3000-byte record (at most 3,029 bytes on the wire): a chunk, then the rest.
                assert!(
                    reads.iter().all(|&r| r <= chunk.max(3029)),
                    "{v}: {reads:?}"
                );
                if chunk < 3000 {
                    assert!(reads.iter().any(|&r| r > chunk), "{v}: {reads:?}");
                }
            }
        }
    }
}

/// The read chunk a client session starts with.
fn config_chunk(config: &ClientConfig) -> usize {
    tether::Session::client(config, "localhost", Instant::from_millis(0))
        .unwrap()
        .read_chunk()
}

#[test]
fn mem_write_then_flush_one_byte_per_call() {
    for v in VERSIONS {
        let (cc, sc, _pki) = mem_configs(v);
        let mut p = mem_pair(&cc, &sc);
        p.handshake();
        let mut buf = [0u8; 64];
        // Drain what the server sent after its handshake (TLS 1.3 tickets).
        assert!(p.client.read(&mut buf).unwrap_err().is_would_block());
        {
            let mut k = p.client_knobs.lock().unwrap();
            k.max_write = 1;
            k.budget = Some(0);
            k.written = 0;
            k.write_calls = 0;
        }
        // The transport takes nothing: write still takes the data, keeps the record...
        assert_eq!(p.client.write(b"hello").unwrap(), 5);
        assert!(p.server.read(&mut buf).unwrap_err().is_would_block());
        assert!(p.client.flush().unwrap_err().is_would_block());
        // ...and takes no more until it is sent (never more than one record held).
        assert!(p.client.write(b"more").unwrap_err().is_would_block());
        // One byte at a time.
        let mut flushes = 0;
        loop {
            p.client_knobs.lock().unwrap().budget = Some(1);
            flushes += 1;
            match p.client.flush() {
                Ok(()) => break,
                Err(e) => assert!(e.is_would_block(), "{e:?}"),
            }
            assert!(flushes < 100, "a 5-byte record never flushed");
        }
        let (written, calls) = {
            let k = p.client_knobs.lock().unwrap();
            (k.written, k.write_calls)
        };
        // header 5 + data 5 + tag 16 (+ content type 1 in TLS 1.3, + explicit nonce 8 in 1.2)
        let record = match v {
            Tls12 => 5 + 8 + 5 + 16,
            Tls13 => 5 + 5 + 1 + 16,
        };
        assert_eq!((written, calls, flushes), (record, record, record), "{v}");
        assert_eq!(p.server.read(&mut buf).unwrap(), 5);
        assert_eq!(&buf[..5], b"hello");
        assert!(p.server.read(&mut buf).unwrap_err().is_would_block());
    }
}

#[test]
fn mem_blocking_write_all_one_byte_per_call() {
    let (cc, sc, _pki) = mem_configs(Tls13);
    let mut p = mem_pair(&cc, &sc);
    p.handshake();
    p.client.set_nonblocking(false).unwrap();
    {
        let mut k = p.client_knobs.lock().unwrap();
        k.max_write = 1;
        k.written = 0;
        k.write_calls = 0;
    }
    let data: Vec<u8> = (0..40_000u32).map(|i| (i % 253) as u8).collect();
    p.client.write_all(&data).unwrap();
    let (written, calls) = {
        let k = p.client_knobs.lock().unwrap();
        (k.written, k.write_calls)
    };
    assert_eq!(written, calls, "one byte per call");
    assert!(
        written > data.len(),
        "{written} bytes for {} of data",
        data.len()
    );
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while got.len() < data.len() {
        let n = p.server.read(&mut buf).unwrap();
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(got, data);
}

#[test]
fn mem_handshake_timeout_nonblocking_from_the_injected_clock() {
    let pki = Pki::new();
    let config = ClientConfig::builder(pki.trust())
        .handshake_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let time = Arc::new(AtomicU64::new(1000));
    let (c, _silent_server) = mem_transports(&time);
    let mut sock = TlsSocket::client(c, &config, "localhost", clock(&time)).unwrap();
    sock.set_nonblocking(true).unwrap();
    assert!(sock.handshake().unwrap_err().is_would_block());
    // One millisecond before the deadline: still waiting.
    time.store(5999, Ordering::SeqCst);
    assert!(sock.handshake().unwrap_err().is_would_block());
    // At the deadline (created at 1000 + 5 s).
    time.store(6000, Ordering::SeqCst);
    assert_eq!(sock.handshake(), Err(Error::Timeout(Timeout::Handshake)));
    assert_eq!(read_fails(&mut sock), Error::Timeout(Timeout::Handshake));
}

#[test]
fn mem_handshake_timeout_blocking_waits_the_remaining_time() {
    let pki = Pki::new();
    let config = ClientConfig::builder(pki.trust())
        .handshake_timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    let time = Arc::new(AtomicU64::new(1000));
    let (c, _silent_server) = mem_transports(&time);
    let knobs = c.knobs.clone();
    let mut sock = TlsSocket::client(c, &config, "localhost", clock(&time)).unwrap();
    time.store(1500, Ordering::SeqCst);
    // Blocking: the socket bounds each read by what is left of the handshake deadline.
    assert_eq!(sock.handshake(), Err(Error::Timeout(Timeout::Handshake)));
    assert_eq!(time.load(Ordering::SeqCst), 4000);
    assert_eq!(
        knobs.lock().unwrap().read_timeouts,
        [Some(Duration::from_millis(2500))]
    );
}

#[test]
fn mem_io_timeout_then_data_still_arrives() {
    let (cc, sc, _pki) = mem_configs(Tls13);
    let mut p = mem_pair(&cc, &sc);
    p.handshake();
    p.client.set_nonblocking(false).unwrap();
    p.client.set_io_timeout(Some(Duration::from_secs(2)));
    let before = p.time.load(Ordering::SeqCst);
    let mut buf = [0u8; 16];
    assert_eq!(p.client.read(&mut buf), Err(Error::Timeout(Timeout::Io)));
    assert_eq!(p.time.load(Ordering::SeqCst), before + 2000);
    // An I/O timeout does not fail the connection.
    p.server.write_all(b"late").unwrap();
    assert_eq!(p.client.read(&mut buf).unwrap(), 4);
    assert_eq!(&buf[..4], b"late");
}

#[test]
fn mem_close_notify_and_truncation() {
    let (cc, sc, _pki) = mem_configs(Tls12);
    // Clean: close_notify reads as 0; the transport is closed (TransportMode::Close).
    let mut p = mem_pair(&cc, &sc);
    p.handshake();
    p.server.write_all(b"bye").unwrap();
    p.server.close().unwrap();
    assert!(p.server_knobs.lock().unwrap().shut_down);
    let mut buf = [0u8; 16];
    assert_eq!(p.client.read(&mut buf).unwrap(), 3);
    assert_eq!(p.client.read(&mut buf).unwrap(), 0);
    assert_eq!(p.client.read(&mut buf).unwrap(), 0);

    // Keep: close_notify is sent, the transport stays open and can be taken back.
    let mut p = mem_pair(&cc, &sc);
    p.handshake();
    p.server.set_transport_mode(TransportMode::Keep);
    p.server.close().unwrap();
    assert!(!p.server_knobs.lock().unwrap().shut_down);
    assert_eq!(p.client.read(&mut buf).unwrap(), 0);
    let (_transport, session) = p.server.into_parts();
    assert!(session.is_close_sent());

    // EOF without close_notify: truncated, after the data that did arrive.
    let mut p = mem_pair(&cc, &sc);
    p.handshake();
    p.server.write_all(b"cut").unwrap();
    p.server.transport_mut().shutdown();
    assert_eq!(p.client.read(&mut buf).unwrap(), 3);
    assert_eq!(p.client.read(&mut buf), Err(Error::Truncated));
    assert_eq!(p.client.read(&mut buf), Err(Error::Truncated));
}

#[test]
fn mem_nonblocking_close_keeps_the_transport_until_close_notify_is_sent() {
    let (cc, sc, _pki) = mem_configs(Tls13);
    let mut p = mem_pair(&cc, &sc);
    p.handshake();
    p.client_knobs.lock().unwrap().budget = Some(0);
    // The transport cannot take the close_notify yet: close would block, and must not close
    // the transport under it.
    assert!(p.client.close().unwrap_err().is_would_block());
    assert!(!p.client_knobs.lock().unwrap().shut_down);
    p.client_knobs.lock().unwrap().budget = None;
    p.client.close().unwrap();
    assert!(p.client_knobs.lock().unwrap().shut_down);
    let mut buf = [0u8; 16];
    assert_eq!(p.server.read(&mut buf).unwrap(), 0, "close_notify arrived");
}

#[test]
fn mem_unchanged_read_bound_is_not_set_again() {
    // A blocking socket with no deadline reads many times but tells the transport "no
    // timeout" once: one system call per read saved on TCP.
    let (cc, sc, _pki) = mem_configs(Tls13);
    let mut p = mem_pair(&cc, &sc);
    p.handshake();
    p.client.set_nonblocking(false).unwrap();
    let mut buf = [0u8; 16];
    for i in 0..5u8 {
        p.server.write_all(&[i]).unwrap();
        assert_eq!(p.client.read(&mut buf).unwrap(), 1);
    }
    assert_eq!(p.client_knobs.lock().unwrap().read_timeouts, [None]);
    // Taking the transport out may change its timeouts: the next read sets the bound again.
    let _ = p.client.transport_mut();
    p.server.write_all(b"x").unwrap();
    assert_eq!(p.client.read(&mut buf).unwrap(), 1);
    assert_eq!(p.client_knobs.lock().unwrap().read_timeouts, [None, None]);
}
