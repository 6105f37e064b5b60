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
/// [`ErrorKind::Sink`](crate::ErrorKind::Sink) — except [`Stop`], which ends the run early
/// and cleanly.
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

/// What a sink returns to end the run early and cleanly: `tool | head -1`, "stop at the first
/// match", a reader that went away.
///
/// Return `Err(Stop.into())` from [`Sink::consume`] for the first item you do not want. The
/// run then cancels the rest promptly, calls [`Sink::finish`], and returns `Ok` with a report
/// whose [`stopped_early`](crate::Report::stopped_early) is set; the item the sink refused
/// and those still in flight count as cancelled, so the report balances. A real error that
/// happened before the stop is still returned.
///
/// # Examples
///
/// ```
/// use pipework::{Context, Fixed, Pipeline, Stop};
///
/// let pipeline = Pipeline::new().stage("square", Fixed::new(2, |x: u64, _: &Context| Ok(x * x)));
/// let mut first = Vec::new();
/// let report = pipeline
///     .run(0..1_000_000u64, |x| {
///         if first.len() == 3 {
///             return Err(Stop.into());
///         }
///         first.push(x);
///         Ok(())
///     })
///     .unwrap();
/// assert_eq!(first.len(), 3);
/// assert!(report.stopped_early);
/// assert!(report.totals().is_balanced());
/// assert!(report.totals().read < 1_000_000);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, thiserror::Error)]
#[error("the sink stopped the run")]
pub struct Stop;

/// Whether `error` is a [`Stop`], or an I/O error of kind `BrokenPipe` (the reader went away,
/// which a command-line tool treats as a stop).
///
/// # Examples
///
/// ```
/// use pipework::{BoxError, Stop, sink::is_stop};
///
/// assert!(is_stop(&BoxError::from(Stop)));
/// let pipe: BoxError = std::io::Error::from(std::io::ErrorKind::BrokenPipe).into();
/// assert!(is_stop(&pipe));
/// assert!(!is_stop(&BoxError::from("disk full")));
/// ```
pub fn is_stop(error: &BoxError) -> bool {
    error.is::<Stop>()
        || error
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
}
