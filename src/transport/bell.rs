//! Where a thread waits for an edge to change: the edge's *bells*.
//!
//! crossbeam's own blocking goes through its `select` whenever a second thing must wake
//! the waiter (here, cancellation). A `select` that ends takes the lock of every channel
//! it watched, to unregister; and a sender that wakes a receiver does so while it holds
//! that channel's lock. On a busy machine the woken receiver runs at once, preempting its
//! waker, and blocks on the lock its waker still holds: two more context switches per
//! wake-up. W1 measured 4 switches per chunk this way, W3 3 (against 0.1 for rayon), and a
//! plain crossbeam `recv` in the sink instead of the `select` took W1 from 42–53 ms to
//! 21–23 ms a run.
//!
//! So the edges use crossbeam only for their lock-free queue (`try_send`, `try_recv`) and
//! wait on their own bells: an edge has one bell for *items* (rung by each chunk sent) and
//! one for *room* (rung by each chunk taken). A waiter parks its thread
//! (`thread::park`), enlisted on the bells it waits for and on its cancellation token's
//! list of sleepers; a ringer unparks one waiter after it has released the bell's lock.
//!
//! # Invariants
//!
//! - **No lost wake-up.** A waiter enlists (a `SeqCst` increment of `waiting`, then a
//!   `SeqCst` fence) before its last try; a ringer makes its change, then a `SeqCst`
//!   fence, then reads `waiting`. Either the try sees the change, or the ringer sees the
//!   waiter and unparks it (an unpark before the park makes the park return at once).
//! - **A ring is never dropped.** `ring_one` marks the waiter it picks as rung, and the
//!   ring is owed until the waiter's next try (which takes the change, or finds it taken
//!   by another thread). A waiter that leaves owing a ring — it timed out, was cancelled
//!   before trying again, or was picked during the try that succeeded, which may have
//!   found an earlier change — rings the bell again on its way out (see [`wait`]).
//! - **The end wakes everyone.** Dropping the last sender of an edge rings its items bell
//!   for every waiter; dropping the last receiver rings the room bell. The crossbeam end
//!   is dropped before, so the woken see the channel disconnected.
//! - **Cancellation wakes everyone.** Every waiter is on its token's sleepers while it
//!   waits (see [`CancelToken::watch`]), and cancelling unparks them.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering, fence};
use std::thread::{self, Thread};
use std::time::Instant;

use parking_lot::Mutex;

use crate::context::CancelToken;

/// A waiter's state: enlisted, picked by a ringer, or gone without being picked.
const WAITING: u8 = 0;
const RUNG: u8 = 1;
const GONE: u8 = 2;

/// One thread waiting on a bell.
#[derive(Debug)]
struct Waiter {
    thread: Thread,
    /// `WAITING`, `RUNG` or `GONE`; leaves `WAITING` once, by a compare-exchange, so
    /// that a waiter is either picked by one ringer or leaves on its own, never both.
    state: AtomicU8,
}

/// Threads waiting for one kind of change of an edge (items, or room).
#[derive(Debug, Default)]
pub(crate) struct Bell {
    /// Waiters still `WAITING`: read without the lock, so that a ring nobody waits for
    /// costs a fence and a load.
    waiting: AtomicUsize,
    /// Waiters in the order they enlisted; waiters that left on their own stay until a
    /// ring or a compaction passes them.
    queue: Mutex<VecDeque<Arc<Waiter>>>,
}

/// A waiter's place on a bell, from [`Bell::enlist`] to [`Bell::leave`].
#[derive(Debug)]
#[must_use = "a ticket must be given back with `Bell::leave`"]
pub(crate) struct Ticket(Arc<Waiter>);

impl Bell {
    /// Enlists the current thread; the caller then makes its last try before parking.
    pub(crate) fn enlist(&self) -> Ticket {
        let waiter = Arc::new(Waiter {
            thread: thread::current(),
            state: AtomicU8::new(WAITING),
        });
        {
            let mut queue = self.queue.lock();
            // Waiters that timed out or were cancelled leave their entries behind; keep
            // the queue within twice the live ones.
            if queue.len() >= 32 && queue.len() > 2 * self.waiting.load(Ordering::Relaxed) {
                queue.retain(|w| w.state.load(Ordering::Relaxed) == WAITING);
            }
            queue.push_back(Arc::clone(&waiter));
            // Ordering: SeqCst, then the fence below, against the ringer's fence and load
            // (see "No lost wake-up").
            self.waiting.fetch_add(1, Ordering::SeqCst);
        }
        fence(Ordering::SeqCst);
        Ticket(waiter)
    }

    /// Takes the current thread off the bell. True when a ringer had picked it.
    pub(crate) fn leave(&self, ticket: Ticket) -> bool {
        let Ticket(waiter) = ticket;
        match waiter
            .state
            .compare_exchange(WAITING, GONE, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => {
                self.waiting.fetch_sub(1, Ordering::SeqCst);
                false
            }
            Err(_) => true,
        }
    }

    /// Wakes the waiter that has waited longest, if any. Called after the change it
    /// announces.
    #[inline]
    pub(crate) fn ring_one(&self) {
        fence(Ordering::SeqCst);
        if self.waiting.load(Ordering::SeqCst) > 0 {
            self.ring(false);
        }
    }

    /// Wakes every waiter.
    pub(crate) fn ring_all(&self) {
        fence(Ordering::SeqCst);
        if self.waiting.load(Ordering::SeqCst) > 0 {
            self.ring(true);
        }
    }

    #[cold]
    fn ring(&self, all: bool) {
        // Unparked after the lock is released: the woken thread may run at once, and must
        // not find the lock still held by its waker.
        let picked = self.pick(all);
        for waiter in &picked {
            waiter.thread.unpark();
        }
        if !picked.is_empty() {
            WOKE.with(|woke| woke.set(true));
        }
    }

    /// Marks the waiter that has waited longest (or every waiter) as rung and takes it off
    /// the queue, passing over those that left on their own.
    fn pick(&self, all: bool) -> Vec<Arc<Waiter>> {
        let mut picked = Vec::new();
        let mut queue = self.queue.lock();
        while let Some(waiter) = queue.pop_front() {
            let rung = waiter
                .state
                .compare_exchange(WAITING, RUNG, Ordering::AcqRel, Ordering::Acquire)
                .is_ok();
            if rung {
                self.waiting.fetch_sub(1, Ordering::SeqCst);
                picked.push(waiter);
                if !all {
                    break;
                }
            }
        }
        picked
    }
}

thread_local! {
    /// Whether this thread has unparked a waiter (by a ring) since it last began to wait
    /// on an edge: see `transport::spin`, which reads and clears it.
    static WOKE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether this thread has unparked a waiter since the last call; clears the mark.
pub(crate) fn take_woke() -> bool {
    WOKE.with(|woke| woke.replace(false))
}

/// Why [`wait`] gave up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GaveUp {
    /// `token` was cancelled.
    Cancelled,
    /// `deadline` passed.
    TimedOut,
}

/// Which wins when both are ready: the change waited for, or cancellation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum First {
    /// A chunk that is ready is taken (or sent) even if the run was cancelled meanwhile.
    Change,
    /// A cancelled run takes nothing more.
    Cancellation,
}

/// Parks the current thread on `bells` until `attempt` has an answer, `token` is
/// cancelled or `deadline` passes. `attempt` is tried before every park, after enlisting
/// (see "No lost wake-up"); `first` says whether it is tried before or after the token is
/// checked.
///
/// A ring is *owed* from the moment it picks this waiter until the waiter's next try: the
/// try takes the change it was rung for, or finds it taken by another thread. A waiter
/// that leaves owing a ring rings that bell again on its way out. Two cases that are easy
/// to miss: a ring that picks the waiter during the try that succeeds (the try may have
/// found an earlier change, whose ring went to nobody), and a ring received in one pass
/// when the next pass returns without trying (cancelled first).
pub(crate) fn wait<R>(
    bells: &[&Bell],
    token: &CancelToken,
    deadline: Option<Instant>,
    first: First,
    mut attempt: impl FnMut() -> Option<R>,
) -> Result<R, GaveUp> {
    let _watch = token.watch();
    let mut owed = vec![false; bells.len()];
    loop {
        let tickets: Vec<(&Bell, Ticket)> = bells.iter().map(|b| (*b, b.enlist())).collect();
        let cancelled_first = first == First::Cancellation && token.is_cancelled();
        let found = if cancelled_first { None } else { attempt() };
        // The try (if made) settled the rings received before it.
        let tried = !cancelled_first;
        let outcome = match found {
            Some(done) => Some(Ok(done)),
            None if cancelled_first || token.is_cancelled() => Some(Err(GaveUp::Cancelled)),
            None => match deadline {
                None => {
                    thread::park();
                    None
                }
                Some(at) => {
                    let now = Instant::now();
                    if now >= at {
                        Some(Err(GaveUp::TimedOut))
                    } else {
                        thread::park_timeout(at - now);
                        None
                    }
                }
            },
        };
        // A ring received now is owed until the next try. (A waiter that goes on waiting
        // makes that try itself: passing its rings on would hand one ring round the idle
        // waiters for ever.)
        for ((bell, ticket), owes) in tickets.into_iter().zip(owed.iter_mut()) {
            let rung = bell.leave(ticket);
            *owes = (*owes && !tried) || rung;
        }
        if let Some(outcome) = outcome {
            for (bell, owes) in bells.iter().zip(owed) {
                if owes {
                    bell.ring_one();
                }
            }
            return outcome;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::time::Duration;

    #[test]
    fn a_ring_nobody_waits_for_is_lost_harmlessly() {
        let bell = Bell::default();
        bell.ring_one();
        bell.ring_all();
        assert_eq!(bell.waiting.load(Ordering::SeqCst), 0);
        let ticket = bell.enlist();
        assert_eq!(bell.waiting.load(Ordering::SeqCst), 1);
        assert!(!bell.leave(ticket), "nobody rang");
        assert_eq!(bell.waiting.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn ring_one_picks_the_oldest_waiter_and_only_once() {
        let bell = Bell::default();
        let first = bell.enlist();
        let second = bell.enlist();
        bell.ring_one();
        assert!(bell.leave(first), "the oldest is picked");
        assert!(!bell.leave(second), "one ring, one waiter");
    }

    #[test]
    fn leaving_waiters_are_compacted_away() {
        let bell = Bell::default();
        for _ in 0..1_000 {
            let ticket = bell.enlist();
            assert!(!bell.leave(ticket));
        }
        assert!(bell.queue.lock().len() <= 64, "{}", bell.queue.lock().len());
    }

    #[test]
    fn wait_returns_what_the_attempt_found_after_a_ring() {
        let bell = Arc::new(Bell::default());
        let ready = Arc::new(AtomicBool::new(false));
        let token = CancelToken::new();
        let (b, r) = (Arc::clone(&bell), Arc::clone(&ready));
        let ringer = thread::spawn(move || {
            thread::sleep(Duration::from_millis(20));
            r.store(true, Ordering::SeqCst);
            b.ring_one();
        });
        let got = wait(&[&bell], &token, None, First::Change, || {
            ready.load(Ordering::SeqCst).then_some(7)
        });
        ringer.join().unwrap();
        assert_eq!(got, Ok(7));
    }

    #[test]
    fn wait_gives_up_on_cancellation_and_on_the_deadline() {
        let bell = Bell::default();
        let token = CancelToken::new();
        let started = Instant::now();
        let deadline = Some(started + Duration::from_millis(20));
        let got: Result<(), _> = wait(&[&bell], &token, deadline, First::Change, || None);
        assert_eq!(got, Err(GaveUp::TimedOut));
        assert!(started.elapsed() >= Duration::from_millis(20));
        let canceller = {
            let token = token.clone();
            thread::spawn(move || {
                thread::sleep(Duration::from_millis(20));
                token.cancel();
            })
        };
        let got: Result<(), _> = wait(&[&bell], &token, None, First::Cancellation, || None);
        canceller.join().unwrap();
        assert_eq!(got, Err(GaveUp::Cancelled));
        assert_eq!(bell.waiting.load(Ordering::SeqCst), 0);
    }

    /// Another thread's place on a bell, for tests that play a second waiter.
    fn stand_in() -> Arc<Waiter> {
        Arc::new(Waiter {
            thread: thread::current(),
            state: AtomicU8::new(WAITING),
        })
    }

    #[test]
    fn a_waiter_picked_during_the_try_that_succeeds_passes_the_ring_on() {
        let bell = Bell::default();
        let token = CancelToken::new();
        let other = stand_in();
        let got = wait(&[&bell], &token, None, First::Change, || {
            // The try finds a change whose ring went to nobody (it came before the
            // enlisting); meanwhile a second change rings and picks this waiter, the
            // oldest, ahead of another one.
            bell.queue.lock().push_back(Arc::clone(&other));
            bell.waiting.fetch_add(1, Ordering::SeqCst);
            bell.ring_one();
            Some(1)
        });
        assert_eq!(got, Ok(1));
        assert_eq!(
            other.state.load(Ordering::SeqCst),
            RUNG,
            "the second change's ring went on to the other waiter"
        );
    }

    #[test]
    fn a_ring_received_before_a_cancellation_is_passed_on() {
        let bell = Arc::new(Bell::default());
        let token = CancelToken::new();
        let other = stand_in();
        let helper = {
            let (bell, token, other) = (Arc::clone(&bell), token.clone(), Arc::clone(&other));
            thread::spawn(move || {
                while bell.waiting.load(Ordering::SeqCst) == 0 {
                    thread::yield_now();
                }
                // Parked by now, most likely (if not, it sees the cancellation in the
                // same pass as the ring, and must pass the ring on all the same).
                thread::sleep(Duration::from_millis(20));
                bell.queue.lock().push_back(Arc::clone(&other));
                bell.waiting.fetch_add(1, Ordering::SeqCst);
                // A ring picks the oldest waiter, but the cancellation wakes it: the pass
                // that was rung ends without an answer, and the next one returns
                // `Cancelled` without trying.
                assert_eq!(bell.pick(false).len(), 1, "a waiter to pick");
                token.cancel();
            })
        };
        let got: Result<(), _> = wait(&[&bell], &token, None, First::Cancellation, || None);
        helper.join().unwrap();
        assert_eq!(got, Err(GaveUp::Cancelled));
        assert_eq!(
            other.state.load(Ordering::SeqCst),
            RUNG,
            "the ring the cancelled waiter never tried for went on to the other waiter"
        );
    }

    #[test]
    fn a_rung_waiter_that_times_out_passes_the_ring_on() {
        let bell = Bell::default();
        let token = CancelToken::new();
        // Another thread's place on the bell, enlisted after this thread's.
        let other = stand_in();
        let at = Instant::now() + Duration::from_millis(5);
        let mut once = true;
        let got: Result<(), _> = wait(&[&bell], &token, Some(at), First::Change, || {
            // Enlisted by now: the other waiter comes after, and a ring picks this one, in
            // the last try before the deadline.
            if Instant::now() >= at && std::mem::take(&mut once) {
                bell.queue.lock().push_back(Arc::clone(&other));
                bell.waiting.fetch_add(1, Ordering::SeqCst);
                bell.ring_one();
            }
            None
        });
        assert_eq!(got, Err(GaveUp::TimedOut));
        assert_eq!(
            other.state.load(Ordering::SeqCst),
            RUNG,
            "the ring this thread did not use went on to the other waiter"
        );
    }
}
