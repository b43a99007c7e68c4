//! The two crypto libraries (`Crypto::Ring`, `Crypto::AwsLc`): each side may use either, over
//! real sockets, TLS 1.2 and 1.3 with client certificates; aws-lc against itself settles on
//! the hybrid post-quantum group, against ring and OpenSSL 3.0 on X25519; verification refuses
//! a wrong CA whichever library checks; names and groups a library lacks are config errors.

mod support;

use testpeers::SServerOpts;
use tether::error::CertificateError;
use tether::{ClientAuth, TlsVersion::Tls13};
use tether::{ClientConfig, Crypto, Error, NamedGroup, ServerConfig, TlsVersion};

use support::*;

fn client(pki: &Pki, v: TlsVersion, crypto: Crypto) -> ClientConfig {
    ClientConfig::builder(pki.trust())
        .versions(v, v)
        .identity(pki.client.identity())
        .crypto(crypto)
        .build()
        .unwrap()
}

fn server(pki: &Pki, v: TlsVersion, crypto: Crypto) -> ServerConfig {
    ServerConfig::builder(pki.server.identity())
        .versions(v, v)
        .client_auth(ClientAuth::Required(pki.trust()))
        .crypto(crypto)
        .build()
        .unwrap()
}

/// One mTLS connection: a line each way, close_notify; returns the group both sides saw.
fn exchange(pki: &Pki, v: TlsVersion, c: Crypto, s: Crypto) -> NamedGroup {
    let (port, srv) = tether_server(server(pki, v, s), |r| {
        let mut sock = r.expect("server handshake");
        let line = read_line(&mut sock).unwrap();
        sock.write_all(line.to_uppercase().as_bytes()).unwrap();
        sock.close().unwrap();
        (sock.session().kx_group(), sock.session().version())
    });
    let mut sock = client_socket(port, &client(pki, v, c), "localhost");
    sock.write_all(b"hello over tls\n").unwrap();
    assert_eq!(read_line(&mut sock).unwrap(), "HELLO OVER TLS\n");
    assert!(read_to_close(&mut sock).unwrap().is_empty());
    let (group, version) = srv.join();
    assert_eq!(version, Some(v));
    assert_eq!(group, sock.session().kx_group(), "{v} {c} -> {s}");
    group.unwrap()
}

#[test]
fn either_library_on_either_side_in_tls12_and_tls13() {
    let pki = Pki::new();
    for v in VERSIONS {
        for (c, s) in [
            (Crypto::AwsLc, Crypto::Ring),
            (Crypto::Ring, Crypto::AwsLc),
            (Crypto::Ring, Crypto::Ring),
        ] {
            assert_eq!(
                exchange(&pki, v, c, s),
                NamedGroup::X25519,
                "{v} {c} -> {s}"
            );
        }
        // The hybrid group exists in TLS 1.3 only.
        let both = exchange(&pki, v, Crypto::AwsLc, Crypto::AwsLc);
        let want = match v {
            Tls13 => NamedGroup::X25519MLKEM768,
            TlsVersion::Tls12 => NamedGroup::X25519,
        };
        assert_eq!(both, want, "{v}");
    }
}

#[test]
fn aws_lc_restricted_to_x25519_offers_only_that() {
    let pki = Pki::new();
    let config = ServerConfig::builder(pki.server.identity())
        .versions(Tls13, Tls13)
        .kx_groups(&[NamedGroup::X25519])
        .crypto(Crypto::AwsLc)
        .build()
        .unwrap();
    let (port, srv) = tether_server(config, |r| r.map(|s| s.session().kx_group()));
    let mut sock = client_socket(port, &client(&pki, Tls13, Crypto::AwsLc), "localhost");
    sock.handshake().unwrap();
    assert_eq!(sock.session().kx_group(), Some(NamedGroup::X25519));
    assert_eq!(srv.join().unwrap(), Some(NamedGroup::X25519));
}

#[test]
fn aws_lc_client_against_openssl_settles_on_x25519() {
    if !testpeers::skip_or_fail("openssl") {
        return;
    }
    let pki = Pki::new();
    for v in VERSIONS {
        let (port, peer) = pki.s_server(&SServerOpts {
            version: Some(peer_version(v)),
            ..SServerOpts::default()
        });
        let config = ClientConfig::builder(pki.trust())
            .versions(v, v)
            .crypto(Crypto::AwsLc)
            .build()
            .unwrap();
        let mut sock = client_socket(port, &config, "localhost");
        sock.write_all(b"from aws-lc\n").unwrap();
        peer.wait_for_output("from aws-lc", WAIT).unwrap();
        assert_eq!(sock.session().kx_group(), Some(NamedGroup::X25519), "{v}");
        assert_eq!(sock.session().version(), Some(v));
    }
}

#[test]
fn a_wrong_ca_is_refused_whichever_library_verifies() {
    let pki = Pki::new();
    let other = Pki::with_ca_name("another CA");
    for crypto in [Crypto::AwsLc, Crypto::Ring] {
        // The client checks the server.
        let (port, srv) = tether_server(server(&pki, Tls13, Crypto::AwsLc), |r| r.err());
        let mut sock = client_socket(port, &client(&other, Tls13, crypto), "localhost");
        let err = sock.handshake().unwrap_err();
        assert_eq!(
            err,
            Error::Certificate(CertificateError::UnknownIssuer),
            "{crypto}"
        );
        assert!(srv.join().is_some());

        // The server checks the client (presenting another CA's device certificate).
        let (port, srv) = tether_server(server(&pki, Tls13, crypto), |r| r.err());
        let config = ClientConfig::builder(pki.trust())
            .versions(Tls13, Tls13)
            .identity(other.client.identity())
            .crypto(Crypto::AwsLc)
            .build()
            .unwrap();
        let mut sock = client_socket(port, &config, "localhost");
        let _ = sock.handshake().and_then(|()| sock.read(&mut [0u8; 16]));
        assert_eq!(
            srv.join(),
            Some(Error::Certificate(CertificateError::UnknownIssuer)),
            "{crypto}"
        );
    }
}

#[test]
fn names_parse_and_what_a_library_lacks_is_a_config_error() {
    assert_eq!("ring".parse::<Crypto>().unwrap(), Crypto::Ring);
    assert_eq!("aws-lc".parse::<Crypto>().unwrap(), Crypto::AwsLc);
    assert_eq!(Crypto::AwsLc.to_string(), "aws-lc");
    assert_eq!(Crypto::default(), Crypto::Ring);
    assert_eq!(Crypto::fastest(), Crypto::AwsLc);
    let err = "openssl".parse::<Crypto>().unwrap_err().to_string();
    assert!(
        err.contains("\"openssl\"") && err.contains("\"ring\" or \"aws-lc\""),
        "{err}"
    );

    let pki = Pki::new();
    let err = ClientConfig::builder(pki.trust())
        .kx_groups(&[NamedGroup::X25519MLKEM768])
        .crypto(Crypto::Ring)
        .build()
        .unwrap_err()
        .to_string();
    assert!(err.contains("by ring") && err.contains("X25519"), "{err}");
    ClientConfig::builder(pki.trust())
        .kx_groups(&[NamedGroup::X25519MLKEM768])
        .crypto(Crypto::AwsLc)
        .build()
        .unwrap();
}
