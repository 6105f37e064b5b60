//! A Redis Streams consumer group as a pipework [`Source`] and [`Sink`], with at-least-once
//! delivery: the adapter of `examples/distributed.rs`, on pipework's public API only.
//!
//! - [`StreamSource`] reads the group's entries with `XREADGROUP` (blocking for a short
//!   while, so that it notices cancellation), creates the group when it is missing, first
//!   re-reads the entries still pending for its own consumer name (a restarted worker
//!   resumes), and takes over, with `XAUTOCLAIM`, the entries other consumers have left
//!   pending longer than [`Config::min_idle`] (a dead worker's).
//! - [`StreamSink`] writes each batch of [`Reply`]s to the results stream and acknowledges
//!   their entries in the same `MULTI`/`EXEC` transaction: an entry is acknowledged only
//!   together with the durable write of its result, never before.
//! - [`DeadLetters`] writes a failed entry, with its error, to the dead-letter stream and
//!   acknowledges it in the same transaction; it is meant for the run's failure handler.
//!
//! The source never has more than [`Config::max_in_flight`] entries delivered and not yet
//! acknowledged (a credit shared with the sink), so that an entry waits in the pipeline's
//! queues for milliseconds, not for the `min_idle` after which another consumer may claim it.
//!
//! Every entry the source yields must end in the sink or in the failure handler: a stage that
//! filters entries out would leave them pending (and reclaimed, again and again).

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, MutexGuard};
use pipework::{BoxError, CancelToken, Sink, Source};
use redis::{Connection, Value};

/// Where a worker reads and writes, and how it waits.
#[derive(Debug, Clone)]
pub struct Config {
    /// The server, as `redis://host:port/`.
    pub url: String,
    /// The stream of jobs.
    pub stream: String,
    /// The consumer group the workers share.
    pub group: String,
    /// This worker's name in the group; a worker restarted under the same name resumes the
    /// entries it had not acknowledged.
    pub consumer: String,
    /// Where results go.
    pub results: String,
    /// Where failed entries go, with their error.
    pub dead: String,
    /// How long one `XREADGROUP` blocks when there is nothing new: the longest the source
    /// takes to notice cancellation.
    pub block: Duration,
    /// The most entries fetched by one read.
    pub count: usize,
    /// The most entries delivered to this worker and not yet acknowledged.
    pub max_in_flight: usize,
    /// How long an entry must have been pending with another consumer before this one
    /// claims it (`XAUTOCLAIM`'s min-idle-time).
    pub min_idle: Duration,
    /// End the source once nothing new has come for this long and nothing is pending in the
    /// group any more (the batch is drained); `None`: read until cancelled.
    pub idle_exit: Option<Duration>,
    /// The limit on one reply from the server beyond `block`; past it the connection
    /// counts as lost.
    pub io_timeout: Duration,
}

impl Config {
    /// A configuration with the defaults: results in `STREAM:results`, dead letters in
    /// `STREAM:dead`, 150 ms blocking reads of up to 64 entries, 256 entries in flight,
    /// claims after 30 s, no idle exit, 5 s I/O timeout.
    pub fn new(url: &str, stream: &str, group: &str, consumer: &str) -> Self {
        Config {
            url: url.to_owned(),
            stream: stream.to_owned(),
            group: group.to_owned(),
            consumer: consumer.to_owned(),
            results: format!("{stream}:results"),
            dead: format!("{stream}:dead"),
            block: Duration::from_millis(150),
            count: 64,
            max_in_flight: 256,
            min_idle: Duration::from_secs(30),
            idle_exit: None,
            io_timeout: Duration::from_secs(5),
        }
    }
}

/// A failed Redis operation, with what it was doing.
#[derive(Debug)]
pub struct StreamError {
    /// The operation and its stream, e.g. "XREADGROUP on `jobs` as `w1`".
    op: String,
    /// What the client said.
    source: redis::RedisError,
}

impl StreamError {
    fn new(op: impl Into<String>, source: redis::RedisError) -> Self {
        StreamError {
            op: op.into(),
            source,
        }
    }
}

impl fmt::Display for StreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "redis {}: {}", self.op, self.source)
    }
}

impl std::error::Error for StreamError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// Opens a connection with read and write timeouts of `block + io_timeout`.
///
/// # Errors
///
/// When the URL is invalid or the server cannot be reached.
pub fn connect(config: &Config) -> Result<Connection, StreamError> {
    let op = || format!("connect to {}", config.url);
    let client = redis::Client::open(config.url.as_str()).map_err(|e| StreamError::new(op(), e))?;
    let con = client
        .get_connection_with_timeout(config.io_timeout)
        .map_err(|e| StreamError::new(op(), e))?;
    let limit = Some(config.block + config.io_timeout);
    con.set_read_timeout(limit)
        .and_then(|()| con.set_write_timeout(limit))
        .map_err(|e| StreamError::new(op(), e))?;
    Ok(con)
}

/// Creates the consumer group at the start of the stream (and the stream) unless it exists.
///
/// # Errors
///
/// Any error but `BUSYGROUP` (the group exists).
pub fn create_group(con: &mut Connection, stream: &str, group: &str) -> Result<(), StreamError> {
    let created: redis::RedisResult<()> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(stream)
        .arg(group)
        .arg("0")
        .arg("MKSTREAM")
        .query(con);
    match created {
        Err(e) if e.code() != Some("BUSYGROUP") => Err(StreamError::new(
            format!("XGROUP CREATE `{group}` on `{stream}`"),
            e,
        )),
        _ => Ok(()),
    }
}

/// One stream entry as read.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The entry's ID in the stream.
    pub id: String,
    /// Its fields; `None` when the entry was deleted from the stream while it was pending.
    pub fields: Option<Vec<(String, Vec<u8>)>>,
}

impl Entry {
    /// The value of field `name`, if the entry has it.
    pub fn field(&self, name: &str) -> Option<&[u8]> {
        self.fields
            .as_ref()?
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_slice())
    }
}

/// The result of one entry, for [`StreamSink`]: the fields to write to the results stream
/// (the sink adds the entry's ID as the field `entry`).
#[derive(Debug, Clone)]
pub struct Reply {
    /// The ID of the entry it answers, acknowledged when the reply is written.
    pub entry: String,
    /// The result's fields.
    pub fields: Vec<(&'static str, String)>,
}

/// The credit shared by a source and its sink: entries delivered and not yet acknowledged.
#[derive(Debug)]
pub struct InFlight {
    /// How many entries are out.
    count: Mutex<usize>,
    /// Signalled when entries are acknowledged.
    freed: Condvar,
    /// The most entries out at once.
    max: usize,
}

impl InFlight {
    /// A credit of `max` entries (at least one).
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(InFlight {
            count: Mutex::new(0),
            freed: Condvar::new(),
            max: max.max(1),
        })
    }

    /// Waits until at least one entry may be read, then takes up to `want`; `None` when
    /// `token` is cancelled first.
    fn acquire(&self, want: usize, token: &CancelToken) -> Option<usize> {
        let mut count = self.count.lock();
        while *count >= self.max {
            if token.is_cancelled() {
                return None;
            }
            // The token cannot be waited on together with a condition variable: wake up
            // now and then to look at it.
            self.freed.wait_for(&mut count, Duration::from_millis(20));
        }
        let n = want.min(self.max - *count);
        *count += n;
        Some(n)
    }

    /// Gives back `n` entries' credit.
    fn release(&self, n: usize) {
        if n > 0 {
            *self.count.lock() -= n;
            self.freed.notify_one();
        }
    }

    /// How many entries are out now.
    fn current(&self) -> usize {
        *self.count.lock()
    }
}

/// What a worker did, counted as it goes.
#[derive(Debug, Default)]
pub struct Stats {
    /// Own pending entries re-read at start (ID `0`).
    pub resumed: AtomicU64,
    /// Entries claimed from other consumers (`XAUTOCLAIM`).
    pub claimed: AtomicU64,
    /// New entries read (ID `>`).
    pub new: AtomicU64,
    /// Results written and acknowledged.
    pub results: AtomicU64,
    /// Results whose entry another consumer had acknowledged already (a duplicate result).
    pub late: AtomicU64,
    /// Entries written to the dead-letter stream and acknowledged.
    pub dead: AtomicU64,
}

impl Stats {
    fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Reads one counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// Reads a consumer group's entries: its own pending ones first, then claimed and new ones.
pub struct StreamSource {
    con: Connection,
    config: Config,
    in_flight: Arc<InFlight>,
    stats: Arc<Stats>,
    /// Read, not yet handed to the run.
    buffer: VecDeque<Entry>,
    /// While re-reading this consumer's own pending entries: the ID to read after.
    own: Option<String>,
    /// Where the current `XAUTOCLAIM` scan of the pending list goes on.
    claim_cursor: String,
    /// When the next claim scan is due.
    next_claim: Instant,
    /// When entries last came in.
    last_entry: Instant,
}

impl fmt::Debug for StreamSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamSource")
            .field("config", &self.config)
            .field("buffered", &self.buffer.len())
            .finish_non_exhaustive()
    }
}

impl StreamSource {
    /// Connects and creates the group if it is missing.
    ///
    /// # Errors
    ///
    /// When the server cannot be reached or the group cannot be created.
    pub fn open(
        config: Config,
        in_flight: Arc<InFlight>,
        stats: Arc<Stats>,
    ) -> Result<Self, StreamError> {
        let mut con = connect(&config)?;
        create_group(&mut con, &config.stream, &config.group)?;
        let now = Instant::now();
        Ok(StreamSource {
            con,
            config,
            in_flight,
            stats,
            buffer: VecDeque::new(),
            own: Some("0".to_owned()),
            claim_cursor: "0-0".to_owned(),
            next_claim: now,
            last_entry: now,
        })
    }

    /// Reads the next entries into the buffer; whether any came.
    fn fill(&mut self, token: &CancelToken) -> Result<bool, StreamError> {
        let Some(credit) = self.in_flight.acquire(self.config.count, token) else {
            return Ok(false);
        };
        let read = self.read(credit);
        let got = read.as_ref().map_or(0, Vec::len);
        self.in_flight.release(credit - got);
        let entries = read?;
        if entries.is_empty() {
            return Ok(false);
        }
        self.last_entry = Instant::now();
        self.buffer.extend(entries);
        Ok(true)
    }

    /// Up to `count` entries: own pending ones, claimed ones, or new ones.
    fn read(&mut self, count: usize) -> Result<Vec<Entry>, StreamError> {
        let c = &self.config;
        if let Some(after) = &self.own {
            let op = || {
                format!(
                    "XREADGROUP (own pending) on `{}` as `{}`",
                    c.stream, c.consumer
                )
            };
            let reply: Value = redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg(&c.group)
                .arg(&c.consumer)
                .arg("COUNT")
                .arg(count)
                .arg("STREAMS")
                .arg(&c.stream)
                .arg(after)
                .query(&mut self.con)
                .map_err(|e| StreamError::new(op(), e))?;
            let entries = read_reply(reply).map_err(|e| StreamError::new(op(), e))?;
            match entries.last() {
                Some(last) => self.own = Some(last.id.clone()),
                None => self.own = None,
            }
            Stats::add(&self.stats.resumed, entries.len());
            if !entries.is_empty() {
                return Ok(entries);
            }
        }
        if Instant::now() >= self.next_claim {
            let op = || format!("XAUTOCLAIM on `{}` as `{}`", c.stream, c.consumer);
            let reply: Value = redis::cmd("XAUTOCLAIM")
                .arg(&c.stream)
                .arg(&c.group)
                .arg(&c.consumer)
                .arg(c.min_idle.as_millis() as u64)
                .arg(&self.claim_cursor)
                .arg("COUNT")
                .arg(count)
                .query(&mut self.con)
                .map_err(|e| StreamError::new(op(), e))?;
            let (cursor, entries) = claim_reply(reply).map_err(|e| StreamError::new(op(), e))?;
            if cursor == "0-0" {
                // A whole scan of the pending list is done: the next one in a while.
                self.next_claim = Instant::now() + (c.min_idle / 2).max(Duration::from_millis(50));
            }
            self.claim_cursor = cursor;
            Stats::add(&self.stats.claimed, entries.len());
            if !entries.is_empty() {
                return Ok(entries);
            }
        }
        let op = || format!("XREADGROUP on `{}` as `{}`", c.stream, c.consumer);
        let reply: Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(&c.group)
            .arg(&c.consumer)
            .arg("COUNT")
            .arg(count)
            .arg("BLOCK")
            .arg(c.block.as_millis().max(1) as u64)
            .arg("STREAMS")
            .arg(&c.stream)
            .arg(">")
            .query(&mut self.con)
            .map_err(|e| StreamError::new(op(), e))?;
        let entries = read_reply(reply).map_err(|e| StreamError::new(op(), e))?;
        Stats::add(&self.stats.new, entries.len());
        Ok(entries)
    }

    /// Whether the source should end: idle long enough, nothing of its own out, and nothing
    /// pending in the group.
    fn drained(&mut self) -> Result<bool, StreamError> {
        let Some(idle) = self.config.idle_exit else {
            return Ok(false);
        };
        if self.last_entry.elapsed() < idle || self.in_flight.current() > 0 {
            return Ok(false);
        }
        let c = &self.config;
        let summary: Value = redis::cmd("XPENDING")
            .arg(&c.stream)
            .arg(&c.group)
            .query(&mut self.con)
            .map_err(|e| StreamError::new(format!("XPENDING on `{}`", c.stream), e))?;
        let pending = match summary {
            Value::Array(items) => items.first().map_or(0, |v| match v {
                Value::Int(n) => *n,
                _ => 0,
            }),
            _ => 0,
        };
        Ok(pending == 0)
    }
}

impl Source<Entry> for StreamSource {
    fn next(&mut self, token: &CancelToken) -> Option<Result<Entry, BoxError>> {
        loop {
            if let Some(entry) = self.buffer.pop_front() {
                return Some(Ok(entry));
            }
            if token.is_cancelled() {
                return None;
            }
            let more = match self.fill(token) {
                Ok(true) => Ok(true),
                Ok(false) if token.is_cancelled() => return None,
                Ok(false) => self.drained().map(|drained| !drained),
                Err(e) => Err(e),
            };
            match more {
                Ok(true) => {}
                Ok(false) => return None,
                Err(e) => return Some(Err(e.into())),
            }
        }
    }

    fn is_ready(&self) -> bool {
        !self.buffer.is_empty()
    }
}

/// The writing side of a worker: results, dead letters, and their acknowledgements. Shared
/// by the sink and the failure handler, which both run on the thread that called `run`.
pub struct Writer {
    con: Connection,
    config: Config,
    in_flight: Arc<InFlight>,
    stats: Arc<Stats>,
    /// The first error of the failure handler, which has no other way to report one.
    failed: Option<StreamError>,
    /// Cancelled with that error, so that the run stops.
    token: CancelToken,
}

impl fmt::Debug for Writer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Writer")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Writer {
    /// Connects; `token` is the run's cancel token (see [`pipework::Job::cancel_token`]),
    /// cancelled when a dead-letter write fails.
    ///
    /// # Errors
    ///
    /// When the server cannot be reached.
    pub fn open(
        config: Config,
        in_flight: Arc<InFlight>,
        stats: Arc<Stats>,
        token: CancelToken,
    ) -> Result<Arc<Mutex<Self>>, StreamError> {
        let con = connect(&config)?;
        Ok(Arc::new(Mutex::new(Writer {
            con,
            config,
            in_flight,
            stats,
            failed: None,
            token,
        })))
    }

    /// The error that stopped the failure handler, if any.
    pub fn take_error(&mut self) -> Option<StreamError> {
        self.failed.take()
    }

    /// Writes `replies` to the results stream and acknowledges their entries, in one
    /// transaction.
    fn commit(&mut self, replies: &[Reply]) -> Result<(), StreamError> {
        if replies.is_empty() {
            return Ok(());
        }
        let c = &self.config;
        let mut pipe = redis::pipe();
        pipe.atomic();
        for reply in replies {
            let xadd = pipe.cmd("XADD").arg(&c.results).arg("*");
            xadd.arg("entry").arg(&reply.entry);
            for (name, value) in &reply.fields {
                xadd.arg(*name).arg(value);
            }
            xadd.ignore();
        }
        let xack = pipe.cmd("XACK").arg(&c.stream).arg(&c.group);
        for reply in replies {
            xack.arg(&reply.entry);
        }
        let (acked,): (usize,) = pipe.query(&mut self.con).map_err(|e| {
            StreamError::new(
                format!("XADD to `{}` + XACK on `{}`", c.results, c.stream),
                e,
            )
        })?;
        self.in_flight.release(replies.len());
        Stats::add(&self.stats.results, replies.len());
        Stats::add(&self.stats.late, replies.len() - acked.min(replies.len()));
        Ok(())
    }

    /// Writes `entry` to the dead-letter stream with `stage` and `error`, and acknowledges
    /// it, in one transaction.
    ///
    /// # Errors
    ///
    /// When the transaction fails; the entry then stays pending.
    pub fn dead_letter(
        &mut self,
        entry: &Entry,
        stage: &str,
        error: &str,
    ) -> Result<(), StreamError> {
        let c = &self.config;
        let mut pipe = redis::pipe();
        pipe.atomic();
        let xadd = pipe.cmd("XADD").arg(&c.dead).arg("*");
        xadd.arg("entry")
            .arg(&entry.id)
            .arg("stage")
            .arg(stage)
            .arg("error")
            .arg(error)
            .arg("consumer")
            .arg(&c.consumer);
        for (name, value) in entry.fields.iter().flatten() {
            xadd.arg(format!("field.{name}")).arg(value.as_slice());
        }
        xadd.ignore();
        pipe.cmd("XACK")
            .arg(&c.stream)
            .arg(&c.group)
            .arg(&entry.id)
            .ignore();
        pipe.query::<()>(&mut self.con).map_err(|e| {
            StreamError::new(format!("XADD to `{}` + XACK on `{}`", c.dead, c.stream), e)
        })?;
        self.in_flight.release(1);
        Stats::add(&self.stats.dead, 1);
        Ok(())
    }

    /// [`dead_letter`](Self::dead_letter) for a failure handler, which cannot return an
    /// error: the first error is kept for [`take_error`](Self::take_error) and cancels the
    /// run; later failures are not written.
    pub fn dead_letter_or_stop(&mut self, entry: &Entry, stage: &str, error: &str) {
        if self.failed.is_some() {
            return;
        }
        if let Err(e) = self.dead_letter(entry, stage, error) {
            self.failed = Some(e);
            self.token.cancel();
        }
    }
}

/// The writer behind its lock (shared by the sink and the failure handler, which run on
/// the same thread, one at a time: the lock is never contended).
pub fn lock(writer: &Mutex<Writer>) -> MutexGuard<'_, Writer> {
    writer.lock()
}

/// The sink: each batch of replies written and acknowledged in one transaction.
#[derive(Debug)]
pub struct StreamSink(pub Arc<Mutex<Writer>>);

impl Sink<Vec<Reply>> for StreamSink {
    fn consume(&mut self, replies: Vec<Reply>) -> Result<(), BoxError> {
        let mut writer = lock(&self.0);
        if let Some(e) = writer.take_error() {
            return Err(e.into());
        }
        Ok(writer.commit(&replies)?)
    }
}

/// The entries of an `XREADGROUP` reply (nil when it timed out).
fn read_reply(reply: Value) -> redis::RedisResult<Vec<Entry>> {
    match reply {
        Value::Nil => Ok(Vec::new()),
        Value::Array(streams) => {
            let mut entries = Vec::new();
            for stream in streams {
                // [key, [entry, …]]
                let Value::Array(mut pair) = stream else {
                    return Err(invalid("a stream of an XREADGROUP reply"));
                };
                if pair.len() != 2 {
                    return Err(invalid("a stream of an XREADGROUP reply"));
                }
                entries.extend(parse_entries(pair.pop().unwrap_or_default())?);
            }
            Ok(entries)
        }
        Value::Map(streams) => {
            let mut entries = Vec::new();
            for (_, list) in streams {
                entries.extend(parse_entries(list)?);
            }
            Ok(entries)
        }
        _ => Err(invalid("an XREADGROUP reply")),
    }
}

/// The next cursor and the entries of an `XAUTOCLAIM` reply.
fn claim_reply(reply: Value) -> redis::RedisResult<(String, Vec<Entry>)> {
    // [next cursor, [entry, …], [deleted ID, …]] (the last one since Redis 7)
    let Value::Array(items) = reply else {
        return Err(invalid("an XAUTOCLAIM reply"));
    };
    let mut items = items.into_iter();
    let cursor = text(items.next().unwrap_or_default())?;
    let entries = parse_entries(items.next().unwrap_or_default())?;
    Ok((cursor, entries))
}

/// `[[id, [field, value, …] or nil], …]`.
fn parse_entries(list: Value) -> redis::RedisResult<Vec<Entry>> {
    let Value::Array(list) = list else {
        return Err(invalid("a list of stream entries"));
    };
    list.into_iter()
        .map(|item| {
            let Value::Array(pair) = item else {
                return Err(invalid("a stream entry"));
            };
            let mut pair = pair.into_iter();
            let id = text(pair.next().unwrap_or_default())?;
            let fields = match pair.next().unwrap_or_default() {
                Value::Nil => None,
                Value::Array(flat) => {
                    let mut fields = Vec::with_capacity(flat.len() / 2);
                    let mut flat = flat.into_iter();
                    while let (Some(name), Some(value)) = (flat.next(), flat.next()) {
                        fields.push((text(name)?, bytes(value)?));
                    }
                    Some(fields)
                }
                Value::Map(map) => Some(
                    map.into_iter()
                        .map(|(name, value)| Ok((text(name)?, bytes(value)?)))
                        .collect::<redis::RedisResult<_>>()?,
                ),
                _ => return Err(invalid("the fields of a stream entry")),
            };
            Ok(Entry { id, fields })
        })
        .collect()
}

/// The bytes of a string reply.
fn bytes(value: Value) -> redis::RedisResult<Vec<u8>> {
    match value {
        Value::BulkString(b) => Ok(b),
        Value::SimpleString(s) => Ok(s.into_bytes()),
        Value::Int(n) => Ok(n.to_string().into_bytes()),
        _ => Err(invalid("a string")),
    }
}

/// A string reply as UTF-8 text.
fn text(value: Value) -> redis::RedisResult<String> {
    String::from_utf8(bytes(value)?).map_err(|_| invalid("UTF-8 text"))
}

/// The error for a reply that is not `what`.
fn invalid(what: &'static str) -> redis::RedisError {
    redis::RedisError::from((
        redis::ErrorKind::UnexpectedReturnType,
        "unexpected reply",
        format!("expected {what}"),
    ))
}
