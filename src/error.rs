//! The error a run returns, and where it came from.

use std::fmt;
use std::time::Duration;

use crate::id::StageId;
use crate::report::Report;

/// The error type processors, sources and sinks return: any error that can cross threads.
///
/// `?` converts any `std::error::Error + Send + Sync` into it, and so does `.into()` on a
/// `String` or `&str`.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// `Result` with [`Error`] as its default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a run failed, and what it had done by then.
///
/// [`kind`](Self::kind) says what went wrong first; [`report`](Self::report) is the report of
/// the aborted run: what was done, how many further errors were suppressed, and where every
/// item went. Only configuration errors, found before any thread starts, come without one.
///
/// # Display and the error chain
///
/// `{}` prints this level only (`stage 0 (parse) failed`), and
/// [`source`](std::error::Error::source) is the error of yours that caused it — the
/// processor's, the source's or the sink's — so that error-chain printers (`anyhow`'s
/// `{:#}`, `eyre`, …) show each level once. `{:#}` prints the whole chain on one line
/// (`stage 0 (parse) failed: invalid digit found in string`), for a plain
/// `eprintln!("error: {err:#}")`.
///
/// Your own error comes back with [`user_error`](Self::user_error) (whatever the kind),
/// typed with [`downcast_ref`](Self::downcast_ref); [`is_broken_pipe`](Self::is_broken_pipe)
/// says whether a reader went away.
///
/// # Examples
///
/// ```
/// use std::num::ParseIntError;
/// use pipework::{try_map, ErrorKind, Fifo, Pipeline};
///
/// let pipeline = Pipeline::new().stage("parse", Fifo::new(try_map(|s: &str| s.parse::<u32>())));
/// let err = pipeline.collect(["1", "x", "3"]).unwrap_err();
/// assert!(matches!(err.kind(), ErrorKind::Stage { stage, .. } if stage.name() == "parse"));
/// assert_eq!(err.stage().unwrap().name(), "parse");
/// assert_eq!(err.to_string(), "stage 0 (parse) failed");
/// assert_eq!(format!("{err:#}"), "stage 0 (parse) failed: invalid digit found in string");
/// let parse_error: &ParseIntError = err.downcast_ref().unwrap();
/// assert_eq!(parse_error.to_string(), "invalid digit found in string");
/// let totals = err.report().unwrap().totals();
/// assert_eq!(totals.failed, 1);
/// assert_eq!(totals.read, totals.sunk + totals.failed + totals.cancelled);
/// ```
#[derive(Debug)]
pub struct Error {
    /// What went wrong first.
    kind: ErrorKind,
    /// The aborted run's report; `None` for errors found before the run started.
    report: Option<Box<Report>>,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, report: Option<Report>) -> Self {
        Error {
            kind,
            report: report.map(Box::new),
        }
    }

    /// What went wrong first.
    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }

    /// Consumes the error, returning what went wrong first.
    pub fn into_kind(self) -> ErrorKind {
        self.kind
    }

    /// The report of the aborted run, or `None` when the run never started.
    pub fn report(&self) -> Option<&Report> {
        self.report.as_deref()
    }

    /// The stage the error belongs to, for stage errors, stage panics and stage
    /// configuration errors.
    pub fn stage(&self) -> Option<&StageId> {
        match &self.kind {
            ErrorKind::Stage { stage, .. }
            | ErrorKind::Panic {
                site: Site::Stage { stage, .. } | Site::Start { stage },
                ..
            }
            | ErrorKind::Runner { stage, .. } => Some(stage),
            ErrorKind::Config { stage, .. } => stage.as_ref(),
            _ => None,
        }
    }
}

impl Error {
    /// The error of yours that caused this one: the processor's error of a
    /// [`Stage`](ErrorKind::Stage) error, the source's of a [`Source`](ErrorKind::Source)
    /// error, the sink's (or the `run_with` closure's) of a [`Sink`](ErrorKind::Sink)
    /// error. `None` for the other kinds, which are pipework's own.
    pub fn user_error(&self) -> Option<&(dyn std::error::Error + Send + Sync + 'static)> {
        match &self.kind {
            ErrorKind::Stage { error, .. }
            | ErrorKind::Source { error }
            | ErrorKind::Sink { error } => Some(&**error),
            _ => None,
        }
    }

    /// Consumes the error, returning the error of yours that caused it (see
    /// [`user_error`](Self::user_error)).
    ///
    /// # Errors
    ///
    /// Gives the error back when it has no error of yours inside.
    pub fn into_user_error(self) -> Result<BoxError, Self> {
        match self.kind {
            ErrorKind::Stage { error, .. }
            | ErrorKind::Source { error }
            | ErrorKind::Sink { error } => Ok(error),
            kind => Err(Error {
                kind,
                report: self.report,
            }),
        }
    }

    /// The error of yours that caused this one, if it is an `E`.
    pub fn downcast_ref<E: std::error::Error + 'static>(&self) -> Option<&E> {
        self.user_error()?.downcast_ref()
    }

    /// Whether the run failed because a pipe's reader went away: an I/O error of kind
    /// `BrokenPipe` anywhere in the chain of the error of yours. A command-line tool
    /// treats it as a quiet end (`tool | head`); `pipework::sink::lines`
    /// already stops cleanly on it.
    pub fn is_broken_pipe(&self) -> bool {
        let mut next = self
            .user_error()
            .map(|e| e as &(dyn std::error::Error + 'static));
        while let Some(error) = next {
            if error
                .downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
            {
                return true;
            }
            next = error.source();
        }
        false
    }
}

/// `{}`: this level only; `{:#}`: the whole chain, joined by `: `.
impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.kind, f)?;
        if f.alternate() {
            let mut next = std::error::Error::source(self);
            while let Some(error) = next {
                write!(f, ": {error}")?;
                next = error.source();
            }
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&self.kind)
    }
}

/// What made a run fail. The first of these to happen wins; later ones are counted in
/// [`Report::suppressed_errors`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A processor returned an error for a stage whose policy is to fail fast.
    #[error("{stage} failed")]
    Stage {
        /// The stage whose processor failed.
        stage: StageId,
        /// The processor's error.
        #[source]
        error: BoxError,
    },
    /// The source returned an error.
    #[error("source failed")]
    Source {
        /// The source's error.
        #[source]
        error: BoxError,
    },
    /// The sink, or the closure given to [`run_with`](crate::Pipeline::run_with), returned
    /// an error.
    #[error("sink failed")]
    Sink {
        /// The sink's error.
        #[source]
        error: BoxError,
    },
    /// User code panicked. The panic was caught; the run was cancelled and joined.
    #[error("{site} panicked: {message}")]
    Panic {
        /// Where the panic happened.
        site: Site,
        /// The panic's message, when its payload was a string.
        message: String,
    },
    /// A stage's runner broke its contract (see
    /// `pipework::runner::StageRunner`): for
    /// instance every thread of the stage ended while its input went on.
    #[error("{stage} runner failed: {message}")]
    Runner {
        /// The stage.
        stage: StageId,
        /// What the runner did wrong.
        message: String,
    },
    /// The run was cancelled through a [`CancelToken`](crate::CancelToken).
    #[error("run cancelled")]
    Cancelled,
    /// The run did not finish within its time limit.
    #[error("run exceeded its time limit of {limit:?}")]
    Deadline {
        /// The limit that was exceeded, counted from the start of the run.
        limit: Duration,
    },
    /// The pipeline or the run was configured in a way that cannot work. Found before any
    /// thread starts.
    #[error("invalid configuration{}: {message}", stage.as_ref().map(|s| format!(" of {s}")).unwrap_or_default())]
    Config {
        /// The stage at fault, if one is.
        stage: Option<StageId>,
        /// What is wrong.
        message: String,
    },
}

/// Where a panic happened.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Site {
    /// In a stage's worker: its processor, its init closure, or the runner itself.
    Stage {
        /// The stage.
        stage: StageId,
        /// The worker's index within the stage.
        worker: usize,
    },
    /// In a runner's `StageRunner::start` (`pipework::runner`).
    Start {
        /// The stage.
        stage: StageId,
    },
    /// In the `Drop` of an item the run dropped (left in a queue when the run was
    /// cancelled, or sent nowhere).
    Drop,
    /// In the source (its `Drop` included).
    Source,
    /// In the sink.
    Sink,
    /// In a stage's failure handler (see
    /// [`StageOptions::route_failures_to`](crate::StageOptions::route_failures_to)).
    FailureHandler,
    /// In the progress callback given to [`Job::on_progress`](crate::Job::on_progress).
    Progress,
}

impl fmt::Display for Site {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Site::Stage { stage, worker } => write!(f, "{stage} worker {worker}"),
            Site::Start { stage } => write!(f, "{stage} runner start"),
            Site::Drop => f.write_str("an item's drop"),
            Site::Source => f.write_str("source"),
            Site::Sink => f.write_str("sink"),
            Site::FailureHandler => f.write_str("failure handler"),
            Site::Progress => f.write_str("progress callback"),
        }
    }
}

/// The message of a caught panic: its payload when that is a string.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "<non-string panic payload>".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_messages_come_from_string_payloads() {
        assert_eq!(panic_message(&"static"), "static");
        assert_eq!(panic_message(&String::from("owned")), "owned");
        assert_eq!(panic_message(&42u32), "<non-string panic payload>");
    }

    #[test]
    fn sites_name_where_a_panic_happened() {
        let stage = StageId::new(1, "fetch".into());
        let site = Site::Stage {
            stage: stage.clone(),
            worker: 3,
        };
        assert_eq!(site.to_string(), "stage 1 (fetch) worker 3");
        assert_eq!(
            Site::Start { stage }.to_string(),
            "stage 1 (fetch) runner start"
        );
    }
}
