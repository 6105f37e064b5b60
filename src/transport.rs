//! How items cross an edge between two threads. Private: runners see only `Worker`.
//!
//! # Chunks
//!
//! Every edge is a bounded crossbeam channel of `Vec<T>` chunks. A producer buffers outputs
//! in an [`Outbox`] and sends the buffer when it reaches the edge's *target* size; a consumer
//! takes a chunk into its [`Inbox`] and hands items out one at a time. One channel operation
//! (and at most one wake-up) thus serves a whole chunk.
//!
//! # Adapting the chunk size
//!
//! The target starts at 1. After every chunk a consumer measures its own cost per item and
//! *advises* the edge that feeds it: `BUDGET / cost`, at most twice the previous advice, at
//! most the pipeline's `max_chunk`. The producer sends when its buffer reaches the smaller of
//! that advice and the same bound computed from its *own* cost per item, so that
//!
//! - a cheap stage moves hundreds of items per channel operation;
//! - a slow consumer gets chunks of one item, so a pool never holds a chunk of slow items on
//!   one worker while another idles (at most about `BUDGET` of work sits in one chunk);
//! - a slow producer never makes its first buffered output wait for more than about
//!   `BUDGET` of its own work.
//!
//! A worker also flushes its partial chunk whenever its own input has nothing ready, before
//! it blocks: a trickle of items travels one at a time with no added delay.
//!
//! # Cancellation
//!
//! Every blocking operation here is a `select` that also watches the run's
//! [`CancelToken`](crate::CancelToken), whose channel disconnects on cancellation. A thread
//! blocked on a full or an empty channel is therefore always woken by cancellation, even
//! though the run keeps a receiver of every edge (a *tap*, for counting leftovers, see
//! `run::Spawner::edge_into`) and channels never disconnect under a blocked sender.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use crossbeam_channel::{Receiver, Select, Sender, TrySendError};

use crate::context::CancelToken;
use crate::report::nanos;

/// The most work a chunk should hold, in nanoseconds of its consumer's time.
///
/// Measured on a 2-core machine (W3 of the benchmark, a fixed pool of 2 on 5 µs items):
/// 40 µs gave 0.94× a plain loop, 200 µs 1.61×, 500 µs 1.81×. Larger chunks cost nothing
/// for a trickle (partial chunks are sent when the input is idle); they bound the imbalance
/// a pool can end with.
pub(crate) const BUDGET_NS: u64 = 500_000;

/// Default for the largest number of items in one chunk.
pub(crate) const DEFAULT_MAX_CHUNK: usize = 256;

/// State of one edge shared by its producers and consumers.
#[derive(Debug)]
pub(crate) struct Shape {
    /// The chunk size the consumers ask for.
    advice: AtomicUsize,
    /// The largest chunk size allowed on this edge.
    max: usize,
}

impl Shape {
    pub(crate) fn new(max: usize) -> Arc<Self> {
        Arc::new(Shape {
            advice: AtomicUsize::new(1),
            max: max.max(1),
        })
    }

    /// The chunk size consumers asked for last.
    #[inline]
    pub(crate) fn advice(&self) -> usize {
        // Ordering: Relaxed. The advice is a hint; any value a producer reads is a valid
        // chunk size, and a stale one only delays the adaptation by a chunk.
        self.advice.load(Ordering::Relaxed)
    }

    /// Records a consumer's wish.
    pub(crate) fn advise(&self, size: usize) {
        // Ordering: Relaxed, see `advice`.
        self.advice
            .store(size.clamp(1, self.max), Ordering::Relaxed);
    }

    /// The chunk size that keeps `cost_ns` per item within the budget, growing from
    /// `current` by at most a factor of two.
    pub(crate) fn fit(&self, current: usize, cost_ns: u64) -> usize {
        let fit = BUDGET_NS / cost_ns.max(1);
        let fit = usize::try_from(fit).unwrap_or(usize::MAX);
        fit.min(current.saturating_mul(2)).clamp(1, self.max)
    }
}

/// The sending end of an edge.
#[derive(Debug)]
pub(crate) struct EdgeTx<T> {
    pub(crate) tx: Sender<Vec<T>>,
    pub(crate) shape: Arc<Shape>,
}

impl<T> Clone for EdgeTx<T> {
    fn clone(&self) -> Self {
        EdgeTx {
            tx: self.tx.clone(),
            shape: Arc::clone(&self.shape),
        }
    }
}

/// The receiving end of an edge.
#[derive(Debug)]
pub(crate) struct EdgeRx<T> {
    pub(crate) rx: Receiver<Vec<T>>,
    pub(crate) shape: Arc<Shape>,
}

impl<T> Clone for EdgeRx<T> {
    fn clone(&self) -> Self {
        EdgeRx {
            rx: self.rx.clone(),
            shape: Arc::clone(&self.shape),
        }
    }
}

/// A new edge holding at most `capacity` chunks of at most `max_chunk` items.
pub(crate) fn edge<T>(capacity: usize, max_chunk: usize) -> (EdgeTx<T>, EdgeRx<T>) {
    let (tx, rx) = crossbeam_channel::bounded(capacity);
    let shape = Shape::new(max_chunk);
    (
        EdgeTx {
            tx,
            shape: Arc::clone(&shape),
        },
        EdgeRx { rx, shape },
    )
}

/// Sends `value` on `tx`, blocking until there is room or `token` is cancelled.
///
/// # Errors
///
/// Gives the value back when the run was cancelled first or the channel is disconnected.
pub(crate) fn send_or_cancel<M>(tx: &Sender<M>, value: M, token: &CancelToken) -> Result<(), M> {
    match tx.try_send(value) {
        Ok(()) => Ok(()),
        Err(TrySendError::Disconnected(v)) => Err(v),
        Err(TrySendError::Full(v)) => {
            let mut sel = Select::new();
            let send = sel.send(tx);
            sel.recv(token.signal());
            let oper = sel.select();
            if oper.index() == send {
                oper.send(tx, v).map_err(|e| e.into_inner())
            } else {
                // The signal only ever disconnects: cancellation.
                let _ = oper.recv(token.signal());
                Err(v)
            }
        }
    }
}

/// What a blocking receive found.
pub(crate) enum Recv<M> {
    /// A message.
    Got(M),
    /// All senders are gone.
    Closed,
    /// The run was cancelled.
    Cancelled,
    /// The deadline passed first.
    TimedOut,
}

/// Receives from `rx`, blocking until a message arrives, the channel closes, the run is
/// cancelled or `deadline` passes.
pub(crate) fn recv_or_cancel<M>(
    rx: &Receiver<M>,
    token: &CancelToken,
    deadline: Option<Instant>,
) -> Recv<M> {
    let mut sel = Select::new();
    let recv = sel.recv(rx);
    sel.recv(token.signal());
    let oper = match deadline {
        None => sel.select(),
        Some(d) => match sel.select_deadline(d) {
            Ok(oper) => oper,
            Err(_) => return Recv::TimedOut,
        },
    };
    if oper.index() == recv {
        match oper.recv(rx) {
            Ok(m) => Recv::Got(m),
            Err(_) => Recv::Closed,
        }
    } else {
        let _ = oper.recv(token.signal());
        Recv::Cancelled
    }
}

/// A producer's side of an edge: buffers outputs and sends them as chunks.
#[derive(Debug)]
pub(crate) struct Outbox<T> {
    /// Where the chunks go.
    edge: EdgeTx<T>,
    /// Outputs not sent yet.
    buf: Vec<T>,
    /// The producer's own bound on its chunk size (from its cost per item).
    own_limit: usize,
    /// The size at which the buffer is sent: the smaller of `own_limit` and the consumers'
    /// advice, refreshed at every send.
    target: usize,
    /// Set once a send failed: everything pushed afterwards is dropped and counted.
    closed: bool,
    /// In manual mode the buffer is never sent by `push`; its owner takes it instead.
    manual: bool,
    /// Items dropped because the run was cancelled, not yet reported.
    pub(crate) cancelled: u64,
    /// Nanoseconds spent blocked on a full channel, not yet reported.
    pub(crate) blocked_ns: u64,
}

impl<T> Outbox<T> {
    pub(crate) fn new(edge: EdgeTx<T>) -> Self {
        Outbox {
            edge,
            buf: Vec::new(),
            own_limit: 1,
            target: 1,
            closed: false,
            manual: false,
            cancelled: 0,
            blocked_ns: 0,
        }
    }

    /// Recomputes the size at which the buffer is sent.
    fn retarget(&mut self) {
        self.target = if self.manual {
            usize::MAX
        } else {
            self.edge.shape.advice().min(self.own_limit)
        };
    }

    /// Switches to manual mode: `push` only buffers, and the owner takes the buffer with
    /// [`take`](Self::take).
    pub(crate) fn set_manual(&mut self) {
        self.manual = true;
        self.retarget();
    }

    /// Takes everything buffered.
    pub(crate) fn take(&mut self) -> Vec<T> {
        std::mem::take(&mut self.buf)
    }

    /// Sets the producer's own bound on its chunk size.
    pub(crate) fn set_own_limit(&mut self, limit: usize) {
        self.own_limit = limit.max(1);
        self.retarget();
    }

    /// Items buffered and not sent.
    pub(crate) fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Buffers `item` without sending anything.
    #[inline]
    pub(crate) fn buffer(&mut self, item: T) {
        if self.closed {
            self.cancelled += 1;
        } else {
            self.buf.push(item);
        }
    }

    /// Buffers `item`, sending the buffer when it is full.
    #[inline]
    pub(crate) fn push(&mut self, item: T, token: &CancelToken) {
        if self.closed {
            self.cancelled += 1;
            return;
        }
        self.buf.push(item);
        if self.buf.len() >= self.target {
            self.flush(token);
        }
    }

    /// Sends whatever is buffered. Returns false once the edge is closed by cancellation.
    pub(crate) fn flush(&mut self, token: &CancelToken) -> bool {
        if self.closed {
            return false;
        }
        if self.buf.is_empty() {
            return true;
        }
        self.retarget();
        let next = Vec::with_capacity(self.target);
        let chunk = std::mem::replace(&mut self.buf, next);
        let started = Instant::now();
        let sent = send_or_cancel(&self.edge.tx, chunk, token);
        self.blocked_ns += nanos(started.elapsed());
        match sent {
            Ok(()) => true,
            Err(chunk) => {
                self.closed = true;
                self.cancelled += chunk.len() as u64;
                false
            }
        }
    }

    /// Drops the buffer, counting its items as cancelled.
    pub(crate) fn discard(&mut self) {
        self.cancelled += self.buf.len() as u64;
        self.buf.clear();
        self.closed = true;
    }
}

/// A consumer's side of an edge: the current chunk, handed out item by item.
#[derive(Debug)]
pub(crate) struct Inbox<T> {
    /// Where chunks come from.
    rx: Receiver<Vec<T>>,
    /// The shape of the edge this consumer advises (the stage's input edge, even when a
    /// dispatcher stands in between).
    shape: Arc<Shape>,
    /// The rest of the current chunk.
    buf: std::vec::IntoIter<T>,
}

impl<T> Inbox<T> {
    pub(crate) fn new(rx: Receiver<Vec<T>>, shape: Arc<Shape>) -> Self {
        Inbox {
            rx,
            shape,
            buf: Vec::new().into_iter(),
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

    /// Makes `chunk` the current chunk. The old one must be used up.
    pub(crate) fn load(&mut self, chunk: Vec<T>) {
        debug_assert_eq!(self.buf.len(), 0);
        self.buf = chunk.into_iter();
    }

    /// Takes the next chunk if one is ready, without blocking.
    pub(crate) fn try_take(&mut self) -> Recv<usize> {
        match self.rx.try_recv() {
            Ok(chunk) => {
                let n = chunk.len();
                self.load(chunk);
                Recv::Got(n)
            }
            Err(crossbeam_channel::TryRecvError::Empty) => Recv::TimedOut,
            Err(crossbeam_channel::TryRecvError::Disconnected) => Recv::Closed,
        }
    }

    /// Waits for the next chunk.
    pub(crate) fn take(&mut self, token: &CancelToken, deadline: Option<Instant>) -> Recv<usize> {
        match recv_or_cancel(&self.rx, token, deadline) {
            Recv::Got(chunk) => {
                let n = chunk.len();
                self.load(chunk);
                Recv::Got(n)
            }
            Recv::Closed => Recv::Closed,
            Recv::Cancelled => Recv::Cancelled,
            Recv::TimedOut => Recv::TimedOut,
        }
    }

    /// Drops the rest of the current chunk, returning how many items it held.
    pub(crate) fn discard(&mut self) -> u64 {
        let n = self.buf.len() as u64;
        self.buf = Vec::new().into_iter();
        n
    }

    pub(crate) fn shape(&self) -> &Arc<Shape> {
        &self.shape
    }

    pub(crate) fn receiver(&self) -> &Receiver<Vec<T>> {
        &self.rx
    }
}

/// Measures a consumer's cost per item chunk by chunk and turns it into chunk sizes.
#[derive(Debug)]
pub(crate) struct Pacer {
    /// When the current chunk was taken.
    started: Instant,
    /// Items in the current chunk.
    items: usize,
    /// The producer's blocked time when the chunk was taken (subtracted from busy time).
    blocked_at_start: u64,
    /// Whether a chunk is open (taken and not yet finished).
    open: bool,
    /// The current chunk size bound.
    limit: usize,
}

impl Pacer {
    /// A pacer starting from `limit`: a new worker of a pool starts from the size its
    /// siblings found, not from 1.
    pub(crate) fn new(limit: usize) -> Self {
        Pacer {
            started: Instant::now(),
            items: 0,
            blocked_at_start: 0,
            open: false,
            limit: limit.max(1),
        }
    }

    /// Closes the current chunk at `now`; returns the busy nanoseconds spent on it.
    /// `blocked_ns` is the running total of time blocked on output, subtracted from it.
    pub(crate) fn finish(&mut self, now: Instant, blocked_ns: u64, shape: &Shape) -> u64 {
        if !std::mem::replace(&mut self.open, false) {
            return 0;
        }
        let elapsed = nanos(now.saturating_duration_since(self.started));
        let busy = elapsed.saturating_sub(blocked_ns.saturating_sub(self.blocked_at_start));
        if self.items > 0 {
            self.limit = shape.fit(self.limit, busy / self.items as u64);
            shape.advise(self.limit);
        }
        busy
    }

    /// Opens a chunk of `items` items at `now`.
    pub(crate) fn begin(&mut self, now: Instant, items: usize, blocked_ns: u64) {
        self.started = now;
        self.items = items;
        self.blocked_at_start = blocked_ns;
        self.open = true;
    }

    /// The consumer's own chunk size bound.
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }
}
