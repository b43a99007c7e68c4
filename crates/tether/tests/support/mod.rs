//! Shared helpers for the real-socket tests (`tests/interop.rs`, `tests/socket.rs`):
//! certificates made at test time with `tether_pki` (what `tether pki` runs) into a temporary
//! directory, configs built from them, and bounded TCP helpers (every accept, read and thread
//! has a deadline, so a broken peer fails a test instead of hanging it).

#![allow(dead_code)]

use std::io::Write as _;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tether::net::{StdClock, TcpTlsSocket};
use tether::socket::TlsSocket;
use tether::{ClientAuth, ClientConfig, Error, Identity, ServerConfig, TlsVersion, Trust};
use tether_pki::{Ca, IssueOptions, Issued, KeyKind};

/// How long a test waits for a peer to do something before it fails.
pub const WAIT: Duration = Duration::from_secs(15);

/// Both TLS versions tether speaks.
pub const VERSIONS: [TlsVersion; 2] = [TlsVersion::Tls12, TlsVersion::Tls13];

/// TLS 1.2 to 1.3 (the default range).
pub const BOTH: (TlsVersion, TlsVersion) = (TlsVersion::Tls12, TlsVersion::Tls13);

/// A (min, max) range holding only `v`.
pub fn only(v: TlsVersion) -> (TlsVersion, TlsVersion) {
    (v, v)
}

/// The test peers' name for `v`.
pub fn peer_version(v: TlsVersion) -> testpeers::Version {
    match v {
        TlsVersion::Tls12 => testpeers::Version::Tls12,
        TlsVersion::Tls13 => testpeers::Version::Tls13,
    }
}

/// A certificate and key issued by `tether_pki`, also written as PEM files for the peers.
#[derive(Debug)]
pub struct Files {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub issued: Issued,
}

impl Files {
    fn write(dir: &Path, name: &str, issued: Issued) -> Files {
        let cert = dir.join(format!("{name}.pem"));
        let key = dir.join(format!("{name}.key"));
        std::fs::write(&cert, &issued.cert_pem).unwrap();
        std::fs::write(&key, &issued.key_pem).unwrap();
        Files { cert, key, issued }
    }

    pub fn identity(&self) -> Identity {
        Identity::from_pem(
            self.issued.cert_pem.as_bytes(),
            self.issued.key_pem.as_bytes(),
        )
        .unwrap()
    }

    pub fn der(&self) -> &[u8] {
        &self.issued.cert_der
    }

    pub fn pin(&self) -> tether::Pin {
        tether_pki::spki_pin(&self.issued.cert_der)
            .unwrap()
            .parse()
            .unwrap()
    }
}

/// A CA, a server certificate for `localhost` and `127.0.0.1`, and a device certificate
/// `device-1`, in a temporary directory removed on drop.
#[derive(Debug)]
pub struct Pki {
    pub dir: TempDir,
    pub ca: Ca,
    pub ca_pem: PathBuf,
    pub server: Files,
    pub client: Files,
}

impl Pki {
    pub fn new() -> Pki {
        Pki::with_ca_name("tether test CA")
    }

    /// Like [`Pki::new`], with the CA's common name chosen (two CAs with one name are two
    /// unrelated CAs that look alike).
    pub fn with_ca_name(ca_name: &str) -> Pki {
        let dir = tempfile::Builder::new()
            .prefix("tether-test-pki-")
            .tempdir()
            .unwrap();
        let ca = Ca::init(KeyKind::EcdsaP256, ca_name).unwrap();
        let ca_pem = dir.path().join("ca.pem");
        std::fs::write(&ca_pem, ca.cert_pem()).unwrap();
        let server = ca
            .issue_server(
                &["localhost".into(), "127.0.0.1".into()],
                &IssueOptions::default(),
            )
            .unwrap();
        let client = ca
            .issue_client("device-1", &IssueOptions::default())
            .unwrap();
        let server = Files::write(dir.path(), "server", server);
        let client = Files::write(dir.path(), "client", client);
        Pki {
            dir,
            ca,
            ca_pem,
            server,
            client,
        }
    }

    /// `openssl s_server` on a free port of 127.0.0.1 with this PKI's server certificate:
    /// its port, and the peer (killed on drop).
    pub fn s_server(&self, opts: &testpeers::SServerOpts) -> (u16, testpeers::Peer) {
        let port = testpeers::free_port();
        let peer =
            testpeers::openssl_s_server(port, &self.server.cert, &self.server.key, opts).unwrap();
        (port, peer)
    }

    /// `openssl s_server` (stdio) offering `version` only and requiring a client certificate
    /// from this CA: its port, and the peer (killed on drop).
    pub fn mtls_s_server(&self, version: TlsVersion) -> (u16, testpeers::Peer) {
        self.s_server(&testpeers::SServerOpts {
            version: Some(peer_version(version)),
            client_ca: Some(self.ca_pem.clone()),
            ..testpeers::SServerOpts::default()
        })
    }

    /// `openssl s_client` to 127.0.0.1:`port`, offering `version` only, verifying the server
    /// against this CA as `localhost` (a certificate that does not verify fails the
    /// handshake), and presenting the device certificate when `mtls`.
    pub fn s_client(&self, port: u16, version: TlsVersion, mtls: bool) -> testpeers::Peer {
        testpeers::openssl_s_client(
            port,
            &testpeers::SClientOpts {
                ca_file: Some(self.ca_pem.clone()),
                servername: Some("localhost".into()),
                verify_hostname: Some("localhost".into()),
                version: Some(peer_version(version)),
                cert: mtls.then(|| self.client.cert.clone()),
                key: mtls.then(|| self.client.key.clone()),
                ..testpeers::SClientOpts::default()
            },
        )
        .unwrap()
    }

    /// Another server certificate from this CA, written as `NAME.pem` / `NAME.key`.
    pub fn issue_server(&self, name: &str, sans: &[&str], opts: &IssueOptions) -> Files {
        let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
        let issued = self.ca.issue_server(&sans, opts).unwrap();
        Files::write(self.dir.path(), name, issued)
    }

    pub fn trust(&self) -> Trust {
        Trust::from_pem(self.ca.cert_pem().as_bytes()).unwrap()
    }

    pub fn client_config(&self, versions: (TlsVersion, TlsVersion), mtls: bool) -> ClientConfig {
        let mut b = ClientConfig::builder(self.trust()).versions(versions.0, versions.1);
        if mtls {
            b = b.identity(self.client.identity());
        }
        b.build().unwrap()
    }

    pub fn server_config(&self, versions: (TlsVersion, TlsVersion), mtls: bool) -> ServerConfig {
        let mut b = ServerConfig::builder(self.server.identity()).versions(versions.0, versions.1);
        if mtls {
            b = b.client_auth(ClientAuth::Required(self.trust()));
        }
        b.build().unwrap()
    }
}

/// A listener on 127.0.0.1 with a free port.
pub fn listen() -> (TcpListener, u16) {
    let listener = TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    (listener, port)
}

/// Accepts one connection within `timeout` (panics after it).
pub fn accept_within(listener: &TcpListener, timeout: Duration) -> TcpStream {
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + timeout;
    loop {
        match listener.accept() {
            Ok((tcp, _)) => {
                tcp.set_nonblocking(false).unwrap();
                tcp.set_nodelay(true).unwrap();
                return tcp;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(
                    Instant::now() < deadline,
                    "no connection accepted within {timeout:?}"
                );
                thread::sleep(Duration::from_millis(2));
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
}

/// Accepts one connection (within [`WAIT`]) and wraps it in a tether server socket whose
/// reads and writes are bounded by [`WAIT`] too. The handshake is not run yet.
pub fn accept_tls(listener: &TcpListener, config: &ServerConfig) -> TcpTlsSocket {
    let tcp = accept_within(listener, WAIT);
    let mut sock = TlsSocket::server(tcp, config, StdClock::new()).unwrap();
    sock.set_io_timeout(Some(WAIT));
    sock
}

/// A TCP connection to 127.0.0.1:`port` wrapped in a tether client socket for `name`
/// (handshake not run yet; reads and writes bounded by [`WAIT`]).
pub fn client_socket(port: u16, config: &ClientConfig, name: &str) -> TcpTlsSocket {
    let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_nodelay(true).unwrap();
    let mut sock = TlsSocket::client(tcp, config, name, StdClock::new()).unwrap();
    sock.set_io_timeout(Some(WAIT));
    sock
}

/// Connects through `tether::net::connect_named` and completes the handshake.
pub fn connect(port: u16, config: &ClientConfig, name: &str) -> Result<TcpTlsSocket, Error> {
    let mut sock = tether::net::connect_named(&format!("127.0.0.1:{port}"), name, config)?;
    sock.set_io_timeout(Some(WAIT));
    Ok(sock)
}

/// Reads until a `\n` (included), or fails (error, close, or more than 64 KiB). Reads one
/// byte at a time, so nothing after the line is consumed.
pub fn read_line<T: tether::socket::Transport, C: tether::time::Clock>(
    sock: &mut TlsSocket<T, C>,
) -> Result<String, Error> {
    let line = next_line(sock)?;
    Ok(line.expect("the peer closed instead of sending a line"))
}

/// Like [`read_line`], but `None` when the peer closes cleanly (close_notify) before the line
/// starts.
pub fn next_line<T: tether::socket::Transport, C: tether::time::Clock>(
    sock: &mut TlsSocket<T, C>,
) -> Result<Option<String>, Error> {
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"\n") {
        if sock.read(&mut byte)? == 0 {
            assert!(
                got.is_empty(),
                "the peer closed after {:?}",
                String::from_utf8_lossy(&got)
            );
            return Ok(None);
        }
        got.push(byte[0]);
        assert!(got.len() < 65536, "no newline in 64 KiB");
    }
    Ok(Some(String::from_utf8(got).unwrap()))
}

/// Reads until the peer's close_notify (`Ok(0)`), returning everything before it.
pub fn read_to_close<T: tether::socket::Transport, C: tether::time::Clock>(
    sock: &mut TlsSocket<T, C>,
) -> Result<Vec<u8>, Error> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = sock.read(&mut buf)?;
        if n == 0 {
            return Ok(got);
        }
        got.extend_from_slice(&buf[..n]);
    }
}

/// A thread whose panic is re-raised in the test when joined.
pub struct Joined<T>(Option<thread::JoinHandle<T>>);

impl<T> Joined<T> {
    /// Waits for the thread (its own work is bounded by deadlines) and returns its result.
    pub fn join(mut self) -> T {
        let handle = self.0.take().unwrap();
        match handle.join() {
            Ok(v) => v,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

impl<T> std::fmt::Debug for Joined<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Joined")
    }
}

/// Runs `f` on a named thread.
pub fn spawn<T: Send + 'static>(name: &str, f: impl FnOnce() -> T + Send + 'static) -> Joined<T> {
    Joined(Some(
        thread::Builder::new()
            .name(name.to_string())
            .spawn(f)
            .unwrap(),
    ))
}

/// A tether server on a free port that accepts one connection, runs the handshake and hands
/// the result to `f` on its own thread.
pub fn tether_server<T: Send + 'static>(
    config: ServerConfig,
    f: impl FnOnce(Result<TcpTlsSocket, Error>) -> T + Send + 'static,
) -> (u16, Joined<T>) {
    let (listener, port) = listen();
    let joined = spawn("tether-server", move || {
        let mut sock = accept_tls(&listener, &config);
        let r = sock.handshake().map(|()| sock);
        f(r)
    });
    (port, joined)
}

/// Writes a line to stderr (visible with `--nocapture`), for figures worth seeing.
pub fn note(msg: &str) {
    let _ = writeln!(std::io::stderr(), "{msg}");
}
