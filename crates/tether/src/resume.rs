//! Session resumption: a client-side session cache, a server-side session-id cache, and a
//! ticket encrypter whose keys the application controls.
//!
//! All three are shared between connections through the configs (they sit behind `Arc`), use
//! a spin lock (no_std), and bound their memory.
//!
//! - [`ClientSessionCache`]: what a client remembers per server: TLS 1.2 session (id or ticket),
//!   TLS 1.3 tickets, and the key-exchange group the server picked.
//! - [`ServerSessionCache`]: TLS 1.2 session ids (and TLS 1.3 stateful resumption when no
//!   ticketer is set).
//! - [`Ticketer`]: stateless tickets (TLS 1.2 RFC 5077 and TLS 1.3) sealed with
//!   ChaCha20-Poly1305 under a [`TicketKey`]. Keys can be generated, or loaded from bytes so that
//!   several servers behind one balancer resume each other's sessions; [`Ticketer::rotate`]
//!   installs a new key and keeps the previous one for decryption only.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use rustls::NamedGroup;
use rustls::client::{ClientSessionStore, Tls12ClientSessionValue, Tls13ClientSessionValue};
use rustls::server::{ProducesTickets, StoresServerSessions};
use rustls_pki_types::ServerName;

use crate::error::{ConfigError, Error, server_name_string};

#[derive(Default)]
struct ServerEntry {
    kx_hint: Option<NamedGroup>,
    tls12: Option<Tls12ClientSessionValue>,
    tls13: VecDeque<Tls13ClientSessionValue>,
}

/// A bounded client-side session cache (per server name).
pub struct ClientSessionCache {
    max_servers: usize,
    inner: Evicting<String, ServerEntry>,
}

impl fmt::Debug for ClientSessionCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientSessionCache")
            .field("max_servers", &self.max_servers)
            .finish_non_exhaustive()
    }
}

/// TLS 1.3 tickets kept per server.
const TICKETS_PER_SERVER: usize = 4;

impl ClientSessionCache {
    /// A cache that remembers at most `max_servers` servers (the oldest is forgotten first).
    pub fn new(max_servers: usize) -> Self {
        ClientSessionCache {
            max_servers: max_servers.max(1),
            inner: spin::Mutex::new((BTreeMap::new(), VecDeque::new())),
        }
    }

    fn edit(&self, name: &ServerName<'_>, f: impl FnOnce(&mut ServerEntry)) {
        let key = server_name_string(name);
        let mut guard = self.inner.lock();
        let (map, order) = &mut *guard;
        if !map.contains_key(&key) {
            if map.len() >= self.max_servers
                && let Some(old) = order.pop_front()
            {
                map.remove(&old);
            }
            order.push_back(key.clone());
        }
        f(map.entry(key).or_default());
    }

    fn read<T>(&self, name: &ServerName<'_>, f: impl FnOnce(&mut ServerEntry) -> T) -> Option<T> {
        let key = server_name_string(name);
        self.inner.lock().0.get_mut(&key).map(f)
    }
}

impl ClientSessionStore for ClientSessionCache {
    fn set_kx_hint(&self, server_name: ServerName<'static>, group: NamedGroup) {
        self.edit(&server_name, |e| e.kx_hint = Some(group));
    }

    fn kx_hint(&self, server_name: &ServerName<'_>) -> Option<NamedGroup> {
        self.read(server_name, |e| e.kx_hint).flatten()
    }

    fn set_tls12_session(&self, server_name: ServerName<'static>, value: Tls12ClientSessionValue) {
        self.edit(&server_name, |e| e.tls12 = Some(value));
    }

    fn tls12_session(&self, server_name: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        self.read(server_name, |e| e.tls12.clone()).flatten()
    }

    fn remove_tls12_session(&self, server_name: &ServerName<'static>) {
        self.read(server_name, |e| e.tls12 = None);
    }

    fn insert_tls13_ticket(
        &self,
        server_name: ServerName<'static>,
        value: Tls13ClientSessionValue,
    ) {
        self.edit(&server_name, |e| {
            if e.tls13.len() >= TICKETS_PER_SERVER {
                e.tls13.pop_front();
            }
            e.tls13.push_back(value);
        });
    }

    fn take_tls13_ticket(
        &self,
        server_name: &ServerName<'static>,
    ) -> Option<Tls13ClientSessionValue> {
        self.read(server_name, |e| e.tls13.pop_back()).flatten()
    }
}

/// Entries plus insertion order, for oldest-first eviction.
type Evicting<K, V> = spin::Mutex<(BTreeMap<K, V>, VecDeque<K>)>;

/// A bounded server-side session cache (TLS 1.2 session ids; TLS 1.3 without tickets).
pub struct ServerSessionCache {
    max: usize,
    inner: Evicting<Vec<u8>, Vec<u8>>,
}

impl fmt::Debug for ServerSessionCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerSessionCache")
            .field("max", &self.max)
            .finish_non_exhaustive()
    }
}

impl ServerSessionCache {
    /// A cache of at most `max` sessions (the oldest is evicted first).
    pub fn new(max: usize) -> Self {
        ServerSessionCache {
            max: max.max(1),
            inner: spin::Mutex::new((BTreeMap::new(), VecDeque::new())),
        }
    }
}

impl StoresServerSessions for ServerSessionCache {
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        let mut guard = self.inner.lock();
        let (map, order) = &mut *guard;
        if !map.contains_key(&key) {
            while map.len() >= self.max {
                match order.pop_front() {
                    Some(old) => {
                        map.remove(&old);
                    }
                    None => break,
                }
            }
            order.push_back(key.clone());
        }
        map.insert(key, value);
        true
    }

    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.inner.lock().0.get(key).cloned()
    }

    fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        let mut guard = self.inner.lock();
        let (map, order) = &mut *guard;
        let v = map.remove(key);
        if v.is_some() {
            order.retain(|k| k.as_slice() != key);
        }
        v
    }

    fn can_cache(&self) -> bool {
        true
    }
}

/// One ticket-encryption key: a 16-byte public name (sent in every ticket, used to find the key)
/// and a 32-byte ChaCha20-Poly1305 key.
#[derive(Clone, PartialEq, Eq)]
pub struct TicketKey {
    name: [u8; 16],
    key: [u8; 32],
}

impl fmt::Debug for TicketKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key material.
        f.debug_struct("TicketKey")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl TicketKey {
    /// The length of [`TicketKey::to_bytes`]: name (16) then key (32).
    pub const LEN: usize = 48;

    /// A key from its 48-byte form (name then key), e.g. read from a file shared by a cluster.
    pub fn from_bytes(bytes: &[u8]) -> Result<TicketKey, Error> {
        if bytes.len() != Self::LEN {
            return Err(ConfigError::Inconsistent(alloc::format!(
                "a ticket key is {} bytes (16-byte name, 32-byte key), got {}",
                Self::LEN,
                bytes.len()
            ))
            .into());
        }
        let mut name = [0u8; 16];
        let mut key = [0u8; 32];
        name.copy_from_slice(&bytes[..16]);
        key.copy_from_slice(&bytes[16..]);
        Ok(TicketKey { name, key })
    }

    /// The 48-byte form of this key.
    pub fn to_bytes(&self) -> [u8; 48] {
        let mut out = [0u8; 48];
        out[..16].copy_from_slice(&self.name);
        out[16..].copy_from_slice(&self.key);
        out
    }

    /// A fresh random key from the crypto provider's RNG.
    pub fn generate() -> Result<TicketKey, Error> {
        let mut bytes = [0u8; 48];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
            .map_err(|_| ConfigError::Inconsistent("the random number generator failed".into()))?;
        TicketKey::from_bytes(&bytes)
    }

    fn sealing_key(&self) -> ring::aead::LessSafeKey {
        // CHACHA20_POLY1305 takes exactly 32 bytes, which `key` always has.
        let unbound = ring::aead::UnboundKey::new(&ring::aead::CHACHA20_POLY1305, &self.key)
            .expect("a 32-byte key is always valid for ChaCha20-Poly1305");
        ring::aead::LessSafeKey::new(unbound)
    }
}

struct Keys {
    current: TicketKey,
    previous: Option<TicketKey>,
}

/// Encrypts and decrypts session tickets. See the [module docs](self).
pub struct Ticketer {
    keys: spin::RwLock<Keys>,
    lifetime_secs: u32,
}

impl fmt::Debug for Ticketer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ticketer")
            .field("lifetime_secs", &self.lifetime_secs)
            .finish_non_exhaustive()
    }
}

const NONCE_LEN: usize = 12;

impl Ticketer {
    /// A ticketer with a fresh random key and a 12-hour ticket lifetime.
    pub fn generate() -> Result<Ticketer, Error> {
        Ok(Ticketer::with_key(TicketKey::generate()?))
    }

    /// A ticketer sealing with `key` (12-hour ticket lifetime).
    pub fn with_key(key: TicketKey) -> Ticketer {
        Ticketer {
            keys: spin::RwLock::new(Keys {
                current: key,
                previous: None,
            }),
            lifetime_secs: 12 * 3600,
        }
    }

    /// Sets how long clients may keep tickets (capped at 7 days by TLS 1.3).
    pub fn with_lifetime(mut self, secs: u32) -> Ticketer {
        self.lifetime_secs = secs.min(7 * 24 * 3600);
        self
    }

    /// Seals new tickets with `key` from now on; the previous current key still opens tickets.
    pub fn rotate(&self, key: TicketKey) {
        let mut keys = self.keys.write();
        let old = core::mem::replace(&mut keys.current, key);
        keys.previous = Some(old);
    }
}

impl ProducesTickets for Ticketer {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        self.lifetime_secs
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let keys = self.keys.read();
        let mut nonce = [0u8; NONCE_LEN];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut nonce).ok()?;
        let mut out = Vec::with_capacity(16 + NONCE_LEN + plain.len() + 16);
        out.extend_from_slice(&keys.current.name);
        out.extend_from_slice(&nonce);
        let mut body = plain.to_vec();
        keys.current
            .sealing_key()
            .seal_in_place_append_tag(
                ring::aead::Nonce::assume_unique_for_key(nonce),
                ring::aead::Aad::from(&keys.current.name),
                &mut body,
            )
            .ok()?;
        out.extend_from_slice(&body);
        Some(out)
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        let name = cipher.get(..16)?;
        let nonce: [u8; NONCE_LEN] = cipher.get(16..16 + NONCE_LEN)?.try_into().ok()?;
        let sealed = cipher.get(16 + NONCE_LEN..)?;
        let keys = self.keys.read();
        let key = if name == keys.current.name {
            &keys.current
        } else {
            keys.previous.as_ref().filter(|k| k.name == name)?
        };
        let mut body = sealed.to_vec();
        let plain = key
            .sealing_key()
            .open_in_place(
                ring::aead::Nonce::assume_unique_for_key(nonce),
                ring::aead::Aad::from(&key.name),
                &mut body,
            )
            .ok()?;
        let len = plain.len();
        body.truncate(len);
        Some(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_round_trip_and_rotate() {
        let t = Ticketer::with_key(TicketKey::from_bytes(&[7u8; 48]).unwrap());
        let sealed = t.encrypt(b"session state").unwrap();
        assert_eq!(t.decrypt(&sealed).unwrap(), b"session state");
        let mut k2 = [9u8; 48];
        k2[0] = 1;
        t.rotate(TicketKey::from_bytes(&k2).unwrap());
        // Old tickets still open; new ones use the new key.
        assert_eq!(t.decrypt(&sealed).unwrap(), b"session state");
        let sealed2 = t.encrypt(b"x").unwrap();
        assert_eq!(&sealed2[..16], &k2[..16]);
        // A second rotation forgets the first key.
        t.rotate(TicketKey::from_bytes(&[3u8; 48]).unwrap());
        assert!(t.decrypt(&sealed).is_none());
        // Tampering is detected; garbage never panics.
        let mut bad = sealed2.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(t.decrypt(&bad).is_none());
        for n in 0..40 {
            assert!(t.decrypt(&[3u8; 64][..n]).is_none());
        }
    }

    #[test]
    fn ticket_key_length_is_checked() {
        assert!(TicketKey::from_bytes(&[0u8; 47]).is_err());
        assert_eq!(
            TicketKey::from_bytes(&[5u8; 48]).unwrap().to_bytes(),
            [5u8; 48]
        );
    }
}
