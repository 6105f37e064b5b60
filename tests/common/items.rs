//! Items that account for themselves: a drop ledger and the items it counts, and a clone
//! counter.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

/// Counts drops per item id, so a test can check that every item was dropped exactly once.
#[derive(Debug)]
pub struct Ledger {
    drops: Vec<AtomicU32>,
}

impl Ledger {
    pub fn new(n: usize) -> Arc<Self> {
        Arc::new(Ledger {
            drops: (0..n).map(|_| AtomicU32::new(0)).collect(),
        })
    }

    /// Ids dropped a number of times other than once.
    pub fn not_dropped_once(&self) -> Vec<(usize, u32)> {
        self.drops
            .iter()
            .enumerate()
            .map(|(i, d)| (i, d.load(Ordering::SeqCst)))
            .filter(|&(_, d)| d != 1)
            .collect()
    }

    pub fn assert_each_dropped_once(&self) {
        let bad = self.not_dropped_once();
        assert!(
            bad.is_empty(),
            "items not dropped exactly once (id, drops): {bad:?}"
        );
    }
}

/// An item that records its drop in a ledger.
#[derive(Debug)]
pub struct Tracked {
    pub id: usize,
    ledger: Arc<Ledger>,
}

impl Tracked {
    pub fn new(id: usize, ledger: &Arc<Ledger>) -> Self {
        Tracked {
            id,
            ledger: Arc::clone(ledger),
        }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.ledger.drops[self.id].fetch_add(1, Ordering::SeqCst);
    }
}

/// `n` tracked items with ids 0..n.
pub fn tracked(n: usize, ledger: &Arc<Ledger>) -> Vec<Tracked> {
    (0..n).map(|i| Tracked::new(i, ledger)).collect()
}

/// A counter of clones, for broadcast tests.
#[derive(Debug)]
pub struct CloneCounter {
    pub id: usize,
    clones: Arc<AtomicUsize>,
}

impl CloneCounter {
    pub fn new(id: usize, clones: &Arc<AtomicUsize>) -> Self {
        CloneCounter {
            id,
            clones: Arc::clone(clones),
        }
    }
}

impl Clone for CloneCounter {
    fn clone(&self) -> Self {
        self.clones.fetch_add(1, Ordering::SeqCst);
        CloneCounter {
            id: self.id,
            clones: Arc::clone(&self.clones),
        }
    }
}
