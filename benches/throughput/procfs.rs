//! What Linux's `/proc` tells a process about itself: CPU time, peak memory, threads.
//! Read from `/proc` so that the bench needs no `libc`; every reader returns `None` where
//! `/proc` is missing or unreadable.

use std::fs;

/// Clock ticks per second of the CPU times in `/proc/*/stat`: `USER_HZ`, 100 on every
/// architecture Linux runs on today (`getconf CLK_TCK`). CPU times therefore have a
/// resolution of 10 ms.
const TICKS_PER_S: f64 = 100.0;

/// User plus system CPU time, in seconds, of the `stat` file at `path`. For a process
/// (`/proc/self/stat`) it includes every thread, exited ones too; for
/// `/proc/thread-self/stat`, the calling thread alone.
fn stat_cpu_s(path: &str) -> Option<f64> {
    let stat = fs::read_to_string(path).ok()?;
    // The command name, field 2, is in parentheses and may hold spaces: count from the
    // last ')'. Field 3 (the state) is then the first word; utime and stime are fields
    // 14 and 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(14 - 3);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / TICKS_PER_S)
}

/// This process's CPU time so far, in seconds (all threads, exited ones included).
pub fn process_cpu_s() -> Option<f64> {
    stat_cpu_s("/proc/self/stat")
}

/// The calling thread's CPU time so far, in seconds.
pub fn thread_cpu_s() -> Option<f64> {
    stat_cpu_s("/proc/thread-self/stat")
}

/// One `Key: value …` line of `/proc/self/status`, its first word parsed.
fn status_field(key: &str) -> Option<u64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))?;
    line.split_whitespace().next()?.parse().ok()
}

/// This process's peak resident set size, in kB (`VmHWM`).
pub fn vm_hwm_kb() -> Option<u64> {
    status_field("VmHWM")
}

/// The number of threads of this process alive now, the caller included.
pub fn threads() -> Option<u64> {
    status_field("Threads")
}

/// The CPU model, from the first `model name` line of `/proc/cpuinfo`.
pub fn cpu_model() -> Option<String> {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").ok()?;
    cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_owned())
}

/// The 1-, 5- and 15-minute load averages, as `/proc/loadavg` gives them.
pub fn load_average() -> Option<String> {
    let load = fs::read_to_string("/proc/loadavg").ok()?;
    Some(
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
    )
}
