//! Session-windowed aggregations: `count`, `reduce` and `aggregate` on a
//! [`SessionWindowedKStream`].
//!
//! A session of a key is a run of its records in which no two consecutive
//! records are more than the inactivity gap apart. Sessions grow and merge
//! as records arrive (a record that falls between two sessions bridges them
//! into one), so unlike time windows a session's bounds are data, not a
//! function of the timestamp.
//!
//! # Store layout
//!
//! A window store keyed by (session start, key), whose value is the
//! session's end (8 bytes, [`encode_window_start`]) followed by the
//! aggregate's bytes. Keying by start keeps the store ordered by time like
//! every other window store; the end lives in the value because it moves
//! while the start key of a growing session often does not.
//!
//! # What flows downstream
//!
//! The result is a `KTable<Windowed<K>, A>` whose windows are
//! `[start, end]` with `end` the timestamp of the session's last record
//! (inclusive, as in Kafka Streams). When a record changes a session's
//! bounds, the old window no longer exists: the table forwards a tombstone
//! `(Windowed{old window}, None)` for it, then the new window with its
//! value. That is what lets [`crate::KTable::suppress`] drop a buffered
//! session that was merged away instead of emitting it as final.
//!
//! # Closing, lateness and retention
//!
//! With stream time `st`, a session `[s, e]` is *closed* once
//! `e + gap + grace < st`: from then on no accepted record can reach it.
//! A closed session is final: it is never merged again, even by a record
//! that bridges it to a newer, open session (that record extends the open
//! session only). A record whose merged session would end before
//! `st - grace` is late: dropped and counted in
//! `TaskCounters::late_records_dropped`. The table's grace period is
//! `gap + grace + 1`, so that suppression emits a session exactly when it
//! closes. Closed sessions stay in the store (for queries) until they end
//! more than the retention (at least gap + grace) before stream time; the
//! purge deletes them without forwarding anything.

use std::sync::Arc;

use crate::context::{InitContext, ProcessorContext};
use crate::error::TopologyError;
use crate::grouped::{
    decode_stored, decode_window_key, AggCore, Aggregates, FinalEmitter, SessionWindowedKStream, WindowAggSetup,
    WindowedAgg,
};
use crate::ktable::{KTable, WindowStored};
use crate::materialized::Materialized;
use crate::node::Children;
use crate::serde::{Serde, Serdes};
use crate::sliding::{forward_due, DueWindow};
use crate::store::{decode_window_start, encode_window_start, StoreError, WindowStoreRef};
use crate::windows::{EmitStrategy, SessionWindows, Window, Windowed};
use crate::Data;

/// Combines the aggregates of the sessions a record merges (oldest first)
/// with the record's value into the merged session's aggregate.
pub(crate) type SessionFold<K, V, A> = Arc<dyn Fn(&K, Vec<A>, V) -> A + Send + Sync>;

/// The fold of a session `aggregate` (single stream or cogroup input): the
/// merged sessions' aggregates combined with `merger(key, acc, session)`
/// starting from `init()`, oldest first, then the record folded in with
/// `aggregator`, as in Kafka Streams.
pub(crate) fn aggregate_fold<K, V, A: 'static>(
    init: impl Fn() -> A + Send + Sync + 'static,
    aggregator: impl Fn(&K, V, A) -> A + Send + Sync + 'static,
    merger: impl Fn(&K, A, A) -> A + Send + Sync + 'static,
) -> SessionFold<K, V, A> {
    Arc::new(move |k, sessions: Vec<A>, v| {
        let acc = sessions.into_iter().fold(init(), |acc, s| merger(k, acc, s));
        aggregator(k, v, acc)
    })
}

impl<K: Data, V: Data> SessionWindowedKStream<K, V> {
    /// When the aggregation that follows forwards its sessions: on every
    /// update (the default: merged-away sessions as tombstones, then the
    /// merged one) or once per session when it closes, i.e. when stream
    /// time passes its end + gap + grace (see
    /// [`EmitStrategy::on_window_close`]). Only final sessions are then
    /// forwarded, never the tombstones of merges.
    pub fn emit_strategy(self, emit: EmitStrategy) -> Self {
        SessionWindowedKStream { emit, ..self }
    }

    /// The number of records per key and session.
    pub fn count(self, materialized: Materialized) -> KTable<Windowed<K>, u64, WindowStored> {
        self.aggregate_with(
            "KSTREAM-AGGREGATE",
            materialized,
            Serdes::u64(),
            Arc::new(|_, sessions: Vec<u64>, _| sessions.iter().sum::<u64>() + 1),
        )
    }

    /// Combine the values of a key within each session. When a record
    /// merges sessions, their aggregates are combined with the same
    /// `reducer`, oldest first.
    pub fn reduce(
        self,
        reducer: impl Fn(V, V) -> V + Send + Sync + 'static,
        materialized: Materialized,
    ) -> KTable<Windowed<K>, V, WindowStored> {
        let serde = self.grouped.value_serde.clone();
        self.aggregate_with(
            "KSTREAM-REDUCE",
            materialized,
            serde,
            Arc::new(move |_, sessions: Vec<V>, v| {
                let merged = sessions.into_iter().reduce(&reducer);
                match merged {
                    Some(acc) => reducer(acc, v),
                    None => v,
                }
            }),
        )
    }

    /// Fold the values of a key within each session, starting from
    /// `init()`. When a record bridges sessions, their aggregates are
    /// combined with `merger(key, acc, session)` (starting from `init()`,
    /// oldest session first) before the record is folded in, as in Kafka
    /// Streams.
    pub fn aggregate<A: Data>(
        self,
        init: impl Fn() -> A + Send + Sync + 'static,
        aggregator: impl Fn(&K, V, A) -> A + Send + Sync + 'static,
        merger: impl Fn(&K, A, A) -> A + Send + Sync + 'static,
        aggregate_serde: Serde<A>,
        materialized: Materialized,
    ) -> KTable<Windowed<K>, A, WindowStored> {
        self.aggregate_with(
            "KSTREAM-AGGREGATE",
            materialized,
            aggregate_serde,
            aggregate_fold(init, aggregator, merger),
        )
    }

    fn aggregate_with<A: Data>(
        self,
        kind: &str,
        materialized: Materialized,
        aggregate_serde: Serde<A>,
        fold: SessionFold<K, V, A>,
    ) -> KTable<Windowed<K>, A, WindowStored> {
        self.grouped
            .windowed_aggregate(kind, self.windows, self.emit, materialized, aggregate_serde, fold)
    }
}

impl<K: Data, A: Data> WindowedAgg<K, A> for SessionWindows {
    type Core = SessionAggCore<K, A>;
    const QUERYABLE: bool = false;

    fn min_retention_ms(&self) -> i64 {
        self.gap_ms.saturating_add(self.grace_ms)
    }

    /// A session [start, end] can be extended by a record at up to
    /// end + gap (inclusive), which is accepted while its own end + grace
    /// is not behind stream time: the session is final only once stream
    /// time > end + gap + grace. Suppression emits a window when
    /// end + grace_ms <= stream time, hence grace_ms = gap + grace + 1
    /// (the shift from an inclusive end to an exclusive one; with exactly
    /// gap + grace, an in-order record at end + gap would find its old
    /// session already emitted).
    fn table_grace_ms(&self) -> i64 {
        self.gap_ms.saturating_add(self.grace_ms).saturating_add(1)
    }

    fn make_core(
        setup: &WindowAggSetup<Self, K, A>,
        emit: Option<FinalEmitter>,
        ictx: &mut InitContext<'_>,
    ) -> Result<SessionAggCore<K, A>, TopologyError> {
        Ok(SessionAggCore {
            store: ictx.window_store(&setup.store)?,
            name: Arc::from(setup.store.as_str()),
            windows: setup.windows,
            close_after: WindowedAgg::<K, A>::table_grace_ms(&setup.windows),
            retention_ms: setup.retention_ms,
            last_purge: i64::MIN,
            max_span: None,
            key_serde: setup.key_serde.clone(),
            agg_serde: setup.agg_serde.clone(),
            emit,
            removed: Vec::new(),
            children: setup.out.instantiate(ictx)?,
            kbuf: Vec::new(),
            vbuf: Vec::new(),
        })
    }
}

/// Split a stored session value into (end, aggregate bytes).
fn split_session_value<'a>(store: &str, bytes: &'a [u8]) -> Result<(i64, &'a [u8]), StoreError> {
    if bytes.len() < 8 {
        return Err(StoreError::new(
            store,
            format!("session value needs at least 8 bytes, got {}", bytes.len()),
        ));
    }
    let (end, agg) = bytes.split_at(8);
    Ok((decode_window_start(end.try_into().expect("8 bytes")), agg))
}

pub(crate) struct SessionAggCore<K, A> {
    store: WindowStoreRef,
    name: Arc<str>,
    windows: SessionWindows,
    /// gap + grace + 1: a session is closed once end + this <= stream time.
    close_after: i64,
    retention_ms: i64,
    last_purge: i64,
    /// The longest `end - start` of any session this task has stored: the
    /// store is keyed by start, so finding the sessions that may contain a
    /// timestamp must look back this far. Loaded by one scan on first use
    /// (so that a restored store is seen) and only grows afterwards.
    max_span: Option<i64>,
    key_serde: Serde<K>,
    agg_serde: Serde<A>,
    /// Set for [`EmitStrategy::on_window_close`]: only closed sessions are
    /// forwarded, once.
    emit: Option<FinalEmitter>,
    /// Windows removed by merges since the last flush, to be forwarded as
    /// tombstones. The store's own tombstones cannot be used for this: they
    /// do not carry the old end, and retention purges produce tombstones
    /// too, which must not reach downstream (those sessions closed long ago).
    removed: Vec<Windowed<K>>,
    children: Children<Windowed<K>, Option<A>>,
    kbuf: Vec<u8>,
    vbuf: Vec<u8>,
}

impl<K: Data, A: Data> SessionAggCore<K, A> {
    fn load_max_span(&mut self) -> Result<i64, StoreError> {
        if let Some(s) = self.max_span {
            return Ok(s);
        }
        let mut span = 0i64;
        for (_, start, value) in self.store.borrow_mut().fetch_all(i64::MIN, i64::MAX)? {
            let (end, _) = split_session_value(&self.name, &value)?;
            span = span.max(end.saturating_sub(start));
        }
        self.max_span = Some(span);
        Ok(span)
    }

    /// Emit-on-close: forward every session that closed since the last
    /// emission (end + gap + grace < stream time, which is when no record
    /// can reach it any more and when `suppress` would emit it). The store
    /// is keyed by start, so the scan looks back by the longest session
    /// span and keeps the sessions whose *end* is in the due range. This
    /// runs before the purge of the same flush, which deletes exactly such
    /// closed sessions.
    fn emit_closed(&mut self, ctx: &mut ProcessorContext) {
        let Some(emitter) = self.emit.as_mut() else { return };
        let Some((last, close)) = emitter.due(ctx, self.close_after) else {
            return;
        };
        let span = match self.load_max_span() {
            Ok(s) => s,
            Err(e) => return ctx.fail(e),
        };
        let from = if last == i64::MIN {
            i64::MIN
        } else {
            last.saturating_add(1).saturating_sub(span)
        };
        let entries = match self.store.borrow_mut().fetch_all(from, close) {
            Ok(e) => e,
            Err(e) => return ctx.fail(e),
        };
        let mut due = Vec::new();
        for (kb, start, vb) in entries {
            let end = match split_session_value(&self.name, &vb) {
                Ok((end, _)) => end,
                Err(e) => return ctx.fail(e),
            };
            if end > close || (last != i64::MIN && end <= last) {
                continue;
            }
            due.push(DueWindow {
                start,
                end,
                key: kb,
                value: vb,
            });
        }
        let decoded = forward_due(ctx, &mut self.children, &self.key_serde, &self.name, due, |v| {
            split_session_value(&self.name, v).and_then(|(_, agg)| decode_stored(&self.agg_serde, &self.name, agg))
        });
        if let Err(e) = decoded {
            return ctx.fail(e);
        }
        if let Err(e) = self.emit.as_mut().expect("emitting").set_last_close(close) {
            ctx.fail(e);
        }
    }

    /// Delete sessions that ended more than the retention before stream
    /// time, at most once per inactivity gap of stream-time progress. The
    /// scan covers sessions that *start* before the cut-off and deletes
    /// those that also *end* before it (a long-running session with an old
    /// start stays).
    fn maybe_purge(&mut self, ctx: &mut ProcessorContext) {
        let st = ctx.stream_time;
        if st == i64::MIN {
            return;
        }
        let before = st.saturating_sub(self.retention_ms);
        if self.last_purge != i64::MIN && before < self.last_purge.saturating_add(self.windows.gap_ms) {
            return;
        }
        self.last_purge = before;
        let mut store = self.store.borrow_mut();
        let old = match store.fetch_all(i64::MIN, before.saturating_sub(1)) {
            Ok(o) => o,
            Err(e) => return ctx.fail(e),
        };
        for (key, start, value) in old {
            let end = match split_session_value(&self.name, &value) {
                Ok((end, _)) => end,
                Err(e) => return ctx.fail(e),
            };
            if end < before {
                if let Err(e) = store.delete(&key, start) {
                    return ctx.fail(e);
                }
            }
        }
    }
}

impl<K: Data, V, A: Data> Aggregates<K, V, SessionFold<K, V, A>> for SessionAggCore<K, A> {
    fn aggregate(&mut self, ctx: &mut ProcessorContext, key: K, value: V, fold: &SessionFold<K, V, A>) {
        self.kbuf.clear();
        if let Err(e) = self.key_serde.serialize(&key, &mut self.kbuf) {
            return ctx.dead_letter(format!("key serialization failed: {e}"));
        }
        let ts = ctx.timestamp;
        let gap = self.windows.gap_ms;
        let span = match self.load_max_span() {
            Ok(s) => s,
            Err(e) => return ctx.fail(e),
        };
        // Sessions to merge: end + gap >= ts and start - gap <= ts. Sessions
        // of a key never overlap, so they are few; the look-back by the
        // longest span finds a long session whose start is far behind.
        let from = ts.saturating_sub(gap).saturating_sub(span);
        let candidates = match self.store.borrow_mut().fetch(&self.kbuf, from, ts.saturating_add(gap)) {
            Ok(c) => c,
            Err(e) => return ctx.fail(e),
        };
        let (mut start, mut end) = (ts, ts);
        let mut merged: Vec<(i64, i64, A)> = Vec::new();
        for (s, bytes) in candidates {
            let (e, agg) = match split_session_value(&self.name, &bytes) {
                Ok(v) => v,
                Err(err) => return ctx.fail(err),
            };
            // Not within the gap of this record; or closed (end + gap +
            // grace behind stream time): a closed session is final (a
            // suppression may have emitted it), so it is never merged, even
            // by a record that bridges it to a newer, open session. Whether
            // the purge already deleted it makes no difference.
            if e.saturating_add(gap) < ts
                || e.saturating_add(gap).saturating_add(self.windows.grace_ms) < ctx.stream_time
            {
                continue;
            }
            let agg = match decode_stored(&self.agg_serde, &self.name, agg) {
                Ok(a) => a,
                Err(err) => return ctx.fail(err),
            };
            start = start.min(s);
            end = end.max(e);
            merged.push((s, e, agg));
        }
        if end.saturating_add(self.windows.grace_ms) < ctx.stream_time {
            ctx.counters.late_records_dropped += 1;
            return;
        }
        let windows: Vec<(i64, i64)> = merged.iter().map(|(s, e, _)| (*s, *e)).collect();
        let aggs = merged.into_iter().map(|(_, _, a)| a).collect();
        let new = fold(&key, aggs, value);
        self.vbuf.clear();
        self.vbuf.extend_from_slice(&encode_window_start(end));
        if let Err(e) = self.agg_serde.serialize(&new, &mut self.vbuf) {
            return ctx.dead_letter(format!("aggregate serialization failed: {e}"));
        }
        {
            let mut store = self.store.borrow_mut();
            for (s, e) in windows {
                if (s, e) == (start, end) {
                    continue; // the record fell inside this session
                }
                // The session at the merged start is overwritten below;
                // the others go.
                if s != start {
                    if let Err(err) = store.delete(&self.kbuf, s) {
                        return ctx.fail(err);
                    }
                }
                self.removed.push(Windowed {
                    key: key.clone(),
                    window: Window { start: s, end: e },
                });
            }
            if let Err(e) = store.put(&self.kbuf, start, &self.vbuf) {
                return ctx.fail(e);
            }
            if store.wants_flush() {
                ctx.request_commit();
            }
        }
        self.max_span = Some(span.max(end.saturating_sub(start)));
    }
}

impl<K: Data, A: Data> AggCore for SessionAggCore<K, A> {
    fn flush(&mut self, ctx: &mut ProcessorContext) {
        let records = match self.store.borrow_mut().flush() {
            Ok(r) => r,
            Err(e) => return ctx.fail(e),
        };
        if self.emit.is_some() {
            // Emit-on-close: updates and merges stay inside; closed
            // sessions never change again, so they are emitted as final.
            self.removed.clear();
            ctx.changelog
                .extend(records.into_iter().map(|r| (self.name.clone(), r)));
            self.emit_closed(ctx);
            if let Some(e) = self.emit.as_mut() {
                e.flush(ctx);
            }
            self.maybe_purge(ctx);
            self.children.flush(ctx);
            return;
        }
        let ts = ctx.timestamp;
        // Removed windows first: downstream sees the old session go before
        // the merged one arrives (Kafka Streams' order).
        for wk in std::mem::take(&mut self.removed) {
            ctx.timestamp = wk.window.end;
            self.children.forward(ctx, wk, None);
        }
        for rec in records {
            let decoded = decode_window_key(&self.key_serde, &self.name, &rec.key).and_then(|(start, key)| {
                let value = match rec.value.as_deref() {
                    Some(b) => {
                        let (end, agg) = split_session_value(&self.name, b)?;
                        Some((end, decode_stored(&self.agg_serde, &self.name, agg)?))
                    }
                    None => None,
                };
                Ok((start, key, value))
            });
            let (start, key, value) = match decoded {
                Ok(d) => d,
                Err(e) => {
                    ctx.fail(e);
                    break;
                }
            };
            ctx.changelog.push((self.name.clone(), rec));
            // Store tombstones are merges (forwarded above, with their
            // window) or retention purges (closed long ago: not forwarded).
            if let Some((end, agg)) = value {
                ctx.timestamp = end;
                let wk = Windowed {
                    key,
                    window: Window { start, end },
                };
                self.children.forward(ctx, wk, Some(agg));
            }
        }
        ctx.timestamp = ts;
        // Purge only after the cached updates went downstream (see the
        // time-window aggregation): otherwise a session could be deleted
        // before its final value was ever forwarded.
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
