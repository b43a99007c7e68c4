//! Helpers for the DTLS tests: configs from the test PKI (`tests/support`, made at test time by
//! `tether_pki`), an in-memory client/server pair over a deterministic lossy link with a
//! simulated clock, and a lossy UDP proxy for real sockets. Every loop here has a bound and every
//! thread is joined.

#![allow(dead_code)]

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

use tether::dtls::{self, DtlsVersion, Session};
use tether::{ClientAuth, Error, Event, Instant, Recv, Trust};

use crate::support::Pki;

pub const V12: (DtlsVersion, DtlsVersion) = (DtlsVersion::Dtls12, DtlsVersion::Dtls12);
pub const V13: (DtlsVersion, DtlsVersion) = (DtlsVersion::Dtls13, DtlsVersion::Dtls13);
pub const BOTH: (DtlsVersion, DtlsVersion) = (DtlsVersion::Dtls12, DtlsVersion::Dtls13);

pub fn client_builder(
    trust: Trust,
    versions: (DtlsVersion, DtlsVersion),
) -> dtls::ClientConfigBuilder {
    dtls::ClientConfig::builder(trust)
        .versions(versions.0, versions.1)
        .handshake_timeout(Duration::from_secs(10))
}

pub fn client_config(
    pki: &Pki,
    versions: (DtlsVersion, DtlsVersion),
    mtls: bool,
) -> dtls::ClientConfig {
    let mut b = client_builder(pki.trust(), versions);
    if mtls {
        b = b.identity(pki.client.identity());
    }
    b.build().unwrap()
}

pub fn server_config(
    pki: &Pki,
    versions: (DtlsVersion, DtlsVersion),
    mtls: bool,
) -> dtls::ServerConfig {
    let mut b = dtls::ServerConfig::builder(pki.server.identity())
        .versions(versions.0, versions.1)
        .handshake_timeout(Duration::from_secs(10));
    if mtls {
        b = b.client_auth(ClientAuth::Required(pki.trust()));
    }
    b.build().unwrap()
}

/// xorshift64*: a small deterministic generator for loss decisions.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// True with probability `pct` percent.
    pub fn chance(&mut self, pct: u64) -> bool {
        self.next() % 100 < pct
    }
}

/// What the link does to datagrams: percentages of drops, duplicates and reorders.
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    pub drop: u64,
    pub duplicate: u64,
    pub reorder: u64,
}

impl Faults {
    pub const NONE: Faults = Faults {
        drop: 0,
        duplicate: 0,
        reorder: 0,
    };
    /// The acceptance profile: 10% dropped, some duplicated and reordered.
    pub const LOSSY: Faults = Faults {
        drop: 10,
        duplicate: 5,
        reorder: 10,
    };
}

/// One direction of an in-memory link.
#[derive(Debug, Default)]
pub struct Link {
    pub queue: Vec<Vec<u8>>,
    pub sent: u64,
    pub dropped: u64,
}

impl Link {
    fn push(&mut self, d: Vec<u8>, faults: Faults, rng: &mut Rng) {
        self.sent += 1;
        if rng.chance(faults.drop) {
            self.dropped += 1;
            return;
        }
        if rng.chance(faults.duplicate) {
            self.queue.push(d.clone());
        }
        if rng.chance(faults.reorder) && !self.queue.is_empty() {
            let at = (rng.next() as usize) % self.queue.len();
            self.queue.insert(at, d);
        } else {
            self.queue.push(d);
        }
    }
}

/// A client and a server session joined by an in-memory link with a simulated clock.
#[derive(Debug)]
pub struct Pair {
    pub client: Session,
    pub server: Session,
    pub now: Instant,
    pub faults: Faults,
    pub rng: Rng,
    pub c2s: Link,
    pub s2c: Link,
    pub client_got: Vec<Vec<u8>>,
    pub server_got: Vec<Vec<u8>>,
    pub client_events: Vec<Event>,
    pub server_events: Vec<Event>,
}

impl Pair {
    pub fn new(client: &dtls::ClientConfig, name: &str, server: &dtls::ServerConfig) -> Pair {
        let now = Instant::from_millis(1_000);
        Pair {
            client: Session::client(client, name, now).unwrap(),
            server: Session::server(server, now).unwrap(),
            now,
            faults: Faults::NONE,
            rng: Rng::new(1),
            c2s: Link::default(),
            s2c: Link::default(),
            client_got: Vec::new(),
            server_got: Vec::new(),
            client_events: Vec::new(),
            server_events: Vec::new(),
        }
    }

    pub fn lossy(mut self, faults: Faults, seed: u64) -> Pair {
        self.faults = faults;
        self.rng = Rng::new(seed);
        self
    }

    fn collect(s: &mut Session, events: &mut Vec<Event>, got: &mut Vec<Vec<u8>>) {
        while let Some(e) = s.poll_event() {
            events.push(e);
        }
        if s.is_failed() {
            return;
        }
        let mut buf = vec![0u8; 65536];
        while let Ok(Recv::Data(n)) = s.recv(&mut buf) {
            got.push(buf[..n].to_vec());
        }
    }

    /// Moves every queued datagram once each way (through the faults); returns whether any
    /// datagram moved, and the first error (client's, then server's).
    pub fn step(&mut self) -> (bool, Result<(), Error>) {
        while let Some(d) = self.client.pop_datagram() {
            self.c2s.push(d, self.faults, &mut self.rng);
        }
        while let Some(d) = self.server.pop_datagram() {
            self.s2c.push(d, self.faults, &mut self.rng);
        }
        let moved = !self.c2s.queue.is_empty() || !self.s2c.queue.is_empty();
        let mut rs = Ok(());
        for d in std::mem::take(&mut self.c2s.queue) {
            let r = self.server.handle_datagram(self.now, &d);
            if rs.is_ok() {
                rs = r;
            }
        }
        let mut rc = Ok(());
        for d in std::mem::take(&mut self.s2c.queue) {
            let r = self.client.handle_datagram(self.now, &d);
            if rc.is_ok() {
                rc = r;
            }
        }
        Self::collect(
            &mut self.client,
            &mut self.client_events,
            &mut self.client_got,
        );
        Self::collect(
            &mut self.server,
            &mut self.server_events,
            &mut self.server_got,
        );
        (moved, rc.and(rs))
    }

    /// When nothing moves, jumps the clock to the earliest timer and runs it.
    fn tick(&mut self) -> Result<(), Error> {
        let next = [self.client.poll_timeout(), self.server.poll_timeout()]
            .into_iter()
            .flatten()
            .min();
        let Some(next) = next else {
            return Ok(());
        };
        if next > self.now {
            self.now = next;
        }
        let rc = self.client.handle_timeout(self.now);
        let rs = self.server.handle_timeout(self.now);
        rc.and(rs)
    }

    /// Runs until both sides are connected (or one fails), moving time forward when idle.
    /// Gives up (returning the error state) after `max_steps`.
    pub fn handshake(&mut self) -> Result<(), Error> {
        for _ in 0..10_000 {
            let (moved, r) = self.step();
            r?;
            if !self.client.is_handshaking()
                && !self.server.is_handshaking()
                && !self.client.wants_transmit()
                && !self.server.wants_transmit()
            {
                return Ok(());
            }
            if !moved {
                self.tick()?;
            }
        }
        panic!(
            "handshake did not settle: {:?} {:?}",
            self.client, self.server
        );
    }

    /// Runs until nothing moves (no datagram in flight), without moving time.
    pub fn settle(&mut self) -> Result<(), Error> {
        let mut first = Ok(());
        for _ in 0..1_000 {
            let (moved, r) = self.step();
            if first.is_ok() {
                first = r;
            }
            if !moved {
                return first;
            }
        }
        panic!("the link did not settle");
    }
}

/// A UDP proxy on 127.0.0.1 between one client and `upstream`: drops, duplicates and reorders
/// datagrams by a seeded generator. The client is whoever sent the first datagram. Stopped and
/// joined on drop.
#[derive(Debug)]
pub struct LossyProxy {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    pub forwarded: Arc<AtomicU64>,
    pub dropped: Arc<AtomicU64>,
    thread: Option<thread::JoinHandle<()>>,
}

impl LossyProxy {
    pub fn start(upstream: SocketAddr, faults: Faults, seed: u64) -> LossyProxy {
        let front = UdpSocket::bind("127.0.0.1:0").unwrap();
        let back = UdpSocket::bind("127.0.0.1:0").unwrap();
        back.connect(upstream).unwrap();
        let addr = front.local_addr().unwrap();
        front.set_nonblocking(true).unwrap();
        back.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let forwarded = Arc::new(AtomicU64::new(0));
        let dropped = Arc::new(AtomicU64::new(0));
        let (s, f, d) = (stop.clone(), forwarded.clone(), dropped.clone());
        let thread = thread::Builder::new()
            .name("lossy-proxy".into())
            .spawn(move || proxy_loop(front, back, faults, Rng::new(seed), s, f, d))
            .unwrap();
        LossyProxy {
            addr,
            stop,
            forwarded,
            dropped,
            thread: Some(thread),
        }
    }
}

impl Drop for LossyProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn proxy_loop(
    front: UdpSocket,
    back: UdpSocket,
    faults: Faults,
    mut rng: Rng,
    stop: Arc<AtomicBool>,
    forwarded: Arc<AtomicU64>,
    dropped: Arc<AtomicU64>,
) {
    let mut client: Option<SocketAddr> = None;
    // A datagram held back in each direction: sent after the next one (reordered), or after
    // HOLD if none comes (delayed).
    let mut held_up: Option<Held> = None;
    let mut held_down: Option<Held> = None;
    let mut buf = vec![0u8; 65536];
    // Bounded even if nobody stops it: a test never runs this long.
    let end = std::time::Instant::now() + Duration::from_secs(60);
    let up = |d: &[u8]| {
        let _ = back.send(d);
    };
    let down = |d: &[u8], to: Option<SocketAddr>| {
        if let Some(c) = to {
            let _ = front.send_to(d, c);
        }
    };
    while !stop.load(Ordering::SeqCst) && std::time::Instant::now() < end {
        let mut idle = true;
        if let Ok((n, from)) = front.recv_from(&mut buf) {
            idle = false;
            client.get_or_insert(from);
            pass(
                &buf[..n],
                faults,
                &mut rng,
                &mut held_up,
                &forwarded,
                &dropped,
                up,
            );
        }
        if let Ok(n) = back.recv(&mut buf) {
            idle = false;
            let to = client;
            pass(
                &buf[..n],
                faults,
                &mut rng,
                &mut held_down,
                &forwarded,
                &dropped,
                |d| down(d, to),
            );
        }
        if let Some(h) = held_up.take_if(|h| h.since.elapsed() >= HOLD) {
            up(&h.datagram);
        }
        if let Some(h) = held_down.take_if(|h| h.since.elapsed() >= HOLD) {
            down(&h.datagram, client);
        }
        if idle {
            thread::sleep(Duration::from_micros(200));
        }
    }
}

/// How long the proxy holds a datagram back at most.
const HOLD: Duration = Duration::from_millis(20);

struct Held {
    datagram: Vec<u8>,
    since: std::time::Instant,
}

fn pass(
    d: &[u8],
    faults: Faults,
    rng: &mut Rng,
    held: &mut Option<Held>,
    forwarded: &AtomicU64,
    dropped: &AtomicU64,
    out: impl Fn(&[u8]),
) {
    if rng.chance(faults.drop) {
        dropped.fetch_add(1, Ordering::SeqCst);
        return;
    }
    forwarded.fetch_add(1, Ordering::SeqCst);
    if held.is_none() && rng.chance(faults.reorder) {
        *held = Some(Held {
            datagram: d.to_vec(),
            since: std::time::Instant::now(),
        });
        return;
    }
    out(d);
    if rng.chance(faults.duplicate) {
        out(d);
    }
    if let Some(h) = held.take() {
        out(&h.datagram);
    }
}
