//! Key kinds and key generation.

use core::fmt;
use core::str::FromStr;

use rcgen::KeyPair;

use crate::Error;

/// The kind of key pair to generate for a certificate.
///
/// Parses from and displays as the `--key` values of `tether pki`: `ecdsa-p256`, `rsa2048`,
/// `rsa4096`, `ed25519`.
///
/// ```
/// use tether_pki::KeyKind;
/// assert_eq!("rsa2048".parse::<KeyKind>().unwrap(), KeyKind::Rsa2048);
/// assert_eq!(KeyKind::default().to_string(), "ecdsa-p256");
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KeyKind {
    /// ECDSA on NIST P-256, signing with SHA-256. Small, fast, understood by every TLS stack.
    #[default]
    EcdsaP256,
    /// RSA with a 2048-bit modulus, signing with PKCS#1 v1.5 SHA-256. For old peers.
    Rsa2048,
    /// RSA with a 4096-bit modulus. Slow to generate (seconds) and to sign with.
    Rsa4096,
    /// Ed25519. Fast and small, but not every TLS peer or hardware accepts it in certificates.
    Ed25519,
}

impl KeyKind {
    /// All kinds, in the order `tether pki --help` lists them.
    pub const ALL: [KeyKind; 4] = [
        KeyKind::EcdsaP256,
        KeyKind::Rsa2048,
        KeyKind::Rsa4096,
        KeyKind::Ed25519,
    ];

    /// The name used on the command line and by [`FromStr`].
    pub fn name(self) -> &'static str {
        match self {
            KeyKind::EcdsaP256 => "ecdsa-p256",
            KeyKind::Rsa2048 => "rsa2048",
            KeyKind::Rsa4096 => "rsa4096",
            KeyKind::Ed25519 => "ed25519",
        }
    }

    /// Whether this is an RSA key (which also gets keyUsage keyEncipherment on servers).
    pub fn is_rsa(self) -> bool {
        matches!(self, KeyKind::Rsa2048 | KeyKind::Rsa4096)
    }

    /// Generates a fresh key pair of this kind from the operating system's random number generator.
    pub(crate) fn generate(self) -> Result<KeyPair, Error> {
        match self {
            KeyKind::EcdsaP256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
                .map_err(|e| Error::crypto("generate an ECDSA P-256 key", e)),
            KeyKind::Ed25519 => KeyPair::generate_for(&rcgen::PKCS_ED25519)
                .map_err(|e| Error::crypto("generate an Ed25519 key", e)),
            KeyKind::Rsa2048 => generate_rsa(2048),
            KeyKind::Rsa4096 => generate_rsa(4096),
        }
    }
}

/// ring signs with RSA keys but cannot make them, so RustCrypto's `rsa` makes the key and ring
/// (through rcgen) does all the signing. The `rsa` crate's known timing weakness (RUSTSEC-2023-0071)
/// is in decryption, which is never used here.
fn generate_rsa(bits: usize) -> Result<KeyPair, Error> {
    use rsa::pkcs8::EncodePrivateKey;

    let action = "generate an RSA key";
    let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, bits)
        .map_err(|e| Error::crypto(action, e))?;
    let pkcs8 = key.to_pkcs8_der().map_err(|e| Error::crypto(action, e))?;
    KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8.as_bytes().into(), &rcgen::PKCS_RSA_SHA256)
        .map_err(|e| Error::crypto(action, e))
}

impl fmt::Display for KeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for KeyKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        KeyKind::ALL
            .into_iter()
            .find(|k| k.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                format!("unknown key kind {s:?}: use one of ecdsa-p256, rsa2048, rsa4096, ed25519")
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for kind in KeyKind::ALL {
            assert_eq!(kind.name().parse::<KeyKind>().unwrap(), kind);
        }
        assert_eq!("RSA4096".parse::<KeyKind>().unwrap(), KeyKind::Rsa4096);
        let err = "dsa".parse::<KeyKind>().unwrap_err();
        assert!(err.contains("ecdsa-p256"), "{err}");
    }
}
