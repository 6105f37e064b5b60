//! The typed pipeline definition and its runs.

use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use crate::context::CancelToken;
use crate::engine::{
    JobOptions, Launcher, RunConfig, Segment, StageRunner, StageState, ToFn, ToSink, execute,
};
use crate::error::{BoxError, Error, ErrorKind};
use crate::id::StageId;
use crate::policy::{Failure, Policy, StageOptions};
use crate::report::Report;
use crate::sink::{Outputs, Sink};
use crate::source::IntoSource;
use crate::transport::EdgeRx;
use crate::transport::pace::DEFAULT_MAX_CHUNK;

/// Default capacity of every queue, in chunks.
const DEFAULT_CAPACITY: usize = 16;

/// The smallest thread stack accepted, in bytes.
const MIN_STACK: usize = 16 << 10;

/// The largest queue capacity accepted, in chunks (a queue allocates its slots up front).
pub(crate) const MAX_CAPACITY: usize = 1 << 20;

/// A pipeline definition: stages from `In` to `Out`, run any number of times.
///
/// Build it once with [`new`](Self::new) and [`stage`](Self::stage); each stage maps the
/// items of the previous one, so the type follows along (`Pipeline<'_, Task, Task>` becomes
/// `Pipeline<'_, Task, Receipt>`). Then [`run`](Self::run) it — by reference, as often as
/// needed, from several threads at once if you like: every run has its own threads, queues
/// and counters, and nothing wears out.
///
/// A run starts one thread for the source, the stages' workers, and feeds the sink on the
/// calling thread; it returns when every thread has been joined.
///
/// # Examples
///
/// ```
/// use pipework::{map, Fifo, Fixed, Pipeline};
///
/// let pipeline = Pipeline::new()
///     .stage("len", Fixed::new(2, map(|w: String| (w.len(), w))))
///     .stage("fmt", Fifo::new(map(|(n, w): (usize, String)| format!("{w}:{n}"))));
///
/// for _ in 0..3 {
///     let words = ["apple", "fig", "banana", "kiwi"].map(String::from);
///     let (mut out, report) = pipeline.collect(words).unwrap();
///     out.sort();
///     assert_eq!(out, ["apple:5", "banana:6", "fig:3", "kiwi:4"]);
///     assert_eq!(report.totals().sunk, 4);
/// }
/// ```
pub struct Pipeline<'a, In, Out = In> {
    /// The stages, chained.
    chain: Box<dyn Segment<In, Out> + 'a>,
    /// One entry per stage, in order.
    metas: Vec<StageMeta>,
    /// Default queue capacity, in chunks.
    capacity: usize,
    /// The largest chunk on any edge.
    max_chunk: usize,
    /// The stack size of the run's threads, if set.
    stack_size: Option<usize>,
    /// The chunk size the edge into the sink ended its last run with (see
    /// `StageMeta::chunks`).
    sink_chunks: Arc<AtomicUsize>,
}

/// What a run needs to know about a stage before it starts.
pub(crate) struct StageMeta {
    /// The stage's name.
    pub(crate) name: Arc<str>,
    /// The runner's kind.
    pub(crate) kind: &'static str,
    /// Whether the runner keeps input order.
    keeps_order: bool,
    /// The stage's own input capacity, if set.
    pub(crate) capacity: Option<usize>,
    /// What `StageRunner::check` found wrong.
    problem: Option<String>,
    /// The chunk size the stage's input edge ended its last run with: the next run of the
    /// definition starts there instead of at one item (see `transport::pace`).
    chunks: Arc<AtomicUsize>,
}

impl<'a, T: Send + 'a> Pipeline<'a, T, T> {
    /// An empty pipeline: items go from the source straight to the sink.
    pub fn new() -> Self {
        Pipeline {
            chain: Box::new(Start),
            metas: Vec::new(),
            capacity: DEFAULT_CAPACITY,
            max_chunk: DEFAULT_MAX_CHUNK,
            stack_size: None,
            sink_chunks: Arc::new(AtomicUsize::new(1)),
        }
    }
}

impl<'a, T: Send + 'a> Default for Pipeline<'a, T, T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<'a, In, Out> Pipeline<'a, In, Out>
where
    In: Send + 'a,
    Out: Send + 'a,
{
    /// Adds a stage named `name` that maps `Out` items to `U` items with `runner`.
    ///
    /// The stage fails fast: the first error of its processor aborts the run. See
    /// [`stage_with`](Self::stage_with) for other policies.
    pub fn stage<U, R>(self, name: impl Into<String>, runner: R) -> Pipeline<'a, In, U>
    where
        U: Send + 'a,
        R: StageRunner<Out, U> + 'a,
    {
        self.stage_with(name, runner, StageOptions::new())
    }

    /// Adds a stage with options: a failure handler, retries, an input capacity (see
    /// [`StageOptions`]).
    pub fn stage_with<U, R, H>(
        mut self,
        name: impl Into<String>,
        runner: R,
        options: StageOptions<Out, H>,
    ) -> Pipeline<'a, In, U>
    where
        U: Send + 'a,
        R: StageRunner<Out, U> + 'a,
        H: FnMut(Failure<Out>) + Send + 'a,
    {
        let index = self.metas.len();
        self.metas.push(StageMeta {
            name: Arc::from(name.into()),
            kind: runner.kind(),
            keeps_order: runner.keeps_order(),
            capacity: options.capacity,
            problem: runner.check().err(),
            // The edge that fed the sink feeds the new stage; the sink gets a new one.
            chunks: self.sink_chunks,
        });
        Pipeline {
            chain: Box::new(Then {
                prev: self.chain,
                runner,
                policy: Policy::new(options),
                index,
                out: PhantomData,
            }),
            metas: self.metas,
            capacity: self.capacity,
            max_chunk: self.max_chunk,
            stack_size: self.stack_size,
            sink_chunks: Arc::new(AtomicUsize::new(1)),
        }
    }

    /// Sets the default capacity of every queue, in chunks (default 16). A queue holds at
    /// most `capacity × max_chunk` items, so memory stays bounded whatever the input's
    /// length. Zero, or more than 2^20, is a configuration error.
    #[must_use]
    pub fn capacity(mut self, chunks: usize) -> Self {
        self.capacity = chunks;
        self
    }

    /// Sets the largest number of items moved together between two threads (default 256).
    /// Chunks adapt to each stage's cost below this bound; 1 moves every item on its own.
    /// Zero is a configuration error.
    #[must_use]
    pub fn max_chunk(mut self, items: usize) -> Self {
        self.max_chunk = items;
        self
    }

    /// Sets the stack size of every thread a run starts, in bytes (default: the standard
    /// library's, 2 MiB unless `RUST_MIN_STACK` says otherwise). Thousands of I/O-bound
    /// workers start and stop faster with small stacks (64 KiB is plenty for a processor
    /// that does not recurse deeply); a processor that overflows its stack aborts the
    /// process, as in any thread. Less than 16 KiB is a configuration error.
    #[must_use]
    pub fn stack_size(mut self, bytes: usize) -> Self {
        self.stack_size = Some(bytes);
        self
    }

    /// The number of stages.
    pub fn len(&self) -> usize {
        self.metas.len()
    }

    /// Whether the pipeline has no stage.
    pub fn is_empty(&self) -> bool {
        self.metas.is_empty()
    }

    /// Runs the pipeline on `source`, giving every output to `sink`, and blocks until every
    /// thread of the run has been joined.
    ///
    /// The sink runs on the calling thread. See [`run_with`](Self::run_with) to read the
    /// outputs as an iterator instead, and [`job`](Self::job) for runs with a cancel token,
    /// a time limit or progress reports.
    ///
    /// # Errors
    ///
    /// The first of these cancels the run, which then returns it once every thread has
    /// stopped; anything failing after it is only counted
    /// ([`Report::suppressed_errors`]):
    ///
    /// - a processor error in a fail-fast stage: [`ErrorKind::Stage`], naming the stage;
    /// - a source or sink error: [`ErrorKind::Source`], [`ErrorKind::Sink`];
    /// - a panic: [`ErrorKind::Panic`];
    /// - cancellation or the time limit: [`ErrorKind::Cancelled`], [`ErrorKind::Deadline`];
    /// - a configuration error, found before any thread starts: [`ErrorKind::Config`].
    ///
    /// Except for configuration errors, the error carries the aborted run's [`Report`]. An
    /// aborted run never returns `Ok`, even if the sink received some outputs.
    ///
    /// **Deterministic prefix.** When every stage from the failing one to the sink keeps
    /// input order ([`Fifo`](crate::Fifo), [`Ordered`](crate::Ordered),
    /// [`Batch`](crate::Batch)), a processor error or panic takes effect at its item's
    /// position: the sink receives the outputs of every item before the failing one, and
    /// nothing after it, then `run` returns the error — as a sequential loop would. A source
    /// error likewise lets everything read before it reach the sink. Upstream stops at once;
    /// pipelines with an unordered stage after the failure are cancelled promptly instead.
    ///
    /// A sink may end the run early and cleanly by returning [`Stop`](crate::Stop).
    ///
    /// # Panics
    ///
    /// Never because of user code: a panic in a processor, an init closure, the source, the
    /// sink or a handler is caught and returned as [`ErrorKind::Panic`]. When several panic,
    /// the first is returned and the others are counted as suppressed errors. (A panic
    /// inside the `Drop` of an item while another panic unwinds aborts the process, as
    /// everywhere in Rust.)
    pub fn run<S, K>(&self, source: S, sink: K) -> Result<Report, Error>
    where
        S: IntoSource<In>,
        K: Sink<Out>,
    {
        self.job().run(source, sink)
    }

    /// Runs the pipeline on `source` and gives its outputs to `consume` as an iterator,
    /// on the calling thread; returns what `consume` returns, with the report.
    ///
    /// The iterator ([`Outputs`]) yields the outputs as the last stage emits them and ends
    /// with them, or when the run fails (then `run_with` returns the error, not what
    /// `consume` returned). Stop reading early — `take`, `find`, a `break`, a `?` — and the
    /// run stops cleanly: the rest is cancelled and
    /// [`Report::stopped_early`] is set. An error `consume` returns fails the run as a sink
    /// error ([`ErrorKind::Sink`]).
    ///
    /// # Errors
    ///
    /// As [`run`](Self::run).
    ///
    /// # Examples
    ///
    /// ```
    /// use pipework::{map, Ordered, Pipeline};
    ///
    /// let squares = Pipeline::new().stage("square", Ordered::new(2, map(|x: u64| x * x)));
    ///
    /// // The first three squares over 50: the run stops once it has them.
    /// let (big, report) = squares
    ///     .run_with(1..1_000_000u64, |outputs| Ok(outputs.filter(|&y| y > 50).take(3).collect::<Vec<_>>()))
    ///     .unwrap();
    /// assert_eq!(big, [64, 81, 100]);
    /// assert!(report.stopped_early);
    ///
    /// // `?` and `try_for_each` work inside.
    /// let mut text = String::new();
    /// squares
    ///     .run_with(1..=3, |mut outputs| {
    ///         outputs.try_for_each(|y| std::fmt::Write::write_fmt(&mut text, format_args!("{y} ")))?;
    ///         Ok(())
    ///     })
    ///     .unwrap();
    /// assert_eq!(text, "1 4 9 ");
    /// ```
    pub fn run_with<S, R, F>(&self, source: S, consume: F) -> Result<(R, Report), Error>
    where
        S: IntoSource<In>,
        F: FnOnce(Outputs<'_, Out>) -> Result<R, BoxError>,
    {
        self.job().run_with(source, consume)
    }

    /// Runs the pipeline and collects its outputs in a `Vec`, in the order the sink got
    /// them.
    ///
    /// # Errors
    ///
    /// As [`run`](Self::run); the outputs of an aborted run are dropped.
    pub fn collect<S>(&self, source: S) -> Result<(Vec<Out>, Report), Error>
    where
        S: IntoSource<In>,
    {
        let mut out = Vec::new();
        let report = self.run(source, &mut out)?;
        Ok((out, report))
    }

    /// Starts configuring one run: cancel token, time limit, progress.
    pub fn job(&self) -> Job<'_, 'a, '_, In, Out> {
        Job {
            pipeline: self,
            parts: JobOptions::default(),
        }
    }

    /// What the engine needs to know of the stages for one run.
    fn run_config(&self, token: Option<CancelToken>, timeout: Option<Duration>) -> RunConfig {
        // A failure takes effect at its position when every stage from it to the sink
        // keeps order.
        let mut ordered_tail = vec![true; self.metas.len() + 1];
        for (index, meta) in self.metas.iter().enumerate().rev() {
            ordered_tail[index] = meta.keeps_order && ordered_tail[index + 1];
        }
        RunConfig {
            stages: self
                .metas
                .iter()
                .enumerate()
                .map(|(index, meta)| {
                    StageState::new(
                        StageId::new(index, meta.name.clone()),
                        meta.kind,
                        meta.capacity.unwrap_or(self.capacity),
                        ordered_tail[index],
                    )
                })
                .collect(),
            max_chunk: self.max_chunk,
            stack_size: self.stack_size,
            default_capacity: self.capacity,
            chunks: (self.metas.iter().map(|meta| &meta.chunks))
                .chain([&self.sink_chunks])
                .map(Arc::clone)
                .collect(),
            external: token,
            timeout,
        }
    }

    /// Finds configuration errors before any thread starts.
    pub(crate) fn validate(&self) -> Result<(), Error> {
        let config = |stage: Option<StageId>, message: String| {
            Error::new(ErrorKind::Config { stage, message }, None)
        };
        if self.capacity == 0 || self.capacity > MAX_CAPACITY {
            return Err(config(
                None,
                format!("queue capacity must be between 1 and {MAX_CAPACITY} chunks"),
            ));
        }
        if self.max_chunk == 0 {
            return Err(config(None, "max_chunk must be at least 1".into()));
        }
        if self.stack_size.is_some_and(|b| b < MIN_STACK) {
            return Err(config(
                None,
                format!("a thread stack must be at least {MIN_STACK} bytes"),
            ));
        }
        for (index, meta) in self.metas.iter().enumerate() {
            let id = || Some(StageId::new(index, meta.name.clone()));
            if let Some(problem) = &meta.problem {
                return Err(config(id(), problem.clone()));
            }
            if meta.capacity.is_some_and(|c| c == 0 || c > MAX_CAPACITY) {
                return Err(config(
                    id(),
                    format!("queue capacity must be between 1 and {MAX_CAPACITY} chunks"),
                ));
            }
        }
        Ok(())
    }
}

impl<In, Out> std::fmt::Debug for Pipeline<'_, In, Out> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let stages: Vec<String> = self
            .metas
            .iter()
            .map(|m| format!("{} ({})", m.name, m.kind))
            .collect();
        f.debug_struct("Pipeline")
            .field("stages", &stages)
            .field("capacity", &self.capacity)
            .field("max_chunk", &self.max_chunk)
            .finish()
    }
}

/// The options of one run, being configured. Made by [`Pipeline::job`].
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use pipework::{with_context, CancelToken, ErrorKind, Fifo, Pipeline};
///
/// let slow = Pipeline::new().stage(
///     "slow",
///     Fifo::new(with_context(|x: u32, cx| cx.sleep(Duration::from_secs(10)).map(|()| x))),
/// );
///
/// // A time limit.
/// let err = slow.job().timeout(Duration::from_millis(50)).run(0..10, |_| Ok(())).unwrap_err();
/// assert!(matches!(err.kind(), ErrorKind::Deadline { .. }));
///
/// // A token cancelled from another thread.
/// let token = CancelToken::new();
/// let canceller = token.clone();
/// std::thread::spawn(move || {
///     std::thread::sleep(Duration::from_millis(50));
///     canceller.cancel();
/// });
/// let err = slow.job().cancel_token(&token).run(0..10, |_| Ok(())).unwrap_err();
/// assert!(matches!(err.kind(), ErrorKind::Cancelled));
/// ```
pub struct Job<'p, 'a, 'h, In, Out> {
    /// The pipeline to run.
    pipeline: &'p Pipeline<'a, In, Out>,
    /// The options collected so far.
    parts: JobOptions<'h>,
}

impl<'a, 'h, In, Out> Job<'_, 'a, 'h, In, Out>
where
    In: Send + 'a,
    Out: Send + 'a,
{
    /// Attaches the run to `token`: cancelling the token cancels the run, which returns
    /// [`ErrorKind::Cancelled`]. A token that is already cancelled fails the run before any
    /// thread starts.
    #[must_use]
    pub fn cancel_token(mut self, token: &CancelToken) -> Self {
        self.parts.token = Some(token.clone());
        self
    }

    /// Aborts the run with [`ErrorKind::Deadline`] if its last output has not reached the
    /// sink `limit` after it started ([`Sink::finish`] is not cut short). Processors see
    /// the deadline through [`Context::deadline`](crate::Context::deadline) and
    /// [`Context::remaining`](crate::Context::remaining): a processor blocked in a call
    /// that ignores it delays `run`'s return until that call returns.
    #[must_use]
    pub fn timeout(mut self, limit: Duration) -> Self {
        self.parts.timeout = Some(limit);
        self
    }

    /// Calls `callback` on the calling thread about every `every` with a snapshot of the
    /// report so far: per-stage counts, busy and blocked times, and queue depths (in chunks,
    /// [`StageReport::queued`](crate::StageReport::queued)).
    #[must_use]
    pub fn on_progress(mut self, every: Duration, callback: impl FnMut(&Report) + 'h) -> Self {
        self.parts.progress = Some((every, Box::new(callback)));
        self
    }

    /// Records the run's timeline — what each thread did, when, at chunk granularity —
    /// and the depths of its queues, in bounded memory (at most
    /// [`Timeline::INTERVALS_PER_TRACK`](crate::Timeline::INTERVALS_PER_TRACK) intervals
    /// per thread, neighbours merged past it); the report carries it
    /// ([`Report::timeline`]), an aborted run's too. With it off (the default) the engine
    /// pays one predictable branch per chunk.
    ///
    /// # Examples
    ///
    /// ```
    /// use pipework::{map, Fifo, Pipeline, TrackKind};
    ///
    /// let pipeline = Pipeline::new().stage("inc", Fifo::new(map(|x: u32| x + 1)));
    /// let report = pipeline.job().record_timeline().run(0..100, |_| Ok(())).unwrap();
    /// let timeline = report.timeline().unwrap();
    /// // The source thread, the stage's worker, the sink loop.
    /// let labels: Vec<String> = timeline.tracks().iter().map(|t| t.kind().label()).collect();
    /// assert_eq!(labels, ["source", "inc #0", "sink"]);
    /// assert!(matches!(timeline.tracks()[1].kind(), TrackKind::Worker { worker: 0, .. }));
    /// ```
    #[must_use]
    pub fn record_timeline(mut self) -> Self {
        self.parts.record_timeline = true;
        self
    }

    /// Runs the pipeline with these options. See [`Pipeline::run`].
    ///
    /// # Errors
    ///
    /// As [`Pipeline::run`].
    pub fn run<S, K>(self, source: S, sink: K) -> Result<Report, Error>
    where
        S: IntoSource<In>,
        K: Sink<Out>,
    {
        let pipeline = self.pipeline;
        pipeline.validate()?;
        let config = pipeline.run_config(self.parts.token.clone(), self.parts.timeout);
        execute(&*pipeline.chain, config, self.parts, source, ToSink(sink))
            .map(|((), report)| report)
    }

    /// Runs the pipeline with these options, giving its outputs to `consume` as an
    /// iterator. See [`Pipeline::run_with`].
    ///
    /// # Errors
    ///
    /// As [`Pipeline::run`].
    pub fn run_with<S, R, F>(self, source: S, consume: F) -> Result<(R, Report), Error>
    where
        S: IntoSource<In>,
        F: FnOnce(Outputs<'_, Out>) -> Result<R, BoxError>,
    {
        let pipeline = self.pipeline;
        pipeline.validate()?;
        let config = pipeline.run_config(self.parts.token.clone(), self.parts.timeout);
        execute(
            &*pipeline.chain,
            config,
            self.parts,
            source,
            ToFn(Some(consume)),
        )
    }

    /// Runs the pipeline with these options and collects its outputs in a `Vec`, in the
    /// order the sink got them.
    ///
    /// # Errors
    ///
    /// As [`Pipeline::run`]; the outputs of an aborted run are dropped.
    pub fn collect<S>(self, source: S) -> Result<(Vec<Out>, Report), Error>
    where
        S: IntoSource<In>,
    {
        let mut out = Vec::new();
        let report = self.run(source, &mut out)?;
        Ok((out, report))
    }
}

impl<In, Out> std::fmt::Debug for Job<'_, '_, '_, In, Out> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("pipeline", self.pipeline)
            .field("cancel_token", &self.parts.token)
            .field("timeout", &self.parts.timeout)
            .field("on_progress", &self.parts.progress.as_ref().map(|p| p.0))
            .field("record_timeline", &self.parts.record_timeline)
            .finish()
    }
}

/// The empty chain: its output edge is its input edge.
struct Start;

impl<T: Send> Segment<T, T> for Start {
    fn launch<'scope>(&'scope self, _: &Launcher<'scope, '_>, input: EdgeRx<T>) -> EdgeRx<T> {
        input
    }
}

/// A chain followed by one more stage.
struct Then<'a, In, Mid, Out, R> {
    /// The stages before this one.
    prev: Box<dyn Segment<In, Mid> + 'a>,
    /// This stage's runner.
    runner: R,
    /// This stage's error policy.
    policy: Policy<'a, Mid>,
    /// This stage's position.
    index: usize,
    /// The stage's output type.
    out: PhantomData<fn() -> Out>,
}

impl<In, Mid, Out, R> Segment<In, Out> for Then<'_, In, Mid, Out, R>
where
    In: Send,
    Mid: Send,
    Out: Send,
    R: StageRunner<Mid, Out>,
{
    fn launch<'scope>(
        &'scope self,
        launcher: &Launcher<'scope, '_>,
        input: EdgeRx<In>,
    ) -> EdgeRx<Out> {
        let mid = self.prev.launch(launcher, input);
        launcher.stage(self.index, &self.runner, &self.policy, mid)
    }
}
