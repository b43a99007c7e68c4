//! `tether bench handshakes`: full or resumed handshakes per second.
//!
//! `--concurrency` tasks each loop until `--duration` has passed (or `--connections`
//! handshakes were started): TCP connect, TLS handshake, close_notify, FIN, read until the
//! server closes (so that TLS 1.3 tickets are received and stored), close. With `--resume` the
//! client config keeps a session cache (primed by a warm-up handshake) and every handshake
//! checks `is_resumed()`. `--plain` leaves TLS out (TCP connect and close only): the floor,
//! against `tether bench tcp-echo-server`; `--plain-echo BYTES` adds one message and its echo
//! (what the kernel charges for a connection that carries data, as a handshake's does).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::client::{Conn, Failure, tcp_connect};
use super::procfs::{self, Group};
use super::report::{self, Errors, Latencies, Table, round};
use super::{Common, Plan, PlanOptions};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    common: Common,
    /// Resumed handshakes: keep a session cache (the first, warm-up handshake is full).
    #[arg(long)]
    resume: bool,
    /// Handshakes in flight at once [default: 8].
    #[arg(long, value_name = "N", value_parser = super::parse_count)]
    concurrency: Option<usize>,
    /// Plain TCP, no TLS: connect, FIN, wait for the server's FIN, close (the kernel's floor).
    #[arg(long, conflicts_with_all = ["resume", "ca", "cert", "key", "tls", "kx", "crypto"])]
    plain: bool,
    /// With --plain: send this many bytes once connected and wait for their echo before the
    /// FIN (a connection that carries data, as a handshake's does).
    #[arg(long, value_name = "BYTES", requires = "plain", value_parser = clap::value_parser!(u16).range(1..))]
    plain_echo: Option<u16>,
}

/// What one connection found.
struct Done {
    handshake: Duration,
    resumed: bool,
    clean_close: bool,
    negotiated: Option<(String, String, String)>,
}

#[derive(Default)]
struct Local {
    ok: u64,
    resumed: u64,
    unclean: u64,
    handshake: Latencies,
    connection: Latencies,
    errors: Errors,
    negotiated: Option<(String, String, String)>,
}

struct Shared {
    deadline: Instant,
    limit: Option<u64>,
    started: AtomicU64,
    ok: AtomicU64,
    failed: AtomicU64,
    /// `--plain-echo` bytes (0: none).
    echo: usize,
}

async fn one(
    plan: &Plan,
    source: Option<std::net::IpAddr>,
    describe: bool,
    echo: usize,
) -> Result<Done, Failure> {
    let t0 = Instant::now();
    if plan.config.is_none() {
        let mut tcp = tokio::time::timeout(plan.timeout, tcp_connect(plan.addr, source))
            .await
            .map_err(|_| Failure::new("timeout", "TCP connect timed out"))??;
        let handshake = t0.elapsed();
        if echo > 0 {
            let message = vec![0x5a; echo];
            let mut back = vec![0; echo];
            let exchange = async {
                tcp.write_all(&message).await?;
                tcp.read_exact(&mut back).await
            };
            match tokio::time::timeout(plan.timeout, exchange).await {
                Err(_) => return Err(Failure::new("timeout", "the echo timed out")),
                Ok(Err(e)) => return Err(Failure::io("echo", &e)),
                Ok(Ok(_)) if back != message => {
                    return Err(Failure::new(
                        "protocol",
                        "the echo differs from what was sent",
                    ));
                }
                Ok(Ok(_)) => {}
            }
        }
        let _ = tcp.shutdown().await;
        let mut sink = [0u8; 256];
        let clean = matches!(
            tokio::time::timeout(plan.timeout, tcp.read(&mut sink)).await,
            Ok(Ok(0))
        );
        return Ok(Done {
            handshake,
            resumed: false,
            clean_close: clean,
            negotiated: None,
        });
    }
    let conn = Conn::open(plan, source).await?;
    let handshake = t0.elapsed();
    let s = conn.session();
    let resumed = s.is_resumed();
    let negotiated = describe.then(|| super::client::describe(s));
    let clean_close = match conn.close().await {
        Ok(()) => true,
        // The server refused the session after the client's side of the handshake was done.
        Err(f) if f.category.starts_with("tls_") => return Err(f),
        Err(_) => false,
    };
    Ok(Done {
        handshake,
        resumed,
        clean_close,
        negotiated,
    })
}

async fn task(plan: Arc<Plan>, shared: Arc<Shared>, first: usize, step: usize) -> Local {
    let mut local = Local::default();
    let mut i = first;
    loop {
        if Instant::now() >= shared.deadline {
            break;
        }
        if let Some(limit) = shared.limit
            && shared.started.fetch_add(1, Relaxed) >= limit
        {
            break;
        }
        let t0 = Instant::now();
        let source = plan.source(i);
        i += step;
        match one(&plan, source, local.negotiated.is_none(), shared.echo).await {
            Ok(done) => {
                local.ok += 1;
                local.resumed += u64::from(done.resumed);
                local.unclean += u64::from(!done.clean_close);
                local.handshake.record(done.handshake);
                local.connection.record(t0.elapsed());
                if done.negotiated.is_some() {
                    local.negotiated = done.negotiated;
                }
                shared.ok.fetch_add(1, Relaxed);
            }
            Err(f) => {
                local.errors.add(&f);
                shared.failed.fetch_add(1, Relaxed);
                // A refused or failing target must not turn this into a busy loop.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
    local
}

pub fn run(args: Args) -> anyhow::Result<std::process::ExitCode> {
    let plan = Plan::new(
        &args.common,
        "handshakes",
        PlanOptions {
            resume: args.resume,
            plain: args.plain,
            default_sources: 0,
        },
    )?;
    let duration = args.common.duration.unwrap_or(Duration::from_secs(10));
    let concurrency = args.concurrency.unwrap_or(8);
    let echo = args.plain_echo.map_or(0, usize::from);
    let group = Group::new(&args.common.measure_pid)?;
    let runtime = plan.runtime()?;
    let plan = Arc::new(plan);

    // Warm-up: proves the target works (one clear error if not). With --resume each task is a
    // device with a session cache of its own (as real devices have; a shared cache would hold
    // too few tickets for many handshakes in flight), primed by one full handshake here.
    let (warm, plans) = runtime.block_on(async {
        let warm = one(&plan, plan.source(0), true, echo).await;
        let mut plans = Vec::new();
        for i in 0..concurrency {
            if args.resume && warm.is_ok() {
                let own = Arc::new(plan.with_own_cache());
                if let Err(f) = one(&own, own.source(i), false, echo).await {
                    return (Err(f), plans);
                }
                plans.push(own);
            } else {
                plans.push(plan.clone());
            }
        }
        (warm, plans)
    });
    let negotiated = match warm {
        Ok(d) => d.negotiated,
        Err(f) => bail!(
            "cannot complete a {} with {}: {f}",
            if plan.config.is_some() {
                "TLS handshake"
            } else {
                "TCP connection"
            },
            plan.target
        ),
    };

    let shared = Arc::new(Shared {
        deadline: Instant::now() + duration,
        limit: args.common.connections.map(|n| n as u64),
        started: AtomicU64::new(0),
        ok: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        echo,
    });
    let bar = report::progress(Some(duration.as_secs().max(1)), "handshakes");
    let before = group.as_ref().map(Group::sample).transpose()?;
    let self_before = procfs::self_cpu_ticks();
    let start = Instant::now();
    let (locals, elapsed) = runtime.block_on(async {
        let tasks: Vec<_> = (0..concurrency)
            .map(|i| tokio::spawn(task(plans[i].clone(), shared.clone(), i, concurrency)))
            .collect();
        let ticker = {
            let (shared, bar) = (shared.clone(), bar.clone());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    let secs = start.elapsed().as_secs_f64();
                    bar.set_position(secs as u64);
                    let ok = shared.ok.load(Relaxed);
                    bar.set_message(format!(
                        "{ok} ok ({:.0}/s), {} failed",
                        ok as f64 / secs.max(1e-3),
                        shared.failed.load(Relaxed)
                    ));
                }
            })
        };
        let mut locals = Vec::new();
        for t in tasks {
            locals.push(t.await.unwrap_or_default());
        }
        ticker.abort();
        (locals, start.elapsed())
    });
    let after = group.as_ref().map(Group::sample).transpose()?;
    let self_cpu = procfs::cpu_seconds(self_before, procfs::self_cpu_ticks());
    bar.finish_and_clear();

    let mut total = Local::default();
    for l in locals {
        total.ok += l.ok;
        total.resumed += l.resumed;
        total.unclean += l.unclean;
        total.handshake.merge(l.handshake);
        total.connection.merge(l.connection);
        total.errors.merge(l.errors);
    }
    let secs = elapsed.as_secs_f64();
    let rate = total.ok as f64 / secs;
    let hs = total.handshake.summary();
    let conn = total.connection.summary();
    let resumed_fraction = if total.ok > 0 {
        total.resumed as f64 / total.ok as f64
    } else {
        0.0
    };
    let kind = if plan.config.is_none() && echo > 0 {
        "plain TCP connections with one echo"
    } else if plan.config.is_none() {
        "plain TCP connections"
    } else if args.resume {
        "resumed handshakes"
    } else {
        "full handshakes"
    };
    let mut v = json!({
        "command": "handshakes",
        "target": plan.target,
        "server_name": plan.server_name,
        "tls": plan.tls_label(),
        "mtls": plan.mtls,
        "resume": args.resume,
        "plain": plan.config.is_none(),
        "plain_echo_bytes": echo,
        "concurrency": concurrency,
        "duration_s": round(secs, 3),
        "handshakes": total.ok,
        "handshakes_per_s": round(rate, 1),
        "resumed": total.resumed,
        "resumed_fraction": round(resumed_fraction, 4),
        "unclean_closes": total.unclean,
        "latency_us": hs.json(),
        "connection_us": conn.json(),
        "errors": total.errors.json(),
        "client": report::client_json(plan.threads, self_cpu, secs, total.ok, "handshake"),
    });
    if let Some((version, suite, group)) = &negotiated {
        v["negotiated"] = json!({"version": version, "cipher_suite": suite, "kx_group": group});
    }
    let mut table = Table::default();
    table.row(
        "handshakes",
        &format!("{} in {:.2} s: {:.1}/s", total.ok, secs, rate),
    );
    if args.resume {
        table.row(
            "resumed",
            &format!("{} ({:.1}%)", total.resumed, resumed_fraction * 100.0),
        );
    }
    table.row("handshake latency", &hs.line());
    table.row("whole connection", &conn.line());
    if let Some((version, suite, group)) = &negotiated {
        table.row("negotiated", &format!("{version}, {suite}, {group}"));
    }
    if total.unclean > 0 {
        table.row(
            "unclean closes",
            &format!(
                "{} (no close_notify + FIN from the server in time)",
                total.unclean
            ),
        );
    }
    total.errors.rows(&mut table);
    if let (Some(g), Some(b), Some(a)) = (&group, &before, &after) {
        let server = procfs::delta_json(g, b, a, total.ok, "handshake");
        let cpu = procfs::cpu_seconds(b.cpu_ticks, a.cpu_ticks);
        table.row(
            "server CPU",
            &format!(
                "{:.2} s ({:.0}% of one core): {:.0} µs per handshake",
                cpu,
                cpu / secs * 100.0,
                cpu * 1e6 / total.ok.max(1) as f64
            ),
        );
        table.row(
            "server RSS",
            &format!("{} KiB before, {} KiB after", b.rss_kib, a.rss_kib),
        );
        v["server"] = server;
    }
    table.row(
        "client CPU",
        &format!(
            "{:.2} s ({:.0}% of one core, {} threads): {:.0} µs per handshake",
            self_cpu,
            self_cpu / secs * 100.0,
            plan.threads,
            self_cpu * 1e6 / total.ok.max(1) as f64
        ),
    );
    table.print(&format!(
        "tether bench handshakes: {} ({}), {}, {}{}, {} at a time",
        plan.target,
        plan.server_name,
        plan.tls_label(),
        if plan.config.is_none() {
            ""
        } else if plan.mtls {
            "mTLS, "
        } else {
            "server-only TLS, "
        },
        kind,
        concurrency
    ));
    report::write_json(args.common.json.as_deref(), &v)?;
    Ok(if total.ok == 0 {
        std::process::ExitCode::FAILURE
    } else {
        std::process::ExitCode::SUCCESS
    })
}
