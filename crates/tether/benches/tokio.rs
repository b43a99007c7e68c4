//! tokio benchmark: `tether::tokio::TlsStream` against tokio-rustls, side by side in one run,
//! over real TCP on 127.0.0.1, with the same certificates (tests/data, P-256), the same
//! provider (ring), the same verification (CA roots + host name) and the same suite
//! (TLS13_AES_128_GCM_SHA256, checked).
//!
//! Measures full TLS 1.3 handshakes/s (a connection each: TCP connect, handshake, the client's
//! close_notify and FIN, the server's; no session tickets on either side) and bulk throughput
//! (one connection, the client writes in 16 KiB writes, the server reads until close_notify).
//! Client and server run on one single-threaded runtime, so a figure is what both ends and
//! the kernel cost on one core.
//!
//! ```text
//! cargo bench -p tether --bench tokio             # full run (41 rounds, about 30 s)
//! cargo bench -p tether --bench tokio -- --quick  # smoke run (a few seconds once built)
//! TETHER_BENCH_ROUNDS=31 cargo bench -p tether --bench tokio  # more rounds
//! TETHER_BENCH_ONLY=tether <bench binary>         # one stack (or tokio-rustls), for perf
//! ```
//!
//! Each round runs one batch per stack, the order alternating between rounds; a figure is the
//! median of the rounds, the ratio the median of the per-round tether/tokio-rustls ratios
//! (above 1: tether faster). Batches are timed on the thread's CPU clock (loopback TCP on a
//! shared machine makes wall-clock rates swing by a third between rounds) and by the wall
//! clock, both printed. See docs/PERFORMANCE.md.

mod common;

use std::sync::Arc;
use std::time::Instant;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tether::{Identity, Trust};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use common::{CA, NAME, SERVER_CERT, SERVER_KEY, median, min_max, quantile, thread_cpu_ns};

/// Plaintext per write in the bulk case.
const WRITE: usize = 16 * 1024;

struct Params {
    rounds: usize,
    handshakes: usize,
    bulk_bytes: usize,
}

impl Params {
    fn from_env() -> Params {
        let mut p = if common::quick() {
            Params {
                rounds: 3,
                handshakes: 50,
                bulk_bytes: 16 << 20,
            }
        } else {
            Params {
                rounds: 41,
                handshakes: 100,
                bulk_bytes: 64 << 20,
            }
        };
        p.rounds = common::rounds(p.rounds);
        p
    }
}

/// One stack: how a client connects and how the server accepts, over TCP.
trait Stack {
    type Client: AsyncRead + AsyncWrite + Unpin;
    type Server: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    const NAME: &'static str;
    async fn connect(&self, tcp: TcpStream) -> Self::Client;
    fn accept(&self, tcp: TcpStream) -> impl Future<Output = Self::Server> + Send + 'static;
    /// The negotiated suite, to check that both stacks measure the same thing.
    fn suite(client: &Self::Client) -> Option<rustls::CipherSuite>;
}

struct Tether {
    client: tether::ClientConfig,
    server: tether::ServerConfig,
}

impl Tether {
    fn new() -> Tether {
        let trust = Trust::from_pem(CA).expect("ca.pem");
        let identity = Identity::from_pem(SERVER_CERT, SERVER_KEY).expect("server identity");
        Tether {
            client: tether::ClientConfig::builder(trust)
                .versions(tether::TlsVersion::Tls13, tether::TlsVersion::Tls13)
                .resumption(false)
                .build()
                .expect("tether client config"),
            server: tether::ServerConfig::builder(identity)
                .versions(tether::TlsVersion::Tls13, tether::TlsVersion::Tls13)
                .tls13_tickets(0)
                .build()
                .expect("tether server config"),
        }
    }
}

impl Stack for Tether {
    type Client = tether::tokio::TlsStream<TcpStream>;
    type Server = tether::tokio::TlsStream<TcpStream>;
    const NAME: &'static str = "tether";

    async fn connect(&self, tcp: TcpStream) -> Self::Client {
        tether::tokio::TlsStream::connect(tcp, &self.client, NAME)
            .await
            .expect("tether connect")
    }

    fn accept(&self, tcp: TcpStream) -> impl Future<Output = Self::Server> + Send + 'static {
        let config = self.server.clone();
        async move {
            tether::tokio::TlsStream::accept(tcp, &config)
                .await
                .expect("tether accept")
        }
    }

    fn suite(client: &Self::Client) -> Option<rustls::CipherSuite> {
        client.session().cipher_suite()
    }
}

struct TokioRustls {
    connector: tokio_rustls::TlsConnector,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl TokioRustls {
    fn new() -> TokioRustls {
        // Both stacks negotiate the same suite (asserted below).
        let (provider, roots) = (common::rustls_provider(), common::rustls_roots());
        let mut client = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        client.resumption = rustls::client::Resumption::disabled();
        let chain = CertificateDer::pem_slice_iter(SERVER_CERT)
            .collect::<Result<Vec<_>, _>>()
            .expect("server.pem");
        let key = PrivateKeyDer::from_pem_slice(SERVER_KEY).expect("server.key");
        let mut server = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("server config");
        server.send_tls13_tickets = 0;
        TokioRustls {
            connector: tokio_rustls::TlsConnector::from(Arc::new(client)),
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(server)),
        }
    }
}

impl Stack for TokioRustls {
    type Client = tokio_rustls::client::TlsStream<TcpStream>;
    type Server = tokio_rustls::server::TlsStream<TcpStream>;
    const NAME: &'static str = "tokio-rustls";

    async fn connect(&self, tcp: TcpStream) -> Self::Client {
        let name = ServerName::try_from(NAME).expect("server name");
        self.connector
            .connect(name, tcp)
            .await
            .expect("tokio-rustls connect")
    }

    fn accept(&self, tcp: TcpStream) -> impl Future<Output = Self::Server> + Send + 'static {
        let accept = self.acceptor.accept(tcp);
        async move { accept.await.expect("tokio-rustls accept") }
    }

    fn suite(client: &Self::Client) -> Option<rustls::CipherSuite> {
        client
            .get_ref()
            .1
            .negotiated_cipher_suite()
            .map(|s| s.suite())
    }
}

async fn tcp_pair(listener: &TcpListener) -> (TcpStream, TcpStream) {
    let addr = listener.local_addr().expect("listener address");
    let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
    let client = client.expect("TCP connect");
    let (server, _) = accepted.expect("TCP accept");
    client.set_nodelay(true).expect("nodelay");
    server.set_nodelay(true).expect("nodelay");
    (client, server)
}

/// The server's end of a connection: read until close_notify, answer with its own.
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(mut s: S) -> u64 {
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = s.read(&mut buf).await.expect("server read");
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    s.shutdown().await.expect("server shutdown");
    total
}

/// Wall-clock and on-CPU time of this thread (both ends run on it) since it was made.
struct Timer {
    wall: Instant,
    cpu_ns: u64,
}

impl Timer {
    fn start() -> Timer {
        Timer {
            wall: Instant::now(),
            cpu_ns: thread_cpu_ns(),
        }
    }

    /// `work` per second of wall time, and per second on the CPU.
    fn rates(&self, work: f64) -> Rates {
        Rates {
            wall: work / self.wall.elapsed().as_secs_f64(),
            cpu: work / ((thread_cpu_ns() - self.cpu_ns) as f64 / 1e9),
        }
    }
}

#[derive(Clone, Copy)]
struct Rates {
    wall: f64,
    cpu: f64,
}

/// `n` full handshakes, one connection after another: handshakes per second.
async fn handshakes<S: Stack>(stack: &S, listener: &TcpListener, n: usize) -> Rates {
    let timer = Timer::start();
    for _ in 0..n {
        let (c, s) = tcp_pair(listener).await;
        let server = tokio::spawn({
            let accept = stack.accept(s);
            async move { serve(accept.await).await }
        });
        let mut client = stack.connect(c).await;
        client.shutdown().await.expect("client shutdown");
        let mut rest = [0u8; 16];
        assert_eq!(client.read(&mut rest).await.expect("close_notify"), 0);
        assert_eq!(server.await.expect("server task"), 0);
    }
    timer.rates(n as f64)
}

/// `total` bytes from client to server in 16 KiB writes: MB/s (handshake not timed).
async fn bulk<S: Stack>(stack: &S, listener: &TcpListener, total: usize) -> Rates {
    let (c, s) = tcp_pair(listener).await;
    let server = tokio::spawn({
        let accept = stack.accept(s);
        async move { serve(accept.await).await }
    });
    let mut client = stack.connect(c).await;
    assert_eq!(
        S::suite(&client),
        Some(rustls::CipherSuite::TLS13_AES_128_GCM_SHA256),
        "{}",
        S::NAME
    );
    let data = vec![0x5au8; WRITE];
    let timer = Timer::start();
    let mut sent = 0;
    while sent < total {
        client.write_all(&data).await.expect("client write");
        sent += WRITE;
    }
    client.shutdown().await.expect("client shutdown");
    let received = server.await.expect("server task");
    let rates = timer.rates(sent as f64 / 1e6);
    assert_eq!(received as usize, sent, "{}", S::NAME);
    rates
}

fn main() {
    let p = Params::from_env();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let (t, r) = (Tether::new(), TokioRustls::new());
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        // One connection of each first: caches, the allocator, the page cache.
        handshakes(&t, &listener, 5).await;
        handshakes(&r, &listener, 5).await;
        let (mut hs, mut mb) = ([Vec::new(), Vec::new()], [Vec::new(), Vec::new()]);
        // One stack only (for `perf record` or `strace -c`): TETHER_BENCH_ONLY=tether or
        // tokio-rustls; no table then.
        let only = std::env::var("TETHER_BENCH_ONLY").ok();
        if let Some(only) = only {
            for _ in 0..p.rounds {
                let r = if only == Tether::NAME {
                    (handshakes(&t, &listener, p.handshakes).await, bulk(&t, &listener, p.bulk_bytes).await)
                } else {
                    (handshakes(&r, &listener, p.handshakes).await, bulk(&r, &listener, p.bulk_bytes).await)
                };
                println!("{only}: {:.0} handshakes/s, {:.0} MB/s (CPU)", r.0.cpu, r.1.cpu);
            }
            return;
        }
        for round in 0..p.rounds {
            for i in [round % 2, 1 - round % 2] {
                if i == 0 {
                    hs[0].push(handshakes(&t, &listener, p.handshakes).await);
                    mb[0].push(bulk(&t, &listener, p.bulk_bytes).await);
                } else {
                    hs[1].push(handshakes(&r, &listener, p.handshakes).await);
                    mb[1].push(bulk(&r, &listener, p.bulk_bytes).await);
                }
            }
        }
        println!(
            "tokio bench: tether::tokio::TlsStream vs tokio-rustls 0.26, loopback TCP, one thread for both ends"
        );
        println!(
            "rounds: {}, per round and stack: {} full handshakes, {} MiB in {} KiB writes",
            p.rounds,
            p.handshakes,
            p.bulk_bytes >> 20,
            WRITE >> 10
        );
        println!("both negotiate: TLS 1.3, TLS13_AES_128_GCM_SHA256, X25519 (ring)");
        println!();
        let table = |title: &str, pick: fn(&Rates) -> f64| {
            println!("{title}");
            println!(
                "| median of rounds              |   tether | tokio-rustls |  ratio | ratio p25..75 | ratio min..max |"
            );
            println!(
                "|-------------------------------|----------|--------------|--------|---------------|----------------|"
            );
            for (what, v) in [("full handshakes (/s)", &hs), ("bulk, client to server (MB/s)", &mb)] {
                let (a, b): (Vec<f64>, Vec<f64>) =
                    (v[0].iter().map(pick).collect(), v[1].iter().map(pick).collect());
                let ratios: Vec<f64> = a.iter().zip(&b).map(|(a, b)| a / b).collect();
                let (lo, hi) = min_max(&ratios);
                println!(
                    "| {what:<29} | {:>8.0} | {:>12.0} | {:>6.3} | {:>5.3}..{:<5.3}  | {lo:>6.3}..{hi:<6.3} |",
                    median(&a),
                    median(&b),
                    median(&ratios),
                    quantile(&ratios, 0.25),
                    quantile(&ratios, 0.75),
                );
            }
            println!();
        };
        table("per second on the CPU (both ends, user + system; the figures compared):", |r| r.cpu);
        table("per second of wall-clock time:", |r| r.wall);
    });
}
