//! A run's timeline, recorded and drawn: a cost shift — 20,000 cheap items (about 1 µs of
//! CPU each), then 8 slow ones (20 ms calls) — on a pool of 4 workers. The picture shows
//! the cheap items spread over every worker, then the slow ones given back to idle
//! siblings one by one instead of queueing behind the worker whose chunk held them.
//!
//! ```text
//! cargo run --release --example timeline                                  # writes cost_shift.png
//! cargo run --release --example timeline -- --png docs/cost_shift.png --trace cost_shift.json
//! cargo run --release --example timeline -- --runner ordered              # fixed, dynamic, ordered
//! ```
//!
//! Open the `--trace` file in Perfetto (ui.perfetto.dev) or `chrome://tracing`.

// Pedantic lints this example allows, and why:
// - `cast_possible_truncation`, `cast_sign_loss`: the calibrated round count, a positive
//   number in the thousands, becomes a `u32`.
#![allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]

mod picture;

use std::hint::black_box;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use pipework::runner::StageRunner;
use pipework::{BoxError, Dynamic, Fixed, Ordered, Pipeline, State, with_context};

/// Workers of the pool.
const WORKERS: usize = 4;
/// Cheap items, first.
const CHEAP: u64 = 20_000;
/// Slow items, after the cheap ones.
const SLOW: u64 = 2 * WORKERS as u64;
/// One slow item's time.
const SLOW_STEP: Duration = Duration::from_millis(20);

/// `rounds` rounds of integer mixing.
fn work(x: u64, rounds: u32) -> u64 {
    let mut h = x;
    for i in 0..rounds {
        h = (h ^ u64::from(i))
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .rotate_left(17);
    }
    h
}

/// The rounds of `work` that take about 1 µs here.
fn calibrate() -> u32 {
    let rounds = 1_000;
    let started = Instant::now();
    for x in 0..2_000 {
        black_box(work(x, rounds));
    }
    let per_round = started.elapsed().as_secs_f64() / 2_000.0 / f64::from(rounds);
    ((1e-6 / per_round) as u32).max(1)
}

struct Options {
    png: PathBuf,
    trace: Option<PathBuf>,
    runner: String,
}

fn parse() -> Result<Options, String> {
    let mut o = Options {
        png: PathBuf::from("cost_shift.png"),
        trace: None,
        runner: "fixed".into(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match flag.as_str() {
            "--png" => o.png = value("--png")?.into(),
            "--trace" => o.trace = Some(value("--trace")?.into()),
            "--runner" => o.runner = value("--runner")?,
            "--help" | "-h" => return Err(String::new()),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(o)
}

const USAGE: &str = "usage: timeline [--png FILE] [--trace FILE] [--runner fixed|dynamic|ordered]";

fn main() -> ExitCode {
    let opts = match parse() {
        Ok(o) => o,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("error: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let rounds = calibrate();
    let shifting = with_context(move |x: u64, cx| -> Result<u64, BoxError> {
        if x < CHEAP {
            black_box(work(x, rounds));
        } else {
            cx.sleep(SLOW_STEP)?;
        }
        Ok(x)
    });
    let runner: Box<dyn StageRunner<u64, u64>> = match opts.runner.as_str() {
        "fixed" => Box::new(Fixed::new(WORKERS, shifting)),
        "dynamic" => Box::new(Dynamic::new(WORKERS, shifting)),
        "ordered" => Box::new(Ordered::new(WORKERS, shifting)),
        other => {
            eprintln!("error: unknown runner {other}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let pipeline = Pipeline::new().stage("shift", runner);
    let mut sum = 0u64;
    let report = match pipeline
        .job()
        .record_timeline()
        .run(0..CHEAP + SLOW, |x: u64| {
            sum += x;
            Ok(())
        }) {
        Ok(report) => report,
        Err(e) => {
            eprintln!("run failed: {e}");
            return ExitCode::FAILURE;
        }
    };
    let n = CHEAP + SLOW;
    if sum != n * (n - 1) / 2 {
        eprintln!("wrong sum {sum}");
        return ExitCode::FAILURE;
    }
    println!(
        "cost shift: {CHEAP} items of ~1 µs, then {SLOW} of {} ms, on {} with {WORKERS} workers",
        SLOW_STEP.as_millis(),
        opts.runner
    );
    println!(
        "  the slow items alone, spread evenly: {} ms\n",
        SLOW_STEP.as_millis() * u128::from(SLOW.div_ceil(WORKERS as u64))
    );
    println!("{report}\n");
    let timeline = report.timeline().expect("recorded");
    for track in timeline.tracks() {
        println!(
            "  {:<10} busy {:>8.1} ms   waiting {:>8.1} ms   blocked {:>8.1} ms   ({} intervals)",
            track.kind().label(),
            track.total(State::Busy).as_secs_f64() * 1e3,
            track.total(State::Waiting).as_secs_f64() * 1e3,
            track.total(State::Blocked).as_secs_f64() * 1e3,
            track.intervals().len()
        );
    }
    let title = format!(
        "Cost shift: {CHEAP} cheap items, then {SLOW} x {} ms, on {} ({WORKERS} workers)",
        SLOW_STEP.as_millis(),
        opts.runner
    );
    if let Err(e) = picture::write_png(&report, &title, &opts.png) {
        eprintln!("cannot write {}: {e}", opts.png.display());
        return ExitCode::FAILURE;
    }
    println!("\nwrote {}", opts.png.display());
    if let Some(path) = &opts.trace {
        let written = std::fs::File::create(path).and_then(|f| timeline.write_trace_events(f));
        if let Err(e) = written {
            eprintln!("cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        println!(
            "wrote {} (open it in ui.perfetto.dev or chrome://tracing)",
            path.display()
        );
    }
    ExitCode::SUCCESS
}
