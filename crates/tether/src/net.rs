//! The std adapter: `std::net::TcpStream` as a [`Transport`], a monotonic [`StdClock`],
//! `std::io::Read`/`Write` on [`TlsSocket`], and [`Error`] → [`std::io::Error`].
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = tether::ClientConfig::builder(tether::Trust::from_pem(&std::fs::read("ca.pem")?)?)
//!     .build()?;
//! let mut socket = tether::net::connect("device.example:8081", &config)?;
//! socket.write_all(b"hello")?;
//! let mut buf = [0u8; 64];
//! let n = socket.read(&mut buf)?;
//! # Ok(()) }
//! ```

use core::time::Duration;
use std::io;
use std::net::{TcpStream, ToSocketAddrs};

use crate::config::ClientConfig;
use crate::error::{Error, Timeout, TransportError};
use crate::socket::{TlsSocket, Transport};
use crate::time::{Clock, Instant};

pub(crate) fn transport_error(e: io::Error) -> TransportError {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => TransportError::WouldBlock,
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe => TransportError::Reset,
        _ => TransportError::Other(e.to_string()),
    }
}

/// Retries reads and writes interrupted by signals.
fn retry<T>(mut f: impl FnMut() -> io::Result<T>) -> Result<T, TransportError> {
    loop {
        match f() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => return r.map_err(transport_error),
        }
    }
}

impl Transport for TcpStream {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, TransportError> {
        retry(|| io::Read::read(self, buf))
    }
    fn write(&mut self, buf: &[u8]) -> Result<usize, TransportError> {
        retry(|| io::Write::write(self, buf))
    }
    fn flush(&mut self) -> Result<(), TransportError> {
        retry(|| io::Write::flush(self))
    }
    fn set_read_timeout(&mut self, timeout: Option<Duration>) -> Result<(), TransportError> {
        TcpStream::set_read_timeout(self, timeout).map_err(transport_error)
    }
    fn set_write_timeout(&mut self, timeout: Option<Duration>) -> Result<(), TransportError> {
        TcpStream::set_write_timeout(self, timeout).map_err(transport_error)
    }
    fn set_nonblocking(&mut self, nonblocking: bool) -> Result<(), TransportError> {
        TcpStream::set_nonblocking(self, nonblocking).map_err(transport_error)
    }
    fn shutdown(&mut self) {
        // The peer may already have gone; nothing useful to report.
        let _ = TcpStream::shutdown(self, std::net::Shutdown::Both);
    }
}

/// Monotonic time from `std::time::Instant`, since this clock was made.
#[derive(Clone, Copy, Debug)]
pub struct StdClock {
    origin: std::time::Instant,
}

impl StdClock {
    /// A clock whose origin is now.
    pub fn new() -> StdClock {
        StdClock {
            origin: std::time::Instant::now(),
        }
    }
}

impl Default for StdClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for StdClock {
    fn now(&self) -> Instant {
        Instant::from_micros(u64::try_from(self.origin.elapsed().as_micros()).unwrap_or(u64::MAX))
    }
}

/// A TLS socket over TCP with the std clock.
pub type TcpTlsSocket = TlsSocket<TcpStream, StdClock>;

/// Connects to `addr` (`host:port`), verifies the server as `host`, and completes the
/// handshake. TCP connection set-up is bounded by the config's handshake timeout too.
///
/// In TLS 1.3 the client's side of the handshake completes before the server has checked the
/// client's Finished and certificate: a server that refuses the client (no certificate, one
/// from another CA) says so with an alert that the first read returns as the error.
pub fn connect(addr: &str, config: &ClientConfig) -> Result<TcpTlsSocket, Error> {
    let (host, _) = addr.rsplit_once(':').ok_or_else(|| {
        Error::Config(crate::error::ConfigError::BadServerName(format!(
            "{addr} (expected HOST:PORT)"
        )))
    })?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    connect_named(addr, host, config)
}

/// Like [`connect`], verifying the server as `server_name` instead of the host in `addr`.
pub fn connect_named(
    addr: &str,
    server_name: &str,
    config: &ClientConfig,
) -> Result<TcpTlsSocket, Error> {
    let timeout = config.handshake_timeout();
    let addrs = addr.to_socket_addrs().map_err(|e| {
        Error::Transport(TransportError::Other(format!("cannot resolve {addr}: {e}")))
    })?;
    let mut last = None;
    for a in addrs {
        match TcpStream::connect_timeout(&a, timeout) {
            Ok(tcp) => {
                let _ = tcp.set_nodelay(true);
                return TlsSocket::connect(tcp, config, server_name, StdClock::new());
            }
            Err(e) => last = Some(format!("cannot connect to {a}: {e}")),
        }
    }
    Err(Error::Transport(TransportError::Other(
        last.unwrap_or_else(|| format!("{addr} resolved to no address")),
    )))
}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        let kind = match &e {
            Error::Transport(TransportError::WouldBlock) => io::ErrorKind::WouldBlock,
            Error::Transport(TransportError::Reset) => io::ErrorKind::ConnectionReset,
            Error::Transport(_) => io::ErrorKind::Other,
            Error::Timeout(Timeout::Handshake) | Error::Timeout(Timeout::Io) => {
                io::ErrorKind::TimedOut
            }
            Error::Truncated => io::ErrorKind::UnexpectedEof,
            Error::Certificate(_)
            | Error::PinMismatch { .. }
            | Error::TofuKeyChanged { .. }
            | Error::Protocol(_) => io::ErrorKind::InvalidData,
            Error::Handshake(_) => io::ErrorKind::ConnectionAborted,
            Error::Version(_) => io::ErrorKind::Unsupported,
            Error::Config(_) | Error::BufferTooSmall { .. } => io::ErrorKind::InvalidInput,
            Error::Closed => io::ErrorKind::NotConnected,
        };
        io::Error::new(kind, e)
    }
}

impl<T: Transport, C: Clock> io::Read for TlsSocket<T, C> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        TlsSocket::read(self, buf).map_err(io::Error::from)
    }
}

impl<T: Transport, C: Clock> io::Write for TlsSocket<T, C> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        TlsSocket::write(self, buf).map_err(io::Error::from)
    }
    fn flush(&mut self) -> io::Result<()> {
        TlsSocket::flush(self).map_err(io::Error::from)
    }
}

/// A [`TofuStore`](crate::TofuStore) in a text file: one `HOST sha256/BASE64` line per host.
///
/// The file is read on every lookup and appended to on first use, so several processes can
/// share it; a line that cannot be parsed fails the lookup (fail closed) with the line number.
#[derive(Debug, Clone)]
pub struct FileTofuStore {
    path: std::path::PathBuf,
}

impl FileTofuStore {
    /// A store in `path` (created on first use).
    pub fn new(path: impl Into<std::path::PathBuf>) -> FileTofuStore {
        FileTofuStore { path: path.into() }
    }

    fn err(&self, what: String) -> Error {
        Error::Config(crate::error::ConfigError::Store(format!(
            "{}: {what}",
            self.path.display()
        )))
    }
}

impl crate::trust::TofuStore for FileTofuStore {
    fn get(&self, host: &str) -> Result<Option<crate::Pin>, Error> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.err(e.to_string())),
        };
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (h, pin) = line.split_once(char::is_whitespace).ok_or_else(|| {
                self.err(format!("line {}: expected `HOST sha256/BASE64`", i + 1))
            })?;
            if h == host {
                let pin = pin
                    .trim()
                    .parse()
                    .map_err(|_| self.err(format!("line {}: bad pin {pin:?}", i + 1)))?;
                return Ok(Some(pin));
            }
        }
        Ok(None)
    }

    fn put(&self, host: &str, pin: crate::Pin) -> Result<(), Error> {
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| self.err(e.to_string()))?;
        writeln!(f, "{host} {pin}").map_err(|e| self.err(e.to_string()))
    }
}
