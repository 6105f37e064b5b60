//! One run: its scope and threads, the source thread, the sink loop on the calling thread,
//! the per-worker policy loop, the counters, the join and the report. Private;
//! [`Pipeline::run`](crate::Pipeline::run) and [`Job::run`](crate::Job::run) are the way in,
//! and [`StageHandle`] / [`Worker`] are what runners see of it.
//!
//! # Files
//!
//! - `state`: what a run's threads share (token, first error, stages);
//! - `counters`: the one list of a stage's counters, and the custody guard of helpers;
//! - `threads`: starting threads on the scope, taps, joining;
//! - `stage`: the runner contract (`StageRunner`, `StageHandle`) and its enforcement;
//! - `worker`: a worker and the per-item policy loop;
//! - `lanes`: stages with lanes of their own (broadcast, ordered pools);
//! - `source`, `sink`: the source thread and the calling thread's loop (a sink, or the
//!   consumer's iterator; routed failures reach their handlers there, as typed calls made
//!   by the failing worker);
//! - `record`: the timeline's per-thread recorders (`Job::record_timeline`);
//! - `trace`: the `tracing` hooks (empty without the feature).
//!
//! # Topology
//!
//! ```text
//! source thread ─edge 0─▶ stage 0 threads ─edge 1─▶ … ─edge n─▶ sink loop (calling thread)
//!                                                    failures ─▶ handler (calling thread)
//! ```
//!
//! # Invariants
//!
//! - **Who owns each sender.** The source thread owns the only sender of edge 0. Every
//!   thread of stage `i` — workers and helpers alike (a broadcast's distributor) — owns a
//!   sender of edge `i + 1` through the `StageHandle` or `Outbox` it holds (an ordered
//!   pool's workers share theirs, in the pool's collector), and so do the `StageHandle`
//!   given to the runner's `start` until it returns and a watch job that captured a
//!   handle (a dynamic pool's) until it ends. An edge therefore closes exactly when everything
//!   upstream of it is done, and the sink loop ends when the last edge closes — or at
//!   cancellation. Lanes private to a stage follow the same rule inside the stage.
//! - **What wakes a blocked thread.** Every blocking operation also waits on a cancel token
//!   (see `transport`: a thread parked on an edge's bells is on its token's sleepers too):
//!   the source's, or its stage's (`token` for sends, `intake` for reads), each a child of
//!   the run's token, so cancelling the run wakes everything. The
//!   children are cancelled downstream first and the source last: a stage whose input ends
//!   because the run was cancelled upstream of it finds its own token already cancelled,
//!   and does not take the end for the input's (a partial batch is not processed after
//!   cancellation). The calling thread waits on the last edge, the failure queue and the
//!   token. No thread starts once the run is cancelled.
//! - **Where panics are caught.** Every thread body runs under `catch_unwind` (`stage` and
//!   `source`), and so do the runner's `start`, the sink, the failure handler and the
//!   progress callback on the calling thread, and the `Drop` of every user value the engine
//!   drops (the source, the sink, the handlers, items: `transport::dispose`). A caught
//!   panic becomes the run's error and cancels the run.
//! - **Failures at their position.** When every stage from a failing one to the sink keeps
//!   order, the failure is recorded with its position (`RunState::fail_at`) instead of
//!   cancelling the run: the failing worker (or the source) hands on what it produced
//!   before, the stages upstream are cancelled through their tokens, an ordered pool
//!   forwards nothing after the failing turn, and the rest drains to the sink. An error
//!   raised further down replaces a waiting one (it concerns an earlier item), and so
//!   does one at an earlier item of the same ordered pool (`state::Place`), until the
//!   consumer takes no more outputs (`RunState::outputs_ended`): the failure has then taken
//!   effect, and a later error (the sink's `Drop`, a consumer's error after its last
//!   output) is suppressed.
//! - **Stealing.** A worker of a pool keeps the rest of its chunk in a stash its siblings
//!   steal from when idle (`transport::inbox`); items move between workers, never out of
//!   the stage, and a worker counts an item when it is handed out to it. A consumer does
//!   not leave a closed input while a sibling still holds items. In an ordered pool a
//!   steal is a *loan* (`lanes`): the thief's outputs go to a reply lane (tapped like any
//!   lane) whose receiver it mails to the owner, and the owner forwards the replies in
//!   order inside its own turn once its part is done, so the collector sees one turn per
//!   ticket as before. A thief steals only when idle, with every turn of its own
//!   already sent: an owner waits only on thieves, a thief only on its owner's draining,
//!   and an owner drains as soon as its own part is out, so the waits form chains, not
//!   cycles, and cancelling the stage's intake ends every one of them.
//! - **The runner contract.** A stage whose readers are all gone while its input goes on
//!   fails the run instead of hanging it (see `stage`).
//! - **Joining.** Every thread's `ScopedJoinHandle` is sent to the calling thread, which
//!   joins them all explicitly (so the OS threads are gone, not just finished) before
//!   `run` returns.
//! - **Lending threads.** A worker waiting for input whose runner allows it (a dynamic
//!   pool's, unless it is the pool's last) sits on the run's bench (`threads`); a thread
//!   the run starts meanwhile is given to a sitting worker instead of a new OS thread, and
//!   in a run whose workers lend, a thread whose body has returned waits a few
//!   milliseconds as a spare. The chosen worker's wait returns `Next::Lent`, its runner
//!   returns, and the thread runs the lent body only after the worker's body — its stage
//!   handle, its senders — is gone: the sender rule above holds body by body. Spares wake
//!   on cancellation and when the sink loop is done, before the join.
//! - **Observing costs nothing when off.** The timeline's hooks take the times the engine
//!   measures anyway for the report — a worker's `refill`, the sink loop's chunk and wait,
//!   the source's flush — behind one branch per chunk on an `Option` recorder (the
//!   engine's helpers are generic over `record::Clock` and run with `Off`: no branch).
//!   Each thread records into its own recorder and hands its track to the run's `Observe`
//!   when it ends, so no lock is taken per chunk; the recorded durations are exactly the
//!   report's, and a track never holds more than its cap. The `tracing` hooks live in
//!   `trace`, compiled to nothing without the feature; no hook blocks or fails the run.
//! - **Accounting.** Every item read, cloned or emitted is counted once, by whoever holds
//!   it last: a worker (`worker`: processed, failed, or — when it ends — cancelled or
//!   dropped), a helper (`counters::Custody`), an `Outbox` (what it could not send), the
//!   sink loop, or, after the join, the run's *tap* on the edge it was queued in: the run
//!   keeps a receiver of every edge and lane, empties them after the join and counts what
//!   it finds as cancelled for the stage (or sink) the items were queued for. Channels
//!   therefore never disconnect under a sender, which is why every send also waits on the
//!   token.

mod counters;
mod lanes;
mod record;
mod sink;
mod source;
mod stage;
mod state;
mod threads;
mod trace;
mod watch;
mod worker;

pub use stage::{StageHandle, StageRunner};
pub use watch::Watch;

/// Clears what a thread body may leave in thread-locals for the panic report of a later
/// one: a thread lent to another stage (`threads`) starts that body afresh.
pub(crate) fn forget_thread_state() {
    worker::forget_thread_state();
    state::forget_thread_state();
}
pub use worker::{Next, Worker};

pub(crate) use sink::{Consumer, Progress, ToFn, ToSink};
pub(crate) use stage::{Launcher, Segment};
pub(crate) use state::{RunConfig, StageState};

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Instant;

use crate::context::CancelToken;
use crate::error::{Error, ErrorKind, Site, panic_message};
use crate::id::thread_name;
use crate::report::{Report, SinkReport};
use crate::source::IntoSource;
use crate::transport::{Inbox, Pacer, SharedInput, wait_until};

use record::Observe;
use sink::{Deliveries, Feed, SinkLoop};
use state::RunState;
use threads::{Reaper, SpawnRefused, Spawner, Taps};

/// The options of one run.
#[derive(Default)]
pub(crate) struct JobOptions<'h> {
    /// An external token the run is attached to.
    pub(crate) token: Option<CancelToken>,
    /// The run's time limit.
    pub(crate) timeout: Option<std::time::Duration>,
    /// Live progress reports.
    pub(crate) progress: Option<Progress<'h>>,
    /// Whether to record the run's timeline.
    pub(crate) record_timeline: bool,
}

/// Runs the stages of `chain` once, from `source` to `consumer`.
pub(crate) fn execute<In, Out, S, C>(
    chain: &(dyn Segment<In, Out> + '_),
    config: RunConfig,
    job: JobOptions<'_>,
    source: S,
    consumer: C,
) -> Result<(C::Output, Report), Error>
where
    In: Send,
    Out: Send,
    S: IntoSource<In>,
    C: Consumer<Out>,
{
    let started = Instant::now();
    let run = RunState::new(config, started);
    let observe = Observe::new(started, run.stages.len(), job.record_timeline);
    let _run_span = observe.trace.enter();
    if run.token.is_cancelled() {
        // Attached to a token cancelled before the run started: nothing starts, nothing
        // is read.
        let sampler = observe.sampler(run.stages.len() + 1);
        let report = observe.report(&run, SinkReport::default(), sampler);
        let error = Error::new(ErrorKind::Cancelled, Some(report));
        observe.trace.finished(Err(&error));
        return Err(error);
    }
    let JobOptions { mut progress, .. } = job;
    // The source travels to its thread through this slot: if the thread is never started
    // (the run was cancelled first), it is still here to be dropped under `catch_unwind`.
    let source = Mutex::new(Some(source.into_source()));
    let mut consumer = Some(consumer);
    let mut output = None;
    let mut sink_report = SinkReport::default();
    let mut sampler = None;

    std::thread::scope(|scope| {
        let run = &run;
        let observe = &observe;
        let (deliveries, delivered) = Deliveries::new(run.capacity_of(run.stages.len()).max(16));
        let (spawner, handles, taps) = Spawner::new(scope, run, Arc::clone(&deliveries), observe);
        let mut reaper = Reaper::new(handles);
        let mut taps = Taps::new(taps);
        // The deadline thread starts first: if it cannot, nothing else has started.
        let done = CancelToken::new();
        if !start_deadline(&spawner, run, started, &done) {
            return;
        }
        let (first_tx, first_rx) = spawner.edge_into(0);
        let slot = &source;
        let span = observe.trace.source_thread_span();
        let pumping = spawner.spawn(thread_name("source", 0), move || {
            let _span = span.enter_here();
            if let Some(source) = slot.lock().take() {
                source::pump(source, first_tx, run, observe);
            }
        });
        if let Err(SpawnRefused::Os(e)) = pumping {
            run.fail(ErrorKind::Source {
                error: format!("cannot start the source thread: {e}").into(),
            });
        }
        let bench = Arc::clone(spawner.bench());
        let last = chain.launch(&Launcher { spawner }, first_rx);

        let shape = Arc::clone(last.shape());
        let mut lp = SinkLoop {
            run,
            // Where its edge's advice starts (see `pace::Shape`), before `inbox` takes it.
            pacer: Pacer::new(shape.advice()),
            inbox: Inbox::new(SharedInput::lone(last), shape, 0),
            report: SinkReport::default(),
            delivered,
            deliveries,
            handler_panicked: false,
            started,
            // Once everything reached the consumer, the time limit no longer applies.
            done: done.clone(),
            ended: false,
            timeline: observe.sink_loop(run.stages.len()),
        };
        if let Some(consumer) = consumer.as_mut() {
            let next_tick = progress
                .as_ref()
                .and_then(|(every, _)| Instant::now().checked_add(*every));
            let mut feed = Feed {
                lp: &mut lp,
                progress: progress.as_mut(),
                next_tick,
                taps: &mut taps,
                reaper: &mut reaper,
            };
            output = consumer.consume(&mut feed);
        }
        done.cancel();
        // Every stage is done, or the run is cancelled: no thread waits as a spare now.
        bench.close();
        drop(bench);

        reaper.join_all();
        // Count what is left in the queues; deliver the failures still on their way.
        for tapped in taps.all() {
            let (n, panic) = tapped.tap.drain();
            run.count_leftover(tapped.index, n);
            lp.drop_panicked(panic);
        }
        lp.deliver_rest();
        (sink_report, sampler) = lp.into_parts(observe);
    });

    // User values the run owned: their `Drop` is user code, caught like the rest.
    drop_caught(&run, Site::Sink, consumer);
    drop_caught(&run, Site::Progress, progress);
    drop_caught(&run, Site::Source, source.into_inner());
    // What the consumer gave back from a run that failed after all is dropped here.
    if run.failed() || (run.token.is_cancelled() && !run.stopped()) {
        drop_caught(&run, Site::Sink, output.take());
    }
    let report = observe.report(&run, sink_report, sampler);
    let result = match (run.take_error(), output) {
        (Some(kind @ ErrorKind::Config { .. }), _) => Err(Error::new(kind, None)),
        (Some(kind), _) => Err(Error::new(kind, Some(report))),
        (None, Some(output)) => Ok((output, report)),
        // Cancelled; or a consumer that failed without saying why (not reached).
        (None, None) => Err(Error::new(ErrorKind::Cancelled, Some(report))),
    };
    observe
        .trace
        .finished(result.as_ref().map(|(_, report)| report));
    result
}

/// Starts the thread that fails the run at its deadline, if it has one; it ends early once
/// `done` is cancelled. False when nothing else may start: the OS refused the thread (the
/// run's error says so), or the run was cancelled already.
fn start_deadline<'scope>(
    spawner: &Spawner<'scope, '_>,
    run: &'scope RunState,
    started: Instant,
    done: &CancelToken,
) -> bool {
    let Some(deadline) = run.deadline else {
        return true;
    };
    let limit = deadline - started;
    let done = done.clone();
    let watch = move || {
        if wait_until(deadline, &run.token, &done) {
            run.fail(ErrorKind::Deadline { limit });
        }
    };
    match spawner.spawn("deadline".into(), watch) {
        Ok(()) => true,
        Err(SpawnRefused::Os(e)) => {
            run.fail(ErrorKind::Config {
                stage: None,
                message: format!("cannot start the deadline thread: {e}"),
            });
            false
        }
        // Cancelled already: nothing starts, and the run ends as cancelled.
        Err(SpawnRefused::Cancelled) => false,
    }
}

/// Drops a user value, catching a panic in its `Drop` as the run's error at `site`.
fn drop_caught<T>(run: &RunState, site: Site, value: T) {
    if let Err(payload) = catch_unwind(AssertUnwindSafe(move || drop(value))) {
        run.fail(ErrorKind::Panic {
            site,
            message: panic_message(&*payload),
        });
    }
}
