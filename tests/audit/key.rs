//! Keys: the branch each unit took at each stage it passed, derived from its lineage (see
//! the module's documentation) and checked against the branches its processors stamped.

use super::UNSTAMPED;
use super::case::{Case, EXPANDED};
use super::ledger::{Made, Record};

/// Whether `c` is a broadcast's copy that reached its branch (not a kept copy, not one whose
/// chunk the distributor never sent).
pub(super) fn is_copy(c: &Record) -> bool {
    c.made == Made::Clone && !c.keep && !c.aborted
}

/// The key of the value `serial` of one item: the branch it took at each stage it passed
/// (with the expansion number of an expansion's output). `keys` holds the keys of the
/// earlier values (`None` for kept copies and broadcast copies never sent).
pub(super) fn derive_key(
    case: &Case,
    records: &[Record],
    keys: &[Option<Vec<u8>>],
    serial: u32,
) -> Result<Vec<u8>, String> {
    let n = case.stages.len();
    let r = &records[serial as usize];
    // Broadcast copies of this value, per stage, in the order they were made.
    let copies_at = |parent: u32, s: usize| -> Vec<u32> {
        records
            .iter()
            .enumerate()
            .filter(|(_, c)| c.parent == Some(parent) && is_copy(c) && usize::from(c.born) == s)
            .map(|(i, _)| i as u32)
            .collect()
    };
    let born = usize::from(r.born);
    let mut key = Vec::with_capacity(n);
    let from = match (r.made, r.parent) {
        (Made::Source, _) => 0,
        (Made::Clone, Some(parent)) => {
            let parent_key = keys[parent as usize]
                .as_ref()
                .ok_or("a clone of a kept copy or of a later value")?;
            if parent_key.len() <= born {
                return Err(format!(
                    "cloned at stage {born}, but its parent's key is {parent_key:?}"
                ));
            }
            key.extend_from_slice(&parent_key[..born]);
            if r.stamps[..born] != key[..] {
                return Err(format!(
                    "stamps {:?} differ from its parent's key {key:?}",
                    r.stamps
                ));
            }
            let place = copies_at(parent, born)
                .iter()
                .position(|&i| i == serial)
                .ok_or("not among its siblings")?;
            key.push(place as u8);
            born + 1
        }
        (Made::Expanded, Some(parent)) => {
            let p = &records[parent as usize];
            let (e, j) = (r.stamps[born], r.stamps[born] / EXPANDED);
            if born >= n
                || j == 0
                || e == UNSTAMPED
                || r.stamps[..born] != p.stamps[..born]
                || p.stamps[born] != e % EXPANDED
            {
                return Err(format!(
                    "an expansion's output stamped {:?}, its input {:?}",
                    r.stamps, p.stamps
                ));
            }
            key.extend_from_slice(&r.stamps[..=born]);
            born + 1
        }
        (_, None) => return Err("a copy without a parent".into()),
    };
    for s in from..n {
        let copies = copies_at(serial, s);
        if !copies.is_empty() {
            let k = case.width(s);
            if copies.len() != k - 1 {
                return Err(format!(
                    "{} copies at stage {s}, a broadcast of {k}",
                    copies.len()
                ));
            }
            key.push((k - 1) as u8);
        } else if r.stamps[s] != UNSTAMPED {
            key.push(r.stamps[s]);
        } else {
            break;
        }
    }
    // A unit whose kept copy panicked at its stage never reached the processor: its key ends
    // with the branch it was on.
    if let Some(p) = r.clone_panic.filter(|p| !p.fanout) {
        if key.len() == usize::from(p.stage) {
            key.push(p.branch);
        }
    }
    for s in 0..key.len() {
        if r.stamps[s] != UNSTAMPED && r.stamps[s] != key[s] {
            return Err(format!("stamped {:?}, derived {key:?}", r.stamps));
        }
        if usize::from(key[s] % EXPANDED) >= case.width(s) {
            return Err(format!("branch {} at stage {s}", key[s]));
        }
    }
    if usize::from(r.pos) > key.len() || r.stamps[key.len()..].iter().any(|&b| b != UNSTAMPED) {
        return Err(format!("key {key:?} shorter than the stages it passed"));
    }
    Ok(key)
}
