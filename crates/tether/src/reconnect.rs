//! Keeping a link up: exponential backoff with jitter, and (with `std`) a client that
//! reconnects by itself and resumes its TLS session when it does.
//!
//! A device holds one TLS link to its gateway for days. Gateways restart, networks drop, NATs
//! forget; the device must come back without a thundering herd (every device of a fleet
//! retrying in the same second after a gateway restart) and without paying a full handshake
//! each time.
//!
//! - [`Backoff`] (no_std): the delay before attempt *n* is drawn at random from the upper half
//!   of `min(max, initial × 2ⁿ)` ("equal jitter"), so retries spread out but never come
//!   sooner than half the nominal delay. The caller supplies the random number (a hardware
//!   RNG on an MCU), or uses [`Backoff::next_delay_random`] (ring's system RNG).
//! - [`refused`]: the peer refusing us by policy after checking who we are (`access_denied`
//!   from a gateway whose allow-list does not name the device, an alert about our
//!   certificate). Retryable, but [`Reconnecting`] then waits the backoff's longest delay at
//!   once ([`Backoff::next_delay_after_refusal`]): a refused fleet does not cost its gateway a
//!   full handshake per device at every short step of a growing backoff.
//! - [`retryable`]: which [`Error`]s a reconnect can cure (transport failures, timeouts, a
//!   closed or truncated connection, a failed handshake) and which it cannot (a rejected
//!   certificate, a pin or TOFU mismatch, no common TLS version, a bad configuration: those
//!   are returned at once, never retried into a loop).
//! - [`Reconnecting`] (feature `std`): a TCP + TLS client for one endpoint. [`Reconnecting::call`]
//!   runs an exchange on the current connection; when the connection fails with a retryable
//!   error it reconnects (with backoff) and runs the exchange again on the new one. Its
//!   [`ClientConfig`](crate::ClientConfig) keeps the session cache, so every reconnect offers the ticket of the
//!   last session: a gateway that restarted with the same ticket keys resumes it. The backoff
//!   starts again from its initial delay only once a connection has carried an exchange (or
//!   stayed up for the backoff's maximum), not when a handshake completes: a TLS 1.3 server
//!   refuses a client after the client's side of the handshake is done (another CA, a device
//!   taken off an allow-list), and such a device must back off like any other (the longest
//!   delay when it was [`refused`]), and give up after
//!   [`max_attempts`](Reconnecting::max_attempts).
//!
//! ```no_run
//! # fn main() -> Result<(), tether::Error> {
//! use std::io::{Read as _, Write as _};
//! use std::time::Duration;
//! use tether::reconnect::Reconnecting;
//! use tether::{ClientConfig, Trust};
//!
//! let config = ClientConfig::builder(Trust::from_pem(&std::fs::read("ca.pem").unwrap())?).build()?;
//! let mut link = Reconnecting::new("gateway.example:8081", config)?
//!     .backoff(Duration::from_millis(200), Duration::from_secs(30));
//! let reply = link.call(|socket| {
//!     socket.write_all(b"ping")?;
//!     let mut buf = [0u8; 4];
//!     let mut got = 0;
//!     while got < buf.len() {
//!         got += socket.read(&mut buf[got..])?;
//!     }
//!     Ok(buf)
//! })?;
//! println!("{reply:?} over connection {} (resumed: {})",
//!     link.stats().connects, link.stats().last_resumed);
//! # Ok(()) }
//! ```
//!
//! An exchange can run twice: once on the connection that failed (its request may or may not
//! have reached the server) and again on the new one. Requests must therefore be safe to
//! repeat (at-least-once delivery), as with any protocol over a link that can fail.

use core::time::Duration;

use crate::Error;

/// Exponential backoff with jitter. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    attempts: u32,
}

impl Backoff {
    /// Delays start near `initial` and double per failed attempt, up to `max`.
    /// A `max` below `initial` is raised to `initial`.
    pub const fn new(initial: Duration, max: Duration) -> Backoff {
        let max = if max.as_nanos() < initial.as_nanos() {
            initial
        } else {
            max
        };
        Backoff {
            initial,
            max,
            attempts: 0,
        }
    }

    /// The longest delay.
    pub fn max(&self) -> Duration {
        self.max
    }

    /// The nominal (jitter-free) delay of the next attempt: `min(max, initial × 2ⁿ)`.
    pub fn nominal(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempts.min(31)).unwrap_or(u32::MAX);
        self.initial
            .checked_mul(factor)
            .map_or(self.max, |d| d.min(self.max))
    }

    /// The delay before the next attempt, drawn with `random` from
    /// `[nominal / 2, nominal]`; counts the attempt.
    pub fn next_delay(&mut self, random: u32) -> Duration {
        self.draw(self.nominal(), random)
    }

    /// The delay before the next attempt after the peer refused us by policy ([`refused`]):
    /// drawn with `random` from the upper half of the longest delay, whatever the attempt;
    /// counts the attempt. Trying again sooner would not change the peer's mind, and a fleet
    /// refused at once (a revoked batch of devices) would cost the gateway a full handshake
    /// per device at every short step of a growing backoff.
    pub fn next_delay_after_refusal(&mut self, random: u32) -> Duration {
        self.draw(self.max, random)
    }

    fn draw(&mut self, nominal: Duration, random: u32) -> Duration {
        self.attempts = self.attempts.saturating_add(1);
        let half = nominal / 2;
        let spread = u64::try_from((nominal - half).as_micros()).unwrap_or(u64::MAX);
        let jitter = if spread == 0 {
            0
        } else {
            u64::from(random) % (spread + 1)
        };
        half + Duration::from_micros(jitter)
    }

    /// Like [`next_delay`](Self::next_delay) with a random number from ring's system RNG
    /// (on an MCU: the getrandom backend the port supplies). Without randomness the delay
    /// is the nominal one.
    pub fn next_delay_random(&mut self) -> Duration {
        match random_u32() {
            Some(r) => self.next_delay(r),
            None => {
                let d = self.nominal();
                self.attempts = self.attempts.saturating_add(1);
                d
            }
        }
    }

    /// Failed attempts since the last [`reset`](Self::reset).
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Starts over (after a connection succeeded).
    pub fn reset(&mut self) {
        self.attempts = 0;
    }
}

/// A random number from ring's system RNG, if it has one.
fn random_u32() -> Option<u32> {
    use ring::rand::SecureRandom as _;
    let mut bytes = [0u8; 4];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .ok()
        .map(|()| u32::from_le_bytes(bytes))
}

impl Default for Backoff {
    /// 250 ms doubling up to 60 s.
    fn default() -> Backoff {
        Backoff::new(Duration::from_millis(250), Duration::from_secs(60))
    }
}

/// Whether reconnecting can cure `error`.
///
/// Retryable: transport failures, timeouts, a connection closed or cut short, a handshake that
/// failed (the peer may have been restarting), a protocol error. Not retryable: the peer's
/// certificate rejected, a pin or TOFU mismatch, no common TLS version, a bad configuration,
/// a caller buffer too small: the same attempt would fail the same way, and a device must
/// report those, not hammer the server.
pub fn retryable(error: &Error) -> bool {
    match error {
        Error::Transport(_)
        | Error::Timeout(_)
        | Error::Truncated
        | Error::Closed
        | Error::Handshake(_)
        | Error::Protocol(_) => true,
        Error::Certificate(_)
        | Error::PinMismatch { .. }
        | Error::TofuKeyChanged { .. }
        | Error::Version(_)
        | Error::Config(_)
        | Error::BufferTooSmall { .. } => false,
    }
}

/// Whether `error` is the peer refusing us by policy after checking who we are: a fatal alert
/// about our certificate (`bad_certificate`, `unsupported_certificate`, `certificate_revoked`,
/// `certificate_expired`, `certificate_unknown`, `unknown_ca`), `access_denied` (a device its
/// gateway's allow-list does not name) or `certificate_required`; also such an alert sent
/// without protection after which the peer went silent (a DTLS 1.3 server that refused our
/// certificate, [`HandshakeError::UnauthenticatedAlert`](crate::error::HandshakeError::UnauthenticatedAlert)).
///
/// Such an error is [`retryable`] (the peer's operator may admit the device, a renewed
/// certificate may be installed), but only slowly:
/// [`Backoff::next_delay_after_refusal`] waits the longest delay.
pub fn refused(error: &Error) -> bool {
    matches!(
        error,
        Error::Handshake(
            crate::error::HandshakeError::AlertReceived(a)
                | crate::error::HandshakeError::UnauthenticatedAlert(a)
        ) if matches!(a.0, 42..=46 | 48 | 49 | 116)
    )
}

#[cfg(feature = "std")]
pub use self::client::{Reconnecting, Stats};

#[cfg(feature = "std")]
mod client {
    use alloc::string::{String, ToString as _};
    use core::time::Duration;

    use super::{Backoff, refused, retryable};
    use crate::error::ConfigError;
    use crate::net::{TcpTlsSocket, connect_named};
    use crate::{ClientConfig, Error};

    /// Counters of a [`Reconnecting`] client.
    #[derive(Debug, Clone, Default)]
    pub struct Stats {
        /// Connections made (TCP and TLS handshake completed).
        pub connects: u64,
        /// Of those, how many resumed a previous TLS session.
        pub resumed: u64,
        /// Whether the current (or last) connection resumed.
        pub last_resumed: bool,
        /// Attempts that failed (connect, handshake, or an exchange on a live connection).
        pub failures: u64,
        /// The last retryable error seen, for logs.
        pub last_error: Option<Error>,
    }

    /// A TLS client for one endpoint that reconnects with backoff and resumes its session.
    /// See the [module docs](super).
    #[derive(Debug)]
    pub struct Reconnecting {
        addr: String,
        server_name: String,
        config: ClientConfig,
        backoff: Backoff,
        max_attempts: Option<u32>,
        io_timeout: Option<Duration>,
        socket: Option<TcpTlsSocket>,
        /// When the last connection came up.
        up_since: Option<std::time::Instant>,
        stats: Stats,
    }

    impl Reconnecting {
        /// A client for `addr` (`host:port`, `[v6]:port`), verifying the server as `host`.
        /// Nothing is connected until the first [`call`](Self::call) or
        /// [`socket`](Self::socket).
        pub fn new(addr: &str, config: ClientConfig) -> Result<Reconnecting, Error> {
            let host = match addr.rsplit_once(':') {
                Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => host,
                _ => {
                    return Err(Error::Config(ConfigError::BadServerName(alloc::format!(
                        "{addr} (expected HOST:PORT)"
                    ))));
                }
            };
            let host = host.trim_start_matches('[').trim_end_matches(']');
            Ok(Reconnecting {
                addr: addr.to_string(),
                server_name: host.to_string(),
                config,
                backoff: Backoff::default(),
                max_attempts: None,
                io_timeout: None,
                socket: None,
                up_since: None,
                stats: Stats::default(),
            })
        }

        /// Verifies the server as `name` instead of the host of the address.
        pub fn server_name(mut self, name: &str) -> Reconnecting {
            self.server_name = name.to_string();
            self
        }

        /// The backoff between attempts (default 250 ms doubling up to 60 s, with jitter).
        pub fn backoff(mut self, initial: Duration, max: Duration) -> Reconnecting {
            self.backoff = Backoff::new(initial, max);
            self
        }

        /// Gives up after `n` consecutive failed attempts, returning the last error
        /// (default: never gives up on retryable errors).
        pub fn max_attempts(mut self, n: u32) -> Reconnecting {
            self.max_attempts = Some(n.max(1));
            self
        }

        /// Bounds every read and write on a connection (default: none). A silent server is
        /// then a [`Error::Timeout`], which reconnects.
        pub fn io_timeout(mut self, timeout: Duration) -> Reconnecting {
            self.io_timeout = Some(timeout);
            self
        }

        /// The counters.
        pub fn stats(&self) -> &Stats {
            &self.stats
        }

        /// Whether a connection is up (as far as this client knows).
        pub fn is_connected(&self) -> bool {
            self.socket.is_some()
        }

        /// The current connection, connecting first (with backoff) if there is none.
        pub fn socket(&mut self) -> Result<&mut TcpTlsSocket, Error> {
            if self.socket.is_none() {
                let socket = self.connect_with_backoff()?;
                self.socket = Some(socket);
            }
            Ok(self.socket.as_mut().expect("just connected"))
        }

        /// Runs `exchange` on the connection; when it fails with a [retryable](super::retryable)
        /// error, drops the connection, reconnects (with backoff) and runs it again.
        /// Errors that a reconnect cannot cure are returned at once.
        pub fn call<T>(
            &mut self,
            mut exchange: impl FnMut(&mut TcpTlsSocket) -> Result<T, Error>,
        ) -> Result<T, Error> {
            loop {
                let socket = self.socket()?;
                match exchange(socket) {
                    Ok(v) => {
                        // The link works: the next outage starts from the initial delay.
                        self.backoff.reset();
                        return Ok(v);
                    }
                    Err(e) if retryable(&e) => {
                        self.stats.failures += 1;
                        self.stats.last_error = Some(e.clone());
                        // The connection is broken or closed: drop it (no close_notify on a
                        // failed session) and go round again.
                        self.socket = None;
                        if let Some(max) = self.max_attempts
                            && self.backoff.attempts() + 1 >= max
                        {
                            return Err(e);
                        }
                        self.sleep(&e);
                    }
                    Err(e) => {
                        self.socket = None;
                        return Err(e);
                    }
                }
            }
        }

        /// Closes the connection with close_notify (if one is up). The next call reconnects.
        pub fn disconnect(&mut self) -> Result<(), Error> {
            match self.socket.take() {
                Some(mut s) => s.close(),
                None => Ok(()),
            }
        }

        /// Waits before the next attempt: the backoff's next delay, or its longest after a
        /// refusal ([`refused`]).
        fn sleep(&mut self, after: &Error) {
            let delay = if refused(after) {
                let r = super::random_u32().unwrap_or(u32::MAX);
                self.backoff.next_delay_after_refusal(r)
            } else {
                self.backoff.next_delay_random()
            };
            std::thread::sleep(delay);
        }

        fn connect_with_backoff(&mut self) -> Result<TcpTlsSocket, Error> {
            // A connection that stayed up for the longest delay worked: a fresh outage.
            if self
                .up_since
                .take()
                .is_some_and(|t| t.elapsed() >= self.backoff.max())
            {
                self.backoff.reset();
            }
            loop {
                match connect_named(&self.addr, &self.server_name, &self.config) {
                    Ok(mut socket) => {
                        socket.set_io_timeout(self.io_timeout);
                        // Not a reset of the backoff yet: in TLS 1.3 the server may still
                        // refuse this client (see the module docs).
                        self.up_since = Some(std::time::Instant::now());
                        let resumed = socket.session().is_resumed();
                        self.stats.connects += 1;
                        self.stats.resumed += u64::from(resumed);
                        self.stats.last_resumed = resumed;
                        return Ok(socket);
                    }
                    Err(e) if retryable(&e) => {
                        self.stats.failures += 1;
                        self.stats.last_error = Some(e.clone());
                        if let Some(max) = self.max_attempts
                            && self.backoff.attempts() + 1 >= max
                        {
                            return Err(e);
                        }
                        self.sleep(&e);
                    }
                    Err(e) => return Err(e),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_with_jitter_in_the_upper_half() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let nominal = [100, 200, 400, 800, 1000, 1000];
        for want in nominal {
            let want = Duration::from_millis(want);
            assert_eq!(b.nominal(), want);
            let mut probe = b.clone();
            assert_eq!(probe.next_delay(0), want / 2);
            let mut probe = b.clone();
            assert_eq!(probe.next_delay(u32::MAX), {
                let spread = (want - want / 2).as_micros() as u64;
                want / 2 + Duration::from_micros(u64::from(u32::MAX) % (spread + 1))
            });
            let d = b.next_delay_random();
            assert!(
                d >= want / 2 && d <= want,
                "{d:?} outside [{:?}, {want:?}]",
                want / 2
            );
        }
        assert_eq!(b.attempts(), 6);
        b.reset();
        assert_eq!(b.nominal(), Duration::from_millis(100));
    }

    #[test]
    fn a_refusal_waits_the_upper_half_of_the_longest_delay_from_the_first_attempt() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(8));
        assert_eq!(b.next_delay_after_refusal(0), Duration::from_secs(4));
        // The jitter is `random` modulo the spread (in µs), here all of it.
        assert_eq!(
            b.next_delay_after_refusal(4_000_000),
            Duration::from_secs(8)
        );
        assert_eq!(b.attempts(), 2);
        // The attempts count as any others: a later outage goes on from there.
        assert_eq!(b.nominal(), Duration::from_millis(400));
    }

    #[test]
    fn refusals_are_the_alerts_about_who_we_are() {
        use crate::error::{Alert, HandshakeError};
        let alert = |n| Error::Handshake(HandshakeError::AlertReceived(Alert(n)));
        for n in [42, 43, 44, 45, 46, 48, 49, 116] {
            assert!(refused(&alert(n)), "{n}");
            assert!(retryable(&alert(n)), "{n}");
        }
        for n in [40, 50, 80, 112] {
            assert!(!refused(&alert(n)), "{n}");
        }
        // The same alerts sent without protection, then silence (a DTLS 1.3 refusal).
        let silent = |n| Error::Handshake(HandshakeError::UnauthenticatedAlert(Alert(n)));
        assert!(refused(&silent(48)) && retryable(&silent(48)));
        assert!(!refused(&silent(40)));
        assert!(!refused(&Error::Closed));
    }

    #[test]
    fn many_attempts_never_overflow() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(3600));
        for _ in 0..200 {
            assert!(b.next_delay(7) <= Duration::from_secs(3600));
        }
        assert_eq!(b.nominal(), Duration::from_secs(3600));
        let b = Backoff::new(Duration::from_secs(5), Duration::from_secs(1));
        assert_eq!(b.nominal(), Duration::from_secs(5));
    }

    #[test]
    fn only_curable_errors_are_retried() {
        use crate::error::{CertificateError, TransportError};
        assert!(retryable(&Error::Closed));
        assert!(retryable(&Error::Transport(TransportError::Other(
            "x".into()
        ))));
        assert!(!retryable(&Error::Certificate(
            CertificateError::UnknownIssuer
        )));
        assert!(!retryable(&Error::BufferTooSmall { needed: 1 }));
    }
}
