//! Device RAM benchmark: what one TLS 1.3 client connection costs a device, for tether's
//! clients, rustls' buffered `ClientConnection` and embedded-tls 0.19, side by side in one run
//! against the same server.
//!
//! ```text
//! cargo bench -p tether --bench device_ram
//! TETHER_DHAT_DIR=/tmp/dhat cargo bench -p tether --bench device_ram   # + dhat-heap profiles
//! ```
//!
//! One connection per measurement: TCP connect, a full TLS 1.3 handshake (ECDSA P-256
//! certificates: a root CA and a server leaf for `localhost`, made by tether-pki; the server
//! presents both), the client sends 1 KiB, the server answers with that 1 KiB followed by
//! 15 KiB of padding in one 16 KiB write, then close_notify; the client checks every byte, reads
//! the close_notify (embedded-tls stops after the 16 KiB), and sends its own.
//!
//! - case (a), `full records`: the server's default record size, so its answer is one full
//!   16 KiB record (16,384 bytes of plaintext) that the client must hold whole to decrypt it;
//! - case (b), `small records`: the server is configured with
//!   `ServerConfig::builder(..).max_record_size(SMALL_RECORD)`, so every record it sends,
//!   handshake included, carries at most that much (1,024 bytes);
//! - then case (b) again with the server's records at 512, 2,048 and 4,096 bytes (no stack
//!   probe: the stack does not depend on them), to show where the comparison turns:
//!   embedded-tls' read buffer must hold the largest record (plus 256), tether's input holds
//!   what arrives.
//!
//! What is counted, per client: the **heap** (dhat's heap profiler: the highest live-bytes
//! figure reached) while its configuration is built, what the configuration then holds, and the
//! connection's peak from its creation to its end; plus the **buffers the caller provides**
//! (record buffers, I/O buffers); plus the **inline size** of the connection object and
//! whatever else of the client's state the caller must place (a static or a stack frame:
//! embedded-tls keeps its whole state there). The application's own 1 KiB message and its
//! 1 KiB read buffer are the same for every client and not counted there; nor are TCP socket
//! buffers.
//!
//! The server is a tether server in a child process (this binary run again with
//! `--device-ram-server`), so none of its allocations reach the measuring allocator; the
//! process is killed by PID when the benchmark ends (also on panic).
//!
//! The **stack** each client needs is measured too, by probing: a child process runs the client
//! on a thread after using up part of its stack on purpose, and a binary search finds how much
//! can be used up with the client still finishing (256-byte resolution; see `mod stack`). It
//! covers everything in the client's frames: the inline state and the application's two 1 KiB
//! buffers (the same for every client). embedded-tls keeps its state and its crypto work on
//! the stack, so its heap figure alone would flatter it.
//!
//! Each client has the CA where a device keeps it (tether: `Trust::with_static_root` over a
//! certificate that outlives the run, as one in a firmware image would; embedded-tls: its
//! verifier borrows the DER; rustls copies it into its root store).
//!
//! Every connection is verified: the clients check the server's chain against the CA and the
//! name `localhost` (embedded-tls with its `rustpki` verifier, which checks P-256 chains,
//! validity times and the host name), and the answer byte for byte. Each measurement runs
//! [`RUNS`] times; the table shows the largest peak and says when runs differed.
//!
//! See docs/PERFORMANCE.md, "Device RAM", for results and what they mean.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use embedded_io_adapters::std::FromStd;
use embedded_tls::blocking::{
    Aes128GcmSha256, Certificate, CryptoProvider, TlsConfig, TlsConnection, TlsContext, TlsError,
    TlsVerifier,
};
use embedded_tls::pki::CertVerifier;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tether::net::StdClock;
use tether::socket::{TlsSocket, TransportMode};
use tether::{
    ClientConfig, Identity, Instant, NamedGroup, Recv, ServerConfig, Session, TlsVersion, Trust,
};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

/// Set in a stack-probe child: no heap profiler (its backtraces would use the stack too).
static PROBING: AtomicBool = AtomicBool::new(false);

/// Plaintext per record in case (b). 1024 bytes: every record, with its 22 bytes of TLS 1.3
/// overhead, fits one TCP segment on any link (IPv4 minimum MTU 576 aside), a device's TCP
/// receive window of one or two segments holds a whole record, and the client's record buffer
/// is 1 KiB plus overhead; the server's 16 KiB answer becomes 16 records.
const SMALL_RECORD: usize = 1024;
/// The client's message.
const REQUEST: usize = 1024;
/// The server's answer: the request echoed, then padding, in one write.
const REPLY: usize = 16 * 1024;
/// The application's read buffer (same for every client, not counted).
const APP_READ: usize = 1024;
/// Bytes tether's clients ask of each TCP read (`ClientConfigBuilder::read_chunk`; the
/// default is 4 KiB), read straight into the session's input buffer.
const READ_CHUNK: usize = 1024;
/// Measurements per client and case.
const RUNS: usize = 3;
const NAME: &str = "localhost";

/// Byte `i` of the client's request.
fn request_byte(i: usize) -> u8 {
    (i.wrapping_mul(7) + 3) as u8
}

/// Byte `i` of the server's answer.
fn reply_byte(i: usize) -> u8 {
    if i < REQUEST {
        request_byte(i)
    } else {
        (i % 251) as u8
    }
}

fn request() -> [u8; REQUEST] {
    std::array::from_fn(request_byte)
}

// ---------------------------------------------------------------------------------------------
// The server (child process)

fn server_main(args: &[String]) {
    let [port, chain, key, record] = args else {
        eprintln!("usage: device_ram --device-ram-server PORT CHAIN_PEM KEY_PEM MAX_RECORD");
        std::process::exit(2);
    };
    let chain = std::fs::read(chain).expect("read the server chain");
    let key = std::fs::read(key).expect("read the server key");
    let record: usize = record.parse().expect("MAX_RECORD is a number");
    let identity = Identity::from_pem(&chain, &key).expect("server identity");
    let mut builder = ServerConfig::builder(identity);
    if record != 0 {
        builder = builder.max_record_size(record);
    }
    let config = builder.build().expect("server config");
    let listener = TcpListener::bind(("127.0.0.1", port.parse::<u16>().expect("PORT")))
        .expect("bind the server port");
    // The parent waits for this line; it also holds our stdin: when it goes away, so do we.
    println!("listening");
    std::io::stdout().flush().expect("stdout");
    std::thread::spawn(|| {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
        std::process::exit(0);
    });
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        if let Err(e) = serve_one(stream, &config) {
            eprintln!("device_ram server: {e}");
        }
    }
}

/// One connection: read the 1 KiB request, answer 16 KiB in one write, close_notify, then wait
/// for the client's close_notify.
fn serve_one(stream: TcpStream, config: &ServerConfig) -> Result<(), tether::Error> {
    stream.set_nodelay(true).ok();
    let mut socket = TlsSocket::server(stream, config, StdClock::new())?;
    socket.set_io_timeout(Some(Duration::from_secs(10)));
    socket.set_transport_mode(TransportMode::Keep);
    let mut req = [0u8; REQUEST];
    let mut got = 0;
    while got < REQUEST {
        match socket.read(&mut req[got..])? {
            0 => return Err(tether::Error::Truncated),
            n => got += n,
        }
    }
    let mut reply: Vec<u8> = (0..REPLY).map(reply_byte).collect();
    reply[..REQUEST].copy_from_slice(&req);
    // One write of 16 KiB: one full record with the default record size.
    socket.write_all(&reply)?;
    socket.close()?;
    let mut sink = [0u8; 256];
    while socket.read(&mut sink).is_ok_and(|n| n > 0) {}
    Ok(())
}

/// The server process, killed by PID when dropped.
struct ServerGuard {
    child: Child,
    port: u16,
}

impl ServerGuard {
    fn start(dir: &Path, max_record: usize) -> ServerGuard {
        let port = testpeers::free_port();
        let exe = std::env::current_exe().expect("current_exe");
        let mut child = Command::new(exe)
            .arg("--device-ram-server")
            .arg(port.to_string())
            .arg(dir.join("chain.pem"))
            .arg(dir.join("server.key"))
            .arg(max_record.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            // Its handshake failures (the wrong-CA check) would interleave with the table.
            .stderr(Stdio::null())
            .spawn()
            .expect("start the server process");
        let stdout = child.stdout.take().expect("piped stdout");
        let guard = ServerGuard { child, port };
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the server's first line");
        assert_eq!(line.trim(), "listening", "the server did not start");
        guard
    }
}

impl Drop for ServerGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// Measuring

/// What one client run cost.
#[derive(Clone, Copy, Debug, Default)]
struct Cost {
    /// Peak live heap while the configuration was built.
    config_peak: usize,
    /// Heap the configuration holds once built.
    config: usize,
    /// Peak live heap of the connection (configuration built before, not included).
    peak: usize,
    /// Heap the connection left behind once dropped (should be 0).
    after: usize,
    /// Buffers the caller provides.
    buffers: usize,
    /// Inline state the caller places (connection object and the like).
    inline: usize,
}

impl Cost {
    /// What one connection needs: configuration + connection peak + buffers + inline state.
    fn total(&self) -> usize {
        self.config + self.peak + self.buffers + self.inline
    }
}

/// Builds a client configuration under its own heap profiler: returns it with its build peak
/// and the heap it holds (with `TETHER_DHAT_DIR`, the profile is `dhat-config-{label}.json`).
fn build_config<T>(
    label: &str,
    f: impl FnOnce() -> Result<T, String>,
) -> Result<(T, usize, usize), String> {
    if PROBING.load(Relaxed) {
        return Ok((f()?, 0, 0));
    }
    let profiler = dhat_profiler(&format!("dhat-config-{label}.json"))?;
    let config = f()?;
    let stats = dhat::HeapStats::get();
    drop(profiler);
    Ok((config, stats.max_bytes, stats.curr_bytes))
}

/// Runs one connection under a fresh heap profiler and fills in its heap figures; `f` returns
/// the buffer and inline figures. Allocations made before (the configuration) are not seen.
fn profiled(label: &str, f: impl FnOnce() -> Result<Cost, String>) -> Result<Cost, String> {
    if PROBING.load(Relaxed) {
        return f();
    }
    let case = CASE.lock().map(|c| *c).unwrap_or("case");
    let profiler = dhat_profiler(&format!("dhat-{case}-{label}.json"))?;
    let mut cost = f()?;
    let stats = dhat::HeapStats::get();
    cost.peak = stats.max_bytes;
    cost.after = stats.curr_bytes;
    drop(profiler);
    Ok(cost)
}

/// A heap profiler that writes `name` into `TETHER_DHAT_DIR`, or writes nothing when that is
/// unset or empty (an empty value would write into the crate directory).
fn dhat_profiler(name: &str) -> Result<dhat::Profiler, String> {
    Ok(
        match std::env::var_os("TETHER_DHAT_DIR").filter(|d| !d.is_empty()) {
            Some(dir) => {
                std::fs::create_dir_all(&dir).map_err(|e| format!("TETHER_DHAT_DIR: {e}"))?;
                dhat::Profiler::builder()
                    .file_name(PathBuf::from(dir).join(name))
                    .build()
            }
            None => dhat::Profiler::builder().testing().build(),
        },
    )
}

/// The case being measured ("a" or "b"), for the names of dhat's profiles.
static CASE: std::sync::Mutex<&str> = std::sync::Mutex::new("a");

/// Checks a chunk of the answer that starts at offset `at`.
fn check_reply(at: usize, chunk: &[u8]) -> Result<(), String> {
    if at + chunk.len() > REPLY {
        return Err(format!("more than {REPLY} bytes of answer"));
    }
    for (i, b) in chunk.iter().enumerate() {
        if *b != reply_byte(at + i) {
            return Err(format!("answer byte {} differs", at + i));
        }
    }
    Ok(())
}

fn connect(port: u16) -> Result<TcpStream, String> {
    let s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    s.set_nodelay(true).ok();
    Ok(s)
}

struct Pki {
    ca_pem: Vec<u8>,
    ca_der: Vec<u8>,
    /// The CA where a device keeps it, in its firmware image: made before any profiler
    /// starts and never freed (embedded-tls' verifier borrows `ca_der` the same way).
    ca_static: &'static CertificateDer<'static>,
}

impl Pki {
    fn new(ca_pem: Vec<u8>, ca_der: Vec<u8>) -> Pki {
        let ca_static = Box::leak(Box::new(CertificateDer::from(ca_der.clone())));
        Pki {
            ca_pem,
            ca_der,
            ca_static,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Clients

/// tether's device client configuration: TLS 1.3 only, X25519 only, no resumption cache, the
/// server's chain not kept once verified, 1 KiB per transport read.
fn tether_config(pki: &Pki) -> Result<ClientConfig, String> {
    let trust = Trust::new()
        .with_static_root(pki.ca_static)
        .map_err(|e| e.to_string())?;
    ClientConfig::builder(trust)
        .versions(TlsVersion::Tls13, TlsVersion::Tls13)
        .kx_groups(&[NamedGroup::X25519])
        .resumption(false)
        .keep_peer_certificates(false)
        .read_chunk(READ_CHUNK)
        .build()
        .map_err(|e| e.to_string())
}

/// tether's sans-IO `Session`, driven over a blocking `TcpStream` with two caller buffers.
mod session_client {
    use super::*;

    /// The name of tether's sans-IO `Session`'s heap profiles.
    const LABEL: &str = "tether-session";

    /// Caller buffer for `poll_transmit` and `send`: one 1 KiB record (+ TLS overhead).
    pub const OUT: usize = REQUEST + 29;

    fn flush(s: &mut Session, tcp: &mut TcpStream, out: &mut [u8]) -> Result<(), String> {
        loop {
            let n = s.poll_transmit(out);
            if n == 0 {
                return Ok(());
            }
            tcp.write_all(&out[..n]).map_err(|e| e.to_string())?;
        }
    }

    fn read_some(
        s: &mut Session,
        tcp: &mut TcpStream,
        t0: &std::time::Instant,
    ) -> Result<bool, String> {
        let size = s.read_size(s.read_chunk());
        let buf = s.input_buffer(size);
        let n = tcp.read(buf).map_err(|e| e.to_string())?;
        let now = Instant::from_micros(t0.elapsed().as_micros() as u64);
        s.commit_input(now, n).map_err(|e| e.to_string())?;
        if n == 0 {
            s.handle_eof();
        }
        Ok(n > 0)
    }

    pub fn run(pki: &Pki, port: u16) -> Result<Cost, String> {
        let mut out = vec![0u8; OUT];
        let mut app = [0u8; APP_READ];
        let req = request();
        let mut tcp = connect(port)?;
        let t0 = std::time::Instant::now();
        let (config, config_peak, config_bytes) = build_config(LABEL, || tether_config(pki))?;
        profiled(LABEL, || {
            let mut s = Session::client(&config, NAME, Instant::ZERO).map_err(|e| e.to_string())?;
            while s.is_handshaking() {
                flush(&mut s, &mut tcp, &mut out)?;
                if !read_some(&mut s, &mut tcp, &t0)? {
                    return Err("EOF during the handshake".into());
                }
            }
            let mut rest = &req[..];
            while !rest.is_empty() {
                let sent = s.send(rest, &mut out).map_err(|e| e.to_string())?;
                tcp.write_all(&out[..sent.written])
                    .map_err(|e| e.to_string())?;
                rest = &rest[sent.consumed..];
            }
            flush(&mut s, &mut tcp, &mut out)?;
            let mut got = 0;
            loop {
                match s.recv(&mut app).map_err(|e| e.to_string())? {
                    Recv::Data(n) => {
                        check_reply(got, &app[..n])?;
                        got += n;
                    }
                    Recv::Closed => break,
                    Recv::Pending => {
                        read_some(&mut s, &mut tcp, &t0)?;
                    }
                }
            }
            if got != REPLY {
                return Err(format!("got {got} bytes, expected {REPLY}"));
            }
            s.close();
            flush(&mut s, &mut tcp, &mut out)?;
            drop(s);
            Ok(Cost {
                config_peak,
                config: config_bytes,
                buffers: OUT,
                inline: std::mem::size_of::<Session>(),
                ..Cost::default()
            })
        })
    }
}

/// tether's blocking `TlsSocket` over a `TcpStream`.
mod socket_client {
    use super::*;

    /// The name of tether's `TlsSocket`'s heap profiles.
    const LABEL: &str = "tether-socket";

    pub fn run(pki: &Pki, port: u16) -> Result<Cost, String> {
        let mut app = [0u8; APP_READ];
        let req = request();
        let tcp = connect(port)?;
        let (config, config_peak, config_bytes) = build_config(LABEL, || tether_config(pki))?;
        profiled(LABEL, || {
            let mut s = TlsSocket::client(tcp, &config, NAME, StdClock::new())
                .map_err(|e| e.to_string())?;
            s.handshake().map_err(|e| e.to_string())?;
            s.write_all(&req).map_err(|e| e.to_string())?;
            let mut got = 0;
            loop {
                match s.read(&mut app).map_err(|e| e.to_string())? {
                    0 => break,
                    n => {
                        check_reply(got, &app[..n])?;
                        got += n;
                    }
                }
            }
            if got != REPLY {
                return Err(format!("got {got} bytes, expected {REPLY}"));
            }
            s.close().map_err(|e| e.to_string())?;
            drop(s);
            Ok(Cost {
                config_peak,
                config: config_bytes,
                buffers: 0,
                inline: std::mem::size_of::<TlsSocket<TcpStream, StdClock>>(),
                ..Cost::default()
            })
        })
    }
}

/// rustls' buffered `ClientConnection` through `rustls::Stream`.
mod rustls_client {
    use super::*;

    /// The name of rustls' buffered client's heap profiles.
    const LABEL: &str = "rustls";

    pub fn run(pki: &Pki, port: u16) -> Result<Cost, String> {
        let mut app = [0u8; APP_READ];
        let req = request();
        let mut tcp = connect(port)?;
        let (config, config_peak, config_bytes) = build_config(LABEL, || {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(&pki.ca_pem) {
                roots
                    .add(cert.map_err(|e| e.to_string())?)
                    .map_err(|e| e.to_string())?;
            }
            let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
            config.resumption = rustls::client::Resumption::disabled();
            Ok(Arc::new(config))
        })?;
        profiled(LABEL, || {
            let name = rustls::pki_types::ServerName::try_from(NAME).map_err(|e| e.to_string())?;
            let mut conn =
                rustls::ClientConnection::new(config, name).map_err(|e| e.to_string())?;
            let mut stream = rustls::Stream::new(&mut conn, &mut tcp);
            stream.write_all(&req).map_err(|e| e.to_string())?;
            stream.flush().map_err(|e| e.to_string())?;
            let mut got = 0;
            loop {
                match stream.read(&mut app).map_err(|e| e.to_string())? {
                    0 => break,
                    n => {
                        check_reply(got, &app[..n])?;
                        got += n;
                    }
                }
            }
            if got != REPLY {
                return Err(format!("got {got} bytes, expected {REPLY}"));
            }
            conn.send_close_notify();
            conn.write_tls(&mut tcp).map_err(|e| e.to_string())?;
            drop(conn);
            Ok(Cost {
                config_peak,
                config: config_bytes,
                buffers: 0,
                inline: std::mem::size_of::<rustls::ClientConnection>(),
                ..Cost::default()
            })
        })
    }
}

/// embedded-tls 0.19's blocking `TlsConnection` over embedded-io, with its `rustpki`
/// certificate verifier (P-256 chains, validity, host name).
mod embedded_tls_client {
    use super::*;

    /// The name of embedded-tls's heap profiles.
    const LABEL: &str = "embedded-tls";

    /// Room for the owned copy of the server's certificate chain the verifier keeps (the two
    /// certificates are about 1 KB together; embedded-tls' own tests use 4096).
    pub const CERT_SIZE: usize = 2048;
    /// embedded-tls' per-record allowance on writes (`TLS_RECORD_OVERHEAD`).
    const OVERHEAD: usize = 128;

    /// The system clock, for validity checks.
    pub struct Clock;
    impl embedded_tls::blocking::TlsClock for Clock {
        fn now() -> Option<u64> {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .ok()
                .map(|d| d.as_secs())
        }
    }

    pub struct Provider<'a> {
        rng: rand_core::OsRng,
        verifier: CertVerifier<'a, Aes128GcmSha256, Clock, CERT_SIZE>,
    }

    impl CryptoProvider for Provider<'_> {
        type CipherSuite = Aes128GcmSha256;
        type Signature = p256_signature::Signature;

        fn rng(&mut self) -> impl embedded_tls::CryptoRngCore {
            &mut self.rng
        }

        fn verifier(&mut self) -> Result<&mut impl TlsVerifier<Aes128GcmSha256>, TlsError> {
            Ok(&mut self.verifier)
        }
    }

    /// The signature type is only used for client certificates (none here).
    mod p256_signature {
        pub type Signature = [u8; 64];
    }

    fn err(e: TlsError) -> String {
        format!("embedded-tls: {e:?}")
    }

    pub fn run(pki: &Pki, port: u16, record: usize) -> Result<Cost, String> {
        // The read buffer holds one whole encrypted record: plaintext + content type + tag +
        // header (16,640 bytes is embedded-tls' advice for any server). The write buffer holds
        // the ClientHello and one 1 KiB record.
        let read_len = record + 256;
        let write_len = REQUEST + OVERHEAD;
        let mut read_buf = vec![0u8; read_len];
        let mut write_buf = vec![0u8; write_len];
        let mut app = [0u8; APP_READ];
        let req = request();
        let tcp = connect(port)?;
        profiled(LABEL, || {
            let config = TlsConfig::new().with_server_name(NAME);
            let mut conn: TlsConnection<'_, FromStd<TcpStream>, Aes128GcmSha256> =
                TlsConnection::new(FromStd::new(tcp), &mut read_buf, &mut write_buf);
            let provider = Provider {
                rng: rand_core::OsRng,
                verifier: CertVerifier::new(Certificate::X509(&pki.ca_der[..])),
            };
            let inline = std::mem::size_of_val(&conn)
                + std::mem::size_of_val(&provider)
                + std::mem::size_of_val(&config);
            conn.open(TlsContext::new(&config, provider)).map_err(err)?;
            embedded_io::Write::write_all(&mut conn, &req).map_err(err)?;
            embedded_io::Write::flush(&mut conn).map_err(err)?;
            let mut got = 0;
            while got < REPLY {
                match embedded_io::Read::read(&mut conn, &mut app).map_err(err)? {
                    0 => break,
                    n => {
                        check_reply(got, &app[..n])?;
                        got += n;
                    }
                }
            }
            if got != REPLY {
                return Err(format!("got {got} bytes, expected {REPLY}"));
            }
            conn.close().map_err(|(_, e)| err(e))?;
            Ok(Cost {
                buffers: read_len + write_len,
                inline,
                ..Cost::default()
            })
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Stack

/// Stack depth of a client: a child process runs the client on a thread with a fixed stack
/// after using up part of it on purpose; a binary search finds the most it can use up and
/// still finish. A stack overflow ends that child (SIGSEGV/SIGABRT), never this process.
/// The client's need is that figure for a client that does nothing, minus the figure for the
/// real client (thread start-up and the probe's own frames cancel out).
mod stack {
    use super::*;

    /// The probe thread's stack.
    const THREAD_STACK: usize = 512 * 1024;
    /// The search's resolution.
    const STEP: usize = 256;

    /// Calls `f` with about `bytes` of this thread's stack used up beneath it.
    #[inline(never)]
    fn beneath<R>(bytes: usize, top: usize, f: impl FnOnce() -> R) -> R {
        let pad = [0u8; 512];
        std::hint::black_box(&pad);
        let here = &pad as *const _ as usize;
        let r = if top.saturating_sub(here) < bytes {
            beneath(bytes, top, f)
        } else {
            f()
        };
        std::hint::black_box(&pad);
        r
    }

    /// Child: `STACK_INDEX|noop PORT RECORD DIR BYTES`; exits 0 when the client succeeded.
    pub fn probe_main(args: &[String]) {
        let [which, port, record, dir, bytes] = args else {
            std::process::exit(2);
        };
        PROBING.store(true, Relaxed);
        let dir = PathBuf::from(dir);
        let pki = Pki::new(
            std::fs::read(dir.join("ca.pem")).expect("ca.pem"),
            std::fs::read(dir.join("ca.der")).expect("ca.der"),
        );
        let port: u16 = port.parse().expect("port");
        let record: usize = record.parse().expect("record");
        let bytes: usize = bytes.parse().expect("bytes");
        let stack = Stack::ALL
            .iter()
            .copied()
            .find(|s| s.index().to_string() == *which);
        let ok = std::thread::Builder::new()
            .stack_size(THREAD_STACK)
            .spawn(move || {
                let top_marker = 0u8;
                let top = &top_marker as *const _ as usize;
                beneath(bytes, top, || match stack {
                    Some(s) => s.run(&pki, port, record).is_ok(),
                    None => true,
                })
            })
            .expect("spawn the probe thread")
            .join()
            .unwrap_or(false);
        std::process::exit(if ok { 0 } else { 1 });
    }

    fn fits(which: &str, port: u16, record: usize, dir: &Path, bytes: usize) -> bool {
        let exe = std::env::current_exe().expect("current_exe");
        Command::new(exe)
            .arg("--device-ram-stack-probe")
            .arg(which)
            .arg(port.to_string())
            .arg(record.to_string())
            .arg(dir)
            .arg(bytes.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// The most stack that can be used up beneath `which` with the client still finishing.
    fn headroom(which: &str, port: u16, record: usize, dir: &Path) -> Option<usize> {
        if !fits(which, port, record, dir, 0) {
            return None;
        }
        let (mut lo, mut hi) = (0, THREAD_STACK);
        while hi - lo > STEP {
            let mid = (lo + hi) / 2;
            if fits(which, port, record, dir, mid) {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        Some(lo)
    }

    /// Stack bytes each client needs (rounded to [`STEP`]), by stack index.
    pub fn measure(port: u16, record: usize, dir: &Path) -> Vec<Option<usize>> {
        let Some(base) = headroom("noop", port, record, dir) else {
            return vec![None; Stack::ALL.len()];
        };
        Stack::ALL
            .iter()
            .map(|s| {
                headroom(&s.index().to_string(), port, record, dir).map(|h| base.saturating_sub(h))
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Main

#[derive(Clone, Copy)]
enum Stack {
    TetherSession,
    TetherSocket,
    Rustls,
    EmbeddedTls,
}

impl Stack {
    const ALL: [Stack; 4] = [
        Stack::TetherSession,
        Stack::TetherSocket,
        Stack::Rustls,
        Stack::EmbeddedTls,
    ];

    fn index(self) -> usize {
        self as usize
    }

    fn name(self) -> &'static str {
        match self {
            Stack::TetherSession => "tether Session (sans-IO)",
            Stack::TetherSocket => "tether TlsSocket",
            Stack::Rustls => "rustls ClientConnection",
            Stack::EmbeddedTls => "embedded-tls 0.19",
        }
    }

    fn run(self, pki: &Pki, port: u16, record: usize) -> Result<Cost, String> {
        match self {
            Stack::TetherSession => session_client::run(pki, port),
            Stack::TetherSocket => socket_client::run(pki, port),
            Stack::Rustls => rustls_client::run(pki, port),
            Stack::EmbeddedTls => embedded_tls_client::run(pki, port, record),
        }
    }
}

fn make_pki(dir: &Path) -> Pki {
    let ca =
        tether_pki::Ca::init(tether_pki::KeyKind::EcdsaP256, "device_ram bench CA").expect("CA");
    let leaf = ca
        .issue_server(&[NAME.to_string()], &tether_pki::IssueOptions::default())
        .expect("server certificate");
    let chain = format!("{}{}", leaf.cert_pem, ca.cert_pem());
    std::fs::write(dir.join("chain.pem"), chain).expect("write chain.pem");
    std::fs::write(dir.join("server.key"), &leaf.key_pem).expect("write server.key");
    std::fs::write(dir.join("ca.pem"), ca.cert_pem()).expect("write ca.pem");
    std::fs::write(dir.join("ca.der"), ca.cert_der()).expect("write ca.der");
    Pki::new(ca.cert_pem().as_bytes().to_vec(), ca.cert_der().to_vec())
}

fn kib(n: usize) -> String {
    format!("{:.1}", n as f64 / 1024.0)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--device-ram-server") {
        server_main(&args[i + 1..]);
        return;
    }
    if let Some(i) = args.iter().position(|a| a == "--device-ram-stack-probe") {
        stack::probe_main(&args[i + 1..]);
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let pki = make_pki(dir.path());
    println!(
        "device RAM per client connection: TLS 1.3 handshake (P-256 root -> leaf), 1 KiB request, 16 KiB answer"
    );
    println!(
        "bytes; total = config (heap it holds) + conn. peak (heap) + buffers (the caller's) + inline (state the caller places)"
    );
    println!(
        "config build = peak heap while the configuration was built; {RUNS} runs each, the largest conn. peak shown"
    );
    println!(
        "stack = deepest stack of the client's code (its inline state and the application's 2 KiB of buffers included); +stack = total - inline + stack"
    );
    // (tag, label, the server's max_record_size (0: default), its largest record, whether the
    // stack is probed). After (a) and (b), (b) again with other small record sizes (no stack
    // probe: the stack does not depend on them), for where the comparison turns.
    let cases = [
        ("a", "(a) full 16 KiB records", 0usize, 16 * 1024usize, true),
        ("b", "(b) small records", SMALL_RECORD, SMALL_RECORD, true),
        ("b512", "(b) at 512-byte records", 512, 512, false),
        ("b2048", "(b) at 2 KiB records", 2048, 2048, false),
        ("b4096", "(b) at 4 KiB records", 4096, 4096, false),
    ];
    for (tag, label, max_record, record, probe_stack) in cases {
        if let Ok(mut c) = CASE.lock() {
            *c = tag;
        }
        let server = ServerGuard::start(dir.path(), max_record);
        println!();
        let size = if max_record == 0 {
            "default (16384)".to_string()
        } else {
            max_record.to_string()
        };
        println!("{label}: server max_record_size {size}");
        // Verified against verified: every client must refuse this server when it trusts
        // another CA.
        let other_dir = tempfile::tempdir().expect("temp dir");
        let other = make_pki(other_dir.path());
        for stack in Stack::ALL {
            if let Ok(cost) = stack.run(&other, server.port, record) {
                panic!(
                    "{} accepted a server whose CA it does not trust: {cost:?}",
                    stack.name()
                );
            }
        }
        println!("  every client refuses the server when it trusts another CA (checked)");
        let stacks = if probe_stack {
            stack::measure(server.port, record, dir.path())
        } else {
            vec![None; Stack::ALL.len()]
        };
        println!(
            "  {:<26} {:>12} {:>7} {:>10} {:>8} {:>7} {:>7} {:>6} {:>7} {:>12}",
            "client",
            "config build",
            "config",
            "conn. peak",
            "buffers",
            "inline",
            "total",
            "KiB",
            "stack",
            "+stack KiB"
        );
        for (stack, stack_bytes) in Stack::ALL.into_iter().zip(stacks) {
            let mut runs = Vec::new();
            for _ in 0..RUNS {
                match stack.run(&pki, server.port, record) {
                    Ok(c) => runs.push(c),
                    Err(e) => {
                        println!("  {:<26} FAILED: {e}", stack.name());
                        break;
                    }
                }
            }
            let Some(worst) = runs.iter().copied().max_by_key(|c| c.peak) else {
                continue;
            };
            let least = runs.iter().map(|c| c.peak).min().unwrap_or(worst.peak);
            let spread = if least == worst.peak {
                String::new()
            } else {
                format!("  (conn. peaks {least}..{})", worst.peak)
            };
            if worst.after != 0 {
                println!(
                    "  {}: {} bytes still live after the connection",
                    stack.name(),
                    worst.after
                );
            }
            let (stack_col, with_stack) = match stack_bytes {
                // The inline state lives in the stack frames the stack figure covers.
                Some(b) => (b.to_string(), kib(worst.total() - worst.inline + b)),
                None if probe_stack => ("?".to_string(), "?".to_string()),
                None => ("-".to_string(), "-".to_string()),
            };
            println!(
                "  {:<26} {:>12} {:>7} {:>10} {:>8} {:>7} {:>7} {:>6} {:>7} {:>12}{spread}",
                stack.name(),
                worst.config_peak,
                worst.config,
                worst.peak,
                worst.buffers,
                worst.inline,
                worst.total(),
                kib(worst.total()),
                stack_col,
                with_stack,
            );
        }
    }
}
