//! Idle workers stay asleep: a chunk sent to a pool wakes one of its idle workers, not all of
//! them. One test in this file, so that the process's context switches belong to it alone.

mod common;

use std::sync::Mutex;
use std::time::Duration;

use common::watchdog;
use pipework::{Dynamic, Pipeline, with_context};

/// The pool's size, all of it idle while the trickle arrives.
const WORKERS: u64 = 32;
/// Items of the trickle, one a millisecond.
const TRICKLE: u64 = TRICKLE_U32 as u64;
const TRICKLE_U32: u32 = 200;

/// Voluntary context switches of this process's live threads, from /proc/self/task
/// (Linux): a thread counts one each time it blocks.
fn voluntary_switches() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|task| std::fs::read_to_string(task.path().join("status")).ok())
        .filter_map(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
                .and_then(|n| n.trim().parse::<u64>().ok())
        })
        .sum()
}

#[test]
fn a_chunk_wakes_one_idle_worker_not_the_whole_pool() {
    if voluntary_switches() == 0 {
        eprintln!("no /proc/self/task here: nothing to measure");
        return;
    }
    let _dog = watchdog("wakeups", 60);
    // The first `WORKERS` items are slow, so the pool grows to `WORKERS` workers; they all
    // go idle (the idle timeout keeps them), and then a trickle of fast items arrives, one
    // a millisecond, each alone in its chunk. The source counts the switches around the
    // trickle, while every worker is alive.
    let pool = Dynamic::new(
        usize::try_from(WORKERS).unwrap(),
        with_context(|x: u64, cx| {
            if x < WORKERS {
                cx.sleep(Duration::from_millis(50))?;
            }
            Ok::<_, pipework::BoxError>(x)
        }),
    )
    .idle_timeout(Duration::from_secs(60));
    let pipeline = Pipeline::new().stage("pool", pool);
    let counted = Mutex::new((0, 0));
    let source = (0..WORKERS + TRICKLE).inspect(|&x| {
        if x == WORKERS {
            // Every worker has had its slow item, and is idle.
            std::thread::sleep(Duration::from_millis(200));
            counted.lock().unwrap().0 = voluntary_switches();
        } else if x > WORKERS {
            std::thread::sleep(Duration::from_millis(1));
        }
        if x == WORKERS + TRICKLE - 1 {
            counted.lock().unwrap().1 = voluntary_switches();
        }
    });
    let (out, report) = pipeline.collect(source).unwrap();
    assert_eq!(out.len(), usize::try_from(WORKERS + TRICKLE).unwrap());
    assert!(report.totals().is_balanced());
    let peak = report.stages[0].peak_workers;
    assert!(peak >= 8, "the pool grew to {peak} workers only");
    let (before, after) = *counted.lock().unwrap();
    // Switch counts of a test run are far below 2^52: the conversion is exact.
    let per_item = f64::from(u32::try_from(after - before).unwrap()) / f64::from(TRICKLE_U32);
    eprintln!("{per_item:.1} voluntary switches per trickled item, {peak} workers");
    // Per item: the source's sleep, the worker that takes it, the sink, the pool's watcher
    // looking every millisecond — a handful. Waking every idle worker for each item is
    // about one switch per worker.
    assert!(
        per_item < 12.0,
        "{per_item:.1} voluntary switches per item with {peak} idle workers"
    );
}
