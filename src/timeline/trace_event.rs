//! The Trace Event Format export: the JSON that Perfetto and `chrome://tracing` open.
//!
//! Written by hand (the crate has no serialisation dependency):
//!
//! - one *process* per part of the pipeline: `source` (pid 1), each stage (pid `2 + i`,
//!   named `stage i: name (kind)`), `sink` (pid `2 + stages`); `process_name` and
//!   `process_sort_index` metadata events keep them in pipeline order;
//! - one *thread* per track: tid `1 + index` of the worker or helper in its stage (1 for
//!   the source and the sink), named by `thread_name` metadata, workers first;
//! - one complete event (`"ph":"X"`) per state of each interval, named `busy`, `waiting`
//!   or `blocked`, with `items` (and `merged`, the intervals it stands for, once merged)
//!   in its `args`; an interval's states are laid out one after the other from its start,
//!   busy first;
//! - one counter event (`"ph":"C"`) named `queued chunks` per queue sample, in the process
//!   of the stage the queue feeds (the sink's for the last queue).
//!
//! Times are in microseconds with three decimals: exact to the nanosecond.

use std::fmt::Write as _;
use std::io::{self, Write};

use super::{State, Timeline, TrackKind};
use crate::id::StageId;

impl Timeline {
    /// The process id of `stage` (`None`: the sink) in the export.
    fn pid_of(&self, stage: Option<usize>) -> usize {
        stage.map_or(self.stages.len() + 2, |i| i + 2)
    }

    /// Writes the timeline in the Trace Event Format (JSON), which Perfetto
    /// (ui.perfetto.dev) and `chrome://tracing` open.
    ///
    /// The layout: one process per stage (`stage 1: hash (fixed)`), plus `source` and
    /// `sink`, in pipeline order; one thread per worker (`hash #0`) and engine helper;
    /// complete events named `busy`, `waiting` and `blocked` with the chunk's `items`; and
    /// a `queued chunks` counter per queue, in the process of the stage it feeds. Times are
    /// microseconds from the start of the run, exact to the nanosecond.
    ///
    /// # Errors
    ///
    /// Whatever `out` returns.
    ///
    /// # Examples
    ///
    /// ```
    /// use pipework::{map, Fixed, Pipeline};
    ///
    /// let pipeline = Pipeline::new().stage("double", Fixed::new(2, map(|x: u32| x * 2)));
    /// let report = pipeline.job().record_timeline().run(0..1000, |_| Ok(())).unwrap();
    /// let mut json = Vec::new();
    /// report.timeline().unwrap().write_trace_events(&mut json).unwrap();
    /// let json = String::from_utf8(json).unwrap();
    /// assert!(json.contains(r#""name":"process_name","args":{"name":"stage 0: double (fixed)"}"#));
    /// ```
    pub fn write_trace_events<W: Write>(&self, out: W) -> io::Result<()> {
        let mut out = io::BufWriter::new(out);
        let mut w = Events {
            out: &mut out,
            first: true,
        };
        w.raw("{\"displayTimeUnit\":\"ms\",\"otherData\":{\"generator\":\"pipework\",")?;
        w.raw(&format!(
            "\"elapsed_us\":{},\"intervals_per_track\":{},\"samples_per_queue\":{}}},",
            Micros(self.elapsed),
            Self::INTERVALS_PER_TRACK,
            Self::SAMPLES_PER_QUEUE
        ))?;
        w.raw("\"traceEvents\":[\n")?;

        // Processes, in pipeline order.
        let mut processes = vec![(1, "source".to_owned())];
        for (id, kind) in &self.stages {
            processes.push((
                self.pid_of(Some(id.index())),
                format!("stage {}: {} ({kind})", id.index(), id.name()),
            ));
        }
        processes.push((self.pid_of(None), "sink".to_owned()));
        for (sort, (pid, name)) in processes.iter().enumerate() {
            w.event(&format!(
                "{{\"ph\":\"M\",\"pid\":{pid},\"tid\":0,\"name\":\"process_name\",\"args\":{{\"name\":{}}}}}",
                Json(name)
            ))?;
            w.event(&format!(
                "{{\"ph\":\"M\",\"pid\":{pid},\"tid\":0,\"name\":\"process_sort_index\",\"args\":{{\"sort_index\":{sort}}}}}"
            ))?;
        }

        for track in &self.tracks {
            let (pid, tid, sort) = match &track.kind {
                TrackKind::Source => (1, 1, 0),
                TrackKind::Worker { stage, worker } => {
                    (self.pid_of(Some(stage.index())), worker + 1, *worker)
                }
                TrackKind::Helper { stage, index, .. } => (
                    self.pid_of(Some(stage.index())),
                    index + 1,
                    index.saturating_add(1 << 20),
                ),
                TrackKind::Sink => (self.pid_of(None), 1, 0),
            };
            w.event(&format!(
                "{{\"ph\":\"M\",\"pid\":{pid},\"tid\":{tid},\"name\":\"thread_name\",\"args\":{{\"name\":{}}}}}",
                Json(&track.kind.label())
            ))?;
            w.event(&format!(
                "{{\"ph\":\"M\",\"pid\":{pid},\"tid\":{tid},\"name\":\"thread_sort_index\",\"args\":{{\"sort_index\":{sort}}}}}"
            ))?;
            for interval in &track.intervals {
                let (start, _, time) = interval.raw();
                let mut at = start;
                // Busy first, then blocked (a chunk's sends come at its end), then waiting.
                for state in [State::Busy, State::Blocked, State::Waiting] {
                    let ns = time[state as usize];
                    if ns == 0 {
                        continue;
                    }
                    let mut args = format!("\"items\":{}", interval.item_count());
                    if interval.parts() > 1 {
                        write!(args, ",\"merged\":{}", interval.parts())
                            .expect("writing to a String cannot fail");
                    }
                    w.event(&format!(
                        "{{\"ph\":\"X\",\"cat\":\"pipework\",\"name\":\"{}\",\"cname\":\"{}\",\"pid\":{pid},\"tid\":{tid},\"ts\":{},\"dur\":{},\"args\":{{{args}}}}}",
                        state.name(),
                        colour(state),
                        Micros(at),
                        Micros(ns)
                    ))?;
                    at += ns;
                }
            }
        }

        for queue in &self.queues {
            let pid = self.pid_of(queue.stage.as_ref().map(StageId::index));
            for &(at, chunks) in &queue.samples {
                w.event(&format!(
                    "{{\"ph\":\"C\",\"cat\":\"pipework\",\"name\":\"queued chunks\",\"pid\":{pid},\"tid\":0,\"ts\":{},\"args\":{{\"chunks\":{chunks}}}}}",
                    Micros(at)
                ))?;
            }
        }
        w.raw("\n]}\n")?;
        out.flush()
    }

    /// The timeline in the Trace Event Format, as a string (see
    /// [`write_trace_events`](Self::write_trace_events)).
    ///
    /// # Panics
    ///
    /// Never: writing to a `Vec` cannot fail, and the export is UTF-8.
    pub fn to_trace_events(&self) -> String {
        let mut buf = Vec::new();
        self.write_trace_events(&mut buf)
            .expect("writing to a Vec cannot fail");
        String::from_utf8(buf).expect("the export is UTF-8: ASCII and escaped user strings")
    }
}

/// The `chrome://tracing` colour of a state (Perfetto picks its own).
fn colour(state: State) -> &'static str {
    match state {
        State::Busy => "thread_state_running",
        State::Waiting => "thread_state_sleeping",
        State::Blocked => "terrible",
    }
}

/// The event list being written: events separated by commas, one a line.
struct Events<'w, W: Write> {
    out: &'w mut W,
    first: bool,
}

impl<W: Write> Events<'_, W> {
    fn raw(&mut self, s: &str) -> io::Result<()> {
        self.out.write_all(s.as_bytes())
    }

    fn event(&mut self, e: &str) -> io::Result<()> {
        if !std::mem::replace(&mut self.first, false) {
            self.out.write_all(b",\n")?;
        }
        self.out.write_all(e.as_bytes())
    }
}

/// Nanoseconds written as microseconds with three decimals.
struct Micros(u64);

impl std::fmt::Display for Micros {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{:03}", self.0 / 1000, self.0 % 1000)
    }
}

/// A string written as a JSON string literal.
struct Json<'a>(&'a str);

impl std::fmt::Display for Json<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use std::fmt::Write as _;
        f.write_char('"')?;
        for c in self.0.chars() {
            match c {
                '"' => f.write_str("\\\"")?,
                '\\' => f.write_str("\\\\")?,
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                '\t' => f.write_str("\\t")?,
                c if u32::from(c) < 0x20 || c == '\u{2028}' || c == '\u{2029}' => {
                    write!(f, "\\u{:04x}", u32::from(c))?;
                }
                c => f.write_char(c)?,
            }
        }
        f.write_char('"')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn micros_are_exact_to_the_nanosecond() {
        assert_eq!(Micros(0).to_string(), "0.000");
        assert_eq!(Micros(1).to_string(), "0.001");
        assert_eq!(Micros(1_234_567).to_string(), "1234.567");
    }

    #[test]
    fn strings_are_escaped() {
        assert_eq!(
            Json("a\"b\\c\n\u{1}é").to_string(),
            "\"a\\\"b\\\\c\\n\\u0001é\""
        );
    }
}
