//! Helpers shared by the integration tests: the watchdog, how a test begins (a watchdog,
//! quiet injected panics, the file's serial lock, a thread-count baseline), thread counting,
//! items that count their drops and clones, and a sleepy processor.
//!
//! Every test file declares `mod common;`. The fault suites' audit harness is a separate
//! module tree, `tests/audit/`, that only the files using it declare (`mod audit;`).
#![allow(dead_code)] // each test file uses its own subset

mod items;
mod watchdog;

use std::time::{Duration, Instant};

use pipework::processor::WithContext;
use pipework::{BoxError, Context, Processor, with_context};

// Each test file uses its own subset.
#[allow(unused_imports)]
pub use {
    items::{CloneCounter, Ledger, Tracked, tracked},
    watchdog::{Watchdog, watchdog},
};

/// A run must return within this: the watchdog's limit ([`Watchdog::arm`]) for one run of a
/// suite that runs many (the audited cases, the bad-input cases, the million items).
pub const RUN_LIMIT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------
// How a test begins
// ---------------------------------------------------------------------------------------

// A plain test begins with its watchdog: `let _dog = watchdog("what", 10);` (seconds).

/// The start of a test that injects panics (messages starting with "injected"): quiets
/// them (see [`quiet_injected_panics`]), then arms the test's [`watchdog`] for `secs`
/// seconds. `let _dog = watchdog_quiet("what", 20);`.
pub fn watchdog_quiet(what: impl Into<String>, secs: u64) -> Watchdog {
    quiet_injected_panics();
    watchdog(what, secs)
}

/// The start of a test that compares the process's thread count with a baseline: quiets
/// injected panics, waits for the file's [`serial`] lock, then (so that the wait does not
/// count) arms the watchdog for `secs` seconds, and takes the baseline once the thread
/// count is stable (the watchdog's thread is part of it). Hold the guard to the end:
/// `let t = serial_test("what", 60);` and compare with `t.baseline`.
pub fn serial_test(what: impl Into<String>, secs: u64) -> Serial {
    quiet_injected_panics();
    let lock = serial();
    let dog = watchdog(what, secs);
    Serial {
        baseline: stable_thread_count(),
        _dog: dog,
        _lock: lock,
    }
}

/// What a serialised test holds: its watchdog and the file's lock (released in that order),
/// and the thread count it started with.
#[must_use = "the watchdog is disarmed and the lock released when the guard drops"]
pub struct Serial {
    /// The process's thread count when the test began.
    pub baseline: usize,
    _dog: Watchdog,
    _lock: std::sync::MutexGuard<'static, ()>,
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
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Runs `f` and fails if it takes longer than `limit` (it may have been fast enough to
/// return, but too slow to be "prompt"), under a watchdog of four times `limit` (at least
/// 4 s).
pub fn within<R>(limit: Duration, what: &str, f: impl FnOnce() -> R) -> R {
    let _dog = watchdog(what, limit.as_secs().max(1) * 4);
    let started = Instant::now();
    let r = f();
    let took = started.elapsed();
    assert!(took <= limit, "{what} took {took:?}, more than {limit:?}");
    r
}

// ---------------------------------------------------------------------------------------
// Threads
// ---------------------------------------------------------------------------------------

/// Threads of this process, from /proc/self/task (Linux).
pub fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, std::iter::Iterator::count)
}

/// A source that never ends on its own: only cancellation stops it.
pub fn endless() -> impl pipework::IntoSource<u64> {
    pipework::source::custom(Endless(0))
}

/// The counter behind [`endless`].
struct Endless(u64);

impl pipework::Source<u64> for Endless {
    fn next(&mut self, token: &pipework::CancelToken) -> Option<Result<u64, pipework::BoxError>> {
        if token.is_cancelled() {
            return None;
        }
        self.0 += 1;
        Some(Ok(self.0))
    }
}

/// The names of this process's threads that start with `prefix`, sorted (Linux: from
/// /proc/self/task, as the kernel keeps them, at most 15 bytes).
pub fn thread_names(prefix: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir("/proc/self/task")
        .expect("the process's threads are listed in /proc")
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|name| name.trim_end().to_owned())
        .filter(|name| name.starts_with(prefix))
        .collect();
    names.sort();
    names
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

// ---------------------------------------------------------------------------------------
// Stages
// ---------------------------------------------------------------------------------------

/// A processor from a closure that takes the item and the [`Context`] and returns
/// `Result<_, BoxError>`: [`with_context`] with the error type fixed, so that closures ending
/// in `Ok(…)` need no annotation (the form the tests are written in).
pub fn fallible<In, Out, F>(f: F) -> WithContext<F>
where
    F: FnMut(In, &Context<'_>) -> Result<Out, BoxError> + Send,
{
    with_context(f)
}

/// A processor that sleeps `d`, cut short when the run is cancelled (its error is then the
/// one [`Context::sleep`] returns), and passes its item on: `Dynamic::new(8, sleepy(d))`.
pub fn sleepy<T: Send>(d: Duration) -> impl Processor<T, T> + Clone + Sync {
    with_context(move |x: T, cx| cx.sleep(d).map(|()| x))
}
