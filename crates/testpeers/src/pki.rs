//! Throw-away certificates made with the `openssl` command, independent of tether's own PKI code,
//! so that a peer test does not trust the code it tests to make its certificates.

use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

use crate::PeerError;

/// OpenSSL configuration for the certificates: nothing is taken from the system's openssl.cnf.
const CONFIG: &str = "\
[req]
distinguished_name = dn
prompt = no

[dn]
CN = unused

[ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash

[server]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost,IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid

[client]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
";

/// A CA and a server and a client certificate it signed, all ECDSA P-256 PEM files in a
/// temporary directory that is removed on drop, valid for two days.
///
/// The server certificate is for `localhost` and `127.0.0.1` (subject alternative names); the
/// client certificate's common name is `tether test client`. Two `TestPki`s are unrelated, which
/// gives an untrusted CA for negative tests.
#[derive(Debug)]
pub struct TestPki {
    /// The directory holding the files.
    pub dir: TempDir,
    /// CA certificate (self-signed, `CN=tether test CA`).
    pub ca_cert: PathBuf,
    /// CA private key (PKCS#8).
    pub ca_key: PathBuf,
    /// Server certificate (`CN=localhost`, SAN `DNS:localhost`, `IP:127.0.0.1`).
    pub server_cert: PathBuf,
    /// Server private key (PKCS#8).
    pub server_key: PathBuf,
    /// Client certificate (`CN=tether test client`, extended key usage clientAuth).
    pub client_cert: PathBuf,
    /// Client private key (PKCS#8).
    pub client_key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) -> Result<(), PeerError> {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .map_err(|e| {
            PeerError::new(format!(
                "could not run openssl {}: {e}: {}",
                args.join(" "),
                crate::require_tool("openssl").err().unwrap_or_default()
            ))
        })?;
    if output.status.success() {
        Ok(())
    } else {
        Err(PeerError::new(format!(
            "openssl {} failed ({}):\n{}{}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )))
    }
}

const NEW_P256_KEY: [&str; 6] = [
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:P-256",
    "-nodes",
    "-sha256",
];

impl TestPki {
    /// Makes the CA (`openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 ...`) and
    /// the two leaf certificates (`openssl req -new` + `openssl x509 -req -CA ...`).
    pub fn new() -> Result<TestPki, PeerError> {
        let dir = tempfile::Builder::new()
            .prefix("testpeers-pki-")
            .tempdir()
            .map_err(|e| PeerError::new(format!("could not make a temporary directory: {e}")))?;
        let d = dir.path();
        std::fs::write(d.join("openssl.cnf"), CONFIG)
            .map_err(|e| PeerError::new(format!("could not write openssl.cnf: {e}")))?;

        let mut ca = vec![
            "req",
            "-x509",
            "-config",
            "openssl.cnf",
            "-extensions",
            "ca",
        ];
        ca.extend(NEW_P256_KEY);
        ca.extend([
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=tether test CA",
        ]);
        openssl(d, &ca)?;

        for (name, cn, serial) in [
            ("server", "/CN=localhost", "1001"),
            ("client", "/CN=tether test client", "1002"),
        ] {
            let (key, csr, pem) = (
                format!("{name}.key"),
                format!("{name}.csr"),
                format!("{name}.pem"),
            );
            let mut req = vec!["req", "-new", "-config", "openssl.cnf"];
            req.extend(NEW_P256_KEY);
            req.extend(["-keyout", &key, "-out", &csr, "-subj", cn]);
            openssl(d, &req)?;
            openssl(
                d,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &csr,
                    "-CA",
                    "ca.pem",
                    "-CAkey",
                    "ca.key",
                    "-set_serial",
                    serial,
                    "-days",
                    "2",
                    "-sha256",
                    "-extfile",
                    "openssl.cnf",
                    "-extensions",
                    name,
                    "-out",
                    &pem,
                ],
            )?;
        }

        Ok(TestPki {
            ca_cert: d.join("ca.pem"),
            ca_key: d.join("ca.key"),
            server_cert: d.join("server.pem"),
            server_key: d.join("server.key"),
            client_cert: d.join("client.pem"),
            client_key: d.join("client.key"),
            dir,
        })
    }
}
