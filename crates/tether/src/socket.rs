//! `TlsSocket`: a TLS socket over any [`Transport`], blocking or non-blocking.
//!
//! The socket owns a transport, a [`Session`] and a [`Clock`], and holds no protocol logic: it
//! moves bytes between the two and maps the transport's would-block and end-of-file onto the
//! session (the shape of Mbed OS' `TLSSocket`, over the sans-IO core).
//!
//! - **Blocking** (the default): [`handshake`](TlsSocket::handshake), [`read`](TlsSocket::read),
//!   [`write`](TlsSocket::write) and [`close`](TlsSocket::close) return when done. While a
//!   deadline is pending (the handshake timeout, or an I/O timeout set with
//!   [`set_io_timeout`](TlsSocket::set_io_timeout)), the socket asks the transport to bound each
//!   blocking read and write ([`Transport::set_read_timeout`], [`Transport::set_write_timeout`])
//!   and fails with [`Error::Timeout`] when the deadline passes.
//! - **Non-blocking**: call [`set_nonblocking(true)`](TlsSocket::set_nonblocking). Every call
//!   then returns [`Error::Transport(WouldBlock)`](crate::error::TransportError::WouldBlock)
//!   (test with [`Error::is_would_block`]) when the transport would block; call it again when the
//!   transport is ready. No data is lost: bytes accepted by `write` are kept until they are sent
//!   ([`flush`](TlsSocket::flush)).
//!
//! `read` returns `Ok(0)` only after the peer's close_notify; a transport EOF without it is
//! [`Error::Truncated`]. [`TransportMode`] says whether `close` also closes the transport.
//!
//! Buffers: encrypted output waiting for the transport is kept in a buffer sized to it (one
//! write's records, or a handshake flight) and freed once sent, and input goes straight into
//! the session's buffer, [`set_read_chunk`](TlsSocket::set_read_chunk) bytes per transport
//! read; an idle socket holds neither. A device that wants its peak small reads in small
//! chunks (the session's input buffer grows by exactly one chunk at a time, up to one record)
//! and writes in small pieces.

use alloc::vec::Vec;
use core::time::Duration;

use crate::config::{ClientConfig, ServerConfig};
use crate::error::{Error, Timeout, TransportError};
use crate::session::{Recv, Session};
use crate::time::{Clock, Instant};

/// A byte-stream transport (TCP, a smoltcp socket, a UART...): what a [`TlsSocket`] runs over.
pub trait Transport {
    /// Reads into `buf`; `Ok(0)` means end-of-file. A non-blocking transport with nothing to
    /// read returns `Err(TransportError::WouldBlock)`.
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, TransportError>;

    /// Writes some of `buf`, returning how much was taken (never 0 for a non-empty `buf`
    /// unless it fails).
    fn write(&mut self, buf: &[u8]) -> Result<usize, TransportError>;

    /// Flushes transport-level buffers.
    fn flush(&mut self) -> Result<(), TransportError> {
        Ok(())
    }

    /// Bounds how long one blocking `read` may wait (`None`: unbounded). A read that runs out
    /// of time returns `Err(TransportError::WouldBlock)`. Transports that cannot do this may
    /// ignore it; deadlines are then checked between reads.
    fn set_read_timeout(&mut self, _timeout: Option<Duration>) -> Result<(), TransportError> {
        Ok(())
    }

    /// Bounds how long one blocking `write` may wait (`None`: unbounded). A write that runs
    /// out of time before taking anything returns `Err(TransportError::WouldBlock)`. Transports
    /// that cannot do this may ignore it; deadlines are then checked between writes.
    fn set_write_timeout(&mut self, _timeout: Option<Duration>) -> Result<(), TransportError> {
        Ok(())
    }

    /// Switches the transport between blocking and non-blocking mode.
    fn set_nonblocking(&mut self, _nonblocking: bool) -> Result<(), TransportError> {
        Ok(())
    }

    /// Closes the transport (used with [`TransportMode::Close`]).
    fn shutdown(&mut self) {}
}

impl<T: Transport + ?Sized> Transport for &mut T {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, TransportError> {
        (**self).read(buf)
    }
    fn write(&mut self, buf: &[u8]) -> Result<usize, TransportError> {
        (**self).write(buf)
    }
    fn flush(&mut self) -> Result<(), TransportError> {
        (**self).flush()
    }
    fn set_read_timeout(&mut self, timeout: Option<Duration>) -> Result<(), TransportError> {
        (**self).set_read_timeout(timeout)
    }
    fn set_write_timeout(&mut self, timeout: Option<Duration>) -> Result<(), TransportError> {
        (**self).set_write_timeout(timeout)
    }
    fn set_nonblocking(&mut self, nonblocking: bool) -> Result<(), TransportError> {
        (**self).set_nonblocking(nonblocking)
    }
    fn shutdown(&mut self) {
        (**self).shutdown()
    }
}

/// What [`TlsSocket::close`] does to the transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TransportMode {
    /// Close the transport after close_notify (the default).
    #[default]
    Close,
    /// Leave the transport open (it can be taken back with [`TlsSocket::into_parts`]).
    Keep,
}

/// A TLS socket over a [`Transport`]. See the [module docs](self).
#[derive(Debug)]
pub struct TlsSocket<T: Transport, C: Clock> {
    transport: T,
    session: Session,
    clock: C,
    out: Vec<u8>,
    out_pos: usize,
    mode: TransportMode,
    nonblocking: bool,
    io_timeout: Option<Duration>,
    /// The bounds last given to the transport (`None`: never set).
    read_timeout_set: Option<Option<Duration>>,
    write_timeout_set: Option<Option<Duration>>,
    read_chunk: usize,
    eof: bool,
}

/// The plaintext taken per encryption, and the buffer it needs.
const WRITE_CHUNK: usize = 16 * 1024;
/// Room for the record overhead around the plaintext taken per write.
const WRITE_OVERHEAD: usize = 64;
const WRITE_BUF: usize = WRITE_CHUNK + WRITE_OVERHEAD;

impl<T: Transport, C: Clock> TlsSocket<T, C> {
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

    /// A server socket over an accepted `transport`.
    pub fn server(transport: T, config: &ServerConfig, clock: C) -> Result<Self, Error> {
        let session = Session::server(config, clock.now())?;
        Ok(Self::with_session(transport, session, clock))
    }

    /// A socket around an existing session.
    pub fn with_session(transport: T, session: Session, clock: C) -> Self {
        let read_chunk = session.read_chunk();
        TlsSocket {
            transport,
            session,
            clock,
            out: Vec::new(),
            out_pos: 0,
            mode: TransportMode::Close,
            nonblocking: false,
            io_timeout: None,
            read_timeout_set: None,
            write_timeout_set: None,
            read_chunk,
            eof: false,
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

    /// A deadline for each blocking read or write after the handshake (`None`: wait forever).
    pub fn set_io_timeout(&mut self, timeout: Option<Duration>) {
        self.io_timeout = timeout;
    }

    /// How many bytes each transport read asks for (default: the config's
    /// [`read_chunk`](crate::ClientConfigBuilder::read_chunk), 4096 unless set there). Set it
    /// in the config to have the handshake's reads use it too.
    pub fn set_read_chunk(&mut self, bytes: usize) {
        self.read_chunk = bytes.max(crate::config::MIN_READ_CHUNK);
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
        // The caller may change the transport's timeouts: set ours again before the next call.
        self.read_timeout_set = None;
        self.write_timeout_set = None;
        &mut self.transport
    }

    /// Takes the socket apart.
    pub fn into_parts(self) -> (T, Session) {
        (self.transport, self.session)
    }

    /// Moves the session's pending bytes into `out`, then writes `out` to the transport.
    /// Returns `Ok(true)` when everything was sent. Blocking writes are bounded by the
    /// deadline of the operation that began at `start`.
    fn flush_out(&mut self, start: Instant) -> Result<bool, Error> {
        loop {
            if self.out_pos == self.out.len() {
                self.out.clear();
                self.out_pos = 0;
                if !self.session.wants_transmit() {
                    self.out = Vec::new();
                    return Ok(true);
                }
                // Sized to what is pending (a handshake flight, an alert), not to a record.
                self.out
                    .resize(self.session.transmit_len().min(WRITE_BUF), 0);
                let n = self.session.poll_transmit(&mut self.out);
                self.out.truncate(n);
            }
            if !self.nonblocking {
                let timeout = self.remaining(start);
                // One system call saved per write when the bound has not changed (the common
                // case: no deadline at all).
                if self.write_timeout_set != Some(timeout) {
                    self.transport
                        .set_write_timeout(timeout)
                        .map_err(Error::Transport)?;
                    self.write_timeout_set = Some(timeout);
                }
            }
            match self.transport.write(&self.out[self.out_pos..]) {
                Ok(0) => return Err(Error::Transport(TransportError::Reset)),
                Ok(n) => self.out_pos += n,
                Err(TransportError::WouldBlock) => return Ok(false),
                Err(e) => return Err(Error::Transport(e)),
            }
        }
    }

    fn deadline(&self, start: Instant) -> Option<Instant> {
        match self.session.poll_timeout() {
            Some(d) => Some(d),
            None => self.io_timeout.map(|t| start + t),
        }
    }

    /// How long a blocking transport call may wait: until the deadline (at least 1 ms).
    fn remaining(&self, start: Instant) -> Option<Duration> {
        let now = self.clock.now();
        self.deadline(start).map(|d| {
            d.saturating_duration_since(now)
                .max(Duration::from_millis(1))
        })
    }

    /// Reads once from the transport into the session. Returns `Ok(false)` on would-block.
    fn read_once(&mut self, start: Instant) -> Result<bool, Error> {
        if self.eof {
            return Ok(true);
        }
        if !self.nonblocking {
            let timeout = self.remaining(start);
            if self.read_timeout_set != Some(timeout) {
                self.transport
                    .set_read_timeout(timeout)
                    .map_err(Error::Transport)?;
                self.read_timeout_set = Some(timeout);
            }
        }
        let chunk = self.session.read_size(self.read_chunk);
        let buf = self.session.input_buffer(chunk);
        let r = self.transport.read(buf);
        let now = self.clock.now();
        let eof = matches!(r, Ok(0));
        let (n, result) = match r {
            Ok(n) => (n, Ok(true)),
            Err(TransportError::WouldBlock) => (0, Ok(false)),
            Err(e) => (0, Err(Error::Transport(e))),
        };
        if let Err(e) = self.session.commit_input(now, n) {
            // Tell the peer why (the alert the session queued), best effort.
            let _ = self.flush_out(start);
            return Err(e);
        }
        if eof {
            self.eof = true;
            self.session.handle_eof();
        }
        result
    }

    /// Called when the transport would block: fails on a passed deadline, returns
    /// would-block in non-blocking mode, and otherwise lets the caller retry.
    fn blocked(&mut self, start: Instant) -> Result<(), Error> {
        let now = self.clock.now();
        self.session.handle_timeout(now)?;
        if let Some(d) = self.deadline(start)
            && now >= d
        {
            return Err(Error::Timeout(Timeout::Io));
        }
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
            let flushed = self.flush_out(start)?;
            if !self.session.is_handshaking() && flushed {
                return Ok(());
            }
            if let Some(e) = self.session.error() {
                return Err(e.clone());
            }
            if !self.session.is_handshaking() {
                // Only our last flight is left to send.
                self.blocked(start)?;
                continue;
            }
            if !self.read_once(start)? {
                self.blocked(start)?;
            }
        }
    }

    /// True until the handshake has completed.
    pub fn is_handshaking(&self) -> bool {
        self.session.is_handshaking()
    }

    /// Reads decrypted data. `Ok(0)` means the peer closed cleanly (close_notify).
    pub fn read(&mut self, buf: &mut [u8]) -> Result<usize, Error> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.session.is_handshaking() {
            self.handshake()?;
        }
        let start = self.clock.now();
        loop {
            // Replies the session owes (TLS 1.3 key updates) go out as we read.
            self.flush_out(start)?;
            match self.session.recv(buf)? {
                Recv::Data(n) => return Ok(n),
                Recv::Closed => return Ok(0),
                Recv::Pending => {}
            }
            if !self.read_once(start)? {
                self.blocked(start)?;
            }
        }
    }

    /// Encrypts and sends `data`; returns how much was taken. In non-blocking mode, or when a
    /// blocking write runs into the I/O timeout, the bytes taken may still be in flight:
    /// [`flush`](Self::flush) (or the next `write`) sends them.
    pub fn write(&mut self, data: &[u8]) -> Result<usize, Error> {
        if self.session.is_handshaking() {
            self.handshake()?;
        }
        let start = self.clock.now();
        // Earlier output first: never more than one chunk held.
        while !self.flush_out(start)? {
            self.blocked(start)?;
        }
        if data.is_empty() {
            return Ok(0);
        }
        // Sized to this write (a small write holds a small buffer), at most one full record.
        let take = data.len().min(WRITE_CHUNK);
        self.out.resize(take + WRITE_OVERHEAD, 0);
        let sent = self.session.send(&data[..take], &mut self.out)?;
        self.out.truncate(sent.written);
        self.out_pos = 0;
        // Push it out now; in non-blocking mode what does not fit waits for the next call.
        while !self.flush_out(start)? {
            if self.nonblocking {
                break;
            }
            match self.blocked(start) {
                Ok(()) => {}
                // The data is taken (encrypted, maybe partly sent) and will go out with the
                // next call: report it as taken, or a caller that retries would send it twice.
                // The next call reports the timeout if the transport is still stuck.
                Err(Error::Timeout(Timeout::Io)) => break,
                Err(e) => return Err(e),
            }
        }
        Ok(sent.consumed)
    }

    /// Writes all of `data` (blocking mode).
    pub fn write_all(&mut self, mut data: &[u8]) -> Result<(), Error> {
        while !data.is_empty() {
            let n = self.write(data)?;
            data = &data[n..];
        }
        self.flush()
    }

    /// Sends everything taken so far.
    pub fn flush(&mut self) -> Result<(), Error> {
        let start = self.clock.now();
        while !self.flush_out(start)? {
            self.blocked(start)?;
        }
        self.transport.flush().map_err(Error::Transport)
    }

    /// Sends close_notify, and closes the transport in [`TransportMode::Close`].
    ///
    /// Non-blocking: returns would-block while close_notify is still queued; call it again
    /// when the transport is writable (the transport is closed only once it was sent).
    pub fn close(&mut self) -> Result<(), Error> {
        self.session.close();
        let r = self.flush();
        if matches!(&r, Err(e) if e.is_would_block()) {
            // Closing the transport now would drop the queued close_notify.
            return r;
        }
        if self.mode == TransportMode::Close {
            self.transport.shutdown();
        }
        r
    }

    /// Ends an established connection with a fatal alert instead of close_notify (a server
    /// turning away a peer its policy refuses: [`Alert::ACCESS_DENIED`]); see
    /// [`Session::refuse`]. Sends the alert, then closes the transport like [`close`](Self::close),
    /// would-block included.
    ///
    /// [`Alert::ACCESS_DENIED`]: crate::error::Alert::ACCESS_DENIED
    pub fn refuse(&mut self, alert: crate::error::Alert) -> Result<(), Error> {
        if !self.session.is_close_sent() {
            self.session.refuse(alert)?;
        }
        self.close()
    }
}
