//! The work a stage does on each item.

use crate::context::{CancelToken, Context};
use crate::error::BoxError;
use crate::transport::Outbox;

/// Turns one input into zero, one or many outputs.
///
/// A worker owns its processor (`&mut self`), so a processor may keep state without locks:
/// a FIFO stage has one, a pool one per worker.
///
/// Closures `FnMut(In, &Context) -> Result<Out, BoxError>` are processors that emit exactly
/// one output; wrap a closure in [`filter_map`] to emit zero or one, or in [`flat_map`] to
/// emit any number.
///
/// # Errors
///
/// An error fails the item. What happens next is the stage's policy (see
/// [`StageOptions`](crate::StageOptions)): by default the run is cancelled and the error
/// returned; with failure routing the input goes to the run's failure handler and the stage
/// goes on.
///
/// # Examples
///
/// A processor that splits lines into words:
///
/// ```
/// use pipework::{BoxError, Context, Emitter, Fifo, Pipeline, Processor};
///
/// #[derive(Clone)]
/// struct Words;
///
/// impl Processor<String, String> for Words {
///     fn process(&mut self, line: String, _: &Context, out: &mut Emitter<'_, String>)
///         -> Result<(), BoxError>
///     {
///         for w in line.split_whitespace() {
///             out.emit(w.to_owned());
///         }
///         Ok(())
///     }
/// }
///
/// let pipeline = Pipeline::new().stage("words", Fifo::new(Words));
/// let (words, report) = pipeline.collect(["a b".to_owned(), String::new(), "c".into()]).unwrap();
/// assert_eq!(words, ["a", "b", "c"]);
/// assert_eq!(report.stages[0].filtered, 1); // the empty line emitted nothing
/// ```
pub trait Processor<In, Out>: Send {
    /// Processes one item, emitting its outputs through `out`.
    ///
    /// # Errors
    ///
    /// Any error fails the item; see the trait's documentation.
    fn process(
        &mut self,
        item: In,
        cx: &Context<'_>,
        out: &mut Emitter<'_, Out>,
    ) -> Result<(), BoxError>;
}

impl<In, Out, F> Processor<In, Out> for F
where
    F: FnMut(In, &Context<'_>) -> Result<Out, BoxError> + Send,
{
    #[inline]
    fn process(
        &mut self,
        item: In,
        cx: &Context<'_>,
        out: &mut Emitter<'_, Out>,
    ) -> Result<(), BoxError> {
        out.emit(self(item, cx)?);
        Ok(())
    }
}

/// Where a processor puts its outputs.
///
/// Outputs are buffered and sent downstream in chunks; an output emitted after the run was
/// cancelled is dropped and counted as cancelled.
pub struct Emitter<'a, T> {
    /// The worker's output buffer.
    outbox: &'a mut Outbox<T>,
    /// The run's token, for cancellation-aware sends.
    token: &'a CancelToken,
    /// Outputs emitted in this call.
    count: usize,
    /// The worker's running total of outputs, counted as they are emitted (so that a
    /// processor that panics after emitting leaves them counted).
    total: &'a mut u64,
}

impl<'a, T> Emitter<'a, T> {
    pub(crate) fn new(
        outbox: &'a mut Outbox<T>,
        token: &'a CancelToken,
        total: &'a mut u64,
    ) -> Self {
        Emitter {
            outbox,
            token,
            count: 0,
            total,
        }
    }

    /// Sends `item` downstream. Blocks while the next stage's queue is full.
    #[inline]
    pub fn emit(&mut self, item: T) {
        self.count += 1;
        *self.total += 1;
        self.outbox.push(item, self.token);
    }

    /// How many outputs this call has emitted so far.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Whether the run has been cancelled; a long one-to-many processor may stop early.
    pub fn is_cancelled(&self) -> bool {
        self.token.is_cancelled()
    }
}

impl<T> std::fmt::Debug for Emitter<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emitter")
            .field("count", &self.count)
            .finish()
    }
}

/// A processor that emits zero or one output: `Ok(None)` drops the item (a filter).
///
/// # Examples
///
/// ```
/// use pipework::{filter_map, Context, Fifo, Pipeline};
///
/// let evens = Pipeline::new().stage(
///     "evens",
///     Fifo::new(filter_map(|x: u32, _: &Context| Ok((x % 2 == 0).then_some(x)))),
/// );
/// let (out, report) = evens.collect(1..=6).unwrap();
/// assert_eq!(out, [2, 4, 6]);
/// assert_eq!(report.totals().filtered, 3);
/// ```
pub fn filter_map<F>(f: F) -> FilterMap<F> {
    FilterMap(f)
}

/// The processor [`filter_map`] returns.
#[derive(Debug, Clone, Copy)]
pub struct FilterMap<F>(F);

impl<In, Out, F> Processor<In, Out> for FilterMap<F>
where
    F: FnMut(In, &Context<'_>) -> Result<Option<Out>, BoxError> + Send,
{
    fn process(
        &mut self,
        item: In,
        cx: &Context<'_>,
        out: &mut Emitter<'_, Out>,
    ) -> Result<(), BoxError> {
        if let Some(v) = (self.0)(item, cx)? {
            out.emit(v);
        }
        Ok(())
    }
}

/// A processor that emits every item of the iterable its closure returns (one-to-many).
///
/// # Examples
///
/// ```
/// use pipework::{flat_map, Context, Fifo, Pipeline};
///
/// let repeat = Pipeline::new().stage(
///     "repeat",
///     Fifo::new(flat_map(|x: usize, _: &Context| Ok(vec![x; x]))),
/// );
/// let (out, report) = repeat.collect(0..=3).unwrap();
/// assert_eq!(out, [1, 2, 2, 3, 3, 3]);
/// let totals = report.totals();
/// assert_eq!((totals.filtered, totals.expanded), (1, 3));
/// ```
pub fn flat_map<F>(f: F) -> FlatMap<F> {
    FlatMap(f)
}

/// The processor [`flat_map`] returns.
#[derive(Debug, Clone, Copy)]
pub struct FlatMap<F>(F);

impl<In, Out, I, F> Processor<In, Out> for FlatMap<F>
where
    F: FnMut(In, &Context<'_>) -> Result<I, BoxError> + Send,
    I: IntoIterator<Item = Out>,
{
    fn process(
        &mut self,
        item: In,
        cx: &Context<'_>,
        out: &mut Emitter<'_, Out>,
    ) -> Result<(), BoxError> {
        for v in (self.0)(item, cx)? {
            // An endless expansion must not keep a cancelled run alive.
            if out.is_cancelled() {
                break;
            }
            out.emit(v);
        }
        Ok(())
    }
}
