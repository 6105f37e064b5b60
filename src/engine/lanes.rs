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
//!          ┌─▶ worker 0 ─▶ turns 0 ─┐
//! input ───┤   (tickets 1, 3, 4 …)  ├─▶ forwarded by whichever worker holds the
//!          └─▶ worker 1 ─▶ turns 1 ─┘   collector, ticket by ticket ─▶ output
//! ```
//!
//! No thread of its own: the workers take their chunks from the stage's input, and they
//! forward each other's outputs.
//!
//! **Tickets.** Each chunk a worker takes from the input gets the next ticket (under a
//! lock held across the receive, `transport::SharedInput::ordered`), and the taker's lane
//! is queued in ticket order (a `TurnOrder`). Tickets thus follow input order, and a
//! worker that is free takes the next chunk, whichever it is.
//!
//! **Turns.** For each chunk it takes, a worker takes one *turn* on its lane: zero or more
//! chunks of outputs, then an empty chunk. Its turns are in its tickets' order, so the
//! turns of ticket `t` are at the front of its lane once every earlier ticket's turn has
//! been forwarded. A one-to-many processor's outputs flow on with backpressure instead of
//! piling up: besides its input, the stage holds at most `workers × (2 × window + 1)`
//! chunks (per worker, the chunk it processes and a lane of `2 × window` chunks: `window`
//! turns of one chunk of outputs and its end), and each loan (below) one reply lane of as
//! many.
//!
//! **Collecting.** The [`Collector`] holds the stage's output and the lanes' receivers. A
//! worker that has sent a chunk into a lane (or a loan's reply) calls it (`AfterSend`):
//! it forwards turns in ticket order, without ever waiting for a lane, until the next
//! ticket's turn is not ready, then sends what it holds (a trickle is not delayed). One
//! worker forwards at a time; one that finds the collector busy leaves a note
//! (`pending`) that the busy one reads after it lets go, and then looks again. So a pass
//! starts after every send: outputs never wait in a lane unless an earlier ticket's turn
//! is unfinished (its worker will send, and call) or a pass is under way (it will reach
//! them). The forwarding worker may block on the stage's output, as a collector thread
//! would; the others go on until their lanes are full. The last worker to leave
//! forwards what is left and closes the output; a lane that closes in the middle of a
//! turn (its worker was cancelled or died) ends the forwarding, as does the turn of a
//! failure at a position (below).
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
//! A worker keeps the rest of its chunk in a stash its siblings can reach (the workers
//! share one group of stashes, `transport::Siblings`). A sibling with nothing to do
//! steals the back half of a stuck stash: it mails a reply lane's receiver to the owner
//! (the steal's number says where the items were), sends the loan's outputs to that lane
//! and ends it with an empty chunk. The owner, once its own part is out, forwards the
//! replies latest steal first (each steal took the back of what was left, so a later one
//! holds earlier items), then ends its turn: the collector sees one turn per ticket, as
//! without loans. Loans nest: a thief's stash can be stolen from in turn. A loan that ends
//! without its empty chunk failed at a position (the thief marked the owner's turn as the
//! last) or was cancelled: the owner forwards nothing after it.
//!
//! A failure at a position marks its turn's ticket as the last (`StageState::fail_in_turn`)
//! before the turn ends: the pass that forwards that turn cancels the stage's intake and
//! ends the forwarding.
//!
//! Every lane is tapped (leftovers count as cancelled for the stage), and the workers are
//! counted as readers of the stage's input like any runner's (see `stage`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering, fence};

use super::counters::{Counter, Custody, StageStats};
use super::record::{Clock, Off};
use super::stage::{StageHandle, report_thread_panic};
use super::state::StageState;
use super::worker::{Output, Worker};
use crate::context::CancelToken;
use crate::transport::{
    AfterSend, EdgeRx, EdgeTx, Loan, Outbox, Payload, Recv, Shape, SharedInput, TurnOrder,
    recv_or_cancel,
};
use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;

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
    /// inputs, each queueing at most `2 × window` chunks ahead of the pool's output
    /// (`window` turns of one chunk of outputs and its end; see
    /// [`Ordered`](crate::Ordered)). Returns whether every thread started.
    pub fn spawn_ordered<F>(&self, workers: usize, window: usize, f: F) -> bool
    where
        F: Fn(Worker<'scope, In, Out>) + Send + Sync + 'scope,
    {
        if workers == 0 {
            return true;
        }
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
        let (input, order) = SharedInput::ordered(self.input().clone());
        let (lanes, turns): (Vec<_>, Vec<_>) = (0..workers)
            .map(|_| {
                self.spawner
                    .lane_in(index, turns_capacity, Arc::clone(&output_shape))
            })
            .unzip();
        let out = Outbox::new(self.output.clone());
        let collector = Arc::new(Collector::new(out, turns, order, self.stage, workers));
        for (lane, edge) in lanes.into_iter().enumerate() {
            let f = Arc::clone(&f);
            let output = Output::Turns {
                edge,
                lane,
                loans: Arc::clone(&loans),
                collector: Arc::clone(&collector),
            };
            let started = self.spawn_worker_on(Arc::clone(&input), output, move |w| f(w));
            if !started {
                // The workers that will never start leave at once; the last to go
                // closes the output.
                for _ in lane..workers {
                    if let Some(payload) = collector.leave() {
                        let run = self.spawner.run();
                        let index = self.stage.next_index();
                        report_thread_panic(run, self.stage, index, false, &*payload);
                    }
                }
                return false;
            }
        }
        true
    }
}

/// An ordered pool's output, forwarded by its own workers: the turns of their lanes in
/// ticket order (see the module docs, "Collecting").
pub(super) struct Collector<'scope, Out> {
    /// The forwarding state; held by the worker forwarding now.
    state: Mutex<Collecting<Out>>,
    /// Set by a worker that sent a chunk into a lane while another was forwarding: the
    /// forwarding one looks again before it lets go.
    pending: AtomicBool,
    /// Workers that have not left yet.
    live: AtomicUsize,
    /// The stage.
    stage: &'scope StageState,
}

/// What the worker forwarding an ordered pool's turns holds.
struct Collecting<Out> {
    /// The stage's output.
    out: Outbox<Out>,
    /// The workers' lanes; let go of when the pool stops forwarding (the run's taps count
    /// what is left in them). A worker blocked on a full lane then wakes through its
    /// token: the stage's intake is cancelled with the last turn, and the run is
    /// cancelled when a lane closes in the middle of a turn.
    turns: Vec<EdgeRx<Out>>,
    /// The lane of each ticket's taker, in ticket order.
    order: TurnOrder,
    /// The lane whose turn is being forwarded, if its ticket has been read from `order`.
    current: Option<usize>,
    /// Turns forwarded whole so far: the ticket of the last one.
    forwarded: u64,
    /// Set once the pool forwards nothing more.
    done: bool,
    /// A panic an item's `Drop` raised when the output could not take it.
    panic: Option<Payload>,
}

impl<'scope, Out> Collector<'scope, Out> {
    fn new(
        mut out: Outbox<Out>,
        turns: Vec<EdgeRx<Out>>,
        order: TurnOrder,
        stage: &'scope StageState,
        workers: usize,
    ) -> Self {
        // Forwarding costs next to nothing: let the consumer alone size the chunks.
        out.set_own_limit(usize::MAX);
        Collector {
            state: Mutex::new(Collecting {
                out,
                turns,
                order,
                current: None,
                forwarded: 0,
                done: false,
                panic: None,
            }),
            pending: AtomicBool::new(false),
            live: AtomicUsize::new(workers),
            stage,
        }
    }

    /// A worker of the pool leaves; the last one forwards what is left, closes the
    /// output and returns the payload of a panic in an item's `Drop` met while
    /// forwarding, for it to report.
    ///
    /// Only the last one takes the lock here: a worker that holds it must honour
    /// `pending` (see `sent`), and by the time the last one leaves nobody sends.
    pub(super) fn leave(&self) -> Option<Payload> {
        // Ordering: AcqRel; the last one out sees every lane's last send.
        if self.live.fetch_sub(1, Ordering::AcqRel) != 1 {
            return None;
        }
        let mut state = self.state.lock();
        state.forward(self.stage);
        state.finish(self.stage);
        state.panic.take()
    }
}

impl<Out> AfterSend for Collector<'_, Out> {
    /// Forwards what is ready, unless another worker is forwarding: then that one looks
    /// again before it lets go.
    fn sent(&self) {
        // Ordering: SeqCst on `pending`, and a SeqCst fence on each side between it and
        // the lock (whose failed `try_lock` is a plain load, and whose unlock a release:
        // without the fences a weakly ordered CPU may let both sides read the other's old
        // value). A sender sets the note after its send and before it tries the lock; the
        // forwarding worker clears it before it looks at the lanes and reads it after it
        // lets go of the lock: either it sees the note, or its look began after the send,
        // or the sender's `try_lock` finds the lock free.
        loop {
            self.pending.store(true, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            let Some(mut state) = self.state.try_lock() else {
                return;
            };
            // A swap, not a store: reading a sender's note makes its send visible here.
            self.pending.swap(false, Ordering::SeqCst);
            state.forward(self.stage);
            drop(state);
            fence(Ordering::SeqCst);
            if !self.pending.load(Ordering::SeqCst) {
                return;
            }
        }
    }
}

impl<Out> Collecting<Out> {
    /// Forwards the turns that are ready, in ticket order, until the next one is not.
    /// Never waits for a lane; may wait for room in the stage's output.
    fn forward(&mut self, stage: &StageState) {
        // Outputs go on after the stage's intake stops: the turns before a failure that
        // takes effect at its position still go out.
        let token = &stage.token;
        while !self.done {
            let Some(lane) = self.current.or_else(|| self.order.next()) else {
                break;
            };
            self.current = Some(lane);
            match self.turns[lane].try_recv() {
                // An empty chunk ends the turn; the failing one's is the last.
                Recv::Got(outputs) if outputs.is_empty() => {
                    self.current = None;
                    self.forwarded += 1;
                    if stage.is_last_turn(self.forwarded) {
                        // Nothing after it goes out, and the workers stop reading.
                        stage.intake.cancel();
                        self.finish(stage);
                    }
                }
                Recv::Got(outputs) => {
                    let mut custody = Custody::new(&stage.stats);
                    custody.take(outputs.len());
                    for item in outputs {
                        custody.release(1);
                        self.out.push(item, token);
                    }
                }
                // Not ready: send what is held, so that a trickle is not delayed.
                Recv::TimedOut => break,
                // The lane's worker left in the middle of a turn (the run was cancelled,
                // or it died): nothing after that turn can go out.
                Recv::Closed | Recv::Cancelled => self.finish(stage),
            }
        }
        if !self.done {
            self.out.flush(token);
        }
    }

    /// Stops forwarding: closes the stage's output and lets go of the lanes.
    fn finish(&mut self, stage: &StageState) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let panic = self
            .out
            .close(&stage.token)
            .or_else(|| self.out.take_panic());
        self.panic = self.panic.take().or(panic);
        stage
            .stats
            .add(Counter::Cancelled, self.out.take_cancelled());
        // Leftovers in the lanes are counted by their taps.
        self.turns.clear();
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
    /// lane `lane` has just finished, calling `after_send` after each chunk it sends.
    /// Returns whether every loan ended whole: a loan that ends without its end failed at
    /// a position (or was cancelled), and what came after it must not go out.
    pub(super) fn forward(
        &self,
        lane: usize,
        lent: u32,
        out: &mut Outbox<Out>,
        token: &CancelToken,
        after_send: &dyn AfterSend,
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
                            if out.push(item, token) {
                                out.after_send(after_send);
                            }
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
