//! W7: bounded queues mean bounded memory — the peak RSS of a run must not grow with the
//! input's length. Each run happens in a fresh child process (this binary, started with
//! `--w7-child ITEMS`) so that peaks do not mix; the child prints `vmhwm_kb KB secs S`.
//! Rounds are paired: the ratio is taken between the two children of the same round.
//!
//! The same pair runs again recording its timeline (`--timeline`, `Job::record_timeline`):
//! a timeline is bounded too (a cap of intervals per thread and samples per queue), so its
//! ratio, `timeline_rss_ratio`, must stay within the same bound.

use std::process::ExitCode;
use std::time::Instant;

use pipework::Fifo;

use super::triangle;
use crate::child;
use crate::cli::{Mode, W7_CHILD, W7_TIMELINE};
use crate::pipelines::{chain4, identity};
use crate::procfs::vm_hwm_kb;
use crate::report::{Out, Target};
use crate::stats::median;

/// W7's item: 64 bytes.
type Block = [u64; 8];

/// Σ of every word of the blocks of `0..n`: the words are 0..8n.
fn block_checksum(n: u64) -> u64 {
    triangle(8 * n)
}

/// The W7 child: runs `n` blocks through 4 identity FIFO stages (recording the run's
/// timeline if `timeline`), then prints its peak RSS and run time for the parent. Exits
/// non-zero if the checksum is wrong.
pub fn child(n: u64, timeline: bool) -> ExitCode {
    let pipeline = chain4(|| Fifo::new(identity::<Block>()));
    let source = (0..n).map(|i| std::array::from_fn::<u64, 8, _>(|k| i * 8 + k as u64));
    let mut sum = 0u64;
    let started = Instant::now();
    let mut job = pipeline.job();
    if timeline {
        job = job.record_timeline();
    }
    let report = job
        .run(source, |block: Block| {
            sum += block.iter().sum::<u64>();
            Ok(())
        })
        .unwrap_or_else(|e| panic!("pipework run failed: {e}"));
    let secs = started.elapsed().as_secs_f64();
    if timeline != report.timeline().is_some() {
        eprintln!("W7 child: timeline {timeline}, but the report says otherwise");
        return ExitCode::FAILURE;
    }
    let Some(hwm) = vm_hwm_kb() else {
        eprintln!("no VmHWM in /proc/self/status");
        return ExitCode::FAILURE;
    };
    child::print_figures(&[("vmhwm_kb", hwm as f64), ("secs", secs)]);
    if sum == block_checksum(n) {
        ExitCode::SUCCESS
    } else {
        eprintln!("W7 child: checksum {sum}, expected {}", block_checksum(n));
        ExitCode::FAILURE
    }
}

/// Runs one W7 child on `n` items, recording its timeline if `timeline`; returns its peak
/// RSS in kB and its run time, or `None` (and a failed check) if it failed.
fn run_child(out: &mut Out, n: u64, timeline: bool) -> Option<(f64, f64)> {
    let mut args = vec![W7_CHILD.to_owned(), n.to_string()];
    if timeline {
        args.push(W7_TIMELINE.to_owned());
    }
    let figures = child::run(
        out,
        &format!("W7 child on {n} items (timeline {timeline})"),
        &args,
        &["vmhwm_kb", "secs"],
    )?;
    Some((figures.get("vmhwm_kb")?, figures.get("secs")?))
}

/// W7: the peak RSS of `mode.w7_large` against `mode.w7_small` items, one child process
/// per run.
pub fn run(mode: &Mode, out: &mut Out) {
    let (large, small) = (mode.w7_large, mode.w7_small);
    println!(
        "\n== W7 memory: peak RSS of {large} vs {small} items of 64 bytes through 4 identity \
         FIFO stages (one child process per run)"
    );
    let mut hwm = (Vec::new(), Vec::new());
    let mut timeline_hwm = (Vec::new(), Vec::new());
    let mut secs = Vec::new();
    // Large over small, one ratio per round whose two children both succeeded; the same
    // for the runs that record their timeline.
    let mut ratios = Vec::new();
    let mut timeline_ratios = Vec::new();
    for _ in 0..mode.rounds {
        let large_run = run_child(out, large, false);
        let small_run = run_child(out, small, false);
        let large_timeline = run_child(out, large, true);
        let small_timeline = run_child(out, small, true);
        if let Some((kb, s)) = large_run {
            hwm.0.push(kb);
            secs.push(s);
        }
        if let Some((kb, _)) = small_run {
            hwm.1.push(kb);
        }
        if let (Some((l, _)), Some((s, _))) = (large_run, small_run) {
            ratios.push(l / s);
        }
        if let (Some((l, _)), Some((s, _))) = (large_timeline, small_timeline) {
            timeline_hwm.0.push(l);
            timeline_hwm.1.push(s);
            timeline_ratios.push(l / s);
        }
    }
    if ratios.is_empty() {
        return; // The failed checks say why.
    }
    let (large_kb, small_kb) = (median(hwm.0), median(hwm.1));
    println!("  {:<16} {:>10} {:>14}", "run", "items", "peak RSS (kB)");
    println!("  {:<16} {large:>10} {large_kb:>14.0}", "large");
    println!("  {:<16} {small:>10} {small_kb:>14.0}", "small");
    out.figure("W7", "large_vmhwm_kb", large_kb);
    out.figure("W7", "small_vmhwm_kb", small_kb);
    out.figure("W7", "pipework_items_per_s", large as f64 / median(secs));
    out.headline_median("W7", "rss_ratio", ratios, Target::AtMost(1.25));
    if timeline_ratios.is_empty() {
        return;
    }
    let (large_kb, small_kb) = (median(timeline_hwm.0), median(timeline_hwm.1));
    println!("  {:<16} {large:>10} {large_kb:>14.0}", "large, timeline");
    println!("  {:<16} {small:>10} {small_kb:>14.0}", "small, timeline");
    out.figure("W7", "timeline_large_vmhwm_kb", large_kb);
    out.figure("W7", "timeline_small_vmhwm_kb", small_kb);
    out.headline_median(
        "W7",
        "timeline_rss_ratio",
        timeline_ratios,
        Target::AtMost(1.25),
    );
}
