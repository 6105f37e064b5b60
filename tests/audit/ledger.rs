//! The test's items and the ledger: every value made in a run (an item read from the source,
//! a clone a broadcast made, a copy a stage kept, an output of an expansion), and how each
//! one ended. An item's `Clone` and `Drop` are fault sites too (see `case`).

use std::cell::{Cell, RefCell};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicU32;

use parking_lot::Mutex;
use pipework::Failure;

use super::case::{Case, EXPANDED};
use super::{MAX_STAGES, UNSTAMPED};

/// How the test left a value when it was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fate {
    /// Not decided by the test: the crate dropped it.
    Live,
    Sunk,
    Filtered(u8),
    /// The processor panicked holding it (a plain or an expansion's panic).
    Panicked(u8),
    /// The processor returned an injected error (a plain or an expansion's error).
    Erred(u8),
    /// A stall cut short by cancellation.
    StallCut(u8),
    /// A kept copy the failure handler received from this stage.
    Routed(u8),
    SinkFailed,
    /// Consumed by a successful expansion at this stage: its outputs go on instead.
    Split(u8),
}

/// How a value came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Made {
    /// Read from the source.
    Source,
    /// Cloned by the crate (a broadcast's copy, or a copy a stage keeps).
    Clone,
    /// Emitted by an expansion.
    Expanded,
}

/// The state of a value's drop bomb.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Bomb {
    None,
    /// Armed when dropped by our own code (which disarms it) — or still armed: never seen.
    Armed,
    /// Its `Drop` panicked.
    Fired,
    /// Dropped while its thread unwound: it stayed quiet (a panic there aborts the process).
    Defused,
}

/// A clone of this value panicked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ClonePanic {
    pub(super) stage: u8,
    /// The branch the clone was for (a broadcast's copy) or the unit's branch (a kept copy).
    pub(super) branch: u8,
    /// A broadcast's copy (its chunk never reached the branches), not a kept copy.
    pub(super) fanout: bool,
}

/// What the ledger knows about one value.
#[derive(Debug, Clone)]
pub(super) struct Record {
    /// The serial of the value it was cloned from or emitted for.
    pub(super) parent: Option<u32>,
    /// The stage that cloned or emitted it.
    pub(super) born: u8,
    pub(super) made: Made,
    /// A copy a stage kept, not a unit.
    pub(super) keep: bool,
    /// A broadcast's copy dropped when the distributor panicked cloning its chunk: never
    /// sent, never counted, not a unit.
    pub(super) aborted: bool,
    /// A clone of this value panicked.
    pub(super) clone_panic: Option<ClonePanic>,
    pub(super) bomb: Bomb,
    pub(super) drops: u32,
    pub(super) fate: Fate,
    /// Stages passed, when dropped.
    pub(super) pos: u8,
    /// Branches stamped by the processors that saw it, when dropped (with the expansion
    /// number, for outputs of an expansion: see `case::EXPANDED`).
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
    /// The run's case: its faults decide what the items' `Clone` does.
    pub(super) case: Case,
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
    /// A broadcast's clone panicked on this thread: the clones it drops while unwinding were
    /// never sent.
    static FANOUT_PANICKED: Cell<bool> = const { Cell::new(false) };
}

impl Ledger {
    pub fn new(case: &Case) -> Arc<Self> {
        Arc::new(Ledger {
            case: case.clone(),
            ids: (0..case.items).map(|_| Mutex::new(Vec::new())).collect(),
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
        item.bomb = false;
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
    /// The item's `Drop` panics (unless its thread is unwinding).
    pub(super) bomb: bool,
    pub(super) ledger: Arc<Ledger>,
}

/// Where the crate clones a value.
enum CloneSite {
    /// A broadcast's copy for branch `j`.
    Fanout(u8),
    /// The copy a stage keeps of the unit on branch `b`.
    Keep(u8),
}

impl Item {
    fn record(parent: Option<u32>, born: u8, made: Made, stamps: [u8; MAX_STAGES]) -> Record {
        Record {
            parent,
            born,
            made,
            keep: false,
            aborted: false,
            clone_panic: None,
            bomb: Bomb::None,
            drops: 0,
            fate: Fate::Live,
            pos: born,
            stamps,
        }
    }

    /// A unit read from the source.
    pub(super) fn new(id: u32, ledger: &Arc<Ledger>) -> Self {
        let mut records = ledger.ids[id as usize].lock();
        if !records.is_empty() {
            drop(records);
            ledger.note(format!("item {id} made twice by the source"));
            records = ledger.ids[id as usize].lock();
        }
        let serial = records.len() as u32;
        records.push(Item::record(None, 0, Made::Source, [UNSTAMPED; MAX_STAGES]));
        drop(records);
        Item {
            id,
            serial,
            pos: 0,
            stamps: [UNSTAMPED; MAX_STAGES],
            fate: Fate::Live,
            bomb: false,
            ledger: Arc::clone(ledger),
        }
    }

    /// Output `j` (from 1) of an expansion of this item at stage `s`, on branch `b`.
    pub(super) fn spawn(&self, s: usize, b: u8, j: u8) -> Item {
        let mut stamps = self.stamps;
        stamps[s] = b + EXPANDED * j;
        let mut records = self.ledger.ids[self.id as usize].lock();
        let serial = records.len() as u32;
        let mut record = Item::record(Some(self.serial), s as u8, Made::Expanded, stamps);
        record.pos = s as u8 + 1;
        records.push(record);
        drop(records);
        Item {
            id: self.id,
            serial,
            pos: s as u8 + 1,
            stamps,
            fate: Fate::Live,
            bomb: false,
            ledger: Arc::clone(&self.ledger),
        }
    }

    pub(super) fn name(&self) -> String {
        format!("item {} copy {}", self.id, self.serial)
    }

    /// Called first by every processor: claims the copies a stage kept of this item, checks
    /// that the item comes in order, and stamps the branch.
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

    /// Where the crate is cloning this value: a broadcast's distributor makes the copies for
    /// branches `0..k-1` of a value that has not entered stage `s` yet; a stage that keeps
    /// copies clones the unit a branch's worker is about to process.
    fn clone_site(&self, records: &[Record]) -> CloneSite {
        let s = usize::from(self.pos);
        let me = &records[self.serial as usize];
        let children = |parent: u32| {
            records.iter().enumerate().filter(move |(_, c)| {
                c.parent == Some(parent) && c.made == Made::Clone && usize::from(c.born) == s
            })
        };
        if me.made == Made::Clone && usize::from(me.born) == s {
            // A broadcast's copy, cloned by its branch's worker: its branch is its place
            // among the copies of its parent.
            let parent = me.parent.expect("a clone has a parent");
            let b = children(parent)
                .position(|(i, _)| i as u32 == self.serial)
                .expect("among its siblings");
            return CloneSite::Keep(b as u8);
        }
        let k = self
            .ledger
            .case
            .stages
            .get(s)
            .map_or(1, |spec| spec.runner.width());
        let so_far = children(self.serial).count();
        if k >= 2 && so_far < k - 1 {
            CloneSite::Fanout(so_far as u8)
        } else {
            CloneSite::Keep((k - 1) as u8)
        }
    }
}

impl Clone for Item {
    fn clone(&self) -> Self {
        let case = &self.ledger.case;
        let s = usize::from(self.pos);
        let mut records = self.ledger.ids[self.id as usize].lock();
        let site = clone_site_checked(self, &records);
        let mut key = self.stamps;
        let (panics, bomb) = match site {
            Some(CloneSite::Fanout(j)) => (case.fanout_clone_panics(s, self.id, &key, j), false),
            Some(CloneSite::Keep(b)) => {
                key[s] = b;
                (
                    case.keep_clone_panics(s, self.id, &key),
                    case.keep_bomb(s, self.id, &key),
                )
            }
            None => (false, false),
        };
        if panics {
            let (branch, fanout) = match site {
                Some(CloneSite::Fanout(j)) => (j, true),
                Some(CloneSite::Keep(b)) => (b, false),
                None => unreachable!(),
            };
            records[self.serial as usize].clone_panic = Some(ClonePanic {
                stage: s as u8,
                branch,
                fanout,
            });
            drop(records);
            if fanout {
                FANOUT_PANICKED.with(|f| f.set(true));
            }
            panic!("injected clone panic at stage {s} on {}", self.name());
        }
        let serial = records.len() as u32;
        let mut record = Item::record(Some(self.serial), self.pos, Made::Clone, self.stamps);
        if bomb {
            record.bomb = Bomb::Armed;
        }
        records.push(record);
        drop(records);
        RECENT.with(|r| r.borrow_mut().push((self.id, serial)));
        Item {
            id: self.id,
            serial,
            pos: self.pos,
            stamps: self.stamps,
            fate: Fate::Live,
            bomb,
            ledger: Arc::clone(&self.ledger),
        }
    }
}

/// The clone site, or `None` (with a note) when the crate clones a value past the last stage.
fn clone_site_checked(item: &Item, records: &[Record]) -> Option<CloneSite> {
    if usize::from(item.pos) >= item.ledger.case.stages.len() {
        item.ledger
            .note(format!("{} cloned past the last stage", item.name()));
        return None;
    }
    Some(item.clone_site(records))
}

impl Drop for Item {
    fn drop(&mut self) {
        let unwinding = std::thread::panicking();
        let fire = self.bomb && !unwinding;
        let mut records = self.ledger.ids[self.id as usize].lock();
        let r = &mut records[self.serial as usize];
        r.drops += 1;
        r.fate = self.fate;
        r.pos = self.pos;
        r.stamps = self.stamps;
        if self.bomb {
            r.bomb = if fire { Bomb::Fired } else { Bomb::Defused };
        }
        if unwinding
            && r.made == Made::Clone
            && r.born == self.pos
            && FANOUT_PANICKED.with(Cell::get)
        {
            r.aborted = true;
        }
        drop(records);
        if fire {
            panic!("injected drop panic on {}", self.name());
        }
    }
}

impl fmt::Debug for Item {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Item({} copy {} at {})", self.id, self.serial, self.pos)
    }
}
