//! Regression tests for the adversarial review's findings: user code that panics or
//! misbehaves at every site, extreme settings, concurrent runs of one definition.
//! Each test names its finding.

// Pedantic lints this test allows, and why:
// - `items_after_statements`: helpers sit next to the one scenario that uses them.
#![allow(clippy::items_after_statements)]

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{quiet_injected_panics, watchdog};
use pipework::{
    BoxError, CancelToken, Context, Dynamic, Emitter, ErrorKind, Fifo, Fixed, Ordered, Pipeline,
    Processor, Site, StageOptions, flat_map, source,
};

/// An endless source, stopped only by cancellation.
struct Endless;

impl pipework::Source<u64> for Endless {
    fn next(&mut self, token: &CancelToken) -> Option<Result<u64, BoxError>> {
        (!token.is_cancelled()).then_some(Ok(1))
    }
}

#[test]
fn f01_a_dynamic_pool_that_retires_eagerly_never_stalls() {
    let _dog = watchdog("dynamic retire race", 120);
    let p = Pipeline::new().stage(
        "retiring",
        Dynamic::new(
            1,
            common::fallible(|x: u64, _: &Context| {
                let t = Instant::now();
                while t.elapsed() < Duration::from_micros(20) {}
                Ok(x)
            }),
        )
        .idle_timeout(Duration::ZERO),
    );
    for _ in 0..300 {
        let (out, report) = p.collect(0..200u64).unwrap();
        assert_eq!(out.len(), 200);
        assert!(report.totals().is_balanced());
        assert_eq!(report.suppressed_errors, 0);
    }
}

#[test]
fn f02_a_slow_sink_in_one_run_does_not_hold_back_another_run() {
    let _dog = watchdog("fifo shared lock", 30);
    let p = Pipeline::new().stage(
        "fifo",
        Fifo::new(common::fallible(|x: u64, _: &Context| Ok(x))),
    );
    let b_done = AtomicBool::new(false);
    std::thread::scope(|s| {
        // Run A's sink waits until run B has finished: with a processor shared behind one
        // lock, B would wait for A's blocked stage and neither would finish.
        let a = s.spawn(|| {
            p.run(0..5_000u64, |_| {
                while !b_done.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Ok(())
            })
        });
        std::thread::sleep(Duration::from_millis(50));
        let (out, _) = p.collect(0..5_000u64).unwrap();
        assert_eq!(out.len(), 5_000);
        b_done.store(true, Ordering::SeqCst);
        a.join().unwrap().unwrap();
    });
}

#[test]
fn f04_progress_every_duration_max_neither_panics_nor_hangs() {
    let _dog = watchdog("progress max", 20);
    let p = Pipeline::new().stage(
        "id",
        Fixed::new(2, common::fallible(|x: u64, _: &Context| Ok(x))),
    );
    let err = p
        .job()
        .timeout(Duration::from_millis(100))
        .on_progress(Duration::MAX, |_| {})
        .run(source::custom(Endless), |_| Ok(()))
        .unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::Deadline { .. }), "{err}");
}

#[test]
fn f05_f10_extreme_pool_sizes_are_configuration_errors() {
    let _dog = watchdog("extreme sizes", 20);
    let token = CancelToken::new();
    let id = common::fallible(|x: u64, _: &Context| Ok(x));
    let cases: Vec<Pipeline<'_, u64>> = vec![
        Pipeline::new().stage("f", Fixed::new(usize::MAX, id)),
        Pipeline::new().stage("o", Ordered::new(usize::MAX, id)),
        Pipeline::new().stage("o", Ordered::new(1 << 40, id)),
        Pipeline::new().stage("o", Ordered::new(4, id).window(1 << 20)),
        Pipeline::new().stage("d", Dynamic::new(usize::MAX, id)),
    ];
    for p in cases {
        let err = p
            .job()
            .cancel_token(&token)
            .run(0..10u64, |_| Ok(()))
            .unwrap_err();
        assert!(matches!(err.kind(), ErrorKind::Config { .. }), "{err}");
    }
}

#[test]
fn f06_an_endless_flat_map_stops_at_the_deadline() {
    let _dog = watchdog("endless flat_map", 20);
    let p = Pipeline::new().stage(
        "explode",
        Fixed::new(2, flat_map(|_: u64| std::iter::repeat(0u8))),
    );
    let started = Instant::now();
    let err = p
        .job()
        .timeout(Duration::from_millis(100))
        .run(0..10u64, |_| Ok(()))
        .unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::Deadline { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// Emits `n` copies of its input, then panics.
#[derive(Clone)]
struct EmitThenPanic(usize);

impl Processor<u64, u64> for EmitThenPanic {
    fn process(&mut self, x: u64, _: &Context, out: &mut Emitter<'_, u64>) -> Result<(), BoxError> {
        for _ in 0..self.0 {
            out.emit(x);
        }
        assert!(x != 7, "injected after emitting");
        Ok(())
    }
}

#[test]
fn f07_outputs_emitted_before_a_panic_are_counted() {
    let _dog = watchdog("emit then panic", 20);
    quiet_injected_panics();
    let runners: Vec<Pipeline<'_, u64>> = vec![
        Pipeline::new().stage("s", Fifo::new(EmitThenPanic(3))),
        Pipeline::new().stage("s", Fixed::new(2, EmitThenPanic(3))),
        Pipeline::new().stage("s", Ordered::new(2, EmitThenPanic(3))),
    ];
    for p in runners {
        let err = p.run(0..100u64, |_| Ok(())).unwrap_err();
        let report = err.report().unwrap();
        assert!(report.totals().is_balanced(), "{report}");
        assert_eq!(report.stages[0].failed, 1);
    }
}

/// An item whose `Clone` panics for one value.
#[derive(Debug)]
struct BadClone(u64);

impl Clone for BadClone {
    fn clone(&self) -> Self {
        assert!(self.0 != 5, "injected clone");
        BadClone(self.0)
    }
}

#[test]
fn f08_a_panicking_clone_of_a_kept_item_is_counted() {
    let _dog = watchdog("bad clone", 20);
    quiet_injected_panics();
    let p = Pipeline::new().stage_with(
        "route",
        Fixed::new(2, common::fallible(|x: BadClone, _: &Context| Ok(x.0))),
        StageOptions::new().route_failures_to(|_| {}),
    );
    let err = p.run((0..50).map(BadClone), |_| Ok(())).unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::Panic { .. }), "{err}");
    assert!(err.report().unwrap().totals().is_balanced());
}

/// An item whose `Drop` panics once, when the flag is set.
struct DropBomb(&'static AtomicBool);

impl Drop for DropBomb {
    fn drop(&mut self) {
        assert!(!self.0.swap(false, Ordering::SeqCst), "injected drop");
    }
}

#[test]
fn f09_f11_a_panicking_drop_of_a_leftover_item_is_reported_and_counted() {
    let _dog = watchdog("drop bomb", 20);
    quiet_injected_panics();
    static ARMED: AtomicBool = AtomicBool::new(false);
    for _ in 0..20 {
        let p = Pipeline::new()
            .stage(
                "arm",
                Fixed::new(
                    2,
                    common::fallible(|x: u64, _: &Context| {
                        if x == 100 {
                            ARMED.store(true, Ordering::SeqCst);
                            return Err("injected failure".into());
                        }
                        Ok(DropBomb(&ARMED))
                    }),
                ),
            )
            .stage(
                "slow",
                Fifo::new(common::fallible(|b: DropBomb, cx: &Context| {
                    cx.sleep(Duration::from_millis(1))?;
                    Ok(b)
                })),
            );
        let err = p.run(0..10_000u64, |_| Ok(())).unwrap_err();
        let report = err.report().unwrap();
        assert!(report.totals().is_balanced(), "{report}");
        ARMED.store(false, Ordering::SeqCst);
    }
}

struct PanickyDrop;

impl Drop for PanickyDrop {
    fn drop(&mut self) {
        panic!("injected drop of a user value");
    }
}

#[test]
fn f12_f13_panicking_drops_of_sink_handler_progress_and_source_are_errors() {
    let _dog = watchdog("user drops", 20);
    quiet_injected_panics();
    let p = Pipeline::new().stage(
        "id",
        Fixed::new(2, common::fallible(|x: u64, _: &Context| Ok(x))),
    );
    // The sink.
    let guard = PanickyDrop;
    let err = p
        .run(0..10u64, move |_| {
            let _ = &guard;
            Ok(())
        })
        .unwrap_err();
    assert!(
        matches!(
            err.kind(),
            ErrorKind::Panic {
                site: Site::Sink,
                ..
            }
        ),
        "{err}"
    );
    // The progress callback.
    let guard = PanickyDrop;
    let err = p
        .job()
        .on_progress(Duration::from_secs(1), move |_| {
            let _ = &guard;
        })
        .run(0..10u64, |_| Ok(()))
        .unwrap_err();
    assert!(
        matches!(
            err.kind(),
            ErrorKind::Panic {
                site: Site::Progress,
                ..
            }
        ),
        "{err}"
    );
    // The source.
    let guard = PanickyDrop;
    let items = (0..10u64).inspect(move |_| {
        let _ = &guard;
    });
    let err = p.run(items, |_| Ok(())).unwrap_err();
    assert!(
        matches!(
            err.kind(),
            ErrorKind::Panic {
                site: Site::Source,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn f14_an_idle_timeout_of_duration_max_means_never_retire() {
    let _dog = watchdog("idle max", 20);
    let p = Pipeline::new().stage(
        "d",
        Dynamic::new(4, common::fallible(|x: u64, _: &Context| Ok(x))).idle_timeout(Duration::MAX),
    );
    let (out, _) = p.collect(0..1_000u64).unwrap();
    assert_eq!(out.len(), 1_000);
}

#[test]
fn f15_cancelling_a_token_a_processor_waits_on_returns_cancelled() {
    let _dog = watchdog("external token", 30);
    for _ in 0..20 {
        let token = CancelToken::new();
        let waits_on = token.clone();
        let p = Pipeline::new().stage(
            "wait",
            Fixed::new(
                4,
                common::fallible(move |x: u64, _: &Context| {
                    waits_on.sleep(Duration::from_secs(10))?;
                    Ok(x)
                }),
            ),
        );
        let canceller = token.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            canceller.cancel();
        });
        let err = p
            .job()
            .cancel_token(&token)
            .run(0..8u64, |_| Ok(()))
            .unwrap_err();
        t.join().unwrap();
        assert!(matches!(err.kind(), ErrorKind::Cancelled), "{err}");
    }
}

#[test]
fn f17_an_ordered_one_to_many_stage_keeps_memory_bounded() {
    let _dog = watchdog("ordered expansion", 60);
    static LIVE: AtomicUsize = AtomicUsize::new(0);
    static PEAK: AtomicUsize = AtomicUsize::new(0);
    struct Counted;
    impl Counted {
        fn new() -> Self {
            let live = LIVE.fetch_add(1, Ordering::SeqCst) + 1;
            PEAK.fetch_max(live, Ordering::SeqCst);
            Counted
        }
    }
    impl Drop for Counted {
        fn drop(&mut self) {
            LIVE.fetch_sub(1, Ordering::SeqCst);
        }
    }
    let p = Pipeline::new().stage(
        "expand",
        Ordered::new(2, flat_map(|_: u64| (0..200_000).map(|_| Counted::new()))),
    );
    let mut seen = 0u64;
    p.run(0..4u64, |_c: Counted| {
        seen += 1;
        Ok(())
    })
    .unwrap();
    assert_eq!(seen, 800_000);
    let peak = PEAK.load(Ordering::SeqCst);
    // 2 workers × (window 4 × 2 + 2) chunks of at most 256, plus the edges' 16 chunks.
    assert!(peak < 20_000, "peak {peak} outputs alive at once");
}

#[test]
fn f18_a_pre_cancelled_token_starts_no_thread() {
    let _dog = watchdog("pre-cancelled", 20);
    let inits = AtomicUsize::new(0);
    let p = Pipeline::new().stage(
        "init",
        Fixed::with_init(8, |_: &Context| {
            inits.fetch_add(1, Ordering::SeqCst);
            Ok(common::fallible(|x: u64, _: &Context| Ok(x)))
        }),
    );
    let token = CancelToken::new();
    token.cancel();
    let err = p
        .job()
        .cancel_token(&token)
        .run(0..10u64, |_| Ok(()))
        .unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::Cancelled));
    assert_eq!(inits.load(Ordering::SeqCst), 0);
}

#[test]
fn f19_an_independent_error_after_cancellation_is_a_suppressed_error() {
    let _dog = watchdog("late error", 20);
    // Item 1 must be in a processor call when the sink's error cancels the run (an item not
    // yet taken is only cancelled): the sink waits for it to start.
    let started = AtomicBool::new(false);
    let p = Pipeline::new().stage(
        "late",
        Fixed::new(
            2,
            common::fallible(|x: u64, cx: &Context| {
                if x == 1 {
                    started.store(true, Ordering::SeqCst);
                    // Wait for the sink's error to cancel the run, then fail on our own.
                    while !cx.is_cancelled() {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    return Err("independent failure".into());
                }
                Ok(x)
            }),
        ),
    );
    let err = p
        .run(0..2u64, |x| {
            if x == 0 {
                // Item 0 reached the sink, so its worker is free: item 1 starts soon.
                while !started.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err("sink says no".into())
            } else {
                Ok(())
            }
        })
        .unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::Sink { .. }), "{err}");
    let report = err.report().unwrap();
    assert_eq!(report.suppressed_errors, 1, "{report}");
    assert!(report.totals().is_balanced());
}

#[test]
fn f20_a_deadline_during_finish_does_not_fail_finished_work() {
    let _dog = watchdog("finish deadline", 20);
    struct SlowFinish(u64);
    impl pipework::Sink<u64> for SlowFinish {
        fn consume(&mut self, _: u64) -> Result<(), BoxError> {
            self.0 += 1;
            Ok(())
        }
        fn finish(&mut self) -> Result<(), BoxError> {
            std::thread::sleep(Duration::from_millis(200));
            Ok(())
        }
    }
    let p = Pipeline::new().stage(
        "id",
        Fifo::new(common::fallible(|x: u64, _: &Context| Ok(x))),
    );
    let report = p
        .job()
        .timeout(Duration::from_millis(50))
        .run(0..10u64, SlowFinish(0))
        .unwrap();
    assert_eq!(report.totals().sunk, 10);
}

#[test]
fn f24_no_retry_attempt_starts_after_cancellation() {
    let _dog = watchdog("retry after cancel", 20);
    let cancelled_at = AtomicU64::new(0);
    let late_attempts = AtomicUsize::new(0);
    let token = CancelToken::new();
    let p = Pipeline::new().stage_with(
        "flaky",
        Fixed::new(
            4,
            common::fallible(|x: u64, cx: &Context| {
                if cx.is_cancelled() {
                    late_attempts.fetch_add(1, Ordering::SeqCst);
                }
                let _ = cancelled_at.load(Ordering::SeqCst);
                Err::<u64, _>(pipework::Transient::new(format!("try again {x}")).into())
            }),
        ),
        StageOptions::new().retry(pipework::Retry::new(1_000).backoff(Duration::from_micros(50))),
    );
    let canceller = token.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(30));
        canceller.cancel();
    });
    let err = p
        .job()
        .cancel_token(&token)
        .run(0..100u64, |_| Ok(()))
        .unwrap_err();
    t.join().unwrap();
    assert!(matches!(err.kind(), ErrorKind::Cancelled), "{err}");
    assert_eq!(late_attempts.load(Ordering::SeqCst), 0);
    assert!(err.report().unwrap().totals().is_balanced());
}

#[test]
fn f10_a_stage_name_with_a_nul_byte_runs() {
    let _dog = watchdog("nul name", 20);
    let p = Pipeline::new().stage(
        "bad\0name",
        Fixed::new(2, common::fallible(|x: u64, _: &Context| Ok(x))),
    );
    let (out, report) = p.collect(0..10u64).unwrap();
    assert_eq!(out.len(), 10);
    assert_eq!(report.stages[0].id.name(), "bad\0name");
}

/// A user value whose `Drop` panics (quietly while its thread unwinds).
struct QuietlyPanickyDrop(&'static str);

impl Drop for QuietlyPanickyDrop {
    fn drop(&mut self) {
        assert!(std::thread::panicking(), "injected {} drop", self.0);
    }
}

/// f25 (found by the random-fault model on an older engine): a run whose deadline cancels
/// it before its source thread starts dropped the source inside the refused spawn (the
/// thread's closure owned it), outside any `catch_unwind`: a panic in the source's `Drop`
/// escaped `run()`. Seen in about 5 of 2,000 runs with `timeout(Duration::ZERO)`. The
/// source now waits in a slot the thread takes it from, and is dropped under
/// `catch_unwind` if the thread never started.
#[test]
fn f25_a_source_dropped_because_its_thread_never_started_cannot_panic_out_of_run() {
    const RUNS: usize = 2_000;
    let _dog = watchdog("source drop before start", 60);
    quiet_injected_panics();
    let p = Pipeline::new().stage(
        "id",
        Fixed::new(2, common::fallible(|x: u64, _: &Context| Ok(x))),
    );
    let mut escaped = 0;
    for _ in 0..RUNS {
        let guard = QuietlyPanickyDrop("source");
        let items = (0..10u64).inspect(move |_| {
            let _ = &guard;
        });
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            p.job().timeout(Duration::ZERO).run(items, |_| Ok(()))
        }));
        match run {
            Err(_) => escaped += 1,
            Ok(result) => {
                let err = result.unwrap_err();
                assert!(err.report().unwrap().totals().is_balanced());
            }
        }
    }
    assert_eq!(
        escaped, 0,
        "a panic escaped run() {escaped} times in {RUNS} runs"
    );
}

/// f27 (found by the extended fault matrix): a worker of an order-keeping ordered pool that
/// dies by a panic outside a processor call — here its init closure — hands on no failing
/// turn, so its panic must cancel the run rather than wait at a position: before the fix
/// the dealer blocked for ever on the dead worker's lane and `run()` never returned.
#[test]
fn f27_an_ordered_pool_whose_worker_dies_outside_a_call_returns_the_panic() {
    let _dog = watchdog("ordered pool, worker dies outside a call", 60);
    quiet_injected_panics();
    struct Never;
    impl Processor<u64, u64> for Never {
        fn process(
            &mut self,
            x: u64,
            _: &Context,
            out: &mut pipework::processor::Emitter<'_, u64>,
        ) -> Result<(), BoxError> {
            out.emit(x);
            Ok(())
        }
    }
    for _ in 0..5 {
        let started = Instant::now();
        let init = |_: &Context<'_>| -> Result<Never, BoxError> { panic!("injected init panic") };
        let p = Pipeline::new().stage("s0", Ordered::with_init(1, init).window(1));
        let err = p.run(0..10u64, |_| Ok(())).unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "took {:?}",
            started.elapsed()
        );
        assert_eq!(
            err.to_string(),
            "stage 0 (s0) worker 0 panicked: injected init panic"
        );
    }
}

/// Found by the 30-minute soak: with retries configured, a stage keeps a copy of each item
/// for another attempt. When the processor failed for good, that copy was dropped before the
/// failure was recorded; a panic in its `Drop` then ended the worker first, and the stage's
/// error was neither returned nor counted as suppressed: two faults, one reported.
#[test]
fn f28_a_panicking_drop_of_the_copy_kept_for_retries_does_not_hide_the_failure() {
    let _dog = watchdog("retry copy's Drop panics", 30);
    quiet_injected_panics();
    /// Its clones panic when dropped; the original does not.
    struct Bomb(bool);
    impl Clone for Bomb {
        fn clone(&self) -> Self {
            Bomb(true)
        }
    }
    impl Drop for Bomb {
        fn drop(&mut self) {
            assert!(
                !self.0 || std::thread::panicking(),
                "injected drop panic of the kept copy"
            );
        }
    }
    let p = Pipeline::new().stage_with(
        "fails",
        Fifo::new(common::fallible(|_: Bomb, _: &Context| {
            Err::<u64, BoxError>("not transient".into())
        })),
        StageOptions::new().retry(pipework::Retry::new(3)),
    );
    let err = p.run(std::iter::once(Bomb(false)), |_| Ok(())).unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::Stage { .. }),
        "the stage's error comes first: {err}"
    );
    let report = err.report().unwrap();
    assert_eq!(
        report.suppressed_errors, 1,
        "the Drop panic after it: {report}"
    );
    assert!(report.totals().is_balanced(), "{report}");
}
