//! `tether::reconnect::Reconnecting` over real sockets on 127.0.0.1 against tether servers:
//! how it backs off when a TLS 1.3 server refuses it after the handshake, and that a working
//! link starts the backoff again from its initial delay.

mod support;

use std::io::Read as _;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use tether::Error;
use tether::TlsVersion::Tls13;
use tether::error::{Alert, HandshakeError};
use tether::reconnect::Reconnecting;

use support::*;

/// What the client meets when the server refuses it.
fn denied() -> Error {
    Error::Handshake(HandshakeError::AlertReceived(Alert::ACCESS_DENIED))
}

/// One exchange: 4 bytes out, 4 bytes back; a close before the answer is `Error::Closed`.
fn ping(socket: &mut tether::net::TcpTlsSocket) -> Result<(), Error> {
    socket.write_all(b"ping")?;
    let mut buf = [0u8; 4];
    let mut got = 0;
    while got < buf.len() {
        match socket.read(&mut buf[got..])? {
            0 => return Err(Error::Closed),
            n => got += n,
        }
    }
    Ok(())
}

/// A TLS 1.3 tether server for `connections` connections: it completes each handshake and
/// refuses the client at once with access_denied (what a gateway does to a device its
/// allow-list does not name), except connection `answers`, which answers one 4-byte exchange
/// and then closes with close_notify. Returns the port, the
/// server thread and a client config that trusts it.
fn server(
    connections: usize,
    answers: Option<usize>,
) -> (u16, thread::JoinHandle<()>, tether::ClientConfig) {
    let pki = Pki::new();
    let server_config = pki.server_config(only(Tls13), false);
    let (listener, port) = listen();
    let server = thread::spawn(move || {
        for i in 0..connections {
            let mut s = accept_tls(&listener, &server_config);
            if s.handshake().is_err() {
                continue;
            }
            if answers == Some(i) {
                let mut buf = [0u8; 4];
                if s.read_exact(&mut buf).is_ok() {
                    let _ = s.write_all(&buf);
                }
                let _ = s.close();
            } else {
                let _ = s.refuse(Alert::ACCESS_DENIED);
            }
        }
    });
    (port, server, pki.client_config(only(Tls13), false))
}

#[test]
fn a_server_that_refuses_after_the_tls13_handshake_gets_a_growing_backoff() {
    // The server completes every handshake, then refuses the client with access_denied: what
    // a gateway does to a device taken off its allow-list. In TLS 1.3 each connect succeeds on the
    // client's side; the backoff must grow anyway, and max_attempts must end the loop.
    let (port, server, config) = server(4, None);
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut link = Reconnecting::new(&format!("localhost:{port}"), config)
            .unwrap()
            .backoff(Duration::from_millis(100), Duration::from_secs(2))
            .max_attempts(4);
        let start = Instant::now();
        let result = link.call(ping);
        let _ = tx.send((result, start.elapsed(), link.stats().clone()));
    });
    let (result, took, stats) = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the client kept reconnecting: max_attempts never ended it");
    assert_eq!(result, Err(denied()));
    assert_eq!(stats.connects, 4, "{stats:?}");
    assert_eq!(stats.failures, 4, "{stats:?}");
    // Three delays between four attempts, each at least half of 100, 200, 400 ms.
    assert!(
        took >= Duration::from_millis(350),
        "the backoff did not grow: {took:?}"
    );
    server.join().unwrap();
}

#[test]
fn a_working_link_starts_the_next_outage_at_the_initial_delay() {
    // Three refused connections grow the backoff; then the server answers, and the link's
    // next outage (one more refusal) waits the initial delay again, not the grown one.
    // Connection 3 answers, then is closed too: the link's next call reconnects.
    let (port, server, config) = server(5, Some(3));
    let mut link = Reconnecting::new(&format!("localhost:{port}"), config)
        .unwrap()
        .backoff(Duration::from_millis(200), Duration::from_secs(5));
    // Connections 0 to 2 are refused, 3 answers: delays of at least 100 + 200 + 400 ms.
    let start = Instant::now();
    link.call(ping).unwrap();
    assert!(
        start.elapsed() >= Duration::from_millis(700),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(link.stats().connects, 4);
    // Connection 3 is closed after its answer: the next call fails on it, waits the
    // initial delay (100 to 200 ms, not 400 to 800), and reconnects to connection 4, which
    // refuses; give up there.
    let mut link = link.max_attempts(2);
    let start = Instant::now();
    assert_eq!(link.call(ping), Err(denied()));
    let took = start.elapsed();
    assert!(
        took < Duration::from_millis(400),
        "the backoff was not reset by the working link: {took:?}"
    );
    assert_eq!(link.stats().connects, 5);
    server.join().unwrap();
}
