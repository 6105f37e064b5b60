//! A producer's side of an edge.

use std::time::Instant;

use crossbeam_channel::TrySendError;

use super::pace::{chunk_cap, nanos};
use super::{EdgeTx, Payload, dispose};
use crate::context::CancelToken;

/// What a producer calls after it has sent a chunk, when its consumer is not a thread of
/// its own: an ordered pool's workers forward each other's outputs (see `engine::lanes`).
pub(crate) trait AfterSend {
    /// A chunk was sent.
    fn sent(&self);
}

/// A producer's side of an edge: buffers outputs and sends them as chunks.
///
/// Every item pushed ends in exactly one of two places: a chunk sent downstream, or the
/// `cancelled` count (pushed after the edge closed, or discarded).
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
    /// Items dropped because the run was cancelled, not yet reported.
    cancelled: u64,
    /// Nanoseconds spent blocked on a full channel, in all.
    blocked_ns: u64,
    /// A panic an item's `Drop` raised when a chunk that could not be sent was dropped.
    panic: Option<Payload>,
}

impl<T> Outbox<T> {
    pub(crate) fn new(edge: EdgeTx<T>) -> Self {
        Outbox {
            edge,
            buf: Vec::new(),
            // One item until the first chunk is measured, even on an edge that remembers
            // larger chunks (see `pace::Shape`): a first output is never held for more.
            own_limit: 1,
            target: 1,
            closed: false,
            cancelled: 0,
            blocked_ns: 0,
            panic: None,
        }
    }

    /// Recomputes the size at which the buffer is sent: the consumers' advice, the
    /// producer's own bound, and the chunk's byte budget (see `pace`).
    fn retarget(&mut self) {
        self.target = self
            .edge
            .shape()
            .advice()
            .min(self.own_limit)
            .min(chunk_cap::<T>());
    }

    /// Adapts the producer's own bound on its chunk size to a chunk of work that took
    /// `busy_ns` and emitted `outputs` (a one-to-many stage sizes by its cost per output).
    pub(crate) fn measure(&mut self, busy_ns: u64, outputs: u64) {
        if let Some(cost) = busy_ns.checked_div(outputs) {
            let limit = self.edge.shape().fit(self.own_limit, cost);
            self.set_own_limit(limit);
        }
    }

    /// Sends to `edge` from now on; returns the edge it sent to. The buffer must be empty.
    pub(crate) fn replace_edge(&mut self, edge: EdgeTx<T>) -> EdgeTx<T> {
        debug_assert!(self.buf.is_empty());
        let old = std::mem::replace(&mut self.edge, edge);
        self.retarget();
        old
    }

    /// Takes the payload of a panic raised by an item's `Drop` when a chunk could not be
    /// sent.
    pub(crate) fn take_panic(&mut self) -> Option<Payload> {
        self.panic.take()
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

    /// Nanoseconds spent blocked on a full channel so far.
    pub(crate) fn blocked_ns(&self) -> u64 {
        self.blocked_ns
    }

    /// Takes the count of items dropped because the run was cancelled.
    pub(crate) fn take_cancelled(&mut self) -> u64 {
        std::mem::take(&mut self.cancelled)
    }

    /// Buffers `item` without sending anything.
    #[inline]
    pub(crate) fn buffer(&mut self, item: T) {
        if self.closed {
            self.refuse(item);
        } else {
            self.buf.push(item);
        }
    }

    /// Drops `item`, an output that came after the edge closed.
    #[cold]
    #[inline(never)]
    fn refuse(&mut self, item: T) {
        self.cancelled += 1;
        let (_, panic) = dispose(std::iter::once(item));
        self.panic = self.panic.take().or(panic);
    }

    /// Buffers `item`, sending the buffer when it is full. Returns whether it sent (see
    /// [`after_send`](Self::after_send)).
    #[inline]
    pub(crate) fn push(&mut self, item: T, token: &CancelToken) -> bool {
        self.buffer(item);
        let full = self.buf.len() >= self.target;
        if full {
            self.flush_full(token);
        }
        full
    }

    /// Whether a send has failed (the run was cancelled): whatever is pushed now is
    /// dropped and counted.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed
    }

    /// Items the buffer takes before it is full.
    pub(crate) fn room(&self) -> usize {
        self.target.saturating_sub(self.buf.len())
    }

    /// Buffers the outputs of `f` on the next `n` items of `items` (`None`: no output;
    /// `n` at most `room()`, the outbox open), checking `stop` before taking each; returns
    /// how many it took, or the error of the last one taken. Sends nothing: the caller
    /// flushes when the buffer is full. The loop keeps the per-item work to the check, the
    /// call and the push (W1's pipeline: 1.2–1.8× the items per second of the
    /// item-by-item loop through an `Emitter`, with the other changes of its round).
    #[inline]
    pub(crate) fn map_from<I, E>(
        &mut self,
        items: &mut std::vec::IntoIter<I>,
        n: usize,
        f: &mut impl FnMut(I) -> Result<Option<T>, E>,
        stop: &CancelToken,
    ) -> Result<usize, E> {
        debug_assert!(!self.closed && n <= self.room());
        self.buf.reserve(n);
        for done in 0..n {
            if stop.is_cancelled() {
                return Ok(done);
            }
            let Some(item) = items.next() else {
                return Ok(done);
            };
            if let Some(output) = f(item)? {
                self.buf.push(output);
            }
        }
        Ok(n)
    }

    /// Calls `hook` after a send (see [`AfterSend`]); its time counts as blocked, not as
    /// the producer's work.
    pub(crate) fn after_send(&mut self, hook: &dyn AfterSend) {
        let started = Instant::now();
        hook.sent();
        self.blocked_ns += nanos(started.elapsed());
    }

    /// `flush`, out of the per-item path of `push`.
    #[inline(never)]
    pub(crate) fn flush_full(&mut self, token: &CancelToken) {
        self.flush(token);
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
        self.send(chunk, token)
    }

    /// Sends an empty chunk, after whatever is buffered: the end of a turn on a lane whose
    /// consumer takes turns (see `engine::lanes`). False once the edge is closed.
    pub(crate) fn end_turn(&mut self, token: &CancelToken) -> bool {
        self.flush(token) && self.send(Vec::new(), token)
    }

    fn send(&mut self, chunk: Vec<T>, token: &CancelToken) -> bool {
        // One try first, untimed and never waiting (not even for the edge's gate): a chunk
        // that fits costs no clock reads (W1 sends thousands a run). Only the time spent
        // waiting, in the timed send below, counts as blocked.
        let sent = match self.edge.try_send(chunk) {
            Err(TrySendError::Full(chunk)) => {
                let started = Instant::now();
                let sent = self.edge.send(chunk, token);
                self.blocked_ns += nanos(started.elapsed());
                sent
            }
            Err(TrySendError::Disconnected(chunk)) => Err(chunk),
            Ok(()) => Ok(()),
        };
        match sent {
            Ok(()) => true,
            Err(chunk) => {
                self.closed = true;
                let (n, panic) = dispose(chunk.into_iter());
                self.cancelled += n;
                self.panic = self.panic.take().or(panic);
                false
            }
        }
    }

    /// Drops the buffer and closes the outbox, counting the items as cancelled; returns the
    /// payload of a panic in an item's `Drop`.
    pub(crate) fn discard(&mut self) -> Option<Payload> {
        self.closed = true;
        let (n, panic) = dispose(std::mem::take(&mut self.buf).into_iter());
        self.cancelled += n;
        panic
    }

    /// Sends the buffer if the run goes on, or discards it if it was cancelled.
    pub(crate) fn close(&mut self, token: &CancelToken) -> Option<Payload> {
        if token.is_cancelled() || !self.flush(token) {
            self.discard()
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::{Recv, edge};

    #[test]
    fn sends_at_the_target_and_counts_what_it_cannot_send() {
        let token = CancelToken::new();
        let (tx, rx) = edge::<u32>(1, 8);
        rx.shape().advise(2);
        let mut out = Outbox::new(tx);
        out.set_own_limit(100);
        out.push(1, &token);
        assert_eq!(out.buffered(), 1);
        out.push(2, &token);
        assert_eq!(out.buffered(), 0);
        assert!(matches!(rx.try_recv(), Recv::Got(v) if v == [1, 2]));
        // Fill the edge, then cancel: the next send fails and everything after is counted.
        out.push(3, &token);
        out.push(4, &token);
        token.cancel();
        out.push(5, &token);
        out.push(6, &token);
        out.push(7, &token);
        assert!(out.discard().is_none());
        assert_eq!(out.take_cancelled(), 3);
        assert_eq!(out.take_cancelled(), 0);
    }

    #[test]
    // 64 KiB items are what this test is about.
    #[allow(clippy::large_stack_arrays)]
    fn large_items_are_sent_one_at_a_time() {
        let token = CancelToken::new();
        let (tx, rx) = edge::<[u8; 65536]>(4, 256);
        rx.shape().advise(256);
        let mut out = Outbox::new(tx);
        out.set_own_limit(256);
        out.push([0; 65536], &token);
        assert_eq!(out.buffered(), 0);
        assert!(matches!(rx.try_recv(), Recv::Got(v) if v.len() == 1));
    }

    #[test]
    fn a_turn_ends_with_an_empty_chunk() {
        let token = CancelToken::new();
        let (tx, rx) = edge::<u32>(4, 8);
        let mut out = Outbox::new(tx);
        out.set_own_limit(8);
        out.buffer(1);
        assert!(out.end_turn(&token));
        assert!(matches!(rx.try_recv(), Recv::Got(v) if v == [1]));
        assert!(matches!(rx.try_recv(), Recv::Got(v) if v.is_empty()));
    }
}
