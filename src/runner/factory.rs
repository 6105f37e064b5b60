//! How a runner gives each of its workers (or each run) a processor of its own.

use parking_lot::Mutex;

use crate::context::Context;
use crate::error::BoxError;
use crate::processor::Processor;

/// Makes the processor of one worker. Called once per worker, on the worker's thread.
///
/// Runners are built from a processor to clone ([`Cloned`], [`PerRun`]) or from an init
/// closure ([`Init`]); implement this trait for anything else.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot make processors from `{In}` to `{Out}`",
    label = "no processor from `{In}` to `{Out}`",
    note = "a runner's processor must be a `Processor<{In}, {Out}>`: wrap a closure in \
            `map`, `try_map`, `filter_map`, `flat_map` or `with_context`; a pool clones it \
            for every worker, so it must be `Clone` and `Sync` (use `with_init` otherwise)"
)]
pub trait Factory<In, Out>: Send + Sync {
    /// The processor a worker runs.
    type Processor: Processor<In, Out>;

    /// Makes a worker's processor.
    ///
    /// # Errors
    ///
    /// An error fails the stage, like a processor error under the fail-fast policy.
    fn make(&self, cx: &Context<'_>) -> Result<Self::Processor, BoxError>;
}

/// A factory that clones one processor for every worker (a closure capturing references
/// clones for free).
#[derive(Clone)]
pub struct Cloned<P>(pub(crate) P);

impl<P> std::fmt::Debug for Cloned<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cloned").finish_non_exhaustive()
    }
}

impl<In, Out, P> Factory<In, Out> for Cloned<P>
where
    P: Processor<In, Out> + Clone + Sync,
{
    type Processor = P;

    fn make(&self, _: &Context<'_>) -> Result<P, BoxError> {
        Ok(self.0.clone())
    }
}

/// A factory that clones one processor for every worker, for processors that are not
/// `Sync` (a `Cell`, an `Rc`-free but `!Sync` client): the original sits behind a lock
/// that is taken only to clone it.
pub struct PerRun<P>(pub(crate) Mutex<P>);

impl<P> std::fmt::Debug for PerRun<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PerRun").finish_non_exhaustive()
    }
}

impl<In, Out, P> Factory<In, Out> for PerRun<P>
where
    P: Processor<In, Out> + Clone,
{
    type Processor = P;

    fn make(&self, _: &Context<'_>) -> Result<P, BoxError> {
        Ok(self.0.lock().clone())
    }
}

/// A factory that calls an init closure once per worker, on the worker's thread; the
/// closure returns the worker's processor, which owns the worker's state (a connection, a
/// buffer, a hasher).
#[derive(Clone)]
pub struct Init<F>(pub(crate) F);

impl<F> std::fmt::Debug for Init<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Init").finish_non_exhaustive()
    }
}

impl<In, Out, F, P> Factory<In, Out> for Init<F>
where
    F: Fn(&Context<'_>) -> Result<P, BoxError> + Send + Sync,
    P: Processor<In, Out>,
{
    type Processor = P;

    fn make(&self, cx: &Context<'_>) -> Result<P, BoxError> {
        (self.0)(cx)
    }
}
