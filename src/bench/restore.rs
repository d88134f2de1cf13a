//! `weir bench restore`: a store rebuilt from its changelog into an empty
//! state directory, through the restore path a stream thread takes when it
//! is assigned a task whose local state is missing
//! (`weir_runtime::manager::restore_task`, reading through
//! `connectors::kafka::stream::restore::ChangelogReader`).
//!
//! The bench starts `weir dev-broker` as a separate process, fills the
//! changelog of user-clicks' `clicks-per-user` store with N distinct keys
//! (a u32 user id, big-endian, as the topology's key serde writes it; a
//! u64 count as value), spread over the partitions by Kafka's partitioner
//! as weir would write them. Then, per partition, a fresh task restores up
//! to the changelog's end, as if the checkpoints topic named that end. The
//! restored stores are checked key by key against what was produced.
//!
//! The ceiling is a plain rdkafka consumer reading the same changelog
//! ranges and doing nothing with the records: what fetching alone costs.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use weir::runtime::{Task, TaskCheckpoint, TaskConfig, TaskId};
use weir::state::StateDb;
use weir::Topology;
use weir_connectors::kafka::rdkafka::message::Message;
use weir_connectors::kafka::rdkafka::producer::BaseRecord;
use weir_connectors::kafka::rdkafka::{Offset, TopicPartitionList};
use weir_connectors::kafka::stream::restore;
use weir_connectors::kafka::{assign_at, default_partitioner, TopicSpec};

use super::e2e::{
    deliver, end_offsets, producer, send, standalone_consumer, BrokerProcess, CACHE_MAX_BYTES, REQUEST_TIMEOUT,
};
use super::{peak_rss_bytes, BenchResult};
use crate::scenarios::user_clicks;

/// Partitions of the changelog (the dev broker's default).
const PARTITIONS: i32 = 3;

/// Options of `weir bench restore`.
pub struct RestoreOptions {
    /// Distinct keys (= changelog records) to restore.
    pub keys: u64,
    /// Progress lines on stderr (off with `--json`).
    pub verbose: bool,
}

fn key_of(i: u64) -> [u8; 4] {
    (i as u32).to_be_bytes()
}

fn value_of(i: u64) -> [u8; 8] {
    (i % 1000 + 1).to_be_bytes()
}

pub fn run_restore(opts: &RestoreOptions) -> Result<Vec<BenchResult>> {
    if opts.keys > u64::from(u32::MAX) {
        bail!("--keys must fit in a u32");
    }
    let log = |msg: &str| {
        if opts.verbose {
            eprintln!("restore: {msg}");
        }
    };
    let app = user_clicks::NAME;
    let store = user_clicks::STORE;
    let topology: Topology = user_clicks::topology(&user_clicks::Params::default())?;
    let sub = topology
        .subtopologies()
        .iter()
        .find(|s| s.stores.iter().any(|n| n == store))
        .map(|s| s.id)
        .context("user-clicks has a sub-topology with the count store")?;
    let changelog = Topology::changelog_topic(app, store);

    let broker = BrokerProcess::dev_broker(PARTITIONS)?;
    log(&format!("dev broker (pid {}) at {}", broker.child.id(), broker.addr));
    let (settings, admin) = broker.client()?;
    admin
        .ensure_topics(&[TopicSpec::new(&changelog, PARTITIONS).compacted()])
        .context("creating the changelog topic")?;

    // Fill the changelog (not timed).
    let started = Instant::now();
    let p = producer(&settings)?;
    for i in 0..opts.keys {
        let (k, v) = (key_of(i), value_of(i));
        let partition = default_partitioner(&k, PARTITIONS);
        send(
            &p,
            BaseRecord::<[u8], [u8]>::to(&changelog)
                .partition(partition)
                .key(&k[..])
                .payload(&v[..]),
        )?;
        if i % 100_000 == 0 {
            p.poll(Duration::ZERO);
        }
    }
    deliver(&p, &changelog)?;
    drop(p);
    let ends = end_offsets(&settings, &changelog)?;
    if ends.iter().sum::<i64>() != opts.keys as i64 {
        bail!("the broker holds {ends:?} records of {changelog}, not {}", opts.keys);
    }
    log(&format!(
        "{} changelog records produced in {:.2} s (offsets {ends:?})",
        opts.keys,
        started.elapsed().as_secs_f64()
    ));

    // The ceiling: fetch the same records, do nothing with them.
    let started = Instant::now();
    let mut fetched = 0u64;
    for (partition, end) in ends.iter().enumerate() {
        let c = standalone_consumer(&settings)?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&changelog, partition as i32, Offset::Offset(0))
            .context("positioning the ceiling")?;
        assign_at(&c, &tpl, REQUEST_TIMEOUT).context("assigning the ceiling")?;
        let mut next = 0;
        let mut last = Instant::now();
        while next < *end {
            match c.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    next = m.offset() + 1;
                    fetched += u64::from(m.key().is_some());
                    last = Instant::now();
                }
                Some(Err(e)) => bail!("the ceiling reading {changelog}: {e}"),
                None if last.elapsed() > Duration::from_secs(30) => bail!("the ceiling stalled at {next} of {end}"),
                None => {}
            }
        }
    }
    let ceiling_seconds = started.elapsed().as_secs_f64();
    if fetched != opts.keys {
        bail!("the ceiling read {fetched} records, expected {}", opts.keys);
    }
    log(&format!("ceiling (fetch only): {ceiling_seconds:.3} s"));

    // weir: one fresh task per partition, restored to the changelog's end.
    let dir = tempfile::tempdir().context("temporary state directory")?;
    let db = StateDb::open(dir.path())?;
    let config = TaskConfig {
        cache_max_bytes: CACHE_MAX_BYTES,
        idle_advance_after_ms: None,
    };
    let changelogs = vec![(store.to_string(), changelog.clone())];
    let started = Instant::now();
    let mut tasks = Vec::new();
    let mut restored = 0u64;
    for (partition, end) in ends.iter().enumerate() {
        let id = TaskId {
            subtopology: sub,
            partition: partition as i32,
        };
        let task = Task::new(&topology, app, id, &db, config.clone())?;
        let target = TaskCheckpoint {
            inputs: Vec::new(),
            seq: 1,
            changelog: vec![(store.to_string(), *end)],
            origins: Vec::new(),
            changelog_skips: Vec::new(),
        };
        let (task, per_store) = restore::restore_task(&settings, task, &changelogs, &target)
            .with_context(|| format!("restoring task {id}"))?;
        restored += per_store.iter().sum::<u64>();
        tasks.push(task);
    }
    let seconds = started.elapsed().as_secs_f64();
    log(&format!(
        "weir: {restored} records restored in {seconds:.3} s; checking every key"
    ));
    if restored != opts.keys {
        bail!("weir restored {restored} records, the changelog holds {}", opts.keys);
    }
    for i in 0..opts.keys {
        let k = key_of(i);
        let task = &tasks[default_partitioner(&k, PARTITIONS) as usize];
        let got = task.state().read_kv(store, &k)?;
        if got.as_deref() != Some(&value_of(i)[..]) {
            bail!("key {i} restored as {got:?}, expected {:?}", value_of(i));
        }
    }
    let rss = peak_rss_bytes();
    drop(tasks);
    drop(db);
    drop(broker);

    let keys = opts.keys as f64;
    Ok(vec![BenchResult {
        workload: "restore",
        topology: user_clicks::NAME.to_string(),
        events: opts.keys,
        seconds,
        events_per_s: keys / seconds,
        ceiling_events_per_s: keys / ceiling_seconds,
        ratio: ceiling_seconds / seconds,
        peak_rss_bytes: rss,
        latency: None,
        two_hop_ceiling_events_per_s: None,
    }])
}
