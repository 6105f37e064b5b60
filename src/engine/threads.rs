//! Starting the threads of a run on its scope, lending idle workers' threads, and joining
//! them.
//!
//! # Lending threads
//!
//! A run of I/O-bound dynamic pools needs threads in waves: a thousand workers of stage 0
//! finish their items about when stage 1 needs a thousand. Rather than one wave of threads
//! idling while the next is started, an idle worker whose runner allows it
//! ([`Worker::lend_when_idle`](super::Worker::lend_when_idle)) *sits* on the run's
//! [`Bench`] while it waits for input, and a thread the run starts meanwhile is given to it
//! instead of a new OS thread:
//!
//! - **Who decides.** The starting thread, under the bench's lock: it asks each sitting
//!   worker's `may_go` (newest first) and takes the first that says yes — the runner has
//!   then let the worker go (a dynamic pool retired it). The body waits in `lent` under
//!   the worker's thread id, and the worker's call token (a child of its stage's token) is
//!   cancelled, which wakes its wait.
//! - **Nothing is lost.** A worker stands up under the same lock when its wait ends: if it
//!   was still sitting nobody chose it, and its wait's result stands. If it was chosen, its
//!   wait returns [`Next::Lent`](super::Next::Lent) and its runner returns; the thread's
//!   wrapper (`Bench::spawn_os`) runs the lent body when the worker's body has returned, so
//!   the worker's stage handle — its sender of the stage's output — is gone first. A chosen
//!   worker that took a chunk as it was chosen keeps the chunk, and hands the lent body on
//!   to another sitting worker or a new OS thread at once: the body must not wait on items
//!   whose outputs may need that very thread to move on.
//! - **Spares.** When a lending worker's body returns, its thread sits for `SPARE_WAIT` as a
//!   spare, which may always go and is chosen first (it costs no stage a worker); the run's
//!   cancellation and `close` (the sink loop is done, before the join) wake every spare.
//!   Other threads end with their body, and so do the thread-locals user code left there.
//! - **No cycle.** A sitting entry holds no body (bodies hold stage handles, which hold the
//!   bench): a body is placed in `lent` only after its worker's entry is removed, and the
//!   thread takes it out when it runs it.

use super::watch::Watches;
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::{Scope, ScopedJoinHandle, ThreadId};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;

use super::record::Observe;
use super::sink::Deliveries;
use super::state::{RunState, Tapped};
use crate::context::CancelToken;
use crate::transport::{EdgeRx, EdgeTx, Shape, lane};

/// A thread's body.
pub(crate) type Body<'scope> = Box<dyn FnOnce() + Send + 'scope>;

/// Starts an OS thread on the run's scope, named, with a body.
type Os<'scope> =
    Box<dyn Fn(String, Body<'scope>) -> Result<(), SpawnRefused> + Send + Sync + 'scope>;

/// Whether a sitting worker's runner lets it go.
pub(crate) type MayGo<'scope> = Arc<dyn Fn() -> bool + Send + Sync + 'scope>;

/// A body to run, with the name its thread gets if it starts one.
struct Job<'scope> {
    name: String,
    body: Body<'scope>,
}

/// An idle worker offering its thread.
struct Sitting<'scope> {
    thread: ThreadId,
    call: CancelToken,
    /// `None` for a spare thread, whose body has returned: it may always go.
    may_go: Option<MayGo<'scope>>,
}

/// How long a lending worker's thread whose body has returned waits for a lent body before
/// it ends (a wave of workers ending as the next stage's wave starts).
const SPARE_WAIT: Duration = Duration::from_millis(5);

/// The run's idle workers that lend their threads (see "Lending threads" above).
pub(crate) struct Bench<'scope> {
    /// Workers sitting now, newest last.
    sitting: Mutex<Vec<Sitting<'scope>>>,
    /// `sitting.len()`, to pass by an empty bench without the lock.
    seats: AtomicUsize,
    /// Bodies lent to a chosen worker's thread, to run when its body returns.
    lent: Mutex<Vec<(ThreadId, Job<'scope>)>>,
    /// Threads whose current body is a lending worker's: when the body returns, the
    /// thread waits a little as a spare. Other threads end with their body, and what user
    /// code left in their thread-locals with them.
    lenders: Mutex<HashSet<ThreadId>>,
    /// Set when the run's stages are done: no more spares.
    closed: AtomicBool,
    /// The run's token: cancelling the run wakes spares.
    token: CancelToken,
    /// Starts OS threads.
    os: Os<'scope>,
}

impl<'scope> Bench<'scope> {
    /// Starts `body` on a sitting worker's thread if one may go, or on a new OS thread.
    fn start(self: &Arc<Self>, name: String, body: Body<'scope>) -> Result<(), SpawnRefused> {
        match self.lend(Job { name, body }) {
            Ok(()) => Ok(()),
            Err(job) => self.spawn_os(job).map_err(|(refused, _)| refused),
        }
    }

    /// Gives `job` to the newest sitting worker that may go; gives it back if none may.
    fn lend(&self, job: Job<'scope>) -> Result<(), Job<'scope>> {
        // Ordering: a stale zero only starts an OS thread where a worker could have served.
        if self.seats.load(Ordering::Acquire) == 0 {
            return Err(job);
        }
        let mut sitting = self.sitting.lock();
        // A spare first (it costs no stage a worker), then the newest worker that may go.
        let spare = sitting.iter().rposition(|s| s.may_go.is_none());
        let at = spare.or_else(|| {
            sitting
                .iter()
                .rposition(|s| s.may_go.as_ref().is_some_and(|may_go| may_go()))
        });
        let Some(at) = at else {
            return Err(job);
        };
        let chosen = sitting.swap_remove(at);
        self.seats.store(sitting.len(), Ordering::Release);
        // Placed before the call, and before the lock is let go: the chosen worker finds
        // it once it has stood up (under this lock) and seen that it was chosen.
        self.lent.lock().push((chosen.thread, job));
        chosen.call.cancel();
        Ok(())
    }

    /// Starts an OS thread that runs `job`, then whatever is lent to it, until nothing is.
    /// If the OS refuses, gives the job back with the reason.
    fn spawn_os(self: &Arc<Self>, job: Job<'scope>) -> Result<(), (SpawnRefused, Job<'scope>)> {
        let bench = Arc::clone(self);
        let Job { name, body } = job;
        // A refused thread's closure is dropped unrun: the body waits here, to be taken back.
        let slot = Arc::new(Mutex::new(Some(body)));
        let theirs = Arc::clone(&slot);
        let started = (self.os)(
            name.clone(),
            Box::new(move || {
                let first = theirs.lock().take();
                drop(theirs);
                if let Some(body) = first {
                    body();
                }
                let me = std::thread::current().id();
                while let Some(next) = bench.take_lent(me).or_else(|| bench.park(me)) {
                    super::forget_thread_state();
                    (next.body)();
                }
            }),
        );
        started.map_err(|refused| {
            let body = slot
                .lock()
                .take()
                .expect("a refused thread never ran its body");
            (refused, Job { name, body })
        })
    }

    /// The body lent to thread `me`, if one is.
    fn take_lent(&self, me: ThreadId) -> Option<Job<'scope>> {
        let job = {
            let mut lent = self.lent.lock();
            let at = lent.iter().position(|(t, _)| *t == me)?;
            lent.swap_remove(at).1
        };
        // The thread's next body is not known to lend yet.
        self.lenders.lock().remove(&me);
        Some(job)
    }

    /// Seats the calling thread's idle worker: `call` is cancelled when a body is lent to
    /// it, and `may_go` is asked first.
    pub(crate) fn sit(&self, call: &CancelToken, may_go: &MayGo<'scope>) {
        self.seat(call, Some(Arc::clone(may_go)));
    }

    /// Notes that the calling thread's body is a worker that lends its thread: the thread
    /// may wait as a spare when the body returns.
    pub(crate) fn enroll(&self) {
        self.lenders.lock().insert(std::thread::current().id());
    }

    fn seat(&self, call: &CancelToken, may_go: Option<MayGo<'scope>>) {
        let mut sitting = self.sitting.lock();
        sitting.push(Sitting {
            thread: std::thread::current().id(),
            call: call.clone(),
            may_go,
        });
        self.seats.store(sitting.len(), Ordering::Release);
    }

    /// Thread `me`, whose body has returned, waits up to `SPARE_WAIT` as a spare if that
    /// body was a lending worker's, until the bench closes; returns the body lent to it
    /// meanwhile.
    fn park(&self, me: ThreadId) -> Option<Job<'scope>> {
        if !self.lenders.lock().remove(&me) || self.closed.load(Ordering::Acquire) {
            return None;
        }
        let call = CancelToken::new();
        self.token.attach(&call);
        self.seat(&call, None);
        // Ordering: `close` sets the flag before it wakes the spares seated then; one
        // seated after that sees the flag here.
        if !self.closed.load(Ordering::Acquire) {
            let _ = call.sleep(SPARE_WAIT);
        }
        if self.stand() {
            return None;
        }
        self.take_lent(me)
    }

    /// The run's stages are done (or the run is cancelled): spares end now, and no thread
    /// waits as one after this.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        for spare in self.sitting.lock().iter().filter(|s| s.may_go.is_none()) {
            spare.call.cancel();
        }
    }

    /// Stands the calling thread's worker up. True when it was still sitting (nobody chose
    /// it); false when it was chosen, and a body has been lent to its thread.
    pub(crate) fn stand(&self) -> bool {
        let me = std::thread::current().id();
        let mut sitting = self.sitting.lock();
        let Some(at) = sitting.iter().position(|s| s.thread == me) else {
            return false;
        };
        sitting.swap_remove(at);
        self.seats.store(sitting.len(), Ordering::Release);
        true
    }

    /// For a chosen worker that must keep its thread (it took a chunk as it was chosen):
    /// hands the body lent to it on to another sitting worker or a new OS thread. If the
    /// OS refuses, the body stays lent, and runs on this thread after the worker.
    pub(crate) fn hand_on(self: &Arc<Self>) {
        let me = std::thread::current().id();
        let Some(job) = self.take_lent(me) else {
            return;
        };
        let Err(job) = self.lend(job) else {
            return;
        };
        if let Err((_, job)) = self.spawn_os(job) {
            self.lent.lock().push((me, job));
        }
    }
}

/// Starts threads on the run's scope and registers them, and the run's taps, with the
/// calling thread.
pub(crate) struct Spawner<'scope, 'env> {
    /// The run's state.
    run: &'scope RunState,
    /// The run's timeline and tracing span.
    observe: &'scope Observe,
    /// Where taps go.
    taps: Sender<Tapped<'scope>>,
    /// Where routed failures go, to be handed to their handlers on the calling thread.
    deliveries: Arc<Deliveries<'scope>>,
    /// Idle workers that lend their threads, and the start of OS threads on the scope
    /// (whose join handles it sends to the calling thread); every thread starts through it.
    bench: Arc<Bench<'scope>>,
    /// The run's periodic jobs, and the one thread that serves them (see `watch`).
    watches: Arc<Watches<'scope>>,
    /// The scope's lifetimes.
    scope: std::marker::PhantomData<&'scope Scope<'scope, 'env>>,
}

impl Clone for Spawner<'_, '_> {
    fn clone(&self) -> Self {
        Spawner {
            scope: self.scope,
            run: self.run,
            observe: self.observe,
            taps: self.taps.clone(),
            deliveries: Arc::clone(&self.deliveries),
            bench: Arc::clone(&self.bench),
            watches: Arc::clone(&self.watches),
        }
    }
}

/// Why a thread was not started.
#[derive(Debug)]
pub(crate) enum SpawnRefused {
    /// The run is cancelled: no thread starts after that.
    Cancelled,
    /// The operating system refused.
    Os(std::io::Error),
}

impl<'scope, 'env> Spawner<'scope, 'env> {
    /// A spawner for `run` on `scope`, with the receivers of its handles and taps.
    pub(crate) fn new(
        scope: &'scope Scope<'scope, 'env>,
        run: &'scope RunState,
        deliveries: Arc<Deliveries<'scope>>,
        observe: &'scope Observe,
    ) -> (
        Self,
        Receiver<ScopedJoinHandle<'scope, ()>>,
        Receiver<Tapped<'scope>>,
    ) {
        let (handles, handles_rx) = crossbeam_channel::unbounded();
        let (taps, taps_rx) = crossbeam_channel::unbounded();
        let os = {
            let stack_size = run.stack_size;
            Box::new(move |name: String, body: Body<'scope>| {
                let mut builder = std::thread::Builder::new().name(name);
                if let Some(bytes) = stack_size {
                    builder = builder.stack_size(bytes);
                }
                let handle = builder
                    .spawn_scoped(scope, body)
                    .map_err(SpawnRefused::Os)?;
                // Unbounded, and the calling thread holds the receiver until every handle
                // is joined: this send cannot fail or block.
                let _ = handles.send(handle);
                Ok(())
            })
        };
        let bench = Arc::new(Bench {
            sitting: Mutex::new(Vec::new()),
            seats: AtomicUsize::new(0),
            lent: Mutex::new(Vec::new()),
            lenders: Mutex::new(HashSet::new()),
            closed: AtomicBool::new(false),
            token: run.token.clone(),
            os,
        });
        let spawner = Spawner {
            scope: std::marker::PhantomData,
            run,
            observe,
            taps,
            deliveries,
            bench,
            watches: Watches::new(),
        };
        (spawner, handles_rx, taps_rx)
    }

    pub(crate) fn run(&self) -> &'scope RunState {
        self.run
    }

    /// The queue of routed failures to the calling thread.
    pub(crate) fn deliveries(&self) -> &Arc<Deliveries<'scope>> {
        &self.deliveries
    }

    /// The run's timeline and tracing span.
    pub(crate) fn observe(&self) -> &'scope Observe {
        self.observe
    }

    /// Starts a named thread, unless the run is cancelled — or gives the body to a sitting
    /// worker's thread (see "Lending threads"), which keeps its own name. The body must
    /// catch its own panics.
    pub(crate) fn spawn<F>(&self, name: String, f: F) -> Result<(), SpawnRefused>
    where
        F: FnOnce() + Send + 'scope,
    {
        if self.run.token.is_cancelled() {
            return Err(SpawnRefused::Cancelled);
        }
        self.bench.start(name, Box::new(f))
    }

    /// The run's periodic jobs.
    pub(crate) fn watches(&self) -> &Arc<Watches<'scope>> {
        &self.watches
    }

    /// The run's bench of idle workers lending their threads.
    pub(crate) fn bench(&self) -> &Arc<Bench<'scope>> {
        &self.bench
    }

    /// A new edge into stage `index` (or into the sink, past the last stage), tapped: what
    /// is left in it after the join counts as cancelled for that stage.
    pub(crate) fn edge_into<T: Send + 'scope>(&self, index: usize) -> (EdgeTx<T>, EdgeRx<T>) {
        let max = self.run.max_chunk;
        let shape = match self.run.chunks_of(index) {
            Some(memory) => Shape::remembering(max, Arc::clone(memory)),
            None => Shape::new(max),
        };
        let (tx, rx) = lane(self.run.capacity_of(index), shape);
        self.tap(index, &rx);
        (tx, rx)
    }

    /// A lane private to stage `index`, holding at most `capacity` chunks and advising
    /// `shape`, tapped like an edge into the stage.
    pub(crate) fn lane_in<T: Send + 'scope>(
        &self,
        index: usize,
        capacity: usize,
        shape: std::sync::Arc<Shape>,
    ) -> (EdgeTx<T>, EdgeRx<T>) {
        let (tx, rx) = lane(capacity, shape);
        self.tap(index, &rx);
        (tx, rx)
    }

    /// Keeps a receiver of `rx`, whose leftovers count as cancelled for stage `index`.
    pub(super) fn tap<T: Send + 'scope>(&self, index: usize, rx: &EdgeRx<T>) {
        let _ = self.taps.send(Tapped {
            tap: Box::new(rx.clone()),
            index,
        });
    }
}

/// Joins the run's threads: those that have finished while the run goes on (a dynamic pool
/// retires workers, and joining thousands of them at the end would delay `run`'s return),
/// and all the others at the end.
pub(crate) struct Reaper<'scope> {
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

    pub(crate) fn new(incoming: Receiver<ScopedJoinHandle<'scope, ()>>) -> Self {
        Reaper {
            incoming,
            running: Vec::new(),
            last: Instant::now(),
        }
    }

    /// Joins the threads that have finished, if it has not looked for a while.
    pub(crate) fn reap(&mut self) {
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
    /// could spawn another has ended (each holds a `Spawner` or the bench whose sender it
    /// drops).
    pub(crate) fn join_all(self) {
        for handle in self.running.into_iter().chain(self.incoming.iter()) {
            let _ = handle.join();
        }
    }
}

/// The run's taps: one per edge and lane, arriving as stages start them.
pub(crate) struct Taps<'scope> {
    /// Where spawners send new taps.
    incoming: Receiver<Tapped<'scope>>,
    /// The taps received so far.
    known: Vec<Tapped<'scope>>,
}

impl<'scope> Taps<'scope> {
    pub(crate) fn new(incoming: Receiver<Tapped<'scope>>) -> Self {
        Taps {
            incoming,
            known: Vec::new(),
        }
    }

    /// Every tap so far.
    pub(crate) fn all(&mut self) -> &[Tapped<'scope>] {
        self.known.extend(self.incoming.try_iter());
        &self.known
    }
}
