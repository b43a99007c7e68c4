//! An async TLS socket over `embedded_io_async` transports (feature `async`, no_std).
//!
//! [`AsyncTlsSocket`] is the async twin of [`TlsSocket`](crate::socket::TlsSocket): the same
//! constructors (a transport, a [`ClientConfig`] or [`ServerConfig`], a server name, a
//! [`Clock`]), the same [`Error`] categories, the same rule that `read` returns `Ok(0)` only
//! after the peer's close_notify. The sans-IO [`Session`] does all of TLS; the socket only moves
//! bytes between it and the transport. No executor, no std, no tokio: any runtime whose sockets
//! implement `embedded_io_async::{Read, Write}` works (embassy-net, or tokio through
//! `embedded_io_adapters::tokio_1::FromTokio` on a host; for tokio code that wants tokio's
//! own `AsyncRead`/`AsyncWrite`, the feature `tokio` has `tether::tokio::TlsStream`).
//!
//! The socket implements `embedded_io_async::{ErrorType, Read, Write}` itself, so no_std async
//! clients run over TLS unchanged: tested with rust-mqtt against mosquitto (`tests/mqtt.rs`,
//! `examples/mqtt_tls.rs`) and with reqwless against nginx (`tests/http_async.rs`: reqwless
//! without its own TLS, the socket wrapped as `HttpConnection::Plain(&mut socket)`).
//!
//! # Driving it
//!
//! ```no_run
//! # async fn demo<T>(tcp: T, ca_pem: &[u8], now_ms: fn() -> u64) -> Result<(), tether::Error>
//! # where T: embedded_io_async::Read + embedded_io_async::Write {
//! use embedded_io_async::{Read as _, Write as _};
//! use tether::asynch::AsyncTlsSocket;
//! use tether::{ClientConfig, Instant, TlsVersion, Trust};
//!
//! let config = ClientConfig::builder(Trust::from_pem(ca_pem)?)
//!     .versions(TlsVersion::Tls12, TlsVersion::Tls13)
//!     .build()?;
//! let clock = move || Instant::from_millis(now_ms());
//! // Handshake (certificate verified) before `connect` returns.
//! let mut tls = AsyncTlsSocket::connect(tcp, &config, "broker.local", clock).await?;
//! tls.write_all(b"hello").await?;
//! tls.flush().await?;
//! let mut buf = [0u8; 64];
//! let n = tls.read(&mut buf).await?; // 0: the peer closed with close_notify
//! tls.close().await?; // close_notify
//! # let _ = n; Ok(()) }
//! ```
//!
//! 1. [`client`](AsyncTlsSocket::client) / [`server`](AsyncTlsSocket::server) make the socket;
//!    [`handshake`](AsyncTlsSocket::handshake) runs the handshake (or the first `read`/`write`
//!    does). [`connect`](AsyncTlsSocket::connect) and [`accept`](AsyncTlsSocket::accept) do both.
//! 2. [`read`](AsyncTlsSocket::read), [`write`](AsyncTlsSocket::write),
//!    [`flush`](AsyncTlsSocket::flush) move application data.
//! 3. [`close`](AsyncTlsSocket::close) sends close_notify and flushes the transport; take the
//!    transport back with [`into_parts`](AsyncTlsSocket::into_parts) to close it.
//!
//! # Time and deadlines
//!
//! The clock is passed in as for the blocking socket (any `Fn() -> Instant`). The handshake
//! deadline ([`ClientConfig`]'s handshake timeout) is checked each time the socket wakes: a
//! handshake that is past its deadline when bytes arrive fails with
//! [`Error::Timeout`]. An async transport cannot be told to give up on a pending read, so a
//! silent peer is bounded by the caller's executor: wrap the call in its timeout
//! (`embassy_time::with_timeout`, `tokio::time::timeout`).
//!
//! Cancellation (a timeout or `select!` dropping a pending call), given a cancel-safe
//! transport: `read`, `flush`, `handshake` and `close` are cancel-safe (bytes read go straight
//! into the session, encrypted output waits in the socket until sent, and the next call carries
//! on). `write` with a write buffer only gathers, so it is cancel-safe too. `write` without one
//! is not: once it has encrypted the data, dropping it before it returns loses the count, and a
//! caller that writes the same bytes again sends them twice.
//!
//! # Writes
//!
//! By default each `write` becomes one TLS record, sent before `write` returns. Protocol
//! clients that write a packet field by field (rust-mqtt does) would make one record per
//! field: [`set_write_buffer`](AsyncTlsSocket::set_write_buffer) makes writes gather up to that
//! many plaintext bytes, encrypted and sent when the buffer is full, on `flush`, `close`, or
//! before a `read` has to wait for the peer.
//!
//! # MQTT over TLS
//!
//! `examples/mqtt_tls.rs` and `tests/mqtt.rs` run the no_std MQTT client
//! [rust-mqtt](https://docs.rs/rust-mqtt) 0.6 over this socket against mosquitto (client
//! certificates required; the client capped at TLS 1.2, then at TLS 1.3). The order matters:
//! finish the TLS handshake with [`connect`](AsyncTlsSocket::connect) first, then hand the
//! socket to the MQTT client. A TLS failure then comes back as a categorised [`Error`]
//! (rust-mqtt only keeps an `ErrorKind` from its transport).
//!
//! Why rust-mqtt and not minimq: rust-mqtt takes any `embedded_io_async::{Read, Write}`
//! transport and nothing else, so it runs over this socket as is, and it has no clock of its
//! own (keep-alive is the caller's loop). minimq up to 0.10 drives its own socket through an
//! `embedded-nal` `TcpClientStack` (on smoltcp through smoltcp-nal) and has no TLS, so TLS
//! would have to be wrapped into a network stack; 0.13 moved to `embedded-io-async` but reads
//! time from `embassy-time`'s global driver, which ties a device to embassy and breaks tether's
//! rule that time is passed in.
//!
//! There is no plaintext fallback anywhere in tether: a handshake that fails (certificate,
//! version, alert, timeout) is an error, and the socket never writes application bytes that
//! are not inside a TLS record (the MQTT test proves it with a recording relay and the
//! broker's log of its plain port). Nor is there a version fallback: the versions offered are
//! exactly the configured range.

use alloc::vec::Vec;

use embedded_io_async::{Read, Write};

use crate::config::{ClientConfig, ServerConfig};
use crate::embedded::transport_error;
use crate::error::{Error, TransportError};
use crate::session::{Recv, Session};
use crate::time::Clock;

/// The plaintext taken per encryption, and the buffer it needs.
const WRITE_CHUNK: usize = 16 * 1024;
const WRITE_BUF: usize = WRITE_CHUNK + 64;

/// A TLS socket over an `embedded_io_async` transport. See the [module docs](self).
#[derive(Debug)]
pub struct AsyncTlsSocket<T, C: Clock> {
    transport: T,
    session: Session,
    clock: C,
    /// Encrypted bytes waiting for the transport, from `out_pos`.
    out: Vec<u8>,
    out_pos: usize,
    /// Plaintext gathered by `write` when a write buffer is set.
    pending: Vec<u8>,
    write_buffer: usize,
    read_chunk: usize,
    eof: bool,
    /// A transport read into the session's input buffer is under way (or was cancelled).
    reading: bool,
}

impl<T: Read + Write, C: Clock> AsyncTlsSocket<T, C> {
    /// A client socket over `transport`; the handshake runs on the first call that needs it
    /// (or call [`handshake`](Self::handshake)).
    pub fn client(
        transport: T,
        config: &ClientConfig,
        server_name: &str,
        clock: C,
    ) -> Result<Self, Error> {
        let session = Session::client(config, server_name, clock.now())?;
        Ok(Self::with_session(transport, session, clock))
    }

    /// A client socket that completes the handshake (the server is verified) before returning.
    pub async fn connect(
        transport: T,
        config: &ClientConfig,
        server_name: &str,
        clock: C,
    ) -> Result<Self, Error> {
        let mut s = Self::client(transport, config, server_name, clock)?;
        s.handshake().await?;
        Ok(s)
    }

    /// A server socket over an accepted `transport`.
    pub fn server(transport: T, config: &ServerConfig, clock: C) -> Result<Self, Error> {
        let session = Session::server(config, clock.now())?;
        Ok(Self::with_session(transport, session, clock))
    }

    /// A server socket that completes the handshake before returning.
    pub async fn accept(transport: T, config: &ServerConfig, clock: C) -> Result<Self, Error> {
        let mut s = Self::server(transport, config, clock)?;
        s.handshake().await?;
        Ok(s)
    }

    /// A socket around an existing session.
    pub fn with_session(transport: T, session: Session, clock: C) -> Self {
        let read_chunk = session.read_chunk();
        AsyncTlsSocket {
            transport,
            session,
            clock,
            out: Vec::new(),
            out_pos: 0,
            pending: Vec::new(),
            write_buffer: 0,
            read_chunk,
            eof: false,
            reading: false,
        }
    }

    /// How many bytes each transport read asks for (default: the config's
    /// [`read_chunk`](crate::ClientConfigBuilder::read_chunk), 4096 unless set there). Set it
    /// in the config to have the handshake's reads use it too.
    pub fn set_read_chunk(&mut self, bytes: usize) {
        self.read_chunk = bytes.max(crate::config::MIN_READ_CHUNK);
    }

    /// Gather up to `bytes` of plaintext from `write` calls into one record (0, the default:
    /// every `write` is sent at once). Gathered data is sent when the buffer is full, on
    /// [`flush`](Self::flush) and [`close`](Self::close), and before a `read` waits for the
    /// peer. At most 16 KiB.
    pub fn set_write_buffer(&mut self, bytes: usize) {
        self.write_buffer = bytes.min(WRITE_CHUNK);
    }

    /// The session: negotiated version, suite, peer certificates...
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// The transport.
    pub fn transport(&self) -> &T {
        &self.transport
    }

    /// The transport, mutably (do not read or write TLS bytes through it).
    pub fn transport_mut(&mut self) -> &mut T {
        &mut self.transport
    }

    /// Takes the socket apart (after [`close`](Self::close), to close the transport).
    pub fn into_parts(mut self) -> (T, Session) {
        // A failure here is the session's own and stays in it.
        let _ = self.settle();
        (self.transport, self.session)
    }

    /// True until the handshake has completed.
    pub fn is_handshaking(&self) -> bool {
        self.session.is_handshaking()
    }

    /// Moves the session's pending bytes to the transport until none are left.
    async fn flush_out(&mut self) -> Result<(), Error> {
        loop {
            if self.out_pos == self.out.len() {
                self.out.clear();
                self.out_pos = 0;
                if !self.session.wants_transmit() {
                    self.out = Vec::new();
                    return Ok(());
                }
                self.out.resize(WRITE_BUF, 0);
                let n = self.session.poll_transmit(&mut self.out);
                self.out.truncate(n);
            }
            match self.transport.write(&self.out[self.out_pos..]).await {
                Ok(0) => return Err(Error::Transport(TransportError::Reset)),
                Ok(n) => self.out_pos += n,
                Err(e) => match transport_error(e) {
                    // A transport that gave up waiting: try again (the handshake deadline is
                    // checked by the next read).
                    TransportError::WouldBlock => {
                        self.session.handle_timeout(self.clock.now())?;
                    }
                    e => return Err(Error::Transport(e)),
                },
            }
        }
    }

    /// Reads once from the transport into the session.
    async fn read_once(&mut self) -> Result<(), Error> {
        if self.eof {
            return Ok(());
        }
        let chunk = self.session.read_size(self.read_chunk);
        let buf = self.session.input_buffer(chunk);
        self.reading = true;
        let r = self.transport.read(buf).await;
        self.reading = false;
        let now = self.clock.now();
        let eof = matches!(r, Ok(0));
        let (n, result) = match r {
            Ok(n) => (n, Ok(())),
            Err(e) => match transport_error(e) {
                TransportError::WouldBlock => (0, Ok(())),
                e => (0, Err(Error::Transport(e))),
            },
        };
        if let Err(e) = self.session.commit_input(now, n) {
            // Tell the peer why (the alert the session queued), best effort.
            let _ = self.flush_out().await;
            return Err(e);
        }
        if eof {
            self.eof = true;
            self.session.handle_eof();
        }
        result
    }

    /// After a read that was cancelled while waiting for the transport: gives the session's
    /// input buffer back (nothing was read into it) before the session is used again.
    fn settle(&mut self) -> Result<(), Error> {
        if self.reading {
            self.reading = false;
            self.session.commit_input(self.clock.now(), 0)?;
        }
        Ok(())
    }

    /// Drives the handshake to completion.
    pub async fn handshake(&mut self) -> Result<(), Error> {
        self.settle()?;
        loop {
            self.flush_out().await?;
            if let Some(e) = self.session.error() {
                return Err(e.clone());
            }
            if !self.session.is_handshaking() {
                return Ok(());
            }
            // At EOF the session has failed (the peer closed during the handshake): the
            // next turn returns that error.
            self.read_once().await?;
        }
    }

    /// Reads decrypted data. `Ok(0)` means the peer closed cleanly (close_notify); a transport
    /// EOF without it is [`Error::Truncated`].
    pub async fn read(&mut self, buf: &mut [u8]) -> Result<usize, Error> {
        if buf.is_empty() {
            return Ok(0);
        }
        self.settle()?;
        if self.session.is_handshaking() {
            self.handshake().await?;
        }
        loop {
            match self.session.recv(buf)? {
                Recv::Data(n) => return Ok(n),
                Recv::Closed => return Ok(0),
                Recv::Pending => {}
            }
            // About to wait for the peer: what we owe it goes first (gathered writes, TLS 1.3
            // key update replies).
            self.send_pending().await?;
            self.flush_out().await?;
            self.read_once().await?;
        }
    }

    /// Encrypts the gathered plaintext and sends it. Cancel-safe: between awaits, every byte
    /// is either still gathered or encrypted in `out`.
    async fn send_pending(&mut self) -> Result<(), Error> {
        loop {
            self.flush_out().await?;
            if self.pending.is_empty() {
                // An idle socket holds no buffers.
                self.pending = Vec::new();
                return Ok(());
            }
            // Taken out and put back with no await in between.
            let mut pending = core::mem::take(&mut self.pending);
            let r = self.encrypt(&pending);
            if let Ok(consumed) = r {
                pending.drain(..consumed);
            }
            self.pending = pending;
            r?;
        }
    }

    /// Encrypts one record's worth of `data` into `out` (which must be empty); returns how
    /// much was taken. No await: the session and `out` change together.
    fn encrypt(&mut self, data: &[u8]) -> Result<usize, Error> {
        self.out.resize(WRITE_BUF, 0);
        let sent = match self
            .session
            .send(&data[..data.len().min(WRITE_CHUNK)], &mut self.out)
        {
            Ok(sent) => sent,
            Err(e) => {
                self.out.clear();
                return Err(e);
            }
        };
        self.out.truncate(sent.written);
        self.out_pos = 0;
        Ok(sent.consumed)
    }

    /// Encrypts one record's worth of `data` and sends it; returns how much was taken.
    async fn encrypt_and_send(&mut self, data: &[u8]) -> Result<usize, Error> {
        self.send_pending().await?;
        let consumed = self.encrypt(data)?;
        self.flush_out().await?;
        Ok(consumed)
    }

    /// Encrypts and sends `data` (or, with a write buffer, gathers it); returns how much was
    /// taken (at most 16 KiB per call).
    pub async fn write(&mut self, data: &[u8]) -> Result<usize, Error> {
        self.settle()?;
        if self.session.is_handshaking() {
            self.handshake().await?;
        }
        if let Some(e) = self.session.error() {
            return Err(e.clone());
        }
        if data.is_empty() {
            return Ok(0);
        }
        if self.write_buffer == 0 {
            return self.encrypt_and_send(data).await;
        }
        if self.pending.len() >= self.write_buffer {
            self.send_pending().await?;
        }
        let room = self.write_buffer - self.pending.len();
        let n = room.min(data.len());
        self.pending.extend_from_slice(&data[..n]);
        Ok(n)
    }

    /// Sends everything taken so far, then flushes the transport.
    pub async fn flush(&mut self) -> Result<(), Error> {
        self.settle()?;
        self.send_pending().await?;
        self.flush_out().await?;
        self.transport
            .flush()
            .await
            .map_err(|e| Error::Transport(transport_error(e)))
    }

    /// Sends what is still gathered, then close_notify, and flushes the transport. The
    /// transport stays open: take it back with [`into_parts`](Self::into_parts) to close it.
    pub async fn close(&mut self) -> Result<(), Error> {
        self.settle()?;
        if !self.session.is_handshaking() && !self.session.is_failed() {
            self.send_pending().await?;
        }
        self.session.close();
        self.flush().await
    }

    /// Ends an established connection with a fatal alert instead of close_notify (a server
    /// turning away a peer its policy refuses: [`Alert::ACCESS_DENIED`]); see
    /// [`Session::refuse`](crate::Session::refuse). Data gathered by `write` and not sent yet
    /// is dropped; the alert is sent and the transport flushed, and stays open as after
    /// [`close`](Self::close).
    ///
    /// [`Alert::ACCESS_DENIED`]: crate::error::Alert::ACCESS_DENIED
    pub async fn refuse(&mut self, alert: crate::error::Alert) -> Result<(), Error> {
        self.settle()?;
        self.pending = Vec::new();
        if !self.session.is_close_sent() {
            self.session.refuse(alert)?;
        }
        self.flush().await
    }
}

impl<T, C: Clock> embedded_io_async::ErrorType for AsyncTlsSocket<T, C> {
    type Error = Error;
}

impl<T: Read + Write, C: Clock> Read for AsyncTlsSocket<T, C> {
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, Error> {
        AsyncTlsSocket::read(self, buf).await
    }
}

impl<T: Read + Write, C: Clock> Write for AsyncTlsSocket<T, C> {
    async fn write(&mut self, buf: &[u8]) -> Result<usize, Error> {
        AsyncTlsSocket::write(self, buf).await
    }

    async fn flush(&mut self) -> Result<(), Error> {
        AsyncTlsSocket::flush(self).await
    }
}
