//! How a pool gives each of its workers a processor of its own.

use crate::context::Context;
use crate::error::BoxError;
use crate::processor::Processor;

/// Makes the processor of one pool worker. Called once per worker, on the worker's thread.
///
/// Pools are built from a processor to clone ([`Cloned`]) or from an init closure
/// ([`Init`]); implement this trait for anything else.
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
#[derive(Debug, Clone)]
pub struct Cloned<P>(pub(crate) P);

impl<In, Out, P> Factory<In, Out> for Cloned<P>
where
    P: Processor<In, Out> + Clone + Sync,
{
    type Processor = P;

    fn make(&self, _: &Context<'_>) -> Result<P, BoxError> {
        Ok(self.0.clone())
    }
}

/// A factory that calls an init closure once per worker, on the worker's thread; the
/// closure returns the worker's processor, which owns the worker's state (a connection, a
/// buffer, a hasher).
#[derive(Debug, Clone)]
pub struct Init<F>(pub(crate) F);

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
