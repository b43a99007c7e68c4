//! The DTLS bench client's UDP transport: a connected UDP socket that sends and receives either
//! one datagram per system call (`--udp plain`, what most DTLS clients do) or in batches
//! (`--udp gso`, what a QUIC stack does on Linux):
//!
//! - sends are queued and go out as one UDP GSO `sendmsg` (quinn-udp) when the client is about
//!   to wait for a reply, or when the batch is full;
//! - the socket accepts GRO (quinn-udp sets `UDP_GRO`): a batch the server sent with GSO arrives
//!   as one buffer, which [`recv`](tether::dtls::DatagramTransport::recv) hands out one datagram
//!   at a time.
//!
//! Both modes carry the same datagrams: a server that does not batch (`openssl s_server`) sees
//! the client's batches split back into datagrams by the kernel, on the client's side, and
//! sends its replies one by one as before. What batching changes is what the kernel charges a
//! server that batches too (the gateway's DTLS listener): one system call and one socket
//! wake-up for many datagrams.

use std::io::{self, IoSliceMut};
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use tether::dtls::DatagramTransport;
use tether::error::TransportError;

/// How the bench client moves datagrams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum UdpMode {
    /// One `send`/`recv` system call per datagram.
    Plain,
    /// GSO batches out, GRO batches in (Linux).
    Gso,
}

/// Largest buffer one GRO receive may fill (64 KiB: the largest UDP payload the kernel
/// coalesces).
const RX_BUF: usize = 64 * 1024;
/// Most bytes one GSO send carries (an IP packet, and so a GSO batch, is at most 64 KiB).
const TX_MAX: usize = 60_000;

/// A connected UDP socket in either mode.
pub struct BenchUdp {
    socket: UdpSocket,
    batch: Option<Batch>,
}

struct Batch {
    state: quinn_udp::UdpSocketState,
    peer: SocketAddr,
    /// Datagrams received in one GRO buffer, handed out from `rx_pos`.
    rx: Vec<u8>,
    rx_len: usize,
    rx_stride: usize,
    rx_pos: usize,
    /// Datagrams queued for one GSO send: all `tx_segment` bytes long but the last.
    tx: Vec<u8>,
    tx_segment: usize,
    tx_count: usize,
    /// Set once a datagram shorter than `tx_segment` is queued: it must be the last.
    tx_closed: bool,
}

impl BenchUdp {
    /// Opens a UDP socket connected to `peer`.
    pub fn connect(peer: SocketAddr, mode: UdpMode) -> io::Result<BenchUdp> {
        let local = if peer.is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        };
        let socket = UdpSocket::bind(local)?;
        socket.connect(peer)?;
        let batch = match mode {
            UdpMode::Plain => None,
            UdpMode::Gso => {
                let state = quinn_udp::UdpSocketState::new((&socket).into())?;
                // quinn-udp makes the socket non-blocking; the DTLS socket drives it blocking,
                // with read timeouts.
                socket.set_nonblocking(false)?;
                Some(Batch {
                    state,
                    peer,
                    rx: vec![0; RX_BUF],
                    rx_len: 0,
                    rx_stride: 0,
                    rx_pos: 0,
                    tx: Vec::with_capacity(TX_MAX),
                    tx_segment: 0,
                    tx_count: 0,
                    tx_closed: false,
                })
            }
        };
        Ok(BenchUdp { socket, batch })
    }

    /// Sends the queued batch, if any.
    fn flush(&mut self) -> Result<(), TransportError> {
        match &mut self.batch {
            Some(b) => b.flush(&self.socket),
            None => Ok(()),
        }
    }
}

impl Batch {
    /// Sends the queued datagrams in one GSO `sendmsg`, if there are any.
    fn flush(&mut self, socket: &UdpSocket) -> Result<(), TransportError> {
        if self.tx_count == 0 {
            return Ok(());
        }
        let transmit = quinn_udp::Transmit {
            destination: self.peer,
            ecn: None,
            contents: &self.tx,
            segment_size: (self.tx_count > 1).then_some(self.tx_segment),
            src_ip: None,
        };
        let r = retry(|| self.state.try_send(socket.into(), &transmit));
        self.tx.clear();
        self.tx_count = 0;
        self.tx_closed = false;
        r
    }

    /// Whether `datagram` can join the queued batch (same segment size, or a shorter last one).
    fn fits(&self, datagram: &[u8]) -> bool {
        self.tx_count > 0
            && !self.tx_closed
            && datagram.len() <= self.tx_segment
            && self.tx_count < self.state.max_gso_segments()
            && self.tx.len() + datagram.len() <= TX_MAX
    }
}

impl DatagramTransport for BenchUdp {
    fn send(&mut self, datagram: &[u8]) -> Result<(), TransportError> {
        let Some(b) = &mut self.batch else {
            return retry(|| self.socket.send(datagram)).map(drop);
        };
        if !b.fits(datagram) {
            b.flush(&self.socket)?;
        }
        if b.tx_count == 0 {
            b.tx_segment = datagram.len();
        } else if datagram.len() < b.tx_segment {
            b.tx_closed = true;
        }
        b.tx.extend_from_slice(datagram);
        b.tx_count += 1;
        Ok(())
    }

    fn recv(&mut self, buf: &mut [u8]) -> Result<usize, TransportError> {
        let Some(b) = &mut self.batch else {
            return retry(|| self.socket.recv(buf));
        };
        if b.rx_pos >= b.rx_len {
            // About to wait: what the client queued goes out first.
            b.flush(&self.socket)?;
            let mut meta = [quinn_udp::RecvMeta::default()];
            let n = retry(|| {
                let mut bufs = [IoSliceMut::new(&mut b.rx)];
                b.state.recv((&self.socket).into(), &mut bufs, &mut meta)
            })?;
            if n == 0 {
                return Err(TransportError::WouldBlock);
            }
            b.rx_len = meta[0].len;
            b.rx_stride = meta[0].stride.max(1);
            b.rx_pos = 0;
        }
        let end = (b.rx_pos + b.rx_stride).min(b.rx_len);
        let datagram = &b.rx[b.rx_pos..end];
        b.rx_pos = end;
        let n = datagram.len().min(buf.len());
        buf[..n].copy_from_slice(&datagram[..n]);
        Ok(n)
    }

    fn set_read_timeout(&mut self, timeout: Option<Duration>) -> Result<(), TransportError> {
        self.socket
            .set_read_timeout(timeout)
            .map_err(|e| TransportError::Other(e.to_string()))
    }

    fn set_nonblocking(&mut self, nonblocking: bool) -> Result<(), TransportError> {
        self.socket
            .set_nonblocking(nonblocking)
            .map_err(|e| TransportError::Other(e.to_string()))
    }

    fn shutdown(&mut self) {
        let _ = self.flush();
    }
}

impl Drop for BenchUdp {
    fn drop(&mut self) {
        // A close_notify still queued goes out.
        let _ = self.flush();
    }
}

/// Retries interrupted calls; a timeout is a would-block for the DTLS socket.
fn retry<R>(mut f: impl FnMut() -> io::Result<R>) -> Result<R, TransportError> {
    loop {
        match f() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(TransportError::WouldBlock);
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                return Err(TransportError::Other(
                    "the server's host refused the datagram (ICMP port unreachable): nothing \
                     listens on that UDP port"
                        .into(),
                ));
            }
            r => return r.map_err(|e| TransportError::Other(e.to_string())),
        }
    }
}
