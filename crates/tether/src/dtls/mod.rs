//! DTLS 1.2 and 1.3 (feature `dtls`, std): the datagram twin of the TLS core and socket.
//!
//! The same policy objects and the same error categories as TLS, over UDP:
//! - [`Session`]: a sans-IO DTLS client or server over [dimpl](https://docs.rs/dimpl) 0.9.
//!   Datagrams in ([`handle_datagram`](Session::handle_datagram)), datagrams out
//!   ([`poll_datagram`](Session::poll_datagram)), events out
//!   ([`poll_event`](Session::poll_event)), one record per [`send`](Session::send) and
//!   [`recv`](Session::recv), and a [`poll_timeout`](Session::poll_timeout) deadline for
//!   retransmission and the handshake timeout. Time is passed in as [`crate::Instant`].
//! - [`ClientConfig`] / [`ServerConfig`]: built from the same [`Trust`](crate::Trust),
//!   [`Identity`](crate::Identity) and [`ClientAuth`](crate::ClientAuth) as TLS, with a
//!   [`DtlsVersion`] range, a handshake timeout, the path MTU and the retransmission timer.
//! - [`DtlsSocket`]: a socket over any [`DatagramTransport`] (a connected std `UdpSocket` is
//!   one), blocking with timeouts or non-blocking, in the shape of
//!   [`TlsSocket`](crate::socket::TlsSocket): [`connect`], [`DtlsSocket::send`], [`DtlsSocket::recv`],
//!   [`DtlsSocket::close`]; [`accept_one`] serves one peer on a UDP socket (tests, tools).
//! - [`Acceptor`] (module [`listen`]): stateless cookies for a listener that serves many peers
//!   on one UDP socket: no per-peer memory until a peer echoes a cookie.
//!
//! ```
//! # fn main() -> Result<(), tether::Error> {
//! use tether::dtls::{self, DtlsVersion};
//! use tether::{Event, Identity, Instant, Recv, Trust};
//! # let ca_pem = include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/ca.pem"));
//! # let cert_pem = include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/server.pem"));
//! # let key_pem = include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/server.key"));
//! let server_config = dtls::ServerConfig::builder(Identity::from_pem(cert_pem, key_pem)?).build()?;
//! let client_config = dtls::ClientConfig::builder(Trust::from_pem(ca_pem)?)
//!     .versions(DtlsVersion::Dtls13, DtlsVersion::Dtls13)
//!     .build()?;
//! let now = Instant::ZERO;
//! let mut client = dtls::Session::client(&client_config, "localhost", now)?;
//! let mut server = dtls::Session::server(&server_config, now)?;
//! // Move datagrams between the two until both are connected (a real driver also calls
//! // handle_timeout at poll_timeout, to retransmit lost flights).
//! while client.is_handshaking() || server.is_handshaking() {
//!     while let Some(d) = client.pop_datagram() {
//!         server.handle_datagram(now, &d)?;
//!     }
//!     while let Some(d) = server.pop_datagram() {
//!         client.handle_datagram(now, &d)?;
//!     }
//! }
//! assert_eq!(client.poll_event(), Some(Event::Connected));
//! assert_eq!(client.version(), Some(DtlsVersion::Dtls13));
//! client.send(b"hello")?; // one record, one datagram
//! while let Some(d) = client.pop_datagram() {
//!     server.handle_datagram(now, &d)?;
//! }
//! let mut got = [0u8; 64];
//! assert_eq!(server.recv(&mut got)?, Recv::Data(5));
//! assert_eq!(&got[..5], b"hello");
//! # Ok(()) }
//! ```
//!
//! # Verification
//!
//! dimpl checks the handshake signatures but does no PKI validation: it hands out the peer's
//! leaf certificate. tether verifies that leaf with the config's [`Trust`](crate::Trust), through
//! the same functions as the TLS verifiers (CA roots and name, pins, TOFU; client certificates
//! with [`ClientAuth::Required`](crate::ClientAuth::Required)), before anything else the engine
//! produced is released: no datagram of ours that answers the peer's flight, no
//! [`Event::Connected`](crate::Event::Connected), no application data. A peer that fails is
//! refused with the TLS error categories ([`Error::Certificate`](crate::Error::Certificate),
//! [`Error::PinMismatch`](crate::Error::PinMismatch),
//! [`Error::TofuKeyChanged`](crate::Error::TofuKeyChanged)), and a fatal alert is sent (best
//! effort, unprotected).
//!
//! # What dimpl does not do (and what that means here)
//!
//! - Only leaf certificates travel: dimpl sends just the leaf of an [`Identity`](crate::Identity)
//!   and reports just the peer's leaf. A peer whose certificate is issued by an intermediate CA
//!   verifies only when the verifying side knows that intermediate: configure it with
//!   [`ClientConfigBuilder::intermediates`] / [`ServerConfigBuilder::intermediates`] (or trust it
//!   as a root).
//! - Keys are ECDSA P-256 or P-384 only (no RSA, no Ed25519): building a config with another key
//!   fails with [`ConfigError::BadKey`](crate::error::ConfigError::BadKey).
//! - No SNI, no ALPN, no session resumption, no optional client certificates
//!   ([`ClientAuth::Optional`](crate::ClientAuth::Optional) is refused: a DTLS server either
//!   requires a certificate or does not ask for one).
//! - A client without an identity still owns a throwaway self-signed ECDSA certificate (dimpl
//!   needs one); it is sent only if a server asks for a certificate, which then refuses it.
//! - Application data is never fragmented: a record must fit the path MTU
//!   ([`Session::max_send_size`]); a larger `send` fails, nothing is truncated.

pub mod config;
mod crypto;
pub mod listen;
pub mod session;
pub mod socket;
mod wire;

use core::fmt;

pub use config::{
    ClientConfig, ClientConfigBuilder, DEFAULT_MTU, ServerConfig, ServerConfigBuilder,
};
pub use listen::{Accept, Acceptor, DropReason};
pub use session::{Session, recycle};
pub use socket::{
    DatagramTransport, DtlsSocket, UdpDtlsSocket, accept_one, connect, connect_named,
};

/// A DTLS protocol version tether speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DtlsVersion {
    /// DTLS 1.2 (RFC 6347): ECDHE-ECDSA with AEAD suites.
    Dtls12,
    /// DTLS 1.3 (RFC 9147).
    Dtls13,
}

impl fmt::Display for DtlsVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl DtlsVersion {
    /// The version's name as OpenSSL prints it: `DTLSv1.2`, `DTLSv1.3`.
    pub fn as_str(self) -> &'static str {
        match self {
            DtlsVersion::Dtls12 => "DTLSv1.2",
            DtlsVersion::Dtls13 => "DTLSv1.3",
        }
    }

    fn from_dimpl(v: dimpl::ProtocolVersion) -> Option<DtlsVersion> {
        if v == dimpl::ProtocolVersion::DTLS1_2 {
            Some(DtlsVersion::Dtls12)
        } else if v == dimpl::ProtocolVersion::DTLS1_3 {
            Some(DtlsVersion::Dtls13)
        } else {
            None
        }
    }

    /// The most bytes a record of this version adds to its plaintext: DTLS 1.2 AES-GCM is a
    /// 13-byte header, an 8-byte explicit nonce and a 16-byte tag; DTLS 1.3 a 5-byte unified
    /// header, the inner content type and a 16-byte tag.
    pub(crate) fn record_overhead(version: Option<DtlsVersion>) -> usize {
        match version {
            Some(DtlsVersion::Dtls13) => 5 + 1 + 16,
            _ => 13 + 8 + 16,
        }
    }
}
