//! The one list of a stage's counters: kept per worker without atomics, added into the
//! stage's shared set once per chunk, and read into a [`StageReport`].

use std::ops::{Index, IndexMut};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use crate::id::StageId;
use crate::report::StageReport;

/// One counter of a stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Counter {
    /// Items workers took from the input.
    Received,
    /// Items processors emitted.
    Emitted,
    /// Inputs that produced at least one output.
    Mapped,
    /// Inputs that produced nothing (or that a runner dropped).
    Filtered,
    /// Inputs the processor failed on.
    Failed,
    /// Of `Failed`, the inputs routed to the failure handler.
    Routed,
    /// Attempts after the first.
    Retries,
    /// Inputs combined into a batch with others (`k - 1` per batch of `k`).
    Merged,
    /// Items in the stage or queued for it when the run was cancelled.
    Cancelled,
    /// Clones a broadcast made.
    Copies,
    /// Nanoseconds spent processing.
    BusyNs,
    /// Nanoseconds spent waiting for input.
    WaitNs,
    /// Nanoseconds spent blocked on a full output queue.
    BlockedNs,
}

/// How many counters there are.
const COUNTERS: usize = Counter::BlockedNs as usize + 1;

/// A worker's own counters, not yet added to the stage's.
#[derive(Debug, Default, Clone)]
pub(crate) struct Counts([u64; COUNTERS]);

impl Index<Counter> for Counts {
    type Output = u64;
    #[inline]
    fn index(&self, c: Counter) -> &u64 {
        &self.0[c as usize]
    }
}

impl IndexMut<Counter> for Counts {
    #[inline]
    fn index_mut(&mut self, c: Counter) -> &mut u64 {
        &mut self.0[c as usize]
    }
}

/// A stage's counters, shared by its threads.
#[derive(Debug, Default)]
pub(crate) struct StageStats {
    /// The counters, indexed by [`Counter`].
    counts: [AtomicU64; COUNTERS],
    /// Workers running now.
    live: AtomicUsize,
    /// The most workers that ran at once.
    peak: AtomicUsize,
    /// Workers started over the run.
    started: AtomicUsize,
}

// Ordering: Relaxed for every access in this file. The final report is read after every
// thread has been joined, which orders all these writes before the reads; live progress
// snapshots only need each counter to be eventually right, not consistent with the others.
// Worker counts are statistics; no bound is kept with them.

impl StageStats {
    /// Adds `n` to one counter.
    pub(crate) fn add(&self, c: Counter, n: u64) {
        if n != 0 {
            self.counts[c as usize].fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Adds `local` into the shared counters and zeroes it.
    pub(crate) fn flush(&self, local: &mut Counts) {
        for (shared, v) in self.counts.iter().zip(local.0.iter_mut()) {
            if *v != 0 {
                shared.fetch_add(std::mem::take(v), Ordering::Relaxed);
            }
        }
    }

    /// Records a worker starting; keeps the peak.
    pub(crate) fn worker_started(&self) {
        let live = self.live.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak.fetch_max(live, Ordering::Relaxed);
        self.started.fetch_add(1, Ordering::Relaxed);
    }

    /// Records a worker ending.
    pub(crate) fn worker_ended(&self) {
        self.live.fetch_sub(1, Ordering::Relaxed);
    }

    /// The counters as a report.
    pub(crate) fn snapshot(&self, id: StageId, kind: &'static str, queued: usize) -> StageReport {
        let get = |c: Counter| self.counts[c as usize].load(Ordering::Relaxed);
        let ns = |c: Counter| Duration::from_nanos(get(c));
        StageReport {
            id,
            kind,
            peak_workers: self.peak.load(Ordering::Relaxed),
            workers_started: self.started.load(Ordering::Relaxed),
            received: get(Counter::Received),
            emitted: get(Counter::Emitted),
            filtered: get(Counter::Filtered),
            failed: get(Counter::Failed),
            routed: get(Counter::Routed),
            retries: get(Counter::Retries),
            merged: get(Counter::Merged),
            cancelled: get(Counter::Cancelled),
            copies: get(Counter::Copies),
            expanded: get(Counter::Emitted).saturating_sub(get(Counter::Mapped)),
            busy: ns(Counter::BusyNs),
            waiting: ns(Counter::WaitNs),
            blocked: ns(Counter::BlockedNs),
            queued,
        }
    }
}

/// Items a helper thread holds on a stage's behalf: whatever is still held when the
/// custody ends — normally, at cancellation, or by a panic unwinding — counts as cancelled.
/// One guard, so that no helper writes its own cancelled-counting code.
pub(crate) struct Custody<'a> {
    /// The counters the items belong to.
    stats: &'a StageStats,
    /// Items held now.
    held: u64,
}

impl<'a> Custody<'a> {
    pub(crate) fn new(stats: &'a StageStats) -> Self {
        Custody { stats, held: 0 }
    }

    /// Takes `n` more items into custody.
    pub(crate) fn take(&mut self, n: usize) {
        self.held += n as u64;
    }

    /// Hands `n` items on (sent downstream, or counted by someone else).
    pub(crate) fn release(&mut self, n: usize) {
        self.held -= n as u64;
    }
}

impl Drop for Custody<'_> {
    fn drop(&mut self) {
        self.stats.add(Counter::Cancelled, self.held);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flush_moves_every_counter_once() {
        let stats = StageStats::default();
        let mut local = Counts::default();
        local[Counter::Received] = 5;
        local[Counter::Emitted] = 7;
        local[Counter::Mapped] = 4;
        local[Counter::Filtered] = 1;
        stats.flush(&mut local);
        stats.flush(&mut local);
        assert_eq!(local[Counter::Received], 0);
        stats.add(Counter::Cancelled, 2);
        let r = stats.snapshot(StageId::new(0, "s".into()), "fixed", 0);
        assert_eq!(
            (r.received, r.emitted, r.filtered, r.cancelled),
            (5, 7, 1, 2)
        );
        assert_eq!(r.expanded, 3);
    }

    #[test]
    fn the_peak_of_live_workers_is_kept() {
        let stats = StageStats::default();
        stats.worker_started();
        stats.worker_started();
        stats.worker_ended();
        stats.worker_started();
        let r = stats.snapshot(StageId::new(0, "s".into()), "dynamic", 0);
        assert_eq!((r.peak_workers, r.workers_started), (2, 3));
    }
}
