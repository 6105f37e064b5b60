//! Threads lent between stages: an idle worker of a dynamic pool (or a thread whose worker
//! has ended) serves the next stage's burst instead of that stage starting OS threads, and
//! nothing about the run's outcome changes — every item, every error, every join.

mod common;

use std::collections::HashSet;
use std::sync::Mutex;
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use common::{watchdog, within};
use pipework::runner::{Next, StageHandle, StageRunner};
use pipework::{CancelToken, Context, Dynamic, ErrorKind, Pipeline, with_context};

/// Items in the wave tests.
const ITEMS: u64 = 60;

/// A step of the wave tests: every fifth item is slow, so that each stage's input stays
/// open (and its fast workers idle) while the slow items are still upstream.
fn step(x: u64) -> Duration {
    if x % 5 == 0 {
        Duration::from_millis(120)
    } else {
        Duration::from_millis(30)
    }
}

/// Three dynamic stages of cancellable sleeps, each noting the thread it ran on.
fn waves(threads: &Mutex<HashSet<ThreadId>>) -> Pipeline<'_, u64, u64> {
    let stage = move || {
        Dynamic::new(
            60,
            with_context(move |x: u64, cx: &Context| {
                threads.lock().unwrap().insert(std::thread::current().id());
                cx.sleep(step(x)).map(|()| x)
            }),
        )
    };
    Pipeline::new()
        .stage("a", stage())
        .stage("b", stage())
        .stage("c", stage())
}

#[test]
fn a_stage_burst_runs_on_threads_the_stage_before_no_longer_needs() {
    let _dog = watchdog("lending waves", 60);
    let threads = Mutex::new(HashSet::new());
    let p = waves(&threads);
    let (mut out, report) = p.collect(0..ITEMS).unwrap();
    out.sort_unstable();
    assert_eq!(out, (0..ITEMS).collect::<Vec<_>>());
    assert!(report.totals().is_balanced(), "{report:?}");
    let used = threads.lock().unwrap().len();
    let workers: usize = report.stages.iter().map(|s| s.workers_started).sum();
    eprintln!("{used} threads ran the items of {workers} workers");
    // All 60 items are in flight at once, each in one stage: about 60 threads do. Without
    // lending every stage's burst starts its own: about 60 + 48 + 48 threads ran items.
    assert!(
        used <= 100,
        "{used} threads ran the items of {workers} workers (at most 100 expected)"
    );
    assert!(
        workers > used,
        "{workers} workers on {used} threads: no thread was lent"
    );
}

#[test]
fn errors_and_panics_on_lent_threads_are_the_runs_first_error() {
    common::quiet_injected_panics();
    let _dog = watchdog("lending failures", 60);
    for panics in [false, true] {
        // The last stage fails at a fast item of the second wave, which runs on a thread
        // an earlier stage lent.
        let p = Pipeline::new()
            .stage("a", Dynamic::new(60, common::sleepy::<u64>(Duration::ZERO)))
            .stage(
                "b",
                Dynamic::new(
                    60,
                    with_context(|x: u64, cx: &Context| cx.sleep(step(x)).map(|()| x)),
                ),
            )
            .stage(
                "c",
                Dynamic::new(
                    60,
                    common::fallible(move |x: u64, cx: &Context| {
                        if x == 41 {
                            assert!(!panics, "injected at {x}");
                            return Err(format!("bad item {x}").into());
                        }
                        cx.sleep(step(x))?;
                        Ok(x)
                    }),
                ),
            );
        let err = within(Duration::from_secs(10), "a failing run", || {
            p.run(0..ITEMS, |_| Ok(())).unwrap_err()
        });
        match err.kind() {
            ErrorKind::Panic { message, .. } => {
                assert!(panics, "a panic where an error was injected: {err}");
                assert!(message.contains("injected at 41"), "{message}");
            }
            ErrorKind::Stage { .. } => {
                assert!(!panics, "an error where a panic was injected: {err}");
                let source = std::error::Error::source(&err).map(ToString::to_string);
                assert_eq!(source.as_deref(), Some("bad item 41"), "{err}");
            }
            other => panic!("unexpected error {other:?}"),
        }
        assert_eq!(
            err.stage().map(|s| s.name().to_owned()).as_deref(),
            Some("c")
        );
        let report = err.report().expect("a failed run has a report");
        assert!(report.totals().is_balanced(), "{report:?}");
    }
}

#[test]
fn cancelling_a_run_with_lent_threads_returns_promptly_and_balanced() {
    let _dog = watchdog("lending cancel", 60);
    let threads = Mutex::new(HashSet::new());
    let p = waves(&threads);
    for after in [10, 45, 100] {
        let token = CancelToken::new();
        let (result, latency) = std::thread::scope(|s| {
            let token = &token;
            let canceller = s.spawn(move || {
                std::thread::sleep(Duration::from_millis(after));
                let at = Instant::now();
                token.cancel();
                at
            });
            let result = p.job().cancel_token(token).run(0..ITEMS, |_| Ok(()));
            let returned = Instant::now();
            (result, returned - canceller.join().unwrap())
        });
        let err = result.expect_err("a cancelled run fails");
        assert!(matches!(err.kind(), ErrorKind::Cancelled), "{err}");
        assert!(err.report().unwrap().totals().is_balanced(), "{err:?}");
        assert!(
            latency < Duration::from_secs(2),
            "cancelled after {after} ms, returned {latency:?} later"
        );
    }
}

/// A user's runner that lends its two workers' threads whenever asked: it says it can do
/// without each, so another stage's burst can take both while its input goes on.
struct Reckless;

impl StageRunner<u64, u64> for Reckless {
    fn kind(&self) -> &'static str {
        "reckless"
    }

    fn start<'scope>(&'scope self, stage: StageHandle<'scope, '_, u64, u64>) {
        for _ in 0..2 {
            stage.spawn(|mut w| {
                w.lend_when_idle(|| true);
                let mut p = common::fallible(|x: u64, _: &Context| Ok(x));
                loop {
                    match w.next_within(Duration::from_secs(60)) {
                        Next::Item(x) => {
                            if !w.process(&mut p, x) {
                                return;
                            }
                        }
                        Next::Idle => {}
                        Next::End | Next::Lent => return,
                    }
                }
            });
        }
    }
}

#[test]
fn a_runner_that_lends_every_worker_fails_the_run_instead_of_hanging_it() {
    let _dog = watchdog("reckless lender", 60);
    // The source trickles, so the reckless stage waits between items; the next stage's
    // pool grows (every item sleeps) and takes the reckless workers' threads.
    let trickle = (0..400u64).inspect(|_| std::thread::sleep(Duration::from_millis(2)));
    let p = Pipeline::new().stage("reckless", Reckless).stage(
        "grows",
        Dynamic::new(100, common::sleepy::<u64>(Duration::from_millis(50))),
    );
    let err = within(
        Duration::from_secs(20),
        "a run left without readers",
        || p.run(trickle, |_| Ok(())).unwrap_err(),
    );
    assert!(matches!(err.kind(), ErrorKind::Runner { .. }), "{err}");
    assert_eq!(
        err.stage().map(|s| s.name().to_owned()).as_deref(),
        Some("reckless")
    );
    assert!(err.report().unwrap().totals().is_balanced(), "{err:?}");
}
