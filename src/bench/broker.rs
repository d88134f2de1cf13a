//! `weir bench broker`: records produced to and consumed from a broker, on
//! weir's own broker (`weir dev-broker`) and on librdkafka's in-memory mock
//! cluster (the broker weir used before its own), with weir's client
//! settings.
//!
//! Per broker and partition count the bench starts the broker as a separate
//! process (this same executable: `weir dev-broker`, or the hidden
//! `weir bench broker --serve-mock P`), creates the topic, then produces N
//! unkeyed records of B bytes round-robin over the partitions with weir's
//! producer (idempotent, 5 ms linger, uncompressed) and waits for every
//! delivery (timed: produce), then reads them all back with a consumer
//! assigned to every partition (timed: consume; one consumer per round, see
//! below). The clients' start (the
//! producer's id, connections, metadata) is not timed: a warm-up record to
//! another topic is delivered first, and the consumer has fetched metadata
//! before it is assigned. Every record is checked:
//! its partition and offset say which record it must be (record `i` goes to
//! partition `i % P`, in order), and its value must be that record's index
//! followed by the filler, B bytes in all; exactly N must arrive. Last, the
//! broker's peak RSS and CPU time are read from `/proc` and it is stopped
//! with SIGTERM (it must exit cleanly).
//!
//! The mock keeps at most 5 MiB per partition and silently drops older
//! data, so it cannot hold the default 1,000,000 records of 100 bytes. It is
//! therefore run in *rounds*: each round produces a slice of the records
//! (at most [`MOCK_ROUND_BYTES`] per partition), then consumes it. weir's
//! broker runs the same rounds (the comparison), and once in a single round
//! (the workload as it is meant). Each round's records are read by a fresh
//! consumer assigned where the previous one stopped, so no consumer fetches
//! while the producer is timed. (Pausing and resuming one consumer instead
//! costs a second per round: librdkafka's broker thread notices a resumed
//! partition only at its next 1 s wake-up.)

use std::io::{BufRead, BufReader, Read, Seek, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use signal_hook::consts::{SIGINT, SIGTERM};
use weir_connectors::kafka::rdkafka::consumer::{BaseConsumer, Consumer};
use weir_connectors::kafka::rdkafka::message::Message;
use weir_connectors::kafka::rdkafka::mocking::MockCluster;
use weir_connectors::kafka::rdkafka::producer::{BaseRecord, Producer as _};
use weir_connectors::kafka::rdkafka::{Offset, TopicPartitionList};
use weir_connectors::kafka::{Admin, ClientSettings, TopicSpec};

use super::e2e::{deliver, producer, send, standalone_consumer, watermarks, REQUEST_TIMEOUT};

/// The topic the bench writes and reads.
const TOPIC: &str = "bench";
/// Where the producer's warm-up record goes (one partition).
const WARMUP_TOPIC: &str = "bench-warmup";
/// The first stdout line of `weir dev-broker`, before its address.
const WEIR_BANNER: &str = "embedded Kafka broker at ";
/// The first stdout line of `weir bench broker --serve-mock`, before its address.
const MOCK_BANNER: &str = "mock Kafka broker at ";
/// What one round may put on one partition: the mock keeps 5 MiB per
/// partition (librdkafka's `rd_kafka_mock_partition` limit, not
/// configurable) and drops the oldest batches past it; 1 MiB (one batch of
/// weir's producer at most) to spare.
pub const MOCK_ROUND_BYTES: u64 = 4 * 1024 * 1024;
/// Bytes a record takes in a batch besides its value: length, attributes,
/// timestamp and offset deltas, a null key, value length and header count,
/// plus a share of the batch header.
const RECORD_OVERHEAD: u64 = 16;
/// A consume that receives nothing this long fails.
const STALL: Duration = Duration::from_secs(30);
/// How long a broker may take to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Options of `weir bench broker`.
pub struct BrokerOptions {
    /// Records produced and consumed per run.
    pub records: u64,
    /// Bytes of each record's value (at least 8: the record's index).
    pub record_bytes: usize,
    /// Partition counts of the topic, one run (per broker) each.
    pub partitions: Vec<i32>,
    /// Progress lines on stderr (off with `--json`).
    pub verbose: bool,
}

/// Which broker a run is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BrokerKind {
    /// weir's own broker, `weir dev-broker`.
    Weir,
    /// librdkafka's mock cluster, one broker, in `weir bench broker --serve-mock`.
    Mock,
}

impl BrokerKind {
    pub fn name(self) -> &'static str {
        match self {
            BrokerKind::Weir => "weir",
            BrokerKind::Mock => "mock",
        }
    }
}

/// One line of results: one run on one broker.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BrokerResult {
    pub workload: &'static str,
    /// `weir` or `mock`.
    pub broker: &'static str,
    pub partitions: i32,
    /// Produce-then-consume rounds the records were split into.
    pub rounds: u64,
    pub records: u64,
    pub record_bytes: usize,
    /// Sending every record and waiting for its delivery, all rounds.
    pub produce_seconds: f64,
    /// Of `produce_seconds`, the wait for the last deliveries of each round
    /// after the last record was handed to the producer.
    pub produce_flush_seconds: f64,
    /// Reading every record back, all rounds.
    pub consume_seconds: f64,
    /// `produce_seconds + consume_seconds`.
    pub total_seconds: f64,
    pub produce_records_per_s: f64,
    pub consume_records_per_s: f64,
    /// The broker process's peak resident set size (VmHWM) at the end.
    pub broker_peak_rss_bytes: u64,
    /// CPU time (user + system) the broker process used in all, its start
    /// and the topic's creation included.
    pub broker_cpu_seconds: f64,
}

/// How many rounds the mock needs for `records` records of `record_bytes`
/// bytes over `partitions` partitions (see [`MOCK_ROUND_BYTES`]).
pub fn mock_rounds(records: u64, record_bytes: usize, partitions: i32) -> u64 {
    let per_partition = records.div_ceil(partitions.max(1) as u64);
    (per_partition.saturating_mul(record_bytes as u64 + RECORD_OVERHEAD))
        .div_ceil(MOCK_ROUND_BYTES)
        .clamp(1, records.max(1))
}

/// Runs, per partition count: weir's broker in one round, weir's broker in
/// the mock's rounds (if it needs more than one), the mock; each on a fresh
/// broker process.
pub fn run_broker(opts: &BrokerOptions) -> Result<Vec<BrokerResult>> {
    if opts.record_bytes < 8 {
        bail!("--record-bytes must be at least 8 (each value starts with its record's index)");
    }
    if opts.partitions.is_empty() {
        bail!("no partition counts given (--partitions)");
    }
    let mut results = Vec::new();
    for &partitions in &opts.partitions {
        let rounds = mock_rounds(opts.records, opts.record_bytes, partitions);
        let mut runs = vec![(BrokerKind::Weir, 1)];
        if rounds > 1 {
            runs.push((BrokerKind::Weir, rounds));
        }
        runs.push((BrokerKind::Mock, rounds));
        for (kind, rounds) in runs {
            let r = run_one(kind, partitions, rounds, opts).with_context(|| {
                format!(
                    "broker benchmark on the {} broker, {partitions} partition(s), {rounds} round(s)",
                    kind.name()
                )
            })?;
            results.push(r);
        }
    }
    Ok(results)
}

fn run_one(kind: BrokerKind, partitions: i32, rounds: u64, opts: &BrokerOptions) -> Result<BrokerResult> {
    let label = format!("{} broker, {partitions} partition(s), {rounds} round(s)", kind.name());
    let log = |msg: &str| {
        if opts.verbose {
            eprintln!("{label}: {msg}");
        }
    };
    let broker = BrokerChild::start(kind, partitions)?;
    log(&format!("pid {} at {}", broker.child.id(), broker.addr));
    let settings = ClientSettings::new(&broker.addr);
    {
        // The mock has the topics already (it does not implement
        // CreateTopics); weir's broker gets them through the admin API.
        let admin = Admin::new(&settings).context("admin client")?;
        admin
            .ensure_topics(&[TopicSpec::new(TOPIC, partitions), TopicSpec::new(WARMUP_TOPIC, 1)])
            .with_context(|| format!("creating topics {TOPIC} and {WARMUP_TOPIC}"))?;
        match admin.partition_count(TOPIC)? {
            Some(n) if n == partitions => {}
            other => bail!("topic {TOPIC} has {other:?} partitions, not {partitions}"),
        }
    }
    let t = exchange(&settings, partitions, rounds, opts)?;
    log(&format!(
        "produce {:.3} s ({:.3} s of it waiting for the last deliveries of each round), consume {:.3} s",
        t.produce.as_secs_f64(),
        t.flush.as_secs_f64(),
        t.consume.as_secs_f64()
    ));
    let (peak, cpu) = broker.stop()?;

    let (produce, consume) = (t.produce.as_secs_f64(), t.consume.as_secs_f64());
    let n = opts.records as f64;
    Ok(BrokerResult {
        workload: "broker",
        broker: kind.name(),
        partitions,
        rounds,
        records: opts.records,
        record_bytes: opts.record_bytes,
        produce_seconds: produce,
        produce_flush_seconds: t.flush.as_secs_f64(),
        consume_seconds: consume,
        total_seconds: produce + consume,
        produce_records_per_s: n / produce,
        consume_records_per_s: n / consume,
        broker_peak_rss_bytes: peak,
        broker_cpu_seconds: cpu,
    })
}

/// The timed phases of one run, summed over its rounds.
struct Timing {
    produce: Duration,
    flush: Duration,
    consume: Duration,
}

/// Records of `0..end` that round-robin puts on `partition`: its end offset.
fn partition_end(end: u64, partition: i32, partitions: i32) -> i64 {
    let (p, n) = (partition as u64, partitions as u64);
    if end <= p {
        0
    } else {
        ((end - p).div_ceil(n)) as i64
    }
}

/// Produces the records in `rounds` slices, each delivered and then read
/// back in full and checked.
fn exchange(settings: &ClientSettings, partitions: i32, rounds: u64, opts: &BrokerOptions) -> Result<Timing> {
    let n = opts.records;
    let producer = producer(settings)?;
    // The producer connected, with its producer id (an idempotent
    // producer's first step), before the clock starts.
    send(
        &producer,
        BaseRecord::<[u8], [u8]>::to(WARMUP_TOPIC).payload(&b"warm-up"[..]),
    )?;
    deliver(&producer, WARMUP_TOPIC)?;
    producer
        .client()
        .fetch_metadata(Some(TOPIC), REQUEST_TIMEOUT)
        .context("the producer fetching metadata")?;

    let filler: Vec<u8> = (0..opts.record_bytes - 8).map(|j| b'a' + (j % 26) as u8).collect();
    let mut value = vec![0u8; opts.record_bytes];
    value[8..].copy_from_slice(&filler);
    let mut next = vec![0i64; partitions as usize];
    let mut timing = Timing {
        produce: Duration::ZERO,
        flush: Duration::ZERO,
        consume: Duration::ZERO,
    };
    let mut consumed = 0u64;
    for round in 0..rounds {
        let from = (u128::from(n) * u128::from(round) / u128::from(rounds)) as u64;
        let to = (u128::from(n) * u128::from(round + 1) / u128::from(rounds)) as u64;

        let started = Instant::now();
        for i in from..to {
            value[..8].copy_from_slice(&i.to_be_bytes());
            send(
                &producer,
                BaseRecord::<[u8], [u8]>::to(TOPIC)
                    .partition((i % partitions as u64) as i32)
                    .payload(&value[..]),
            )?;
            if i & 1023 == 0 {
                producer.poll(Duration::ZERO);
            }
        }
        let sent = Instant::now();
        deliver(&producer, TOPIC)?;
        let delivered = Instant::now();
        timing.produce += delivered - started;
        timing.flush += delivered - sent;
        // The warm-up record is the first delivery.
        let acked = producer.context().delivered();
        if acked != to + 1 {
            bail!(
                "{} deliveries reported after sending {to} records",
                acked.saturating_sub(1)
            );
        }

        // Not timed: a consumer connected, and the broker holds this
        // round's records (each partition ends where round-robin puts the
        // last record, and starts no later than where this round begins).
        let consumer = standalone_consumer(settings)?;
        let ends: Vec<i64> = (0..partitions).map(|p| partition_end(to, p, partitions)).collect();
        let marks = watermarks(&consumer, TOPIC)?;
        let mut tpl = TopicPartitionList::new();
        for (p, ((low, high), end)) in marks.iter().zip(&ends).enumerate() {
            if high != end || *low > next[p] {
                bail!(
                    "after round {round} partition {p} holds offsets {low}..{high}, expected {}..{end} at least \
                     (watermarks: {marks:?})",
                    next[p]
                );
            }
            if next[p] < *end {
                tpl.add_partition_offset(TOPIC, p as i32, Offset::Offset(next[p]))
                    .context("positioning the consumer")?;
            }
        }

        let started = Instant::now();
        consumer.assign(&tpl).context("assigning the consumer")?;
        consumed += read_round(&consumer, &mut next, &ends, partitions, &filler)?;
        timing.consume += started.elapsed();
    }
    if consumed != n {
        bail!("consumed {consumed} records, produced {n}");
    }
    Ok(timing)
}

/// Reads until every partition's next offset reaches `ends`, checking each
/// record: the next offset of its partition, and the value of the record
/// round-robin put there (index big-endian, then `filler`).
fn read_round(consumer: &BaseConsumer, next: &mut [i64], ends: &[i64], partitions: i32, filler: &[u8]) -> Result<u64> {
    let mut n = 0u64;
    let mut idle_since: Option<Instant> = None;
    while next.iter().zip(ends).any(|(next, end)| next < end) {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                idle_since = None;
                let (p, offset) = (m.partition(), m.offset());
                let slot = next
                    .get_mut(p as usize)
                    .ok_or_else(|| anyhow!("a record of partition {p}, which the topic does not have"))?;
                if offset != *slot {
                    bail!("partition {p}: offset {offset} arrived where {} was next", *slot);
                }
                let want = (offset as u64) * partitions as u64 + p as u64;
                let v = m.payload().unwrap_or_default();
                if v.len() != 8 + filler.len() || v[..8] != want.to_be_bytes() || v[8..] != *filler {
                    bail!(
                        "partition {p} offset {offset}: a value of {} bytes that is not record {want}'s",
                        v.len()
                    );
                }
                *slot += 1;
                n += 1;
            }
            Some(Err(e)) => return Err(anyhow!(e).context(format!("consuming {TOPIC}"))),
            None => {
                let since = *idle_since.get_or_insert_with(Instant::now);
                if since.elapsed() > STALL {
                    bail!("nothing consumed for {STALL:?} at offsets {next:?} of {ends:?}");
                }
            }
        }
    }
    Ok(n)
}

/// A broker in a child process (this same executable), on a free port.
/// [`stop`](Self::stop) ends it with SIGTERM and checks it exits cleanly;
/// dropping it otherwise kills and reaps it, then deletes its data, so no
/// path of the bench (errors included) leaves a broker running.
pub(super) struct BrokerChild {
    pub(super) child: Child,
    pub(super) addr: String,
    /// Its stderr, for the error message if it fails.
    log: std::fs::File,
    /// weir's broker's data; dropped after `Drop::drop` has reaped it.
    _dir: Option<tempfile::TempDir>,
}

impl BrokerChild {
    /// `weir dev-broker --partitions N` (the other benches' broker).
    pub(super) fn dev_broker(partitions: i32) -> Result<BrokerChild> {
        Self::start(BrokerKind::Weir, partitions)
    }

    /// The client settings `weir run` uses against this broker, so that
    /// weir and the ceilings run on the same ones, and an admin client.
    pub(super) fn client(&self) -> Result<(ClientSettings, Admin)> {
        let settings = ClientSettings::new(&self.addr);
        let admin = Admin::new(&settings).context("admin client")?;
        Ok((settings, admin))
    }

    fn start(kind: BrokerKind, partitions: i32) -> Result<BrokerChild> {
        let exe = std::env::current_exe().context("locating the weir executable")?;
        let mut cmd = Command::new(&exe);
        let dir = match kind {
            BrokerKind::Weir => {
                let dir = tempfile::Builder::new()
                    .prefix("weir-bench-broker-")
                    .tempdir()
                    .context("creating a directory for the broker's data")?;
                cmd.args([
                    "dev-broker",
                    "--listen",
                    "127.0.0.1:0",
                    "--partitions",
                    &partitions.to_string(),
                ])
                .arg("--broker-dir")
                .arg(dir.path());
                Some(dir)
            }
            BrokerKind::Mock => {
                cmd.args(["bench", "broker", "--serve-mock", &partitions.to_string()]);
                None
            }
        };
        // stderr goes to a file: a pipe nobody reads could fill and block
        // the broker, and the file says why the broker died if it does.
        let log = tempfile::tempfile().context("creating a file for the broker's stderr")?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log.try_clone().context("sharing the broker's stderr file")?)
            .spawn()
            .with_context(|| format!("starting {cmd:?}"))?;
        let mut broker = BrokerChild {
            child,
            addr: String::new(),
            log,
            _dir: dir,
        };
        let stdout = broker.child.stdout.take().context("the broker's stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let first = reader.read_line(&mut line).map(|_| line);
            let _ = tx.send(first);
            // Drain the rest so the broker never writes into a full or
            // closed pipe; ends when the broker exits.
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
        });
        let banner = match kind {
            BrokerKind::Weir => WEIR_BANNER,
            BrokerKind::Mock => MOCK_BANNER,
        };
        let addr = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Ok(line)) => line
                .trim_end()
                .strip_prefix(banner)
                .map(str::to_string)
                .ok_or_else(|| anyhow!("unexpected first line from the broker: {line:?}")),
            Ok(Err(e)) => Err(anyhow!(e).context("reading the broker's address")),
            Err(_) => Err(anyhow!("the broker printed no address within 30 s")),
        };
        match addr {
            Ok(addr) => {
                broker.addr = addr;
                Ok(broker)
            }
            Err(e) => {
                let _ = broker.child.kill();
                let _ = broker.child.wait();
                Err(anyhow!("{e:#} (the broker's stderr: {:?})", broker.stderr()))
            }
        }
    }

    fn stderr(&mut self) -> String {
        let mut s = String::new();
        let _ = self.log.rewind();
        let _ = self.log.read_to_string(&mut s);
        s.trim().to_string()
    }

    /// The process's peak RSS in bytes (VmHWM) and CPU seconds so far.
    fn usage(&self) -> Result<(u64, f64)> {
        super::process_usage(self.child.id())
    }

    /// Reads the broker's peak RSS and CPU time, then stops it with
    /// SIGTERM and waits for it; fails unless it exits with status 0.
    fn stop(mut self) -> Result<(u64, f64)> {
        let usage = self.usage()?;
        let pid = self.child.id();
        // The `kill` command rather than libc (not a dependency of this
        // crate): the pid cannot have been reused, since the child is not
        // reaped before the wait below.
        let sent = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .context("running `kill -TERM`")?;
        if !sent.success() {
            bail!("`kill -TERM {pid}` failed: {sent}");
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        let status = loop {
            if let Some(status) = self.child.try_wait().context("waiting for the broker")? {
                break status;
            }
            if Instant::now() >= deadline {
                bail!("the broker did not exit within {STOP_TIMEOUT:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        if !status.success() {
            bail!(
                "the broker exited with {status} after SIGTERM (stderr: {:?})",
                self.stderr()
            );
        }
        Ok(usage)
    }
}

impl Drop for BrokerChild {
    fn drop(&mut self) {
        // A no-op once `stop` has reaped it.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `weir bench broker --serve-mock P`: librdkafka's mock cluster (one
/// broker) with topic [`TOPIC`] of `partitions` partitions (and
/// [`WARMUP_TOPIC`] of one), its address
/// printed as the first line on stdout, until SIGINT or SIGTERM.
pub fn serve_mock(partitions: i32) -> Result<()> {
    // Handlers first: a signal that arrives while the mock starts still
    // stops it cleanly.
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM]).context("installing signal handlers")?;
    let mock = MockCluster::new(1).context("creating librdkafka's mock cluster")?;
    mock.create_topic(TOPIC, partitions, 1)
        .with_context(|| format!("creating topic {TOPIC} on the mock cluster"))?;
    mock.create_topic(WARMUP_TOPIC, 1, 1)
        .with_context(|| format!("creating topic {WARMUP_TOPIC} on the mock cluster"))?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{MOCK_BANNER}{}", mock.bootstrap_servers())?;
        out.flush()?;
    }
    let signal = signals.forever().next();
    tracing::info!(?signal, "stopping the mock cluster");
    drop(mock);
    Ok(())
}

/// The human-readable table. `flush s`: of the produce time, the wait for
/// the last deliveries of each round; `broker CPU s` and `broker RSS`: the
/// broker process's CPU time and peak resident set.
pub fn print_table(results: &[BrokerResult]) {
    println!(
        "{:<6} {:>10} {:>6} {:>9} {:>6} {:>10} {:>10} {:>8} {:>8} {:>12} {:>10}",
        "broker",
        "partitions",
        "rounds",
        "records",
        "bytes",
        "produce/s",
        "consume/s",
        "total s",
        "flush s",
        "broker CPU s",
        "broker RSS"
    );
    for r in results {
        println!(
            "{:<6} {:>10} {:>6} {:>9} {:>6} {:>10.0} {:>10.0} {:>8.3} {:>8.3} {:>12.2} {:>6} MiB",
            r.broker,
            r.partitions,
            r.rounds,
            r.records,
            r.record_bytes,
            r.produce_records_per_s,
            r.consume_records_per_s,
            r.total_seconds,
            r.produce_flush_seconds,
            r.broker_cpu_seconds,
            r.broker_peak_rss_bytes / (1024 * 1024)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_ends_follow_round_robin() {
        for partitions in [1, 3, 8] {
            for end in [0u64, 1, 2, 7, 8, 9, 100, 1001] {
                let mut want = vec![0i64; partitions as usize];
                for i in 0..end {
                    want[(i % partitions as u64) as usize] += 1;
                }
                let got: Vec<i64> = (0..partitions).map(|p| partition_end(end, p, partitions)).collect();
                assert_eq!(got, want, "{end} records over {partitions} partitions");
            }
        }
    }

    #[test]
    fn mock_rounds_keep_each_partition_under_the_limit() {
        // 1,000,000 records of 100 bytes: ~110 MiB on one partition.
        assert_eq!(mock_rounds(1_000_000, 100, 1), 28);
        assert_eq!(mock_rounds(1_000_000, 100, 8), 4);
        assert_eq!(mock_rounds(1_000, 100, 1), 1);
        // Never more rounds than records, so no round is empty.
        assert_eq!(mock_rounds(3, 900_000, 1), 1);
        for (records, bytes, partitions) in [(1_000_000u64, 100usize, 1i32), (1_000_000, 100, 8), (5, 900_000, 1)] {
            let rounds = mock_rounds(records, bytes, partitions);
            let per_round = records.div_ceil(rounds).div_ceil(partitions as u64);
            assert!(per_round * (bytes as u64 + RECORD_OVERHEAD) <= MOCK_ROUND_BYTES + bytes as u64 + RECORD_OVERHEAD);
        }
    }
}
