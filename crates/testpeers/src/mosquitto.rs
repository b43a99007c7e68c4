//! A real `mosquitto` broker (Debian package `mosquitto`, 2.0) for MQTT-over-TLS tests.
//!
//! [`Mosquitto::start`] writes a configuration into a temporary directory, starts
//! `mosquitto -c FILE` (as a [`Peer`], so it is killed by PID and reaped on drop, also when the
//! test panics), and waits until every listener is bound. The broker logs to stderr
//! (unbuffered, unlike its stdout into a pipe) with connection messages on, so a test can see
//! on which port each client came in ([`connections_on`](Mosquitto::connections_on)).
//!
//! ```no_run
//! use testpeers::mosquitto::{Mosquitto, MosquittoOpts};
//! use testpeers::{TestPki, free_port, skip_or_fail};
//!
//! if !skip_or_fail("mosquitto") {
//!     return;
//! }
//! let pki = TestPki::new().unwrap();
//! let broker = Mosquitto::start(&MosquittoOpts {
//!     tls_port: free_port(),
//!     plain_port: Some(free_port()),
//!     cert: pki.server_cert.clone(),
//!     key: pki.server_key.clone(),
//!     ca: pki.ca_cert.clone(),
//!     require_certificate: true,
//!     tls_version: None,
//! })
//! .unwrap();
//! // ... connect to 127.0.0.1:broker.tls_port() ...
//! assert_eq!(broker.connections_on(broker.plain_port().unwrap()), 0);
//! ```
//!
//! Notes on mosquitto 2:
//! - `tls_version` on a listener is a *minimum* (`tlsv1.2` accepts 1.2 and 1.3): to test one
//!   version, cap the client.
//! - Started as root it would switch to the `mosquitto` user and then fail to read key files in
//!   the (0700) temporary directory: the configuration says `user root` when we are root.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tempfile::TempDir;

use crate::{Peer, PeerError, START_TIMEOUT, Transport};

/// Options for [`Mosquitto::start`].
#[derive(Debug, Clone)]
pub struct MosquittoOpts {
    /// The TLS listener's port on 127.0.0.1.
    pub tls_port: u16,
    /// A plain (unencrypted) listener on 127.0.0.1, if wanted.
    pub plain_port: Option<u16>,
    /// The broker's certificate chain (PEM).
    pub cert: PathBuf,
    /// The broker's private key (PEM).
    pub key: PathBuf,
    /// The CA that client certificates must chain to (PEM).
    pub ca: PathBuf,
    /// `require_certificate true`: clients without a certificate from `ca` are refused.
    pub require_certificate: bool,
    /// `tls_version` (a minimum in mosquitto 2): `"tlsv1.2"` or `"tlsv1.3"`; `None` leaves
    /// mosquitto's default.
    pub tls_version: Option<String>,
}

/// A running broker, killed (SIGKILL by PID) and its directory removed on drop.
#[derive(Debug)]
pub struct Mosquitto {
    // Dropped first: the process goes before its directory.
    peer: Peer,
    dir: TempDir,
    tls_port: u16,
    plain_port: Option<u16>,
}

fn is_root() -> bool {
    // /proc/self/status: "Uid:\treal\teffective\t...".
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// The configuration file for `opts` (paths quoted as mosquitto reads them: the rest of the
/// line).
pub fn config_text(opts: &MosquittoOpts) -> String {
    let mut c = String::new();
    if is_root() {
        c.push_str("user root\n");
    }
    c.push_str(
        "per_listener_settings false\n\
         allow_anonymous true\n\
         persistence false\n\
         log_dest stderr\n\
         log_type all\n\
         connection_messages true\n\
         log_timestamp false\n",
    );
    let _ = writeln!(c, "\nlistener {} 127.0.0.1", opts.tls_port);
    let _ = writeln!(c, "certfile {}", opts.cert.display());
    let _ = writeln!(c, "keyfile {}", opts.key.display());
    let _ = writeln!(c, "cafile {}", opts.ca.display());
    let _ = writeln!(c, "require_certificate {}", opts.require_certificate);
    if let Some(v) = &opts.tls_version {
        let _ = writeln!(c, "tls_version {v}");
    }
    if let Some(plain) = opts.plain_port {
        let _ = writeln!(c, "\nlistener {plain} 127.0.0.1");
    }
    c
}

impl Mosquitto {
    /// Writes the configuration, starts `mosquitto -c`, and waits until its listeners are
    /// bound (without connecting to them, so they see no probe connection).
    pub fn start(opts: &MosquittoOpts) -> Result<Mosquitto, PeerError> {
        if opts.plain_port == Some(opts.tls_port) {
            return Err(PeerError::new(format!(
                "mosquitto: the TLS and plain listeners were both given port {}; pick two ports",
                opts.tls_port
            )));
        }
        let dir = tempfile::Builder::new()
            .prefix("testpeers-mosquitto-")
            .tempdir()
            .map_err(|e| PeerError::new(format!("could not make a temporary directory: {e}")))?;
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(&conf, config_text(opts))
            .map_err(|e| PeerError::new(format!("could not write {}: {e}", conf.display())))?;
        let mut cmd = Command::new("mosquitto");
        cmd.arg("-c").arg(&conf);
        let peer = Peer::spawn("mosquitto", cmd)?;
        peer.wait_listening(Transport::Tcp, opts.tls_port, START_TIMEOUT)?;
        if let Some(plain) = opts.plain_port {
            peer.wait_listening(Transport::Tcp, plain, START_TIMEOUT)?;
        }
        Ok(Mosquitto {
            peer,
            dir,
            tls_port: opts.tls_port,
            plain_port: opts.plain_port,
        })
    }

    /// The TLS listener's port.
    pub fn tls_port(&self) -> u16 {
        self.tls_port
    }

    /// The plain listener's port, if there is one.
    pub fn plain_port(&self) -> Option<u16> {
        self.plain_port
    }

    /// The process.
    pub fn peer(&self) -> &Peer {
        &self.peer
    }

    /// The directory holding the configuration.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The broker's log so far (stdout and stderr).
    pub fn log(&self) -> String {
        self.peer.output_so_far()
    }

    /// Waits until `needle` appears in the log.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> Result<(), PeerError> {
        self.peer.wait_for_output(needle, timeout)
    }

    /// How many connections the broker has logged on `port` so far (mosquitto 2 logs
    /// `New connection from ADDR:PORT on port N.` for each accepted TCP connection).
    pub fn connections_on(&self, port: u16) -> usize {
        let needle = format!(" on port {port}.");
        self.log()
            .lines()
            .filter(|l| l.contains("New connection from") && l.contains(&needle))
            .count()
    }
}
