//! The runner contract: [`StageRunner`], the [`StageHandle`] a runner starts its threads
//! through, and the engine's side of starting a stage ([`Launcher`]).
//!
//! # Why the trait is open
//!
//! The crate's own runners are written against exactly the surface a user's runner gets:
//! `StageHandle` and `Worker` have no crate-private back door. What keeps a runner from
//! breaking a run's guarantees is therefore not the trait's privacy but the engine, which
//! enforces the contract on every runner alike:
//!
//! - `start` runs under `catch_unwind`: a panic in it is the run's
//!   [`ErrorKind::Panic`] at [`Site::Start`], and cancels the run.
//! - A stage's input is a *lane* whose readers are counted: every `StageHandle` and every
//!   thread spawned through one holds a reference. When the last one goes while the input
//!   has not ended (and the run goes on), the run fails with
//!   [`ErrorKind::Runner`] naming the stage, instead of leaving
//!   upstream blocked on a full queue for ever. This covers a runner that starts no
//!   thread, one whose threads all return early, and one whose `start` drops its handle
//!   while a panic unwinds and catches that panic itself (the lane is checked when
//!   `start` is over: a panic that leaves `start` is the run's error instead).
//! - A `Worker` counts every item it hands out; an item the runner neither processes nor
//!   fails is counted when the worker is dropped (filtered, or cancelled if the run was
//!   cancelled), so the report balances whatever the runner does.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

use super::counters::Counter;
use super::record::{Recorder, Submit};
use super::state::{RunState, StageState};
use super::threads::{SpawnRefused, Spawner};
use super::trace::Role;
use super::watch::Watch;
use super::worker::{Output, Worker};
use crate::error::{BoxError, ErrorKind, Site, panic_message};
use crate::id::{StageId, thread_name};
use crate::policy::Policy;
use crate::transport::{EdgeRx, EdgeTx, Recv, SharedInput, dispose};

/// A strategy for running one stage: how many workers, and how they share the input.
///
/// Built in: [`Fifo`](crate::Fifo) (one worker, order kept), [`Fixed`](crate::Fixed) (n
/// workers), [`Dynamic`](crate::Dynamic) (workers spawned on demand up to a maximum),
/// [`Ordered`](crate::Ordered) (n workers, order kept), [`Batch`](crate::Batch) (items
/// grouped into `Vec`s) and [`Broadcast`](crate::Broadcast) (every item to every branch).
/// Each is written against the same public [`StageHandle`] and [`Worker`] a runner of
/// yours gets.
///
/// # Writing a runner
///
/// `start` is called on the thread that called `run`, before any item flows. It spawns the
/// stage's threads through the handle and returns at once; workers run until
/// [`Worker::recv`] returns `None`.
///
/// The engine holds every runner to this contract:
///
/// - the stage's threads must read its input until it ends: a stage all of whose threads
///   (and handles) are gone while its input goes on fails the run with
///   [`ErrorKind::Runner`] (a runner that starts no thread
///   included);
/// - a panic in `start` or in a thread is caught and returned as the run's error;
/// - an item a worker takes and neither [`process`](Worker::process)es nor fails is
///   counted when the worker ends, so [`Totals::is_balanced`](crate::Totals::is_balanced)
///   holds.
///
/// ```
/// use pipework::runner::{StageHandle, StageRunner};
/// use pipework::{map, Pipeline, Processor};
///
/// /// Runs a processor on two workers, a clone each (what `Fixed::new(2, p)` does).
/// struct Twice<P>(P);
///
/// impl<In, Out, P> StageRunner<In, Out> for Twice<P>
/// where
///     In: Send,
///     Out: Send,
///     P: Processor<In, Out> + Clone + Sync,
/// {
///     fn kind(&self) -> &'static str {
///         "twice"
///     }
///
///     fn start<'scope>(&'scope self, stage: StageHandle<'scope, '_, In, Out>) {
///         for _ in 0..2 {
///             stage.spawn(move |mut worker| worker.run(&mut self.0.clone()));
///         }
///     }
/// }
///
/// let pipeline = Pipeline::new().stage("square", Twice(map(|x: u64| x * x)));
/// let (mut out, report) = pipeline.collect(1..=4).unwrap();
/// out.sort();
/// assert_eq!(out, [1, 4, 9, 16]);
/// assert_eq!(report.stages[0].kind, "twice");
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot run a stage from `{In}` to `{Out}`",
    label = "not a stage runner from `{In}` to `{Out}`",
    note = "a stage's runner is `Fifo::new(p)`, `Fixed::new(n, p)`, `Dynamic::new(max, p)`, \
            `Ordered::new(n, p)`, `Batch::new(size, max_wait, p)` or `Broadcast`, with a \
            processor `p` from `{In}` to `{Out}` (`map(|x| …)`, `try_map(…)`, …), or a type \
            implementing `pipework::runner::StageRunner<{In}, {Out}>`"
)]
pub trait StageRunner<In, Out>: Send + Sync {
    /// A short name for reports: `"fifo"`, `"fixed"`, …
    fn kind(&self) -> &'static str;

    /// Checks the configuration. Called when the stage is added; an error is returned by
    /// `run` before any thread starts.
    ///
    /// # Errors
    ///
    /// A message saying what is wrong (for instance "a pool needs at least one worker").
    fn check(&self) -> Result<(), String> {
        Ok(())
    }

    /// Whether the stage's outputs leave in the order of its inputs (default `false`).
    ///
    /// When every stage from a failing one to the sink keeps order, the failure takes
    /// effect at its item's position: the sink gets every output of the items before it,
    /// then the run returns the error (see [`Pipeline::run`](crate::Pipeline::run)). Only
    /// say `true` for a runner whose outputs truly keep input order.
    fn keeps_order(&self) -> bool {
        false
    }

    /// Spawns the stage's threads.
    fn start<'scope>(&'scope self, stage: StageHandle<'scope, '_, In, Out>);
}

impl<In, Out, R> StageRunner<In, Out> for Box<R>
where
    R: StageRunner<In, Out> + ?Sized,
{
    fn kind(&self) -> &'static str {
        (**self).kind()
    }

    fn check(&self) -> Result<(), String> {
        (**self).check()
    }

    fn keeps_order(&self) -> bool {
        (**self).keeps_order()
    }

    fn start<'scope>(&'scope self, stage: StageHandle<'scope, '_, In, Out>) {
        (**self).start(stage);
    }
}

/// The input of a stage (or of one branch of a broadcast), with a count of what can still
/// read it: handles and threads. See the module docs.
struct Lane<'scope, In> {
    /// The run's state.
    run: &'scope RunState,
    /// The stage the lane feeds.
    stage: &'scope StageState,
    /// The input, shared by the lane's readers.
    input: Arc<SharedInput<In>>,
    /// Live `LaneRef`s.
    refs: AtomicUsize,
    /// Whether a thread was ever started on the lane.
    threads: AtomicBool,
    /// Set when the last reference was dropped while its thread panicked: whether that
    /// panic is reported depends on who catches it, so the check waits for the end of the
    /// runner's `start` (see [`Launcher::stage`]).
    panicked: AtomicBool,
    /// The lanes of the branches made from this one's handles (a broadcast's), checked
    /// with it after `start`.
    branches: Mutex<Vec<Arc<Lane<'scope, In>>>>,
}

/// One reference to a lane; the last one dropped checks that the input has ended.
struct LaneRef<'scope, In>(Arc<Lane<'scope, In>>);

impl<In> Clone for LaneRef<'_, In> {
    fn clone(&self) -> Self {
        // Ordering: AcqRel on a count whose every change is a read-modify-write; the
        // thread that brings it to zero sees every earlier change.
        self.0.refs.fetch_add(1, Ordering::AcqRel);
        LaneRef(Arc::clone(&self.0))
    }
}

impl<In> Drop for LaneRef<'_, In> {
    fn drop(&mut self) {
        // Ordering: AcqRel, see `clone`.
        if self.0.refs.fetch_sub(1, Ordering::AcqRel) == 1 {
            if std::thread::panicking() {
                // A thread spawned through a handle keeps its own reference until after its
                // panic is recorded, so this is the thread running `start`: the panic is the
                // run's error if it leaves `start`, but the runner may catch it. Checked
                // once `start` is over.
                // Ordering: Relaxed; set and read on the thread running `start`.
                self.0.panicked.store(true, Ordering::Relaxed);
            } else {
                self.0.abandoned();
            }
        }
    }
}

impl<In> Lane<'_, In> {
    /// After the runner's `start`: checks this lane and its branches if their last
    /// reference went while `start` panicked. A panic that left `start` has been recorded
    /// and cancelled the run by now; one the runner caught does not excuse the lane.
    fn after_start(&self) {
        // Ordering: Relaxed, see `LaneRef::drop`.
        if self.panicked.load(Ordering::Relaxed) {
            self.abandoned();
        }
        for branch in std::mem::take(&mut *self.branches.lock()) {
            branch.after_start();
        }
    }

    /// Nothing can read the input any more: fine if it has ended (or the run is over),
    /// a broken runner contract otherwise.
    fn abandoned(&self) {
        // Ordering: Relaxed; set with the run's error, before the failing thread ends.
        let halted = self.stage.halted.load(Ordering::Relaxed);
        // The run's token first: a cancellation reaches the stage's own tokens a moment
        // after it reaches the run's.
        if self.run.token.is_cancelled() || halted || self.stage.intake.is_cancelled() {
            return;
        }
        // Ordering: Relaxed; set before the thread that drops a reference started.
        let had_threads = self.threads.load(Ordering::Relaxed);
        let left = match self.input.edge().try_recv() {
            // Whether an input ends before a runner that starts no thread gives up is a
            // race: such a runner is at fault whatever the input.
            Recv::Closed | Recv::Cancelled if had_threads => return,
            Recv::Closed | Recv::Cancelled | Recv::TimedOut => Vec::new(),
            Recv::Got(chunk) => chunk,
        };
        let (n, _) = dispose(left.into_iter());
        self.stage.stats.add(Counter::Cancelled, n);
        self.run.fail(ErrorKind::Runner {
            stage: self.stage.id.clone(),
            message: if had_threads {
                "every thread of the stage ended while its input went on \
                 (a runner must read its input until it ends)"
            } else {
                "the runner started no thread to read the stage's input"
            }
            .into(),
        });
    }
}

/// A stage's access to the run while it starts: spawns its threads on the run's scope.
pub struct StageHandle<'scope, 'env, In: 'scope, Out: 'scope> {
    /// Spawns threads and registers them for joining.
    pub(super) spawner: Spawner<'scope, 'env>,
    /// The stage's id, kind and counters.
    pub(super) stage: &'scope StageState,
    /// The stage's error policy.
    pub(super) policy: &'scope Policy<'scope, In>,
    /// The stage's input (or a branch's), and the count of its readers.
    lane: LaneRef<'scope, In>,
    /// The next stage's input queue.
    pub(super) output: EdgeTx<Out>,
}

impl<In, Out> Clone for StageHandle<'_, '_, In, Out> {
    fn clone(&self) -> Self {
        StageHandle {
            spawner: self.spawner.clone(),
            stage: self.stage,
            policy: self.policy,
            lane: self.lane.clone(),
            output: self.output.clone(),
        }
    }
}

impl<In, Out> std::fmt::Debug for StageHandle<'_, '_, In, Out> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StageHandle")
            .field("stage", &self.stage.id)
            .finish_non_exhaustive()
    }
}

impl<'scope, 'env, In, Out> StageHandle<'scope, 'env, In, Out>
where
    In: Send + 'scope,
    Out: Send + 'scope,
{
    /// A handle on `input`, a new lane.
    pub(super) fn new(
        spawner: Spawner<'scope, 'env>,
        stage: &'scope StageState,
        policy: &'scope Policy<'scope, In>,
        input: Arc<SharedInput<In>>,
        output: EdgeTx<Out>,
    ) -> Self {
        let lane = LaneRef(Arc::new(Lane {
            run: spawner.run(),
            stage,
            input,
            refs: AtomicUsize::new(1),
            threads: AtomicBool::new(false),
            panicked: AtomicBool::new(false),
            branches: Mutex::new(Vec::new()),
        }));
        StageHandle {
            spawner,
            stage,
            policy,
            lane,
            output,
        }
    }

    /// A handle like this one on another lane (a branch of a broadcast), whose readers
    /// steal from each other.
    pub(super) fn with_input(&self, input: EdgeRx<In>) -> Self {
        self.with_shared_input(SharedInput::new(input))
    }

    /// A handle like this one on another lane (an ordered pool's worker's), whose
    /// readers may be siblings of other lanes' readers.
    pub(super) fn with_shared_input(&self, input: Arc<SharedInput<In>>) -> Self {
        let branch = StageHandle::new(
            self.spawner.clone(),
            self.stage,
            self.policy,
            input,
            self.output.clone(),
        );
        self.lane.0.branches.lock().push(Arc::clone(&branch.lane.0));
        branch
    }

    /// The stage's position and name.
    pub fn id(&self) -> &StageId {
        &self.stage.id
    }

    /// Whether the stage has been told to stop (the run was cancelled, or a failure
    /// downstream ended its input early); no thread starts after that.
    pub fn is_cancelled(&self) -> bool {
        self.stage.intake.is_cancelled()
    }

    /// Chunks waiting in the stage's input now, counting as one chunk each the rest of the
    /// chunks busy workers hold (which an idle worker would steal from).
    pub fn queued(&self) -> usize {
        let input = &self.lane.0.input;
        input.edge().len() + input.holders()
    }

    /// Whether the stage's output queue is full now (the next stage is the bottleneck).
    pub fn output_is_full(&self) -> bool {
        self.output.is_full()
    }

    /// Fails the run with a stage error.
    pub fn fail(&self, error: BoxError) {
        self.spawner.run().fail(ErrorKind::Stage {
            stage: self.stage.id.clone(),
            error,
        });
    }

    /// Spawns a worker thread that shares the stage's input with the other workers and
    /// runs `f`. The thread is named after the stage and the worker. Returns whether the
    /// thread started.
    ///
    /// A panic in `f` is caught, returned as the run's error and cancels the run. No thread
    /// starts once the run is cancelled; if the operating system refuses a thread, the run
    /// fails with a stage error.
    pub fn spawn<F>(&self, f: F) -> bool
    where
        F: FnOnce(Worker<'scope, In, Out>) + Send + 'scope,
    {
        self.spawn_worker(Output::Shared, f)
    }

    /// Spawns a worker reading this handle's lane and writing as `output` says.
    pub(super) fn spawn_worker<F>(&self, output: Output<'scope, Out>, f: F) -> bool
    where
        F: FnOnce(Worker<'scope, In, Out>) + Send + 'scope,
    {
        self.spawn_worker_on(Arc::clone(&self.lane.0.input), output, f)
    }

    /// Spawns a worker counted as a reader of this handle's lane that takes its chunks
    /// through `input` (the lane's edge, read the way an ordered pool reads it).
    pub(super) fn spawn_worker_on<F>(
        &self,
        input: Arc<SharedInput<In>>,
        output: Output<'scope, Out>,
        f: F,
    ) -> bool
    where
        F: FnOnce(Worker<'scope, In, Out>) + Send + 'scope,
    {
        let index = self.stage.next_index();
        self.start_thread(
            &thread_name(self.stage.id.name(), index),
            index,
            Role::Worker,
            move |handle| {
                let worker = Worker::new(handle, index, input, output);
                // The worker lives inside the closure: if `f` panics, unwinding drops it, and
                // its `Drop` accounts for every item it held.
                f(worker);
            },
        )
    }

    /// Spawns a thread of the stage that is not a worker (a distributor, say; periodic
    /// work goes on the run's watcher thread instead, see [`watch`](Self::watch)),
    /// named after the stage and `role`. Its panics are caught like a worker's. Returns
    /// whether the thread started.
    pub fn spawn_helper<F>(&self, role: &str, f: F) -> bool
    where
        F: FnOnce() + Send + 'scope,
    {
        let index = self.stage.next_index();
        let name = thread_name(&format!("{}-{role}", self.stage.id.name()), index);
        self.start_thread(&name, index, Role::Helper(role), move |_| f())
    }

    /// Calls `job` on the run's watcher thread about every `period`, and at once after
    /// each [`Watch::nudge`], until it returns false or the stage is cancelled. One thread
    /// serves the watches of every stage of a run: it starts with the first one and ends
    /// with the last. A dynamic pool's watch, for one, looks every millisecond for input
    /// that no worker is taking and starts workers.
    ///
    /// The job also ends once the stage has started threads and every one of them has
    /// ended (looked at every few milliseconds), so a job cannot keep a run from ending;
    /// a runner that knows when it is done should return false then, for the run to end
    /// at once. Until it ends, the job holds what it captures: a clone of the stage's
    /// handle keeps the stage's output open, as one of the stage's threads would.
    ///
    /// `job` should be short and must not wait for the stage's input or output: the other
    /// stages' watches wait for it. A period under 100 µs counts as 100 µs, one over a day
    /// as a day. A panic in it (or in the drop of what it captured) is caught, returned as
    /// the run's error (at this stage) and cancels the run. Returns `None` when the watch could not start:
    /// the run was cancelled, or the operating system refused the thread (the run then
    /// fails with a stage error).
    ///
    /// # Examples
    ///
    /// A runner with one worker and a watch that notes the deepest input queue it sees:
    ///
    /// ```
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    /// use std::time::Duration;
    /// use pipework::runner::{StageHandle, StageRunner};
    /// use pipework::{map, Pipeline, Processor};
    ///
    /// struct Watched<P> {
    ///     processor: P,
    ///     deepest: AtomicUsize,
    /// }
    ///
    /// impl<P: Processor<u64, u64> + Clone + Sync> StageRunner<u64, u64> for Watched<P> {
    ///     fn kind(&self) -> &'static str {
    ///         "watched"
    ///     }
    ///
    ///     fn start<'scope>(&'scope self, stage: StageHandle<'scope, '_, u64, u64>) {
    ///         stage.spawn(move |mut worker| worker.run(&mut self.processor.clone()));
    ///         let looked_at = stage.clone();
    ///         // Ends once the worker has ended (it keeps the stage's output open until
    ///         // then, through its clone of the handle).
    ///         stage.watch(Duration::from_millis(1), move || {
    ///             self.deepest.fetch_max(looked_at.queued(), Ordering::Relaxed);
    ///             true
    ///         });
    ///     }
    /// }
    ///
    /// let stage = Watched { processor: map(|x: u64| x + 1), deepest: AtomicUsize::new(0) };
    /// let pipeline = Pipeline::new().stage("plus one", stage);
    /// let (out, _) = pipeline.collect(0..1_000u64).unwrap();
    /// assert_eq!(out, (1..=1_000u64).collect::<Vec<_>>());
    /// ```
    pub fn watch<F>(&self, period: Duration, job: F) -> Option<Watch<'scope>>
    where
        F: FnMut() -> bool + Send + 'scope,
    {
        let stage = self.stage;
        let mut guarded = Guarded {
            job: Some(job),
            run: self.spawner.run(),
            stage,
            index: stage.next_index(),
        };
        let call = move || guarded.call();
        let period = period.clamp(MIN_WATCH_PERIOD, MAX_WATCH_PERIOD);
        let watches = self.spawner.watches();
        match watches.add(&self.spawner, period, stage, Box::new(call)) {
            Ok(watch) => Some(watch),
            Err(SpawnRefused::Cancelled) => None,
            Err(SpawnRefused::Os(e)) => {
                self.fail(format!("cannot start a thread: {e}").into());
                None
            }
        }
    }

    /// Spawns an engine helper whose time the run's timeline records: `f` gets the
    /// thread's recorder when the run records (see `record::Clock`).
    pub(super) fn spawn_recorded_helper<F>(&self, role: &'static str, f: F) -> bool
    where
        F: FnOnce(Option<&mut Recorder>) + Send + 'scope,
    {
        let index = self.stage.next_index();
        let name = thread_name(&format!("{}-{role}", self.stage.id.name()), index);
        let stage = self.stage;
        self.start_thread(&name, index, Role::Helper(role), move |handle| {
            let observe = handle.spawner.observe();
            let mut submit = Submit {
                observe,
                recorder: observe.recorder(crate::timeline::TrackKind::Helper {
                    stage: stage.id.clone(),
                    role,
                    index,
                }),
            };
            f(submit.recorder.as_deref_mut());
        })
    }

    /// Starts a thread running `body` under `catch_unwind`; a refusal by the OS fails the
    /// run. A panic in a `worker` of a stage whose failures take effect at their position
    /// does so (the worker flushed what came before as it unwound).
    ///
    /// The thread holds a clone of this handle — a reference on the lane and a sender of
    /// the stage's output — until after a panic has been recorded, so that the output does
    /// not close before the run knows why.
    fn start_thread<F>(&self, name: &str, index: usize, role: Role<'_>, body: F) -> bool
    where
        F: FnOnce(&Self) + Send + 'scope,
    {
        let run = self.spawner.run();
        let stage = self.stage;
        let handle = self.clone();
        let worker = matches!(role, Role::Worker);
        let span = self
            .spawner
            .observe()
            .trace
            .stage_thread_span(&stage.id, role, index);
        // Ordering: SeqCst, see `StageState::threads_ended`.
        stage.threads.fetch_add(1, Ordering::SeqCst);
        stage.had_threads.store(true, Ordering::SeqCst);
        let spawned = self.spawner.spawn(name.to_owned(), move || {
            let _span = span.enter_here();
            let handle = handle;
            if let Err(payload) = catch_unwind(AssertUnwindSafe(|| body(&handle))) {
                report_thread_panic(run, stage, index, worker, &*payload);
            }
            drop(handle);
            stage.threads.fetch_sub(1, Ordering::SeqCst);
        });
        if spawned.is_err() {
            stage.threads.fetch_sub(1, Ordering::SeqCst);
        }
        match spawned {
            Ok(()) => {
                // Ordering: Relaxed; read by whoever drops the last reference, which this
                // thread's handle clone (made before the spawn) keeps from happening first.
                self.lane.0.threads.store(true, Ordering::Relaxed);
                true
            }
            Err(SpawnRefused::Cancelled) => false,
            Err(SpawnRefused::Os(e)) => {
                self.fail(format!("cannot start a thread: {e}").into());
                false
            }
        }
    }

    /// The stage's input.
    pub(super) fn input(&self) -> &EdgeRx<In> {
        self.lane.0.input.edge()
    }
}

/// The shortest period of a watch job: a shorter one would keep the watcher thread busy.
const MIN_WATCH_PERIOD: Duration = Duration::from_micros(100);

/// The longest period of a watch job (the clock's arithmetic stays in range).
const MAX_WATCH_PERIOD: Duration = Duration::from_secs(24 * 60 * 60);

/// A watch job as the run's watcher thread holds it: its calls and its `Drop` (the values
/// it captured) run under `catch_unwind`, so that nothing a job does ends the watcher
/// thread, which serves every stage's jobs. A panic is the stage's error.
struct Guarded<'scope, F> {
    /// The job; taken when it is dropped.
    job: Option<F>,
    /// The run's state.
    run: &'scope RunState,
    /// The stage that registered the job.
    stage: &'scope StageState,
    /// The job's index among the stage's threads, for the panic's site.
    index: usize,
}

impl<F: FnMut() -> bool> Guarded<'_, F> {
    /// Calls the job; false when it is done or panicked.
    fn call(&mut self) -> bool {
        let Some(job) = self.job.as_mut() else {
            return false;
        };
        match catch_unwind(AssertUnwindSafe(job)) {
            Ok(go_on) => go_on,
            Err(payload) => {
                report_thread_panic(self.run, self.stage, self.index, false, &*payload);
                false
            }
        }
    }
}

impl<F> Drop for Guarded<'_, F> {
    fn drop(&mut self) {
        let job = self.job.take();
        if let Err(payload) = catch_unwind(AssertUnwindSafe(move || drop(job))) {
            report_thread_panic(self.run, self.stage, self.index, false, &*payload);
        }
    }
}

/// Records the panic that ended a thread of `stage`: at its position when a worker of a
/// stage whose failures take effect there handed on what came before (see `worker`),
/// otherwise as the run's error. Out of line: a thread's outermost frame stays small (a
/// thread of an I/O-bound pool touches few pages of its stack).
#[cold]
#[inline(never)]
pub(super) fn report_thread_panic(
    run: &RunState,
    stage: &StageState,
    index: usize,
    worker: bool,
    payload: &(dyn std::any::Any + Send),
) {
    let kind = ErrorKind::Panic {
        site: Site::Stage {
            stage: stage.id.clone(),
            worker: index,
        },
        message: panic_message(payload),
    };
    match super::worker::handed_on_before_panicking() {
        Some(place) if worker && stage.deferred => {
            run.fail_at(kind, stage.id.index() + 1, place);
        }
        _ => run.fail(kind),
    }
}

/// The engine's side of starting the stages: wires each stage's output edge, calls its
/// runner under `catch_unwind`, and lets the contract checks above do the rest.
pub(crate) struct Launcher<'scope, 'env> {
    pub(super) spawner: Spawner<'scope, 'env>,
}

impl<'scope> Launcher<'scope, '_> {
    /// Starts stage `index` reading `input` with `runner`; returns the stage's output.
    pub(crate) fn stage<In, Out, R>(
        &self,
        index: usize,
        runner: &'scope R,
        policy: &'scope Policy<'scope, In>,
        input: EdgeRx<In>,
    ) -> EdgeRx<Out>
    where
        In: Send + 'scope,
        Out: Send + 'scope,
        R: StageRunner<In, Out> + ?Sized,
    {
        let run = self.spawner.run();
        let (tx, rx) = self.spawner.edge_into(index + 1);
        let stage = &run.stages[index];
        // A runner that keeps order reads alone (an ordered pool's workers read through
        // an input of their own, `SharedInput::ordered`): its chunks stay private. Any
        // other runner's workers stash theirs (see `transport::inbox`).
        let input = if runner.keeps_order() {
            SharedInput::lone(input)
        } else {
            SharedInput::new(input)
        };
        let handle = StageHandle::new(self.spawner.clone(), stage, policy, input, tx);
        let lane = Arc::clone(&handle.lane.0);
        if let Err(payload) = catch_unwind(AssertUnwindSafe(|| runner.start(handle))) {
            run.fail(ErrorKind::Panic {
                site: Site::Start {
                    stage: stage.id.clone(),
                },
                message: panic_message(&*payload),
            });
        }
        lane.after_start();
        rx
    }
}

/// The stages of a pipeline, chained: starts every stage and returns the last edge.
/// Implemented by the pipeline's definition; the engine calls it once per run.
pub(crate) trait Segment<In, Out>: Send + Sync {
    /// Starts this segment's stages reading `input`; returns the edge they write to.
    fn launch<'scope>(
        &'scope self,
        launcher: &Launcher<'scope, '_>,
        input: EdgeRx<In>,
    ) -> EdgeRx<Out>;
}
