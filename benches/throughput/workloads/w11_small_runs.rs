//! W11: small runs, where a run's fixed costs (starting and joining threads, setting up
//! queues, the report) are all there is. One `run()` of 1, 12 and 1,000 items through 4
//! identity stages of each runner kind, against a hand-written `std::thread::scope` chain
//! with the same number of threads that process items (a source thread, 1 or 2 per stage,
//! the sum on the calling thread) linked by bounded crossbeam channels, one item a message.
//! pipework's helper threads (the dynamic pool's watcher, the ordered pool's distributor and
//! collector) are part of its cost. The chain does not keep order, even against `Ordered`.
//!
//! Every timed pipework run is paired with a run of the chain, in alternating order; a
//! case's figure is the median of the pairs' time ratios (pipework's time over the chain's:
//! 1.1 means pipework takes 10% longer), and `vs_scope_chain` is the largest of the cases'
//! figures, so that its target, ≤ 1.1, bounds every case.

use std::time::Instant;

use pipework::{Dynamic, Fifo, Fixed, Ordered, Pipeline};

use super::triangle;
use crate::baselines::scope_chain_sum;
use crate::cli::Mode;
use crate::pipelines::{chain4, identity, run_sum};
use crate::report::{Out, Target};
use crate::stats::quartiles;

/// The run sizes.
const SIZES: [u64; 3] = [1, 12, 1_000];
/// Untimed runs of each case before its timed ones.
const WARM_UP_RUNS: usize = 5;

/// The seconds `f` takes, and its result.
fn timed(f: impl FnOnce() -> u64) -> (f64, u64) {
    let started = Instant::now();
    let sum = f();
    (started.elapsed().as_secs_f64(), sum)
}

/// W11: every runner kind at every size, `mode.w11_repeats` paired runs each.
pub fn run(mode: &Mode, out: &mut Out) {
    println!(
        "\n== W11 small runs: 1 / 12 / 1,000 items through 4 identity stages, one run() \
         against a thread::scope chain with as many threads; {} pairs a case",
        mode.w11_repeats
    );
    let kinds: [(&str, usize, Pipeline<'static, u64>); 4] = [
        ("fifo", 1, chain4(|| Fifo::new(identity::<u64>()))),
        ("fixed_2", 2, chain4(|| Fixed::new(2, identity::<u64>()))),
        (
            "dynamic_2",
            2,
            chain4(|| Dynamic::new(2, identity::<u64>())),
        ),
        (
            "ordered_2",
            2,
            chain4(|| Ordered::new(2, identity::<u64>())),
        ),
    ];
    println!(
        "  {:<20} {:>14} {:>16} {:>10} {:>17}",
        "case", "pipework µs", "scope chain µs", "ratio", "ratio IQR"
    );
    // The worst case's name, median ratio and every ratio.
    let mut worst: Option<(String, f64, Vec<f64>)> = None;
    for (kind, workers, pipeline) in &kinds {
        for n in SIZES {
            let pw = || run_sum(pipeline, 0..n).0;
            let chain = || scope_chain_sum(n, *workers);
            for _ in 0..WARM_UP_RUNS {
                pw();
                chain();
            }
            let mut pw_us = Vec::with_capacity(mode.w11_repeats);
            let mut chain_us = Vec::with_capacity(mode.w11_repeats);
            let mut ratios = Vec::with_capacity(mode.w11_repeats);
            let mut wrong = 0;
            for rep in 0..mode.w11_repeats {
                let ((p, p_sum), (c, c_sum)) = if rep % 2 == 0 {
                    let p = timed(pw);
                    (p, timed(chain))
                } else {
                    let c = timed(chain);
                    (timed(pw), c)
                };
                wrong += usize::from(p_sum != triangle(n)) + usize::from(c_sum != triangle(n));
                pw_us.push(p * 1e6);
                chain_us.push(c * 1e6);
                ratios.push(p / c);
            }
            let case = format!("{kind}_{n}");
            out.check(
                wrong == 0,
                format_args!("W11 {case}: {wrong} runs with a wrong sum"),
            );
            let q = quartiles(ratios.clone());
            println!(
                "  {case:<20} {:>14.1} {:>16.1} {:>10.3} {:>17}",
                quartiles(pw_us.clone()).median,
                quartiles(chain_us.clone()).median,
                q.median,
                format!("{:.3} – {:.3}", q.q1, q.q3)
            );
            out.figure_median("W11", &format!("{case}_pipework_us"), pw_us);
            out.figure_median("W11", &format!("{case}_scope_chain_us"), chain_us);
            out.figure("W11", &format!("{case}_vs_scope_chain"), q.median);
            if worst.as_ref().is_none_or(|(_, m, _)| q.median > *m) {
                worst = Some((case, q.median, ratios));
            }
        }
    }
    if let Some((case, _, ratios)) = worst {
        println!("  worst case: {case}");
        out.headline_median("W11", "vs_scope_chain", ratios, Target::AtMost(1.1));
    }
}
