//! Who is connected: the device registry behind `GET /devices`, and the connection limits.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde::Serialize;

use crate::metrics::{Metrics, RejectReason};

/// Per-connection traffic counters, shared between the connection's task and the registry,
/// and the registry's way to end the session.
#[derive(Debug, Default)]
pub(crate) struct ConnStats {
    pub frames_in: AtomicU64,
    pub frames_out: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    /// Set when the device's id left the allow-list; the TLS task also gets `kick`, the DTLS
    /// listener looks at the flag on its timer tick.
    pub revoked: AtomicBool,
    /// Wakes the TLS task: a revocation (`revoked` set first) or the gateway's drain.
    pub kick: tokio::sync::Notify,
}

/// One established device session, as `GET /devices` shows it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeviceInfo {
    /// The common name of the client certificate's subject; `null` with server-only TLS.
    pub device_id: Option<String>,
    /// The device's address and port as the gateway sees it.
    pub remote_addr: String,
    /// `tls` (TLS over TCP) or `dtls` (DTLS over UDP).
    pub transport: String,
    /// `TLSv1.2`, `TLSv1.3`, `DTLSv1.2` or `DTLSv1.3`.
    pub tls_version: String,
    /// The IANA name of the cipher suite.
    pub cipher_suite: String,
    /// Whether the session was resumed (ticket or session id).
    pub resumed: bool,
    /// When the handshake completed, RFC 3339 UTC.
    pub connected_since: String,
    /// Frames received from the device.
    pub frames_in: u64,
    /// Frames sent to the device.
    pub frames_out: u64,
    /// Frame bytes (headers and bodies) received from the device.
    pub bytes_in: u64,
    /// Frame bytes sent to the device.
    pub bytes_out: u64,
}

#[derive(Debug)]
struct Entry {
    /// Insertion order (`/devices` lists the oldest first).
    order: u64,
    transport: &'static str,
    device_id: Option<String>,
    remote: SocketAddr,
    version: &'static str,
    suite: &'static str,
    resumed: bool,
    /// Formatted when listed: a connection pays for no string it may never show.
    since: std::time::SystemTime,
    stats: Arc<ConnStats>,
}

/// Established sessions by connection number.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    entries: Mutex<HashMap<u64, Entry>>,
    next_order: AtomicU64,
}

/// Registry keys of DTLS sessions: apart from the TLS listener's connection numbers.
pub(crate) const DTLS_IDS: u64 = 1 << 63;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What the registry records for a new session.
pub(crate) struct NewDevice {
    pub device_id: Option<String>,
    pub remote: SocketAddr,
    pub version: &'static str,
    pub suite: &'static str,
    pub resumed: bool,
}

impl Registry {
    /// A TLS session. `allowed` is the allow-list check (see [`insert_for`](Self::insert_for)).
    pub(crate) fn insert(
        self: &Arc<Self>,
        id: u64,
        d: NewDevice,
        allowed: impl Fn(&str) -> bool,
    ) -> RegistryGuard {
        self.insert_for(id, d, "tls", allowed)
    }

    /// A DTLS session (`id` at or above [`DTLS_IDS`]).
    pub(crate) fn insert_dtls(
        self: &Arc<Self>,
        id: u64,
        d: NewDevice,
        allowed: impl Fn(&str) -> bool,
    ) -> RegistryGuard {
        self.insert_for(id, d, "dtls", allowed)
    }

    /// Lists the session. Its device id is checked with `allowed` under the lock that
    /// [`revoke`](Self::revoke) takes after a new allow-list is installed, so a session
    /// admitted under the old list is either found by `revoke` or marked revoked here.
    fn insert_for(
        self: &Arc<Self>,
        id: u64,
        d: NewDevice,
        transport: &'static str,
        allowed: impl Fn(&str) -> bool,
    ) -> RegistryGuard {
        let stats = Arc::new(ConnStats::default());
        let since = std::time::SystemTime::now();
        let order = self.next_order.fetch_add(1, Relaxed);
        let mut entries = lock(&self.entries);
        if d.device_id.as_deref().is_some_and(|id| !allowed(id)) {
            stats.revoked.store(true, Relaxed);
        }
        entries.insert(
            id,
            Entry {
                order,
                transport,
                device_id: d.device_id,
                remote: d.remote,
                version: d.version,
                suite: d.suite,
                resumed: d.resumed,
                since,
                stats: stats.clone(),
            },
        );
        RegistryGuard {
            registry: self.clone(),
            id,
            stats,
        }
    }

    pub(crate) fn list(&self) -> Vec<DeviceInfo> {
        let entries = lock(&self.entries);
        let mut out: Vec<(u64, DeviceInfo)> = entries
            .values()
            .map(|e| {
                (
                    e.order,
                    DeviceInfo {
                        device_id: e.device_id.clone(),
                        remote_addr: e.remote.to_string(),
                        transport: e.transport.to_owned(),
                        tls_version: e.version.to_owned(),
                        cipher_suite: e.suite.to_owned(),
                        resumed: e.resumed,
                        connected_since: tether_pki::rfc3339(e.since.into()),
                        frames_in: e.stats.frames_in.load(Relaxed),
                        frames_out: e.stats.frames_out.load(Relaxed),
                        bytes_in: e.stats.bytes_in.load(Relaxed),
                        bytes_out: e.stats.bytes_out.load(Relaxed),
                    },
                )
            })
            .collect();
        drop(entries);
        // Oldest session first.
        out.sort_by_key(|(id, _)| *id);
        out.into_iter().map(|(_, d)| d).collect()
    }

    pub(crate) fn len(&self) -> usize {
        lock(&self.entries).len()
    }

    /// Wakes every listed session (the gateway's drain has started).
    pub(crate) fn wake_all(&self) {
        for e in lock(&self.entries).values() {
            e.stats.kick.notify_one();
        }
    }

    /// Marks and wakes every session whose device id `allowed` refuses; returns how many.
    pub(crate) fn revoke(&self, allowed: impl Fn(&str) -> bool) -> usize {
        let entries = lock(&self.entries);
        let mut n = 0;
        for e in entries.values() {
            if let Some(id) = &e.device_id
                && !allowed(id)
                && !e.stats.revoked.swap(true, Relaxed)
            {
                e.stats.kick.notify_one();
                n += 1;
            }
        }
        n
    }
}

/// Removes its entry from the registry when dropped.
#[derive(Debug)]
pub(crate) struct RegistryGuard {
    registry: Arc<Registry>,
    id: u64,
    pub stats: Arc<ConnStats>,
}

impl Drop for RegistryGuard {
    fn drop(&mut self) {
        lock(&self.registry.entries).remove(&self.id);
    }
}

/// Global and per-IP connection limits.
#[derive(Debug)]
pub(crate) struct Limits {
    max_total: usize,
    max_per_ip: usize,
    state: Mutex<LimitState>,
}

#[derive(Debug, Default)]
struct LimitState {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

impl Limits {
    pub(crate) fn new(max_total: usize, max_per_ip: usize) -> Limits {
        Limits {
            max_total,
            max_per_ip,
            state: Mutex::new(LimitState::default()),
        }
    }

    /// Takes a slot for a connection from `ip`, or says which limit is reached.
    pub(crate) fn acquire(
        self: &Arc<Self>,
        ip: IpAddr,
        metrics: &Arc<Metrics>,
    ) -> Result<Slot, RejectReason> {
        let mut s = lock(&self.state);
        if s.total >= self.max_total {
            return Err(RejectReason::GlobalLimit);
        }
        let n = s.per_ip.entry(ip).or_insert(0);
        if *n >= self.max_per_ip {
            return Err(RejectReason::PerIpLimit);
        }
        *n += 1;
        s.total += 1;
        drop(s);
        metrics.opened();
        Ok(Slot {
            limits: self.clone(),
            metrics: metrics.clone(),
            ip,
        })
    }
}

/// One open connection's place in the limits; released when dropped.
#[derive(Debug)]
pub(crate) struct Slot {
    limits: Arc<Limits>,
    metrics: Arc<Metrics>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut s = lock(&self.limits.state);
        s.total = s.total.saturating_sub(1);
        if let Some(n) = s.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                s.per_ip.remove(&self.ip);
            }
        }
        drop(s);
        self.metrics.closed_slot();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_count_per_ip_and_globally() {
        let metrics = Arc::new(Metrics::default());
        let limits = Arc::new(Limits::new(3, 2));
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let s1 = limits.acquire(a, &metrics).unwrap();
        let _s2 = limits.acquire(a, &metrics).unwrap();
        assert_eq!(
            limits.acquire(a, &metrics).unwrap_err(),
            RejectReason::PerIpLimit
        );
        let _s3 = limits.acquire(b, &metrics).unwrap();
        assert_eq!(
            limits.acquire(b, &metrics).unwrap_err(),
            RejectReason::GlobalLimit
        );
        assert_eq!(metrics.open_connections(), 3);
        drop(s1);
        assert_eq!(metrics.open_connections(), 2);
        let _s4 = limits.acquire(a, &metrics).unwrap();
    }

    #[test]
    fn registry_lists_and_forgets() {
        let r = Arc::new(Registry::default());
        let g = r.insert(
            7,
            NewDevice {
                device_id: Some("device-1".into()),
                remote: "127.0.0.1:5000".parse().unwrap(),
                version: "TLSv1.3",
                suite: "TLS13_AES_128_GCM_SHA256",
                resumed: false,
            },
            |_| true,
        );
        g.stats.frames_in.fetch_add(2, Relaxed);
        let list = r.list();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].device_id.as_deref(), Some("device-1"));
        assert_eq!(list[0].frames_in, 2);
        assert!(list[0].connected_since.ends_with('Z'));
        drop(g);
        assert_eq!(r.len(), 0);
    }

    /// A device the allow-list refuses is marked revoked when it is listed (a list installed
    /// just before) or by `revoke` (a list installed after).
    #[test]
    fn revoked_at_insert_or_by_revoke() {
        let r = Arc::new(Registry::default());
        let device = |id: &str| NewDevice {
            device_id: Some(id.into()),
            remote: "127.0.0.1:5000".parse().unwrap(),
            version: "TLSv1.3",
            suite: "TLS13_AES_128_GCM_SHA256",
            resumed: false,
        };
        let early = r.insert(1, device("device-1"), |id| id != "device-1");
        assert!(early.stats.revoked.load(Relaxed));
        let late = r.insert(2, device("device-2"), |_| true);
        assert!(!late.stats.revoked.load(Relaxed));
        assert_eq!(
            r.revoke(|id| id != "device-2"),
            1,
            "device-1 was marked already"
        );
        assert!(late.stats.revoked.load(Relaxed));
    }
}
