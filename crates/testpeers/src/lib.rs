//! Real TLS peers for tether's integration tests.
//!
//! Tests start a real `openssl s_server`, `openssl s_client`, `gnutls-serv` or `gnutls-cli` process
//! on 127.0.0.1, talk to it, and rely on [`Peer`]'s `Drop` to kill it (SIGKILL by PID) and reap it,
//! also when the test panics. The peer's stdout and stderr are drained by threads into memory, so a
//! chatty peer never blocks on a full pipe, and a failing test prints what the peer said.
//!
//! ```no_run
//! use std::time::Duration;
//! use testpeers::{SClientOpts, SServerOpts, TestPki, free_port, skip_or_fail};
//!
//! if !skip_or_fail("openssl") {
//!     return; // outside CI: skipped, and the reason was printed
//! }
//! let pki = TestPki::new().unwrap();
//! let port = free_port();
//! // Waits until the server listens.
//! let server = testpeers::openssl_s_server(
//!     port, &pki.server_cert, &pki.server_key, &SServerOpts::default()).unwrap();
//! let mut client = testpeers::openssl_s_client(
//!     port, &SClientOpts { ca_file: Some(pki.ca_cert.clone()), ..Default::default() }).unwrap();
//! client.wait_for_output("Verify return code: 0 (ok)", Duration::from_secs(10)).unwrap();
//! client.send_line("hello").unwrap();
//! server.wait_for_output("hello", Duration::from_secs(10)).unwrap();
//! // Both processes are killed and reaped here.
//! ```
//!
//! Missing peers: [`skip_or_fail`] fails the test under `CI=true` (where `scripts/test` has
//! installed every peer) and skips it, saying why, elsewhere.
//!
//! Rules for callers:
//! - Bind the peer to a port from [`free_port`] / [`free_udp_port`]; never hard-code ports, tests
//!   run in parallel.
//! - Keep a [`Peer`] in a local variable, never in a `static`: statics are never dropped, so the
//!   process would outlive the test binary.

// A std-only test helper: the workspace's no_std lints (std_instead_of_core/alloc) are for the
// library crates, not for a crate that spawns processes.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

mod gnutls;
pub mod haproxy;
pub mod mosquitto;
pub mod netns;
pub mod nginx;
mod openssl;
mod peer;
mod pki;
mod tools;

use std::net::{TcpListener, UdpSocket};

pub use gnutls::{
    GnutlsCliOpts, GnutlsServMode, GnutlsServOpts, gnutls_cli, gnutls_cli_command, gnutls_serv,
    gnutls_serv_command, priority_for,
};
pub use openssl::{
    SClientOpts, SServerMode, SServerOpts, openssl_s_client, openssl_s_client_command,
    openssl_s_server, openssl_s_server_command,
};
pub use peer::{Peer, PeerError, Transport, process_alive};
pub use pki::TestPki;
pub use tools::{
    debian_package, find_tool, on_ci, peer_available, require_tool, skip_or_fail, skip_or_fail_all,
};

/// How long the server helpers wait for a freshly started peer to listen.
pub const START_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// The protocol version a peer is pinned to; `None` in the options means the peer's default range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// TLS 1.2 only (over TCP).
    Tls12,
    /// TLS 1.3 only (over TCP).
    Tls13,
    /// DTLS 1.2 only (over UDP).
    Dtls12,
}

impl Version {
    /// The transport this version runs over.
    pub fn transport(self) -> Transport {
        match self {
            Version::Tls12 | Version::Tls13 => Transport::Tcp,
            Version::Dtls12 => Transport::Udp,
        }
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago (bind port 0, read it, drop the listener).
///
/// # Panics
/// When no socket can be bound on 127.0.0.1.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind(("127.0.0.1", 0)).expect("bind 127.0.0.1:0 (TCP)");
    listener
        .local_addr()
        .expect("local_addr of a bound listener")
        .port()
}

/// A UDP port on 127.0.0.1 that was free a moment ago (bind port 0, read it, drop the socket).
///
/// # Panics
/// When no socket can be bound on 127.0.0.1.
pub fn free_udp_port() -> u16 {
    let socket = UdpSocket::bind(("127.0.0.1", 0)).expect("bind 127.0.0.1:0 (UDP)");
    socket
        .local_addr()
        .expect("local_addr of a bound socket")
        .port()
}
