//! `hashtag-trends` end to end (SCENARIOS.md §2): known tweets produced to
//! `twitter` (JSON with fixed `created_at` on 2026-11-21, far from the wall
//! clock) through `weir dev-broker`, with small windows from a config file
//! (10 s windows advancing by 5 s, no grace); the exact top-10 rankings on
//! `hashtag-ranking` and the exact running counts at
//! `GET /stores/term-counts?key=...`.
//!
//! The broker has one partition per topic: stream time is per task, and
//! with one partition the two tweets that advance it reach every stage (with
//! several, a stage's task sees only the terms hashed to it, and which those
//! are is the partitioner's business, not this test's).

use std::time::Duration;

use crate::harness::*;

const APP: &str = "hashtag-trends";
const INPUT: &str = "twitter";
const OUTPUT: &str = "hashtag-ranking";

/// `2026-11-21THH:MM:SS.mmmZ`, `secs` seconds (and `millis`) after
/// 10:00:00 (a multiple of every window size here).
fn at(secs: i32, millis: u32) -> String {
    let total = 10 * 3600 + secs;
    format!(
        "2026-11-21T{:02}:{:02}:{:02}.{millis:03}Z",
        total / 3600,
        total / 60 % 60,
        total % 60
    )
}

fn tweet(id: u64, user: &str, text: &str, created_at: &str) -> String {
    serde_json::json!({"id": id, "user": user, "text": text, "created_at": created_at}).to_string()
}

/// The exact text of one ranking record (field order is the contract's).
fn ranking(start: &str, end: &str, entries: &[(&str, u64)]) -> String {
    let list: Vec<String> = entries
        .iter()
        .map(|(t, c)| format!(r#"{{"term":"{t}","count":{c}}}"#))
        .collect();
    format!(
        r#"{{"window_start":"{start}","window_end":"{end}","ranking":[{}]}}"#,
        list.join(",")
    )
}

fn store_value(addr: &str, key: &str) -> (u16, serde_json::Value) {
    let (code, body) = http_call(addr, "GET", &format!("/stores/term-counts?key={key}"), None);
    let v = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    (code, v)
}

#[test]
fn scenario_hashtag_top10_per_window_and_term_counts() {
    let broker = DevBroker::start(1);
    let brokers = broker.addr().to_string();
    let (mut daemon, addr, _config_dir) = ready_daemon_with_config(
        "hashtag",
        &brokers,
        APP,
        "[topologies.hashtag-trends]\nwindow_size_ms = 10000\nadvance_ms = 5000\ngrace_ms = 0\nranking_grace_ms = 0\n",
    );

    // Twelve hashtags in [10:00:01, 10:00:05): #rust 5, #kafka 4, #python 3,
    // #streams 3, #go 2, #java 2, #sql 2, then #ai #data #ml #web #zig once
    // each: the top 10 breaks the ties by term and leaves out #web and #zig.
    // Case, punctuation, URLs and stop words are the topology's to handle.
    let texts = [
        "Loving #Rust and #kafka today! https://t.co/abc",
        "#rust #RUST, the #kafka way #streams",
        "is #python or #rust better? #go #java",
        "#Kafka #streams #python #sql www.example.com",
        "#rust: #kafka #streams #python #go #java #sql",
        "the #ai #data #ml #web #zig of it all",
    ];
    let mut lines = String::new();
    for (i, text) in texts.iter().enumerate() {
        lines.push_str(&tweet(
            i as u64 + 1,
            "someone",
            text,
            &at(1 + i as i32 / 2, 100 * i as u32),
        ));
        lines.push('\n');
    }
    produce(&brokers, INPUT, lines.as_bytes());
    // Stream time to 10:01:40: every window holding the tweets closes, and
    // with them their counts reach the ranking stage. Then 10:03:20: the
    // counts of #later's windows move the ranking stage past the earlier
    // windows' rankings (see hashtag_trends.rs on how a ranking is emitted).
    // Both #later tweets are in offset order after the others: one partition.
    produce(
        &brokers,
        INPUT,
        format!(
            "{}\n{}\n",
            tweet(100, "late", "#later", &at(100, 0)),
            tweet(101, "late", "#later", &at(200, 0))
        )
        .as_bytes(),
    );

    let top = [
        ("#rust", 5),
        ("#kafka", 4),
        ("#python", 3),
        ("#streams", 3),
        ("#go", 2),
        ("#java", 2),
        ("#sql", 2),
        ("#ai", 1),
        ("#data", 1),
        ("#ml", 1),
    ];
    // The tweets are in the hopping windows starting 09:59:55 and 10:00:00;
    // #later (10:01:40) in those starting 10:01:35 and 10:01:40, of which the
    // ranking stage has closed the first.
    let want = vec![
        (at(-5, 0), ranking(&at(-5, 0), &at(5, 0), &top)),
        (at(0, 0), ranking(&at(0, 0), &at(10, 0), &top)),
        (at(95, 0), ranking(&at(95, 0), &at(105, 0), &[("#later", 1)])),
    ];
    let mut output = TopicReader::open(&brokers, OUTPUT, Duration::from_secs(30));
    wait_for("three rankings on hashtag-ranking", Duration::from_secs(40), || {
        daemon.assert_running();
        output.catch_up(Duration::from_secs(10));
        if output.records.len() >= want.len() {
            Ok(())
        } else {
            Err(format!(
                "{:?}",
                output.records.iter().map(|r| r.value_str()).collect::<Vec<_>>()
            ))
        }
    });
    let got: Vec<(String, String)> = output.records.iter().map(|r| (r.key_str(), r.value_str())).collect();
    assert_eq!(got, want, "hashtag-ranking, in order, keyed by window start");

    // The running counts (not windowed), from committed state.
    wait_for("term-counts to hold #rust = 5", Duration::from_secs(30), || {
        daemon.assert_running();
        match store_value(&addr, "%23rust") {
            (200, v) if v["value"] == 5 => Ok(()),
            (code, v) => Err(format!("{code} {v}")),
        }
    });
    let (code, v) = store_value(&addr, "%23rust");
    assert_eq!(
        (code, v),
        (
            200,
            serde_json::json!({"store": "term-counts", "key": "#rust", "value": 5})
        )
    );
    for (key, count) in [
        ("%23kafka", 4),
        ("%23later", 2),
        ("loving", 1),
        ("better", 1),
        ("way", 1),
    ] {
        let (code, v) = store_value(&addr, key);
        assert_eq!((code, &v["value"]), (200, &serde_json::json!(count)), "{key}: {v}");
    }
    // Words and hashtags are distinct terms; stop words and URLs are not
    // counted.
    for key in ["rust", "the", "and", "https", "t", "co", "www", "example"] {
        let (code, v) = store_value(&addr, key);
        assert_eq!(code, 404, "{key}: {v}");
    }

    // /hashtags/top: the latest ranking written.
    let (code, body) = http_call(&addr, "GET", "/hashtags/top", None);
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let last: serde_json::Value = serde_json::from_str(&want[2].1).unwrap();
    assert_eq!(v["latest"], last, "{body}");

    output.catch_up(Duration::from_secs(10));
    assert_eq!(output.records.len(), 3, "no ranking emitted twice");
    daemon.assert_running();
}
