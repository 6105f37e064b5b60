//! The first error: which injected fault the run returned, checked against the fault that
//! fired, its stage or site, and its message.

use pipework::{Error, ErrorKind, Report, Site as PanicSite};

use super::case::{Case, Kind};
use super::ledger::{Fate, Record};

/// What the returned error names.
pub(super) enum First {
    None,
    /// A value of the ledger: (id, serial).
    Value(u32, u32),
    Source,
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
    result: &Result<Report, Error>,
) -> Result<First, String> {
    let err = match result {
        Ok(_) => return Ok(First::None),
        Err(e) => e,
    };
    let record = |message: &str| -> Result<(u32, u32, Fate), String> {
        let (id, serial) =
            named_value(message).ok_or_else(|| format!("not an injected message: {message:?}"))?;
        let r = all
            .get(id as usize)
            .and_then(|rs| rs.get(serial as usize))
            .ok_or_else(|| format!("{message:?} names no value"))?;
        Ok((id, serial, r.fate))
    };
    let bad = || format!("unexpected error {err} ({:?})", err.kind());
    let check_stage = |s: usize| -> Result<(), String> {
        match err.stage() {
            Some(id) if id.index() == s && id.name() == format!("s{s}") => Ok(()),
            other => Err(format!("error at stage {s}, but err.stage() is {other:?}")),
        }
    };
    match err.kind() {
        ErrorKind::Stage { stage, error } => {
            let message = error.to_string();
            let (id, serial, r) = record(&message)?;
            let s = stage.index();
            check_stage(s)?;
            let expected = format!("injected error at stage {s} on item {id} copy {serial}");
            if message != expected
                || !matches!(r, Fate::Erred { stage, .. } if usize::from(stage) == s)
                || case.stages[s].routes
            {
                return Err(bad());
            }
            Ok(First::Value(id, serial))
        }
        ErrorKind::Panic {
            site: PanicSite::Stage { stage, .. },
            message,
        } => {
            let (id, serial, r) = record(message)?;
            let s = stage.index();
            check_stage(s)?;
            if *message != format!("injected panic at stage {s} on item {id} copy {serial}")
                || r != Fate::Panicked(s as u8)
            {
                return Err(bad());
            }
            Ok(First::Value(id, serial))
        }
        ErrorKind::Panic {
            site: PanicSite::Sink,
            message,
        } => {
            let (id, serial, r) = record(message)?;
            if *message != format!("injected sink panic on item {id} copy {serial}")
                || r != Fate::SinkFailed
                || err.stage().is_some()
            {
                return Err(bad());
            }
            Ok(First::Value(id, serial))
        }
        ErrorKind::Sink { error } => {
            let message = error.to_string();
            let (id, serial, r) = record(&message)?;
            if message != format!("injected sink error on item {id} copy {serial}")
                || r != Fate::SinkFailed
                || err.stage().is_some()
            {
                return Err(bad());
            }
            Ok(First::Value(id, serial))
        }
        ErrorKind::Panic {
            site: PanicSite::Source,
            message,
        } => {
            let i = case.source_cut();
            if *message != format!("injected source panic at item {i}")
                || case.strike_source(i) != Some(Kind::Panic)
                || err.stage().is_some()
            {
                return Err(bad());
            }
            Ok(First::Source)
        }
        ErrorKind::Source { error } => {
            let i = case.source_cut();
            if error.to_string() != format!("injected source error at item {i}")
                || case.strike_source(i) != Some(Kind::Error)
                || err.stage().is_some()
            {
                return Err(bad());
            }
            Ok(First::Source)
        }
        _ => Err(bad()),
    }
}
