//! Running a case: the test's processor, init closures and runners, source and sink, the
//! pipeline the case describes, and [`run_case`], which runs it under the watchdog and has
//! it audited.
//!
//! The pipeline (the *definition*) takes from its case only what a definition holds: the
//! stages, their runners, options and names, the init and start faults, the pipeline's
//! settings. Everything else — the items, the faults that strike items, the user values
//! whose `Drop` panics, progress and time limit — comes from the case of each run, through
//! its ledger: one definition serves many runs of different cases ([`run_on`]), from many
//! threads at once (the soak).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use pipework::runner::{StageHandle, StageRunner};
use pipework::{
    BoxError, Broadcast, Context, Dynamic, Emitter, Error, Failure, Fifo, Fixed, Ordered, Pipeline,
    Processor, Report, Retry, Source, StageOptions, filter_map, source, try_map,
};

use super::case::{Case, EXPAND, EXPAND_BEFORE_FAIL, Kind, Runner};
use super::check::{Audit, audit};
use super::ledger::{Fate, Item, Ledger};
use super::{MAX_STAGES, RUN_LIMIT};
use crate::common::Watchdog;

/// The test's processor for stage `s`, branch `b`: a one-to-many processor that emits the
/// item it is given (or nothing, or the outputs of an expansion) as the run's faults say.
#[derive(Debug, Clone, Copy)]
struct Step {
    s: usize,
    b: u8,
}

impl Step {
    /// Takes `item` into the stage: returns it with its bomb taken off, whether it was
    /// armed, and the fault that strikes it here.
    fn take_in(self, mut item: Item) -> (Item, bool, Option<Kind>) {
        item.enter(self.s, self.b);
        // Our own code disarms what it drops; the item passes its bomb on.
        let armed = std::mem::take(&mut item.bomb);
        let kind = item.ledger.case.strike_stage(self.s, item.id, &item.stamps);
        (item, armed, kind)
    }

    /// The call on `item` as a closure of `try_map` or `filter_map` makes it: one output,
    /// none (`Filter`) or an error, or a panic, after a stall now and then; never an
    /// expansion (the generator gives such a stage none, see `Runner::processor_kinds`).
    fn call(self, item: Item) -> Result<Option<Item>, BoxError> {
        let (item, armed, kind) = self.take_in(item);
        self.outcome(item, armed, kind)
    }

    /// The outcome of `item` (taken in, its bomb taken off: `armed`) under `kind`, one of
    /// the faults a map stage can carry out (or none). A `Step` stage's stall is its own.
    fn outcome(
        self,
        mut item: Item,
        armed: bool,
        kind: Option<Kind>,
    ) -> Result<Option<Item>, BoxError> {
        let s = self.s;
        match kind {
            None => {}
            Some(Kind::Panic) => {
                item.fate = Fate::Panicked(s as u8);
                panic!("injected panic at stage {s} on {}", item.name());
            }
            Some(Kind::Error) => {
                item.fate = Fate::Erred(s as u8);
                return Err(format!("injected error at stage {s} on {}", item.name()).into());
            }
            Some(Kind::Filter) => {
                item.fate = Fate::Filtered(s as u8);
                return Ok(None);
            }
            // A closure has no context to sleep on: the stall is not cut short by
            // cancellation (as at the source and the sink).
            Some(Kind::Stall) => std::thread::sleep(item.ledger.case.stall),
            Some(other) => unreachable!("{other:?} on a map stage"),
        }
        item.pos = s as u8 + 1;
        let bomb = item.ledger.case.output_bomb(s, item.id, &item.stamps);
        item.bomb = armed || bomb;
        Ok(Some(item))
    }
}

impl Processor<Item, Item> for Step {
    fn process(
        &mut self,
        item: Item,
        cx: &Context<'_>,
        out: &mut Emitter<'_, Item>,
    ) -> Result<(), BoxError> {
        let (s, b) = (self.s, self.b);
        let (mut item, armed, kind) = self.take_in(item);
        let expand = |item: &mut Item, out: &mut Emitter<'_, Item>, n: u8| {
            for j in 1..=n {
                out.emit(item.spawn(s, b, j));
            }
        };
        let kind = match kind {
            Some(Kind::Stall) => {
                if let Err(cancelled) = cx.sleep(item.ledger.case.stall) {
                    item.fate = Fate::StallCut(s as u8);
                    return Err(cancelled.into());
                }
                // A stall that ran its course: the item goes on.
                None
            }
            Some(Kind::Expand) => {
                expand(&mut item, out, EXPAND);
                item.fate = Fate::Split(s as u8);
                return Ok(());
            }
            Some(Kind::ExpandError) => {
                expand(&mut item, out, EXPAND_BEFORE_FAIL);
                item.fate = Fate::Erred(s as u8);
                return Err(
                    format!("injected expansion error at stage {s} on {}", item.name()).into(),
                );
            }
            Some(Kind::ExpandPanic) => {
                expand(&mut item, out, EXPAND_BEFORE_FAIL);
                item.fate = Fate::Panicked(s as u8);
                panic!("injected expansion panic at stage {s} on {}", item.name());
            }
            // The rest, as a map stage's closure does them.
            kind => kind,
        };
        if let Some(output) = self.outcome(item, armed, kind)? {
            out.emit(output);
        }
        Ok(())
    }
}

/// A runner whose `start` panics, before or after starting the real runner.
struct PanicStart<'c> {
    inner: Box<dyn StageRunner<Item, Item> + 'c>,
    s: usize,
    after: bool,
}

impl StageRunner<Item, Item> for PanicStart<'_> {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    fn check(&self) -> Result<(), String> {
        self.inner.check()
    }

    fn keeps_order(&self) -> bool {
        self.inner.keeps_order()
    }

    fn start<'scope>(&'scope self, stage: StageHandle<'scope, '_, Item, Item>) {
        if self.after {
            let kept = stage.clone();
            self.inner.start(stage);
            drop(kept);
        }
        panic!("injected start panic at stage {}", self.s);
    }
}

impl Case {
    /// The test's sink.
    fn sink(&self, mut item: Item) -> Result<(), BoxError> {
        item.bomb = false;
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
            Some(Kind::Stall) => std::thread::sleep(self.stall),
            Some(_) => {}
        }
        item.fate = Fate::Sunk;
        Ok(())
    }

    /// The pipeline the case describes: its definition.
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
            if spec.retry {
                options = options.retry(Retry::new(2).backoff(Duration::ZERO));
            }
            if let Some(c) = spec.capacity {
                options = options.capacity(c);
            }
            let mut runner = self.runner(&spec.runner, s, 0);
            if let Some(kind) = self.start_fault(s) {
                runner = Box::new(PanicStart {
                    inner: runner,
                    s,
                    after: kind == Kind::StartPanicAfter,
                });
            }
            let name = self.stage_name(s);
            p = if spec.routes {
                // The handler is part of the definition, shared by every run of it: it
                // finds the run's ledger through the item.
                let options = options.route_failures_to(|f: Failure<Item>| {
                    let ledger = Arc::clone(&f.item().ledger);
                    ledger.on_failure(f);
                });
                p.stage_with(name, runner, options)
            } else {
                p.stage_with(name, runner, options)
            };
        }
        p
    }

    fn runner<'c>(
        &'c self,
        spec: &Runner,
        s: usize,
        b: u8,
    ) -> Box<dyn StageRunner<Item, Item> + 'c> {
        let step = Step { s, b };
        let idle = self.stages[s].idle;
        if let Some(kind) = self.init_fault(s) {
            // Every worker's init fails.
            let init = move |_: &Context<'_>| -> Result<Step, BoxError> {
                if kind == Kind::InitPanic {
                    panic!("injected init panic at stage {s}");
                }
                Err(format!("injected init error at stage {s}").into())
            };
            return match spec {
                Runner::Fifo | Runner::FifoTryMap | Runner::FifoFilterMap => {
                    Box::new(Fifo::with_init(init))
                }
                Runner::Fixed(n) => Box::new(Fixed::with_init(*n, init)),
                Runner::Dynamic(n) => Box::new(with_idle(Dynamic::with_init(*n, init), idle)),
                Runner::Ordered(n, w) => Box::new(Ordered::with_init(*n, init).window(*w)),
                Runner::Broadcast(branches) => self.broadcast(branches, s),
            };
        }
        match spec {
            Runner::Fifo => Box::new(Fifo::new(step)),
            Runner::FifoTryMap => Box::new(Fifo::new(try_map(move |item| {
                step.call(item)
                    .map(|output| output.expect("no filtering on a try_map stage"))
            }))),
            Runner::FifoFilterMap => Box::new(Fifo::new(filter_map(move |item| {
                step.call(item).expect("no error on a filter_map stage")
            }))),
            Runner::Fixed(n) => Box::new(Fixed::new(*n, step)),
            Runner::Dynamic(n) => Box::new(with_idle(Dynamic::new(*n, step), idle)),
            Runner::Ordered(n, w) => Box::new(Ordered::new(*n, step).window(*w)),
            Runner::Broadcast(branches) => {
                let _ = b;
                self.broadcast(branches, s)
            }
        }
    }

    fn broadcast<'c>(
        &'c self,
        branches: &[Runner],
        s: usize,
    ) -> Box<dyn StageRunner<Item, Item> + 'c> {
        let mut fan = Broadcast::new();
        for (i, branch) in branches.iter().enumerate() {
            assert!(!matches!(branch, Runner::Broadcast(_)), "nested broadcast");
            fan = fan.branch(self.runner(branch, s, i as u8));
        }
        Box::new(fan)
    }
}

/// A dynamic pool with `idle` as its idle timeout, if given.
fn with_idle<M>(pool: Dynamic<M>, idle: Option<Duration>) -> Dynamic<M> {
    match idle {
        Some(idle) => pool.idle_timeout(idle),
        None => pool,
    }
}

/// A user value whose `Drop` panics (quietly while its thread unwinds).
struct PanicDrop(&'static str);

impl Drop for PanicDrop {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            panic!("injected {} drop", self.0);
        }
    }
}

/// The test's source: yields fresh items, failing or stalling where the faults say.
struct Feed {
    ledger: Arc<Ledger>,
    next: u32,
    _bomb: Option<PanicDrop>,
}

impl Source<Item> for Feed {
    fn next(&mut self, _: &pipework::CancelToken) -> Option<Result<Item, BoxError>> {
        let case = &self.ledger.case;
        if self.next >= case.items {
            return None;
        }
        let i = self.next;
        self.next += 1;
        match case.strike_source(i) {
            Some(Kind::Panic) => {
                self.ledger.source_fired.fetch_add(1, Ordering::SeqCst);
                panic!("injected source panic at item {i}");
            }
            Some(Kind::Error) => {
                self.ledger.source_fired.fetch_add(1, Ordering::SeqCst);
                return Some(Err(format!("injected source error at item {i}").into()));
            }
            Some(Kind::Stall) => std::thread::sleep(case.stall),
            _ => {}
        }
        Some(Ok(Item::new(i, &self.ledger)))
    }
}

/// Runs `case` once on its own pipeline, under a watchdog of [`RUN_LIMIT`], and audits it.
/// Panics, naming the case, on anything wrong. Returns the run's result with the audit.
pub fn run_case(case: &Case) -> (Result<Report, Error>, Audit) {
    let pipeline = case.pipeline();
    run_on(&pipeline, case)
}

/// Runs `case` once on `pipeline`, a definition made from a case with the same stages
/// (`Case::pipeline`), under a watchdog of [`RUN_LIMIT`], and audits it.
pub fn run_on(pipeline: &Pipeline<'_, Item, Item>, case: &Case) -> (Result<Report, Error>, Audit) {
    match try_run_on(pipeline, case) {
        (result, Ok(audit)) => (result, audit),
        (result, Err(problem)) => panic!(
            "{problem}\n  case: {case:?}\n  result: {}\n  report: {:?}",
            match &result {
                Ok(_) => "Ok".to_owned(),
                Err(e) => format!("Err({e}) = {:?}", e.kind()),
            },
            result.as_ref().map_or_else(|e| e.report(), Some)
        ),
    }
}

/// [`run_on`], returning what is wrong instead of panicking (the watchdog still aborts the
/// process on a hang).
pub fn try_run_on(
    pipeline: &Pipeline<'_, Item, Item>,
    case: &Case,
) -> (Result<Report, Error>, Result<Audit, String>) {
    try_run_within(pipeline, case, RUN_LIMIT)
}

/// [`try_run_on`] with a watchdog of `limit`: a run that takes longer is a hang, and the
/// watchdog aborts the process.
pub fn try_run_within(
    pipeline: &Pipeline<'_, Item, Item>,
    case: &Case,
    limit: Duration,
) -> (Result<Report, Error>, Result<Audit, String>) {
    assert!(case.stages.len() <= MAX_STAGES);
    let ledger = Ledger::new(case);
    let feed = Feed {
        ledger: Arc::clone(&ledger),
        next: 0,
        _bomb: case.drops.source.then(|| PanicDrop("source")),
    };
    let sink_bomb = case.drops.sink.then(|| PanicDrop("sink"));
    let progress_bomb = case.drops.progress.then(|| PanicDrop("progress"));
    let started = Instant::now();
    let result = {
        let _dog = Watchdog::arm(format!("{case:?}"), limit);
        let mut job = pipeline.job();
        if let Some(limit) = case.timeout {
            job = job.timeout(limit);
        }
        if case.progress.is_some() || case.drops.progress {
            let every = case.progress.unwrap_or(Duration::MAX);
            job = job.on_progress(every, move |report| {
                let _ = &progress_bomb;
                assert_eq!(report.stages.len(), case.stages.len());
            });
        }
        job.run(source::custom(feed), move |item: Item| {
            let _ = &sink_bomb;
            case.sink(item)
        })
    };
    let elapsed = started.elapsed();
    let audited = audit(case, &ledger, &result).and_then(|mut audit| {
        audit.elapsed = elapsed;
        if elapsed < limit {
            Ok(audit)
        } else {
            Err(format!("run took {elapsed:?}"))
        }
    });
    (result, audited)
}
