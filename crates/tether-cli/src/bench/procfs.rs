//! What `/proc` says about a process: resident memory, CPU time, open descriptors.

use std::time::Instant;

use serde_json::{Value, json};

/// Clock ticks per second of `/proc/PID/stat` times (`USER_HZ`: 100 on every Linux ABI).
const TICKS_PER_SECOND: f64 = 100.0;

/// One look at a process.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sample {
    /// Resident set size, KiB (`VmRSS`).
    pub rss_kib: u64,
    /// User + system CPU time, clock ticks.
    pub cpu_ticks: u64,
    /// Open descriptors (entries of /proc/PID/fd), when readable.
    pub fds: Option<u64>,
}

/// Samples process `pid` ("self" for this one).
pub(crate) fn sample(pid: &str) -> std::io::Result<Sample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces and parentheses): state is field
    // 3, utime field 14, stime field 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| -> u64 { fields.get(i).and_then(|v| v.parse().ok()).unwrap_or(0) };
    let cpu_ticks = tick(11) + tick(12);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()
        .map(|d| d.count() as u64);
    Ok(Sample {
        rss_kib,
        cpu_ticks,
        fds,
    })
}

/// Several processes summed (`--measure-pid`, repeatable).
#[derive(Debug, Clone)]
pub(crate) struct Group {
    pub pids: Vec<u32>,
}

/// The summed sample of a group.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GroupSample {
    pub rss_kib: u64,
    pub cpu_ticks: u64,
    pub fds: Option<u64>,
    pub at: Instant,
}

impl Group {
    pub(crate) fn new(pids: &[u32]) -> anyhow::Result<Option<Group>> {
        if pids.is_empty() {
            return Ok(None);
        }
        let group = Group {
            pids: pids.to_vec(),
        };
        group.sample().map_err(|e| {
            anyhow::anyhow!("--measure-pid: {e} (is the process running, and readable in /proc?)")
        })?;
        Ok(Some(group))
    }

    pub(crate) fn sample(&self) -> anyhow::Result<GroupSample> {
        let mut sum = GroupSample {
            rss_kib: 0,
            cpu_ticks: 0,
            fds: Some(0),
            at: Instant::now(),
        };
        for pid in &self.pids {
            let s = sample(&pid.to_string()).map_err(|e| anyhow::anyhow!("process {pid}: {e}"))?;
            sum.rss_kib += s.rss_kib;
            sum.cpu_ticks += s.cpu_ticks;
            sum.fds = match (sum.fds, s.fds) {
                (Some(a), Some(b)) => Some(a + b),
                _ => None,
            };
        }
        Ok(sum)
    }
}

/// CPU seconds between two tick counts.
pub(crate) fn cpu_seconds(before: u64, after: u64) -> f64 {
    after.saturating_sub(before) as f64 / TICKS_PER_SECOND
}

/// The server-side figures between two samples, per `ops` operations (handshakes, frames,
/// sessions) named `per`.
pub(crate) fn delta_json(
    group: &Group,
    before: &GroupSample,
    after: &GroupSample,
    ops: u64,
    per: &str,
) -> Value {
    let cpu = cpu_seconds(before.cpu_ticks, after.cpu_ticks);
    let wall = after.at.duration_since(before.at).as_secs_f64();
    let mut v = json!({
        "pids": group.pids,
        "cpu_s": cpu,
        "cpu_utilization": if wall > 0.0 { cpu / wall } else { 0.0 },
        "rss_kib_before": before.rss_kib,
        "rss_kib_after": after.rss_kib,
        "fds_before": before.fds,
        "fds_after": after.fds,
    });
    if ops > 0 {
        v[format!("cpu_us_per_{per}")] = json!(cpu * 1e6 / ops as f64);
    }
    v
}

/// This process's CPU seconds so far.
pub(crate) fn self_cpu_ticks() -> u64 {
    sample("self").map(|s| s.cpu_ticks).unwrap_or(0)
}

/// This process's RSS, KiB.
pub(crate) fn self_rss_kib() -> u64 {
    sample("self").map(|s| s.rss_kib).unwrap_or(0)
}
