//! W7: bounded queues mean bounded memory — the peak RSS of a run must not grow with the
//! input's length. Each run happens in a fresh child process (this binary, started with
//! `--w7-child ITEMS`) so that peaks do not mix; the child prints `vmhwm_kb KB secs S`.

use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

use pipework::Fifo;

use super::triangle;
use crate::cli::{Mode, W7_CHILD};
use crate::pipelines::{chain4, identity, run_sink};
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
    let pipeline = chain4(|| Fifo::new(identity::<Block>));
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
fn run_child(out: &mut Out, n: u64) -> Option<(f64, f64)> {
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
    for _ in 0..mode.rounds {
        if let Some((kb, s)) = run_child(out, large) {
            hwm.0.push(kb);
            secs.push(s);
        }
        if let Some((kb, _)) = run_child(out, small) {
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
