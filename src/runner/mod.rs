//! Stage runners: how a stage's work is spread over threads.
//!
//! A runner receives a [`StageHandle`] when the run starts and spawns the stage's workers
//! through it. Each worker gets a [`Worker`]: its input, its output, its [`Context`], and
//! the stage's error policy and accounting, so that a runner only decides *how many*
//! workers run and *which processor* each uses.
//!
//! # Invariants every worker keeps (and custom runners inherit)
//!
//! - **Ownership of senders.** Each worker owns clones of its stage's output sender and
//!   nothing else does once `start` returns; the next stage sees the end of its input when
//!   the last worker of this stage has exited.
//! - **Wake-ups.** Every blocking receive and send also waits on the run's cancellation
//!   signal, so cancellation wakes a worker blocked on an empty or a full queue.
//! - **Panics.** The closure given to [`StageHandle::spawn`] runs under `catch_unwind`; a
//!   panic becomes the run's [`ErrorKind::Panic`](crate::ErrorKind::Panic) and cancels the
//!   run. The item the processor held counts as failed.
//! - **Accounting.** Every item a worker takes from its input is counted once as filtered,
//!   mapped (it produced outputs), failed or cancelled; items left in the worker's buffers
//!   when it exits are counted as cancelled.
//! - **No new work after cancellation.** [`Worker::recv`] checks cancellation before handing
//!   out each item.

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
pub use factory::{Cloned, Factory, Init};
pub use fifo::Fifo;
pub use fixed::Fixed;
pub use ordered::Ordered;

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;

use crossbeam_channel::Receiver;

use crate::context::{CancelToken, Context};
use crate::error::{BoxError, ErrorKind, Site, panic_message};
use crate::policy::{Erase, Failure, Policy, Transient, unwrap_transient};
use crate::processor::{Emitter, Processor};
use crate::report::{LocalStats, StageId, nanos};
use crate::run::{Shared, Spawner, StageShared};
use crate::transport::{EdgeRx, EdgeTx, Inbox, Outbox, Pacer, Recv};

/// A strategy for running one stage: how many workers, and how they share the input.
///
/// Built in: [`Fifo`] (one worker, order kept), [`Fixed`] (n workers), [`Dynamic`] (workers
/// spawned on demand up to a maximum) and [`Broadcast`] (every item to every branch).
///
/// # Writing a runner
///
/// `start` is called on the thread that called `run`, before any item flows. It spawns the
/// stage's workers through the handle and returns at once; the workers run until
/// [`Worker::recv`] returns `None`. A worker must keep taking items until then (or until it
/// fails): a stage that stops reading while the run goes on would leave its upstream
/// blocked.
///
/// ```
/// use pipework::{Context, Pipeline, StageHandle, StageRunner};
///
/// /// Runs a `Fn` processor on two workers (what `Fixed::new(2, f)` does).
/// struct Twice<F>(F);
///
/// impl<In, Out, F> StageRunner<In, Out> for Twice<F>
/// where
///     In: Send,
///     Out: Send,
///     F: Fn(In, &Context<'_>) -> Result<Out, pipework::BoxError> + Send + Sync,
/// {
///     fn kind(&self) -> &'static str {
///         "twice"
///     }
///
///     fn start<'scope>(&'scope self, stage: StageHandle<'scope, '_, In, Out>) {
///         for _ in 0..2 {
///             stage.spawn(move |mut worker| worker.run(&mut &self.0));
///         }
///     }
/// }
///
/// let pipeline = Pipeline::new().stage("square", Twice(|x: u64, _: &Context| Ok(x * x)));
/// let (mut out, report) = pipeline.collect(1..=4).unwrap();
/// out.sort();
/// assert_eq!(out, [1, 4, 9, 16]);
/// assert_eq!(report.stages[0].kind, "twice");
/// ```
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

    /// Spawns the stage's workers.
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

    fn start<'scope>(&'scope self, stage: StageHandle<'scope, '_, In, Out>) {
        (**self).start(stage)
    }
}

/// A stage's access to the run while it starts: spawns workers on the run's scope.
pub struct StageHandle<'scope, 'env, In: 'scope, Out: 'scope> {
    /// Spawns threads and registers them for joining.
    spawner: Spawner<'scope, 'env>,
    /// The stage's id, kind and counters.
    stage: &'scope StageShared,
    /// The stage's error policy.
    policy: &'scope Policy<In>,
    /// The stage's input queue.
    input: EdgeRx<In>,
    /// The next stage's input queue.
    output: EdgeTx<Out>,
}

impl<'scope, 'env, In, Out> Clone for StageHandle<'scope, 'env, In, Out> {
    fn clone(&self) -> Self {
        StageHandle {
            spawner: self.spawner.clone(),
            stage: self.stage,
            policy: self.policy,
            input: self.input.clone(),
            output: self.output.clone(),
        }
    }
}

impl<In, Out> fmt::Debug for StageHandle<'_, '_, In, Out> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
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
    pub(crate) fn new(
        spawner: Spawner<'scope, 'env>,
        stage: &'scope StageShared,
        policy: &'scope Policy<In>,
        input: EdgeRx<In>,
        output: EdgeTx<Out>,
    ) -> Self {
        StageHandle {
            spawner,
            stage,
            policy,
            input,
            output,
        }
    }

    /// The stage's position and name.
    pub fn id(&self) -> &StageId {
        &self.stage.id
    }

    /// Spawns a worker thread that shares the stage's input with the other workers and
    /// runs `f`. The thread is named after the stage and the worker.
    ///
    /// A panic in `f` is caught, returned as the run's error and cancels the run. If the
    /// operating system refuses to start a thread, the run fails with a stage error.
    pub fn spawn<F>(&self, f: F)
    where
        F: FnOnce(Worker<'scope, In, Out>) + Send + 'scope,
    {
        if let Err((e, _)) = self.spawn_fed(self.input.rx.clone(), Vec::new(), f) {
            self.fail(format!("cannot start a worker thread: {e}").into());
        }
    }

    /// Spawns a worker reading `rx` (instead of the stage input) that starts with `first`.
    pub(crate) fn spawn_fed<F>(
        &self,
        rx: Receiver<Vec<In>>,
        first: Vec<In>,
        f: F,
    ) -> Result<(), (std::io::Error, Vec<In>)>
    where
        F: FnOnce(Worker<'scope, In, Out>) + Send + 'scope,
    {
        let index = self.stage.next_index();
        let name = thread_name(self.stage.id.name(), index);
        let handle = self.clone();
        // The first chunk travels into the thread through this slot, so that a refused spawn
        // can give it back for the caller to account for.
        let slot = std::sync::Arc::new(parking_lot::Mutex::new(Some(first)));
        let thread_slot = std::sync::Arc::clone(&slot);
        let spawned = self.spawner.spawn(name, move || {
            let first = thread_slot.lock().take().unwrap_or_default();
            handle.enter(index, rx, first, f);
        });
        spawned.map_err(|e| (e, slot.lock().take().unwrap_or_default()))
    }

    /// Spawns a thread of the stage that is not a worker (a dispatcher, a distributor).
    /// Panics in it are caught like a worker's.
    pub(crate) fn spawn_helper<F>(&self, role: &str, f: F)
    where
        F: FnOnce() + Send + 'scope,
    {
        let index = self.stage.next_index();
        let name = thread_name(&format!("{}-{role}", self.stage.id.name()), index);
        let stage = self.stage;
        let shared = self.spawner.shared();
        let spawned = self.spawner.spawn(name, move || {
            if let Err(payload) = catch_unwind(AssertUnwindSafe(f)) {
                shared.fail(ErrorKind::Panic {
                    site: Site::Stage {
                        stage: stage.id.clone(),
                        worker: index,
                    },
                    message: panic_message(&*payload),
                });
            }
        });
        if let Err(e) = spawned {
            self.fail(format!("cannot start the {role} thread: {e}").into());
        }
    }

    /// Runs a worker on this thread: the body of every worker thread.
    fn enter<F>(self, index: usize, rx: Receiver<Vec<In>>, first: Vec<In>, f: F)
    where
        F: FnOnce(Worker<'scope, In, Out>),
    {
        let shared = self.spawner.shared();
        let stage = self.stage;
        let worker = Worker::new(self, index, rx, first);
        // The worker lives inside the closure: if `f` panics, unwinding drops it, and its
        // `Drop` accounts for every item it held.
        if let Err(payload) = catch_unwind(AssertUnwindSafe(move || f(worker))) {
            shared.fail(ErrorKind::Panic {
                site: Site::Stage {
                    stage: stage.id.clone(),
                    worker: index,
                },
                message: panic_message(&*payload),
            });
        }
    }

    /// Fails the run with a stage error.
    pub(crate) fn fail(&self, error: BoxError) {
        self.spawner.shared().fail(ErrorKind::Stage {
            stage: self.stage.id.clone(),
            error,
        });
    }

    /// The run's token.
    pub(crate) fn token(&self) -> &'scope CancelToken {
        &self.spawner.shared().token
    }

    pub(crate) fn stage(&self) -> &'scope StageShared {
        self.stage
    }

    /// The stage's input queue.
    pub(crate) fn input(&self) -> &EdgeRx<In> {
        &self.input
    }

    /// A channel private to the stage, holding at most `capacity` chunks; what is left in
    /// it after the run counts as cancelled for the stage.
    pub(crate) fn channel<T: Send + 'scope>(
        &self,
        capacity: usize,
    ) -> (
        crossbeam_channel::Sender<Vec<T>>,
        crossbeam_channel::Receiver<Vec<T>>,
    ) {
        self.spawner.channel(capacity, &self.stage.stats.cancelled)
    }

    /// The stage's output queue.
    pub(crate) fn output(&self) -> &EdgeTx<Out> {
        &self.output
    }

    /// Splits the stage into `n` branches with queues of their own that share the stage's
    /// output; returns the senders into the branches and the branches' handles.
    pub(crate) fn fan_out(&self, n: usize) -> (Vec<EdgeTx<In>>, Vec<Self>) {
        (0..n)
            .map(|_| {
                let (tx, rx) = self.spawner.edge_into(self.stage.id.index());
                let mut branch = self.clone();
                branch.input = rx;
                (tx, branch)
            })
            .unzip()
    }
}

/// How one unit of work (an item, or a batch) is kept, erased and counted.
struct Unit<'p, U> {
    /// Clones the unit before an attempt, when the stage retries or routes.
    keep: Option<&'p dyn Fn(&U) -> U>,
    /// Erases a failed unit for the failure handler, when the stage routes.
    erase: Option<Erase<U>>,
    /// Stage input items in the unit.
    items: u64,
}

/// A name for a thread: the stage's name and the worker's index, cut to the 15 bytes Linux
/// keeps, name first.
fn thread_name(stage: &str, index: usize) -> String {
    let suffix = format!("#{index}");
    let room = 15usize.saturating_sub(suffix.len());
    let mut cut = stage.len().min(room);
    while !stage.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{suffix}", &stage[..cut])
}

/// One worker of a stage: its input, its output, and the stage's policy and counters.
///
/// A runner spawns workers with [`StageHandle::spawn`] and usually calls [`run`](Self::run)
/// with the worker's processor. [`recv`](Self::recv) and [`process`](Self::process) are
/// there for runners that need their own loop.
pub struct Worker<'scope, In: 'scope, Out: 'scope> {
    /// What processors see.
    cx: Context<'scope>,
    /// The run's token.
    token: &'scope CancelToken,
    /// The run's shared state.
    shared: &'scope Shared,
    /// The stage's id and counters.
    stage: &'scope StageShared,
    /// The stage's error policy.
    policy: &'scope Policy<In>,
    /// The current input chunk.
    inbox: Inbox<In>,
    /// The output buffer.
    outbox: Outbox<Out>,
    /// Cost measurement and chunk sizing.
    pacer: Pacer,
    /// Counters not yet flushed to the stage.
    local: LocalStats,
    /// Blocked time of the outbox already moved into `local`.
    reported_blocked: u64,
    /// Items a processor holds (a batch counts its items): if the worker is dropped while
    /// it holds some, the processor panicked, and the unit counts as failed.
    in_flight: u64,
}

impl<'scope, In, Out> Worker<'scope, In, Out>
where
    In: Send + 'scope,
    Out: Send + 'scope,
{
    fn new(
        handle: StageHandle<'scope, '_, In, Out>,
        index: usize,
        rx: Receiver<Vec<In>>,
        first: Vec<In>,
    ) -> Self {
        let shared = handle.spawner.shared();
        let stage = handle.stage;
        stage.stats.worker_started();
        let mut pacer = Pacer::new(handle.input.shape.advice());
        let mut inbox = Inbox::new(rx, handle.input.shape);
        let mut local = LocalStats::default();
        if !first.is_empty() {
            local.received += first.len() as u64;
            pacer.begin(Instant::now(), first.len(), 0);
            inbox.load(first);
        }
        Worker {
            cx: Context::new(&stage.id, index, &shared.token),
            token: &shared.token,
            shared,
            stage,
            policy: handle.policy,
            inbox,
            outbox: Outbox::new(handle.output),
            pacer,
            local,
            reported_blocked: 0,
            in_flight: 0,
        }
    }

    /// The context this worker's processor calls get.
    pub fn context(&self) -> &Context<'scope> {
        &self.cx
    }

    /// The next input item, or `None` when the input has ended or the run was cancelled.
    ///
    /// Blocks while the input is empty; before blocking it sends the outputs it has
    /// buffered, so that downstream stages never wait on a partial chunk.
    pub fn recv(&mut self) -> Option<In> {
        loop {
            if let Some(item) = self.next_buffered() {
                return Some(item);
            }
            if self.token.is_cancelled() {
                return None;
            }
            match self.refill(None) {
                Recv::Got(()) => {}
                _ => return None,
            }
        }
    }

    /// The next item of the current chunk, without blocking; `None` when the chunk is used
    /// up or the run was cancelled.
    #[inline]
    pub(crate) fn next_buffered(&mut self) -> Option<In> {
        if self.token.is_cancelled() {
            return None;
        }
        self.inbox.next_buffered()
    }

    /// Processes the rest of the current chunk. False when the worker must stop: the stage
    /// failed or the run was cancelled.
    pub(crate) fn process_buffered<P>(&mut self, processor: &mut P) -> bool
    where
        P: Processor<In, Out> + ?Sized,
    {
        while let Some(item) = self.next_buffered() {
            if !self.process(processor, item) {
                return false;
            }
        }
        !self.token.is_cancelled()
    }

    /// Closes the current chunk (measuring it) and takes the next one, waiting until
    /// `deadline` at most.
    pub(crate) fn refill(&mut self, deadline: Option<Instant>) -> Recv<()> {
        let busy = self
            .pacer
            .finish(Instant::now(), self.outbox.blocked_ns, self.inbox.shape());
        self.local.busy_ns += busy;
        self.outbox.set_own_limit(self.pacer.limit());
        let mut got = self.inbox.try_take();
        if let Recv::TimedOut = got {
            // Nothing ready: send what we hold before blocking, so a trickle is not delayed.
            self.outbox.flush(self.token);
            self.sync_stats();
            let waiting = Instant::now();
            got = self.inbox.take(self.token, deadline);
            self.local.wait_ns += nanos(waiting.elapsed());
        }
        match got {
            Recv::Got(n) => {
                self.local.received += n as u64;
                self.pacer.begin(Instant::now(), n, self.outbox.blocked_ns);
                self.sync_stats();
                Recv::Got(())
            }
            Recv::Closed => Recv::Closed,
            Recv::Cancelled => Recv::Cancelled,
            Recv::TimedOut => Recv::TimedOut,
        }
    }

    /// Runs `processor` on every input item until the input ends, the run is cancelled or
    /// the stage fails.
    pub fn run<P>(&mut self, processor: &mut P)
    where
        P: Processor<In, Out> + ?Sized,
    {
        while let Some(item) = self.recv() {
            if !self.process(processor, item) {
                return;
            }
        }
    }

    /// Runs `processor` on one item and applies the stage's error policy (retries, then
    /// routing or failing fast). Returns `false` when the worker should stop: the stage
    /// failed, or the run was cancelled.
    pub fn process<P>(&mut self, processor: &mut P, item: In) -> bool
    where
        P: Processor<In, Out> + ?Sized,
    {
        let policy = self.policy;
        let unit = Unit {
            keep: policy.keep.as_ref().map(|k| k as &dyn Fn(&In) -> In),
            erase: policy.erase,
            items: 1,
        };
        self.process_unit(processor, item, unit)
    }

    /// Runs `processor` on a batch of items that counts as one unit from now on (`k - 1`
    /// of its `k` items are counted as merged).
    pub(crate) fn process_batch<P>(&mut self, processor: &mut P, batch: Vec<In>) -> bool
    where
        P: Processor<Vec<In>, Out> + ?Sized,
    {
        let policy = self.policy;
        let keep = policy
            .keep
            .map(|k| move |batch: &Vec<In>| batch.iter().map(k).collect::<Vec<In>>());
        let unit = Unit {
            keep: keep.as_ref().map(|k| k as &dyn Fn(&Vec<In>) -> Vec<In>),
            erase: policy.erase_batch,
            items: batch.len() as u64,
        };
        self.process_unit(processor, batch, unit)
    }

    /// The body of `process` and `process_batch`.
    fn process_unit<U, P>(&mut self, processor: &mut P, unit: U, how: Unit<'_, U>) -> bool
    where
        P: Processor<U, Out> + ?Sized,
    {
        if self.token.is_cancelled() {
            // No new work after cancellation.
            self.local.cancelled += how.items;
            return false;
        }
        let mut unit = unit;
        let mut retries = 0;
        let error = loop {
            let kept = how.keep.map(|keep| keep(&unit));
            self.in_flight = how.items;
            let mut out = Emitter::new(&mut self.outbox, self.token);
            let result = processor.process(unit, &self.cx, &mut out);
            let emitted = out.count();
            self.in_flight = 0;
            self.local.emitted += emitted as u64;
            let error = match result {
                Ok(()) => {
                    if emitted == 0 {
                        self.local.filtered += 1;
                    } else {
                        self.local.mapped += 1;
                    }
                    self.local.merged += how.items - 1;
                    return !self.token.is_cancelled();
                }
                Err(e) => e,
            };
            if self.token.is_cancelled() {
                // The run is over; an error now is most likely the cancellation itself.
                self.local.cancelled += how.items;
                return false;
            }
            match (self.policy.retry, kept) {
                (Some(retry), Some(again))
                    if retries < retry.attempts() && error.is::<Transient>() =>
                {
                    retries += 1;
                    self.local.retries += 1;
                    if self.cx.sleep(retry.wait(retries)).is_err() {
                        self.local.cancelled += how.items;
                        return false;
                    }
                    unit = again;
                }
                (_, kept) => break (unwrap_transient(error), kept),
            }
        };
        let (error, kept) = error;
        self.local.failed += 1;
        self.local.merged += how.items - 1;
        match (kept, how.erase) {
            (Some(item), Some(erase)) => {
                self.local.routed += 1;
                self.shared
                    .route(Failure::new(self.stage.id.clone(), error, erase(item)));
                !self.token.is_cancelled()
            }
            _ => {
                self.fail(error);
                false
            }
        }
    }

    /// Takes the outputs buffered since the last call (for runners whose output is in
    /// manual mode).
    pub(crate) fn take_output(&mut self) -> Vec<Out> {
        self.outbox.take()
    }

    /// Stops sending outputs downstream by itself: the runner takes them with
    /// `take_output`.
    pub(crate) fn set_manual_output(&mut self) {
        self.outbox.set_manual();
    }

    /// Counts `n` items the runner dropped because the run was cancelled.
    pub(crate) fn count_cancelled(&mut self, n: usize) {
        self.local.cancelled += n as u64;
    }

    /// Fails the run with a stage error (for instance when a worker cannot set itself up).
    pub fn fail(&self, error: BoxError) {
        self.shared.fail(ErrorKind::Stage {
            stage: self.stage.id.clone(),
            error,
        });
    }
}

impl<In, Out> Worker<'_, In, Out> {
    /// Moves counters into the stage's shared statistics.
    fn sync_stats(&mut self) {
        self.local.blocked_ns += self.outbox.blocked_ns - self.reported_blocked;
        self.reported_blocked = self.outbox.blocked_ns;
        self.local.cancelled += std::mem::take(&mut self.outbox.cancelled);
        self.local.flush(&self.stage.stats);
    }
}

impl<In, Out> Drop for Worker<'_, In, Out> {
    fn drop(&mut self) {
        if self.in_flight > 0 {
            // Dropped while a processor held a unit: the processor panicked.
            self.local.failed += 1;
            self.local.merged += self.in_flight - 1;
        }
        self.local.busy_ns +=
            self.pacer
                .finish(Instant::now(), self.outbox.blocked_ns, self.inbox.shape());
        self.local.cancelled += self.inbox.discard();
        if std::thread::panicking() || self.token.is_cancelled() {
            self.outbox.discard();
        } else {
            self.outbox.flush(self.token);
        }
        self.sync_stats();
        self.stage.stats.worker_ended();
    }
}

impl<In, Out> fmt::Debug for Worker<'_, In, Out> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Worker")
            .field("stage", &self.stage.id)
            .field("worker", &self.cx.worker())
            .field("buffered_in", &self.inbox.buffered())
            .field("buffered_out", &self.outbox.buffered())
            .finish()
    }
}
