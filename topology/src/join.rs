//! Joins: stream–table (inner and left) and windowed stream–stream (inner).
//!
//! Both kinds need the two sides' records of a key in the same task, so
//! both require co-partitioned inputs: a stream whose key was changed
//! upstream must be [`KStream::repartition`]ed first (the DSL reports it at
//! `build()` rather than silently joining the wrong partitions).
//!
//! * Stream–table: each stream record looks its key up in the table's
//!   store. Table updates do not trigger output (the table is the "lookup"
//!   side), as in Kafka Streams.
//! * Stream–stream: each side's records are kept in a window store for the
//!   join window; a record joins the other side's records of its key whose
//!   timestamps fall in the window, whichever side arrives first.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use crate::builder::GraphBuilder;
use crate::context::ProcessorContext;
use crate::error::TopologyError;
use crate::grouped::decode_stored;
use crate::kstream::KStream;
use crate::ktable::KTable;
use crate::node::{ChildSlot, Children, Node};
use crate::serde::Serde;
use crate::store::{KvStoreRef, StoreError, StoreKind, StoreSpec, WindowStoreRef};
use crate::topology::NodeKind;
use crate::windows::JoinWindows;
use crate::Data;

/// The serdes of a stream–stream join: the key, and each side's values.
/// The join keeps both sides' records in window stores, so it must be able
/// to write them as bytes.
///
/// ```
/// # use weir_topology::{StreamJoined, Serdes};
/// let joined = StreamJoined::with(Serdes::string(), Serdes::string(), Serdes::u64())
///     .with_store_name("orders-payments");
/// ```
pub struct StreamJoined<K, V, V2> {
    pub(crate) key_serde: Serde<K>,
    pub(crate) this_value_serde: Serde<V>,
    pub(crate) other_value_serde: Serde<V2>,
    pub(crate) store_name: Option<String>,
}

impl<K, V, V2> Clone for StreamJoined<K, V, V2> {
    fn clone(&self) -> Self {
        StreamJoined {
            key_serde: self.key_serde.clone(),
            this_value_serde: self.this_value_serde.clone(),
            other_value_serde: self.other_value_serde.clone(),
            store_name: self.store_name.clone(),
        }
    }
}

impl<K, V, V2> StreamJoined<K, V, V2> {
    /// The key serde and the serdes of this stream's and the other
    /// stream's values.
    pub fn with(key_serde: Serde<K>, this_value_serde: Serde<V>, other_value_serde: Serde<V2>) -> Self {
        StreamJoined {
            key_serde,
            this_value_serde,
            other_value_serde,
            store_name: None,
        }
    }

    /// Name the join's stores `{name}-this-join-store` and
    /// `{name}-other-join-store` (and so their changelog topics) instead of
    /// deriving them from the operator's position, so that they stay the
    /// same when operators are added before the join.
    pub fn with_store_name(self, name: &str) -> Self {
        StreamJoined {
            store_name: Some(name.to_string()),
            ..self
        }
    }
}

/// Record a construction error for a join node (never panic on user input).
fn join_error(g: &mut GraphBuilder, node: usize, reason: String) {
    let name = g.nodes[node].name.clone();
    g.errors.push(TopologyError::InvalidOperation { node: name, reason });
}

const REPARTITION_FIRST: &str =
    "the stream's key was changed upstream: call repartition(..) before joining, so that both sides are \
     partitioned by the same key (co-partitioned)";

impl<K: Data, V: Data> KStream<K, V> {
    /// Inner stream–table join: each record of this stream whose key is in
    /// `table` leaves as `joiner(key, value, table_value)`; records whose key
    /// is absent are dropped. The table must be materialized (a source
    /// table or an aggregation result).
    pub fn join<VT: Data, VO: Data>(
        self,
        table: &KTable<K, VT>,
        joiner: impl Fn(&K, V, VT) -> VO + Send + Sync + 'static,
    ) -> KStream<K, VO> {
        self.table_join("KSTREAM-JOIN", table, move |k, v, vt: Option<VT>| {
            vt.map(|vt| joiner(k, v, vt))
        })
    }

    /// Left stream–table join: every record of this stream leaves as
    /// `joiner(key, value, table_value)`, with `None` when the table has no
    /// value for the key.
    pub fn left_join<VT: Data, VO: Data>(
        self,
        table: &KTable<K, VT>,
        joiner: impl Fn(&K, V, Option<VT>) -> VO + Send + Sync + 'static,
    ) -> KStream<K, VO> {
        self.table_join("KSTREAM-LEFTJOIN", table, move |k, v, vt| Some(joiner(k, v, vt)))
    }

    fn table_join<VT: Data, VO: Data>(
        self,
        kind: &str,
        table: &KTable<K, VT>,
        joiner: impl Fn(&K, V, Option<VT>) -> Option<VO> + Send + Sync + 'static,
    ) -> KStream<K, VO> {
        let id = {
            let mut g = self.graph.borrow_mut();
            let id = g.add_node(kind, NodeKind::Processor, vec![self.node]);
            if self.repartition_required {
                join_error(&mut g, id, REPARTITION_FIRST.to_string());
            }
            match (&table.store, &table.value_serde) {
                (Some(store), Some(_)) => {
                    let kind = g.stores.iter().find(|s| &s.name == store).map(|s| s.kind);
                    if let Some(StoreKind::Window { .. }) = kind {
                        join_error(
                            &mut g,
                            id,
                            format!(
                                "the table's store {store:?} is a window store: a stream can only join a \
                                 key-value table"
                            ),
                        );
                    }
                    // Reading the table's store puts the join and the table
                    // in one sub-topology, hence one task per partition.
                    g.connect_store(id, store);
                }
                _ => join_error(
                    &mut g,
                    id,
                    "the table is not materialized (it has no store to look keys up in): join a source table or \
                     an aggregation result, or materialize the table first"
                        .to_string(),
                ),
            }
            id
        };
        let out = ChildSlot::<K, VO>::new();
        if let (Some(store), Some(value_serde)) = (table.store.clone(), table.value_serde.clone()) {
            let key_serde = table.key_serde.clone();
            let joiner = Arc::new(joiner);
            let out2 = out.clone();
            self.attach(Arc::new(move |ictx| {
                Ok(Box::new(TableJoinNode {
                    store: ictx.key_value_store(&store)?,
                    name: Arc::from(store.as_str()),
                    key_serde: key_serde.clone(),
                    value_serde: value_serde.clone(),
                    joiner: joiner.clone(),
                    children: out2.instantiate(ictx)?,
                    kbuf: Vec::new(),
                    vbuf: Vec::new(),
                }) as Box<dyn Node<K, V>>)
            }));
        }
        self.derive(id, out, false)
    }

    /// Windowed inner stream–stream join: a record of this stream at `t`
    /// joins every record of `other` with the same key and a timestamp in
    /// `[t - before, t + after]` (and symmetrically for records of `other`),
    /// leaving as `joiner(key, this_value, other_value)` stamped with the
    /// later of the two timestamps. A record more than before + after +
    /// grace behind stream time is late: dropped and counted.
    pub fn join_stream<V2: Data, VO: Data>(
        self,
        other: KStream<K, V2>,
        joiner: impl Fn(&K, &V, &V2) -> VO + Send + Sync + 'static,
        windows: JoinWindows,
        serdes: StreamJoined<K, V, V2>,
    ) -> KStream<K, VO> {
        // Records older than before + after + grace behind stream time are
        // late. The stores keep records max(before, after) longer, so that a
        // record that is just in time still finds every partner in its
        // window (which reaches back that far).
        let late_after = windows
            .before_ms
            .saturating_add(windows.after_ms)
            .saturating_add(windows.grace_ms);
        let keep = late_after.saturating_add(windows.before_ms.max(windows.after_ms));
        let (merge, this_store, other_store) = {
            let mut g = self.graph.borrow_mut();
            let index = g.next_index();
            let (this_store, other_store) = match &serdes.store_name {
                Some(n) => (format!("{n}-this-join-store"), format!("{n}-other-join-store")),
                None => (
                    format!("KSTREAM-JOINTHIS-STORE-{index:010}"),
                    format!("KSTREAM-JOINOTHER-STORE-{index:010}"),
                ),
            };
            let this_side = g.add_node("KSTREAM-JOINTHIS", NodeKind::Processor, vec![self.node]);
            let other_side = g.add_node("KSTREAM-JOINOTHER", NodeKind::Processor, vec![other.node]);
            let merge = g.add_node("KSTREAM-MERGE", NodeKind::Processor, vec![this_side, other_side]);
            if self.repartition_required || other.repartition_required {
                join_error(&mut g, this_side, REPARTITION_FIRST.to_string());
            }
            for store in [&this_store, &other_store] {
                g.add_store(StoreSpec {
                    name: store.clone(),
                    kind: StoreKind::Window { retention_ms: keep },
                    logged: true,
                });
                // Each side writes its own store and reads the other's.
                g.connect_store(this_side, store);
                g.connect_store(other_side, store);
            }
            (merge, this_store, other_store)
        };
        let out = ChildSlot::<K, VO>::new();
        let joiner: Arc<StreamJoiner<K, V, V2, VO>> = Arc::new(joiner);
        // One join core per task, shared by the two side nodes.
        let make_core = {
            let (out, this_store, other_store, serdes, joiner) = (out.clone(), this_store, other_store, serdes, joiner);
            Arc::new(move |ictx: &mut crate::context::InitContext<'_>| {
                let core = JoinCore {
                    this_store: ictx.window_store(&this_store)?,
                    this_name: Arc::from(this_store.as_str()),
                    other_store: ictx.window_store(&other_store)?,
                    other_name: Arc::from(other_store.as_str()),
                    windows,
                    late_after_ms: late_after,
                    keep_ms: keep,
                    last_purge: i64::MIN,
                    serdes: serdes.clone(),
                    joiner: joiner.clone(),
                    children: out.instantiate(ictx)?,
                    kbuf: Vec::new(),
                    vbuf: Vec::new(),
                };
                Ok(Rc::new(RefCell::new(core)))
            })
        };
        let mk = make_core.clone();
        self.attach(Arc::new(move |ictx| {
            let mk = mk.clone();
            let core = ictx.shared(merge, move |ictx| mk(ictx))?;
            Ok(Box::new(ThisSide { core }) as Box<dyn Node<K, V>>)
        }));
        let mk = make_core;
        other.attach(Arc::new(move |ictx| {
            let mk = mk.clone();
            let core = ictx.shared(merge, move |ictx| mk(ictx))?;
            Ok(Box::new(OtherSide { core }) as Box<dyn Node<K, V2>>)
        }));
        self.derive(merge, out, false)
    }
}

/// Looks stream records up in a table's store.
struct TableJoinNode<K, VT, VO, F> {
    store: KvStoreRef,
    name: Arc<str>,
    key_serde: Serde<K>,
    value_serde: Serde<VT>,
    joiner: Arc<F>,
    children: Children<K, VO>,
    kbuf: Vec<u8>,
    vbuf: Vec<u8>,
}

impl<K, V, VT, VO, F> Node<K, V> for TableJoinNode<K, VT, VO, F>
where
    K: Data,
    VT: Data,
    VO: Data,
    F: Fn(&K, V, Option<VT>) -> Option<VO>,
{
    fn process(&mut self, ctx: &mut ProcessorContext, key: K, value: V) {
        self.kbuf.clear();
        if let Err(e) = self.key_serde.serialize(&key, &mut self.kbuf) {
            return ctx.dead_letter(format!("join key serialization failed: {e}"));
        }
        let found = match self.store.borrow_mut().get_into(&self.kbuf, &mut self.vbuf) {
            Ok(f) => f,
            Err(e) => return ctx.fail(e),
        };
        let table_value = if found {
            match decode_stored(&self.value_serde, &self.name, &self.vbuf) {
                Ok(v) => Some(v),
                Err(e) => return ctx.fail(e),
            }
        } else {
            None
        };
        if let Some(out) = (self.joiner)(&key, value, table_value) {
            self.children.forward(ctx, key, out);
        }
    }
    fn flush(&mut self, ctx: &mut ProcessorContext) {
        self.children.flush(ctx)
    }
    fn punctuate(&mut self, ctx: &mut ProcessorContext) {
        self.children.punctuate(ctx)
    }
    fn close(&mut self, ctx: &mut ProcessorContext) {
        self.children.close(ctx)
    }
}

type StreamJoiner<K, V, V2, VO> = dyn Fn(&K, &V, &V2) -> VO + Send + Sync;

/// The per-task state of a stream–stream join, shared by its two sides.
struct JoinCore<K, V, V2, VO> {
    this_store: WindowStoreRef,
    this_name: Arc<str>,
    other_store: WindowStoreRef,
    other_name: Arc<str>,
    windows: JoinWindows,
    /// Records this far behind stream time are late.
    late_after_ms: i64,
    /// Stored records this far behind stream time are purged.
    keep_ms: i64,
    last_purge: i64,
    serdes: StreamJoined<K, V, V2>,
    joiner: Arc<StreamJoiner<K, V, V2, VO>>,
    children: Children<K, VO>,
    kbuf: Vec<u8>,
    vbuf: Vec<u8>,
}

/// Append one length-prefixed value to a stored list of values.
fn append_value<T: 'static>(list: &mut Vec<u8>, serde: &Serde<T>, value: &T) -> Result<(), String> {
    let mark = list.len();
    list.extend_from_slice(&[0; 4]);
    if let Err(e) = serde.serialize(value, list) {
        list.truncate(mark);
        return Err(e.to_string());
    }
    let Ok(len) = u32::try_from(list.len() - mark - 4) else {
        list.truncate(mark);
        return Err("value longer than 4 GiB".to_string());
    };
    list[mark..mark + 4].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

/// Decode a stored list of length-prefixed values.
fn decode_values<T: 'static>(store: &str, serde: &Serde<T>, mut bytes: &[u8]) -> Result<Vec<T>, StoreError> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let corrupt = || StoreError::new(store, "join value list is truncated");
        let len_bytes: [u8; 4] = bytes.get(..4).ok_or_else(corrupt)?.try_into().expect("4 bytes");
        let len = u32::from_be_bytes(len_bytes) as usize;
        let value = bytes.get(4..4 + len).ok_or_else(corrupt)?;
        out.push(decode_stored(serde, store, value)?);
        bytes = &bytes[4 + len..];
    }
    Ok(out)
}

impl<K: Data, V: Data, V2: Data, VO: Data> JoinCore<K, V, V2, VO> {
    /// Drop stored records past `keep_ms`, at most once per half of that
    /// of stream-time progress (so a purge scan is not paid per record).
    fn maybe_purge(&mut self, ctx: &mut ProcessorContext) {
        let st = ctx.stream_time;
        if st == i64::MIN {
            return;
        }
        let before = st.saturating_sub(self.keep_ms);
        let every = (self.keep_ms / 2).max(1);
        if self.last_purge != i64::MIN && before < self.last_purge.saturating_add(every) {
            return;
        }
        self.last_purge = before;
        for store in [&self.this_store, &self.other_store] {
            if let Err(e) = store.borrow_mut().purge_before(before) {
                return ctx.fail(e);
            }
        }
    }

    /// Store a record of one side (under its timestamp and key); false if
    /// it was late or failed.
    fn remember<T: 'static>(
        ctx: &mut ProcessorContext,
        store: &WindowStoreRef,
        serde: &Serde<T>,
        kbuf: &[u8],
        vbuf: &mut Vec<u8>,
        value: &T,
    ) -> bool {
        let ts = ctx.timestamp;
        let mut store = store.borrow_mut();
        match store.get_into(kbuf, ts, vbuf) {
            Ok(_) => {}
            Err(e) => {
                ctx.fail(e);
                return false;
            }
        }
        if let Err(e) = append_value(vbuf, serde, value) {
            ctx.dead_letter(format!("join value serialization failed: {e}"));
            return false;
        }
        if let Err(e) = store.put(kbuf, ts, vbuf) {
            ctx.fail(e);
            return false;
        }
        if store.wants_flush() {
            ctx.request_commit();
        }
        true
    }

    /// A record of this (left) side.
    fn process_this(&mut self, ctx: &mut ProcessorContext, key: K, value: V) {
        if !self.accept(ctx, &key) {
            return;
        }
        if !Self::remember(
            ctx,
            &self.this_store,
            &self.serdes.this_value_serde,
            &self.kbuf,
            &mut self.vbuf,
            &value,
        ) {
            return;
        }
        let ts = ctx.timestamp;
        let (from, to) = (
            ts.saturating_sub(self.windows.before_ms),
            ts.saturating_add(self.windows.after_ms),
        );
        let matches = match self.other_store.borrow_mut().fetch(&self.kbuf, from, to) {
            Ok(m) => m,
            Err(e) => return ctx.fail(e),
        };
        for (t2, bytes) in matches {
            let others = match decode_values(&self.other_name, &self.serdes.other_value_serde, &bytes) {
                Ok(o) => o,
                Err(e) => return ctx.fail(e),
            };
            for v2 in others {
                let out = (self.joiner)(&key, &value, &v2);
                ctx.timestamp = ts.max(t2);
                self.children.forward(ctx, key.clone(), out);
            }
        }
        ctx.timestamp = ts;
        self.maybe_purge(ctx);
    }

    /// A record of the other (right) side.
    fn process_other(&mut self, ctx: &mut ProcessorContext, key: K, value: V2) {
        if !self.accept(ctx, &key) {
            return;
        }
        if !Self::remember(
            ctx,
            &self.other_store,
            &self.serdes.other_value_serde,
            &self.kbuf,
            &mut self.vbuf,
            &value,
        ) {
            return;
        }
        let ts = ctx.timestamp;
        // Mirror of the left side's window: a left record at t1 matches
        // this one iff t1 - before <= ts <= t1 + after.
        let (from, to) = (
            ts.saturating_sub(self.windows.after_ms),
            ts.saturating_add(self.windows.before_ms),
        );
        let matches = match self.this_store.borrow_mut().fetch(&self.kbuf, from, to) {
            Ok(m) => m,
            Err(e) => return ctx.fail(e),
        };
        for (t1, bytes) in matches {
            let these = match decode_values(&self.this_name, &self.serdes.this_value_serde, &bytes) {
                Ok(o) => o,
                Err(e) => return ctx.fail(e),
            };
            for v1 in these {
                let out = (self.joiner)(&key, &v1, &value);
                ctx.timestamp = ts.max(t1);
                self.children.forward(ctx, key.clone(), out);
            }
        }
        ctx.timestamp = ts;
        self.maybe_purge(ctx);
    }

    /// Serialize the key into `kbuf` and check lateness: a record older
    /// than before + after + grace could miss partners that were purged,
    /// so it is dropped (and counted) rather than joined partially.
    fn accept(&mut self, ctx: &mut ProcessorContext, key: &K) -> bool {
        if ctx.timestamp.saturating_add(self.late_after_ms) < ctx.stream_time {
            ctx.counters.late_records_dropped += 1;
            return false;
        }
        self.kbuf.clear();
        if let Err(e) = self.serdes.key_serde.serialize(key, &mut self.kbuf) {
            ctx.dead_letter(format!("join key serialization failed: {e}"));
            return false;
        }
        true
    }
}

/// The input of a stream–stream join from the stream `join_stream` was
/// called on: hands its records to the shared core. Only this side
/// flushes, punctuates and closes the shared children, so that they see
/// each call once per task (both sides are always in the same task).
struct ThisSide<K, V, V2, VO> {
    core: Rc<RefCell<JoinCore<K, V, V2, VO>>>,
}

impl<K: Data, V: Data, V2: Data, VO: Data> Node<K, V> for ThisSide<K, V, V2, VO> {
    fn process(&mut self, ctx: &mut ProcessorContext, key: K, value: V) {
        self.core.borrow_mut().process_this(ctx, key, value)
    }
    fn flush(&mut self, ctx: &mut ProcessorContext) {
        self.core.borrow_mut().children.flush(ctx)
    }
    fn punctuate(&mut self, ctx: &mut ProcessorContext) {
        self.core.borrow_mut().children.punctuate(ctx)
    }
    fn close(&mut self, ctx: &mut ProcessorContext) {
        self.core.borrow_mut().children.close(ctx)
    }
}

/// The input of a stream–stream join from the other stream.
struct OtherSide<K, V, V2, VO> {
    core: Rc<RefCell<JoinCore<K, V, V2, VO>>>,
}

impl<K: Data, V: Data, V2: Data, VO: Data> Node<K, V2> for OtherSide<K, V, V2, VO> {
    fn process(&mut self, ctx: &mut ProcessorContext, key: K, value: V2) {
        self.core.borrow_mut().process_other(ctx, key, value)
    }
    fn flush(&mut self, _ctx: &mut ProcessorContext) {}
    fn punctuate(&mut self, _ctx: &mut ProcessorContext) {}
    fn close(&mut self, _ctx: &mut ProcessorContext) {}
}
