//! `tether bench idle`: open N concurrent TLS sessions, hold them, then close them.
//!
//! Phases: sample the `--measure-pid` processes; open the N sessions (`--concurrency`
//! handshakes in flight); wait for the server to settle (a second, then until its CPU use
//! stays under 5% of a core for half a second, at most a minute: a TLS 1.3 client is done
//! before the server has checked its Finished, and a slow server may still be completing
//! handshakes); sample; hold for `--hold`
//! seconds; sample again (the server's CPU over the hold, its RSS at the end); send close_notify
//! on every session. Memory per session is the RSS growth (end of hold minus before) divided by
//! the sessions still open at the end.
//!
//! Sockets are bound to source addresses 127.0.0.2, 127.0.0.3, ... in turn (one per 5,000
//! sessions unless `--sources` says otherwise), so that neither the ~28,000 ephemeral ports of
//! one source address nor a server's per-address limit is the wall. When N passes what one
//! process may open (its open-file limit less a reserve), the sessions are spread over several
//! worker processes (this binary, re-run with the hidden `--worker` flag); each reports on its
//! stdout and holds until the coordinator writes `release` to its stdin.

use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Child, ChildStdin, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};
use tokio::sync::{Semaphore, watch};

use super::client::{Conn, Failure, Fin};
use super::procfs::{self, Group, GroupSample};
use super::report::{self, Errors, Table, round};
use super::{Common, Plan, PlanOptions};

/// Sessions per source address when --sources is not given.
const PER_SOURCE: usize = 5_000;
/// Time the server gets to finish its post-handshake work before the "held" sample.
const SETTLE: Duration = Duration::from_secs(1);
/// After [`SETTLE`], the measured server is sampled this often until it is quiet.
const SETTLE_STEP: Duration = Duration::from_millis(500);
/// Quiet: at most this much CPU (10 ms ticks) over one [`SETTLE_STEP`], under 5% of a core.
const QUIET_TICKS: u64 = 2;
/// The longest wait for a quiet server; the held sample is taken then anyway.
const SETTLE_MAX: Duration = Duration::from_secs(60);

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    common: Common,
    /// Seconds to hold the sessions once open [default: 5].
    #[arg(long, value_name = "SECS", value_parser = super::parse_secs)]
    hold: Option<Duration>,
    /// Handshakes in flight while opening [default: 64].
    #[arg(long, value_name = "N", value_parser = super::parse_count)]
    concurrency: Option<usize>,
    /// Client processes [default: as many as the open-file limit needs].
    #[arg(long, value_name = "P", value_parser = super::parse_count)]
    processes: Option<usize>,
    /// Run as a worker of a coordinating `tether bench idle` (reports on stdout).
    #[arg(long, hide = true)]
    worker: bool,
    /// The global index of this worker's first session (source address round-robin).
    #[arg(long, hide = true, value_name = "I", default_value_t = 0)]
    worker_offset: usize,
}

/// What a set of sessions did (one process, or the sum of the workers).
#[derive(Debug, Default, Clone)]
struct Totals {
    opened: u64,
    failed: u64,
    dropped: u64,
    clean_closes: u64,
    errors: Errors,
    cpu_s: f64,
    rss_kib: u64,
}

impl Totals {
    fn json(&self) -> Value {
        json!({
            "opened": self.opened,
            "failed": self.failed,
            "dropped": self.dropped,
            "clean_closes": self.clean_closes,
            "errors": self.errors.json(),
            "cpu_s": self.cpu_s,
            "rss_kib": self.rss_kib,
        })
    }

    fn from_json(v: &Value) -> Totals {
        let n = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
        Totals {
            opened: n("opened"),
            failed: n("failed"),
            dropped: n("dropped"),
            clean_closes: n("clean_closes"),
            errors: v.get("errors").map(Errors::from_json).unwrap_or_default(),
            cpu_s: v.get("cpu_s").and_then(Value::as_f64).unwrap_or(0.0),
            rss_kib: n("rss_kib"),
        }
    }

    fn add(&mut self, o: Totals) {
        self.opened += o.opened;
        self.failed += o.failed;
        self.dropped += o.dropped;
        self.clean_closes += o.clean_closes;
        self.errors.merge(o.errors);
        self.cpu_s += o.cpu_s;
        self.rss_kib += o.rss_kib;
    }
}

#[derive(Default)]
struct Counters {
    opened: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
}

/// What one held session ended with.
#[derive(Default)]
struct Held {
    errors: Errors,
    clean_close: bool,
}

async fn hold(
    plan: Arc<Plan>,
    index: usize,
    opening: Arc<Semaphore>,
    mut release: watch::Receiver<bool>,
    counters: Arc<Counters>,
) -> Held {
    let mut held = Held::default();
    let permit = opening.acquire().await;
    let opened = Conn::open(&plan, plan.source(index)).await;
    drop(permit);
    let mut conn = match opened {
        Ok(c) => c,
        Err(f) => {
            held.errors.add(&f);
            counters.failed.fetch_add(1, Relaxed);
            return held;
        }
    };
    counters.opened.fetch_add(1, Relaxed);
    loop {
        if *release.borrow_and_update() {
            break;
        }
        tokio::select! {
            input = conn.wait_input() => if let Err(f) = input {
                // The server ended the session while it was held.
                held.errors.add(&Failure::new(format!("dropped_{}", f.category), f.detail));
                counters.dropped.fetch_add(1, Relaxed);
                return held;
            },
            changed = release.changed() => if changed.is_err() {
                break;
            },
        }
    }
    held.clean_close = conn.close_with(Fin::AfterServer).await.is_ok();
    held
}

/// Sessions held by this process.
struct Local {
    runtime: tokio::runtime::Runtime,
    release: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<Held>>,
    counters: Arc<Counters>,
    cpu_before: u64,
}

impl Local {
    fn start(plan: &Plan, n: usize, offset: usize, concurrency: usize) -> anyhow::Result<Local> {
        let runtime = plan.runtime()?;
        let cpu_before = procfs::self_cpu_ticks();
        let plan = Arc::new(plan.clone());
        let (release, release_rx) = watch::channel(false);
        let counters = Arc::new(Counters::default());
        let opening = Arc::new(Semaphore::new(concurrency));
        let tasks = (0..n)
            .map(|i| {
                runtime.spawn(hold(
                    plan.clone(),
                    offset + i,
                    opening.clone(),
                    release_rx.clone(),
                    counters.clone(),
                ))
            })
            .collect();
        Ok(Local {
            runtime,
            release,
            tasks,
            counters,
            cpu_before,
        })
    }

    fn counts(&self) -> (u64, u64) {
        (
            self.counters.opened.load(Relaxed),
            self.counters.failed.load(Relaxed),
        )
    }

    /// Closes every session (close_notify) and adds up what they did.
    fn release(self) -> Totals {
        let _ = self.release.send(true);
        let held: Vec<Held> = self.runtime.block_on(async {
            let mut v = Vec::new();
            for t in self.tasks {
                v.push(t.await.unwrap_or_default());
            }
            v
        });
        let mut t = Totals {
            opened: self.counters.opened.load(Relaxed),
            failed: self.counters.failed.load(Relaxed),
            dropped: self.counters.dropped.load(Relaxed),
            rss_kib: procfs::self_rss_kib(),
            ..Totals::default()
        };
        for h in held {
            t.clean_closes += u64::from(h.clean_close);
            t.errors.merge(h.errors);
        }
        t.cpu_s = procfs::cpu_seconds(self.cpu_before, procfs::self_cpu_ticks());
        t
    }
}

/// The flags a worker gets: the common ones that shape connections.
fn worker_args(args: &Args, n: usize, offset: usize, sources: usize) -> Vec<String> {
    let c = &args.common;
    let mut v: Vec<String> = vec![
        "bench".into(),
        "idle".into(),
        "--worker".into(),
        "--worker-offset".into(),
        offset.to_string(),
        "--connections".into(),
        n.to_string(),
        "--sources".into(),
        sources.to_string(),
        "--processes".into(),
        "1".into(),
    ];
    let mut flag = |name: &str, value: Option<String>| {
        if let Some(value) = value {
            v.push(format!("--{name}"));
            v.push(value);
        }
    };
    flag("target", c.target.clone());
    flag("ca", c.ca.as_ref().map(|p| p.display().to_string()));
    flag("cert", c.cert.as_ref().map(|p| p.display().to_string()));
    flag("key", c.key.as_ref().map(|p| p.display().to_string()));
    flag("sni", c.sni.clone());
    flag(
        "tls",
        c.tls.map(|t| match t {
            tether::TlsVersion::Tls12 => "1.2".to_owned(),
            tether::TlsVersion::Tls13 => "1.3".to_owned(),
        }),
    );
    flag("threads", c.threads.map(|n| n.to_string()));
    flag("timeout", c.timeout.map(|d| d.as_secs_f64().to_string()));
    flag("duration", c.duration.map(|d| d.as_secs_f64().to_string()));
    flag("concurrency", args.concurrency.map(|n| n.to_string()));
    v
}

/// A worker: opens its share, reports, holds until told, closes, reports.
fn run_worker(args: &Args, plan: &Plan, n: usize, open_for: Duration) -> anyhow::Result<ExitCode> {
    let concurrency = args.concurrency.unwrap_or(64);
    let local = Local::start(plan, n, args.worker_offset, concurrency)?;
    let start = Instant::now();
    let mut out = std::io::stdout();
    loop {
        let (opened, failed) = local.counts();
        writeln!(out, "progress {opened} {failed}")?;
        out.flush()?;
        if opened + failed >= n as u64 || start.elapsed() > open_for {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let (opened, failed) = local.counts();
    writeln!(out, "ready {opened} {failed}")?;
    out.flush()?;
    // Hold until the coordinator says so (a line on stdin, or its end).
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    let totals = local.release();
    writeln!(out, "done {}", totals.json())?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// Worker processes, killed by PID if the coordinator gives up on them.
struct Workers {
    children: Vec<Child>,
    stdins: Vec<Option<ChildStdin>>,
    lines: mpsc::Receiver<(usize, Option<String>)>,
    /// Per worker: opened, failed, ready, done.
    state: Vec<(u64, u64, bool, Option<Totals>)>,
}

impl Drop for Workers {
    fn drop(&mut self) {
        for c in &mut self.children {
            if let Ok(None) = c.try_wait() {
                let _ = c.kill();
            }
            let _ = c.wait();
        }
    }
}

impl Workers {
    fn spawn(args: &Args, shares: &[usize], sources: usize) -> anyhow::Result<Workers> {
        let exe = std::env::current_exe().context("cannot find this program to re-run it")?;
        let (tx, lines) = mpsc::channel();
        let mut w = Workers {
            children: Vec::new(),
            stdins: Vec::new(),
            lines,
            state: vec![(0, 0, false, None); shares.len()],
        };
        let mut offset = 0;
        for (i, &n) in shares.iter().enumerate() {
            let mut child = Command::new(&exe)
                .args(worker_args(args, n, offset, sources))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .with_context(|| format!("cannot start worker process {}", exe.display()))?;
            offset += n;
            let stdout = child.stdout.take().context("worker stdout")?;
            w.stdins.push(child.stdin.take());
            w.children.push(child);
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if tx.send((i, Some(line))).is_err() {
                        return;
                    }
                }
                let _ = tx.send((i, None));
            });
        }
        Ok(w)
    }

    /// Reads what the workers said in the next `wait`; fails if one ended early.
    fn poll(&mut self, wait: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (i, line) = match self.lines.recv_timeout(left) {
                Ok(m) => m,
                Err(_) => return Ok(()),
            };
            let st = &mut self.state[i];
            let Some(line) = line else {
                if st.3.is_none() {
                    let status = self.children[i].wait().ok();
                    bail!(
                        "worker process {i} ended before it reported ({})",
                        status.map(|s| s.to_string()).unwrap_or_default()
                    );
                }
                continue;
            };
            let mut words = line.splitn(3, ' ');
            match words.next() {
                Some("progress") | Some("ready") => {
                    let ready = line.starts_with("ready");
                    let num = |w: Option<&str>| w.and_then(|v| v.parse().ok()).unwrap_or(0);
                    st.0 = num(words.next());
                    st.1 = num(words.next());
                    st.2 |= ready;
                }
                Some("done") => {
                    let json = line.strip_prefix("done ").unwrap_or("{}");
                    let v: Value = serde_json::from_str(json).unwrap_or(Value::Null);
                    st.3 = Some(Totals::from_json(&v));
                }
                _ => {}
            }
        }
    }

    fn counts(&self) -> (u64, u64) {
        self.state
            .iter()
            .fold((0, 0), |(o, f), s| (o + s.0, f + s.1))
    }

    fn all_ready(&self) -> bool {
        self.state.iter().all(|s| s.2)
    }

    fn release(mut self, wait: Duration) -> anyhow::Result<Totals> {
        for stdin in &mut self.stdins {
            if let Some(mut s) = stdin.take() {
                let _ = s.write_all(b"release\n");
            }
        }
        let deadline = Instant::now() + wait;
        while self.state.iter().any(|s| s.3.is_none()) {
            if Instant::now() > deadline {
                bail!("worker processes did not finish closing in {wait:?}");
            }
            self.poll(Duration::from_millis(100))?;
        }
        let mut t = Totals::default();
        for s in &mut self.state {
            if let Some(done) = s.3.take() {
                t.add(done);
            }
        }
        Ok(t)
    }
}

/// The coordinator's view of the clients: in this process or in workers.
enum Clients {
    Local(Local),
    Workers(Workers),
}

impl Clients {
    fn counts(&mut self) -> anyhow::Result<(u64, u64, bool)> {
        match self {
            Clients::Local(l) => {
                let (o, f) = l.counts();
                std::thread::sleep(Duration::from_millis(100));
                Ok((o, f, false))
            }
            Clients::Workers(w) => {
                w.poll(Duration::from_millis(100))?;
                let (o, f) = w.counts();
                Ok((o, f, w.all_ready()))
            }
        }
    }

    fn release(self) -> anyhow::Result<Totals> {
        match self {
            Clients::Local(l) => Ok(l.release()),
            Clients::Workers(w) => w.release(Duration::from_secs(120)),
        }
    }
}

/// Ephemeral ports per source address and destination (ip_local_port_range).
fn ephemeral_ports() -> usize {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|v| v.parse::<usize>().ok());
            Some(it.next()??.abs_diff(it.next()??) + 1)
        })
        .unwrap_or(28_232)
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let n = args.common.connections.unwrap_or(1000);
    let default_sources = n.div_ceil(PER_SOURCE);
    let plan = Plan::new(
        &args.common,
        "idle",
        PlanOptions {
            default_sources,
            ..PlanOptions::default()
        },
    )?;
    let open_for = args.common.duration.unwrap_or(Duration::from_secs(300));
    if args.worker {
        return run_worker(&args, &plan, n, open_for);
    }
    let sources = plan.sources.len();
    let ports = ephemeral_ports();
    if sources > 0 && n.div_ceil(sources) > ports * 9 / 10 {
        bail!(
            "--connections {n} over {sources} source address(es) is {} each, near the {ports} \
             ephemeral ports one address has: use --sources {} or more",
            n.div_ceil(sources),
            n.div_ceil(ports * 9 / 10)
        );
    }
    let capacity = super::per_process_capacity();
    let processes = args
        .processes
        .unwrap_or_else(|| n.div_ceil(capacity).max(1));
    if n.div_ceil(processes) > capacity {
        bail!(
            "--processes {processes}: {} sessions each is over the {capacity} one process may \
             open here (open-file limit {}); use --processes {} or more",
            n.div_ceil(processes),
            super::open_file_limit().map_or("?".into(), |l| l.to_string()),
            n.div_ceil(capacity)
        );
    }
    let hold_for = args.hold.unwrap_or(Duration::from_secs(5));
    let concurrency = args.concurrency.unwrap_or(64);
    let group = Group::new(&args.common.measure_pid)?;
    let negotiated = super::probe(&plan)?;

    let before = group.as_ref().map(Group::sample).transpose()?;
    let self_cpu_before = procfs::self_cpu_ticks();
    let start = Instant::now();
    let mut clients = if processes == 1 {
        Clients::Local(Local::start(&plan, n, 0, concurrency)?)
    } else {
        let shares: Vec<usize> = (0..processes)
            .map(|i| n / processes + usize::from(i < n % processes))
            .collect();
        Clients::Workers(Workers::spawn(&args, &shares, sources)?)
    };
    let bar = report::progress(Some(n as u64), "opening");
    let opened = loop {
        let (o, f, ready) = clients.counts()?;
        bar.set_position(o + f);
        bar.set_message(format!("{o} open, {f} failed"));
        if o + f >= n as u64 || ready || start.elapsed() > open_for + Duration::from_secs(5) {
            break o;
        }
    };
    let open_s = start.elapsed().as_secs_f64();
    bar.set_prefix("holding");
    bar.set_message(format!("{opened} open"));
    let settle_start = Instant::now();
    std::thread::sleep(SETTLE);
    if let Some(g) = &group {
        settle(g, &mut clients)?;
    }
    let settled_s = settle_start.elapsed().as_secs_f64();
    let held = group.as_ref().map(Group::sample).transpose()?;
    bar.set_length(hold_for.as_secs().max(1));
    bar.set_position(0);
    let hold_start = Instant::now();
    while hold_start.elapsed() < hold_for {
        std::thread::sleep(Duration::from_millis(100).min(hold_for));
        bar.set_position(hold_start.elapsed().as_secs());
        if let Clients::Workers(w) = &mut clients {
            w.poll(Duration::ZERO)?;
        }
    }
    let end = group.as_ref().map(Group::sample).transpose()?;
    bar.set_prefix("closing");
    let totals = clients.release()?;
    bar.finish_and_clear();
    let coordinator_cpu = procfs::cpu_seconds(self_cpu_before, procfs::self_cpu_ticks());
    let wall = start.elapsed().as_secs_f64();
    let alive = totals.opened.saturating_sub(totals.dropped);
    let mut errors = totals.errors.clone();
    if totals.opened + totals.failed < n as u64 {
        errors.add_count(
            "not_attempted",
            n as u64 - totals.opened - totals.failed,
            "still waiting to open when --duration passed",
        );
    }

    let client_cpu = if processes == 1 {
        coordinator_cpu
    } else {
        totals.cpu_s + coordinator_cpu
    };
    let mut v = json!({
        "command": "idle",
        "target": plan.target,
        "server_name": plan.server_name,
        "tls": plan.tls_label(),
        "mtls": plan.mtls,
        "connections": n,
        "opened": totals.opened,
        "failed": totals.failed,
        "dropped_during_hold": totals.dropped,
        "held": alive,
        "clean_closes": totals.clean_closes,
        "open_s": round(open_s, 3),
        "settle_s": round(settled_s, 3),
        "opened_per_s": round(totals.opened as f64 / open_s.max(1e-3), 1),
        "hold_s": round(hold_for.as_secs_f64(), 3),
        "sources": plan.sources.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        "processes": processes,
        "errors": errors.json(),
        "client": {
            "processes": processes,
            "threads_per_process": plan.threads,
            "cpu_s": round(client_cpu, 3),
            "cpu_us_per_session": round(client_cpu * 1e6 / totals.opened.max(1) as f64, 1),
            "rss_kib": if processes == 1 { totals.rss_kib } else { totals.rss_kib + procfs::self_rss_kib() },
            "wall_s": round(wall, 3),
        },
    });
    v["negotiated"] = json!({
        "version": negotiated.0,
        "cipher_suite": negotiated.1,
        "kx_group": negotiated.2,
    });
    let mut table = Table::default();
    table.row(
        "sessions",
        &format!(
            "{} of {n} opened in {open_s:.2} s ({:.0}/s), {} failed, {} dropped while held, {alive} held for {:.1} s (after {settled_s:.1} s for the server to settle)",
            totals.opened,
            totals.opened as f64 / open_s.max(1e-3),
            totals.failed,
            totals.dropped,
            hold_for.as_secs_f64()
        ),
    );
    table.row(
        "client",
        &format!(
            "{processes} process(es) × {} threads, {} source address(es){}; CPU {client_cpu:.2} s",
            plan.threads,
            sources.max(1),
            match plan.sources.first() {
                Some(first) => format!(" from {first}"),
                None => " (kernel's choice)".to_owned(),
            }
        ),
    );
    table.row(
        "negotiated",
        &format!("{}, {}, {}", negotiated.0, negotiated.1, negotiated.2),
    );
    errors.rows(&mut table);
    if let (Some(g), Some(b), Some(h), Some(e)) = (&group, &before, &held, &end) {
        server_figures(g, b, h, e, alive, hold_for, &mut table, &mut v);
    }
    table.print(&format!(
        "tether bench idle: {} ({}), {}, {}",
        plan.target,
        plan.server_name,
        plan.tls_label(),
        if plan.mtls { "mTLS" } else { "server-only TLS" }
    ));
    report::write_json(args.common.json.as_deref(), &v)?;
    Ok(if alive == 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Waits until the measured server stops working on the sessions just opened.
///
/// In TLS 1.3 a client's handshake completes before the server has checked the client's
/// Finished and certificate, so a client can open sessions faster than a slow server
/// completes them (nginx verifying client certificates falls seconds behind). Sampling then
/// would take the held figures (memory, descriptors) of a server half done and count its
/// catching up as holding CPU.
fn settle(group: &Group, clients: &mut Clients) -> anyhow::Result<()> {
    let start = Instant::now();
    let mut last = group.sample()?;
    while start.elapsed() < SETTLE_MAX {
        std::thread::sleep(SETTLE_STEP);
        if let Clients::Workers(w) = clients {
            w.poll(Duration::ZERO)?;
        }
        let now = group.sample()?;
        if now.cpu_ticks.saturating_sub(last.cpu_ticks) <= QUIET_TICKS {
            return Ok(());
        }
        last = now;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn server_figures(
    g: &Group,
    before: &GroupSample,
    held: &GroupSample,
    end: &GroupSample,
    alive: u64,
    hold_for: Duration,
    table: &mut Table,
    v: &mut Value,
) {
    let growth_kib = end.rss_kib as i64 - before.rss_kib as i64;
    let per_session = if alive > 0 {
        growth_kib as f64 * 1024.0 / alive as f64
    } else {
        0.0
    };
    let hold_cpu = procfs::cpu_seconds(held.cpu_ticks, end.cpu_ticks);
    let open_cpu = procfs::cpu_seconds(before.cpu_ticks, held.cpu_ticks);
    v["server"] = json!({
        "pids": g.pids,
        "rss_kib_before": before.rss_kib,
        "rss_kib_held": held.rss_kib,
        "rss_kib_end": end.rss_kib,
        "rss_growth_kib": growth_kib,
        "rss_bytes_per_session": round(per_session, 1),
        "fds_before": before.fds,
        "fds_held": held.fds,
        "cpu_s_opening": open_cpu,
        "cpu_us_per_session_opened": if alive > 0 { round(open_cpu * 1e6 / alive as f64, 1) } else { 0.0 },
        "cpu_s_holding": hold_cpu,
        "cpu_utilization_holding": round(hold_cpu / hold_for.as_secs_f64(), 4),
    });
    table.row(
        "server RSS",
        &format!(
            "{} KiB before, {} KiB held, {} KiB at the end of the hold: +{growth_kib} KiB",
            before.rss_kib, held.rss_kib, end.rss_kib
        ),
    );
    table.row(
        "per session",
        &format!(
            "{per_session:.0} B ({:.2} KiB) of server RSS per held session",
            per_session / 1024.0
        ),
    );
    if let (Some(fb), Some(fh)) = (before.fds, held.fds) {
        table.row("server descriptors", &format!("{fb} before, {fh} held"));
    }
    table.row(
        "server CPU",
        &format!(
            "opening {open_cpu:.2} s ({:.0} µs per session), holding {hold_cpu:.2} s ({:.1}% of one core)",
            open_cpu * 1e6 / alive.max(1) as f64,
            hold_cpu / hold_for.as_secs_f64() * 100.0
        ),
    );
}
