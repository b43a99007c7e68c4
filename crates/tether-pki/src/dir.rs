//! A PKI directory on disk.

use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use crate::{Ca, Error, Issued};

/// A directory that holds a CA and the certificates it issued, in a fixed layout:
///
/// | what | certificate | private key |
/// |---|---|---|
/// | the CA | `DIR/ca.pem` | `DIR/ca.key` |
/// | a server (default name) | `DIR/server.pem` | `DIR/server.key` |
/// | a server named `N` | `DIR/N.pem` | `DIR/N.key` |
/// | a device `ID` | `DIR/ID.pem` | `DIR/ID.key` |
///
/// Certificates are PEM; keys are unencrypted PKCS#8 PEM created with mode 0600 (on Unix; the
/// mode is given at creation, so the key is never readable by others, not even briefly).
///
/// Nothing is overwritten unless `force` is set: without it, writing fails with
/// [`Error::Exists`] naming the file, before anything is written, and files are created with
/// `O_CREAT|O_EXCL` so a file that appears meanwhile is not clobbered either. With `force`, an
/// existing file is removed and created anew (so a key gets mode 0600 even if the old file had
/// another mode).
///
/// ```no_run
/// # fn main() -> Result<(), tether_pki::Error> {
/// let dir = tether_pki::Dir::new("pki");
/// let ca = dir.load_ca()?;
/// let issued = ca.issue_client("device-1", &Default::default())?;
/// let paths = dir.client_paths("device-1")?;
/// dir.write_issued(&paths, &issued, false)?;
/// println!("wrote {} and {}", paths.cert.display(), paths.key.display());
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dir {
    root: PathBuf,
}

/// Where one certificate and its key live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    /// The certificate, PEM.
    pub cert: PathBuf,
    /// The private key, PKCS#8 PEM, mode 0600.
    pub key: PathBuf,
}

impl Dir {
    /// A PKI directory at `root`. Nothing is touched until something is written or loaded; the
    /// directory is created (with parents) on the first write.
    pub fn new(root: impl Into<PathBuf>) -> Dir {
        Dir { root: root.into() }
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `DIR/ca.pem` and `DIR/ca.key`.
    pub fn ca_paths(&self) -> Paths {
        self.pair("ca")
    }

    /// `DIR/server.pem` + `DIR/server.key`, or `DIR/N.pem` + `DIR/N.key` for `Some(N)`.
    ///
    /// `N` follows the device id rules (1 to 64 of `A-Z a-z 0-9 . _ -`) and must not be `ca`.
    pub fn server_paths(&self, name: Option<&str>) -> Result<Paths, Error> {
        let name = name.unwrap_or("server");
        crate::validate_device_id(name).map_err(|e| match e {
            Error::InvalidDeviceId { id, reason } => Error::InvalidName { name: id, reason },
            other => other,
        })?;
        reserved(name, "ca")?;
        Ok(self.pair(name))
    }

    /// `DIR/ID.pem` + `DIR/ID.key` for device `ID`, which must be a valid device id other than
    /// `ca` and `server` (those names belong to the CA and the default server certificate).
    pub fn client_paths(&self, device_id: &str) -> Result<Paths, Error> {
        crate::validate_device_id(device_id)?;
        reserved(device_id, "ca")?;
        reserved(device_id, "server")?;
        Ok(self.pair(device_id))
    }

    /// Loads the CA from `DIR/ca.pem` and `DIR/ca.key`.
    ///
    /// Fails with [`Error::NoCa`] ("run `tether pki init` first") when there is no `ca.pem`.
    pub fn load_ca(&self) -> Result<Ca, Error> {
        let paths = self.ca_paths();
        let cert = match fs::read_to_string(&paths.cert) {
            Ok(cert) => cert,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::NoCa {
                    dir: self.root.clone(),
                });
            }
            Err(e) => return Err(Error::io("read", &paths.cert, e)),
        };
        let key = fs::read_to_string(&paths.key).map_err(|e| Error::io("read", &paths.key, e))?;
        Ca::load(&cert, &key)
    }

    /// Writes the CA to `DIR/ca.pem` and `DIR/ca.key`, creating `DIR` if needed.
    pub fn write_ca(&self, ca: &Ca, force: bool) -> Result<Paths, Error> {
        let paths = self.ca_paths();
        self.write_pair(&paths, ca.cert_pem(), ca.key_pem(), force)?;
        Ok(paths)
    }

    /// Writes an issued certificate and key to `paths` (from [`Dir::server_paths`] or
    /// [`Dir::client_paths`]), creating `DIR` if needed.
    pub fn write_issued(&self, paths: &Paths, issued: &Issued, force: bool) -> Result<(), Error> {
        self.write_pair(paths, &issued.cert_pem, &issued.key_pem, force)
    }

    fn pair(&self, base: &str) -> Paths {
        Paths {
            cert: self.root.join(format!("{base}.pem")),
            key: self.root.join(format!("{base}.key")),
        }
    }

    fn write_pair(
        &self,
        paths: &Paths,
        cert_pem: &str,
        key_pem: &str,
        force: bool,
    ) -> Result<(), Error> {
        fs::create_dir_all(&self.root).map_err(|e| Error::io("create directory", &self.root, e))?;
        if !force {
            // Check both before writing either, so a refusal leaves no half-written pair.
            for path in [&paths.key, &paths.cert] {
                if fs::symlink_metadata(path).is_ok() {
                    return Err(Error::Exists { path: path.clone() });
                }
            }
        }
        // Key first: a certificate without its key is useless, a key without a certificate harmless.
        write_new(&paths.key, key_pem.as_bytes(), 0o600, force)?;
        write_new(&paths.cert, cert_pem.as_bytes(), 0o644, force)
    }
}

fn reserved(name: &str, taken: &'static str) -> Result<(), Error> {
    if name == taken {
        return Err(Error::InvalidName {
            name: name.to_owned(),
            reason: match taken {
                "ca" => "`ca` names the CA's files in a PKI directory; choose another name",
                _ => "`server` names the default server certificate's files; choose another name",
            },
        });
    }
    Ok(())
}

/// Creates `path` with `mode` (Unix) and writes `bytes`. Never follows or reuses an existing file:
/// with `force`, it is unlinked first.
fn write_new(path: &Path, bytes: &[u8], mode: u32, force: bool) -> Result<(), Error> {
    if force {
        match fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("replace", path, e)),
        }
    }
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(path).map_err(|e| {
        if e.kind() == io::ErrorKind::AlreadyExists {
            Error::Exists {
                path: path.to_owned(),
            }
        } else {
            Error::io("create", path, e)
        }
    })?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::io("write", path, e))
}
