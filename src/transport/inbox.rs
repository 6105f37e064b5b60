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
//! The siblings are the readers of one edge (a pool), or the workers of an ordered pool,
//! each reading a lane of its own that a distributor deals chunks into. For the latter a
//! steal is a *loan*: the stash carries a key (which turn of the pool its items belong
//! to), and each steal from one load of a stash gets a number, so that the owner can put
//! the loans' outputs back in order (see `engine::lanes`).
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

use parking_lot::{Condvar, Mutex};

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
    /// of a shared edge count themselves while they receive; a distributor dealing into
    /// lanes counts each chunk it deals until its consumer has loaded it.
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

    /// A distributor is about to deal a chunk into a member's lane.
    pub(crate) fn dealing(&self) {
        self.receiving.fetch_add(1, Ordering::SeqCst);
    }

    /// The chunk announced by [`dealing`](Self::dealing) was not dealt after all.
    pub(crate) fn not_dealt(&self) {
        self.stop_receiving();
    }
}

/// The input of a consumer: the edge, and the siblings it may steal from.
#[derive(Debug)]
pub(crate) struct SharedInput<T> {
    /// The edge.
    input: EdgeRx<T>,
    /// The consumers of this edge, or of this edge and its sibling lanes.
    siblings: Arc<Siblings<T>>,
    /// Whether a distributor deals the chunks (and counts them in `receiving`).
    dealt: bool,
    /// Whether its reader reads alone and keeps its order (a FIFO stage, the sink): its
    /// chunks stay private. Any other reader stashes every chunk of more than one item,
    /// even while it has no sibling: a pool may grow (a dynamic pool down to one worker
    /// when a chunk of slow items arrives) and its new workers must reach the chunk.
    lone: bool,
}

impl<T> SharedInput<T> {
    /// The shared input of `input`: its readers are siblings.
    pub(crate) fn new(input: EdgeRx<T>) -> Arc<Self> {
        Self::with(input, Siblings::new(), false, false)
    }

    /// The input of `input` for a reader that reads it alone and keeps its order.
    pub(crate) fn lone(input: EdgeRx<T>) -> Arc<Self> {
        Self::with(input, Siblings::new(), false, true)
    }

    /// A lane a distributor deals chunks into, whose reader is one of `siblings`.
    pub(crate) fn dealt(input: EdgeRx<T>, siblings: &Arc<Siblings<T>>) -> Arc<Self> {
        Self::with(input, Arc::clone(siblings), true, false)
    }

    fn with(input: EdgeRx<T>, siblings: Arc<Siblings<T>>, dealt: bool, lone: bool) -> Arc<Self> {
        Arc::new(SharedInput {
            input,
            siblings,
            dealt,
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

    /// Counts the caller as receiving from a shared edge (a dealt chunk was counted by its
    /// distributor).
    fn start_receiving(&self) {
        if !self.dealt {
            self.siblings.receiving.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Ends what [`start_receiving`](Self::start_receiving) began, once the receive's
    /// chunk (`got`: whether there was one) is stashed.
    fn stop_receiving(&self, got: bool) {
        if !self.dealt || got {
            self.siblings.stop_receiving();
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
    /// The key of the next chunk taken from the edge.
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
            key: 0,
            base: 0,
            closed: false,
        }
    }

    /// Sets the key that the next chunk taken from the edge is loaded with (see [`Loan`]).
    pub(crate) fn set_key(&mut self, key: u64) {
        self.key = key;
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

    /// The next item of the current chunk.
    #[inline]
    pub(crate) fn next_buffered(&mut self) -> Option<T> {
        match &mut self.held {
            Held::Private(items) => items.next(),
            Held::Stashed => {
                let mut stash = self.stash.lock();
                let item = stash.items.pop_front();
                stash.pops += 1;
                if item.is_some() && stash.items.is_empty() {
                    self.shared.siblings.stop_holding();
                }
                item
            }
        }
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
        let closed = self.closed || {
            self.shared.start_receiving();
            let got = self.shared.input.try_recv();
            match self.received(got) {
                Recv::Got(took) => return Look::Took(took),
                Recv::Closed => true,
                Recv::TimedOut | Recv::Cancelled => false,
            }
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
        self.shared.stop_receiving(matches!(took, Recv::Got(_)));
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
            // While a sibling holds items, look again soon; otherwise wait for input. A
            // dealt lane's reader also looks while a chunk is on its way to a sibling: it may
            // get stuck there while the distributor waits on that sibling's lane, and
            // nothing more comes to this one.
            let look =
                held || self.shared.holders() > 0 || (self.shared.dealt && self.shared.may_hold());
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
            // Counted as receiving while blocked (see "Stealing" above), and woken alone: a
            // chunk sent wakes one blocked consumer, not every idle one.
            self.shared.start_receiving();
            // Ordering: Relaxed; the count only sets how long to spin.
            let members = self.shared.siblings.members.load(Ordering::Relaxed);
            let got = (self.shared.input).recv_spun(token, until, Backoff::rounds_for(members));
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
