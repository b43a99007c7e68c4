//! One device connection: handshake (bounded by the handshake timeout), identity and
//! allow-list, then the frame loop (reply per frame, idle timeout, drain).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, SystemTime};

use tether::error::Alert;
use tether::{Recv, Session};
use tether_wire::{Decoder, Frame};
use tokio::net::TcpStream;

use crate::config::ClientAuthPolicy;
use crate::driver::{DriveError, Input, TlsConn, now};
use crate::gateway::Shared;
use crate::metrics::{CloseReason, FailReason, FrameKind};
use crate::registry::{ConnStats, NewDevice, Slot};

/// How long a closing connection waits for the peer to close after our close_notify.
const LINGER: Duration = Duration::from_secs(2);
/// How long the alert of a failed handshake may take to send.
const ALERT_SEND: Duration = Duration::from_secs(1);
/// Replies gathered before they are written (then decryption goes on).
const REPLY_BATCH: usize = 64 * 1024;

/// Runs one connection to its end. `slot` (the connection's place in the limits) is released
/// when this returns.
pub(crate) async fn serve(
    shared: Arc<Shared>,
    tcp: TcpStream,
    remote: SocketAddr,
    slot: Slot,
    id: u64,
) {
    let _slot = slot;
    let accepted = tokio::time::Instant::now();
    // TCP_NODELAY comes from the listener (`gateway::listen`).
    let session = match Session::server(&shared.server_config(), now()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(%remote, "cannot start a TLS session: {e}");
            return;
        }
    };
    let mut conn = TlsConn::new(tcp, session, shared.metrics.clone());

    let deadline = accepted + shared.handshake_timeout;
    let failed = match tokio::time::timeout_at(deadline, conn.handshake()).await {
        Ok(Ok(())) => None,
        Ok(Err(DriveError::Tls(e))) => Some(FailReason::of(&e)),
        Ok(Err(DriveError::Io(e))) => {
            tracing::debug!(%remote, "socket error during the handshake: {e}");
            Some(FailReason::Transport)
        }
        Err(_) => Some(FailReason::Timeout),
    };
    if let Some(reason) = failed {
        shared.metrics.handshake_failed(reason);
        tracing::debug!(%remote, reason = reason.name(), "handshake failed");
        // The alert the session queued (unknown_ca, certificate_required...), if any.
        let _ = tokio::time::timeout(ALERT_SEND, conn.flush()).await;
        return;
    }

    let device_id = match &shared.client_auth {
        ClientAuthPolicy::ServerOnly => None,
        ClientAuthPolicy::Required { .. } => {
            // Taken, not borrowed: the session keeps no copy of the device's chain for the
            // life of the connection (about 0.6 KB a session).
            let id = conn
                .session_mut()
                .take_peer_certificates()
                .and_then(|chain| chain.first().and_then(device_id));
            let refused = match &id {
                None => Some(FailReason::NoDeviceId),
                Some(id) if !shared.allowed(id) => Some(FailReason::NotAllowed),
                _ => None,
            };
            if let Some(reason) = refused {
                shared.metrics.handshake_failed(reason);
                tracing::info!(
                    %remote,
                    device = id.as_deref().unwrap_or("(no common name)"),
                    reason = reason.name(),
                    "device refused"
                );
                // access_denied, not close_notify: the device learns it is refused, not that
                // the connection ended for no reason.
                let _ = conn.session_mut().refuse(Alert::ACCESS_DENIED);
                conn.close(LINGER).await;
                return;
            }
            id
        }
    };
    let session = conn.session();
    let resumed = session.is_resumed();
    shared.metrics.handshake_ok(accepted.elapsed(), resumed);
    let entry = shared.registry.insert(
        id,
        NewDevice {
            device_id,
            remote,
            version: session.version().map_or("", |v| v.as_str()),
            suite: session
                .cipher_suite()
                .and_then(|s| s.as_str())
                .unwrap_or("unknown"),
            resumed,
        },
        |id| shared.allowed(id),
    );
    let (why, close) = frame_loop(&mut conn, &shared, &entry.stats).await;
    // Counted and unlisted before the linger: the device is gone for the API already.
    shared.metrics.connection_closed(why);
    drop(entry);
    if let Some(linger) = close {
        if why == CloseReason::Revoked {
            // Taken off the allow-list while connected: told so, like a device refused at
            // its handshake.
            let _ = conn.session_mut().refuse(Alert::ACCESS_DENIED);
        }
        conn.close(linger).await;
    }
}

/// The device id: the first common name of the certificate's subject.
pub(crate) fn device_id(leaf: &tether::CertificateDer<'_>) -> Option<String> {
    tether::trust::subject_common_name(leaf).map(str::to_owned)
}

/// What decrypting and answering found.
enum Pumped {
    /// Everything decrypted was answered; wait for more input.
    Idle,
    /// The reply batch is full; write it, then come back (more plaintext may be waiting).
    More,
    /// The device sent close_notify.
    PeerClosed,
    /// A frame was over the limit: its ERROR frame is the last reply.
    TooLarge,
    /// The session failed.
    Failed(tether::Error),
}

/// Serves frames until the connection ends: why, and whether (with how long a linger) to send
/// close_notify and close.
///
/// One wake-up besides the socket and the idle timer: `stats.kick`, for a revocation (the
/// registry sets `revoked` first) and for a drain (the gateway wakes every listed session
/// after it starts draining; a session listed later sees the drain here at its start). One
/// `Notified` in the idle future instead of a second source for the shutdown watch: the
/// connection future is 168 bytes smaller (1,240 instead of 1,408).
async fn frame_loop(
    conn: &mut TlsConn,
    shared: &Shared,
    stats: &ConnStats,
) -> (CloseReason, Option<Duration>) {
    let mut decoder = Decoder::new(shared.max_frame);
    let mut draining = shared.is_draining();
    let mut drain_deadline = tokio::time::Instant::now() + shared.drain_timeout / 2;
    loop {
        let mut replies = Vec::new();
        let pumped = pump(
            conn.session_mut(),
            &mut decoder,
            shared,
            stats,
            &mut replies,
        );
        if !replies.is_empty() {
            match tokio::time::timeout(shared.idle_timeout, conn.send(&replies)).await {
                Ok(Ok(())) => {}
                Ok(Err(DriveError::Tls(_))) => return (CloseReason::TlsError, None),
                Ok(Err(DriveError::Io(_))) | Err(_) => return (CloseReason::Transport, None),
            }
        }
        drop(replies);
        match pumped {
            Pumped::Idle => {}
            Pumped::More => continue,
            // The device said it is done: answer close_notify and close, no linger.
            Pumped::PeerClosed => return (CloseReason::PeerClosed, Some(Duration::ZERO)),
            Pumped::TooLarge => return (CloseReason::FrameTooLarge, Some(LINGER)),
            Pumped::Failed(e) => {
                tracing::debug!("session failed: {e}");
                let _ = tokio::time::timeout(ALERT_SEND, conn.flush()).await;
                let why = match e {
                    // A device that vanished without close_notify.
                    tether::Error::Transport(_) | tether::Error::Truncated => {
                        CloseReason::Transport
                    }
                    _ => CloseReason::TlsError,
                };
                return (why, None);
            }
        }

        if draining {
            // Answer what has already arrived: what the socket holds now, and the rest of a
            // frame that is partly in (until the drain deadline).
            match conn.try_read_input() {
                Ok(Some(_)) => continue,
                Ok(None) => {}
                Err(_) => return (CloseReason::Drain, None),
            }
            if !decoder.is_idle() {
                match tokio::time::timeout_at(drain_deadline, conn.read_input()).await {
                    Ok(Ok(_)) => continue,
                    Ok(Err(_)) => return (CloseReason::Drain, None),
                    Err(_) => {}
                }
            }
            let linger = drain_deadline.saturating_duration_since(tokio::time::Instant::now());
            return (CloseReason::Drain, Some(linger.min(LINGER)));
        }

        // Anything still queued (session tickets after the handshake) goes out before waiting.
        if conn.session().wants_transmit() {
            match tokio::time::timeout(shared.idle_timeout, conn.flush()).await {
                Ok(Ok(())) => {}
                Ok(Err(DriveError::Tls(_))) => return (CloseReason::TlsError, None),
                Ok(Err(DriveError::Io(_))) | Err(_) => return (CloseReason::Transport, None),
            }
        }

        if stats.revoked.load(Relaxed) {
            return (CloseReason::Revoked, Some(LINGER));
        }
        tokio::select! {
            biased;
            () = stats.kick.notified() => {
                if stats.revoked.load(Relaxed) {
                    return (CloseReason::Revoked, Some(LINGER));
                }
                if shared.is_draining() {
                    draining = true;
                    drain_deadline = tokio::time::Instant::now() + shared.drain_timeout / 2;
                }
            }
            input = conn.read_input() => match input {
                Ok(Input::Data | Input::Eof) => {}
                // The session failed on this input: the next pump reports it.
                Err(DriveError::Tls(_)) => {}
                Err(DriveError::Io(_)) => return (CloseReason::Transport, None),
            },
            () = tokio::time::sleep(shared.idle_timeout) => {
                return (CloseReason::IdleTimeout, Some(LINGER));
            }
        }
    }
}

fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Decrypts what the session holds, decodes frames and appends a reply per frame.
///
/// Synchronous on purpose: its read buffer lives on the stack of this call, never in the
/// connection's future, so an idle connection does not carry it.
fn pump(
    session: &mut Session,
    decoder: &mut Decoder,
    shared: &Shared,
    stats: &ConnStats,
    replies: &mut Vec<u8>,
) -> Pumped {
    let mut buf = [0u8; 8 * 1024];
    loop {
        if replies.len() >= REPLY_BATCH {
            return Pumped::More;
        }
        let n = match session.recv(&mut buf) {
            Ok(Recv::Data(n)) => n,
            Ok(Recv::Pending) => return Pumped::Idle,
            Ok(Recv::Closed) => return Pumped::PeerClosed,
            Err(e) => return Pumped::Failed(e),
        };
        decoder.push(&buf[..n]);
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => answer(&frame, shared, stats, replies),
                Ok(None) => break,
                Err(e) => {
                    push_reply(&e.error_frame(), shared, stats, replies);
                    return Pumped::TooLarge;
                }
            }
        }
    }
}

fn answer(frame: &Frame, shared: &Shared, stats: &ConnStats, replies: &mut Vec<u8>) {
    let size = frame.encoded_len();
    shared.metrics.frame_in(FrameKind::of(frame.kind), size);
    stats.frames_in.fetch_add(1, Relaxed);
    stats.bytes_in.fetch_add(size as u64, Relaxed);
    let reply = tether_wire::reply(frame, unix_millis());
    push_reply(&reply, shared, stats, replies);
}

fn push_reply(reply: &Frame, shared: &Shared, stats: &ConnStats, replies: &mut Vec<u8>) {
    let size = reply.encoded_len();
    shared.metrics.frame_out(FrameKind::of(reply.kind), size);
    stats.frames_out.fetch_add(1, Relaxed);
    stats.bytes_out.fetch_add(size as u64, Relaxed);
    reply.encode_into(replies);
}
