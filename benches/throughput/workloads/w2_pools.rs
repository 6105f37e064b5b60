//! W2: W1 through pools, whose workers share an input queue and interleave outputs.

use pipework::{Dynamic, Fixed};

use super::triangle;
use crate::baselines::{chunk_chain, item_chain_sum, sequential_identity};
use crate::cli::Mode;
use crate::harness::{Variant, measure};
use crate::pipelines::{chain4, identity, run_sum};
use crate::report::{Out, Target};

/// W2: W1's items through 4 identity stages of `Fixed::new(2)`, of `Dynamic::new(64)` and
/// of `Dynamic::new(2)`, against W1's baselines. `Dynamic::new(2)` against `Fixed::new(2)`
/// is the price of a dynamic pool on the same number of workers.
pub fn run(mode: &Mode, out: &mut Out) {
    let n = mode.w1_items;
    let m = mode.item_chain_items;
    println!(
        "\n== W2 pools: {n} u64 through 4 identity stages of Fixed::new(2) / Dynamic::new(64) \
         / Dynamic::new(2)"
    );
    let fixed = chain4(|| Fixed::new(2, identity::<u64>()));
    let dynamic = chain4(|| Dynamic::new(64, identity::<u64>()));
    let dynamic2 = chain4(|| Dynamic::new(2, identity::<u64>()));
    let [fixed, dynamic, dynamic2, seq, item, chunk] = measure(
        out,
        "W2",
        mode.rounds,
        [
            Variant::new("fixed", n, triangle(n), || run_sum(&fixed, 0..n).0),
            Variant::new("dynamic", n, triangle(n), || run_sum(&dynamic, 0..n).0),
            Variant::new("dynamic_2", n, triangle(n), || run_sum(&dynamic2, 0..n).0),
            Variant::new("sequential", n, triangle(n), || sequential_identity(n)),
            Variant::new("item_chain", m, triangle(m), || item_chain_sum(m)),
            Variant::new("chunk_chain", n, triangle(n), || chunk_chain(n)),
        ],
    );
    for (name, pool) in [("fixed", &fixed), ("dynamic", &dynamic)] {
        for (baseline, timing) in [
            ("sequential", &seq),
            ("item_chain", &item),
            ("chunk_chain", &chunk),
        ] {
            out.figure_median(
                "W2",
                &format!("vs_{baseline}_{name}"),
                pool.rate_ratios(timing),
            );
        }
    }
    // The worse of the two pools, round by round (Dynamic::new(2) is judged on its own
    // below).
    let worse: Vec<f64> = fixed
        .rate_ratios(&item)
        .into_iter()
        .zip(dynamic.rate_ratios(&item))
        .map(|(f, d)| f.min(d))
        .collect();
    out.headline_median("W2", "vs_item_chain", worse, Target::AtLeast(10.0));
    out.headline_median(
        "W2",
        "dynamic_vs_fixed",
        dynamic2.rate_ratios(&fixed),
        Target::AtLeast(0.7),
    );
}
