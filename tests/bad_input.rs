//! Suite 4: bad input and bad configuration. Zero workers, empty broadcasts, zero
//! capacities, empty sources, a failure on the very first item, a sink that panics on its
//! first item, processors that never return until cancelled: each gets a clear error or the
//! right result, promptly, with every item dropped exactly once and no thread left behind.
//!
//! The tests of this file are serialised, so that the process's thread count is theirs.

// Pedantic lints this test allows, and why:
// - `too_many_lines`: a long function is one scenario, read top to bottom.
// - `unnecessary_wraps`: steps used as processors return `Result`, failing or not.
#![allow(clippy::too_many_lines, clippy::unnecessary_wraps)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{RUN_LIMIT, Watchdog, serial_test, settle_threads};
use pipework::{
    Batch, BoxError, Broadcast, CancelToken, Context, Dynamic, Error, ErrorKind, Failure, Fifo,
    Fixed, Ordered, Pipeline, Processor, Report, Site, StageOptions, runner::StageRunner, source,
};

/// Items per run.
const ITEMS: usize = 100;
/// The time limit given to runs whose processors never return by themselves.
const LIMIT: Duration = Duration::from_millis(100);
/// How long after its time limit or its cancellation a run may take to return.
const PROMPT: Duration = Duration::from_secs(1);

/// Per item id, how many values were made (the original and its clones) and dropped.
#[derive(Debug)]
struct Book {
    made: Vec<AtomicU32>,
    dropped: Vec<AtomicU32>,
    /// Items the source handed out.
    read: AtomicUsize,
}

impl Book {
    fn new() -> Arc<Self> {
        Arc::new(Book {
            made: (0..ITEMS).map(|_| AtomicU32::new(0)).collect(),
            dropped: (0..ITEMS).map(|_| AtomicU32::new(0)).collect(),
            read: AtomicUsize::new(0),
        })
    }

    /// The items of a run, counted as they are read.
    fn items(self: &Arc<Self>) -> impl Iterator<Item = Counted> + Send + use<> {
        let originals: Vec<Counted> = (0..ITEMS).map(|id| Counted::new(id, self)).collect();
        let book = Arc::clone(self);
        originals.into_iter().inspect(move |_| {
            book.read.fetch_add(1, Ordering::SeqCst);
        })
    }

    fn read(&self) -> usize {
        self.read.load(Ordering::SeqCst)
    }

    /// Every value made was dropped exactly once.
    fn assert_each_dropped_once(&self, case: &str) {
        let wrong: Vec<_> = (0..ITEMS)
            .map(|i| {
                let made = self.made[i].load(Ordering::SeqCst);
                (i, made, self.dropped[i].load(Ordering::SeqCst))
            })
            .filter(|(_, made, dropped)| made != dropped)
            .take(10)
            .collect();
        assert!(wrong.is_empty(), "{case}: (id, made, dropped) {wrong:?}");
    }
}

/// An item that counts its clones and drops.
#[derive(Debug)]
struct Counted {
    id: usize,
    book: Arc<Book>,
}

impl Counted {
    fn new(id: usize, book: &Arc<Book>) -> Self {
        book.made[id].fetch_add(1, Ordering::SeqCst);
        Counted {
            id,
            book: Arc::clone(book),
        }
    }
}

impl Clone for Counted {
    fn clone(&self) -> Self {
        Counted::new(self.id, &self.book)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.book.dropped[self.id].fetch_add(1, Ordering::SeqCst);
    }
}

type Step = fn(Counted, &Context<'_>) -> Result<Counted, BoxError>;

fn pass(x: Counted, _: &Context<'_>) -> Result<Counted, BoxError> {
    Ok(x)
}

fn fail_first(x: Counted, _: &Context<'_>) -> Result<Counted, BoxError> {
    if x.id == 0 {
        return Err("injected error on the first item".into());
    }
    Ok(x)
}

fn panic_first(x: Counted, _: &Context<'_>) -> Result<Counted, BoxError> {
    assert!(x.id != 0, "injected panic on the first item");
    Ok(x)
}

fn never_returns(x: Counted, cx: &Context<'_>) -> Result<Counted, BoxError> {
    cx.sleep(Duration::MAX)?;
    Ok(x)
}

fn spins_until_cancelled(_: Counted, cx: &Context<'_>) -> Result<Counted, BoxError> {
    while !cx.is_cancelled() {
        std::thread::yield_now();
    }
    Err(pipework::Cancelled.into())
}

/// A batch stage running `step` on every item of each batch of 4.
fn batch(step: Step) -> impl StageRunner<Counted, Counted> {
    Batch::new(
        4,
        Duration::from_millis(1),
        pipework::processor::from_fn(move |batch: Vec<Counted>, cx, out| {
            for item in batch
                .into_iter()
                .map(|x| step(x, cx))
                .collect::<Result<Vec<_>, _>>()?
            {
                out.emit(item);
            }
            Ok(())
        }),
    )
}

/// The runner kinds every per-runner case goes through (a dynamic pool separately, see
/// `RUNNERS_WITH_DYNAMIC`).
const RUNNERS: [&str; 5] = ["fifo", "fixed", "ordered", "broadcast", "batch"];
/// Runner kinds that include a dynamic pool.
const RUNNERS_WITH_DYNAMIC: [&str; 2] = ["dynamic", "broadcast with a dynamic branch"];

/// A one-stage pipeline named "first" of runner kind `kind` running `step`.
fn one_stage(kind: &str, step: Step) -> Pipeline<'static, Counted> {
    let p = Pipeline::new();
    match kind {
        "fifo" => p.stage("first", Fifo::new(common::fallible(step))),
        "fixed" => p.stage("first", Fixed::new(3, common::fallible(step))),
        "dynamic" => p.stage("first", Dynamic::new(4, common::fallible(step))),
        "ordered" => p.stage("first", Ordered::new(2, common::fallible(step)).window(1)),
        "broadcast" => p.stage(
            "first",
            Broadcast::new()
                .branch(Fifo::new(common::fallible(step)))
                .branch(Fixed::new(2, common::fallible(step))),
        ),
        "broadcast with a dynamic branch" => p.stage(
            "first",
            Broadcast::new()
                .branch(Fifo::new(common::fallible(step)))
                .branch(Dynamic::new(2, common::fallible(step))),
        ),
        "batch" => p.stage("first", batch(step)),
        other => unreachable!("{other}"),
    }
}

/// Runs one case: under the watchdog, checking the drops and the thread count after it.
fn case(
    name: &str,
    baseline: usize,
    run: impl FnOnce(&Arc<Book>) -> Result<Report, Error>,
) -> (Result<Report, Error>, Arc<Book>, Duration) {
    let book = Book::new();
    let started = Instant::now();
    let result = {
        let _dog = Watchdog::arm(name, RUN_LIMIT);
        run(&book)
    };
    let took = started.elapsed();
    assert!(took < RUN_LIMIT, "{name}: took {took:?}");
    if let Err(e) = &result {
        if let Some(r) = e.report() {
            assert!(r.totals().is_balanced(), "{name}: {:?}", r.totals());
        }
    }
    book.assert_each_dropped_once(name);
    assert_eq!(settle_threads(baseline), baseline, "{name}: threads left");
    (result, book, took)
}

/// A configuration error, found before anything ran.
fn assert_config(
    name: &str,
    result: &Result<Report, Error>,
    book: &Book,
    stage: Option<&str>,
    says: &str,
) {
    let err = result.as_ref().expect_err(name);
    match err.kind() {
        ErrorKind::Config { stage: at, message } => {
            assert_eq!(at.as_ref().map(pipework::StageId::name), stage, "{name}");
            assert_eq!(err.stage().map(pipework::StageId::name), stage, "{name}");
            assert!(
                message.contains(says),
                "{name}: {message:?} does not say {says:?}"
            );
        }
        other => panic!("{name}: expected a configuration error, got {other:?}"),
    }
    assert!(
        err.report().is_none(),
        "{name}: a report for a run that never started"
    );
    assert_eq!(book.read(), 0, "{name}: the source was read");
}

#[test]
fn smoke() {
    let _t = serial_test("smoke", 60);
    let book = Book::new();
    let p = Pipeline::new().stage("first", Fixed::new(0, common::fallible(pass as Step)));
    let result = p.run(book.items(), |_| Ok(()));
    assert_config("smoke", &result, &book, Some("first"), "worker");
    book.assert_each_dropped_once("smoke");
}

#[test]
fn bad_input_and_configuration_get_a_clear_error_or_the_right_result() {
    let t = serial_test("bad input", 300);
    let baseline = t.baseline;
    let mut cases = 0;
    let step = pass as Step;

    // Configuration errors: returned before any thread starts or any item is read.
    let configs: Vec<(&str, Pipeline<'static, Counted>, Option<&str>, &str)> = vec![
        (
            "a fixed pool of zero workers",
            Pipeline::new().stage("first", Fixed::new(0, common::fallible(step))),
            Some("first"),
            "worker",
        ),
        (
            "a dynamic pool of at most zero workers",
            Pipeline::new()
                .stage("first", Fifo::new(common::fallible(step)))
                .stage("second", Dynamic::new(0, common::fallible(step))),
            Some("second"),
            "worker",
        ),
        (
            "an ordered pool of zero workers",
            Pipeline::new().stage("first", Ordered::new(0, common::fallible(step))),
            Some("first"),
            "worker",
        ),
        (
            "an ordered pool with a window of zero",
            Pipeline::new().stage("first", Ordered::new(2, common::fallible(step)).window(0)),
            Some("first"),
            "window",
        ),
        (
            "a batch of zero items",
            Pipeline::new().stage(
                "first",
                Batch::new(
                    0,
                    Duration::from_millis(1),
                    common::fallible(
                        |b: Vec<Counted>, _: &Context<'_>| -> Result<Counted, BoxError> {
                            Ok(b.into_iter().next().expect("a batch"))
                        },
                    ),
                ),
            ),
            Some("first"),
            "size",
        ),
        (
            "an empty broadcast",
            Pipeline::new().stage("first", Broadcast::<Counted, Counted>::new()),
            Some("first"),
            "branch",
        ),
        (
            "a broadcast with a branch of zero workers",
            Pipeline::new().stage(
                "first",
                Broadcast::new()
                    .branch(Fifo::new(common::fallible(step)))
                    .branch(Fixed::new(0, common::fallible(step))),
            ),
            Some("first"),
            "branch 1",
        ),
        (
            "a capacity of zero",
            Pipeline::new()
                .capacity(0)
                .stage("first", Fifo::new(common::fallible(step))),
            None,
            "capacity",
        ),
        (
            "chunks of zero items",
            Pipeline::new()
                .max_chunk(0)
                .stage("first", Fifo::new(common::fallible(step))),
            None,
            "max_chunk",
        ),
        (
            "a stage capacity of zero",
            Pipeline::new().stage_with(
                "first",
                Fifo::new(common::fallible(step)),
                StageOptions::new().capacity(0),
            ),
            Some("first"),
            "capacity",
        ),
    ];
    for (name, p, stage, says) in &configs {
        let (result, book, _) = case(name, baseline, |book| p.run(book.items(), |_| Ok(())));
        assert_config(name, &result, &book, *stage, says);
        cases += 1;
    }

    // An empty source: every runner finishes at once with nothing done.
    let empty_runners = RUNNERS.iter().chain(&RUNNERS_WITH_DYNAMIC).copied();
    for kind in empty_runners.chain(["no stage"]) {
        let name = format!("an empty source, {kind}");
        let p = if kind == "no stage" {
            Pipeline::new()
        } else {
            one_stage(kind, step)
        };
        let mut called = 0;
        let (result, _, _) = case(&name, baseline, |_| {
            p.run(std::iter::empty(), |_: Counted| {
                called += 1;
                Ok(())
            })
        });
        let report = result.unwrap_or_else(|e| panic!("{name}: {e}"));
        let t = report.totals();
        assert_eq!(
            (t.read, t.sunk, t.cancelled, t.failed, called),
            (0, 0, 0, 0, 0),
            "{name}"
        );
        cases += 1;
    }
    let (tx, rx) = crossbeam_channel::unbounded::<Counted>();
    drop(tx);
    let (result, _, _) = case("an empty channel source", baseline, |_| {
        one_stage("fixed", step).run(source::receiver(rx), |_| Ok(()))
    });
    assert_eq!(result.expect("an empty channel").totals().read, 0);
    cases += 1;

    // The very first item fails: at the source, in a stage, in the sink.
    let (result, book, _) = case("a source error on the first item", baseline, |book| {
        let items = book.items().map(|x| {
            if x.id == 0 {
                Err("injected source error")
            } else {
                Ok(x)
            }
        });
        one_stage("fixed", step).run(source::fallible(items), |_| Ok(()))
    });
    let err = result.expect_err("a source error");
    assert!(matches!(err.kind(), ErrorKind::Source { error }
            if error.to_string() == "injected source error"));
    assert_eq!(err.report().expect("a report").source.read, 0);
    assert!(book.read() >= 1);
    cases += 1;
    let (result, _, _) = case("a source panic on the first item", baseline, |book| {
        let items = book
            .items()
            .inspect(|x| assert!(x.id != 0, "injected source panic"));
        one_stage("fixed", step).run(items, |_| Ok(()))
    });
    let err = result.expect_err("a source panic");
    assert!(
        matches!(err.kind(), ErrorKind::Panic { site: Site::Source, message }
            if message == "injected source panic")
    );
    assert_eq!(err.report().expect("a report").source.read, 0);
    cases += 1;
    for kind in RUNNERS {
        cases += first_item_fails(kind, baseline);
    }
    let (result, _, _) = case("a routed failure on the first item", baseline, |book| {
        Pipeline::new()
            .stage_with(
                "first",
                Fixed::new(2, common::fallible(fail_first as Step)),
                StageOptions::new().route_failures_to(|f: Failure<Counted>| {
                    assert_eq!(f.into_item().id, 0);
                }),
            )
            .run(book.items(), |_| Ok(()))
    });
    let t = result.expect("a routed failure").totals();
    assert_eq!((t.sunk, t.failed, t.routed), (ITEMS as u64 - 1, 1, 1));
    cases += 1;
    for kind in ["no stage", "fixed", "broadcast"] {
        for panics in [true, false] {
            let what = if panics { "panics" } else { "fails" };
            let name = format!("a sink that {what} on its first item, {kind}");
            let p = if kind == "no stage" {
                Pipeline::new()
            } else {
                one_stage(kind, step)
            };
            let (result, _, _) = case(&name, baseline, |book| {
                p.run(book.items(), |_: Counted| {
                    assert!(!panics, "injected sink panic");
                    Err("injected sink error".into())
                })
            });
            let err = result.expect_err(&name);
            match err.kind() {
                ErrorKind::Panic {
                    site: Site::Sink,
                    message,
                } if panics => {
                    assert_eq!(message, "injected sink panic", "{name}");
                }
                ErrorKind::Sink { error } if !panics => {
                    assert_eq!(error.to_string(), "injected sink error", "{name}");
                }
                other => panic!("{name}: {other:?}"),
            }
            let sink = &err.report().expect("a report").sink;
            assert_eq!((sink.consumed, sink.failed), (0, 1), "{name}");
            cases += 1;
        }
    }

    // Processors that never return until the run is cancelled: by its time limit, by a
    // token, by a time limit of zero, or a token cancelled before the run.
    let kinds = RUNNERS.iter().chain(&RUNNERS_WITH_DYNAMIC).copied();
    for kind in kinds {
        for (how, step) in [
            ("sleeps", never_returns as Step),
            ("spins", spins_until_cancelled as Step),
        ] {
            let p = one_stage(kind, step);
            let name = format!("a processor that {how} until cancelled, {kind}, time limit");
            let (result, _, took) = case(&name, baseline, |book| {
                p.job().timeout(LIMIT).run(book.items(), |_| Ok(()))
            });
            let err = result.expect_err(&name);
            assert!(
                matches!(err.kind(), ErrorKind::Deadline { limit } if *limit == LIMIT),
                "{name}: {err}"
            );
            assert!(
                took >= LIMIT && took < LIMIT + PROMPT,
                "{name}: took {took:?}"
            );
            cases += 1;

            let name = format!("a processor that {how} until cancelled, {kind}, token");
            let (result, _, took) = case(&name, baseline, |book| {
                let token = CancelToken::new();
                let canceller = {
                    let token = token.clone();
                    std::thread::spawn(move || {
                        std::thread::sleep(LIMIT);
                        token.cancel();
                    })
                };
                let result = p.job().cancel_token(&token).run(book.items(), |_| Ok(()));
                canceller.join().expect("the canceller");
                result
            });
            let err = result.expect_err(&name);
            assert!(matches!(err.kind(), ErrorKind::Cancelled), "{name}: {err}");
            assert!(took < LIMIT + PROMPT, "{name}: took {took:?}");
            cases += 1;
        }
    }
    let p = one_stage("fixed", never_returns);
    let (result, _, _) = case("a time limit of zero", baseline, |book| {
        p.job()
            .timeout(Duration::ZERO)
            .run(book.items(), |_| Ok(()))
    });
    assert!(
        matches!(result.expect_err("zero").kind(), ErrorKind::Deadline { limit } if limit.is_zero())
    );
    cases += 1;
    let token = CancelToken::new();
    token.cancel();
    let (result, book, _) = case("a token cancelled before the run", baseline, |book| {
        p.job().cancel_token(&token).run(book.items(), |_| Ok(()))
    });
    assert!(matches!(
        result.expect_err("cancelled").kind(),
        ErrorKind::Cancelled
    ));
    assert_eq!(book.read(), 0);
    cases += 1;
    let (tx, rx) = crossbeam_channel::unbounded::<Counted>();
    let (result, _, took) = case(
        "a channel source that never ends, time limit",
        baseline,
        |_| {
            one_stage("fixed", step)
                .job()
                .timeout(LIMIT)
                .run(source::receiver(rx), |_| Ok(()))
        },
    );
    drop(tx);
    assert!(matches!(
        result.expect_err("deadline").kind(),
        ErrorKind::Deadline { .. }
    ));
    assert!(took < LIMIT + PROMPT);
    cases += 1;

    eprintln!("bad input: {cases} cases");
}

/// The first item makes a processor of runner `kind` fail, then panic: the run fails with
/// that error, at that stage, the item counted as failed. Returns the cases run.
fn first_item_fails(kind: &str, baseline: usize) -> usize {
    for (panics, step) in [(false, fail_first as Step), (true, panic_first as Step)] {
        let p = one_stage(kind, step);
        let name = format!(
            "a processor that {} on the first item, {kind}",
            if panics { "panics" } else { "fails" }
        );
        let (result, _, _) = case(&name, baseline, |book| p.run(book.items(), |_| Ok(())));
        let err = result.expect_err(&name);
        match err.kind() {
            ErrorKind::Stage { stage, error } if !panics => {
                assert_eq!(stage.name(), "first", "{name}");
                assert_eq!(
                    error.to_string(),
                    "injected error on the first item",
                    "{name}"
                );
            }
            ErrorKind::Panic {
                site: Site::Stage { stage, .. },
                message,
            } if panics => {
                assert_eq!(stage.name(), "first", "{name}");
                assert_eq!(message, "injected panic on the first item", "{name}");
            }
            other => panic!("{name}: {other:?}"),
        }
        assert_eq!(
            err.stage().map(pipework::StageId::name),
            Some("first"),
            "{name}"
        );
        // In a broadcast every branch gets item 0, and each may fail on its copy before the
        // run is cancelled: the failures after the first are suppressed errors.
        let copies = if kind.starts_with("broadcast") { 2 } else { 1 };
        let report = err.report().expect("a report");
        let failed = report.stages[0].failed;
        assert!((1..=copies).contains(&failed), "{name}: {failed} failed");
        assert_eq!(report.suppressed_errors, failed - 1, "{name}");
    }
    2
}

/// The same with a dynamic pool, alone and as a broadcast branch.
#[test]
fn the_first_item_failing_in_a_dynamic_pool_is_reported() {
    let t = serial_test("first item, dynamic pools", 120);
    let baseline = t.baseline;
    for kind in RUNNERS_WITH_DYNAMIC {
        first_item_fails(kind, baseline);
    }
}

/// A capacity the channels cannot have is bad configuration like a capacity of zero. Today
/// `run()` panics on the calling thread instead ("bounded channel capacity is too large",
/// from crossbeam), for the pipeline's capacity, a stage's, and an ordered pool's window.
#[test]
fn an_impossible_capacity_is_a_configuration_error_not_a_panic() {
    let _t = serial_test("impossible capacities", 60);
    let step = pass as Step;
    let cases: Vec<(&str, Pipeline<'static, Counted>)> = vec![
        (
            "Pipeline::capacity(usize::MAX)",
            Pipeline::new()
                .capacity(usize::MAX)
                .stage("first", Fifo::new(common::fallible(step))),
        ),
        (
            "StageOptions::capacity(usize::MAX) on the second stage",
            Pipeline::new()
                .stage("first", Fifo::new(common::fallible(step)))
                .stage_with(
                    "second",
                    Fifo::new(common::fallible(step)),
                    StageOptions::new().capacity(usize::MAX),
                ),
        ),
        (
            "Ordered::window(usize::MAX)",
            Pipeline::new().stage(
                "first",
                Ordered::new(2, common::fallible(step)).window(usize::MAX),
            ),
        ),
    ];
    let mut panicked = Vec::new();
    for (name, p) in &cases {
        let book = Book::new();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            p.run(book.items(), |_| Ok(()))
        }));
        book.assert_each_dropped_once(name);
        match result {
            Ok(Err(e)) if matches!(e.kind(), ErrorKind::Config { .. }) => {}
            Ok(other) => panic!("{name}: expected a configuration error, got {other:?}"),
            Err(payload) => {
                let message = payload
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                panicked.push(format!("{name}: run() panicked: {message}"));
            }
        }
    }
    assert!(panicked.is_empty(), "{panicked:#?}");
}

/// What a run with an extreme setting must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// A configuration error saying this, before any thread starts or any item is read.
    Config(&'static str),
    /// A correct run: every item sunk.
    Ok,
    /// The run's time limit ends it (a setting that makes it wait as long as asked).
    Deadline,
    /// Either a correct run or its time limit (a limit of zero races a short run).
    OkOrDeadline,
    /// The stage's error: a transient failure that is not retried.
    StageError,
    /// A correct run, or an error because the operating system refused a thread: never a
    /// panic out of `run()`.
    OkOrRefused,
}

/// A processor that fails each item's first attempt with a transient error (a retry of the
/// same item succeeds): the attempts are counted per item id.
fn flaky(
    attempts: &Arc<Vec<AtomicU32>>,
) -> impl Processor<Counted, Counted> + Clone + Sync + use<> {
    let attempts = Arc::clone(attempts);
    common::fallible(move |x: Counted, _: &Context| {
        if attempts[x.id].fetch_add(1, Ordering::SeqCst) == 0 {
            return Err(pipework::Transient::new("injected transient failure").into());
        }
        Ok(x)
    })
}

/// One extreme setting: a name, the pipeline, the run's options, what it must do.
struct Extreme {
    name: String,
    pipeline: Pipeline<'static, Counted>,
    timeout: Option<Duration>,
    progress: Option<Duration>,
    expect: Expect,
}

fn extreme(
    name: impl Into<String>,
    pipeline: Pipeline<'static, Counted>,
    expect: Expect,
) -> Extreme {
    Extreme {
        name: name.into(),
        pipeline,
        timeout: None,
        progress: None,
        expect,
    }
}

/// Every public constructor and option with 0, 1, `usize::MAX`, `Duration::ZERO`,
/// `Duration::MAX`, a 10 KB name and a name with a NUL byte: each gives a configuration error
/// before any thread starts, or a correct run (or, when the setting asks to wait for ever,
/// the run's time limit) — never a panic out of `run()`, a hang or an abort.
#[test]
fn every_constructor_and_option_takes_extreme_values() {
    let t = serial_test("extreme settings", 300);
    let baseline = t.baseline;
    let step = || common::fallible(pass as Step);
    let short = Duration::from_millis(200);
    let huge_name = "x".repeat(10 * 1024);
    let nul_name = "a\0b".to_owned();
    let mut cases = Vec::new();
    let stage = |p: Pipeline<'static, Counted>| p.stage("first", Fixed::new(2, step()));

    // The pipeline's queues, chunks and thread stacks.
    for (n, expect) in [
        (0, Expect::Config("capacity")),
        (1, Expect::Ok),
        (usize::MAX, Expect::Config("capacity")),
    ] {
        cases.push(extreme(
            format!("Pipeline::capacity({n})"),
            stage(Pipeline::new().capacity(n)),
            expect,
        ));
        let options = StageOptions::new().capacity(n);
        cases.push(extreme(
            format!("StageOptions::capacity({n})"),
            Pipeline::new().stage_with("first", Fixed::new(2, step()), options),
            expect,
        ));
    }
    for (n, expect) in [
        (0, Expect::Config("max_chunk")),
        (1, Expect::Ok),
        (usize::MAX, Expect::Ok),
    ] {
        cases.push(extreme(
            format!("Pipeline::max_chunk({n})"),
            stage(Pipeline::new().max_chunk(n)),
            expect,
        ));
    }
    for (n, expect) in [
        (0, Expect::Config("stack")),
        (1, Expect::Config("stack")),
        (usize::MAX, Expect::OkOrRefused),
    ] {
        cases.push(extreme(
            format!("Pipeline::stack_size({n})"),
            stage(Pipeline::new().stack_size(n)),
            expect,
        ));
    }
    // Pool sizes and the reorder window.
    for (n, expect) in [
        (0, Expect::Config("worker")),
        (1, Expect::Ok),
        (usize::MAX, Expect::Config("worker")),
    ] {
        cases.push(extreme(
            format!("Fixed::new({n})"),
            Pipeline::new().stage("first", Fixed::new(n, step())),
            expect,
        ));
        cases.push(extreme(
            format!("Ordered::new({n})"),
            Pipeline::new().stage("first", Ordered::new(n, step())),
            expect,
        ));
        cases.push(extreme(
            format!("Dynamic::new({n})"),
            Pipeline::new().stage("first", Dynamic::new(n, step())),
            expect,
        ));
    }
    for (w, expect) in [
        (0, Expect::Config("window")),
        (1, Expect::Ok),
        (usize::MAX, Expect::Config("window")),
    ] {
        cases.push(extreme(
            format!("Ordered::window({w})"),
            Pipeline::new().stage("first", Ordered::new(2, step()).window(w)),
            expect,
        ));
    }
    for idle in [Duration::ZERO, Duration::MAX] {
        cases.push(extreme(
            format!("Dynamic::idle_timeout({idle:?})"),
            Pipeline::new().stage("first", Dynamic::new(4, step()).idle_timeout(idle)),
            Expect::Ok,
        ));
    }
    // Batches.
    for size in [0, 1, usize::MAX] {
        for wait in [Duration::ZERO, Duration::MAX] {
            let expect = if size == 0 {
                Expect::Config("size")
            } else {
                Expect::Ok
            };
            cases.push(extreme(
                format!("Batch::new({size}, {wait:?})"),
                Pipeline::new().stage(
                    "first",
                    Batch::new(size, wait, pipework::flat_map(|b: Vec<Counted>| b)),
                ),
                expect,
            ));
        }
    }
    // Retries: each item fails its first attempt with a transient error.
    let attempts: Arc<Vec<AtomicU32>> = Arc::new((0..ITEMS).map(|_| AtomicU32::new(0)).collect());
    for n in [0, 1, u32::MAX] {
        for backoff in [Duration::ZERO, Duration::MAX] {
            for max_backoff in [Duration::ZERO, Duration::MAX] {
                let retry = pipework::Retry::new(n)
                    .backoff(backoff)
                    .max_backoff(max_backoff);
                // No retry: the transient error fails the stage. A retry that waits
                // `Duration::MAX` waits until the time limit.
                let expect = if n == 0 {
                    Expect::StageError
                } else if backoff == Duration::MAX && max_backoff == Duration::MAX {
                    Expect::Deadline
                } else {
                    Expect::Ok
                };
                let mut case = extreme(
                    format!("Retry::new({n}).backoff({backoff:?}).max_backoff({max_backoff:?})"),
                    Pipeline::new().stage_with(
                        "first",
                        Fixed::new(2, flaky(&attempts)),
                        StageOptions::new().retry(retry),
                    ),
                    expect,
                );
                case.timeout = Some(short);
                cases.push(case);
            }
        }
    }
    // The run's time limit and progress reports.
    for (limit, expect) in [
        (Duration::ZERO, Expect::OkOrDeadline),
        (Duration::from_nanos(1), Expect::OkOrDeadline),
        (Duration::MAX, Expect::Ok),
    ] {
        let mut case = extreme(
            format!("Job::timeout({limit:?})"),
            stage(Pipeline::new()),
            expect,
        );
        case.timeout = Some(limit);
        cases.push(case);
    }
    for every in [Duration::ZERO, Duration::from_nanos(1), Duration::MAX] {
        let mut case = extreme(
            format!("Job::on_progress({every:?})"),
            stage(Pipeline::new()),
            Expect::Ok,
        );
        case.progress = Some(every);
        cases.push(case);
    }
    // Names.
    for name in [String::new(), huge_name.clone(), nul_name.clone()] {
        let shown = if name.len() > 16 {
            format!("{} bytes", name.len())
        } else {
            format!("{name:?}")
        };
        cases.push(extreme(
            format!("a stage named {shown}"),
            Pipeline::new()
                .stage(name.clone(), Fixed::new(2, step()))
                .stage(name.clone(), Dynamic::new(2, step()))
                .stage(name.clone(), Ordered::new(2, step()))
                .stage(
                    name,
                    Broadcast::new()
                        .branch(Fifo::new(step()))
                        .branch(Fixed::new(1, step())),
                ),
            Expect::Ok,
        ));
    }
    // A name is carried into errors as it is.
    let failing = Pipeline::new().stage(
        huge_name.clone(),
        Fixed::new(2, common::fallible(fail_first as Step)),
    );
    let err = failing.run(Book::new().items(), |_| Ok(())).unwrap_err();
    assert_eq!(
        err.stage().map(pipework::StageId::name),
        Some(huge_name.as_str())
    );

    let mut ran = 0;
    for case in &cases {
        for a in attempts.iter() {
            a.store(0, Ordering::SeqCst);
        }
        let progressed = AtomicUsize::new(0);
        let (result, book, _) = self::case(&case.name, baseline, |book| {
            let mut job = case.pipeline.job();
            if let Some(limit) = case.timeout {
                job = job.timeout(limit);
            }
            if let Some(every) = case.progress {
                job = job.on_progress(every, |_| {
                    progressed.fetch_add(1, Ordering::Relaxed);
                });
            }
            let items = book.items();
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                job.run(items, |_| Ok(()))
            })) {
                Ok(result) => result,
                Err(payload) => panic!(
                    "{}: a panic escaped run(): {:?}",
                    case.name,
                    payload
                        .downcast_ref::<String>()
                        .map(String::as_str)
                        .or(payload.downcast_ref::<&str>().copied())
                ),
            }
        });
        let name = &case.name;
        let deadline = |r: &Result<Report, Error>| matches!(r, Err(e) if matches!(e.kind(), ErrorKind::Deadline { .. }));
        let sunk_all = |r: &Report| r.totals().sunk == ITEMS as u64 + r.totals().copies;
        match case.expect {
            Expect::Config(says) => {
                let stage = match &result {
                    Err(e) => e.stage().map(|s| s.name().to_owned()),
                    Ok(_) => None,
                };
                assert_config(name, &result, &book, stage.as_deref(), says);
            }
            Expect::Ok => {
                let report = result.unwrap_or_else(|e| panic!("{name}: {e}"));
                assert!(sunk_all(&report), "{name}: {report}");
            }
            Expect::Deadline => assert!(deadline(&result), "{name}: {result:?}"),
            Expect::OkOrDeadline => match &result {
                Ok(report) => assert!(sunk_all(report), "{name}: {report}"),
                r => assert!(deadline(r), "{name}: {r:?}"),
            },
            Expect::StageError => assert!(
                matches!(&result, Err(e) if matches!(e.kind(), ErrorKind::Stage { error, .. }
                    if error.to_string() == "injected transient failure")),
                "{name}: {result:?}"
            ),
            Expect::OkOrRefused => match &result {
                Ok(report) => assert!(sunk_all(report), "{name}: {report}"),
                Err(e) => assert!(format!("{e:#}").contains("cannot start"), "{name}: {e:#}"),
            },
        }
        ran += 1;
    }
    eprintln!("extreme settings: {ran} cases");
}
