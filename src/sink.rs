//! Where items end: closures, vectors, writers, custom sinks — or an iterator of the
//! outputs ([`Outputs`], see [`Pipeline::run_with`](crate::Pipeline::run_with)). Either
//! way the outputs are taken on the thread that called `run`.

use std::fmt;
use std::io::{self, Write};

use crate::error::BoxError;

/// The consumer at the end of a pipeline.
///
/// The sink runs **on the thread that called `run`**, never on a thread of the run. It is
/// therefore not required to be `Send`: it may hold an `Rc`, a `RefCell` or a handle that
/// must stay on its thread. It sees the items one at a time, in the order the last stage
/// emitted them.
///
/// Closures `FnMut(T) -> Result<(), BoxError>` are sinks, and so is `&mut Vec<T>`, which
/// collects; [`for_each`] takes a closure that cannot fail, [`try_for_each`] one that returns
/// any error type; [`lines`] writes each item as a line. To keep a sink of yours and read it after
/// the run, pass [`sink.by_ref()`](Sink::by_ref).
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
/// use pipework::{map, Fifo, Pipeline};
///
/// let seen = Rc::new(RefCell::new(Vec::new())); // not Send: fine for a sink
/// let sink_seen = Rc::clone(&seen);
/// Pipeline::new()
///     .stage("double", Fifo::new(map(|x: u32| x * 2)))
///     .run(1..=3, move |x| {
///         sink_seen.borrow_mut().push(x);
///         Ok(())
///     })
///     .unwrap();
/// assert_eq!(*seen.borrow(), [2, 4, 6]);
/// ```
///
/// A sink of your own, read after the run:
///
/// ```
/// use pipework::{map, BoxError, Fixed, Pipeline, Sink};
///
/// #[derive(Default)]
/// struct Stats { count: u64, max: u64 }
///
/// impl Sink<u64> for Stats {
///     fn consume(&mut self, x: u64) -> Result<(), BoxError> {
///         self.count += 1;
///         self.max = self.max.max(x);
///         Ok(())
///     }
/// }
///
/// let pipeline = Pipeline::new().stage("square", Fixed::new(2, map(|x: u64| x * x)));
/// let mut stats = Stats::default();
/// pipeline.run(1..=10, stats.by_ref()).unwrap();
/// assert_eq!((stats.count, stats.max), (10, 100));
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a sink of `{T}` items",
    label = "not a sink of `{T}`",
    note = "a sink is a closure `|item: {T}| -> Result<(), BoxError>`, `&mut Vec<{T}>`, \
            `sink::for_each(|item| …)`, `sink::try_for_each(|item| …)`, \
            `sink::lines(writer)` or a type implementing `pipework::Sink<{T}>`",
    note = "to read a sink of yours after the run, pass `your_sink.by_ref()`; to take the \
            outputs as an iterator, use `run_with(source, |outputs| …)`"
)]
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

    /// Called when no item is ready and the run is about to wait for one: a sink that
    /// buffers writes flushes them here, so that a slow trickle of outputs is not held
    /// back. The default does nothing.
    ///
    /// # Errors
    ///
    /// As [`consume`](Self::consume): an error aborts the run, [`Stop`] ends it cleanly.
    fn idle(&mut self) -> Result<(), BoxError> {
        Ok(())
    }

    /// Borrows the sink for a run, so that it can be read after the run (a sink passed by
    /// value is the run's, and dropped with it).
    fn by_ref(&mut self) -> ByRef<'_, Self>
    where
        Self: Sized,
    {
        ByRef(self)
    }
}

/// A sink borrowed for a run: what [`Sink::by_ref`] returns.
pub struct ByRef<'s, S>(&'s mut S);

impl<T, S: Sink<T>> Sink<T> for ByRef<'_, S> {
    #[inline]
    fn consume(&mut self, item: T) -> Result<(), BoxError> {
        self.0.consume(item)
    }

    fn finish(&mut self) -> Result<(), BoxError> {
        self.0.finish()
    }

    fn idle(&mut self) -> Result<(), BoxError> {
        self.0.idle()
    }
}

impl<S> fmt::Debug for ByRef<'_, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ByRef").finish_non_exhaustive()
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

/// The outputs of a run, as an iterator on the calling thread: what the closure given to
/// [`Pipeline::run_with`](crate::Pipeline::run_with) reads.
///
/// Items come as the last stage emits them. The iterator ends when the run's outputs end —
/// or when the run fails or is cancelled, in which case `run_with` returns the error.
/// Dropping it before the end (`take`, `find`, a `break`) stops the run cleanly, as a sink
/// returning [`Stop`] does: `run_with` returns `Ok` and the report's
/// [`stopped_early`](crate::Report::stopped_early) is set.
pub struct Outputs<'r, T> {
    /// The calling thread's loop.
    inner: &'r mut (dyn Iterator<Item = T> + 'r),
}

impl<'r, T> Outputs<'r, T> {
    pub(crate) fn new(inner: &'r mut (dyn Iterator<Item = T> + 'r)) -> Self {
        Outputs { inner }
    }
}

impl<T> Iterator for Outputs<'_, T> {
    type Item = T;

    #[inline]
    fn next(&mut self) -> Option<T> {
        self.inner.next()
    }
}

impl<T> std::iter::FusedIterator for Outputs<'_, T> {}

impl<T> fmt::Debug for Outputs<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Outputs").finish_non_exhaustive()
    }
}

/// A sink that calls `f` on every item, for a closure that cannot fail (a bare closure sink
/// must return `Result<(), BoxError>`).
///
/// # Examples
///
/// ```
/// use pipework::{map, sink, Fixed, Pipeline};
///
/// let pipeline = Pipeline::new().stage("square", Fixed::new(2, map(|x: u64| x * x)));
/// let mut sum = 0;
/// pipeline.run(1..=3, sink::for_each(|x| sum += x)).unwrap();
/// assert_eq!(sum, 14);
/// ```
pub fn for_each<T, F: FnMut(T)>(f: F) -> ForEach<F> {
    ForEach(f)
}

/// The sink [`for_each`] returns.
pub struct ForEach<F>(F);

impl<T, F: FnMut(T)> Sink<T> for ForEach<F> {
    #[inline]
    fn consume(&mut self, item: T) -> Result<(), BoxError> {
        (self.0)(item);
        Ok(())
    }
}

impl<F> fmt::Debug for ForEach<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ForEach").finish_non_exhaustive()
    }
}

/// A sink that calls `f` on every item, for a closure that returns an error type of its own
/// (`io::Error`, your enum, `anyhow::Error` through `Into<BoxError>`): an error aborts the
/// run with [`ErrorKind::Sink`](crate::ErrorKind::Sink), [`Stop`] ends it cleanly.
///
/// # Examples
///
/// ```
/// use pipework::{map, sink, Fifo, Pipeline};
/// use std::io::Write;
///
/// let pipeline = Pipeline::new().stage("double", Fifo::new(map(|x: u32| x * 2)));
/// let mut out = Vec::new();
/// pipeline
///     .run(1..=3, sink::try_for_each(|x| write!(out, "{x} ")))
///     .unwrap();
/// assert_eq!(out, b"2 4 6 ");
/// ```
pub fn try_for_each<T, E, F>(f: F) -> TryForEach<F>
where
    F: FnMut(T) -> Result<(), E>,
    E: Into<BoxError>,
{
    TryForEach(f)
}

/// The sink [`try_for_each`] returns.
pub struct TryForEach<F>(F);

impl<T, E: Into<BoxError>, F: FnMut(T) -> Result<(), E>> Sink<T> for TryForEach<F> {
    #[inline]
    fn consume(&mut self, item: T) -> Result<(), BoxError> {
        (self.0)(item).map_err(Into::into)
    }
}

impl<F> fmt::Debug for TryForEach<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TryForEach").finish_non_exhaustive()
    }
}

/// A sink that writes every item as a line (its `Display`, then `\n`) to `writer`,
/// buffered, and flushes whenever the run waits for outputs and at the end.
///
/// A **broken pipe** — the reader went away, as in `tool | head -3` — is a clean stop (see
/// [`Stop`]): the run ends early and returns `Ok`. Any other write error fails the run
/// with [`ErrorKind::Sink`](crate::ErrorKind::Sink).
///
/// # Examples
///
/// ```
/// use pipework::{map, sink, Fifo, Pipeline};
///
/// let pipeline = Pipeline::new().stage("double", Fifo::new(map(|x: u32| x * 2)));
/// let mut out = Vec::new();
/// pipeline.run(1..=3, sink::lines(&mut out)).unwrap();
/// assert_eq!(out, b"2\n4\n6\n");
/// ```
///
/// Standard output, locked once for the run (the sink runs on the calling thread, so it
/// need not be `Send`):
///
/// ```no_run
/// # use pipework::{map, sink, Fifo, Pipeline};
/// # let pipeline = Pipeline::new().stage("double", Fifo::new(map(|x: u32| x * 2)));
/// pipeline.run(1..=3, sink::lines(std::io::stdout().lock())).unwrap();
/// ```
pub fn lines<W: Write>(writer: W) -> Lines<W> {
    Lines(io::BufWriter::new(writer))
}

/// The sink [`lines`] returns.
pub struct Lines<W: Write>(io::BufWriter<W>);

impl<W: Write> Lines<W> {
    /// The writer, flushed.
    ///
    /// # Errors
    ///
    /// The error of the last flush, with the sink.
    pub fn into_inner(self) -> Result<W, io::IntoInnerError<io::BufWriter<W>>> {
        self.0.into_inner()
    }
}

/// A write error as a sink error: a broken pipe is a stop.
fn write_error(error: io::Error) -> BoxError {
    if error.kind() == io::ErrorKind::BrokenPipe {
        Stop.into()
    } else {
        error.into()
    }
}

impl<T: fmt::Display, W: Write> Sink<T> for Lines<W> {
    #[inline]
    fn consume(&mut self, item: T) -> Result<(), BoxError> {
        writeln!(self.0, "{item}").map_err(write_error)
    }

    fn finish(&mut self) -> Result<(), BoxError> {
        self.0.flush().map_err(write_error)
    }

    fn idle(&mut self) -> Result<(), BoxError> {
        self.0.flush().map_err(write_error)
    }
}

impl<W: Write> fmt::Debug for Lines<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lines")
            .field("buffered", &self.0.buffer().len())
            .finish_non_exhaustive()
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
/// use pipework::{map, Fixed, Pipeline, Stop};
///
/// let pipeline = Pipeline::new().stage("square", Fixed::new(2, map(|x: u64| x * x)));
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
