//! `tether demo`: a self-contained tour.
//!
//! Makes a throwaway PKI in a temporary directory (a CA, a server certificate for localhost and
//! 127.0.0.1, a device certificate `device-1`), starts a tether echo server on 127.0.0.1 that
//! requires client certificates, connects mTLS clients over TLS 1.3 and TLS 1.2 (each twice, so
//! the second resumes), echoes data, shows that a client without a certificate is refused, prints
//! a report, and removes everything it made.

use std::net::{TcpListener, TcpStream};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use anyhow::{Context as _, bail};
use tether::net::StdClock;
use tether::socket::TlsSocket;
use tether::{ClientAuth, ClientConfig, Identity, ServerConfig, TlsVersion, Trust};
use tether_pki::{Ca, IssueOptions, KeyKind};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Keep the temporary PKI directory instead of removing it (its path is printed).
    #[arg(long)]
    keep: bool,
}

struct Row {
    client: String,
    version: String,
    suite: String,
    group: String,
    handshake_ms: f64,
    resumed: bool,
    echo: String,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let dir = tempfile::Builder::new()
        .prefix("tether-demo-")
        .tempdir()
        .context("cannot make a temporary directory")?;
    say!("tether demo");
    say!("  PKI            {} (throwaway)", dir.path().display());

    // The PKI, made by the same library `tether pki` uses.
    let ca = Ca::init(KeyKind::EcdsaP256, "tether demo CA")?;
    let opts = IssueOptions::default();
    let server = ca.issue_server(&["localhost".into(), "127.0.0.1".into()], &opts)?;
    let device = ca.issue_client("device-1", &opts)?;
    let pki = tether_pki::Dir::new(dir.path());
    pki.write_ca(&ca, false)?;
    pki.write_issued(&pki.server_paths(None)?, &server, false)?;
    pki.write_issued(&pki.client_paths("device-1")?, &device, false)?;

    let ca_trust = Trust::from_pem(ca.cert_pem().as_bytes())?;
    let server_config = ServerConfig::builder(Identity::from_pem(
        server.cert_pem.as_bytes(),
        server.key_pem.as_bytes(),
    )?)
    .client_auth(ClientAuth::Required(ca_trust.clone()))
    .handshake_timeout(Duration::from_secs(5))
    .build()?;

    let listener = TcpListener::bind("127.0.0.1:0").context("cannot listen on 127.0.0.1")?;
    let addr = listener.local_addr()?;
    say!("  server         {addr} (tether, mTLS required, echo)");
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let server_thread = {
        let (seen, stop) = (seen.clone(), stop.clone());
        thread::spawn(move || serve(listener, server_config, seen, stop))
    };

    let device_id = Identity::from_pem(device.cert_pem.as_bytes(), device.key_pem.as_bytes())?;
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    for version in [TlsVersion::Tls13, TlsVersion::Tls12] {
        let config = ClientConfig::builder(ca_trust.clone())
            .identity(device_id.clone())
            .versions(version, version)
            .handshake_timeout(Duration::from_secs(5))
            .build()?;
        for attempt in 0..2 {
            match client_round(&addr.to_string(), &config) {
                Ok(row) => {
                    if attempt == 1 && !row.resumed {
                        failures.push(format!("{version}: the second connection did not resume"));
                    }
                    rows.push(row);
                }
                Err(e) => failures.push(format!("{version}: {e:#}")),
            }
        }
    }

    // Strict by default: a client without a certificate is refused.
    let anonymous = ClientConfig::builder(ca_trust)
        .handshake_timeout(Duration::from_secs(5))
        .build()?;
    let refused = match tether::net::connect(&addr.to_string(), &anonymous).and_then(|mut s| {
        // TLS 1.3 servers reject the client's certificate after the client's handshake is
        // complete: the refusal arrives on the first read.
        s.write_all(b"hello?\n")?;
        let mut b = [0u8; 16];
        s.read(&mut b).map(|_| ())
    }) {
        Ok(()) => {
            failures.push("a client without a certificate was accepted".into());
            "ACCEPTED (bug)".to_string()
        }
        Err(e) => format!("refused: {e}"),
    };

    stop.store(true, Ordering::SeqCst);
    // Wake the accept loop.
    let _ = TcpStream::connect(addr);
    let _ = server_thread.join();

    say!();
    say!(
        "  {:<9} {:<8} {:<46} {:<10} {:>10} {:<8} echo",
        "client",
        "version",
        "cipher suite",
        "group",
        "handshake",
        "resumed"
    );
    for r in &rows {
        say!(
            "  {:<9} {:<8} {:<46} {:<10} {:>7.2} ms {:<8} {}",
            r.client,
            r.version,
            r.suite,
            r.group,
            r.handshake_ms,
            if r.resumed { "yes" } else { "no" },
            r.echo
        );
    }
    say!("  {:<9} {refused}", "anonymous");
    let seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
    say!();
    say!("  server saw     {}", seen.join(", "));

    if args.keep {
        let kept = dir.keep();
        say!("  PKI kept in    {}", kept.display());
    } else {
        dir.close().context("cannot remove the temporary PKI")?;
        say!("  PKI removed");
    }
    if !failures.is_empty() {
        bail!("demo failed: {}", failures.join("; "));
    }
    say!("demo OK");
    Ok(ExitCode::SUCCESS)
}

fn client_round(addr: &str, config: &ClientConfig) -> anyhow::Result<Row> {
    let mut socket = tether::net::connect_named(addr, "localhost", config)?;
    let message = b"hello from device-1\n";
    socket.write_all(message)?;
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    while got.len() < message.len() {
        let n = socket.read(&mut buf)?;
        if n == 0 {
            bail!("the server closed before echoing");
        }
        got.extend_from_slice(&buf[..n]);
    }
    if got != message {
        bail!("echo mismatch: sent {message:?}, got {got:?}");
    }
    socket.close()?;
    let s = socket.session();
    Ok(Row {
        client: "device-1".into(),
        version: s.version().map_or("?".into(), |v| v.to_string()),
        suite: s.cipher_suite().map_or("?".into(), |c| format!("{c:?}")),
        group: s.kx_group().map_or("-".into(), |g| format!("{g:?}")),
        handshake_ms: s.handshake_duration().unwrap_or_default().as_secs_f64() * 1e3,
        resumed: s.is_resumed(),
        echo: format!("ok ({} bytes)", got.len()),
    })
}

fn serve(
    listener: TcpListener,
    config: ServerConfig,
    seen: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
) {
    let mut workers = Vec::new();
    for stream in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = stream else { continue };
        let (config, seen) = (config.clone(), seen.clone());
        workers.push(thread::spawn(move || {
            let outcome = echo_connection(stream, &config);
            if let Ok(mut s) = seen.lock() {
                s.push(outcome);
            }
        }));
    }
    for w in workers {
        let _ = w.join();
    }
}

/// Echoes one connection; returns what happened, for the report.
fn echo_connection(stream: TcpStream, config: &ServerConfig) -> String {
    let mut socket = match TlsSocket::server(stream, config, StdClock::new()) {
        Ok(s) => s,
        Err(e) => return format!("error: {e}"),
    };
    if let Err(e) = socket.handshake() {
        return format!("refused ({})", e.category());
    }
    let who = socket
        .session()
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(|c| tether_pki::describe(c.as_ref()).ok())
        .map_or("unknown".into(), |i| i.subject);
    let mut buf = [0u8; 4096];
    loop {
        match socket.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if socket.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e) => return format!("{who}: {}", e.category()),
        }
    }
    let _ = socket.close();
    who
}
