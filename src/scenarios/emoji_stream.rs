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
    DateTime::parse_from_rfc3339(&s)
        .map(|t| t.with_timezone(&Utc))
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
        .count(Materialized::named(STORE))
        .suppress(Suppressed::until_window_closes())
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

/// The registration of this scenario with the daemon (parameters from
/// `[topologies.{NAME}]` of the config).
///
/// Routes: `POST /emoji` (one reaction or an array; all checked before any
/// is produced) and `GET /emoji/live` (the aggregates as Server-Sent
/// Events).
pub fn app() -> weir::daemon::App {
    use weir::daemon::ingress::{json_route, string_field, time_field};
    use weir::daemon::{AppParts, Method, Route, Service};
    weir::daemon::App::with_params(NAME, DESCRIPTION, |p: &Params| {
        let mut parts = AppParts::new(topology(p)?);
        parts.generator = Some(super::generators::emoji_stream_spec());
        parts.routes.push(json_route("/emoji", NAME, INPUT_TOPIC, |obj| {
            let user = string_field(obj, "user_id")?;
            string_field(obj, "emoji_type")?;
            time_field(obj, "timestamp")?;
            Ok(Some(user.to_string()))
        }));
        parts.routes.push(Route::new("/emoji/live", &[Method::GET], |ctx, _| {
            ctx.feed(OUTPUT_TOPIC).sse(50)
        }));
        parts.services.push(Service::feed(OUTPUT_TOPIC));
        Ok(parts)
    })
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
