//! What a run did: per-stage counts and times, totals, and the accounting identity.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::id::StageId;
use crate::timeline::Timeline;

/// A full report of one run.
///
/// Returned by a successful run, and carried by the [`Error`](crate::Error) of an aborted one.
/// Its `Display` prints a table with one row per stage, in which the busiest stage is
/// marked as the bottleneck.
///
/// # Accounting
///
/// Every item ends in exactly one outcome, and [`Totals::is_balanced`] checks the identity
/// `read + copies + expanded = sunk + filtered + failed + cancelled + merged`, in finished
/// and aborted runs alike (see [`Totals`]).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Report {
    /// Wall time from the start of the run until every thread had joined.
    pub elapsed: Duration,
    /// What the source did.
    pub source: SourceReport,
    /// One entry per stage, in pipeline order.
    pub stages: Vec<StageReport>,
    /// What the sink did.
    pub sink: SinkReport,
    /// Errors and panics after the first one, which the run did not return.
    pub suppressed_errors: u64,
    /// Whether the sink ended the run early with [`Stop`](crate::Stop) (the items then in
    /// flight are counted as cancelled).
    pub stopped_early: bool,
    /// The run's timeline, when [`Job::record_timeline`](crate::Job::record_timeline) asked
    /// for it (shared: cloning a report does not copy it).
    pub(crate) timeline: Option<Arc<Timeline>>,
}

/// What the source did during a run.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct SourceReport {
    /// Items read from the source.
    pub read: u64,
    /// Time spent producing items (in the source's `next`).
    pub busy: Duration,
    /// Time spent blocked because the first stage's input queue was full.
    pub blocked: Duration,
}

/// What the sink did during a run. The sink runs on the thread that called `run`.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct SinkReport {
    /// Items the sink accepted.
    pub consumed: u64,
    /// Items the sink failed on (returned an error or panicked).
    pub failed: u64,
    /// Items that reached the end of the pipeline but were not given to the sink because
    /// the run had been cancelled.
    pub cancelled: u64,
    /// Time spent in the sink.
    pub busy: Duration,
    /// Time spent waiting for the last stage.
    pub waiting: Duration,
}

/// What one stage did during a run.
///
/// For a broadcast stage, `received` counts the items its branches took (each item once per
/// branch), and `copies` the clones it made to get there.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct StageReport {
    /// The stage's position and name.
    pub id: StageId,
    /// The runner's kind, as [`StageRunner::kind`](crate::runner::StageRunner::kind) gives it.
    pub kind: &'static str,
    /// The most workers that ran at once.
    pub peak_workers: usize,
    /// Workers started over the run (above `peak_workers` when a dynamic pool retires and
    /// respawns workers).
    pub workers_started: usize,
    /// Items the workers took from the input.
    pub received: u64,
    /// Items the processors emitted.
    pub emitted: u64,
    /// Inputs for which the processor emitted nothing.
    pub filtered: u64,
    /// Inputs for which the processor failed (returned an error or panicked), whatever the
    /// error policy.
    pub failed: u64,
    /// Of `failed`, the inputs handed to the failure handler.
    pub routed: u64,
    /// Retries made (attempts after the first).
    pub retries: u64,
    /// Inputs a batching stage combined with others: `k - 1` for every batch of `k`; the
    /// batch then counts as one item.
    pub merged: u64,
    /// Items that were in this stage, or queued for it, when the run was cancelled.
    pub cancelled: u64,
    /// Clones a broadcast stage made (`branches - 1` per item).
    pub copies: u64,
    /// Outputs beyond the first for inputs that produced several.
    pub expanded: u64,
    /// Time the workers spent processing, added over workers.
    pub busy: Duration,
    /// Time the workers spent waiting for input, added over workers.
    pub waiting: Duration,
    /// Time the workers spent blocked on a full output queue, added over workers.
    pub blocked: Duration,
    /// Chunks (not items) queued for the stage when the report was taken (live progress
    /// only; 0 in a final report).
    pub queued: usize,
}

impl StageReport {
    /// The share of the workers' time spent processing, from 0 to 1.
    pub fn utilization(&self) -> f64 {
        let total = self.busy + self.waiting + self.blocked;
        if total.is_zero() {
            0.0
        } else {
            self.busy.as_secs_f64() / total.as_secs_f64()
        }
    }
}

/// Item totals over the whole run.
///
/// Every item read from the source, every clone a broadcast made and every extra output of a
/// one-to-many processor ends in exactly one outcome, or is merged into a batch:
///
/// `read + copies + expanded = sunk + filtered + failed + cancelled + merged`
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Totals {
    /// Items read from the source.
    pub read: u64,
    /// Clones made by broadcast stages.
    pub copies: u64,
    /// Outputs beyond the first for inputs that produced several.
    pub expanded: u64,
    /// Items the sink accepted.
    pub sunk: u64,
    /// Inputs a stage dropped by emitting nothing.
    pub filtered: u64,
    /// Inputs a stage or the sink failed on.
    pub failed: u64,
    /// Of `failed`, the inputs handed to the failure handler.
    pub routed: u64,
    /// Items in flight or queued when the run was cancelled.
    pub cancelled: u64,
    /// Inputs combined into batches (`k - 1` per batch of `k`).
    pub merged: u64,
}

impl Totals {
    /// Whether the accounting identity holds.
    pub fn is_balanced(&self) -> bool {
        self.read + self.copies + self.expanded
            == self.sunk + self.filtered + self.failed + self.cancelled + self.merged
    }
}

impl Report {
    /// The run's timeline: what each thread did, when. `Some` when the run was started
    /// with [`Job::record_timeline`](crate::Job::record_timeline) (in an aborted run's
    /// report too), `None` otherwise and in progress snapshots.
    ///
    /// # Examples
    ///
    /// ```
    /// use pipework::{map, Fixed, Pipeline, State};
    ///
    /// let pipeline = Pipeline::new().stage("square", Fixed::new(2, map(|x: u64| x * x)));
    /// let report = pipeline.job().record_timeline().run(0..10_000, |_| Ok(())).unwrap();
    /// let timeline = report.timeline().unwrap();
    /// // The workers' busy intervals add up to the stage's busy time.
    /// let busy: std::time::Duration =
    ///     timeline.stage_tracks(0).map(|t| t.total(State::Busy)).sum();
    /// assert_eq!(busy, report.stages[0].busy);
    /// ```
    pub fn timeline(&self) -> Option<&Timeline> {
        self.timeline.as_deref()
    }

    /// Attaches the run's timeline.
    pub(crate) fn set_timeline(&mut self, timeline: Option<Timeline>) {
        self.timeline = timeline.map(Arc::new);
    }

    /// The run's totals.
    pub fn totals(&self) -> Totals {
        let mut t = Totals {
            read: self.source.read,
            sunk: self.sink.consumed,
            failed: self.sink.failed,
            cancelled: self.sink.cancelled,
            ..Totals::default()
        };
        for s in &self.stages {
            t.copies += s.copies;
            t.expanded += s.expanded;
            t.filtered += s.filtered;
            t.failed += s.failed;
            t.routed += s.routed;
            t.cancelled += s.cancelled;
            t.merged += s.merged;
        }
        t
    }

    /// The report of the stage named `name` (the first one, if several share it).
    ///
    /// # Examples
    ///
    /// ```
    /// use pipework::{filter_map, Fifo, Pipeline};
    ///
    /// let pipeline = Pipeline::new().stage("odd", Fifo::new(filter_map(|x: u32| (x % 2 == 1).then_some(x))));
    /// let (_, report) = pipeline.collect(0..10).unwrap();
    /// let odd = report.stage("odd").unwrap();
    /// assert_eq!((odd.received, odd.emitted, odd.filtered), (10, 5, 5));
    /// assert!(report.stage("even").is_none());
    /// ```
    pub fn stage(&self, name: &str) -> Option<&StageReport> {
        self.stages.iter().find(|s| s.id.name() == name)
    }

    /// The stage whose workers spent the largest share of their time processing, if any
    /// stage did any work.
    pub fn bottleneck(&self) -> Option<&StageReport> {
        self.stages
            .iter()
            .filter(|s| !s.busy.is_zero())
            .max_by(|a, b| a.utilization().total_cmp(&b.utilization()))
    }
}

impl fmt::Display for Report {
    // One table: its column layout reads best in one place.
    #[allow(clippy::too_many_lines)]
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bottleneck = self.bottleneck().map(|s| s.id.index());
        let name_width = self
            .stages
            .iter()
            .map(|s| s.id.name().chars().count() + 3)
            .chain([6])
            .max()
            .unwrap_or(6);
        writeln!(
            f,
            "  {:<name_width$} {:<9} {:>7} {:>9} {:>9} {:>8} {:>7} {:>9} {:>9} {:>9} {:>9} {:>5}",
            "stage",
            "runner",
            "workers",
            "in",
            "out",
            "filtered",
            "failed",
            "cancelled",
            "busy",
            "wait-in",
            "blocked",
            "util"
        )?;
        writeln!(
            f,
            "  {:<name_width$} {:<9} {:>7} {:>9} {:>9} {:>8} {:>7} {:>9} {:>9} {:>9} {:>9} {:>5}",
            "source",
            "-",
            1,
            "-",
            self.source.read,
            "-",
            "-",
            "-",
            Secs(self.source.busy),
            "-",
            Secs(self.source.blocked),
            "-"
        )?;
        for s in &self.stages {
            let mark = if Some(s.id.index()) == bottleneck {
                '*'
            } else {
                ' '
            };
            writeln!(
                f,
                "{mark} {:<name_width$} {:<9} {:>7} {:>9} {:>9} {:>8} {:>7} {:>9} {:>9} {:>9} {:>9} {:>4.0}%",
                format!("{} {}", s.id.index(), s.id.name()),
                s.kind,
                s.peak_workers,
                s.received,
                s.emitted,
                s.filtered,
                s.failed,
                s.cancelled,
                Secs(s.busy),
                Secs(s.waiting),
                Secs(s.blocked),
                s.utilization() * 100.0
            )?;
        }
        writeln!(
            f,
            "  {:<name_width$} {:<9} {:>7} {:>9} {:>9} {:>8} {:>7} {:>9} {:>9} {:>9} {:>9} {:>5}",
            "sink",
            "-",
            1,
            self.sink.consumed + self.sink.failed,
            "-",
            "-",
            self.sink.failed,
            self.sink.cancelled,
            Secs(self.sink.busy),
            Secs(self.sink.waiting),
            "-",
            "-"
        )?;
        let t = self.totals();
        write!(
            f,
            "elapsed {}  read {}  sunk {}  filtered {}  failed {} ({} routed)  cancelled {}",
            Secs(self.elapsed),
            t.read,
            t.sunk,
            t.filtered,
            t.failed,
            t.routed,
            t.cancelled
        )?;
        if self.suppressed_errors > 0 {
            write!(f, "  suppressed errors {}", self.suppressed_errors)?;
        }
        if let Some(s) = self.bottleneck() {
            write!(
                f,
                "\nbottleneck (*): {} busy {:.0}% of its worker time",
                s.id,
                s.utilization() * 100.0
            )?;
        }
        Ok(())
    }
}

/// A duration printed in seconds with three decimals, padded like a number.
struct Secs(Duration);

impl fmt::Display for Secs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&format!("{:.3}s", self.0.as_secs_f64()))
    }
}
