//! Failure routing: failed items go to their stage's handler, typed, on the calling thread,
//! and the run goes on.

mod common;

use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use common::{watchdog, watchdog_quiet};
use pipework::{
    BoxError, CancelToken, Context, Dynamic, ErrorKind, Failure, Fifo, Fixed, Pipeline,
    StageOptions, with_context,
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
    let mut failed = Vec::new();
    let mut ok = Vec::new();
    {
        let p = Pipeline::new().stage_with(
            "validate",
            Fifo::new(with_context(validate)),
            StageOptions::new().route_failures_to(|f: Failure<Task>| failed.push(f.into_item().id)),
        );
        p.run((0..20).map(|id| Task { id }), &mut ok).unwrap();
    }
    assert_eq!(failed, [1, 11]);
    assert_eq!(ok.len(), 18);
}

#[test]
fn failed_items_reach_the_handler_with_stage_error_and_input() {
    let _dog = watchdog("routing", 20);
    let failures = Mutex::new(Vec::new());
    let caller = std::thread::current().id();
    let handler = |f: Failure<Task>| {
        assert_eq!(
            std::thread::current().id(),
            caller,
            "handler off the calling thread"
        );
        let stage = f.stage().name().to_owned();
        let error = f.error().to_string();
        let task = f.into_item();
        failures.lock().unwrap().push((task.id, stage, error));
    };
    let p = Pipeline::new()
        .stage_with(
            "validate",
            Fixed::new(3, with_context(validate)),
            StageOptions::new().route_failures_to(handler),
        )
        .stage_with(
            "store",
            Dynamic::new(
                8,
                common::fallible(|t: Task, _: &Context| {
                    if t.id % 10 == 2 {
                        Err("disk full".into())
                    } else {
                        Ok(t)
                    }
                }),
            ),
            StageOptions::new().route_failures_to(handler),
        );
    let mut out = Vec::new();
    let report = p.run((0..1000).map(|id| Task { id }), &mut out).unwrap();
    drop(p);
    let mut failures = failures.into_inner().unwrap();
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
    let mut delivered = 0u64;
    let p = Pipeline::new()
        .stage_with(
            "validate",
            Fixed::new(2, with_context(validate)),
            StageOptions::new().route_failures_to(|_| delivered += 1),
        )
        .capacity(1);
    let token = CancelToken::new();
    let err = p
        .job()
        .cancel_token(&token)
        .run((0..).map(|id| Task { id }), |t: Task| {
            if t.id > 5000 {
                token.cancel();
                std::thread::sleep(Duration::from_millis(1));
            }
            Ok(())
        })
        .unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::Cancelled));
    drop(p);
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
        Fifo::new(with_context(validate)),
        StageOptions::new().route_failures_to(|_| panic!("injected handler panic")),
    );
    let err = p
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

#[test]
fn handlers_get_items_that_borrow_and_batches_item_by_item() {
    let _dog = watchdog("borrowed items", 10);
    // Items borrowed from the caller: no `'static` anywhere.
    let words: Vec<String> = ["1", "two", "3", "four"].map(String::from).to_vec();
    let bad = Mutex::new(Vec::new());
    let p = Pipeline::new().stage_with(
        "parse",
        Fixed::new(2, pipework::try_map(|s: &str| s.parse::<u32>())),
        StageOptions::new().route_failures_to(|f: Failure<&str>| {
            bad.lock().unwrap().push(*f.item());
        }),
    );
    let (mut good, report) = p.collect(words.iter().map(String::as_str)).unwrap();
    good.sort_unstable();
    drop(p);
    let mut bad = bad.into_inner().unwrap();
    bad.sort_unstable();
    assert_eq!((good, bad), (vec![1, 3], vec!["four", "two"]));
    assert_eq!(report.stage("parse").unwrap().routed, 2);
}

#[test]
fn a_handler_that_runs_its_pipeline_again_fails_that_run_instead_of_deadlocking() {
    static PIPELINE: OnceLock<Pipeline<'static, u32, u32>> = OnceLock::new();
    static NESTED: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let _dog = watchdog_quiet("reentrant handler", 20);
    let p = PIPELINE.get_or_init(|| {
        Pipeline::new().stage_with(
            "even",
            Fifo::new(pipework::try_map(|x: u32| {
                if x % 2 == 1 { Err("odd") } else { Ok(x) }
            })),
            StageOptions::new().route_failures_to(|f: Failure<u32>| {
                // Runs the pipeline this handler belongs to on a failing item: the nested
                // run's failure comes back to this handler while it runs.
                let nested = PIPELINE.get().unwrap().collect([f.into_item() + 10]);
                let outcome = match nested {
                    Ok(_) => "ok".to_owned(),
                    Err(e) => e.to_string(),
                };
                NESTED.lock().unwrap().push(outcome);
            }),
        )
    });
    let (out, _) = p.collect(0..2).unwrap();
    assert_eq!(out, [0]);
    let nested = NESTED.lock().unwrap();
    assert_eq!(nested.len(), 1);
    assert!(
        nested[0].starts_with("failure handler panicked: a failure handler was called again"),
        "{nested:?}"
    );
}
