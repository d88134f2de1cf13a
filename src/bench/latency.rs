//! `weir bench latency`: end-to-end latency of user-clicks on Kafka at a
//! steady input rate.
//!
//! Per commit interval the bench starts `weir dev-broker` as a separate
//! process, runs user-clicks on it in-process (`stream::run_with_status`,
//! one stream thread), and once weir is assigned and ready, produces click
//! lines at a steady rate, each with its Kafka timestamp (CreateTime) set
//! to the wall clock at the moment it is sent. A consumer on
//! `user_click_aggregation` notes the wall clock at which each output
//! record arrives. weir stamps a cached aggregate with its task's stream
//! time when it forwards it at commit (Kafka Streams' semantics: the
//! timestamp of the newest input that changed it, here the newest click of
//! that partition), so `arrival - output timestamp` is the time from the
//! newest input an output reflects to that output being readable: queueing
//! in the producer, consumption, the repartition hop, waiting for the
//! commit, the commit, the delivery and the fetch of the measuring
//! consumer. The first seconds (warm-up) are not measured.
//!
//! After the run weir is stopped (it commits) and its final count per user
//! is checked against what was produced.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use weir_connectors::kafka::rdkafka::message::Message;
use weir_connectors::kafka::rdkafka::producer::{BaseRecord, Producer as _};
use weir_connectors::kafka::rdkafka::{Offset, TopicPartitionList};
use weir_connectors::kafka::stream::{self, AppSpec, Guarantee, RunConfig, RunStatus};
use weir_connectors::kafka::{assign_at, TopicSpec};

use super::e2e::{
    cluster, deliver, producer, read_topic, send, standalone_consumer, WeirRun, CACHE_MAX_BYTES, REQUEST_TIMEOUT,
};
use super::{peak_rss_bytes, BenchResult, Latency};
use crate::scenarios::user_clicks;

const PARTITIONS: i32 = 3;
/// Not measured: the clients settle (first fetches, producer connections).
const WARM_UP: Duration = Duration::from_secs(3);
/// Users of the generated clicks.
const USERS: u32 = 100;

/// Options of `weir bench latency`.
pub struct LatencyOptions {
    /// Input records per second.
    pub rate: u64,
    /// Measured seconds (after the warm-up).
    pub seconds: u64,
    /// weir's commit intervals to measure, one run each.
    pub commit_intervals: Vec<Duration>,
    /// What weir's commits promise.
    pub guarantee: Guarantee,
    /// An empty cluster to run on instead of a dev broker per interval
    /// (one interval only: the runs would share their topics).
    pub brokers: Option<String>,
    /// Progress lines on stderr (off with `--json`).
    pub verbose: bool,
}

pub fn run_latency(opts: &LatencyOptions) -> Result<Vec<BenchResult>> {
    if opts.brokers.is_some() && opts.commit_intervals.len() != 1 {
        bail!(
            "--brokers runs one commit interval on an empty cluster: give exactly one --commit-interval-ms (got {})",
            opts.commit_intervals.len()
        );
    }
    let mut out = Vec::new();
    for &interval in &opts.commit_intervals {
        out.push(
            run_one(opts, interval)
                .with_context(|| format!("latency benchmark at a {} ms commit interval", interval.as_millis()))?,
        );
    }
    Ok(out)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The wall clock in fractional milliseconds (arrivals are measured finer
/// than the record timestamps' milliseconds).
fn now_ms_f64() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}

fn run_one(opts: &LatencyOptions, commit_interval: Duration) -> Result<BenchResult> {
    let ms = commit_interval.as_millis();
    let log = |msg: &str| {
        if opts.verbose {
            eprintln!("latency ({ms} ms commits): {msg}");
        }
    };
    let (broker, settings, admin) = cluster(opts.brokers.as_deref(), PARTITIONS, &log)?;
    admin
        .ensure_topics(&[
            TopicSpec::new(user_clicks::INPUT_TOPIC, PARTITIONS),
            TopicSpec::new(user_clicks::OUTPUT_TOPIC, PARTITIONS),
        ])
        .context("creating the input and output topics")?;

    // weir.
    let state = tempfile::tempdir().context("creating a temporary state directory")?;
    let stop = Arc::new(AtomicBool::new(false));
    let status = Arc::new(RunStatus::default());
    let config = RunConfig {
        brokers: Some(settings.brokers.clone()),
        state_dir: state.path().to_path_buf(),
        threads: 1,
        commit_interval,
        cache_max_bytes: CACHE_MAX_BYTES,
        idle_advance: weir_connectors::kafka::stream::default_idle_advance(commit_interval),
        delivery_timeout: weir_connectors::kafka::stream::DEFAULT_DELIVERY_TIMEOUT,
        instance_id: None,
        guarantee: opts.guarantee,
        stop: stop.clone(),
        kafka_properties: Vec::new(),
        state_cache_bytes: weir_state::SLED_CACHE_BYTES,
    };
    let apps = vec![AppSpec {
        application_id: user_clicks::NAME.to_string(),
        topology: user_clicks::topology(&user_clicks::Params::default())?,
    }];
    let run_status = status.clone();
    let handle = std::thread::Builder::new()
        .name("bench-latency".into())
        .spawn(move || stream::run_with_status(apps, config, run_status))
        .context("starting weir's run thread")?;
    let mut run = WeirRun {
        stop,
        handle: Some(handle),
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !status.is_ready() || status.snapshot().values().all(|t| t.tasks.is_empty()) {
        if run.is_finished() {
            run.finish()?;
            bail!("weir stopped before it was ready");
        }
        if Instant::now() > deadline {
            bail!("weir was not ready within 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    log("weir is ready; producing");

    // The measuring consumer, on its own thread.
    let measuring = Arc::new(AtomicBool::new(true));
    let consumer = standalone_consumer(&settings)?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(user_clicks::OUTPUT_TOPIC, p, Offset::Offset(0))
            .context("positioning the measuring consumer")?;
    }
    assign_at(&consumer, &tpl, REQUEST_TIMEOUT).context("assigning the measuring consumer")?;
    let flag = measuring.clone();
    let measurer = std::thread::spawn(move || -> Result<Vec<(i64, f64)>> {
        // (output timestamp, arrival), in arrival order.
        let mut seen = Vec::with_capacity(1 << 16);
        while flag.load(Ordering::Relaxed) {
            match consumer.poll(Duration::from_millis(20)) {
                Some(Ok(m)) => {
                    let arrival = now_ms_f64();
                    if let Some(ts) = m.timestamp().to_millis() {
                        seen.push((ts, arrival));
                    }
                }
                Some(Err(e)) => bail!("the measuring consumer: {e}"),
                None => {}
            }
        }
        Ok(seen)
    });

    // The input, at a steady rate: every millisecond, what is due by then.
    let input = producer(&settings.clone().with("linger.ms", "1"))?;
    let mut rng = SmallRng::seed_from_u64(5);
    let mut expected: HashMap<u32, u64> = HashMap::new();
    let total = Duration::from_secs(opts.seconds) + WARM_UP;
    let started = Instant::now();
    let mut sent = 0u64;
    let mut line = String::with_capacity(64);
    let mut measure_from = i64::MAX;
    let mut measure_to = 0i64;
    loop {
        let elapsed = started.elapsed();
        if elapsed >= total {
            break;
        }
        let due = (elapsed.as_secs_f64() * opts.rate as f64) as u64;
        while sent < due {
            let ts = now_ms();
            let user: u32 = rng.gen_range(1..=USERS);
            let page: u32 = rng.gen_range(1..=10);
            line.clear();
            use std::fmt::Write;
            let _ = write!(
                line,
                "User {user} clicked on /page{page} at {}.{:03}",
                ts / 1000,
                ts % 1000
            );
            send(
                &input,
                BaseRecord::<[u8], [u8]>::to(user_clicks::INPUT_TOPIC)
                    .payload(line.as_bytes())
                    .timestamp(ts),
            )?;
            *expected.entry(user).or_default() += 1;
            if elapsed >= WARM_UP {
                measure_from = measure_from.min(ts);
                measure_to = ts;
            }
            sent += 1;
        }
        input.poll(Duration::ZERO);
        std::thread::sleep(Duration::from_millis(1));
    }
    deliver(&input, user_clicks::INPUT_TOPIC)?;
    input.flush(Duration::from_secs(10)).ok();
    log(&format!(
        "{sent} clicks sent in {:.1} s",
        started.elapsed().as_secs_f64()
    ));
    // Let the last commits land, then stop measuring and stop weir.
    std::thread::sleep(2 * commit_interval + Duration::from_millis(500));
    measuring.store(false, Ordering::Relaxed);
    let seen = measurer
        .join()
        .map_err(|_| anyhow::anyhow!("the measuring consumer panicked"))??;
    run.finish()?;

    // The final count of every user must be what was produced.
    let mut latest: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
    read_topic(&settings, user_clicks::OUTPUT_TOPIC, |k, v| {
        latest.insert(k.unwrap_or_default().to_vec(), v.unwrap_or_default().to_vec());
        Ok(())
    })?;
    for (user, count) in &expected {
        let want = user_clicks::aggregation_text(*user, *count);
        let got = latest
            .get(user.to_string().as_bytes())
            .map(|v| String::from_utf8_lossy(v).into_owned());
        if got.as_deref() != Some(want.as_str()) {
            bail!("user-clicks result wrong for user {user}: expected {want:?}, got {got:?}");
        }
    }
    drop(broker);

    // Outputs that reflect inputs of the measured span.
    let mut lat: Vec<f64> = seen
        .iter()
        .filter(|(ts, _)| *ts >= measure_from && *ts <= measure_to)
        .map(|(ts, arrival)| (arrival - *ts as f64).max(0.0))
        .collect();
    if lat.is_empty() {
        bail!("no output arrived for the measured span");
    }
    lat.sort_by(f64::total_cmp);
    let pct = |q: f64| lat[((lat.len() as f64 * q).ceil() as usize).clamp(1, lat.len()) - 1];
    let latency = Latency {
        commit_interval_ms: ms as u64,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        p999_ms: pct(0.999),
        max_ms: lat[lat.len() - 1],
        samples: lat.len() as u64,
    };
    log(&format!("{latency:?}"));
    let measured = opts.rate * opts.seconds;
    let seconds = opts.seconds as f64;
    Ok(BenchResult {
        workload: "latency",
        topology: match opts.guarantee {
            Guarantee::AtLeastOnce => format!("{}@{}ms", user_clicks::NAME, ms),
            Guarantee::ExactlyOnce => format!("{}@{}ms exactly-once", user_clicks::NAME, ms),
        },
        events: measured,
        seconds,
        events_per_s: measured as f64 / seconds,
        ceiling_events_per_s: opts.rate as f64,
        ratio: 1.0,
        peak_rss_bytes: peak_rss_bytes(),
        latency: Some(latency),
        two_hop_ceiling_events_per_s: None,
    })
}
