//! Concurrent, bounded, staged pipelines on scoped OS threads, behind one blocking call.
//!
//! (The full tutorial is written in the crate README; see `README.md`.)

#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

mod context;
mod error;
mod pipeline;
mod policy;
mod processor;
mod report;
mod run;
mod runner;
mod sink;
pub mod source;
mod transport;

pub use context::{CancelToken, Cancelled, Context};
pub use error::{BoxError, Error, ErrorKind, Result, Site};
pub use pipeline::{Job, Pipeline};
pub use policy::{Failure, StageOptions};
pub use processor::{Emitter, FilterMap, FlatMap, Processor, filter_map, flat_map};
pub use report::{Report, SinkReport, SourceReport, StageId, StageReport, Totals};
pub use runner::{
    Broadcast, Cloned, Dynamic, Factory, Fifo, Fixed, Init, StageHandle, StageRunner, Worker,
};
pub use sink::Sink;
pub use source::{IntoSource, Source};
