//! A batching stage: consecutive items grouped into `Vec`s for bulk work.

use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::{Factory, Init, PerRun};
use crate::context::Context;
use crate::engine::{Next, StageHandle, StageRunner};
use crate::error::BoxError;

/// Groups consecutive items into batches of up to `size` and runs a processor on each
/// batch: for bulk inserts and bulk API calls.
///
/// A batch is processed when it is full, when `max_wait` has passed since its first item
/// arrived, and at the end of the input. One worker processes the batches in order, like
/// [`Fifo`](crate::Fifo) (and like it, with a processor of its own in each run); its
/// processor takes a `Vec<In>`.
///
/// # Accounting
///
/// From the moment it is processed, a batch of `k` items counts as one item: `k - 1` of its
/// items are counted as merged ([`StageReport::merged`](crate::StageReport::merged)), and the
/// batch is filtered, mapped or failed as a whole (a routed failure hands the whole batch to
/// the handler). When the run is cancelled, the batch being gathered is not processed (no
/// new work starts after cancellation); its items are counted as cancelled.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use pipework::{map, Batch, Pipeline};
///
/// let pipeline = Pipeline::new().stage(
///     "bulk insert",
///     Batch::new(100, Duration::from_millis(10), map(|rows: Vec<u32>| rows.len())),
/// );
/// let (sizes, report) = pipeline.collect(0..250u32).unwrap();
/// assert_eq!(sizes.iter().sum::<usize>(), 250);
/// assert!(sizes.iter().all(|&n| n <= 100));
/// assert_eq!(report.stages[0].merged, 250 - sizes.len() as u64);
/// assert!(report.totals().is_balanced());
/// ```
pub struct Batch<M> {
    /// The most items in a batch.
    size: usize,
    /// The longest a batch waits for more items after its first one.
    max_wait: Duration,
    /// Makes the processor of each run.
    factory: M,
}

/// The most slots a batch reserves before it fills (a huge `size` must not allocate up front).
const PREALLOCATE: usize = 4096;

impl<P: Clone> Batch<PerRun<P>> {
    /// Batches of up to `size` items, each waiting at most `max_wait` for more after its
    /// first item, processed by a clone of `processor` in each run. A size of zero is a
    /// configuration error.
    pub fn new(size: usize, max_wait: Duration, processor: P) -> Self {
        Batch {
            size,
            max_wait,
            factory: PerRun(Mutex::new(processor)),
        }
    }
}

impl<F> Batch<Init<F>> {
    /// Batches as [`new`](Batch::new) makes them, processed in each run by the processor
    /// `init` returns (called once per run, on the worker's thread).
    pub fn with_init<P>(size: usize, max_wait: Duration, init: F) -> Self
    where
        F: Fn(&Context<'_>) -> Result<P, BoxError>,
    {
        Batch {
            size,
            max_wait,
            factory: Init(init),
        }
    }
}

impl<M> std::fmt::Debug for Batch<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch")
            .field("size", &self.size)
            .field("max_wait", &self.max_wait)
            .finish_non_exhaustive()
    }
}

impl<In, Out, M> StageRunner<In, Out> for Batch<M>
where
    In: Send,
    Out: Send,
    M: Factory<Vec<In>, Out>,
{
    fn kind(&self) -> &'static str {
        "batch"
    }

    fn keeps_order(&self) -> bool {
        true
    }

    fn check(&self) -> Result<(), String> {
        if self.size == 0 {
            return Err("a batch needs a size of at least one item".into());
        }
        Ok(())
    }

    fn start<'scope>(&'scope self, stage: StageHandle<'scope, '_, In, Out>) {
        stage.spawn(move |mut w| {
            let mut processor = match self.factory.make(w.context()) {
                Ok(p) => p,
                Err(e) => return w.fail(e),
            };
            let fresh = || Vec::with_capacity(self.size.min(PREALLOCATE));
            let mut batch: Vec<In> = fresh();
            let mut due: Option<Instant> = None;
            loop {
                // Wait for more, but not past the batch's deadline.
                let next = match due {
                    Some(at) if !batch.is_empty() => {
                        w.next_within(at.saturating_duration_since(Instant::now()))
                    }
                    _ => w.recv().map_or(Next::End, Next::Item),
                };
                let ended = match next {
                    Next::Item(item) => {
                        if batch.is_empty() {
                            due = Instant::now().checked_add(self.max_wait);
                        }
                        batch.push(item);
                        if batch.len() < self.size {
                            continue;
                        }
                        false
                    }
                    Next::Idle => false,
                    // A batcher does not lend its thread: `Lent` never comes.
                    Next::End | Next::Lent => true,
                };
                if w.context().is_cancelled() {
                    // The partial batch is not processed: the worker counts its items as
                    // cancelled when it ends.
                    return;
                }
                if !batch.is_empty() {
                    let full = std::mem::replace(&mut batch, fresh());
                    if !w.process_batch(&mut processor, full) {
                        return;
                    }
                }
                if ended {
                    return;
                }
            }
        });
    }
}
