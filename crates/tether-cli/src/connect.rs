//! `tether connect HOST:PORT`: a diagnostic TLS client in the spirit of `openssl s_client`.
//!
//! It connects, verifies the server (CA roots from `--ca`, else the bundled Mozilla roots;
//! `--pin` and `--tofu` on top or alone), and prints the negotiated version, cipher suite,
//! key-exchange group, ALPN, resumption, the peer chain and the handshake time. With `--send`
//! it writes a line and prints what comes back until the peer closes or `--timeout` passes.
//!
//! `--dtls` does the same over UDP with DTLS 1.2/1.3 (`--min-tls`/`--max-tls` pick the DTLS
//! versions), with the same trust options and the same fields; DTLS peers present only their
//! leaf certificate, and there is no ALPN or resumption. `--send` sends the line as one record.
//!
//! In TLS 1.3 and DTLS 1.3 the client's handshake completes before the server has checked the
//! client, so it waits a moment (twice the handshake time, 150 ms to 1 s) for the server's
//! verdict: an alert (no client certificate, another CA) or an immediate close (an allow-list)
//! fails the run, and data the server sends first is shown. A DTLS 1.3 server that refuses
//! silently (tether's gateway: its alert would go unprotected, which 1.3 clients ignore)
//! cannot be told from one with nothing to say; `--send` shows it (no answer).
//!
//! Exit status 0 only when the handshake succeeded, the peer was verified and the server did
//! not refuse the session; otherwise one line on stderr says why, and the status is 1.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tether::dtls::{self, DtlsVersion};
use tether::net::{FileTofuStore, TcpTlsSocket};
use tether::{ClientConfig, Identity, Pin, TlsVersion, Trust};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The server to connect to, as HOST:PORT.
    #[arg(value_name = "HOST:PORT")]
    target: String,
    /// Trust the CA certificates in this PEM file (repeatable). Without --ca, --pin or --tofu,
    /// the bundled Mozilla roots are used.
    #[arg(long, value_name = "FILE")]
    ca: Vec<PathBuf>,
    /// Require the server's key to match this SPKI pin, `sha256/BASE64` (repeatable). Alone, no
    /// CA is needed.
    #[arg(long, value_name = "sha256/BASE64")]
    pin: Vec<String>,
    /// Trust on first use: remember the server's key in FILE, refuse a changed key.
    #[arg(long, value_name = "FILE")]
    tofu: Option<PathBuf>,
    /// Client certificate chain (PEM) for servers that require one.
    #[arg(long, value_name = "FILE", requires = "key")]
    cert: Option<PathBuf>,
    /// Private key (PEM) of --cert.
    #[arg(long, value_name = "FILE", requires = "cert")]
    key: Option<PathBuf>,
    /// Lowest TLS version to accept.
    #[arg(long, value_name = "1.2|1.3", default_value = "1.2", value_parser = parse_version)]
    min_tls: TlsVersion,
    /// Highest TLS version to offer.
    #[arg(long, value_name = "1.2|1.3", default_value = "1.3", value_parser = parse_version)]
    max_tls: TlsVersion,
    /// The name to send as SNI and to verify the certificate against (default: HOST).
    #[arg(long, value_name = "NAME")]
    sni: Option<String>,
    /// Offer this ALPN protocol (repeatable, most preferred first).
    #[arg(long, value_name = "PROTOCOL")]
    alpn: Vec<String>,
    /// Write TEXT and a newline after the handshake, then print what comes back until the
    /// server closes or --timeout passes.
    #[arg(long, value_name = "TEXT")]
    send: Option<String>,
    /// Seconds allowed for the connection and handshake, and for each read after --send.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    timeout: f64,
    /// Connect a second time with the same session cache, to show resumption.
    #[arg(long)]
    reconnect: bool,
    /// DTLS over UDP instead of TLS over TCP (versions 1.2 and 1.3, chosen with --min-tls and
    /// --max-tls).
    #[arg(long, conflicts_with_all = ["alpn", "reconnect"])]
    dtls: bool,
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

fn read_file(path: &PathBuf, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {what} {}", path.display()))
}

/// The trust the options describe, and a description of it for the output.
fn build_trust(args: &Args) -> anyhow::Result<(Trust, String)> {
    let mut trust = Trust::new();
    let mut described = Vec::new();
    for ca in &args.ca {
        trust = trust
            .with_roots_pem(&read_file(ca, "CA file")?)
            .with_context(|| format!("CA file {}", ca.display()))?;
        described.push(format!("CA roots from {}", ca.display()));
    }
    for pin in &args.pin {
        let pin: Pin = pin.parse()?;
        trust = trust.with_pin(pin);
    }
    if !args.pin.is_empty() {
        described.push(format!("{} pin(s)", args.pin.len()));
    }
    if let Some(path) = &args.tofu {
        trust = trust.with_tofu(Arc::new(FileTofuStore::new(path)));
        described.push(format!("TOFU store {}", path.display()));
    }
    if !trust.has_anchors() {
        trust = trust.with_mozilla_roots();
        described.push("bundled Mozilla roots".into());
    }
    if !(args.timeout > 0.0 && args.timeout.is_finite()) {
        bail!("--timeout must be a positive number of seconds");
    }
    Ok((trust, described.join(" + ")))
}

/// The client certificate from --cert and --key, if given.
fn identity(args: &Args) -> anyhow::Result<Option<Identity>> {
    let (Some(cert), Some(key)) = (&args.cert, &args.key) else {
        return Ok(None);
    };
    let id = Identity::from_pem(
        &read_file(cert, "certificate")?,
        &read_file(key, "private key")?,
    )
    .with_context(|| format!("client certificate {}", cert.display()))?;
    Ok(Some(id))
}

fn build_config(args: &Args) -> anyhow::Result<(ClientConfig, String)> {
    let (trust, described) = build_trust(args)?;
    let mut builder = ClientConfig::builder(trust)
        .versions(args.min_tls, args.max_tls)
        .handshake_timeout(Duration::from_secs_f64(args.timeout));
    if !args.alpn.is_empty() {
        let protos: Vec<&[u8]> = args.alpn.iter().map(|p| p.as_bytes()).collect();
        builder = builder.alpn(&protos);
    }
    if let Some(id) = identity(args)? {
        builder = builder.identity(id);
    }
    Ok((builder.build()?, described))
}

fn host_of(target: &str) -> anyhow::Result<&str> {
    let (host, port) = target
        .rsplit_once(':')
        .with_context(|| format!("{target:?} is not HOST:PORT"))?;
    port.parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .with_context(|| format!("{port:?} in {target:?} is not a port number: use 1 to 65535"))?;
    Ok(host.trim_start_matches('[').trim_end_matches(']'))
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let host = host_of(&args.target)?.to_string();
    let name = args.sni.clone().unwrap_or(host);
    if args.dtls {
        return run_dtls(&args, &name);
    }
    let (config, trust_desc) = build_config(&args)?;

    let (mut socket, early) = connect_once(&args, &name, &config, &trust_desc)?;
    if !early.is_empty() {
        say!("the server spoke first ({} bytes):", early.len());
        let mut out = std::io::stdout();
        out.write_all(&early)?;
        out.flush()?;
    }
    if let Some(text) = &args.send {
        exchange(&mut socket, text, Duration::from_secs_f64(args.timeout))?;
    }
    let _ = socket.close();
    if args.reconnect {
        say!();
        say!("reconnecting with the same session cache:");
        let (mut again, _) = connect_once(&args, &name, &config, &trust_desc)?;
        let _ = again.close();
    }
    Ok(ExitCode::SUCCESS)
}

/// TLS 1.3 completes the client's handshake before the server has checked the client's
/// Finished and certificate: a server that refuses the client (no certificate, another CA,
/// not on its allow-list) says so just after. Waits that long for its verdict (twice the
/// handshake time, within 150 ms to 1 s and `--timeout`): an alert or a close is the
/// connection's failure, tickets are taken (for `--reconnect`), and data the server sends
/// first is returned to be shown.
fn await_verdict(
    socket: &mut TcpTlsSocket,
    handshake: Duration,
    timeout: Duration,
) -> anyhow::Result<Vec<u8>> {
    if socket.session().version() != Some(TlsVersion::Tls13) {
        // TLS 1.2: the server's Finished came after it had checked everything.
        return Ok(Vec::new());
    }
    socket.set_io_timeout(Some(verdict_wait(handshake, timeout)));
    let early = read_verdict(|buf| socket.read(buf));
    socket.set_io_timeout(Some(timeout));
    early
}

/// How long to wait for a (D)TLS 1.3 server's verdict: twice the handshake time, within
/// 150 ms to 1 s and `timeout`.
fn verdict_wait(handshake: Duration, timeout: Duration) -> Duration {
    (handshake * 2)
        .clamp(Duration::from_millis(150), Duration::from_secs(1))
        .min(timeout)
}

/// Reads with `read` (bounded by a short timeout) what a (D)TLS 1.3 server sends right after
/// the handshake: its data, if it speaks first; an alert or a close_notify is the server
/// refusing this client.
fn read_verdict(
    mut read: impl FnMut(&mut [u8]) -> Result<usize, tether::Error>,
) -> anyhow::Result<Vec<u8>> {
    let mut early = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match read(&mut buf) {
            Ok(0) if early.is_empty() => bail!(
                "the server closed the connection right after the handshake (close_notify): \
                 it accepted the handshake but refused this client (an allow-list, or a \
                 policy on the client certificate?)"
            ),
            Ok(0) | Err(tether::Error::Timeout(_)) => return Ok(early),
            Ok(n) => early.extend_from_slice(&buf[..n]),
            Err(e) => {
                let hint = if e.to_string().contains("client certificate") {
                    " (give one with --cert FILE --key FILE)"
                } else {
                    ""
                };
                return Err(e).context(format!(
                    "the server refused the session after the handshake{hint}"
                ));
            }
        }
    }
}

/// Connects, waits for the server's verdict, prints the session; returns the socket and any
/// data the server sent first.
fn connect_once(
    args: &Args,
    name: &str,
    config: &ClientConfig,
    trust_desc: &str,
) -> anyhow::Result<(TcpTlsSocket, Vec<u8>)> {
    let start = Instant::now();
    let context = || format!("{} (server name {name:?})", args.target);
    let mut socket =
        tether::net::connect_named(&args.target, name, config).with_context(context)?;
    let total = start.elapsed();
    let early = await_verdict(&mut socket, total, Duration::from_secs_f64(args.timeout))
        .with_context(context)?;
    let s = socket.session();
    let peer = socket
        .transport()
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| args.target.clone());
    say!("connected to {peer} (server name {name:?})");
    let field = |k: &str, v: String| say!("  {k:<14}{v}");
    field("version", s.version().map_or("?".into(), |v| v.to_string()));
    field(
        "cipher suite",
        s.cipher_suite().map_or("?".into(), |c| format!("{c:?}")),
    );
    field(
        "key exchange",
        s.kx_group()
            .map_or("(none: resumed TLS 1.2 session)".into(), |g| {
                format!("{g:?}")
            }),
    );
    field(
        "ALPN",
        s.alpn()
            .map_or("(none)".into(), |p| String::from_utf8_lossy(p).into_owned()),
    );
    field("resumed", if s.is_resumed() { "yes" } else { "no" }.into());
    field(
        "handshake",
        format!(
            "{:.1} ms TLS, {:.1} ms with TCP connect",
            s.handshake_duration().unwrap_or_default().as_secs_f64() * 1e3,
            total.as_secs_f64() * 1e3
        ),
    );
    field("verification", format!("OK ({trust_desc}; name {name:?})"));
    match s.peer_certificates() {
        Some(chain) => {
            say!("peer chain:");
            for (i, cert) in chain.iter().enumerate() {
                show_certificate(i, cert.as_ref());
            }
        }
        None => say!("peer chain:     (not available)"),
    }
    std::io::stdout().flush().ok();
    Ok((socket, early))
}

/// One certificate of the peer chain, as `[i] subject / issuer / valid / SANs / pin`.
fn show_certificate(i: usize, der: &[u8]) {
    match tether_pki::describe(der) {
        Ok(info) => {
            say!("  [{i}] subject   {}", info.subject);
            say!("      issuer    {}", info.issuer);
            say!(
                "      valid     {} to {}",
                tether_pki::rfc3339(info.not_before),
                tether_pki::rfc3339(info.not_after)
            );
            if !info.sans.is_empty() {
                say!("      SANs      {}", info.sans.join(", "));
            }
            say!("      pin       {}", info.pin);
        }
        Err(e) => say!("  [{i}] (cannot be shown: {e})"),
    }
}

fn parse_dtls_version(v: TlsVersion) -> DtlsVersion {
    match v {
        TlsVersion::Tls12 => DtlsVersion::Dtls12,
        TlsVersion::Tls13 => DtlsVersion::Dtls13,
    }
}

/// `tether connect --dtls`: the same checks and fields over UDP.
fn run_dtls(args: &Args, name: &str) -> anyhow::Result<ExitCode> {
    let (trust, trust_desc) = build_trust(args)?;
    let timeout = Duration::from_secs_f64(args.timeout);
    let mut builder = dtls::ClientConfig::builder(trust)
        .versions(
            parse_dtls_version(args.min_tls),
            parse_dtls_version(args.max_tls),
        )
        .handshake_timeout(timeout);
    if let Some(id) = identity(args)? {
        builder = builder.identity(id);
    }
    let config = builder.build()?;

    let start = Instant::now();
    let context = || format!("{} over DTLS (server name {name:?})", args.target);
    let mut socket = dtls::connect_named(&args.target, name, &config).with_context(context)?;
    let total = start.elapsed();
    // DTLS 1.3, like TLS 1.3: the server may refuse this client after its handshake is done.
    let early = if socket.session().version() == Some(DtlsVersion::Dtls13) {
        socket.set_io_timeout(Some(verdict_wait(total, timeout)));
        let early = read_verdict(|buf| socket.recv(buf)).with_context(context)?;
        socket.set_io_timeout(Some(timeout));
        early
    } else {
        Vec::new()
    };
    let s = socket.session();
    let peer = socket
        .transport()
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| args.target.clone());
    say!("connected to {peer} over UDP (server name {name:?})");
    let field = |k: &str, v: String| say!("  {k:<14}{v}");
    field("version", s.version().map_or("?".into(), |v| v.to_string()));
    field(
        "cipher suite",
        s.cipher_suite().map_or("?".into(), |c| format!("{c:?}")),
    );
    field(
        "key exchange",
        s.kx_group().map_or("?".into(), |g| format!("{g:?}")),
    );
    field("ALPN", "(none: not offered over DTLS)".into());
    field("resumed", "no".into());
    field(
        "handshake",
        format!(
            "{:.1} ms DTLS, {:.1} ms with UDP set-up",
            s.handshake_duration().unwrap_or_default().as_secs_f64() * 1e3,
            total.as_secs_f64() * 1e3
        ),
    );
    field("verification", format!("OK ({trust_desc}; name {name:?})"));
    field(
        "record limit",
        format!("{} bytes per datagram", s.max_send_size()),
    );
    match s.peer_certificate() {
        Some(cert) => {
            say!("peer chain (DTLS peers present their leaf only):");
            show_certificate(0, cert.as_ref());
        }
        None => say!("peer chain:     (not available)"),
    }
    if !early.is_empty() {
        say!("the server spoke first ({} bytes):", early.len());
        std::io::stdout().write_all(&early)?;
    }
    std::io::stdout().flush().ok();
    if let Some(text) = &args.send {
        exchange_dtls(&mut socket, text, timeout)?;
    }
    let _ = socket.close();
    Ok(ExitCode::SUCCESS)
}

fn exchange_dtls(
    socket: &mut dtls::UdpDtlsSocket,
    text: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    socket
        .send(format!("{text}\n").as_bytes())
        .context("sending --send text")?;
    socket.set_io_timeout(Some(timeout));
    say!("sent {} bytes in one record; reply:", text.len() + 1);
    let mut out = std::io::stdout();
    let mut buf = vec![0u8; 65536];
    loop {
        match socket.recv(&mut buf) {
            Ok(0) => {
                say!("(server closed the connection with close_notify)");
                return Ok(());
            }
            Ok(n) => {
                out.write_all(&buf[..n])?;
                out.flush()?;
            }
            Err(tether::Error::Timeout(_)) => {
                say!("(no more data within {:.1} s)", timeout.as_secs_f64());
                return Ok(());
            }
            Err(e) => return Err(e).context("reading the reply"),
        }
    }
}

fn exchange(socket: &mut TcpTlsSocket, text: &str, timeout: Duration) -> anyhow::Result<()> {
    socket
        .write_all(format!("{text}\n").as_bytes())
        .context("sending --send text")?;
    socket.set_io_timeout(Some(timeout));
    say!("sent {} bytes; reply:", text.len() + 1);
    let mut out = std::io::stdout();
    let mut buf = [0u8; 4096];
    loop {
        match socket.read(&mut buf) {
            Ok(0) => {
                say!("(server closed the connection with close_notify)");
                return Ok(());
            }
            Ok(n) => {
                out.write_all(&buf[..n])?;
                out.flush()?;
            }
            Err(tether::Error::Timeout(_)) => {
                say!("(no more data within {:.1} s)", timeout.as_secs_f64());
                return Ok(());
            }
            Err(e) => return Err(e).context("reading the reply"),
        }
    }
}
