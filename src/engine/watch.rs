//! The run's watcher thread: periodic jobs of the run's stages (a dynamic pool's look for
//! input nobody is taking), on one thread for the whole run instead of one per stage.
//!
//! A small run's cost is mostly its threads (W11): four dynamic stages used to start four
//! watchers besides their workers.
//!
//! - **Lifetime.** The thread starts with the first job and ends when the list is empty; a
//!   job registered after that starts a new one. `running` is changed only under the
//!   list's lock, so exactly one thread serves a non-empty list.
//! - **Wake-ups.** A job runs when its period is up or when it was nudged. A nudge sets
//!   the job's flag, then takes the lock to ring the bell, so that it cannot fall between
//!   the thread's look at the flags and its wait. The thread also wakes every
//!   `LOOK_EVERY`, so that the job of a stage that is over (cancelled, or with no thread
//!   left of those it started: `StageState::threads_ended`) ends soon whatever its period,
//!   and a job cannot keep the run from ending.
//! - **Calls.** Jobs run outside the lock (a nudge never waits for a job), one at a time.
//!   Each call, and the drop of what a job captured, runs under `catch_unwind` in the
//!   wrapper the registering stage puts around it (`stage::Guarded`), so a panic is that
//!   stage's error and ends only its job: the thread itself never unwinds.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::state::StageState;
use super::threads::{SpawnRefused, Spawner};

/// The longest the thread sleeps while it has jobs: a cancelled stage's job ends within it.
const LOOK_EVERY: Duration = Duration::from_millis(5);

/// The run's jobs, and the thread that serves them.
pub(crate) struct Watches<'scope> {
    /// The jobs, and whether a thread serves them.
    list: Mutex<List<'scope>>,
    /// Rung by a nudge or a new job.
    bell: Condvar,
}

/// What the lock of [`Watches`] guards.
struct List<'scope> {
    /// The jobs not being run right now.
    jobs: Vec<Job<'scope>>,
    /// Whether a thread serves the list.
    running: bool,
}

/// A periodic job.
struct Job<'scope> {
    /// How often it runs.
    every: Duration,
    /// When it runs next, unless nudged before.
    due: Instant,
    /// Set by a nudge; cleared just before the call it asks for.
    nudged: Arc<AtomicBool>,
    /// Its stage: the job ends when the stage is cancelled or has no thread left.
    stage: &'scope StageState,
    /// The call: false when the job is done.
    f: Box<dyn FnMut() -> bool + Send + 'scope>,
}

impl Job<'_> {
    /// Whether the job is over: its stage was cancelled, or every thread of it ended.
    fn over(&self) -> bool {
        self.stage.intake.is_cancelled() || self.stage.threads_ended()
    }

    fn ready(&self, now: Instant) -> bool {
        // Ordering: Acquire, paired with the nudge's Release: what the nudger did before
        // is visible to the call.
        self.due <= now || self.nudged.load(Ordering::Acquire) || self.over()
    }

    /// Runs the job if it is ready; false when it is done.
    fn run_if_ready(&mut self, now: Instant) -> bool {
        if self.over() {
            return false;
        }
        if !self.ready(now) {
            return true;
        }
        self.nudged.store(false, Ordering::Release);
        let go_on = (self.f)();
        self.due = Instant::now() + self.every;
        go_on
    }
}

/// A handle on a job of the run's watcher thread: [`nudge`](Self::nudge) runs the job at
/// once, without waiting for its period. Returned by [`StageHandle::watch`].
///
/// [`StageHandle::watch`]: super::StageHandle::watch
#[derive(Clone)]
pub struct Watch<'scope> {
    /// The job's flag.
    nudged: Arc<AtomicBool>,
    /// The run's watcher.
    watches: Arc<Watches<'scope>>,
}

impl Watch<'_> {
    /// Asks for a call of the job as soon as the watcher thread is free. Calls asked for
    /// while one is pending make one call.
    pub fn nudge(&self) {
        // Ordering: Release, see `Job::ready`.
        self.nudged.store(true, Ordering::Release);
        // Under the lock: the thread looks at the flags and waits under it.
        let _list = self.watches.list.lock();
        self.watches.bell.notify_one();
    }
}

impl std::fmt::Debug for Watch<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch").finish_non_exhaustive()
    }
}

impl<'scope> Watches<'scope> {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Watches {
            list: Mutex::new(List {
                jobs: Vec::new(),
                running: false,
            }),
            bell: Condvar::new(),
        })
    }

    /// Adds a job of `stage` calling `f` every `every` until it returns false or the stage
    /// is over (see `Job::over`), starting the thread through `spawner` if none serves the
    /// list.
    pub(crate) fn add(
        self: &Arc<Self>,
        spawner: &Spawner<'scope, '_>,
        every: Duration,
        stage: &'scope StageState,
        f: Box<dyn FnMut() -> bool + Send + 'scope>,
    ) -> Result<Watch<'scope>, SpawnRefused> {
        let nudged = Arc::new(AtomicBool::new(false));
        let mut list = self.list.lock();
        if !list.running {
            let watches = Arc::clone(self);
            spawner.spawn("pipework-watch".to_owned(), move || watches.serve())?;
            list.running = true;
        }
        list.jobs.push(Job {
            every,
            due: Instant::now() + every,
            nudged: Arc::clone(&nudged),
            stage,
            f,
        });
        self.bell.notify_one();
        Ok(Watch {
            nudged,
            watches: Arc::clone(self),
        })
    }

    /// The thread's loop: runs the jobs that are ready, until there is none left.
    fn serve(&self) {
        let mut list = self.list.lock();
        loop {
            if list.jobs.is_empty() {
                list.running = false;
                return;
            }
            let now = Instant::now();
            if !list.jobs.iter().any(|job| job.ready(now)) {
                let next = list.jobs.iter().map(|job| job.due).min();
                let until = next.map_or(now, |due| due.min(now + LOOK_EVERY));
                self.bell.wait_until(&mut list, until);
                continue;
            }
            let mut jobs = std::mem::take(&mut list.jobs);
            // Dropped jobs (and the stage handles they hold) go outside the lock too.
            let done = parking_lot::MutexGuard::unlocked(&mut list, || {
                let mut done = Vec::new();
                let mut kept = Vec::with_capacity(jobs.len());
                for mut job in jobs.drain(..) {
                    if job.run_if_ready(now) {
                        kept.push(job);
                    } else {
                        done.push(job);
                    }
                }
                jobs = kept;
                done
            });
            // Jobs added meanwhile stay.
            list.jobs.append(&mut jobs);
            parking_lot::MutexGuard::unlocked(&mut list, || drop(done));
        }
    }
}
