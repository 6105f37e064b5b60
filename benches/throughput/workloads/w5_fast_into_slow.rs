//! W5: a source far faster than its one slow stage. With chunks of one for slow consumers
//! every worker stays busy, and the run takes items × 10 ms / 64.

use std::time::Duration;

use pipework::{Dynamic, Fixed, Pipeline, with_context};

use super::triangle;
use crate::cli::Mode;
use crate::harness::{Timing, Variant, measure};
use crate::pipelines::run_sum;
use crate::report::{Out, Target};

/// W5: `mode.w5_items` items from a `Vec` into one stage of 64 sleeping workers, fixed and
/// dynamic, against the ideal wall time.
pub fn run(mode: &Mode, out: &mut Out) {
    const WORKERS: usize = 64;
    const STEP: Duration = Duration::from_millis(10);
    let n = mode.w5_items;
    let ideal = STEP.as_secs_f64() * n as f64 / WORKERS as f64;
    println!(
        "\n== W5 fast into slow: {n} items from a Vec into one stage of {WORKERS} workers \
         sleeping {} ms; ideal {:.0} ms",
        STEP.as_millis(),
        ideal * 1e3
    );
    let slow = with_context(|x: u64, cx| cx.sleep(STEP).map(|()| x));
    let fixed = Pipeline::new().stage("slow", Fixed::new(WORKERS, slow));
    let dynamic = Pipeline::new().stage("slow", Dynamic::new(WORKERS, slow));
    let items = || (0..n).collect::<Vec<u64>>();
    let [fixed, dynamic] = measure(
        out,
        "W5",
        mode.rounds,
        [
            Variant::new("fixed", n, triangle(n), || run_sum(&fixed, items()).0),
            Variant::new("dynamic", n, triangle(n), || run_sum(&dynamic, items()).0),
        ],
    );
    out.figure("W5", "fixed_wall_s", fixed.median_s);
    out.figure("W5", "dynamic_wall_s", dynamic.median_s);
    let vs_ideal = |t: &Timing| t.secs.iter().map(|s| s / ideal).collect::<Vec<f64>>();
    out.figure_median("W5", "vs_ideal_dynamic", vs_ideal(&dynamic));
    out.headline_median("W5", "vs_ideal", vs_ideal(&fixed), Target::AtMost(1.2));
}
