//! The sans-IO TLS session.
//!
//! A [`Session`] is one TLS 1.2/1.3 connection, client or server, with no I/O and no clock: the
//! driver moves bytes between it and a transport and passes the time in.
//!
//! # Driving a session
//!
//! 1. Create it with [`Session::client`] or [`Session::server`], passing `now`. The handshake
//!    deadline is `now + handshake_timeout`.
//! 2. Loop:
//!    - [`poll_transmit`](Session::poll_transmit) into your buffer and write those bytes to the
//!      transport, until it returns 0;
//!    - when the transport has bytes, pass them to [`handle_input`](Session::handle_input) (or
//!      read straight into [`input_buffer`](Session::input_buffer) and
//!      [`commit_input`](Session::commit_input));
//!    - when the transport reports end-of-file, call [`handle_eof`](Session::handle_eof);
//!    - at [`poll_timeout`](Session::poll_timeout), call [`handle_timeout`](Session::handle_timeout);
//!    - [`poll_event`](Session::poll_event) tells when the handshake completed and when the peer
//!      sent close_notify.
//! 3. Once [`is_handshaking`](Session::is_handshaking) is false: [`send`](Session::send)
//!    encrypts application data straight into your output buffer, [`recv`](Session::recv)
//!    returns decrypted data, [`close`](Session::close) queues close_notify.
//!
//! Time only moves forward: every `now` must be at or after the previous one.
//!
//! A session that fails stays failed: every later call returns the same error, and any alert it
//! queued is still returned by `poll_transmit`. No application data is ever returned before the
//! handshake (and so the peer's verification) has completed.
//!
//! # Memory
//!
//! The session keeps three buffers, each allocated only while it holds bytes and freed as soon
//! as it is empty: received ciphertext that does not yet form a whole record, handshake bytes
//! waiting for `poll_transmit`, and decrypted bytes that did not fit the caller's `recv` buffer
//! during the handshake. An established, idle session holds none of them.
//!
//! They grow exactly as needed (no amortised doubling), and spare input capacity above 4 KiB
//! is given back once records are consumed.
//!
//! # Records after the handshake
//!
//! rustls 0.23's unbuffered API hands each decrypted record out as a copy of its own, so a
//! full 16 KiB record would cost two 16 KiB buffers at once, and an established rustls
//! connection keeps about 3 KB of its handshake's machinery. Once the handshake has completed
//! (rustls is given the handshake's records one at a time, so it never reads one past the
//! record that completes it), a session of either side takes the
//! traffic keys from rustls (`rustls::kernel`, the API rustls offers for kTLS) and does the
//! records itself: each is opened in place in the input buffer and [`recv`](Session::recv)
//! copies its plaintext straight from there, so a full record costs one copy of itself, and
//! an idle session holds its keys (as bytes, set up for each record) and little else: about
//! 1 KB for a server, 2.3 KB for a client, which also keeps rustls' ticket state and the
//! server's chain (docs/PERFORMANCE.md). rustls keeps what it still owns: new keys
//! on a TLS 1.3 KeyUpdate, and the tickets a server sends its client (to the session cache).
//! The record layer checks what rustls' would (size limits, the TLS 1.3 inner content type,
//! alerts, post-handshake messages, the suite's confidentiality limit, rustls' bounds on a
//! misbehaving peer) and fails with the same errors and alerts.
//!
//! [`read_size`](Session::read_size) tells a driver how much to read so that the read which
//! completes a large record takes nothing past it, and so that a handshake message split over
//! records waits without a spare chunk beside it; records that a server keeps small
//! ([`ServerConfig`]'s `max_record_size`) keep every buffer small. docs/PERFORMANCE.md
//! ("Device RAM") has the figures.

use alloc::boxed::Box;
use alloc::string::ToString;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::time::Duration;

use rustls::client::UnbufferedClientConnection;
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, UnbufferedStatus};
use rustls::{CipherSuite, HandshakeKind, NamedGroup};
use rustls_pki_types::{CertificateDer, ServerName};

use crate::config::{ClientConfig, ServerConfig, TlsVersion};
use crate::error::{Alert, ConfigError, Error, HandshakeError, Timeout};
use crate::record::{self, Kernel, Opened, Records};
use crate::time::Instant;
use crate::trust::{FailureSlot, ServerVerifier};

/// Something the session reports once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The handshake completed and the peer is verified: application data may flow.
    Connected,
    /// The peer sent close_notify: it will send no more data (all its data has been received).
    PeerClosed,
}

/// What [`Session::recv`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recv {
    /// This many bytes were written to the buffer (never 0).
    Data(usize),
    /// No data yet: feed more input.
    Pending,
    /// The peer closed cleanly (close_notify) and every byte it sent has been returned.
    Closed,
}

/// What [`Session::send`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[must_use]
pub struct Sent {
    /// Bytes of application data consumed.
    pub consumed: usize,
    /// Bytes written to the output buffer (pending handshake bytes, then records).
    pub written: usize,
}

/// Which side this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The side that connects.
    Client,
    /// The side that accepts.
    Server,
}

enum Conn {
    // Boxed: a session drops its rustls connection once established, and a `Session` placed
    // inline (on a device's stack, in a socket) stays small.
    Client(Box<UnbufferedClientConnection>),
    Server(Box<UnbufferedServerConnection>),
    /// Either side once its handshake has completed: tether's record layer, records opened
    /// in place (see "Records after the handshake" in the module docs).
    Records(Box<Established>),
    /// Only while a session moves to `Records`, or after that failed.
    Switching,
}

/// A session after its handshake: the record layer and what the handshake settled.
struct Established {
    records: Records,
    version: Option<TlsVersion>,
    cipher_suite: Option<CipherSuite>,
    kx_group: Option<NamedGroup>,
    alpn: Option<Vec<u8>>,
    resumed: bool,
    peer_certificates: Option<Vec<CertificateDer<'static>>>,
}

/// Upper bound of the bytes a record adds to its plaintext: header (5) + TLS 1.2 explicit
/// nonce (8) + AEAD tag (16); TLS 1.3 adds 5 + 1 + 16.
const RECORD_OVERHEAD: usize = 29;
const MAX_FRAGMENT: usize = 16 * 1024;
/// The largest record TLS allows on the wire: header, 2^14 bytes and 2048 of expansion (RFC
/// 5246 6.2.3; TLS 1.3 allows less).
const MAX_RECORD_WIRE: usize = 5 + MAX_FRAGMENT + 2048;
/// A client's first read of each handshake record (`read_size`): less than any ServerHello
/// record with a key share, more than a plaintext service's first line needs to be
/// recognised.
const FIRST_READ: usize = 64;
/// Unused input capacity kept after records are consumed; more is given back.
const SPARE_INPUT: usize = 4096;

/// The length on the wire (5-byte header included) of the TLS record that starts `bytes`,
/// once its header is there.
fn record_len(bytes: &[u8]) -> Option<usize> {
    let h = bytes.get(..5)?;
    Some(5 + usize::from(u16::from_be_bytes([h[3], h[4]])))
}

/// One TLS connection, sans I/O. See the [module docs](self) for how to drive it.
pub struct Session {
    conn: Conn,
    side: Side,
    incoming: Vec<u8>,
    tx: Vec<u8>,
    tx_pos: usize,
    plain: Vec<u8>,
    plain_pos: usize,
    /// With tether's record layer: unread plaintext at `incoming[window.0..window.1]`, opened
    /// in place in a record that takes `incoming[..window_record]`.
    window: (usize, usize),
    window_record: usize,
    /// While rustls has the connection: `incoming[..handshake_raw]` is what it was given
    /// (records it holds, opened in place); past it, input as received (whole records it is
    /// given one at a time during the handshake, then the start of one record).
    handshake_raw: usize,
    /// rustls holds decrypted data that `recv` has not asked for yet.
    rustls_holds_plain: bool,
    /// The peer's chain is kept once established (a client's `keep_peer_certificates`;
    /// cleared by `take_peer_certificates`).
    keep_peer_certificates: bool,
    /// `take_peer_certificates` has been called: the chain is no longer reported.
    peer_certificates_taken: bool,
    deadline: Option<Instant>,
    started: Instant,
    last_now: Instant,
    input_reserved: usize,
    handshake_duration: Option<Duration>,
    /// Boxed: an `Error` is 88 bytes, and every live session carries the field.
    error: Option<Box<Error>>,
    slot: Option<FailureSlot>,
    max_fragment: usize,
    /// The config's read chunk, for drivers ([`Session::read_chunk`]); 0: not set.
    read_chunk: u32,
    connected: bool,
    connected_event: bool,
    peer_closed: bool,
    peer_closed_event: bool,
    peer_eof: bool,
    close_requested: bool,
    close_sent: bool,
}

impl core::fmt::Debug for Session {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Session")
            .field("side", &self.side)
            .field("connected", &self.connected)
            .field("peer_closed", &self.peer_closed)
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

/// The per-call work handed to the state loop.
#[derive(Default)]
struct Work<'a> {
    read_out: Option<&'a mut [u8]>,
    read_n: usize,
    encrypt: Option<(&'a [u8], &'a mut [u8])>,
    sent: Sent,
    close: bool,
    close_done: bool,
    /// `encrypt`'s buffer cannot hold one record: the size it needs (the session goes on).
    buffer_needed: Option<usize>,
}

enum Step {
    Again,
    Idle { may_write: bool },
    PeerClosed,
    Failed(rustls::Error),
}

struct Bufs<'a> {
    tx: &'a mut Vec<u8>,
    plain: &'a mut Vec<u8>,
    max_fragment: usize,
    /// Established: decrypted records may wait in rustls until `recv` has somewhere to put
    /// them (see `handle_state`).
    connected: bool,
    /// Set when a decrypted record was left in rustls.
    held: bool,
}

fn handle_state<D>(
    status: UnbufferedStatus<'_, '_, D>,
    bufs: &mut Bufs<'_>,
    work: &mut Work<'_>,
) -> (usize, Step) {
    let mut discard = status.discard;
    let state = match status.state {
        Ok(s) => s,
        Err(e) => return (discard, Step::Failed(e)),
    };
    let step = match state {
        ConnectionState::ReadTraffic(mut rt) => {
            // Once established, a decrypted record stays in rustls (which holds it as its own
            // copy) until a call has somewhere to put it: `recv`, or `send`/`close`, which must
            // get past it to write. Taking it eagerly into `plain` would hold a third copy of
            // a full record next to rustls' and the input buffer's (see "Memory" above).
            if bufs.connected && work.read_out.is_none() && work.encrypt.is_none() && !work.close {
                bufs.held = true;
                return (discard, Step::Idle { may_write: true });
            }
            while let Some(rec) = rt.next_record() {
                let rec = match rec {
                    Ok(r) => r,
                    Err(e) => return (discard, Step::Failed(e)),
                };
                discard += rec.discard;
                let mut payload = rec.payload;
                if let Some(out) = work.read_out.as_deref_mut()
                    && bufs.plain.is_empty()
                {
                    let n = payload.len().min(out.len() - work.read_n);
                    out[work.read_n..work.read_n + n].copy_from_slice(&payload[..n]);
                    work.read_n += n;
                    payload = &payload[n..];
                }
                bufs.plain.extend_from_slice(payload);
            }
            Step::Again
        }
        ConnectionState::EncodeTlsData(mut enc) => {
            let needed = match enc.encode(&mut []) {
                Err(EncodeError::InsufficientSize(s)) => s.required_size,
                Ok(_) => 0,
                Err(EncodeError::AlreadyEncoded) => return (discard, Step::Again),
            };
            let start = bufs.tx.len();
            bufs.tx.resize(start + needed, 0);
            if let Err(e) = enc.encode(&mut bufs.tx[start..]) {
                bufs.tx.truncate(start);
                return (
                    discard,
                    Step::Failed(rustls::Error::General(alloc::format!("encode: {e}"))),
                );
            }
            Step::Again
        }
        ConnectionState::TransmitTlsData(t) => {
            // The bytes are in `tx`; the driver sends them via poll_transmit.
            t.done();
            Step::Again
        }
        ConnectionState::BlockedHandshake => Step::Idle { may_write: false },
        ConnectionState::PeerClosed => Step::PeerClosed,
        ConnectionState::Closed => Step::Idle { may_write: false },
        ConnectionState::WriteTraffic(mut wt) => {
            if let Some((data, out)) = work.encrypt.take() {
                match encrypt_fitting(&mut wt, data, out, bufs.max_fragment) {
                    Ok(sent) => {
                        work.sent.consumed += sent.consumed;
                        work.sent.written += sent.written;
                    }
                    Err(e) => return (discard, Step::Failed(e)),
                }
            }
            if work.close && !work.close_done {
                let start = bufs.tx.len();
                bufs.tx.resize(start + 64, 0);
                match wt.queue_close_notify(&mut bufs.tx[start..]) {
                    Ok(n) => bufs.tx.truncate(start + n),
                    Err(_) => bufs.tx.truncate(start),
                }
                work.close_done = true;
            }
            Step::Idle { may_write: true }
        }
        // Early data is never enabled by tether's configs.
        _ => Step::Idle { may_write: false },
    };
    (discard, step)
}

/// Encrypts as much of `data` as fits `out`.
fn encrypt_fitting<D>(
    wt: &mut rustls::unbuffered::WriteTraffic<'_, D>,
    data: &[u8],
    out: &mut [u8],
    max_fragment: usize,
) -> Result<Sent, rustls::Error> {
    if data.is_empty() {
        return Ok(Sent::default());
    }
    let per = max_fragment + RECORD_OVERHEAD;
    let full = out.len() / per;
    let rem = out.len() - full * per;
    let fits = (full * max_fragment + rem.saturating_sub(RECORD_OVERHEAD)).min(data.len());
    if fits == 0 {
        return Err(rustls::Error::General(alloc::format!(
            "BUFFER:{}",
            data.len().min(max_fragment) + RECORD_OVERHEAD
        )));
    }
    match wt.encrypt(&data[..fits], out) {
        Ok(written) => Ok(Sent {
            consumed: fits,
            written,
        }),
        Err(EncryptError::InsufficientSize(s)) => Err(rustls::Error::General(alloc::format!(
            "BUFFER:{}",
            s.required_size
        ))),
        Err(EncryptError::EncryptExhausted) => Err(rustls::Error::EncryptError),
    }
}

/// `$body` on the rustls connection, or `$other` once the record layer has taken over.
macro_rules! with_conn {
    ($conn:expr, $c:ident => $body:expr, else $other:expr) => {
        match $conn {
            Conn::Client($c) => $body,
            Conn::Server($c) => $body,
            _ => $other,
        }
    };
}

impl Session {
    /// A client session connecting to `server_name` (a DNS name or an IP address), which is
    /// sent as SNI (for DNS names) and verified against the server's certificate.
    pub fn client(
        config: &ClientConfig,
        server_name: &str,
        now: Instant,
    ) -> Result<Session, Error> {
        let name = ServerName::try_from(server_name)
            .map_err(|_| ConfigError::BadServerName(server_name.to_string()))?
            .to_owned();
        let (rustls_config, slot) = match &config.detailed_verifier {
            None => (config.rustls.clone(), None),
            Some(parts) => {
                // Pins and TOFU fail for reasons rustls' error cannot carry: give this session
                // its own verifier with a slot to report them through.
                let slot: FailureSlot = Arc::new(spin::Mutex::new(None));
                let mut c = (*config.rustls).clone();
                c.dangerous()
                    .set_certificate_verifier(Arc::new(ServerVerifier {
                        parts: parts.clone(),
                        slot: slot.clone(),
                    }));
                (Arc::new(c), Some(slot))
            }
        };
        let conn = UnbufferedClientConnection::new(rustls_config, name)
            .map_err(crate::error::from_rustls)?;
        let max_fragment = config
            .rustls
            .max_fragment_size
            .map_or(MAX_FRAGMENT, |n| n - 5);
        let mut s = Session::new(
            Conn::Client(Box::new(conn)),
            Side::Client,
            now,
            config.handshake_timeout,
            max_fragment,
            config.read_chunk,
        );
        s.slot = slot;
        s.keep_peer_certificates = config.keep_peer_certificates;
        // The ClientHello is ready at once.
        s.drive(&mut Work::default());
        Ok(s)
    }

    /// A server session.
    pub fn server(config: &ServerConfig, now: Instant) -> Result<Session, Error> {
        let conn = UnbufferedServerConnection::new(config.rustls.clone())
            .map_err(crate::error::from_rustls)?;
        let max_fragment = config
            .rustls
            .max_fragment_size
            .map_or(MAX_FRAGMENT, |n| n - 5);
        Ok(Session::new(
            Conn::Server(Box::new(conn)),
            Side::Server,
            now,
            config.handshake_timeout,
            max_fragment,
            config.read_chunk,
        ))
    }

    fn new(
        conn: Conn,
        side: Side,
        now: Instant,
        timeout: Duration,
        max_fragment: usize,
        read_chunk: Option<usize>,
    ) -> Session {
        Session {
            conn,
            side,
            incoming: Vec::new(),
            tx: Vec::new(),
            tx_pos: 0,
            plain: Vec::new(),
            plain_pos: 0,
            window: (0, 0),
            window_record: 0,
            handshake_raw: 0,
            rustls_holds_plain: false,
            keep_peer_certificates: true,
            peer_certificates_taken: false,
            deadline: Some(now + timeout),
            started: now,
            last_now: now,
            input_reserved: 0,
            handshake_duration: None,
            error: None,
            slot: None,
            max_fragment: max_fragment.min(MAX_FRAGMENT),
            // The config checked it (64 ..= 65536).
            read_chunk: read_chunk.map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX)),
            connected: false,
            connected_event: false,
            peer_closed: false,
            peer_closed_event: false,
            peer_eof: false,
            close_requested: false,
            close_sent: false,
        }
    }

    /// Which side this session is.
    pub fn side(&self) -> Side {
        self.side
    }

    /// Runs the state machine until it needs input; returns the last idle state's
    /// may-write flag.
    fn drive(&mut self, work: &mut Work<'_>) -> bool {
        // Space handed out by `input_buffer` and not committed yet (a read that was cancelled,
        // or a call in between) is not input: keep it aside, untouched, while the state machine
        // runs, so that its zeros are never parsed as records and a later `commit_input` still
        // finds what was read into it.
        if self.input_reserved > 0 {
            let start = self.incoming.len() - self.input_reserved;
            let reserved = self.incoming.split_off(start);
            let settled = self.drive_committed(work);
            self.incoming.reserve_exact(reserved.len());
            self.incoming.extend_from_slice(&reserved);
            return settled;
        }
        self.drive_committed(work)
    }

    fn drive_committed(&mut self, work: &mut Work<'_>) -> bool {
        if matches!(self.conn, Conn::Records(_)) {
            return self.drive_records(work);
        }
        self.give_records();
        let mut may_write = false;
        let mut guard = 0u32;
        while self.error.is_none() {
            guard += 1;
            if guard > 100_000 {
                // Defensive: a state machine that never settles is a bug, not a hang.
                self.fail(Error::Protocol("TLS state machine did not settle".into()));
                break;
            }
            match self.step(work) {
                Step::Again => {}
                Step::Idle { may_write: w } => {
                    may_write = w;
                    if may_write {
                        self.mark_connected();
                    }
                    if self.connected && self.switch_to_records() {
                        // The records after the handshake's last one, if any came with it.
                        return self.drive_records(work);
                    }
                    if !self.give_records() {
                        break;
                    }
                }
                Step::PeerClosed => {
                    self.peer_closed = true;
                    self.peer_closed_event = true;
                }
                Step::Failed(e) => {
                    // rustls failed after its handshake completed (a record it took because
                    // it kept the established connection: closing, or peer closed): both
                    // directions were keyed and confirmed, and `is_handshaking` says so, so a
                    // caller reports a failed connection, not a failed handshake.
                    may_write = !with_conn!(&self.conn, c => c.is_handshaking(), else true);
                    let err = self.translate(e);
                    self.flush_alert();
                    if may_write {
                        self.mark_connected();
                    }
                    self.fail(err);
                    break;
                }
            }
        }
        if self.incoming.is_empty() && self.incoming.capacity() > 0 {
            self.incoming = Vec::new();
        }
        may_write
    }

    /// The handshake has completed (once): the deadline goes, the duration is kept.
    fn mark_connected(&mut self) {
        if !self.connected {
            self.connected = true;
            self.connected_event = true;
            self.deadline = None;
            self.handshake_duration = Some(self.last_now.saturating_duration_since(self.started));
        }
    }

    /// Gives rustls more whole records of the committed input (moves `handshake_raw` past
    /// them); false if there was none.
    ///
    /// During the handshake rustls gets one record at a time, and the next only once it is
    /// idle with those it has: it never reads a record past the one that completes the
    /// handshake, which is then the record layer's. An established session that could not
    /// hand over (closing, or closed by its peer) gives rustls every record. rustls would take a TLS 1.3 KeyUpdate
    /// there and queue its answer where `dangerous_into_kernel_connection` drops it, with its
    /// send keys already moved on: the peer could not read another record (and rustls would
    /// hold application data and tickets the record layer can take in place).
    fn give_records(&mut self) -> bool {
        let count = if self.connected { usize::MAX } else { 1 };
        let mut pos = self.handshake_raw.min(self.incoming.len());
        let mut given = 0;
        while given < count
            && let Some(len) = record_len(&self.incoming[pos..])
            && pos + len <= self.incoming.len()
        {
            pos += len;
            given += 1;
        }
        self.handshake_raw = pos;
        given > 0
    }

    /// A session whose handshake has completed takes the traffic keys from rustls and does the
    /// records itself (crate `record`), so that a record is opened in place in `incoming`.
    ///
    /// Only when rustls holds nothing: no record it was given and has not consumed, no
    /// plaintext it holds (its handshake output is already in `tx`, as always); and not once
    /// close_notify was sent or received (rustls finishes those connections). The input past
    /// what rustls was given is as it came: the record layer opens it. True if it switched.
    fn switch_to_records(&mut self) -> bool {
        if !matches!(self.conn, Conn::Client(_) | Conn::Server(_))
            || self.error.is_some()
            || self.handshake_raw > 0
            || self.rustls_holds_plain
            || self.peer_closed
            || self.close_requested
        {
            return false;
        }
        let version = self.version();
        let cipher_suite = self.cipher_suite();
        let kx_group = self.kx_group();
        let alpn = self.alpn().map(<[u8]>::to_vec);
        let resumed = self.is_resumed();
        let peer_certificates = if self.keep_peer_certificates {
            self.peer_certificates().map(<[_]>::to_vec)
        } else {
            None
        };
        let records = match core::mem::replace(&mut self.conn, Conn::Switching) {
            Conn::Client(conn) => conn
                .dangerous_into_kernel_connection()
                .and_then(|(secrets, kernel)| Records::new(Kernel::Client(kernel), secrets)),
            Conn::Server(conn) => conn
                .dangerous_into_kernel_connection()
                .and_then(|(secrets, kernel)| Records::new(Kernel::Server(kernel), secrets)),
            other => {
                self.conn = other;
                return false;
            }
        };
        match records {
            Ok(records) => {
                self.conn = Conn::Records(Box::new(Established {
                    records,
                    version,
                    cipher_suite,
                    kx_group,
                    alpn,
                    resumed,
                    peer_certificates,
                }));
                true
            }
            Err(e) => {
                self.fail(record::to_error(e));
                false
            }
        }
    }

    fn established(&self) -> Option<&Established> {
        match &self.conn {
            Conn::Records(e) => Some(e),
            _ => None,
        }
    }

    /// [`drive`](Self::drive) once tether's record layer has taken over: opens records in
    /// place while no plaintext is waiting (so close_notify, tickets and key updates are seen
    /// as they arrive), copies plaintext to `recv`'s buffer, seals `send`'s data and
    /// close_notify.
    fn drive_records(&mut self, work: &mut Work<'_>) -> bool {
        let Conn::Records(est) = &mut self.conn else {
            return false;
        };
        let records = &mut est.records;
        let mut failed = None;
        loop {
            if self.window.0 < self.window.1 {
                let Some(out) = work.read_out.as_deref_mut() else {
                    break;
                };
                let n = (self.window.1 - self.window.0).min(out.len() - work.read_n);
                if n == 0 {
                    break;
                }
                out[work.read_n..work.read_n + n]
                    .copy_from_slice(&self.incoming[self.window.0..self.window.0 + n]);
                work.read_n += n;
                self.window.0 += n;
                if self.window.0 < self.window.1 {
                    break;
                }
                // The record is read: it goes.
                self.incoming.drain(..self.window_record);
                self.window = (0, 0);
                self.window_record = 0;
                continue;
            }
            if self.peer_closed {
                break;
            }
            match records.open(&mut self.incoming, &mut self.tx) {
                Ok(Opened::NeedMore) => break,
                Ok(Opened::Data { start, end, len }) => {
                    self.window = (start, end);
                    self.window_record = len;
                }
                Ok(Opened::Consumed { len }) => {
                    self.incoming.drain(..len);
                }
                Ok(Opened::Closed) => {
                    // RFC 8446 6.1: anything after close_notify is ignored.
                    self.peer_closed = true;
                    self.peer_closed_event = true;
                    self.incoming = Vec::new();
                    break;
                }
                Err(e) => {
                    records.send_alert_for(&e, &mut self.tx);
                    failed = Some(record::to_error(e));
                    break;
                }
            }
        }
        if failed.is_none()
            && let Some((data, out)) = work.encrypt.take()
        {
            match records.seal_data(data, out, self.max_fragment) {
                Ok((0, _)) if !data.is_empty() => {
                    work.buffer_needed =
                        Some(data.len().min(self.max_fragment) + records.overhead());
                }
                Ok((consumed, written)) => {
                    work.sent.consumed += consumed;
                    work.sent.written += written;
                }
                Err(e) => failed = Some(record::to_error(e)),
            }
        }
        if failed.is_none() && work.close && !work.close_done {
            records.close_notify(&mut self.tx);
            work.close_done = true;
        }
        if let Some(err) = failed {
            self.fail(err);
            return false;
        }
        if self.incoming.is_empty() {
            if self.incoming.capacity() > 0 {
                self.incoming = Vec::new();
            }
        } else if self.incoming.capacity() - self.incoming.len() > SPARE_INPUT {
            self.incoming.shrink_to_fit();
        }
        true
    }

    /// After a failure, collects the alert rustls queued, if any.
    ///
    /// rustls hands out queued records before it deframes again, so one call with the same
    /// buffer (its deframer remembers positions in it) yields the alert without re-running the
    /// step that failed.
    fn flush_alert(&mut self) {
        while with_conn!(&self.conn, c => c.wants_write(), else false) {
            if !matches!(self.step(&mut Work::default()), Step::Again) {
                break;
            }
        }
    }

    /// One turn of rustls' state machine over the buffered input; applies its discard.
    fn step(&mut self, work: &mut Work<'_>) -> Step {
        let mut bufs = Bufs {
            tx: &mut self.tx,
            plain: &mut self.plain,
            max_fragment: self.max_fragment,
            connected: self.connected,
            held: false,
        };
        // Only the records given to rustls (`give_records`), and the start of a record
        // if that is all that follows them: rustls checks its header (a peer that does not
        // speak TLS fails at its first bytes) and leaves it until it is whole.
        let mut given = self.handshake_raw.min(self.incoming.len());
        if record_len(&self.incoming[given..]).is_none_or(|len| given + len > self.incoming.len()) {
            given = self.incoming.len();
        }
        let incoming = &mut self.incoming[..given];
        let (discard, step) = with_conn!(&mut self.conn, c => {
            handle_state(c.process_tls_records(incoming), &mut bufs, work)
        }, else (0, Step::Idle { may_write: false }));
        self.rustls_holds_plain = bufs.held;
        let discard = discard.min(self.incoming.len());
        self.incoming.drain(..discard);
        self.handshake_raw = self.handshake_raw.saturating_sub(discard);
        // What is left is the start of the next record: do not keep a full record's capacity
        // around it (the next read grows it again, exactly).
        if self.incoming.capacity() - self.incoming.len() > SPARE_INPUT {
            self.incoming.shrink_to_fit();
        }
        step
    }

    fn translate(&mut self, e: rustls::Error) -> Error {
        // The first bytes are not a TLS record: say what the peer sent instead.
        if !self.connected
            && let rustls::Error::InvalidMessage(
                rustls::InvalidMessage::InvalidContentType
                | rustls::InvalidMessage::UnknownProtocolVersion,
            ) = e
        {
            return Error::Protocol(crate::error::not_tls(&self.incoming));
        }
        if let Some(slot) = &self.slot
            && let Some(detail) = slot.lock().take()
        {
            return detail;
        }
        if let rustls::Error::General(msg) = &e
            && let Some(n) = msg.strip_prefix("BUFFER:")
        {
            return Error::BufferTooSmall {
                needed: n.parse().unwrap_or(MAX_FRAGMENT + RECORD_OVERHEAD),
            };
        }
        crate::error::from_rustls(e)
    }

    fn fail(&mut self, err: Error) {
        self.error = Some(Box::new(err));
        self.deadline = None;
        self.plain = Vec::new();
        self.plain_pos = 0;
        self.incoming = Vec::new();
        self.window = (0, 0);
        self.window_record = 0;
        self.handshake_raw = 0;
        self.input_reserved = 0;
    }

    fn check(&self) -> Result<(), Error> {
        match self.error.as_deref() {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    /// Passes bytes received from the transport. All of `data` is taken.
    pub fn handle_input(&mut self, now: Instant, data: &[u8]) -> Result<(), Error> {
        self.handle_timeout(now)?;
        self.check()?;
        if data.is_empty() {
            return Ok(());
        }
        if self.peer_closed {
            // RFC 8446 6.1: data after close_notify is ignored.
            return Ok(());
        }
        self.incoming.reserve_exact(data.len());
        self.incoming.extend_from_slice(data);
        self.after_input()
    }

    /// The read chunk the config asks for (`read_chunk` on the config builders), or
    /// [`DEFAULT_READ_CHUNK`](crate::config::DEFAULT_READ_CHUNK) (4096) when it sets none:
    /// what a driver passes to [`read_size`](Self::read_size) unless it knows better. The
    /// sockets start with it.
    pub fn read_chunk(&self) -> usize {
        self.configured_read_chunk()
            .unwrap_or(crate::config::DEFAULT_READ_CHUNK)
    }

    /// The read chunk the config set, if it set one (drivers with another default).
    pub(crate) fn configured_read_chunk(&self) -> Option<usize> {
        (self.read_chunk > 0).then_some(self.read_chunk as usize)
    }

    /// How many bytes to read from the transport next, given reads of `chunk`.
    ///
    /// - `chunk` at a record boundary, and while the record being read fits in `chunk` once
    ///   the session is established (a read may then take several small records at once).
    /// - While a record larger than `chunk` is partly read, exactly what it still lacks, in
    ///   one read: a record is held whole before it is opened, so a larger read costs no
    ///   memory (it takes nothing past the record), and smaller ones cost system calls (a
    ///   16 KiB record read 4 KiB at a time took five, and a copy each time the buffer grew).
    ///   Never more than the largest record TLS allows (18,437 bytes on the wire).
    /// - During the handshake, what a partly read record lacks even when it fits in `chunk`,
    ///   and while rustls holds the first records of a handshake message split over several,
    ///   the next record's 5-byte header, then what it lacks: the input buffer holds that
    ///   message's records and no spare chunk past them. That moment is the peak of a client
    ///   whose server sends small records (its Certificate message split over two of them);
    ///   a chunk fewer there, for a read or two more per handshake.
    /// - A client during its handshake, at a record boundary: 64 bytes (or `chunk` if
    ///   smaller), then what that record lacks, so that no spare bytes sit beside the record
    ///   rustls takes (its states peak then: 150 bytes less at the ServerHello, 15 at the
    ///   Certificate of a server with 1 KiB records), for one more read per record of the
    ///   server's flight. A server reads `chunk` there.
    pub fn read_size(&self, chunk: usize) -> usize {
        let committed = &self.incoming[..self.incoming.len() - self.input_reserved];
        let lacks = if matches!(self.conn, Conn::Records(_)) || self.connected {
            // The first record not read whole: after the open window's record (tether's
            // record layer), or after the records rustls has not consumed yet.
            let mut start = if self.window.0 < self.window.1 {
                self.window_record
            } else {
                0
            };
            while let Some(len) = committed.get(start..).and_then(record_len) {
                if start + len > committed.len() {
                    break;
                }
                start += len;
            }
            let record = committed.get(start..).unwrap_or_default();
            match record_len(record) {
                // A record that fits one read keeps whole reads.
                Some(len) if len > chunk => len.saturating_sub(record.len()),
                _ => 0,
            }
        } else if self.error.is_some() {
            0
        } else {
            let held = self.handshake_raw.min(committed.len());
            let partial = &committed[held..];
            match record_len(partial) {
                Some(len) => len.saturating_sub(partial.len()),
                // rustls holds records of a split message: the next record's header first.
                None if held > 0 => 5 - partial.len(),
                // A client at a record boundary: the start of the server's next record
                // (then what it lacks), so no spare chunk sits beside it while rustls takes
                // it. The first is enough for `not_tls` to quote a plaintext service's first
                // line.
                None if self.side == Side::Client => return FIRST_READ.min(chunk),
                None => 0,
            }
        };
        match lacks {
            0 => chunk,
            n => n.min(MAX_RECORD_WIRE),
        }
    }

    /// Space to read transport bytes into directly (at least `min` bytes). Follow with
    /// [`commit_input`](Self::commit_input) and the number of bytes read.
    pub fn input_buffer(&mut self, min: usize) -> &mut [u8] {
        let start = self.incoming.len() - self.input_reserved;
        self.incoming.truncate(start);
        self.input_reserved = min;
        // Grow exactly: amortised doubling would hold up to twice a record.
        self.incoming.reserve_exact(min);
        self.incoming.resize(start + min, 0);
        &mut self.incoming[start..]
    }

    /// Commits `n` bytes read into the last [`input_buffer`](Self::input_buffer) (and
    /// discards the rest of it).
    pub fn commit_input(&mut self, now: Instant, n: usize) -> Result<(), Error> {
        let requested = core::mem::take(&mut self.input_reserved);
        let keep = self.incoming.len() - requested + n.min(requested);
        self.incoming.truncate(keep);
        self.handle_timeout(now)?;
        self.check()?;
        if self.peer_closed {
            self.incoming.clear();
            self.handshake_raw = 0;
            return Ok(());
        }
        self.after_input()
    }

    fn after_input(&mut self) -> Result<(), Error> {
        let mut work = Work::default();
        self.drive(&mut work);
        self.check()
    }

    /// Tells the session that the transport reached end-of-file (the peer closed it).
    pub fn handle_eof(&mut self) {
        self.peer_eof = true;
        if self.error.is_none() && !self.connected {
            self.fail(Error::Handshake(HandshakeError::PeerClosed));
        }
    }

    /// The deadline at which [`handle_timeout`](Self::handle_timeout) must be called, if any.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadline
    }

    /// Checks deadlines at `now`; fails the session with [`Timeout::Handshake`] when the
    /// handshake has not completed in time.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), Error> {
        if let Some(deadline) = self.deadline
            && now >= deadline
            && self.error.is_none()
        {
            self.fail(Error::Timeout(Timeout::Handshake));
        }
        if now > self.last_now {
            self.last_now = now;
        }
        self.check()
    }

    /// Copies bytes to send to the transport into `out`; returns how many (0: nothing to send).
    #[must_use]
    pub fn poll_transmit(&mut self, out: &mut [u8]) -> usize {
        if self.holds_ccs() {
            return 0;
        }
        let pending = &self.tx[self.tx_pos..];
        let n = pending.len().min(out.len());
        out[..n].copy_from_slice(&pending[..n]);
        self.tx_pos += n;
        if self.tx_pos == self.tx.len() {
            self.tx = Vec::new();
            self.tx_pos = 0;
        }
        n
    }

    /// True when [`poll_transmit`](Self::poll_transmit) has bytes to give. (A TLS 1.3
    /// client's dummy change_cipher_spec waits for the client's second flight and goes with
    /// it, in the same write.)
    pub fn wants_transmit(&self) -> bool {
        self.tx_pos < self.tx.len() && !self.holds_ccs()
    }

    /// How many bytes [`poll_transmit`](Self::poll_transmit) has to give: a buffer this size
    /// takes them all in one call (and one write to the transport).
    pub fn transmit_len(&self) -> usize {
        if self.holds_ccs() {
            return 0;
        }
        self.tx.len() - self.tx_pos
    }

    /// A TLS 1.3 client's dummy change_cipher_spec (middlebox compatibility), queued when
    /// the ServerHello arrives, waits for the client's second flight: RFC 8446 D.4 sends it
    /// "immediately before" that flight, and the server expects nothing from the client until
    /// then. Sent alone, it would cost a segment of its own (and, behind Nagle's algorithm, a
    /// round trip for the Finished after it) whenever the server's flight takes more than one
    /// read. Anything queued after it (the flight, an alert, close_notify) sends it too.
    fn holds_ccs(&self) -> bool {
        const CCS: [u8; 6] = [0x14, 0x03, 0x03, 0x00, 0x01, 0x01];
        self.side == Side::Client
            && !self.connected
            && self.error.is_none()
            && self.tx.get(self.tx_pos..) == Some(&CCS[..])
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        if self.connected_event {
            self.connected_event = false;
            return Some(Event::Connected);
        }
        if self.peer_closed_event && !self.has_buffered_data() {
            self.peer_closed_event = false;
            return Some(Event::PeerClosed);
        }
        None
    }

    fn has_buffered_data(&self) -> bool {
        self.plain_pos < self.plain.len() || self.window.0 < self.window.1
    }

    /// True until the handshake has completed.
    pub fn is_handshaking(&self) -> bool {
        !self.connected
    }

    /// True when the session has failed (see [`error`](Self::error)).
    pub fn is_failed(&self) -> bool {
        self.error.is_some()
    }

    /// The error that failed the session, if it failed.
    pub fn error(&self) -> Option<&Error> {
        self.error.as_deref()
    }

    /// True once the peer's close_notify has been received.
    pub fn is_peer_closed(&self) -> bool {
        self.peer_closed
    }

    /// Encrypts application data into `out`, after any handshake bytes still pending.
    ///
    /// Takes as much of `data` as fits; call again with the rest. Fails with
    /// [`Error::BufferTooSmall`] when `out` cannot hold even one small record.
    pub fn send(&mut self, data: &[u8], out: &mut [u8]) -> Result<Sent, Error> {
        self.check()?;
        if !self.connected {
            return Err(Error::Handshake(HandshakeError::Other(
                "the handshake has not completed; drive it before sending".into(),
            )));
        }
        if self.close_requested {
            return Err(Error::Closed);
        }
        let written = self.poll_transmit(out);
        if self.wants_transmit() {
            return Ok(Sent {
                consumed: 0,
                written,
            });
        }
        let (_, rest) = out.split_at_mut(written);
        let mut work = Work {
            encrypt: Some((data, rest)),
            ..Work::default()
        };
        self.drive(&mut work);
        self.check()?;
        if let Some(needed) = work.buffer_needed
            && written == 0
        {
            return Err(Error::BufferTooSmall { needed });
        }
        let sent = work.sent;
        Ok(Sent {
            consumed: sent.consumed,
            written: written + sent.written,
        })
    }

    /// Decrypted application data into `buf`.
    ///
    /// Returns [`Recv::Closed`] after close_notify once everything was read. If the transport
    /// reached EOF without close_notify, fails with [`Error::Truncated`].
    pub fn recv(&mut self, buf: &mut [u8]) -> Result<Recv, Error> {
        self.check()?;
        if buf.is_empty() {
            return Ok(Recv::Pending);
        }
        if self.plain_pos < self.plain.len() {
            let avail = &self.plain[self.plain_pos..];
            let n = avail.len().min(buf.len());
            buf[..n].copy_from_slice(&avail[..n]);
            self.plain_pos += n;
            if self.plain_pos == self.plain.len() {
                self.plain = Vec::new();
                self.plain_pos = 0;
            }
            return Ok(Recv::Data(n));
        }
        if self.connected {
            let mut work = Work {
                read_out: Some(buf),
                ..Work::default()
            };
            self.drive(&mut work);
            let n = work.read_n;
            if n > 0 {
                return Ok(Recv::Data(n));
            }
            self.check()?;
        }
        if self.peer_closed {
            return Ok(Recv::Closed);
        }
        if self.peer_eof {
            let err = if self.connected {
                Error::Truncated
            } else {
                Error::Handshake(HandshakeError::PeerClosed)
            };
            self.fail(err.clone());
            return Err(err);
        }
        Ok(Recv::Pending)
    }

    /// Queues close_notify (once the handshake has completed); send it with
    /// [`poll_transmit`](Self::poll_transmit).
    pub fn close(&mut self) {
        if self.close_sent || self.error.is_some() {
            return;
        }
        self.close_requested = true;
        if self.connected {
            let mut work = Work {
                close: true,
                ..Work::default()
            };
            self.drive(&mut work);
            self.close_sent = work.close_done;
        }
    }

    /// Ends an established connection with a fatal alert instead of close_notify.
    ///
    /// For a peer that completed the handshake but that the application turns away: a gateway
    /// refusing a device its allow-list does not name sends [`Alert::ACCESS_DENIED`], so the
    /// device learns why instead of seeing a connection closed for no reason. (Before the
    /// handshake has completed, refusing is the verifier's job, and rustls sends the alert.)
    /// The alert is sealed under the connection's send keys like any record (TLS 1.2 and 1.3,
    /// either side); send it with [`poll_transmit`](Self::poll_transmit), then close the
    /// transport. From then on the session is closed: calls fail with [`Error::Closed`], and
    /// what the handshake settled (version, peer certificates) is no longer reported.
    ///
    /// Fails with [`Error::Closed`] before the handshake has completed, after a failure, or
    /// once close_notify has been queued; with [`Error::Config`] for an alert that is not an
    /// error (close_notify, user_canceled). Should the keys not be available (rustls refusing
    /// to hand them over), the session fails with that error and nothing is queued.
    pub fn refuse(&mut self, alert: Alert) -> Result<(), Error> {
        self.check()?;
        if !self.connected || self.close_sent || matches!(self.conn, Conn::Switching) {
            return Err(Error::Closed);
        }
        if matches!(alert.0, 0 | 90) {
            return Err(ConfigError::Inconsistent(alloc::format!(
                "{alert} is not an error alert; use close() to end a connection normally"
            ))
            .into());
        }
        let desc = rustls::AlertDescription::from(alert.0);
        let sealed = match core::mem::replace(&mut self.conn, Conn::Switching) {
            Conn::Records(mut est) => est.records.fatal_alert(desc, &mut self.tx),
            Conn::Client(c) => {
                c.dangerous_into_kernel_connection()
                    .and_then(|(secrets, kernel)| {
                        record::seal_fatal_alert(&kernel, secrets, desc, &mut self.tx)
                    })
            }
            Conn::Server(c) => {
                c.dangerous_into_kernel_connection()
                    .and_then(|(secrets, kernel)| {
                        record::seal_fatal_alert(&kernel, secrets, desc, &mut self.tx)
                    })
            }
            Conn::Switching => Err(rustls::Error::HandshakeNotComplete),
        };
        self.close_requested = true;
        self.close_sent = true;
        match sealed {
            Ok(()) => {
                self.fail(Error::Closed);
                Ok(())
            }
            // Nothing was queued; the session cannot go on either way.
            Err(e) => {
                let e = record::to_error(e);
                self.fail(e.clone());
                Err(e)
            }
        }
    }

    /// True once close_notify has been queued.
    pub fn is_close_sent(&self) -> bool {
        self.close_sent
    }

    /// The negotiated TLS version.
    pub fn version(&self) -> Option<TlsVersion> {
        with_conn!(&self.conn, c => c.protocol_version().and_then(TlsVersion::from_rustls),
            else self.established().and_then(|e| e.version))
    }

    /// The negotiated cipher suite.
    pub fn cipher_suite(&self) -> Option<CipherSuite> {
        with_conn!(&self.conn, c => c.negotiated_cipher_suite().map(|s| s.suite()),
            else self.established().and_then(|e| e.cipher_suite))
    }

    /// The negotiated key-exchange group (absent on TLS 1.2 resumption).
    pub fn kx_group(&self) -> Option<NamedGroup> {
        with_conn!(&self.conn, c => c.negotiated_key_exchange_group().map(|g| g.name()),
            else self.established().and_then(|e| e.kx_group))
    }

    /// The negotiated ALPN protocol.
    pub fn alpn(&self) -> Option<&[u8]> {
        with_conn!(&self.conn, c => c.alpn_protocol(),
            else self.established().and_then(|e| e.alpn.as_deref()))
    }

    /// True when this connection resumed an earlier session.
    pub fn is_resumed(&self) -> bool {
        with_conn!(&self.conn, c => c.handshake_kind() == Some(HandshakeKind::Resumed),
            else self.established().is_some_and(|e| e.resumed))
    }

    /// The peer's certificate chain (leaf first), once received. A resumed session carries the
    /// chain of the session it resumed.
    pub fn peer_certificates(&self) -> Option<&[CertificateDer<'static>]> {
        if self.peer_certificates_taken {
            return None;
        }
        with_conn!(&self.conn, c => c.peer_certificates(),
            else self.established().and_then(|e| e.peer_certificates.as_deref()))
    }

    /// Takes the peer's certificate chain (leaf first) out of the session, which reports
    /// `None` from then on ([`peer_certificates`](Self::peer_certificates) included): for a server that needs the chain only once, when the handshake
    /// completes (the gateway reads the device id from it), and should not hold it for the
    /// life of the connection (a device's leaf is about 0.6 KB a session; rustls keeps a copy
    /// of its own, which tether cannot release). Before the handshake has completed the chain
    /// is rustls' and this returns a copy of it.
    pub fn take_peer_certificates(&mut self) -> Option<Vec<CertificateDer<'static>>> {
        let chain = match &mut self.conn {
            Conn::Records(e) => e.peer_certificates.take(),
            _ => self.peer_certificates().map(<[_]>::to_vec),
        };
        // Not copied again when the session moves to its record layer.
        self.keep_peer_certificates = false;
        self.peer_certificates_taken = true;
        chain
    }

    /// How long the handshake took, from creation to completion, measured with the `now`
    /// values passed in.
    pub fn handshake_duration(&self) -> Option<Duration> {
        self.handshake_duration
    }
}

#[cfg(all(test, feature = "std"))]
mod record_layer_tests {
    //! What only the crate can reach: the record layer's send limit, moved down so that a test
    //! crosses it (a real one is 2^23 records and more).
    use super::*;
    use crate::{Identity, Trust};
    use rustls::ContentType;

    const CA: &[u8] = include_bytes!("../tests/data/ca.pem");
    const CERT: &[u8] = include_bytes!("../tests/data/server.pem");
    const KEY: &[u8] = include_bytes!("../tests/data/server.key");
    const NOW: Instant = Instant::from_millis(1_000);

    fn pump(from: &mut Session, to: &mut Session) -> bool {
        let mut buf = alloc::vec![0u8; 32 * 1024];
        let mut moved = false;
        loop {
            let n = from.poll_transmit(&mut buf);
            if n == 0 {
                return moved;
            }
            moved = true;
            to.handle_input(NOW, &buf[..n]).unwrap();
        }
    }

    /// A client and a server session for version `v`, nothing exchanged yet.
    fn sessions(v: TlsVersion) -> (Session, Session) {
        let client = ClientConfig::builder(Trust::from_pem(CA).unwrap())
            .versions(v, v)
            .build()
            .unwrap();
        let server = ServerConfig::builder(Identity::from_pem(CERT, KEY).unwrap())
            .build()
            .unwrap();
        (
            Session::client(&client, "localhost", NOW).unwrap(),
            Session::server(&server, NOW).unwrap(),
        )
    }

    fn pair(v: TlsVersion) -> (Session, Session) {
        let (mut c, mut s) = sessions(v);
        while pump(&mut c, &mut s) | pump(&mut s, &mut c) {}
        assert!(!c.is_handshaking() && !s.is_handshaking());
        (c, s)
    }

    fn records(c: &mut Session) -> &mut Records {
        match &mut c.conn {
            Conn::Records(e) => &mut e.records,
            _ => panic!("the session did not switch to its record layer"),
        }
    }

    fn send(c: &mut Session, data: &[u8]) -> Result<Vec<u8>, Error> {
        let mut out = alloc::vec![0u8; 1024];
        let sent = c.send(data, &mut out)?;
        assert_eq!(sent.consumed, data.len());
        Ok(out[..sent.written].to_vec())
    }

    /// `refuse` on one side of an established pair: the other side fails with the alert.
    fn refused_by(refusing: &mut Session, peer: &mut Session, alert: Alert) {
        refusing.refuse(alert).unwrap();
        assert!(refusing.is_close_sent());
        assert_eq!(refusing.send(b"x", &mut [0u8; 64]), Err(Error::Closed));
        let mut wire = [0u8; 256];
        let n = refusing.poll_transmit(&mut wire);
        assert!(n > 0, "no alert to send");
        let _ = peer.handle_input(NOW, &wire[..n]);
        let mut buf = [0u8; 64];
        let expected = Error::Handshake(HandshakeError::AlertReceived(alert));
        assert_eq!(peer.recv(&mut buf), Err(expected.clone()));
        assert_eq!(peer.error(), Some(&expected));
    }

    #[test]
    fn a_server_refuses_an_established_client_with_the_alert_it_chose() {
        for v in [TlsVersion::Tls12, TlsVersion::Tls13] {
            let (mut c, mut s) = pair(v);
            refused_by(&mut s, &mut c, Alert::ACCESS_DENIED);
        }
    }

    #[test]
    fn a_client_refuses_its_server_the_same_way() {
        for v in [TlsVersion::Tls12, TlsVersion::Tls13] {
            let (mut c, mut s) = pair(v);
            // Data first: the alert's sequence number follows the records already sent.
            let wire = send(&mut c, b"hello").unwrap();
            s.handle_input(NOW, &wire).unwrap();
            assert_eq!(s.recv(&mut [0u8; 64]), Ok(Recv::Data(5)));
            refused_by(&mut c, &mut s, Alert::INTERNAL_ERROR);
        }
    }

    #[test]
    fn only_an_established_connection_can_be_refused_and_only_with_an_error_alert() {
        let (_, mut s) = sessions(TlsVersion::Tls13);
        assert_eq!(s.refuse(Alert::ACCESS_DENIED), Err(Error::Closed));
        let (_, mut s) = pair(TlsVersion::Tls13);
        for not_an_error in [Alert(0), Alert(90)] {
            assert!(matches!(s.refuse(not_an_error), Err(Error::Config(_))));
        }
        s.close();
        assert_eq!(s.refuse(Alert::ACCESS_DENIED), Err(Error::Closed));
    }

    /// `from` sends one-byte records `a`, `b`, ... (`count` of them) with its send keys'
    /// limit moved so that it updates them every `every` records; returns what `to` read.
    fn one_byte_records_across_key_updates(
        from: &mut Session,
        to: &mut Session,
        every: u64,
        count: u8,
    ) -> Vec<u8> {
        records(from).set_tx_limit(record::KEY_UPDATE_MARGIN + every);
        let mut got = Vec::new();
        for i in 0..count {
            let wire = send(from, &[b'a' + i]).unwrap();
            assert!(records(from).tx_seq() <= every, "record {i}: no key update");
            got.extend(deliver(to, &wire).unwrap());
        }
        got
    }

    #[test]
    fn tls13_client_updates_its_keys_before_the_limit_and_the_server_follows() {
        let (mut c, mut s) = pair(TlsVersion::Tls13);
        // The server took every KeyUpdate and decrypted everything after it.
        assert_eq!(
            one_byte_records_across_key_updates(&mut c, &mut s, 3, 10),
            b"abcdefghij"
        );
        // And the other way still works.
        let wire = send(&mut s, b"pong").unwrap();
        assert_eq!(deliver(&mut c, &wire), Ok(b"pong".to_vec()));
    }

    #[test]
    fn tls13_server_updates_its_keys_before_the_limit_and_the_client_follows() {
        let (mut c, mut s) = pair(TlsVersion::Tls13);
        assert_eq!(
            one_byte_records_across_key_updates(&mut s, &mut c, 2, 7),
            b"abcdefg"
        );
    }

    /// Feeds `wire` to `to` and reads: the data, or the error that ended it.
    fn deliver(to: &mut Session, wire: &[u8]) -> Result<Vec<u8>, Error> {
        let _ = to.handle_input(NOW, wire);
        let mut got = Vec::new();
        let mut buf = [0u8; 256];
        loop {
            match to.recv(&mut buf)? {
                Recv::Data(n) => got.extend_from_slice(&buf[..n]),
                _ => return Ok(got),
            }
        }
    }

    /// Everything `from` has queued to send (an alert, a KeyUpdate, handshake records).
    fn queued(from: &mut Session) -> Vec<u8> {
        let mut wire = Vec::new();
        let mut buf = [0u8; 512];
        loop {
            match from.poll_transmit(&mut buf) {
                0 => return wire,
                n => wire.extend_from_slice(&buf[..n]),
            }
        }
    }

    fn misbehaved(err: Error, what: &str) {
        match err {
            Error::Protocol(m) => assert!(m.contains(what), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    /// Each side, each version: `(receiver, sender)` of an established pair.
    fn both_ways(v: TlsVersion) -> [(Session, Session); 2] {
        let (c, s) = pair(v);
        let (c2, s2) = pair(v);
        [(c, s), (s2, c2)]
    }

    #[test]
    fn four_warning_alerts_are_let_through_and_a_fifth_fails_the_connection() {
        for (mut to, mut from) in both_ways(TlsVersion::Tls12) {
            let side = to.side();
            for _ in 0..4 {
                let mut wire = Vec::new();
                records(&mut from)
                    .seal_raw(ContentType::Alert, &[1, 90], &mut wire)
                    .unwrap();
                assert_eq!(deliver(&mut to, &wire), Ok(Vec::new()), "{side:?}");
            }
            let mut wire = Vec::new();
            records(&mut from)
                .seal_raw(ContentType::Alert, &[1, 90], &mut wire)
                .unwrap();
            misbehaved(deliver(&mut to, &wire).unwrap_err(), "TooManyWarningAlerts");
            // Told so: unexpected_message, under the keys of the connection.
            let alert = queued(&mut to);
            assert!(!alert.is_empty(), "{side:?}: no alert");
            assert_eq!(
                deliver(&mut from, &alert),
                Err(Error::Handshake(HandshakeError::AlertReceived(Alert(10))))
            );
        }
    }

    /// TLS 1.2 renegotiation: a client's ClientHello to a server, a server's HelloRequest to
    /// a client. The first gets a no_renegotiation warning and the connection goes on (data
    /// both ways); the second fails it.
    #[test]
    fn one_renegotiation_request_is_refused_with_a_warning_and_a_second_fails() {
        for (mut to, mut from) in both_ways(TlsVersion::Tls12) {
            let request: &[u8] = match to.side() {
                Side::Server => &[1, 0, 0, 2, 3, 3],
                Side::Client => &[0, 0, 0, 0],
            };
            let mut wire = Vec::new();
            records(&mut from)
                .seal_raw(ContentType::Handshake, request, &mut wire)
                .unwrap();
            wire.extend(send(&mut from, b"after").unwrap());
            assert_eq!(deliver(&mut to, &wire), Ok(b"after".to_vec()));
            // The warning reaches the requester, which goes on (TLS 1.2 warnings are not
            // fatal), and data still flows back.
            let mut back = queued(&mut to);
            back.extend(send(&mut to, b"back").unwrap());
            assert_eq!(deliver(&mut from, &back), Ok(b"back".to_vec()));
            let mut wire = Vec::new();
            records(&mut from)
                .seal_raw(ContentType::Handshake, request, &mut wire)
                .unwrap();
            misbehaved(deliver(&mut to, &wire).unwrap_err(), "TooManyRenegotiation");
        }
    }

    /// TLS 1.3: 32 KeyUpdates between two records of data are followed (the answer to each
    /// request goes out), a 33rd fails; data in between starts the count again.
    #[test]
    fn key_updates_are_bounded_between_records_of_data() {
        for (mut to, mut from) in both_ways(TlsVersion::Tls13) {
            for round in 0..2 {
                let mut wire = Vec::new();
                for _ in 0..32 {
                    records(&mut from)
                        .seal_key_update_raw(true, &mut wire)
                        .unwrap();
                }
                wire.extend(send(&mut from, b"data").unwrap());
                assert_eq!(
                    deliver(&mut to, &wire),
                    Ok(b"data".to_vec()),
                    "round {round}"
                );
            }
            // One KeyUpdate answers all the requests before the next data (header, message,
            // content type, tag): it reaches the requester, whose new receive keys open what
            // comes after it.
            let mut back = queued(&mut to);
            assert_eq!(back.len(), 5 + 5 + 1 + 16);
            back.extend(send(&mut to, b"back").unwrap());
            assert_eq!(deliver(&mut from, &back), Ok(b"back".to_vec()));
            let mut wire = Vec::new();
            for _ in 0..33 {
                records(&mut from)
                    .seal_key_update_raw(false, &mut wire)
                    .unwrap();
            }
            misbehaved(deliver(&mut to, &wire).unwrap_err(), "TooManyKeyUpdate");
        }
    }

    #[test]
    fn empty_records_are_bounded_in_a_row() {
        for v in [TlsVersion::Tls12, TlsVersion::Tls13] {
            for (mut to, mut from) in both_ways(v) {
                let mut wire = Vec::new();
                for _ in 0..32 {
                    records(&mut from)
                        .seal_raw(ContentType::ApplicationData, &[], &mut wire)
                        .unwrap();
                }
                wire.extend(send(&mut from, b"x").unwrap());
                for _ in 0..32 {
                    records(&mut from)
                        .seal_raw(ContentType::ApplicationData, &[], &mut wire)
                        .unwrap();
                }
                assert_eq!(deliver(&mut to, &wire), Ok(b"x".to_vec()), "{v:?}");
                let mut wire = Vec::new();
                records(&mut from)
                    .seal_raw(ContentType::ApplicationData, &[], &mut wire)
                    .unwrap();
                misbehaved(
                    deliver(&mut to, &wire).unwrap_err(),
                    "TooManyEmptyFragments",
                );
            }
        }
    }

    /// A server is never sent tickets: one is an unexpected message, and fails the connection.
    #[test]
    fn a_ticket_sent_to_a_server_fails_it() {
        let (mut c, mut s) = pair(TlsVersion::Tls13);
        let mut wire = Vec::new();
        records(&mut c)
            .seal_raw(ContentType::Handshake, &[4, 0, 0, 1, 0], &mut wire)
            .unwrap();
        let err = deliver(&mut s, &wire).unwrap_err();
        match err {
            Error::Protocol(m) => assert!(m.contains("a handshake message after the handshake")),
            other => panic!("{other:?}"),
        }
        let alert = queued(&mut s);
        assert_eq!(
            deliver(&mut c, &alert),
            Err(Error::Handshake(HandshakeError::AlertReceived(Alert(10))))
        );
    }

    /// A server hands the client's chain over once (`take_peer_certificates`) and keeps no
    /// copy, here with the client's first data sent with its Finished, and a client the same.
    #[test]
    fn a_taken_client_chain_is_not_kept_by_the_record_layer() {
        const CLIENT: &[u8] = include_bytes!("../tests/data/client.pem");
        const CLIENT_KEY: &[u8] = include_bytes!("../tests/data/client.key");
        let client = ClientConfig::builder(Trust::from_pem(CA).unwrap())
            .versions(TlsVersion::Tls13, TlsVersion::Tls13)
            .identity(Identity::from_pem(CLIENT, CLIENT_KEY).unwrap())
            .build()
            .unwrap();
        let server = ServerConfig::builder(Identity::from_pem(CERT, KEY).unwrap())
            .client_auth(crate::ClientAuth::Required(Trust::from_pem(CA).unwrap()))
            .build()
            .unwrap();
        let mut c = Session::client(&client, "localhost", NOW).unwrap();
        let mut s = Session::server(&server, NOW).unwrap();
        pump(&mut c, &mut s);
        pump(&mut s, &mut c);
        assert!(!c.is_handshaking());
        // The client's Finished and its first data, in one input.
        let mut out = alloc::vec![0u8; 4096];
        let sent = c.send(b"first", &mut out).unwrap();
        let mut wire = alloc::vec![0u8; 8192];
        let n = c.poll_transmit(&mut wire);
        wire.truncate(n);
        wire.extend_from_slice(&out[..sent.written]);
        s.handle_input(NOW, &wire).unwrap();
        assert!(!s.is_handshaking());
        let leaf = s.take_peer_certificates().expect("the client's chain")[0].clone();
        let pem = Identity::from_pem(CLIENT, CLIENT_KEY).unwrap();
        assert_eq!(leaf.as_ref(), pem.chain[0].as_ref());
        assert_eq!(s.peer_certificates(), None);
        let mut buf = [0u8; 64];
        assert_eq!(s.recv(&mut buf), Ok(Recv::Data(5)));
        match &s.conn {
            Conn::Records(e) => assert!(e.peer_certificates.is_none(), "the chain was copied"),
            _ => panic!("the server did not switch"),
        }
        assert_eq!(s.take_peer_certificates(), None);
        // A session that switched before: the copy it kept goes with the take.
        let (mut c, mut s) = sessions(TlsVersion::Tls13);
        while pump(&mut c, &mut s) | pump(&mut s, &mut c) {}
        assert!(c.peer_certificates().is_some());
        assert!(c.take_peer_certificates().is_some());
        match &c.conn {
            Conn::Records(e) => assert!(e.peer_certificates.is_none()),
            _ => panic!("the client did not switch"),
        }
        assert_eq!(c.peer_certificates(), None);
        // And data still flows both ways.
        let wire = send(&mut c, b"ping").unwrap();
        s.handle_input(NOW, &wire).unwrap();
        assert_eq!(s.recv(&mut buf), Ok(Recv::Data(4)));
    }

    /// TLS 1.2: the server's last flight and its first data in one write, which reaches the
    /// client cut in the middle of the data record: the client switches with half a record in
    /// its input (which rustls never touched) and the data arrives whole.
    #[test]
    fn the_client_switches_with_half_a_record_in_its_input() {
        let (mut c, mut s) = sessions(TlsVersion::Tls12);
        // ClientHello -> server flight -> client's second flight -> server completes.
        pump(&mut c, &mut s);
        pump(&mut s, &mut c);
        pump(&mut c, &mut s);
        assert!(!s.is_handshaking() && c.is_handshaking());
        // The server's CCS + Finished, then a data record, in one buffer.
        let data: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
        let mut out = alloc::vec![0u8; 8192];
        let sent = s.send(&data, &mut out).unwrap();
        assert_eq!(sent.consumed, data.len());
        let wire = &out[..sent.written];
        let cut = wire.len() - 1000;
        c.handle_input(NOW, &wire[..cut]).unwrap();
        assert!(!c.is_handshaking());
        assert!(
            matches!(c.conn, Conn::Records(_)),
            "the client did not switch with a partial record in its input"
        );
        c.handle_input(NOW, &wire[cut..]).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 512];
        while let Ok(Recv::Data(n)) = c.recv(&mut buf) {
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, data);
    }

    /// TLS 1.3: the client's Finished, a KeyUpdate that asks for the server's and data, read
    /// by the server in one input (as a busy server reads a client that updates its keys at
    /// once, as `openssl s_client`'s `K` does). rustls must not take the KeyUpdate: it would
    /// answer it into a queue that the record layer never sees, and the server's next records
    /// would go out under keys its client was never told of. The server answers it itself,
    /// before its first data under the new keys.
    #[test]
    fn a_key_update_read_with_the_clients_finished_is_answered() {
        let (mut c, mut s) = sessions(TlsVersion::Tls13);
        pump(&mut c, &mut s);
        pump(&mut s, &mut c);
        assert!(!c.is_handshaking() && s.is_handshaking());
        let mut wire = queued(&mut c);
        records(&mut c)
            .seal_key_update_raw(true, &mut wire)
            .unwrap();
        wire.extend(send(&mut c, b"ping").unwrap());
        assert_eq!(deliver(&mut s, &wire), Ok(b"ping".to_vec()));
        assert!(matches!(s.conn, Conn::Records(_)));
        // The server's tickets, its KeyUpdate, then data under its new keys.
        let mut back = queued(&mut s);
        back.extend(send(&mut s, b"pong").unwrap());
        assert_eq!(deliver(&mut c, &back), Ok(b"pong".to_vec()));
        // And the client's data still reaches the server.
        let wire = send(&mut c, b"again").unwrap();
        assert_eq!(deliver(&mut s, &wire), Ok(b"again".to_vec()));
    }

    /// A record that cannot be sealed (here close_notify past the limit) leaves nothing in the
    /// output: no zeroed space where it would have gone.
    #[test]
    fn a_record_that_cannot_be_sealed_leaves_no_bytes_behind() {
        let (mut c, _s) = pair(TlsVersion::Tls12);
        let seq = records(&mut c).tx_seq();
        records(&mut c).set_tx_limit(seq);
        c.close();
        assert!(!c.wants_transmit(), "{} bytes queued", c.transmit_len());
    }

    #[test]
    fn tls12_client_stops_at_the_limit() {
        let (mut c, mut s) = pair(TlsVersion::Tls12);
        let limit = records(&mut c).tx_seq() + 2;
        records(&mut c).set_tx_limit(limit);
        for _ in 0..2 {
            let wire = send(&mut c, b"x").unwrap();
            s.handle_input(NOW, &wire).unwrap();
        }
        // TLS 1.2 has no key update: the third record would pass the limit.
        match send(&mut c, b"x") {
            Err(Error::Protocol(m)) => assert!(m.contains("reconnect"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert!(c.is_failed());
    }
}
