//! gnutls-serv and gnutls-cli against each other (and against openssl), and proof that dropping
//! a Peer kills it.

#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

use std::path::Path;
use std::time::Duration;

use testpeers::{
    GnutlsCliOpts, GnutlsServOpts, SClientOpts, TestPki, Version, free_port, free_udp_port,
    gnutls_cli, gnutls_serv, openssl_s_client, process_alive, skip_or_fail, skip_or_fail_all,
};

const T: Duration = Duration::from_secs(20);

fn cli_opts(pki: &TestPki) -> GnutlsCliOpts {
    GnutlsCliOpts {
        ca_file: Some(pki.ca_cert.clone()),
        ..Default::default()
    }
}

#[test]
fn gnutls_cli_line_is_echoed_by_gnutls_serv_and_drop_kills_both() {
    if !skip_or_fail_all(&["gnutls-serv", "gnutls-cli", "openssl"]) {
        return;
    }
    let pki = TestPki::new().unwrap();
    let port = free_port();
    let server = gnutls_serv(
        port,
        &pki.server_cert,
        &pki.server_key,
        &GnutlsServOpts::default(),
    )
    .unwrap();
    let mut client = gnutls_cli(port, &cli_opts(&pki)).unwrap();
    client
        .wait_for_output("- Handshake was completed", T)
        .unwrap();
    client.send_line("hello from gnutls-cli").unwrap();
    server
        .wait_for_output("command: hello from gnutls-cli", T)
        .unwrap();
    // The echo, after the handshake text gnutls-cli printed.
    client.wait_for_output("Simple Client Mode", T).unwrap();
    let echoed = || {
        let out = client.stdout_so_far();
        let after = out.split("Simple Client Mode").nth(1).unwrap_or("");
        after.contains("hello from gnutls-cli")
    };
    let deadline = std::time::Instant::now() + T;
    while !echoed() {
        assert!(std::time::Instant::now() < deadline, "no echo: {client:?}");
        std::thread::sleep(Duration::from_millis(20));
    }

    let (server_pid, client_pid) = (server.pid(), client.pid());
    assert!(process_alive(server_pid) && process_alive(client_pid));
    drop(client);
    drop(server);
    for pid in [server_pid, client_pid] {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "pid {pid} survived its drop"
        );
    }
}

#[test]
fn versions_are_pinned_by_priority_strings() {
    if !skip_or_fail_all(&["gnutls-serv", "gnutls-cli", "openssl"]) {
        return;
    }
    let pki = TestPki::new().unwrap();
    for (version, shown) in [(Version::Tls12, "TLS1.2"), (Version::Tls13, "TLS1.3")] {
        let port = free_port();
        let _server = gnutls_serv(
            port,
            &pki.server_cert,
            &pki.server_key,
            &GnutlsServOpts {
                version: Some(version),
                ..Default::default()
            },
        )
        .unwrap();
        let client = gnutls_cli(port, &cli_opts(&pki)).unwrap();
        client
            .wait_for_output(&format!("- Description: ({shown}-X.509)"), T)
            .unwrap();
    }
}

#[test]
fn required_client_certificate_and_openssl_client() {
    if !skip_or_fail_all(&["gnutls-serv", "gnutls-cli", "openssl"]) {
        return;
    }
    let pki = TestPki::new().unwrap();
    let port = free_port();
    let server = gnutls_serv(
        port,
        &pki.server_cert,
        &pki.server_key,
        &GnutlsServOpts {
            client_ca: Some(pki.ca_cert.clone()),
            ..Default::default()
        },
    )
    .unwrap();

    // gnutls-cli with the client certificate.
    let mut client = gnutls_cli(
        port,
        &GnutlsCliOpts {
            cert: Some(pki.client_cert.clone()),
            key: Some(pki.client_key.clone()),
            ..cli_opts(&pki)
        },
    )
    .unwrap();
    client
        .wait_for_output("- Handshake was completed", T)
        .unwrap();
    client.send_line("gnutls with cert").unwrap();
    server
        .wait_for_output("command: gnutls with cert", T)
        .unwrap();
    drop(client);

    // openssl s_client with the client certificate, against gnutls-serv.
    let mut client = openssl_s_client(
        port,
        &SClientOpts {
            ca_file: Some(pki.ca_cert.clone()),
            cert: Some(pki.client_cert.clone()),
            key: Some(pki.client_key.clone()),
            ..Default::default()
        },
    )
    .unwrap();
    client
        .wait_for_output("Verify return code: 0 (ok)", T)
        .unwrap();
    client.send_line("openssl with cert").unwrap();
    server
        .wait_for_output("command: openssl with cert", T)
        .unwrap();
    drop(client);

    // gnutls-cli without one: refused.
    let mut client = gnutls_cli(port, &cli_opts(&pki)).unwrap();
    client.send_line("no cert").unwrap();
    let status = client.wait_exit(T).unwrap();
    assert!(!status.success(), "{client:?}: {}", client.output_so_far());
    assert!(!server.output_so_far().contains("command: no cert"));
}

#[test]
fn dtls12_over_udp() {
    if !skip_or_fail_all(&["gnutls-serv", "gnutls-cli", "openssl"]) {
        return;
    }
    let pki = TestPki::new().unwrap();
    let port = free_udp_port();
    let server = gnutls_serv(
        port,
        &pki.server_cert,
        &pki.server_key,
        &GnutlsServOpts {
            version: Some(Version::Dtls12),
            ..Default::default()
        },
    )
    .unwrap();
    let mut client = gnutls_cli(
        port,
        &GnutlsCliOpts {
            version: Some(Version::Dtls12),
            ..cli_opts(&pki)
        },
    )
    .unwrap();
    client
        .wait_for_output("- Handshake was completed", T)
        .unwrap();
    client.send_line("over udp").unwrap();
    server.wait_for_output("command: over udp", T).unwrap();
}

#[test]
fn an_untrusted_server_certificate_fails_gnutls_cli() {
    if !skip_or_fail_all(&["gnutls-serv", "gnutls-cli", "openssl"]) {
        return;
    }
    let (pki, other) = (TestPki::new().unwrap(), TestPki::new().unwrap());
    let port = free_port();
    let _server = gnutls_serv(
        port,
        &pki.server_cert,
        &pki.server_key,
        &GnutlsServOpts::default(),
    )
    .unwrap();
    let mut client = gnutls_cli(port, &cli_opts(&other)).unwrap();
    let status = client.wait_exit(T).unwrap();
    assert!(!status.success());
    assert!(
        client
            .output_so_far()
            .contains("certificate is NOT trusted"),
        "{}",
        client.output_so_far()
    );
}

#[test]
fn missing_peer_message_names_the_package() {
    let err = testpeers::require_tool("gnutls-serv-missing-for-test").unwrap_err();
    assert!(
        err.contains("scripts/test installs it with apt-get"),
        "{err}"
    );
    assert_eq!(testpeers::debian_package("gnutls-cli"), "gnutls-bin");
    // skip_or_fail on a present tool never skips.
    assert!(skip_or_fail("/bin/sh"));
}
