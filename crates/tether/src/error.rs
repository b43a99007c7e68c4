//! One categorised error type for the whole core.
//!
//! Every failure a connection can meet falls into one [`Error`] variant; the variant is the
//! category a program matches on, its fields carry the detail a person reads. Each `Display`
//! message says what happened and what the user can do about it.
//!
//! The std adapter maps these categories onto [`std::io::ErrorKind`] (see `From<Error> for
//! std::io::Error`), so code written against `std::io::Read`/`Write` still sees would-block,
//! time-outs and truncation as the kinds it expects.

use alloc::string::{String, ToString};
use core::fmt;

use crate::pin::Pin;

/// Everything that can go wrong in a tether connection.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The TLS handshake failed for a reason other than the peer's certificate.
    Handshake(HandshakeError),
    /// The peer's certificate was rejected; the reason says why.
    Certificate(CertificateError),
    /// The peer's key matches none of the configured SPKI pins.
    PinMismatch {
        /// The pin of the key the peer presented (its leaf certificate).
        presented: Pin,
    },
    /// Trust on first use: the peer presented a key different from the one stored for it.
    TofuKeyChanged {
        /// The host the key is stored under.
        host: String,
        /// The pin stored on first use.
        stored: Pin,
        /// The pin of the key presented now.
        presented: Pin,
    },
    /// The peers have no TLS version in common (tether never falls back below the configured
    /// minimum).
    Version(VersionError),
    /// A deadline passed.
    Timeout(Timeout),
    /// The peer closed the transport without sending close_notify: the data received so far
    /// may be cut short.
    Truncated,
    /// The transport failed or would block.
    Transport(TransportError),
    /// The peer sent bytes that are not valid TLS, or broke the protocol.
    Protocol(String),
    /// A configuration could not be built.
    Config(ConfigError),
    /// The connection was already closed or failed; it cannot be used any more.
    Closed,
    /// A caller-provided buffer is too small for the next record.
    BufferTooSmall {
        /// The size the buffer must at least have.
        needed: usize,
    },
}

/// Why a handshake failed (other than certificate, pin, TOFU and version problems).
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandshakeError {
    /// The peer sent a fatal alert.
    AlertReceived(Alert),
    /// The peer closed the transport during the handshake.
    PeerClosed,
    /// DTLS: the peer went silent after a fatal alert it sent without the protection the
    /// protocol requires at that point, so the session ignored it (anyone on the path could
    /// have sent it); most likely the peer refused us for the reason it names. Reported when
    /// the handshake, or a read that follows it, times out.
    UnauthenticatedAlert(Alert),
    /// The peers share no cipher suite, key-exchange group or signature scheme.
    NoCommonAlgorithms(String),
    /// Anything else rustls reported, rendered as text.
    Other(String),
}

/// A TLS alert description, by name where tether knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Alert(pub u8);

impl Alert {
    /// `access_denied` (49): the peer is authenticated, but policy refuses it (a device its
    /// gateway's allow-list does not name). [`Session::refuse`](crate::Session::refuse)
    /// sends it.
    pub const ACCESS_DENIED: Alert = Alert(49);
    /// `bad_certificate` (42).
    pub const BAD_CERTIFICATE: Alert = Alert(42);
    /// `certificate_revoked` (44).
    pub const CERTIFICATE_REVOKED: Alert = Alert(44);
    /// `handshake_failure` (40).
    pub const HANDSHAKE_FAILURE: Alert = Alert(40);
    /// `internal_error` (80).
    pub const INTERNAL_ERROR: Alert = Alert(80);

    /// The RFC 8446 name of this alert, or `"unknown"`.
    pub fn name(self) -> &'static str {
        match self.0 {
            0 => "close_notify",
            10 => "unexpected_message",
            20 => "bad_record_mac",
            22 => "record_overflow",
            40 => "handshake_failure",
            42 => "bad_certificate",
            43 => "unsupported_certificate",
            44 => "certificate_revoked",
            45 => "certificate_expired",
            46 => "certificate_unknown",
            47 => "illegal_parameter",
            48 => "unknown_ca",
            49 => "access_denied",
            50 => "decode_error",
            51 => "decrypt_error",
            70 => "protocol_version",
            71 => "insufficient_security",
            80 => "internal_error",
            86 => "inappropriate_fallback",
            90 => "user_canceled",
            109 => "missing_extension",
            110 => "unsupported_extension",
            112 => "unrecognized_name",
            116 => "certificate_required",
            120 => "no_application_protocol",
            _ => "unknown",
        }
    }

    fn hint(self) -> &'static str {
        match self.0 {
            116 | 40 => "the peer may require a client certificate: configure one",
            49 => {
                "the peer verified our certificate but refuses us by its policy (a device its \
                 gateway's allow-list does not name): ask the peer's operator to admit it"
            }
            42 | 46 | 48 | 45 | 43 => {
                "the peer rejected our certificate: check it is issued by a CA the peer trusts and is valid now"
            }
            70 => "no common TLS version: check both sides' minimum and maximum versions",
            120 => "no common ALPN protocol: check the configured ALPN list",
            112 => "the peer does not serve this name: check the SNI name",
            _ => "see the peer's logs for why it ended the handshake",
        }
    }
}

impl fmt::Display for Alert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.0)
    }
}

/// Why a peer's certificate was rejected.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertificateError {
    /// The chain does not lead to a configured CA root.
    UnknownIssuer,
    /// The certificate (or one in its chain) has expired.
    Expired,
    /// The certificate (or one in its chain) is not valid yet.
    NotValidYet,
    /// The certificate is valid, but not for the name or address we connected to.
    NameMismatch {
        /// The name or IP address that was expected.
        expected: String,
    },
    /// A signature in the chain (or over the handshake) does not verify.
    BadSignature,
    /// The certificate is not valid for this use (e.g. a client certificate used by a server).
    WrongPurpose,
    /// The certificate could not be parsed.
    BadEncoding,
    /// The certificate was revoked.
    Revoked,
    /// The peer presented no certificate, but one is required.
    Missing,
    /// Validity times cannot be checked: no wall clock is configured.
    NoWallClock,
    /// Any other reason, as text.
    Other(String),
}

/// Why no TLS version could be agreed.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionError {
    /// The peer refused every version we offered (it sent `protocol_version`).
    PeerRefused,
    /// The peer offered or chose a version outside our configured range.
    NotAllowed(String),
}

/// Which deadline passed.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timeout {
    /// The handshake did not finish within the configured handshake timeout.
    Handshake,
    /// A read or write did not finish within the socket's I/O timeout.
    Io,
}

/// A transport failure, as reported by a [`crate::socket::Transport`].
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransportError {
    /// The operation would block; try again when the transport is ready.
    WouldBlock,
    /// The transport was reset or closed by the peer in the middle of a write.
    Reset,
    /// Any other transport failure, as text.
    Other(String),
}

/// A configuration problem, found when a config is built or a session created.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// No way to verify the peer: no roots, no pins, no TOFU store.
    NoTrustAnchors,
    /// A PEM or DER input could not be parsed.
    BadPem(String),
    /// The private key could not be used.
    BadKey(String),
    /// The server name is not a valid DNS name or IP address.
    BadServerName(String),
    /// A pin string is not `sha256/BASE64` of 32 bytes.
    BadPin(String),
    /// The minimum version is above the maximum, or a list of algorithms is empty.
    Inconsistent(String),
    /// A TOFU store could not be read or written.
    Store(String),
}

impl Error {
    /// True when the operation would block and should be retried when the transport is ready.
    pub fn is_would_block(&self) -> bool {
        matches!(self, Error::Transport(TransportError::WouldBlock))
    }

    /// A short, stable name of the category, for logs and metrics labels.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Handshake(_) => "handshake",
            Error::Certificate(_) => "certificate",
            Error::PinMismatch { .. } => "pin_mismatch",
            Error::TofuKeyChanged { .. } => "tofu_key_changed",
            Error::Version(_) => "version",
            Error::Timeout(_) => "timeout",
            Error::Truncated => "truncated",
            Error::Transport(_) => "transport",
            Error::Protocol(_) => "protocol",
            Error::Config(_) => "config",
            Error::Closed => "closed",
            Error::BufferTooSmall { .. } => "buffer_too_small",
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Handshake(e) => write!(f, "TLS handshake failed: {e}"),
            Error::Certificate(e) => write!(f, "peer certificate rejected: {e}"),
            Error::PinMismatch { presented } => write!(
                f,
                "pin mismatch: the peer's key {presented} matches none of the configured pins; \
                 if the server's key changed on purpose, update the pin"
            ),
            Error::TofuKeyChanged {
                host,
                stored,
                presented,
            } => write!(
                f,
                "TOFU key change for {host}: first seen with {stored}, now presents {presented}; \
                 this may be an attack. If the key changed on purpose, remove {host} from the TOFU store"
            ),
            Error::Version(e) => write!(f, "no common TLS version: {e}"),
            Error::Timeout(Timeout::Handshake) => write!(
                f,
                "handshake timed out: the peer accepted the connection but did not complete the \
                 TLS handshake in time; check it speaks TLS on this port"
            ),
            Error::Timeout(Timeout::Io) => write!(f, "I/O timed out waiting for the peer"),
            Error::Truncated => write!(
                f,
                "connection truncated: the peer closed the transport without a TLS close_notify, \
                 so the data may be incomplete"
            ),
            Error::Transport(e) => write!(f, "transport error: {e}"),
            Error::Protocol(e) => write!(f, "TLS protocol error from the peer: {e}"),
            Error::Config(e) => write!(f, "configuration error: {e}"),
            Error::Closed => write!(f, "the connection is closed or has failed; open a new one"),
            Error::BufferTooSmall { needed } => {
                write!(f, "buffer too small: provide at least {needed} bytes")
            }
        }
    }
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandshakeError::AlertReceived(a) => {
                write!(f, "the peer sent alert {a}; {}", a.hint())
            }
            HandshakeError::UnauthenticatedAlert(a) => write!(
                f,
                "no answer from the peer after it sent alert {a} without protection (ignored, \
                 as anyone on the path could forge one); it most likely refused us: {}",
                a.hint()
            ),
            HandshakeError::PeerClosed => write!(
                f,
                "the peer closed the connection during the handshake; check it speaks TLS and \
                 accepts our version, certificate and algorithms"
            ),
            HandshakeError::NoCommonAlgorithms(what) => write!(
                f,
                "no algorithms in common ({what}); allow more cipher suites or groups on one side"
            ),
            HandshakeError::Other(s) => f.write_str(s),
        }
    }
}

impl fmt::Display for CertificateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CertificateError::UnknownIssuer => write!(
                f,
                "unknown issuer: the chain does not lead to a trusted CA; pass the CA that issued it"
            ),
            CertificateError::Expired => {
                write!(
                    f,
                    "expired: renew the certificate (or check this machine's clock)"
                )
            }
            CertificateError::NotValidYet => write!(
                f,
                "not valid yet: check this machine's clock, or wait until the certificate's start time"
            ),
            CertificateError::NameMismatch { expected } => write!(
                f,
                "not valid for {expected}: the certificate's subject alternative names do not \
                 include it; connect by a name it lists or reissue it with this name"
            ),
            CertificateError::BadSignature => write!(
                f,
                "a signature does not verify: the chain may come from a different CA with the \
                 same name, or a certificate is corrupted; check which CA issued it"
            ),
            CertificateError::WrongPurpose => write!(
                f,
                "not issued for this purpose (extended key usage); use a server certificate for \
                 servers and a client certificate for clients"
            ),
            CertificateError::BadEncoding => write!(f, "the certificate is malformed"),
            CertificateError::Revoked => write!(f, "the certificate was revoked"),
            CertificateError::Missing => write!(
                f,
                "the peer presented no certificate but one is required; give the client a \
                 certificate and key"
            ),
            CertificateError::NoWallClock => write!(
                f,
                "validity times cannot be checked: no wall clock is configured; supply one with \
                 TimePolicy::Clock, or choose TimePolicy::IgnoreValidityTime for a device without a clock"
            ),
            CertificateError::Other(s) => f.write_str(s),
        }
    }
}

impl fmt::Display for VersionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VersionError::PeerRefused => write!(
                f,
                "the peer refused every TLS version we offered (alert protocol_version); \
                 tether does not fall back: lower the minimum version if that is acceptable"
            ),
            VersionError::NotAllowed(s) => write!(
                f,
                "{s}; tether does not fall back: widen the version range if that is acceptable"
            ),
        }
    }
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransportError::WouldBlock => write!(f, "operation would block; retry when ready"),
            TransportError::Reset => write!(f, "connection reset by the peer"),
            TransportError::Other(s) => f.write_str(s),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::NoTrustAnchors => write!(
                f,
                "no way to verify the peer: add CA roots, a pin or a TOFU store \
                 (or, for tests only, Trust::danger_accept_any)"
            ),
            ConfigError::BadPem(s) => write!(f, "cannot read certificate input: {s}"),
            ConfigError::BadKey(s) => write!(f, "cannot use private key: {s}"),
            ConfigError::BadServerName(s) => {
                write!(f, "{s:?} is not a valid DNS name or IP address")
            }
            ConfigError::BadPin(s) => {
                write!(
                    f,
                    "bad pin {s:?}: expected sha256/ followed by base64 of 32 bytes"
                )
            }
            ConfigError::Inconsistent(s) => f.write_str(s),
            ConfigError::Store(s) => write!(f, "TOFU store: {s}"),
        }
    }
}

// Unconditional (core::error::Error is in core since Rust 1.81): embedded-io's `Error` trait
// requires it without std.
impl core::error::Error for Error {}
impl core::error::Error for ConfigError {}

impl From<ConfigError> for Error {
    fn from(e: ConfigError) -> Self {
        Error::Config(e)
    }
}

/// What to say when the peer's first bytes are not a TLS record: its first line when it is
/// text (an HTTP request or response, an SSH or SMTP banner...), else its first bytes in hex.
pub(crate) fn not_tls(input: &[u8]) -> String {
    let line = input
        .split(|&b| b == b'\r' || b == b'\n')
        .next()
        .unwrap_or_default();
    let shown = &line[..line.len().min(60)];
    let sent = if shown.len() >= 3 && shown.iter().all(|b| (0x20..0x7f).contains(b)) {
        let text = core::str::from_utf8(shown).unwrap_or_default();
        let more = if shown.len() < line.len() { "..." } else { "" };
        alloc::format!("{text:?}{more}")
    } else {
        let mut hex = String::new();
        for b in input.iter().take(8) {
            hex.push_str(&alloc::format!("{b:02x} "));
        }
        alloc::format!("the bytes {}", hex.trim_end())
    };
    alloc::format!(
        "the peer does not speak TLS: it sent {sent} where a TLS record should start \
         (a plaintext service, or another protocol, on this port?); check the host and port"
    )
}

/// Maps a rustls error onto tether's categories.
pub(crate) fn from_rustls(err: rustls::Error) -> Error {
    use rustls::AlertDescription as A;
    use rustls::Error as R;
    match err {
        R::InvalidCertificate(e) => Error::Certificate(from_rustls_cert(e)),
        R::NoCertificatesPresented => Error::Certificate(CertificateError::Missing),
        R::FailedToGetCurrentTime => Error::Certificate(CertificateError::NoWallClock),
        R::AlertReceived(A::ProtocolVersion) => Error::Version(VersionError::PeerRefused),
        R::AlertReceived(a) => Error::Handshake(HandshakeError::AlertReceived(Alert(a.into()))),
        R::PeerIncompatible(p) => {
            use rustls::PeerIncompatible as P;
            match p {
                P::ServerDoesNotSupportTls12Or13
                | P::ServerTlsVersionIsDisabledByOurConfig
                | P::SupportedVersionsExtensionRequired
                | P::Tls12NotOffered
                | P::Tls12NotOfferedOrEnabled => {
                    Error::Version(VersionError::NotAllowed(alloc::format!("{p:?}")))
                }
                P::NoCipherSuitesInCommon
                | P::NoKxGroupsInCommon
                | P::NoSignatureSchemesInCommon
                | P::NoCertificateRequestSignatureSchemesInCommon => {
                    Error::Handshake(HandshakeError::NoCommonAlgorithms(alloc::format!("{p:?}")))
                }
                other => Error::Handshake(HandshakeError::Other(alloc::format!(
                    "the peer is incompatible: {other:?}"
                ))),
            }
        }
        R::InvalidMessage(m) => Error::Protocol(alloc::format!("invalid message: {m:?}")),
        R::PeerMisbehaved(m) => Error::Protocol(alloc::format!("peer misbehaved: {m:?}")),
        R::DecryptError => Error::Protocol("a record failed to decrypt (bad_record_mac)".into()),
        R::PeerSentOversizedRecord => Error::Protocol("the peer sent an oversized record".into()),
        other => Error::Handshake(HandshakeError::Other(other.to_string())),
    }
}

fn from_rustls_cert(e: rustls::CertificateError) -> CertificateError {
    use rustls::CertificateError as C;
    match e {
        C::UnknownIssuer => CertificateError::UnknownIssuer,
        C::Expired | C::ExpiredContext { .. } => CertificateError::Expired,
        C::NotValidYet | C::NotValidYetContext { .. } => CertificateError::NotValidYet,
        C::NotValidForName => CertificateError::NameMismatch {
            expected: String::from("the requested name"),
        },
        C::NotValidForNameContext { expected, .. } => CertificateError::NameMismatch {
            expected: server_name_string(&expected),
        },
        C::BadSignature
        | C::UnsupportedSignatureAlgorithmContext { .. }
        | C::UnsupportedSignatureAlgorithmForPublicKeyContext { .. } => {
            CertificateError::BadSignature
        }
        C::InvalidPurpose | C::InvalidPurposeContext { .. } => CertificateError::WrongPurpose,
        C::BadEncoding => CertificateError::BadEncoding,
        C::Revoked => CertificateError::Revoked,
        other => CertificateError::Other(alloc::format!("{other}")),
    }
}

pub(crate) fn server_name_string(name: &rustls_pki_types::ServerName<'_>) -> String {
    match name {
        rustls_pki_types::ServerName::DnsName(d) => d.as_ref().to_string(),
        rustls_pki_types::ServerName::IpAddress(ip) => ip_string(ip),
        _ => String::from("the requested name"),
    }
}

fn ip_string(ip: &rustls_pki_types::IpAddr) -> String {
    match ip {
        rustls_pki_types::IpAddr::V4(v4) => core::net::Ipv4Addr::from(*v4.as_ref()).to_string(),
        rustls_pki_types::IpAddr::V6(v6) => core::net::Ipv6Addr::from(*v6.as_ref()).to_string(),
    }
}
