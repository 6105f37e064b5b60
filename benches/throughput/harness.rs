//! Timed comparisons: the variants of a workload run interleaved, round by round, after one
//! untimed warm-up round; their checksums are checked, and their median times and CPU times
//! are printed as a table and as `bench` lines.
//!
//! Because every round times every variant, a comparison is made **per round** (the
//! variants' ratio within the round, [`Timing::rate_ratios`]) and the median of those paired
//! ratios is reported: a burst of load from another process then spoils one round's ratio,
//! not the medians of one variant only.

use std::time::Instant;

use crate::procfs;
use crate::report::Out;
use crate::stats::median;

/// One contender of a timed comparison: `run` does the whole job once and returns a
/// checksum, which must equal `expect`.
pub struct Variant<'a> {
    name: &'static str,
    items: u64,
    expect: u64,
    run: Box<dyn FnMut() -> u64 + 'a>,
}

impl<'a> Variant<'a> {
    pub fn new(name: &'static str, items: u64, expect: u64, run: impl FnMut() -> u64 + 'a) -> Self {
        Variant {
            name,
            items,
            expect,
            run: Box::new(run),
        }
    }
}

/// The timed rounds of one variant.
pub struct Timing {
    items: u64,
    /// Wall time of every timed round, in seconds, in round order.
    pub secs: Vec<f64>,
    /// The process's CPU time (all threads) during every timed round, in seconds; 10 ms
    /// resolution (see `procfs`). Empty where `/proc` cannot be read.
    pub cpu_s: Vec<f64>,
    /// The median of `secs`.
    pub median_s: f64,
}

impl Timing {
    /// Items per second at the median time.
    pub fn rate(&self) -> f64 {
        self.items as f64 / self.median_s
    }

    /// This variant's rate over `other`'s, one ratio per round, both taken in that round.
    pub fn rate_ratios(&self, other: &Timing) -> Vec<f64> {
        self.secs
            .iter()
            .zip(&other.secs)
            .map(|(s, o)| (self.items as f64 / s) / (other.items as f64 / o))
            .collect()
    }
}

/// Runs every variant once untimed (a warm-up: caches, the allocator's pools, thread
/// stacks), then `rounds` times, interleaved; checks every checksum; prints a table and each
/// variant's items/s and CPU seconds; returns the timings.
pub fn measure<const N: usize>(
    out: &mut Out,
    workload: &'static str,
    rounds: usize,
    mut variants: [Variant<'_>; N],
) -> [Timing; N] {
    let mut secs: [Vec<f64>; N] = std::array::from_fn(|_| Vec::with_capacity(rounds));
    let mut cpu: [Vec<f64>; N] = std::array::from_fn(|_| Vec::with_capacity(rounds));
    for round in 0..=rounds {
        let warm_up = round == 0;
        for ((v, secs), cpu) in variants.iter_mut().zip(&mut secs).zip(&mut cpu) {
            let cpu_before = procfs::process_cpu_s();
            let started = Instant::now();
            let sum = (v.run)();
            let elapsed = started.elapsed().as_secs_f64();
            let cpu_after = procfs::process_cpu_s();
            out.check(
                sum == v.expect,
                format_args!(
                    "{workload} {}: checksum {sum}, expected {}",
                    v.name, v.expect
                ),
            );
            if warm_up {
                continue;
            }
            secs.push(elapsed);
            if let (Some(before), Some(after)) = (cpu_before, cpu_after) {
                cpu.push(after - before);
            }
        }
    }
    println!(
        "  {:<16} {:>10} {:>11} {:>12} {:>9}   rounds (ms)",
        "variant", "items", "median", "items/s", "cpu ms"
    );
    let timings: [Timing; N] = std::array::from_fn(|i| Timing {
        items: variants[i].items,
        median_s: median(secs[i].clone()),
        secs: std::mem::take(&mut secs[i]),
        cpu_s: std::mem::take(&mut cpu[i]),
    });
    for (v, t) in variants.iter().zip(&timings) {
        let each: Vec<String> = t.secs.iter().map(|s| format!("{:.1}", s * 1e3)).collect();
        let cpu = if t.cpu_s.is_empty() {
            "-".to_owned()
        } else {
            format!("{:.0}", median(t.cpu_s.clone()) * 1e3)
        };
        println!(
            "  {:<16} {:>10} {:>8.1} ms {:>12.4e} {:>9}   {}",
            v.name,
            v.items,
            t.median_s * 1e3,
            t.rate(),
            cpu,
            each.join(" ")
        );
    }
    for (v, t) in variants.iter().zip(&timings) {
        out.figure(workload, &format!("{}_items_per_s", v.name), t.rate());
    }
    for (v, t) in variants.iter().zip(&timings) {
        if !t.cpu_s.is_empty() {
            out.figure_median(workload, &format!("{}_cpu_s", v.name), t.cpu_s.clone());
        }
    }
    timings
}
