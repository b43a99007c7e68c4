//! Interop matrix against real peers over real TCP on 127.0.0.1: tether as client and as
//! server, TLS 1.2 and TLS 1.3, with and without client certificates, data both ways, against
//! `openssl s_server`/`s_client`, `gnutls-serv`/`gnutls-cli` and tether itself (and rustls' own
//! client, where a test needs to choose what goes into one TCP write). Certificates are
//! made at test time by `tether_pki` (the library behind `tether pki`).
//!
//! Peers are started through `testpeers` (killed on drop); a missing peer fails the test under
//! `CI=true` and skips it elsewhere.

mod support;

use testpeers::{
    GnutlsCliOpts, GnutlsServOpts, SServerOpts, free_port, gnutls_cli, gnutls_serv,
    openssl_s_server, skip_or_fail,
};
use tether::TlsVersion;
use tether::TlsVersion::{Tls12, Tls13};

use support::*;

// ---------------------------------------------------------------------------------------------
// tether client -> openssl s_server

/// s_server (stdio mode) prints what tether sends and sends its stdin to tether.
fn client_to_openssl(v: TlsVersion, mtls: bool) {
    if !skip_or_fail("openssl") {
        return;
    }
    let pki = Pki::new();
    let (port, mut server) = pki.s_server(&SServerOpts {
        version: Some(peer_version(v)),
        client_ca: mtls.then(|| pki.ca_pem.clone()),
        ..SServerOpts::default()
    });
    let config = pki.client_config(only(v), mtls);
    let mut sock = connect(port, &config, "localhost").unwrap();
    assert_eq!(sock.session().version(), Some(v));
    assert!(!sock.session().is_resumed());
    let chain = sock.session().peer_certificates().unwrap();
    assert_eq!(chain[0].as_ref(), pki.server.der());

    sock.write_all(b"hello from tether\n").unwrap();
    server.wait_for_output("hello from tether", WAIT).unwrap();
    server.send_line("hello from openssl").unwrap();
    assert_eq!(read_line(&mut sock).unwrap(), "hello from openssl\n");
    if mtls {
        // s_server's verify callback prints the chain it verified.
        server.wait_for_output("CN = device-1", WAIT).unwrap();
    } else {
        assert!(!server.output_so_far().contains("device-1"));
    }
    sock.close().unwrap();
    // s_server prints DONE when the client has closed the connection.
    server.wait_for_output("DONE", WAIT).unwrap();
}

#[test]
fn client_to_openssl_tls12() {
    client_to_openssl(Tls12, false);
}

#[test]
fn client_to_openssl_tls13() {
    client_to_openssl(Tls13, false);
}

#[test]
fn client_to_openssl_tls12_mtls() {
    client_to_openssl(Tls12, true);
}

#[test]
fn client_to_openssl_tls13_mtls() {
    client_to_openssl(Tls13, true);
}

/// OpenSSL sending 512-byte records (`-max_send_frag 512`) with its chain of two certificates,
/// so that the Certificate message spans records, to a client that reads 512 bytes at a time:
/// the reads `Session::read_size` sizes while rustls holds the first records of a message.
fn small_records_from_openssl(v: TlsVersion) {
    if !skip_or_fail("openssl") {
        return;
    }
    let pki = Pki::new();
    let (port, mut server) = pki.s_server(&SServerOpts {
        version: Some(peer_version(v)),
        args: vec![
            "-max_send_frag".into(),
            "512".into(),
            "-cert_chain".into(),
            pki.ca_pem.clone().into(),
        ],
        ..SServerOpts::default()
    });
    let config = pki.client_config(only(v), false);
    let mut sock = client_socket(port, &config, "localhost");
    sock.set_read_chunk(512);
    sock.handshake().unwrap();
    assert_eq!(sock.session().version(), Some(v));
    let chain = sock.session().peer_certificates().unwrap();
    assert_eq!(chain.len(), 2, "the server sent its chain of two");
    sock.write_all(b"small records\n").unwrap();
    server.wait_for_output("small records", WAIT).unwrap();
    let long = "x".repeat(3000);
    server.send_line(&long).unwrap();
    assert_eq!(read_line(&mut sock).unwrap(), format!("{long}\n"));
    sock.close().unwrap();
    server.wait_for_output("DONE", WAIT).unwrap();
}

#[test]
fn small_records_from_openssl_tls12() {
    small_records_from_openssl(Tls12);
}

#[test]
fn small_records_from_openssl_tls13() {
    small_records_from_openssl(Tls13);
}

/// A non-blocking tether client against s_server: the handshake and the data are driven by
/// polling, would-block meaning "later".
#[test]
fn nonblocking_client_to_openssl() {
    if !skip_or_fail("openssl") {
        return;
    }
    let pki = Pki::new();
    for v in VERSIONS {
        let (port, mut server) = pki.s_server(&SServerOpts {
            version: Some(peer_version(v)),
            ..SServerOpts::default()
        });
        let config = pki.client_config(only(v), false);
        let mut sock = client_socket(port, &config, "localhost");
        sock.set_nonblocking(true).unwrap();
        let deadline = std::time::Instant::now() + WAIT;
        // true when done; false on would-block (after a short pause); panics on errors.
        let poll = |r: Result<(), tether::Error>| match r {
            Ok(()) => true,
            Err(e) if e.is_would_block() => {
                assert!(std::time::Instant::now() < deadline, "no progress");
                std::thread::sleep(std::time::Duration::from_millis(1));
                false
            }
            Err(e) => panic!("{v}: {e}"),
        };
        // (Whether it had to wait depends on scheduling: on a busy machine the server's
        // answer may already be there when the client reads.)
        while !poll(sock.handshake()) {}
        assert_eq!(sock.session().version(), Some(v));
        let mut taken = 0;
        let msg = b"non-blocking hello\n";
        while taken < msg.len() {
            let r = sock.write(&msg[taken..]).map(|n| taken += n);
            poll(r);
        }
        while !poll(sock.flush()) {}
        server.wait_for_output("non-blocking hello", WAIT).unwrap();
        let mut buf = [0u8; 64];
        // Nothing sent yet: a read returns at once.
        assert!(sock.read(&mut buf).unwrap_err().is_would_block());
        server.send_line("reply").unwrap();
        let mut got = Vec::new();
        while !got.ends_with(b"\n") {
            let r = sock.read(&mut buf).map(|n| {
                assert!(n > 0, "closed");
                got.extend_from_slice(&buf[..n]);
            });
            poll(r);
        }
        assert_eq!(got, b"reply\n");
        while !poll(sock.close()) {}
        server.wait_for_output("DONE", WAIT).unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// openssl s_client -> tether server

/// What a tether server saw of one connection.
#[derive(Debug)]
struct Seen {
    version: Option<TlsVersion>,
    client_cert: Option<Vec<u8>>,
    line: String,
}

/// A tether server that reads one line, answers `tether got: LINE` and closes.
fn line_server(config: tether::ServerConfig) -> (u16, Joined<Seen>) {
    tether_server(config, |r| {
        let mut sock = r.unwrap();
        let line = read_line(&mut sock).unwrap();
        sock.write_all(format!("tether got: {line}").as_bytes())
            .unwrap();
        let seen = Seen {
            version: sock.session().version(),
            client_cert: sock
                .session()
                .peer_certificates()
                .map(|c| c[0].as_ref().to_vec()),
            line,
        };
        sock.close().unwrap();
        seen
    })
}

fn openssl_to_server(v: TlsVersion, mtls: bool) {
    if !skip_or_fail("openssl") {
        return;
    }
    let pki = Pki::new();
    let (port, server) = line_server(pki.server_config(only(v), mtls));
    let mut client = pki.s_client(port, v, mtls);
    client
        .wait_for_output("Verify return code: 0 (ok)", WAIT)
        .unwrap();
    client.send_line("hello from s_client").unwrap();
    client
        .wait_for_output("tether got: hello from s_client", WAIT)
        .unwrap();
    let seen = server.join();
    assert_eq!(seen.line, "hello from s_client\n");
    assert_eq!(seen.version, Some(v));
    assert_eq!(
        seen.client_cert.as_deref(),
        mtls.then(|| pki.client.der()),
        "client certificate seen by the server"
    );
    let proto = match v {
        Tls12 => "Protocol  : TLSv1.2",
        Tls13 => "New, TLSv1.3",
    };
    client.wait_for_output(proto, WAIT).unwrap();
}

#[test]
fn openssl_to_server_tls12() {
    openssl_to_server(Tls12, false);
}

#[test]
fn openssl_to_server_tls13() {
    openssl_to_server(Tls13, false);
}

#[test]
fn openssl_to_server_tls12_mtls() {
    openssl_to_server(Tls12, true);
}

#[test]
fn openssl_to_server_tls13_mtls() {
    openssl_to_server(Tls13, true);
}

/// A tether server that reads one line from the client, then refuses it with access_denied
/// (what a gateway does to a device its allow-list does not name): OpenSSL opens the alert,
/// which tether sealed itself under the connection's keys, after the data record before it.
fn openssl_reads_a_refusal(v: TlsVersion) {
    if !skip_or_fail("openssl") {
        return;
    }
    let pki = Pki::new();
    let (port, server) = tether_server(pki.server_config(only(v), true), |r| {
        let mut sock = r.unwrap();
        let line = read_line(&mut sock).unwrap();
        sock.refuse(tether::error::Alert::ACCESS_DENIED).unwrap();
        line
    });
    let mut client = pki.s_client(port, v, true);
    client
        .wait_for_output("Verify return code: 0 (ok)", WAIT)
        .unwrap();
    client.send_line("let me in").unwrap();
    assert_eq!(server.join(), "let me in\n");
    client.wait_for_output("alert access denied", WAIT).unwrap();
}

#[test]
fn openssl_reads_a_refusal_tls12() {
    openssl_reads_a_refusal(Tls12);
}

#[test]
fn openssl_reads_a_refusal_tls13() {
    openssl_reads_a_refusal(Tls13);
}

// ---------------------------------------------------------------------------------------------
// tether client -> gnutls-serv (echo)

fn client_to_gnutls(v: TlsVersion, mtls: bool) {
    if !skip_or_fail("gnutls-serv") {
        return;
    }
    let pki = Pki::new();
    let port = free_port();
    let server = gnutls_serv(
        port,
        &pki.server.cert,
        &pki.server.key,
        &GnutlsServOpts {
            version: Some(peer_version(v)),
            client_ca: mtls.then(|| pki.ca_pem.clone()),
            ..GnutlsServOpts::default()
        },
    )
    .unwrap();
    let config = pki.client_config(only(v), mtls);
    let mut sock = connect(port, &config, "localhost").unwrap();
    assert_eq!(sock.session().version(), Some(v));
    let chain = sock.session().peer_certificates().unwrap();
    assert_eq!(chain[0].as_ref(), pki.server.der());

    sock.write_all(b"hello from tether\n").unwrap();
    assert_eq!(read_line(&mut sock).unwrap(), "hello from tether\n");
    server.wait_for_output("hello from tether", WAIT).unwrap();
    // A second record both ways, larger than one read chunk.
    let big = format!("{}\n", "x".repeat(10_000));
    sock.write_all(big.as_bytes()).unwrap();
    assert_eq!(read_line(&mut sock).unwrap(), big);
    sock.close().unwrap();
    let proto = match v {
        Tls12 => "(TLS1.2-",
        Tls13 => "(TLS1.3-",
    };
    server.wait_for_output(proto, WAIT).unwrap();
    if mtls {
        server
            .wait_for_output("Subject: CN=device-1", WAIT)
            .unwrap();
    } else {
        assert!(!server.output_so_far().contains("device-1"));
    }
}

#[test]
fn client_to_gnutls_tls12() {
    client_to_gnutls(Tls12, false);
}

#[test]
fn client_to_gnutls_tls13() {
    client_to_gnutls(Tls13, false);
}

#[test]
fn client_to_gnutls_tls12_mtls() {
    client_to_gnutls(Tls12, true);
}

#[test]
fn client_to_gnutls_tls13_mtls() {
    client_to_gnutls(Tls13, true);
}

// ---------------------------------------------------------------------------------------------
// gnutls-cli -> tether server

fn gnutls_to_server(v: TlsVersion, mtls: bool) {
    if !skip_or_fail("gnutls-cli") {
        return;
    }
    let pki = Pki::new();
    let (port, server) = line_server(pki.server_config(only(v), mtls));
    let mut client = gnutls_cli(
        port,
        &GnutlsCliOpts {
            ca_file: Some(pki.ca_pem.clone()),
            verify_hostname: Some("localhost".into()),
            sni_hostname: Some("localhost".into()),
            version: Some(peer_version(v)),
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
    assert_eq!(seen.version, Some(v));
    assert_eq!(
        seen.client_cert.as_deref(),
        mtls.then(|| pki.client.der()),
        "client certificate seen by the server"
    );
    let proto = match v {
        Tls12 => "(TLS1.2-",
        Tls13 => "(TLS1.3-",
    };
    client.wait_for_output(proto, WAIT).unwrap();
}

#[test]
fn gnutls_to_server_tls12() {
    gnutls_to_server(Tls12, false);
}

#[test]
fn gnutls_to_server_tls13() {
    gnutls_to_server(Tls13, false);
}

#[test]
fn gnutls_to_server_tls12_mtls() {
    gnutls_to_server(Tls12, true);
}

#[test]
fn gnutls_to_server_tls13_mtls() {
    gnutls_to_server(Tls13, true);
}

// ---------------------------------------------------------------------------------------------
// tether <-> tether over TCP

/// Two connections with one client config: data both ways, a clean close each way, and the
/// second connection resumes the first one's session.
#[test]
fn tether_to_tether_over_tcp() {
    let pki = Pki::new();
    for v in VERSIONS {
        for mtls in [false, true] {
            let server_config = pki.server_config(only(v), mtls);
            let client_config = pki.client_config(only(v), mtls);
            let (listener, port) = listen();
            let server = spawn("tether-server", move || {
                let mut seen = Vec::new();
                for _ in 0..2 {
                    let mut sock = accept_tls(&listener, &server_config);
                    sock.handshake().unwrap();
                    let line = read_line(&mut sock).unwrap();
                    let big: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
                    sock.write_all(&big).unwrap();
                    sock.close().unwrap();
                    seen.push((
                        line,
                        sock.session().version(),
                        sock.session().peer_certificates().is_some(),
                        sock.session().is_resumed(),
                    ));
                }
                seen
            });
            for i in 0..2 {
                let mut sock = connect(port, &client_config, "localhost").unwrap();
                assert_eq!(sock.session().version(), Some(v));
                assert_eq!(
                    sock.session().is_resumed(),
                    i == 1,
                    "{v} mtls={mtls} conn {i}"
                );
                sock.write_all(format!("conn {i}\n").as_bytes()).unwrap();
                let got = read_to_close(&mut sock).unwrap();
                assert_eq!(got.len(), 100_000);
                assert!(got.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8));
                sock.close().unwrap();
            }
            let seen = server.join();
            for (i, (line, version, cert, resumed)) in seen.into_iter().enumerate() {
                assert_eq!(line, format!("conn {i}\n"));
                assert_eq!(version, Some(v));
                // A resumed session carries the client certificate of the session it resumed.
                assert_eq!(cert, mtls, "{v} mtls={mtls} conn {i}");
                assert_eq!(resumed, i == 1);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Resumption against OpenSSL

/// Two connections from one client config to one `openssl s_server`: the second resumes.
fn resumption_against_openssl(v: TlsVersion) {
    if !skip_or_fail("openssl") {
        return;
    }
    let pki = Pki::new();
    let (port, mut server) = pki.s_server(&SServerOpts {
        version: Some(peer_version(v)),
        ..SServerOpts::default()
    });
    let config = pki.client_config(only(v), false);
    for i in 0..2 {
        let mut sock = connect(port, &config, "localhost").unwrap();
        assert_eq!(sock.session().version(), Some(v));
        assert_eq!(sock.session().is_resumed(), i == 1, "{v} connection {i}");
        // A line each way. For TLS 1.3 this also reads the tickets s_server sends after the
        // handshake, which is what the second connection resumes with.
        sock.write_all(format!("conn {i}\n").as_bytes()).unwrap();
        server.wait_for_output(&format!("conn {i}"), WAIT).unwrap();
        server.send_line(&format!("reply {i}")).unwrap();
        assert_eq!(read_line(&mut sock).unwrap(), format!("reply {i}\n"));
        sock.close().unwrap();
    }
    // s_server's own view: one new session, one reused.
    if v == Tls12 {
        server.wait_for_output("Reused session-id", WAIT).unwrap();
    }
}

#[test]
fn resumption_against_openssl_tls12() {
    resumption_against_openssl(Tls12);
}

#[test]
fn resumption_against_openssl_tls13() {
    resumption_against_openssl(Tls13);
}

// ---------------------------------------------------------------------------------------------
// Post-handshake messages from OpenSSL

/// `openssl s_server` in stdio mode for version `v`, server certificate only, its commands on
/// (`K`: key update, `r`: renegotiate).
fn stdio_s_server(port: u16, pki: &Pki, v: TlsVersion) -> testpeers::Peer {
    openssl_s_server(
        port,
        &pki.server.cert,
        &pki.server.key,
        &SServerOpts {
            version: Some(peer_version(v)),
            ..SServerOpts::default()
        },
    )
    .unwrap()
}

/// `openssl s_client` with its interactive commands on (`K`: key update, `R`: renegotiate),
/// which the testpeers helper turns off with `-nocommands`.
fn s_client_with_commands(port: u16, pki: &Pki, v: TlsVersion) -> testpeers::Peer {
    let mut cmd = std::process::Command::new("openssl");
    cmd.arg("s_client")
        .arg("-connect")
        .arg(format!("127.0.0.1:{port}"))
        .arg("-CAfile")
        .arg(&pki.ca_pem)
        .arg("-verify_return_error")
        .arg(match v {
            Tls12 => "-tls1_2",
            Tls13 => "-tls1_3",
        });
    testpeers::Peer::spawn("openssl s_client", cmd).unwrap()
}

/// The lines a server received, and the error that ended the connection (`None`: the
/// client closed it cleanly).
type LinesAndEnd = (Vec<String>, Option<tether::Error>);

/// A tether server that answers each line with `tether got: LINE` until the client closes.
fn echo_lines_server(config: tether::ServerConfig) -> (u16, Joined<LinesAndEnd>) {
    tether_server(config, |r| {
        let mut sock = r.unwrap();
        let mut lines = Vec::new();
        loop {
            match next_line(&mut sock) {
                Ok(None) => return (lines, None),
                Ok(Some(line)) => {
                    if let Err(e) = sock.write_all(format!("tether got: {line}").as_bytes()) {
                        return (lines, Some(e));
                    }
                    lines.push(line);
                }
                Err(e) => return (lines, Some(e)),
            }
        }
    })
}

/// A TCP transport that counts the bytes it has read, so a test can tell that a record with
/// no application data (a KeyUpdate) has arrived.
struct Counting(
    std::net::TcpStream,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
);

impl tether::socket::Transport for Counting {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, tether::error::TransportError> {
        let n = tether::socket::Transport::read(&mut self.0, buf)?;
        self.1.fetch_add(n, std::sync::atomic::Ordering::SeqCst);
        Ok(n)
    }
    fn write(&mut self, buf: &[u8]) -> Result<usize, tether::error::TransportError> {
        tether::socket::Transport::write(&mut self.0, buf)
    }
    fn set_read_timeout(
        &mut self,
        t: Option<std::time::Duration>,
    ) -> Result<(), tether::error::TransportError> {
        tether::socket::Transport::set_read_timeout(&mut self.0, t)
    }
    fn set_nonblocking(&mut self, on: bool) -> Result<(), tether::error::TransportError> {
        tether::socket::Transport::set_nonblocking(&mut self.0, on)
    }
}

/// TLS 1.3: s_server sends KeyUpdates that ask for ours (`K`); data keeps flowing both ways
/// under the new keys (OpenSSL could not decrypt what we send if we had not updated).
#[test]
fn openssl_key_update_tls13() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    if !skip_or_fail("openssl") {
        return;
    }
    let pki = Pki::new();
    let port = free_port();
    let mut server = stdio_s_server(port, &pki, Tls13);
    let config = pki.client_config(only(Tls13), false);
    let received = Arc::new(AtomicUsize::new(0));
    let tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut sock = tether::socket::TlsSocket::client(
        Counting(tcp, received.clone()),
        &config,
        "localhost",
        tether::net::StdClock::new(),
    )
    .unwrap();
    sock.set_io_timeout(Some(WAIT));
    sock.write_all(b"before\n").unwrap();
    server.wait_for_output("before", WAIT).unwrap();
    server.send_line("reply before").unwrap();
    assert_eq!(read_line(&mut sock).unwrap(), "reply before\n");
    for round in 0..3 {
        let seen = received.load(Ordering::SeqCst);
        server.send_line("K").unwrap();
        // Wait for the KeyUpdate record (s_server sends it at once), reading it through the
        // socket, which answers with our own KeyUpdate.
        sock.set_nonblocking(true).unwrap();
        let deadline = std::time::Instant::now() + WAIT;
        let mut buf = [0u8; 64];
        while received.load(Ordering::SeqCst) == seen {
            match sock.read(&mut buf) {
                Err(e) if e.is_would_block() => {}
                other => panic!("round {round}: {other:?} while waiting for KeyUpdate"),
            }
            assert!(std::time::Instant::now() < deadline, "no KeyUpdate arrived");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert!(sock.read(&mut buf).unwrap_err().is_would_block());
        sock.set_nonblocking(false).unwrap();
        server.send_line(&format!("after update {round}")).unwrap();
        assert_eq!(
            read_line(&mut sock).unwrap(),
            format!("after update {round}\n")
        );
        sock.write_all(format!("tether after update {round}\n").as_bytes())
            .unwrap();
        server
            .wait_for_output(&format!("tether after update {round}"), WAIT)
            .unwrap();
    }
    sock.close().unwrap();
    server.wait_for_output("DONE", WAIT).unwrap();
    assert!(!server.output_so_far().contains("ERROR"));
}

/// TLS 1.3, the other way round: s_client sends KeyUpdates that ask for ours (`K`) to a
/// tether server; OpenSSL decrypts our replies only if we updated our keys as asked.
#[test]
fn openssl_key_update_at_tether_server_tls13() {
    if !skip_or_fail("openssl") {
        return;
    }
    let pki = Pki::new();
    let (port, server) = echo_lines_server(pki.server_config(only(Tls13), false));
    let mut client = s_client_with_commands(port, &pki, Tls13);
    client
        .wait_for_output("Verify return code: 0 (ok)", WAIT)
        .unwrap();
    for round in 0..3 {
        client.send_line("K").unwrap();
        // Wait for this round's KEYUPDATE (s_client drops the rest of a stdin read holding a
        // command, so the next line must come in a later read).
        client
            .wait_for_output(&"KEYUPDATE\n".repeat(round + 1), WAIT)
            .unwrap();
        client.send_line(&format!("line {round}")).unwrap();
        client
            .wait_for_output(&format!("tether got: line {round}"), WAIT)
            .unwrap();
    }
    client.close_stdin();
    let (lines, err) = server.join();
    assert_eq!(lines, ["line 0\n", "line 1\n", "line 2\n"]);
    // s_client closes with close_notify when its stdin ends.
    assert_eq!(err, None);
}

/// TLS 1.3, the race behind the test above made certain: rustls' own client sends its
/// Finished, a KeyUpdate asking for ours and a line in one TCP write, so the tether server
/// reads them together. The server must answer the KeyUpdate before its first record under
/// its new keys (rustls, left to take the KeyUpdate during the handshake, queued the answer
/// where the record layer never saw it, and s_client then failed with "bad record mac").
#[test]
fn a_key_update_sent_with_the_clients_finished_is_answered() {
    use std::io::{Read as _, Write as _};
    let pki = Pki::new();
    let (port, server) = tether_server(pki.server_config(only(Tls13), false), |sock| {
        let mut sock = sock.unwrap();
        let line = read_line(&mut sock).unwrap();
        sock.write_all(format!("tether got: {line}").as_bytes())
            .unwrap();
        // Wait for the client to close, so its reads see everything written.
        read_to_close(&mut sock).unwrap()
    });
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca.cert_der().to_vec().into()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut client = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(WAIT)).unwrap();
    // The handshake, writing nothing once it has completed: the Finished stays queued.
    while client.is_handshaking() {
        if client.wants_write() {
            client.write_tls(&mut tcp).unwrap();
            continue;
        }
        assert!(client.read_tls(&mut tcp).unwrap() > 0, "the server closed");
        client.process_new_packets().unwrap();
    }
    client.refresh_traffic_keys().unwrap();
    client.writer().write_all(b"ping\n").unwrap();
    let mut flight = Vec::new();
    while client.wants_write() {
        client.write_tls(&mut flight).unwrap();
    }
    tcp.write_all(&flight).unwrap();
    // The server's tickets, its KeyUpdate, then its line under its new keys.
    let mut got = Vec::new();
    while !got.ends_with(b"\n") {
        assert!(client.read_tls(&mut tcp).unwrap() > 0, "the server closed");
        let state = client.process_new_packets().unwrap();
        let mut buf = vec![0u8; state.plaintext_bytes_to_read()];
        client.reader().read_exact(&mut buf).unwrap();
        got.extend(buf);
    }
    assert_eq!(got, b"tether got: ping\n");
    client.send_close_notify();
    while client.wants_write() {
        client.write_tls(&mut tcp).unwrap();
    }
    assert_eq!(server.join(), b"");
}

/// TLS 1.2: s_client asks to renegotiate (`R`). tether never renegotiates: the server's
/// record layer answers with a no_renegotiation warning (as rustls would), which OpenSSL's
/// client turns into a fatal
/// handshake_failure; the data before it was delivered, and nothing after it.
#[test]
fn openssl_renegotiation_refused_tls12() {
    if !skip_or_fail("openssl") {
        return;
    }
    let pki = Pki::new();
    let (port, server) = echo_lines_server(pki.server_config(only(Tls12), false));
    let mut client = s_client_with_commands(port, &pki, Tls12);
    client
        .wait_for_output("Verify return code: 0 (ok)", WAIT)
        .unwrap();
    client.send_line("line 0").unwrap();
    client.wait_for_output("tether got: line 0", WAIT).unwrap();
    client.send_line("R").unwrap();
    client.wait_for_output("RENEGOTIATING", WAIT).unwrap();
    client.wait_for_output("no renegotiation", WAIT).unwrap();
    let (lines, err) = server.join();
    assert_eq!(lines, ["line 0\n"]);
    assert_eq!(
        err,
        Some(tether::Error::Handshake(
            tether::error::HandshakeError::AlertReceived(tether::error::Alert(40))
        ))
    );
    // One handshake only.
    assert_eq!(
        client.output_so_far().matches("Verify return code").count(),
        1
    );
}

// ---------------------------------------------------------------------------------------------
// tether's record layer (records opened in place once the handshake has completed)

/// `openssl s_server -WWW` in a directory holding `name` (bytes `body`), started with `extra`
/// arguments; returns the peer and the directory (removed on drop).
fn www_server(
    port: u16,
    pki: &Pki,
    v: TlsVersion,
    body: &[u8],
    extra: &[&str],
) -> (testpeers::Peer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("blob.bin"), body).unwrap();
    let mut cmd = testpeers::openssl_s_server_command(
        port,
        &pki.server.cert,
        &pki.server.key,
        &SServerOpts {
            version: Some(peer_version(v)),
            ..SServerOpts::default()
        },
    );
    cmd.arg("-WWW").args(extra).current_dir(dir.path());
    let peer = testpeers::Peer::spawn("openssl s_server -WWW", cmd).unwrap();
    peer.wait_listening(testpeers::Transport::Tcp, port, WAIT)
        .unwrap();
    (peer, dir)
}

/// Fetches `/blob.bin` over `config`; returns the body after the HTTP header.
fn fetch_blob(port: u16, config: &tether::ClientConfig) -> (Vec<u8>, Option<tether::CipherSuite>) {
    let mut sock = connect(port, config, "localhost").unwrap();
    sock.write_all(b"GET /blob.bin HTTP/1.0\r\n\r\n").unwrap();
    let all = read_to_close(&mut sock).unwrap();
    let suite = sock.session().cipher_suite();
    let head = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP header");
    assert!(all.starts_with(b"HTTP/1.0 200"), "{:?}", &all[..head]);
    (all[head + 4..].to_vec(), suite)
}

/// Every cipher suite of both versions, against OpenSSL: 100,000 bytes from the server (six
/// full 16 KiB records and a short one, opened in place) arrive intact, and the server's
/// close_notify ends them. TLS 1.3 once more with OpenSSL padding every record to a multiple
/// of 512 bytes (the inner content type is found behind the zeros).
#[test]
fn every_suite_through_the_client_record_layer() {
    use tether::CipherSuite as S;
    if !skip_or_fail("openssl") {
        return;
    }
    let pki = Pki::new();
    let body: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let cases: [(TlsVersion, S, &[&str]); 7] = [
        (Tls12, S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, &[]),
        (Tls12, S::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, &[]),
        (Tls12, S::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, &[]),
        (Tls13, S::TLS13_AES_128_GCM_SHA256, &[]),
        (Tls13, S::TLS13_AES_256_GCM_SHA384, &[]),
        (Tls13, S::TLS13_CHACHA20_POLY1305_SHA256, &[]),
        (
            Tls13,
            S::TLS13_AES_128_GCM_SHA256,
            &["-record_padding", "512"],
        ),
    ];
    for (v, suite, extra) in cases {
        let port = free_port();
        let (mut server, _dir) = www_server(port, &pki, v, &body, extra);
        let config = tether::ClientConfig::builder(pki.trust())
            .versions(v, v)
            .cipher_suites(&[suite])
            .build()
            .unwrap();
        let (got, negotiated) = fetch_blob(port, &config);
        assert_eq!(negotiated, Some(suite), "{v:?} {extra:?}");
        assert!(
            got == body,
            "{v:?} {suite:?} {extra:?}: the body differs ({} bytes)",
            got.len()
        );
        server.kill();
    }
}

/// The same the other way: `openssl s_client` sends 100,000 bytes (records of up to 16 KiB,
/// as it reads its stdin) to a tether server, whose record layer opens them in place, with
/// every cipher suite of both versions and TLS 1.3 padding; s_client's close_notify ends
/// them.
#[test]
fn every_suite_through_the_server_record_layer() {
    if !skip_or_fail("openssl") {
        return;
    }
    let pki = Pki::new();
    let body: Vec<u8> = (0..100_000usize)
        .map(|i| b"abcdefghijklmnopqrstuvwxyz0123456789\n"[i % 37])
        .collect();
    let cases: [(TlsVersion, &str, &[&str]); 7] = [
        (
            Tls12,
            "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
            &["-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"],
        ),
        (
            Tls12,
            "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
            &["-cipher", "ECDHE-ECDSA-AES256-GCM-SHA384"],
        ),
        (
            Tls12,
            "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
            &["-cipher", "ECDHE-ECDSA-CHACHA20-POLY1305"],
        ),
        (
            Tls13,
            "TLS13_AES_128_GCM_SHA256",
            &["-ciphersuites", "TLS_AES_128_GCM_SHA256"],
        ),
        (
            Tls13,
            "TLS13_AES_256_GCM_SHA384",
            &["-ciphersuites", "TLS_AES_256_GCM_SHA384"],
        ),
        (
            Tls13,
            "TLS13_CHACHA20_POLY1305_SHA256",
            &["-ciphersuites", "TLS_CHACHA20_POLY1305_SHA256"],
        ),
        (
            Tls13,
            "TLS13_AES_128_GCM_SHA256",
            &[
                "-ciphersuites",
                "TLS_AES_128_GCM_SHA256",
                "-record_padding",
                "512",
            ],
        ),
    ];
    for (v, suite, args) in cases {
        let (port, server) = tether_server(pki.server_config(only(v), false), |r| {
            let mut sock = r.unwrap();
            let got = read_to_close(&mut sock);
            (got, sock.session().cipher_suite())
        });
        let mut client = testpeers::openssl_s_client(
            port,
            &testpeers::SClientOpts {
                ca_file: Some(pki.ca_pem.clone()),
                version: Some(peer_version(v)),
                args: args.iter().map(Into::into).collect(),
                ..testpeers::SClientOpts::default()
            },
        )
        .unwrap();
        client
            .wait_for_output("Verify return code: 0 (ok)", WAIT)
            .unwrap();
        client.send(&body).unwrap();
        // s_client sends close_notify when its stdin ends.
        client.close_stdin();
        let (got, negotiated) = server.join();
        let got = got.unwrap_or_else(|e| panic!("{v:?} {args:?}: {e}"));
        assert_eq!(
            negotiated.and_then(|s| s.as_str()),
            Some(suite),
            "{v:?} {args:?}"
        );
        assert!(
            got == body,
            "{v:?} {args:?}: the body differs ({} bytes)",
            got.len()
        );
        client.kill();
    }
}

/// TLS 1.2: s_server asks to renegotiate (`r`) after the handshake. tether never
/// renegotiates: the client answers the HelloRequest with a no_renegotiation warning (as
/// rustls does), which OpenSSL turns into a fatal handshake_failure ("no renegotiation" in its
/// log); the data before it was delivered, there was one handshake only.
#[test]
fn renegotiation_request_to_the_client_is_refused_tls12() {
    if !skip_or_fail("openssl") {
        return;
    }
    let pki = Pki::new();
    let port = free_port();
    let mut server = stdio_s_server(port, &pki, Tls12);
    let config = pki.client_config(only(Tls12), false);
    let mut sock = connect(port, &config, "localhost").unwrap();
    sock.write_all(b"before\n").unwrap();
    server.wait_for_output("before", WAIT).unwrap();
    server.send_line("reply before").unwrap();
    assert_eq!(read_line(&mut sock).unwrap(), "reply before\n");
    server.send_line("r").unwrap();
    // The client reads the HelloRequest, answers no_renegotiation, and OpenSSL ends it.
    assert_eq!(
        read_line(&mut sock).unwrap_err(),
        tether::Error::Handshake(tether::error::HandshakeError::AlertReceived(
            tether::error::Alert(40)
        ))
    );
    server.wait_for_output("no renegotiation", WAIT).unwrap();
    assert_eq!(
        server.output_so_far().matches("CIPHER is").count(),
        1,
        "one handshake only"
    );
    server.kill();
}
