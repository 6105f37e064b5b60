//! Where items come from: iterators, fallible iterators, channels, custom sources.
//!
//! The source runs on a thread of its own, so it must be `Send`; the items it yields are
//! counted as *read*.

use crossbeam_channel::Receiver;

use crate::context::CancelToken;
use crate::error::BoxError;
use crate::transport::{Recv, recv_or_cancel};

/// A producer of items, pulled by the run's source thread.
///
/// Implement it for a source that wants to see cancellation, then pass it to a run through
/// [`custom`]. Plain iterators need none of this: anything `IntoIterator` is a source.
///
/// # Examples
///
/// ```
/// use pipework::{source, BoxError, CancelToken, Pipeline, Source};
///
/// /// Counts down, failing at 13.
/// struct Countdown(u32);
///
/// impl Source<u32> for Countdown {
///     fn next(&mut self, _: &CancelToken) -> Option<Result<u32, BoxError>> {
///         self.0 = self.0.checked_sub(1)?;
///         Some(if self.0 == 13 { Err("unlucky".into()) } else { Ok(self.0) })
///     }
/// }
///
/// let (out, _) = Pipeline::new().collect(source::custom(Countdown(3))).unwrap();
/// assert_eq!(out, [2, 1, 0]);
/// let err = Pipeline::<u32>::new().collect(source::custom(Countdown(20))).unwrap_err();
/// assert_eq!(err.to_string(), "source failed: unlucky");
/// ```
pub trait Source<T>: Send {
    /// The next item, `None` at the end, or an error that aborts the run.
    ///
    /// A source that blocks should wake up when `token` is cancelled; see
    /// [`CancelToken::sleep`].
    fn next(&mut self, token: &CancelToken) -> Option<Result<T, BoxError>>;

    /// Whether another item is ready without waiting. A hint: when it says no, the run sends
    /// the items it has buffered downstream at once instead of waiting to fill a chunk.
    /// The default, `true`, leaves chunking to timing alone.
    fn is_ready(&self) -> bool {
        true
    }
}

/// Conversion into a [`Source`]; what [`Pipeline::run`](crate::Pipeline::run) accepts.
///
/// Implemented for every `IntoIterator` whose iterator is `Send` (its items are read as they
/// are), and for the wrappers of this module.
pub trait IntoSource<T> {
    /// The source it becomes.
    type Source: Source<T>;

    /// Converts `self` into a source.
    fn into_source(self) -> Self::Source;
}

impl<I> IntoSource<I::Item> for I
where
    I: IntoIterator,
    I::IntoIter: Send,
{
    type Source = Iter<I::IntoIter>;

    fn into_source(self) -> Self::Source {
        Iter(self.into_iter())
    }
}

/// A source reading an iterator. Its `next` is called on the source thread and cannot be
/// interrupted: an iterator that blocks delays cancellation until it returns (use
/// [`receiver`] for channels).
#[derive(Debug)]
pub struct Iter<I>(I);

impl<I> Source<I::Item> for Iter<I>
where
    I: Iterator + Send,
{
    #[inline]
    fn next(&mut self, _: &CancelToken) -> Option<Result<I::Item, BoxError>> {
        self.0.next().map(Ok)
    }
}

/// A source reading an iterator of `Result`s: an `Err` aborts the run with
/// [`ErrorKind::Source`](crate::ErrorKind::Source).
///
/// # Examples
///
/// ```
/// use pipework::{source, ErrorKind, Pipeline};
///
/// let lines = vec![Ok("a"), Err(std::io::Error::other("disk on fire")), Ok("b")];
/// let err = Pipeline::new().collect(source::fallible(lines)).unwrap_err();
/// assert!(matches!(err.kind(), ErrorKind::Source { .. }));
/// ```
pub fn fallible<I, T, E>(iter: I) -> Fallible<I::IntoIter>
where
    I: IntoIterator<Item = Result<T, E>>,
    E: Into<BoxError>,
{
    Fallible(iter.into_iter())
}

/// The source [`fallible`] returns.
#[derive(Debug)]
pub struct Fallible<I>(I);

impl<I, T, E> Source<T> for Fallible<I>
where
    I: Iterator<Item = Result<T, E>> + Send,
    E: Into<BoxError>,
{
    fn next(&mut self, _: &CancelToken) -> Option<Result<T, BoxError>> {
        self.0.next().map(|r| r.map_err(Into::into))
    }
}

impl<I, T, E> IntoSource<T> for Fallible<I>
where
    I: Iterator<Item = Result<T, E>> + Send,
    E: Into<BoxError>,
{
    type Source = Self;

    fn into_source(self) -> Self {
        self
    }
}

/// A source reading a crossbeam channel until every sender is gone.
///
/// Unlike the channel used as a plain iterator, it stops waiting as soon as the run is
/// cancelled.
///
/// # Examples
///
/// ```
/// use pipework::{source, Pipeline};
///
/// let (tx, rx) = crossbeam_channel::bounded(4);
/// let producer = std::thread::spawn(move || (0..10).for_each(|i| tx.send(i).unwrap()));
/// let (out, _) = Pipeline::new().collect(source::receiver(rx)).unwrap();
/// producer.join().unwrap();
/// assert_eq!(out, (0..10).collect::<Vec<_>>());
/// ```
pub fn receiver<T>(rx: Receiver<T>) -> FromReceiver<T> {
    FromReceiver(rx)
}

/// The source [`receiver`] returns.
#[derive(Debug)]
pub struct FromReceiver<T>(Receiver<T>);

impl<T: Send> Source<T> for FromReceiver<T> {
    fn next(&mut self, token: &CancelToken) -> Option<Result<T, BoxError>> {
        match recv_or_cancel(&self.0, token, None) {
            Recv::Got(v) => Some(Ok(v)),
            Recv::Closed | Recv::Cancelled | Recv::TimedOut => None,
        }
    }

    fn is_ready(&self) -> bool {
        !self.0.is_empty()
    }
}

impl<T: Send> IntoSource<T> for FromReceiver<T> {
    type Source = Self;

    fn into_source(self) -> Self {
        self
    }
}

/// Wraps a [`Source`] implementation so that a run accepts it.
pub fn custom<S>(source: S) -> Custom<S> {
    Custom(source)
}

/// The wrapper [`custom`] returns.
#[derive(Debug)]
pub struct Custom<S>(S);

impl<T, S: Source<T>> Source<T> for Custom<S> {
    fn next(&mut self, token: &CancelToken) -> Option<Result<T, BoxError>> {
        self.0.next(token)
    }

    fn is_ready(&self) -> bool {
        self.0.is_ready()
    }
}

impl<T, S: Source<T>> IntoSource<T> for Custom<S> {
    type Source = Self;

    fn into_source(self) -> Self {
        self
    }
}
