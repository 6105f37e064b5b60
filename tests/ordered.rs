//! The ordered pool: input order kept, a bounded reorder window, every guarantee intact.

// Pedantic lints this test allows, and why:
// - `items_after_statements`: helpers sit next to the one scenario that uses them.
#![allow(clippy::items_after_statements)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{Ledger, Tracked, sleepy, tracked, watchdog, watchdog_quiet, within};
use pipework::{
    BoxError, Context, ErrorKind, Failure, Ordered, Pipeline, StageOptions, flat_map,
    processor::from_fn,
};

#[test]
fn smoke() {
    let _dog = watchdog("smoke", 10);
    let p = Pipeline::new().stage(
        "sq",
        Ordered::new(3, common::fallible(|x: u64, _: &Context| Ok(x * x))),
    );
    let (out, _) = p.collect(0..1000u64).unwrap();
    assert_eq!(out, (0..1000u64).map(|x| x * x).collect::<Vec<_>>());
}

#[test]
fn keeps_input_order_with_uneven_work() {
    let _dog = watchdog("uneven", 30);
    let p = Pipeline::new()
        .stage(
            "uneven",
            Ordered::new(
                4,
                common::fallible(|x: u64, cx: &Context| {
                    if x % 97 == 0 {
                        cx.sleep(Duration::from_millis(2))?;
                    }
                    Ok(x)
                }),
            ),
        )
        .stage(
            "filter and expand",
            Ordered::new(
                2,
                flat_map(|x: u64| if x % 3 == 0 { vec![] } else { vec![x, x] }),
            ),
        );
    let (out, report) = p.collect(0..20_000u64).unwrap();
    let expected: Vec<u64> = (0..20_000u64)
        .filter(|x| x % 3 != 0)
        .flat_map(|x| [x, x])
        .collect();
    assert_eq!(out, expected);
    assert!(report.totals().is_balanced());
}

#[test]
fn a_slow_item_holds_back_at_most_the_window() {
    let _dog = watchdog("window", 30);
    const WORKERS: usize = 4;
    const WINDOW: usize = 2;
    let started_while_slow = AtomicUsize::new(0);
    let slow_running = std::sync::atomic::AtomicBool::new(false);
    let p = Pipeline::new().max_chunk(1).stage(
        "one slow",
        Ordered::new(
            WORKERS,
            common::fallible(|x: u64, cx: &Context| {
                if x == 0 {
                    slow_running.store(true, Ordering::SeqCst);
                    cx.sleep(Duration::from_millis(300))?;
                    slow_running.store(false, Ordering::SeqCst);
                } else if slow_running.load(Ordering::SeqCst) {
                    started_while_slow.fetch_add(1, Ordering::SeqCst);
                }
                Ok(x)
            }),
        )
        .window(WINDOW),
    );
    let (out, _) = p.collect(0..1000u64).unwrap();
    assert_eq!(out, (0..1000).collect::<Vec<_>>());
    let ahead = started_while_slow.load(Ordering::SeqCst);
    // The documented bound: workers × (window + 2) chunks of one item.
    assert!(
        ahead <= WORKERS * (WINDOW + 2),
        "{ahead} items processed past the slow one"
    );
    assert!(
        ahead >= 1,
        "the other workers did not go on while one was slow"
    );
}

#[test]
fn every_item_dropped_once_on_error_and_panic() {
    let _dog = watchdog_quiet("ordered faults", 30);
    for panic in [false, true] {
        let ledger = Ledger::new(5000);
        let p = Pipeline::new().stage(
            "fails at 2500",
            Ordered::new(
                3,
                common::fallible(
                    move |t: Tracked, _: &Context| -> Result<Tracked, BoxError> {
                        if t.id == 2500 {
                            assert!(!panic, "injected");
                            return Err("injected error".into());
                        }
                        Ok(t)
                    },
                ),
            ),
        );
        let err = within(Duration::from_secs(5), "ordered fault", || {
            p.run(tracked(5000, &ledger), |_| Ok(())).unwrap_err()
        });
        assert_eq!(err.stage().unwrap().name(), "fails at 2500");
        assert!(matches!(
            (panic, err.kind()),
            (true, ErrorKind::Panic { .. }) | (false, ErrorKind::Stage { .. })
        ));
        ledger.assert_each_dropped_once();
        let t = err.report().unwrap().totals();
        assert_eq!(t.failed, 1);
        assert!(t.is_balanced(), "{t:?}");
    }
}

#[derive(Debug, Clone)]
struct Job(u32);

#[test]
fn routes_failures_and_keeps_order_of_the_rest() {
    let _dog = watchdog("ordered routing", 30);
    let mut failed = Vec::new();
    let p = Pipeline::new().stage_with(
        "odd fails",
        Ordered::new(
            3,
            from_fn(|j: Job, _, out| {
                if j.0 % 2 == 1 {
                    return Err("odd".into());
                }
                if j.0 % 4 == 0 {
                    out.emit(j.0);
                }
                Ok(())
            }),
        ),
        StageOptions::new().route_failures_to(|f: Failure<Job>| failed.push(f.into_item().0)),
    );
    let mut out = Vec::new();
    let report = p.run((0..1000).map(Job), &mut out).unwrap();
    drop(p);
    failed.sort_unstable();
    assert_eq!(failed, (0..1000).filter(|x| x % 2 == 1).collect::<Vec<_>>());
    assert_eq!(out, (0..1000).filter(|x| x % 4 == 0).collect::<Vec<_>>());
    let t = report.totals();
    assert_eq!((t.failed, t.filtered, t.sunk), (500, 250, 250));
}

#[test]
fn cancellation_stops_an_ordered_stage_promptly() {
    let _dog = watchdog("ordered cancel", 30);
    let p = Pipeline::new().stage(
        "sleepy",
        Ordered::new(4, sleepy::<u64>(Duration::from_secs(30))),
    );
    let err = within(Duration::from_secs(2), "ordered timeout", || {
        p.job()
            .timeout(Duration::from_millis(100))
            .run(0..100u64, |_| Ok(()))
            .unwrap_err()
    });
    assert!(matches!(err.kind(), ErrorKind::Deadline { .. }));
    assert!(err.report().unwrap().totals().is_balanced());
}

#[test]
fn zero_workers_or_window_is_a_configuration_error() {
    let f = common::fallible(|x: u8, _: &Context| Ok(x));
    let err = Pipeline::new()
        .stage("o", Ordered::new(0, f))
        .collect([1])
        .unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::Config { .. }));
    let err = Pipeline::new()
        .stage("o", Ordered::new(2, f).window(0))
        .collect([1])
        .unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::Config { .. }));
}

#[cfg(target_os = "linux")]
#[test]
fn an_ordered_pool_runs_on_its_workers_threads_alone() {
    // The workers take their chunks from the input and put the outputs in order
    // themselves: no distributor or collector thread (a small run's cost is its threads).
    let _dog = watchdog("threads", 30);
    let seen = std::sync::Mutex::new(Vec::new());
    let p = Pipeline::new().stage(
        "ordpool",
        Ordered::new(
            3,
            common::fallible(|x: u64, _: &Context| {
                if x == 500 {
                    *seen.lock().unwrap() = common::thread_names("ordpool");
                }
                Ok(x)
            }),
        ),
    );
    let (out, report) = p.collect(0..1_000u64).unwrap();
    assert_eq!(out, (0..1_000u64).collect::<Vec<_>>());
    assert_eq!(report.stages[0].workers_started, 3);
    assert_eq!(
        *seen.lock().unwrap(),
        ["ordpool#0", "ordpool#1", "ordpool#2"],
        "the run's threads of the stage, seen from inside it"
    );
}

#[test]
fn outputs_of_many_per_item_flow_through_a_small_window() {
    // Each item's outputs fill many chunks: a worker's queue fills in the middle of a
    // processor call, and the outputs must be forwarded while the call goes on (the
    // workers forward each other's outputs; there is no collector thread to do it).
    let _dog = watchdog("fan-out", 60);
    const PER_ITEM: u64 = 5_000;
    let p = Pipeline::new().max_chunk(4).stage(
        "fan",
        Ordered::new(
            3,
            flat_map(|x: u64| (0..PER_ITEM).map(move |i| x * PER_ITEM + i)),
        )
        .window(1),
    );
    for _ in 0..5 {
        let (out, report) = p.collect(0..30u64).unwrap();
        assert_eq!(out.len() as u64, 30 * PER_ITEM);
        assert!(
            out.iter().enumerate().all(|(i, &y)| y == i as u64),
            "outputs out of order"
        );
        assert_eq!(report.totals().sunk, 30 * PER_ITEM);
    }
}

#[test]
fn concurrent_runs_of_one_ordered_definition_each_keep_their_order() {
    // Each run numbers its own chunks and forwards its own outputs: runs of one
    // definition from several threads at once never mix or reorder each other's items.
    let _dog = watchdog("concurrent ordered runs", 60);
    let p = Pipeline::new()
        .stage(
            "split",
            Ordered::new(3, flat_map(|x: u64| [2 * x, 2 * x + 1])).window(1),
        )
        .stage(
            "uneven",
            Ordered::new(
                2,
                common::fallible(|x: u64, _: &Context| {
                    if x % 301 == 0 {
                        std::thread::sleep(Duration::from_micros(200));
                    }
                    Ok(x)
                }),
            ),
        );
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let p = &p;
            s.spawn(move || {
                for round in 0..10u64 {
                    let base = (t * 100 + round) * 10_000;
                    let n = 500 + 300 * (round % 4);
                    let (out, report) = p.collect(base..base + n).unwrap();
                    let expected: Vec<u64> = (2 * base..2 * (base + n)).collect();
                    assert_eq!(out, expected, "thread {t}, round {round}");
                    assert!(report.totals().is_balanced());
                }
            });
        }
    });
}
