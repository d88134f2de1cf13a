//! The built topology: a graph description (for describe(), sub-topology
//! assignment and internal topic names) plus the node factories a task is
//! instantiated from.

use std::fmt::{self, Write as _};
use std::sync::Arc;

use crate::context::{InitContext, ProcessorContext, StoreRef};
use crate::error::TopologyError;
use crate::store::{StoreSpec, StoreSupplier};

/// What a graph node is, for describe() and for wiring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeKind {
    Source { topic: u32 },
    Processor,
    Sink { topic: u32 },
}

#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub name: String,
    pub kind: NodeKind,
    pub parents: Vec<usize>,
    pub stores: Vec<String>,
}

/// A topic the topology reads or writes. Internal topics (repartition)
/// are named `{application_id}-{name}` once the application id is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicDef {
    pub name: String,
    pub internal: bool,
}

/// A source node of a task: takes raw bytes, decodes them with its serdes
/// and feeds its typed subtree.
pub trait SourceNode {
    fn process_raw(&mut self, ctx: &mut ProcessorContext, key: Option<&[u8]>, value: Option<&[u8]>);
    fn flush(&mut self, ctx: &mut ProcessorContext);
    fn punctuate(&mut self, ctx: &mut ProcessorContext);
    fn close(&mut self, ctx: &mut ProcessorContext);
}

pub(crate) type SourceFactory =
    Arc<dyn Fn(&mut InitContext<'_>) -> Result<Box<dyn SourceNode>, TopologyError> + Send + Sync>;

pub(crate) struct SourceEntry {
    pub(crate) topic: u32,
    pub(crate) factory: SourceFactory,
}

/// A connected part of the graph between repartition topics; one task per
/// (sub-topology, partition) runs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubTopology {
    pub id: usize,
    /// Indexes into [`Topology::topics`].
    pub source_topics: Vec<u32>,
    pub sink_topics: Vec<u32>,
    pub nodes: Vec<usize>,
    pub stores: Vec<String>,
}

/// Checks one record of a global table's topic: `Err(reason)` if its key
/// or value does not decode with the table's serdes (a tombstone's absent
/// value is fine).
pub(crate) type GlobalRecordCheck = Arc<dyn Fn(Option<&[u8]>, Option<&[u8]>) -> Result<(), String> + Send + Sync>;

/// A global store: the store of a [`crate::GlobalKTable`] and the topic it
/// is read from. Not part of any sub-topology: every instance reads every
/// partition of the topic into its own copy, and no task is created for
/// it (Kafka Streams' "global store").
#[derive(Clone)]
pub struct GlobalStoreDef {
    /// The store name (also what interactive queries name it by).
    pub store: String,
    /// Index into [`Topology::topics`] of the source topic, which is the
    /// store's changelog: the store has no changelog topic of its own.
    pub topic: u32,
    /// describe()'s names of the source node and of the processor that
    /// writes the store.
    pub source_name: String,
    pub processor_name: String,
    pub(crate) check: GlobalRecordCheck,
}

impl fmt::Debug for GlobalStoreDef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GlobalStoreDef")
            .field("store", &self.store)
            .field("topic", &self.topic)
            .finish()
    }
}

impl GlobalStoreDef {
    /// Whether a record of the source topic belongs in the store: its key
    /// and (unless it is a tombstone) its value decode with the table's
    /// serdes. A record that does not is skipped by the updater (logged
    /// and counted), as Kafka Streams' global consumer skips records its
    /// deserialization handler lets it continue past.
    pub fn check_record(&self, key: Option<&[u8]>, value: Option<&[u8]>) -> Result<(), String> {
        (self.check)(key, value)
    }
}

/// (store, query codec) of the stores whose keys and values the DSL knows
/// ([`GraphBuilder::record_store_format`](crate::builder::GraphBuilder)).
pub(crate) type StoreFormats = Vec<(String, crate::serde::QueryCodec)>;

pub struct TopologyInner {
    pub(crate) nodes: Vec<NodeInfo>,
    pub(crate) topics: Vec<TopicDef>,
    pub(crate) stores: Vec<StoreSpec>,
    pub(crate) sources: Vec<SourceEntry>,
    pub(crate) subtopologies: Vec<SubTopology>,
    pub(crate) store_formats: StoreFormats,
    pub(crate) globals: Vec<GlobalStoreDef>,
}

impl TopologyInner {
    pub(crate) fn store(&self, name: &str) -> Option<&StoreSpec> {
        self.stores.iter().find(|s| s.name == name)
    }
}

/// A built topology. Cheap to clone and shareable between threads: every
/// task instantiates its own processors from it.
#[derive(Clone)]
pub struct Topology(pub(crate) Arc<TopologyInner>);

impl fmt::Debug for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // No application to name internal topics after: a placeholder.
        f.write_str(&self.describe("${application_id}"))
    }
}

impl Topology {
    pub fn topics(&self) -> &[TopicDef] {
        &self.0.topics
    }
    pub fn subtopologies(&self) -> &[SubTopology] {
        &self.0.subtopologies
    }
    pub fn stores(&self) -> &[StoreSpec] {
        &self.0.stores
    }
    pub fn nodes(&self) -> &[NodeInfo] {
        &self.0.nodes
    }

    /// The global stores (global tables) and their source topics.
    pub fn global_stores(&self) -> &[GlobalStoreDef] {
        &self.0.globals
    }

    /// The global store named `name`, if there is one.
    pub fn global_store(&self, name: &str) -> Option<&GlobalStoreDef> {
        self.0.globals.iter().find(|g| g.store == name)
    }

    /// The serde names (key, value) of a key-value store the DSL created
    /// (aggregations, tables), e.g. `("u32", "u64")`: what an interactive
    /// query needs to turn a key typed by a person into store bytes and the
    /// stored value into JSON.
    pub fn store_format(&self, store: &str) -> Option<(&'static str, &'static str)> {
        self.query_codec(store)
            .map(|c| (c.key_serde_name(), c.value_serde_name()))
    }

    /// How to query a store the DSL created, through the serdes it was
    /// built with (see [`QueryCodec`](crate::serde::QueryCodec)).
    pub fn query_codec(&self, store: &str) -> Option<&crate::serde::QueryCodec> {
        self.0.store_formats.iter().find(|(s, _)| s == store).map(|(_, c)| c)
    }

    /// The Kafka topic name of topic `index` for an application.
    pub fn topic_name(&self, index: u32, application_id: &str) -> String {
        let t = &self.0.topics[index as usize];
        if t.internal {
            crate::names::internal_topic(application_id, &t.name)
        } else {
            t.name.clone()
        }
    }

    /// Every topic the application creates for itself, by Kafka name:
    /// repartition topics, store changelogs, the dead-letter and the
    /// checkpoints topic (see [`crate::names`]).
    pub fn internal_topics(&self, application_id: &str) -> Vec<String> {
        let mut out: Vec<String> = (0..self.0.topics.len() as u32)
            .filter(|i| self.0.topics[*i as usize].internal)
            .map(|i| self.topic_name(i, application_id))
            .collect();
        out.extend(
            self.0
                .stores
                .iter()
                .filter(|s| s.logged)
                .map(|s| crate::names::changelog_topic(application_id, &s.name)),
        );
        out.push(crate::names::dlq_topic(application_id));
        out.push(crate::names::checkpoints_topic(application_id));
        out
    }

    /// The index of the topic with Kafka name `name` for an application.
    pub fn topic_index(&self, name: &str, application_id: &str) -> Option<u32> {
        (0..self.0.topics.len() as u32).find(|i| self.topic_name(*i, application_id) == name)
    }

    /// The changelog topic of a store: `{application_id}-{store}-changelog`.
    pub fn changelog_topic(application_id: &str, store: &str) -> String {
        crate::names::changelog_topic(application_id, store)
    }

    /// Topics read from outside (not produced by this topology).
    pub fn external_source_topics(&self) -> Vec<u32> {
        let mut out: Vec<u32> = self
            .0
            .subtopologies
            .iter()
            .flat_map(|s| s.source_topics.iter().copied())
            .filter(|t| !self.0.topics[*t as usize].internal)
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Create the processors of one task.
    pub fn instantiate(
        &self,
        subtopology: usize,
        partition: i32,
        supplier: &mut dyn StoreSupplier,
    ) -> Result<TaskNodes, TopologyError> {
        let inner = &*self.0;
        let mut ictx = InitContext {
            supplier,
            topology: inner,
            stores: Vec::new(),
            shared: Default::default(),
            schedules: Vec::new(),
            partition,
        };
        let sub = &inner.subtopologies[subtopology];
        let mut sources = Vec::new();
        for entry in inner.sources.iter().filter(|e| sub.source_topics.contains(&e.topic)) {
            sources.push((entry.topic, (entry.factory)(&mut ictx)?));
        }
        // Stores of the sub-topology that no processor asked for (declared
        // but unused) are still created, so that they are restored too.
        for name in &sub.stores {
            let spec = inner.store(name).expect("sub-topology stores are declared");
            match spec.kind {
                crate::store::StoreKind::KeyValue | crate::store::StoreKind::Versioned { .. } => {
                    ictx.key_value_store(name)?;
                }
                crate::store::StoreKind::Window { .. } => {
                    ictx.window_store(name)?;
                }
            }
        }
        Ok(TaskNodes {
            sources,
            stores: ictx.stores,
        })
    }

    /// A human-readable description of the sub-topologies, their sources,
    /// processors, stores and sinks, in the spirit of Kafka Streams'
    /// `Topology#describe()`, with the real names of the internal topics of
    /// `application_id` (repartition topics, changelogs, dead letters,
    /// checkpoints).
    pub fn describe(&self, application_id: &str) -> String {
        let inner = &*self.0;
        let mut out = String::from("Topologies:\n");
        for sub in &inner.subtopologies {
            let _ = writeln!(out, "   Sub-topology: {}", sub.id);
            for &n in &sub.nodes {
                let node = &inner.nodes[n];
                let children: Vec<&str> = inner
                    .nodes
                    .iter()
                    .filter(|c| c.parents.contains(&n))
                    .map(|c| c.name.as_str())
                    .collect();
                match &node.kind {
                    NodeKind::Source { topic } => {
                        let _ = writeln!(
                            out,
                            "    Source: {} (topics: [{}])",
                            node.name,
                            self.topic_name(*topic, application_id)
                        );
                    }
                    NodeKind::Processor => {
                        let _ = writeln!(
                            out,
                            "    Processor: {} (stores: [{}])",
                            node.name,
                            node.stores.join(", ")
                        );
                    }
                    NodeKind::Sink { topic } => {
                        let _ = writeln!(
                            out,
                            "    Sink: {} (topic: {})",
                            node.name,
                            self.topic_name(*topic, application_id)
                        );
                    }
                }
                if !children.is_empty() {
                    let _ = writeln!(out, "      --> {}", children.join(", "));
                } else if !matches!(node.kind, NodeKind::Sink { .. }) {
                    let _ = writeln!(out, "      --> none");
                }
                if !node.parents.is_empty() {
                    let parents: Vec<&str> = node.parents.iter().map(|p| inner.nodes[*p].name.as_str()).collect();
                    let _ = writeln!(out, "      <-- {}", parents.join(", "));
                }
            }
            out.push('\n');
        }
        if !inner.globals.is_empty() {
            // Kafka Streams shows each global store as a sub-topology "for
            // global store (will not generate tasks)"; here they get a
            // section of their own, so that sub-topology numbers stay task
            // numbers.
            out.push_str("Global stores:\n");
            for g in &inner.globals {
                let topic = self.topic_name(g.topic, application_id);
                let _ = writeln!(
                    out,
                    "   Global store: {} (key-value; not logged: its source topic {topic} is its changelog; every \
                     instance reads every partition; no tasks)",
                    g.store
                );
                let _ = writeln!(out, "    Source: {} (topics: [{topic}])", g.source_name);
                let _ = writeln!(out, "      --> {}", g.processor_name);
                let _ = writeln!(out, "    Processor: {} (stores: [{}])", g.processor_name, g.store);
                let _ = writeln!(out, "      --> none");
                let _ = writeln!(out, "      <-- {}", g.source_name);
            }
            out.push('\n');
        }
        if !inner.stores.is_empty() {
            out.push_str("Stores:\n");
            for s in &inner.stores {
                let kind = match s.kind {
                    crate::store::StoreKind::KeyValue => "key-value".to_string(),
                    crate::store::StoreKind::Window { retention_ms } => format!("window, retention {retention_ms} ms"),
                    crate::store::StoreKind::Versioned { history_retention_ms } => {
                        format!("versioned key-value, history {history_retention_ms} ms")
                    }
                };
                let log = if s.logged {
                    format!("changelog {}", crate::names::changelog_topic(application_id, &s.name))
                } else {
                    "not logged".to_string()
                };
                let _ = writeln!(out, "    {} ({kind}; {log})", s.name);
            }
        }
        let _ = writeln!(
            out,
            "Dead letters: {}\nCheckpoints: {}",
            crate::names::dlq_topic(application_id),
            crate::names::checkpoints_topic(application_id)
        );
        out
    }
}

/// The processors and stores of one task.
pub struct TaskNodes {
    sources: Vec<(u32, Box<dyn SourceNode>)>,
    stores: Vec<(String, StoreRef)>,
}

impl TaskNodes {
    /// Feed one raw record from source topic `topic` (after
    /// [`ProcessorContext::set_record`]).
    #[inline]
    pub fn process(&mut self, ctx: &mut ProcessorContext, topic: u32, key: Option<&[u8]>, value: Option<&[u8]>) {
        if let Some((_, source)) = self.sources.iter_mut().find(|(t, _)| *t == topic) {
            source.process_raw(ctx, key, value);
        }
    }

    /// Commit time: every node forwards what it cached and stages its
    /// stores; then any store no node owns is staged. Changelog records
    /// land in `ctx.changelog`.
    pub fn flush(&mut self, ctx: &mut ProcessorContext) {
        ctx.emitting_on_time = true;
        for (_, s) in &mut self.sources {
            s.flush(ctx);
        }
        ctx.emitting_on_time = false;
        for (name, store) in &self.stores {
            match store.flush() {
                Ok(records) => {
                    let name: Arc<str> = Arc::from(name.as_str());
                    ctx.changelog.extend(records.into_iter().map(|r| (name.clone(), r)));
                }
                Err(e) => ctx.fail(e),
            }
        }
    }

    /// Let time-driven nodes (suppression, punctuators) emit what is due.
    pub fn punctuate(&mut self, ctx: &mut ProcessorContext) {
        ctx.emitting_on_time = true;
        for (_, s) in &mut self.sources {
            s.punctuate(ctx);
        }
        ctx.emitting_on_time = false;
    }

    pub fn close(&mut self, ctx: &mut ProcessorContext) {
        for (_, s) in &mut self.sources {
            s.close(ctx);
        }
    }

    pub fn stores(&self) -> &[(String, StoreRef)] {
        &self.stores
    }

    /// True if any store's write cache is over its limit.
    pub fn wants_flush(&self) -> bool {
        self.stores.iter().any(|(_, s)| s.with_state(|s| s.wants_flush()))
    }
}

#[cfg(test)]
mod naming_tests {
    use crate::prelude::*;

    #[test]
    fn describe_and_internal_topics_use_the_applications_names() {
        let mut b = StreamsBuilder::new();
        b.stream::<String, String>("words", Serdes::string(), Serdes::string())
            .group_by(|_, w| w.clone(), Serdes::string(), Serdes::string())
            .count(Materialized::named("word-counts"))
            .to_stream()
            .map_values(|_, n| n.to_string())
            .to("counts", Serdes::string(), Serdes::string());
        let t = b.build().unwrap();
        let text = t.describe("wc");
        assert!(text.contains("(topic: wc-word-counts-repartition)"), "{text}");
        assert!(
            text.contains("word-counts (key-value; changelog wc-word-counts-changelog)"),
            "{text}"
        );
        assert!(
            text.ends_with("Dead letters: wc-dlq\nCheckpoints: wc-checkpoints\n"),
            "{text}"
        );
        assert!(!text.contains("${application_id}"), "{text}");
        assert_eq!(
            t.internal_topics("wc"),
            vec![
                "wc-word-counts-repartition".to_string(),
                "wc-word-counts-changelog".to_string(),
                "wc-dlq".to_string(),
                "wc-checkpoints".to_string(),
            ]
        );
    }
}
