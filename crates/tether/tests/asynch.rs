//! `tether::asynch::AsyncTlsSocket` (feature `async`) over real TCP on 127.0.0.1, through
//! `embedded_io_adapters::tokio_1::FromTokio` (the socket sees only `embedded_io_async`):
//! against `openssl s_server` (TLS 1.2 and 1.3, client certificates required), async client
//! against async server, close_notify, truncation, a certificate from another CA, the
//! handshake deadline (on a clock the test moves), and gathered writes (counted as TLS records
//! on the wire by a recording relay).
//!
//! Every await that waits for a peer is bounded by `tokio::time::timeout(WAIT, ..)`, so a
//! broken peer fails the test instead of hanging it.

mod relay;
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use embedded_io_adapters::tokio_1::FromTokio;
use embedded_io_async::Write as _;
use testpeers::skip_or_fail;
use tether::TlsVersion::{self, Tls12, Tls13};
use tether::asynch::AsyncTlsSocket;
use tether::error::{Alert, HandshakeError, Timeout};
use tether::net::StdClock;
use tether::time::Clock;
use tether::{ClientConfig, Error, Instant, ServerConfig};
use tokio::net::{TcpListener, TcpStream};

use relay::{Relay, tls_records};
use support::{BOTH, Pki, VERSIONS, WAIT, only};

type Tcp = FromTokio<TcpStream>;

/// A clock the test can move forward: the real monotonic clock plus an offset.
#[derive(Clone)]
struct TestClock {
    base: StdClock,
    offset_us: Arc<AtomicU64>,
}

impl TestClock {
    fn new() -> TestClock {
        TestClock {
            base: StdClock::new(),
            offset_us: Arc::new(AtomicU64::new(0)),
        }
    }
    fn advance(&self, d: Duration) {
        self.offset_us
            .fetch_add(d.as_micros() as u64, Ordering::SeqCst);
    }
}

impl Clock for TestClock {
    fn now(&self) -> Instant {
        Instant::from_micros(self.base.now().as_micros() + self.offset_us.load(Ordering::SeqCst))
    }
}

async fn within<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(WAIT, f)
        .await
        .expect("the peer did not answer in time")
}

async fn tcp(port: u16) -> Tcp {
    let s = within(TcpStream::connect(("127.0.0.1", port)))
        .await
        .unwrap();
    s.set_nodelay(true).unwrap();
    FromTokio::new(s)
}

async fn listen() -> (TcpListener, u16) {
    let l = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    let port = l.local_addr().unwrap().port();
    (l, port)
}

async fn connect(port: u16, config: &ClientConfig) -> Result<AsyncTlsSocket<Tcp, StdClock>, Error> {
    within(AsyncTlsSocket::connect(
        tcp(port).await,
        config,
        "localhost",
        StdClock::new(),
    ))
    .await
}

/// Reads until a newline through `embedded_io_async::Read`.
/// Accepts one TCP connection and completes the server's handshake on it.
async fn accept(listener: &TcpListener, config: &ServerConfig) -> AsyncTlsSocket<Tcp, StdClock> {
    let (tcp, _) = within(listener.accept()).await.unwrap();
    within(AsyncTlsSocket::accept(
        FromTokio::new(tcp),
        config,
        StdClock::new(),
    ))
    .await
    .unwrap()
}

async fn read_line<R: embedded_io_async::Read>(r: &mut R) -> Result<String, R::Error> {
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    while !got.ends_with(b"\n") {
        let n = within(r.read(&mut buf)).await?;
        assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    Ok(String::from_utf8(got).unwrap())
}

async fn client_to_openssl(v: TlsVersion) {
    if !skip_or_fail("openssl") {
        return;
    }
    let pki = Pki::new();
    let (port, mut server) = pki.mtls_s_server(v);
    let config = pki.client_config(only(v), true);
    let mut sock = connect(port, &config).await.unwrap();
    assert!(!sock.is_handshaking());
    assert_eq!(sock.session().version(), Some(v));
    assert_eq!(
        sock.session().peer_certificates().unwrap()[0].as_ref(),
        pki.server.der()
    );
    within(sock.write_all(b"hello over async\n")).await.unwrap();
    within(sock.flush()).await.unwrap();
    server.wait_for_output("hello over async", WAIT).unwrap();
    server.wait_for_output("CN = device-1", WAIT).unwrap();
    server.send_line("hello from openssl").unwrap();
    assert_eq!(read_line(&mut sock).await.unwrap(), "hello from openssl\n");
    within(sock.close()).await.unwrap();
    // s_server prints DONE once the client's close_notify has arrived.
    server.wait_for_output("DONE", WAIT).unwrap();
}

#[tokio::test]
async fn async_client_to_openssl_tls12() {
    client_to_openssl(Tls12).await;
}

#[tokio::test]
async fn async_client_to_openssl_tls13() {
    client_to_openssl(Tls13).await;
}

/// Async client and async server (`accept`), both tether, client certificates required: data
/// both ways, then close_notify read as `Ok(0)` on each side.
#[tokio::test]
async fn async_client_to_async_server() {
    for v in VERSIONS {
        let pki = Pki::new();
        let server_config: ServerConfig = pki.server_config(only(v), true);
        let (listener, port) = listen().await;
        let server = tokio::spawn(async move {
            let mut sock = accept(&listener, &server_config).await;
            let line = read_line(&mut sock).await.unwrap();
            let reply = line.trim_end().chars().rev().collect::<String>() + "\n";
            within(sock.write_all(reply.as_bytes())).await.unwrap();
            within(sock.flush()).await.unwrap();
            let mut rest = [0u8; 8];
            // The client's close_notify.
            assert_eq!(within(sock.read(&mut rest)).await.unwrap(), 0);
            within(sock.close()).await.unwrap();
            sock.session().version()
        });
        let config = pki.client_config(only(v), true);
        let mut sock = connect(port, &config).await.unwrap();
        within(sock.write_all(b"async ping\n")).await.unwrap();
        within(sock.flush()).await.unwrap();
        assert_eq!(read_line(&mut sock).await.unwrap(), "gnip cnysa\n");
        within(sock.close()).await.unwrap();
        let mut rest = [0u8; 8];
        // The server's close_notify after ours.
        assert_eq!(within(sock.read(&mut rest)).await.unwrap(), 0);
        assert_eq!(server.await.unwrap(), Some(v));
    }
}

/// An async server that reads the client's request and refuses it (access_denied): the client
/// reads the alert, not a reply and not a close.
#[tokio::test]
async fn an_async_server_refuses_a_client_with_an_alert() {
    for v in VERSIONS {
        let pki = Pki::new();
        let server_config: ServerConfig = pki.server_config(only(v), true);
        let (listener, port) = listen().await;
        let server = tokio::spawn(async move {
            let mut sock = accept(&listener, &server_config).await;
            let line = read_line(&mut sock).await.unwrap();
            within(sock.refuse(Alert::ACCESS_DENIED)).await.unwrap();
            // Refused once, closed for good: nothing more is sent.
            assert_eq!(within(sock.write(b"late")).await, Err(Error::Closed));
            line
        });
        let config = pki.client_config(only(v), true);
        let mut sock = connect(port, &config).await.unwrap();
        within(sock.write_all(b"may I?\n")).await.unwrap();
        within(sock.flush()).await.unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(
            within(sock.read(&mut buf)).await,
            Err(Error::Handshake(HandshakeError::AlertReceived(
                Alert::ACCESS_DENIED
            )))
        );
        assert_eq!(server.await.unwrap(), "may I?\n");
    }
}

/// A server whose certificate comes from another CA (same name): refused with the certificate
/// category, before any application data.
#[tokio::test]
async fn other_ca_is_refused_with_certificate_error() {
    let pki = Pki::new();
    let other = Pki::with_ca_name("tether test CA");
    let server_config = other.server_config(BOTH, false);
    let (listener, port) = listen().await;
    let server = tokio::spawn(async move {
        let (tcp, _) = within(listener.accept()).await.unwrap();
        within(AsyncTlsSocket::accept(
            FromTokio::new(tcp),
            &server_config,
            StdClock::new(),
        ))
        .await
        .err()
        .expect("the client must refuse")
    });
    let err = connect(port, &pki.client_config(BOTH, false))
        .await
        .err()
        .expect("another CA's certificate must be refused");
    assert!(matches!(err, Error::Certificate(_)), "{err:?}");
    assert_eq!(err.category(), "certificate");
    // The server was told why (our alert), not left hanging.
    let server_err = server.await.unwrap();
    assert!(
        matches!(
            server_err,
            Error::Handshake(HandshakeError::AlertReceived(_))
        ),
        "{server_err:?}"
    );
}

/// A peer that closes TCP without close_notify after sending data: the data, then
/// `Truncated` (never a clean `Ok(0)`).
#[tokio::test]
async fn eof_without_close_notify_is_truncated() {
    let pki = Pki::new();
    let server_config = pki.server_config(BOTH, false);
    let (listener, port) = listen().await;
    let server = tokio::spawn(async move {
        let (tcp, _) = within(listener.accept()).await.unwrap();
        let mut sock = within(AsyncTlsSocket::accept(
            FromTokio::new(tcp),
            &server_config,
            StdClock::new(),
        ))
        .await
        .unwrap();
        within(sock.write_all(b"partial")).await.unwrap();
        within(sock.flush()).await.unwrap();
        let (tcp, _) = sock.into_parts();
        // Closed without close_notify.
        drop(tcp);
    });
    let mut sock = connect(port, &pki.client_config(BOTH, false))
        .await
        .unwrap();
    server.await.unwrap();
    let mut buf = [0u8; 64];
    let n = within(sock.read(&mut buf)).await.unwrap();
    assert_eq!(&buf[..n], b"partial");
    let err = within(sock.read(&mut buf)).await.unwrap_err();
    assert_eq!(err, Error::Truncated);
}

/// The handshake deadline, on a clock the test moves: the server answers only after the
/// client's clock has passed the handshake timeout, and the client fails with
/// `Timeout(Handshake)` instead of completing.
#[tokio::test]
async fn handshake_past_its_deadline_fails_with_timeout() {
    let pki = Pki::new();
    let server_config = pki.server_config(BOTH, false);
    let (listener, port) = listen().await;
    let clock = TestClock::new();
    let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let (tcp, _) = within(listener.accept()).await.unwrap();
        // Hold the handshake until the test has moved the client's clock.
        within(go_rx).await.unwrap();
        let _ = within(AsyncTlsSocket::accept(
            FromTokio::new(tcp),
            &server_config,
            StdClock::new(),
        ))
        .await;
    });
    let config = tether::ClientConfig::builder(pki.trust())
        .handshake_timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut sock =
        AsyncTlsSocket::client(tcp(port).await, &config, "localhost", clock.clone()).unwrap();
    clock.advance(Duration::from_secs(11));
    go_tx.send(()).unwrap();
    let err = within(sock.handshake()).await.unwrap_err();
    assert_eq!(err, Error::Timeout(Timeout::Handshake));
    // The failure sticks.
    let err = within(sock.write(b"x")).await.unwrap_err();
    assert_eq!(err, Error::Timeout(Timeout::Handshake));
    drop(sock);
    server.await.unwrap();
}

/// Writes go out one record each by default; with a write buffer, many small writes (the way
/// rust-mqtt writes a packet, field by field) leave as one record on `flush`. Counted on the
/// wire by a recording relay.
#[tokio::test]
async fn write_buffer_gathers_small_writes_into_one_record() {
    for buffer in [0usize, 1024] {
        let pki = Pki::new();
        let server_config = pki.server_config(only(Tls13), false);
        let (listener, port) = listen().await;
        let server = tokio::spawn(async move {
            let mut sock = accept(&listener, &server_config).await;
            let mut got = Vec::new();
            let mut buf = [0u8; 64];
            loop {
                let n = within(sock.read(&mut buf)).await.unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            within(sock.close()).await.unwrap();
            got
        });
        let relay = tokio::task::spawn_blocking(move || Relay::start(port))
            .await
            .unwrap();
        let mut sock = connect(relay.port(), &pki.client_config(only(Tls13), false))
            .await
            .unwrap();
        sock.set_write_buffer(buffer);
        for b in b"0123456789" {
            assert_eq!(within(sock.write(&[*b])).await.unwrap(), 1);
        }
        within(sock.flush()).await.unwrap();
        within(sock.close()).await.unwrap();
        let mut rest = [0u8; 8];
        assert_eq!(within(sock.read(&mut rest)).await.unwrap(), 0);
        assert_eq!(server.await.unwrap(), b"0123456789");
        // Our side of the wire: TLS 1.3 encrypts everything after the ClientHello as
        // application data records (type 23): our Finished, the data, close_notify. The server
        // has read up to close_notify, so the relay has recorded all of it.
        let wire = relay.recorded().to_server;
        let encrypted = tls_records(&wire)
            .into_iter()
            .filter(|(ty, _)| *ty == 23)
            .count();
        let data_records = if buffer == 0 { 10 } else { 1 };
        assert_eq!(encrypted, 1 + data_records + 1, "write buffer {buffer}");
        tokio::task::spawn_blocking(move || drop(relay))
            .await
            .unwrap();
    }
}

/// A read dropped while waiting (here by a timeout, as `select!` would) loses nothing: the
/// next read gets the data, and the gathered write made before it was sent.
#[tokio::test]
async fn a_cancelled_read_loses_nothing() {
    let pki = Pki::new();
    let server_config = pki.server_config(BOTH, false);
    let (listener, port) = listen().await;
    let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let (tcp, _) = within(listener.accept()).await.unwrap();
        let mut sock = within(AsyncTlsSocket::accept(
            FromTokio::new(tcp),
            &server_config,
            StdClock::new(),
        ))
        .await
        .unwrap();
        let line = read_line(&mut sock).await.unwrap();
        // Answer only once the client's first read has been cancelled.
        within(go_rx).await.unwrap();
        within(sock.write_all(format!("re: {line}").as_bytes()))
            .await
            .unwrap();
        within(sock.close()).await.unwrap();
    });
    let mut sock = connect(port, &pki.client_config(BOTH, false))
        .await
        .unwrap();
    sock.set_write_buffer(512);
    // Gathered, not sent yet: the read below must send it before it waits.
    within(sock.write_all(b"question\n")).await.unwrap();
    let mut buf = [0u8; 64];
    let cancelled = tokio::time::timeout(Duration::from_millis(50), sock.read(&mut buf)).await;
    assert!(cancelled.is_err(), "nothing was sent yet: {cancelled:?}");
    go_tx.send(()).unwrap();
    assert_eq!(read_line(&mut sock).await.unwrap(), "re: question\n");
    assert_eq!(within(sock.read(&mut buf)).await.unwrap(), 0);
    server.await.unwrap();
}
