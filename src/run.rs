//! One run: the scope, its threads, the sink loop on the calling thread, the join, and the
//! report. Private; [`Pipeline::run`](crate::Pipeline::run) and [`Job::run`](crate::Job::run)
//! are the way in.
//!
//! # Topology
//!
//! ```text
//! source thread ─edge 0─▶ stage 0 workers ─edge 1─▶ … ─edge n─▶ sink loop (calling thread)
//!                                                      failures ─▶ handler (calling thread)
//! ```
//!
//! # Invariants
//!
//! - **Who owns each sender.** The source thread owns the only sender of edge 0; the
//!   workers of stage `i` own the senders of edge `i + 1` (through their `Worker`s and, for
//!   a dynamic pool or a broadcast, the stage's helper thread). An edge therefore closes
//!   exactly when everything upstream of it is done, and the sink loop ends when the last
//!   edge closes — or at cancellation.
//! - **What wakes a blocked thread.** Every blocking operation selects on the run's cancel
//!   token too (see `transport`). The calling thread selects on the last edge, the failure
//!   queue and the token.
//! - **Where panics are caught.** Every thread body runs under `catch_unwind` (workers and
//!   helpers in `runner`, the source here), and so do the sink and the failure handler on
//!   the calling thread. A caught panic becomes the run's error and cancels the run.
//! - **Joining.** Every thread's `ScopedJoinHandle` is sent to the calling thread, which
//!   joins them all explicitly (so the OS threads are gone, not just finished) before
//!   `run` returns.
//! - **Accounting.** The run keeps a receiver of every edge (a *tap*). Channels therefore
//!   never disconnect under a sender, which is why every send selects on the token. After
//!   the join, the calling thread empties every tap and counts what it finds as cancelled
//!   for the stage (or sink) the items were queued for.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::thread::{Scope, ScopedJoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Select, Sender};
use parking_lot::Mutex;

use crate::context::CancelToken;
use crate::error::{Error, ErrorKind, Site, panic_message};
use crate::pipeline::{JobParts, Pipeline};
use crate::policy::Failure;
use crate::report::{Report, SinkReport, SourceReport, StageId, StageStats, nanos};
use crate::sink::Sink;
use crate::source::{IntoSource, Source};
use crate::transport::{BUDGET_NS, EdgeRx, EdgeTx, Inbox, Outbox, Pacer, Recv, edge};

/// What the threads of one run share. Lives on the calling thread's stack for the run.
pub(crate) struct Shared {
    /// The run's own token, cancelled when the run aborts for any reason.
    pub(crate) token: CancelToken,
    /// The first error; later ones only bump `suppressed`.
    first: Mutex<Option<ErrorKind>>,
    /// Errors after the first.
    suppressed: AtomicU64,
    /// Per-stage identity and counters, indexed by stage.
    pub(crate) stages: Vec<StageShared>,
    /// Routed failures, on their way to the calling thread.
    failures: Sender<Failure>,
    /// Routed failures that could not be queued because the run was cancelled; delivered
    /// after the join.
    overflow: Mutex<Vec<Failure>>,
    /// The largest chunk on any edge.
    pub(crate) max_chunk: usize,
    /// Capacity of the last edge, into the sink.
    sink_capacity: usize,
    /// Items found queued for the sink after a cancelled run.
    sink_leftover: AtomicU64,
    /// What the source thread did; written once when it ends.
    source: Mutex<SourceReport>,
    /// Items read so far, for live progress.
    source_read: AtomicU64,
}

/// One stage as the run sees it.
pub(crate) struct StageShared {
    /// The stage's position and name.
    pub(crate) id: StageId,
    /// The runner's kind.
    pub(crate) kind: &'static str,
    /// Capacity of the stage's input queue, in chunks.
    pub(crate) capacity: usize,
    /// The stage's counters.
    pub(crate) stats: StageStats,
    /// The next thread index to hand out.
    next_index: AtomicUsize,
}

impl StageShared {
    /// A fresh index for a thread of this stage.
    pub(crate) fn next_index(&self) -> usize {
        // Ordering: Relaxed; only uniqueness matters, which atomicity gives.
        self.next_index.fetch_add(1, Ordering::Relaxed)
    }
}

impl Shared {
    /// Records `kind` as the run's error if it is the first, and cancels the run.
    pub(crate) fn fail(&self, kind: ErrorKind) {
        {
            let mut first = self.first.lock();
            if first.is_none() {
                *first = Some(kind);
            } else {
                // Ordering: Relaxed; read after the join.
                self.suppressed.fetch_add(1, Ordering::Relaxed);
            }
        }
        // The error is stored before the cancellation is visible, so whoever observes the
        // cancellation and then looks for the cause finds it.
        self.token.cancel();
    }

    /// Sends a failure to the calling thread's handler. Never loses it: if the run is
    /// cancelled while the queue is full, it is kept for delivery after the join.
    pub(crate) fn route(&self, failure: Failure) {
        if let Err(failure) = crate::transport::send_or_cancel(&self.failures, failure, &self.token)
        {
            self.overflow.lock().push(failure);
        }
    }

    /// The counter for items found queued for stage `index` (or the sink, past the end).
    fn leftover_counter(&self, index: usize) -> &AtomicU64 {
        self.stages
            .get(index)
            .map_or(&self.sink_leftover, |s| &s.stats.cancelled)
    }

    /// The capacity of the queue into stage `index` (or the sink, past the end).
    pub(crate) fn capacity_of(&self, index: usize) -> usize {
        self.stages
            .get(index)
            .map_or(self.sink_capacity, |s| s.capacity)
    }
}

/// A receiver the run keeps on an edge: to count leftovers, and for queue depths.
trait Tap: Send {
    /// Chunks queued now.
    fn queued(&self) -> usize;
    /// Drops everything queued, returning the number of items.
    fn drain(&self) -> u64;
}

impl<T: Send> Tap for Receiver<Vec<T>> {
    fn queued(&self) -> usize {
        self.len()
    }

    fn drain(&self) -> u64 {
        self.try_iter().map(|chunk| chunk.len() as u64).sum()
    }
}

/// A tap and the counter its leftovers go to.
struct Tapped<'scope> {
    tap: Box<dyn Tap + 'scope>,
    counter: &'scope AtomicU64,
    /// The stage whose input queue this is; `None` for the sink's and for channels
    /// private to a stage.
    stage: Option<usize>,
}

/// Starts threads on the run's scope and registers them, and the run's taps, with the
/// calling thread.
pub(crate) struct Spawner<'scope, 'env> {
    /// The run's scope.
    scope: &'scope Scope<'scope, 'env>,
    /// The run's shared state.
    shared: &'scope Shared,
    /// Where join handles go; the calling thread joins every one.
    handles: Sender<ScopedJoinHandle<'scope, ()>>,
    /// Where taps go.
    taps: Sender<Tapped<'scope>>,
}

impl Clone for Spawner<'_, '_> {
    fn clone(&self) -> Self {
        Spawner {
            scope: self.scope,
            shared: self.shared,
            handles: self.handles.clone(),
            taps: self.taps.clone(),
        }
    }
}

impl<'scope> Spawner<'scope, '_> {
    pub(crate) fn shared(&self) -> &'scope Shared {
        self.shared
    }

    /// Starts a named thread. Its body must catch its own panics.
    pub(crate) fn spawn<F>(&self, name: String, f: F) -> std::io::Result<()>
    where
        F: FnOnce() + Send + 'scope,
    {
        let handle = std::thread::Builder::new()
            .name(name)
            .spawn_scoped(self.scope, f)?;
        // Unbounded, and the calling thread holds the receiver until every handle is
        // joined: this send cannot fail or block.
        let _ = self.handles.send(handle);
        Ok(())
    }

    /// A channel private to a stage, tapped: what is left in it after the join counts as
    /// cancelled, into `counter`.
    pub(crate) fn channel<T: Send + 'scope>(
        &self,
        capacity: usize,
        counter: &'scope AtomicU64,
    ) -> (Sender<Vec<T>>, Receiver<Vec<T>>) {
        let (tx, rx) = crossbeam_channel::bounded(capacity);
        let _ = self.taps.send(Tapped {
            tap: Box::new(rx.clone()),
            counter,
            stage: None,
        });
        (tx, rx)
    }

    /// A new edge into stage `index` (or into the sink, past the last stage), tapped: what
    /// is left in it after the join counts as cancelled for that stage.
    pub(crate) fn edge_into<T: Send + 'scope>(&self, index: usize) -> (EdgeTx<T>, EdgeRx<T>) {
        let (tx, rx) = edge(self.shared.capacity_of(index), self.shared.max_chunk);
        let _ = self.taps.send(Tapped {
            tap: Box::new(rx.rx.clone()),
            counter: self.shared.leftover_counter(index),
            stage: (index < self.shared.stages.len()).then_some(index),
        });
        (tx, rx)
    }
}

/// The stages of a pipeline, chained: starts every stage's workers and returns the last
/// edge. Implemented by `pipeline::Start` and `pipeline::Then`.
pub(crate) trait Segment<In, Out>: Send + Sync {
    /// Starts this segment's stages reading `input`; returns the edge they write to.
    fn launch<'scope, 'env>(
        &'scope self,
        spawner: &Spawner<'scope, 'env>,
        input: EdgeRx<In>,
    ) -> EdgeRx<Out>;
}

/// Runs `pipeline` once.
pub(crate) fn execute<In, Out, S, K>(
    pipeline: &Pipeline<'_, In, Out>,
    mut job: JobParts<'_>,
    source: S,
    mut sink: K,
) -> Result<Report, Error>
where
    In: Send,
    Out: Send,
    S: IntoSource<In>,
    K: Sink<Out>,
{
    pipeline.validate(job.on_failure.is_some())?;
    let started = Instant::now();
    let (failures, failures_rx) = crossbeam_channel::bounded(pipeline.default_capacity().max(16));
    let shared = Shared {
        token: CancelToken::new(),
        first: Mutex::new(None),
        suppressed: AtomicU64::new(0),
        stages: pipeline
            .metas()
            .iter()
            .enumerate()
            .map(|(index, meta)| StageShared {
                id: StageId::new(index, meta.name.clone()),
                kind: meta.kind,
                capacity: meta.capacity.unwrap_or(pipeline.default_capacity()),
                stats: StageStats::default(),
                next_index: AtomicUsize::new(0),
            })
            .collect(),
        failures,
        overflow: Mutex::new(Vec::new()),
        max_chunk: pipeline.chunk_limit(),
        sink_capacity: pipeline.default_capacity(),
        sink_leftover: AtomicU64::new(0),
        source: Mutex::new(SourceReport::default()),
        source_read: AtomicU64::new(0),
    };
    if let Some(external) = &job.token {
        external.attach(&shared.token);
    }
    let source = source.into_source();
    let mut sink_report = SinkReport::default();

    std::thread::scope(|scope| {
        let (handles, handles_rx) = crossbeam_channel::unbounded();
        let (taps, taps_rx) = crossbeam_channel::unbounded();
        let spawner = Spawner {
            scope,
            shared: &shared,
            handles,
            taps,
        };
        let shared = &shared;
        let (first_tx, first_rx) = spawner.edge_into(0);
        if shared.token.is_cancelled() {
            // Cancelled before it started: start nothing.
            drop(first_tx);
        } else if let Err(e) =
            spawner.spawn("source".into(), move || pump(source, first_tx, shared))
        {
            shared.fail(ErrorKind::Source {
                error: format!("cannot start the source thread: {e}").into(),
            });
        }
        let last = pipeline.chain().launch(&spawner, first_rx);
        let (done, done_rx) = crossbeam_channel::bounded::<()>(0);
        if let Some(limit) = job.timeout {
            let deadline = started.checked_add(limit);
            let watch = move || {
                if let Recv::TimedOut =
                    crate::transport::recv_or_cancel(&done_rx, &shared.token, deadline)
                {
                    shared.fail(ErrorKind::Deadline { limit });
                }
            };
            if let Err(e) = spawner.spawn("deadline".into(), watch) {
                shared.fail(ErrorKind::Config {
                    stage: None,
                    message: format!("cannot start the deadline thread: {e}"),
                });
            }
        }
        drop(spawner);

        let mut taps: Vec<Tapped<'_>> = Vec::new();
        let mut sink_loop = SinkLoop {
            shared,
            inbox: Inbox::new(last.rx, last.shape),
            pacer: Pacer::new(1),
            report: &mut sink_report,
            failures: &failures_rx,
            on_failure: &mut job.on_failure,
            started,
        };
        let mut reaper = Reaper::new(handles_rx);
        sink_loop.run(
            &mut sink,
            job.progress.as_mut(),
            &taps_rx,
            &mut taps,
            &mut reaper,
        );
        let finished_cleanly = !shared.token.is_cancelled();
        if finished_cleanly {
            sink_loop.finish(&mut sink);
        }
        drop(done);

        reaper.join_all();
        // Count what is left in the queues; deliver the failures still on their way.
        taps.extend(taps_rx.try_iter());
        for tapped in &taps {
            // Ordering: Relaxed; every thread has been joined.
            tapped
                .counter
                .fetch_add(tapped.tap.drain(), Ordering::Relaxed);
        }
        sink_loop.deliver_rest();
    });

    let report = build_report(
        &shared,
        shared.source.lock().clone(),
        sink_report,
        started.elapsed(),
        &[],
    );
    let first = shared.first.lock().take();
    match first {
        Some(kind) => Err(Error::new(kind, Some(report))),
        None if shared.token.is_cancelled() => Err(Error::new(ErrorKind::Cancelled, Some(report))),
        None => Ok(report),
    }
}

/// Assembles a report from the run's counters. `queued` holds queue depths per stage
/// (live snapshots only).
fn build_report(
    shared: &Shared,
    source: SourceReport,
    mut sink: SinkReport,
    elapsed: Duration,
    queued: &[usize],
) -> Report {
    // Ordering: Relaxed; after the join, or a snapshot that may be slightly stale.
    sink.cancelled += shared.sink_leftover.load(Ordering::Relaxed);
    let mut source = source;
    source.read = source.read.max(shared.source_read.load(Ordering::Relaxed));
    Report {
        elapsed,
        source,
        stages: shared
            .stages
            .iter()
            .enumerate()
            .map(|(i, s)| {
                s.stats
                    .snapshot(s.id.clone(), s.kind, queued.get(i).copied().unwrap_or(0))
            })
            .collect(),
        sink,
        suppressed_errors: shared.suppressed.load(Ordering::Relaxed),
    }
}

/// The source thread: pulls items and sends them into edge 0 in adaptive chunks.
fn pump<T, S>(mut source: S, edge: EdgeTx<T>, shared: &Shared)
where
    T: Send,
    S: Source<T>,
{
    let token = &shared.token;
    let shape = std::sync::Arc::clone(&edge.shape);
    let mut out = Outbox::new(edge);
    let mut read = 0u64;
    let started = Instant::now();
    let pulled = catch_unwind(AssertUnwindSafe(|| {
        let mut limit = 1usize;
        let mut chunk_started = Instant::now();
        while !token.is_cancelled() {
            if out.buffered() == 0 {
                chunk_started = Instant::now();
            }
            let item = match source.next(token) {
                None => break,
                Some(Ok(item)) => item,
                Some(Err(error)) => {
                    shared.fail(ErrorKind::Source { error });
                    break;
                }
            };
            read += 1;
            out.buffer(item);
            let len = out.buffered();
            // Send when the chunk is full, when the source says nothing more is ready, or
            // when the chunk has waited longer than the budget (checked at powers of two,
            // to keep clock reads off the per-item path).
            let due = len >= limit.min(shape.advice())
                || !source.is_ready()
                || (len.is_power_of_two()
                    && len >= 2
                    && nanos(chunk_started.elapsed()) > BUDGET_NS);
            if due {
                let per_item = nanos(chunk_started.elapsed()) / len as u64;
                // Ordering: Relaxed; a statistic for progress snapshots.
                shared.source_read.store(read, Ordering::Relaxed);
                limit = shape.fit(limit, per_item);
                out.set_own_limit(limit);
                if !out.flush(token) {
                    break;
                }
            }
        }
    }));
    if let Err(payload) = pulled {
        shared.fail(ErrorKind::Panic {
            site: Site::Source,
            message: panic_message(&*payload),
        });
    }
    if token.is_cancelled() {
        out.discard();
    } else {
        out.flush(token);
    }
    // Items the source read but could not send were headed for the first stage.
    shared
        .leftover_counter(0)
        .fetch_add(out.cancelled, Ordering::Relaxed);
    let blocked = Duration::from_nanos(out.blocked_ns);
    *shared.source.lock() = SourceReport {
        read,
        busy: started.elapsed().saturating_sub(blocked),
        blocked,
    };
}

/// The calling thread's part of a run: feeds the sink and the failure handler.
struct SinkLoop<'r, 'h, T> {
    shared: &'r Shared,
    inbox: Inbox<T>,
    pacer: Pacer,
    report: &'r mut SinkReport,
    failures: &'r Receiver<Failure>,
    on_failure: &'r mut Option<Box<dyn FnMut(Failure) + 'h>>,
    started: Instant,
}

/// Joins the run's threads: those that have finished while the run goes on (a dynamic pool
/// retires workers, and joining thousands of them at the end would delay `run`'s return),
/// and all the others at the end.
struct Reaper<'scope> {
    /// Where the spawners send the handles.
    incoming: Receiver<ScopedJoinHandle<'scope, ()>>,
    /// Handles of threads not joined yet.
    running: Vec<ScopedJoinHandle<'scope, ()>>,
    /// When `reap` last looked.
    last: Instant,
}

impl<'scope> Reaper<'scope> {
    /// How often `reap` looks at most.
    const EVERY: Duration = Duration::from_millis(5);

    fn new(incoming: Receiver<ScopedJoinHandle<'scope, ()>>) -> Self {
        Reaper {
            incoming,
            running: Vec::new(),
            last: Instant::now(),
        }
    }

    /// Joins the threads that have finished, if it has not looked for a while.
    fn reap(&mut self) {
        if self.last.elapsed() < Self::EVERY {
            return;
        }
        self.running.extend(self.incoming.try_iter());
        let mut i = 0;
        while i < self.running.len() {
            if self.running[i].is_finished() {
                // Thread bodies catch their panics: a join error cannot carry one of the
                // user's, and there is nothing more to report.
                let _ = self.running.swap_remove(i).join();
            } else {
                i += 1;
            }
        }
        self.last = Instant::now();
    }

    /// Joins every thread of the run. The handle channel closes once every thread that
    /// could spawn another has ended.
    fn join_all(self) {
        for handle in self.running.into_iter().chain(self.incoming.iter()) {
            let _ = handle.join();
        }
    }
}

/// What woke the calling thread.
enum Woken<T> {
    Items(Vec<T>),
    Failure(Option<Failure>),
    Tick,
    Stop,
}

/// A progress callback and its schedule.
pub(crate) type Progress<'h> = (Duration, Box<dyn FnMut(&Report) + 'h>);

impl<T> SinkLoop<'_, '_, T> {
    fn run<'scope, K: Sink<T>>(
        &mut self,
        sink: &mut K,
        mut progress: Option<&mut Progress<'_>>,
        taps_rx: &Receiver<Tapped<'scope>>,
        taps: &mut Vec<Tapped<'scope>>,
        reaper: &mut Reaper<'scope>,
    ) {
        let token = &self.shared.token;
        let mut next_tick = progress.as_ref().map(|(every, _)| Instant::now() + *every);
        loop {
            if !self.consume_chunk(sink) {
                break;
            }
            self.report.busy +=
                Duration::from_nanos(self.pacer.finish(Instant::now(), 0, self.inbox.shape()));
            while let Ok(failure) = self.failures.try_recv() {
                self.handle_failure(failure);
            }
            if token.is_cancelled() {
                break;
            }
            if next_tick.is_some_and(|at| Instant::now() >= at) {
                if let Some((every, callback)) = progress.as_deref_mut() {
                    taps.extend(taps_rx.try_iter());
                    if !self.tick(callback, taps) {
                        break;
                    }
                    next_tick = Some(Instant::now() + *every);
                }
            }
            match self.inbox.try_take() {
                Recv::Got(n) => {
                    self.pacer.begin(Instant::now(), n, 0);
                    continue;
                }
                Recv::Closed => break,
                Recv::Cancelled => break,
                Recv::TimedOut => {}
            }
            // Nothing ready: wait for items, a failure, cancellation or the next tick.
            let waiting = Instant::now();
            let woken = {
                let rx = self.inbox.receiver();
                let mut sel = Select::new();
                let items = sel.recv(rx);
                let failures = sel.recv(self.failures);
                sel.recv(token.signal());
                let oper = match next_tick {
                    Some(at) => sel.select_deadline(at).ok(),
                    None => Some(sel.select()),
                };
                match oper {
                    None => Woken::Tick,
                    Some(oper) if oper.index() == items => match oper.recv(rx) {
                        Ok(chunk) => Woken::Items(chunk),
                        Err(_) => Woken::Stop,
                    },
                    Some(oper) if oper.index() == failures => {
                        Woken::Failure(oper.recv(self.failures).ok())
                    }
                    Some(oper) => {
                        let _ = oper.recv(token.signal());
                        Woken::Stop
                    }
                }
            };
            self.report.waiting += waiting.elapsed();
            reaper.reap();
            match woken {
                Woken::Tick | Woken::Failure(None) => {}
                Woken::Items(chunk) => {
                    self.pacer.begin(Instant::now(), chunk.len(), 0);
                    self.inbox.load(chunk);
                }
                Woken::Failure(Some(failure)) => self.handle_failure(failure),
                Woken::Stop => break,
            }
        }
        self.report.cancelled += self.inbox.discard();
    }

    /// Gives the current chunk to the sink. False when the run must stop.
    fn consume_chunk<K: Sink<T>>(&mut self, sink: &mut K) -> bool {
        let token = &self.shared.token;
        let mut in_flight = false;
        let report = &mut *self.report;
        let inbox = &mut self.inbox;
        let consumed = catch_unwind(AssertUnwindSafe(|| {
            while let Some(item) = inbox.next_buffered() {
                if token.is_cancelled() {
                    report.cancelled += 1;
                    return false;
                }
                in_flight = true;
                let result = sink.consume(item);
                in_flight = false;
                match result {
                    Ok(()) => report.consumed += 1,
                    Err(error) => {
                        report.failed += 1;
                        self.shared.fail(ErrorKind::Sink { error });
                        return false;
                    }
                }
            }
            true
        }));
        match consumed {
            Ok(go_on) => go_on,
            Err(payload) => {
                if in_flight {
                    self.report.failed += 1;
                }
                self.shared.fail(ErrorKind::Panic {
                    site: Site::Sink,
                    message: panic_message(&*payload),
                });
                false
            }
        }
    }

    /// Calls the sink's `finish` after a run that was not aborted.
    fn finish<K: Sink<T>>(&mut self, sink: &mut K) {
        match catch_unwind(AssertUnwindSafe(|| sink.finish())) {
            Ok(Ok(())) => {}
            Ok(Err(error)) => self.shared.fail(ErrorKind::Sink { error }),
            Err(payload) => self.shared.fail(ErrorKind::Panic {
                site: Site::Sink,
                message: panic_message(&*payload),
            }),
        }
    }

    /// Calls the failure handler; a panic in it aborts the run and retires the handler.
    fn handle_failure(&mut self, failure: Failure) {
        let Some(handler) = self.on_failure.as_mut() else {
            return;
        };
        if let Err(payload) = catch_unwind(AssertUnwindSafe(|| handler(failure))) {
            *self.on_failure = None;
            self.shared.fail(ErrorKind::Panic {
                site: Site::FailureHandler,
                message: panic_message(&*payload),
            });
        }
    }

    /// Hands every failure still queued or set aside to the handler. After the join.
    fn deliver_rest(&mut self) {
        while let Ok(failure) = self.failures.try_recv() {
            self.handle_failure(failure);
        }
        let overflow = std::mem::take(&mut *self.shared.overflow.lock());
        for failure in overflow {
            self.handle_failure(failure);
        }
    }

    /// Calls the progress callback with a snapshot. False when it panicked.
    fn tick(&mut self, callback: &mut Box<dyn FnMut(&Report) + '_>, taps: &[Tapped<'_>]) -> bool {
        let mut queued = vec![0; self.shared.stages.len()];
        for t in taps {
            if let Some(i) = t.stage {
                queued[i] += t.tap.queued();
            }
        }
        let source = self.shared.source.lock().clone();
        let snapshot = build_report(
            self.shared,
            source,
            self.report.clone(),
            self.started.elapsed(),
            &queued,
        );
        match catch_unwind(AssertUnwindSafe(|| callback(&snapshot))) {
            Ok(()) => true,
            Err(payload) => {
                self.shared.fail(ErrorKind::Panic {
                    site: Site::Progress,
                    message: panic_message(&*payload),
                });
                false
            }
        }
    }
}
