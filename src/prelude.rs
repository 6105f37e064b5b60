//! What most programs use, in one import: `use pipework::prelude::*;`.
//!
//! The pipeline and its runners, the functions that make processors of closures, stage
//! options and failures, the sink's [`Stop`], and [`BoxError`]. Not included: names that
//! other crates' preludes or `std` commonly use for something else ([`Error`](crate::Error),
//! [`ErrorKind`](crate::ErrorKind), [`Result`](crate::Result), and
//! [`Context`](crate::Context), which `anyhow` names too and which the closures here never
//! need spelled out); import them by path when you need them.
//!
//! ```
//! use pipework::prelude::*;
//!
//! let pipeline = Pipeline::new()
//!     .stage("parse", Fixed::new(2, try_map(|s: &str| s.trim().parse::<u64>())))
//!     .stage("square", Fifo::new(map(|x: u64| x * x)));
//! let (mut out, _) = pipeline.collect([" 2", "3 "]).unwrap();
//! out.sort();
//! assert_eq!(out, [4, 9]);
//! ```

pub use crate::context::CancelToken;
pub use crate::error::BoxError;
pub use crate::pipeline::Pipeline;
pub use crate::policy::{Failure, Retry, StageOptions, Transient};
pub use crate::processor::{filter_map, flat_map, map, try_map, with_context};
pub use crate::runner::{Batch, Broadcast, Dynamic, Fifo, Fixed, Ordered};
pub use crate::sink::{Sink, Stop};
pub use crate::{sink, source};
