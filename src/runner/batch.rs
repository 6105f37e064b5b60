//! A batching stage: consecutive items grouped into `Vec`s for bulk work.

use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::{StageHandle, StageRunner};
use crate::processor::Processor;
use crate::transport::Recv;

/// Groups consecutive items into batches of up to `size` and runs a processor on each
/// batch: for bulk inserts and bulk API calls.
///
/// A batch is processed when it is full, when `max_wait` has passed since its first item
/// arrived, and at the end of the input. One worker processes the batches in order, like
/// [`Fifo`](crate::Fifo); its processor takes a `Vec<In>`.
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
/// use pipework::{Batch, Context, Pipeline};
///
/// let pipeline = Pipeline::new().stage(
///     "bulk insert",
///     Batch::new(100, Duration::from_millis(10), |rows: Vec<u32>, _: &Context| Ok(rows.len())),
/// );
/// let (sizes, report) = pipeline.collect(0..250u32).unwrap();
/// assert_eq!(sizes.iter().sum::<usize>(), 250);
/// assert!(sizes.iter().all(|&n| n <= 100));
/// assert_eq!(report.stages[0].merged, 250 - sizes.len() as u64);
/// assert!(report.totals().is_balanced());
/// ```
pub struct Batch<P> {
    /// The most items in a batch.
    size: usize,
    /// The longest a batch waits for more items after its first one.
    max_wait: Duration,
    /// The stage's one processor.
    processor: Mutex<P>,
}

/// The most slots a batch reserves before it fills (a huge `size` must not allocate up front).
const PREALLOCATE: usize = 4096;

impl<P> Batch<P> {
    /// Batches of up to `size` items, each waiting at most `max_wait` for more after its
    /// first item. A size of zero is a configuration error.
    pub fn new(size: usize, max_wait: Duration, processor: P) -> Self {
        Batch {
            size,
            max_wait,
            processor: Mutex::new(processor),
        }
    }
}

impl<P> std::fmt::Debug for Batch<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch")
            .field("size", &self.size)
            .field("max_wait", &self.max_wait)
            .finish_non_exhaustive()
    }
}

impl<In, Out, P> StageRunner<In, Out> for Batch<P>
where
    In: Send,
    Out: Send,
    P: Processor<Vec<In>, Out>,
{
    fn kind(&self) -> &'static str {
        "batch"
    }

    fn check(&self) -> Result<(), String> {
        if self.size == 0 {
            return Err("a batch needs a size of at least one item".into());
        }
        Ok(())
    }

    fn start<'scope>(&'scope self, stage: StageHandle<'scope, '_, In, Out>) {
        stage.spawn(move |mut w| {
            let mut batch: Vec<In> = Vec::with_capacity(self.size.min(PREALLOCATE));
            let mut due = None;
            loop {
                while batch.len() < self.size {
                    let Some(item) = w.next_buffered() else { break };
                    if batch.is_empty() {
                        due = Instant::now().checked_add(self.max_wait);
                    }
                    batch.push(item);
                }
                if w.context().is_cancelled() {
                    break;
                }
                let ended = if batch.len() == self.size {
                    false
                } else {
                    // Wait for more, but not past the batch's deadline.
                    let deadline = if batch.is_empty() { None } else { due };
                    match w.refill(deadline) {
                        Recv::Got(()) => continue,
                        Recv::TimedOut => false,
                        Recv::Closed => true,
                        Recv::Cancelled => break,
                    }
                };
                if !batch.is_empty() {
                    let full = std::mem::replace(
                        &mut batch,
                        Vec::with_capacity(self.size.min(PREALLOCATE)),
                    );
                    let mut processor = self.processor.lock();
                    if !w.process_batch(&mut *processor, full) {
                        return;
                    }
                }
                if ended {
                    return;
                }
            }
            // Cancelled while gathering: the partial batch is not processed.
            w.count_cancelled(batch.len());
        });
    }
}
