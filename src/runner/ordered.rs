//! An ordered pool: n workers, outputs in input order, a bounded reorder window.

use super::{Cloned, Factory, Init, StageHandle, StageRunner, Worker};
use crate::context::Context;
use crate::error::BoxError;
use crate::transport::{Outbox, Recv, recv_or_cancel, send_or_cancel};

/// Runs a stage on `workers` threads and emits the outputs in the order of the inputs.
///
/// A distributor deals the input chunks to the workers in turn; each worker processes its
/// chunk and queues the outputs; a collector takes the workers' queues in the same turn, so
/// outputs leave in input order. While one chunk is slow, the other workers go on with the
/// chunks after it until their output queues are full: the **reorder window**.
///
/// # Memory bound
///
/// Besides its input queue, the stage holds at most `workers × (window + 2)` chunks: per
/// worker, one chunk queued for it, the one it processes, and `window` finished ones waiting
/// for their turn. A chunk holds at most the pipeline's `max_chunk` items, and a single item
/// when items are slow (chunks adapt to about 0.5 ms of work). A slow item therefore delays
/// the stage by at most the window, and never makes memory grow.
///
/// # Examples
///
/// ```
/// use pipework::{Context, Ordered, Pipeline};
///
/// let pipeline = Pipeline::new().stage(
///     "square",
///     Ordered::new(4, |x: u64, _: &Context| Ok(x * x)).window(2),
/// );
/// let (out, _) = pipeline.collect(0..10_000u64).unwrap();
/// assert!(out.iter().enumerate().all(|(i, &y)| y == (i as u64) * (i as u64)));
/// ```
#[derive(Debug, Clone)]
pub struct Ordered<M> {
    /// How many workers run.
    workers: usize,
    /// Finished chunks each worker may queue ahead of the collector.
    window: usize,
    /// Makes each worker's processor.
    factory: M,
}

impl<P> Ordered<Cloned<P>> {
    /// An ordered pool of `workers` threads, each running a clone of `processor`.
    ///
    /// Zero workers is a configuration error, returned by `run`.
    pub fn new(workers: usize, processor: P) -> Self {
        Ordered::with_factory(workers, Cloned(processor))
    }
}

impl<F> Ordered<Init<F>> {
    /// An ordered pool of `workers` threads, each running the processor `init` returns.
    pub fn with_init<P>(workers: usize, init: F) -> Self
    where
        F: Fn(&Context<'_>) -> Result<P, BoxError>,
    {
        Ordered::with_factory(workers, Init(init))
    }
}

impl<M> Ordered<M> {
    /// An ordered pool of `workers` threads whose processors `factory` makes.
    pub fn with_factory(workers: usize, factory: M) -> Self {
        Ordered {
            workers,
            window: 4,
            factory,
        }
    }

    /// How many finished chunks each worker may hold ahead of the slowest one (default 4).
    /// Zero, or more than 2^20, is a configuration error.
    pub fn window(mut self, chunks: usize) -> Self {
        self.window = chunks;
        self
    }
}

impl<In, Out, M> StageRunner<In, Out> for Ordered<M>
where
    In: Send,
    Out: Send,
    M: Factory<In, Out>,
{
    fn kind(&self) -> &'static str {
        "ordered"
    }

    fn check(&self) -> Result<(), String> {
        if self.workers == 0 {
            return Err("an ordered pool needs at least one worker".into());
        }
        if self.window == 0 || self.window > crate::pipeline::MAX_CAPACITY {
            return Err(format!(
                "an ordered pool's window must be between 1 and {} chunks",
                crate::pipeline::MAX_CAPACITY
            ));
        }
        Ok(())
    }

    fn start<'scope>(&'scope self, stage: StageHandle<'scope, '_, In, Out>) {
        // Worker `i` takes chunks `i, i + n, i + 2n, …` and queues exactly one output
        // message per chunk (empty when everything was filtered), so the collector knows
        // which queue holds the next chunk's outputs without any sequence number.
        let mut dealt = Vec::with_capacity(self.workers);
        let mut finished = Vec::with_capacity(self.workers);
        for _ in 0..self.workers {
            let (to_worker, from_dealer) = stage.channel::<In>(1);
            let (to_collector, from_worker) = stage.channel::<Out>(self.window);
            dealt.push(to_worker);
            finished.push(from_worker);
            let spawned = stage.spawn_fed(from_dealer, Vec::new(), move |w| {
                self.work(w, to_collector);
            });
            if let Err((e, _)) = spawned {
                stage.fail(format!("cannot start a worker thread: {e}").into());
            }
        }

        let dealer = stage.clone();
        stage.spawn_helper("deal", move || {
            let token = dealer.token();
            let stats = &dealer.stage().stats;
            let input = &dealer.input().rx;
            for to_worker in dealt.iter().cycle() {
                let Recv::Got(chunk) = recv_or_cancel(input, token, None) else {
                    break;
                };
                if let Err(chunk) = send_or_cancel(to_worker, chunk, token) {
                    stats.add_cancelled(chunk.len() as u64);
                    break;
                }
            }
        });

        let collector = stage.clone();
        stage.spawn_helper("collect", move || {
            let token = collector.token();
            let stats = &collector.stage().stats;
            let mut out = Outbox::new(collector.output().clone());
            // Forwarding costs next to nothing: let the consumer alone size the chunks.
            out.set_own_limit(usize::MAX);
            'turns: for from_worker in finished.iter().cycle() {
                let outputs = match from_worker.try_recv() {
                    Ok(outputs) => outputs,
                    Err(crossbeam_channel::TryRecvError::Disconnected) => break,
                    Err(crossbeam_channel::TryRecvError::Empty) => {
                        // Nothing ready: send what we hold before waiting.
                        out.flush(token);
                        match recv_or_cancel(from_worker, token, None) {
                            Recv::Got(outputs) => outputs,
                            _ => break 'turns,
                        }
                    }
                };
                for item in outputs {
                    out.push(item, token);
                }
            }
            if token.is_cancelled() {
                out.discard();
            } else {
                out.flush(token);
            }
            stats.add_cancelled(out.cancelled);
            stats.add_blocked(out.blocked_ns);
        });
    }
}

impl<M> Ordered<M> {
    /// A worker: one output message per input chunk, in the order the chunks came.
    fn work<In, Out>(
        &self,
        mut w: Worker<'_, In, Out>,
        to_collector: crossbeam_channel::Sender<Vec<Out>>,
    ) where
        In: Send,
        Out: Send,
        M: Factory<In, Out>,
    {
        w.set_manual_output();
        let mut processor = match self.factory.make(w.context()) {
            Ok(p) => p,
            Err(e) => return w.fail(e),
        };
        while let Recv::Got(()) = w.refill(None) {
            if !w.process_buffered(&mut processor) {
                return;
            }
            let outputs = w.take_output();
            if let Err(outputs) = send_or_cancel(&to_collector, outputs, w.context().cancel_token())
            {
                w.count_cancelled(outputs.len());
                return;
            }
        }
    }
}
