//! Reading certificates back: PEM blocks, and a summary for humans.

use core::fmt;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use time::OffsetDateTime;
use x509_parser::extensions::GeneralName;
use x509_parser::pem::Pem;

use crate::Error;

/// A certificate, summarised for people: what `tether pki show` and `tether connect` print.
///
/// Its `Display` is a few indented `key: value` lines.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CertInfo {
    /// Subject distinguished name, RFC 4514 style (`CN=device-1`).
    pub subject: String,
    /// Issuer distinguished name, RFC 4514 style.
    pub issuer: String,
    /// Serial number, lowercase hex with colons.
    pub serial: String,
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
    /// Subject alternative names: DNS names as written, IP addresses in their usual text form,
    /// other kinds prefixed (`email:`, `URI:`).
    pub sans: Vec<String>,
    /// SPKI pin, `sha256/BASE64` (see [`crate::spki_pin`]).
    pub pin: String,
    /// Whether basicConstraints says CA:TRUE.
    pub is_ca: bool,
    /// The public key's algorithm, e.g. `ECDSA P-256`, `RSA 2048`, `Ed25519`.
    pub key: String,
}

impl CertInfo {
    /// Whether `t` lies within the validity period (both ends included, as RFC 5280 says).
    pub fn is_valid_at(&self, t: OffsetDateTime) -> bool {
        self.not_before <= t && t <= self.not_after
    }

    /// Whether the subject names itself as issuer (a self-issued, usually self-signed, certificate).
    pub fn is_self_issued(&self) -> bool {
        self.subject == self.issuer
    }
}

impl fmt::Display for CertInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "subject:    {}", self.subject)?;
        writeln!(f, "issuer:     {}", self.issuer)?;
        writeln!(f, "not before: {}", rfc3339(self.not_before))?;
        writeln!(f, "not after:  {}", rfc3339(self.not_after))?;
        if self.sans.is_empty() {
            writeln!(f, "SANs:       (none)")?;
        } else {
            writeln!(f, "SANs:       {}", self.sans.join(", "))?;
        }
        writeln!(f, "key:        {}", self.key)?;
        writeln!(f, "CA:         {}", if self.is_ca { "yes" } else { "no" })?;
        writeln!(f, "serial:     {}", self.serial)?;
        write!(f, "pin:        {}", self.pin)
    }
}

/// RFC 3339 text of a time in UTC, to the second: `2020-12-31T00:00:00Z`.
pub fn rfc3339(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// Every certificate in `pem`, as DER, in file order. Other PEM blocks (keys, parameters) and text
/// between blocks are skipped.
///
/// Fails with [`Error::NoCertificate`] if there is none, and on a damaged block.
pub fn certs_from_pem(pem: &str) -> Result<Vec<Vec<u8>>, Error> {
    let mut certs = Vec::new();
    for block in Pem::iter_from_buffer(pem.as_bytes()) {
        let block = block.map_err(|e| Error::BadCertificate(format!("bad PEM block: {e}")))?;
        if block.label == "CERTIFICATE" {
            certs.push(block.contents);
        }
    }
    if certs.is_empty() {
        return Err(Error::NoCertificate);
    }
    Ok(certs)
}

/// Summarises a DER certificate: names, validity, SANs, pin.
///
/// ```
/// # fn main() -> Result<(), tether_pki::Error> {
/// let ca = tether_pki::Ca::init(Default::default(), "docs CA")?;
/// let info = tether_pki::describe(ca.cert_der())?;
/// assert!(info.is_ca && info.is_self_issued());
/// println!("{info}");
/// # Ok(())
/// # }
/// ```
pub fn describe(cert_der: &[u8]) -> Result<CertInfo, Error> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|e| Error::BadCertificate(e.to_string()))?;
    let mut sans = Vec::new();
    if let Ok(Some(ext)) = cert.subject_alternative_name() {
        for name in &ext.value.general_names {
            sans.push(match name {
                GeneralName::DNSName(dns) => (*dns).to_owned(),
                GeneralName::IPAddress(bytes) => render_ip(bytes),
                GeneralName::RFC822Name(mail) => format!("email:{mail}"),
                GeneralName::URI(uri) => format!("URI:{uri}"),
                other => format!("{other:?}"),
            });
        }
    }
    Ok(CertInfo {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        serial: cert.raw_serial_as_string(),
        not_before: cert.validity().not_before.to_datetime(),
        not_after: cert.validity().not_after.to_datetime(),
        sans,
        pin: crate::spki_pin_from_spki(cert.public_key().raw),
        is_ca: cert.is_ca(),
        key: key_description(&cert),
    })
}

fn render_ip(bytes: &[u8]) -> String {
    if let Ok(v4) = <[u8; 4]>::try_from(bytes) {
        IpAddr::V4(Ipv4Addr::from(v4)).to_string()
    } else if let Ok(v6) = <[u8; 16]>::try_from(bytes) {
        IpAddr::V6(Ipv6Addr::from(v6)).to_string()
    } else {
        // 8 or 32 bytes are address + mask, found in name constraints, not in a leaf's SAN.
        format!("IP:{bytes:02x?}")
    }
}

fn key_description(cert: &x509_parser::certificate::X509Certificate<'_>) -> String {
    use x509_parser::public_key::PublicKey;
    match cert.public_key().parsed() {
        Ok(PublicKey::RSA(rsa)) => format!("RSA {}", rsa.key_size()),
        Ok(PublicKey::EC(point)) => {
            let curve = cert
                .public_key()
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|oid| match oid.to_id_string().as_str() {
                    "1.2.840.10045.3.1.7" => "P-256".to_owned(),
                    "1.3.132.0.34" => "P-384".to_owned(),
                    "1.3.132.0.35" => "P-521".to_owned(),
                    other => other.to_owned(),
                })
                .unwrap_or_else(|| format!("{} bits", point.key_size()));
            format!("ECDSA {curve}")
        }
        _ => {
            let oid = cert.public_key().algorithm.algorithm.to_id_string();
            match oid.as_str() {
                "1.3.101.112" => "Ed25519".to_owned(),
                "1.3.101.113" => "Ed448".to_owned(),
                _ => oid,
            }
        }
    }
}
