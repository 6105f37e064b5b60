//! `factor`: the prime factors of every number on standard input, one line each, in input
//! order — what coreutils' `factor` prints, on every core.
//!
//! ```text
//! $ seq 999999999990 999999999999 | cargo run --release --example factor
//! 999999999990: 2 3 3 5 21649 513239
//! …
//! $ printf '12\nnope\n15\n' | cargo run --release --example factor; echo "exit $?"
//! 12: 2 2 3
//! factor: line 2: "nope" is not a number: invalid digit found in string
//! exit 1
//! ```
//!
//! The pipeline keeps input order end to end (`Ordered`), so a bad line stops the output at
//! its position, as a loop would: every line before it is printed, none after it. A reader
//! that goes away (`… | factor | head -1`) ends the run quietly.

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::process::ExitCode;

use pipework::prelude::*;
use pipework::{Error, Report};

fn main() -> ExitCode {
    match run(io::stdin(), io::stdout().lock()) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            // The error of ours (a bad line, an unreadable input), or pipework's own.
            match e.user_error() {
                Some(cause) => eprintln!("factor: {cause}"),
                None => eprintln!("factor: {e:#}"),
            }
            ExitCode::FAILURE
        }
    }
}

/// Factors every line of `input`, writing `n: p1 p2 …` lines to `output` in input order.
///
/// # Errors
///
/// The first line that is not a number (or an input that cannot be read) fails the run,
/// after every line before it was written.
pub fn run(input: impl Read + Send, output: impl Write) -> Result<Report, Error> {
    let pipeline = Pipeline::new().stage(
        "factor",
        Ordered::per_core(try_map(|line: source::Line| {
            line.text
                .trim()
                .parse::<u64>()
                .map(|n| format!("{n}:{}", factors(n)))
                .map_err(|e| format!("line {}: {:?} is not a number: {e}", line.number, line.text))
        })),
    );
    pipeline.run(source::lines(input), sink::lines(output))
}

/// The prime factors of `n`, each preceded by a space.
fn factors(mut n: u64) -> String {
    let mut out = String::new();
    let mut d = 2;
    while d <= n / d {
        while n % d == 0 {
            let _ = write!(out, " {d}");
            n /= d;
        }
        d += if d == 2 { 1 } else { 2 };
    }
    if n > 1 {
        let _ = write!(out, " {n}");
    }
    out
}
