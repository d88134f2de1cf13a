//! `sms-delivery`: an SMS gateway with parallel senders and a live monitor
//! (SCENARIOS.md §4).
//!
//! `sms-messages` carries `{"id", "number", "content"}`. Each partition's
//! task is one sender, `sender_{partition}`: a user [`Processor`] that
//! "sends" each message (a simulated send that takes time and may fail,
//! retried up to `max_retries` times), keeps its cumulative counts in the
//! logged store `sender-state` (so they survive a restart or a move to
//! another instance), and after every message publishes its status
//!
//! ```json
//! {"sender_id": "sender_1", "success_count": 6, "failed_count": 1, "total_processing_time": 7.01}
//! ```
//!
//! keyed by sender id to `sender-status-updates`. The monitor reads that
//! topic back as a table: the queryable store `sender-status` holds the
//! latest status per sender.
//!
//! ## The simulated send
//!
//! Outcomes and durations are a deterministic function of the seed, the
//! message id and the attempt number, so that a replay after a crash makes
//! the same decisions and tests can predict exact counts:
//!
//! ```text
//! fnv1a64(bytes)  = FNV-1a, 64 bit (offset 0xcbf29ce484222325, prime 0x100000001b3)
//! splitmix64(x)   = the SplitMix64 output function of x + 0x9E3779B97F4A7C15
//! draw(p, a)      = splitmix64(splitmix64(fnv1a64(id) ^ seed) ^ (p << 32 | a))
//! unit(p, a)      = (draw(p, a) >> 11) / 2^53                      ∈ [0, 1)
//! attempt a fails ⇔ unit(0, a) < failure_probability
//! duration(a) µs  = floor(send_time_mean_ms · 1000 · (0.5 + unit(1, a)))
//! ```
//!
//! where `id` is the message id as text (a JSON string as is, an integer in
//! decimal) and attempts count from 0. A message is delivered if one of its
//! `1 + max_retries` attempts succeeds, failed otherwise; every attempt's
//! duration counts towards `total_processing_time`. Durations are uniform
//! on [0.5, 1.5) × the mean, so the mean is `send_time_mean_ms` and no send
//! takes an absurd time.

use std::borrow::Cow;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use weir::prelude::*;
use weir::store::StoreToken;

pub const NAME: &str = "sms-delivery";
pub const DESCRIPTION: &str =
    "an SMS gateway: one simulated sender per partition, status updates and a live monitor table";

/// The input topic (SCENARIOS.md).
pub const INPUT_TOPIC: &str = "sms-messages";
/// Where senders publish their status (SCENARIOS.md).
pub const STATUS_TOPIC: &str = "sender-status-updates";
/// The senders' own cumulative state, one entry per sender.
pub const SENDER_STATE: &str = "sender-state";
/// The monitor's queryable table: the latest status per sender.
pub const STATUS_STORE: &str = "sender-status";

/// A probability in `[0, 1]`. Parameters are checked where they are made,
/// so a topology cannot be built with a failure rate of 1.5 or NaN.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct Probability(f64);

impl<'de> serde::Deserialize<'de> for Probability {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let p = f64::deserialize(d)?;
        Probability::new(p).ok_or_else(|| serde::de::Error::custom(format!("{p} is not a probability in [0, 1]")))
    }
}

impl Probability {
    /// `None` unless `0 <= p <= 1`.
    pub fn new(p: f64) -> Option<Self> {
        (0.0..=1.0).contains(&p).then_some(Probability(p))
    }
    pub fn get(self) -> f64 {
        self.0
    }
}

/// Settings of the topology.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Params {
    /// Mean simulated duration of one send attempt, ms.
    pub send_time_mean_ms: u64,
    /// Chance that one send attempt fails.
    pub failure_probability: Probability,
    /// How many times a failed send is retried before the message counts
    /// as failed.
    pub max_retries: u32,
    /// Seed of the simulated outcomes (see the module docs).
    pub seed: u64,
    /// Really wait for each simulated send (in the sender's task, as a real
    /// gateway call would block it), so that throughput and progress look
    /// like the original system's. Tests turn it off.
    pub simulate_delay: bool,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            send_time_mean_ms: 5,
            failure_probability: Probability(0.1),
            max_retries: 0,
            seed: 0x5eed,
            simulate_delay: true,
        }
    }
}

/// A message id: the contract does not fix its type, and a Python producer
/// may send `"id": 17` or `"id": "5b0e…"`, so both are accepted. The
/// simulated send uses its text form (see [`MessageId::as_text`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum MessageId {
    Int(i64),
    Text(String),
}

impl MessageId {
    /// A string id as is, an integer in decimal: `17` and `"17"` are the
    /// same message to the sender.
    pub fn as_text(&self) -> Cow<'_, str> {
        match self {
            MessageId::Int(n) => Cow::Owned(n.to_string()),
            MessageId::Text(s) => Cow::Borrowed(s),
        }
    }
}

impl<'de> Deserialize<'de> for MessageId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Untagged enums report "did not match any variant"; name the field.
        let v = serde_json::Value::deserialize(d)?;
        match &v {
            serde_json::Value::String(s) => return Ok(MessageId::Text(s.clone())),
            serde_json::Value::Number(n) => {
                if let Some(i) = n.as_i64() {
                    return Ok(MessageId::Int(i));
                }
            }
            _ => {}
        }
        Err(serde::de::Error::custom(format!(
            "field `id`: expected a string or an integer, got {v}"
        )))
    }
}

/// One SMS to send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmsMessage {
    pub id: MessageId,
    pub number: String,
    pub content: String,
}

/// A sender's published status (the contract's format).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SenderStatus {
    pub sender_id: String,
    pub success_count: u64,
    pub failed_count: u64,
    /// Seconds, rounded to 2 decimals.
    pub total_processing_time: f64,
}

/// A sender's cumulative state as stored. The total is kept in whole
/// microseconds so that summing thousands of sends never drifts; it is
/// rounded only when published.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SenderState {
    pub success_count: u64,
    pub failed_count: u64,
    pub total_processing_us: u64,
}

impl SenderState {
    pub fn status(&self, sender_id: &str) -> SenderStatus {
        // Round half up to hundredths of a second (10,000 µs).
        let hundredths = self.total_processing_us.saturating_add(5_000) / 10_000;
        SenderStatus {
            sender_id: sender_id.to_string(),
            success_count: self.success_count,
            failed_count: self.failed_count,
            total_processing_time: hundredths as f64 / 100.0,
        }
    }
}

/// The outcome of sending one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    pub delivered: bool,
    /// Attempts made (1 + retries used).
    pub attempts: u32,
    /// Simulated time of all attempts, µs.
    pub duration_us: u64,
}

fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// `unit(purpose, attempt)` of the module docs: a uniform number in [0, 1).
fn unit(seed: u64, id_hash: u64, purpose: u64, attempt: u32) -> f64 {
    let draw = splitmix64(splitmix64(id_hash ^ seed) ^ ((purpose << 32) | u64::from(attempt)));
    (draw >> 11) as f64 / (1u64 << 53) as f64
}

/// Simulate sending message `id` (its text form) with `p`'s failure rate,
/// retries and timing.
pub fn simulate_send(p: &Params, id: &str) -> Delivery {
    let h = fnv1a64(id.as_bytes());
    let mean_us = p.send_time_mean_ms as f64 * 1000.0;
    let mut duration_us = 0u64;
    for attempt in 0..=p.max_retries {
        duration_us = duration_us.saturating_add((mean_us * (0.5 + unit(p.seed, h, 1, attempt))) as u64);
        if unit(p.seed, h, 0, attempt) >= p.failure_probability.get() {
            return Delivery {
                delivered: true,
                attempts: attempt + 1,
                duration_us,
            };
        }
    }
    Delivery {
        delivered: false,
        attempts: p.max_retries.saturating_add(1),
        duration_us,
    }
}

/// One sender: the task of one partition of `sms-messages`.
struct Sender {
    params: Params,
    sender_id: String,
    /// The store `sender-state`: the sender's [`SenderState`] by sender id.
    state: StoreToken<String, SenderState>,
}

impl Processor<(), SmsMessage> for Sender {
    type KeyOut = String;
    type ValueOut = SenderStatus;

    fn init(&mut self, ctx: &mut InitContext<'_>) -> Result<(), TopologyError> {
        self.sender_id = format!("sender_{}", ctx.partition());
        Ok(())
    }

    fn process(&mut self, ctx: &mut ProcessorApi<'_, String, SenderStatus>, _key: (), msg: SmsMessage) {
        let store = ctx.store(&self.state);
        // Read the state first: if the store fails, the task stops before
        // "sending", and the message is replayed after the restart.
        let mut state = match store.get(&self.sender_id) {
            Ok(s) => s.unwrap_or_default(),
            Err(e) => return ctx.fail(e),
        };
        let outcome = simulate_send(&self.params, &msg.id.as_text());
        if self.params.simulate_delay {
            std::thread::sleep(Duration::from_micros(outcome.duration_us));
        }
        if outcome.delivered {
            state.success_count += 1;
        } else {
            state.failed_count += 1;
        }
        state.total_processing_us = state.total_processing_us.saturating_add(outcome.duration_us);
        if let Err(e) = store.put(&self.sender_id, &state) {
            return ctx.fail(e);
        }
        ctx.forward(self.sender_id.clone(), state.status(&self.sender_id));
    }
}

/// `sms-messages` → one sender per partition → `sender-status-updates` →
/// the `sender-status` table.
pub fn topology(p: &Params) -> Result<Topology, TopologyError> {
    let mut b = StreamsBuilder::new();
    let state = b.add_key_value_store_typed(SENDER_STATE, Serdes::string(), Serdes::json::<SenderState>());
    let (params, token) = (p.clone(), state.clone());
    // The key is not used (one sender per partition): not decoded either.
    b.stream::<(), SmsMessage>(INPUT_TOPIC, Serdes::ignored(), Serdes::json())
        .process(
            move || Sender {
                params: params.clone(),
                sender_id: String::new(),
                state: token.clone(),
            },
            &[state.name()],
        )
        .to(STATUS_TOPIC, Serdes::string(), Serdes::json());
    // The monitor: the latest status per sender, queryable.
    b.table(
        STATUS_TOPIC,
        Serdes::string(),
        Serdes::json::<SenderStatus>(),
        Materialized::named(STATUS_STORE),
    );
    b.build()
}

/// The registration of this scenario with the daemon (parameters from
/// `[topologies.{NAME}]` of the config).
///
/// Routes: `POST|GET /produce-messages?count=N` (N random messages, 1 ≤ N ≤
/// [`MAX_PRODUCE`]) and `GET /monitor` (every sender's latest status and
/// the totals).
pub fn app() -> weir::daemon::App {
    use weir::daemon::{AppParts, Method, Route};
    weir::daemon::App::with_params(NAME, DESCRIPTION, |p: &Params| {
        let mut parts = AppParts::new(topology(p)?);
        parts.generator = Some(super::generators::sms_delivery_spec());
        parts.routes.push(Route::new(
            "/produce-messages",
            &[Method::POST, Method::GET],
            produce_messages,
        ));
        parts.routes.push(Route::new("/monitor", &[Method::GET], monitor));
        Ok(parts)
    })
}

/// The most messages one `/produce-messages` request may ask for.
pub const MAX_PRODUCE: u64 = 100_000;

fn produce_messages(ctx: &weir::daemon::Context, req: &weir::daemon::Request) -> Response {
    use weir::daemon::StatusCode;
    let count = match req.param("count") {
        None => return error(StatusCode::BAD_REQUEST, "missing parameter count (?count=N)"),
        Some(c) => match c.trim().parse::<u64>() {
            Ok(n) if (1..=MAX_PRODUCE).contains(&n) => n,
            Ok(n) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("count must be between 1 and {MAX_PRODUCE}, got {n}"),
                )
            }
            Err(_) => {
                let shown: String = c.chars().take(40).collect();
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("count must be a whole number between 1 and {MAX_PRODUCE}, got {shown:?}"),
                );
            }
        },
    };
    let mut rng = <rand::rngs::SmallRng as rand::SeedableRng>::from_entropy();
    let records: Vec<(String, Option<String>, String)> = (0..count)
        .map(|_| {
            let (key, value) = super::generators::sms_message(&mut rng, next_message_id());
            (INPUT_TOPIC.to_string(), key, value)
        })
        .collect();
    if let Err(e) = ctx.produce(&records) {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("producing to {INPUT_TOPIC:?}: {e:#}"),
        );
    }
    ctx.metrics
        .ingress_records
        .with_label_values(&[NAME, INPUT_TOPIC])
        .inc_by(count);
    weir::daemon::app::json(
        StatusCode::OK,
        &serde_json::json!({ "produced": count, "topic": INPUT_TOPIC }),
    )
}

/// Message ids unique across requests and restarts: microseconds since the
/// epoch at the first call, then counting up.
pub fn next_message_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let seed = chrono::Utc::now().timestamp_micros().max(1) as u64;
    let _ = NEXT.compare_exchange(0, seed, Ordering::Relaxed, Ordering::Relaxed);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// `GET /monitor`: the latest status of every sender (committed state of
/// the `sender-status` table on this instance) and the totals; `pending`
/// is what `sms-messages` holds beyond the delivered and failed ones.
fn monitor(ctx: &weir::daemon::Context, _: &weir::daemon::Request) -> Response {
    use weir::daemon::StatusCode;
    let mut senders: Vec<SenderStatus> = Vec::new();
    for (_, _, reader) in ctx.status.store_readers(STATUS_STORE) {
        match reader.scan_kv(STATUS_STORE, std::ops::Bound::Unbounded, std::ops::Bound::Unbounded) {
            Ok(entries) => senders.extend(entries.iter().filter_map(|(_, v)| serde_json::from_slice(v).ok())),
            Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        }
    }
    senders.sort_by(|a, b| a.sender_id.cmp(&b.sender_id));
    senders.dedup_by(|a, b| a.sender_id == b.sender_id);
    let delivered: u64 = senders.iter().map(|s| s.success_count).sum();
    let failed: u64 = senders.iter().map(|s| s.failed_count).sum();
    let produced = match ctx.record_count(INPUT_TOPIC) {
        Ok(n) => n as u64,
        Err(e) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("reading {INPUT_TOPIC:?}: {e:#}"),
            )
        }
    };
    weir::daemon::app::json(
        StatusCode::OK,
        &serde_json::json!({
            "senders": senders,
            "delivered": delivered,
            "failed": failed,
            "pending": produced.saturating_sub(delivered + failed),
            "produced": produced,
        }),
    )
}

use weir::daemon::Response;

fn error(code: weir::daemon::StatusCode, message: impl Into<String>) -> Response {
    weir::daemon::app::error(code, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir::testing::{TestDriverConfig, TopologyTestDriver};

    /// The decision function of the module docs, written again from the
    /// docs (not calling the topology's code), so that the tests check the
    /// topology against the documented behaviour.
    mod documented {
        fn fnv1a64(bytes: &[u8]) -> u64 {
            let mut h: u64 = 0xcbf29ce484222325;
            for b in bytes {
                h ^= *b as u64;
                h = h.wrapping_mul(0x100000001b3);
            }
            h
        }
        fn splitmix64(x: u64) -> u64 {
            let mut z = x.wrapping_add(0x9E3779B97F4A7C15);
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
            z ^ (z >> 31)
        }
        pub fn unit(seed: u64, id: &str, purpose: u64, attempt: u64) -> f64 {
            let draw = splitmix64(splitmix64(fnv1a64(id.as_bytes()) ^ seed) ^ ((purpose << 32) | attempt));
            (draw >> 11) as f64 / 9007199254740992.0
        }
        /// (delivered, total µs) of one message.
        pub fn send(seed: u64, id: &str, p_fail: f64, mean_ms: u64, retries: u64) -> (bool, u64) {
            let mut total = 0;
            for a in 0..=retries {
                total += (mean_ms as f64 * 1000.0 * (0.5 + unit(seed, id, 1, a))).floor() as u64;
                if unit(seed, id, 0, a) >= p_fail {
                    return (true, total);
                }
            }
            (false, total)
        }
    }

    fn params(p_fail: f64, retries: u32) -> Params {
        Params {
            failure_probability: Probability::new(p_fail).expect("a probability"),
            max_retries: retries,
            simulate_delay: false,
            ..Params::default()
        }
    }

    fn driver(p: &Params) -> TopologyTestDriver {
        let t = topology(p).expect("topology builds");
        TopologyTestDriver::new(t, TestDriverConfig::with_application_id(NAME)).expect("driver starts")
    }

    fn message(id: u64) -> String {
        format!(
            r#"{{"id": {id}, "number": "+1555{id:07}", "content": "{}"}}"#,
            "x".repeat(100)
        )
    }

    fn send_all(d: &TopologyTestDriver, ids: impl IntoIterator<Item = u64>) {
        for id in ids {
            d.pipe_raw(INPUT_TOPIC, None, Some(message(id).as_bytes()), id as i64)
                .expect("pipe");
        }
    }

    fn latest(d: &TopologyTestDriver) -> SenderStatus {
        d.key_value_store(STATUS_STORE, Serdes::string(), Serdes::json::<SenderStatus>())
            .unwrap()
            .get(&"sender_0".to_string())
            .expect("sender_0 has a status")
    }

    #[test]
    fn a_thousand_messages_with_ten_percent_failures() {
        let p = params(0.1, 0);
        let d = driver(&p);
        send_all(&d, 1..=1000);
        let (mut delivered, mut failed, mut micros) = (0u64, 0u64, 0u64);
        for id in 1..=1000u64 {
            let (ok, us) = documented::send(p.seed, &id.to_string(), 0.1, 5, 0);
            if ok {
                delivered += 1
            } else {
                failed += 1
            }
            micros += us;
        }
        assert!((60..=140).contains(&failed), "about 10 % fail: {failed}");
        let last = latest(&d);
        assert_eq!(last.success_count + last.failed_count, 1000);
        assert_eq!((last.success_count, last.failed_count), (delivered, failed));
        assert_eq!(last.total_processing_time, ((micros + 5_000) / 10_000) as f64 / 100.0);
        // The mean send time is about 5 ms: 1000 sends take about 5 s.
        assert!((4.5..5.5).contains(&last.total_processing_time), "{last:?}");
        // One status update per message, counts rising by one each time.
        let updates = d
            .output_topic(STATUS_TOPIC, Serdes::string(), Serdes::json::<SenderStatus>())
            .read_key_values();
        assert_eq!(updates.len(), 1000);
        for (i, (k, s)) in updates.iter().enumerate() {
            assert_eq!(k, "sender_0");
            assert_eq!(s.success_count + s.failed_count, i as u64 + 1);
        }
        assert!(d.dead_letters().is_empty());
    }

    #[test]
    fn status_records_have_the_contract_format() {
        let p = Params {
            send_time_mean_ms: 0,
            ..params(0.0, 0)
        };
        let d = driver(&p);
        send_all(&d, [1, 2]);
        let raw = d.topic_records(STATUS_TOPIC);
        let texts: Vec<(&[u8], String)> = raw
            .iter()
            .map(|r| {
                (
                    r.key.as_deref().unwrap_or_default(),
                    String::from_utf8(r.value.clone().unwrap_or_default()).unwrap(),
                )
            })
            .collect();
        assert_eq!(
            texts,
            vec![
                (
                    &b"sender_0"[..],
                    r#"{"sender_id":"sender_0","success_count":1,"failed_count":0,"total_processing_time":0.0}"#
                        .to_string()
                ),
                (
                    &b"sender_0"[..],
                    r#"{"sender_id":"sender_0","success_count":2,"failed_count":0,"total_processing_time":0.0}"#
                        .to_string()
                ),
            ]
        );
        // With the default timing: ten messages, the exact documented total.
        let p = params(0.25, 0);
        let d = driver(&p);
        send_all(&d, 1..=10);
        let mut ok = 0;
        let mut us = 0;
        for id in 1..=10u64 {
            let (delivered, t) = documented::send(p.seed, &id.to_string(), 0.25, 5, 0);
            ok += u64::from(delivered);
            us += t;
        }
        let want = format!(
            r#"{{"sender_id":"sender_0","success_count":{ok},"failed_count":{},"total_processing_time":{}}}"#,
            10 - ok,
            ((us + 5_000) / 10_000) as f64 / 100.0
        );
        let last = d
            .topic_records(STATUS_TOPIC)
            .pop()
            .and_then(|r| r.value)
            .unwrap_or_default();
        assert_eq!(String::from_utf8(last).unwrap(), want);
    }

    #[test]
    fn rounding_of_the_total() {
        let s = |us| SenderState {
            success_count: 6,
            failed_count: 1,
            total_processing_us: us,
        };
        assert_eq!(s(7_005_000).status("sender_1").total_processing_time, 7.01);
        assert_eq!(s(7_004_999).status("sender_1").total_processing_time, 7.0);
        assert_eq!(
            serde_json::to_string(&s(7_012_345).status("sender_1")).unwrap(),
            r#"{"sender_id":"sender_1","success_count":6,"failed_count":1,"total_processing_time":7.01}"#
        );
    }

    #[test]
    fn keys_that_are_not_utf8_are_ignored_not_dead_lettered() {
        let d = driver(&params(0.0, 0));
        for (id, key) in [(1u64, Some(&[0xff, 0x00, 0xfe][..])), (2, Some(&[][..])), (3, None)] {
            d.pipe_raw(INPUT_TOPIC, key, Some(message(id).as_bytes()), id as i64)
                .expect("pipe");
        }
        assert_eq!(d.dead_letters(), vec![]);
        let last = latest(&d);
        assert_eq!((last.success_count, last.failed_count), (3, 0));
    }

    #[test]
    fn no_failures_means_everything_is_delivered() {
        let d = driver(&params(0.0, 0));
        send_all(&d, 1..=200);
        let last = latest(&d);
        assert_eq!((last.success_count, last.failed_count), (200, 0));
    }

    #[test]
    fn certain_failure_fails_every_attempt() {
        let d = driver(&params(1.0, 2));
        send_all(&d, 1..=5);
        let last = latest(&d);
        assert_eq!((last.success_count, last.failed_count), (0, 5));
        // Three attempts of about 5 ms each per message.
        assert!((0.05..0.1).contains(&last.total_processing_time), "{last:?}");
    }

    #[test]
    fn retries_recover_failed_sends() {
        let p = params(0.5, 2);
        let d = driver(&p);
        send_all(&d, 1..=400);
        let (mut ok, mut us, mut ok_first) = (0u64, 0u64, 0u64);
        for id in 1..=400u64 {
            let (delivered, t) = documented::send(p.seed, &id.to_string(), 0.5, 5, 2);
            ok += u64::from(delivered);
            us += t;
            ok_first += u64::from(documented::send(p.seed, &id.to_string(), 0.5, 5, 0).0);
        }
        // Without retries about half would fail; with two, about an eighth.
        assert!(ok > ok_first, "{ok} vs {ok_first}");
        assert!((300..=375).contains(&ok), "{ok}");
        let last = latest(&d);
        assert_eq!((last.success_count, last.failed_count), (ok, 400 - ok));
        assert_eq!(last.total_processing_time, ((us + 5_000) / 10_000) as f64 / 100.0);
    }

    #[test]
    fn string_and_integer_ids_are_the_same_message() {
        let p = params(0.5, 0);
        for id in 1..=50u64 {
            assert_eq!(
                simulate_send(&p, &MessageId::Int(id as i64).as_text()),
                simulate_send(&p, &MessageId::Text(id.to_string()).as_text())
            );
        }
        let m: SmsMessage = serde_json::from_str(r#"{"id": "abc-1", "number": "+1", "content": "hi"}"#).unwrap();
        assert_eq!(m.id, MessageId::Text("abc-1".into()));
    }

    #[test]
    fn bad_messages_go_to_the_dlq_and_are_not_counted() {
        let d = driver(&params(0.0, 0));
        let bad: [&[u8]; 3] = [
            br#"{"id": 1.5, "number": "+1", "content": "x"}"#,
            br#"{"id": 2, "content": "x"}"#,
            b"not json",
        ];
        send_all(&d, [1]);
        for v in bad {
            d.pipe_raw(INPUT_TOPIC, None, Some(v), 0).unwrap();
        }
        send_all(&d, [2]);
        let letters: Vec<(i64, String)> = d.dead_letters().into_iter().map(|l| (l.offset, l.error)).collect();
        assert_eq!(
            letters,
            vec![
                (
                    1,
                    "value deserialization failed (json): invalid JSON: field `id`: expected a string or an integer, got 1.5 at line 1 column 10"
                        .to_string()
                ),
                (
                    2,
                    "value deserialization failed (json): invalid JSON: missing field `number` at line 1 column 25"
                        .to_string()
                ),
                (
                    3,
                    "value deserialization failed (json): invalid JSON: expected ident at line 1 column 2".to_string()
                ),
            ]
        );
        let last = latest(&d);
        assert_eq!((last.success_count, last.failed_count), (2, 0));
    }

    #[test]
    fn sender_state_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let p = params(0.0, 0);
        let config = || TestDriverConfig {
            state_dir: Some(dir.path().to_path_buf()),
            ..TestDriverConfig::with_application_id(NAME)
        };
        {
            let d = TopologyTestDriver::new(topology(&p).unwrap(), config()).unwrap();
            send_all(&d, 1..=3);
            d.flush_state_to_disk().unwrap();
        }
        let d = TopologyTestDriver::new(topology(&p).unwrap(), config()).unwrap();
        send_all(&d, 4..=5);
        let last = latest(&d);
        assert_eq!((last.success_count, last.failed_count), (5, 0));
        let state = d
            .key_value_store(SENDER_STATE, Serdes::string(), Serdes::json::<SenderState>())
            .unwrap()
            .get(&"sender_0".to_string())
            .unwrap();
        assert_eq!(state.success_count, 5);
    }

    #[test]
    fn probabilities_are_checked() {
        assert!(Probability::new(1.5).is_none());
        assert!(Probability::new(-0.1).is_none());
        assert!(Probability::new(f64::NAN).is_none());
        assert_eq!(Probability::new(1.0).map(Probability::get), Some(1.0));
    }
}
