//! Keys: the branch each unit took at each stage it passed, derived from its lineage (see
//! the module's documentation) and checked against the branches its processors stamped.

use super::UNSTAMPED;
use super::case::Case;
use super::ledger::Record;

/// The key of the unit `serial` of one item: the branch it took at each stage it passed.
pub(super) fn derive_key(
    case: &Case,
    records: &[Record],
    keys: &[Option<Vec<u8>>],
    serial: u32,
) -> Result<Vec<u8>, String> {
    let n = case.stages.len();
    let r = &records[serial as usize];
    // Broadcast clones of this value, per stage, in the order they were made.
    let clones_at = |s: usize| -> Vec<u32> {
        records
            .iter()
            .enumerate()
            .filter(|(_, c)| c.parent == Some(serial) && !c.keep && usize::from(c.born) == s)
            .map(|(i, _)| i as u32)
            .collect()
    };
    let mut key = Vec::with_capacity(n);
    let from = match r.parent {
        None => 0,
        Some(parent) => {
            let born = usize::from(r.born);
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
            let siblings = records
                .iter()
                .enumerate()
                .filter(|(_, c)| c.parent == Some(parent) && !c.keep && usize::from(c.born) == born)
                .position(|(i, _)| i as u32 == serial)
                .ok_or("not among its siblings")?;
            key.push(siblings as u8);
            born + 1
        }
    };
    for s in from..n {
        let clones = clones_at(s);
        if !clones.is_empty() {
            let k = case.width(s);
            if clones.len() != k - 1 {
                return Err(format!(
                    "{} clones at stage {s}, a broadcast of {k}",
                    clones.len()
                ));
            }
            key.push((k - 1) as u8);
        } else if r.stamps[s] != UNSTAMPED {
            key.push(r.stamps[s]);
        } else {
            break;
        }
    }
    for s in 0..key.len() {
        if r.stamps[s] != UNSTAMPED && r.stamps[s] != key[s] {
            return Err(format!("stamped {:?}, derived {key:?}", r.stamps));
        }
        if usize::from(key[s]) >= case.width(s) {
            return Err(format!("branch {} at stage {s}", key[s]));
        }
    }
    if usize::from(r.pos) > key.len() || r.stamps[key.len()..].iter().any(|&b| b != UNSTAMPED) {
        return Err(format!("key {key:?} shorter than the stages it passed"));
    }
    Ok(key)
}
