//! W1: the transport's cost alone — identity stages, nothing else to do.

use pipework::Fifo;

use super::triangle;
use crate::baselines::{chunk_chain, copy_chain, item_chain_sum, sequential_identity};
use crate::cli::Mode;
use crate::harness::{Variant, measure};
use crate::pipelines::{LastReport, chain4, identity};
use crate::report::{Out, Target};

/// W1: `mode.w1_items` u64 through 4 identity FIFO stages, against the sequential loop and
/// the hand-written chains: per item, chunked in place, and chunked with a fresh `Vec` per
/// chunk per stage (the copying chain, which moves items the way pipework does).
pub fn run(mode: &Mode, out: &mut Out) {
    let n = mode.w1_items;
    let m = mode.item_chain_items;
    println!("\n== W1 trivial: {n} u64 through 4 identity FIFO stages");
    let pipeline = chain4(|| Fifo::new(identity::<u64>()));
    let last = LastReport::default();
    let [pw, seq, item, chunk, copy] = measure(
        out,
        "W1",
        mode.rounds,
        [
            Variant::new("pipework", n, triangle(n), || last.run_sum(&pipeline, 0..n)),
            Variant::new("sequential", n, triangle(n), || sequential_identity(n)),
            Variant::new("item_chain", m, triangle(m), || item_chain_sum(m)),
            Variant::new("chunk_chain", n, triangle(n), || chunk_chain(n)),
            Variant::new("copy_chain", n, triangle(n), || copy_chain(n)),
        ],
    );
    out.figure_median("W1", "vs_sequential", pw.rate_ratios(&seq));
    out.headline_median(
        "W1",
        "vs_item_chain",
        pw.rate_ratios(&item),
        Target::AtLeast(20.0),
    );
    out.headline_median(
        "W1",
        "vs_chunk_chain",
        pw.rate_ratios(&chunk),
        Target::AtLeast(0.7),
    );
    out.headline_median(
        "W1",
        "vs_copy_chain",
        pw.rate_ratios(&copy),
        Target::AtLeast(0.8),
    );
    if !mode.quick {
        last.print();
    }
}
