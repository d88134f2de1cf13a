//! `weir bench e2e`: records through a topology on Kafka, from a topic that
//! already holds them to outputs delivered and offsets committed, measured
//! against a plain rdkafka consume-and-produce loop on the same broker.
//!
//! Per topology the bench starts `weir dev-broker` as a *separate process*
//! (so the broker's CPU is not counted as weir's, and a broker that
//! misbehaves cannot take the bench down with it), pre-produces the input,
//! runs the ceiling, then runs weir in-process, verifies weir's outputs
//! against the generated answer, and stops the broker.
//!
//! The ceiling is what rdkafka alone costs for the same records with the same
//! client settings: consume every input record, produce one small record per
//! input, deliver, commit. Everything weir does beyond that (decode, parse,
//! repartition, count, stores, changelogs, checkpoints) shows as the gap.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use weir::Topology;
use weir_connectors::kafka::rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use weir_connectors::kafka::rdkafka::error::{KafkaError, RDKafkaErrorCode};
use weir_connectors::kafka::rdkafka::message::Message;
use weir_connectors::kafka::rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};
use weir_connectors::kafka::rdkafka::{Offset, TopicPartitionList};
use weir_connectors::kafka::stream::{self, AppSpec, Guarantee, RunConfig};
use weir_connectors::kafka::{
    assign_at, default_partitioner, flush_producer, Admin, ClientSettings, DeliveryTracker, TopicSpec,
};

use super::broker::BrokerChild;
use super::windowed_count::{self, WindowedCount};
use super::BenchResult;
use crate::scenarios::{emoji_stream, user_clicks};

/// Partitions of the input topic (and so of weir's tasks per
/// sub-topology): the dev broker's default, and what `weir run` gets on it.
const PARTITIONS: i32 = 3;
/// The ceiling's consumer group and output topic.
const CEILING_GROUP: &str = "weir-bench-ceiling";
const CEILING_OUTPUT: &str = "weir-bench-ceiling-out";
/// The two-hop ceiling's consumer group and intermediate topic.
const TWO_HOP_GROUP: &str = "weir-bench-ceiling-2hop";
const TWO_HOP_TOPIC: &str = "weir-bench-ceiling-mid";
/// Write-cache limit per store: `weir run`'s default.
pub(super) const CACHE_MAX_BYTES: usize = 10 * 1024 * 1024;
/// How often the bench asks the broker how far weir has committed. Small
/// next to the commit interval, so it adds little to the measured time.
const PROGRESS_POLL: Duration = Duration::from_millis(10);
/// Timeout of one request to the broker.
pub(super) const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// First event time: 2025-11-21T10:00:00Z, as in `weir bench engine`.
pub(super) const BASE_MS: i64 = 1_763_719_200_000;

/// Options of `weir bench e2e`.
pub struct E2eOptions {
    pub events: u64,
    pub topologies: Vec<String>,
    pub commit_interval: Duration,
    /// What weir's commits promise (the ceilings stay plain loops).
    pub guarantee: Guarantee,
    /// An empty cluster to run on instead of a dev broker per topology
    /// (one topology only: the ceilings' topics would be shared).
    pub brokers: Option<String>,
    /// Progress lines on stderr (off with `--json`).
    pub verbose: bool,
}

/// Runs the benchmark for each topology in turn, each on its own dev broker
/// (a fresh broker per topology, so one's leftovers cannot slow the next).
pub fn run_e2e(opts: &E2eOptions) -> Result<Vec<BenchResult>> {
    if opts.brokers.is_some() && opts.topologies.len() != 1 {
        bail!(
            "--brokers runs one topology on an empty cluster: give exactly one --topology (got {})",
            opts.topologies.len()
        );
    }
    let mut results = Vec::new();
    for name in &opts.topologies {
        let workload = workload(name, opts.events)?;
        if opts.events < workload.min_events() {
            bail!(
                "the e2e benchmark of {name} needs at least {} events (--events)",
                workload.min_events()
            );
        }
        results.push(run_one(workload, opts).with_context(|| format!("e2e benchmark of {name}"))?);
    }
    Ok(results)
}

/// The workload of the topology called `name`, for `events` input records.
fn workload(name: &str, events: u64) -> Result<Box<dyn Workload>> {
    Ok(match name {
        user_clicks::NAME => Box::new(UserClicks::default()),
        emoji_stream::NAME => Box::new(EmojiStream::default()),
        windowed_count::NAME => Box::new(WindowedCount::new(events)),
        other => bail!(
            "no e2e benchmark for topology {other:?} (use user-clicks, emoji-stream or {})",
            windowed_count::NAME
        ),
    })
}

/// What differs between topologies: the input records, and how to check
/// weir's outputs against the answer remembered while generating them.
pub(super) trait Workload {
    fn name(&self) -> &'static str;
    fn input_topic(&self) -> &'static str;
    /// Partitions of the input topic (and so of weir's tasks per
    /// sub-topology).
    fn partitions(&self) -> i32 {
        PARTITIONS
    }
    fn topology(&self) -> Result<Topology>;
    /// Writes record `i` of the input into `key` (left empty: no key) and
    /// `value`, returns its timestamp, and remembers the answer.
    fn record(&mut self, i: u64, key: &mut Vec<u8>, value: &mut Vec<u8>) -> Result<i64>;
    /// Reads weir's outputs and fails unless they match the answer.
    fn verify(&self, settings: &ClientSettings) -> Result<()>;
    /// The fewest input records whose outputs can be checked.
    fn min_events(&self) -> u64 {
        1
    }
}

fn run_one(mut w: Box<dyn Workload>, opts: &E2eOptions) -> Result<BenchResult> {
    let name = w.name();
    let log = |msg: &str| {
        if opts.verbose {
            eprintln!("{name}: {msg}");
        }
    };

    let partitions = w.partitions();
    let (_broker, settings, admin) = cluster(opts.brokers.as_deref(), partitions, &log)?;

    // Pre-produce the input (not timed).
    let input = w.input_topic();
    // The records carry event times from 2025: on a real cluster the
    // default retention (7 days) would delete them at once.
    let keep = |name: &str| {
        let mut spec = TopicSpec::new(name, partitions);
        spec.config.push(("retention.ms".into(), "-1".into()));
        spec
    };
    admin
        .ensure_topics(&[keep(input), keep(CEILING_OUTPUT), keep(TWO_HOP_TOPIC)])
        .context("creating the input and ceiling topics")?;
    let started = Instant::now();
    produce_input(&settings, input, opts.events, w.as_mut())?;
    let input_ends = check_input(&settings, input, opts.events)?;
    log(&format!(
        "{} records pre-produced to {input} in {:.2} s (offsets {input_ends:?})",
        opts.events,
        started.elapsed().as_secs_f64()
    ));

    // The ceiling first, on the same broker and records.
    let ceiling_seconds = ceiling(&settings, input, &input_ends, opts.commit_interval)?;
    log(&format!("ceiling: {ceiling_seconds:.3} s"));
    let two_hop_seconds = two_hop_ceiling(&settings, input, &input_ends, opts.commit_interval)?;
    log(&format!("two-hop ceiling: {two_hop_seconds:.3} s"));

    // weir. Its output topics too keep records of any age (see above).
    let topology = w.topology()?;
    let outputs: Vec<TopicSpec> = topology
        .topics()
        .iter()
        .enumerate()
        .filter(|(_, t)| !t.internal)
        .map(|(i, _)| topology.topic_name(i as u32, name))
        .filter(|t| t != input)
        .map(|t| keep(&t))
        .collect();
    admin.ensure_topics(&outputs).context("creating the output topics")?;
    let (seconds, peak_rss) = run_weir(&settings, name, &topology, input, &input_ends, opts)?;
    log(&format!("weir: {seconds:.3} s; verifying its outputs"));
    w.verify(&settings)?;
    let dlq = format!("{name}-dlq");
    let dead = end_offsets(&settings, &dlq)?.iter().sum::<i64>();
    if dead != 0 {
        bail!("weir dead-lettered {dead} record(s) of valid input (see topic {dlq})");
    }

    let events = opts.events as f64;
    Ok(BenchResult {
        workload: "e2e",
        topology: match opts.guarantee {
            Guarantee::AtLeastOnce => name.to_string(),
            Guarantee::ExactlyOnce => format!("{name} (exactly-once)"),
        },
        events: opts.events,
        seconds,
        events_per_s: events / seconds,
        ceiling_events_per_s: events / ceiling_seconds,
        ratio: ceiling_seconds / seconds,
        peak_rss_bytes: peak_rss,
        latency: None,
        two_hop_ceiling_events_per_s: Some(events / two_hop_seconds),
    })
}

/// The cluster a bench runs on: the one at `brokers`, or a fresh dev
/// broker with `partitions` partitions per topic (kept alive by the
/// returned process). Logs which.
pub(super) fn cluster(
    brokers: Option<&str>,
    partitions: i32,
    log: &dyn Fn(&str),
) -> Result<(Option<BrokerProcess>, ClientSettings, Admin)> {
    match brokers {
        Some(addr) => {
            let settings = ClientSettings::new(addr);
            let admin = Admin::new(&settings).context("admin client")?;
            log(&format!("the cluster at {addr}"));
            Ok((None, settings, admin))
        }
        None => {
            let broker = BrokerProcess::dev_broker(partitions)?;
            log(&format!("dev broker (pid {}) at {}", broker.child.id(), broker.addr));
            let (settings, admin) = broker.client()?;
            Ok((Some(broker), settings, admin))
        }
    }
}

/// `weir dev-broker` in a child process, on a free port, with its data in
/// a temporary directory (see [`BrokerChild`]): every run starts empty.
pub(super) type BrokerProcess = BrokerChild;

/// The bench's producers: a [`DeliveryTracker`] keeps delivery failures
/// (a flush says nothing was left in flight, not that everything arrived;
/// see [`deliver`]). Its records are built with `BaseRecord::to` here and
/// in the restore and latency benches, hence the `()` delivery opaque.
pub(super) type Producer = BaseProducer<DeliveryTracker<()>>;

pub(super) fn producer(settings: &ClientSettings) -> Result<Producer> {
    settings
        .producer_config()
        .create_with_context(DeliveryTracker::new())
        .context("creating a producer")
}

/// Sends one record, waiting for room while the local queue is full.
pub(super) fn send(producer: &Producer, mut record: BaseRecord<'_, [u8], [u8]>) -> Result<()> {
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                producer.poll(Duration::from_millis(1));
                record = r;
            }
            Err((e, r)) => return Err(anyhow!(e).context(format!("producing to {}", r.topic))),
        }
    }
}

/// Delivers everything sent through `producer`; fails on any lost record.
pub(super) fn deliver(producer: &Producer, what: &str) -> Result<()> {
    flush_producer(producer, Duration::from_secs(120)).with_context(|| format!("delivering records to {what}"))?;
    Ok(producer.context().check(what)?)
}

fn produce_input(settings: &ClientSettings, topic: &str, n: u64, w: &mut dyn Workload) -> Result<()> {
    let producer = producer(settings)?;
    let mut key = Vec::with_capacity(16);
    let mut value = Vec::with_capacity(128);
    for i in 0..n {
        key.clear();
        value.clear();
        let ts = w.record(i, &mut key, &mut value)?;
        let mut record = BaseRecord::<[u8], [u8]>::to(topic).payload(&value[..]).timestamp(ts);
        if key.is_empty() {
            // Unkeyed input round-robin over the partitions, so that every
            // task gets its share: librdkafka's sticky partitioner can put
            // half of 1 M records on one partition.
            record = record.partition((i % w.partitions() as u64) as i32);
        } else {
            record = record.key(&key[..]);
        }
        send(&producer, record)?;
        if i & 1023 == 0 {
            producer.poll(Duration::ZERO);
        }
    }
    deliver(&producer, topic)
}

/// (low, high) watermark of every partition of `topic`, by partition.
pub(super) fn watermarks(consumer: &BaseConsumer, topic: &str) -> Result<Vec<(i64, i64)>> {
    let md = consumer
        .fetch_metadata(Some(topic), REQUEST_TIMEOUT)
        .with_context(|| format!("metadata of {topic}"))?;
    let partitions = md
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .map(|t| t.partitions().len())
        .unwrap_or(0);
    if partitions == 0 {
        bail!("topic {topic} does not exist");
    }
    (0..partitions as i32)
        .map(|p| {
            consumer
                .fetch_watermarks(topic, p, REQUEST_TIMEOUT)
                .with_context(|| format!("watermarks of {topic}/{p}"))
        })
        .collect()
}

pub(super) fn standalone_consumer(settings: &ClientSettings) -> Result<BaseConsumer> {
    settings
        .standalone_consumer_config()
        .create()
        .context("creating a consumer")
}

/// The high watermark of every partition of `topic`.
pub(super) fn end_offsets(settings: &ClientSettings, topic: &str) -> Result<Vec<i64>> {
    Ok(watermarks(&standalone_consumer(settings)?, topic)?
        .into_iter()
        .map(|(_, high)| high)
        .collect())
}

/// Checks that the broker holds all `n` input records, from offset 0 of
/// every partition, and returns the end offset of each partition.
///
/// A bench on a partial input (a cluster whose retention dropped some, a
/// topic that was not empty) would post a figure for a different amount of
/// work than it claims.
fn check_input(settings: &ClientSettings, topic: &str, n: u64) -> Result<Vec<i64>> {
    let marks = watermarks(&standalone_consumer(settings)?, topic)?;
    let total: i64 = marks.iter().map(|(_, high)| high).sum();
    if marks.iter().any(|(low, _)| *low != 0) || u64::try_from(total).ok() != Some(n) {
        bail!(
            "the broker does not hold the {n} input records of {topic} (watermarks per partition: {marks:?}); \
             the input topic must be new or empty, and the cluster must keep all of it"
        );
    }
    Ok(marks.into_iter().map(|(_, high)| high).collect())
}

/// Records taken from the consumer per batch, as a weir stream thread does.
const BATCH: usize = 10_000;

/// The ceiling: consume every input record with a fresh group, produce one
/// small record per input (to the same partition of another topic, keyed
/// like the input), and every commit interval deliver and commit, as weir
/// does; at the end deliver and commit. Returns the seconds taken, client
/// creation and the group join included (weir's figure includes them too).
fn ceiling(settings: &ClientSettings, input: &str, ends: &[i64], commit_interval: Duration) -> Result<f64> {
    let started = Instant::now();
    let consumer: BaseConsumer = settings
        .consumer_config(CEILING_GROUP)
        .create()
        .context("creating the ceiling's consumer")?;
    let producer = producer(settings)?;
    consumer
        .subscribe(&[input])
        .with_context(|| format!("subscribing the ceiling to {input}"))?;
    let mut next = vec![0i64; ends.len()];
    let commit = |next: &[i64]| -> Result<()> {
        deliver(&producer, CEILING_OUTPUT)?;
        let mut tpl = TopicPartitionList::new();
        for (p, offset) in next.iter().enumerate() {
            if *offset > 0 {
                tpl.add_partition_offset(input, p as i32, Offset::Offset(*offset))
                    .context("ceiling commit offsets")?;
            }
        }
        if tpl.count() > 0 {
            consumer
                .commit(&tpl, CommitMode::Sync)
                .context("committing the ceiling's offsets")?;
        }
        Ok(())
    };
    let mut last_commit = Instant::now();
    let mut last_record = Instant::now();
    while next.iter().zip(ends).any(|(n, end)| n < end) {
        let mut item = consumer.poll(Duration::from_millis(50));
        let mut taken = 0;
        while let Some(m) = item {
            let m = m.context("the ceiling consuming")?;
            let offset = m.offset();
            let value = offset.to_be_bytes();
            let mut record = BaseRecord::<[u8], [u8]>::to(CEILING_OUTPUT)
                .partition(m.partition())
                .payload(&value[..]);
            if let Some(k) = m.key() {
                record = record.key(k);
            }
            send(&producer, record)?;
            *next
                .get_mut(m.partition() as usize)
                .ok_or_else(|| anyhow!("ceiling: record of unknown partition {}", m.partition()))? = offset + 1;
            last_record = Instant::now();
            taken += 1;
            if taken >= BATCH {
                break;
            }
            item = consumer.poll(Duration::ZERO);
        }
        producer.poll(Duration::ZERO);
        if last_commit.elapsed() >= commit_interval {
            commit(&next)?;
            last_commit = Instant::now();
        }
        if last_record.elapsed() > Duration::from_secs(60) {
            bail!("the ceiling received nothing for 60 s (at offsets {next:?} of {ends:?})");
        }
    }
    commit(&next)?;
    let seconds = started.elapsed().as_secs_f64();
    drop(consumer);
    let delivered: i64 = end_offsets(settings, CEILING_OUTPUT)?.iter().sum();
    let consumed: i64 = ends.iter().sum();
    if delivered != consumed {
        bail!("the ceiling delivered {delivered} records for {consumed} inputs");
    }
    Ok(seconds)
}

/// What moving every record through Kafka *twice* costs, as a topology
/// that repartitions must (user-clicks and emoji-stream both do): one
/// consumer on the input and an intermediate topic; every input record is
/// produced to the intermediate topic (same partition, a 4-byte key, no
/// value: the shape of user-clicks' repartition records, without weir's
/// origin header), and every intermediate record is consumed; deliver and
/// commit every commit interval and at the end. It produces no output per
/// record (weir's caching writes one per key per commit). Returns the
/// seconds taken, client creation and the group join included.
fn two_hop_ceiling(settings: &ClientSettings, input: &str, ends: &[i64], commit_interval: Duration) -> Result<f64> {
    let started = Instant::now();
    let consumer: BaseConsumer = settings
        .consumer_config(TWO_HOP_GROUP)
        .create()
        .context("creating the two-hop ceiling's consumer")?;
    let producer = producer(settings)?;
    consumer
        .subscribe(&[input, TWO_HOP_TOPIC])
        .context("subscribing the two-hop ceiling")?;
    let mut next_in = vec![0i64; ends.len()];
    let mut next_mid = vec![0i64; ends.len()];
    let commit = |next_in: &[i64], next_mid: &[i64]| -> Result<()> {
        deliver(&producer, TWO_HOP_TOPIC)?;
        let mut tpl = TopicPartitionList::new();
        for (topic, next) in [(input, next_in), (TWO_HOP_TOPIC, next_mid)] {
            for (p, offset) in next.iter().enumerate() {
                if *offset > 0 {
                    tpl.add_partition_offset(topic, p as i32, Offset::Offset(*offset))
                        .context("two-hop ceiling commit offsets")?;
                }
            }
        }
        if tpl.count() > 0 {
            consumer
                .commit(&tpl, CommitMode::Sync)
                .context("committing the two-hop ceiling's offsets")?;
        }
        Ok(())
    };
    let done = |next_in: &[i64], next_mid: &[i64]| {
        next_in.iter().zip(ends).all(|(n, e)| n >= e) && next_mid.iter().zip(ends).all(|(n, e)| n >= e)
    };
    let mut last_commit = Instant::now();
    let mut last_record = Instant::now();
    while !done(&next_in, &next_mid) {
        let mut item = consumer.poll(Duration::from_millis(50));
        let mut taken = 0;
        while let Some(m) = item {
            let m = m.context("the two-hop ceiling consuming")?;
            let (p, offset) = (m.partition() as usize, m.offset());
            if m.topic() == input {
                let key = (offset as u32).to_be_bytes();
                send(
                    &producer,
                    BaseRecord::<[u8], [u8]>::to(TWO_HOP_TOPIC)
                        .partition(m.partition())
                        .key(&key[..]),
                )?;
                *next_in.get_mut(p).context("two-hop ceiling: unknown partition")? = offset + 1;
            } else {
                *next_mid.get_mut(p).context("two-hop ceiling: unknown partition")? = offset + 1;
            }
            last_record = Instant::now();
            taken += 1;
            if taken >= BATCH {
                break;
            }
            item = consumer.poll(Duration::ZERO);
        }
        producer.poll(Duration::ZERO);
        if last_commit.elapsed() >= commit_interval {
            commit(&next_in, &next_mid)?;
            last_commit = Instant::now();
        }
        if last_record.elapsed() > Duration::from_secs(60) {
            bail!("the two-hop ceiling received nothing for 60 s (at {next_in:?} / {next_mid:?} of {ends:?})");
        }
    }
    commit(&next_in, &next_mid)?;
    Ok(started.elapsed().as_secs_f64())
}

/// weir's run on its own thread. Dropping it sets `stop` and joins, so no
/// error path leaves weir running against a broker about to be killed.
pub(super) struct WeirRun {
    pub(super) stop: Arc<AtomicBool>,
    pub(super) handle: Option<JoinHandle<weir_connectors::Result<()>>>,
}

impl WeirRun {
    pub(super) fn is_finished(&self) -> bool {
        match &self.handle {
            Some(h) => h.is_finished(),
            None => true,
        }
    }

    /// Stops weir (it commits and leaves the group) and returns how its run ended.
    pub(super) fn finish(&mut self) -> Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        match self.handle.take() {
            Some(h) => match h.join() {
                Ok(r) => r.context("weir's run failed"),
                Err(_) => bail!("weir's run thread panicked"),
            },
            None => Ok(()),
        }
    }
}

impl Drop for WeirRun {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

/// `weir bench e2e-run`: one e2e topology in this process, on the cluster
/// at `brokers`, with one stream thread and fresh state in a temporary
/// directory, until standard input closes (the bench holds it open, so
/// weir also stops if the bench dies). Then weir commits and leaves.
pub fn serve_run(topology: &str, brokers: &str, commit_interval: Duration, guarantee: Guarantee) -> Result<()> {
    let app = workload(topology, 1)?;
    let state = tempfile::tempdir().context("creating a temporary state directory")?;
    let stop = Arc::new(AtomicBool::new(false));
    let stop_on_eof = stop.clone();
    std::thread::Builder::new()
        .name("stdin-watch".into())
        .spawn(move || {
            let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
            stop_on_eof.store(true, Ordering::Relaxed);
        })
        .context("starting the stdin watcher")?;
    let config = RunConfig {
        brokers: Some(brokers.to_string()),
        state_dir: state.path().to_path_buf(),
        threads: 1,
        commit_interval,
        cache_max_bytes: CACHE_MAX_BYTES,
        idle_advance: weir_connectors::kafka::stream::default_idle_advance(commit_interval),
        delivery_timeout: weir_connectors::kafka::stream::DEFAULT_DELIVERY_TIMEOUT,
        instance_id: None,
        guarantee,
        stop,
        kafka_properties: Vec::new(),
        state_cache_bytes: weir_state::SLED_CACHE_BYTES,
    };
    let apps = vec![AppSpec {
        application_id: app.name().to_string(),
        topology: app.topology()?,
    }];
    stream::run(apps, config).context("weir's run failed")
}

/// weir's run in a child process (`weir bench e2e-run`), so that its time
/// includes process start and group join as a user would measure them, and
/// its peak RSS is weir's alone (not the pre-produced input's or the
/// ceilings'). Dropping it closes the child's stdin (it stops, committing)
/// and kills it if it has not exited within 30 s.
struct WeirProcess {
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
}

impl WeirProcess {
    fn start(app: &str, settings: &ClientSettings, opts: &E2eOptions) -> Result<Self> {
        let exe = std::env::current_exe().context("locating the weir binary")?;
        let guarantee = match opts.guarantee {
            Guarantee::AtLeastOnce => "at-least-once",
            Guarantee::ExactlyOnce => "exactly-once",
        };
        let mut child = std::process::Command::new(exe)
            .args(["bench", "e2e-run", "--topology", app, "--brokers", &settings.brokers])
            .args(["--commit-interval-ms", &opts.commit_interval.as_millis().to_string()])
            .args(["--guarantee", guarantee])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .context("starting weir bench e2e-run")?;
        let stdin = child.stdin.take();
        Ok(WeirProcess { child, stdin })
    }

    /// The child's peak RSS in bytes and CPU seconds so far: next to the
    /// wall time, the CPU shows what weir costs when other work shares
    /// the cores.
    fn usage(&self) -> Result<(u64, f64)> {
        super::process_usage(self.child.id())
    }

    /// Stops weir and returns how its run ended.
    fn finish(&mut self) -> Result<()> {
        self.stdin.take();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().context("waiting for weir")? {
                if status.success() {
                    return Ok(());
                }
                bail!("weir bench e2e-run ended with {status}");
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!("weir bench e2e-run did not stop within 30 s of its stdin closing: killed");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for WeirProcess {
    fn drop(&mut self) {
        if self.stdin.is_some() {
            let _ = self.finish();
        }
    }
}

/// Runs `topology` in a child process (see [`WeirProcess`]) and returns the
/// seconds from its start until its consumer group has committed every
/// source topic up to its end: the input, and the repartition topics whose
/// records the input produced. The offsets are committed only after every
/// output is delivered (weir's commit protocol), so that is "all input
/// processed, all output delivered". Also returns weir's peak RSS.
fn run_weir(
    settings: &ClientSettings,
    app: &str,
    topology: &Topology,
    input: &str,
    input_ends: &[i64],
    opts: &E2eOptions,
) -> Result<(f64, u64)> {
    let commit_interval = opts.commit_interval;
    let mut sources: Vec<u32> = topology
        .subtopologies()
        .iter()
        .flat_map(|s| s.source_topics.iter().copied())
        .collect();
    sources.sort_unstable();
    sources.dedup();
    let sources: Vec<String> = sources.into_iter().map(|t| topology.topic_name(t, app)).collect();
    if !sources.iter().any(|s| s == input) {
        bail!("{app} does not read {input}");
    }
    let admin = Admin::new(settings).context("admin client")?;
    // Never subscribes: it only reads the group's committed offsets.
    let monitor: BaseConsumer = settings
        .consumer_config(app)
        .set("client.id", "weir-bench-monitor")
        .create()
        .context("creating the progress monitor")?;

    let started = Instant::now();
    let mut run = WeirProcess::start(app, settings, opts)?;

    let stall_limit = Duration::from_secs(60) + 2 * commit_interval;
    let mut partitions: BTreeMap<String, i32> = BTreeMap::new();
    let mut committed_total = -1i64;
    let mut last_progress = Instant::now();
    let seconds = loop {
        std::thread::sleep(PROGRESS_POLL);
        if run.child.try_wait().context("watching weir")?.is_some() {
            run.finish()?;
            bail!("weir stopped before committing all its input");
        }
        // The repartition topics exist once weir has created them.
        if partitions.len() < sources.len() {
            let topics = admin.topics().context("listing topics")?;
            for s in &sources {
                if let Some(n) = topics.get(s) {
                    partitions.insert(s.clone(), *n);
                }
            }
            if partitions.len() < sources.len() {
                continue;
            }
        }
        let mut tpl = TopicPartitionList::new();
        for (topic, n) in &partitions {
            for p in 0..*n {
                tpl.add_partition(topic, p);
            }
        }
        let committed = monitor
            .committed_offsets(tpl, REQUEST_TIMEOUT)
            .with_context(|| format!("reading the committed offsets of group {app}"))?;
        let mut offsets: HashMap<(String, i32), i64> = HashMap::new();
        for e in committed.elements() {
            let o = match e.offset() {
                Offset::Offset(o) => o,
                _ => 0,
            };
            offsets.insert((e.topic().to_string(), e.partition()), o);
        }
        let total: i64 = offsets.values().sum();
        if total != committed_total {
            committed_total = total;
            last_progress = Instant::now();
        } else if last_progress.elapsed() > stall_limit {
            bail!("weir committed nothing new for {stall_limit:?} (committed offsets: {offsets:?})");
        }
        let input_done = input_ends
            .iter()
            .enumerate()
            .all(|(p, end)| offsets.get(&(input.to_string(), p as i32)).copied().unwrap_or(0) >= *end);
        if !input_done {
            continue;
        }
        // The ends of the internal topics, read *after* the committed
        // offsets: the input was committed only once every repartition
        // record it caused had been delivered, so these ends are final.
        let elapsed = started.elapsed().as_secs_f64();
        let mut done = true;
        for (topic, n) in partitions.iter().filter(|(t, _)| *t != input) {
            for p in 0..*n {
                let (_, end) = monitor
                    .fetch_watermarks(topic, p, REQUEST_TIMEOUT)
                    .with_context(|| format!("watermarks of {topic}/{p}"))?;
                // Exactly-once: each transaction ends with a marker in
                // every partition it wrote, so a fully read partition's
                // committed offset stops one short of its end.
                let marker = i64::from(opts.guarantee == Guarantee::ExactlyOnce && end > 0);
                if offsets.get(&(topic.clone(), p)).copied().unwrap_or(0) < end - marker {
                    done = false;
                }
            }
        }
        if done {
            break elapsed;
        }
    };
    let (peak_rss, cpu) = run.usage()?;
    run.finish()?;
    if opts.verbose {
        eprintln!("{app}: weir used {cpu:.2} s of CPU until then");
    }
    Ok((seconds, peak_rss))
}

/// Every record of `topic`, from the oldest the broker holds to the end,
/// handed to `f` as (key, value). Returns how many there were.
pub(super) fn read_topic(
    settings: &ClientSettings,
    topic: &str,
    mut f: impl FnMut(Option<&[u8]>, Option<&[u8]>) -> Result<()>,
) -> Result<u64> {
    let consumer = standalone_consumer(settings)?;
    let marks = watermarks(&consumer, topic)?;
    let mut tpl = TopicPartitionList::new();
    for (p, (low, high)) in marks.iter().enumerate() {
        if high > low {
            tpl.add_partition_offset(topic, p as i32, Offset::Offset(*low))
                .with_context(|| format!("positioning {topic}/{p}"))?;
        }
    }
    if tpl.count() == 0 {
        return Ok(0);
    }
    assign_at(&consumer, &tpl, REQUEST_TIMEOUT).with_context(|| format!("assigning {topic}"))?;
    let mut next: Vec<i64> = marks.iter().map(|(low, _)| *low).collect();
    let mut n = 0u64;
    let mut last_record = Instant::now();
    while next.iter().zip(&marks).any(|(next, (_, high))| next < high) {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                if let Some(p) = next.get_mut(m.partition() as usize) {
                    *p = m.offset() + 1;
                }
                f(m.key(), m.payload())?;
                n += 1;
                last_record = Instant::now();
            }
            Some(Err(e)) => return Err(anyhow!(e).context(format!("reading {topic}"))),
            None if last_record.elapsed() > Duration::from_secs(30) => {
                bail!("reading {topic}: nothing for 30 s at offsets {next:?} of {marks:?}")
            }
            None => {
                // Transaction markers take offsets but are never handed
                // over: the consumer's position steps past them.
                let positions = consumer.position().with_context(|| format!("positions in {topic}"))?;
                for e in positions.elements() {
                    if let (Some(p), Offset::Offset(o)) = (next.get_mut(e.partition() as usize), e.offset()) {
                        *p = (*p).max(o);
                    }
                }
            }
        }
    }
    Ok(n)
}

/// user-clicks: `User 17 clicked on /page3 at 1763719200.123` lines, no key,
/// 100 users; the answer is the click count per user.
struct UserClicks {
    rng: SmallRng,
    expected: HashMap<u32, u64>,
}

impl Default for UserClicks {
    fn default() -> Self {
        UserClicks {
            rng: SmallRng::seed_from_u64(17),
            expected: HashMap::new(),
        }
    }
}

impl Workload for UserClicks {
    fn name(&self) -> &'static str {
        user_clicks::NAME
    }
    fn input_topic(&self) -> &'static str {
        user_clicks::INPUT_TOPIC
    }
    fn topology(&self) -> Result<Topology> {
        Ok(user_clicks::topology(&user_clicks::Params::default())?)
    }
    fn record(&mut self, i: u64, _key: &mut Vec<u8>, value: &mut Vec<u8>) -> Result<i64> {
        use std::io::Write;
        let user: u32 = self.rng.gen_range(1..=100);
        let page: u32 = self.rng.gen_range(1..=10);
        let ts = BASE_MS + i as i64;
        write!(
            value,
            "User {user} clicked on /page{page} at {}.{:03}",
            ts / 1000,
            ts % 1000
        )?;
        *self.expected.entry(user).or_default() += 1;
        Ok(ts)
    }
    fn verify(&self, settings: &ClientSettings) -> Result<()> {
        // The last text per user is the final count (a user's records all
        // go to one partition, in order).
        let mut latest: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
        read_topic(settings, user_clicks::OUTPUT_TOPIC, |k, v| {
            latest.insert(k.unwrap_or_default().to_vec(), v.unwrap_or_default().to_vec());
            Ok(())
        })?;
        for (user, count) in &self.expected {
            let want = user_clicks::aggregation_text(*user, *count);
            let got = latest
                .get(user.to_string().as_bytes())
                .map(|v| String::from_utf8_lossy(v).into_owned());
            if got.as_deref() != Some(want.as_str()) {
                bail!("user-clicks result wrong for user {user}: expected {want:?}, got {got:?}");
            }
        }
        if latest.len() != self.expected.len() {
            bail!(
                "user-clicks wrote counts for {} keys, the input has {} users",
                latest.len(),
                self.expected.len()
            );
        }
        Ok(())
    }
}

/// Input records per second of event time in emoji-stream, as in
/// `weir bench engine`.
const EMOJI_EVENTS_PER_S: i64 = 2_000;
/// emoji-stream's grace period in this benchmark, instead of the
/// topology's default 1 s; see [`EmojiStream`].
const EMOJI_GRACE_MS: i64 = 60_000;

/// emoji-stream: JSON reactions keyed by user (`u1` ... `u10000`), event
/// times advancing [`EMOJI_EVENTS_PER_S`] per second, the engine workload's
/// skewed emoji mix; the answer is the count per (emoji, window).
///
/// The topology runs with a grace of [`EMOJI_GRACE_MS`] instead of 1 s,
/// because a backlog is not consumed in event-time order across
/// partitions: a fetch returns whole producer batches (here ~20,000
/// records each) per partition, and librdkafka's prefetch lets one
/// partition run ahead of the others, so the repartitioned stream arrives
/// tens of seconds of event time out of order (measured in the order the
/// ceiling consumes: 31 s at 1,000,000 records, on the broker weir used
/// before its own). With 1 s of grace weir drops most
/// of it as late, which is right by the windowing rules but leaves nothing
/// to check. The grace changes how long windows stay open (a few hundred
/// more store entries), not the work per record.
struct EmojiStream {
    rng: SmallRng,
    params: emoji_stream::Params,
    expected: HashMap<(&'static str, i64), u64>,
    /// The newest event time per repartition partition: the stream time
    /// the task counting that partition's emojis reaches.
    last_ts: Vec<i64>,
}

impl Default for EmojiStream {
    fn default() -> Self {
        EmojiStream {
            rng: SmallRng::seed_from_u64(42),
            params: emoji_stream::Params {
                grace_ms: EMOJI_GRACE_MS,
                ..emoji_stream::Params::default()
            },
            expected: HashMap::new(),
            last_ts: vec![i64::MIN; PARTITIONS as usize],
        }
    }
}

impl Workload for EmojiStream {
    fn name(&self) -> &'static str {
        emoji_stream::NAME
    }
    fn input_topic(&self) -> &'static str {
        emoji_stream::INPUT_TOPIC
    }
    fn topology(&self) -> Result<Topology> {
        Ok(emoji_stream::topology(&self.params)?)
    }
    /// Enough event time for the first window to close (its end + grace).
    fn min_events(&self) -> u64 {
        let span_ms = self.params.window_ms + self.params.grace_ms;
        u64::try_from(span_ms * EMOJI_EVENTS_PER_S / 1000).unwrap_or(0) + 1
    }
    fn record(&mut self, i: u64, key: &mut Vec<u8>, value: &mut Vec<u8>) -> Result<i64> {
        use std::io::Write;
        let emojis = super::EMOJIS;
        let r: f64 = self.rng.gen();
        let idx = ((r * r * r) * emojis.len() as f64) as usize;
        let emoji = emojis[idx.min(emojis.len() - 1)];
        let ts = BASE_MS + (i as i64) * 1000 / EMOJI_EVENTS_PER_S;
        let user: u32 = self.rng.gen_range(1..=10_000);
        let time = chrono::DateTime::from_timestamp_millis(ts)
            .context("timestamp in range")?
            .format("%Y-%m-%dT%H:%M:%S%.3fZ");
        write!(key, "u{user}")?;
        write!(
            value,
            r#"{{"user_id": "u{user}", "emoji_type": "{emoji}", "timestamp": "{time}"}}"#
        )?;
        let window = self.params.window_ms;
        *self.expected.entry((emoji, ts - ts.rem_euclid(window))).or_default() += 1;
        // The repartition topic is keyed by the emoji (its UTF-8 bytes).
        let p = default_partitioner(emoji.as_bytes(), PARTITIONS) as usize;
        if let Some(last) = self.last_ts.get_mut(p) {
            *last = ts;
        }
        Ok(ts)
    }
    fn verify(&self, settings: &ClientSettings) -> Result<()> {
        let mut got: HashMap<(String, i64), u64> = HashMap::new();
        read_topic(settings, emoji_stream::OUTPUT_TOPIC, |_, v| {
            let v = v.unwrap_or_default();
            match super::emoji_window_count(v) {
                Some((k, c)) => {
                    got.insert(k, c);
                    Ok(())
                }
                None => bail!(
                    "emoji-stream wrote an aggregate the benchmark cannot read: {}",
                    String::from_utf8_lossy(v)
                ),
            }
        })?;
        // Every window that closed before the input ended must be there
        // and exact: those whose end + grace the stream time of their
        // counting task reached. (The last ones close later, if at all:
        // when that task has been idle long enough to advance by wall
        // clock.)
        let (window, grace) = (self.params.window_ms, self.params.grace_ms);
        let mut closed = 0;
        for (&(emoji, start), count) in &self.expected {
            let p = default_partitioner(emoji.as_bytes(), PARTITIONS) as usize;
            let stream_time = self.last_ts.get(p).copied().unwrap_or(i64::MIN);
            if start + window + grace <= stream_time {
                closed += 1;
                let g = got.get(&(emoji.to_string(), start));
                if g != Some(count) {
                    bail!(
                        "emoji-stream result wrong for {emoji} in the window at {start}: expected {count}, got {g:?}"
                    );
                }
            }
        }
        // And whatever else came out (windows closed by idle time after the
        // input ended) must be exact too.
        for ((emoji, start), count) in &got {
            let want = self.expected.get(&(emoji.as_str(), *start));
            if want != Some(count) {
                bail!("emoji-stream wrote {count} for {emoji} in the window at {start}; the input has {want:?}");
            }
        }
        if closed == 0 {
            bail!("no emoji-stream window closed before the input ended: use more --events");
        }
        Ok(())
    }
}
