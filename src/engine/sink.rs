//! The calling thread's part of a run: hands the outputs to the sink (or to the consumer's
//! iterator), calls the stages' failure handlers and the progress callback, and reaps
//! finished threads while it waits.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::record::{Observe, QueueSampler, Recorder, earliest};
use super::state::{RunState, Tapped};
use super::threads::{Reaper, Taps};
use super::trace;
use crate::context::CancelToken;
use crate::error::{BoxError, ErrorKind, Site, panic_message};
use crate::report::{Report, SinkReport};
use crate::sink::{Outputs, Sink, Stop};
use crate::transport::{EdgeRx, EdgeTx, Either, Inbox, Pacer, Payload, Recv, edge, recv_either};

/// A progress callback and its schedule.
pub(crate) type Progress<'h> = (Duration, Box<dyn FnMut(&Report) + 'h>);

/// A routed failure on its way to the calling thread: the call of the stage's failure
/// handler with the failed input, made there. Typed where it is made (the worker knows the
/// stage's input type and handler), so that nothing is downcast and nothing needs to be
/// `'static`.
pub(crate) type Delivery<'scope> = Box<dyn FnOnce() + Send + 'scope>;

/// The queue of deliveries from the workers to the calling thread.
pub(crate) struct Deliveries<'scope> {
    /// Bounded: a calling thread slow to handle failures holds the failing stages back.
    tx: EdgeTx<Delivery<'scope>>,
    /// Deliveries that could not be queued because the run was cancelled while the queue
    /// was full; made after the join.
    overflow: Mutex<Vec<Delivery<'scope>>>,
}

impl<'scope> Deliveries<'scope> {
    /// A queue of `capacity` deliveries, and its receiving end.
    pub(crate) fn new(capacity: usize) -> (Arc<Self>, EdgeRx<Delivery<'scope>>) {
        let (tx, rx) = edge(capacity, 1);
        let queue = Deliveries {
            tx,
            overflow: Mutex::new(Vec::new()),
        };
        (Arc::new(queue), rx)
    }

    /// Queues `delivery`. Never loses it: if the run is cancelled while the queue is full,
    /// it is kept for after the join.
    pub(crate) fn send(&self, delivery: Delivery<'scope>, token: &CancelToken) {
        if let Err(mut back) = self.tx.send(vec![delivery], token) {
            self.overflow.lock().append(&mut back);
        }
    }
}

/// The calling thread's part of a run.
pub(crate) struct SinkLoop<'scope, T> {
    pub(crate) run: &'scope RunState,
    pub(crate) inbox: Inbox<T>,
    pub(crate) pacer: Pacer,
    pub(crate) report: SinkReport,
    /// Routed failures waiting for their handler.
    pub(crate) delivered: EdgeRx<Delivery<'scope>>,
    pub(crate) deliveries: Arc<Deliveries<'scope>>,
    /// Set when a failure handler panicked: the failures after it are dropped (their items
    /// are already counted as failed and routed).
    pub(crate) handler_panicked: bool,
    pub(crate) started: Instant,
    /// Cancelled once every output has reached the consumer: the time limit no longer
    /// applies.
    pub(crate) done: CancelToken,
    /// Set once the outputs have ended (or the consumer stopped taking them).
    pub(crate) ended: bool,
    /// The sink loop's track and the queue sampler, when the run records its timeline.
    pub(crate) timeline: Option<(Box<Recorder>, QueueSampler)>,
}

/// The calling thread's loop while the consumer takes outputs: the loop's state and what
/// it uses besides.
pub(crate) struct Feed<'l, 'scope, 'p, T> {
    pub(crate) lp: &'l mut SinkLoop<'scope, T>,
    pub(crate) progress: Option<&'l mut Progress<'p>>,
    pub(crate) next_tick: Option<Instant>,
    pub(crate) taps: &'l mut Taps<'scope>,
    pub(crate) reaper: &'l mut Reaper<'scope>,
}

/// What takes a run's outputs on the calling thread: a [`Sink`], or a closure reading them
/// as an iterator.
pub(crate) trait Consumer<T> {
    /// What the consumer gives back after a run.
    type Output;

    /// Takes the outputs from `feed` until they end or the consumer wants no more. `None`
    /// when the consumer failed (the run has its error).
    fn consume(&mut self, feed: &mut Feed<'_, '_, '_, T>) -> Option<Self::Output>;
}

/// A [`Sink`] as a consumer.
pub(crate) struct ToSink<K>(pub(crate) K);

impl<T, K: Sink<T>> Consumer<T> for ToSink<K> {
    type Output = ();

    fn consume(&mut self, feed: &mut Feed<'_, '_, '_, T>) -> Option<()> {
        let sink = &mut self.0;
        while feed.consume_chunk(sink) && feed.next_chunk(Some(&mut *sink)) {}
        feed.end();
        let run = feed.lp.run;
        if !run.failed() && (!run.token.is_cancelled() || run.stopped()) {
            feed.finish(sink);
        }
        Some(())
    }
}

/// A closure reading the outputs as an iterator, as a consumer.
pub(crate) struct ToFn<F>(pub(crate) Option<F>);

impl<T, R, F> Consumer<T> for ToFn<F>
where
    F: FnOnce(Outputs<'_, T>) -> Result<R, BoxError>,
{
    type Output = R;

    fn consume(&mut self, feed: &mut Feed<'_, '_, '_, T>) -> Option<R> {
        let f = self.0.take()?;
        let result = catch_unwind(AssertUnwindSafe(|| f(Outputs::new(&mut *feed))));
        // Outputs the closure did not take: a clean early stop.
        let stopped = !feed.lp.ended;
        let run = feed.lp.run;
        // Its error is recorded before the outputs end for good: returned without having
        // read them all, it concerns an output the closure saw.
        let output = match result {
            Ok(Ok(value)) => Some(value),
            Ok(Err(error)) => {
                run.fail(ErrorKind::Sink { error });
                None
            }
            Err(payload) => {
                run.fail(ErrorKind::Panic {
                    site: Site::Sink,
                    message: panic_message(&*payload),
                });
                None
            }
        };
        feed.end();
        if stopped && output.is_some() {
            // A run cancelled already had its event from `end`.
            let cancelled = run.token.is_cancelled();
            run.stop();
            if !cancelled {
                trace::sink_stopped(true);
            }
        }
        output
    }
}

impl<T> Iterator for Feed<'_, '_, '_, T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        loop {
            if self.lp.ended {
                return None;
            }
            if let Some(item) = self.lp.inbox.next_buffered() {
                if self.lp.run.token.is_cancelled() {
                    self.lp.report.cancelled += 1;
                    self.end();
                    return None;
                }
                // Handed over: the consumer has it.
                self.lp.report.consumed += 1;
                return Some(item);
            }
            if !self.next_chunk(None) {
                self.end();
                return None;
            }
        }
    }
}

impl<T> Feed<'_, '_, '_, T> {
    /// Gives the current chunk to the sink. False when the run must stop.
    fn consume_chunk<K: Sink<T>>(&mut self, sink: &mut K) -> bool {
        let lp = &mut *self.lp;
        let run = lp.run;
        let token = &run.token;
        let mut in_flight = false;
        let report = &mut lp.report;
        let inbox = &mut lp.inbox;
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
                let kind = ErrorKind::Panic {
                    site: Site::Sink,
                    message: panic_message(&*payload),
                };
                if in_flight {
                    lp.report.failed += 1;
                    // The call began after the chunk was taken: an error recorded since then
                    // may have come after this panic, which waited for the panic hook.
                    run.fail_in_call(kind, lp.pacer.started());
                } else {
                    run.fail(kind);
                }
                false
            }
        }
    }

    /// Closes the current chunk and waits for the next one, handing routed failures to
    /// their handlers and calling the progress callback meanwhile; before it waits, tells
    /// `sink` it is idle. False when the outputs have ended or the run must stop.
    fn next_chunk(&mut self, mut sink: Option<&mut dyn Sink<T>>) -> bool {
        let lp = &mut *self.lp;
        let run = lp.run;
        let token = &run.token;
        let (open, chunk_started, items) = lp.pacer.chunk();
        let finished = Instant::now();
        let busy = lp.pacer.finish(finished, 0, lp.inbox.shape());
        lp.report.busy += Duration::from_nanos(busy);
        if let Some((recorder, sampler)) = lp.timeline.as_mut() {
            recorder.sink_chunk(open, chunk_started, finished, busy, items);
            sampler.sample(finished, self.taps);
        }
        loop {
            while let Recv::Got(deliveries) = lp.delivered.try_recv() {
                lp.deliver_all(deliveries);
            }
            if token.is_cancelled() {
                return false;
            }
            if self.next_tick.is_some_and(|at| Instant::now() >= at) {
                if let Some((every, callback)) = self.progress.as_deref_mut() {
                    if !lp.tick(callback, self.taps.all()) {
                        return false;
                    }
                    self.next_tick = Instant::now().checked_add(*every);
                }
            }
            match lp.inbox.try_take() {
                Recv::Got(took) => {
                    lp.pacer.begin(Instant::now(), took.len(), 0);
                    return true;
                }
                Recv::Closed | Recv::Cancelled => return false,
                Recv::TimedOut => {}
            }
            // Nothing ready: let a buffering sink flush, then wait for items, a failure,
            // cancellation, the next tick or, when recording, the next queue sample of an
            // idle sink loop.
            if let Some(sink) = sink.as_deref_mut() {
                if !lp.idle(sink) {
                    return false;
                }
            }
            let wake = match lp.timeline.as_mut() {
                Some((_, sampler)) => {
                    sampler.before_wait(Instant::now(), self.taps);
                    earliest(self.next_tick, Some(sampler.wake()))
                }
                None => self.next_tick,
            };
            let waiting = Instant::now();
            let woken = recv_either(lp.inbox.edge(), &lp.delivered, token, wake);
            let woke = Instant::now();
            lp.report.waiting += woke.saturating_duration_since(waiting);
            if let Some((recorder, _)) = lp.timeline.as_mut() {
                recorder.sink_wait(waiting, woke);
            }
            self.reaper.reap();
            match woken {
                Either::Idle => {}
                Either::First(chunk) => {
                    lp.pacer.begin(Instant::now(), chunk.len(), 0);
                    lp.inbox.load(chunk);
                    return true;
                }
                Either::Second(deliveries) => lp.deliver_all(deliveries),
                Either::FirstClosed | Either::Cancelled => return false,
            }
        }
    }

    /// The outputs have ended, or the consumer takes no more: counts what is left in the
    /// current chunk as cancelled; the time limit no longer applies, and a failure waiting
    /// at its position has taken effect.
    fn end(&mut self) {
        let lp = &mut *self.lp;
        if std::mem::replace(&mut lp.ended, true) {
            return;
        }
        lp.run.outputs_ended();
        if lp.run.token.is_cancelled() {
            trace::sink_stopped(lp.run.stopped());
        }
        let (n, panic) = lp.inbox.discard();
        lp.report.cancelled += n;
        lp.drop_panicked(panic);
        lp.done.cancel();
    }

    /// Calls the sink's `finish` after a run that was not aborted.
    fn finish<K: Sink<T>>(&mut self, sink: &mut K) {
        let run = self.lp.run;
        match catch_unwind(AssertUnwindSafe(|| sink.finish())) {
            Ok(Ok(())) => {}
            Ok(Err(error)) if error.is::<Stop>() => run.stop(),
            Ok(Err(error)) => run.fail(ErrorKind::Sink { error }),
            Err(payload) => run.fail(ErrorKind::Panic {
                site: Site::Sink,
                message: panic_message(&*payload),
            }),
        }
    }
}

impl<'scope, T> SinkLoop<'scope, T> {
    /// Tells the sink that nothing is ready. False when the run must stop.
    fn idle(&mut self, sink: &mut dyn Sink<T>) -> bool {
        match catch_unwind(AssertUnwindSafe(|| sink.idle())) {
            Ok(Ok(())) => true,
            Ok(Err(error)) if error.is::<Stop>() => {
                self.run.stop();
                false
            }
            Ok(Err(error)) => {
                self.run.fail(ErrorKind::Sink { error });
                false
            }
            Err(payload) => {
                self.run.fail(ErrorKind::Panic {
                    site: Site::Sink,
                    message: panic_message(&*payload),
                });
                false
            }
        }
    }

    /// Makes `deliveries`.
    fn deliver_all(&mut self, deliveries: Vec<Delivery<'scope>>) {
        for delivery in deliveries {
            self.deliver(delivery);
        }
    }

    /// Calls a failure handler; a panic in it aborts the run, and the failures after it
    /// are dropped (their items already counted as failed and routed).
    fn deliver(&mut self, delivery: Delivery<'scope>) {
        if self.handler_panicked {
            // Dropping it drops the failed inputs: user code.
            if let Err(payload) = catch_unwind(AssertUnwindSafe(move || drop(delivery))) {
                self.drop_panicked(Some(payload));
            }
            return;
        }
        if let Err(payload) = catch_unwind(AssertUnwindSafe(delivery)) {
            self.handler_panicked = true;
            self.run.fail(ErrorKind::Panic {
                site: Site::FailureHandler,
                message: panic_message(&*payload),
            });
        }
    }

    /// The sink's report and the queue depths sampled, after the join; hands the sink
    /// loop's track to the run.
    pub(crate) fn into_parts(self, observe: &Observe) -> (SinkReport, Option<QueueSampler>) {
        let sampler = self.timeline.map(|(recorder, sampler)| {
            observe.submit(*recorder);
            sampler
        });
        (self.report, sampler)
    }

    /// Hands every failure still queued or set aside to its handler. After the join.
    pub(crate) fn deliver_rest(&mut self) {
        while let Recv::Got(deliveries) = self.delivered.try_recv() {
            self.deliver_all(deliveries);
        }
        let overflow = std::mem::take(&mut *self.deliveries.overflow.lock());
        self.deliver_all(overflow);
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
