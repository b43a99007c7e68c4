//! Core benchmark: tether's sans-IO `Session` against rustls' own buffered API
//! (`ClientConnection` / `ServerConnection`), side by side in one run, over the same in-memory
//! pipe, with the same certificates (tests/data, P-256), the same provider (ring) and the same
//! verification (CA roots + host name).
//!
//! Measures full TLS 1.3 handshakes/s, resumed (TLS 1.3 ticket) handshakes/s, bulk
//! encrypt+decrypt throughput with 16 KiB writes, and the heap held by an established, idle
//! client and server connection (a counting global allocator).
//!
//! ```text
//! cargo bench -p tether --bench core             # full run (61 rounds, under a minute)
//! cargo bench -p tether --bench core -- --quick  # smoke run (under a second once built)
//! TETHER_BENCH_QUICK=1 cargo bench -p tether --bench core
//! TETHER_BENCH_ROUNDS=101 cargo bench -p tether --bench core  # more rounds
//! TETHER_BENCH_ONLY=tether-bulk <bench binary>   # one stack, one case, 5 s (for perf record);
//!                                                # {tether,rustls}-{full,resumed,bulk}
//! ```
//!
//! Timed benchmarks run in rounds; each round runs one batch per stack, the order alternating
//! between rounds (tether first, then rustls first, ...) so that drift and order effects
//! cancel. Each figure is the median of the rounds; the spread (min..max) is printed too, and
//! the ratio is the median of the per-round tether/rustls ratios. Batches are timed by the wall
//! clock and by the thread's CPU time.
//!
//! See docs/PERFORMANCE.md for results and what they mean.

mod common;

use std::alloc::System;
use std::hint::black_box;
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Instant as StdInstant;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConnection, ConnectionCommon, HandshakeKind, ServerConnection, SideData};
use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};
use tether::{Identity, Instant, Recv, Session, Trust};

use common::{CA, NAME, SERVER_CERT, SERVER_KEY, median, min_max, quantile};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Live heap bytes. (stats_alloc already adds a reallocation's growth to `bytes_allocated`
/// and its shrinkage to `bytes_deallocated`; `bytes_reallocated` is the same sum again.)
fn live_bytes() -> i64 {
    let s = GLOBAL.stats();
    s.bytes_allocated as i64 - s.bytes_deallocated as i64
}

/// Allocator calls so far (allocations + reallocations).
fn alloc_calls() -> u64 {
    let s = GLOBAL.stats();
    (s.allocations + s.reallocations) as u64
}

const WRITE: usize = 16 * 1024;

// ---------------------------------------------------------------------------------------------
// Parameters

struct Params {
    quick: bool,
    rounds: usize,
    full: usize,
    resumed: usize,
    bulk_bytes: usize,
}

impl Params {
    fn from_env() -> Params {
        let quick = common::quick();
        let mut p = if quick {
            Params {
                quick,
                rounds: 3,
                full: 30,
                resumed: 60,
                bulk_bytes: 8 << 20,
            }
        } else {
            Params {
                quick,
                rounds: 61,
                full: 500,
                resumed: 1200,
                bulk_bytes: 64 << 20,
            }
        };
        p.rounds = common::rounds(p.rounds);
        p
    }
}

// ---------------------------------------------------------------------------------------------
// Configs

struct TetherSide {
    /// Resumption off: every handshake is a full one.
    client_full: tether::ClientConfig,
    /// Resumption on (tether's default client cache: 32 servers, 4 TLS 1.3 tickets each).
    client_resume: tether::ClientConfig,
    /// tether's default server: its own ChaCha20-Poly1305 ticketer (stateless TLS 1.3
    /// tickets, 2 per handshake) and a 1024-entry session-id cache for TLS 1.2.
    server: tether::ServerConfig,
}

struct RustlsSide {
    client_full: Arc<rustls::ClientConfig>,
    client_resume: Arc<rustls::ClientConfig>,
    server: Arc<rustls::ServerConfig>,
}

fn tether_side() -> TetherSide {
    let trust = || Trust::from_pem(CA).expect("ca.pem");
    let identity = Identity::from_pem(SERVER_CERT, SERVER_KEY).expect("server identity");
    TetherSide {
        client_full: tether::ClientConfig::builder(trust())
            .resumption(false)
            .build()
            .expect("tether client config"),
        client_resume: tether::ClientConfig::builder(trust())
            .build()
            .expect("tether client config"),
        server: tether::ServerConfig::builder(identity)
            .build()
            .expect("tether server config"),
    }
}

fn rustls_side() -> RustlsSide {
    // Both stacks negotiate the same suite (asserted below).
    let (provider, roots) = (common::rustls_provider(), common::rustls_roots());
    let client = |resume: bool| {
        let mut c = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots.clone())
            .with_no_client_auth();
        if !resume {
            c.resumption = rustls::client::Resumption::disabled();
        }
        // Otherwise rustls' default: an in-memory cache of 256 servers, 8 TLS 1.3 tickets each.
        Arc::new(c)
    };
    let chain = CertificateDer::pem_slice_iter(SERVER_CERT)
        .collect::<Result<Vec<_>, _>>()
        .expect("server.pem");
    let key = PrivateKeyDer::from_pem_slice(SERVER_KEY).expect("server.key");
    let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server config");
    // rustls' default is no ticketer (stateful TLS 1.3 resumption through its 256-entry
    // session cache); give it its ring ticketer (ChaCha20-Poly1305, keys rotated every 6 h)
    // so that both stacks resume through stateless TLS 1.3 tickets, 2 per handshake.
    server.ticketer = rustls::crypto::ring::Ticketer::new().expect("ticketer");
    RustlsSide {
        client_full: client(false),
        client_resume: client(true),
        server: Arc::new(server),
    }
}

// ---------------------------------------------------------------------------------------------
// The in-memory pipe and drivers.
//
// tether: `poll_transmit` / `send` write into a caller-owned buffer, which is handed to the
// peer's `handle_input`. rustls: `write_tls` appends to a Vec, which the peer reads with
// `read_tls` + `process_new_packets`. Either way the ciphertext crosses one user-space buffer
// that is reused (never freed) between calls.

const NOW: Instant = Instant::ZERO;

struct TetherPipe {
    buf: Vec<u8>,
}

impl TetherPipe {
    fn new() -> TetherPipe {
        TetherPipe {
            buf: vec![0u8; 64 * 1024],
        }
    }

    /// Moves bytes both ways until nothing moves (handshake, tickets, queued records).
    fn settle(&mut self, c: &mut Session, s: &mut Session) {
        loop {
            let mut moved = false;
            loop {
                let n = c.poll_transmit(&mut self.buf);
                if n == 0 {
                    break;
                }
                moved = true;
                s.handle_input(NOW, &self.buf[..n]).expect("tether server");
            }
            loop {
                let n = s.poll_transmit(&mut self.buf);
                if n == 0 {
                    break;
                }
                moved = true;
                c.handle_input(NOW, &self.buf[..n]).expect("tether client");
            }
            if !moved {
                break;
            }
        }
    }

    /// Sends `data` from `a` to `b`, which reads it all into `rbuf`; returns the bytes read.
    fn transfer(
        &mut self,
        a: &mut Session,
        b: &mut Session,
        data: &[u8],
        rbuf: &mut [u8],
    ) -> usize {
        let mut got = 0;
        let mut rest = data;
        while !rest.is_empty() {
            let sent = a.send(rest, &mut self.buf).expect("tether send");
            rest = &rest[sent.consumed..];
            b.handle_input(NOW, &self.buf[..sent.written])
                .expect("tether input");
            while let Recv::Data(n) = b.recv(rbuf).expect("tether recv") {
                got += n;
            }
        }
        got
    }
}

struct RustlsPipe {
    buf: Vec<u8>,
}

impl RustlsPipe {
    fn new() -> RustlsPipe {
        RustlsPipe {
            buf: Vec::with_capacity(64 * 1024),
        }
    }

    /// Writes everything `from` has queued into the pipe; true if anything was.
    fn fill<D: SideData>(&mut self, from: &mut ConnectionCommon<D>) -> bool {
        let mut any = false;
        while from.wants_write() {
            any |= from.write_tls(&mut self.buf).expect("write_tls") > 0;
        }
        any
    }

    /// Feeds the pipe's bytes to `to`, reading any plaintext into `rbuf`; returns the bytes
    /// read.
    fn drain<D: SideData>(&mut self, to: &mut ConnectionCommon<D>, rbuf: &mut [u8]) -> usize {
        let mut got = 0;
        let mut rd = &self.buf[..];
        while !rd.is_empty() {
            to.read_tls(&mut rd).expect("read_tls");
            let state = to.process_new_packets().expect("rustls");
            if state.plaintext_bytes_to_read() > 0 {
                loop {
                    match to.reader().read(rbuf) {
                        Ok(0) => break,
                        Ok(n) => got += n,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(e) => panic!("rustls read: {e}"),
                    }
                }
            }
        }
        self.buf.clear();
        got
    }

    fn settle(&mut self, c: &mut ClientConnection, s: &mut ServerConnection) {
        let mut scratch = [0u8; 1024];
        loop {
            let mut moved = false;
            if self.fill(c) {
                moved = true;
                self.drain(s, &mut scratch);
            }
            if self.fill(s) {
                moved = true;
                self.drain(c, &mut scratch);
            }
            if !moved {
                break;
            }
        }
    }

    fn transfer<A: SideData, B: SideData>(
        &mut self,
        a: &mut ConnectionCommon<A>,
        b: &mut ConnectionCommon<B>,
        data: &[u8],
        rbuf: &mut [u8],
    ) -> usize {
        let mut got = 0;
        for chunk in data.chunks(WRITE) {
            a.writer().write_all(chunk).expect("rustls write");
            self.fill(a);
            got += self.drain(b, rbuf);
        }
        got
    }
}

// ---------------------------------------------------------------------------------------------
// Timing: wall-clock time, and this thread's on-CPU time (clock_gettime(CLOCK_THREAD_CPUTIME_ID),
// so time spent descheduled while other processes ran is left out; Unix only).

#[cfg(unix)]
fn cpu_ns() -> Option<u64> {
    Some(common::thread_cpu_ns())
}

#[cfg(not(unix))]
fn cpu_ns() -> Option<u64> {
    None
}

thread_local! {
    static LAST_CPU: std::cell::Cell<Option<f64>> = const { std::cell::Cell::new(None) };
}

struct Timer {
    wall: StdInstant,
    cpu: Option<u64>,
}

impl Timer {
    fn start() -> Timer {
        let cpu = cpu_ns();
        Timer {
            wall: StdInstant::now(),
            cpu,
        }
    }

    /// Wall seconds since `start`; the on-CPU seconds go to [`last_cpu`].
    fn stop(self) -> f64 {
        let wall = self.wall.elapsed().as_secs_f64();
        let cpu = match (self.cpu, cpu_ns()) {
            (Some(a), Some(b)) if b > a => Some((b - a) as f64 / 1e9),
            _ => None,
        };
        LAST_CPU.set(cpu);
        wall
    }
}

/// The on-CPU seconds of the last timed batch.
fn last_cpu() -> Option<f64> {
    LAST_CPU.get()
}

// ---------------------------------------------------------------------------------------------
// Benchmarks: each returns wall seconds (and leaves on-CPU seconds in `last_cpu`).

fn tether_handshakes(side: &TetherSide, pipe: &mut TetherPipe, n: usize, resumed: bool) -> f64 {
    let cc = if resumed {
        &side.client_resume
    } else {
        &side.client_full
    };
    let start = Timer::start();
    for _ in 0..n {
        let mut c = Session::client(cc, NAME, NOW).expect("tether client");
        let mut s = Session::server(&side.server, NOW).expect("tether server");
        pipe.settle(&mut c, &mut s);
        assert!(!c.is_handshaking() && !s.is_handshaking());
        if c.is_resumed() != resumed || s.is_resumed() != resumed {
            panic!(
                "tether: expected resumed={resumed}, got client={}, server={}",
                c.is_resumed(),
                s.is_resumed()
            );
        }
        black_box((c, s));
    }
    start.stop()
}

fn rustls_handshakes(side: &RustlsSide, pipe: &mut RustlsPipe, n: usize, resumed: bool) -> f64 {
    let cc = if resumed {
        &side.client_resume
    } else {
        &side.client_full
    };
    let want = if resumed {
        HandshakeKind::Resumed
    } else {
        HandshakeKind::Full
    };
    let start = Timer::start();
    for _ in 0..n {
        let name = ServerName::try_from(NAME).expect("name");
        let mut c = ClientConnection::new(cc.clone(), name).expect("rustls client");
        let mut s = ServerConnection::new(side.server.clone()).expect("rustls server");
        pipe.settle(&mut c, &mut s);
        assert!(!c.is_handshaking() && !s.is_handshaking());
        if c.handshake_kind() != Some(want) || s.handshake_kind() != Some(want) {
            panic!(
                "rustls: expected {want:?}, got client={:?}, server={:?}",
                c.handshake_kind(),
                s.handshake_kind()
            );
        }
        black_box((c, s));
    }
    start.stop()
}

fn tether_connected(side: &TetherSide, pipe: &mut TetherPipe) -> (Session, Session) {
    let mut c = Session::client(&side.client_full, NAME, NOW).expect("tether client");
    let mut s = Session::server(&side.server, NOW).expect("tether server");
    pipe.settle(&mut c, &mut s);
    (c, s)
}

fn rustls_connected(
    side: &RustlsSide,
    pipe: &mut RustlsPipe,
) -> (ClientConnection, ServerConnection) {
    let name = ServerName::try_from(NAME).expect("name");
    let mut c = ClientConnection::new(side.client_full.clone(), name).expect("rustls client");
    let mut s = ServerConnection::new(side.server.clone()).expect("rustls server");
    pipe.settle(&mut c, &mut s);
    (c, s)
}

fn tether_bulk(side: &TetherSide, pipe: &mut TetherPipe, data: &[u8], total: usize) -> f64 {
    let (mut c, mut s) = tether_connected(side, pipe);
    let mut rbuf = vec![0u8; WRITE];
    let start = Timer::start();
    let mut got = 0;
    let mut left = total;
    while left > 0 {
        let n = left.min(data.len());
        for chunk in data[..n].chunks(WRITE) {
            got += pipe.transfer(&mut c, &mut s, chunk, &mut rbuf);
        }
        left -= n;
    }
    let t = start.stop();
    assert_eq!(got, total, "tether: the server read everything");
    t
}

fn rustls_bulk(side: &RustlsSide, pipe: &mut RustlsPipe, data: &[u8], total: usize) -> f64 {
    let (mut c, mut s) = rustls_connected(side, pipe);
    let mut rbuf = vec![0u8; WRITE];
    let start = Timer::start();
    let mut got = 0;
    let mut left = total;
    while left > 0 {
        let n = left.min(data.len());
        got += pipe.transfer(&mut c, &mut s, &data[..n], &mut rbuf);
        left -= n;
    }
    let t = start.stop();
    assert_eq!(got, total, "rustls: the server read everything");
    t
}

// ---------------------------------------------------------------------------------------------
// Idle heap.

#[derive(Clone, Copy, Debug, Default)]
struct Held {
    /// Live-bytes growth from before the connections were made to after they settled.
    total: i64,
    /// Bytes freed by dropping the client, then the server.
    client: i64,
    server: i64,
}

const SMALL: &[u8] = b"ping";

fn tether_idle(side: &TetherSide, bulk: usize) -> Held {
    let mut pipe = TetherPipe::new();
    let data = vec![0x5au8; bulk.max(SMALL.len())];
    let mut rbuf = vec![0u8; WRITE];
    let base = live_bytes();
    let (mut c, mut s) = tether_connected(side, &mut pipe);
    let payload = if bulk == 0 { SMALL } else { &data[..] };
    assert_eq!(
        pipe.transfer(&mut c, &mut s, payload, &mut rbuf),
        payload.len()
    );
    assert_eq!(
        pipe.transfer(&mut s, &mut c, payload, &mut rbuf),
        payload.len()
    );
    pipe.settle(&mut c, &mut s);
    let after = live_bytes();
    drop(c);
    let no_client = live_bytes();
    drop(s);
    let none = live_bytes();
    Held {
        total: after - base,
        client: after - no_client,
        server: no_client - none,
    }
}

fn rustls_idle(side: &RustlsSide, bulk: usize) -> Held {
    let mut pipe = RustlsPipe::new();
    let data = vec![0x5au8; bulk.max(SMALL.len())];
    let mut rbuf = vec![0u8; WRITE];
    let base = live_bytes();
    let (mut c, mut s) = rustls_connected(side, &mut pipe);
    let payload = if bulk == 0 { SMALL } else { &data[..] };
    assert_eq!(
        pipe.transfer(&mut c, &mut s, payload, &mut rbuf),
        payload.len()
    );
    assert_eq!(
        pipe.transfer(&mut s, &mut c, payload, &mut rbuf),
        payload.len()
    );
    pipe.settle(&mut c, &mut s);
    let after = live_bytes();
    drop(c);
    let no_client = live_bytes();
    drop(s);
    let none = live_bytes();
    Held {
        total: after - base,
        client: after - no_client,
        server: no_client - none,
    }
}

/// Allocator calls per full handshake (client + server), averaged over `n`.
fn allocs_per_handshake(n: usize, mut f: impl FnMut(usize) -> f64) -> f64 {
    let before = alloc_calls();
    black_box(f(n));
    (alloc_calls() - before) as f64 / n as f64
}

// ---------------------------------------------------------------------------------------------
// Statistics and output.

struct Row {
    name: &'static str,
    unit: &'static str,
    tether: Vec<f64>,
    rustls: Vec<f64>,
    tether_cpu: Vec<f64>,
    rustls_cpu: Vec<f64>,
}

impl Row {
    fn new(name: &'static str, unit: &'static str) -> Row {
        Row {
            name,
            unit,
            tether: Vec::new(),
            rustls: Vec::new(),
            tether_cpu: Vec::new(),
            rustls_cpu: Vec::new(),
        }
    }

    /// Records one batch of `units` that took `wall` seconds (on-CPU time from `last_cpu`).
    fn push(&mut self, tether: bool, units: f64, wall: f64) {
        let cpu = last_cpu();
        let (w, c) = if tether {
            (&mut self.tether, &mut self.tether_cpu)
        } else {
            (&mut self.rustls, &mut self.rustls_cpu)
        };
        w.push(units / wall);
        if let Some(cpu) = cpu {
            c.push(units / cpu);
        }
    }

    fn ratios(&self) -> Vec<f64> {
        ratios(&self.tether, &self.rustls)
    }
}

fn ratios(tether: &[f64], rustls: &[f64]) -> Vec<f64> {
    tether.iter().zip(rustls).map(|(t, r)| t / r).collect()
}

fn fmt_rate(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.1}")
    }
}

/// Runs one benchmark of one stack for about 5 s (for `perf record`): `TETHER_BENCH_ONLY` is
/// `tether-full`, `rustls-resumed`, `tether-bulk`, ...
fn profile_one(which: &str, ts: &TetherSide, rs: &RustlsSide, data: &[u8]) {
    let mut tpipe = TetherPipe::new();
    let mut rpipe = RustlsPipe::new();
    // Both resumption caches need a ticket first.
    let (mut c, mut s) = {
        let c = Session::client(&ts.client_resume, NAME, NOW).expect("tether client");
        let s = Session::server(&ts.server, NOW).expect("tether server");
        (c, s)
    };
    tpipe.settle(&mut c, &mut s);
    let name = ServerName::try_from(NAME).expect("name");
    let mut c = ClientConnection::new(rs.client_resume.clone(), name).expect("rustls");
    let mut s = ServerConnection::new(rs.server.clone()).expect("rustls");
    rpipe.settle(&mut c, &mut s);
    let mut run = |n: usize| -> f64 {
        match which {
            "tether-full" => tether_handshakes(ts, &mut tpipe, n, false),
            "tether-resumed" => tether_handshakes(ts, &mut tpipe, n, true),
            "tether-bulk" => tether_bulk(ts, &mut tpipe, data, n << 20),
            "rustls-full" => rustls_handshakes(rs, &mut rpipe, n, false),
            "rustls-resumed" => rustls_handshakes(rs, &mut rpipe, n, true),
            "rustls-bulk" => rustls_bulk(rs, &mut rpipe, data, n << 20),
            _ => panic!("TETHER_BENCH_ONLY: {{tether,rustls}}-{{full,resumed,bulk}}, not {which}"),
        }
    };
    let (mut units, mut secs) = (0usize, 0.0);
    while secs < 5.0 {
        secs += run(100);
        units += 100;
    }
    let unit = if which.ends_with("bulk") {
        "MiB"
    } else {
        "handshakes"
    };
    println!("{which}: {:.1} {unit}/s", units as f64 / secs);
}

fn main() {
    let p = Params::from_env();
    let ts = tether_side();
    let rs = rustls_side();
    let mut tpipe = TetherPipe::new();
    let mut rpipe = RustlsPipe::new();
    let data = vec![0x5au8; 1 << 20];

    if let Ok(which) = std::env::var("TETHER_BENCH_ONLY") {
        profile_one(&which, &ts, &rs, &data);
        return;
    }

    println!(
        "tether core bench: tether Session vs rustls ClientConnection/ServerConnection (ring){}",
        if p.quick { " [quick]" } else { "" }
    );
    println!(
        "rounds: {}, per round and stack: {} full handshakes, {} resumed, {} MiB bulk in {} KiB writes",
        p.rounds,
        p.full,
        p.resumed,
        p.bulk_bytes >> 20,
        WRITE >> 10
    );

    // Warm up: fault in pages, fill caches, and give both resumption caches their tickets.
    tether_handshakes(&ts, &mut tpipe, 3, false);
    rustls_handshakes(&rs, &mut rpipe, 3, false);
    {
        let mut c = Session::client(&ts.client_resume, NAME, NOW).expect("tether client");
        let mut s = Session::server(&ts.server, NOW).expect("tether server");
        tpipe.settle(&mut c, &mut s);
        assert!(!c.is_resumed(), "the first tether handshake is a full one");
        let name = ServerName::try_from(NAME).expect("name");
        let mut c = ClientConnection::new(rs.client_resume.clone(), name).expect("rustls");
        let mut s = ServerConnection::new(rs.server.clone()).expect("rustls");
        rpipe.settle(&mut c, &mut s);
        assert_eq!(c.handshake_kind(), Some(HandshakeKind::Full));
        let rustls_params = (
            c.protocol_version(),
            c.negotiated_cipher_suite().map(|s| s.suite()),
            c.negotiated_key_exchange_group().map(|g| g.name()),
        );
        let (tc, _) = tether_connected(&ts, &mut tpipe);
        let tether_params = (tc.version(), tc.cipher_suite(), tc.kx_group());
        assert_eq!(tether_params.0, Some(tether::TlsVersion::Tls13));
        assert_eq!(rustls_params.0, Some(rustls::ProtocolVersion::TLSv1_3));
        assert_eq!(tether_params.1, rustls_params.1, "same cipher suite");
        assert_eq!(tether_params.2, rustls_params.2, "same key exchange");
        println!(
            "both negotiate: TLS 1.3, {:?}, {:?}",
            rustls_params.1.expect("suite"),
            rustls_params.2.expect("group")
        );
    }
    tether_handshakes(&ts, &mut tpipe, 3, true);
    rustls_handshakes(&rs, &mut rpipe, 3, true);
    tether_bulk(&ts, &mut tpipe, &data, 2 << 20);
    rustls_bulk(&rs, &mut rpipe, &data, 2 << 20);

    let mut full = Row::new("full handshakes", "/s");
    let mut resumed = Row::new("resumed handshakes", "/s");
    let mut bulk = Row::new("encrypt+decrypt", "MB/s");
    for round in 0..p.rounds {
        let tether_first = round % 2 == 0;
        for i in 0..2 {
            if (i == 0) == tether_first {
                let t = tether_handshakes(&ts, &mut tpipe, p.full, false);
                full.push(true, p.full as f64, t);
                let t = tether_handshakes(&ts, &mut tpipe, p.resumed, true);
                resumed.push(true, p.resumed as f64, t);
                let t = tether_bulk(&ts, &mut tpipe, &data, p.bulk_bytes);
                bulk.push(true, p.bulk_bytes as f64 / 1e6, t);
            } else {
                let t = rustls_handshakes(&rs, &mut rpipe, p.full, false);
                full.push(false, p.full as f64, t);
                let t = rustls_handshakes(&rs, &mut rpipe, p.resumed, true);
                resumed.push(false, p.resumed as f64, t);
                let t = rustls_bulk(&rs, &mut rpipe, &data, p.bulk_bytes);
                bulk.push(false, p.bulk_bytes as f64 / 1e6, t);
            }
        }
        eprint!(".");
    }
    eprintln!();

    println!();
    println!(
        "| {:<24} | {:>7} | {:>7} | {:>6} | {:>13} | {:>14} | {:<6} |",
        "median of rounds",
        "tether",
        "rustls",
        "ratio",
        "ratio p25..75",
        "ratio min..max",
        "target"
    );
    println!(
        "|{:-<26}|{:-<9}|{:-<9}|{:-<8}|{:-<15}|{:-<16}|{:-<8}|",
        "", "", "", "", "", "", ""
    );
    let mut spreads = Vec::new();
    for row in [&full, &resumed, &bulk] {
        let (tl, th) = min_max(&row.tether);
        let (rl, rh) = min_max(&row.rustls);
        let ratios = row.ratios();
        let (ql, qh) = min_max(&ratios);
        let q = median(&ratios);
        println!(
            "| {:<24} | {:>7} | {:>7} | {:>6.3} | {:>13} | {:>14} | {:<6} |",
            format!("{} ({})", row.name, row.unit),
            fmt_rate(median(&row.tether)),
            fmt_rate(median(&row.rustls)),
            q,
            format!(
                "{:.3}..{:.3}",
                quantile(&ratios, 0.25),
                quantile(&ratios, 0.75)
            ),
            format!("{ql:.3}..{qh:.3}"),
            if q >= 0.95 { "met" } else { "MISSED" }
        );
        spreads.push(format!(
            "{}: tether {}..{}, rustls {}..{} {}",
            row.name,
            fmt_rate(tl),
            fmt_rate(th),
            fmt_rate(rl),
            fmt_rate(rh),
            row.unit
        ));
    }
    println!();
    println!("per-stack spread over rounds (min..max):");
    for line in spreads {
        println!("  {line}");
    }

    if full.tether_cpu.len() == p.rounds && full.rustls_cpu.len() == p.rounds {
        println!();
        println!("the same batches timed by on-CPU time (descheduled time left out):");
        println!(
            "| {:<24} | {:>7} | {:>7} | {:>6} | {:>13} |",
            "median of rounds", "tether", "rustls", "ratio", "ratio p25..75"
        );
        println!("|{:-<26}|{:-<9}|{:-<9}|{:-<8}|{:-<15}|", "", "", "", "", "");
        for row in [&full, &resumed, &bulk] {
            let r = ratios(&row.tether_cpu, &row.rustls_cpu);
            println!(
                "| {:<24} | {:>7} | {:>7} | {:>6.3} | {:>13} |",
                format!("{} ({})", row.name, row.unit),
                fmt_rate(median(&row.tether_cpu)),
                fmt_rate(median(&row.rustls_cpu)),
                median(&r),
                format!("{:.3}..{:.3}", quantile(&r, 0.25), quantile(&r, 0.75)),
            );
        }
    }

    // Allocator calls per handshake (diagnostic: what each stack asks of the allocator).
    let ta = allocs_per_handshake(20, |n| tether_handshakes(&ts, &mut tpipe, n, false));
    let ra = allocs_per_handshake(20, |n| rustls_handshakes(&rs, &mut rpipe, n, false));
    let tar = allocs_per_handshake(20, |n| tether_handshakes(&ts, &mut tpipe, n, true));
    let rar = allocs_per_handshake(20, |n| rustls_handshakes(&rs, &mut rpipe, n, true));
    println!();
    println!(
        "allocator calls per handshake (client+server): full tether {ta:.0} / rustls {ra:.0}; resumed tether {tar:.0} / rustls {rar:.0}"
    );

    println!();
    println!(
        "inline size (held by the caller, not on the heap): tether Session {} B; rustls \
         ClientConnection {} B, ServerConnection {} B",
        std::mem::size_of::<Session>(),
        std::mem::size_of::<ClientConnection>(),
        std::mem::size_of::<ServerConnection>()
    );
    println!(
        "heap held by one established, idle connection (bytes freed when it is dropped; \
         growth = live bytes after minus before making both)"
    );
    println!(
        "| {:<32} | {:<15} | {:>8} | {:>8} | {:>5} | {:<6} |",
        "state", "connection", "tether", "rustls", "ratio", "target"
    );
    println!(
        "|{:-<34}|{:-<17}|{:-<10}|{:-<10}|{:-<7}|{:-<8}|",
        "", "", "", "", "", ""
    );
    for (label, bulk_bytes) in [
        ("handshake + 4 B each way", 0usize),
        ("handshake + 1 MiB each way", 1 << 20),
    ] {
        let t = tether_idle(&ts, bulk_bytes);
        let r = rustls_idle(&rs, bulk_bytes);
        // Repeat: the figures must be deterministic.
        let t2 = tether_idle(&ts, bulk_bytes);
        let r2 = rustls_idle(&rs, bulk_bytes);
        if (t.client, t.server) != (t2.client, t2.server)
            || (r.client, r.server) != (r2.client, r2.server)
        {
            eprintln!("note: idle heap differs between repeats: {t:?} {t2:?} {r:?} {r2:?}");
        }
        for (side, tv, rv, target) in [
            ("client", t.client, r.client, true),
            ("server", t.server, r.server, true),
            ("growth, both", t.total, r.total, false),
        ] {
            let verdict = match (target, tv < rv) {
                (false, _) => "",
                (true, true) => "met",
                (true, false) => "MISSED",
            };
            println!(
                "| {:<32} | {:<15} | {:>8} | {:>8} | {:>5.2} | {:<6} |",
                label,
                side,
                tv,
                rv,
                tv as f64 / rv as f64,
                verdict
            );
        }
    }
}
