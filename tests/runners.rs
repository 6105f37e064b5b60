//! Each runner delivers every item exactly once, with the ordering it promises.

// Pedantic lints this test allows, and why:
// - `unnecessary_wraps`: steps used as processors return `Result`, failing or not.
#![allow(clippy::unnecessary_wraps)]

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{CloneCounter, Ledger, Tracked, sleepy, tracked, watchdog};
use pipework::{
    BoxError, Broadcast, Context, Dynamic, Fifo, Fixed, Pipeline, filter_map, flat_map,
    runner::{StageHandle, StageRunner},
};

const ITEMS: usize = 10_000;

fn double(x: u64, _: &Context) -> Result<u64, BoxError> {
    Ok(x * 2)
}

#[test]
fn smoke() {
    let _dog = watchdog("smoke", 10);
    let p = Pipeline::new().stage("double", Fifo::new(common::fallible(double)));
    let (out, report) = p.collect(0..5u64).unwrap();
    assert_eq!(out, [0, 2, 4, 6, 8]);
    assert_eq!(report.totals().sunk, 5);
    assert!(report.totals().is_balanced());
}

#[test]
fn empty_pipeline_passes_items_through() {
    let _dog = watchdog("empty", 10);
    let (out, report) = Pipeline::new().collect(0..100u32).unwrap();
    assert_eq!(out, (0..100).collect::<Vec<_>>());
    assert_eq!(report.stages.len(), 0);
}

/// Runs `ITEMS` tracked items through a single stage built by `runner` and checks that the
/// sink saw every id exactly once and that every item was dropped exactly once.
fn delivers_every_item_once<R>(runner: R)
where
    R: StageRunner<Tracked, Tracked>,
{
    let _dog = watchdog("delivers_every_item_once", 20);
    let ledger = Ledger::new(ITEMS);
    let p = Pipeline::new().stage("stage", runner);
    let mut seen = vec![0u32; ITEMS];
    let report = p
        .run(tracked(ITEMS, &ledger), |t: Tracked| {
            seen[t.id] += 1;
            Ok(())
        })
        .unwrap();
    assert!(
        seen.iter().all(|&n| n == 1),
        "an id was not delivered exactly once"
    );
    ledger.assert_each_dropped_once();
    let t = report.totals();
    assert_eq!(
        (t.read, t.sunk, t.cancelled),
        (ITEMS as u64, ITEMS as u64, 0)
    );
    assert!(t.is_balanced());
}

fn pass(t: Tracked, _: &Context) -> Result<Tracked, BoxError> {
    Ok(t)
}

#[test]
fn fifo_delivers_every_item_once() {
    delivers_every_item_once(Fifo::new(common::fallible(pass)));
}

#[test]
fn fixed_pools_deliver_every_item_once() {
    for n in [1, 2, 4] {
        delivers_every_item_once(Fixed::new(n, common::fallible(pass)));
    }
}

#[test]
fn dynamic_pool_delivers_every_item_once() {
    delivers_every_item_once(Dynamic::new(8, common::fallible(pass)));
}

#[test]
fn fifo_preserves_order() {
    let _dog = watchdog("fifo_preserves_order", 20);
    // Varying per-item cost so that chunk sizes change during the run.
    let p = Pipeline::new()
        .stage(
            "a",
            Fifo::new(common::fallible(|x: u64, _: &Context| Ok(x + 1))),
        )
        .stage(
            "b",
            Fifo::new(common::fallible(|x: u64, cx: &Context| {
                if x % 1000 == 0 {
                    cx.sleep(Duration::from_millis(1))?;
                }
                Ok(x)
            })),
        )
        .stage(
            "c",
            Fifo::new(common::fallible(|x: u64, _: &Context| Ok(x - 1))),
        );
    let (out, _) = p.collect(0..50_000u64).unwrap();
    assert_eq!(out, (0..50_000).collect::<Vec<_>>());
}

#[test]
fn filter_and_one_to_many() {
    let _dog = watchdog("filter_and_one_to_many", 20);
    let p = Pipeline::new()
        .stage(
            "odd only",
            Fixed::new(2, filter_map(|x: u64| (x % 2 == 1).then_some(x))),
        )
        .stage("x3", Fifo::new(flat_map(|x: u64| [x, x, x])));
    let (mut out, report) = p.collect(0..1000u64).unwrap();
    out.sort_unstable();
    let expected: Vec<u64> = (0..1000)
        .filter(|x| x % 2 == 1)
        .flat_map(|x| [x, x, x])
        .collect();
    assert_eq!(out, expected);
    let t = report.totals();
    assert_eq!(
        (t.read, t.filtered, t.expanded, t.sunk),
        (1000, 500, 1000, 1500)
    );
    assert!(t.is_balanced());
    assert_eq!(report.stages[1].received, 500);
    assert_eq!(report.stages[1].emitted, 1500);
}

#[test]
fn broadcast_reaches_every_branch_with_branches_minus_one_clones() {
    let _dog = watchdog("broadcast", 20);
    for branches in 1..=3usize {
        let clones = Arc::new(AtomicUsize::new(0));
        let mut b = Broadcast::new();
        for branch in 0..branches {
            b = b.branch(Fixed::new(
                2,
                common::fallible(move |c: CloneCounter, _: &Context| Ok((branch, c.id))),
            ));
        }
        let p = Pipeline::new().stage("fan", b);
        let input: Vec<_> = (0..1000).map(|i| CloneCounter::new(i, &clones)).collect();
        let (out, report) = p.collect(input).unwrap();
        let set: HashSet<(usize, usize)> = out.iter().copied().collect();
        assert_eq!(out.len(), 1000 * branches);
        assert_eq!(
            set.len(),
            1000 * branches,
            "a (branch, item) pair came twice"
        );
        assert_eq!(clones.load(Ordering::SeqCst), 1000 * (branches - 1));
        assert_eq!(report.stages[0].copies, 1000 * (branches as u64 - 1));
        assert!(report.totals().is_balanced());
    }
}

#[test]
fn dynamic_pool_grows_under_load_and_never_exceeds_its_maximum() {
    let _dog = watchdog("dynamic grows", 20);
    let live = AtomicUsize::new(0);
    let peak = AtomicUsize::new(0);
    let p = Pipeline::new().stage(
        "io",
        Dynamic::new(
            16,
            common::fallible(|x: u32, cx: &Context| {
                let now = live.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                cx.sleep(Duration::from_millis(5))?;
                live.fetch_sub(1, Ordering::SeqCst);
                Ok(x)
            }),
        ),
    );
    let (out, report) = p.collect(0..400u32).unwrap();
    assert_eq!(out.len(), 400);
    let peak = peak.load(Ordering::SeqCst);
    assert!(peak > 4, "the pool did not grow under load: peak {peak}");
    assert!(peak <= 16, "more than 16 calls at once: {peak}");
    let reported = report.stages[0].peak_workers;
    assert!(
        reported <= 16 && reported >= peak,
        "reported peak {reported}, observed {peak}"
    );
}

#[test]
fn dynamic_pool_retires_idle_workers_and_grows_again() {
    let _dog = watchdog("dynamic retires", 20);
    let p = Pipeline::new().stage(
        "io",
        Dynamic::new(8, sleepy::<u32>(Duration::from_millis(20)))
            .idle_timeout(Duration::from_millis(10)),
    );
    // Two bursts separated by more than the idle timeout.
    let source = (0..16u32).inspect(|&i| {
        if i == 8 {
            std::thread::sleep(Duration::from_millis(150));
        }
    });
    let (out, report) = p.collect(source).unwrap();
    assert_eq!(out.len(), 16);
    let s = &report.stages[0];
    assert!(s.peak_workers <= 8);
    assert!(
        s.workers_started > s.peak_workers,
        "no worker retired and was replaced: started {}, peak {}",
        s.workers_started,
        s.peak_workers
    );
}

#[test]
fn fixed_pool_calls_init_once_per_worker() {
    let _dog = watchdog("init once", 20);
    let inits = AtomicUsize::new(0);
    let p = Pipeline::new().stage(
        "w",
        Fixed::with_init(3, |cx: &Context| {
            inits.fetch_add(1, Ordering::SeqCst);
            let me = cx.worker();
            Ok(common::fallible(
                move |x: u32, _: &Context| -> Result<(usize, u32), BoxError> { Ok((me, x)) },
            ))
        }),
    );
    for _ in 0..2 {
        let (out, report) = p.collect(0..3000u32).unwrap();
        assert_eq!(out.len(), 3000);
        assert_eq!(report.stages[0].workers_started, 3);
    }
    assert_eq!(inits.load(Ordering::SeqCst), 6, "3 workers × 2 runs");
}

#[test]
fn fixed_pool_runs_exactly_n_workers() {
    let _dog = watchdog("exactly n", 20);
    let workers = std::sync::Mutex::new(HashSet::new());
    let p = Pipeline::new().stage(
        "w",
        Fixed::new(
            4,
            common::fallible(|x: u32, cx: &Context| {
                workers.lock().unwrap().insert(cx.worker());
                cx.sleep(Duration::from_micros(200))?;
                Ok(x)
            }),
        ),
    );
    let (_, report) = p.collect(0..2000u32).unwrap();
    assert_eq!(report.stages[0].workers_started, 4);
    assert!(workers.lock().unwrap().iter().all(|&w| w < 4));
}

/// A user-written runner: every item goes through a processor twice.
struct TwiceEach<F>(F);

impl<F> StageRunner<u64, u64> for TwiceEach<F>
where
    F: Fn(u64) -> u64 + Send + Sync,
{
    fn kind(&self) -> &'static str {
        "twice-each"
    }

    fn start<'scope>(&'scope self, stage: StageHandle<'scope, '_, u64, u64>) {
        stage.spawn(move |mut w| {
            let mut p = common::fallible(|x: u64, _: &Context| -> Result<u64, BoxError> {
                Ok((self.0)((self.0)(x)))
            });
            w.run(&mut p);
        });
    }
}

#[test]
fn custom_runner_plugs_in() {
    let _dog = watchdog("custom runner", 10);
    let p = Pipeline::new().stage("inc twice", TwiceEach(|x| x + 1));
    let (out, report) = p.collect(0..10u64).unwrap();
    assert_eq!(out, (2..12).collect::<Vec<_>>());
    assert_eq!(report.stages[0].kind, "twice-each");
}

#[test]
fn worker_and_stage_names_reach_the_context() {
    let _dog = watchdog("names", 10);
    let p = Pipeline::new()
        .stage(
            "first",
            Fifo::new(common::fallible(|x: u32, _: &Context| Ok(x))),
        )
        .stage(
            "second",
            Fifo::new(common::fallible(|_: u32, cx: &Context| {
                let name = std::thread::current().name().map(str::to_owned);
                Ok((cx.stage_index(), cx.stage_name().to_owned(), name))
            })),
        );
    let (out, _) = p.collect([7]).unwrap();
    assert_eq!(out, [(1, "second".to_owned(), Some("second#0".to_owned()))]);
}

/// A user-written runner with a loop of its own, as the docs of
/// `Worker::process_buffered` describe: `next_within` for the first item of a chunk,
/// `process` for it, `process_buffered` for the rest. Each worker records, after every
/// `process_buffered`, what it left buffered, and the items it processed.
struct OwnLoop<F> {
    f: F,
    workers: usize,
    left_buffered: Arc<AtomicUsize>,
    next_calls: Arc<AtomicUsize>,
}

impl<F> StageRunner<u64, u64> for OwnLoop<F>
where
    F: Fn(u64) -> u64 + Send + Sync,
{
    fn kind(&self) -> &'static str {
        "own-loop"
    }

    fn start<'scope>(&'scope self, stage: StageHandle<'scope, '_, u64, u64>) {
        for _ in 0..self.workers {
            stage.spawn(move |mut w| {
                let mut p = pipework::map(|x: u64| (self.f)(x));
                loop {
                    self.next_calls.fetch_add(1, Ordering::Relaxed);
                    let item = match w.next_within(Duration::from_millis(5)) {
                        pipework::runner::Next::Item(item) => item,
                        pipework::runner::Next::Idle => continue,
                        _ => break,
                    };
                    if !w.process(&mut p, item) {
                        break;
                    }
                    let go_on = w.process_buffered(&mut p);
                    self.left_buffered
                        .fetch_add(w.buffered(), Ordering::Relaxed);
                    if !go_on {
                        break;
                    }
                }
            });
        }
    }
}

#[test]
fn process_buffered_runs_the_rest_of_the_chunk_and_counts_it() {
    let _dog = watchdog("process_buffered", 20);
    common::quiet_injected_panics();
    for workers in [1, 3] {
        let runner = OwnLoop {
            f: |x| x * 3,
            workers,
            left_buffered: Arc::new(AtomicUsize::new(0)),
            next_calls: Arc::new(AtomicUsize::new(0)),
        };
        let (left, calls) = (
            Arc::clone(&runner.left_buffered),
            Arc::clone(&runner.next_calls),
        );
        let p = Pipeline::new().stage("own", runner);
        let (mut out, report) = p.collect(0..50_000u64).unwrap();
        out.sort_unstable();
        assert_eq!(out, (0..50_000).map(|x| x * 3).collect::<Vec<_>>());
        assert!(report.totals().is_balanced(), "{report}");
        assert_eq!(left.load(Ordering::Relaxed), 0, "items left in the chunk");
        // Chunks grow to hundreds of items: a loop that took items one by one would call
        // `next_within` once per item.
        let calls = calls.load(Ordering::Relaxed);
        assert!(
            calls < 5_000,
            "{calls} calls of next_within for 50,000 items"
        );
    }
    // A panic in the middle of a chunk: the items before it were processed, the
    // panicking one failed, the rest were cancelled; nothing is lost.
    let runner = OwnLoop {
        f: |x| {
            assert!(x != 30_000, "injected panic at 30000");
            x
        },
        workers: 1,
        left_buffered: Arc::new(AtomicUsize::new(0)),
        next_calls: Arc::new(AtomicUsize::new(0)),
    };
    let p = Pipeline::new().stage("own", runner);
    let mut sunk = 0u64;
    let err = p
        .run(0..50_000u64, |_| {
            sunk += 1;
            Ok(())
        })
        .unwrap_err();
    assert!(err.to_string().contains("injected panic"), "{err}");
    let report = err.report().unwrap();
    let stage = &report.stages[0];
    assert!(report.totals().is_balanced(), "{report}");
    assert_eq!(stage.failed, 1, "{report}");
    assert_eq!(
        stage.emitted, 30_000,
        "every item before the panic: {report}"
    );
    assert_eq!(stage.filtered, 0, "{report}");
}

/// A user-written runner that catches a processor's panic around `run` and goes on with
/// the same worker.
struct CatchAndGoOn;

impl StageRunner<u64, u64> for CatchAndGoOn {
    fn kind(&self) -> &'static str {
        "catch-and-go-on"
    }

    fn start<'scope>(&'scope self, stage: StageHandle<'scope, '_, u64, u64>) {
        stage.spawn(move |mut w| {
            let mut p = pipework::map(|x: u64| {
                assert!(x != 500, "injected panic at 500");
                x
            });
            loop {
                let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| w.run(&mut p)));
                if ran.is_ok() {
                    break;
                }
            }
        });
    }
}

#[test]
fn a_runner_that_catches_a_processor_panic_keeps_exact_counts() {
    let _dog = watchdog("caught panic", 20);
    common::quiet_injected_panics();
    let p = Pipeline::new().stage("catch", CatchAndGoOn);
    let (out, report) = p.collect(0..1_000u64).unwrap();
    assert_eq!(out, (0..1_000).filter(|&x| x != 500).collect::<Vec<_>>());
    let stage = &report.stages[0];
    assert!(report.totals().is_balanced(), "{report}");
    assert_eq!(stage.emitted, 999, "{report}");
    // The item whose call panicked: the runner took it and processed nothing for it.
    assert_eq!(stage.filtered, 1, "{report}");
    assert_eq!(stage.failed, 0, "{report}");
}
