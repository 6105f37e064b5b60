//! Helpers shared by the integration tests: a watchdog, a drop ledger, a thread counter.
#![allow(dead_code)] // each test file uses its own subset

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A run must return within this: the patrol's limit for one run of a suite that runs many
/// (the audited cases, the bad-input cases).
pub const RUN_LIMIT: Duration = Duration::from_secs(5);

/// Aborts the whole test process if it is still alive `secs` seconds from now, unless the
/// returned guard has been dropped. Runs on a detached thread, so a deadlock anywhere in the
/// test (even inside a thread scope) turns into a failure instead of a hang.
#[must_use = "the watchdog is disarmed when the guard drops"]
pub fn watchdog(what: &str, secs: u64) -> Watchdog {
    let (tx, rx) = crossbeam_channel::bounded::<()>(0);
    let what = what.to_owned();
    std::thread::spawn(move || {
        if let Err(crossbeam_channel::RecvTimeoutError::Timeout) =
            rx.recv_timeout(Duration::from_secs(secs))
        {
            eprintln!("watchdog: `{what}` did not finish within {secs} s: aborting");
            std::process::abort();
        }
    });
    Watchdog { _disarm: tx }
}

/// Disarms its watchdog when dropped.
pub struct Watchdog {
    _disarm: crossbeam_channel::Sender<()>,
}

/// Runs `f` and fails if it takes longer than `limit` (it may have been fast enough to
/// return, but too slow to be "prompt").
pub fn within<R>(limit: Duration, what: &str, f: impl FnOnce() -> R) -> R {
    let _dog = watchdog(what, limit.as_secs().max(1) * 4);
    let started = Instant::now();
    let r = f();
    let took = started.elapsed();
    assert!(took <= limit, "{what} took {took:?}, more than {limit:?}");
    r
}

/// Counts drops per item id, so a test can check that every item was dropped exactly once.
#[derive(Debug)]
pub struct Ledger {
    drops: Vec<AtomicU32>,
}

impl Ledger {
    pub fn new(n: usize) -> Arc<Self> {
        Arc::new(Ledger {
            drops: (0..n).map(|_| AtomicU32::new(0)).collect(),
        })
    }

    /// Ids dropped a number of times other than once.
    pub fn not_dropped_once(&self) -> Vec<(usize, u32)> {
        self.drops
            .iter()
            .enumerate()
            .map(|(i, d)| (i, d.load(Ordering::SeqCst)))
            .filter(|&(_, d)| d != 1)
            .collect()
    }

    pub fn assert_each_dropped_once(&self) {
        let bad = self.not_dropped_once();
        assert!(
            bad.is_empty(),
            "items not dropped exactly once (id, drops): {bad:?}"
        );
    }
}

/// An item that records its drop in a ledger.
#[derive(Debug)]
pub struct Tracked {
    pub id: usize,
    ledger: Arc<Ledger>,
}

impl Tracked {
    pub fn new(id: usize, ledger: &Arc<Ledger>) -> Self {
        Tracked {
            id,
            ledger: Arc::clone(ledger),
        }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.ledger.drops[self.id].fetch_add(1, Ordering::SeqCst);
    }
}

/// `n` tracked items with ids 0..n.
pub fn tracked(n: usize, ledger: &Arc<Ledger>) -> Vec<Tracked> {
    (0..n).map(|i| Tracked::new(i, ledger)).collect()
}

/// Threads of this process, from /proc/self/task (Linux).
pub fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Waits up to a second for the thread count to drop to `baseline`; returns the last count.
pub fn settle_threads(baseline: usize) -> usize {
    let until = Instant::now() + Duration::from_secs(1);
    loop {
        let n = thread_count();
        if n <= baseline || Instant::now() > until {
            return n;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A counter of clones, for broadcast tests.
#[derive(Debug)]
pub struct CloneCounter {
    pub id: usize,
    clones: Arc<AtomicUsize>,
}

impl CloneCounter {
    pub fn new(id: usize, clones: &Arc<AtomicUsize>) -> Self {
        CloneCounter {
            id,
            clones: Arc::clone(clones),
        }
    }
}

impl Clone for CloneCounter {
    fn clone(&self) -> Self {
        self.clones.fetch_add(1, Ordering::SeqCst);
        CloneCounter {
            id: self.id,
            clones: Arc::clone(&self.clones),
        }
    }
}

/// Installs a panic hook that stays quiet about the panics tests inject on purpose
/// (messages starting with "injected"), and reports the others as usual.
pub fn quiet_injected_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let msg = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_default();
            if !msg.starts_with("injected") {
                default(info);
            }
        }));
    });
}

/// Serialises the tests of one file that look at the process's thread count: hold the
/// guard for the whole test. Poisoning is ignored (a failed test already reported).
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The thread count once it has stopped changing for 100 ms (at most 2 s of waiting), so
/// that a test thread of the harness that is just ending is not part of a baseline.
pub fn stable_thread_count() -> usize {
    let until = Instant::now() + Duration::from_secs(2);
    let mut last = thread_count();
    let mut since = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(10));
        let n = thread_count();
        if n != last {
            last = n;
            since = Instant::now();
        } else if since.elapsed() >= Duration::from_millis(100) || Instant::now() > until {
            return n;
        }
    }
}

/// A re-armable watchdog: one detached thread for the whole process that aborts it when a
/// case stays armed past its limit. Cheaper than [`watchdog`] for thousands of cases, and it
/// does not make the thread count move from case to case (start it before taking a
/// baseline).
pub struct Patrol {
    state: std::sync::Mutex<PatrolState>,
    wake: std::sync::Condvar,
}

struct PatrolState {
    /// What is being watched and when it must be over.
    armed: Option<(Instant, String)>,
}

/// Disarms the patrol when dropped.
#[must_use = "the patrol is disarmed when the guard drops"]
pub struct Armed {
    patrol: &'static Patrol,
}

/// The process's patrol, started on first use.
pub fn patrol() -> &'static Patrol {
    static PATROL: std::sync::OnceLock<&'static Patrol> = std::sync::OnceLock::new();
    PATROL.get_or_init(|| {
        let patrol: &'static Patrol = Box::leak(Box::new(Patrol {
            state: std::sync::Mutex::new(PatrolState { armed: None }),
            wake: std::sync::Condvar::new(),
        }));
        std::thread::Builder::new()
            .name("patrol".into())
            .spawn(move || patrol.watch())
            .expect("cannot start the patrol thread");
        patrol
    })
}

impl Patrol {
    /// Aborts the process unless the guard is dropped within `limit`.
    pub fn arm(&'static self, what: impl Into<String>, limit: Duration) -> Armed {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        assert!(state.armed.is_none(), "the patrol is already armed");
        state.armed = Some((Instant::now() + limit, what.into()));
        self.wake.notify_all();
        Armed { patrol: self }
    }

    fn watch(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let wait = match &state.armed {
                None => None,
                Some((deadline, what)) => {
                    let now = Instant::now();
                    if now >= *deadline {
                        eprintln!("patrol: `{what}` did not finish in time: aborting");
                        std::process::abort();
                    }
                    Some(*deadline - now)
                }
            };
            state = match wait {
                None => self.wake.wait(state).unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    self.wake
                        .wait_timeout(state, d)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
    }
}

impl Drop for Armed {
    fn drop(&mut self) {
        let mut state = self.patrol.state.lock().unwrap_or_else(|e| e.into_inner());
        state.armed = None;
        self.patrol.wake.notify_all();
    }
}
