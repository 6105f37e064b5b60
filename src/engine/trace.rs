//! The `tracing` hooks: spans for the run and its threads, events for chunks, retries,
//! routed failures, cancellation and the run's outcome.
//!
//! Every hook is here, behind `cfg(feature = "tracing")`; without the feature each is an
//! empty inline function and each guard a zero-sized type, so that the engine calls them
//! unconditionally and nothing is left of them in the build. The names, levels and fields
//! are listed in the crate's documentation (*Tracing*) and the README; keep them in step.

// Without the feature the hooks are empty by design: their `self` is unused there.
#![cfg_attr(not(feature = "tracing"), allow(clippy::unused_self))]

#[cfg(feature = "tracing")]
use tracing::{debug, debug_span, error, info, info_span, trace, warn};

use crate::error::{BoxError, Error};
use crate::id::StageId;
use crate::report::Report;

/// The run's span, `pipework.run` (nothing without the feature).
pub(crate) struct RunTrace {
    #[cfg(feature = "tracing")]
    span: tracing::Span,
}

/// The run's span, entered on the calling thread for the run (nothing without the
/// feature).
pub(crate) struct Entered<'a> {
    #[cfg(feature = "tracing")]
    _entered: tracing::span::Entered<'a>,
    #[cfg(not(feature = "tracing"))]
    _run: std::marker::PhantomData<&'a RunTrace>,
}

/// A thread's span, made before the thread starts (nothing without the feature).
pub(crate) struct ThreadSpan {
    #[cfg(feature = "tracing")]
    span: tracing::Span,
}

/// A thread's span, entered on the thread for its life (nothing without the feature).
pub(crate) struct InThread {
    #[cfg(feature = "tracing")]
    _entered: tracing::span::EnteredSpan,
}

impl ThreadSpan {
    /// Enters the span on the thread that calls this, until the guard is dropped.
    #[inline]
    pub(crate) fn enter_here(self) -> InThread {
        InThread {
            #[cfg(feature = "tracing")]
            _entered: self.span.entered(),
        }
    }
}

/// What a thread of a stage is, for its span.
#[derive(Clone, Copy)]
#[cfg_attr(not(feature = "tracing"), allow(dead_code))]
pub(crate) enum Role<'a> {
    /// A worker.
    Worker,
    /// A helper thread: a broadcast's fanout, or a runner's own (`spawn_helper`). The
    /// run's watcher thread serves every stage and has no stage span.
    Helper(&'a str),
}

impl RunTrace {
    /// The span of a run of `stages` stages, recording its timeline or not.
    #[inline]
    #[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
    pub(crate) fn new(stages: usize, timeline: bool) -> Self {
        RunTrace {
            #[cfg(feature = "tracing")]
            span: info_span!(
                target: "pipework",
                "pipework.run",
                stages,
                timeline,
                outcome = tracing::field::Empty
            ),
        }
    }

    /// Enters the run's span on the calling thread.
    #[inline]
    pub(crate) fn enter(&self) -> Entered<'_> {
        Entered {
            #[cfg(feature = "tracing")]
            _entered: self.span.enter(),
            #[cfg(not(feature = "tracing"))]
            _run: std::marker::PhantomData,
        }
    }

    /// The span of a thread of stage `stage`, `index` in the stage's numbering:
    /// `pipework.worker` or `pipework.helper`, a child of the run's span.
    #[inline]
    #[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
    pub(crate) fn stage_thread_span(
        &self,
        stage: &StageId,
        role: Role<'_>,
        index: usize,
    ) -> ThreadSpan {
        ThreadSpan {
            #[cfg(feature = "tracing")]
            span: match role {
                Role::Worker => debug_span!(
                    target: "pipework",
                    parent: &self.span,
                    "pipework.worker",
                    stage = stage.name(),
                    stage_index = stage.index(),
                    worker = index
                ),
                Role::Helper(role) => debug_span!(
                    target: "pipework",
                    parent: &self.span,
                    "pipework.helper",
                    stage = stage.name(),
                    stage_index = stage.index(),
                    role,
                    index
                ),
            },
        }
    }

    /// The span of the source thread, `pipework.source`, a child of the run's span.
    #[inline]
    pub(crate) fn source_thread_span(&self) -> ThreadSpan {
        ThreadSpan {
            #[cfg(feature = "tracing")]
            span: debug_span!(target: "pipework", parent: &self.span, "pipework.source"),
        }
    }

    /// The run's outcome, once every thread has been joined: an `info` event when it
    /// finished (or the sink stopped it), `warn` when it was cancelled, `error` with the
    /// first error otherwise; recorded as the span's `outcome` too.
    #[inline]
    #[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
    pub(crate) fn finished(&self, result: Result<&Report, &Error>) {
        #[cfg(feature = "tracing")]
        {
            use crate::error::ErrorKind;
            let _entered = self.span.enter();
            match result {
                Ok(report) => {
                    let t = report.totals();
                    let outcome = if report.stopped_early {
                        "stopped"
                    } else {
                        "ok"
                    };
                    self.span.record("outcome", outcome);
                    info!(
                        target: "pipework",
                        outcome,
                        elapsed_ms = report.elapsed.as_secs_f64() * 1e3,
                        read = t.read,
                        sunk = t.sunk,
                        failed = t.failed,
                        routed = t.routed,
                        suppressed_errors = report.suppressed_errors,
                        "run finished"
                    );
                }
                Err(e) => {
                    let (read, sunk, cancelled, suppressed) =
                        e.report().map_or((0, 0, 0, 0), |r| {
                            let t = r.totals();
                            (t.read, t.sunk, t.cancelled, r.suppressed_errors)
                        });
                    if matches!(e.kind(), ErrorKind::Cancelled) {
                        self.span.record("outcome", "cancelled");
                        warn!(
                            target: "pipework",
                            outcome = "cancelled",
                            read,
                            sunk,
                            cancelled,
                            "run cancelled"
                        );
                    } else {
                        self.span.record("outcome", "failed");
                        error!(
                            target: "pipework",
                            outcome = "failed",
                            error = %e,
                            stage = e.stage().map(StageId::name),
                            read,
                            sunk,
                            cancelled,
                            suppressed_errors = suppressed,
                            "run failed"
                        );
                    }
                }
            }
        }
    }
}

/// A worker closed a chunk after `busy_ns` of work on `items` items (those of the chunk
/// it did not give back) (`trace`).
#[inline]
#[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
pub(crate) fn chunk(items: u64, busy_ns: u64) {
    #[cfg(feature = "tracing")]
    if items > 0 || busy_ns > 0 {
        trace!(target: "pipework", items, busy_ns, "chunk");
    }
}

/// The source thread sent a chunk of `items` items (`trace`).
#[inline]
#[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
pub(crate) fn source_chunk(items: usize) {
    #[cfg(feature = "tracing")]
    trace!(target: "pipework", items, "chunk sent");
}

/// A transient failure, retried (`debug`): the attempt about to be made (2 for the first
/// retry).
#[inline]
#[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
pub(crate) fn retry(attempt: u32, error: &BoxError) {
    #[cfg(feature = "tracing")]
    debug!(target: "pipework", attempt, error = %error, "retrying a transient failure");
}

/// A failed item routed to the failure handler (`warn`).
#[inline]
#[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
pub(crate) fn routed(stage: &StageId, error: &BoxError) {
    #[cfg(feature = "tracing")]
    warn!(target: "pipework", stage = stage.name(), error = %error, "item failed, routed to the failure handler");
}

/// A fail-fast stage's processor failed (`debug`: the run's `error` event reports the
/// first error once the run is over; this one may be suppressed by an earlier one).
#[inline]
#[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
pub(crate) fn stage_failed(stage: &StageId, error: &BoxError) {
    #[cfg(feature = "tracing")]
    debug!(target: "pipework", stage = stage.name(), error = %error, "item failed, failing the stage");
}

/// A worker stopped because the run was cancelled, with `items` items it held counted as
/// cancelled (`debug`).
#[inline]
#[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
pub(crate) fn worker_cancelled(items: u64) {
    #[cfg(feature = "tracing")]
    debug!(target: "pipework", cancelled = items, "worker stopped by cancellation");
}

/// The sink loop stopped before the last edge closed: the run was cancelled or failed, or
/// the sink said `Stop` (`debug`).
#[inline]
#[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
pub(crate) fn sink_stopped(stopped_by_sink: bool) {
    #[cfg(feature = "tracing")]
    if stopped_by_sink {
        info!(target: "pipework", "the sink stopped the run");
    } else {
        debug!(target: "pipework", "sink loop stopped by cancellation");
    }
}
