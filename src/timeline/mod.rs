//! A run's recorded timeline: what each of its threads was doing, and when.
//!
//! Recorded when a run asks for it with [`Job::record_timeline`](crate::Job::record_timeline),
//! and carried by its [`Report`](crate::Report) ([`Report::timeline`](crate::Report::timeline)).

mod trace_event;

use std::time::Duration;

use crate::id::StageId;

/// What a thread was doing during an [`Interval`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Working: in a processor (a worker), producing items (the source), consuming them
    /// (the sink), or moving them (a helper).
    Busy,
    /// Waiting for input.
    Waiting,
    /// Blocked on a full output queue.
    Blocked,
}

impl State {
    /// Every state, in the order of [`Interval`]'s durations.
    pub const ALL: [State; 3] = [State::Busy, State::Waiting, State::Blocked];

    /// `"busy"`, `"waiting"` or `"blocked"`: the event names of the Trace Event export.
    pub fn name(self) -> &'static str {
        match self {
            State::Busy => "busy",
            State::Waiting => "waiting",
            State::Blocked => "blocked",
        }
    }
}

/// A stretch of one thread's time: from `start` to `end` (measured from the start of the
/// run), of which `busy`, `waiting` and `blocked` were spent in each [`State`].
///
/// A recorded interval is one chunk of work (busy, and blocked for the part of it its
/// sends waited on a full queue), or one wait for input. The gaps between intervals are the
/// engine's own bookkeeping. Once a track reaches its cap, neighbouring intervals are
/// merged (see [`Timeline::INTERVALS_PER_TRACK`]): a merged interval spans its parts, and
/// its durations are theirs added up, so that totals stay exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interval {
    /// Nanoseconds from the start of the run to the interval's start.
    start: u64,
    /// Nanoseconds from the start of the run to the interval's end.
    end: u64,
    /// Nanoseconds busy, waiting and blocked, indexed like `State::ALL`.
    time: [u64; 3],
    /// Items worked on.
    items: u32,
    /// Recorded intervals this one stands for (1 unless merged).
    parts: u32,
}

impl Interval {
    /// An interval of `ns` nanoseconds in `state` from `start` to `end`.
    pub(crate) fn new(start: u64, end: u64, state: State, ns: u64) -> Self {
        let mut time = [0; 3];
        time[state as usize] = ns;
        Interval {
            start,
            end: end.max(start),
            time,
            items: 0,
            parts: 1,
        }
    }

    /// Adds `ns` nanoseconds in `state`.
    pub(crate) fn with(mut self, state: State, ns: u64) -> Self {
        self.time[state as usize] += ns;
        self
    }

    /// Sets the number of items worked on.
    pub(crate) fn items(mut self, items: u64) -> Self {
        self.items = u32::try_from(items).unwrap_or(u32::MAX);
        self
    }

    /// Time from the start of the run to the interval's start.
    pub fn start(&self) -> Duration {
        Duration::from_nanos(self.start)
    }

    /// Time from the start of the run to the interval's end.
    pub fn end(&self) -> Duration {
        Duration::from_nanos(self.end)
    }

    /// The interval's length (at least the sum of its three durations).
    pub fn span(&self) -> Duration {
        Duration::from_nanos(self.end - self.start)
    }

    /// Time spent in `state` within the interval.
    pub fn time(&self, state: State) -> Duration {
        Duration::from_nanos(self.time[state as usize])
    }

    /// Time spent busy within the interval.
    pub fn busy(&self) -> Duration {
        self.time(State::Busy)
    }

    /// Time spent waiting for input within the interval.
    pub fn waiting(&self) -> Duration {
        self.time(State::Waiting)
    }

    /// Time spent blocked on a full output queue within the interval.
    pub fn blocked(&self) -> Duration {
        self.time(State::Blocked)
    }

    /// The state the interval spent most of its time in (for an interval that was not
    /// merged, the only one, or busy for a chunk whose sends blocked for less than half
    /// of it).
    pub fn state(&self) -> State {
        let [busy, waiting, blocked] = self.time;
        if busy >= waiting && busy >= blocked {
            State::Busy
        } else if waiting >= blocked {
            State::Waiting
        } else {
            State::Blocked
        }
    }

    /// Items worked on during the interval: the chunk's items (less those given back to
    /// idle siblings), 0 for a wait.
    pub fn item_count(&self) -> u64 {
        u64::from(self.items)
    }

    /// How many recorded intervals this one stands for: 1, or more once merged.
    pub fn parts(&self) -> u64 {
        u64::from(self.parts)
    }

    /// Nanoseconds from the start of the run to the start and the end, and of each state.
    pub(crate) fn raw(&self) -> (u64, u64, [u64; 3]) {
        (self.start, self.end, self.time)
    }

    /// Takes `later`, which starts at or after this interval's end, into this one.
    fn absorb(&mut self, later: &Interval) {
        self.end = self.end.max(later.end);
        for (t, l) in self.time.iter_mut().zip(later.time) {
            *t += l;
        }
        self.items = self.items.saturating_add(later.items);
        self.parts = self.parts.saturating_add(later.parts);
    }

    /// Whether the interval holds no time at all.
    fn is_empty(&self) -> bool {
        self.end == self.start && self.time == [0; 3]
    }
}

/// Which thread a [`Track`] follows.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TrackKind {
    /// The source thread.
    Source,
    /// A worker of a stage.
    Worker {
        /// The stage.
        stage: StageId,
        /// The worker's index in the stage (as [`Context::worker`](crate::Context::worker)
        /// gives it).
        worker: usize,
    },
    /// A helper thread of a stage that the engine runs: a broadcast's `fanout`, an ordered
    /// pool's `deal` and `collect`.
    Helper {
        /// The stage.
        stage: StageId,
        /// What the thread does: `"fanout"`, `"deal"` or `"collect"`.
        role: &'static str,
        /// The thread's index in the stage (helpers and workers share the numbering).
        index: usize,
    },
    /// The sink loop, on the thread that called `run`.
    Sink,
}

impl TrackKind {
    /// The stage the thread belongs to, if any.
    pub fn stage(&self) -> Option<&StageId> {
        match self {
            TrackKind::Worker { stage, .. } | TrackKind::Helper { stage, .. } => Some(stage),
            TrackKind::Source | TrackKind::Sink => None,
        }
    }

    /// A short label: `source`, `validate #3`, `hash collect #4`, `sink`.
    pub fn label(&self) -> String {
        match self {
            TrackKind::Source => "source".into(),
            TrackKind::Worker { stage, worker } => format!("{} #{worker}", stage.name()),
            TrackKind::Helper { stage, role, index } => {
                format!("{} {role} #{index}", stage.name())
            }
            TrackKind::Sink => "sink".into(),
        }
    }

    /// Where the track sorts: source, then each stage's workers and helpers, then the sink.
    fn order(&self) -> (usize, usize, usize) {
        match self {
            TrackKind::Source => (0, 0, 0),
            TrackKind::Worker { stage, worker } => (1 + stage.index(), 0, *worker),
            TrackKind::Helper { stage, index, .. } => (1 + stage.index(), 1, *index),
            TrackKind::Sink => (usize::MAX, 0, 0),
        }
    }
}

/// One thread's intervals, in time order, not overlapping.
#[derive(Debug, Clone)]
pub struct Track {
    /// Which thread.
    kind: TrackKind,
    /// The intervals.
    intervals: Vec<Interval>,
    /// Recorded intervals merged into others.
    merged: u64,
}

impl Track {
    /// Which thread the track follows.
    pub fn kind(&self) -> &TrackKind {
        &self.kind
    }

    /// The thread's intervals, in time order, not overlapping; at most
    /// [`Timeline::INTERVALS_PER_TRACK`].
    pub fn intervals(&self) -> &[Interval] {
        &self.intervals
    }

    /// How many recorded intervals were merged into their neighbours to keep the track
    /// within its cap (0 when nothing was merged).
    pub fn merged(&self) -> u64 {
        self.merged
    }

    /// Time spent in `state`, over the whole track.
    pub fn total(&self, state: State) -> Duration {
        Duration::from_nanos(self.intervals.iter().map(|i| i.time[state as usize]).sum())
    }
}

/// The depth of one queue over a run: the input of a stage, or of the sink, sampled by the
/// sink loop between two chunks at most every millisecond, and every 10 ms while it waits
/// (both twice as far apart each time the series reaches its cap); the sink's own queue is
/// also recorded empty whenever the sink loop starts to wait. A depth holds until the next
/// sample, as a counter does in Perfetto.
#[derive(Debug, Clone)]
pub struct QueueDepths {
    /// The stage the queue feeds; `None` for the sink's.
    stage: Option<StageId>,
    /// Samples: nanoseconds from the start of the run, chunks queued.
    samples: Vec<(u64, u32)>,
}

impl QueueDepths {
    /// The stage whose input this is, or `None` for the queue into the sink.
    pub fn stage(&self) -> Option<&StageId> {
        self.stage.as_ref()
    }

    /// The samples: time from the start of the run, and chunks queued (counted like
    /// [`StageReport::queued`](crate::StageReport::queued)), in time order. Once the
    /// series reached its cap, each sample is the largest of the samples it replaced.
    pub fn samples(&self) -> impl ExactSizeIterator<Item = (Duration, usize)> + '_ {
        self.samples
            .iter()
            .map(|&(t, n)| (Duration::from_nanos(t), n as usize))
    }

    /// The deepest the queue was seen, in chunks.
    pub fn peak(&self) -> usize {
        self.samples
            .iter()
            .map(|&(_, n)| n as usize)
            .max()
            .unwrap_or(0)
    }
}

/// What each thread of a run did, when: one [`Track`] per thread — the source thread, every
/// worker, the helper threads the engine runs, the sink loop — and the depths of the
/// queues between the stages.
///
/// Recorded when [`Job::record_timeline`](crate::Job::record_timeline) asks for it, at
/// chunk granularity: each chunk a thread works on is an interval (busy, and blocked for
/// the time its sends waited on a full queue), each wait for input another. The totals
/// are the report's: for every stage, the busy and waiting times of its worker tracks add
/// up to [`StageReport::busy`](crate::StageReport::busy) and
/// [`waiting`](crate::StageReport::waiting), and their blocked times together with an
/// ordered pool's `collect` helper's to [`blocked`](crate::StageReport::blocked); the
/// source's and the sink's tracks add up to their reports' times. Helper threads that a
/// runner starts itself (a dynamic pool's watcher) have no track.
///
/// # Memory
///
/// Bounded whatever the run's length: at most [`INTERVALS_PER_TRACK`](Self::INTERVALS_PER_TRACK)
/// intervals of 48 bytes per thread (96 KiB) and
/// [`SAMPLES_PER_QUEUE`](Self::SAMPLES_PER_QUEUE) samples of 16 bytes per queue (32 KiB).
/// A track that reaches its cap merges its intervals in neighbouring pairs, and from then
/// on merges each new interval into the last until that one is as long as the average:
/// the whole run stays covered at an even resolution, and every total stays exact. A
/// queue's series likewise keeps the larger of each pair of samples and halves its
/// sampling rate. There is one track per thread started: a dynamic pool that retires idle
/// workers and starts new ones adds a track for each.
///
/// # Export
///
/// [`write_trace_events`](Self::write_trace_events) writes the Trace Event Format that
/// Perfetto (ui.perfetto.dev) and `chrome://tracing` open: one process per stage, one
/// thread track per worker, and queue-depth counters.
///
/// Its `Debug` output is a summary (counts, not intervals), so that a report that carries a
/// timeline still prints in a few lines.
#[derive(Clone)]
pub struct Timeline {
    /// From the start of the run until every thread had joined, in nanoseconds.
    elapsed: u64,
    /// The stages and their runners' kinds.
    stages: Vec<(StageId, &'static str)>,
    /// The tracks, sorted by `TrackKind::order`.
    tracks: Vec<Track>,
    /// The queues: one per stage, in order, then the sink's.
    queues: Vec<QueueDepths>,
}

impl Timeline {
    /// The most intervals a track holds: past it, neighbouring intervals are merged.
    pub const INTERVALS_PER_TRACK: usize = 2048;

    /// The most samples a queue's series holds: past it, neighbouring samples are merged
    /// and the sampling rate halves.
    pub const SAMPLES_PER_QUEUE: usize = 2048;

    /// A timeline from its parts; the tracks are sorted.
    pub(crate) fn new(
        elapsed: Duration,
        stages: Vec<(StageId, &'static str)>,
        mut tracks: Vec<Track>,
        queues: Vec<QueueDepths>,
    ) -> Self {
        tracks.sort_by_key(|t| t.kind.order());
        Timeline {
            elapsed: u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX),
            stages,
            tracks,
            queues,
        }
    }

    /// From the start of the run until every thread had joined.
    pub fn elapsed(&self) -> Duration {
        Duration::from_nanos(self.elapsed)
    }

    /// The pipeline's stages, with their runners' kinds (`"fixed"`, `"dynamic"`, …).
    pub fn stages(&self) -> impl ExactSizeIterator<Item = (&StageId, &'static str)> + '_ {
        self.stages.iter().map(|(id, kind)| (id, *kind))
    }

    /// Every thread's track: the source's, then each stage's workers (by index) and
    /// helpers, then the sink's.
    pub fn tracks(&self) -> &[Track] {
        &self.tracks
    }

    /// The tracks of stage `index`'s threads.
    pub fn stage_tracks(&self, index: usize) -> impl Iterator<Item = &Track> + '_ {
        self.tracks
            .iter()
            .filter(move |t| t.kind.stage().is_some_and(|s| s.index() == index))
    }

    /// The queue depths: the input of each stage, in order, then the sink's input.
    pub fn queues(&self) -> &[QueueDepths] {
        &self.queues
    }
}

impl std::fmt::Debug for Timeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Timeline")
            .field("elapsed", &self.elapsed())
            .field("stages", &self.stages.len())
            .field("tracks", &self.tracks.len())
            .field(
                "intervals",
                &self.tracks.iter().map(|t| t.intervals.len()).sum::<usize>(),
            )
            .field(
                "samples",
                &self.queues.iter().map(|q| q.samples.len()).sum::<usize>(),
            )
            .finish_non_exhaustive()
    }
}

/// Builds one track within its cap (see [`Timeline`]'s notes on memory).
#[derive(Debug)]
pub(crate) struct TrackBuilder {
    /// The intervals so far.
    intervals: Vec<Interval>,
    /// An interval shorter than this takes the next one in (0 until the first merge).
    grain: u64,
    /// The most intervals kept.
    cap: usize,
    /// Recorded intervals merged into others.
    merged: u64,
}

impl TrackBuilder {
    /// A builder keeping at most `cap` (at least 2) intervals.
    pub(crate) fn new(cap: usize) -> Self {
        TrackBuilder {
            intervals: Vec::new(),
            grain: 0,
            cap: cap.max(2),
            merged: 0,
        }
    }

    /// Adds `interval`, which should start at or after the end of the last one (one that
    /// does not is moved to start there, keeping its length).
    pub(crate) fn push(&mut self, mut interval: Interval) {
        if interval.is_empty() {
            return;
        }
        if let Some(last) = self.intervals.last_mut() {
            if interval.start < last.end {
                let shift = last.end - interval.start;
                interval.start += shift;
                interval.end += shift;
            }
            if last.end - last.start < self.grain {
                last.absorb(&interval);
                self.merged += 1;
                return;
            }
        }
        if self.intervals.len() >= self.cap {
            self.compact();
            if let Some(last) = self.intervals.last_mut() {
                if last.end - last.start < self.grain {
                    last.absorb(&interval);
                    self.merged += 1;
                    return;
                }
            }
        }
        self.intervals.push(interval);
    }

    /// Merges the intervals in neighbouring pairs, and makes the average length of the
    /// result the grain below which an interval takes the next one in.
    fn compact(&mut self) {
        let n = self.intervals.len();
        let mut kept = 0;
        let mut i = 0;
        while i < n {
            let mut merged = self.intervals[i];
            if let Some(next) = self.intervals.get(i + 1) {
                merged.absorb(next);
                self.merged += 1;
            }
            self.intervals[kept] = merged;
            kept += 1;
            i += 2;
        }
        self.intervals.truncate(kept);
        if let (Some(first), Some(last)) = (self.intervals.first(), self.intervals.last()) {
            self.grain = self.grain.max((last.end - first.start) / kept as u64);
        }
    }

    /// The track.
    pub(crate) fn build(self, kind: TrackKind) -> Track {
        Track {
            kind,
            intervals: self.intervals,
            merged: self.merged,
        }
    }
}

/// Builds one queue's series of samples within its cap.
#[derive(Debug)]
pub(crate) struct SeriesBuilder {
    /// The samples so far.
    samples: Vec<(u64, u32)>,
    /// The most samples kept.
    cap: usize,
}

impl SeriesBuilder {
    pub(crate) fn new(cap: usize) -> Self {
        SeriesBuilder {
            samples: Vec::new(),
            cap: cap.max(2),
        }
    }

    /// Adds a sample of `depth` chunks at `at` nanoseconds. Returns true when the series
    /// was just halved (the sampler should then sample half as often).
    pub(crate) fn push(&mut self, at: u64, depth: usize) -> bool {
        let depth = u32::try_from(depth).unwrap_or(u32::MAX);
        let mut halved = false;
        if self.samples.len() >= self.cap {
            let n = self.samples.len();
            let mut kept = 0;
            let mut i = 0;
            while i < n {
                let (t, mut d) = self.samples[i];
                if let Some(&(_, next)) = self.samples.get(i + 1) {
                    d = d.max(next);
                }
                self.samples[kept] = (t, d);
                kept += 1;
                i += 2;
            }
            self.samples.truncate(kept);
            halved = true;
        }
        self.samples.push((at, depth));
        halved
    }

    /// The last depth recorded, if any.
    pub(crate) fn last(&self) -> Option<usize> {
        self.samples.last().map(|&(_, d)| d as usize)
    }

    /// The series of the queue into `stage` (`None`: the sink).
    pub(crate) fn build(self, stage: Option<StageId>) -> QueueDepths {
        QueueDepths {
            stage,
            samples: self.samples,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn busy(start: u64, end: u64) -> Interval {
        Interval::new(start, end, State::Busy, end - start).items(1)
    }

    #[test]
    fn a_track_within_its_cap_keeps_every_interval() {
        let mut b = TrackBuilder::new(8);
        for i in 0..8 {
            b.push(busy(i * 10, i * 10 + 5));
        }
        let t = b.build(TrackKind::Source);
        assert_eq!(t.intervals().len(), 8);
        assert_eq!(t.merged(), 0);
        assert_eq!(t.total(State::Busy), Duration::from_nanos(40));
    }

    #[test]
    fn past_its_cap_a_track_merges_neighbours_and_keeps_totals() {
        let mut b = TrackBuilder::new(16);
        let mut expect = [0u64; 3];
        for i in 0..10_000u64 {
            let (state, len) = match i % 3 {
                0 => (State::Busy, 7),
                1 => (State::Waiting, 3),
                _ => (State::Blocked, 1),
            };
            expect[state as usize] += len;
            b.push(Interval::new(i * 10, i * 10 + len, state, len).items(i % 2));
        }
        let t = b.build(TrackKind::Sink);
        assert!(t.intervals().len() <= 16, "{}", t.intervals().len());
        for state in State::ALL {
            assert_eq!(
                u64::try_from(t.total(state).as_nanos()).unwrap(),
                expect[state as usize]
            );
        }
        let parts: u64 = t.intervals().iter().map(Interval::parts).sum();
        assert_eq!(parts, 10_000);
        assert_eq!(t.merged() + t.intervals().len() as u64, 10_000);
        assert_eq!(
            t.intervals().iter().map(Interval::item_count).sum::<u64>(),
            5_000
        );
        // In order, not overlapping, covering the whole run.
        for pair in t.intervals().windows(2) {
            assert!(pair[0].end() <= pair[1].start());
        }
        assert_eq!(t.intervals()[0].start(), Duration::ZERO);
        assert_eq!(
            t.intervals().last().unwrap().end(),
            Duration::from_nanos(99_997)
        );
        // An even resolution: no interval much longer than the average.
        let longest = t.intervals().iter().map(Interval::span).max().unwrap();
        assert!(
            longest < Duration::from_nanos(4 * 99_997 / 16),
            "{longest:?}"
        );
    }

    #[test]
    fn an_overlapping_interval_moves_after_the_last() {
        let mut b = TrackBuilder::new(4);
        b.push(busy(0, 10));
        b.push(Interval::new(5, 8, State::Waiting, 3));
        b.push(Interval::new(20, 20, State::Waiting, 0));
        let t = b.build(TrackKind::Source);
        assert_eq!(t.intervals().len(), 2);
        assert_eq!(t.intervals()[1].start(), Duration::from_nanos(10));
        assert_eq!(t.intervals()[1].end(), Duration::from_nanos(13));
        assert_eq!(t.intervals()[1].state(), State::Waiting);
    }

    #[test]
    fn a_series_past_its_cap_keeps_the_peaks() {
        let mut s = SeriesBuilder::new(4);
        let mut halvings = 0;
        for i in 0..100u64 {
            halvings += usize::from(s.push(i, if i == 41 { 9 } else { 1 }));
        }
        assert!(halvings > 0);
        let q = s.build(None);
        assert!(q.samples().len() <= 4);
        assert_eq!(q.peak(), 9);
    }
}
