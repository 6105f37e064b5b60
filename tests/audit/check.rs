//! The audit of a finished run: everything the ledger knows, checked against the crate's
//! report, the returned error, and what the case's faults predict.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::Ordering;
use std::time::Duration;

use pipework::{Error, ErrorKind, Report};

use super::case::{Case, Kind, Outcome};
use super::first_error::{First, first_error};
use super::key::{derive_key, is_copy};
use super::ledger::{Bomb, Fate, Ledger, Made, Record};

/// What a case did, once audited.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Audit {
    /// Units per outcome.
    pub outcomes: BTreeMap<Outcome, u64>,
    /// Items read.
    pub read: u64,
    /// Broadcast copies.
    pub copies: u64,
    /// Outputs of expansions beyond the first (or all of them, for an expansion that failed).
    pub expanded: u64,
    /// Failures the handler received.
    pub routed: u64,
    /// Errors that happened, each of which the run returned or counted as suppressed: panics
    /// and errors of processors, sources, sinks, init closures and `start`, panics of
    /// `Clone` and `Drop`.
    pub fired: u64,
    /// Of `fired`, panics in an item's `Drop`.
    pub drops_fired: u64,
    pub suppressed: u64,
    pub elapsed: Duration,
}

impl Audit {
    pub fn count(&self, o: Outcome) -> u64 {
        self.outcomes.get(&o).copied().unwrap_or(0)
    }

    /// Units whose outcome is anything but `Sunk`.
    pub fn not_sunk(&self) -> u64 {
        self.outcomes
            .iter()
            .filter(|(o, _)| **o != Outcome::Sunk)
            .map(|(_, n)| n)
            .sum()
    }
}

/// A unit's outcome and key.
struct Unit {
    id: u32,
    serial: u32,
    key: Vec<u8>,
    outcome: Outcome,
}

/// Checks everything the ledger knows against the report, the error and the faults.
pub(super) fn audit(
    case: &Case,
    ledger: &Ledger,
    result: &Result<Report, Error>,
) -> Result<Audit, String> {
    let n = case.stages.len();
    let notes = ledger.notes.lock();
    if !notes.is_empty() {
        return Err(format!(
            "broken during the run: {:?}",
            &notes[..notes.len().min(10)]
        ));
    }
    drop(notes);
    let report = match result {
        Ok(r) => r,
        Err(e) => e.report().ok_or("an aborted run without a report")?,
    };
    if report.stages.len() != n {
        return Err(format!("{} stages in the report", report.stages.len()));
    }

    // Every value dropped exactly once, and the crate's clones accounted for.
    let all: Vec<Vec<Record>> = ledger.ids.iter().map(|m| m.lock().clone()).collect();
    let fanout_panicked: HashSet<u8> = all
        .iter()
        .flatten()
        .filter_map(|r| r.clone_panic.filter(|p| p.fanout).map(|p| p.stage))
        .collect();
    let mut read = 0u64;
    let mut copies = vec![0u64; n];
    let mut expanded = vec![0u64; n];
    for (id, records) in all.iter().enumerate() {
        for (serial, r) in records.iter().enumerate() {
            if r.drops != 1 {
                return Err(format!(
                    "item {id} copy {serial} dropped {} times: {r:?}",
                    r.drops
                ));
            }
            let s = usize::from(r.born);
            let what = format!("item {id} copy {serial}");
            match (r.made, r.keep, r.aborted) {
                (Made::Source, _, _) => read += 1,
                (Made::Clone, true, _) => {
                    if s >= n || !case.stages[s].keeps() {
                        return Err(format!("{what}: kept by stage {s}, which keeps nothing"));
                    }
                    if !matches!(r.fate, Fate::Live | Fate::Routed(_)) {
                        return Err(format!("{what}: a kept copy ended {:?}", r.fate));
                    }
                }
                (Made::Clone, false, true) => {
                    if r.fate != Fate::Live || !fanout_panicked.contains(&r.born) {
                        return Err(format!(
                            "{what}: a copy dropped by a distributor's panic at stage {s}, \
                             but no clone panicked there: {r:?}"
                        ));
                    }
                }
                (Made::Clone, false, false) => {
                    if s >= n || case.width(s) < 2 {
                        return Err(format!(
                            "{what}: a clone made at {s}, not a broadcast: {r:?}"
                        ));
                    }
                    copies[s] += 1;
                }
                (Made::Expanded, _, _) => {
                    let p = &records[r.parent.ok_or("an output without an input")? as usize];
                    let b = s as u8;
                    match p.fate {
                        Fate::Split(at) | Fate::Erred(at) | Fate::Panicked(at) if at == b => {}
                        other => {
                            return Err(format!(
                                "{what}: an expansion's output at stage {s}, its input {other:?}"
                            ));
                        }
                    }
                    expanded[s] += 1;
                }
            }
        }
        // An expansion that succeeded counts its first output as its input going on.
        for r in records {
            if let Fate::Split(s) = r.fate {
                expanded[usize::from(s)] -= 1;
            }
        }
    }

    // Routed failures: each one a kept copy of a value that erred at that stage.
    let routed = ledger.routed.lock();
    let mut routed_of = HashSet::new();
    for f in routed.iter() {
        let r = &all[f.id as usize][f.serial as usize];
        let parent = r.parent.ok_or("the handler got an original")?;
        let p = &all[f.id as usize][parent as usize];
        let s = f.stage;
        let value = format!("on item {} copy {parent}", f.id);
        let expected = match case.strike_stage(s, f.id, &p.stamps) {
            Some(Kind::ExpandError) => format!("injected expansion error at stage {s} {value}"),
            _ => format!("injected error at stage {s} {value}"),
        };
        let ok = r.keep
            && r.fate == Fate::Routed(s as u8)
            && usize::from(r.born) == s
            && f.name == case.stage_name(s)
            && p.fate == Fate::Erred(s as u8)
            && f.error == expected;
        if !ok {
            return Err(format!(
                "a routed failure that does not match its item: {f:?}, copy {r:?}, parent {p:?}"
            ));
        }
        if !routed_of.insert((f.id, parent)) {
            return Err(format!("item {} copy {parent} routed twice", f.id));
        }
    }
    let handled = routed.len() as u64;
    drop(routed);

    // Units: outcome and key.
    let mut units = Vec::new();
    for (id, records) in all.iter().enumerate() {
        let id = id as u32;
        let mut keys: Vec<Option<Vec<u8>>> = vec![None; records.len()];
        for (serial, r) in records.iter().enumerate() {
            if r.made == Made::Clone && !is_copy(r) {
                continue;
            }
            let serial = serial as u32;
            let key = derive_key(case, records, &keys, serial)
                .map_err(|e| format!("item {id} copy {serial}: {e}: {r:?}"))?;
            keys[serial as usize] = Some(key.clone());
            let outcome = match r.fate {
                Fate::Split(_) => continue,
                Fate::Live | Fate::StallCut(_) => match r.clone_panic {
                    Some(p) if !p.fanout => Outcome::Failed(p.stage.into()),
                    _ => Outcome::Cancelled,
                },
                Fate::Sunk => Outcome::Sunk,
                Fate::Filtered(s) => Outcome::Filtered(s.into()),
                Fate::Panicked(s) => Outcome::Failed(s.into()),
                Fate::SinkFailed => Outcome::SinkFailed,
                Fate::Routed(_) => {
                    return Err(format!("item {id} copy {serial}: a unit ended as routed"));
                }
                Fate::Erred(s) => {
                    if !case.stages[usize::from(s)].routes {
                        Outcome::Failed(s.into())
                    } else if routed_of.contains(&(id, serial)) {
                        Outcome::Routed(s.into())
                    } else {
                        // A failure a routing stage would have handed on, in a run another
                        // fault had ended: cancelled, and not an error of the run.
                        Outcome::Cancelled
                    }
                }
            };
            // A unit that ended at a stage has a key that ends there.
            let ends_at = match outcome {
                Outcome::Filtered(s) | Outcome::Failed(s) | Outcome::Routed(s) => Some(s + 1),
                Outcome::Sunk | Outcome::SinkFailed => Some(n),
                Outcome::Cancelled => None,
            };
            if ends_at.is_some_and(|len| key.len() != len) {
                return Err(format!(
                    "item {id} copy {serial}: {outcome:?} with key {key:?}: {r:?}"
                ));
            }
            units.push(Unit {
                id,
                serial,
                key,
                outcome,
            });
        }
    }

    // Each (id, branch path) exactly once: keys distinct and prefix-free per id.
    units.sort_by(|a, b| (a.id, &a.key).cmp(&(b.id, &b.key)));
    for pair in units.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        if a.id == b.id && b.key.starts_with(&a.key) {
            return Err(format!(
                "item {}: copy {} (key {:?}, {:?}) and copy {} (key {:?}, {:?}) are the same unit",
                a.id, a.serial, a.key, a.outcome, b.serial, b.key, b.outcome
            ));
        }
    }

    // Every error that happened, each returned or counted as suppressed exactly once.
    let records = || all.iter().flatten();
    // Errors of stages that fail fast: a routing stage's are routed, or cancelled.
    let erred = records()
        .filter(|r| matches!(r.fate, Fate::Erred(s) if !case.stages[usize::from(s)].routes))
        .count() as u64;
    let panicked = records()
        .filter(|r| matches!(r.fate, Fate::Panicked(_) | Fate::SinkFailed))
        .count() as u64;
    let drops_fired = records().filter(|r| r.bomb == Bomb::Fired).count() as u64;
    let clones_fired = records().filter(|r| r.clone_panic.is_some()).count() as u64;
    let source_fired = u64::from(ledger.source_fired.load(Ordering::SeqCst));
    let inits: u64 = (0..n)
        .filter(|&s| case.init_fault(s).is_some())
        .map(|s| report.stages[s].workers_started as u64)
        .sum();
    let starts = (0..n).filter(|&s| case.start_fault(s).is_some()).count() as u64;
    let fired = erred
        + panicked
        + drops_fired
        + clones_fired
        + source_fired
        + inits
        + starts
        + case.drops.count();
    let suppressed = report.suppressed_errors;
    let reported = match result {
        Ok(_) => 0,
        Err(_) => 1 + suppressed,
    };
    let deadline = matches!(result, Err(e) if matches!(e.kind(), ErrorKind::Deadline { .. }));
    // An error that may or may not have happened: the time limit may have passed after
    // another error (suppressed).
    let certain = u64::from(deadline);
    let mut slack = 0;
    if case.may_time_out() && !deadline && result.is_err() {
        slack += 1;
    }
    let counted = (fired + certain..=fired + certain + slack).contains(&reported);
    if !counted {
        return Err(format!(
            "{reported} errors reported (first + suppressed), but {fired} happened: \
             {} unrouted processor errors, {panicked} panics of processors and the sink, \
             {drops_fired} of items' Drop, {clones_fired} of Clone, {source_fired} source \
             faults, {inits} init faults, {starts} start panics, {} user values' Drop",
            erred,
            case.drops.count()
        ));
    }

    // The tally against the report.
    let mut outcomes = BTreeMap::new();
    for u in &units {
        *outcomes.entry(u.outcome).or_insert(0u64) += 1;
    }
    let audit = Audit {
        outcomes,
        read,
        copies: copies.iter().sum(),
        expanded: expanded.iter().sum(),
        routed: handled,
        fired,
        drops_fired,
        suppressed,
        elapsed: Duration::ZERO,
    };
    let t = report.totals();
    let per_stage = |f: &dyn Fn(usize) -> Outcome| (0..n).map(|s| audit.count(f(s))).sum::<u64>();
    let mine = (
        audit.read,
        audit.copies,
        audit.expanded,
        audit.count(Outcome::Sunk),
        per_stage(&Outcome::Filtered),
        per_stage(&Outcome::Failed)
            + per_stage(&Outcome::Routed)
            + audit.count(Outcome::SinkFailed),
        per_stage(&Outcome::Routed),
        audit.count(Outcome::Cancelled),
    );
    let theirs = (
        t.read,
        t.copies,
        t.expanded,
        t.sunk,
        t.filtered,
        t.failed,
        t.routed,
        t.cancelled,
    );
    if mine != theirs || t.merged != 0 || !t.is_balanced() {
        return Err(format!(
            "ledger (read, copies, expanded, sunk, filtered, failed, routed, cancelled) = \
             {mine:?}, report = {theirs:?} ({t:?})"
        ));
    }
    if handled != t.routed {
        return Err(format!(
            "the handler got {handled} failures, the report routed {}",
            t.routed
        ));
    }
    if report.sink.failed != audit.count(Outcome::SinkFailed)
        || report.sink.consumed != audit.count(Outcome::Sunk)
    {
        return Err(format!(
            "sink report {:?} against {:?}",
            report.sink, audit.outcomes
        ));
    }
    for (s, stage) in report.stages.iter().enumerate() {
        let want = (
            copies[s],
            expanded[s],
            audit.count(Outcome::Filtered(s)),
            audit.count(Outcome::Failed(s)) + audit.count(Outcome::Routed(s)),
            audit.count(Outcome::Routed(s)),
        );
        let got = (
            stage.copies,
            stage.expanded,
            stage.filtered,
            stage.failed,
            stage.routed,
        );
        if want != got || stage.id.index() != s || stage.id.name() != case.stage_name(s) {
            return Err(format!(
                "stage {s}: ledger (copies, expanded, filtered, failed, routed) = {want:?}, \
                 report {got:?}"
            ));
        }
    }

    // The returned error, and what it says about the order of events.
    let first = first_error(case, &all, report, result)?;
    let after_join = u64::from(case.drops.sink) + u64::from(case.drops.progress);
    if let First::AfterJoin(which) = first {
        // Dropped after every thread was joined: first only if nothing else went wrong, and
        // then the first of them the run drops.
        let flagged = [case.drops.sink, case.drops.progress];
        let earliest = flagged.iter().position(|&f| f).map(|p| p as u8);
        if fired != after_join || earliest != Some(which) {
            return Err(format!(
                "a user value's Drop after the join came first ({which}), but {fired} errors \
                 happened and {after_join} such drops"
            ));
        }
    }

    // Against the faults: aborted exactly when a fault must abort; the outcomes those the
    // faults give, all of them when nothing aborted during the run.
    let may_abort = case.must_abort() || (deadline && case.may_time_out());
    if result.is_err() != may_abort {
        return Err(format!(
            "the faults {} abort the run, but it returned {}",
            if case.must_abort() {
                "must"
            } else {
                "must not"
            },
            if result.is_ok() { "Ok" } else { "an error" }
        ));
    }
    let finished = result.is_ok() || matches!(first, First::AfterJoin(_));
    if finished {
        let mut actual: Vec<_> = units
            .iter()
            .map(|u| (u.id, u.key.clone(), u.outcome))
            .collect();
        actual.sort();
        let model = case.model();
        if actual != model {
            let diff: Vec<_> = actual
                .iter()
                .filter(|a| model.binary_search(a).is_err())
                .take(5)
                .collect();
            let missing: Vec<_> = model
                .iter()
                .filter(|m| actual.binary_search(m).is_err())
                .take(5)
                .collect();
            return Err(format!(
                "outcomes differ from the model: unexpected {diff:?}, missing {missing:?} \
                 ({} units, {} expected)",
                actual.len(),
                model.len()
            ));
        }
        if result.is_ok() && suppressed != 0 {
            return Err(format!(
                "a finished run with {suppressed} suppressed errors"
            ));
        }
    } else {
        for u in &units {
            case.plausible(u.id, &u.key, u.outcome)
                .map_err(|e| format!("item {} copy {} key {:?}: {e}", u.id, u.serial, u.key))?;
        }
    }
    Ok(audit)
}
