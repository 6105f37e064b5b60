//! The watchdog: the one mechanism by which a hang anywhere in a test process becomes a
//! failure.
//!
//! [`Watchdog::arm`] arms a deadline and returns a guard that disarms it when dropped;
//! [`watchdog`] does so in seconds, for a whole test. All the deadlines of the process are
//! watched by one detached thread, started on first use and never ended: when any deadline
//! passes while it is still armed, that thread writes what hung (and what else was armed)
//! straight to the process's stderr, past the test harness's output capture, and aborts the
//! process. A deadlock anywhere, even inside a thread scope or in the thread that armed it,
//! therefore ends the process within the deadline plus a few milliseconds.
//!
//! Any number of deadlines may be armed at once, from any threads, and nested: a whole test
//! under a long one, each of its runs under a short one. Arming starts no thread after the
//! first, so the process's thread count does not move from one armed case to the next (arm
//! something before taking a thread-count baseline, as [`super::serial_test`] does).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write;
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// A test's watchdog: aborts the process, naming `what`, unless the returned guard is
/// dropped within `secs` seconds. Hold it for the whole test: `let _dog = watchdog("x", 10);`.
#[must_use = "the watchdog is disarmed when the guard drops"]
pub fn watchdog(what: impl Into<String>, secs: u64) -> Watchdog {
    Watchdog::arm(what, Duration::from_secs(secs))
}

/// An armed deadline; disarmed when dropped.
#[derive(Debug)]
#[must_use = "the watchdog is disarmed when the guard drops"]
pub struct Watchdog {
    id: u64,
}

impl Watchdog {
    /// Aborts the process, naming `what`, unless the returned guard is dropped within
    /// `limit`. For one run of many:
    /// `let _dog = Watchdog::arm(format!("{case:?}"), RUN_LIMIT);`.
    pub fn arm(what: impl Into<String>, limit: Duration) -> Watchdog {
        let watch = Watch::get();
        let mut state = watch.lock();
        let id = state.next;
        state.next += 1;
        let deadline = Instant::now().checked_add(limit);
        state.armed.insert(
            id,
            Armed {
                what: what.into(),
                limit,
                deadline,
            },
        );
        watch.wake.notify_all();
        Watchdog { id }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        let watch = Watch::get();
        watch.lock().armed.remove(&self.id);
        watch.wake.notify_all();
    }
}

/// The process's watch: the armed deadlines and the thread that watches them.
struct Watch {
    state: Mutex<State>,
    wake: Condvar,
}

struct State {
    /// The id of the next deadline armed.
    next: u64,
    /// The deadlines armed, by id (in the order they were armed).
    armed: BTreeMap<u64, Armed>,
}

/// One armed deadline.
struct Armed {
    what: String,
    limit: Duration,
    /// `None`: too far away to be represented, never.
    deadline: Option<Instant>,
}

impl Watch {
    /// The process's watch; its thread starts on first use.
    fn get() -> &'static Watch {
        static WATCH: OnceLock<&'static Watch> = OnceLock::new();
        WATCH.get_or_init(|| {
            let watch: &'static Watch = Box::leak(Box::new(Watch {
                state: Mutex::new(State {
                    next: 0,
                    armed: BTreeMap::new(),
                }),
                wake: Condvar::new(),
            }));
            std::thread::Builder::new()
                .name("watchdog".into())
                .spawn(move || watch.watch())
                .expect("cannot start the watchdog thread");
            watch
        })
    }

    /// Poisoning is ignored: a test that panicked while arming or disarming has reported.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Sleeps until the earliest deadline, or a change; aborts once one has passed.
    fn watch(&self) -> ! {
        let mut state = self.lock();
        loop {
            let earliest = state
                .armed
                .iter()
                .filter_map(|(id, a)| Some((a.deadline?, *id)))
                .min();
            let wait = match earliest {
                None => None,
                Some((deadline, id)) => {
                    let now = Instant::now();
                    if now >= deadline {
                        abort(&state, id);
                    }
                    Some(deadline - now)
                }
            };
            state = match wait {
                None => self
                    .wake
                    .wait(state)
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
                Some(d) => {
                    self.wake
                        .wait_timeout(state, d)
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .0
                }
            };
        }
    }
}

/// Reports the deadline `id` that passed, and the others armed, and aborts the process.
fn abort(state: &State, id: u64) -> ! {
    let hung = &state.armed[&id];
    let mut message = format!(
        "watchdog: `{}` did not finish within {:?}: aborting\n",
        hung.what, hung.limit
    );
    for (other, a) in &state.armed {
        if *other != id {
            let _ = writeln!(
                message,
                "watchdog: also armed: `{}` ({:?})",
                a.what, a.limit
            );
        }
    }
    // Not `eprintln!`: the harness captures that for the test whose thread started us, and
    // its buffer is lost with the process.
    let _ = std::io::stderr().lock().write_all(message.as_bytes());
    std::process::abort();
}
