//! Configuration: policy lives here, mechanism in [`Session`](crate::Session).
//!
//! Build a [`ClientConfig`] or [`ServerConfig`] once and share it (it is an `Arc` inside and
//! cheap to clone) between every connection that uses the same policy.
//!
//! Defaults follow Mozilla's "intermediate" guidance, tightened where TLS 1.3 allows: TLS 1.2
//! and 1.3 only, ECDHE key exchange only (X25519, P-256, P-384), AEAD cipher suites only, no
//! renegotiation, no compression, a 10-second handshake timeout, resumption on.
//!
//! ```
//! # fn main() -> Result<(), tether::Error> {
//! use tether::{ClientConfig, TlsVersion, Trust};
//! let config = ClientConfig::builder(Trust::danger_accept_any())
//!     .versions(TlsVersion::Tls13, TlsVersion::Tls13)
//!     .alpn(&[b"mqtt"])
//!     .build()?;
//! assert_eq!(config.versions(), (TlsVersion::Tls13, TlsVersion::Tls13));
//! # Ok(()) }
//! ```

use alloc::string::ToString;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use core::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::{CipherSuite, NamedGroup, SupportedProtocolVersion};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::{ConfigError, Error};
use crate::resume::{ClientSessionCache, ServerSessionCache, Ticketer};
use crate::time::{PolicyTime, TimePolicy};
use crate::trust::{ClientAuth, ClientVerifier, Trust, VerifierParts};

/// A TLS protocol version tether speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TlsVersion {
    /// TLS 1.2 (RFC 5246), ECDHE + AEAD suites only.
    Tls12,
    /// TLS 1.3 (RFC 8446).
    Tls13,
}

impl fmt::Display for TlsVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TlsVersion {
    /// The version's name as OpenSSL prints it: `TLSv1.2`, `TLSv1.3`.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsVersion::Tls12 => "TLSv1.2",
            TlsVersion::Tls13 => "TLSv1.3",
        }
    }

    pub(crate) fn from_rustls(v: rustls::ProtocolVersion) -> Option<TlsVersion> {
        match v {
            rustls::ProtocolVersion::TLSv1_2 => Some(TlsVersion::Tls12),
            rustls::ProtocolVersion::TLSv1_3 => Some(TlsVersion::Tls13),
            _ => None,
        }
    }
}

/// rustls' versions from `min` to `max` (`check_common` has refused `min > max`).
fn versions(min: TlsVersion, max: TlsVersion) -> Vec<&'static SupportedProtocolVersion> {
    let mut v = Vec::new();
    if max >= TlsVersion::Tls13 {
        v.push(&rustls::version::TLS13);
    }
    if min <= TlsVersion::Tls12 {
        v.push(&rustls::version::TLS12);
    }
    v
}

/// The cryptography library a configuration's handshakes use.
///
/// Both verify the same way (webpki, the same algorithms) and negotiate the same suites; they
/// differ in speed, in post-quantum key exchange and in where they build.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Crypto {
    /// ring (the default): builds without std and with no C toolchain beyond `cc`; what a
    /// device uses. Groups X25519, P-256, P-384.
    #[default]
    Ring,
    /// Key exchange from AWS-LC through aws-lc-rs (feature `aws-lc`, std only), the rest
    /// from ring: X25519 in about half ring's time on x86_64, and the hybrid post-quantum
    /// group X25519MLKEM768, offered first (with an X25519 share beside it, so a server
    /// without it costs only a larger ClientHello). Signatures, verification, hashes and
    /// record ciphers stay ring's, which were faster per handshake here (the same assembly
    /// with less around it). What a gateway or a desktop tool uses.
    #[cfg(feature = "aws-lc")]
    AwsLc,
}

#[cfg(feature = "aws-lc")]
const FASTEST: Crypto = Crypto::AwsLc;
#[cfg(not(feature = "aws-lc"))]
const FASTEST: Crypto = Crypto::Ring;

impl Crypto {
    /// The library's name, as the CLI and config files spell it (`ring`, `aws-lc`).
    pub fn as_str(self) -> &'static str {
        match self {
            Crypto::Ring => "ring",
            #[cfg(feature = "aws-lc")]
            Crypto::AwsLc => "aws-lc",
        }
    }

    /// The fastest library this build has: aws-lc with feature `aws-lc`, ring otherwise.
    pub fn fastest() -> Crypto {
        FASTEST
    }

    fn provider(self) -> CryptoProvider {
        let mut p = self.rustls_provider();
        // The same suites, what rustls holds of them during a handshake kept small (about
        // 1.3 KB less; `suites`).
        crate::suites::compact(&mut p.cipher_suites);
        p
    }

    fn rustls_provider(self) -> CryptoProvider {
        match self {
            Crypto::Ring => rustls::crypto::ring::default_provider(),
            #[cfg(feature = "aws-lc")]
            // AWS-LC where it is faster: key exchange. Its signatures, verification, hashes,
            // HKDF and AEADs run the same assembly as ring's behind more layers and
            // allocations; in-process server handshakes measured slower with them (a full
            // server-only one: 0.85 x ring's time with all of aws-lc, 0.76 x with its key
            // exchange alone).
            Crypto::AwsLc => CryptoProvider {
                kx_groups: rustls::crypto::aws_lc_rs::default_provider().kx_groups,
                ..rustls::crypto::ring::default_provider()
            },
        }
    }
}

impl fmt::Display for Crypto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl core::str::FromStr for Crypto {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Crypto, ConfigError> {
        match s {
            "ring" => Ok(Crypto::Ring),
            #[cfg(feature = "aws-lc")]
            "aws-lc" => Ok(Crypto::AwsLc),
            #[cfg(not(feature = "aws-lc"))]
            "aws-lc" => Err(ConfigError::Inconsistent(
                "crypto \"aws-lc\" is not in this build (tether feature `aws-lc`); use \"ring\""
                    .into(),
            )),
            other => Err(ConfigError::Inconsistent(alloc::format!(
                "unknown crypto library {other:?}; expected \"ring\" or \"aws-lc\""
            ))),
        }
    }
}

/// The crypto provider for TLS versions `min` to `max`, optionally narrowed to some suites
/// and groups. It lists only what those allow, in vectors no longer than their contents: a
/// device's configuration holds the provider for as long as it runs (a TLS 1.3 client: 3
/// suites instead of 9).
pub(crate) fn provider_with(
    crypto: Crypto,
    (min, max): (TlsVersion, TlsVersion),
    suites: Option<&[CipherSuite]>,
    groups: Option<&[NamedGroup]>,
) -> Result<Arc<CryptoProvider>, Error> {
    let mut p = crypto.provider();
    // Mozilla "intermediate" order: AES-128-GCM first (SHA-256 has hardware support on common
    // CPUs; SHA-384 does not in ring), then AES-256-GCM, then ChaCha20-Poly1305.
    p.cipher_suites.sort_by_key(|s| suite_rank(s.suite()));
    if let Some(suites) = suites {
        p.cipher_suites.retain(|s| suites.contains(&s.suite()));
        if p.cipher_suites.is_empty() {
            return Err(ConfigError::Inconsistent(alloc::format!(
                "none of the cipher suites {suites:?} is supported; supported: {:?}",
                crypto
                    .provider()
                    .cipher_suites
                    .iter()
                    .map(|s| s.suite())
                    .collect::<Vec<_>>()
            ))
            .into());
        }
    }
    if let Some(groups) = groups {
        p.kx_groups.retain(|g| groups.contains(&g.name()));
        if p.kx_groups.is_empty() {
            return Err(ConfigError::Inconsistent(alloc::format!(
                "none of the key-exchange groups {groups:?} is supported by {crypto}; supported: {:?}",
                crypto
                    .provider()
                    .kx_groups
                    .iter()
                    .map(|g| g.name())
                    .collect::<Vec<_>>()
            ))
            .into());
        }
    }
    p.cipher_suites.retain(|s| {
        TlsVersion::from_rustls(s.version().version).is_some_and(|v| (min..=max).contains(&v))
    });
    if p.cipher_suites.is_empty() {
        let range = if min == max {
            alloc::format!("{min}")
        } else {
            alloc::format!("{min} to {max}")
        };
        return Err(ConfigError::Inconsistent(alloc::format!(
            "none of the cipher suites {:?} is for {range}; add one for {range} or change the \
             versions",
            suites.unwrap_or_default()
        ))
        .into());
    }
    p.cipher_suites.shrink_to_fit();
    p.kx_groups.shrink_to_fit();
    Ok(Arc::new(p))
}

/// Position of a suite in Mozilla's "intermediate" preference order.
fn suite_rank(suite: CipherSuite) -> usize {
    const ORDER: [CipherSuite; 9] = [
        CipherSuite::TLS13_AES_128_GCM_SHA256,
        CipherSuite::TLS13_AES_256_GCM_SHA384,
        CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
        CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ];
    ORDER
        .iter()
        .position(|s| *s == suite)
        .unwrap_or(ORDER.len())
}

/// A certificate chain and its private key: a server's identity, or a client's for mTLS.
#[derive(Clone)]
pub struct Identity {
    pub(crate) chain: Vec<CertificateDer<'static>>,
    pub(crate) key: Arc<PrivateKeyDer<'static>>,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("certificates", &self.chain.len())
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// From PEM: the chain (leaf first, then intermediates) and a PKCS#8, SEC1 or PKCS#1 key.
    pub fn from_pem(chain_pem: &[u8], key_pem: &[u8]) -> Result<Identity, Error> {
        let chain = CertificateDer::pem_slice_iter(chain_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ConfigError::BadPem(alloc::format!("certificate chain: {e:?}")))?;
        if chain.is_empty() {
            return Err(ConfigError::BadPem("no CERTIFICATE block in the chain".into()).into());
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem)
            .map_err(|e| ConfigError::BadKey(alloc::format!("no usable private key: {e:?}")))?;
        Identity::from_der(chain, key)
    }

    /// From DER certificates (leaf first) and a DER private key.
    pub fn from_der(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Identity, Error> {
        // Fail early, with a clear message, if ring cannot use the key.
        rustls::crypto::ring::default_provider()
            .key_provider
            .load_private_key(key.clone_key())
            .map_err(|e| ConfigError::BadKey(e.to_string()))?;
        Ok(Identity {
            chain,
            key: Arc::new(key),
        })
    }

    /// The leaf certificate (DER).
    pub fn leaf(&self) -> &CertificateDer<'static> {
        &self.chain[0]
    }
}

/// Settings shared by client and server builders.
#[derive(Clone, Debug)]
struct Common {
    min: TlsVersion,
    max: TlsVersion,
    suites: Option<Vec<CipherSuite>>,
    groups: Option<Vec<NamedGroup>>,
    alpn: Vec<Vec<u8>>,
    max_record: Option<usize>,
    handshake_timeout: Duration,
    time: TimePolicy,
    resumption: bool,
    crypto: Crypto,
    /// `None`: the driver's default ([`DEFAULT_READ_CHUNK`] for the sockets).
    read_chunk: Option<usize>,
}

impl Common {
    /// The crypto provider these settings allow.
    fn provider(&self) -> Result<Arc<CryptoProvider>, Error> {
        provider_with(
            self.crypto,
            (self.min, self.max),
            self.suites.as_deref(),
            self.groups.as_deref(),
        )
    }
}

/// Bytes the sockets ask of each transport read unless the config says otherwise.
pub const DEFAULT_READ_CHUNK: usize = 4096;

impl Default for Common {
    fn default() -> Self {
        Common {
            min: TlsVersion::Tls12,
            max: TlsVersion::Tls13,
            suites: None,
            groups: None,
            alpn: Vec::new(),
            max_record: None,
            handshake_timeout: Duration::from_secs(10),
            time: TimePolicy::default(),
            resumption: true,
            crypto: Crypto::default(),
            read_chunk: None,
        }
    }
}

macro_rules! common_setters {
    () => {
        /// Minimum and maximum TLS version (default 1.2 to 1.3). Never a silent fallback below
        /// `min`.
        pub fn versions(mut self, min: TlsVersion, max: TlsVersion) -> Self {
            self.common.min = min;
            self.common.max = max;
            self
        }

        /// Restricts cipher suites to these (in the provider's preference order).
        pub fn cipher_suites(mut self, suites: &[CipherSuite]) -> Self {
            self.common.suites = Some(suites.to_vec());
            self
        }

        /// Restricts key-exchange groups to these.
        pub fn kx_groups(mut self, groups: &[NamedGroup]) -> Self {
            self.common.groups = Some(groups.to_vec());
            self
        }

        /// ALPN protocols, most preferred first.
        pub fn alpn(mut self, protocols: &[&[u8]]) -> Self {
            self.common.alpn = protocols.iter().map(|p| p.to_vec()).collect();
            self
        }

        /// Largest plaintext per outgoing record (32 ..= 16384). Small records let a device
        /// get by with small buffers.
        pub fn max_record_size(mut self, bytes: usize) -> Self {
            self.common.max_record = Some(bytes);
            self
        }

        /// How long a handshake may take before it fails with `Timeout::Handshake`.
        pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
            self.common.handshake_timeout = timeout;
            self
        }

        /// How certificate validity periods are checked (see [`TimePolicy`]).
        pub fn time_policy(mut self, policy: TimePolicy) -> Self {
            self.common.time = policy;
            self
        }

        /// Turns session resumption on (default) or off. A client with it off also asks TLS 1.3
        /// servers for no session tickets (RFC 9149 `ticket_request`), which saves a server
        /// that honours it the work of sealing tickets nobody will use.
        pub fn resumption(mut self, on: bool) -> Self {
            self.common.resumption = on;
            self
        }

        /// How many bytes the sockets ask of each transport read at a record boundary,
        /// handshake included (64 ..= 65536; a record larger than that is completed by one
        /// read of what it lacks). Unset, each driver picks: [`DEFAULT_READ_CHUNK`] for
        /// `TlsSocket`, `AsyncTlsSocket` and the device adapters over them, 16 KiB + 512 for
        /// the tokio stream (a whole record per read: a server's bulk throughput). A sans-IO
        /// driver reads it from [`Session::read_chunk`](crate::Session::read_chunk). A device
        /// whose server sends small records sets about one record (1 KiB records: 1,024 to
        /// 1,053 bytes): each read then reserves no more than that, from the ClientHello on,
        /// which a socket's `set_read_chunk` after `connect` is too late for.
        pub fn read_chunk(mut self, bytes: usize) -> Self {
            self.common.read_chunk = Some(bytes);
            self
        }

        /// The cryptography library for handshakes and records (default [`Crypto::Ring`]).
        /// A client's records after the handshake are tether's own, on ring, either way.
        pub fn crypto(mut self, crypto: Crypto) -> Self {
            self.common.crypto = crypto;
            self
        }
    };
}

/// The checks every config makes of the settings both sides share.
fn check_common(c: &Common) -> Result<(), Error> {
    if c.min > c.max {
        return Err(ConfigError::Inconsistent(alloc::format!(
            "minimum TLS version {} is above the maximum {}",
            c.min,
            c.max
        ))
        .into());
    }
    match c.max_record {
        Some(n) if !(32..=16384).contains(&n) => {
            return Err(ConfigError::Inconsistent(alloc::format!(
                "max record size {n} is outside 32..=16384"
            ))
            .into());
        }
        _ => {}
    }
    if let Some(n) = c.read_chunk
        && !(MIN_READ_CHUNK..=MAX_READ_CHUNK).contains(&n)
    {
        return Err(ConfigError::Inconsistent(alloc::format!(
            "read chunk {n} is outside {MIN_READ_CHUNK}..={MAX_READ_CHUNK}"
        ))
        .into());
    }
    Ok(())
}

/// The smallest and largest read chunk a config accepts (the sockets' `set_read_chunk`
/// raises a smaller one to the minimum).
pub(crate) const MIN_READ_CHUNK: usize = 64;
const MAX_READ_CHUNK: usize = 65536;

/// A client's policy. Build with [`ClientConfig::builder`].
#[derive(Clone, Debug)]
pub struct ClientConfig {
    pub(crate) rustls: Arc<rustls::ClientConfig>,
    pub(crate) handshake_timeout: Duration,
    /// True when verification can fail for reasons rustls' error type cannot carry (pins,
    /// TOFU): each session then gets its own verifier that reports them.
    pub(crate) detailed_verifier: Option<Arc<VerifierParts>>,
    pub(crate) keep_peer_certificates: bool,
    pub(crate) read_chunk: Option<usize>,
    versions: (TlsVersion, TlsVersion),
}

/// Builds a [`ClientConfig`].
#[derive(Clone, Debug)]
pub struct ClientConfigBuilder {
    trust: Trust,
    identity: Option<Identity>,
    sni: bool,
    cache_size: usize,
    keep_peer_certificates: bool,
    common: Common,
}

impl ClientConfig {
    /// Starts a client config that verifies servers with `trust`.
    pub fn builder(trust: Trust) -> ClientConfigBuilder {
        ClientConfigBuilder {
            trust,
            identity: None,
            sni: true,
            cache_size: 32,
            keep_peer_certificates: true,
            common: Common::default(),
        }
    }

    /// The configured (minimum, maximum) TLS versions.
    pub fn versions(&self) -> (TlsVersion, TlsVersion) {
        self.versions
    }

    /// The handshake timeout.
    pub fn handshake_timeout(&self) -> Duration {
        self.handshake_timeout
    }
}

impl ClientConfigBuilder {
    common_setters!();

    /// A client certificate and key, for servers that ask for one (mTLS).
    pub fn identity(mut self, identity: Identity) -> Self {
        self.identity = Some(identity);
        self
    }

    /// Send the server name (SNI) in the handshake (default on; never sent for IP addresses).
    pub fn sni(mut self, on: bool) -> Self {
        self.sni = on;
        self
    }

    /// Keep the server's certificate chain for
    /// [`Session::peer_certificates`](crate::Session::peer_certificates) once the handshake has
    /// completed (default on). Off, an established session drops its copy (about 0.8 KiB for
    /// a P-256 leaf and root) and `peer_certificates` returns `None` after the handshake: for a
    /// device that has no use for the chain once it is verified. Verification is the same.
    pub fn keep_peer_certificates(mut self, on: bool) -> Self {
        self.keep_peer_certificates = on;
        self
    }

    /// How many servers the session cache remembers (default 32).
    pub fn session_cache_size(mut self, servers: usize) -> Self {
        self.cache_size = servers;
        self
    }

    /// Checks the policy and builds the config.
    pub fn build(self) -> Result<ClientConfig, Error> {
        if !self.trust.has_anchors() {
            return Err(ConfigError::NoTrustAnchors.into());
        }
        check_common(&self.common)?;
        let c = &self.common;
        let provider = c.provider()?;
        let mut trust = self.trust;
        trust.shrink();
        // The parts are the verifier (sessions that need a failure slot get their own around
        // them) and rustls' clock.
        let parts = Arc::new(VerifierParts {
            trust,
            provider: provider.clone(),
            time: c.time.clone(),
        });
        let verifier = parts.clone();
        let builder = rustls::ClientConfig::builder_with_details(provider.clone(), parts.clone())
            .with_protocol_versions(&versions(c.min, c.max))
            .map_err(|e| ConfigError::Inconsistent(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut config = match self.identity {
            Some(id) => builder
                .with_client_auth_cert(id.chain, id.key.clone_key())
                .map_err(|e| ConfigError::BadKey(e.to_string()))?,
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = c.alpn.clone();
        // rustls counts the 5-byte record header in max_fragment_size.
        config.max_fragment_size = c.max_record.map(|n| n + 5);
        config.enable_sni = self.sni;
        // rustls compresses a client's certificates only with compressors, and tether's
        // configs have none: no cache of compressed chains (one less allocation per config).
        config.cert_compression_cache = Arc::new(rustls::compress::CompressionCache::Disabled);
        // Once the handshake has completed, a client session takes the traffic keys and does
        // the records itself, in place (`Session`, crate `record`); they never leave it.
        config.enable_secret_extraction = true;
        config.resumption = if c.resumption {
            rustls::client::Resumption::store(Arc::new(ClientSessionCache::new(self.cache_size)))
        } else {
            // RFC 9149 ticket_request: a client that never resumes asks for no TLS 1.3
            // tickets, so that a server that honours the request (tether's does) spends no
            // seal, record or write on them. Servers that do not know it ignore it.
            config.send_ticket_request = Some(rustls::client::TicketRequest {
                new_session_count: 0,
                resumption_count: 0,
            });
            rustls::client::Resumption::disabled()
        };
        let detailed = !parts.trust.pins.is_empty() || parts.trust.tofu.is_some();
        Ok(ClientConfig {
            rustls: Arc::new(config),
            handshake_timeout: c.handshake_timeout,
            detailed_verifier: detailed.then_some(parts),
            keep_peer_certificates: self.keep_peer_certificates,
            read_chunk: c.read_chunk,
            versions: (c.min, c.max),
        })
    }
}

/// A server's policy. Build with [`ServerConfig::builder`].
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub(crate) rustls: Arc<rustls::ServerConfig>,
    pub(crate) handshake_timeout: Duration,
    pub(crate) read_chunk: Option<usize>,
    versions: (TlsVersion, TlsVersion),
}

impl ServerConfig {
    /// Starts a server config presenting `identity`.
    pub fn builder(identity: Identity) -> ServerConfigBuilder {
        ServerConfigBuilder {
            identity,
            client_auth: ClientAuth::None,
            ticketer: None,
            cache_size: 1024,
            tickets_per_handshake: 1,
            verified_cache: DEFAULT_VERIFIED_CACHE,
            common: Common::default(),
        }
    }

    /// The configured (minimum, maximum) TLS versions.
    pub fn versions(&self) -> (TlsVersion, TlsVersion) {
        self.versions
    }

    /// The handshake timeout.
    pub fn handshake_timeout(&self) -> Duration {
        self.handshake_timeout
    }
}

/// Builds a [`ServerConfig`].
#[derive(Debug)]
pub struct ServerConfigBuilder {
    identity: Identity,
    client_auth: ClientAuth,
    ticketer: Option<Arc<Ticketer>>,
    cache_size: usize,
    tickets_per_handshake: usize,
    verified_cache: usize,
    common: Common,
}

/// Client certificate chains a server remembers as verified (see
/// [`ServerConfigBuilder::verified_client_chains`]).
pub const DEFAULT_VERIFIED_CACHE: usize = 4096;

impl ServerConfigBuilder {
    common_setters!();

    /// Whether clients must (or may) present certificates, and how they are verified.
    pub fn client_auth(mut self, auth: ClientAuth) -> Self {
        self.client_auth = auth;
        self
    }

    /// Stateless tickets sealed by `ticketer` (share it, or its key, between servers that should
    /// resume each other's sessions). Without one, a random per-config key is made.
    pub fn ticketer(mut self, ticketer: Arc<Ticketer>) -> Self {
        self.ticketer = Some(ticketer);
        self
    }

    /// TLS 1.3 session tickets sent after each full or resumed handshake. Default 1: a device
    /// reconnects one connection at a time and each resumption brings a fresh ticket, so one
    /// is enough; it saves a record, a seal and a socket write per handshake. Raise it for
    /// clients that open several connections in parallel from one handshake's tickets (each
    /// TLS 1.3 ticket is used once). 0 sends none (TLS 1.3 clients then cannot resume; TLS 1.2
    /// resumption is unaffected). A client that asks for fewer (RFC 9149 `ticket_request`;
    /// a tether client with resumption off asks for none) gets what it asks for.
    pub fn tls13_tickets(mut self, per_handshake: usize) -> Self {
        self.tickets_per_handshake = per_handshake;
        self
    }

    /// How many client certificate chains (mTLS) the server remembers as verified, by SHA-256
    /// of the chain. A client that comes back with the same chain skips the chain's signature
    /// checks (one ECDSA or RSA verify per CA level: about a fifth of a full mTLS handshake's
    /// CPU); its validity times, pins and the handshake signature that proves it holds the key
    /// are checked every time. Default [`DEFAULT_VERIFIED_CACHE`] (about 100 bytes each when
    /// full); 0 turns it off. Without CA roots (pins only) there is nothing to cache.
    pub fn verified_client_chains(mut self, chains: usize) -> Self {
        self.verified_cache = chains;
        self
    }

    /// Size of the session-id cache (TLS 1.2 clients that do not use tickets). Default 1024.
    pub fn session_cache_size(mut self, sessions: usize) -> Self {
        self.cache_size = sessions;
        self
    }

    /// Checks the policy and builds the config.
    pub fn build(self) -> Result<ServerConfig, Error> {
        check_common(&self.common)?;
        let c = &self.common;
        let provider = c.provider()?;
        let time = Arc::new(PolicyTime(c.time.clone()));
        let builder = rustls::ServerConfig::builder_with_details(provider.clone(), time)
            .with_protocol_versions(&versions(c.min, c.max))
            .map_err(|e| ConfigError::Inconsistent(e.to_string()))?;
        let builder = match self.client_auth {
            ClientAuth::None => builder.with_no_client_auth(),
            ClientAuth::Required(trust) | ClientAuth::Optional(trust) if !trust.has_anchors() => {
                let _ = trust;
                return Err(ConfigError::NoTrustAnchors.into());
            }
            ClientAuth::Required(trust) => {
                builder.with_client_cert_verifier(Arc::new(ClientVerifier::new(
                    trust,
                    true,
                    provider.clone(),
                    c.time.clone(),
                    self.verified_cache,
                )))
            }
            ClientAuth::Optional(trust) => {
                builder.with_client_cert_verifier(Arc::new(ClientVerifier::new(
                    trust,
                    false,
                    provider.clone(),
                    c.time.clone(),
                    self.verified_cache,
                )))
            }
        };
        let mut config = builder
            .with_single_cert(self.identity.chain, self.identity.key.clone_key())
            .map_err(|e| ConfigError::BadKey(e.to_string()))?;
        config.alpn_protocols = c.alpn.clone();
        // rustls counts the 5-byte record header in max_fragment_size.
        config.max_fragment_size = c.max_record.map(|n| n + 5);
        // RFC 5746: rustls never renegotiates; nothing to turn off.
        // `Session::refuse` takes the send keys to seal its alert; they never leave the session.
        config.enable_secret_extraction = true;
        if c.resumption {
            config.session_storage = Arc::new(ServerSessionCache::new(self.cache_size));
            config.ticketer = match self.ticketer {
                Some(t) => t,
                None => Arc::new(Ticketer::generate()?),
            };
            config.send_tls13_tickets = self.tickets_per_handshake;
            // A client's RFC 9149 ticket_request is honoured up to that number: one that
            // will not resume asks for none and gets none.
            config.max_tls13_tickets = self.tickets_per_handshake;
        } else {
            config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
            config.send_tls13_tickets = 0;
        }
        Ok(ServerConfig {
            rustls: Arc::new(config),
            handshake_timeout: c.handshake_timeout,
            read_chunk: c.read_chunk,
            versions: (c.min, c.max),
        })
    }
}
