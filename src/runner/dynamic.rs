//! A dynamic pool: workers spawned on demand up to a maximum, retired when idle.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use std::sync::OnceLock;
use std::time::Duration;

use super::{Cloned, Factory, Init, check_workers};
use crate::context::Context;
use crate::engine::{Next, StageHandle, StageRunner, Watch, Worker};
use crate::error::BoxError;

/// Runs a stage on as many workers as there is work for, up to `max`.
///
/// The thread counterpart of a token-bounded pool of goroutines, for I/O-latency-bound
/// stages. Workers take chunks from the stage's input directly. A worker that takes a chunk
/// while more input waits and no sibling is idle asks the pool's watcher thread for two
/// siblings (started unless the pool is at `max`, the next stage is already backed up or
/// no more chunks wait), so a burst gets its workers in logarithmic time; the watcher also
/// looks every millisecond, for a burst that arrives while every worker is busy with a
/// long item. The watcher is a job on the run's one watcher thread
/// ([`StageHandle::watch`](crate::runner::StageHandle::watch)), shared by every dynamic
/// stage of the run. Workers never start threads themselves, so a worker waiting on I/O
/// keeps a shallow stack. A worker idle for longer than
/// [`idle_timeout`](Self::idle_timeout) (default 1 s) retires — except the last one, which
/// keeps reading until the input ends. Maxima in the thousands are fine: a worker that
/// waits on I/O costs a parked thread.
///
/// The stages of a run share threads: while a worker waits for input, a thread another
/// stage starts (its own pool growing, say) may be given to it instead of a new OS thread,
/// and the worker retires as if idle (see
/// [`Worker::lend_when_idle`](crate::runner::Worker::lend_when_idle)). A run of I/O-bound
/// pools whose items move through the stages in waves thus needs about as many threads as
/// items in flight, not that many per stage.
///
/// Slow items travel in chunks of one (see the crate's notes on chunking), so with enough
/// workers every item is processed as soon as it arrives. Output order is not kept.
///
/// # Examples
///
/// ```
/// use std::time::{Duration, Instant};
/// use pipework::{with_context, Dynamic, Pipeline};
///
/// // 200 calls of 50 ms each, at most 200 at once: about 50 ms in all.
/// let pipeline = Pipeline::new().stage(
///     "call",
///     Dynamic::new(200, with_context(|id: u32, cx| {
///         cx.sleep(Duration::from_millis(50)).map(|()| id)
///     })),
/// );
/// let started = Instant::now();
/// let (out, report) = pipeline.collect(0..200).unwrap();
/// assert_eq!(out.len(), 200);
/// assert!(report.stages[0].peak_workers <= 200);
/// assert!(started.elapsed() < Duration::from_secs(5));
/// ```
#[derive(Clone)]
pub struct Dynamic<M> {
    /// The most workers that run at once.
    max: usize,
    /// How long a worker waits for work before it retires.
    idle: Duration,
    /// Makes each worker's processor.
    factory: M,
}

impl<P> Dynamic<Cloned<P>> {
    /// A pool of at most `max` workers, each running a clone of `processor`.
    ///
    /// A maximum of zero, or more than 65,536, is a configuration error, returned by `run`.
    pub fn new(max: usize, processor: P) -> Self {
        Dynamic::with_factory(max, Cloned(processor))
    }
}

impl<F> Dynamic<Init<F>> {
    /// A pool of at most `max` workers, each running the processor `init` returns for it.
    pub fn with_init<P>(max: usize, init: F) -> Self
    where
        F: Fn(&Context<'_>) -> Result<P, BoxError>,
    {
        Dynamic::with_factory(max, Init(init))
    }
}

impl<M> Dynamic<M> {
    /// A pool of at most `max` workers whose processors `factory` makes.
    pub fn with_factory(max: usize, factory: M) -> Self {
        Dynamic {
            max,
            idle: Duration::from_secs(1),
            factory,
        }
    }

    /// How long a worker waits for work before it retires (`Duration::MAX`: never).
    ///
    /// A worker takes over items stuck behind a sibling's slow item only once it has seen
    /// the sibling stuck for about half a millisecond: workers that retire sooner than that
    /// (`Duration::ZERO`, "retire at once") leave such items to their sibling.
    #[must_use]
    pub fn idle_timeout(mut self, idle: Duration) -> Self {
        self.idle = idle;
        self
    }
}

impl<M> std::fmt::Debug for Dynamic<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dynamic")
            .field("max", &self.max)
            .field("idle", &self.idle)
            .finish_non_exhaustive()
    }
}

impl<In, Out, M> StageRunner<In, Out> for Dynamic<M>
where
    In: Send,
    Out: Send,
    M: Factory<In, Out>,
{
    fn kind(&self) -> &'static str {
        "dynamic"
    }

    fn check(&self) -> Result<(), String> {
        check_workers("a dynamic pool", self.max)
    }

    fn start<'scope>(&'scope self, stage: StageHandle<'scope, '_, In, Out>) {
        let pool = Arc::new(Pool {
            config: self,
            places: AtomicUsize::new(0),
            active: AtomicUsize::new(0),
            idle: AtomicUsize::new(0),
            wanted: AtomicUsize::new(0),
            watch: OnceLock::new(),
        });
        if !pool.grow(&stage) {
            return;
        }
        let watcher = stage.clone();
        let looking = Arc::clone(&pool);
        if let Some(watch) = stage.watch(WATCH_EVERY, move || looking.look(&watcher)) {
            let _ = pool.watch.set(watch);
            // A worker that asked before the watch existed, or a pool that ended meanwhile.
            pool.nudge();
        }
    }
}

/// What the workers of one run share.
///
/// Two counts, both changed only by read-modify-writes (Ordering: `AcqRel` throughout, so
/// each bound holds by atomicity alone):
/// - `places` bounds the workers at `max`: taken before a worker starts, given back only
///   after its `Worker` is gone, so the reported peak never exceeds `max`;
/// - `active` counts the workers that have not decided to retire: a worker retires only by
///   taking it from `n > 1` to `n - 1`, so the last one never does and the input always
///   has a reader until it ends.
struct Pool<'scope, M> {
    /// The pool's configuration.
    config: &'scope Dynamic<M>,
    /// Places taken out of `config.max`.
    places: AtomicUsize,
    /// Workers that have not retired.
    active: AtomicUsize,
    /// Workers waiting for input now.
    idle: AtomicUsize,
    /// Workers asked for by workers that took a chunk while more input waited; the watcher
    /// starts them. Workers do not start threads themselves: the thread of an I/O-bound
    /// pool then never goes down the (deep) path of starting one, and touches fewer pages
    /// of its stack.
    wanted: AtomicUsize,
    /// The watcher, nudged when `wanted` grows, and when the last worker ends (`places`
    /// reaches zero), so that the watch ends at once rather than at its next look (a small
    /// run would otherwise wait for it).
    watch: OnceLock<Watch<'scope>>,
}

/// A place in the pool, given back when dropped.
struct Place<'p, 'scope, M>(&'p Pool<'scope, M>);

impl<M> Drop for Place<'_, '_, M> {
    fn drop(&mut self) {
        if self.0.places.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.nudge();
        }
    }
}

/// How often the watcher looks for work nobody is taking.
const WATCH_EVERY: Duration = Duration::from_millis(1);

impl<'scope, M> Pool<'scope, M> {
    /// Starts a worker if the pool has room. False when it did not.
    fn grow<In, Out>(self: &Arc<Self>, stage: &StageHandle<'scope, '_, In, Out>) -> bool
    where
        In: Send + 'scope,
        Out: Send + 'scope,
        M: Factory<In, Out>,
    {
        let reserved = self
            .places
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.config.max).then_some(n + 1)
            });
        if reserved.is_err() {
            return false;
        }
        self.active.fetch_add(1, Ordering::AcqRel);
        let pool = Arc::clone(self);
        let sibling = stage.clone();
        let started = stage.spawn(move |w| pool.work(&sibling, w));
        if !started {
            // The closure, and the pool clone in it, are gone: give the place back.
            self.active.fetch_sub(1, Ordering::AcqRel);
            self.places.fetch_sub(1, Ordering::AcqRel);
        }
        started
    }

    /// Whether the pool should grow: it has room, input waits, nobody is idle and the next
    /// stage keeps up.
    fn needs_growth<In, Out>(&self, stage: &StageHandle<'scope, '_, In, Out>) -> bool
    where
        In: Send + 'scope,
        Out: Send + 'scope,
    {
        self.places.load(Ordering::Acquire) < self.config.max
            && stage.queued() > 0
            && self.idle.load(Ordering::Acquire) == 0
            && !stage.output_is_full()
            && !stage.is_cancelled()
    }

    /// Asks the watcher for a worker (see `wanted`).
    fn ask_for_worker(&self) {
        self.wanted.fetch_add(1, Ordering::AcqRel);
        self.nudge();
    }

    /// Runs the watcher's look now (once it exists).
    fn nudge(&self) {
        if let Some(watch) = self.watch.get() {
            watch.nudge();
        }
    }

    /// The watcher's look, run every millisecond and when nudged: starts the workers asked
    /// for, and grows the pool when input waits while every worker is busy. False once the
    /// last worker has ended.
    fn look<In, Out>(self: &Arc<Self>, stage: &StageHandle<'scope, '_, In, Out>) -> bool
    where
        In: Send + 'scope,
        Out: Send + 'scope,
        M: Factory<In, Out>,
    {
        if self.places.load(Ordering::Acquire) == 0 || stage.is_cancelled() {
            return false;
        }
        let wanted = self.wanted.swap(0, Ordering::AcqRel);
        // Two workers per request (each asker took a chunk while more waited: a burst
        // gets its workers in logarithmic time), one on a look that found input waiting;
        // no more than the chunks waiting, and each only while growth is still needed.
        let tries = wanted.saturating_mul(2).max(1).min(stage.queued());
        for _ in 0..tries {
            if !(self.needs_growth(stage) && self.grow(stage)) {
                break;
            }
        }
        true
    }

    /// A worker's loop: process, grow when needed, retire when idle too long.
    fn work<In, Out>(
        self: Arc<Self>,
        stage: &StageHandle<'scope, '_, In, Out>,
        mut w: Worker<'scope, In, Out>,
    ) where
        In: Send + 'scope,
        Out: Send + 'scope,
        M: Factory<In, Out>,
    {
        let place = Place(&self);
        let mut retired = false;
        if let Ok(mut processor) = self.config.factory.make(w.context()).map_err(|e| w.fail(e)) {
            // An idle worker serves the run's other stages when this pool can do without
            // it: the run retires it first, as an idle timeout would (never the last one).
            let pool = Arc::clone(&self);
            w.lend_when_idle(move || pool.retire());
            let mut seen = 0;
            loop {
                let next = self.wait(&mut w, self.config.idle);
                let next = match next {
                    Next::Idle if self.retire() => {
                        retired = true;
                        break;
                    }
                    // The last worker never retires: it waits as long as it takes.
                    Next::Idle => self.wait(&mut w, Duration::MAX),
                    next => next,
                };
                if let Next::Lent = next {
                    retired = true;
                    break;
                }
                let Next::Item(item) = next else { break };
                if w.chunks() != seen {
                    seen = w.chunks();
                    if self.needs_growth(stage) {
                        self.ask_for_worker();
                    }
                }
                if !(w.process(&mut processor, item) && w.process_buffered(&mut processor)) {
                    break;
                }
            }
        }
        if !retired {
            self.active.fetch_sub(1, Ordering::AcqRel);
        }
        // The worker must be gone from the stage's counts before its place is given back,
        // so that the reported peak never exceeds the maximum.
        drop(w);
        drop(place);
    }

    /// The next item, counted as idle while the worker has to wait for one.
    fn wait<In, Out>(&self, w: &mut Worker<'scope, In, Out>, idle: Duration) -> Next<In>
    where
        In: Send + 'scope,
        Out: Send + 'scope,
    {
        if w.buffered() > 0 {
            return w.next_within(idle);
        }
        self.idle.fetch_add(1, Ordering::AcqRel);
        let next = w.next_within(idle);
        self.idle.fetch_sub(1, Ordering::AcqRel);
        next
    }

    /// Takes the worker out of the active count unless it is the last one.
    fn retire(&self) -> bool {
        self.active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n > 1).then_some(n - 1)
            })
            .is_ok()
    }
}
