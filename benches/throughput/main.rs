//! Throughput, latency and memory of pipework against baselines measured in the same run.
//!
//! ```text
//! cargo bench --bench throughput              # full sizes, 5 rounds per figure (~130 s)
//! cargo bench --bench throughput -- --quick   # scaled down, a CI smoke test (~21 s on 2 cores)
//! cargo bench --bench throughput -- --scaling # W3's work on 1..cores workers
//! cargo bench --bench throughput -- --quick --only W3,W7   # some workloads only
//! ```
//!
//! Eleven workloads, W1–W11 (see each module in `workloads/`). Every figure is the median of
//! several rounds after a warm-up round, and the variants of a comparison run interleaved,
//! round by round, so that a change in the machine's load (this may share two cores with a
//! build) hits all of them alike; a comparison is the median of the ratios taken within each
//! round, and the summary gives its interquartile range.
//!
//! Besides the human tables, every figure is printed as one line `bench <workload> <metric>
//! <value>` for scripts. A summary at the end compares the figures with their targets; a
//! missed target is reported, not fatal, but a wrong result (a checksum) exits non-zero.
//!
//! The modules:
//! - `cli`: the arguments and the sizes of each mode;
//! - `report`: the machine header, the `bench …` lines, result checks and the summary;
//! - `stats`: medians, quartiles and percentiles;
//! - `harness`: timed, interleaved comparisons of variants (wall and CPU time) and their
//!   table;
//! - `procfs`: CPU time, peak RSS, threads and the CPU model, read from `/proc`;
//! - `child`: measurements in a child process (W4's footprint, W7);
//! - `pipelines`: the pipework stages and runs the workloads share;
//! - `cpu_work`: the calibrated CPU-bound unit of work of W3, W8, W9 and `--scaling`;
//! - `baselines`: the contenders that are not pipework (loops, crossbeam chains, rayon,
//!   pariter);
//! - `workloads`: W1–W11, one file each (W4 has two: its run and its footprint);
//! - `scaling`: the `--scaling` table.

// Pedantic lints this bench allows, and why:
// - `cast_possible_truncation`: small counts and indices (thousands) fit the narrower type.
// - `cast_precision_loss`: counts and nanoseconds far below 2^52 become `f64` rates.
// - `cast_sign_loss`: only non-negative values (counts, rounded ratios) become unsigned.
// - `items_after_statements`: helpers sit next to the one scenario that uses them.
// - `many_single_char_names`: the ideal-time formula keeps its one-letter names.
// - `similar_names`: `stop`/`step`, `build`/`built`: the words they mean.
// - `unused_self`: printing methods take `&self` for one call style.
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_precision_loss,
    clippy::cast_sign_loss,
    clippy::items_after_statements,
    clippy::many_single_char_names,
    clippy::similar_names,
    clippy::unused_self
)]

mod baselines;
mod child;
mod cli;
mod cpu_work;
mod harness;
mod pipelines;
mod procfs;
mod report;
mod scaling;
mod stats;
mod workloads;

use std::process::ExitCode;
use std::time::Instant;

use cli::{Command, Mode};
use report::Out;
use workloads::{w4_footprint, w7_memory};

fn main() -> ExitCode {
    // `cargo bench` adds `--bench` to the arguments; anything not ours is ignored.
    let args: Vec<String> = std::env::args().collect();
    match cli::parse(&args) {
        Ok(Command::W7Child(items, timeline)) => w7_memory::child(items, timeline),
        Ok(Command::W4Child) => w4_footprint::child(),
        Ok(Command::Scaling) => scaling::run(),
        Ok(Command::Bench(mode)) => bench(&mode),
        Err(usage) => {
            eprintln!("{usage}");
            ExitCode::FAILURE
        }
    }
}

/// A workload's entry point.
type Workload = fn(&Mode, &mut Out);

/// Every workload, in the order they run, with its label in the timing line.
const WORKLOADS: [(&str, Workload); 12] = [
    ("W1", workloads::w1_trivial::run),
    ("W2", workloads::w2_pools::run),
    ("W3", workloads::w3_cpu_bound::run),
    ("W8", workloads::w8_ordered::run),
    ("W9", workloads::w9_cost_shift::run),
    ("W4", workloads::w4_article::run),
    ("W4 footprint", w4_footprint::run),
    ("W10", workloads::w10_cancel::run),
    ("W5", workloads::w5_fast_into_slow::run),
    ("W6", workloads::w6_trickle::run),
    ("W7", w7_memory::run),
    ("W11", workloads::w11_small_runs::run),
];

/// Runs every workload, prints the summary and what each workload took, and fails if a
/// result check failed.
fn bench(mode: &Mode) -> ExitCode {
    report::print_machine(mode);
    let mut out = Out::default();
    let started = Instant::now();
    let mut took = Vec::with_capacity(WORKLOADS.len());
    for (name, run) in WORKLOADS {
        if !mode.runs(name) {
            continue;
        }
        let workload_started = Instant::now();
        run(mode, &mut out);
        took.push(format!(
            "{name} {:.1}",
            workload_started.elapsed().as_secs_f64()
        ));
    }
    out.print_summary();
    println!(
        "
seconds per workload: {}",
        took.join(", ")
    );
    println!("total bench time {:.1} s", started.elapsed().as_secs_f64());

    if out.failed_checks() > 0 {
        println!("{} RESULT CHECK(S) FAILED", out.failed_checks());
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
