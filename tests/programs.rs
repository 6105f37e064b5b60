//! Three programs written from the README and the crate docs alone, as a new user would
//! write them: a stdin→stdout tool (`examples/factor.rs`), a service handler sharing one
//! pipeline across threads (`examples/service.rs`), and a test asserting a stage's report by
//! name (below).

mod common;

#[allow(dead_code)]
#[path = "../examples/factor.rs"]
mod factor;

#[allow(dead_code)]
#[path = "../examples/service.rs"]
mod service;

use std::fmt::Write as _;
use std::io::{self, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::watchdog;
use pipework::prelude::*;
use pipework::{ErrorKind, Report};

// ---------------------------------------------------------------------------------------
// (a) A command-line tool: standard input to standard output, in order.
// ---------------------------------------------------------------------------------------

/// The lines `1` to `n`.
fn numbers(n: u64) -> String {
    (1..=n).fold(String::new(), |mut s, i| {
        let _ = writeln!(s, "{i}");
        s
    })
}

fn factor(input: &str) -> (String, Result<Report, pipework::Error>) {
    let mut out = Vec::new();
    let result = factor::run(input.as_bytes(), &mut out);
    (String::from_utf8(out).unwrap(), result)
}

#[test]
fn the_cli_prints_every_line_in_order() {
    let _dog = watchdog("factor", 30);
    let input = numbers(2_000);
    let (out, result) = factor(&input);
    let report = result.unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2_000);
    assert_eq!(lines[0], "1:");
    assert_eq!(lines[11], "12: 2 2 3");
    assert_eq!(lines[1_999], "2000: 2 2 2 2 5 5 5");
    assert_eq!(report.stage("factor").unwrap().emitted, 2_000);
}

#[test]
fn the_cli_stops_at_a_bad_line_after_printing_every_line_before_it() {
    let _dog = watchdog("factor bad line", 30);
    // The bad line is deep in the input: whatever the workers had done past it, exactly
    // the lines before it come out, every time.
    for _ in 0..20 {
        let mut input = numbers(5_000);
        input.insert_str(input.find("3001\n").unwrap(), "30x1\n");
        let (out, result) = factor(&input);
        let err = result.unwrap_err();
        assert_eq!(out.lines().count(), 3_000);
        assert!(out.ends_with("3000: 2 2 2 3 5 5 5\n"));
        assert!(matches!(err.kind(), ErrorKind::Stage { .. }));
        assert_eq!(
            err.user_error().unwrap().to_string(),
            r#"line 3001: "30x1" is not a number: invalid digit found in string"#
        );
    }
}

/// A writer whose reader goes away after `room` bytes.
struct ClosedAfter {
    room: usize,
}

impl Write for ClosedAfter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.room == 0 {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        let n = buf.len().min(self.room);
        self.room -= n;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn the_cli_stops_quietly_when_its_reader_goes_away() {
    let _dog = watchdog("factor | head", 30);
    let input = numbers(200_000);
    let report = factor::run(input.as_bytes(), ClosedAfter { room: 100 }).unwrap();
    assert!(report.stopped_early);
    assert!(report.totals().read < 200_000);
    assert!(report.totals().is_balanced());
}

// ---------------------------------------------------------------------------------------
// (b) A service handler: one definition, 8 threads, a time limit per request.
// ---------------------------------------------------------------------------------------

#[test]
fn the_service_serves_requests_from_eight_threads_with_a_timeout_each() {
    let _dog = watchdog("service", 60);
    let service = service::Service::new();
    let responses = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for t in 0..8u32 {
            let (service, responses) = (&service, &responses);
            s.spawn(move || {
                for r in 0..3u32 {
                    let request = t * 3 + r;
                    let mut products: Vec<u32> = (0..20).map(|i| request * 100 + i).collect();
                    if request == 5 {
                        products.push(service::SLOW_PRODUCT);
                    }
                    // Each request has its own time limit: short for the one with the slow
                    // product, generous for the others (20 lookups of 5–14 ms take tens of
                    // milliseconds, or seconds on a machine a soak test saturates).
                    let timeout = if request == 5 {
                        Duration::from_millis(300)
                    } else {
                        Duration::from_secs(20)
                    };
                    let asked = Instant::now();
                    let response = service.handle(products, timeout);
                    responses
                        .lock()
                        .unwrap()
                        .push((request, response, asked.elapsed()));
                }
            });
        }
    });
    let responses = responses.into_inner().unwrap();
    assert_eq!(responses.len(), 24);
    for (request, response, took) in responses {
        if request == 5 {
            assert_eq!(response, service::Response::Timeout);
            // The slow lookup was cut short at the deadline, not waited for.
            assert!(took < Duration::from_secs(5), "{took:?}");
        } else {
            let service::Response::Ok(mut quotes) = response else {
                panic!("request {request}: {response:?}");
            };
            quotes.sort_by_key(|q| q.product);
            assert_eq!(quotes.len(), 20);
            assert_eq!(quotes[0].product, request * 100);
            assert_eq!(quotes[0].cents, u64::from(request * 100) * 7 * 110 / 100);
        }
    }
}

// ---------------------------------------------------------------------------------------
// (c) A test asserting a stage's report by name.
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Row {
    id: u32,
    email: String,
}

#[test]
fn a_stages_report_by_name() {
    let _dog = watchdog("report by name", 30);
    let rejected = Mutex::new(Vec::new());
    let pipeline = Pipeline::new()
        .stage(
            "active",
            Fifo::new(filter_map(|r: Row| (r.id % 4 != 0).then_some(r))),
        )
        .stage_with(
            "validate",
            Fixed::new(
                2,
                try_map(|r: Row| {
                    if r.email.contains('@') {
                        Ok(r)
                    } else {
                        Err(format!("row {}: no @ in {:?}", r.id, r.email))
                    }
                }),
            ),
            StageOptions::new().route_failures_to(|f: Failure<Row>| {
                rejected.lock().unwrap().push(f.item().id);
            }),
        )
        .stage("ids", Fixed::per_core(map(|r: Row| r.id)));

    let rows = (0..100).map(|id| Row {
        id,
        email: if id % 10 == 3 {
            format!("user{id}")
        } else {
            format!("user{id}@example.com")
        },
    });
    let (ids, report) = pipeline.collect(rows).unwrap();

    let active = report.stage("active").unwrap();
    assert_eq!(
        (active.received, active.emitted, active.filtered),
        (100, 75, 25)
    );
    let validate = report.stage("validate").unwrap();
    assert_eq!(
        (validate.received, validate.failed, validate.routed),
        (75, 10, 10)
    );
    assert_eq!(validate.kind, "fixed");
    assert_eq!(report.stage("ids").unwrap().emitted, 65);
    assert!(report.stage("no such stage").is_none());
    assert_eq!(ids.len(), 65);
    assert!(report.totals().is_balanced());
    drop(pipeline);
    let mut rejected = rejected.into_inner().unwrap();
    rejected.sort_unstable();
    assert_eq!(rejected, [3, 13, 23, 33, 43, 53, 63, 73, 83, 93]);
}
