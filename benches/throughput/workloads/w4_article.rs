//! W4, the article's example: 1,000 I/O-bound tasks through 4 stages of up to 1,000
//! workers. With unbounded concurrency the run takes its critical path, 4 × 500 ms.

use std::time::Duration;

use pipework::{Context, Dynamic};

use super::triangle;
use crate::cli::Mode;
use crate::harness::{Variant, measure};
use crate::pipelines::{LastReport, chain4};
use crate::report::{Out, Target};

/// W4's step length: every fifth task is slow at every stage.
fn article_step(id: u64) -> Duration {
    if id % 5 == 0 {
        Duration::from_millis(500)
    } else {
        Duration::from_millis(100)
    }
}

/// W4: the run's wall time against the critical path.
pub fn run(mode: &Mode, out: &mut Out) {
    const TASKS: u64 = 1_000;
    const CRITICAL_PATH_S: f64 = 2.0;
    println!(
        "\n== W4 the article: {TASKS} tasks x 4 stages of Dynamic::new(1000), \
         100 ms a step (500 ms for every fifth task)"
    );
    let pipeline = chain4(|| {
        Dynamic::new(1000, |id: u64, cx: &Context| {
            cx.sleep(article_step(id))?;
            Ok(id)
        })
    });
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
    out.headline(
        "W4",
        "vs_critical_path",
        pw.median_s / CRITICAL_PATH_S,
        Target::AtMost(1.05),
    );
    if !mode.quick {
        last.print();
    }
}
