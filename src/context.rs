//! What a processor sees of the run: its stage, its worker, and cancellation.

use std::convert::Infallible;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;

use crate::id::StageId;

/// A cloneable handle that cancels every run it is attached to.
///
/// Cancel it from any thread (a Ctrl-C handler, a request that went away, a supervisor).
/// Every run attached to the token through [`Job::cancel_token`](crate::Job::cancel_token)
/// stops as soon as it can and returns [`ErrorKind::Cancelled`](crate::ErrorKind::Cancelled).
/// Cancellation is sticky: a cancelled token stays cancelled, and a run started with it fails
/// at once, before any thread starts.
///
/// Inside a run, [`Context::cancel_token`] hands out the run's own token, which is cancelled
/// whenever the run aborts for any reason; helper threads of a processor can watch it.
///
/// # Examples
///
/// ```
/// use pipework::CancelToken;
/// use std::time::Duration;
///
/// let token = CancelToken::new();
/// let watcher = token.clone();
/// let t = std::thread::spawn(move || watcher.sleep(Duration::from_secs(60)));
/// token.cancel();
/// // The sleeping thread wakes at once and reports that it was cut short.
/// assert!(t.join().unwrap().is_err());
/// assert!(token.is_cancelled());
/// ```
#[derive(Clone)]
pub struct CancelToken {
    /// The shared state all clones point at.
    inner: Arc<TokenInner>,
}

// Every worker reads `cancelled` several times per item. The alignment gives the token a cache
// line of its own (128 bytes: two lines on CPUs that fetch lines in pairs), so that the writes
// of whatever the allocator puts beside it (a queue, a stage's counters) do not evict the flag
// from the readers' caches. (A guard against false sharing; on this project's 2-core machine
// W1 did not measurably change with or without it.)
#[repr(align(128))]
struct TokenInner {
    /// Set once, never cleared.
    cancelled: AtomicBool,
    /// Held until cancellation; dropping it disconnects `signal`, which wakes every thread
    /// blocked in a `select` on `signal` (waits on channels that are not edges).
    trigger: Mutex<Option<Sender<Infallible>>>,
    /// The receiving end that never receives a message, only the disconnection.
    signal: Receiver<Infallible>,
    /// Threads asleep in [`CancelToken::sleep_until`] or parked on an edge (see
    /// [`CancelToken::watch`]), which `cancel` unparks.
    sleepers: Mutex<Sleepers>,
    /// Tokens cancelled together with this one (runs attached to it).
    children: Mutex<Vec<Weak<TokenInner>>>,
}

/// The threads asleep on a token, each in a slot of its own until it wakes.
///
/// A sleep parks its own thread (`thread::park_timeout`, one futex word per thread) rather
/// than waiting on the token's `signal`: a thousand workers asleep at once on one channel
/// queue on that channel's lock, and each sleep that ends searches the channel's list of
/// waiters. Here a sleep costs two short, constant-time turns of this lock.
#[derive(Debug, Default)]
struct Sleepers {
    /// The sleeping threads; `None` for a free slot.
    slots: Vec<Option<Thread>>,
    /// Free slots.
    free: Vec<usize>,
}

impl Sleepers {
    /// Puts `thread` in a slot; returns the slot.
    fn add(&mut self, thread: Thread) -> usize {
        if let Some(slot) = self.free.pop() {
            self.slots[slot] = Some(thread);
            slot
        } else {
            self.slots.push(Some(thread));
            self.slots.len() - 1
        }
    }

    /// Frees `slot`.
    fn remove(&mut self, slot: usize) {
        self.slots[slot] = None;
        self.free.push(slot);
    }
}

impl CancelToken {
    /// Creates a token that is not cancelled.
    pub fn new() -> Self {
        let (trigger, signal) = crossbeam_channel::bounded(0);
        CancelToken {
            inner: Arc::new(TokenInner {
                cancelled: AtomicBool::new(false),
                trigger: Mutex::new(Some(trigger)),
                signal,
                sleepers: Mutex::new(Sleepers::default()),
                children: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Cancels the token and every run attached to it. Calling it again does nothing.
    pub fn cancel(&self) {
        self.inner.cancel();
    }

    /// Whether [`cancel`](Self::cancel) has been called.
    #[inline]
    pub fn is_cancelled(&self) -> bool {
        self.inner.is_cancelled()
    }

    /// Sleeps for `duration`, or until the token is cancelled, whichever comes first.
    ///
    /// This is the "timer or done" wait of a simulated I/O step: cancellation cuts it short.
    ///
    /// # Errors
    ///
    /// Returns [`Cancelled`] when the token was cancelled before or during the sleep.
    pub fn sleep(&self, duration: Duration) -> Result<(), Cancelled> {
        let Some(deadline) = Instant::now().checked_add(duration) else {
            // A sleep past the end of representable time lasts until cancellation.
            let _ = self.inner.signal.recv();
            return Err(Cancelled);
        };
        self.sleep_until(deadline)
    }

    /// Sleeps until `deadline`, or until the token is cancelled, whichever comes first.
    ///
    /// # Errors
    ///
    /// Returns [`Cancelled`] when the token was cancelled before or during the sleep.
    pub fn sleep_until(&self, deadline: Instant) -> Result<(), Cancelled> {
        if self.is_cancelled() {
            return Err(Cancelled);
        }
        let _watch = self.watch();
        loop {
            if self.is_cancelled() {
                return Err(Cancelled);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(());
            }
            thread::park_timeout(deadline - now);
        }
    }

    /// Puts the current thread on the token's sleepers until the guard is dropped: a
    /// `cancel` meanwhile unparks it. A thread that parks (`thread::park`) re-checks
    /// [`is_cancelled`](Self::is_cancelled) after this and before each park.
    ///
    /// Ordering: the thread is in its slot before it reads the flag, and `cancel` sets the
    /// flag before it unparks the threads in the slots: either the thread sees the flag, or
    /// `cancel` unparks it (an unpark that comes before the park makes the park return at
    /// once).
    pub(crate) fn watch(&self) -> Watch<'_> {
        let slot = self.inner.sleepers.lock().add(thread::current());
        Watch {
            inner: &self.inner,
            slot,
        }
    }

    /// The channel that disconnects on cancellation, for `select`s inside the crate.
    pub(crate) fn signal(&self) -> &Receiver<Infallible> {
        &self.inner.signal
    }

    /// Makes `child` be cancelled whenever `self` is.
    pub(crate) fn attach(&self, child: &CancelToken) {
        {
            let mut children = self.inner.children.lock();
            // A long-lived token serves many runs: forget the ones that have ended.
            children.retain(|c| c.strong_count() > 0);
            children.push(Arc::downgrade(&child.inner));
        }
        // A cancel that raced with the push may have missed the new child.
        if self.is_cancelled() {
            child.cancel();
        }
    }
}

impl TokenInner {
    fn cancel(&self) {
        // Ordering: Release pairs with the Acquire in `is_cancelled`, so a thread that sees
        // the flag also sees what the canceller wrote before (the run's first error).
        self.cancelled.store(true, Ordering::Release);
        drop(self.trigger.lock().take());
        // Unparked after the lock is released: each woken sleeper takes it to leave its slot.
        let sleepers: Vec<Thread> = self
            .sleepers
            .lock()
            .slots
            .iter()
            .flatten()
            .cloned()
            .collect();
        for sleeper in sleepers {
            sleeper.unpark();
        }
        let children = std::mem::take(&mut *self.children.lock());
        for child in children.iter().filter_map(Weak::upgrade) {
            child.cancel();
        }
    }

    #[inline]
    fn is_cancelled(&self) -> bool {
        // Ordering: Acquire, see `cancel`.
        self.cancelled.load(Ordering::Acquire)
    }
}

impl Default for CancelToken {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for CancelToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CancelToken")
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}

/// A thread's place on a token's sleepers (see [`CancelToken::watch`]).
pub(crate) struct Watch<'t> {
    inner: &'t TokenInner,
    slot: usize,
}

impl Drop for Watch<'_> {
    fn drop(&mut self) {
        self.inner.sleepers.lock().remove(self.slot);
    }
}

/// The error of a wait cut short by cancellation.
///
/// It converts into [`BoxError`](crate::BoxError), so a processor can write
/// `cx.sleep(d)?`. An error returned by a processor after its run was cancelled is not
/// reported as a stage failure: the item counts as cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("run cancelled")]
pub struct Cancelled;

/// What a processor call knows about where it runs.
///
/// Every call of a [`Processor`](crate::Processor) receives one. It names the stage and the
/// worker, and gives access to the run's cancellation: [`is_cancelled`](Self::is_cancelled)
/// for a long computation to poll, [`sleep`](Self::sleep) for a wait that returns early when
/// the run is cancelled.
///
/// # Examples
///
/// ```
/// use pipework::{with_context, BoxError, Fifo, Pipeline};
///
/// let pipeline = Pipeline::new().stage(
///     "tag",
///     Fifo::new(with_context(|x: u32, cx| {
///         Ok::<_, BoxError>(format!("{}#{}:{x}", cx.stage_name(), cx.worker()))
///     })),
/// );
/// let (out, _report) = pipeline.collect(1..=2).unwrap();
/// assert_eq!(out, ["tag#0:1", "tag#0:2"]);
/// ```
pub struct Context<'r> {
    /// The stage the worker belongs to.
    stage: &'r StageId,
    /// The worker's index within its stage, from 0.
    worker: usize,
    /// The token of the worker's stage (cancelled with the run, or when the stage must stop
    /// early).
    token: &'r CancelToken,
    /// The run's own token.
    run: &'r CancelToken,
    /// When the run's time limit ends, if it has one.
    deadline: Option<Instant>,
}

impl<'r> Context<'r> {
    pub(crate) fn new(
        stage: &'r StageId,
        worker: usize,
        tokens: (&'r CancelToken, &'r CancelToken),
        deadline: Option<Instant>,
    ) -> Self {
        Context {
            stage,
            worker,
            token: tokens.0,
            run: tokens.1,
            deadline,
        }
    }

    /// When the run's time limit ([`Job::timeout`](crate::Job::timeout)) ends, if it has
    /// one. Pass it on to blocking calls of your own (a client's timeout): the run can only
    /// return once every processor call has returned, so a processor blocked in someone
    /// else's I/O bounds how fast a timed-out run comes back.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// The time left until the run's deadline (zero once it has passed), or `None` when the
    /// run has no time limit.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use pipework::{with_context, Fifo, Pipeline};
    ///
    /// /// A client call with a timeout of its own.
    /// fn call(x: u32, timeout: Duration) -> std::io::Result<(u32, bool)> {
    ///     Ok((x, timeout <= Duration::from_secs(5)))
    /// }
    ///
    /// let pipeline = Pipeline::new().stage(
    ///     "call",
    ///     Fifo::new(with_context(|x: u32, cx| {
    ///         // A call that must not outlive the run.
    ///         call(x, cx.remaining().unwrap_or(Duration::from_secs(30)))
    ///     })),
    /// );
    /// let (out, _) = pipeline.job().timeout(Duration::from_secs(5)).collect(0..1).unwrap();
    /// assert_eq!(out, [(0, true)]);
    /// ```
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// The token the worker's stage stops on.
    pub(crate) fn stage_token(&self) -> &'r CancelToken {
        self.token
    }

    /// The stage's position in the pipeline, from 0.
    pub fn stage_index(&self) -> usize {
        self.stage.index()
    }

    /// The stage's name, as given to [`Pipeline::stage`](crate::Pipeline::stage).
    pub fn stage_name(&self) -> &str {
        self.stage.name()
    }

    /// The worker's index within its stage, from 0. Workers of a dynamic pool get fresh
    /// indices as they are spawned; branches of a broadcast number their workers apart.
    pub fn worker(&self) -> usize {
        self.worker
    }

    /// Whether the run has been cancelled (by an error, a panic, a token or the deadline).
    #[inline]
    pub fn is_cancelled(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Sleeps for `duration` unless the run is cancelled first.
    ///
    /// # Errors
    ///
    /// Returns [`Cancelled`] when the run was cancelled before or during the sleep.
    pub fn sleep(&self, duration: Duration) -> Result<(), Cancelled> {
        self.token.sleep(duration)
    }

    /// The run's token: cancelled when the run aborts. Cancelling it aborts the run with
    /// [`ErrorKind::Cancelled`](crate::ErrorKind::Cancelled).
    pub fn cancel_token(&self) -> &CancelToken {
        self.run
    }
}

impl fmt::Debug for Context<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("stage", self.stage)
            .field("worker", &self.worker)
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}
