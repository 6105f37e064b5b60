//! W6: the latency a pipeline adds to items that arrive one at a time, far apart. The
//! per-item crossbeam chain is shown for reference: it is what a handful of thread wake-ups
//! costs on this machine.

use std::thread;
use std::time::{Duration, Instant};

use pipework::Fifo;

use crate::baselines::item_chain;
use crate::cli::Mode;
use crate::pipelines::{chain4, identity, run_sink};
use crate::report::{Out, Target};
use crate::stats::{median, percentile};

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

/// One variant's p50 and p99 added latency, in µs, of every round, and every latency of
/// every round.
#[derive(Default)]
struct Percentiles {
    p50: Vec<f64>,
    p99: Vec<f64>,
    all: Vec<f64>,
}

impl Percentiles {
    /// Records one round's latencies, in seconds, and checks that all `n` items arrived.
    fn record(&mut self, out: &mut Out, variant: &str, n: u32, mut latencies: Vec<f64>) {
        out.check(
            latencies.len() == n as usize,
            format_args!("W6 {variant}: {} of {n} items arrived", latencies.len()),
        );
        latencies.sort_by(f64::total_cmp);
        self.p50.push(percentile(&latencies, 0.50) * 1e6);
        self.p99.push(percentile(&latencies, 0.99) * 1e6);
        self.all.extend(latencies.iter().map(|s| s * 1e6));
    }

    /// The p99 of every round's latencies together, in µs.
    fn pooled_p99(&self) -> f64 {
        let mut all = self.all.clone();
        all.sort_by(f64::total_cmp);
        percentile(&all, 0.99)
    }
}

/// Items of the warm-up round.
const WARM_UP_ITEMS: u32 = 50;

/// W6: `mode.w6_items` items, one per ms, through 4 identity FIFO stages and through the
/// per-item chain, rounds interleaved after a short warm-up round. Each round's p50 and p99
/// come from its `mode.w6_items` latencies (3,000 in the full run); the figures are their
/// medians over the rounds, and `*_pooled` the p99 of all rounds' latencies together.
pub fn run(mode: &Mode, out: &mut Out) {
    let n = mode.w6_items;
    println!(
        "\n== W6 trickle: {n} items, one per ms, through 4 identity FIFO stages; \
         latency added between source and sink"
    );
    let pipeline = chain4(|| Fifo::new(identity::<Instant>()));
    run_sink(&pipeline, trickle(WARM_UP_ITEMS), drop);
    item_chain(trickle(WARM_UP_ITEMS), drop);
    let mut pw = Percentiles::default();
    let mut chain = Percentiles::default();
    for _ in 0..mode.rounds {
        let mut latencies = Vec::with_capacity(n as usize);
        run_sink(&pipeline, trickle(n), |t| {
            latencies.push(t.elapsed().as_secs_f64());
        });
        pw.record(out, "pipework", n, latencies);

        let mut latencies = Vec::with_capacity(n as usize);
        item_chain(trickle(n), |t| latencies.push(t.elapsed().as_secs_f64()));
        chain.record(out, "item_chain", n, latencies);
    }
    println!(
        "  {:<16} {:>10} {:>10} {:>12}   (medians over {} rounds of {n} items)",
        "variant", "p50 µs", "p99 µs", "pooled p99", mode.rounds
    );
    for (name, p) in [("pipework", &pw), ("item_chain", &chain)] {
        println!(
            "  {name:<16} {:>10.1} {:>10.1} {:>12.1}",
            median(p.p50.clone()),
            median(p.p99.clone()),
            p.pooled_p99()
        );
    }
    out.figure_median("W6", "item_chain_p50_added_us", chain.p50.clone());
    out.figure_median("W6", "item_chain_p99_added_us", chain.p99.clone());
    out.figure("W6", "item_chain_p99_pooled_added_us", chain.pooled_p99());
    out.figure("W6", "p99_pooled_added_us", pw.pooled_p99());
    out.headline_median("W6", "p50_added_us", pw.p50.clone(), Target::None);
    out.headline_median("W6", "p99_added_us", pw.p99.clone(), Target::AtMost(200.0));
}
