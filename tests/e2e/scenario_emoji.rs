//! `emoji-stream` end to end (SCENARIOS.md §1): `weir run emoji-stream`
//! against `weir dev-broker`, with reactions POSTed to `/emoji` at fixed
//! event times (2026-11-21T10:00:00Z onwards, far from the wall clock).
//!
//! Checks the exact aggregates on `emoji-aggregated` and on every
//! `emoji-cluster-N`, `scaled = ceil(count / scale)` with scale 2, that a
//! bad POST is a 400 naming the field and writes nothing, that reactions for
//! a closed window raise `weir_late_records_dropped_total` by exactly their
//! number, and that `GET /emoji/live` (SSE) delivers the aggregates.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::harness::*;

const APP: &str = "emoji-stream";
const INPUT: &str = "emoji-events";
const OUTPUT: &str = "emoji-aggregated";
const REPARTITION: &str = "emoji-stream-emoji-counts-repartition";
const CLUSTERS: usize = 3;

/// 2026-11-21T10:00:00.000Z in epoch ms: a multiple of the window size.
pub(crate) const T0: i64 = 1_795_255_200_000;

/// Epoch ms as `2026-11-21T10:00:00.000Z` (no chrono in the test: plain
/// arithmetic on a day that starts at T0 - 10 h).
pub(crate) fn iso(ms: i64) -> String {
    let day_start = T0 - 10 * 3_600_000;
    let offset = ms - day_start;
    assert!((0..86_400_000).contains(&offset), "test times stay on 2026-11-21");
    let (h, m, s, milli) = (
        offset / 3_600_000,
        offset / 60_000 % 60,
        offset / 1000 % 60,
        offset % 1000,
    );
    format!("2026-11-21T{h:02}:{m:02}:{s:02}.{milli:03}Z")
}

pub(crate) fn reaction(user: &str, emoji: &str, ms: i64) -> String {
    format!(
        r#"{{"user_id":"{user}","emoji_type":"{emoji}","timestamp":"{}"}}"#,
        iso(ms)
    )
}

fn post(addr: &str, items: &[String]) -> (u16, String) {
    let body = format!("[{}]", items.join(","));
    http_call(addr, "POST", "/emoji", Some(body.as_bytes()))
}

/// The aggregate of one window as the topology must write it (the exact
/// JSON text: field order and formatting are the contract's).
pub(crate) fn aggregate(emoji: &str, start: i64, count: u64, scale: u64) -> String {
    format!(
        r#"{{"emoji_type":"{emoji}","window_start":"{}","window_end":"{}","count":{count},"scaled":{}}}"#,
        iso(start),
        iso(start + 2000),
        count.div_ceil(scale)
    )
}

/// (key, value) of every record of `topic`, sorted.
fn key_values(brokers: &str, topic: &str) -> Vec<(String, String)> {
    let mut kv: Vec<(String, String)> = read_topic(brokers, topic)
        .iter()
        .map(|r| (r.key_str(), r.value_str()))
        .collect();
    kv.sort();
    kv
}

/// `GET /emoji/live` opened on its own connection; the events are read
/// later from the socket's buffer.
struct Sse {
    conn: TcpStream,
    text: String,
}

impl Sse {
    fn open(addr: &str) -> Sse {
        let mut conn = TcpStream::connect(addr).expect("connect for SSE");
        conn.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        write!(
            conn,
            "GET /emoji/live HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n"
        )
        .unwrap();
        let mut sse = Sse {
            conn,
            text: String::new(),
        };
        // The headers and the first comment prove the subscription is in
        // place before anything is posted.
        sse.read_until("the SSE stream to open", |t| t.contains(": connected"));
        let head = sse
            .text
            .split("\r\n\r\n")
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert!(head.contains("content-type: text/event-stream"), "{head}");
        sse
    }

    fn read_until(&mut self, what: &str, mut done: impl FnMut(&str) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut buf = [0u8; 4096];
        while !done(&self.text) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; got {:?}",
                self.text
            );
            match self.conn.read(&mut buf) {
                Ok(0) => panic!("the SSE stream closed; got {:?}", self.text),
                Ok(n) => self.text.push_str(&String::from_utf8_lossy(&buf[..n])),
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(e) => panic!("reading the SSE stream: {e}"),
            }
        }
    }

    /// The `data:` lines so far (each event is one chunk of the chunked
    /// body, so a data line is never split by the chunk framing).
    fn data(&self) -> Vec<String> {
        self.text
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .map(|l| l.trim_end().to_string())
            .collect()
    }
}

#[test]
fn scenario_emoji_windows_scaled_fanout_bad_posts_late_records_and_sse() {
    let broker = DevBroker::start(3);
    let brokers = broker.addr().to_string();
    let (mut daemon, addr, _config_dir) = ready_daemon_with_config(
        "emoji",
        &brokers,
        APP,
        "[topologies.emoji-stream]\nwindow_ms = 2000\ngrace_ms = 1000\nscale = 2\nclusters = 3\n",
    );

    // Bad requests: 400 naming the field, and nothing produced.
    let before = watermarks(&brokers, INPUT);
    let good = reaction("u1", "🔥", T0);
    let bad: [(String, &[&str]); 6] = [
        (
            r#"{"user_id":"u1","timestamp":"2026-11-21T10:00:00.000Z"}"#.into(),
            &["\"emoji_type\"", "missing"],
        ),
        (
            r#"{"user_id":"u1","emoji_type":"x","timestamp":"yesterday"}"#.into(),
            &["\"timestamp\"", "yesterday"],
        ),
        (
            r#"{"emoji_type":"x","timestamp":"2026-11-21T10:00:00.000Z"}"#.into(),
            &["\"user_id\""],
        ),
        ("{oops".into(), &["not JSON"]),
        ("".into(), &["empty"]),
        (
            format!(r#"[{good},{{"user_id":"u2","emoji_type":"x"}}]"#),
            &["item 1", "\"timestamp\""],
        ),
    ];
    for (shown, words) in bad {
        let (code, answer) = http_call(&addr, "POST", "/emoji", Some(shown.as_bytes()));
        assert_eq!(code, 400, "POST /emoji {shown}: {answer}");
        let v: serde_json::Value = serde_json::from_str(&answer).unwrap_or_else(|e| panic!("{e}: {answer}"));
        let message = v["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error message: {answer}"));
        for w in words {
            assert!(
                message.contains(w),
                "POST /emoji {shown}: {message:?} does not say {w:?}"
            );
        }
    }
    let (code, answer) = http_call(&addr, "GET", "/emoji", None);
    assert_eq!(code, 405, "{answer}");
    assert_eq!(watermarks(&brokers, INPUT), before, "a rejected POST produced records");

    let mut sse = Sse::open(&addr);

    // Window 1 [T0, T0+2s): 5 🔥, 4 😂, 1 👍; window 2 [T0+2s, T0+4s): 3 🔥,
    // 2 😂; in one array, out of order but within window 1's grace (its end
    // + 1 s = T0+3s), so no window closes and none is late.
    let mut burst = Vec::new();
    for i in 0..5 {
        burst.push(reaction(&format!("u{i}"), "🔥", T0 + 1999 - i * 300));
    }
    for i in 0..4 {
        burst.push(reaction(&format!("u{}", i + 5), "😂", T0 + i * 400));
    }
    burst.push(reaction("u9", "👍", T0 + 1500));
    for i in 0..3 {
        burst.push(reaction(&format!("u{i}"), "🔥", T0 + 2999 - i));
    }
    for i in 0..2 {
        burst.push(reaction(&format!("u{i}"), "😂", T0 + 2000 + i));
    }
    burst.swap(0, 12);
    let (code, answer) = post(&addr, &burst);
    assert_eq!(code, 200, "{answer}");
    let v: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(v["produced"], 15, "{answer}");
    assert_eq!(topic_total(&brokers, INPUT), 15);
    let keys: BTreeSet<String> = read_topic(&brokers, INPUT).iter().map(|r| r.key_str()).collect();
    assert_eq!(keys, (0..10).map(|i| format!("u{i}")).collect(), "keyed by user_id");

    // Stream time is per task: the reactions that close the windows (one
    // per emoji, so every task holding a window gets one) must reach the
    // re-keyed topic after the burst, which the first sub-topology's tasks
    // forward in their own order. So the burst is in that topic first.
    wait_for("the burst to be re-keyed", Duration::from_secs(30), || {
        daemon.assert_running();
        match topic_total(&brokers, REPARTITION) {
            15 => Ok(()),
            n => Err(format!("{n} of 15 in {REPARTITION}")),
        }
    });
    assert!(key_values(&brokers, OUTPUT).is_empty(), "no window has closed yet");
    let advance: Vec<String> = ["🔥", "😂", "👍"]
        .iter()
        .map(|e| reaction("u99", e, T0 + 10_000))
        .collect();
    let (code, answer) = post(&addr, &advance);
    assert_eq!(code, 200, "{answer}");

    let mut want = vec![
        ("🔥".to_string(), aggregate("🔥", T0, 5, 2)),
        ("😂".to_string(), aggregate("😂", T0, 4, 2)),
        ("👍".to_string(), aggregate("👍", T0, 1, 2)),
        ("🔥".to_string(), aggregate("🔥", T0 + 2000, 3, 2)),
        ("😂".to_string(), aggregate("😂", T0 + 2000, 2, 2)),
    ];
    want.sort();
    let mut output = TopicReader::open(&brokers, OUTPUT, Duration::from_secs(30));
    wait_for(
        "the five closed windows on emoji-aggregated",
        Duration::from_secs(30),
        || {
            daemon.assert_running();
            output.catch_up(Duration::from_secs(10));
            if output.records.len() >= want.len() {
                Ok(())
            } else {
                Err(format!("{} records", output.records.len()))
            }
        },
    );
    let mut got: Vec<(String, String)> = output.records.iter().map(|r| (r.key_str(), r.value_str())).collect();
    got.sort();
    assert_eq!(got, want, "emoji-aggregated");
    for i in 1..=CLUSTERS {
        let topic = format!("emoji-cluster-{i}");
        wait_for(
            &format!("{topic} to hold the five aggregates"),
            Duration::from_secs(30),
            || {
                let kv = key_values(&brokers, &topic);
                if kv == want {
                    Ok(())
                } else {
                    Err(format!("{kv:?}"))
                }
            },
        );
    }

    // The live feed delivered the same aggregates, each once.
    sse.read_until("five SSE events", |t| t.matches("\ndata: ").count() >= want.len());
    let mut live = sse.data();
    live.sort();
    let mut values: Vec<String> = want.iter().map(|(_, v)| v.clone()).collect();
    values.sort();
    assert_eq!(live, values, "GET /emoji/live");

    // Late reactions: window 1 closed at stream time T0 + 3 s (end + grace)
    // in every task that holds these emojis; K of them are dropped and
    // counted, and change no output.
    let late_labels = [("topology", APP)];
    let late_before = metric_sum(&addr, "weir_late_records_dropped_total", &late_labels).unwrap();
    let late: Vec<String> = (0..4)
        .map(|i| reaction(&format!("u{i}"), if i % 2 == 0 { "🔥" } else { "😂" }, T0 + 500 + i))
        .collect();
    let (code, answer) = post(&addr, &late);
    assert_eq!(code, 200, "{answer}");
    let total = 15 + 3 + 4;
    wait_for(
        "every re-keyed reaction to be consumed",
        Duration::from_secs(30),
        || {
            daemon.assert_running();
            let written = topic_total(&brokers, REPARTITION);
            let consumed = metric_sum(&addr, "weir_records_consumed_total", &[("topic", REPARTITION)])?;
            let late = metric_sum(&addr, "weir_late_records_dropped_total", &late_labels)?;
            if written == total && consumed == total as f64 && late == late_before + 4.0 {
                Ok(())
            } else {
                Err(format!(
                    "written {written}, consumed {consumed} of {total}, late {late} (was {late_before})"
                ))
            }
        },
    );
    output.catch_up(Duration::from_secs(10));
    assert_eq!(output.records.len(), want.len(), "late reactions changed the output");
    assert_eq!(
        topic_total(&brokers, INPUT),
        total,
        "emoji-events holds exactly the accepted reactions"
    );
    let dlq = metric_sum(&addr, "weir_dlq_records_total", &late_labels).unwrap();
    assert_eq!(dlq, 0.0, "no accepted reaction was dead-lettered");
    daemon.assert_running();
}
