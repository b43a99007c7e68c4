//! Counters in atomics, rendered as Prometheus text (exposition format 0.0.4).
//!
//! Every series is created up front (fixed label sets), so a scrape shows zeros rather than
//! missing series, and counting never allocates or locks.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `tether_connections_open` | gauge | |
//! | `tether_connections_accepted_total` | counter | |
//! | `tether_connections_rejected_total` | counter | `reason` = `global_limit`, `per_ip_limit` |
//! | `tether_connections_closed_total` | counter | `reason` (see [`CloseReason`]) |
//! | `tether_handshakes_total` | counter | `result` = `ok`, `failed` |
//! | `tether_handshakes_resumed_total` | counter | |
//! | `tether_handshake_failures_total` | counter | `category` ([`tether::Error::category`], or `policy`), `reason` (see [`FailReason`]) |
//! | `tether_handshake_duration_seconds` | histogram | `le` (fixed buckets) |
//! | `tether_frames_total` | counter | `direction` = `in`, `out`; `type` = `echo`, `reverse`, `time`, `error`, `unknown` |
//! | `tether_bytes_total` | counter | `direction`: TLS bytes on the wire |
//! | `tether_payload_bytes_total` | counter | `direction`: frame bytes (headers and bodies) |
//! | `tether_dtls_datagrams_total` | counter | `direction` |
//! | `tether_dtls_datagrams_dropped_total` | counter | `reason` (see [`DtlsDrop`]) |
//! | `tether_dtls_cookie_requests_total` | counter | |
//! | `tether_dtls_sessions_handshaking` | gauge | |
//! | `tether_dtls_peer_table_slots` | gauge | |
//! | `tether_draining` | gauge | 1 while draining |
//! | `tether_allow_list_ids` | gauge | device ids on the allow-list in force (0: no list) |
//! | `tether_allow_list_reloads_total` | counter | `result` = `installed` (a changed file), `failed` (unreadable or bad: the list in force stays) |
//! | `tether_certificate_expiry_timestamp_seconds` | gauge | when the server certificate in force expires (Unix time) |
//! | `tether_certificate_reloads_total` | counter | `result` = `installed` (changed certificate, key or device CA files), `failed` (unreadable, bad or mismatched: the ones in force stay) |
//!
//! The session series (connections, handshakes, failures, latency, frames, bytes) exist once
//! per listener: without a `transport` label for TLS (their names and labels predate DTLS),
//! and with `transport="dtls"` as the first label for the DTLS listener (sum over the family
//! for both).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tether::error::{CertificateError, HandshakeError};

/// Why a handshake did not lead to an established device session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailReason {
    /// The handshake did not complete within the handshake timeout.
    Timeout,
    /// mTLS is required and the client presented no certificate.
    MissingClientCert,
    /// The client's certificate was not issued by the device CA.
    UnknownIssuer,
    /// A signature in the client's chain does not verify (often: another CA with the same name).
    BadSignature,
    /// The client's certificate has expired.
    Expired,
    /// The client's certificate is not valid yet.
    NotValidYet,
    /// The client's certificate is not for client authentication.
    WrongPurpose,
    /// Any other certificate problem.
    BadCertificate,
    /// The client sent a fatal alert.
    AlertReceived,
    /// The client closed the connection during the handshake.
    PeerClosed,
    /// No cipher suite, group or signature scheme in common.
    NoCommonAlgorithms,
    /// No TLS version in common (e.g. a TLS 1.2 client and `min_tls` 1.3).
    Version,
    /// The client broke the TLS protocol (not TLS at all, a bad record...).
    Protocol,
    /// The transport failed (reset...).
    Transport,
    /// The device is verified but not on the allow-list.
    NotAllowed,
    /// The device's certificate has no subject common name to use as its device id.
    NoDeviceId,
    /// Anything else.
    Other,
}

impl FailReason {
    /// Every reason, in metrics order.
    pub const ALL: [FailReason; 17] = [
        FailReason::Timeout,
        FailReason::MissingClientCert,
        FailReason::UnknownIssuer,
        FailReason::BadSignature,
        FailReason::Expired,
        FailReason::NotValidYet,
        FailReason::WrongPurpose,
        FailReason::BadCertificate,
        FailReason::AlertReceived,
        FailReason::PeerClosed,
        FailReason::NoCommonAlgorithms,
        FailReason::Version,
        FailReason::Protocol,
        FailReason::Transport,
        FailReason::NotAllowed,
        FailReason::NoDeviceId,
        FailReason::Other,
    ];

    /// The `reason` label.
    pub fn name(self) -> &'static str {
        match self {
            FailReason::Timeout => "timeout",
            FailReason::MissingClientCert => "missing_client_cert",
            FailReason::UnknownIssuer => "unknown_issuer",
            FailReason::BadSignature => "bad_signature",
            FailReason::Expired => "expired",
            FailReason::NotValidYet => "not_valid_yet",
            FailReason::WrongPurpose => "wrong_purpose",
            FailReason::BadCertificate => "bad_certificate",
            FailReason::AlertReceived => "alert_received",
            FailReason::PeerClosed => "peer_closed",
            FailReason::NoCommonAlgorithms => "no_common_algorithms",
            FailReason::Version => "version",
            FailReason::Protocol => "protocol",
            FailReason::Transport => "transport",
            FailReason::NotAllowed => "not_allowed",
            FailReason::NoDeviceId => "no_device_id",
            FailReason::Other => "other",
        }
    }

    /// The `category` label: [`tether::Error::category`] of the errors behind this reason, or
    /// `policy` for the gateway's own refusals.
    pub fn category(self) -> &'static str {
        match self {
            FailReason::Timeout => "timeout",
            FailReason::MissingClientCert
            | FailReason::UnknownIssuer
            | FailReason::BadSignature
            | FailReason::Expired
            | FailReason::NotValidYet
            | FailReason::WrongPurpose
            | FailReason::BadCertificate => "certificate",
            FailReason::AlertReceived
            | FailReason::PeerClosed
            | FailReason::NoCommonAlgorithms
            | FailReason::Other => "handshake",
            FailReason::Version => "version",
            FailReason::Protocol => "protocol",
            FailReason::Transport => "transport",
            FailReason::NotAllowed | FailReason::NoDeviceId => "policy",
        }
    }

    /// The reason a tether error stands for.
    pub fn of(err: &tether::Error) -> FailReason {
        use tether::Error as E;
        match err {
            E::Timeout(_) => FailReason::Timeout,
            E::Certificate(c) => match c {
                CertificateError::Missing => FailReason::MissingClientCert,
                CertificateError::UnknownIssuer => FailReason::UnknownIssuer,
                CertificateError::BadSignature => FailReason::BadSignature,
                CertificateError::Expired => FailReason::Expired,
                CertificateError::NotValidYet => FailReason::NotValidYet,
                CertificateError::WrongPurpose => FailReason::WrongPurpose,
                _ => FailReason::BadCertificate,
            },
            E::PinMismatch { .. } | E::TofuKeyChanged { .. } => FailReason::BadCertificate,
            E::Handshake(h) => match h {
                HandshakeError::AlertReceived(_) => FailReason::AlertReceived,
                HandshakeError::PeerClosed => FailReason::PeerClosed,
                HandshakeError::NoCommonAlgorithms(_) => FailReason::NoCommonAlgorithms,
                _ => FailReason::Other,
            },
            E::Version(_) => FailReason::Version,
            E::Protocol(_) => FailReason::Protocol,
            E::Transport(_) | E::Truncated => FailReason::Transport,
            _ => FailReason::Other,
        }
    }

    fn index(self) -> usize {
        FailReason::ALL
            .iter()
            .position(|r| *r == self)
            .expect("every reason is in ALL")
    }
}

/// Why an accepted connection was closed at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RejectReason {
    /// `max_connections` were open.
    GlobalLimit,
    /// `max_per_ip` were open from this address.
    PerIpLimit,
}

impl RejectReason {
    const ALL: [RejectReason; 2] = [RejectReason::GlobalLimit, RejectReason::PerIpLimit];

    /// The `reason` label.
    pub fn name(self) -> &'static str {
        match self {
            RejectReason::GlobalLimit => "global_limit",
            RejectReason::PerIpLimit => "per_ip_limit",
        }
    }
}

/// Why an established connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The device sent close_notify.
    PeerClosed,
    /// Nothing arrived for the idle timeout; the gateway sent close_notify.
    IdleTimeout,
    /// The device sent a frame over the size limit: ERROR frame, then close_notify.
    FrameTooLarge,
    /// The gateway drained (shutdown).
    Drain,
    /// The TLS session failed after the handshake (bad record, truncation...).
    TlsError,
    /// The transport failed (reset, broken pipe, a write that stalled for the idle timeout).
    Transport,
    /// DTLS: the device started a new session from the same address and port (it restarted);
    /// the new session replaced this one.
    Replaced,
    /// The device is no longer on the allow-list (the file changed); the gateway sent
    /// close_notify.
    Revoked,
}

impl CloseReason {
    const ALL: [CloseReason; 8] = [
        CloseReason::PeerClosed,
        CloseReason::IdleTimeout,
        CloseReason::FrameTooLarge,
        CloseReason::Drain,
        CloseReason::TlsError,
        CloseReason::Transport,
        CloseReason::Replaced,
        CloseReason::Revoked,
    ];

    /// The `reason` label.
    pub fn name(self) -> &'static str {
        match self {
            CloseReason::PeerClosed => "peer_closed",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::FrameTooLarge => "frame_too_large",
            CloseReason::Drain => "drain",
            CloseReason::TlsError => "tls_error",
            CloseReason::Transport => "transport",
            CloseReason::Replaced => "replaced",
            CloseReason::Revoked => "revoked",
        }
    }

    fn index(self) -> usize {
        CloseReason::ALL
            .iter()
            .position(|r| *r == self)
            .expect("every reason is in ALL")
    }
}

/// Frame types as metrics see them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FrameKind {
    Echo,
    Reverse,
    Time,
    Error,
    Unknown,
}

impl FrameKind {
    const ALL: [FrameKind; 5] = [
        FrameKind::Echo,
        FrameKind::Reverse,
        FrameKind::Time,
        FrameKind::Error,
        FrameKind::Unknown,
    ];

    pub(crate) fn of(t: tether_wire::FrameType) -> FrameKind {
        match t {
            tether_wire::FrameType::Echo => FrameKind::Echo,
            tether_wire::FrameType::Reverse => FrameKind::Reverse,
            tether_wire::FrameType::Time => FrameKind::Time,
            tether_wire::FrameType::Error => FrameKind::Error,
            _ => FrameKind::Unknown,
        }
    }

    fn name(self) -> &'static str {
        match self {
            FrameKind::Echo => "echo",
            FrameKind::Reverse => "reverse",
            FrameKind::Time => "time",
            FrameKind::Error => "error",
            FrameKind::Unknown => "unknown",
        }
    }
}

/// Upper bounds of the handshake latency histogram buckets, in seconds.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Why the DTLS listener dropped a datagram without passing it to a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DtlsDrop {
    /// From an address without a session, and not a whole ClientHello: garbage, a stray
    /// record of a session that ended, a fragmented ClientHello.
    Garbage,
    /// A ClientHello whose cookie does not verify (spoofed, expired, another address).
    BadCookie,
    /// A ClientHello the DTLS engine refused outright.
    Refused,
    /// A new session was due but `dtls_max_handshaking` sessions were handshaking.
    HandshakeLimit,
    /// A new session was due but `max_connections` DTLS sessions were open.
    SessionLimit,
    /// The gateway is draining: no new sessions.
    Draining,
}

impl DtlsDrop {
    /// Every reason, in metrics order.
    pub const ALL: [DtlsDrop; 6] = [
        DtlsDrop::Garbage,
        DtlsDrop::BadCookie,
        DtlsDrop::Refused,
        DtlsDrop::HandshakeLimit,
        DtlsDrop::SessionLimit,
        DtlsDrop::Draining,
    ];

    /// The `reason` label.
    pub fn name(self) -> &'static str {
        match self {
            DtlsDrop::Garbage => "garbage",
            DtlsDrop::BadCookie => "bad_cookie",
            DtlsDrop::Refused => "refused",
            DtlsDrop::HandshakeLimit => "handshake_limit",
            DtlsDrop::SessionLimit => "session_limit",
            DtlsDrop::Draining => "draining",
        }
    }

    fn index(self) -> usize {
        DtlsDrop::ALL
            .iter()
            .position(|r| *r == self)
            .expect("every reason is in ALL")
    }
}

/// The counters of one transport (TLS over TCP, or DTLS over UDP): read them with
/// [`Metrics::tls`] and [`Metrics::dtls`].
#[derive(Debug, Default)]
pub struct TransportMetrics {
    open: AtomicU64,
    accepted: AtomicU64,
    rejected: [AtomicU64; 2],
    closed: [AtomicU64; CloseReason::ALL.len()],
    handshakes_ok: AtomicU64,
    handshakes_resumed: AtomicU64,
    failures: [AtomicU64; 17],
    latency_buckets: [AtomicU64; 14],
    latency_count: AtomicU64,
    latency_sum_us: AtomicU64,
    frames_in: [AtomicU64; 5],
    frames_out: [AtomicU64; 5],
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    payload_in: AtomicU64,
    payload_out: AtomicU64,
}

/// The DTLS listener's own counters (datagrams, cookies, the peer table).
#[derive(Debug, Default)]
struct DtlsListenerMetrics {
    dropped: [AtomicU64; 6],
    cookie_requests: AtomicU64,
    datagrams_in: AtomicU64,
    datagrams_out: AtomicU64,
    handshaking: AtomicU64,
    table_slots: AtomicU64,
}

/// The gateway's counters. Shared by every connection; read by `/metrics`.
///
/// Series without a `transport` label are the TLS listener's (as before DTLS existed); the
/// DTLS listener's carry `transport="dtls"`.
#[derive(Debug, Default)]
pub struct Metrics {
    tls: TransportMetrics,
    dtls: TransportMetrics,
    dtls_listener: DtlsListenerMetrics,
    draining: AtomicU64,
    allow_ids: AtomicU64,
    identity_installed: AtomicU64,
    identity_failed: AtomicU64,
    /// When the server certificate in force expires, Unix seconds (0: unknown).
    certificate_expiry: AtomicU64,
    allow_installed: AtomicU64,
    allow_failed: AtomicU64,
}

fn kind_index(k: FrameKind) -> usize {
    FrameKind::ALL
        .iter()
        .position(|x| *x == k)
        .expect("every kind is in ALL")
}

impl TransportMetrics {
    pub(crate) fn opened(&self) {
        self.open.fetch_add(1, Relaxed);
        self.accepted.fetch_add(1, Relaxed);
    }

    pub(crate) fn closed_slot(&self) {
        self.open.fetch_sub(1, Relaxed);
    }

    pub(crate) fn rejected(&self, why: RejectReason) {
        let i = RejectReason::ALL
            .iter()
            .position(|r| *r == why)
            .unwrap_or(0);
        self.rejected[i].fetch_add(1, Relaxed);
    }

    pub(crate) fn connection_closed(&self, why: CloseReason) {
        self.closed[why.index()].fetch_add(1, Relaxed);
    }

    pub(crate) fn handshake_ok(&self, took: Duration, resumed: bool) {
        self.handshakes_ok.fetch_add(1, Relaxed);
        if resumed {
            self.handshakes_resumed.fetch_add(1, Relaxed);
        }
        let secs = took.as_secs_f64();
        for (bucket, le) in self.latency_buckets.iter().zip(LATENCY_BUCKETS) {
            if secs <= le {
                bucket.fetch_add(1, Relaxed);
            }
        }
        self.latency_count.fetch_add(1, Relaxed);
        self.latency_sum_us
            .fetch_add(u64::try_from(took.as_micros()).unwrap_or(u64::MAX), Relaxed);
    }

    pub(crate) fn handshake_failed(&self, why: FailReason) {
        self.failures[why.index()].fetch_add(1, Relaxed);
    }

    pub(crate) fn frame_in(&self, k: FrameKind, bytes: usize) {
        self.frames_in[kind_index(k)].fetch_add(1, Relaxed);
        self.payload_in.fetch_add(bytes as u64, Relaxed);
    }

    pub(crate) fn frame_out(&self, k: FrameKind, bytes: usize) {
        self.frames_out[kind_index(k)].fetch_add(1, Relaxed);
        self.payload_out.fetch_add(bytes as u64, Relaxed);
    }

    pub(crate) fn wire_in(&self, n: usize) {
        self.bytes_in.fetch_add(n as u64, Relaxed);
    }

    pub(crate) fn wire_out(&self, n: usize) {
        self.bytes_out.fetch_add(n as u64, Relaxed);
    }

    /// Connections (sessions) open now, handshaking or established.
    pub fn open_connections(&self) -> u64 {
        self.open.load(Relaxed)
    }

    /// Handshakes that completed (and passed the allow-list).
    pub fn handshakes_ok(&self) -> u64 {
        self.handshakes_ok.load(Relaxed)
    }

    /// Handshakes that resumed an earlier session.
    pub fn handshakes_resumed(&self) -> u64 {
        self.handshakes_resumed.load(Relaxed)
    }

    /// Failed handshakes for `why`.
    pub fn handshake_failures(&self, why: FailReason) -> u64 {
        self.failures[why.index()].load(Relaxed)
    }

    /// Connections closed at accept for `why`.
    pub fn rejections(&self, why: RejectReason) -> u64 {
        let i = RejectReason::ALL
            .iter()
            .position(|r| *r == why)
            .unwrap_or(0);
        self.rejected[i].load(Relaxed)
    }

    /// Established connections that ended for `why`.
    pub fn closes(&self, why: CloseReason) -> u64 {
        self.closed[why.index()].load(Relaxed)
    }
}

impl Metrics {
    /// The TLS listener's counters.
    pub fn tls(&self) -> &TransportMetrics {
        &self.tls
    }

    /// The DTLS listener's session counters (the same series as TLS, `transport="dtls"`).
    pub fn dtls(&self) -> &TransportMetrics {
        &self.dtls
    }

    pub(crate) fn opened(&self) {
        self.tls.opened();
    }

    pub(crate) fn closed_slot(&self) {
        self.tls.closed_slot();
    }

    pub(crate) fn rejected(&self, why: RejectReason) {
        self.tls.rejected(why);
    }

    pub(crate) fn connection_closed(&self, why: CloseReason) {
        self.tls.connection_closed(why);
    }

    pub(crate) fn handshake_ok(&self, took: Duration, resumed: bool) {
        self.tls.handshake_ok(took, resumed);
    }

    pub(crate) fn handshake_failed(&self, why: FailReason) {
        self.tls.handshake_failed(why);
    }

    pub(crate) fn frame_in(&self, k: FrameKind, bytes: usize) {
        self.tls.frame_in(k, bytes);
    }

    pub(crate) fn frame_out(&self, k: FrameKind, bytes: usize) {
        self.tls.frame_out(k, bytes);
    }

    pub(crate) fn wire_in(&self, n: usize) {
        self.tls.wire_in(n);
    }

    pub(crate) fn wire_out(&self, n: usize) {
        self.tls.wire_out(n);
    }

    pub(crate) fn set_draining(&self) {
        self.draining.store(1, Relaxed);
    }

    /// The allow-list in force now has `ids` entries; `installed`: it came from a reload.
    pub(crate) fn allow_list(&self, ids: usize, installed: bool) {
        self.allow_ids.store(ids as u64, Relaxed);
        if installed {
            self.allow_installed.fetch_add(1, Relaxed);
        }
    }

    /// A reload of the allow-list file failed; the list in force stays.
    pub(crate) fn allow_list_failed(&self) {
        self.allow_failed.fetch_add(1, Relaxed);
    }

    /// The server certificate in force expires at `unix` (seconds).
    pub(crate) fn certificate_expiry(&self, unix: u64) {
        self.certificate_expiry.store(unix, Relaxed);
    }

    /// A read of the certificate and key files installed a new identity (`true`) or failed
    /// (the identity in force stays).
    pub(crate) fn identity_reload(&self, installed: bool) {
        let counter = if installed {
            &self.identity_installed
        } else {
            &self.identity_failed
        };
        counter.fetch_add(1, Relaxed);
    }

    pub(crate) fn dtls_dropped(&self, why: DtlsDrop) {
        self.dtls_listener.dropped[why.index()].fetch_add(1, Relaxed);
    }

    pub(crate) fn dtls_cookie_request(&self) {
        self.dtls_listener.cookie_requests.fetch_add(1, Relaxed);
    }

    pub(crate) fn dtls_datagram_in(&self, bytes: usize) {
        self.dtls_listener.datagrams_in.fetch_add(1, Relaxed);
        self.dtls.wire_in(bytes);
    }

    pub(crate) fn dtls_datagram_out(&self, bytes: usize) {
        self.dtls_listener.datagrams_out.fetch_add(1, Relaxed);
        self.dtls.wire_out(bytes);
    }

    pub(crate) fn set_dtls_table(&self, handshaking: usize, slots: usize) {
        self.dtls_listener
            .handshaking
            .store(handshaking as u64, Relaxed);
        self.dtls_listener.table_slots.store(slots as u64, Relaxed);
    }

    /// TLS connections open now (handshaking or established).
    pub fn open_connections(&self) -> u64 {
        self.tls.open_connections()
    }

    /// TLS handshakes that completed (and passed the allow-list).
    pub fn handshakes_ok(&self) -> u64 {
        self.tls.handshakes_ok()
    }

    /// TLS handshakes that resumed an earlier session.
    pub fn handshakes_resumed(&self) -> u64 {
        self.tls.handshakes_resumed()
    }

    /// Failed TLS handshakes for `why`.
    pub fn handshake_failures(&self, why: FailReason) -> u64 {
        self.tls.handshake_failures(why)
    }

    /// TLS connections closed at accept for `why`.
    pub fn rejections(&self, why: RejectReason) -> u64 {
        self.tls.rejections(why)
    }

    /// Established TLS connections that ended for `why`.
    pub fn closes(&self, why: CloseReason) -> u64 {
        self.tls.closes(why)
    }

    /// Datagrams the DTLS listener received.
    pub fn dtls_datagrams_in(&self) -> u64 {
        self.dtls_listener.datagrams_in.load(Relaxed)
    }

    /// Stateless cookie requests the DTLS listener sent.
    pub fn dtls_cookie_requests(&self) -> u64 {
        self.dtls_listener.cookie_requests.load(Relaxed)
    }

    /// DTLS sessions in their handshake now.
    pub fn dtls_handshaking(&self) -> u64 {
        self.dtls_listener.handshaking.load(Relaxed)
    }

    /// Slots allocated in the DTLS listener's peer table.
    pub fn dtls_peer_table_slots(&self) -> u64 {
        self.dtls_listener.table_slots.load(Relaxed)
    }

    /// Datagrams the DTLS listener dropped for `why`.
    pub fn dtls_drops(&self, why: DtlsDrop) -> u64 {
        self.dtls_listener.dropped[why.index()].load(Relaxed)
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(12 * 1024);
        let w = &mut out;
        let get = |a: &AtomicU64| a.load(Relaxed);
        // TLS series keep their label sets; DTLS series add `transport="dtls"` first.
        let both = [(&self.tls, ""), (&self.dtls, "transport=\"dtls\",")];
        // A series: NAME{labels} with the transport label, or NAME alone.
        let series = |name: &str, t: &str, labels: &str| -> String {
            let l = format!("{t}{labels}");
            let l = l.trim_end_matches(',');
            if l.is_empty() {
                name.to_owned()
            } else {
                format!("{name}{{{l}}}")
            }
        };
        // A metric with one unlabelled series per transport.
        let per_transport =
            |w: &mut String,
             name: &str,
             kind: &str,
             help: &str,
             value: fn(&TransportMetrics) -> &AtomicU64| {
                header(w, name, kind, help);
                for (m, t) in both {
                    let _ = writeln!(w, "{} {}", series(name, t, ""), get(value(m)));
                }
            };

        per_transport(
            w,
            "tether_connections_open",
            "gauge",
            "Connections (DTLS: sessions) open now, handshaking or established.",
            |m| &m.open,
        );
        per_transport(
            w,
            "tether_connections_accepted_total",
            "counter",
            "TCP connections accepted on the TLS listener; DTLS: sessions made after a valid cookie.",
            |m| &m.accepted,
        );

        header(
            w,
            "tether_connections_rejected_total",
            "counter",
            "Connections closed at accept because a connection limit was reached.",
        );
        for (r, a) in RejectReason::ALL.iter().zip(&self.tls.rejected) {
            let _ = writeln!(
                w,
                "tether_connections_rejected_total{{reason=\"{}\"}} {}",
                r.name(),
                get(a)
            );
        }

        header(
            w,
            "tether_connections_closed_total",
            "counter",
            "Established device connections that ended, by reason.",
        );
        for (m, t) in both {
            for (r, a) in CloseReason::ALL.iter().zip(&m.closed) {
                let _ = writeln!(
                    w,
                    "{} {}",
                    series(
                        "tether_connections_closed_total",
                        t,
                        &format!("reason=\"{}\"", r.name())
                    ),
                    get(a)
                );
            }
        }

        header(
            w,
            "tether_handshakes_total",
            "counter",
            "Handshakes by result (ok: completed and allowed).",
        );
        for (m, t) in both {
            let failed: u64 = m.failures.iter().map(get).sum();
            let _ = writeln!(
                w,
                "{} {}",
                series("tether_handshakes_total", t, "result=\"ok\""),
                get(&m.handshakes_ok)
            );
            let _ = writeln!(
                w,
                "{} {failed}",
                series("tether_handshakes_total", t, "result=\"failed\"")
            );
        }

        per_transport(
            w,
            "tether_handshakes_resumed_total",
            "counter",
            "Completed handshakes that resumed an earlier session (ticket or session id).",
            |m| &m.handshakes_resumed,
        );

        header(
            w,
            "tether_handshake_failures_total",
            "counter",
            "Failed handshakes by category (tether error category, or policy) and reason.",
        );
        for (m, t) in both {
            for (r, a) in FailReason::ALL.iter().zip(&m.failures) {
                let _ = writeln!(
                    w,
                    "{} {}",
                    series(
                        "tether_handshake_failures_total",
                        t,
                        &format!("category=\"{}\",reason=\"{}\"", r.category(), r.name())
                    ),
                    get(a)
                );
            }
        }

        header(
            w,
            "tether_handshake_duration_seconds",
            "histogram",
            "Time from TCP accept (DTLS: the ClientHello with a valid cookie) to a completed handshake.",
        );
        for (m, t) in both {
            let name = "tether_handshake_duration_seconds_bucket";
            for (le, a) in LATENCY_BUCKETS.iter().zip(&m.latency_buckets) {
                let _ = writeln!(w, "{} {}", series(name, t, &format!("le=\"{le}\"")), get(a));
            }
            let count = get(&m.latency_count);
            let _ = writeln!(w, "{} {count}", series(name, t, "le=\"+Inf\""));
            let sum = get(&m.latency_sum_us) as f64 / 1e6;
            let _ = writeln!(
                w,
                "{} {sum}",
                series("tether_handshake_duration_seconds_sum", t, "")
            );
            let _ = writeln!(
                w,
                "{} {count}",
                series("tether_handshake_duration_seconds_count", t, "")
            );
        }

        header(
            w,
            "tether_frames_total",
            "counter",
            "Frames received (in) and sent (out), by type.",
        );
        for (m, t) in both {
            for (dir, arr) in [("in", &m.frames_in), ("out", &m.frames_out)] {
                for (k, a) in FrameKind::ALL.iter().zip(arr) {
                    let _ = writeln!(
                        w,
                        "{} {}",
                        series(
                            "tether_frames_total",
                            t,
                            &format!("direction=\"{dir}\",type=\"{}\"", k.name())
                        ),
                        get(a)
                    );
                }
            }
        }

        header(
            w,
            "tether_bytes_total",
            "counter",
            "TLS/DTLS bytes on the wire, received (in) and sent (out).",
        );
        for (m, t) in both {
            for (dir, a) in [("in", &m.bytes_in), ("out", &m.bytes_out)] {
                let _ = writeln!(
                    w,
                    "{} {}",
                    series("tether_bytes_total", t, &format!("direction=\"{dir}\"")),
                    get(a)
                );
            }
        }

        header(
            w,
            "tether_payload_bytes_total",
            "counter",
            "Frame bytes (headers and bodies) received (in) and sent (out).",
        );
        for (m, t) in both {
            for (dir, a) in [("in", &m.payload_in), ("out", &m.payload_out)] {
                let _ = writeln!(
                    w,
                    "{} {}",
                    series(
                        "tether_payload_bytes_total",
                        t,
                        &format!("direction=\"{dir}\"")
                    ),
                    get(a)
                );
            }
        }

        let d = &self.dtls_listener;
        header(
            w,
            "tether_dtls_datagrams_total",
            "counter",
            "UDP datagrams received (in) and sent (out) by the DTLS listener.",
        );
        let _ = writeln!(
            w,
            "tether_dtls_datagrams_total{{direction=\"in\"}} {}",
            get(&d.datagrams_in)
        );
        let _ = writeln!(
            w,
            "tether_dtls_datagrams_total{{direction=\"out\"}} {}",
            get(&d.datagrams_out)
        );
        header(
            w,
            "tether_dtls_datagrams_dropped_total",
            "counter",
            "Datagrams the DTLS listener dropped before any session, by reason.",
        );
        for (r, a) in DtlsDrop::ALL.iter().zip(&d.dropped) {
            let _ = writeln!(
                w,
                "tether_dtls_datagrams_dropped_total{{reason=\"{}\"}} {}",
                r.name(),
                get(a)
            );
        }
        header(
            w,
            "tether_dtls_cookie_requests_total",
            "counter",
            "Stateless cookie requests sent (HelloVerifyRequest, HelloRetryRequest).",
        );
        let _ = writeln!(
            w,
            "tether_dtls_cookie_requests_total {}",
            get(&d.cookie_requests)
        );
        header(
            w,
            "tether_dtls_sessions_handshaking",
            "gauge",
            "DTLS sessions in their handshake now.",
        );
        let _ = writeln!(
            w,
            "tether_dtls_sessions_handshaking {}",
            get(&d.handshaking)
        );
        header(
            w,
            "tether_dtls_peer_table_slots",
            "gauge",
            "Slots allocated in the DTLS listener's table of peers (memory held per address).",
        );
        let _ = writeln!(w, "tether_dtls_peer_table_slots {}", get(&d.table_slots));

        header(
            w,
            "tether_draining",
            "gauge",
            "1 while the gateway drains (shutting down), else 0.",
        );
        let _ = writeln!(w, "tether_draining {}", get(&self.draining));

        header(
            w,
            "tether_allow_list_ids",
            "gauge",
            "Device ids on the allow-list in force (0: no allow-list).",
        );
        let _ = writeln!(w, "tether_allow_list_ids {}", get(&self.allow_ids));
        reloads(
            w,
            "tether_allow_list_reloads_total",
            "Reads of the allow-list file that installed a changed list, or failed (the list in force stays).",
            [&self.allow_installed, &self.allow_failed],
        );
        header(
            w,
            "tether_certificate_expiry_timestamp_seconds",
            "gauge",
            "When the server certificate in force expires, Unix time (0: unknown); alert on it minus time().",
        );
        let _ = writeln!(
            w,
            "tether_certificate_expiry_timestamp_seconds {}",
            get(&self.certificate_expiry)
        );
        reloads(
            w,
            "tether_certificate_reloads_total",
            "Reads of the server certificate, key and device CA files that installed a change, or failed (the ones in force stay).",
            [&self.identity_installed, &self.identity_failed],
        );
        out
    }
}

fn header(w: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(w, "# HELP {name} {help}");
    let _ = writeln!(w, "# TYPE {name} {kind}");
}

/// A watched file's reload counter: `result` = `installed`, then `failed`.
fn reloads(w: &mut String, name: &str, help: &str, [installed, failed]: [&AtomicU64; 2]) {
    header(w, name, "counter", help);
    for (result, a) in [("installed", installed), ("failed", failed)] {
        let _ = writeln!(w, "{name}{{result=\"{result}\"}} {}", a.load(Relaxed));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_has_help_type_and_every_series() {
        let m = Metrics::default();
        m.opened();
        m.handshake_ok(Duration::from_millis(3), true);
        m.handshake_failed(FailReason::UnknownIssuer);
        m.frame_in(FrameKind::Echo, 13);
        let text = m.render();
        assert!(text.contains("# TYPE tether_handshake_duration_seconds histogram"));
        assert!(text.contains("tether_connections_open 1\n"));
        assert!(text.contains("tether_handshakes_total{result=\"ok\"} 1\n"));
        assert!(text.contains(
            "tether_handshake_failures_total{category=\"certificate\",reason=\"unknown_issuer\"} 1\n"
        ));
        assert!(text.contains("tether_handshake_duration_seconds_bucket{le=\"0.0025\"} 0\n"));
        assert!(text.contains("tether_handshake_duration_seconds_bucket{le=\"0.005\"} 1\n"));
        assert!(text.contains("tether_handshake_duration_seconds_bucket{le=\"+Inf\"} 1\n"));
        assert!(text.contains("tether_frames_total{direction=\"in\",type=\"echo\"} 1\n"));
        // Every sample line is NAME{labels} VALUE or NAME VALUE, every name has HELP and TYPE.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (series, value) = line.rsplit_once(' ').unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
            let name = series.split('{').next().unwrap();
            assert!(name.starts_with("tether_"));
            let base = name
                .trim_end_matches("_bucket")
                .trim_end_matches("_sum")
                .trim_end_matches("_count");
            assert!(
                text.contains(&format!("# TYPE {base} "))
                    || text.contains(&format!("# TYPE {name} ")),
                "{name}"
            );
        }
    }

    #[test]
    fn reasons_map_from_errors() {
        use tether::error::Timeout;
        assert_eq!(
            FailReason::of(&tether::Error::Timeout(Timeout::Handshake)),
            FailReason::Timeout
        );
        assert_eq!(
            FailReason::of(&tether::Error::Certificate(CertificateError::Missing)),
            FailReason::MissingClientCert
        );
        for r in FailReason::ALL {
            assert_eq!(FailReason::ALL[r.index()], r);
        }
    }
}
