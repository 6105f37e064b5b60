//! No thread of a run outlives `run()`. One test in this file, so that the process's thread
//! count belongs to it alone.

mod common;

use std::time::Duration;

use common::{settle_threads, sleepy, thread_count, watchdog_quiet};
use pipework::{BoxError, Broadcast, Context, Dynamic, Fifo, Fixed, Pipeline};

#[test]
fn no_thread_of_the_run_is_alive_after_run_returns() {
    let _dog = watchdog_quiet("threads", 60);
    // The watchdog's thread is part of the baseline.
    let baseline = thread_count();
    let p = Pipeline::new()
        .stage(
            "fifo",
            Fifo::new(common::fallible(|x: u64, _: &Context| Ok(x))),
        )
        .stage(
            "fixed",
            Fixed::new(3, common::fallible(|x: u64, _: &Context| Ok(x))),
        )
        .stage(
            "dyn",
            Dynamic::new(50, sleepy::<u64>(Duration::from_micros(100))),
        )
        .stage(
            "fan",
            Broadcast::new()
                .branch(Fixed::new(2, common::fallible(|x: u64, _: &Context| Ok(x))))
                .branch(Fifo::new(common::fallible(
                    |x: u64, _: &Context| -> Result<u64, BoxError> {
                        assert!(x != 20_000, "injected");
                        Ok(x)
                    },
                ))),
        );
    // A finished run.
    let (out, report) = p.collect(0..2000u64).unwrap();
    assert_eq!(out.len(), 4000);
    assert!(report.totals().is_balanced());
    // Join is explicit, so the count is back at once; `settle_threads` only guards against
    // a slow /proc.
    assert_eq!(
        settle_threads(baseline),
        baseline,
        "threads left after a finished run"
    );
    // An aborted run (a panic in one branch).
    let err = p.run(0..u64::MAX, |_| Ok(())).unwrap_err();
    assert!(matches!(err.kind(), pipework::ErrorKind::Panic { .. }));
    assert_eq!(
        settle_threads(baseline),
        baseline,
        "threads left after an aborted run"
    );
    // A run cut by its time limit while many workers sleep.
    let sleeping = Pipeline::new().stage(
        "sleep",
        Dynamic::new(200, sleepy::<u64>(Duration::from_secs(60))),
    );
    let err = sleeping
        .job()
        .timeout(Duration::from_millis(100))
        .run(0..500u64, |_| Ok(()))
        .unwrap_err();
    assert!(matches!(err.kind(), pipework::ErrorKind::Deadline { .. }));
    // How many workers started before the limit depends on the machine's load; any number
    // of them must be gone.
    assert!(err.report().unwrap().stages[0].peak_workers >= 1);
    assert_eq!(
        settle_threads(baseline),
        baseline,
        "threads left after a timed-out run"
    );
}
