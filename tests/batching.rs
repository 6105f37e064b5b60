//! The batch runner: flushes on size, on time, at the end, and accounts on cancellation.

// Pedantic lints this test allows, and why:
// - `unnecessary_wraps`: steps used as processors return `Result`, failing or not.
#![allow(clippy::unnecessary_wraps)]

mod common;

use std::time::{Duration, Instant};

use common::{Ledger, Tracked, tracked, watchdog};
use pipework::{Batch, CancelToken, Context, ErrorKind, Failure, Pipeline, StageOptions};

fn sizes(rows: Vec<u32>, _: &Context) -> Result<Vec<u32>, pipework::BoxError> {
    Ok(rows)
}

#[test]
fn smoke() {
    let _dog = watchdog("smoke", 10);
    let p = Pipeline::new().stage(
        "b",
        Batch::new(4, Duration::from_secs(10), common::fallible(sizes)),
    );
    let (out, report) = p.collect(0..10u32).unwrap();
    assert_eq!(out, [vec![0, 1, 2, 3], vec![4, 5, 6, 7], vec![8, 9]]);
    assert_eq!(report.stages[0].merged, 7);
    assert!(report.totals().is_balanced());
}

#[test]
fn flushes_a_partial_batch_after_max_wait() {
    let _dog = watchdog("max wait", 10);
    let p = Pipeline::new().stage(
        "b",
        Batch::new(100, Duration::from_millis(30), common::fallible(sizes)),
    );
    // Three items, then a pause far longer than max_wait, then two more.
    let source = (0..5u32).inspect(|&i| {
        if i == 3 {
            std::thread::sleep(Duration::from_millis(300));
        }
    });
    let started = Instant::now();
    let mut seen = Vec::new();
    p.run(source, |b: Vec<u32>| {
        seen.push((b, started.elapsed()));
        Ok(())
    })
    .unwrap();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0].0, [0, 1, 2]);
    assert!(
        seen[0].1 < Duration::from_millis(250),
        "the first batch waited for the pause"
    );
    assert_eq!(seen[1].0, [3, 4]);
}

#[test]
fn never_exceeds_its_size_and_keeps_order() {
    let _dog = watchdog("size", 10);
    let p = Pipeline::new().stage(
        "b",
        Batch::new(7, Duration::from_millis(1), common::fallible(sizes)),
    );
    let (out, _) = p.collect(0..10_000u32).unwrap();
    assert!(out.iter().all(|b| !b.is_empty() && b.len() <= 7));
    assert_eq!(out.concat(), (0..10_000).collect::<Vec<_>>());
}

#[test]
fn cancellation_accounts_for_the_partial_batch() {
    let _dog = watchdog("cancel", 10);
    let ledger = Ledger::new(50);
    let token = CancelToken::new();
    let p = Pipeline::new().stage(
        "b",
        Batch::new(
            1000,
            Duration::from_secs(60),
            common::fallible(|b: Vec<Tracked>, _: &Context| Ok(b.len())),
        ),
    );
    let canceller = {
        let t = token.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            t.cancel();
        })
    };
    // The input stays open: 50 items, then nothing until the run is cancelled.
    let (tx, rx) = crossbeam_channel::unbounded();
    for t in tracked(50, &ledger) {
        tx.send(t).unwrap();
    }
    let err = p
        .job()
        .cancel_token(&token)
        .run(pipework::source::receiver(rx), |_| Ok(()))
        .unwrap_err();
    canceller.join().unwrap();
    drop(tx);
    assert!(matches!(err.kind(), ErrorKind::Cancelled));
    ledger.assert_each_dropped_once();
    let t = err.report().unwrap().totals();
    assert_eq!((t.read, t.cancelled, t.sunk), (50, 50, 0));
    assert!(t.is_balanced());
}

#[test]
fn a_failed_batch_is_routed_whole() {
    let _dog = watchdog("route batch", 10);
    let failed = std::sync::Mutex::new(Vec::new());
    let p = Pipeline::new().stage_with(
        "b",
        Batch::new(
            5,
            Duration::from_secs(1),
            common::fallible(|b: Vec<u32>, _: &Context| {
                if b.contains(&7) {
                    Err("batch with 7".into())
                } else {
                    Ok(b.len())
                }
            }),
        ),
        // The handler takes the stage's input type: a failed batch comes item by item.
        StageOptions::new().route_failures_to(|f: Failure<u32>| {
            assert_eq!(f.error().to_string(), "batch with 7");
            failed.lock().unwrap().push(f.into_item());
        }),
    );
    let mut out = Vec::new();
    let report = p.run(0..20u32, &mut out).unwrap();
    assert_eq!(*failed.lock().unwrap(), [5, 6, 7, 8, 9]);
    assert_eq!(out, [5, 5, 5]);
    let t = report.totals();
    assert_eq!((t.failed, t.merged, t.sunk), (1, 16, 3));
    assert!(t.is_balanced());
}

#[test]
fn zero_size_is_a_configuration_error() {
    let err = Pipeline::new()
        .stage("b", Batch::new(0, Duration::ZERO, common::fallible(sizes)))
        .collect([1u32])
        .unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::Config { .. }));
}
