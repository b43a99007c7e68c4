//! # tether: verified TLS secure sockets for devices and the servers they talk to
//!
//! One TLS 1.2/1.3 connection, client or server, over any transport, blocking or
//! non-blocking, `no_std` + `alloc` on a microcontroller and std on a gateway.
//!
//! Layers, bottom up:
//! - [`Session`]: the sans-IO core over rustls' unbuffered API. Bytes in, events and bytes out,
//!   into buffers the caller owns; time passed in; never blocks, never reads a clock.
//! - [`ClientConfig`], [`ServerConfig`], [`Trust`]: policy. Verification is always on: CA roots,
//!   SPKI [`Pin`]s, trust on first use ([`TofuStore`]); the only unverified mode is
//!   [`Trust::danger_accept_any`].
//! - [`socket::TlsSocket`]: a socket over any [`socket::Transport`] (blocking or non-blocking),
//!   with the std adapter for `TcpStream` in [`net`] (feature `std`).
//! - [`Error`]: one categorised error type; each message says what happened and what to do.
//! - `dtls` (feature `dtls`): DTLS 1.2/1.3 over UDP with the same trust, identities and errors:
//!   `dtls::Session` (sans-IO, over dimpl) and `dtls::DtlsSocket`.
//! - `embedded` (feature `embedded-io`, no_std): `TlsSocket` over any `embedded_io::{Read,
//!   Write}` stream, and `TlsSocket` as an embedded-io stream itself; [`Error`] implements
//!   `embedded_io::Error`.
//! - `asynch` (feature `async`, no_std): `AsyncTlsSocket` over `embedded_io_async` transports,
//!   itself `embedded_io_async::{Read, Write}`, so no_std async clients (rust-mqtt: MQTT over
//!   TLS, see `examples/mqtt_tls.rs`) run over it.
//! - [`provision`] (no_std, always): the gateway endpoint blob a device reads from memory
//!   (`u32` length + `"host:port"`), its reader and writer (`tether provision` prints it as
//!   Renode commands).
//! - `smoltcp` (feature `smoltcp`, no_std): blocking `TlsSocket` over a smoltcp 0.14 TCP socket,
//!   the interface polled with the device's `now_ms`/`sleep_ms` callbacks (DHCP + DNS + HTTPS:
//!   `crates/device-https`).
//! - `tokio` (feature `tokio`, std): `tokio::TlsStream` over any tokio `AsyncRead +
//!   AsyncWrite` stream, itself both; `tokio::connect` over TCP.
//!
//! Features: `std` (default: TcpStream adapter, system clock, TOFU file store, `io::Error`
//! mapping), `mozilla-roots` (bundled Mozilla CA roots), `dtls` (DTLS, implies `std`),
//! `embedded-io` (blocking embedded-io adapters), `async` (the async socket, implies
//! `embedded-io`), `smoltcp` (smoltcp TCP sockets as transports), `tokio` (the tokio stream,
//! implies `std`).
//!
//! ```
//! # fn main() -> Result<(), tether::Error> {
//! // A client and a server talking through two in-memory "wires".
//! use tether::{ClientConfig, Identity, Instant, Recv, ServerConfig, Session, Trust};
//! # let ca_pem = include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/ca.pem"));
//! # let cert_pem = include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/server.pem"));
//! # let key_pem = include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/server.key"));
//! let server_config = ServerConfig::builder(Identity::from_pem(cert_pem, key_pem)?).build()?;
//! let client_config = ClientConfig::builder(Trust::from_pem(ca_pem)?).build()?;
//! let now = Instant::ZERO;
//! let mut client = Session::client(&client_config, "localhost", now)?;
//! let mut server = Session::server(&server_config, now)?;
//! let mut buf = vec![0u8; 32 * 1024];
//! while client.is_handshaking() || server.is_handshaking() {
//!     let n = client.poll_transmit(&mut buf);
//!     server.handle_input(now, &buf[..n])?;
//!     let n = server.poll_transmit(&mut buf);
//!     client.handle_input(now, &buf[..n])?;
//! }
//! let sent = client.send(b"hello", &mut buf)?;
//! server.handle_input(now, &buf[..sent.written])?;
//! let mut got = [0u8; 16];
//! assert_eq!(server.recv(&mut got)?, Recv::Data(5));
//! assert_eq!(&got[..5], b"hello");
//! # Ok(()) }
//! ```

#![cfg_attr(not(feature = "std"), no_std)]
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![warn(
    clippy::std_instead_of_core,
    clippy::std_instead_of_alloc,
    clippy::alloc_instead_of_core
)]

extern crate alloc;

pub mod config;
mod der;
pub mod error;
pub mod pin;
pub mod provision;
pub mod reconnect;
mod record;
pub mod resume;
pub mod session;
pub mod socket;
mod suites;
pub mod time;
pub mod trust;

#[cfg(feature = "std")]
pub mod net;

#[cfg(feature = "dtls")]
pub mod dtls;

#[cfg(feature = "embedded-io")]
pub mod embedded;

#[cfg(feature = "async")]
pub mod asynch;

#[cfg(feature = "smoltcp")]
pub mod smoltcp;

#[cfg(feature = "tokio")]
pub mod tokio;

pub use config::{
    ClientConfig, ClientConfigBuilder, Crypto, Identity, ServerConfig, ServerConfigBuilder,
    TlsVersion,
};
pub use error::Error;
pub use pin::Pin;
pub use resume::{TicketKey, Ticketer};
pub use session::{Event, Recv, Sent, Session, Side};
pub use time::{Instant, TimePolicy, WallClock};
pub use trust::{ClientAuth, MemoryTofuStore, TofuStore, Trust};

/// Cipher suite and group names, re-exported from rustls.
pub use rustls::{CipherSuite, NamedGroup};
/// A DER certificate, as [`Session::peer_certificates`] returns them.
pub use rustls_pki_types::CertificateDer;
