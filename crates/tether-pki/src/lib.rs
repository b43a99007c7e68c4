//! Certificates and pins for tether: a small CA, server and device certificates, SPKI pins.
//!
//! This is the library behind `tether pki`. It makes the certificates a device fleet needs to
//! speak verified TLS to its gateway, without an openssl recipe:
//!
//! 1. [`Ca::init`] makes a self-signed CA (10 years by default, `pathlen:0`: it signs leaves only).
//! 2. [`Ca::issue_server`] issues a server certificate for DNS names and IP addresses
//!    (EKU `serverAuth`, 365 days by default).
//! 3. [`Ca::issue_client`] issues a device (client) certificate whose common name is the device id
//!    (EKU `clientAuth`, 365 days by default), for mutual TLS.
//! 4. [`spki_pin`] / [`spki_pin_from_pem`] compute the `sha256/BASE64` pin of a certificate's
//!    public key, the same value as HPKP and `curl --pinnedpubkey`.
//! 5. [`describe`] summarises a certificate (subject, issuer, validity, SANs, pin) for humans.
//! 6. [`Dir`] keeps all of it in one directory with a fixed layout, keys written with mode 0600 and
//!    nothing overwritten unless asked.
//!
//! Every key is fresh: ECDSA P-256 by default ([`KeyKind`]), RSA-2048/4096 or Ed25519 on request.
//! Leaves are signed by the CA's key with its natural algorithm (ECDSA-SHA256, RSA PKCS#1 v1.5
//! SHA-256 or Ed25519).
//!
//! # Example
//!
//! ```
//! use tether_pki::{Ca, IssueOptions, KeyKind};
//!
//! # fn main() -> Result<(), tether_pki::Error> {
//! let ca = Ca::init(KeyKind::EcdsaP256, "example CA")?;
//! let server = ca.issue_server(&["gateway.local".into(), "192.0.2.7".into()], &IssueOptions::default())?;
//! let device = ca.issue_client("device-1", &IssueOptions::default())?;
//!
//! let pin = tether_pki::spki_pin(&server.cert_der)?;
//! assert!(pin.starts_with("sha256/"));
//! let info = tether_pki::describe(&device.cert_der)?;
//! assert_eq!(info.subject, "CN=device-1");
//! assert_eq!(info.sans, ["device-1"]);
//! # Ok(())
//! # }
//! ```
//!
//! # On disk
//!
//! ```no_run
//! use tether_pki::{Dir, IssueOptions, KeyKind, Ca};
//!
//! # fn main() -> Result<(), tether_pki::Error> {
//! let dir = Dir::new("pki");
//! let ca = Ca::init(KeyKind::EcdsaP256, "fleet CA")?;
//! dir.write_ca(&ca, false)?; // pki/ca.pem, pki/ca.key (0600)
//!
//! let ca = dir.load_ca()?; // later, in another process
//! let issued = ca.issue_server(&["localhost".into()], &IssueOptions::default())?;
//! dir.write_issued(&dir.server_paths(None)?, &issued, false)?; // pki/server.pem, pki/server.key
//! # Ok(())
//! # }
//! ```
//!
//! # Expired or not-yet-valid certificates for tests
//!
//! [`IssueOptions::not_before`] and [`IssueOptions::not_after`] take explicit times, so a test can
//! make a certificate that is valid only during 2020:
//!
//! ```
//! use tether_pki::{date, Ca, IssueOptions, KeyKind};
//!
//! # fn main() -> Result<(), tether_pki::Error> {
//! let ca = Ca::init(KeyKind::EcdsaP256, "test CA")?;
//! let opts = IssueOptions {
//!     not_before: Some(date(2020, 1, 1)?),
//!     not_after: Some(date(2020, 12, 31)?),
//!     ..IssueOptions::default()
//! };
//! let expired = ca.issue_server(&["localhost".into()], &opts)?;
//! assert!(tether_pki::describe(&expired.cert_der)?.not_after < tether_pki::time::OffsetDateTime::now_utc());
//! # Ok(())
//! # }
//! ```
//!
//! This crate needs `std` (files, the system clock, the OS random number generator); the
//! no_std core (`tether`) only consumes what it produces.

mod ca;
mod dir;
mod error;
mod info;
mod key;
mod names;
mod pin;

pub use ca::{Ca, IssueOptions, Issued, date};
pub use dir::{Dir, Paths};
pub use error::Error;
pub use info::{CertInfo, certs_from_pem, describe, rfc3339};
pub use key::KeyKind;
pub use names::{validate_device_id, validate_dns_name};
pub use pin::{spki_pin, spki_pin_from_pem, spki_pin_from_spki};

/// The `time` crate, re-exported so callers can build [`IssueOptions`] times and read
/// [`CertInfo`] validity without naming a version of their own.
pub use time;

/// Default validity of a CA certificate: 3650 days (10 years).
pub const CA_DAYS: u32 = 3650;

/// Default validity of a leaf (server or client) certificate: 365 days, Mozilla's and the CA/B
/// Forum's ceiling for public leaves.
pub const LEAF_DAYS: u32 = 365;
