//! Failure routing: failed items go to a handler on the calling thread and the run goes on.

mod common;

use std::time::Duration;

use common::{watchdog, watchdog_quiet};
use pipework::{
    BoxError, CancelToken, Context, Dynamic, ErrorKind, Fifo, Fixed, Pipeline, StageOptions,
};

#[derive(Debug, Clone, PartialEq)]
struct Task {
    id: u32,
}

fn validate(t: Task, _: &Context) -> Result<Task, BoxError> {
    if t.id % 10 == 1 {
        Err(format!("task {} is invalid", t.id).into())
    } else {
        Ok(t)
    }
}

#[test]
fn smoke() {
    let _dog = watchdog("smoke", 10);
    let p = Pipeline::new().stage_with(
        "validate",
        Fifo::new(validate),
        StageOptions::new().route_failures(),
    );
    let mut failed = Vec::new();
    let mut ok = Vec::new();
    p.job()
        .on_failure(|f| failed.push(f.into_item::<Task>().unwrap().id))
        .run((0..20).map(|id| Task { id }), &mut ok)
        .unwrap();
    assert_eq!(failed, [1, 11]);
    assert_eq!(ok.len(), 18);
}

#[test]
fn failed_items_reach_the_handler_with_stage_error_and_input() {
    let _dog = watchdog("routing", 20);
    let p = Pipeline::new()
        .stage_with(
            "validate",
            Fixed::new(3, validate),
            StageOptions::new().route_failures(),
        )
        .stage_with(
            "store",
            Dynamic::new(8, |t: Task, _: &Context| {
                if t.id % 10 == 2 {
                    Err("disk full".into())
                } else {
                    Ok(t.id)
                }
            }),
            StageOptions::new().route_failures(),
        );
    let mut failures = Vec::new();
    let caller = std::thread::current().id();
    let mut out = Vec::new();
    let report = p
        .job()
        .on_failure(|f| {
            assert_eq!(
                std::thread::current().id(),
                caller,
                "handler off the calling thread"
            );
            let stage = f.stage().name().to_owned();
            let error = f.error().to_string();
            let task = f.into_item::<Task>().expect("the input is a Task");
            failures.push((task.id, stage, error));
        })
        .run((0..1000).map(|id| Task { id }), &mut out)
        .unwrap();
    failures.sort();
    assert_eq!(failures.len(), 200);
    assert_eq!(
        failures[0],
        (1, "validate".to_owned(), "task 1 is invalid".to_owned())
    );
    assert_eq!(failures[1], (2, "store".to_owned(), "disk full".to_owned()));
    assert_eq!(out.len(), 800);
    let t = report.totals();
    assert_eq!((t.failed, t.routed, t.sunk), (200, 200, 800));
    assert_eq!(
        (report.stages[0].routed, report.stages[1].routed),
        (100, 100)
    );
    assert!(t.is_balanced());
}

#[test]
fn failures_are_delivered_even_when_the_run_is_aborted() {
    let _dog = watchdog("aborted routing", 20);
    let p = Pipeline::new()
        .stage_with(
            "validate",
            Fixed::new(2, validate),
            StageOptions::new().route_failures(),
        )
        .capacity(1);
    let token = CancelToken::new();
    let mut delivered = 0u64;
    let err = p
        .job()
        .cancel_token(&token)
        .on_failure(|_| delivered += 1)
        .run((0..).map(|id| Task { id }), |t: Task| {
            if t.id > 5000 {
                token.cancel();
                std::thread::sleep(Duration::from_millis(1));
            }
            Ok(())
        })
        .unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::Cancelled));
    let r = err.report().unwrap();
    assert_eq!(delivered, r.totals().routed, "a routed failure was lost");
    assert!(delivered > 400);
    assert!(r.totals().is_balanced());
}

#[test]
fn a_panicking_failure_handler_aborts_the_run() {
    let _dog = watchdog_quiet("handler panic", 20);
    let p = Pipeline::new().stage_with(
        "validate",
        Fifo::new(validate),
        StageOptions::new().route_failures(),
    );
    let err = p
        .job()
        .on_failure(|_| panic!("injected handler panic"))
        .run((0..1000).map(|id| Task { id }), |_| Ok(()))
        .unwrap_err();
    assert!(matches!(
        err.kind(),
        ErrorKind::Panic {
            site: pipework::Site::FailureHandler,
            ..
        }
    ));
}
