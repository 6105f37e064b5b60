//! Starting the threads of a run on its scope, and joining them.

use std::sync::Arc;
use std::thread::{Scope, ScopedJoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use super::record::Observe;
use super::sink::Deliveries;
use super::state::{RunState, Tapped};
use crate::transport::{EdgeRx, EdgeTx, Shape, edge, lane};

/// Starts threads on the run's scope and registers them, and the run's taps, with the
/// calling thread.
pub(crate) struct Spawner<'scope, 'env> {
    /// The run's scope.
    scope: &'scope Scope<'scope, 'env>,
    /// The run's state.
    run: &'scope RunState,
    /// The run's timeline and tracing span.
    observe: &'scope Observe,
    /// Where join handles go; the calling thread joins every one.
    handles: Sender<ScopedJoinHandle<'scope, ()>>,
    /// Where taps go.
    taps: Sender<Tapped<'scope>>,
    /// Where routed failures go, to be handed to their handlers on the calling thread.
    deliveries: Arc<Deliveries<'scope>>,
}

impl Clone for Spawner<'_, '_> {
    fn clone(&self) -> Self {
        Spawner {
            scope: self.scope,
            run: self.run,
            observe: self.observe,
            handles: self.handles.clone(),
            taps: self.taps.clone(),
            deliveries: Arc::clone(&self.deliveries),
        }
    }
}

/// Why a thread was not started.
#[derive(Debug)]
pub(crate) enum SpawnRefused {
    /// The run is cancelled: no thread starts after that.
    Cancelled,
    /// The operating system refused.
    Os(std::io::Error),
}

impl<'scope, 'env> Spawner<'scope, 'env> {
    /// A spawner for `run` on `scope`, with the receivers of its handles and taps.
    pub(crate) fn new(
        scope: &'scope Scope<'scope, 'env>,
        run: &'scope RunState,
        deliveries: Arc<Deliveries<'scope>>,
        observe: &'scope Observe,
    ) -> (
        Self,
        Receiver<ScopedJoinHandle<'scope, ()>>,
        Receiver<Tapped<'scope>>,
    ) {
        let (handles, handles_rx) = crossbeam_channel::unbounded();
        let (taps, taps_rx) = crossbeam_channel::unbounded();
        let spawner = Spawner {
            scope,
            run,
            observe,
            handles,
            taps,
            deliveries,
        };
        (spawner, handles_rx, taps_rx)
    }

    pub(crate) fn run(&self) -> &'scope RunState {
        self.run
    }

    /// The queue of routed failures to the calling thread.
    pub(crate) fn deliveries(&self) -> &Arc<Deliveries<'scope>> {
        &self.deliveries
    }

    /// The run's timeline and tracing span.
    pub(crate) fn observe(&self) -> &'scope Observe {
        self.observe
    }

    /// Starts a named thread, unless the run is cancelled. Its body must catch its own
    /// panics.
    pub(crate) fn spawn<F>(&self, name: String, f: F) -> Result<(), SpawnRefused>
    where
        F: FnOnce() + Send + 'scope,
    {
        if self.run.token.is_cancelled() {
            return Err(SpawnRefused::Cancelled);
        }
        let mut builder = std::thread::Builder::new().name(name);
        if let Some(bytes) = self.run.stack_size {
            builder = builder.stack_size(bytes);
        }
        let handle = builder
            .spawn_scoped(self.scope, f)
            .map_err(SpawnRefused::Os)?;
        // Unbounded, and the calling thread holds the receiver until every handle is
        // joined: this send cannot fail or block.
        let _ = self.handles.send(handle);
        Ok(())
    }

    /// A new edge into stage `index` (or into the sink, past the last stage), tapped: what
    /// is left in it after the join counts as cancelled for that stage.
    pub(crate) fn edge_into<T: Send + 'scope>(&self, index: usize) -> (EdgeTx<T>, EdgeRx<T>) {
        let (tx, rx) = edge(self.run.capacity_of(index), self.run.max_chunk);
        self.tap(index, &rx);
        (tx, rx)
    }

    /// A lane private to stage `index`, holding at most `capacity` chunks and advising
    /// `shape`, tapped like an edge into the stage.
    pub(crate) fn lane_in<T: Send + 'scope>(
        &self,
        index: usize,
        capacity: usize,
        shape: std::sync::Arc<Shape>,
    ) -> (EdgeTx<T>, EdgeRx<T>) {
        let (tx, rx) = lane(capacity, shape);
        self.tap(index, &rx);
        (tx, rx)
    }

    /// Keeps a receiver of `rx`, whose leftovers count as cancelled for stage `index`.
    pub(super) fn tap<T: Send + 'scope>(&self, index: usize, rx: &EdgeRx<T>) {
        let _ = self.taps.send(Tapped {
            tap: Box::new(rx.clone()),
            index,
        });
    }
}

/// Joins the run's threads: those that have finished while the run goes on (a dynamic pool
/// retires workers, and joining thousands of them at the end would delay `run`'s return),
/// and all the others at the end.
pub(crate) struct Reaper<'scope> {
    /// Where the spawners send the handles.
    incoming: Receiver<ScopedJoinHandle<'scope, ()>>,
    /// Handles of threads not joined yet.
    running: Vec<ScopedJoinHandle<'scope, ()>>,
    /// When `reap` last looked.
    last: Instant,
}

impl<'scope> Reaper<'scope> {
    /// How often `reap` looks at most.
    const EVERY: Duration = Duration::from_millis(5);

    pub(crate) fn new(incoming: Receiver<ScopedJoinHandle<'scope, ()>>) -> Self {
        Reaper {
            incoming,
            running: Vec::new(),
            last: Instant::now(),
        }
    }

    /// Joins the threads that have finished, if it has not looked for a while.
    pub(crate) fn reap(&mut self) {
        if self.last.elapsed() < Self::EVERY {
            return;
        }
        self.running.extend(self.incoming.try_iter());
        let mut i = 0;
        while i < self.running.len() {
            if self.running[i].is_finished() {
                // Thread bodies catch their panics: a join error cannot carry one of the
                // user's, and there is nothing more to report.
                let _ = self.running.swap_remove(i).join();
            } else {
                i += 1;
            }
        }
        self.last = Instant::now();
    }

    /// Joins every thread of the run. The handle channel closes once every thread that
    /// could spawn another has ended (each holds a `Spawner`, whose sender it drops).
    pub(crate) fn join_all(self) {
        for handle in self.running.into_iter().chain(self.incoming.iter()) {
            let _ = handle.join();
        }
    }
}

/// The run's taps: one per edge and lane, arriving as stages start them.
pub(crate) struct Taps<'scope> {
    /// Where spawners send new taps.
    incoming: Receiver<Tapped<'scope>>,
    /// The taps received so far.
    known: Vec<Tapped<'scope>>,
}

impl<'scope> Taps<'scope> {
    pub(crate) fn new(incoming: Receiver<Tapped<'scope>>) -> Self {
        Taps {
            incoming,
            known: Vec::new(),
        }
    }

    /// Every tap so far.
    pub(crate) fn all(&mut self) -> &[Tapped<'scope>] {
        self.known.extend(self.incoming.try_iter());
        &self.known
    }
}
