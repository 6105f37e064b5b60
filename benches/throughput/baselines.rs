//! The contenders that are not pipework: sequential loops, hand-written crossbeam chains,
//! rayon and pariter.

use std::hint::black_box;
use std::thread;

use crossbeam_channel::bounded;
use pariter::IteratorExt as _;
use rayon::prelude::*;

use crate::cpu_work::work;

/// pipework's default queue bound: 16 chunks of at most 256 items. The hand-written chains
/// get the same bound so that they hold as much memory as pipework does.
const QUEUE_CHUNKS: usize = 16;
const CHUNK_ITEMS: usize = 256;

/// The sequential baseline of W1/W2: the same four identity steps in one loop.
pub fn sequential_identity(n: u64) -> u64 {
    (0..n)
        .map(black_box)
        .map(black_box)
        .map(black_box)
        .map(black_box)
        .sum()
}

/// A hand-written chain: a source thread, four stages of `workers` relay threads each that
/// pass every message through `relay` (a stage's workers share its input channel), and
/// `sink` on the calling thread, linked by `bounded` channels of `capacity` messages.
fn chain<T: Send>(
    capacity: usize,
    workers: usize,
    source: impl Iterator<Item = T> + Send,
    relay: impl Fn(T) -> T + Sync,
    mut sink: impl FnMut(T),
) {
    let relay = &relay;
    thread::scope(|s| {
        let (tx, mut rx) = bounded::<T>(capacity);
        s.spawn(move || {
            for item in source {
                tx.send(item).expect("the chain's consumer hung up");
            }
        });
        for _ in 0..4 {
            let (next_tx, next_rx) = bounded::<T>(capacity);
            let input = std::mem::replace(&mut rx, next_rx);
            for _ in 0..workers {
                let (input, next_tx) = (input.clone(), next_tx.clone());
                s.spawn(move || {
                    for item in input {
                        next_tx
                            .send(relay(item))
                            .expect("the chain's consumer hung up");
                    }
                });
            }
            // The workers hold the only senders now: the next stage sees the end of input
            // when the last of them is done.
        }
        for item in rx {
            sink(item);
        }
    });
}

/// The hand-written per-item chain: one item a message, on channels of pipework's default
/// capacity in items.
pub fn item_chain<T: Send>(source: impl Iterator<Item = T> + Send, sink: impl FnMut(T)) {
    chain(QUEUE_CHUNKS * CHUNK_ITEMS, 1, source, black_box, sink);
}

/// The per-item chain over `0..n`; returns the sum.
pub fn item_chain_sum(n: u64) -> u64 {
    let mut sum = 0;
    item_chain(0..n, |x| sum += x);
    sum
}

/// `0..n` in `Vec<u64>` chunks of 256, the chunked chains' source.
fn chunks(n: u64) -> impl Iterator<Item = Vec<u64>> + Send {
    (0..n)
        .step_by(CHUNK_ITEMS)
        .map(move |start| (start..n.min(start + CHUNK_ITEMS as u64)).collect())
}

/// The hand-written chunked chain over `0..n`: `Vec<u64>` chunks of 256 on channels of 16
/// chunks — pipework's default memory bound, with no adaptation. Every stage changes its
/// chunk in place. Returns the sum.
pub fn chunk_chain(n: u64) -> u64 {
    let relay = |mut chunk: Vec<u64>| {
        for x in &mut chunk {
            *x = black_box(*x);
        }
        chunk
    };
    let mut sum = 0;
    chain(QUEUE_CHUNKS, 1, chunks(n), relay, |chunk| {
        sum += chunk.iter().sum::<u64>();
    });
    sum
}

/// The copying chunk chain over `0..n`: `chunk_chain`, except that every stage moves its
/// items into a fresh `Vec` and drops the old one, as pipework's stages do (a stage's
/// outputs are collected in a new chunk). One allocation and one free per chunk per stage.
/// Returns the sum.
pub fn copy_chain(n: u64) -> u64 {
    let relay = |chunk: Vec<u64>| {
        // `with_capacity` and `extend`, not `into_iter().map().collect()`, which the standard
        // library would turn back into an in-place update of the same allocation.
        let mut next = Vec::with_capacity(chunk.len());
        next.extend(chunk.into_iter().map(black_box));
        next
    };
    let mut sum = 0;
    chain(QUEUE_CHUNKS, 1, chunks(n), relay, |chunk| {
        sum += chunk.iter().sum::<u64>();
    });
    sum
}

/// The hand-written `std::thread::scope` chain of W11 over `0..n`: a source thread, four
/// identity stages of `workers` threads each, the sum on the calling thread, one item a
/// message on channels of pipework's default capacity in items. Returns the sum.
pub fn scope_chain_sum(n: u64, workers: usize) -> u64 {
    let mut sum = 0;
    chain(QUEUE_CHUNKS * CHUNK_ITEMS, workers, 0..n, black_box, |x| {
        sum += x;
    });
    sum
}

/// The sequential baseline of W3, W8 and `--scaling`: `work` on `0..n` in one loop.
pub fn sequential_work(n: u64, rounds: u32) -> u64 {
    (0..n).map(|x| work(x, rounds)).sum()
}

/// `work` on `0..n` through rayon's parallel iterator, on the current rayon pool.
pub fn rayon_work(n: u64, rounds: u32) -> u64 {
    (0..n).into_par_iter().map(|x| work(x, rounds)).sum()
}

/// `work` on `0..n` through pariter's `parallel_map`, in input order.
pub fn pariter_work(n: u64, rounds: u32) -> impl Iterator<Item = u64> {
    (0..n).parallel_map(move |x| work(x, rounds))
}
