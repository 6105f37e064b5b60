//! One worker process of a distributed batch: the same pipeline on N processes, fed by a
//! Redis Streams consumer group, with at-least-once delivery and crash recovery.
//!
//! Each job is a stream entry `job=ID n=PAYLOAD`; its result, `checksum = mix^ROUNDS(n)`, goes
//! to the results stream together with the job's ID. An entry that cannot be decoded goes to
//! the dead-letter stream with its error. See `redis_streams/mod.rs` for the source and sink.
//!
//! ```text
//! redis-server --port 6379 --save "" --appendonly no &
//! cargo run --release --example distributed -- --produce 20000          # enqueue jobs
//! cargo run --release --example distributed -- --consumer a --idle-exit-ms 1000 &
//! cargo run --release --example distributed -- --consumer b --idle-exit-ms 1000
//! cargo run --release --example distributed -- --bench 1,2,3            # drain times
//! ```
//!
//! A worker restarted under the same `--consumer` name resumes the entries it had not
//! acknowledged; entries a dead worker held are claimed by the others after `--min-idle-ms`.

// Pedantic lints this example allows, and why:
// - `cast_possible_truncation`: small counts and indices (thousands) fit the narrower type.
// - `cast_precision_loss`: counts and nanoseconds far below 2^52 become `f64` rates.
// - `items_after_statements`: helpers sit next to the one scenario that uses them.
// - `needless_pass_by_value`: the option parser takes owned strings, as `args()` yields.
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_precision_loss,
    clippy::items_after_statements,
    clippy::needless_pass_by_value
)]

mod redis_streams;

use std::fmt::Write as _;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pipework::{
    Batch, BoxError, CancelToken, Failure, Fifo, Fixed, Pipeline, StageOptions, map, source,
    try_map,
};
use redis_streams::{
    Config, Entry, InFlight, Reply, Stats, StreamSink, StreamSource, Writer, lock,
};

const USAGE: &str = "\
usage: distributed [OPTIONS]                 run one worker
       distributed --produce N [--bad K]     enqueue N jobs (and K undecodable entries)
       distributed --bench 1,2,3 [--jobs N] [--repeat R]
                                             time N jobs drained by 1, 2, 3 worker processes
options:
  --url URL            the Redis server (redis://127.0.0.1:6379/)
  --stream NAME        the job stream (pipework:jobs); results go to NAME:results,
                       undecodable entries to NAME:dead
  --group NAME         the consumer group (pipework)
  --consumer NAME      this worker's name in the group (worker-PID)
  --threads N          checksum threads (one per core)
  --rounds N           mixing rounds per job, the work (4000)
  --count N            entries per read and results per write (64)
  --in-flight N        most entries delivered and not acknowledged (256)
  --block-ms MS        how long a read blocks when there is nothing new (150)
  --min-idle-ms MS     claim entries pending that long with another consumer (30000)
  --idle-exit-ms MS    exit once nothing new came for MS and nothing is pending (never)
  --quiet              no report table";

/// The command line.
#[derive(Debug, Clone)]
struct Options {
    url: String,
    stream: String,
    group: String,
    consumer: String,
    threads: usize,
    rounds: u32,
    count: usize,
    in_flight: usize,
    block_ms: u64,
    min_idle_ms: u64,
    idle_exit_ms: Option<u64>,
    quiet: bool,
    produce: Option<u64>,
    bad: u64,
    bench: Option<Vec<usize>>,
    jobs: u64,
    repeat: usize,
}

impl Options {
    fn parse() -> Result<Self, String> {
        let mut o = Options {
            url: "redis://127.0.0.1:6379/".into(),
            stream: "pipework:jobs".into(),
            group: "pipework".into(),
            consumer: format!("worker-{}", std::process::id()),
            threads: std::thread::available_parallelism().map_or(2, std::num::NonZero::get),
            rounds: 4000,
            count: 64,
            in_flight: 256,
            block_ms: 150,
            min_idle_ms: 30_000,
            idle_exit_ms: None,
            quiet: false,
            produce: None,
            bad: 0,
            bench: None,
            jobs: 20_000,
            repeat: 3,
        };
        let mut args = std::env::args().skip(1);
        while let Some(flag) = args.next() {
            let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
            fn num<T: std::str::FromStr>(flag: &str, v: String) -> Result<T, String>
            where
                T::Err: std::fmt::Display,
            {
                v.parse().map_err(|e| format!("{flag} {v:?}: {e}"))
            }
            match flag.as_str() {
                "--url" => o.url = value()?,
                "--stream" => o.stream = value()?,
                "--group" => o.group = value()?,
                "--consumer" => o.consumer = value()?,
                "--threads" => o.threads = num(&flag, value()?)?,
                "--rounds" => o.rounds = num(&flag, value()?)?,
                "--count" => o.count = num(&flag, value()?)?,
                "--in-flight" => o.in_flight = num(&flag, value()?)?,
                "--block-ms" => o.block_ms = num(&flag, value()?)?,
                "--min-idle-ms" => o.min_idle_ms = num(&flag, value()?)?,
                "--idle-exit-ms" => o.idle_exit_ms = Some(num(&flag, value()?)?),
                "--quiet" => o.quiet = true,
                "--produce" => o.produce = Some(num(&flag, value()?)?),
                "--bad" => o.bad = num(&flag, value()?)?,
                "--bench" => {
                    let list = value()?;
                    let workers = list
                        .split(',')
                        .map(|w| num(&flag, w.to_owned()))
                        .collect::<Result<Vec<usize>, _>>()?;
                    o.bench = Some(workers);
                }
                "--jobs" => o.jobs = num(&flag, value()?)?,
                "--repeat" => o.repeat = num(&flag, value()?)?,
                "--help" | "-h" => return Err(String::new()),
                other => return Err(format!("unknown option {other}")),
            }
        }
        if o.threads == 0 || o.count == 0 || o.in_flight == 0 {
            return Err("--threads, --count and --in-flight must be at least 1".into());
        }
        Ok(o)
    }

    fn config(&self) -> Config {
        let mut c = Config::new(&self.url, &self.stream, &self.group, &self.consumer);
        c.count = self.count;
        c.max_in_flight = self.in_flight;
        c.block = Duration::from_millis(self.block_ms);
        c.min_idle = Duration::from_millis(self.min_idle_ms);
        c.idle_exit = self.idle_exit_ms.map(Duration::from_millis);
        c
    }
}

fn main() -> ExitCode {
    let options = match Options::parse() {
        Ok(o) => o,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("distributed: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let result = if let Some(n) = options.produce {
        produce(&options, n).map(|bad| {
            let stream = &options.stream;
            println!("enqueued {n} jobs and {bad} undecodable entries on {stream}");
        })
    } else if let Some(workers) = &options.bench {
        bench(&options, workers)
    } else {
        work(&options)
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let mut message = e.to_string();
            let mut cause = e.source();
            while let Some(c) = cause {
                // Skip causes that the message already spells out.
                if !message.contains(&c.to_string()) {
                    let _ = write!(message, ": {c}");
                }
                cause = c.source();
            }
            eprintln!("distributed: {}: error: {message}", options.consumer);
            ExitCode::FAILURE
        }
    }
}

/// One job, decoded.
#[derive(Debug, Clone)]
struct Job {
    entry: String,
    id: u64,
    n: u64,
}

/// The job of an entry; an error for an entry that is not one.
fn decode(entry: Entry) -> Result<Job, BoxError> {
    if entry.fields.is_none() {
        return Err("the entry was deleted from the stream while pending".into());
    }
    let number = |name: &str| -> Result<u64, BoxError> {
        let raw = entry
            .field(name)
            .ok_or_else(|| format!("no field `{name}`"))?;
        let text = std::str::from_utf8(raw).map_err(|_| format!("field `{name}` is not text"))?;
        text.parse()
            .map_err(|e| format!("field `{name}` = {text:?}: {e}").into())
    };
    let (id, n) = (number("job")?, number("n")?);
    Ok(Job {
        entry: entry.id,
        id,
        n,
    })
}

/// One round of the `SplitMix64` finaliser.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The work of one job: `rounds` dependent rounds of `mix`.
fn checksum(n: u64, rounds: u32) -> u64 {
    (0..rounds).fold(n, |x, _| mix(x))
}

/// Runs one worker until its source ends (idle exit) or fails.
fn work(o: &Options) -> Result<(), BoxError> {
    let config = o.config();
    let in_flight = InFlight::new(config.max_in_flight);
    let stats = Arc::new(Stats::default());
    let token = CancelToken::new();
    let source = StreamSource::open(config.clone(), Arc::clone(&in_flight), Arc::clone(&stats))?;
    let writer = Writer::open(config.clone(), in_flight, Arc::clone(&stats), token.clone())?;

    let (rounds, consumer) = (o.rounds, o.consumer.as_str());
    let dead = Arc::clone(&writer);
    let pipeline = Pipeline::new()
        .stage_with(
            "decode",
            Fifo::new(try_map(decode)),
            // Undecodable entries go to the failure handler, then to the dead-letter stream.
            StageOptions::new().route_failures_to(move |failure: Failure<Entry>| {
                let stage = failure.stage().name().to_owned();
                let error = failure.error().to_string();
                lock(&dead).dead_letter_or_stop(failure.item(), &stage, &error);
            }),
        )
        .stage(
            "checksum",
            Fixed::new(
                o.threads,
                map(move |job: Job| Reply {
                    entry: job.entry,
                    fields: vec![
                        ("job", job.id.to_string()),
                        ("n", job.n.to_string()),
                        ("checksum", checksum(job.n, rounds).to_string()),
                        ("rounds", rounds.to_string()),
                        ("consumer", consumer.to_owned()),
                    ],
                }),
            ),
        )
        // Results are written and acknowledged a batch per transaction.
        .stage(
            "batch",
            Batch::new(
                o.count,
                Duration::from_millis(2),
                map(|replies: Vec<Reply>| replies),
            ),
        );

    let started = Instant::now();
    let run = pipeline
        .job()
        .cancel_token(&token)
        .run(source::custom(source), StreamSink(Arc::clone(&writer)));
    // A failed dead-letter write cancelled the run: that error is the one to report.
    if let Some(e) = lock(&writer).take_error() {
        return Err(e.into());
    }
    let report = run?;
    let get = Stats::get;
    println!(
        "{}: {} results ({} late) and {} dead letters in {:.3} s; entries: {} new, {} resumed, {} claimed",
        o.consumer,
        get(&stats.results),
        get(&stats.late),
        get(&stats.dead),
        started.elapsed().as_secs_f64(),
        get(&stats.new),
        get(&stats.resumed),
        get(&stats.claimed),
    );
    if !o.quiet {
        println!("{report}");
    }
    Ok(())
}

/// The payload of job `id`: what the producer enqueues, and what a checker expects.
fn payload(id: u64) -> u64 {
    mix(id)
}

/// Enqueues `n` jobs and `o.bad` undecodable entries spread among them (at most one per
/// job); returns how many undecodable ones.
fn produce(o: &Options, n: u64) -> Result<u64, BoxError> {
    let config = o.config();
    let mut con = redis_streams::connect(&config)?;
    redis_streams::create_group(&mut con, &config.stream, &config.group)?;
    let bad_every = n.checked_div(o.bad).map_or(u64::MAX, |every| every.max(1));
    let (mut id, mut bad) = (0, 0);
    while id < n {
        let mut pipe = redis::pipe();
        for _ in 0..1000 {
            if id == n {
                break;
            }
            if bad < o.bad && id % bad_every == bad_every / 2 {
                pipe.cmd("XADD")
                    .arg(&config.stream)
                    .arg("*")
                    .arg("job")
                    .arg(format!("bad-{bad}"))
                    .ignore();
                bad += 1;
            }
            pipe.cmd("XADD")
                .arg(&config.stream)
                .arg("*")
                .arg("job")
                .arg(id)
                .arg("n")
                .arg(payload(id))
                .ignore();
            id += 1;
        }
        pipe.query::<()>(&mut con)?;
    }
    Ok(bad)
}

/// Times `o.jobs` jobs drained by each number of worker processes in `workers`.
fn bench(o: &Options, workers: &[usize]) -> Result<(), BoxError> {
    let exe = std::env::current_exe()?;
    let mut con = redis_streams::connect(&o.config())?;
    println!(
        "{} jobs of {} rounds, {} checksum thread(s) per worker, {} runs per worker count",
        o.jobs, o.rounds, o.threads, o.repeat
    );
    for &w in workers {
        let mut rates = Vec::new();
        for run in 0..o.repeat {
            let stream = format!("pipework:bench:{}:{w}:{run}", std::process::id());
            let results = format!("{stream}:results");
            let setup = Options {
                stream: stream.clone(),
                bad: 0,
                ..o.clone()
            };
            produce(&setup, o.jobs)?;
            // The clock starts with the workers, on a full stream: the time to drain it.
            let started = Instant::now();
            let mut children = Children(Vec::new());
            for i in 0..w {
                let child = Command::new(&exe)
                    .args(["--url", &o.url, "--stream", &stream, "--group", &o.group])
                    .args(["--consumer", &format!("bench-{i}")])
                    .args(["--rounds", &o.rounds.to_string()])
                    .args(["--threads", &o.threads.to_string()])
                    .args(["--count", &o.count.to_string()])
                    .args(["--in-flight", &o.in_flight.to_string()])
                    .args(["--idle-exit-ms", "200", "--quiet"])
                    .stdout(Stdio::null())
                    .spawn()?;
                children.0.push(child);
            }
            loop {
                let done: u64 = redis::cmd("XLEN").arg(&results).query(&mut con)?;
                if done >= o.jobs {
                    break;
                }
                if started.elapsed() > Duration::from_secs(600) {
                    return Err("the workers did not finish in 10 minutes".into());
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            let elapsed = started.elapsed();
            children.wait()?;
            redis::cmd("DEL")
                .arg(&stream)
                .arg(&results)
                .arg(format!("{stream}:dead"))
                .query::<()>(&mut con)?;
            let rate = o.jobs as f64 / elapsed.as_secs_f64();
            println!(
                "  {w} worker(s), run {}: {:.3} s, {rate:.0} jobs/s",
                run + 1,
                elapsed.as_secs_f64()
            );
            rates.push(rate);
        }
        rates.sort_by(f64::total_cmp);
        println!(
            "bench workers={w} jobs_per_s median={:.0} min={:.0} max={:.0}",
            rates[rates.len() / 2],
            rates[0],
            rates[rates.len() - 1]
        );
    }
    Ok(())
}

/// Worker processes, killed if still running when dropped.
struct Children(Vec<Child>);

impl Children {
    fn wait(&mut self) -> Result<(), BoxError> {
        for mut child in self.0.drain(..) {
            let status = child.wait()?;
            if !status.success() {
                return Err(format!("a worker exited with {status}").into());
            }
        }
        Ok(())
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
