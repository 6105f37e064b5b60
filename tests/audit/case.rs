//! The case: a pipeline, its input and its faults, as data; and the model of what the faults
//! must do to the units of a run.

use std::time::Duration;

use super::MAX_STAGES;

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
    pub(super) fn width(&self, s: usize) -> usize {
        self.stages[s].runner.width()
    }

    /// The fault striking the source at item `i`.
    pub(super) fn strike_source(&self, i: u32) -> Option<Kind> {
        self.faults
            .iter()
            .find(|f| f.site == Site::Source && f.item == i)
            .map(|f| f.kind)
    }

    /// The fault striking stage `s` for the unit of item `id` whose branches up to and
    /// including stage `s` are `key[..=s]`.
    pub(super) fn strike_stage(&self, s: usize, id: u32, key: &[u8]) -> Option<Kind> {
        self.faults
            .iter()
            .find(|f| f.site == Site::Stage(s) && f.item == id && f.path[..=s] == key[..=s])
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
}
