//! Running a case: the test's processors, source and sink, the pipeline the case describes,
//! and [`run_case`], which runs it under the watchdog and has it audited.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use pipework::{
    BoxError, Broadcast, Context, Dynamic, Error, Failure, Fifo, Fixed, Ordered, Pipeline, Report,
    Source, StageOptions, processor::from_fn, runner::StageRunner, source,
};

use super::case::{Case, Kind, Runner};
use super::check::{Audit, audit};
use super::ledger::{Fate, Item, Ledger};
use super::{MAX_STAGES, RUN_LIMIT};
use crate::common::Watchdog;

impl Case {
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
    pub fn pipeline<'c>(&'c self, ledger: &'c Ledger) -> Pipeline<'c, Item, Item> {
        let mut p = Pipeline::new();
        if let Some(c) = self.capacity {
            p = p.capacity(c);
        }
        if let Some(m) = self.max_chunk {
            p = p.max_chunk(m);
        }
        for (s, spec) in self.stages.iter().enumerate() {
            let mut options = StageOptions::new();
            if let Some(c) = spec.capacity {
                options = options.capacity(c);
            }
            let (name, runner) = (format!("s{s}"), self.runner(&spec.runner, s, 0));
            p = if spec.routes {
                let options = options.route_failures_to(|f: Failure<Item>| ledger.on_failure(f));
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
        let step = from_fn(move |item: Item, cx, out| {
            if let Some(item) = self.step(s, b, item, cx)? {
                out.emit(item);
            }
            Ok(())
        });
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

/// Runs `case` once, under a watchdog of [`RUN_LIMIT`], and audits it. Panics, naming the case,
/// on anything wrong. Returns the run's result with the audit.
pub fn run_case(case: &Case) -> (Result<Report, Error>, Audit) {
    assert!(case.stages.len() <= MAX_STAGES);
    let ledger = Ledger::new(case.items);
    let pipeline = case.pipeline(&ledger);
    let feed = Feed {
        case,
        ledger: Arc::clone(&ledger),
        next: 0,
    };
    let started = Instant::now();
    let result = {
        let _dog = Watchdog::arm(format!("{case:?}"), RUN_LIMIT);
        pipeline.run(source::custom(feed), |item: Item| case.sink(item))
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
