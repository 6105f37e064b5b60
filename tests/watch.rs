//! The run's watcher thread (`StageHandle::watch`): periodic jobs of every stage on one
//! thread, nudged at once, ended with their stage, their panics the stage's errors.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use pipework::{
    Context, Dynamic, ErrorKind, Pipeline, Site,
    runner::{StageHandle, StageRunner, Watch},
};

/// Sets its flag when dropped: tells whether a job (which owns it) has ended.
struct Ended(Arc<AtomicBool>);

impl Drop for Ended {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Starts one worker that passes every item on, until its input ends or the run is
/// cancelled.
fn spawn_identity(stage: &StageHandle<'_, '_, u64, u64>) {
    stage.spawn(|mut w| {
        let mut identity = common::fallible(|x: u64, _: &Context| Ok(x));
        while let Some(x) = w.recv() {
            w.process(&mut identity, x);
        }
    });
}

/// Checks that `err` is a panic at stage `name` whose message contains `message`.
fn assert_stage_panic(err: &pipework::Error, name: &str, message: &str) {
    match err.kind() {
        ErrorKind::Panic {
            site: Site::Stage { stage, .. },
            message: got,
        } => {
            assert_eq!(stage.name(), name);
            assert!(got.contains(message), "{got}");
        }
        other => panic!("expected a panic at stage {name}, got {other:?}"),
    }
}

/// One worker, and a watch with a long period whose calls it counts. The worker nudges
/// the watch at the first item and waits for the call; the job never returns false.
struct Nudging {
    calls: Arc<AtomicUsize>,
    ended: Arc<AtomicBool>,
    nudged_in: Arc<OnceLock<Duration>>,
}

impl StageRunner<u64, u64> for Nudging {
    fn kind(&self) -> &'static str {
        "nudging"
    }

    fn start<'scope>(&'scope self, stage: StageHandle<'scope, '_, u64, u64>) {
        // The watch first, with the stage's thread to come: a job ends only once the
        // threads its stage started have all ended.
        let calls = Arc::clone(&self.calls);
        let ended = Ended(Arc::clone(&self.ended));
        let job = stage.watch(Duration::from_secs(3600), move || {
            let _owned = &ended;
            calls.fetch_add(1, Ordering::SeqCst);
            true
        });
        let watch: Watch<'scope> = job.expect("the watch starts");
        stage.spawn(move |mut w| {
            let mut identity = common::fallible(|x: u64, _: &Context| Ok(x));
            while let Some(x) = w.recv() {
                if x == 0 {
                    let asked = Instant::now();
                    watch.nudge();
                    while self.calls.load(Ordering::SeqCst) == 0
                        && asked.elapsed() < Duration::from_secs(10)
                    {
                        std::thread::sleep(Duration::from_micros(100));
                    }
                    let _ = self.nudged_in.set(asked.elapsed());
                }
                w.process(&mut identity, x);
            }
        });
    }
}

#[test]
fn a_nudge_runs_a_watch_at_once_and_a_job_ends_with_its_stage() {
    let _serial = common::serial_test("nudge", 30);
    let calls = Arc::new(AtomicUsize::new(0));
    let ended = Arc::new(AtomicBool::new(false));
    let nudged_in = Arc::new(OnceLock::new());
    let runner = Nudging {
        calls: Arc::clone(&calls),
        ended: Arc::clone(&ended),
        nudged_in: Arc::clone(&nudged_in),
    };
    let p = Pipeline::new().stage("nudged", runner);
    let (out, _) = p.collect(0..1_000u64).unwrap();
    assert_eq!(out, (0..1_000u64).collect::<Vec<_>>());
    let waited = *nudged_in.get().expect("the worker saw item 0");
    assert!(
        waited < Duration::from_secs(5),
        "a nudge ran the hour-period job after {waited:?}"
    );
    assert!(calls.load(Ordering::SeqCst) >= 1);
    // The job never returned false: it ended with its stage, and the run returned.
    assert!(ended.load(Ordering::SeqCst), "the job outlived the run");
}

/// A stage whose watch panics at its first call, with a worker that runs until cancelled.
struct PanickingWatch;

impl StageRunner<u64, u64> for PanickingWatch {
    fn kind(&self) -> &'static str {
        "panicking-watch"
    }

    fn start<'scope>(&'scope self, stage: StageHandle<'scope, '_, u64, u64>) {
        spawn_identity(&stage);
        let _ = stage.watch(Duration::from_millis(1), || {
            panic!("injected panic in a watch")
        });
    }
}

#[test]
fn a_panic_in_a_watch_is_its_stage_s_error_and_cancels_the_run() {
    let _serial = common::serial_test("watch panic", 30);
    common::quiet_injected_panics();
    let p = Pipeline::new()
        .stage(
            "first",
            Dynamic::new(2, common::fallible(|x: u64, _: &Context| Ok(x))),
        )
        .stage("watched", PanickingWatch);
    let err = p.run(common::endless(), |_| Ok(())).unwrap_err();
    assert_stage_panic(&err, "watched", "injected panic in a watch");
}

#[cfg(target_os = "linux")]
#[test]
fn the_dynamic_stages_of_a_run_share_one_watcher_thread() {
    // Serial: the other tests' runs have watcher threads of their own.
    let _serial = common::serial_test("one watcher", 30);
    let seen = std::sync::Mutex::new(Vec::new());
    let slow = |x: u64, _: &Context| {
        std::thread::sleep(Duration::from_micros(20));
        Ok(x)
    };
    let p = Pipeline::new()
        .stage("d0", Dynamic::new(4, common::fallible(slow)))
        .stage("d1", Dynamic::new(4, common::fallible(slow)))
        .stage("d2", Dynamic::new(4, common::fallible(slow)))
        .stage(
            "d3",
            Dynamic::new(
                4,
                common::fallible(|x: u64, _: &Context| {
                    if x == 300 {
                        let names: Vec<String> = common::thread_names("")
                            .into_iter()
                            // The run's watcher, or a stage's own ("d0-watch#1").
                            .filter(|name| name == "pipework-watch" || name.contains("-watch#"))
                            .collect();
                        *seen.lock().unwrap() = names;
                    }
                    Ok(x)
                }),
            ),
        );
    let (mut out, _) = p.collect(0..600u64).unwrap();
    out.sort_unstable();
    assert_eq!(out, (0..600u64).collect::<Vec<_>>());
    assert_eq!(
        *seen.lock().unwrap(),
        ["pipework-watch"],
        "the run's watcher threads, seen from inside it"
    );
}

/// A value whose `Drop` panics, captured by a watch job.
struct PanicsOnDrop;

impl Drop for PanicsOnDrop {
    fn drop(&mut self) {
        panic!("injected panic in the drop of a watch job");
    }
}

/// A stage whose watch job ends at its first call and panics as it is dropped.
struct DropPanickingWatch;

impl StageRunner<u64, u64> for DropPanickingWatch {
    fn kind(&self) -> &'static str {
        "drop-panicking-watch"
    }

    fn start<'scope>(&'scope self, stage: StageHandle<'scope, '_, u64, u64>) {
        spawn_identity(&stage);
        let captured = PanicsOnDrop;
        let _ = stage.watch(Duration::from_millis(1), move || {
            let _owned = &captured;
            false
        });
    }
}

#[test]
fn a_panic_in_the_drop_of_a_watch_job_is_its_stage_s_error() {
    // The watcher thread serves every stage's jobs: a job's drop must not end it (the
    // panic would be lost and the run, whose source never ends, would hang).
    let _serial = common::serial_test("watch drop panic", 30);
    let p = Pipeline::new().stage("dropped", DropPanickingWatch);
    let err = p.run(common::endless(), |_| Ok(())).unwrap_err();
    assert_stage_panic(&err, "dropped", "drop of a watch job");
}
