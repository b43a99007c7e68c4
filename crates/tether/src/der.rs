//! The smallest DER reader tether needs: a certificate's validity window and its subject's
//! common name.
//!
//! Contract: every function here takes untrusted bytes, returns `None` on anything it does not
//! understand, and never panics (no indexing without a checked length; no arithmetic that can
//! overflow). It reads only; signatures and everything else are webpki's job. It is used by
//! [`TimePolicy::IgnoreValidityTime`](crate::TimePolicy::IgnoreValidityTime) to pick an instant
//! inside every certificate's validity window, so that webpki checks all the rest.

const SEQUENCE: u8 = 0x30;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;
const CONTEXT_0: u8 = 0xa0;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const UTF8_STRING: u8 = 0x0c;
const PRINTABLE_STRING: u8 = 0x13;
const IA5_STRING: u8 = 0x16;
/// id-at-commonName, 2.5.4.3.
const COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];

/// Splits one tag-length-value off the front of `input`: `(tag, value, rest)`.
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let (bytes, rest) = rest.split_at(n);
        let len = bytes
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, rest)
    };
    if rest.len() < len {
        return None;
    }
    let (value, rest) = rest.split_at(len);
    Some((tag, value, rest))
}

fn expect(input: &[u8], want: u8) -> Option<(&[u8], &[u8])> {
    let (tag, value, rest) = tlv(input)?;
    (tag == want).then_some((value, rest))
}

/// The TBSCertificate fields from `validity` on (validity, subject, ...).
fn from_validity(cert: &[u8]) -> Option<&[u8]> {
    let (certificate, _) = expect(cert, SEQUENCE)?;
    let (tbs, _) = expect(certificate, SEQUENCE)?;
    let mut rest = tbs;
    // [0] EXPLICIT version, optional.
    if rest.first() == Some(&CONTEXT_0) {
        rest = tlv(rest)?.2;
    }
    rest = tlv(rest)?.2; // serialNumber
    rest = tlv(rest)?.2; // signature AlgorithmIdentifier
    rest = tlv(rest)?.2; // issuer
    Some(rest)
}

/// The `notBefore` and `notAfter` of a DER certificate, in seconds since the Unix epoch.
pub(crate) fn validity(cert: &[u8]) -> Option<(u64, u64)> {
    let (validity, _) = expect(from_validity(cert)?, SEQUENCE)?;
    let (t1, v1, rest) = tlv(validity)?;
    let (t2, v2, _) = tlv(rest)?;
    Some((time(t1, v1)?, time(t2, v2)?))
}

/// The first common name in a DER certificate's subject (a UTF8String, PrintableString or
/// IA5String that is valid UTF-8).
pub(crate) fn subject_common_name(cert: &[u8]) -> Option<&str> {
    let (_, rest) = expect(from_validity(cert)?, SEQUENCE)?; // validity
    let (mut rdns, _) = expect(rest, SEQUENCE)?; // subject: RelativeDistinguishedNames
    while !rdns.is_empty() {
        let (mut attributes, rest) = expect(rdns, SET)?;
        rdns = rest;
        while !attributes.is_empty() {
            let (attribute, rest) = expect(attributes, SEQUENCE)?;
            attributes = rest;
            let (oid, value) = expect(attribute, OID)?;
            if oid != COMMON_NAME {
                continue;
            }
            let (tag, text, _) = tlv(value)?;
            if !matches!(tag, UTF8_STRING | PRINTABLE_STRING | IA5_STRING) {
                return None;
            }
            return core::str::from_utf8(text).ok();
        }
    }
    None
}

fn digits(s: &[u8]) -> Option<u64> {
    s.iter().try_fold(0u64, |acc, &c| {
        c.is_ascii_digit().then(|| acc * 10 + u64::from(c - b'0'))
    })
}

fn time(tag: u8, v: &[u8]) -> Option<u64> {
    let (year, rest) = match tag {
        // RFC 5280 4.1.2.5.1: YY >= 50 means 19YY.
        UTC_TIME if v.len() == 13 => {
            let yy = digits(v.get(..2)?)?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, v.get(2..)?)
        }
        GENERALIZED_TIME if v.len() == 15 => (digits(v.get(..4)?)?, v.get(4..)?),
        _ => return None,
    };
    if rest.last() != Some(&b'Z') {
        return None;
    }
    let month = digits(rest.get(0..2)?)?;
    let day = digits(rest.get(2..4)?)?;
    let hour = digits(rest.get(4..6)?)?;
    let min = digits(rest.get(6..8)?)?;
    let sec = digits(rest.get(8..10)?)?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || min > 59 || sec > 60 {
        return None;
    }
    let days = days_from_civil(year, month, day)?;
    Some(days * 86_400 + hour * 3600 + min * 60 + sec)
}

/// Days from 1970-01-01 to the given date (Howard Hinnant's algorithm), for years >= 1970.
fn days_from_civil(y: u64, m: u64, d: u64) -> Option<u64> {
    if y < 1970 {
        return Some(0);
    }
    let y = if m <= 2 { y - 1 } else { y };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe).checked_sub(719_468)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), Some(0));
        assert_eq!(days_from_civil(2000, 3, 1), Some(11_017));
        assert_eq!(time(UTC_TIME, b"260101000000Z"), Some(1_767_225_600));
        assert_eq!(
            time(GENERALIZED_TIME, b"20260101000000Z"),
            Some(1_767_225_600)
        );
        assert_eq!(time(UTC_TIME, b"2601010000Z"), None);
        assert_eq!(time(UTC_TIME, b"261301000000Z"), None);
    }

    #[test]
    fn garbage_never_panics() {
        for len in 0..64 {
            let bytes: alloc::vec::Vec<u8> = (0..len).map(|i| (i * 37 + 0x30) as u8).collect();
            let _ = validity(&bytes);
        }
        assert_eq!(validity(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
        assert_eq!(validity(&[0x30, 0x85, 1, 1, 1, 1, 1]), None);
    }

    fn cert_with(names: &[(rcgen::DnType, rcgen::DnValue)]) -> alloc::vec::Vec<u8> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::new(alloc::vec!["x.test".into()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        for (t, v) in names {
            params.distinguished_name.push(t.clone(), v.clone());
        }
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn subject_common_names() {
        use rcgen::{DnType as T, DnValue as V};
        let cert = cert_with(&[
            (T::CountryName, V::PrintableString("DE".try_into().unwrap())),
            (T::OrganizationName, V::Utf8String("tether".into())),
            (T::CommonName, V::Utf8String("device-7".into())),
        ]);
        assert_eq!(subject_common_name(&cert), Some("device-7"));
        let cert = cert_with(&[(
            T::CommonName,
            V::PrintableString("dev 8".try_into().unwrap()),
        )]);
        assert_eq!(subject_common_name(&cert), Some("dev 8"));
        let cert = cert_with(&[(T::CommonName, V::Ia5String("dev@9".try_into().unwrap()))]);
        assert_eq!(subject_common_name(&cert), Some("dev@9"));
        let cert = cert_with(&[(T::CommonName, V::Utf8String("gerät-ü".into()))]);
        assert_eq!(subject_common_name(&cert), Some("gerät-ü"));
        // No common name; one in a BMPString (not read).
        let cert = cert_with(&[(T::OrganizationName, V::Utf8String("tether".into()))]);
        assert_eq!(subject_common_name(&cert), None);
        let cert = cert_with(&[(T::CommonName, V::BmpString("dev".try_into().unwrap()))]);
        assert_eq!(subject_common_name(&cert), None);
        // The issuer's name is not the subject's.
        let pem = include_bytes!("../tests/data/client.pem");
        use rustls_pki_types::pem::PemObject as _;
        let der = rustls_pki_types::CertificateDer::pem_slice_iter(pem)
            .next()
            .unwrap()
            .unwrap();
        let cn = subject_common_name(der.as_ref()).expect("the test client has a CN");
        assert!(!cn.is_empty());
    }

    #[test]
    fn every_truncated_or_changed_certificate_is_read_without_panic() {
        use rcgen::{DnType as T, DnValue as V};
        let cert = cert_with(&[(T::CommonName, V::Utf8String("device-7".into()))]);
        for len in 0..cert.len() {
            assert_eq!(
                subject_common_name(&cert[..len]),
                None,
                "prefix of {len} bytes"
            );
        }
        for i in 0..cert.len() {
            for flip in [0x01, 0x80, 0xff] {
                let mut c = cert.clone();
                c[i] ^= flip;
                let _ = subject_common_name(&c);
                let _ = validity(&c);
            }
        }
    }
}
