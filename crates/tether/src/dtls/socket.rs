//! `DtlsSocket`: a DTLS socket over any [`DatagramTransport`], blocking or non-blocking.
//!
//! The socket owns a transport, a [`Session`] and a [`Clock`], and holds no protocol logic: it
//! moves datagrams between the two, runs the session's retransmission timer while it waits, and
//! maps would-block and timeouts as [`TlsSocket`](crate::socket::TlsSocket) does (the shape of
//! Mbed OS' `DTLSSocket`).
//!
//! - **Blocking** (the default): [`handshake`](DtlsSocket::handshake), [`recv`](DtlsSocket::recv),
//!   [`send`](DtlsSocket::send) and [`close`](DtlsSocket::close) return when done. Each blocking
//!   receive is bounded ([`DatagramTransport::set_read_timeout`]) by the next retransmission,
//!   the handshake deadline, or the I/O timeout set with
//!   [`set_io_timeout`](DtlsSocket::set_io_timeout); when the handshake deadline or the I/O
//!   timeout passes the call fails with [`Error::Timeout`] (or, when the peer had sent a
//!   fatal alert the session had to ignore, [`HandshakeError::UnauthenticatedAlert`] naming
//!   it: see [`Session::unauthenticated_alert`](super::Session::unauthenticated_alert)).
//! - **Non-blocking**: after [`set_nonblocking(true)`](DtlsSocket::set_nonblocking) every call
//!   returns [`Error::Transport(WouldBlock)`](crate::error::TransportError::WouldBlock) (test
//!   with [`Error::is_would_block`]) when it cannot finish now; call it again when the transport
//!   is readable, or at [`poll_timeout`](DtlsSocket::poll_timeout) (retransmissions are sent
//!   from inside the calls).
//!
//! Datagram semantics: one [`send`](DtlsSocket::send) is one record in one datagram (refused if
//! it does not fit the MTU, never split or truncated); one [`recv`](DtlsSocket::recv) returns
//! one record. Records may be lost or reordered, never duplicated. `recv` returns `Ok(0)` only
//! after the peer's close_notify.
//!
//! The std adapter: a *connected* `std::net::UdpSocket` is a [`DatagramTransport`];
//! [`connect`] resolves, connects and completes the handshake, [`accept_one`] serves the first
//! peer that sends to a bound socket.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = tether::dtls::ClientConfig::builder(tether::Trust::from_pem(&std::fs::read("ca.pem")?)?)
//!     .build()?;
//! let mut socket = tether::dtls::connect("device.example:4433", &config)?;
//! socket.send(b"hello")?;
//! let mut buf = [0u8; 1500];
//! let n = socket.recv(&mut buf)?;
//! # Ok(()) }
//! ```

use alloc::vec::Vec;
use core::time::Duration;
use std::io;
use std::net::{ToSocketAddrs, UdpSocket};

use super::config::{ClientConfig, ServerConfig};
use super::session::Session;
use crate::error::{ConfigError, Error, HandshakeError, Timeout, TransportError};
use crate::net::StdClock;
use crate::session::Recv;
use crate::socket::TransportMode;
use crate::time::{Clock, Instant};

/// The largest datagram a socket reads: any UDP payload, so nothing is ever cut short.
const MAX_DATAGRAM: usize = 65535;

/// A datagram transport (a connected UDP socket, a smoltcp UDP socket, a radio link...): what a
/// [`DtlsSocket`] runs over. It exchanges datagrams with one peer.
pub trait DatagramTransport {
    /// Sends `datagram` whole. A non-blocking transport that cannot send now returns
    /// `Err(TransportError::WouldBlock)`; it must never send part of it.
    fn send(&mut self, datagram: &[u8]) -> Result<(), TransportError>;

    /// Receives one datagram into `buf`, returning its length. A non-blocking transport with
    /// nothing to read, or a blocking one whose read timeout passed, returns
    /// `Err(TransportError::WouldBlock)`.
    fn recv(&mut self, buf: &mut [u8]) -> Result<usize, TransportError>;

    /// Bounds how long one blocking `recv` may wait (`None`: unbounded). Transports that cannot
    /// do this may ignore it; the socket then checks its timers between datagrams only.
    fn set_read_timeout(&mut self, _timeout: Option<Duration>) -> Result<(), TransportError> {
        Ok(())
    }

    /// Switches the transport between blocking and non-blocking mode.
    fn set_nonblocking(&mut self, _nonblocking: bool) -> Result<(), TransportError> {
        Ok(())
    }

    /// Closes the transport (used with [`TransportMode::Close`]).
    fn shutdown(&mut self) {}
}

impl<T: DatagramTransport + ?Sized> DatagramTransport for &mut T {
    fn send(&mut self, datagram: &[u8]) -> Result<(), TransportError> {
        (**self).send(datagram)
    }
    fn recv(&mut self, buf: &mut [u8]) -> Result<usize, TransportError> {
        (**self).recv(buf)
    }
    fn set_read_timeout(&mut self, timeout: Option<Duration>) -> Result<(), TransportError> {
        (**self).set_read_timeout(timeout)
    }
    fn set_nonblocking(&mut self, nonblocking: bool) -> Result<(), TransportError> {
        (**self).set_nonblocking(nonblocking)
    }
    fn shutdown(&mut self) {
        (**self).shutdown()
    }
}

/// A DTLS socket over a [`DatagramTransport`]. See the [module docs](self).
#[derive(Debug)]
pub struct DtlsSocket<T: DatagramTransport, C: Clock> {
    transport: T,
    session: Session,
    clock: C,
    /// A datagram the transport would not take yet.
    pending: Option<Vec<u8>>,
    mode: TransportMode,
    nonblocking: bool,
    io_timeout: Option<Duration>,
    read_timeout_set: Option<Option<Duration>>,
    /// The receive buffer: allocated (and zeroed) once, on the first receive.
    rx_buf: Vec<u8>,
}

impl<T: DatagramTransport, C: Clock> DtlsSocket<T, C> {
    /// A client socket over `transport`; the handshake runs on the first call that needs it (or
    /// call [`handshake`](Self::handshake)).
    pub fn client(
        transport: T,
        config: &ClientConfig,
        server_name: &str,
        clock: C,
    ) -> Result<Self, Error> {
        let session = Session::client(config, server_name, clock.now())?;
        Ok(Self::with_session(transport, session, clock))
    }

    /// A client socket that completes the handshake before returning (blocking transports).
    pub fn connect(
        transport: T,
        config: &ClientConfig,
        server_name: &str,
        clock: C,
    ) -> Result<Self, Error> {
        let mut s = Self::client(transport, config, server_name, clock)?;
        s.handshake()?;
        Ok(s)
    }

    /// A server socket over a transport connected to one client.
    pub fn server(transport: T, config: &ServerConfig, clock: C) -> Result<Self, Error> {
        let session = Session::server(config, clock.now())?;
        Ok(Self::with_session(transport, session, clock))
    }

    /// A socket around an existing session.
    pub fn with_session(transport: T, session: Session, clock: C) -> Self {
        DtlsSocket {
            transport,
            session,
            clock,
            pending: None,
            mode: TransportMode::Close,
            nonblocking: false,
            io_timeout: None,
            read_timeout_set: None,
            rx_buf: Vec::new(),
        }
    }

    /// What `close` does to the transport.
    pub fn set_transport_mode(&mut self, mode: TransportMode) {
        self.mode = mode;
    }

    /// Switches between blocking (default) and non-blocking use.
    pub fn set_nonblocking(&mut self, nonblocking: bool) -> Result<(), Error> {
        self.transport
            .set_nonblocking(nonblocking)
            .map_err(Error::Transport)?;
        self.nonblocking = nonblocking;
        Ok(())
    }

    /// A deadline for each blocking `recv` (and `send`) after the handshake (`None`: wait
    /// forever).
    pub fn set_io_timeout(&mut self, timeout: Option<Duration>) {
        self.io_timeout = timeout;
    }

    /// The session: version, peer certificate, [`max_send_size`](Session::max_send_size)...
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// The transport.
    pub fn transport(&self) -> &T {
        &self.transport
    }

    /// The transport, mutably (do not send or receive DTLS datagrams through it).
    pub fn transport_mut(&mut self) -> &mut T {
        self.read_timeout_set = None;
        &mut self.transport
    }

    /// Takes the socket apart.
    pub fn into_parts(self) -> (T, Session) {
        (self.transport, self.session)
    }

    /// When a non-blocking caller must call again even if nothing arrives (a retransmission or
    /// the handshake deadline).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.session.poll_timeout()
    }

    /// True until the handshake has completed.
    pub fn is_handshaking(&self) -> bool {
        self.session.is_handshaking()
    }

    /// Sends every datagram the session has. `Ok(false)` when the transport would block (the
    /// datagram waits in `pending`).
    fn flush_out(&mut self) -> Result<bool, Error> {
        loop {
            if self.pending.is_none() {
                self.pending = self.session.pop_datagram();
            }
            let Some(d) = &self.pending else {
                return Ok(true);
            };
            match self.transport.send(d) {
                Ok(()) => {
                    if let Some(d) = self.pending.take() {
                        super::session::recycle(d);
                    }
                }
                Err(TransportError::WouldBlock) => return Ok(false),
                Err(e) => return Err(Error::Transport(e)),
            }
        }
    }

    /// The deadline of the operation that began at `start`: the handshake's, else the I/O
    /// timeout's.
    fn deadline(&self, start: Instant) -> Option<Instant> {
        if self.session.is_handshaking() {
            // The session's poll_timeout includes the handshake deadline.
            None
        } else {
            self.io_timeout.map(|t| start + t)
        }
    }

    /// How long one blocking receive may wait: until the next timer (at least 1 ms).
    fn wait_bound(&self, start: Instant) -> Option<Duration> {
        let now = self.clock.now();
        let next = match (self.session.poll_timeout(), self.deadline(start)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        next.map(|d| {
            d.saturating_duration_since(now)
                .max(Duration::from_millis(1))
        })
    }

    /// Receives one datagram into the session. `Ok(false)` on would-block (or a read timeout).
    fn recv_once(&mut self, start: Instant) -> Result<bool, Error> {
        if !self.nonblocking {
            let bound = self.wait_bound(start);
            if self.read_timeout_set != Some(bound) {
                self.transport
                    .set_read_timeout(bound)
                    .map_err(Error::Transport)?;
                self.read_timeout_set = Some(bound);
            }
        }
        if self.rx_buf.len() != MAX_DATAGRAM {
            self.rx_buf = alloc::vec![0u8; MAX_DATAGRAM];
        }
        match self.transport.recv(&mut self.rx_buf) {
            Ok(n) => {
                let now = self.clock.now();
                let r = self.session.handle_datagram(now, &self.rx_buf[..n]);
                if r.is_err() {
                    // Tell the peer why (the alert the session queued), best effort.
                    let _ = self.flush_out();
                }
                r.map(|()| true)
            }
            Err(TransportError::WouldBlock) => Ok(false),
            Err(e) => Err(Error::Transport(e)),
        }
    }

    /// Nothing arrived: runs the timers (retransmissions go out on the next flush), fails on a
    /// passed deadline, returns would-block in non-blocking mode.
    fn blocked(&mut self, start: Instant) -> Result<(), Error> {
        let now = self.clock.now();
        self.session.handle_timeout(now)?;
        if let Some(d) = self.deadline(start)
            && now >= d
        {
            // Silence after an alert the session had to ignore: say what it was.
            return Err(match self.session.unauthenticated_alert() {
                Some(a) => Error::Handshake(HandshakeError::UnauthenticatedAlert(a)),
                None => Error::Timeout(Timeout::Io),
            });
        }
        self.flush_out()?;
        if self.nonblocking {
            return Err(Error::Transport(TransportError::WouldBlock));
        }
        Ok(())
    }

    /// Drives the handshake to completion (blocking), or as far as the transport allows
    /// (non-blocking: returns would-block until done).
    pub fn handshake(&mut self) -> Result<(), Error> {
        let start = self.clock.now();
        loop {
            let flushed = self.flush_out()?;
            if let Some(e) = self.session.error() {
                return Err(e.clone());
            }
            if !self.session.is_handshaking() {
                // Our last flight may still be waiting for the transport.
                if flushed {
                    return Ok(());
                }
                self.blocked(start)?;
                continue;
            }
            if !self.recv_once(start)? {
                self.blocked(start)?;
            }
        }
    }

    /// Receives one record into `buf`; `Ok(0)` means the peer closed (close_notify). A record
    /// longer than `buf` fails with [`Error::BufferTooSmall`] and is kept for a larger buffer.
    pub fn recv(&mut self, buf: &mut [u8]) -> Result<usize, Error> {
        if self.session.is_handshaking() {
            self.handshake()?;
        }
        let start = self.clock.now();
        loop {
            // Retransmissions and replies the session owes go out as we wait.
            self.flush_out()?;
            match self.session.recv(buf)? {
                Recv::Data(n) => return Ok(n),
                Recv::Closed => return Ok(0),
                Recv::Pending => {}
            }
            if !self.recv_once(start)? {
                self.blocked(start)?;
            }
        }
    }

    /// Sends `data` as one record in one datagram. Fails, sending nothing, when it does not fit
    /// the MTU ([`Session::max_send_size`]). In non-blocking mode the datagram may still wait
    /// for the transport: the next call (or [`flush`](Self::flush)) sends it.
    pub fn send(&mut self, data: &[u8]) -> Result<(), Error> {
        if self.session.is_handshaking() {
            self.handshake()?;
        }
        let start = self.clock.now();
        // Earlier output first: never more than one datagram held back.
        while !self.flush_out()? {
            self.blocked(start)?;
        }
        self.session.send(data)?;
        while !self.flush_out()? {
            if self.nonblocking {
                break;
            }
            self.blocked(start)?;
        }
        Ok(())
    }

    /// Sends every datagram taken so far.
    pub fn flush(&mut self) -> Result<(), Error> {
        let start = self.clock.now();
        while !self.flush_out()? {
            self.blocked(start)?;
        }
        Ok(())
    }

    /// Sends close_notify (once connected), and closes the transport in
    /// [`TransportMode::Close`]. close_notify is sent once and not retransmitted (RFC 6347
    /// 4.2.7): a peer that misses it times out instead.
    pub fn close(&mut self) -> Result<(), Error> {
        self.session.close();
        let r = self.flush();
        if matches!(&r, Err(e) if e.is_would_block()) {
            return r;
        }
        if self.mode == TransportMode::Close {
            self.transport.shutdown();
        }
        match r {
            // Closing a socket whose session had failed is not a new failure.
            Err(Error::Closed) => Ok(()),
            other => other,
        }
    }
}

fn transport_error(e: io::Error) -> TransportError {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => TransportError::WouldBlock,
        io::ErrorKind::ConnectionRefused => TransportError::Other(
            "the peer's host refused the datagram (ICMP port unreachable): nothing listens on \
             that UDP port"
                .into(),
        ),
        _ => TransportError::Other(e.to_string()),
    }
}

/// Retries calls interrupted by signals.
fn retry<R>(mut f: impl FnMut() -> io::Result<R>) -> Result<R, TransportError> {
    loop {
        match f() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => return r.map_err(transport_error),
        }
    }
}

/// A *connected* UDP socket (`UdpSocket::connect` first): datagrams to and from its peer only.
impl DatagramTransport for UdpSocket {
    fn send(&mut self, datagram: &[u8]) -> Result<(), TransportError> {
        let n = retry(|| UdpSocket::send(self, datagram))?;
        if n != datagram.len() {
            return Err(TransportError::Other(alloc::format!(
                "the UDP socket sent {n} of {} bytes of a datagram",
                datagram.len()
            )));
        }
        Ok(())
    }
    fn recv(&mut self, buf: &mut [u8]) -> Result<usize, TransportError> {
        retry(|| UdpSocket::recv(self, buf))
    }
    fn set_read_timeout(&mut self, timeout: Option<Duration>) -> Result<(), TransportError> {
        UdpSocket::set_read_timeout(self, timeout).map_err(transport_error)
    }
    fn set_nonblocking(&mut self, nonblocking: bool) -> Result<(), TransportError> {
        UdpSocket::set_nonblocking(self, nonblocking).map_err(transport_error)
    }
}

/// A DTLS socket over a connected UDP socket with the std clock.
pub type UdpDtlsSocket = DtlsSocket<UdpSocket, StdClock>;

/// Connects a UDP socket to `addr` (`host:port`), verifies the server as `host`, and completes
/// the handshake (bounded by the config's handshake timeout).
pub fn connect(addr: &str, config: &ClientConfig) -> Result<UdpDtlsSocket, Error> {
    let (host, _) = addr.rsplit_once(':').ok_or_else(|| {
        Error::Config(ConfigError::BadServerName(alloc::format!(
            "{addr} (expected HOST:PORT)"
        )))
    })?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    connect_named(addr, host, config)
}

/// Like [`connect`], verifying the server as `server_name` instead of the host in `addr`.
/// Tries the addresses `addr` resolves to in turn until a handshake completes.
pub fn connect_named(
    addr: &str,
    server_name: &str,
    config: &ClientConfig,
) -> Result<UdpDtlsSocket, Error> {
    let addrs = addr.to_socket_addrs().map_err(|e| {
        Error::Transport(TransportError::Other(alloc::format!(
            "cannot resolve {addr}: {e}"
        )))
    })?;
    let mut last = None;
    for a in addrs {
        let local = if a.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
        let udp = UdpSocket::bind(local)
            .and_then(|u| u.connect(a).map(|()| u))
            .map_err(|e| {
                Error::Transport(TransportError::Other(alloc::format!(
                    "cannot open a UDP socket to {a}: {e}"
                )))
            });
        match udp.and_then(|u| DtlsSocket::connect(u, config, server_name, StdClock::new())) {
            Ok(s) => return Ok(s),
            // Certificate, version, alert...: the server answered; do not try another address.
            Err(e @ (Error::Transport(_) | Error::Timeout(_))) => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        Error::Transport(TransportError::Other(alloc::format!(
            "{addr} resolved to no address"
        )))
    }))
}

/// Serves the first peer that sends to `socket` (a bound, unconnected UDP socket): waits for
/// its first datagram (at most the config's handshake timeout), connects the socket to that
/// peer, and completes the handshake. For tests and tools; a listener for many peers
/// demultiplexes by address and checks cookies before it makes sessions.
pub fn accept_one(socket: UdpSocket, config: &ServerConfig) -> Result<UdpDtlsSocket, Error> {
    let clock = StdClock::new();
    let start = clock.now();
    let deadline = start + config.handshake_timeout();
    let mut buf = alloc::vec![0u8; MAX_DATAGRAM];
    let (n, from) = loop {
        let left = deadline.saturating_duration_since(clock.now());
        if left.is_zero() {
            return Err(Error::Timeout(Timeout::Handshake));
        }
        socket
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .map_err(|e| Error::Transport(transport_error(e)))?;
        match socket.recv_from(&mut buf) {
            Ok(got) => break got,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            // An ICMP error left over from an earlier peer: keep listening.
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
            Err(e) => return Err(Error::Transport(transport_error(e))),
        }
    };
    socket
        .connect(from)
        .map_err(|e| Error::Transport(transport_error(e)))?;
    let mut session = Session::server(config, start)?;
    session.handle_datagram(clock.now(), &buf[..n])?;
    let mut s = DtlsSocket::with_session(socket, session, clock);
    s.handshake()?;
    Ok(s)
}
