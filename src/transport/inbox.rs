//! A consumer's side of an edge, and the input its consumers share.
//!
//! # Giving work back
//!
//! Chunks are sized for the cost of the items seen so far. When the cost shifts — slow
//! items after many cheap ones — a whole chunk of slow items could sit behind one worker
//! while its siblings idle. So a consumer that still holds items when it starts one, while a
//! sibling waits for input, gives the rest of its chunk back through the input's *spill*
//! lane, one item per chunk, before starting its item. Waiting consumers take from the
//! spill lane first. A lane with a single consumer (a FIFO stage, each worker of an ordered
//! pool) never has an idle sibling, so order-keeping stages keep their order.
//!
//! A consumer that finds the input closed keeps waiting while a sibling still holds items
//! it might give back (`holders`), so nothing given back is left without a taker.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::{EdgeRx, EdgeTx, Either, Payload, Recv, Shape, dispose, lane, recv_either};
use crate::context::CancelToken;

/// The input of a group of consumers: the edge, and the spill lane they give work back
/// through.
#[derive(Debug)]
pub(crate) struct SharedInput<T> {
    /// The edge.
    input: EdgeRx<T>,
    /// Where consumers give items back (never disconnects: this holds a sender).
    spill_tx: EdgeTx<T>,
    /// Where waiting consumers take them.
    spill_rx: EdgeRx<T>,
    /// Consumers waiting for input now.
    idle: AtomicUsize,
    /// Consumers holding items beyond the one they process.
    holders: AtomicUsize,
}

/// How often a consumer that found the input closed looks again while a sibling holds
/// items.
const CLOSING_POLL: Duration = Duration::from_millis(1);

// Ordering: SeqCst on `idle` and `holders`. A consumer gives items back (sends) before it
// stops counting as a holder, and a waiting consumer reads `holders == 0` before it looks
// at the spill lane one last time: with one total order, a zero it reads comes after the
// send, so the last look finds the items.

impl<T> SharedInput<T> {
    /// The shared input of `input`, whose spill lane holds up to `spill` chunks.
    pub(crate) fn new(input: EdgeRx<T>, spill: usize) -> Arc<Self> {
        let (spill_tx, spill_rx) = lane(spill, Arc::clone(input.shape()));
        Arc::new(SharedInput {
            input,
            spill_tx,
            spill_rx,
            idle: AtomicUsize::new(0),
            holders: AtomicUsize::new(0),
        })
    }

    /// The edge.
    pub(crate) fn edge(&self) -> &EdgeRx<T> {
        &self.input
    }

    /// Consumers holding items beyond the one they process (work a new sibling would get
    /// at their next item).
    pub(crate) fn holders(&self) -> usize {
        self.holders.load(Ordering::SeqCst)
    }

    /// The spill lane (for the run's tap).
    pub(crate) fn spill(&self) -> &EdgeRx<T> {
        &self.spill_rx
    }
}

/// A consumer's side of an edge: the current chunk, handed out item by item.
#[derive(Debug)]
pub(crate) struct Inbox<T> {
    /// Where chunks come from.
    shared: Arc<SharedInput<T>>,
    /// The shape of the edge this consumer advises (the stage's input edge, even when the
    /// chunks come through a lane of the stage's own).
    shape: Arc<Shape>,
    /// The rest of the current chunk.
    buf: std::vec::IntoIter<T>,
    /// Whether this consumer counts in `holders`.
    holding: bool,
}

/// What a take found.
#[derive(Debug)]
pub(crate) enum Took {
    /// A chunk of this many items from the edge.
    Input(usize),
    /// A chunk a sibling gave back.
    Spill(usize),
}

impl Took {
    /// Items in the chunk.
    pub(crate) fn len(&self) -> usize {
        match *self {
            Took::Input(n) | Took::Spill(n) => n,
        }
    }
}

impl<T> Inbox<T> {
    pub(crate) fn new(shared: Arc<SharedInput<T>>, shape: Arc<Shape>) -> Self {
        Inbox {
            shared,
            shape,
            buf: Vec::new().into_iter(),
            holding: false,
        }
    }

    /// The next item of the current chunk.
    #[inline]
    pub(crate) fn next_buffered(&mut self) -> Option<T> {
        self.buf.next()
    }

    /// Items left in the current chunk.
    pub(crate) fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Whether a sibling waits for input while this consumer holds items: call
    /// [`give_back`](Self::give_back) then. One atomic load.
    #[inline]
    pub(crate) fn should_give_back(&self) -> bool {
        self.buf.len() > 0 && self.shared.idle.load(Ordering::SeqCst) > 0
    }

    /// Gives the rest of the current chunk back to the siblings, one item per chunk, as far
    /// as the spill lane has room; returns how many items went.
    pub(crate) fn give_back(&mut self) -> usize {
        let mut given = 0;
        let mut rest: Vec<T> = std::mem::replace(&mut self.buf, Vec::new().into_iter()).collect();
        // Give from the back, so that what this consumer keeps is the front, in order.
        while let Some(item) = rest.pop() {
            match self.shared.spill_tx.try_send(vec![item]) {
                Ok(()) => given += 1,
                Err(mut back) => {
                    rest.append(&mut back);
                    break;
                }
            }
        }
        self.buf = rest.into_iter();
        if self.buf.len() == 0 {
            self.stop_holding();
        }
        given
    }

    fn stop_holding(&mut self) {
        if std::mem::take(&mut self.holding) {
            self.shared.holders.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Makes `chunk` the current chunk. The old one must be used up.
    pub(crate) fn load(&mut self, chunk: Vec<T>) {
        debug_assert_eq!(self.buf.len(), 0);
        if chunk.len() > 1 && !self.holding {
            self.holding = true;
            self.shared.holders.fetch_add(1, Ordering::SeqCst);
        }
        self.buf = chunk.into_iter();
    }

    /// Takes the next chunk if one is ready, without blocking.
    pub(crate) fn try_take(&mut self) -> Recv<Took> {
        self.stop_holding();
        if let Recv::Got(chunk) = self.shared.spill_rx.try_recv() {
            return Recv::Got(self.loaded(chunk, true));
        }
        match self.shared.input.try_recv() {
            Recv::Got(chunk) => Recv::Got(self.loaded(chunk, false)),
            // Closed, but a sibling may still give items back: only a blocking take waits.
            Recv::Closed if self.shared.holders.load(Ordering::SeqCst) == 0 => Recv::Closed,
            Recv::Closed | Recv::TimedOut => Recv::TimedOut,
            Recv::Cancelled => Recv::Cancelled,
        }
    }

    /// Waits for the next chunk until `deadline` at most.
    pub(crate) fn take(&mut self, token: &CancelToken, deadline: Option<Instant>) -> Recv<Took> {
        self.stop_holding();
        self.shared.idle.fetch_add(1, Ordering::SeqCst);
        let got = match recv_either(&self.shared.input, &self.shared.spill_rx, token, deadline) {
            Either::First(chunk) => Recv::Got((chunk, false)),
            Either::Second(chunk) => Recv::Got((chunk, true)),
            Either::FirstClosed => Recv::Closed,
            Either::Cancelled => Recv::Cancelled,
            Either::Idle => Recv::TimedOut,
        };
        let got = match got {
            Recv::Got((chunk, spilled)) => Recv::Got(self.loaded(chunk, spilled)),
            Recv::Closed => self.closing(deadline, token),
            Recv::Cancelled => Recv::Cancelled,
            Recv::TimedOut => Recv::TimedOut,
        };
        self.shared.idle.fetch_sub(1, Ordering::SeqCst);
        got
    }

    /// The input has closed: wait for items siblings may still give back, until none holds
    /// any (or `deadline`, or cancellation).
    fn closing(&mut self, deadline: Option<Instant>, token: &CancelToken) -> Recv<Took> {
        loop {
            let none_held = self.shared.holders.load(Ordering::SeqCst) == 0;
            if let Recv::Got(chunk) = self.shared.spill_rx.try_recv() {
                return Recv::Got(self.loaded(chunk, true));
            }
            if none_held {
                return Recv::Closed;
            }
            let poll = Instant::now() + CLOSING_POLL;
            let until = deadline.map_or(poll, |d| d.min(poll));
            match self.shared.spill_rx.recv(token, Some(until)) {
                Recv::Got(chunk) => return Recv::Got(self.loaded(chunk, true)),
                Recv::Cancelled => return Recv::Cancelled,
                Recv::Closed | Recv::TimedOut => {}
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Recv::TimedOut;
            }
        }
    }

    fn loaded(&mut self, chunk: Vec<T>, spilled: bool) -> Took {
        let n = chunk.len();
        self.load(chunk);
        if spilled {
            Took::Spill(n)
        } else {
            Took::Input(n)
        }
    }

    /// Drops the rest of the current chunk; returns how many items it held and the payload
    /// of a panic in an item's `Drop`.
    pub(crate) fn discard(&mut self) -> (u64, Option<Payload>) {
        self.stop_holding();
        dispose(std::mem::replace(&mut self.buf, Vec::new().into_iter()))
    }

    pub(crate) fn shape(&self) -> &Arc<Shape> {
        &self.shape
    }

    pub(crate) fn edge(&self) -> &EdgeRx<T> {
        &self.shared.input
    }
}

impl<T> Drop for Inbox<T> {
    fn drop(&mut self) {
        self.stop_holding();
    }
}
