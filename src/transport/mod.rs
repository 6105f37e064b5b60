//! How items cross an edge between two threads. Private: runners see only `Worker`; the
//! engine sees edges, inboxes and outboxes, never a crossbeam type.
//!
//! # Chunks
//!
//! Every edge is a bounded crossbeam channel of `Vec<T>` chunks. A producer buffers outputs
//! in an [`Outbox`] and sends the buffer when it reaches the edge's *target* size; a consumer
//! takes a chunk into its [`Inbox`] and hands items out one at a time. One channel operation
//! (and at most one wake-up) thus serves a whole chunk. How big a chunk is lives in one
//! place, [`pace`].
//!
//! # Blocking and cancellation
//!
//! A thread that finds an edge full or empty spins a little ([`Backoff`]), then parks on
//! the edge's bells ([`bell`]): each chunk sent rings the edge's items bell, each chunk
//! taken its room bell, and the waiter is also on its [`CancelToken`]'s sleepers. A thread
//! blocked on a full or an empty edge is therefore always woken by cancellation, even
//! though the run keeps a receiver of every edge (a *tap*, for counting leftovers) and
//! channels never disconnect under a blocked sender. Waits on other channels (a stage's
//! loan mail, a user's receiver as a source) are a `select` that also watches the token's
//! channel, which disconnects on cancellation.
//!
//! # Dropping items
//!
//! Items are user types whose `Drop` may panic. Whatever this module drops on the engine's
//! behalf goes through [`dispose`], which counts first and catches the panic, so that a
//! panicking `Drop` can neither cut a clean-up short nor lose a count.

mod bell;
mod inbox;
mod outbox;
pub(crate) mod pace;

pub(crate) use inbox::{Inbox, Loan, SharedInput, Took, TurnOrder};
pub(crate) use outbox::{AfterSend, Outbox};
pub(crate) use pace::{Pacer, Shape};

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use crossbeam_channel::{Receiver, Select, Sender, TryRecvError, TrySendError};

use crate::context::CancelToken;
use bell::{Bell, First, GaveUp};

/// The payload of a caught panic.
pub(crate) type Payload = Box<dyn Any + Send>;

/// The sending end of an edge.
#[derive(Debug)]
pub(crate) struct EdgeTx<T> {
    /// The channel of chunks.
    tx: Sender<Vec<T>>,
    /// The chunk sizes the consumers ask for.
    shape: Arc<Shape>,
    /// Held by a sender while it tries to send without blocking (see `send_or_cancel`).
    gate: Arc<parking_lot::Mutex<()>>,
    /// The edge's bells. Declared after `tx`: dropped after it (see [`End`]).
    ends: End,
}

impl<T> Clone for EdgeTx<T> {
    fn clone(&self) -> Self {
        EdgeTx {
            tx: self.tx.clone(),
            shape: Arc::clone(&self.shape),
            gate: Arc::clone(&self.gate),
            ends: self.ends.clone(),
        }
    }
}

/// The receiving end of an edge.
#[derive(Debug)]
pub(crate) struct EdgeRx<T> {
    /// The channel of chunks.
    rx: Receiver<Vec<T>>,
    /// The chunk sizes the consumers ask for.
    shape: Arc<Shape>,
    /// The edge's bells. Declared after `rx`: dropped after it (see [`End`]).
    ends: End,
}

impl<T> Clone for EdgeRx<T> {
    fn clone(&self) -> Self {
        EdgeRx {
            rx: self.rx.clone(),
            shape: Arc::clone(&self.shape),
            ends: self.ends.clone(),
        }
    }
}

/// What the ends of one edge share besides the channel: its bells, and how many ends of
/// each side are left.
#[derive(Debug, Default)]
struct Ends {
    /// Rung by each chunk sent, and for everyone when the last sender is gone.
    items: Bell,
    /// Rung by each chunk taken, and for everyone when the last receiver is gone.
    room: Bell,
    /// `EdgeTx`es alive.
    senders: AtomicUsize,
    /// `EdgeRx`es alive.
    receivers: AtomicUsize,
}

/// One end's share of [`Ends`]. Dropped after the end's crossbeam half (a field declared
/// after it), so that when the last end of a side goes, the channel is disconnected before
/// the other side's waiters are woken to see it.
#[derive(Debug)]
struct End {
    ends: Arc<Ends>,
    /// Whether this end sends (counted in `senders`) or receives.
    sends: bool,
}

impl End {
    fn new(ends: &Arc<Ends>, sends: bool) -> Self {
        let count = if sends {
            &ends.senders
        } else {
            &ends.receivers
        };
        // Ordering: Relaxed; an end is counted before it can be dropped (the count is
        // only read by the decrement that ends it, an AcqRel RMW).
        count.fetch_add(1, Ordering::Relaxed);
        End {
            ends: Arc::clone(ends),
            sends,
        }
    }
}

impl Clone for End {
    fn clone(&self) -> Self {
        End::new(&self.ends, self.sends)
    }
}

impl Drop for End {
    fn drop(&mut self) {
        let ends = &*self.ends;
        let (count, across) = if self.sends {
            (&ends.senders, &ends.items)
        } else {
            (&ends.receivers, &ends.room)
        };
        // Ordering: AcqRel; the last one sees every other end's crossbeam half dropped.
        if count.fetch_sub(1, Ordering::AcqRel) == 1 {
            across.ring_all();
        }
    }
}

/// A new edge holding at most `capacity` chunks of at most `max_chunk` items.
pub(crate) fn edge<T>(capacity: usize, max_chunk: usize) -> (EdgeTx<T>, EdgeRx<T>) {
    lane(capacity, Shape::new(max_chunk))
}

/// A new edge holding at most `capacity` chunks, whose consumers advise `shape` (a channel
/// private to a stage, standing in for the stage's input).
pub(crate) fn lane<T>(capacity: usize, shape: Arc<Shape>) -> (EdgeTx<T>, EdgeRx<T>) {
    let (tx, rx) = crossbeam_channel::bounded(capacity);
    let ends = Arc::new(Ends::default());
    (
        EdgeTx {
            tx,
            shape: Arc::clone(&shape),
            gate: Arc::new(parking_lot::Mutex::new(())),
            ends: End::new(&ends, true),
        },
        EdgeRx {
            rx,
            shape,
            ends: End::new(&ends, false),
        },
    )
}

impl<T> EdgeTx<T> {
    /// Sends `chunk`, blocking until there is room or `token` is cancelled.
    ///
    /// # Errors
    ///
    /// Gives the chunk back when the run was cancelled first or every receiver is gone.
    pub(crate) fn send(&self, chunk: Vec<T>, token: &CancelToken) -> Result<(), Vec<T>> {
        send_or_cancel(self, chunk, token)
    }

    /// Sends `chunk` if there is room now and no other sender holds the gate, whether or
    /// not the run was cancelled (as [`send`](Self::send)'s first try does). Never waits.
    ///
    /// # Errors
    ///
    /// Gives the chunk back as `Full` when the edge is full or another sender holds the
    /// gate, as `Disconnected` when every receiver is gone.
    pub(crate) fn try_send(&self, chunk: Vec<T>) -> Result<(), TrySendError<Vec<T>>> {
        let Some(gate) = self.gate.try_lock() else {
            return Err(TrySendError::Full(chunk));
        };
        let sent = self.tx.try_send(chunk);
        drop(gate);
        self.rang(sent)
    }

    /// One try, under the gate (waiting for it); rings the items bell when it sent.
    fn offer(&self, chunk: Vec<T>) -> Result<(), TrySendError<Vec<T>>> {
        let sent = {
            let _gate = self.gate.lock();
            self.tx.try_send(chunk)
        };
        self.rang(sent)
    }

    /// Rings the items bell if `sent` succeeded.
    fn rang<R>(&self, sent: Result<(), R>) -> Result<(), R> {
        if sent.is_ok() {
            self.ends.ends.items.ring_one();
        }
        sent
    }

    /// Whether the edge is full now.
    pub(crate) fn is_full(&self) -> bool {
        self.tx.is_full()
    }

    /// The edge's chunk-size state.
    pub(crate) fn shape(&self) -> &Arc<Shape> {
        &self.shape
    }
}

impl<T> EdgeRx<T> {
    /// Waits for the next chunk until `deadline` at most.
    pub(crate) fn recv(&self, token: &CancelToken, deadline: Option<Instant>) -> Recv<Vec<T>> {
        self.recv_spun(token, deadline, Backoff::ROUNDS)
    }

    /// [`recv`](Self::recv), with `rounds` of [`Backoff`] before it parks.
    pub(crate) fn recv_spun(
        &self,
        token: &CancelToken,
        deadline: Option<Instant>,
        rounds: u32,
    ) -> Recv<Vec<T>> {
        let attempt = || match self.try_recv() {
            Recv::TimedOut => None,
            got => Some(got),
        };
        // Cancellation first: a cancelled run takes no more chunks.
        let items = &self.ends.ends.items;
        let waited = spin_then_park(
            &[items],
            token,
            deadline,
            rounds,
            First::Cancellation,
            attempt,
        );
        waited.unwrap_or_else(GaveUp::into_recv)
    }

    /// The next chunk if one is ready ([`Recv::TimedOut`] when none is); rings the room
    /// bell when it took one.
    pub(crate) fn try_recv(&self) -> Recv<Vec<T>> {
        match self.rx.try_recv() {
            Ok(chunk) => {
                self.ends.ends.room.ring_one();
                Recv::Got(chunk)
            }
            Err(TryRecvError::Empty) => Recv::TimedOut,
            Err(TryRecvError::Disconnected) => Recv::Closed,
        }
    }

    /// Chunks queued now.
    pub(crate) fn len(&self) -> usize {
        self.rx.len()
    }

    /// The edge's chunk-size state.
    pub(crate) fn shape(&self) -> &Arc<Shape> {
        &self.shape
    }
}

/// What a receiver of an edge the run keeps sees: for counting leftovers after the join,
/// and queue depths for progress reports. Type-erased, so the run can hold every edge's.
pub(crate) trait Tap: Send + Sync {
    /// Chunks queued now.
    fn queued(&self) -> usize;
    /// Drops everything queued; returns the number of items, and the payload of the first
    /// panic an item's `Drop` raised.
    fn drain(&self) -> (u64, Option<Payload>);
}

impl<T: Send> Tap for EdgeRx<T> {
    fn queued(&self) -> usize {
        self.len()
    }

    fn drain(&self) -> (u64, Option<Payload>) {
        let mut total = 0;
        let mut first = None;
        while let Recv::Got(chunk) = self.try_recv() {
            let (n, panic) = dispose(chunk.into_iter());
            total += n;
            first = first.or(panic);
        }
        (total, first)
    }
}

/// Drops `items`; returns how many there were and the payload of a panic an item's `Drop`
/// raised. (Dropping a `Vec` goes on with the other items after one panics; a second
/// panic aborts the process, as anywhere in Rust.)
pub(crate) fn dispose<I: ExactSizeIterator>(items: I) -> (u64, Option<Payload>) {
    let n = items.len() as u64;
    (n, catch_unwind(AssertUnwindSafe(move || drop(items))).err())
}

/// Sends `chunk` on `tx`, blocking until there is room or `token` is cancelled.
///
/// The tries go through the edge's gate, one sender of the edge at a time. crossbeam's
/// `try_send` spins without yielding while a receiver has claimed the slot it needs and not
/// yet released it; if that receiver is preempted there, every sender trying meanwhile
/// spins until it runs again. With a thousand threads on two cores (W4, a burst of workers
/// finishing their items at once) that took up to a few seconds of CPU, in about one run of
/// the demo in thirty; with the gate, one sender at a time spins and the others park on the
/// gate (0 such runs in 70, against 2 in 70 without it).
///
/// # Errors
///
/// Gives the chunk back when the run was cancelled first or the channel is disconnected.
fn send_or_cancel<T>(tx: &EdgeTx<T>, chunk: Vec<T>, token: &CancelToken) -> Result<(), Vec<T>> {
    let mut held = Some(chunk);
    // Room first: a chunk that fits is sent even if the run was cancelled meanwhile.
    let attempt = || {
        let chunk = held.take()?;
        match tx.offer(chunk) {
            Ok(()) => Some(Ok(())),
            Err(TrySendError::Disconnected(back)) => Some(Err(back)),
            Err(TrySendError::Full(back)) => {
                held = Some(back);
                None
            }
        }
    };
    let room = &tx.ends.ends.room;
    let waited = spin_then_park(
        &[room],
        token,
        None,
        Backoff::ROUNDS,
        First::Change,
        attempt,
    );
    match waited {
        Ok(sent) => sent,
        // Cancelled (no deadline was given): the chunk is still held.
        Err(_) => Err(held.take().expect("a chunk not sent is held")),
    }
}

/// A short wait before parking: a few rounds of spinning, then a few yields (none for a
/// thread that has just woken a waiter: see [`spin`]). A chunk that arrives within
/// microseconds is taken without a futex call and a wake-up on either side; after that the
/// thread parks on the edge's bells, where cancellation can wake it.
#[derive(Debug)]
struct Backoff {
    /// Rounds done.
    step: u32,
    /// Gives up after this many rounds.
    rounds: u32,
}

impl Backoff {
    /// Spins until this many rounds, then yields.
    const SPIN: u32 = 4;
    /// Gives up after this many rounds, unless told otherwise.
    const ROUNDS: u32 = 7;
    /// Rounds for a consumer with few siblings (see [`Backoff::rounds_for`]).
    const PATIENT_ROUNDS: u32 = 11;

    /// A backoff that gives up after `rounds` rounds.
    fn new(rounds: u32) -> Self {
        Backoff { step: 0, rounds }
    }

    /// The rounds a consumer among `members` readers of one input waits before it parks.
    /// With no more readers than cores, the chunk it waits for is likely being made on
    /// another core now, and four more yields catch it (W11's `Fixed(2)` on 1,000 items:
    /// 1.12–1.43× the scope chain with them, 1.41–1.61× without). With more, the yields
    /// mostly pass the core around idle threads; with more than eight per core (W4's
    /// thousand) there are none: the demo made 22.1–22.8 k context switches instead of
    /// 28.0–29.4 k, and took 361–408 ms of CPU instead of 360–475 (six runs each,
    /// interleaved).
    pub(crate) fn rounds_for(members: usize) -> u32 {
        static CORES: OnceLock<usize> = OnceLock::new();
        let cores = *CORES.get_or_init(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        });
        if members <= cores {
            Self::PATIENT_ROUNDS
        } else if members <= 8 * cores {
            Self::ROUNDS
        } else {
            Self::SPIN
        }
    }

    /// Waits a little; false once it is time to park instead.
    fn snooze(&mut self) -> bool {
        if self.step >= self.rounds {
            return false;
        }
        if self.step < Self::SPIN {
            for _ in 0..(4u32 << self.step) {
                std::hint::spin_loop();
            }
        } else {
            std::thread::yield_now();
        }
        self.step += 1;
        true
    }
}

/// The short wait before parking (see [`Backoff`]): tries `attempt` until it has an answer,
/// `token` is cancelled, `rounds` of backoff are over or `deadline` passes. `None`: time
/// to park. `first` orders the try and the token check, as in [`bell::wait`].
fn spin<R>(
    token: &CancelToken,
    deadline: Option<Instant>,
    rounds: u32,
    first: First,
    mut attempt: impl FnMut() -> Option<R>,
) -> Option<Result<R, GaveUp>> {
    // A thread that has just woken a waiter spins but does not yield before it parks. The
    // threads it wakes need cores: in a trickle through four `Fifo` stages (one item a
    // millisecond, each hop timed) the third thread woken in a row waited while the two
    // before it, having handed on their items, were still yielding on both cores: 25–51
    // µs at the median for that hop, where 3b080a3 took 11–16 µs; without these yields
    // every hop's median was 7–15 µs. W6's median added latency went from 91.5 µs (IQR
    // 83–100) to 78.5 µs (65–88), 20 interleaved rounds each; W1, W2, W3, W4 and W11 did
    // not move beyond the noise (six `--quick` rounds each).
    let rounds = if bell::take_woke() {
        rounds.min(Backoff::SPIN)
    } else {
        rounds
    };
    let mut backoff = Backoff::new(rounds);
    loop {
        if first == First::Cancellation && token.is_cancelled() {
            return Some(Err(GaveUp::Cancelled));
        }
        if let Some(done) = attempt() {
            return Some(Ok(done));
        }
        if first == First::Change && token.is_cancelled() {
            return Some(Err(GaveUp::Cancelled));
        }
        if !backoff.snooze() || deadline.is_some_and(|d| Instant::now() >= d) {
            return None;
        }
    }
}

/// Every wait on an edge: [`spin`], then park on `bells` ([`bell::wait`]).
fn spin_then_park<R>(
    bells: &[&Bell],
    token: &CancelToken,
    deadline: Option<Instant>,
    rounds: u32,
    first: First,
    mut attempt: impl FnMut() -> Option<R>,
) -> Result<R, GaveUp> {
    match spin(token, deadline, rounds, first, &mut attempt) {
        Some(done) => done,
        None => bell::wait(bells, token, deadline, first, attempt),
    }
}

impl GaveUp {
    /// What a receive that gave up found.
    fn into_recv<M>(self) -> Recv<M> {
        match self {
            GaveUp::Cancelled => Recv::Cancelled,
            GaveUp::TimedOut => Recv::TimedOut,
        }
    }
}

/// What a blocking receive found.
#[derive(Debug)]
pub(crate) enum Recv<M> {
    /// A message.
    Got(M),
    /// All senders are gone.
    Closed,
    /// The run was cancelled.
    Cancelled,
    /// The deadline passed first (or, for a non-blocking receive, nothing was ready).
    TimedOut,
}

/// Receives from `rx`, blocking until a message arrives, the channel closes, `token` is
/// cancelled or `deadline` passes.
pub(crate) fn recv_or_cancel<M>(
    rx: &Receiver<M>,
    token: &CancelToken,
    deadline: Option<Instant>,
) -> Recv<M> {
    let attempt = || match rx.try_recv() {
        Ok(m) => Some(Recv::Got(m)),
        Err(TryRecvError::Disconnected) => Some(Recv::Closed),
        Err(TryRecvError::Empty) => None,
    };
    if let Some(done) = spin(
        token,
        deadline,
        Backoff::ROUNDS,
        First::Cancellation,
        attempt,
    ) {
        return done.unwrap_or_else(GaveUp::into_recv);
    }
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

/// What woke a thread waiting on two edges.
#[derive(Debug)]
pub(crate) enum Either<A, B> {
    /// A chunk of the first edge.
    First(Vec<A>),
    /// A chunk of the second edge.
    Second(Vec<B>),
    /// The first edge closed.
    FirstClosed,
    /// The second edge closed, or the deadline passed.
    Idle,
    /// The run was cancelled.
    Cancelled,
}

/// Waits for a chunk on either edge, cancellation, or `deadline`.
pub(crate) fn recv_either<A, B>(
    first: &EdgeRx<A>,
    second: &EdgeRx<B>,
    token: &CancelToken,
    deadline: Option<Instant>,
) -> Either<A, B> {
    let bells = [&first.ends.ends.items, &second.ends.ends.items];
    // Cancellation first, then the first edge, then the second.
    let attempt = || match first.try_recv() {
        Recv::Got(chunk) => Some(Either::First(chunk)),
        Recv::Closed => Some(Either::FirstClosed),
        _ => match second.try_recv() {
            Recv::Got(chunk) => Some(Either::Second(chunk)),
            Recv::Closed => Some(Either::Idle),
            _ => None,
        },
    };
    let rounds = Backoff::ROUNDS;
    match spin_then_park(
        &bells,
        token,
        deadline,
        rounds,
        First::Cancellation,
        attempt,
    ) {
        Ok(either) => either,
        Err(GaveUp::Cancelled) => Either::Cancelled,
        Err(GaveUp::TimedOut) => Either::Idle,
    }
}

/// Waits until `deadline`, or until `token` or `done` is cancelled. True when the deadline
/// passed first.
pub(crate) fn wait_until(deadline: Instant, token: &CancelToken, done: &CancelToken) -> bool {
    let mut sel = Select::new();
    sel.recv(token.signal());
    sel.recv(done.signal());
    match sel.select_deadline(deadline) {
        Ok(oper) => {
            let signal = if oper.index() == 0 { token } else { done };
            let _ = oper.recv(signal.signal());
            false
        }
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_blocked_send_is_woken_by_cancellation() {
        let (tx, _rx) = edge::<u32>(1, 4);
        let token = CancelToken::new();
        tx.send(vec![1], &token).unwrap();
        let canceller = token.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            canceller.cancel();
        });
        assert_eq!(tx.send(vec![2, 3], &token), Err(vec![2, 3]));
        t.join().unwrap();
    }

    #[test]
    fn receives_report_closed_cancelled_and_timeouts() {
        let token = CancelToken::new();
        let (tx, rx) = edge::<u32>(2, 4);
        assert!(matches!(rx.try_recv(), Recv::TimedOut));
        let soon = Instant::now() + Duration::from_millis(5);
        assert!(matches!(rx.recv(&token, Some(soon)), Recv::TimedOut));
        tx.send(vec![7], &token).unwrap();
        assert!(matches!(rx.recv(&token, None), Recv::Got(v) if v == [7]));
        drop(tx);
        assert!(matches!(rx.recv(&token, None), Recv::Closed));
        token.cancel();
        assert!(matches!(rx.recv(&token, None), Recv::Cancelled));
    }

    #[test]
    fn a_tap_drains_and_counts_every_item() {
        let token = CancelToken::new();
        let (tx, rx) = edge::<u32>(4, 4);
        tx.send(vec![1, 2], &token).unwrap();
        tx.send(vec![3], &token).unwrap();
        let tap: &dyn Tap = &rx;
        assert_eq!(tap.queued(), 2);
        assert_eq!(tap.drain().0, 3);
        assert_eq!(tap.queued(), 0);
    }

    #[test]
    fn dispose_counts_and_catches_a_panicking_drop() {
        struct Bomb(bool);
        impl Drop for Bomb {
            fn drop(&mut self) {
                assert!(!self.0, "bomb");
            }
        }
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let (n, panic) = dispose(vec![Bomb(false), Bomb(true), Bomb(false)].into_iter());
        std::panic::set_hook(prev);
        assert_eq!(n, 3);
        assert!(panic.is_some());
    }
}
