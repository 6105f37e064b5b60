//! The recorded timeline (`Job::record_timeline`) and its Trace Event export: every track,
//! interval, counter and timestamp well-formed, within its cap, and consistent with the
//! report's busy / waiting / blocked totals.
//!
//! # The tolerances
//!
//! In the `Timeline` the totals are *exact*: each interval holds the very nanoseconds the
//! engine adds to the report (a worker's chunk its busy time and the blocked time of its
//! sends, each wait its wait), so the checks there are `==`.
//!
//! In the JSON every time is printed in microseconds with three decimals, that is exactly
//! to the nanosecond; what is left is `f64`: parsing rounds each number to within half an
//! ulp, and adding `n` of them up errs by at most `n` ulps of the total. The JSON sums are
//! therefore compared with a tolerance of `(n + 1) × total × 2⁻⁵²` — well under a
//! nanosecond for any run here — plus 1 ns for the rounding of the comparison itself.

// Pedantic lints this test allows, and why:
// - `cast_precision_loss`: nanosecond totals and event counts far below 2^52 become `f64`
//   to be compared with the export's numbers.
// - `too_many_lines`: `check_export` is one checklist, read top to bottom.
#![allow(clippy::cast_precision_loss, clippy::too_many_lines)]

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use common::{fallible, watchdog};
use pipework::{
    BoxError, Broadcast, Dynamic, ErrorKind, Failure, Fifo, Fixed, Interval, Ordered, Pipeline,
    Report, StageOptions, State, Timeline, TrackKind, map,
};
use serde_json::Value;

/// Some CPU work, about `n` × a few ns.
fn spin(x: u64, n: u64) -> u64 {
    let mut h = x;
    for i in 0..n {
        h = h.rotate_left(5) ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    std::hint::black_box(h)
}

/// Checks the timeline itself: order, caps, bounds, and the totals against the report.
fn check_timeline(report: &Report) -> &Timeline {
    let timeline = report.timeline().expect("the run recorded its timeline");
    let elapsed = timeline.elapsed();
    assert_eq!(elapsed, report.elapsed);
    for track in timeline.tracks() {
        let label = track.kind().label();
        let intervals = track.intervals();
        assert!(
            intervals.len() <= Timeline::INTERVALS_PER_TRACK,
            "{label}: {} intervals",
            intervals.len()
        );
        for i in intervals {
            assert!(i.start() <= i.end(), "{label}: {i:?}");
            assert!(
                i.end() <= elapsed,
                "{label}: {i:?} ends after the run ({elapsed:?})"
            );
            assert!(
                i.busy() + i.waiting() + i.blocked() <= i.span(),
                "{label}: {i:?} holds more time than it spans"
            );
            assert!(i.parts() >= 1);
        }
        for pair in intervals.windows(2) {
            assert!(
                pair[0].end() <= pair[1].start(),
                "{label}: {pair:?} overlap"
            );
        }
    }
    // Per stage, the report's totals.
    for stage in &report.stages {
        let index = stage.id.index();
        let workers: Vec<_> = timeline
            .stage_tracks(index)
            .filter(|t| matches!(t.kind(), TrackKind::Worker { .. }))
            .collect();
        assert_eq!(
            workers.len(),
            stage.workers_started,
            "{}: one track per worker started",
            stage.id
        );
        let sum = |state| workers.iter().map(|t| t.total(state)).sum::<Duration>();
        assert_eq!(sum(State::Busy), stage.busy, "{}: busy", stage.id);
        assert_eq!(sum(State::Waiting), stage.waiting, "{}: waiting", stage.id);
        // Blocked: the workers', and an ordered pool's collector's.
        let collector: Duration = timeline
            .stage_tracks(index)
            .filter(|t| {
                matches!(
                    t.kind(),
                    TrackKind::Helper {
                        role: "collect",
                        ..
                    }
                )
            })
            .map(|t| t.total(State::Blocked))
            .sum();
        assert_eq!(
            sum(State::Blocked) + collector,
            stage.blocked,
            "{}: blocked",
            stage.id
        );
    }
    let only = |kind: &TrackKind| {
        let tracks: Vec<_> = timeline
            .tracks()
            .iter()
            .filter(|t| t.kind() == kind)
            .collect();
        assert_eq!(tracks.len(), 1, "one {kind:?} track");
        tracks[0]
    };
    let source = only(&TrackKind::Source);
    assert_eq!(source.total(State::Busy), report.source.busy, "source busy");
    assert_eq!(
        source.total(State::Blocked),
        report.source.blocked,
        "source blocked"
    );
    let sink = only(&TrackKind::Sink);
    assert_eq!(sink.total(State::Busy), report.sink.busy, "sink busy");
    assert_eq!(
        sink.total(State::Waiting),
        report.sink.waiting,
        "sink waiting"
    );
    // One queue per stage, then the sink's.
    assert_eq!(timeline.queues().len(), report.stages.len() + 1);
    for (i, q) in timeline.queues().iter().enumerate() {
        assert_eq!(
            q.stage().map(pipework::StageId::index),
            (i < report.stages.len()).then_some(i)
        );
        assert!(q.samples().len() <= Timeline::SAMPLES_PER_QUEUE);
        let times: Vec<_> = q.samples().map(|(t, _)| t).collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "samples in order");
        assert!(times.iter().all(|t| *t <= elapsed));
    }
    timeline
}

/// Micros of a JSON number.
fn us(v: &Value) -> f64 {
    let x = v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"));
    assert!(
        x.is_finite() && x >= 0.0,
        "a time must be finite and non-negative: {x}"
    );
    x
}

/// Whether two sums of `n` JSON times agree (see the module docs).
fn agree(json_us: f64, exact: Duration, n: usize) -> bool {
    let exact_us = exact.as_nanos() as f64 / 1e3;
    let bound = (n as f64 + 1.0) * exact_us.max(json_us) * f64::EPSILON + 1e-3;
    (json_us - exact_us).abs() <= bound
}

/// What the export says, per thread track: its name and its events' sums per state.
#[derive(Default, Debug)]
struct ThreadSums {
    name: Option<String>,
    sums: HashMap<String, f64>,
    events: usize,
}

/// Parses and checks the export of `report`'s timeline; returns the sums per thread.
fn check_export(report: &Report) -> BTreeMap<(u64, u64), ThreadSums> {
    let timeline = report.timeline().unwrap();
    let json = timeline.to_trace_events();
    let doc: Value = serde_json::from_str(&json).expect("the export is valid JSON");
    let elapsed_us = us(&doc["otherData"]["elapsed_us"]);
    assert!(agree(elapsed_us, report.elapsed, 1));
    assert_eq!(doc["displayTimeUnit"], "ms");
    let events = doc["traceEvents"].as_array().expect("a traceEvents array");

    let mut processes: HashMap<u64, String> = HashMap::new();
    let mut sort_indexes = HashSet::new();
    let mut threads: BTreeMap<(u64, u64), ThreadSums> = BTreeMap::new();
    let mut slices: BTreeMap<(u64, u64), Vec<(f64, f64)>> = BTreeMap::new();
    let mut counters = 0;
    for e in events {
        let ph = e["ph"].as_str().expect("every event has a phase");
        let pid = e["pid"].as_u64().expect("every event has a pid");
        match ph {
            "M" => {
                let name = e["name"].as_str().unwrap();
                let tid = e["tid"].as_u64().expect("metadata events have a tid");
                match name {
                    "process_name" => {
                        let n = e["args"]["name"].as_str().unwrap().to_owned();
                        assert!(processes.insert(pid, n).is_none(), "pid {pid} named twice");
                    }
                    "process_sort_index" => {
                        let i = e["args"]["sort_index"].as_u64().unwrap();
                        assert!(sort_indexes.insert(i), "sort index {i} twice");
                    }
                    "thread_name" => {
                        let n = e["args"]["name"].as_str().unwrap().to_owned();
                        let t = threads.entry((pid, tid)).or_default();
                        assert!(
                            t.name.replace(n).is_none(),
                            "thread {pid}/{tid} named twice"
                        );
                    }
                    "thread_sort_index" => {
                        e["args"]["sort_index"].as_u64().unwrap();
                    }
                    other => panic!("unexpected metadata event {other}"),
                }
            }
            "X" => {
                let tid = e["tid"].as_u64().expect("a slice has a tid");
                let name = e["name"].as_str().unwrap();
                assert!(["busy", "waiting", "blocked"].contains(&name), "{name}");
                assert_eq!(e["cat"], "pipework");
                let (ts, dur) = (us(&e["ts"]), us(&e["dur"]));
                assert!(dur > 0.0, "no empty slice: {e}");
                assert!(ts + dur <= elapsed_us + 1e-3, "{e} ends after the run");
                e["args"]["items"].as_u64().expect("a slice says its items");
                let t = threads.entry((pid, tid)).or_default();
                *t.sums.entry(name.to_owned()).or_default() += dur;
                t.events += 1;
                slices.entry((pid, tid)).or_default().push((ts, dur));
            }
            "C" => {
                assert_eq!(e["name"], "queued chunks");
                let ts = us(&e["ts"]);
                assert!(ts <= elapsed_us + 1e-3);
                e["args"]["chunks"].as_u64().expect("a depth in chunks");
                counters += 1;
            }
            other => panic!("unexpected phase {other}"),
        }
    }
    // Every pid and every thread is named; slices on one thread do not overlap.
    for (pid, tid) in threads.keys() {
        assert!(processes.contains_key(pid), "pid {pid} has no process_name");
        assert!(
            threads[&(*pid, *tid)].name.is_some(),
            "{pid}/{tid} has no thread_name"
        );
    }
    for ((pid, tid), s) in &mut slices {
        s.sort_by(|a, b| a.0.total_cmp(&b.0));
        for w in s.windows(2) {
            let end = w[0].0 + w[0].1;
            assert!(
                end <= w[1].0 + 1e-6 * end.max(1.0),
                "{pid}/{tid}: {w:?} overlap"
            );
        }
    }
    assert_eq!(
        processes.len(),
        report.stages.len() + 2,
        "source, stages, sink"
    );
    assert_eq!(processes[&1], "source");
    assert_eq!(processes[&(report.stages.len() as u64 + 2)], "sink");
    for s in &report.stages {
        assert_eq!(
            processes[&(s.id.index() as u64 + 2)],
            format!("stage {}: {} ({})", s.id.index(), s.id.name(), s.kind)
        );
    }
    let samples: usize = timeline.queues().iter().map(|q| q.samples().len()).sum();
    assert_eq!(counters, samples, "one counter event per sample");
    assert_eq!(
        threads.len(),
        timeline.tracks().len(),
        "one thread per track"
    );

    // Per stage, the exported workers' busy and waiting add up to the report's.
    for s in &report.stages {
        let pid = s.id.index() as u64 + 2;
        let workers: Vec<&ThreadSums> = threads
            .iter()
            .filter(|((p, _), t)| {
                *p == pid
                    && !t.name.as_deref().unwrap_or("").contains(" collect ")
                    && !t.name.as_deref().unwrap_or("").contains(" deal ")
                    && !t.name.as_deref().unwrap_or("").contains(" fanout ")
            })
            .map(|(_, t)| t)
            .collect();
        let n: usize = workers.iter().map(|t| t.events).sum();
        let sum = |state: &str| -> f64 {
            workers
                .iter()
                .map(|t| t.sums.get(state).copied().unwrap_or(0.0))
                .sum()
        };
        assert!(
            agree(sum("busy"), s.busy, n),
            "{}: busy {} vs {:?}",
            s.id,
            sum("busy"),
            s.busy
        );
        assert!(agree(sum("waiting"), s.waiting, n), "{}: waiting", s.id);
    }
    let sink = &threads[&(report.stages.len() as u64 + 2, 1)];
    let get = |t: &ThreadSums, k: &str| t.sums.get(k).copied().unwrap_or(0.0);
    assert!(agree(get(sink, "busy"), report.sink.busy, sink.events));
    assert!(agree(
        get(sink, "waiting"),
        report.sink.waiting,
        sink.events
    ));
    let source = &threads[&(1, 1)];
    assert!(agree(
        get(source, "busy"),
        report.source.busy,
        source.events
    ));
    assert!(agree(
        get(source, "blocked"),
        report.source.blocked,
        source.events
    ));
    threads
}

#[test]
fn every_kind_of_stage_records_a_consistent_timeline() {
    let _dog = watchdog("every kind of stage", 60);
    let pipeline = Pipeline::new()
        .stage("parse", Fixed::new(3, map(|x: u64| spin(x, 200))))
        .stage("order", Ordered::new(2, map(|x: u64| x / 3)))
        .stage(
            "fan",
            Broadcast::new()
                .branch(Fifo::new(map(|x: u64| x)))
                .branch(Fifo::new(map(|x: u64| x + 1))),
        )
        .stage(
            "call",
            Dynamic::new(
                4,
                fallible(|x: u64, cx| {
                    if x % 5_000 == 0 {
                        cx.sleep(Duration::from_millis(2))?;
                    }
                    Ok(x)
                }),
            ),
        );
    let mut n = 0u64;
    let report = pipeline
        .job()
        .record_timeline()
        .run(0..30_000u64, |_| {
            n += 1;
            if n % 10_000 == 0 {
                // A slow sink now and then: the stages block on it.
                std::thread::sleep(Duration::from_millis(3));
            }
            Ok(())
        })
        .unwrap();
    assert_eq!(report.totals().sunk, 60_000);
    let timeline = check_timeline(&report);
    // The engine's helpers have tracks of their own: here the broadcast's fanout alone
    // (an ordered pool's workers forward its outputs themselves).
    let roles: HashSet<&str> = timeline
        .tracks()
        .iter()
        .filter_map(|t| match t.kind() {
            TrackKind::Helper { role, .. } => Some(*role),
            _ => None,
        })
        .collect();
    assert_eq!(roles, HashSet::from(["fanout"]));
    // The sink loop sampled the queues.
    assert!(timeline.queues().iter().all(|q| q.samples().len() > 0));
    check_export(&report);
}

#[test]
fn a_track_past_its_cap_merges_and_keeps_its_totals() {
    let _dog = watchdog("a track past its cap", 60);
    // Chunks of one item: one interval per item (and per wait) for every thread.
    let pipeline = Pipeline::new()
        .stage("one", Fifo::new(map(|x: u64| x)))
        .max_chunk(1);
    let items = 3 * Timeline::INTERVALS_PER_TRACK as u64;
    let report = pipeline
        .job()
        .record_timeline()
        .run(0..items, |_| Ok(()))
        .unwrap();
    let timeline = check_timeline(&report);
    let worker = timeline.stage_tracks(0).next().unwrap();
    assert!(worker.merged() > 0, "the worker's track was merged");
    let parts: u64 = worker.intervals().iter().map(Interval::parts).sum();
    assert_eq!(parts, worker.merged() + worker.intervals().len() as u64);
    let items_seen: u64 = worker.intervals().iter().map(Interval::item_count).sum();
    assert_eq!(items_seen, items, "every item in some interval");
    check_export(&report);
}

#[test]
fn a_slow_stage_is_busy_and_the_stage_before_it_blocks() {
    let _dog = watchdog("a visible bottleneck", 60);
    let pipeline = Pipeline::new()
        .stage("fast", Fixed::new(2, map(|x: u64| x)))
        .stage("slow", Fifo::new(common::sleepy(Duration::from_millis(2))))
        .capacity(2)
        .max_chunk(4);
    let report = pipeline
        .job()
        .record_timeline()
        .run(0..100u64, |_| Ok(()))
        .unwrap();
    let timeline = check_timeline(&report);
    let share = |index: usize, state: State| {
        let tracks: Vec<_> = timeline.stage_tracks(index).collect();
        let total: Duration = tracks
            .iter()
            .flat_map(|t| State::ALL.map(|s| t.total(s)))
            .sum();
        let part: Duration = tracks.iter().map(|t| t.total(state)).sum();
        part.as_secs_f64() / total.as_secs_f64()
    };
    // Robust to a loaded machine: the slow stage is mostly busy, more than the fast one,
    // which spends more of its time blocked than busy.
    let (slow_busy, fast_busy) = (share(1, State::Busy), share(0, State::Busy));
    assert!(slow_busy > 0.5, "the slow stage is busy: {slow_busy}");
    assert!(slow_busy > fast_busy, "{slow_busy} vs {fast_busy}");
    let fast_blocked = share(0, State::Blocked);
    assert!(
        fast_blocked > fast_busy,
        "the stage before it blocks: {fast_blocked} vs busy {fast_busy}"
    );
    assert_eq!(report.bottleneck().map(|s| s.id.index()), Some(1));
    // The queue into the slow stage fills up.
    assert!(timeline.queues()[1].peak() >= 1);
    check_export(&report);
}

#[test]
fn an_aborted_run_carries_its_timeline() {
    let _dog = watchdog("an aborted run", 30);
    let mut routed = 0u64;
    let pipeline = Pipeline::new()
        .stage_with(
            "check",
            Fixed::new(
                2,
                fallible(|x: u64, _| {
                    if x % 100 == 7 {
                        return Err(BoxError::from("seven"));
                    }
                    Ok(x)
                }),
            ),
            StageOptions::new().route_failures_to(|_: Failure<u64>| routed += 1),
        )
        .stage(
            "fail",
            Fixed::new(
                2,
                fallible(|x: u64, _| {
                    if x == 5_000 {
                        return Err(BoxError::from("the end"));
                    }
                    Ok(x)
                }),
            ),
        );
    let err = pipeline
        .job()
        .record_timeline()
        .run(0..1_000_000u64, |_| Ok(()))
        .unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::Stage { .. }));
    let report = err.report().unwrap();
    check_timeline(report);
    check_export(report);
    drop(pipeline);
    assert_eq!(routed, report.totals().routed);
}

#[test]
fn an_iterator_consumer_records_the_sink_loop() {
    let _dog = watchdog("an iterator consumer", 60);
    let pipeline = Pipeline::new()
        .stage("spin", Fixed::new(2, map(|x: u64| spin(x, 100))))
        .stage("keep", Ordered::new(2, map(|x: u64| x)));
    // Every output, read slowly now and then: the sink loop's busy time is the iterator's.
    let (n, report) = pipeline
        .job()
        .record_timeline()
        .run_with(0..20_000u64, |outputs| {
            let mut n = 0u64;
            for _ in outputs {
                n += 1;
                if n % 5_000 == 0 {
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
            Ok(n)
        })
        .unwrap();
    assert_eq!(n, 20_000);
    let timeline = check_timeline(&report);
    let sink = timeline.tracks().last().unwrap();
    assert_eq!(sink.kind(), &TrackKind::Sink);
    let items: u64 = sink.intervals().iter().map(Interval::item_count).sum();
    assert_eq!(
        items, 20_000,
        "every output in one of the sink loop's chunks"
    );
    assert!(sink.total(State::Busy) >= Duration::from_millis(8));
    check_export(&report);

    // Stopping early: a clean stop, and the timeline still adds up.
    let (taken, report) = pipeline
        .job()
        .record_timeline()
        .run_with(0.., |outputs| Ok(outputs.take(1_000).count()))
        .unwrap();
    assert_eq!(taken, 1_000);
    assert!(report.stopped_early);
    check_timeline(&report);
    check_export(&report);
}

#[test]
fn without_the_option_nothing_is_recorded() {
    let _dog = watchdog("no timeline", 30);
    let pipeline = Pipeline::new().stage("id", Fifo::new(map(|x: u32| x)));
    let report = pipeline.run(0..100, |_| Ok(())).unwrap();
    assert!(report.timeline().is_none());
    // A report carrying a timeline shares it when cloned.
    let report = pipeline
        .job()
        .record_timeline()
        .run(0..100, |_| Ok(()))
        .unwrap();
    let copy = report.clone();
    assert!(std::ptr::eq(
        copy.timeline().unwrap(),
        report.timeline().unwrap()
    ));
}

#[test]
fn progress_snapshots_carry_no_timeline() {
    let _dog = watchdog("progress", 30);
    let pipeline = Pipeline::new().stage(
        "sleepy",
        Fifo::new(common::sleepy(Duration::from_millis(1))),
    );
    let mut snapshots = 0;
    let report = pipeline
        .job()
        .record_timeline()
        .on_progress(Duration::from_millis(5), |r| {
            assert!(r.timeline().is_none());
            snapshots += 1;
        })
        .run(0..50, |_| Ok(()))
        .unwrap();
    assert!(snapshots > 0);
    check_timeline(&report);
    check_export(&report);
}

#[test]
fn a_run_cancelled_before_it_starts_has_an_empty_timeline() {
    let _dog = watchdog("cancelled before the start", 30);
    let pipeline = Pipeline::new().stage("id", Fifo::new(map(|x: u32| x)));
    let token = pipework::CancelToken::new();
    token.cancel();
    let err = pipeline
        .job()
        .cancel_token(&token)
        .record_timeline()
        .run(0..100, |_| Ok(()))
        .unwrap_err();
    let timeline = err.report().unwrap().timeline().unwrap();
    assert!(timeline.tracks().is_empty());
    assert_eq!(timeline.queues().len(), 2);
    assert_eq!(timeline.stages().len(), 1);
    // The export is still well-formed: processes, no threads.
    let doc: Value = serde_json::from_str(&timeline.to_trace_events()).unwrap();
    assert!(doc["traceEvents"].as_array().unwrap().len() >= 6);
    // A report's `Debug` summarises its timeline.
    let debug = format!("{timeline:?}");
    assert!(
        debug.starts_with("Timeline {") && debug.contains("tracks: 0"),
        "{debug}"
    );
}
