//! The workloads, one a module, each with `run(mode, out)`: it prints its heading and table
//! and reports its figures to `out`.

pub mod w10_cancel;
pub mod w11_small_runs;
pub mod w1_trivial;
pub mod w2_pools;
pub mod w3_cpu_bound;
pub mod w4_article;
pub mod w4_footprint;
pub mod w5_fast_into_slow;
pub mod w6_trickle;
pub mod w7_memory;
pub mod w8_ordered;
pub mod w9_cost_shift;

/// Σ 0..n, the checksum of the identity workloads.
fn triangle(n: u64) -> u64 {
    n * n.saturating_sub(1) / 2
}
