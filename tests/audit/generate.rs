//! Random cases, for proptest (`random.rs`) and the soak (`soak.rs`): a *definition* (the
//! stages, the pipeline's settings, faults of stages as a whole) and *runs* of it (items,
//! faults of items, user values whose `Drop` panics, progress, a time limit), so that one
//! definition can serve many runs.

use std::time::Duration;

use proptest::prelude::*;

use super::MAX_STAGES;
use super::case::{Case, Fault, Kind, Name, Runner, Site, StageSpec, UserDrops};

pub const MAX_WORKERS: usize = 4;
pub const MAX_CAPACITY: usize = 8;
pub const MAX_ITEMS: u32 = 2000;
pub const MAX_FAULTS: usize = 2;
pub const MAX_BRANCHES: usize = 3;
/// Copies per item at most (the product of the broadcasts' widths), to keep cases short.
pub const MAX_FAN_OUT: usize = 9;
/// A stall, shorter than the matrix's: thousands of cases.
pub const STALL: Duration = Duration::from_millis(2);
/// The most items of a run whose progress is reported every `Duration::ZERO`.
const SHORT_ITEMS: u32 = 200;
/// A large reorder window, now and then.
const LARGE_WINDOW: usize = 64;

/// A runner of a stage that is not a broadcast, or of a broadcast's branch.
fn plain_runner() -> impl Strategy<Value = Runner> {
    let window = prop_oneof![9 => 1..=3usize, 1 => Just(LARGE_WINDOW)];
    prop_oneof![
        Just(Runner::Fifo),
        Just(Runner::FifoTryMap),
        Just(Runner::FifoFilterMap),
        (1..=MAX_WORKERS).prop_map(Runner::Fixed),
        (1..=MAX_WORKERS).prop_map(Runner::Dynamic),
        (1..=MAX_WORKERS, window).prop_map(|(n, w)| Runner::Ordered(n, w)),
    ]
}

fn stage() -> impl Strategy<Value = StageSpec> {
    let runner = prop_oneof![
        3 => plain_runner(),
        1 => prop::collection::vec(plain_runner(), 1..=MAX_BRANCHES).prop_map(Runner::Broadcast),
    ];
    let name = prop_oneof![18 => Just(Name::Plain), 1 => Just(Name::Huge), 1 => Just(Name::Nul)];
    let idle = prop_oneof![
        8 => Just(None),
        1 => Just(Some(Duration::ZERO)),
        1 => Just(Some(Duration::MAX)),
    ];
    (
        runner,
        prop::bool::weighted(0.3),
        prop::bool::weighted(0.1),
        prop::option::weighted(0.2, 1..=MAX_CAPACITY),
        name,
        idle,
    )
        .prop_map(|(runner, routes, retry, capacity, name, idle)| StageSpec {
            runner,
            routes,
            retry,
            capacity,
            name,
            idle,
        })
}

/// A definition: stages, the pipeline's capacity and chunking, and now and then a fault of
/// a stage as a whole (its init closure, its runner's `start`). No items.
pub fn definition() -> impl Strategy<Value = Case> {
    let max_chunk = prop_oneof![
        4 => Just(None),
        4 => (1..=8usize).prop_map(Some),
        1 => Just(Some(usize::MAX)),
    ];
    let stage_fault = prop::option::weighted(0.05, (any::<u8>(), 0..4u8));
    (
        prop::collection::vec(stage(), 1..=MAX_STAGES),
        1..=MAX_CAPACITY,
        max_chunk,
        stage_fault,
    )
        .prop_map(|(mut stages, capacity, max_chunk, stage_fault)| {
            // Keep the copies per item bounded: later broadcasts lose branches.
            let mut fan_out = 1;
            for s in &mut stages {
                if let Runner::Broadcast(branches) = &mut s.runner {
                    while fan_out * branches.len() > MAX_FAN_OUT {
                        branches.pop();
                    }
                    fan_out *= branches.len();
                }
            }
            let n = stages.len();
            let mut case = Case::new(stages, 0);
            case.capacity = Some(capacity);
            case.max_chunk = max_chunk;
            case.stall = STALL;
            if let Some((s, k)) = stage_fault {
                let kind = [
                    Kind::InitPanic,
                    Kind::InitError,
                    Kind::StartPanic,
                    Kind::StartPanicAfter,
                ][usize::from(k)];
                case.faults.push(Fault {
                    site: Site::Stage(usize::from(s) % n),
                    kind,
                    item: 0,
                    path: [0; MAX_STAGES],
                });
            }
            case
        })
}

/// A fault before it is fitted to the case: which site, which kind, which item and branch.
type FaultSeed = (u8, u8, u32, [u8; MAX_STAGES]);

/// What strikes a stage's unit besides its processor's call (see
/// `Runner::processor_kinds`): its `Clone` and `Drop`.
const UNIT_KINDS: [Kind; 2] = [Kind::ClonePanic, Kind::DropPanic];

/// Fits a fault to the case: a site among source, stages and sink, a kind that makes sense
/// there (for a stage, its runner's, or its branch's), an item of the input, a branch of
/// each broadcast.
fn fault(stages: &[StageSpec], items: u32, (site, kind, item, path): FaultSeed) -> Fault {
    let n = stages.len();
    let site = match usize::from(site) % (n + 2) {
        0 => Site::Source,
        s if s <= n => Site::Stage(s - 1),
        _ => Site::Sink,
    };
    let mut fitted = [0; MAX_STAGES];
    for (s, spec) in stages.iter().enumerate() {
        fitted[s] = path[s] % spec.runner.width() as u8;
    }
    let stage_kinds: Vec<Kind>;
    let kinds: &[Kind] = match site {
        Site::Stage(s) => {
            let runner = match &stages[s].runner {
                Runner::Broadcast(branches) => &branches[usize::from(fitted[s])],
                runner => runner,
            };
            stage_kinds = [runner.processor_kinds(), &UNIT_KINDS].concat();
            &stage_kinds
        }
        Site::Source | Site::Sink => &[Kind::Panic, Kind::Error, Kind::Stall],
    };
    Fault {
        site,
        kind: kinds[usize::from(kind) % kinds.len()],
        item: item % items.max(1),
        path: fitted,
    }
}

/// A run of `definition`: its items, faults of items, user values whose `Drop` panics,
/// progress reports and a time limit (extreme ones among them).
pub fn run_of(definition: Case) -> impl Strategy<Value = Case> {
    let items = prop_oneof![3 => 0..=200u32, 1 => 0..=MAX_ITEMS];
    let drop = || prop::bool::weighted(0.03);
    let drops = (drop(), drop(), drop()).prop_map(|(source, sink, progress)| UserDrops {
        source,
        sink,
        progress,
    });
    let progress = prop_oneof![
        7 => Just(None),
        1 => Just(Some(Duration::ZERO)),
        1 => Just(Some(Duration::from_millis(1))),
        1 => Just(Some(Duration::MAX)),
    ];
    let timeout = prop_oneof![
        17 => Just(None),
        1 => Just(Some(Duration::ZERO)),
        2 => Just(Some(Duration::MAX)),
    ];
    (
        items,
        prop::collection::vec(any::<FaultSeed>(), 0..=MAX_FAULTS),
        drops,
        progress,
        timeout,
    )
        .prop_map(move |(items, seeds, drops, progress, timeout)| {
            // A report on every turn of the calling thread's loop costs about half a
            // millisecond per chunk in a debug build: such runs stay short.
            let items = if progress == Some(Duration::ZERO) {
                items.min(SHORT_ITEMS)
            } else {
                items
            };
            let mut case = definition.clone();
            case.items = items;
            let mut bombs = 0;
            for seed in seeds {
                let mut f = fault(&case.stages, items, seed);
                // One drop bomb at most: the engine reports the first panic of the drops it
                // does at once, and a second bomb in one chunk would be dropped while the
                // first unwinds (quietly, but uncounted).
                if f.kind == Kind::DropPanic {
                    bombs += 1;
                    if bombs > 1 {
                        f.kind = Kind::Stall;
                    }
                }
                case.faults.push(f);
            }
            case.drops = drops;
            case.progress = progress;
            case.timeout = timeout;
            case
        })
}

/// A definition and one run of it.
pub fn case() -> impl Strategy<Value = Case> {
    definition().prop_flat_map(run_of)
}

/// A definition whose pools keep order: fixed and dynamic pools become ordered pools of at
/// least two workers (broadcast branches stay as they are).
fn ordered_definition() -> impl Strategy<Value = Case> {
    definition().prop_map(|mut case| {
        for s in &mut case.stages {
            if let Runner::Fixed(n) | Runner::Dynamic(n) = s.runner {
                s.runner = Runner::Ordered(n.max(2), 2);
            }
        }
        case
    })
}

/// A run with a cost shift: besides the run's faults, 4–12 consecutive items stall at one
/// stage, so that a worker of an ordered pool is stuck in a chunk of slow items and its
/// siblings borrow the rest (see `transport::inbox` in the crate).
fn cost_shift_of(definition: Case) -> impl Strategy<Value = Case> {
    (run_of(definition), any::<u8>(), 4..=12u32, any::<u32>()).prop_map(
        |(mut case, stage, len, at)| {
            if case.items > 0 {
                let site = Site::Stage(usize::from(stage) % case.stages.len());
                let first = at % case.items;
                // After the run's own faults, which therefore strike first where both do.
                for item in first..(first + len).min(case.items) {
                    case.faults.push(Fault {
                        site,
                        kind: Kind::Stall,
                        item,
                        path: [0; MAX_STAGES],
                    });
                }
            }
            case
        },
    )
}

/// An order-keeping definition and one run of it with a cost shift.
pub fn cost_shift_case() -> impl Strategy<Value = Case> {
    ordered_definition().prop_flat_map(cost_shift_of)
}
