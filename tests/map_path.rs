//! A `map`, `try_map` or `filter_map` stage whose worker reads its chunks alone (a `Fifo`)
//! runs a chunk through its closure in one loop instead of one processor call per item.
//! These tests hold that path to the promises of the item-by-item one: every item counted
//! once, with the right outcome, and dropped once when the closure panics or fails in the
//! middle of a chunk; no item started after cancellation; outputs in order; nothing lost
//! when the output edge closes in the middle of a chunk.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{Ledger, Tracked, tracked, watchdog, watchdog_quiet};
use pipework::{CancelToken, ErrorKind, Fifo, Pipeline, Site, filter_map, map, try_map};

/// Items per run: many chunks of the default 256 items.
const ITEMS: usize = 2_000;

/// Where a fault strikes: the first item, early chunks (small while they grow), the middle
/// of a later chunk, the last item.
const AT: [usize; 6] = [0, 1, 5, 300, 1_234, ITEMS - 1];

#[test]
fn smoke() {
    let _dog = watchdog("smoke", 20);
    let p = Pipeline::new().stage("double", Fifo::new(map(|x: u64| x * 2)));
    let (out, report) = p.collect(0..10_000u64).unwrap();
    assert_eq!(out, (0..10_000).map(|x| x * 2).collect::<Vec<_>>());
    assert!(report.totals().is_balanced(), "{report}");
    assert_eq!(report.stages[0].emitted, 10_000, "{report}");
}

/// Three map stages over tracked items, the middle one panicking on item `bad`.
fn panicking_at(bad: usize) -> Pipeline<'static, Tracked> {
    Pipeline::new()
        .stage("before", Fifo::new(map(|t: Tracked| t)))
        .stage(
            "panics",
            Fifo::new(map(move |t: Tracked| {
                assert!(t.id != bad, "injected panic at {bad}");
                t
            })),
        )
        .stage("after", Fifo::new(map(|t: Tracked| t)))
}

#[test]
fn a_panic_in_the_middle_of_a_chunk_counts_and_drops_every_item_once() {
    let _dog = watchdog_quiet("a panic in a map's chunk", 60);
    for bad in AT {
        let ledger = Ledger::new(ITEMS);
        let mut sunk = Vec::new();
        let err = panicking_at(bad)
            .run(tracked(ITEMS, &ledger), |t: Tracked| {
                sunk.push(t.id);
                Ok(())
            })
            .unwrap_err();
        assert!(
            matches!(
                err.kind(),
                ErrorKind::Panic {
                    site: Site::Stage { .. },
                    ..
                }
            ),
            "item {bad}: {err:#}"
        );
        assert!(
            format!("{err:#}").contains(&format!("injected panic at {bad}")),
            "{err:#}"
        );
        let report = err.report().expect("a failed run has a report");
        assert!(report.totals().is_balanced(), "item {bad}: {report}");
        let stage = &report.stages[1];
        assert_eq!(stage.failed, 1, "item {bad}: {report}");
        assert_eq!(stage.filtered, 0, "item {bad}: {report}");
        // Every stage keeps order: the sink gets exactly the items before the panic, and
        // the panicking stage emitted exactly those.
        assert_eq!(sunk, (0..bad).collect::<Vec<_>>(), "item {bad}");
        assert_eq!(stage.emitted, bad as u64, "item {bad}: {report}");
        drop(sunk);
        ledger.assert_each_dropped_once();
    }
}

#[test]
fn no_item_of_a_chunk_starts_after_the_run_is_cancelled() {
    let _dog = watchdog("cancelled in a map's chunk", 60);
    for at in AT {
        let token = CancelToken::new();
        let started_after = AtomicUsize::new(0);
        let p = Pipeline::new().stage(
            "cancels",
            Fifo::new(map(|x: usize| {
                if token.is_cancelled() {
                    started_after.fetch_add(1, Ordering::SeqCst);
                }
                if x == at {
                    token.cancel();
                }
                x
            })),
        );
        let err = p
            .job()
            .cancel_token(&token)
            .run(0..ITEMS, |_| Ok(()))
            .unwrap_err();
        assert!(matches!(err.kind(), ErrorKind::Cancelled), "{err:#}");
        assert_eq!(
            started_after.load(Ordering::SeqCst),
            0,
            "items mapped after the cancellation at item {at}"
        );
        let report = err.report().expect("a cancelled run has a report");
        assert!(report.totals().is_balanced(), "item {at}: {report}");
        // The item that cancelled was mapped; nothing after it.
        assert_eq!(
            report.stages[0].emitted,
            at as u64 + 1,
            "item {at}: {report}"
        );
    }
}

#[test]
fn outputs_keep_their_order_whatever_the_chunk_bounds() {
    let _dog = watchdog("map order", 60);
    for (max_chunk, capacity) in [(1, 1), (3, 1), (7, 2), (256, 16), (1_000, 4)] {
        let p = Pipeline::new()
            .max_chunk(max_chunk)
            .capacity(capacity)
            .stage("a", Fifo::new(map(|x: u64| x + 1)))
            .stage("b", Fifo::new(map(|x: u64| x * 3)));
        for n in [0, 1, 2, 255, 256, 257, 5_000] {
            let (out, report) = p.collect(0..n).unwrap();
            assert_eq!(
                out,
                (0..n).map(|x| (x + 1) * 3).collect::<Vec<_>>(),
                "max_chunk {max_chunk}, capacity {capacity}, {n} items"
            );
            assert!(report.totals().is_balanced(), "{report}");
        }
    }
}

#[test]
fn a_map_whose_output_edge_closes_mid_chunk_loses_nothing() {
    let _dog = watchdog_quiet("a map's output closes", 60);
    for bad in AT {
        let ledger = Ledger::new(ITEMS);
        let mapped = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&mapped);
        // Room for one chunk between the stages: the map blocks on it with most of a chunk
        // left, and the failure downstream closes it under the map's feet.
        let p = Pipeline::new()
            .capacity(1)
            .stage(
                "map",
                Fifo::new(map(move |t: Tracked| {
                    counted.fetch_add(1, Ordering::SeqCst);
                    t
                })),
            )
            .stage(
                "check",
                Fifo::new(try_map(move |t: Tracked| {
                    if t.id == bad {
                        Err(format!("injected error at {bad}"))
                    } else {
                        Ok(t)
                    }
                })),
            );
        let err = p.run(tracked(ITEMS, &ledger), |_| Ok(())).unwrap_err();
        assert!(
            matches!(err.kind(), ErrorKind::Stage { .. }),
            "item {bad}: {err:#}"
        );
        let report = err.report().expect("a failed run has a report");
        assert!(report.totals().is_balanced(), "item {bad}: {report}");
        assert_eq!(
            report.stages[0].emitted,
            mapped.load(Ordering::SeqCst) as u64,
            "item {bad}: {report}"
        );
        ledger.assert_each_dropped_once();
    }
}

#[test]
fn an_error_in_the_middle_of_a_chunk_gives_the_exact_prefix_and_counts() {
    let _dog = watchdog("an error in a try_map's chunk", 60);
    for bad in AT {
        let ledger = Ledger::new(ITEMS);
        let mut sunk = Vec::new();
        let p = Pipeline::new().stage(
            "parse",
            Fifo::new(try_map(move |t: Tracked| {
                if t.id == bad {
                    Err(format!("injected error at {bad}"))
                } else {
                    Ok(t)
                }
            })),
        );
        let err = p
            .run(tracked(ITEMS, &ledger), |t: Tracked| {
                sunk.push(t.id);
                Ok(())
            })
            .unwrap_err();
        assert!(
            matches!(err.kind(), ErrorKind::Stage { .. }),
            "item {bad}: {err:#}"
        );
        assert!(
            format!("{err:#}").contains(&format!("injected error at {bad}")),
            "{err:#}"
        );
        let report = err.report().expect("a failed run has a report");
        assert!(report.totals().is_balanced(), "item {bad}: {report}");
        let stage = &report.stages[0];
        assert_eq!(
            (stage.failed, stage.filtered),
            (1, 0),
            "item {bad}: {report}"
        );
        assert_eq!(stage.emitted, bad as u64, "item {bad}: {report}");
        assert_eq!(sunk, (0..bad).collect::<Vec<_>>(), "item {bad}");
        drop(sunk);
        ledger.assert_each_dropped_once();
    }
}

#[test]
fn a_filter_that_panics_mid_chunk_counts_what_it_filtered_before() {
    let _dog = watchdog_quiet("a panic in a filter_map's chunk", 60);
    for bad in AT {
        let ledger = Ledger::new(ITEMS);
        let mut sunk = Vec::new();
        // Keeps the even ids, panics on `bad`.
        let p = Pipeline::new().stage(
            "evens",
            Fifo::new(filter_map(move |t: Tracked| {
                assert!(t.id != bad, "injected panic at {bad}");
                (t.id % 2 == 0).then_some(t)
            })),
        );
        let err = p
            .run(tracked(ITEMS, &ledger), |t: Tracked| {
                sunk.push(t.id);
                Ok(())
            })
            .unwrap_err();
        assert!(
            matches!(err.kind(), ErrorKind::Panic { .. }),
            "item {bad}: {err:#}"
        );
        let report = err.report().expect("a failed run has a report");
        assert!(report.totals().is_balanced(), "item {bad}: {report}");
        let stage = &report.stages[0];
        let evens = (0..bad).filter(|id| id % 2 == 0).count() as u64;
        assert_eq!(stage.failed, 1, "item {bad}: {report}");
        assert_eq!(stage.emitted, evens, "item {bad}: {report}");
        assert_eq!(stage.filtered, bad as u64 - evens, "item {bad}: {report}");
        assert_eq!(
            sunk,
            (0..bad).filter(|id| id % 2 == 0).collect::<Vec<_>>(),
            "item {bad}"
        );
        drop(sunk);
        ledger.assert_each_dropped_once();
    }
}

#[test]
fn a_filter_that_runs_to_the_end_counts_every_outcome() {
    let _dog = watchdog("filter_map counts", 60);
    let p = Pipeline::new()
        .stage(
            "thirds",
            Fifo::new(filter_map(|x: u64| (x % 3 == 0).then_some(x))),
        )
        .stage("all", Fifo::new(map(|x: u64| x)));
    let (out, report) = p.collect(0..10_000u64).unwrap();
    assert_eq!(out, (0..10_000).filter(|x| x % 3 == 0).collect::<Vec<_>>());
    assert!(report.totals().is_balanced(), "{report}");
    assert_eq!(report.stages[0].emitted, 3_334, "{report}");
    assert_eq!(report.stages[0].filtered, 6_666, "{report}");
}

/// What a stage of a generated pipeline does.
#[derive(Debug, Clone, Copy)]
enum Step {
    /// `map`, passing the item on.
    Map,
    /// `try_map`, passing the item on.
    TryMap,
    /// `filter_map`, dropping the ids divisible by the number.
    Filter(usize),
}

/// How a generated pipeline fails: at a stage, on an item, by a panic or (in a `try_map`)
/// an error.
#[derive(Debug, Clone, Copy)]
struct Fault {
    stage: usize,
    item: usize,
    panics: bool,
}

/// A small deterministic generator (xorshift), so that every run tries the same cases.
struct Gen(u64);

impl Gen {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        usize::try_from(self.0 % n as u64).expect("below n, a usize")
    }
}

/// The sink's ids and whether the run fails, as a sequential loop over the stages sees
/// them: an item filtered before the faulty stage never meets the fault.
fn expected(steps: &[Step], fault: Option<Fault>, n: usize) -> (Vec<usize>, bool) {
    let mut out = Vec::new();
    for id in 0..n {
        let mut kept = true;
        for (s, step) in steps.iter().enumerate() {
            if fault.is_some_and(|f| f.stage == s && f.item == id) {
                return (out, true);
            }
            if matches!(step, Step::Filter(k) if id % k == 0) {
                kept = false;
                break;
            }
        }
        if kept {
            out.push(id);
        }
    }
    (out, false)
}

#[test]
fn generated_chains_of_map_stages_match_a_sequential_loop() {
    let _dog = watchdog_quiet("generated map chains", 120);
    let mut g = Gen(0x9e37_79b9_7f4a_7c15);
    for case in 0..400 {
        let n = [0, 1, 2, 255, 256, 257, 1_000, 3_000][g.below(8)];
        let steps: Vec<Step> = (0..=g.below(4))
            .map(|_| match g.below(3) {
                0 => Step::Map,
                1 => Step::TryMap,
                _ => Step::Filter(2 + g.below(5)),
            })
            .collect();
        let fault = (n > 0 && g.below(4) != 0).then(|| {
            let stage = g.below(steps.len());
            Fault {
                stage,
                item: g.below(n),
                panics: !matches!(steps[stage], Step::TryMap) || g.below(2) == 0,
            }
        });
        let mut p = Pipeline::new()
            .max_chunk([1, 2, 7, 64, 256][g.below(5)])
            .capacity([1, 2, 16][g.below(3)]);
        for (s, &step) in steps.iter().enumerate() {
            let hit = move |id: usize| fault.filter(|f| f.stage == s && f.item == id);
            p = match step {
                Step::Map => p.stage(
                    "map",
                    Fifo::new(map(move |t: Tracked| {
                        assert!(hit(t.id).is_none(), "injected panic at {}", t.id);
                        t
                    })),
                ),
                Step::TryMap => p.stage(
                    "try_map",
                    Fifo::new(try_map(move |t: Tracked| match hit(t.id) {
                        Some(f) if f.panics => panic!("injected panic at {}", t.id),
                        Some(_) => Err(format!("injected error at {}", t.id)),
                        None => Ok(t),
                    })),
                ),
                Step::Filter(k) => p.stage(
                    "filter_map",
                    Fifo::new(filter_map(move |t: Tracked| {
                        assert!(hit(t.id).is_none(), "injected panic at {}", t.id);
                        (t.id % k != 0).then_some(t)
                    })),
                ),
            };
        }
        let what = format!("case {case}: {n} items, {steps:?}, {fault:?}");
        let (want, fails) = expected(&steps, fault, n);
        let ledger = Ledger::new(n);
        let mut sunk = Vec::new();
        let result = p.run(tracked(n, &ledger), |t: Tracked| {
            sunk.push(t.id);
            Ok(())
        });
        let report = match &result {
            Ok(report) => report,
            Err(err) => err.report().expect("a failed run has a report"),
        };
        assert_eq!(result.is_err(), fails, "{what}: {report}");
        assert_eq!(sunk, want, "{what}");
        assert!(report.totals().is_balanced(), "{what}: {report}");
        drop(sunk);
        drop(result);
        ledger.assert_each_dropped_once();
    }
}
