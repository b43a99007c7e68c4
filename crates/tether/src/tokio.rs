//! The tokio adapter (feature `tokio`): [`TlsStream`] over any tokio
//! `AsyncRead + AsyncWrite` stream, itself `AsyncRead + AsyncWrite`.
//!
//! What tokio-rustls is to rustls, with tether's verification and errors: the sans-IO
//! [`Session`] does all of TLS, the stream moves bytes between it and the transport. Anything
//! that takes a tokio stream runs over it unchanged (`tokio::io::copy`, `BufReader`,
//! tokio-util codecs, hyper through its tokio adapters).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
//!
//! let trust = tether::Trust::from_pem(&std::fs::read("ca.pem")?)?;
//! let config = tether::ClientConfig::builder(trust).build()?;
//! // TCP connect, then the handshake (server verified), both within the handshake timeout.
//! let mut tls = tether::tokio::connect("device.example:8081", &config).await?;
//! tls.write_all(b"hello").await?;
//! tls.flush().await?;
//! let mut buf = [0u8; 64];
//! let n = tls.read(&mut buf).await?; // 0: the peer closed with close_notify
//! tls.shutdown().await?; // close_notify, then the transport's shutdown (TCP FIN)
//! # let _ = n; Ok(()) }
//! ```
//!
//! A server accepts with [`TlsStream::accept`] on each stream its listener hands out.
//!
//! # Driving it
//!
//! - [`TlsStream::connect`] / [`TlsStream::accept`] make the stream and complete the handshake
//!   within the config's handshake timeout (a tokio timer: a silent peer fails with
//!   [`Timeout::Handshake`]). [`TlsStream::client`] / [`TlsStream::server`] make it without
//!   the handshake, which then runs on the first read, write or flush and is bounded only by
//!   the caller (wrap it in `tokio::time::timeout`).
//! - `poll_read` returns EOF (0 bytes) only after the peer's close_notify; a transport EOF
//!   without it is an [`io::Error`] of kind `UnexpectedEof` ([`Error::Truncated`]).
//! - `poll_write` encrypts up to 16 KiB per call into one record and starts sending it; what
//!   the transport does not take at once goes out before the next write, on `flush` and on
//!   `shutdown`, so call `flush` (or `shutdown`) when the peer must see the data.
//! - `poll_shutdown` sends close_notify, then shuts the transport down (for TCP, its write
//!   side). [`into_parts`](TlsStream::into_parts) gives the transport back instead.
//! - Full duplex: once the handshake has completed, reads only read the transport and
//!   writes only write it, so one task can read while another writes (`tokio::io::split`).
//!   What a read makes tether owe the peer (the answer to a TLS 1.3 key update, the alert
//!   of a record that fails) goes out with the next write, flush or shutdown. Complete the
//!   handshake before splitting (`connect`, `accept`, or `handshake`): the handshake both
//!   reads and writes.
//! - Cancellation: the poll methods keep no state between calls but the stream's, so dropping
//!   a read or a flush future loses nothing; a write, once it returned its count, has its
//!   record in the stream and sends it on the next write, flush or shutdown.
//! - Errors are [`io::Error`]s that carry tether's [`Error`]: `e.get_ref()` and
//!   `downcast_ref::<tether::Error>()` give the category (certificate, pin, version, alert,
//!   timeout, truncation), the kind maps as for [`crate::net`].
//!
//! Reads and writes each keep one buffer only while it holds something: an idle, established
//! stream holds no record buffers (about 1 to 2.5 KB of session state, server or client).

use alloc::vec::Vec;
use core::pin::Pin;
use core::task::{Context, Poll, ready};
use std::io;

use ::tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use ::tokio::net::TcpStream;

use crate::config::{ClientConfig, ServerConfig};
use crate::error::{ConfigError, Error, Timeout, TransportError};
use crate::net::{StdClock, transport_error};
use crate::session::{Recv, Session};
use crate::time::Clock;

/// Bytes asked of each transport read unless the config sets its own: a whole record of the
/// largest size and the next one's header, so that bulk data takes one read per record. (An
/// idle stream holds none of it: the buffer is given back when a read finds nothing.)
const READ_CHUNK: usize = 16 * 1024 + 512;
/// The plaintext taken per `poll_write` (one full record).
const WRITE_CHUNK: usize = 16 * 1024;
/// Room for a record's header, content type, tag (and a TLS 1.2 explicit nonce).
const WRITE_OVERHEAD: usize = 64;

/// A TLS stream over a tokio stream `S`. See the [module docs](self).
#[derive(Debug)]
pub struct TlsStream<S> {
    io: S,
    session: Session,
    clock: StdClock,
    /// Encrypted bytes waiting for the transport, from `out_pos`.
    out: Vec<u8>,
    out_pos: usize,
    read_chunk: usize,
    eof: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream<S> {
    /// A client stream over `io`, verifying the server as `server_name`; the handshake runs
    /// on first use (see the [module docs](self)).
    pub fn client(io: S, config: &ClientConfig, server_name: &str) -> Result<Self, Error> {
        let clock = StdClock::new();
        let session = Session::client(config, server_name, clock.now())?;
        Ok(Self::with_session(io, session, clock))
    }

    /// A server stream over an accepted `io`; the handshake runs on first use.
    pub fn server(io: S, config: &ServerConfig) -> Result<Self, Error> {
        let clock = StdClock::new();
        let session = Session::server(config, clock.now())?;
        Ok(Self::with_session(io, session, clock))
    }

    fn with_session(io: S, session: Session, clock: StdClock) -> Self {
        let read_chunk = session.configured_read_chunk().unwrap_or(READ_CHUNK);
        TlsStream {
            io,
            session,
            clock,
            out: Vec::new(),
            out_pos: 0,
            read_chunk,
            eof: false,
        }
    }

    /// A client stream whose handshake has completed (the server verified), within the
    /// config's handshake timeout.
    ///
    /// In TLS 1.3 the client's side completes before the server has checked the client's
    /// Finished and certificate: a server that refuses the client says so with an alert that
    /// the first read returns as the error.
    pub async fn connect(io: S, config: &ClientConfig, server_name: &str) -> Result<Self, Error> {
        let mut s = Self::client(io, config, server_name)?;
        within(config.handshake_timeout(), s.handshake()).await?;
        Ok(s)
    }

    /// A server stream whose handshake has completed, within the config's handshake timeout.
    pub async fn accept(io: S, config: &ServerConfig) -> Result<Self, Error> {
        let mut s = Self::server(io, config)?;
        within(config.handshake_timeout(), s.handshake()).await?;
        Ok(s)
    }

    /// Drives the handshake to completion (not bounded in time: see [`connect`](Self::connect)).
    pub async fn handshake(&mut self) -> Result<(), Error> {
        core::future::poll_fn(|cx| self.poll_handshake(cx)).await
    }

    /// The session: negotiated version, suite, ALPN, peer certificates...
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// The transport.
    pub fn transport(&self) -> &S {
        &self.io
    }

    /// The transport, mutably (do not read or write TLS bytes through it).
    pub fn transport_mut(&mut self) -> &mut S {
        &mut self.io
    }

    /// Takes the stream apart. Encrypted bytes not yet taken by the transport are dropped:
    /// `flush` or `shutdown` first.
    pub fn into_parts(self) -> (S, Session) {
        (self.io, self.session)
    }

    /// How many bytes each transport read asks for (default: the config's
    /// [`read_chunk`](crate::ClientConfigBuilder::read_chunk), or 16 KiB + 512 when it sets
    /// none).
    pub fn set_read_chunk(&mut self, bytes: usize) {
        self.read_chunk = bytes.max(crate::config::MIN_READ_CHUNK);
    }

    /// Moves the session's pending bytes to the transport until none are left.
    fn poll_flush_out(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        loop {
            if self.out_pos == self.out.len() {
                self.out_pos = 0;
                let len = self.session.transmit_len();
                if len == 0 {
                    // An idle stream holds no buffer.
                    self.out = Vec::new();
                    return Poll::Ready(Ok(()));
                }
                self.out.clear();
                self.out.resize(len, 0);
                let n = self.session.poll_transmit(&mut self.out);
                self.out.truncate(n);
            }
            match ready!(Pin::new(&mut self.io).poll_write(cx, &self.out[self.out_pos..])) {
                Ok(0) => return Poll::Ready(Err(Error::Transport(TransportError::Reset))),
                Ok(n) => self.out_pos += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Poll::Ready(Err(Error::Transport(transport_error(e)))),
            }
        }
    }

    /// Reads once from the transport into the session. Ready when bytes (or EOF) arrived.
    /// With `may_write` (the handshake), the alert of a failed read is sent at once; without
    /// it (an established stream's read), it waits for the next write, flush or shutdown: a
    /// read never writes, so a reading task and a writing task ([`tokio::io::split`]) never
    /// take each other's place in the transport's wake-up for writes.
    ///
    /// [`tokio::io::split`]: ::tokio::io::split
    fn poll_read_once(&mut self, cx: &mut Context<'_>, may_write: bool) -> Poll<Result<(), Error>> {
        if self.eof {
            return Poll::Ready(Ok(()));
        }
        let chunk = self.session.read_size(self.read_chunk);
        let buf = self.session.input_buffer(chunk);
        let mut rb = ReadBuf::new(buf);
        let polled = Pin::new(&mut self.io).poll_read(cx, &mut rb);
        let n = rb.filled().len();
        let now = self.clock.now();
        let (eof, result) = match polled {
            Poll::Pending => (false, Poll::Pending),
            Poll::Ready(Ok(())) => (n == 0, Poll::Ready(Ok(()))),
            Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {
                (false, Poll::Ready(Ok(())))
            }
            Poll::Ready(Err(e)) => (
                false,
                Poll::Ready(Err(Error::Transport(transport_error(e)))),
            ),
        };
        if let Err(e) = self.session.commit_input(now, n) {
            if may_write {
                // Tell the peer why (the alert the session queued), best effort.
                let _ = self.poll_flush_out(cx);
            }
            return Poll::Ready(Err(e));
        }
        if eof {
            self.eof = true;
            self.session.handle_eof();
        }
        result
    }

    /// Ready once the transport has taken everything the session has to send, the session
    /// has not failed (else its error) and the handshake is done; reads only while it is not.
    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        loop {
            ready!(self.poll_flush_out(cx))?;
            if let Some(e) = self.session.error() {
                return Poll::Ready(Err(e.clone()));
            }
            if !self.session.is_handshaking() {
                return Poll::Ready(Ok(()));
            }
            // At EOF the session has failed (the peer closed during the handshake): the
            // next turn returns that error.
            ready!(self.poll_read_once(cx, true))?;
        }
    }

    fn poll_read_plain(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<Result<(), Error>> {
        if self.session.is_handshaking() {
            ready!(self.poll_handshake(cx))?;
        }
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            match self.session.recv(buf.initialize_unfilled())? {
                Recv::Data(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Recv::Closed => return Poll::Ready(Ok(())),
                Recv::Pending => {}
            }
            // What a read makes us owe the peer (a TLS 1.3 key update's answer) goes out with
            // the next write, flush or shutdown, not from here (see `poll_read_once`).
            ready!(self.poll_read_once(cx, false))?;
        }
    }

    fn poll_write_plain(
        &mut self,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<Result<usize, Error>> {
        // The handshake if it is not done; either way, earlier records go first (at most one
        // record waits in the stream) and a failed session says why.
        ready!(self.poll_handshake(cx))?;
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let take = data.len().min(WRITE_CHUNK);
        self.out.clear();
        self.out.resize(take + WRITE_OVERHEAD, 0);
        let sent = match self.session.send(&data[..take], &mut self.out) {
            Ok(sent) => sent,
            Err(e) => {
                self.out = Vec::new();
                return Poll::Ready(Err(e));
            }
        };
        self.out.truncate(sent.written);
        self.out_pos = 0;
        // Start sending; what the transport does not take now goes on the next call.
        if let Poll::Ready(Err(e)) = self.poll_flush_out(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(sent.consumed))
    }

    fn poll_flush_all(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        ready!(self.poll_flush_out(cx))?;
        Pin::new(&mut self.io)
            .poll_flush(cx)
            .map_err(|e| Error::Transport(transport_error(e)))
    }

    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        // close_notify once the handshake has completed; a failed or unfinished session
        // has nothing to close (its alert, if any, is already queued).
        self.session.close();
        ready!(self.poll_flush_out(cx))?;
        Pin::new(&mut self.io)
            .poll_shutdown(cx)
            .map_err(|e| Error::Transport(transport_error(e)))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.get_mut()
            .poll_read_plain(cx, buf)
            .map_err(io::Error::from)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .poll_write_plain(cx, data)
            .map_err(io::Error::from)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.session.is_handshaking() {
            ready!(this.poll_handshake(cx))?;
        }
        this.poll_flush_all(cx).map_err(io::Error::from)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_close(cx).map_err(io::Error::from)
    }
}

/// Runs `f` for at most `limit`: past it, [`Timeout::Handshake`].
async fn within<T>(
    limit: core::time::Duration,
    f: impl core::future::Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    ::tokio::time::timeout(limit, f)
        .await
        .unwrap_or(Err(Error::Timeout(Timeout::Handshake)))
}

/// Connects over TCP to `addr` (`host:port`, resolved by tokio), verifies the server as
/// `host`, and completes the handshake: TCP and TLS together within the config's handshake
/// timeout. `TCP_NODELAY` is on (a record is sent whole; Nagle would hold the next).
pub async fn connect(addr: &str, config: &ClientConfig) -> Result<TlsStream<TcpStream>, Error> {
    let (host, _) = addr.rsplit_once(':').ok_or_else(|| {
        Error::Config(ConfigError::BadServerName(alloc::format!(
            "{addr} (expected HOST:PORT)"
        )))
    })?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    connect_named(addr, host, config).await
}

/// Like [`connect`], verifying the server as `server_name` instead of the host in `addr`.
pub async fn connect_named(
    addr: &str,
    server_name: &str,
    config: &ClientConfig,
) -> Result<TlsStream<TcpStream>, Error> {
    within(config.handshake_timeout(), async {
        let tcp = TcpStream::connect(addr).await.map_err(|e| {
            Error::Transport(TransportError::Other(alloc::format!(
                "cannot connect to {addr}: {e}"
            )))
        })?;
        let _ = tcp.set_nodelay(true);
        let mut s = TlsStream::client(tcp, config, server_name)?;
        s.handshake().await?;
        Ok(s)
    })
    .await
}
