//! The runner contract the engine enforces on every runner, user-written ones included:
//! no hang, no escaping panic, no unbalanced report, whatever the runner does.

mod common;

use common::{quiet_injected_panics, watchdog};
use pipework::{
    Context, ErrorKind, Fixed, Pipeline,
    runner::{StageHandle, StageRunner},
};

/// What a misbehaving runner does.
#[derive(Clone, Copy)]
enum Misbehaviour {
    /// `start` spawns nothing.
    NoWorker,
    /// The worker takes three items, then returns while the input goes on.
    QuitEarly,
    /// `start` panics.
    PanicInStart,
    /// The worker takes every item with `recv` and drops it without processing it.
    DropItems,
    /// The worker processes one item, takes another, and fails the stage without
    /// processing it.
    Fail,
    /// `start` drops its handle while a panic unwinds, and catches the panic: no thread,
    /// and no error.
    SwallowPanic,
}

struct Rogue(Misbehaviour);

impl StageRunner<u64, u64> for Rogue {
    fn kind(&self) -> &'static str {
        "rogue"
    }

    fn start<'scope>(&'scope self, stage: StageHandle<'scope, '_, u64, u64>) {
        let mut identity = common::fallible(|x: u64, _: &Context| Ok(x));
        match self.0 {
            Misbehaviour::NoWorker => {}
            Misbehaviour::SwallowPanic => {
                let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
                    let _dropped_while_unwinding = stage;
                    panic!("injected panic that start catches");
                }));
                assert!(caught.is_err());
            }
            Misbehaviour::PanicInStart => panic!("start went wrong"),
            Misbehaviour::QuitEarly => {
                stage.spawn(move |mut w| {
                    for _ in 0..3 {
                        let Some(x) = w.recv() else { return };
                        w.process(&mut identity, x);
                    }
                });
            }
            Misbehaviour::DropItems => {
                stage.spawn(|mut w| while w.recv().is_some() {});
            }
            Misbehaviour::Fail => {
                stage.spawn(move |mut w| {
                    if let Some(x) = w.recv() {
                        w.process(&mut identity, x);
                    }
                    if let Some(_unprocessed) = w.recv() {
                        w.fail("rogue gave up".into());
                    }
                });
            }
        }
    }
}

fn rogue(how: Misbehaviour) -> Pipeline<'static, u64> {
    Pipeline::new()
        .stage(
            "before",
            Fixed::new(2, common::fallible(|x: u64, _: &Context| Ok(x))),
        )
        .stage("rogue", Rogue(how))
        .stage(
            "after",
            Fixed::new(2, common::fallible(|x: u64, _: &Context| Ok(x))),
        )
}

#[test]
fn a_runner_that_starts_no_worker_fails_the_run_instead_of_hanging() {
    let _dog = watchdog("no worker", 20);
    for source_len in [0u64, 1, 10_000] {
        // Even with nothing to read: whether the input ends first is a race, and the
        // outcome must not depend on it.
        let err = rogue(Misbehaviour::NoWorker)
            .run(0..source_len, |_| Ok(()))
            .unwrap_err();
        assert_eq!(
            err.stage().map(pipework::StageId::name),
            Some("rogue"),
            "{err}"
        );
        assert!(err.to_string().contains("runner failed"), "{err}");
        assert!(err.report().unwrap().totals().is_balanced());
    }
    let err = rogue(Misbehaviour::NoWorker)
        .run(common::endless(), |_| Ok(()))
        .unwrap_err();
    assert_eq!(
        err.stage().map(pipework::StageId::name),
        Some("rogue"),
        "{err}"
    );
}

/// Found while porting the fault audit: the last reference to a lane dropped during a
/// panic was never checked (the panic was taken to be reported), so a `start` that dropped
/// its handle inside a panic it caught itself left upstream blocked for ever.
#[test]
fn a_runner_that_drops_its_handle_in_a_panic_it_catches_fails_the_run_instead_of_hanging() {
    let _dog = watchdog("handle dropped in a caught panic", 20);
    quiet_injected_panics();
    for source_len in [0u64, 10_000] {
        let err = rogue(Misbehaviour::SwallowPanic)
            .run(0..source_len, |_| Ok(()))
            .unwrap_err();
        assert!(matches!(err.kind(), ErrorKind::Runner { .. }), "{err}");
        assert_eq!(
            err.stage().map(pipework::StageId::name),
            Some("rogue"),
            "{err}"
        );
        assert!(err.report().unwrap().totals().is_balanced());
    }
    // As a broadcast's branch.
    let p = Pipeline::new().stage(
        "fan",
        pipework::Broadcast::new()
            .branch(Fixed::new(1, common::fallible(|x: u64, _: &Context| Ok(x))))
            .branch(Rogue(Misbehaviour::SwallowPanic)),
    );
    let err = p.run(common::endless(), |_| Ok(())).unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::Runner { .. }), "{err}");
    assert!(err.report().unwrap().totals().is_balanced());
}

#[test]
fn a_runner_whose_workers_quit_early_fails_the_run_instead_of_hanging() {
    let _dog = watchdog("quit early", 20);
    for source_len in [10u64, 10_000] {
        let err = rogue(Misbehaviour::QuitEarly)
            .run(0..source_len, |_| Ok(()))
            .unwrap_err();
        assert_eq!(
            err.stage().map(pipework::StageId::name),
            Some("rogue"),
            "{err}"
        );
        assert!(err.to_string().contains("runner failed"), "{err}");
        assert!(err.report().unwrap().totals().is_balanced());
    }
    let err = rogue(Misbehaviour::QuitEarly)
        .run(common::endless(), |_| Ok(()))
        .unwrap_err();
    assert_eq!(
        err.stage().map(pipework::StageId::name),
        Some("rogue"),
        "{err}"
    );
}

#[test]
fn a_panic_in_start_is_caught_and_names_the_stage() {
    let _dog = watchdog("panic in start", 20);
    quiet_injected_panics();
    for _ in 0..3 {
        // A source that never ends: the run must still be cancelled and joined.
        let err = rogue(Misbehaviour::PanicInStart)
            .run(common::endless(), |_| Ok(()))
            .unwrap_err();
        assert!(matches!(err.kind(), ErrorKind::Panic { .. }), "{err}");
        assert_eq!(
            err.stage().map(pipework::StageId::name),
            Some("rogue"),
            "{err}"
        );
        assert!(err.to_string().contains("start went wrong"), "{err}");
        assert!(err.report().unwrap().totals().is_balanced());
    }
}

#[test]
fn items_a_runner_drops_are_still_counted() {
    let _dog = watchdog("dropped items", 20);
    let report = rogue(Misbehaviour::DropItems)
        .run(0..5_000u64, |_| Ok(()))
        .unwrap();
    let totals = report.totals();
    assert!(totals.is_balanced(), "{report}");
    assert_eq!(totals.sunk, 0);
    assert_eq!(report.stages[1].received, 5_000);
    assert_eq!(report.stages[1].filtered, 5_000);
}

#[test]
fn a_runner_that_fails_leaves_a_balanced_report() {
    let _dog = watchdog("fail", 20);
    for source_len in [2u64, 5_000] {
        let err = rogue(Misbehaviour::Fail)
            .run(0..source_len, |_| Ok(()))
            .unwrap_err();
        assert!(format!("{err:#}").contains("rogue gave up"), "{err:#}");
        let report = err.report().unwrap();
        assert!(report.totals().is_balanced(), "{report}");
    }
}

#[test]
fn a_rogue_broadcast_branch_is_caught_too() {
    let _dog = watchdog("rogue branch", 20);
    let p = Pipeline::new().stage(
        "fan",
        pipework::Broadcast::new()
            .branch(Fixed::new(1, common::fallible(|x: u64, _: &Context| Ok(x))))
            .branch(Rogue(Misbehaviour::QuitEarly)),
    );
    let err = p.run(0..10_000u64, |_| Ok(())).unwrap_err();
    assert_eq!(
        err.stage().map(pipework::StageId::name),
        Some("fan"),
        "{err}"
    );
    assert!(err.report().unwrap().totals().is_balanced());
}
