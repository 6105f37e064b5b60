//! The fault suites' harness (faults.rs, random.rs, stress.rs): a pipeline described as data
//! ([`Case`]), faults injected by item index ([`Fault`]), items that record in a [`Ledger`]
//! every copy made of them and how each copy ended, and [`run_case`], which runs a case under
//! the watchdog and audits the ledger against the crate's report, the returned error, and
//! what the case's faults predict.
//!
//! A suite that uses it declares both module trees: `mod audit;` needs `mod common;` (for
//! the watchdog) at the root of the same test crate. The other suites do not compile it.
//!
//! One file per phase:
//!
//! - [`case`]: the case as data, and the model of what its faults must do;
//! - [`ledger`]: the test's items, and the ledger of every value made and how it ended;
//! - [`run`]: the case's pipeline, source and sink, and running a case ([`run_case`]);
//! - [`check`]: the audit of a finished run against the report and the model;
//! - [`key`]: each unit's key, derived from its lineage;
//! - [`first_error`]: which fault the returned error names;
//! - [`generate`]: random definitions and runs of them (random.rs, soak.rs).
//!
//! # Units and copies
//!
//! A *unit* is what the crate accounts for: an item read from the source, a clone a
//! broadcast made, or an output of a one-to-many processor beyond the first. Every unit must
//! end in exactly one outcome (sunk, filtered, failed, routed, cancelled). Physically, a unit
//! is one [`Item`] value, with three exceptions the ledger tells apart: a stage that routes
//! failures or retries also clones each input before processing it (a *kept copy*, handed
//! to the failure handler if the processor fails), which is not a unit; an input a
//! successful expansion consumed is not one either (its outputs are: the first goes on as
//! its unit, the others count as expanded); and a broadcast's copies of a chunk it was
//! cloning when a `Clone` panicked are never sent and never counted. A kept copy is made on
//! the worker's thread right before our processor runs, which then claims it (see
//! [`Item::enter`]); a broadcast's clones are made on its distributor thread, where no
//! processor runs.
//!
//! # Keys
//!
//! Each unit has a key: the branch it took at each stage it passed (0 for a stage that is
//! not a broadcast; plus 16 × j for output j of an expansion), derived from its lineage (a
//! broadcast clones for branches `0..k-1` in order and sends the original to branch `k - 1`)
//! and checked against the branch each processor stamped on it. Per item id the keys must
//! be distinct and prefix-free: each `(id, branch path)` has exactly one outcome.
//!
//! # Errors
//!
//! Every error that happens (a processor's, the source's or the sink's error or panic, a
//! panic in an item's `Clone` or `Drop`, in an init closure, a runner's `start` or a user
//! value's `Drop`) is either the run's error or counted in `Report::suppressed_errors`:
//! the audit counts what happened from the ledger and compares.
// Each suite uses its own subset.
#![allow(dead_code)]
// Pedantic lints the harness allows, and why:
// - `manual_assert`: an injected fault is a `panic!` where it strikes, not an assertion.
// - `many_single_char_names`: `s`, `b`, `j`, `k`, `n` are the stage, branch, output,
//   width and stage count of the documentation above.
#![allow(clippy::manual_assert, clippy::many_single_char_names)]

mod case;
mod check;
mod first_error;
pub mod generate;
mod key;
mod ledger;
mod run;

// Each suite uses its own subset.
#[allow(unused_imports)]
pub use {
    crate::common::RUN_LIMIT,
    case::{
        Case, EXPAND, EXPAND_BEFORE_FAIL, Fault, Kind, Name, Outcome, Runner, Site, StageSpec,
        UserDrops,
    },
    check::Audit,
    ledger::{Item, Ledger},
    run::{run_case, run_on, try_run_on, try_run_within},
};

/// The most stages a case may have.
pub const MAX_STAGES: usize = 5;
/// A stamp not written yet.
const UNSTAMPED: u8 = u8::MAX;
