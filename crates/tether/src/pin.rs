//! SPKI SHA-256 pins: `sha256/BASE64`, the SHA-256 digest of a certificate's DER
//! SubjectPublicKeyInfo (the same value as HPKP and curl's `--pinnedpubkey`).
//!
//! A pin names a key, not a certificate: a server that renews its certificate with the same key
//! keeps its pin.
//!
//! ```
//! use tether::Pin;
//! let pin: Pin = "sha256/47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=".parse().unwrap();
//! assert_eq!(pin.to_string(), "sha256/47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=");
//! assert!("sha1/abc".parse::<Pin>().is_err());
//! ```

use alloc::string::{String, ToString};
use core::fmt;
use core::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rustls_pki_types::CertificateDer;

use crate::error::{CertificateError, ConfigError, Error};

/// The SHA-256 digest of a DER SubjectPublicKeyInfo.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Pin(pub [u8; 32]);

impl Pin {
    /// The pin of a DER SubjectPublicKeyInfo.
    pub fn of_spki(spki_der: &[u8]) -> Pin {
        let digest = ring::digest::digest(&ring::digest::SHA256, spki_der);
        let mut out = [0u8; 32];
        out.copy_from_slice(digest.as_ref());
        Pin(out)
    }

    /// The pin of a DER certificate's key.
    pub fn of_certificate(cert: &CertificateDer<'_>) -> Result<Pin, Error> {
        let parsed = webpki::EndEntityCert::try_from(cert)
            .map_err(|_| Error::Certificate(CertificateError::BadEncoding))?;
        Ok(Pin::of_spki(parsed.subject_public_key_info().as_ref()))
    }
}

impl FromStr for Pin {
    type Err = Error;

    fn from_str(s: &str) -> Result<Pin, Error> {
        let bad = || Error::Config(ConfigError::BadPin(s.to_string()));
        let b64 = s.trim().strip_prefix("sha256/").ok_or_else(bad)?;
        let bytes = STANDARD.decode(b64).map_err(|_| bad())?;
        let arr: [u8; 32] = bytes.as_slice().try_into().map_err(|_| bad())?;
        Ok(Pin(arr))
    }
}

impl fmt::Display for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; 44];
        let n = STANDARD
            .encode_slice(self.0, &mut buf)
            .map_err(|_| fmt::Error)?;
        f.write_str("sha256/")?;
        f.write_str(core::str::from_utf8(&buf[..n]).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pin({self})")
    }
}

impl Pin {
    /// The pin as its `sha256/BASE64` text.
    pub fn to_text(&self) -> String {
        self.to_string()
    }
}
