//! `emoji-stream`: live emoji reactions, aggregated in short event-time
//! windows and broadcast (SCENARIOS.md §1).
//!
//! `emoji-events` carries `{"user_id": "u42", "emoji_type": "🔥",
//! "timestamp": "2026-11-21T10:00:00.123Z"}` keyed by user. The event time
//! is the JSON `timestamp` (reactions are bursty and arrive out of order, so
//! the broker's append time would put them in the wrong window). Events are
//! re-keyed by emoji, counted in tumbling windows (2 s, grace 1 s), and each
//! window's final count is emitted once, when the window closes, as
//! `{"emoji_type", "window_start", "window_end", "count", "scaled"}` to
//! `emoji-aggregated` and to every `emoji-cluster-1` … `emoji-cluster-N`
//! (the fan-out tree of the original system), keyed by emoji.
//!
//! A value that is not JSON, lacks a field, or has a timestamp that is not
//! RFC 3339 fails to decode and goes to the dead-letter topic; an event
//! whose window has already closed is dropped and counted as late.

use std::num::NonZeroU64;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use weir::prelude::*;

pub const NAME: &str = "emoji-stream";
pub const DESCRIPTION: &str =
    "emoji reactions counted in 2 s event-time windows, scaled and fanned out to cluster topics";

/// The input topic (SCENARIOS.md).
pub const INPUT_TOPIC: &str = "emoji-events";
/// The main output topic (SCENARIOS.md).
pub const OUTPUT_TOPIC: &str = "emoji-aggregated";
/// The window store of the per-emoji counts.
pub const STORE: &str = "emoji-counts";

/// Settings of the topology.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Params {
    /// Tumbling window size, ms.
    pub window_ms: i64,
    /// How long after a window's end late events are still counted, ms.
    pub grace_ms: i64,
    /// `scaled = ceil(count / scale)`: a burst of `scale` identical emojis
    /// becomes one reaction on screen. Zero is not a scale, so the type
    /// rules it out.
    pub scale: NonZeroU64,
    /// Number of cluster topics `emoji-cluster-1` … `emoji-cluster-N` the
    /// aggregate is copied to (0: none).
    pub clusters: usize,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            window_ms: 2_000,
            grace_ms: 1_000,
            scale: NonZeroU64::new(1_000).unwrap_or(NonZeroU64::MIN),
            clusters: 3,
        }
    }
}

/// The name of cluster topic `i` (1-based).
pub fn cluster_topic(i: usize) -> String {
    format!("emoji-cluster-{i}")
}

/// One reaction, as the ingress produces it. `timestamp` is a chrono time,
/// so a value that is not RFC 3339 fails to decode (and is dead-lettered)
/// instead of reaching the windows with a made-up time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmojiEvent {
    pub user_id: String,
    pub emoji_type: String,
    #[serde(deserialize_with = "rfc3339")]
    pub timestamp: DateTime<Utc>,
}

/// chrono's own error ("input contains invalid characters") does not say
/// which field or value was wrong; the dead-letter header should.
fn rfc3339<'de, D: serde::Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
    let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
    super::parse_rfc3339(&s)
        .map_err(|e| serde::de::Error::custom(format!("field `timestamp`: {s:?} is not an RFC 3339 time ({e})")))
}

/// One closed window's aggregate, as written to the output topics. The
/// field order is the contract's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmojiAggregate {
    pub emoji_type: String,
    /// ISO-8601 UTC with milliseconds and `Z`, like the input timestamps.
    pub window_start: String,
    pub window_end: String,
    pub count: u64,
    pub scaled: u64,
}

pub use super::iso_millis;
use super::window_millis as millis;

/// `emoji-events` → re-key by emoji → tumbling windows → count → final
/// result per window → `emoji-aggregated` and `emoji-cluster-{1..N}`.
pub fn topology(p: &Params) -> Result<Topology, TopologyError> {
    let windows = TimeWindows::of(millis("window size", p.window_ms)?)?.grace(millis("grace", p.grace_ms)?)?;
    let scale = p.scale.get();
    let mut b = StreamsBuilder::new();
    let aggregates = b
        .stream_with_timestamps(
            INPUT_TOPIC,
            // The key (user id) is not used: not decoded either.
            Serdes::ignored(),
            Serdes::json::<EmojiEvent>(),
            |_, e, _| e.timestamp.timestamp_millis(),
        )
        // Re-key by emoji (moving the string, not copying it). The count
        // needs only the key, so the repartition topic carries an empty
        // value (zero bytes) instead of the event.
        .map(|_, e| (e.emoji_type, String::new()))
        .group_by_key(Serdes::string(), Serdes::string())
        .windowed_by(windows)
        // Each window once, when it closes (KIP-825): what `suppress`
        // gives, without a suppression buffer to write every update into.
        .emit_strategy(EmitStrategy::on_window_close())
        .count(Materialized::named(STORE))
        .to_stream()
        .map(|wk, count| (wk.key, (wk.window, count)))
        .try_map_values(move |emoji, (window, count)| {
            let (Some(window_start), Some(window_end)) = (iso_millis(window.start), iso_millis(window.end)) else {
                return Err(format!(
                    "window [{}, {}) of {emoji:?} is outside the representable time range",
                    window.start, window.end
                ));
            };
            Ok(EmojiAggregate {
                emoji_type: emoji.clone(),
                window_start,
                window_end,
                count,
                scaled: count.div_ceil(scale),
            })
        });
    for i in 1..=p.clusters {
        aggregates
            .clone()
            .to(&cluster_topic(i), Serdes::string(), Serdes::json());
    }
    aggregates.to(OUTPUT_TOPIC, Serdes::string(), Serdes::json());
    b.build()
}

/// Which windows of the emoji tasks have closed, as far as the daemon has
/// seen: what `POST /emoji` tells a caller whose reaction is too late to be
/// counted.
///
/// Stream time is per task and lives inside the stream threads; what the
/// daemon sees of it is the output: an aggregate of window `[s, e)` is
/// emitted once its task's stream time reached `e + grace`. So the latest
/// window end emitted by a task bounds that task's stream time from below,
/// and a reaction whose window ends at or before it is certainly late (its
/// task will drop it and count it in `weir_late_records_dropped_total`).
/// A task is the emoji's partition of the re-keyed topic (Kafka's murmur2
/// partitioner over the emoji's UTF-8 bytes, as the repartition sink does);
/// until the partition count is known, each emoji stands on its own.
/// A reaction that becomes late between this check and its processing (its
/// window closes a moment later) is not reported: the answer says what was
/// certainly late on arrival.
pub struct ClosedWindows {
    window_ms: i64,
    grace_ms: i64,
    inner: std::sync::Mutex<Closed>,
}

#[derive(Default)]
struct Closed {
    /// Latest window end emitted per emoji (at most [`MAX_EMOJIS`] emojis).
    per_emoji: std::collections::HashMap<String, i64>,
    /// Latest window end emitted per partition of the re-keyed topic, once
    /// its partition count is known.
    per_partition: Vec<i64>,
}

/// Emoji types are the caller's strings: bound what is remembered of them.
const MAX_EMOJIS: usize = 4096;

/// One reaction whose window had already closed when it arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LateReaction {
    /// Index in the request (0 for a single object).
    pub item: usize,
    pub emoji_type: String,
    pub window_start: i64,
    pub window_end: i64,
    /// The stream time of the emoji's task, at least (ms).
    pub stream_time: i64,
}

impl ClosedWindows {
    pub fn new(p: &Params) -> ClosedWindows {
        ClosedWindows {
            window_ms: p.window_ms.max(1),
            grace_ms: p.grace_ms.max(0),
            inner: std::sync::Mutex::new(Closed::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Closed> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Take note of one aggregate from `emoji-aggregated` (its JSON text);
    /// anything else is ignored.
    pub fn observe(&self, aggregate: &str) {
        let Ok(a) = serde_json::from_str::<EmojiAggregate>(aggregate) else {
            return;
        };
        let Ok(end) = DateTime::parse_from_rfc3339(&a.window_end) else {
            return;
        };
        let end = end.timestamp_millis();
        let mut c = self.lock();
        let n = c.per_partition.len();
        if n > 0 {
            let p = partition_of(&a.emoji_type, n);
            c.per_partition[p] = c.per_partition[p].max(end);
        }
        if c.per_emoji.len() < MAX_EMOJIS || c.per_emoji.contains_key(&a.emoji_type) {
            let e = c.per_emoji.entry(a.emoji_type).or_insert(i64::MIN);
            *e = (*e).max(end);
        }
    }

    /// True once an aggregate has been observed.
    pub fn seen_any(&self) -> bool {
        !self.lock().per_emoji.is_empty()
    }

    /// The re-keyed topic has `partitions` partitions: emojis of one
    /// partition share their task's stream time from now on.
    pub fn set_partitions(&self, partitions: usize) {
        let mut c = self.lock();
        if partitions == 0 || c.per_partition.len() == partitions {
            return;
        }
        let mut per_partition = vec![i64::MIN; partitions];
        for (emoji, end) in &c.per_emoji {
            let p = partition_of(emoji, partitions);
            per_partition[p] = per_partition[p].max(*end);
        }
        c.per_partition = per_partition;
    }

    /// The late one of reaction `item` (`emoji` at event time `ts`, ms), if
    /// its window had certainly closed.
    pub fn late(&self, item: usize, emoji: &str, ts: i64) -> Option<LateReaction> {
        let c = self.lock();
        let mut seen = c.per_emoji.get(emoji).copied().unwrap_or(i64::MIN);
        if !c.per_partition.is_empty() {
            seen = seen.max(c.per_partition[partition_of(emoji, c.per_partition.len())]);
        }
        let window_start = ts.saturating_sub(ts.rem_euclid(self.window_ms));
        let window_end = window_start.saturating_add(self.window_ms);
        (seen != i64::MIN && window_end <= seen).then(|| LateReaction {
            item,
            emoji_type: emoji.to_string(),
            window_start,
            window_end,
            stream_time: seen.saturating_add(self.grace_ms),
        })
    }

    /// The fields `POST /emoji` adds to its answer for these (checked)
    /// reactions: none when every one is in time, else `late` (one entry
    /// per late reaction: its item, emoji, window, when the window closed
    /// and the stream time) and a one-line `warning`.
    pub fn note(
        &self,
        items: &[&serde_json::Map<String, serde_json::Value>],
    ) -> serde_json::Map<String, serde_json::Value> {
        let late: Vec<LateReaction> = items
            .iter()
            .enumerate()
            .filter_map(|(i, obj)| {
                let emoji = obj.get("emoji_type")?.as_str()?;
                let ts = DateTime::parse_from_rfc3339(obj.get("timestamp")?.as_str()?).ok()?;
                self.late(i, emoji, ts.timestamp_millis())
            })
            .collect();
        let mut out = serde_json::Map::new();
        if late.is_empty() {
            return out;
        }
        let iso = |ms: i64| iso_millis(ms).unwrap_or_else(|| ms.to_string());
        let first = &late[0];
        let warning = format!(
            "{} of {} reaction(s) arrived after their window closed and will not be counted \
             (first: item {}, {} in window {} to {}, closed at {}; stream time {}): they were \
             produced to {INPUT_TOPIC} all the same. Send \"timestamp\" as the current time.",
            late.len(),
            items.len(),
            first.item,
            first.emoji_type,
            iso(first.window_start),
            iso(first.window_end),
            iso(first.window_end.saturating_add(self.grace_ms)),
            iso(first.stream_time),
        );
        let entries = late
            .iter()
            .map(|l| {
                serde_json::json!({
                    "item": l.item,
                    "emoji_type": l.emoji_type,
                    "window_start": iso(l.window_start),
                    "window_end": iso(l.window_end),
                    "closed_at": iso(l.window_end.saturating_add(self.grace_ms)),
                    "stream_time": iso(l.stream_time),
                })
            })
            .collect();
        out.insert("late".into(), serde_json::Value::Array(entries));
        out.insert("warning".into(), serde_json::Value::from(warning));
        out
    }
}

/// The partition of the re-keyed topic `emoji` goes to among `n`.
fn partition_of(emoji: &str, n: usize) -> usize {
    let n = i32::try_from(n).unwrap_or(i32::MAX);
    weir::runtime::partitioner::default_partitioner(emoji.as_bytes(), n) as usize
}

/// The re-keyed topic: `{application}-{store}-repartition`.
pub fn repartition_topic() -> String {
    format!("{NAME}-{STORE}-repartition")
}

/// The registration of this scenario with the daemon (parameters from
/// `[topologies.{NAME}]` of the config).
///
/// Routes: `POST /emoji` (one reaction or an array; all checked before any
/// is produced; a reaction whose window has already closed is produced all
/// the same, and the 200 answer names it under `late`, with a `warning`:
/// see [`ClosedWindows`]) and `GET /emoji/live` (the aggregates as
/// Server-Sent Events).
pub fn app() -> weir::daemon::App {
    use std::sync::Arc;
    use weir::daemon::ingress::{json_route_noting, string_field, time_field};
    use weir::daemon::{AppParts, FeedSpec, Method, Route, Service};
    weir::daemon::App::with_params(NAME, DESCRIPTION, |p: &Params| {
        let mut parts = AppParts::new(topology(p)?);
        parts.generator = Some(super::generators::emoji_stream_spec());
        let closed = Arc::new(ClosedWindows::new(p));
        let noting = closed.clone();
        parts.routes.push(json_route_noting(
            "/emoji",
            NAME,
            INPUT_TOPIC,
            |obj| {
                let user = string_field(obj, "user_id")?;
                string_field(obj, "emoji_type")?;
                time_field(obj, "timestamp")?;
                Ok(Some(user.to_string()))
            },
            move |items| noting.note(items),
        ));
        parts.routes.push(Route::new("/emoji/live", &[Method::GET], |ctx, _| {
            ctx.feed(OUTPUT_TOPIC).sse(50)
        }));
        let seen = closed.clone();
        parts
            .feeds
            .push(FeedSpec::new(OUTPUT_TOPIC).listen(move |v| seen.observe(v)));
        parts.services.push(Service {
            name: "closed-windows".into(),
            run: Box::new(move |ctx| {
                // The partition count of the re-keyed topic: asked once a
                // window has closed (the topic surely exists then; asking
                // earlier must not race its creation), until known.
                while !ctx.stopping() {
                    if !closed.seen_any() {
                        std::thread::sleep(std::time::Duration::from_millis(200));
                        continue;
                    }
                    match topic_partitions(&ctx, &repartition_topic()) {
                        Ok(n) if n > 0 => {
                            closed.set_partitions(n);
                            return Ok(());
                        }
                        _ => std::thread::sleep(std::time::Duration::from_secs(1)),
                    }
                }
                Ok(())
            }),
        });
        Ok(parts)
    })
}

/// Partitions of `topic` (0 while it does not exist).
fn topic_partitions(ctx: &weir::daemon::Context, topic: &str) -> anyhow::Result<usize> {
    use weir::connectors::kafka::rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = ctx.settings.standalone_consumer_config().create()?;
    let metadata = consumer.fetch_metadata(Some(topic), std::time::Duration::from_secs(5))?;
    Ok(metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .map(|t| t.partitions().len())
        .sum())
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir::testing::{TestDriverConfig, TopologyTestDriver};

    /// 2026-11-21T10:00:00.000Z, a multiple of every window size used here.
    const T0: i64 = 1_795_255_200_000;

    fn driver(p: &Params) -> TopologyTestDriver {
        let t = topology(p).expect("topology builds");
        TopologyTestDriver::new(t, TestDriverConfig::with_application_id(NAME)).expect("driver starts")
    }

    fn event(user: &str, emoji: &str, ms: i64) -> String {
        let ts = iso_millis(ms).expect("in range");
        format!(r#"{{"user_id": "{user}", "emoji_type": "{emoji}", "timestamp": "{ts}"}}"#)
    }

    /// Pipe one event with its JSON time as the event time; the Kafka
    /// timestamp is deliberately different (0) to show it is not used.
    fn send(d: &TopologyTestDriver, user: &str, emoji: &str, ms: i64) {
        d.pipe_raw(
            INPUT_TOPIC,
            Some(user.as_bytes()),
            Some(event(user, emoji, ms).as_bytes()),
            0,
        )
        .expect("pipe");
    }

    fn out(d: &TopologyTestDriver, topic: &str) -> Vec<(String, String)> {
        d.output_topic(topic, Serdes::string(), Serdes::string())
            .read_key_values()
    }

    #[test]
    fn time_format_matches_the_input() {
        assert_eq!(iso_millis(T0).as_deref(), Some("2026-11-21T10:00:00.000Z"));
        assert_eq!(iso_millis(T0 + 123).as_deref(), Some("2026-11-21T10:00:00.123Z"));
        let e: EmojiEvent = serde_json::from_str(&event("u42", "🔥", T0 + 123)).unwrap();
        assert_eq!(e.timestamp.timestamp_millis(), T0 + 123);
    }

    #[test]
    fn bursts_are_counted_and_scaled_per_window() {
        let d = driver(&Params::default());
        // Window [T0, T0+2000): 1001 🔥, 1000 😂, 1 👍.
        for i in 0..1001 {
            send(&d, &format!("u{}", i % 37), "🔥", T0 + (i % 2000));
        }
        for i in 0..1000 {
            send(&d, &format!("u{}", i % 41), "😂", T0 + 1999 - (i % 1000));
        }
        send(&d, "u1", "👍", T0 + 1500);
        // Window [T0+2000, T0+4000): 3 🔥. Stream time moves past the first
        // window's end, but not past end + grace.
        send(&d, "u1", "🔥", T0 + 2000);
        send(&d, "u2", "🔥", T0 + 2500);
        send(&d, "u3", "🔥", T0 + 2999);
        assert!(
            out(&d, OUTPUT_TOPIC).is_empty(),
            "nothing before the first window closes"
        );
        // Stream time T0 + 3000 = end + grace: the first window closes.
        send(&d, "u4", "😮", T0 + 3000);
        let w1 = |emoji: &str, count: u64, scaled: u64| {
            (
                emoji.to_string(),
                format!(
                    r#"{{"emoji_type":"{emoji}","window_start":"2026-11-21T10:00:00.000Z","window_end":"2026-11-21T10:00:02.000Z","count":{count},"scaled":{scaled}}}"#
                ),
            )
        };
        let mut first = out(&d, OUTPUT_TOPIC);
        first.sort();
        let mut want = vec![w1("🔥", 1001, 2), w1("😂", 1000, 1), w1("👍", 1, 1)];
        want.sort();
        assert_eq!(first, want);
        // The second window closes at stream time T0 + 5000.
        send(&d, "u5", "😮", T0 + 5000);
        let mut second = out(&d, OUTPUT_TOPIC);
        second.sort();
        assert_eq!(
            second,
            vec![
                (
                    "🔥".to_string(),
                    r#"{"emoji_type":"🔥","window_start":"2026-11-21T10:00:02.000Z","window_end":"2026-11-21T10:00:04.000Z","count":3,"scaled":1}"#.to_string()
                ),
                (
                    "😮".to_string(),
                    r#"{"emoji_type":"😮","window_start":"2026-11-21T10:00:02.000Z","window_end":"2026-11-21T10:00:04.000Z","count":1,"scaled":1}"#.to_string()
                ),
            ]
        );
        assert!(d.dead_letters().is_empty());
        assert_eq!(d.late_records_dropped(), 0);
    }

    #[test]
    fn a_window_closes_exactly_at_end_plus_grace() {
        let d = driver(&Params::default());
        send(&d, "u1", "🔥", T0 + 10);
        send(&d, "u2", "🔥", T0 + 2999);
        assert!(
            out(&d, OUTPUT_TOPIC).is_empty(),
            "stream time one ms before end + grace"
        );
        // Still in grace: counted.
        send(&d, "u3", "🔥", T0 + 1999);
        assert!(out(&d, OUTPUT_TOPIC).is_empty());
        send(&d, "u4", "🎉", T0 + 3000);
        let got = d.output_topic(OUTPUT_TOPIC, Serdes::string(), Serdes::json::<EmojiAggregate>());
        let records = got.read_records();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].key, "🔥");
        assert_eq!(
            records[0].value,
            EmojiAggregate {
                emoji_type: "🔥".into(),
                window_start: "2026-11-21T10:00:00.000Z".into(),
                window_end: "2026-11-21T10:00:02.000Z".into(),
                count: 2,
                scaled: 1,
            }
        );
        // Suppress stamps the final result with the window end.
        assert_eq!(records[0].timestamp, T0 + 2000);
        // Emitted once: more time passing emits no second copy.
        send(&d, "u5", "🎉", T0 + 3500);
        assert!(got.read_records().is_empty());
    }

    #[test]
    fn keys_that_are_not_utf8_are_ignored_not_dead_lettered() {
        let d = driver(&Params::default());
        let line = event("u1", "🔥", T0 + 10);
        d.pipe_raw(INPUT_TOPIC, Some(&[0xff, 0x00, 0xfe]), Some(line.as_bytes()), 0)
            .expect("pipe");
        d.pipe_raw(INPUT_TOPIC, None, Some(line.as_bytes()), 0).expect("pipe");
        assert_eq!(d.dead_letters(), vec![]);
        let counts = d.window_store(STORE, Serdes::string(), Serdes::u64()).unwrap();
        assert_eq!(counts.get(&"🔥".to_string(), T0), Some(2));
    }

    #[test]
    fn a_late_event_is_dropped_and_counted() {
        let d = driver(&Params::default());
        send(&d, "u1", "🔥", T0 + 100);
        send(&d, "u2", "🔥", T0 + 3000); // closes [T0, T0+2000)
        assert_eq!(out(&d, OUTPUT_TOPIC).len(), 1);
        send(&d, "u3", "🔥", T0 + 1999); // late
        assert_eq!(d.late_records_dropped(), 1);
        assert!(d.dead_letters().is_empty());
        send(&d, "u4", "🔥", T0 + 5000); // closes [T0+2000, T0+4000)
        let got = d
            .output_topic(OUTPUT_TOPIC, Serdes::string(), Serdes::json::<EmojiAggregate>())
            .read_values();
        // The late event changed nothing: the second window holds only the
        // event at T0 + 3000.
        assert_eq!(got.len(), 1);
        assert_eq!(
            (got[0].window_start.as_str(), got[0].count),
            ("2026-11-21T10:00:02.000Z", 1)
        );
    }

    #[test]
    fn undecodable_events_go_to_the_dlq() {
        let d = driver(&Params::default());
        let bad: [&[u8]; 5] = [
            b"{not json",
            br#"{"user_id": "u1", "timestamp": "2026-11-21T10:00:00.123Z"}"#,
            br#"{"user_id": "u1", "emoji_type": "x", "timestamp": "yesterday"}"#,
            br#"{"user_id": "u1", "emoji_type": "x"}"#,
            br#"[1, 2]"#,
        ];
        send(&d, "u0", "🔥", T0);
        for (i, v) in bad.iter().enumerate() {
            d.pipe_raw(INPUT_TOPIC, Some(b"u1"), Some(v), i as i64).unwrap();
        }
        send(&d, "u0", "🔥", T0 + 1);
        let letters = d.dead_letters();
        let got: Vec<(i64, &str)> = letters.iter().map(|l| (l.offset, l.error.as_str())).collect();
        let prefix = "value deserialization failed (json): invalid JSON: ";
        let want: Vec<(i64, String)> = vec![
            (1, format!("{prefix}key must be a string at line 1 column 2")),
            (2, format!("{prefix}missing field `emoji_type` at line 1 column 58")),
            (
                3,
                format!(
                    "{prefix}field `timestamp`: \"yesterday\" is not an RFC 3339 time (premature end of input) at line 1 column 62"
                ),
            ),
            (4, format!("{prefix}missing field `timestamp` at line 1 column 36")),
            (5, format!("{prefix}invalid type: integer `1`, expected a string at line 1 column 2")),
        ];
        assert_eq!(got, want.iter().map(|(o, e)| (*o, e.as_str())).collect::<Vec<_>>());
        assert!(letters
            .iter()
            .all(|l| l.topic == INPUT_TOPIC && l.key.as_deref() == Some(&b"u1"[..])));
        assert_eq!(letters[1].value.as_deref(), Some(bad[1]));
        // The valid events around them are counted.
        send(&d, "u0", "🎉", T0 + 3000);
        let got = d
            .output_topic(OUTPUT_TOPIC, Serdes::string(), Serdes::json::<EmojiAggregate>())
            .read_values();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].count, 2);
    }

    #[test]
    fn every_cluster_topic_gets_the_same_records() {
        let p = Params {
            clusters: 4,
            scale: NonZeroU64::new(2).unwrap(),
            ..Params::default()
        };
        let d = driver(&p);
        for i in 0..5 {
            send(&d, "u1", "🔥", T0 + i);
        }
        send(&d, "u1", "👏", T0 + 100);
        send(&d, "u1", "👏", T0 + 3000);
        let main = d.topic_records(OUTPUT_TOPIC);
        assert_eq!(main.len(), 2);
        let values: Vec<String> = main
            .iter()
            .map(|r| String::from_utf8(r.value.clone().unwrap()).unwrap())
            .collect();
        assert!(values.contains(
            &r#"{"emoji_type":"🔥","window_start":"2026-11-21T10:00:00.000Z","window_end":"2026-11-21T10:00:02.000Z","count":5,"scaled":3}"#.to_string()
        ));
        assert!(values.contains(
            &r#"{"emoji_type":"👏","window_start":"2026-11-21T10:00:00.000Z","window_end":"2026-11-21T10:00:02.000Z","count":1,"scaled":1}"#.to_string()
        ));
        for i in 1..=4 {
            assert_eq!(d.topic_records(&cluster_topic(i)), main, "emoji-cluster-{i}");
        }
        assert!(d.topic_records(&cluster_topic(5)).is_empty());
    }

    fn aggregate_json(emoji: &str, start: i64) -> String {
        serde_json::to_string(&EmojiAggregate {
            emoji_type: emoji.into(),
            window_start: iso_millis(start).unwrap(),
            window_end: iso_millis(start + 2000).unwrap(),
            count: 1,
            scaled: 1,
        })
        .unwrap()
    }

    fn reactions(items: &[(&str, i64)]) -> Vec<serde_json::Map<String, serde_json::Value>> {
        items
            .iter()
            .map(|(e, ms)| match serde_json::from_str(&event("u1", e, *ms)).unwrap() {
                serde_json::Value::Object(o) => o,
                _ => unreachable!(),
            })
            .collect()
    }

    #[test]
    fn post_answers_name_the_reactions_whose_window_has_closed() {
        let closed = ClosedWindows::new(&Params::default());
        let items = reactions(&[("🔥", T0 + 500)]);
        let refs: Vec<_> = items.iter().collect();
        assert!(closed.note(&refs).is_empty(), "nothing closed yet: nothing to say");
        assert!(!closed.seen_any());
        // 🔥's window [T0, T0+2s) closed: its task's stream time is at least
        // T0 + 3 s (end + grace).
        closed.observe(&aggregate_json("🔥", T0));
        closed.observe("not an aggregate");
        assert!(closed.seen_any());
        let items = reactions(&[("🔥", T0 + 2500), ("🔥", T0 + 1999), ("😂", T0 + 10)]);
        let refs: Vec<_> = items.iter().collect();
        assert_eq!(
            serde_json::Value::Object(closed.note(&refs)),
            serde_json::json!({
                "late": [{
                    "item": 1,
                    "emoji_type": "🔥",
                    "window_start": "2026-11-21T10:00:00.000Z",
                    "window_end": "2026-11-21T10:00:02.000Z",
                    "closed_at": "2026-11-21T10:00:03.000Z",
                    "stream_time": "2026-11-21T10:00:03.000Z",
                }],
                "warning": "1 of 3 reaction(s) arrived after their window closed and will not be counted \
                    (first: item 1, 🔥 in window 2026-11-21T10:00:00.000Z to 2026-11-21T10:00:02.000Z, \
                    closed at 2026-11-21T10:00:03.000Z; stream time 2026-11-21T10:00:03.000Z): they were \
                    produced to emoji-events all the same. Send \"timestamp\" as the current time.",
            })
        );
        // Once the partition count is known, an emoji shares the stream
        // time of every emoji of its partition.
        let same = ["😂", "👍", "🎉", "😮", "❤️", "👏", "🙌", "💯"]
            .into_iter()
            .find(|e| partition_of(e, 3) == partition_of("🔥", 3))
            .expect("an emoji in 🔥's partition");
        assert_eq!(closed.late(0, same, T0 + 10), None);
        closed.set_partitions(3);
        assert_eq!(
            closed.late(0, same, T0 + 10),
            Some(LateReaction {
                item: 0,
                emoji_type: same.into(),
                window_start: T0,
                window_end: T0 + 2000,
                stream_time: T0 + 3000,
            })
        );
        assert_eq!(closed.late(0, same, T0 + 2000), None, "the next window is open");
    }

    #[test]
    fn bad_window_parameters_are_errors() {
        let p = Params {
            window_ms: 0,
            ..Params::default()
        };
        assert!(matches!(topology(&p), Err(TopologyError::InvalidWindow(_))));
        let p = Params {
            grace_ms: -1,
            ..Params::default()
        };
        assert_eq!(
            topology(&p).err().map(|e| e.to_string()).as_deref(),
            Some("invalid window: grace must not be negative, got -1 ms")
        );
    }
}
