//! The CPU-bound unit of work of W3, W8, W9 and `--scaling`, calibrated to a duration.

use std::hint::black_box;
use std::time::{Duration, Instant};

use pipework::{Processor, map};

/// W3's unit of work: a chain of xorshift-multiply rounds over the item. Each round depends
/// on the last, so the optimiser can neither skip nor vectorise it. The result keeps 32
/// bits so that sums of it cannot overflow.
pub fn work(item: u64, rounds: u32) -> u64 {
    let mut h = item ^ 0xcbf2_9ce4_8422_2325;
    for _ in 0..rounds {
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 29;
    }
    h >> 32
}

/// `work` as a pipework processor, for a stage of any runner.
pub fn work_stage(rounds: u32) -> impl Processor<u64, u64> + Clone + Sync + 'static {
    map(move |x: u64| work(x, rounds))
}

/// The number of rounds that makes one call of `work` take about `target`.
pub fn calibrate(target: Duration) -> u32 {
    const PROBE_ROUNDS: u32 = 1_000;
    const CALLS: u64 = 200;
    // The fastest of several probes: another process stealing the core during one probe
    // would otherwise make every later call shorter than the target.
    let best = (0..7)
        .map(|_| {
            let started = Instant::now();
            let sum: u64 = (0..CALLS).map(|i| work(black_box(i), PROBE_ROUNDS)).sum();
            black_box(sum);
            started.elapsed()
        })
        .min()
        .expect("at least one probe");
    let per_round = best.as_secs_f64() / (CALLS as f64 * f64::from(PROBE_ROUNDS));
    (target.as_secs_f64() / per_round).round().max(1.0) as u32
}
