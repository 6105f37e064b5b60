//! What a stage does when its processor fails on an item: fail fast, or route the item to
//! the run's failure handler and go on.

use std::any::Any;
use std::fmt;
use std::time::Duration;

use crate::error::BoxError;
use crate::id::StageId;

/// Per-stage options: error policy, retries and input capacity.
///
/// Pass them with [`Pipeline::stage_with`](crate::Pipeline::stage_with).
///
/// # Examples
///
/// Route the items a stage fails on to a handler instead of aborting the run:
///
/// ```
/// use pipework::{BoxError, Context, Fixed, Pipeline, StageOptions};
///
/// let pipeline = Pipeline::new().stage_with(
///     "parse",
///     Fixed::new(2, |s: String, _: &Context| s.parse::<u32>().map_err(BoxError::from)),
///     StageOptions::new().route_failures(),
/// );
/// let mut bad = Vec::new();
/// let mut good = Vec::new();
/// let report = pipeline
///     .job()
///     .on_failure(|f| bad.push(f.into_item::<String>().unwrap()))
///     .run(["1", "x", "3"].map(String::from), &mut good)
///     .unwrap();
/// good.sort();
/// assert_eq!((good, bad), (vec![1, 3], vec!["x".to_owned()]));
/// assert_eq!(report.totals().routed, 1);
/// ```
pub struct StageOptions<In> {
    /// Capacity of the stage's input queue, in chunks; `None` takes the pipeline's.
    pub(crate) capacity: Option<usize>,
    /// Set when failed items go to the failure handler.
    pub(crate) policy: Policy<In>,
}

/// Turns a failed input into the `Any` a [`Failure`] carries.
pub(crate) type Erase<T> = fn(T) -> Box<dyn Any + Send>;

/// The typed part of a stage's error policy, built where `In` is known to be `Clone`.
pub(crate) struct Policy<In> {
    /// Keeps a copy of the input while the processor runs, so that a failed input can be
    /// retried or routed. `None` when the stage neither retries nor routes.
    pub(crate) keep: Option<fn(&In) -> In>,
    /// Erases a kept input for the failure handler; `None` when the stage fails fast.
    pub(crate) erase: Option<Erase<In>>,
    /// Erases a kept batch of inputs (for batching stages); set with `erase`.
    pub(crate) erase_batch: Option<Erase<Vec<In>>>,
    /// How failed items are retried.
    pub(crate) retry: Option<Retry>,
}

impl<In> Policy<In> {
    pub(crate) fn fail_fast() -> Self {
        Policy {
            keep: None,
            erase: None,
            erase_batch: None,
            retry: None,
        }
    }

    pub(crate) fn routes(&self) -> bool {
        self.erase.is_some()
    }
}

/// How a stage retries the items its processor fails on, before its error policy applies.
///
/// The processor decides what is worth retrying: only errors wrapped in [`Transient`] are
/// retried. Each retry waits for a backoff that starts at [`backoff`](Self::backoff) and
/// doubles up to [`max_backoff`](Self::max_backoff); the wait is cancellation-aware, so
/// cancelling the run interrupts it. Retries are counted in
/// [`StageReport::retries`](crate::StageReport::retries). Outputs an attempt emitted before
/// it failed stay emitted.
///
/// # Examples
///
/// ```
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use std::time::Duration;
/// use pipework::{Context, Fifo, Pipeline, Retry, StageOptions, Transient};
///
/// let calls = AtomicU32::new(0);
/// let flaky = Pipeline::new().stage_with(
///     "flaky",
///     Fifo::new(|x: u32, _: &Context| {
///         // Fails twice, then works.
///         if calls.fetch_add(1, Ordering::Relaxed) < 2 {
///             return Err(Transient::new("connection reset").into());
///         }
///         Ok(x)
///     }),
///     StageOptions::new().retry(Retry::new(3).backoff(Duration::from_millis(1))),
/// );
/// let (out, report) = flaky.collect([7]).unwrap();
/// assert_eq!(out, [7]);
/// assert_eq!(report.stages[0].retries, 2);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// Retries after the first attempt.
    attempts: u32,
    /// The first backoff.
    backoff: Duration,
    /// The longest backoff.
    max_backoff: Duration,
}

impl Retry {
    /// Up to `attempts` retries after the first attempt, with a backoff from 10 ms to 1 s.
    pub fn new(attempts: u32) -> Self {
        Retry {
            attempts,
            backoff: Duration::from_millis(10),
            max_backoff: Duration::from_secs(1),
        }
    }

    /// The wait before the first retry; each further retry waits twice as long.
    pub fn backoff(mut self, first: Duration) -> Self {
        self.backoff = first;
        self
    }

    /// The longest wait between two attempts.
    pub fn max_backoff(mut self, max: Duration) -> Self {
        self.max_backoff = max;
        self
    }

    /// How many retries are allowed.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The wait before retry number `retry` (from 1).
    pub(crate) fn wait(&self, retry: u32) -> Duration {
        let factor = 1u32
            .checked_shl(retry.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.backoff
            .checked_mul(factor)
            .unwrap_or(self.max_backoff)
            .min(self.max_backoff)
    }
}

/// Marks a processor error as worth retrying (see [`Retry`]).
///
/// It displays as the error it wraps; when the retries run out, the stage's error policy
/// sees the wrapped error itself.
#[derive(Debug)]
pub struct Transient(BoxError);

impl Transient {
    /// Wraps `error`.
    pub fn new(error: impl Into<BoxError>) -> Self {
        Transient(error.into())
    }

    /// The wrapped error.
    pub fn into_inner(self) -> BoxError {
        self.0
    }
}

impl fmt::Display for Transient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for Transient {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

/// Unwraps a [`Transient`] error; other errors pass through.
pub(crate) fn unwrap_transient(error: BoxError) -> BoxError {
    match error.downcast::<Transient>() {
        Ok(t) => t.into_inner(),
        Err(e) => e,
    }
}

impl<In> StageOptions<In> {
    /// Default options: fail fast, the pipeline's capacity.
    pub fn new() -> Self {
        StageOptions {
            capacity: None,
            policy: Policy::fail_fast(),
        }
    }

    /// Sets the capacity of this stage's input queue, in chunks (see
    /// [`Pipeline::capacity`](crate::Pipeline::capacity)). Zero, or more than 2^20, is a
    /// configuration error.
    pub fn capacity(mut self, chunks: usize) -> Self {
        self.capacity = Some(chunks);
        self
    }
}

impl<In: Clone> StageOptions<In> {
    /// Retries the items the processor fails on with a [`Transient`] error, as `retry`
    /// says, before the stage's error policy applies. The stage keeps a clone of each input
    /// while it is processed, to have it for the next attempt.
    pub fn retry(mut self, retry: Retry) -> Self {
        self.policy.keep = Some(In::clone);
        self.policy.retry = Some(retry);
        self
    }
}

impl<In: Clone + Send + 'static> StageOptions<In> {
    /// Routes every item the processor fails on to the run's failure handler
    /// ([`Job::on_failure`](crate::Job::on_failure)) and goes on with the next item.
    ///
    /// The stage keeps a clone of each input while it is processed, so that the handler gets
    /// the input as it was; stages that fail fast pay nothing. A run of a pipeline with such
    /// a stage must be given a failure handler.
    pub fn route_failures(mut self) -> Self {
        self.policy.keep = Some(In::clone);
        self.policy.erase = Some(|item| Box::new(item));
        self.policy.erase_batch = Some(|batch| Box::new(batch));
        self
    }
}

impl<In> Default for StageOptions<In> {
    fn default() -> Self {
        Self::new()
    }
}

impl<In> fmt::Debug for StageOptions<In> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StageOptions")
            .field("capacity", &self.capacity)
            .field("route_failures", &self.policy.routes())
            .field("retry", &self.policy.retry)
            .finish()
    }
}

/// An item a stage failed on, routed to the run's failure handler.
///
/// The handler runs on the thread that called `run`, like the sink.
pub struct Failure {
    /// The stage whose processor failed.
    stage: StageId,
    /// The processor's error.
    error: BoxError,
    /// The input, as it was before the processor took it.
    item: Box<dyn Any + Send>,
}

impl Failure {
    pub(crate) fn new(stage: StageId, error: BoxError, item: Box<dyn Any + Send>) -> Self {
        Failure { stage, error, item }
    }

    /// The stage that failed on the item.
    pub fn stage(&self) -> &StageId {
        &self.stage
    }

    /// The processor's error.
    pub fn error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.error
    }

    /// The failed input, if it is a `T` (the stage's input type).
    pub fn item<T: 'static>(&self) -> Option<&T> {
        self.item.downcast_ref()
    }

    /// Takes the failed input out, if it is a `T`.
    ///
    /// # Errors
    ///
    /// Gives the failure back when the input is not a `T`.
    pub fn into_item<T: 'static>(self) -> Result<T, Self> {
        match self.item.downcast() {
            Ok(item) => Ok(*item),
            Err(item) => Err(Failure { item, ..self }),
        }
    }

    /// Splits the failure into the stage, the error and the erased input.
    pub fn into_parts(self) -> (StageId, BoxError, Box<dyn Any + Send>) {
        (self.stage, self.error, self.item)
    }
}

impl fmt::Debug for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Failure")
            .field("stage", &self.stage)
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} failed: {}", self.stage, self.error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_maximum() {
        let r = Retry::new(10)
            .backoff(Duration::from_millis(10))
            .max_backoff(Duration::from_millis(50));
        let waits: Vec<_> = (1..=5).map(|n| r.wait(n).as_millis()).collect();
        assert_eq!(waits, [10, 20, 40, 50, 50]);
        // Far retries and huge backoffs saturate instead of overflowing.
        assert_eq!(r.wait(u32::MAX), Duration::from_millis(50));
        let huge = Retry::new(1)
            .backoff(Duration::MAX)
            .max_backoff(Duration::MAX);
        assert_eq!(huge.wait(3), Duration::MAX);
    }

    #[test]
    fn transient_errors_unwrap_to_the_wrapped_error() {
        let e: BoxError = Transient::new("reset").into();
        assert_eq!(unwrap_transient(e).to_string(), "reset");
        let plain: BoxError = "plain".into();
        assert_eq!(unwrap_transient(plain).to_string(), "plain");
    }
}
