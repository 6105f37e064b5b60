//! Concurrent, bounded, staged pipelines on scoped OS threads, behind one blocking call.
//!
//! A [`Pipeline`] is a chain of stages. A run starts a thread for the source and the stages'
//! workers inside [`std::thread::scope`], links them with bounded crossbeam channels, feeds
//! the sink on the calling thread, and returns when every thread has been joined — or once
//! the first error or panic has cancelled the rest and every thread has been joined.
//!
//! # A first pipeline
//!
//! ```
//! use pipework::{Context, Fifo, Fixed, Pipeline};
//!
//! let pipeline = Pipeline::new()
//!     .stage("square", Fixed::new(2, |x: u64, _: &Context| Ok(x * x)))
//!     .stage("label", Fifo::new(|x: u64, _: &Context| Ok(format!("<{x}>"))));
//!
//! let mut out = Vec::new();
//! let report = pipeline.run(1..=3, &mut out).unwrap();
//! out.sort();
//! assert_eq!(out, ["<1>", "<4>", "<9>"]);
//! assert_eq!(report.totals().sunk, 3);
//! ```
//!
//! # Stage runners
//!
//! How a stage spreads its work over threads is its [`StageRunner`]: [`Fifo`] (one worker,
//! order kept), [`Fixed`] (n workers), [`Dynamic`] (workers spawned on demand up to a
//! maximum), [`Ordered`] (n workers, order kept within a bounded window), [`Batch`] (items
//! grouped into `Vec`s) and [`Broadcast`] (every item to every branch). The trait is public;
//! see its documentation to write your own.
//!
//! ```
//! use std::time::Duration;
//! use pipework::{Context, Dynamic, Fifo, Pipeline};
//!
//! // I/O-bound calls on up to 100 threads, then back in one ordered stage.
//! let pipeline = Pipeline::new()
//!     .stage("fetch", Dynamic::new(100, |id: u32, cx: &Context| {
//!         cx.sleep(Duration::from_millis(10))?; // a cancellable stand-in for I/O
//!         Ok(id)
//!     }))
//!     .stage("count", Fifo::new(|_: u32, _: &Context| Ok(1u32)));
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
//! use pipework::{Context, ErrorKind, Fixed, Pipeline, Site};
//!
//! let pipeline = Pipeline::new().stage(
//!     "risky",
//!     Fixed::new(2, |x: u32, _: &Context| {
//!         if x == 3 { panic!("three is right out") }
//!         Ok(x)
//!     }),
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
//! [`StageOptions::route_failures`] sends the items a stage fails on to a handler instead of
//! failing the run, [`StageOptions::retry`] retries [`Transient`] failures, and
//! [`Job::on_progress`] reports live progress.
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
//!
//! - No runner, built-in or user-written, can hang a run, let a panic escape or unbalance
//!   the report: see [`StageRunner`].
//!
//! Out of scope: a panic in an item's `Drop` during unwinding aborts the process; a processor
//! that never returns keeps its run from returning.
//!
//! # Architecture
//!
//! The modules form layers; each imports only from the layers below it:
//!
//! 1. `pipeline` (the typed definition, its validation, the call into the engine) and
//!    `runner` (the built-in strategies: how many workers, which processor);
//! 2. `engine`: one run — scope, threads, the source thread, the sink loop, the runner
//!    contract ([`StageRunner`], [`StageHandle`]), the per-worker policy loop ([`Worker`]),
//!    counters, join and report. Its invariants are written once, in its module docs;
//! 3. `policy`, `processor`, `source`, `sink`, `report`: what users supply or read;
//! 4. `transport`: opaque edges (send or receive, or be woken by cancellation), the chunk-size
//!    policy, inbox and outbox;
//! 5. `context`, `error`, `id`: the vocabulary everything shares.

#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

// Layers, from the user's definition down (nothing imports upward):
// pipeline, runner → engine → policy, processor, source, sink, report → transport
// → context, error, id.
mod pipeline;
mod runner;

mod engine;

mod policy;
mod processor;
mod report;
pub mod sink;
pub mod source;

mod transport;

mod context;
mod error;
mod id;

pub use context::{CancelToken, Cancelled, Context};
pub use engine::{Next, StageHandle, StageRunner, Worker};
pub use error::{BoxError, Error, ErrorKind, Result, Site};
pub use id::StageId;
pub use pipeline::{Job, Pipeline};
pub use policy::{Failure, Retry, StageOptions, Transient};
pub use processor::{Emitter, FilterMap, FlatMap, Processor, filter_map, flat_map};
pub use report::{Report, SinkReport, SourceReport, StageReport, Totals};
pub use runner::{Batch, Broadcast, Cloned, Dynamic, Factory, Fifo, Fixed, Init, Ordered, PerRun};
pub use sink::{Sink, Stop};
pub use source::{IntoSource, Source};

/// The README's examples, run as doctests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
