//! A device that keeps its link to the gateway: the emulated device of the device↔gateway
//! system, on tether.
//!
//! It reads its gateway endpoint from a provisioning blob (a u32 little-endian length, then
//! UTF-8 `host:port`, as `tether provision` writes it into the device's memory) or from
//! `--endpoint`, connects with mutual TLS, and sends ECHO frames to `tether serve`. When the
//! link fails (gateway restart, network loss) it reconnects with exponential backoff and
//! jitter, offering the ticket of its last session, so a gateway that restarted with the same
//! ticket keys resumes it; the frame that was in flight is sent again on the new link.
//!
//! ```text
//! tether serve --cert server.pem --key server.key --ca ca.pem --ticket-keys tickets.key
//! cargo run -p tether-cli --example device_link -- --endpoint 127.0.0.1:8081 \
//!     --ca ca.pem --cert device-1.pem --key device-1.key --server-name localhost --frames 100
//! ```
//!
//! Output, one line per event: `connected: connection N to ADDR (TLSv1.3, resumed: yes|no)`,
//! `frame I: echoed`, `link lost: ERROR (reconnecting)`, and at the end
//! `done: F frames echoed over C connection(s), R resumed`. Exit status 0 when every frame was
//! echoed, 1 on an error a reconnect cannot cure (a rejected certificate, say), 2 on bad usage.

use std::process::ExitCode;
use std::time::Duration;

use tether::reconnect::Reconnecting;
use tether::{ClientConfig, Error, Identity, Trust};
use tether_wire::{Decoder, Frame, FrameType};

const USAGE: &str = "usage: device_link (--endpoint HOST:PORT | --blob FILE) --ca FILE --cert FILE \
--key FILE [--server-name NAME] [--frames N] [--interval-ms MS] [--backoff-ms INITIAL:MAX] \
[--max-attempts N]";

#[derive(Debug)]
struct Opts {
    endpoint: String,
    ca: String,
    cert: String,
    key: String,
    server_name: Option<String>,
    frames: u32,
    interval: Duration,
    backoff: (Duration, Duration),
    max_attempts: Option<u32>,
}

fn parse() -> Result<Opts, String> {
    let mut args = std::env::args().skip(1);
    let (mut endpoint, mut ca, mut cert, mut key) = (None, None, None, None);
    let mut opts = Opts {
        endpoint: String::new(),
        ca: String::new(),
        cert: String::new(),
        key: String::new(),
        server_name: None,
        frames: 10,
        interval: Duration::from_millis(100),
        backoff: (Duration::from_millis(100), Duration::from_secs(5)),
        max_attempts: None,
    };
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--endpoint" => endpoint = Some(value()?),
            "--blob" => {
                let path = value()?;
                let blob =
                    std::fs::read(&path).map_err(|e| format!("cannot read blob {path}: {e}"))?;
                endpoint =
                    Some(endpoint_from_blob(&blob).map_err(|e| format!("blob {path}: {e}"))?);
            }
            "--ca" => ca = Some(value()?),
            "--cert" => cert = Some(value()?),
            "--key" => key = Some(value()?),
            "--server-name" => opts.server_name = Some(value()?),
            "--frames" => {
                opts.frames = value()?
                    .parse()
                    .map_err(|_| "--frames needs a whole number".to_owned())?
            }
            "--interval-ms" => {
                opts.interval = Duration::from_millis(
                    value()?
                        .parse()
                        .map_err(|_| "--interval-ms needs a whole number".to_owned())?,
                )
            }
            "--backoff-ms" => {
                let v = value()?;
                let (a, b) = v
                    .split_once(':')
                    .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
                    .ok_or_else(|| format!("--backoff-ms {v:?}: expected INITIAL:MAX in ms"))?;
                opts.backoff = (Duration::from_millis(a), Duration::from_millis(b));
            }
            "--max-attempts" => {
                opts.max_attempts = Some(
                    value()?
                        .parse()
                        .map_err(|_| "--max-attempts needs a whole number".to_owned())?,
                )
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    opts.endpoint = endpoint.ok_or("give --endpoint HOST:PORT or --blob FILE")?;
    opts.ca = ca.ok_or("give --ca FILE (the gateway's CA)")?;
    opts.cert = cert.ok_or("give --cert FILE (the device certificate)")?;
    opts.key = key.ok_or("give --key FILE (the device key)")?;
    Ok(opts)
}

/// The endpoint in a provisioning blob (see `tether::provision`).
fn endpoint_from_blob(blob: &[u8]) -> Result<String, tether::provision::ProvisionError> {
    let endpoint = tether::provision::read_endpoint(blob)?;
    Ok(endpoint.to_string())
}

fn read_file(path: &str, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {what} {path}: {e}"))
}

fn config(opts: &Opts) -> Result<ClientConfig, String> {
    let trust = Trust::from_pem(&read_file(&opts.ca, "CA")?).map_err(|e| e.to_string())?;
    let identity = Identity::from_pem(
        &read_file(&opts.cert, "certificate")?,
        &read_file(&opts.key, "key")?,
    )
    .map_err(|e| e.to_string())?;
    ClientConfig::builder(trust)
        .identity(identity)
        .handshake_timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())
}

/// One ECHO exchange: the frame out, its reply in (checked).
fn echo(socket: &mut tether::net::TcpTlsSocket, body: &[u8]) -> Result<(), Error> {
    let mut out = Vec::new();
    Frame::new(FrameType::Echo, body.to_vec()).encode_into(&mut out);
    socket.write_all(&out)?;
    let mut decoder = Decoder::new(64 * 1024);
    let mut buf = [0u8; 4096];
    loop {
        if let Some(frame) = decoder
            .next_frame()
            .map_err(|e| Error::Protocol(format!("bad frame from the gateway: {e}")))?
        {
            if frame.kind == FrameType::Echo && frame.body == body {
                return Ok(());
            }
            return Err(Error::Protocol(format!(
                "unexpected reply: type {} with {} bytes",
                frame.kind.code(),
                frame.body.len()
            )));
        }
        let n = socket.read(&mut buf)?;
        if n == 0 {
            return Err(Error::Closed);
        }
        decoder.push(&buf[..n]);
    }
}

fn main() -> ExitCode {
    let opts = match parse() {
        Ok(o) => o,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("error: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let config = match config(&opts) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let mut link = match Reconnecting::new(&opts.endpoint, config) {
        Ok(l) => l
            .backoff(opts.backoff.0, opts.backoff.1)
            .io_timeout(Duration::from_secs(10)),
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(name) = &opts.server_name {
        link = link.server_name(name);
    }
    if let Some(n) = opts.max_attempts {
        link = link.max_attempts(n);
    }

    let mut seen_connects = 0;
    let mut seen_failures = 0;
    for i in 1..=opts.frames {
        let body = format!("frame {i} from the device");
        let result = link.call(|socket| echo(socket, body.as_bytes()));
        let stats = link.stats().clone();
        if stats.failures > seen_failures {
            if let Some(e) = &stats.last_error {
                println!("link lost: {e} (reconnecting)");
            }
            seen_failures = stats.failures;
        }
        if stats.connects > seen_connects {
            seen_connects = stats.connects;
            println!(
                "connected: connection {} to {} (resumed: {})",
                stats.connects,
                opts.endpoint,
                if stats.last_resumed { "yes" } else { "no" }
            );
        }
        if let Err(e) = result {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
        println!("frame {i}: echoed");
        std::thread::sleep(opts.interval);
    }
    let _ = link.disconnect();
    let stats = link.stats();
    println!(
        "done: {} frames echoed over {} connection(s), {} resumed",
        opts.frames, stats.connects, stats.resumed
    );
    ExitCode::SUCCESS
}
