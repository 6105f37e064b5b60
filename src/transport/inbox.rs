//! A consumer's side of an edge, and the input its consumers share.
//!
//! # Stealing
//!
//! Chunks are sized for the cost of the items seen so far. When the cost shifts — slow
//! items after many cheap ones — a chunk of slow items must not sit behind one worker while
//! its siblings idle, not even while that worker is blocked inside one of them. So when an
//! input has more than one reader, a consumer keeps the rest of its chunk in a *stash* its
//! siblings can reach, and takes items from it one at a time; a consumer with nothing to do
//! steals the back half of a sibling's stash. At most the item a consumer is processing is
//! ever out of its siblings' reach. A lone reader (a FIFO stage) keeps its chunk to itself,
//! and its order.
//!
//! The siblings are the readers of one edge: a pool's workers, or an ordered pool's. An
//! ordered pool's workers take *tickets*: each chunk taken from the edge gets the next
//! number, under a lock held across the receive, and the takers' tags are queued in that
//! order (a [`TurnOrder`]), so that the pool can put its outputs back in input order. For
//! them a steal is a *loan*: the stash carries the ticket of its items (their key), and
//! each steal from one load of a stash gets a number, so that the owner can put the
//! loans' outputs back in order (see `engine::lanes`).
//!
//! A consumer that finds the input closed stays while a sibling still holds a stash (or is
//! stashing a chunk it just took), so nothing is left without a taker: it looks again
//! every `STEAL_POLL`, and leaves as soon as the last sibling's stash is empty (the
//! siblings wake it then). An idle consumer also looks at that pace while any sibling
//! holds items. Only `SCOUTS` idle consumers of a group look at that pace at once; the
//! others look every `LATE_POLL`, so that a thousand idle workers of a dynamic pool do not
//! wake a million times a second while one sibling holds a stash.
//!
//! A consumer blocked on its input is counted as receiving (it may be about to take a
//! chunk), and parks on the edge's items bell (see `bell`): a chunk sent wakes one blocked
//! consumer. (Waiting for the edge to be *ready* instead woke every idle consumer of the
//! edge for each chunk sent.) The end of the input wakes every blocked consumer, and each
//! stops counting as it wakes, so a consumer that found the input closed and waits for the
//! counts to reach zero is not kept waiting by one that is merely blocked.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use parking_lot::{Condvar, Mutex, MutexGuard};

use super::{Backoff, EdgeRx, Payload, Recv, Shape, dispose};
use crate::context::CancelToken;

/// How often an idle consumer looks for work to steal while a sibling holds some, if it is
/// one of the group's `SCOUTS`.
const STEAL_POLL: Duration = Duration::from_millis(1);

/// How many idle consumers of a group look at `STEAL_POLL`'s pace at once.
const SCOUTS: usize = 4;

/// How often the other idle consumers look: a thousand idle workers of a dynamic pool
/// would otherwise each wake every millisecond while one sibling holds a stash. (A bound on
/// the cost, not a measured gain: W4's stashes are rare and short-lived.)
const LATE_POLL: Duration = Duration::from_millis(16);

/// The rest of a consumer's chunk, where its siblings can reach it.
type Stash<T> = Mutex<StashInner<T>>;

/// What a stash holds.
#[derive(Debug)]
struct StashInner<T> {
    /// The items, in order.
    items: VecDeque<T>,
    /// Items the owner has taken from it so far: a thief that sees this unchanged for a
    /// chunk budget knows the owner is stuck in an item.
    pops: u64,
    /// The owner's tag (an ordered pool's lane).
    tag: usize,
    /// The key of the items loaded last (see [`Loan`]).
    key: u64,
    /// Steals from the items loaded last, so far.
    lent: u32,
    /// Whether the items loaded last were stolen. Stolen items come from a stash whose
    /// owner was stuck, and are likely slow too: a thief need not wait a chunk budget to
    /// find their new owner stuck in the first of them.
    stolen: bool,
    /// `pops` when they were loaded.
    pops_at_load: u64,
    /// The place of the first of them among the items of their key.
    base: u64,
}

/// What a thief learns of the items it stole: where they came from, so that their outputs
/// can be put back in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Loan {
    /// The victim's tag.
    pub(crate) from: usize,
    /// The key the victim loaded the items with.
    pub(crate) key: u64,
    /// The steal's number among the steals from that load, from 0: a later steal holds
    /// items nearer the front.
    pub(crate) no: u32,
    /// The place of the first stolen item among the items of `key`.
    pub(crate) base: u64,
}

/// How long a stash must go untouched by its owner before a sibling steals from it: the
/// chunk budget, the most work a chunk should hold.
const STEAL_AFTER: Duration = Duration::from_nanos(super::pace::BUDGET_NS);

/// Consumers that steal from each other: their stashes, and what they are doing.
#[derive(Debug)]
pub(crate) struct Siblings<T> {
    /// Their stashes.
    stashes: Mutex<Vec<Weak<Stash<T>>>>,
    /// Consumers holding a non-empty stash.
    holders: AtomicUsize,
    /// Chunks between an edge and a stash: a consumer that finds its edge closed must not
    /// leave while one of them may still be stashed where it could steal it. The readers
    /// count themselves while they receive.
    receiving: AtomicUsize,
    /// Consumers waiting for the last two counts to reach zero together.
    waiters: AtomicUsize,
    /// Held while checking the counts before waiting, and while waking the waiters.
    quiet_lock: Mutex<()>,
    /// Where consumers wait for the siblings to hold nothing.
    quiet: Condvar,
    /// Idle consumers looking at `STEAL_POLL`'s pace now (at most `SCOUTS`).
    scouts: AtomicUsize,
    /// Consumers in the group now.
    members: AtomicUsize,
}

/// An idle consumer's place among the scouts, given back when dropped.
struct Scout<'a>(&'a AtomicUsize);

impl Drop for Scout<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

// Ordering: SeqCst on `holders` and `receiving`. A chunk is counted as receiving
// before it leaves the edge (or enters a lane), is stashed, counted as held, and only then
// uncounted as receiving; a stash is emptied before its owner stops holding: a consumer
// that found its edge closed (so every chunk was already taken) and then reads both counts
// at zero has seen every stash empty.

impl<T> Siblings<T> {
    /// A new group, with no member yet.
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Siblings {
            stashes: Mutex::new(Vec::new()),
            holders: AtomicUsize::new(0),
            receiving: AtomicUsize::new(0),
            waiters: AtomicUsize::new(0),
            quiet_lock: Mutex::new(()),
            quiet: Condvar::new(),
            scouts: AtomicUsize::new(0),
            members: AtomicUsize::new(0),
        })
    }

    /// A place among the scouts, if one is free.
    fn scout(&self) -> Option<Scout<'_>> {
        // Ordering: Relaxed. The count only paces the looks; every look reads the stashes
        // under their locks.
        self.scouts
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < SCOUTS).then_some(n + 1)
            })
            .ok()
            .map(|_| Scout(&self.scouts))
    }

    /// Whether a member holds, or may be about to hold, items to steal.
    fn may_hold(&self) -> bool {
        self.receiving.load(Ordering::SeqCst) + self.holders.load(Ordering::SeqCst) > 0
    }

    /// One fewer holder.
    fn stop_holding(&self) {
        self.holders.fetch_sub(1, Ordering::SeqCst);
        self.settled();
    }

    /// One fewer chunk on its way.
    fn stop_receiving(&self) {
        self.receiving.fetch_sub(1, Ordering::SeqCst);
        self.settled();
    }

    /// After a count went down: wakes the consumers waiting for both to reach zero, if
    /// they have.
    fn settled(&self) {
        // Ordering: SeqCst. A waiter counts itself before it reads the counts, this side
        // lowers a count before it reads the waiters: one of the two sees the other.
        if self.waiters.load(Ordering::SeqCst) > 0 && !self.may_hold() {
            let _held = self.quiet_lock.lock();
            self.quiet.notify_all();
        }
    }

    /// Waits until no member holds or may be about to hold items, or until `until`.
    fn wait_quiet(&self, until: Instant) {
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let mut held = self.quiet_lock.lock();
        if self.may_hold() {
            // A wake-up between the check and the wait cannot be lost: the waker takes the
            // lock first.
            let _ = self.quiet.wait_until(&mut held, until);
        }
        drop(held);
        self.waiters.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The ticket book of an ordered pool's input: the last ticket handed out, and where the
/// takers' tags go, in ticket order. Its lock is held across a receive from the edge, so
/// that tickets follow the order of the chunks on the edge.
#[derive(Debug)]
struct Book {
    /// The last ticket handed out (tickets start at 1).
    last: u64,
    /// The tag of each ticket's taker, in ticket order.
    order: Sender<usize>,
}

impl Book {
    /// Hands the next ticket to the reader tagged `tag`.
    fn issue(&mut self, tag: usize) -> u64 {
        self.last += 1;
        // Unbounded, and the pool's collector keeps the receiver as long as any worker
        // can take a ticket: the send cannot fail or block.
        let _ = self.order.send(tag);
        self.last
    }
}

/// A reader's right to receive from its edge.
enum Right<'a> {
    /// Any reader may: the input has no ticket book.
    Free,
    /// This reader holds the ticket book, until the guard goes.
    Booked(MutexGuard<'a, Book>),
    /// Another reader holds the ticket book: it is receiving, and the edge is its to look at.
    Busy,
}

impl Right<'_> {
    /// After a receive: if the input has a book and a chunk came, gives the chunk the next
    /// ticket, for the reader tagged `tag`, in `key`.
    fn ticket<T>(&mut self, got: &Recv<Vec<T>>, tag: usize, key: &mut u64) {
        if let (Right::Booked(book), Recv::Got(_)) = (self, got) {
            *key = book.issue(tag);
        }
    }
}

/// The order in which an ordered pool's workers took chunks from its input: the tag of
/// each ticket's taker, ticket by ticket.
#[derive(Debug)]
pub(crate) struct TurnOrder(Receiver<usize>);

impl TurnOrder {
    /// The tag of the next ticket's taker, if that ticket has been handed out.
    pub(crate) fn next(&self) -> Option<usize> {
        self.0.try_recv().ok()
    }
}

/// The input of a consumer: the edge, and the siblings it may steal from.
#[derive(Debug)]
pub(crate) struct SharedInput<T> {
    /// The edge.
    input: EdgeRx<T>,
    /// The consumers of this edge.
    siblings: Arc<Siblings<T>>,
    /// For an ordered pool's input: the ticket book, locked across each receive.
    tickets: Option<Mutex<Book>>,
    /// Whether its reader reads alone and keeps its order (a FIFO stage, the sink): its
    /// chunks stay private. Any other reader stashes every chunk of more than one item,
    /// even while it has no sibling: a pool may grow (a dynamic pool down to one worker
    /// when a chunk of slow items arrives) and its new workers must reach the chunk.
    lone: bool,
}

impl<T> SharedInput<T> {
    /// The shared input of `input`: its readers are siblings.
    pub(crate) fn new(input: EdgeRx<T>) -> Arc<Self> {
        Self::with(input, None, false)
    }

    /// The input of `input` for a reader that reads it alone and keeps its order.
    pub(crate) fn lone(input: EdgeRx<T>) -> Arc<Self> {
        Self::with(input, None, true)
    }

    /// The shared input of an ordered pool's workers: each chunk they take from `input`
    /// gets a ticket, and the returned [`TurnOrder`] gives their tags in ticket order.
    pub(crate) fn ordered(input: EdgeRx<T>) -> (Arc<Self>, TurnOrder) {
        let (order, taken) = crossbeam_channel::unbounded();
        let book = Book { last: 0, order };
        (
            Self::with(input, Some(Mutex::new(book)), false),
            TurnOrder(taken),
        )
    }

    fn with(input: EdgeRx<T>, tickets: Option<Mutex<Book>>, lone: bool) -> Arc<Self> {
        Arc::new(SharedInput {
            input,
            siblings: Siblings::new(),
            tickets,
            lone,
        })
    }

    /// The edge.
    pub(crate) fn edge(&self) -> &EdgeRx<T> {
        &self.input
    }

    /// Consumers holding items beyond the one they process (work a new sibling could take).
    pub(crate) fn holders(&self) -> usize {
        self.siblings.holders.load(Ordering::SeqCst)
    }

    /// Whether a sibling holds, or may be about to hold, items to steal.
    fn may_hold(&self) -> bool {
        self.siblings.may_hold()
    }

    /// Counts the caller as receiving from the edge.
    fn start_receiving(&self) {
        self.siblings.receiving.fetch_add(1, Ordering::SeqCst);
    }

    /// Ends what [`start_receiving`](Self::start_receiving) began, once the receive's
    /// chunk (if any) is stashed.
    fn stop_receiving(&self) {
        self.siblings.stop_receiving();
    }

    /// The right to receive from the edge, without waiting.
    fn try_book(&self) -> Right<'_> {
        match &self.tickets {
            None => Right::Free,
            Some(book) => book.try_lock().map_or(Right::Busy, Right::Booked),
        }
    }

    /// `try_book`, waiting until `until` at most (without limit for `None`). A reader that
    /// holds the book waits for the edge with the same token, and lets it go when it
    /// wakes: cancellation reaches the readers waiting here through it.
    fn book_until(&self, until: Option<Instant>) -> Right<'_> {
        match (&self.tickets, until) {
            (None, _) => Right::Free,
            (Some(book), None) => Right::Booked(book.lock()),
            (Some(book), Some(until)) => book
                .try_lock_until(until)
                .map_or(Right::Busy, Right::Booked),
        }
    }

    /// Takes the back half of the largest stash of a sibling (not `own`) that is stuck:
    /// untouched by its owner for `STEAL_AFTER`, or stolen and barely touched since (see
    /// [`StashInner::stolen`]). `seen` is the thief's memory of what it saw of each stash,
    /// and when.
    fn steal(&self, own: &Arc<Stash<T>>, seen: &mut Vec<Seen>) -> Option<(Vec<T>, Loan)> {
        let siblings = &self.siblings;
        if siblings.holders.load(Ordering::SeqCst) == 0 {
            seen.clear();
            return None;
        }
        let stashes: Vec<Arc<Stash<T>>> = {
            let mut list = siblings.stashes.lock();
            list.retain(|w| w.strong_count() > 0);
            list.iter().filter_map(Weak::upgrade).collect()
        };
        let now = Instant::now();
        // The largest stuck stash: a thief that took a small remnant while a larger loan
        // was about to be found stuck would leave that loan's owner with the most work.
        let mut best: Option<(&Arc<Stash<T>>, usize)> = None;
        for victim in stashes.iter().filter(|s| !Arc::ptr_eq(s, own)) {
            let stash = victim.lock();
            let n = stash.items.len();
            if n == 0 || best.is_some_and(|(_, most)| most >= n) {
                continue;
            }
            let key = Arc::as_ptr(victim) as usize;
            let untouched = match seen.iter_mut().find(|s| s.stash == key) {
                Some(s) if s.pops == stash.pops => now.duration_since(s.at) >= STEAL_AFTER,
                Some(s) => {
                    *s = Seen {
                        stash: key,
                        pops: stash.pops,
                        at: now,
                    };
                    false
                }
                None => {
                    seen.push(Seen {
                        stash: key,
                        pops: stash.pops,
                        at: now,
                    });
                    false
                }
            };
            let stuck_loan = stash.stolen && stash.pops - stash.pops_at_load <= 1;
            if untouched || stuck_loan {
                best = Some((victim, n));
            }
        }
        let mut stash = best?.0.lock();
        let n = stash.items.len();
        if n == 0 {
            return None;
        }
        let kept = n - n.div_ceil(2);
        let stolen: Vec<T> = stash.items.drain(kept..).collect();
        if stash.items.is_empty() {
            // The victim counted as a holder for a non-empty stash: it stops now.
            siblings.stop_holding();
        }
        // The owner has taken `pops - pops_at_load` items from the front.
        let front = stash.base + (stash.pops - stash.pops_at_load);
        let loan = Loan {
            from: stash.tag,
            key: stash.key,
            no: stash.lent,
            base: front + kept as u64,
        };
        stash.lent += 1;
        Some((stolen, loan))
    }
}

/// What one look at a consumer's input found.
enum Look {
    /// A chunk, from the edge or a sibling.
    Took(Took),
    /// Nothing: the edge is open and empty, and nothing could be stolen.
    Empty,
    /// Nothing yet: the edge is closed, but a sibling holds items or is about to.
    Held,
    /// The end: the edge is closed and no sibling holds anything.
    Closed,
}

/// What a thief last saw of a sibling's stash.
#[derive(Debug)]
struct Seen {
    /// The stash (its address).
    stash: usize,
    /// Its owner's pops then.
    pops: u64,
    /// When.
    at: Instant,
}

/// Where a consumer's current items are.
#[derive(Debug)]
enum Held<T> {
    /// Its own (a lone reader).
    Private(std::vec::IntoIter<T>),
    /// In its stash, within its siblings' reach.
    Stashed,
}

/// A consumer's side of an edge: the current chunk, handed out item by item.
#[derive(Debug)]
pub(crate) struct Inbox<T> {
    /// Where chunks come from.
    shared: Arc<SharedInput<T>>,
    /// The shape of the edge this consumer advises (the stage's input edge, even when the
    /// chunks come through a lane of the stage's own).
    shape: Arc<Shape>,
    /// The current items.
    held: Held<T>,
    /// This consumer's stash.
    stash: Arc<Stash<T>>,
    /// What this consumer saw of its siblings' stashes, as a thief.
    seen: Vec<Seen>,
    /// This consumer's tag (an ordered pool's lane).
    tag: usize,
    /// The key of the chunk taken from the edge last: its ticket, for an ordered pool's
    /// worker (0 otherwise).
    key: u64,
    /// The place of the current chunk's first item among the items of its key.
    base: u64,
    /// Whether this consumer has seen the edge closed: it need not look at it again.
    closed: bool,
}

/// What a take found.
#[derive(Debug)]
pub(crate) enum Took {
    /// A chunk of this many items from the edge.
    Input(usize),
    /// This many items stolen from a sibling.
    Stolen(usize, Loan),
}

impl Took {
    /// Items in the chunk.
    pub(crate) fn len(&self) -> usize {
        match *self {
            Took::Input(n) | Took::Stolen(n, _) => n,
        }
    }
}

impl<T> Inbox<T> {
    /// A consumer of `shared`, tagged `tag` for its siblings' loans.
    pub(crate) fn new(shared: Arc<SharedInput<T>>, shape: Arc<Shape>, tag: usize) -> Self {
        let stash = Arc::new(Mutex::new(StashInner {
            items: VecDeque::new(),
            pops: 0,
            tag,
            key: 0,
            lent: 0,
            stolen: false,
            pops_at_load: 0,
            base: 0,
        }));
        let siblings = &shared.siblings;
        siblings.stashes.lock().push(Arc::downgrade(&stash));
        siblings.members.fetch_add(1, Ordering::Relaxed);
        Inbox {
            shared,
            shape,
            held: Held::Private(Vec::new().into_iter()),
            stash,
            seen: Vec::new(),
            tag,
            key: 0,
            base: 0,
            closed: false,
        }
    }

    /// The key of the chunk taken from the edge last (see [`Loan`]): its ticket, for an
    /// ordered pool's worker.
    pub(crate) fn key(&self) -> u64 {
        self.key
    }

    /// The place of the current chunk's first item among the items of its key: 0 for a
    /// chunk taken from the edge, further on for stolen items.
    pub(crate) fn base(&self) -> u64 {
        self.base
    }

    /// Takes the number of steals from the items loaded last. Once those items are used
    /// up, no further steal can happen.
    pub(crate) fn take_lent(&mut self) -> u32 {
        std::mem::take(&mut self.stash.lock().lent)
    }

    /// The rest of the current chunk, when it is this consumer's alone (a lone reader's);
    /// `None` when it is in the stash, within reach of siblings.
    pub(crate) fn private_items(&mut self) -> Option<&mut std::vec::IntoIter<T>> {
        match &mut self.held {
            Held::Private(items) => Some(items),
            Held::Stashed => None,
        }
    }

    /// The next item of the current chunk.
    #[inline]
    pub(crate) fn next_buffered(&mut self) -> Option<T> {
        match &mut self.held {
            Held::Private(items) => items.next(),
            Held::Stashed => self.next_stashed(),
        }
    }

    /// [`next_buffered`](Self::next_buffered) from the stash: out of line, so that the
    /// private path inlines into the worker's loop.
    #[inline(never)]
    fn next_stashed(&mut self) -> Option<T> {
        let mut stash = self.stash.lock();
        let item = stash.items.pop_front();
        stash.pops += 1;
        if item.is_some() && stash.items.is_empty() {
            self.shared.siblings.stop_holding();
        }
        item
    }

    /// Items left in the current chunk.
    pub(crate) fn buffered(&self) -> usize {
        match &self.held {
            Held::Private(items) => items.len(),
            Held::Stashed => self.stash.lock().items.len(),
        }
    }

    /// Makes `chunk` the current chunk. The old one must be used up.
    pub(crate) fn load(&mut self, chunk: Vec<T>) {
        self.load_keyed(chunk, self.key, None);
    }

    /// Makes `chunk`, whose items have `key`, the current chunk; `stolen`: the place of
    /// its first item among the items of `key`, if it was stolen.
    fn load_keyed(&mut self, chunk: Vec<T>, key: u64, stolen: Option<u64>) {
        debug_assert_eq!(self.buffered(), 0);
        self.base = stolen.unwrap_or(0);
        let siblings = &self.shared.siblings;
        if chunk.len() > 1 && !self.shared.lone {
            let mut stash = self.stash.lock();
            stash.items.extend(chunk);
            stash.key = key;
            // An ordered pool's worker took the count at the end of its last turn; a
            // pool's worker never does.
            stash.lent = 0;
            stash.stolen = stolen.is_some();
            stash.base = self.base;
            stash.pops_at_load = stash.pops;
            siblings.holders.fetch_add(1, Ordering::SeqCst);
            self.held = Held::Stashed;
        } else {
            self.held = Held::Private(chunk.into_iter());
        }
    }

    /// Takes the next chunk if one is ready, without blocking: [`Recv::TimedOut`] when
    /// none is, or when the edge is closed but a sibling may still hold items.
    pub(crate) fn try_take(&mut self) -> Recv<Took> {
        match self.look() {
            Look::Took(took) => Recv::Got(took),
            Look::Closed => Recv::Closed,
            Look::Empty | Look::Held => Recv::TimedOut,
        }
    }

    /// One look at the edge, then at the siblings' stashes.
    fn look(&mut self) -> Look {
        // An ordered pool's reader finds no book while a sibling holds it: that sibling is
        // receiving, and the edge is its to look at.
        let got = if self.closed {
            None
        } else {
            match self.shared.try_book() {
                Right::Busy => None,
                mut right => {
                    self.shared.start_receiving();
                    let got = self.shared.input.try_recv();
                    right.ticket(&got, self.tag, &mut self.key);
                    Some(got)
                }
            }
        };
        let closed = self.closed
            || match got.map(|got| self.received(got)) {
                Some(Recv::Got(took)) => return Look::Took(took),
                Some(Recv::Closed) => true,
                Some(Recv::TimedOut | Recv::Cancelled) | None => false,
            };
        if let Some((stolen, loan)) = self.shared.steal(&self.stash, &mut self.seen) {
            let n = stolen.len();
            self.load_keyed(stolen, loan.key, Some(loan.base));
            return Look::Took(Took::Stolen(n, loan));
        }
        match (closed, self.shared.may_hold()) {
            (false, _) => Look::Empty,
            (true, true) => Look::Held,
            (true, false) => Look::Closed,
        }
    }

    /// Loads what a receive from the edge got, then stops counting as receiving (the
    /// caller counted itself in before the receive).
    fn received(&mut self, got: Recv<Vec<T>>) -> Recv<Took> {
        let took = match got {
            Recv::Got(chunk) => {
                let n = chunk.len();
                self.load(chunk);
                Recv::Got(Took::Input(n))
            }
            Recv::Closed => {
                self.closed = true;
                Recv::Closed
            }
            Recv::TimedOut => Recv::TimedOut,
            Recv::Cancelled => Recv::Cancelled,
        };
        self.shared.stop_receiving();
        took
    }

    /// Waits for the next chunk until `deadline` at most, stealing from siblings while it
    /// waits.
    ///
    /// A consumer counts as receiving while it looks at the edge and while it is blocked on
    /// it (see "Stealing" above); once it has seen the edge closed it no longer looks at
    /// it, so that consumers woken by the input's end do not keep counting each other in
    /// turn.
    pub(crate) fn take(&mut self, token: &CancelToken, deadline: Option<Instant>) -> Recv<Took> {
        loop {
            let held = match self.look() {
                Look::Took(took) => return Recv::Got(took),
                Look::Closed => return Recv::Closed,
                Look::Empty => false,
                Look::Held => true,
            };
            if token.is_cancelled() {
                return Recv::Cancelled;
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return Recv::TimedOut;
            }
            // While a sibling holds items, look again soon; otherwise wait for input.
            let look = held || self.shared.holders() > 0;
            let scout = if look {
                self.shared.siblings.scout()
            } else {
                None
            };
            let pace = if scout.is_some() {
                STEAL_POLL
            } else {
                LATE_POLL
            };
            let poll = deadline.map_or(now + pace, |d| d.min(now + pace));
            if held {
                // The edge is closed, but a sibling holds items (look again soon, to steal
                // them) or is about to (it will be done at once): wait until no sibling
                // does, or the poll.
                self.shared.siblings.wait_quiet(poll);
                continue;
            }
            let until = if look { Some(poll) } else { deadline };
            // An ordered pool's reader waits for the ticket book first (until the poll, to
            // steal meanwhile), and holds it while it waits for the edge.
            let mut right = self.shared.book_until(until);
            if let Right::Busy = right {
                continue;
            }
            // Counted as receiving while blocked (see "Stealing" above), and woken alone: a
            // chunk sent wakes one blocked consumer, not every idle one.
            self.shared.start_receiving();
            // Ordering: Relaxed; the count only sets how long to spin.
            let members = self.shared.siblings.members.load(Ordering::Relaxed);
            let got = (self.shared.input).recv_spun(token, until, Backoff::rounds_for(members));
            right.ticket(&got, self.tag, &mut self.key);
            drop(right);
            drop(scout);
            match self.received(got) {
                Recv::Got(took) => return Recv::Got(took),
                Recv::Cancelled => return Recv::Cancelled,
                // Look again: steal, or find the end.
                Recv::Closed | Recv::TimedOut => {}
            }
        }
    }

    /// Drops the rest of the current chunk; returns how many items it held and the payload
    /// of a panic in an item's `Drop`.
    pub(crate) fn discard(&mut self) -> (u64, Option<Payload>) {
        match std::mem::replace(&mut self.held, Held::Private(Vec::new().into_iter())) {
            Held::Private(items) => dispose(items),
            Held::Stashed => {
                let items: Vec<T> = {
                    let mut stash = self.stash.lock();
                    if !stash.items.is_empty() {
                        self.shared.siblings.stop_holding();
                    }
                    stash.items.drain(..).collect()
                };
                dispose(items.into_iter())
            }
        }
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
        // Items still stashed are the owner's to count (it discards them before this);
        // what is left here is dropped with the stash.
        let _ = self.discard();
        self.shared.siblings.members.fetch_sub(1, Ordering::Relaxed);
    }
}
