//! Stage runners — how a stage spreads its work over threads — and what it takes to write
//! one.
//!
//! The built-in runners ([`Fifo`], [`Fixed`], [`Dynamic`], [`Ordered`], [`Batch`],
//! [`Broadcast`], also at the crate's root) are strategies only: each decides how many
//! workers run and which processor each uses, through the same public [`StageHandle`] and
//! [`Worker`] a runner of yours gets ([`StageRunner`] says how); the engine (threads,
//! queues, policy, accounting) is below them. A runner gives its workers processors through
//! a [`Factory`]: [`Cloned`] (a clone per worker), [`PerRun`] (a clone per run) or [`Init`]
//! (an init closure per worker).

mod batch;
mod broadcast;
mod dynamic;
mod factory;
mod fifo;
mod fixed;
mod ordered;

pub use batch::Batch;
pub use broadcast::Broadcast;
pub use dynamic::Dynamic;
pub use factory::{Cloned, Factory, Init, PerRun};
pub use fifo::Fifo;
pub use fixed::Fixed;
pub use ordered::Ordered;

pub use crate::engine::{Next, StageHandle, StageRunner, Watch, Worker};

/// The number of cores this process may use (`std::thread::available_parallelism`), 1 if it
/// cannot be known: the worker count of [`Fixed::per_core`] and [`Ordered::per_core`].
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// The most workers a pool accepts: a configuration error beyond it, rather than a run
/// that starts threads until the system refuses.
pub(crate) const MAX_WORKERS: usize = 1 << 16;

/// Checks a pool's worker count.
fn check_workers(kind: &str, workers: usize) -> Result<(), String> {
    if workers == 0 {
        let what = if kind == "a dynamic pool" {
            "a maximum of at least one worker"
        } else {
            "at least one worker"
        };
        return Err(format!("{kind} needs {what}"));
    }
    if workers > MAX_WORKERS {
        return Err(format!(
            "{kind} accepts at most {MAX_WORKERS} workers, not {workers}"
        ));
    }
    Ok(())
}

/// A worker's body for runners that give each worker a processor from a factory.
fn run_with<'scope, In, Out, M>(factory: &M, mut w: Worker<'scope, In, Out>)
where
    In: Send + 'scope,
    Out: Send + 'scope,
    M: Factory<In, Out>,
{
    match factory.make(w.context()) {
        Ok(mut processor) => w.run(&mut processor),
        Err(e) => w.fail(e),
    }
}
