//! The test's items and the ledger: every value made in a run (an item read from the source,
//! a clone a broadcast made, a copy a routing stage kept), and how each one ended.

use std::cell::RefCell;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicU32;

use parking_lot::Mutex;
use pipework::Failure;

use super::{MAX_STAGES, UNSTAMPED};

/// How the test left a value when it was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fate {
    /// Not decided by the test: the crate dropped it.
    Live,
    Sunk,
    Filtered(u8),
    Panicked(u8),
    /// The processor returned an injected error; whether it saw the run cancelled first.
    Erred {
        stage: u8,
        after_cancel: bool,
    },
    /// A stall cut short by cancellation.
    StallCut(u8),
    /// A kept copy the failure handler received from this stage.
    Routed(u8),
    SinkFailed,
}

/// What the ledger knows about one value.
#[derive(Debug, Clone)]
pub(super) struct Record {
    /// The serial of the value it was cloned from.
    pub(super) parent: Option<u32>,
    /// The parent's position when it was cloned: the stage that cloned it.
    pub(super) born: u8,
    /// A copy a routing stage kept, not a unit.
    pub(super) keep: bool,
    pub(super) drops: u32,
    pub(super) fate: Fate,
    /// Stages passed, when dropped.
    pub(super) pos: u8,
    /// Branches stamped by the processors that saw it, when dropped.
    pub(super) stamps: [u8; MAX_STAGES],
}

/// A failure the handler received.
#[derive(Debug)]
pub(super) struct Routed {
    pub(super) stage: usize,
    pub(super) name: String,
    pub(super) error: String,
    pub(super) id: u32,
    pub(super) serial: u32,
}

/// Every value made in one run, per item id, and what became of it.
pub struct Ledger {
    pub(super) ids: Vec<Mutex<Vec<Record>>>,
    /// Broken expectations seen while the run went on.
    pub(super) notes: Mutex<Vec<String>>,
    pub(super) routed: Mutex<Vec<Routed>>,
    pub(super) source_fired: AtomicU32,
}

impl fmt::Debug for Ledger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ledger")
            .field("ids", &self.ids.len())
            .finish_non_exhaustive()
    }
}

thread_local! {
    /// Clones made on this thread and not claimed yet: (id, serial).
    static RECENT: RefCell<Vec<(u32, u32)>> = const { RefCell::new(Vec::new()) };
}

impl Ledger {
    pub fn new(items: u32) -> Arc<Self> {
        Arc::new(Ledger {
            ids: (0..items).map(|_| Mutex::new(Vec::new())).collect(),
            notes: Mutex::new(Vec::new()),
            routed: Mutex::new(Vec::new()),
            source_fired: AtomicU32::new(0),
        })
    }

    pub(super) fn note(&self, what: String) {
        self.notes.lock().push(what);
    }

    /// The failure handler of every run.
    pub(super) fn on_failure(&self, f: Failure<Item>) {
        let stage = f.stage().index();
        let name = f.stage().name().to_owned();
        let error = f.error().to_string();
        let mut item = f.into_item();
        item.fate = Fate::Routed(stage as u8);
        self.routed.lock().push(Routed {
            stage,
            name,
            error,
            id: item.id,
            serial: item.serial,
        });
    }
}

/// A test item: an id, a serial per copy, the stages passed and the branches taken.
pub struct Item {
    pub(super) id: u32,
    pub(super) serial: u32,
    pub(super) pos: u8,
    pub(super) stamps: [u8; MAX_STAGES],
    pub(super) fate: Fate,
    pub(super) ledger: Arc<Ledger>,
}

impl Item {
    /// A unit read from the source.
    pub(super) fn new(id: u32, ledger: &Arc<Ledger>) -> Self {
        let mut records = ledger.ids[id as usize].lock();
        if !records.is_empty() {
            drop(records);
            ledger.note(format!("item {id} made twice by the source"));
            records = ledger.ids[id as usize].lock();
        }
        let serial = records.len() as u32;
        records.push(Record {
            parent: None,
            born: 0,
            keep: false,
            drops: 0,
            fate: Fate::Live,
            pos: 0,
            stamps: [UNSTAMPED; MAX_STAGES],
        });
        drop(records);
        Item {
            id,
            serial,
            pos: 0,
            stamps: [UNSTAMPED; MAX_STAGES],
            fate: Fate::Live,
            ledger: Arc::clone(ledger),
        }
    }

    pub(super) fn name(&self) -> String {
        format!("item {} copy {}", self.id, self.serial)
    }

    /// Called first by every processor: claims the copies a routing stage kept of this
    /// item, checks that the item comes in order, and stamps the branch.
    pub(super) fn enter(&mut self, s: usize, b: u8) {
        let recent = RECENT.with(|r| std::mem::take(&mut *r.borrow_mut()));
        if !recent.is_empty() {
            let mut records = self.ledger.ids[self.id as usize].lock();
            for &(id, serial) in &recent {
                let r = (id == self.id).then(|| &mut records[serial as usize]);
                match r {
                    Some(r) if r.parent == Some(self.serial) && usize::from(r.born) == s => {
                        r.keep = true;
                    }
                    _ => {
                        let what = format!(
                            "stage {s} found a stray clone (item {id} copy {serial}) made \
                             before it processed {}",
                            self.name()
                        );
                        drop(records);
                        self.ledger.note(what);
                        records = self.ledger.ids[self.id as usize].lock();
                    }
                }
            }
            if recent.len() > 1 {
                drop(records);
                self.ledger
                    .note(format!("{} clones kept for one attempt", recent.len()));
            }
        }
        if usize::from(self.pos) != s {
            self.ledger.note(format!(
                "{} reached stage {s} after {} stages",
                self.name(),
                self.pos
            ));
        }
        self.stamps[s] = b;
    }
}

impl Clone for Item {
    fn clone(&self) -> Self {
        let mut records = self.ledger.ids[self.id as usize].lock();
        let serial = records.len() as u32;
        records.push(Record {
            parent: Some(self.serial),
            born: self.pos,
            keep: false,
            drops: 0,
            fate: Fate::Live,
            pos: self.pos,
            stamps: self.stamps,
        });
        drop(records);
        RECENT.with(|r| r.borrow_mut().push((self.id, serial)));
        Item {
            id: self.id,
            serial,
            pos: self.pos,
            stamps: self.stamps,
            fate: Fate::Live,
            ledger: Arc::clone(&self.ledger),
        }
    }
}

impl Drop for Item {
    fn drop(&mut self) {
        let mut records = self.ledger.ids[self.id as usize].lock();
        let r = &mut records[self.serial as usize];
        r.drops += 1;
        r.fate = self.fate;
        r.pos = self.pos;
        r.stamps = self.stamps;
    }
}

impl fmt::Debug for Item {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Item({} copy {} at {})", self.id, self.serial, self.pos)
    }
}
