//! `openssl s_server` and `openssl s_client` (OpenSSL 3.0 flags).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{Peer, PeerError, START_TIMEOUT, Transport, Version};

/// What `s_server` does with application data.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SServerMode {
    /// No mode flag. s_server prints what the client sends on its stdout
    /// ([`Peer::wait_for_output`]) and sends its stdin ([`Peer::send`]) to the client.
    /// Without `quiet`, a line from stdin starting with `Q` shuts the server down, `q` closes the
    /// connection, and `r`/`R`/`k`/`K`/`c`/`P`/`S` alone on a line are commands (renegotiate, key
    /// update, ...); end of file on stdin also shuts it down (the `Peer` keeps stdin open).
    #[default]
    Stdio,
    /// `-rev`: an echo server that sends each line it receives back reversed (so `hello\n` comes
    /// back as `olleh\n`); stdin is not used. Send `CLOSE\n` to make it close the connection.
    Rev,
    /// `-www`: answers `GET /` with an HTML status page (cipher, session) and closes.
    Www,
}

/// Options for [`openssl_s_server`]. `Default` is: any TLS version, no client certificate,
/// [`SServerMode::Stdio`], OpenSSL's default tickets, verbose, unlimited connections.
#[derive(Debug, Clone, Default)]
pub struct SServerOpts {
    /// `-tls1_2`, `-tls1_3` or `-dtls1_2` (then it listens on UDP).
    pub version: Option<Version>,
    /// Require a client certificate that verifies against this CA:
    /// `-CAfile CA -Verify 1 -verify_return_error`.
    pub client_ca: Option<PathBuf>,
    /// What to do with application data.
    pub mode: SServerMode,
    /// `-num_tickets N`: TLS 1.3 session tickets sent after each handshake (0 disables).
    pub num_tickets: Option<u32>,
    /// `-quiet`: no session, cipher or connection output (received data is still printed).
    pub quiet: bool,
    /// `-naccept N`: exit after N connections.
    pub naccept: Option<u32>,
    /// More arguments, appended last.
    pub args: Vec<OsString>,
}

/// The `openssl s_server` command for [`openssl_s_server`], to adjust before spawning it with
/// [`Peer::spawn`]: `openssl s_server -accept 127.0.0.1:PORT -cert CERT -key KEY [options]`.
pub fn openssl_s_server_command(port: u16, cert: &Path, key: &Path, opts: &SServerOpts) -> Command {
    let mut cmd = Command::new("openssl");
    cmd.arg("s_server")
        .arg("-accept")
        .arg(format!("127.0.0.1:{port}"))
        .arg("-cert")
        .arg(cert)
        .arg("-key")
        .arg(key);
    if let Some(version) = opts.version {
        cmd.arg(version_flag(version));
    }
    if let Some(ca) = &opts.client_ca {
        cmd.arg("-CAfile")
            .arg(ca)
            .args(["-Verify", "1", "-verify_return_error"]);
    }
    match opts.mode {
        SServerMode::Stdio => {}
        SServerMode::Rev => {
            cmd.arg("-rev");
        }
        SServerMode::Www => {
            cmd.arg("-www");
        }
    }
    if let Some(n) = opts.num_tickets {
        cmd.arg("-num_tickets").arg(n.to_string());
    }
    if opts.quiet {
        cmd.arg("-quiet");
    }
    if let Some(n) = opts.naccept {
        cmd.arg("-naccept").arg(n.to_string());
    }
    cmd.args(&opts.args);
    cmd
}

/// Starts `openssl s_server` on 127.0.0.1:`port` with `cert` and `key` (PEM) and waits until it
/// listens (TCP, or UDP for DTLS), without connecting to it.
pub fn openssl_s_server(
    port: u16,
    cert: &Path,
    key: &Path,
    opts: &SServerOpts,
) -> Result<Peer, PeerError> {
    let peer = Peer::spawn(
        "openssl s_server",
        openssl_s_server_command(port, cert, key, opts),
    )?;
    let transport = opts.version.map_or(Transport::Tcp, Version::transport);
    peer.wait_listening(transport, port, START_TIMEOUT)?;
    Ok(peer)
}

/// Options for [`openssl_s_client`]. `Default` connects to 127.0.0.1 with any TLS version, no
/// trust anchors (so the server certificate is not checked), no client certificate.
#[derive(Debug, Clone, Default)]
pub struct SClientOpts {
    /// Host to connect to; default `127.0.0.1`.
    pub host: Option<String>,
    /// Trust anchors: `-CAfile CA -verify_return_error`, so a server certificate that does not
    /// verify fails the handshake (plain s_client only reports it and carries on).
    pub ca_file: Option<PathBuf>,
    /// Client certificate (`-cert`), sent when the server asks for one.
    pub cert: Option<PathBuf>,
    /// Key of the client certificate (`-key`).
    pub key: Option<PathBuf>,
    /// SNI: `-servername NAME`.
    pub servername: Option<String>,
    /// Check the server certificate's name: `-verify_hostname NAME`.
    pub verify_hostname: Option<String>,
    /// `-tls1_2`, `-tls1_3` or `-dtls1_2` (then it connects over UDP).
    pub version: Option<Version>,
    /// `-sess_out FILE`: save the session (ticket) for a later `sess_in`.
    pub sess_out: Option<PathBuf>,
    /// `-sess_in FILE`: try to resume that session; s_client prints `Reused, TLS...` on success.
    pub sess_in: Option<PathBuf>,
    /// `-quiet`: print only received data (implies `-ign_eof`: closing stdin no longer ends the
    /// connection).
    pub quiet: bool,
    /// More arguments, appended last.
    pub args: Vec<OsString>,
}

/// The `openssl s_client` command for [`openssl_s_client`]:
/// `openssl s_client -connect HOST:PORT -nocommands [options]`.
pub fn openssl_s_client_command(port: u16, opts: &SClientOpts) -> Command {
    let host = opts.host.as_deref().unwrap_or("127.0.0.1");
    let mut cmd = Command::new("openssl");
    cmd.arg("s_client")
        .arg("-connect")
        .arg(format!("{host}:{port}"))
        // Lines starting with Q, R, k, K are data, not commands.
        .arg("-nocommands");
    if let Some(ca) = &opts.ca_file {
        cmd.arg("-CAfile").arg(ca).arg("-verify_return_error");
    }
    if let Some(cert) = &opts.cert {
        cmd.arg("-cert").arg(cert);
    }
    if let Some(key) = &opts.key {
        cmd.arg("-key").arg(key);
    }
    if let Some(name) = &opts.servername {
        cmd.arg("-servername").arg(name);
    }
    if let Some(name) = &opts.verify_hostname {
        cmd.arg("-verify_hostname").arg(name);
    }
    if let Some(version) = opts.version {
        cmd.arg(version_flag(version));
    }
    if let Some(file) = &opts.sess_out {
        cmd.arg("-sess_out").arg(file);
    }
    if let Some(file) = &opts.sess_in {
        cmd.arg("-sess_in").arg(file);
    }
    if opts.quiet {
        cmd.arg("-quiet");
    }
    cmd.args(&opts.args);
    cmd
}

/// Starts `openssl s_client` towards `port` with stdin piped, and returns at once.
///
/// Without `quiet` it prints `CONNECTED(...)` when the transport connects and
/// `Verify return code: 0 (ok)` once the handshake verified; received data goes to stdout.
/// Lines given to [`Peer::send_line`] go to the server; [`Peer::close_stdin`] closes the
/// connection and s_client exits.
pub fn openssl_s_client(port: u16, opts: &SClientOpts) -> Result<Peer, PeerError> {
    Peer::spawn("openssl s_client", openssl_s_client_command(port, opts))
}

fn version_flag(version: Version) -> &'static str {
    match version {
        Version::Tls12 => "-tls1_2",
        Version::Tls13 => "-tls1_3",
        Version::Dtls12 => "-dtls1_2",
    }
}
