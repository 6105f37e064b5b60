//! `-- --scaling`: W3's CPU-bound work (400 k items of 5 µs) on 1, 2, 4, … workers up to
//! the machine's cores, through a fixed and an ordered pool, next to rayon on as many threads.
//! For a machine with more cores than the 2 the other figures come from.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use pipework::{Fixed, Ordered, Pipeline};

use crate::baselines::{rayon_work, sequential_work};
use crate::cpu_work::{calibrate, work_stage};
use crate::pipelines::run_sum;
use crate::stats::median;

const ITEMS: u64 = 400_000;
const ROUNDS: usize = 3;

/// Prints the table, and one `bench scaling <runner>_<workers> <x sequential>` line per
/// figure.
pub fn run() -> ExitCode {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let rounds = calibrate(Duration::from_micros(5));
    let expect = sequential_work(ITEMS, rounds);
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
    let sequential = time(&mut || sequential_work(ITEMS, rounds));
    println!("scaling: {ITEMS} items of ~5 µs, {cores} cores; sequential {sequential:.3e} items/s");
    println!("  workers   fixed (x seq)   ordered (x seq)   rayon (x seq)");
    let mut n = 1;
    while n <= cores {
        let fixed = Pipeline::new().stage("work", Fixed::new(n, work_stage(rounds)));
        let ordered = Pipeline::new().stage("work", Ordered::new(n, work_stage(rounds)));
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .expect("a rayon pool");
        let f = time(&mut || run_sum(&fixed, 0..ITEMS).0);
        let o = time(&mut || run_sum(&ordered, 0..ITEMS).0);
        let r = time(&mut || pool.install(|| rayon_work(ITEMS, rounds)));
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
