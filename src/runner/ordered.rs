//! An ordered pool: n workers, outputs in input order, a bounded reorder window.

use super::{Cloned, Factory, Init, check_workers, run_with};
use crate::context::Context;
use crate::engine::{StageHandle, StageRunner};
use crate::error::BoxError;

/// The largest reorder window accepted, in chunks.
const MAX_WINDOW: usize = 1 << 20;

/// Runs a stage on `workers` threads and emits the outputs in the order of the inputs.
///
/// A free worker takes the next chunk of the input, numbered in input order, processes it
/// and queues its outputs; the workers forward each other's queued outputs to the next
/// stage by those numbers, so outputs leave in input order. The pool starts no thread
/// besides its workers. While one chunk is slow, the other workers go on with the chunks
/// after it until their output queues are full: the **reorder window**.
///
/// When a worker is stuck in a slow item (for the chunk budget, about 0.5 ms) while a
/// sibling has nothing to do, the sibling borrows the back half of the rest of its chunk,
/// and the worker puts the borrowed items' outputs back in their place before ending its
/// turn. So slow items that arrive after many cheap ones (when chunks have grown large)
/// spread over the workers instead of queueing behind one of them, and the order holds.
///
/// # Memory bound
///
/// Besides its input queue, the stage holds at most `workers × (2 × window + 1)` chunks:
/// per worker, the one it processes and a queue of `2 × window` chunks of outputs waiting
/// for their turn (each input chunk's outputs end with an empty chunk, so the queue holds
/// `window` chunks' outputs when each fits in one chunk). Each borrowed part of a chunk
/// adds one queue of as many chunks of outputs until its owner forwards them; parts are
/// halves of what a stuck worker has left, so a chunk is lent in at most `max_chunk`
/// parts, and only while its worker is stuck in an item. A chunk holds at most the
/// pipeline's `max_chunk` items, and a single item when items are slow (chunks adapt to
/// about 0.5 ms of work). A one-to-many processor's outputs are sent on in chunks as they
/// come, so they count against the same queue instead of piling up. A slow item therefore
/// delays the stage by at most the window, and never makes memory grow.
///
/// # Examples
///
/// ```
/// use pipework::{map, Ordered, Pipeline};
///
/// let pipeline = Pipeline::new().stage(
///     "square",
///     Ordered::new(4, map(|x: u64| x * x)).window(2),
/// );
/// let (out, _) = pipeline.collect(0..10_000u64).unwrap();
/// assert!(out.iter().enumerate().all(|(i, &y)| y == (i as u64) * (i as u64)));
/// ```
#[derive(Clone)]
pub struct Ordered<M> {
    /// How many workers run.
    workers: usize,
    /// Finished chunks each worker may queue ahead of the pool's output.
    window: usize,
    /// Makes each worker's processor.
    factory: M,
}

impl<P> Ordered<Cloned<P>> {
    /// An ordered pool of `workers` threads, each running a clone of `processor`.
    ///
    /// Zero workers, or more than 65,536, is a configuration error, returned by `run`.
    pub fn new(workers: usize, processor: P) -> Self {
        Ordered::with_factory(workers, Cloned(processor))
    }

    /// A pool of one worker per core ([`cores`](crate::runner::cores)), each running a
    /// clone of `processor`.
    pub fn per_core(processor: P) -> Self {
        Ordered::new(super::cores(), processor)
    }
}

impl<F> Ordered<Init<F>> {
    /// An ordered pool of `workers` threads, each running the processor `init` returns.
    pub fn with_init<P>(workers: usize, init: F) -> Self
    where
        F: Fn(&Context<'_>) -> Result<P, BoxError>,
    {
        Ordered::with_factory(workers, Init(init))
    }
}

impl<M> Ordered<M> {
    /// An ordered pool of `workers` threads whose processors `factory` makes.
    pub fn with_factory(workers: usize, factory: M) -> Self {
        Ordered {
            workers,
            window: 4,
            factory,
        }
    }

    /// How many finished chunks each worker may hold ahead of the slowest one (default 4).
    /// Zero, or more than 2^20 chunks over all workers, is a configuration error.
    #[must_use]
    pub fn window(mut self, chunks: usize) -> Self {
        self.window = chunks;
        self
    }
}

impl<M> std::fmt::Debug for Ordered<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ordered")
            .field("workers", &self.workers)
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

impl<In, Out, M> StageRunner<In, Out> for Ordered<M>
where
    In: Send,
    Out: Send,
    M: Factory<In, Out>,
{
    fn kind(&self) -> &'static str {
        "ordered"
    }

    fn keeps_order(&self) -> bool {
        true
    }

    fn check(&self) -> Result<(), String> {
        check_workers("an ordered pool", self.workers)?;
        // Each worker's queue allocates its `window` slots up front.
        if self.window == 0 || self.window.saturating_mul(self.workers) > MAX_WINDOW {
            return Err(format!(
                "an ordered pool's window must be at least 1 chunk, and workers × window \
                 at most {MAX_WINDOW} chunks"
            ));
        }
        Ok(())
    }

    fn start<'scope>(&'scope self, stage: StageHandle<'scope, '_, In, Out>) {
        stage.spawn_ordered(self.workers, self.window, move |w| {
            run_with(&self.factory, w);
        });
    }
}
