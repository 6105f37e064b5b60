//! What the bench prints besides the tables: the machine it ran on, one `bench <workload>
//! <metric> <value>` line a figure, failed result checks, and the summary against targets.

use std::fmt::Display;
use std::thread;

use crate::cli::Mode;

/// Prints what the figures were measured on: they mean little without it.
pub fn print_machine(mode: &Mode) {
    let cpus = thread::available_parallelism().map_or(0, |n| n.get());
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown", |(_, m)| m.trim());
    // Other work may share the machine; the load average tells the reader how much.
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load = load
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    println!("pipework throughput bench");
    println!("machine: nproc {cpus}, cpu {model}, load average {load}");
    println!(
        "mode: {} ({} rounds per figure, W4 {})",
        if mode.quick { "quick" } else { "full" },
        mode.rounds,
        mode.w4_rounds
    );
}

/// What a figure is compared with in the summary.
#[derive(Clone, Copy)]
pub enum Target {
    AtLeast(f64),
    AtMost(f64),
    /// Reported for information only.
    None,
}

impl Target {
    fn describe(self) -> String {
        match self {
            Target::AtLeast(t) => format!(">= {t}"),
            Target::AtMost(t) => format!("<= {t}"),
            Target::None => "-".into(),
        }
    }

    fn verdict(self, value: f64) -> &'static str {
        match self {
            Target::AtLeast(t) if value >= t => "met",
            Target::AtMost(t) if value <= t => "met",
            Target::None => "-",
            _ => "missed",
        }
    }
}

/// One line of the summary.
struct Row {
    workload: &'static str,
    metric: String,
    value: f64,
    target: Target,
}

/// The figures and checks of the whole run.
#[derive(Default)]
pub struct Out {
    summary: Vec<Row>,
    failed_checks: usize,
}

impl Out {
    /// Prints one machine-readable figure.
    pub fn figure(&self, workload: &'static str, metric: &str, value: f64) {
        println!("bench {workload} {metric} {}", plain(value));
    }

    /// Prints a figure and puts it in the summary.
    pub fn headline(&mut self, workload: &'static str, metric: &str, value: f64, target: Target) {
        self.figure(workload, metric, value);
        self.summary.push(Row {
            workload,
            metric: metric.into(),
            value,
            target,
        });
    }

    /// Records a result check; a failure makes the process exit non-zero at the end.
    pub fn check(&mut self, ok: bool, what: impl Display) {
        if !ok {
            println!("RESULT CHECK FAILED: {what}");
            self.failed_checks += 1;
        }
    }

    /// How many result checks failed so far.
    pub fn failed_checks(&self) -> usize {
        self.failed_checks
    }

    pub fn print_summary(&self) {
        println!("\n== summary");
        println!(
            "  {:<4} {:<22} {:>12} {:>10}  result",
            "work", "figure", "value", "target"
        );
        for r in &self.summary {
            println!(
                "  {:<4} {:<22} {:>12} {:>10}  {}",
                r.workload,
                r.metric,
                plain(r.value),
                r.target.describe(),
                r.target.verdict(r.value)
            );
        }
    }
}

/// A float that any float parser reads: no thousands separators, an exponent for big rates.
fn plain(value: f64) -> String {
    if value != 0.0 && (value.abs() >= 1e6 || value.abs() < 1e-3) {
        format!("{value:.4e}")
    } else {
        format!("{value:.4}")
    }
}
