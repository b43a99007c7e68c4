//! dimpl's crypto provider on ring: the same primitives as tether's TLS side.
//!
//! dimpl takes its cryptography from a provider. Its RustCrypto provider (pure Rust, no C) is
//! slower than ring for what a DTLS gateway does most: AES-GCM on every record and the
//! elliptic-curve operations of every handshake (with this provider the gateway's CPU per DTLS
//! 1.2 mTLS handshake went from 1,170 to 700 µs, docs/PERFORMANCE.md). This provider uses ring
//! for
//!
//! - the record AEADs: AES-128-GCM, AES-256-GCM, ChaCha20-Poly1305 (DTLS 1.2 and 1.3);
//! - key exchange: X25519, P-256, P-384 (ring's ephemeral ECDH; X25519 rejects low-order
//!   points, RFC 7748 6.1);
//! - signatures: ECDSA P-256/SHA-256 and P-384/SHA-384 (keys loaded by rustls' ring key
//!   loader, PKCS#8 or SEC1), verification against the peer's leaf through webpki;
//! - SHA-256/384, HMAC, the system random generator.
//!
//! It keeps from dimpl's RustCrypto provider what ring does not offer: the DTLS 1.3 record
//! number mask (a raw AES block or a ChaCha20 block; ring exposes only QUIC's 5-byte header
//! mask), the suite descriptions (key and nonce lengths) and the PSK AES-128-CCM-8 suite.
//! dimpl checks a provider against known answers when a config is built
//! (`CryptoProvider::validate`), and the tests in this module and the interop tests check it
//! against OpenSSL and GnuTLS.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::fmt;
use core::panic::AssertUnwindSafe;
use std::sync::OnceLock;

use dimpl::crypto::{Aad, Nonce};
use dimpl::crypto::{
    ActiveKeyExchange, Buf, Cipher, CryptoProvider, HashContext, HashProvider, HmacProvider,
    KeyProvider, SecureRandom, SignatureVerifier, SigningKey, SupportedDtls12CipherSuite,
    SupportedDtls13CipherSuite, SupportedKxGroup, TmpBuf,
};
use dimpl::{CryptoError, CryptoOperation, HashAlgorithm, NamedGroup, SignatureAlgorithm};
use ring::rand::SecureRandom as _;
use ring::{aead, agreement, digest, hmac};
use rustls::pki_types::{
    CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, PrivateSec1KeyDer,
    SignatureVerificationAlgorithm,
};

/// The provider: ring where ring has it, dimpl's RustCrypto parts elsewhere (module docs).
pub(crate) fn provider() -> CryptoProvider {
    let base = dimpl::crypto::rust_crypto::default_provider();
    CryptoProvider {
        kx_groups: KX_GROUPS,
        signature_verification: &VERIFIER,
        key_provider: &KEYS,
        secure_random: &RANDOM,
        hash_provider: &HASHES,
        hmac_provider: &HMAC,
        cipher_suites: dtls12_suites(base.cipher_suites),
        dtls13_cipher_suites: dtls13_suites(base.dtls13_cipher_suites),
    }
}

/// HMAC on ring (also the base of dimpl's PRF and HKDF), for the listener's cookie wrapper.
pub(crate) fn hmac_provider() -> &'static dyn HmacProvider {
    &HMAC
}

// ---- record AEADs -----------------------------------------------------------------------------

/// The ring AEAD of a suite's cipher, by key length for AES-GCM (dimpl passes the key only).
fn aead_for(suite_is_chacha: bool, key: &[u8]) -> Result<Box<dyn Cipher>, CryptoError> {
    let alg = if suite_is_chacha {
        if key.len() != 32 {
            return Err(CryptoError::InvalidChacha20Poly1305KeySize {
                actual: key.len().min(u16::MAX as usize) as u16,
            });
        }
        &aead::CHACHA20_POLY1305
    } else {
        match key.len() {
            16 => &aead::AES_128_GCM,
            32 => &aead::AES_256_GCM,
            n => {
                return Err(CryptoError::InvalidAesGcmKeySize {
                    actual: n.min(u16::MAX as usize) as u16,
                });
            }
        }
    };
    let key = aead::UnboundKey::new(alg, key)
        .map_err(|_| CryptoError::OperationFailed(CryptoOperation::CreateCipher))?;
    Ok(Box::new(RingAead(aead::LessSafeKey::new(key))))
}

struct RingAead(aead::LessSafeKey);

impl fmt::Debug for RingAead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RingAead").field(self.0.algorithm()).finish()
    }
}

impl Cipher for RingAead {
    fn encrypt(&mut self, data: &mut Buf, aad: Aad, nonce: Nonce) -> Result<(), CryptoError> {
        let tag = self
            .0
            .seal_in_place_separate_tag(
                aead::Nonce::assume_unique_for_key(nonce.0),
                aead::Aad::from(aad.0.as_slice()),
                data,
            )
            .map_err(|_| CryptoError::OperationFailed(CryptoOperation::Encrypt))?;
        data.extend_from_slice(tag.as_ref());
        Ok(())
    }

    fn decrypt(
        &mut self,
        ciphertext: &mut TmpBuf,
        aad: Aad,
        nonce: Nonce,
    ) -> Result<(), CryptoError> {
        let tag_len = self.0.algorithm().tag_len();
        if ciphertext.len() < tag_len {
            return Err(CryptoError::CiphertextTooShort {
                minimum: tag_len as u8,
                actual: ciphertext.len().min(u8::MAX as usize) as u8,
            });
        }
        let plain = self
            .0
            .open_in_place(
                aead::Nonce::assume_unique_for_key(nonce.0),
                aead::Aad::from(aad.0.as_slice()),
                ciphertext.as_mut(),
            )
            .map_err(|_| CryptoError::OperationFailed(CryptoOperation::Decrypt))?
            .len();
        ciphertext.truncate(plain);
        Ok(())
    }
}

/// A DTLS 1.2 suite of dimpl's RustCrypto provider with ring's AEAD.
#[derive(Debug)]
struct Suite12(&'static dyn SupportedDtls12CipherSuite);

impl SupportedDtls12CipherSuite for Suite12 {
    fn suite(&self) -> dimpl::crypto::Dtls12CipherSuite {
        self.0.suite()
    }
    fn hash_algorithm(&self) -> HashAlgorithm {
        self.0.hash_algorithm()
    }
    fn key_lengths(&self) -> (usize, usize, usize) {
        self.0.key_lengths()
    }
    fn explicit_nonce_len(&self) -> usize {
        self.0.explicit_nonce_len()
    }
    fn tag_len(&self) -> usize {
        self.0.tag_len()
    }
    fn min_protected_fragment_len(&self) -> usize {
        self.0.min_protected_fragment_len()
    }
    fn create_cipher(&self, key: &[u8]) -> Result<Box<dyn Cipher>, CryptoError> {
        use dimpl::crypto::Dtls12CipherSuite as S;
        let suite = self.0.suite();
        if suite == S::ECDHE_ECDSA_CHACHA20_POLY1305_SHA256 {
            aead_for(true, key)
        } else if suite == S::ECDHE_ECDSA_AES128_GCM_SHA256
            || suite == S::ECDHE_ECDSA_AES256_GCM_SHA384
        {
            aead_for(false, key)
        } else {
            // AES-CCM-8 (PSK): not in ring.
            self.0.create_cipher(key)
        }
    }
}

/// A DTLS 1.3 suite of dimpl's RustCrypto provider with ring's AEAD (the record number mask
/// stays RustCrypto's: module docs).
#[derive(Debug)]
struct Suite13(&'static dyn SupportedDtls13CipherSuite);

impl SupportedDtls13CipherSuite for Suite13 {
    fn suite(&self) -> dimpl::crypto::Dtls13CipherSuite {
        self.0.suite()
    }
    fn hash_algorithm(&self) -> HashAlgorithm {
        self.0.hash_algorithm()
    }
    fn key_len(&self) -> usize {
        self.0.key_len()
    }
    fn iv_len(&self) -> usize {
        self.0.iv_len()
    }
    fn tag_len(&self) -> usize {
        self.0.tag_len()
    }
    fn min_protected_fragment_len(&self) -> usize {
        self.0.min_protected_fragment_len()
    }
    fn create_cipher(&self, key: &[u8]) -> Result<Box<dyn Cipher>, CryptoError> {
        use dimpl::crypto::Dtls13CipherSuite as S;
        let suite = self.0.suite();
        if suite == S::CHACHA20_POLY1305_SHA256 {
            aead_for(true, key)
        } else if suite == S::AES_128_GCM_SHA256 || suite == S::AES_256_GCM_SHA384 {
            aead_for(false, key)
        } else {
            self.0.create_cipher(key)
        }
    }
    fn encrypt_sn(&self, sn_key: &[u8], sample: &[u8; 16]) -> [u8; 16] {
        self.0.encrypt_sn(sn_key, sample)
    }
}

/// The wrapped suites, made once per process (dimpl wants `'static` slices).
fn dtls12_suites(
    base: &'static [&'static dyn SupportedDtls12CipherSuite],
) -> &'static [&'static dyn SupportedDtls12CipherSuite] {
    static SUITES: OnceLock<Vec<&'static dyn SupportedDtls12CipherSuite>> = OnceLock::new();
    SUITES.get_or_init(|| wrap_all(base, |s| Box::leak(Box::new(Suite12(s)))))
}

fn dtls13_suites(
    base: &'static [&'static dyn SupportedDtls13CipherSuite],
) -> &'static [&'static dyn SupportedDtls13CipherSuite] {
    static SUITES: OnceLock<Vec<&'static dyn SupportedDtls13CipherSuite>> = OnceLock::new();
    SUITES.get_or_init(|| wrap_all(base, |s| Box::leak(Box::new(Suite13(s)))))
}

/// Each of `base` wrapped by `wrap`.
fn wrap_all<T: ?Sized + 'static>(
    base: &'static [&'static T],
    wrap: impl Fn(&'static T) -> &'static T,
) -> Vec<&'static T> {
    base.iter().map(|&s| wrap(s)).collect()
}

// ---- key exchange -----------------------------------------------------------------------------

#[derive(Debug)]
struct Kx {
    group: NamedGroup,
    alg: &'static agreement::Algorithm,
}

static KX_GROUPS: &[&dyn SupportedKxGroup] = &[&X25519, &P256, &P384];

static X25519: Kx = Kx {
    group: NamedGroup::X25519,
    alg: &agreement::X25519,
};
static P256: Kx = Kx {
    group: NamedGroup::Secp256r1,
    alg: &agreement::ECDH_P256,
};
static P384: Kx = Kx {
    group: NamedGroup::Secp384r1,
    alg: &agreement::ECDH_P384,
};

impl SupportedKxGroup for Kx {
    fn name(&self) -> NamedGroup {
        self.group
    }

    fn start_exchange(&self, mut buf: Buf) -> Result<Box<dyn ActiveKeyExchange>, CryptoError> {
        let fail = |_| CryptoError::OperationFailed(CryptoOperation::GenerateEphemeralKey);
        let private = agreement::EphemeralPrivateKey::generate(self.alg, &rng()).map_err(fail)?;
        let public = private
            .compute_public_key()
            .map_err(|_| CryptoError::OperationFailed(CryptoOperation::ComputePublicKey))?;
        buf.clear();
        buf.extend_from_slice(public.as_ref());
        Ok(Box::new(ActiveKx {
            group: self.group,
            alg: self.alg,
            private,
            public: buf,
        }))
    }
}

struct ActiveKx {
    group: NamedGroup,
    alg: &'static agreement::Algorithm,
    private: agreement::EphemeralPrivateKey,
    public: Buf,
}

impl fmt::Debug for ActiveKx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ActiveKx")
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}

impl ActiveKeyExchange for ActiveKx {
    fn pub_key(&self) -> &[u8] {
        &self.public
    }

    fn complete(self: Box<Self>, peer_pub: &[u8], out: &mut Buf) -> Result<(), CryptoError> {
        let ActiveKx {
            group,
            alg,
            private,
            ..
        } = *self;
        let peer = agreement::UnparsedPublicKey::new(alg, peer_pub);
        // ring checks the peer's point (on the curve; for X25519 not of low order).
        agreement::agree_ephemeral(private, &peer, |secret| {
            out.clear();
            out.extend_from_slice(secret);
        })
        .map_err(|_| CryptoError::InvalidPublicKey(group))
    }

    fn group(&self) -> NamedGroup {
        self.group
    }
}

// ---- signatures -------------------------------------------------------------------------------

#[derive(Debug)]
struct Keys;
static KEYS: Keys = Keys;

impl KeyProvider for Keys {
    fn load_private_key(&self, key_der: &[u8]) -> Result<Box<dyn SigningKey>, CryptoError> {
        use rustls::SignatureScheme as S;
        let pkcs8 = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_der.to_vec()));
        let sec1 = PrivateKeyDer::Sec1(PrivateSec1KeyDer::from(key_der.to_vec()));
        let key = rustls::crypto::ring::sign::any_ecdsa_type(&pkcs8)
            .or_else(|_| rustls::crypto::ring::sign::any_ecdsa_type(&sec1))
            .map_err(|_| CryptoError::InvalidPrivateKey)?;
        // An ECDSA key signs with its curve's hash only (ring fixes the pair at load time).
        let (signer, hash) = if let Some(s) = key.choose_scheme(&[S::ECDSA_NISTP256_SHA256]) {
            (s, HashAlgorithm::SHA256)
        } else if let Some(s) = key.choose_scheme(&[S::ECDSA_NISTP384_SHA384]) {
            (s, HashAlgorithm::SHA384)
        } else {
            return Err(CryptoError::InvalidPrivateKey);
        };
        Ok(Box::new(EcdsaKey {
            signer: AssertUnwindSafe(signer),
            hash: [hash],
        }))
    }
}

struct EcdsaKey {
    /// rustls' ring signer; it holds no state a panic could leave half-changed.
    signer: AssertUnwindSafe<Box<dyn rustls::sign::Signer>>,
    hash: [HashAlgorithm; 1],
}

impl fmt::Debug for EcdsaKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EcdsaKey")
            .field("scheme", &self.signer.scheme())
            .finish()
    }
}

impl SigningKey for EcdsaKey {
    fn sign(
        &mut self,
        data: &[u8],
        hash_alg: HashAlgorithm,
        out: &mut Buf,
    ) -> Result<(), CryptoError> {
        if hash_alg != self.hash[0] {
            return Err(CryptoError::SigningKeyHashMismatch {
                key_hash: self.hash[0],
                requested: hash_alg,
            });
        }
        let signature = self
            .signer
            .sign(data)
            .map_err(|_| CryptoError::OperationFailed(CryptoOperation::Sign))?;
        out.clear();
        out.extend_from_slice(&signature);
        Ok(())
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        SignatureAlgorithm::ECDSA
    }

    fn hash_algorithm(&self) -> HashAlgorithm {
        self.hash[0]
    }

    fn supported_hash_algorithms(&self) -> &[HashAlgorithm] {
        &self.hash
    }
}

#[derive(Debug)]
struct Verifier;
static VERIFIER: Verifier = Verifier;

impl SignatureVerifier for Verifier {
    fn verify_signature(
        &self,
        cert_der: &[u8],
        data: &[u8],
        signature: &[u8],
        hash_alg: HashAlgorithm,
        sig_alg: SignatureAlgorithm,
    ) -> Result<(), CryptoError> {
        use webpki::ring as alg;
        if sig_alg != SignatureAlgorithm::ECDSA {
            return Err(CryptoError::UnsupportedSignatureAlgorithm(sig_alg));
        }
        // The certificate's curve decides between the two; webpki refuses the other one.
        let candidates: [(&dyn SignatureVerificationAlgorithm, NamedGroup); 2] = match hash_alg {
            HashAlgorithm::SHA256 => [
                (alg::ECDSA_P256_SHA256, NamedGroup::Secp256r1),
                (alg::ECDSA_P384_SHA256, NamedGroup::Secp384r1),
            ],
            HashAlgorithm::SHA384 => [
                (alg::ECDSA_P256_SHA384, NamedGroup::Secp256r1),
                (alg::ECDSA_P384_SHA384, NamedGroup::Secp384r1),
            ],
            _ => {
                return Err(CryptoError::UnsupportedSignaturePair {
                    signature: sig_alg,
                    hash: hash_alg,
                });
            }
        };
        let der = CertificateDer::from(cert_der);
        let cert = webpki::EndEntityCert::try_from(&der)
            .map_err(|_| CryptoError::CertificateParseFailed)?;
        for (algorithm, group) in candidates {
            match cert.verify_signature(algorithm, data, signature) {
                Ok(()) => return Ok(()),
                Err(webpki::Error::UnsupportedSignatureAlgorithmForPublicKeyContext(_)) => {}
                Err(_) => {
                    return Err(CryptoError::SignatureVerificationFailed {
                        signature: sig_alg,
                        hash: hash_alg,
                        group,
                    });
                }
            }
        }
        Err(CryptoError::UnsupportedPublicKeyAlgorithm)
    }
}

// ---- hashes, HMAC, randomness -----------------------------------------------------------------

fn digest_alg(hash: HashAlgorithm) -> Option<&'static digest::Algorithm> {
    match hash {
        HashAlgorithm::SHA256 => Some(&digest::SHA256),
        HashAlgorithm::SHA384 => Some(&digest::SHA384),
        _ => None,
    }
}

#[derive(Debug)]
struct Hashes;
static HASHES: Hashes = Hashes;

impl HashProvider for Hashes {
    fn create_hash(&self, algorithm: HashAlgorithm) -> Box<dyn HashContext> {
        // dimpl asks only for the hashes of the suites it was given (SHA-256, SHA-384); its
        // validation fails a provider whose hashes are wrong before any session starts.
        let alg = digest_alg(algorithm).unwrap_or(&digest::SHA256);
        Box::new(Hash(digest::Context::new(alg)))
    }
}

struct Hash(digest::Context);

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Hash").field(self.0.algorithm()).finish()
    }
}

impl HashContext for Hash {
    fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    fn clone_and_finalize(&self, out: &mut Buf) {
        let d = self.0.clone().finish();
        out.clear();
        out.extend_from_slice(d.as_ref());
    }
}

#[derive(Debug)]
struct Hmac;
static HMAC: Hmac = Hmac;

impl HmacProvider for Hmac {
    fn hmac(
        &self,
        hash: HashAlgorithm,
        key: &[u8],
        data: &[u8],
        out: &mut [u8],
    ) -> Result<usize, CryptoError> {
        let alg = match hash {
            HashAlgorithm::SHA256 => hmac::HMAC_SHA256,
            HashAlgorithm::SHA384 => hmac::HMAC_SHA384,
            _ => return Err(CryptoError::UnsupportedHmacHash(hash)),
        };
        let tag = hmac::sign(&hmac::Key::new(alg, key), data);
        let tag = tag.as_ref();
        let dst = out
            .get_mut(..tag.len())
            .ok_or(CryptoError::OperationFailed(CryptoOperation::Sign))?;
        dst.copy_from_slice(tag);
        Ok(tag.len())
    }
}

fn rng() -> ring::rand::SystemRandom {
    ring::rand::SystemRandom::new()
}

#[derive(Debug)]
struct Random;
static RANDOM: Random = Random;

impl SecureRandom for Random {
    fn fill(&self, buf: &mut [u8]) -> Result<(), CryptoError> {
        rng()
            .fill(buf)
            .map_err(|_| CryptoError::OperationFailed(CryptoOperation::GenerateEphemeralKey))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// dimpl's own known-answer checks (AEADs, hashes, PRF, HMAC, signatures, key exchange).
    #[test]
    fn passes_dimpl_validation() {
        dimpl::Config::builder()
            .with_crypto_provider(provider())
            .build()
            .expect("the ring provider passes dimpl's validation");
    }

    /// Records sealed by ring open with dimpl's RustCrypto ciphers and the other way round,
    /// for every suite; a changed byte fails.
    #[test]
    fn aeads_agree_with_rustcrypto() {
        let base = dimpl::crypto::rust_crypto::default_provider();
        let ours = provider();
        let nonce = Nonce([7; 12]);
        let aad = || {
            let mut a = Aad(Default::default());
            a.0.extend([1, 2, 3, 4, 5]);
            a
        };
        let mut cases: Vec<(Box<dyn Cipher>, Box<dyn Cipher>)> = Vec::new();
        for (theirs, mine) in base.cipher_suites.iter().zip(ours.cipher_suites) {
            let key = vec![9u8; theirs.key_lengths().1];
            cases.push((
                theirs.create_cipher(&key).unwrap(),
                mine.create_cipher(&key).unwrap(),
            ));
        }
        for (theirs, mine) in base
            .dtls13_cipher_suites
            .iter()
            .zip(ours.dtls13_cipher_suites)
        {
            let key = vec![9u8; theirs.key_len()];
            cases.push((
                theirs.create_cipher(&key).unwrap(),
                mine.create_cipher(&key).unwrap(),
            ));
        }
        for (mut theirs, mut mine) in cases {
            let plain: Vec<u8> = (0..1200u32).map(|i| i as u8).collect();
            let mut a = Buf::new();
            a.extend_from_slice(&plain);
            let mut b = Buf::new();
            b.extend_from_slice(&plain);
            theirs.encrypt(&mut a, aad(), nonce).unwrap();
            mine.encrypt(&mut b, aad(), nonce).unwrap();
            assert_eq!(&a[..], &b[..], "{mine:?} seals as RustCrypto does");
            let mut bytes = b.to_vec();
            let mut t = TmpBuf::new(&mut bytes);
            theirs.decrypt(&mut t, aad(), nonce).unwrap();
            assert_eq!(t.as_ref(), &plain[..]);
            let mut bytes = a.to_vec();
            bytes[100] ^= 1;
            let mut t = TmpBuf::new(&mut bytes);
            assert!(mine.decrypt(&mut t, aad(), nonce).is_err(), "{mine:?}");
        }
    }

    /// P-256 and P-384 keys (PKCS#8) sign what the verifier accepts against their
    /// certificates; a changed message, the other hash and an RSA key are refused.
    #[test]
    fn ecdsa_keys_sign_and_verify() {
        for (alg, hash, group) in [
            (
                &rcgen::PKCS_ECDSA_P256_SHA256,
                HashAlgorithm::SHA256,
                NamedGroup::Secp256r1,
            ),
            (
                &rcgen::PKCS_ECDSA_P384_SHA384,
                HashAlgorithm::SHA384,
                NamedGroup::Secp384r1,
            ),
        ] {
            let key = rcgen::KeyPair::generate_for(alg).unwrap();
            let cert = rcgen::CertificateParams::new(vec!["dtls.test".to_string()])
                .unwrap()
                .self_signed(&key)
                .unwrap();
            let mut signer = KEYS.load_private_key(&key.serialize_der()).unwrap();
            assert_eq!(signer.hash_algorithm(), hash);
            let mut sig = Buf::new();
            signer.sign(b"transcript", hash, &mut sig).unwrap();
            let ecdsa = SignatureAlgorithm::ECDSA;
            VERIFIER
                .verify_signature(cert.der(), b"transcript", &sig, hash, ecdsa)
                .expect("its own signature verifies");
            let wrong = VERIFIER.verify_signature(cert.der(), b"transcripT", &sig, hash, ecdsa);
            assert!(
                matches!(wrong, Err(CryptoError::SignatureVerificationFailed { group: g, .. }) if g == group),
                "{wrong:?}"
            );
            let other = if hash == HashAlgorithm::SHA256 {
                HashAlgorithm::SHA384
            } else {
                HashAlgorithm::SHA256
            };
            assert!(signer.sign(b"transcript", other, &mut sig).is_err());
        }
        let rsa = rsa_pkcs8();
        assert!(matches!(
            KEYS.load_private_key(&rsa),
            Err(CryptoError::InvalidPrivateKey)
        ));
    }

    /// A SEC1 key ("EC PRIVATE KEY", what OpenSSL writes) loads and signs like its PKCS#8 form.
    #[test]
    fn sec1_keys_load_and_sign() {
        for (alg, hash) in [
            (&rcgen::PKCS_ECDSA_P256_SHA256, HashAlgorithm::SHA256),
            (&rcgen::PKCS_ECDSA_P384_SHA384, HashAlgorithm::SHA384),
        ] {
            let key = rcgen::KeyPair::generate_for(alg).unwrap();
            let cert = rcgen::CertificateParams::new(vec!["dtls.test".to_string()])
                .unwrap()
                .self_signed(&key)
                .unwrap();
            let sec1 = sec1_of_pkcs8(&key.serialize_der());
            assert_eq!(sec1.first(), Some(&0x30));
            let mut signer = KEYS.load_private_key(&sec1).expect("a SEC1 key loads");
            assert_eq!(signer.hash_algorithm(), hash);
            let mut sig = Buf::new();
            signer.sign(b"flight", hash, &mut sig).unwrap();
            VERIFIER
                .verify_signature(cert.der(), b"flight", &sig, hash, SignatureAlgorithm::ECDSA)
                .expect("the SEC1 key's signature verifies");
        }
    }

    /// The SEC1 ECPrivateKey inside a PKCS#8 EC key: PrivateKeyInfo's privateKey OCTET STRING
    /// (SEQUENCE { INTEGER 0, AlgorithmIdentifier, OCTET STRING ECPrivateKey }).
    fn sec1_of_pkcs8(pkcs8: &[u8]) -> Vec<u8> {
        fn tlv(b: &[u8]) -> (u8, &[u8], &[u8]) {
            let (tag, len_byte) = (b[0], b[1]);
            let (len, head) = if len_byte < 0x80 {
                (usize::from(len_byte), 2)
            } else {
                let n = usize::from(len_byte & 0x7f);
                let len = b[2..2 + n]
                    .iter()
                    .fold(0usize, |a, &x| (a << 8) | usize::from(x));
                (len, 2 + n)
            };
            (tag, &b[head..head + len], &b[head + len..])
        }
        let (_, info, _) = tlv(pkcs8);
        let (_, _, rest) = tlv(info); // version
        let (_, _, rest) = tlv(rest); // algorithm
        let (tag, key, _) = tlv(rest);
        assert_eq!(tag, 0x04);
        key.to_vec()
    }

    /// Both ends of each group agree on the secret; a point off the curve is refused.
    #[test]
    fn key_exchange_agrees_and_refuses_bad_points() {
        for kx in KX_GROUPS {
            let a = kx.start_exchange(Buf::new()).unwrap();
            let b = kx.start_exchange(Buf::new()).unwrap();
            let (pa, pb) = (a.pub_key().to_vec(), b.pub_key().to_vec());
            let (mut sa, mut sb) = (Buf::new(), Buf::new());
            a.complete(&pb, &mut sa).unwrap();
            b.complete(&pa, &mut sb).unwrap();
            assert_eq!(&sa[..], &sb[..], "{:?}", kx.name());
            let c = kx.start_exchange(Buf::new()).unwrap();
            let bad = vec![0u8; pa.len()];
            assert!(
                c.complete(&bad, &mut Buf::new()).is_err(),
                "{:?} refuses an all-zero point",
                kx.name()
            );
        }
    }

    /// A PKCS#8 RSA key (the bytes only matter as "not ECDSA").
    fn rsa_pkcs8() -> Vec<u8> {
        // SEQUENCE { INTEGER 0, SEQUENCE { rsaEncryption OID, NULL }, OCTET STRING {} }
        vec![
            0x30, 0x14, 0x02, 0x01, 0x00, 0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7,
            0x0d, 0x01, 0x01, 0x01, 0x05, 0x00, 0x04, 0x00,
        ]
    }
}
