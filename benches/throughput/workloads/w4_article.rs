//! W4, the article's example: 1,000 I/O-bound tasks through 4 stages of up to 1,000
//! workers. With unbounded concurrency the run takes its critical path, 4 × 500 ms. Its
//! footprint (memory, CPU, threads) is measured in `w4_footprint`, its cancellation in
//! `w10_cancel`.

use std::time::Duration;

use pipework::{Dynamic, Pipeline, with_context};

use super::triangle;
use crate::cli::Mode;
use crate::harness::{Variant, measure};
use crate::pipelines::{LastReport, chain4};
use crate::report::{Out, Target};

/// The article's tasks.
pub const TASKS: u64 = 1_000;
/// Every task's path through the 4 stages is at most 4 × 500 ms.
pub const CRITICAL_PATH_S: f64 = 2.0;
/// The most workers of each stage: one per task.
pub const MAX_WORKERS: usize = 1_000;

/// W4's step length: every fifth task is slow at every stage.
pub fn article_step(id: u64) -> Duration {
    if id % 5 == 0 {
        Duration::from_millis(500)
    } else {
        Duration::from_millis(100)
    }
}

/// The article's pipeline: 4 stages of `Dynamic::new(1000)`, every step a cancellable
/// sleep of `article_step`, threads on 64 KiB stacks.
pub fn article_pipeline() -> Pipeline<'static, u64> {
    // As the batch_update demo: thousands of I/O-bound workers, on small stacks.
    chain4(|| {
        Dynamic::new(
            MAX_WORKERS,
            with_context(|id: u64, cx| cx.sleep(article_step(id)).map(|()| id)),
        )
    })
    .stack_size(64 << 10)
}

/// W4: the run's wall time against the critical path.
pub fn run(mode: &Mode, out: &mut Out) {
    println!(
        "\n== W4 the article: {TASKS} tasks x 4 stages of Dynamic::new({MAX_WORKERS}), \
         100 ms a step (500 ms for every fifth task)"
    );
    let pipeline = article_pipeline();
    let last = LastReport::default();
    let [pw] = measure(
        out,
        "W4",
        mode.w4_rounds,
        [Variant::new("pipework", TASKS, triangle(TASKS), || {
            last.run_sum(&pipeline, 0..TASKS)
        })],
    );
    out.figure("W4", "pipework_wall_s", pw.median_s);
    out.headline_median(
        "W4",
        "vs_critical_path",
        pw.secs.iter().map(|s| s / CRITICAL_PATH_S).collect(),
        Target::AtMost(1.01),
    );
    if !mode.quick {
        last.print();
    }
}
