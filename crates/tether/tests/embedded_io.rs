//! `tether::embedded` (feature `embedded-io`): TLS over an `embedded_io::{Read, Write}`
//! transport, and `TlsSocket` used only through the embedded-io traits.
//!
//! The transport is a real `TcpStream` on 127.0.0.1 seen through
//! `embedded_io_adapters::std::FromStd` (so the socket sees nothing but embedded-io); the peers
//! are `openssl s_server` (TLS 1.2 and 1.3, client certificates required) and a tether server
//! thread. Error mapping: a certificate from another CA, a peer that cuts the TCP connection
//! without close_notify, transport errors, and the whole `ErrorKind` table.

mod support;

use std::net::{Shutdown, TcpStream};

use embedded_io::{Error as _, ErrorKind};
use embedded_io_adapters::std::FromStd;
use testpeers::skip_or_fail;
use tether::TlsVersion::{self, Tls12, Tls13};
use tether::embedded::{EmbeddedIo, error_kind, transport_error};
use tether::error::{
    CertificateError, ConfigError, HandshakeError, Timeout, TransportError, VersionError,
};
use tether::net::StdClock;
use tether::socket::TlsSocket;
use tether::{ClientConfig, Error, ServerConfig};

use support::*;

type EmbeddedSocket = TlsSocket<EmbeddedIo<FromStd<TcpStream>>, StdClock>;

/// A TCP connection seen only through embedded-io. Reads are bounded by [`WAIT`] at the OS
/// level so that a broken peer fails the test instead of hanging it.
fn embedded_tcp(port: u16) -> EmbeddedIo<FromStd<TcpStream>> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(WAIT)).unwrap();
    tcp.set_nodelay(true).unwrap();
    EmbeddedIo(FromStd::new(tcp))
}

fn connect(port: u16, config: &ClientConfig) -> Result<EmbeddedSocket, Error> {
    TlsSocket::connect(embedded_tcp(port), config, "localhost", StdClock::new())
}

/// Reads through `embedded_io::Read` until a newline.
fn read_line_eio<R: embedded_io::Read>(r: &mut R) -> Result<String, R::Error> {
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    while !got.ends_with(b"\n") {
        let n = r.read(&mut buf)?;
        assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    Ok(String::from_utf8(got).unwrap())
}

/// Generic embedded-io code: reads a line, answers it reversed, then expects end of stream.
fn serve_reverse_line<S: embedded_io::Read + embedded_io::Write>(
    s: &mut S,
) -> Result<(), S::Error> {
    let line = read_line_eio(s)?;
    let reply = line.trim_end().chars().rev().collect::<String>() + "\n";
    s.write_all(reply.as_bytes())?;
    s.flush()?;
    // The client's close_notify reads as end of stream.
    let mut rest = [0u8; 16];
    assert_eq!(s.read(&mut rest)?, 0);
    Ok(())
}

/// Generic embedded-io code: sends a line and reads the answer.
fn ask<S: embedded_io::Read + embedded_io::Write>(
    s: &mut S,
    line: &str,
) -> Result<String, S::Error> {
    s.write_all(line.as_bytes())?;
    s.flush()?;
    read_line_eio(s)
}

fn client_to_openssl(v: TlsVersion) {
    if !skip_or_fail("openssl") {
        return;
    }
    let pki = Pki::new();
    let (port, mut server) = pki.mtls_s_server(v);
    let config = pki.client_config(only(v), true);
    let mut sock = connect(port, &config).unwrap();
    assert_eq!(sock.session().version(), Some(v));
    assert_eq!(
        sock.session().peer_certificates().unwrap()[0].as_ref(),
        pki.server.der()
    );

    // Only the embedded-io traits from here on.
    embedded_io::Write::write_all(&mut sock, b"hello over embedded-io\n").unwrap();
    embedded_io::Write::flush(&mut sock).unwrap();
    server
        .wait_for_output("hello over embedded-io", WAIT)
        .unwrap();
    server.wait_for_output("CN = device-1", WAIT).unwrap();
    server.send_line("hello from openssl").unwrap();
    assert_eq!(read_line_eio(&mut sock).unwrap(), "hello from openssl\n");
    sock.close().unwrap();
    server.wait_for_output("DONE", WAIT).unwrap();
}

#[test]
fn client_over_embedded_io_to_openssl_tls12() {
    client_to_openssl(Tls12);
}

#[test]
fn client_over_embedded_io_to_openssl_tls13() {
    client_to_openssl(Tls13);
}

/// A tether server and a tether client, both over embedded-io transports, both driven only
/// through the embedded-io traits: data both ways, then close_notify read as `Ok(0)`.
#[test]
fn tether_to_tether_over_embedded_io() {
    for v in VERSIONS {
        let pki = Pki::new();
        let server_config: ServerConfig = pki.server_config(only(v), true);
        let (listener, port) = listen();
        let server = spawn("embedded-server", move || {
            let tcp = accept_within(&listener, WAIT);
            tcp.set_read_timeout(Some(WAIT)).unwrap();
            let mut sock = TlsSocket::server(
                EmbeddedIo(FromStd::new(tcp)),
                &server_config,
                StdClock::new(),
            )
            .unwrap();
            serve_reverse_line(&mut sock).unwrap();
            sock.session().version()
        });
        let config = pki.client_config(only(v), true);
        let mut sock = connect(port, &config).unwrap();
        assert_eq!(ask(&mut sock, "ping\n").unwrap(), "gnip\n");
        sock.close().unwrap();
        assert_eq!(server.join(), Some(v));
    }
}

/// A server whose certificate comes from another CA: refused with the certificate category,
/// seen by embedded-io code as `InvalidData`; no data is ever readable.
#[test]
fn wrong_ca_is_a_certificate_error_and_invalid_data() {
    let pki = Pki::new();
    let other = Pki::with_ca_name("tether test CA");
    let server_config = other.server_config(BOTH, false);
    let (listener, port) = listen();
    let server = spawn("other-ca-server", move || {
        let tcp = accept_within(&listener, WAIT);
        tcp.set_read_timeout(Some(WAIT)).unwrap();
        let mut sock = TlsSocket::server(
            EmbeddedIo(FromStd::new(tcp)),
            &server_config,
            StdClock::new(),
        )
        .unwrap();
        sock.handshake().unwrap_err()
    });
    let config = pki.client_config(BOTH, false);
    let err = connect(port, &config)
        .err()
        .expect("the handshake must fail");
    assert!(matches!(err, Error::Certificate(_)), "{err:?}");
    assert_eq!(err.category(), "certificate");
    assert_eq!(err.kind(), ErrorKind::InvalidData);
    // The server learns why from our alert.
    let server_err = server.join();
    assert!(
        matches!(
            server_err,
            Error::Handshake(HandshakeError::AlertReceived(_))
        ),
        "{server_err:?}"
    );
}

/// A peer that closes TCP without close_notify: `Truncated`, which embedded-io code sees as
/// `ConnectionAborted` (never as a clean `Ok(0)` end of stream).
#[test]
fn eof_without_close_notify_is_truncated() {
    let pki = Pki::new();
    let server_config = pki.server_config(BOTH, false);
    let (listener, port) = listen();
    let server = spawn("truncating-server", move || {
        let tcp = accept_within(&listener, WAIT);
        tcp.set_read_timeout(Some(WAIT)).unwrap();
        let mut sock = TlsSocket::server(
            EmbeddedIo(FromStd::new(tcp.try_clone().unwrap())),
            &server_config,
            StdClock::new(),
        )
        .unwrap();
        sock.handshake().unwrap();
        sock.write_all(b"partial").unwrap();
        tcp.shutdown(Shutdown::Both).unwrap();
    });
    let config = pki.client_config(BOTH, false);
    let mut sock = connect(port, &config).unwrap();
    server.join();
    let mut buf = [0u8; 64];
    let n = embedded_io::Read::read(&mut sock, &mut buf).unwrap();
    assert_eq!(&buf[..n], b"partial");
    let err = embedded_io::Read::read(&mut sock, &mut buf).unwrap_err();
    assert_eq!(err, Error::Truncated);
    assert_eq!(err.kind(), ErrorKind::ConnectionAborted);
}

/// Transport errors (as embedded-io reports them) become tether transport errors; a peer that
/// resets the connection mid-handshake is a reset or a handshake cut short, never a panic.
#[test]
fn transport_errors_map_onto_transport_error() {
    let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
    assert_eq!(transport_error(reset), TransportError::Reset);
    let broken = std::io::Error::from(std::io::ErrorKind::BrokenPipe);
    assert_eq!(transport_error(broken), TransportError::Reset);
    // A transport that gave up waiting: the socket checks its deadline and retries.
    assert_eq!(
        transport_error(ErrorKind::TimedOut),
        TransportError::WouldBlock
    );
    match transport_error(ErrorKind::PermissionDenied) {
        TransportError::Other(s) => assert!(s.contains("PermissionDenied"), "{s}"),
        other => panic!("{other:?}"),
    }

    // A write into a connection the peer has reset.
    let pki = Pki::new();
    let (listener, port) = listen();
    let server = spawn("silent", move || {
        let tcp = accept_within(&listener, WAIT);
        // Read the ClientHello, then close with unread data: the kernel sends RST.
        let mut buf = [0u8; 16];
        std::io::Read::read(&mut &tcp, &mut buf).unwrap();
        drop(tcp);
    });
    let config = pki.client_config(BOTH, false);
    let err = connect(port, &config)
        .err()
        .expect("the handshake must fail");
    server.join();
    // Reset, or EOF during the handshake, depending on timing; never a success, never a panic.
    assert!(
        matches!(
            err,
            Error::Transport(TransportError::Reset) | Error::Handshake(HandshakeError::PeerClosed)
        ),
        "{err:?}"
    );
    assert!(matches!(
        err.kind(),
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
    ));
}

/// Every tether error category has its documented embedded-io kind.
#[test]
fn error_kind_table() {
    let pin: tether::Pin = "sha256/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
        .parse()
        .unwrap();
    let cases = [
        (
            Error::Transport(TransportError::WouldBlock),
            ErrorKind::Interrupted,
        ),
        (
            Error::Transport(TransportError::Reset),
            ErrorKind::ConnectionReset,
        ),
        (
            Error::Transport(TransportError::Other("x".into())),
            ErrorKind::Other,
        ),
        (Error::Timeout(Timeout::Handshake), ErrorKind::TimedOut),
        (Error::Timeout(Timeout::Io), ErrorKind::TimedOut),
        (Error::Truncated, ErrorKind::ConnectionAborted),
        (
            Error::Certificate(CertificateError::UnknownIssuer),
            ErrorKind::InvalidData,
        ),
        (
            Error::PinMismatch { presented: pin },
            ErrorKind::InvalidData,
        ),
        (
            Error::TofuKeyChanged {
                host: "h".into(),
                stored: pin,
                presented: pin,
            },
            ErrorKind::InvalidData,
        ),
        (Error::Protocol("x".into()), ErrorKind::InvalidData),
        (
            Error::Handshake(HandshakeError::PeerClosed),
            ErrorKind::ConnectionAborted,
        ),
        (
            Error::Version(VersionError::PeerRefused),
            ErrorKind::Unsupported,
        ),
        (
            Error::Config(ConfigError::NoTrustAnchors),
            ErrorKind::InvalidInput,
        ),
        (Error::BufferTooSmall { needed: 1 }, ErrorKind::InvalidInput),
        (Error::Closed, ErrorKind::NotConnected),
    ];
    for (err, kind) in cases {
        assert_eq!(error_kind(&err), kind, "{err:?}");
        assert_eq!(embedded_io::Error::kind(&err), kind, "{err:?}");
        // The message is still tether's own (what happened, what to do).
        assert!(!err.to_string().is_empty());
    }
}

/// An embedded-io stream whose reads give up after a while with `ErrorKind::TimedOut`, as
/// HAL sockets with a receive timeout do (a std socket's timeout is `WouldBlock`, which
/// embedded-io has no kind for).
struct GivesUp(TcpStream);

impl embedded_io::ErrorType for GivesUp {
    type Error = ErrorKind;
}

impl embedded_io::Read for GivesUp {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, ErrorKind> {
        std::io::Read::read(&mut self.0, buf).map_err(|e| match e.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => ErrorKind::TimedOut,
            k => k.into(),
        })
    }
}

impl embedded_io::Write for GivesUp {
    fn write(&mut self, buf: &[u8]) -> Result<usize, ErrorKind> {
        std::io::Write::write(&mut self.0, buf).map_err(|e| e.kind().into())
    }
    fn flush(&mut self) -> Result<(), ErrorKind> {
        Ok(())
    }
}

/// A peer that accepts TCP and never answers: the transport's timed-out reads are retried
/// and the handshake deadline (checked between them) ends the handshake with
/// `Timeout(Handshake)`, `TimedOut` to embedded-io code.
#[test]
fn handshake_deadline_is_checked_between_timed_out_reads() {
    let pki = Pki::new();
    let (listener, port) = listen();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let silent = spawn("silent-peer", move || {
        let tcp = accept_within(&listener, WAIT);
        // Hold the connection open, saying nothing, until the client is done.
        let _ = done_rx.recv_timeout(WAIT);
        drop(tcp);
    });
    let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(std::time::Duration::from_millis(20)))
        .unwrap();
    let config = ClientConfig::builder(pki.trust())
        .handshake_timeout(std::time::Duration::from_millis(200))
        .build()
        .unwrap();
    let err = TlsSocket::connect(
        EmbeddedIo(GivesUp(tcp)),
        &config,
        "localhost",
        StdClock::new(),
    )
    .err()
    .expect("a silent peer must time out");
    done_tx.send(()).unwrap();
    silent.join();
    assert_eq!(err, Error::Timeout(Timeout::Handshake));
    assert_eq!(err.kind(), ErrorKind::TimedOut);
}
