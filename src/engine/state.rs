//! What the threads of one run share: the run's token, its first error, and each stage's
//! identity and counters.
//!
//! # Which error is first
//!
//! The first error is the one that *happened* first, not the one reported first. The two
//! differ for panics: between a panic and the `catch_unwind` that reports it, the panic hook
//! runs (with `RUST_BACKTRACE=1` the default hook captures a backtrace, 2–6 ms), and another
//! thread's error, returned meanwhile, would be reported first.
//!
//! The engine cannot see when a panic began (that would take a process-wide panic hook), but
//! it knows when the user call it came from began, or a moment before: every call starts
//! only after its thread saw the run not cancelled, and the thread notes the start of the
//! chunk the call belongs to (a per-chunk instant it takes anyway, so nothing is added per
//! item). A panic reported with such an instant ([`RunState::fail_in_call`], or
//! [`RunState::panicked_in_call`] then [`RunState::fail`] on the same thread) takes the place
//! of the first error when
//!
//! - that error is not itself a panic from a call (two panics go through the same hook:
//!   their reports keep their order), and
//! - it was recorded after the panicking call had begun: the call was in progress, so the
//!   panic may have come first — and when the hook is what delays a report, it did.
//!
//! A panic from a call that began after the other error was recorded never takes its
//! place. What this rule cannot tell apart: a long call that began before the other error
//! and panicked after it (ignoring the cancellation) is also taken as first.
//!
//! Independently, an error waiting to take effect at its position (`fail_at`) gives way to
//! any error raised further down the pipeline, which concerns an earlier item, and to one
//! raised at an earlier item of the same ordered pool (see [`Place`]) — until the
//! consumer takes no more outputs ([`RunState::outputs_ended`]): then it has taken effect,
//! and what comes after (the sink's `Drop`, an error the consumer of `run_with` returns
//! after reading every output) is suppressed.

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::counters::{Counter, StageStats};
use crate::context::{CancelToken, Cancelled};
use crate::error::{ErrorKind, Site};
use crate::id::StageId;
use crate::report::{Report, SinkReport, SourceReport};
use crate::transport::Tap;

/// The state of one run. Lives on the calling thread's stack for the run.
pub(crate) struct RunState {
    /// The run's own token, cancelled when the run aborts for any reason.
    pub(crate) token: CancelToken,
    /// The caller's token, if the run is attached to one.
    external: Option<CancelToken>,
    /// When the run must be over, if it has a time limit.
    pub(crate) deadline: Option<Instant>,
    /// The first error (see the module's documentation); later ones only bump
    /// `suppressed`.
    first: Mutex<Option<First>>,
    /// The source's token: cancelled with the run, or when a failure downstream that takes
    /// effect at its position ends the input.
    pub(crate) source_token: CancelToken,
    /// Whether a source error takes effect at its position (every stage keeps order).
    pub(crate) source_deferred: bool,
    /// Errors after the first.
    suppressed: AtomicU64,
    /// Set once the consumer takes no more outputs: from then on no error waits at its
    /// position. Written and read under `first`'s lock.
    consumer_done: AtomicBool,
    /// Set when the sink stopped the run early.
    stopped: AtomicBool,
    /// Per-stage identity and counters, indexed by stage.
    pub(crate) stages: Vec<StageState>,
    /// The largest chunk on any edge.
    pub(crate) max_chunk: usize,
    /// The stack size of the run's threads, if set.
    pub(crate) stack_size: Option<usize>,
    /// Capacity of the last edge, into the sink.
    sink_capacity: usize,
    /// Where each edge (into stage `i`, then into the sink) remembers its chunk size for
    /// the definition's next run.
    chunks: Vec<Arc<AtomicUsize>>,
    /// Items found queued for the sink after a cancelled run.
    sink_leftover: AtomicU64,
    /// What the source thread did; written once when it ends.
    pub(crate) source: Mutex<SourceReport>,
    /// Items read so far, for live progress.
    pub(crate) source_read: AtomicU64,
}

/// The first error of a run, and what decides whether a later report replaces it.
struct First {
    /// The error.
    kind: ErrorKind,
    /// When it was recorded.
    at: Instant,
    /// Whether it is a panic from a user call (see the module's documentation).
    in_call: bool,
    /// Its position and place there, while it waits to take effect (see `fail_at`).
    waiting: Option<(usize, Place)>,
}

thread_local! {
    /// The start of the chunk during whose user call this thread just panicked, noted by the
    /// code that saw the call unwind and taken by the next report of a panic on the thread.
    static PANICKED_IN_CALL: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Forgets a panicked call noted on this thread.
pub(super) fn forget_thread_state() {
    PANICKED_IN_CALL.with(Cell::take);
}

/// One stage as the run sees it.
pub(crate) struct StageState {
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
    /// The stage's token: cancelled with the run, or when a failure further down that
    /// takes effect at its position ends this stage's work. Outputs are sent with it.
    pub(crate) token: CancelToken,
    /// The token of the stage's readers (child of `token`): also cancelled when the stage
    /// itself fails at a position, so that it reads nothing more while what it produced
    /// before the failure still flows on.
    pub(crate) intake: CancelToken,
    /// Whether this stage and every stage after it keep input order, so that a failure here
    /// takes effect at its item's position.
    pub(crate) deferred: bool,
    /// For an ordered pool: the last turn to forward (its ticket, see `lanes`), once a
    /// worker failed at a position; the earliest, when several did.
    last_turn: Mutex<Option<u64>>,
    /// Set when the stage failed at a position: it stops reading its input on purpose.
    pub(crate) halted: AtomicBool,
    /// The stage's threads started (or being started) and not ended yet: the stage's watch
    /// jobs end when it is back to zero (see `watch`).
    pub(crate) threads: AtomicUsize,
    /// Set once a thread of the stage has been counted in `threads`.
    pub(crate) had_threads: AtomicBool,
}

impl StageState {
    pub(crate) fn new(id: StageId, kind: &'static str, capacity: usize, deferred: bool) -> Self {
        let token = CancelToken::new();
        let intake = CancelToken::new();
        token.attach(&intake);
        StageState {
            id,
            kind,
            capacity,
            stats: StageStats::default(),
            next_index: AtomicUsize::new(0),
            token,
            intake,
            deferred,
            last_turn: Mutex::new(None),
            halted: AtomicBool::new(false),
            threads: AtomicUsize::new(0),
            had_threads: AtomicBool::new(false),
        }
    }

    /// An ordered pool failed in the turn whose ticket is `key`: the pool forwards
    /// nothing after it, unless it stops after an earlier one.
    pub(crate) fn fail_in_turn(&self, key: u64) {
        let mut last = self.last_turn.lock();
        *last = Some(last.map_or(key, |k| k.min(key)));
    }

    /// Whether the turn whose ticket is `key` is the last one to forward.
    pub(crate) fn is_last_turn(&self, key: u64) -> bool {
        *self.last_turn.lock() == Some(key)
    }

    /// Whether the stage had threads and has none left (see `watch`).
    pub(crate) fn threads_ended(&self) -> bool {
        // Ordering: SeqCst; a thread is counted before the flag is set, so a reader that
        // sees the flag and then a zero count has seen every thread counted so far end.
        self.had_threads.load(Ordering::SeqCst) && self.threads.load(Ordering::SeqCst) == 0
    }

    /// A fresh index for a thread of this stage.
    pub(crate) fn next_index(&self) -> usize {
        // Ordering: Relaxed; only uniqueness matters, which atomicity gives.
        self.next_index.fetch_add(1, Ordering::Relaxed)
    }
}

/// Where in a stage an item is: an ordered pool's turn (its ticket: tickets follow input
/// order) and the item's place among the turn's items; (0, 0) outside ordered pools, whose
/// failures stop the stage.
pub(crate) type Place = (u64, u64);

/// How a run is configured, as the engine needs it.
pub(crate) struct RunConfig {
    pub(crate) stages: Vec<StageState>,
    pub(crate) max_chunk: usize,
    pub(crate) stack_size: Option<usize>,
    pub(crate) default_capacity: usize,
    /// One per edge: into each stage, then into the sink.
    pub(crate) chunks: Vec<Arc<AtomicUsize>>,
    pub(crate) external: Option<CancelToken>,
    pub(crate) timeout: Option<Duration>,
}

impl RunState {
    /// A run about to start.
    pub(crate) fn new(config: RunConfig, started: Instant) -> Self {
        let source_deferred = config.stages.first().is_none_or(|s| s.deferred);
        let run = RunState {
            token: CancelToken::new(),
            source_token: CancelToken::new(),
            source_deferred,
            external: config.external,
            deadline: config.timeout.and_then(|t| started.checked_add(t)),
            first: Mutex::new(None),
            suppressed: AtomicU64::new(0),
            consumer_done: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            stages: config.stages,
            max_chunk: config.max_chunk,
            stack_size: config.stack_size,
            sink_capacity: config.default_capacity,
            chunks: config.chunks,
            sink_leftover: AtomicU64::new(0),
            source: Mutex::new(SourceReport::default()),
            source_read: AtomicU64::new(0),
        };
        // Cancelled in this order: downstream first, the source last (see "What wakes a
        // blocked thread" in the engine's docs).
        for stage in run.stages.iter().rev() {
            run.token.attach(&stage.token);
        }
        run.token.attach(&run.source_token);
        if let Some(external) = &run.external {
            external.attach(&run.token);
        }
        run
    }

    /// Records `kind` as the run's error if it is the first, and cancels the run.
    ///
    /// A panic that this thread noted with [`panicked_in_call`](Self::panicked_in_call) is
    /// recorded as a panic from a call that began then.
    pub(crate) fn fail(&self, kind: ErrorKind) {
        let position = self.position(&kind);
        let call = Self::noted_call(&kind);
        self.record(kind, position, None, call);
        // The error is stored before the cancellation is visible, so whoever observes the
        // cancellation and then looks for the cause finds it.
        self.token.cancel();
    }

    /// Records the panic `kind`, raised by a user call that began at `started` or later, as
    /// the run's error if it happened first (see the module's documentation), and cancels
    /// the run.
    pub(crate) fn fail_in_call(&self, kind: ErrorKind, started: Instant) {
        let position = self.position(&kind);
        self.record(kind, position, None, Some(started));
        self.token.cancel();
    }

    /// Notes that user code on this thread panicked inside a call that began at `started`
    /// or later, for the report of the panic that follows on this thread: for code that
    /// sees the call unwind (a worker dropped while its processor held an item) but does
    /// not report the panic itself.
    pub(crate) fn panicked_in_call(started: Instant) {
        PANICKED_IN_CALL.with(|c| c.set(Some(started)));
    }

    /// The call a panic report on this thread came from, if one was noted.
    fn noted_call(kind: &ErrorKind) -> Option<Instant> {
        let noted = PANICKED_IN_CALL.with(Cell::take);
        noted.filter(|_| matches!(kind, ErrorKind::Panic { .. }))
    }

    /// Records `kind`, raised at `position` (0: the source, `i + 1`: stage `i`) at
    /// `place` within it, as an error that takes effect at its item's position:
    /// everything upstream stops, the stage at `position` reads nothing more, and what it
    /// produced before the failure flows on to the sink. Used when every stage from
    /// `position` on keeps order.
    pub(crate) fn fail_at(&self, kind: ErrorKind, position: usize, place: Place) {
        let call = Self::noted_call(&kind);
        self.record(kind, Some(position), Some((position, place)), call);
        // The failing part stops itself, after handing on what came before: the source by
        // returning, a worker by flushing and returning (an ordered pool stops its intake
        // once it has forwarded the failing turn). Everything upstream stops now.
        if position > 0 {
            self.source_token.cancel();
        }
        for stage in self.stages.iter().take(position) {
            if stage.id.index() + 1 < position {
                stage.token.cancel();
            } else {
                // Ordering: Relaxed; read by the lane check, which also sees the error.
                stage.halted.store(true, Ordering::Relaxed);
            }
        }
    }

    /// Where in the pipeline `kind` was raised, for the errors that have a position.
    fn position(&self, kind: &ErrorKind) -> Option<usize> {
        match kind {
            ErrorKind::Source { .. }
            | ErrorKind::Panic {
                site: Site::Source, ..
            } => Some(0),
            ErrorKind::Stage { stage, .. }
            | ErrorKind::Panic {
                site: Site::Stage { stage, .. },
                ..
            } => Some(stage.index() + 1),
            ErrorKind::Sink { .. }
            | ErrorKind::Panic {
                site: Site::Sink, ..
            } => Some(self.stages.len() + 1),
            _ => None,
        }
    }

    /// Keeps `kind` as the first error unless one is already kept, or it replaces the kept
    /// one: a kept error waiting at its position gives way to one raised further down
    /// (`position`) or waiting at an earlier place in the same stage, and a panic from a
    /// call in progress when the kept error was recorded happened first (`call_started`,
    /// see the module's documentation). `pending`: the new one waits at its position and
    /// place.
    fn record(
        &self,
        kind: ErrorKind,
        position: Option<usize>,
        pending: Option<(usize, Place)>,
        call_started: Option<Instant>,
    ) {
        let kind = self.blame_external(kind);
        let mut first = self.first.lock();
        // Ordering: Relaxed; under the lock, see `consumer_done`.
        let pending = pending.filter(|_| !self.consumer_done.load(Ordering::Relaxed));
        let now = Instant::now();
        let replace = match &*first {
            None => true,
            Some(f) => {
                let further_down = f.waiting.is_some_and(|(w, place)| {
                    position.is_some_and(|p| p > w)
                        || pending.is_some_and(|(p, earlier)| p == w && earlier < place)
                });
                let happened_first = call_started.is_some_and(|s| !f.in_call && s < f.at);
                further_down || happened_first
            }
        };
        if first.is_some() {
            self.suppress();
        }
        if replace {
            *first = Some(First {
                kind,
                at: now,
                in_call: call_started.is_some(),
                waiting: pending,
            });
        }
    }

    /// The consumer takes no more outputs (they have ended, or it stopped): an error
    /// waiting at its position has taken effect, and no later error replaces it. An error
    /// recorded from now on does not wait at its position either, even one that replaces
    /// the first as a panic from a call in progress (see the module's documentation).
    pub(crate) fn outputs_ended(&self) {
        let mut first = self.first.lock();
        // Ordering: Relaxed; under the lock, see `consumer_done`.
        self.consumer_done.store(true, Ordering::Relaxed);
        if let Some(first) = first.as_mut() {
            first.waiting = None;
        }
    }

    /// Whether the run has an error (returned or waiting to take effect).
    pub(crate) fn failed(&self) -> bool {
        self.first.lock().is_some()
    }

    /// Ends the run early without an error (the sink said [`Stop`](crate::Stop)), unless
    /// it has already failed.
    pub(crate) fn stop(&self) {
        if self.first.lock().is_none() {
            // Ordering: Relaxed; read on the calling thread, which set it, or after the join.
            self.stopped.store(true, Ordering::Relaxed);
        }
        self.token.cancel();
    }

    /// Whether the sink stopped the run early.
    pub(crate) fn stopped(&self) -> bool {
        // Ordering: Relaxed, see `stop`.
        self.stopped.load(Ordering::Relaxed)
    }

    /// A processor that waits on the caller's token sees its cancellation before the run
    /// does, and may return the [`Cancelled`] error first: that is the caller's
    /// cancellation, not a stage failure.
    fn blame_external(&self, kind: ErrorKind) -> ErrorKind {
        let external_cancelled = self
            .external
            .as_ref()
            .is_some_and(CancelToken::is_cancelled);
        match kind {
            ErrorKind::Stage { error, .. } if external_cancelled && error.is::<Cancelled>() => {
                ErrorKind::Cancelled
            }
            kind => kind,
        }
    }

    /// Counts an error that happened after the run was cancelled (it is not returned).
    pub(crate) fn suppress(&self) {
        // Ordering: Relaxed; read after the join.
        self.suppressed.fetch_add(1, Ordering::Relaxed);
    }

    /// The first error, once every thread has been joined.
    pub(crate) fn take_error(&self) -> Option<ErrorKind> {
        self.first.lock().take().map(|f| f.kind)
    }

    /// Counts `n` items found queued for stage `index` (or the sink, past the end) after
    /// the run, or dropped on their way there, as cancelled.
    pub(crate) fn count_leftover(&self, index: usize, n: u64) {
        match self.stages.get(index) {
            Some(s) => s.stats.add(Counter::Cancelled, n),
            // Ordering: Relaxed; read after the join.
            None => {
                self.sink_leftover.fetch_add(n, Ordering::Relaxed);
            }
        }
    }

    /// Where the edge into stage `index` (or into the sink) remembers its chunk size.
    pub(crate) fn chunks_of(&self, index: usize) -> Option<&Arc<AtomicUsize>> {
        self.chunks.get(index)
    }

    /// The capacity of the queue into stage `index` (or the sink, past the end).
    pub(crate) fn capacity_of(&self, index: usize) -> usize {
        self.stages
            .get(index)
            .map_or(self.sink_capacity, |s| s.capacity)
    }

    /// Assembles a report from the run's counters. `taps` give live queue depths (for
    /// progress snapshots; empty after the join).
    pub(crate) fn report(
        &self,
        mut sink: SinkReport,
        elapsed: Duration,
        taps: &[Tapped<'_>],
    ) -> Report {
        let mut queued = vec![0; self.stages.len()];
        for t in taps {
            if let Some(q) = queued.get_mut(t.index) {
                *q += t.tap.queued();
            }
        }
        // Ordering: Relaxed; after the join, or a snapshot that may be slightly stale.
        sink.cancelled += self.sink_leftover.load(Ordering::Relaxed);
        let mut source = self.source.lock().clone();
        source.read = source.read.max(self.source_read.load(Ordering::Relaxed));
        Report {
            elapsed,
            source,
            stages: self
                .stages
                .iter()
                .zip(queued)
                .map(|(s, q)| s.stats.snapshot(s.id.clone(), s.kind, q))
                .collect(),
            sink,
            suppressed_errors: self.suppressed.load(Ordering::Relaxed),
            stopped_early: self.stopped(),
            timeline: None,
        }
    }
}

/// A receiver the run keeps on an edge, and whose leftovers it counts.
pub(crate) struct Tapped<'scope> {
    /// The receiver.
    pub(crate) tap: Box<dyn Tap + 'scope>,
    /// The stage the items are queued for (the sink, past the last stage). For a lane
    /// private to a stage, that stage.
    pub(crate) index: usize,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Site;

    fn run() -> RunState {
        let config = RunConfig {
            stages: Vec::new(),
            max_chunk: 1,
            stack_size: None,
            default_capacity: 1,
            chunks: Vec::new(),
            external: None,
            timeout: None,
        };
        RunState::new(config, Instant::now())
    }

    fn panic(message: &str) -> ErrorKind {
        ErrorKind::Panic {
            site: Site::Source,
            message: message.into(),
        }
    }

    fn error() -> ErrorKind {
        ErrorKind::Sink {
            error: "error".into(),
        }
    }

    fn first(run: &RunState) -> (String, u64) {
        let suppressed = run.suppressed.load(Ordering::Relaxed);
        (run.take_error().expect("an error").to_string(), suppressed)
    }

    #[test]
    fn a_panic_from_a_call_in_progress_when_another_error_came_is_first() {
        let run = run();
        let started = Instant::now();
        run.fail(error());
        run.fail_in_call(panic("p"), started);
        assert_eq!(first(&run), ("source panicked: p".to_owned(), 1));
    }

    #[test]
    fn a_panic_from_a_call_that_began_after_another_error_is_second() {
        let run = run();
        run.fail(error());
        std::thread::sleep(std::time::Duration::from_millis(1));
        run.fail_in_call(panic("p"), Instant::now());
        assert_eq!(first(&run), ("sink failed".to_owned(), 1));
    }

    #[test]
    fn panics_from_calls_keep_their_order_and_errors_after_a_panic_are_second() {
        let run = run();
        let started = Instant::now();
        run.fail_in_call(panic("p1"), started);
        run.fail_in_call(panic("p2"), started);
        run.fail(error());
        assert_eq!(first(&run), ("source panicked: p1".to_owned(), 2));
    }

    #[test]
    fn a_panic_noted_in_a_call_on_this_thread_is_reported_as_one() {
        let run = run();
        let started = Instant::now();
        run.fail(error());
        RunState::panicked_in_call(started);
        run.fail(panic("p"));
        assert_eq!(first(&run), ("source panicked: p".to_owned(), 1));
        // The note is used once.
        let run = self::run();
        run.fail(error());
        run.fail(panic("q"));
        assert_eq!(first(&run), ("sink failed".to_owned(), 1));
    }
}
