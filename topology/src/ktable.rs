//! KTable: the changelog view of a table (latest value per key), and the
//! operators on it, including suppression of windowed tables. Table–table
//! joins are in `table_join.rs`, re-grouping (`group_by`) in
//! `grouped_table.rs`.
//!
//! Inside a task a table flows as `(K, Option<V>)`: `None` is a deletion
//! (tombstone). Stateful tables forward their changes when their store is
//! flushed (at commit, or after every record in the test driver), which is
//! Kafka Streams' record-cache behaviour: repeated updates of a hot key
//! between commits leave as one record.

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::ops::Bound;
use std::sync::Arc;

use crate::builder::{Graph, StreamsBuilder};
use crate::context::ProcessorContext;
use crate::error::TopologyError;
use crate::grouped::decode_stored;
use crate::kstream::KStream;
use crate::materialized::{Materialized, Suppressed};
use crate::node::{ChildSlot, Children, Node};
use crate::serde::Serde;
use crate::store::{
    encode_window_start, KvStoreRef, StoreError, StoreKind, StoreSpec, VersionedPut, VersionedStoreRef,
};
use crate::topology::{NodeKind, SourceEntry, SourceNode};
use crate::windows::Windowed;
use crate::Data;

/// Whether a [`KTable`] has a store, as a type: the third parameter of
/// `KTable<K, V, S>`. Sealed: the markers are [`Stored`], [`Derived`] and
/// [`WindowStored`].
pub trait TableState: sealed::Sealed + 'static {}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::Stored {}
    impl Sealed for super::Derived {}
    impl Sealed for super::WindowStored {}
}

/// A table with a queryable key-value store: a source table
/// ([`StreamsBuilder::table`]), the result of a non-windowed aggregation, or
/// a join materialized with `TableJoined::materialized` /
/// `FkJoined::materialized`. The default state of [`KTable`]; only such
/// tables can be joined (see [`Joinable`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {}

/// A table without a store of its own: the result of
/// [`map_values`](KTable::map_values), [`filter`](KTable::filter),
/// [`suppress`](KTable::suppress) or an unmaterialized join. It can be
/// written, streamed, grouped and derived from, but not joined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Derived {}

/// A windowed table straight from a windowed aggregation (time, sliding,
/// session or cogrouped windows): its store is a window store, which a join
/// cannot look keys up in, and it is the only kind of table that can be
/// [`suppress`](KTable::suppress)ed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowStored {}

impl TableState for Stored {}
impl TableState for Derived {}
impl TableState for WindowStored {}

/// The table states a join can look keys up in: [`Stored`] only.
#[diagnostic::on_unimplemented(
    message = "this table has no key-value store to join against (it is a `KTable<_, _, {Self}>`)",
    label = "this table cannot be joined",
    note = "a join looks keys up in the table's store: join a source table (`StreamsBuilder::table`), a \
            non-windowed aggregation result or a join materialized with `TableJoined::materialized` / \
            `FkJoined::materialized`",
    note = "`map_values`, `filter`, `suppress` and unmaterialized joins give a table with no store \
            (`Derived`); a windowed aggregation gives a window store (`WindowStored`): join first, then derive"
)]
pub trait Joinable: TableState {}
impl Joinable for Stored {}

/// A table: the latest value per key. `S` says whether it has a store
/// ([`Stored`], the default), has none ([`Derived`]) or comes straight
/// from a windowed aggregation ([`WindowStored`]); joins need [`Stored`]
/// tables, `suppress` a [`WindowStored`] one, and both are checked by the
/// compiler.
pub struct KTable<K, V, S: TableState = Stored> {
    pub(crate) graph: Graph,
    pub(crate) node: usize,
    pub(crate) slot: Arc<ChildSlot<K, Option<V>>>,
    /// The queryable store holding this table, if it is materialized.
    pub(crate) store: Option<String>,
    pub(crate) key_serde: Serde<K>,
    pub(crate) value_serde: Option<Serde<V>>,
    /// For windowed tables: the grace period after which windows close.
    pub(crate) grace_ms: Option<i64>,
    pub(crate) _state: PhantomData<S>,
}

impl<K, V, S: TableState> Clone for KTable<K, V, S> {
    fn clone(&self) -> Self {
        KTable {
            graph: self.graph.clone(),
            node: self.node,
            slot: self.slot.clone(),
            store: self.store.clone(),
            key_serde: self.key_serde.clone(),
            value_serde: self.value_serde.clone(),
            grace_ms: self.grace_ms,
            _state: PhantomData,
        }
    }
}

impl<K: Data, V: Data, S: TableState> KTable<K, V, S> {
    pub(crate) fn new(
        graph: Graph,
        node: usize,
        slot: Arc<ChildSlot<K, Option<V>>>,
        store: Option<String>,
        key_serde: Serde<K>,
        value_serde: Option<Serde<V>>,
        grace_ms: Option<i64>,
    ) -> Self {
        KTable {
            graph,
            node,
            slot,
            store,
            key_serde,
            value_serde,
            grace_ms,
            _state: PhantomData,
        }
    }

    /// The name of the store that holds this table, for interactive
    /// queries; `None` for a table derived without materialization.
    pub fn store_name(&self) -> Option<&str> {
        self.store.as_deref()
    }

    /// The stream of this table's updates. Deletions (tombstones) are not
    /// part of the stream.
    pub fn to_stream(&self) -> KStream<K, V> {
        let as_stream = KStream {
            graph: self.graph.clone(),
            node: self.node,
            slot: self.slot.clone(),
            repartition_required: false,
            _marker: PhantomData,
        };
        as_stream.add_fn("KTABLE-TOSTREAM", false, |ctx, k, v: Option<V>, out| {
            if let Some(v) = v {
                out.forward(ctx, k, v)
            }
        })
    }

    /// The stream of this table's changes including deletions (`None`), as
    /// Kafka Streams' `toStream()` with its null values.
    pub fn to_change_stream(&self) -> KStream<K, Option<V>> {
        self.as_change_stream()
    }

    /// Write this table's changes to `topic`: an update as a record with
    /// its value, a deletion as a tombstone (a record with no value), as
    /// Kafka Streams' `table.toStream().to(topic)` does. Downstream
    /// consumers (a table reading `topic`, a compacted topic) then see the
    /// deletions, which [`KTable::to_stream`] drops.
    pub fn to(&self, topic: &str, key_serde: Serde<K>, value_serde: Serde<V>) {
        let mut g = self.graph.borrow_mut();
        let topic = g.topic(topic, false);
        g.add_node("KTABLE-SINK", NodeKind::Sink { topic }, vec![self.node]);
        self.slot.push(Arc::new(move |_ictx| {
            Ok(Box::new(TableSinkNode {
                topic,
                key_serde: key_serde.clone(),
                value_serde: value_serde.clone(),
                kbuf: Vec::new(),
            }) as Box<dyn Node<K, Option<V>>>)
        }));
    }

    fn as_change_stream(&self) -> KStream<K, Option<V>> {
        KStream {
            graph: self.graph.clone(),
            node: self.node,
            slot: self.slot.clone(),
            repartition_required: false,
            _marker: PhantomData,
        }
    }

    /// A table of `f(key, value)`; not materialized.
    pub fn map_values<VO: Data>(&self, f: impl Fn(&K, V) -> VO + Send + Sync + 'static) -> KTable<K, VO, Derived> {
        let s = self
            .as_change_stream()
            .add_fn("KTABLE-MAPVALUES", false, move |ctx, k, v: Option<V>, out| {
                let v2 = v.map(|v| f(&k, v));
                out.forward(ctx, k, v2)
            });
        KTable::new(
            s.graph,
            s.node,
            s.slot,
            None,
            self.key_serde.clone(),
            None,
            self.grace_ms,
        )
    }

    /// A table of the entries that satisfy `predicate`; an update that does
    /// not satisfy it deletes the key downstream. Not materialized.
    pub fn filter(&self, predicate: impl Fn(&K, &V) -> bool + Send + Sync + 'static) -> KTable<K, V, Derived> {
        let s = self
            .as_change_stream()
            .add_fn("KTABLE-FILTER", false, move |ctx, k, v: Option<V>, out| {
                let v2 = v.filter(|v| predicate(&k, v));
                out.forward(ctx, k, v2)
            });
        KTable::new(
            s.graph,
            s.node,
            s.slot,
            None,
            self.key_serde.clone(),
            self.value_serde.clone(),
            self.grace_ms,
        )
    }
}

/// The table states [`KTable::suppress`] accepts: [`WindowStored`] only.
#[diagnostic::on_unimplemented(
    message = "only a table straight from a windowed aggregation can be suppressed (this is a `KTable<_, _, {Self}>`)",
    label = "this table cannot be suppressed",
    note = "suppress needs the windows' grace period, which only the aggregation's own table carries: call \
            `suppress` right after `count` / `aggregate` / `reduce` of a windowed stream, then \
            `map_values` / `filter` its result"
)]
pub trait Suppressible: TableState {}
impl Suppressible for WindowStored {}

impl<K: Data, V: Data, S: TableState> KTable<Windowed<K>, V, S> {
    /// Hold each window's updates back and emit only its final result, once,
    /// when stream time passes the window end plus grace. The buffer is a
    /// logged store, so nothing buffered is lost on a crash.
    ///
    /// Only a table straight from a windowed aggregation can be suppressed
    /// (it knows its windows' grace period): suppress first, then
    /// `map_values` / `filter` the result.
    pub fn suppress(&self, _suppressed: Suppressed) -> KTable<Windowed<K>, V, Derived>
    where
        S: Suppressible,
    {
        let (id, store) = {
            let mut g = self.graph.borrow_mut();
            let store = format!("KTABLE-SUPPRESS-STATE-STORE-{:010}", g.next_index());
            let id = g.add_node("KTABLE-SUPPRESS", NodeKind::Processor, vec![self.node]);
            g.add_store(StoreSpec {
                name: store.clone(),
                kind: StoreKind::KeyValue,
                logged: true,
            });
            g.connect_store(id, &store);
            // `S: Suppressible`: a table straight from a windowed
            // aggregation, which has its value serde and grace period.
            (id, store)
        };
        let out = ChildSlot::<Windowed<K>, Option<V>>::new();
        let grace = self.grace_ms.unwrap_or(0);
        let key_serde = self.key_serde.clone();
        let value_serde = self.value_serde.clone();
        let (out2, store2) = (out.clone(), store.clone());
        self.slot.push(Arc::new(move |ictx| {
            let value_serde = value_serde
                .clone()
                .ok_or_else(|| TopologyError::UnknownStore(store2.clone()))?;
            Ok(Box::new(SuppressNode {
                buffer: ictx.key_value_store(&store2)?,
                name: Arc::from(store2.as_str()),
                grace_ms: grace,
                key_serde: key_serde.clone(),
                value_serde,
                children: out2.instantiate(ictx)?,
                index: None,
                kbuf: Vec::new(),
                vbuf: Vec::new(),
            }) as Box<dyn Node<Windowed<K>, Option<V>>>)
        }));
        KTable::new(
            self.graph.clone(),
            id,
            out,
            None,
            self.key_serde.clone(),
            self.value_serde.clone(),
            self.grace_ms,
        )
    }
}

/// Writes a table's changes to a topic; deletions as tombstones.
struct TableSinkNode<K, V> {
    topic: u32,
    key_serde: Serde<K>,
    value_serde: Serde<V>,
    kbuf: Vec<u8>,
}

impl<K: 'static, V: 'static> Node<K, Option<V>> for TableSinkNode<K, V> {
    fn process(&mut self, ctx: &mut ProcessorContext, key: K, value: Option<V>) {
        let ts = ctx.timestamp;
        let written = match value {
            Some(value) => {
                let origin = ctx.origin();
                let (ks, vs) = (&self.key_serde, &self.value_serde);
                ctx.collector.push_with(
                    self.topic,
                    ts,
                    origin,
                    |out| ks.serialize(&key, out),
                    |out| vs.serialize(&value, out),
                )
            }
            None => {
                self.kbuf.clear();
                self.key_serde
                    .serialize(&key, &mut self.kbuf)
                    .map(|()| ctx.collector.push_tombstone(self.topic, ts, &self.kbuf))
            }
        };
        if let Err(e) = written {
            ctx.dead_letter(format!("serialization for sink failed: {e}"));
        }
    }
    fn flush(&mut self, _ctx: &mut ProcessorContext) {}
    fn punctuate(&mut self, _ctx: &mut ProcessorContext) {}
    fn close(&mut self, _ctx: &mut ProcessorContext) {}
}

/// Buffers windowed updates keyed by (window end, windowed key) and emits
/// them when their window closes.
struct SuppressNode<K, V> {
    buffer: KvStoreRef,
    name: Arc<str>,
    grace_ms: i64,
    key_serde: Serde<Windowed<K>>,
    value_serde: Serde<V>,
    children: Children<Windowed<K>, Option<V>>,
    /// The buffer's keys, in order (loaded from the store on first use so
    /// that a restored buffer is seen): finding the due windows must not
    /// scan the store on every record.
    index: Option<BTreeMap<Vec<u8>, i64>>,
    kbuf: Vec<u8>,
    vbuf: Vec<u8>,
}

impl<K: Data, V: Data> SuppressNode<K, V> {
    fn load_index(&mut self, ctx: &mut ProcessorContext) -> bool {
        if self.index.is_some() {
            return true;
        }
        match self.buffer.borrow_mut().range(Bound::Unbounded, Bound::Unbounded) {
            Ok(entries) => {
                let mut idx = BTreeMap::new();
                for (k, _) in entries {
                    if k.len() >= 8 {
                        let end = crate::store::decode_window_start(k[..8].try_into().expect("8 bytes"));
                        idx.insert(k, end);
                    }
                }
                self.index = Some(idx);
                true
            }
            Err(e) => {
                ctx.fail(e);
                false
            }
        }
    }

    /// Emit and remove every buffered window with end + grace <= stream time.
    fn emit_due(&mut self, ctx: &mut ProcessorContext) {
        if !self.load_index(ctx) || ctx.stream_time == i64::MIN {
            return;
        }
        let close = ctx.stream_time.saturating_sub(self.grace_ms);
        let index = self.index.as_mut().expect("loaded");
        let due: Vec<Vec<u8>> = index
            .range(..encode_window_start(close.saturating_add(1)).to_vec())
            .map(|(k, _)| k.clone())
            .collect();
        if due.is_empty() {
            return;
        }
        let ts = ctx.timestamp;
        for k in due {
            index.remove(&k);
            let value = {
                let mut buf = self.buffer.borrow_mut();
                let v = match buf.get_into(&k, &mut self.vbuf) {
                    Ok(present) => present,
                    Err(e) => return ctx.fail(e),
                };
                if let Err(e) = buf.delete(&k) {
                    return ctx.fail(e);
                }
                v
            };
            if !value {
                continue;
            }
            let wk = match self.key_serde.deserialize(&k[8..]) {
                Ok(wk) => wk,
                Err(e) => {
                    return ctx.fail(StoreError::new(
                        &*self.name,
                        format!("buffered key does not decode: {e}"),
                    ))
                }
            };
            let v = match decode_stored(&self.value_serde, &self.name, &self.vbuf) {
                Ok(v) => v,
                Err(e) => return ctx.fail(e),
            };
            ctx.timestamp = wk.window.end;
            self.children.forward(ctx, wk, Some(v));
        }
        ctx.timestamp = ts;
    }
}

impl<K: Data, V: Data> Node<Windowed<K>, Option<V>> for SuppressNode<K, V> {
    fn process(&mut self, ctx: &mut ProcessorContext, key: Windowed<K>, value: Option<V>) {
        if !self.load_index(ctx) {
            return;
        }
        let closed = key.window.end.saturating_add(self.grace_ms) <= ctx.stream_time;
        self.kbuf.clear();
        self.kbuf.extend_from_slice(&encode_window_start(key.window.end));
        if let Err(e) = self.key_serde.serialize(&key, &mut self.kbuf) {
            return ctx.dead_letter(format!("key serialization failed: {e}"));
        }
        let mut buf = self.buffer.borrow_mut();
        let index = self.index.as_mut().expect("loaded");
        match value {
            Some(v) => {
                self.vbuf.clear();
                if let Err(e) = self.value_serde.serialize(&v, &mut self.vbuf) {
                    return ctx.dead_letter(format!("value serialization failed: {e}"));
                }
                if let Err(e) = buf.put(&self.kbuf, &self.vbuf) {
                    return ctx.fail(e);
                }
                index.insert(self.kbuf.clone(), key.window.end);
            }
            None => {
                // A deleted window (a merged-away session) is never emitted;
                // a tombstone for a window that closed already is a purge.
                if closed {
                    return;
                }
                if let Err(e) = buf.delete(&self.kbuf) {
                    return ctx.fail(e);
                }
                index.remove(&self.kbuf);
            }
        }
        if buf.wants_flush() {
            ctx.request_commit();
        }
    }

    /// Windows are emitted here only, never in `process` or `punctuate`:
    /// the aggregation upstream caches its updates and forwards them at
    /// commit, in key order, so while a commit's updates arrive (or before
    /// it, between records) the stream time may already have closed a window
    /// whose last update is still on its way. Emitting then would send a
    /// partial count as final and the rest as a second, late result. At
    /// flush every cached update has been forwarded (the parent flushes
    /// before its children), so what is due now is final.
    fn flush(&mut self, ctx: &mut ProcessorContext) {
        self.emit_due(ctx);
        ctx.log_flushed(&self.name, self.buffer.borrow_mut().flush());
        self.children.flush(ctx);
    }

    fn punctuate(&mut self, ctx: &mut ProcessorContext) {
        self.children.punctuate(ctx);
    }

    fn close(&mut self, ctx: &mut ProcessorContext) {
        self.children.close(ctx)
    }
}

/// `StreamsBuilder::table`: a source whose records upsert a store.
pub(crate) fn source_table<K: Data, V: Data>(
    b: &mut StreamsBuilder,
    topic: &str,
    key_serde: Serde<K>,
    value_serde: Serde<V>,
    materialized: Materialized,
) -> KTable<K, V> {
    let (id, store) = {
        let mut g = b.graph.borrow_mut();
        let t = g.topic(topic, false);
        let store = g.table_store_name(&materialized, "KTABLE-SOURCE");
        let id = g.add_node("KTABLE-SOURCE", NodeKind::Source { topic: t }, vec![]);
        let versioned = materialized.history_retention_ms;
        g.add_store(StoreSpec {
            name: store.clone(),
            kind: match versioned {
                Some(history_retention_ms) => StoreKind::Versioned { history_retention_ms },
                None => StoreKind::KeyValue,
            },
            logged: materialized.logged,
        });
        g.connect_store(id, &store);
        g.record_store_format(&store, &key_serde, &value_serde);
        let slot = ChildSlot::<K, Option<V>>::new();
        let (slot2, store2, ks, vs) = (slot.clone(), store.clone(), key_serde.clone(), value_serde.clone());
        g.sources.push(SourceEntry {
            topic: t,
            factory: Arc::new(move |ictx| {
                if versioned.is_some() {
                    return Ok(Box::new(VersionedTableSource {
                        store: ictx.versioned_store(&store2)?,
                        key_serde: ks.clone(),
                        value_serde: vs.clone(),
                        children: slot2.instantiate(ictx)?,
                    }) as Box<dyn SourceNode>);
                }
                Ok(Box::new(TableSource {
                    store: ictx.key_value_store(&store2)?,
                    name: Arc::from(store2.as_str()),
                    key_serde: ks.clone(),
                    value_serde: vs.clone(),
                    children: slot2.instantiate(ictx)?,
                }) as Box<dyn SourceNode>)
            }),
        });
        ((id, slot), store)
    };
    KTable::new(
        b.graph.clone(),
        id.0,
        id.1,
        Some(store),
        key_serde,
        Some(value_serde),
        None,
    )
}

/// A table record's key (bytes and decoded) and value (`None`: a
/// tombstone), or why it goes to the dead-letter topic: a table record
/// needs a key, and nothing that does not decode reaches the store. `kind`
/// names the table in the reason ("table", "global table").
pub(crate) fn decode_table_record<'a, K: Data, V: Data>(
    kind: &str,
    key_serde: &Serde<K>,
    value_serde: &Serde<V>,
    key: Option<&'a [u8]>,
    value: Option<&[u8]>,
) -> Result<(&'a [u8], K, Option<V>), String> {
    let key_bytes = key.ok_or_else(|| format!("a {kind} record needs a key"))?;
    let key = key_serde
        .deserialize(key_bytes)
        .map_err(|e| format!("key deserialization failed ({}): {e}", key_serde.name()))?;
    let value = value
        .map(|v| value_serde.deserialize(v))
        .transpose()
        .map_err(|e| format!("value deserialization failed ({}): {e}", value_serde.name()))?;
    Ok((key_bytes, key, value))
}

struct TableSource<K, V> {
    store: KvStoreRef,
    name: Arc<str>,
    key_serde: Serde<K>,
    value_serde: Serde<V>,
    children: Children<K, Option<V>>,
}

impl<K: Data, V: Data> SourceNode for TableSource<K, V> {
    fn process_raw(&mut self, ctx: &mut ProcessorContext, key: Option<&[u8]>, value: Option<&[u8]>) {
        let ts = ctx.timestamp();
        ctx.observe_event_time(ts);
        let key = match decode_table_record("table", &self.key_serde, &self.value_serde, key, value) {
            Ok((key, _, _)) => key,
            Err(why) => return ctx.dead_letter(why),
        };
        let mut store = self.store.borrow_mut();
        let result = match value {
            Some(v) => store.put(key, v),
            None => store.delete(key),
        };
        if let Err(e) = result {
            return ctx.fail(e);
        }
        if store.wants_flush() {
            ctx.request_commit();
        }
    }

    fn flush(&mut self, ctx: &mut ProcessorContext) {
        let records = match self.store.borrow_mut().flush() {
            Ok(r) => r,
            Err(e) => return ctx.fail(e),
        };
        let ts = ctx.timestamp;
        ctx.timestamp = ctx.stream_time.max(ts);
        for rec in records {
            let key = match self.key_serde.deserialize(&rec.key) {
                Ok(k) => k,
                Err(e) => {
                    ctx.fail(StoreError::new(&*self.name, format!("stored key does not decode: {e}")));
                    break;
                }
            };
            let value = match rec
                .value
                .as_deref()
                .map(|b| decode_stored(&self.value_serde, &self.name, b))
                .transpose()
            {
                Ok(v) => v,
                Err(e) => {
                    ctx.fail(e);
                    break;
                }
            };
            ctx.changelog.push((self.name.clone(), rec));
            self.children.forward(ctx, key, value);
        }
        ctx.timestamp = ts;
        self.children.flush(ctx);
    }

    fn punctuate(&mut self, ctx: &mut ProcessorContext) {
        self.children.punctuate(ctx)
    }
    fn close(&mut self, ctx: &mut ProcessorContext) {
        self.children.close(ctx)
    }
}

/// The source of a versioned table ([`Materialized::versioned`]): every
/// record is put into the store as a version at its timestamp, and only
/// records that become the key's newest version change the table and are
/// forwarded, at once and with their own timestamp (versioned stores have
/// no record cache, as in Kafka Streams). An out-of-order record only
/// enriches the history that as-of joins read; one older than the history
/// retention is dropped and counted as late.
struct VersionedTableSource<K, V> {
    store: VersionedStoreRef,
    key_serde: Serde<K>,
    value_serde: Serde<V>,
    children: Children<K, Option<V>>,
}

impl<K: Data, V: Data> SourceNode for VersionedTableSource<K, V> {
    fn process_raw(&mut self, ctx: &mut ProcessorContext, key: Option<&[u8]>, value: Option<&[u8]>) {
        let ts = ctx.timestamp();
        ctx.observe_event_time(ts);
        let (key_bytes, key, decoded) =
            match decode_table_record("table", &self.key_serde, &self.value_serde, key, value) {
                Ok(r) => r,
                Err(why) => return ctx.dead_letter(why),
            };
        let outcome = self.store.borrow_mut().put_versioned(key_bytes, value, ts);
        match outcome {
            Ok(VersionedPut::Latest) => self.children.forward(ctx, key, decoded),
            Ok(VersionedPut::OutOfOrder) => {}
            Ok(VersionedPut::Expired) => ctx.counters.late_records_dropped += 1,
            Err(e) => return ctx.fail(e),
        }
        if self.store.borrow().wants_flush() {
            ctx.request_commit();
        }
    }

    /// The store's changelog records are collected by the task's own
    /// flush of every store; nothing is held back here.
    fn flush(&mut self, ctx: &mut ProcessorContext) {
        self.children.flush(ctx);
    }

    fn punctuate(&mut self, ctx: &mut ProcessorContext) {
        self.children.punctuate(ctx)
    }
    fn close(&mut self, ctx: &mut ProcessorContext) {
        self.children.close(ctx)
    }
}
