//! KStream: a typed record stream and its stateless operators.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt::Display;
use std::marker::PhantomData;
use std::rc::Rc;
use std::sync::Arc;

use crate::builder::{add_source, validate_name, Graph};
use crate::context::{Destination, ProcessorContext, DYNAMIC_TOPIC};
use crate::grouped::KGroupedStream;
use crate::node::{ChildSlot, Children, FnNode, Node, NodeFactory, SharedChildren};
use crate::serde::Serde;
use crate::topology::NodeKind;
use crate::Data;

/// A stream of keyed records. Operators consume the handle and return a new
/// one; use `clone()` to branch the same stream into several operators.
pub struct KStream<K, V> {
    pub(crate) graph: Graph,
    pub(crate) node: usize,
    pub(crate) slot: Arc<ChildSlot<K, V>>,
    /// The key was changed since the source: grouping must repartition.
    pub(crate) repartition_required: bool,
    pub(crate) _marker: PhantomData<fn(K, V)>,
}

impl<K, V> Clone for KStream<K, V> {
    fn clone(&self) -> Self {
        KStream {
            graph: self.graph.clone(),
            node: self.node,
            slot: self.slot.clone(),
            repartition_required: self.repartition_required,
            _marker: PhantomData,
        }
    }
}

impl<K: Data, V: Data> KStream<K, V> {
    /// The graph name of the node this stream comes out of.
    pub fn node_name(&self) -> String {
        self.graph.borrow().nodes[self.node].name.clone()
    }

    /// Add a processor node whose per-record behaviour is `f`.
    pub(crate) fn add_fn<KO: Data, VO: Data, F>(&self, kind: &str, key_changed: bool, f: F) -> KStream<KO, VO>
    where
        F: Fn(&mut ProcessorContext, K, V, &mut Children<KO, VO>) + Send + Sync + 'static,
    {
        let id = self
            .graph
            .borrow_mut()
            .add_node(kind, NodeKind::Processor, vec![self.node]);
        let out = ChildSlot::<KO, VO>::new();
        let f = Arc::new(f);
        let out2 = out.clone();
        self.slot.push(Arc::new(move |ictx| {
            Ok(Box::new(FnNode {
                f: f.clone(),
                children: out2.instantiate(ictx)?,
                _marker: PhantomData,
            }) as Box<dyn Node<K, V>>)
        }));
        self.derive(id, out, key_changed)
    }

    pub(crate) fn derive<KO, VO>(
        &self,
        node: usize,
        slot: Arc<ChildSlot<KO, VO>>,
        key_changed: bool,
    ) -> KStream<KO, VO> {
        KStream {
            graph: self.graph.clone(),
            node,
            slot,
            repartition_required: self.repartition_required || key_changed,
            _marker: PhantomData,
        }
    }

    /// Attach a node factory to this stream's output (for operators defined
    /// in other modules).
    pub(crate) fn attach(&self, factory: NodeFactory<K, V>) {
        self.slot.push(factory)
    }

    /// Keep the records for which `predicate` is true.
    pub fn filter(self, predicate: impl Fn(&K, &V) -> bool + Send + Sync + 'static) -> KStream<K, V> {
        let s = self.add_fn("KSTREAM-FILTER", false, move |ctx, k, v, out| {
            if predicate(&k, &v) {
                out.forward(ctx, k, v)
            }
        });
        self.passes_values_to(&s);
        s
    }

    /// `to` forwards this stream's values unchanged: values that are Kafka
    /// nulls here are nulls there (see `GraphBuilder::null_values`).
    pub(crate) fn passes_values_to<K2>(&self, to: &KStream<K2, V>) {
        self.graph.borrow_mut().inherit_null_check(self.node, to.node);
    }

    /// Drop the records for which `predicate` is true.
    pub fn filter_not(self, predicate: impl Fn(&K, &V) -> bool + Send + Sync + 'static) -> KStream<K, V> {
        self.filter(move |k, v| !predicate(k, v))
    }

    /// A new key and value per record. Marks the stream for repartitioning
    /// before a grouping.
    pub fn map<KO: Data, VO: Data>(self, f: impl Fn(K, V) -> (KO, VO) + Send + Sync + 'static) -> KStream<KO, VO> {
        self.add_fn("KSTREAM-MAP", true, move |ctx, k, v, out| {
            let (k2, v2) = f(k, v);
            out.forward(ctx, k2, v2)
        })
    }

    /// A new value per record; the key stays (no repartitioning).
    pub fn map_values<VO: Data>(self, f: impl Fn(&K, V) -> VO + Send + Sync + 'static) -> KStream<K, VO> {
        self.add_fn("KSTREAM-MAPVALUES", false, move |ctx, k, v, out| {
            let v2 = f(&k, v);
            out.forward(ctx, k, v2)
        })
    }

    /// A new value per record, or an error that sends the record to the
    /// dead-letter topic (with the error's text) while processing goes on.
    pub fn try_map_values<VO: Data, E: Display>(
        self,
        f: impl Fn(&K, V) -> Result<VO, E> + Send + Sync + 'static,
    ) -> KStream<K, VO> {
        self.add_fn("KSTREAM-MAPVALUES", false, move |ctx, k, v, out| match f(&k, v) {
            Ok(v2) => out.forward(ctx, k, v2),
            Err(e) => ctx.dead_letter(e.to_string()),
        })
    }

    /// Zero or more records per record.
    pub fn flat_map<KO: Data, VO: Data, I>(self, f: impl Fn(K, V) -> I + Send + Sync + 'static) -> KStream<KO, VO>
    where
        I: IntoIterator<Item = (KO, VO)>,
    {
        self.add_fn("KSTREAM-FLATMAP", true, move |ctx, k, v, out| {
            for (k2, v2) in f(k, v) {
                out.forward(ctx, k2, v2)
            }
        })
    }

    /// Zero or more values per record, keeping the key. Returning an
    /// `Option` is the common "parse or skip" case.
    pub fn flat_map_values<VO: Data, I>(self, f: impl Fn(&K, V) -> I + Send + Sync + 'static) -> KStream<K, VO>
    where
        I: IntoIterator<Item = VO>,
    {
        self.add_fn("KSTREAM-FLATMAPVALUES", false, move |ctx, k, v, out| {
            for v2 in f(&k, v) {
                out.forward(ctx, k.clone(), v2)
            }
        })
    }

    /// Replace the key. Marks the stream for repartitioning before a
    /// grouping.
    pub fn select_key<KO: Data>(self, f: impl Fn(&K, &V) -> KO + Send + Sync + 'static) -> KStream<KO, V> {
        let s = self.add_fn("KSTREAM-KEY-SELECT", true, move |ctx, k, v, out| {
            let k2 = f(&k, &v);
            out.forward(ctx, k2, v)
        });
        self.passes_values_to(&s);
        s
    }

    /// Look at each record without changing it.
    pub fn peek(self, f: impl Fn(&K, &V) + Send + Sync + 'static) -> KStream<K, V> {
        let s = self.add_fn("KSTREAM-PEEK", false, move |ctx, k, v, out| {
            f(&k, &v);
            out.forward(ctx, k, v)
        });
        self.passes_values_to(&s);
        s
    }

    /// A terminal operator: call `f` for each record (side effects only).
    pub fn for_each(self, f: impl Fn(&K, &V) + Send + Sync + 'static) {
        let _: KStream<K, V> = self.add_fn(
            "KSTREAM-FOREACH",
            false,
            move |_ctx, k, v, _out: &mut Children<K, V>| f(&k, &v),
        );
    }

    /// Split into named branches: each record goes to the first branch whose
    /// predicate it satisfies, or is dropped if none matches (add a
    /// catch-all last branch with `|_, _| true` to keep the rest).
    pub fn split(self) -> BranchedKStream<K, V> {
        BranchedKStream {
            stream: self,
            branches: Vec::new(),
        }
    }

    /// One stream of the records of both.
    pub fn merge(self, other: KStream<K, V>) -> KStream<K, V> {
        let id = self
            .graph
            .borrow_mut()
            .add_node("KSTREAM-MERGE", NodeKind::Processor, vec![self.node, other.node]);
        let out = ChildSlot::<K, V>::new();
        for parent in [&self, &other] {
            let out2 = out.clone();
            parent.slot.push(Arc::new(move |ictx| {
                let out3 = out2.clone();
                let shared = ictx.shared(id, move |ictx| Ok(Rc::new(RefCell::new(out3.instantiate(ictx)?))))?;
                Ok(Box::new(SharedChildren(shared)) as Box<dyn Node<K, V>>)
            }));
        }
        let mut s = self.derive(id, out, false);
        s.repartition_required = self.repartition_required || other.repartition_required;
        // Both inputs' nulls are nulls of the merge (same value type, so
        // either check recognises them; the other stream's if this has none).
        other.passes_values_to(&s);
        self.passes_values_to(&s);
        s
    }

    /// Write every record to `topic`.
    pub fn to(self, topic: &str, key_serde: Serde<K>, value_serde: Serde<V>) {
        let t = self.graph.borrow_mut().topic(topic, false);
        self.sink(t, key_serde, value_serde);
    }

    /// Write every record to `topic`, in the partition `partitioner(key,
    /// value, partition_count)` chooses (Kafka Streams' `StreamPartitioner`);
    /// `None` leaves the record to the default partitioning (Kafka's, by
    /// key). A partition out of range sends the record to the dead-letter
    /// topic instead.
    ///
    /// ```
    /// # use weir_topology::prelude::*;
    /// let mut b = StreamsBuilder::new();
    /// b.stream::<u32, String>("in", Serdes::u32(), Serdes::string())
    ///     .to_with_partitioner("out", Serdes::u32(), Serdes::string(), |k, _, n| Some(k % n));
    /// # b.build().unwrap();
    /// ```
    pub fn to_with_partitioner(
        self,
        topic: &str,
        key_serde: Serde<K>,
        value_serde: Serde<V>,
        partitioner: impl Fn(&K, &V, u32) -> Option<u32> + Send + Sync + 'static,
    ) {
        let t = self.graph.borrow_mut().topic(topic, false);
        self.sink_routed(SinkTopic::Fixed(t), key_serde, value_serde, Some(Arc::new(partitioner)));
    }

    /// Write every record to the topic `extractor(key, value)` names (Kafka
    /// Streams' `TopicNameExtractor`), partitioned by key. The topics must
    /// exist (weir creates only its own internal topics); a name that is
    /// not a valid topic name sends the record to the dead-letter topic.
    ///
    /// The topology does not know these topics in advance: a record carries
    /// its topic's name to the runtime, which produces it to the partition
    /// the producer's partitioner (Kafka's default, by key) chooses.
    pub fn to_dynamic(
        self,
        extractor: impl Fn(&K, &V) -> String + Send + Sync + 'static,
        key_serde: Serde<K>,
        value_serde: Serde<V>,
    ) {
        self.sink_routed(SinkTopic::Dynamic(Arc::new(extractor)), key_serde, value_serde, None);
    }

    pub(crate) fn sink(&self, topic: u32, key_serde: Serde<K>, value_serde: Serde<V>) {
        self.sink_routed(SinkTopic::Fixed(topic), key_serde, value_serde, None)
    }

    /// Add a sink node: to a topic of the topology or one chosen per record,
    /// with an optional partitioner.
    pub(crate) fn sink_routed(
        &self,
        topic: SinkTopic<K, V>,
        key_serde: Serde<K>,
        value_serde: Serde<V>,
        partitioner: Option<StreamPartitioner<K, V>>,
    ) {
        // A per-record topic is no topic of the topology: the node shows as
        // a processor named like a sink.
        let kind = match &topic {
            SinkTopic::Fixed(t) => NodeKind::Sink { topic: *t },
            SinkTopic::Dynamic(_) => NodeKind::Processor,
        };
        self.graph.borrow_mut().add_node("KSTREAM-SINK", kind, vec![self.node]);
        self.slot.push(Arc::new(move |_ictx| {
            Ok(Box::new(SinkNode {
                topic: topic.clone(),
                key_serde: key_serde.clone(),
                value_serde: value_serde.clone(),
                partitioner: partitioner.clone(),
                name: String::new(),
            }) as Box<dyn Node<K, V>>)
        }));
    }

    /// Write to an internal topic `{application_id}-{name}-repartition` and
    /// read it back, so that records are partitioned by their current key
    /// before the operators that follow (which run in a new sub-topology).
    pub fn repartition(self, name: &str, key_serde: Serde<K>, value_serde: Serde<V>) -> KStream<K, V> {
        self.repartition_via(name, key_serde, value_serde, None)
    }

    /// [`repartition`](Self::repartition) with the partition of each
    /// record chosen by `partitioner(key, value, partition_count)` (see
    /// [`to_with_partitioner`](Self::to_with_partitioner)).
    pub fn repartition_with_partitioner(
        self,
        name: &str,
        key_serde: Serde<K>,
        value_serde: Serde<V>,
        partitioner: impl Fn(&K, &V, u32) -> Option<u32> + Send + Sync + 'static,
    ) -> KStream<K, V> {
        self.repartition_via(name, key_serde, value_serde, Some(Arc::new(partitioner)))
    }

    pub(crate) fn repartition_via(
        self,
        name: &str,
        key_serde: Serde<K>,
        value_serde: Serde<V>,
        partitioner: Option<StreamPartitioner<K, V>>,
    ) -> KStream<K, V> {
        let t = self.graph.borrow_mut().topic(&format!("{name}-repartition"), true);
        self.sink_routed(SinkTopic::Fixed(t), key_serde.clone(), value_serde.clone(), partitioner);
        let (id, slot) = add_source(&self.graph, t, key_serde, value_serde, None);
        KStream {
            graph: self.graph.clone(),
            node: id,
            slot,
            repartition_required: false,
            _marker: PhantomData,
        }
    }

    /// Group by the current key. If the key was changed upstream, the
    /// aggregation that follows repartitions through an internal topic
    /// first, using these serdes.
    pub fn group_by_key(self, key_serde: Serde<K>, value_serde: Serde<V>) -> KGroupedStream<K, V> {
        KGroupedStream {
            stream: self,
            key_serde,
            value_serde,
        }
    }

    /// Group by a new key computed from each record (always repartitions).
    pub fn group_by<KO: Data>(
        self,
        f: impl Fn(&K, &V) -> KO + Send + Sync + 'static,
        key_serde: Serde<KO>,
        value_serde: Serde<V>,
    ) -> KGroupedStream<KO, V> {
        self.select_key(f).group_by_key(key_serde, value_serde)
    }
}

/// Chooses the partition of a record written to a topic: `(key, value,
/// partition count)` to a partition below the count, or `None` for the
/// default partitioning (Kafka Streams' `StreamPartitioner`).
pub type StreamPartitioner<K, V> = Arc<dyn Fn(&K, &V, u32) -> Option<u32> + Send + Sync>;

/// Chooses the topic of a record by name (Kafka Streams'
/// `TopicNameExtractor`).
pub type TopicNameExtractor<K, V> = Arc<dyn Fn(&K, &V) -> String + Send + Sync>;

/// Where a sink writes.
pub(crate) enum SinkTopic<K, V> {
    /// A topic of the topology (its index).
    Fixed(u32),
    /// A topic chosen per record.
    Dynamic(TopicNameExtractor<K, V>),
}

impl<K, V> Clone for SinkTopic<K, V> {
    fn clone(&self) -> Self {
        match self {
            SinkTopic::Fixed(t) => SinkTopic::Fixed(*t),
            SinkTopic::Dynamic(f) => SinkTopic::Dynamic(f.clone()),
        }
    }
}

/// Writes records to a topic through the task's record collector, with
/// the current record's headers.
struct SinkNode<K, V> {
    topic: SinkTopic<K, V>,
    key_serde: Serde<K>,
    value_serde: Serde<V>,
    partitioner: Option<StreamPartitioner<K, V>>,
    /// The last dynamic topic name (reused: no allocation per record when
    /// the extractor returns the same name).
    name: String,
}

impl<K, V> Node<K, V> for SinkNode<K, V>
where
    K: 'static,
    V: 'static,
{
    #[inline]
    fn process(&mut self, ctx: &mut ProcessorContext, key: K, value: V) {
        let ts = ctx.timestamp;
        let origin = ctx.origin();
        let (topic, topic_name) = match &self.topic {
            SinkTopic::Fixed(t) => (*t, None),
            SinkTopic::Dynamic(extract) => {
                let name = extract(&key, &value);
                if name != self.name {
                    if let Err(e) = validate_name(&name) {
                        return ctx.dead_letter(format!("the topic name extractor chose no valid topic: {e}"));
                    }
                    self.name = name;
                }
                (DYNAMIC_TOPIC, Some(self.name.as_str()))
            }
        };
        // A partitioner is asked only when the topic's partition count is
        // known (the runtime tells each task; not the bare engine, which
        // does not partition).
        let mut partition = None;
        if let Some(choose) = &self.partitioner {
            if let Some(count) = ctx.partition_count(topic) {
                match choose(&key, &value, count) {
                    Some(p) if p >= count => {
                        return ctx.dead_letter(format!(
                            "the partitioner chose partition {p} of a topic with {count} partitions"
                        ))
                    }
                    chosen => partition = chosen,
                }
            }
        }
        let (ks, vs) = (&self.key_serde, &self.value_serde);
        // A key or value its serde calls null (Serdes::optional's None) is
        // written as a Kafka null, not as an empty byte string.
        let write_key = (!ks.is_null(&key)).then_some(|out: &mut Vec<u8>| ks.serialize(&key, out));
        let write_value = (!vs.is_null(&value)).then_some(|out: &mut Vec<u8>| vs.serialize(&value, out));
        // A record's headers follow it; what is emitted at flush or
        // punctuation time has none, unless a processor's punctuation set
        // them.
        let headers =
            (!ctx.headers.is_empty() && (!ctx.emitting_on_time || ctx.punctuation_headers)).then_some(&ctx.headers);
        let to = Destination {
            topic,
            topic_name,
            partition,
            headers,
        };
        if let Err(e) = ctx.collector.push_to(to, ts, origin, write_key, write_value) {
            ctx.dead_letter(format!("serialization for sink failed: {e}"));
        }
    }
    fn flush(&mut self, _ctx: &mut ProcessorContext) {}
    fn punctuate(&mut self, _ctx: &mut ProcessorContext) {}
    fn close(&mut self, _ctx: &mut ProcessorContext) {}
}

type Predicate<K, V> = Arc<dyn Fn(&K, &V) -> bool + Send + Sync>;

/// Named branches under construction; see [`KStream::split`].
pub struct BranchedKStream<K, V> {
    stream: KStream<K, V>,
    branches: Vec<(String, Predicate<K, V>)>,
}

impl<K: Data, V: Data> BranchedKStream<K, V> {
    /// Add a branch named `name` taking the records that match `predicate`
    /// and no earlier branch.
    pub fn branch(mut self, name: &str, predicate: impl Fn(&K, &V) -> bool + Send + Sync + 'static) -> Self {
        self.branches.push((name.to_string(), Arc::new(predicate)));
        self
    }

    /// Finish with a last branch named `name` for every record no other
    /// branch took.
    pub fn default_branch(self, name: &str) -> BTreeMap<String, KStream<K, V>> {
        self.branch(name, |_, _| true).finish()
    }

    /// Finish; records that match no branch are dropped.
    pub fn finish(self) -> BTreeMap<String, KStream<K, V>> {
        let stream = self.stream;
        let id = stream
            .graph
            .borrow_mut()
            .add_node("KSTREAM-BRANCH", NodeKind::Processor, vec![stream.node]);
        let predicates: Arc<Vec<Predicate<K, V>>> = Arc::new(self.branches.iter().map(|(_, p)| p.clone()).collect());
        let slots: Vec<Arc<ChildSlot<K, V>>> = self.branches.iter().map(|_| ChildSlot::new()).collect();
        let mut out = BTreeMap::new();
        for ((name, _), slot) in self.branches.iter().zip(&slots) {
            // Each branch gets its own named pass-through node, so describe()
            // shows the branch names.
            let bid = stream
                .graph
                .borrow_mut()
                .add_node("KSTREAM-BRANCHCHILD", NodeKind::Processor, vec![id]);
            stream.graph.borrow_mut().nodes[bid].name = format!("{}-{name}", stream.graph.borrow().nodes[id].name);
            let branch = stream.derive(bid, slot.clone(), false);
            stream.passes_values_to(&branch);
            out.insert(name.clone(), branch);
        }
        let slots2 = slots.clone();
        stream.slot.push(Arc::new(move |ictx| {
            let mut outputs = Vec::with_capacity(slots2.len());
            for s in &slots2 {
                outputs.push(s.instantiate(ictx)?);
            }
            Ok(Box::new(BranchNode {
                predicates: predicates.clone(),
                outputs,
            }) as Box<dyn Node<K, V>>)
        }));
        out
    }
}

struct BranchNode<K, V> {
    predicates: Arc<Vec<Predicate<K, V>>>,
    outputs: Vec<Children<K, V>>,
}

impl<K: Data, V: Data> Node<K, V> for BranchNode<K, V> {
    fn process(&mut self, ctx: &mut ProcessorContext, key: K, value: V) {
        if let Some(i) = self.predicates.iter().position(|p| p(&key, &value)) {
            self.outputs[i].forward(ctx, key, value)
        }
    }
    fn flush(&mut self, ctx: &mut ProcessorContext) {
        self.outputs.iter_mut().for_each(|o| o.flush(ctx))
    }
    fn punctuate(&mut self, ctx: &mut ProcessorContext) {
        self.outputs.iter_mut().for_each(|o| o.punctuate(ctx))
    }
    fn close(&mut self, ctx: &mut ProcessorContext) {
        self.outputs.iter_mut().for_each(|o| o.close(ctx))
    }
}
