//! Latency percentiles, error tallies, the progress bar, the summary table and the JSON file.

use std::collections::BTreeMap;
use std::io::IsTerminal as _;
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{Value, json};

use super::client::Failure;

/// Latency samples in microseconds.
#[derive(Debug, Default, Clone)]
pub(crate) struct Latencies {
    us: Vec<u32>,
}

impl Latencies {
    pub(crate) fn record(&mut self, d: Duration) {
        self.us
            .push(u32::try_from(d.as_micros()).unwrap_or(u32::MAX));
    }

    pub(crate) fn merge(&mut self, other: Latencies) {
        self.us.extend(other.us);
    }

    /// Sorts the samples and returns the summary.
    pub(crate) fn summary(&mut self) -> Summary {
        self.us.sort_unstable();
        let n = self.us.len();
        let pct = |p: f64| -> u32 {
            if n == 0 {
                return 0;
            }
            // Nearest rank.
            let rank = ((p / 100.0) * n as f64).ceil() as usize;
            self.us[rank.clamp(1, n) - 1]
        };
        Summary {
            count: n as u64,
            min: self.us.first().copied().unwrap_or(0),
            p50: pct(50.0),
            p90: pct(90.0),
            p99: pct(99.0),
            p999: pct(99.9),
            max: self.us.last().copied().unwrap_or(0),
            mean: if n == 0 {
                0.0
            } else {
                self.us.iter().map(|&v| f64::from(v)).sum::<f64>() / n as f64
            },
        }
    }
}

/// Percentiles of a latency distribution, microseconds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Summary {
    pub count: u64,
    pub min: u32,
    pub p50: u32,
    pub p90: u32,
    pub p99: u32,
    pub p999: u32,
    pub max: u32,
    pub mean: f64,
}

impl Summary {
    pub(crate) fn json(&self) -> Value {
        json!({
            "count": self.count,
            "min": self.min,
            "p50": self.p50,
            "p90": self.p90,
            "p99": self.p99,
            "p99_9": self.p999,
            "max": self.max,
            "mean": round(self.mean, 1),
        })
    }

    /// "p50 1.23 ms, p90 ..., p99 ..., max ..."
    pub(crate) fn line(&self) -> String {
        format!(
            "p50 {}, p90 {}, p99 {}, p99.9 {}, max {}",
            us(self.p50),
            us(self.p90),
            us(self.p99),
            us(self.p999),
            us(self.max)
        )
    }
}

/// A latency in µs or ms, for people.
pub(crate) fn us(v: u32) -> String {
    if v >= 10_000 {
        format!("{:.1} ms", f64::from(v) / 1000.0)
    } else {
        format!("{v} µs")
    }
}

pub(crate) fn round(v: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (v * f).round() / f
}

/// Failures by category, with the first message seen for each.
#[derive(Debug, Default, Clone)]
pub(crate) struct Errors {
    by: BTreeMap<String, (u64, String)>,
}

impl Errors {
    pub(crate) fn add(&mut self, f: &Failure) {
        let e = self
            .by
            .entry(f.category.clone())
            .or_insert_with(|| (0, f.detail.clone()));
        e.0 += 1;
    }

    pub(crate) fn add_count(&mut self, category: &str, count: u64, example: &str) {
        if count == 0 {
            return;
        }
        let e = self
            .by
            .entry(category.to_owned())
            .or_insert_with(|| (0, example.to_owned()));
        e.0 += count;
    }

    pub(crate) fn merge(&mut self, other: Errors) {
        for (k, (n, ex)) in other.by {
            self.add_count(&k, n, &ex);
        }
    }

    pub(crate) fn total(&self) -> u64 {
        self.by.values().map(|(n, _)| n).sum()
    }

    pub(crate) fn json(&self) -> Value {
        let by: serde_json::Map<String, Value> = self
            .by
            .iter()
            .map(|(k, (n, ex))| (k.clone(), json!({"count": n, "example": ex})))
            .collect();
        json!({"total": self.total(), "by_category": by})
    }

    pub(crate) fn from_json(v: &Value) -> Errors {
        let mut e = Errors::default();
        if let Some(map) = v.get("by_category").and_then(Value::as_object) {
            for (k, item) in map {
                let n = item.get("count").and_then(Value::as_u64).unwrap_or(0);
                let ex = item.get("example").and_then(Value::as_str).unwrap_or("");
                e.add_count(k, n, ex);
            }
        }
        e
    }

    /// Table rows: one per category.
    pub(crate) fn rows(&self, table: &mut Table) {
        if self.by.is_empty() {
            table.row("errors", "none");
            return;
        }
        for (k, (n, ex)) in &self.by {
            table.row(&format!("errors: {k}"), &format!("{n} (e.g. {ex})"));
        }
    }
}

/// A progress bar on stderr, shown only when stdout and stderr are terminals.
pub(crate) fn progress(len: Option<u64>, what: &str) -> ProgressBar {
    let tty = std::io::stdout().is_terminal() && std::io::stderr().is_terminal();
    let bar = match len {
        Some(n) => ProgressBar::with_draw_target(Some(n), ProgressDrawTarget::hidden()),
        None => ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden()),
    };
    let template = if len.is_some() {
        "{prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed})"
    } else {
        "{prefix} {spinner} {pos} {msg} ({elapsed})"
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(what.to_owned());
    if tty {
        bar.set_draw_target(ProgressDrawTarget::stderr());
        bar.enable_steady_tick(Duration::from_millis(200));
    }
    bar
}

/// A two-column summary table.
#[derive(Debug, Default)]
pub(crate) struct Table {
    rows: Vec<(String, String)>,
}

impl Table {
    pub(crate) fn row(&mut self, k: &str, v: &str) {
        self.rows.push((k.to_owned(), v.to_owned()));
    }

    pub(crate) fn print(&self, title: &str) {
        let w = self
            .rows
            .iter()
            .map(|(k, _)| k.chars().count())
            .max()
            .unwrap_or(0);
        say!("{title}");
        for (k, v) in &self.rows {
            let pad = w - k.chars().count();
            say!("  {k}{}  {v}", " ".repeat(pad));
        }
    }
}

/// Writes the figures to `path` (pretty JSON, then a newline).
pub(crate) fn write_json(path: Option<&Path>, v: &Value) -> anyhow::Result<()> {
    let Some(path) = path else {
        return Ok(());
    };
    let mut text = serde_json::to_string_pretty(v).context("JSON")?;
    text.push('\n');
    std::fs::write(path, text).with_context(|| format!("cannot write --json {}", path.display()))
}

/// The client's own use of the machine between two tick counts.
pub(crate) fn client_json(threads: usize, cpu_s: f64, wall_s: f64, ops: u64, per: &str) -> Value {
    let mut v = json!({
        "threads": threads,
        "cpu_s": round(cpu_s, 3),
        "cpu_utilization": if wall_s > 0.0 { round(cpu_s / wall_s, 3) } else { 0.0 },
        "rss_kib": super::procfs::self_rss_kib(),
    });
    if ops > 0 {
        v[format!("cpu_us_per_{per}")] = json!(round(cpu_s * 1e6 / ops as f64, 1));
    }
    v
}
