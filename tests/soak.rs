//! The soak: the random-fault model (`audit::generate`) for a number of minutes, on 16
//! threads at once sharing one pipeline definition, every run audited item by item (see
//! `audit`) under the watchdog.
//!
//! ```text
//! PIPEWORK_SOAK=30 cargo test --release --test soak -- --nocapture
//! ```
//!
//! `PIPEWORK_SOAK` is the number of minutes; without it the test is a short smoke run of
//! [`SMOKE`] (as part of `cargo test`). `PIPEWORK_SOAK_THREADS` sets the threads (default
//! 16), `PIPEWORK_SOAK_SEED` the seed (default: from the clock; printed). The soak
//! goes through definitions one after another: a random definition (stages, runners,
//! options, names, sometimes a failing init closure or runner `start`), which the threads
//! run for [`ROUND`] with random runs of their own (items, faults of items, user values'
//! `Drop`, progress, time limits), then the next. It prints its figures every minute and at
//! the end: runs, aborted runs, hangs (a run that does not return within [`HANG`] is a hang:
//! the watchdog aborts the process, naming it), imbalances (runs whose audit failed: an
//! item not accounted for, a report that does not balance, a wrong first error, a count of
//! errors that does not add up), and threads left after each definition. It fails unless
//! the last two are 0.

// Pedantic lints this test allows, and why:
// - `cast_possible_truncation`: small counts and indices (thousands) fit the narrower type.
// - `manual_let_else`: the audit's early `return Ok` reads best as a two-arm match.
// - `match_same_arms`: the audit gives each fault kind its own arm, empty or not.
// - `too_many_lines`: a long function is one scenario, read top to bottom.
#![allow(
    clippy::cast_possible_truncation,
    clippy::manual_let_else,
    clippy::match_same_arms,
    clippy::too_many_lines
)]

mod audit;
mod common;

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use audit::generate::{definition, run_of};
use audit::{Case, try_run_within};
use common::{quiet_injected_panics, settle_threads, stable_thread_count, watchdog};
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config, RngAlgorithm, RngSeed, TestRunner};

/// The length of the soak when `PIPEWORK_SOAK` is not set.
const SMOKE: Duration = Duration::from_secs(2);
/// How long the threads run one definition before the next.
const ROUND: Duration = Duration::from_secs(10);
/// A run that takes longer is a hang (16 runs share the machine's cores).
const HANG: Duration = Duration::from_secs(60);
/// Imbalances printed in full; the others are counted.
const SHOWN: u64 = 10;

/// A generator of values of `strategy` from `seed`.
fn generator(seed: u64) -> TestRunner {
    TestRunner::new(Config {
        rng_algorithm: RngAlgorithm::ChaCha,
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: None,
        ..Config::default()
    })
}

fn draw<S: Strategy>(strategy: &S, runner: &mut TestRunner) -> S::Value {
    strategy.new_tree(runner).expect("a value").current()
}

fn env<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// The soak's figures.
#[derive(Default)]
struct Figures {
    definitions: AtomicU64,
    runs: AtomicU64,
    aborted: AtomicU64,
    imbalances: AtomicU64,
    units: AtomicU64,
    drops_fired: AtomicU64,
    threads_left: AtomicU64,
}

impl Figures {
    fn line(&self, elapsed: Duration) -> String {
        let get = |a: &AtomicU64| a.load(Ordering::SeqCst);
        format!(
            "soak after {:.1} min: {} definitions, {} runs, {} aborted runs, 0 hangs, {} \
             imbalances, {} threads left, {} units, {} items' Drop panics",
            elapsed.as_secs_f64() / 60.0,
            get(&self.definitions),
            get(&self.runs),
            get(&self.aborted),
            get(&self.imbalances),
            get(&self.threads_left),
            get(&self.units),
            get(&self.drops_fired),
        )
    }
}

#[test]
fn soak() {
    let length = env::<f64>("PIPEWORK_SOAK").map_or(SMOKE, |m| Duration::from_secs_f64(m * 60.0));
    let minutes = length.as_secs_f64() / 60.0;
    let threads: usize = env("PIPEWORK_SOAK_THREADS").unwrap_or(16);
    let seed: u64 = env("PIPEWORK_SOAK_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    });
    quiet_injected_panics();
    // The whole soak, with room for the last round to finish.
    let _dog = watchdog(
        "the soak",
        length.as_secs() + ROUND.as_secs() + 2 * HANG.as_secs(),
    );
    let baseline = stable_thread_count();
    eprintln!(
        "soak: {minutes:.2} min on {threads} threads, seed {seed}, a run is a hang after {HANG:?}"
    );
    let started = Instant::now();
    let figures = Figures::default();
    let shown = Mutex::new(Vec::new());
    let mut definitions = generator(seed);
    let mut last_print = Instant::now();
    let mut round = 0u64;
    while started.elapsed() < length {
        let def: Case = draw(&definition(), &mut definitions);
        let pipeline = def.pipeline();
        let until = (Instant::now() + ROUND).min(started + length);
        std::thread::scope(|scope| {
            for t in 0..threads {
                let (def, pipeline, figures, shown) = (&def, &pipeline, &figures, &shown);
                std::thread::Builder::new()
                    .name(format!("soak-{t}"))
                    .spawn_scoped(scope, move || {
                        let mut runs = generator(seed ^ (round << 20) ^ (t as u64 + 1));
                        let strategy = run_of(def.clone());
                        while Instant::now() < until {
                            let case = draw(&strategy, &mut runs);
                            let (result, audited) = try_run_within(pipeline, &case, HANG);
                            figures.runs.fetch_add(1, Ordering::SeqCst);
                            figures
                                .aborted
                                .fetch_add(u64::from(result.is_err()), Ordering::SeqCst);
                            match audited {
                                Ok(audit) => {
                                    let units = audit.outcomes.values().sum::<u64>();
                                    figures.units.fetch_add(units, Ordering::SeqCst);
                                    figures
                                        .drops_fired
                                        .fetch_add(audit.drops_fired, Ordering::SeqCst);
                                }
                                Err(problem) => {
                                    let n = figures.imbalances.fetch_add(1, Ordering::SeqCst);
                                    if n < SHOWN {
                                        let what = format!(
                                            "{problem}\n  case: {case:?}\n  result: {:?}",
                                            result
                                                .as_ref()
                                                .map(|_| ())
                                                .map_err(|e| format!("{e:#}"))
                                        );
                                        eprintln!("soak: imbalance: {what}");
                                        shown.lock().unwrap().push(what);
                                    }
                                }
                            }
                        }
                    })
                    .expect("a soak thread");
            }
        });
        figures.definitions.fetch_add(1, Ordering::SeqCst);
        let left = settle_threads(baseline);
        if left > baseline {
            figures
                .threads_left
                .fetch_add((left - baseline) as u64, Ordering::SeqCst);
            eprintln!("soak: {} threads left after {def:?}", left - baseline);
        }
        round += 1;
        if last_print.elapsed() >= Duration::from_secs(60) {
            eprintln!("{}", figures.line(started.elapsed()));
            last_print = Instant::now();
        }
    }
    let line = figures.line(started.elapsed());
    eprintln!("{line}");
    println!("{line}");
    assert_eq!(
        figures.imbalances.load(Ordering::SeqCst),
        0,
        "imbalances: {:#?}",
        shown.lock().unwrap()
    );
    assert_eq!(
        figures.threads_left.load(Ordering::SeqCst),
        0,
        "threads left"
    );
}
