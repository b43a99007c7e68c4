//! Time, passed in: tether's core never reads a clock.
//!
//! Two different clocks matter to a TLS connection:
//! - a **monotonic** clock for deadlines (the handshake timeout): [`Instant`], milliseconds since
//!   any fixed origin the driver chooses (boot, process start). Drivers pass it to every
//!   `Session` call that can move time; it must never go backwards.
//! - a **wall** clock for certificate validity: [`TimePolicy`], set in the configuration. On std
//!   builds it defaults to the system clock; on a device without std there is no default that
//!   verifies anything, so the default is to fail closed with
//!   [`CertificateError::NoWallClock`](crate::error::CertificateError::NoWallClock). A device
//!   without a real-time clock supplies one ([`TimePolicy::Clock`], e.g. from SNTP or an RTC) or
//!   picks [`TimePolicy::IgnoreValidityTime`] by name.

use alloc::sync::Arc;
use core::fmt;
use core::ops::Add;
use core::time::Duration;

use rustls_pki_types::UnixTime;

/// A point on the driver's monotonic clock, from an origin the driver picks (boot, process
/// start), with microsecond resolution. Drivers with a millisecond tick use
/// [`Instant::from_millis`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Instant(u64);

impl Instant {
    /// The origin of the driver's clock.
    pub const ZERO: Instant = Instant(0);

    /// An instant `ms` milliseconds after the origin.
    pub const fn from_millis(ms: u64) -> Instant {
        Instant(ms.saturating_mul(1000))
    }

    /// An instant `us` microseconds after the origin.
    pub const fn from_micros(us: u64) -> Instant {
        Instant(us)
    }

    /// Whole milliseconds since the origin.
    pub const fn as_millis(self) -> u64 {
        self.0 / 1000
    }

    /// Microseconds since the origin.
    pub const fn as_micros(self) -> u64 {
        self.0
    }

    /// The time from `earlier` to `self`, zero if `earlier` is later.
    pub fn saturating_duration_since(self, earlier: Instant) -> Duration {
        Duration::from_micros(self.0.saturating_sub(earlier.0))
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, d: Duration) -> Instant {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        Instant(self.0.saturating_add(us))
    }
}

/// A source of monotonic time for the sockets (the core takes [`Instant`]s directly).
pub trait Clock {
    /// The current instant. Must never go backwards.
    fn now(&self) -> Instant;
}

impl<F: Fn() -> Instant> Clock for F {
    fn now(&self) -> Instant {
        self()
    }
}

/// A wall clock for certificate validity checks.
pub trait WallClock: Send + Sync + fmt::Debug {
    /// Seconds since the Unix epoch, or `None` when the time is not known (yet).
    fn unix_seconds(&self) -> Option<u64>;
}

/// How certificate validity periods are checked.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub enum TimePolicy {
    /// The operating system's clock (std only). The default with std.
    #[cfg(feature = "std")]
    #[cfg_attr(feature = "std", default)]
    System,
    /// A wall clock the application supplies (RTC, SNTP, GPS...).
    Clock(Arc<dyn WallClock>),
    /// No wall clock: fail closed. Every handshake that needs to check a certificate's validity
    /// fails with `CertificateError::NoWallClock`. The default without std.
    #[cfg_attr(not(feature = "std"), default)]
    Unavailable,
    /// Skip validity-period checks: for devices that have no clock at all and accept that an
    /// expired or not-yet-valid certificate will be trusted. Chains, signatures, names and pins
    /// are still verified.
    IgnoreValidityTime,
}

/// Adapts a [`TimePolicy`] to rustls' time provider.
#[derive(Debug)]
pub(crate) struct PolicyTime(pub TimePolicy);

/// The time handed to rustls when validity is ignored: only differences matter then (ticket
/// ages), and a constant keeps them consistent.
const IGNORED_VALIDITY_EPOCH: u64 = 1_700_000_000;

impl rustls::time_provider::TimeProvider for PolicyTime {
    fn current_time(&self) -> Option<UnixTime> {
        self.0.rustls_time()
    }
}

impl TimePolicy {
    /// The time rustls is given under this policy (certificate checks, ticket ages).
    pub(crate) fn rustls_time(&self) -> Option<UnixTime> {
        match self {
            #[cfg(feature = "std")]
            TimePolicy::System => Some(UnixTime::now()),
            TimePolicy::Clock(c) => c
                .unix_seconds()
                .map(|s| UnixTime::since_unix_epoch(Duration::from_secs(s))),
            TimePolicy::Unavailable => None,
            TimePolicy::IgnoreValidityTime => Some(UnixTime::since_unix_epoch(
                Duration::from_secs(IGNORED_VALIDITY_EPOCH),
            )),
        }
    }
}
