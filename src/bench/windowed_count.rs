//! The `windowed-count` workload of `weir bench e2e`: the shape most Kafka
//! Streams benchmarks use, so weir's figure compares with theirs.
//!
//! 1,000,000 page views (by default) keyed by the user id as decimal text
//! (10,000 users), value `{"user_id": u, "page": "/pageP", "ts": ms}`, the
//! Kafka timestamp equal to `ts` and rising linearly over 100 s of event
//! time, on 4 partitions. The topology parses the JSON, counts views per
//! user in 10 s tumbling event-time windows with no grace, and writes each
//! closed window once. Nothing is repartitioned: every record crosses the
//! broker once, so the one-hop ceiling is the bound.

use std::collections::HashMap;
use std::io::Write as _;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use weir::Topology;
use weir_connectors::kafka::{default_partitioner, ClientSettings};
use weir_topology::{EmitStrategy, Materialized, Serdes, StreamsBuilder, TimeWindows, TopologyError};

use super::e2e::{read_topic, Workload, BASE_MS};

pub const NAME: &str = "windowed-count";
pub const INPUT_TOPIC: &str = "windowed-count-input";
pub const OUTPUT_TOPIC: &str = "windowed-count-output";
/// Partitions of the input (and tasks of the one sub-topology).
const PARTITIONS: i32 = 4;
const USERS: u32 = 10_000;
const PAGES: u32 = 20;
/// Event time the input spans, whatever the number of records.
const SPAN_MS: i64 = 100_000;
const WINDOW_MS: i64 = 10_000;

/// One input record. Every field is parsed (a real topology would read
/// them), though only the key and the Kafka timestamp decide the count.
#[derive(Clone, Serialize, Deserialize)]
struct PageView {
    #[allow(dead_code)]
    user_id: u32,
    #[allow(dead_code)]
    page: String,
    #[allow(dead_code)]
    ts: i64,
}

/// The benchmark's topology: parse, count per user and 10 s window, emit
/// each window once when it closes.
pub fn topology() -> Result<Topology, TopologyError> {
    let mut b = StreamsBuilder::new();
    b.stream::<String, PageView>(INPUT_TOPIC, Serdes::string(), Serdes::json())
        // The count needs no value; the key is already the user.
        .map_values(|_, _| ())
        .group_by_key(Serdes::string(), Serdes::unit())
        .windowed_by(TimeWindows::of(Duration::from_millis(WINDOW_MS as u64))?.grace(Duration::ZERO)?)
        // Each window once, when it closes, straight from the window store
        // (KIP-825): no suppression buffer to write and log.
        .emit_strategy(EmitStrategy::on_window_close())
        .count(Materialized::named("windowed-count-counts"))
        .to_stream()
        .to(OUTPUT_TOPIC, Serdes::windowed(Serdes::string()), Serdes::u64());
    b.build()
}

pub(super) struct WindowedCount {
    events: u64,
    rng: SmallRng,
    /// The answer: views per (user, window start).
    expected: HashMap<(u32, i64), u64>,
    /// The newest event time per partition: the stream time of the task
    /// counting that partition.
    last_ts: Vec<i64>,
}

impl WindowedCount {
    pub(super) fn new(events: u64) -> Self {
        WindowedCount {
            events,
            rng: SmallRng::seed_from_u64(7),
            expected: HashMap::new(),
            last_ts: vec![i64::MIN; PARTITIONS as usize],
        }
    }
}

impl Workload for WindowedCount {
    fn name(&self) -> &'static str {
        NAME
    }
    fn input_topic(&self) -> &'static str {
        INPUT_TOPIC
    }
    fn partitions(&self) -> i32 {
        PARTITIONS
    }
    fn topology(&self) -> Result<Topology> {
        Ok(topology()?)
    }
    /// Enough records that the first window closes in every partition.
    fn min_events(&self) -> u64 {
        1_000
    }
    fn record(&mut self, i: u64, key: &mut Vec<u8>, value: &mut Vec<u8>) -> Result<i64> {
        let user = self.rng.gen_range(1..=USERS);
        let page = self.rng.gen_range(1..=PAGES);
        let ts = BASE_MS + (i as i64).saturating_mul(SPAN_MS) / self.events.max(1) as i64;
        write!(key, "{user}")?;
        write!(value, r#"{{"user_id": {user}, "page": "/page{page}", "ts": {ts}}}"#)?;
        *self.expected.entry((user, ts - ts.rem_euclid(WINDOW_MS))).or_default() += 1;
        let p = default_partitioner(key, PARTITIONS) as usize;
        if let Some(last) = self.last_ts.get_mut(p) {
            *last = ts;
        }
        Ok(ts)
    }
    fn verify(&self, settings: &ClientSettings) -> Result<()> {
        let mut got: HashMap<(u32, i64), u64> = HashMap::new();
        let windowed = Serdes::windowed(Serdes::string());
        read_topic(settings, OUTPUT_TOPIC, |k, v| {
            let key = windowed
                .deserialize(k.unwrap_or_default())
                .map_err(|e| anyhow::anyhow!("windowed-count wrote a key the benchmark cannot read: {e}"))?;
            let count = Serdes::u64()
                .deserialize(v.unwrap_or_default())
                .map_err(|e| anyhow::anyhow!("windowed-count wrote a count the benchmark cannot read: {e}"))?;
            let user: u32 = key
                .key
                .parse()
                .with_context(|| format!("windowed-count wrote a key that is no user id: {:?}", key.key))?;
            if got.insert((user, key.window.start), count).is_some() {
                bail!(
                    "windowed-count emitted the window at {} of user {user} twice",
                    key.window.start
                );
            }
            Ok(())
        })?;
        // Every window whose end the stream time of its task reached is
        // closed: it must be there, exact. Others may have closed since, by
        // wall-clock idle time after the input ended; they must be exact too.
        let mut closed = 0;
        for (&(user, start), count) in &self.expected {
            let p = default_partitioner(user.to_string().as_bytes(), PARTITIONS) as usize;
            let stream_time = self.last_ts.get(p).copied().unwrap_or(i64::MIN);
            let g = got.get(&(user, start));
            if start + WINDOW_MS <= stream_time {
                closed += 1;
                if g != Some(count) {
                    bail!("windowed-count result wrong for user {user} in the window at {start}: expected {count}, got {g:?}");
                }
            } else if g.is_some_and(|g| g != count) {
                bail!("windowed-count emitted {g:?} for user {user} in the window at {start}; the input has {count}");
            }
        }
        for (user, start) in got.keys() {
            if !self.expected.contains_key(&(*user, *start)) {
                bail!("windowed-count emitted a window at {start} for user {user}, who has no input in it");
            }
        }
        if closed == 0 {
            bail!("no windowed-count window closed: use more --events");
        }
        Ok(())
    }
}
