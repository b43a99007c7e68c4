//! `tether::reconnect::Reconnecting` over real sockets on 127.0.0.1 against tether servers:
//! how it backs off when a TLS 1.3 server closes or refuses it after the handshake, and that a working
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

/// How the test server ends a connection it does not answer.
#[derive(Clone, Copy)]
enum End {
    /// access_denied: what a gateway does to a device its allow-list does not name.
    Refuse,
    /// close_notify: a server going away (a gateway draining for a restart).
    Close,
}

/// A TLS 1.3 tether server for `connections` connections: it completes each handshake and
/// ends the connection at once as `end` says, except connection `answers`, which answers one
/// 4-byte exchange and then closes with close_notify. Returns the port, the server thread and
/// a client config that trusts it.
fn server(
    connections: usize,
    answers: Option<usize>,
    end: End,
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
                continue;
            }
            let _ = match end {
                End::Refuse => s.refuse(Alert::ACCESS_DENIED),
                End::Close => s.close(),
            };
        }
    });
    (port, server, pki.client_config(only(Tls13), false))
}

/// Runs one `call` of a link to `port` with `max_attempts` in a thread; returns its result,
/// how long it took and the link's counters.
fn call_until_given_up(
    port: u16,
    config: tether::ClientConfig,
    initial: Duration,
    max: Duration,
    attempts: u32,
) -> (Result<(), Error>, Duration, tether::reconnect::Stats) {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut link = Reconnecting::new(&format!("localhost:{port}"), config)
            .unwrap()
            .backoff(initial, max)
            .max_attempts(attempts);
        let start = Instant::now();
        let result = link.call(ping);
        let _ = tx.send((result, start.elapsed(), link.stats().clone()));
    });
    rx.recv_timeout(Duration::from_secs(60))
        .expect("the client kept reconnecting: max_attempts never ended it")
}

#[test]
fn a_server_that_closes_after_the_tls13_handshake_gets_a_growing_backoff() {
    // The server completes every handshake, then sends close_notify at once. In TLS 1.3 each
    // connect succeeds on the client's side; the backoff must grow anyway, and max_attempts
    // must end the loop.
    let (port, server, config) = server(4, None, End::Close);
    let (result, took, stats) = call_until_given_up(
        port,
        config,
        Duration::from_millis(100),
        Duration::from_secs(2),
        4,
    );
    assert_eq!(result, Err(Error::Closed));
    assert_eq!(stats.connects, 4, "{stats:?}");
    assert_eq!(stats.failures, 4, "{stats:?}");
    // Three delays between four attempts, each at least half of 100, 200, 400 ms, and none
    // near the longest (2 s).
    assert!(
        took >= Duration::from_millis(350) && took < Duration::from_millis(2500),
        "the backoff did not grow from its initial delay: {took:?}"
    );
    server.join().unwrap();
}

#[test]
fn a_device_the_server_refuses_waits_the_longest_delay_each_time() {
    // access_denied after the handshake: the device is refused by policy, and retrying soon
    // would not change that; each retry waits the upper half of the longest delay (1 s).
    let (port, server, config) = server(3, None, End::Refuse);
    let (result, took, stats) = call_until_given_up(
        port,
        config,
        Duration::from_millis(10),
        Duration::from_secs(1),
        3,
    );
    assert_eq!(result, Err(denied()));
    assert!(tether::reconnect::refused(&denied()));
    assert_eq!(stats.connects, 3, "{stats:?}");
    // Two delays of 0.5 to 1 s each (a growing backoff from 10 ms would take 15 to 30 ms).
    assert!(
        took >= Duration::from_millis(1000) && took < Duration::from_secs(4),
        "{took:?}"
    );
    server.join().unwrap();
}

#[test]
fn a_working_link_starts_the_next_outage_at_the_initial_delay() {
    // Three connections closed at once grow the backoff; then the server answers, and the
    // link's next outage (one more close) waits the initial delay again, not the grown one.
    // Connection 3 answers, then is closed too: the link's next call reconnects.
    let (port, server, config) = server(5, Some(3), End::Close);
    let mut link = Reconnecting::new(&format!("localhost:{port}"), config)
        .unwrap()
        .backoff(Duration::from_millis(200), Duration::from_secs(5));
    // Connections 0 to 2 are closed, 3 answers: delays of at least 100 + 200 + 400 ms.
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
    // closes too; give up there.
    let mut link = link.max_attempts(2);
    let start = Instant::now();
    assert_eq!(link.call(ping), Err(Error::Closed));
    let took = start.elapsed();
    assert!(
        took < Duration::from_millis(400),
        "the backoff was not reset by the working link: {took:?}"
    );
    assert_eq!(link.stats().connects, 5);
    server.join().unwrap();
}
