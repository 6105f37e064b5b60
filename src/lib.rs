//! Concurrent, bounded, staged pipelines on scoped OS threads, behind one blocking call.
//!
//! A [`Pipeline`] is a chain of stages. A run starts a thread for the source and the stages'
//! workers inside [`std::thread::scope`], links them with bounded crossbeam channels, hands
//! the outputs to you on the calling thread, and returns when every thread has been joined —
//! or once the first error or panic has cancelled the rest and every thread has been joined.
//!
//! # A first pipeline
//!
//! A stage is a name, a runner (how many threads) and a processor (what to do with each
//! item). Closures become processors through [`map`], [`try_map`], [`filter_map`],
//! [`flat_map`] and [`with_context`]:
//!
//! ```
//! use pipework::prelude::*;
//!
//! let pipeline = Pipeline::new()
//!     .stage("parse", Fixed::new(2, try_map(|s: &str| s.parse::<u64>())))
//!     .stage("square", Fixed::new(2, map(|x: u64| x * x)))
//!     .stage("label", Fifo::new(map(|x: u64| format!("<{x}>"))));
//!
//! let (mut out, report) = pipeline.collect(["1", "2", "3"]).unwrap();
//! out.sort();
//! assert_eq!(out, ["<1>", "<4>", "<9>"]);
//! assert_eq!(report.stage("square").unwrap().emitted, 3);
//! ```
//!
//! A closure that fails returns `Result<_, E>` for any error `E` that converts into
//! [`BoxError`] (`std::io::Error`, a parse error, a `String`, …); [`with_context`]'s closure
//! also gets the call's [`Context`] (stage, worker, cancellation, deadline), with no type
//! annotation. See [`Processor`] for the table of forms.
//!
//! # Outputs: a sink, or an iterator
//!
//! [`Pipeline::run`] hands every output to a [`Sink`] — a closure returning
//! `Result<(), BoxError>`, [`sink::for_each`] for one that cannot fail, `&mut Vec`,
//! [`sink::lines`] for a writer, your own type. [`Pipeline::run_with`] hands them to your
//! closure as an iterator instead; stopping early is a clean stop. Both run on the thread
//! that called them, so neither needs to be `Send`.
//!
//! ```
//! use pipework::prelude::*;
//!
//! let pipeline = Pipeline::new().stage("cube", Ordered::new(2, map(|x: u64| x * x * x)));
//! let (first, report) = pipeline
//!     .run_with(0.., |outputs| Ok(outputs.skip_while(|&y| y < 1000).next()))
//!     .unwrap();
//! assert_eq!(first, Some(1000));
//! assert!(report.stopped_early);
//! ```
//!
//! # Stage runners
//!
//! How a stage spreads its work over threads is its runner: [`Fifo`] (one worker, order
//! kept), [`Fixed`] (n workers; [`Fixed::per_core`]), [`Dynamic`] (workers spawned on
//! demand up to a maximum), [`Ordered`] (n workers, order kept within a bounded window),
//! [`Batch`] (items grouped into `Vec`s) and [`Broadcast`] (every item to every branch).
//! [`runner::StageRunner`] is public; see the [`runner`] module to write your own.
//!
//! ```
//! use std::time::Duration;
//! use pipework::prelude::*;
//!
//! // I/O-bound calls on up to 100 threads, then back in one ordered stage.
//! let pipeline = Pipeline::new()
//!     .stage("fetch", Dynamic::new(100, with_context(|id: u32, cx| {
//!         cx.sleep(Duration::from_millis(10)).map(|()| id) // a cancellable stand-in for I/O
//!     })))
//!     .stage("count", Fifo::new(map(|_: u32| 1u32)));
//! let (ones, _) = pipeline.collect(0..100).unwrap();
//! assert_eq!(ones.iter().sum::<u32>(), 100);
//! ```
//!
//! # Errors, panics and cancellation
//!
//! The first failure cancels the run and is returned as an [`Error`], which carries the
//! aborted run's [`Report`]. Panics are caught at the thread boundary.
//!
//! ```
//! use pipework::{map, ErrorKind, Fixed, Pipeline, Site};
//!
//! let pipeline = Pipeline::new().stage(
//!     "risky",
//!     Fixed::new(2, map(|x: u32| {
//!         if x == 3 { panic!("three is right out") }
//!         x
//!     })),
//! );
//! # std::panic::set_hook(Box::new(|_| {}));
//! let err = pipeline.run(0..10, |_| Ok(())).unwrap_err();
//! match err.kind() {
//!     ErrorKind::Panic { site: Site::Stage { stage, .. }, message } => {
//!         assert_eq!(stage.name(), "risky");
//!         assert_eq!(message, "three is right out");
//!     }
//!     other => panic!("{other:?}"),
//! }
//! assert!(err.report().unwrap().totals().is_balanced());
//! ```
//!
//! A [`CancelToken`] cancels runs from any thread, [`Job::timeout`] bounds a run's time,
//! [`StageOptions::route_failures_to`] hands the items a stage fails on to a typed handler
//! instead of failing the run, [`StageOptions::retry`] retries [`Transient`] failures, and
//! [`Job::on_progress`] reports live progress.
//!
//! # Seeing a run
//!
//! Every [`Report`] has per-stage busy, waiting and blocked totals. For *when* each thread
//! was busy, [`Job::record_timeline`] records a [`Timeline`] — per thread, intervals busy /
//! waiting for input / blocked on output at chunk granularity, and the queue depths — in
//! bounded memory (at most [`Timeline::INTERVALS_PER_TRACK`] intervals per thread, merged
//! past it). [`Timeline::write_trace_events`] exports it for Perfetto and
//! `chrome://tracing`. With recording off, the engine pays one predictable branch per
//! chunk.
//!
//! ```
//! use std::time::Duration;
//! use pipework::prelude::*;
//! use pipework::State;
//!
//! let pipeline = Pipeline::new().stage("hash", Fixed::new(2, map(|x: u64| x.rotate_left(7))));
//! let report = pipeline.job().record_timeline().run(0..10_000, |_| Ok(())).unwrap();
//! let timeline = report.timeline().unwrap();
//! // The workers' busy intervals add up to the stage's busy time, to the nanosecond.
//! let busy: Duration = timeline.stage_tracks(0).map(|t| t.total(State::Busy)).sum();
//! assert_eq!(busy, report.stages[0].busy);
//! let json = timeline.to_trace_events(); // save it, open it in ui.perfetto.dev
//! assert!(json.contains(r#""name":"hash #0""#));
//! ```
//!
//! # Tracing
//!
//! With the `tracing` cargo feature (off by default; without it the hooks compile to
//! nothing), a run emits [`tracing`](https://docs.rs/tracing) spans and events, all with
//! the target `pipework`:
//!
//! | span | level | fields | on |
//! |---|---|---|---|
//! | `pipework.run` | info | `stages`, `timeline` (bool), `outcome` (recorded at the end: `ok`, `stopped`, `cancelled`, `failed`) | the calling thread, for the whole run |
//! | `pipework.source` | debug | — | the source thread |
//! | `pipework.worker` | debug | `stage` (name), `stage_index`, `worker` (index) | each worker thread |
//! | `pipework.helper` | debug | `stage`, `stage_index`, `role` (`fanout`, or the role a runner gives `StageHandle::spawn_helper`), `index` | each helper thread |
//!
//! Thread spans are children of the run's span. The run's watcher thread (the periodic
//! jobs of `StageHandle::watch`, a dynamic pool's among them) serves every stage and has
//! no span of its own. The events, in the span of the thread that
//! emits them:
//!
//! | message | level | fields | span |
//! |---|---|---|---|
//! | `chunk` | trace | `items`, `busy_ns` | worker: a chunk done |
//! | `chunk sent` | trace | `items` | source |
//! | `retrying a transient failure` | debug | `attempt` (the one about to be made, from 2), `error` | worker |
//! | `item failed, routed to the failure handler` | warn | `stage`, `error` | worker |
//! | `item failed, failing the stage` | debug | `stage`, `error` | worker (the run's `error` event follows if it was the first) |
//! | `worker stopped by cancellation` | debug | `cancelled` (items it held) | worker |
//! | `the sink stopped the run` / `sink loop stopped by cancellation` | info / debug | — | run |
//! | `run finished` | info | `outcome`, `elapsed_ms`, `read`, `sunk`, `failed`, `routed`, `suppressed_errors` | run |
//! | `run cancelled` | warn | `outcome`, `read`, `sunk`, `cancelled` | run |
//! | `run failed` | error | `outcome`, `error` (the first error, as `run` returns it), `stage`, `read`, `sunk`, `cancelled`, `suppressed_errors` | run |
//!
//! # Guarantees
//!
//! - Every thread of a run is joined before `run` returns.
//! - Every item read, cloned by a broadcast or emitted beyond the first by a one-to-many
//!   processor ends in exactly one outcome: `read + copies + expanded = sunk + filtered +
//!   failed + cancelled + merged` ([`Totals::is_balanced`]), in aborted runs too (`merged`
//!   counts the items a [`Batch`] combined with others).
//! - Every queue is bounded: memory does not grow with the input's length.
//! - The first error is returned; a panic never leaves a run hanging.
//! - When every stage from a failing one to the sink keeps order, the failure takes effect
//!   at its item's position: the outputs of every item before it reach the sink, nothing
//!   after it does.
//! - No runner, built-in or user-written, can hang a run, let a panic escape or unbalance
//!   the report: see [`runner::StageRunner`].
//!
//! Out of scope: a panic in an item's `Drop` during unwinding aborts the process; a processor
//! that never returns keeps its run from returning.
//!
//! # Where things are
//!
//! The crate's root holds what a pipeline is written with; [`prelude`] imports most of it
//! at once. The modules hold the rest: [`processor`] (the processor types behind the
//! closure functions, and [`processor::from_fn`]), [`source`] and [`sink`] (the ways in and
//! out), and [`runner`] (the runner types, and the plumbing for writing your own:
//! [`runner::StageRunner`], [`runner::StageHandle`], [`runner::Worker`], factories).
//!
//! # Architecture
//!
//! The modules form layers; each imports only from the layers below it:
//!
//! 0. `prelude`, which only re-exports;
//! 1. `pipeline` (the typed definition, its validation, the call into the engine) and
//!    `runner` (the built-in strategies: how many workers, which processor);
//! 2. `engine`: one run — scope, threads, the source thread, the calling thread's loop
//!    (sink or iterator, failure handlers), the runner contract ([`runner::StageRunner`],
//!    [`runner::StageHandle`]), the per-worker policy loop ([`runner::Worker`]), counters,
//!    join and report. Its invariants are written once, in its module docs;
//! 3. `policy`, `processor`, `source`, `sink`: what users supply; `error`, `report` and
//!    `timeline`: what they read (an error carries the aborted run's report, so `error`
//!    sits on `report`, and a report its timeline, so `report` sits on `timeline`);
//! 4. `transport`: opaque edges (send or receive, or be woken by cancellation; a blocked
//!    thread parks on the edge's bells), the chunk-size policy, inbox and outbox;
//! 5. `context`, `id`: the vocabulary everything shares (the cancel token, stage names).

#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]
// Clippy's pedantic group is on for every target (`[lints]` in Cargo.toml). Two of its lints
// are allowed here, in the source, so that `-W clippy::pedantic` on a command line agrees:
// Getters and constructors are pure and cheap: a `#[must_use]` on each is noise (builder
// methods that return `Self` are marked, as `clippy::return_self_not_must_use` asks).
#![allow(clippy::must_use_candidate)]
// The engine's short names (`token`, `taken`, `tx`, `rx`) are its vocabulary, similar by design.
#![allow(clippy::similar_names)]

// Layers, from the user's definition down (nothing imports upward):
// prelude → pipeline, runner → engine → policy, processor, source, sink, error, report,
// timeline → transport → context, id.
pub mod prelude;

mod pipeline;
pub mod runner;

mod engine;

mod policy;
pub mod processor;
pub mod sink;
pub mod source;

mod error;
mod report;
mod timeline;

mod transport;

mod context;
mod id;

pub use context::{CancelToken, Cancelled, Context};
pub use error::{BoxError, Error, ErrorKind, Result, Site};
pub use id::StageId;
pub use pipeline::{Job, Pipeline};
pub use policy::{Failure, Retry, StageOptions, Transient};
pub use processor::{Emitter, Processor, filter_map, flat_map, map, try_map, with_context};
pub use report::{Report, SinkReport, SourceReport, StageReport, Totals};
pub use runner::{Batch, Broadcast, Dynamic, Fifo, Fixed, Ordered};
pub use sink::{Sink, Stop};
pub use source::{IntoSource, Source};
pub use timeline::{Interval, QueueDepths, State, Timeline, Track, TrackKind};

/// The README's examples, run as doctests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
