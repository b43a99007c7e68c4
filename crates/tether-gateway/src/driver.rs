//! The async driver: one [`tether::Session`] over one tokio [`TcpStream`].
//!
//! The session is sans-IO; this module moves bytes between it and the socket and holds no
//! protocol logic:
//!
//! - **Input**: wait for readability with [`TcpStream::readable`], then `try_read` straight into
//!   [`Session::input_buffer`] and [`Session::commit_input`]. The session frees its input buffer
//!   once it has consumed it, so an idle connection holds no read buffer: the buffer exists only
//!   between "readable" and "consumed".
//! - **Output**: [`Session::poll_transmit`] (handshake bytes, alerts, tickets, close_notify) and
//!   [`Session::send`] (application data) go into a buffer allocated only while there is something
//!   to write, sized for what is written, and freed once the socket took it.
//! - **Time**: [`now`] is a monotonic clock from a process-wide origin, passed to the session.
//!
//! Everything is cancel-safe at the await points the connection task selects on
//! ([`TlsConn::read_input`] waits in `readable()`, which loses nothing when dropped).

use std::io;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tether::{Instant, Session};
use tokio::io::{AsyncWriteExt as _, Interest};
use tokio::net::TcpStream;

use crate::metrics::Metrics;

/// Bytes read from the socket at a time: a whole TLS record (16 KiB plaintext plus overhead).
const READ_CHUNK: usize = 16 * 1024 + 512;
/// Bytes read at a time during the handshake: a device's flights (a ClientHello, even with a
/// post-quantum key share; a certificate chain, its signature and Finished) fit, and the
/// buffer zeroed and allocated per read is a quarter of [`READ_CHUNK`]. A larger flight takes
/// more reads.
const HANDSHAKE_READ_CHUNK: usize = 4096;
/// Largest TLS plaintext per record.
const MAX_RECORD: usize = 16 * 1024;
/// Bytes a record adds to its plaintext, rounded up (tether: at most 29).
const RECORD_OVERHEAD: usize = 32;
/// Plaintext encrypted per `Session::send` call (four records).
const SEND_CHUNK: usize = 4 * MAX_RECORD;

/// How long writing close_notify may take when closing without a linger.
pub(crate) const CLOSE_WRITE: Duration = Duration::from_secs(1);

/// The driver's monotonic clock: time since the first call in this process.
pub(crate) fn now() -> Instant {
    static ORIGIN: OnceLock<std::time::Instant> = OnceLock::new();
    let origin = *ORIGIN.get_or_init(std::time::Instant::now);
    Instant::from_micros(u64::try_from(origin.elapsed().as_micros()).unwrap_or(u64::MAX))
}

/// Why driving failed.
#[derive(Debug)]
pub(crate) enum DriveError {
    /// The TLS session failed (its error says why; an alert may be queued).
    Tls(tether::Error),
    /// The socket failed.
    Io(io::Error),
}

/// What a read found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Input {
    /// Bytes were passed to the session.
    Data,
    /// The peer closed the TCP connection (end of file).
    Eof,
}

/// A TLS session over a TCP stream.
#[derive(Debug)]
pub(crate) struct TlsConn {
    tcp: TcpStream,
    session: Session,
    metrics: Arc<Metrics>,
}

impl TlsConn {
    pub(crate) fn new(tcp: TcpStream, session: Session, metrics: Arc<Metrics>) -> TlsConn {
        TlsConn {
            tcp,
            session,
            metrics,
        }
    }

    pub(crate) fn session(&self) -> &Session {
        &self.session
    }

    pub(crate) fn session_mut(&mut self) -> &mut Session {
        &mut self.session
    }

    /// Waits until the socket has something, then passes it to the session.
    pub(crate) async fn read_input(&mut self) -> Result<Input, DriveError> {
        loop {
            self.tcp.readable().await.map_err(DriveError::Io)?;
            if let Some(input) = self.try_read_input()? {
                return Ok(input);
            }
        }
    }

    /// Passes what the socket holds now to the session, without waiting (`None`: nothing).
    pub(crate) fn try_read_input(&mut self) -> Result<Option<Input>, DriveError> {
        let chunk = if self.session.is_handshaking() {
            HANDSHAKE_READ_CHUNK
        } else {
            READ_CHUNK
        };
        loop {
            let buf = self.session.input_buffer(chunk);
            match self.tcp.try_read(buf) {
                Ok(0) => {
                    self.commit(0)?;
                    self.session.handle_eof();
                    return Ok(Some(Input::Eof));
                }
                Ok(n) => {
                    self.metrics.wire_in(n);
                    if n < chunk {
                        self.drained();
                    }
                    self.commit(n)?;
                    return Ok(Some(Input::Data));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.commit(0)?;
                    return Ok(None);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                    self.commit(0)?;
                }
                Err(e) => {
                    // Releases the reserved input buffer; the socket error is what matters.
                    let _ = self.session.commit_input(now(), 0);
                    return Err(DriveError::Io(e));
                }
            }
        }
    }

    /// A read shorter than asked for emptied the socket's receive queue: tells tokio, so that
    /// the next [`read_input`](Self::read_input) waits for epoll at once instead of first
    /// making a read that would block (one system call fewer per wait: per handshake flight,
    /// per frame). tokio clears only the readiness this task has seen (an event since then
    /// keeps the socket ready) and never a peer's close, so no input is missed.
    fn drained(&self) {
        let _ = self.tcp.try_io(Interest::READABLE, || {
            Err::<(), _>(io::ErrorKind::WouldBlock.into())
        });
    }

    fn commit(&mut self, n: usize) -> Result<(), DriveError> {
        self.session.commit_input(now(), n).map_err(DriveError::Tls)
    }

    async fn write_raw(&mut self, bytes: &[u8]) -> Result<(), DriveError> {
        self.tcp.write_all(bytes).await.map_err(DriveError::Io)?;
        self.metrics.wire_out(bytes.len());
        Ok(())
    }

    /// Writes everything the session has queued (handshake flights, alerts, tickets,
    /// close_notify).
    pub(crate) async fn flush(&mut self) -> Result<(), DriveError> {
        match self.take_transmit() {
            Some(bytes) => self.write_raw(&bytes).await,
            None => Ok(()),
        }
    }

    /// Everything the session has queued, for one write (`None`: nothing).
    fn take_transmit(&mut self) -> Option<Vec<u8>> {
        if !self.session.wants_transmit() {
            return None;
        }
        let mut buf = vec![0u8; self.session.transmit_len()];
        let n = self.session.poll_transmit(&mut buf);
        buf.truncate(n);
        Some(buf)
    }

    /// Like [`flush`](Self::flush), for the last bytes before a close or a shutdown of the
    /// write side: sent with `MSG_MORE`, so the kernel holds them until the FIN that follows
    /// and sends both in one segment (one segment and one loopback delivery fewer per
    /// connection) instead of the bytes at once (TCP_NODELAY) and the FIN after them.
    async fn flush_before_fin(&mut self) -> Result<(), DriveError> {
        let Some(bytes) = self.take_transmit() else {
            return Ok(());
        };
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            self.tcp.writable().await.map_err(DriveError::Io)?;
            let sent = self.tcp.try_io(Interest::WRITABLE, || {
                rustix::net::send(&self.tcp, rest, rustix::net::SendFlags::MORE)
                    .map_err(io::Error::from)
            });
            match sent {
                Ok(k) => rest = &rest[k..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(DriveError::Io(e)),
            }
        }
        self.metrics.wire_out(bytes.len());
        Ok(())
    }

    /// Completes the handshake (the caller bounds it in time).
    ///
    /// What the session queues after the handshake (TLS 1.3 session tickets) is left queued:
    /// it goes out in the same write as the first replies or the close_notify, or by
    /// [`flush`](Self::flush) before the connection waits for input.
    ///
    /// A handshake that completed counts as done even if a record read with its last flight
    /// failed the session (a device's first frame usually travels right behind its Finished):
    /// the caller finds that error on its first receive and reports it as what it is, a
    /// failed connection after a successful handshake.
    pub(crate) async fn handshake(&mut self) -> Result<(), DriveError> {
        loop {
            if !self.session.is_handshaking() {
                return Ok(());
            }
            if let Some(e) = self.session.error() {
                return Err(DriveError::Tls(e.clone()));
            }
            self.flush().await?;
            match self.read_input().await {
                // The session holds a TLS error; the checks above decide what it means.
                Ok(_) | Err(DriveError::Tls(_)) => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Encrypts `data` and writes it, after anything already queued (in the same write).
    pub(crate) async fn send(&mut self, mut data: &[u8]) -> Result<(), DriveError> {
        while !data.is_empty() {
            let queued = self.session.transmit_len();
            let chunk = data.len().min(SEND_CHUNK);
            let mut out = vec![0u8; queued + chunk + chunk.div_ceil(MAX_RECORD) * RECORD_OVERHEAD];
            let queued = self.session.poll_transmit(&mut out);
            let sent = self
                .session
                .send(&data[..chunk], &mut out[queued..])
                .map_err(DriveError::Tls)?;
            data = &data[sent.consumed..];
            self.write_raw(&out[..queued + sent.written]).await?;
            if sent.consumed == 0 && sent.written == 0 {
                return Err(DriveError::Tls(tether::Error::Closed));
            }
        }
        self.flush().await
    }

    /// Sends close_notify, shuts the TCP write side, and reads (discarding) until the peer
    /// closes or `linger` passes, so that unread input does not turn the close into a reset
    /// that could destroy the replies and close_notify before the peer reads them.
    ///
    /// A zero `linger` is for a peer that has already sent its close_notify (it sends nothing
    /// more, so no reset can come of closing at once): close_notify is written (for at most
    /// [`CLOSE_WRITE`]) and the socket closed when the connection is dropped, without waiting
    /// for the peer's FIN. That saves a wake-up and two system calls per connection.
    pub(crate) async fn close(&mut self, linger: Duration) {
        self.session.close();
        if linger.is_zero() {
            // The socket closes when the connection is dropped, right after this.
            let _ = tokio::time::timeout(CLOSE_WRITE, self.flush_before_fin()).await;
            return;
        }
        let _ = tokio::time::timeout(linger, async {
            if self.flush_before_fin().await.is_err() {
                return;
            }
            let _ = self.tcp.shutdown().await;
            let mut sink = vec![0u8; 4096];
            let mut left = 1024 * 1024usize;
            loop {
                if self.tcp.readable().await.is_err() {
                    return;
                }
                match self.tcp.try_read(&mut sink) {
                    Ok(0) => return,
                    Ok(n) => {
                        left = left.saturating_sub(n);
                        if left == 0 {
                            return;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return,
                }
            }
        })
        .await;
    }
}
