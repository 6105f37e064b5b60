//! W10: how fast a cancelled run comes back. W4's run (1,000 tasks through 4 stages of
//! `Dynamic::new(1000)`, cancellable sleeps of 100 or 500 ms) is cancelled through a
//! `CancelToken` from another thread, early (100 ms in, while workers are still being
//! started) and late (1,000 ms in, with a thousand or more threads alive); the latency is
//! from the `cancel()` call to `run()`'s return, by which time every thread of the run has
//! been joined.
//!
//! The floor beside it: as many bare OS threads (on the same 64 KiB stacks), each blocked
//! on a channel, woken by the channel's disconnect and joined — what waking and joining
//! that many threads costs on this machine, with no pipeline at all.

use std::convert::Infallible;
use std::thread;
use std::time::{Duration, Instant};

use pipework::{CancelToken, ErrorKind};

use super::w4_article::{TASKS, article_pipeline};
use crate::cli::Mode;
use crate::procfs;
use crate::report::{Out, Target};
use crate::stats::{median, percentile};

/// When the runs are cancelled, after they start.
const CANCEL_AFTER: [Duration; 2] = [Duration::from_millis(100), Duration::from_secs(1)];

/// W10: `mode.w10_repeats` cancelled runs at each of `CANCEL_AFTER`, alternating; the p50
/// (the median) and p99 (nearest rank: the largest of fewer than 100 samples) of all their
/// latencies together.
pub fn run(mode: &Mode, out: &mut Out) {
    println!(
        "\n== W10 cancel latency: W4's run cancelled after 100 ms and after 1,000 ms, \
         {} times each; cancel() to run()'s return",
        mode.w10_repeats
    );
    let pipeline = article_pipeline();
    // Per cancellation time: latencies in ms, and threads alive when cancel() was called.
    let mut latencies: [Vec<f64>; CANCEL_AFTER.len()] = Default::default();
    let mut threads: [Vec<f64>; CANCEL_AFTER.len()] = Default::default();
    for _ in 0..mode.w10_repeats {
        for (i, &after) in CANCEL_AFTER.iter().enumerate() {
            let token = CancelToken::new();
            let (result, latency, alive) = thread::scope(|s| {
                let deadline = Instant::now() + after;
                let token = &token;
                let canceller = s.spawn(move || {
                    thread::sleep(deadline.saturating_duration_since(Instant::now()));
                    // The canceller itself does not count.
                    let alive = procfs::threads().map(|t| t.saturating_sub(1));
                    let at = Instant::now();
                    token.cancel();
                    (at, alive)
                });
                let result = pipeline
                    .job()
                    .cancel_token(token)
                    .run(0..TASKS, |_: u64| Ok(()));
                let returned = Instant::now();
                let (at, alive) = canceller.join().expect("the canceller does not panic");
                (result, returned.saturating_duration_since(at), alive)
            });
            let cancelled = match &result {
                Err(e) => {
                    matches!(e.kind(), ErrorKind::Cancelled)
                        && e.report().is_some_and(|r| r.totals().is_balanced())
                }
                Ok(_) => false,
            };
            out.check(
                cancelled,
                format_args!(
                    "W10: the run cancelled after {} ms ended with {:?}",
                    after.as_millis(),
                    result.map(|r| r.totals())
                ),
            );
            latencies[i].push(latency.as_secs_f64() * 1e3);
            threads[i].extend(alive.map(|t| t as f64));
        }
    }
    println!(
        "  {:<14} {:>6} {:>10} {:>10} {:>16}",
        "cancelled at", "runs", "p50 ms", "max ms", "threads alive"
    );
    for ((after, lat), alive) in CANCEL_AFTER.iter().zip(&latencies).zip(&threads) {
        let p50 = median(lat.clone());
        let max = lat.iter().copied().fold(f64::MIN, f64::max);
        let alive = if alive.is_empty() {
            f64::NAN
        } else {
            median(alive.clone())
        };
        println!(
            "  {:<14} {:>6} {:>10.2} {:>10.2} {:>16.0}",
            format!("{} ms", after.as_millis()),
            lat.len(),
            p50,
            max,
            alive
        );
        let at = after.as_millis();
        out.figure("W10", &format!("cancel_{at}ms_p50_ms"), p50);
        out.figure("W10", &format!("cancel_{at}ms_max_ms"), max);
        out.figure("W10", &format!("threads_at_cancel_{at}ms"), alive);
    }
    // The floor: the same number of bare threads, blocked, woken, joined.
    let alive: Vec<f64> = threads.concat();
    if !alive.is_empty() {
        let n = median(alive) as usize;
        let bare: Vec<f64> = (0..mode.w10_repeats.max(3))
            .map(|_| bare_threads_wake_and_join(n))
            .collect();
        let p50 = median(bare);
        println!("  bare threads   {n:>6} blocked, woken by a disconnect, joined: p50 {p50:.2} ms");
        out.figure("W10", "bare_threads", n as f64);
        out.figure("W10", "bare_threads_p50_ms", p50);
    }
    let mut all: Vec<f64> = latencies.concat();
    all.sort_by(f64::total_cmp);
    out.figure("W10", "samples", all.len() as f64);
    out.headline_median("W10", "cancel_p50_ms", all.clone(), Target::AtMost(10.0));
    out.headline_of(
        "W10",
        "cancel_p99_ms",
        percentile(&all, 0.99),
        all.len(),
        Target::AtMost(30.0),
    );
}

/// Starts `n` threads on 64 KiB stacks blocked on one channel, disconnects it, and returns
/// the milliseconds from the disconnect to the last join.
fn bare_threads_wake_and_join(n: usize) -> f64 {
    let (tx, rx) = crossbeam_channel::bounded::<Infallible>(0);
    let mut at = Instant::now();
    thread::scope(|s| {
        for _ in 0..n {
            let rx = rx.clone();
            thread::Builder::new()
                .stack_size(64 << 10)
                .spawn_scoped(s, move || {
                    let _ = rx.recv();
                })
                .expect("a bare thread starts");
        }
        // Every thread is blocked by now (starting them took far less).
        thread::sleep(Duration::from_millis(200));
        at = Instant::now();
        drop(tx);
    });
    at.elapsed().as_secs_f64() * 1e3
}
