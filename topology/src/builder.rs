//! StreamsBuilder: where a topology starts, and the graph bookkeeping that
//! every DSL operator goes through.

use std::any::Any;
use std::cell::RefCell;
use std::collections::HashMap;
use std::marker::PhantomData;
use std::rc::Rc;
use std::sync::Arc;

use crate::context::ProcessorContext;
use crate::error::TopologyError;
use crate::kstream::KStream;
use crate::ktable::KTable;
use crate::materialized::Materialized;
use crate::node::{ChildSlot, Children};
use crate::serde::Serde;
use crate::store::{StoreKind, StoreSpec, StoreToken};
use crate::topology::{
    NodeInfo, NodeKind, SourceEntry, SourceFactory, SourceNode, SubTopology, TopicDef, Topology, TopologyInner,
};
use crate::Data;

/// The graph under construction, shared by the builder and every stream
/// handle derived from it.
pub(crate) struct GraphBuilder {
    pub(crate) nodes: Vec<NodeInfo>,
    pub(crate) topics: Vec<TopicDef>,
    pub(crate) stores: Vec<StoreSpec>,
    pub(crate) sources: Vec<SourceEntry>,
    pub(crate) errors: Vec<TopologyError>,
    /// (store, query codec) of stores whose keys and values the DSL knows,
    /// for interactive queries ([`GraphBuilder::record_store_format`]).
    pub(crate) store_formats: crate::topology::StoreFormats,
    /// Per graph node: a [`NullCheck`] of the values leaving it, type-erased
    /// (`NullCheck<V>` in an `Rc<dyn Any>`). Sources set it from their
    /// value serde ([`Serde::is_null`]) and operators that pass values on
    /// unchanged (filter, peek, select_key, branches, merge) copy it, so a
    /// stream–table join knows which stream values are Kafka nulls (which
    /// it skips, as Kafka Streams does). A value made by user code (map,
    /// map_values, ...) has no check: it is a value, not a null.
    pub(crate) null_values: HashMap<usize, Rc<dyn Any>>,
    /// Global stores (`StreamsBuilder::global_table`): outside every
    /// sub-topology, so kept apart from `nodes` and `stores`.
    pub(crate) globals: Vec<crate::topology::GlobalStoreDef>,
}

/// Tells whether a value is a Kafka null (see [`GraphBuilder::null_values`]).
pub(crate) type NullCheck<V> = Arc<dyn Fn(&V) -> bool + Send + Sync>;

pub(crate) type Graph = Rc<RefCell<GraphBuilder>>;

/// Kafka topic and store names may only use these characters.
pub(crate) fn validate_name(name: &str) -> Result<(), TopologyError> {
    let bad = |reason: &str| {
        Err(TopologyError::InvalidName {
            name: name.to_string(),
            reason: reason.to_string(),
        })
    };
    if name.is_empty() {
        return bad("must not be empty");
    }
    if name.len() > 200 {
        return bad("must be at most 200 characters");
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return bad(&format!(
            "character {c:?} is not allowed (use a-z, A-Z, 0-9, '.', '_', '-')"
        ));
    }
    Ok(())
}

impl GraphBuilder {
    /// Record that the operator at graph node `node` cannot work as used:
    /// `build()` reports it (a construction error never panics).
    pub(crate) fn node_error(&mut self, node: usize, reason: impl Into<String>) {
        let node = self.nodes[node].name.clone();
        self.errors.push(TopologyError::InvalidOperation {
            node,
            reason: reason.into(),
        });
    }

    /// Add a node named `{kind}-{index:010}` (Kafka Streams' convention), so
    /// that names, and the store and topic names derived from them, are the
    /// same every time the same program builds the topology.
    pub(crate) fn add_node(&mut self, kind: &str, node_kind: NodeKind, parents: Vec<usize>) -> usize {
        let id = self.nodes.len();
        self.nodes.push(NodeInfo {
            name: format!("{kind}-{id:010}"),
            kind: node_kind,
            parents,
            stores: Vec::new(),
        });
        id
    }

    /// Record how to tell a null value among the values leaving `node`.
    pub(crate) fn set_null_check<V: 'static>(&mut self, node: usize, check: NullCheck<V>) {
        self.null_values.insert(node, Rc::new(check));
    }

    /// `to` passes on the values of `from` unchanged: same null check.
    pub(crate) fn inherit_null_check(&mut self, from: usize, to: usize) {
        if let Some(c) = self.null_values.get(&from).cloned() {
            self.null_values.insert(to, c);
        }
    }

    /// The null check of the values leaving `node`, if they may be null.
    pub(crate) fn null_check<V: 'static>(&self, node: usize) -> Option<NullCheck<V>> {
        self.null_values.get(&node)?.downcast_ref::<NullCheck<V>>().cloned()
    }

    pub(crate) fn next_index(&self) -> usize {
        self.nodes.len()
    }

    pub(crate) fn topic(&mut self, name: &str, internal: bool) -> u32 {
        if let Some(i) = self
            .topics
            .iter()
            .position(|t| t.name == name && t.internal == internal)
        {
            return i as u32;
        }
        if let Err(e) = validate_name(name) {
            self.errors.push(e);
        }
        self.topics.push(TopicDef {
            name: name.to_string(),
            internal,
        });
        (self.topics.len() - 1) as u32
    }

    pub(crate) fn add_store(&mut self, spec: StoreSpec) {
        if let Err(e) = validate_name(&spec.name) {
            self.errors.push(e);
        }
        if self.stores.iter().any(|s| s.name == spec.name) {
            self.errors.push(TopologyError::DuplicateStore(spec.name.clone()));
            return;
        }
        self.stores.push(spec);
    }

    pub(crate) fn connect_store(&mut self, node: usize, store: &str) {
        if !self.nodes[node].stores.iter().any(|s| s == store) {
            self.nodes[node].stores.push(store.to_string());
        }
    }

    /// The store name for a stateful operator: the given name, or one
    /// derived from the operator's node index. Only source tables keep
    /// versioned stores ([`Materialized::versioned`]): any other operator
    /// given one fails `build()`, naming the operator.
    pub(crate) fn store_name(&mut self, materialized: &Materialized, kind: &str) -> String {
        if materialized.history_retention_ms.is_some() {
            self.errors.push(TopologyError::InvalidOperation {
                node: format!("{kind}-{:010}", self.next_index()),
                reason: "Materialized::versioned is for source tables (StreamsBuilder::table and its short forms); \
                         this operator keeps an unversioned store"
                    .into(),
            });
        }
        self.table_store_name(materialized, kind)
    }

    /// [`store_name`](Self::store_name) for a source table, which may be
    /// versioned.
    pub(crate) fn table_store_name(&self, materialized: &Materialized, kind: &str) -> String {
        materialized
            .name
            .clone()
            .unwrap_or_else(|| format!("{kind}-STATE-STORE-{:010}", self.next_index()))
    }
}

/// Where every topology starts: declare source streams and tables, then
/// [`StreamsBuilder::build`].
pub struct StreamsBuilder {
    pub(crate) graph: Graph,
}

impl Default for StreamsBuilder {
    fn default() -> Self {
        Self::new()
    }
}

/// Gives a record's event time from its key, value and Kafka timestamp.
pub type TimestampExtractor<K, V> = Arc<dyn Fn(&K, &V, i64) -> i64 + Send + Sync>;

struct Source<K, V> {
    key_serde: Serde<K>,
    value_serde: Serde<V>,
    extractor: Option<TimestampExtractor<K, V>>,
    children: Children<K, V>,
}

impl<K: Data, V: Data> Source<K, V> {
    #[inline]
    fn decode_and_forward(&mut self, ctx: &mut ProcessorContext, key: Option<&[u8]>, value: Option<&[u8]>) {
        // A null key or value decodes only if the serde has an absent
        // value (Serdes::optional, unit, ignored, json of an Option);
        // otherwise the record is dead-lettered with a reason that says so.
        let k = match self.key_serde.deserialize_key(key) {
            Ok(k) => k,
            Err(e) => return ctx.dead_letter(format!("key deserialization failed ({}): {e}", self.key_serde.name())),
        };
        let v = match self.value_serde.deserialize_value(value) {
            Ok(v) => v,
            Err(e) => {
                return ctx.dead_letter(format!(
                    "value deserialization failed ({}): {e}",
                    self.value_serde.name()
                ))
            }
        };
        let ts = match &self.extractor {
            Some(f) => f(&k, &v, ctx.timestamp()),
            None => ctx.timestamp(),
        };
        ctx.observe_event_time(ts);
        self.children.forward(ctx, k, v);
    }
}

impl<K: Data, V: Data> SourceNode for Source<K, V> {
    #[inline]
    fn process_raw(&mut self, ctx: &mut ProcessorContext, key: Option<&[u8]>, value: Option<&[u8]>) {
        self.decode_and_forward(ctx, key, value);
        // The record's headers go with it and no further.
        ctx.end_record();
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

/// Add a source node reading `topic` and return its output slot.
pub(crate) fn add_source<K: Data, V: Data>(
    graph: &Graph,
    topic: u32,
    key_serde: Serde<K>,
    value_serde: Serde<V>,
    extractor: Option<TimestampExtractor<K, V>>,
) -> (usize, Arc<ChildSlot<K, V>>) {
    let mut g = graph.borrow_mut();
    if g.sources.iter().any(|s| s.topic == topic) {
        let name = g.topics[topic as usize].name.clone();
        g.errors.push(TopologyError::InvalidOperation {
            node: format!("topic {name:?}"),
            reason: "already a source of this topology (read it once and reuse the stream)".into(),
        });
    }
    let id = g.add_node("KSTREAM-SOURCE", NodeKind::Source { topic }, vec![]);
    let vs = value_serde.clone();
    g.set_null_check::<V>(id, Arc::new(move |v: &V| vs.is_null(v)));
    let slot = ChildSlot::<K, V>::new();
    let out = slot.clone();
    let factory: SourceFactory = Arc::new(move |ictx| {
        Ok(Box::new(Source {
            key_serde: key_serde.clone(),
            value_serde: value_serde.clone(),
            extractor: extractor.clone(),
            children: out.instantiate(ictx)?,
        }) as Box<dyn SourceNode>)
    });
    g.sources.push(SourceEntry { topic, factory });
    (id, slot)
}

impl StreamsBuilder {
    pub fn new() -> Self {
        StreamsBuilder {
            graph: Rc::new(RefCell::new(GraphBuilder {
                nodes: Vec::new(),
                topics: Vec::new(),
                stores: Vec::new(),
                sources: Vec::new(),
                errors: Vec::new(),
                store_formats: Vec::new(),
                null_values: HashMap::new(),
                globals: Vec::new(),
            })),
        }
    }

    /// A stream of the records of `topic`. Records whose key or value does
    /// not decode go to the dead-letter topic.
    pub fn stream<K: Data, V: Data>(
        &mut self,
        topic: &str,
        key_serde: Serde<K>,
        value_serde: Serde<V>,
    ) -> KStream<K, V> {
        self.stream_from(topic, key_serde, value_serde, None)
    }

    /// A stream of `topic` whose event time is `extractor(key, value,
    /// kafka_timestamp)` instead of the Kafka record timestamp (for records
    /// that carry their own event time, such as a JSON `timestamp` field).
    pub fn stream_with_timestamps<K: Data, V: Data>(
        &mut self,
        topic: &str,
        key_serde: Serde<K>,
        value_serde: Serde<V>,
        extractor: impl Fn(&K, &V, i64) -> i64 + Send + Sync + 'static,
    ) -> KStream<K, V> {
        self.stream_from(topic, key_serde, value_serde, Some(Arc::new(extractor)))
    }

    fn stream_from<K: Data, V: Data>(
        &mut self,
        topic: &str,
        key_serde: Serde<K>,
        value_serde: Serde<V>,
        extractor: Option<TimestampExtractor<K, V>>,
    ) -> KStream<K, V> {
        let t = self.graph.borrow_mut().topic(topic, false);
        let (id, slot) = add_source(&self.graph, t, key_serde, value_serde, extractor);
        KStream {
            graph: self.graph.clone(),
            node: id,
            slot,
            repartition_required: false,
            _marker: PhantomData,
        }
    }

    /// A table of the latest value per key of `topic`, materialized in a
    /// queryable store. A record with no value deletes its key.
    pub fn table<K: Data, V: Data>(
        &mut self,
        topic: &str,
        key_serde: Serde<K>,
        value_serde: Serde<V>,
        materialized: Materialized,
    ) -> KTable<K, V> {
        crate::ktable::source_table(self, topic, key_serde, value_serde, materialized)
    }

    /// Declare a store for user processors ([`KStream::process`]).
    pub fn add_state_store(&mut self, spec: StoreSpec) {
        self.graph.borrow_mut().add_store(spec);
    }

    /// Declare a key-value store with a changelog (shorthand).
    pub fn add_key_value_store(&mut self, name: &str) {
        self.add_state_store(StoreSpec {
            name: name.to_string(),
            kind: StoreKind::KeyValue,
            logged: true,
        });
    }

    /// Declare a key-value store with a changelog, with the serdes of its
    /// keys and values, and get its [`StoreToken`]: list it in
    /// [`KStream::process`] by [`StoreToken::name`] and open it with
    /// [`ProcessorApi::store`](crate::ProcessorApi::store) or
    /// [`InitContext::store`](crate::InitContext::store) as a view of exactly
    /// these types. The serdes also make the store queryable.
    pub fn add_key_value_store_typed<K: 'static, V: 'static>(
        &mut self,
        name: &str,
        key_serde: Serde<K>,
        value_serde: Serde<V>,
    ) -> StoreToken<K, V> {
        self.add_key_value_store(name);
        self.graph
            .borrow_mut()
            .record_store_format(name, &key_serde, &value_serde);
        StoreToken::new(name, key_serde, value_serde)
    }

    /// Finish: check the graph, split it into sub-topologies and freeze it.
    /// Errors recorded by the DSL calls (bad names, duplicate stores,
    /// unknown stores) are reported here, the first one first.
    pub fn build(self) -> Result<Topology, TopologyError> {
        let g = Rc::try_unwrap(self.graph).map(|c| c.into_inner()).unwrap_or_else(|rc| {
            let mut g = rc.borrow_mut();
            GraphBuilder {
                nodes: std::mem::take(&mut g.nodes),
                topics: std::mem::take(&mut g.topics),
                stores: std::mem::take(&mut g.stores),
                sources: std::mem::take(&mut g.sources),
                errors: std::mem::take(&mut g.errors),
                store_formats: std::mem::take(&mut g.store_formats),
                null_values: HashMap::new(),
                globals: std::mem::take(&mut g.globals),
            }
        });
        let mut g = g;
        crate::global_table::check_globals(&mut g);
        if let Some(e) = g.errors.into_iter().next() {
            return Err(e);
        }
        if g.sources.is_empty() {
            return Err(TopologyError::Empty);
        }
        for node in &g.nodes {
            for s in &node.stores {
                if !g.stores.iter().any(|spec| &spec.name == s) {
                    return Err(TopologyError::UnknownStore(s.clone()));
                }
            }
        }
        let subtopologies = split_subtopologies(&g.nodes, &g.stores);
        Ok(Topology(Arc::new(TopologyInner {
            nodes: g.nodes,
            topics: g.topics,
            stores: g.stores,
            sources: g.sources,
            subtopologies,
            store_formats: g.store_formats,
            globals: g.globals,
        })))
    }
}

/// Connected components of the graph, joining nodes linked by an edge or by
/// a shared store; repartition topics (a sink and a source with no edge
/// between them) separate components.
fn split_subtopologies(nodes: &[NodeInfo], stores: &[StoreSpec]) -> Vec<SubTopology> {
    let mut parent: Vec<usize> = (0..nodes.len()).collect();
    fn find(p: &mut [usize], mut x: usize) -> usize {
        while p[x] != x {
            p[x] = p[p[x]];
            x = p[x];
        }
        x
    }
    fn union(p: &mut [usize], a: usize, b: usize) {
        let (ra, rb) = (find(p, a), find(p, b));
        if ra != rb {
            let (lo, hi) = if ra < rb { (ra, rb) } else { (rb, ra) };
            p[hi] = lo;
        }
    }
    for (i, n) in nodes.iter().enumerate() {
        for &q in &n.parents {
            union(&mut parent, i, q);
        }
    }
    for s in stores {
        let users: Vec<usize> = (0..nodes.len())
            .filter(|i| nodes[*i].stores.contains(&s.name))
            .collect();
        for w in users.windows(2) {
            union(&mut parent, w[0], w[1]);
        }
    }
    let mut roots: Vec<usize> = Vec::new();
    for i in 0..nodes.len() {
        let r = find(&mut parent, i);
        if !roots.contains(&r) {
            roots.push(r);
        }
    }
    roots
        .iter()
        .enumerate()
        .map(|(id, &root)| {
            let members: Vec<usize> = (0..nodes.len()).filter(|i| find(&mut parent, *i) == root).collect();
            let mut source_topics = Vec::new();
            let mut sink_topics = Vec::new();
            let mut sub_stores: Vec<String> = Vec::new();
            for &m in &members {
                match nodes[m].kind {
                    NodeKind::Source { topic } => source_topics.push(topic),
                    NodeKind::Sink { topic } => {
                        if !sink_topics.contains(&topic) {
                            sink_topics.push(topic)
                        }
                    }
                    NodeKind::Processor => {}
                }
                for s in &nodes[m].stores {
                    if !sub_stores.contains(s) {
                        sub_stores.push(s.clone());
                    }
                }
            }
            SubTopology {
                id,
                source_topics,
                sink_topics,
                nodes: members,
                stores: sub_stores,
            }
        })
        .collect()
}
