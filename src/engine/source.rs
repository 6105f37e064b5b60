//! The source thread: pulls items from the user's source and sends them into the first
//! edge in adaptive chunks.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::record::Observe;
use super::state::RunState;
use super::trace;
use crate::error::{ErrorKind, Site, panic_message};
use crate::report::SourceReport;
use crate::source::Source;
use crate::transport::pace::{BUDGET_NS, chunk_cap, nanos};
use crate::transport::{EdgeTx, Outbox, Payload};

/// The body of the source thread. Owns the only sender of the first edge, which closes
/// when this returns. Catches every panic of the user's source, its `Drop` included.
pub(crate) fn pump<T, S>(source: S, edge: EdgeTx<T>, run: &RunState, observe: &Observe)
where
    T: Send,
    S: Source<T>,
{
    let token = &run.source_token;
    let shape = std::sync::Arc::clone(edge.shape());
    let mut out = Outbox::new(edge);
    let mut read = 0u64;
    let started = Instant::now();
    let mut timeline = observe.recorder(crate::timeline::TrackKind::Source);
    if let Some(recorder) = timeline.as_deref_mut() {
        recorder.source_started(started);
    }
    let mut source = Some(source);
    // When the chunk being filled began: a moment before any `next` call it holds the
    // results of (each call starts after the loop saw the run not cancelled). A panic in
    // `next` happened after it (see `state` on which error is first).
    let chunk_started = std::cell::Cell::new(Instant::now());
    let pulled = catch_unwind(AssertUnwindSafe(|| {
        let Some(source) = source.as_mut() else {
            return;
        };
        // One item until the first chunk is measured (see `pace::Shape`): the first item of
        // a run is not held for the next, which a blocking iterator may not have yet.
        let mut limit = 1usize;
        while !token.is_cancelled() {
            if out.buffered() == 0 {
                chunk_started.set(Instant::now());
            }
            let item = match source.next(token) {
                None => break,
                Some(Ok(item)) => item,
                Some(Err(error)) => {
                    // When every stage keeps order, what was read before goes on to the sink.
                    if run.source_deferred {
                        run.fail_at(ErrorKind::Source { error }, 0, (0, 0));
                    } else {
                        run.fail(ErrorKind::Source { error });
                    }
                    break;
                }
            };
            read += 1;
            out.buffer(item);
            let len = out.buffered();
            // Send when the chunk is full, when the source says nothing more is ready, or
            // when the chunk has waited longer than the budget (checked at powers of two,
            // to keep clock reads off the per-item path).
            let due = len >= limit.min(shape.advice()).min(chunk_cap::<T>())
                || !source.is_ready()
                || (len.is_power_of_two()
                    && len >= 2
                    && nanos(chunk_started.get().elapsed()) > BUDGET_NS);
            if due {
                let per_item = nanos(chunk_started.get().elapsed()) / len as u64;
                // Ordering: Relaxed; a statistic for progress snapshots.
                run.source_read.store(read, Ordering::Relaxed);
                limit = shape.fit(limit, per_item);
                out.set_own_limit(limit);
                trace::source_chunk(len);
                let sent = out.flush(token);
                if let Some(recorder) = timeline.as_deref_mut() {
                    recorder.source_sent(Instant::now(), out.blocked_ns(), len);
                }
                if !sent {
                    break;
                }
            }
        }
    }));
    let panicked = |payload: Payload| ErrorKind::Panic {
        site: Site::Source,
        message: panic_message(&*payload),
    };
    if let Err(payload) = pulled {
        // In `next` (or `is_ready`): a call of the current chunk.
        run.fail_in_call(panicked(payload), chunk_started.get());
    }
    // The source's own `Drop` is user code too.
    if let Err(payload) = catch_unwind(AssertUnwindSafe(move || drop(source))) {
        run.fail(panicked(payload));
    }
    // The last chunk, unless the run was cancelled.
    let rest = out.buffered();
    if rest > 0 && !token.is_cancelled() {
        trace::source_chunk(rest);
    }
    if let Some(payload) = out.close(token).or_else(|| out.take_panic()) {
        run.fail(ErrorKind::Panic {
            site: Site::Drop,
            message: panic_message(&*payload),
        });
    }
    // Items the source read but could not send were headed for the first stage.
    run.count_leftover(0, out.take_cancelled());
    let ended = Instant::now();
    if let Some(mut recorder) = timeline {
        // The last stretch: the last items read, and the closing flush.
        recorder.source_sent(ended, out.blocked_ns(), rest);
        observe.submit(*recorder);
    }
    let blocked = Duration::from_nanos(out.blocked_ns());
    *run.source.lock() = SourceReport {
        read,
        busy: ended
            .saturating_duration_since(started)
            .saturating_sub(blocked),
        blocked,
    };
}
