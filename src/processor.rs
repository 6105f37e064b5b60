//! The work a stage does on each item: the [`Processor`] trait, and the functions that make
//! processors of closures ([`map`], [`try_map`], [`filter_map`], [`flat_map`],
//! [`with_context`], [`from_fn`]).

use std::convert::Infallible;
use std::fmt;

use crate::context::{CancelToken, Context};
use crate::error::BoxError;
use crate::transport::{AfterSend, Outbox};

pub(crate) use sealed::MapRun;

/// Turns one input into zero, one or many outputs.
///
/// A worker owns its processor (`&mut self`), so a processor may keep state without locks:
/// a FIFO stage has one, a pool one per worker.
///
/// Closures become processors through the functions of this module, which also re-exports
/// them at the crate's root:
///
/// | closure | processor | outputs per input |
/// |---|---|---|
/// | `\|x\| y` | [`map`] | one |
/// | `\|x\| -> Result<Y, E>` | [`try_map`] | one, or a failure |
/// | `\|x\| -> Option<Y>` | [`filter_map`] | zero or one |
/// | `\|x\| -> impl IntoIterator<Item = Y>` | [`flat_map`] | any number |
/// | `\|x, cx\| -> Result<Y, E>` | [`with_context`] | one, or a failure; `cx` is the [`Context`] |
/// | `\|x, cx, out\| -> Result<(), BoxError>` | [`from_fn`] | any number, through `out` |
///
/// `E` is any error that converts into [`BoxError`]: `std::io::Error`, a parse error, a
/// `String`, your own error type. When nothing in the closure fixes it (it ends in
/// `Ok(…)` and its errors come from `?`), name it: `Ok::<_, BoxError>(y)`, or write the
/// closure as `|x| -> Result<_, BoxError> { … }`.
///
/// In a [`Fifo`](crate::Fifo) stage (not a branch of a [`Broadcast`](crate::Broadcast),
/// whose readers may share their chunks), [`map`], [`try_map`] and [`filter_map`] run each
/// chunk of items through the closure in one loop; the others, and processors of your own,
/// are called once per item. Outcomes, order, cancellation (no item starts after it) and the
/// report are the same either way; only the cost per item differs, which matters for work
/// of a few nanoseconds an item.
///
/// # Errors
///
/// An error fails the item. What happens next is the stage's policy (see
/// [`StageOptions`](crate::StageOptions)): by default the run is cancelled and the error
/// returned; with a failure handler the input goes to the handler and the stage goes on.
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
///
/// A closure is not a processor by itself; the compiler says which functions make one:
///
/// ```compile_fail
/// use pipework::{Fifo, Pipeline};
///
/// let pipeline = Pipeline::new().stage("double", Fifo::new(|x: u32| x * 2));
/// # pipeline.collect([1u32]).unwrap();
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a processor from `{In}` to `{Out}`",
    label = "not a processor of `{In}` items",
    note = "a closure becomes a processor through `map(|x| …)`, `try_map(|x| … -> Result<_, E>)`, \
            `filter_map(|x| … -> Option<_>)`, `flat_map(|x| … -> impl IntoIterator)` or \
            `with_context(|x, cx| … -> Result<_, E>)`",
    note = "a type becomes one by implementing `pipework::Processor<{In}, {Out}>`; a processor must be `Send`"
)]
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

    /// The crate's fast path through a chunk, for processors that give each item at most
    /// one output or an error ([`map`], [`try_map`], [`filter_map`]): processes as much of
    /// `run` as it allows. Whatever it leaves (all of it, by default) comes one item at a
    /// time through [`process`](Self::process).
    ///
    /// `MapRun` cannot be named outside this crate, so this method cannot be implemented
    /// there: a processor of yours is always called item by item.
    #[doc(hidden)]
    #[inline]
    fn map_run(&mut self, run: &mut MapRun<'_, In, Out>) {
        let _ = run;
    }
}

impl<In, Out, P> Processor<In, Out> for &mut P
where
    P: Processor<In, Out> + ?Sized,
{
    #[inline]
    fn process(
        &mut self,
        item: In,
        cx: &Context<'_>,
        out: &mut Emitter<'_, Out>,
    ) -> Result<(), BoxError> {
        (**self).process(item, cx, out)
    }

    #[inline]
    fn map_run(&mut self, run: &mut MapRun<'_, In, Out>) {
        (**self).map_run(run);
    }
}

impl<In, Out, P> Processor<In, Out> for Box<P>
where
    P: Processor<In, Out> + ?Sized,
{
    #[inline]
    fn process(
        &mut self,
        item: In,
        cx: &Context<'_>,
        out: &mut Emitter<'_, Out>,
    ) -> Result<(), BoxError> {
        (**self).process(item, cx, out)
    }

    #[inline]
    fn map_run(&mut self, run: &mut MapRun<'_, In, Out>) {
        (**self).map_run(run);
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
    /// Called after each chunk sent, for an ordered pool's worker.
    after_send: Option<&'a dyn AfterSend>,
}

impl<'a, T> Emitter<'a, T> {
    pub(crate) fn new(
        outbox: &'a mut Outbox<T>,
        token: &'a CancelToken,
        total: &'a mut u64,
        after_send: Option<&'a dyn AfterSend>,
    ) -> Self {
        Emitter {
            outbox,
            token,
            count: 0,
            total,
            after_send,
        }
    }

    /// Sends `item` downstream. Blocks while the next stage's queue is full.
    #[inline]
    pub fn emit(&mut self, item: T) {
        self.count += 1;
        *self.total += 1;
        if self.outbox.push(item, self.token) {
            if let Some(hook) = self.after_send {
                self.outbox.after_send(hook);
            }
        }
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

impl<T> fmt::Debug for Emitter<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Emitter")
            .field("count", &self.count)
            .finish()
    }
}

/// Writes the `Debug` of a processor made from a closure: its name, and not the closure.
macro_rules! closure_debug {
    ($($name:ident),*) => {$(
        impl<F> fmt::Debug for $name<F> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($name)).finish_non_exhaustive()
            }
        }
    )*};
}

closure_debug!(Map, TryMap, FilterMap, FlatMap, WithContext, FromFn);

/// A processor that maps each item to one output: `map(|x: u64| x * x)`.
///
/// # Examples
///
/// ```
/// use pipework::{map, Fixed, Pipeline};
///
/// let squares = Pipeline::new().stage("square", Fixed::new(2, map(|x: u64| x * x)));
/// let (mut out, _) = squares.collect(1..=3).unwrap();
/// out.sort();
/// assert_eq!(out, [1, 4, 9]);
/// ```
pub fn map<In, Out, F>(f: F) -> Map<F>
where
    F: FnMut(In) -> Out + Send,
{
    Map(f)
}

/// The processor [`map`] returns.
#[derive(Clone, Copy)]
pub struct Map<F>(F);

impl<In, Out, F> Processor<In, Out> for Map<F>
where
    F: FnMut(In) -> Out + Send,
{
    #[inline]
    fn process(
        &mut self,
        item: In,
        _: &Context<'_>,
        out: &mut Emitter<'_, Out>,
    ) -> Result<(), BoxError> {
        out.emit((self.0)(item));
        Ok(())
    }

    #[inline]
    fn map_run(&mut self, run: &mut MapRun<'_, In, Out>) {
        let f = &mut self.0;
        run.try_each(|item| Ok::<_, Infallible>(Some(f(item))));
    }
}

/// A processor that maps each item to one output or fails on it:
/// `try_map(|s: String| s.parse::<u32>())`.
///
/// The closure returns `Result<Out, E>` for any error `E` that converts into [`BoxError`]
/// (see [`Processor`] for when to name it).
///
/// # Examples
///
/// ```
/// use pipework::{try_map, ErrorKind, Fifo, Pipeline};
///
/// let parse = Pipeline::new().stage("parse", Fifo::new(try_map(|s: &str| s.parse::<u32>())));
/// assert_eq!(parse.collect(["1", "2"]).unwrap().0, [1, 2]);
/// let err = parse.collect(["1", "x"]).unwrap_err();
/// assert!(matches!(err.kind(), ErrorKind::Stage { .. }));
/// assert_eq!(err.user_error().unwrap().to_string(), "invalid digit found in string");
/// ```
pub fn try_map<In, Out, E, F>(f: F) -> TryMap<F>
where
    F: FnMut(In) -> Result<Out, E> + Send,
    E: Into<BoxError>,
{
    TryMap(f)
}

/// The processor [`try_map`] returns.
#[derive(Clone, Copy)]
pub struct TryMap<F>(F);

impl<In, Out, E, F> Processor<In, Out> for TryMap<F>
where
    F: FnMut(In) -> Result<Out, E> + Send,
    E: Into<BoxError>,
{
    #[inline]
    fn process(
        &mut self,
        item: In,
        _: &Context<'_>,
        out: &mut Emitter<'_, Out>,
    ) -> Result<(), BoxError> {
        out.emit((self.0)(item).map_err(Into::into)?);
        Ok(())
    }

    #[inline]
    fn map_run(&mut self, run: &mut MapRun<'_, In, Out>) {
        let f = &mut self.0;
        run.try_each(|item| f(item).map(Some));
    }
}

/// A processor that emits zero or one output per item: `None` drops the item (a filter).
///
/// # Examples
///
/// ```
/// use pipework::{filter_map, Fifo, Pipeline};
///
/// let evens = Pipeline::new().stage(
///     "evens",
///     Fifo::new(filter_map(|x: u32| (x % 2 == 0).then_some(x))),
/// );
/// let (out, report) = evens.collect(1..=6).unwrap();
/// assert_eq!(out, [2, 4, 6]);
/// assert_eq!(report.totals().filtered, 3);
/// ```
pub fn filter_map<In, Out, F>(f: F) -> FilterMap<F>
where
    F: FnMut(In) -> Option<Out> + Send,
{
    FilterMap(f)
}

/// The processor [`filter_map`] returns.
#[derive(Clone, Copy)]
pub struct FilterMap<F>(F);

impl<In, Out, F> Processor<In, Out> for FilterMap<F>
where
    F: FnMut(In) -> Option<Out> + Send,
{
    #[inline]
    fn process(
        &mut self,
        item: In,
        _: &Context<'_>,
        out: &mut Emitter<'_, Out>,
    ) -> Result<(), BoxError> {
        if let Some(v) = (self.0)(item) {
            out.emit(v);
        }
        Ok(())
    }

    #[inline]
    fn map_run(&mut self, run: &mut MapRun<'_, In, Out>) {
        let f = &mut self.0;
        run.try_each(|item| Ok::<_, Infallible>(f(item)));
    }
}

/// A processor that emits every item of the iterable its closure returns (one-to-many).
///
/// # Examples
///
/// ```
/// use pipework::{flat_map, Fifo, Pipeline};
///
/// let repeat = Pipeline::new().stage("repeat", Fifo::new(flat_map(|x: usize| vec![x; x])));
/// let (out, report) = repeat.collect(0..=3).unwrap();
/// assert_eq!(out, [1, 2, 2, 3, 3, 3]);
/// let totals = report.totals();
/// assert_eq!((totals.filtered, totals.expanded), (1, 3));
/// ```
pub fn flat_map<In, Out, I, F>(f: F) -> FlatMap<F>
where
    F: FnMut(In) -> I + Send,
    I: IntoIterator<Item = Out>,
{
    FlatMap(f)
}

/// The processor [`flat_map`] returns.
#[derive(Clone, Copy)]
pub struct FlatMap<F>(F);

impl<In, Out, I, F> Processor<In, Out> for FlatMap<F>
where
    F: FnMut(In) -> I + Send,
    I: IntoIterator<Item = Out>,
{
    fn process(
        &mut self,
        item: In,
        _: &Context<'_>,
        out: &mut Emitter<'_, Out>,
    ) -> Result<(), BoxError> {
        for v in (self.0)(item) {
            // An endless expansion must not keep a cancelled run alive.
            if out.is_cancelled() {
                break;
            }
            out.emit(v);
        }
        Ok(())
    }
}

/// A processor whose closure also gets the call's [`Context`] — the stage, the worker,
/// cancellation and the run's deadline: `with_context(|id: u32, cx| …)`.
///
/// The closure returns `Result<Out, E>` for any error `E` that converts into [`BoxError`].
/// The context needs no type annotation.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use pipework::{with_context, Dynamic, Pipeline};
///
/// let fetch = Pipeline::new().stage(
///     "fetch",
///     Dynamic::new(16, with_context(|id: u32, cx| {
///         // A stand-in for I/O that the run's cancellation cuts short.
///         cx.sleep(Duration::from_millis(5)).map(|()| format!("{}: {id}", cx.stage_name()))
///     })),
/// );
/// let (out, _) = fetch.collect([7]).unwrap();
/// assert_eq!(out, ["fetch: 7"]);
/// ```
pub fn with_context<In, Out, E, F>(f: F) -> WithContext<F>
where
    F: FnMut(In, &Context<'_>) -> Result<Out, E> + Send,
    E: Into<BoxError>,
{
    WithContext(f)
}

/// The processor [`with_context`] returns.
#[derive(Clone, Copy)]
pub struct WithContext<F>(F);

impl<In, Out, E, F> Processor<In, Out> for WithContext<F>
where
    F: FnMut(In, &Context<'_>) -> Result<Out, E> + Send,
    E: Into<BoxError>,
{
    #[inline]
    fn process(
        &mut self,
        item: In,
        cx: &Context<'_>,
        out: &mut Emitter<'_, Out>,
    ) -> Result<(), BoxError> {
        out.emit((self.0)(item, cx).map_err(Into::into)?);
        Ok(())
    }
}

/// A processor written as one closure with the whole [`Processor::process`] signature:
/// the item, the [`Context`] and the [`Emitter`], for any number of outputs with access to
/// the context.
///
/// # Examples
///
/// ```
/// use pipework::{processor::from_fn, Fifo, Pipeline};
///
/// let words = Pipeline::new().stage(
///     "words",
///     Fifo::new(from_fn(|line: String, cx, out| {
///         for word in line.split_whitespace() {
///             if cx.is_cancelled() {
///                 break;
///             }
///             out.emit(word.to_owned());
///         }
///         Ok(())
///     })),
/// );
/// let (out, _) = words.collect(["a b".to_owned(), "c".to_owned()]).unwrap();
/// assert_eq!(out, ["a", "b", "c"]);
/// ```
pub fn from_fn<In, Out, F>(f: F) -> FromFn<F>
where
    F: FnMut(In, &Context<'_>, &mut Emitter<'_, Out>) -> Result<(), BoxError> + Send,
{
    FromFn(f)
}

/// The processor [`from_fn`] returns.
#[derive(Clone, Copy)]
pub struct FromFn<F>(F);

impl<In, Out, F> Processor<In, Out> for FromFn<F>
where
    F: FnMut(In, &Context<'_>, &mut Emitter<'_, Out>) -> Result<(), BoxError> + Send,
{
    #[inline]
    fn process(
        &mut self,
        item: In,
        cx: &Context<'_>,
        out: &mut Emitter<'_, Out>,
    ) -> Result<(), BoxError> {
        (self.0)(item, cx, out)
    }
}

/// The fast path's type, in a module of its own: public, so that it may appear in
/// [`Processor`]'s signature, and unnameable outside the crate, so that only the crate's
/// processors take the path.
mod sealed {
    use crate::context::CancelToken;
    use crate::error::BoxError;
    use crate::transport::Outbox;

    /// The rest of a worker's current chunk, for a processor that gives each item at most
    /// one output or an error (see `Processor::map_run`).
    ///
    /// The worker's counts are brought up to date when the run is dropped, from where the
    /// chunk and the output buffer stand, so they are exact even when the closure panics:
    /// the items taken are those gone from the chunk (the panicking one included), the
    /// outputs those that reached the buffer, and the items filtered the rest, less the
    /// one in flight (the one that panicked or failed), which the worker counts as failed.
    pub struct MapRun<'a, In, Out> {
        /// What is left of the worker's chunk.
        items: &'a mut std::vec::IntoIter<In>,
        /// Items in `items` when the run began.
        start: usize,
        /// The worker's output buffer.
        outbox: &'a mut Outbox<Out>,
        /// Checked before each item: no item starts once the stage is cancelled.
        stop: &'a CancelToken,
        /// What sends wait on.
        send: &'a CancelToken,
        /// The outbox's buffered count when the current stretch began.
        stretch_from: usize,
        /// Outputs of the stretches before the current one.
        outputs: u64,
        /// 1 while the closure may be running (so that a panic in it leaves it 1) and
        /// after an item failed: the last item taken has no outcome yet.
        in_flight: u64,
        /// The error the last item taken failed with, for the worker.
        error: Option<BoxError>,
        /// The worker's count of items taken, brought up to date on drop.
        taken: &'a mut u64,
        /// The worker's count of outputs, brought up to date on drop.
        emitted: &'a mut u64,
        /// The worker's count of the current chunk's items that gave no output, brought up
        /// to date on drop.
        filtered: &'a mut u64,
    }

    /// The worker's counts a [`MapRun`] keeps up to date: items taken, outputs, items
    /// filtered.
    pub(crate) type Counts<'a> = (&'a mut u64, &'a mut u64, &'a mut u64);

    impl<'a, In, Out> MapRun<'a, In, Out> {
        /// A run over `items`, into `outbox`; `tokens`: the one that stops the stage, the
        /// one sends wait on.
        pub(crate) fn new(
            items: &'a mut std::vec::IntoIter<In>,
            outbox: &'a mut Outbox<Out>,
            tokens: (&'a CancelToken, &'a CancelToken),
            (taken, emitted, filtered): Counts<'a>,
        ) -> Self {
            let start = items.len();
            let stretch_from = outbox.buffered();
            MapRun {
                items,
                start,
                outbox,
                stop: tokens.0,
                send: tokens.1,
                stretch_from,
                outputs: 0,
                in_flight: 0,
                error: None,
                taken,
                emitted,
                filtered,
            }
        }

        /// Runs the items through `f` into the output buffer (`None`: no output), sending
        /// it each time it is full, until the chunk is used up, an item fails (the error is
        /// kept for [`take_error`](Self::take_error)), the stage is cancelled or the output
        /// edge has closed (the worker's item-by-item loop then counts what is left).
        #[inline]
        pub(crate) fn try_each<E>(&mut self, mut f: impl FnMut(In) -> Result<Option<Out>, E>)
        where
            E: Into<BoxError>,
        {
            loop {
                // Full already when a chunk begins if the target shrank since the outputs
                // of the last one were buffered.
                if self.outbox.room() == 0 && !self.items.as_slice().is_empty() {
                    self.outbox.flush_full(self.send);
                    self.stretch_from = self.outbox.buffered();
                }
                if self.outbox.is_closed() {
                    return;
                }
                let n = self.outbox.room().min(self.items.len());
                if n == 0 {
                    return;
                }
                self.in_flight = 1;
                let done = self.outbox.map_from(self.items, n, &mut f, self.stop);
                self.close_stretch();
                match done {
                    Ok(done) => {
                        self.in_flight = 0;
                        if done < n {
                            return;
                        }
                    }
                    Err(error) => {
                        // The failed item stays in flight, for the worker to count.
                        self.error = Some(error.into());
                        return;
                    }
                }
            }
        }

        /// The error the last item taken failed with, if it failed.
        pub(crate) fn take_error(&mut self) -> Option<BoxError> {
            self.error.take()
        }

        /// Counts the outputs buffered since the stretch began.
        fn close_stretch(&mut self) {
            let now = self.outbox.buffered();
            self.outputs += now.saturating_sub(self.stretch_from) as u64;
            self.stretch_from = now;
        }
    }

    impl<In, Out> std::fmt::Debug for MapRun<'_, In, Out> {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("MapRun")
                .field("left", &self.items.len())
                .field("outputs", &self.outputs)
                .finish_non_exhaustive()
        }
    }

    impl<In, Out> Drop for MapRun<'_, In, Out> {
        fn drop(&mut self) {
            self.close_stretch();
            let taken = (self.start - self.items.len()) as u64;
            *self.taken += taken;
            *self.emitted += self.outputs;
            *self.filtered += taken.saturating_sub(self.outputs + self.in_flight);
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use crate::transport::{Recv, edge};
        use std::panic::{AssertUnwindSafe, catch_unwind};

        /// What a run left: items taken, outputs, items filtered, items left in the chunk.
        #[derive(Debug, PartialEq, Eq)]
        struct Left {
            taken: u64,
            emitted: u64,
            filtered: u64,
            in_chunk: usize,
        }

        /// An outbox sending chunks of `target` items on an edge of `capacity` chunks.
        fn outbox(capacity: usize, target: usize) -> (Outbox<u32>, crate::transport::EdgeRx<u32>) {
            let (tx, rx) = edge::<u32>(capacity, 64);
            rx.shape().advise(target);
            let mut out = Outbox::new(tx);
            out.set_own_limit(target);
            (out, rx)
        }

        /// Runs `f` over `0..n` through a `MapRun` into `out`; `stop` stops the run, `send`
        /// cancels its sends.
        fn run(
            n: u32,
            out: &mut Outbox<u32>,
            (stop, send): (&CancelToken, &CancelToken),
            f: impl FnMut(u32) -> Result<Option<u32>, String>,
        ) -> (Left, Option<BoxError>) {
            let mut items = (0..n).collect::<Vec<_>>().into_iter();
            let (mut taken, mut emitted, mut filtered) = (0, 0, 0);
            let error = {
                let mut run = MapRun::new(
                    &mut items,
                    out,
                    (stop, send),
                    (&mut taken, &mut emitted, &mut filtered),
                );
                run.try_each(f);
                run.take_error()
            };
            let left = Left {
                taken,
                emitted,
                filtered,
                in_chunk: items.len(),
            };
            (left, error)
        }

        fn received(rx: &crate::transport::EdgeRx<u32>) -> Vec<Vec<u32>> {
            let mut chunks = Vec::new();
            while let Recv::Got(chunk) = rx.try_recv() {
                chunks.push(chunk);
            }
            chunks
        }

        #[test]
        fn maps_a_chunk_in_chunks_of_the_target() {
            let token = CancelToken::new();
            let (mut out, rx) = outbox(8, 4);
            let (left, error) = run(10, &mut out, (&token, &token), |x| Ok(Some(x * 2)));
            assert!(error.is_none());
            let expected = Left {
                taken: 10,
                emitted: 10,
                filtered: 0,
                in_chunk: 0,
            };
            assert_eq!(left, expected);
            // The last two stay buffered, for the worker to send.
            assert_eq!(received(&rx), [vec![0, 2, 4, 6], vec![8, 10, 12, 14]]);
            assert_eq!(out.buffered(), 2);
        }

        #[test]
        fn counts_filtered_items() {
            let token = CancelToken::new();
            let (mut out, rx) = outbox(8, 3);
            let keep = |x: u32| Ok((x % 3 != 0).then_some(x));
            let (left, _) = run(10, &mut out, (&token, &token), keep);
            let expected = Left {
                taken: 10,
                emitted: 6,
                filtered: 4,
                in_chunk: 0,
            };
            assert_eq!(left, expected);
            assert_eq!(received(&rx), [vec![1, 2, 4], vec![5, 7, 8]]);
        }

        #[test]
        fn an_error_stops_the_run_with_the_failed_item_in_flight() {
            let token = CancelToken::new();
            let (mut out, _rx) = outbox(8, 4);
            let f = |x: u32| match x {
                6 => Err(format!("bad {x}")),
                _ => Ok((x != 1).then_some(x)),
            };
            let (left, error) = run(10, &mut out, (&token, &token), f);
            assert_eq!(error.map(|e| e.to_string()).as_deref(), Some("bad 6"));
            // 0..=6 taken; 1 filtered; 6 failed (neither output nor filtered); 7..10 left.
            let expected = Left {
                taken: 7,
                emitted: 5,
                filtered: 1,
                in_chunk: 3,
            };
            assert_eq!(left, expected);
        }

        #[test]
        fn a_panic_leaves_the_counts_exact() {
            let token = CancelToken::new();
            let (mut out, _rx) = outbox(8, 4);
            let mut items = (0..10).collect::<Vec<u32>>().into_iter();
            let (mut taken, mut emitted, mut filtered) = (0, 0, 0);
            let caught = catch_unwind(AssertUnwindSafe(|| {
                let mut run = MapRun::new(
                    &mut items,
                    &mut out,
                    (&token, &token),
                    (&mut taken, &mut emitted, &mut filtered),
                );
                run.try_each(|x: u32| match x {
                    5 => panic!("item 5"),
                    2 => Ok::<_, String>(None),
                    _ => Ok(Some(x)),
                });
            }));
            assert!(caught.is_err());
            // 0..=5 taken: 4 outputs, 2 filtered, 5 in flight (the worker counts it failed).
            assert_eq!((taken, emitted, filtered, items.len()), (6, 4, 1, 4));
        }

        #[test]
        fn no_item_starts_once_the_stage_is_cancelled() {
            let (stop, send) = (CancelToken::new(), CancelToken::new());
            let (mut out, _rx) = outbox(8, 4);
            let mut calls = 0;
            let f = |x: u32| {
                calls += 1;
                if x == 2 {
                    stop.cancel();
                }
                Ok(Some(x))
            };
            let (left, _) = run(10, &mut out, (&stop, &send), f);
            assert_eq!(calls, 3);
            let expected = Left {
                taken: 3,
                emitted: 3,
                filtered: 0,
                in_chunk: 7,
            };
            assert_eq!(left, expected);
        }

        #[test]
        fn stops_when_the_output_edge_closes() {
            let token = CancelToken::new();
            // One chunk of room: the second send waits, and is cancelled.
            let (mut out, _rx) = outbox(1, 2);
            let send = CancelToken::new();
            send.cancel();
            let (left, _) = run(10, &mut out, (&token, &send), |x| Ok(Some(x)));
            assert!(out.is_closed());
            // The first chunk was sent; the second was dropped and counted as cancelled.
            assert_eq!(out.take_cancelled(), 2);
            let expected = Left {
                taken: 4,
                emitted: 4,
                filtered: 0,
                in_chunk: 6,
            };
            assert_eq!(left, expected);
        }

        #[test]
        fn sends_first_when_the_target_shrank_below_the_buffer() {
            let token = CancelToken::new();
            let (mut out, rx) = outbox(8, 4);
            for x in [100, 101, 102] {
                out.push(x, &token);
            }
            out.set_own_limit(2);
            assert_eq!(out.room(), 0);
            let (left, _) = run(3, &mut out, (&token, &token), |x| Ok(Some(x)));
            let expected = Left {
                taken: 3,
                emitted: 3,
                filtered: 0,
                in_chunk: 0,
            };
            assert_eq!(left, expected);
            assert_eq!(received(&rx), [vec![100, 101, 102], vec![0, 1]]);
            assert_eq!(out.buffered(), 1);
        }
    }
}
