//! The Parquet sink: JSON records from Kafka topics into Parquet files, one
//! directory per topic, every record exactly once across any crash.
//!
//! # What it writes
//! For each [`TableSpec`] (a topic and an Arrow schema) the sink writes
//! `{root}/{topic}/p{partition}-{first:020}-{last:020}.parquet`, where
//! `first..=last` is the inclusive range of partition offsets the file
//! *covers*: every record of that range is either a row of the file or a
//! record on the dead-letter topic. The range is also in the file's
//! key-value metadata (`weir.topic`, `weir.partition`, `weir.first_offset`,
//! `weir.last_offset`, `weir.records`, `weir.dead_letters`). Files are
//! SNAPPY-compressed with Arrow's type mapping (an Arrow
//! `Timestamp(Millisecond, "UTC")` column becomes Parquet
//! `TIMESTAMP(MILLIS, isAdjustedToUTC=true)`), so pyarrow, DuckDB and
//! parquet-cli read them as typed columns.
//!
//! Records are decoded by arrow-json in strict mode, so "fits the schema"
//! means what arrow-json accepts: one JSON object with no field outside the
//! schema, every non-nullable field present and non-null, values that
//! arrow-json converts to the column type (timestamps from ISO-8601 / RFC
//! 3339 strings; note that it also parses numeric strings into number
//! columns and truncates floats into integer columns). Anything stricter
//! (`event_type == "click"`, ranges) belongs in the table's [`Validator`].
//! A record that does not fit goes to the dead-letter topic with the
//! original key and value and the headers `error`, `topic`, `partition`,
//! `offset` (the same as the stream threads' dead letters).
//!
//! A file rolls (is finished and made visible) when it has covered
//! [`ParquetSinkConfig::max_file_rows`] records or
//! [`ParquetSinkConfig::roll_interval`] after its first record, whichever
//! comes first. Rows, not bytes, bound the size: a row count is exact at
//! every moment, while Arrow's in-memory size estimate is not the file size.
//!
//! # Exactly once: the files are the source of truth
//! A file is written under a temporary name (`.p{partition}-{first}.parquet.tmp`,
//! hidden from `*.parquet` globs), and rolled by: (1) waiting until every
//! dead letter sent so far is acknowledged by the cluster, (2) writing the
//! footer and `fsync`ing the file, (3) renaming it to its final name and
//! `fsync`ing the directory, and only then (4) committing the next offset to
//! the consumer group (asynchronously, for lag tools; nothing reads it back).
//!
//! At start the sink deletes every temporary file, takes per partition
//! `next = max(last) + 1` over the final file names, and *assigns* itself
//! every partition of its topics at exactly those offsets (a partition with
//! no file: from the beginning). It never subscribes: the consumer group
//! would hand partitions to whichever instance it liked and start them at
//! the group's committed offsets, which may lag the files. A crash at any
//! point therefore leaves the final files covering a contiguous prefix of
//! each partition, and the restart continues right after it: a record of a
//! finished file is never consumed again, a record of an unfinished one is
//! consumed again and its old temporary file is gone. Records at offsets a
//! partition has already covered are skipped, so the ranges never overlap.
//!
//! Dead letters are at least once: one sent before a crash whose file was
//! not renamed is sent again after the restart (step 1 is why none can be
//! lost: a file is never renamed before its dead letters are delivered).
//! A range whose records were *all* dead letters still becomes a file, with
//! zero rows, so that its offsets stay covered; a restart never sends those
//! dead letters again nor loses its position. Zero-row files are valid
//! Parquet and read as empty tables.
//!
//! # One instance per topic set and directory
//! One sink instance owns all partitions of its topics and its `root`.
//! Two instances on the same topics and root would write the same ranges
//! twice; nothing (no group membership, no lock file) stops that, so
//! deployments must run one. The partition count is read at start: a
//! partition added later is picked up by the next start.
//!
//! At start, missing topics are created: the dead-letter topic with one
//! partition (dead letters are sent to partition 0: one ordered log), a
//! table's topic with the cluster's default partition count (as `weir
//! produce` would create it).
//!
//! # API shape
//! [`run`] blocks the calling thread until [`ParquetSinkConfig::stop`] is
//! set, then finishes (renames) every open file, waits for the dead
//! letters, commits, and returns. It is a plain blocking function over a
//! `BaseConsumer` poll loop, like the stream threads; the caller owns the
//! thread. [`SinkStats`] is shared so a dashboard can read it while the
//! sink runs, and [`list_files`] describes what is on disk.

mod decode;
mod files;
mod sink;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;
use std::time::Duration;

pub use arrow_schema;
pub use files::FileInfo;

/// An extra check of a record after JSON parsing and before Arrow decoding;
/// `Err` holds the message for the dead letter's `error` header. `Ok(Some(row))`
/// writes `row` instead of the record (a normalised form: only the schema's
/// fields, the timestamp as epoch milliseconds), `Ok(None)` the record as is.
pub type Validator = Arc<dyn Fn(&serde_json::Value) -> Result<Option<serde_json::Value>, String> + Send + Sync>;

/// One topic and the table its records become.
#[derive(Clone)]
pub struct TableSpec {
    /// The source topic; also the directory name under the root.
    pub topic: String,
    /// The columns. Field names are the JSON keys.
    pub schema: arrow_schema::SchemaRef,
    /// An optional check run on every record (parsed with serde_json)
    /// before it is decoded into the schema.
    pub validate: Option<Validator>,
}

impl TableSpec {
    /// A table without a validator.
    pub fn new(topic: impl Into<String>, schema: arrow_schema::SchemaRef) -> Self {
        TableSpec {
            topic: topic.into(),
            schema,
            validate: None,
        }
    }

    /// Adds a validator.
    pub fn with_validator(
        mut self,
        f: impl Fn(&serde_json::Value) -> Result<Option<serde_json::Value>, String> + Send + Sync + 'static,
    ) -> Self {
        self.validate = Some(Arc::new(f));
        self
    }
}

impl fmt::Debug for TableSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TableSpec")
            .field("topic", &self.topic)
            .field("schema", &self.schema)
            .field("validate", &self.validate.is_some())
            .finish()
    }
}

/// Everything [`run`] needs.
#[derive(Clone, Debug)]
pub struct ParquetSinkConfig {
    /// `bootstrap.servers`.
    pub brokers: String,
    /// The consumer group offsets are committed under (for lag tools only).
    pub group_id: String,
    /// The topics and their schemas.
    pub tables: Vec<TableSpec>,
    /// The root directory; each topic gets `{root}/{topic}/`.
    pub root: PathBuf,
    /// A file is finished this long after its first record (default 10 s).
    pub roll_interval: Duration,
    /// A file is finished when it has covered this many records, rows plus
    /// dead letters (default 1,000,000), so it holds at most this many rows.
    pub max_file_rows: usize,
    /// Where records that do not fit go (created with one partition if
    /// missing).
    pub dlq_topic: String,
    /// Whether records the [`Validator`] rejects go to `dlq_topic` (the
    /// default). `false` when another stage applies the same validation and
    /// already dead-letters them (clickstream-parquet's topology): they are
    /// then skipped, still covered by the file's offset range, and counted
    /// in [`SinkStats::rejected`]. Records that pass the validator but do
    /// not decode always go to `dlq_topic`.
    pub dead_letter_rejects: bool,
    /// Set to stop [`run`] gracefully.
    pub stop: Arc<AtomicBool>,
}

impl ParquetSinkConfig {
    /// A configuration with the defaults: group `weir-parquet-sink`, 10 s
    /// rolls, 1,000,000 records per file, dead letters to
    /// `weir-parquet-sink-dlq`.
    pub fn new(brokers: impl Into<String>, root: impl Into<PathBuf>, tables: Vec<TableSpec>) -> Self {
        ParquetSinkConfig {
            brokers: brokers.into(),
            group_id: "weir-parquet-sink".to_string(),
            tables,
            root: root.into(),
            roll_interval: Duration::from_secs(10),
            max_file_rows: 1_000_000,
            dlq_topic: "weir-parquet-sink-dlq".to_string(),
            dead_letter_rejects: true,
            stop: Arc::new(AtomicBool::new(false)),
        }
    }
}

/// Counters of a running sink (since its start). Rows and files count when
/// a file becomes visible (is renamed), not when rows are buffered.
#[derive(Debug, Default)]
pub struct SinkStats {
    /// Records taken from the topics (rows plus dead letters).
    pub records_consumed: AtomicU64,
    /// Rows in finished files.
    pub rows_written: AtomicU64,
    /// Finished files.
    pub files_written: AtomicU64,
    /// Records sent to the dead-letter topic.
    pub dlq_records: AtomicU64,
    /// Records the validator rejected and that were skipped
    /// ([`ParquetSinkConfig::dead_letter_rejects`] off).
    pub rejected: AtomicU64,
    /// Bytes of finished files.
    pub bytes_written: AtomicU64,
}

/// Runs the sink until `config.stop` is set. See the [module docs](self).
///
/// Fails on a bad configuration, on an I/O error, or when dead letters
/// cannot be delivered; open files are then left as temporary files, which
/// the next start deletes (their records are consumed again).
pub fn run(config: ParquetSinkConfig, stats: Arc<SinkStats>) -> crate::Result<()> {
    sink::run(config, stats)
}

/// Every final file under `root`, sorted by topic, partition and offset,
/// with its row count read from the footer. Temporary files are not listed.
pub fn list_files(root: &Path) -> std::io::Result<Vec<FileInfo>> {
    files::list_files(root)
}
