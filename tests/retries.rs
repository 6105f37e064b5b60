//! Retries: transient errors are retried with backoff; cancellation interrupts the backoff.

mod common;

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::{watchdog, within};
use pipework::{Context, ErrorKind, Failure, Fixed, Pipeline, Retry, StageOptions, Transient};

#[derive(Debug, Clone)]
struct Call(u32);

#[test]
fn smoke() {
    let _dog = watchdog("smoke", 10);
    let tries = AtomicU32::new(0);
    let p = Pipeline::new().stage_with(
        "flaky",
        Fixed::new(
            1,
            common::fallible(|c: Call, _: &Context| {
                if tries.fetch_add(1, Ordering::SeqCst) == 0 {
                    return Err(Transient::new("reset").into());
                }
                Ok(c.0)
            }),
        ),
        StageOptions::new().retry(Retry::new(1).backoff(Duration::from_millis(1))),
    );
    assert_eq!(p.collect([Call(5)]).unwrap().0, [5]);
}

#[test]
fn transient_errors_are_retried_then_the_policy_applies() {
    let _dog = watchdog("retries", 20);
    // Item k fails k times (transiently) before it works; 3 retries are allowed.
    let attempts: Vec<AtomicU32> = (0..6).map(|_| AtomicU32::new(0)).collect();
    let mut failed = Vec::new();
    let p = Pipeline::new().stage_with(
        "flaky",
        Fixed::new(
            3,
            common::fallible(|c: Call, _: &Context| {
                let n = attempts[c.0 as usize].fetch_add(1, Ordering::SeqCst);
                if n < c.0 {
                    return Err(Transient::new(format!("call {} attempt {n} failed", c.0)).into());
                }
                Ok(c.0)
            }),
        ),
        StageOptions::new()
            .retry(Retry::new(3).backoff(Duration::from_millis(1)))
            .route_failures_to(|f: Failure<Call>| {
                failed.push((f.item().0, f.error().to_string()));
            }),
    );
    let mut out = Vec::new();
    let report = p.run((0..6).map(Call), &mut out).unwrap();
    drop(p);
    out.sort_unstable();
    failed.sort();
    assert_eq!(out, [0, 1, 2, 3]);
    // Items 4 and 5 ran out of retries; the handler sees the inner error.
    assert_eq!(
        failed,
        [
            (4, "call 4 attempt 3 failed".to_owned()),
            (5, "call 5 attempt 3 failed".to_owned())
        ]
    );
    // 0 + 1 + 2 + 3 + 3 + 3 retries.
    assert_eq!(report.stages[0].retries, 12);
    assert!(report.totals().is_balanced());
}

#[test]
fn permanent_errors_are_not_retried() {
    let _dog = watchdog("permanent", 10);
    let calls = AtomicU32::new(0);
    let p = Pipeline::new().stage_with(
        "strict",
        Fixed::new(
            1,
            common::fallible(|_: Call, _: &Context| -> Result<u32, pipework::BoxError> {
                calls.fetch_add(1, Ordering::SeqCst);
                Err("bad request".into())
            }),
        ),
        StageOptions::new().retry(Retry::new(5)),
    );
    let err = p.collect([Call(1)]).unwrap_err();
    assert_eq!(format!("{err:#}"), "stage 0 (strict) failed: bad request");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[test]
fn cancellation_interrupts_the_backoff() {
    let _dog = watchdog("backoff cancel", 10);
    let p = Pipeline::new().stage_with(
        "always transient",
        Fixed::new(
            2,
            common::fallible(|_: Call, _: &Context| -> Result<u32, pipework::BoxError> {
                Err(Transient::new("try later").into())
            }),
        ),
        StageOptions::new().retry(Retry::new(10).backoff(Duration::from_secs(60))),
    );
    let err = within(Duration::from_secs(2), "run in backoff", || {
        p.job()
            .timeout(Duration::from_millis(100))
            .run((0..4).map(Call), |_| Ok(()))
            .unwrap_err()
    });
    assert!(matches!(err.kind(), ErrorKind::Deadline { .. }));
    let t = err.report().unwrap().totals();
    assert_eq!(t.cancelled, 4);
    assert!(t.is_balanced());
}

#[test]
fn backoff_doubles_up_to_the_maximum() {
    let _dog = watchdog("backoff", 10);
    let r = Retry::new(10)
        .backoff(Duration::from_millis(10))
        .max_backoff(Duration::from_millis(50));
    assert_eq!(r.attempts(), 10);
    let last = Mutex::new(None::<Instant>);
    let gaps = Mutex::new(Vec::new());
    let p = Pipeline::new().stage_with(
        "timed",
        Fixed::new(
            1,
            common::fallible(|_: Call, _: &Context| {
                let now = Instant::now();
                let mut gaps = gaps.lock().unwrap();
                if let Some(prev) = last.lock().unwrap().replace(now) {
                    gaps.push(now - prev);
                }
                if gaps.len() < 4 {
                    return Err(Transient::new("again").into());
                }
                Ok(())
            }),
        ),
        StageOptions::new().retry(r),
    );
    p.collect([Call(0)]).unwrap();
    let ms: Vec<u128> = gaps
        .lock()
        .unwrap()
        .iter()
        .map(std::time::Duration::as_millis)
        .collect();
    // 10, 20, 40, then capped at 50 (allowing for sleep overshoot).
    assert_eq!(ms.len(), 4);
    for (got, want) in ms.iter().zip([10, 20, 40, 50]) {
        assert!(*got >= want && *got < want + 40, "gaps {ms:?}");
    }
}
