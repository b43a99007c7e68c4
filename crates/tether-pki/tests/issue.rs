//! Issued certificates checked by an independent verifier (rustls-webpki), plus the file layout.

use core::time::Duration;
use std::fs;
use std::time::SystemTime;

use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tether_pki::{Ca, Dir, Error, IssueOptions, KeyKind, date, describe, spki_pin};
use webpki::{EndEntityCert, KeyUsage};

fn now() -> UnixTime {
    let since_epoch = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock after 1970");
    UnixTime::since_unix_epoch(since_epoch)
}

/// Verifies `leaf` against `ca` as webpki would in a TLS handshake, at `time`, for `usage`.
fn verify(ca: &[u8], leaf: &[u8], usage: KeyUsage, time: UnixTime) -> Result<(), webpki::Error> {
    let ca = CertificateDer::from(ca);
    let anchor = webpki::anchor_from_trusted_cert(&ca)?;
    let leaf = CertificateDer::from(leaf);
    let ee = EndEntityCert::try_from(&leaf)?;
    ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &[anchor],
        &[],
        time,
        usage,
        None,
        None,
    )
    .map(|_| ())
}

fn valid_for(leaf: &[u8], name: &str) -> bool {
    let leaf = CertificateDer::from(leaf);
    let ee = EndEntityCert::try_from(&leaf).unwrap();
    let name = ServerName::try_from(name).unwrap();
    ee.verify_is_valid_for_subject_name(&name).is_ok()
}

fn sans(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn server_cert_chains_to_ca_and_matches_dns_and_ip_sans() {
    let ca = Ca::init(KeyKind::EcdsaP256, "test CA").unwrap();
    let server = ca
        .issue_server(
            &sans(&["localhost", "127.0.0.1", "::1"]),
            &IssueOptions::default(),
        )
        .unwrap();

    verify(
        ca.cert_der(),
        &server.cert_der,
        KeyUsage::server_auth(),
        now(),
    )
    .unwrap();
    assert!(valid_for(&server.cert_der, "localhost"));
    assert!(valid_for(&server.cert_der, "127.0.0.1"));
    assert!(valid_for(&server.cert_der, "::1"));
    assert!(!valid_for(&server.cert_der, "example.com"));
    assert!(!valid_for(&server.cert_der, "127.0.0.2"));

    // serverAuth only: the same certificate must not pass as a client certificate.
    assert!(
        verify(
            ca.cert_der(),
            &server.cert_der,
            KeyUsage::client_auth(),
            now()
        )
        .is_err()
    );

    // Another CA does not vouch for it.
    let other = Ca::init(KeyKind::EcdsaP256, "other CA").unwrap();
    assert!(
        verify(
            other.cert_der(),
            &server.cert_der,
            KeyUsage::server_auth(),
            now()
        )
        .is_err()
    );

    let info = describe(&server.cert_der).unwrap();
    assert_eq!(info.subject, "CN=localhost");
    assert_eq!(info.issuer, "CN=test CA");
    assert_eq!(info.sans, ["localhost", "127.0.0.1", "::1"]);
    assert!(!info.is_ca);
    assert_eq!(info.key, "ECDSA P-256");
}

#[test]
fn wildcard_server_name() {
    let ca = Ca::init(KeyKind::EcdsaP256, "test CA").unwrap();
    let server = ca
        .issue_server(&sans(&["*.gw.example"]), &IssueOptions::default())
        .unwrap();
    verify(
        ca.cert_der(),
        &server.cert_der,
        KeyUsage::server_auth(),
        now(),
    )
    .unwrap();
    assert!(valid_for(&server.cert_der, "a.gw.example"));
    assert!(!valid_for(&server.cert_der, "gw.example"));
}

#[test]
fn client_cert_is_for_client_auth_with_device_id() {
    let ca = Ca::init(KeyKind::EcdsaP256, "test CA").unwrap();
    let device = ca
        .issue_client("device-1", &IssueOptions::default())
        .unwrap();
    verify(
        ca.cert_der(),
        &device.cert_der,
        KeyUsage::client_auth(),
        now(),
    )
    .unwrap();
    assert!(
        verify(
            ca.cert_der(),
            &device.cert_der,
            KeyUsage::server_auth(),
            now()
        )
        .is_err()
    );

    let info = describe(&device.cert_der).unwrap();
    assert_eq!(info.subject, "CN=device-1");
    assert_eq!(info.sans, ["device-1"]);

    // Ids that are not DNS names get no SAN, only the common name.
    for id in ["1234", "a..b", "-dash"] {
        let device = ca.issue_client(id, &IssueOptions::default()).unwrap();
        let info = describe(&device.cert_der).unwrap();
        assert_eq!(info.subject, format!("CN={id}"));
        assert!(info.sans.is_empty(), "{id}: {:?}", info.sans);
        verify(
            ca.cert_der(),
            &device.cert_der,
            KeyUsage::client_auth(),
            now(),
        )
        .unwrap();
    }
}

#[test]
fn ca_is_constrained_and_long_lived_leaves_are_not() {
    let ca = Ca::init(KeyKind::EcdsaP256, "test CA").unwrap();
    let (_, x509) = x509_parser::parse_x509_certificate(ca.cert_der()).unwrap();
    let bc = x509.basic_constraints().unwrap().unwrap();
    assert!(bc.critical);
    assert!(bc.value.ca);
    assert_eq!(bc.value.path_len_constraint, Some(0));
    let ku = x509.key_usage().unwrap().unwrap();
    assert!(ku.value.key_cert_sign() && ku.value.crl_sign());
    assert!(!ku.value.digital_signature());

    let info = describe(ca.cert_der()).unwrap();
    assert!(info.is_ca && info.is_self_issued());
    let ca_days = (info.not_after - info.not_before).whole_days();
    assert_eq!(ca_days, 3650);

    let leaf = ca
        .issue_server(&sans(&["localhost"]), &IssueOptions::default())
        .unwrap();
    let info = describe(&leaf.cert_der).unwrap();
    assert_eq!((info.not_after - info.not_before).whole_days(), 365);
    assert!(info.is_valid_at(time::OffsetDateTime::now_utc()));

    let (_, x509) = x509_parser::parse_x509_certificate(&leaf.cert_der).unwrap();
    let ku = x509.key_usage().unwrap().unwrap();
    assert!(ku.value.digital_signature());
    assert!(
        !ku.value.key_encipherment(),
        "keyEncipherment is for RSA keys only"
    );
    assert!(!ku.value.key_cert_sign());
    let eku = x509.extended_key_usage().unwrap().unwrap();
    assert!(eku.value.server_auth && !eku.value.client_auth);

    let longer = IssueOptions {
        days: Some(30),
        ..IssueOptions::default()
    };
    let leaf = ca.issue_client("device-1", &longer).unwrap();
    let info = describe(&leaf.cert_der).unwrap();
    assert_eq!((info.not_after - info.not_before).whole_days(), 30);
}

#[test]
fn explicit_times_make_an_expired_certificate() {
    let ca = Ca::init(KeyKind::EcdsaP256, "test CA").unwrap();
    let opts = IssueOptions {
        not_before: Some(date(2020, 1, 1).unwrap()),
        not_after: Some(date(2020, 12, 31).unwrap()),
        ..IssueOptions::default()
    };
    let expired = ca.issue_server(&sans(&["localhost"]), &opts).unwrap();
    let info = describe(&expired.cert_der).unwrap();
    assert_eq!(tether_pki::rfc3339(info.not_before), "2020-01-01T00:00:00Z");
    assert_eq!(tether_pki::rfc3339(info.not_after), "2020-12-31T00:00:00Z");
    assert!(info.not_after < time::OffsetDateTime::now_utc());

    let err = verify(
        ca.cert_der(),
        &expired.cert_der,
        KeyUsage::server_auth(),
        now(),
    )
    .unwrap_err();
    assert!(
        matches!(err, webpki::Error::CertExpired { .. }),
        "expected CertExpired, got {err:?}"
    );
    // ...and it was fine in mid-2020.
    let mid_2020 = UnixTime::since_unix_epoch(Duration::from_secs(1_593_561_600));
    verify(
        ca.cert_der(),
        &expired.cert_der,
        KeyUsage::server_auth(),
        mid_2020,
    )
    .unwrap();

    let backwards = IssueOptions {
        not_before: Some(date(2021, 1, 1).unwrap()),
        not_after: Some(date(2020, 1, 1).unwrap()),
        ..IssueOptions::default()
    };
    let err = ca.issue_client("d", &backwards).unwrap_err();
    assert!(matches!(err, Error::InvalidValidity(_)), "{err}");
    assert!(err.to_string().contains("not after"), "{err}");

    let zero = IssueOptions {
        days: Some(0),
        ..IssueOptions::default()
    };
    assert!(matches!(
        ca.issue_client("d", &zero),
        Err(Error::InvalidValidity(_))
    ));
    assert!(date(2020, 13, 1).is_err());
}

#[test]
fn pin_is_sha256_of_spki_in_standard_base64() {
    use base64::Engine as _;

    let ca = Ca::init(KeyKind::EcdsaP256, "test CA").unwrap();
    let server = ca
        .issue_server(&sans(&["localhost"]), &IssueOptions::default())
        .unwrap();
    let pin = spki_pin(&server.cert_der).unwrap();
    let b64 = pin.strip_prefix("sha256/").expect("sha256/ prefix");
    assert_eq!(b64.len(), 44, "{pin}");
    assert!(
        b64.ends_with('='),
        "standard base64 keeps its padding: {pin}"
    );
    let digest = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();

    // Independently: hash the SubjectPublicKeyInfo that x509-parser finds in the certificate.
    let (_, x509) = x509_parser::parse_x509_certificate(&server.cert_der).unwrap();
    let spki = x509.public_key().raw;
    assert_eq!(spki[0], 0x30, "the whole SEQUENCE is hashed");
    assert_eq!(
        digest,
        ring::digest::digest(&ring::digest::SHA256, spki).as_ref()
    );

    assert_eq!(
        tether_pki::spki_pin_from_pem(&server.cert_pem).unwrap(),
        pin
    );
    // A PEM file with a key first and the certificate second still pins the certificate.
    let bundle = format!("{}{}", server.key_pem, server.cert_pem);
    assert_eq!(tether_pki::spki_pin_from_pem(&bundle).unwrap(), pin);
    assert_eq!(describe(&server.cert_der).unwrap().pin, pin);

    let other = ca
        .issue_server(&sans(&["localhost"]), &IssueOptions::default())
        .unwrap();
    assert_ne!(
        spki_pin(&other.cert_der).unwrap(),
        pin,
        "fresh key, fresh pin"
    );

    assert!(matches!(
        tether_pki::spki_pin_from_pem(&server.key_pem),
        Err(Error::NoCertificate)
    ));
    assert!(matches!(
        spki_pin(b"not a certificate"),
        Err(Error::BadCertificate(_))
    ));
}

#[test]
fn bad_names_are_refused_with_clear_errors() {
    let ca = Ca::init(KeyKind::EcdsaP256, "test CA").unwrap();
    let opts = IssueOptions::default();

    let err = ca.issue_server(&sans(&["local host"]), &opts).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::InvalidSan { .. }), "{msg}");
    assert!(
        msg.contains("\"local host\"") && msg.contains("whitespace"),
        "{msg}"
    );

    let err = ca
        .issue_server(&sans(&["ok.example", ""]), &opts)
        .unwrap_err();
    assert!(err.to_string().contains("empty"), "{err}");

    let err = ca.issue_server(&[], &opts).unwrap_err();
    assert!(matches!(err, Error::NoSan));
    assert!(err.to_string().contains("--san"), "{err}");

    for bad in ["", "dev ice", "../etc/passwd", &"d".repeat(65)] {
        let err = ca.issue_client(bad, &opts).unwrap_err();
        assert!(
            matches!(err, Error::InvalidDeviceId { .. }),
            "{bad:?}: {err}"
        );
        assert!(err.to_string().starts_with("invalid device id"), "{err}");
    }
}

#[test]
fn ca_round_trips_through_pem_and_rejects_mismatches() {
    let ca = Ca::init(KeyKind::EcdsaP256, "round trip CA").unwrap();
    let loaded = Ca::load(ca.cert_pem(), ca.key_pem()).unwrap();
    assert_eq!(loaded.cert_der(), ca.cert_der());

    // A leaf issued by the loaded CA chains to the original certificate.
    let leaf = loaded
        .issue_server(&sans(&["localhost"]), &IssueOptions::default())
        .unwrap();
    verify(
        ca.cert_der(),
        &leaf.cert_der,
        KeyUsage::server_auth(),
        now(),
    )
    .unwrap();
    assert_eq!(describe(&leaf.cert_der).unwrap().issuer, "CN=round trip CA");

    let other = Ca::init(KeyKind::EcdsaP256, "other CA").unwrap();
    assert!(matches!(
        Ca::load(ca.cert_pem(), other.key_pem()),
        Err(Error::KeyMismatch)
    ));
    let err = Ca::load(&leaf.cert_pem, &leaf.key_pem).unwrap_err();
    assert!(matches!(err, Error::NotCa(_)), "{err}");
    assert!(matches!(
        Ca::load(ca.cert_pem(), "garbage"),
        Err(Error::BadKey(_))
    ));
}

#[test]
fn ed25519_ca_and_leaves() {
    let ca = Ca::init(KeyKind::Ed25519, "ed CA").unwrap();
    let leaf = ca
        .issue_server(
            &sans(&["localhost"]),
            &IssueOptions::with_key(KeyKind::Ed25519),
        )
        .unwrap();
    verify(
        ca.cert_der(),
        &leaf.cert_der,
        KeyUsage::server_auth(),
        now(),
    )
    .unwrap();
    assert_eq!(describe(&leaf.cert_der).unwrap().key, "Ed25519");
    let loaded = Ca::load(ca.cert_pem(), ca.key_pem()).unwrap();
    let device = loaded
        .issue_client("device-1", &IssueOptions::default())
        .unwrap();
    verify(
        ca.cert_der(),
        &device.cert_der,
        KeyUsage::client_auth(),
        now(),
    )
    .unwrap();
}

/// RSA generation is the slow path (pure Rust, and this is a debug build): one 2048-bit key as a
/// CA, reused for two leaves. 4096 is only checked to parse (see the CLI tests).
#[test]
fn rsa2048_ca_signs_and_rsa_leaf_gets_key_encipherment() {
    let ca = Ca::init(KeyKind::Rsa2048, "rsa CA").unwrap();
    assert_eq!(describe(ca.cert_der()).unwrap().key, "RSA 2048");
    assert!(ca.key_pem().starts_with("-----BEGIN PRIVATE KEY-----"));

    // An ECDSA leaf signed by the RSA CA (RSA PKCS#1 v1.5 SHA-256 signature).
    let leaf = ca
        .issue_server(&sans(&["localhost"]), &IssueOptions::default())
        .unwrap();
    verify(
        ca.cert_der(),
        &leaf.cert_der,
        KeyUsage::server_auth(),
        now(),
    )
    .unwrap();

    // And the CA survives a round trip through its PKCS#8 key.
    let loaded = Ca::load(ca.cert_pem(), ca.key_pem()).unwrap();
    let device = loaded
        .issue_client("device-1", &IssueOptions::default())
        .unwrap();
    verify(
        ca.cert_der(),
        &device.cert_der,
        KeyUsage::client_auth(),
        now(),
    )
    .unwrap();
}

#[test]
fn rsa_server_leaf_has_key_encipherment() {
    let ca = Ca::init(KeyKind::EcdsaP256, "test CA").unwrap();
    let leaf = ca
        .issue_server(
            &sans(&["localhost"]),
            &IssueOptions::with_key(KeyKind::Rsa2048),
        )
        .unwrap();
    verify(
        ca.cert_der(),
        &leaf.cert_der,
        KeyUsage::server_auth(),
        now(),
    )
    .unwrap();
    assert_eq!(describe(&leaf.cert_der).unwrap().key, "RSA 2048");
    let (_, x509) = x509_parser::parse_x509_certificate(&leaf.cert_der).unwrap();
    let ku = x509.key_usage().unwrap().unwrap();
    assert!(ku.value.digital_signature() && ku.value.key_encipherment());
}

#[cfg(unix)]
fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn dir_layout_modes_and_no_overwrite() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = Dir::new(tmp.path().join("pki"));

    let err = dir.load_ca().unwrap_err();
    assert!(matches!(err, Error::NoCa { .. }));
    let msg = err.to_string();
    assert!(msg.contains("tether pki init --dir"), "{msg}");
    assert!(msg.contains("pki"), "{msg}");

    let ca = Ca::init(KeyKind::EcdsaP256, "dir CA").unwrap();
    let paths = dir.write_ca(&ca, false).unwrap();
    assert_eq!(paths.cert, tmp.path().join("pki/ca.pem"));
    assert_eq!(paths.key, tmp.path().join("pki/ca.key"));
    assert_eq!(fs::read_to_string(&paths.cert).unwrap(), ca.cert_pem());
    #[cfg(unix)]
    assert_eq!(mode(&paths.key), 0o600);

    // A second CA does not replace the first without force, and the refusal names the file.
    let second = Ca::init(KeyKind::EcdsaP256, "second CA").unwrap();
    let err = dir.write_ca(&second, false).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Exists { .. }), "{msg}");
    assert!(msg.contains("ca.key") || msg.contains("ca.pem"), "{msg}");
    assert!(msg.contains("--force"), "{msg}");
    assert_eq!(fs::read_to_string(&paths.cert).unwrap(), ca.cert_pem());
    assert_eq!(fs::read_to_string(&paths.key).unwrap(), ca.key_pem());

    // Only the certificate left over: still refused, naming that file, and nothing written.
    fs::remove_file(&paths.key).unwrap();
    let err = dir.write_ca(&second, false).unwrap_err();
    assert!(err.to_string().contains("ca.pem"), "{err}");
    assert!(
        !paths.key.exists(),
        "refusal must not leave a half-written pair"
    );

    // With force, replaced, and a key that had a loose mode comes back as 0600.
    fs::write(&paths.key, "old").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        fs::set_permissions(&paths.key, fs::Permissions::from_mode(0o644)).unwrap();
    }
    dir.write_ca(&second, true).unwrap();
    assert_eq!(fs::read_to_string(&paths.cert).unwrap(), second.cert_pem());
    #[cfg(unix)]
    assert_eq!(mode(&paths.key), 0o600);

    // Issue through the directory: the loaded CA is the second one.
    let ca = dir.load_ca().unwrap();
    assert_eq!(ca.cert_der(), second.cert_der());
    let server = ca
        .issue_server(&sans(&["localhost"]), &IssueOptions::default())
        .unwrap();
    let server_paths = dir.server_paths(None).unwrap();
    dir.write_issued(&server_paths, &server, false).unwrap();
    assert_eq!(server_paths.cert, tmp.path().join("pki/server.pem"));
    assert_eq!(server_paths.key, tmp.path().join("pki/server.key"));
    #[cfg(unix)]
    assert_eq!(mode(&server_paths.key), 0o600);
    assert!(matches!(
        dir.write_issued(&server_paths, &server, false),
        Err(Error::Exists { .. })
    ));

    let named = dir.server_paths(Some("gw1")).unwrap();
    assert_eq!(named.cert, tmp.path().join("pki/gw1.pem"));
    assert_eq!(named.key, tmp.path().join("pki/gw1.key"));

    let device = dir.client_paths("device-1").unwrap();
    assert_eq!(device.cert, tmp.path().join("pki/device-1.pem"));
    assert_eq!(device.key, tmp.path().join("pki/device-1.key"));

    // Names that would land on the CA's files, or outside the directory, are refused.
    assert!(matches!(
        dir.server_paths(Some("ca")),
        Err(Error::InvalidName { .. })
    ));
    assert!(matches!(
        dir.client_paths("ca"),
        Err(Error::InvalidName { .. })
    ));
    assert!(matches!(
        dir.client_paths("server"),
        Err(Error::InvalidName { .. })
    ));
    assert!(matches!(
        dir.server_paths(Some("../x")),
        Err(Error::InvalidName { .. })
    ));
    assert!(matches!(
        dir.client_paths("a/b"),
        Err(Error::InvalidDeviceId { .. })
    ));
}

#[test]
fn key_mismatch_on_disk_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = Dir::new(tmp.path());
    dir.write_ca(&Ca::init(KeyKind::EcdsaP256, "a").unwrap(), false)
        .unwrap();
    let other = Ca::init(KeyKind::EcdsaP256, "b").unwrap();
    fs::remove_file(dir.ca_paths().key).unwrap();
    fs::write(dir.ca_paths().key, other.key_pem()).unwrap();
    assert!(matches!(dir.load_ca(), Err(Error::KeyMismatch)));
}
