//! The built-in stage runners: strategies only. Each decides how many workers run and
//! which processor each uses, and does so through the same public
//! [`StageHandle`](crate::StageHandle) and [`Worker`](crate::Worker) a runner of yours gets;
//! the engine (threads, queues, policy, accounting) is below them.

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
fn run_with<'scope, In, Out, M>(factory: &M, mut w: crate::Worker<'scope, In, Out>)
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
