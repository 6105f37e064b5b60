//! Broadcast: every item to every branch, outputs merged.

use crate::engine::{StageHandle, StageRunner};

/// Sends every item to every branch and merges the branches' outputs into one stream.
///
/// Each branch is a runner of its own (a [`Fifo`](crate::Fifo), a pool, …) with its own
/// input queue. A distributor thread gives each item to all branches: clones to all but the
/// last, the original to the last. A slow branch therefore slows the whole stage once its
/// queue is full. Outputs of different branches interleave in no particular order.
///
/// A broadcast with no branch is a configuration error, returned by `run`.
///
/// # Examples
///
/// ```
/// use pipework::{map, Broadcast, Fifo, Pipeline};
///
/// let pipeline = Pipeline::new().stage(
///     "fan out",
///     Broadcast::new()
///         .branch(Fifo::new(map(|x: u32| format!("audit {x}"))))
///         .branch(Fifo::new(map(|x: u32| format!("notify {x}")))),
/// );
/// let (mut out, report) = pipeline.collect([1, 2]).unwrap();
/// out.sort();
/// assert_eq!(out, ["audit 1", "audit 2", "notify 1", "notify 2"]);
/// assert_eq!(report.stages[0].copies, 2); // one clone per item
/// ```
pub struct Broadcast<'a, In, Out> {
    /// The branches, each receiving every item.
    branches: Vec<Box<dyn StageRunner<In, Out> + 'a>>,
}

impl<'a, In, Out> Broadcast<'a, In, Out> {
    /// A broadcast with no branches yet.
    pub fn new() -> Self {
        Broadcast {
            branches: Vec::new(),
        }
    }

    /// Adds a branch.
    #[must_use]
    pub fn branch<R>(mut self, runner: R) -> Self
    where
        R: StageRunner<In, Out> + 'a,
    {
        self.branches.push(Box::new(runner));
        self
    }

    /// The number of branches.
    pub fn len(&self) -> usize {
        self.branches.len()
    }

    /// Whether there is no branch yet.
    pub fn is_empty(&self) -> bool {
        self.branches.is_empty()
    }
}

impl<In, Out> Default for Broadcast<'_, In, Out> {
    fn default() -> Self {
        Self::new()
    }
}

impl<In, Out> std::fmt::Debug for Broadcast<'_, In, Out> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kinds: Vec<_> = self
            .branches
            .iter()
            .map(|b| StageRunner::kind(&**b))
            .collect();
        f.debug_struct("Broadcast")
            .field("branches", &kinds)
            .finish()
    }
}

impl<In, Out> StageRunner<In, Out> for Broadcast<'_, In, Out>
where
    In: Clone + Send,
    Out: Send,
{
    fn kind(&self) -> &'static str {
        "broadcast"
    }

    fn check(&self) -> Result<(), String> {
        if self.branches.is_empty() {
            return Err("a broadcast needs at least one branch".into());
        }
        for (i, branch) in self.branches.iter().enumerate() {
            branch.check().map_err(|e| format!("branch {i}: {e}"))?;
        }
        Ok(())
    }

    fn start<'scope>(&'scope self, stage: StageHandle<'scope, '_, In, Out>) {
        for (branch, handle) in self
            .branches
            .iter()
            .zip(stage.broadcast(self.branches.len()))
        {
            branch.start(handle);
        }
    }
}
