//! `gnutls-serv` and `gnutls-cli` (GnuTLS 3.7 flags).
//!
//! gnutls-serv has no option to choose the listen address: it listens on every address
//! (`0.0.0.0` and `::`) of the port. That is acceptable on a test machine; clients still connect
//! to 127.0.0.1.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{Peer, PeerError, START_TIMEOUT, Transport, Version};

/// What `gnutls-serv` does with application data.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum GnutlsServMode {
    /// `--echo`: sends every record it receives straight back, and logs
    /// `*** Processing N bytes command: LINE` for it (TCP and UDP alike; TCP also logs
    /// `received cmd: LINE`).
    #[default]
    Echo,
    /// `--http` (gnutls-serv's own default): answers an HTTP request with a status page.
    Http,
}

/// Options for [`gnutls_serv`]. `Default` is: any TLS version, client certificate requested but
/// not required, [`GnutlsServMode::Echo`].
#[derive(Debug, Clone, Default)]
pub struct GnutlsServOpts {
    /// Pins the version with a priority string (see [`priority_for`]); `Dtls12` also adds
    /// `--udp`. Ignored for the priority when `priority` is set.
    pub version: Option<Version>,
    /// `--priority STRING`, overriding the one `version` implies.
    pub priority: Option<String>,
    /// Require a client certificate that verifies against this CA:
    /// `--x509cafile CA --require-client-cert --verify-client-cert`.
    pub client_ca: Option<PathBuf>,
    /// What to do with application data.
    pub mode: GnutlsServMode,
    /// More arguments, appended last.
    pub args: Vec<OsString>,
}

/// The priority string that allows only `version`, e.g. `NORMAL:-VERS-ALL:+VERS-TLS1.2`.
pub fn priority_for(version: Version) -> &'static str {
    match version {
        Version::Tls12 => "NORMAL:-VERS-ALL:+VERS-TLS1.2",
        Version::Tls13 => "NORMAL:-VERS-ALL:+VERS-TLS1.3",
        Version::Dtls12 => "NORMAL:-VERS-ALL:+VERS-DTLS1.2",
    }
}

fn priority_args(cmd: &mut Command, version: Option<Version>, priority: Option<&str>) {
    if let Some(p) = priority.or(version.map(priority_for)) {
        cmd.arg(format!("--priority={p}"));
    }
    if version == Some(Version::Dtls12) {
        cmd.arg("--udp");
    }
}

/// The `gnutls-serv` command for [`gnutls_serv`]:
/// `gnutls-serv --port PORT --x509certfile CERT --x509keyfile KEY [options]`.
pub fn gnutls_serv_command(port: u16, cert: &Path, key: &Path, opts: &GnutlsServOpts) -> Command {
    let mut cmd = Command::new("gnutls-serv");
    cmd.arg(format!("--port={port}"))
        .arg("--x509certfile")
        .arg(cert)
        .arg("--x509keyfile")
        .arg(key);
    priority_args(&mut cmd, opts.version, opts.priority.as_deref());
    if let Some(ca) = &opts.client_ca {
        cmd.arg("--x509cafile")
            .arg(ca)
            .args(["--require-client-cert", "--verify-client-cert"]);
    }
    cmd.arg(match opts.mode {
        GnutlsServMode::Echo => "--echo",
        GnutlsServMode::Http => "--http",
    });
    cmd.args(&opts.args);
    cmd
}

/// Starts `gnutls-serv` on `port` (all addresses, see the module doc) with `cert` and `key`
/// (PEM) and waits until it listens (TCP, or UDP for DTLS), without connecting to it.
pub fn gnutls_serv(
    port: u16,
    cert: &Path,
    key: &Path,
    opts: &GnutlsServOpts,
) -> Result<Peer, PeerError> {
    let peer = Peer::spawn("gnutls-serv", gnutls_serv_command(port, cert, key, opts))?;
    let transport = opts.version.map_or(Transport::Tcp, Version::transport);
    peer.wait_listening(transport, port, START_TIMEOUT)?;
    Ok(peer)
}

/// Options for [`gnutls_cli`]. `Default` connects to 127.0.0.1 with any TLS version and the
/// system's trust anchors.
#[derive(Debug, Clone, Default)]
pub struct GnutlsCliOpts {
    /// Host to connect to; default `127.0.0.1`. gnutls-cli checks the server certificate against
    /// it (an IP address matches an IP SAN) unless `verify_hostname` says otherwise.
    pub host: Option<String>,
    /// Trust anchors: `--x509cafile CA`. gnutls-cli fails the handshake when the server
    /// certificate does not verify (there is no `--insecure` here unless added to `args`).
    pub ca_file: Option<PathBuf>,
    /// Client certificate: `--x509certfile`.
    pub cert: Option<PathBuf>,
    /// Key of the client certificate: `--x509keyfile`.
    pub key: Option<PathBuf>,
    /// SNI: `--sni-hostname NAME`.
    pub sni_hostname: Option<String>,
    /// Name to check the server certificate against: `--verify-hostname NAME`.
    pub verify_hostname: Option<String>,
    /// Pins the version with a priority string (see [`priority_for`]); `Dtls12` adds `--udp`.
    pub version: Option<Version>,
    /// `--priority STRING`, overriding the one `version` implies.
    pub priority: Option<String>,
    /// More arguments, appended last.
    pub args: Vec<OsString>,
}

/// The `gnutls-cli` command for [`gnutls_cli`]: `gnutls-cli HOST --port PORT [options]`.
pub fn gnutls_cli_command(port: u16, opts: &GnutlsCliOpts) -> Command {
    let mut cmd = Command::new("gnutls-cli");
    cmd.arg(opts.host.as_deref().unwrap_or("127.0.0.1"))
        .arg(format!("--port={port}"));
    if let Some(ca) = &opts.ca_file {
        cmd.arg("--x509cafile").arg(ca);
    }
    if let Some(cert) = &opts.cert {
        cmd.arg("--x509certfile").arg(cert);
    }
    if let Some(key) = &opts.key {
        cmd.arg("--x509keyfile").arg(key);
    }
    if let Some(name) = &opts.sni_hostname {
        cmd.arg(format!("--sni-hostname={name}"));
    }
    if let Some(name) = &opts.verify_hostname {
        cmd.arg(format!("--verify-hostname={name}"));
    }
    priority_args(&mut cmd, opts.version, opts.priority.as_deref());
    cmd.args(&opts.args);
    cmd
}

/// Starts `gnutls-cli` towards `port` with stdin piped, and returns at once.
///
/// It prints `- Handshake was completed` once connected and verified, and received data on
/// stdout. Lines given to [`Peer::send_line`] go to the server (after the handshake);
/// [`Peer::close_stdin`] closes the connection and gnutls-cli exits.
pub fn gnutls_cli(port: u16, opts: &GnutlsCliOpts) -> Result<Peer, PeerError> {
    Peer::spawn("gnutls-cli", gnutls_cli_command(port, opts))
}
