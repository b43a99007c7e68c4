//! Checks on the names that go into certificates and file names.

use core::net::IpAddr;

use crate::Error;

/// What a SAN string turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum San {
    Ip(IpAddr),
    Dns(String),
}

/// Parses one `--san` value: an IPv4 or IPv6 address becomes an iPAddress SAN, anything else must
/// be a DNS name (a leading `*.` wildcard label is allowed).
pub(crate) fn parse_san(input: &str) -> Result<San, Error> {
    // `[::1]` is how people write IPv6 literals in URLs; accept it.
    let unbracketed = input
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or(input);
    if let Ok(ip) = unbracketed.parse::<IpAddr>() {
        return Ok(San::Ip(ip));
    }
    let name = input.strip_prefix("*.").unwrap_or(input);
    match dns_name_problem(name) {
        None => Ok(San::Dns(input.to_owned())),
        Some(reason) => Err(Error::InvalidSan {
            san: input.to_owned(),
            reason,
        }),
    }
}

/// Checks that `name` is a DNS name that a TLS client can ask for (the rules rustls applies to
/// server names, without a trailing dot): 1 to 253 characters, dot-separated labels of 1 to 63
/// characters of `A-Z a-z 0-9 - _`, no label starting or ending with `-`, and a last label that is
/// not all digits (that would read as an IPv4 address).
///
/// Wildcards are not accepted here; [`crate::Ca::issue_server`] accepts a leading `*.` label.
///
/// ```
/// assert!(tether_pki::validate_dns_name("gateway.local").is_ok());
/// assert!(tether_pki::validate_dns_name("bad name").is_err());
/// ```
pub fn validate_dns_name(name: &str) -> Result<(), Error> {
    match dns_name_problem(name) {
        None => Ok(()),
        Some(reason) => Err(Error::InvalidSan {
            san: name.to_owned(),
            reason,
        }),
    }
}

pub(crate) fn dns_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        return Some("it is empty");
    }
    if name.chars().any(char::is_whitespace) {
        return Some("it contains whitespace");
    }
    if !name.is_ascii() {
        return Some("it is not ASCII (write internationalised names in punycode, xn--...)");
    }
    if name.len() > 253 {
        return Some("it is longer than 253 characters");
    }
    if name.ends_with('.') {
        return Some("it ends with a dot");
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Some("it has an empty label (two dots in a row, or a leading dot)");
        }
        if label.len() > 63 {
            return Some("a label is longer than 63 characters");
        }
        if label.contains('*') {
            return Some("a wildcard is only allowed as the whole first label (*.example.com)");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Some("only letters, digits, '-', '_' and '.' are allowed");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Some("a label starts or ends with '-'");
        }
    }
    let last = name.rsplit('.').next().unwrap_or(name);
    if last.bytes().all(|b| b.is_ascii_digit()) {
        return Some("its last label is all digits, which reads as a (malformed) IPv4 address");
    }
    None
}

/// Checks a device id: 1 to 64 characters of `A-Z a-z 0-9 . _ -`.
///
/// The id becomes the certificate's common name and the base name of its files, so it must be
/// short and safe in a path.
///
/// ```
/// assert!(tether_pki::validate_device_id("device-1").is_ok());
/// assert!(tether_pki::validate_device_id("device/1").is_err());
/// ```
pub fn validate_device_id(id: &str) -> Result<(), Error> {
    let reason = if id.is_empty() {
        Some("it is empty")
    } else if id.chars().count() > 64 {
        Some("it is longer than 64 characters")
    } else if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        Some("use only letters, digits, '.', '_' and '-' (1 to 64 characters)")
    } else {
        None
    };
    match reason {
        None => Ok(()),
        Some(reason) => Err(Error::InvalidDeviceId {
            id: id.to_owned(),
            reason,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sans_parse_as_ip_or_dns() {
        assert_eq!(
            parse_san("127.0.0.1").unwrap(),
            San::Ip("127.0.0.1".parse().unwrap())
        );
        assert_eq!(parse_san("::1").unwrap(), San::Ip("::1".parse().unwrap()));
        assert_eq!(parse_san("[::1]").unwrap(), San::Ip("::1".parse().unwrap()));
        assert_eq!(
            parse_san("localhost").unwrap(),
            San::Dns("localhost".into())
        );
        assert_eq!(
            parse_san("*.gw.example").unwrap(),
            San::Dns("*.gw.example".into())
        );
    }

    #[test]
    fn bad_sans_are_rejected_with_a_reason() {
        for (bad, why) in [
            ("", "empty"),
            ("two words", "whitespace"),
            ("a..b", "empty label"),
            ("-a.b", "starts or ends"),
            ("a.b.", "ends with a dot"),
            ("a.*.b", "wildcard"),
            ("ex@mple.com", "only letters"),
            ("1.2.3", "all digits"),
            ("300.1.1.1", "all digits"),
            ("bücher.de", "punycode"),
        ] {
            let err = parse_san(bad).unwrap_err();
            let msg = err.to_string();
            assert!(matches!(err, Error::InvalidSan { .. }), "{bad:?}: {msg}");
            assert!(msg.contains(why), "{bad:?}: {msg}");
            assert!(msg.contains(&format!("{bad:?}")), "{bad:?}: {msg}");
        }
        let long = "a".repeat(64);
        assert!(parse_san(&long).is_err());
        assert!(parse_san(&"a".repeat(63)).is_ok());
    }

    #[test]
    fn device_ids() {
        for good in ["device-1", "d", "A.b_c-9", &"x".repeat(64)] {
            validate_device_id(good).unwrap();
        }
        for bad in ["", "dev ice", "dev/ice", "dévice", &"x".repeat(65), "a:b"] {
            let err = validate_device_id(bad).unwrap_err();
            assert!(matches!(err, Error::InvalidDeviceId { .. }), "{bad:?}");
            assert!(err.to_string().contains("invalid device id"), "{err}");
        }
    }
}
