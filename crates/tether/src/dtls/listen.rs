//! Stateless cookies for a DTLS listener: no per-peer memory before the peer proves it
//! receives at its source address.
//!
//! A listener that serves many peers on one UDP socket must not make a session for every
//! ClientHello: anyone can send ClientHellos from spoofed addresses. RFC 6347 4.2.1 (DTLS 1.2,
//! HelloVerifyRequest) and RFC 9147 5.1 (DTLS 1.3, a cookie in HelloRetryRequest) answer the
//! first ClientHello with a cookie, statelessly, and make a session only for a ClientHello that
//! echoes a valid one. [`Acceptor`] does that for a [`ServerConfig`]:
//!
//! ```text
//! for each datagram from an address with no session:
//!     match acceptor.accept(now, from, datagram) {
//!         Accept::Reply(datagrams) => send them to `from`, keep nothing,
//!         Accept::Session(session) => keep it under `from`; send what poll_datagram gives,
//!         Accept::Drop(reason) => drop the datagram (count `reason`),
//!     }
//! ```
//!
//! # How, with dimpl
//!
//! dimpl's server keeps its engine (its transcript, buffers, a random cookie secret) from the
//! first ClientHello on, and cannot take a cookie someone else checked. So the acceptor gives
//! each peer an engine of its own whose random generator is seeded with a keyed hash:
//! `seed = HMAC-SHA256(secret, peer address and port, client random, cipher suites)` (first
//! 8 bytes; `secret` is 32 random bytes, replaced every [`ROTATE_EVERY`], the previous one
//! still accepted). The first ClientHello goes to a throwaway engine with that seed: it answers
//! with its cookie request (a HelloVerifyRequest or a HelloRetryRequest), which is sent, and the
//! engine is dropped. A ClientHello that echoes a cookie gets a new engine with the same seed,
//! which first replays the peer's first ClientHello (rebuilt from the second: the cookie taken
//! out, see `wire::first_client_hello`), and so stands exactly where the throwaway engine
//! stood: its cookie secret is the same, its HelloRetryRequest (in the DTLS 1.3 transcript) is
//! byte for byte the one the peer saw. A cookie made for another address, another random or
//! with an older secret fails the engine's check, and the datagram is dropped.
//!
//! The cookie thus binds the peer's address and port, its ClientHello and the secret, as RFC
//! 6347 4.2.1 asks; memory is held only for peers that echo a valid cookie. The price is CPU:
//! each cookie request builds an engine config, which checks the crypto provider, measured at
//! about 250 µs of one core here, where an HMAC alone would take 1 µs (dimpl has no way to be
//! handed a cookie secret).
//!
//! The seed also drives the engine's other non-cryptographic randomness (its timer jitter,
//! DTLS 1.2 explicit nonces, its server random): they are unique per peer and ClientHello and
//! unpredictable without the secret; key exchange keys come from the operating system's
//! generator, as always.
//!
//! Limits: a DTLS 1.3 client that changes anything but the cookie and the padding between its
//! two ClientHellos (e.g. a new key share, which this server never asks for) cannot be served
//! statelessly and fails its handshake; DTLS 1.2 clients are not affected.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::net::{IpAddr, SocketAddr};
use core::time::Duration;

use super::config::ServerConfig;
use super::session::Session;
use super::wire;
use crate::error::{ConfigError, Error};
use crate::time::Instant;

/// How often the cookie secret is replaced (a cookie stays valid one to two periods).
pub const ROTATE_EVERY: Duration = Duration::from_secs(30);

/// What to do with a datagram from an address that has no session. See the
/// [module docs](self).
#[derive(Debug)]
#[must_use]
pub enum Accept {
    /// Send these datagrams (a cookie request, or an alert) back to the sender; keep nothing.
    Reply(Vec<Vec<u8>>),
    /// The sender echoed a valid cookie: its session, which has taken the ClientHello; send
    /// what its `poll_datagram` gives and pass it the peer's next datagrams.
    Session(Box<Session>),
    /// Drop the datagram.
    Drop(DropReason),
}

/// Why [`Acceptor::accept`] dropped a datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// Not a whole, plaintext, unfragmented ClientHello: garbage, a stray record of an old
    /// session, or a fragmented ClientHello (which a stateless listener cannot reassemble).
    NotClientHello,
    /// A ClientHello with a cookie that does not verify (another address, an expired secret,
    /// a forgery).
    BadCookie,
    /// The engine refused the ClientHello (or did not answer it with a cookie request).
    Refused,
}

impl DropReason {
    /// A short name (for metrics labels).
    pub fn name(self) -> &'static str {
        match self {
            DropReason::NotClientHello => "not_client_hello",
            DropReason::BadCookie => "bad_cookie",
            DropReason::Refused => "refused",
        }
    }
}

/// Answers first ClientHellos statelessly and makes sessions for peers that echo a cookie.
/// Holds two secrets and no per-peer state.
pub struct Acceptor {
    config: ServerConfig,
    current: [u8; 32],
    previous: Option<[u8; 32]>,
    rotated: Instant,
    rotate_every: Duration,
}

impl core::fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Acceptor")
            .field("rotate_every", &self.rotate_every)
            .finish_non_exhaustive()
    }
}

fn random_secret() -> Result<[u8; 32], Error> {
    let mut s = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut s).map_err(|_| {
        Error::Config(ConfigError::Inconsistent(
            "the system random generator failed; cannot make a cookie secret".into(),
        ))
    })?;
    Ok(s)
}

impl Acceptor {
    /// An acceptor for sessions of `config` with a random secret, rotated every
    /// [`ROTATE_EVERY`].
    pub fn new(config: &ServerConfig, now: Instant) -> Result<Acceptor, Error> {
        Ok(Acceptor::with_secret(config, random_secret()?, now))
    }

    /// An acceptor that starts with `secret` (tests; several listeners behind one address
    /// would share it). Later secrets are random.
    pub fn with_secret(config: &ServerConfig, secret: [u8; 32], now: Instant) -> Acceptor {
        Acceptor {
            config: config.clone(),
            current: secret,
            previous: None,
            rotated: now,
            rotate_every: ROTATE_EVERY,
        }
    }

    /// The server config sessions are made with.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// Replaces the secret when its period is over (called by [`accept`](Self::accept)).
    pub fn handle_timeout(&mut self, now: Instant) {
        if now.saturating_duration_since(self.rotated) < self.rotate_every {
            return;
        }
        match random_secret() {
            Ok(s) => {
                self.previous = Some(self.current);
                self.current = s;
                self.rotated = now;
            }
            // Keep the old secret; try again on the next call.
            Err(_) => {}
        }
    }

    /// Handles one datagram from `from`, an address with no session. See [`Accept`].
    pub fn accept(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) -> Accept {
        self.handle_timeout(now);
        let Some(hello) = wire::client_hello(datagram) else {
            return Accept::Drop(DropReason::NotClientHello);
        };
        let record = &datagram[..hello.record_end];
        if !hello.has_cookie() {
            let seed = seed(&self.current, from, record, &hello);
            return self.cookie_request(now, seed, record);
        }
        let Some(first) = wire::first_client_hello(datagram, &hello) else {
            return Accept::Drop(DropReason::NotClientHello);
        };
        let secrets = [Some(self.current), self.previous];
        for secret in secrets.iter().flatten() {
            let seed = seed(secret, from, record, &hello);
            if let Some(session) = self.session(now, seed, &first, record) {
                return Accept::Session(Box::new(session));
            }
        }
        Accept::Drop(DropReason::BadCookie)
    }

    /// The cookie request of a throwaway engine seeded with `seed` (or its alert).
    fn cookie_request(&self, now: Instant, seed: u64, hello: &[u8]) -> Accept {
        let Ok(engine) = self.config.peer_engine_config(seed) else {
            return Accept::Drop(DropReason::Refused);
        };
        let Ok(mut s) = Session::server_with(&self.config, engine, now) else {
            return Accept::Drop(DropReason::Refused);
        };
        let failed = s.handle_datagram(now, hello).is_err();
        let out: Vec<Vec<u8>> = core::iter::from_fn(|| s.pop_datagram()).collect();
        if failed {
            // An alert (e.g. protocol_version), unprotected: stateless too.
            return if out.is_empty() {
                Accept::Drop(DropReason::Refused)
            } else {
                Accept::Reply(out)
            };
        }
        if out.is_empty() || !out.iter().all(|d| wire::is_cookie_request(d)) {
            // The engine would have gone on without a cookie: never from here.
            return Accept::Drop(DropReason::Refused);
        }
        Accept::Reply(out)
    }

    /// A session that replayed `first` and took `second`, if the cookie in `second` is the
    /// one an engine seeded with `seed` asks for.
    fn session(&self, now: Instant, seed: u64, first: &[u8], second: &[u8]) -> Option<Session> {
        let engine = self.config.peer_engine_config(seed).ok()?;
        let mut s = Session::server_with(&self.config, engine, now).ok()?;
        s.handle_datagram(now, first).ok()?;
        let replayed: Vec<Vec<u8>> = core::iter::from_fn(|| s.pop_datagram()).collect();
        if replayed.is_empty() || !replayed.iter().all(|d| wire::is_cookie_request(d)) {
            return None;
        }
        s.handle_datagram(now, second).ok()?;
        // A DTLS 1.2 engine answers a bad cookie with another HelloVerifyRequest.
        let mut answer = Vec::new();
        while let Some(d) = s.pop_datagram() {
            if wire::is_cookie_request(&d) {
                return None;
            }
            answer.push(d);
        }
        if answer.is_empty() {
            return None;
        }
        s.requeue(answer);
        Some(s)
    }
}

/// The engine seed for this peer and ClientHello under `secret`.
fn seed(secret: &[u8; 32], from: SocketAddr, record: &[u8], hello: &wire::ClientHello) -> u64 {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let mut ctx = ring::hmac::Context::with_key(&key);
    ctx.update(b"tether dtls cookie v1");
    match from.ip() {
        IpAddr::V4(ip) => ctx.update(&ip.octets()),
        IpAddr::V6(ip) => ctx.update(&ip.octets()),
    }
    ctx.update(&from.port().to_be_bytes());
    ctx.update(&hello.random);
    ctx.update(record.get(hello.suites.clone()).unwrap_or(&[]));
    let tag = ctx.sign();
    let mut s = [0u8; 8];
    s.copy_from_slice(&tag.as_ref()[..8]);
    u64::from_be_bytes(s)
}
