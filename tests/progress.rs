//! Live progress: snapshots on the calling thread while the run goes on.

mod common;

use std::time::Duration;

use common::{sleepy, watchdog};
use pipework::{Context, Fifo, Fixed, Pipeline};

#[test]
fn smoke() {
    let _dog = watchdog("smoke", 10);
    let p = Pipeline::new().stage("slow", Fifo::new(sleepy::<u32>(Duration::from_millis(2))));
    let mut ticks = 0;
    p.job()
        .on_progress(Duration::from_millis(10), |_| ticks += 1)
        .run(0..50u32, |_| Ok(()))
        .unwrap();
    assert!(ticks >= 2, "{ticks} progress reports");
}

#[test]
fn snapshots_grow_and_show_the_bottleneck_and_queues() {
    let _dog = watchdog("progress", 20);
    let caller = std::thread::current().id();
    let p = Pipeline::new()
        .stage(
            "fast",
            Fixed::new(2, common::fallible(|x: u32, _: &Context| Ok(x))),
        )
        .stage("slow", Fifo::new(sleepy::<u32>(Duration::from_millis(1))));
    let mut snapshots = Vec::new();
    let report = p
        .job()
        .on_progress(Duration::from_millis(20), |r| {
            assert_eq!(std::thread::current().id(), caller);
            snapshots.push(r.clone());
        })
        .run(0..300u32, |_| Ok(()))
        .unwrap();
    assert!(snapshots.len() >= 3);
    let sunk: Vec<u64> = snapshots.iter().map(|r| r.sink.consumed).collect();
    assert!(
        sunk.windows(2).all(|w| w[0] <= w[1]),
        "progress went backwards: {sunk:?}"
    );
    // Mid-run: before the last item reached the sink. The last snapshot may come after it,
    // while the run's threads end (a loaded machine can take a tick for that).
    assert!(
        sunk.iter().any(|&n| n < 300),
        "no snapshot was taken mid-run"
    );
    assert!(
        snapshots.iter().any(|r| r.stages[1].queued > 0),
        "the slow stage never had a queue"
    );
    let mid = &snapshots[snapshots.len() / 2];
    assert_eq!(mid.bottleneck().map(|s| s.id.name()), Some("slow"));
    assert_eq!(report.sink.consumed, 300);
}
