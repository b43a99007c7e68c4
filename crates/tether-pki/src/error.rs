//! The one error type of this crate.

use std::io;
use std::path::PathBuf;

/// What went wrong, and what to do about it.
///
/// Every message names the input or file at fault and, where there is one, the fix (the
/// `tether pki` flag or command to use).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A subject alternative name is neither an IP address nor a usable DNS name.
    #[error(
        "invalid subject alternative name {san:?}: {reason}; give a DNS name (e.g. gateway.local) or an IP address (e.g. 192.0.2.7)"
    )]
    InvalidSan {
        /// The rejected input.
        san: String,
        /// Why it was rejected.
        reason: &'static str,
    },

    /// A server certificate was requested without any SAN.
    #[error("a server certificate needs at least one name: pass --san NAME_OR_IP")]
    NoSan,

    /// A device id is not 1 to 64 characters of `A-Z a-z 0-9 . _ -`.
    #[error("invalid device id {id:?}: {reason}")]
    InvalidDeviceId {
        /// The rejected input.
        id: String,
        /// Why it was rejected.
        reason: &'static str,
    },

    /// A file name for a certificate in a [`crate::Dir`] is unusable.
    #[error("invalid certificate name {name:?}: {reason}")]
    InvalidName {
        /// The rejected input.
        name: String,
        /// Why it was rejected.
        reason: &'static str,
    },

    /// The requested validity period is empty or cannot be represented.
    #[error("invalid validity: {0}")]
    InvalidValidity(String),

    /// The directory holds no CA certificate.
    #[error("no CA in {dir}: run `tether pki init --dir {dir}` first", dir = .dir.display())]
    NoCa {
        /// The directory searched.
        dir: PathBuf,
    },

    /// A file would be overwritten.
    #[error("{} already exists: pass --force to overwrite it", .path.display())]
    Exists {
        /// The existing file.
        path: PathBuf,
    },

    /// Reading or writing a file failed.
    #[error("cannot {action} {}: {source}", .path.display())]
    Io {
        /// What was being done: "read", "write", "create directory", ...
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },

    /// Input that should hold a PEM certificate does not.
    #[error("no certificate found: expected a PEM block starting with -----BEGIN CERTIFICATE-----")]
    NoCertificate,

    /// A certificate could not be parsed.
    #[error("cannot parse certificate: {0}")]
    BadCertificate(String),

    /// A private key could not be parsed.
    #[error(
        "cannot parse private key: {0}; expected an unencrypted PKCS#8 PEM key (-----BEGIN PRIVATE KEY-----)"
    )]
    BadKey(String),

    /// The certificate given as a CA is not one.
    #[error(
        "{0}: this certificate is not a CA (basicConstraints CA:FALSE); give the CA's certificate"
    )]
    NotCa(String),

    /// The CA private key does not belong to the CA certificate.
    #[error(
        "the CA private key does not match the CA certificate's public key; give the key made with it"
    )]
    KeyMismatch,

    /// Key generation or certificate signing failed.
    #[error("cannot {action}: {reason}")]
    Crypto {
        /// What was being done.
        action: &'static str,
        /// The underlying library's message.
        reason: String,
    },
}

impl Error {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn crypto(action: &'static str, reason: impl core::fmt::Display) -> Self {
        Error::Crypto {
            action,
            reason: reason.to_string(),
        }
    }
}
