//! # tether-gateway: many device TLS sessions on one machine
//!
//! The gateway devices hold a persistent TLS link to: a TLS listener (default 127.0.0.1:8081)
//! and a DTLS 1.2/1.3 listener (UDP, by default on the same address and port number), both
//! speaking the [`tether_wire`] frame protocol (ECHO, REVERSE, TIME; ERROR for what it will not
//! serve), and an HTTP API (default 127.0.0.1:8080) with `/health`, `/devices` and `/metrics`.
//! `tether serve` is this crate behind a command line.
//!
//! ## Shape
//!
//! - [`GatewayConfig`] (module [`config`]): addresses, server identity, client-auth policy
//!   (mTLS with a device CA and an optional allow-list of device ids, read again from its file
//!   while running so that a device taken off it is cut off, or server-only TLS), TLS
//!   minimum version, handshake/idle/drain timeouts, connection limits, the frame size limit,
//!   and where session-ticket keys come from ([`TicketSource`]: a key file shared by every
//!   gateway behind a balancer, so that a device resumes on any of them).
//! - [`Gateway`]: [`bind`](Gateway::bind) builds the [`tether::ServerConfig`] and binds both
//!   listeners; [`run`](Gateway::run) accepts, checks the global and per-IP limits (over a limit:
//!   closed at once and counted), and spawns one task per connection; a [`ReloadHandle`]
//!   makes it read its certificate, allow-list and ticket key files at once; a [`ShutdownHandle`]
//!   drains it.
//! - The connection task (`conn`): the TLS handshake under the handshake timeout, the device id
//!   (common name of the client certificate's subject) and the allow-list (a device it refuses
//!   gets the access_denied alert, [`tether::Session::refuse`]), then the frame loop:
//!   decrypt, decode, reply per frame; an oversize frame gets ERROR (code 1), close_notify, close;
//!   an idle connection gets close_notify at the idle timeout.
//! - The async driver (`driver`): a [`tether::Session`] (sans-IO) over a tokio `TcpStream`.
//!   It waits for readability and then reads straight into the session's input buffer, and
//!   allocates write buffers only while something is being written, so an idle established
//!   session holds no 16 KiB buffers: neither the gateway nor the session keeps any.
//! - The DTLS listener (`dtls`): one task owns the UDP socket and every DTLS session, keyed by
//!   the peer's address. Datagrams from unknown addresses go to a
//!   [`tether::dtls::Acceptor`], which answers first ClientHellos with a stateless cookie
//!   request and makes a session only for a ClientHello that echoes a valid cookie, so spoofed
//!   sources never hold memory. Then the same identity check, allow-list, frames, registry
//!   entries (`"transport": "dtls"`) and metrics (`transport="dtls"`) as TLS, limits on sessions
//!   in handshake ([`GatewayConfig::dtls_max_handshaking`]) and in all, idle expiry, and
//!   close_notify at drain. Configure it with [`GatewayConfig::dtls`] ([`DtlsListen`]).
//! - [`Metrics`] (module [`metrics`]): atomics, rendered as Prometheus text.
//! - The device registry ([`DeviceInfo`]), behind `GET /devices`.
//!
//! ## Drain
//!
//! [`ShutdownHandle::shutdown`]: the accept loop stops and the listener closes; `/health`
//! answers 503; each connection answers the frames it has already received (what the socket
//! holds, and the rest of a frame partly in), sends close_notify and closes; the DTLS listener
//! serves the datagrams its socket holds and sends close_notify to every DTLS session; whatever
//! is still open at the drain timeout is cut; then [`Gateway::run`] returns.

#![warn(missing_docs)]

pub mod config;
mod conn;
mod driver;
mod dtls;
mod gateway;
mod http;
pub mod metrics;
mod registry;

use std::fmt;
use std::io;

pub use config::{AllowList, ClientAuthPolicy, DtlsListen, GatewayConfig, TicketSource};
pub use gateway::{Devices, Gateway, ReloadHandle, ShutdownHandle};
pub use metrics::{DtlsDrop, Metrics, TransportMetrics};
pub use registry::DeviceInfo;

/// Why a gateway could not start.
#[derive(Debug)]
#[non_exhaustive]
pub enum GatewayError {
    /// A configuration value is wrong (the message names it).
    Config(String),
    /// A file or socket operation failed.
    Io {
        /// What was being done ("cannot listen on 127.0.0.1:8081 (TLS)").
        context: String,
        /// The operating system's error.
        source: io::Error,
    },
    /// The TLS policy could not be built (bad key, no trust anchors...).
    Tls(tether::Error),
}

impl GatewayError {
    pub(crate) fn io(context: String, source: io::Error) -> GatewayError {
        GatewayError::Io { context, source }
    }
}

impl fmt::Display for GatewayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GatewayError::Config(s) => f.write_str(s),
            GatewayError::Io { context, source } => write!(f, "{context}: {source}"),
            GatewayError::Tls(e) => write!(f, "TLS policy: {e}"),
        }
    }
}

/// The `Display` text is complete (it includes the operating system's or TLS error), so that
/// one line says everything; `source` is not chained again.
impl std::error::Error for GatewayError {}
