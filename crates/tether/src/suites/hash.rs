//! The transcript hash and the HMAC (so the HKDF) of tether's TLS 1.3 suites: small while
//! rustls holds them.
//!
//! A TLS 1.3 handshake holds one running transcript hash and one HKDF expander (its current
//! secret) from the ServerHello on, and an established session's rustls `KernelConnection`
//! keeps the key schedule's expander for key updates. ring's are large while held: its
//! `digest::Context` keeps room for SHA-512's state and block (224 bytes in rustls' box), and
//! its HKDF expander keeps an HMAC key set up as two hash states (184 bytes). Here:
//!
//! - [`Sha`]: the transcript hash is RustCrypto's `sha2` (about 110 bytes for SHA-256: its
//!   state and one 64-byte block).
//! - [`HmacKeyBytes`]: HMAC is ring's, but a key is kept as its bytes, zero-padded to the
//!   hash's length (40 bytes for SHA-256), and set up on the stack for each MAC. HMAC pads
//!   every key shorter than the hash's block with zeros, so the padded key is the same key
//!   (RFC 2104 section 2); a longer key, which TLS 1.3 never uses, is kept as ring's set-up
//!   key. rustls' own [`HkdfUsingHmac`](rustls::crypto::tls13::HkdfUsingHmac) builds the HKDF
//!   on it (RFC 5869), so the expander is these bytes and a pointer.
//!
//! Setting an HMAC key up costs two compressions of the hash per MAC, a few dozen MACs per
//! handshake: microseconds. The outputs are the same bytes as ring's (tests below, and every
//! handshake of the interop tests).

use alloc::boxed::Box;

use ring::hmac;
use rustls::crypto::hash::{Context, Hash, HashAlgorithm, Output};
use rustls::crypto::hmac::{Hmac, Key, Tag};
use rustls::crypto::tls13::HkdfUsingHmac;
use sha2::Digest;
use zeroize::Zeroize;

/// SHA-256 for the transcript.
pub(super) static SHA256: Sha<sha2::Sha256> = Sha(HashAlgorithm::SHA256, core::marker::PhantomData);
/// SHA-384 for the transcript.
pub(super) static SHA384: Sha<sha2::Sha384> = Sha(HashAlgorithm::SHA384, core::marker::PhantomData);

/// HKDF-SHA256 over [`HmacKeyBytes`].
pub(super) static HKDF_SHA256: HkdfUsingHmac<'static> = HkdfUsingHmac(&HMAC_SHA256);
/// HKDF-SHA384 over [`HmacKeyBytes`].
pub(super) static HKDF_SHA384: HkdfUsingHmac<'static> = HkdfUsingHmac(&HMAC_SHA384);

static HMAC_SHA256: HmacKeyBytes<32> = HmacKeyBytes(hmac::HMAC_SHA256);
static HMAC_SHA384: HmacKeyBytes<48> = HmacKeyBytes(hmac::HMAC_SHA384);

/// A hash of `sha2`, for rustls: `D` is `sha2::Sha256` or `sha2::Sha384`.
pub(super) struct Sha<D>(HashAlgorithm, core::marker::PhantomData<fn() -> D>);

impl<D: Digest + Clone + Send + Sync + 'static> Hash for Sha<D> {
    fn start(&self) -> Box<dyn Context> {
        Box::new(ShaContext(D::new()))
    }

    fn hash(&self, data: &[u8]) -> Output {
        Output::new(&D::digest(data))
    }

    fn output_len(&self) -> usize {
        <D as Digest>::output_size()
    }

    fn algorithm(&self) -> HashAlgorithm {
        self.0
    }
}

/// A running hash.
struct ShaContext<D>(D);

impl<D: Digest + Clone + Send + Sync + 'static> Context for ShaContext<D> {
    fn fork_finish(&self) -> Output {
        Output::new(&self.0.clone().finalize())
    }

    fn fork(&self) -> Box<dyn Context> {
        Box::new(ShaContext(self.0.clone()))
    }

    fn finish(self: Box<Self>) -> Output {
        Output::new(&self.0.finalize())
    }

    fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }
}

/// ring's HMAC whose keys are kept as bytes: `N` is the hash's output length.
pub(super) struct HmacKeyBytes<const N: usize>(hmac::Algorithm);

impl<const N: usize> Hmac for HmacKeyBytes<N> {
    fn with_key(&self, key: &[u8]) -> Box<dyn Key> {
        match key.len() {
            len if len <= N => {
                let mut padded = [0; N];
                padded[..len].copy_from_slice(key);
                Box::new(PaddedKey {
                    alg: self.0,
                    key: padded,
                })
            }
            _ => Box::new(ReadyKey(hmac::Key::new(self.0, key))),
        }
    }

    fn hash_output_len(&self) -> usize {
        N
    }
}

/// An HMAC key of at most `N` bytes, zero-padded to `N` (zeroised on drop).
struct PaddedKey<const N: usize> {
    alg: hmac::Algorithm,
    key: [u8; N],
}

impl<const N: usize> Drop for PaddedKey<N> {
    fn drop(&mut self) {
        self.key.zeroize();
    }
}

impl<const N: usize> Key for PaddedKey<N> {
    fn sign_concat(&self, first: &[u8], middle: &[&[u8]], last: &[u8]) -> Tag {
        sign(&hmac::Key::new(self.alg, &self.key), first, middle, last)
    }

    fn tag_len(&self) -> usize {
        N
    }
}

/// A longer key, set up by ring once (it hashes such a key first; TLS 1.3 has none).
struct ReadyKey(hmac::Key);

impl Key for ReadyKey {
    fn sign_concat(&self, first: &[u8], middle: &[&[u8]], last: &[u8]) -> Tag {
        sign(&self.0, first, middle, last)
    }

    fn tag_len(&self) -> usize {
        self.0.algorithm().digest_algorithm().output_len()
    }
}

fn sign(key: &hmac::Key, first: &[u8], middle: &[&[u8]], last: &[u8]) -> Tag {
    let mut ctx = hmac::Context::with_key(key);
    ctx.update(first);
    for m in middle {
        ctx.update(m);
    }
    ctx.update(last);
    Tag::new(ctx.sign().as_ref())
}

#[cfg(test)]
mod tests {
    use alloc::vec::Vec;

    use ring::digest;
    use rustls::crypto::tls13::Hkdf;

    use super::*;

    /// Messages of lengths around SHA-256's and SHA-384's blocks (64 and 128 bytes).
    fn messages() -> Vec<Vec<u8>> {
        [0usize, 1, 55, 56, 63, 64, 65, 111, 112, 127, 128, 129, 1000]
            .iter()
            .map(|&n| (0..n).map(|i| (i * 7 + n) as u8).collect())
            .collect()
    }

    #[test]
    fn the_transcript_hashes_are_rings_digests() {
        let pairs: [(&dyn Hash, &'static digest::Algorithm); 2] =
            [(&SHA256, &digest::SHA256), (&SHA384, &digest::SHA384)];
        for (ours, ring) in pairs {
            assert_eq!(ours.output_len(), ring.output_len());
            let mut ctx = ours.start();
            let mut all = Vec::new();
            for m in messages() {
                let want = digest::digest(ring, &m);
                assert_eq!(ours.hash(&m).as_ref(), want.as_ref(), "{} bytes", m.len());
                ctx.update(&m);
                all.extend_from_slice(&m);
                let so_far = digest::digest(ring, &all);
                // A fork finishes what was hashed so far and leaves the context running.
                assert_eq!(ctx.fork_finish().as_ref(), so_far.as_ref());
                assert_eq!(ctx.fork().finish().as_ref(), so_far.as_ref());
            }
            assert_eq!(ctx.finish().as_ref(), digest::digest(ring, &all).as_ref());
        }
    }

    #[test]
    fn hmac_with_any_key_length_is_rings() {
        let pairs: [(&dyn Hmac, hmac::Algorithm); 2] = [
            (&HMAC_SHA256, hmac::HMAC_SHA256),
            (&HMAC_SHA384, hmac::HMAC_SHA384),
        ];
        for (ours, alg) in pairs {
            // Shorter than the hash, its length, between it and the block, the block, longer.
            for len in [0usize, 1, 20, 31, 32, 33, 47, 48, 49, 64, 65, 128, 129, 300] {
                let key: Vec<u8> = (0..len).map(|i| (i as u8) ^ 0x5c).collect();
                let ring_key = hmac::Key::new(alg, &key);
                let k = ours.with_key(&key);
                assert_eq!(k.tag_len(), ours.hash_output_len());
                for m in messages() {
                    let want = hmac::sign(&ring_key, &m);
                    assert_eq!(k.sign(&[&m]).as_ref(), want.as_ref(), "key {len}");
                    let (a, b) = m.split_at(m.len() / 2);
                    let parts = [b"x".as_slice(), a, b, b"y"].concat();
                    assert_eq!(
                        k.sign_concat(b"x", &[a, b], b"y").as_ref(),
                        hmac::sign(&ring_key, &parts).as_ref()
                    );
                }
            }
        }
    }

    /// RFC 5869 test case 1 (HKDF-SHA256), and HKDF-SHA384 against ring's HKDF.
    #[test]
    fn hkdf_matches_rfc5869_and_ring() {
        let ikm = [0x0b; 22];
        let salt: Vec<u8> = (0u8..=0x0c).collect();
        let info: Vec<u8> = (0xf0u8..=0xf9).collect();
        let mut okm = [0; 42];
        HKDF_SHA256
            .extract_from_secret(Some(&salt), &ikm)
            .expand_slice(&[&info], &mut okm)
            .unwrap();
        let want = "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf\
                    34007208d5b887185865";
        let got: alloc::string::String = okm.iter().map(|b| alloc::format!("{b:02x}")).collect();
        assert_eq!(got, want);

        let prk = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA384, &salt).extract(&ikm);
        let mut ring_okm = [0; 100];
        prk.expand(&[&info], Len(100))
            .unwrap()
            .fill(&mut ring_okm)
            .unwrap();
        let mut ours = [0; 100];
        let expander = HKDF_SHA384.extract_from_secret(Some(&salt), &ikm);
        expander.expand_slice(&[&info], &mut ours).unwrap();
        assert_eq!(ours, ring_okm);
        assert_eq!(expander.expand_block(&[&info]).as_ref(), &ring_okm[..48]);
    }

    struct Len(usize);

    impl ring::hkdf::KeyType for Len {
        fn len(&self) -> usize {
            self.0
        }
    }
}
