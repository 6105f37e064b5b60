//! The audit of a finished run: everything the ledger knows, checked against the crate's
//! report, the returned error, and what the case's faults predict.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use pipework::{Error, Report};

use super::case::{Case, Outcome};
use super::first_error::{First, first_error};
use super::key::derive_key;
use super::ledger::{Fate, Ledger, Record};

/// What a case did, once audited.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Audit {
    /// Units per outcome.
    pub outcomes: BTreeMap<Outcome, u64>,
    /// Items read.
    pub read: u64,
    /// Broadcast copies.
    pub copies: u64,
    /// Failures the handler received.
    pub routed: u64,
    /// Aborting faults that fired (panics, fatal errors counted as failures, source and sink
    /// faults).
    pub fired: u64,
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

    // Every value dropped exactly once, and the crate's clones accounted for.
    let all: Vec<Vec<Record>> = ledger.ids.iter().map(|m| m.lock().clone()).collect();
    let mut read = 0u64;
    let mut copies = vec![0u64; n];
    for (id, records) in all.iter().enumerate() {
        for (serial, r) in records.iter().enumerate() {
            if r.drops != 1 {
                return Err(format!(
                    "item {id} copy {serial} dropped {} times: {r:?}",
                    r.drops
                ));
            }
            match (r.parent, r.keep) {
                (None, _) => read += 1,
                (Some(_), true) => {
                    let s = usize::from(r.born);
                    if s >= n || !case.stages[s].routes {
                        return Err(format!(
                            "item {id} copy {serial}: kept by stage {s}, which does not route"
                        ));
                    }
                    if !matches!(r.fate, Fate::Live | Fate::Routed(_)) {
                        return Err(format!(
                            "item {id} copy {serial}: a kept copy ended {:?}",
                            r.fate
                        ));
                    }
                }
                (Some(_), false) => {
                    let s = usize::from(r.born);
                    if s >= n || case.width(s) < 2 {
                        return Err(format!(
                            "item {id} copy {serial}: a clone made at {s}, not a broadcast: {r:?}"
                        ));
                    }
                    copies[s] += 1;
                }
            }
        }
    }

    // Routed failures: each one a kept copy of a value that erred at that stage.
    let routed = ledger.routed.lock();
    let mut routed_of = std::collections::HashSet::new();
    for f in routed.iter() {
        let r = &all[f.id as usize][f.serial as usize];
        let parent = r.parent.ok_or("the handler got an original")?;
        let p = &all[f.id as usize][parent as usize];
        let ok = r.keep
            && r.fate == Fate::Routed(f.stage as u8)
            && usize::from(r.born) == f.stage
            && f.name == format!("s{}", f.stage)
            && matches!(p.fate, Fate::Erred { stage, .. } if usize::from(stage) == f.stage)
            && f.error
                == format!(
                    "injected error at stage {} on item {} copy {parent}",
                    f.stage, f.id
                );
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

    // The returned error, and how many fail-fast errors the crate counted as failures.
    let first = first_error(case, &all, result)?;
    let suppressed = report.suppressed_errors;
    let source_fired = u64::from(ledger.source_fired.load(Ordering::SeqCst));
    let mut fired_other = source_fired;
    let mut candidates = Vec::new();
    for (id, records) in all.iter().enumerate() {
        for (serial, r) in records.iter().enumerate() {
            match r.fate {
                Fate::Panicked(_) | Fate::SinkFailed => fired_other += 1,
                Fate::Erred {
                    stage,
                    after_cancel: false,
                } if !case.stages[usize::from(stage)].routes => {
                    candidates.push((id as u32, serial as u32));
                }
                _ => {}
            }
        }
    }
    let fail_calls = match result {
        Ok(_) => 0,
        Err(_) => 1 + suppressed,
    };
    let counted = fail_calls
        .checked_sub(fired_other)
        .filter(|&c| c <= candidates.len() as u64)
        .ok_or_else(|| {
            format!(
                "{fail_calls} errors reported (first + suppressed), but {fired_other} panics, \
                 sink and source faults fired and {} fail-fast errors were returned",
                candidates.len()
            )
        })?;
    let mut fatal_failed = std::collections::HashSet::new();
    if let First::Value(id, serial) = first {
        if candidates.contains(&(id, serial)) {
            fatal_failed.insert((id, serial));
        }
    }
    let rest: Vec<_> = candidates
        .iter()
        .filter(|c| !fatal_failed.contains(c))
        .collect();
    let still = counted - fatal_failed.len() as u64;
    if still == rest.len() as u64 {
        fatal_failed.extend(rest.iter().copied());
    } else if still != 0 {
        return Err(format!(
            "cannot tell which {still} of the fail-fast errors {rest:?} the crate counted"
        ));
    }

    // Units: outcome and key.
    let mut units = Vec::new();
    for (id, records) in all.iter().enumerate() {
        let id = id as u32;
        let mut keys: Vec<Option<Vec<u8>>> = vec![None; records.len()];
        for (serial, r) in records.iter().enumerate() {
            if r.keep {
                continue;
            }
            let serial = serial as u32;
            let key = derive_key(case, records, &keys, serial)
                .map_err(|e| format!("item {id} copy {serial}: {e}: {r:?}"))?;
            let outcome = match r.fate {
                Fate::Live | Fate::StallCut(_) => Outcome::Cancelled,
                Fate::Sunk => Outcome::Sunk,
                Fate::Filtered(s) => Outcome::Filtered(s.into()),
                Fate::Panicked(s) => Outcome::Failed(s.into()),
                Fate::SinkFailed => Outcome::SinkFailed,
                Fate::Routed(_) => {
                    return Err(format!("item {id} copy {serial}: a unit ended as routed"));
                }
                Fate::Erred { stage, .. } if case.stages[usize::from(stage)].routes => {
                    if routed_of.contains(&(id, serial)) {
                        Outcome::Routed(stage.into())
                    } else {
                        Outcome::Cancelled
                    }
                }
                Fate::Erred { stage, .. } => {
                    if fatal_failed.contains(&(id, serial)) {
                        Outcome::Failed(stage.into())
                    } else {
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
            keys[serial as usize] = Some(key.clone());
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

    // The tally against the report.
    let mut outcomes = BTreeMap::new();
    for u in &units {
        *outcomes.entry(u.outcome).or_insert(0u64) += 1;
    }
    let audit = Audit {
        outcomes,
        read,
        copies: copies.iter().sum(),
        routed: handled,
        fired: fired_other + fatal_failed.len() as u64,
        suppressed,
        elapsed: Duration::ZERO,
    };
    let t = report.totals();
    let mine = (
        audit.read,
        audit.copies,
        audit.count(Outcome::Sunk),
        (0..n)
            .map(|s| audit.count(Outcome::Filtered(s)))
            .sum::<u64>(),
        (0..n)
            .map(|s| audit.count(Outcome::Failed(s)) + audit.count(Outcome::Routed(s)))
            .sum::<u64>()
            + audit.count(Outcome::SinkFailed),
        (0..n).map(|s| audit.count(Outcome::Routed(s))).sum::<u64>(),
        audit.count(Outcome::Cancelled),
    );
    let theirs = (
        t.read,
        t.copies,
        t.sunk,
        t.filtered,
        t.failed,
        t.routed,
        t.cancelled,
    );
    if mine != theirs || t.expanded != 0 || t.merged != 0 || !t.is_balanced() {
        return Err(format!(
            "ledger (read, copies, sunk, filtered, failed, routed, cancelled) = {mine:?}, \
             report = {theirs:?} ({t:?})"
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
            audit.count(Outcome::Filtered(s)),
            audit.count(Outcome::Failed(s)) + audit.count(Outcome::Routed(s)),
            audit.count(Outcome::Routed(s)),
        );
        let got = (stage.copies, stage.filtered, stage.failed, stage.routed);
        if want != got || stage.id.index() != s || stage.id.name() != format!("s{s}") {
            return Err(format!(
                "stage {s}: ledger (copies, filtered, failed, routed) = {want:?}, report {got:?}"
            ));
        }
    }

    // Against the faults: aborted exactly when a fault must abort; the outcomes those the
    // faults give, all of them when nothing aborted.
    if result.is_err() != case.must_abort() {
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
    match result {
        Ok(_) => {
            let actual: Vec<_> = units
                .iter()
                .map(|u| (u.id, u.key.clone(), u.outcome))
                .collect();
            let mut actual = actual;
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
            if suppressed != 0 {
                return Err(format!(
                    "a finished run with {suppressed} suppressed errors"
                ));
            }
        }
        Err(_) => {
            for u in &units {
                case.plausible(u.id, &u.key, u.outcome)
                    .map_err(|e| format!("item {} copy {} key {:?}: {e}", u.id, u.serial, u.key))?;
            }
        }
    }
    Ok(audit)
}
