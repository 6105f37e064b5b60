//! What a run did: per-stage counts and times, totals, and the accounting identity.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// A stage's position and name, as errors and reports name it: `stage 2 (update)`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StageId {
    /// The stage's position in the pipeline, from 0.
    index: usize,
    /// The name given when the stage was added.
    name: Arc<str>,
}

impl StageId {
    pub(crate) fn new(index: usize, name: Arc<str>) -> Self {
        StageId { index, name }
    }

    /// The stage's position in the pipeline, from 0.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The stage's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Display for StageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "stage {} ({})", self.index, self.name)
    }
}

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
    /// The runner's kind, as [`StageRunner::kind`](crate::StageRunner::kind) gives it.
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
    /// Items queued for the stage when the report was taken (live progress only; 0 in a
    /// final report).
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

/// Live counters of one stage, shared by its workers.
///
/// Workers add into [`LocalStats`] and flush here once per input chunk, so the shared
/// cache lines are touched per chunk rather than per item.
#[derive(Debug, Default)]
pub(crate) struct StageStats {
    pub(crate) received: AtomicU64,
    pub(crate) emitted: AtomicU64,
    /// Inputs that produced at least one output.
    pub(crate) mapped: AtomicU64,
    pub(crate) filtered: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) routed: AtomicU64,
    pub(crate) retries: AtomicU64,
    /// Inputs combined into a batch with others (`k - 1` per batch of `k`).
    pub(crate) merged: AtomicU64,
    pub(crate) cancelled: AtomicU64,
    pub(crate) copies: AtomicU64,
    pub(crate) busy_ns: AtomicU64,
    pub(crate) wait_ns: AtomicU64,
    pub(crate) blocked_ns: AtomicU64,
    pub(crate) live: AtomicUsize,
    pub(crate) peak: AtomicUsize,
    pub(crate) started: AtomicUsize,
}

/// A worker's own counters, flushed into [`StageStats`].
#[derive(Debug, Default)]
pub(crate) struct LocalStats {
    pub(crate) received: u64,
    pub(crate) emitted: u64,
    pub(crate) mapped: u64,
    pub(crate) filtered: u64,
    pub(crate) failed: u64,
    pub(crate) routed: u64,
    pub(crate) retries: u64,
    pub(crate) merged: u64,
    pub(crate) cancelled: u64,
    pub(crate) busy_ns: u64,
    pub(crate) wait_ns: u64,
    pub(crate) blocked_ns: u64,
}

impl LocalStats {
    /// Adds the local counts into `shared` and zeroes them.
    pub(crate) fn flush(&mut self, shared: &StageStats) {
        // Ordering: Relaxed throughout. The final report is read after every thread has
        // been joined, which orders all these writes before the reads; live progress
        // snapshots only need each counter to be eventually right, not consistent with
        // the others.
        fn add(to: &AtomicU64, v: &mut u64) {
            if *v != 0 {
                to.fetch_add(*v, Ordering::Relaxed);
                *v = 0;
            }
        }
        add(&shared.received, &mut self.received);
        add(&shared.emitted, &mut self.emitted);
        add(&shared.mapped, &mut self.mapped);
        add(&shared.filtered, &mut self.filtered);
        add(&shared.failed, &mut self.failed);
        add(&shared.routed, &mut self.routed);
        add(&shared.retries, &mut self.retries);
        add(&shared.merged, &mut self.merged);
        add(&shared.cancelled, &mut self.cancelled);
        add(&shared.busy_ns, &mut self.busy_ns);
        add(&shared.wait_ns, &mut self.wait_ns);
        add(&shared.blocked_ns, &mut self.blocked_ns);
    }
}

impl StageStats {
    /// Records a worker starting; keeps the peak.
    pub(crate) fn worker_started(&self) {
        // Ordering: Relaxed; the counts are statistics, and the dynamic pool's bound on
        // workers is kept by its own counter, not by these.
        let live = self.live.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak.fetch_max(live, Ordering::Relaxed);
        self.started.fetch_add(1, Ordering::Relaxed);
    }

    /// Records a worker ending.
    pub(crate) fn worker_ended(&self) {
        // Ordering: Relaxed, as in `worker_started`.
        self.live.fetch_sub(1, Ordering::Relaxed);
    }

    /// Counts items dropped because the run was cancelled.
    pub(crate) fn add_cancelled(&self, n: u64) {
        // Ordering: Relaxed, see `LocalStats::flush`.
        self.cancelled.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts time a helper thread spent blocked on a full output queue.
    pub(crate) fn add_blocked(&self, ns: u64) {
        // Ordering: Relaxed, see `LocalStats::flush`.
        self.blocked_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// Counts clones made by a broadcast.
    pub(crate) fn add_copies(&self, n: u64) {
        // Ordering: Relaxed, see `LocalStats::flush`.
        self.copies.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self, id: StageId, kind: &'static str, queued: usize) -> StageReport {
        // Ordering: Relaxed, see `LocalStats::flush`.
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let emitted = get(&self.emitted);
        StageReport {
            id,
            kind,
            peak_workers: self.peak.load(Ordering::Relaxed),
            workers_started: self.started.load(Ordering::Relaxed),
            received: get(&self.received),
            emitted,
            filtered: get(&self.filtered),
            failed: get(&self.failed),
            routed: get(&self.routed),
            retries: get(&self.retries),
            merged: get(&self.merged),
            cancelled: get(&self.cancelled),
            copies: get(&self.copies),
            expanded: emitted.saturating_sub(get(&self.mapped)),
            busy: Duration::from_nanos(get(&self.busy_ns)),
            waiting: Duration::from_nanos(get(&self.wait_ns)),
            blocked: Duration::from_nanos(get(&self.blocked_ns)),
            queued,
        }
    }
}

/// Nanoseconds of a duration, saturating.
pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
