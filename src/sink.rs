//! Where items end: closures, vectors, custom sinks. The sink runs on the calling thread.

use crate::error::BoxError;

/// The consumer at the end of a pipeline.
///
/// The sink runs **on the thread that called `run`**, never on a thread of the run. It is
/// therefore not required to be `Send`: it may hold an `Rc`, a `RefCell` or a handle that
/// must stay on its thread. It sees the items one at a time, in the order the last stage
/// emitted them.
///
/// Closures `FnMut(T) -> Result<(), BoxError>` are sinks, and so is `&mut Vec<T>`, which
/// collects.
///
/// # Errors
///
/// An error from [`consume`](Self::consume) or [`finish`](Self::finish) aborts the run with
/// [`ErrorKind::Sink`](crate::ErrorKind::Sink).
///
/// # Examples
///
/// ```
/// use std::{cell::RefCell, rc::Rc};
/// use pipework::{Context, Fifo, Pipeline};
///
/// let seen = Rc::new(RefCell::new(Vec::new())); // not Send: fine for a sink
/// let sink_seen = Rc::clone(&seen);
/// Pipeline::new()
///     .stage("double", Fifo::new(|x: u32, _: &Context| Ok(x * 2)))
///     .run(1..=3, move |x| {
///         sink_seen.borrow_mut().push(x);
///         Ok(())
///     })
///     .unwrap();
/// assert_eq!(*seen.borrow(), [2, 4, 6]);
/// ```
pub trait Sink<T> {
    /// Takes one item.
    ///
    /// # Errors
    ///
    /// An error aborts the run; the item counts as failed.
    fn consume(&mut self, item: T) -> Result<(), BoxError>;

    /// Called once after the last item of a run that was not aborted.
    ///
    /// # Errors
    ///
    /// An error fails the run.
    fn finish(&mut self) -> Result<(), BoxError> {
        Ok(())
    }
}

impl<T, F> Sink<T> for F
where
    F: FnMut(T) -> Result<(), BoxError>,
{
    #[inline]
    fn consume(&mut self, item: T) -> Result<(), BoxError> {
        self(item)
    }
}

impl<T> Sink<T> for &mut Vec<T> {
    #[inline]
    fn consume(&mut self, item: T) -> Result<(), BoxError> {
        self.push(item);
        Ok(())
    }
}
