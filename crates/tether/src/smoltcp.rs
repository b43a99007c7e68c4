//! TLS over a smoltcp 0.14 TCP socket, blocking, driven by `now_ms` and `sleep_ms`
//! callbacks (feature `smoltcp`, `no_std` + `alloc`).
//!
//! A device without an operating system has no blocking sockets: it has a smoltcp
//! [`Interface`], a [`Device`] (its network driver) and a [`SocketSet`], and something must call
//! [`Interface::poll`] for packets to move. This module is that something, kept thin:
//!
//! - [`Stack`] owns the interface, the device and the socket set, plus two callbacks the device
//!   supplies: `now_ms() -> u64` (a monotonic millisecond clock, e.g. a timer tick since boot)
//!   and `sleep_ms(ms)` (wait up to `ms`: a busy wait, a timer sleep, or better a wait for the
//!   network interrupt that returns early when a frame arrives). Its
//!   [`wait_for`](Stack::wait_for) runs the poll loop until a condition holds or a deadline
//!   passes; DHCP and DNS sockets are driven with it too.
//! - [`TcpTransport`] is a [`Transport`] over one smoltcp TCP socket of the stack: blocking
//!   reads and writes with the timeouts [`TlsSocket`] asks for, or non-blocking ones, with the
//!   poll loop run inside. [`TcpTransport::connect`] opens the TCP connection (with a timeout),
//!   [`TcpTransport::accept`] waits for one.
//! - [`TlsStream`] is the existing [`TlsSocket`] over that transport: the handshake (bounded by
//!   the config's handshake timeout), [`write_all`](TlsSocket::write_all),
//!   [`read`](TlsSocket::read) (bounded by [`set_io_timeout`](TlsSocket::set_io_timeout)),
//!   and [`close`](TlsSocket::close), which sends close_notify, then closes TCP and lingers up to
//!   the transport's close timeout so that both really leave the device. [`connect`] does TCP
//!   then TLS in one call.
//!
//! Errors are tether's [`Error`] categories: a TCP connection that is refused, never answered,
//! has no route, or is reset is [`Error::Transport`] with a message that says which (and what
//! to check); TLS failures are what the session reports (certificate rejected, pin mismatch,
//! handshake failure with the alert, handshake timeout); a read or write that runs out of time
//! is [`Error::Timeout`]; a peer that closes TCP without close_notify is [`Error::Truncated`].
//!
//! Memory: the caller gives the TCP socket its buffers (their size is the caller's choice, 2 to
//! 4 KiB each is plenty for an HTTPS request); the TLS session holds a buffer only while a
//! record is incomplete, and the socket's write buffer only while a record is in flight.
//!
//! ```no_run
//! # fn demo<D: smoltcp::phy::Device>(
//! #     iface: smoltcp::iface::Interface, device: D,
//! #     config: &tether::ClientConfig, server: smoltcp::wire::Ipv4Address,
//! #     now_ms: fn() -> u64, sleep_ms: fn(u64),
//! # ) -> Result<(), tether::Error> {
//! use smoltcp::iface::SocketSet;
//! use smoltcp::socket::tcp;
//! use tether::smoltcp::{Stack, TcpTransport};
//!
//! // The caller decides the TCP buffers' size.
//! let mut sockets = SocketSet::new(Vec::new());
//! let tcp = sockets.add(tcp::Socket::new(
//!     tcp::SocketBuffer::new(vec![0; 4096]),
//!     tcp::SocketBuffer::new(vec![0; 2048]),
//! ));
//! let mut stack = Stack::new(iface, device, sockets, now_ms, sleep_ms);
//!
//! // TCP (5 s), then TLS (the config's handshake timeout).
//! let mut tls = tether::smoltcp::connect(
//!     &mut stack, tcp, config, "api.example.com", (server, 443), 49152, 5_000)?;
//! tls.set_io_timeout(Some(core::time::Duration::from_secs(10)));
//! tls.write_all(b"GET / HTTP/1.1\r\nHost: api.example.com\r\nConnection: close\r\n\r\n")?;
//! let mut buf = [0u8; 1024];
//! loop {
//!     let n = tls.read(&mut buf)?; // Ok(0): the server sent close_notify
//!     if n == 0 { break; }
//!     // ... use &buf[..n]
//! }
//! tls.close()?; // close_notify, then TCP FIN
//! # Ok(()) }
//! ```
//!
//! The same connection in two steps, to tell a TCP failure from a TLS one:
//! `TcpTransport::connect(&mut stack, tcp, remote, local_port, timeout_ms)?`, then
//! `TlsSocket::connect(transport, config, name, clock)` with the transport's
//! [`clock`](TcpTransport::clock).

use alloc::format;
use core::fmt;
use core::time::Duration;

use ::smoltcp::iface::{Interface, SocketHandle, SocketSet};
use ::smoltcp::phy::Device;
use ::smoltcp::socket::tcp;
use ::smoltcp::wire::{IpEndpoint, IpListenEndpoint};

use crate::config::ClientConfig;
use crate::error::{Error, TransportError};
use crate::socket::{TlsSocket, Transport};
use crate::time::{Clock, Instant};

/// The default upper bound of one `sleep_ms` call while waiting (see
/// [`Stack::set_max_sleep_ms`]).
pub const DEFAULT_MAX_SLEEP_MS: u64 = 10;

/// The default time [`TcpTransport`] waits, on close, for close_notify and the TCP FIN to be
/// acknowledged (see [`TcpTransport::set_close_timeout_ms`]).
pub const DEFAULT_CLOSE_TIMEOUT_MS: u64 = 2_000;

/// A smoltcp interface, its device and its sockets, with the device's clock and sleep.
///
/// `now_ms` must never go backwards. `sleep_ms(ms)` may return early (the best ones return when
/// the network interrupt fires or a frame arrives); the stack never asks for more than
/// [`max_sleep_ms`](Self::set_max_sleep_ms) nor past smoltcp's next timer. The fields are
/// public: between connections, use the interface and the sockets directly (DHCP, DNS, other
/// sockets), and [`poll`](Self::poll) / [`wait_for`](Self::wait_for) to move packets.
pub struct Stack<'s, D: Device, N: Fn() -> u64, S: FnMut(u64)> {
    /// The smoltcp interface.
    pub iface: Interface,
    /// The network device (driver).
    pub device: D,
    /// The sockets, among them the TCP sockets that [`TcpTransport`]s use.
    pub sockets: SocketSet<'s>,
    now_ms: N,
    sleep_ms: S,
    max_sleep_ms: u64,
}

impl<D: Device, N: Fn() -> u64, S: FnMut(u64)> fmt::Debug for Stack<'_, D, N, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stack")
            .field("now_ms", &(self.now_ms)())
            .field("max_sleep_ms", &self.max_sleep_ms)
            .finish_non_exhaustive()
    }
}

/// What [`Stack::wait_for`] returns when the deadline passes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed;

impl<'s, D: Device, N: Fn() -> u64, S: FnMut(u64)> Stack<'s, D, N, S> {
    /// A stack over `iface`, `device` and `sockets`, driven by the device's `now_ms` and
    /// `sleep_ms`.
    pub fn new(
        iface: Interface,
        device: D,
        sockets: SocketSet<'s>,
        now_ms: N,
        sleep_ms: S,
    ) -> Self {
        Stack {
            iface,
            device,
            sockets,
            now_ms,
            sleep_ms,
            max_sleep_ms: DEFAULT_MAX_SLEEP_MS,
        }
    }

    /// The longest single `sleep_ms` while waiting (default [`DEFAULT_MAX_SLEEP_MS`]): the
    /// latency added when `sleep_ms` cannot return early on a frame. At least 1.
    pub fn set_max_sleep_ms(&mut self, ms: u64) {
        self.max_sleep_ms = ms.max(1);
    }

    /// The device's clock, in milliseconds.
    pub fn now_ms(&self) -> u64 {
        (self.now_ms)()
    }

    /// The device's clock as smoltcp's instant.
    pub fn smoltcp_now(&self) -> ::smoltcp::time::Instant {
        ::smoltcp::time::Instant::from_millis(i64::try_from(self.now_ms()).unwrap_or(i64::MAX))
    }

    /// Moves packets once: `Interface::poll` at the current time. Returns true when a socket's
    /// state may have changed.
    pub fn poll(&mut self) -> bool {
        let now = self.smoltcp_now();
        let r = self.iface.poll(now, &mut self.device, &mut self.sockets);
        r == ::smoltcp::iface::PollResult::SocketStateChanged
    }

    /// Sleeps until smoltcp's next timer, at most `max_sleep_ms` and not past `deadline_ms`.
    pub fn sleep(&mut self, deadline_ms: Option<u64>) {
        let now = self.now_ms();
        let mut ms = self.max_sleep_ms;
        if let Some(d) = self.iface.poll_delay(self.smoltcp_now(), &self.sockets) {
            ms = ms.min(d.total_millis());
        }
        if let Some(deadline) = deadline_ms {
            ms = ms.min(deadline.saturating_sub(now));
        }
        if ms > 0 {
            (self.sleep_ms)(ms);
        }
    }

    /// Runs the poll loop until `done` returns `Some` (checked after each poll) or the clock
    /// reaches `deadline_ms` (`None`: no deadline). `done` gets the stack, to look at sockets.
    pub fn wait_for<T>(
        &mut self,
        deadline_ms: Option<u64>,
        mut done: impl FnMut(&mut Self) -> Option<T>,
    ) -> Result<T, Elapsed> {
        loop {
            self.poll();
            if let Some(t) = done(self) {
                return Ok(t);
            }
            if deadline_ms.is_some_and(|d| self.now_ms() >= d) {
                return Err(Elapsed);
            }
            self.sleep(deadline_ms);
        }
    }

    /// A [`Clock`] for tether over this stack's `now_ms` (needs `N: Clone`; function pointers
    /// and closures that capture only `Copy` data are).
    pub fn clock(&self) -> MsClock<N>
    where
        N: Clone,
    {
        MsClock(self.now_ms.clone())
    }

    fn tcp(&mut self, handle: SocketHandle) -> &mut tcp::Socket<'s> {
        self.sockets.get_mut::<tcp::Socket>(handle)
    }
}

/// tether's [`Clock`] over a `now_ms` callback.
#[derive(Clone, Copy, Debug)]
pub struct MsClock<N>(pub N);

impl<N: Fn() -> u64> Clock for MsClock<N> {
    fn now(&self) -> Instant {
        Instant::from_millis((self.0)())
    }
}

/// A TLS client or server socket over a smoltcp TCP socket: tether's [`TlsSocket`] over a
/// [`TcpTransport`].
pub type TlsStream<'n, 's, D, N, S> = TlsSocket<TcpTransport<'n, 's, D, N, S>, MsClock<N>>;

/// A [`Transport`] over one TCP socket of a [`Stack`], which it borrows while it lives.
///
/// Blocking by default: `read` waits until data, end of stream or the read timeout; `write`
/// until the socket's send buffer has room or the write timeout; the interface is polled all
/// the while. Dropping it without [`Transport::shutdown`] sends what is queued (a failed
/// handshake's alert) and then resets the connection, so the socket can be used again.
pub struct TcpTransport<'n, 's, D: Device, N: Fn() -> u64, S: FnMut(u64)> {
    stack: &'n mut Stack<'s, D, N, S>,
    handle: SocketHandle,
    read_timeout_ms: Option<u64>,
    write_timeout_ms: Option<u64>,
    close_timeout_ms: u64,
    nonblocking: bool,
    eof: bool,
}

impl<D: Device, N: Fn() -> u64, S: FnMut(u64)> fmt::Debug for TcpTransport<'_, '_, D, N, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpTransport")
            .field("handle", &self.handle)
            .field("read_timeout_ms", &self.read_timeout_ms)
            .field("write_timeout_ms", &self.write_timeout_ms)
            .field("close_timeout_ms", &self.close_timeout_ms)
            .field("nonblocking", &self.nonblocking)
            .finish_non_exhaustive()
    }
}

fn transport_error(msg: alloc::string::String) -> Error {
    Error::Transport(TransportError::Other(msg))
}

fn millis_ceil(d: Duration) -> u64 {
    let ms = d.as_millis() + u128::from(!d.subsec_nanos().is_multiple_of(1_000_000));
    u64::try_from(ms).unwrap_or(u64::MAX)
}

impl<'n, 's, D: Device, N: Fn() -> u64, S: FnMut(u64)> TcpTransport<'n, 's, D, N, S> {
    /// Opens a TCP connection from the socket `handle` (in `stack.sockets`) to `remote`, from
    /// `local_port` (pick a different ephemeral port, 49152 to 65535, for each connection), and
    /// waits up to `timeout_ms` for it to be established.
    ///
    /// Errors ([`Error::Transport`], each message saying what to check): no address or route
    /// (`Unaddressable`, e.g. DHCP has not configured the interface), the socket is still in
    /// use, the peer refused (reset), or no answer within the timeout.
    pub fn connect(
        stack: &'n mut Stack<'s, D, N, S>,
        handle: SocketHandle,
        remote: impl Into<IpEndpoint>,
        local_port: u16,
        timeout_ms: u64,
    ) -> Result<Self, Error> {
        let remote = remote.into();
        let deadline = stack.now_ms().saturating_add(timeout_ms);
        let socket = stack.tcp(handle);
        if socket.is_open() {
            return Err(transport_error(format!(
                "TCP connect to {remote}: the socket is still in use (state {}); close it or use another socket",
                socket.state()
            )));
        }
        let cx = stack.iface.context();
        stack
            .sockets
            .get_mut::<tcp::Socket>(handle)
            .connect(cx, remote, local_port)
            .map_err(|e| match e {
                tcp::ConnectError::Unaddressable => transport_error(format!(
                    "TCP connect to {remote}: unaddressable: the interface has no address or no route to it \
                     (has DHCP configured the interface? is the port non-zero?)"
                )),
                other => transport_error(format!("TCP connect to {remote} from port {local_port}: {other}")),
            })?;
        let transport = TcpTransport::new(stack, handle);
        let r = transport.stack.wait_for(Some(deadline), |s| {
            match s.tcp(handle).state() {
                tcp::State::SynSent | tcp::State::SynReceived => None,
                tcp::State::Established => Some(Ok(())),
                // RST in SynSent: refused.
                tcp::State::Closed => Some(Err(transport_error(format!(
                    "TCP connect to {remote}: refused (the peer answered with a reset); \
                     check that the server listens on port {}",
                    remote.port
                )))),
                other => Some(Err(transport_error(format!(
                    "TCP connect to {remote}: the connection ended during setup (state {other})"
                )))),
            }
        });
        match r {
            Ok(Ok(())) => Ok(transport),
            Ok(Err(e)) => Err(e),
            Err(Elapsed) => Err(transport_error(format!(
                "TCP connect to {remote}: no answer within {timeout_ms} ms; check the address, \
                 the route and that the server is up"
            ))),
        }
    }

    /// Listens on `port` with the socket `handle` and waits up to `timeout_ms` (`None`:
    /// forever) for a connection to be established.
    pub fn accept(
        stack: &'n mut Stack<'s, D, N, S>,
        handle: SocketHandle,
        port: u16,
        timeout_ms: Option<u64>,
    ) -> Result<Self, Error> {
        let deadline = timeout_ms.map(|t| stack.now_ms().saturating_add(t));
        let socket = stack.tcp(handle);
        if !socket.is_listening() {
            socket
                .listen(IpListenEndpoint::from(port))
                .map_err(|e| transport_error(format!("TCP listen on port {port}: {e}")))?;
        }
        let transport = TcpTransport::new(stack, handle);
        match transport.stack.wait_for(deadline, |s| {
            let sock = s.tcp(handle);
            (sock.state() == tcp::State::Established).then_some(())
        }) {
            Ok(()) => Ok(transport),
            Err(Elapsed) => Err(transport_error(format!(
                "TCP accept on port {port}: no connection within {} ms",
                timeout_ms.unwrap_or(0)
            ))),
        }
    }

    /// A transport over an already established TCP socket `handle`.
    ///
    /// Turns Nagle's algorithm off on the socket (as `tether::net` sets `TCP_NODELAY`): TLS
    /// writes whole records and flights, and behind Nagle a record written while the last
    /// one is unacknowledged (a request right behind the client's Finished) would wait a
    /// round trip, or the peer's delayed ACK.
    pub fn new(stack: &'n mut Stack<'s, D, N, S>, handle: SocketHandle) -> Self {
        stack.tcp(handle).set_nagle_enabled(false);
        TcpTransport {
            stack,
            handle,
            read_timeout_ms: None,
            write_timeout_ms: None,
            close_timeout_ms: DEFAULT_CLOSE_TIMEOUT_MS,
            nonblocking: false,
            eof: false,
        }
    }

    /// How long [`shutdown`](Transport::shutdown) waits for the data and the FIN to be
    /// acknowledged before it aborts (default [`DEFAULT_CLOSE_TIMEOUT_MS`]).
    pub fn set_close_timeout_ms(&mut self, ms: u64) {
        self.close_timeout_ms = ms;
    }

    /// Gives the stack back without closing: the TCP connection stays open (no reset), so the
    /// stack can serve other sockets meanwhile; [`TcpTransport::new`] with the returned handle
    /// picks the connection up again. Timeouts set on this transport are not kept.
    pub fn release(self) -> SocketHandle {
        let this = core::mem::ManuallyDrop::new(self);
        this.handle
    }

    /// The socket's handle in the stack.
    pub fn handle(&self) -> SocketHandle {
        self.handle
    }

    /// The stack (e.g. to poll other sockets between calls).
    pub fn stack(&mut self) -> &mut Stack<'s, D, N, S> {
        self.stack
    }

    /// The TCP state of the socket.
    pub fn state(&mut self) -> tcp::State {
        self.stack.tcp(self.handle).state()
    }

    /// A tether [`Clock`] over the stack's `now_ms`, for [`TlsSocket`].
    pub fn clock(&self) -> MsClock<N>
    where
        N: Clone,
    {
        self.stack.clock()
    }

    fn deadline(&self, timeout_ms: Option<u64>) -> Option<u64> {
        if self.nonblocking {
            Some(0)
        } else {
            timeout_ms.map(|t| self.stack.now_ms().saturating_add(t))
        }
    }

    /// Waits (polling) until `ready` says something, or the deadline: `WouldBlock`.
    fn wait<T>(
        &mut self,
        timeout_ms: Option<u64>,
        mut ready: impl FnMut(&mut tcp::Socket<'s>, &mut bool) -> Option<Result<T, TransportError>>,
    ) -> Result<T, TransportError> {
        let deadline = self.deadline(timeout_ms);
        let handle = self.handle;
        let eof = &mut self.eof;
        match self.stack.wait_for(deadline, |s| ready(s.tcp(handle), eof)) {
            Ok(r) => r,
            Err(Elapsed) => Err(TransportError::WouldBlock),
        }
    }
}

impl<D: Device, N: Fn() -> u64, S: FnMut(u64)> Transport for TcpTransport<'_, '_, D, N, S> {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, TransportError> {
        if buf.is_empty() {
            return Ok(0);
        }
        let r = self.wait(self.read_timeout_ms, |sock, eof| {
            if sock.can_recv() {
                return Some(
                    sock.recv_slice(buf)
                        .map_err(|e| TransportError::Other(format!("TCP receive: {e}"))),
                );
            }
            if sock.may_recv() {
                return None;
            }
            match sock.state() {
                // The peer's FIN: end of stream.
                tcp::State::CloseWait
                | tcp::State::LastAck
                | tcp::State::Closing
                | tcp::State::TimeWait => {
                    *eof = true;
                    Some(Ok(0))
                }
                // Still connecting: wait.
                tcp::State::SynSent | tcp::State::SynReceived | tcp::State::Listen => None,
                _ if *eof => Some(Ok(0)),
                // Closed without a FIN seen: a reset (or a retransmission timeout).
                _ => Some(Err(TransportError::Reset)),
            }
        });
        // Push out the window update (and anything queued) now.
        if matches!(r, Ok(n) if n > 0) {
            self.stack.poll();
        }
        r
    }

    fn write(&mut self, buf: &[u8]) -> Result<usize, TransportError> {
        if buf.is_empty() {
            return Ok(0);
        }
        let r = self.wait(self.write_timeout_ms, |sock, _| {
            if sock.can_send() {
                return Some(
                    sock.send_slice(buf)
                        .map_err(|e| TransportError::Other(format!("TCP send: {e}"))),
                );
            }
            match sock.state() {
                tcp::State::SynSent | tcp::State::SynReceived | tcp::State::Listen => None,
                _ if sock.may_send() => None,
                // Closed by a reset, or our side already sent its FIN.
                _ => Some(Err(TransportError::Reset)),
            }
        });
        // Transmit now rather than at the next wait.
        if r.is_ok() {
            self.stack.poll();
        }
        r
    }

    fn flush(&mut self) -> Result<(), TransportError> {
        self.stack.poll();
        Ok(())
    }

    fn set_read_timeout(&mut self, timeout: Option<Duration>) -> Result<(), TransportError> {
        self.read_timeout_ms = timeout.map(millis_ceil);
        Ok(())
    }

    fn set_write_timeout(&mut self, timeout: Option<Duration>) -> Result<(), TransportError> {
        self.write_timeout_ms = timeout.map(millis_ceil);
        Ok(())
    }

    fn set_nonblocking(&mut self, nonblocking: bool) -> Result<(), TransportError> {
        self.nonblocking = nonblocking;
        Ok(())
    }

    /// Closes TCP (FIN after the queued data) and polls until the peer has acknowledged it or
    /// the close timeout passes, then aborts what is left. Non-blocking: closes without waiting.
    fn shutdown(&mut self) {
        let handle = self.handle;
        self.stack.tcp(handle).close();
        if self.nonblocking {
            self.stack.poll();
            return;
        }
        let deadline = self.stack.now_ms().saturating_add(self.close_timeout_ms);
        let done = self.stack.wait_for(Some(deadline), |s| {
            let sock = s.tcp(handle);
            matches!(
                sock.state(),
                tcp::State::Closed | tcp::State::TimeWait | tcp::State::FinWait2
            )
            .then_some(())
        });
        if done.is_err() {
            self.stack.tcp(handle).abort();
            self.stack.poll();
        }
    }
}

impl<D: Device, N: Fn() -> u64, S: FnMut(u64)> Drop for TcpTransport<'_, '_, D, N, S> {
    /// After a graceful close the socket is in FinWait2/TimeWait (or Closed): left as it is.
    /// An open connection dropped without close is closed: what is still queued (e.g. the
    /// fatal alert of a failed handshake) is sent first, within the close timeout (blocking
    /// mode), then the connection is reset so that the socket can be used again.
    fn drop(&mut self) {
        let handle = self.handle;
        let sock = self.stack.tcp(handle);
        if matches!(
            sock.state(),
            tcp::State::Closed | tcp::State::TimeWait | tcp::State::FinWait2 | tcp::State::Listen
        ) {
            return;
        }
        if sock.send_queue() > 0 && sock.may_send() && !self.nonblocking {
            sock.close();
            let deadline = self.stack.now_ms().saturating_add(self.close_timeout_ms);
            let _ = self.stack.wait_for(Some(deadline), |s| {
                let sock = s.tcp(handle);
                (sock.send_queue() == 0 || !sock.is_open()).then_some(())
            });
        }
        self.stack.tcp(handle).abort();
        self.stack.poll();
    }
}

/// TCP then TLS: [`TcpTransport::connect`] (up to `tcp_timeout_ms`), then the TLS handshake
/// with `config` for `server_name` (up to the config's handshake timeout).
///
/// A TCP failure is [`Error::Transport`]; use the two steps to tell it apart from a TLS
/// failure without looking at the category.
pub fn connect<'n, 's, D: Device, N: Fn() -> u64 + Clone, S: FnMut(u64)>(
    stack: &'n mut Stack<'s, D, N, S>,
    handle: SocketHandle,
    config: &ClientConfig,
    server_name: &str,
    remote: impl Into<IpEndpoint>,
    local_port: u16,
    tcp_timeout_ms: u64,
) -> Result<TlsStream<'n, 's, D, N, S>, Error> {
    let transport = TcpTransport::connect(stack, handle, remote, local_port, tcp_timeout_ms)?;
    let clock = transport.clock();
    TlsSocket::connect(transport, config, server_name, clock)
}
