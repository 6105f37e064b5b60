//! A dynamic pool: workers spawned on demand up to a maximum, retired when idle.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::TrySendError;

use super::{Cloned, Factory, Init, StageHandle, StageRunner, Worker};
use crate::context::Context;
use crate::error::BoxError;
use crate::report::StageStats;
use crate::transport::{Recv, recv_or_cancel, send_or_cancel};

/// Runs a stage on as many workers as there is work for, up to `max`.
///
/// The thread counterpart of a token-bounded pool of goroutines, for I/O-latency-bound
/// stages: a dispatcher thread hands each chunk of input to an idle worker, and when none is
/// idle it spawns a new one, until `max` workers run; then it waits for one to become idle.
/// A worker idle for longer than [`idle_timeout`](Self::idle_timeout) (default 1 s)
/// retires. Maxima in the thousands are fine: a worker that waits on I/O costs a parked
/// thread.
///
/// Slow items travel in chunks of one (see the crate's notes on chunking), so with enough
/// workers every item is processed as soon as it arrives. Output order is not kept.
///
/// # Examples
///
/// ```
/// use std::time::{Duration, Instant};
/// use pipework::{Context, Dynamic, Pipeline};
///
/// // 200 calls of 50 ms each, at most 200 at once: about 50 ms in all.
/// let pipeline = Pipeline::new().stage(
///     "call",
///     Dynamic::new(200, |id: u32, cx: &Context| {
///         cx.sleep(Duration::from_millis(50))?;
///         Ok(id)
///     }),
/// );
/// let started = Instant::now();
/// let (out, report) = pipeline.collect(0..200).unwrap();
/// assert_eq!(out.len(), 200);
/// assert!(report.stages[0].peak_workers <= 200);
/// assert!(started.elapsed() < Duration::from_secs(5));
/// ```
#[derive(Debug, Clone)]
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
    /// A maximum of zero is a configuration error, returned by `run`.
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

    /// How long a worker waits for work before it retires.
    pub fn idle_timeout(mut self, idle: Duration) -> Self {
        self.idle = idle;
        self
    }
}

/// Holds one of the pool's `max` places while a worker runs; frees it when dropped.
struct Place(Arc<AtomicUsize>);

impl Drop for Place {
    fn drop(&mut self) {
        // Ordering: AcqRel on the pool's place counter, whose every change is a
        // read-modify-write; the bound holds by atomicity alone.
        self.0.fetch_sub(1, Ordering::AcqRel);
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
        if self.max == 0 {
            return Err("a dynamic pool needs a maximum of at least one worker".into());
        }
        Ok(())
    }

    fn start<'scope>(&'scope self, stage: StageHandle<'scope, '_, In, Out>) {
        let (hand, work) = crossbeam_channel::bounded::<Vec<In>>(0);
        let pool = Arc::new(Pool {
            config: self,
            stage: stage.clone(),
            places: Arc::new(AtomicUsize::new(0)),
            work,
        });
        stage.spawn_helper("dispatch", move || pool.dispatch(hand));
    }
}

/// What the dispatcher and the workers of one run share.
struct Pool<'scope, 'env, In: 'scope, Out: 'scope, M> {
    /// The pool's configuration.
    config: &'scope Dynamic<M>,
    /// Spawns workers.
    stage: StageHandle<'scope, 'env, In, Out>,
    /// Places taken out of `config.max`.
    places: Arc<AtomicUsize>,
    /// The hand-off channel's receiving end, which every worker reads.
    work: crossbeam_channel::Receiver<Vec<In>>,
}

impl<'scope, In, Out, M> Pool<'scope, '_, In, Out, M>
where
    In: Send + 'scope,
    Out: Send + 'scope,
    M: Factory<In, Out>,
{
    /// Starts a worker if the pool has room, giving it `first` to process.
    ///
    /// # Errors
    ///
    /// Gives `first` back when the pool is full or the system refused a thread.
    fn grow(self: &Arc<Self>, first: Vec<In>) -> Result<(), Vec<In>> {
        if self.stage.token().is_cancelled() {
            // A cancelled run's input is never drained: a worker started now would see
            // input waiting and start another, without end.
            return Err(first);
        }
        // Ordering: AcqRel, see `Place`.
        let reserved = self
            .places
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.config.max).then_some(n + 1)
            });
        if reserved.is_err() {
            return Err(first);
        }
        let place = Place(Arc::clone(&self.places));
        let pool = Arc::clone(self);
        self.stage
            .spawn_fed(self.work.clone(), first, move |w| pool.work(place, w))
            // A refused spawn dropped the closure, and the place with it.
            .map_err(|(_, first)| first)
    }

    /// The dispatcher: moves each input chunk to an idle worker, or to a new one.
    ///
    /// The hand-off channel has no capacity, so a `try_send` succeeds exactly when a worker
    /// is blocked waiting for work: "no idle worker" is observed, not guessed.
    fn dispatch(self: Arc<Self>, hand: crossbeam_channel::Sender<Vec<In>>) {
        let token = self.stage.token();
        let stats = &self.stage.stage().stats;
        let input = self.stage.input().rx.clone();
        while let Recv::Got(chunk) = recv_or_cancel(&input, token, None) {
            let chunk = match hand.try_send(chunk) {
                Ok(()) => continue,
                Err(TrySendError::Full(chunk) | TrySendError::Disconnected(chunk)) => chunk,
            };
            // No worker is idle. Start one with the chunk if the pool has room — unless the
            // stage's output queue is full while workers run: then they are busy waiting for
            // the next stage, and one more would only wait with them.
            let waiting_downstream =
                self.stage.output().tx.is_full() && self.places.load(Ordering::Acquire) > 0;
            let chunk = if waiting_downstream {
                chunk
            } else {
                match self.grow(chunk) {
                    Ok(()) => continue,
                    Err(chunk) => chunk,
                }
            };
            if token.is_cancelled() {
                count(stats, chunk.len());
                return;
            }
            if self.places.load(Ordering::Acquire) == 0 {
                // Not even one worker could be started: the stage cannot go on.
                count(stats, chunk.len());
                self.stage.fail("cannot start a worker thread".into());
                return;
            }
            // At the maximum (or out of threads): wait for a worker to become idle.
            if let Err(chunk) = send_or_cancel(&hand, chunk, token) {
                count(stats, chunk.len());
                return;
            }
        }
    }

    /// A worker's loop: process, then wait for more work until idle for too long.
    fn work(self: Arc<Self>, place: Place, mut w: Worker<'scope, In, Out>) {
        // Starting a thread takes tens of microseconds, and the dispatcher starts them one
        // at a time. While input is queued, every new worker starts one more, so that a
        // burst of slow items gets its workers in logarithmic rather than linear time.
        if !self.stage.input().rx.is_empty() && !w.context().is_cancelled() {
            let _ = self.grow(Vec::new());
        }
        let mut processor = match self.config.factory.make(w.context()) {
            Ok(p) => p,
            Err(e) => return w.fail(e),
        };
        loop {
            if !w.process_buffered(&mut processor) {
                break;
            }
            match w.refill(Some(Instant::now() + self.config.idle)) {
                Recv::Got(()) => {}
                // Idle for too long: retire.
                Recv::TimedOut | Recv::Closed | Recv::Cancelled => break,
            }
        }
        // The worker must be gone from the stage's counts before its place is freed, so
        // that the reported peak never exceeds the maximum. (When a panic unwinds this
        // frame, the parameters drop in reverse order: `w` first, too.)
        drop(w);
        drop(place);
    }
}

/// Counts items the dispatcher held when the run was cancelled.
fn count(stats: &StageStats, n: usize) {
    stats.add_cancelled(n as u64);
}
