//! GlobalKTable: a table of the latest value per key of a topic, every
//! partition of it, on every instance (Kafka Streams' `GlobalKTable`).
//!
//! A [`KTable`](crate::KTable) is partitioned: task `p` holds the keys of
//! partition `p`, so a stream joining it must be co-partitioned with it,
//! and a stream whose key was changed must be repartitioned first. A global
//! table is not: each instance reads the whole topic into one *global
//! store*, so a stream can join it on any key it computes from its records
//! ([`KStream::join_global`]'s key selector), without a repartition and
//! whatever the two topics' partition counts. The price is that every
//! instance holds (and reads) the whole topic, which suits small, slowly
//! changing reference data (countries, products, users).
//!
//! The global store is not part of any sub-topology and has no task: the
//! runtime fills it before any task processes a record (up to the topic's
//! end offsets at start) and keeps it up to date while it runs, from a
//! reader of its own that is assigned every partition (no consumer group).
//! The topic is the store's changelog: the store is never logged.
//! Interleaving of table updates and stream records is therefore not
//! deterministic across topics (as in Kafka Streams): a stream record sees
//! whatever the global updater has applied when it is processed.
//!
//! Nulls, as in Kafka Streams' stream–global-table joins: a stream record
//! whose value is a Kafka null is skipped; a key selector returning a
//! null key (per the table's key serde) matches nothing, so the inner join
//! skips the record and the left join emits it with no table value. Skips
//! are counted in `TaskCounters::null_records_skipped`.

use std::marker::PhantomData;
use std::rc::Rc;
use std::sync::Arc;

use crate::builder::{validate_name, GraphBuilder, NullCheck, StreamsBuilder};
use crate::context::ProcessorContext;
use crate::error::TopologyError;
use crate::grouped::decode_stored;
use crate::kstream::KStream;
use crate::ktable::decode_table_record;
use crate::materialized::Materialized;
use crate::node::{ChildSlot, Children, Node};
use crate::serde::Serde;
use crate::store::GlobalStoreRef;
use crate::topology::{GlobalRecordCheck, NodeKind};
use crate::Data;

pub use crate::topology::GlobalStoreDef;

/// A table of every partition of a topic, replicated on every instance;
/// see the module docs. Made by [`StreamsBuilder::global_table`], used by
/// [`KStream::join_global`] and [`KStream::left_join_global`].
pub struct GlobalKTable<K, V> {
    graph: crate::builder::Graph,
    store: String,
    key_serde: Serde<K>,
    value_serde: Serde<V>,
    _marker: PhantomData<fn(K, V)>,
}

impl<K, V> Clone for GlobalKTable<K, V> {
    fn clone(&self) -> Self {
        GlobalKTable {
            graph: self.graph.clone(),
            store: self.store.clone(),
            key_serde: self.key_serde.clone(),
            value_serde: self.value_serde.clone(),
            _marker: PhantomData,
        }
    }
}

impl<K, V> GlobalKTable<K, V> {
    /// The name of the global store (what interactive queries and the test
    /// driver's `key_value_store` name it by).
    pub fn store_name(&self) -> &str {
        &self.store
    }
}

impl StreamsBuilder {
    /// A global table of `topic`: the latest value per key of every
    /// partition, on every instance; a record with no value deletes its
    /// key. The store is `materialized`'s name, or
    /// `GLOBALKTABLE-STATE-STORE-{n}` (the n-th global table of the
    /// topology). It is never logged (the topic is its changelog), so
    /// `Materialized::without_logging` and retention change nothing.
    ///
    /// Records whose key or value does not decode with the serdes are not
    /// stored (the global updater skips and counts them): a global table
    /// has no task whose dead-letter topic they could go to.
    pub fn global_table<K: Data, V: Data>(
        &mut self,
        topic: &str,
        key_serde: Serde<K>,
        value_serde: Serde<V>,
        materialized: Materialized,
    ) -> GlobalKTable<K, V> {
        let store = {
            let mut g = self.graph.borrow_mut();
            let index = g.globals.len();
            let store = materialized
                .name
                .clone()
                .unwrap_or_else(|| format!("GLOBALKTABLE-STATE-STORE-{index:010}"));
            if let Err(e) = validate_name(&store) {
                g.errors.push(e);
            }
            if materialized.history_retention_ms.is_some() {
                g.errors.push(TopologyError::InvalidOperation {
                    node: format!("global table {topic:?}"),
                    reason: "a global table cannot be versioned (Materialized::versioned): as in Kafka Streams, \
                             only a source KTable can"
                        .into(),
                });
            }
            let t = g.topic(topic, false);
            if g.globals.iter().any(|d| d.topic == t) {
                g.errors.push(TopologyError::InvalidOperation {
                    node: format!("topic {topic:?}"),
                    reason: "already the source of a global table (declare it once and reuse it)".into(),
                });
            }
            if g.globals.iter().any(|d| d.store == store) {
                g.errors.push(TopologyError::DuplicateStore(store.clone()));
            }
            let (ks, vs) = (key_serde.clone(), value_serde.clone());
            let check: GlobalRecordCheck = Arc::new(move |key: Option<&[u8]>, value: Option<&[u8]>| {
                decode_table_record("global table", &ks, &vs, key, value).map(|_| ())
            });
            g.globals.push(GlobalStoreDef {
                store: store.clone(),
                topic: t,
                source_name: format!("KSTREAM-GLOBALSOURCE-{index:010}"),
                processor_name: format!("KTABLE-GLOBALSOURCE-{index:010}"),
                check,
            });
            g.record_store_format(&store, &key_serde, &value_serde);
            store
        };
        GlobalKTable {
            graph: self.graph.clone(),
            store,
            key_serde,
            value_serde,
            _marker: PhantomData,
        }
    }
}

/// Checks that need the whole graph, run by `build()`: a global store's
/// name must not be a task store's too, and a global table's topic must
/// not also be read by a stream or table (its records would then be both
/// partitioned work and replicated state: declare one and derive the
/// other).
pub(crate) fn check_globals(g: &mut GraphBuilder) {
    let mut errors = Vec::new();
    for d in &g.globals {
        if g.stores.iter().any(|s| s.name == d.store) {
            errors.push(TopologyError::DuplicateStore(d.store.clone()));
        }
        if g.sources.iter().any(|s| s.topic == d.topic) {
            errors.push(TopologyError::InvalidOperation {
                node: format!("topic {:?}", g.topics[d.topic as usize].name),
                reason: "the source of a global table cannot also be read as a stream or table".into(),
            });
        }
    }
    g.errors.extend(errors);
}

impl<K: Data, V: Data> KStream<K, V> {
    /// Inner join with a global table: for each record, `key_selector`
    /// computes the table key to look up; a record whose table key is
    /// present leaves as `joiner(key, value, table_value)` with the
    /// stream's key and timestamp, the others are dropped. No repartition
    /// is needed, even after the stream's key was changed: every instance
    /// holds the whole table. Table updates trigger no output.
    pub fn join_global<KG: Data, VG: Data, VO: Data>(
        self,
        table: &GlobalKTable<KG, VG>,
        key_selector: impl Fn(&K, &V) -> KG + Send + Sync + 'static,
        joiner: impl Fn(&K, V, VG) -> VO + Send + Sync + 'static,
    ) -> KStream<K, VO> {
        self.global_join(
            "KSTREAM-JOIN",
            false,
            table,
            key_selector,
            move |k, v, vg: Option<VG>| vg.map(|vg| joiner(k, v, vg)),
        )
    }

    /// Left join with a global table: as [`join_global`](Self::join_global),
    /// but every record leaves, as `joiner(key, value, None)` when the
    /// selected key is absent (or null).
    pub fn left_join_global<KG: Data, VG: Data, VO: Data>(
        self,
        table: &GlobalKTable<KG, VG>,
        key_selector: impl Fn(&K, &V) -> KG + Send + Sync + 'static,
        joiner: impl Fn(&K, V, Option<VG>) -> VO + Send + Sync + 'static,
    ) -> KStream<K, VO> {
        self.global_join("KSTREAM-LEFTJOIN", true, table, key_selector, move |k, v, vg| {
            Some(joiner(k, v, vg))
        })
    }

    fn global_join<KG: Data, VG: Data, VO: Data>(
        self,
        kind: &str,
        left: bool,
        table: &GlobalKTable<KG, VG>,
        key_selector: impl Fn(&K, &V) -> KG + Send + Sync + 'static,
        joiner: impl Fn(&K, V, Option<VG>) -> Option<VO> + Send + Sync + 'static,
    ) -> KStream<K, VO> {
        let (id, value_is_null) = {
            let mut g = self.graph.borrow_mut();
            // The join node does not connect to the global store: that
            // would tie every stream joining it into one sub-topology.
            let id = g.add_node(kind, NodeKind::Processor, vec![self.node]);
            if !Rc::ptr_eq(&self.graph, &table.graph) {
                let name = g.nodes[id].name.clone();
                g.errors.push(TopologyError::InvalidOperation {
                    node: name,
                    reason: "the global table belongs to another StreamsBuilder".into(),
                });
            }
            (id, g.null_check::<V>(self.node))
        };
        let out = ChildSlot::<K, VO>::new();
        let store = table.store.clone();
        let key_serde = table.key_serde.clone();
        let value_serde = table.value_serde.clone();
        let key_selector = Arc::new(key_selector);
        let joiner = Arc::new(joiner);
        let out2 = out.clone();
        self.attach(Arc::new(move |ictx| {
            let global = ictx.supplier.global(&store)?;
            Ok(Box::new(GlobalJoinNode {
                store: global,
                name: Arc::from(store.as_str()),
                key_serde: key_serde.clone(),
                value_serde: value_serde.clone(),
                value_is_null: value_is_null.clone(),
                left,
                key_selector: key_selector.clone(),
                joiner: joiner.clone(),
                children: out2.instantiate(ictx)?,
                kbuf: Vec::new(),
                vbuf: Vec::new(),
            }) as Box<dyn Node<K, V>>)
        }));
        self.derive(id, out, false)
    }
}

/// One task's instance of a stream–global-table join: looks the selected
/// key up in the shared global store.
struct GlobalJoinNode<K, V, KG, VG, VO, S, F> {
    store: GlobalStoreRef,
    name: Arc<str>,
    key_serde: Serde<KG>,
    value_serde: Serde<VG>,
    /// Recognises the stream's null values, if it may have any.
    value_is_null: Option<NullCheck<V>>,
    left: bool,
    key_selector: Arc<S>,
    joiner: Arc<F>,
    children: Children<K, VO>,
    kbuf: Vec<u8>,
    vbuf: Vec<u8>,
}

impl<K, V, KG, VG, VO, S, F> Node<K, V> for GlobalJoinNode<K, V, KG, VG, VO, S, F>
where
    K: Data,
    V: Data,
    KG: Data,
    VG: Data,
    VO: Data,
    S: Fn(&K, &V) -> KG,
    F: Fn(&K, V, Option<VG>) -> Option<VO>,
{
    fn process(&mut self, ctx: &mut ProcessorContext, key: K, value: V) {
        if self.value_is_null.as_ref().is_some_and(|is_null| is_null(&value)) {
            ctx.counters.null_records_skipped += 1;
            return;
        }
        let table_key = (self.key_selector)(&key, &value);
        let table_value = if self.key_serde.is_null(&table_key) {
            if !self.left {
                ctx.counters.null_records_skipped += 1;
                return;
            }
            None
        } else {
            self.kbuf.clear();
            if let Err(e) = self.key_serde.serialize(&table_key, &mut self.kbuf) {
                return ctx.dead_letter(format!("global join key serialization failed: {e}"));
            }
            match self.store.get_into(&self.kbuf, &mut self.vbuf) {
                Ok(true) => match decode_stored(&self.value_serde, &self.name, &self.vbuf) {
                    Ok(v) => Some(v),
                    Err(e) => return ctx.fail(e),
                },
                Ok(false) => None,
                Err(e) => return ctx.fail(e),
            }
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
