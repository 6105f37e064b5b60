//! The pipework side shared by the workloads: the identity stage, four-stage chains, and
//! runs that feed a sink and panic on failure (a bench has no use for a failed run).

use std::cell::Cell;
use std::hint::black_box;

use pipework::runner::StageRunner;
use pipework::{IntoSource, Pipeline, Processor, Report, map};

/// The processor of the identity workloads. `black_box` keeps the optimiser from seeing
/// that it does nothing.
pub fn identity<T: Send>() -> impl Processor<T, T> + Clone + Sync {
    map(|item: T| black_box(item))
}

/// Four stages of the runner `make` returns, named s1..s4.
pub fn chain4<T, R>(make: impl Fn() -> R) -> Pipeline<'static, T>
where
    T: Send + 'static,
    R: StageRunner<T, T> + 'static,
{
    Pipeline::new()
        .stage("s1", make())
        .stage("s2", make())
        .stage("s3", make())
        .stage("s4", make())
}

/// Runs `pipeline`, handing every output to `sink`, and returns the run's report.
pub fn run_sink<T: Send>(
    pipeline: &Pipeline<'_, T>,
    source: impl IntoSource<T>,
    mut sink: impl FnMut(T),
) -> Report {
    pipeline
        .run(source, |x: T| {
            sink(x);
            Ok(())
        })
        .unwrap_or_else(|e| panic!("pipework run failed: {e}"))
}

/// Runs `pipeline` and returns the sum of what reached the sink, and the run's report.
pub fn run_sum(pipeline: &Pipeline<'_, u64>, source: impl IntoSource<u64>) -> (u64, Report) {
    let mut sum = 0u64;
    let report = run_sink(pipeline, source, |x| sum += x);
    (sum, report)
}

/// `run_sum` with the run's timeline recorded; checks that it was.
pub fn run_sum_timeline(pipeline: &Pipeline<'_, u64>, source: impl IntoSource<u64>) -> u64 {
    let mut sum = 0u64;
    let report = pipeline
        .job()
        .record_timeline()
        .run(source, |x: u64| {
            sum += x;
            Ok(())
        })
        .unwrap_or_else(|e| panic!("pipework run failed: {e}"));
    assert!(report.timeline().is_some(), "the timeline was recorded");
    sum
}

/// The report of a variant's latest round, printed after its table in full mode.
#[derive(Default)]
pub struct LastReport(Cell<Option<Report>>);

impl LastReport {
    /// `run_sum`, keeping the report.
    pub fn run_sum(&self, pipeline: &Pipeline<'_, u64>, source: impl IntoSource<u64>) -> u64 {
        let (sum, report) = run_sum(pipeline, source);
        self.0.set(Some(report));
        sum
    }

    /// Prints the kept report, if any.
    pub fn print(self) {
        if let Some(report) = self.0.into_inner() {
            println!("pipework report of the last round:\n{report}");
        }
    }
}
