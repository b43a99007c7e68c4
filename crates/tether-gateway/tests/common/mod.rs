//! What the gateway's test files share: a PKI made at test time, a gateway running on a tokio
//! runtime in a thread (the `Running` guard drains it and joins the thread, also when the test
//! fails), the HTTP API and its Prometheus text, and the frame helpers.
//!
//! Each test file adds its own client configurations and `connect` (TLS or DTLS).

// Each test file uses part of this.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use tether::{Identity, Trust};
use tether_gateway::{AllowList, ClientAuthPolicy, Gateway, GatewayConfig, Metrics};
use tether_pki::{Ca, IssueOptions, Issued, KeyKind};
use tether_wire::{Frame, FrameType};

pub struct Pki {
    pub ca: Ca,
    pub server: Issued,
    pub device: Issued,
}

/// A P-256 CA named `ca_name`, a server certificate for localhost and 127.0.0.1, and device
/// `device-1`.
pub fn pki(ca_name: &str) -> Pki {
    let ca = Ca::init(KeyKind::EcdsaP256, ca_name).unwrap();
    let opts = IssueOptions::default();
    let server = ca
        .issue_server(&["localhost".into(), "127.0.0.1".into()], &opts)
        .unwrap();
    let device = ca.issue_client("device-1", &opts).unwrap();
    Pki { ca, server, device }
}

impl Pki {
    pub fn trust(&self) -> Trust {
        Trust::from_pem(self.ca.cert_pem().as_bytes()).unwrap()
    }

    /// mTLS with this CA, both listeners and the HTTP API on ports the kernel picks.
    pub fn config(&self) -> GatewayConfig {
        let identity = Identity::from_pem(
            self.server.cert_pem.as_bytes(),
            self.server.key_pem.as_bytes(),
        )
        .unwrap();
        let mut c = GatewayConfig::new(
            identity,
            ClientAuthPolicy::Required {
                trust: self.trust(),
                allow: None,
            },
        );
        c.listen = "127.0.0.1:0".parse().unwrap();
        c.http = Some("127.0.0.1:0".parse().unwrap());
        c.drain_timeout = Duration::from_secs(5);
        c
    }

    /// A fresh server certificate from this CA (a renewal: same names, new key), valid for
    /// `days`.
    pub fn renewed_server(&self, days: u32) -> Issued {
        let opts = IssueOptions {
            days: Some(days),
            ..IssueOptions::default()
        };
        self.ca
            .issue_server(&["localhost".into(), "127.0.0.1".into()], &opts)
            .unwrap()
    }

    /// `config` with its identity also written to `server.pem` and `server.key` in `dir` and
    /// read again from there every 100 ms; returns the two paths.
    pub fn with_identity_files(
        &self,
        mut config: GatewayConfig,
        dir: &Path,
    ) -> (GatewayConfig, std::path::PathBuf, std::path::PathBuf) {
        let (cert, key) = (dir.join("server.pem"), dir.join("server.key"));
        std::fs::write(&cert, &self.server.cert_pem).unwrap();
        std::fs::write(&key, &self.server.key_pem).unwrap();
        config.identity_files = Some((cert.clone(), key.clone()));
        config.identity_reload_every = Duration::from_millis(100);
        (config, cert, key)
    }

    /// `config` with the allow-list of `file` (read now), read again every 100 ms.
    pub fn with_allow_file(&self, mut config: GatewayConfig, file: &Path) -> GatewayConfig {
        config.client_auth = ClientAuthPolicy::Required {
            trust: self.trust(),
            allow: Some(AllowList::load(file).unwrap()),
        };
        config.allow_file = Some(file.to_owned());
        config.allow_reload_every = Duration::from_millis(100);
        config
    }
}

/// A gateway running in a thread of its own.
pub struct Running {
    pub tls: SocketAddr,
    pub dtls: SocketAddr,
    pub http: SocketAddr,
    pub metrics: Arc<Metrics>,
    stop: tether_gateway::ShutdownHandle,
    thread: Option<thread::JoinHandle<()>>,
}

impl Running {
    /// Binds (panics with the gateway's message if it cannot) and runs `config`.
    pub fn start(config: GatewayConfig) -> Running {
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let gw = match Gateway::bind(config).await {
                    Ok(gw) => gw,
                    Err(e) => {
                        tx.send(Err(e.to_string())).unwrap();
                        return;
                    }
                };
                tx.send(Ok((
                    gw.local_addr(),
                    gw.dtls_addr().expect("a DTLS listener"),
                    gw.http_addr().expect("an HTTP API"),
                    gw.metrics(),
                    gw.shutdown_handle(),
                )))
                .unwrap();
                gw.run().await.unwrap();
            });
        });
        let (tls, dtls, http, metrics, stop) = rx.recv().unwrap().unwrap();
        Running {
            tls,
            dtls,
            http,
            metrics,
            stop,
            thread: Some(thread),
        }
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        http_get(self.http, path)
    }

    /// `GET /metrics`, parsed.
    pub fn prometheus(&self) -> HashMap<String, f64> {
        let (status, text) = self.get("/metrics");
        assert_eq!(status, 200);
        parse_prometheus(&text)
    }

    /// Starts a drain without waiting for it.
    pub fn shutdown(&self) {
        self.stop.shutdown();
    }

    /// Drains and waits for `run` to return.
    pub fn stop(&mut self) {
        self.stop.shutdown();
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.shutdown();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, body.to_owned())
}

/// Sample lines of the Prometheus text format into `name{labels}` → value; checks that every
/// sample's metric has HELP and TYPE lines, a `tether_` name, and appears once.
pub fn parse_prometheus(text: &str) -> HashMap<String, f64> {
    let mut typed = HashSet::new();
    let mut out = HashMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            typed.insert(rest.split_whitespace().next().unwrap().to_owned());
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap();
        let name = series.split('{').next().unwrap();
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|b| typed.contains(*b)))
            .unwrap_or(name);
        assert!(typed.contains(base), "no TYPE line for {name}");
        assert!(name.starts_with("tether_"), "{name}");
        assert!(
            out.insert(series.to_owned(), value.parse().unwrap())
                .is_none(),
            "duplicate series {series}"
        );
    }
    out
}

/// The frames back to back, as they go on the wire.
pub fn encode(list: &[Frame]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in list {
        f.encode_into(&mut out);
    }
    out
}

/// ECHO, REVERSE and TIME with `tag`.
pub fn request_frames(tag: &[u8]) -> Vec<Frame> {
    vec![
        Frame::new(FrameType::Echo, tag.to_vec()),
        Frame::new(FrameType::Reverse, tag.to_vec()),
        Frame::new(FrameType::Time, Vec::new()),
    ]
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// The replies to [`request_frames`]`(tag)` sent after `before` (ms since the epoch).
pub fn check_replies(tag: &[u8], replies: &[Frame], before: u64) {
    assert_eq!(replies[0], Frame::new(FrameType::Echo, tag.to_vec()));
    let mut rev = tag.to_vec();
    rev.reverse();
    assert_eq!(replies[1], Frame::new(FrameType::Reverse, rev));
    assert_eq!(replies[2].kind, FrameType::Time);
    let t = replies[2].parse_time().unwrap();
    assert!(
        t >= before && t <= now_ms() + 1,
        "time {t} not in [{before}, now]"
    );
}

/// Waits until `f` holds (polling), or panics with `what`.
pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(20));
    }
}
