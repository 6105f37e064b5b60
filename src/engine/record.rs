//! Recording a run's [`Timeline`], when [`Job::record_timeline`](crate::Job::record_timeline)
//! asks for it.
//!
//! Every thread records into a [`Recorder`] of its own — no lock and no shared write per
//! chunk — and hands its track to the run's [`Observe`] when it ends (one lock per thread).
//! The hooks, each fed with the times the engine measures anyway for its report:
//!
//! - a worker (`worker`): one call per chunk, in `refill`, behind one branch on its
//!   `Option<Box<Recorder>>`; the chunk's busy time is the report's, its blocked time the
//!   output's, each wait the report's wait;
//! - the sink loop (`sink`, in `Feed::next_chunk`, for a sink and for the consumer's
//!   iterator alike): one call per chunk, which also samples the queue depths
//!   ([`QueueSampler`]), and one per wait; while recording, a wait also ends when an idle
//!   sample is due;
//! - the source thread (`source`): one call per chunk sent, tiling its time into busy and
//!   blocked exactly as its report does;
//! - the engine's helpers (`lanes`): generic over [`Clock`], run with [`Off`] — whose
//!   methods are empty, so not even a branch remains — when the run records nothing.
//!
//! Times are kept as nanoseconds from the run's start, so that the recorded durations
//! are exactly those the report adds up.

use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::state::{RunState, StageState};
use super::threads::Taps;
use super::trace::RunTrace;
use crate::report::{Report, SinkReport};
use crate::timeline::{Interval, SeriesBuilder, State, Timeline, Track, TrackBuilder, TrackKind};
use crate::transport::pace::nanos;

/// What a run observes of itself: its timeline, when recorded, and its tracing span.
pub(crate) struct Observe {
    /// The start of the run: time zero of every interval.
    origin: Instant,
    /// The tracks of the threads that have ended, when recording.
    tracks: Option<Mutex<Vec<Track>>>,
    /// The run's tracing span (nothing without the `tracing` feature).
    pub(crate) trace: RunTrace,
}

impl Observe {
    /// A run of `stages` stages started at `origin`, recording its timeline if `record`.
    pub(crate) fn new(origin: Instant, stages: usize, record: bool) -> Self {
        Observe {
            origin,
            tracks: record.then(|| Mutex::new(Vec::new())),
            trace: RunTrace::new(stages, record),
        }
    }

    /// A recorder for a thread of the run, when the run records.
    pub(crate) fn recorder(&self, kind: TrackKind) -> Option<Box<Recorder>> {
        self.tracks
            .as_ref()
            .map(|_| Box::new(Recorder::new(self.origin, kind)))
    }

    /// The queue sampler of the sink loop, when the run records.
    pub(crate) fn sampler(&self, queues: usize) -> Option<QueueSampler> {
        self.tracks
            .as_ref()
            .map(|_| QueueSampler::new(self.origin, queues))
    }

    /// The sink loop's recorder and the queue sampler of a run of `stages` stages, when
    /// the run records.
    pub(crate) fn sink_loop(&self, stages: usize) -> Option<(Box<Recorder>, QueueSampler)> {
        self.recorder(TrackKind::Sink).zip(self.sampler(stages + 1))
    }

    /// Keeps a finished thread's track.
    pub(crate) fn submit(&self, recorder: Recorder) {
        if let Some(tracks) = &self.tracks {
            let track = recorder.build();
            tracks.lock().push(track);
        }
    }

    /// The run's report, once every thread has been joined, with its timeline if it was
    /// recorded. `sampler` holds the queue depths the sink loop sampled.
    pub(crate) fn report(
        &self,
        run: &RunState,
        sink: SinkReport,
        sampler: Option<QueueSampler>,
    ) -> Report {
        let elapsed = self.origin.elapsed();
        let mut report = run.report(sink, elapsed, &[]);
        report.set_timeline(self.timeline(&run.stages, elapsed, sampler));
        report
    }

    /// The run's timeline, once every thread has been joined, if it was recorded.
    /// `sampler` holds the queue depths the sink loop sampled.
    fn timeline(
        &self,
        stages: &[StageState],
        elapsed: Duration,
        sampler: Option<QueueSampler>,
    ) -> Option<Timeline> {
        let tracks = std::mem::take(&mut *self.tracks.as_ref()?.lock());
        let queues = sampler.map(|s| {
            let n = s.series.len();
            s.series
                .into_iter()
                .enumerate()
                .map(|(i, series)| {
                    // One queue per stage, then the sink's.
                    let stage = (i + 1 < n).then(|| stages[i].id.clone());
                    series.build(stage)
                })
                .collect()
        });
        Some(Timeline::new(
            elapsed,
            stages.iter().map(|s| (s.id.clone(), s.kind)).collect(),
            tracks,
            queues.unwrap_or_default(),
        ))
    }
}

/// Hands a recorder's track to the run when dropped (a helper's, also when it panics).
pub(crate) struct Submit<'a> {
    /// Where the track goes.
    pub(crate) observe: &'a Observe,
    /// The recorder, if the run records.
    pub(crate) recorder: Option<Box<Recorder>>,
}

impl Drop for Submit<'_> {
    fn drop(&mut self) {
        if let Some(recorder) = self.recorder.take() {
            self.observe.submit(*recorder);
        }
    }
}

/// What a worker's `refill` measured: the chunk it closed and the wait for the next.
pub(crate) struct Cycle {
    /// Whether a chunk was open, taken at `started`.
    pub(crate) open: bool,
    pub(crate) started: Instant,
    /// When it was closed, and its busy time (the report's).
    pub(crate) finished: Instant,
    pub(crate) busy: u64,
    /// The output's blocked time, in all, when the chunk was closed and now.
    pub(crate) blocked_at_finish: u64,
    pub(crate) blocked_now: u64,
    /// Items of the closed chunk the worker processed (not given back).
    pub(crate) items: u64,
    /// The wait for input that followed, if any.
    pub(crate) waited: Option<(Instant, Instant)>,
}

/// One thread's track being recorded.
pub(crate) struct Recorder {
    /// Time zero.
    origin: Instant,
    /// Which thread.
    kind: TrackKind,
    /// The intervals.
    track: TrackBuilder,
    /// Of the output's blocked time in all, the part already in an interval.
    blocked_placed: u64,
    /// Where the source's next interval starts.
    mark: u64,
}

impl Recorder {
    fn new(origin: Instant, kind: TrackKind) -> Self {
        Recorder {
            origin,
            kind,
            track: TrackBuilder::new(Timeline::INTERVALS_PER_TRACK),
            blocked_placed: 0,
            mark: 0,
        }
    }

    /// Nanoseconds from the start of the run to `t`.
    fn at(&self, t: Instant) -> u64 {
        nanos(t.saturating_duration_since(self.origin))
    }

    /// A chunk from `start` to `end`, `busy` of it busy and the output's blocked time since
    /// the last placement blocked.
    fn chunk(&mut self, start: Instant, end: Instant, busy: u64, blocked_total: u64, items: u64) {
        let blocked = blocked_total.saturating_sub(self.blocked_placed);
        self.blocked_placed = blocked_total;
        let interval = Interval::new(self.at(start), self.at(end), State::Busy, busy)
            .with(State::Blocked, blocked)
            .items(items);
        self.track.push(interval);
    }

    /// The output's blocked time not placed yet, as an interval starting at `at`.
    fn blocked_after(&mut self, at: Instant, blocked_total: u64) {
        let blocked = blocked_total.saturating_sub(self.blocked_placed);
        if blocked > 0 {
            self.blocked_placed = blocked_total;
            let start = self.at(at);
            self.track.push(Interval::new(
                start,
                start + blocked,
                State::Blocked,
                blocked,
            ));
        }
    }

    /// A wait for input from `start` to `end`.
    fn waited(&mut self, start: Instant, end: Instant) {
        let ns = nanos(end.saturating_duration_since(start));
        self.track.push(Interval::new(
            self.at(start),
            self.at(end),
            State::Waiting,
            ns,
        ));
    }

    /// A worker's `refill`: the chunk it closed, what its output blocked between chunks,
    /// and its wait.
    pub(crate) fn cycle(&mut self, c: &Cycle) {
        if c.open {
            self.chunk(c.started, c.finished, c.busy, c.blocked_at_finish, c.items);
        }
        // Sends between chunks (a turn's end, the flush before a wait) came right after.
        self.blocked_after(c.finished, c.blocked_now);
        if let Some((start, end)) = c.waited {
            self.waited(start, end);
        }
    }

    /// The sink loop: the chunk it finished (the sink does not block; for the consumer's
    /// iterator, the time between taking the chunk and asking for the next).
    pub(crate) fn sink_chunk(
        &mut self,
        open: bool,
        started: Instant,
        finished: Instant,
        busy: u64,
        items: usize,
    ) {
        if open {
            self.chunk(started, finished, busy, 0, items as u64);
        }
    }

    /// The sink loop's wait from `start` to `end`.
    pub(crate) fn sink_wait(&mut self, start: Instant, end: Instant) {
        self.waited(start, end);
    }

    /// The source thread started at `at`.
    pub(crate) fn source_started(&mut self, at: Instant) {
        self.mark = self.at(at);
    }

    /// The source thread sent a chunk of `items`, done at `now`, its output having blocked
    /// `blocked_total` in all: the time since the last chunk is busy but for the new
    /// blocked time, placed at the end.
    pub(crate) fn source_sent(&mut self, now: Instant, blocked_total: u64, items: usize) {
        let end = self.at(now);
        let blocked = blocked_total.saturating_sub(self.blocked_placed);
        self.blocked_placed = blocked_total;
        let split = end.saturating_sub(blocked).max(self.mark);
        self.track.push(
            Interval::new(self.mark, split, State::Busy, split - self.mark).items(items as u64),
        );
        self.track.push(Interval::new(
            split,
            split + blocked,
            State::Blocked,
            blocked,
        ));
        self.mark = split + blocked;
    }

    /// The recorded track.
    fn build(self) -> Track {
        self.track.build(self.kind)
    }
}

/// The clock of an engine helper's loop: [`Recorder`] when the run records, [`Off`]
/// otherwise (every method empty).
pub(crate) trait Clock {
    /// A point in time, or nothing.
    type Mark: Copy;
    /// Now.
    fn mark(&self) -> Self::Mark;
    /// Nanoseconds since `mark`.
    fn since(&self, mark: Self::Mark) -> u64;
    /// Work on `items` items from `start` to `end`, `blocked` nanoseconds of it blocked on
    /// output.
    fn work(&mut self, start: Self::Mark, end: Self::Mark, blocked: u64, items: usize);
    /// A wait for input from `start` to `end`.
    fn wait(&mut self, start: Self::Mark, end: Self::Mark);
}

/// The clock of a run that records nothing.
pub(crate) struct Off;

impl Clock for Off {
    type Mark = ();
    #[inline]
    fn mark(&self) {}
    #[inline]
    fn since(&self, (): ()) -> u64 {
        0
    }
    #[inline]
    fn work(&mut self, (): (), (): (), _: u64, _: usize) {}
    #[inline]
    fn wait(&mut self, (): (), (): ()) {}
}

impl Clock for Recorder {
    type Mark = Instant;
    fn mark(&self) -> Instant {
        Instant::now()
    }
    fn since(&self, mark: Instant) -> u64 {
        nanos(mark.elapsed())
    }
    fn work(&mut self, start: Instant, end: Instant, blocked: u64, items: usize) {
        let span = nanos(end.saturating_duration_since(start));
        let blocked = blocked.min(span);
        let interval = Interval::new(self.at(start), self.at(end), State::Busy, span - blocked)
            .with(State::Blocked, blocked)
            .items(items as u64);
        self.track.push(interval);
    }
    fn wait(&mut self, start: Instant, end: Instant) {
        self.waited(start, end);
    }
}

/// Samples the depth of every queue — each stage's input, then the sink's — from the sink
/// loop: between two chunks at most every [`QueueSampler::FIRST_PERIOD`], and while the
/// sink loop waits every ten periods; the period doubles each time the series are full.
pub(crate) struct QueueSampler {
    /// Time zero.
    origin: Instant,
    /// One series per stage, then the sink's.
    series: Vec<SeriesBuilder>,
    /// Chunks queued per queue, being added up.
    depths: Vec<usize>,
    /// The time between samples.
    period: Duration,
    /// When the next sample is due.
    next: Instant,
}

impl QueueSampler {
    /// The time between samples until the series are full; it doubles each time they are.
    const FIRST_PERIOD: Duration = Duration::from_millis(1);

    fn new(origin: Instant, queues: usize) -> Self {
        QueueSampler {
            origin,
            series: (0..queues)
                .map(|_| SeriesBuilder::new(Timeline::SAMPLES_PER_QUEUE))
                .collect(),
            depths: vec![0; queues],
            period: Self::FIRST_PERIOD,
            next: origin,
        }
    }

    /// When the sink loop, idle, should wake to take a sample: ten periods after the last
    /// one. (Waking every period cost W3 about 4 % more CPU; between chunks, samples are
    /// free.)
    pub(crate) fn wake(&self) -> Instant {
        self.next + self.period.saturating_mul(9)
    }

    /// Samples every queue through the run's taps if a sample is due at `now`.
    pub(crate) fn sample(&mut self, now: Instant, taps: &mut Taps<'_>) {
        if now < self.next {
            return;
        }
        self.depths.iter_mut().for_each(|d| *d = 0);
        let last = self.depths.len().saturating_sub(1);
        for t in taps.all() {
            // A tap past the last stage is the sink's input.
            self.depths[t.index.min(last)] += t.tap.queued();
        }
        let at = nanos(now.saturating_duration_since(self.origin));
        let mut halved = false;
        for (series, &depth) in self.series.iter_mut().zip(&self.depths) {
            halved |= series.push(at, depth);
        }
        if halved {
            self.period = self.period.saturating_mul(2);
        }
        self.next = now + self.period;
    }

    /// The sink loop is about to wait at `now`: its own input is empty. Samples every
    /// queue if a sample is due; otherwise records the sink's queue going empty, if its
    /// last sample was not (so that its series does not hold a stale depth through the
    /// wait).
    pub(crate) fn before_wait(&mut self, now: Instant, taps: &mut Taps<'_>) {
        if now >= self.next {
            self.sample(now, taps);
            return;
        }
        let at = nanos(now.saturating_duration_since(self.origin));
        if let Some(sink) = self.series.last_mut() {
            if sink.last().is_some_and(|depth| depth > 0) && sink.push(at, 0) {
                self.period = self.period.saturating_mul(2);
            }
        }
    }
}

/// The earlier of two optional deadlines (`None`: no deadline).
pub(crate) fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}
