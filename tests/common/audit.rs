//! The fault suites' model: a pipeline described as data ([`Case`]), faults injected by item
//! index ([`Fault`]), items that record in a [`Ledger`] every copy made of them and how each
//! copy ended, and [`run_case`], which runs a case under a patrol and audits the ledger
//! against the crate's report, the returned error, and what the case's faults predict.
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

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use pipework::{
    BoxError, Broadcast, Context, Dynamic, Error, ErrorKind, Failure, Fifo, Fixed, Ordered,
    Pipeline, Report, Site as PanicSite, Source, StageOptions, StageRunner, filter_map, source,
};

/// The most stages a case may have.
pub const MAX_STAGES: usize = 5;
/// A run must return within this.
pub const RUN_LIMIT: Duration = Duration::from_secs(5);
/// A stamp not written yet.
const UNSTAMPED: u8 = u8::MAX;

// ---------------------------------------------------------------------------------------
// Cases
// ---------------------------------------------------------------------------------------

/// How a stage (or a broadcast branch) runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Runner {
    Fifo,
    Fixed(usize),
    Dynamic(usize),
    /// Workers and window.
    Ordered(usize, usize),
    /// Branches, none of them a broadcast.
    Broadcast(Vec<Runner>),
}

impl Runner {
    /// The number of branches (1 for anything but a broadcast).
    pub fn width(&self) -> usize {
        match self {
            Runner::Broadcast(branches) => branches.len(),
            _ => 1,
        }
    }
}

/// One stage of a case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageSpec {
    pub runner: Runner,
    /// Failures go to the failure handler instead of failing the run.
    pub routes: bool,
    /// The stage's own input capacity.
    pub capacity: Option<usize>,
}

impl StageSpec {
    pub fn new(runner: Runner) -> Self {
        StageSpec {
            runner,
            routes: false,
            capacity: None,
        }
    }
}

/// Where a fault strikes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Site {
    Source,
    Stage(usize),
    Sink,
}

/// What a fault does. At a stage, `Error` is routed when the stage routes failures and fatal
/// otherwise; at the source and the sink it is a source or sink error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Panic,
    Error,
    Filter,
    Stall,
}

/// One injected fault: it strikes the unit of item `item` whose branches so far are `path`
/// (one entry per stage; 0 at stages that are not broadcasts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    pub site: Site,
    pub kind: Kind,
    pub item: u32,
    pub path: [u8; MAX_STAGES],
}

/// A pipeline, its input and its faults, as data: a failing case prints itself for replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Case {
    pub stages: Vec<StageSpec>,
    /// `Pipeline::capacity`, or the default.
    pub capacity: Option<usize>,
    /// `Pipeline::max_chunk`, or the default.
    pub max_chunk: Option<usize>,
    pub items: u32,
    pub faults: Vec<Fault>,
    /// How long a `Stall` fault waits.
    pub stall: Duration,
}

/// How a unit ended, as the test sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Outcome {
    Sunk,
    Filtered(usize),
    /// Failed at a stage that fails fast (error or panic), or panicked at any stage.
    Failed(usize),
    /// Failed at a routing stage and handed to the failure handler.
    Routed(usize),
    SinkFailed,
    Cancelled,
}

impl Case {
    fn width(&self, s: usize) -> usize {
        self.stages[s].runner.width()
    }

    /// The fault striking the source at item `i`.
    fn strike_source(&self, i: u32) -> Option<Kind> {
        self.faults
            .iter()
            .find(|f| f.site == Site::Source && f.item == i)
            .map(|f| f.kind)
    }

    /// The fault striking stage `s` for the unit of item `id` whose branches up to and
    /// including stage `s` are `key[..=s]`.
    fn strike_stage(&self, s: usize, id: u32, key: &[u8]) -> Option<Kind> {
        self.faults
            .iter()
            .find(|f| f.site == Site::Stage(s) && f.item == id && f.path[..=s] == key[..=s])
            .map(|f| f.kind)
    }

    /// The fault striking the sink for the unit of item `id` with key `key` (all stages).
    fn strike_sink(&self, id: u32, key: &[u8]) -> Option<Kind> {
        let n = self.stages.len();
        self.faults
            .iter()
            .find(|f| f.site == Site::Sink && f.item == id && f.path[..n] == key[..n])
            .map(|f| f.kind)
    }

    /// Items the source yields: up to the first item where the source panics or fails (the
    /// first fault at an item is the one that strikes).
    fn source_cut(&self) -> u32 {
        self.faults
            .iter()
            .filter(|f| f.site == Site::Source && f.item < self.items)
            .map(|f| f.item)
            .filter(|&i| matches!(self.strike_source(i), Some(Kind::Panic | Kind::Error)))
            .min()
            .unwrap_or(self.items)
    }

    /// Whether the first fault at this point ends the unit there, and how.
    fn ends_at(&self, s: usize, id: u32, key: &[u8]) -> Option<Outcome> {
        match self.strike_stage(s, id, key)? {
            Kind::Filter => Some(Outcome::Filtered(s)),
            Kind::Error if self.stages[s].routes => Some(Outcome::Routed(s)),
            Kind::Error | Kind::Panic => Some(Outcome::Failed(s)),
            Kind::Stall => None,
        }
    }

    /// Every unit of a run that nothing aborts, with its key and outcome, sorted.
    pub fn model(&self) -> Vec<(u32, Vec<u8>, Outcome)> {
        let mut leaves = Vec::new();
        let mut key = Vec::with_capacity(MAX_STAGES);
        for id in 0..self.source_cut() {
            self.expand(id, 0, &mut key, &mut leaves);
        }
        leaves.sort();
        leaves
    }

    fn expand(&self, id: u32, s: usize, key: &mut Vec<u8>, out: &mut Vec<(u32, Vec<u8>, Outcome)>) {
        if s == self.stages.len() {
            let outcome = match self.strike_sink(id, key) {
                Some(Kind::Panic | Kind::Error) => Outcome::SinkFailed,
                _ => Outcome::Sunk,
            };
            out.push((id, key.clone(), outcome));
            return;
        }
        for b in 0..self.width(s) {
            key.push(b as u8);
            match self.ends_at(s, id, key) {
                Some(outcome) => out.push((id, key.clone(), outcome)),
                None => self.expand(id, s + 1, key, out),
            }
            key.pop();
        }
    }

    /// Whether the case's faults must abort the run: some unit meets a panic or a fatal
    /// error, or the source fails.
    pub fn must_abort(&self) -> bool {
        self.source_cut() < self.items
            || self
                .model()
                .iter()
                .any(|(_, _, o)| matches!(o, Outcome::Failed(_) | Outcome::SinkFailed))
    }

    /// Checks an outcome seen in an aborted run against the faults: the unit's key must be a
    /// path the unit could take, and a final outcome must be the one the faults give.
    fn plausible(&self, id: u32, key: &[u8], outcome: Outcome) -> Result<(), String> {
        let n = self.stages.len();
        if id >= self.source_cut() {
            return Err(format!(
                "item {id} exists, but the source stops at {}",
                self.source_cut()
            ));
        }
        if key.len() > n {
            return Err(format!("key {key:?} is longer than the pipeline"));
        }
        for (s, &b) in key.iter().enumerate() {
            if usize::from(b) >= self.width(s) {
                return Err(format!(
                    "branch {b} at stage {s}, which has {}",
                    self.width(s)
                ));
            }
            if let Some(end) = self.ends_at(s, id, key) {
                if s + 1 < key.len() {
                    return Err(format!("went on after {end:?} at stage {s}"));
                }
            }
        }
        let last = key.len().checked_sub(1);
        let ended = last.and_then(|s| self.ends_at(s, id, key));
        let ok = match outcome {
            Outcome::Cancelled => true,
            Outcome::Sunk => {
                key.len() == n
                    && ended.is_none()
                    && !matches!(self.strike_sink(id, key), Some(Kind::Panic | Kind::Error))
            }
            Outcome::SinkFailed => {
                key.len() == n
                    && ended.is_none()
                    && matches!(self.strike_sink(id, key), Some(Kind::Panic | Kind::Error))
            }
            Outcome::Filtered(_) | Outcome::Failed(_) | Outcome::Routed(_) => {
                ended == Some(outcome)
            }
        };
        if ok {
            Ok(())
        } else {
            Err(format!("outcome {outcome:?} is not what the faults give"))
        }
    }

    /// The test's processor for stage `s`, branch `b`.
    fn step(&self, s: usize, b: u8, mut item: Item, cx: &Context<'_>) -> StepResult {
        item.enter(s, b);
        let key = item.stamps;
        match self.strike_stage(s, item.id, &key) {
            None => {}
            Some(Kind::Panic) => {
                item.fate = Fate::Panicked(s as u8);
                panic!("injected panic at stage {s} on {}", item.name());
            }
            Some(Kind::Error) => {
                item.fate = Fate::Erred {
                    stage: s as u8,
                    after_cancel: cx.is_cancelled(),
                };
                return Err(format!("injected error at stage {s} on {}", item.name()).into());
            }
            Some(Kind::Filter) => {
                item.fate = Fate::Filtered(s as u8);
                return Ok(None);
            }
            Some(Kind::Stall) => {
                if let Err(cancelled) = cx.sleep(self.stall) {
                    item.fate = Fate::StallCut(s as u8);
                    return Err(cancelled.into());
                }
            }
        }
        item.pos = s as u8 + 1;
        Ok(Some(item))
    }

    /// The test's sink.
    fn sink(&self, mut item: Item) -> Result<(), BoxError> {
        let n = self.stages.len();
        if usize::from(item.pos) != n {
            item.ledger.note(format!(
                "{} reached the sink at position {}",
                item.name(),
                item.pos
            ));
        }
        match self.strike_sink(item.id, &item.stamps) {
            None => {}
            Some(Kind::Panic) => {
                item.fate = Fate::SinkFailed;
                panic!("injected sink panic on {}", item.name());
            }
            Some(Kind::Error) => {
                item.fate = Fate::SinkFailed;
                return Err(format!("injected sink error on {}", item.name()).into());
            }
            Some(Kind::Filter) => {}
            Some(Kind::Stall) => std::thread::sleep(self.stall),
        }
        item.fate = Fate::Sunk;
        Ok(())
    }

    /// The pipeline the case describes.
    pub fn pipeline(&self) -> Pipeline<'_, Item, Item> {
        let mut p = Pipeline::new();
        if let Some(c) = self.capacity {
            p = p.capacity(c);
        }
        if let Some(m) = self.max_chunk {
            p = p.max_chunk(m);
        }
        for (s, spec) in self.stages.iter().enumerate() {
            let mut options = StageOptions::new();
            if spec.routes {
                options = options.route_failures();
            }
            if let Some(c) = spec.capacity {
                options = options.capacity(c);
            }
            p = p.stage_with(format!("s{s}"), self.runner(&spec.runner, s, 0), options);
        }
        p
    }

    fn runner<'c>(
        &'c self,
        spec: &Runner,
        s: usize,
        b: u8,
    ) -> Box<dyn StageRunner<Item, Item> + 'c> {
        let step = filter_map(move |item: Item, cx: &Context<'_>| self.step(s, b, item, cx));
        match spec {
            Runner::Fifo => Box::new(Fifo::new(step)),
            Runner::Fixed(n) => Box::new(Fixed::new(*n, step)),
            Runner::Dynamic(n) => Box::new(Dynamic::new(*n, step)),
            Runner::Ordered(n, w) => Box::new(Ordered::new(*n, step).window(*w)),
            Runner::Broadcast(branches) => {
                let mut fan = Broadcast::new();
                for (i, branch) in branches.iter().enumerate() {
                    assert!(!matches!(branch, Runner::Broadcast(_)), "nested broadcast");
                    fan = fan.branch(self.runner(branch, s, i as u8));
                }
                Box::new(fan)
            }
        }
    }
}

type StepResult = Result<Option<Item>, BoxError>;

/// The test's source: yields fresh items, failing or stalling where the faults say.
struct Feed<'c> {
    case: &'c Case,
    ledger: Arc<Ledger>,
    next: u32,
}

impl Source<Item> for Feed<'_> {
    fn next(&mut self, _: &pipework::CancelToken) -> Option<Result<Item, BoxError>> {
        if self.next >= self.case.items {
            return None;
        }
        let i = self.next;
        self.next += 1;
        match self.case.strike_source(i) {
            Some(Kind::Panic) => {
                self.ledger.source_fired.fetch_add(1, Ordering::SeqCst);
                panic!("injected source panic at item {i}");
            }
            Some(Kind::Error) => {
                self.ledger.source_fired.fetch_add(1, Ordering::SeqCst);
                return Some(Err(format!("injected source error at item {i}").into()));
            }
            Some(Kind::Stall) => std::thread::sleep(self.case.stall),
            Some(Kind::Filter) | None => {}
        }
        Some(Ok(Item::new(i, &self.ledger)))
    }
}

// ---------------------------------------------------------------------------------------
// Items and the ledger
// ---------------------------------------------------------------------------------------

/// How the test left a value when it was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
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
struct Record {
    /// The serial of the value it was cloned from.
    parent: Option<u32>,
    /// The parent's position when it was cloned: the stage that cloned it.
    born: u8,
    /// A copy a routing stage kept, not a unit.
    keep: bool,
    drops: u32,
    fate: Fate,
    /// Stages passed, when dropped.
    pos: u8,
    /// Branches stamped by the processors that saw it, when dropped.
    stamps: [u8; MAX_STAGES],
}

/// A failure the handler received.
#[derive(Debug)]
struct Routed {
    stage: usize,
    name: String,
    error: String,
    id: u32,
    serial: u32,
}

/// Every value made in one run, per item id, and what became of it.
pub struct Ledger {
    ids: Vec<Mutex<Vec<Record>>>,
    /// Broken expectations seen while the run went on.
    notes: Mutex<Vec<String>>,
    routed: Mutex<Vec<Routed>>,
    source_fired: AtomicU32,
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

    fn note(&self, what: String) {
        self.notes.lock().push(what);
    }

    /// The failure handler of every run.
    fn on_failure(&self, f: Failure) {
        let stage = f.stage().index();
        let name = f.stage().name().to_owned();
        let error = f.error().to_string();
        match f.into_item::<Item>() {
            Ok(mut item) => {
                item.fate = Fate::Routed(stage as u8);
                self.routed.lock().push(Routed {
                    stage,
                    name,
                    error,
                    id: item.id,
                    serial: item.serial,
                });
            }
            Err(f) => self.note(format!("a routed failure without an Item: {f:?}")),
        }
    }
}

/// A test item: an id, a serial per copy, the stages passed and the branches taken.
pub struct Item {
    id: u32,
    serial: u32,
    pos: u8,
    stamps: [u8; MAX_STAGES],
    fate: Fate,
    ledger: Arc<Ledger>,
}

impl Item {
    /// A unit read from the source.
    fn new(id: u32, ledger: &Arc<Ledger>) -> Self {
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

    fn name(&self) -> String {
        format!("item {} copy {}", self.id, self.serial)
    }

    /// Called first by every processor: claims the copies a routing stage kept of this
    /// item, checks that the item comes in order, and stamps the branch.
    fn enter(&mut self, s: usize, b: u8) {
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

// ---------------------------------------------------------------------------------------
// Running and auditing
// ---------------------------------------------------------------------------------------

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

/// Runs `case` once, under a patrol of [`RUN_LIMIT`], and audits it. Panics, naming the case,
/// on anything wrong. Returns the run's result with the audit.
pub fn run_case(case: &Case) -> (Result<Report, Error>, Audit) {
    assert!(case.stages.len() <= MAX_STAGES);
    let ledger = Ledger::new(case.items);
    let pipeline = case.pipeline();
    let feed = Feed {
        case,
        ledger: Arc::clone(&ledger),
        next: 0,
    };
    let started = Instant::now();
    let result = {
        let _armed = super::patrol().arm(format!("{case:?}"), RUN_LIMIT);
        pipeline
            .job()
            .on_failure(|f| ledger.on_failure(f))
            .run(source::custom(feed), |item: Item| case.sink(item))
    };
    let elapsed = started.elapsed();
    drop(pipeline);
    let audit = match audit(case, &ledger, &result) {
        Ok(mut audit) => {
            audit.elapsed = elapsed;
            audit
        }
        Err(problem) => panic!(
            "{problem}\n  case: {case:?}\n  result: {}\n  report: {:?}",
            match &result {
                Ok(_) => "Ok".to_owned(),
                Err(e) => format!("Err({e}) = {:?}", e.kind()),
            },
            result.as_ref().map_or_else(|e| e.report(), Some)
        ),
    };
    assert!(elapsed < RUN_LIMIT, "run took {elapsed:?}: {case:?}");
    (result, audit)
}

/// A unit's outcome and key.
struct Unit {
    id: u32,
    serial: u32,
    key: Vec<u8>,
    outcome: Outcome,
}

/// Checks everything the ledger knows against the report, the error and the faults.
fn audit(case: &Case, ledger: &Ledger, result: &Result<Report, Error>) -> Result<Audit, String> {
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

/// What the returned error names.
enum First {
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
fn first_error(
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

/// The key of the unit `serial` of one item: the branch it took at each stage it passed.
fn derive_key(
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
