//! Live progress of a long-running pipeline: a progress bar for the items done and one line
//! per stage that shows where the time goes (the bottleneck is marked).
//!
//! ```text
//! cargo run --release --example progress
//! cargo run --release --example progress -- --items 50000
//! ```
//!
//! The progress callback runs on the calling thread, between sink calls, every 100 ms, with a
//! snapshot of the report so far.

// Pedantic lints this example allows, and why:
// - `too_many_lines`: a long function is one scenario, read top to bottom.
#![allow(clippy::too_many_lines)]

use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use pipework::{Dynamic, Fifo, Fixed, Pipeline, Report, map, with_context};

/// A record flowing through the pipeline.
#[derive(Debug)]
struct Record {
    id: u64,
    payload: Vec<u8>,
}

fn main() {
    let items: u64 = std::env::args()
        .skip_while(|a| a != "--items")
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);

    let pipeline = Pipeline::new()
        .stage(
            "parse",
            Fixed::new(
                2,
                map(|id: u64| Record {
                    id,
                    payload: id.to_le_bytes().repeat(8),
                }),
            ),
        )
        .stage(
            "enrich",
            // An I/O call of 2 ms: the dynamic pool grows to keep up.
            Dynamic::new(
                32,
                with_context(|mut r: Record, cx| {
                    cx.sleep(Duration::from_millis(2)).map(|()| {
                        r.payload.push(1);
                        r
                    })
                }),
            ),
        )
        .stage(
            "compress",
            Fixed::new(
                2,
                map(|r: Record| {
                    // About 50 µs of CPU work per record.
                    let mut h = r.id;
                    for _ in 0..20_000 {
                        h = h.rotate_left(5) ^ 0x9E37_79B9_7F4A_7C15;
                    }
                    (r.id, h, r.payload.len())
                }),
            ),
        )
        .stage(
            "write",
            Fifo::new(with_context(|(id, h, len): (u64, u64, usize), cx| {
                // A slow-ish writer: 150 µs per record. It is the bottleneck.
                cx.sleep(Duration::from_micros(150))
                    .map(|()| id ^ h ^ len as u64)
            })),
        );

    let bars = MultiProgress::new();
    let done = bars.add(ProgressBar::new(items));
    done.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} items  {per_sec}  eta {eta}")
            .expect("a valid template"),
    );
    let lines: Vec<ProgressBar> = (0..pipeline.len())
        .map(|_| {
            let line = bars.add(ProgressBar::new_spinner());
            line.set_style(ProgressStyle::with_template("  {msg}").expect("a valid template"));
            line
        })
        .collect();
    let show = |r: &Report| {
        done.set_position(r.sink.consumed);
        let bottleneck = r.bottleneck().map(|s| s.id.index());
        for (s, line) in r.stages.iter().zip(&lines) {
            let mark = if Some(s.id.index()) == bottleneck {
                "◀ bottleneck"
            } else {
                ""
            };
            line.set_message(format!(
                "{:<9} {:<8} workers {:>3}  in {:>7}  out {:>7}  queued {:>3}  busy {:>3.0}%  {mark}",
                s.id.name(),
                s.kind,
                s.peak_workers,
                s.received,
                s.emitted,
                s.queued,
                s.utilization() * 100.0,
            ));
        }
    };

    let mut checksum = 0u64;
    let result = pipeline
        .job()
        .on_progress(Duration::from_millis(100), show)
        .run(0..items, |x| {
            checksum = checksum.wrapping_add(x);
            Ok(())
        });
    match result {
        Ok(report) => {
            show(&report);
            done.finish();
            for line in &lines {
                line.finish();
            }
            println!("\n{report}\nchecksum {checksum:016x}");
        }
        Err(e) => {
            done.abandon();
            eprintln!("failed: {e}");
            std::process::exit(1);
        }
    }
}
