//! `weir bench`: throughput of the engine, measured against a hand-written
//! loop doing the same work (the ceiling for that work on this machine);
//! and of weir's broker, next to librdkafka's mock cluster (`broker`).
//!
//! Benchmarks are never tests: nothing here fails because a machine is
//! slow. Each run does check that the engine's results are right, so a fast
//! wrong engine cannot post a figure.

pub mod broker;
pub mod e2e;
pub mod latency;
pub mod restore;
pub mod state;
pub mod windowed_count;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use weir::runtime::local::{LocalRunner, OutputSink};
use weir::runtime::TaskConfig;
use weir::state::StateDb;
use weir::Topology;

use crate::scenarios::{emoji_stream, hashtag_trends, user_clicks};

/// One line of results.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchResult {
    pub workload: &'static str,
    pub topology: String,
    pub events: u64,
    pub seconds: f64,
    pub events_per_s: f64,
    pub ceiling_events_per_s: f64,
    pub ratio: f64,
    pub peak_rss_bytes: u64,
    /// Latency percentiles (`weir bench latency` only).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub latency: Option<Latency>,
    /// `weir bench e2e` only: the rdkafka loop that moves every record
    /// through Kafka twice (see `e2e::two_hop_ceiling`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub two_hop_ceiling_events_per_s: Option<f64>,
}

/// End-to-end latency percentiles of a `weir bench latency` run, in
/// milliseconds.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Latency {
    pub commit_interval_ms: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    /// Output records measured.
    pub samples: u64,
}

/// Options of `weir bench engine`.
pub struct EngineOptions {
    pub events: u64,
    pub topologies: Vec<String>,
    pub commit_interval: Duration,
    pub cache_max_bytes: usize,
}

/// Inputs prepared before timing starts: one byte arena and the bounds and
/// timestamps of each record, so generation is not measured.
struct Inputs {
    arena: Vec<u8>,
    bounds: Vec<(u32, u32)>,
    timestamps: Vec<i64>,
}

impl Inputs {
    fn with_capacity(n: usize, bytes_each: usize) -> Self {
        Inputs {
            arena: Vec::with_capacity(n * bytes_each),
            bounds: Vec::with_capacity(n),
            timestamps: Vec::with_capacity(n),
        }
    }
    fn push(&mut self, value: &[u8], ts: i64) {
        let start = self.arena.len() as u32;
        self.arena.extend_from_slice(value);
        self.bounds.push((start, self.arena.len() as u32));
        self.timestamps.push(ts);
    }
    fn len(&self) -> usize {
        self.bounds.len()
    }
    #[inline]
    fn get(&self, i: usize) -> (&[u8], i64) {
        let (a, b) = self.bounds[i];
        (&self.arena[a as usize..b as usize], self.timestamps[i])
    }
}

/// The highest resident set size of this process so far (Linux VmHWM).
pub fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// Clock ticks per second of the times in `/proc/PID/stat` (USER_HZ, 100 on
/// Linux whatever the kernel's HZ).
const USER_HZ: f64 = 100.0;

/// The peak RSS in bytes (VmHWM) and CPU seconds so far (user + system) of
/// process `pid`, a child a bench started (the broker, or weir itself).
pub(crate) fn process_usage(pid: u32) -> Result<(u64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<u64>().ok())
        .with_context(|| format!("no VmHWM in /proc/{pid}/status"))?;
    let stat =
        std::fs::read_to_string(format!("/proc/{pid}/stat")).with_context(|| format!("reading /proc/{pid}/stat"))?;
    // Fields after the command name (which is in parentheses and may
    // hold spaces): state is field 3, utime and stime fields 14 and 15.
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    let cpu = match (ticks(11), ticks(12)) {
        (Some(u), Some(s)) => (u + s) as f64 / USER_HZ,
        _ => bail!("cannot read the CPU times in /proc/{pid}/stat: {stat:?}"),
    };
    Ok((kb * 1024, cpu))
}

pub fn run_engine(opts: &EngineOptions) -> Result<Vec<BenchResult>> {
    let mut results = Vec::new();
    for name in &opts.topologies {
        let r = match name.as_str() {
            user_clicks::NAME => engine_user_clicks(opts)?,
            emoji_stream::NAME => engine_emoji(opts)?,
            hashtag_trends::NAME => engine_hashtags(opts)?,
            other => {
                bail!("no engine benchmark for topology {other:?} (use user-clicks, emoji-stream or hashtag-trends)")
            }
        };
        results.push(r);
    }
    Ok(results)
}

/// Push every input through the topology on a LocalRunner with sled stores
/// in a temporary directory, committing every `commit_interval`. Returns
/// the seconds taken; `sink` sees every output record.
fn drive(
    topology: &Topology,
    app: &str,
    input_topic: &str,
    inputs: &Inputs,
    opts: &EngineOptions,
    sink: &mut dyn OutputSink,
) -> Result<f64> {
    drive_checked(topology, app, input_topic, inputs, opts, sink, &mut |_| Ok(()))
}

/// [`drive`], then `check` looks at the runner's committed state (after
/// the timing stopped).
fn drive_checked(
    topology: &Topology,
    app: &str,
    input_topic: &str,
    inputs: &Inputs,
    opts: &EngineOptions,
    sink: &mut dyn OutputSink,
    check: &mut dyn FnMut(&LocalRunner) -> Result<()>,
) -> Result<f64> {
    let dir = tempfile::tempdir().context("temporary state directory")?;
    let db = StateDb::open(dir.path())?;
    let config = TaskConfig {
        cache_max_bytes: opts.cache_max_bytes,
        idle_advance_after_ms: None,
    };
    let mut runner = LocalRunner::new(topology, app, &db, config)?;
    let topic = topology
        .topic_index(input_topic, app)
        .with_context(|| format!("topology does not read {input_topic}"))?;
    let started = Instant::now();
    let mut last_commit = started;
    for i in 0..inputs.len() {
        let (value, ts) = inputs.get(i);
        runner.process(topic, None, Some(value), ts, sink)?;
        if i & 4095 == 0 && last_commit.elapsed() >= opts.commit_interval {
            runner.commit(sink)?;
            runner.punctuate(sink)?;
            last_commit = Instant::now();
        }
    }
    runner.commit(sink)?;
    runner.punctuate(sink)?;
    runner.commit(sink)?;
    let seconds = started.elapsed().as_secs_f64();
    check(&runner)?;
    Ok(seconds)
}

fn result(workload: &'static str, topology: &str, events: u64, seconds: f64, ceiling_seconds: f64) -> BenchResult {
    let eps = events as f64 / seconds;
    let ceiling = events as f64 / ceiling_seconds;
    BenchResult {
        workload,
        topology: topology.to_string(),
        events,
        seconds,
        events_per_s: eps,
        ceiling_events_per_s: ceiling,
        ratio: eps / ceiling,
        peak_rss_bytes: peak_rss_bytes(),
        latency: None,
        two_hop_ceiling_events_per_s: None,
    }
}

fn engine_user_clicks(opts: &EngineOptions) -> Result<BenchResult> {
    let n = opts.events as usize;
    let mut rng = SmallRng::seed_from_u64(17);
    let mut inputs = Inputs::with_capacity(n, 48);
    let mut expected: HashMap<u32, u64> = HashMap::new();
    let base_ms: i64 = 1_763_719_200_000;
    let mut line = String::with_capacity(64);
    for i in 0..n {
        let user: u32 = rng.gen_range(1..=100);
        let page: u32 = rng.gen_range(1..=10);
        let ts = base_ms + i as i64;
        line.clear();
        use std::fmt::Write;
        let _ = write!(
            line,
            "User {user} clicked on /page{page} at {}.{:03}",
            ts / 1000,
            ts % 1000
        );
        inputs.push(line.as_bytes(), ts);
        *expected.entry(user).or_default() += 1;
    }

    let topology = user_clicks::topology(&user_clicks::Params::default())?;
    let mut latest: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
    let mut outputs = 0u64;
    let seconds = drive(
        &topology,
        user_clicks::NAME,
        "user_clickstream",
        &inputs,
        opts,
        &mut |_: u32, k: Option<&[u8]>, v: Option<&[u8]>, _: i64| {
            outputs += 1;
            if let (Some(k), Some(v)) = (k, v) {
                match latest.get_mut(k) {
                    Some(old) => {
                        old.clear();
                        old.extend_from_slice(v);
                    }
                    None => {
                        latest.insert(k.to_vec(), v.to_vec());
                    }
                }
            }
        },
    )?;
    // The engine's final text per user must match the generated answer.
    for (user, count) in &expected {
        let want = format!("User {user} has clicked {count} times.");
        let got = latest
            .get(user.to_string().as_bytes())
            .map(|v| String::from_utf8_lossy(v).into_owned());
        if got.as_deref() != Some(want.as_str()) {
            bail!("user-clicks engine result wrong for user {user}: expected {want:?}, got {got:?}");
        }
    }

    // Ceiling: the same parse (the topology's own strict `parse_click`, so
    // that the ratio measures the engine, not two parsers) and count into a
    // HashMap, by hand.
    let max_user_id = user_clicks::Params::default().max_user_id;
    let started = Instant::now();
    let mut counts: HashMap<u32, u64> = HashMap::new();
    for i in 0..inputs.len() {
        let (value, _) = inputs.get(i);
        if let Some(user) = std::str::from_utf8(value)
            .ok()
            .and_then(|line| user_clicks::parse_click(line, max_user_id).ok())
        {
            *counts.entry(user.user_id).or_default() += 1;
        }
    }
    let ceiling_seconds = started.elapsed().as_secs_f64();
    if counts != expected {
        bail!("hand-written user-clicks loop disagrees with the generated answer");
    }
    Ok(result(
        "engine",
        user_clicks::NAME,
        opts.events,
        seconds,
        ceiling_seconds,
    ))
}

/// The emojis of the generated reactions (shared with `weir bench e2e`).
pub const EMOJIS: [&str; 8] = ["🔥", "😂", "❤️", "👍", "🎉", "😮", "😢", "👏"];

fn engine_emoji(opts: &EngineOptions) -> Result<BenchResult> {
    let n = opts.events as usize;
    let mut rng = SmallRng::seed_from_u64(42);
    let mut inputs = Inputs::with_capacity(n, 100);
    let base_ms: i64 = 1_763_719_200_000;
    let params = emoji_stream::Params::default();
    let window = params.window_ms;
    let mut expected: HashMap<(String, i64), u64> = HashMap::new();
    for i in 0..n {
        // Skewed: the first emojis dominate.
        let r: f64 = rng.gen();
        let idx = ((r * r * r) * EMOJIS.len() as f64) as usize;
        let emoji = EMOJIS[idx.min(EMOJIS.len() - 1)];
        let ts = base_ms + (i as i64) / 2; // 2,000 events per second of event time
        let user: u32 = rng.gen_range(1..=10_000);
        let time = chrono::DateTime::from_timestamp_millis(ts)
            .context("timestamp in range")?
            .format("%Y-%m-%dT%H:%M:%S%.3fZ");
        let json = format!(r#"{{"user_id": "u{user}", "emoji_type": "{emoji}", "timestamp": "{time}"}}"#);
        inputs.push(json.as_bytes(), ts);
        *expected
            .entry((emoji.to_string(), ts - ts.rem_euclid(window)))
            .or_default() += 1;
    }

    let topology = emoji_stream::topology(&params)?;
    let aggregated = topology
        .topic_index("emoji-aggregated", emoji_stream::NAME)
        .context("emoji-stream writes emoji-aggregated")?;
    let mut got: HashMap<(String, i64), u64> = HashMap::new();
    let mut bad_output: Option<String> = None;
    let seconds = drive(
        &topology,
        emoji_stream::NAME,
        "emoji-events",
        &inputs,
        opts,
        &mut |topic: u32, _: Option<&[u8]>, v: Option<&[u8]>, _: i64| {
            if topic != aggregated {
                return;
            }
            match v.and_then(emoji_window_count) {
                Some((k, c)) => {
                    got.insert(k, c);
                }
                None => bad_output = Some(String::from_utf8_lossy(v.unwrap_or_default()).into_owned()),
            }
        },
    )?;
    if let Some(b) = bad_output {
        bail!("emoji-stream wrote an aggregate the benchmark cannot read: {b}");
    }
    // Every window that closed before the input ended must be exact (the
    // last ones are still open: stream time never passed their end + grace).
    let last_ts = inputs.timestamps.last().copied().unwrap_or(0);
    for (k, c) in &expected {
        if k.1 + window + params.grace_ms <= last_ts && got.get(k) != Some(c) {
            bail!(
                "emoji-stream engine result wrong for {k:?}: expected {c}, got {:?}",
                got.get(k)
            );
        }
    }

    // Ceiling: parse the same JSON and count per (emoji, window) by hand.
    #[derive(serde::Deserialize)]
    struct Event<'a> {
        #[allow(dead_code)]
        user_id: &'a str,
        emoji_type: String,
        timestamp: chrono::DateTime<chrono::Utc>,
    }
    let started = Instant::now();
    let mut counts: HashMap<(String, i64), u64> = HashMap::new();
    for i in 0..inputs.len() {
        let (value, _) = inputs.get(i);
        if let Ok(e) = serde_json::from_slice::<Event>(value) {
            let ts = e.timestamp.timestamp_millis();
            *counts.entry((e.emoji_type, ts - ts.rem_euclid(window))).or_default() += 1;
        }
    }
    let ceiling_seconds = started.elapsed().as_secs_f64();
    if counts != expected {
        bail!("hand-written emoji loop disagrees with the generated answer");
    }
    Ok(result(
        "engine",
        emoji_stream::NAME,
        opts.events,
        seconds,
        ceiling_seconds,
    ))
}

/// Tweets per second of event time in the hashtag-trends workload.
const TWEETS_PER_S: i64 = 1_000;

/// hashtag-trends: JSON tweets (`{"id", "user", "text", "created_at"}`)
/// of four words, two hashtags and a stop word drawn from skewed
/// vocabularies (2,000 words, 500 hashtags), 1,000 tweets per second of
/// event time; the running count of every term, hopping-window hashtag
/// counts, and a top 10 per window. The ceiling decodes the same tweets,
/// splits them with the same `terms()`, counts every term and every
/// (hashtag, window) in `HashMap`s and ranks each window at the end.
fn engine_hashtags(opts: &EngineOptions) -> Result<BenchResult> {
    let n = opts.events as usize;
    let params = hashtag_trends::Params::default();
    let mut rng = SmallRng::seed_from_u64(7);
    let mut inputs = Inputs::with_capacity(n, 140);
    let base_ms: i64 = 1_763_719_200_000;
    // Skewed draws: a cube of a uniform favours the first entries.
    let draw = |rng: &mut SmallRng, n: usize| {
        let r: f64 = rng.gen();
        ((r * r * r) * n as f64) as usize
    };
    let mut text = String::with_capacity(96);
    for i in 0..n {
        let ts = base_ms + (i as i64) * 1000 / TWEETS_PER_S;
        text.clear();
        use std::fmt::Write;
        let (w1, w2, w3, w4) = (
            draw(&mut rng, 2000),
            draw(&mut rng, 2000),
            draw(&mut rng, 2000),
            draw(&mut rng, 2000),
        );
        let (h1, h2) = (draw(&mut rng, 500), draw(&mut rng, 500));
        let _ = write!(text, "Word{w1} the #Tag{h1} word{w2}, WORD{w3} #tag{h2} word{w4}!");
        let time = chrono::DateTime::from_timestamp_millis(ts)
            .context("timestamp in range")?
            .format("%Y-%m-%dT%H:%M:%S%.3fZ");
        let json = format!(
            r#"{{"id": {i}, "user": "u{}", "text": "{text}", "created_at": "{time}"}}"#,
            i % 977
        );
        inputs.push(json.as_bytes(), ts);
    }

    let topology = hashtag_trends::topology(&params)?;
    let ranking_topic = topology
        .topic_index(hashtag_trends::OUTPUT_TOPIC, hashtag_trends::NAME)
        .context("hashtag-trends writes hashtag-ranking")?;
    let mut rankings: HashMap<String, Vec<hashtag_trends::TermCount>> = HashMap::new();
    let mut bad_output: Option<String> = None;
    let mut store_counts: HashMap<String, u64> = HashMap::new();
    let mut terms_to_check: Vec<String> = Vec::new();
    let mut late = 0u64;
    // The hand loop runs first (its answer is what the engine is checked
    // against); the engine's timing does not depend on the order.
    let started = Instant::now();
    let mut counts: HashMap<String, u64> = HashMap::new();
    let mut windows: HashMap<(String, i64), u64> = HashMap::new();
    let (size, advance) = (params.window_size_ms, params.advance_ms);
    for i in 0..inputs.len() {
        let (value, _) = inputs.get(i);
        let Ok(tweet) = serde_json::from_slice::<hashtag_trends::Tweet>(value) else {
            continue;
        };
        let ts = tweet.created_at.map_or(0, |t| t.timestamp_millis());
        for term in hashtag_trends::terms(&tweet.text) {
            if term.starts_with('#') {
                // Every hopping window containing ts: starts in (ts - size, ts].
                let last = ts - ts.rem_euclid(advance);
                let mut start = last;
                while start > ts - size {
                    *windows.entry((term.clone(), start)).or_default() += 1;
                    start -= advance;
                }
            }
            *counts.entry(term).or_default() += 1;
        }
    }
    let mut by_window: HashMap<i64, Vec<hashtag_trends::TermCount>> = HashMap::new();
    for ((term, start), count) in &windows {
        by_window.entry(*start).or_default().push(hashtag_trends::TermCount {
            term: term.clone(),
            count: *count,
        });
    }
    for top in by_window.values_mut() {
        top.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.term.cmp(&b.term)));
        top.truncate(hashtag_trends::TOP_N);
    }
    let ceiling_seconds = started.elapsed().as_secs_f64();
    terms_to_check.extend(counts.keys().cloned());

    let seconds = drive_checked(
        &topology,
        hashtag_trends::NAME,
        hashtag_trends::INPUT_TOPIC,
        &inputs,
        opts,
        &mut |topic: u32, _: Option<&[u8]>, v: Option<&[u8]>, _: i64| {
            if topic != ranking_topic {
                return;
            }
            match v.and_then(|v| serde_json::from_slice::<hashtag_trends::Ranking>(v).ok()) {
                Some(r) => {
                    if rankings.insert(r.window_start.clone(), r.ranking).is_some() {
                        bad_output = Some(format!("window {} ranked twice", r.window_start));
                    }
                }
                None => bad_output = Some(String::from_utf8_lossy(v.unwrap_or_default()).into_owned()),
            }
        },
        &mut |runner: &LocalRunner| {
            late = runner.stats().late_records_dropped;
            // The running count of every term, from the committed store.
            for task in runner.tasks() {
                if !task.stores().iter().any(|(s, _)| s == hashtag_trends::TERM_COUNTS) {
                    continue;
                }
                for term in &terms_to_check {
                    if let Some(v) = task.state().read_kv(hashtag_trends::TERM_COUNTS, term.as_bytes())? {
                        let n = u64::from_be_bytes(v.as_slice().try_into().context("a u64 count")?);
                        store_counts.insert(term.clone(), n);
                    }
                }
            }
            Ok(())
        },
    )?;
    if let Some(b) = bad_output {
        bail!("hashtag-trends wrote a ranking the benchmark cannot accept: {b}");
    }
    if store_counts != counts {
        let wrong = counts.iter().find(|(t, c)| store_counts.get(*t) != Some(c));
        bail!(
            "hashtag-trends term counts wrong (first: {wrong:?}, engine has {} terms)",
            store_counts.len()
        );
    }
    // Every window ranked must be exact; every window that surely closed
    // (its end + grace, then one advance + the ranking grace, passed
    // before the last tweet, with an advance to spare) must be ranked.
    let last_ts = inputs.timestamps.last().copied().unwrap_or(0);
    let iso = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
            .unwrap_or_default()
    };
    // The input is in event-time order: nothing may be dropped as late
    // (this bench found suppression emitting windows before the counts'
    // write cache had forwarded their last updates; see
    // runtime/tests/local_runner.rs).
    if late > 0 {
        bail!("hashtag-trends dropped {late} records as late although the input is in event-time order");
    }
    let mut closed = 0;
    for (start, want) in &by_window {
        let got = rankings.get(&iso(*start));
        let surely_closed = start + size + params.grace_ms + 2 * advance + params.ranking_grace_ms <= last_ts;
        if surely_closed {
            closed += 1;
        }
        if (surely_closed || got.is_some()) && got != Some(want) {
            bail!(
                "hashtag-trends ranking wrong for the window at {}: expected {want:?}, got {got:?}",
                iso(*start)
            );
        }
    }
    if rankings.len() > by_window.len() || closed == 0 {
        bail!(
            "hashtag-trends ranked {} windows ({} closed surely, {} in the input): use more --events",
            rankings.len(),
            closed,
            by_window.len()
        );
    }
    Ok(result(
        "engine",
        hashtag_trends::NAME,
        opts.events,
        seconds,
        ceiling_seconds,
    ))
}

/// ((emoji, window start ms), count) of an `emoji-aggregated` record, read
/// through the scenario's own `EmojiAggregate`; `None` if it is not one.
pub(super) fn emoji_window_count(value: &[u8]) -> Option<((String, i64), u64)> {
    let a: emoji_stream::EmojiAggregate = serde_json::from_slice(value).ok()?;
    let start = chrono::DateTime::parse_from_rfc3339(&a.window_start).ok()?;
    Some(((a.emoji_type, start.timestamp_millis()), a.count))
}

/// The human-readable table.
pub fn print_table(results: &[BenchResult]) {
    println!(
        "{:<8} {:<16} {:>10} {:>9} {:>14} {:>14} {:>7} {:>10}",
        "workload", "topology", "events", "seconds", "events/s", "ceiling/s", "ratio", "peak RSS"
    );
    for r in results {
        println!(
            "{:<8} {:<16} {:>10} {:>9.3} {:>14.0} {:>14.0} {:>6.1}% {:>7} MiB",
            r.workload,
            r.topology,
            r.events,
            r.seconds,
            r.events_per_s,
            r.ceiling_events_per_s,
            r.ratio * 100.0,
            r.peak_rss_bytes / (1024 * 1024)
        );
    }
    for r in results {
        if let Some(two_hop) = r.two_hop_ceiling_events_per_s {
            println!(
                "{:<8} {:<16} two-hop ceiling (every record through Kafka twice): {:.0}/s, weir at {:.1}% of it",
                r.workload,
                r.topology,
                two_hop,
                r.events_per_s / two_hop * 100.0
            );
        }
    }
    let latencies: Vec<&Latency> = results.iter().filter_map(|r| r.latency.as_ref()).collect();
    if !latencies.is_empty() {
        println!();
        println!(
            "{:>16} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "commit interval", "p50", "p99", "p99.9", "max", "samples"
        );
        for l in latencies {
            println!(
                "{:>13} ms {:>6.1} ms {:>6.1} ms {:>6.1} ms {:>6.1} ms {:>9}",
                l.commit_interval_ms, l.p50_ms, l.p99_ms, l.p999_ms, l.max_ms, l.samples
            );
        }
    }
}
