//! The calling thread's part of a run: feeds the sink and the failure handler, calls the
//! progress callback, and reaps finished threads while it waits.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use super::state::{RunState, Tapped};
use super::threads::{Reaper, Taps};
use crate::error::{ErrorKind, Site, panic_message};
use crate::policy::Failure;
use crate::report::{Report, SinkReport};
use crate::sink::{Sink, Stop};
use crate::transport::{EdgeRx, Either, Inbox, Pacer, Payload, Recv, recv_either};

/// A progress callback and its schedule.
pub(crate) type Progress<'h> = (Duration, Box<dyn FnMut(&Report) + 'h>);

/// A failure handler.
pub(crate) type Handler<'h> = Box<dyn FnMut(Failure) + 'h>;

/// The calling thread's part of a run.
pub(crate) struct SinkLoop<'r, 'h, T> {
    pub(crate) run: &'r RunState,
    pub(crate) inbox: Inbox<T>,
    pub(crate) pacer: Pacer,
    pub(crate) report: SinkReport,
    pub(crate) failures: EdgeRx<Failure>,
    pub(crate) on_failure: Option<Handler<'h>>,
    pub(crate) started: Instant,
}

impl<T> SinkLoop<'_, '_, T> {
    /// Feeds the sink until the last edge closes or the run is cancelled.
    pub(crate) fn run<'scope, K: Sink<T>>(
        &mut self,
        sink: &mut K,
        mut progress: Option<&mut Progress<'_>>,
        taps: &mut Taps<'scope>,
        reaper: &mut Reaper<'scope>,
    ) {
        let token = &self.run.token;
        let mut next_tick = progress
            .as_ref()
            .and_then(|(every, _)| Instant::now().checked_add(*every));
        loop {
            if !self.consume_chunk(sink) {
                break;
            }
            self.report.busy +=
                Duration::from_nanos(self.pacer.finish(Instant::now(), 0, self.inbox.shape()));
            while let Recv::Got(failures) = self.failures.try_recv() {
                self.handle_failures(failures);
            }
            if token.is_cancelled() {
                break;
            }
            if next_tick.is_some_and(|at| Instant::now() >= at) {
                if let Some((every, callback)) = progress.as_deref_mut() {
                    if !self.tick(callback, taps.all()) {
                        break;
                    }
                    next_tick = Instant::now().checked_add(*every);
                }
            }
            match self.inbox.try_take() {
                Recv::Got(took) => {
                    self.pacer.begin(Instant::now(), took.len(), 0);
                    continue;
                }
                Recv::Closed | Recv::Cancelled => break,
                Recv::TimedOut => {}
            }
            // Nothing ready: wait for items, a failure, cancellation or the next tick.
            let waiting = Instant::now();
            let woken = recv_either(self.inbox.edge(), &self.failures, token, next_tick);
            self.report.waiting += waiting.elapsed();
            reaper.reap();
            match woken {
                Either::Idle => {}
                Either::First(chunk) => {
                    self.pacer.begin(Instant::now(), chunk.len(), 0);
                    self.inbox.load(chunk);
                }
                Either::Second(failures) => self.handle_failures(failures),
                Either::FirstClosed | Either::Cancelled => break,
            }
        }
        let (n, panic) = self.inbox.discard();
        self.report.cancelled += n;
        self.drop_panicked(panic);
    }

    /// Gives the current chunk to the sink. False when the run must stop.
    fn consume_chunk<K: Sink<T>>(&mut self, sink: &mut K) -> bool {
        let token = &self.run.token;
        let mut in_flight = false;
        let report = &mut self.report;
        let inbox = &mut self.inbox;
        let run = self.run;
        let consumed = catch_unwind(AssertUnwindSafe(|| {
            while let Some(item) = inbox.next_buffered() {
                if token.is_cancelled() {
                    report.cancelled += 1;
                    return false;
                }
                in_flight = true;
                let result = sink.consume(item);
                in_flight = false;
                match result {
                    Ok(()) => report.consumed += 1,
                    Err(error) if error.is::<Stop>() => {
                        // The sink refused this item and wants no more.
                        report.cancelled += 1;
                        run.stop();
                        return false;
                    }
                    Err(error) => {
                        report.failed += 1;
                        run.fail(ErrorKind::Sink { error });
                        return false;
                    }
                }
            }
            true
        }));
        match consumed {
            Ok(go_on) => go_on,
            Err(payload) => {
                if in_flight {
                    self.report.failed += 1;
                }
                self.run.fail(ErrorKind::Panic {
                    site: Site::Sink,
                    message: panic_message(&*payload),
                });
                false
            }
        }
    }

    /// Calls the sink's `finish` after a run that was not aborted.
    pub(crate) fn finish<K: Sink<T>>(&mut self, sink: &mut K) {
        match catch_unwind(AssertUnwindSafe(|| sink.finish())) {
            Ok(Ok(())) => {}
            Ok(Err(error)) => self.run.fail(ErrorKind::Sink { error }),
            Err(payload) => self.run.fail(ErrorKind::Panic {
                site: Site::Sink,
                message: panic_message(&*payload),
            }),
        }
    }

    /// Calls the failure handler on each failure; a panic in it aborts the run and
    /// retires the handler (the failures after it are dropped, their items already
    /// counted as failed and routed).
    fn handle_failures(&mut self, failures: Vec<Failure>) {
        for failure in failures {
            let Some(handler) = self.on_failure.as_mut() else {
                continue;
            };
            if let Err(payload) = catch_unwind(AssertUnwindSafe(|| handler(failure))) {
                let handler = self.on_failure.take();
                // The handler's own `Drop` may panic too.
                let _ = catch_unwind(AssertUnwindSafe(move || drop(handler)));
                self.run.fail(ErrorKind::Panic {
                    site: Site::FailureHandler,
                    message: panic_message(&*payload),
                });
            }
        }
    }

    /// Hands every failure still queued or set aside to the handler. After the join.
    pub(crate) fn deliver_rest(&mut self) {
        while let Recv::Got(failures) = self.failures.try_recv() {
            self.handle_failures(failures);
        }
        let overflow = self.run.take_overflow();
        self.handle_failures(overflow);
    }

    /// Reports a panic an item's `Drop` raised while the engine dropped it.
    pub(crate) fn drop_panicked(&self, payload: Option<Payload>) {
        if let Some(payload) = payload {
            self.run.fail(ErrorKind::Panic {
                site: Site::Drop,
                message: panic_message(&*payload),
            });
        }
    }

    /// Calls the progress callback with a snapshot. False when it panicked.
    fn tick(&mut self, callback: &mut Box<dyn FnMut(&Report) + '_>, taps: &[Tapped<'_>]) -> bool {
        let snapshot = self
            .run
            .report(self.report.clone(), self.started.elapsed(), taps);
        match catch_unwind(AssertUnwindSafe(|| callback(&snapshot))) {
            Ok(()) => true,
            Err(payload) => {
                self.run.fail(ErrorKind::Panic {
                    site: Site::Progress,
                    message: panic_message(&*payload),
                });
                false
            }
        }
    }
}
