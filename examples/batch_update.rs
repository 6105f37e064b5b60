//! A batch-update request, done concurrently: every task goes through validate → audit →
//! update → notify, each step a simulated I/O call. Task 1 fails validation and is routed to
//! the failed list; the others go through.
//!
//! ```text
//! cargo run --release --example batch_update
//! cargo run --release --example batch_update -- --tasks 5000 --step-ms 20 --slow-ms 100 --workers 500
//! cargo run --release --example batch_update -- --trace batch.json --png batch.png
//! ```
//!
//! `--trace FILE` records the run's timeline and writes it in the Trace Event Format (open
//! it in Perfetto, ui.perfetto.dev, or `chrome://tracing`); `--png FILE` draws it.
//!
//! With the defaults (1,000 tasks, 100 ms per step, 500 ms for every fifth task) the
//! whole batch takes about as long as its slowest task's path, 4 × 500 ms = 2 s, where doing
//! one step at a time would take twelve minutes.

// Pedantic lints this example allows, and why:
// - `too_many_lines`: a long function is one scenario, read top to bottom.
#![allow(clippy::too_many_lines)]

mod picture;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use pipework::{BoxError, Dynamic, Failure, Pipeline, StageOptions, with_context};

/// One task update of the request.
#[derive(Debug, Clone)]
struct Task {
    id: u32,
    title: String,
}

/// What the example can be told on the command line.
#[derive(Debug)]
struct Options {
    tasks: u32,
    step: Duration,
    slow: Duration,
    slow_every: u32,
    fail_id: Option<u32>,
    workers: usize,
    timeout: Option<Duration>,
    quiet: bool,
    trace: Option<PathBuf>,
    png: Option<PathBuf>,
}

impl Options {
    fn parse() -> Result<Self, String> {
        let mut o = Options {
            tasks: 1000,
            step: Duration::from_millis(100),
            slow: Duration::from_millis(500),
            slow_every: 5,
            fail_id: Some(1),
            workers: 0,
            timeout: None,
            quiet: false,
            trace: None,
            png: None,
        };
        let mut args = std::env::args().skip(1);
        while let Some(flag) = args.next() {
            let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
            let ms = |v: String| {
                v.parse()
                    .map(Duration::from_millis)
                    .map_err(|e| format!("{e}"))
            };
            match flag.as_str() {
                "--tasks" => {
                    o.tasks = value("--tasks")?
                        .parse()
                        .map_err(|e| format!("--tasks: {e}"))?;
                }
                "--step-ms" => o.step = ms(value("--step-ms")?)?,
                "--slow-ms" => o.slow = ms(value("--slow-ms")?)?,
                "--slow-every" => {
                    o.slow_every = value("--slow-every")?
                        .parse()
                        .map_err(|e| format!("--slow-every: {e}"))?;
                }
                "--fail-id" => {
                    let v = value("--fail-id")?;
                    o.fail_id = if v == "none" {
                        None
                    } else {
                        Some(v.parse().map_err(|e| format!("--fail-id: {e}"))?)
                    };
                }
                "--workers" => {
                    o.workers = value("--workers")?
                        .parse()
                        .map_err(|e| format!("--workers: {e}"))?;
                }
                "--timeout-ms" => o.timeout = Some(ms(value("--timeout-ms")?)?),
                "--quiet" => o.quiet = true,
                "--trace" => o.trace = Some(value("--trace")?.into()),
                "--png" => o.png = Some(value("--png")?.into()),
                "--help" | "-h" => return Err(String::new()),
                other => return Err(format!("unknown argument {other}")),
            }
        }
        if o.workers == 0 {
            // One worker per task in flight, like a goroutine per task.
            o.workers = o.tasks.max(1) as usize;
        }
        Ok(o)
    }

    /// How long one step takes for `task`.
    fn latency(&self, task: &Task) -> Duration {
        if self.slow_every != 0 && task.id % self.slow_every == 0 {
            self.slow
        } else {
            self.step
        }
    }
}

const USAGE: &str = "usage: batch_update [--tasks N] [--step-ms MS] [--slow-ms MS] \
[--slow-every K] [--fail-id ID|none] [--workers MAX_PER_STAGE] [--timeout-ms MS] [--quiet] \
[--trace FILE] [--png FILE]";

fn main() -> ExitCode {
    let opts = match Options::parse() {
        Ok(o) => o,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("error: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };

    // Every step is a simulated call: a sleep that the run's cancellation cuts short. Like a
    // client given a timeout, it waits no longer than the run has left (`--timeout-ms`).
    let step = |name: &'static str| {
        let opts = &opts;
        with_context(move |task: Task, cx| -> Result<Task, BoxError> {
            let latency = opts.latency(&task);
            let budget = cx.remaining().unwrap_or(latency);
            cx.sleep(latency.min(budget))?;
            if budget < latency {
                return Err(format!("task {}: {name} timed out", task.id).into());
            }
            if name == "validate" && Some(task.id) == opts.fail_id {
                return Err(format!("task {} has an empty title", task.id).into());
            }
            Ok(task)
        })
    };
    // Tasks that fail validation are set aside with the reason; the batch goes on.
    let failed = Mutex::new(Vec::new());
    // A thousand I/O-bound workers per stage: small stacks start and stop faster.
    let pipeline = Pipeline::new()
        .stack_size(64 << 10)
        .stage_with(
            "validate",
            Dynamic::new(opts.workers, step("validate")),
            StageOptions::new().route_failures_to(|f: Failure<Task>| {
                let reason = f.error().to_string();
                let stage = f.stage().name().to_owned();
                failed.lock().unwrap().push((f.into_item(), stage, reason));
            }),
        )
        .stage("audit", Dynamic::new(opts.workers, step("audit")))
        .stage("update", Dynamic::new(opts.workers, step("update")))
        .stage("notify", Dynamic::new(opts.workers, step("notify")));

    let tasks: Vec<Task> = (0..opts.tasks)
        .map(|id| Task {
            id,
            title: format!("task #{id}"),
        })
        .collect();
    // What the same work costs one step at a time, and the slowest task's path.
    let serial: Duration = tasks
        .iter()
        .map(|t| {
            let steps = if Some(t.id) == opts.fail_id { 1 } else { 4 };
            opts.latency(t) * steps
        })
        .sum();
    let critical = tasks
        .iter()
        .map(|t| opts.latency(t) * 4)
        .max()
        .unwrap_or_default();

    let started = Instant::now();
    let mut job = pipeline.job();
    if let Some(limit) = opts.timeout {
        job = job.timeout(limit);
    }
    if opts.trace.is_some() || opts.png.is_some() {
        job = job.record_timeline();
    }
    let result = job.run_with(tasks, |updated| {
        Ok(updated.map(|t| t.id).collect::<Vec<_>>())
    });
    let wall = started.elapsed();
    drop(pipeline);
    let failed = failed.into_inner().unwrap();

    let (done, report) = match result {
        Ok(done) => done,
        Err(e) => {
            eprintln!("batch failed: {e:#}");
            if let Some(r) = e.report() {
                eprintln!("{r}");
            }
            return ExitCode::FAILURE;
        }
    };
    println!("batch of {} task updates, 4 steps each", opts.tasks);
    println!(
        "  wall time            {:>9.3} s  ({:.3}x the slowest task's path of {:.3} s)",
        wall.as_secs_f64(),
        wall.as_secs_f64() / critical.as_secs_f64().max(f64::MIN_POSITIVE),
        critical.as_secs_f64()
    );
    println!(
        "  one step at a time   {:>9.3} s  ({:.1} min, {:.0}x slower)",
        serial.as_secs_f64(),
        serial.as_secs_f64() / 60.0,
        serial.as_secs_f64() / wall.as_secs_f64()
    );
    println!("  updated              {:>9}", done.len());
    println!("  failed               {:>9}", failed.len());
    for (task, stage, reason) in &failed {
        println!(
            "    task {} ({:?}) failed in {stage}: {reason}",
            task.id, task.title
        );
    }
    if !opts.quiet {
        println!("\n{report}");
    }
    if let Some(path) = &opts.trace {
        let timeline = report.timeline().expect("recorded");
        let written = std::fs::File::create(path).and_then(|f| timeline.write_trace_events(f));
        if let Err(e) = written {
            eprintln!("cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        println!(
            "wrote the timeline to {} (open it in ui.perfetto.dev)",
            path.display()
        );
    }
    if let Some(path) = &opts.png {
        let title = format!(
            "Batch update: {} tasks x 4 steps of {} ms ({} ms every {}th), Dynamic pools",
            opts.tasks,
            opts.step.as_millis(),
            opts.slow.as_millis(),
            opts.slow_every
        );
        if let Err(e) = picture::write_png(&report, &title, path) {
            eprintln!("cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        println!("drew the timeline in {}", path.display());
    }
    let t = report.totals();
    if t.sunk + t.routed != u64::from(opts.tasks) || !t.is_balanced() {
        eprintln!("accounting mismatch: {t:?}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
