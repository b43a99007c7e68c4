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
//! dimpl's server keeps its engine (transcript, buffers, a random cookie secret) from the first
//! ClientHello on, and cannot be handed a ClientHello someone else checked. Two things make it
//! stateless here:
//!
//! - **The cookie is ours.** Server configs run dimpl with a crypto provider whose HMAC, while
//!   an [`Acceptor`] drives an engine, computes dimpl's cookie (an HMAC-SHA256 over the client
//!   random) with the key `HMAC-SHA256(secret, peer address and port, client random, cipher
//!   suites)` instead of the engine's random secret (`secret` is 32 random bytes, replaced every
//!   [`ROTATE_EVERY`], the previous one still accepted). Everywhere else (key schedules, PRF,
//!   engines outside an acceptor) it is the plain HMAC. So the acceptor checks a cookie with
//!   one HMAC, before any engine exists, and the cookie binds the address, the ClientHello and
//!   the secret as RFC 6347 4.2.1 asks.
//! - **The first ClientHello is replayed.** A first ClientHello goes to a throwaway engine,
//!   whose cookie request is sent; the engine is dropped. For a ClientHello with a valid cookie,
//!   a new engine first takes the peer's first ClientHello, rebuilt from the second (the cookie
//!   taken out, see `wire::first_client_hello`), and answers it exactly as the throwaway engine
//!   did (the same cookie, so in DTLS 1.3 the same HelloRetryRequest in the transcript); then
//!   it takes the second.
//!
//! Memory is held only for peers that echo a valid cookie. A first ClientHello costs one
//! throwaway engine (about 110 µs of one core here, release build: the server's private key is
//! parsed again); a forged cookie costs an HMAC.
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

    /// Makes the sessions of from now on with `config` (a renewed server certificate, say).
    /// The cookie secrets stay, so cookies already sent are still honoured; sessions already
    /// made keep the config they were made with.
    pub fn set_config(&mut self, config: &ServerConfig) {
        self.config = config.clone();
    }

    /// Replaces the secret when its period is over (called by [`accept`](Self::accept)).
    pub fn handle_timeout(&mut self, now: Instant) {
        if now.saturating_duration_since(self.rotated) < self.rotate_every {
            return;
        }
        // On failure the old secret stays; the next call tries again.
        if let Ok(s) = random_secret() {
            self.previous = Some(self.current);
            self.current = s;
            self.rotated = now;
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
            let key = peer_key(&self.current, from, record, &hello);
            return self.cookie_request(now, key, &hello, record);
        }
        let Some(echoed) = echoed_cookie(record, &hello) else {
            return Accept::Drop(DropReason::BadCookie);
        };
        let secrets = [Some(self.current), self.previous];
        let Some(key) = secrets.iter().flatten().find_map(|secret| {
            let key = peer_key(secret, from, record, &hello);
            let expected = cookie(&key, &hello.random);
            subtle_eq(&expected, echoed).then_some(key)
        }) else {
            return Accept::Drop(DropReason::BadCookie);
        };
        let Some(first) = wire::first_client_hello(datagram, &hello) else {
            return Accept::Drop(DropReason::NotClientHello);
        };
        match self.session(now, key, &hello, &first, record) {
            Some(s) => Accept::Session(Box::new(s)),
            None => Accept::Drop(DropReason::Refused),
        }
    }

    /// The cookie request of a throwaway engine (or its alert).
    fn cookie_request(
        &self,
        now: Instant,
        key: [u8; 32],
        hello: &wire::ClientHello,
        record: &[u8],
    ) -> Accept {
        let Ok(mut s) = Session::server(&self.config, now) else {
            return Accept::Drop(DropReason::Refused);
        };
        let failed = with_cookie_key(key, hello.random, || s.handle_datagram(now, record)).is_err();
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

    /// A session that replayed `first` and took `second` (whose cookie was checked).
    fn session(
        &self,
        now: Instant,
        key: [u8; 32],
        hello: &wire::ClientHello,
        first: &[u8],
        second: &[u8],
    ) -> Option<Session> {
        let mut s = Session::server(&self.config, now).ok()?;
        with_cookie_key(key, hello.random, || s.handle_datagram(now, first)).ok()?;
        let replayed: Vec<Vec<u8>> = core::iter::from_fn(|| s.pop_datagram()).collect();
        if replayed.is_empty() || !replayed.iter().all(|d| wire::is_cookie_request(d)) {
            return None;
        }
        with_cookie_key(key, hello.random, || s.handle_datagram(now, second)).ok()?;
        let mut answer = Vec::new();
        while let Some(d) = s.pop_datagram() {
            if wire::is_cookie_request(&d) {
                // The engine did not take the cookie: refuse rather than loop.
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

/// The cookie the peer echoes: the DTLS 1.2 legacy cookie, or the DTLS 1.3 cookie
/// extension's content (its u16 length, then the cookie).
fn echoed_cookie<'a>(record: &'a [u8], hello: &wire::ClientHello) -> Option<&'a [u8]> {
    if let Some(ext) = hello.cookie_extension.clone() {
        // type(2) length(2) cookie<2>
        let data = record.get(ext.start + 4..ext.end)?;
        let len = usize::from(u16::from_be_bytes([*data.first()?, *data.get(1)?]));
        return data.get(2..).filter(|c| c.len() == len);
    }
    record.get(hello.legacy_cookie.clone())
}

/// Equality in time independent of where the bytes differ.
fn subtle_eq(a: &[u8; 32], b: &[u8]) -> bool {
    b.len() == a.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The key of this peer's cookie under `secret`.
fn peer_key(
    secret: &[u8; 32],
    from: SocketAddr,
    record: &[u8],
    hello: &wire::ClientHello,
) -> [u8; 32] {
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
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.sign().as_ref());
    out
}

/// dimpl's cookie under `key`: HMAC-SHA256(key, client random).
fn cookie(key: &[u8; 32], random: &[u8; 32]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(
        ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key), random).as_ref(),
    );
    out
}

std::thread_local! {
    /// While an acceptor drives an engine: (client random, cookie key).
    static COOKIE_KEY: core::cell::Cell<Option<([u8; 32], [u8; 32])>> =
        const { core::cell::Cell::new(None) };
}

/// Runs `f` with the cookie key of this peer installed for the engine's HMAC.
fn with_cookie_key<R>(key: [u8; 32], random: [u8; 32], f: impl FnOnce() -> R) -> R {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            COOKIE_KEY.with(|c| c.set(None));
        }
    }
    COOKIE_KEY.with(|c| c.set(Some((random, key))));
    let _reset = Reset;
    f()
}

/// dimpl's HMAC, except for the cookie computation while an acceptor drives an engine: an
/// HMAC-SHA256 of the client random (32 bytes) is then keyed with the peer's cookie key
/// instead of the engine's random secret. Nothing else HMACs exactly the client random (PRF
/// and HKDF inputs are labels, seeds, secrets and hashes), and outside an acceptor it is the
/// plain HMAC.
#[derive(Debug)]
struct CookieHmac;

static COOKIE_HMAC: CookieHmac = CookieHmac;

impl dimpl::crypto::HmacProvider for CookieHmac {
    fn hmac(
        &self,
        hash: dimpl::HashAlgorithm,
        key: &[u8],
        data: &[u8],
        out: &mut [u8],
    ) -> Result<usize, dimpl::CryptoError> {
        let inner = super::crypto::hmac_provider();
        if hash == dimpl::HashAlgorithm::SHA256
            && key.len() == 32
            && let Some((random, cookie_key)) = COOKIE_KEY.with(core::cell::Cell::get)
            && data == random
            && out.len() >= 32
        {
            out[..32].copy_from_slice(&cookie(&cookie_key, &random));
            return Ok(32);
        }
        inner.hmac(hash, key, data, out)
    }
}

/// The crypto provider of server engines: tether's ring provider with [`CookieHmac`].
pub(crate) fn engine_provider() -> dimpl::crypto::CryptoProvider {
    let mut p = super::crypto::provider();
    p.hmac_provider = &COOKIE_HMAC;
    p
}
