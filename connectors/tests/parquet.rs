//! The Parquet sink against the embedded broker: exact row sets with typed
//! columns, dead letters, a real crash (SIGKILL of a child process running
//! the sink) and restart, and file rolling.
//!
//! Every wait is on a condition with a deadline; nothing sleeps and hopes.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int32Type, Int64Type, TimestampMicrosecondType, TimestampMillisecondType};
use arrow_array::{Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use weir_connectors::kafka::{assign_at, flush_producer, ClientSettings, EmbeddedBroker};
use weir_connectors::parquet::{list_files, run, FileInfo, ParquetSinkConfig, SinkStats, TableSpec};

/// Generous: bounds a hang, does not measure speed.
const DEADLINE: Duration = Duration::from_secs(90);
/// 2026-11-21T10:00:00Z in epoch milliseconds.
const BASE_MS: i64 = 1_795_255_200_000;
const DLQ: &str = "sink-dlq";

// ---------------------------------------------------------------- helpers

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `BASE_MS + ms` as ISO-8601 with milliseconds and `Z` (within the day).
fn iso(ms: i64) -> String {
    assert!((0..14 * 3_600_000).contains(&ms));
    let (h, rest) = (10 + ms / 3_600_000, ms % 3_600_000);
    let (m, rest) = (rest / 60_000, rest % 60_000);
    let (s, milli) = (rest / 1000, rest % 1000);
    format!("2026-11-21T{h:02}:{m:02}:{s:02}.{milli:03}Z")
}

fn ts_ms() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

fn clicks_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("event_type", DataType::Utf8, false),
        Field::new("user_id", DataType::Int32, false),
        Field::new("item_id", DataType::Int32, false),
        Field::new("timestamp", ts_ms(), false),
        Field::new("page_url", DataType::Utf8, true),
        Field::new("click_duration", DataType::Float64, false),
    ]))
}

fn views_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("event_type", DataType::Utf8, false),
        Field::new("user_id", DataType::Int64, false),
        Field::new("item_id", DataType::Int32, false),
        Field::new(
            "timestamp",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("view_duration", DataType::Float64, false),
        Field::new("device_type", DataType::Utf8, false),
    ]))
}

/// A schema with a unique sequence number per record (crash and roll tests).
fn events_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("seq", DataType::Int64, false),
        Field::new("timestamp", ts_ms(), false),
        Field::new("note", DataType::Utf8, true),
    ]))
}

fn click_validator(v: &serde_json::Value) -> Result<Option<serde_json::Value>, String> {
    match v.get("event_type").and_then(|e| e.as_str()) {
        Some("click") => Ok(None),
        _ => Err("event_type must be \"click\"".to_string()),
    }
}

/// A record to produce: partition, key, value.
#[derive(Clone, Debug)]
struct In {
    partition: i32,
    key: String,
    value: Vec<u8>,
}

/// Produces `records` in order (so offsets per partition follow the order)
/// and returns the offset each got (fresh topics start at 0, so these are
/// counted per partition on top of `start`).
fn produce(brokers: &str, topic: &str, records: &[In], start: &BTreeMap<i32, i64>) -> Vec<i64> {
    let producer: BaseProducer = ClientSettings::new(brokers).producer_config().create().unwrap();
    let mut next = start.clone();
    let mut offsets = Vec::new();
    for r in records {
        let o = next.entry(r.partition).or_insert(0);
        offsets.push(*o);
        *o += 1;
        producer
            .send(
                BaseRecord::to(topic)
                    .partition(r.partition)
                    .key(r.key.as_bytes())
                    .payload(&r.value),
            )
            .unwrap();
    }
    flush_producer(&producer, DEADLINE).unwrap();
    // The broker has exactly these records now.
    for (p, o) in &next {
        let (_, high) = producer.client().fetch_watermarks(topic, *p, DEADLINE).unwrap();
        assert_eq!(high, *o, "partition {p} of {topic}");
    }
    offsets
}

/// A row as strings, column by column (timestamps as integer epoch units).
fn rows_of(batch: &RecordBatch) -> Vec<Vec<String>> {
    (0..batch.num_rows())
        .map(|r| {
            batch
                .columns()
                .iter()
                .map(|c| {
                    if c.is_null(r) {
                        return "null".to_string();
                    }
                    match c.data_type() {
                        DataType::Utf8 => c.as_string::<i32>().value(r).to_string(),
                        DataType::Int32 => c.as_primitive::<Int32Type>().value(r).to_string(),
                        DataType::Int64 => c.as_primitive::<Int64Type>().value(r).to_string(),
                        DataType::Float64 => format!("{:?}", c.as_primitive::<Float64Type>().value(r)),
                        DataType::Timestamp(TimeUnit::Millisecond, _) => {
                            c.as_primitive::<TimestampMillisecondType>().value(r).to_string()
                        }
                        DataType::Timestamp(TimeUnit::Microsecond, _) => {
                            c.as_primitive::<TimestampMicrosecondType>().value(r).to_string()
                        }
                        other => panic!("unexpected column type {other}"),
                    }
                })
                .collect()
        })
        .collect()
}

/// Reads one file with the parquet crate's Arrow reader.
fn read_file(path: &Path) -> (SchemaRef, Vec<Vec<String>>, BTreeMap<String, String>) {
    let builder = ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap()).unwrap();
    let schema = builder.schema().clone();
    let kv: BTreeMap<String, String> = builder
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .into_iter()
        .flatten()
        .filter(|kv| kv.key.starts_with("weir."))
        .map(|kv| (kv.key.clone(), kv.value.clone().unwrap_or_default()))
        .collect();
    let mut rows = Vec::new();
    for batch in builder.build().unwrap() {
        rows.extend(rows_of(&batch.unwrap()));
    }
    (schema, rows, kv)
}

/// All rows of `topic`'s files, sorted.
fn table_rows(files: &[FileInfo], topic: &str) -> Vec<Vec<String>> {
    let mut rows: Vec<Vec<String>> = files
        .iter()
        .filter(|f| f.topic == topic)
        .flat_map(|f| read_file(&f.path).1)
        .collect();
    rows.sort();
    rows
}

/// Per partition of `topic`, the files' ranges must be contiguous from 0
/// and end at `last[p]`.
fn assert_contiguous(files: &[FileInfo], topic: &str, last: &BTreeMap<i32, i64>) {
    for (&p, &end) in last {
        let mut ranges: Vec<(i64, i64)> = files
            .iter()
            .filter(|f| f.topic == topic && f.partition == p)
            .map(|f| (f.first_offset, f.last_offset))
            .collect();
        ranges.sort();
        let mut expect = 0;
        for (first, last) in &ranges {
            assert_eq!(*first, expect, "{topic} p{p}: ranges {ranges:?}");
            expect = last + 1;
        }
        assert_eq!(expect, end + 1, "{topic} p{p}: ranges {ranges:?}");
    }
}

fn tmp_files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(dirs) = std::fs::read_dir(root) {
        for d in dirs.flatten() {
            if let Ok(files) = std::fs::read_dir(d.path()) {
                out.extend(
                    files
                        .flatten()
                        .map(|f| f.path())
                        .filter(|p| p.to_string_lossy().ends_with(".tmp")),
                );
            }
        }
    }
    out.sort();
    out
}

/// A dead letter as read back.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Dead {
    topic: String,
    partition: i32,
    offset: i64,
    key: String,
    value: Vec<u8>,
    error: String,
}

/// Every record of the (one-partition) dead-letter topic.
fn read_dlq(brokers: &str) -> Vec<Dead> {
    let consumer: BaseConsumer = ClientSettings::new(brokers)
        .standalone_consumer_config()
        .create()
        .unwrap();
    let (_, high) = consumer.fetch_watermarks(DLQ, 0, DEADLINE).unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(DLQ, 0, Offset::Beginning).unwrap();
    assign_at(&consumer, &tpl, DEADLINE).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + DEADLINE;
    while (out.len() as i64) < high {
        assert!(Instant::now() < deadline, "timed out reading the dead letters");
        let Some(m) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let m = m.unwrap();
        let mut h = BTreeMap::new();
        for hd in m.headers().expect("dead letters have headers").iter() {
            h.insert(
                hd.key.to_string(),
                String::from_utf8(hd.value.unwrap().to_vec()).unwrap(),
            );
        }
        out.push(Dead {
            topic: h["topic"].clone(),
            partition: h["partition"].parse().unwrap(),
            offset: h["offset"].parse().unwrap(),
            key: String::from_utf8(m.key().unwrap().to_vec()).unwrap(),
            value: m.payload().unwrap_or_default().to_vec(),
            error: h["error"].clone(),
        });
    }
    out
}

/// A sink running on a thread; stopped and joined on drop.
struct Running {
    stop: Arc<AtomicBool>,
    stats: Arc<SinkStats>,
    handle: Option<JoinHandle<weir_connectors::Result<()>>>,
}

impl Running {
    fn start(config: ParquetSinkConfig) -> Running {
        let stop = config.stop.clone();
        let stats = Arc::new(SinkStats::default());
        let s = stats.clone();
        let handle = std::thread::spawn(move || run(config, s));
        Running {
            stop,
            stats,
            handle: Some(handle),
        }
    }

    fn stat(&self, f: impl Fn(&SinkStats) -> &std::sync::atomic::AtomicU64) -> u64 {
        f(&self.stats).load(Ordering::Relaxed)
    }

    fn stop(mut self) {
        self.stop.store(true, Ordering::Release);
        self.handle
            .take()
            .unwrap()
            .join()
            .expect("sink thread")
            .expect("sink returns Ok after stop");
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn config(brokers: &str, root: &Path, tables: Vec<TableSpec>) -> ParquetSinkConfig {
    let mut c = ParquetSinkConfig::new(brokers, root, tables);
    c.group_id = "parquet-test".into();
    c.dlq_topic = DLQ.into();
    c
}

// ------------------------------------------------------------------ tests

#[test]
fn valid_rows_land_typed_and_exactly_once_and_misfits_go_to_the_dlq() {
    let broker = EmbeddedBroker::start(3).unwrap();
    let brokers = broker.bootstrap_servers();
    broker.create_topic("clicks", 3).unwrap();
    broker.create_topic("views", 2).unwrap();
    let root = tempfile::tempdir().unwrap();

    // clicks: 300 records over 3 partitions; six do not fit.
    let mut clicks = Vec::new();
    let mut click_rows = Vec::new();
    let mut click_bad: BTreeSet<usize> = BTreeSet::new();
    for i in 0..300usize {
        let (user, item) = (i % 1000 + 1, i % 500 + 1);
        let ms = i as i64 * 1_337;
        let dur = i as f64 * 0.25;
        let good = format!(
            r#"{{"event_type":"click","user_id":{user},"item_id":{item},"timestamp":"{}","page_url":"/item/{item}","click_duration":{dur:?}}}"#,
            iso(ms)
        );
        let value = match i {
            10 => r#"{"event_type":"click","user_id":"#.to_string(), // bad JSON
            50 => format!(
                r#"{{"event_type":"click","item_id":1,"timestamp":"{}","click_duration":1.0}}"#,
                iso(ms)
            ), // missing user_id
            100 => good.replace(&format!(r#""user_id":{user}"#), r#""user_id":"abc""#), // wrong type
            150 => good.replace(r#""click_duration""#, r#""referrer":"x","click_duration""#), // unknown field
            200 => good.replace(r#""event_type":"click""#, r#""event_type":"view""#), // validator
            299 => "not json at all".to_string(),                    // the last record of partition 2
            _ => {
                click_rows.push(vec![
                    "click".to_string(),
                    user.to_string(),
                    item.to_string(),
                    (BASE_MS + ms).to_string(),
                    format!("/item/{item}"),
                    format!("{dur:?}"),
                ]);
                good
            }
        };
        if matches!(i, 10 | 50 | 100 | 150 | 200 | 299) {
            click_bad.insert(i);
        }
        clicks.push(In {
            partition: (i % 3) as i32,
            key: user.to_string(),
            value: value.into_bytes(),
        });
    }
    // views: 200 records over 2 partitions; three do not fit.
    let mut views = Vec::new();
    let mut view_rows = Vec::new();
    let mut view_bad = BTreeSet::new();
    for i in 0..200usize {
        let ms = i as i64 * 2_001;
        let device = ["mobile", "desktop", "tablet"][i % 3];
        let good = format!(
            r#"{{"event_type":"view","user_id":{},"item_id":{},"timestamp":"{}","view_duration":{:?},"device_type":"{device}"}}"#,
            i + 1,
            i % 500 + 1,
            iso(ms),
            i as f64 / 8.0
        );
        let value = match i {
            7 => good.replace(&format!(r#""device_type":"{device}""#), r#""device_type":5"#),
            77 => good.replace(&iso(ms), "not a time"),
            199 => format!(
                r#"{{"event_type":"view","user_id":1,"item_id":1,"view_duration":1.0,"device_type":"{device}"}}"#
            ),
            _ => {
                view_rows.push(vec![
                    "view".to_string(),
                    (i + 1).to_string(),
                    (i % 500 + 1).to_string(),
                    ((BASE_MS + ms) * 1000).to_string(),
                    format!("{:?}", i as f64 / 8.0),
                    device.to_string(),
                ]);
                good
            }
        };
        if matches!(i, 7 | 77 | 199) {
            view_bad.insert(i);
        }
        views.push(In {
            partition: (i % 2) as i32,
            key: (i + 1).to_string(),
            value: value.into_bytes(),
        });
    }
    let click_offsets = produce(&brokers, "clicks", &clicks, &BTreeMap::new());
    let view_offsets = produce(&brokers, "views", &views, &BTreeMap::new());

    let mut cfg = config(
        &brokers,
        root.path(),
        vec![
            TableSpec::new("clicks", clicks_schema()).with_validator(click_validator),
            TableSpec::new("views", views_schema()),
        ],
    );
    cfg.roll_interval = Duration::from_millis(300);
    let sink = Running::start(cfg);
    let (good, bad) = (
        (click_rows.len() + view_rows.len()) as u64,
        (click_bad.len() + view_bad.len()) as u64,
    );
    wait_until("every record written or dead-lettered", || {
        // `>=`: a bug that writes too much fails the exact checks below
        // at once instead of timing out here.
        sink.stat(|s| &s.rows_written) >= good && sink.stat(|s| &s.dlq_records) >= bad
    });
    sink.stop();

    let files = list_files(root.path()).unwrap();
    assert!(tmp_files(root.path()).is_empty());
    // Exactly the valid rows, typed.
    click_rows.sort();
    view_rows.sort();
    assert_eq!(table_rows(&files, "clicks"), click_rows);
    assert_eq!(table_rows(&files, "views"), view_rows);
    let rows_in_files: u64 = files.iter().map(|f| f.rows).sum();
    assert_eq!(rows_in_files, good);
    // Every consumed offset is covered, the dead-lettered last record of
    // clicks partition 2 (offset 99) included.
    assert_contiguous(&files, "clicks", &[(0, 99), (1, 99), (2, 99)].into());
    assert_contiguous(&files, "views", &[(0, 99), (1, 99)].into());

    // Record 3 (user 4): "2026-11-21T10:00:04.011Z" is read back as epoch millis.
    assert!(table_rows(&files, "clicks")
        .iter()
        .any(|r| r[1] == "4" && r[3] == "1795255204011"));
    let first_click = files.iter().find(|f| f.topic == "clicks" && f.partition == 0).unwrap();
    let (schema, _, kv) = read_file(&first_click.path);
    assert_eq!(schema.field_with_name("timestamp").unwrap().data_type(), &ts_ms());
    assert_eq!(schema.field_with_name("user_id").unwrap().data_type(), &DataType::Int32);
    assert_eq!(
        schema.field_with_name("click_duration").unwrap().data_type(),
        &DataType::Float64
    );
    assert_eq!(kv["weir.first_offset"], first_click.first_offset.to_string());
    assert_eq!(kv["weir.last_offset"], first_click.last_offset.to_string());
    assert_eq!(kv["weir.topic"], "clicks");
    let (schema, _, _) = read_file(&files.iter().find(|f| f.topic == "views").unwrap().path);
    assert_eq!(
        schema.field_with_name("timestamp").unwrap().data_type(),
        &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
    );

    // The dead-letter topic holds exactly the misfits, with their headers.
    let mut dead = read_dlq(&brokers);
    dead.sort();
    let mut expected: Vec<(String, i32, i64, String, Vec<u8>)> = click_bad
        .iter()
        .map(|&i| {
            (
                "clicks".to_string(),
                clicks[i].partition,
                click_offsets[i],
                clicks[i].key.clone(),
                clicks[i].value.clone(),
            )
        })
        .chain(view_bad.iter().map(|&i| {
            (
                "views".to_string(),
                views[i].partition,
                view_offsets[i],
                views[i].key.clone(),
                views[i].value.clone(),
            )
        }))
        .collect();
    expected.sort();
    let got: Vec<(String, i32, i64, String, Vec<u8>)> = dead
        .iter()
        .map(|d| (d.topic.clone(), d.partition, d.offset, d.key.clone(), d.value.clone()))
        .collect();
    assert_eq!(got, expected);
    let error_of = |topic: &str, i: usize, items: &[In], offsets: &[i64]| {
        dead.iter()
            .find(|d| d.topic == topic && d.partition == items[i].partition && d.offset == offsets[i])
            .unwrap()
            .error
            .clone()
    };
    assert_eq!(
        error_of("clicks", 200, &clicks, &click_offsets),
        "event_type must be \"click\""
    );
    assert!(error_of("clicks", 50, &clicks, &click_offsets).contains("user_id"));
    assert!(error_of("clicks", 100, &clicks, &click_offsets).contains("abc"));
    assert!(error_of("clicks", 150, &clicks, &click_offsets).contains("referrer"));
    assert!(error_of("views", 199, &views, &view_offsets).contains("timestamp"));
    assert!(dead.iter().all(|d| !d.error.is_empty()));

    // The group's offsets were committed after the files (for lag tools).
    let consumer: BaseConsumer = ClientSettings::new(&brokers)
        .consumer_config("parquet-test")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..3 {
        tpl.add_partition("clicks", p);
    }
    let committed = consumer.committed_offsets(tpl, DEADLINE).unwrap();
    for e in committed.elements() {
        assert_eq!(
            e.offset(),
            Offset::Offset(100),
            "committed offset of clicks p{}",
            e.partition()
        );
    }
}

/// Environment variables of the child process that runs the sink in
/// [`a_killed_sink_resumes_without_losing_or_duplicating_a_row`].
const CHILD_BROKERS: &str = "WEIR_PARQUET_TEST_CHILD_BROKERS";
const CHILD_ROOT: &str = "WEIR_PARQUET_TEST_CHILD_ROOT";

fn events_table() -> TableSpec {
    TableSpec::new("events", events_schema())
}

/// Not a test on its own: the crash test runs this test binary again with
/// only this test selected and the environment above set, and kills it.
/// Without the environment it does nothing.
#[test]
fn crash_child_entry() {
    let (Ok(brokers), Ok(root)) = (std::env::var(CHILD_BROKERS), std::env::var(CHILD_ROOT)) else {
        return;
    };
    let mut cfg = config(&brokers, Path::new(&root), vec![events_table()]);
    cfg.max_file_rows = 50;
    cfg.roll_interval = Duration::from_secs(3600);
    // Never outlive a parent that died: stop by itself after the deadline.
    let stop = cfg.stop.clone();
    std::thread::spawn(move || {
        std::thread::sleep(DEADLINE * 2);
        stop.store(true, Ordering::Release);
    });
    run(cfg, Arc::new(SinkStats::default())).unwrap();
}

fn event(seq: i64, partition: i32, bad: bool) -> (In, Option<Vec<String>>) {
    let ms = seq * 10;
    let value = if bad {
        format!(r#"{{"seq":{seq},"timestamp":"{}","note":"bad","extra":true}}"#, iso(ms))
    } else {
        format!(r#"{{"seq":{seq},"timestamp":"{}","note":"n{seq}"}}"#, iso(ms))
    };
    let row = (!bad).then(|| vec![seq.to_string(), (BASE_MS + ms).to_string(), format!("n{seq}")]);
    (
        In {
            partition,
            key: seq.to_string(),
            value: value.into_bytes(),
        },
        row,
    )
}

#[test]
fn a_killed_sink_resumes_without_losing_or_duplicating_a_row() {
    let broker = EmbeddedBroker::start(3).unwrap();
    let brokers = broker.bootstrap_servers();
    broker.create_topic("events", 3).unwrap();
    let root = tempfile::tempdir().unwrap();

    // Wave 1: 120 records per partition. Bad ones: partition 1 offset 20
    // (in a file finished before the crash) and partition 0 offset 110 (in
    // the file the crash interrupts).
    let mut records = Vec::new();
    let mut rows = Vec::new();
    let mut bad: BTreeSet<(i32, i64)> = BTreeSet::new();
    let mut seq = 0;
    for o in 0..120i64 {
        for p in 0..3 {
            let is_bad = (p, o) == (1, 20) || (p, o) == (0, 110);
            let (r, row) = event(seq, p, is_bad);
            seq += 1;
            records.push(r);
            rows.extend(row);
            if is_bad {
                bad.insert((p, o));
            }
        }
    }
    produce(&brokers, "events", &records, &BTreeMap::new());

    // The sink runs in a child process: 50 records per file and no time
    // roll, so it finishes two files per partition and keeps a third open.
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["crash_child_entry", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_BROKERS, &brokers)
        .env(CHILD_ROOT, root.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("two finished files per partition and an open one", || {
        list_files(root.path()).unwrap().len() == 6 && tmp_files(root.path()).len() == 3
    });
    child.kill().unwrap(); // SIGKILL: nothing is finished or cleaned up
    child.wait().unwrap();
    let stale = tmp_files(root.path());
    assert_eq!(stale.len(), 3, "the crash left the open files behind");
    let before: Vec<(i32, i64, i64)> = list_files(root.path())
        .unwrap()
        .iter()
        .map(|f| (f.partition, f.first_offset, f.last_offset))
        .collect();
    assert_eq!(
        before,
        vec![
            (0, 0, 49),
            (0, 50, 99),
            (1, 0, 49),
            (1, 50, 99),
            (2, 0, 49),
            (2, 50, 99)
        ]
    );

    // Wave 2 while the sink is down: 30 more per partition, one bad.
    let mut records2 = Vec::new();
    for o in 120..150i64 {
        for p in 0..3 {
            let is_bad = (p, o) == (2, 149);
            let (r, row) = event(seq, p, is_bad);
            seq += 1;
            records2.push(r);
            rows.extend(row);
            if is_bad {
                bad.insert((p, o));
            }
        }
    }
    produce(&brokers, "events", &records2, &[(0, 120), (1, 120), (2, 120)].into());

    // Restart in-process; it must resume at offset 100 of every partition.
    let mut cfg = config(&brokers, root.path(), vec![events_table()]);
    cfg.max_file_rows = 50;
    cfg.roll_interval = Duration::from_millis(300);
    let sink = Running::start(cfg);
    let total_rows = rows.len() as u64;
    wait_until("all rows in files", || {
        list_files(root.path()).unwrap().iter().map(|f| f.rows).sum::<u64>() >= total_rows
    });
    sink.stop();

    for s in &stale {
        assert!(!s.exists(), "{} was not removed", s.display());
    }
    assert!(tmp_files(root.path()).is_empty());
    let files = list_files(root.path()).unwrap();
    assert_contiguous(&files, "events", &[(0, 149), (1, 149), (2, 149)].into());
    // Every valid record exactly once (seq is unique per record).
    rows.sort();
    assert_eq!(table_rows(&files, "events"), rows);
    // Dead letters: every bad record at least once (one interrupted by the
    // crash may be there twice), nothing else.
    let dead = read_dlq(&brokers);
    let dead_set: BTreeSet<(i32, i64)> = dead.iter().map(|d| (d.partition, d.offset)).collect();
    assert_eq!(dead_set, bad);
    assert!(dead.len() <= bad.len() + 1, "{dead:?}");
}

#[test]
fn files_roll_at_the_row_limit_with_contiguous_ranges() {
    let broker = EmbeddedBroker::start(2).unwrap();
    let brokers = broker.bootstrap_servers();
    broker.create_topic("events", 2).unwrap();
    let root = tempfile::tempdir().unwrap();
    let mut records = Vec::new();
    let mut rows = Vec::new();
    for seq in 0..200 {
        let (r, row) = event(seq, (seq % 2) as i32, seq == 199);
        records.push(r);
        rows.extend(row);
    }
    produce(&brokers, "events", &records, &BTreeMap::new());

    let mut cfg = config(&brokers, root.path(), vec![events_table()]);
    cfg.max_file_rows = 25;
    cfg.roll_interval = Duration::from_secs(3600);
    let sink = Running::start(cfg);
    // 100 records per partition, 25 per file: all four files roll by count.
    wait_until("eight files", || sink.stat(|s| &s.files_written) == 8);
    sink.stop();

    let files = list_files(root.path()).unwrap();
    let ranges: Vec<(i32, i64, i64, u64)> = files
        .iter()
        .map(|f| (f.partition, f.first_offset, f.last_offset, f.rows))
        .collect();
    let mut expected = Vec::new();
    for p in 0..2 {
        for k in 0..4 {
            // The last record of partition 1 (seq 199, offset 99) was bad.
            let rows = if (p, k) == (1, 3) { 24 } else { 25 };
            expected.push((p, k * 25, k * 25 + 24, rows));
        }
    }
    assert_eq!(ranges, expected);
    rows.sort();
    assert_eq!(table_rows(&files, "events"), rows);
}

#[test]
fn files_roll_on_time_while_the_sink_runs() {
    let broker = EmbeddedBroker::start(2).unwrap();
    let brokers = broker.bootstrap_servers();
    broker.create_topic("events", 2).unwrap();
    let root = tempfile::tempdir().unwrap();

    let mut cfg = config(&brokers, root.path(), vec![events_table()]);
    cfg.roll_interval = Duration::from_millis(300);
    let sink = Running::start(cfg);
    let mut rows = Vec::new();
    let mut seq = 0;
    let mut next: BTreeMap<i32, i64> = [(0, 0), (1, 0)].into();
    for wave in 1..=3u64 {
        let mut records = Vec::new();
        for _ in 0..10 {
            let (r, row) = event(seq, (seq % 2) as i32, false);
            records.push(r);
            rows.extend(row);
            seq += 1;
        }
        produce(&brokers, "events", &records, &next);
        for n in next.values_mut() {
            *n += 5;
        }
        // Each wave becomes visible without a stop and without reaching the
        // row limit: only the roll interval can finish those files.
        wait_until("the wave's rows in files", || {
            sink.stat(|s| &s.rows_written) == wave * 10
        });
    }
    let files = list_files(root.path()).unwrap();
    sink.stop();
    assert!(files.len() >= 6, "{files:?}");
    assert_contiguous(&files, "events", &[(0, 14), (1, 14)].into());
    rows.sort();
    assert_eq!(table_rows(&files, "events"), rows);
}

#[test]
fn a_range_of_only_dead_letters_becomes_an_empty_file_and_is_not_dead_lettered_again() {
    let broker = EmbeddedBroker::start(1).unwrap();
    let brokers = broker.bootstrap_servers();
    broker.create_topic("events", 1).unwrap();
    let root = tempfile::tempdir().unwrap();
    let bad: Vec<In> = (0..3).map(|seq| event(seq, 0, true).0).collect();
    produce(&brokers, "events", &bad, &BTreeMap::new());

    let start = || {
        let mut cfg = config(&brokers, root.path(), vec![events_table()]);
        cfg.roll_interval = Duration::from_millis(200);
        Running::start(cfg)
    };
    let sink = start();
    wait_until("the empty file", || sink.stat(|s| &s.files_written) >= 1);
    sink.stop();
    let files = list_files(root.path()).unwrap();
    assert_eq!(
        files
            .iter()
            .map(|f| (f.first_offset, f.last_offset, f.rows))
            .collect::<Vec<_>>(),
        vec![(0, 2, 0)]
    );
    let (schema, rows, kv) = read_file(&files[0].path);
    assert_eq!(schema.fields().len(), 3);
    assert!(rows.is_empty());
    assert_eq!(kv["weir.dead_letters"], "3");

    // A restart continues after the empty file's range.
    let (good, row) = event(3, 0, false);
    produce(&brokers, "events", &[good], &[(0, 3)].into());
    let sink = start();
    wait_until("the good row", || sink.stat(|s| &s.rows_written) >= 1);
    assert_eq!(sink.stat(|s| &s.dlq_records), 0);
    sink.stop();
    let files = list_files(root.path()).unwrap();
    assert_eq!(
        files
            .iter()
            .map(|f| (f.first_offset, f.last_offset, f.rows))
            .collect::<Vec<_>>(),
        vec![(0, 2, 0), (3, 3, 1)]
    );
    assert_eq!(table_rows(&files, "events"), vec![row.unwrap()]);
    let dead: Vec<i64> = read_dlq(&brokers).iter().map(|d| d.offset).collect();
    assert_eq!(dead, vec![0, 1, 2]);
}
