//! W7: bounded queues mean bounded memory — the peak RSS of a run must not grow with the
//! input's length. Each run happens in a fresh child process (this binary, started with
//! `--w7-child ITEMS`) so that peaks do not mix; the child prints `vmhwm_kb KB secs S`.
//! Rounds are paired: the ratio is taken between the two children of the same round.

use std::process::ExitCode;
use std::time::Instant;

use pipework::Fifo;

use super::triangle;
use crate::child;
use crate::cli::{Mode, W7_CHILD};
use crate::pipelines::{chain4, identity, run_sink};
use crate::procfs::vm_hwm_kb;
use crate::report::{Out, Target};
use crate::stats::median;

/// W7's item: 64 bytes.
type Block = [u64; 8];

/// Σ of every word of the blocks of `0..n`: the words are 0..8n.
fn block_checksum(n: u64) -> u64 {
    triangle(8 * n)
}

/// The W7 child: runs `n` blocks through 4 identity FIFO stages, then prints its peak RSS
/// and run time for the parent. Exits non-zero if the checksum is wrong.
pub fn child(n: u64) -> ExitCode {
    let pipeline = chain4(|| Fifo::new(identity::<Block>()));
    let source = (0..n).map(|i| std::array::from_fn::<u64, 8, _>(|k| i * 8 + k as u64));
    let mut sum = 0u64;
    let started = Instant::now();
    run_sink(&pipeline, source, |block: Block| {
        sum += block.iter().sum::<u64>();
    });
    let secs = started.elapsed().as_secs_f64();
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

/// Runs one W7 child on `n` items; returns its peak RSS in kB and its run time, or `None`
/// (and a failed check) if it failed.
fn run_child(out: &mut Out, n: u64) -> Option<(f64, f64)> {
    let args = [W7_CHILD.to_owned(), n.to_string()];
    let figures = child::run(
        out,
        &format!("W7 child on {n} items"),
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
    let mut secs = Vec::new();
    // Large over small, one ratio per round whose two children both succeeded.
    let mut ratios = Vec::new();
    for _ in 0..mode.rounds {
        let large_run = run_child(out, large);
        let small_run = run_child(out, small);
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
}
