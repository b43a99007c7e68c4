//! `tether bench echo`: ECHO round trips under a load of N connections.
//!
//! N connections are opened first (64 handshakes in flight at a time), then all start together
//! and each sends ECHO frames of `--size` bytes for `--duration` seconds, one at a time, and
//! checks every reply (type and body). Without `--rate` each connection sends its next frame as
//! soon as the reply is in (closed loop); with `--rate R` the N connections together send R
//! frames per second on a fixed schedule, and a round trip is timed from the moment its frame
//! was due, so a server that falls behind shows it in the percentiles (no coordinated
//! omission).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::json;
use tether_wire::{Decoder, Frame, FrameType};
use tokio::sync::{Semaphore, watch};

use super::client::{Conn, Failure};
use super::procfs::{self, Group};
use super::report::{self, Errors, Latencies, Table, round};
use super::{Common, Plan, PlanOptions};

/// Handshakes in flight while the connections are opened.
const OPENING: usize = 64;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    common: Common,
    /// Frames per second over all connections [default: as fast as replies come back].
    #[arg(long, value_name = "R", value_parser = parse_rate)]
    rate: Option<f64>,
    /// ECHO body size in bytes [default: 64].
    #[arg(long, value_name = "BYTES", value_parser = parse_size)]
    size: Option<usize>,
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!(
            "{s:?} is not a positive number of frames per second"
        )),
    }
}

/// Largest body `--size` takes (the gateway's default limit is 65536).
const MAX_SIZE: usize = 16 * 1024 * 1024;

fn parse_size(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n <= MAX_SIZE => Ok(n),
        _ => Err(format!(
            "{s:?} is not a body size from 0 to {MAX_SIZE} bytes"
        )),
    }
}

#[derive(Default)]
struct Local {
    opened: bool,
    frames: u64,
    latency: Latencies,
    errors: Errors,
}

struct Counters {
    opened: AtomicU64,
    failed: AtomicU64,
    frames: AtomicU64,
    /// Connections done sending (they close after the measurement).
    finished: AtomicU64,
}

struct Job {
    plan: Arc<Plan>,
    counters: Arc<Counters>,
    opening: Arc<Semaphore>,
    start: watch::Receiver<Option<Instant>>,
    duration: Duration,
    /// Seconds between two frames of one connection (rate mode).
    interval: Option<f64>,
    size: usize,
}

async fn conn_task(mut job: Job, i: usize, n: usize) -> Local {
    let mut local = Local::default();
    let permit = job.opening.acquire().await;
    let opened = Conn::open(&job.plan, job.plan.source(i)).await;
    drop(permit);
    let mut conn = match opened {
        Ok(c) => c,
        Err(f) => {
            local.errors.add(&f);
            job.counters.failed.fetch_add(1, Relaxed);
            return local;
        }
    };
    local.opened = true;
    job.counters.opened.fetch_add(1, Relaxed);
    let start = loop {
        if let Some(t) = *job.start.borrow_and_update() {
            break t;
        }
        if job.start.changed().await.is_err() {
            return local;
        }
    };
    let body: Vec<u8> = (0..job.size).map(|k| (k * 31 + i) as u8).collect();
    let request = Frame::new(FrameType::Echo, body.clone()).to_vec();
    let mut decoder = Decoder::new(u32::try_from(job.size.max(64 * 1024)).unwrap_or(u32::MAX));
    let mut out = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    let end = start + job.duration;
    // Rate mode: connection i's frames are due at start + (i / n + k) * interval.
    let mut due = job
        .interval
        .map(|iv| start + Duration::from_secs_f64(iv * i as f64 / n as f64));
    'frames: loop {
        let sent_at = match due {
            Some(t) => {
                if t >= end {
                    break;
                }
                tokio::time::sleep_until(t.into()).await;
                t
            }
            None => {
                let t = Instant::now();
                if t >= end {
                    break;
                }
                t
            }
        };
        if let Err(f) = conn.send(&request, &mut out).await {
            local.errors.add(&f);
            break;
        }
        let reply = loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => break frame,
                Ok(None) => {}
                Err(e) => {
                    local.errors.add(&Failure::new(
                        "bad_reply",
                        format!("undecodable reply: {e}"),
                    ));
                    break 'frames;
                }
            }
            match conn.recv(&mut buf).await {
                Ok(0) => {
                    local.errors.add(&Failure::new(
                        "closed",
                        "the server closed the connection during the run",
                    ));
                    break 'frames;
                }
                Ok(n) => decoder.push(&buf[..n]),
                Err(f) => {
                    local.errors.add(&f);
                    break 'frames;
                }
            }
        };
        if reply.kind != FrameType::Echo || reply.body != body {
            let what = match reply.parse_error() {
                Some((code, text)) => format!("ERROR frame {code:?}: {text}"),
                None => format!(
                    "reply of type {:?} with {} bytes, not the ECHO of {} bytes sent",
                    reply.kind,
                    reply.body.len(),
                    body.len()
                ),
            };
            local.errors.add(&Failure::new("bad_reply", what));
            break;
        }
        local.latency.record(sent_at.elapsed());
        local.frames += 1;
        job.counters.frames.fetch_add(1, Relaxed);
        if let (Some(t), Some(iv)) = (due.as_mut(), job.interval) {
            *t += Duration::from_secs_f64(iv);
        }
    }
    job.counters.finished.fetch_add(1, Relaxed);
    let _ = conn.close().await;
    local
}

pub fn run(args: Args) -> anyhow::Result<std::process::ExitCode> {
    let plan = Plan::new(&args.common, "echo", PlanOptions::default())?;
    let n = args.common.connections.unwrap_or(64);
    let duration = args.common.duration.unwrap_or(Duration::from_secs(10));
    let size = args.size.unwrap_or(64);
    if n > super::per_process_capacity() {
        bail!(
            "--connections {n}: one process may open about {} (its open-file limit); use \
             `tether bench idle` for more sessions",
            super::per_process_capacity()
        );
    }
    let group = Group::new(&args.common.measure_pid)?;
    let negotiated = super::probe(&plan)?;
    let runtime = plan.runtime()?;
    let plan = Arc::new(plan);
    let counters = Arc::new(Counters {
        opened: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        frames: AtomicU64::new(0),
        finished: AtomicU64::new(0),
    });
    let (start_tx, start_rx) = watch::channel(None);
    let interval = args.rate.map(|r| n as f64 / r);
    let open_deadline = plan.timeout * 2 + Duration::from_secs((n / 100) as u64);

    let bar = report::progress(Some(n as u64), "opening");
    let result = runtime.block_on(async {
        let opening = Arc::new(Semaphore::new(OPENING));
        let tasks: Vec<_> = (0..n)
            .map(|i| {
                let job = Job {
                    plan: plan.clone(),
                    counters: counters.clone(),
                    opening: opening.clone(),
                    start: start_rx.clone(),
                    duration,
                    interval,
                    size,
                };
                tokio::spawn(conn_task(job, i, n))
            })
            .collect();
        let t_open = Instant::now();
        loop {
            let done = counters.opened.load(Relaxed) + counters.failed.load(Relaxed);
            bar.set_position(done);
            if done >= n as u64 || t_open.elapsed() > open_deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let opened = counters.opened.load(Relaxed);
        bar.set_prefix("echo");
        bar.set_length(duration.as_secs().max(1));
        bar.set_position(0);
        let before = group.as_ref().map(Group::sample).transpose()?;
        let self_before = procfs::self_cpu_ticks();
        let start = Instant::now();
        let _ = start_tx.send(Some(start));
        let ticker = {
            let (counters, bar) = (counters.clone(), bar.clone());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    let secs = start.elapsed().as_secs_f64();
                    bar.set_position(secs as u64);
                    bar.set_message(format!(
                        "{:.0} frames/s",
                        counters.frames.load(Relaxed) as f64 / secs.max(1e-3)
                    ));
                }
            })
        };
        // The measured phase ends when every connection has had its last reply; they close
        // after the sample.
        tokio::time::sleep(duration).await;
        let late = Instant::now() + plan.timeout;
        while counters.finished.load(Relaxed) < opened && Instant::now() < late {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let elapsed = start.elapsed();
        let after = group.as_ref().map(Group::sample).transpose()?;
        let self_cpu = procfs::cpu_seconds(self_before, procfs::self_cpu_ticks());
        ticker.abort();
        let mut locals = Vec::new();
        for t in tasks {
            locals.push(t.await.unwrap_or_default());
        }
        anyhow::Ok((locals, opened, before, after, self_cpu, elapsed))
    });
    bar.finish_and_clear();
    let (locals, opened, before, after, self_cpu, elapsed) = result?;
    if opened == 0 {
        let mut errors = Errors::default();
        for l in locals {
            errors.merge(l.errors);
        }
        bail!(
            "no connection to {} could be opened: {}",
            plan.target,
            errors
                .json()
                .get("by_category")
                .map(|v| v.to_string())
                .unwrap_or_default()
        );
    }
    let mut latency = Latencies::default();
    let mut errors = Errors::default();
    let mut frames = 0;
    for l in locals {
        frames += l.frames;
        latency.merge(l.latency);
        errors.merge(l.errors);
    }
    // The measured time is the planned duration (frames due after it were not sent); the
    // last replies may come in a little later.
    let secs = duration.as_secs_f64();
    let lat = latency.summary();
    let rate = frames as f64 / secs;
    let mut v = json!({
        "command": "echo",
        "target": plan.target,
        "server_name": plan.server_name,
        "tls": plan.tls_label(),
        "mtls": plan.mtls,
        "connections": n,
        "opened": opened,
        "size": size,
        "rate_target": args.rate,
        "duration_s": round(secs, 3),
        "frames": frames,
        "frames_per_s": round(rate, 1),
        "latency_us": lat.json(),
        "errors": errors.json(),
        "client": report::client_json(plan.threads, self_cpu, elapsed.as_secs_f64(), frames, "frame"),
    });
    v["negotiated"] = json!({
        "version": negotiated.0,
        "cipher_suite": negotiated.1,
        "kx_group": negotiated.2,
    });
    let mut table = Table::default();
    table.row(
        "connections",
        &format!(
            "{opened} of {n} opened ({}, {})",
            plan.tls_label(),
            if plan.mtls { "mTLS" } else { "server-only TLS" }
        ),
    );
    table.row(
        "frames",
        &format!(
            "{frames} ECHO of {size} B in {secs:.2} s: {rate:.0}/s{}",
            match args.rate {
                Some(r) => format!(" (target {r:.0}/s)"),
                None => " (closed loop)".to_owned(),
            }
        ),
    );
    table.row("round trip", &lat.line());
    table.row(
        "negotiated",
        &format!("{}, {}, {}", negotiated.0, negotiated.1, negotiated.2),
    );
    errors.rows(&mut table);
    if let (Some(g), Some(b), Some(a)) = (&group, &before, &after) {
        let cpu = procfs::cpu_seconds(b.cpu_ticks, a.cpu_ticks);
        table.row(
            "server CPU",
            &format!(
                "{cpu:.2} s ({:.0}% of one core): {:.1} µs per frame",
                cpu / secs * 100.0,
                cpu * 1e6 / frames.max(1) as f64
            ),
        );
        table.row(
            "server RSS",
            &format!("{} KiB before, {} KiB after", b.rss_kib, a.rss_kib),
        );
        v["server"] = procfs::delta_json(g, b, a, frames, "frame");
    }
    table.row(
        "client CPU",
        &format!(
            "{self_cpu:.2} s ({:.0}% of one core, {} threads)",
            self_cpu / secs * 100.0,
            plan.threads
        ),
    );
    table.print(&format!(
        "tether bench echo: {} ({}), {n} connections",
        plan.target, plan.server_name
    ));
    report::write_json(args.common.json.as_deref(), &v)?;
    Ok(if frames == 0 {
        std::process::ExitCode::FAILURE
    } else {
        std::process::ExitCode::SUCCESS
    })
}
