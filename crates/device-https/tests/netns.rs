//! The device example end to end, in network namespaces the test makes and removes.
//!
//! Topology, one namespace per test (unique name, deleted on drop even when a test panics):
//!
//! ```text
//!   device-https (smoltcp) --- tap0 --- kernel side 10.77.0.1/24
//!                                         |- dnsmasq: DHCP 10.77.0.50-99, DNS (api.device.test)
//!                                         '- nginx: HTTPS on 10.77.0.1:PORT, /v1/models (JSON)
//! ```
//!
//! The device process opens tap0 inside the namespace (`ip netns exec`), so its frames reach
//! the kernel side of the TAP device, where dnsmasq and nginx listen. The server certificate is
//! issued by `tether_pki` (what `tether pki` runs) for `api.device.test`. Each process is a
//! `Peer`, killed by PID on drop; declared after the namespace, so it goes first.

use std::path::PathBuf;
use std::time::Duration;

use tempfile::TempDir;
use testpeers::Peer;
use testpeers::netns::{Dnsmasq, DnsmasqPeer, Netns, skip_or_fail_netns};
use testpeers::nginx::{Nginx, Site};
use tether_pki::{Ca, IssueOptions, KeyKind};

const HOST: &str = "api.device.test";
const SERVER_IP: &str = "10.77.0.1";
const BODY: &[u8] = br#"{"object":"list","data":[{"id":"tether-device-1","object":"model"}]}"#;
/// Bound of one device run (the device's own deadlines are shorter).
const RUN_LIMIT: Duration = Duration::from_secs(60);

/// A CA, a server certificate for api.device.test, and an unrelated CA, as PEM files.
struct Pki {
    /// Holds the files.
    _dir: TempDir,
    ca: PathBuf,
    other_ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    pin: String,
}

fn pki() -> Pki {
    let dir = tempfile::Builder::new()
        .prefix("device-https-pki-")
        .tempdir()
        .unwrap();
    let ca = Ca::init(KeyKind::EcdsaP256, "device-https test CA").unwrap();
    let other = Ca::init(KeyKind::EcdsaP256, "some other CA").unwrap();
    let server = ca
        .issue_server(&[HOST.to_owned()], &IssueOptions::default())
        .unwrap();
    let path = |n: &str| dir.path().join(n);
    std::fs::write(path("ca.pem"), ca.cert_pem()).unwrap();
    std::fs::write(path("other-ca.pem"), other.cert_pem()).unwrap();
    std::fs::write(path("server.pem"), &server.cert_pem).unwrap();
    std::fs::write(path("server.key"), &server.key_pem).unwrap();
    Pki {
        ca: path("ca.pem"),
        other_ca: path("other-ca.pem"),
        cert: path("server.pem"),
        key: path("server.key"),
        pin: tether_pki::spki_pin(&server.cert_der).unwrap(),
        _dir: dir,
    }
}

/// What runs on the server side of the link.
struct Lab {
    // Dropped in this order: processes first, then the namespace, then the files.
    nginx: Option<Nginx>,
    _dnsmasq: Option<DnsmasqPeer>,
    ns: Netns,
    port: u16,
    pki: Pki,
}

#[derive(Default)]
struct LabOpts {
    /// No dnsmasq at all.
    no_dhcp: bool,
    /// dnsmasq without the record for api.device.test (NXDOMAIN for it).
    no_record: bool,
    /// dnsmasq without DNS (queries unanswered).
    no_dns: bool,
    /// nginx with these ssl_protocols instead of TLSv1.3.
    protocols: Option<&'static str>,
}

fn lab(opts: LabOpts) -> Lab {
    let pki = pki();
    let ns = Netns::new("dh").unwrap();
    ns.tap("tap0", &format!("{SERVER_IP}/24")).unwrap();
    let dnsmasq = (!opts.no_dhcp).then(|| {
        let mut d = Dnsmasq::new("tap0", "10.77.0.50", "10.77.0.99").local("device.test");
        if !opts.no_record {
            d = d.address(HOST, SERVER_IP);
        }
        if opts.no_dns {
            d = d.without_dns(SERVER_IP);
        }
        d.spawn(&ns).unwrap()
    });
    let port = testpeers::free_port();
    let site = Site::new(SERVER_IP, port, &pki.cert, &pki.key)
        .server_name(HOST)
        .protocols(opts.protocols.unwrap_or("TLSv1.3"))
        .file("/v1/models", "application/json", BODY);
    let nginx = Some(Nginx::start(&site, Some(&ns)).unwrap());
    Lab {
        nginx,
        _dnsmasq: dnsmasq,
        ns,
        port,
        pki,
    }
}

/// One run of the device binary in the lab's namespace.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Lab {
    fn run(&self, args: &[&str]) -> Run {
        self.run_on(self.port, args)
    }

    fn run_on(&self, port: u16, args: &[&str]) -> Run {
        let port = port.to_string();
        let mut all = vec!["--tap", "tap0", "--host", HOST, "--port", &port];
        all.extend_from_slice(args);
        let mut peer: Peer = self
            .ns
            .spawn("device-https", env!("CARGO_BIN_EXE_device-https"), &all)
            .unwrap();
        let status = peer.wait_exit(RUN_LIMIT).unwrap();
        let run = Run {
            code: status.code(),
            stdout: peer.stdout_so_far(),
            stderr: peer.stderr_so_far(),
        };
        eprintln!(
            "device-https {all:?}: exit {:?}\n--- stdout\n{}--- stderr\n{}",
            run.code, run.stdout, run.stderr
        );
        run
    }

    fn ca(&self) -> &str {
        self.pki.ca.to_str().unwrap()
    }

    fn requests(&self) -> usize {
        self.nginx
            .as_ref()
            .map_or(0, |n| n.access_log().lines().count())
    }
}

fn prerequisites() -> bool {
    skip_or_fail_netns(&["ip", "dnsmasq", "nginx"])
}

/// The body and the status line on stdout, exit 0, and nginx logged one GET /v1/models.
fn assert_served(lab: &Lab, run: &Run) {
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(run.stdout.starts_with("HTTP 200 OK\n"), "{}", run.stdout);
    assert!(
        run.stdout.contains(std::str::from_utf8(BODY).unwrap()),
        "{}",
        run.stdout
    );
    assert!(run.stderr.contains("TLSv1.3"), "{}", run.stderr);
    assert!(
        run.stderr.contains("closed with close_notify"),
        "{}",
        run.stderr
    );
    let log = lab.nginx.as_ref().unwrap().access_log();
    assert!(log.contains("\"GET /v1/models HTTP/1.1\" 200"), "{log}");
}

#[test]
fn dhcp_dns_and_https_verified_by_the_ca() {
    if !prerequisites() {
        return;
    }
    let lab = lab(LabOpts::default());
    let run = lab.run(&["--ca", lab.ca()]);
    assert_served(&lab, &run);
    assert!(
        run.stderr.contains("dhcp: address 10.77.0."),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("by DNS"), "{}", run.stderr);
}

#[test]
fn https_verified_by_a_pin_alone() {
    if !prerequisites() {
        return;
    }
    let lab = lab(LabOpts::default());
    let run = lab.run(&["--pin", &lab.pki.pin]);
    assert_served(&lab, &run);

    // A pin of another key: certificate rejected, nothing sent.
    let wrong = "sha256/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    let run = lab.run(&["--pin", wrong]);
    assert_eq!(run.code, Some(15), "{}", run.stderr);
    assert!(
        run.stderr.contains("certificate rejected: pin mismatch"),
        "{}",
        run.stderr
    );
    assert_eq!(lab.requests(), 1, "only the first run's request");
}

#[test]
fn dns_without_the_record_falls_back_to_the_configured_address() {
    if !prerequisites() {
        return;
    }
    let lab = lab(LabOpts {
        no_record: true,
        ..LabOpts::default()
    });
    let run = lab.run(&["--ca", lab.ca(), "--fallback", SERVER_IP]);
    assert_served(&lab, &run);
    assert!(
        run.stderr
            .contains("DNS failure: cannot resolve api.device.test"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("by fallback"), "{}", run.stderr);

    // Without a fallback, the DNS failure is the error.
    let run = lab.run(&["--ca", lab.ca()]);
    assert_eq!(run.code, Some(12), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("error: DNS failure: cannot resolve api.device.test"),
        "{}",
        run.stderr
    );
}

#[test]
fn certificate_from_another_ca_is_rejected_and_nothing_is_sent() {
    if !prerequisites() {
        return;
    }
    let lab = lab(LabOpts::default());
    let run = lab.run(&["--ca", lab.pki.other_ca.to_str().unwrap()]);
    assert_eq!(run.code, Some(15), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("error: certificate rejected: peer certificate rejected: unknown issuer"),
        "{}",
        run.stderr
    );
    assert!(!run.stdout.contains("HTTP"), "{}", run.stdout);
    assert_eq!(lab.requests(), 0, "no HTTP request reached nginx");
    // The device told nginx why, with a fatal alert, before closing.
    let log = lab.nginx.as_ref().unwrap().error_log();
    assert!(log.contains("alert unknown ca"), "{log}");
}

#[test]
fn no_dhcp_server_is_a_dhcp_timeout() {
    if !prerequisites() {
        return;
    }
    let lab = lab(LabOpts {
        no_dhcp: true,
        ..LabOpts::default()
    });
    let run = lab.run(&["--ca", lab.ca(), "--dhcp-timeout", "1500"]);
    assert_eq!(run.code, Some(10), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("error: DHCP timeout: no DHCP lease within 1500 ms"),
        "{}",
        run.stderr
    );
}

#[test]
fn unanswered_dns_is_a_dns_timeout_without_fallback() {
    if !prerequisites() {
        return;
    }
    let lab = lab(LabOpts {
        no_dns: true,
        ..LabOpts::default()
    });
    let run = lab.run(&["--ca", lab.ca(), "--dns-timeout", "1000"]);
    assert_eq!(run.code, Some(11), "{}", run.stderr);
    assert!(
        run.stderr.contains(
            "error: DNS timeout: no answer for api.device.test from DNS server 10.77.0.1 within 1000 ms"
        ),
        "{}",
        run.stderr
    );
    assert_eq!(lab.requests(), 0);
}

#[test]
fn closed_port_is_a_tcp_connect_failure() {
    if !prerequisites() {
        return;
    }
    let lab = lab(LabOpts::default());
    // Nothing listens on the port after nginx's: the kernel answers with a reset.
    let closed = lab.port.wrapping_add(1).max(1024);
    let run = lab.run_on(closed, &["--ca", lab.ca()]);
    assert_eq!(run.code, Some(13), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("error: TCP connect failure: TCP connect to 10.77.0.1:"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("refused"), "{}", run.stderr);
}

#[test]
fn tls12_only_server_is_a_handshake_failure_with_the_reason() {
    if !prerequisites() {
        return;
    }
    let lab = lab(LabOpts {
        protocols: Some("TLSv1.2"),
        ..LabOpts::default()
    });
    let run = lab.run(&["--ca", lab.ca()]);
    assert_eq!(run.code, Some(14), "{}", run.stderr);
    assert!(
        run.stderr.contains("error: TLS handshake failure: "),
        "{}",
        run.stderr
    );
    // The reason: no common version (nginx answers protocol_version).
    assert!(
        run.stderr.contains("no common TLS version"),
        "{}",
        run.stderr
    );
    assert_eq!(lab.requests(), 0);
}

#[test]
fn bad_input_has_its_own_exit_code_and_message() {
    // No namespace needed: the binary refuses before opening anything.
    let bin = env!("CARGO_BIN_EXE_device-https");
    let out = std::process::Command::new(bin)
        .args(["--pin", "sha256/not-base64"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad pin"), "{err}");
    let out = std::process::Command::new(bin)
        .args(["--ca", "/nonexistent/ca.pem"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read the CA file"));
    // Neither --ca nor --pin: usage error.
    let out = std::process::Command::new(bin).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--ca"));
}
