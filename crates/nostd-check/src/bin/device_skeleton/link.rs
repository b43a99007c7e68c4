//! The transport: a [`tether::socket::Transport`] over the device's link.
//!
//! On a device this is a TCP socket of its network stack (tether's `embedded-io` and `smoltcp`
//! features bring ready-made ones), a UART or a modem. Here the link ends in memory at a small
//! gateway: a tether server [`Session`] that sends records of at most
//! [`GATEWAY_RECORD`] bytes, echoes what it receives and closes after the device does. Each
//! transport call moves at most [`LINK_MTU`] bytes and advances the clock by a millisecond, so
//! records arrive split as they do over a network.

use alloc::collections::VecDeque;
use alloc::vec;

use tether::error::TransportError;
use tether::socket::Transport;
use tether::{Recv, ServerConfig, Session};

use crate::port;

/// Bytes per transport read or write.
pub const LINK_MTU: usize = 512;
/// The gateway's record size (`ServerConfig::builder(..).max_record_size`): small records keep
/// the device's input buffer small (docs/PERFORMANCE.md, case (b)).
pub const GATEWAY_RECORD: usize = 1024;

/// The device's end of the link; the gateway's session lives inside.
#[derive(Debug)]
pub struct GatewayLink {
    gateway: Session,
    /// TLS bytes on their way to the device.
    to_device: VecDeque<u8>,
    /// Application bytes the gateway still has to echo.
    echo: VecDeque<u8>,
    failed: bool,
}

impl GatewayLink {
    /// A link to a gateway running `config`.
    pub fn new(config: &ServerConfig) -> Result<GatewayLink, tether::Error> {
        Ok(GatewayLink {
            gateway: Session::server(config, port::now())?,
            to_device: VecDeque::new(),
            echo: VecDeque::new(),
            failed: false,
        })
    }

    /// The gateway's turn: read what arrived, echo it, close after the device closed, and
    /// queue its records for the device.
    fn gateway_turn(&mut self) {
        let g = &mut self.gateway;
        while g.poll_event().is_some() {}
        let mut buf = vec![0u8; GATEWAY_RECORD + 64];
        if !g.is_handshaking() && !g.is_failed() {
            loop {
                match g.recv(&mut buf) {
                    Ok(Recv::Data(n)) => self.echo.extend(&buf[..n]),
                    Ok(Recv::Closed) => {
                        g.close();
                        break;
                    }
                    Ok(Recv::Pending) | Err(_) => break,
                }
            }
            while !self.echo.is_empty() && !g.is_close_sent() {
                let (data, _) = self.echo.as_slices();
                match g.send(data, &mut buf) {
                    Ok(sent) => {
                        self.to_device.extend(&buf[..sent.written]);
                        self.echo.drain(..sent.consumed);
                    }
                    Err(_) => {
                        self.failed = true;
                        break;
                    }
                }
            }
        }
        loop {
            let n = g.poll_transmit(&mut buf);
            if n == 0 {
                break;
            }
            self.to_device.extend(&buf[..n]);
        }
        if g.is_failed() {
            self.failed = true;
        }
    }
}

impl Transport for GatewayLink {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, TransportError> {
        port::tick(1);
        self.gateway_turn();
        if self.to_device.is_empty() {
            if self.failed || self.gateway.is_close_sent() {
                // The gateway is gone (or closed after its close_notify): end of stream.
                return Ok(0);
            }
            // Nothing yet: a blocking socket checks its deadline and asks again.
            return Err(TransportError::WouldBlock);
        }
        let n = buf.len().min(LINK_MTU).min(self.to_device.len());
        for (dst, src) in buf.iter_mut().zip(self.to_device.drain(..n)) {
            *dst = src;
        }
        Ok(n)
    }

    fn write(&mut self, buf: &[u8]) -> Result<usize, TransportError> {
        port::tick(1);
        let n = buf.len().min(LINK_MTU);
        self.gateway
            .handle_input(port::now(), &buf[..n])
            .map_err(|_| TransportError::Reset)?;
        Ok(n)
    }
}
