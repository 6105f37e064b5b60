//! The command line: what to run, and at which sizes.

/// The hidden argument that turns this binary into a W7 child process, followed by the
/// number of items (and [`W7_TIMELINE`] to record the run's timeline).
pub const W7_CHILD: &str = "--w7-child";

/// With [`W7_CHILD`]: the child records its run's timeline.
pub const W7_TIMELINE: &str = "--timeline";

/// The hidden argument that turns this binary into a W4 child process: one run of the
/// batch-update demo, measured from inside.
pub const W4_CHILD: &str = "--w4-child";

/// What the arguments ask for.
pub enum Command {
    /// The workloads, at the sizes of `Mode`.
    Bench(Mode),
    /// `--scaling`: W3's work on 1..cores workers.
    Scaling,
    /// `--w7-child ITEMS [--timeline]`: one W7 run, in a process of its own, recording
    /// its timeline or not.
    W7Child(u64, bool),
    /// `--w4-child`: one run of the batch-update demo, in a process of its own.
    W4Child,
}

/// Reads the arguments; the error is a usage line. `cargo bench` adds `--bench`, so
/// anything not ours is ignored.
pub fn parse(args: &[String]) -> Result<Command, String> {
    if let Some(i) = args.iter().position(|a| a == W7_CHILD) {
        let timeline = args.iter().any(|a| a == W7_TIMELINE);
        return args
            .get(i + 1)
            .and_then(|s| s.parse().ok())
            .map(|items| Command::W7Child(items, timeline))
            .ok_or_else(|| format!("usage: {W7_CHILD} ITEMS [{W7_TIMELINE}]"));
    }
    let flag = |name: &str| args.iter().any(|a| a == name);
    let only = match args.iter().position(|a| a == "--only") {
        Some(i) => args
            .get(i + 1)
            .map(|list| list.split(',').map(str::to_owned).collect())
            .ok_or("usage: --only W3,W7 (workload labels, comma-separated)")?,
        None => Vec::new(),
    };
    Ok(if flag(W4_CHILD) {
        Command::W4Child
    } else if flag("--scaling") {
        Command::Scaling
    } else if flag("--quick") {
        Command::Bench(Mode {
            only,
            ..Mode::quick()
        })
    } else {
        Command::Bench(Mode {
            only,
            ..Mode::full()
        })
    })
}

/// Sizes and round counts of one mode.
pub struct Mode {
    pub quick: bool,
    /// Timed rounds per figure (W4 excepted), after one warm-up round.
    pub rounds: usize,
    /// Rounds of W4, whose single run takes 2 s: in-process runs, and child processes of
    /// the batch-update demo.
    pub w4_rounds: usize,
    /// Items of W1 and W2 (pipework, the sequential loop and the chunk chains).
    pub w1_items: u64,
    /// Items of the per-item chain in W1 and W2: it is too slow for the full count, so it
    /// runs on fewer and its rate is compared.
    pub item_chain_items: u64,
    /// Items of W3 and W8.
    pub w3_items: u64,
    /// Items of W5.
    pub w5_items: u64,
    /// Items of W6, one per millisecond, per round.
    pub w6_items: u32,
    /// Items of W7's large and small runs.
    pub w7_large: u64,
    pub w7_small: u64,
    /// Cancelled runs of W10 at each cancellation time.
    pub w10_repeats: usize,
    /// Timed runs of each W11 case, each paired with a run of the hand-written chain.
    pub w11_repeats: usize,
    /// The workloads to run (`--only W3,W7`; `W4` selects both of its parts); empty: all.
    pub only: Vec<String>,
}

impl Mode {
    /// Whether the workload labelled `label` (`"W4 footprint"`) runs.
    pub fn runs(&self, label: &str) -> bool {
        let workload = label.split(' ').next().unwrap_or(label);
        self.only.is_empty() || self.only.iter().any(|o| o == workload)
    }
}

impl Mode {
    fn full() -> Self {
        Mode {
            quick: false,
            rounds: 5,
            w4_rounds: 3,
            w1_items: 10_000_000,
            item_chain_items: 1_000_000,
            w3_items: 200_000,
            w5_items: 640,
            // Every round's p99 comes from at least 3,000 samples.
            w6_items: 3_000,
            w7_large: 10_000_000,
            w7_small: 100_000,
            w10_repeats: 10,
            w11_repeats: 200,
            only: Vec::new(),
        }
    }

    fn quick() -> Self {
        Mode {
            quick: true,
            rounds: 3,
            w4_rounds: 1,
            w1_items: 1_000_000,
            item_chain_items: 100_000,
            w3_items: 20_000,
            // W5 takes 0.1 s a round at full size; smaller, its ratio would mostly measure
            // thread start-up.
            w5_items: 640,
            w6_items: 300,
            w7_large: 1_000_000,
            w7_small: 10_000,
            w10_repeats: 3,
            w11_repeats: 40,
            only: Vec::new(),
        }
    }
}
