//! SPKI pins: `sha256/BASE64`.

use base64::Engine as _;

use crate::Error;

/// The pin of a certificate's public key: `sha256/` followed by the standard base64 (with padding)
/// of SHA-256 over the DER SubjectPublicKeyInfo, the whole SEQUENCE.
///
/// This is the HPKP (RFC 7469) pin and what `curl --pinnedpubkey` takes. It stays the same when a
/// certificate is re-issued with the same key, and changes when the key does. The same value from
/// openssl:
///
/// ```text
/// openssl x509 -in cert.pem -pubkey -noout | openssl pkey -pubin -outform der \
///   | openssl dgst -sha256 -binary | base64
/// ```
pub fn spki_pin(cert_der: &[u8]) -> Result<String, Error> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|e| Error::BadCertificate(e.to_string()))?;
    Ok(spki_pin_from_spki(cert.public_key().raw))
}

/// [`spki_pin`] of the first certificate in `pem` (other PEM blocks before it are skipped).
pub fn spki_pin_from_pem(pem: &str) -> Result<String, Error> {
    let der = crate::certs_from_pem(pem)?
        .into_iter()
        .next()
        .ok_or(Error::NoCertificate)?;
    spki_pin(&der)
}

/// The pin of a DER SubjectPublicKeyInfo (for instance from a TLS raw public key).
pub fn spki_pin_from_spki(spki_der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, spki_der);
    format!(
        "sha256/{}",
        base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
    )
}
