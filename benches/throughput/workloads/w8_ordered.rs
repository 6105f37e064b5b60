//! W8: W3's CPU-bound stage through the ordered pool, which must deliver in input order.

use std::time::Duration;

use pipework::{Fixed, Ordered, Pipeline};

use crate::baselines::{pariter_work, sequential_work};
use crate::cli::Mode;
use crate::cpu_work::{calibrate, work, work_stage};
use crate::harness::{Variant, measure};
use crate::pipelines::{run_sink, run_sum};
use crate::report::{Out, Target};

/// An order-sensitive fold: equal only for the same values in the same order.
fn ordered_fold(acc: u64, x: u64) -> u64 {
    acc.wrapping_mul(0x100_0000_01B3).wrapping_add(x)
}

/// W8: W3's items through `Ordered::new(2)`, compared in the same run with the unordered
/// fixed pool and with pariter (also ordered).
pub fn run(mode: &Mode, out: &mut Out) {
    let n = mode.w3_items;
    let rounds = calibrate(Duration::from_micros(5));
    let in_order: u64 = (0..n).map(|x| work(x, rounds)).fold(0, ordered_fold);
    let any_order = sequential_work(n, rounds);
    println!("\n== W8 ordered: W3's {n} items through Ordered::new(2), outputs in input order");
    let ordered = Pipeline::new().stage("work", Ordered::new(2, work_stage(rounds)));
    let fixed = Pipeline::new().stage("work", Fixed::new(2, work_stage(rounds)));
    let [pw, pool, pariter] = measure(
        out,
        "W8",
        mode.rounds,
        [
            Variant::new("ordered", n, in_order, || {
                let mut acc = 0;
                run_sink(&ordered, 0..n, |x| acc = ordered_fold(acc, x));
                acc
            }),
            Variant::new("fixed_pool", n, any_order, || run_sum(&fixed, 0..n).0),
            Variant::new("pariter", n, in_order, || {
                pariter_work(n, rounds).fold(0, ordered_fold)
            }),
        ],
    );
    out.headline_median(
        "W8",
        "vs_fixed_pool",
        pw.rate_ratios(&pool),
        Target::AtLeast(0.9),
    );
    out.headline_median(
        "W8",
        "vs_pariter",
        pw.rate_ratios(&pariter),
        Target::AtLeast(1.0),
    );
}
