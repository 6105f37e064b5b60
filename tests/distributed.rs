//! The distributed example against a real `redis-server` on a loopback port: 10,000 jobs on
//! three worker processes, one of them killed mid-run and replaced; a restarted worker
//! resuming its pending entries; a lost connection failing a worker clearly.
//!
//! Needs `redis-server` on the PATH (CI installs it in `.ci/run`); without it the tests fail
//! with a message saying so. Every process they start is killed when the test ends, however
//! it ends, and a watchdog aborts a test that runs longer than two minutes.

// Pedantic lints this test allows, and why:
// - `cast_sign_loss`: only non-negative values (counts, rounded ratios) become unsigned.
// - `similar_names`: `stop`/`step`, `build`/`built`: the words they mean.
// - `too_many_lines`: a long function is one scenario, read top to bottom.
#![allow(clippy::cast_sign_loss, clippy::similar_names, clippy::too_many_lines)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The longest a test may run before its watchdog kills its processes and aborts.
const WATCHDOG: Duration = Duration::from_secs(120);

/// Mixing rounds per job (the example's default too).
const ROUNDS: u32 = 4000;

// ---------------------------------------------------------------------------------------
// What the example computes, written again here to check its results.

fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn checksum(n: u64, rounds: u32) -> u64 {
    (0..rounds).fold(n, |x, _| mix(x))
}

// ---------------------------------------------------------------------------------------
// Processes.

/// The worker binary, built (or found up to date) once per test process.
fn worker_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        // This test runs as <target>/<profile>/deps/distributed-<hash>; the example is
        // <target>/<profile>/examples/distributed.
        let exe = std::env::current_exe().expect("the test's own path");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("the test binary lives in <target>/<profile>/deps");
        let binary = profile_dir.join("examples").join("distributed");
        // `cargo test` builds the examples, but `cargo test --test distributed` does not:
        // build it (a no-op when it is up to date) with the profile of this test.
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut build = Command::new(cargo);
        build
            .args([
                "build",
                "--quiet",
                "--example",
                "distributed",
                "--manifest-path",
            ])
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"));
        if profile_dir.file_name().is_some_and(|p| p == "release") {
            build.arg("--release");
        }
        if let Some(target) = profile_dir.parent() {
            build.env("CARGO_TARGET_DIR", target);
        }
        let built = build.status();
        assert!(
            binary.exists(),
            "the example binary {} is missing and `cargo build --example distributed` \
             did not make it ({built:?})",
            binary.display()
        );
        binary
    })
}

/// `redis-server` from the PATH, or a failure that says how to get it.
fn redis_server() -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("redis-server"))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "redis-server is not on the PATH: tests/distributed.rs runs the distributed \
             example against a real Redis server. Install it (Debian: `apt-get install -y \
             redis-server`; .ci/run does this when it is missing)."
        )
    })
}

/// A port on the loopback interface that was free a moment ago.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().unwrap().port()
}

/// The processes of one test, by name; all killed when the test ends.
#[derive(Clone, Default)]
struct Procs(Arc<Mutex<Vec<(String, Child)>>>);

impl Procs {
    fn add(&self, name: &str, child: Child) {
        self.0.lock().unwrap().push((name.to_owned(), child));
    }

    /// The exit status of `name` if it has exited.
    fn try_wait(&self, name: &str) -> Option<ExitStatus> {
        let mut procs = self.0.lock().unwrap();
        let (_, child) = procs.iter_mut().find(|(n, _)| n == name).expect(name);
        child.try_wait().expect("try_wait")
    }

    /// Kills `name` with SIGKILL and reaps it; whether it was still running.
    fn kill(&self, name: &str) -> bool {
        let mut procs = self.0.lock().unwrap();
        let (_, child) = procs.iter_mut().find(|(n, _)| n == name).expect(name);
        let running = child.try_wait().expect("try_wait").is_none();
        let _ = child.kill();
        let _ = child.wait();
        running
    }

    fn kill_all(&self) {
        // The watchdog may get here while a test thread panicked holding the lock.
        let mut procs = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (_, child) in procs.iter_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One test's world: a temp dir, a `redis-server`, the workers, and a watchdog.
struct Harness {
    name: &'static str,
    dir: PathBuf,
    port: u16,
    /// The process name of the `redis-server`.
    server: String,
    procs: Procs,
    /// Dropped when the test ends, which stops the watchdog.
    _watchdog: mpsc::Sender<()>,
}

impl Harness {
    fn new(name: &'static str) -> Self {
        let server = redis_server();
        let dir = std::env::temp_dir().join(format!(
            "pipework-distributed-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let procs = Procs::default();
        let (tx, rx) = mpsc::channel::<()>();
        let (watched, watched_dir) = (procs.clone(), dir.clone());
        std::thread::spawn(move || {
            if let Err(RecvTimeoutError::Timeout) = rx.recv_timeout(WATCHDOG) {
                eprintln!("watchdog: test `{name}` still running after {WATCHDOG:?}; aborting");
                watched.kill_all();
                let _ = std::fs::remove_dir_all(&watched_dir);
                std::process::abort();
            }
        });
        let mut harness = Harness {
            name,
            dir,
            port: 0,
            server: String::new(),
            procs,
            _watchdog: tx,
        };
        harness.start_server(&server);
        worker_binary();
        harness
    }

    /// Starts `redis-server` on a free port; retries when another process took the port.
    fn start_server(&mut self, server: &Path) {
        for attempt in 0..5 {
            let port = free_port();
            let name = format!("redis-{attempt}");
            let child = Command::new(server)
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
                .arg("--dir")
                .arg(&self.dir)
                .arg("--logfile")
                .arg(self.dir.join(format!("{name}.log")))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start redis-server");
            self.procs.add(&name, child);
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline && self.procs.try_wait(&name).is_none() {
                self.port = port;
                if self.connect_once().is_some() {
                    self.server = name;
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            self.procs.kill(&name);
        }
        panic!(
            "redis-server did not start; see the logs in {}",
            self.dir.display()
        );
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn connect_once(&self) -> Option<redis::Connection> {
        let client = redis::Client::open(self.url()).ok()?;
        let mut con = client
            .get_connection_with_timeout(Duration::from_secs(1))
            .ok()?;
        redis::cmd("PING").query::<String>(&mut con).ok()?;
        con.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        Some(con)
    }

    fn connect(&self) -> redis::Connection {
        self.connect_once()
            .expect("connect to the test's redis-server")
    }

    /// Starts the example as process `name` with `args`, output to files in the temp dir.
    fn spawn(&self, name: &str, args: &[&str]) {
        let log = |ext: &str| std::fs::File::create(self.dir.join(format!("{name}.{ext}")));
        let child = Command::new(worker_binary())
            .args(["--url", &self.url()])
            .args(args)
            .stdin(Stdio::null())
            .stdout(log("out").unwrap())
            .stderr(log("err").unwrap())
            .spawn()
            .expect("start the example");
        self.procs.add(name, child);
    }

    /// Waits for `name` to exit, at most `limit`.
    fn wait(&self, name: &str, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.procs.try_wait(name) {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{}: `{name}` still running after {limit:?}\n{}",
                self.name,
                self.output(name)
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for `name` to exit successfully.
    fn expect_success(&self, name: &str, limit: Duration) {
        let status = self.wait(name, limit);
        assert!(
            status.success(),
            "`{name}` failed: {status}\n{}",
            self.output(name)
        );
    }

    /// What `name` printed, stdout then stderr.
    fn output(&self, name: &str) -> String {
        let read = |ext: &str| {
            std::fs::read_to_string(self.dir.join(format!("{name}.{ext}"))).unwrap_or_default()
        };
        format!(
            "--- {name} stdout\n{}--- {name} stderr\n{}",
            read("out"),
            read("err")
        )
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.procs.kill_all();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------------------------------
// Reading the streams.

type Fields = HashMap<String, String>;

fn xrange(con: &mut redis::Connection, stream: &str) -> Vec<(String, Fields)> {
    redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query(con)
        .expect("XRANGE")
}

fn xlen(con: &mut redis::Connection, stream: &str) -> u64 {
    redis::cmd("XLEN").arg(stream).query(con).expect("XLEN")
}

/// The IDs of the entries pending for `consumer`.
fn pending_of(
    con: &mut redis::Connection,
    stream: &str,
    group: &str,
    consumer: &str,
) -> Vec<String> {
    let rows: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
        .arg(stream)
        .arg(group)
        .arg("-")
        .arg("+")
        .arg(1_000_000)
        .arg(consumer)
        .query(con)
        .expect("XPENDING");
    rows.into_iter().map(|(id, ..)| id).collect()
}

/// How many entries are pending in the group, over all consumers.
fn pending_total(con: &mut redis::Connection, stream: &str, group: &str) -> u64 {
    let summary: redis::Value = redis::cmd("XPENDING")
        .arg(stream)
        .arg(group)
        .query(con)
        .expect("XPENDING");
    match summary {
        redis::Value::Array(items) => match items.first() {
            Some(redis::Value::Int(n)) => *n as u64,
            other => panic!("XPENDING summary: {other:?}"),
        },
        other => panic!("XPENDING summary: {other:?}"),
    }
}

/// Reads `XREADGROUP` entries as `consumer` without acknowledging them: a worker that died.
fn take_without_ack(
    con: &mut redis::Connection,
    stream: &str,
    group: &str,
    consumer: &str,
    count: usize,
) {
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(group)
        .arg(consumer)
        .arg("COUNT")
        .arg(count)
        .arg("STREAMS")
        .arg(stream)
        .arg(">")
        .query(con)
        .expect("XREADGROUP");
}

/// The three numbers of a worker's summary line: new, resumed and claimed entries.
fn entry_counts(stdout: &str) -> (u64, u64, u64) {
    let line = stdout
        .lines()
        .find(|l| l.contains("; entries: "))
        .unwrap_or_else(|| panic!("no summary line in {stdout:?}"));
    let tail = line.split("; entries: ").nth(1).unwrap();
    let numbers: Vec<u64> = tail
        .split(", ")
        .map(|part| part.split(' ').next().unwrap().parse().unwrap())
        .collect();
    (numbers[0], numbers[1], numbers[2])
}

// ---------------------------------------------------------------------------------------
// The tests.

#[test]
fn three_workers_one_killed_every_job_done() {
    const JOBS: u64 = 10_000;
    const BAD: u64 = 3;
    let h = Harness::new("kill");
    let mut con = h.connect();
    let started = Instant::now();

    let (stream, group, results) = ("jobs", "batch", "jobs:results");
    let common = [
        "--stream",
        stream,
        "--group",
        group,
        "--rounds",
        "4000",
        "--threads",
        "1",
        "--count",
        "16",
        "--in-flight",
        "64",
        "--min-idle-ms",
        "1000",
        "--idle-exit-ms",
        "1500",
        "--quiet",
    ];
    h.spawn(
        "producer",
        &[
            "--stream",
            stream,
            "--group",
            group,
            "--produce",
            "10000",
            "--bad",
            "3",
        ],
    );
    h.expect_success("producer", Duration::from_secs(60));
    assert_eq!(xlen(&mut con, stream), JOBS + BAD);

    for w in ["w1", "w2", "w3"] {
        h.spawn(w, &[&common[..], &["--consumer", w]].concat());
    }

    // Kill w2 once a quarter of the results are in and it holds entries.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "no progress\n{}", h.output("w2"));
        assert!(
            h.procs.try_wait("w2").is_none(),
            "w2 ended early\n{}",
            h.output("w2")
        );
        if xlen(&mut con, results) >= JOBS / 4
            && !pending_of(&mut con, stream, group, "w2").is_empty()
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(h.procs.kill("w2"), "w2 had exited before it was killed");
    let held: HashSet<String> = pending_of(&mut con, stream, group, "w2")
        .into_iter()
        .collect();
    let results_at_kill = xlen(&mut con, results);
    assert!(!held.is_empty(), "the killed worker held no entries");

    // A replacement under a new name: it, or a survivor, claims w2's entries once they have
    // been idle for --min-idle-ms.
    h.spawn("w4", &[&common[..], &["--consumer", "w4"]].concat());
    for w in ["w1", "w3", "w4"] {
        h.expect_success(w, Duration::from_secs(90));
    }
    let elapsed = started.elapsed();

    // Every job has a correct result; duplicates only of entries the killed worker held.
    let mut per_job: BTreeMap<u64, Vec<Fields>> = BTreeMap::new();
    for (_, fields) in xrange(&mut con, results) {
        let job: u64 = fields["job"].parse().unwrap();
        let n: u64 = fields["n"].parse().unwrap();
        assert_eq!(n, mix(job), "job {job}: wrong payload in {fields:?}");
        assert_eq!(fields["rounds"], ROUNDS.to_string());
        let sum: u64 = fields["checksum"].parse().unwrap();
        assert_eq!(
            sum,
            checksum(n, ROUNDS),
            "job {job}: wrong checksum in {fields:?}"
        );
        per_job.entry(job).or_default().push(fields);
    }
    let missing: Vec<u64> = (0..JOBS).filter(|j| !per_job.contains_key(j)).collect();
    assert!(
        missing.is_empty(),
        "{} jobs lost, first {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    assert_eq!(
        per_job.len() as u64,
        JOBS,
        "results for jobs that were never enqueued"
    );
    let mut duplicates = 0;
    for (job, copies) in &per_job {
        if copies.len() > 1 {
            duplicates += copies.len() - 1;
            let entry = &copies[0]["entry"];
            assert!(
                held.contains(entry),
                "job {job} (entry {entry}) has {} results but the killed worker did not hold it",
                copies.len()
            );
        }
    }
    let mut finished_by: BTreeMap<String, usize> = BTreeMap::new();
    for copies in per_job.values() {
        for fields in copies.iter().filter(|f| held.contains(&f["entry"])) {
            *finished_by.entry(fields["consumer"].clone()).or_default() += 1;
        }
    }
    assert!(
        !finished_by.contains_key("w2"),
        "the killed worker's held entries have results from it: {finished_by:?}"
    );
    assert_eq!(finished_by.values().sum::<usize>(), held.len() + duplicates);

    // The undecodable entries are in the dead-letter stream, with their error; nothing is
    // left pending.
    let dead = xrange(&mut con, "jobs:dead");
    assert_eq!(dead.len() as u64, BAD, "dead letters: {dead:?}");
    for (_, fields) in &dead {
        assert_eq!(fields["stage"], "decode");
        assert!(fields["field.job"].starts_with("bad-"), "{fields:?}");
        assert!(fields["error"].contains("invalid digit"), "{fields:?}");
    }
    assert_eq!(pending_total(&mut con, stream, group), 0);

    println!(
        "{JOBS} jobs + {BAD} undecodable entries in {:.2} s; w2 killed after {results_at_kill} \
         results, holding {} entries; those finished by {finished_by:?}; duplicate results: \
         {duplicates}",
        elapsed.as_secs_f64(),
        held.len()
    );
    for w in ["w1", "w3", "w4"] {
        print!(
            "{}",
            std::fs::read_to_string(h.dir.join(format!("{w}.out"))).unwrap()
        );
    }
}

#[test]
fn a_restarted_worker_resumes_its_entries_and_claims_a_dead_consumers() {
    let h = Harness::new("resume");
    let mut con = h.connect();
    let (stream, group) = ("jobs", "batch");
    h.spawn(
        "producer",
        &["--stream", stream, "--group", group, "--produce", "100"],
    );
    h.expect_success("producer", Duration::from_secs(60));
    // w1 took 10 entries and died; so did `ghost`, with 10 others.
    take_without_ack(&mut con, stream, group, "w1", 10);
    take_without_ack(&mut con, stream, group, "ghost", 10);
    assert_eq!(pending_total(&mut con, stream, group), 20);

    // w1 restarts under its name: it re-reads its own 10 first, claims the ghost's 10 once
    // they have been idle 500 ms, and reads the 80 others.
    h.spawn(
        "w1",
        &[
            "--stream",
            stream,
            "--group",
            group,
            "--consumer",
            "w1",
            "--min-idle-ms",
            "500",
            "--idle-exit-ms",
            "500",
            "--quiet",
        ],
    );
    h.expect_success("w1", Duration::from_secs(60));
    let stdout = std::fs::read_to_string(h.dir.join("w1.out")).unwrap();
    assert_eq!(entry_counts(&stdout), (80, 10, 10), "{stdout}");
    let results = xrange(&mut con, "jobs:results");
    let jobs: HashSet<u64> = results
        .iter()
        .map(|(_, f)| f["job"].parse().unwrap())
        .collect();
    assert_eq!(results.len(), 100);
    assert_eq!(jobs, (0..100).collect());
    assert_eq!(pending_total(&mut con, stream, group), 0);
}

#[test]
fn a_lost_connection_fails_the_worker_with_a_clear_error() {
    let h = Harness::new("lost");
    let mut con = h.connect();
    h.spawn(
        "w1",
        &[
            "--stream",
            "jobs",
            "--group",
            "batch",
            "--consumer",
            "w1",
            "--block-ms",
            "100",
        ],
    );
    // Wait until the worker reads (it creates the group, then appears as a consumer).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let consumers: redis::RedisResult<Vec<HashMap<String, redis::Value>>> = redis::cmd("XINFO")
            .arg("CONSUMERS")
            .arg("jobs")
            .arg("batch")
            .query(&mut con);
        if consumers.is_ok_and(|c| !c.is_empty()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the worker never read\n{}",
            h.output("w1")
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    h.procs.kill(&h.server);
    let status = h.wait("w1", Duration::from_secs(30));
    let output = h.output("w1");
    assert_eq!(status.code(), Some(1), "{output}");
    // The source notices first, in whichever read it was (XREADGROUP, or the periodic
    // XAUTOCLAIM of dead consumers' entries).
    assert!(
        output.contains("error: source failed: redis XREADGROUP on `jobs` as `w1`")
            || output.contains("error: source failed: redis XAUTOCLAIM on `jobs` as `w1`"),
        "{output}"
    );
}
