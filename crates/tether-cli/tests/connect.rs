//! `tether connect` against a real `openssl s_server`, and `tether demo` end to end.
//! Certificates come from `tether pki` (the built binary).

use std::path::Path;

use testpeers::{SServerMode, SServerOpts, Version, free_port, openssl_s_server, skip_or_fail};

mod common;

use common::{pki, tether, text};

fn s_server(dir: &Path, opts: SServerOpts) -> (testpeers::Peer, u16) {
    let port = free_port();
    let peer = openssl_s_server(
        port,
        &dir.join("server.pem"),
        &dir.join("server.key"),
        &opts,
    )
    .expect("start openssl s_server");
    (peer, port)
}

#[test]
fn connect_prints_the_session_and_exits_zero() {
    if !skip_or_fail("openssl") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    pki(dir);
    for (version, name) in [(Version::Tls13, "TLSv1.3"), (Version::Tls12, "TLSv1.2")] {
        let (_server, port) = s_server(
            dir,
            SServerOpts {
                version: Some(version),
                mode: SServerMode::Rev,
                ..SServerOpts::default()
            },
        );
        let target = format!("127.0.0.1:{port}");
        let ca = dir.join("ca.pem");
        let o = tether(&[
            "connect",
            &target,
            "--ca",
            ca.to_str().unwrap(),
            "--sni",
            "localhost",
            "--send",
            "hello",
            "--timeout",
            "2",
        ]);
        let (out, err) = text(&o);
        assert!(o.status.success(), "{name}: {out}\n{err}");
        for field in [
            "version",
            name,
            "cipher suite",
            "key exchange",
            "ALPN",
            "resumed",
            "handshake",
            "verification  OK",
            "subject",
            "issuer",
            "valid",
            "SANs      localhost, 127.0.0.1",
            "pin       sha256/",
            "olleh",
        ] {
            assert!(out.contains(field), "{name}: missing {field:?} in:\n{out}");
        }
    }
}

#[test]
fn connect_reconnect_shows_resumption() {
    if !skip_or_fail("openssl") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    pki(dir);
    let (_server, port) = s_server(dir, SServerOpts::default());
    let target = format!("localhost:{port}");
    let ca = dir.join("ca.pem");
    let o = tether(&[
        "connect",
        &target,
        "--ca",
        ca.to_str().unwrap(),
        "--reconnect",
    ]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    let resumed: Vec<&str> = out.lines().filter(|l| l.contains("resumed")).collect();
    assert_eq!(resumed.len(), 2, "{out}");
    assert!(resumed[0].trim_end().ends_with("no"), "{out}");
    assert!(resumed[1].trim_end().ends_with("yes"), "{out}");
}

#[test]
fn connect_with_wrong_ca_or_pin_fails_naming_the_reason() {
    if !skip_or_fail("openssl") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    pki(dir);
    let (_server, port) = s_server(dir, SServerOpts::default());
    let target = format!("localhost:{port}");
    let other_ca = dir.join("other/ca.pem");

    let o = tether(&["connect", &target, "--ca", other_ca.to_str().unwrap()]);
    let (out, err) = text(&o);
    assert!(!o.status.success(), "{out}");
    assert!(err.contains("unknown issuer"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");

    // A pin of another key (the CA's) alone: the server's key does not match.
    let wrong_pin = tether(&["pki", "pin", other_ca.to_str().unwrap()]);
    let wrong_pin = String::from_utf8(wrong_pin.stdout).unwrap();
    let o = tether(&["connect", &target, "--pin", wrong_pin.trim()]);
    let (out, err) = text(&o);
    assert!(!o.status.success(), "{out}");
    assert!(err.contains("pin mismatch"), "{err}");

    // The right pin alone is enough.
    let right_pin = tether(&["pki", "pin", dir.join("server.pem").to_str().unwrap()]);
    let right_pin = String::from_utf8(right_pin.stdout).unwrap();
    let o = tether(&["connect", &target, "--pin", right_pin.trim()]);
    assert!(o.status.success(), "{:?}", text(&o));

    // A name the certificate does not carry.
    let o = tether(&[
        "connect",
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
fn connect_rejects_bad_flags_clearly() {
    let o = tether(&["connect", "no-port-here"]);
    assert!(!o.status.success());
    assert!(text(&o).1.contains("HOST:PORT"), "{:?}", text(&o));
    for port in ["0", "99999", "http"] {
        let o = tether(&["connect", &format!("localhost:{port}")]);
        assert!(!o.status.success());
        let err = text(&o).1;
        assert!(
            err.contains(&format!(
                "\"{port}\" in \"localhost:{port}\" is not a port number: use 1 to 65535"
            )),
            "{err}"
        );
    }
    let o = tether(&["connect", "localhost:1", "--min-tls", "1.1"]);
    assert!(!o.status.success());
    assert!(text(&o).1.contains("use 1.2 or 1.3"), "{:?}", text(&o));
    let o = tether(&["connect", "localhost:1", "--pin", "md5/abc"]);
    assert!(!o.status.success());
    assert!(text(&o).1.contains("bad pin"), "{:?}", text(&o));
}

#[test]
fn demo_runs_and_cleans_up() {
    let o = tether(&["demo"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(out.contains("demo OK"), "{out}");
    assert!(out.contains("TLSv1.3") && out.contains("TLSv1.2"), "{out}");
    assert!(out.contains("yes"), "no resumed row: {out}");
    assert!(out.contains("anonymous refused"), "{out}");
    let pki_line = out.lines().find(|l| l.contains("PKI  ")).unwrap();
    let path = pki_line.split_whitespace().nth(1).unwrap();
    assert!(!Path::new(path).exists(), "{path} left behind");
}

#[test]
fn connect_tofu_remembers_the_first_key_and_refuses_a_change() {
    if !skip_or_fail("openssl") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    pki(dir);
    let store = dir.join("known_hosts");
    let store_s = store.to_str().unwrap();
    {
        let (_server, port) = s_server(dir, SServerOpts::default());
        let target = format!("localhost:{port}");
        for _ in 0..2 {
            let o = tether(&["connect", &target, "--tofu", store_s]);
            assert!(o.status.success(), "{:?}", text(&o));
        }
        let stored = std::fs::read_to_string(&store).unwrap();
        let pin = tether(&["pki", "pin", dir.join("server.pem").to_str().unwrap()]);
        let pin = String::from_utf8(pin.stdout).unwrap();
        assert_eq!(stored.trim(), format!("localhost {}", pin.trim()));
    }
    // The same name now presents another key: refused, naming both keys.
    let d = dir.to_str().unwrap();
    let o = tether(&[
        "pki",
        "issue",
        "server",
        "--dir",
        d,
        "--san",
        "localhost",
        "--name",
        "rekeyed",
    ]);
    assert!(o.status.success(), "{:?}", text(&o));
    let port = free_port();
    let _server = openssl_s_server(
        port,
        &dir.join("rekeyed.pem"),
        &dir.join("rekeyed.key"),
        &SServerOpts::default(),
    )
    .unwrap();
    let o = tether(&["connect", &format!("localhost:{port}"), "--tofu", store_s]);
    let (out, err) = text(&o);
    assert!(!o.status.success(), "{out}");
    assert!(err.contains("TOFU key change for localhost"), "{err}");
}

#[test]
fn connect_to_a_plaintext_service_says_it_does_not_speak_tls_and_what_it_sent() {
    // A plaintext HTTP server on the port: it answers the ClientHello with an HTTP error.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let target = listener.local_addr().unwrap().to_string();
    let server = std::thread::spawn(move || {
        use std::io::{Read as _, Write as _};
        let (mut s, _) = listener.accept().unwrap();
        let mut hello = [0u8; 512];
        let _ = s.read(&mut hello);
        let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
    });
    let o = tether(&["connect", &target, "--timeout", "5"]);
    server.join().unwrap();
    let (out, err) = text(&o);
    assert!(!o.status.success(), "{out}");
    assert!(err.contains("does not speak TLS"), "{err}");
    assert!(err.contains("\"HTTP/1.1 400 Bad Request\""), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
}
