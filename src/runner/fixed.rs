//! A fixed pool: exactly n workers sharing the input.

use super::{Cloned, Factory, Init, check_workers, run_with};
use crate::context::Context;
use crate::engine::{StageHandle, StageRunner};
use crate::error::BoxError;

/// Runs a stage on exactly `workers` threads that take items from one shared queue.
///
/// Output order is not kept. Each worker has its own processor: a clone of the one given to
/// [`new`](Self::new), or the result of the init closure given to
/// [`with_init`](Self::with_init), called exactly once per worker on the worker's thread.
///
/// # Examples
///
/// Per-worker state through an init closure:
///
/// ```
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use pipework::{map, Fixed, Pipeline};
///
/// let inits = AtomicUsize::new(0);
/// let pipeline = Pipeline::new().stage(
///     "hash",
///     Fixed::with_init(3, |_| {
///         inits.fetch_add(1, Ordering::Relaxed);
///         let mut scratch = String::new(); // owned by this worker
///         Ok(map(move |x: u32| {
///             scratch.clear();
///             scratch.push_str(&x.to_string());
///             scratch.len()
///         }))
///     }),
/// );
/// let (out, report) = pipeline.collect(0..1000).unwrap();
/// assert_eq!(out.iter().sum::<usize>(), 10 + 180 + 2700);
/// assert_eq!(inits.load(Ordering::Relaxed), 3);
/// assert_eq!(report.stages[0].workers_started, 3);
/// ```
#[derive(Clone)]
pub struct Fixed<M> {
    /// How many workers run.
    workers: usize,
    /// Makes each worker's processor.
    factory: M,
}

impl<P> Fixed<Cloned<P>> {
    /// A pool of `workers` threads, each running a clone of `processor`.
    ///
    /// Zero workers, or more than 65,536, is a configuration error, returned by `run`.
    pub fn new(workers: usize, processor: P) -> Self {
        Fixed::with_factory(workers, Cloned(processor))
    }

    /// A pool of one worker per core ([`cores`](crate::runner::cores)), each running a
    /// clone of `processor`.
    pub fn per_core(processor: P) -> Self {
        Fixed::new(super::cores(), processor)
    }
}

impl<F> Fixed<Init<F>> {
    /// A pool of `workers` threads, each running the processor `init` returns for it.
    pub fn with_init<P>(workers: usize, init: F) -> Self
    where
        F: Fn(&Context<'_>) -> Result<P, BoxError>,
    {
        Fixed::with_factory(workers, Init(init))
    }
}

impl<M> Fixed<M> {
    /// A pool of `workers` threads whose processors `factory` makes.
    pub fn with_factory(workers: usize, factory: M) -> Self {
        Fixed { workers, factory }
    }
}

impl<M> std::fmt::Debug for Fixed<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fixed")
            .field("workers", &self.workers)
            .finish_non_exhaustive()
    }
}

impl<In, Out, M> StageRunner<In, Out> for Fixed<M>
where
    In: Send,
    Out: Send,
    M: Factory<In, Out>,
{
    fn kind(&self) -> &'static str {
        "fixed"
    }

    fn check(&self) -> Result<(), String> {
        check_workers("a fixed pool", self.workers)
    }

    fn start<'scope>(&'scope self, stage: StageHandle<'scope, '_, In, Out>) {
        for _ in 0..self.workers {
            if !stage.spawn(move |w| run_with(&self.factory, w)) {
                break;
            }
        }
    }
}
