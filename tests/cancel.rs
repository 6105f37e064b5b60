//! External cancellation: tokens and time limits stop a run promptly, with an error.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{sleepy, watchdog, within};
use pipework::{CancelToken, Context, Dynamic, ErrorKind, Fifo, Fixed, Pipeline, source};

const PROMPT: Duration = Duration::from_secs(2);

fn sleepy_pipeline() -> Pipeline<'static, u64> {
    Pipeline::new()
        .stage(
            "fast",
            Fixed::new(2, common::fallible(|x: u64, _: &Context| Ok(x))),
        )
        .stage(
            "sleepy",
            Dynamic::new(64, sleepy::<u64>(Duration::from_secs(30))),
        )
}

#[test]
fn smoke() {
    let _dog = watchdog("smoke", 10);
    let token = CancelToken::new();
    token.cancel();
    let err = sleepy_pipeline()
        .job()
        .cancel_token(&token)
        .run(0..10u64, |_| Ok(()))
        .unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::Cancelled));
}

#[test]
fn cancel_token_stops_the_run_from_another_thread() {
    let _dog = watchdog("token", 20);
    let p = sleepy_pipeline();
    let token = CancelToken::new();
    let canceller = {
        let token = token.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            token.cancel();
        })
    };
    let mut sunk = 0;
    let err = within(PROMPT, "cancelled run", || {
        p.job()
            .cancel_token(&token)
            .run(0..1000u64, |_| {
                sunk += 1;
                Ok(())
            })
            .unwrap_err()
    });
    canceller.join().unwrap();
    assert!(matches!(err.kind(), ErrorKind::Cancelled));
    assert_eq!(err.to_string(), "run cancelled");
    let t = err.report().unwrap().totals();
    assert_eq!(sunk, 0);
    assert!(t.cancelled > 0);
    assert!(t.is_balanced(), "{t:?}");
}

#[test]
fn a_token_cancelled_before_the_run_starts_nothing() {
    let _dog = watchdog("pre-cancelled", 10);
    let token = CancelToken::new();
    token.cancel();
    let pulled = AtomicUsize::new(0);
    let err = sleepy_pipeline()
        .job()
        .cancel_token(&token)
        .run(
            (0..10u64).inspect(|_| {
                pulled.fetch_add(1, Ordering::SeqCst);
            }),
            |_| Ok(()),
        )
        .unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::Cancelled));
    assert_eq!(pulled.load(Ordering::SeqCst), 0);
}

#[test]
fn one_token_cancels_several_runs() {
    let _dog = watchdog("shared token", 20);
    let p = sleepy_pipeline();
    let token = CancelToken::new();
    std::thread::scope(|s| {
        let runs: Vec<_> = (0..3)
            .map(|_| s.spawn(|| p.job().cancel_token(&token).run(0..100u64, |_| Ok(()))))
            .collect();
        std::thread::sleep(Duration::from_millis(100));
        let started = Instant::now();
        token.cancel();
        for run in runs {
            let err = run.join().unwrap().unwrap_err();
            assert!(matches!(err.kind(), ErrorKind::Cancelled));
        }
        assert!(started.elapsed() < PROMPT);
    });
}

#[test]
fn deadline_stops_the_run_and_is_reported() {
    let _dog = watchdog("deadline", 20);
    let p = sleepy_pipeline();
    let started = Instant::now();
    let err = p
        .job()
        .timeout(Duration::from_millis(150))
        .run(0..1000u64, |_| Ok(()))
        .unwrap_err();
    let took = started.elapsed();
    assert!(
        matches!(err.kind(), ErrorKind::Deadline { limit } if *limit == Duration::from_millis(150))
    );
    assert!(
        took >= Duration::from_millis(150) && took < PROMPT,
        "took {took:?}"
    );
    assert!(err.report().unwrap().totals().is_balanced());
}

#[test]
fn a_run_that_finishes_in_time_is_ok() {
    let _dog = watchdog("in time", 20);
    let p = Pipeline::new().stage(
        "pass",
        Fifo::new(common::fallible(|x: u64, _: &Context| Ok(x))),
    );
    let (out, _) = {
        let mut out = Vec::new();
        let r = p
            .job()
            .timeout(Duration::from_secs(10))
            .run(0..100u64, &mut out)
            .unwrap();
        (out, r)
    };
    assert_eq!(out.len(), 100);
}

#[test]
fn cancellation_wakes_a_source_blocked_on_a_channel() {
    let _dog = watchdog("channel source", 20);
    let (tx, rx) = crossbeam_channel::unbounded::<u64>();
    tx.send(1).unwrap(); // then nothing more, and the sender stays alive
    let p = Pipeline::new().stage(
        "pass",
        Fifo::new(common::fallible(|x: u64, _: &Context| Ok(x))),
    );
    let err = within(PROMPT, "blocked channel source", || {
        p.job()
            .timeout(Duration::from_millis(100))
            .run(source::receiver(rx), |_| Ok(()))
            .unwrap_err()
    });
    assert!(matches!(err.kind(), ErrorKind::Deadline { .. }));
    drop(tx);
}

#[test]
fn cancellation_from_inside_a_processor() {
    let _dog = watchdog("self cancel", 20);
    let p = Pipeline::new().stage(
        "stop at 10",
        Fifo::new(common::fallible(|x: u64, cx: &Context| {
            if x == 10 {
                cx.cancel_token().cancel();
            }
            Ok(x)
        })),
    );
    let err = p.run(0..u64::MAX, |_| Ok(())).unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::Cancelled));
}

#[test]
fn a_cancelled_run_never_returns_ok_with_partial_output() {
    let _dog = watchdog("never ok", 20);
    let p = Pipeline::new().stage(
        "slowish",
        Fixed::new(2, sleepy::<u64>(Duration::from_millis(1))),
    );
    for delay_ms in [0, 1, 5, 20] {
        let token = CancelToken::new();
        let t = token.clone();
        let c = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(delay_ms));
            t.cancel();
        });
        let mut got = 0u64;
        let result = p.job().cancel_token(&token).run(0..200u64, |_| {
            got += 1;
            Ok(())
        });
        c.join().unwrap();
        match result {
            Ok(_) => assert_eq!(got, 200, "Ok with partial output after {delay_ms} ms"),
            Err(e) => assert!(matches!(e.kind(), ErrorKind::Cancelled)),
        }
    }
}
