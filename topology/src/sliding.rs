//! Sliding windows (KIP-450): windowed aggregations whose windows are
//! defined by the records themselves, not by the clock.
//!
//! With a time difference `d`, every record at `t` defines the window
//! `[t - d, t]` that ends with it (its *left* window) and, if a later
//! record falls within `d` after it, the window `[t + 1, t + 1 + d]` that
//! starts just after it (its *right* window). Both ends are inclusive. A
//! record updates every existing window that contains it. So the store
//! holds exactly the distinct sets of records that are at most `d` apart,
//! which a hopping window with a 1 ms advance would also find, at the cost
//! of one window per record instead of `d` per record.
//!
//! The algorithm is Kafka Streams' `KStreamSlidingWindowAggregate`
//! (reverse-iterator variant), so the same input gives the same windows and
//! aggregates, including Kafka's handling of "early" records
//! (`0 <= t < d`): their left window would start before 0, so they all go
//! into one window `[0, d]`. Records with a negative timestamp are refused
//! (dead-lettered), as Kafka refuses them.
//!
//! # Store layout
//!
//! A window store keyed by (window start, key); the value is the largest
//! record timestamp in the window ([`encode_window_start`], 8 bytes)
//! followed by the aggregate's bytes. That timestamp is what an update is
//! forwarded with (as in Kafka), and it tells whether a window holds
//! records after a given time (the new record's right window is a copy of
//! the latest window that does).
//!
//! # Closing, lateness, retention
//!
//! With stream time `st`, a window `[s, e]` is closed once `e < st - grace`:
//! no record updates it any more. A record whose left window and every
//! window it would update are closed is dropped and counted in
//! `TaskCounters::late_records_dropped` (Kafka counts each skipped window;
//! weir counts records, as for time windows). The table's grace period is
//! `grace + 1` (the end is inclusive), so that `suppress` emits a window
//! exactly when it closes. Windows are kept for `2 d + grace` after their
//! start (Kafka's default retention): a new record reads windows up to
//! `2 d` before it to find the aggregate of its left window.

use std::sync::Arc;
use std::time::Duration;

use crate::context::{InitContext, ProcessorContext};
use crate::error::TopologyError;
use crate::grouped::{
    aggregate_step, count_step, decode_stored, decode_window_key, reduce_step, AggCore, Aggregates, FinalEmitter,
    KGroupedStream, Step, WindowAggSetup, WindowSpec, WindowedAgg,
};
use crate::ktable::{KTable, WindowStored};
use crate::materialized::Materialized;
use crate::node::Children;
use crate::serde::{Serde, Serdes};
use crate::store::{decode_window_start, encode_window_start, StoreError, WindowStoreRef};
use crate::windows::{Window, Windowed};
use crate::Data;

// Exported from here (this module's items are re-exported by the crate
// root): the emit strategy applies to every windowed aggregation.
pub use crate::windows::EmitStrategy;

/// Sliding windows: all records of a key at most a time difference apart
/// are aggregated together.
///
/// ```
/// # use std::time::Duration;
/// # use weir_topology::*;
/// let windows = SlidingWindows::of_time_difference_and_grace(
///     Duration::from_secs(10),
///     Duration::from_secs(5),
/// )?;
/// let mut b = StreamsBuilder::new();
/// b.stream::<String, String>("clicks", Serdes::string(), Serdes::string())
///     .group_by_key(Serdes::string(), Serdes::string())
///     .windowed_by(windows)
///     .count(Materialized::named("clicks-within-10s"));
/// # b.build()?;
/// # Ok::<(), TopologyError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlidingWindows {
    pub(crate) diff_ms: i64,
    pub(crate) grace_ms: i64,
}

fn millis(what: &str, d: Duration) -> Result<i64, TopologyError> {
    i64::try_from(d.as_millis()).map_err(|_| TopologyError::InvalidWindow(format!("{what} {d:?} is too large")))
}

impl SlidingWindows {
    /// Windows of records at most `time_difference` apart (both ends
    /// inclusive), accepting records up to `grace` after a window's end.
    pub fn of_time_difference_and_grace(time_difference: Duration, grace: Duration) -> Result<Self, TopologyError> {
        let diff_ms = millis("sliding window time difference", time_difference)?;
        let grace_ms = millis("grace", grace)?;
        // The largest window end the aggregation computes is t + 1 + d + grace.
        if diff_ms.checked_mul(2).and_then(|d| d.checked_add(grace_ms)).is_none() {
            return Err(TopologyError::InvalidWindow(format!(
                "sliding window time difference {time_difference:?} with grace {grace:?} is too large"
            )));
        }
        Ok(SlidingWindows { diff_ms, grace_ms })
    }

    /// Sliding windows with no grace: a record later than stream time minus
    /// the time difference is dropped.
    pub fn of_time_difference_with_no_grace(time_difference: Duration) -> Result<Self, TopologyError> {
        Self::of_time_difference_and_grace(time_difference, Duration::ZERO)
    }

    /// The largest time difference (ms) between two records of a window.
    pub fn time_difference_ms(&self) -> i64 {
        self.diff_ms
    }
    /// How long (ms) after a window's end its records are still accepted.
    pub fn grace_ms(&self) -> i64 {
        self.grace_ms
    }
}

impl<K: Data, V: Data> WindowSpec<K, V> for SlidingWindows {
    type Windowed = SlidingWindowedKStream<K, V>;
    fn apply(self, grouped: KGroupedStream<K, V>) -> SlidingWindowedKStream<K, V> {
        SlidingWindowedKStream {
            grouped,
            windows: self,
            emit: EmitStrategy::default(),
        }
    }
}

/// A grouped stream in sliding windows. The resulting table's windows are
/// `[start, end]` with both ends inclusive (`end = start + difference`).
pub struct SlidingWindowedKStream<K, V> {
    grouped: KGroupedStream<K, V>,
    windows: SlidingWindows,
    emit: EmitStrategy,
}

impl<K: Data, V: Data> SlidingWindowedKStream<K, V> {
    /// When the aggregation forwards its windows: on every update (the
    /// default) or once, when each window closes.
    pub fn emit_strategy(self, emit: EmitStrategy) -> Self {
        SlidingWindowedKStream { emit, ..self }
    }

    /// The number of records per key and window.
    pub fn count(self, materialized: Materialized) -> KTable<Windowed<K>, u64, WindowStored> {
        self.aggregate_with("KSTREAM-AGGREGATE", materialized, Serdes::u64(), count_step())
    }

    /// Combine the values of a key within each window.
    pub fn reduce(
        self,
        reducer: impl Fn(V, V) -> V + Send + Sync + 'static,
        materialized: Materialized,
    ) -> KTable<Windowed<K>, V, WindowStored> {
        let serde = self.grouped.value_serde.clone();
        self.aggregate_with("KSTREAM-REDUCE", materialized, serde, reduce_step(reducer))
    }

    /// Fold the values of a key within each window, starting from `init()`.
    /// A window created for a new record starts from a copy of the
    /// aggregate of the records before it (as in Kafka Streams), so the
    /// aggregator is applied once per (record, window).
    pub fn aggregate<A: Data>(
        self,
        init: impl Fn() -> A + Send + Sync + 'static,
        aggregator: impl Fn(&K, V, A) -> A + Send + Sync + 'static,
        aggregate_serde: Serde<A>,
        materialized: Materialized,
    ) -> KTable<Windowed<K>, A, WindowStored> {
        self.aggregate_with(
            "KSTREAM-AGGREGATE",
            materialized,
            aggregate_serde,
            aggregate_step(init, aggregator),
        )
    }

    fn aggregate_with<A: Data>(
        self,
        kind: &str,
        materialized: Materialized,
        aggregate_serde: Serde<A>,
        step: Step<K, V, A>,
    ) -> KTable<Windowed<K>, A, WindowStored> {
        self.grouped
            .windowed_aggregate(kind, self.windows, self.emit, materialized, aggregate_serde, step)
    }
}

/// A closed window found in a store, to be emitted by an emit-on-close
/// aggregation: its bounds and its raw store key and value.
pub(crate) struct DueWindow {
    pub(crate) start: i64,
    pub(crate) end: i64,
    pub(crate) key: Vec<u8>,
    pub(crate) value: Vec<u8>,
}

/// Order due windows as `suppress` emits them: by window end, then by the
/// serialized windowed key (record key, start, end), which is the order of
/// the suppression buffer's keys. Emit-on-close so produces exactly the
/// records (and order) of the suppressed table.
pub(crate) fn in_suppress_order(mut due: Vec<DueWindow>) -> Vec<DueWindow> {
    due.sort_by_cached_key(|w| {
        let mut k = Vec::with_capacity(w.key.len() + 16);
        k.extend_from_slice(&w.key);
        k.extend_from_slice(&w.start.to_be_bytes());
        k.extend_from_slice(&w.end.to_be_bytes());
        (w.end, k)
    });
    due
}

/// The windows `[start, start + len]` of a store whose end passed the last
/// emission: `last_close < end <= close` (`last_close` is `i64::MIN` when
/// nothing was emitted yet), found with one range scan by start. Time
/// windows (`len` = size) and sliding windows (`len` = time difference)
/// have a fixed length; sessions do not.
pub(crate) fn fixed_length_due(
    store: &WindowStoreRef,
    last_close: i64,
    close: i64,
    len: i64,
) -> Result<Vec<DueWindow>, StoreError> {
    let from = if last_close == i64::MIN {
        i64::MIN
    } else {
        last_close.saturating_sub(len).saturating_add(1)
    };
    let to = close.saturating_sub(len);
    if from > to {
        return Ok(Vec::new());
    }
    let entries = store.borrow_mut().fetch_all(from, to)?;
    Ok(entries
        .into_iter()
        .map(|(key, start, value)| DueWindow {
            start,
            end: start.saturating_add(len),
            key,
            value,
        })
        .collect())
}

/// Forward the closed windows an emit-on-close aggregation found, in
/// [`in_suppress_order`], each with its end as timestamp (the timestamp
/// `suppress` gives a final result); `decode` reads the aggregate from a
/// stored value. A stored key or value that does not decode stops the
/// emission with the error (store corruption: the caller fails the task).
pub(crate) fn forward_due<K: Data, A: Data>(
    ctx: &mut ProcessorContext,
    children: &mut Children<Windowed<K>, Option<A>>,
    key_serde: &Serde<K>,
    store: &str,
    due: Vec<DueWindow>,
    decode: impl Fn(&[u8]) -> Result<A, StoreError>,
) -> Result<(), StoreError> {
    let ts = ctx.timestamp;
    for w in in_suppress_order(due) {
        let key = key_serde
            .deserialize(&w.key)
            .map_err(|e| StoreError::new(store, format!("stored key does not decode: {e}")))?;
        let agg = decode(&w.value)?;
        ctx.timestamp = w.end;
        let wk = Windowed {
            key,
            window: Window {
                start: w.start,
                end: w.end,
            },
        };
        children.forward(ctx, wk, Some(agg));
    }
    ctx.timestamp = ts;
    Ok(())
}

impl<K: Data, A: Data> WindowedAgg<K, A> for SlidingWindows {
    type Core = SlidingAggCore<K, A>;
    const QUERYABLE: bool = false;

    /// Kafka's default: a new record reads windows up to `2 d` before it.
    fn min_retention_ms(&self) -> i64 {
        2 * self.diff_ms + self.grace_ms
    }

    /// `grace + 1`: a window `[s, e]` takes records while
    /// `e >= stream time - grace`, so it is final once
    /// `e + grace + 1 <= stream time`, which is when `suppress` emits.
    fn table_grace_ms(&self) -> i64 {
        self.grace_ms.saturating_add(1)
    }

    fn make_core(
        setup: &WindowAggSetup<Self, K, A>,
        emit: Option<FinalEmitter>,
        ictx: &mut InitContext<'_>,
    ) -> Result<SlidingAggCore<K, A>, TopologyError> {
        Ok(SlidingAggCore {
            store: ictx.window_store(&setup.store)?,
            name: Arc::from(setup.store.as_str()),
            windows: setup.windows,
            retention_ms: setup.retention_ms,
            last_purge: i64::MIN,
            key_serde: setup.key_serde.clone(),
            agg_serde: setup.agg_serde.clone(),
            emit,
            children: setup.out.instantiate(ictx)?,
            kbuf: Vec::new(),
            vbuf: Vec::new(),
        })
    }
}

pub(crate) struct SlidingAggCore<K, A> {
    store: WindowStoreRef,
    name: Arc<str>,
    windows: SlidingWindows,
    retention_ms: i64,
    last_purge: i64,
    key_serde: Serde<K>,
    agg_serde: Serde<A>,
    /// Set for [`EmitStrategy::on_window_close`].
    emit: Option<FinalEmitter>,
    children: Children<Windowed<K>, Option<A>>,
    kbuf: Vec<u8>,
    vbuf: Vec<u8>,
}

/// Why processing a record stopped: a store failure (fatal for the task) or
/// a bad record (dead-lettered).
enum Failure {
    Store(StoreError),
    Record(String),
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Failure::Store(e)
    }
}

/// A window read from the store: start, largest record timestamp,
/// aggregate, and the raw value (copied as is into a new right window).
struct Stored<A> {
    start: i64,
    max_ts: i64,
    agg: A,
    raw: Vec<u8>,
}

/// The record being aggregated, with what its updates need.
struct Rec<'a, K, V, A> {
    key: &'a K,
    value: &'a V,
    ts: i64,
    /// Windows ending before this are closed (stream time - grace).
    close: i64,
    step: &'a Step<K, V, A>,
    /// Whether any window took the record.
    accepted: bool,
}

fn split_value<'a>(store: &str, bytes: &'a [u8]) -> Result<(i64, &'a [u8]), StoreError> {
    if bytes.len() < 8 {
        return Err(StoreError::new(
            store,
            format!("sliding window value needs at least 8 bytes, got {}", bytes.len()),
        ));
    }
    let (ts, agg) = bytes.split_at(8);
    Ok((decode_window_start(ts.try_into().expect("8 bytes")), agg))
}

impl<K: Data, A: Data> SlidingAggCore<K, A> {
    fn fetch(&mut self, from: i64, to: i64) -> Result<Vec<Stored<A>>, StoreError> {
        let raw = self.store.borrow_mut().fetch(&self.kbuf, from, to)?;
        raw.into_iter()
            .map(|(start, raw)| {
                let (max_ts, agg) = split_value(&self.name, &raw)?;
                let agg = decode_stored(&self.agg_serde, &self.name, agg)?;
                Ok(Stored {
                    start,
                    max_ts,
                    agg,
                    raw,
                })
            })
            .collect()
    }

    /// Kafka's `updateWindowAndForward`: fold the record into the window
    /// starting at `start` (whose current content is `old`, `None` for a
    /// new window starting from `init()`), unless the window is closed.
    fn update<V: Clone>(
        &mut self,
        rec: &mut Rec<'_, K, V, A>,
        start: i64,
        old: Option<(i64, A)>,
    ) -> Result<(), Failure> {
        let end = start.saturating_add(self.windows.diff_ms);
        if end < rec.close {
            return Ok(()); // closed
        }
        let max_ts = old.as_ref().map_or(rec.ts, |(t, _)| (*t).max(rec.ts));
        let new = (rec.step)(rec.key, rec.value.clone(), old.map(|(_, a)| a));
        self.vbuf.clear();
        self.vbuf.extend_from_slice(&encode_window_start(max_ts));
        self.agg_serde
            .serialize(&new, &mut self.vbuf)
            .map_err(|e| Failure::Record(format!("aggregate serialization failed: {e}")))?;
        self.store.borrow_mut().put(&self.kbuf, start, &self.vbuf)?;
        rec.accepted = true;
        Ok(())
    }

    /// The new record's right window `[t + 1, t + 1 + d]`: a copy of the
    /// latest window holding records after `t` (Kafka's
    /// `createCurrentRecordRightWindow`; no closing check, it ends after
    /// the record's own left window).
    fn put_right_window(&mut self, ts: i64, raw: &[u8]) -> Result<(), StoreError> {
        self.store.borrow_mut().put(&self.kbuf, ts.saturating_add(1), raw)
    }

    /// A record at `t >= d` (Kafka's `processReverse`): scan the windows of
    /// the key starting in `[t - 2d, t + 1]`, newest first.
    fn process_reverse<V: Clone>(&mut self, rec: &mut Rec<'_, K, V, A>) -> Result<(), Failure> {
        let ts = rec.ts;
        let diff = self.windows.diff_ms;
        let windows = self.fetch((ts - 2 * diff).max(0), ts.saturating_add(1))?;
        let mut starts = Vec::with_capacity(windows.len());
        let mut left_agg: Option<A> = None;
        let mut right: Option<(i64, Vec<u8>)> = None;
        let (mut left_created, mut right_created) = (false, false);
        let mut previous: Option<i64> = None;
        for w in windows.into_iter().rev() {
            starts.push(w.start);
            let end = w.start + diff;
            if w.start == ts + 1 {
                right_created = true;
            } else if end > ts {
                // A window that contains the record; the newest one holds
                // what goes into the record's right window.
                if right.is_none() {
                    right = Some((w.max_ts, w.raw));
                }
                self.update(rec, w.start, Some((w.max_ts, w.agg)))?;
            } else if end == ts {
                left_created = true;
                self.update(rec, w.start, Some((w.max_ts, w.agg)))?;
                if w.max_ts < ts {
                    previous = Some(w.max_ts);
                } else {
                    // A record at this very timestamp was seen: its windows
                    // exist already.
                    return Ok(());
                }
            } else {
                // The newest window ending before the record: its aggregate
                // is that of the records before the record.
                left_agg = Some(w.agg);
                previous = Some(w.max_ts);
                break;
            }
        }
        // The previous record's right window, if it does not exist yet and
        // the record falls in it.
        if let Some(p) = previous {
            let start = p + 1;
            if !starts.contains(&start) && start + diff >= ts {
                self.update(rec, start, None)?;
            }
        }
        // The record's left window: the records before it within d, if any.
        if !left_created {
            let old = match (previous, left_agg) {
                (Some(p), Some(agg)) if ts - diff <= p => Some((ts, agg)),
                _ => None,
            };
            self.update(rec, ts - diff, old)?;
        }
        if !right_created {
            if let Some((max_ts, raw)) = right {
                if max_ts > ts {
                    self.put_right_window(ts, &raw)?;
                }
            }
        }
        Ok(())
    }

    /// A record at `0 <= t < d` (Kafka's `processEarly`): its left window
    /// would start before 0, so early records share the window `[0, d]`.
    fn process_early<V: Clone>(&mut self, rec: &mut Rec<'_, K, V, A>) -> Result<(), Failure> {
        let ts = rec.ts;
        let windows = self.fetch(0, ts.saturating_add(1))?;
        let mut starts = Vec::with_capacity(windows.len());
        let mut combined: Option<Stored<A>> = None;
        let mut right: Option<(i64, Vec<u8>)> = None;
        let mut right_created = false;
        let mut previous: Option<i64> = None;
        for w in windows {
            starts.push(w.start);
            if w.start == 0 {
                if w.max_ts < ts {
                    previous = Some(w.max_ts);
                }
                combined = Some(w);
            } else if w.start <= ts {
                right = Some((w.max_ts, w.raw));
                self.update(rec, w.start, Some((w.max_ts, w.agg)))?;
            } else if w.start == ts + 1 {
                right_created = true;
            }
        }
        // With no right window found, the combined window holds only
        // records after this one if its latest record is later.
        if right.is_none() {
            if let Some(c) = &combined {
                if c.max_ts > ts {
                    right = Some((c.max_ts, c.raw.clone()));
                }
            }
        }
        if !right_created {
            if let Some((max_ts, raw)) = right {
                if max_ts > ts {
                    self.put_right_window(ts, &raw)?;
                }
            }
        }
        if let Some(p) = previous {
            if !starts.contains(&(p + 1)) {
                self.update(rec, p + 1, None)?;
            }
        }
        match combined {
            None => self.update(rec, 0, None),
            Some(c) => self.update(rec, 0, Some((c.max_ts, c.agg))),
        }
    }

    /// Drop windows past retention, at most once per time difference of
    /// stream-time progress.
    fn maybe_purge(&mut self, ctx: &mut ProcessorContext) {
        let st = ctx.stream_time;
        if st == i64::MIN {
            return;
        }
        let before = st.saturating_sub(self.retention_ms);
        if self.last_purge == i64::MIN || before >= self.last_purge.saturating_add(self.windows.diff_ms.max(1)) {
            if let Err(e) = self.store.borrow_mut().purge_before(before) {
                ctx.fail(e);
            }
            self.last_purge = before;
        }
    }

    /// Emit-on-close: forward every window `[s, s + d]` that closed since
    /// the last emission (`s + d < stream time - grace`), from one range
    /// scan by start (Kafka's `emitRangeLowerBound`/`emitRangeUpperBound`).
    fn emit_closed(&mut self, ctx: &mut ProcessorContext) {
        let Some(emitter) = self.emit.as_mut() else { return };
        // Due: end + grace + 1 <= stream time, i.e. end <= close.
        let Some((last, close)) = emitter.due(ctx, self.windows.grace_ms.saturating_add(1)) else {
            return;
        };
        let due = match fixed_length_due(&self.store, last, close, self.windows.diff_ms) {
            Ok(d) => d,
            Err(e) => return ctx.fail(e),
        };
        let decoded = forward_due(ctx, &mut self.children, &self.key_serde, &self.name, due, |v| {
            split_value(&self.name, v).and_then(|(_, agg)| decode_stored(&self.agg_serde, &self.name, agg))
        });
        if let Err(e) = decoded {
            return ctx.fail(e);
        }
        if let Err(e) = self.emit.as_mut().expect("emitting").set_last_close(close) {
            ctx.fail(e);
        }
    }
}

impl<K: Data, V: Clone, A: Data> Aggregates<K, V, Step<K, V, A>> for SlidingAggCore<K, A> {
    fn aggregate(&mut self, ctx: &mut ProcessorContext, key: K, value: V, step: &Step<K, V, A>) {
        let ts = ctx.timestamp;
        if ts < 0 {
            return ctx.dead_letter(format!("sliding windows need a timestamp >= 0, got {ts}"));
        }
        self.kbuf.clear();
        if let Err(e) = self.key_serde.serialize(&key, &mut self.kbuf) {
            return ctx.dead_letter(format!("key serialization failed: {e}"));
        }
        let diff = self.windows.diff_ms;
        let close = ctx.stream_time.saturating_sub(self.windows.grace_ms);
        // Every window the record could touch ends by t + d.
        if ts.saturating_add(diff) < close {
            ctx.counters.late_records_dropped += 1;
            return;
        }
        let mut rec = Rec {
            key: &key,
            value: &value,
            ts,
            close,
            step,
            accepted: false,
        };
        let result = if ts < diff {
            self.process_early(&mut rec)
        } else {
            self.process_reverse(&mut rec)
        };
        let accepted = rec.accepted;
        match result {
            Ok(()) => {}
            Err(Failure::Store(e)) => return ctx.fail(e),
            Err(Failure::Record(msg)) => return ctx.dead_letter(msg),
        }
        if !accepted {
            ctx.counters.late_records_dropped += 1;
        }
        if self.store.borrow().wants_flush() {
            ctx.request_commit();
        }
    }
}

impl<K: Data, A: Data> AggCore for SlidingAggCore<K, A> {
    fn flush(&mut self, ctx: &mut ProcessorContext) {
        let records = match self.store.borrow_mut().flush() {
            Ok(r) => r,
            Err(e) => return ctx.fail(e),
        };
        let ts = ctx.timestamp;
        let forward_updates = self.emit.is_none();
        for rec in records {
            if !forward_updates || rec.value.is_none() {
                // Tombstones come only from retention purges of windows
                // closed long ago: nothing downstream needs them.
                ctx.changelog.push((self.name.clone(), rec));
                continue;
            }
            let decoded = decode_window_key(&self.key_serde, &self.name, &rec.key).and_then(|(start, key)| {
                let (max_ts, agg) = split_value(&self.name, rec.value.as_deref().unwrap_or_default())?;
                Ok((start, key, max_ts, decode_stored(&self.agg_serde, &self.name, agg)?))
            });
            let (start, key, max_ts, agg) = match decoded {
                Ok(d) => d,
                Err(e) => {
                    ctx.fail(e);
                    break;
                }
            };
            ctx.changelog.push((self.name.clone(), rec));
            // An update carries the largest record timestamp of its window.
            ctx.timestamp = max_ts;
            let wk = Windowed {
                key,
                window: Window {
                    start,
                    end: start + self.windows.diff_ms,
                },
            };
            self.children.forward(ctx, wk, Some(agg));
        }
        ctx.timestamp = ts;
        // Emit closed windows before the purge can delete them.
        self.emit_closed(ctx);
        if let Some(e) = self.emit.as_mut() {
            e.flush(ctx);
        }
        self.maybe_purge(ctx);
        self.children.flush(ctx);
    }

    fn punctuate(&mut self, ctx: &mut ProcessorContext) {
        self.children.punctuate(ctx)
    }
    fn close(&mut self, ctx: &mut ProcessorContext) {
        self.children.close(ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sliding_windows_validate_their_parameters() {
        let w =
            SlidingWindows::of_time_difference_and_grace(Duration::from_millis(10), Duration::from_millis(5)).unwrap();
        assert_eq!((w.time_difference_ms(), w.grace_ms()), (10, 5));
        let n = SlidingWindows::of_time_difference_with_no_grace(Duration::from_millis(10)).unwrap();
        assert_eq!(n.grace_ms(), 0);
        assert!(SlidingWindows::of_time_difference_with_no_grace(Duration::from_secs(u64::MAX / 1000)).is_err());
    }

    #[test]
    fn due_windows_sort_like_the_suppression_buffer() {
        let w = |start, end, key: &[u8]| DueWindow {
            start,
            end,
            key: key.to_vec(),
            value: Vec::new(),
        };
        let sorted = in_suppress_order(vec![w(0, 20, b"a"), w(5, 10, b"b"), w(0, 10, b"b"), w(0, 10, b"a")]);
        assert_eq!(
            sorted
                .iter()
                .map(|w| (w.start, w.end, w.key.clone()))
                .collect::<Vec<_>>(),
            vec![
                (0, 10, b"a".to_vec()),
                (0, 10, b"b".to_vec()),
                (5, 10, b"b".to_vec()),
                (0, 20, b"a".to_vec())
            ]
        );
    }
}
