//! nginx as an HTTPS origin for tests: one `server` with a certificate, static files, TLS
//! versions of the test's choice; in the test's namespace or in a [`Netns`].
//!
//! nginx runs in the foreground as a single process (`daemon off; master_process off;`), so
//! the [`Peer`] guard kills all of it by PID. Its configuration, files, pid file, logs and temp
//! paths live in a temporary directory removed on drop; nothing under /etc or /var is used.
//!
//! ```no_run
//! use testpeers::nginx::{Nginx, Site};
//! # fn main() -> Result<(), testpeers::PeerError> {
//! # let (cert, key) = (std::path::PathBuf::new(), std::path::PathBuf::new());
//! let port = testpeers::free_port();
//! let site = Site::new("127.0.0.1", port, &cert, &key)
//!     .file("/v1/models", "application/json", br#"{"data":[]}"#);
//! let nginx = Nginx::start(&site, None)?; // waits until it listens
//! println!("{}", nginx.access_log());
//! # Ok(()) }
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use tempfile::TempDir;

use crate::netns::{Netns, wait_bound};
use crate::{Peer, PeerError, Transport};

/// What the HTTPS server serves.
#[derive(Debug, Clone)]
pub struct Site {
    address: String,
    port: u16,
    cert: PathBuf,
    key: PathBuf,
    protocols: String,
    server_name: String,
    files: Vec<(String, String, Vec<u8>)>,
}

impl Site {
    /// HTTPS on `address:port` with this certificate chain and key (PEM files), TLS 1.2 and
    /// 1.3.
    pub fn new(address: &str, port: u16, cert: &Path, key: &Path) -> Site {
        Site {
            address: address.to_owned(),
            port,
            cert: cert.to_owned(),
            key: key.to_owned(),
            protocols: "TLSv1.2 TLSv1.3".to_owned(),
            server_name: "_".to_owned(),
            files: Vec::new(),
        }
    }

    /// The TLS versions, in nginx' words (`ssl_protocols`), e.g. `"TLSv1.3"`.
    pub fn protocols(mut self, protocols: &str) -> Site {
        self.protocols = protocols.to_owned();
        self
    }

    /// The `server_name`.
    pub fn server_name(mut self, name: &str) -> Site {
        self.server_name = name.to_owned();
        self
    }

    /// Serves `body` at `path` (a static file, so with Content-Length) as `content_type`.
    pub fn file(mut self, path: &str, content_type: &str, body: &[u8]) -> Site {
        self.files
            .push((path.to_owned(), content_type.to_owned(), body.to_vec()));
        self
    }
}

/// A running nginx; killed on drop, its directory removed.
#[derive(Debug)]
pub struct Nginx {
    /// The process.
    pub peer: Peer,
    dir: TempDir,
}

fn io(what: &str, e: std::io::Error) -> PeerError {
    PeerError::new(format!("nginx setup: {what}: {e}"))
}

impl Nginx {
    /// Writes the configuration and files, starts nginx (inside `ns` when given) and waits
    /// until it listens.
    pub fn start(site: &Site, ns: Option<&Netns>) -> Result<Nginx, PeerError> {
        let dir = tempfile::Builder::new()
            .prefix("testpeers-nginx-")
            .tempdir()
            .map_err(|e| io("temporary directory", e))?;
        let d = dir.path();
        let root = d.join("root");
        std::fs::create_dir_all(d.join("tmp")).map_err(|e| io("tmp", e))?;
        let mut locations = String::new();
        for (path, content_type, body) in &site.files {
            let rel = path.trim_start_matches('/');
            if rel.is_empty() || rel.split('/').any(|c| c == ".." || c.is_empty()) {
                return Err(PeerError::new(format!(
                    "nginx setup: bad path {path:?}: give /a/b"
                )));
            }
            let file = root.join(rel);
            if let Some(parent) = file.parent() {
                std::fs::create_dir_all(parent).map_err(|e| io("root", e))?;
            }
            std::fs::write(&file, body).map_err(|e| io("file", e))?;
            locations.push_str(&format!(
                "    location = {path} {{ default_type {content_type}; }}\n"
            ));
        }
        let p = |name: &str| d.join(name).display().to_string();
        let conf = format!(
            "daemon off;\n\
             master_process off;\n\
             pid {pid};\n\
             error_log {err} info;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n\
             \x20 access_log {access};\n\
             \x20 client_body_temp_path {tmp}; proxy_temp_path {tmp}; fastcgi_temp_path {tmp};\n\
             \x20 uwsgi_temp_path {tmp}; scgi_temp_path {tmp};\n\
             \x20 server {{\n\
             \x20   listen {addr}:{port} ssl;\n\
             \x20   server_name {name};\n\
             \x20   ssl_certificate {cert};\n\
             \x20   ssl_certificate_key {key};\n\
             \x20   ssl_protocols {protocols};\n\
             \x20   root {root};\n\
             {locations}\
             \x20 }}\n\
             }}\n",
            pid = p("nginx.pid"),
            err = p("error.log"),
            access = p("access.log"),
            tmp = p("tmp"),
            addr = site.address,
            port = site.port,
            name = site.server_name,
            cert = site.cert.display(),
            key = site.key.display(),
            protocols = site.protocols,
            root = root.display(),
        );
        let conf_path = d.join("nginx.conf");
        std::fs::write(&conf_path, conf).map_err(|e| io("nginx.conf", e))?;
        let args = [
            "-p".to_owned(),
            d.display().to_string(),
            "-c".to_owned(),
            conf_path.display().to_string(),
            "-e".to_owned(),
            p("error.log"),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let peer = match ns {
            Some(ns) => ns.spawn("nginx", "nginx", &args)?,
            None => {
                let mut c = std::process::Command::new("nginx");
                c.args(&args);
                Peer::spawn("nginx", c)?
            }
        };
        let nginx = Nginx { peer, dir };
        if let Err(e) = wait_bound(
            &nginx.peer,
            Transport::Tcp,
            site.port,
            crate::START_TIMEOUT.max(Duration::from_secs(1)),
        ) {
            return Err(PeerError::new(format!(
                "{e}\nnginx error.log:\n{}",
                nginx.error_log()
            )));
        }
        Ok(nginx)
    }

    /// The access log so far (one line per request).
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }

    /// The error log so far (TLS handshake failures are logged here at `info`).
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}
