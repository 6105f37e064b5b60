//! Stages with lanes of their own, behind two public calls of [`StageHandle`]:
//! [`broadcast`](StageHandle::broadcast) (every item to every branch) and
//! [`spawn_ordered`](StageHandle::spawn_ordered) (a pool whose outputs keep input order).
//!
//! # Broadcast
//!
//! ```text
//! input ─▶ fanout ─┬─▶ branch 0 lane ─▶ branch 0's threads ─┐
//!                  └─▶ branch 1 lane ─▶ branch 1's threads ─┴─▶ output
//! ```
//!
//! # Ordered
//!
//! ```text
//! input ─▶ deal ─┬─▶ lane 0 ─▶ worker 0 ─▶ turns 0 ─┐
//!                └─▶ lane 1 ─▶ worker 1 ─▶ turns 1 ─┴─▶ collect ─▶ output
//! ```
//!
//! Worker `i` gets chunks `i, i + n, i + 2n, …`. For each chunk it takes one *turn* on its
//! turns lane: zero or more chunks of outputs, then an empty chunk. The collector takes the
//! workers' turns in the same order, so outputs leave in input order without any sequence
//! number, and a one-to-many processor's outputs flow on with backpressure instead of
//! piling up: besides its input the stage holds at most `workers × (window + 2)` chunks.
//!
//! Every lane is tapped (leftovers count as cancelled for the stage) and every lane's
//! readers are counted like the stage input's (see `stage`).

use std::sync::Arc;

use super::counters::{Counter, Custody, StageStats};
use super::record::{Clock, Off};
use super::stage::StageHandle;
use super::state::StageState;
use super::worker::{Output, Worker};
use crate::context::CancelToken;
use crate::transport::{EdgeRx, EdgeTx, Outbox, Recv, Shape};

impl<'scope, In, Out> StageHandle<'scope, '_, In, Out>
where
    In: Send + 'scope,
    Out: Send + 'scope,
{
    /// Splits the stage into `branches` branches that each receive every item, and returns
    /// a handle per branch: start each branch's threads through its handle (with any
    /// runner's `start`). A distributor thread gives each item to every branch (clones to
    /// all but the last) and the branches share the stage's output.
    ///
    /// With no branch, nothing reads the stage's input, and the run fails as the runner
    /// contract says.
    pub fn broadcast(&self, branches: usize) -> Vec<Self>
    where
        In: Clone,
    {
        if branches == 0 {
            return Vec::new();
        }
        let run = self.spawner.run();
        let index = self.stage.id.index();
        let (senders, handles): (Vec<_>, Vec<_>) = (0..branches)
            .map(|_| {
                let shape = Shape::new(run.max_chunk);
                let (tx, rx) = self.spawner.lane_in(index, self.stage.capacity, shape);
                (tx, self.with_input(rx))
            })
            .unzip();
        let input = self.input().clone();
        let stats = &self.stage.stats;
        let token = &self.stage.intake;
        self.spawn_recorded_helper("fanout", move |recorder| match recorder {
            Some(clock) => fanout(&input, &senders, token, stats, clock),
            None => fanout(&input, &senders, token, stats, &mut Off),
        });
        handles
    }

    /// Spawns `workers` workers running `f` whose outputs leave in the order of their
    /// inputs, each holding at most `window` finished chunks ahead of the collector (see
    /// [`Ordered`](crate::Ordered)). Returns whether every thread started.
    pub fn spawn_ordered<F>(&self, workers: usize, window: usize, f: F) -> bool
    where
        F: Fn(Worker<'scope, In, Out>) + Send + Sync + 'scope,
    {
        let index = self.stage.id.index();
        let f = Arc::new(f);
        let mut dealt = Vec::with_capacity(workers);
        let mut turns = Vec::with_capacity(workers);
        for lane in 0..workers {
            let input_shape = Arc::clone(self.input().shape());
            let (to_worker, from_dealer) = self.spawner.lane_in(index, 1, input_shape);
            let output_shape = Arc::clone(self.output.shape());
            // A turn is at least two chunks (outputs, then the empty end): room for `window`
            // turns of outputs.
            let turns_capacity = window.saturating_mul(2);
            let (to_collector, from_worker) =
                self.spawner.lane_in(index, turns_capacity, output_shape);
            let f = Arc::clone(&f);
            let started = self
                .with_input(from_dealer)
                .spawn_worker(Output::Turns(to_collector, lane), move |w| f(w));
            if !started {
                return false;
            }
            dealt.push(to_worker);
            turns.push(from_worker);
        }
        if workers == 0 {
            return true;
        }

        let input = self.input().clone();
        let stats = &self.stage.stats;
        let stage = self.stage;
        let dealer = self.spawn_recorded_helper("deal", move |recorder| match recorder {
            Some(clock) => deal(&input, &dealt, stage, clock),
            None => deal(&input, &dealt, stage, &mut Off),
        });

        let out = Outbox::new(self.output.clone());
        let collector = self.spawn_recorded_helper("collect", move |recorder| match recorder {
            Some(clock) => collect(out, &turns, stage, stats, clock),
            None => collect(out, &turns, stage, stats, &mut Off),
        });
        dealer && collector
    }
}

/// A broadcast's distributor: every chunk of `input` to every branch, clones to all but
/// the last.
fn fanout<In: Clone, C: Clock>(
    input: &EdgeRx<In>,
    senders: &[EdgeTx<In>],
    token: &CancelToken,
    stats: &StageStats,
    clock: &mut C,
) {
    loop {
        let waiting = clock.mark();
        let Recv::Got(chunk) = input.recv(token, None) else {
            break;
        };
        let start = clock.mark();
        clock.wait(waiting, start);
        let n = chunk.len();
        let mut custody = Custody::new(stats);
        // If a user `clone` panics, unwinding drops the chunk: custody counts its
        // items as cancelled (the clones made so far were never counted).
        custody.take(n);
        let mut copies: Vec<Vec<In>> = Vec::with_capacity(senders.len());
        for _ in 1..senders.len() {
            copies.push(chunk.clone());
        }
        copies.push(chunk);
        stats.add(Counter::Copies, (n * (senders.len() - 1)) as u64);
        custody.take(n * (senders.len() - 1));
        let mut blocked = 0;
        for (tx, copy) in senders.iter().zip(copies) {
            let len = copy.len();
            let sending = clock.mark();
            let sent = tx.send(copy, token).is_ok();
            blocked += clock.since(sending);
            if sent {
                custody.release(len);
            }
        }
        // The producer upstream should size chunks for the slowest branch.
        let advice = senders.iter().map(|s| s.shape().advice()).min();
        input.shape().advise(advice.unwrap_or(1));
        clock.work(start, clock.mark(), blocked, n);
    }
}

/// An ordered pool's dealer: chunk `i` of `input` to worker `i mod n`.
fn deal<In, C: Clock>(input: &EdgeRx<In>, dealt: &[EdgeTx<In>], stage: &StageState, clock: &mut C) {
    let token = &stage.intake;
    for to_worker in dealt.iter().cycle() {
        let waiting = clock.mark();
        let Recv::Got(chunk) = input.recv(token, None) else {
            break;
        };
        let start = clock.mark();
        clock.wait(waiting, start);
        let mut custody = Custody::new(&stage.stats);
        custody.take(chunk.len());
        let len = chunk.len();
        let sent = to_worker.send(chunk, token).is_ok();
        // The dealer's work is the send: blocked while the worker's lane is full.
        clock.work(start, clock.mark(), u64::MAX, len);
        if !sent {
            break;
        }
        custody.release(len);
    }
}

/// An ordered pool's collector: the workers' turns in order, forwarded to the stage's
/// output.
fn collect<Out, C: Clock>(
    mut out: Outbox<Out>,
    turns: &[EdgeRx<Out>],
    stage: &StageState,
    stats: &StageStats,
    clock: &mut C,
) {
    // The collector goes on after the stage's intake stops: the turns before a
    // failure that takes effect at its position still go out.
    let token = &stage.token;
    // Forwarding costs next to nothing: let the consumer alone size the chunks.
    out.set_own_limit(usize::MAX);
    let mut custody = Custody::new(stats);
    let mut taken = vec![0u64; turns.len()];
    'turns: for (lane, from_worker) in turns.iter().enumerate().cycle() {
        loop {
            let got = match from_worker.try_recv() {
                Recv::TimedOut => {
                    // Nothing ready: send what we hold before waiting.
                    let flushing = clock.mark();
                    let blocked = out.blocked_ns();
                    out.flush(token);
                    let waiting = clock.mark();
                    clock.work(flushing, waiting, out.blocked_ns() - blocked, 0);
                    let got = from_worker.recv(token, None);
                    clock.wait(waiting, clock.mark());
                    got
                }
                got => got,
            };
            match got {
                // An empty chunk ends the worker's turn; the failing one's is the
                // last.
                Recv::Got(outputs) if outputs.is_empty() => {
                    taken[lane] += 1;
                    if *stage.last_turn.lock() == Some((lane, taken[lane])) {
                        // The failing turn: nothing after it goes out, and the
                        // dealer and the other workers stop.
                        stage.intake.cancel();
                        break 'turns;
                    }
                    break;
                }
                Recv::Got(outputs) => {
                    let start = clock.mark();
                    let blocked = out.blocked_ns();
                    let n = outputs.len();
                    custody.take(n);
                    for item in outputs {
                        custody.release(1);
                        out.push(item, token);
                    }
                    clock.work(start, clock.mark(), out.blocked_ns() - blocked, n);
                }
                _ => break 'turns,
            }
        }
    }
    let closing = clock.mark();
    let blocked = out.blocked_ns();
    let panic = out.close(token).or_else(|| out.take_panic());
    clock.work(closing, clock.mark(), out.blocked_ns() - blocked, 0);
    stats.add(Counter::Cancelled, out.take_cancelled());
    stats.add(Counter::BlockedNs, out.blocked_ns());
    if let Some(payload) = panic {
        std::panic::resume_unwind(payload);
    }
}
