//! The `tracing` feature: the spans of a run and its threads, and the events for chunks,
//! retries, routed failures, cancellation and the first error, with their levels and
//! fields as the crate documents them.
//!
//! A small `Subscriber` of its own (no `tracing-subscriber` needed) records every span and
//! event of the `pipework` target, process-wide: each test names its stages uniquely and
//! looks only at what hangs off them.
#![cfg(feature = "tracing")]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use common::{fallible, watchdog};
use pipework::{
    BoxError, CancelToken, ErrorKind, Failure, Fifo, Fixed, Ordered, Pipeline, Retry, StageOptions,
    Transient, map,
};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

#[derive(Debug, Clone)]
struct SpanRec {
    name: &'static str,
    level: Level,
    fields: BTreeMap<String, String>,
    parent: Option<u64>,
}

#[derive(Debug, Clone)]
struct EventRec {
    level: Level,
    fields: BTreeMap<String, String>,
    span: Option<u64>,
}

impl EventRec {
    fn message(&self) -> &str {
        self.fields.get("message").map_or("", String::as_str)
    }
}

#[derive(Default)]
struct Inner {
    next: AtomicU64,
    spans: Mutex<HashMap<u64, SpanRec>>,
    events: Mutex<Vec<EventRec>>,
}

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

thread_local! {
    static STACK: std::cell::RefCell<Vec<u64>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn current() -> Option<u64> {
    STACK.with(|s| s.borrow().last().copied())
}

#[derive(Clone)]
struct Recorder(Arc<Inner>);

impl Subscriber for Recorder {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.target().starts_with("pipework")
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(tracing::level_filters::LevelFilter::TRACE)
    }

    fn new_span(&self, attrs: &Attributes<'_>) -> Id {
        let id = self.0.next.fetch_add(1, Ordering::Relaxed) + 1;
        let mut fields = BTreeMap::new();
        attrs.record(&mut Fields(&mut fields));
        let parent = if attrs.is_contextual() {
            current()
        } else {
            attrs.parent().map(Id::into_u64)
        };
        self.0.spans.lock().unwrap().insert(
            id,
            SpanRec {
                name: attrs.metadata().name(),
                level: *attrs.metadata().level(),
                fields,
                parent,
            },
        );
        Id::from_u64(id)
    }

    fn record(&self, span: &Id, values: &Record<'_>) {
        if let Some(s) = self.0.spans.lock().unwrap().get_mut(&span.into_u64()) {
            values.record(&mut Fields(&mut s.fields));
        }
    }

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut fields = BTreeMap::new();
        event.record(&mut Fields(&mut fields));
        let span = if event.is_contextual() {
            current()
        } else {
            event.parent().map(Id::into_u64)
        };
        self.0.events.lock().unwrap().push(EventRec {
            level: *event.metadata().level(),
            fields,
            span,
        });
    }

    fn enter(&self, span: &Id) {
        STACK.with(|s| s.borrow_mut().push(span.into_u64()));
    }

    fn exit(&self, _: &Id) {
        STACK.with(|s| s.borrow_mut().pop());
    }
}

/// The process-wide recorder, installed once.
fn recorder() -> &'static Inner {
    static INNER: OnceLock<Arc<Inner>> = OnceLock::new();
    INNER.get_or_init(|| {
        let inner = Arc::new(Inner::default());
        tracing::subscriber::set_global_default(Recorder(Arc::clone(&inner)))
            .expect("no other global subscriber");
        inner
    })
}

/// What was recorded so far.
fn snapshot() -> (HashMap<u64, SpanRec>, Vec<EventRec>) {
    let inner = recorder();
    let spans = inner.spans.lock().unwrap().clone();
    let events = inner.events.lock().unwrap().clone();
    (spans, events)
}

/// The spans of threads of stage `stage`, with the span of their run.
fn stage_threads<'a>(spans: &'a HashMap<u64, SpanRec>, stage: &str) -> Vec<(u64, &'a SpanRec)> {
    let mut found: Vec<_> = spans
        .iter()
        .filter(|(_, s)| s.fields.get("stage").map(String::as_str) == Some(stage))
        .map(|(id, s)| (*id, s))
        .collect();
    found.sort_by_key(|(id, _)| *id);
    found
}

/// The run span every one of `threads` hangs off (they must agree).
fn run_of(spans: &HashMap<u64, SpanRec>, threads: &[(u64, &SpanRec)]) -> u64 {
    let parents: Vec<u64> = threads.iter().map(|(_, s)| s.parent.unwrap()).collect();
    assert!(
        parents.windows(2).all(|w| w[0] == w[1]),
        "one run: {parents:?}"
    );
    let run = parents[0];
    assert_eq!(spans[&run].name, "pipework.run");
    assert_eq!(spans[&run].level, Level::INFO);
    run
}

#[test]
fn a_run_and_each_of_its_threads_have_a_span() {
    let _dog = watchdog("spans", 30);
    recorder();
    let pipeline = Pipeline::new()
        .stage("tr-pool", Fixed::new(2, map(|x: u64| x + 1)))
        .stage("tr-ordered", Ordered::new(2, map(|x: u64| x * 2)));
    let report = pipeline.run(0..2_000u64, |_| Ok(())).unwrap();
    assert_eq!(report.totals().sunk, 2_000);
    let (spans, events) = snapshot();

    let pool = stage_threads(&spans, "tr-pool");
    assert_eq!(pool.len(), 2);
    for (_, s) in &pool {
        assert_eq!(s.name, "pipework.worker");
        assert_eq!(s.level, Level::DEBUG);
        assert_eq!(s.fields["stage_index"], "0");
        assert!(["0", "1"].contains(&s.fields["worker"].as_str()));
    }
    let ordered = stage_threads(&spans, "tr-ordered");
    let workers = ordered
        .iter()
        .filter(|(_, s)| s.name == "pipework.worker")
        .count();
    let mut roles: Vec<&str> = ordered
        .iter()
        .filter(|(_, s)| s.name == "pipework.helper")
        .map(|(_, s)| s.fields["role"].as_str())
        .collect();
    roles.sort_unstable();
    // No helper thread: the workers take their chunks and forward their outputs.
    assert_eq!((workers, roles), (2, Vec::<&str>::new()));
    for (_, s) in &ordered {
        assert_eq!(s.fields["stage_index"], "1");
    }
    let all: Vec<_> = pool.iter().chain(&ordered).copied().collect();
    let run = run_of(&spans, &all);
    assert_eq!(spans[&run].fields["stages"], "2");
    assert_eq!(spans[&run].fields["timeline"], "false");
    assert_eq!(spans[&run].fields["outcome"], "ok");
    let sources = spans
        .values()
        .filter(|s| s.name == "pipework.source" && s.parent == Some(run))
        .count();
    assert_eq!(sources, 1);

    // Per-chunk detail at trace level, in the workers' spans.
    let worker_ids: Vec<u64> = pool.iter().map(|(id, _)| *id).collect();
    let chunks: Vec<&EventRec> = events
        .iter()
        .filter(|e| e.message() == "chunk" && e.span.is_some_and(|s| worker_ids.contains(&s)))
        .collect();
    assert!(!chunks.is_empty());
    assert!(chunks.iter().all(|e| e.level == Level::TRACE));
    let items: u64 = chunks
        .iter()
        .map(|e| e.fields["items"].parse::<u64>().unwrap())
        .sum();
    assert_eq!(items, 2_000, "every item in a chunk event");
    assert!(chunks.iter().all(|e| e.fields.contains_key("busy_ns")));
    let sent: u64 = events
        .iter()
        .filter(|e| {
            e.message() == "chunk sent" && e.span.is_some_and(|s| spans[&s].parent == Some(run))
        })
        .map(|e| e.fields["items"].parse::<u64>().unwrap())
        .sum();
    assert_eq!(sent, 2_000, "the source's chunks");

    // The outcome, in the run's span.
    let finished: Vec<_> = events
        .iter()
        .filter(|e| e.span == Some(run) && e.message() == "run finished")
        .collect();
    assert_eq!(finished.len(), 1);
    assert_eq!(finished[0].level, Level::INFO);
    assert_eq!(finished[0].fields["sunk"], "2000");
    assert_eq!(finished[0].fields["outcome"], "ok");
}

#[test]
fn retries_routed_failures_and_the_first_error_are_events() {
    let _dog = watchdog("events", 30);
    recorder();
    let attempts = AtomicU32::new(0);
    let pipeline = Pipeline::new()
        .stage_with(
            "tr-retry",
            Fifo::new(fallible(|x: u64, _| {
                if x == 3 && attempts.fetch_add(1, Ordering::Relaxed) == 0 {
                    return Err(Transient::new("try again").into());
                }
                Ok(x)
            })),
            StageOptions::new().retry(Retry::new(2).backoff(Duration::from_millis(1))),
        )
        .stage_with(
            "tr-route",
            Fifo::new(fallible(|x: u64, _| {
                if x == 5 {
                    return Err(BoxError::from("five is out"));
                }
                Ok(x)
            })),
            StageOptions::new().route_failures_to(|_: Failure<u64>| {}),
        );
    let report = pipeline
        .job()
        .record_timeline()
        .run(0..10u64, |_| Ok(()))
        .unwrap();
    assert_eq!((report.totals().sunk, report.stages[0].retries), (9, 1));

    let failing = Pipeline::new().stage(
        "tr-fail",
        Fifo::new(fallible(|x: u64, _| {
            if x == 7 {
                return Err(BoxError::from("seven is the end"));
            }
            Ok(x)
        })),
    );
    let err = failing.run(0..100u64, |_| Ok(())).unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::Stage { .. }));

    let (spans, events) = snapshot();
    let in_stage = |stage: &str| {
        let ids: Vec<u64> = stage_threads(&spans, stage)
            .iter()
            .map(|(id, _)| *id)
            .collect();
        events
            .iter()
            .filter(|e| e.span.is_some_and(|s| ids.contains(&s)))
            .cloned()
            .collect::<Vec<_>>()
    };
    let retry: Vec<_> = in_stage("tr-retry")
        .into_iter()
        .filter(|e| e.message() == "retrying a transient failure")
        .collect();
    assert_eq!(retry.len(), 1);
    assert_eq!(retry[0].level, Level::DEBUG);
    assert_eq!(retry[0].fields["attempt"], "2");
    assert_eq!(retry[0].fields["error"], "try again");

    let routed: Vec<_> = in_stage("tr-route")
        .into_iter()
        .filter(|e| e.message() == "item failed, routed to the failure handler")
        .collect();
    assert_eq!(routed.len(), 1);
    assert_eq!(routed[0].level, Level::WARN);
    assert_eq!(routed[0].fields["error"], "five is out");
    assert_eq!(routed[0].fields["stage"], "tr-route");
    let run = run_of(&spans, &stage_threads(&spans, "tr-route"));
    assert_eq!(spans[&run].fields["timeline"], "true");

    // The first error, at error level, in the failed run's span.
    let fail = stage_threads(&spans, "tr-fail");
    let run = run_of(&spans, &fail);
    assert_eq!(spans[&run].fields["outcome"], "failed");
    let failed: Vec<_> = events
        .iter()
        .filter(|e| e.span == Some(run) && e.message() == "run failed")
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].level, Level::ERROR);
    assert_eq!(failed[0].fields["error"], err.to_string());
    assert!(failed[0].fields["stage"].contains("tr-fail"));
}

#[test]
fn cancellation_is_reported() {
    let _dog = watchdog("cancellation", 30);
    recorder();
    let pipeline = Pipeline::new().stage(
        "tr-cancel",
        Fixed::new(2, common::sleepy(Duration::from_millis(20))),
    );
    let token = CancelToken::new();
    let canceller = token.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        canceller.cancel();
    });
    let err = pipeline
        .job()
        .cancel_token(&token)
        .run(0..1_000u64, |_| Ok(()))
        .unwrap_err();
    t.join().unwrap();
    assert!(matches!(err.kind(), ErrorKind::Cancelled));

    let (spans, events) = snapshot();
    let threads = stage_threads(&spans, "tr-cancel");
    let run = run_of(&spans, &threads);
    assert_eq!(spans[&run].fields["outcome"], "cancelled");
    let outcome: Vec<_> = events
        .iter()
        .filter(|e| e.span == Some(run) && e.message() == "run cancelled")
        .collect();
    assert_eq!(outcome.len(), 1);
    assert_eq!(outcome[0].level, Level::WARN);
    let ids: Vec<u64> = threads.iter().map(|(id, _)| *id).collect();
    let stopped = events
        .iter()
        .filter(|e| {
            e.message() == "worker stopped by cancellation"
                && e.span.is_some_and(|s| ids.contains(&s))
        })
        .count();
    assert_eq!(stopped, 2, "both workers say they stopped");
}

#[test]
fn an_iterator_that_stops_early_stops_the_run() {
    let _dog = watchdog("a clean early stop", 30);
    recorder();
    let pipeline = Pipeline::new().stage("tr-iter", Fixed::new(2, map(|x: u64| x + 1)));
    let (first, report) = pipeline
        .job()
        .record_timeline()
        .run_with(0..1_000_000u64, |outputs| Ok(outputs.take(10).count()))
        .unwrap();
    assert_eq!(first, 10);
    assert!(report.stopped_early);

    let (spans, events) = snapshot();
    let run = run_of(&spans, &stage_threads(&spans, "tr-iter"));
    assert_eq!(spans[&run].fields["outcome"], "stopped");
    let said = |message: &str| {
        events
            .iter()
            .filter(|e| e.span == Some(run) && e.message() == message)
            .map(|e| e.level)
            .collect::<Vec<_>>()
    };
    assert_eq!(said("the sink stopped the run"), [Level::INFO]);
    assert_eq!(said("run finished"), [Level::INFO]);
    assert!(said("sink loop stopped by cancellation").is_empty());
}
