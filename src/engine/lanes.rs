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
//! piling up: besides its input the stage holds at most `workers × (window + 2)` chunks,
//! and each loan (below) one reply lane of as many.
//!
//! # Loans
//!
//! ```text
//! worker 0: its chunk [a b c d e f]; stuck in a, so idle siblings steal from the back
//!   worker 1 steals [d e f] (loan 0) ─▶ reply 0 ─┐
//!   worker 2 steals [c]     (loan 1) ─▶ reply 1 ─┤  worker 0, after b: forwards reply 1,
//!                                                 └─ then reply 0, then ends its turn
//! ```
//!
//! A worker keeps the rest of its chunk in a stash its siblings can reach (the workers'
//! lanes share one group of stashes, `transport::Siblings`). A sibling with nothing to do
//! steals the back half of a stuck stash: it mails a reply lane's receiver to the owner
//! (the steal's number says where the items were), sends the loan's outputs to that lane
//! and ends it with an empty chunk. The owner, once its own part is out, forwards the
//! replies latest steal first (each steal took the back of what was left, so a later one
//! holds earlier items), then ends its turn: the collector sees one turn per chunk, as
//! without loans. Loans nest: a thief's stash can be stolen from in turn. A loan that ends
//! without its empty chunk failed at a position (the thief marked the owner's turn as the
//! last) or was cancelled: the owner forwards nothing after it.
//!
//! Every lane is tapped (leftovers count as cancelled for the stage) and every lane's
//! readers are counted like the stage input's (see `stage`).

use std::sync::Arc;

use super::counters::{Counter, Custody, StageStats};
use super::record::{Clock, Off};
use super::stage::StageHandle;
use super::state::{StageState, turn_key};
use super::worker::{Output, Worker};
use crate::context::CancelToken;
use crate::transport::{
    EdgeRx, EdgeTx, Loan, Outbox, Recv, Shape, SharedInput, Siblings, recv_or_cancel,
};
use crossbeam_channel::{Receiver, Sender};

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
        // A turn is at least two chunks (outputs, then the empty end): room for `window`
        // turns of outputs. A loan's reply holds as much as a lane.
        let turns_capacity = window.saturating_mul(2);
        let output_shape = Arc::clone(self.output.shape());
        let loans = {
            let spawner = self.spawner.clone();
            let shape = Arc::clone(&output_shape);
            Arc::new(Loans::new(workers, move || {
                spawner.lane_in(index, turns_capacity, Arc::clone(&shape))
            }))
        };
        let siblings = Siblings::new();
        let mut dealt = Vec::with_capacity(workers);
        let mut turns = Vec::with_capacity(workers);
        for lane in 0..workers {
            let input_shape = Arc::clone(self.input().shape());
            let (to_worker, from_dealer) = self.spawner.lane_in(index, 1, input_shape);
            let (to_collector, from_worker) =
                self.spawner
                    .lane_in(index, turns_capacity, Arc::clone(&output_shape));
            let f = Arc::clone(&f);
            let output = Output::Turns {
                edge: to_collector,
                lane,
                loans: Arc::clone(&loans),
            };
            let started = self
                .with_shared_input(SharedInput::dealt(from_dealer, &siblings))
                .spawn_worker(output, move |w| f(w));
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
            Some(clock) => deal(&input, &dealt, &siblings, stage, clock),
            None => deal(&input, &dealt, &siblings, stage, &mut Off),
        });

        let out = Outbox::new(self.output.clone());
        let collector = self.spawn_recorded_helper("collect", move |recorder| match recorder {
            Some(clock) => collect(out, &turns, stage, stats, clock),
            None => collect(out, &turns, stage, stats, &mut Off),
        });
        dealer && collector
    }
}

/// What the workers of an ordered pool share to lend each other work: a mailbox per lane,
/// through which a thief hands the owner the receiver of its loan's outputs, and how to
/// make those receivers' lanes (tapped like the pool's other lanes).
pub(super) struct Loans<'scope, Out> {
    /// Per lane: the steal's number and the loan's outputs.
    mail: Vec<Mailbox<Out>>,
    /// Makes a lane for a loan's outputs.
    make: Box<dyn Fn() -> (EdgeTx<Out>, EdgeRx<Out>) + Send + Sync + 'scope>,
}

/// A loan's number among the steals from its owner's chunk, and its outputs.
type Mail<Out> = (u32, EdgeRx<Out>);

/// Where a lane's owner gets the mail of its loans.
type Mailbox<Out> = (Sender<Mail<Out>>, Receiver<Mail<Out>>);

impl<'scope, Out> Loans<'scope, Out> {
    fn new(
        lanes: usize,
        make: impl Fn() -> (EdgeTx<Out>, EdgeRx<Out>) + Send + Sync + 'scope,
    ) -> Self {
        Loans {
            mail: (0..lanes).map(|_| crossbeam_channel::unbounded()).collect(),
            make: Box::new(make),
        }
    }

    /// A thief took `loan`: returns the sender its outputs go to, after handing the
    /// receiver to the owner.
    pub(super) fn open(&self, loan: Loan) -> EdgeTx<Out> {
        let (tx, rx) = (self.make)();
        // Unbounded, and this struct holds a receiver: the send cannot fail or block.
        let _ = self.mail[loan.from].0.send((loan.no, rx));
        tx
    }

    /// Forwards to `out`, in order, the outputs of the `lent` loans taken from the chunk
    /// lane `lane` has just finished. Returns whether every loan ended whole: a loan that
    /// ends without its end failed at a position (or was cancelled), and what came after
    /// it must not go out.
    pub(super) fn forward(
        &self,
        lane: usize,
        lent: u32,
        out: &mut Outbox<Out>,
        token: &CancelToken,
    ) -> bool {
        // Each thief sent its mail right after its steal, which came before this chunk was
        // used up.
        let mut replies: Vec<Option<EdgeRx<Out>>> = (0..lent).map(|_| None).collect();
        for _ in 0..lent {
            match recv_or_cancel(&self.mail[lane].1, token, None) {
                Recv::Got((no, reply)) => {
                    if let Some(slot) = replies.get_mut(no as usize) {
                        *slot = Some(reply);
                    }
                }
                _ => return false,
            }
        }
        // Each steal took the back half of what was left: a later one holds items nearer
        // the front.
        for reply in replies.into_iter().rev() {
            let Some(reply) = reply else { return false };
            loop {
                match reply.recv(token, None) {
                    Recv::Got(outputs) if outputs.is_empty() => break,
                    Recv::Got(outputs) => {
                        for item in outputs {
                            out.push(item, token);
                        }
                    }
                    _ => return false,
                }
            }
        }
        true
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

/// An ordered pool's dealer: chunk `i` of `input` to worker `i mod n`. Each chunk counts
/// as on its way to the workers' `siblings` until its worker has loaded it (see
/// `transport::inbox`).
fn deal<In, C: Clock>(
    input: &EdgeRx<In>,
    dealt: &[EdgeTx<In>],
    siblings: &Siblings<In>,
    stage: &StageState,
    clock: &mut C,
) {
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
        siblings.dealing();
        let sent = to_worker.send(chunk, token).is_ok();
        // The dealer's work is the send: blocked while the worker's lane is full.
        clock.work(start, clock.mark(), u64::MAX, len);
        if !sent {
            siblings.not_dealt();
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
                    if stage.is_last_turn(turn_key(taken[lane], lane)) {
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
