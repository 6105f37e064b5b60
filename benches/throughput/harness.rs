//! Timed comparisons: the variants of a workload run interleaved, round by round, their
//! checksums are checked, and their median times are printed as a table and as `bench`
//! lines.

use std::time::Instant;

use crate::report::Out;
use crate::stats::median;

/// One contender of a timed comparison: `run` does the whole job once and returns a
/// checksum, which must equal `expect`.
pub struct Variant<'a> {
    name: &'static str,
    items: u64,
    expect: u64,
    run: Box<dyn FnMut() -> u64 + 'a>,
}

impl<'a> Variant<'a> {
    pub fn new(name: &'static str, items: u64, expect: u64, run: impl FnMut() -> u64 + 'a) -> Self {
        Variant {
            name,
            items,
            expect,
            run: Box::new(run),
        }
    }
}

/// The wall times of one variant.
pub struct Timing {
    items: u64,
    pub median_s: f64,
}

impl Timing {
    pub fn rate(&self) -> f64 {
        self.items as f64 / self.median_s
    }
}

/// Runs every variant `rounds` times, interleaved, checks every checksum, prints a table and
/// each variant's items/s, and returns the median times.
pub fn measure<const N: usize>(
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
