//! W3: CPU-bound items on as many workers as cores, against the usual parallel iterators.

use std::time::{Duration, Instant};

use pipework::{Fixed, Pipeline};

use crate::baselines::{pariter_work, rayon_work, sequential_work};
use crate::cli::Mode;
use crate::cpu_work::{calibrate, work_stage};
use crate::harness::{Variant, measure};
use crate::pipelines::{run_sum, run_sum_timeline};
use crate::report::{Out, Target};

/// W3: `mode.w3_items` items of about 5 µs of work through one `Fixed::new(2)` stage,
/// against a sequential loop, rayon and pariter; and the same run recording its timeline
/// (`Job::record_timeline`), whose cost is `timeline_overhead`: its time over the plain
/// run's, paired round by round (target: at most 5 % more).
pub fn run(mode: &Mode, out: &mut Out) {
    let n = mode.w3_items;
    let rounds = calibrate(Duration::from_micros(5));
    let started = Instant::now();
    // The reference result, computed once before timing; every variant must reproduce it.
    let expect = sequential_work(n, rounds);
    let per_call = started.elapsed().as_secs_f64() / n as f64;
    println!(
        "\n== W3 CPU-bound: {n} items, one stage Fixed::new(2) of {rounds} mixing rounds \
         ({:.2} µs a call)",
        per_call * 1e6
    );
    out.figure("W3", "work_us_per_item", per_call * 1e6);
    let pipeline = Pipeline::new().stage("work", Fixed::new(2, work_stage(rounds)));
    let [pw, seq, rayon, pariter, timeline] = measure(
        out,
        "W3",
        mode.rounds,
        [
            Variant::new("pipework", n, expect, || run_sum(&pipeline, 0..n).0),
            Variant::new("sequential", n, expect, || sequential_work(n, rounds)),
            Variant::new("rayon", n, expect, || rayon_work(n, rounds)),
            Variant::new("pariter", n, expect, || pariter_work(n, rounds).sum()),
            Variant::new("pipework_timeline", n, expect, || {
                run_sum_timeline(&pipeline, 0..n)
            }),
        ],
    );
    out.headline_median(
        "W3",
        "vs_sequential",
        pw.rate_ratios(&seq),
        Target::AtLeast(1.8),
    );
    out.headline_median(
        "W3",
        "vs_rayon",
        pw.rate_ratios(&rayon),
        Target::AtLeast(1.0),
    );
    out.headline_median("W3", "vs_pariter", pw.rate_ratios(&pariter), Target::None);
    // The plain run's rate over the recording run's: the recording run's time over the
    // plain run's.
    out.headline_median(
        "W3",
        "timeline_overhead",
        pw.rate_ratios(&timeline),
        Target::AtMost(1.05),
    );
}
