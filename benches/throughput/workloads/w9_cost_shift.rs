//! W9: a cost shift. After many cheap items the chunks have grown large; then a few slow
//! items arrive. Ideally they spread over the workers at once; if they stay together in one
//! big chunk, one worker does them one after another while its siblings idle.
//!
//! The cheap items are ~1 µs of calibrated CPU work (`cpu_work`); the slow ones are 20 ms
//! cancellable sleeps, standing for slow calls: a sleep lets 4 workers overlap on any
//! machine (busy work could not run 4 at once on 2 cores), so the ideal below does not
//! depend on the machine's cores or load. `WORKERS` is 4: more than this machine's 2 cores,
//! so that the slow items' ideal is a quarter of their sequential time.
//!
//! The ideal time of a run is the cheap items' time alone through the same runner
//! (measured in the same round: the cheap part at whatever speed this runner reaches on
//! this machine) plus one slow item's time × ⌈slow items / workers⌉.

use std::hint::black_box;
use std::time::Duration;

use pipework::{Dynamic, Fixed, Ordered, Pipeline, Processor, with_context};

use super::triangle;
use crate::cli::Mode;
use crate::cpu_work::{calibrate, work};
use crate::harness::{Timing, Variant, measure};
use crate::pipelines::run_sum;
use crate::report::{Out, Target};

/// Workers of every runner.
const WORKERS: usize = 4;
/// Cheap items, first.
const CHEAP: u64 = 20_000;
/// Slow items, after the cheap ones.
const SLOW: u64 = 2 * WORKERS as u64;
/// One slow item's time.
const SLOW_STEP: Duration = Duration::from_millis(20);

/// W9's processor: `work` for the first `CHEAP` items, a `SLOW_STEP` sleep for the rest.
fn shifting(rounds: u32) -> impl Processor<u64, u64> + Clone + Sync + 'static {
    with_context(move |x: u64, cx| {
        if x < CHEAP {
            black_box(work(x, rounds));
            Ok(x)
        } else {
            cx.sleep(SLOW_STEP).map(|()| x)
        }
    })
}

/// W9: `CHEAP` + `SLOW` items through one stage of `Fixed`, `Dynamic` and `Ordered` with
/// `WORKERS` workers each, and the cheap items alone through the same stages, rounds
/// interleaved; the ratio of each run to its round's ideal.
pub fn run(mode: &Mode, out: &mut Out) {
    let rounds = calibrate(Duration::from_micros(1));
    let n = CHEAP + SLOW;
    let slow_part = SLOW_STEP.as_secs_f64() * SLOW.div_ceil(WORKERS as u64) as f64;
    println!(
        "\n== W9 cost shift: {CHEAP} items of ~1 µs ({rounds} mixing rounds), then {SLOW} of \
         {} ms (sleeps), one stage of {WORKERS} workers; ideal = cheap items alone + {:.0} ms",
        SLOW_STEP.as_millis(),
        slow_part * 1e3
    );
    let stage = "shift";
    let fixed = Pipeline::new().stage(stage, Fixed::new(WORKERS, shifting(rounds)));
    let dynamic = Pipeline::new().stage(stage, Dynamic::new(WORKERS, shifting(rounds)));
    let ordered = Pipeline::new().stage(stage, Ordered::new(WORKERS, shifting(rounds)));
    let [f, f_cheap, d, d_cheap, o, o_cheap] = measure(
        out,
        "W9",
        mode.rounds,
        [
            Variant::new("fixed", n, triangle(n), || run_sum(&fixed, 0..n).0),
            Variant::new("fixed_cheap", CHEAP, triangle(CHEAP), || {
                run_sum(&fixed, 0..CHEAP).0
            }),
            Variant::new("dynamic", n, triangle(n), || run_sum(&dynamic, 0..n).0),
            Variant::new("dynamic_cheap", CHEAP, triangle(CHEAP), || {
                run_sum(&dynamic, 0..CHEAP).0
            }),
            Variant::new("ordered", n, triangle(n), || run_sum(&ordered, 0..n).0),
            Variant::new("ordered_cheap", CHEAP, triangle(CHEAP), || {
                run_sum(&ordered, 0..CHEAP).0
            }),
        ],
    );
    // Each round's run over that round's ideal.
    let vs_ideal = |mixed: &Timing, cheap: &Timing| -> Vec<f64> {
        mixed
            .secs
            .iter()
            .zip(&cheap.secs)
            .map(|(m, c)| m / (c + slow_part))
            .collect()
    };
    let mut worst: Option<Vec<f64>> = None;
    let mut worst_median = f64::MIN;
    for (name, mixed, cheap) in [
        ("fixed", &f, &f_cheap),
        ("dynamic", &d, &d_cheap),
        ("ordered", &o, &o_cheap),
    ] {
        let ratios = vs_ideal(mixed, cheap);
        let m = out.figure_median("W9", &format!("vs_ideal_{name}"), ratios.clone());
        if m > worst_median {
            worst_median = m;
            worst = Some(ratios);
        }
    }
    if let Some(ratios) = worst {
        out.headline_median("W9", "vs_ideal", ratios, Target::AtMost(1.3));
    }
}
