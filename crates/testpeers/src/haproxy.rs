//! HAProxy as an L4 (TCP) balancer in front of several servers, for tests of gateways behind
//! one address: round robin over the backends, no health checks (so the order is exact), and a
//! connection whose backend refuses it is sent to the next one (`option redispatch`), as a
//! balancer does while a gateway restarts.
//!
//! HAProxy runs in the foreground (`-db`) as one process, so the [`Peer`] guard kills all of
//! it by PID. Its configuration lives in a temporary directory removed on drop.
//!
//! ```no_run
//! use testpeers::haproxy::Haproxy;
//! # fn main() -> Result<(), testpeers::PeerError> {
//! # let backends: Vec<std::net::SocketAddr> = Vec::new();
//! let balancer = Haproxy::start(testpeers::free_port(), &backends)?; // waits until it listens
//! println!("devices connect to 127.0.0.1:{}", balancer.port());
//! # Ok(()) }
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use tempfile::TempDir;

use crate::netns::wait_bound;
use crate::{Peer, PeerError, Transport};

/// A running HAProxy; killed on drop, its directory removed.
#[derive(Debug)]
pub struct Haproxy {
    /// The process.
    pub peer: Peer,
    port: u16,
    _dir: TempDir,
}

impl Haproxy {
    /// Listens on 127.0.0.1:`port` and spreads TCP connections over `backends` in turn;
    /// returns once it listens.
    pub fn start(port: u16, backends: &[SocketAddr]) -> Result<Haproxy, PeerError> {
        if backends.is_empty() {
            return Err(PeerError::new("haproxy setup: give at least one backend"));
        }
        let dir = tempfile::Builder::new()
            .prefix("testpeers-haproxy-")
            .tempdir()
            .map_err(|e| PeerError::new(format!("haproxy setup: temporary directory: {e}")))?;
        let servers: String = backends
            .iter()
            .enumerate()
            .map(|(i, a)| format!("    server gw{i} {a}\n"))
            .collect();
        let conf = format!(
            "global\n\
             \x20   maxconn 1024\n\
             defaults\n\
             \x20   mode tcp\n\
             \x20   timeout connect 2s\n\
             \x20   timeout client 60s\n\
             \x20   timeout server 60s\n\
             \x20   retries 2\n\
             \x20   option redispatch\n\
             frontend devices\n\
             \x20   bind 127.0.0.1:{port}\n\
             \x20   default_backend gateways\n\
             backend gateways\n\
             \x20   balance roundrobin\n\
             {servers}"
        );
        let path = dir.path().join("haproxy.cfg");
        std::fs::write(&path, conf)
            .map_err(|e| PeerError::new(format!("haproxy setup: haproxy.cfg: {e}")))?;
        let mut c = std::process::Command::new("haproxy");
        c.arg("-db").arg("-f").arg(&path);
        let peer = Peer::spawn("haproxy", c)?;
        wait_bound(
            &peer,
            Transport::Tcp,
            port,
            crate::START_TIMEOUT.max(Duration::from_secs(1)),
        )?;
        Ok(Haproxy {
            peer,
            port,
            _dir: dir,
        })
    }

    /// The port devices connect to.
    pub fn port(&self) -> u16 {
        self.port
    }
}
