//! The CA and what it issues.

use core::fmt;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use ring::rand::{SecureRandom, SystemRandom};
use time::{Duration, OffsetDateTime};

use crate::names::{self, San};
use crate::{CA_DAYS, Error, KeyKind, LEAF_DAYS};

/// How long a certificate is valid and which key it gets.
///
/// `IssueOptions::default()` is an ECDSA P-256 key valid from five minutes ago (a little slack
/// for peers whose clocks run behind) for [`LEAF_DAYS`] days (a leaf) or [`CA_DAYS`] days (a CA).
///
/// Explicit times win over `days`: with `not_before` set the period starts there, with `not_after`
/// set it ends there. That is how tests make certificates that are expired or not valid yet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IssueOptions {
    /// The kind of the new certificate's key.
    pub key: KeyKind,
    /// Validity in days, counted from `not_before`; `None` for the default.
    pub days: Option<u32>,
    /// Start of validity; `None` for now minus five minutes.
    pub not_before: Option<OffsetDateTime>,
    /// End of validity; `None` for `not_before` (or now) plus `days`.
    pub not_after: Option<OffsetDateTime>,
}

impl IssueOptions {
    /// Options with this key kind and defaults otherwise.
    pub fn with_key(key: KeyKind) -> Self {
        IssueOptions {
            key,
            ..IssueOptions::default()
        }
    }

    fn validity(&self, default_days: u32) -> Result<(OffsetDateTime, OffsetDateTime), Error> {
        let now = OffsetDateTime::now_utc();
        let days = self.days.unwrap_or(default_days);
        if days == 0 && self.not_after.is_none() {
            return Err(Error::InvalidValidity(
                "0 days: give --days 1 or more".into(),
            ));
        }
        let not_before = self
            .not_before
            .unwrap_or_else(|| now - Duration::minutes(5));
        let not_after = match self.not_after {
            Some(t) => t,
            None => self
                .not_before
                .unwrap_or(now)
                .checked_add(Duration::days(i64::from(days)))
                .ok_or_else(|| Error::InvalidValidity(format!("{days} days is too long")))?,
        };
        if not_after <= not_before {
            return Err(Error::InvalidValidity(format!(
                "notAfter {} is not after notBefore {}",
                crate::rfc3339(not_after),
                crate::rfc3339(not_before)
            )));
        }
        // X.509 GeneralizedTime stops at year 9999 (RFC 5280 section 4.1.2.5).
        if not_after.year() > 9999 || not_before.year() < 1950 {
            return Err(Error::InvalidValidity(
                "validity must lie between 1950 and 9999".into(),
            ));
        }
        Ok((not_before, not_after))
    }
}

/// Midnight UTC at the start of the given day, for [`IssueOptions`] times.
///
/// ```
/// let t = tether_pki::date(2020, 12, 31).unwrap();
/// assert_eq!(tether_pki::rfc3339(t), "2020-12-31T00:00:00Z");
/// ```
pub fn date(year: i32, month: u8, day: u8) -> Result<OffsetDateTime, Error> {
    let month = time::Month::try_from(month)
        .map_err(|_| Error::InvalidValidity(format!("month {month} is not 1 to 12")))?;
    let date = time::Date::from_calendar_date(year, month, day)
        .map_err(|e| Error::InvalidValidity(format!("{year}-{month}-{day}: {e}")))?;
    Ok(date.midnight().assume_utc())
}

/// A freshly issued certificate and its private key.
///
/// `Debug` does not print the key.
#[derive(Clone, PartialEq, Eq)]
pub struct Issued {
    /// The certificate, PEM (`-----BEGIN CERTIFICATE-----`).
    pub cert_pem: String,
    /// The private key, unencrypted PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`). Keep it secret:
    /// [`crate::Dir`] writes it with mode 0600.
    pub key_pem: String,
    /// The certificate, DER.
    pub cert_der: Vec<u8>,
}

impl fmt::Debug for Issued {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Issued")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"[secret]")
            .finish_non_exhaustive()
    }
}

/// A certificate authority: a CA certificate and its private key, ready to issue.
///
/// Make one with [`Ca::init`] (or [`Ca::init_with`] for a chosen validity), save it with
/// [`crate::Dir::write_ca`] or [`Ca::cert_pem`] + [`Ca::key_pem`], and get it back with
/// [`Ca::load`] or [`crate::Dir::load_ca`]. Then [`Ca::issue_server`] and [`Ca::issue_client`]
/// make leaf certificates signed by it.
///
/// The CA certificate has basicConstraints `CA:TRUE, pathlen:0` (it signs leaves, not other CAs)
/// and keyUsage `keyCertSign, cRLSign`, both critical.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    cert_der: Vec<u8>,
    key_pem: String,
}

impl fmt::Debug for Ca {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ca")
            .field("cert_pem", &self.cert_pem)
            .field("key", &self.issuer.key().algorithm())
            .finish_non_exhaustive()
    }
}

impl Ca {
    /// Makes a new self-signed CA with a fresh `key` and subject `CN=common_name`, valid for
    /// [`CA_DAYS`] days.
    pub fn init(key: KeyKind, common_name: &str) -> Result<Ca, Error> {
        Ca::init_with(common_name, &IssueOptions::with_key(key))
    }

    /// Makes a new self-signed CA with the key and validity of `opts` (default validity
    /// [`CA_DAYS`] days).
    pub fn init_with(common_name: &str, opts: &IssueOptions) -> Result<Ca, Error> {
        if common_name.trim().is_empty() {
            return Err(Error::InvalidName {
                name: common_name.to_owned(),
                reason: "a CA common name must not be empty",
            });
        }
        let key = opts.key.generate()?;
        let mut params = CertificateParams::default();
        (params.not_before, params.not_after) = opts.validity(CA_DAYS)?;
        params.serial_number = Some(random_serial()?);
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params
            .self_signed(&key)
            .map_err(|e| Error::crypto("sign the CA certificate", e))?;
        let key_pem = key.serialize_pem();
        Ok(Ca {
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
            key_pem,
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads a CA from its certificate and private key (PKCS#8 PEM, as [`Ca::key_pem`] writes).
    ///
    /// Fails if the certificate is not a CA or the key is not the certificate's.
    pub fn load(cert_pem: &str, key_pem: &str) -> Result<Ca, Error> {
        let cert_der = crate::certs_from_pem(cert_pem)?
            .into_iter()
            .next()
            .ok_or(Error::NoCertificate)?;
        let (_, x509) = x509_parser::parse_x509_certificate(&cert_der)
            .map_err(|e| Error::BadCertificate(e.to_string()))?;
        if !x509.is_ca() {
            return Err(Error::NotCa(x509.subject().to_string()));
        }
        let key = KeyPair::from_pem(key_pem).map_err(|e| Error::BadKey(e.to_string()))?;
        if rcgen::PublicKeyData::subject_public_key_info(&key) != x509.public_key().raw {
            return Err(Error::KeyMismatch);
        }
        let issuer = Issuer::from_ca_cert_der(&cert_der.as_slice().into(), key)
            .map_err(|e| Error::BadCertificate(e.to_string()))?;
        Ok(Ca {
            issuer,
            cert_pem: pem_encode("CERTIFICATE", &cert_der),
            cert_der,
            key_pem: key_pem.to_owned(),
        })
    }

    /// The CA certificate, PEM. Give it to peers as their trust anchor.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// The CA private key, PKCS#8 PEM. Keep it secret.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// Issues a server certificate for `sans`.
    ///
    /// Each entry that parses as an IPv4 or IPv6 address (`127.0.0.1`, `::1`, `[::1]`) becomes an
    /// iPAddress SAN; any other must be a DNS name (see [`crate::validate_dns_name`]; a leading
    /// `*.` wildcard is allowed) and becomes a dNSName SAN. The common name is the first entry.
    /// Extended key usage `serverAuth`; key usage `digitalSignature`, plus `keyEncipherment` for
    /// RSA keys (TLS 1.2 RSA key exchange). Default validity [`LEAF_DAYS`] days.
    pub fn issue_server(&self, sans: &[String], opts: &IssueOptions) -> Result<Issued, Error> {
        let first = sans.first().ok_or(Error::NoSan)?;
        let mut params = self.leaf_params(first, opts)?;
        for san in sans {
            let san = match names::parse_san(san)? {
                San::Ip(ip) => SanType::IpAddress(ip),
                San::Dns(name) => SanType::DnsName(
                    name.try_into()
                        .map_err(|e| Error::crypto("encode a DNS name", e))?,
                ),
            };
            if !params.subject_alt_names.contains(&san) {
                params.subject_alt_names.push(san);
            }
        }
        params
            .extended_key_usages
            .push(ExtendedKeyUsagePurpose::ServerAuth);
        params.key_usages.push(KeyUsagePurpose::DigitalSignature);
        if opts.key.is_rsa() {
            params.key_usages.push(KeyUsagePurpose::KeyEncipherment);
        }
        self.sign(&params, opts.key)
    }

    /// Issues a device (client) certificate for `device_id`.
    ///
    /// The id must be 1 to 64 characters of `A-Z a-z 0-9 . _ -` (see
    /// [`crate::validate_device_id`]); it becomes the common name and, when it is also a valid DNS
    /// name, a dNSName SAN (so SAN-only verifiers see it too). Extended key usage `clientAuth`;
    /// key usage `digitalSignature`. Default validity [`LEAF_DAYS`] days.
    pub fn issue_client(&self, device_id: &str, opts: &IssueOptions) -> Result<Issued, Error> {
        names::validate_device_id(device_id)?;
        let mut params = self.leaf_params(device_id, opts)?;
        if names::dns_name_problem(device_id).is_none() {
            params.subject_alt_names.push(SanType::DnsName(
                device_id
                    .try_into()
                    .map_err(|e| Error::crypto("encode a DNS name", e))?,
            ));
        }
        params
            .extended_key_usages
            .push(ExtendedKeyUsagePurpose::ClientAuth);
        params.key_usages.push(KeyUsagePurpose::DigitalSignature);
        self.sign(&params, opts.key)
    }

    fn leaf_params(
        &self,
        common_name: &str,
        opts: &IssueOptions,
    ) -> Result<CertificateParams, Error> {
        let mut params = CertificateParams::default();
        (params.not_before, params.not_after) = opts.validity(LEAF_DAYS)?;
        params.serial_number = Some(random_serial()?);
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::ExplicitNoCa;
        params.use_authority_key_identifier_extension = true;
        Ok(params)
    }

    fn sign(&self, params: &CertificateParams, key: KeyKind) -> Result<Issued, Error> {
        let key = key.generate()?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| Error::crypto("sign the certificate", e))?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().to_vec(),
        })
    }
}

/// 16 random bytes, top bit clear so the INTEGER stays positive (RFC 5280 section 4.1.2.2).
fn random_serial() -> Result<SerialNumber, Error> {
    let mut bytes = [0u8; 16];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| Error::crypto("make a serial number", "no randomness from the OS"))?;
    bytes[0] &= 0x7f;
    Ok(SerialNumber::from_slice(&bytes))
}

pub(crate) fn pem_encode(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        // base64 output is ASCII, so every chunk is valid UTF-8.
        out.push_str(core::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}
