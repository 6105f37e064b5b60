//! Errors and panics: the first one cancels the run, is returned with its origin, and never
//! leaves the run hanging.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{Ledger, Tracked, tracked, watchdog, watchdog_quiet, within};
use pipework::{
    BoxError, Broadcast, Context, Dynamic, ErrorKind, Fifo, Fixed, Pipeline, Site, source,
};

const PROMPT: Duration = Duration::from_secs(2);

#[test]
fn smoke() {
    let _dog = watchdog("smoke", 10);
    let p = Pipeline::new().stage(
        "check",
        Fifo::new(common::fallible(|x: u32, _: &Context| {
            if x == 3 { Err("three".into()) } else { Ok(x) }
        })),
    );
    let err = p.collect(0..10u32).unwrap_err();
    assert_eq!(err.to_string(), "stage 0 (check) failed");
    assert_eq!(format!("{err:#}"), "stage 0 (check) failed: three");
}

#[test]
fn stage_error_cancels_and_is_returned_with_the_stage_name() {
    let _dog = watchdog("stage error", 20);
    let after_error = AtomicUsize::new(0);
    let p = Pipeline::new()
        .stage(
            "pass",
            Fixed::new(2, common::fallible(|x: u64, _: &Context| Ok(x))),
        )
        .stage(
            "validate",
            Fixed::new(
                2,
                common::fallible(|x: u64, _: &Context| {
                    if x == 500 {
                        return Err(std::io::Error::other("bad item 500").into());
                    }
                    Ok(x)
                }),
            ),
        )
        .stage(
            "slow",
            Fifo::new(common::fallible(|x: u64, cx: &Context| {
                if cx.is_cancelled() {
                    after_error.fetch_add(1, Ordering::SeqCst);
                }
                Ok(x)
            })),
        );
    let err = within(PROMPT, "run with a failing stage", || {
        p.run(0..1_000_000u64, |_| Ok(())).unwrap_err()
    });
    match err.kind() {
        ErrorKind::Stage { stage, error } => {
            assert_eq!((stage.index(), stage.name()), (1, "validate"));
            assert_eq!(error.to_string(), "bad item 500");
        }
        other => panic!("unexpected error {other:?}"),
    }
    assert_eq!(err.stage().map(pipework::StageId::name), Some("validate"));
    let report = err.report().expect("an aborted run has a report");
    let t = report.totals();
    assert!(
        t.read < 1_000_000,
        "the source was not stopped: read {}",
        t.read
    );
    assert_eq!(report.stages[1].failed, 1);
    assert!(t.is_balanced(), "{t:?}");
    // A worker checks for cancellation before it takes each item; a cancellation that
    // lands between that check and the processor's own look is seen by that one item.
    // The `slow` stage has one worker, so at most one item sees it; a worker that went on
    // taking items would show hundreds.
    let seen = after_error.load(Ordering::SeqCst);
    assert!(
        seen <= 1,
        "the worker started {seen} items after cancellation"
    );
}

#[test]
fn error_while_upstream_blocks_on_a_full_queue_does_not_hang() {
    let _dog = watchdog("blocked upstream", 20);
    // Capacity 1 and chunks of 1: the source and the first stage block on full queues
    // almost at once, while the last stage takes its time and then fails.
    let p = Pipeline::new()
        .capacity(1)
        .max_chunk(1)
        .stage(
            "fast",
            Fifo::new(common::fallible(|x: u64, _: &Context| Ok(x))),
        )
        .stage(
            "slow then fail",
            Fifo::new(common::fallible(|x: u64, cx: &Context| {
                cx.sleep(Duration::from_millis(50))?;
                if x == 2 {
                    Err("downstream failure".into())
                } else {
                    Ok(x)
                }
            })),
        );
    let err = within(PROMPT, "run with blocked upstream", || {
        p.run(0..u64::MAX, |_| Ok(())).unwrap_err()
    });
    assert_eq!(err.stage().unwrap().name(), "slow then fail");
    let report = err.report().unwrap();
    assert!(
        report.source.blocked > Duration::ZERO,
        "the source never blocked"
    );
    assert!(report.totals().is_balanced());
}

#[test]
fn sink_error_stops_the_run() {
    let _dog = watchdog("sink error", 20);
    let p = Pipeline::new().stage(
        "pass",
        Fixed::new(2, common::fallible(|x: u64, _: &Context| Ok(x))),
    );
    let mut seen = 0;
    let err = within(PROMPT, "sink error", || {
        p.run(0..u64::MAX, |_| {
            seen += 1;
            if seen == 100 {
                Err("sink full".into())
            } else {
                Ok(())
            }
        })
        .unwrap_err()
    });
    assert!(matches!(err.kind(), ErrorKind::Sink { .. }));
    assert_eq!(format!("{err:#}"), "sink failed: sink full");
    let r = err.report().unwrap();
    assert_eq!((r.sink.consumed, r.sink.failed), (99, 1));
    assert!(r.totals().is_balanced());
}

#[test]
fn source_error_stops_the_run() {
    let _dog = watchdog("source error", 20);
    let p = Pipeline::new().stage(
        "pass",
        Fifo::new(common::fallible(|x: u64, _: &Context| Ok(x))),
    );
    let items = (0..10u64).map(|i| if i == 7 { Err("no more") } else { Ok(i) });
    let err = p.collect(source::fallible(items)).unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::Source { .. }));
    assert_eq!(err.report().unwrap().source.read, 7);
}

fn assert_panic(err: &pipework::Error, site_is: impl Fn(&Site) -> bool, message: &str) {
    match err.kind() {
        ErrorKind::Panic { site, message: m } => {
            assert!(site_is(site), "panic at unexpected site {site:?}");
            assert_eq!(m, message);
        }
        other => panic!("expected a panic error, got {other:?}"),
    }
    assert!(err.report().unwrap().totals().is_balanced());
}

#[test]
fn panic_in_a_processor_is_returned_and_cancels_the_run() {
    let _dog = watchdog_quiet("processor panic", 20);
    for kind in ["fifo", "fixed", "dynamic", "broadcast"] {
        let f = common::fallible(|x: u64, _: &Context| -> Result<u64, BoxError> {
            assert!(x != 1234, "injected panic at {x}");
            Ok(x)
        });
        let p: Pipeline<u64> = match kind {
            "fifo" => Pipeline::new().stage("boom", Fifo::new(f)),
            "fixed" => Pipeline::new().stage("boom", Fixed::new(3, f)),
            "dynamic" => Pipeline::new().stage("boom", Dynamic::new(8, f)),
            _ => Pipeline::new().stage(
                "boom",
                Broadcast::new()
                    .branch(Fifo::new(f))
                    .branch(Fixed::new(2, f)),
            ),
        };
        let err = within(PROMPT, kind, || p.run(0..u64::MAX, |_| Ok(())).unwrap_err());
        assert_panic(
            &err,
            |s| matches!(s, Site::Stage { stage, .. } if stage.name() == "boom"),
            "injected panic at 1234",
        );
        assert!(err.report().unwrap().stages[0].failed >= 1, "{kind}");
    }
}

#[test]
fn panic_in_the_source_is_returned() {
    let _dog = watchdog_quiet("source panic", 20);
    let p = Pipeline::new().stage(
        "pass",
        Fifo::new(common::fallible(|x: u64, _: &Context| Ok(x))),
    );
    let items = (0..u64::MAX).map(|i| {
        if i == 300 {
            panic!("injected source panic")
        } else {
            i
        }
    });
    let err = within(PROMPT, "source panic", || {
        p.run(items, |_| Ok(())).unwrap_err()
    });
    assert_panic(&err, |s| *s == Site::Source, "injected source panic");
}

#[test]
fn panic_in_the_sink_is_returned() {
    let _dog = watchdog_quiet("sink panic", 20);
    let p = Pipeline::new().stage(
        "pass",
        Fixed::new(2, common::fallible(|x: u64, _: &Context| Ok(x))),
    );
    let err = within(PROMPT, "sink panic", || {
        p.run(0..u64::MAX, |x| {
            if x > 50 {
                panic!("injected sink panic")
            } else {
                Ok(())
            }
        })
        .unwrap_err()
    });
    assert_panic(&err, |s| *s == Site::Sink, "injected sink panic");
    assert_eq!(err.report().unwrap().sink.failed, 1);
}

#[test]
fn panic_in_an_init_closure_is_returned() {
    let _dog = watchdog_quiet("init panic", 20);
    let p = Pipeline::new().stage(
        "setup",
        Fixed::with_init(3, |cx: &Context| {
            assert!(cx.worker() != 1, "injected init panic");
            Ok(common::fallible(
                |x: u64, _: &Context| -> Result<u64, BoxError> { Ok(x) },
            ))
        }),
    );
    let err = within(PROMPT, "init panic", || {
        p.run(0..u64::MAX, |_| Ok(())).unwrap_err()
    });
    assert_panic(
        &err,
        |s| matches!(s, Site::Stage { worker: 1, .. }),
        "injected init panic",
    );
}

/// A processor type for an init closure that never returns one.
type Pass = pipework::processor::WithContext<fn(u64, &Context) -> Result<u64, BoxError>>;

#[test]
fn init_error_fails_the_stage() {
    let _dog = watchdog("init error", 20);
    let p = Pipeline::new().stage(
        "connect",
        Fixed::with_init(2, |_: &Context| -> Result<Pass, BoxError> {
            Err("connection refused".into())
        }),
    );
    let err = p.collect(0..10u64).unwrap_err();
    assert_eq!(
        format!("{err:#}"),
        "stage 0 (connect) failed: connection refused"
    );
    assert!(err.report().unwrap().totals().is_balanced());
}

#[test]
fn first_error_wins_and_later_ones_are_counted() {
    let _dog = watchdog_quiet("first error wins", 20);
    // Every worker of a 4-worker pool fails on its first item, at the same moment.
    let gate = std::sync::Barrier::new(4);
    let p = Pipeline::new()
        .stage(
            "all fail",
            Fixed::new(
                4,
                common::fallible(|_: u64, _: &Context| -> Result<u64, BoxError> {
                    gate.wait();
                    Err("failed together".into())
                }),
            ),
        )
        .max_chunk(1);
    let err = p.run(0..4u64, |_| Ok(())).unwrap_err();
    assert_eq!(err.stage().unwrap().name(), "all fail");
    let r = err.report().unwrap();
    // One error is returned; the others either failed too (suppressed) or saw the
    // cancellation first (their items count as cancelled).
    assert_eq!(r.stages[0].failed, 1 + r.suppressed_errors);
    assert_eq!(r.stages[0].failed + r.stages[0].cancelled, 4);
    assert!(r.totals().is_balanced());
}

#[test]
fn every_item_is_dropped_exactly_once_after_a_panic() {
    let _dog = watchdog_quiet("drops after panic", 20);
    let ledger = Ledger::new(20_000);
    let p = Pipeline::new()
        .stage(
            "a",
            Fixed::new(2, common::fallible(|t: Tracked, _: &Context| Ok(t))),
        )
        .stage(
            "b",
            Fifo::new(common::fallible(|t: Tracked, _: &Context| {
                assert!(t.id != 5000, "injected");
                Ok(t)
            })),
        );
    let err = p.run(tracked(20_000, &ledger), |_| Ok(())).unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::Panic { .. }));
    ledger.assert_each_dropped_once();
    let t = err.report().unwrap().totals();
    // Items the source never read are dropped with the iterator; the others are accounted.
    assert!(t.read > 5000, "item 5000 was read: {t:?}");
    assert!(t.is_balanced(), "{t:?}");
}

#[test]
fn bad_configuration_is_caught_before_any_thread_starts() {
    let _dog = watchdog("config", 10);
    let f = common::fallible(|x: u32, _: &Context| Ok(x));
    let cases: Vec<(Pipeline<u32>, &str)> = vec![
        (
            Pipeline::new().stage("pool", Fixed::new(0, f)),
            "invalid configuration of stage 0 (pool): a fixed pool needs at least one worker",
        ),
        (
            Pipeline::new().stage("dyn", Dynamic::new(0, f)),
            "invalid configuration of stage 0 (dyn): a dynamic pool needs a maximum of at least one worker",
        ),
        (
            Pipeline::new().stage("fan", Broadcast::new()),
            "invalid configuration of stage 0 (fan): a broadcast needs at least one branch",
        ),
        (
            Pipeline::new().stage("fan", Broadcast::new().branch(Fixed::new(0, f))),
            "invalid configuration of stage 0 (fan): branch 0: a fixed pool needs at least one worker",
        ),
        (
            Pipeline::new().capacity(0),
            "invalid configuration: queue capacity must be between 1 and 1048576 chunks",
        ),
        (
            Pipeline::new().max_chunk(0),
            "invalid configuration: max_chunk must be at least 1",
        ),
        (
            Pipeline::new().stage_with(
                "s",
                Fifo::new(f),
                pipework::StageOptions::new().capacity(0),
            ),
            "invalid configuration of stage 0 (s): queue capacity must be between 1 and 1048576 chunks",
        ),
    ];
    let pulled = AtomicUsize::new(0);
    for (p, message) in cases {
        let source = (0..10u32).inspect(|_| {
            pulled.fetch_add(1, Ordering::SeqCst);
        });
        let err = p.run(source, |_| Ok(())).unwrap_err();
        assert!(matches!(err.kind(), ErrorKind::Config { .. }));
        assert_eq!(err.to_string(), message);
        assert!(err.report().is_none());
    }
    assert_eq!(
        pulled.load(Ordering::SeqCst),
        0,
        "a misconfigured run read its source"
    );
}
