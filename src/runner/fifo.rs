//! One worker: output order equals input order.

use parking_lot::Mutex;

use super::{Factory, Init, PerRun, run_with};
use crate::context::Context;
use crate::engine::{StageHandle, StageRunner};
use crate::error::BoxError;

/// Runs a stage on one worker, so outputs leave in the order inputs arrived.
///
/// The processor may be `FnMut` and need not be `Sync`. **Every run gets its own copy**:
/// [`new`](Self::new) clones the processor at the start of each run, and
/// [`with_init`](Self::with_init) calls its init closure once per run. Concurrent runs of
/// one pipeline therefore never take turns on a processor, and a run never sees the state
/// another left behind. State meant to outlive a run is an explicit choice: capture an
/// `Arc<Mutex<…>>` (or an atomic) and lock it where you need it.
///
/// # Examples
///
/// ```
/// use pipework::{map, Fifo, Pipeline};
///
/// let mut total = 0;
/// let running_sum = Pipeline::new().stage(
///     "running sum",
///     Fifo::new(map(move |x: u64| {
///         total += x;
///         total
///     })),
/// );
/// let (out, _) = running_sum.collect(1..=4).unwrap();
/// assert_eq!(out, [1, 3, 6, 10]);
/// // A second run starts from a fresh copy.
/// let (out, _) = running_sum.collect(1..=2).unwrap();
/// assert_eq!(out, [1, 3]);
/// ```
pub struct Fifo<M> {
    /// Makes the processor of each run.
    factory: M,
}

impl<P: Clone> Fifo<PerRun<P>> {
    /// A FIFO stage running a clone of `processor` in each run.
    pub fn new(processor: P) -> Self {
        Fifo {
            factory: PerRun(Mutex::new(processor)),
        }
    }
}

impl<F> Fifo<Init<F>> {
    /// A FIFO stage running, in each run, the processor `init` returns (called once per
    /// run, on the worker's thread): for processors that cannot be cloned.
    pub fn with_init<P>(init: F) -> Self
    where
        F: Fn(&Context<'_>) -> Result<P, BoxError>,
    {
        Fifo {
            factory: Init(init),
        }
    }
}

impl<M> std::fmt::Debug for Fifo<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fifo").finish_non_exhaustive()
    }
}

impl<In, Out, M> StageRunner<In, Out> for Fifo<M>
where
    In: Send,
    Out: Send,
    M: Factory<In, Out>,
{
    fn kind(&self) -> &'static str {
        "fifo"
    }

    fn keeps_order(&self) -> bool {
        true
    }

    fn start<'scope>(&'scope self, stage: StageHandle<'scope, '_, In, Out>) {
        stage.spawn(move |w| run_with(&self.factory, w));
    }
}
