//! embedded-io adapters (feature `embedded-io`, no_std): blocking TLS over any
//! `embedded_io::{Read, Write}` byte stream, and [`TlsSocket`] as an embedded-io stream itself.
//!
//! Two thin pieces, no protocol logic:
//! - [`EmbeddedIo`] wraps a transport that implements `embedded_io::{Read, Write}` (a UART, a
//!   HAL's TCP socket, `embedded_io_adapters::std::FromStd<TcpStream>` on a host) so that a
//!   [`TlsSocket`] can run over it.
//! - [`TlsSocket`] implements `embedded_io::{ErrorType, Read, Write}` with [`Error`] as its
//!   error type, so code written against embedded-io (HTTP, MQTT, framing crates) runs over TLS
//!   unchanged. [`Error`] implements `embedded_io::Error`; [`error_kind`] is the mapping.
//!
//! ```no_run
//! # fn demo<T: embedded_io::Read + embedded_io::Write>(uart: T, ca_pem: &[u8], now_ms: fn() -> u64)
//! #     -> Result<(), tether::Error> {
//! use embedded_io::{Read as _, Write as _};
//! use tether::embedded::EmbeddedIo;
//! use tether::socket::TlsSocket;
//! use tether::{ClientConfig, Instant, TimePolicy, Trust};
//!
//! let config = ClientConfig::builder(Trust::from_pem(ca_pem)?)
//!     .time_policy(TimePolicy::IgnoreValidityTime) // a device without a wall clock
//!     .build()?;
//! let clock = move || Instant::from_millis(now_ms());
//! let mut tls = TlsSocket::connect(EmbeddedIo(uart), &config, "gateway.local", clock)?;
//! tls.write_all(b"hello")?;
//! let mut buf = [0u8; 64];
//! let n = tls.read(&mut buf)?;
//! # let _ = n; Ok(()) }
//! ```
//!
//! # Blocking and deadlines
//!
//! embedded-io streams block and have no timeouts of their own: [`EmbeddedIo`] ignores the
//! socket's [`Transport::set_read_timeout`], so the handshake deadline and the socket's I/O
//! timeout are checked between transport calls (each time bytes arrive), not while one is
//! waiting. A transport that gives up on its own may return `ErrorKind::TimedOut`: the socket
//! then checks its deadline and reads again (or fails with [`Error::Timeout`]).
//! `ErrorKind::Interrupted` is retried at once.
//!
//! # Error mapping
//!
//! embedded-io has no would-block kind: [`TransportError::WouldBlock`] (only seen on a socket
//! switched to non-blocking mode) maps to `Interrupted`, "retry". See [`error_kind`] for the
//! rest; it follows the std adapter's `io::ErrorKind` mapping wherever embedded-io has the kind.

use alloc::format;

use embedded_io::{Error as _, ErrorKind};

use crate::error::{Error, Timeout, TransportError};
use crate::socket::{TlsSocket, Transport};
use crate::time::Clock;

/// A [`Transport`] over an `embedded_io::{Read, Write}` byte stream. See the [module docs](self).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EmbeddedIo<T>(pub T);

impl<T> EmbeddedIo<T> {
    /// The wrapped stream.
    pub fn into_inner(self) -> T {
        self.0
    }
}

/// Maps an embedded-io error of a transport onto tether's [`TransportError`]: a timed-out
/// call is would-block (the socket checks its deadline and retries), a reset, aborted or
/// broken connection is [`TransportError::Reset`], anything else is kept as text with its kind.
pub fn transport_error<E: embedded_io::Error>(e: E) -> TransportError {
    match e.kind() {
        ErrorKind::TimedOut => TransportError::WouldBlock,
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe => {
            TransportError::Reset
        }
        kind => TransportError::Other(format!("transport failed ({kind:?}): {e}")),
    }
}

impl<T: embedded_io::Read + embedded_io::Write> Transport for EmbeddedIo<T> {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, TransportError> {
        loop {
            match self.0.read(buf) {
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                r => return r.map_err(transport_error),
            }
        }
    }

    fn write(&mut self, buf: &[u8]) -> Result<usize, TransportError> {
        loop {
            match self.0.write(buf) {
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                r => return r.map_err(transport_error),
            }
        }
    }

    fn flush(&mut self) -> Result<(), TransportError> {
        loop {
            match self.0.flush() {
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                r => return r.map_err(transport_error),
            }
        }
    }
}

/// The `embedded_io::ErrorKind` of a tether [`Error`]:
///
/// | tether | embedded-io |
/// |---|---|
/// | `Transport(WouldBlock)` | `Interrupted` (retry) |
/// | `Transport(Reset)` | `ConnectionReset` |
/// | `Transport(Other)` | `Other` |
/// | `Timeout(_)` | `TimedOut` |
/// | `Truncated` (EOF without close_notify) | `ConnectionAborted` |
/// | `Certificate`, `PinMismatch`, `TofuKeyChanged`, `Protocol` | `InvalidData` |
/// | `Handshake` | `ConnectionAborted` |
/// | `Version` | `Unsupported` |
/// | `Config`, `BufferTooSmall` | `InvalidInput` |
/// | `Closed` | `NotConnected` |
///
/// The kind is for code that only knows embedded-io; match on the [`Error`] itself for the
/// category and its detail.
pub fn error_kind(e: &Error) -> ErrorKind {
    match e {
        Error::Transport(TransportError::WouldBlock) => ErrorKind::Interrupted,
        Error::Transport(TransportError::Reset) => ErrorKind::ConnectionReset,
        Error::Transport(_) => ErrorKind::Other,
        Error::Timeout(Timeout::Handshake) | Error::Timeout(Timeout::Io) => ErrorKind::TimedOut,
        Error::Truncated => ErrorKind::ConnectionAborted,
        Error::Certificate(_)
        | Error::PinMismatch { .. }
        | Error::TofuKeyChanged { .. }
        | Error::Protocol(_) => ErrorKind::InvalidData,
        Error::Handshake(_) => ErrorKind::ConnectionAborted,
        Error::Version(_) => ErrorKind::Unsupported,
        Error::Config(_) | Error::BufferTooSmall { .. } => ErrorKind::InvalidInput,
        Error::Closed => ErrorKind::NotConnected,
    }
}

impl embedded_io::Error for Error {
    fn kind(&self) -> ErrorKind {
        error_kind(self)
    }
}

impl<T: Transport, C: Clock> embedded_io::ErrorType for TlsSocket<T, C> {
    type Error = Error;
}

/// `read` blocks until data arrives; `Ok(0)` only after the peer's close_notify (a transport
/// EOF without it is [`Error::Truncated`]).
impl<T: Transport, C: Clock> embedded_io::Read for TlsSocket<T, C> {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Error> {
        TlsSocket::read(self, buf)
    }
}

/// `write` encrypts and sends (one record per call, at most 16 KiB taken); `flush` sends
/// anything still held.
impl<T: Transport, C: Clock> embedded_io::Write for TlsSocket<T, C> {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Error> {
        TlsSocket::write(self, buf)
    }

    fn flush(&mut self) -> Result<(), Error> {
        TlsSocket::flush(self)
    }
}
