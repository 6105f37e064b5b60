//! Throughput, latency and memory of pipework against baselines measured in the same run.
//!
//! ```text
//! cargo bench --bench throughput              # full sizes, 5 rounds per figure
//! cargo bench --bench throughput -- --quick   # scaled down, a CI smoke test (< 60 s)
//! cargo bench --bench throughput -- --scaling # W3's work on 1..cores workers
//! ```
//!
//! Eight workloads, W1–W8 (see each module in `workloads/`). Every figure is the median of
//! several rounds, and the variants of a comparison run interleaved, round by round, so that a
//! change in the machine's load (this may share two cores with a build) hits all of them alike.
//!
//! Besides the human tables, every figure is printed as one line `bench <workload> <metric>
//! <value>` for scripts. A summary at the end compares the figures with their targets; a
//! missed target is reported, not fatal, but a wrong result (a checksum) exits non-zero.
//!
//! The modules:
//! - `cli`: the arguments and the sizes of each mode;
//! - `report`: the machine header, the `bench …` lines, result checks and the summary;
//! - `stats`: medians and percentiles;
//! - `harness`: timed, interleaved comparisons of variants and their table;
//! - `pipelines`: the pipework stages and runs the workloads share;
//! - `cpu_work`: the calibrated CPU-bound unit of work of W3, W8 and `--scaling`;
//! - `baselines`: the contenders that are not pipework (loops, crossbeam chains, rayon,
//!   pariter);
//! - `workloads`: W1–W8, one file each;
//! - `scaling`: the `--scaling` table.

mod baselines;
mod cli;
mod cpu_work;
mod harness;
mod pipelines;
mod report;
mod scaling;
mod stats;
mod workloads;

use std::process::ExitCode;
use std::time::Instant;

use cli::{Command, Mode};
use report::Out;
use workloads::w7_memory;

fn main() -> ExitCode {
    // `cargo bench` adds `--bench` to the arguments; anything not ours is ignored.
    let args: Vec<String> = std::env::args().collect();
    match cli::parse(&args) {
        Ok(Command::W7Child(items)) => w7_memory::child(items),
        Ok(Command::Scaling) => scaling::run(),
        Ok(Command::Bench(mode)) => bench(&mode),
        Err(usage) => {
            eprintln!("{usage}");
            ExitCode::FAILURE
        }
    }
}

/// Runs every workload, prints the summary, and fails if a result check failed.
fn bench(mode: &Mode) -> ExitCode {
    report::print_machine(mode);
    let mut out = Out::default();
    let started = Instant::now();
    workloads::w1_trivial::run(mode, &mut out);
    workloads::w2_pools::run(mode, &mut out);
    workloads::w3_cpu_bound::run(mode, &mut out);
    workloads::w8_ordered::run(mode, &mut out);
    workloads::w4_article::run(mode, &mut out);
    workloads::w5_fast_into_slow::run(mode, &mut out);
    workloads::w6_trickle::run(mode, &mut out);
    w7_memory::run(mode, &mut out);
    out.print_summary();
    println!(
        "\ntotal bench time {:.1} s",
        started.elapsed().as_secs_f64()
    );

    if out.failed_checks() > 0 {
        println!("{} RESULT CHECK(S) FAILED", out.failed_checks());
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
