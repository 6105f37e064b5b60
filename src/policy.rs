//! What a stage does when its processor fails on an item: fail fast, or route the item to
//! the run's failure handler and go on.

use std::any::Any;
use std::fmt;

use crate::error::BoxError;
use crate::report::StageId;

/// Per-stage options: error policy and input capacity.
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

/// The typed part of a stage's error policy, built where `In` is known to be `Clone`.
pub(crate) struct Policy<In> {
    /// Keeps a copy of the input while the processor runs, so that a failed input can be
    /// routed. `None` when the stage fails fast.
    pub(crate) keep: Option<fn(&In) -> In>,
    /// Erases a kept input for the failure handler.
    pub(crate) erase: Option<fn(In) -> Box<dyn Any + Send>>,
}

impl<In> Policy<In> {
    pub(crate) fn fail_fast() -> Self {
        Policy {
            keep: None,
            erase: None,
        }
    }

    pub(crate) fn routes(&self) -> bool {
        self.erase.is_some()
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
    /// [`Pipeline::capacity`](crate::Pipeline::capacity)). Zero is a configuration error.
    pub fn capacity(mut self, chunks: usize) -> Self {
        self.capacity = Some(chunks);
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
