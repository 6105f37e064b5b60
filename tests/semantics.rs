//! What users expect beyond the synthetic suites: pools that survive a cost shift, a clean
//! early stop, per-run stage state, deadlines inside processors.

// Pedantic lints this test allows, and why:
// - `cast_possible_truncation`: small counts and indices (thousands) fit the narrower type.
#![allow(clippy::cast_possible_truncation)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::watchdog;
use pipework::runner::StageRunner;
use pipework::{Context, Dynamic, Emitter, ErrorKind, Fifo, Fixed, Ordered, Pipeline, Processor};

const CHEAP: u64 = 20_000;
const SLOW: usize = 10;

/// A cost shift through the runner `make` builds around a processor: `CHEAP` trivial
/// items, then (after the source pauses for `pause`) `SLOW` items that each wait until all
/// `SLOW` are in progress at once (or 5 s). Returns how many got there.
fn rendezvous<R>(pause: Duration, make: impl Fn(Step) -> R) -> usize
where
    R: StageRunner<u64, u64> + 'static,
{
    let arrived: &'static AtomicUsize = Box::leak(Box::new(AtomicUsize::new(0)));
    let met: &'static AtomicUsize = Box::leak(Box::new(AtomicUsize::new(0)));
    let p = Pipeline::new().stage("shift", make(Step { arrived, met }));
    let source = (0..CHEAP + SLOW as u64).inspect(move |&x| {
        if x == CHEAP {
            std::thread::sleep(pause);
        }
    });
    let (mut out, report) = p.collect(source).unwrap();
    assert!(report.totals().is_balanced());
    // An ordered pool keeps order; the others may not.
    if report.stages[0].kind != "ordered" {
        out.sort_unstable();
    }
    assert!(
        out.iter().copied().eq(0..CHEAP + SLOW as u64),
        "outputs lost or out of order"
    );
    met.load(Ordering::SeqCst)
}

/// The processor of [`rendezvous`]: [`slow_step`] on every item.
#[derive(Clone, Copy)]
struct Step {
    arrived: &'static AtomicUsize,
    met: &'static AtomicUsize,
}

impl Processor<u64, u64> for Step {
    fn process(
        &mut self,
        x: u64,
        cx: &Context<'_>,
        out: &mut Emitter<'_, u64>,
    ) -> Result<(), pipework::BoxError> {
        out.emit(slow_step(x, cx, self.arrived, self.met));
        Ok(())
    }
}

/// `runs` rendezvous through `make`'s runner: every slow item gets there every time.
fn all_slow_items_meet<R>(runs: usize, pause: Duration, make: impl Fn(Step) -> R)
where
    R: StageRunner<u64, u64> + 'static,
{
    for _ in 0..runs {
        let met = rendezvous(pause, &make);
        assert_eq!(met, SLOW, "only {met} of {SLOW} slow items ran at once");
    }
}

fn slow_step(x: u64, cx: &Context, arrived: &AtomicUsize, met: &AtomicUsize) -> u64 {
    if x >= CHEAP {
        arrived.fetch_add(1, Ordering::SeqCst);
        let give_up = Instant::now() + Duration::from_secs(5);
        while arrived.load(Ordering::SeqCst) < SLOW && Instant::now() < give_up {
            if cx.sleep(Duration::from_millis(1)).is_err() {
                break;
            }
        }
        if arrived.load(Ordering::SeqCst) >= SLOW {
            met.fetch_add(1, Ordering::SeqCst);
        }
    }
    x
}

#[test]
fn a_fixed_pool_keeps_every_worker_busy_when_item_cost_shifts() {
    let _dog = watchdog("cost shift fixed", 120);
    all_slow_items_meet(5, Duration::ZERO, |step| Fixed::new(SLOW, step));
}

#[test]
fn a_dynamic_pool_keeps_every_worker_busy_when_item_cost_shifts() {
    let _dog = watchdog("cost shift dynamic", 120);
    all_slow_items_meet(5, Duration::ZERO, |step| Dynamic::new(SLOW, step));
}

#[test]
fn an_ordered_pool_keeps_every_worker_busy_when_item_cost_shifts_and_keeps_order() {
    let _dog = watchdog("cost shift ordered", 120);
    all_slow_items_meet(5, Duration::ZERO, |step| Ordered::new(SLOW, step));
}

fn shifted<R: StageRunner<u64, u64>>(runner: R) -> Duration {
    let p = Pipeline::new().stage("shift", runner);
    let started = Instant::now();
    let (mut out, report) = p.collect(0..CHEAP + 10).unwrap();
    if report.stages[0].kind != "ordered" {
        out.sort_unstable();
    }
    assert!(
        out.iter().copied().eq(0..CHEAP + 10),
        "outputs lost or out of order"
    );
    started.elapsed()
}

fn sleepy_after_cheap(x: u64, cx: &Context) -> Result<u64, pipework::BoxError> {
    if x >= CHEAP {
        cx.sleep(Duration::from_millis(200))?;
    }
    Ok(x)
}

#[test]
fn slow_items_after_cheap_ones_finish_near_the_ideal_time() {
    let _dog = watchdog("cost shift timing", 60);
    // Ten 200 ms items on ten workers: about 200 ms, a little more for a dynamic pool
    // (which grows while the first slow item runs). Before the change the items ran one
    // after another in one worker's chunk: about 2 s. The bound leaves room for a loaded
    // 2-core machine.
    let fixed = shifted(Fixed::new(10, common::fallible(sleepy_after_cheap)));
    assert!(fixed < Duration::from_secs(1), "fixed pool took {fixed:?}");
    let dynamic = shifted(Dynamic::new(10, common::fallible(sleepy_after_cheap)));
    assert!(
        dynamic < Duration::from_secs(1),
        "dynamic pool took {dynamic:?}"
    );
    // An ordered pool lends the rest of a stuck worker's chunk to idle siblings.
    let ordered = shifted(Ordered::new(10, common::fallible(sleepy_after_cheap)));
    assert!(
        ordered < Duration::from_secs(1),
        "ordered pool took {ordered:?}"
    );
}

#[test]
fn every_run_of_a_fifo_gets_its_own_state_and_concurrent_runs_overlap() {
    let _dog = watchdog("per-run state", 30);
    let inside = AtomicUsize::new(0);
    let overlapped = AtomicUsize::new(0);
    let (inside, overlapped) = (&inside, &overlapped);
    let mut seen = 0u32;
    let p = Pipeline::new().stage(
        "count",
        Fifo::new(common::fallible(move |x: u32, _: &Context| {
            seen += 1;
            if inside.fetch_add(1, Ordering::SeqCst) > 0 {
                overlapped.fetch_add(1, Ordering::SeqCst);
            }
            std::thread::sleep(Duration::from_millis(2));
            inside.fetch_sub(1, Ordering::SeqCst);
            Ok((seen, x))
        })),
    );
    std::thread::scope(|s| {
        let runs: Vec<_> = (0..2)
            .map(|_| s.spawn(|| p.collect(0..12u32).unwrap().0))
            .collect();
        for r in runs {
            let out = r.join().unwrap();
            // Each run counts from 1: no state from the other run.
            assert_eq!(
                out.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
                (1..=12).collect::<Vec<_>>()
            );
        }
    });
    assert!(
        overlapped.load(Ordering::SeqCst) > 0,
        "the two runs took turns"
    );
}

fn stop_after<R: StageRunner<u64, u64>>(runner: R, n: usize) -> (Vec<u64>, pipework::Report) {
    let p = Pipeline::new()
        .stage(
            "first",
            Fixed::new(2, common::fallible(|x: u64, _: &Context| Ok(x))),
        )
        .stage("under test", runner);
    let mut got = Vec::new();
    let report = p
        .run(0..1_000_000u64, |x| {
            if got.len() == n {
                return Err(pipework::Stop.into());
            }
            got.push(x);
            Ok(())
        })
        .unwrap();
    (got, report)
}

#[test]
fn a_sink_can_stop_the_run_early_with_every_runner_kind() {
    let _dog = watchdog("early stop", 60);
    let id = common::fallible(|x: u64, _: &Context| Ok(x));
    for n in [0, 1, 1_000] {
        let runs = [
            ("fifo", stop_after(Fifo::new(id), n)),
            ("fixed", stop_after(Fixed::new(3, id), n)),
            ("dynamic", stop_after(Dynamic::new(8, id), n)),
            ("ordered", stop_after(pipework::Ordered::new(3, id), n)),
            (
                "batch",
                stop_after(
                    pipework::Batch::new(
                        7,
                        Duration::from_millis(5),
                        common::fallible(|b: Vec<u64>, _: &Context| Ok(b[0])),
                    ),
                    n,
                ),
            ),
            (
                "broadcast",
                stop_after(
                    pipework::Broadcast::new()
                        .branch(Fifo::new(id))
                        .branch(Fixed::new(2, id)),
                    n,
                ),
            ),
        ];
        for (kind, (got, report)) in runs {
            assert_eq!(got.len(), n, "{kind}");
            assert!(report.stopped_early, "{kind}");
            let totals = report.totals();
            assert!(totals.is_balanced(), "{kind}: {report}");
            assert_eq!(totals.sunk, n as u64, "{kind}");
            assert!(
                totals.read < 1_000_000,
                "{kind}: the source was not stopped"
            );
        }
    }
}

#[test]
fn an_ordered_pipeline_stopped_early_gives_an_exact_prefix() {
    let _dog = watchdog("ordered stop", 30);
    let id = common::fallible(|x: u64, _: &Context| Ok(x));
    let p = Pipeline::new()
        .stage("a", Fifo::new(id))
        .stage("b", pipework::Ordered::new(4, id));
    for _ in 0..20 {
        let mut got = Vec::new();
        let report = p
            .run(0..100_000u64, |x| {
                if got.len() == 5_000 {
                    return Err(pipework::Stop.into());
                }
                got.push(x);
                Ok(())
            })
            .unwrap();
        assert!(report.stopped_early);
        assert_eq!(got.len(), 5_000);
        assert!(got.iter().copied().eq(0..5_000));
    }
}

#[test]
fn an_error_before_the_stop_is_still_returned() {
    let _dog = watchdog("error then stop", 30);
    let p = Pipeline::new().stage(
        "fails",
        Fifo::new(common::fallible(|x: u64, _: &Context| {
            if x == 3 { Err("three".into()) } else { Ok(x) }
        })),
    );
    let err = p
        .run(0..10u64, |x| {
            if x >= 5 {
                Err(pipework::Stop.into())
            } else {
                Ok(())
            }
        })
        .unwrap_err();
    assert!(format!("{err:#}").contains("three"), "{err:#}");
}

#[test]
fn processors_see_the_run_deadline() {
    let _dog = watchdog("deadline in context", 30);
    let p = Pipeline::new().stage(
        "client",
        Fixed::new(
            2,
            common::fallible(|_: u64, cx: &Context| {
                Ok((
                    cx.deadline().is_some(),
                    cx.remaining().unwrap_or(Duration::MAX),
                ))
            }),
        ),
    );
    let (out, _) = p
        .job()
        .timeout(Duration::from_secs(5))
        .collect(0..4u64)
        .unwrap();
    assert!(
        out.iter()
            .all(|&(has, left)| has && left <= Duration::from_secs(5))
    );
    let (out, _) = p.collect(0..4u64).unwrap();
    assert!(out.iter().all(|&(has, left)| !has && left == Duration::MAX));
}

#[test]
fn a_processor_blocked_in_a_foreign_call_can_bound_it_by_the_deadline() {
    let _dog = watchdog("deadline passed on", 30);
    // A "client" whose calls take 2 s and that gives up after the timeout it is given:
    // passed the run's remaining time, the run comes back near its 50 ms limit (with the
    // deadline, or with the client's own timeout if that is seen first) instead of after
    // 2 s.
    let p = Pipeline::new().stage(
        "client",
        Fixed::new(
            2,
            common::fallible(|x: u64, cx: &Context| {
                let call = Duration::from_secs(2);
                let timeout = cx.remaining().unwrap_or(call);
                std::thread::sleep(timeout.min(call));
                if timeout < call {
                    return Err("client timed out".into());
                }
                Ok(x)
            }),
        ),
    );
    let started = Instant::now();
    let err = p
        .job()
        .timeout(Duration::from_millis(50))
        .run(0..4u64, |_| Ok(()))
        .unwrap_err();
    let took = started.elapsed();
    let timed_out = matches!(err.kind(), pipework::ErrorKind::Deadline { .. })
        || format!("{err:#}").contains("client timed out");
    assert!(timed_out, "{err}");
    assert!(took < Duration::from_secs(1), "{took:?}");
}

/// A command-line tool's shape: parse lines in order, work on them in an ordered pool, write
/// in order; line `bad` does not parse (or panics, with `panics`).
fn tool(bad: u64, panics: bool) -> Pipeline<'static, String, u64> {
    Pipeline::new()
        .stage(
            "parse",
            Fifo::new(common::fallible(move |line: String, _: &Context| {
                let n: u64 = line.parse()?;
                if n == bad {
                    assert!(!panics, "injected: line {n}");
                    return Err(format!("line {n} is bad").into());
                }
                Ok(n)
            })),
        )
        .stage(
            "work",
            pipework::Ordered::new(4, common::fallible(|n: u64, _: &Context| Ok(n * 2))),
        )
}

fn lines(n: u64) -> impl Iterator<Item = String> + Send {
    (1..=n).map(|i| i.to_string())
}

#[test]
fn an_error_in_an_ordered_pipeline_takes_effect_at_its_position() {
    let _dog = watchdog("ordered error prefix", 120);
    common::quiet_injected_panics();
    for panics in [false, true] {
        let p = tool(100_001, panics);
        for _ in 0..5 {
            let mut written = 0u64;
            let err = p
                .run(lines(200_000), |n: u64| {
                    assert_eq!(n, (written + 1) * 2, "out of order");
                    written += 1;
                    Ok(())
                })
                .unwrap_err();
            assert_eq!(written, 100_000, "panics: {panics}: {err}");
            assert_eq!(
                err.stage().map(pipework::StageId::name),
                Some("parse"),
                "{err}"
            );
            assert!(err.report().unwrap().totals().is_balanced());
        }
    }
}

#[test]
fn an_error_at_the_first_or_the_last_item_gives_the_exact_prefix() {
    let _dog = watchdog("prefix edges", 60);
    for (bad, total) in [(1u64, 1_000u64), (1_000, 1_000), (2, 3)] {
        let p = tool(bad, false);
        let mut written = 0u64;
        let err = p
            .run(lines(total), |_| {
                written += 1;
                Ok(())
            })
            .unwrap_err();
        assert_eq!(written, bad - 1, "bad line {bad} of {total}: {err}");
    }
}

#[test]
fn a_source_error_in_an_ordered_pipeline_lets_everything_read_before_it_through() {
    let _dog = watchdog("source prefix", 60);
    let p = Pipeline::new()
        .stage(
            "a",
            Fifo::new(common::fallible(|x: u64, _: &Context| Ok(x))),
        )
        .stage(
            "b",
            pipework::Ordered::new(3, common::fallible(|x: u64, _: &Context| Ok(x))),
        );
    for _ in 0..10 {
        let items = (0..50_000u64).map(|x| {
            if x == 40_000 {
                Err(std::io::Error::other("disk went away"))
            } else {
                Ok(x)
            }
        });
        let mut got = Vec::new();
        let err = p
            .run(pipework::source::fallible(items), &mut got)
            .unwrap_err();
        assert!(
            matches!(err.kind(), pipework::ErrorKind::Source { .. }),
            "{err}"
        );
        assert_eq!(got.len(), 40_000);
        assert!(got.iter().copied().eq(0..40_000));
    }
}

#[test]
fn a_later_stage_failing_on_an_earlier_item_wins() {
    let _dog = watchdog("two ordered errors", 60);
    // Stage "first" fails at item 900; stage "second" at item 100, which comes first.
    let p = Pipeline::new()
        .stage(
            "first",
            Fifo::new(common::fallible(|x: u64, _: &Context| {
                if x == 900 { Err("first".into()) } else { Ok(x) }
            })),
        )
        .stage(
            "second",
            pipework::Ordered::new(
                2,
                common::fallible(|x: u64, _: &Context| {
                    if x == 100 {
                        Err("second".into())
                    } else {
                        Ok(x)
                    }
                }),
            ),
        );
    for _ in 0..10 {
        let mut got = Vec::new();
        let err = p.run(0..1_000u64, &mut got).unwrap_err();
        assert_eq!(
            err.stage().map(pipework::StageId::name),
            Some("second"),
            "{err}"
        );
        assert_eq!(got.len(), 100);
        assert!(got.iter().copied().eq(0..100));
        let report = err.report().unwrap();
        assert!(report.totals().is_balanced(), "{report}");
    }
}

/// A small deterministic generator, so a failing topology can be replayed from its seed.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

#[test]
fn random_order_keeping_topologies_give_the_exact_prefix_before_a_failure() {
    let _dog = watchdog("random ordered prefixes", 240);
    common::quiet_injected_panics();
    let mut rng = Lcg(0x5eed);
    for case in 0..150 {
        let stages = 1 + rng.below(4) as usize;
        let failing_stage = rng.below(stages as u64) as usize;
        let items = 1 + rng.below(3_000);
        let bad = rng.below(items); // the item that fails
        let panics = rng.below(2) == 0;
        // Half the cases: a run of slow items (2 ms) around the failing one, which stuck
        // ordered workers lend to their siblings; a third: a second failure in the same
        // stage at a later item, which must not win.
        let slow = if rng.below(2) == 0 {
            bad.saturating_sub(rng.below(12))..bad + 1 + rng.below(12)
        } else {
            0..0
        };
        let later = if rng.below(3) == 0 {
            Some(bad + 1 + rng.below(20))
        } else {
            None
        };
        let max_chunk = [1usize, 7, 256][rng.below(3) as usize];
        let mut p: Pipeline<'_, u64> = Pipeline::new().max_chunk(max_chunk);
        let mut kinds = Vec::new();
        for i in 0..stages {
            let fails = i == failing_stage;
            let slow = slow.clone();
            let step = common::fallible(
                move |x: u64, cx: &Context| -> Result<u64, pipework::BoxError> {
                    if slow.contains(&x) {
                        cx.sleep(Duration::from_millis(2))?;
                    }
                    if fails && (x == bad || Some(x) == later) {
                        assert!(!panics, "injected panic on {x}");
                        return Err(format!("fails on {x}").into());
                    }
                    Ok(x)
                },
            );
            if rng.below(2) == 0 {
                kinds.push("fifo".to_owned());
                p = p.stage(format!("s{i}"), Fifo::new(step));
            } else {
                let (n, w) = (1 + rng.below(4) as usize, 1 + rng.below(3) as usize);
                kinds.push(format!("ordered({n}, {w})"));
                p = p.stage(format!("s{i}"), pipework::Ordered::new(n, step).window(w));
            }
        }
        let mut got = Vec::new();
        let err = p.run(0..items, &mut got).unwrap_err();
        let what = format!(
            "case {case}: {kinds:?}, stage {failing_stage} fails on {bad} (and {later:?}) of \
             {items}, slow {slow:?}, panics {panics}, max_chunk {max_chunk}: {err}"
        );
        assert_eq!(got.len() as u64, bad, "{what}");
        assert!(got.iter().copied().eq(0..bad), "{what}");
        assert_eq!(
            err.stage().map(pipework::StageId::index),
            Some(failing_stage),
            "{what}"
        );
        if !panics {
            let cause = std::error::Error::source(&err).map(ToString::to_string);
            assert_eq!(cause, Some(format!("fails on {bad}")), "{what}");
        }
        assert!(err.report().unwrap().totals().is_balanced(), "{what}");
    }
}

#[test]
fn two_failures_in_an_ordered_pool_stop_at_the_earlier_item_whichever_fails_first() {
    let _dog = watchdog("ordered two failures", 60);
    common::quiet_injected_panics();
    // Four workers, one item per chunk: item i goes to worker i mod 4. Item 1 holds the
    // collector back for 200 ms while items 2 and 4 fail (return an error, or panic), one
    // at 20 ms and the other at 80 ms, and item 3 has long finished. Whichever fails first,
    // the sink gets items 0 and 1 only (item 3 comes after the first failing item), and the
    // error is item 2's.
    for panics in [false, true] {
        for (two, four) in [(20, 80), (80, 20)] {
            let p = Pipeline::new().max_chunk(1).stage(
                "work",
                Ordered::new(
                    4,
                    common::fallible(move |x: u64, cx: &Context| {
                        let (wait, fails) = match x {
                            1 => (200, false),
                            2 => (two, true),
                            4 => (four, true),
                            _ => (0, false),
                        };
                        cx.sleep(Duration::from_millis(wait))?;
                        if fails {
                            assert!(!panics, "item {x} failed");
                            return Err(format!("item {x} failed").into());
                        }
                        Ok(x)
                    }),
                ),
            );
            for _ in 0..3 {
                let mut got = Vec::new();
                let err = p
                    .run(0..10u64, |x| {
                        got.push(x);
                        Ok(())
                    })
                    .unwrap_err();
                let what = format!("item 2 at {two} ms, item 4 at {four} ms, panics {panics}");
                assert_eq!(got, [0, 1], "{what}: {err}");
                let cause = match err.kind() {
                    ErrorKind::Panic { message, .. } => Some(message.clone()),
                    _ => std::error::Error::source(&err).map(ToString::to_string),
                };
                assert_eq!(cause.as_deref(), Some("item 2 failed"), "{what}: {err}");
                assert!(err.report().unwrap().totals().is_balanced());
            }
        }
    }
}

/// An ordered pool of 4 over `CHEAP` cheap items, then 8 items of 30 ms that each emit
/// three outputs; `bad` (if any) fails or panics after its sleep. Returns the outputs the
/// sink got, the error, and how long the run took.
fn ordered_shift(bad: Option<u64>, panics: bool) -> (Vec<u64>, Option<pipework::Error>, Duration) {
    let p = Pipeline::new().stage(
        "shift",
        Ordered::new(
            4,
            pipework::processor::from_fn(move |x: u64, cx: &Context, out| {
                if x >= CHEAP {
                    cx.sleep(Duration::from_millis(30))?;
                }
                if Some(x) == bad {
                    assert!(!panics, "injected: item {x}");
                    return Err(format!("item {x} failed").into());
                }
                for k in 0..3 {
                    out.emit(x * 3 + k);
                }
                Ok(())
            }),
        ),
    );
    let mut got = Vec::new();
    let started = Instant::now();
    let result = p.run(0..CHEAP + 8, |y| {
        got.push(y);
        Ok(())
    });
    let elapsed = started.elapsed();
    let report = match &result {
        Ok(report) => report.clone(),
        Err(e) => e.report().unwrap().clone(),
    };
    assert!(report.totals().is_balanced(), "{report:?}");
    (got, result.err(), elapsed)
}

#[test]
fn work_lent_between_ordered_workers_keeps_order_and_exact_prefixes() {
    let _dog = watchdog("ordered loans", 120);
    common::quiet_injected_panics();
    // Without failures: every output, in order; the eight slow items overlap (one after
    // another they take 240 ms; two rounds of four take 60 ms).
    let mut fastest = Duration::MAX;
    for _ in 0..3 {
        let (got, err, took) = ordered_shift(None, false);
        assert!(err.is_none(), "{err:?}");
        assert!(
            got.iter().copied().eq(0..(CHEAP + 8) * 3),
            "outputs lost or out of order"
        );
        fastest = fastest.min(took);
    }
    assert!(
        fastest < Duration::from_millis(200),
        "fastest run took {fastest:?}"
    );
    // A failure or a panic at any slow item (in the owner's part of its chunk or in a
    // sibling's loan): exactly the outputs of the items before it.
    for bad in CHEAP..CHEAP + 8 {
        for panics in [false, true] {
            let (got, err, _) = ordered_shift(Some(bad), panics);
            assert!(err.is_some(), "item {bad} did not fail the run");
            assert!(
                got.iter().copied().eq(0..bad * 3),
                "bad item {bad} (panics: {panics}): the sink got {} outputs, {:?} last",
                got.len(),
                got.last()
            );
        }
    }
}

#[test]
fn a_dynamic_pool_down_to_one_worker_spreads_a_burst_of_slow_items() {
    let _dog = watchdog("lone dynamic worker", 120);
    // The source pauses after the cheap items for longer than the idle timeout: every
    // worker but the last retires, and the slow items then arrive in one chunk (chunks have
    // grown while items were cheap) at that one worker. The pool must grow and its new
    // workers take them over; before, a worker without siblings kept its chunk private.
    all_slow_items_meet(3, Duration::from_millis(200), |step| {
        Dynamic::new(SLOW, step).idle_timeout(Duration::from_millis(50))
    });
}

#[test]
fn a_panic_hands_on_what_came_before_it_even_after_a_later_item_failed() {
    let _dog = watchdog("ordered panic after a later failure", 120);
    common::quiet_injected_panics();
    // Items 103 and 121 of one ordered pool panic, in either time order: the sink gets
    // 0..103 every time. (A panic whose stage had stopped reading by the time it unwound
    // used to hand nothing on, and cancel the run: about 2 runs in 100 lost items.)
    let p = Pipeline::new().max_chunk(256).stage(
        "s0",
        Ordered::new(
            4,
            common::fallible(|x: u64, _: &Context| {
                assert!(x != 103 && x != 121, "injected panic on {x}");
                Ok(x)
            }),
        )
        .window(2),
    );
    let mut lost = Vec::new();
    for run in 0..2_000 {
        let mut got = Vec::new();
        let err = p.run(0..334u64, &mut got).unwrap_err();
        assert!(
            matches!(err.kind(), ErrorKind::Panic { message, .. } if message.contains("103")),
            "run {run}: {err}"
        );
        if !got.iter().copied().eq(0..103) {
            lost.push((run, got.len()));
        }
    }
    assert!(
        lost.is_empty(),
        "runs that lost part of the prefix (run, items): {lost:?}"
    );
}

/// The items of the first chunks stage 0's worker took (three at most), in a run of
/// `pipeline` over `0..n` with its timeline recorded.
fn first_chunks(pipeline: &Pipeline<'_, u64>, n: u64) -> Vec<u64> {
    let report = pipeline
        .job()
        .record_timeline()
        .run(0..n, |_| Ok(()))
        .unwrap();
    assert!(report.totals().is_balanced());
    let timeline = report.timeline().expect("recorded");
    let track = timeline.stage_tracks(0).next().expect("a worker's track");
    track
        .intervals()
        .iter()
        .filter(|i| i.state() == pipework::State::Busy && i.item_count() > 0)
        .map(pipework::Interval::item_count)
        .take(3)
        .collect()
}

#[test]
fn a_definitions_next_run_starts_with_the_chunk_sizes_its_last_run_ended_with() {
    let _dog = watchdog("remembered chunk sizes", 60);
    // A service runs a small batch per request through one definition: without memory,
    // every run grows its chunks from one item again (W11).
    let pipeline = Pipeline::new()
        .stage("a", Fifo::new(pipework::map(|x: u64| x + 1)))
        .stage("b", Fifo::new(pipework::map(|x: u64| x * 2)));
    let first = first_chunks(&pipeline, 10_000);
    assert!(
        first[0] == 1 && first[1] <= 4,
        "a first run grows from one item: {first:?}"
    );
    // The next run's first chunk is one item too (a source's first item is never held
    // for the next: see below), and its second has the size the last run ended with.
    let next = first_chunks(&pipeline, 10_000);
    assert!(
        next[0] == 1 && next[1] >= 64,
        "the next run did not start from the remembered size: {next:?}"
    );
    // Outputs and accounting are the same whatever the chunking.
    let (out, report) = pipeline.collect(0..1_000u64).unwrap();
    assert!(report.totals().is_balanced());
    assert!(out.iter().copied().eq((0..1_000u64).map(|x| (x + 1) * 2)));
    // A new definition starts from one item again.
    let fresh = Pipeline::new().stage("a", Fifo::new(pipework::map(|x: u64| x + 1)));
    assert!(first_chunks(&fresh, 10_000)[1] <= 4);
}

#[test]
fn a_blocking_source_s_first_item_is_not_held_when_the_definition_remembers_big_chunks() {
    let _dog = watchdog("first item after remembered chunks", 60);
    let pipeline = Pipeline::new()
        .stage("a", Fifo::new(pipework::map(|x: u64| x + 1)))
        .stage("b", Fixed::new(2, pipework::map(|x: u64| x * 2)));
    // A batch of cheap items: the edges remember chunks of hundreds of items.
    first_chunks(&pipeline, 10_000);
    assert!(first_chunks(&pipeline, 10_000)[1] >= 64);
    // Now a source whose second item comes only once the first has reached the sink (an
    // interactive stream, a request/response protocol): the first item must not wait in a
    // chunk for the second.
    let arrived = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let waited_out = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (a, w) = (arrived.clone(), waited_out.clone());
    let mut next = 0u64;
    let source = std::iter::from_fn(move || {
        next += 1;
        match next {
            1 => Some(0),
            2 => {
                let give_up = Instant::now() + Duration::from_secs(5);
                while !a.load(Ordering::SeqCst) {
                    if Instant::now() > give_up {
                        w.store(true, Ordering::SeqCst);
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                Some(1)
            }
            _ => None,
        }
    });
    let mut got = Vec::new();
    pipeline
        .run(source, |x: u64| {
            if x == 2 {
                arrived.store(true, Ordering::SeqCst);
            }
            got.push(x);
            Ok(())
        })
        .unwrap();
    got.sort_unstable();
    assert_eq!(got, [2, 4]);
    assert!(
        !waited_out.load(Ordering::SeqCst),
        "the first item was held until the source gave up waiting for it to arrive"
    );
}
