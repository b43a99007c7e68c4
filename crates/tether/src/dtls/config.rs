//! DTLS configuration: the TLS policy objects ([`Trust`], [`Identity`], [`ClientAuth`],
//! [`TimePolicy`]) plus what datagrams need (MTU, retransmission timer), turned into dimpl's
//! `Config` once, when the config is built. Configs are `Arc`-backed: clone and share them.

use alloc::string::ToString;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use core::time::Duration;

use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::DtlsVersion;
use crate::config::Identity;
use crate::error::{ConfigError, Error};
use crate::time::TimePolicy;
use crate::trust::{ClientAuth, Trust};

/// Default path MTU: the largest datagram tether sends. 1400 bytes leave room for IPv6, UDP and
/// a tunnel header inside a 1500-byte Ethernet frame, and carry 1,363 bytes of application data
/// per DTLS 1.2 record (1,378 with DTLS 1.3).
pub const DEFAULT_MTU: usize = 1400;
const MIN_MTU: usize = 256;
/// The largest UDP payload over IPv4.
const MAX_MTU: usize = 65507;

/// Settings shared by client and server builders.
#[derive(Clone, Debug)]
struct Common {
    min: DtlsVersion,
    max: DtlsVersion,
    handshake_timeout: Duration,
    mtu: usize,
    initial_rto: Duration,
    retries: usize,
    time: TimePolicy,
    intermediates: Vec<CertificateDer<'static>>,
}

impl Default for Common {
    fn default() -> Self {
        Common {
            min: DtlsVersion::Dtls12,
            max: DtlsVersion::Dtls13,
            handshake_timeout: Duration::from_secs(10),
            mtu: DEFAULT_MTU,
            initial_rto: Duration::from_secs(1),
            retries: 5,
            time: TimePolicy::default(),
            intermediates: Vec::new(),
        }
    }
}

impl Common {
    fn check(&self) -> Result<(), Error> {
        if self.min > self.max {
            return Err(ConfigError::Inconsistent(alloc::format!(
                "minimum DTLS version {} is above the maximum {}",
                self.min,
                self.max
            ))
            .into());
        }
        if !(MIN_MTU..=MAX_MTU).contains(&self.mtu) {
            return Err(ConfigError::Inconsistent(alloc::format!(
                "MTU {} is outside {MIN_MTU}..={MAX_MTU} bytes",
                self.mtu
            ))
            .into());
        }
        if self.handshake_timeout.is_zero() || self.initial_rto.is_zero() {
            return Err(ConfigError::Inconsistent(
                "the handshake timeout and the retransmission timeout must be above zero".into(),
            )
            .into());
        }
        Ok(())
    }

    fn dimpl_builder(&self) -> dimpl::ConfigBuilder {
        // dimpl's own handshake deadline is a backstop: tether fails the session at
        // `handshake_timeout` after it was created (Timeout::Handshake), which is never later.
        dimpl::Config::builder()
            .with_crypto_provider(super::crypto::provider())
            .mtu(self.mtu)
            .handshake_timeout(self.handshake_timeout)
            .flight_start_rto(self.initial_rto)
            .flight_retries(self.retries)
    }
}

fn dimpl_config(builder: dimpl::ConfigBuilder) -> Result<Arc<dimpl::Config>, Error> {
    builder
        .build()
        .map(Arc::new)
        .map_err(|e| ConfigError::Inconsistent(alloc::format!("DTLS engine: {e}")).into())
}

macro_rules! common_setters {
    () => {
        /// Minimum and maximum DTLS version (default 1.2 to 1.3). With both, a client sends a
        /// ClientHello both versions accept and a server answers in the version the client
        /// offers; never a version outside the range.
        pub fn versions(mut self, min: DtlsVersion, max: DtlsVersion) -> Self {
            self.common.min = min;
            self.common.max = max;
            self
        }

        /// How long a handshake may take, from the session's creation, before it fails with
        /// `Timeout::Handshake` (default 10 s).
        pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
            self.common.handshake_timeout = timeout;
            self
        }

        /// The path MTU: the largest datagram this side sends (default [`DEFAULT_MTU`],
        /// 256 ..= 65507). Handshake messages are fragmented to fit it; application records
        /// must fit it whole (see [`Session::max_send_size`](super::Session::max_send_size)).
        pub fn mtu(mut self, bytes: usize) -> Self {
            self.common.mtu = bytes;
            self
        }

        /// The retransmission timer: a lost flight is sent again after `initial` (default 1 s,
        /// RFC 6347 4.2.4.1), then after twice as long each time (with jitter), at most
        /// `retries` times per flight (default 5). The handshake timeout still bounds it all.
        pub fn retransmission(mut self, initial: Duration, retries: usize) -> Self {
            self.common.initial_rto = initial;
            self.common.retries = retries;
            self
        }

        /// How certificate validity periods are checked (see [`TimePolicy`]).
        pub fn time_policy(mut self, policy: TimePolicy) -> Self {
            self.common.time = policy;
            self
        }

        /// Intermediate CA certificates to complete the peer's chain with when verifying it.
        /// DTLS peers here present only their leaf (dimpl sends and reports one certificate),
        /// so a leaf issued by an intermediate verifies only with the intermediate known.
        pub fn intermediates(mut self, certificates: Vec<CertificateDer<'static>>) -> Self {
            self.common.intermediates = certificates;
            self
        }
    };
}

/// What a session needs to verify its peer.
#[derive(Debug)]
pub(crate) struct Verify {
    pub trust: Trust,
    pub time: TimePolicy,
    pub intermediates: Vec<CertificateDer<'static>>,
    pub algorithms: WebPkiSupportedAlgorithms,
}

impl Verify {
    fn new(trust: Trust, common: &Common) -> Verify {
        Verify {
            trust,
            time: common.time.clone(),
            intermediates: common.intermediates.clone(),
            algorithms: rustls::crypto::ring::default_provider().signature_verification_algorithms,
        }
    }
}

/// What client and server configs share once built.
pub(crate) struct Built {
    pub dimpl: Arc<dimpl::Config>,
    pub certificate: dimpl::DtlsCertificate,
    pub versions: (DtlsVersion, DtlsVersion),
    pub handshake_timeout: Duration,
    pub mtu: usize,
}

impl fmt::Debug for Built {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Built")
            .field("versions", &self.versions)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("mtu", &self.mtu)
            .finish_non_exhaustive()
    }
}

/// dimpl's certificate from a tether identity: the leaf (DER) and the key (PKCS#8 or SEC1
/// DER), checked now, because dimpl panics on a key it cannot load.
fn dimpl_certificate(identity: &Identity) -> Result<dimpl::DtlsCertificate, Error> {
    let key: &[u8] = match &*identity.key {
        PrivateKeyDer::Pkcs8(k) => k.secret_pkcs8_der(),
        PrivateKeyDer::Sec1(k) => k.secret_sec1_der(),
        PrivateKeyDer::Pkcs1(_) => return Err(unsupported_key("an RSA key")),
        _ => return Err(unsupported_key("a key of an unknown kind")),
    };
    let provider = super::crypto::provider();
    if provider.key_provider.load_private_key(key).is_err() {
        return Err(unsupported_key(key_kind(key)));
    }
    Ok(dimpl::DtlsCertificate {
        certificate: identity.leaf().as_ref().to_vec(),
        private_key: key.to_vec(),
    })
}

fn unsupported_key(kind: &str) -> Error {
    ConfigError::BadKey(alloc::format!(
        "DTLS supports ECDSA P-256 and P-384 keys only, and this identity has {kind}; \
         issue an ECDSA certificate for DTLS (tether pki issue ... --key ecdsa-p256)"
    ))
    .into()
}

/// A name for the kind of a PKCS#8 key, for the error message.
fn key_kind(pkcs8: &[u8]) -> &'static str {
    const RSA: &[u8] = &[
        0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01,
    ];
    const ED25519: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];
    const EC: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
    let has = |oid: &[u8]| pkcs8.windows(oid.len()).any(|w| w == oid);
    if has(RSA) {
        "an RSA key"
    } else if has(ED25519) {
        "an Ed25519 key"
    } else if has(EC) {
        "an ECDSA key on a curve other than P-256 and P-384"
    } else {
        "a key of an unknown kind"
    }
}

/// A throwaway self-signed ECDSA P-256 certificate for a client without an identity: dimpl
/// needs one, and sends it only when a server asks for a certificate (which then refuses it).
fn anonymous_certificate() -> Result<dimpl::DtlsCertificate, Error> {
    let fail = |e: rcgen::Error| {
        Error::Config(ConfigError::BadKey(alloc::format!(
            "cannot make the anonymous DTLS client key: {e}"
        )))
    };
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(fail)?;
    let params = rcgen::CertificateParams::new(alloc::vec!["tether-dtls-anonymous".to_string()])
        .map_err(fail)?;
    let cert = params.self_signed(&key).map_err(fail)?;
    Ok(dimpl::DtlsCertificate {
        certificate: cert.der().to_vec(),
        private_key: key.serialize_der(),
    })
}

/// A DTLS client's policy. Build with [`ClientConfig::builder`]; cheap to clone.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    pub(crate) built: Arc<Built>,
    pub(crate) verify: Arc<Verify>,
}

/// Builds a DTLS [`ClientConfig`].
#[derive(Clone, Debug)]
pub struct ClientConfigBuilder {
    trust: Trust,
    identity: Option<Identity>,
    common: Common,
}

impl ClientConfig {
    /// Starts a client config that verifies servers with `trust` (as for TLS).
    pub fn builder(trust: Trust) -> ClientConfigBuilder {
        ClientConfigBuilder {
            trust,
            identity: None,
            common: Common::default(),
        }
    }

    /// The configured (minimum, maximum) DTLS versions.
    pub fn versions(&self) -> (DtlsVersion, DtlsVersion) {
        self.built.versions
    }

    /// The handshake timeout.
    pub fn handshake_timeout(&self) -> Duration {
        self.built.handshake_timeout
    }

    /// The path MTU.
    pub fn mtu(&self) -> usize {
        self.built.mtu
    }
}

impl ClientConfigBuilder {
    common_setters!();

    /// A client certificate and key (ECDSA P-256 or P-384), for servers that require one.
    pub fn identity(mut self, identity: Identity) -> Self {
        self.identity = Some(identity);
        self
    }

    /// Checks the policy and builds the config.
    pub fn build(self) -> Result<ClientConfig, Error> {
        if !self.trust.has_anchors() {
            return Err(ConfigError::NoTrustAnchors.into());
        }
        self.common.check()?;
        let certificate = match &self.identity {
            Some(id) => dimpl_certificate(id)?,
            None => anonymous_certificate()?,
        };
        let dimpl = dimpl_config(self.common.dimpl_builder())?;
        Ok(ClientConfig {
            built: Arc::new(Built {
                dimpl,
                certificate,
                versions: (self.common.min, self.common.max),
                handshake_timeout: self.common.handshake_timeout,
                mtu: self.common.mtu,
            }),
            verify: Arc::new(Verify::new(self.trust, &self.common)),
        })
    }
}

/// A DTLS server's policy. Build with [`ServerConfig::builder`]; cheap to clone.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub(crate) built: Arc<Built>,
    /// How client certificates are verified; `None`: none is asked for.
    pub(crate) verify: Option<Arc<Verify>>,
}

/// Builds a DTLS [`ServerConfig`].
#[derive(Clone, Debug)]
pub struct ServerConfigBuilder {
    identity: Identity,
    client_auth: ClientAuth,
    cookie: bool,
    common: Common,
}

impl ServerConfig {
    /// Starts a server config presenting `identity` (its leaf; the key must be ECDSA P-256 or
    /// P-384).
    pub fn builder(identity: Identity) -> ServerConfigBuilder {
        ServerConfigBuilder {
            identity,
            client_auth: ClientAuth::None,
            cookie: true,
            common: Common::default(),
        }
    }

    /// The configured (minimum, maximum) DTLS versions.
    pub fn versions(&self) -> (DtlsVersion, DtlsVersion) {
        self.built.versions
    }

    /// The handshake timeout.
    pub fn handshake_timeout(&self) -> Duration {
        self.built.handshake_timeout
    }

    /// The path MTU.
    pub fn mtu(&self) -> usize {
        self.built.mtu
    }

    /// True when clients must present a certificate.
    pub fn requires_client_certificate(&self) -> bool {
        self.verify.is_some()
    }
}

impl ServerConfigBuilder {
    common_setters!();

    /// Client certificates: [`ClientAuth::None`] (default) or [`ClientAuth::Required`];
    /// [`ClientAuth::Optional`] is refused by `build` (dimpl cannot ask without requiring).
    pub fn client_auth(mut self, auth: ClientAuth) -> Self {
        self.client_auth = auth;
        self
    }

    /// The session's own cookie exchange before the handshake (HelloVerifyRequest in DTLS 1.2,
    /// a cookie in HelloRetryRequest in 1.3); default on. It costs one round trip; a listener
    /// that checks cookies itself, statelessly, before it makes a session may turn it off.
    pub fn cookie_exchange(mut self, on: bool) -> Self {
        self.cookie = on;
        self
    }

    /// Checks the policy and builds the config.
    pub fn build(self) -> Result<ServerConfig, Error> {
        self.common.check()?;
        let trust = match self.client_auth {
            ClientAuth::None => None,
            ClientAuth::Required(trust) => {
                if !trust.has_anchors() {
                    return Err(ConfigError::NoTrustAnchors.into());
                }
                Some(trust)
            }
            ClientAuth::Optional(_) => {
                return Err(ConfigError::Inconsistent(
                    "DTLS cannot make client certificates optional (dimpl either requires one \
                     or does not ask): use ClientAuth::Required or ClientAuth::None"
                        .into(),
                )
                .into());
            }
        };
        let certificate = dimpl_certificate(&self.identity)?;
        let dimpl = dimpl_config(
            self.common
                .dimpl_builder()
                // Cookies a stateless listener can check (see `listen`); the same as
                // dimpl's own outside an `Acceptor`.
                .with_crypto_provider(super::listen::engine_provider())
                .require_client_certificate(trust.is_some())
                .use_server_cookie(self.cookie),
        )?;
        Ok(ServerConfig {
            built: Arc::new(Built {
                dimpl,
                certificate,
                versions: (self.common.min, self.common.max),
                handshake_timeout: self.common.handshake_timeout,
                mtu: self.common.mtu,
            }),
            verify: trust.map(|t| Arc::new(Verify::new(t, &self.common))),
        })
    }
}
