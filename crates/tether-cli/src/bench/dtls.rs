//! `tether bench dtls`: DTLS echo round trips, record rate and handshakes against a DTLS server
//! that echoes (the gateway's DTLS listener, or any DTLS echo server such as `openssl s_server
//! -dtls1_2` with its output looped back to its input).
//!
//! Three measurements, each for `--duration` seconds with `--connections` client threads (one
//! DTLS session each; tether's blocking `DtlsSocket` over a connected UDP socket, which sends
//! in GSO batches and receives GRO batches with `--udp gso`, the default, or makes one system
//! call per datagram with `--udp plain`: `udp.rs`):
//!
//! - `handshakes`: full handshakes per second (each: a new UDP socket, the cookie exchange,
//!   the handshake, close_notify);
//! - `echo`: ECHO round trips per second, one frame in flight per session (`--echo-size`
//!   bytes of body, default 64), with latency percentiles;
//! - `records`: `--size`-byte records (default 1,200: one ECHO frame per record) per second,
//!   `--window` of them in flight per session; a record counts when its echo has come back.
//!
//! A request is an ECHO frame of tether's frame protocol; its reply must be the same bytes (an
//! ECHO reply is the request itself), so a raw echo server answers it as the gateway does.
//! Replies are decoded as a byte stream (a server may merge or split records). DTLS may lose
//! records: a session that waits longer than `--timeout` (default 1 s) for a reply counts the
//! records in flight as lost and sends again.
//!
//! With `--measure-pid PID` the server's CPU time (from /proc) is sampled around each
//! measurement: the figures per second of server CPU ("per core") are what compares servers
//! fairly on a shared machine.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};
use tether::dtls::{self, DtlsSocket, DtlsVersion};
use tether::net::StdClock;
use tether::{Identity, TlsVersion, Trust};
use tether_wire::{Decoder, Frame, FrameType};

use super::procfs::{self, Group};
use super::report::{self, Latencies, Table, round};
use super::udp::{BenchUdp, UdpMode};
use super::{Common, read};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    common: Common,
    /// Measurements to run, comma-separated [default: handshakes,echo,records].
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_parser = parse_phase)]
    phases: Vec<Phase>,
    /// Bytes per record in the record-rate measurement (an ECHO frame: 8-byte header and
    /// body) [default: 1200].
    #[arg(long, value_name = "BYTES", value_parser = parse_size)]
    size: Option<usize>,
    /// Records in flight per session in the record-rate measurement [default: 16].
    #[arg(long, value_name = "N", value_parser = super::parse_count)]
    window: Option<usize>,
    /// ECHO body bytes in the round-trip measurement [default: 64].
    #[arg(long, value_name = "BYTES", value_parser = parse_size)]
    echo_size: Option<usize>,
    /// How the client moves datagrams: `gso` queues its sends into one GSO system call and
    /// takes the server's GSO batches whole (GRO), as a QUIC stack does on Linux; `plain` makes
    /// one system call per datagram.
    #[arg(long, value_name = "MODE", value_enum, default_value_t = UdpMode::Gso)]
    udp: UdpMode,
}

/// The client's DTLS socket.
type BenchSocket = DtlsSocket<BenchUdp, StdClock>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Handshakes,
    Echo,
    Records,
}

fn parse_phase(s: &str) -> Result<Phase, String> {
    match s.trim() {
        "handshakes" => Ok(Phase::Handshakes),
        "echo" => Ok(Phase::Echo),
        "records" => Ok(Phase::Records),
        _ => Err(format!(
            "{s:?} is not a measurement: use handshakes, echo or records"
        )),
    }
}

fn parse_size(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (8..=1363).contains(&n) => Ok(n),
        _ => Err(format!(
            "{s:?} is not a record size from 8 to 1363 bytes (one frame in one DTLS record \
             within the default MTU of 1400)"
        )),
    }
}

struct Setup {
    target: String,
    addrs: Vec<std::net::SocketAddr>,
    udp: UdpMode,
    name: String,
    config: dtls::ClientConfig,
    connections: usize,
    duration: Duration,
    timeout: Duration,
    server: Option<Group>,
    /// The probe session, kept open for the first measured session (a server that serves one
    /// session per process, such as `openssl s_server -dtls1_2`, then serves exactly one).
    spare: std::sync::Mutex<Option<BenchSocket>>,
}

impl Setup {
    /// Connects to the first of the target's addresses that completes a handshake.
    fn connect(&self) -> Result<BenchSocket, tether::Error> {
        let mut last = None;
        for &a in &self.addrs {
            let udp = BenchUdp::connect(a, self.udp).map_err(|e| {
                tether::Error::Transport(tether::error::TransportError::Other(format!(
                    "cannot open a UDP socket to {a}: {e}"
                )))
            });
            match udp
                .and_then(|u| DtlsSocket::connect(u, &self.config, &self.name, StdClock::new()))
            {
                Ok(mut s) => {
                    s.set_io_timeout(Some(self.timeout));
                    return Ok(s);
                }
                Err(e @ (tether::Error::Transport(_) | tether::Error::Timeout(_))) => {
                    last = Some(e)
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            tether::Error::Transport(tether::error::TransportError::Other(format!(
                "{} resolved to no address",
                self.target
            )))
        }))
    }
}

pub fn run(args: Args) -> anyhow::Result<std::process::ExitCode> {
    let c = &args.common;
    let Some(target) = c.target.clone() else {
        bail!("tether bench dtls needs --target HOST:PORT (the server's DTLS address, UDP)");
    };
    c.tls_only_flags_absent("dtls")?;
    let Some(ca) = &c.ca else {
        bail!("tether bench dtls needs --ca FILE (the CA that issued the server's certificate)");
    };
    let host = match target.rsplit_once(':') {
        Some((h, _)) => h.trim_start_matches('[').trim_end_matches(']').to_owned(),
        None => bail!("--target {target:?} is not HOST:PORT"),
    };
    let name = c.sni.clone().unwrap_or(host);
    let trust =
        Trust::from_pem(&read(ca, "CA")?).with_context(|| format!("--ca {}", ca.display()))?;
    let timeout = c.timeout.unwrap_or(Duration::from_secs(1));
    let mut builder = dtls::ClientConfig::builder(trust)
        .handshake_timeout(Duration::from_secs(10))
        .retransmission(Duration::from_millis(200), 6);
    let version = c.tls.map(|v| match v {
        TlsVersion::Tls12 => DtlsVersion::Dtls12,
        _ => DtlsVersion::Dtls13,
    });
    if let Some(v) = version {
        builder = builder.versions(v, v);
    }
    match (&c.cert, &c.key) {
        (Some(cert), Some(key)) => {
            let id = Identity::from_pem(&read(cert, "certificate")?, &read(key, "key")?)
                .with_context(|| format!("--cert {} --key {}", cert.display(), key.display()))?;
            builder = builder.identity(id);
        }
        (None, None) => {}
        (Some(_), None) => bail!("--cert needs --key (the certificate's private key)"),
        (None, Some(_)) => bail!("--key needs --cert (the client certificate chain)"),
    }
    let config = builder.build().context("client DTLS config")?;
    let addrs: Vec<std::net::SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs(&target)
        .with_context(|| format!("cannot resolve --target {target}"))?
        .collect();
    let setup = Setup {
        target: target.clone(),
        addrs,
        udp: args.udp,
        name,
        config,
        connections: c.connections.unwrap_or(1),
        duration: c.duration.unwrap_or(Duration::from_secs(10)),
        timeout,
        server: Group::new(&c.measure_pid)?,
        spare: std::sync::Mutex::new(None),
    };
    // One session first: one clear error when the target, certificates or policy do not work.
    let probe = setup
        .connect()
        .map_err(|e| anyhow::anyhow!("cannot complete a DTLS session with {target}: {e}"))?;
    let negotiated = probe
        .session()
        .version()
        .map(|v| v.to_string())
        .unwrap_or_default();
    let suite = probe
        .session()
        .cipher_suite()
        .and_then(|s| s.as_str())
        .unwrap_or("unknown")
        .to_owned();
    if let Ok(mut spare) = setup.spare.lock() {
        *spare = Some(probe);
    }

    let phases = if args.phases.is_empty() {
        vec![Phase::Handshakes, Phase::Echo, Phase::Records]
    } else {
        args.phases.clone()
    };
    let mut table = Table::default();
    table.row("target", &format!("{target} ({negotiated}, {suite})"));
    table.row(
        "sessions",
        &format!(
            "{} client thread(s), {} s per measurement",
            setup.connections,
            setup.duration.as_secs_f64()
        ),
    );
    table.row(
        "client UDP",
        match setup.udp {
            UdpMode::Gso => "GSO batches out, GRO in",
            UdpMode::Plain => "one system call per datagram",
        },
    );
    let mut out = json!({
        "target": target,
        "dtls_version": negotiated,
        "cipher_suite": suite,
        "connections": setup.connections,
        "duration_s": setup.duration.as_secs_f64(),
        "client_udp": match setup.udp {
            UdpMode::Gso => "gso",
            UdpMode::Plain => "plain",
        },
    });
    for phase in phases {
        let (key, v) = match phase {
            Phase::Handshakes => ("handshakes", handshakes(&setup, &mut table)?),
            Phase::Echo => (
                "echo",
                echo(&setup, args.echo_size.unwrap_or(64) - 8, &mut table)?,
            ),
            Phase::Records => (
                "records",
                records(
                    &setup,
                    args.size.unwrap_or(1200),
                    args.window.unwrap_or(16),
                    &mut table,
                )?,
            ),
        };
        out[key] = v;
    }
    if let Some(mut s) = setup.spare.lock().ok().and_then(|mut s| s.take()) {
        let _ = s.close();
    }
    table.print("tether bench dtls");
    report::write_json(c.json.as_deref(), &out)?;
    Ok(std::process::ExitCode::SUCCESS)
}

/// Samples around one measurement: the server's CPU and the client's.
struct Meter {
    server_before: Option<procfs::GroupSample>,
    client_ticks: u64,
    start: Instant,
}

impl Meter {
    fn start(setup: &Setup) -> anyhow::Result<Meter> {
        Ok(Meter {
            server_before: setup.server.as_ref().map(Group::sample).transpose()?,
            client_ticks: procfs::self_cpu_ticks(),
            start: Instant::now(),
        })
    }

    /// The JSON of the measurement: rate, server CPU per op and ops per server CPU second.
    fn finish(
        self,
        setup: &Setup,
        ops: u64,
        per: &str,
        table: &mut Table,
        label: &str,
    ) -> anyhow::Result<Value> {
        let wall = self.start.elapsed().as_secs_f64();
        let client_cpu = procfs::cpu_seconds(self.client_ticks, procfs::self_cpu_ticks());
        let rate = ops as f64 / wall;
        let mut v = json!({
            "count": ops,
            "wall_s": round(wall, 3),
            "per_second": round(rate, 1),
            "client": report::client_json(setup.connections, client_cpu, wall, ops, per),
        });
        let mut line = format!("{} /s ({ops} in {wall:.1} s)", round(rate, 0));
        if let (Some(group), Some(before)) = (&setup.server, &self.server_before) {
            let after = group.sample()?;
            let server = procfs::delta_json(group, before, &after, ops, per);
            let cpu = procfs::cpu_seconds(before.cpu_ticks, after.cpu_ticks);
            if cpu > 0.0 {
                let per_core = ops as f64 / cpu;
                v["per_server_cpu_second"] = json!(round(per_core, 1));
                line.push_str(&format!(
                    "; server {:.0} µs CPU each, {} per core-second",
                    cpu * 1e6 / ops.max(1) as f64,
                    round(per_core, 0)
                ));
            }
            v["server"] = server;
        }
        table.row(label, &line);
        Ok(v)
    }
}

fn handshakes(setup: &Setup, table: &mut Table) -> anyhow::Result<Value> {
    if let Some(mut s) = setup.spare.lock().ok().and_then(|mut s| s.take()) {
        let _ = s.close();
    }
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let meter = Meter::start(setup)?;
    let end = Instant::now() + setup.duration;
    std::thread::scope(|scope| {
        for _ in 0..setup.connections {
            let (done, failed) = (done.clone(), failed.clone());
            scope.spawn(move || {
                while Instant::now() < end {
                    match setup.connect() {
                        Ok(mut s) => {
                            let _ = s.close();
                            done.fetch_add(1, Relaxed);
                        }
                        Err(_) => {
                            failed.fetch_add(1, Relaxed);
                        }
                    }
                }
            });
        }
    });
    let mut v = meter.finish(setup, done.load(Relaxed), "handshake", table, "handshakes")?;
    v["failed"] = json!(failed.load(Relaxed));
    Ok(v)
}

/// Opens one session per client thread, then runs `f` on each from the same instant until
/// the deadline; the meter covers only that part.
fn with_sessions<T: Send>(
    setup: &Setup,
    f: impl Fn(&mut BenchSocket, usize, Instant) -> T + Sync,
) -> anyhow::Result<(Vec<T>, Meter)> {
    let mut socks = Vec::new();
    if let Some(s) = setup.spare.lock().ok().and_then(|mut s| s.take()) {
        socks.push(s);
    }
    while socks.len() < setup.connections {
        socks.push(setup.connect().context("opening the measured sessions")?);
    }
    let barrier = Barrier::new(setup.connections + 1);
    let meter_slot = std::sync::Mutex::new(None);
    let results = std::thread::scope(|scope| {
        let handles: Vec<_> = socks
            .iter_mut()
            .enumerate()
            .map(|(i, s)| {
                let (barrier, f) = (&barrier, &f);
                scope.spawn(move || {
                    barrier.wait();
                    let r = f(s, i, Instant::now() + setup.duration);
                    let _ = s.close();
                    r
                })
            })
            .collect();
        if let Ok(mut m) = meter_slot.lock() {
            *m = Some(Meter::start(setup));
        }
        barrier.wait();
        handles
            .into_iter()
            .map(|h| h.join().expect("a client thread panicked"))
            .collect::<Vec<T>>()
    });
    let meter = meter_slot
        .into_inner()
        .ok()
        .flatten()
        .context("no meter")??;
    Ok((results, meter))
}

/// What one session's loop saw.
#[derive(Default)]
struct Seen {
    ok: u64,
    lost: u64,
    wrong: u64,
    latency: Latencies,
}

fn echo(setup: &Setup, body: usize, table: &mut Table) -> anyhow::Result<Value> {
    let stop = AtomicBool::new(false);
    let (seen, meter) = with_sessions(setup, |s, i, end| {
        let mut seen = Seen::default();
        let request = Frame::new(
            FrameType::Echo,
            (0..body).map(|k| (k * 7 + i) as u8).collect::<Vec<u8>>(),
        )
        .to_vec();
        let mut decoder = Decoder::default();
        let mut buf = vec![0u8; 16 * 1024];
        while Instant::now() < end && !stop.load(Relaxed) {
            let sent = Instant::now();
            if s.send(&request).is_err() {
                seen.lost += 1;
                continue;
            }
            loop {
                match s.recv(&mut buf) {
                    Ok(0) => return seen,
                    Ok(n) => {
                        decoder.push(&buf[..n]);
                        match decoder.next_frame() {
                            Ok(Some(f)) => {
                                if f.to_vec() == request {
                                    seen.ok += 1;
                                    seen.latency.record(sent.elapsed());
                                } else {
                                    seen.wrong += 1;
                                }
                                break;
                            }
                            Ok(None) => {}
                            Err(_) => {
                                seen.wrong += 1;
                                decoder = Decoder::default();
                                break;
                            }
                        }
                    }
                    Err(tether::Error::Timeout(_)) => {
                        seen.lost += 1;
                        decoder = Decoder::default();
                        break;
                    }
                    Err(_) => {
                        stop.store(true, Relaxed);
                        return seen;
                    }
                }
            }
        }
        seen
    })?;
    let mut total = Seen::default();
    for s in seen {
        total.ok += s.ok;
        total.lost += s.lost;
        total.wrong += s.wrong;
        total.latency.merge(s.latency);
    }
    let mut v = meter.finish(setup, total.ok, "round_trip", table, "echo round trips")?;
    let summary = total.latency.summary();
    table.row("echo latency", &summary.line());
    v["latency_us"] = summary.json();
    v["lost"] = json!(total.lost);
    v["wrong"] = json!(total.wrong);
    v["frame_bytes"] = json!(body + 8);
    if total.wrong > 0 {
        table.row("echo errors", &format!("{} wrong replies", total.wrong));
    }
    Ok(v)
}

fn records(setup: &Setup, size: usize, window: usize, table: &mut Table) -> anyhow::Result<Value> {
    let (seen, meter) = with_sessions(setup, |s, i, end| {
        let mut seen = Seen::default();
        let request = Frame::new(
            FrameType::Echo,
            (0..size - 8)
                .map(|k| (k * 13 + i) as u8)
                .collect::<Vec<u8>>(),
        )
        .to_vec();
        let mut decoder = Decoder::default();
        let mut buf = vec![0u8; 64 * 1024];
        let mut in_flight = 0usize;
        loop {
            let sending = Instant::now() < end;
            while sending && in_flight < window {
                if s.send(&request).is_err() {
                    return seen;
                }
                in_flight += 1;
            }
            if in_flight == 0 {
                return seen;
            }
            match s.recv(&mut buf) {
                Ok(0) => return seen,
                Ok(n) => {
                    decoder.push(&buf[..n]);
                    loop {
                        match decoder.next_frame() {
                            Ok(Some(f)) => {
                                in_flight = in_flight.saturating_sub(1);
                                if f.to_vec() == request {
                                    seen.ok += 1;
                                } else {
                                    seen.wrong += 1;
                                }
                            }
                            Ok(None) => break,
                            Err(_) => {
                                seen.wrong += 1;
                                decoder = Decoder::default();
                                break;
                            }
                        }
                    }
                }
                Err(tether::Error::Timeout(_)) => {
                    // Lost on the way (either way): count and refill.
                    seen.lost += in_flight as u64;
                    in_flight = 0;
                    decoder = Decoder::default();
                }
                Err(_) => return seen,
            }
        }
    })?;
    let mut total = Seen::default();
    for s in seen {
        total.ok += s.ok;
        total.lost += s.lost;
        total.wrong += s.wrong;
    }
    let mut v = meter.finish(
        setup,
        total.ok,
        "record",
        table,
        &format!("{size}-byte records"),
    )?;
    v["record_bytes"] = json!(size);
    v["window"] = json!(window);
    v["lost"] = json!(total.lost);
    v["wrong"] = json!(total.wrong);
    if let Some(r) = v["per_second"].as_f64() {
        v["payload_mb_per_second_each_way"] = json!(round(r * size as f64 / 1e6, 2));
    }
    if total.lost + total.wrong > 0 {
        table.row(
            "record errors",
            &format!("{} lost, {} wrong", total.lost, total.wrong),
        );
    }
    Ok(v)
}
