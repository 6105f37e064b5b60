//! A consumer's side of an edge.

use std::sync::Arc;
use std::time::Instant;

use super::{EdgeRx, Payload, Recv, Shape, dispose};
use crate::context::CancelToken;

/// A consumer's side of an edge: the current chunk, handed out item by item.
#[derive(Debug)]
pub(crate) struct Inbox<T> {
    /// Where chunks come from.
    rx: EdgeRx<T>,
    /// The shape of the edge this consumer advises (the stage's input edge, even when the
    /// chunks come through a lane of the stage's own).
    shape: Arc<Shape>,
    /// The rest of the current chunk.
    buf: std::vec::IntoIter<T>,
}

impl<T> Inbox<T> {
    pub(crate) fn new(rx: EdgeRx<T>, shape: Arc<Shape>) -> Self {
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

    /// Takes the next chunk if one is ready, without blocking; returns its length.
    pub(crate) fn try_take(&mut self) -> Recv<usize> {
        self.loaded(self.rx.try_recv())
    }

    /// Waits for the next chunk until `deadline` at most; returns its length.
    pub(crate) fn take(&mut self, token: &CancelToken, deadline: Option<Instant>) -> Recv<usize> {
        let got = self.rx.recv(token, deadline);
        self.loaded(got)
    }

    fn loaded(&mut self, got: Recv<Vec<T>>) -> Recv<usize> {
        match got {
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

    /// Drops the rest of the current chunk; returns how many items it held and the payload
    /// of a panic in an item's `Drop`.
    pub(crate) fn discard(&mut self) -> (u64, Option<Payload>) {
        dispose(std::mem::replace(&mut self.buf, Vec::new().into_iter()))
    }

    pub(crate) fn shape(&self) -> &Arc<Shape> {
        &self.shape
    }

    pub(crate) fn edge(&self) -> &EdgeRx<T> {
        &self.rx
    }
}
