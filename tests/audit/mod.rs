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
//! - [`first_error`]: which fault the returned error names.
//!
//! # Units and copies
//!
//! A *unit* is what the crate accounts for: an item read from the source, or a clone a
//! broadcast made. Every unit must end in exactly one outcome (sunk, filtered, failed,
//! routed, cancelled). Physically, a unit is one [`Item`] value; a stage that routes failures
//! also clones each input before processing it (a *kept copy*, handed to the failure handler
//! if the processor fails), which is not a unit. The ledger tells the two kinds of clone
//! apart: a kept copy is made on the worker's thread right before our processor runs, which
//! then claims it (see [`Item::enter`]); a broadcast's clones are made on its distributor
//! thread, where no processor runs.
//!
//! # Keys
//!
//! Each unit has a key: the branch it took at each stage it passed (0 for a stage that is
//! not a broadcast), derived from its lineage (a broadcast clones for branches `0..k-1` in
//! order and sends the original to branch `k - 1`) and checked against the branch each
//! processor stamped on it. Per item id the keys must be distinct and prefix-free: each
//! `(id, branch path)` has exactly one outcome.
#![allow(dead_code)] // each suite uses its own subset

mod case;
mod check;
mod first_error;
mod key;
mod ledger;
mod run;

// Each suite uses its own subset.
#[allow(unused_imports)]
pub use {
    crate::common::RUN_LIMIT,
    case::{Case, Fault, Kind, Outcome, Runner, Site, StageSpec},
    check::Audit,
    ledger::{Item, Ledger},
    run::run_case,
};

/// The most stages a case may have.
pub const MAX_STAGES: usize = 5;
/// A stamp not written yet.
const UNSTAMPED: u8 = u8::MAX;
