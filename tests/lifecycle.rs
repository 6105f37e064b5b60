//! What a run borrows, where the sink runs, and running one definition many times.

// Pedantic lints this test allows, and why:
// - `cast_possible_wrap`: small counts, cast to a signed type for arithmetic.
// - `items_after_statements`: helpers sit next to the one scenario that uses them.
// - `unnecessary_wraps`: steps used as processors return `Result`, failing or not.
#![allow(
    clippy::cast_possible_wrap,
    clippy::items_after_statements,
    clippy::unnecessary_wraps
)]

mod common;

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use common::{sleepy, watchdog};
use pipework::{Broadcast, Context, Dynamic, Fifo, Fixed, Pipeline};

#[test]
fn smoke() {
    let _dog = watchdog("smoke", 10);
    let p = Pipeline::new().stage(
        "id",
        Fifo::new(common::fallible(|x: u8, _: &Context| Ok(x))),
    );
    assert_eq!(p.collect([1, 2, 3]).unwrap().0, [1, 2, 3]);
}

/// A closure cannot return a borrow of its argument; a function can.
fn with_len<'a>(s: &'a str, _: &Context) -> Result<(&'a str, usize), pipework::BoxError> {
    Ok((s, s.len()))
}

#[test]
fn stages_borrow_from_the_callers_stack() {
    let _dog = watchdog("borrow", 10);
    // Not 'static: a local table and a local offset, borrowed by every stage.
    let names = vec!["zero".to_owned(), "one".to_owned(), "two".to_owned()];
    let offset = 1usize;
    let names_ref = &names;
    let p = Pipeline::new()
        .stage(
            "shift",
            Fixed::new(
                2,
                common::fallible(|i: usize, _: &Context| Ok((i + offset) % 3)),
            ),
        )
        .stage(
            "name",
            Dynamic::new(
                4,
                common::fallible(move |i: usize, _: &Context| Ok(names_ref[i].as_str())),
            ),
        )
        .stage("len", Fifo::new(common::fallible(with_len)));
    let (mut out, _) = p.collect(0..3usize).unwrap();
    out.sort_unstable();
    assert_eq!(out, [("one", 3), ("two", 3), ("zero", 4)]);
    // Items may borrow too.
    let words: Vec<String> = (0..100).map(|i| format!("w{i}")).collect();
    let q = Pipeline::new().stage(
        "len",
        Fixed::new(2, common::fallible(|w: &String, _: &Context| Ok(w.len()))),
    );
    let (lens, _) = q.collect(words.iter()).unwrap();
    assert_eq!(
        lens.iter().sum::<usize>(),
        words.iter().map(String::len).sum()
    );
}

#[test]
fn the_sink_runs_on_the_calling_thread_and_may_hold_an_rc() {
    let _dog = watchdog("rc sink", 10);
    let seen: Rc<RefCell<Vec<u32>>> = Rc::new(RefCell::new(Vec::new()));
    let sink_seen = Rc::clone(&seen);
    let caller = std::thread::current().id();
    let p = Pipeline::new().stage(
        "sq",
        Fixed::new(3, common::fallible(|x: u32, _: &Context| Ok(x * x))),
    );
    p.run(0..100u32, move |x| {
        assert_eq!(std::thread::current().id(), caller);
        sink_seen.borrow_mut().push(x);
        Ok(())
    })
    .unwrap();
    let mut got = seen.borrow().clone();
    got.sort_unstable();
    assert_eq!(got, (0..100u32).map(|x| x * x).collect::<Vec<_>>());
}

fn service() -> Pipeline<'static, u32> {
    Pipeline::new()
        .stage(
            "validate",
            Dynamic::new(100, sleepy::<u32>(Duration::from_millis(1))),
        )
        .stage(
            "fan",
            Broadcast::new()
                .branch(Fifo::new(common::fallible(|x: u32, _: &Context| Ok(x))))
                .branch(Fixed::new(
                    2,
                    common::fallible(|x: u32, _: &Context| Ok(x + 1000)),
                )),
        )
        .stage(
            "store",
            Fixed::new(2, common::fallible(|x: u32, _: &Context| Ok(x))),
        )
}

#[test]
fn one_definition_serves_many_runs_without_wearing_out() {
    let _dog = watchdog("many runs", 60);
    let p = service();
    for round in 0..50u32 {
        let (out, report) = p.collect(0..20u32).unwrap();
        assert_eq!(out.len(), 40, "round {round}");
        assert!(report.totals().is_balanced());
    }
}

#[test]
fn one_definition_runs_from_several_threads_at_once() {
    let _dog = watchdog("concurrent runs", 60);
    let p = service();
    std::thread::scope(|s| {
        let runs: Vec<_> = (0..4u32)
            .map(|t| {
                let p = &p;
                s.spawn(move || {
                    for round in 0..10u32 {
                        let base = t * 1_000_000 + round * 100;
                        let (mut out, _) = p.collect(base..base + 50).unwrap();
                        out.sort_unstable();
                        let mut expected: Vec<u32> =
                            (base..base + 50).flat_map(|x| [x, x + 1000]).collect();
                        expected.sort_unstable();
                        assert_eq!(out, expected);
                    }
                })
            })
            .collect();
        for r in runs {
            r.join().unwrap();
        }
    });
}

#[test]
fn a_fifo_starts_every_run_with_fresh_state() {
    let _dog = watchdog("fifo state", 10);
    let mut count = 0u32;
    let p = Pipeline::new().stage(
        "number",
        Fifo::new(common::fallible(move |x: char, _: &Context| {
            count += 1;
            Ok((count, x))
        })),
    );
    assert_eq!(p.collect(['a', 'b']).unwrap().0, [(1, 'a'), (2, 'b')]);
    // Each run clones the processor as it was defined: no state leaks between runs.
    assert_eq!(p.collect(['c']).unwrap().0, [(1, 'c')]);
}

#[test]
fn backpressure_bounds_items_in_flight() {
    let _dog = watchdog("backpressure", 20);
    use std::sync::atomic::{AtomicI64, Ordering};
    let in_flight = AtomicI64::new(0);
    let peak = AtomicI64::new(0);
    let capacity = 2usize;
    let max_chunk = 4usize;
    let p = Pipeline::new()
        .capacity(capacity)
        .max_chunk(max_chunk)
        .stage(
            "a",
            Fifo::new(common::fallible(|x: u64, _: &Context| Ok(x))),
        )
        .stage(
            "b",
            Fifo::new(common::fallible(|x: u64, _: &Context| Ok(x))),
        );
    let source = (0..20_000u64).inspect(|_| {
        let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        peak.fetch_max(now, Ordering::SeqCst);
    });
    p.run(source, |x| {
        if x % 100 == 0 {
            // A slow sink, so that the queues fill up.
            std::thread::sleep(Duration::from_micros(100));
        }
        in_flight.fetch_sub(1, Ordering::SeqCst);
        Ok(())
    })
    .unwrap();
    // Per edge: the queue, plus the chunk its producer is filling and the one its consumer
    // is emptying; plus one item in each worker's hands.
    let edges = 3i64;
    let bound = edges * (capacity as i64 + 2) * max_chunk as i64 + 2;
    let peak = peak.load(Ordering::SeqCst);
    assert!(peak <= bound, "{peak} items in flight, bound {bound}");
}

#[test]
fn threads_run_on_the_stack_size_asked_for_and_too_small_is_a_config_error() {
    let _dog = watchdog("stack size", 20);
    let p = Pipeline::new().stack_size(64 << 10).stage(
        "d",
        Dynamic::new(
            50,
            common::fallible(|x: u64, cx: &Context| {
                cx.sleep(Duration::from_millis(5))?;
                Ok(x)
            }),
        ),
    );
    let (out, _) = p.collect(0..200u64).unwrap();
    assert_eq!(out.len(), 200);
    let err = Pipeline::new()
        .stack_size(1024)
        .stage("f", Fifo::new(pipework::map(|x: u64| x)))
        .collect(0..1u64)
        .unwrap_err();
    assert!(
        matches!(err.kind(), pipework::ErrorKind::Config { .. }),
        "{err}"
    );
}
