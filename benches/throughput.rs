//! Throughput, latency and memory of pipework against baselines measured in the same run.
//!
//! ```text
//! cargo bench --bench throughput              # full sizes, 5 rounds per figure
//! cargo bench --bench throughput -- --quick   # scaled down, a CI smoke test (< 60 s)
//! ```
//!
//! Seven workloads, W1–W7 (see each function). Every figure is the median of several rounds,
//! and the variants of a comparison run interleaved, round by round, so that a change in the
//! machine's load (this may share two cores with a build) hits all of them alike.
//!
//! Besides the human tables, every figure is printed as one line `bench <workload> <metric>
//! <value>` for scripts. A summary at the end compares the figures with their targets; a
//! missed target is reported, not fatal, but a wrong result (a checksum) exits non-zero.

use std::cell::Cell;
use std::fmt::Display;
use std::hint::black_box;
use std::process::{Command, ExitCode, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::bounded;
use pariter::IteratorExt as _;
use pipework::{
    BoxError, Context, Dynamic, Fifo, Fixed, IntoSource, Ordered, Pipeline, Report, StageRunner,
};
use rayon::prelude::*;

/// The hidden argument that turns this binary into a W7 child process.
const W7_CHILD: &str = "--w7-child";

/// pipework's default queue bound: 16 chunks of at most 256 items. The hand-written chains
/// get the same bound so that they hold as much memory as pipework does.
const QUEUE_CHUNKS: usize = 16;
const CHUNK_ITEMS: usize = 256;

/// Sizes and round counts of one mode.
struct Mode {
    quick: bool,
    /// Rounds per figure (W4 excepted).
    rounds: usize,
    /// Rounds of W4, whose single run takes 2 s.
    w4_rounds: usize,
    /// Items of W1 and W2 (pipework, the sequential loop and the chunk chain).
    w1_items: u64,
    /// Items of the per-item chain in W1 and W2: it is too slow for the full count, so it
    /// runs on fewer and its rate is compared.
    item_chain_items: u64,
    /// Items of W3.
    w3_items: u64,
    /// Items of W5.
    w5_items: u64,
    /// Items of W6, one per millisecond.
    w6_items: u32,
    /// Items of W7's large and small runs.
    w7_large: u64,
    w7_small: u64,
}

impl Mode {
    fn full() -> Self {
        Mode {
            quick: false,
            rounds: 5,
            w4_rounds: 3,
            w1_items: 10_000_000,
            item_chain_items: 1_000_000,
            w3_items: 200_000,
            w5_items: 640,
            w6_items: 2_000,
            w7_large: 10_000_000,
            w7_small: 100_000,
        }
    }

    fn quick() -> Self {
        Mode {
            quick: true,
            rounds: 3,
            w4_rounds: 1,
            w1_items: 1_000_000,
            item_chain_items: 100_000,
            w3_items: 20_000,
            // W5 takes 0.1 s a round at full size; smaller, its ratio would mostly measure
            // thread start-up.
            w5_items: 640,
            w6_items: 300,
            w7_large: 1_000_000,
            w7_small: 10_000,
        }
    }
}

fn main() -> ExitCode {
    // `cargo bench` adds `--bench` to the arguments; anything not ours is ignored.
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == W7_CHILD) {
        let n = args.get(i + 1).and_then(|s| s.parse().ok());
        return match n {
            Some(n) => w7_child(n),
            None => {
                eprintln!("usage: {W7_CHILD} ITEMS");
                ExitCode::FAILURE
            }
        };
    }
    if args.iter().any(|a| a == "--scaling") {
        return scaling();
    }
    let mode = if args.iter().any(|a| a == "--quick") {
        Mode::quick()
    } else {
        Mode::full()
    };

    print_machine(&mode);
    let mut out = Out::default();
    let started = Instant::now();
    w1_trivial(&mode, &mut out);
    w2_pools(&mode, &mut out);
    w3_cpu_bound(&mode, &mut out);
    w8_ordered(&mode, &mut out);
    w4_article(&mode, &mut out);
    w5_fast_into_slow(&mode, &mut out);
    w6_trickle(&mode, &mut out);
    w7_memory(&mode, &mut out);
    out.print_summary();
    println!(
        "\ntotal bench time {:.1} s",
        started.elapsed().as_secs_f64()
    );

    if out.failed_checks > 0 {
        println!("{} RESULT CHECK(S) FAILED", out.failed_checks);
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Prints what the figures were measured on: they mean little without it.
fn print_machine(mode: &Mode) {
    let cpus = thread::available_parallelism().map_or(0, |n| n.get());
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown", |(_, m)| m.trim());
    // Other work may share the machine; the load average tells the reader how much.
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load = load
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    println!("pipework throughput bench");
    println!("machine: nproc {cpus}, cpu {model}, load average {load}");
    println!(
        "mode: {} ({} rounds per figure, W4 {})",
        if mode.quick { "quick" } else { "full" },
        mode.rounds,
        mode.w4_rounds
    );
}

// ---------------------------------------------------------------------------------------
// Reporting
// ---------------------------------------------------------------------------------------

/// What a figure is compared with in the summary.
#[derive(Clone, Copy)]
enum Target {
    AtLeast(f64),
    AtMost(f64),
    /// Reported for information only.
    None,
}

impl Target {
    fn describe(self) -> String {
        match self {
            Target::AtLeast(t) => format!(">= {t}"),
            Target::AtMost(t) => format!("<= {t}"),
            Target::None => "-".into(),
        }
    }

    fn verdict(self, value: f64) -> &'static str {
        match self {
            Target::AtLeast(t) if value >= t => "met",
            Target::AtMost(t) if value <= t => "met",
            Target::None => "-",
            _ => "missed",
        }
    }
}

/// One line of the summary.
struct Row {
    workload: &'static str,
    metric: String,
    value: f64,
    target: Target,
}

/// The figures and checks of the whole run.
#[derive(Default)]
struct Out {
    summary: Vec<Row>,
    failed_checks: usize,
}

impl Out {
    /// Prints one machine-readable figure.
    fn figure(&self, workload: &'static str, metric: &str, value: f64) {
        println!("bench {workload} {metric} {}", plain(value));
    }

    /// Prints a figure and puts it in the summary.
    fn headline(&mut self, workload: &'static str, metric: &str, value: f64, target: Target) {
        self.figure(workload, metric, value);
        self.summary.push(Row {
            workload,
            metric: metric.into(),
            value,
            target,
        });
    }

    /// Records a result check; a failure makes the process exit non-zero at the end.
    fn check(&mut self, ok: bool, what: impl Display) {
        if !ok {
            println!("RESULT CHECK FAILED: {what}");
            self.failed_checks += 1;
        }
    }

    fn print_summary(&self) {
        println!("\n== summary");
        println!(
            "  {:<4} {:<22} {:>12} {:>10}  result",
            "work", "figure", "value", "target"
        );
        for r in &self.summary {
            println!(
                "  {:<4} {:<22} {:>12} {:>10}  {}",
                r.workload,
                r.metric,
                plain(r.value),
                r.target.describe(),
                r.target.verdict(r.value)
            );
        }
    }
}

/// A float that any float parser reads: no thousands separators, an exponent for big rates.
fn plain(value: f64) -> String {
    if value != 0.0 && (value.abs() >= 1e6 || value.abs() < 1e-3) {
        format!("{value:.4e}")
    } else {
        format!("{value:.4}")
    }
}

fn median(mut xs: Vec<f64>) -> f64 {
    assert!(!xs.is_empty(), "median of nothing");
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

/// The nearest-rank percentile `p` (0 < p ≤ 1) of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

// ---------------------------------------------------------------------------------------
// Timed comparisons
// ---------------------------------------------------------------------------------------

/// One contender of a timed comparison: `run` does the whole job once and returns a
/// checksum, which must equal `expect`.
struct Variant<'a> {
    name: &'static str,
    items: u64,
    expect: u64,
    run: Box<dyn FnMut() -> u64 + 'a>,
}

impl<'a> Variant<'a> {
    fn new(name: &'static str, items: u64, expect: u64, run: impl FnMut() -> u64 + 'a) -> Self {
        Variant {
            name,
            items,
            expect,
            run: Box::new(run),
        }
    }
}

/// The wall times of one variant.
struct Timing {
    items: u64,
    median_s: f64,
}

impl Timing {
    fn rate(&self) -> f64 {
        self.items as f64 / self.median_s
    }
}

/// Runs every variant `rounds` times, interleaved, checks every checksum, prints a table and
/// each variant's items/s, and returns the median times.
fn measure<const N: usize>(
    out: &mut Out,
    workload: &'static str,
    rounds: usize,
    mut variants: [Variant<'_>; N],
) -> [Timing; N] {
    let mut secs: [Vec<f64>; N] = std::array::from_fn(|_| Vec::with_capacity(rounds));
    for _ in 0..rounds {
        for (v, secs) in variants.iter_mut().zip(&mut secs) {
            let started = Instant::now();
            let sum = (v.run)();
            secs.push(started.elapsed().as_secs_f64());
            out.check(
                sum == v.expect,
                format_args!(
                    "{workload} {}: checksum {sum}, expected {}",
                    v.name, v.expect
                ),
            );
        }
    }
    println!(
        "  {:<16} {:>10} {:>11} {:>12}   rounds (ms)",
        "variant", "items", "median", "items/s"
    );
    let timings: [Timing; N] = std::array::from_fn(|i| Timing {
        items: variants[i].items,
        median_s: median(secs[i].clone()),
    });
    for ((v, t), secs) in variants.iter().zip(&timings).zip(&secs) {
        let each: Vec<String> = secs.iter().map(|s| format!("{:.1}", s * 1e3)).collect();
        println!(
            "  {:<16} {:>10} {:>8.1} ms {:>12.4e}   {}",
            v.name,
            v.items,
            t.median_s * 1e3,
            t.rate(),
            each.join(" ")
        );
    }
    for (v, t) in variants.iter().zip(&timings) {
        out.figure(workload, &format!("{}_items_per_s", v.name), t.rate());
    }
    timings
}

/// Σ 0..n, the checksum of the identity workloads.
fn triangle(n: u64) -> u64 {
    n * n.saturating_sub(1) / 2
}

// ---------------------------------------------------------------------------------------
// Pipelines and baselines shared by the workloads
// ---------------------------------------------------------------------------------------

/// The stage of the identity workloads. `black_box` keeps the optimiser from seeing that
/// it does nothing.
fn identity<T>(item: T, _: &Context<'_>) -> Result<T, BoxError> {
    Ok(black_box(item))
}

/// Four stages of the runner `make` returns, named s1..s4.
fn chain4<T, R>(make: impl Fn() -> R) -> Pipeline<'static, T>
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

/// Runs `pipeline` and returns the sum of what reached the sink, and the run's report.
fn run_sum(pipeline: &Pipeline<'_, u64>, source: impl IntoSource<u64>) -> (u64, Report) {
    let mut sum = 0u64;
    let report = pipeline
        .run(source, |x: u64| {
            sum += x;
            Ok(())
        })
        .unwrap_or_else(|e| panic!("pipework run failed: {e}"));
    (sum, report)
}

/// The hand-written per-item chain: a source thread, four identity threads and the consumer
/// on the calling thread, linked by `bounded::<T>` channels of pipework's default capacity
/// in items.
fn item_chain<T: Send>(source: impl Iterator<Item = T> + Send, mut sink: impl FnMut(T)) {
    thread::scope(|s| {
        let (tx, mut rx) = bounded::<T>(QUEUE_CHUNKS * CHUNK_ITEMS);
        s.spawn(move || {
            for item in source {
                tx.send(item).expect("the chain's consumer hung up");
            }
        });
        for _ in 0..4 {
            let (next_tx, next_rx) = bounded::<T>(QUEUE_CHUNKS * CHUNK_ITEMS);
            let input = std::mem::replace(&mut rx, next_rx);
            s.spawn(move || {
                for item in input {
                    next_tx
                        .send(black_box(item))
                        .expect("the chain's consumer hung up");
                }
            });
        }
        for item in rx {
            sink(item);
        }
    });
}

/// The hand-written chunked chain over `0..n`: like `item_chain`, moving `Vec<u64>` chunks
/// of 256 on channels of 16 chunks — pipework's default memory bound, with no adaptation.
fn chunk_chain(n: u64) -> u64 {
    thread::scope(|s| {
        let (tx, mut rx) = bounded::<Vec<u64>>(QUEUE_CHUNKS);
        s.spawn(move || {
            let mut start = 0;
            while start < n {
                let end = n.min(start + CHUNK_ITEMS as u64);
                tx.send((start..end).collect())
                    .expect("the chain's consumer hung up");
                start = end;
            }
        });
        for _ in 0..4 {
            let (next_tx, next_rx) = bounded::<Vec<u64>>(QUEUE_CHUNKS);
            let input = std::mem::replace(&mut rx, next_rx);
            s.spawn(move || {
                for mut chunk in input {
                    for x in &mut chunk {
                        *x = black_box(*x);
                    }
                    next_tx.send(chunk).expect("the chain's consumer hung up");
                }
            });
        }
        rx.iter().map(|chunk| chunk.iter().sum::<u64>()).sum()
    })
}

/// The sequential baseline of W1/W2: the same four identity steps in one loop.
fn sequential_identity(n: u64) -> u64 {
    (0..n)
        .map(black_box)
        .map(black_box)
        .map(black_box)
        .map(black_box)
        .sum()
}

fn item_chain_sum(n: u64) -> u64 {
    let mut sum = 0;
    item_chain(0..n, |x| sum += x);
    sum
}

// ---------------------------------------------------------------------------------------
// The workloads
// ---------------------------------------------------------------------------------------

/// W1: the transport's cost alone — identity stages, nothing else to do.
fn w1_trivial(mode: &Mode, out: &mut Out) {
    let n = mode.w1_items;
    let m = mode.item_chain_items;
    println!("\n== W1 trivial: {n} u64 through 4 identity FIFO stages");
    let pipeline = chain4(|| Fifo::new(identity::<u64>));
    let last = Cell::new(None);
    let [pw, seq, item, chunk] = measure(
        out,
        "W1",
        mode.rounds,
        [
            Variant::new("pipework", n, triangle(n), || {
                let (sum, report) = run_sum(&pipeline, 0..n);
                last.set(Some(report));
                sum
            }),
            Variant::new("sequential", n, triangle(n), || sequential_identity(n)),
            Variant::new("item_chain", m, triangle(m), || item_chain_sum(m)),
            Variant::new("chunk_chain", n, triangle(n), || chunk_chain(n)),
        ],
    );
    out.figure("W1", "vs_sequential", pw.rate() / seq.rate());
    out.headline(
        "W1",
        "vs_item_chain",
        pw.rate() / item.rate(),
        Target::AtLeast(20.0),
    );
    out.headline(
        "W1",
        "vs_chunk_chain",
        pw.rate() / chunk.rate(),
        Target::AtLeast(0.7),
    );
    if let (false, Some(report)) = (mode.quick, last.take()) {
        println!("pipework report of the last round:\n{report}");
    }
}

/// W2: W1 through pools, whose workers share an input queue and interleave outputs.
fn w2_pools(mode: &Mode, out: &mut Out) {
    let n = mode.w1_items;
    let m = mode.item_chain_items;
    println!(
        "\n== W2 pools: {n} u64 through 4 identity stages of Fixed::new(2) / Dynamic::new(64)"
    );
    let fixed = chain4(|| Fixed::new(2, identity::<u64>));
    let dynamic = chain4(|| Dynamic::new(64, identity::<u64>));
    let [fixed, dynamic, seq, item, chunk] = measure(
        out,
        "W2",
        mode.rounds,
        [
            Variant::new("fixed", n, triangle(n), || run_sum(&fixed, 0..n).0),
            Variant::new("dynamic", n, triangle(n), || run_sum(&dynamic, 0..n).0),
            Variant::new("sequential", n, triangle(n), || sequential_identity(n)),
            Variant::new("item_chain", m, triangle(m), || item_chain_sum(m)),
            Variant::new("chunk_chain", n, triangle(n), || chunk_chain(n)),
        ],
    );
    for (name, pool) in [("fixed", &fixed), ("dynamic", &dynamic)] {
        out.figure(
            "W2",
            &format!("vs_sequential_{name}"),
            pool.rate() / seq.rate(),
        );
        out.figure(
            "W2",
            &format!("vs_item_chain_{name}"),
            pool.rate() / item.rate(),
        );
        out.figure(
            "W2",
            &format!("vs_chunk_chain_{name}"),
            pool.rate() / chunk.rate(),
        );
    }
    let worse = fixed.rate().min(dynamic.rate());
    out.headline(
        "W2",
        "vs_item_chain",
        worse / item.rate(),
        Target::AtLeast(10.0),
    );
}

/// W3's unit of work: a chain of xorshift-multiply rounds over the item. Each round depends
/// on the last, so the optimiser can neither skip nor vectorise it. The result keeps 32
/// bits so that sums of it cannot overflow.
fn work(item: u64, rounds: u32) -> u64 {
    let mut h = item ^ 0xcbf2_9ce4_8422_2325;
    for _ in 0..rounds {
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 29;
    }
    h >> 32
}

/// The number of rounds that makes one call of `work` take about `target`.
fn calibrate(target: Duration) -> u32 {
    const PROBE_ROUNDS: u32 = 1_000;
    const CALLS: u64 = 200;
    // The fastest of several probes: another process stealing the core during one probe
    // would otherwise make every later call shorter than the target.
    let best = (0..7)
        .map(|_| {
            let started = Instant::now();
            let sum: u64 = (0..CALLS).map(|i| work(black_box(i), PROBE_ROUNDS)).sum();
            black_box(sum);
            started.elapsed()
        })
        .min()
        .expect("at least one probe");
    let per_round = best.as_secs_f64() / (CALLS as f64 * f64::from(PROBE_ROUNDS));
    (target.as_secs_f64() / per_round).round().max(1.0) as u32
}

/// W3: CPU-bound items on as many workers as cores, against the usual parallel iterators.
fn w3_cpu_bound(mode: &Mode, out: &mut Out) {
    let n = mode.w3_items;
    let rounds = calibrate(Duration::from_micros(5));
    let started = Instant::now();
    // The reference result, computed once before timing; every variant must reproduce it.
    let expect: u64 = (0..n).map(|x| work(x, rounds)).sum();
    let per_call = started.elapsed().as_secs_f64() / n as f64;
    println!(
        "\n== W3 CPU-bound: {n} items, one stage Fixed::new(2) of {rounds} mixing rounds \
         ({:.2} µs a call)",
        per_call * 1e6
    );
    out.figure("W3", "work_us_per_item", per_call * 1e6);
    let pipeline = Pipeline::new().stage(
        "work",
        Fixed::new(2, move |x: u64, _: &Context| Ok(work(x, rounds))),
    );
    let [pw, seq, rayon, pariter] = measure(
        out,
        "W3",
        mode.rounds,
        [
            Variant::new("pipework", n, expect, || run_sum(&pipeline, 0..n).0),
            Variant::new("sequential", n, expect, || {
                (0..n).map(|x| work(x, rounds)).sum()
            }),
            Variant::new("rayon", n, expect, || {
                (0..n).into_par_iter().map(|x| work(x, rounds)).sum()
            }),
            Variant::new("pariter", n, expect, || {
                (0..n).parallel_map(move |x| work(x, rounds)).sum()
            }),
        ],
    );
    out.headline(
        "W3",
        "vs_sequential",
        pw.rate() / seq.rate(),
        Target::AtLeast(1.8),
    );
    out.headline(
        "W3",
        "vs_rayon",
        pw.rate() / rayon.rate(),
        Target::AtLeast(0.95),
    );
    out.headline("W3", "vs_pariter", pw.rate() / pariter.rate(), Target::None);
}

/// An order-sensitive fold: equal only for the same values in the same order.
fn ordered_fold(acc: u64, x: u64) -> u64 {
    acc.wrapping_mul(0x100_0000_01B3).wrapping_add(x)
}

/// W8: W3's CPU-bound stage through the ordered pool, which must deliver in input order.
/// Compared with the unordered fixed pool and with pariter (also ordered), same run.
fn w8_ordered(mode: &Mode, out: &mut Out) {
    let n = mode.w3_items;
    let rounds = calibrate(Duration::from_micros(5));
    let in_order: u64 = (0..n).map(|x| work(x, rounds)).fold(0, ordered_fold);
    let any_order: u64 = (0..n).map(|x| work(x, rounds)).sum();
    println!("\n== W8 ordered: W3's {n} items through Ordered::new(2), outputs in input order");
    let ordered = Pipeline::new().stage(
        "work",
        Ordered::new(2, move |x: u64, _: &Context| Ok(work(x, rounds))),
    );
    let fixed = Pipeline::new().stage(
        "work",
        Fixed::new(2, move |x: u64, _: &Context| Ok(work(x, rounds))),
    );
    let [pw, pool, pariter] = measure(
        out,
        "W8",
        mode.rounds,
        [
            Variant::new("ordered", n, in_order, || {
                let mut acc = 0;
                ordered
                    .run(0..n, |x: u64| {
                        acc = ordered_fold(acc, x);
                        Ok(())
                    })
                    .unwrap_or_else(|e| panic!("pipework run failed: {e}"));
                acc
            }),
            Variant::new("fixed_pool", n, any_order, || run_sum(&fixed, 0..n).0),
            Variant::new("pariter", n, in_order, || {
                (0..n)
                    .parallel_map(move |x| work(x, rounds))
                    .fold(0, ordered_fold)
            }),
        ],
    );
    out.headline(
        "W8",
        "vs_fixed_pool",
        pw.rate() / pool.rate(),
        Target::AtLeast(0.9),
    );
    out.headline(
        "W8",
        "vs_pariter",
        pw.rate() / pariter.rate(),
        Target::AtLeast(1.0),
    );
}

/// `-- --scaling`: W3's CPU-bound work (400 k items of 5 µs) on 1, 2, 4, … workers up to
/// the machine's cores, through a fixed and an ordered pool, next to rayon on as many threads.
/// For a machine with more cores than the 2 the other figures come from.
fn scaling() -> ExitCode {
    const ITEMS: u64 = 400_000;
    const ROUNDS: usize = 3;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let rounds = calibrate(Duration::from_micros(5));
    let expect: u64 = (0..ITEMS).map(|x| work(x, rounds)).sum();
    let time = |f: &mut dyn FnMut() -> u64| {
        let runs: Vec<f64> = (0..ROUNDS)
            .map(|_| {
                let started = Instant::now();
                assert_eq!(f(), expect, "wrong result");
                started.elapsed().as_secs_f64()
            })
            .collect();
        ITEMS as f64 / median(runs)
    };
    let sequential = time(&mut || (0..ITEMS).map(|x| work(x, rounds)).sum());
    println!("scaling: {ITEMS} items of ~5 µs, {cores} cores; sequential {sequential:.3e} items/s");
    println!("  workers   fixed (x seq)   ordered (x seq)   rayon (x seq)");
    let mut n = 1;
    while n <= cores {
        let fixed = Pipeline::new().stage(
            "work",
            Fixed::new(n, move |x: u64, _: &Context| Ok(work(x, rounds))),
        );
        let ordered = Pipeline::new().stage(
            "work",
            Ordered::new(n, move |x: u64, _: &Context| Ok(work(x, rounds))),
        );
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .expect("a rayon pool");
        let f = time(&mut || run_sum(&fixed, 0..ITEMS).0);
        let o = time(&mut || run_sum(&ordered, 0..ITEMS).0);
        let r = time(&mut || {
            pool.install(|| (0..ITEMS).into_par_iter().map(|x| work(x, rounds)).sum())
        });
        println!(
            "  {n:>7}   {:>13.2}   {:>15.2}   {:>13.2}",
            f / sequential,
            o / sequential,
            r / sequential
        );
        println!("bench scaling fixed_{n} {:.4}", f / sequential);
        println!("bench scaling ordered_{n} {:.4}", o / sequential);
        println!("bench scaling rayon_{n} {:.4}", r / sequential);
        n = if n == cores {
            n + 1
        } else {
            (n * 2).min(cores)
        };
    }
    ExitCode::SUCCESS
}

/// W4's step length: every fifth task is slow at every stage.
fn article_step(id: u64) -> Duration {
    if id % 5 == 0 {
        Duration::from_millis(500)
    } else {
        Duration::from_millis(100)
    }
}

/// W4, the article's example: 1,000 I/O-bound tasks through 4 stages of up to 1,000
/// workers. With unbounded concurrency the run takes its critical path, 4 × 500 ms.
fn w4_article(mode: &Mode, out: &mut Out) {
    const TASKS: u64 = 1_000;
    const CRITICAL_PATH_S: f64 = 2.0;
    println!(
        "\n== W4 the article: {TASKS} tasks x 4 stages of Dynamic::new(1000), \
         100 ms a step (500 ms for every fifth task)"
    );
    let pipeline = chain4(|| {
        Dynamic::new(1000, |id: u64, cx: &Context| {
            cx.sleep(article_step(id))?;
            Ok(id)
        })
    });
    let last = Cell::new(None);
    let [pw] = measure(
        out,
        "W4",
        mode.w4_rounds,
        [Variant::new("pipework", TASKS, triangle(TASKS), || {
            let (sum, report) = run_sum(&pipeline, 0..TASKS);
            last.set(Some(report));
            sum
        })],
    );
    out.figure("W4", "pipework_wall_s", pw.median_s);
    out.headline(
        "W4",
        "vs_critical_path",
        pw.median_s / CRITICAL_PATH_S,
        Target::AtMost(1.05),
    );
    if let (false, Some(report)) = (mode.quick, last.take()) {
        println!("pipework report of the last round:\n{report}");
    }
}

/// W5: a source far faster than its one slow stage. With chunks of one for slow consumers
/// every worker stays busy, and the run takes items × 10 ms / 64.
fn w5_fast_into_slow(mode: &Mode, out: &mut Out) {
    const WORKERS: usize = 64;
    const STEP: Duration = Duration::from_millis(10);
    let n = mode.w5_items;
    let ideal = STEP.as_secs_f64() * n as f64 / WORKERS as f64;
    println!(
        "\n== W5 fast into slow: {n} items from a Vec into one stage of {WORKERS} workers \
         sleeping {} ms; ideal {:.0} ms",
        STEP.as_millis(),
        ideal * 1e3
    );
    let slow = |x: u64, cx: &Context| -> Result<u64, BoxError> {
        cx.sleep(STEP)?;
        Ok(x)
    };
    let fixed = Pipeline::new().stage("slow", Fixed::new(WORKERS, slow));
    let dynamic = Pipeline::new().stage("slow", Dynamic::new(WORKERS, slow));
    let items = || (0..n).collect::<Vec<u64>>();
    let [fixed, dynamic] = measure(
        out,
        "W5",
        mode.rounds,
        [
            Variant::new("fixed", n, triangle(n), || run_sum(&fixed, items()).0),
            Variant::new("dynamic", n, triangle(n), || run_sum(&dynamic, items()).0),
        ],
    );
    out.figure("W5", "fixed_wall_s", fixed.median_s);
    out.figure("W5", "dynamic_wall_s", dynamic.median_s);
    out.figure("W5", "vs_ideal_dynamic", dynamic.median_s / ideal);
    out.headline(
        "W5",
        "vs_ideal",
        fixed.median_s / ideal,
        Target::AtMost(1.2),
    );
}

/// W6's source: `n` timestamps, one per millisecond, each taken when it is yielded.
fn trickle(n: u32) -> impl Iterator<Item = Instant> + Send {
    const PERIOD: Duration = Duration::from_millis(1);
    let start = Instant::now();
    (1..=n).map(move |k| {
        let tick = start + PERIOD * k;
        let now = Instant::now();
        if tick > now {
            thread::sleep(tick - now);
        }
        Instant::now()
    })
}

/// p50 and p99, in µs, of sorted latencies.
fn p50_p99(mut latencies: Vec<f64>) -> (f64, f64) {
    latencies.sort_by(f64::total_cmp);
    (
        percentile(&latencies, 0.50) * 1e6,
        percentile(&latencies, 0.99) * 1e6,
    )
}

/// W6: the latency a pipeline adds to items that arrive one at a time, far apart. The
/// per-item crossbeam chain is shown for reference: it is what a handful of thread wake-ups
/// costs on this machine.
fn w6_trickle(mode: &Mode, out: &mut Out) {
    let n = mode.w6_items;
    println!(
        "\n== W6 trickle: {n} items, one per ms, through 4 identity FIFO stages; \
         latency added between source and sink"
    );
    let pipeline = chain4(|| Fifo::new(identity::<Instant>));
    let mut pw = (Vec::new(), Vec::new());
    let mut chain = (Vec::new(), Vec::new());
    for _ in 0..mode.rounds {
        let mut latencies = Vec::with_capacity(n as usize);
        pipeline
            .run(trickle(n), |t: Instant| {
                latencies.push(t.elapsed().as_secs_f64());
                Ok(())
            })
            .unwrap_or_else(|e| panic!("pipework run failed: {e}"));
        out.check(
            latencies.len() == n as usize,
            format_args!("W6 pipework: {} of {n} items arrived", latencies.len()),
        );
        let (p50, p99) = p50_p99(latencies);
        pw.0.push(p50);
        pw.1.push(p99);

        let mut latencies = Vec::with_capacity(n as usize);
        item_chain(trickle(n), |t| latencies.push(t.elapsed().as_secs_f64()));
        out.check(
            latencies.len() == n as usize,
            format_args!("W6 item_chain: {} of {n} items arrived", latencies.len()),
        );
        let (p50, p99) = p50_p99(latencies);
        chain.0.push(p50);
        chain.1.push(p99);
    }
    let (pw_p50, pw_p99) = (median(pw.0), median(pw.1));
    let (chain_p50, chain_p99) = (median(chain.0), median(chain.1));
    println!("  {:<16} {:>10} {:>10}", "variant", "p50 µs", "p99 µs");
    println!("  {:<16} {pw_p50:>10.1} {pw_p99:>10.1}", "pipework");
    println!("  {:<16} {chain_p50:>10.1} {chain_p99:>10.1}", "item_chain");
    out.figure("W6", "item_chain_p50_added_us", chain_p50);
    out.figure("W6", "item_chain_p99_added_us", chain_p99);
    out.headline("W6", "p50_added_us", pw_p50, Target::None);
    out.headline("W6", "p99_added_us", pw_p99, Target::AtMost(200.0));
}

/// W7's item: 64 bytes.
type Block = [u64; 8];

/// Σ of every word of the blocks of `0..n`: the words are 0..8n.
fn block_checksum(n: u64) -> u64 {
    triangle(8 * n)
}

/// The W7 child: runs `n` blocks through 4 identity FIFO stages, then prints its peak RSS
/// and run time for the parent. Exits non-zero if the checksum is wrong.
fn w7_child(n: u64) -> ExitCode {
    let pipeline = chain4(|| Fifo::new(identity::<Block>));
    let source = (0..n).map(|i| std::array::from_fn::<u64, 8, _>(|k| i * 8 + k as u64));
    let mut sum = 0u64;
    let started = Instant::now();
    pipeline
        .run(source, |block: Block| {
            sum += block.iter().sum::<u64>();
            Ok(())
        })
        .unwrap_or_else(|e| panic!("pipework run failed: {e}"));
    let secs = started.elapsed().as_secs_f64();
    let Some(hwm) = vm_hwm_kb() else {
        eprintln!("no VmHWM in /proc/self/status");
        return ExitCode::FAILURE;
    };
    println!("vmhwm_kb {hwm} secs {secs}");
    if sum == block_checksum(n) {
        ExitCode::SUCCESS
    } else {
        eprintln!("W7 child: checksum {sum}, expected {}", block_checksum(n));
        ExitCode::FAILURE
    }
}

/// This process's peak resident set size, in kB.
fn vm_hwm_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?;
    line.split_whitespace().next()?.parse().ok()
}

/// Runs one W7 child on `n` items; returns its peak RSS in kB and its run time, or `None`
/// (and a failed check) if it failed.
fn w7_run_child(out: &mut Out, n: u64) -> Option<(f64, f64)> {
    let exe = std::env::current_exe().expect("the bench's own path");
    let output = Command::new(exe)
        .arg(W7_CHILD)
        .arg(n.to_string())
        .stderr(Stdio::inherit())
        .output()
        .expect("the W7 child starts");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let parsed = stdout.lines().find_map(|l| {
        let mut words = l.split_whitespace();
        match (words.next(), words.next(), words.next(), words.next()) {
            (Some("vmhwm_kb"), Some(kb), Some("secs"), Some(s)) => {
                Some((kb.parse().ok()?, s.parse().ok()?))
            }
            _ => None,
        }
    });
    out.check(
        output.status.success() && parsed.is_some(),
        format_args!(
            "W7 child on {n} items: {}, output {stdout:?}",
            output.status
        ),
    );
    parsed
}

/// W7: bounded queues mean bounded memory — the peak RSS of a run must not grow with the
/// input's length. Each size runs in a fresh process so that peaks do not mix.
fn w7_memory(mode: &Mode, out: &mut Out) {
    let (large, small) = (mode.w7_large, mode.w7_small);
    println!(
        "\n== W7 memory: peak RSS of {large} vs {small} items of 64 bytes through 4 identity \
         FIFO stages (one child process per run)"
    );
    let mut hwm = (Vec::new(), Vec::new());
    let mut secs = Vec::new();
    for _ in 0..mode.rounds {
        if let Some((kb, s)) = w7_run_child(out, large) {
            hwm.0.push(kb);
            secs.push(s);
        }
        if let Some((kb, _)) = w7_run_child(out, small) {
            hwm.1.push(kb);
        }
    }
    if hwm.0.is_empty() || hwm.1.is_empty() {
        return; // The failed checks say why.
    }
    let (large_kb, small_kb) = (median(hwm.0), median(hwm.1));
    println!("  {:<16} {:>10} {:>14}", "run", "items", "peak RSS (kB)");
    println!("  {:<16} {large:>10} {large_kb:>14.0}", "large");
    println!("  {:<16} {small:>10} {small_kb:>14.0}", "small");
    out.figure("W7", "large_vmhwm_kb", large_kb);
    out.figure("W7", "small_vmhwm_kb", small_kb);
    out.figure("W7", "pipework_items_per_s", large as f64 / median(secs));
    out.headline("W7", "rss_ratio", large_kb / small_kb, Target::AtMost(1.25));
}
