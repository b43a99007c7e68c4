//! DTLS 1.2 interop against real peers over UDP on 127.0.0.1: tether as client against
//! `openssl s_server -dtls1_2` and `gnutls-serv --udp`, tether as server against
//! `openssl s_client -dtls1_2` and `gnutls-cli --udp`, with and without client certificates,
//! data both ways, and refusals (wrong CA, pin, hostname) with no data delivered. Certificates
//! are made at test time by `tether_pki`. No packaged peer speaks DTLS 1.3: see
//! tests/dtls_socket.rs for tether <-> tether.
//!
//! Peers are started through `testpeers` (killed by PID on drop); a missing peer fails the test
//! under `CI=true` and skips it elsewhere.

#![cfg(feature = "dtls")]

mod dtls_support;
mod support;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use testpeers::{
    GnutlsCliOpts, GnutlsServOpts, SClientOpts, SServerOpts, Version, free_udp_port, gnutls_cli,
    gnutls_serv, openssl_s_client, openssl_s_server, skip_or_fail,
};
use tether::dtls::{self, DtlsVersion, UdpDtlsSocket};
use tether::error::CertificateError;
use tether::{Error, Trust};

use dtls_support::*;
use support::{Pki, WAIT, spawn};

fn connect(port: u16, config: &dtls::ClientConfig, name: &str) -> Result<UdpDtlsSocket, Error> {
    let mut s = dtls::connect_named(&format!("127.0.0.1:{port}"), name, config)?;
    s.set_io_timeout(Some(WAIT));
    Ok(s)
}

/// Receives records until one ends with a newline; returns them joined.
fn recv_line(sock: &mut UdpDtlsSocket) -> String {
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65536];
    while !got.ends_with(b"\n") {
        let n = sock.recv(&mut buf).unwrap();
        assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8(got).unwrap()
}

fn openssl_server(pki: &Pki, mtls: bool) -> (testpeers::Peer, u16) {
    let port = free_udp_port();
    let server = openssl_s_server(
        port,
        &pki.server.cert,
        &pki.server.key,
        &SServerOpts {
            version: Some(Version::Dtls12),
            client_ca: mtls.then(|| pki.ca_pem.clone()),
            ..SServerOpts::default()
        },
    )
    .unwrap();
    (server, port)
}

// ---------------------------------------------------------------------------------------------
// tether client -> openssl s_server -dtls1_2

fn client_to_openssl(versions: (DtlsVersion, DtlsVersion), mtls: bool) {
    if !skip_or_fail("openssl") {
        return;
    }
    let pki = Pki::new();
    let (mut server, port) = openssl_server(&pki, mtls);
    let config = client_config(&pki, versions, mtls);
    let mut sock = connect(port, &config, "localhost").unwrap();
    assert_eq!(sock.session().version(), Some(DtlsVersion::Dtls12));
    assert_eq!(
        sock.session().peer_certificate().unwrap().as_ref(),
        pki.server.der()
    );
    assert!(sock.session().cipher_suite().is_some());

    sock.send(b"hello from tether\n").unwrap();
    server.wait_for_output("hello from tether", WAIT).unwrap();
    server.send_line("hello from openssl").unwrap();
    assert_eq!(recv_line(&mut sock), "hello from openssl\n");
    if mtls {
        server.wait_for_output("CN = device-1", WAIT).unwrap();
    } else {
        assert!(!server.output_so_far().contains("device-1"));
    }
    sock.close().unwrap();
    server.wait_for_output("DONE", WAIT).unwrap();
}

#[test]
fn client_to_openssl_dtls12() {
    client_to_openssl(V12, false);
}

#[test]
fn client_to_openssl_dtls12_mtls() {
    client_to_openssl(V12, true);
}

/// The default range (1.2 to 1.3) sends a ClientHello for both; OpenSSL answers in 1.2.
#[test]
fn client_to_openssl_version_range() {
    client_to_openssl(BOTH, true);
}

// ---------------------------------------------------------------------------------------------
// tether client -> gnutls-serv --udp --echo

fn client_to_gnutls(mtls: bool) {
    if !skip_or_fail("gnutls-serv") {
        return;
    }
    let pki = Pki::new();
    let port = free_udp_port();
    let server = gnutls_serv(
        port,
        &pki.server.cert,
        &pki.server.key,
        &GnutlsServOpts {
            version: Some(Version::Dtls12),
            client_ca: mtls.then(|| pki.ca_pem.clone()),
            ..GnutlsServOpts::default()
        },
    )
    .unwrap();
    let config = client_config(&pki, V12, mtls);
    let mut sock = connect(port, &config, "localhost").unwrap();
    assert_eq!(sock.session().version(), Some(DtlsVersion::Dtls12));
    sock.send(b"hello from tether\n").unwrap();
    assert_eq!(recv_line(&mut sock), "hello from tether\n");
    server.wait_for_output("hello from tether", WAIT).unwrap();
    // A record of the largest size our MTU allows comes back whole.
    let max = sock.session().max_send_size();
    let mut big = "y".repeat(max - 1);
    big.push('\n');
    sock.send(big.as_bytes()).unwrap();
    assert_eq!(recv_line(&mut sock), big);
    sock.close().unwrap();
    // gnutls-serv prints no session details in UDP mode; with `mtls` it ran with
    // --require-client-cert --verify-client-cert, so the echo proves it verified ours.
    drop(server);
}

#[test]
fn client_to_gnutls_dtls12() {
    client_to_gnutls(false);
}

#[test]
fn client_to_gnutls_dtls12_mtls() {
    client_to_gnutls(true);
}

// ---------------------------------------------------------------------------------------------
// openssl s_client / gnutls-cli -> tether server

#[derive(Debug)]
struct Seen {
    version: Option<DtlsVersion>,
    client_cert: Option<Vec<u8>>,
    line: String,
}

/// A tether DTLS server on a free UDP port that serves one peer: reads one line, answers
/// `tether got: LINE` and closes.
fn line_server(config: dtls::ServerConfig) -> (u16, support::Joined<Seen>) {
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = udp.local_addr().unwrap().port();
    let joined = spawn("dtls-line-server", move || {
        let mut sock = dtls::accept_one(udp, &config).unwrap();
        sock.set_io_timeout(Some(WAIT));
        let line = recv_line(&mut sock);
        sock.send(format!("tether got: {line}").as_bytes()).unwrap();
        let seen = Seen {
            version: sock.session().version(),
            client_cert: sock
                .session()
                .peer_certificate()
                .map(|c| c.as_ref().to_vec()),
            line,
        };
        sock.close().unwrap();
        seen
    });
    (port, joined)
}

fn openssl_to_server(mtls: bool) {
    if !skip_or_fail("openssl") {
        return;
    }
    let pki = Pki::new();
    let (port, server) = line_server(server_config(&pki, BOTH, mtls));
    let mut client = openssl_s_client(
        port,
        &SClientOpts {
            ca_file: Some(pki.ca_pem.clone()),
            verify_hostname: Some("localhost".into()),
            version: Some(Version::Dtls12),
            cert: mtls.then(|| pki.client.cert.clone()),
            key: mtls.then(|| pki.client.key.clone()),
            ..SClientOpts::default()
        },
    )
    .unwrap();
    client
        .wait_for_output("Verify return code: 0 (ok)", WAIT)
        .unwrap();
    client.send_line("hello from s_client").unwrap();
    client
        .wait_for_output("tether got: hello from s_client", WAIT)
        .unwrap();
    let seen = server.join();
    assert_eq!(seen.line, "hello from s_client\n");
    assert_eq!(seen.version, Some(DtlsVersion::Dtls12));
    assert_eq!(
        seen.client_cert.as_deref(),
        mtls.then(|| pki.client.der()),
        "client certificate seen by the server"
    );
    client
        .wait_for_output("Protocol  : DTLSv1.2", WAIT)
        .unwrap();
}

#[test]
fn openssl_to_server_dtls12() {
    openssl_to_server(false);
}

#[test]
fn openssl_to_server_dtls12_mtls() {
    openssl_to_server(true);
}

fn gnutls_to_server(mtls: bool) {
    if !skip_or_fail("gnutls-cli") {
        return;
    }
    let pki = Pki::new();
    let (port, server) = line_server(server_config(&pki, V12, mtls));
    let mut client = gnutls_cli(
        port,
        &GnutlsCliOpts {
            ca_file: Some(pki.ca_pem.clone()),
            verify_hostname: Some("localhost".into()),
            version: Some(Version::Dtls12),
            cert: mtls.then(|| pki.client.cert.clone()),
            key: mtls.then(|| pki.client.key.clone()),
            ..GnutlsCliOpts::default()
        },
    )
    .unwrap();
    client
        .wait_for_output("- Handshake was completed", WAIT)
        .unwrap();
    client.send_line("hello from gnutls-cli").unwrap();
    client
        .wait_for_output("tether got: hello from gnutls-cli", WAIT)
        .unwrap();
    let seen = server.join();
    assert_eq!(seen.line, "hello from gnutls-cli\n");
    assert_eq!(seen.version, Some(DtlsVersion::Dtls12));
    assert_eq!(
        seen.client_cert.as_deref(),
        mtls.then(|| pki.client.der()),
        "client certificate seen by the server"
    );
    client.wait_for_output("(DTLS1.2-", WAIT).unwrap();
}

#[test]
fn gnutls_to_server_dtls12() {
    gnutls_to_server(false);
}

#[test]
fn gnutls_to_server_dtls12_mtls() {
    gnutls_to_server(true);
}

// ---------------------------------------------------------------------------------------------
// Refusals against a real server: the TLS categories, and nothing delivered either way.

#[test]
fn wrong_ca_pin_and_hostname_are_refused_against_openssl() {
    if !skip_or_fail("openssl") {
        return;
    }
    let pki = Pki::new();
    let other = Pki::with_ca_name("another CA");
    let (server, port) = openssl_server(&pki, false);
    type Case = (
        &'static str,
        dtls::ClientConfig,
        &'static str,
        fn(&Error) -> bool,
    );
    let cases: Vec<Case> = vec![
        (
            "wrong CA",
            client_config(&other, V12, false),
            "localhost",
            |e| matches!(e, Error::Certificate(CertificateError::UnknownIssuer)),
        ),
        (
            "pin mismatch",
            client_builder(Trust::new().with_pin(other.server.pin()), V12)
                .build()
                .unwrap(),
            "localhost",
            |e| matches!(e, Error::PinMismatch { .. }),
        ),
        (
            "hostname mismatch",
            client_config(&pki, V12, false),
            "wrong.example",
            |e| matches!(e, Error::Certificate(CertificateError::NameMismatch { .. })),
        ),
    ];
    for (what, config, name, check) in cases {
        let start = Instant::now();
        let err = connect(port, &config, name).unwrap_err();
        assert!(check(&err), "{what}: {err:?} ({err})");
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{what}: slow refusal"
        );
        // The server saw no finished handshake and no data.
        assert!(
            !server.output_so_far().contains("CIPHER is"),
            "{what}: {}",
            server.output_so_far()
        );
    }
    // The right config still works against the same server afterwards.
    let mut ok = connect(port, &client_config(&pki, V12, false), "localhost").unwrap();
    ok.send(b"after the refusals\n").unwrap();
    server.wait_for_output("after the refusals", WAIT).unwrap();
    ok.close().unwrap();
}

#[test]
fn openssl_client_with_a_certificate_from_another_ca_is_refused() {
    if !skip_or_fail("openssl") {
        return;
    }
    let pki = Pki::new();
    let other = Pki::with_ca_name("another CA");
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = udp.local_addr().unwrap().port();
    let config = server_config(&pki, V12, true);
    let server = spawn("dtls-refusing-server", move || {
        dtls::accept_one(udp, &config).map(|_| ())
    });
    let client = openssl_s_client(
        port,
        &SClientOpts {
            ca_file: Some(pki.ca_pem.clone()),
            version: Some(Version::Dtls12),
            cert: Some(other.client.cert.clone()),
            key: Some(other.client.key.clone()),
            ..SClientOpts::default()
        },
    )
    .unwrap();
    let r = server.join();
    assert_eq!(
        r.unwrap_err(),
        Error::Certificate(CertificateError::UnknownIssuer)
    );
    // s_client is told (alert unknown_ca), and never got to send application data.
    client.wait_for_output("alert", WAIT).unwrap();
}

#[test]
fn openssl_client_without_a_certificate_is_refused_as_missing() {
    if !skip_or_fail("openssl") {
        return;
    }
    let pki = Pki::new();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = udp.local_addr().unwrap().port();
    let config = server_config(&pki, V12, true);
    let server = spawn("dtls-refusing-server", move || {
        dtls::accept_one(udp, &config).map(|_| ())
    });
    let client = openssl_s_client(
        port,
        &SClientOpts {
            ca_file: Some(pki.ca_pem.clone()),
            version: Some(Version::Dtls12),
            ..SClientOpts::default()
        },
    )
    .unwrap();
    assert_eq!(
        server.join().unwrap_err(),
        Error::Certificate(CertificateError::Missing)
    );
    client.wait_for_output("alert", WAIT).unwrap();
}
