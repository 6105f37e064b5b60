//! Measurements that need a process of their own (peak RSS, CPU time, thread counts): the
//! bench re-runs its own binary with a hidden argument (see `cli`), and the child prints its
//! figures as `key value` pairs, several to a line if it likes, on stdout.

use std::process::{Command, Stdio};

use crate::report::Out;

/// The figures a child printed.
pub struct Figures(Vec<(String, f64)>);

impl Figures {
    /// The figure printed under `key`, if any.
    pub fn get(&self, key: &str) -> Option<f64> {
        self.0.iter().find(|(k, _)| k == key).map(|&(_, v)| v)
    }
}

/// Prints `pairs` as one line of `key value` pairs, for the parent to read.
pub fn print_figures(pairs: &[(&str, f64)]) {
    let line: Vec<String> = pairs.iter().map(|(k, v)| format!("{k} {v}")).collect();
    println!("{}", line.join(" "));
}

/// Runs this binary with `args` and returns the figures it printed, which must include every
/// key of `required`; otherwise records a failed check (labelled `what`) and returns `None`.
pub fn run(out: &mut Out, what: &str, args: &[String], required: &[&str]) -> Option<Figures> {
    let exe = std::env::current_exe().expect("the bench's own path");
    let output = Command::new(exe)
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .expect("the child process starts");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let mut pairs = Vec::new();
    for line in stdout.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        for pair in words.chunks_exact(2) {
            if let Ok(value) = pair[1].parse() {
                pairs.push((pair[0].to_owned(), value));
            }
        }
    }
    let figures = Figures(pairs);
    let complete = required.iter().all(|k| figures.get(k).is_some());
    out.check(
        output.status.success() && complete,
        format_args!("{what}: {}, output {stdout:?}", output.status),
    );
    (output.status.success() && complete).then_some(figures)
}
