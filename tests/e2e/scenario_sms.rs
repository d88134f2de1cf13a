//! `sms-delivery` end to end (SCENARIOS.md §4): `weir run sms-delivery`
//! against `weir dev-broker` (3 partitions, so 3 senders), 1,000 messages
//! asked for with `POST` and `GET /produce-messages?count=N`, failure
//! probability 0.1 and the simulated send time on.
//!
//! The simulated send is a documented deterministic function of the seed
//! and the message id (see the module docs of `sms_delivery.rs`), which this
//! test implements again on its own: from the messages on `sms-messages` it
//! predicts every status record on `sender-status-updates` and the final
//! `/monitor` answer exactly.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::harness::*;

const APP: &str = "sms-delivery";
const INPUT: &str = "sms-messages";
const STATUS: &str = "sender-status-updates";
const SEED: u64 = 0x5eed;
const FAILURE: f64 = 0.1;
const MEAN_MS: f64 = 5.0;

fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// `unit(p, a)` of the documented formula, for id text `id`.
fn unit(id: &str, purpose: u64, attempt: u64) -> f64 {
    let draw = splitmix64(splitmix64(fnv1a64(id.as_bytes()) ^ SEED) ^ (purpose << 32 | attempt));
    (draw >> 11) as f64 / (1u64 << 53) as f64
}

/// (delivered, duration in µs) of one message with no retries.
fn send(id: &str) -> (bool, u64) {
    let duration = (MEAN_MS * 1000.0 * (0.5 + unit(id, 1, 0))) as u64;
    (unit(id, 0, 0) >= FAILURE, duration)
}

/// A sender's cumulative state: (success, failed, total µs).
#[derive(Clone, Copy, Default, Debug, PartialEq)]
struct State(u64, u64, u64);

impl State {
    /// The published status, `total_processing_time` in seconds rounded
    /// half up to 2 decimals.
    fn status(&self, sender: &str) -> serde_json::Value {
        serde_json::json!({
            "sender_id": sender,
            "success_count": self.0,
            "failed_count": self.1,
            "total_processing_time": ((self.2 + 5_000) / 10_000) as f64 / 100.0,
        })
    }
}

/// A JSON object with its keys in the order of the text.
struct Ordered(Vec<(String, serde_json::Value)>);

impl<'de> serde::Deserialize<'de> for Ordered {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Ordered;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<Ordered, A::Error> {
                let mut entries = Vec::new();
                while let Some(e) = m.next_entry::<String, serde_json::Value>()? {
                    entries.push(e);
                }
                Ok(Ordered(entries))
            }
        }
        d.deserialize_map(V)
    }
}

fn monitor(addr: &str) -> Result<serde_json::Value, String> {
    match http_request(addr, "GET", "/monitor", None)? {
        (200, body) => serde_json::from_str(&body).map_err(|e| format!("{e}: {body}")),
        (code, body) => Err(format!("{code} {body}")),
    }
}

#[test]
fn scenario_sms_exact_statuses_monitor_and_count_checks() {
    let broker = DevBroker::start(3);
    let brokers = broker.addr().to_string();
    let (mut daemon, addr, _config_dir) = ready_daemon_with_config(
        "sms",
        &brokers,
        APP,
        &format!(
            "[topologies.sms-delivery]\nsend_time_mean_ms = {MEAN_MS}\nfailure_probability = {FAILURE}\n\
             max_retries = 0\nseed = {SEED}\nsimulate_delay = true\n"
        ),
    );
    assert_eq!(watermarks(&brokers, INPUT).len(), 3, "one partition per sender");

    // Bad counts: 400 with a reason, nothing produced.
    for (query, words) in [
        ("?count=abc", &["count", "\"abc\""][..]),
        ("?count=0", &["count", "between 1 and", "got 0"][..]),
        ("?count=-5", &["count", "\"-5\""][..]),
        ("?count=1000000", &["count", "got 1000000"][..]),
        ("", &["missing", "count"][..]),
    ] {
        for method in ["POST", "GET"] {
            let (code, body) = http_call(&addr, method, &format!("/produce-messages{query}"), None);
            assert_eq!(code, 400, "{method} /produce-messages{query}: {body}");
            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
            let message = v["error"].as_str().unwrap_or_else(|| panic!("no error: {body}"));
            for w in words {
                assert!(
                    message.contains(w),
                    "{method} /produce-messages{query}: {message:?} lacks {w:?}"
                );
            }
        }
    }
    assert_eq!(topic_total(&brokers, INPUT), 0, "a rejected request produced messages");

    // 990 by POST, 10 by GET (the original system's way).
    for (method, n) in [("POST", 990), ("GET", 10)] {
        let (code, body) = http_call(&addr, method, &format!("/produce-messages?count={n}"), None);
        assert_eq!(code, 200, "{method}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v, serde_json::json!({"produced": n, "topic": INPUT}), "{method}");
    }
    let (code, body) = http_call(&addr, "DELETE", "/produce-messages?count=1", None);
    assert_eq!(code, 405, "{body}");

    // The messages, and what each sender must make of them.
    let messages = read_topic(&brokers, INPUT);
    assert_eq!(messages.len(), 1000);
    let mut expected: BTreeMap<String, Vec<State>> = BTreeMap::new();
    let mut ids = std::collections::BTreeSet::new();
    for m in &messages {
        let v: serde_json::Value = serde_json::from_str(&m.value_str()).unwrap();
        let obj = v.as_object().unwrap_or_else(|| panic!("{v}"));
        assert_eq!(obj.len(), 3, "{v}");
        let id = match &obj["id"] {
            serde_json::Value::Number(n) if n.is_i64() => n.to_string(),
            serde_json::Value::String(s) => s.clone(),
            other => panic!("id {other}"),
        };
        assert!(ids.insert(id.clone()), "duplicate id {id}");
        assert!(obj["number"].as_str().is_some_and(|n| !n.is_empty()), "{v}");
        assert_eq!(obj["content"].as_str().map(|c| c.chars().count()), Some(100), "{v}");
        let states = expected.entry(format!("sender_{}", m.partition)).or_default();
        let mut s = states.last().copied().unwrap_or_default();
        let (delivered, us) = send(&id);
        if delivered {
            s.0 += 1;
        } else {
            s.1 += 1;
        }
        s.2 += us;
        states.push(s);
    }
    let senders: Vec<&String> = expected.keys().collect();
    assert_eq!(
        senders,
        ["sender_0", "sender_1", "sender_2"],
        "every partition has messages"
    );
    let finals: Vec<(String, State)> = expected.iter().map(|(k, v)| (k.clone(), *v.last().unwrap())).collect();
    let delivered: u64 = finals.iter().map(|(_, s)| s.0).sum();
    let failed: u64 = finals.iter().map(|(_, s)| s.1).sum();
    assert_eq!(delivered + failed, 1000);
    assert!((40..=180).contains(&failed), "{failed} failures of 1000 at p = 0.1");

    // /monitor reaches the exact totals.
    let want_monitor = serde_json::json!({
        "senders": finals.iter().map(|(k, s)| s.status(k)).collect::<Vec<_>>(),
        "delivered": delivered,
        "failed": failed,
        "pending": 0,
        "produced": 1000,
    });
    let got = wait_for("/monitor to count all 1000 messages", Duration::from_secs(45), || {
        daemon.assert_running();
        let v = monitor(&addr)?;
        let done = v["delivered"].as_u64().unwrap_or(0) + v["failed"].as_u64().unwrap_or(0);
        if done == 1000 {
            Ok(v)
        } else {
            Err(v.to_string())
        }
    });
    assert_eq!(got, want_monitor, "/monitor");

    // Every status record, exactly: one per message, cumulative per sender,
    // with the contract's keys in the contract's order and types.
    let mut status = TopicReader::open(&brokers, STATUS, Duration::from_secs(10));
    wait_for("1000 status records", Duration::from_secs(30), || {
        status.catch_up(Duration::from_secs(10));
        match status.records.len() {
            1000 => Ok(()),
            n => Err(format!("{n}")),
        }
    });
    let mut got: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
    for r in &status.records {
        let text = r.value_str();
        let Ordered(fields) = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        let keys: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            ["sender_id", "success_count", "failed_count", "total_processing_time"],
            "{text}"
        );
        assert!(fields[0].1.is_string(), "{text}");
        assert!(
            fields[1].1.is_u64() && fields[2].1.is_u64(),
            "counts are integers: {text}"
        );
        assert!(fields[3].1.is_f64(), "total_processing_time is a float: {text}");
        let time_text = text.rsplit(':').next().unwrap().trim().trim_end_matches('}');
        assert!(
            time_text
                .split_once('.')
                .is_some_and(|(_, d)| (1..=2).contains(&d.len())),
            "seconds with at most 2 decimals: {text}"
        );
        let sender = fields[0].1.as_str().unwrap().to_string();
        assert_eq!(r.key_str(), sender, "keyed by sender id: {text}");
        got.entry(sender)
            .or_default()
            .push(serde_json::from_str(&text).unwrap());
    }
    for (sender, states) in &expected {
        let want: Vec<serde_json::Value> = states.iter().map(|s| s.status(sender)).collect();
        let have = got.get(sender).map(Vec::as_slice).unwrap_or_default();
        assert_eq!(have.len(), want.len(), "status records of {sender}");
        for (i, (h, w)) in have.iter().zip(&want).enumerate() {
            assert_eq!(h, w, "status record {i} of {sender}");
        }
    }
    assert_eq!(got.len(), 3, "{:?}", got.keys().collect::<Vec<_>>());
    daemon.assert_running();
}
