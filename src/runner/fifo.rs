//! One worker: output order equals input order.

use std::time::Duration;

use parking_lot::Mutex;

use super::{StageHandle, StageRunner};
use crate::processor::Processor;
use crate::transport::Recv;

/// Runs a stage on one worker, so outputs leave in the order inputs arrived.
///
/// The processor may be `FnMut` and need not be `Sync` or `Clone`: the stage owns it, and
/// it keeps its state from item to item and from run to run. When several runs of the same
/// pipeline overlap, they take turns on the processor chunk by chunk.
///
/// # Examples
///
/// ```
/// use pipework::{Context, Fifo, Pipeline};
///
/// let mut total = 0;
/// let running_sum = Pipeline::new().stage(
///     "running sum",
///     Fifo::new(move |x: u64, _: &Context| {
///         total += x;
///         Ok(total)
///     }),
/// );
/// let (out, _) = running_sum.collect(1..=4).unwrap();
/// assert_eq!(out, [1, 3, 6, 10]);
/// ```
pub struct Fifo<P> {
    /// The stage's one processor, shared by the runs of the pipeline.
    processor: Mutex<P>,
}

impl<P> Fifo<P> {
    /// A FIFO stage running `processor`.
    pub fn new(processor: P) -> Self {
        Fifo {
            processor: Mutex::new(processor),
        }
    }
}

impl<P> std::fmt::Debug for Fifo<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fifo").finish_non_exhaustive()
    }
}

/// How long a run waits for the processor before looking at its cancellation again.
const LOCK_POLL: Duration = Duration::from_millis(5);

impl<In, Out, P> StageRunner<In, Out> for Fifo<P>
where
    In: Send,
    Out: Send,
    P: Processor<In, Out>,
{
    fn kind(&self) -> &'static str {
        "fifo"
    }

    fn start<'scope>(&'scope self, stage: StageHandle<'scope, '_, In, Out>) {
        stage.spawn(move |mut w| {
            loop {
                // The lock is held per chunk, not per item: uncontended it costs nothing
                // per item, and overlapping runs still interleave.
                let mut processor = loop {
                    if let Some(guard) = self.processor.try_lock_for(LOCK_POLL) {
                        break guard;
                    }
                    if w.context().is_cancelled() {
                        return;
                    }
                };
                let go_on = w.process_buffered(&mut *processor);
                drop(processor);
                if !go_on {
                    return;
                }
                match w.refill(None) {
                    Recv::Got(()) => {}
                    _ => return,
                }
            }
        });
    }
}
