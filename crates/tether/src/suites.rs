//! tether's cipher suites: ring's, with what rustls holds while a handshake runs kept small.
//!
//! While a handshake runs, rustls holds an encrypter and a decrypter for the handshake traffic
//! keys (and, at its end, for the first application traffic keys, until
//! [`Session`](crate::Session) takes those over in its own record layer), the running
//! transcript hash, and the key schedule's HKDF expander. ring's are large while held; a
//! device's handshake peaks with all of them alive (docs/PERFORMANCE.md, "Device RAM"):
//!
//! - **AES-GCM keys** (TLS 1.3): ring builds each as a ready key, the AES round keys and the
//!   GHASH table, about 560 bytes on the heap apiece. The encrypters and decrypters here keep
//!   the key bytes and the IV (28 bytes for AES-128) and set the ring key up on the stack for
//!   each record they seal or open: a few hundred nanoseconds per handshake with AES
//!   instructions. ChaCha20-Poly1305's ring key is its 32 key bytes already; its AEAD is
//!   ring's, unchanged.
//! - **The transcript hash and HKDF** (all TLS 1.3 suites; the transcript of TLS 1.2's too):
//!   [`hash`]'s, 104 and 32 bytes where ring's are 224 and 184.
//!
//! The records themselves are ring's records, byte for byte: the same AEAD, nonce (RFC 8446
//! 5.3), additional data (5.2) and inner content type; the hashes and HKDF outputs are the
//! same bytes (tests here and in [`hash`], and every handshake of the interop tests against
//! OpenSSL and GnuTLS). Everything else in a suite (signatures, key exchange, TLS 1.2's PRF
//! and AEAD, the keys handed to the record layer by [`Tls13AeadAlgorithm::extract_keys`]) is
//! ring's own. The established session's record layer (`crate::record`) keeps its traffic
//! keys as bytes the same way, through [`ring_key`].

use alloc::boxed::Box;

use ring::aead::{self, Aad, LessSafeKey, UnboundKey};
use rustls::crypto::CipherSuiteCommon;
use rustls::crypto::cipher::{
    AeadKey, InboundOpaqueMessage, InboundPlainMessage, Iv, MessageDecrypter, MessageEncrypter,
    OutboundOpaqueMessage, OutboundPlainMessage, PrefixedPayload, Tls13AeadAlgorithm,
    UnsupportedOperationError, make_tls13_aad,
};
use rustls::crypto::ring::cipher_suite as ring_suites;
use rustls::{
    ConnectionTrafficSecrets, ContentType, Error, ProtocolVersion, SupportedCipherSuite,
    Tls12CipherSuite, Tls13CipherSuite,
};
use zeroize::Zeroize;

mod hash;

/// `TLS13_AES_128_GCM_SHA256`, its keys held as bytes while rustls holds them.
pub(crate) static TLS13_AES_128_GCM_SHA256: SupportedCipherSuite =
    SupportedCipherSuite::Tls13(&AES_128_GCM_SHA256);
/// `TLS13_AES_256_GCM_SHA384`, its keys held as bytes while rustls holds them.
pub(crate) static TLS13_AES_256_GCM_SHA384: SupportedCipherSuite =
    SupportedCipherSuite::Tls13(&AES_256_GCM_SHA384);
/// `TLS13_CHACHA20_POLY1305_SHA256`: ring's AEAD (its key is its bytes already), the small
/// transcript hash and HKDF.
pub(crate) static TLS13_CHACHA20_POLY1305_SHA256: SupportedCipherSuite =
    SupportedCipherSuite::Tls13(&CHACHA20_POLY1305_SHA256);

static AES_128_GCM_SHA256: Tls13CipherSuite = small(
    tls13(&ring_suites::TLS13_AES_128_GCM_SHA256),
    &AES_128_GCM,
    &hash::SHA256,
    &hash::HKDF_SHA256,
);
static AES_256_GCM_SHA384: Tls13CipherSuite = small(
    tls13(&ring_suites::TLS13_AES_256_GCM_SHA384),
    &AES_256_GCM,
    &hash::SHA384,
    &hash::HKDF_SHA384,
);
static CHACHA20_POLY1305_SHA256: Tls13CipherSuite = {
    let base = tls13(&ring_suites::TLS13_CHACHA20_POLY1305_SHA256);
    small(base, base.aead_alg, &hash::SHA256, &hash::HKDF_SHA256)
};

static AES_128_GCM: KeyBytes<16> = KeyBytes;
static AES_256_GCM: KeyBytes<32> = KeyBytes;

const fn tls13(suite: &'static SupportedCipherSuite) -> &'static Tls13CipherSuite {
    match suite {
        SupportedCipherSuite::Tls13(s) => s,
        SupportedCipherSuite::Tls12(_) => panic!("not a TLS 1.3 suite"),
    }
}

/// ring's suite `base` with `aead`, and the hash and HKDF of [`hash`] (the same algorithm as
/// `base`'s), and without QUIC, which tether does not speak.
const fn small(
    base: &'static Tls13CipherSuite,
    aead: &'static dyn Tls13AeadAlgorithm,
    hash: &'static dyn rustls::crypto::hash::Hash,
    hkdf: &'static dyn rustls::crypto::tls13::Hkdf,
) -> Tls13CipherSuite {
    Tls13CipherSuite {
        common: CipherSuiteCommon {
            suite: base.common.suite,
            hash_provider: hash,
            confidentiality_limit: base.common.confidentiality_limit,
        },
        hkdf_provider: hkdf,
        aead_alg: aead,
        quic: None,
    }
}

/// ring's TLS 1.2 suite `base` with [`hash`]'s transcript hash.
const fn small12(
    base: &'static SupportedCipherSuite,
    hash: &'static dyn rustls::crypto::hash::Hash,
) -> Tls12CipherSuite {
    let SupportedCipherSuite::Tls12(base) = base else {
        panic!("not a TLS 1.2 suite");
    };
    Tls12CipherSuite {
        common: CipherSuiteCommon {
            suite: base.common.suite,
            hash_provider: hash,
            confidentiality_limit: base.common.confidentiality_limit,
        },
        prf_provider: base.prf_provider,
        kx: base.kx,
        sign: base.sign,
        aead_alg: base.aead_alg,
    }
}

/// ring's TLS 1.2 suite `$name` and tether's in its place, with `hash::$hash` for its
/// transcript.
macro_rules! tls12 {
    ($name:ident, $hash:ident) => {
        (
            ring_suites::$name,
            SupportedCipherSuite::Tls12(&small12(&ring_suites::$name, &hash::$hash)),
        )
    };
}

/// Each of ring's suites and tether's in its place.
static REPLACEMENTS: [(SupportedCipherSuite, SupportedCipherSuite); 9] = [
    (
        ring_suites::TLS13_AES_128_GCM_SHA256,
        TLS13_AES_128_GCM_SHA256,
    ),
    (
        ring_suites::TLS13_AES_256_GCM_SHA384,
        TLS13_AES_256_GCM_SHA384,
    ),
    (
        ring_suites::TLS13_CHACHA20_POLY1305_SHA256,
        TLS13_CHACHA20_POLY1305_SHA256,
    ),
    tls12!(TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, SHA256),
    tls12!(TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, SHA384),
    tls12!(TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, SHA256),
    tls12!(TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, SHA256),
    tls12!(TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384, SHA384),
    tls12!(TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256, SHA256),
];

/// Replaces ring's suites in `suites` with tether's (the same suites, in the same order).
pub(crate) fn compact(suites: &mut [SupportedCipherSuite]) {
    for s in suites {
        if let Some((_, ours)) = REPLACEMENTS.iter().find(|(ring, _)| *s == *ring) {
            *s = *ours;
        }
    }
}

/// A TLS 1.3 AES-GCM AEAD whose encrypters and decrypters keep key bytes: `N` is the key's
/// length, 16 or 32.
struct KeyBytes<const N: usize>;

impl<const N: usize> KeyBytes<N> {
    fn holder(&self, key: &AeadKey, iv: &Iv) -> Option<Keyed<N>> {
        // rustls derives exactly `key_len` bytes for the suite: this cannot fail.
        Some(Keyed {
            key: key.as_ref().get(..N)?.try_into().ok()?,
            iv: iv.as_ref().try_into().ok()?,
        })
    }
}

impl<const N: usize> Tls13AeadAlgorithm for KeyBytes<N> {
    fn encrypter(&self, key: AeadKey, iv: Iv) -> Box<dyn MessageEncrypter> {
        match self.holder(&key, &iv) {
            Some(keyed) => Box::new(keyed),
            None => Box::new(WrongKey),
        }
    }

    fn decrypter(&self, key: AeadKey, iv: Iv) -> Box<dyn MessageDecrypter> {
        match self.holder(&key, &iv) {
            Some(keyed) => Box::new(keyed),
            None => Box::new(WrongKey),
        }
    }

    fn key_len(&self) -> usize {
        N
    }

    fn extract_keys(
        &self,
        key: AeadKey,
        iv: Iv,
    ) -> Result<ConnectionTrafficSecrets, UnsupportedOperationError> {
        Ok(match N {
            16 => ConnectionTrafficSecrets::Aes128Gcm { key, iv },
            _ => ConnectionTrafficSecrets::Aes256Gcm { key, iv },
        })
    }
}

/// A ring key of `alg` set up from `key`'s bytes, on the stack: for one record here, and in
/// the established session's record layer (`crate::record`).
pub(crate) fn ring_key(alg: &'static aead::Algorithm, key: &[u8]) -> Result<LessSafeKey, Error> {
    // rustls derives exactly `key_len` bytes for the suite: neither can fail.
    key.get(..alg.key_len())
        .and_then(|key| UnboundKey::new(alg, key).ok())
        .map(LessSafeKey::new)
        .ok_or_else(wrong_key)
}

fn wrong_key() -> Error {
    Error::General("AEAD key of the wrong length".into())
}

/// A TLS 1.3 record's nonce: the IV with the sequence number XORed into its last 8 bytes
/// (RFC 8446 5.3; rustls uses the same construction for TLS 1.2's GCM explicit nonce and
/// ChaCha20-Poly1305).
pub(crate) fn nonce(iv: &[u8; 12], seq: u64) -> [u8; 12] {
    let mut n = *iv;
    for (b, s) in n[4..].iter_mut().zip(seq.to_be_bytes()) {
        *b ^= s;
    }
    n
}

/// One direction's key bytes and IV, 28 bytes for AES-128 (zeroised on drop).
struct Keyed<const N: usize> {
    key: [u8; N],
    iv: [u8; 12],
}

impl<const N: usize> Drop for Keyed<N> {
    fn drop(&mut self) {
        self.key.zeroize();
        self.iv.zeroize();
    }
}

impl<const N: usize> Keyed<N> {
    /// The algorithm of an `N`-byte key (a build error for any other length).
    const ALG: &'static aead::Algorithm = match N {
        16 => &aead::AES_128_GCM,
        32 => &aead::AES_256_GCM,
        _ => panic!("AES-GCM keys are 16 or 32 bytes"),
    };

    /// The ring key for one record, on the stack.
    fn ring_key(&self) -> Result<LessSafeKey, Error> {
        ring_key(Self::ALG, &self.key)
    }

    fn nonce(&self, seq: u64) -> aead::Nonce {
        aead::Nonce::assume_unique_for_key(nonce(&self.iv, seq))
    }
}

impl<const N: usize> MessageEncrypter for Keyed<N> {
    fn encrypt(
        &mut self,
        msg: OutboundPlainMessage<'_>,
        seq: u64,
    ) -> Result<OutboundOpaqueMessage, Error> {
        let total_len = self.encrypted_payload_len(msg.payload.len());
        let mut payload = PrefixedPayload::with_capacity(total_len);
        payload.extend_from_chunks(&msg.payload);
        payload.extend_from_slice(&msg.typ.to_array());
        self.ring_key()?
            .seal_in_place_append_tag(
                self.nonce(seq),
                Aad::from(make_tls13_aad(total_len)),
                &mut payload,
            )
            .map_err(|_| Error::EncryptError)?;
        // RFC 8446 5.1: every TLS 1.3 record says TLS 1.2 on the wire.
        Ok(OutboundOpaqueMessage::new(
            ContentType::ApplicationData,
            ProtocolVersion::TLSv1_2,
            payload,
        ))
    }

    fn encrypted_payload_len(&self, payload_len: usize) -> usize {
        // The inner content type, then the tag.
        payload_len + 1 + Self::ALG.tag_len()
    }
}

impl<const N: usize> MessageDecrypter for Keyed<N> {
    fn decrypt<'a>(
        &mut self,
        mut msg: InboundOpaqueMessage<'a>,
        seq: u64,
    ) -> Result<InboundPlainMessage<'a>, Error> {
        let payload = &mut msg.payload;
        if payload.len() < Self::ALG.tag_len() {
            return Err(Error::DecryptError);
        }
        let aad = Aad::from(make_tls13_aad(payload.len()));
        let plain_len = self
            .ring_key()?
            .open_in_place(self.nonce(seq), aad, payload)
            .map_err(|_| Error::DecryptError)?
            .len();
        payload.truncate(plain_len);
        msg.into_tls13_unpadded_message()
    }
}

/// What a suite got instead of keys of its length (rustls never gives one): every record
/// fails.
struct WrongKey;

impl MessageEncrypter for WrongKey {
    fn encrypt(
        &mut self,
        _: OutboundPlainMessage<'_>,
        _: u64,
    ) -> Result<OutboundOpaqueMessage, Error> {
        Err(wrong_key())
    }

    fn encrypted_payload_len(&self, payload_len: usize) -> usize {
        payload_len
    }
}

impl MessageDecrypter for WrongKey {
    fn decrypt<'a>(
        &mut self,
        _: InboundOpaqueMessage<'a>,
        _: u64,
    ) -> Result<InboundPlainMessage<'a>, Error> {
        Err(wrong_key())
    }
}

#[cfg(test)]
mod tests {
    use alloc::vec::Vec;

    use super::*;

    // rustls hands a suite exactly `key_len` bytes; outside rustls an `AeadKey` can only be
    // made of 32 (AES-128 uses the first 16).
    const KEY: [u8; 32] = [7; 32];
    const IV: [u8; 12] = [3; 12];

    fn suites() -> [&'static Tls13CipherSuite; 2] {
        [
            tls13(&TLS13_AES_128_GCM_SHA256),
            tls13(&TLS13_AES_256_GCM_SHA384),
        ]
    }

    fn seal(suite: &Tls13CipherSuite, typ: ContentType, data: &[u8], seq: u64) -> Vec<u8> {
        let mut enc = suite.aead_alg.encrypter(AeadKey::from(KEY), Iv::new(IV));
        let plain = OutboundPlainMessage {
            typ,
            version: ProtocolVersion::TLSv1_3,
            payload: data.into(),
        };
        let wire = enc.encrypt(plain, seq).unwrap().encode();
        assert_eq!(wire.len(), 5 + enc.encrypted_payload_len(data.len()));
        wire
    }

    fn open(
        suite: &Tls13CipherSuite,
        wire: &mut [u8],
        seq: u64,
    ) -> Result<(ContentType, Vec<u8>), Error> {
        let mut dec = suite.aead_alg.decrypter(AeadKey::from(KEY), Iv::new(IV));
        let msg = InboundOpaqueMessage::new(
            ContentType::ApplicationData,
            ProtocolVersion::TLSv1_2,
            &mut wire[5..],
        );
        let plain = dec.decrypt(msg, seq)?;
        Ok((plain.typ, plain.payload.to_vec()))
    }

    /// The record RFC 8446 section 5 describes, made with ring directly: header 23 3 3 and
    /// the length; nonce the IV with the sequence number XORed into its last 8 bytes; the
    /// header as additional data; the plaintext, its content type, then the tag.
    fn rfc_record(alg: &'static aead::Algorithm, typ: u8, data: &[u8], seq: u64) -> Vec<u8> {
        padded_record(alg, typ, data, 0, seq)
    }

    /// The same with `pad` zeros after the content type (RFC 8446 5.4).
    fn padded_record(
        alg: &'static aead::Algorithm,
        typ: u8,
        data: &[u8],
        pad: usize,
        seq: u64,
    ) -> Vec<u8> {
        let len = data.len() + 1 + pad + 16;
        let header = [23, 3, 3, (len >> 8) as u8, len as u8];
        let mut nonce = IV;
        for (n, s) in nonce[4..].iter_mut().zip(seq.to_be_bytes()) {
            *n ^= s;
        }
        let key = LessSafeKey::new(UnboundKey::new(alg, &KEY[..alg.key_len()]).unwrap());
        let mut body = [data, &[typ], &alloc::vec![0; pad]].concat();
        key.seal_in_place_append_tag(
            aead::Nonce::assume_unique_for_key(nonce),
            Aad::from(header),
            &mut body,
        )
        .unwrap();
        [&header[..], &body].concat()
    }

    #[test]
    fn sealed_records_are_rfc8446_records() {
        for (suite, alg) in suites()
            .into_iter()
            .zip([&aead::AES_128_GCM, &aead::AES_256_GCM])
        {
            for (seq, data) in [
                (0u64, &b"hello"[..]),
                (1, &[9u8; 1000][..]),
                (2, b""),
                (u64::MAX, b"x"),
            ] {
                let ours = seal(suite, ContentType::Handshake, data, seq);
                assert_eq!(
                    ours,
                    rfc_record(alg, 22, data, seq),
                    "{:?} seq {seq}",
                    suite.common.suite
                );
            }
        }
    }

    #[test]
    fn rfc8446_records_open_and_tampered_ones_do_not() {
        for (suite, alg) in suites()
            .into_iter()
            .zip([&aead::AES_128_GCM, &aead::AES_256_GCM])
        {
            let mut padded = padded_record(alg, 22, b"finished", 40, 5);
            assert_eq!(
                open(suite, &mut padded, 5).unwrap(),
                (ContentType::Handshake, b"finished".to_vec())
            );
            let mut wire = rfc_record(alg, 21, b"\x01\x00", 5);
            assert_eq!(
                open(suite, &mut wire.clone(), 5).unwrap(),
                (ContentType::Alert, b"\x01\x00".to_vec())
            );
            assert!(
                open(suite, &mut wire.clone(), 6).is_err(),
                "another sequence number"
            );
            let last = wire.len() - 1;
            wire[last] ^= 1;
            assert!(open(suite, &mut wire, 5).is_err(), "a changed tag");
            // A record of the other key size's suite: another key.
            let other = if alg == &aead::AES_128_GCM {
                &aead::AES_256_GCM
            } else {
                &aead::AES_128_GCM
            };
            assert!(open(suite, &mut rfc_record(other, 23, b"data", 0), 0).is_err());
            // Short of a tag.
            assert!(open(suite, &mut [23, 3, 3, 0, 4, 1, 2, 3, 4], 0).is_err());
        }
    }

    #[test]
    fn aes256_matches_rings_own_suite_both_ways() {
        let ring = tls13(&ring_suites::TLS13_AES_256_GCM_SHA384);
        let ours = tls13(&TLS13_AES_256_GCM_SHA384);
        for data in [&b"ping"[..], &[1u8; 300][..]] {
            let mut wire = seal(ours, ContentType::ApplicationData, data, 9);
            assert_eq!(wire, seal(ring, ContentType::ApplicationData, data, 9));
            assert_eq!(
                open(ring, &mut wire, 9).unwrap(),
                (ContentType::ApplicationData, data.to_vec())
            );
        }
    }

    /// A handshake key rustls holds is its bytes and IV (docs/PERFORMANCE.md, "Device RAM").
    #[test]
    fn a_held_handshake_key_is_its_bytes_and_iv() {
        assert_eq!(size_of::<Keyed<16>>(), 16 + 12);
        assert_eq!(size_of::<Keyed<32>>(), 32 + 12);
    }

    /// Every suite of ring's provider, TLS 1.2 and 1.3, becomes the same suite with the small
    /// transcript hash (and, for TLS 1.3, HKDF) in the same place.
    #[test]
    fn every_suite_of_rings_provider_is_replaced_by_the_same_suite() {
        let ring = rustls::crypto::ring::default_provider().cipher_suites;
        let mut ours = ring.clone();
        compact(&mut ours);
        assert_eq!(ours.len(), REPLACEMENTS.len());
        for (r, o) in ring.iter().zip(&ours) {
            assert_eq!(r.suite(), o.suite());
            let hash_of = |s: &SupportedCipherSuite| match s {
                SupportedCipherSuite::Tls12(s) => s.common.hash_provider,
                SupportedCipherSuite::Tls13(s) => s.common.hash_provider,
            };
            let (rh, oh) = (hash_of(r), hash_of(o));
            assert_eq!(rh.algorithm(), oh.algorithm());
            assert!(
                core::ptr::addr_eq(oh, &hash::SHA256) || core::ptr::addr_eq(oh, &hash::SHA384),
                "{:?} keeps ring's hash",
                r.suite()
            );
            match (r, o) {
                (SupportedCipherSuite::Tls12(r), SupportedCipherSuite::Tls12(o)) => {
                    // ring's PRF and AEAD (the same outputs: a constant ring's suites
                    // point to may be copied into this crate, so not the same address).
                    let (mut a, mut b) = ([0u8; 48], [0u8; 48]);
                    r.prf_provider.for_secret(&mut a, &KEY, b"label", b"seed");
                    o.prf_provider.for_secret(&mut b, &KEY, b"label", b"seed");
                    assert_eq!(a, b);
                    let shape = |s: &Tls12CipherSuite| {
                        let k = s.aead_alg.key_block_shape();
                        (k.enc_key_len, k.fixed_iv_len, k.explicit_nonce_len)
                    };
                    assert_eq!(shape(r), shape(o));
                    assert_eq!((r.kx, r.sign), (o.kx, o.sign));
                }
                (SupportedCipherSuite::Tls13(r), SupportedCipherSuite::Tls13(o)) => {
                    assert!(!core::ptr::addr_eq(r.hkdf_provider, o.hkdf_provider));
                    assert_eq!(r.aead_alg.key_len(), o.aead_alg.key_len());
                }
                _ => panic!("{:?} changed its version", r.suite()),
            }
        }
    }

    /// The keys rustls hands to the record layer are the ones it gave the suite.
    #[test]
    fn extracted_keys_are_the_suites_keys() {
        for (suite, want) in suites().into_iter().zip([16usize, 32]) {
            assert_eq!(suite.aead_alg.key_len(), want);
            match suite.aead_alg.extract_keys(AeadKey::from(KEY), Iv::new(IV)) {
                Ok(ConnectionTrafficSecrets::Aes128Gcm { key, iv }) if want == 16 => {
                    assert_eq!((key.as_ref(), iv.as_ref()), (&KEY[..], &IV[..]));
                }
                Ok(ConnectionTrafficSecrets::Aes256Gcm { key, iv }) if want == 32 => {
                    assert_eq!((key.as_ref(), iv.as_ref()), (&KEY[..], &IV[..]));
                }
                _ => panic!("{:?}: wrong keys", suite.common.suite),
            }
        }
    }
}
