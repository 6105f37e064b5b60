//! Renders a run's recorded timeline as a PNG: one row per thread, grouped by stage, each
//! pixel coloured by what the thread did then — busy (green), waiting for input (blue),
//! blocked on a full output queue (red), not running (white) — with each stage's input
//! queue depth drawn above its rows and the report's bottleneck stage marked.
//!
//! A module of the examples (`examples/timeline.rs`, `examples/batch_update.rs`), not of
//! the library: it draws into a plain RGB raster, labels it with an 8×8 bitmap font
//! (`font8x8`) and writes it with the `png` crate. A stage with more threads than
//! [`MAX_ROWS_PER_STAGE`] gets bands of several threads per row, coloured by their average.

// Pedantic lints this module allows, and why:
// - `cast_possible_truncation`, `cast_precision_loss`, `cast_sign_loss`: pixel arithmetic —
//   sizes of a few thousand pixels, durations far below 2^52 ns, values clamped to 0..=255
//   before they become a colour channel.
// - `items_after_statements`: the drawing constants sit next to the step that uses them.
// - `too_many_lines`: `write_png` draws the picture top to bottom, one part after another.
// - `needless_pass_by_value`: `rows_of` takes the tracks it groups, as its callers build them.
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_precision_loss,
    clippy::cast_sign_loss,
    clippy::items_after_statements,
    clippy::too_many_lines,
    clippy::needless_pass_by_value
)]

use std::error::Error;
use std::fs::File;
use std::io::BufWriter;
use std::path::Path;
use std::time::Duration;

use pipework::{Report, State, Timeline, Track, TrackKind};

/// The picture's width, in pixels.
const WIDTH: usize = 1400;
/// Left of the plot: the labels.
const LABELS: usize = 230;
/// Right margin.
const RIGHT: usize = 24;
/// The most rows one stage gets; more threads share rows.
pub const MAX_ROWS_PER_STAGE: usize = 48;
/// Height of the plot's rows of threads, in pixels, all rows together, at most.
const PLOT_HEIGHT: usize = 720;

const BUSY: [u8; 3] = [46, 160, 67];
const WAITING: [u8; 3] = [164, 196, 232];
const BLOCKED: [u8; 3] = [214, 46, 40];
const IDLE: [u8; 3] = [248, 248, 248];
const QUEUE: [u8; 3] = [140, 95, 190];
const BACKGROUND: [u8; 3] = [255, 255, 255];
const TEXT: [u8; 3] = [30, 30, 30];
const FAINT: [u8; 3] = [150, 150, 150];
const RULE: [u8; 3] = [215, 215, 215];

/// An RGB raster.
struct Canvas {
    width: usize,
    height: usize,
    pixels: Vec<u8>,
}

impl Canvas {
    fn new(width: usize, height: usize) -> Self {
        let mut pixels = Vec::with_capacity(width * height * 3);
        for _ in 0..width * height {
            pixels.extend_from_slice(&BACKGROUND);
        }
        Canvas {
            width,
            height,
            pixels,
        }
    }

    fn set(&mut self, x: usize, y: usize, rgb: [u8; 3]) {
        if x < self.width && y < self.height {
            let i = (y * self.width + x) * 3;
            self.pixels[i..i + 3].copy_from_slice(&rgb);
        }
    }

    fn fill(&mut self, x: usize, y: usize, w: usize, h: usize, rgb: [u8; 3]) {
        for yy in y..y + h {
            for xx in x..x + w {
                self.set(xx, yy, rgb);
            }
        }
    }

    /// Writes `text` with its top-left corner at (`x`, `y`), each font pixel `scale`
    /// pixels wide; returns the width written.
    fn text(&mut self, x: usize, y: usize, text: &str, scale: usize, rgb: [u8; 3]) -> usize {
        let mut cx = x;
        for c in text.chars() {
            let glyph = font8x8::legacy::BASIC_LEGACY
                .get(c as usize)
                .copied()
                .unwrap_or(font8x8::legacy::BASIC_LEGACY[b'?' as usize]);
            for (row, bits) in glyph.iter().enumerate() {
                for col in 0..8 {
                    if bits & (1 << col) != 0 {
                        self.fill(cx + col * scale, y + row * scale, scale, scale, rgb);
                    }
                }
            }
            cx += 8 * scale;
        }
        cx - x
    }

    fn write_png(&self, path: &Path) -> Result<(), Box<dyn Error>> {
        let file = BufWriter::new(File::create(path)?);
        let mut encoder = png::Encoder::new(file, self.width as u32, self.height as u32);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header()?;
        writer.write_image_data(&self.pixels)?;
        writer.finish()?;
        Ok(())
    }
}

/// One row of the plot: one thread, or a band of several.
struct Row<'t> {
    label: String,
    tracks: Vec<&'t Track>,
}

/// A group of rows: the source, a stage, the sink.
struct Group<'t> {
    header: String,
    bottleneck: bool,
    /// The stage's input queue, for stages.
    queue: Option<usize>,
    rows: Vec<Row<'t>>,
}

/// Seconds or milliseconds, short.
fn short(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 1.0 {
        format!("{s:.2} s")
    } else if s >= 0.01 {
        format!("{:.0} ms", s * 1e3)
    } else if s >= 0.001 {
        format!("{:.1} ms", s * 1e3)
    } else {
        format!("{:.0} us", s * 1e6)
    }
}

/// A tick of the time axis, `step` seconds apart: as few digits as the step needs.
fn tick_label(t: f64, step: f64) -> String {
    if t == 0.0 {
        "0".into()
    } else if step >= 1.0 {
        format!("{t:.0} s")
    } else if step >= 0.1 && t >= 1.0 {
        format!("{t:.1} s")
    } else if step >= 0.001 {
        format!("{:.0} ms", t * 1e3)
    } else {
        format!("{:.1} ms", t * 1e3)
    }
}

/// The share of `part` in `whole`, as a percentage.
fn pct(part: Duration, whole: Duration) -> f64 {
    if whole.is_zero() {
        0.0
    } else {
        100.0 * part.as_secs_f64() / whole.as_secs_f64()
    }
}

/// The rows of `tracks`, banded when there are more than `MAX_ROWS_PER_STAGE`.
fn rows_of(tracks: Vec<&Track>) -> Vec<Row<'_>> {
    let workers: Vec<&Track> = tracks
        .iter()
        .copied()
        .filter(|t| matches!(t.kind(), TrackKind::Worker { .. }))
        .collect();
    let helpers: Vec<&Track> = tracks
        .iter()
        .copied()
        .filter(|t| !matches!(t.kind(), TrackKind::Worker { .. }))
        .collect();
    let room = MAX_ROWS_PER_STAGE.saturating_sub(helpers.len()).max(1);
    let band = workers.len().div_ceil(room).max(1);
    let mut rows: Vec<Row> = workers
        .chunks(band)
        .map(|chunk| {
            let label = if chunk.len() == 1 {
                chunk[0].kind().label()
            } else {
                let index = |t: &Track| match t.kind() {
                    TrackKind::Worker { worker, .. } => *worker,
                    _ => 0,
                };
                let name = chunk[0].kind().stage().map_or("", |s| s.name());
                format!(
                    "{name} #{}-{} ({})",
                    index(chunk[0]),
                    index(chunk[chunk.len() - 1]),
                    chunk.len()
                )
            };
            Row {
                label,
                tracks: chunk.to_vec(),
            }
        })
        .collect();
    rows.extend(helpers.into_iter().map(|t| Row {
        label: t.kind().label(),
        tracks: vec![t],
    }));
    rows
}

/// For each column of a plot `width` pixels wide over `elapsed`, the nanoseconds the
/// row's tracks spent in each state (spread evenly over each interval).
fn columns(row: &Row<'_>, elapsed: Duration, width: usize) -> Vec<[f64; 3]> {
    let mut cols = vec![[0.0; 3]; width];
    let ns_per_px = elapsed.as_nanos().max(1) as f64 / width as f64;
    for track in &row.tracks {
        for i in track.intervals() {
            let (a, b) = (
                i.start().as_nanos() as f64 / ns_per_px,
                i.end().as_nanos() as f64 / ns_per_px,
            );
            let times = State::ALL.map(|s| i.time(s).as_nanos() as f64);
            if b - a <= 0.0 {
                let c = (a as usize).min(width - 1);
                for (acc, t) in cols[c].iter_mut().zip(times) {
                    *acc += t;
                }
                continue;
            }
            let first = a.floor() as usize;
            let last = (b.ceil() as usize).min(width);
            for (c, col) in cols.iter_mut().enumerate().take(last).skip(first) {
                let overlap = (b.min(c as f64 + 1.0) - a.max(c as f64)).max(0.0) / (b - a);
                for (acc, t) in col.iter_mut().zip(times) {
                    *acc += t * overlap;
                }
            }
        }
    }
    cols
}

/// The colour of a column in which `time` (ns per state) was spent out of `capacity` ns.
fn blend(time: [f64; 3], capacity: f64) -> [u8; 3] {
    let total: f64 = time.iter().sum();
    let capacity = capacity.max(total).max(1.0);
    let shares = [
        (time[0] / capacity, BUSY),
        (time[1] / capacity, WAITING),
        (time[2] / capacity, BLOCKED),
        (1.0 - total / capacity, IDLE),
    ];
    let mut rgb = [0.0f64; 3];
    for (share, colour) in shares {
        for (acc, c) in rgb.iter_mut().zip(colour) {
            *acc += share * f64::from(c);
        }
    }
    rgb.map(|c| c.round().clamp(0.0, 255.0) as u8)
}

/// A tick step of 1, 2 or 5 × 10^k seconds giving about `n` ticks over `span`.
fn tick_step(span: Duration, n: f64) -> f64 {
    let raw = span.as_secs_f64() / n;
    let magnitude = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|step| *step >= raw)
        .unwrap_or(10.0 * magnitude)
}

/// Renders `report`'s timeline as a PNG at `path`, titled `title`.
///
/// # Errors
///
/// The report has no timeline (the run did not record one), or the file could not be
/// written.
pub fn write_png(report: &Report, title: &str, path: &Path) -> Result<(), Box<dyn Error>> {
    let timeline = report
        .timeline()
        .ok_or("the run recorded no timeline (Job::record_timeline)")?;
    render(report, timeline, title).write_png(path)
}

fn render(report: &Report, timeline: &Timeline, title: &str) -> Canvas {
    let elapsed = timeline.elapsed();
    let plot_width = WIDTH - LABELS - RIGHT;
    let bottleneck = report.bottleneck().map(|s| s.id.index());

    // The groups: source, stages, sink.
    let of_kind = |pick: fn(&TrackKind) -> bool| -> Vec<&Track> {
        timeline
            .tracks()
            .iter()
            .filter(|t| pick(t.kind()))
            .collect()
    };
    let mut groups = vec![Group {
        header: format!(
            "source: busy {}, blocked {}",
            short(report.source.busy),
            short(report.source.blocked)
        ),
        bottleneck: false,
        queue: None,
        rows: rows_of(of_kind(|k| matches!(k, TrackKind::Source))),
    }];
    for (stage, kind) in timeline.stages() {
        let s = &report.stages[stage.index()];
        let total = s.busy + s.waiting + s.blocked;
        let tracks: Vec<&Track> = timeline.stage_tracks(stage.index()).collect();
        let threads = tracks.len();
        let rows = rows_of(tracks);
        let per_row = if rows.len() < threads {
            format!(", about {} a row", threads.div_ceil(rows.len()))
        } else {
            String::new()
        };
        let mut header = format!(
            "stage {}: {} ({kind}, {threads} thread{}{per_row})  busy {:.0}%  waiting {:.0}%  blocked {:.0}%",
            stage.index(),
            stage.name(),
            if threads == 1 { "" } else { "s" },
            pct(s.busy, total),
            pct(s.waiting, total),
            pct(s.blocked, total),
        );
        let is_bottleneck = bottleneck == Some(stage.index());
        if is_bottleneck {
            header.push_str("   <<< bottleneck");
        }
        groups.push(Group {
            header,
            bottleneck: is_bottleneck,
            queue: Some(stage.index()),
            rows,
        });
    }
    groups.push(Group {
        header: format!(
            "sink (calling thread): busy {}, waiting {}",
            short(report.sink.busy),
            short(report.sink.waiting)
        ),
        bottleneck: false,
        queue: Some(timeline.stages().len()),
        rows: rows_of(of_kind(|k| matches!(k, TrackKind::Sink))),
    });

    // Sizes.
    let rows: usize = groups.iter().map(|g| g.rows.len()).sum();
    let thread_row_h = (PLOT_HEIGHT / rows.max(1)).clamp(3, 16);
    // The source's and the sink's single rows stay readable whatever the pools' sizes.
    let row_height = |g: &Group<'_>| {
        if g.rows.len() <= 2 {
            thread_row_h.max(12)
        } else {
            thread_row_h
        }
    };
    const HEADER: usize = 14;
    const QUEUE_H: usize = 18;
    const TOP: usize = 64;
    let groups_h: usize = groups
        .iter()
        .map(|g| 6 + HEADER + g.queue.map_or(0, |_| QUEUE_H + 2) + g.rows.len() * row_height(g))
        .sum();
    let height = TOP + groups_h + 70;
    let mut canvas = Canvas::new(WIDTH, height);

    // Title, subtitle, legend.
    canvas.text(12, 10, title, 2, TEXT);
    let t = report.totals();
    let sub = format!(
        "elapsed {}   read {}   sunk {}   failed {}   one row per thread; colour = share of each pixel's time",
        short(elapsed),
        t.read,
        t.sunk,
        t.failed
    );
    canvas.text(12, 34, &sub, 1, FAINT);
    let mut x = 12;
    for (name, colour) in [
        ("busy", BUSY),
        ("waiting for input", WAITING),
        ("blocked on output", BLOCKED),
        ("not running", IDLE),
        ("queued chunks (input queue)", QUEUE),
    ] {
        canvas.fill(x, 48, 12, 10, colour);
        canvas.fill(x, 48, 12, 1, FAINT);
        canvas.fill(x, 57, 12, 1, FAINT);
        canvas.fill(x, 48, 1, 10, FAINT);
        canvas.fill(x + 11, 48, 1, 10, FAINT);
        x += 18 + canvas.text(x + 18, 49, name, 1, TEXT) + 18;
    }

    // The groups.
    let mut y = TOP;
    for group in &groups {
        let row_h = row_height(group);
        let gap = usize::from(row_h >= 8);
        let labelled = row_h >= 9;
        y += 6;
        canvas.fill(12, y - 3, WIDTH - 12 - RIGHT, 1, RULE);
        let colour = if group.bottleneck { BLOCKED } else { TEXT };
        canvas.text(12, y + 2, &group.header, 1, colour);
        y += HEADER;
        if let Some(q) = group.queue.and_then(|i| timeline.queues().get(i)) {
            let peak = q.peak().max(1);
            let label = format!("input queue, peak {}", q.peak());
            canvas.text(20, y + 5, &label, 1, FAINT);
            canvas.fill(LABELS, y + QUEUE_H - 1, plot_width, 1, RULE);
            // A step function: each sample holds until the next.
            let samples: Vec<(Duration, usize)> = q.samples().collect();
            for c in 0..plot_width {
                let at = elapsed.mul_f64(c as f64 / plot_width as f64);
                let next = elapsed.mul_f64((c + 1) as f64 / plot_width as f64);
                let before = samples.partition_point(|(t, _)| *t <= at);
                let mut depth = if before > 0 { samples[before - 1].1 } else { 0 };
                for (t, d) in &samples[before..] {
                    if *t >= next {
                        break;
                    }
                    depth = depth.max(*d);
                }
                let h = (depth * (QUEUE_H - 2)).div_ceil(peak);
                canvas.fill(LABELS + c, y + QUEUE_H - 1 - h, 1, h, QUEUE);
            }
            y += QUEUE_H + 2;
        }
        for row in &group.rows {
            let cols = columns(row, elapsed, plot_width);
            let capacity = elapsed.as_nanos() as f64 / plot_width as f64 * row.tracks.len() as f64;
            for (c, time) in cols.iter().enumerate() {
                canvas.fill(LABELS + c, y, 1, row_h - gap, blend(*time, capacity));
            }
            if labelled {
                let mut label = row.label.clone();
                label.truncate(26);
                canvas.text(20, y + (row_h - gap).saturating_sub(8) / 2, &label, 1, TEXT);
            }
            y += row_h;
        }
    }

    // The time axis.
    y += 4;
    canvas.fill(LABELS, y, plot_width, 1, TEXT);
    let step = tick_step(elapsed, 8.0);
    let mut tick = 0.0;
    while tick <= elapsed.as_secs_f64() + 1e-12 {
        let x = LABELS + ((tick / elapsed.as_secs_f64().max(1e-12)) * plot_width as f64) as usize;
        canvas.fill(x.min(LABELS + plot_width - 1), y, 1, 6, TEXT);
        let label = tick_label(tick, step);
        let w = label.len() * 8;
        canvas.text(x.saturating_sub(w / 2), y + 10, &label, 1, TEXT);
        tick += step;
    }
    canvas.text(
        LABELS,
        y + 28,
        "time since the start of the run; a row shaded lighter spent part of each pixel not running",
        1,
        FAINT,
    );
    canvas
}
