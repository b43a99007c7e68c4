//! `tether bench`: a load tool for TLS gateways (`tether serve`, or any TLS server that echoes).
//!
//! ```text
//! tether bench handshakes --target HOST:PORT --ca ca.pem [--cert dev.pem --key dev.key]
//!                         [--resume] [--tls 1.2|1.3] [--concurrency N] [--duration SECS]
//! tether bench idle       --target HOST:PORT --ca ca.pem --cert dev.pem --key dev.key
//!                         --connections N [--hold SECS] [--sources K] [--measure-pid PID]
//! tether bench echo       --target HOST:PORT --ca ca.pem --cert dev.pem --key dev.key
//!                         --connections N [--rate R] [--size BYTES] [--duration SECS]
//! tether bench dtls       --target HOST:PORT --ca ca.pem --cert dev.pem --key dev.key
//!                         [--connections N] [--duration SECS] [--tls 1.2|1.3]
//!                         [--phases handshakes,echo,records] [--size BYTES] [--window N]
//!                         [--udp gso|plain]
//! ```
//!
//! Every subcommand prints a summary table, writes its figures as JSON with `--json FILE`, and
//! shows a progress bar while it runs (only when stdout is a terminal). `--measure-pid PID`
//! (repeatable) samples those processes' RSS (`/proc/PID/status` VmRSS) and CPU time
//! (`/proc/PID/stat` utime + stime) before and after, which gives the server's CPU per handshake
//! and memory per idle session. The tool's own CPU time is reported too, so that a reader can
//! tell whether the client was the bottleneck.
//!
//! The client is tokio with tether's sans-IO [`tether::Session`] over `TcpStream` (the driver in
//! `client.rs`, the same approach as the gateway's). `idle` binds its sockets to several source
//! addresses in 127.0.0.0/8 (a loopback source address has about 28,000 ephemeral ports per
//! destination) and, when N passes what one process may open (its open-file limit), re-runs
//! this binary as several worker processes and adds up what they report.
//!
//! Hidden: `tether bench tcp-echo-server --listen ADDR`, a plain TCP echo server (the floor:
//! what a TCP accept/close costs without TLS; and the upstream of a TLS terminator under test),
//! and `tether bench handshakes --plain` against it (TCP connect and close, no TLS).

mod client;
mod dtls;
mod echo;
mod handshakes;
mod idle;
mod procfs;
mod report;
mod tcp_echo;
mod udp;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use tether::{ClientConfig, ClientConfigBuilder, Crypto, Identity, NamedGroup, TlsVersion, Trust};

/// Sessions one process holds at most when its open-file limit is this many below the limit
/// (the runtime, stdio and the worker pipes need a few descriptors).
const FD_RESERVE: u64 = 256;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Full or resumed TLS handshakes per second: each connection is TCP connect, handshake,
    /// close_notify, close.
    Handshakes(handshakes::Args),
    /// Open N concurrent TLS sessions and hold them (memory per idle session with
    /// --measure-pid).
    Idle(idle::Args),
    /// ECHO round-trip latency percentiles under a load of N connections.
    Echo(echo::Args),
    /// DTLS: handshakes, ECHO round trips and 1,200-byte records per second against a DTLS
    /// server that echoes (the gateway's DTLS listener); --tls picks the DTLS version.
    Dtls(dtls::Args),
    /// A plain TCP echo server (no TLS): the floor, and an upstream for TLS terminators.
    #[command(hide = true)]
    TcpEchoServer(tcp_echo::Args),
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Command::Handshakes(a) => handshakes::run(a),
        Command::Idle(a) => idle::run(a),
        Command::Echo(a) => echo::run(a),
        Command::Dtls(a) => dtls::run(a),
        Command::TcpEchoServer(a) => tcp_echo::run(a),
    }
}

/// Flags every load subcommand takes.
#[derive(Debug, Clone, clap::Args)]
pub struct Common {
    /// The server's TLS address.
    #[arg(long, value_name = "HOST:PORT")]
    target: Option<String>,
    /// The CA certificate(s) that issued the server's certificate (PEM).
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Client certificate chain (PEM), for mTLS.
    #[arg(long, value_name = "FILE")]
    cert: Option<PathBuf>,
    /// Private key (PEM) of --cert.
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
    /// The name sent as SNI and verified against the server's certificate [default: HOST].
    #[arg(long, value_name = "NAME")]
    sni: Option<String>,
    /// Connections: held sessions (idle), concurrent connections (echo), or a cap on the
    /// number of handshakes (handshakes).
    #[arg(long, value_name = "N", value_parser = parse_count)]
    connections: Option<usize>,
    /// Seconds of measurement (handshakes, echo); for idle, the time allowed to open the
    /// sessions [default: 10; idle: 300].
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    duration: Option<Duration>,
    /// Also write the figures to FILE as JSON.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Sample this process's RSS and CPU time before and after (repeatable; the figures are
    /// summed over the PIDs).
    #[arg(long = "measure-pid", value_name = "PID")]
    measure_pid: Vec<u32>,
    /// TLS version to offer (only this one) [default: 1.2 and 1.3, the server picks].
    #[arg(long, value_name = "1.2|1.3", value_parser = parse_version)]
    tls: Option<TlsVersion>,
    /// Bind client sockets to K source addresses 127.0.0.2, 127.0.0.3, ... (loopback
    /// targets only) [default: 0 = let the kernel pick; idle: one per 5,000 sessions].
    #[arg(long, value_name = "K")]
    sources: Option<usize>,
    /// Client runtime threads [default: the number of CPUs].
    #[arg(long, value_name = "N", value_parser = parse_count)]
    threads: Option<usize>,
    /// Seconds one TCP connect + TLS handshake may take before it counts as a timeout
    /// [default: 10].
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    timeout: Option<Duration>,
    /// Key-exchange group to offer (only this one; TLS benches) [default: x25519].
    #[arg(long, value_name = "x25519|p256|p384|x25519mlkem768", value_parser = parse_kx)]
    kx: Option<NamedGroup>,
    /// The client's cryptography library (TLS benches) [default: aws-lc].
    #[arg(long, value_name = "aws-lc|ring")]
    crypto: Option<Crypto>,
}

impl Common {
    /// Refuses the flags that only TLS benches take (`what` names the bench).
    pub(crate) fn tls_only_flags_absent(&self, what: &str) -> anyhow::Result<()> {
        if self.kx.is_some() || self.crypto.is_some() {
            bail!("--kx and --crypto apply to TLS benches, not to tether bench {what}");
        }
        Ok(())
    }
}

fn parse_kx(s: &str) -> Result<NamedGroup, String> {
    match s.to_ascii_lowercase().as_str() {
        "x25519" => Ok(NamedGroup::X25519),
        "p256" | "p-256" | "secp256r1" => Ok(NamedGroup::secp256r1),
        "p384" | "p-384" | "secp384r1" => Ok(NamedGroup::secp384r1),
        "x25519mlkem768" => Ok(NamedGroup::X25519MLKEM768),
        _ => Err(format!(
            "{s:?} is not a key-exchange group tether offers: use x25519, p256, p384 or x25519mlkem768"
        )),
    }
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if v.is_finite() && v > 0.0 && v <= 1e7 {
        Ok(Duration::from_secs_f64(v))
    } else {
        Err(format!("{s} is not a positive number of seconds"))
    }
}

fn parse_count(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("{s:?} is not a whole number of at least 1")),
    }
}

fn parse_version(s: &str) -> Result<TlsVersion, String> {
    match s {
        "1.2" => Ok(TlsVersion::Tls12),
        "1.3" => Ok(TlsVersion::Tls13),
        _ => Err(format!(
            "{s:?} is not a TLS version tether speaks: use 1.2 or 1.3"
        )),
    }
}

/// Where to connect and how: resolved once, shared by every connection.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// The target as given.
    pub target: String,
    pub addr: SocketAddr,
    pub server_name: String,
    /// The client config (absent for plain TCP).
    pub config: Option<ClientConfig>,
    /// What built it, for configs of their own (a session cache per simulated device).
    builder: Option<ClientConfigBuilder>,
    pub mtls: bool,
    pub tls: Option<TlsVersion>,
    /// Source addresses to bind to, used round-robin (empty: the kernel picks).
    pub sources: Vec<IpAddr>,
    pub timeout: Duration,
    pub threads: usize,
}

/// What `Plan::new` needs besides the common flags.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PlanOptions {
    /// Keep a session cache (resumption).
    pub resume: bool,
    /// Plain TCP: no TLS, no certificates.
    pub plain: bool,
    /// The number of sources when --sources is not given.
    pub default_sources: usize,
}

impl Plan {
    pub(crate) fn new(common: &Common, what: &str, opts: PlanOptions) -> anyhow::Result<Plan> {
        let Some(target) = common.target.clone() else {
            bail!("tether bench {what} needs --target HOST:PORT (the server's TLS address)");
        };
        let addr = target
            .to_socket_addrs()
            .with_context(|| format!("--target {target:?} is not a reachable HOST:PORT"))?
            .next()
            .with_context(|| format!("--target {target:?}: the name has no address"))?;
        let host = match target.rsplit_once(':') {
            Some((h, _)) => h.trim_start_matches('[').trim_end_matches(']').to_owned(),
            None => target.clone(),
        };
        let server_name = common.sni.clone().unwrap_or(host);
        let sources = source_addrs(
            common.sources.unwrap_or(opts.default_sources),
            addr,
            common.sources.is_some(),
        )?;
        let threads = common.threads.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
        });
        let timeout = common.timeout.unwrap_or(Duration::from_secs(10));
        if opts.plain {
            return Ok(Plan {
                target,
                addr,
                server_name,
                config: None,
                builder: None,
                mtls: false,
                tls: None,
                sources,
                timeout,
                threads,
            });
        }
        let Some(ca) = &common.ca else {
            bail!(
                "tether bench {what} needs --ca FILE (the CA that issued the server's certificate)"
            );
        };
        let trust =
            Trust::from_pem(&read(ca, "CA")?).with_context(|| format!("--ca {}", ca.display()))?;
        let mut builder = ClientConfig::builder(trust)
            .resumption(opts.resume)
            .handshake_timeout(timeout)
            .kx_groups(&[common.kx.unwrap_or(NamedGroup::X25519)])
            .crypto(common.crypto.unwrap_or(Crypto::fastest()));
        if let Some(v) = common.tls {
            builder = builder.versions(v, v);
        }
        let mtls = match (&common.cert, &common.key) {
            (Some(cert), Some(key)) => {
                let id = Identity::from_pem(&read(cert, "certificate")?, &read(key, "key")?)
                    .with_context(|| {
                        format!("--cert {} --key {}", cert.display(), key.display())
                    })?;
                builder = builder.identity(id);
                true
            }
            (None, None) => false,
            (Some(_), None) => bail!("--cert needs --key (the certificate's private key)"),
            (None, Some(_)) => bail!("--key needs --cert (the client certificate chain)"),
        };
        if opts.resume {
            builder = builder.session_cache_size(4);
        }
        let config = builder.clone().build().context("client TLS config")?;
        // Fail here, with one line, on a name tether cannot use.
        tether::Session::client(&config, &server_name, tether::Instant::ZERO)
            .with_context(|| format!("server name {server_name:?} (--sni)"))?;
        Ok(Plan {
            target,
            addr,
            server_name,
            config: Some(config),
            builder: Some(builder),
            mtls,
            tls: common.tls,
            sources,
            timeout,
            threads,
        })
    }

    /// A plan whose client config is a new one (its own session cache), like a device's.
    pub(crate) fn with_own_cache(&self) -> Plan {
        let mut plan = self.clone();
        if let Some(b) = &self.builder {
            // The builder was built once already: it cannot fail now.
            plan.config = b.clone().build().ok().or(plan.config);
        }
        plan
    }

    /// The source address of connection `i` (round-robin), if sources are used.
    pub(crate) fn source(&self, i: usize) -> Option<IpAddr> {
        (!self.sources.is_empty()).then(|| self.sources[i % self.sources.len()])
    }

    /// "TLS 1.3" / "TLS 1.2" / "TLS 1.2-1.3" / "plain TCP".
    pub(crate) fn tls_label(&self) -> &'static str {
        match (&self.config, self.tls) {
            (None, _) => "plain TCP",
            (Some(_), Some(TlsVersion::Tls13)) => "TLS 1.3",
            (Some(_), Some(TlsVersion::Tls12)) => "TLS 1.2",
            (Some(_), None) => "TLS 1.2-1.3",
        }
    }

    /// A tokio runtime with the planned number of threads.
    pub(crate) fn runtime(&self) -> anyhow::Result<tokio::runtime::Runtime> {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(self.threads)
            .enable_all()
            .build()
            .context("cannot start the async runtime")
    }
}

/// One connection opened and closed before a run: one clear error when the target, the
/// certificates or the server's policy do not work. Returns (version, suite, group).
pub(crate) fn probe(plan: &Plan) -> anyhow::Result<(String, String, String)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime
        .block_on(client::probe(plan))
        .map_err(|f| anyhow::anyhow!("cannot complete a TLS session with {}: {f}", plan.target))
}

fn read(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {what} {}", path.display()))
}

/// The first source address: 127.0.0.2 (127.0.0.1 stays the kernel's default).
const FIRST_SOURCE: u32 = u32::from_be_bytes([127, 0, 0, 2]);

fn source_addrs(k: usize, target: SocketAddr, explicit: bool) -> anyhow::Result<Vec<IpAddr>> {
    if k == 0 {
        return Ok(Vec::new());
    }
    let loopback_v4 = matches!(target.ip(), IpAddr::V4(ip) if ip.is_loopback());
    if !loopback_v4 {
        if explicit {
            bail!(
                "--sources binds to 127.0.0.2, 127.0.0.3, ...: it needs a target in 127.0.0.0/8, \
                 not {}",
                target.ip()
            );
        }
        return Ok(Vec::new());
    }
    if k > 1 << 16 {
        bail!("--sources {k}: at most 65536 source addresses");
    }
    Ok((0..k as u32)
        .map(|i| IpAddr::V4(Ipv4Addr::from(FIRST_SOURCE + i)))
        .collect())
}

/// Descriptors this process may open (the soft open-file limit), from /proc/self/limits.
pub(crate) fn open_file_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Sessions one process can hold, given its open-file limit.
pub(crate) fn per_process_capacity() -> usize {
    match open_file_limit() {
        Some(limit) => limit.saturating_sub(FD_RESERVE).max(64) as usize,
        None => 10_000,
    }
}

/// A clock for the sans-IO sessions: time since the first call in this process.
pub(crate) fn now() -> tether::Instant {
    use std::sync::OnceLock;
    static ORIGIN: OnceLock<std::time::Instant> = OnceLock::new();
    let origin = *ORIGIN.get_or_init(std::time::Instant::now);
    tether::Instant::from_micros(u64::try_from(origin.elapsed().as_micros()).unwrap_or(u64::MAX))
}
