//! Finding 22: memory is bounded in bytes, not just in items. 64 KiB items (inline arrays,
//! whose `size_of` is 64 KiB) with default settings peaked at about 960 MiB in the review:
//! every edge may hold 16 chunks of up to 256 items. Chunks now hold at most 64 KiB of items
//! by `size_of` (one item at least; see `transport::pace`). The scenario below (four cheap
//! stages, a sink that stalls once so every queue fills) peaked, on the 2-core machine, at
//! 67–74 MiB in a debug build and 122 MiB in a release build before, and at 27–28 MiB
//! (debug) and 15 MiB (release) after.
//!
//! Peak memory is the process's peak resident set (`VmHWM`), so each measurement runs in a
//! child process: this test binary running the ignored test below, which prints it.

mod common;

use std::time::Duration;

use common::watchdog;
use pipework::{Dynamic, Fifo, Fixed, Ordered, Pipeline};

/// An item whose inline size is 64 KiB.
type Big = [u8; 64 * 1024];
/// Items through the pipeline: enough to fill every queue (1.25 GiB of them in all).
const ITEMS: usize = 20_000;
/// The sink stalls at this item, once chunks have grown, until every queue is full.
const STALL_AT: usize = 2_000;
/// How long the sink stalls.
const STALL: Duration = Duration::from_secs(2);
/// What the run may peak at, in MiB: the process with its threads' stacks, the queues and
/// the workers (27–28 MiB in a debug build, 15 MiB in a release build).
const LIMIT_MIB: u64 = 45;

/// The peak resident set of this process, in KiB (Linux).
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

#[test]
fn large_items_keep_memory_bounded_with_default_settings() {
    let _dog = watchdog("64 KiB items", 300);
    let exe = std::env::current_exe().expect("the test binary");
    let out = std::process::Command::new(exe)
        .args([
            "--ignored",
            "--exact",
            "child_runs_64_kib_items",
            "--nocapture",
            "--test-threads=1",
        ])
        // Debug builds move a 64 KiB value through several stack slots per call: more than
        // a thread's default 2 MiB of stack.
        .env("RUST_MIN_STACK", (64 << 20).to_string())
        .output()
        .expect("the child runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let peak = stdout
        .lines()
        .find_map(|l| l.split_once("PEAK_KIB: ").map(|(_, v)| v.trim().to_owned()))
        .and_then(|v| v.parse::<u64>().ok());
    let Some(peak) = peak.filter(|_| out.status.success()) else {
        panic!(
            "the child failed: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    eprintln!(
        "64 KiB items, default settings: peak RSS {} MiB",
        peak / 1024
    );
    assert!(
        peak <= LIMIT_MIB * 1024,
        "peak RSS {} MiB, more than {LIMIT_MIB} MiB",
        peak / 1024
    );
}

/// Run by the test above in a child process: four stages of every kind with default
/// settings, cheap processors (so chunks grow as large as they may), and a sink that stalls
/// once (so every queue fills with them); then prints the peak resident set.
#[test]
#[ignore = "run by large_items_keep_memory_bounded_with_default_settings"]
// 64 KiB items are what this test is about; each lives on a stack for a moment.
#[allow(clippy::large_stack_arrays)]
fn child_runs_64_kib_items() {
    let pass = pipework::map(|mut x: Big| {
        x[0] = x[0].wrapping_add(1);
        x
    });
    let p = Pipeline::new()
        .stage("fifo", Fifo::new(pass))
        .stage("fixed", Fixed::new(2, pass))
        .stage("ordered", Ordered::new(2, pass))
        .stage("dynamic", Dynamic::new(2, pass));
    let mut sunk = 0usize;
    // Each item is its byte pattern (`i` modulo 256).
    let items = (0..ITEMS).map(|i| [i.to_le_bytes()[0]; 64 * 1024]);
    let report = p
        .run(items, |x: Big| {
            std::hint::black_box(&x);
            sunk += 1;
            if sunk == STALL_AT {
                std::thread::sleep(STALL);
            }
            Ok(())
        })
        .expect("the run");
    assert_eq!(report.totals().sunk, ITEMS as u64);
    println!("PEAK_KIB: {}", peak_rss_kib());
}
