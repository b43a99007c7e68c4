//! `tether serve`: the device gateway (crate `tether-gateway`) behind a command line.
//!
//! ```text
//! tether serve                                  # development PKI in ./tether-dev/, mTLS
//! tether serve --cert server.pem --key server.key --ca devices-ca.pem [--allow ids.txt]
//! tether serve --cert server.pem --key server.key --no-client-auth
//! tether serve --config gateway.toml [flags that override the file]
//! tether serve ... --dtls-listen 127.0.0.1:5684    # DTLS elsewhere (default: the TLS address, UDP)
//! tether serve ... --dtls-listen off               # no DTLS listener
//! tether serve ... --crypto ring                   # ring's key exchange instead of AWS-LC's
//! tether serve ... --workers 1                     # the whole gateway on one thread
//! tether serve ... --reuse-port --dtls-listen off --http 127.0.0.1:8090 --ticket-keys keys
//!                                               # one of several processes on one TLS port
//! ```
//!
//! Devices reach the gateway over TLS (TCP) or DTLS 1.2/1.3 (UDP) with the same certificates,
//! frames and HTTP API; by default the DTLS listener takes the TLS listener's address and port
//! number over UDP (`--dtls-listen`: another `IP:PORT`, `same`, or `off`). DTLS needs an ECDSA
//! server key: with another key and the default address, the gateway warns and runs TLS only.
//!
//! The configuration file is TOML; its keys are the flags' names without the dashes in front
//! (`listen`, `reuse-port`, `dtls-listen`, `dtls-max-handshaking`, `http`, `cert`, `key`, `cert-reload`, `ca`,
//! `allow`, `allow-reload`, `no-client-auth`, `ticket-keys`, `ticket-reload`, `handshake-timeout`, `idle-timeout`,
//! `drain-timeout`, `max-connections`, `max-per-ip`, `max-frame`, `verified-client-chains`,
//! `min-tls`, `crypto`, `workers`, `log-level`, `log-format`). Relative paths in the file are relative to the file's directory. A
//! flag given on the command line wins over the file. An unknown key or a bad value stops the start with one line naming the key and its
//! line in the file.
//!
//! With neither certificate flags nor a configuration file, `tether serve` uses a development
//! PKI in `./tether-dev/` (made if missing, laid out like `tether pki`: `ca.pem`/`ca.key`,
//! `server.pem`/`server.key` for localhost and 127.0.0.1, `device-1.pem`/`device-1.key`) and
//! prints the command a device can use to talk to it.
//!
//! SIGTERM or Ctrl-C drains: the gateway stops accepting, answers the frames it has received,
//! sends close_notify on every connection and exits within the drain timeout (a second signal
//! exits at once).
//!
//! SIGHUP reads the certificate, key, device CA, allow-list and ticket key files again at once
//! (they are also read every `cert-reload`, `allow-reload` and `ticket-reload` seconds) and
//! installs what changed: `kill -HUP PID` after renewing a certificate or editing the
//! allow-list. A file that does not parse, or a key that does not match its certificate, keeps
//! what is in force and logs a warning.

use std::fmt;
use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use tether::{Crypto, Identity, TlsVersion, Trust};
use tether_gateway::{
    AllowList, ClientAuthPolicy, DtlsListen, Gateway, GatewayConfig, TicketSource,
};

/// The development PKI directory (relative to the working directory).
const DEV_DIR: &str = "tether-dev";
/// The device certificate made in the development PKI.
const DEV_DEVICE: &str = "device-1";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// TLS listener address [default: 127.0.0.1:8081].
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Share the TLS port with other `tether serve` processes (SO_REUSEPORT): the kernel
    /// spreads new connections across them (past one process's open-file limit, or one process
    /// per core). Give them one --ticket-keys file (a device then resumes on any of them), each
    /// its own --http address (or off), and --dtls-listen off or an address of each one's own.
    #[arg(long)]
    reuse_port: bool,
    /// DTLS listener (UDP) address, `same` (the TLS listener's address and port) or `off`
    /// [default: same].
    #[arg(long, value_name = "ADDR|same|off", value_parser = DtlsListen::parse)]
    dtls_listen: Option<DtlsListen>,
    /// DTLS sessions in their handshake at most; a ClientHello over the limit is dropped (the
    /// device retransmits) [default: 4096].
    #[arg(long, value_name = "N")]
    dtls_max_handshaking: Option<NonZeroUsize>,
    /// HTTP API address (/health, /devices, /metrics), or `off` [default: 127.0.0.1:8080].
    #[arg(long, value_name = "ADDR|off", value_parser = parse_http)]
    http: Option<HttpAddr>,
    /// A TOML configuration file; flags override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The server's certificate chain (PEM). It and --key are read again every --cert-reload
    /// seconds: a renewed certificate found by two reads in a row goes in force for new
    /// handshakes, without a restart (at once on SIGHUP).
    #[arg(long, value_name = "FILE")]
    cert: Option<PathBuf>,
    /// The server's private key (PEM).
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
    /// Seconds between two reads of --cert and --key [default: 60].
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    cert_reload: Option<Duration>,
    /// The device CA (PEM): devices must present a certificate it issued (mTLS). Read again
    /// with --cert and --key: a CA added to the file is trusted for new handshakes.
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Only these device ids (certificate common names, one a line) may connect. The file is
    /// read again every --allow-reload seconds; a change found by two reads in a row goes in
    /// force (at once on SIGHUP): a device no longer listed is refused (TLS: with the
    /// access_denied alert) and its open sessions are ended.
    #[arg(long, value_name = "FILE")]
    allow: Option<PathBuf>,
    /// Seconds between two reads of --allow [default: 10].
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    allow_reload: Option<Duration>,
    /// Server-only TLS: devices present no certificate (and have no device id).
    #[arg(long)]
    no_client_auth: bool,
    /// Session-ticket keys shared by several gateways: 48-byte keys back to back (the first
    /// seals, the second still opens), e.g. `head -c 96 /dev/urandom > FILE`.
    #[arg(long, value_name = "FILE")]
    ticket_keys: Option<PathBuf>,
    /// Seconds between two reads of --ticket-keys (a changed file is installed; at once on
    /// SIGHUP) [default: 60].
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    ticket_reload: Option<Duration>,
    /// Seconds a TLS handshake may take [default: 5].
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    handshake_timeout: Option<Duration>,
    /// Seconds without input after which a connection is closed [default: 300].
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    idle_timeout: Option<Duration>,
    /// Open connections at most [default: 100000, lowered to fit the open-file limit].
    #[arg(long, value_name = "N")]
    max_connections: Option<NonZeroUsize>,
    /// Open connections from one IP address at most [default: 10000].
    #[arg(long, value_name = "N")]
    max_per_ip: Option<NonZeroUsize>,
    /// Largest frame body in bytes; a larger frame gets ERROR (code 1), then close [default: 65536].
    #[arg(long, value_name = "BYTES")]
    max_frame: Option<NonZeroU32>,
    /// Device certificate chains remembered as verified: a device reconnecting with the same
    /// chain skips its signature checks (validity times and the handshake signature are still
    /// checked); 0 turns it off [default: 4096].
    #[arg(long, value_name = "N")]
    verified_client_chains: Option<usize>,
    /// Seconds a drain (SIGTERM, Ctrl-C) may take before open connections are cut [default: 10].
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    drain_timeout: Option<Duration>,
    /// Lowest TLS version accepted [default: 1.2].
    #[arg(long, value_name = "1.2|1.3", value_parser = parse_version)]
    min_tls: Option<TlsVersion>,
    /// Cryptography for TLS: aws-lc (AWS-LC's key exchange, X25519 in half ring's time, and
    /// X25519MLKEM768; ring for the rest) or ring [default: aws-lc].
    #[arg(long, value_name = "aws-lc|ring")]
    crypto: Option<Crypto>,
    /// Threads that serve connections: 1 runs the whole gateway on one thread, which spends
    /// less CPU per connection while one core keeps up (no wake-ups of idle threads to share
    /// work); more use more cores [default: the number of CPUs].
    #[arg(long, value_name = "N", value_parser = parse_workers)]
    workers: Option<NonZeroUsize>,
    /// Log messages (to stderr) at this level and above: refused devices and drains at `info`,
    /// accept failures (out of descriptors) at `warn`, each failed handshake at `debug`
    /// [default: info].
    #[arg(long, value_name = "LEVEL", value_parser = parse_level)]
    log_level: Option<LogLevel>,
    /// How log messages are written: `text` (one readable line each) or `json` (one JSON
    /// object a line, for a log collector: timestamp, level, target and fields such as
    /// `remote`, `device` and `reason`) [default: text].
    #[arg(long, value_name = "FORMAT")]
    log_format: Option<LogFormat>,
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One readable line per message.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `--log-level`: `off`, `error`, `warn`, `info`, `debug` or `trace`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogLevel(Option<tracing::Level>);

fn parse_workers(s: &str) -> Result<NonZeroUsize, String> {
    s.parse::<NonZeroUsize>().map_err(|_| {
        format!("{s:?} is not a whole number of at least 1 (1 runs the gateway on one thread)")
    })
}

fn parse_level(s: &str) -> Result<LogLevel, String> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(LogLevel(None));
    }
    s.parse::<tracing::Level>()
        .map(|l| LogLevel(Some(l)))
        .map_err(|_| {
            format!("{s:?} is not a log level: use off, error, warn, info, debug or trace")
        })
}

/// `--http ADDR` or `--http off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpAddr(Option<SocketAddr>);

fn parse_http(s: &str) -> Result<HttpAddr, String> {
    if s == "off" {
        return Ok(HttpAddr(None));
    }
    s.parse()
        .map(|a| HttpAddr(Some(a)))
        .map_err(|_| format!("{s:?} is not an address (IP:PORT) or `off`"))
}

fn secs(v: f64) -> Result<Duration, String> {
    if v.is_finite() && v > 0.0 && v <= 1e9 {
        Ok(Duration::from_secs_f64(v))
    } else {
        Err(format!("{v} is not a positive number of seconds"))
    }
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    secs(v)
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

/// The configuration file. Every key is optional; flags override it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileConfig {
    listen: Option<SocketAddr>,
    reuse_port: Option<bool>,
    #[serde(default, deserialize_with = "de_dtls")]
    dtls_listen: Option<DtlsListen>,
    dtls_max_handshaking: Option<NonZeroUsize>,
    #[serde(default, deserialize_with = "de_http")]
    http: Option<HttpAddr>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    #[serde(default, deserialize_with = "de_secs")]
    cert_reload: Option<Duration>,
    ca: Option<PathBuf>,
    allow: Option<PathBuf>,
    #[serde(default, deserialize_with = "de_secs")]
    allow_reload: Option<Duration>,
    no_client_auth: Option<bool>,
    ticket_keys: Option<PathBuf>,
    #[serde(default, deserialize_with = "de_secs")]
    ticket_reload: Option<Duration>,
    #[serde(default, deserialize_with = "de_secs")]
    handshake_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "de_secs")]
    idle_timeout: Option<Duration>,
    max_connections: Option<NonZeroUsize>,
    max_per_ip: Option<NonZeroUsize>,
    max_frame: Option<NonZeroU32>,
    verified_client_chains: Option<usize>,
    #[serde(default, deserialize_with = "de_secs")]
    drain_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "de_version")]
    min_tls: Option<TlsVersion>,
    #[serde(default, deserialize_with = "de_crypto")]
    crypto: Option<Crypto>,
    workers: Option<NonZeroUsize>,
    #[serde(default, deserialize_with = "de_level")]
    log_level: Option<LogLevel>,
    log_format: Option<LogFormat>,
}

struct LevelVisitor;

impl Visitor<'_> for LevelVisitor {
    type Value = LogLevel;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a log level: \"off\", \"error\", \"warn\", \"info\", \"debug\" or \"trace\"")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<LogLevel, E> {
        parse_level(v).map_err(E::custom)
    }
}

fn de_level<'de, D: Deserializer<'de>>(d: D) -> Result<Option<LogLevel>, D::Error> {
    d.deserialize_str(LevelVisitor).map(Some)
}

struct SecsVisitor;

impl Visitor<'_> for SecsVisitor {
    type Value = Duration;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a positive number of seconds")
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
        secs(v as f64).map_err(E::custom)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
        secs(v as f64).map_err(E::custom)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
        secs(v).map_err(E::custom)
    }
}

fn de_secs<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    d.deserialize_any(SecsVisitor).map(Some)
}

struct VersionVisitor;

impl Visitor<'_> for VersionVisitor {
    type Value = TlsVersion;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a TLS version, \"1.2\" or \"1.3\"")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<TlsVersion, E> {
        parse_version(v).map_err(E::custom)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<TlsVersion, E> {
        if (v - 1.2).abs() < 1e-9 {
            Ok(TlsVersion::Tls12)
        } else if (v - 1.3).abs() < 1e-9 {
            Ok(TlsVersion::Tls13)
        } else {
            Err(E::custom(format!(
                "{v} is not a TLS version tether speaks: use 1.2 or 1.3"
            )))
        }
    }
}

fn de_crypto<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Crypto>, D::Error> {
    let s = String::deserialize(d)?;
    s.parse::<Crypto>().map(Some).map_err(de::Error::custom)
}

fn de_version<'de, D: Deserializer<'de>>(d: D) -> Result<Option<TlsVersion>, D::Error> {
    d.deserialize_any(VersionVisitor).map(Some)
}

struct HttpVisitor;

impl Visitor<'_> for HttpVisitor {
    type Value = HttpAddr;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an address \"IP:PORT\" or \"off\"")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<HttpAddr, E> {
        parse_http(v).map_err(E::custom)
    }
}

fn de_http<'de, D: Deserializer<'de>>(d: D) -> Result<Option<HttpAddr>, D::Error> {
    d.deserialize_str(HttpVisitor).map(Some)
}

struct DtlsVisitor;

impl Visitor<'_> for DtlsVisitor {
    type Value = DtlsListen;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an address \"IP:PORT\", \"same\" or \"off\"")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<DtlsListen, E> {
        DtlsListen::parse(v).map_err(E::custom)
    }
}

fn de_dtls<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DtlsListen>, D::Error> {
    d.deserialize_str(DtlsVisitor).map(Some)
}

/// Reads and checks a configuration file; errors are one line naming the key and its line.
fn load_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config {}", path.display()))?;
    let mut config: FileConfig = toml::from_str(&text).map_err(|e| {
        let message = e
            .message()
            .trim_end()
            .replace('\n', "; ")
            .replace("unknown field", "unknown key")
            .replace("a nonzero usize", "a whole number of at least 1")
            .replace("a nonzero u32", "a whole number of at least 1");
        match e.span() {
            Some(span) => {
                let line_no = text[..span.start.min(text.len())].matches('\n').count() + 1;
                let line = text.lines().nth(line_no - 1).unwrap_or("");
                let key = line
                    .split_once('=')
                    .map(|(k, _)| k.trim().trim_matches('"').to_owned())
                    .filter(|k| !k.is_empty() && !message.contains(&format!("`{k}`")));
                match key {
                    Some(key) => anyhow::anyhow!(
                        "config {} line {line_no}: key `{key}`: {message}",
                        path.display()
                    ),
                    None => anyhow::anyhow!("config {} line {line_no}: {message}", path.display()),
                }
            }
            None => anyhow::anyhow!("config {}: {message}", path.display()),
        }
    })?;
    // Relative paths in the file are relative to the file.
    let base = path.parent().unwrap_or(Path::new(""));
    for p in [
        &mut config.cert,
        &mut config.key,
        &mut config.ca,
        &mut config.allow,
        &mut config.ticket_keys,
    ]
    .into_iter()
    .flatten()
    {
        if p.is_relative() {
            *p = base.join(&*p);
        }
    }
    Ok(config)
}

fn read(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {what} {}", path.display()))
}

/// Makes what is missing of the development PKI in `dir`.
fn dev_pki(dir: &Path) -> anyhow::Result<Vec<&'static str>> {
    use tether_pki::{Ca, Dir, IssueOptions, KeyKind};
    let pki = Dir::new(dir);
    let mut made = Vec::new();
    let ca = if pki.ca_paths().cert.exists() {
        pki.load_ca()?
    } else {
        let ca = Ca::init(KeyKind::EcdsaP256, &dev_ca_name())?;
        pki.write_ca(&ca, false)?;
        made.push("ca");
        ca
    };
    let opts = IssueOptions::default();
    let server = pki.server_paths(None)?;
    if !server.cert.exists() {
        let issued = ca.issue_server(&["localhost".into(), "127.0.0.1".into()], &opts)?;
        pki.write_issued(&server, &issued, false)?;
        made.push("server");
    }
    let device = pki.client_paths(DEV_DEVICE)?;
    if !device.cert.exists() {
        let issued = ca.issue_client(DEV_DEVICE, &opts)?;
        pki.write_issued(&device, &issued, false)?;
        made.push(DEV_DEVICE);
    }
    Ok(made)
}

/// "tether dev CA 3f9c12ab": a CA name of its own, so that two development PKIs never share an
/// issuer name.
fn dev_ca_name() -> String {
    use std::hash::{BuildHasher as _, Hasher as _};
    let suffix = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish() as u32;
    format!("tether dev CA {suffix:08x}")
}

/// The gateway configuration from the file and the flags, and what to print about it.
struct Plan {
    config: GatewayConfig,
    auth: String,
    dev: bool,
    log_level: Option<tracing::Level>,
    log_format: LogFormat,
    /// Threads of the runtime (`--workers`).
    workers: usize,
    /// A note about the connection limit and the open-file limit, printed at start.
    limit_note: Option<String>,
}

/// Descriptors kept for everything but device connections: the listeners, the HTTP API and its
/// clients, the ticket-key file, the runtime's own.
const RESERVED_FDS: u64 = 64;

/// The process' soft limit of open files, if the system tells.
fn open_file_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        rustix::process::getrlimit(rustix::process::Resource::Nofile).current
    }
    #[cfg(not(unix))]
    None
}

/// The connection limit: the flag or file value, else the default lowered to what the open-file
/// limit allows (each connection is one descriptor). A note says when the limit was lowered or
/// when the configured value cannot be reached.
fn connection_limit(configured: Option<usize>, fd_limit: Option<u64>) -> (usize, Option<String>) {
    let room = fd_limit.map(|l| l.saturating_sub(RESERVED_FDS).max(1) as usize);
    match (configured, room) {
        (None, Some(room)) if room < tether_gateway::config::DEFAULT_MAX_CONNECTIONS => (
            room,
            Some(format!(
                "max connections {room}, to fit the open-file limit of {} (raise it with \
                 `ulimit -n` for more)",
                fd_limit.unwrap_or_default()
            )),
        ),
        (None, _) => (tether_gateway::config::DEFAULT_MAX_CONNECTIONS, None),
        (Some(n), Some(room)) if n > room => (
            n,
            Some(format!(
                "warning: max connections {n} is more than the open-file limit of {} allows \
                 (about {room}); accepts will fail beyond that: raise it with `ulimit -n`",
                fd_limit.unwrap_or_default()
            )),
        ),
        (Some(n), _) => (n, None),
    }
}

fn plan(args: &Args) -> anyhow::Result<Plan> {
    let file = match &args.config {
        Some(path) => load_file(path)?,
        None => FileConfig::default(),
    };
    let cert = args.cert.clone().or(file.cert);
    let key = args.key.clone().or(file.key);
    let ca = args.ca.clone().or(file.ca);
    let allow = args.allow.clone().or(file.allow);
    let no_client_auth = args.no_client_auth || file.no_client_auth.unwrap_or(false);

    let dev = cert.is_none() && key.is_none() && ca.is_none() && args.config.is_none();
    let (cert, key, ca) = if dev {
        let dir = Path::new(DEV_DIR);
        let made = dev_pki(dir).context("cannot make the development PKI in ./tether-dev/")?;
        if made.is_empty() {
            say!(
                "development PKI: {DEV_DIR}/ (ca, server for localhost and 127.0.0.1, {DEV_DEVICE})"
            );
        } else {
            say!("development PKI: made {} in {DEV_DIR}/", made.join(", "));
        }
        (
            dir.join("server.pem"),
            dir.join("server.key"),
            (!no_client_auth).then(|| dir.join("ca.pem")),
        )
    } else {
        let (Some(cert), Some(key)) = (cert, key) else {
            bail!(
                "the server needs --cert FILE and --key FILE (or `cert` and `key` in the config \
                 file); without certificate flags and without --config, tether serve makes a \
                 development PKI in ./{DEV_DIR}/"
            );
        };
        (cert, key, ca)
    };
    let identity = Identity::from_pem(&read(&cert, "certificate")?, &read(&key, "private key")?)
        .with_context(|| {
            format!(
                "server certificate {} and key {}",
                cert.display(),
                key.display()
            )
        })?;

    let ca_file = ca.clone().filter(|_| !no_client_auth);
    let (client_auth, auth) = if no_client_auth {
        if allow.is_some() {
            bail!(
                "--allow lists device ids from client certificates: it needs mTLS, not --no-client-auth"
            );
        }
        (ClientAuthPolicy::ServerOnly, "server-only TLS".to_owned())
    } else {
        let Some(ca) = ca else {
            bail!(
                "mTLS needs the device CA: give --ca FILE (or `ca` in the config file), or \
                 --no-client-auth for server-only TLS"
            );
        };
        let trust = Trust::from_pem(&read(&ca, "device CA")?)
            .with_context(|| format!("device CA {}", ca.display()))?;
        let allow = allow.as_deref().map(AllowList::load).transpose()?;
        let mut auth = format!("mTLS, device CA {}", ca.display());
        if let Some(list) = &allow {
            auth.push_str(&format!(", {} allowed device id(s)", list.len()));
        }
        (ClientAuthPolicy::Required { trust, allow }, auth)
    };

    let mut config = GatewayConfig::new(identity, client_auth);
    config.identity_files = Some((cert.clone(), key.clone()));
    config.ca_file = ca_file;
    if let Some(d) = args.cert_reload.or(file.cert_reload) {
        config.identity_reload_every = d;
    }
    if matches!(
        config.client_auth,
        ClientAuthPolicy::Required { allow: Some(_), .. }
    ) {
        config.allow_file = allow;
    }
    if let Some(d) = args.allow_reload.or(file.allow_reload) {
        config.allow_reload_every = d;
    }
    let mut auth = auth;
    if config.allow_file.is_some() {
        auth.push_str(&format!(
            " (file re-read every {} s)",
            config.allow_reload_every.as_secs_f64()
        ));
    }
    if let Some(a) = args.listen.or(file.listen) {
        config.listen = a;
    }
    if let Some(d) = args.dtls_listen.or(file.dtls_listen) {
        config.dtls = d;
    }
    config.reuse_port = args.reuse_port || file.reuse_port == Some(true);
    if config.reuse_port && config.dtls == DtlsListen::SameAsTls {
        bail!(
            "--reuse-port shares the TLS port between gateway processes, not a DTLS one (the \
             kernel would send a DTLS device's datagrams to another process whenever one of \
             them starts or stops): add --dtls-listen off, or give each process its own \
             --dtls-listen IP:PORT"
        );
    }
    if let Some(n) = args.dtls_max_handshaking.or(file.dtls_max_handshaking) {
        config.dtls_max_handshaking = n.get();
    }
    if let Some(HttpAddr(a)) = args.http.or(file.http) {
        config.http = a;
    }
    if let Some(v) = args.min_tls.or(file.min_tls) {
        config.min_tls = v;
    }
    if let Some(c) = args.crypto.or(file.crypto) {
        config.crypto = c;
    }
    if let Some(d) = args.handshake_timeout.or(file.handshake_timeout) {
        config.handshake_timeout = d;
    }
    if let Some(d) = args.idle_timeout.or(file.idle_timeout) {
        config.idle_timeout = d;
    }
    if let Some(d) = args.drain_timeout.or(file.drain_timeout) {
        config.drain_timeout = d;
    }
    let configured = args.max_connections.or(file.max_connections);
    let (max_connections, limit_note) =
        connection_limit(configured.map(NonZeroUsize::get), open_file_limit());
    config.max_connections = max_connections;
    if let Some(n) = args.max_per_ip.or(file.max_per_ip) {
        config.max_per_ip = n.get();
    }
    if let Some(n) = args.max_frame.or(file.max_frame) {
        config.max_frame = n.get();
    }
    if let Some(n) = args.verified_client_chains.or(file.verified_client_chains) {
        config.verified_client_chains = n;
    }
    let reload = args
        .ticket_reload
        .or(file.ticket_reload)
        .unwrap_or(tether_gateway::config::DEFAULT_TICKET_RELOAD);
    if let Some(path) = args.ticket_keys.clone().or(file.ticket_keys) {
        config.tickets = TicketSource::File {
            path,
            reload_every: reload,
        };
    }
    let log_level = args
        .log_level
        .or(file.log_level)
        .unwrap_or(LogLevel(Some(tracing::Level::INFO)))
        .0;
    Ok(Plan {
        config,
        auth,
        dev,
        log_level,
        log_format: args.log_format.or(file.log_format).unwrap_or_default(),
        workers: args
            .workers
            .or(file.workers)
            .or_else(|| std::thread::available_parallelism().ok())
            .map_or(1, NonZeroUsize::get),
        limit_note,
    })
}

/// The command a device can run to talk to a gateway that uses the development PKI: two
/// frames (ECHO "hello", TIME) as raw bytes through openssl s_client, replies shown by od.
fn device_command(addr: SocketAddr) -> String {
    device_command_over(addr, "")
}

/// [`device_command`] over DTLS 1.2 (`openssl s_client -dtls1_2`).
fn dtls_device_command(addr: SocketAddr) -> String {
    device_command_over(addr, "-dtls1_2 ")
}

fn device_command_over(addr: SocketAddr, flag: &str) -> String {
    let ip = match addr.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => "127.0.0.1".to_owned(),
        ip if ip.is_unspecified() => "[::1]".to_owned(),
        ip if ip.is_ipv6() => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    format!(
        "(printf '\\0\\0\\0\\1\\0\\0\\0\\5hello\\0\\0\\0\\3\\0\\0\\0\\0'; sleep 1) | openssl s_client \
         {flag}-connect {ip}:{port} -CAfile {DEV_DIR}/ca.pem -cert {DEV_DIR}/{DEV_DEVICE}.pem \
         -key {DEV_DIR}/{DEV_DEVICE}.key -verify_hostname localhost -quiet -no_ign_eof | od -A d -c",
        port = addr.port()
    )
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let plan = plan(&args)?;
    if let Some(level) = plan.log_level {
        let logs = tracing_subscriber::fmt()
            .with_max_level(level)
            .with_writer(std::io::stderr)
            .with_ansi(false);
        match plan.log_format {
            LogFormat::Text => logs.init(),
            LogFormat::Json => logs.json().init(),
        }
    }
    // One worker: a single-threaded runtime, the gateway on this thread. More: a
    // multi-threaded runtime, and the gateway (its accept loop) on one of its workers, not on
    // this thread, so that accepted connections are usually served by the thread that
    // accepted them, without a cross-thread wake-up per connection.
    let workers = plan.workers;
    if workers == 1 {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        runtime.block_on(serve(plan))?;
    } else {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        runtime
            .block_on(runtime.spawn(serve(plan)))
            .context("the gateway task failed")??;
    }
    Ok(ExitCode::SUCCESS)
}

async fn serve(plan: Plan) -> anyhow::Result<()> {
    let Plan {
        config,
        auth,
        dev,
        limit_note,
        workers,
        ..
    } = plan;
    if let Some(note) = limit_note {
        say!("tether serve: {note}");
    }
    let (min_tls, drain, crypto) = (config.min_tls, config.drain_timeout, config.crypto);
    let shared = if config.reuse_port {
        ", TLS port shared (reuse-port)"
    } else {
        ""
    };
    let gateway = Gateway::bind(config).await?;
    let addr = gateway.local_addr();
    if dev {
        say!("a device talks to it with (ECHO \"hello\" and TIME as raw frames):");
        say!("  {}", device_command(addr));
    }
    let dtls = match gateway.dtls_addr() {
        Some(a) => {
            if dev {
                say!("or over DTLS:");
                say!("  {}", dtls_device_command(a));
            }
            format!("{} on udp {a}, ", dtls_versions(min_tls))
        }
        None => "no DTLS, ".to_owned(),
    };
    let http = match gateway.http_addr() {
        Some(a) => format!("HTTP API on http://{a}"),
        None => "no HTTP API".to_owned(),
    };

    // Installed before the "listening" line: a SIGTERM sent as soon as it is printed drains.
    let mut signals = Signals::new()?;
    let stop = gateway.shutdown_handle();
    tokio::spawn(async move {
        let first = signals.next().await;
        say!(
            "tether serve: {first}: draining (at most {}s; a second signal exits at once)",
            drain.as_secs_f64()
        );
        stop.shutdown();
        let second = signals.next().await;
        eprintln!("tether serve: {second} again: exiting without draining");
        std::process::exit(1);
    });
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
        let reload = gateway.reload_handle();
        tokio::spawn(async move {
            while hangup.recv().await.is_some() {
                say!(
                    "tether serve: SIGHUP: reading the certificate, key, device CA, allow-list \
                     and ticket key files again"
                );
                reload.reload();
            }
        });
    }
    say!(
        "tether serve: listening on {addr} ({}, {auth}, {crypto}, {workers} worker{}{shared}), {dtls}{http}",
        versions(min_tls),
        if workers == 1 { "" } else { "s" }
    );
    gateway.run().await?;
    say!("tether serve: stopped");
    Ok(())
}

fn versions(min: TlsVersion) -> &'static str {
    match min {
        TlsVersion::Tls12 => "TLS 1.2-1.3",
        TlsVersion::Tls13 => "TLS 1.3 only",
    }
}

fn dtls_versions(min: TlsVersion) -> &'static str {
    match min {
        TlsVersion::Tls12 => "DTLS 1.2-1.3",
        TlsVersion::Tls13 => "DTLS 1.3 only",
    }
}

/// SIGTERM and SIGINT (Ctrl-C), registered when made.
struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> anyhow::Result<Signals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Signals {
                term: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
                int: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
            })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    /// Waits for the next signal; returns its name.
    async fn next(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.term.recv() => "SIGTERM",
                _ = self.int.recv() => "SIGINT",
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            "Ctrl-C"
        }
    }
}

#[cfg(test)]
mod limit_tests {
    use super::*;
    use tether_gateway::config::DEFAULT_MAX_CONNECTIONS;

    #[test]
    fn default_limit_follows_the_open_file_limit() {
        let (n, note) = connection_limit(None, Some(20_000));
        assert_eq!(n, 20_000 - RESERVED_FDS as usize);
        assert!(note.unwrap().contains("open-file limit of 20000"));
    }

    #[test]
    fn default_limit_kept_when_descriptors_are_plenty() {
        assert_eq!(
            connection_limit(None, Some(1 << 20)),
            (DEFAULT_MAX_CONNECTIONS, None)
        );
        assert_eq!(
            connection_limit(None, None),
            (DEFAULT_MAX_CONNECTIONS, None)
        );
    }

    #[test]
    fn configured_limit_past_the_descriptors_is_kept_with_a_warning() {
        let (n, note) = connection_limit(Some(50_000), Some(1024));
        assert_eq!(n, 50_000);
        assert!(note.unwrap().starts_with("warning: max connections 50000"));
        assert_eq!(connection_limit(Some(100), Some(1024)), (100, None));
    }

    #[test]
    fn log_levels_parse_and_bad_ones_are_named() {
        assert_eq!(parse_level("off"), Ok(LogLevel(None)));
        assert_eq!(
            parse_level("debug"),
            Ok(LogLevel(Some(tracing::Level::DEBUG)))
        );
        assert!(
            parse_level("loud")
                .unwrap_err()
                .contains("\"loud\" is not a log level")
        );
    }
}
