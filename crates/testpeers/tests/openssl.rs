//! openssl s_server and s_client against each other, and proof that dropping a Peer kills it.

#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

use std::path::Path;
use std::time::Duration;

use testpeers::{
    SClientOpts, SServerMode, SServerOpts, TestPki, Version, free_port, free_udp_port,
    openssl_s_client, openssl_s_server, process_alive, skip_or_fail,
};

const T: Duration = Duration::from_secs(20);

fn client_opts(pki: &TestPki) -> SClientOpts {
    SClientOpts {
        ca_file: Some(pki.ca_cert.clone()),
        verify_hostname: Some("localhost".into()),
        ..Default::default()
    }
}

#[test]
fn s_client_sends_a_line_to_s_server_and_drop_kills_both() {
    if !skip_or_fail("openssl") {
        return;
    }
    let pki = TestPki::new().unwrap();
    let port = free_port();
    let mut server = openssl_s_server(
        port,
        &pki.server_cert,
        &pki.server_key,
        &SServerOpts::default(),
    )
    .unwrap();
    let mut client = openssl_s_client(port, &client_opts(&pki)).unwrap();
    client
        .wait_for_output("Verify return code: 0 (ok)", T)
        .unwrap();

    client.send_line("hello from s_client").unwrap();
    server.wait_for_output("hello from s_client", T).unwrap();
    // And the other way: s_server's stdin goes to the client.
    server.send_line("hello from s_server").unwrap();
    client.wait_for_output("hello from s_server", T).unwrap();

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
fn rev_mode_echoes_reversed_lines_over_tls12() {
    if !skip_or_fail("openssl") {
        return;
    }
    let pki = TestPki::new().unwrap();
    let port = free_port();
    let _server = openssl_s_server(
        port,
        &pki.server_cert,
        &pki.server_key,
        &SServerOpts {
            version: Some(Version::Tls12),
            mode: SServerMode::Rev,
            ..Default::default()
        },
    )
    .unwrap();
    let mut client = openssl_s_client(port, &client_opts(&pki)).unwrap();
    client.wait_for_output("Protocol  : TLSv1.2", T).unwrap();
    client.send_line("tether").unwrap();
    client.wait_for_output("rehte", T).unwrap();
}

#[test]
fn required_client_certificate() {
    if !skip_or_fail("openssl") {
        return;
    }
    let pki = TestPki::new().unwrap();
    let port = free_port();
    let server = openssl_s_server(
        port,
        &pki.server_cert,
        &pki.server_key,
        &SServerOpts {
            version: Some(Version::Tls13),
            client_ca: Some(pki.ca_cert.clone()),
            ..Default::default()
        },
    )
    .unwrap();

    // With the client certificate: accepted, and data flows.
    let mut client = openssl_s_client(
        port,
        &SClientOpts {
            cert: Some(pki.client_cert.clone()),
            key: Some(pki.client_key.clone()),
            ..client_opts(&pki)
        },
    )
    .unwrap();
    client
        .wait_for_output("Verify return code: 0 (ok)", T)
        .unwrap();
    client.send_line("with a certificate").unwrap();
    server.wait_for_output("with a certificate", T).unwrap();
    server.wait_for_output("tether test client", T).unwrap();
    drop(client);

    // Without one: the server refuses (TLS 1.3 checks after the client's Finished, so the
    // client sees the alert when it reads) and s_client exits.
    let mut client = openssl_s_client(port, &client_opts(&pki)).unwrap();
    client.send_line("no certificate").unwrap();
    client.wait_for_output("alert", T).unwrap();
    client.wait_exit(T).unwrap();
    assert!(!server.output_so_far().contains("no certificate"));
}

#[test]
fn session_resumption_with_sess_out_and_sess_in() {
    if !skip_or_fail("openssl") {
        return;
    }
    let pki = TestPki::new().unwrap();
    let port = free_port();
    let _server = openssl_s_server(
        port,
        &pki.server_cert,
        &pki.server_key,
        &SServerOpts {
            version: Some(Version::Tls12),
            ..Default::default()
        },
    )
    .unwrap();
    let session = pki.dir.path().join("session.pem");
    let mut first = openssl_s_client(
        port,
        &SClientOpts {
            sess_out: Some(session.clone()),
            ..client_opts(&pki)
        },
    )
    .unwrap();
    first.wait_for_output("Verify return code: 0", T).unwrap();
    first.close_stdin();
    first.wait_exit(T).unwrap();
    assert!(session.exists());

    let second = openssl_s_client(
        port,
        &SClientOpts {
            sess_in: Some(session),
            ..client_opts(&pki)
        },
    )
    .unwrap();
    second.wait_for_output("Reused, TLSv1.2", T).unwrap();
}

#[test]
fn dtls12_over_udp() {
    if !skip_or_fail("openssl") {
        return;
    }
    let pki = TestPki::new().unwrap();
    let port = free_udp_port();
    let server = openssl_s_server(
        port,
        &pki.server_cert,
        &pki.server_key,
        &SServerOpts {
            version: Some(Version::Dtls12),
            ..Default::default()
        },
    )
    .unwrap();
    let mut client = openssl_s_client(
        port,
        &SClientOpts {
            version: Some(Version::Dtls12),
            ..client_opts(&pki)
        },
    )
    .unwrap();
    client
        .wait_for_output("Verify return code: 0 (ok)", T)
        .unwrap();
    client.send_line("datagram").unwrap();
    server.wait_for_output("datagram", T).unwrap();
}

#[test]
fn an_untrusted_server_certificate_fails_the_client() {
    if !skip_or_fail("openssl") {
        return;
    }
    let (pki, other) = (TestPki::new().unwrap(), TestPki::new().unwrap());
    let port = free_port();
    let _server = openssl_s_server(
        port,
        &pki.server_cert,
        &pki.server_key,
        &SServerOpts::default(),
    )
    .unwrap();
    let mut client = openssl_s_client(port, &client_opts(&other)).unwrap();
    client
        .wait_for_output("unable to get local issuer certificate", T)
        .unwrap();
    assert!(!client.wait_exit(T).unwrap().success());
}

#[test]
fn a_server_that_cannot_start_reports_its_output() {
    if !skip_or_fail("openssl") {
        return;
    }
    let missing = Path::new("/nonexistent/cert.pem");
    let err = openssl_s_server(free_port(), missing, missing, &SServerOpts::default()).unwrap_err();
    assert!(err.message().contains("exited before listening"), "{err}");
    assert!(err.message().contains("/nonexistent/cert.pem"), "{err}");
}
