//! One worker of a stage, and the per-item policy loop: retries, routing or failing fast,
//! panics, and the accounting of every item the worker takes.

use std::fmt;
use std::time::{Duration, Instant};

use super::counters::{Counter, Counts};
use super::lanes::{Collector, Loans};
use super::record::{Cycle, Observe, Recorder};
use super::sink::Deliveries;
use super::stage::StageHandle;
use super::state::{Place, RunState, StageState};
use super::threads::{Bench, MayGo};
use super::trace;
use crate::context::{CancelToken, Cancelled, Context};
use crate::error::{BoxError, ErrorKind, Site, panic_message};
use crate::policy::{Failure, Policy, Transient, unwrap_transient};
use crate::processor::{Emitter, MapRun, Processor};
use crate::transport::pace::nanos;
use crate::transport::{
    AfterSend, EdgeTx, Inbox, Loan, Outbox, Pacer, Payload, Recv, SharedInput, Took,
};

use std::sync::Arc;

/// Where a worker's outputs go.
pub(crate) enum Output<'scope, Out> {
    /// The stage's output edge, shared with its other workers.
    Shared,
    /// A lane of its own, one *turn* per input chunk: the outputs of each chunk, then an
    /// empty chunk (see `lanes`).
    Turns {
        /// The lane.
        edge: EdgeTx<Out>,
        /// Its number.
        lane: usize,
        /// What the pool's workers share to lend each other work.
        loans: Arc<Loans<'scope, Out>>,
        /// The pool's output, which its workers forward.
        collector: Arc<Collector<'scope, Out>>,
    },
}

/// A worker of an ordered pool: its lane, its turns, and the loan it works on.
struct Turns<'scope, Out> {
    /// Its lane's number.
    lane: usize,
    /// What the pool's workers share to lend each other work.
    loans: Arc<Loans<'scope, Out>>,
    /// The pool's output, which its workers forward.
    collector: Arc<Collector<'scope, Out>>,
    /// The loan being worked on, if any: the lane's edge, set aside while the outputs go
    /// to the loan's owner, and the key of the turn the loan belongs to.
    loan: Option<(EdgeTx<Out>, u64)>,
}

impl<Out> Turns<'_, Out> {
    /// What a send into the lane (or a loan's reply) calls: forwarding what is ready.
    fn after_send(&self) -> &dyn AfterSend {
        &*self.collector
    }
}

thread_local! {
    /// Set when a worker dropped by a processor's panic handed on what came before the
    /// failing item, so that the panic may take effect at its position (and turn, in an
    /// ordered pool); taken by the thread's panic report. A worker that dies outside a
    /// processor call (an init closure, the `Drop` of a kept copy) hands on nothing, and
    /// its panic must cancel the run.
    static HANDED_ON: std::cell::Cell<Option<Place>> = const { std::cell::Cell::new(None) };
}

/// The place (see `Place`) of the item before whose processor's panic this thread's
/// worker handed on its outputs, if it did (and forgets it).
pub(super) fn handed_on_before_panicking() -> Option<Place> {
    HANDED_ON.with(std::cell::Cell::take)
}

/// Forgets what a worker left for its thread's panic report.
pub(super) fn forget_thread_state() {
    HANDED_ON.with(std::cell::Cell::take);
}

/// Who checks for cancellation around a unit's first attempt.
#[derive(Clone, Copy)]
enum Checked {
    /// The unit itself: before the attempt, and after it for the return value.
    Here,
    /// The caller, just before, and again before its next item (`Worker::run`).
    ByCaller,
}

/// What [`Worker::next_within`] found.
#[derive(Debug)]
pub enum Next<T> {
    /// An item.
    Item(T),
    /// No item came within the time given.
    Idle,
    /// The input has ended, or the run was cancelled.
    End,
    /// The worker's thread was lent to another stage of the run (see
    /// [`Worker::lend_when_idle`]): the runner must return from the worker at once.
    Lent,
}

/// One worker of a stage: its input, its output, and the stage's policy and counters.
///
/// A runner spawns workers with [`StageHandle::spawn`] and usually calls [`run`](Self::run)
/// with the worker's processor. [`recv`](Self::recv), [`next_within`](Self::next_within),
/// [`process`](Self::process) and [`process_buffered`](Self::process_buffered) are there
/// for runners that need their own loop.
///
/// # Accounting
///
/// Every item the worker hands out must end in [`process`](Self::process) (or
/// [`process_batch`](Self::process_batch)); one that the runner drops instead is counted
/// when the worker is dropped: as cancelled if the run was cancelled, as filtered
/// otherwise. Items the worker holds when it is dropped count as cancelled.
pub struct Worker<'scope, In: 'scope, Out: 'scope> {
    /// The worker's state, on the heap (see `Parts`).
    p: Box<Parts<'scope, In, Out>>,
}

/// A worker's state. Boxed: a runner moves its worker around by value, and the frames
/// between a thread's start and a processor call stay small, so that a thread of an
/// I/O-bound pool waiting in its processor touches two pages of its stack, not three
/// (W4's resident memory is mostly thread stacks).
struct Parts<'scope, In: 'scope, Out: 'scope> {
    /// What processors see.
    cx: Context<'scope>,
    /// The run's state.
    run: &'scope RunState,
    /// The stage's id and counters.
    stage: &'scope StageState,
    /// The stage's error policy.
    policy: &'scope Policy<'scope, In>,
    /// Where routed failures go.
    deliveries: Arc<Deliveries<'scope>>,
    /// The current input chunk.
    inbox: Inbox<In>,
    /// The output buffer.
    outbox: Outbox<Out>,
    /// For a worker of an ordered pool: its lane, and its turns.
    turns: Option<Turns<'scope, Out>>,
    /// The token outputs are sent with: the stage's, or for turns its intake's (the pool
    /// stops forwarding turns when the stage fails at a position).
    out_token: &'scope CancelToken,
    /// Whether a chunk was taken whose turn (or loan) has not ended yet.
    turn_open: bool,
    /// Cost measurement and chunk sizing.
    pacer: Pacer,
    /// Counters not yet added to the stage's.
    local: Counts,
    /// Blocked time of the outbox already moved into `local`.
    reported_blocked: u64,
    /// Outputs emitted when the current chunk was taken.
    emitted_at_chunk: u64,
    /// Outputs emitted in all, counted by the `Emitter` as they are emitted (so that a
    /// processor that panics after emitting leaves them counted).
    emitted: u64,
    /// Of `emitted`, the outputs already added to the stage's counters.
    reported_emitted: u64,
    /// Items a processor holds (a batch counts its items): if the worker is dropped while
    /// it holds some, the processor (or a clone of the input) panicked: the unit failed.
    in_flight: u64,
    /// Items handed out to the runner, in all.
    taken: u64,
    /// While the plain loop (see `run_plain_chunk`) is inside a chunk: `taken` when it
    /// entered. The chunk's outcomes are counted when the loop leaves it, from this and
    /// `plain_filtered`.
    plain_from: Option<u64>,
    /// Items of the chunk the plain loop has filtered so far (the others are mapped).
    plain_filtered: u64,
    /// Of the items taken, those given an outcome (the plain loop's when it leaves its
    /// chunk).
    settled: u64,
    /// Chunks taken.
    chunks: u64,
    /// `taken` when the current chunk was taken (its items processed here are the
    /// difference: a chunk's items less those given back).
    taken_at_chunk: u64,
    /// The worker's track, when the run records its timeline (one branch per chunk).
    timeline: Option<Box<Recorder>>,
    /// Where the track goes when the worker ends.
    observe: &'scope Observe,
    /// The run's idle workers lending their threads.
    bench: Arc<Bench<'scope>>,
    /// Whether the runner lets this worker go, when it lends its thread (set by
    /// `lend_when_idle`).
    may_go: Option<MayGo<'scope>>,
    /// Cancelled to wake the worker when its thread is chosen; a child of the stage's
    /// token, so that cancelling the stage wakes it too. Made at the first sitting.
    call: Option<CancelToken>,
    /// Whether the worker's thread was lent: it hands out what it holds, then `Lent`.
    lent: bool,
}

impl<'scope, In, Out> Worker<'scope, In, Out>
where
    In: Send + 'scope,
    Out: Send + 'scope,
{
    pub(super) fn new(
        handle: &StageHandle<'scope, '_, In, Out>,
        index: usize,
        input: Arc<SharedInput<In>>,
        output: Output<'scope, Out>,
    ) -> Self {
        Worker {
            p: Parts::boxed(handle, index, input, output),
        }
    }

    /// The context this worker's processor calls get.
    pub fn context(&self) -> &Context<'scope> {
        self.p.context()
    }

    /// The next input item, or `None` when the input has ended or the run was cancelled.
    ///
    /// Blocks while the input is empty; before blocking it sends the outputs it has
    /// buffered, so that downstream stages never wait on a partial chunk.
    pub fn recv(&mut self) -> Option<In> {
        self.p.recv()
    }

    /// Lets this worker's thread serve another stage of the run while the worker waits
    /// for input, instead of that stage starting a new OS thread.
    ///
    /// From now on, while the worker waits in [`next_within`](Self::next_within) or
    /// [`recv`](Self::recv), a thread the run starts (a pool growing, say) may be given to
    /// it: the run first calls `may_go`, and only if it returns true is the worker chosen.
    /// Its wait then returns [`Next::Lent`] (`recv`: `None`) once it has handed out the
    /// items it holds, and the runner must return from the worker without waiting for
    /// anything: the thread runs the other body after the worker's. A runner that returned
    /// true has let the worker go (a dynamic pool counts it as retired).
    ///
    /// `may_go` is called on another thread, under a lock the whole run shares: it must
    /// be quick and must not block. A thread that is lent keeps its first name, and what
    /// user code left in its thread-locals; once this worker has ended, its thread may
    /// also wait a few milliseconds for a thread body to run, as a spare. Pools that
    /// wait on I/O in waves are what this is for: [`Dynamic`](crate::Dynamic) uses it, so
    /// the workers of a stage that has run dry serve the next stage's burst.
    pub fn lend_when_idle(&mut self, may_go: impl Fn() -> bool + Send + Sync + 'scope) {
        self.p.lend_when_idle(may_go);
    }

    /// The next input item, waiting at most `idle` for one to arrive.
    pub fn next_within(&mut self, idle: Duration) -> Next<In> {
        self.p.next_within(idle)
    }

    /// Items left in the current chunk.
    pub fn buffered(&self) -> usize {
        self.p.buffered()
    }

    /// Chunks taken from the input so far.
    pub fn chunks(&self) -> u64 {
        self.p.chunks()
    }

    /// Runs `processor` on every input item until the input ends, the run is cancelled or
    /// the stage fails.
    pub fn run<P>(&mut self, processor: &mut P)
    where
        P: Processor<In, Out> + ?Sized,
    {
        self.p.run(processor);
    }

    /// Runs `processor` on one item and applies the stage's error policy (retries, then
    /// routing or failing fast). Returns `false` when the worker should stop: the stage
    /// failed, or the run was cancelled.
    pub fn process<P>(&mut self, processor: &mut P, item: In) -> bool
    where
        P: Processor<In, Out> + ?Sized,
    {
        self.p.process(processor, item)
    }

    /// Runs `processor` on the items left in the current chunk (see
    /// [`buffered`](Self::buffered)), applying the stage's error policy to each, without
    /// waiting for more: what [`run`](Self::run) does between two waits, at the same cost
    /// per item. A runner with a loop of its own calls it after [`process`](Self::process)
    /// of an item [`next_within`](Self::next_within) handed out. Returns `false` when the
    /// worker should stop, as `process` does.
    pub fn process_buffered<P>(&mut self, processor: &mut P) -> bool
    where
        P: Processor<In, Out> + ?Sized,
    {
        self.p.process_buffered(processor)
    }

    /// Runs `processor` on a batch of items that counts as one unit from now on (`k - 1`
    /// of its `k` items are counted as merged).
    pub fn process_batch<P>(&mut self, processor: &mut P, batch: Vec<In>) -> bool
    where
        P: Processor<Vec<In>, Out> + ?Sized,
    {
        self.p.process_batch(processor, batch)
    }

    /// Fails the run with a stage error (for instance when a worker cannot set itself up).
    pub fn fail(&self, error: BoxError) {
        self.p.fail(error);
    }
}

impl<'scope, In, Out> Parts<'scope, In, Out>
where
    In: Send + 'scope,
    Out: Send + 'scope,
{
    /// A new worker's state, made on the heap by a frame of its own: the caller's frame
    /// (a thread's outermost) need not hold a copy.
    #[inline(never)]
    fn boxed(
        handle: &StageHandle<'scope, '_, In, Out>,
        index: usize,
        input: Arc<SharedInput<In>>,
        output: Output<'scope, Out>,
    ) -> Box<Self> {
        Box::new(Self::new(handle, index, input, output))
    }

    fn new(
        handle: &StageHandle<'scope, '_, In, Out>,
        index: usize,
        input: Arc<SharedInput<In>>,
        output: Output<'scope, Out>,
    ) -> Self {
        let run = handle.spawner.run();
        let stage = handle.stage;
        stage.stats.worker_started();
        let shape = Arc::clone(handle.input().shape());
        let pacer = Pacer::new(shape.advice());
        let (edge, turns) = match output {
            Output::Shared => (handle.output.clone(), None),
            Output::Turns {
                edge,
                lane,
                loans,
                collector,
            } => (
                edge,
                Some(Turns {
                    lane,
                    loans,
                    collector,
                    loan: None,
                }),
            ),
        };
        let tag = turns.as_ref().map_or(index, |t| t.lane);
        let mut outbox = Outbox::new(edge);
        outbox.set_own_limit(pacer.limit());
        let observe = handle.spawner.observe();
        let timeline = observe.recorder(crate::timeline::TrackKind::Worker {
            stage: stage.id.clone(),
            worker: index,
        });
        Parts {
            cx: Context::new(&stage.id, index, (&stage.intake, &run.token), run.deadline),
            out_token: if turns.is_some() {
                &stage.intake
            } else {
                &stage.token
            },
            run,
            stage,
            policy: handle.policy,
            deliveries: Arc::clone(handle.spawner.deliveries()),
            inbox: Inbox::new(input, shape, tag),
            outbox,
            turns,
            turn_open: false,
            pacer,
            local: Counts::default(),
            reported_blocked: 0,
            emitted_at_chunk: 0,
            emitted: 0,
            reported_emitted: 0,
            in_flight: 0,
            taken: 0,
            plain_from: None,
            plain_filtered: 0,
            settled: 0,
            chunks: 0,
            taken_at_chunk: 0,
            timeline,
            observe,
            bench: Arc::clone(handle.spawner.bench()),
            may_go: None,
            call: None,
            lent: false,
        }
    }

    /// See [`Worker::context`].
    fn context(&self) -> &Context<'scope> {
        &self.cx
    }

    /// See [`Worker::recv`].
    fn recv(&mut self) -> Option<In> {
        match self.next_until(None) {
            Next::Item(item) => Some(item),
            Next::Idle | Next::End | Next::Lent => None,
        }
    }

    /// See [`Worker::lend_when_idle`].
    fn lend_when_idle(&mut self, may_go: impl Fn() -> bool + Send + Sync + 'scope) {
        self.may_go = Some(Arc::new(may_go));
        self.bench.enroll();
    }

    /// See [`Worker::next_within`].
    fn next_within(&mut self, idle: Duration) -> Next<In> {
        if let Some(item) = self.next_buffered() {
            return Next::Item(item);
        }
        // A wait past the end of representable time is a wait without limit.
        self.next_until(Instant::now().checked_add(idle))
    }

    fn next_until(&mut self, deadline: Option<Instant>) -> Next<In> {
        loop {
            if let Some(item) = self.next_buffered() {
                return Next::Item(item);
            }
            if self.lent {
                return Next::Lent;
            }
            if self.cx.is_cancelled() {
                return Next::End;
            }
            match self.refill(deadline) {
                Recv::Got(()) => {}
                // Chosen while waiting: what the wait found no longer matters.
                _ if self.lent => return Next::Lent,
                Recv::TimedOut => return Next::Idle,
                Recv::Closed | Recv::Cancelled => return Next::End,
            }
        }
    }

    /// Waits for the next chunk until `deadline`, sitting on the run's bench meanwhile if
    /// the runner lets this worker lend its thread (see `threads`, "Lending threads").
    fn take_or_lend(&mut self, deadline: Option<Instant>) -> Recv<Took> {
        let token = self.cx.stage_token();
        let Some(may_go) = &self.may_go else {
            return self.inbox.take(token, deadline);
        };
        let call = self.call.get_or_insert_with(|| {
            let call = CancelToken::new();
            token.attach(&call);
            call
        });
        self.bench.sit(call, may_go);
        let got = self.inbox.take(call, deadline);
        if self.bench.stand() {
            // Nobody chose this worker: a cancelled call is the stage's cancellation.
            return got;
        }
        self.lent = true;
        if let Recv::Got(_) = got {
            // Took a chunk as it was chosen: the worker keeps its thread for the chunk,
            // and the lent body goes on elsewhere at once.
            self.bench.hand_on();
        }
        got
    }

    /// See [`Worker::buffered`].
    fn buffered(&self) -> usize {
        self.inbox.buffered()
    }

    /// See [`Worker::chunks`].
    fn chunks(&self) -> u64 {
        self.chunks
    }

    /// The next item of the current chunk, without blocking; `None` when the chunk is used
    /// up or the run was cancelled.
    #[inline]
    fn next_buffered(&mut self) -> Option<In> {
        if self.cx.is_cancelled() {
            return None;
        }
        // Counted as it is handed out: items siblings steal from this worker's stash are
        // theirs to count (see `transport::inbox`).
        let item = self.inbox.next_buffered()?;
        self.taken += 1;
        Some(item)
    }

    /// Closes the current chunk (measuring it) and takes the next one, waiting until
    /// `deadline` at most.
    fn refill(&mut self, deadline: Option<Instant>) -> Recv<()> {
        // What the timeline needs, read whether or not it records: plain loads.
        let (open, chunk_started, _) = self.pacer.chunk();
        let items = self.taken.saturating_sub(self.taken_at_chunk);
        let finished = Instant::now();
        let blocked_at_finish = self.outbox.blocked_ns();
        let busy = self
            .pacer
            .finish(finished, blocked_at_finish, self.inbox.shape());
        self.local[Counter::BusyNs] += busy;
        trace::chunk(items, busy);
        let outputs = self.emitted - self.emitted_at_chunk;
        self.outbox.measure(busy, outputs);
        // When the next chunk is taken: now, unless a turn's end or a wait comes first
        // (one clock read a chunk fewer than reading it again).
        let mut taken_at = finished;
        if self.turn_open {
            self.turn_open = false;
            self.end_turn();
            // The end of a turn is a send, which may block.
            taken_at = Instant::now();
        }
        let mut got = self.inbox.try_take();
        let mut waited = None;
        if let Recv::TimedOut = got {
            // Nothing ready: send what we hold before blocking, so a trickle is not delayed.
            self.flush();
            self.sync_stats();
            let waiting = Instant::now();
            got = self.take_or_lend(deadline);
            let woke = Instant::now();
            self.local[Counter::WaitNs] += nanos(woke.saturating_duration_since(waiting));
            waited = Some((waiting, woke));
            taken_at = woke;
        }
        if let Some(recorder) = self.timeline.as_deref_mut() {
            recorder.cycle(&Cycle {
                open,
                started: chunk_started,
                finished,
                busy,
                blocked_at_finish,
                blocked_now: self.outbox.blocked_ns(),
                items,
                waited,
            });
        }
        self.taken_at_chunk = self.taken;
        match got {
            Recv::Got(took) => {
                let n = took.len();
                match took {
                    Took::Input(n) => self.local[Counter::Received] += n as u64,
                    Took::Stolen(_, loan) => self.borrow(loan),
                }
                self.chunks += 1;
                self.turn_open = self.turns.is_some();
                self.emitted_at_chunk = self.emitted;
                self.pacer.begin(taken_at, n, self.outbox.blocked_ns());
                self.sync_stats();
                Recv::Got(())
            }
            Recv::Closed => Recv::Closed,
            Recv::Cancelled => Recv::Cancelled,
            Recv::TimedOut => Recv::TimedOut,
        }
    }

    /// See [`Worker::run`].
    fn run<P>(&mut self, processor: &mut P)
    where
        P: Processor<In, Out> + ?Sized,
    {
        if self.policy.keep.is_some() {
            self.run_keeping(processor);
            return;
        }
        while self.run_plain_chunk(processor) && self.next_chunk() {}
    }

    /// `run` for a stage that keeps a copy of each item (to retry it or route it).
    #[inline(never)]
    fn run_keeping<P>(&mut self, processor: &mut P)
    where
        P: Processor<In, Out> + ?Sized,
    {
        while let Some(item) = self.recv() {
            // `recv` has just checked for cancellation, and checks again before the next
            // item: the unit need not check around the call too (W1's per-item cost).
            if !self.process_item(processor, item, Checked::ByCaller) {
                return;
            }
        }
    }

    /// Waits for a chunk with items, as `recv` does before it hands one out. False when
    /// the input has ended, the run was cancelled or the thread was lent.
    fn next_chunk(&mut self) -> bool {
        loop {
            if self.inbox.buffered() > 0 {
                return true;
            }
            if self.lent || self.cx.is_cancelled() {
                return false;
            }
            if !matches!(self.refill(None), Recv::Got(())) {
                return false;
            }
        }
    }

    /// `run`'s loop over the rest of the current chunk, for a stage that keeps no copy
    /// of an item (it neither retries nor routes): the outcomes of the chunk's items are
    /// counted when the loop leaves it (`close_plain`), not item by item, so that the
    /// loop keeps its counts out of memory it stores to for every item (W1's per-item
    /// cost). `taken` stays exact: if a processor panics, `Drop` counts what the loop
    /// did from it (every item taken before the panicking one had its outcome). Returns
    /// false when the worker should stop.
    #[inline]
    fn run_plain_chunk<P>(&mut self, processor: &mut P) -> bool
    where
        P: Processor<In, Out> + ?Sized,
    {
        self.forget_caught_panic();
        self.plain_from = Some(self.taken);
        self.plain_filtered = 0;
        // A map's fast path through a chunk of this worker's own (see `MapRun`); whatever
        // it leaves (after cancellation, or once the output edge has closed) goes through
        // the loop below, which counts it.
        // (Turns forward outputs after each send, and lend: an ordered pool's own loop.)
        let items = if self.turns.is_none() {
            self.inbox.private_items()
        } else {
            None
        };
        if let Some(items) = items {
            let mut run = MapRun::new(
                items,
                &mut self.outbox,
                (self.cx.stage_token(), self.out_token),
                (&mut self.taken, &mut self.emitted, &mut self.plain_filtered),
            );
            processor.map_run(&mut run);
            let failed = run.take_error();
            // Dropped here: the counts are up to date, the failed item taken and in flight.
            drop(run);
            if let Some(error) = failed {
                self.close_plain(1);
                return self.unit_failed(error, None, &plain_unit::<In>(), 1);
            }
        }
        loop {
            // Checked before each item, as `next_buffered` does; not after the call.
            if self.cx.is_cancelled() {
                self.close_plain(0);
                return false;
            }
            let Some(item) = self.inbox.next_buffered() else {
                self.close_plain(0);
                return true;
            };
            self.taken += 1;
            let before = self.emitted;
            let mut out = Emitter::new(
                &mut self.outbox,
                self.out_token,
                &mut self.emitted,
                self.turns.as_ref().map(Turns::after_send),
            );
            match processor.process(item, &self.cx, &mut out) {
                // A branch, not an addition: a map never takes it, and the loop stores
                // nothing for it.
                Ok(()) => {
                    if self.emitted == before {
                        self.plain_filtered += 1;
                    }
                }
                Err(error) => {
                    self.close_plain(1);
                    return self.unit_failed(error, None, &plain_unit::<In>(), 1);
                }
            }
        }
    }

    /// See [`Worker::process_buffered`].
    fn process_buffered<P>(&mut self, processor: &mut P) -> bool
    where
        P: Processor<In, Out> + ?Sized,
    {
        if self.policy.keep.is_none() {
            return self.run_plain_chunk(processor);
        }
        while let Some(item) = self.next_buffered() {
            if !self.process_item(processor, item, Checked::ByCaller) {
                return false;
            }
        }
        !self.cx.is_cancelled()
    }

    /// See [`Worker::process`].
    fn process<P>(&mut self, processor: &mut P, item: In) -> bool
    where
        P: Processor<In, Out> + ?Sized,
    {
        self.process_item(processor, item, Checked::Here)
    }

    /// `process`, with the cancellation checks around a first attempt made by `checked`.
    #[inline]
    fn process_item<P>(&mut self, processor: &mut P, item: In, checked: Checked) -> bool
    where
        P: Processor<In, Out> + ?Sized,
    {
        let policy = self.policy;
        let unit = Unit {
            keep: policy.keep.as_ref().map(|k| k as &dyn Fn(&In) -> In),
            ..plain_unit()
        };
        self.process_unit(processor, item, &unit, checked)
    }

    /// See [`Worker::process_batch`].
    fn process_batch<P>(&mut self, processor: &mut P, batch: Vec<In>) -> bool
    where
        P: Processor<Vec<In>, Out> + ?Sized,
    {
        let policy = self.policy;
        let keep = policy
            .keep
            .map(|k| move |batch: &Vec<In>| batch.iter().map(k).collect::<Vec<In>>());
        let unit = Unit {
            keep: keep.as_ref().map(|k| k as &dyn Fn(&Vec<In>) -> Vec<In>),
            into_items: |batch| batch,
            items: batch.len() as u64,
        };
        self.process_unit(processor, batch, &unit, Checked::Here)
    }

    /// The body of `process` and `process_batch`.
    fn process_unit<U, P>(
        &mut self,
        processor: &mut P,
        unit: U,
        how: &Unit<'_, U, In>,
        checked: Checked,
    ) -> bool
    where
        P: Processor<U, Out> + ?Sized,
    {
        self.forget_caught_panic();
        let items = how.items;
        if items == 0 {
            return !self.cx.is_cancelled();
        }
        let by_caller = matches!(checked, Checked::ByCaller);
        let mut unit = unit;
        let mut retries = 0;
        let (error, kept) = loop {
            // A retry always checks: its wait may have outlived the run.
            if (retries > 0 || !by_caller) && self.cx.is_cancelled() {
                // No new work, and no new attempt, after cancellation.
                self.settle(Counter::Cancelled, items);
                return false;
            }
            // In flight before the clone: a panicking `Clone` fails the unit too.
            self.in_flight = items;
            let kept = how.keep.map(|keep| keep(&unit));
            let before = self.emitted;
            let mut out = Emitter::new(
                &mut self.outbox,
                self.out_token,
                &mut self.emitted,
                self.turns.as_ref().map(Turns::after_send),
            );
            let result = processor.process(unit, &self.cx, &mut out);
            self.in_flight = 0;
            let emitted = self.emitted - before;
            let error = match result {
                Ok(()) => {
                    // Both counters at fixed places: a counter picked by the outcome is a
                    // store to an address known late, which held back the next item's loads
                    // (a third of W1's worker samples).
                    let filtered = u64::from(emitted == 0);
                    self.local[Counter::Filtered] += filtered;
                    self.local[Counter::Mapped] += 1 - filtered;
                    self.local[Counter::Merged] += items - 1;
                    self.settled += items;
                    return by_caller || !self.cx.is_cancelled();
                }
                Err(e) => e,
            };
            match (self.policy.retry, kept) {
                (Some(retry), Some(again))
                    if retries < retry.attempts()
                        && error.is::<Transient>()
                        && !self.run_over() =>
                {
                    retries += 1;
                    self.local[Counter::Retries] += 1;
                    trace::retry(retries + 1, &error);
                    if self.cx.sleep(retry.wait(retries)).is_err() {
                        self.settle(Counter::Cancelled, items);
                        return false;
                    }
                    unit = again;
                }
                (_, kept) => break (error, kept),
            }
        };
        self.unit_failed(error, kept, how, items)
    }

    /// Whether the run (or the stage) has been cancelled. The run's token too: its
    /// cancellation reaches the stage's a moment later.
    fn run_over(&self) -> bool {
        self.cx.is_cancelled() || self.run.token.is_cancelled()
    }

    /// A unit of `items` items failed with `error` for good (no retry left); `kept` is
    /// its copy, if the stage keeps one. Counts it, routes it or fails the stage. Returns
    /// whether the worker goes on.
    fn unit_failed<U>(
        &mut self,
        error: BoxError,
        kept: Option<U>,
        how: &Unit<'_, U, In>,
        items: u64,
    ) -> bool {
        if self.run_over() {
            if error.is::<Cancelled>() || self.policy.routes() {
                // The cancellation itself, reaching the processor; or a failure a
                // routing stage would have handed on, in a run that is over.
                self.settle(Counter::Cancelled, items);
            } else {
                // A failure of its own, after another ended the run: counted, not
                // returned.
                self.settle_failed(items);
                self.run.suppress();
            }
            return false;
        }
        let error = unwrap_transient(error);
        self.settle_failed(items);
        let policy = self.policy;
        let kept = match (kept, policy.route.as_deref()) {
            (Some(unit), Some(route)) => {
                self.local[Counter::Routed] += 1;
                trace::routed(&self.stage.id, &error);
                // The handler's call, made on the calling thread: typed here, where the stage's
                // input type is known.
                let stage = self.stage.id.clone();
                let error: Arc<dyn std::error::Error + Send + Sync> = Arc::from(error);
                let items = (how.into_items)(unit);
                self.deliveries.send(
                    Box::new(move || {
                        for item in items {
                            route.deliver(Failure::new(stage.clone(), Arc::clone(&error), item));
                        }
                    }),
                    &self.run.token,
                );
                return !self.cx.is_cancelled();
            }
            // Not routed: the copy kept for retries is dropped once the failure is recorded,
            // so that a panic in its `Drop` is counted after it instead of replacing it.
            (kept, _) => kept,
        };
        trace::stage_failed(&self.stage.id, &error);
        let kind = ErrorKind::Stage {
            stage: self.stage.id.clone(),
            error,
        };
        if self.stage.deferred {
            let place = self.hand_on_before_failing();
            self.run.fail_at(kind, self.stage.id.index() + 1, place);
        } else {
            self.run.fail(kind);
        }
        drop(kept);
        false
    }

    /// See [`Worker::fail`].
    fn fail(&self, error: BoxError) {
        self.run.fail(ErrorKind::Stage {
            stage: self.stage.id.clone(),
            error,
        });
    }
}

impl<In, Out> Parts<'_, In, Out> {
    /// Before a failure that takes effect at its position: sends on every output of the
    /// items before the failing one, ends the turn (a loan, without its end), and marks
    /// the turn as the last one the pool forwards. Returns the failing item's place.
    fn hand_on_before_failing(&mut self) -> Place {
        let mut place = (0, 0);
        if let Some(turns) = &self.turns {
            // Outside a loan, the current chunk is the one taken from the input last.
            let key = match &turns.loan {
                Some((_, key)) => *key,
                None => self.inbox.key(),
            };
            self.stage.fail_in_turn(key);
            // The item just handed out is the failing one.
            let nth = self
                .taken
                .saturating_sub(self.taken_at_chunk)
                .saturating_sub(1);
            place = (key, self.inbox.base() + nth);
        }
        if self.turn_open {
            self.turn_open = false;
            self.leave_turn(false);
        } else {
            self.flush();
        }
        place
    }

    /// Sends what the outbox holds; for an ordered pool's worker, if it sent, then
    /// forwards what is ready (see `lanes`, "Collecting").
    fn flush(&mut self) {
        let sending = self.outbox.buffered() > 0;
        self.outbox.flush(self.out_token);
        if sending {
            self.after_send();
        }
    }

    /// For an ordered pool's worker, after a send: forwards what is ready.
    fn after_send(&mut self) {
        if let Some(turns) = &self.turns {
            self.outbox.after_send(turns.after_send());
        }
    }

    /// Works on `loan` (items stolen from a sibling of an ordered pool) until the next
    /// refill: its outputs go to a reply its owner forwards in its own turn.
    fn borrow(&mut self, loan: Loan) {
        if let Some(turns) = self.turns.as_mut() {
            let reply = turns.loans.open(loan);
            let lane = self.outbox.replace_edge(reply);
            turns.loan = Some((lane, loan.key));
        }
    }

    /// Ends the current turn or loan, once its items are used up: the outputs of the
    /// loans siblings took from it, in order, then the end.
    fn end_turn(&mut self) {
        let lent = self.inbox.take_lent();
        let whole = match &self.turns {
            Some(turns) if lent > 0 => turns.loans.forward(
                turns.lane,
                lent,
                &mut self.outbox,
                self.out_token,
                turns.after_send(),
            ),
            _ => true,
        };
        self.leave_turn(whole);
    }

    /// Sends the end of the current turn; for a loan, only if it is `whole` (a loan that
    /// ends without it stops its owner's turn there), and then outputs go to the lane
    /// again.
    fn leave_turn(&mut self, whole: bool) {
        let token = self.out_token;
        if let Some((lane, _)) = self.turns.as_mut().and_then(|t| t.loan.take()) {
            if whole {
                self.outbox.end_turn(token);
            } else {
                self.outbox.flush(token);
            }
            // Dropping the reply's only sender closes it; its owner forwards it.
            drop(self.outbox.replace_edge(lane));
        } else {
            self.outbox.end_turn(token);
            self.after_send();
        }
    }

    /// Closes a plain loop that a processor panic left open and the runner caught (the
    /// worker is still in use): the items before the panicking one were done; that one
    /// is the runner's, counted when the worker is dropped as an item it did not process.
    fn forget_caught_panic(&mut self) {
        self.close_plain(1);
    }

    /// Counts the items the plain loop has done in the current chunk, less `in_flight`
    /// (the last one taken, when its processor failed or panicked).
    fn close_plain(&mut self, in_flight: u64) {
        let Some(from) = self.plain_from.take() else {
            return;
        };
        let done = self.taken.saturating_sub(from + in_flight);
        self.local[Counter::Filtered] += self.plain_filtered;
        self.local[Counter::Mapped] += done - self.plain_filtered;
        self.settled += done;
    }

    /// Gives `items` input items the outcome `counter`.
    fn settle(&mut self, counter: Counter, items: u64) {
        self.local[counter] += items;
        self.settled += items;
    }

    /// A unit of `items` input items failed: one failure, the rest merged into it.
    fn settle_failed(&mut self, items: u64) {
        self.local[Counter::Failed] += 1;
        self.local[Counter::Merged] += items - 1;
        self.settled += items;
    }

    /// Moves counters into the stage's shared statistics.
    fn sync_stats(&mut self) {
        let blocked = self.outbox.blocked_ns();
        self.local[Counter::BlockedNs] += blocked - self.reported_blocked;
        self.reported_blocked = blocked;
        self.local[Counter::Emitted] += self.emitted - self.reported_emitted;
        self.reported_emitted = self.emitted;
        self.local[Counter::Cancelled] += self.outbox.take_cancelled();
        self.stage.stats.flush(&mut self.local);
    }

    /// Reports a panic an item's `Drop` raised while the worker disposed of it.
    fn report_drop_panic(&self, payload: Option<Payload>) {
        if let Some(payload) = payload {
            self.run.fail(ErrorKind::Panic {
                site: Site::Stage {
                    stage: self.stage.id.clone(),
                    worker: self.cx.worker(),
                },
                message: panic_message(&*payload),
            });
        }
    }
}

impl<In, Out> Drop for Parts<'_, In, Out> {
    fn drop(&mut self) {
        if self.plain_from.is_some() {
            // The plain loop never returns with a chunk open: a processor call of it
            // panicked, on the last item taken. Unwinding now, or caught by the runner.
            self.close_plain(1);
            if std::thread::panicking() {
                self.in_flight = 1;
            }
        }
        if self.in_flight > 0 {
            // Dropped while a processor held a unit: the processor panicked. In a stage
            // whose failures take effect at their position, what came before goes on.
            let items = std::mem::take(&mut self.in_flight);
            self.settle_failed(items);
            // The panic began during this chunk: the first error is decided by when it
            // happened, not by when it is reported (see `state`).
            RunState::panicked_in_call(self.pacer.started());
            // Whether or not the stage has stopped reading (a later item of an ordered pool
            // may have failed first), as a returned error does: what came before is the
            // sink's, and the earlier place wins.
            if self.stage.deferred {
                let place = self.hand_on_before_failing();
                HANDED_ON.with(|h| h.set(Some(place)));
            }
        }
        let (open, chunk_started, _) = self.pacer.chunk();
        let items = self.taken.saturating_sub(self.taken_at_chunk);
        let finished = Instant::now();
        let blocked_at_finish = self.outbox.blocked_ns();
        let busy = self
            .pacer
            .finish(finished, blocked_at_finish, self.inbox.shape());
        self.local[Counter::BusyNs] += busy;
        // Items never handed out: cancelled.
        let (left, panic) = self.inbox.discard();
        self.local[Counter::Cancelled] += left;
        self.report_drop_panic(panic);
        // Items handed out that the runner neither processed nor failed.
        let dropped = self.taken.saturating_sub(self.settled);
        let cancelled = self.cx.is_cancelled() || std::thread::panicking();
        self.settle(
            if cancelled {
                Counter::Cancelled
            } else {
                Counter::Filtered
            },
            dropped,
        );
        if self.cx.is_cancelled() {
            trace::worker_cancelled(left + dropped);
        }
        let token = self.out_token;
        let panic = if cancelled {
            self.outbox.discard()
        } else {
            if self.turn_open {
                self.turn_open = false;
                self.end_turn();
            }
            let sending = self.outbox.buffered() > 0;
            let panic = self.outbox.close(token);
            if sending {
                self.after_send();
            }
            panic
        };
        let panic = panic.or_else(|| self.outbox.take_panic());
        self.report_drop_panic(panic);
        if let Some(turns) = &self.turns {
            // The last worker of an ordered pool to leave forwards the rest and closes the
            // pool's output.
            let panic = turns.collector.leave();
            self.report_drop_panic(panic);
        }
        self.sync_stats();
        if let Some(mut recorder) = self.timeline.take() {
            recorder.cycle(&Cycle {
                open,
                started: chunk_started,
                finished,
                busy,
                blocked_at_finish,
                blocked_now: self.outbox.blocked_ns(),
                items,
                waited: None,
            });
            self.observe.submit(*recorder);
        }
        self.stage.stats.worker_ended();
    }
}

impl<In, Out> fmt::Debug for Worker<'_, In, Out> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Worker")
            .field("stage", &self.p.stage.id)
            .field("worker", &self.p.cx.worker())
            .field("buffered_in", &self.p.inbox.buffered())
            .field("buffered_out", &self.p.outbox.buffered())
            .finish()
    }
}

/// A single item that no copy is kept of.
fn plain_unit<'p, In>() -> Unit<'p, In, In> {
    Unit {
        keep: None,
        into_items: |item| vec![item],
        items: 1,
    }
}

/// How one unit of work (an item, or a batch) is kept, routed and counted.
struct Unit<'p, U, In> {
    /// Clones the unit before an attempt, when the stage retries or routes.
    keep: Option<&'p dyn Fn(&U) -> U>,
    /// The stage's input items in a failed unit, for the failure handler.
    into_items: fn(U) -> Vec<In>,
    /// Stage input items in the unit.
    items: u64,
}
