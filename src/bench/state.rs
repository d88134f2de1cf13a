//! `weir bench state`: put/get throughput of weir's sled store with and
//! without the write cache, next to raw sled (the ceiling).
//!
//! The same pseudo-random keys (8-byte big-endian, a fixed key space so
//! that keys repeat, as counts per user do) go through each variant: N puts
//! then N gets. "no cache" means a cache limit of 0: every write makes the
//! store ask for a commit, and the bench commits then (one sled batch per
//! write), which is what the runtime does at that limit.

use std::time::Instant;

use anyhow::{bail, Context, Result};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use weir::state::{KeyValueStore, StateDb, StateStore};

use super::{peak_rss_bytes, BenchResult};

/// Options of `weir bench state`.
pub struct StateOptions {
    pub ops: u64,
    pub keys: u64,
}

fn keys(opts: &StateOptions) -> Vec<[u8; 8]> {
    let mut rng = SmallRng::seed_from_u64(7);
    (0..opts.ops)
        .map(|_| rng.gen_range(0..opts.keys).to_be_bytes())
        .collect()
}

/// Seconds for N puts then N gets on raw sled (insert / get on one tree).
fn raw_sled(keys: &[[u8; 8]]) -> Result<(f64, f64)> {
    let dir = tempfile::tempdir()?;
    let db = sled::open(dir.path()).context("opening sled")?;
    let tree = db.open_tree("bench")?;
    let t = Instant::now();
    for (i, k) in keys.iter().enumerate() {
        tree.insert(k, &(i as u64).to_be_bytes())?;
    }
    let put = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut found = 0u64;
    for k in keys {
        found += u64::from(tree.get(k)?.is_some());
    }
    let get = t.elapsed().as_secs_f64();
    if found != keys.len() as u64 {
        bail!("raw sled lost keys: {found} of {} found", keys.len());
    }
    Ok((put, get))
}

/// Seconds for N puts then N gets through a weir store with the given
/// cache limit, committing when the store asks (and at the end of puts).
fn weir_store(keys: &[[u8; 8]], cache_max_bytes: usize) -> Result<(f64, f64)> {
    let dir = tempfile::tempdir()?;
    let db = StateDb::open(dir.path())?;
    let task = db.task("bench/0_0", cache_max_bytes)?;
    let store = task.open_key_value("bench")?;
    let commit = |store: &mut dyn KeyValueStore| -> Result<()> {
        store.flush()?;
        task.commit(&weir::runtime::TaskCheckpoint::default().encode())?;
        Ok(())
    };
    let t = Instant::now();
    {
        let mut s = store.borrow_mut();
        for (i, k) in keys.iter().enumerate() {
            s.put(k, &(i as u64).to_be_bytes())?;
            if s.wants_flush() {
                commit(&mut *s)?;
            }
        }
        commit(&mut *s)?;
    }
    let put = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut found = 0u64;
    let mut out = Vec::new();
    {
        let mut s = store.borrow_mut();
        for k in keys {
            found += u64::from(s.get_into(k, &mut out)?);
        }
    }
    let get = t.elapsed().as_secs_f64();
    if found != keys.len() as u64 {
        bail!("weir store lost keys: {found} of {} found", keys.len());
    }
    Ok((put, get))
}

pub fn run_state(opts: &StateOptions) -> Result<Vec<BenchResult>> {
    let keys = keys(opts);
    let n = opts.ops;
    let (raw_put, raw_get) = raw_sled(&keys)?;
    let mut results = Vec::new();
    let mut push = |name: &str, seconds: f64, ceiling_seconds: f64| {
        results.push(BenchResult {
            workload: "state",
            topology: name.to_string(),
            events: n,
            seconds,
            events_per_s: n as f64 / seconds,
            ceiling_events_per_s: n as f64 / ceiling_seconds,
            ratio: ceiling_seconds / seconds,
            peak_rss_bytes: peak_rss_bytes(),
            latency: None,
            two_hop_ceiling_events_per_s: None,
        })
    };
    push("sled put", raw_put, raw_put);
    push("sled get", raw_get, raw_get);
    let (put, get) = weir_store(&keys, 10 * 1024 * 1024)?;
    push("cache put", put, raw_put);
    push("cache get", get, raw_get);
    // Without the cache every put is a sled batch: a tenth of the ops keep
    // the run short; the rate is what counts.
    let small = &keys[..keys.len().div_ceil(10)];
    let (put, get) = weir_store(small, 0)?;
    let scale = keys.len() as f64 / small.len() as f64;
    push("no-cache put", put * scale, raw_put);
    push("no-cache get", get * scale, raw_get);
    Ok(results)
}
