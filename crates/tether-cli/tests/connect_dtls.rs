//! `tether connect --dtls` against a real `openssl s_server -dtls1_2`: the same fields as for
//! TLS, a reply to `--send`, and refusals (wrong CA, pin, name) naming the reason.
//! Certificates come from `tether pki` (the built binary).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use testpeers::{SServerMode, SServerOpts, Version, free_udp_port, openssl_s_server, skip_or_fail};

const WAIT: Duration = Duration::from_secs(15);

mod common;

use common::{pki, tether, text};

fn s_server(dir: &Path, mode: SServerMode) -> (testpeers::Peer, u16) {
    let port = free_udp_port();
    let peer = openssl_s_server(
        port,
        &dir.join("server.pem"),
        &dir.join("server.key"),
        &SServerOpts {
            version: Some(Version::Dtls12),
            mode,
            ..SServerOpts::default()
        },
    )
    .expect("start openssl s_server -dtls1_2");
    (peer, port)
}

#[test]
fn connect_dtls_prints_the_session_and_the_reply() {
    if !skip_or_fail("openssl") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    pki(dir);
    // s_server has no echo mode for DTLS: it prints what it gets and sends its stdin.
    let (mut server, port) = s_server(dir, SServerMode::Stdio);
    let target = format!("127.0.0.1:{port}");
    let ca = dir.join("ca.pem");
    let child = Command::new(env!("CARGO_BIN_EXE_tether"))
        .args([
            "connect",
            "--dtls",
            &target,
            "--ca",
            ca.to_str().unwrap(),
            "--sni",
            "localhost",
            "--send",
            "hello",
            "--timeout",
            "3",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tether");
    server.wait_for_output("hello", WAIT).unwrap();
    server.send_line("olleh").unwrap();
    let o = child.wait_with_output().unwrap();
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    for field in [
        "over UDP",
        "version       DTLSv1.2",
        "cipher suite  TLS_ECDHE_ECDSA_WITH_",
        "key exchange",
        "ALPN",
        "resumed       no",
        "handshake",
        "verification  OK",
        "subject",
        "issuer",
        "valid",
        "SANs      localhost, 127.0.0.1",
        "pin       sha256/",
        "olleh",
    ] {
        assert!(out.contains(field), "missing {field:?} in:\n{out}");
    }
}

#[test]
fn connect_dtls_with_wrong_ca_pin_or_name_fails_naming_the_reason() {
    if !skip_or_fail("openssl") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    pki(dir);
    let (_server, port) = s_server(dir, SServerMode::Stdio);
    let target = format!("127.0.0.1:{port}");
    let other_ca = dir.join("other/ca.pem");

    let o = tether(&[
        "connect",
        "--dtls",
        &target,
        "--ca",
        other_ca.to_str().unwrap(),
    ]);
    let (out, err) = text(&o);
    assert!(!o.status.success(), "{out}");
    assert!(err.contains("unknown issuer"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");

    let wrong_pin = tether(&["pki", "pin", other_ca.to_str().unwrap()]);
    let wrong_pin = String::from_utf8(wrong_pin.stdout).unwrap();
    let o = tether(&["connect", "--dtls", &target, "--pin", wrong_pin.trim()]);
    let (out, err) = text(&o);
    assert!(!o.status.success(), "{out}");
    assert!(err.contains("pin mismatch"), "{err}");

    let right_pin = tether(&["pki", "pin", dir.join("server.pem").to_str().unwrap()]);
    let right_pin = String::from_utf8(right_pin.stdout).unwrap();
    let o = tether(&["connect", "--dtls", &target, "--pin", right_pin.trim()]);
    assert!(o.status.success(), "{:?}", text(&o));

    let o = tether(&[
        "connect",
        "--dtls",
        &target,
        "--ca",
        dir.join("ca.pem").to_str().unwrap(),
        "--sni",
        "wrong.example",
    ]);
    let (_, err) = text(&o);
    assert!(!o.status.success());
    assert!(err.contains("not valid for wrong.example"), "{err}");
}

#[test]
fn connect_dtls_refuses_tls_only_flags_and_reports_silence() {
    let o = tether(&["connect", "--dtls", "127.0.0.1:1", "--alpn", "h2"]);
    assert!(!o.status.success());
    assert!(text(&o).1.contains("--alpn"), "{:?}", text(&o));

    // Nobody answers on this port: a timeout (or a refused datagram), said in one line.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let target = silent.local_addr().unwrap().to_string();
    let o = tether(&[
        "connect",
        "--dtls",
        &target,
        "--pin",
        "sha256/47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
        "--timeout",
        "1",
    ]);
    let (_, err) = text(&o);
    assert!(!o.status.success());
    assert!(err.contains("handshake timed out"), "{err}");
}
