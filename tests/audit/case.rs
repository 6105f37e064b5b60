//! The case: a pipeline, its input and its faults, as data; and the model of what the faults
//! must do to the units of a run.
//!
//! # Fault sites
//!
//! Faults strike every place where user code runs during a run:
//!
//! - the source (`Panic`, `Error`, `Stall` at an item) and its `Drop`;
//! - a stage's processor, per unit (`Panic`, `Error`, `Filter`, `Stall`), including a
//!   one-to-many processor that emits outputs and then succeeds, fails or panics
//!   mid-iteration (`Expand`, `ExpandError`, `ExpandPanic`);
//! - an item's `Clone` where the engine clones (a broadcast's distributor, and the copy a
//!   stage keeps while it processes an input when it routes failures or retries):
//!   `ClonePanic`;
//! - an item's `Drop` where the engine drops it on a path that is not unwinding: the kept
//!   copy of a stage that keeps one (dropped by the engine after the processor succeeds, or
//!   failed fast), and an output left over in a queue when another fault cancelled the run:
//!   `DropPanic` (the item's `Drop` stays quiet while its thread unwinds: a panic there
//!   aborts the process, which is out of scope);
//! - a stage's init closure (`InitPanic`, `InitError`: every worker of the stage) and its
//!   runner's `start` (`StartPanic` before it delegates to the real runner,
//!   `StartPanicAfter` after);
//! - the sink (`Panic`, `Error`, `Stall` at a unit) and its `Drop`, and the progress
//!   callback's `Drop` ([`UserDrops`]). (A failure handler belongs to the definition, not to
//!   a run: it is dropped with the pipeline, outside any run.)
//!
//! And the settings take extreme values: capacities and chunks of 1 and `usize::MAX` chunks,
//! stage names of 10 KB or with a NUL byte, dynamic pools that retire at once or never,
//! progress every `Duration::ZERO`, time limits of `Duration::ZERO` and `Duration::MAX`.

use std::time::Duration;

use super::MAX_STAGES;

/// Outputs of a successful expansion (`Kind::Expand`).
pub const EXPAND: u8 = 3;
/// Outputs an expansion emits before it fails or panics.
pub const EXPAND_BEFORE_FAIL: u8 = 2;
/// A key element is `branch + EXPANDED * j`, where `j` numbers the outputs of an expansion
/// from 1 (0: the unit itself went on).
pub const EXPANDED: u8 = 16;

/// How a stage (or a broadcast branch) runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Runner {
    Fifo,
    /// A `Fifo` stage of `try_map` (the crate's chunk loop): one output or an error.
    FifoTryMap,
    /// A `Fifo` stage of `filter_map` (the crate's chunk loop): one output or none.
    FifoFilterMap,
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

    /// The faults of the processor's call this runner's processor can carry out: a
    /// closure of `try_map` or `filter_map` has no emitter (no expansion), no context (its
    /// stall is a plain sleep), and only one of error and filtering.
    pub fn processor_kinds(&self) -> &'static [Kind] {
        match self {
            Runner::FifoTryMap => &[Kind::Panic, Kind::Error, Kind::Stall],
            Runner::FifoFilterMap => &[Kind::Panic, Kind::Filter, Kind::Stall],
            _ => &[
                Kind::Panic,
                Kind::Error,
                Kind::Filter,
                Kind::Stall,
                Kind::Expand,
                Kind::ExpandError,
                Kind::ExpandPanic,
            ],
        }
    }
}

/// A stage's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Name {
    /// `s{index}`.
    Plain,
    /// `s{index}` and 10 KB more.
    Huge,
    /// `s{index}`, a NUL byte and more.
    Nul,
}

/// One stage of a case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageSpec {
    pub runner: Runner,
    /// Failures go to the failure handler instead of failing the run.
    pub routes: bool,
    /// The stage retries (`Retry::new(2)` with a zero backoff): it keeps a copy of each input
    /// like a routing stage. The audit's errors are not `Transient`, so nothing is retried.
    pub retry: bool,
    /// The stage's own input capacity.
    pub capacity: Option<usize>,
    pub name: Name,
    /// A dynamic pool's idle timeout (`None`: the default).
    pub idle: Option<Duration>,
}

impl StageSpec {
    pub fn new(runner: Runner) -> Self {
        StageSpec {
            runner,
            routes: false,
            retry: false,
            capacity: None,
            name: Name::Plain,
            idle: None,
        }
    }

    /// Whether the stage keeps a copy of each input while it is processed.
    pub fn keeps(&self) -> bool {
        self.routes || self.retry
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
/// otherwise; at the source and the sink it is a source or sink error. See the module's
/// documentation for the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Panic,
    Error,
    Filter,
    Stall,
    Expand,
    ExpandError,
    ExpandPanic,
    ClonePanic,
    DropPanic,
    InitPanic,
    InitError,
    StartPanic,
    StartPanicAfter,
}

impl Kind {
    /// A fault of the processor's call on a unit.
    pub fn is_processor(self) -> bool {
        matches!(
            self,
            Kind::Panic
                | Kind::Error
                | Kind::Filter
                | Kind::Stall
                | Kind::Expand
                | Kind::ExpandError
                | Kind::ExpandPanic
        )
    }

    /// A fault of the init closure.
    pub fn is_init(self) -> bool {
        matches!(self, Kind::InitPanic | Kind::InitError)
    }

    /// A fault of the runner's `start`.
    pub fn is_start(self) -> bool {
        matches!(self, Kind::StartPanic | Kind::StartPanicAfter)
    }
}

/// One injected fault: it strikes the unit of item `item` whose branches so far are `path`
/// (one entry per stage; 0 at stages that are not broadcasts). Init and start faults strike
/// the stage as a whole (`item` and `path` are ignored).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    pub site: Site,
    pub kind: Kind,
    pub item: u32,
    pub path: [u8; MAX_STAGES],
}

/// User values whose `Drop` panics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UserDrops {
    pub source: bool,
    pub sink: bool,
    pub progress: bool,
}

impl UserDrops {
    pub fn any(self) -> bool {
        self.source || self.sink || self.progress
    }

    /// How many panic (each exactly once per run).
    pub fn count(self) -> u64 {
        [self.source, self.sink, self.progress]
            .iter()
            .filter(|&&b| b)
            .count() as u64
    }
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
    /// User values whose `Drop` panics.
    pub drops: UserDrops,
    /// `Job::on_progress(every, …)`, if any.
    pub progress: Option<Duration>,
    /// `Job::timeout`, if any.
    pub timeout: Option<Duration>,
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

/// What happens to a unit at a stage when nothing aborts the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct At {
    /// The unit ends here.
    pub(super) end: Option<Outcome>,
    /// The unit itself goes on to the next stage.
    pub(super) continues: bool,
    /// Outputs of an expansion, numbered from 1, that go on as units of their own.
    pub(super) outputs: u8,
    /// Something here must abort the run.
    pub(super) aborts: bool,
}

impl Case {
    /// A case of `items` items through `stages`, without faults, with default settings.
    pub fn new(stages: Vec<StageSpec>, items: u32) -> Self {
        Case {
            stages,
            capacity: None,
            max_chunk: None,
            items,
            faults: Vec::new(),
            stall: Duration::from_millis(1),
            drops: UserDrops::default(),
            progress: None,
            timeout: None,
        }
    }

    pub(super) fn width(&self, s: usize) -> usize {
        self.stages[s].runner.width()
    }

    /// The name of stage `s`.
    pub fn stage_name(&self, s: usize) -> String {
        match self.stages[s].name {
            Name::Plain => format!("s{s}"),
            Name::Huge => format!("s{s}{}", "x".repeat(10 * 1024)),
            Name::Nul => format!("s{s}\0nul"),
        }
    }

    /// The fault striking the source at item `i`.
    pub(super) fn strike_source(&self, i: u32) -> Option<Kind> {
        self.faults
            .iter()
            .find(|f| f.site == Site::Source && f.item == i)
            .map(|f| f.kind)
    }

    /// Whether a fault of `kind` strikes stage `s` for the unit of item `id` whose key up to
    /// and including stage `s` is `key[..=s]`.
    fn has(&self, kind: Kind, s: usize, id: u32, key: &[u8]) -> bool {
        self.faults.iter().any(|f| {
            f.kind == kind && f.site == Site::Stage(s) && f.item == id && f.path[..=s] == key[..=s]
        })
    }

    /// The processor fault striking stage `s` for the unit of item `id` whose key up to and
    /// including stage `s` is `key[..=s]`.
    pub(super) fn strike_stage(&self, s: usize, id: u32, key: &[u8]) -> Option<Kind> {
        self.faults
            .iter()
            .find(|f| {
                f.kind.is_processor()
                    && f.site == Site::Stage(s)
                    && f.item == id
                    && f.path[..=s] == key[..=s]
            })
            .map(|f| f.kind)
    }

    /// Whether the broadcast of stage `s` panics making clone `j` (for branch `j`) of the
    /// unit of item `id` with key `prefix` (its key before stage `s`).
    pub(super) fn fanout_clone_panics(&self, s: usize, id: u32, prefix: &[u8], j: u8) -> bool {
        let k = self.width(s);
        k >= 2
            && usize::from(j) < k - 1
            && self.faults.iter().any(|f| {
                f.kind == Kind::ClonePanic
                    && f.site == Site::Stage(s)
                    && f.item == id
                    && f.path[..s] == prefix[..s]
                    && f.path[s] == j
            })
    }

    /// Whether stage `s` panics keeping a copy of the unit of item `id` with key `key[..=s]`
    /// (on a broadcast, only the last branch's unit is the original whose keep may be struck;
    /// the other branches' faults strike the broadcast's clones).
    pub(super) fn keep_clone_panics(&self, s: usize, id: u32, key: &[u8]) -> bool {
        let k = self.width(s);
        self.stages[s].keeps()
            && (k == 1 || usize::from(key[s]) == k - 1)
            && self.has(Kind::ClonePanic, s, id, key)
    }

    /// Whether the copy stage `s` keeps of the unit is armed to panic when dropped.
    pub(super) fn keep_bomb(&self, s: usize, id: u32, key: &[u8]) -> bool {
        self.stages[s].keeps() && self.has(Kind::DropPanic, s, id, key)
    }

    /// Whether the output of stage `s` for the unit is armed to panic when the engine drops
    /// it (only when left over: the sink and the processors disarm it).
    pub(super) fn output_bomb(&self, s: usize, id: u32, key: &[u8]) -> bool {
        !self.stages[s].keeps() && self.has(Kind::DropPanic, s, id, key)
    }

    /// The init fault of stage `s`, if any.
    pub fn init_fault(&self, s: usize) -> Option<Kind> {
        self.faults
            .iter()
            .find(|f| f.site == Site::Stage(s) && f.kind.is_init())
            .map(|f| f.kind)
    }

    /// The start fault of stage `s`, if any.
    pub fn start_fault(&self, s: usize) -> Option<Kind> {
        self.faults
            .iter()
            .find(|f| f.site == Site::Stage(s) && f.kind.is_start())
            .map(|f| f.kind)
    }

    /// The fault striking the sink for the unit of item `id` with key `key` (all stages).
    pub(super) fn strike_sink(&self, id: u32, key: &[u8]) -> Option<Kind> {
        let n = self.stages.len();
        self.faults
            .iter()
            .find(|f| f.site == Site::Sink && f.item == id && f.path[..n] == key[..n])
            .map(|f| f.kind)
    }

    /// Items the source yields: up to the first item where the source panics or fails (the
    /// first fault at an item is the one that strikes).
    pub(super) fn source_cut(&self) -> u32 {
        self.faults
            .iter()
            .filter(|f| f.site == Site::Source && f.item < self.items)
            .map(|f| f.item)
            .filter(|&i| matches!(self.strike_source(i), Some(Kind::Panic | Kind::Error)))
            .min()
            .unwrap_or(self.items)
    }

    /// What happens at stage `s` to the unit of item `id` with key `key[..=s]` (the last
    /// element its branch, without an expansion number), when nothing aborts the run.
    pub(super) fn at(&self, s: usize, id: u32, key: &[u8]) -> At {
        let go_on = At {
            end: None,
            continues: true,
            outputs: 0,
            aborts: false,
        };
        if self.keep_clone_panics(s, id, key) {
            return At {
                end: Some(Outcome::Failed(s)),
                continues: false,
                aborts: true,
                ..go_on
            };
        }
        let routes = self.stages[s].routes;
        let failed = |routes: bool| {
            if routes {
                Outcome::Routed(s)
            } else {
                Outcome::Failed(s)
            }
        };
        let mut at = match self.strike_stage(s, id, key) {
            None | Some(Kind::Stall) => go_on,
            Some(Kind::Filter) => At {
                end: Some(Outcome::Filtered(s)),
                continues: false,
                ..go_on
            },
            Some(Kind::Error) => At {
                end: Some(failed(routes)),
                continues: false,
                aborts: !routes,
                ..go_on
            },
            Some(Kind::Panic) => At {
                end: Some(Outcome::Failed(s)),
                continues: false,
                aborts: true,
                ..go_on
            },
            Some(Kind::Expand) => At {
                continues: false,
                outputs: EXPAND,
                ..go_on
            },
            Some(Kind::ExpandError) => At {
                end: Some(failed(routes)),
                continues: false,
                outputs: EXPAND_BEFORE_FAIL,
                aborts: !routes,
            },
            Some(Kind::ExpandPanic) => At {
                end: Some(Outcome::Failed(s)),
                continues: false,
                outputs: EXPAND_BEFORE_FAIL,
                aborts: true,
            },
            Some(other) => unreachable!("{other:?} is not a processor fault"),
        };
        // An armed kept copy panics when the engine drops it: whenever the handler does not
        // get it.
        if self.keep_bomb(s, id, key) && at.end != Some(Outcome::Routed(s)) {
            at.aborts = true;
        }
        at
    }

    /// Every unit of a run that nothing aborts, with its key and outcome, sorted; and whether
    /// the faults must abort the run after all.
    fn leaves(&self) -> (Vec<(u32, Vec<u8>, Outcome)>, bool) {
        let mut leaves = Vec::new();
        let mut aborts = false;
        let mut key = Vec::with_capacity(MAX_STAGES);
        for id in 0..self.source_cut() {
            self.expand(id, 0, &mut key, &mut leaves, &mut aborts);
        }
        leaves.sort();
        (leaves, aborts)
    }

    /// Every unit of a run that nothing aborts, with its key and outcome, sorted.
    pub fn model(&self) -> Vec<(u32, Vec<u8>, Outcome)> {
        self.leaves().0
    }

    fn expand(
        &self,
        id: u32,
        s: usize,
        key: &mut Vec<u8>,
        out: &mut Vec<(u32, Vec<u8>, Outcome)>,
        aborts: &mut bool,
    ) {
        if s == self.stages.len() {
            let outcome = match self.strike_sink(id, key) {
                Some(Kind::Panic | Kind::Error) => {
                    *aborts = true;
                    Outcome::SinkFailed
                }
                _ => Outcome::Sunk,
            };
            out.push((id, key.clone(), outcome));
            return;
        }
        let k = self.width(s);
        if (0..k.saturating_sub(1)).any(|j| self.fanout_clone_panics(s, id, key, j as u8)) {
            // The broadcast's distributor panics: the unit never reaches the branches.
            *aborts = true;
            out.push((id, key.clone(), Outcome::Cancelled));
            return;
        }
        for b in 0..k as u8 {
            key.push(b);
            let at = self.at(s, id, key);
            *aborts |= at.aborts;
            if let Some(end) = at.end {
                out.push((id, key.clone(), end));
            }
            if at.continues {
                self.expand(id, s + 1, key, out, aborts);
            }
            for j in 1..=at.outputs {
                *key.last_mut().expect("a branch") = b + EXPANDED * j;
                self.expand(id, s + 1, key, out, aborts);
            }
            key.pop();
        }
    }

    /// Whether the case's faults must abort the run: some unit meets a panic or a fatal
    /// error, the source fails, an init closure or a runner's `start` fails, or a user
    /// value's `Drop` panics.
    pub fn must_abort(&self) -> bool {
        let n = self.stages.len();
        self.source_cut() < self.items
            || self.drops.any()
            || self.faults.iter().any(|f| {
                matches!(f.site, Site::Stage(s) if s < n) && (f.kind.is_init() || f.kind.is_start())
            })
            || self.leaves().1
    }

    /// Whether the run may end by its time limit.
    pub fn may_time_out(&self) -> bool {
        self.timeout.is_some_and(|t| t < crate::common::RUN_LIMIT)
    }

    /// Checks an outcome seen in an aborted run against the faults: the unit's key must be a
    /// path the unit could take, and a final outcome must be the one the faults give.
    pub(super) fn plausible(&self, id: u32, key: &[u8], outcome: Outcome) -> Result<(), String> {
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
        let mut path = Vec::with_capacity(key.len());
        let mut last: Option<(At, u8)> = None;
        for (s, &e) in key.iter().enumerate() {
            let (b, j) = (e % EXPANDED, e / EXPANDED);
            if usize::from(b) >= self.width(s) {
                return Err(format!(
                    "branch {b} at stage {s}, which has {}",
                    self.width(s)
                ));
            }
            path.push(b);
            let at = self.at(s, id, &path);
            *path.last_mut().expect("a branch") = e;
            if j > at.outputs {
                return Err(format!(
                    "output {j} of stage {s}, which emits {} for it",
                    at.outputs
                ));
            }
            if j == 0 && s + 1 < key.len() && !at.continues {
                return Err(format!("went on after {at:?} at stage {s}"));
            }
            last = Some((at, j));
        }
        let passed = |last: Option<(At, u8)>| match last {
            None => n == 0,
            Some((at, j)) => j > 0 || at.continues,
        };
        let ok = match outcome {
            Outcome::Cancelled => true,
            Outcome::Sunk => {
                key.len() == n
                    && passed(last)
                    && !matches!(self.strike_sink(id, key), Some(Kind::Panic | Kind::Error))
            }
            Outcome::SinkFailed => {
                key.len() == n
                    && passed(last)
                    && matches!(self.strike_sink(id, key), Some(Kind::Panic | Kind::Error))
            }
            Outcome::Filtered(s) | Outcome::Failed(s) | Outcome::Routed(s) => {
                key.len() == s + 1 && matches!(last, Some((at, 0)) if at.end == Some(outcome))
            }
        };
        if ok {
            Ok(())
        } else {
            Err(format!("outcome {outcome:?} is not what the faults give"))
        }
    }
}
