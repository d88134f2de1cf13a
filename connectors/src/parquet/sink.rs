//! The sink's poll loop and file life cycle. See the module docs of
//! [`crate::parquet`] for the protocol.

use std::collections::HashMap;
use std::fs::{self, File};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ::parquet::arrow::ArrowWriter;
use ::parquet::basic::Compression;
use ::parquet::file::metadata::KeyValue;
use ::parquet::file::properties::WriterProperties;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

use super::decode::{decode_records, Decoded};
use super::files::{final_name, fsync_dir, scan_dir, tmp_name};
use super::{ParquetSinkConfig, SinkStats, TableSpec};
use crate::kafka::{
    assign_at, flush_producer, validate_topic, Admin, ClientSettings, DeliveryTracker, TopicSpec, UNTRACKED,
};
use crate::{Error, Result};

/// Records taken from the consumer before they are decoded and written.
const BATCH: usize = 10_000;
/// Longest poll, so `stop` and roll deadlines are noticed promptly.
const POLL: Duration = Duration::from_millis(100);
const KAFKA_TIMEOUT: Duration = Duration::from_secs(30);
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(120);
/// Rows per Parquet row group: bounds the memory of an open file.
const ROW_GROUP_ROWS: usize = 128 * 1024;

fn io_error(context: impl std::fmt::Display, e: impl std::fmt::Display) -> Error {
    Error::Io(std::io::Error::other(format!("{context}: {e}")))
}

/// A record copied out of the consumer.
struct Rec {
    offset: i64,
    timestamp: Option<i64>,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
}

/// A file being written.
struct OpenFile {
    writer: ArrowWriter<File>,
    tmp: PathBuf,
    first: i64,
    last: i64,
    records: usize,
    rows: usize,
    dead_letters: usize,
    opened: Instant,
}

/// One source partition.
struct Part {
    table: usize,
    partition: i32,
    /// The next offset this partition has not covered yet.
    next: i64,
    /// Whether any file covers offsets of it (else consumption starts at
    /// the beginning).
    has_files: bool,
    open: Option<OpenFile>,
}

struct Table {
    spec: TableSpec,
    dir: PathBuf,
}

struct Sink {
    config: ParquetSinkConfig,
    stats: Arc<SinkStats>,
    tables: Vec<Table>,
    by_topic: HashMap<String, usize>,
    parts: HashMap<(usize, i32), Part>,
    consumer: BaseConsumer,
    /// The dead-letter producer.
    producer: BaseProducer<DeliveryTracker>,
    props: WriterProperties,
}

pub(crate) fn run(config: ParquetSinkConfig, stats: Arc<SinkStats>) -> Result<()> {
    let mut sink = Sink::start(config, stats)?;
    let result = sink.run_loop();
    match result {
        Ok(()) => sink.shutdown(),
        Err(e) => {
            tracing::error!("parquet sink failed: {e}; open files are left as temporary files");
            Err(e)
        }
    }
}

impl Sink {
    fn start(config: ParquetSinkConfig, stats: Arc<SinkStats>) -> Result<Sink> {
        if config.tables.is_empty() {
            return Err(Error::InvalidArgument(
                "the parquet sink needs at least one table".into(),
            ));
        }
        if config.max_file_rows == 0 {
            return Err(Error::InvalidArgument("max_file_rows must be at least 1".into()));
        }
        if config.roll_interval.is_zero() {
            return Err(Error::InvalidArgument("roll_interval must be positive".into()));
        }
        validate_topic(&config.dlq_topic)?;
        let mut by_topic = HashMap::new();
        let mut tables = Vec::new();
        for (i, spec) in config.tables.iter().enumerate() {
            validate_topic(&spec.topic)?;
            if spec.topic == config.dlq_topic {
                return Err(Error::InvalidArgument(format!(
                    "topic {:?} is both a table and the dead-letter topic",
                    spec.topic
                )));
            }
            if by_topic.insert(spec.topic.clone(), i).is_some() {
                return Err(Error::InvalidArgument(format!(
                    "topic {:?} is listed twice",
                    spec.topic
                )));
            }
            tables.push(Table {
                spec: spec.clone(),
                dir: config.root.join(&spec.topic),
            });
        }

        let mut settings = ClientSettings::new(config.brokers.clone());
        settings.client_id = "weir-parquet-sink".to_string();
        let admin = Admin::new(&settings)?;
        // Source topics that do not exist yet are created with the
        // cluster's default partition count (as `weir produce` would).
        let mut specs = vec![TopicSpec::new(config.dlq_topic.clone(), 1)];
        specs.extend(
            tables
                .iter()
                .map(|t| TopicSpec::with_default_partitions(t.spec.topic.clone())),
        );
        admin.ensure_topics(&specs)?;

        let consumer: BaseConsumer = settings
            .consumer_config(&config.group_id)
            .create()
            .map_err(|e| Error::kafka("creating the parquet sink's consumer", e))?;
        let producer: BaseProducer<DeliveryTracker> = settings
            .producer_config()
            .create_with_context(DeliveryTracker::new())
            .map_err(|e| Error::kafka("creating the dead-letter producer", e))?;

        let mut parts = HashMap::new();
        let mut tpl = TopicPartitionList::new();
        for (i, table) in tables.iter().enumerate() {
            let scan = scan_dir(&table.dir)?;
            let count = admin
                .partition_count(&table.spec.topic)?
                .ok_or_else(|| Error::UnknownTopic(table.spec.topic.clone()))?;
            for (&p, _) in scan.next.range(count..) {
                tracing::warn!(topic = %table.spec.topic, partition = p, "files of a partition the topic does not have");
            }
            for p in 0..count {
                let next = scan.next.get(&p).copied();
                let offset = next.map_or(Offset::Beginning, Offset::Offset);
                tpl.add_partition_offset(&table.spec.topic, p, offset)
                    .map_err(|e| Error::kafka("building the assignment", e))?;
                parts.insert(
                    (i, p),
                    Part {
                        table: i,
                        partition: p,
                        next: next.unwrap_or(0),
                        has_files: next.is_some(),
                        open: None,
                    },
                );
            }
            tracing::info!(
                topic = %table.spec.topic,
                partitions = count,
                files = scan.files,
                removed_tmp = scan.removed_tmp,
                next = ?scan.next,
                "parquet sink resumes from its files"
            );
        }
        assign_at(&consumer, &tpl, KAFKA_TIMEOUT)?;

        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
            .build();
        Ok(Sink {
            config,
            stats,
            tables,
            by_topic,
            parts,
            consumer,
            producer,
            props,
        })
    }

    fn run_loop(&mut self) -> Result<()> {
        let mut batch: Vec<((usize, i32), Vec<Rec>)> = Vec::new();
        while !self.config.stop.load(Ordering::Acquire) {
            let timeout = self
                .next_deadline()
                .map_or(POLL, |d| d.saturating_duration_since(Instant::now()).min(POLL));
            let mut taken = 0;
            let mut wait = timeout;
            while taken < BATCH {
                let Some(msg) = self.consumer.poll(wait) else { break };
                wait = Duration::ZERO;
                let msg = match msg {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!("parquet sink consumer: {e}");
                        continue;
                    }
                };
                taken += 1;
                let Some(&table) = self.by_topic.get(msg.topic()) else {
                    continue;
                };
                let key = (table, msg.partition());
                let rec = Rec {
                    offset: msg.offset(),
                    timestamp: msg.timestamp().to_millis(),
                    key: msg.key().map(<[u8]>::to_vec),
                    value: msg.payload().map(<[u8]>::to_vec),
                };
                match batch.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, recs)) => recs.push(rec),
                    None => batch.push((key, vec![rec])),
                }
            }
            self.stats.records_consumed.fetch_add(taken as u64, Ordering::Relaxed);
            for (key, recs) in batch.drain(..) {
                self.consume(key, recs)?;
            }
            self.roll_expired()?;
            self.producer.poll(Duration::ZERO);
        }
        Ok(())
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.parts
            .values()
            .filter_map(|p| p.open.as_ref().map(|f| f.opened + self.config.roll_interval))
            .min()
    }

    fn roll_expired(&mut self) -> Result<()> {
        let now = Instant::now();
        let interval = self.config.roll_interval;
        let due: Vec<(usize, i32)> = self
            .parts
            .iter()
            .filter(|(_, p)| p.open.as_ref().is_some_and(|f| now >= f.opened + interval))
            .map(|(k, _)| *k)
            .collect();
        for key in due {
            self.finish_file(key)?;
        }
        Ok(())
    }

    /// Writes the records of one partition, in offset order, into its files.
    fn consume(&mut self, key: (usize, i32), mut recs: Vec<Rec>) -> Result<()> {
        let Some(part) = self.parts.get(&key) else {
            tracing::warn!(
                table = key.0,
                partition = key.1,
                "a record of a partition the sink did not assign"
            );
            return Ok(());
        };
        // Never cover an offset twice (a consumer that went back would
        // otherwise duplicate rows).
        let next = part.next;
        let before = recs.len();
        recs.retain(|r| r.offset >= next);
        if recs.len() < before {
            tracing::warn!(
                partition = key.1,
                skipped = before - recs.len(),
                next,
                "skipped records below the covered offset"
            );
        }
        let mut rest = &recs[..];
        while !rest.is_empty() {
            let covered = match &self.parts[&key].open {
                Some(f) => f.records,
                None => {
                    self.open_file(key, rest[0].offset)?;
                    0
                }
            };
            let n = (self.config.max_file_rows - covered).min(rest.len());
            let (chunk, tail) = rest.split_at(n);
            self.write_chunk(key, chunk)?;
            rest = tail;
            if self.parts[&key]
                .open
                .as_ref()
                .is_some_and(|f| f.records >= self.config.max_file_rows)
            {
                self.finish_file(key)?;
            }
        }
        Ok(())
    }

    fn open_file(&mut self, key: (usize, i32), first: i64) -> Result<()> {
        let table = &self.tables[key.0];
        let tmp = table.dir.join(tmp_name(key.1, first));
        let file = File::create(&tmp)?;
        let writer = ArrowWriter::try_new(file, table.spec.schema.clone(), Some(self.props.clone()))
            .map_err(|e| io_error(format!("starting {}", tmp.display()), e))?;
        let part = self.parts.get_mut(&key).expect("part");
        part.open = Some(OpenFile {
            writer,
            tmp,
            first,
            last: first - 1,
            records: 0,
            rows: 0,
            dead_letters: 0,
            opened: Instant::now(),
        });
        Ok(())
    }

    /// Validates and decodes `chunk`, sends the misfits to the dead-letter
    /// topic and writes the rest to the open file.
    fn write_chunk(&mut self, key: (usize, i32), chunk: &[Rec]) -> Result<()> {
        let table = &self.tables[key.0];
        let mut bad: Vec<(usize, String)> = Vec::new();
        let mut skipped = 0usize;
        let mut candidates: Vec<usize> = Vec::with_capacity(chunk.len());
        // Rows the validator normalised, by chunk index.
        let mut normalised: Vec<(usize, Vec<u8>)> = Vec::new();
        for (i, r) in chunk.iter().enumerate() {
            let Some(value) = r.value.as_deref() else {
                bad.push((i, "record has no value".to_string()));
                continue;
            };
            if let Some(validate) = &table.spec.validate {
                let checked = serde_json::from_slice::<serde_json::Value>(value)
                    .map_err(|e| format!("invalid JSON: {e}"))
                    .and_then(|v| validate(&v));
                match checked {
                    Err(_) if !self.config.dead_letter_rejects => {
                        skipped += 1;
                        continue;
                    }
                    Err(e) => {
                        bad.push((i, e));
                        continue;
                    }
                    Ok(Some(row)) => normalised.push((i, row.to_string().into_bytes())),
                    Ok(None) => {}
                }
            }
            candidates.push(i);
        }
        self.stats.rejected.fetch_add(skipped as u64, Ordering::Relaxed);
        let values: Vec<&[u8]> = candidates
            .iter()
            .map(|&i| match normalised.binary_search_by_key(&i, |(j, _)| *j) {
                Ok(n) => normalised[n].1.as_slice(),
                Err(_) => chunk[i].value.as_deref().expect("checked"),
            })
            .collect();
        let Decoded { batch, bad: misfits } = decode_records(&table.spec.schema, &values)
            .map_err(|e| Error::InvalidArgument(format!("decoding records of {}: {e}", table.spec.topic)))?;
        bad.extend(misfits.into_iter().map(|(j, e)| (candidates[j], e)));
        bad.sort_unstable_by_key(|(i, _)| *i);

        let topic = table.spec.topic.clone();
        for (i, error) in &bad {
            let r = &chunk[*i];
            tracing::debug!(%topic, partition = key.1, offset = r.offset, %error, "dead letter");
            self.send_dead_letter(&topic, key.1, r, error)?;
        }
        self.stats.dlq_records.fetch_add(bad.len() as u64, Ordering::Relaxed);

        let part = self.parts.get_mut(&key).expect("part");
        let file = part.open.as_mut().expect("an open file");
        if let Some(batch) = batch {
            file.writer
                .write(&batch)
                .map_err(|e| io_error(format!("writing {}", file.tmp.display()), e))?;
            file.rows += batch.num_rows();
        }
        file.records += chunk.len();
        file.dead_letters += bad.len();
        file.last = chunk.last().expect("non-empty chunk").offset;
        part.next = file.last + 1;
        Ok(())
    }

    fn send_dead_letter(&self, topic: &str, partition: i32, r: &Rec, error: &str) -> Result<()> {
        let partition_s = partition.to_string();
        let offset_s = r.offset.to_string();
        let headers = OwnedHeaders::new_with_capacity(4)
            .insert(Header {
                key: "error",
                value: Some(error.as_bytes()),
            })
            .insert(Header {
                key: "topic",
                value: Some(topic.as_bytes()),
            })
            .insert(Header {
                key: "partition",
                value: Some(partition_s.as_bytes()),
            })
            .insert(Header {
                key: "offset",
                value: Some(offset_s.as_bytes()),
            });
        // The dead-letter topic has one partition: one ordered log.
        let mut record = BaseRecord::<[u8], [u8], usize>::with_opaque_to(&self.config.dlq_topic, UNTRACKED)
            .partition(0)
            .headers(headers);
        if let Some(k) = r.key.as_deref() {
            record = record.key(k);
        }
        if let Some(v) = r.value.as_deref() {
            record = record.payload(v);
        }
        if let Some(ts) = r.timestamp {
            record = record.timestamp(ts);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    crate::kafka::serve_deliveries_after(&self.producer, Duration::from_millis(5));
                    record = back;
                }
                Err((e, _)) => return Err(Error::kafka(format!("producing to {}", self.config.dlq_topic), e)),
            }
        }
    }

    /// Waits until every dead letter sent so far is acknowledged.
    fn flush_dead_letters(&self) -> Result<()> {
        flush_producer(&self.producer, DELIVERY_TIMEOUT)?;
        self.producer.context().check(&self.config.dlq_topic)
    }

    /// Finishes the open file of `key`: dead letters delivered, footer
    /// written and synced, renamed, directory synced, offset committed.
    fn finish_file(&mut self, key: (usize, i32)) -> Result<()> {
        let Some(mut file) = self.parts.get_mut(&key).and_then(|p| p.open.take()) else {
            return Ok(());
        };
        self.flush_dead_letters()?;
        let table = &self.tables[key.0];
        let meta = [
            ("weir.topic", table.spec.topic.clone()),
            ("weir.partition", key.1.to_string()),
            ("weir.first_offset", file.first.to_string()),
            ("weir.last_offset", file.last.to_string()),
            ("weir.records", file.records.to_string()),
            ("weir.dead_letters", file.dead_letters.to_string()),
        ];
        for (k, v) in meta {
            file.writer.append_key_value_metadata(KeyValue::new(k.to_string(), v));
        }
        file.writer
            .finish()
            .map_err(|e| io_error(format!("finishing {}", file.tmp.display()), e))?;
        file.writer.inner().sync_all()?;
        drop(file.writer);
        let name = final_name(key.1, file.first, file.last);
        let path = table.dir.join(&name);
        fs::rename(&file.tmp, &path)?;
        fsync_dir(&table.dir)?;
        let bytes = fs::metadata(&path)?.len();

        self.stats.rows_written.fetch_add(file.rows as u64, Ordering::Relaxed);
        self.stats.files_written.fetch_add(1, Ordering::Relaxed);
        self.stats.bytes_written.fetch_add(bytes, Ordering::Relaxed);
        let part = self.parts.get_mut(&key).expect("part");
        part.has_files = true;
        tracing::info!(
            topic = %table.spec.topic,
            file = %name,
            rows = file.rows,
            dead_letters = file.dead_letters,
            bytes,
            "parquet file written"
        );
        self.commit(&[key], CommitMode::Async);
        Ok(())
    }

    /// Commits the covered offsets of `keys` to the group (visibility only:
    /// a failure is logged, never fatal).
    fn commit(&self, keys: &[(usize, i32)], mode: CommitMode) {
        let mut tpl = TopicPartitionList::new();
        for key in keys {
            let part = &self.parts[key];
            if !part.has_files {
                continue;
            }
            let topic = &self.tables[part.table].spec.topic;
            if let Err(e) = tpl.add_partition_offset(topic, part.partition, Offset::Offset(part.next)) {
                tracing::warn!("building the offset commit: {e}");
                return;
            }
        }
        if tpl.count() == 0 {
            return;
        }
        if let Err(e) = self.consumer.commit(&tpl, mode) {
            tracing::warn!("committing the parquet sink's offsets: {e}");
        }
    }

    /// Finishes every open file and commits synchronously.
    fn shutdown(mut self) -> Result<()> {
        let mut keys: Vec<(usize, i32)> = self.parts.keys().copied().collect();
        keys.sort_unstable();
        for &key in &keys {
            self.finish_file(key)?;
        }
        self.flush_dead_letters()?;
        self.commit(&keys, CommitMode::Sync);
        tracing::info!(root = %self.config.root.display(), "parquet sink stopped");
        Ok(())
    }
}
