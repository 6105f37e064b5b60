//! Where items come from: iterators, fallible iterators, readers, channels, custom sources.
//!
//! The source runs on a thread of its own, so it must be `Send`; the items it yields are
//! counted as *read*.
//!
//! Standard input is read with [`lines`]`(std::io::stdin())`: `stdin().lock()` is not
//! `Send`, and cannot be a source.

use std::fmt;
use std::io::{BufRead, BufReader, Read};

use crossbeam_channel::Receiver;

/// The channel crate [`receiver`] reads from, re-exported so that your channels and
/// pipework's are of the same version: `pipework::source::channel::bounded(16)`.
pub use crossbeam_channel as channel;

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
/// assert_eq!(format!("{err:#}"), "source failed: unlucky");
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a source of `{T}` items",
    label = "not a source of `{T}`",
    note = "a source must be `Send`: it runs on a thread of its own"
)]
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
/// are), and for the wrappers of this module: [`fallible`], [`lines`], [`receiver`],
/// [`custom`].
///
/// # Examples
///
/// The source runs on a thread of its own, so an iterator that is not `Send` cannot be
/// one — a locked standard input, an iterator over `Rc`s:
///
/// ```compile_fail
/// use std::io::BufRead;
/// use pipework::Pipeline;
///
/// let lines = std::io::stdin().lock().lines().map(Result::unwrap);
/// Pipeline::new().collect(lines).unwrap(); // `StdinLock` cannot be sent between threads
/// ```
///
/// Read standard input with [`lines`] instead:
///
/// ```no_run
/// use pipework::{source, Pipeline};
///
/// let (lines, _) = Pipeline::new().collect(source::lines(std::io::stdin())).unwrap();
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a source of `{T}` items",
    label = "not a source of `{T}` items",
    note = "a source is an `IntoIterator` of `{T}` whose iterator is `Send` (it runs on a \
            thread of its own), `source::fallible(results)`, `source::lines(reader)` — \
            `source::lines(std::io::stdin())` for standard input —, `source::receiver(rx)` \
            or `source::custom(your_source)`"
)]
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
    I::IntoIter: Send,
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

/// A source reading the lines of `reader`, numbered from 1; a read error (invalid UTF-8
/// included) fails the run with [`ErrorKind::Source`](crate::ErrorKind::Source), whose
/// error of yours is the [`std::io::Error`].
///
/// The reader is buffered here, and read on the source thread, so it must be `Send`:
/// `std::io::stdin()` is (its lock is not), and so are files and sockets. Line endings
/// (`\n` or `\r\n`) are removed, as [`BufRead::lines`] does. When the reader has no whole
/// line buffered, the lines read so far go downstream at once, so interactive input is not
/// held back.
///
/// # Examples
///
/// ```
/// use pipework::{map, source, Fifo, Pipeline};
///
/// let input = "apple\nfig\r\nbanana\n".as_bytes();
/// let pipeline = Pipeline::new()
///     .stage("label", Fifo::new(map(|line: source::Line| format!("{}:{}", line.number, line.text))));
/// let (out, _) = pipeline.collect(source::lines(input)).unwrap();
/// assert_eq!(out, ["1:apple", "2:fig", "3:banana"]);
/// ```
///
/// Standard input:
///
/// ```no_run
/// use pipework::{map, sink, source, Fifo, Pipeline};
///
/// let upper = Pipeline::new().stage("upper", Fifo::new(map(|line: source::Line| line.text.to_uppercase())));
/// upper.run(source::lines(std::io::stdin()), sink::lines(std::io::stdout().lock())).unwrap();
/// ```
pub fn lines<R: Read + Send>(reader: R) -> Lines<R> {
    Lines {
        reader: BufReader::new(reader),
        number: 0,
        buf: String::new(),
    }
}

/// A line of text and its number: what [`lines`] reads.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Line {
    /// The line's number, from 1.
    pub number: u64,
    /// The line, without its line ending.
    pub text: String,
}

/// `17: the text`.
impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.number, self.text)
    }
}

/// The source [`lines`] returns.
pub struct Lines<R> {
    /// The reader, buffered.
    reader: BufReader<R>,
    /// The last line's number.
    number: u64,
    /// The line being read.
    buf: String,
}

impl<R: Read + Send> Source<Line> for Lines<R> {
    fn next(&mut self, _: &CancelToken) -> Option<Result<Line, BoxError>> {
        self.buf.clear();
        match self.reader.read_line(&mut self.buf) {
            Ok(0) => None,
            Ok(_) => {
                if self.buf.ends_with('\n') {
                    self.buf.pop();
                    if self.buf.ends_with('\r') {
                        self.buf.pop();
                    }
                }
                self.number += 1;
                Some(Ok(Line {
                    number: self.number,
                    text: std::mem::take(&mut self.buf),
                }))
            }
            Err(error) => Some(Err(error.into())),
        }
    }

    fn is_ready(&self) -> bool {
        self.reader.buffer().contains(&b'\n')
    }
}

impl<R: Read + Send> IntoSource<Line> for Lines<R> {
    type Source = Self;

    fn into_source(self) -> Self {
        self
    }
}

impl<R> fmt::Debug for Lines<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lines")
            .field("number", &self.number)
            .finish_non_exhaustive()
    }
}

/// A source reading a crossbeam channel until every sender is gone.
///
/// Unlike the channel used as a plain iterator, it stops waiting as soon as the run is
/// cancelled. The channel crate is re-exported as [`channel`].
///
/// # Examples
///
/// ```
/// use pipework::{source, Pipeline};
///
/// let (tx, rx) = source::channel::bounded(4);
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
