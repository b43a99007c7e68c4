//! The DTLS listener: one UDP socket, sessions by peer address, stateless cookies first.
//!
//! One task owns the socket and every DTLS session (a [`tether::dtls::Session`] each, in a
//! table keyed by the peer's address and port):
//!
//! - A datagram from an address with a session goes to that session; from any other address
//!   it goes to the [`Acceptor`], which answers a first ClientHello
//!   with a cookie request and keeps nothing, and makes a session only for a ClientHello that
//!   echoes a valid cookie (bound to the address, the ClientHello and a rotating secret). So
//!   datagrams from spoofed addresses never make table entries; anything else is dropped and
//!   counted (`tether_dtls_datagrams_dropped_total`).
//! - Limits: at most `dtls_max_handshaking` sessions in their handshake and `max_connections`
//!   DTLS sessions in all; a ClientHello over a limit is dropped (the client retransmits).
//! - A completed handshake is checked as on TLS (the device id is the common name of the client
//!   certificate's subject, then the allow-list) and listed in `/devices` with `"transport":
//!   "dtls"`; the session series in `/metrics` carry `transport="dtls"`.
//! - Frames: each record's plaintext goes through a [`tether_wire::Decoder`], so one record
//!   may carry several frames and a frame may span records (in arrival order: DTLS may lose
//!   or reorder records, which breaks a frame that spans them; devices send a frame per
//!   record). Replies are packed into as few records as fit the MTU.
//!   Whole frames at the start of a record are answered straight from it.
//! - A new ClientHello (another client random) from the address of an established session is
//!   a device that restarted behind the same address and port (RFC 6347 4.2.8): it goes through
//!   the cookie exchange, and its new session replaces the old one.
//! - Timers: every [`TICK`] the task runs the sessions' retransmission and handshake timers
//!   and closes (close_notify) sessions idle for the idle timeout.
//! - The socket, through quinn-udp: `recvmmsg` (with GRO: a buffer may hold several datagrams
//!   of one sender, cut apart at its stride), and GSO sends (replies to one peer in a row, of
//!   one size, in one `sendmsg`).
//! - Drain: no new sessions; datagrams already in the socket are served, then every session
//!   gets close_notify.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, SystemTime};

use tether::dtls::{Accept, Acceptor, Session};
use tether::{Event, Instant};
use tether_wire::{Decoder, Frame};
use tokio::net::UdpSocket;
use tokio::sync::watch;

use crate::config::ClientAuthPolicy;
use crate::gateway::Shared;
use crate::metrics::{CloseReason, DtlsDrop, FailReason, FrameKind, TransportMetrics};
use crate::registry::{ConnStats, DTLS_IDS, NewDevice, RegistryGuard};

/// How often timers (retransmissions, handshake deadlines, idle expiry) run.
pub(crate) const TICK: Duration = Duration::from_millis(50);
/// The largest datagram read.
const MAX_DATAGRAM: usize = 65535;
/// The UDP socket's receive and send buffer sizes asked for (the kernel caps them at
/// `net.core.rmem_max` / `wmem_max`).
pub(crate) const SOCKET_BUFFER: usize = 4 << 20;
/// The most bytes one GSO send carries (a UDP payload is at most 65,507 bytes).
const GSO_MAX_BYTES: usize = 60_000;
/// Datagrams read in one go before timers get a turn.
const BATCH: usize = 256;

/// A bound DTLS listener, ready to [`serve`].
#[derive(Debug)]
pub(crate) struct Listener {
    pub socket: UdpSocket,
    pub udp: quinn_udp::UdpSocketState,
    pub config: tether::dtls::ServerConfig,
    pub max_handshaking: usize,
    pub max_sessions: usize,
}

fn now() -> Instant {
    static ORIGIN: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let origin = *ORIGIN.get_or_init(std::time::Instant::now);
    Instant::from_micros(u64::try_from(origin.elapsed().as_micros()).unwrap_or(u64::MAX))
}

fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// An established device session.
struct Device {
    decoder: Decoder,
    entry: RegistryGuard,
}

struct Peer {
    session: Session,
    /// `None` while handshaking.
    device: Option<Device>,
    started: Instant,
    last_input: Instant,
    /// The client random of the ClientHello that made the session: a late copy of that
    /// ClientHello (reordered, duplicated) must not replace it.
    hello_random: Option<[u8; 32]>,
}

/// The client random of a plaintext ClientHello record (record header 13 bytes, handshake
/// header 12, version 2), if `d` is long enough to hold one.
fn hello_random(d: &[u8]) -> Option<[u8; 32]> {
    d.get(27..59).and_then(|r| r.try_into().ok())
}

/// What happened to a peer after a datagram or a timer.
enum Outcome {
    Keep,
    /// Remove it; the reason is already counted.
    Remove,
}

struct State {
    socket: UdpSocket,
    udp: quinn_udp::UdpSocketState,
    shared: Arc<Shared>,
    acceptor: Acceptor,
    peers: HashMap<SocketAddr, Peer>,
    handshaking: usize,
    max_handshaking: usize,
    max_sessions: usize,
    next_id: u64,
    /// Datagrams to send, gathered while handling input (sent before the next read).
    outbox: Vec<(SocketAddr, Vec<u8>)>,
    /// Scratch, kept between calls: the replies to one session's records, and a GSO batch.
    replies: Vec<u8>,
    joined: Vec<u8>,
    draining: bool,
    /// The identity generation the acceptor's config comes from.
    identity: u64,
}

/// Runs the listener until the gateway drains; then serves what the socket holds and closes
/// every session with close_notify.
pub(crate) async fn serve(
    listener: Listener,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let acceptor = match Acceptor::new(&listener.config, now()) {
        Ok(a) => a,
        Err(e) => {
            tracing::error!("DTLS listener cannot start: {e}");
            return;
        }
    };
    let mut st = State {
        socket: listener.socket,
        udp: listener.udp,
        shared,
        acceptor,
        peers: HashMap::new(),
        handshaking: 0,
        max_handshaking: listener.max_handshaking,
        max_sessions: listener.max_sessions,
        next_id: 0,
        outbox: Vec::new(),
        replies: Vec::new(),
        joined: Vec::new(),
        draining: false,
        identity: 0,
    };
    let mut rx = Receiver::new(st.udp.gro_segments());
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    if !*stop.borrow_and_update() {
        loop {
            tokio::select! {
                biased;
                _ = stop.changed() => break,
                r = st.socket.readable() => {
                    match r {
                        Ok(()) => st.read_ready(&mut rx).await,
                        Err(e) => st.recv_error(e).await,
                    }
                    st.flush().await;
                }
                _ = tick.tick() => {
                    st.renewed_identity();
                    st.timers();
                    st.flush().await;
                }
            }
        }
    }
    st.drain(&mut rx).await;
}

/// Receive buffers for `recvmmsg` (quinn-udp): a batch of datagrams per system call, and with
/// GRO several datagrams of one sender per buffer.
struct Receiver {
    bufs: Vec<Vec<u8>>,
    meta: Vec<quinn_udp::RecvMeta>,
}

impl Receiver {
    fn new(gro_segments: usize) -> Receiver {
        let size = (MAX_DATAGRAM * gro_segments.max(1)).min(64 * 1024);
        Receiver {
            bufs: (0..quinn_udp::BATCH_SIZE)
                .map(|_| vec![0u8; size])
                .collect(),
            meta: vec![quinn_udp::RecvMeta::default(); quinn_udp::BATCH_SIZE],
        }
    }
}

impl State {
    fn metrics(&self) -> &TransportMetrics {
        self.shared.metrics.dtls()
    }

    async fn recv_error(&mut self, e: io::Error) {
        match e.kind() {
            // ICMP port unreachable from a peer that went away; nothing to do.
            io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted => {}
            _ => {
                tracing::warn!("DTLS listener: receive failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    /// Reads what the socket holds (a few batches), handing each datagram to its peer.
    async fn read_ready(&mut self, rx: &mut Receiver) {
        for _ in 0..BATCH / quinn_udp::BATCH_SIZE.max(1) + 1 {
            let got = {
                let mut iovs: Vec<io::IoSliceMut<'_>> =
                    rx.bufs.iter_mut().map(|b| io::IoSliceMut::new(b)).collect();
                let (socket, udp, meta) = (&self.socket, &self.udp, &mut rx.meta);
                socket.try_io(tokio::io::Interest::READABLE, || {
                    udp.recv(socket.into(), &mut iovs, meta)
                })
            };
            match got {
                Ok(n) => {
                    for i in 0..n {
                        let meta = rx.meta[i];
                        let data = &rx.bufs[i][..meta.len];
                        let stride = if meta.stride == 0 {
                            meta.len.max(1)
                        } else {
                            meta.stride
                        };
                        for d in data.chunks(stride) {
                            self.on_datagram(meta.addr, d);
                        }
                        if meta.len == 0 {
                            self.on_datagram(meta.addr, &[]);
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    self.recv_error(e).await;
                    return;
                }
            }
        }
    }

    fn publish_table(&self) {
        self.shared
            .metrics
            .set_dtls_table(self.handshaking, self.peers.capacity());
    }

    fn on_datagram(&mut self, from: SocketAddr, d: &[u8]) {
        self.shared.metrics.dtls_datagram_in(d.len());
        let t = now();
        if let Some(peer) = self.peers.get_mut(&from) {
            // A new ClientHello from the address of an established session: the device
            // restarted behind the same address and port (RFC 6347 4.2.8). It goes through the
            // cookie exchange like any new peer; once it echoes a valid cookie, its new session
            // replaces the old one. Anything else goes to the session.
            if peer.device.is_some()
                && !self.draining
                && d.first() == Some(&22)
                && d.get(3..5) == Some(&[0, 0][..])
                && hello_random(d) != peer.hello_random
            {
                match self.acceptor.accept(t, from, d) {
                    Accept::Reply(replies) => {
                        self.shared.metrics.dtls_cookie_request();
                        self.outbox.extend(replies.into_iter().map(|r| (from, r)));
                        return;
                    }
                    Accept::Session(session) => {
                        if let Some(old) = self.peers.get_mut(&from) {
                            old.session.close();
                            while let Some(d) = old.session.pop_datagram() {
                                self.outbox.push((from, d));
                            }
                        }
                        self.metrics().connection_closed(CloseReason::Replaced);
                        self.remove(from);
                        self.new_session(from, session, t, d);
                        return;
                    }
                    // Not a ClientHello (e.g. a retransmitted flight): the session's.
                    Accept::Drop(_) => {}
                }
            }
            let Some(peer) = self.peers.get_mut(&from) else {
                return;
            };
            peer.last_input = t;
            let r = peer.session.handle_datagram(t, d);
            let outcome = self.after_input(from, r);
            if let Outcome::Remove = outcome {
                self.remove(from);
            }
            return;
        }
        if self.draining {
            self.shared.metrics.dtls_dropped(DtlsDrop::Draining);
            return;
        }
        if self.handshaking >= self.max_handshaking {
            self.shared.metrics.dtls_dropped(DtlsDrop::HandshakeLimit);
            return;
        }
        if self.peers.len() >= self.max_sessions {
            self.shared.metrics.dtls_dropped(DtlsDrop::SessionLimit);
            return;
        }
        match self.acceptor.accept(t, from, d) {
            Accept::Reply(replies) => {
                self.shared.metrics.dtls_cookie_request();
                self.outbox.extend(replies.into_iter().map(|r| (from, r)));
            }
            Accept::Session(session) => self.new_session(from, session, t, d),
            Accept::Drop(why) => {
                let why = match why {
                    tether::dtls::DropReason::BadCookie => DtlsDrop::BadCookie,
                    tether::dtls::DropReason::Refused => DtlsDrop::Refused,
                    _ => DtlsDrop::Garbage,
                };
                self.shared.metrics.dtls_dropped(why);
            }
        }
    }

    /// A session the acceptor made (it has taken the ClientHello; its answer is waiting).
    fn new_session(&mut self, from: SocketAddr, session: Box<Session>, t: Instant, hello: &[u8]) {
        self.metrics().opened();
        self.handshaking += 1;
        self.peers.insert(
            from,
            Peer {
                session: *session,
                device: None,
                started: t,
                last_input: t,
                hello_random: hello_random(hello),
            },
        );
        if let Outcome::Remove = self.after_input(from, Ok(())) {
            self.remove(from);
        }
        self.publish_table();
    }

    /// After a datagram or a timer reached the peer's session: handshake completion, frames,
    /// failures, close.
    fn after_input(&mut self, from: SocketAddr, r: Result<(), tether::Error>) -> Outcome {
        let shared = self.shared.clone();
        let slots = self.peers.capacity();
        let Some(peer) = self.peers.get_mut(&from) else {
            return Outcome::Keep;
        };
        let outcome = match r {
            Err(e) => {
                if peer.device.is_none() {
                    let why = FailReason::of(&e);
                    shared.metrics.dtls().handshake_failed(why);
                    tracing::debug!(%from, reason = why.name(), "DTLS handshake failed: {e}");
                } else {
                    let why = match e {
                        tether::Error::Timeout(_) | tether::Error::Transport(_) => {
                            CloseReason::Transport
                        }
                        _ => CloseReason::TlsError,
                    };
                    shared.metrics.dtls().connection_closed(why);
                }
                Outcome::Remove
            }
            Ok(()) => {
                if peer.device.is_none() && !peer.session.is_handshaking() {
                    self.next_id += 1;
                    match established(&shared, peer, from, DTLS_IDS + self.next_id) {
                        Ok(()) => {
                            self.handshaking = self.handshaking.saturating_sub(1);
                            shared.metrics.set_dtls_table(self.handshaking, slots);
                            serve_frames(&shared, peer, &mut self.replies)
                        }
                        Err(why) => {
                            shared.metrics.dtls().handshake_failed(why);
                            tracing::info!(%from, reason = why.name(), "DTLS device refused");
                            peer.session.close();
                            Outcome::Remove
                        }
                    }
                } else if peer.device.is_some() {
                    serve_frames(&shared, peer, &mut self.replies)
                } else {
                    Outcome::Keep
                }
            }
        };
        // What the session has to send (its flight, replies, an alert, close_notify).
        while let Some(d) = peer.session.pop_datagram() {
            self.outbox.push((from, d));
        }
        outcome
    }

    fn remove(&mut self, from: SocketAddr) {
        if let Some(peer) = self.peers.remove(&from) {
            if peer.device.is_none() {
                self.handshaking = self.handshaking.saturating_sub(1);
            }
            self.metrics().closed_slot();
        }
        // Give memory back when the table has emptied a lot.
        if self.peers.capacity() > 64 && self.peers.len() < self.peers.capacity() / 4 {
            self.peers.shrink_to_fit();
        }
        self.publish_table();
    }

    /// After a certificate renewal (`Shared::identity_generation` moved), new sessions are
    /// made with the new config; cookies already sent stay valid.
    fn renewed_identity(&mut self) {
        let now_at = self
            .shared
            .identity_generation
            .load(std::sync::atomic::Ordering::Acquire);
        if now_at == self.identity {
            return;
        }
        let config = self
            .shared
            .dtls_config
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        if let Some(config) = config {
            self.acceptor.set_config(&config);
        }
        self.identity = now_at;
    }

    /// Retransmissions, handshake deadlines, idle expiry, cookie secret rotation.
    fn timers(&mut self) {
        let t = now();
        self.acceptor.handle_timeout(t);
        let idle = self.shared.idle_timeout;
        let mut due = Vec::new();
        for (addr, peer) in &self.peers {
            let timer = peer.session.poll_timeout().is_some_and(|d| d <= t);
            let close = match &peer.device {
                Some(d) if d.entry.stats.revoked.load(Relaxed) => Some(CloseReason::Revoked),
                Some(_) if t.saturating_duration_since(peer.last_input) >= idle => {
                    Some(CloseReason::IdleTimeout)
                }
                _ => None,
            };
            if timer || close.is_some() {
                due.push((*addr, close));
            }
        }
        for (addr, close) in due {
            let outcome = if let Some(why) = close {
                if let Some(peer) = self.peers.get_mut(&addr) {
                    peer.session.close();
                    while let Some(d) = peer.session.pop_datagram() {
                        self.outbox.push((addr, d));
                    }
                }
                self.metrics().connection_closed(why);
                Outcome::Remove
            } else {
                let r = match self.peers.get_mut(&addr) {
                    Some(peer) => peer.session.handle_timeout(t),
                    None => continue,
                };
                self.after_input(addr, r)
            };
            if let Outcome::Remove = outcome {
                self.remove(addr);
            }
        }
        self.publish_table();
    }

    /// Sends the outbox: datagrams to one peer in a row, of one size (the last may be
    /// shorter), go out as one GSO send (`UDP_SEGMENT`: the kernel cuts them apart), the rest
    /// one by one; per peer, in order.
    async fn flush(&mut self) {
        // Taken out for the loop (it borrows `self`), put back empty to keep its capacity.
        let mut out = std::mem::take(&mut self.outbox);
        let mut joined = std::mem::take(&mut self.joined);
        let max_segments = self.udp.max_gso_segments().max(1);
        let mut at = 0;
        while at < out.len() {
            let (to, first) = (&out[at].0, &out[at].1);
            let size = first.len();
            let mut end = at + 1;
            while end < out.len()
                && end - at < max_segments
                && (end - at + 1) * size <= GSO_MAX_BYTES
                && out[end].0 == *to
                && out[end - 1].1.len() == size
                && out[end].1.len() <= size
                && !out[end].1.is_empty()
            {
                end += 1;
            }
            let contents: &[u8] = if end - at == 1 {
                first
            } else {
                joined.clear();
                for (_, d) in &out[at..end] {
                    joined.extend_from_slice(d);
                }
                &joined
            };
            let transmit = quinn_udp::Transmit {
                destination: *to,
                ecn: None,
                contents,
                segment_size: (end - at > 1).then_some(size),
                src_ip: None,
            };
            let sent = loop {
                let r = self.socket.try_io(tokio::io::Interest::WRITABLE, || {
                    self.udp.try_send((&self.socket).into(), &transmit)
                });
                match r {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        if let Err(e) = self.socket.writable().await {
                            break Err(e);
                        }
                    }
                    r => break r,
                }
            };
            match sent {
                Ok(()) => {
                    for (_, d) in &out[at..end] {
                        self.shared.metrics.dtls_datagram_out(d.len());
                    }
                }
                // A datagram the kernel refuses (an unreachable address...): skip it.
                Err(e) => tracing::debug!(%to, "DTLS send failed: {e}"),
            }
            at = end;
        }
        // The datagrams' buffers go back to the sessions' pool.
        for (_, d) in out.drain(..) {
            tether::dtls::recycle(d);
        }
        self.outbox = out;
        joined.clear();
        self.joined = joined;
    }

    async fn drain(&mut self, rx: &mut Receiver) {
        self.draining = true;
        // Serve what has already arrived.
        self.read_ready(rx).await;
        let addrs: Vec<SocketAddr> = self.peers.keys().copied().collect();
        for addr in addrs {
            if let Some(peer) = self.peers.get_mut(&addr)
                && peer.device.is_some()
            {
                peer.session.close();
                while let Some(d) = peer.session.pop_datagram() {
                    self.outbox.push((addr, d));
                }
                self.shared
                    .metrics
                    .dtls()
                    .connection_closed(CloseReason::Drain);
            }
            self.remove(addr);
        }
        self.flush().await;
        tracing::info!("DTLS listener drained");
    }
}

/// The handshake completed: device id, allow-list, registry entry.
fn established(
    shared: &Shared,
    peer: &mut Peer,
    from: SocketAddr,
    id: u64,
) -> Result<(), FailReason> {
    let session = &peer.session;
    let device_id = match &shared.client_auth {
        ClientAuthPolicy::ServerOnly => None,
        ClientAuthPolicy::Required { .. } => {
            let id = session.peer_certificate().and_then(crate::conn::device_id);
            match &id {
                None => return Err(FailReason::NoDeviceId),
                Some(id) if !shared.allowed(id) => return Err(FailReason::NotAllowed),
                _ => {}
            }
            id
        }
    };
    let took = now().saturating_duration_since(peer.started);
    shared.metrics.dtls().handshake_ok(took, false);
    let entry = shared.registry.insert_dtls(
        id,
        NewDevice {
            device_id,
            remote: from,
            version: session.version().map_or("", |v| v.as_str()),
            suite: session
                .cipher_suite()
                .and_then(|s| s.as_str())
                .unwrap_or("unknown"),
            resumed: false,
        },
        |id| shared.allowed(id),
    );
    peer.device = Some(Device {
        decoder: Decoder::new(shared.max_frame),
        entry,
    });
    // The Connected event is known from is_handshaking; take it off the queue.
    let _ = peer.session.poll_event();
    Ok(())
}

/// Decrypts every record the session holds, answers each frame, sends the replies.
fn serve_frames(shared: &Shared, peer: &mut Peer, replies: &mut Vec<u8>) -> Outcome {
    let Some(device) = peer.device.as_mut() else {
        return Outcome::Keep;
    };
    let stats = device.entry.stats.clone();
    replies.clear();
    let mut closed = None;
    loop {
        let record = match peer.session.recv_owned() {
            Ok(Some(r)) => r,
            Ok(None) => {
                if peer.session.is_peer_closed() {
                    closed = Some(CloseReason::PeerClosed);
                }
                break;
            }
            Err(_) => {
                closed = Some(CloseReason::TlsError);
                break;
            }
        };
        let too_large = answer_record(shared, device, &stats, replies, &record);
        tether::dtls::recycle(record);
        if too_large {
            closed = Some(CloseReason::FrameTooLarge);
            break;
        }
    }
    if matches!(peer.session.poll_event(), Some(Event::PeerClosed)) {
        closed = Some(CloseReason::PeerClosed);
    }
    // Replies, packed into records that fit one datagram each.
    let max = peer.session.max_send_size().max(1);
    for chunk in replies.chunks(max) {
        if peer.session.send(chunk).is_err() {
            closed.get_or_insert(CloseReason::TlsError);
            break;
        }
    }
    match closed {
        None => Outcome::Keep,
        Some(why) => {
            shared.metrics.dtls().connection_closed(why);
            // close_notify (answering the peer's, or after the ERROR frame).
            peer.session.close();
            Outcome::Remove
        }
    }
}

/// Answers the frames of one record; true when a frame was over the limit (its ERROR frame is
/// the last reply).
///
/// While the decoder holds nothing, whole frames at the start of the record are answered
/// straight from it (an ECHO's reply is its own bytes: no decoding, no copy of the body into a
/// frame); what is left (a frame that goes on in the next record, one over the limit) goes
/// through the decoder, as any split does.
fn answer_record(
    shared: &Shared,
    device: &mut Device,
    stats: &ConnStats,
    replies: &mut Vec<u8>,
    record: &[u8],
) -> bool {
    let mut rest = record;
    if device.decoder.is_idle() {
        let m = shared.metrics.dtls();
        while let Some(head) = rest.first_chunk::<{ tether_wire::HEADER_LEN }>() {
            let header = tether_wire::Header::decode(head);
            let whole = tether_wire::HEADER_LEN + header.len as usize;
            if header.len > shared.max_frame || rest.len() < whole {
                break;
            }
            let (frame, tail) = rest.split_at(whole);
            m.frame_in(FrameKind::of(header.kind), whole);
            stats.frames_in.fetch_add(1, Relaxed);
            stats.bytes_in.fetch_add(whole as u64, Relaxed);
            if header.kind == tether_wire::FrameType::Echo {
                m.frame_out(FrameKind::Echo, whole);
                stats.frames_out.fetch_add(1, Relaxed);
                stats.bytes_out.fetch_add(whole as u64, Relaxed);
                replies.extend_from_slice(frame);
            } else {
                let request = Frame::new(header.kind, &frame[tether_wire::HEADER_LEN..]);
                push_reply(
                    m,
                    stats,
                    &tether_wire::reply(&request, unix_millis()),
                    replies,
                );
            }
            rest = tail;
        }
    }
    if rest.is_empty() {
        return false;
    }
    device.decoder.push(rest);
    answer_all(shared, device, stats, replies)
}

/// Answers every whole frame the decoder holds; true when a frame was over the limit (its
/// ERROR frame is the last reply).
fn answer_all(
    shared: &Shared,
    device: &mut Device,
    stats: &ConnStats,
    replies: &mut Vec<u8>,
) -> bool {
    let m = shared.metrics.dtls();
    loop {
        match device.decoder.next_frame() {
            Ok(Some(frame)) => {
                let size = frame.encoded_len();
                m.frame_in(FrameKind::of(frame.kind), size);
                stats.frames_in.fetch_add(1, Relaxed);
                stats.bytes_in.fetch_add(size as u64, Relaxed);
                if frame.kind == tether_wire::FrameType::Echo {
                    // The reply to ECHO is the request itself: no copy of the body.
                    push_reply(m, stats, &frame, replies);
                } else {
                    push_reply(
                        m,
                        stats,
                        &tether_wire::reply(&frame, unix_millis()),
                        replies,
                    );
                }
            }
            Ok(None) => return false,
            Err(e) => {
                push_reply(m, stats, &e.error_frame(), replies);
                return true;
            }
        }
    }
}

fn push_reply(m: &TransportMetrics, stats: &ConnStats, reply: &Frame, replies: &mut Vec<u8>) {
    let size = reply.encoded_len();
    m.frame_out(FrameKind::of(reply.kind), size);
    stats.frames_out.fetch_add(1, Relaxed);
    stats.bytes_out.fetch_add(size as u64, Relaxed);
    reply.encode_into(replies);
}
