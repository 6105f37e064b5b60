//! W4's footprint: what the batch-update demo (`examples/batch_update.rs` at its defaults,
//! W4's run with a failing task routed aside) costs the machine — peak RSS, CPU time and
//! threads alive at once. Each run happens in a fresh child process (this binary, started
//! with `--w4-child`), so that the peak RSS and CPU time are the run's alone.
//!
//! Inside the child a sampler thread reads `Threads:` from `/proc/self/status` every 2 ms
//! during the run; its own CPU time (read from `/proc/thread-self/stat`) is subtracted from
//! the process's, and it does not count itself among the threads.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use std::sync::Mutex;

use pipework::{BoxError, Dynamic, Failure, Pipeline, StageOptions, with_context};

use super::w4_article::{CRITICAL_PATH_S, MAX_WORKERS, TASKS, article_step};
use crate::child;
use crate::cli::{Mode, W4_CHILD};
use crate::procfs;
use crate::report::{Out, Target};
use crate::stats::median;

/// How often the sampler counts the child's threads.
const SAMPLE_PERIOD: Duration = Duration::from_millis(2);

/// The demo's task that fails validation and is routed to the failure handler.
const FAIL_ID: u32 = 1;

/// The demo's item: one task update (`Clone`, as a stage that routes failures needs).
#[derive(Clone)]
struct Task {
    id: u32,
    title: String,
}

/// Counts this process's threads every `SAMPLE_PERIOD` until `stop`; returns the most it
/// saw, itself excluded, and its own CPU time.
fn sample_threads(stop: &AtomicBool) -> (u64, f64) {
    let mut peak = 0;
    while !stop.load(Ordering::Relaxed) {
        peak = peak.max(procfs::threads().unwrap_or(0));
        thread::sleep(SAMPLE_PERIOD);
    }
    (
        peak.saturating_sub(1),
        procfs::thread_cpu_s().unwrap_or(0.0),
    )
}

/// The W4 child: one run of the batch-update demo, then `key value` pairs for the parent.
/// Exits non-zero if the run failed or its outcome is wrong.
pub fn child() -> ExitCode {
    let step = |name: &'static str| {
        with_context(move |task: Task, cx| -> Result<Task, BoxError> {
            cx.sleep(article_step(u64::from(task.id)))?;
            if name == "validate" && task.id == FAIL_ID {
                return Err(format!("task {} has an empty title", task.id).into());
            }
            Ok(task)
        })
    };
    let failed = Mutex::new(Vec::new());
    let pipeline = Pipeline::new()
        .stack_size(64 << 10)
        .stage_with(
            "validate",
            Dynamic::new(MAX_WORKERS, step("validate")),
            StageOptions::new().route_failures_to(|f: Failure<Task>| {
                failed.lock().unwrap().push(f.into_item().title);
            }),
        )
        .stage("audit", Dynamic::new(MAX_WORKERS, step("audit")))
        .stage("update", Dynamic::new(MAX_WORKERS, step("update")))
        .stage("notify", Dynamic::new(MAX_WORKERS, step("notify")));
    let tasks: Vec<Task> = (0..TASKS as u32)
        .map(|id| Task {
            id,
            title: format!("task #{id}"),
        })
        .collect();

    let stop = AtomicBool::new(false);
    let (result, wall, cpu, (peak_threads, sampler_cpu), done) = thread::scope(|s| {
        let sampler = s.spawn(|| sample_threads(&stop));
        let mut done = 0u64;
        let cpu_before = procfs::process_cpu_s();
        let started = Instant::now();
        let result = pipeline.run(tasks, |_: Task| {
            done += 1;
            Ok(())
        });
        let wall = started.elapsed().as_secs_f64();
        let cpu = procfs::process_cpu_s().zip(cpu_before).map(|(a, b)| a - b);
        stop.store(true, Ordering::Relaxed);
        let sampled = sampler.join().expect("the sampler does not panic");
        (result, wall, cpu, sampled, done)
    });
    drop(pipeline);
    let failed = failed.into_inner().unwrap();
    let report = match result {
        Ok(report) => report,
        Err(e) => {
            eprintln!("W4 child: the run failed: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (Some(cpu), Some(hwm)) = (cpu, procfs::vm_hwm_kb()) else {
        eprintln!("W4 child: no CPU time or VmHWM in /proc");
        return ExitCode::FAILURE;
    };
    let peak_workers: usize = report.stages.iter().map(|s| s.peak_workers).sum();
    let workers_started: usize = report.stages.iter().map(|s| s.workers_started).sum();
    child::print_figures(&[
        ("wall_s", wall),
        ("vmhwm_kb", hwm as f64),
        ("cpu_s", (cpu - sampler_cpu).max(0.0)),
        ("sampler_cpu_s", sampler_cpu),
        ("peak_threads", peak_threads as f64),
        ("peak_workers_sum", peak_workers as f64),
        ("workers_started", workers_started as f64),
    ]);
    let t = report.totals();
    let right = done == TASKS - 1
        && failed.len() == 1
        && failed[0] == format!("task #{FAIL_ID}")
        && t.is_balanced();
    if right {
        ExitCode::SUCCESS
    } else {
        eprintln!("W4 child: {done} done, failed {failed:?}, totals {t:?}");
        ExitCode::FAILURE
    }
}

/// W4's footprint: `mode.w4_rounds` child processes, one demo run each; the medians.
pub fn run(mode: &Mode, out: &mut Out) {
    println!(
        "\n== W4 footprint: the batch-update demo ({TASKS} tasks, W4's steps, task {FAIL_ID} \
         routed aside) in a child process: peak RSS, CPU time, peak threads"
    );
    const KEYS: [&str; 7] = [
        "wall_s",
        "vmhwm_kb",
        "cpu_s",
        "sampler_cpu_s",
        "peak_threads",
        "peak_workers_sum",
        "workers_started",
    ];
    let mut runs: [Vec<f64>; KEYS.len()] = Default::default();
    for _ in 0..mode.w4_rounds {
        let figures = child::run(out, "W4 child", &[W4_CHILD.to_owned()], &KEYS);
        for (key, values) in KEYS.iter().zip(&mut runs) {
            values.extend(figures.as_ref().and_then(|f| f.get(key)));
        }
    }
    if runs[0].is_empty() {
        return; // The failed checks say why.
    }
    let [wall, hwm, cpu, sampler_cpu, threads, workers, started] = runs;
    println!(
        "  {:<10} {:>10} {:>12} {:>12} {:>12} {:>14}",
        "rounds", "wall s", "peak RSS kB", "cpu s", "peak threads", "peak workers"
    );
    println!(
        "  {:<10} {:>10.3} {:>12.0} {:>12.3} {:>12.0} {:>14.0}",
        wall.len(),
        median(wall.clone()),
        median(hwm.clone()),
        median(cpu.clone()),
        median(threads.clone()),
        median(workers.clone())
    );
    out.figure("W4", "child_wall_s", median(wall.clone()));
    out.figure_median(
        "W4",
        "child_vs_critical_path",
        wall.iter().map(|s| s / CRITICAL_PATH_S).collect(),
    );
    out.figure("W4", "sampler_cpu_s", median(sampler_cpu));
    out.figure("W4", "peak_workers_sum", median(workers));
    out.figure("W4", "workers_started", median(started));
    out.headline_median(
        "W4",
        "rss_mb",
        hwm.iter().map(|kb| kb / 1024.0).collect(),
        Target::AtMost(20.0),
    );
    out.headline_median("W4", "cpu_s", cpu, Target::AtMost(0.2));
    out.headline_median("W4", "peak_threads", threads, Target::None);
}
