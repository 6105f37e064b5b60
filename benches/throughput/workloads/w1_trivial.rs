//! W1: the transport's cost alone — identity stages, nothing else to do.

use pipework::Fifo;

use super::triangle;
use crate::baselines::{chunk_chain, item_chain_sum, sequential_identity};
use crate::cli::Mode;
use crate::harness::{Variant, measure};
use crate::pipelines::{LastReport, chain4, identity};
use crate::report::{Out, Target};

/// W1: `mode.w1_items` u64 through 4 identity FIFO stages, against the sequential loop and
/// the hand-written chains.
pub fn run(mode: &Mode, out: &mut Out) {
    let n = mode.w1_items;
    let m = mode.item_chain_items;
    println!("\n== W1 trivial: {n} u64 through 4 identity FIFO stages");
    let pipeline = chain4(|| Fifo::new(identity::<u64>));
    let last = LastReport::default();
    let [pw, seq, item, chunk] = measure(
        out,
        "W1",
        mode.rounds,
        [
            Variant::new("pipework", n, triangle(n), || last.run_sum(&pipeline, 0..n)),
            Variant::new("sequential", n, triangle(n), || sequential_identity(n)),
            Variant::new("item_chain", m, triangle(m), || item_chain_sum(m)),
            Variant::new("chunk_chain", n, triangle(n), || chunk_chain(n)),
        ],
    );
    out.figure("W1", "vs_sequential", pw.rate() / seq.rate());
    out.headline(
        "W1",
        "vs_item_chain",
        pw.rate() / item.rate(),
        Target::AtLeast(20.0),
    );
    out.headline(
        "W1",
        "vs_chunk_chain",
        pw.rate() / chunk.rate(),
        Target::AtLeast(0.7),
    );
    if !mode.quick {
        last.print();
    }
}
