//! The transcript hash and the HKDF of tether's suites (the hash: TLS 1.2 and 1.3; HKDF:
//! TLS 1.3): small while rustls holds them.
//!
//! A TLS 1.3 handshake holds one running transcript hash and one HKDF expander (its current
//! secret) from the ServerHello on, and an established session's rustls `KernelConnection`
//! keeps the key schedule's expander for key updates. ring's are large while held: its
//! `digest::Context` keeps room for SHA-512's state and block (224 bytes in rustls' box), and
//! its HKDF expander keeps an HMAC key set up as two hash states (184 bytes). Here:
//!
//! - [`Sha`]: the transcript hash is RustCrypto's `sha2` (104 bytes for SHA-256: its state,
//!   one 64-byte block and a count).
//! - [`HkdfBytes`]: HKDF (RFC 5869) is ring's, but an expander keeps its pseudorandom key as
//!   bytes (32 for SHA-256, one allocation) and sets ring's up on the stack for each
//!   expansion. A key shorter than the hash is zero-padded to its length: HMAC pads every key
//!   shorter than its block with zeros, so it is the same key (RFC 2104 section 2).
//!
//! Setting the key up costs two compressions of the hash per expansion, a few dozen per
//! handshake: microseconds, about 1.5% of a resumed handshake (docs/PERFORMANCE.md). The outputs are the same bytes as ring's (tests below, and every
//! handshake of the interop tests).

use alloc::boxed::Box;

use ring::{hkdf, hmac};
use rustls::crypto::hash::{Context, Hash, HashAlgorithm, Output};
use rustls::crypto::hmac::Tag;
use rustls::crypto::tls13::{Hkdf, HkdfExpander, OkmBlock, OutputLengthError};
use sha2::Digest;
use zeroize::Zeroize;

/// SHA-256 for the transcript.
pub(super) static SHA256: Sha<sha2::Sha256> = Sha(HashAlgorithm::SHA256, core::marker::PhantomData);
/// SHA-384 for the transcript.
pub(super) static SHA384: Sha<sha2::Sha384> = Sha(HashAlgorithm::SHA384, core::marker::PhantomData);

/// HKDF-SHA256, its expanders 32 bytes.
pub(super) static HKDF_SHA256: HkdfBytes<32> = HkdfBytes;
/// HKDF-SHA384, its expanders 48 bytes.
pub(super) static HKDF_SHA384: HkdfBytes<48> = HkdfBytes;

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

/// HKDF (RFC 5869) of ring, whose expanders keep the PRK as bytes: `N` is the hash's output
/// length, 32 or 48.
pub(super) struct HkdfBytes<const N: usize>;

impl<const N: usize> HkdfBytes<N> {
    /// HKDF-Extract: HMAC keyed with the salt (the hash's length of zeros when there is none)
    /// over the input keying material.
    fn extract(&self, salt: Option<&[u8]>, ikm: &[u8]) -> Box<dyn HkdfExpander> {
        let zeros = [0; N];
        let key = hmac::Key::new(Prk::<N>::ALG.hmac_algorithm(), salt.unwrap_or(&zeros));
        self.expander(hmac::sign(&key, ikm).as_ref())
    }

    fn expander(&self, prk: &[u8]) -> Box<dyn HkdfExpander> {
        match prk.len() {
            len if len <= N => {
                let mut padded = [0; N];
                padded[..len].copy_from_slice(prk);
                Box::new(Prk { prk: padded })
            }
            _ => Box::new(ReadyPrk(hkdf::Prk::new_less_safe(*Prk::<N>::ALG, prk), N)),
        }
    }
}

impl<const N: usize> Hkdf for HkdfBytes<N> {
    fn extract_from_zero_ikm(&self, salt: Option<&[u8]>) -> Box<dyn HkdfExpander> {
        self.extract(salt, &[0; N])
    }

    fn extract_from_secret(&self, salt: Option<&[u8]>, secret: &[u8]) -> Box<dyn HkdfExpander> {
        self.extract(salt, secret)
    }

    fn expander_for_okm(&self, okm: &OkmBlock) -> Box<dyn HkdfExpander> {
        self.expander(okm.as_ref())
    }

    fn hmac_sign(&self, key: &OkmBlock, message: &[u8]) -> Tag {
        let key = hmac::Key::new(Prk::<N>::ALG.hmac_algorithm(), key.as_ref());
        Tag::new(hmac::sign(&key, message).as_ref())
    }
}

/// A PRK of at most `N` bytes, zero-padded to `N` (zeroised on drop): HMAC pads a key shorter
/// than the hash's block with zeros, so it is the same key.
struct Prk<const N: usize> {
    prk: [u8; N],
}

impl<const N: usize> Prk<N> {
    /// The HKDF of an `N`-byte hash (a build error for any other length).
    const ALG: &'static hkdf::Algorithm = match N {
        32 => &hkdf::HKDF_SHA256,
        48 => &hkdf::HKDF_SHA384,
        _ => panic!("HKDF here is SHA-256 or SHA-384"),
    };
}

impl<const N: usize> Drop for Prk<N> {
    fn drop(&mut self) {
        self.prk.zeroize();
    }
}

impl<const N: usize> HkdfExpander for Prk<N> {
    fn expand_slice(&self, info: &[&[u8]], output: &mut [u8]) -> Result<(), OutputLengthError> {
        expand(
            &hkdf::Prk::new_less_safe(*Self::ALG, &self.prk),
            info,
            output,
        )
    }

    fn expand_block(&self, info: &[&[u8]]) -> OkmBlock {
        expand_block(self, info)
    }

    fn hash_len(&self) -> usize {
        N
    }
}

/// A longer PRK, set up by ring once (no suite derives one).
struct ReadyPrk(hkdf::Prk, usize);

impl HkdfExpander for ReadyPrk {
    fn expand_slice(&self, info: &[&[u8]], output: &mut [u8]) -> Result<(), OutputLengthError> {
        expand(&self.0, info, output)
    }

    fn expand_block(&self, info: &[&[u8]]) -> OkmBlock {
        expand_block(self, info)
    }

    fn hash_len(&self) -> usize {
        self.1
    }
}

/// HKDF-Expand of `output.len()` bytes (at most 255 hash lengths).
fn expand(prk: &hkdf::Prk, info: &[&[u8]], output: &mut [u8]) -> Result<(), OutputLengthError> {
    prk.expand(info, Len(output.len()))
        .and_then(|okm| okm.fill(output))
        .map_err(|_| OutputLengthError)
}

/// HKDF-Expand of one hash length (within HKDF's limit of 255 of them, so it cannot fail).
fn expand_block(expander: &dyn HkdfExpander, info: &[&[u8]]) -> OkmBlock {
    let mut block = [0; OkmBlock::MAX_LEN];
    let block = &mut block[..expander.hash_len()];
    let _ = expander.expand_slice(info, block);
    OkmBlock::new(block)
}

/// An output length for ring's HKDF.
struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use alloc::vec::Vec;

    use ring::digest;

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

    /// What rustls holds while a handshake runs (docs/PERFORMANCE.md, "Device RAM"): the
    /// running SHA-256 is its state and one block, an expander its key.
    #[test]
    fn what_a_handshake_holds_is_small() {
        assert!(size_of::<ShaContext<sha2::Sha256>>() <= 112);
        assert_eq!(size_of::<Prk<32>>(), 32);
        assert_eq!(size_of::<Prk<48>>(), 48);
    }

    /// RFC 5869's SHA-256 test cases 1 and 3 (no salt, no info).
    #[test]
    fn hkdf_sha256_gives_rfc5869s_output() {
        let hex = |b: &[u8]| -> alloc::string::String {
            b.iter().map(|b| alloc::format!("{b:02x}")).collect()
        };
        let ikm = [0x0b; 22];
        let salt: Vec<u8> = (0u8..=0x0c).collect();
        let info: Vec<u8> = (0xf0u8..=0xf9).collect();
        let mut okm = [0; 42];
        HKDF_SHA256
            .extract_from_secret(Some(&salt), &ikm)
            .expand_slice(&[&info[..4], &info[4..]], &mut okm)
            .unwrap();
        assert_eq!(
            hex(&okm),
            "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
        );
        HKDF_SHA256
            .extract_from_secret(None, &ikm)
            .expand_slice(&[], &mut okm)
            .unwrap();
        assert_eq!(
            hex(&okm),
            "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8"
        );
    }

    /// Every operation against ring's HKDF and HMAC, for both hashes, with pseudorandom keys
    /// shorter than, as long as and longer than the hash.
    #[test]
    fn hkdf_matches_rings_for_both_hashes() {
        let pairs: [(&dyn Hkdf, hkdf::Algorithm, usize); 2] = [
            (&HKDF_SHA256, hkdf::HKDF_SHA256, 32),
            (&HKDF_SHA384, hkdf::HKDF_SHA384, 48),
        ];
        let info: Vec<u8> = (0..40).collect();
        for (ours, alg, n) in pairs {
            let ring_okm = |prk: &hkdf::Prk, len: usize| {
                let mut out = alloc::vec![0; len];
                prk.expand(&[&info], Len(len))
                    .unwrap()
                    .fill(&mut out)
                    .unwrap();
                out
            };
            // Extract, then expand a block, less than one, several, the most allowed, too many.
            let salt = [9u8; 20];
            for (salt, ikm) in [
                (Some(&salt[..]), &b"shared secret"[..]),
                (None, &[0; 48][..n]),
            ] {
                let ring_prk = hkdf::Salt::new(alg, salt.unwrap_or(&[0; 48][..n])).extract(ikm);
                let e = if salt.is_none() {
                    ours.extract_from_zero_ikm(None)
                } else {
                    ours.extract_from_secret(salt, ikm)
                };
                assert_eq!(e.hash_len(), n);
                assert_eq!(
                    e.expand_block(&[&info]).as_ref(),
                    &ring_okm(&ring_prk, n)[..]
                );
                for len in [1, n + 1, 3 * n, 255 * n] {
                    let mut out = alloc::vec![0; len];
                    e.expand_slice(&[&info[..7], &info[7..]], &mut out).unwrap();
                    assert_eq!(out, ring_okm(&ring_prk, len), "{len} bytes");
                }
                let mut too_long = alloc::vec![0; 255 * n + 1];
                assert!(e.expand_slice(&[&info], &mut too_long).is_err());
            }
            // Expanders for an OKM of any length up to OkmBlock's 64 bytes, and hmac_sign.
            for len in [0, 1, n - 1, n, n + 1, 64] {
                let key: Vec<u8> = (0..len as u8).map(|i| i ^ 0x5c).collect();
                let okm = OkmBlock::new(&key);
                let ring_prk = hkdf::Prk::new_less_safe(alg, &key);
                let e = ours.expander_for_okm(&okm);
                assert_eq!(e.hash_len(), n, "okm of {len}");
                assert_eq!(
                    e.expand_block(&[&info]).as_ref(),
                    &ring_okm(&ring_prk, n)[..]
                );
                let mut out = [0; 100];
                e.expand_slice(&[&info], &mut out).unwrap();
                assert_eq!(&out[..], &ring_okm(&ring_prk, 100)[..], "okm of {len}");
                let ring_key = hmac::Key::new(alg.hmac_algorithm(), &key);
                assert_eq!(
                    ours.hmac_sign(&okm, &info).as_ref(),
                    hmac::sign(&ring_key, &info).as_ref()
                );
            }
        }
    }
}
