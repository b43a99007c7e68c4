//! The sans-IO DTLS session.
//!
//! # Driving a session
//!
//! 1. Create it with [`Session::client`] or [`Session::server`], passing `now`. The handshake
//!    deadline is `now + handshake_timeout`. A client's first flight (its ClientHello) is ready
//!    at once.
//! 2. Loop:
//!    - send every datagram [`poll_datagram`](Session::poll_datagram) (or
//!      [`pop_datagram`](Session::pop_datagram)) gives, each as one UDP datagram, until it
//!      returns `None`;
//!    - pass every datagram received from the peer, whole, to
//!      [`handle_datagram`](Session::handle_datagram);
//!    - at [`poll_timeout`](Session::poll_timeout), call
//!      [`handle_timeout`](Session::handle_timeout): it retransmits lost flights (new datagrams
//!      to send) and fails the handshake at its deadline;
//!    - [`poll_event`](Session::poll_event) tells when the handshake completed and the peer is
//!      verified ([`Event::Connected`]) and when the peer sent close_notify
//!      ([`Event::PeerClosed`]).
//! 3. Once connected: [`send`](Session::send) turns one message into one record (refused if it
//!    does not fit the MTU, see [`max_send_size`](Session::max_send_size)), [`recv`](Session::recv)
//!    returns one received record, [`close`](Session::close) queues close_notify.
//!
//! Time only moves forward: every `now` must be at or after the previous one (an earlier one is
//! taken as the latest seen).
//!
//! DTLS runs over an unreliable transport: datagrams the engine cannot use (garbage, replays,
//! records of an old epoch) are dropped without failing the session; application records may be
//! lost, reordered or (never: replays are dropped) duplicated, so protocols over it retry.
//!
//! A session that fails stays failed: every later call returns the same error, and any alert it
//! queued is still returned by `poll_datagram`.
//!
//! # Alerts without protection
//!
//! Once a DTLS 1.3 handshake has keys, a fatal alert must come encrypted: a plaintext one is
//! ignored (RFC 9147), as anyone who can send a datagram could forge it. A server that refuses
//! a client's certificate may still send one (dimpl does: it has no call to seal an alert), and
//! the client, connected in its own eyes after its last flight, then hears nothing more. A
//! client session keeps the last such alert it ignored ([`Session::unauthenticated_alert`],
//! forgotten when the peer's data arrives after it): a handshake that then times out fails with
//! [`HandshakeError::UnauthenticatedAlert`] instead of a bare timeout, and the socket's reads
//! that time out say the same, so that a refused device can tell why.
//!
//! # Time
//!
//! tether passes time as [`Instant`] (from the driver's origin); dimpl wants
//! `std::time::Instant`s. The session maps one onto the other with a base pair taken at
//! creation: `std_base` (the only clock read, `std::time::Instant::now()`, used as an arbitrary
//! origin) and the `now` passed to the constructor; tether instant `t` becomes
//! `std_base + (t - base)`, and back. dimpl compares and subtracts instants only, so what it
//! does depends on the instants passed in, never on the real clock.
//!
//! # Memory
//!
//! Datagrams to send and received records wait in queues whose records are freed as soon as
//! they are taken (the queues keep at most four empty slots, about 100 bytes); an established,
//! idle session holds no record buffers besides dimpl's own.
//!
//! The engine writes each datagram and record straight into the buffer that is queued (no
//! copy); buffers come from a small pool per thread ([`recycle`] gives one back once sent or
//! read), so a busy session does not allocate per record. The pool keeps at most
//! [`POOL_BUFFERS`] buffers per thread, whatever the number of sessions.

use alloc::collections::VecDeque;
use alloc::string::ToString;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::time::Duration;

use rustls::time_provider::TimeProvider as _;
use rustls::{CipherSuite, NamedGroup};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use super::DtlsVersion;
use super::config::{Built, ClientConfig, ServerConfig, Verify};
use super::wire::{self, Observed};
use crate::error::{
    Alert, CertificateError, ConfigError, Error, HandshakeError, Timeout, TransportError,
    VersionError,
};
use crate::session::{Event, Recv, Side};
use crate::time::{Instant, PolicyTime};

/// Queue slots kept when a queue empties (a few pointers, so that a session exchanging one
/// record at a time does not allocate its queues for every record); more are given back.
const KEEP_QUEUE: usize = 4;
/// Buffers the per-thread pool keeps (about 90 KB at the default MTU).
pub const POOL_BUFFERS: usize = 64;
/// The smallest buffer the engine writes into (its handshake messages may pass the MTU
/// before it fragments them; it asks for more when it needs more).
const WORK_BUFFER: usize = 2048;
/// Buffers larger than this are not kept in the pool.
const POOL_MAX_BUFFER: usize = 64 * 1024;

std::thread_local! {
    static POOL: core::cell::RefCell<Vec<Vec<u8>>> = const { core::cell::RefCell::new(Vec::new()) };
}

/// A buffer of `len` bytes (contents unspecified) from this thread's pool, or a new one.
fn take_buffer(len: usize) -> Vec<u8> {
    let mut b = POOL
        .try_with(|p| p.borrow_mut().pop())
        .ok()
        .flatten()
        .unwrap_or_default();
    b.resize(len, 0);
    b
}

/// Gives a datagram from [`Session::pop_datagram`] or a record from
/// [`Session::recv_owned`] back, once sent or read, for the sessions of this thread to reuse
/// (optional: a buffer not given back is simply freed).
pub fn recycle(buf: Vec<u8>) {
    if buf.capacity() < WORK_BUFFER / 2 || buf.capacity() > POOL_MAX_BUFFER {
        return;
    }
    let _ = POOL.try_with(|p| {
        if let Ok(mut p) = p.try_borrow_mut()
            && p.len() < POOL_BUFFERS
        {
            p.push(buf);
        }
    });
}

/// Where an output of the engine is.
enum Place {
    /// (offset, length) in the work buffer.
    At(usize, usize),
    /// Not in the work buffer (never seen: dimpl writes into the buffer it is given).
    Owned(Vec<u8>),
}

impl Place {
    /// The output as its own buffer: the work buffer itself when the output is in it (a fresh
    /// one of `size` bytes takes its place for the next output).
    fn take(self, work: &mut Vec<u8>, size: usize) -> Vec<u8> {
        match self {
            Place::At(off, len) => {
                let mut d = core::mem::replace(work, take_buffer(size));
                if off != 0 {
                    d.copy_within(off..off + len, 0);
                }
                d.truncate(len);
                d
            }
            Place::Owned(d) => d,
        }
    }
}

/// A retransmission timer further out than this is dimpl's "idle" timer: no deadline.
const IDLE: Duration = Duration::from_secs(24 * 60 * 60);

/// How the peer's certificate is verified.
#[derive(Debug)]
enum Peer {
    /// A server, verified for this name.
    Server {
        verify: Arc<Verify>,
        name: ServerName<'static>,
    },
    /// A client with a required certificate.
    Client(Arc<Verify>),
    /// A client that is not asked for a certificate.
    AnonymousClient,
}

/// One DTLS connection, sans I/O. See the [module docs](self) for how to drive it.
pub struct Session {
    dtls: dimpl::Dtls,
    side: Side,
    peer: Peer,
    std_base: std::time::Instant,
    base: Instant,
    last_now: Instant,
    started: Instant,
    deadline: Option<Instant>,
    retransmit: Option<Instant>,
    mtu: usize,
    versions: (DtlsVersion, DtlsVersion),
    out: VecDeque<Vec<u8>>,
    rx: VecDeque<Vec<u8>>,
    /// Application records that arrived before the handshake completed with a verified peer.
    held: Vec<Vec<u8>>,
    peer_certificate: Option<CertificateDer<'static>>,
    verified: bool,
    version: Option<DtlsVersion>,
    observed: Observed,
    /// Highest epoch-0 sequence number sent, for an unprotected alert after it.
    epoch0_sequence: Option<u64>,
    /// A client's: the last plaintext fatal alert the engine ignored, until the peer's data
    /// arrives after it (see the module docs).
    unauthenticated_alert: Option<Alert>,
    handshake_duration: Option<Duration>,
    error: Option<Error>,
    /// dimpl panicked: never call it again.
    poisoned: bool,
    connected: bool,
    connected_event: bool,
    peer_closed: bool,
    peer_closed_event: bool,
    close_requested: bool,
    close_sent: bool,
}

impl core::fmt::Debug for Session {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("dtls::Session")
            .field("side", &self.side)
            .field("version", &self.version)
            .field("connected", &self.connected)
            .field("peer_closed", &self.peer_closed)
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

/// Runs a dimpl call, turning a panic (a bug in the engine, maybe reached by peer input) into a
/// session error: the core never panics on peer input.
fn guarded<R>(f: impl FnOnce() -> R) -> Result<R, Error> {
    std::panic::catch_unwind(core::panic::AssertUnwindSafe(f)).map_err(|_| {
        Error::Protocol(
            "the DTLS engine (dimpl) failed internally on this connection; it is closed".into(),
        )
    })
}

/// One output of dimpl, owned (its outputs borrow the poll buffer).
enum Out {
    Packet(Place),
    Grow(usize),
    Timeout(std::time::Instant),
    Connected,
    PeerCert(Vec<u8>),
    Data(Place),
    CloseNotify,
    Other,
}

impl Session {
    /// A client session connecting to `server_name` (a DNS name or an IP address), which the
    /// server's certificate must name (with CA roots). dimpl sends no SNI.
    pub fn client(
        config: &ClientConfig,
        server_name: &str,
        now: Instant,
    ) -> Result<Session, Error> {
        let name = ServerName::try_from(server_name)
            .map_err(|_| ConfigError::BadServerName(server_name.to_string()))?
            .to_owned();
        let built = &config.built;
        let std_base = std::time::Instant::now();
        let dtls = guarded(|| {
            let mut d = new_dimpl(built, std_base);
            d.set_active(true);
            d
        })?;
        let mut s = Session::new(
            dtls,
            Side::Client,
            Peer::Server {
                verify: config.verify.clone(),
                name,
            },
            built,
            std_base,
            now,
        );
        // The client starts its handshake (queues the ClientHello) on its first timeout.
        s.run(|d, t| d.handle_timeout(t));
        s.check()?;
        Ok(s)
    }

    /// A server session, for one client.
    pub fn server(config: &ServerConfig, now: Instant) -> Result<Session, Error> {
        let built = &config.built;
        let std_base = std::time::Instant::now();
        let dtls = guarded(|| new_dimpl(built, std_base))?;
        let peer = match &config.verify {
            Some(v) => Peer::Client(v.clone()),
            None => Peer::AnonymousClient,
        };
        let mut s = Session::new(dtls, Side::Server, peer, built, std_base, now);
        s.run(|d, t| d.handle_timeout(t));
        s.check()?;
        Ok(s)
    }

    fn new(
        dtls: dimpl::Dtls,
        side: Side,
        peer: Peer,
        built: &Built,
        std_base: std::time::Instant,
        now: Instant,
    ) -> Session {
        Session {
            dtls,
            side,
            peer,
            std_base,
            base: now,
            last_now: now,
            started: now,
            deadline: Some(now + built.handshake_timeout),
            retransmit: None,
            mtu: built.mtu,
            versions: built.versions,
            out: VecDeque::new(),
            rx: VecDeque::new(),
            held: Vec::new(),
            peer_certificate: None,
            verified: false,
            version: None,
            observed: Observed::default(),
            epoch0_sequence: None,
            unauthenticated_alert: None,
            handshake_duration: None,
            error: None,
            poisoned: false,
            connected: false,
            connected_event: false,
            peer_closed: false,
            peer_closed_event: false,
            close_requested: false,
            close_sent: false,
        }
    }

    /// Which side this session is.
    pub fn side(&self) -> Side {
        self.side
    }

    fn std_at(&self, t: Instant) -> std::time::Instant {
        self.std_base + t.saturating_duration_since(self.base)
    }

    /// Rounded up to the next microsecond: a timer reported back at this instant is due.
    fn tether_at(&self, t: std::time::Instant) -> Instant {
        let d = t.saturating_duration_since(self.std_base);
        let up = if d.subsec_nanos().is_multiple_of(1000) {
            0
        } else {
            1
        };
        self.base
            + Duration::from_micros(
                u64::try_from(d.as_micros())
                    .unwrap_or(u64::MAX)
                    .saturating_add(up),
            )
    }

    fn check(&self) -> Result<(), Error> {
        match &self.error {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    /// Runs one dimpl mutation at the latest `now`, then collects everything it produced.
    fn run(
        &mut self,
        f: impl FnOnce(&mut dimpl::Dtls, std::time::Instant) -> Result<(), dimpl::Error>,
    ) {
        if self.poisoned || self.error.is_some() {
            return;
        }
        let t = self.std_at(self.last_now);
        match guarded(|| f(&mut self.dtls, t)) {
            Ok(Ok(())) => self.drain(),
            Ok(Err(e)) => {
                let err = self.translate(e);
                self.fail(err);
                // dimpl may have queued an alert for the peer.
                self.drain();
            }
            Err(e) => {
                self.poisoned = true;
                self.fail(e);
            }
        }
    }

    fn poll_one(&mut self, buf: &mut [u8]) -> Result<Out, Error> {
        // The engine writes into `buf` and returns a part of it: where (no copy).
        let base = buf.as_ptr_range();
        let place = move |p: &[u8]| {
            let r = p.as_ptr_range();
            if r.start >= base.start && r.end <= base.end {
                Place::At(r.start as usize - base.start as usize, p.len())
            } else {
                Place::Owned(p.to_vec())
            }
        };
        guarded(|| match self.dtls.poll_output(buf) {
            dimpl::Output::Packet(p) => Out::Packet(place(p)),
            dimpl::Output::BufferTooSmall { needed } => Out::Grow(needed),
            dimpl::Output::Timeout(t) => Out::Timeout(t),
            dimpl::Output::Connected => Out::Connected,
            dimpl::Output::PeerCert(c) => Out::PeerCert(c.to_vec()),
            dimpl::Output::ApplicationData(d) => Out::Data(place(d)),
            dimpl::Output::CloseNotify => Out::CloseNotify,
            _ => Out::Other,
        })
    }

    /// Collects dimpl's output until its next timer. After a failure only datagrams (its alert)
    /// are kept; after a verification failure nothing more is.
    fn drain(&mut self) {
        // The engine writes into a pooled buffer, which becomes the queued datagram or record.
        let mut size = self.mtu.max(WORK_BUFFER);
        let mut work = take_buffer(size);
        self.drain_into(&mut work, &mut size);
        recycle(work);
    }

    fn drain_into(&mut self, work: &mut Vec<u8>, size: &mut usize) {
        for _ in 0..100_000 {
            if self.poisoned {
                return;
            }
            let out = match self.poll_one(work) {
                Ok(o) => o,
                Err(e) => {
                    self.poisoned = true;
                    self.fail(e);
                    return;
                }
            };
            let failed = self.error.is_some();
            match out {
                Out::Timeout(t) => {
                    let t = self.tether_at(t);
                    self.retransmit =
                        (t.saturating_duration_since(self.last_now) < IDLE).then_some(t);
                    return;
                }
                Out::Grow(n) => {
                    *size = n.max(*size);
                    work.resize(*size, 0);
                }
                Out::Packet(place) => {
                    let p = place.take(work, *size);
                    if let Some(seq) = wire::max_epoch0_sequence(&p) {
                        self.epoch0_sequence =
                            Some(self.epoch0_sequence.map_or(seq, |s| s.max(seq)));
                    }
                    if self.side == Side::Server && !self.connected {
                        wire::observe(&p, &mut self.observed);
                    }
                    self.out.push_back(p);
                }
                _ if failed => {}
                Out::PeerCert(der) => {
                    if let Err(e) = self.verify_peer(der) {
                        // Nothing the engine produced after this certificate may leave: not
                        // our next flight (it would complete the handshake for the peer), not
                        // its data. Tell the peer why, unprotected (best effort).
                        self.out.clear();
                        self.queue_alert(alert_for(&e));
                        self.fail(e);
                        self.poisoned = true;
                        return;
                    }
                }
                Out::Connected => self.on_connected(),
                Out::Data(place) => {
                    let d = place.take(work, *size);
                    if self.connected {
                        // Authenticated data from the peer: an alert before it was not its
                        // last word.
                        self.unauthenticated_alert = None;
                        if !d.is_empty() {
                            self.rx.push_back(d);
                        }
                    } else {
                        // Never before the peer is verified and the handshake complete.
                        self.held.push(d);
                    }
                }
                Out::CloseNotify => {
                    self.peer_closed = true;
                    self.peer_closed_event = true;
                }
                Out::Other => {}
            }
        }
        self.fail(Error::Protocol("the DTLS engine did not settle".into()));
        self.poisoned = true;
    }

    fn verify_peer(&mut self, der: Vec<u8>) -> Result<(), Error> {
        let leaf = CertificateDer::from(der);
        self.verified = false;
        match &self.peer {
            Peer::Server { verify, name } => {
                let now = wall_now(verify)?;
                crate::trust::verify_server_cert(
                    &verify.trust,
                    &verify.algorithms,
                    &verify.time,
                    &leaf,
                    &verify.intermediates,
                    name,
                    now,
                )?;
            }
            Peer::Client(verify) => {
                let now = wall_now(verify)?;
                crate::trust::verify_client_cert(
                    &verify.trust,
                    &verify.algorithms,
                    &verify.time,
                    &leaf,
                    &verify.intermediates,
                    now,
                )?;
            }
            // Not asked for, so not relied on: keep it for show only.
            Peer::AnonymousClient => {}
        }
        self.peer_certificate = Some(leaf);
        self.verified = true;
        Ok(())
    }

    fn on_connected(&mut self) {
        if self.connected {
            return;
        }
        let needs_certificate = !matches!(self.peer, Peer::AnonymousClient);
        if needs_certificate && !self.verified {
            // dimpl always reports the certificate first; if it ever did not, refuse.
            self.out.clear();
            self.fail(Error::Certificate(CertificateError::Missing));
            self.poisoned = true;
            return;
        }
        self.connected = true;
        self.connected_event = true;
        self.deadline = None;
        self.handshake_duration = Some(self.last_now.saturating_duration_since(self.started));
        self.version = self
            .dtls
            .protocol_version()
            .and_then(DtlsVersion::from_dimpl);
        for d in core::mem::take(&mut self.held) {
            if !d.is_empty() {
                self.rx.push_back(d);
            }
        }
    }

    /// A server whose version range and the client's offer do not meet says so (alert
    /// protocol_version) instead of letting the client time out; dimpl drops such a
    /// ClientHello silently.
    fn check_offered_versions(&mut self, datagram: &[u8]) {
        let Some(offered) = wire::client_hello_versions(datagram) else {
            return;
        };
        let (min, max) = self.versions;
        let offered: Vec<DtlsVersion> = offered
            .into_iter()
            .filter_map(|v| DtlsVersion::from_dimpl(dimpl::ProtocolVersion::from_u16(v)))
            .collect();
        if offered.iter().any(|v| (min..=max).contains(v)) {
            return;
        }
        let offered = match offered.as_slice() {
            [] => "no DTLS version tether knows".to_string(),
            list => list
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(" and "),
        };
        self.queue_alert(70);
        self.fail(Error::Version(VersionError::NotAllowed(alloc::format!(
            "the client offers {offered}, and this server accepts {min} to {max}"
        ))));
        self.poisoned = true;
    }

    fn queue_alert(&mut self, description: u8) {
        let seq = self.epoch0_sequence.map_or(0, |s| s + 1);
        self.out.push_back(wire::plaintext_alert(seq, description));
    }

    fn fail(&mut self, err: Error) {
        if self.error.is_none() {
            self.error = Some(err);
        }
        self.deadline = None;
        self.retransmit = None;
        self.rx = VecDeque::new();
        self.held = Vec::new();
    }

    fn translate(&self, e: dimpl::Error) -> Error {
        translate(e, self.connected)
    }

    /// Passes one datagram received from the peer (whole: never a part, never two).
    ///
    /// Garbage, replayed and out-of-window datagrams are dropped without an error. Fails when
    /// the peer breaks the protocol, sends a fatal alert, or fails verification.
    pub fn handle_datagram(&mut self, now: Instant, datagram: &[u8]) -> Result<(), Error> {
        if self.connected && self.error.is_none() && self.retransmit.is_none_or(|t| t > now) {
            // Established and no timer due: only time moves (dimpl's timers and its clock are
            // for the handshake, retransmissions and acknowledgements, which `retransmit`
            // tracks); saves an engine round per record.
            if now > self.last_now {
                self.last_now = now;
            }
        } else {
            self.handle_timeout(now)?;
        }
        if datagram.is_empty() || self.peer_closed {
            // RFC 9147 5.10 / RFC 6347 4.2.7: nothing after close_notify is read.
            return Ok(());
        }
        if self.side == Side::Client && !self.connected {
            // dimpl's version-sensing client fails on the first datagram it cannot place
            // (anyone could send one): until the version is known, pass only what can be the
            // server's first answer (HelloVerifyRequest or ServerHello).
            if self.dtls.protocol_version().is_none() && !wire::may_be_first_answer(datagram) {
                // Except a fatal alert (unauthenticated, as every alert before encryption).
                if let Some(description) = wire::plaintext_fatal_alert(datagram) {
                    let err = translate(
                        dimpl::Error::SecurityError(dimpl::SecurityError::FatalAlert {
                            description,
                        }),
                        false,
                    );
                    self.fail(err);
                    self.poisoned = true;
                }
                return self.check();
            }
            wire::observe(datagram, &mut self.observed);
        }
        if self.side == Side::Server && !self.connected {
            self.check_offered_versions(datagram);
            self.check()?;
        }
        self.run(|d, _| d.handle_packet(datagram));
        self.check()?;
        if self.side == Side::Client
            && let Some(description) = wire::plaintext_fatal_alert(datagram)
        {
            // The engine ignored it (it would have failed the session otherwise).
            self.unauthenticated_alert = Some(Alert(description));
        }
        Ok(())
    }

    /// A client's: the last fatal alert the peer sent without protection where DTLS requires
    /// one, which the session ignored (anyone on the path could have sent it); `None` again once
    /// the peer's data arrives after it. A DTLS 1.3 server that refuses the client's
    /// certificate may say so only this way: when the connection then goes silent, this is the
    /// likely reason. See the [module docs](self).
    pub fn unauthenticated_alert(&self) -> Option<Alert> {
        self.unauthenticated_alert
    }

    /// The next instant at which [`handle_timeout`](Self::handle_timeout) must be called (a
    /// retransmission, or the handshake deadline), if any.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.error.is_some() {
            return None;
        }
        match (self.deadline, self.retransmit) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Moves time to `now`: retransmits flights whose timer passed (new datagrams to send) and
    /// fails with [`Timeout::Handshake`] once the handshake deadline has passed.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), Error> {
        self.check()?;
        if now > self.last_now {
            self.last_now = now;
        }
        if let Some(deadline) = self.deadline
            && self.last_now >= deadline
        {
            self.fail(match self.unauthenticated_alert {
                Some(a) => Error::Handshake(HandshakeError::UnauthenticatedAlert(a)),
                None => Error::Timeout(Timeout::Handshake),
            });
            return self.check();
        }
        self.run(|d, t| d.handle_timeout(t));
        self.check()
    }

    /// Copies the next datagram to send into `out`; returns its length, or `None` when there is
    /// nothing to send. A datagram never exceeds the MTU; if `out` is smaller than the next one,
    /// fails with [`Error::BufferTooSmall`] and keeps it.
    #[must_use = "the datagram must be sent"]
    pub fn poll_datagram(&mut self, out: &mut [u8]) -> Result<Option<usize>, Error> {
        let Some(d) = self.out.front() else {
            return Ok(None);
        };
        if d.len() > out.len() {
            return Err(Error::BufferTooSmall { needed: d.len() });
        }
        let n = d.len();
        out[..n].copy_from_slice(d);
        if let Some(d) = self.pop_datagram() {
            recycle(d);
        }
        Ok(Some(n))
    }

    /// The next datagram to send, owned (the same queue as [`poll_datagram`](Self::poll_datagram)).
    #[must_use = "the datagram must be sent"]
    pub fn pop_datagram(&mut self) -> Option<Vec<u8>> {
        let d = self.out.pop_front();
        if self.out.is_empty() && self.out.capacity() > KEEP_QUEUE {
            // A flight or a burst is over: give its slots back (a few stay for the next record).
            self.out = VecDeque::new();
        }
        d
    }

    /// Puts datagrams back at the front of the send queue, in order.
    pub(crate) fn requeue(&mut self, datagrams: Vec<Vec<u8>>) {
        for d in datagrams.into_iter().rev() {
            self.out.push_front(d);
        }
    }

    /// True when [`poll_datagram`](Self::poll_datagram) has a datagram to give.
    pub fn wants_transmit(&self) -> bool {
        !self.out.is_empty()
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        if self.connected_event {
            self.connected_event = false;
            return Some(Event::Connected);
        }
        if self.peer_closed_event && self.rx.is_empty() {
            self.peer_closed_event = false;
            return Some(Event::PeerClosed);
        }
        None
    }

    /// True until the handshake has completed with a verified peer.
    pub fn is_handshaking(&self) -> bool {
        !self.connected
    }

    /// True when the session has failed (see [`error`](Self::error)).
    pub fn is_failed(&self) -> bool {
        self.error.is_some()
    }

    /// The error that failed the session, if it failed.
    pub fn error(&self) -> Option<&Error> {
        self.error.as_ref()
    }

    /// True once the peer's close_notify has been received.
    pub fn is_peer_closed(&self) -> bool {
        self.peer_closed
    }

    /// True once close_notify has been queued.
    pub fn is_close_sent(&self) -> bool {
        self.close_sent
    }

    /// The most application data one [`send`](Self::send) takes: what fits one record in one
    /// datagram of the configured MTU (for the negotiated version; before the handshake, for
    /// the version with the larger overhead).
    pub fn max_send_size(&self) -> usize {
        self.mtu
            .saturating_sub(DtlsVersion::record_overhead(self.version))
            .min(16 * 1024)
    }

    /// Encrypts `data` as one record (one datagram to send, from
    /// [`poll_datagram`](Self::poll_datagram)).
    ///
    /// A record is never split or truncated: data longer than
    /// [`max_send_size`](Self::max_send_size) fails with a transport error that says so, and
    /// nothing is sent.
    pub fn send(&mut self, data: &[u8]) -> Result<(), Error> {
        self.check()?;
        if !self.connected {
            return Err(Error::Handshake(HandshakeError::Other(
                "the DTLS handshake has not completed; drive it before sending".into(),
            )));
        }
        if self.close_requested {
            return Err(Error::Closed);
        }
        let max = self.max_send_size();
        if data.len() > max {
            return Err(Error::Transport(TransportError::Other(alloc::format!(
                "message too long for one datagram: {} bytes, and at most {max} fit one DTLS \
                 record within the path MTU of {} bytes; DTLS never splits or truncates a \
                 record: send smaller messages (or raise the MTU if the path allows it)",
                data.len(),
                self.mtu
            ))));
        }
        if data.is_empty() {
            return Ok(());
        }
        self.run(|d, _| d.send_application_data(data).map(|_| ()));
        self.check()
    }

    /// The next received record into `buf`: [`Recv::Data`] with its length, [`Recv::Pending`]
    /// when none is waiting, [`Recv::Closed`] after the peer's close_notify once every record
    /// was read. A record longer than `buf` fails with [`Error::BufferTooSmall`] and is kept.
    pub fn recv(&mut self, buf: &mut [u8]) -> Result<Recv, Error> {
        self.check()?;
        if let Some(d) = self.rx.front() {
            if d.len() > buf.len() {
                return Err(Error::BufferTooSmall { needed: d.len() });
            }
            let n = d.len();
            buf[..n].copy_from_slice(d);
            if let Some(d) = self.pop_record() {
                recycle(d);
            }
            return Ok(Recv::Data(n));
        }
        if self.peer_closed {
            return Ok(Recv::Closed);
        }
        Ok(Recv::Pending)
    }

    /// The next received record, owned (no copy): `Ok(None)` when none is waiting (then
    /// [`is_peer_closed`](Self::is_peer_closed) tells whether more may come). Give the buffer
    /// back with [`recycle`] once read.
    pub fn recv_owned(&mut self) -> Result<Option<Vec<u8>>, Error> {
        self.check()?;
        Ok(self.pop_record())
    }

    fn pop_record(&mut self) -> Option<Vec<u8>> {
        let d = self.rx.pop_front();
        if self.rx.is_empty() && self.rx.capacity() > KEEP_QUEUE {
            self.rx = VecDeque::new();
        }
        d
    }

    /// Length of the next received record, if one is waiting.
    pub fn next_record_len(&self) -> Option<usize> {
        self.rx.front().map(Vec::len)
    }

    /// Queues close_notify once connected (send it with [`poll_datagram`](Self::poll_datagram));
    /// during the handshake, abandons it (there is no authenticated channel to send on).
    pub fn close(&mut self) {
        if self.close_requested || self.error.is_some() {
            return;
        }
        self.close_requested = true;
        self.run(|d, _| d.close());
        self.close_sent = self.connected && self.error.is_none();
        if !self.connected && self.error.is_none() {
            self.fail(Error::Closed);
        }
    }

    /// The negotiated DTLS version (known once connected).
    pub fn version(&self) -> Option<DtlsVersion> {
        self.version
    }

    /// The negotiated cipher suite, as seen in the ServerHello (known once connected).
    pub fn cipher_suite(&self) -> Option<CipherSuite> {
        self.connected
            .then_some(self.observed.suite)
            .flatten()
            .map(CipherSuite::from)
    }

    /// The negotiated key-exchange group, as seen in the handshake (known once connected).
    pub fn kx_group(&self) -> Option<NamedGroup> {
        self.connected
            .then_some(self.observed.group)
            .flatten()
            .map(NamedGroup::from)
    }

    /// The peer's leaf certificate, once received and verified (DTLS peers here send no
    /// chain; see the [module docs](super)).
    pub fn peer_certificate(&self) -> Option<&CertificateDer<'static>> {
        self.peer_certificate.as_ref()
    }

    /// How long the handshake took, from creation to completion, measured with the `now`
    /// values passed in.
    pub fn handshake_duration(&self) -> Option<Duration> {
        self.handshake_duration
    }
}

fn new_dimpl(built: &Built, now: std::time::Instant) -> dimpl::Dtls {
    let (min, max) = built.versions;
    let config = built.dimpl.clone();
    let cert = built.certificate.clone();
    match (min, max) {
        (DtlsVersion::Dtls12, DtlsVersion::Dtls12) => dimpl::Dtls::new_12(config, cert, now),
        (DtlsVersion::Dtls13, DtlsVersion::Dtls13) => dimpl::Dtls::new_13(config, cert, now),
        // Both: a client sends a ClientHello for either, a server follows the client's offer.
        _ => dimpl::Dtls::new_auto(config, cert, now),
    }
}

/// The wall-clock time to check validity at, from the config's time policy (as rustls asks
/// its time provider for TLS).
fn wall_now(verify: &Verify) -> Result<UnixTime, Error> {
    PolicyTime(verify.time.clone())
        .current_time()
        .ok_or(Error::Certificate(CertificateError::NoWallClock))
}

/// The alert that tells the peer why we refused it.
fn alert_for(e: &Error) -> u8 {
    match e {
        Error::Certificate(CertificateError::UnknownIssuer) => 48, // unknown_ca
        Error::Certificate(CertificateError::Expired) => 45,       // certificate_expired
        Error::Certificate(CertificateError::Revoked) => 44,       // certificate_revoked
        Error::Certificate(CertificateError::Missing) => 116,      // certificate_required
        Error::Certificate(_) | Error::PinMismatch { .. } | Error::TofuKeyChanged { .. } => 42,
        _ => 40, // handshake_failure
    }
}

/// Maps dimpl's errors onto tether's categories.
fn translate(e: dimpl::Error, connected: bool) -> Error {
    use dimpl::SecurityError as S;
    use dimpl::{CertificateError as C, Error as D};
    match e {
        D::Timeout(_) => Error::Timeout(Timeout::Handshake),
        D::SecurityError(S::FatalAlert { description: 70 }) => {
            Error::Version(VersionError::PeerRefused)
        }
        D::SecurityError(S::FatalAlert { description }) => {
            Error::Handshake(HandshakeError::AlertReceived(Alert(description)))
        }
        D::SecurityError(
            S::NoMutuallyAcceptableCipherSuite
            | S::NoCommonCipherSuite
            | S::NoCommonKeyExchangeGroup,
        ) => Error::Handshake(HandshakeError::NoCommonAlgorithms(alloc::format!("{e}"))),
        D::SecurityError(
            S::UnsupportedServerVersion(_)
            | S::UnsupportedClientVersion(_)
            | S::ServerDidNotNegotiateDtls13
            | S::ClientHelloMissingDtls13SupportedVersions
            | S::HrrDidNotSelectDtls13,
        ) => Error::Version(VersionError::NotAllowed(alloc::format!("{e}"))),
        D::CertificateError(C::NoClientCertificateReceived | C::NoServerCertificateReceived) => {
            Error::Certificate(CertificateError::Missing)
        }
        D::CertificateError(C::ParseFailed) => Error::Certificate(CertificateError::BadEncoding),
        D::CertificateError(other) => {
            Error::Certificate(CertificateError::Other(alloc::format!("{other}")))
        }
        D::CryptoError(dimpl::CryptoError::SignatureVerificationFailed { .. }) => {
            Error::Certificate(CertificateError::BadSignature)
        }
        D::ConnectionClosed => Error::Closed,
        other if connected => Error::Protocol(alloc::format!("{other}")),
        other => Error::Handshake(HandshakeError::Other(alloc::format!("DTLS: {other}"))),
    }
}
