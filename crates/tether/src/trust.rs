//! Trust: how a peer's certificate is verified.
//!
//! A [`Trust`] combines any of:
//! - **CA roots** (PEM or DER, one or many; a DER certificate built into the image with
//!   [`Trust::with_static_root`], which a device keeps in flash instead of on the heap;
//!   bundled Mozilla roots with the `mozilla-roots` feature): the chain must lead to a root,
//!   be valid now (see [`TimePolicy`]), and name the host (DNS name or IP address SAN) we
//!   connected to;
//! - **SPKI pins** (`sha256/BASE64`): alone, the leaf's key must match one; on top of roots, a key
//!   in the verified chain (leaf or intermediate) must match one;
//! - **trust on first use** through a [`TofuStore`]: the first key seen for a host is stored, and
//!   a different key later is refused loudly with [`Error::TofuKeyChanged`].
//!
//! With none of these, building a config fails with [`ConfigError::NoTrustAnchors`]: there is no
//! unverified default. Tests that really want one call [`Trust::danger_accept_any`].
//!
//! ```
//! # fn main() -> Result<(), tether::Error> {
//! use tether::{Pin, Trust};
//! let pin: Pin = "sha256/47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=".parse()?;
//! let trust = Trust::new().with_pin(pin); // pin alone: no CA needed
//! assert!(trust.has_anchors());
//! # Ok(()) }
//! ```

use alloc::collections::BTreeMap;
use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::error::{CertificateError, ConfigError, Error, server_name_string};
use crate::pin::Pin;
use crate::time::TimePolicy;

/// Stores the key first seen for each host (trust on first use).
///
/// Implementations must be safe to share between connections. A `get` error fails the
/// handshake (fail closed); so does a `put` error.
pub trait TofuStore: Send + Sync + fmt::Debug {
    /// The pin stored for `host`, if any.
    fn get(&self, host: &str) -> Result<Option<Pin>, Error>;
    /// Stores `pin` for `host` (called only when `get` returned `None`).
    fn put(&self, host: &str, pin: Pin) -> Result<(), Error>;
}

/// A [`TofuStore`] in memory (no_std): forgets everything when dropped.
#[derive(Debug, Default)]
pub struct MemoryTofuStore {
    map: spin::Mutex<BTreeMap<String, Pin>>,
}

impl MemoryTofuStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl TofuStore for MemoryTofuStore {
    fn get(&self, host: &str) -> Result<Option<Pin>, Error> {
        Ok(self.map.lock().get(host).copied())
    }
    fn put(&self, host: &str, pin: Pin) -> Result<(), Error> {
        self.map.lock().insert(host.to_string(), pin);
        Ok(())
    }
}

/// How to verify a peer. See the [module docs](self).
#[derive(Clone, Debug)]
pub struct Trust {
    pub(crate) roots: RootCertStore,
    pub(crate) pins: Vec<Pin>,
    pub(crate) tofu: Option<Arc<dyn TofuStore>>,
    pub(crate) danger_any: bool,
}

impl Default for Trust {
    fn default() -> Self {
        Trust {
            roots: RootCertStore::empty(),
            pins: Vec::new(),
            tofu: None,
            danger_any: false,
        }
    }
}

impl Trust {
    /// An empty trust: add roots, pins or a TOFU store before use.
    pub fn new() -> Self {
        Self::default()
    }

    /// Trust the CA certificates in `pem` (one or many `CERTIFICATE` blocks).
    pub fn from_pem(pem: &[u8]) -> Result<Self, Error> {
        Self::new().with_roots_pem(pem)
    }

    /// Adds the CA certificates in `pem`; fails if there is none or one is not a usable anchor.
    pub fn with_roots_pem(mut self, pem: &[u8]) -> Result<Self, Error> {
        let mut n = 0;
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| ConfigError::BadPem(alloc::format!("{e:?}")))?;
            self = self.with_root_der(cert.as_ref())?;
            n += 1;
        }
        if n == 0 {
            return Err(ConfigError::BadPem("no CERTIFICATE block found".into()).into());
        }
        Ok(self)
    }

    /// Adds one DER CA certificate (its name and key are copied; for one built into the
    /// program, [`with_static_root`](Self::with_static_root) borrows them instead).
    pub fn with_root_der(mut self, der: &[u8]) -> Result<Self, Error> {
        self.roots
            .add(CertificateDer::from(der.to_vec()))
            .map_err(|e| ConfigError::BadPem(alloc::format!("not a usable CA certificate: {e}")))?;
        Ok(self)
    }

    /// Adds one DER CA certificate that lives as long as the program, e.g. one built into
    /// the firmware image (flash on a device): the anchor borrows the CA's name and key from
    /// `cert` instead of copying them to the heap (about 120 bytes for a P-256 CA, per CA).
    ///
    /// ```
    /// # fn main() -> Result<(), tether::Error> {
    /// # const CA_DER: &[u8] = include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/ca.der"));
    /// use tether::CertificateDer;
    /// // On a device: `CertificateDer::from_slice(include_bytes!("ca.der"))`.
    /// static CA: CertificateDer<'static> = CertificateDer::from_slice(CA_DER);
    /// let trust = tether::Trust::new().with_static_root(&CA)?;
    /// assert_eq!(trust.root_count(), 1);
    /// # Ok(()) }
    /// ```
    pub fn with_static_root(
        mut self,
        cert: &'static CertificateDer<'static>,
    ) -> Result<Self, Error> {
        let anchor = webpki::anchor_from_trusted_cert(cert)
            .map_err(|e| ConfigError::BadPem(alloc::format!("not a usable CA certificate: {e}")))?;
        self.roots.roots.push(anchor);
        Ok(self)
    }

    /// Adds the Mozilla root program's CAs (bundled, from `webpki-roots`).
    #[cfg(feature = "mozilla-roots")]
    pub fn with_mozilla_roots(mut self) -> Self {
        self.roots
            .extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        self
    }

    /// Adds an SPKI SHA-256 pin.
    pub fn with_pin(mut self, pin: Pin) -> Self {
        self.pins.push(pin);
        self
    }

    /// Adds a TOFU store: the first key seen per host is remembered, a changed key refused.
    pub fn with_tofu(mut self, store: Arc<dyn TofuStore>) -> Self {
        self.tofu = Some(store);
        self
    }

    /// **Accepts any certificate without verification.** For tests and diagnostics only: anyone
    /// on the path can read and change the traffic.
    pub fn danger_accept_any() -> Self {
        Trust {
            danger_any: true,
            ..Self::default()
        }
    }

    /// True when this trust can verify something (roots, pins, TOFU, or the danger mode).
    pub fn has_anchors(&self) -> bool {
        !self.roots.is_empty() || !self.pins.is_empty() || self.tofu.is_some() || self.danger_any
    }

    /// Gives back the spare capacity of its lists, once a config takes it for good (the
    /// root store grows by four anchors at a time: 216 bytes spare with one CA).
    pub(crate) fn shrink(&mut self) {
        self.roots.roots.shrink_to_fit();
        self.pins.shrink_to_fit();
    }

    /// The number of CA roots.
    pub fn root_count(&self) -> usize {
        self.roots.len()
    }

    /// With pins configured, a key of `chain` (leaf first) must match one. Hashes nothing when
    /// there are no pins.
    fn check_pins<'a>(
        &self,
        mut chain: impl Iterator<Item = &'a CertificateDer<'a>>,
        leaf: &CertificateDer<'_>,
    ) -> Result<(), Error> {
        if self.pins.is_empty() {
            return Ok(());
        }
        let matched = chain.any(|c| {
            Pin::of_certificate(c)
                .map(|p| self.pins.contains(&p))
                .unwrap_or(false)
        });
        if matched {
            return Ok(());
        }
        Err(Error::PinMismatch {
            presented: Pin::of_certificate(leaf)?,
        })
    }

    fn check_tofu(&self, host: &str, leaf: &CertificateDer<'_>) -> Result<(), Error> {
        let Some(store) = &self.tofu else {
            return Ok(());
        };
        let leaf_pin = Pin::of_certificate(leaf)?;
        match store.get(host)? {
            None => store.put(host, leaf_pin),
            Some(stored) if stored == leaf_pin => Ok(()),
            Some(stored) => Err(Error::TofuKeyChanged {
                host: host.to_string(),
                stored,
                presented: leaf_pin,
            }),
        }
    }
}

/// The handshake-signature half of a verifier: the provider's algorithms, as rustls does it.
macro_rules! verify_signatures_with {
    ($($provider:ident).+) => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &self.$($provider).+.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.$($provider).+.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.$($provider).+
                .signature_verification_algorithms
                .supported_schemes()
        }
    };
}

/// Picks the instant at which validity is checked.
fn check_time(
    policy: &TimePolicy,
    now: UnixTime,
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
) -> UnixTime {
    match policy {
        TimePolicy::IgnoreValidityTime => {
            // The latest notBefore of the presented chain lies inside every window of a
            // consistent chain; webpki checks all the rest.
            let latest = core::iter::once(end_entity)
                .chain(intermediates)
                .filter_map(|c| crate::der::validity(c.as_ref()))
                .map(|(nb, _)| nb)
                .max()
                .unwrap_or(0);
            UnixTime::since_unix_epoch(core::time::Duration::from_secs(latest))
        }
        _ => now,
    }
}

/// Where a per-session verifier leaves a failure rustls' error type cannot carry.
pub(crate) type FailureSlot = Arc<spin::Mutex<Option<Error>>>;

/// What a server verifier needs, shared by all sessions of a config.
#[derive(Debug)]
pub(crate) struct VerifierParts {
    pub trust: Trust,
    pub provider: Arc<CryptoProvider>,
    pub time: TimePolicy,
}

/// Verifies servers for one client session and leaves why it refused one in the session's
/// slot (pins and TOFU fail for reasons rustls' error cannot carry).
#[derive(Debug)]
pub(crate) struct ServerVerifier {
    pub parts: Arc<VerifierParts>,
    pub slot: FailureSlot,
}

impl VerifierParts {
    fn verify(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        now: UnixTime,
    ) -> Result<(), Error> {
        verify_server_cert(
            &self.trust,
            &self.provider.signature_verification_algorithms,
            &self.time,
            end_entity,
            intermediates,
            server_name,
            now,
        )
    }
}

/// Verifies a server's certificate for `server_name` at `now` with `trust`: with CA roots, the
/// chain (leaf + `intermediates`) must lead to a root, be valid at the time `time` picks and
/// name the server, and pins must match a key of the chain; with pins alone, the leaf's key
/// must match one; then TOFU. The one code path for TLS (rustls' verifier) and DTLS.
pub(crate) fn verify_server_cert(
    trust: &Trust,
    algorithms: &WebPkiSupportedAlgorithms,
    time: &TimePolicy,
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    server_name: &ServerName<'_>,
    now: UnixTime,
) -> Result<(), Error> {
    if trust.danger_any {
        return Ok(());
    }
    if !trust.roots.is_empty() {
        let parsed = rustls::server::ParsedCertificate::try_from(end_entity)
            .map_err(crate::error::from_rustls)?;
        let when = check_time(time, now, end_entity, intermediates);
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &trust.roots,
            intermediates,
            when,
            algorithms.all,
        )
        .map_err(crate::error::from_rustls)?;
        rustls::client::verify_server_name(&parsed, server_name)
            .map_err(crate::error::from_rustls)?;
        let chain = core::iter::once(end_entity).chain(intermediates);
        trust.check_pins(chain, end_entity)?;
    } else {
        // Pins alone: only the leaf's key identifies the server.
        trust.check_pins(core::iter::once(end_entity), end_entity)?;
    }
    trust.check_tofu(&server_name_string(server_name), end_entity)
}

/// rustls' error for a verifier's `err`; a name mismatch carries `server_name` (a server's
/// certificate), so the session's error says which name it was.
fn to_rustls(err: &Error, server_name: Option<&ServerName<'_>>) -> rustls::Error {
    use rustls::CertificateError as C;
    let c = match err {
        Error::Certificate(CertificateError::UnknownIssuer) => C::UnknownIssuer,
        Error::Certificate(CertificateError::Expired) => C::Expired,
        Error::Certificate(CertificateError::NotValidYet) => C::NotValidYet,
        Error::Certificate(CertificateError::NameMismatch { .. }) => match server_name {
            Some(name) => C::NotValidForNameContext {
                expected: name.to_owned(),
                presented: Vec::new(),
            },
            None => C::NotValidForName,
        },
        Error::Certificate(CertificateError::BadSignature) => C::BadSignature,
        Error::Certificate(CertificateError::WrongPurpose) => C::InvalidPurpose,
        Error::Certificate(CertificateError::BadEncoding) => C::BadEncoding,
        Error::Certificate(CertificateError::Revoked) => C::Revoked,
        Error::Certificate(CertificateError::NoWallClock) => {
            return rustls::Error::FailedToGetCurrentTime;
        }
        _ => C::ApplicationVerificationFailure,
    };
    rustls::Error::InvalidCertificate(c)
}

/// What a server verifier reaches from `self`: the config's verifier parts, and where a
/// failure goes that rustls' error cannot carry (a session's slot; nowhere when shared).
trait ServerVerifierParts {
    fn parts(&self) -> &VerifierParts;
    fn report(&self, _failure: Error) {}
}

impl ServerVerifierParts for ServerVerifier {
    fn parts(&self) -> &VerifierParts {
        &self.parts
    }

    fn report(&self, failure: Error) {
        *self.slot.lock() = Some(failure);
    }
}

/// The verifier a config's sessions share when no failure needs a slot (no pins, no TOFU):
/// the parts themselves, one allocation less per config than a [`ServerVerifier`] around
/// them.
impl ServerVerifierParts for VerifierParts {
    fn parts(&self) -> &VerifierParts {
        self
    }
}

/// rustls' `ServerCertVerifier` for a [`ServerVerifierParts`] type whose provider is at
/// `self.<path>` (rustls' trait is foreign: no blanket impl).
macro_rules! server_cert_verifier {
    ($ty:ty, $($provider:ident).+) => {
        impl ServerCertVerifier for $ty {
            fn verify_server_cert(
                &self,
                end_entity: &CertificateDer<'_>,
                intermediates: &[CertificateDer<'_>],
                server_name: &ServerName<'_>,
                _ocsp: &[u8],
                now: UnixTime,
            ) -> Result<ServerCertVerified, rustls::Error> {
                match self.parts().verify(end_entity, intermediates, server_name, now) {
                    Ok(()) => Ok(ServerCertVerified::assertion()),
                    Err(e) => {
                        let r = to_rustls(&e, Some(server_name));
                        self.report(e);
                        Err(r)
                    }
                }
            }

            verify_signatures_with!($($provider).+);
        }
    };
}

server_cert_verifier!(ServerVerifier, parts.provider);
server_cert_verifier!(VerifierParts, provider);

/// The parts are also the config's clock for rustls (one allocation less per config).
impl rustls::time_provider::TimeProvider for VerifierParts {
    fn current_time(&self) -> Option<UnixTime> {
        self.time.rustls_time()
    }
}

/// Whether a server asks for client certificates.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub enum ClientAuth {
    /// No client certificates (server-only TLS). The default.
    #[default]
    None,
    /// A client must present a certificate that `Trust` verifies (mTLS).
    Required(Trust),
    /// A client may present a certificate; if it does, `Trust` must verify it.
    Optional(Trust),
}

/// Verifies clients for a server (mTLS).
#[derive(Debug)]
pub(crate) struct ClientVerifier {
    pub trust: Trust,
    pub mandatory: bool,
    pub provider: Arc<CryptoProvider>,
    pub time: TimePolicy,
    pub subjects: Vec<DistinguishedName>,
    /// Chains already verified against these roots (`None`: no cache).
    pub verified: Option<VerifiedChains>,
}

impl ClientVerifier {
    pub fn new(
        mut trust: Trust,
        mandatory: bool,
        provider: Arc<CryptoProvider>,
        time: TimePolicy,
        cache_size: usize,
    ) -> Self {
        trust.shrink();
        let subjects = trust.roots.subjects();
        let verified = (cache_size > 0 && !trust.roots.is_empty() && !trust.danger_any)
            .then(|| VerifiedChains::new(cache_size));
        ClientVerifier {
            trust,
            mandatory,
            provider,
            time,
            subjects,
            verified,
        }
    }

    fn verify(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<(), Error> {
        let Some(cache) = &self.verified else {
            return self.verify_fully(end_entity, intermediates, now);
        };
        let key = VerifiedChains::key(end_entity, intermediates);
        if cache.contains(&key) {
            // The same bytes verified before against the same roots: their signatures and
            // usages cannot have changed. The time can: every certificate must still be
            // valid now (else the full path below gives the exact error). Pins are checked
            // as always.
            let when = check_time(&self.time, now, end_entity, intermediates).as_secs();
            let in_window = core::iter::once(end_entity).chain(intermediates).all(|c| {
                crate::der::validity(c.as_ref())
                    .is_some_and(|(not_before, not_after)| not_before <= when && when <= not_after)
            });
            if in_window {
                let chain = core::iter::once(end_entity).chain(intermediates);
                return self.trust.check_pins(chain, end_entity);
            }
        }
        self.verify_fully(end_entity, intermediates, now)?;
        cache.insert(key);
        Ok(())
    }

    fn verify_fully(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<(), Error> {
        verify_client_cert(
            &self.trust,
            &self.provider.signature_verification_algorithms,
            &self.time,
            end_entity,
            intermediates,
            now,
        )
    }
}

/// A bounded set of client certificate chains that verified against one verifier's roots,
/// by SHA-256 of the chain: a device that reconnects with the same certificate skips the
/// chain's signature check (one ECDSA verify per CA level), never the handshake signature
/// that proves it holds the key. Oldest entries go first when it is full.
#[derive(Debug)]
pub(crate) struct VerifiedChains {
    capacity: usize,
    inner: spin::Mutex<VerifiedInner>,
}

#[derive(Debug, Default)]
struct VerifiedInner {
    set: alloc::collections::BTreeSet<[u8; 32]>,
    order: alloc::collections::VecDeque<[u8; 32]>,
}

impl VerifiedChains {
    fn new(capacity: usize) -> VerifiedChains {
        VerifiedChains {
            capacity,
            inner: spin::Mutex::new(VerifiedInner::default()),
        }
    }

    /// SHA-256 over each certificate's length and bytes, leaf first.
    fn key(end_entity: &CertificateDer<'_>, intermediates: &[CertificateDer<'_>]) -> [u8; 32] {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        for cert in core::iter::once(end_entity).chain(intermediates) {
            ctx.update(&(cert.as_ref().len() as u64).to_be_bytes());
            ctx.update(cert.as_ref());
        }
        let mut key = [0u8; 32];
        key.copy_from_slice(ctx.finish().as_ref());
        key
    }

    fn contains(&self, key: &[u8; 32]) -> bool {
        self.inner.lock().set.contains(key)
    }

    fn insert(&self, key: [u8; 32]) {
        let mut inner = self.inner.lock();
        if inner.set.insert(key) {
            inner.order.push_back(key);
            while inner.order.len() > self.capacity {
                if let Some(old) = inner.order.pop_front() {
                    inner.set.remove(&old);
                }
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner.lock().set.len()
    }
}

/// Verifies a client's certificate at `now` with `trust`: with CA roots, the chain (leaf +
/// `intermediates`) must lead to a root, be valid at the time `time` picks and be issued for
/// client authentication, and pins must match a key of the chain; with pins alone, the leaf's
/// key must match one. The one code path for TLS (rustls' verifier) and DTLS.
pub(crate) fn verify_client_cert(
    trust: &Trust,
    algorithms: &WebPkiSupportedAlgorithms,
    time: &TimePolicy,
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    now: UnixTime,
) -> Result<(), Error> {
    if trust.danger_any {
        return Ok(());
    }
    if !trust.roots.is_empty() {
        let cert = webpki::EndEntityCert::try_from(end_entity)
            .map_err(|_| Error::Certificate(CertificateError::BadEncoding))?;
        let when = check_time(time, now, end_entity, intermediates);
        cert.verify_for_usage(
            algorithms.all,
            &trust.roots.roots,
            intermediates,
            when,
            webpki::KeyUsage::client_auth(),
            None,
            None,
        )
        .map_err(|e| Error::Certificate(from_webpki(e)))?;
        let chain = core::iter::once(end_entity).chain(intermediates);
        trust.check_pins(chain, end_entity)
    } else {
        trust.check_pins(core::iter::once(end_entity), end_entity)
    }
}

fn from_webpki(e: webpki::Error) -> CertificateError {
    use webpki::Error as W;
    match e {
        W::UnknownIssuer => CertificateError::UnknownIssuer,
        W::CertExpired { .. } => CertificateError::Expired,
        W::CertNotValidYet { .. } => CertificateError::NotValidYet,
        W::InvalidSignatureForPublicKey
        | W::UnsupportedSignatureAlgorithmContext(_)
        | W::UnsupportedSignatureAlgorithmForPublicKeyContext(_) => CertificateError::BadSignature,
        W::RequiredEkuNotFoundContext(_) => CertificateError::WrongPurpose,
        W::BadDer | W::BadDerTime => CertificateError::BadEncoding,
        W::CertRevoked => CertificateError::Revoked,
        other => CertificateError::Other(alloc::format!("{other}")),
    }
}

impl ClientCertVerifier for ClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.subjects
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.verify(end_entity, intermediates, now)
            .map(|()| ClientCertVerified::assertion())
            .map_err(|e| to_rustls(&e, None))
    }

    verify_signatures_with!(provider);
}

/// The first common name (OID 2.5.4.3) in a certificate's subject, as a gateway takes a
/// device's id from its client certificate. `None` when the certificate does not parse that
/// far or its subject has no common name in a UTF-8, printable or IA5 string.
///
/// Call it on a certificate the handshake has verified ([`Session::peer_certificates`]); it
/// checks nothing itself. It reads the DER up to the subject and nothing more, a fraction of a
/// full X.509 parse.
///
/// [`Session::peer_certificates`]: crate::Session::peer_certificates
pub fn subject_common_name<'a>(cert: &'a CertificateDer<'_>) -> Option<&'a str> {
    crate::der::subject_common_name(cert.as_ref())
}

#[cfg(test)]
mod verified_cache_tests {
    use super::*;

    fn der(pem: &[u8]) -> CertificateDer<'static> {
        CertificateDer::pem_slice_iter(pem).next().unwrap().unwrap()
    }

    fn verifier(cache: usize) -> ClientVerifier {
        let trust = Trust::from_pem(include_bytes!("../tests/data/ca.pem")).unwrap();
        let provider = crate::config::provider_with(
            crate::Crypto::Ring,
            (crate::TlsVersion::Tls12, crate::TlsVersion::Tls13),
            None,
            None,
        )
        .unwrap();
        ClientVerifier::new(trust, true, provider, TimePolicy::System, cache)
    }

    fn at(secs: u64) -> UnixTime {
        UnixTime::since_unix_epoch(core::time::Duration::from_secs(secs))
    }

    #[test]
    fn a_verified_chain_is_remembered_but_its_times_and_issuer_still_count() {
        let v = verifier(8);
        let client = der(include_bytes!("../tests/data/client.pem"));
        let (not_before, not_after) = crate::der::validity(client.as_ref()).unwrap();
        let now = at(not_before + 60);
        v.verify(&client, &[], now).unwrap();
        assert_eq!(v.verified.as_ref().unwrap().len(), 1);
        // Again: a hit, still fine, nothing added.
        v.verify(&client, &[], now).unwrap();
        assert_eq!(v.verified.as_ref().unwrap().len(), 1);
        // Cached, but expired now: refused with the exact reason.
        assert_eq!(
            v.verify(&client, &[], at(not_after + 1)),
            Err(Error::Certificate(CertificateError::Expired))
        );
        assert_eq!(
            v.verify(&client, &[], at(not_before - 1)),
            Err(Error::Certificate(CertificateError::NotValidYet))
        );
        // Another CA's client is never cached, and refused every time.
        let other = der(include_bytes!("../tests/data/other-client.pem"));
        for _ in 0..2 {
            assert_eq!(
                v.verify(&other, &[], now),
                Err(Error::Certificate(CertificateError::UnknownIssuer))
            );
        }
        assert_eq!(v.verified.as_ref().unwrap().len(), 1);
    }

    #[test]
    fn the_cache_is_bounded_and_can_be_off() {
        let v = verifier(1);
        let client = der(include_bytes!("../tests/data/client.pem"));
        let server = der(include_bytes!("../tests/data/server.pem"));
        let now = at(crate::der::validity(client.as_ref()).unwrap().0 + 60);
        v.verify(&client, &[], now).unwrap();
        // The server certificate is not for client auth: refused, not cached.
        assert!(v.verify(&server, &[], now).is_err());
        assert_eq!(v.verified.as_ref().unwrap().len(), 1);
        // A chain with an (unused) extra certificate is another key; the oldest goes.
        v.verify(&client, core::slice::from_ref(&client), now)
            .unwrap();
        assert_eq!(v.verified.as_ref().unwrap().len(), 1);
        assert!(verifier(0).verified.is_none());
    }
}
