//! The first error: which injected fault the run returned, checked against the fault that
//! fired, its stage or site, and its message.

use pipework::{Error, ErrorKind, Report, Site as PanicSite};

use super::case::{Case, Kind};
use super::ledger::{Bomb, Fate, Record};

/// What the returned error names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum First {
    /// The run finished.
    None,
    /// A fault during the run.
    Fault,
    /// A user value's `Drop` after every thread was joined: the sink's (0), the progress
    /// callback's (1), in the order the run drops them.
    AfterJoin(u8),
    /// The time limit.
    Deadline,
}

/// Parses "… item I copy C" at the end of an injected message.
fn named_value(message: &str) -> Option<(u32, u32)> {
    let rest = message.rsplit_once("item ")?.1;
    let (id, copy) = rest.split_once(" copy ")?;
    Some((id.parse().ok()?, copy.parse().ok()?))
}

/// Checks that the returned error is an injected fault that fired, at the right stage or
/// site, with the right message.
pub(super) fn first_error(
    case: &Case,
    all: &[Vec<Record>],
    report: &Report,
    result: &Result<Report, Error>,
) -> Result<First, String> {
    let err = match result {
        Ok(_) => return Ok(First::None),
        Err(e) => e,
    };
    let n = case.stages.len();
    let record = |message: &str| -> Result<(u32, u32, &Record), String> {
        let (id, serial) =
            named_value(message).ok_or_else(|| format!("not an injected message: {message:?}"))?;
        let r = all
            .get(id as usize)
            .and_then(|rs| rs.get(serial as usize))
            .ok_or_else(|| format!("{message:?} names no value"))?;
        Ok((id, serial, r))
    };
    let bad = || format!("unexpected error {err} ({:?})", err.kind());
    let check_stage = |s: usize| -> Result<(), String> {
        match err.stage() {
            Some(id) if id.index() == s && s < n && id.name() == case.stage_name(s) => Ok(()),
            other => Err(format!("error at stage {s}, but err.stage() is {other:?}")),
        }
    };
    let ok = |yes: bool, first: First| if yes { Ok(first) } else { Err(bad()) };
    // The fault a processor met on a value at its stage.
    let processor_fault = |s: usize, r: &Record, id: u32| case.strike_stage(s, id, &r.stamps);
    match err.kind() {
        ErrorKind::Stage { stage, error } => {
            let s = stage.index();
            check_stage(s)?;
            let message = error.to_string();
            if message == format!("injected init error at stage {s}") {
                return ok(
                    case.init_fault(s) == Some(Kind::InitError)
                        && report.stages[s].workers_started > 0,
                    First::Fault,
                );
            }
            let (id, serial, r) = record(&message)?;
            let value = format!("on item {id} copy {serial}");
            let expected = match processor_fault(s, r, id) {
                Some(Kind::Error) => format!("injected error at stage {s} {value}"),
                Some(Kind::ExpandError) => format!("injected expansion error at stage {s} {value}"),
                _ => return Err(bad()),
            };
            ok(
                message == expected && r.fate == Fate::Erred(s as u8) && !case.stages[s].routes,
                First::Fault,
            )
        }
        ErrorKind::Panic {
            site: PanicSite::Stage { stage, .. },
            message,
        } => {
            let s = stage.index();
            check_stage(s)?;
            if *message == format!("injected init panic at stage {s}") {
                return ok(
                    case.init_fault(s) == Some(Kind::InitPanic)
                        && report.stages[s].workers_started > 0,
                    First::Fault,
                );
            }
            let (id, serial, r) = record(message)?;
            let value = format!("item {id} copy {serial}");
            if *message == format!("injected clone panic at stage {s} on {value}") {
                return ok(
                    r.clone_panic.is_some_and(|p| usize::from(p.stage) == s),
                    First::Fault,
                );
            }
            if *message == format!("injected drop panic on {value}") {
                // Only a kept copy is dropped by the engine before the run is cancelled.
                return ok(
                    r.bomb == Bomb::Fired && r.keep && usize::from(r.born) == s,
                    First::Fault,
                );
            }
            let expected = match processor_fault(s, r, id) {
                Some(Kind::Panic) => format!("injected panic at stage {s} on {value}"),
                Some(Kind::ExpandPanic) => {
                    format!("injected expansion panic at stage {s} on {value}")
                }
                _ => return Err(bad()),
            };
            ok(
                *message == expected && r.fate == Fate::Panicked(s as u8),
                First::Fault,
            )
        }
        ErrorKind::Panic {
            site: PanicSite::Start { stage },
            message,
        } => {
            let s = stage.index();
            check_stage(s)?;
            ok(
                *message == format!("injected start panic at stage {s}")
                    && case.start_fault(s).is_some(),
                First::Fault,
            )
        }
        ErrorKind::Panic {
            site: PanicSite::Sink,
            message,
        } => {
            if err.stage().is_some() {
                return Err(bad());
            }
            if message == "injected sink drop" {
                return ok(case.drops.sink, First::AfterJoin(0));
            }
            let (id, serial, r) = record(message)?;
            ok(
                *message == format!("injected sink panic on item {id} copy {serial}")
                    && r.fate == Fate::SinkFailed,
                First::Fault,
            )
        }
        ErrorKind::Sink { error } => {
            let message = error.to_string();
            let (id, serial, r) = record(&message)?;
            ok(
                message == format!("injected sink error on item {id} copy {serial}")
                    && r.fate == Fate::SinkFailed
                    && err.stage().is_none(),
                First::Fault,
            )
        }
        ErrorKind::Panic {
            site: PanicSite::Source,
            message,
        } => {
            if message == "injected source drop" {
                return ok(case.drops.source, First::Fault);
            }
            let i = case.source_cut();
            ok(
                *message == format!("injected source panic at item {i}")
                    && case.strike_source(i) == Some(Kind::Panic)
                    && err.stage().is_none(),
                First::Fault,
            )
        }
        ErrorKind::Source { error } => {
            let i = case.source_cut();
            ok(
                error.to_string() == format!("injected source error at item {i}")
                    && case.strike_source(i) == Some(Kind::Error)
                    && err.stage().is_none(),
                First::Fault,
            )
        }
        ErrorKind::Panic {
            site: PanicSite::Progress,
            message,
        } => ok(
            message == "injected progress drop" && case.drops.progress,
            First::AfterJoin(1),
        ),
        ErrorKind::Deadline { limit } => ok(
            case.timeout == Some(*limit) && case.may_time_out(),
            First::Deadline,
        ),
        _ => Err(bad()),
    }
}
