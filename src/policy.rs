//! What a stage does when its processor fails on an item: retry it, fail fast, or hand it
//! to the stage's failure handler and go on.

use std::cell::RefCell;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::ReentrantMutex;

use crate::error::BoxError;
use crate::id::StageId;

/// Per-stage options: failure handling, retries and input capacity.
///
/// Pass them with [`Pipeline::stage_with`](crate::Pipeline::stage_with). `In` is the stage's
/// input type and `H` its failure handler's: `StageOptions::new()` is a `StageOptions<In>`,
/// and [`route_failures_to`](Self::route_failures_to) sets `H`, so neither is written out.
/// `StageOptions` is `Copy` until it holds a failure handler (and `Clone` when the handler
/// is).
///
/// # Examples
///
/// Hand the items a stage fails on to a handler instead of aborting the run:
///
/// ```
/// use std::sync::Mutex;
/// use pipework::{Failure, Fixed, Pipeline, StageOptions, try_map};
///
/// let bad = Mutex::new(Vec::new());
/// let pipeline = Pipeline::new().stage_with(
///     "parse",
///     Fixed::new(2, try_map(|s: String| s.parse::<u32>())),
///     StageOptions::new().route_failures_to(|f: Failure<String>| {
///         bad.lock().unwrap().push(f.into_item());
///     }),
/// );
/// let (mut good, report) = pipeline.collect(["1", "x", "3"].map(String::from)).unwrap();
/// good.sort();
/// assert_eq!(good, [1, 3]);
/// assert_eq!(*bad.lock().unwrap(), ["x"]);
/// assert_eq!(report.totals().routed, 1);
/// ```
///
/// The handler must take the stage's input type: anything else does not compile.
///
/// ```compile_fail
/// use pipework::{Failure, Fixed, Pipeline, StageOptions, try_map};
///
/// let pipeline = Pipeline::new().stage_with(
///     "parse",
///     Fixed::new(2, try_map(|s: String| s.parse::<u32>())),
///     // The stage takes `String`s, not `u32`s.
///     StageOptions::new().route_failures_to(|f: Failure<u32>| eprintln!("{f}")),
/// );
/// # pipeline.collect(["1".to_owned()]).unwrap();
/// ```
///
/// There is no routing without a handler: a stage either fails fast or names where its
/// failures go.
pub struct StageOptions<In, H = fn(Failure<In>)> {
    /// Capacity of the stage's input queue, in chunks; `None` takes the pipeline's.
    pub(crate) capacity: Option<usize>,
    /// Keeps a copy of the input while the processor runs, so that a failed input can be
    /// retried or handed to the failure handler. `None` when the stage neither retries nor
    /// routes.
    pub(crate) keep: Option<fn(&In) -> In>,
    /// How failed items are retried.
    pub(crate) retry: Option<Retry>,
    /// Where failed items go; `None` when the stage fails fast.
    pub(crate) handler: Option<H>,
}

impl<In, H: Clone> Clone for StageOptions<In, H> {
    fn clone(&self) -> Self {
        StageOptions {
            capacity: self.capacity,
            keep: self.keep,
            retry: self.retry,
            handler: self.handler.clone(),
        }
    }
}

impl<In, H: Copy> Copy for StageOptions<In, H> {}

/// A failure handler as the engine sees it: called on the calling thread of a run with a
/// failed input of the stage.
pub(crate) trait Route<In>: Send + Sync {
    /// Calls the handler with `failure`.
    fn deliver(&self, failure: Failure<In>);
}

/// A user's failure handler, shared by every run of the pipeline. Runs call it one at a
/// time; a handler that (through a run of its own) calls itself again panics instead of
/// deadlocking, and the panic fails that run.
struct Handler<H>(ReentrantMutex<RefCell<H>>);

impl<In, H> Route<In> for Handler<H>
where
    H: FnMut(Failure<In>) + Send,
{
    fn deliver(&self, failure: Failure<In>) {
        let handler = self.0.lock();
        let Ok(mut handler) = handler.try_borrow_mut() else {
            panic!(
                "a failure handler was called again while it was running \
                 (does it run its own pipeline?)"
            );
        };
        handler(failure);
    }
}

/// The stage's error policy as the engine sees it: built once per stage, when the stage is
/// added to the pipeline.
pub(crate) struct Policy<'a, In> {
    /// See [`StageOptions::keep`].
    pub(crate) keep: Option<fn(&In) -> In>,
    /// How failed items are retried.
    pub(crate) retry: Option<Retry>,
    /// The failure handler; `None` when the stage fails fast.
    pub(crate) route: Option<Box<dyn Route<In> + 'a>>,
}

impl<'a, In: 'a> Policy<'a, In> {
    /// The policy `options` describe.
    pub(crate) fn new<H>(options: StageOptions<In, H>) -> Self
    where
        H: FnMut(Failure<In>) + Send + 'a,
    {
        Policy {
            keep: options.keep,
            retry: options.retry,
            route: options.handler.map(|h| {
                Box::new(Handler(ReentrantMutex::new(RefCell::new(h)))) as Box<dyn Route<In> + 'a>
            }),
        }
    }
}

impl<In> Policy<'_, In> {
    /// Whether failed items go to a handler.
    pub(crate) fn routes(&self) -> bool {
        self.route.is_some()
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
/// use pipework::{try_map, Fifo, Pipeline, Retry, StageOptions, Transient};
///
/// let calls = AtomicU32::new(0);
/// let flaky = Pipeline::new().stage_with(
///     "flaky",
///     Fifo::new(try_map(|x: u32| {
///         // Fails twice, then works.
///         if calls.fetch_add(1, Ordering::Relaxed) < 2 {
///             return Err(Transient::new("connection reset"));
///         }
///         Ok(x)
///     })),
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
    #[must_use]
    pub fn backoff(mut self, first: Duration) -> Self {
        self.backoff = first;
        self
    }

    /// The longest wait between two attempts.
    #[must_use]
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
    /// Default options: fail fast, no retries, the pipeline's capacity.
    pub fn new() -> Self {
        StageOptions {
            capacity: None,
            keep: None,
            retry: None,
            handler: None,
        }
    }
}

impl<In, H> StageOptions<In, H> {
    /// Sets the capacity of this stage's input queue, in chunks (see
    /// [`Pipeline::capacity`](crate::Pipeline::capacity)). Zero, or more than 2^20, is a
    /// configuration error.
    #[must_use]
    pub fn capacity(mut self, chunks: usize) -> Self {
        self.capacity = Some(chunks);
        self
    }
}

impl<In: Clone, H> StageOptions<In, H> {
    /// Retries the items the processor fails on with a [`Transient`] error, as `retry`
    /// says, before the stage's error policy applies. The stage keeps a clone of each input
    /// while it is processed, to have it for the next attempt.
    #[must_use]
    pub fn retry(mut self, retry: Retry) -> Self {
        self.keep = Some(In::clone);
        self.retry = Some(retry);
        self
    }

    /// Hands every item the processor fails on to `handler`, with the error and the stage,
    /// and goes on with the next item, instead of failing the run.
    ///
    /// The handler gets the input as it was (`Failure<In>`, typed: no downcast), so the
    /// stage keeps a clone of each input while it is processed; stages that fail fast pay
    /// nothing. It is part of the pipeline's definition: every run calls it, **on the
    /// thread that called `run`** (between sink calls), one call at a time, and a run
    /// returns only after every failure it routed was handed over — even an aborted run.
    /// State of one run's own goes through what the handler captures (a `Mutex`, a
    /// channel). A panic in the handler fails the run with
    /// [`Site::FailureHandler`](crate::Site::FailureHandler).
    ///
    /// When a [`Batch`](crate::Batch) stage fails on a batch, the handler is called once
    /// for each of its items, all with the batch's error.
    ///
    /// Routed items count as failed and as routed in the report
    /// ([`StageReport::routed`](crate::StageReport::routed)).
    ///
    /// # Examples
    ///
    /// Per-run state goes through what the handler captures; it is shared by the runs, so
    /// it must be `Send` — an `Rc` does not compile:
    ///
    /// ```compile_fail
    /// use std::{cell::RefCell, rc::Rc};
    /// use pipework::{Failure, Fifo, Pipeline, StageOptions, try_map};
    ///
    /// let bad = Rc::new(RefCell::new(Vec::new()));
    /// let seen = Rc::clone(&bad);
    /// let pipeline = Pipeline::new().stage_with(
    ///     "parse",
    ///     Fifo::new(try_map(|s: String| s.parse::<u32>())),
    ///     StageOptions::new().route_failures_to(move |f: Failure<String>| {
    ///         seen.borrow_mut().push(f.into_item()); // `Rc` cannot be sent between threads
    ///     }),
    /// );
    /// # pipeline.collect(["x".to_owned()]).unwrap();
    /// ```
    ///
    /// A `Mutex` (or a channel) does:
    ///
    /// ```
    /// use std::sync::Mutex;
    /// use pipework::{Failure, Fifo, Pipeline, StageOptions, try_map};
    ///
    /// let bad = Mutex::new(Vec::new());
    /// let pipeline = Pipeline::new().stage_with(
    ///     "parse",
    ///     Fifo::new(try_map(|s: String| s.parse::<u32>())),
    ///     StageOptions::new().route_failures_to(|f: Failure<String>| {
    ///         bad.lock().unwrap().push(f.into_item());
    ///     }),
    /// );
    /// let (good, _) = pipeline.collect(["1", "x"].map(String::from)).unwrap();
    /// assert_eq!(good, [1]);
    /// assert_eq!(*bad.lock().unwrap(), ["x"]);
    /// ```
    ///
    /// The stage's items must be `Clone` (the handler gets the input as it was):
    ///
    /// ```compile_fail
    /// use pipework::{Failure, Fifo, Pipeline, StageOptions, map};
    ///
    /// struct Job(u32); // not Clone
    /// let pipeline = Pipeline::new().stage_with(
    ///     "id",
    ///     Fifo::new(map(|j: Job| j.0)),
    ///     StageOptions::new().route_failures_to(|f: Failure<Job>| eprintln!("{}", f.item().0)),
    /// );
    /// # pipeline.collect([Job(1)]).unwrap();
    /// ```
    #[must_use]
    pub fn route_failures_to<G>(self, handler: G) -> StageOptions<In, G>
    where
        G: FnMut(Failure<In>) + Send,
    {
        StageOptions {
            capacity: self.capacity,
            keep: Some(In::clone),
            retry: self.retry,
            handler: Some(handler),
        }
    }
}

impl<In> Default for StageOptions<In> {
    fn default() -> Self {
        Self::new()
    }
}

impl<In, H> fmt::Debug for StageOptions<In, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StageOptions")
            .field("capacity", &self.capacity)
            .field("retry", &self.retry)
            .field("routes_failures", &self.handler.is_some())
            .finish_non_exhaustive()
    }
}

/// An item a stage failed on, handed to the stage's failure handler (see
/// [`StageOptions::route_failures_to`]).
///
/// `T` is the stage's input type: the handler gets the failed input itself, as it was
/// before the processor took it.
pub struct Failure<T> {
    /// The stage whose processor failed.
    stage: StageId,
    /// The processor's error (shared by the items of a failed batch).
    error: Arc<dyn std::error::Error + Send + Sync + 'static>,
    /// The input, as it was before the processor took it.
    item: T,
}

impl<T> Failure<T> {
    pub(crate) fn new(
        stage: StageId,
        error: Arc<dyn std::error::Error + Send + Sync + 'static>,
        item: T,
    ) -> Self {
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

    /// The failed input.
    pub fn item(&self) -> &T {
        &self.item
    }

    /// Takes the failed input out.
    pub fn into_item(self) -> T {
        self.item
    }

    /// Splits the failure into the stage, the error and the input.
    pub fn into_parts(
        self,
    ) -> (
        StageId,
        Arc<dyn std::error::Error + Send + Sync + 'static>,
        T,
    ) {
        (self.stage, self.error, self.item)
    }
}

impl<T: fmt::Debug> fmt::Debug for Failure<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Failure")
            .field("stage", &self.stage)
            .field("error", &self.error)
            .field("item", &self.item)
            .finish()
    }
}

/// `stage 1 (parse) failed: invalid digit found in string`.
impl<T> fmt::Display for Failure<T> {
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
