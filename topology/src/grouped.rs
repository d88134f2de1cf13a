//! Grouped streams and their aggregations (count, reduce, aggregate),
//! plain and windowed. Aggregations exist only here, so an ungrouped stream
//! cannot be aggregated: wrong programs do not compile.
//!
//! Each aggregation is a *core* ([`AggCore`]: the store, what is emitted
//! and when, the children) fed by one input node per input stream
//! ([`Aggregates`]: how one record of that input's value type is folded
//! in). A plain aggregation owns its core ([`AggNode`]); a cogroup
//! (`cogroup.rs`) shares one core between inputs of different value types.

use std::sync::Arc;

use crate::builder::{Graph, GraphBuilder};
use crate::context::{InitContext, ProcessorContext};
use crate::error::TopologyError;
use crate::kstream::KStream;
use crate::ktable::{KTable, WindowStored};
use crate::materialized::Materialized;
use crate::node::{ChildSlot, Children, Node};
use crate::serde::{Serde, Serdes};
use crate::sliding::{fixed_length_due, forward_due};
use crate::store::{split_window_key, KvStoreRef, StoreError, StoreKind, StoreSpec, WindowStoreRef};
use crate::topology::NodeKind;
use crate::windows::{EmitStrategy, SessionWindows, TimeWindows, Window, Windowed};
use crate::Data;

/// The per-record step of an aggregation: the new aggregate from the key,
/// the record's value and the old aggregate (`None` for a new key/window).
pub(crate) type Step<K, V, A> = Arc<dyn Fn(&K, V, Option<A>) -> A + Send + Sync>;

/// The step of every `count`: one more record.
pub(crate) fn count_step<K, V>() -> Step<K, V, u64> {
    Arc::new(|_, _, old| old.unwrap_or(0) + 1)
}

/// The step of every `reduce`: the first value as is, then
/// `reducer(old, new)`.
pub(crate) fn reduce_step<K, V: 'static>(reducer: impl Fn(V, V) -> V + Send + Sync + 'static) -> Step<K, V, V> {
    Arc::new(move |_, v, old| match old {
        Some(o) => reducer(o, v),
        None => v,
    })
}

/// The step of every `aggregate`: `aggregator(key, value, old)`, with
/// `init()` as the old aggregate of a new key or window.
pub(crate) fn aggregate_step<K, V, A: 'static>(
    init: impl Fn() -> A + Send + Sync + 'static,
    aggregator: impl Fn(&K, V, A) -> A + Send + Sync + 'static,
) -> Step<K, V, A> {
    Arc::new(move |k, v, old| aggregator(k, v, old.unwrap_or_else(&init)))
}

/// Declare the key-value store `store` of an aggregation, connect it to
/// the aggregation's graph nodes and record its serdes for queries.
pub(crate) fn declare_kv_store<K: 'static, A: 'static>(
    g: &mut GraphBuilder,
    nodes: &[usize],
    store: &str,
    logged: bool,
    key_serde: &Serde<K>,
    agg_serde: &Serde<A>,
) {
    g.add_store(StoreSpec {
        name: store.to_string(),
        kind: StoreKind::KeyValue,
        logged,
    });
    for &n in nodes {
        g.connect_store(n, store);
    }
    g.record_store_format(store, key_serde, agg_serde);
}

/// A stream grouped by key, ready to aggregate.
pub struct KGroupedStream<K, V> {
    pub(crate) stream: KStream<K, V>,
    pub(crate) key_serde: Serde<K>,
    pub(crate) value_serde: Serde<V>,
}

impl<K: Data, V: Data> KGroupedStream<K, V> {
    /// The stream the aggregation reads: repartitioned by key first if the
    /// key was changed upstream. Returns it with the store name to use.
    pub(crate) fn input(&self, materialized: &Materialized, kind: &str) -> (KStream<K, V>, String) {
        let store = self.stream.graph.borrow_mut().store_name(materialized, kind);
        (self.input_via(&store), store)
    }

    /// The stream the aggregation reads, repartitioned through
    /// `{repartition_name}-repartition` if the key was changed upstream
    /// (cogroup names one topic per input, as they share one store name).
    pub(crate) fn input_via(&self, repartition_name: &str) -> KStream<K, V> {
        if self.stream.repartition_required {
            self.stream
                .clone()
                .repartition(repartition_name, self.key_serde.clone(), self.value_serde.clone())
        } else {
            self.stream.clone()
        }
    }

    /// The number of records per key.
    pub fn count(self, materialized: Materialized) -> KTable<K, u64> {
        self.aggregate_with("KSTREAM-AGGREGATE", materialized, Serdes::u64(), count_step())
    }

    /// Combine the values of a key with `reducer(old, new)`.
    pub fn reduce(
        self,
        reducer: impl Fn(V, V) -> V + Send + Sync + 'static,
        materialized: Materialized,
    ) -> KTable<K, V> {
        let serde = self.value_serde.clone();
        self.aggregate_with("KSTREAM-REDUCE", materialized, serde, reduce_step(reducer))
    }

    /// Fold the values of a key into an aggregate that starts at `init()`.
    pub fn aggregate<A: Data>(
        self,
        init: impl Fn() -> A + Send + Sync + 'static,
        aggregator: impl Fn(&K, V, A) -> A + Send + Sync + 'static,
        aggregate_serde: Serde<A>,
        materialized: Materialized,
    ) -> KTable<K, A> {
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
    ) -> KTable<K, A> {
        let (input, store) = self.input(&materialized, kind);
        let id = {
            let mut g = input.graph.borrow_mut();
            let id = g.add_node(kind, NodeKind::Processor, vec![input.node]);
            declare_kv_store(
                &mut g,
                &[id],
                &store,
                materialized.logged,
                &self.key_serde,
                &aggregate_serde,
            );
            id
        };
        let out = ChildSlot::<K, Option<A>>::new();
        let setup = KvAggSetup {
            store: store.clone(),
            key_serde: self.key_serde.clone(),
            agg_serde: aggregate_serde.clone(),
            out: out.clone(),
        };
        input.attach(Arc::new(move |ictx| {
            Ok(Box::new(AggNode {
                core: setup.make_core(ictx)?,
                step: step.clone(),
            }) as Box<dyn Node<K, V>>)
        }));
        KTable::new(
            input.graph.clone(),
            id,
            out,
            Some(store),
            self.key_serde,
            Some(aggregate_serde),
            None,
        )
    }

    /// A windowed aggregation of this stream with step `step`: its node
    /// (named after `kind`), its store(s) and its table. Time, sliding and
    /// session windows differ only by `W` (see [`WindowedAgg`]).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn windowed_aggregate<A: Data, W: WindowedAgg<K, A>, S>(
        self,
        kind: &str,
        windows: W,
        emit: EmitStrategy,
        materialized: Materialized,
        aggregate_serde: Serde<A>,
        step: S,
    ) -> KTable<Windowed<K>, A, WindowStored>
    where
        W::Core: Aggregates<K, V, S>,
        S: Clone + Send + Sync + 'static,
    {
        let (input, store) = self.input(&materialized, kind);
        let id = input
            .graph
            .borrow_mut()
            .add_node(kind, NodeKind::Processor, vec![input.node]);
        let setup = WindowAggSetup::declare(
            &mut input.graph.borrow_mut(),
            &[id],
            store,
            windows,
            &materialized,
            emit,
            self.key_serde.clone(),
            aggregate_serde,
        );
        let table = setup.table(input.graph.clone(), id);
        input.attach(Arc::new(move |ictx| {
            Ok(Box::new(AggNode {
                core: setup.make_core(ictx)?,
                step: step.clone(),
            }) as Box<dyn Node<K, V>>)
        }));
        table
    }

    /// Window the grouped stream: `TimeWindows` (tumbling or hopping),
    /// `SlidingWindows` or `SessionWindows`.
    pub fn windowed_by<W: WindowSpec<K, V>>(self, windows: W) -> W::Windowed {
        windows.apply(self)
    }
}

/// A window specification that can window a grouped stream.
pub trait WindowSpec<K, V> {
    type Windowed;
    fn apply(self, grouped: KGroupedStream<K, V>) -> Self::Windowed;
}

impl<K: Data, V: Data> WindowSpec<K, V> for TimeWindows {
    type Windowed = TimeWindowedKStream<K, V>;
    fn apply(self, grouped: KGroupedStream<K, V>) -> TimeWindowedKStream<K, V> {
        TimeWindowedKStream {
            grouped,
            windows: self,
            emit: EmitStrategy::default(),
        }
    }
}

impl<K: Data, V: Data> WindowSpec<K, V> for SessionWindows {
    type Windowed = SessionWindowedKStream<K, V>;
    fn apply(self, grouped: KGroupedStream<K, V>) -> SessionWindowedKStream<K, V> {
        SessionWindowedKStream {
            grouped,
            windows: self,
            emit: EmitStrategy::default(),
        }
    }
}

/// A grouped stream in time windows.
pub struct TimeWindowedKStream<K, V> {
    pub(crate) grouped: KGroupedStream<K, V>,
    pub(crate) windows: TimeWindows,
    pub(crate) emit: EmitStrategy,
}

/// A grouped stream in session windows.
pub struct SessionWindowedKStream<K, V> {
    pub(crate) grouped: KGroupedStream<K, V>,
    pub(crate) windows: SessionWindows,
    pub(crate) emit: EmitStrategy,
}

impl<K: Data, V: Data> TimeWindowedKStream<K, V> {
    /// When the aggregation that follows forwards its windows: on every
    /// update (the default) or once, when the window closes (see
    /// [`EmitStrategy::on_window_close`]).
    pub fn emit_strategy(self, emit: EmitStrategy) -> Self {
        TimeWindowedKStream { emit, ..self }
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

    /// Fold the values of a key within each window.
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

/// Read an aggregate from the bytes a store returned; a value that does not
/// decode means the store is corrupt (or was written by another program),
/// which is fatal for the task rather than a bad input record.
pub(crate) fn decode_stored<A: 'static>(serde: &Serde<A>, store: &str, bytes: &[u8]) -> Result<A, StoreError> {
    serde
        .deserialize(bytes)
        .map_err(|e| StoreError::new(store, format!("stored value does not decode: {e}")))
}

/// One read-modify-write of a stored aggregate (the body of a
/// `KeyValueStore::update` or `WindowStore::update` call): decode the
/// stored aggregate, compute the new one, encode it. A failure inside the
/// store's call is kept for [`settle`](Self::settle), after it.
struct AggUpdate<'a, A> {
    serde: &'a Serde<A>,
    store: &'a str,
    failed: Option<AggFailure>,
}

/// What went wrong inside an [`AggUpdate`].
enum AggFailure {
    /// The stored aggregate does not decode: the task fails.
    Stored(StoreError),
    /// The new aggregate does not encode: the record is dead-lettered.
    Encode(String),
}

impl<'a, A: 'static> AggUpdate<'a, A> {
    fn new(serde: &'a Serde<A>, store: &'a str) -> Self {
        AggUpdate {
            serde,
            store,
            failed: None,
        }
    }

    /// `next` gets the stored aggregate and returns the new one (`None`:
    /// store nothing); true if `out` holds the new one's bytes to store.
    #[inline]
    fn apply(&mut self, old: Option<&[u8]>, out: &mut Vec<u8>, next: impl FnOnce(Option<A>) -> Option<A>) -> bool {
        let old = match old.map(|b| decode_stored(self.serde, self.store, b)).transpose() {
            Ok(a) => a,
            Err(e) => {
                self.failed = Some(AggFailure::Stored(e));
                return false;
            }
        };
        let Some(new) = next(old) else { return false };
        if let Err(e) = self.serde.serialize(&new, out) {
            self.failed = Some(AggFailure::Encode(format!("aggregate serialization failed: {e}")));
            return false;
        }
        true
    }

    /// Reports what failed (a stored aggregate that does not decode or the
    /// store: the task fails; a new one that does not encode: a dead
    /// letter); true if the update went through.
    fn settle(self, ctx: &mut ProcessorContext, stored: Result<(), StoreError>) -> bool {
        match (self.failed, stored) {
            (None, Ok(())) => return true,
            (Some(AggFailure::Encode(why)), _) => ctx.dead_letter(why),
            (Some(AggFailure::Stored(e)), _) | (None, Err(e)) => ctx.fail(e),
        }
        false
    }
}

/// Split a window-store key into (window start, decoded record key); a key
/// that does not decode is store corruption, as for [`decode_stored`].
pub(crate) fn decode_window_key<K: 'static>(
    serde: &Serde<K>,
    store: &str,
    store_key: &[u8],
) -> Result<(i64, K), StoreError> {
    let (start, kb) =
        split_window_key(store_key).ok_or_else(|| StoreError::new(store, "window key shorter than 8 bytes"))?;
    let key = serde
        .deserialize(kb)
        .map_err(|e| StoreError::new(store, format!("stored key does not decode: {e}")))?;
    Ok((start, key))
}

/// The part of an aggregation that one task instance keeps: its store, its
/// children and what it remembers between records. Split from the input
/// side ([`Aggregates`]) so that a cogroup can feed several typed inputs
/// into one core (one store, one output).
pub(crate) trait AggCore: 'static {
    /// Commit time: forward (or emit) what is due, stage the stores, flush
    /// the children. Must be idempotent within one commit: a core shared by
    /// several inputs is flushed once per input.
    fn flush(&mut self, ctx: &mut ProcessorContext);
    fn punctuate(&mut self, ctx: &mut ProcessorContext);
    fn close(&mut self, ctx: &mut ProcessorContext);
}

/// Folding one input's record (key `K`, value `V`) into a core with that
/// input's step `S` (an aggregator, or a session fold).
pub(crate) trait Aggregates<K, V, S>: AggCore {
    fn aggregate(&mut self, ctx: &mut ProcessorContext, key: K, value: V, step: &S);
}

/// A single-input aggregation: a core it owns and the step of its input.
pub(crate) struct AggNode<C, S> {
    pub(crate) core: C,
    pub(crate) step: S,
}

impl<K, V, C: Aggregates<K, V, S>, S> Node<K, V> for AggNode<C, S> {
    #[inline]
    fn process(&mut self, ctx: &mut ProcessorContext, key: K, value: V) {
        self.core.aggregate(ctx, key, value, &self.step)
    }
    fn flush(&mut self, ctx: &mut ProcessorContext) {
        self.core.flush(ctx)
    }
    fn punctuate(&mut self, ctx: &mut ProcessorContext) {
        self.core.punctuate(ctx)
    }
    fn close(&mut self, ctx: &mut ProcessorContext) {
        self.core.close(ctx)
    }
}

/// What a task needs to create a key-value aggregation core.
pub(crate) struct KvAggSetup<K, A> {
    pub(crate) store: String,
    pub(crate) key_serde: Serde<K>,
    pub(crate) agg_serde: Serde<A>,
    pub(crate) out: Arc<ChildSlot<K, Option<A>>>,
}

impl<K: Data, A: Data> KvAggSetup<K, A> {
    pub(crate) fn make_core(&self, ictx: &mut InitContext<'_>) -> Result<KvAggCore<K, A>, TopologyError> {
        Ok(KvAggCore {
            store: ictx.key_value_store(&self.store)?,
            name: Arc::from(self.store.as_str()),
            key_serde: self.key_serde.clone(),
            agg_serde: self.agg_serde.clone(),
            children: self.out.instantiate(ictx)?,
            kbuf: Vec::new(),
            vbuf: Vec::new(),
            nbuf: Vec::new(),
        })
    }
}

pub(crate) struct KvAggCore<K, A> {
    store: KvStoreRef,
    name: Arc<str>,
    key_serde: Serde<K>,
    agg_serde: Serde<A>,
    children: Children<K, Option<A>>,
    kbuf: Vec<u8>,
    vbuf: Vec<u8>,
    /// The new aggregate's bytes (see `KeyValueStore::update`).
    nbuf: Vec<u8>,
}

impl<K: Data, V, A: Data> Aggregates<K, V, Step<K, V, A>> for KvAggCore<K, A> {
    #[inline]
    fn aggregate(&mut self, ctx: &mut ProcessorContext, key: K, value: V, step: &Step<K, V, A>) {
        self.kbuf.clear();
        if let Err(e) = self.key_serde.serialize(&key, &mut self.kbuf) {
            return ctx.dead_letter(format!("key serialization failed: {e}"));
        }
        let mut store = self.store.borrow_mut();
        // One read-modify-write: a cached key is looked up once.
        let mut update = AggUpdate::new(&self.agg_serde, &self.name);
        let mut value = Some(value);
        let r = store.update(&self.kbuf, &mut self.vbuf, &mut self.nbuf, &mut |old, out| {
            update.apply(old, out, |old| value.take().map(|v| step(&key, v, old)))
        });
        if !update.settle(ctx, r) {
            return;
        }
        if store.wants_flush() {
            ctx.request_commit();
        }
    }
}

impl<K: Data, A: Data> AggCore for KvAggCore<K, A> {
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
                .map(|b| decode_stored(&self.agg_serde, &self.name, b))
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

/// The name of the store in which an emit-on-close aggregation over
/// `store` keeps its emit progress.
pub(crate) fn emit_store_name(store: &str) -> String {
    format!("{store}-last-emitted")
}

/// Declare the emit-progress store of an emit-on-close aggregation and
/// connect it to the aggregation's nodes. Logged like the window store: the
/// two are restored together, so a restored task knows what it emitted.
pub(crate) fn declare_emit_store(g: &mut GraphBuilder, nodes: &[usize], store: &str, logged: bool) -> String {
    let name = emit_store_name(store);
    g.add_store(StoreSpec {
        name: name.clone(),
        kind: StoreKind::KeyValue,
        logged,
    });
    for &n in nodes {
        g.connect_store(n, &name);
    }
    name
}

/// A window specification whose aggregations keep their windows in a
/// window store: time, sliding and session windows. What differs between
/// them is here; what they share is [`WindowAggSetup`], so one windowed
/// stream or cogroup serves all three kinds
/// ([`KGroupedStream::windowed_aggregate`], `cogroup.rs`).
pub(crate) trait WindowedAgg<K, A>: Copy + Send + Sync + 'static {
    /// What the aggregation is in a task.
    type Core: AggCore;
    /// Whether the store's values are the aggregate's bytes as they are,
    /// so that the daemon can serve queries of the store with the
    /// aggregate serde (sliding and session windows prefix a timestamp).
    const QUERYABLE: bool;
    /// How long the store keeps windows at least.
    fn min_retention_ms(&self) -> i64;
    /// The grace period of the aggregation's table: a window is final
    /// once its end + this is at or behind stream time (when `suppress`
    /// emits it).
    fn table_grace_ms(&self) -> i64;
    /// The task's core, with its emit progress (`Some` to emit on close).
    fn make_core(
        setup: &WindowAggSetup<Self, K, A>,
        emit: Option<FinalEmitter>,
        ictx: &mut InitContext<'_>,
    ) -> Result<Self::Core, TopologyError>;
}

/// What a task needs to create a windowed aggregation core (windows `W`);
/// built when the topology is declared ([`WindowAggSetup::declare`]).
pub(crate) struct WindowAggSetup<W, K, A> {
    pub(crate) store: String,
    pub(crate) emit_store: Option<String>,
    pub(crate) windows: W,
    pub(crate) retention_ms: i64,
    pub(crate) key_serde: Serde<K>,
    pub(crate) agg_serde: Serde<A>,
    pub(crate) out: Arc<ChildSlot<Windowed<K>, Option<A>>>,
}

impl<W: WindowedAgg<K, A>, K: Data, A: Data> WindowAggSetup<W, K, A> {
    /// Declare the window store (and, to emit on close, the emit-progress
    /// store) of an aggregation whose graph nodes are `nodes`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn declare(
        g: &mut GraphBuilder,
        nodes: &[usize],
        store: String,
        windows: W,
        materialized: &Materialized,
        emit: EmitStrategy,
        key_serde: Serde<K>,
        agg_serde: Serde<A>,
    ) -> Self {
        let retention = windows.min_retention_ms().max(materialized.retention_ms.unwrap_or(0));
        g.add_store(StoreSpec {
            name: store.clone(),
            kind: StoreKind::Window {
                retention_ms: retention,
            },
            logged: materialized.logged,
        });
        for &n in nodes {
            g.connect_store(n, &store);
        }
        if W::QUERYABLE {
            // Queryable by record key (`/stores/{store}?key=`): the daemon
            // decodes the window prefix of the store key itself.
            g.record_store_format(&store, &key_serde, &agg_serde);
        }
        let emit_store = emit
            .on_close
            .then(|| declare_emit_store(g, nodes, &store, materialized.logged));
        WindowAggSetup {
            store,
            emit_store,
            windows,
            retention_ms: retention,
            key_serde,
            agg_serde,
            out: ChildSlot::new(),
        }
    }

    /// The aggregation's table, coming out of graph node `node`.
    pub(crate) fn table(&self, graph: Graph, node: usize) -> KTable<Windowed<K>, A, WindowStored> {
        KTable::new(
            graph,
            node,
            self.out.clone(),
            Some(self.store.clone()),
            Serdes::windowed(self.key_serde.clone()),
            Some(self.agg_serde.clone()),
            Some(self.windows.table_grace_ms()),
        )
    }

    pub(crate) fn make_core(&self, ictx: &mut InitContext<'_>) -> Result<W::Core, TopologyError> {
        let emit = self
            .emit_store
            .as_deref()
            .map(|s| FinalEmitter::open(ictx, s))
            .transpose()?;
        W::make_core(self, emit, ictx)
    }
}

/// The emit progress of an [`EmitStrategy::on_window_close`] aggregation:
/// the window close time (stream time minus grace) up to which it has
/// emitted every closed window, as Kafka Streams' `lastEmitWindowCloseTime`.
///
/// Why it is crash-safe: windows are emitted in `flush` (the first step of
/// a commit) and the new close time is written to this store in the same
/// flush, so it is committed in the same atomic batch as the window store
/// and the task's checkpoint. A task restored to the previous commit has
/// the previous close time and emits those windows again; nothing is lost.
/// With exactly-once the first emission was part of the aborted
/// transaction, so each window reaches readers once. With at-least-once a
/// crash after the outputs were produced and before the commit finished
/// emits those windows twice (as every output of that commit).
pub(crate) struct FinalEmitter {
    store: KvStoreRef,
    name: Arc<str>,
    /// `None` until read from the store (so that a restored store is seen);
    /// then `Some(i64::MIN)` if nothing was ever emitted.
    last_close: Option<i64>,
}

const EMIT_KEY: &[u8] = b"last-emit-window-close-time";

impl FinalEmitter {
    pub(crate) fn open(ictx: &mut InitContext<'_>, store: &str) -> Result<Self, TopologyError> {
        Ok(FinalEmitter {
            store: ictx.key_value_store(store)?,
            name: Arc::from(store),
            last_close: None,
        })
    }

    /// The close time up to which windows were emitted (`i64::MIN`: none).
    pub(crate) fn last_close(&mut self) -> Result<i64, StoreError> {
        if let Some(c) = self.last_close {
            return Ok(c);
        }
        let c = match self.store.borrow_mut().get(EMIT_KEY)? {
            Some(b) => {
                let bytes: [u8; 8] = b
                    .as_slice()
                    .try_into()
                    .map_err(|_| StoreError::new(&*self.name, format!("emit time needs 8 bytes, got {}", b.len())))?;
                i64::from_be_bytes(bytes)
            }
            None => i64::MIN,
        };
        self.last_close = Some(c);
        Ok(c)
    }

    pub(crate) fn set_last_close(&mut self, close: i64) -> Result<(), StoreError> {
        self.store.borrow_mut().put(EMIT_KEY, &close.to_be_bytes())?;
        self.last_close = Some(close);
        Ok(())
    }

    /// Stage the emit progress (with the window store, in the same commit).
    pub(crate) fn flush(&mut self, ctx: &mut ProcessorContext) {
        ctx.log_flushed(&self.name, self.store.borrow_mut().flush());
    }

    /// The window close time now and the one emitted up to, if windows
    /// may be due: stream time moved past the last emission.
    pub(crate) fn due(&mut self, ctx: &mut ProcessorContext, grace_ms: i64) -> Option<(i64, i64)> {
        if ctx.stream_time == i64::MIN {
            return None;
        }
        let close = ctx.stream_time.saturating_sub(grace_ms);
        match self.last_close() {
            Ok(last) if last == i64::MIN || last < close => Some((last, close)),
            Ok(_) => None,
            Err(e) => {
                ctx.fail(e);
                None
            }
        }
    }
}

impl<K: Data, A: Data> WindowedAgg<K, A> for TimeWindows {
    type Core = TimeWindowAggCore<K, A>;
    const QUERYABLE: bool = true;

    /// Saturating: a grace of up to `i64::MAX` ms is accepted by
    /// [`TimeWindows::grace`], and must not overflow here.
    fn min_retention_ms(&self) -> i64 {
        self.size_ms.saturating_add(self.grace_ms)
    }

    fn table_grace_ms(&self) -> i64 {
        self.grace_ms
    }

    fn make_core(
        setup: &WindowAggSetup<Self, K, A>,
        emit: Option<FinalEmitter>,
        ictx: &mut InitContext<'_>,
    ) -> Result<TimeWindowAggCore<K, A>, TopologyError> {
        Ok(TimeWindowAggCore {
            store: ictx.window_store(&setup.store)?,
            name: Arc::from(setup.store.as_str()),
            windows: setup.windows,
            retention_ms: setup.retention_ms,
            last_purge: i64::MIN,
            next_emit_at: i64::MIN,
            key_serde: setup.key_serde.clone(),
            agg_serde: setup.agg_serde.clone(),
            emit,
            children: setup.out.instantiate(ictx)?,
            kbuf: Vec::new(),
            vbuf: Vec::new(),
            nbuf: Vec::new(),
        })
    }
}

pub(crate) struct TimeWindowAggCore<K, A> {
    store: WindowStoreRef,
    name: Arc<str>,
    windows: TimeWindows,
    retention_ms: i64,
    last_purge: i64,
    /// Emit-on-close: the stream time at which the next window closes
    /// (`i64::MIN` until the first check).
    next_emit_at: i64,
    key_serde: Serde<K>,
    agg_serde: Serde<A>,
    /// Set for [`EmitStrategy::on_window_close`]: updates are not
    /// forwarded, closed windows are (once).
    emit: Option<FinalEmitter>,
    children: Children<Windowed<K>, Option<A>>,
    kbuf: Vec<u8>,
    vbuf: Vec<u8>,
    /// The new aggregate's bytes (see `WindowStore::update`).
    nbuf: Vec<u8>,
}

impl<K: Data, A: Data> TimeWindowAggCore<K, A> {
    /// Drop windows past retention, at most once per window advance.
    fn maybe_purge(&mut self, ctx: &mut ProcessorContext) {
        let st = ctx.stream_time;
        if st == i64::MIN {
            return;
        }
        let before = st.saturating_sub(self.retention_ms);
        if self.last_purge == i64::MIN || before >= self.last_purge + self.windows.advance_ms {
            if let Err(e) = self.store.borrow_mut().purge_before(before) {
                ctx.fail(e);
            }
            self.last_purge = before;
        }
    }

    /// Emit-on-close: forward every window that closed since the last
    /// emission, oldest first. A window `[start, start + size)` is closed
    /// once `end + grace <= stream time` (when the aggregation stops
    /// accepting records for it, and when `suppress` would emit it): so the
    /// due windows are those with `last_close < end <= close`, one range
    /// scan of the store by start.
    fn emit_closed(&mut self, ctx: &mut ProcessorContext) {
        let Some(emitter) = self.emit.as_mut() else { return };
        let Some((last, close)) = emitter.due(ctx, self.windows.grace_ms) else {
            return;
        };
        let due = match fixed_length_due(&self.store, last, close, self.windows.size_ms) {
            Ok(d) => d,
            Err(e) => return ctx.fail(e),
        };
        let decoded = forward_due(ctx, &mut self.children, &self.key_serde, &self.name, due, |v| {
            decode_stored(&self.agg_serde, &self.name, v)
        });
        if let Err(e) = decoded {
            return ctx.fail(e);
        }
        if let Err(e) = self.emit.as_mut().expect("emitting").set_last_close(close) {
            ctx.fail(e);
        }
    }
}

impl<K: Data, V: Clone, A: Data> Aggregates<K, V, Step<K, V, A>> for TimeWindowAggCore<K, A> {
    fn aggregate(&mut self, ctx: &mut ProcessorContext, key: K, value: V, step: &Step<K, V, A>) {
        self.kbuf.clear();
        if let Err(e) = self.key_serde.serialize(&key, &mut self.kbuf) {
            return ctx.dead_letter(format!("key serialization failed: {e}"));
        }
        let ts = ctx.timestamp;
        let close_before = ctx.stream_time.saturating_sub(self.windows.grace_ms);
        let mut accepted = false;
        {
            let mut store = self.store.borrow_mut();
            for start in self.windows.window_starts(ts) {
                let end = start + self.windows.size_ms;
                if end <= close_before {
                    continue; // this window has closed
                }
                accepted = true;
                // One read-modify-write: a cached window is looked up once.
                let mut update = AggUpdate::new(&self.agg_serde, &self.name);
                let r = store.update(&self.kbuf, start, &mut self.vbuf, &mut self.nbuf, &mut |old, out| {
                    update.apply(old, out, |old| Some(step(&key, value.clone(), old)))
                });
                if !update.settle(ctx, r) {
                    return;
                }
            }
            if store.wants_flush() {
                ctx.request_commit();
            }
        }
        if !accepted {
            ctx.counters.late_records_dropped += 1;
        }
        if self.emit.is_some() && ctx.stream_time >= self.next_emit_at {
            self.emit_closed_and_schedule(ctx);
        }
    }
}

impl<K: Data, A: Data> TimeWindowAggCore<K, A> {
    /// Emit-on-close while records are processed, not only at commits (as
    /// Kafka Streams does): once stream time passes the next window's end
    /// plus grace, the windows closed by then go out at once, so a fast
    /// stream's results leave steadily instead of piling up, all of them,
    /// in the producer at the next commit. The outputs are not tied to the
    /// record at hand (no origin, none of its headers), exactly as if they
    /// had been emitted at the commit. Used at commits too, so that the
    /// next window end to wait for is always the one after what was
    /// emitted.
    fn emit_closed_and_schedule(&mut self, ctx: &mut ProcessorContext) {
        let on_time = std::mem::replace(&mut ctx.emitting_on_time, true);
        self.emit_closed(ctx);
        ctx.emitting_on_time = on_time;
        let last = match self.emit.as_mut().map(FinalEmitter::last_close) {
            Some(Ok(c)) => c,
            Some(Err(e)) => return ctx.fail(e),
            None => return,
        };
        self.next_emit_at = next_window_end(&self.windows, last).saturating_add(self.windows.grace_ms);
    }
}

/// The end of the first window (of `windows`' aligned starts) that ends
/// after `t`; `i64::MAX` if none is representable.
fn next_window_end(windows: &TimeWindows, t: i64) -> i64 {
    let (size, advance) = (windows.size_ms, windows.advance_ms);
    t.saturating_sub(size)
        .div_euclid(advance)
        .checked_add(1)
        .and_then(|k| k.checked_mul(advance))
        .and_then(|start| start.checked_add(size))
        .unwrap_or(i64::MAX)
}

impl<K: Data, A: Data> AggCore for TimeWindowAggCore<K, A> {
    fn flush(&mut self, ctx: &mut ProcessorContext) {
        if self.emit.is_some() {
            // Emit-on-close forwards nothing from the store's flush, so the
            // closed windows go out and the expired ones are purged before
            // it: a window that opened, closed and expired between two
            // commits then never reaches the changelog (neither its value
            // nor a tombstone, see `SledWindowStore`), which for a fast
            // stream is most windows.
            self.emit_closed_and_schedule(ctx);
            if let Some(e) = self.emit.as_mut() {
                e.flush(ctx);
            }
            self.maybe_purge(ctx);
            ctx.log_flushed(&self.name, self.store.borrow_mut().flush());
            self.children.flush(ctx);
            return;
        }
        let records = match self.store.borrow_mut().flush() {
            Ok(r) => r,
            Err(e) => return ctx.fail(e),
        };
        let ts = ctx.timestamp;
        let size = self.windows.size_ms;
        for rec in records {
            let (start, key) = match decode_window_key(&self.key_serde, &self.name, &rec.key) {
                Ok(d) => d,
                Err(e) => {
                    ctx.fail(e);
                    break;
                }
            };
            // Tombstones here come only from retention purges of windows
            // that closed long ago: nothing downstream needs them.
            let value = match rec.value.as_deref() {
                Some(b) => match decode_stored(&self.agg_serde, &self.name, b) {
                    Ok(a) => Some(a),
                    Err(e) => {
                        ctx.fail(e);
                        break;
                    }
                },
                None => None,
            };
            ctx.changelog.push((self.name.clone(), rec));
            if let Some(v) = value {
                ctx.timestamp = (start + size - 1).min(ctx.stream_time.max(start));
                let wk = Windowed {
                    key,
                    window: Window {
                        start,
                        end: start + size,
                    },
                };
                self.children.forward(ctx, wk, Some(v));
            }
        }
        ctx.timestamp = ts;
        // Purge only now, after the cached updates went downstream: a window
        // purged before its last update was forwarded would never be emitted.
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
    use std::time::Duration;

    use super::next_window_end;
    use crate::*;

    /// A grace of up to `i64::MAX` ms is a valid window parameter: declaring
    /// the aggregation must not overflow computing retention or table grace.
    #[test]
    fn the_largest_grace_builds() {
        let max = Duration::from_millis(i64::MAX as u64);
        let mut b = StreamsBuilder::new();
        let s = b.stream::<String, String>("t", Serdes::string(), Serdes::string());
        s.clone()
            .group_by_key(Serdes::string(), Serdes::string())
            .windowed_by(TimeWindows::of(Duration::from_millis(10)).unwrap().grace(max).unwrap())
            .count(Materialized::named("time"));
        s.group_by_key(Serdes::string(), Serdes::string())
            .windowed_by(SlidingWindows::of_time_difference_and_grace(Duration::ZERO, max).unwrap())
            .count(Materialized::named("sliding"));
        b.build().unwrap();
    }

    #[test]
    fn the_first_window_ending_after_a_time() {
        let tumbling = TimeWindows::of(Duration::from_millis(10)).unwrap();
        assert_eq!(next_window_end(&tumbling, 0), 10);
        assert_eq!(next_window_end(&tumbling, 9), 10);
        assert_eq!(next_window_end(&tumbling, 10), 20);
        assert_eq!(next_window_end(&tumbling, -1), 0);
        assert_eq!(next_window_end(&tumbling, -10), 0);
        assert_eq!(next_window_end(&tumbling, -11), -10);
        let hopping = TimeWindows::of(Duration::from_millis(10))
            .unwrap()
            .advance_by(Duration::from_millis(4))
            .unwrap();
        // Windows start at multiples of 4 and last 10: ends 10, 14, 18, ...
        assert_eq!(next_window_end(&hopping, 10), 14);
        assert_eq!(next_window_end(&hopping, 13), 14);
        assert_eq!(next_window_end(&hopping, 14), 18);
        // The first representable window starts at the first multiple of 10.
        assert_eq!(next_window_end(&tumbling, i64::MIN), i64::MIN + 18);
        assert_eq!(next_window_end(&tumbling, i64::MAX), i64::MAX);
    }
}
