//! W2: W1 through pools, whose workers share an input queue and interleave outputs.

use pipework::{Dynamic, Fixed};

use super::triangle;
use crate::baselines::{chunk_chain, item_chain_sum, sequential_identity};
use crate::cli::Mode;
use crate::harness::{Variant, measure};
use crate::pipelines::{chain4, identity, run_sum};
use crate::report::{Out, Target};

/// W2: W1's items through 4 identity stages of `Fixed::new(2)` and of `Dynamic::new(64)`,
/// against W1's baselines.
pub fn run(mode: &Mode, out: &mut Out) {
    let n = mode.w1_items;
    let m = mode.item_chain_items;
    println!(
        "\n== W2 pools: {n} u64 through 4 identity stages of Fixed::new(2) / Dynamic::new(64)"
    );
    let fixed = chain4(|| Fixed::new(2, identity::<u64>));
    let dynamic = chain4(|| Dynamic::new(64, identity::<u64>));
    let [fixed, dynamic, seq, item, chunk] = measure(
        out,
        "W2",
        mode.rounds,
        [
            Variant::new("fixed", n, triangle(n), || run_sum(&fixed, 0..n).0),
            Variant::new("dynamic", n, triangle(n), || run_sum(&dynamic, 0..n).0),
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
            out.figure(
                "W2",
                &format!("vs_{baseline}_{name}"),
                pool.rate() / timing.rate(),
            );
        }
    }
    let worse = fixed.rate().min(dynamic.rate());
    out.headline(
        "W2",
        "vs_item_chain",
        worse / item.rate(),
        Target::AtLeast(10.0),
    );
}
