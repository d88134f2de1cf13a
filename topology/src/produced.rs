//! Parameter objects for sources, sinks and grouping ([`Consumed`],
//! [`Produced`], [`Grouped`]), default serdes from the types
//! ([`DefaultSerde`]), and the short forms of the DSL built on them.
//!
//! ```
//! use weir_topology::*;
//!
//! let mut b = StreamsBuilder::new();
//! b.stream_of::<String, String>("words")
//!     .group_by_key_default()
//!     .count(Materialized::named("word-counts"))
//!     .to_stream()
//!     .to_topic("word-counts-out");
//! // The same, with every serde spelled out:
//! let mut b2 = StreamsBuilder::new();
//! b2.stream::<String, String>("words", Serdes::string(), Serdes::string())
//!     .group_by_key(Serdes::string(), Serdes::string())
//!     .count(Materialized::named("word-counts"))
//!     .to_stream()
//!     .to("word-counts-out", Serdes::string(), Serdes::u64());
//! assert_eq!(b.build()?.describe("app"), b2.build()?.describe("app"));
//! # Ok::<(), TopologyError>(())
//! ```
//!
//! # Why these names
//!
//! The explicit forms (`stream(topic, key_serde, value_serde)`,
//! `to(topic, ..)`, `group_by_key(..)`, `table(topic, .., materialized)`)
//! keep their names and signatures: every existing topology uses them.
//! Rust has no overloading, so each short form needs a name of its own,
//! chosen to say what it takes:
//!
//! - `_of::<K, V>` (`stream_of`, `table_of`): the serdes come from the
//!   types, which the turbofish names (`builder.stream_of::<String,
//!   u64>("t")` reads as "a stream of String and u64").
//! - `_with(.., params)` (`stream_with`, `table_with`, `to_with`,
//!   `group_by_key_with`, `group_by_with`): a parameter object, as Kafka
//!   Streams' `stream(topic, Consumed)`, `to(topic, Produced)`,
//!   `groupByKey(Grouped)`.
//! - `to_topic(topic)`: the sink with default serdes (`to` is taken by
//!   the explicit form).
//! - `group_by_key_default()`: `group_by_key` is taken and takes serdes;
//!   a different word (`grouped()`, `by_key()`) would hide that it is the
//!   same operation.
//!
//! The defaults are [`DefaultSerde`]'s: only types whose encoding is
//! beyond doubt have one, and a serde type is JSON only when asked for
//! with [`Serdes::json`] (e.g. `Consumed::<String, Order>::with(
//! Serdes::string(), Serdes::json())`). Each parameter object has
//! `with(key_serde, value_serde)` (no defaults needed), `new()` /
//! `Default` (both from [`DefaultSerde`]), and `with_key_serde` /
//! `with_value_serde` to replace one of the two.
//!
//! [`StreamJoined`] (stream–stream joins) and [`Joined`] (stream–table
//! joins) are defined with their joins; they get their `new()` / `Default`
//! forms from [`DefaultSerde`] here.
//!
//! # Partitioners
//!
//! A [`Produced`] partitioner applies to stream sinks
//! ([`KStream::to_with_partitioner`]); a table sink has none
//! ([`KTable::to`] partitions by key), so [`KTable::to_with`] with a
//! partitioner is a build error rather than a partitioner silently
//! ignored.

use std::sync::Arc;

use crate::builder::{validate_name, TimestampExtractor};
use crate::error::TopologyError;
use crate::grouped::KGroupedStream;
use crate::join::{Joined, StreamJoined};
use crate::kstream::{KStream, StreamPartitioner};
use crate::ktable::{KTable, TableState};
use crate::materialized::Materialized;
use crate::serde::Serde;
use crate::{Data, StreamsBuilder};

// Re-exported at the crate root through `pub use produced::*` (lib.rs).
pub use crate::serde::{DefaultSerde, QueryCodec};

/// What every two-serde parameter object has: `Clone` (by hand, as a
/// derive would require `K: Clone, V: Clone`) and the setters that replace
/// one of its serdes.
macro_rules! serde_parameters {
    ($ty:ident { $($field:ident),* }) => {
        impl<K, V> Clone for $ty<K, V> {
            fn clone(&self) -> Self {
                $ty {
                    key_serde: self.key_serde.clone(),
                    value_serde: self.value_serde.clone(),
                    $($field: self.$field.clone(),)*
                }
            }
        }

        impl<K: 'static, V: 'static> $ty<K, V> {
            /// The same with this key serde.
            pub fn with_key_serde(self, key_serde: Serde<K>) -> Self {
                $ty { key_serde, ..self }
            }
            /// The same with this value serde.
            pub fn with_value_serde(self, value_serde: Serde<V>) -> Self {
                $ty { value_serde, ..self }
            }
        }
    };
}

/// `new()` and `Default` of a parameter object: its `with(..)` given the
/// types' default serdes ([`DefaultSerde`]), one per type parameter.
macro_rules! default_serdes {
    ($ty:ident<$($p:ident),+>, $doc:literal) => {
        impl<$($p: DefaultSerde),+> $ty<$($p),+> {
            #[doc = $doc]
            pub fn new() -> Self {
                $ty::with($($p::default_serde()),+)
            }
        }

        impl<$($p: DefaultSerde),+> Default for $ty<$($p),+> {
            fn default() -> Self {
                $ty::new()
            }
        }
    };
}

/// How a source topic is read: key and value serdes, optionally an event
/// time extractor and a name for the source processor (Kafka Streams'
/// `Consumed`).
///
/// ```
/// # use weir_topology::*;
/// #[derive(Clone, ::serde::Serialize, ::serde::Deserialize)]
/// struct Click { user: u32, at_ms: i64 }
/// let mut b = StreamsBuilder::new();
/// let clicks = b.stream_with(
///     "clicks",
///     Consumed::with(Serdes::string(), Serdes::json::<Click>())
///         .with_timestamp_extractor(|_, c: &Click, _| c.at_ms)
///         .with_name("clicks-source"),
/// );
/// // No default serde for Click: JSON only when asked for.
/// clicks.to_with("copy", Produced::with(Serdes::string(), Serdes::json()));
/// # b.build()?;
/// # Ok::<(), TopologyError>(())
/// ```
pub struct Consumed<K, V> {
    pub(crate) key_serde: Serde<K>,
    pub(crate) value_serde: Serde<V>,
    pub(crate) timestamp_extractor: Option<TimestampExtractor<K, V>>,
    pub(crate) name: Option<String>,
}

serde_parameters!(Consumed {
    timestamp_extractor,
    name
});
default_serdes!(Consumed<K, V>, "Read with the types' default serdes ([`DefaultSerde`]).");

impl<K: 'static, V: 'static> Consumed<K, V> {
    /// Read with these serdes.
    pub fn with(key_serde: Serde<K>, value_serde: Serde<V>) -> Self {
        Consumed {
            key_serde,
            value_serde,
            timestamp_extractor: None,
            name: None,
        }
    }
    /// Event time is `extractor(key, value, kafka_timestamp)` instead of
    /// the record's Kafka timestamp (as
    /// [`StreamsBuilder::stream_with_timestamps`]). Streams only: a table
    /// source rejects it when the topology is built.
    pub fn with_timestamp_extractor(self, extractor: impl Fn(&K, &V, i64) -> i64 + Send + Sync + 'static) -> Self {
        Consumed {
            timestamp_extractor: Some(Arc::new(extractor)),
            ..self
        }
    }
    /// Name the source processor (describe() and errors show it) instead
    /// of `KSTREAM-SOURCE-{index}`.
    pub fn with_name(self, name: &str) -> Self {
        Consumed {
            name: Some(name.to_string()),
            ..self
        }
    }
}

/// How records are written to a topic: key and value serdes, optionally a
/// partitioner, and a name for the sink processor (Kafka Streams'
/// `Produced`).
///
/// ```
/// # use weir_topology::*;
/// let mut b = StreamsBuilder::new();
/// b.stream_of::<u32, String>("in").to_with(
///     "out",
///     Produced::new().with_partitioner(|k, _, n| Some(k % n)).with_name("out-sink"),
/// );
/// # b.build()?;
/// # Ok::<(), TopologyError>(())
/// ```
pub struct Produced<K, V> {
    pub(crate) key_serde: Serde<K>,
    pub(crate) value_serde: Serde<V>,
    pub(crate) partitioner: Option<StreamPartitioner<K, V>>,
    pub(crate) name: Option<String>,
}

serde_parameters!(Produced { partitioner, name });
default_serdes!(Produced<K, V>, "Write with the types' default serdes ([`DefaultSerde`]).");

impl<K: 'static, V: 'static> Produced<K, V> {
    /// Write with these serdes.
    pub fn with(key_serde: Serde<K>, value_serde: Serde<V>) -> Self {
        Produced {
            key_serde,
            value_serde,
            partitioner: None,
            name: None,
        }
    }
    /// Choose each record's partition: `partitioner(key, value,
    /// partition_count)`, `None` for the default (by key); see
    /// [`KStream::to_with_partitioner`]. Stream sinks only.
    pub fn with_partitioner(self, partitioner: impl Fn(&K, &V, u32) -> Option<u32> + Send + Sync + 'static) -> Self {
        Produced {
            partitioner: Some(Arc::new(partitioner)),
            ..self
        }
    }
    /// Name the sink processor instead of `KSTREAM-SINK-{index}`.
    pub fn with_name(self, name: &str) -> Self {
        Produced {
            name: Some(name.to_string()),
            ..self
        }
    }
}

/// How a stream is grouped: the serdes of its repartition topic (if the
/// key was changed upstream) and that topic's name (Kafka Streams'
/// `Grouped`).
pub struct Grouped<K, V> {
    pub(crate) key_serde: Serde<K>,
    pub(crate) value_serde: Serde<V>,
    pub(crate) name: Option<String>,
}

serde_parameters!(Grouped { name });
default_serdes!(Grouped<K, V>, "Group with the types' default serdes ([`DefaultSerde`]).");

impl<K: 'static, V: 'static> Grouped<K, V> {
    /// Group with these serdes.
    pub fn with(key_serde: Serde<K>, value_serde: Serde<V>) -> Self {
        Grouped {
            key_serde,
            value_serde,
            name: None,
        }
    }
    /// If grouping repartitions, do it through
    /// `{application_id}-{name}-repartition` instead of a topic named after
    /// the aggregation's store, so that the topic keeps its name when the
    /// store is renamed or operators are added before it. No effect when
    /// the key was not changed upstream (nothing to repartition).
    pub fn with_name(self, name: &str) -> Self {
        Grouped {
            name: Some(name.to_string()),
            ..self
        }
    }
}

default_serdes!(
    StreamJoined<K, V, V2>,
    "The types' default serdes ([`DefaultSerde`]) for the key and both streams' values."
);
default_serdes!(
    Joined<K, V, VT>,
    "The types' default serdes ([`DefaultSerde`]) for the key, the stream's values and the table's values."
);

impl<K: Data, V: Data> KStream<K, V> {
    /// Name the operator this stream comes out of (Kafka Streams' `Named`):
    /// `describe()` and errors show `name` instead of a generated name such
    /// as `KSTREAM-FILTER-0000000003`, which changes when operators are
    /// added before it. A name that is invalid or already used by another
    /// operator is a `build()` error.
    pub fn named(self, name: &str) -> Self {
        rename_node(&self.graph, self.node, name);
        self
    }
}

impl<K: Data, V: Data, S: TableState> KTable<K, V, S> {
    /// Name the operator this table comes out of, as [`KStream::named`].
    pub fn named(self, name: &str) -> Self {
        rename_node(&self.graph, self.node, name);
        self
    }
}

/// Give graph node `node` the name a parameter object asked for, or record
/// why it cannot have it (reported by `build()`, never a panic).
fn rename_node(graph: &crate::builder::Graph, node: usize, name: &str) {
    let mut g = graph.borrow_mut();
    let error = if let Err(e) = validate_name(name) {
        Some(e)
    } else if g.nodes.iter().enumerate().any(|(i, n)| i != node && n.name == name) {
        Some(TopologyError::InvalidOperation {
            node: g.nodes[node].name.clone(),
            reason: format!("the processor name {name:?} is already used by another processor"),
        })
    } else {
        None
    };
    match error {
        Some(e) => g.errors.push(e),
        None => g.nodes[node].name = name.to_string(),
    }
}

impl StreamsBuilder {
    /// A stream of `topic` read with the types' default serdes:
    /// `builder.stream_of::<String, u64>("counts")`.
    pub fn stream_of<K: Data + DefaultSerde, V: Data + DefaultSerde>(&mut self, topic: &str) -> KStream<K, V> {
        self.stream_with(topic, Consumed::new())
    }

    /// A stream of `topic` read as `consumed` says.
    pub fn stream_with<K: Data, V: Data>(&mut self, topic: &str, consumed: Consumed<K, V>) -> KStream<K, V> {
        let Consumed {
            key_serde,
            value_serde,
            timestamp_extractor,
            name,
        } = consumed;
        let stream = match timestamp_extractor {
            Some(f) => self.stream_with_timestamps(topic, key_serde, value_serde, move |k, v, t| f(k, v, t)),
            None => self.stream(topic, key_serde, value_serde),
        };
        if let Some(name) = name {
            rename_node(&stream.graph, stream.node, &name);
        }
        stream
    }

    /// A table of `topic` read with the types' default serdes.
    pub fn table_of<K: Data + DefaultSerde, V: Data + DefaultSerde>(
        &mut self,
        topic: &str,
        materialized: Materialized,
    ) -> KTable<K, V> {
        self.table_with(topic, Consumed::new(), materialized)
    }

    /// A table of `topic` read as `consumed` says. A timestamp extractor is
    /// an error at `build()`: a table's store keeps no event time.
    pub fn table_with<K: Data, V: Data>(
        &mut self,
        topic: &str,
        consumed: Consumed<K, V>,
        materialized: Materialized,
    ) -> KTable<K, V> {
        let Consumed {
            key_serde,
            value_serde,
            timestamp_extractor,
            name,
        } = consumed;
        let table = self.table(topic, key_serde, value_serde, materialized);
        if timestamp_extractor.is_some() {
            table.graph.borrow_mut().node_error(
                table.node,
                "a table source takes no timestamp extractor (Consumed::with_timestamp_extractor)",
            );
        }
        if let Some(name) = name {
            rename_node(&table.graph, table.node, &name);
        }
        table
    }
}

impl<K: Data, V: Data> KStream<K, V> {
    /// Write every record to `topic` with the types' default serdes; a
    /// value (or key) the serde calls null, such as `None` of an
    /// `Option`, is written as a Kafka null.
    pub fn to_topic(self, topic: &str)
    where
        K: DefaultSerde,
        V: DefaultSerde,
    {
        self.to_with(topic, Produced::new())
    }

    /// Write every record to `topic` as `produced` says.
    pub fn to_with(self, topic: &str, produced: Produced<K, V>) {
        let graph = self.graph.clone();
        // A sink is exactly one node.
        let sink = graph.borrow().next_index();
        match produced.partitioner {
            Some(p) => self.to_with_partitioner(topic, produced.key_serde, produced.value_serde, move |k, v, n| {
                p(k, v, n)
            }),
            None => self.to(topic, produced.key_serde, produced.value_serde),
        }
        if let Some(name) = produced.name {
            rename_node(&graph, sink, &name);
        }
    }

    /// Group by the current key with the types' default serdes.
    pub fn group_by_key_default(self) -> KGroupedStream<K, V>
    where
        K: DefaultSerde,
        V: DefaultSerde,
    {
        self.group_by_key_with(Grouped::new())
    }

    /// Group by the current key as `grouped` says: if the key was changed
    /// upstream, the records go through the repartition topic it names
    /// (or, unnamed, the one the aggregation names after its store).
    pub fn group_by_key_with(self, grouped: Grouped<K, V>) -> KGroupedStream<K, V> {
        let Grouped {
            key_serde,
            value_serde,
            name,
        } = grouped;
        let stream = match name {
            Some(name) if self.repartition_required => self.repartition(&name, key_serde.clone(), value_serde.clone()),
            _ => self,
        };
        stream.group_by_key(key_serde, value_serde)
    }

    /// Group by a new key computed from each record (always repartitions),
    /// as `grouped` says.
    pub fn group_by_with<KO: Data>(
        self,
        f: impl Fn(&K, &V) -> KO + Send + Sync + 'static,
        grouped: Grouped<KO, V>,
    ) -> KGroupedStream<KO, V> {
        self.select_key(f).group_by_key_with(grouped)
    }
}

impl<K: Data, V: Data, S: TableState> KTable<K, V, S> {
    /// Write this table's changes to `topic` (deletions as tombstones, see
    /// [`KTable::to`]) with the types' default serdes.
    pub fn to_topic(&self, topic: &str)
    where
        K: DefaultSerde,
        V: DefaultSerde,
    {
        self.to_with(topic, Produced::new())
    }

    /// Write this table's changes to `topic` as `produced` says. A
    /// partitioner is a build error: table sinks partition by key.
    pub fn to_with(&self, topic: &str, produced: Produced<K, V>) {
        let sink = self.graph.borrow().next_index();
        self.to(topic, produced.key_serde, produced.value_serde);
        if produced.partitioner.is_some() {
            self.graph.borrow_mut().node_error(
                sink,
                "a table sink takes no partitioner (Produced::with_partitioner): it partitions by key",
            );
        }
        if let Some(name) = produced.name {
            rename_node(&self.graph, sink, &name);
        }
    }
}
