//! What the bench prints besides the tables: the machine it ran on, one `bench <workload>
//! <metric> <value>` line a figure, failed result checks, and the summary against targets.
//!
//! A figure measured once per round (a ratio of two variants timed in the same round, a
//! percentile of one round) is printed as the median over the rounds; the summary adds its
//! interquartile range, which tells how far a figure can be trusted on a shared machine.

use std::fmt::Display;
use std::thread;

use crate::cli::Mode;
use crate::procfs;
use crate::stats::{Quartiles, quartiles};

/// Prints what the figures were measured on: they mean little without it.
pub fn print_machine(mode: &Mode) {
    let cpus = thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let model = procfs::cpu_model().unwrap_or_else(|| "unknown".into());
    // Other work may share the machine; the load average tells the reader how much.
    let load = procfs::load_average().unwrap_or_default();
    println!("pipework throughput bench");
    println!("machine: nproc {cpus}, cpu {model}, load average {load}");
    println!(
        "mode: {} ({} rounds per figure after a warm-up round, W4 {})",
        if mode.quick { "quick" } else { "full" },
        mode.rounds,
        mode.w4_rounds
    );
    if !mode.only.is_empty() {
        println!("workloads: {} only (--only)", mode.only.join(", "));
    }
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
    /// The quartiles of a figure measured once per round (or per sample).
    spread: Option<Quartiles>,
    /// How many rounds (or samples) the value comes from.
    n: usize,
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

    /// Prints the median of a figure measured once per round, and returns it.
    pub fn figure_median(&self, workload: &'static str, metric: &str, rounds: Vec<f64>) -> f64 {
        let m = quartiles(rounds).median;
        self.figure(workload, metric, m);
        m
    }

    /// Prints a figure computed from `n` samples (a percentile) and puts it in the summary.
    pub fn headline_of(
        &mut self,
        workload: &'static str,
        metric: &str,
        value: f64,
        n: usize,
        target: Target,
    ) {
        self.figure(workload, metric, value);
        self.summary.push(Row {
            workload,
            metric: metric.into(),
            value,
            spread: None,
            n,
            target,
        });
    }

    /// Prints the median of a figure measured once per round, puts it in the summary with
    /// its interquartile range, and returns it.
    pub fn headline_median(
        &mut self,
        workload: &'static str,
        metric: &str,
        rounds: Vec<f64>,
        target: Target,
    ) -> f64 {
        let n = rounds.len();
        let q = quartiles(rounds);
        self.figure(workload, metric, q.median);
        self.summary.push(Row {
            workload,
            metric: metric.into(),
            value: q.median,
            spread: Some(q),
            n,
            target,
        });
        q.median
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

    /// The table of headline figures: the value (a median over rounds where there were
    /// rounds), the interquartile range and number of rounds behind it, the target.
    pub fn print_summary(&self) {
        println!(
            "\n== summary (value: median over n rounds, or a percentile of n samples; \
             IQR: the interquartile range)"
        );
        println!(
            "  {:<4} {:<22} {:>12} {:>23} {:>4} {:>10}  result",
            "work", "figure", "value", "IQR", "n", "target"
        );
        for r in &self.summary {
            let iqr = match r.spread {
                Some(q) if r.n > 1 => format!("{} – {}", plain(q.q1), plain(q.q3)),
                _ => "-".into(),
            };
            println!(
                "  {:<4} {:<22} {:>12} {:>23} {:>4} {:>10}  {}",
                r.workload,
                r.metric,
                plain(r.value),
                iqr,
                r.n,
                r.target.describe(),
                r.target.verdict(r.value)
            );
        }
        if let Some(load) = procfs::load_average() {
            println!("load average at the end: {load}");
        }
    }
}

/// A float that any float parser reads: no thousands separators, an exponent for big rates.
pub fn plain(value: f64) -> String {
    if value != 0.0 && (value.abs() >= 1e6 || value.abs() < 1e-3) {
        format!("{value:.4e}")
    } else {
        format!("{value:.4}")
    }
}
