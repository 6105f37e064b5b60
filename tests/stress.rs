//! Suite 3: stress. Ten thousand short runs with rotating topologies and faults (processors
//! plain and one-to-many, items' `Clone` and `Drop`, init closures, runner `start`, the
//! `Drop` of every user value, progress every `Duration::ZERO`), each audited item by item
//! (see `audit`) with the thread count checked after it; and one run of a million items
//! while a live-item gauge checks that the items in flight never exceed what the
//! capacities, workers and reorder windows allow.
//!
//! The tests of this file are serialised, so that the process's thread count is theirs.

// Pedantic lints this test allows, and why:
// - `cast_possible_truncation`: small counts and indices (thousands) fit the narrower type.
// - `manual_let_else`: the audit's early `return Ok` reads best as a two-arm match.
// - `match_same_arms`: the audit gives each fault kind its own arm, empty or not.
// - `too_many_lines`: a long function is one scenario, read top to bottom.
// - `unnecessary_wraps`: steps used as processors return `Result`, failing or not.
#![allow(
    clippy::cast_possible_truncation,
    clippy::manual_let_else,
    clippy::match_same_arms,
    clippy::too_many_lines,
    clippy::unnecessary_wraps
)]

mod audit;
mod common;

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use audit::{Case, Fault, Kind, MAX_STAGES, Runner, Site, StageSpec, UserDrops, run_case};
use common::{RUN_LIMIT, Watchdog, serial_test, settle_threads};
use pipework::{BoxError, Context, Dynamic, Fifo, Fixed, Ordered, Pipeline};

/// Short runs.
const SHORT_RUNS: usize = 10_000;
/// Items per short run.
const SHORT_ITEMS: u32 = 24;
/// A stall in a short run.
const SHORT_STALL: Duration = Duration::from_millis(1);
/// Items of the long run.
const LONG_ITEMS: u32 = 1_000_000;
/// The long run's queues: capacity in chunks, and the largest chunk.
const LONG_CAPACITY: usize = 4;
const LONG_MAX_CHUNK: usize = 32;
/// The long run's pools.
const LONG_FIXED: usize = 2;
const LONG_ORDERED: usize = 2;
const LONG_WINDOW: usize = 2;
const LONG_DYNAMIC: usize = 3;

/// The topologies the short runs rotate through.
fn topologies() -> Vec<Vec<Runner>> {
    use Runner::*;
    vec![
        vec![Fifo],
        vec![Fixed(2), Fifo],
        vec![Dynamic(3), Fixed(2), Fifo],
        vec![Broadcast(vec![Fifo, Fixed(2)]), Fifo],
        vec![Ordered(2, 1), Broadcast(vec![Fixed(1), Dynamic(2), Fifo])],
        vec![Fifo, Fixed(3), Ordered(3, 2), Fifo, Fixed(1)],
        vec![Broadcast(vec![Ordered(2, 1)]), Dynamic(2)],
    ]
}

/// The faults the short runs rotate through: (site, kind, the stage routes), with `Stage`
/// sites fitted to the topology.
const FAULTS: [&[(Site, Kind, bool)]; 19] = [
    &[],
    &[(Site::Source, Kind::Panic, false)],
    &[(Site::Source, Kind::Error, false)],
    &[(Site::Stage(0), Kind::Panic, false)],
    &[(Site::Stage(0), Kind::Error, false)],
    &[(Site::Stage(0), Kind::Error, true)],
    &[(Site::Stage(0), Kind::Filter, false)],
    &[(Site::Stage(0), Kind::Stall, false)],
    &[(Site::Sink, Kind::Panic, false)],
    &[(Site::Sink, Kind::Error, false)],
    &[
        (Site::Stage(0), Kind::Error, true),
        (Site::Stage(1), Kind::Panic, false),
    ],
    &[(Site::Stage(0), Kind::ClonePanic, true)],
    &[(Site::Stage(0), Kind::DropPanic, true)],
    &[
        (Site::Stage(0), Kind::DropPanic, false),
        (Site::Sink, Kind::Error, false),
    ],
    &[(Site::Stage(0), Kind::Expand, false)],
    &[(Site::Stage(0), Kind::ExpandError, true)],
    &[(Site::Stage(0), Kind::ExpandPanic, false)],
    &[(Site::Stage(0), Kind::InitPanic, false)],
    &[(Site::Stage(0), Kind::StartPanicAfter, false)],
];

/// Short run number `i`: a topology, a fault set, a struck item, a branch, capacities and
/// chunking, each rotating with its own period.
fn short_run(i: usize, topologies: &[Vec<Runner>]) -> Case {
    let runners = &topologies[i % topologies.len()];
    let n = runners.len();
    let faults = FAULTS[(i / topologies.len()) % FAULTS.len()];
    let mut stages: Vec<StageSpec> = runners.iter().cloned().map(StageSpec::new).collect();
    let mut fitted = Vec::new();
    for (k, &(site, kind, routes)) in faults.iter().enumerate() {
        let site = match site {
            Site::Stage(s) => Site::Stage((s + i / 7 + k) % n),
            other => other,
        };
        if let (Site::Stage(s), true) = (site, routes) {
            stages[s].routes = true;
        }
        let mut path = [0; MAX_STAGES];
        for (s, r) in runners.iter().enumerate() {
            path[s] = ((i / 3 + s) % r.width()) as u8;
        }
        fitted.push(Fault {
            site,
            kind,
            item: ((i * 5 + k * 11) % SHORT_ITEMS as usize) as u32,
            path,
        });
    }
    Case {
        stages,
        capacity: Some(1 + i % 4),
        max_chunk: [Some(1), Some(2), None][i % 3],
        items: SHORT_ITEMS,
        faults: fitted,
        stall: SHORT_STALL,
        // Now and then every user value's `Drop` panics, and progress is reported as often
        // as it can be.
        drops: if i % 11 == 3 {
            UserDrops {
                source: true,
                sink: true,
                progress: true,
            }
        } else {
            UserDrops::default()
        },
        progress: (i % 5 == 0).then_some(Duration::ZERO),
        timeout: None,
    }
}

#[test]
fn smoke() {
    let _t = serial_test("smoke", 60);
    let topologies = topologies();
    for i in 0..FAULTS.len() * topologies.len() {
        let (_, audit) = run_case(&short_run(i, &topologies));
        assert!(audit.read <= u64::from(SHORT_ITEMS));
    }
}

#[test]
fn ten_thousand_short_runs_with_rotating_faults_lose_nothing_and_leave_no_thread() {
    let t = serial_test("short runs", 900);
    let baseline = t.baseline;
    let topologies = topologies();
    let started = Instant::now();
    let mut aborted = 0;
    for i in 0..SHORT_RUNS {
        let case = short_run(i, &topologies);
        let (result, _) = run_case(&case);
        aborted += usize::from(result.is_err());
        drop(result);
        assert_eq!(
            settle_threads(baseline),
            baseline,
            "threads left after run {i}: {case:?}"
        );
    }
    eprintln!(
        "short runs: {SHORT_RUNS} runs ({aborted} aborted) in {:.1?}",
        started.elapsed()
    );
}

/// Counts the items alive: made by the source, not dropped yet.
struct Gauge {
    live: AtomicUsize,
    peak: AtomicUsize,
    drops: Vec<AtomicU8>,
}

/// An item on the gauge.
struct Gauged<'g> {
    id: u32,
    gauge: &'g Gauge,
}

impl<'g> Gauged<'g> {
    fn new(id: u32, gauge: &'g Gauge) -> Self {
        let live = gauge.live.fetch_add(1, Ordering::SeqCst) + 1;
        gauge.peak.fetch_max(live, Ordering::SeqCst);
        Gauged { id, gauge }
    }
}

impl Drop for Gauged<'_> {
    fn drop(&mut self) {
        self.gauge.live.fetch_sub(1, Ordering::SeqCst);
        self.gauge.drops[self.id as usize].fetch_add(1, Ordering::SeqCst);
    }
}

/// The most items the long run may hold at once. Per edge (stages + 1): `capacity` queued
/// chunks. Per thread that takes chunks (a worker, a dispatcher, the sink): its current
/// chunk; per thread that sends them (the source, a worker, a collector): its partial chunk;
/// per worker: the item it processes. An ordered pool holds at most `workers × (window + 2)`
/// chunks besides its input queue (one queued for each worker, the one it works on, and
/// `window` finished ones), plus the chunk its dealer holds and the chunk its collector
/// empties and the one it fills.
fn in_flight_bound() -> usize {
    let chunk = LONG_MAX_CHUNK;
    let edges = 4 + 1;
    let queued = edges * LONG_CAPACITY * chunk;
    let source = chunk;
    let worker = chunk + chunk + 1;
    let fifo = worker;
    let fixed = LONG_FIXED * worker;
    let ordered = chunk + LONG_ORDERED * ((LONG_WINDOW + 2) * chunk + 1) + 2 * chunk;
    let dynamic = chunk + LONG_DYNAMIC * worker;
    let sink = chunk + 1;
    queued + source + fifo + fixed + ordered + dynamic + sink
}

/// The long run's processor: passes the item on.
fn pass<'g>(x: Gauged<'g>, _: &Context<'_>) -> Result<Gauged<'g>, BoxError> {
    Ok(x)
}

#[test]
fn a_million_items_stay_within_the_bound_of_capacities_workers_and_windows() {
    let t = serial_test("a million items", 600);
    let baseline = t.baseline;
    let gauge = Gauge {
        live: AtomicUsize::new(0),
        peak: AtomicUsize::new(0),
        drops: (0..LONG_ITEMS).map(|_| AtomicU8::new(0)).collect(),
    };
    let p = Pipeline::new()
        .capacity(LONG_CAPACITY)
        .max_chunk(LONG_MAX_CHUNK)
        .stage("fifo", Fifo::new(common::fallible(pass)))
        .stage("fixed", Fixed::new(LONG_FIXED, common::fallible(pass)))
        .stage(
            "ordered",
            Ordered::new(LONG_ORDERED, common::fallible(pass)).window(LONG_WINDOW),
        )
        .stage(
            "dynamic",
            Dynamic::new(LONG_DYNAMIC, common::fallible(pass)),
        );
    let mut sunk = 0u64;
    let started = Instant::now();
    let report = {
        let _dog = Watchdog::arm("a million items", RUN_LIMIT);
        p.run((0..LONG_ITEMS).map(|i| Gauged::new(i, &gauge)), |item| {
            sunk += 1;
            drop(item);
            Ok(())
        })
        .expect("the long run")
    };
    let elapsed = started.elapsed();
    let peak = gauge.peak.load(Ordering::SeqCst);
    let bound = in_flight_bound();
    eprintln!(
        "a million items: {elapsed:.1?}, at most {peak} in flight (bound {bound}), \
         {:?} busy in the source",
        report.source.busy
    );
    assert!(peak <= bound, "{peak} items in flight, more than {bound}");
    assert!(elapsed < RUN_LIMIT);
    assert_eq!(
        gauge.live.load(Ordering::SeqCst),
        0,
        "items alive after run()"
    );
    let t = report.totals();
    assert_eq!(
        (t.read, t.sunk, sunk),
        (
            u64::from(LONG_ITEMS),
            u64::from(LONG_ITEMS),
            u64::from(LONG_ITEMS)
        )
    );
    assert!(t.is_balanced(), "{t:?}");
    let wrong: Vec<_> = gauge
        .drops
        .iter()
        .enumerate()
        .filter(|(_, d)| d.load(Ordering::SeqCst) != 1)
        .take(10)
        .collect();
    assert!(
        wrong.is_empty(),
        "items not dropped exactly once: {wrong:?}"
    );
    drop(p);
    assert_eq!(
        settle_threads(baseline),
        baseline,
        "threads left after the long run"
    );
}
