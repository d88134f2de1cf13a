//! `clickstream-parquet`: three event streams into Parquet files
//! (SCENARIOS.md §3). This file is the validation stage.
//!
//! `clicks`, `views` and `ratings` carry JSON records keyed by `user_id`.
//! Each record is checked against its topic's schema and turned into a
//! typed row ([`ClickRow`], [`ViewRow`], [`RatingRow`]) whose columns are
//! the ones the Parquet files have: integers as integers, durations as
//! floats, the timestamp as epoch milliseconds. A record that does not fit
//! goes to the dead-letter topic with an error naming the field, never into
//! a file.
//!
//! Validation rules (the contract's, made precise):
//!
//! - the value is a JSON object; fields it does not name are ignored (so a
//!   producer may add fields without its records being rejected);
//! - `event_type` is exactly `"click"`, `"view"` or `"rating"` for
//!   `clicks`, `views` and `ratings` respectively;
//! - `user_id` is a JSON integer in 1–1000, `item_id` a JSON integer in
//!   1–500 (`17.0` and `"17"` are rejected: the producers send integers);
//! - `timestamp` is an ISO-8601 string: RFC 3339 (`…Z`, `…+02:00`), or
//!   without offset (Python's `datetime.isoformat()`), then read as UTC;
//!   sub-millisecond digits are truncated;
//! - `click_duration` and `view_duration` are JSON numbers ≥ 0 (integers
//!   are accepted as floats);
//! - `device_type` is exactly one of `mobile`, `desktop`, `tablet`;
//! - `rating` is a JSON integer in 1–5;
//! - `page_url` and `review_text` are strings (possibly empty).

use chrono::NaiveDateTime;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use weir::prelude::*;

pub const NAME: &str = "clickstream-parquet";
pub const DESCRIPTION: &str = "click, view and rating events validated into typed rows for Parquet files";

/// The input topics (SCENARIOS.md).
pub const CLICKS_TOPIC: &str = "clicks";
pub const VIEWS_TOPIC: &str = "views";
pub const RATINGS_TOPIC: &str = "ratings";

/// Settings of the validation stage (the Parquet sink has its own).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Params {
    /// Largest accepted `user_id` (the contract: 1–1000).
    pub max_user_id: u32,
    /// Largest accepted `item_id` (the contract: 1–500).
    pub max_item_id: u32,
    /// A Parquet file is finished this long after its first record, ms.
    pub roll_interval_ms: u64,
    /// ... or once it covers this many records.
    pub max_file_rows: usize,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            max_user_id: 1000,
            max_item_id: 500,
            roll_interval_ms: 10_000,
            max_file_rows: 1_000_000,
        }
    }
}

/// A validated record of `clicks`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClickRow {
    pub event_type: String,
    pub user_id: u32,
    pub item_id: u32,
    /// Event time, epoch ms UTC.
    pub timestamp_ms: i64,
    pub page_url: String,
    /// Seconds.
    pub click_duration: f64,
}

/// A validated record of `views`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ViewRow {
    pub event_type: String,
    pub user_id: u32,
    pub item_id: u32,
    /// Event time, epoch ms UTC.
    pub timestamp_ms: i64,
    /// Seconds.
    pub view_duration: f64,
    /// `mobile`, `desktop` or `tablet`.
    pub device_type: String,
}

/// A validated record of `ratings`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RatingRow {
    pub event_type: String,
    pub user_id: u32,
    pub item_id: u32,
    /// Event time, epoch ms UTC.
    pub timestamp_ms: i64,
    /// 1–5.
    pub rating: u8,
    pub review_text: String,
}

/// The accepted device types.
pub const DEVICE_TYPES: [&str; 3] = ["mobile", "desktop", "tablet"];

/// Field access with errors that name the field.
struct Fields<'a>(&'a Map<String, Value>);

impl<'a> Fields<'a> {
    fn of(v: &'a Value) -> Result<Self, String> {
        match v {
            Value::Object(m) => Ok(Fields(m)),
            other => Err(format!("expected a JSON object, got {}", kind(other))),
        }
    }

    fn get(&self, name: &str) -> Result<&'a Value, String> {
        self.0.get(name).ok_or_else(|| format!("missing field `{name}`"))
    }

    fn string(&self, name: &str) -> Result<&'a str, String> {
        match self.get(name)? {
            Value::String(s) => Ok(s),
            other => Err(format!("field `{name}`: expected a string, got {other}")),
        }
    }

    fn int_in(&self, name: &str, min: u64, max: u64) -> Result<u64, String> {
        let v = self.get(name)?;
        match v.as_u64() {
            Some(n) if (min..=max).contains(&n) => Ok(n),
            _ if v.is_i64() || v.is_u64() => Err(format!("field `{name}`: {v} is out of range {min}–{max}")),
            _ => Err(format!("field `{name}`: expected an integer {min}–{max}, got {v}")),
        }
    }

    fn duration(&self, name: &str) -> Result<f64, String> {
        let v = self.get(name)?;
        match v.as_f64() {
            Some(x) if x >= 0.0 => Ok(x),
            Some(_) => Err(format!("field `{name}`: {v} is negative")),
            None => Err(format!("field `{name}`: expected a number of seconds, got {v}")),
        }
    }

    fn event_type(&self, expected: &str) -> Result<String, String> {
        let t = self.string("event_type")?;
        if t == expected {
            Ok(t.to_string())
        } else {
            Err(format!("field `event_type`: expected {expected:?}, got {t:?}"))
        }
    }

    fn timestamp_ms(&self) -> Result<i64, String> {
        let s = self.string("timestamp")?;
        parse_timestamp_ms(s).ok_or_else(|| format!("field `timestamp`: {s:?} is not an ISO-8601 time"))
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// RFC 3339, or ISO-8601 without offset read as UTC; epoch ms, truncated.
pub fn parse_timestamp_ms(s: &str) -> Option<i64> {
    if let Ok(t) = super::parse_rfc3339(s) {
        return Some(t.timestamp_millis());
    }
    NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .map(|t| t.and_utc().timestamp_millis())
}

/// The ids every event has, checked against `p`'s ranges.
fn ids(f: &Fields<'_>, p: &Params) -> Result<(u32, u32), String> {
    // The ranges fit in u32, so the conversions cannot fail.
    let user = f.int_in("user_id", 1, u64::from(p.max_user_id))? as u32;
    let item = f.int_in("item_id", 1, u64::from(p.max_item_id))? as u32;
    Ok((user, item))
}

impl ClickRow {
    /// Validate a `clicks` record.
    pub fn from_json(v: &Value, p: &Params) -> Result<Self, String> {
        let f = Fields::of(v)?;
        let event_type = f.event_type("click")?;
        let (user_id, item_id) = ids(&f, p)?;
        Ok(ClickRow {
            event_type,
            user_id,
            item_id,
            timestamp_ms: f.timestamp_ms()?,
            page_url: f.string("page_url")?.to_string(),
            click_duration: f.duration("click_duration")?,
        })
    }
}

impl ViewRow {
    /// Validate a `views` record.
    pub fn from_json(v: &Value, p: &Params) -> Result<Self, String> {
        let f = Fields::of(v)?;
        let event_type = f.event_type("view")?;
        let (user_id, item_id) = ids(&f, p)?;
        let timestamp_ms = f.timestamp_ms()?;
        let view_duration = f.duration("view_duration")?;
        let device = f.string("device_type")?;
        if !DEVICE_TYPES.contains(&device) {
            return Err(format!(
                "field `device_type`: expected one of mobile, desktop, tablet, got {device:?}"
            ));
        }
        Ok(ViewRow {
            event_type,
            user_id,
            item_id,
            timestamp_ms,
            view_duration,
            device_type: device.to_string(),
        })
    }
}

impl RatingRow {
    /// Validate a `ratings` record.
    pub fn from_json(v: &Value, p: &Params) -> Result<Self, String> {
        let f = Fields::of(v)?;
        let event_type = f.event_type("rating")?;
        let (user_id, item_id) = ids(&f, p)?;
        Ok(RatingRow {
            event_type,
            user_id,
            item_id,
            timestamp_ms: f.timestamp_ms()?,
            // 1–5 fits in u8.
            rating: f.int_in("rating", 1, 5)? as u8,
            review_text: f.string("review_text")?.to_string(),
        })
    }
}

/// The three validated row streams. The input's key (`user_id`) is not
/// used, so it is not decoded either: any key bytes are fine. Records
/// that do not decode as JSON or fail validation go to the dead-letter
/// topic.
pub fn rows(
    b: &mut StreamsBuilder,
    p: &Params,
) -> (KStream<(), ClickRow>, KStream<(), ViewRow>, KStream<(), RatingRow>) {
    let (p1, p2, p3) = (p.clone(), p.clone(), p.clone());
    let clicks = b
        .stream::<(), Value>(CLICKS_TOPIC, Serdes::ignored(), Serdes::json())
        .try_map_values(move |_, v| ClickRow::from_json(&v, &p1));
    let views = b
        .stream::<(), Value>(VIEWS_TOPIC, Serdes::ignored(), Serdes::json())
        .try_map_values(move |_, v| ViewRow::from_json(&v, &p2));
    let ratings = b
        .stream::<(), Value>(RATINGS_TOPIC, Serdes::ignored(), Serdes::json())
        .try_map_values(move |_, v| RatingRow::from_json(&v, &p3));
    (clicks, views, ratings)
}

/// The registered topology: the validation stage. It dead-letters every
/// record that does not fit (to `clickstream-parquet-dlq`, counted in
/// `weir_dlq_records_total`). The files are written by the app's Parquet
/// sink ([`app`]), which applies the same validation to the same topics and
/// writes the rows that pass: it reads the topics itself because its
/// exactly-once guarantee rests on input offsets (each file's name holds
/// the offsets it covers), which records passed on by the topology would
/// not have.
pub fn topology(p: &Params) -> Result<Topology, TopologyError> {
    let mut b = StreamsBuilder::new();
    let (clicks, views, ratings) = rows(&mut b, p);
    clicks.for_each(|_, _| {});
    views.for_each(|_, _| {});
    ratings.for_each(|_, _| {});
    b.build()
}

/// The dead-letter topic (the application's).
pub const DLQ_TOPIC: &str = "clickstream-parquet-dlq";

/// The Arrow schema of a topic's files: the contract's fields, integers as
/// Int32, durations as Float64, `timestamp` as a UTC millisecond TIMESTAMP.
pub fn schema(topic: &str) -> weir::connectors::parquet::arrow_schema::SchemaRef {
    use weir::connectors::parquet::arrow_schema::{DataType, Field, Schema, TimeUnit};
    let common = |extra: Vec<Field>| {
        let mut fields = vec![
            Field::new("event_type", DataType::Utf8, false),
            Field::new("user_id", DataType::Int32, false),
            Field::new("item_id", DataType::Int32, false),
            Field::new(
                "timestamp",
                DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                false,
            ),
        ];
        fields.extend(extra);
        std::sync::Arc::new(Schema::new(fields))
    };
    match topic {
        CLICKS_TOPIC => common(vec![
            Field::new("page_url", DataType::Utf8, false),
            Field::new("click_duration", DataType::Float64, false),
        ]),
        VIEWS_TOPIC => common(vec![
            Field::new("view_duration", DataType::Float64, false),
            Field::new("device_type", DataType::Utf8, false),
        ]),
        _ => common(vec![
            Field::new("rating", DataType::Int32, false),
            Field::new("review_text", DataType::Utf8, false),
        ]),
    }
}

/// A validated row as the sink writes it: `timestamp_ms` becomes the
/// `timestamp` column.
fn file_row<T: Serialize>(row: &T) -> Result<Option<Value>, String> {
    let mut v = serde_json::to_value(row).map_err(|e| e.to_string())?;
    if let Some(obj) = v.as_object_mut() {
        if let Some(ts) = obj.remove("timestamp_ms") {
            obj.insert("timestamp".to_string(), ts);
        }
    }
    Ok(Some(v))
}

/// The registration of this scenario with the daemon (parameters from
/// `[topologies.clickstream-parquet]` of the config): the validation
/// topology, the Parquet sink writing `{data_dir}/parquet/{topic}/`, and
/// `GET /parquet/files`.
pub fn app() -> weir::daemon::App {
    use weir::connectors::parquet::{self, ParquetSinkConfig, SinkStats, TableSpec};
    use weir::daemon::{AppParts, Method, Route, Service, StatusCode};
    weir::daemon::App::with_params(NAME, DESCRIPTION, |p: &Params| {
        let mut parts = AppParts::new(topology(p)?);
        parts.generator = Some(super::generators::clickstream_parquet_spec());
        let params = p.clone();
        parts.services.push(Service {
            name: "parquet-sink".into(),
            run: Box::new(move |ctx| {
                let (p1, p2, p3) = (params.clone(), params.clone(), params.clone());
                let tables = vec![
                    TableSpec::new(CLICKS_TOPIC, schema(CLICKS_TOPIC))
                        .with_validator(move |v| file_row(&ClickRow::from_json(v, &p1)?)),
                    TableSpec::new(VIEWS_TOPIC, schema(VIEWS_TOPIC))
                        .with_validator(move |v| file_row(&ViewRow::from_json(v, &p2)?)),
                    TableSpec::new(RATINGS_TOPIC, schema(RATINGS_TOPIC))
                        .with_validator(move |v| file_row(&RatingRow::from_json(v, &p3)?)),
                ];
                let mut config = ParquetSinkConfig::new(ctx.brokers.clone(), ctx.data_dir.join("parquet"), tables);
                config.group_id = format!("{NAME}-parquet-sink");
                config.dlq_topic = DLQ_TOPIC.to_string();
                // The topology dead-letters what the validators reject.
                config.dead_letter_rejects = false;
                config.roll_interval = std::time::Duration::from_millis(params.roll_interval_ms.max(1));
                config.max_file_rows = params.max_file_rows.max(1);
                config.stop = ctx.stop_flag();
                let stats = std::sync::Arc::new(SinkStats::default());
                std::thread::scope(|s| {
                    // Mirror the sink's counters into the daemon's metrics.
                    let mirror = s.spawn(|| {
                        use std::sync::atomic::Ordering::Relaxed;
                        let rows = ctx.metrics.sink_rows.with_label_values(&[NAME, "all"]);
                        let files = ctx.metrics.sink_files.with_label_values(&[NAME, "all"]);
                        let (mut r0, mut f0) = (0, 0);
                        loop {
                            let stopping = ctx.stopping();
                            let (r, f) = (stats.rows_written.load(Relaxed), stats.files_written.load(Relaxed));
                            rows.inc_by(r - r0);
                            files.inc_by(f - f0);
                            (r0, f0) = (r, f);
                            if stopping {
                                break;
                            }
                            std::thread::sleep(std::time::Duration::from_millis(250));
                        }
                    });
                    let result = parquet::run(config, stats.clone());
                    ctx.request_stop();
                    let _ = mirror.join();
                    result.map_err(anyhow::Error::from)
                })
            }),
        });
        parts
            .routes
            .push(Route::new("/parquet/files", &[Method::GET], |ctx, _| {
                let root = ctx.data_dir.join("parquet");
                let files = match parquet::list_files(&root) {
                    Ok(f) => f,
                    Err(e) => {
                        return weir::daemon::app::error(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            format!("listing {}: {e}", root.display()),
                        )
                    }
                };
                let mut rows = serde_json::Map::new();
                for t in [CLICKS_TOPIC, VIEWS_TOPIC, RATINGS_TOPIC] {
                    let n: u64 = files.iter().filter(|f| f.topic == t).map(|f| f.rows).sum();
                    rows.insert(t.to_string(), n.into());
                }
                let list: Vec<Value> = files
                    .iter()
                    .map(|f| {
                        serde_json::json!({
                            "topic": f.topic, "name": f.name, "partition": f.partition,
                            "first_offset": f.first_offset, "last_offset": f.last_offset,
                            "rows": f.rows, "bytes": f.bytes,
                        })
                    })
                    .collect();
                weir::daemon::app::json(
                    StatusCode::OK,
                    &serde_json::json!({ "root": root.display().to_string(), "files": list, "rows": rows }),
                )
            }));
        Ok(parts)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir::testing::{TestDriverConfig, TopologyTestDriver};

    /// 2026-11-21T10:00:00.000Z.
    const T0: i64 = 1_795_255_200_000;

    fn driver() -> TopologyTestDriver {
        let mut b = StreamsBuilder::new();
        let (clicks, views, ratings) = rows(&mut b, &Params::default());
        clicks.to("test-rows-clicks", Serdes::unit(), Serdes::json());
        views.to("test-rows-views", Serdes::unit(), Serdes::json());
        ratings.to("test-rows-ratings", Serdes::unit(), Serdes::json());
        let t = b.build().expect("topology builds");
        TopologyTestDriver::new(t, TestDriverConfig::with_application_id(NAME)).expect("driver starts")
    }

    fn pipe(d: &TopologyTestDriver, topic: &str, key: &str, value: &str) {
        d.pipe_raw(topic, Some(key.as_bytes()), Some(value.as_bytes()), 0)
            .expect("pipe");
    }

    #[test]
    fn the_registered_topology_builds() {
        let t = topology(&Params::default()).unwrap();
        assert_eq!(t.subtopologies().len(), 3);
    }

    #[test]
    fn valid_records_become_exact_rows() {
        let d = driver();
        pipe(
            &d,
            CLICKS_TOPIC,
            "17",
            r#"{"event_type": "click", "user_id": 17, "item_id": 3, "timestamp": "2026-11-21T10:00:00.123Z", "page_url": "/item/3", "click_duration": 1.25}"#,
        );
        pipe(
            &d,
            CLICKS_TOPIC,
            "1000",
            r#"{"event_type": "click", "user_id": 1000, "item_id": 500, "timestamp": "2026-11-21T10:00:00.123456", "page_url": "", "click_duration": 0, "extra": true}"#,
        );
        pipe(
            &d,
            VIEWS_TOPIC,
            "1",
            r#"{"event_type": "view", "user_id": 1, "item_id": 1, "timestamp": "2026-11-21T12:00:01+02:00", "view_duration": 30.5, "device_type": "tablet"}"#,
        );
        pipe(
            &d,
            RATINGS_TOPIC,
            "5",
            r#"{"event_type": "rating", "user_id": 5, "item_id": 42, "timestamp": "2026-11-21T10:00:02Z", "rating": 5, "review_text": "Great \"value\""}"#,
        );
        let clicks = d
            .output_topic("test-rows-clicks", Serdes::unit(), Serdes::json::<ClickRow>())
            .read_key_values();
        assert_eq!(
            clicks,
            vec![
                (
                    (),
                    ClickRow {
                        event_type: "click".into(),
                        user_id: 17,
                        item_id: 3,
                        timestamp_ms: T0 + 123,
                        page_url: "/item/3".into(),
                        click_duration: 1.25,
                    }
                ),
                (
                    (),
                    ClickRow {
                        event_type: "click".into(),
                        user_id: 1000,
                        item_id: 500,
                        timestamp_ms: T0 + 123,
                        page_url: "".into(),
                        click_duration: 0.0,
                    }
                ),
            ]
        );
        let views = d
            .output_topic("test-rows-views", Serdes::unit(), Serdes::json::<ViewRow>())
            .read_key_values();
        assert_eq!(
            views,
            vec![(
                (),
                ViewRow {
                    event_type: "view".into(),
                    user_id: 1,
                    item_id: 1,
                    timestamp_ms: T0 + 1_000,
                    view_duration: 30.5,
                    device_type: "tablet".into(),
                }
            )]
        );
        let ratings = d.topic_records("test-rows-ratings");
        assert_eq!(ratings.len(), 1);
        assert_eq!(
            String::from_utf8(ratings[0].value.clone().unwrap()).unwrap(),
            format!(
                r#"{{"event_type":"rating","user_id":5,"item_id":42,"timestamp_ms":{},"rating":5,"review_text":"Great \"value\""}}"#,
                T0 + 2_000
            )
        );
        assert!(d.dead_letters().is_empty());
    }

    #[test]
    fn keys_that_are_not_utf8_are_ignored_not_dead_lettered() {
        let d = driver();
        let click = r#"{"event_type": "click", "user_id": 1, "item_id": 1, "timestamp": "2026-11-21T10:00:00Z", "page_url": "/a", "click_duration": 1.0}"#;
        d.pipe_raw(CLICKS_TOPIC, Some(&[0xff, 0x00, 0xfe]), Some(click.as_bytes()), 0)
            .expect("pipe");
        d.pipe_raw(CLICKS_TOPIC, None, Some(click.as_bytes()), 0).expect("pipe");
        assert_eq!(d.dead_letters(), vec![]);
        let rows = d
            .output_topic("test-rows-clicks", Serdes::unit(), Serdes::json::<ClickRow>())
            .read_values();
        assert_eq!(rows.len(), 2);
    }

    #[test]
    fn records_that_do_not_fit_go_to_the_dlq_naming_the_field() {
        let d = driver();
        let click = |fields: &str| {
            format!(
                r#"{{"event_type": "click", "user_id": 1, "item_id": 1, "timestamp": "2026-11-21T10:00:00Z", {fields}}}"#
            )
        };
        let cases: Vec<(&str, String, &str)> = vec![
            (CLICKS_TOPIC, click(r#""page_url": "/a", "click_duration": 1.0"#), ""), // valid
            (CLICKS_TOPIC, "{oops".to_string(), "value deserialization failed (json): invalid JSON: key must be a string at line 1 column 2"),
            (CLICKS_TOPIC, "[1]".to_string(), "expected a JSON object, got an array"),
            (
                CLICKS_TOPIC,
                r#"{"event_type": "view", "user_id": 1}"#.to_string(),
                r#"field `event_type`: expected "click", got "view""#,
            ),
            (CLICKS_TOPIC, r#"{"user_id": 1}"#.to_string(), "missing field `event_type`"),
            (
                CLICKS_TOPIC,
                r#"{"event_type": "click", "user_id": 0, "item_id": 1}"#.to_string(),
                "field `user_id`: 0 is out of range 1–1000",
            ),
            (
                CLICKS_TOPIC,
                r#"{"event_type": "click", "user_id": 1001, "item_id": 1}"#.to_string(),
                "field `user_id`: 1001 is out of range 1–1000",
            ),
            (
                CLICKS_TOPIC,
                r#"{"event_type": "click", "user_id": "17", "item_id": 1}"#.to_string(),
                r#"field `user_id`: expected an integer 1–1000, got "17""#,
            ),
            (
                CLICKS_TOPIC,
                r#"{"event_type": "click", "user_id": 17.0, "item_id": 1}"#.to_string(),
                "field `user_id`: expected an integer 1–1000, got 17.0",
            ),
            (
                CLICKS_TOPIC,
                r#"{"event_type": "click", "user_id": 1, "item_id": 501}"#.to_string(),
                "field `item_id`: 501 is out of range 1–500",
            ),
            (
                CLICKS_TOPIC,
                r#"{"event_type": "click", "user_id": 1, "item_id": -1}"#.to_string(),
                "field `item_id`: -1 is out of range 1–500",
            ),
            (
                CLICKS_TOPIC,
                r#"{"event_type": "click", "user_id": 1, "item_id": 1, "timestamp": "21/11/2026"}"#.to_string(),
                r#"field `timestamp`: "21/11/2026" is not an ISO-8601 time"#,
            ),
            (
                CLICKS_TOPIC,
                r#"{"event_type": "click", "user_id": 1, "item_id": 1, "timestamp": 1763719200}"#.to_string(),
                "field `timestamp`: expected a string, got 1763719200",
            ),
            (
                CLICKS_TOPIC,
                click(r#""click_duration": 1.0"#),
                "missing field `page_url`",
            ),
            (
                CLICKS_TOPIC,
                click(r#""page_url": "/a", "click_duration": -0.5"#),
                "field `click_duration`: -0.5 is negative",
            ),
            (
                CLICKS_TOPIC,
                click(r#""page_url": "/a", "click_duration": "1.0""#),
                r#"field `click_duration`: expected a number of seconds, got "1.0""#,
            ),
            (
                VIEWS_TOPIC,
                r#"{"event_type": "view", "user_id": 1, "item_id": 1, "timestamp": "2026-11-21T10:00:00Z", "view_duration": 2, "device_type": "phone"}"#.to_string(),
                r#"field `device_type`: expected one of mobile, desktop, tablet, got "phone""#,
            ),
            (
                VIEWS_TOPIC,
                r#"{"event_type": "view", "user_id": 1, "item_id": 1, "timestamp": "2026-11-21T10:00:00Z", "device_type": "mobile"}"#.to_string(),
                "missing field `view_duration`",
            ),
            (
                RATINGS_TOPIC,
                r#"{"event_type": "rating", "user_id": 1, "item_id": 1, "timestamp": "2026-11-21T10:00:00Z", "rating": 6, "review_text": ""}"#.to_string(),
                "field `rating`: 6 is out of range 1–5",
            ),
            (
                RATINGS_TOPIC,
                r#"{"event_type": "rating", "user_id": 1, "item_id": 1, "timestamp": "2026-11-21T10:00:00Z", "rating": 4.5, "review_text": ""}"#.to_string(),
                "field `rating`: expected an integer 1–5, got 4.5",
            ),
            (
                RATINGS_TOPIC,
                r#"{"event_type": "rating", "user_id": 1, "item_id": 1, "timestamp": "2026-11-21T10:00:00Z", "rating": 3, "review_text": null}"#.to_string(),
                "field `review_text`: expected a string, got null",
            ),
            (
                RATINGS_TOPIC,
                r#"{"event_type": "rating", "user_id": 1, "item_id": 1, "timestamp": "2026-11-21T10:00:00Z", "rating": 3, "review_text": "ok"}"#.to_string(),
                "",
            ), // valid
        ];
        let mut offsets = std::collections::HashMap::<&str, i64>::new();
        let mut want = Vec::new();
        for (topic, value, error) in &cases {
            let offset = offsets.entry(topic).or_insert(0);
            pipe(&d, topic, "1", value);
            if !error.is_empty() {
                want.push((topic.to_string(), *offset, error.to_string()));
            }
            *offset += 1;
        }
        let got: Vec<(String, i64, String)> = d
            .dead_letters()
            .into_iter()
            .map(|l| (l.topic, l.offset, l.error))
            .collect();
        assert_eq!(got, want);
        // Only the two valid records became rows.
        assert_eq!(d.topic_records("test-rows-clicks").len(), 1);
        assert_eq!(d.topic_records("test-rows-views").len(), 0);
        assert_eq!(d.topic_records("test-rows-ratings").len(), 1);
    }
}
