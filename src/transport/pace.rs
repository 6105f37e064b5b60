//! How big a chunk is: the one place where chunk sizes are decided.
//!
//! The target starts at 1, on the first run of a definition; a later run of the same
//! definition starts each edge where it ended the run before (see [`Shape`]). After every
//! chunk a consumer measures its own cost per item and *advises* the edge that feeds it:
//! `BUDGET / cost`, at most twice the previous advice, at most the pipeline's `max_chunk`.
//! A producer sends when its buffer reaches the smaller of that advice and the same bound
//! computed from its *own* cost per item, so that
//!
//! - a cheap stage moves hundreds of items per channel operation;
//! - a slow consumer gets chunks of one item, so a pool never holds a chunk of slow items on
//!   one worker while another idles (at most about `BUDGET` of work sits in one chunk);
//! - a slow producer never makes its first buffered output wait for more than about
//!   `BUDGET` of its own work.
//!
//! A worker also flushes its partial chunk whenever its own input has nothing ready, before
//! it blocks: a trickle of items travels one at a time with no added delay.
//!
//! # Bytes
//!
//! A chunk also holds at most [`CHUNK_BYTES`] (64 KiB) of items by their inline size,
//! `size_of::<T>()`, and always at least one item ([`chunk_cap`]): 64-byte items still
//! move 256 at a time (the default `max_chunk`), 1 KiB items 64 at a time, items of 64 KiB
//! or more one at a time. Every producer of chunks (the source thread and each [`Outbox`])
//! sends at that size at most; the other hops forward or clone whole chunks. So an edge
//! holds at most `capacity × max(64 KiB, size_of::<T>())` bytes of items (16 × 64 KiB = 1 MiB
//! with the default capacity), and each thread a chunk or two more.
//!
//! `size_of` sees only an item's inline part: a `Vec`, a `String` or a `Box` counts 24, 24
//! or 8 bytes whatever it owns on the heap. Bound those with `Pipeline::max_chunk` (and
//! `capacity`): an edge holds at most `capacity × max_chunk` items.
//!
//! [`Outbox`]: super::Outbox

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

/// The most work a chunk should hold, in nanoseconds of its consumer's time.
///
/// Measured on a 2-core machine (W3 of the benchmark, a fixed pool of 2 on 5 µs items):
/// 40 µs gave 0.94× a plain loop, 200 µs 1.61×, 500 µs 1.81×. Larger chunks cost nothing
/// for a trickle (partial chunks are sent when the input is idle); they bound the imbalance
/// a pool can end with.
pub(crate) const BUDGET_NS: u64 = 500_000;

/// Default for the largest number of items in one chunk.
pub(crate) const DEFAULT_MAX_CHUNK: usize = 256;

/// The most bytes of items, by `size_of`, one chunk holds (at least one item).
///
/// 64 KiB: the default chunk of 256 items stays whole up to 256-byte items, so the chunking
/// of small items does not change; larger items travel in fewer per chunk, and an edge of
/// the default capacity holds at most 1 MiB of items below 64 KiB each.
pub(crate) const CHUNK_BYTES: usize = 64 * 1024;

/// The most items of type `T` a chunk holds: [`CHUNK_BYTES`] of them by `size_of`, at least
/// one (any number of zero-sized ones).
#[inline]
pub(crate) const fn chunk_cap<T>() -> usize {
    match std::mem::size_of::<T>() {
        0 => usize::MAX,
        size if size >= CHUNK_BYTES => 1,
        size => CHUNK_BYTES / size,
    }
}

/// The chunk-size state of one edge, shared by its producers and consumers.
///
/// An edge of a pipeline definition remembers the advice it ended a run with, and the
/// definition's next run starts from it (`Shape::remembering`): a service that runs a small
/// batch per request through one definition does not grow its chunks from one item again
/// every time. The consumers' advice starts there; a producer's own bound still starts at
/// one item, so that the first output of a run is never held back for more (a blocking
/// source may not have the next item for a long time), and after its first chunk it may
/// jump to the remembered size at once if its measured cost fits the budget at that size
/// ([`fit`](Self::fit)). A run whose items are slower than last time's gets chunks sized
/// for the old items from its first producers' second chunk until its consumers have
/// measured theirs: what stealing (`inbox`) is for.
#[derive(Debug)]
pub(crate) struct Shape {
    /// The chunk size the consumers ask for.
    advice: AtomicUsize,
    /// The largest chunk size allowed on this edge.
    max: usize,
    /// The advice this edge started with: a bound may grow to it in one step.
    start: usize,
    /// Where the advice is kept for the next run, if the edge belongs to a definition.
    memory: Option<Arc<AtomicUsize>>,
}

impl Drop for Shape {
    fn drop(&mut self) {
        if let Some(memory) = &self.memory {
            // Ordering: Relaxed, see `advice`: a hint for the next run.
            memory.store(self.advice(), Ordering::Relaxed);
        }
    }
}

impl Shape {
    pub(crate) fn new(max: usize) -> Arc<Self> {
        Self::with(max, None)
    }

    /// The shape of an edge that starts from the advice in `memory` and leaves its own
    /// there when the run ends.
    pub(crate) fn remembering(max: usize, memory: Arc<AtomicUsize>) -> Arc<Self> {
        Self::with(max, Some(memory))
    }

    fn with(max: usize, memory: Option<Arc<AtomicUsize>>) -> Arc<Self> {
        let max = max.max(1);
        // Ordering: Relaxed, see `advice`.
        let start = memory
            .as_ref()
            .map_or(1, |m| m.load(Ordering::Relaxed).clamp(1, max));
        Arc::new(Shape {
            advice: AtomicUsize::new(start),
            max,
            start,
            memory,
        })
    }

    /// The chunk size consumers asked for last.
    #[inline]
    pub(crate) fn advice(&self) -> usize {
        // Ordering: Relaxed. The advice is a hint; any value a producer reads is a valid
        // chunk size, and a stale one only delays the adaptation by a chunk.
        self.advice.load(Ordering::Relaxed)
    }

    /// Records a consumer's wish.
    pub(crate) fn advise(&self, size: usize) {
        // Ordering: Relaxed, see `advice`.
        self.advice
            .store(size.clamp(1, self.max), Ordering::Relaxed);
    }

    /// The chunk size that keeps `cost_ns` per item within the budget, growing from
    /// `current` by at most a factor of two, or at once to the size the edge remembered.
    pub(crate) fn fit(&self, current: usize, cost_ns: u64) -> usize {
        let fit = BUDGET_NS / cost_ns.max(1);
        let fit = usize::try_from(fit).unwrap_or(usize::MAX);
        let grown = current.saturating_mul(2).max(self.start);
        fit.min(grown).clamp(1, self.max)
    }
}

/// Measures a consumer's cost per item chunk by chunk and turns it into chunk sizes.
#[derive(Debug)]
pub(crate) struct Pacer {
    /// When the current chunk was taken.
    started: Instant,
    /// Items in the current chunk.
    items: usize,
    /// The producer's blocked time when the chunk was taken (subtracted from busy time).
    blocked_at_start: u64,
    /// Whether a chunk is open (taken and not yet finished).
    open: bool,
    /// The current chunk size bound.
    limit: usize,
}

impl Pacer {
    /// A pacer starting from `limit`: a new worker of a pool starts from the size its
    /// siblings found, not from 1.
    pub(crate) fn new(limit: usize) -> Self {
        Pacer {
            started: Instant::now(),
            items: 0,
            blocked_at_start: 0,
            open: false,
            limit: limit.max(1),
        }
    }

    /// Closes the current chunk at `now`; returns the busy nanoseconds spent on it.
    /// `blocked_ns` is the running total of time blocked on output, subtracted from it.
    pub(crate) fn finish(&mut self, now: Instant, blocked_ns: u64, shape: &Shape) -> u64 {
        if !std::mem::replace(&mut self.open, false) {
            return 0;
        }
        let elapsed = nanos(now.saturating_duration_since(self.started));
        let busy = elapsed.saturating_sub(blocked_ns.saturating_sub(self.blocked_at_start));
        if self.items > 0 {
            self.limit = shape.fit(self.limit, busy / self.items as u64);
            shape.advise(self.limit);
        }
        busy
    }

    /// Opens a chunk of `items` items at `now`.
    pub(crate) fn begin(&mut self, now: Instant, items: usize, blocked_ns: u64) {
        self.started = now;
        self.items = items;
        self.blocked_at_start = blocked_ns;
        self.open = true;
    }

    /// When the current chunk was taken.
    pub(crate) fn started(&self) -> Instant {
        self.started
    }

    /// Whether a chunk is open, when it was taken and its items (for the timeline, read
    /// before `finish`).
    #[inline]
    pub(crate) fn chunk(&self) -> (bool, Instant, usize) {
        (self.open, self.started, self.items)
    }

    /// The consumer's own chunk size bound.
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }
}

/// Nanoseconds of a duration, saturating.
pub(crate) fn nanos(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn fit_keeps_a_chunk_within_the_budget() {
        let shape = Shape::new(256);
        // 1 ms per item: one item per chunk.
        assert_eq!(shape.fit(64, 1_000_000), 1);
        // 1 µs per item: 500 fit, but growth is at most 2× and capped by max_chunk.
        assert_eq!(shape.fit(8, 1_000), 16);
        assert_eq!(shape.fit(200, 1_000), 256);
        // A zero cost is treated as 1 ns and never overflows.
        assert_eq!(shape.fit(usize::MAX, 0), 256);
    }

    #[test]
    fn a_remembered_size_is_reached_in_one_step_when_the_cost_allows() {
        let memory = Arc::new(AtomicUsize::new(200));
        let shape = Shape::remembering(256, Arc::clone(&memory));
        assert_eq!(
            shape.advice(),
            200,
            "consumers start from the remembered advice"
        );
        // Cheap items: from one item straight to the remembered size, then doubling.
        assert_eq!(shape.fit(1, 1_000), 200);
        assert_eq!(shape.fit(200, 100), 256);
        // Slow items: the budget decides, whatever was remembered.
        assert_eq!(shape.fit(1, 1_000_000), 1);
        assert_eq!(shape.fit(1, 10_000), 50);
        // The last advice is left for the next run, within the edge's bounds.
        shape.advise(37);
        drop(shape);
        assert_eq!(memory.load(Ordering::Relaxed), 37);
        memory.store(10_000, Ordering::Relaxed);
        assert_eq!(Shape::remembering(256, memory).advice(), 256);
    }

    #[test]
    fn a_chunk_holds_64_kib_of_items_and_one_at_least() {
        assert_eq!(chunk_cap::<u64>(), 8 * 1024);
        assert_eq!(chunk_cap::<[u8; 64]>(), 1024);
        assert_eq!(chunk_cap::<[u8; 1024]>(), 64);
        assert_eq!(chunk_cap::<[u8; 65536]>(), 1);
        assert_eq!(chunk_cap::<[u8; 1 << 20]>(), 1);
        assert_eq!(chunk_cap::<()>(), usize::MAX);
        // What a Vec owns is not seen: its inline size is three words.
        assert_eq!(
            chunk_cap::<Vec<u8>>(),
            CHUNK_BYTES / (3 * size_of::<usize>())
        );
    }

    #[test]
    fn advice_is_clamped_to_the_edge() {
        let shape = Shape::new(8);
        shape.advise(0);
        assert_eq!(shape.advice(), 1);
        shape.advise(100);
        assert_eq!(shape.advice(), 8);
        assert_eq!(Shape::new(0).fit(1, 1), 1);
    }

    #[test]
    fn a_pacer_advises_the_edge_from_measured_cost() {
        let shape = Shape::new(256);
        let mut pacer = Pacer::new(1);
        let t0 = Instant::now();
        pacer.begin(t0, 10, 0);
        // 10 items in 10 ms: 1 ms each, chunks of one.
        let busy = pacer.finish(t0 + Duration::from_millis(10), 0, &shape);
        assert_eq!(busy, 10_000_000);
        assert_eq!((pacer.limit(), shape.advice()), (1, 1));
        // Time blocked on output is not busy time.
        pacer.begin(t0, 10, 1_000);
        let busy = pacer.finish(t0 + Duration::from_micros(11), 2_000, &shape);
        assert_eq!(busy, 10_000);
        assert_eq!(pacer.limit(), 2);
        // Finishing twice counts nothing.
        assert_eq!(pacer.finish(t0 + Duration::from_secs(1), 0, &shape), 0);
    }
}
