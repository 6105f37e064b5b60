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
//! ever out of its siblings' reach. A lone reader (a FIFO stage, each worker of an ordered
//! pool) keeps its chunk to itself, and its order.
//!
//! A consumer that finds the input closed keeps looking (every `STEAL_POLL`) while a
//! sibling still holds a stash, so nothing is left without a taker; an idle consumer also
//! looks at that pace while any sibling holds items.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::{EdgeRx, Payload, Recv, Shape, dispose};
use crate::context::CancelToken;

/// How often an idle consumer looks for work to steal while a sibling holds some.
const STEAL_POLL: Duration = Duration::from_millis(1);

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
}

/// How long a stash must go untouched by its owner before a sibling steals from it: the
/// chunk budget, the most work a chunk should hold.
const STEAL_AFTER: Duration = Duration::from_nanos(super::pace::BUDGET_NS);

/// The input of a group of consumers: the edge, and their stashes.
#[derive(Debug)]
pub(crate) struct SharedInput<T> {
    /// The edge.
    input: EdgeRx<T>,
    /// The stashes of the consumers reading this input.
    stashes: Mutex<Vec<Weak<Stash<T>>>>,
    /// Consumers reading this input now.
    readers: AtomicUsize,
    /// Consumers holding a non-empty stash.
    holders: AtomicUsize,
    /// Consumers between taking a chunk from the edge and counting as its holder: a
    /// consumer that finds the edge closed must not leave while one of them may still
    /// stash items to steal.
    receiving: AtomicUsize,
}

// Ordering: SeqCst on `readers`, `holders` and `receiving`. A consumer counts itself as
// receiving before it takes a chunk from the edge, fills its stash and counts as a holder
// before it stops receiving, and empties its stash before it stops holding: a consumer
// that found the edge closed (so every chunk was already taken) and then reads both counts
// at zero has seen every stash empty.

impl<T> SharedInput<T> {
    /// The shared input of `input`.
    pub(crate) fn new(input: EdgeRx<T>) -> Arc<Self> {
        Arc::new(SharedInput {
            input,
            stashes: Mutex::new(Vec::new()),
            readers: AtomicUsize::new(0),
            holders: AtomicUsize::new(0),
            receiving: AtomicUsize::new(0),
        })
    }

    /// The edge.
    pub(crate) fn edge(&self) -> &EdgeRx<T> {
        &self.input
    }

    /// Consumers holding items beyond the one they process (work a new sibling could take).
    pub(crate) fn holders(&self) -> usize {
        self.holders.load(Ordering::SeqCst)
    }

    /// Whether a sibling holds, or may be about to hold, items to steal.
    fn may_hold(&self) -> bool {
        self.receiving.load(Ordering::SeqCst) + self.holders.load(Ordering::SeqCst) > 0
    }

    /// Takes the back half of the stash of a sibling (not `own`) that has been stuck for
    /// `STEAL_AFTER`; `seen` is the thief's memory of what it saw of each stash, and when.
    fn steal(&self, own: &Arc<Stash<T>>, seen: &mut Vec<Seen>) -> Vec<T> {
        if self.holders.load(Ordering::SeqCst) == 0 {
            seen.clear();
            return Vec::new();
        }
        let stashes: Vec<Arc<Stash<T>>> = {
            let mut list = self.stashes.lock();
            list.retain(|w| w.strong_count() > 0);
            list.iter().filter_map(Weak::upgrade).collect()
        };
        let now = Instant::now();
        for victim in stashes.iter().filter(|s| !Arc::ptr_eq(s, own)) {
            let mut stash = victim.lock();
            let n = stash.items.len();
            if n == 0 {
                continue;
            }
            let key = Arc::as_ptr(victim) as usize;
            let stuck = match seen.iter_mut().find(|s| s.stash == key) {
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
            if !stuck {
                continue;
            }
            let stolen: Vec<T> = stash.items.drain(n - n.div_ceil(2)..).collect();
            if stash.items.is_empty() {
                // The victim counted as a holder for a non-empty stash: it stops now.
                self.holders.fetch_sub(1, Ordering::SeqCst);
            }
            return stolen;
        }
        Vec::new()
    }
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
}

/// What a take found.
#[derive(Debug)]
pub(crate) enum Took {
    /// A chunk of this many items from the edge.
    Input(usize),
    /// This many items stolen from a sibling.
    Stolen(usize),
}

impl Took {
    /// Items in the chunk.
    pub(crate) fn len(&self) -> usize {
        match *self {
            Took::Input(n) | Took::Stolen(n) => n,
        }
    }
}

impl<T> Inbox<T> {
    pub(crate) fn new(shared: Arc<SharedInput<T>>, shape: Arc<Shape>) -> Self {
        let stash = Arc::new(Mutex::new(StashInner {
            items: VecDeque::new(),
            pops: 0,
        }));
        shared.stashes.lock().push(Arc::downgrade(&stash));
        shared.readers.fetch_add(1, Ordering::SeqCst);
        Inbox {
            shared,
            shape,
            held: Held::Private(Vec::new().into_iter()),
            stash,
            seen: Vec::new(),
        }
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
                    self.shared.holders.fetch_sub(1, Ordering::SeqCst);
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
        debug_assert_eq!(self.buffered(), 0);
        if chunk.len() > 1 && self.shared.readers.load(Ordering::SeqCst) > 1 {
            let mut stash = self.stash.lock();
            stash.items.extend(chunk);
            self.shared.holders.fetch_add(1, Ordering::SeqCst);
            self.held = Held::Stashed;
        } else {
            self.held = Held::Private(chunk.into_iter());
        }
    }

    /// Takes the next chunk if one is ready, without blocking.
    pub(crate) fn try_take(&mut self) -> Recv<Took> {
        self.shared.receiving.fetch_add(1, Ordering::SeqCst);
        let got = self.shared.input.try_recv();
        match self.received(got) {
            Recv::Closed => self.steal_or(Recv::Closed),
            Recv::TimedOut => self.steal_or(Recv::TimedOut),
            other => other,
        }
    }

    /// Loads what a receive from the edge got, then stops counting as receiving (the
    /// caller counted itself in before the receive).
    fn received(&mut self, got: Recv<Vec<T>>) -> Recv<Took> {
        let took = match got {
            Recv::Got(chunk) => Recv::Got(self.loaded(chunk, false)),
            Recv::Closed => Recv::Closed,
            Recv::TimedOut => Recv::TimedOut,
            Recv::Cancelled => Recv::Cancelled,
        };
        self.shared.receiving.fetch_sub(1, Ordering::SeqCst);
        took
    }

    /// Steals from a sibling, or returns `otherwise` — as "nothing yet" when the input is
    /// closed but siblings still hold items.
    fn steal_or(&mut self, otherwise: Recv<Took>) -> Recv<Took> {
        let stolen = self.shared.steal(&self.stash, &mut self.seen);
        if !stolen.is_empty() {
            return Recv::Got(self.loaded(stolen, true));
        }
        match otherwise {
            Recv::Closed if self.shared.may_hold() => Recv::TimedOut,
            other => other,
        }
    }

    /// Waits for the next chunk until `deadline` at most, stealing from siblings while it
    /// waits.
    pub(crate) fn take(&mut self, token: &CancelToken, deadline: Option<Instant>) -> Recv<Took> {
        loop {
            match self.try_take() {
                Recv::TimedOut => {}
                got => return got,
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Recv::TimedOut;
            }
            // While a sibling holds items, look again soon; otherwise wait for input.
            let until = if self.shared.holders() > 0 {
                let poll = Instant::now() + STEAL_POLL;
                Some(deadline.map_or(poll, |d| d.min(poll)))
            } else {
                deadline
            };
            self.shared.receiving.fetch_add(1, Ordering::SeqCst);
            let got = self.shared.input.recv(token, until);
            match self.received(got) {
                Recv::Got(took) => return Recv::Got(took),
                Recv::Cancelled => return Recv::Cancelled,
                Recv::Closed if !self.shared.may_hold() => {
                    return self.steal_or(Recv::Closed);
                }
                Recv::Closed => std::thread::sleep(STEAL_POLL.min(
                    deadline.map_or(STEAL_POLL, |d| d.saturating_duration_since(Instant::now())),
                )),
                Recv::TimedOut => {}
            }
            if token.is_cancelled() {
                return Recv::Cancelled;
            }
        }
    }

    fn loaded(&mut self, chunk: Vec<T>, stolen: bool) -> Took {
        let n = chunk.len();
        self.load(chunk);
        if stolen {
            Took::Stolen(n)
        } else {
            Took::Input(n)
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
                        self.shared.holders.fetch_sub(1, Ordering::SeqCst);
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
        self.shared.readers.fetch_sub(1, Ordering::SeqCst);
    }
}
