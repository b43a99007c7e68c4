//! Network namespaces for tests, and dnsmasq (DHCP + DNS) inside them.
//!
//! [`Netns`] makes a namespace with a unique name (`ip netns add`), brings its loopback up,
//! and deletes it on drop (after killing, by PID, any process still inside), also when the test
//! panics. Processes run inside with [`Netns::spawn`] (`ip netns exec NAME ...`, which execs, so
//! the [`Peer`]'s PID is the program's). [`Netns::tap`] adds a TAP device with an address:
//! the device side of the link is whatever process opens the TAP device (e.g. a smoltcp
//! stack), the kernel side holds the address where servers in the namespace listen.
//!
//! ```no_run
//! use testpeers::netns::{Dnsmasq, Netns};
//! # fn main() -> Result<(), testpeers::PeerError> {
//! testpeers::netns::require_netns()?; // root, `ip`, /dev/net/tun
//! let ns = Netns::new("dev")?;
//! ns.tap("tap0", "10.77.0.1/24")?;
//! let dns = Dnsmasq::new("tap0", "10.77.0.50", "10.77.0.99")
//!     .address("api.device.test", "10.77.0.1")
//!     .spawn(&ns)?;
//! // ... run the device: ns.spawn("device", "path/to/device", &["--tap", "tap0"])
//! # Ok(()) }
//! ```
//!
//! Processes started here are killed when their `Peer` drops; declare the `Netns` first so it
//! drops last (Rust drops locals in reverse order).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::{Peer, PeerError, Transport, process_alive};

/// Whether namespaces can be made here: root, `ip` installed, `/dev/net/tun` present. The
/// error says which is missing.
pub fn require_netns() -> Result<(), PeerError> {
    crate::require_tool("ip").map_err(PeerError::new)?;
    if !is_root() {
        return Err(PeerError::new(
            "network namespace tests need root (ip netns add, ip tuntap add); run them as root \
             (CI does)",
        ));
    }
    if !Path::new("/dev/net/tun").exists() {
        return Err(PeerError::new(
            "/dev/net/tun is missing: TAP devices cannot be made here (load the tun module)",
        ));
    }
    Ok(())
}

/// [`crate::skip_or_fail_all`] for namespace tests: `true` when root, `/dev/net/tun` and all
/// of `tools` are there; otherwise it fails under `CI=true` and skips (saying why) elsewhere.
///
/// # Panics
/// When something is missing and [`crate::on_ci`] is true.
#[track_caller]
pub fn skip_or_fail_netns(tools: &[&str]) -> bool {
    if !crate::skip_or_fail_all(tools) {
        return false;
    }
    match require_netns() {
        Ok(()) => true,
        Err(e) if crate::on_ci() => {
            panic!("{e} (CI=true: a missing prerequisite is a failure, not a skip)")
        }
        Err(e) => {
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED {}: {e}; set CI=true to make this a failure",
                std::thread::current().name().unwrap_or("this test")
            );
            false
        }
    }
}

fn is_root() -> bool {
    // The effective uid, from /proc (no libc in this crate).
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// Runs `ip ARGS`, failing with its output.
fn ip(args: &[&str]) -> Result<(), PeerError> {
    let out = Command::new("ip").args(args).output().map_err(|e| {
        PeerError::new(format!(
            "could not run ip {}: {e} ({})",
            args.join(" "),
            crate::require_tool("ip").err().unwrap_or_default()
        ))
    })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(PeerError::new(format!(
            "ip {} failed ({}): {}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )))
    }
}

/// A network namespace, deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Makes a namespace named `tp-PREFIX-PID-N` (unique per process and call), with `lo` up.
    pub fn new(prefix: &str) -> Result<Netns, PeerError> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let name = format!("tp-{prefix}-{}-{n}", std::process::id());
        ip(&["netns", "add", &name])?;
        // From here on, drop deletes it.
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip -n NAME ARGS`.
    pub fn ip(&self, args: &[&str]) -> Result<(), PeerError> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// Adds TAP device `name` (`ip tuntap add NAME mode tap`) with address `cidr` (e.g.
    /// `10.77.0.1/24`) on the kernel side, and sets it up. Its carrier comes up when a process
    /// opens it.
    pub fn tap(&self, name: &str, cidr: &str) -> Result<(), PeerError> {
        self.ip(&["tuntap", "add", name, "mode", "tap"])?;
        self.ip(&["addr", "add", cidr, "dev", name])?;
        self.ip(&["link", "set", name, "up"])
    }

    /// A command that runs `program` inside the namespace (`ip netns exec NAME program`).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// Spawns `program ARGS` inside the namespace as a [`Peer`] (killed on drop).
    pub fn spawn(
        &self,
        name: &str,
        program: impl AsRef<std::ffi::OsStr>,
        args: &[&str],
    ) -> Result<Peer, PeerError> {
        let mut c = self.command(program);
        c.args(args);
        Peer::spawn(name, c)
    }

    /// The PIDs of the processes inside (`ip netns pids`).
    pub fn pids(&self) -> Vec<u32> {
        Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Processes a test left inside (their Peers should have gone first): killed by PID.
        for pid in self.pids() {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        let _ = ip(&["netns", "del", &self.name]);
    }
}

/// Whether process `pid` holds a socket bound to local `port` (TCP: listening), looking at
/// the tables of the process' own network namespace (`/proc/PID/net/...`), which
/// [`Peer::wait_listening`] (the test's namespace) does not see.
pub fn bound_in_netns(pid: u32, transport: Transport, port: u16) -> bool {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.filter_map(|e| {
                let t = std::fs::read_link(e.ok()?.path()).ok()?;
                let t = t.to_str()?;
                Some(t.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
            })
            .collect()
        })
        .unwrap_or_default();
    let (tables, listen_only) = match transport {
        Transport::Tcp => (["tcp", "tcp6"], true),
        Transport::Udp => (["udp", "udp6"], false),
    };
    let port_hex = format!("{port:04X}");
    tables.iter().any(|t| {
        std::fs::read_to_string(format!("/proc/{pid}/net/{t}"))
            .map(|text| {
                text.lines().skip(1).any(|line| {
                    let f: Vec<&str> = line.split_whitespace().collect();
                    f.len() > 9
                        && f[1].rsplit_once(':').is_some_and(|(_, p)| p == port_hex)
                        && (!listen_only || f[3] == "0A")
                        && inodes.iter().any(|i| i == f[9])
                })
            })
            .unwrap_or(false)
    })
}

/// Waits until `peer` (running in a namespace) holds a socket bound to `port`.
pub fn wait_bound(
    peer: &Peer,
    transport: Transport,
    port: u16,
    timeout: Duration,
) -> Result<(), PeerError> {
    let deadline = Instant::now() + timeout;
    loop {
        if bound_in_netns(peer.pid(), transport, port) {
            return Ok(());
        }
        if !process_alive(peer.pid()) || Instant::now() >= deadline {
            return Err(PeerError::new(format!(
                "{} (pid {}) is not bound to {transport:?} port {port} (after up to {timeout:?}); \
                 its output:\n{}",
                peer.name(),
                peer.pid(),
                peer.output_so_far()
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// dnsmasq as the DHCP and DNS server of a link in a namespace: no upstream servers, no
/// `/etc/hosts`, no configuration file, lease file in a temporary directory, logs to stderr.
#[derive(Debug, Clone)]
pub struct Dnsmasq {
    interface: String,
    range: (String, String),
    addresses: Vec<(String, String)>,
    local_domains: Vec<String>,
    dns: bool,
    dns_server_option: Option<String>,
}

/// A running dnsmasq; killed on drop, its lease file removed.
#[derive(Debug)]
pub struct DnsmasqPeer {
    /// The process.
    pub peer: Peer,
    _dir: TempDir,
}

impl Dnsmasq {
    /// DHCP on `interface`, leasing `first`..=`last` (a /24), DNS on port 53 of the interface.
    pub fn new(interface: &str, first: &str, last: &str) -> Dnsmasq {
        Dnsmasq {
            interface: interface.to_owned(),
            range: (first.to_owned(), last.to_owned()),
            addresses: Vec::new(),
            local_domains: Vec::new(),
            dns: true,
            dns_server_option: None,
        }
    }

    /// Answers `name` with `ip` (`--address=/name/ip`).
    pub fn address(mut self, name: &str, ip: &str) -> Dnsmasq {
        self.addresses.push((name.to_owned(), ip.to_owned()));
        self
    }

    /// Answers names under `domain` that it does not know with NXDOMAIN (`--local=/domain/`).
    pub fn local(mut self, domain: &str) -> Dnsmasq {
        self.local_domains.push(domain.to_owned());
        self
    }

    /// No DNS service at all (`--port=0`): queries go unanswered. DHCP still names
    /// `dns_server` as the DNS server (option 6).
    pub fn without_dns(mut self, dns_server: &str) -> Dnsmasq {
        self.dns = false;
        self.dns_server_option = Some(dns_server.to_owned());
        self
    }

    /// Starts it in `ns` and waits until its DHCP socket (UDP 67), and its DNS socket (UDP 53)
    /// when DNS is on, are bound.
    pub fn spawn(&self, ns: &Netns) -> Result<DnsmasqPeer, PeerError> {
        let dir = tempfile::Builder::new()
            .prefix("testpeers-dnsmasq-")
            .tempdir()
            .map_err(|e| PeerError::new(format!("could not make a temporary directory: {e}")))?;
        let leases: PathBuf = dir.path().join("leases");
        let mut args = vec![
            "--keep-in-foreground".to_owned(),
            "--log-facility=-".to_owned(),
            "--log-dhcp".to_owned(),
            // No ping of an address before offering it: that check holds the first offers
            // back for seconds on a fresh link.
            "--no-ping".to_owned(),
            "--conf-file=/dev/null".to_owned(),
            "--no-resolv".to_owned(),
            "--no-hosts".to_owned(),
            "--pid-file=".to_owned(),
            "--user=root".to_owned(),
            format!("--interface={}", self.interface),
            "--except-interface=lo".to_owned(),
            "--bind-interfaces".to_owned(),
            format!(
                "--dhcp-range={},{},255.255.255.0,1h",
                self.range.0, self.range.1
            ),
            format!("--dhcp-leasefile={}", leases.display()),
        ];
        for (name, ip) in &self.addresses {
            args.push(format!("--address=/{name}/{ip}"));
        }
        for d in &self.local_domains {
            args.push(format!("--local=/{d}/"));
        }
        if !self.dns {
            args.push("--port=0".to_owned());
        }
        if let Some(s) = &self.dns_server_option {
            args.push(format!("--dhcp-option=option:dns-server,{s}"));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let peer = ns.spawn("dnsmasq", "dnsmasq", &args)?;
        wait_bound(&peer, Transport::Udp, 67, crate::START_TIMEOUT)?;
        if self.dns {
            wait_bound(&peer, Transport::Udp, 53, crate::START_TIMEOUT)?;
        }
        Ok(DnsmasqPeer { peer, _dir: dir })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(name: &str) -> bool {
        let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .any(|w| w == name)
    }

    #[test]
    fn drop_deletes_the_namespace_and_kills_what_runs_inside_even_on_panic() {
        if !skip_or_fail_netns(&["ip"]) {
            return;
        }
        let seen = std::sync::Mutex::new((String::new(), 0u32, 0u32));
        let result = std::panic::catch_unwind(|| {
            let ns = Netns::new("selftest").unwrap();
            ns.tap("tap0", "10.99.0.1/24").unwrap();
            assert!(listed(ns.name()));
            // One process guarded by a Peer, one left behind without a guard.
            let guarded = ns.spawn("sleep", "sleep", &["30"]).unwrap();
            let stray = ns.command("sleep").arg("30").spawn().unwrap();
            *seen.lock().unwrap() = (ns.name().to_owned(), guarded.pid(), stray.id());
            // Wait until both are inside.
            let deadline = Instant::now() + Duration::from_secs(10);
            while ns.pids().len() < 2 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            assert_eq!(ns.pids().len(), 2, "{:?}", ns.pids());
            // No guard: dropping a Child neither kills nor waits.
            drop(stray);
            panic!("a failing test");
        });
        assert!(result.is_err());
        let (name, guarded, stray) = seen.into_inner().unwrap();
        assert!(!listed(&name), "{name} still listed");
        assert!(!process_alive(guarded));
        // The stray one is killed by the namespace's drop (it stays a zombie, unreaped: not
        // alive).
        let deadline = Instant::now() + Duration::from_secs(5);
        while process_alive(stray) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(!process_alive(stray));
    }
}
