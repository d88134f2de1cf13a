//! Foreign-key table–table joins (Kafka Streams' KIP-213):
//! [`KTable::fk_join`] and [`KTable::fk_left_join`].
//!
//! Each row of the left table (`K → V`) references one row of the right
//! table (`KO → VO`) through a key taken from its value
//! (`foreign_key(&V) -> KO`); the result is a table keyed like the left
//! one, `K → joiner(V, VO)`. The two tables need not be co-partitioned: a
//! left row lives in the partition of `K`, the right row it references in
//! the partition of `KO`. So the join is a conversation between the two
//! through two internal topics, as in Kafka Streams
//! (`foreignkeyjoin/SubscriptionSendProcessorSupplier`,
//! `SubscriptionReceiveProcessorSupplier`,
//! `SubscriptionJoinProcessorSupplier`, `ForeignTableJoinProcessorSupplier`,
//! `ResponseJoinProcessorSupplier` in apache/kafka trunk of October 2024,
//! 4.0.0-SNAPSHOT, commit 1eb7644):
//!
//! 1. **Left side, registration** (`KTABLE-FK-JOIN-SUBSCRIPTION-REGISTRATION`):
//!    every change of a left row sends a [`Subscription`] "`K` subscribes to
//!    `KO`" to the topic `{name}-subscription-registration`, keyed by the
//!    serialized foreign key (so it lands in the right row's partition),
//!    with a 128-bit hash of the new left value and an instruction. A row
//!    whose foreign key changed first unsubscribes from the old one.
//! 2. **Right side** (`KTABLE-FK-JOIN-SUBSCRIPTION-PROCESSOR`): the
//!    subscription is recorded in the subscription store
//!    `{name}-subscription-store` (key `KO` + `K`, so that the subscribers of
//!    one `KO` are a prefix range) or deleted from it, and answered, as the
//!    instruction says, with a [`Response`] carrying the right row's
//!    current value and the subscription's hash, keyed by `K`, to the topic
//!    `{name}-subscription-response`.
//! 3. **Right side, updates** (`KTABLE-FK-JOIN-FOREIGN-PROCESSOR`): every
//!    change of a right row is sent to each of its subscribers (a prefix
//!    scan of the subscription store), with each subscriber's hash.
//! 4. **Left side, resolution**
//!    (`KTABLE-FK-JOIN-SUBSCRIPTION-RESPONSE-RESOLVER`): a response whose
//!    hash is not the hash of the left row's *current* value is stale (the
//!    row changed after the subscription was sent, and the response to the
//!    newer subscription is on its way) and is dropped; otherwise the
//!    joined row (or a tombstone) is emitted.
//!
//! What is emitted, per change (Kafka Streams' instructions):
//!
//! | change of the left row | inner join | left join |
//! |---|---|---|
//! | new row, right row present | `joiner(v, vo)` | `joiner(v, Some(vo))` |
//! | new row, right row absent | nothing | `joiner(v, None)` |
//! | update (same or new foreign key), right row present | `joiner(v, vo)` | `joiner(v, Some(vo))` |
//! | update, right row absent | a tombstone (whether or not a row was emitted before: the left side cannot know) | `joiner(v, None)` |
//! | delete of an existing row | a tombstone (even if no joined row existed, as Kafka) | a tombstone |
//! | delete of a row that never existed | nothing | nothing |
//!
//! | change of a right row | inner join | left join |
//! |---|---|---|
//! | update | `joiner(v, vo)` for every subscribed left row | `joiner(v, Some(vo))` for each |
//! | delete | a tombstone for every subscribed left row | `joiner(v, None)` for each |
//!
//! One deliberate difference from Kafka Streams: when a left-join row
//! changes its foreign key, Kafka Streams unsubscribes from the old key
//! with "delete and propagate", whose response emits an intermediate
//! `joiner(v, None)` before the response from the new key emits
//! `joiner(v, Some(vo))`; the two responses come from different
//! partitions, so in a multi-partition deployment the intermediate record
//! may even arrive last and stay as the result. weir unsubscribes without
//! a response (as Kafka Streams does for inner joins): the new key's
//! response alone gives the row. Kafka Streams also sends a subscription
//! with a null foreign key for a deleted left-join row (a second
//! tombstone); weir's foreign keys are never null and one tombstone is
//! sent.
//!
//! weir's tables do not carry old values (a change is `(K, Option<V>)`),
//! so the registration node keeps what Kafka Streams gets from
//! `sendOldValues` and from the left table's value getter in its own
//! logged store `{name}-left-values`: per left key, the foreign key it is
//! subscribed to and the current value. The resolver reads the current
//! value (and hashes it) from there, so the left table need not be
//! materialized; it needs a value serde (source tables, aggregations and
//! joins have one), which is also what the hash is computed over. The
//! right table must be materialized (its store answers subscriptions).
//!
//! The hash is MurmurHash3 x64 128 (seed 104729) of the serialized left
//! value, bit for bit Kafka Streams' `Murmur3.hash128`, implemented here
//! and checked against Kafka's test vectors: a documented, stable
//! function (the hash crosses topics and is stored, so it must not change
//! between versions or processes, which rules out `ahash`).
//!
//! Partitioning: the subscription is keyed by the foreign key serialized
//! with the right table's key serde and the response by the left key
//! serialized with the left table's key serde, and weir writes keyed
//! records with Kafka's default partitioner (`murmur2(key) % partitions`).
//! So a subscription reaches the task holding the right row, and a
//! response the task holding the left row, provided the subscription topic
//! has the right table's topic's partition count, the response topic the
//! left table's, and the two tables' topics were written with the default
//! partitioner (a table topic written with a custom partitioner would need
//! the left row's partition carried in the subscription, as Kafka Streams'
//! version 1 wrapper does; weir does not do that). The run plan gives a
//! new internal topic the partition count of the external topics its
//! reader reads, which is exactly that: the subscription topic is read
//! with the right table's topic, the response topic with the left
//! table's. (In the test driver every topic has one partition.)
//!
//! Timestamps: as for every weir table, rows are stamped with the task's
//! stream time when they leave a store; with inputs in timestamp order a
//! joined row carries the timestamp of the input that caused it.

use std::marker::PhantomData;
use std::ops::Bound;
use std::rc::Rc;
use std::sync::Arc;

use crate::builder::add_source;
use crate::context::{InitContext, ProcessorContext};
use crate::error::TopologyError;
use crate::grouped::decode_stored;
use crate::kstream::KStream;
use crate::ktable::{Derived, Joinable, KTable, Stored, TableState};
use crate::materialized::Materialized;
use crate::node::{ChildSlot, Children, Node};
use crate::serde::{Serde, SerdeError, SerdeImpl, Serdes};
use crate::store::{KvStoreRef, StoreError, StoreKind, StoreSpec};
use crate::table_join::forward_flushed;
use crate::topology::NodeKind;
use crate::Data;

/// How a foreign-key join keeps its result and names its internal topics
/// and stores.
///
/// The internal names derive from a base name: the one given to
/// [`FkJoined::named`], else the result store's name if the result is
/// materialized under a name, else `KTABLE-FK-JOIN-{index}` after the
/// operator's position in the topology. From it: the topics
/// `{name}-subscription-registration` and `{name}-subscription-response`
/// (prefixed with the application id, like repartition topics) and the
/// stores `{name}-subscription-store` and `{name}-left-values`. Naming
/// the join keeps those names (and so the topics' data) when the program
/// changes elsewhere.
///
/// `S` is the state of the result table: [`Stored`] for
/// [`FkJoined::materialized`], [`Derived`] for [`FkJoined::unmaterialized`].
pub struct FkJoined<R, S: TableState = Stored> {
    result: Option<(Materialized, Serde<R>)>,
    name: Option<String>,
    _state: PhantomData<S>,
}

impl<R: 'static> FkJoined<R, Stored> {
    /// Materialize the join result in the store `materialized` describes,
    /// its values written with `value_serde`: the result then forwards its
    /// changes at commit, can be queried and joined.
    pub fn materialized(materialized: Materialized, value_serde: Serde<R>) -> Self {
        FkJoined {
            result: Some((materialized, value_serde)),
            name: None,
            _state: PhantomData,
        }
    }

    /// The same materialization, typed as a [`Derived`] result: for a
    /// program that chooses at run time whether to materialize (both
    /// branches then have one type). The result keeps its store (and
    /// [`KTable::store_name`]) but cannot be joined.
    pub fn into_derived(self) -> FkJoined<R, Derived> {
        FkJoined {
            result: self.result,
            name: self.name,
            _state: PhantomData,
        }
    }
}

impl<R: 'static> FkJoined<R, Derived> {
    /// Do not materialize the result: each joined row (or tombstone) is
    /// forwarded as the response that produced it is resolved.
    pub fn unmaterialized() -> Self {
        FkJoined {
            result: None,
            name: None,
            _state: PhantomData,
        }
    }
}

impl<R: 'static, S: TableState> FkJoined<R, S> {
    /// The base name of the join's internal topics and stores (see the
    /// type's docs).
    pub fn named(self, name: &str) -> Self {
        FkJoined {
            name: Some(name.to_string()),
            ..self
        }
    }
}

type Extractor<V, KO> = dyn Fn(&V) -> KO + Send + Sync;
type InnerJoiner<V, VO, R> = dyn Fn(&V, &VO) -> R + Send + Sync;
type LeftJoiner<V, VO, R> = dyn Fn(&V, Option<&VO>) -> R + Send + Sync;

/// The user's joiner, by kind.
enum FkJoiner<V, VO, R> {
    Inner(Arc<InnerJoiner<V, VO, R>>),
    Left(Arc<LeftJoiner<V, VO, R>>),
}

impl<V, VO, R> Clone for FkJoiner<V, VO, R> {
    fn clone(&self) -> Self {
        match self {
            FkJoiner::Inner(f) => FkJoiner::Inner(f.clone()),
            FkJoiner::Left(f) => FkJoiner::Left(f.clone()),
        }
    }
}

impl<K: Data, V: Data, S: TableState> KTable<K, V, S> {
    /// Inner foreign-key join: for every row `(k, v)` of this table whose
    /// foreign key `foreign_key(&v)` is a key of `other` with value `vo`,
    /// a row `(k, joiner(&v, &vo))`, kept up to date as either table
    /// changes (a change of a right row updates every left row that
    /// references it). See the module docs for what is emitted when.
    ///
    /// This table needs a value serde (it is hashed and stored); `other`
    /// must be materialized. The tables need not be co-partitioned.
    ///
    /// ```
    /// # use weir_topology::*;
    /// let mut b = StreamsBuilder::new();
    /// let orders = b.table::<String, String>("orders", Serdes::string(), Serdes::string(), Materialized::named("orders"));
    /// let customers = b.table::<String, String>("customers", Serdes::string(), Serdes::string(), Materialized::named("customers"));
    /// orders
    ///     .fk_join(
    ///         &customers,
    ///         |order| order.split(',').next().unwrap_or("").to_string(),
    ///         |order, name| format!("{order} by {name}"),
    ///         FkJoined::unmaterialized().named("orders-customers"),
    ///     )
    ///     .to("orders-with-names", Serdes::string(), Serdes::string());
    /// let text = b.build()?.describe("app");
    /// assert!(text.contains("(topic: app-orders-customers-subscription-registration)"));
    /// assert!(text.contains("(topic: app-orders-customers-subscription-response)"));
    /// # Ok::<(), TopologyError>(())
    /// ```
    pub fn fk_join<KO: Data, VO: Data, R: Data, SO: Joinable, SR: TableState>(
        &self,
        other: &KTable<KO, VO, SO>,
        foreign_key: impl Fn(&V) -> KO + Send + Sync + 'static,
        joiner: impl Fn(&V, &VO) -> R + Send + Sync + 'static,
        joined: FkJoined<R, SR>,
    ) -> KTable<K, R, SR> {
        self.fk_join_with(other, Arc::new(foreign_key), FkJoiner::Inner(Arc::new(joiner)), joined)
    }

    /// Left foreign-key join: a row `(k, joiner(&v, vo))` for every row
    /// `(k, v)` of this table, with `vo` the value of the referenced row of
    /// `other`, `None` while there is none. Requirements as for
    /// [`KTable::fk_join`].
    pub fn fk_left_join<KO: Data, VO: Data, R: Data, SO: Joinable, SR: TableState>(
        &self,
        other: &KTable<KO, VO, SO>,
        foreign_key: impl Fn(&V) -> KO + Send + Sync + 'static,
        joiner: impl Fn(&V, Option<&VO>) -> R + Send + Sync + 'static,
        joined: FkJoined<R, SR>,
    ) -> KTable<K, R, SR> {
        self.fk_join_with(other, Arc::new(foreign_key), FkJoiner::Left(Arc::new(joiner)), joined)
    }

    fn fk_join_with<KO: Data, VO: Data, R: Data, SO: Joinable, SR: TableState>(
        &self,
        other: &KTable<KO, VO, SO>,
        foreign_key: Arc<Extractor<V, KO>>,
        joiner: FkJoiner<V, VO, R>,
        joined: FkJoined<R, SR>,
    ) -> KTable<K, R, SR> {
        let graph = self.graph.clone();
        let left_join = matches!(joiner, FkJoiner::Left(_));
        // Names and stores; errors are recorded for build() to report.
        let (base, left_values, subscriptions, result_store, right_store, ok) = {
            let mut g = graph.borrow_mut();
            let index = g.next_index();
            let base = joined
                .name
                .clone()
                .or_else(|| joined.result.as_ref().and_then(|(m, _)| m.name.clone()))
                .unwrap_or_else(|| format!("KTABLE-FK-JOIN-{index:010}"));
            let mut errors = Vec::new();
            if !Rc::ptr_eq(&self.graph, &other.graph) {
                errors.push("the right table belongs to another StreamsBuilder".to_string());
            }
            if self.value_serde.is_none() {
                errors.push(
                    "the left table has no value serde: a foreign-key join hashes and stores the left values \
                     (join a source table, an aggregation or a materialized join)"
                        .to_string(),
                );
            }
            // `SO: Joinable`: a `Stored` right table has a key-value store and
            // a value serde; the errors below guard that invariant (user code
            // cannot reach them, see topology/tests/ui/).
            let right_store = match (&other.store, &other.value_serde) {
                (Some(s), Some(_)) => match g.stores.iter().find(|spec| &spec.name == s).map(|spec| spec.kind) {
                    Some(StoreKind::Window { .. }) => {
                        errors.push(format!(
                            "the right table's store {s:?} is a window store: only key-value tables can be joined"
                        ));
                        None
                    }
                    _ => Some(s.clone()),
                },
                _ => {
                    errors.push(
                        "the right table is not materialized: subscriptions are answered from its store \
                         (join a source table, an aggregation or a materialized join)"
                            .to_string(),
                    );
                    None
                }
            };
            let left_values = format!("{base}-left-values");
            let subscriptions = format!("{base}-subscription-store");
            for name in [&left_values, &subscriptions] {
                g.add_store(StoreSpec {
                    name: name.clone(),
                    kind: StoreKind::KeyValue,
                    logged: true,
                });
            }
            let result_store = joined.result.as_ref().map(|(m, serde)| {
                let name = g.store_name(m, "KTABLE-FK-JOIN-OUTPUT");
                g.add_store(StoreSpec {
                    name: name.clone(),
                    kind: StoreKind::KeyValue,
                    logged: m.logged,
                });
                g.record_store_format(&name, &self.key_serde, serde);
                name
            });
            let ok = errors.is_empty();
            for reason in errors {
                g.errors.push(TopologyError::InvalidOperation {
                    node: format!("KTABLE-FK-JOIN-SUBSCRIPTION-REGISTRATION-{index:010}"),
                    reason,
                });
            }
            (base, left_values, subscriptions, result_store, right_store, ok)
        };

        // 1. Left side: registration, to the subscription topic.
        let send_id = add_processor(
            &graph,
            "KTABLE-FK-JOIN-SUBSCRIPTION-REGISTRATION",
            self.node,
            &[Some(&left_values)],
        );
        let (sub_topic, resp_topic) = {
            let mut g = graph.borrow_mut();
            let sub_topic = g.topic(&format!("{base}-subscription-registration"), true);
            let resp_topic = g.topic(&format!("{base}-subscription-response"), true);
            (sub_topic, resp_topic)
        };
        let send_out = ChildSlot::<Vec<u8>, Subscription>::new();
        stream_of(&graph, send_id, send_out.clone()).sink(sub_topic, Serdes::bytes(), SubscriptionSerde::serde());

        // 2. Right side: subscriptions in, responses out.
        let (sub_source, sub_source_slot) =
            add_source(&graph, sub_topic, Serdes::bytes(), SubscriptionSerde::serde(), None);
        let receive_id = add_processor(
            &graph,
            "KTABLE-FK-JOIN-SUBSCRIPTION-PROCESSOR",
            sub_source,
            &[Some(&subscriptions), right_store.as_deref()],
        );
        let receive_out = ChildSlot::<Vec<u8>, Response>::new();
        stream_of(&graph, receive_id, receive_out.clone()).sink(resp_topic, Serdes::bytes(), ResponseSerde::serde());

        // 3. Right side: updates of the right table, to every subscriber.
        let foreign_id = add_processor(
            &graph,
            "KTABLE-FK-JOIN-FOREIGN-PROCESSOR",
            other.node,
            &[Some(&subscriptions)],
        );
        let foreign_out = ChildSlot::<Vec<u8>, Response>::new();
        stream_of(&graph, foreign_id, foreign_out.clone()).sink(resp_topic, Serdes::bytes(), ResponseSerde::serde());

        // 4. Left side: responses in, joined rows out.
        let (resp_source, resp_source_slot) =
            add_source(&graph, resp_topic, Serdes::bytes(), ResponseSerde::serde(), None);
        let resolver_id = add_processor(
            &graph,
            "KTABLE-FK-JOIN-SUBSCRIPTION-RESPONSE-RESOLVER",
            resp_source,
            &[Some(&left_values), result_store.as_deref()],
        );
        let out = ChildSlot::<K, Option<R>>::new();
        let result_serde = joined.result.as_ref().map(|(_, s)| s.clone());

        if let (true, Some(value_serde), Some(right_store), Some(right_value_serde)) =
            (ok, self.value_serde.clone(), right_store, other.value_serde.clone())
        {
            let key_serde = self.key_serde.clone();
            let fk_serde = other.key_serde.clone();
            {
                let (store, value_serde, key_serde, fk_serde) = (
                    left_values.clone(),
                    value_serde.clone(),
                    key_serde.clone(),
                    fk_serde.clone(),
                );
                self.slot.push(Arc::new(move |ictx| {
                    Ok(Box::new(RegistrationNode {
                        foreign_key: foreign_key.clone(),
                        left_join,
                        store: ictx.key_value_store(&store)?,
                        name: Arc::from(store.as_str()),
                        key_serde: key_serde.clone(),
                        value_serde: value_serde.clone(),
                        fk_serde: fk_serde.clone(),
                        children: send_out.instantiate(ictx)?,
                        kbuf: Vec::new(),
                        vbuf: Vec::new(),
                        nbuf: Vec::new(),
                    }) as Box<dyn Node<K, Option<V>>>)
                }));
            }
            {
                let subscriptions = subscriptions.clone();
                sub_source_slot.push(Arc::new(move |ictx| {
                    Ok(Box::new(SubscriptionNode {
                        subscriptions: ictx.key_value_store(&subscriptions)?,
                        right: ictx.key_value_store(&right_store)?,
                        children: receive_out.instantiate(ictx)?,
                        kbuf: Vec::new(),
                        vbuf: Vec::new(),
                    }) as Box<dyn Node<Vec<u8>, Subscription>>)
                }));
            }
            {
                let (subscriptions, fk_serde, right_value_serde) =
                    (subscriptions.clone(), fk_serde.clone(), right_value_serde.clone());
                other.slot.push(Arc::new(move |ictx| {
                    Ok(Box::new(ForeignNode {
                        subscriptions: ictx.key_value_store(&subscriptions)?,
                        fk_serde: fk_serde.clone(),
                        value_serde: right_value_serde.clone(),
                        children: foreign_out.instantiate(ictx)?,
                        prefix: Vec::new(),
                    }) as Box<dyn Node<KO, Option<VO>>>)
                }));
            }
            {
                let out = out.clone();
                let result = result_store.clone().zip(result_serde.clone());
                resp_source_slot.push(Arc::new(move |ictx: &mut InitContext<'_>| {
                    let result = match &result {
                        Some((name, serde)) => {
                            Some((ictx.key_value_store(name)?, Arc::from(name.as_str()), serde.clone()))
                        }
                        None => None,
                    };
                    Ok(Box::new(ResolverNode {
                        joiner: joiner.clone(),
                        left: ictx.key_value_store(&left_values)?,
                        left_name: Arc::from(left_values.as_str()),
                        key_serde: key_serde.clone(),
                        value_serde: value_serde.clone(),
                        right_value_serde: right_value_serde.clone(),
                        result,
                        children: out.instantiate(ictx)?,
                        vbuf: Vec::new(),
                        rbuf: Vec::new(),
                    }) as Box<dyn Node<Vec<u8>, Response>>)
                }));
            }
        }
        KTable::new(
            graph,
            resolver_id,
            out,
            result_store.filter(|_| result_serde.is_some()),
            self.key_serde.clone(),
            result_serde,
            None,
        )
    }
}

/// Add a processor node `{kind}-{index}` after `parent`, connected to the
/// stores that are `Some`; its id.
fn add_processor(graph: &crate::builder::Graph, kind: &str, parent: usize, stores: &[Option<&str>]) -> usize {
    let mut g = graph.borrow_mut();
    let id = g.add_node(kind, NodeKind::Processor, vec![parent]);
    for store in stores.iter().flatten() {
        g.connect_store(id, store);
    }
    id
}

/// A stream handle on a node's output slot, to attach a sink to it.
fn stream_of<K: Data, V: Data>(
    graph: &crate::builder::Graph,
    node: usize,
    slot: Arc<ChildSlot<K, V>>,
) -> KStream<K, V> {
    KStream {
        graph: graph.clone(),
        node,
        slot,
        repartition_required: false,
        _marker: std::marker::PhantomData,
    }
}

// ---------------------------------------------------------------------------
// Wire formats
// ---------------------------------------------------------------------------

/// What the right side is asked to do with a subscription (Kafka Streams'
/// `SubscriptionWrapper.Instruction`, same byte values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Instruction {
    /// Unsubscribe; no response (the left row moved to another foreign
    /// key, whose response gives its new row).
    DeleteKeyNoPropagate = 0,
    /// Unsubscribe and respond with no right value (the left row was
    /// deleted: its response emits the tombstone).
    DeleteKeyAndPropagate = 1,
    /// Subscribe and respond, with no right value if there is none (an
    /// updated left row, or any left-join row: a result must replace the
    /// previous one).
    PropagateNullIfNoFkValAvailable = 2,
    /// Subscribe; respond only if the right row exists (a new inner-join
    /// row: nothing to replace).
    PropagateOnlyIfFkValAvailable = 3,
}

impl Instruction {
    fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            0 => Instruction::DeleteKeyNoPropagate,
            1 => Instruction::DeleteKeyAndPropagate,
            2 => Instruction::PropagateNullIfNoFkValAvailable,
            3 => Instruction::PropagateOnlyIfFkValAvailable,
            _ => return None,
        })
    }
}

/// The 128-bit hash of a left value, as written on the wire and in the
/// subscription store: the two 64-bit halves of
/// [`murmur3_x64_128`] big-endian (as Kafka's `ByteBuffer.putLong`).
type ValueHash = [u8; 16];

fn value_hash(value_bytes: &[u8]) -> ValueHash {
    let (h1, h2) = murmur3_x64_128(value_bytes, KAFKA_MURMUR3_SEED);
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&h1.to_be_bytes());
    out[8..].copy_from_slice(&h2.to_be_bytes());
    out
}

/// A record of the subscription topic (its key is the foreign key,
/// serialized with the right table's key serde).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Subscription {
    /// The hash of the left row's new value; `None` for a deleted row.
    hash: Option<ValueHash>,
    instruction: Instruction,
    /// The left key, serialized with the left table's key serde.
    primary_key: Vec<u8>,
}

/// Flag of the first byte: no hash follows.
const HASH_ABSENT: u8 = 0x80;
/// Flag of a response's first byte: there is no right value.
const VALUE_ABSENT: u8 = 0x40;
/// The version these formats are (bits 0–5 of the first byte).
const VERSION: u8 = 0;

/// The subscription topic's value format, Kafka Streams'
/// `SubscriptionWrapper` version 0 byte for byte:
///
/// * byte 0: the version (0) in bits 0–6, `0x80` if there is no hash;
/// * byte 1: the instruction (0–3, see [`Instruction`]);
/// * 16 bytes: the hash, if present;
/// * the rest: the left key.
struct SubscriptionSerde;

impl SubscriptionSerde {
    fn serde() -> Serde<Subscription> {
        Serde::new(SubscriptionSerde)
    }
}

impl SerdeImpl<Subscription> for SubscriptionSerde {
    fn serialize(&self, s: &Subscription, out: &mut Vec<u8>) -> Result<(), SerdeError> {
        out.push(VERSION | if s.hash.is_none() { HASH_ABSENT } else { 0 });
        out.push(s.instruction as u8);
        if let Some(h) = &s.hash {
            out.extend_from_slice(h);
        }
        out.extend_from_slice(&s.primary_key);
        Ok(())
    }

    fn deserialize(&self, bytes: &[u8]) -> Result<Subscription, SerdeError> {
        let [flags, instruction, rest @ ..] = bytes else {
            return Err(SerdeError("subscription shorter than 2 bytes".into()));
        };
        if flags & !HASH_ABSENT != VERSION {
            return Err(SerdeError(format!("unknown subscription version/flags {flags:#04x}")));
        }
        let instruction = Instruction::from_byte(*instruction)
            .ok_or_else(|| SerdeError(format!("unknown subscription instruction {instruction}")))?;
        let (hash, primary_key) = split_hash(*flags, rest)?;
        Ok(Subscription {
            hash,
            instruction,
            primary_key: primary_key.to_vec(),
        })
    }

    fn name(&self) -> &'static str {
        "fk-subscription"
    }
}

fn split_hash(flags: u8, rest: &[u8]) -> Result<(Option<ValueHash>, &[u8]), SerdeError> {
    if flags & HASH_ABSENT != 0 {
        return Ok((None, rest));
    }
    let h = rest
        .get(..16)
        .ok_or_else(|| SerdeError("truncated hash".into()))?
        .try_into()
        .expect("16 bytes");
    Ok((Some(h), &rest[16..]))
}

/// A record of the response topic (its key is the left key, serialized
/// with the left table's key serde).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Response {
    /// The hash of the subscription this answers.
    hash: Option<ValueHash>,
    /// The right row's value, serialized with the right table's value
    /// serde; `None` if there is no right row.
    foreign_value: Option<Vec<u8>>,
}

/// The response topic's value format, Kafka Streams'
/// `SubscriptionResponseWrapper` version 0 except for one flag:
///
/// * byte 0: the version (0) in bits 0–5, `0x80` if there is no hash,
///   `0x40` if there is no right value;
/// * 16 bytes: the hash, if present;
/// * the rest: the right value, if present.
///
/// Kafka Streams reads "no bytes left" as "no right value", which would
/// turn a right value that serializes to nothing (an empty string) into a
/// deleted row; the explicit flag keeps them apart.
struct ResponseSerde;

impl ResponseSerde {
    fn serde() -> Serde<Response> {
        Serde::new(ResponseSerde)
    }
}

impl SerdeImpl<Response> for ResponseSerde {
    fn serialize(&self, r: &Response, out: &mut Vec<u8>) -> Result<(), SerdeError> {
        let mut flags = VERSION;
        if r.hash.is_none() {
            flags |= HASH_ABSENT;
        }
        if r.foreign_value.is_none() {
            flags |= VALUE_ABSENT;
        }
        out.push(flags);
        if let Some(h) = &r.hash {
            out.extend_from_slice(h);
        }
        if let Some(v) = &r.foreign_value {
            out.extend_from_slice(v);
        }
        Ok(())
    }

    fn deserialize(&self, bytes: &[u8]) -> Result<Response, SerdeError> {
        let [flags, rest @ ..] = bytes else {
            return Err(SerdeError("empty response".into()));
        };
        if flags & !(HASH_ABSENT | VALUE_ABSENT) != VERSION {
            return Err(SerdeError(format!("unknown response version/flags {flags:#04x}")));
        }
        let (hash, value) = split_hash(*flags, rest)?;
        let foreign_value = if flags & VALUE_ABSENT != 0 {
            if !value.is_empty() {
                return Err(SerdeError("response without a value has trailing bytes".into()));
            }
            None
        } else {
            Some(value.to_vec())
        };
        Ok(Response { hash, foreign_value })
    }

    fn name(&self) -> &'static str {
        "fk-response"
    }
}

/// The key of the subscription store: the foreign key's length (4 bytes,
/// big-endian), the foreign key, the left key (Kafka Streams'
/// `CombinedKeySchema`), so that the subscribers of one foreign key are
/// the keys starting with [`fk_prefix`].
fn fk_prefix(out: &mut Vec<u8>, fk: &[u8]) -> Result<(), String> {
    let len = u32::try_from(fk.len()).map_err(|_| "foreign key longer than 4 GiB".to_string())?;
    out.clear();
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(fk);
    Ok(())
}

/// The smallest key greater than every key starting with `prefix`; `None`
/// if there is none (the prefix is all `0xff`).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// An entry of the left-values store: (foreign key bytes, value bytes)
/// from `[4-byte big-endian fk length][fk][value]`.
fn split_left_entry<'a>(name: &str, entry: &'a [u8]) -> Result<(&'a [u8], &'a [u8]), StoreError> {
    let corrupt = || StoreError::new(name, "left-values entry truncated");
    let len: [u8; 4] = entry.get(..4).ok_or_else(corrupt)?.try_into().expect("4 bytes");
    let end = 4 + u32::from_be_bytes(len) as usize;
    let fk = entry.get(4..end).ok_or_else(corrupt)?;
    Ok((fk, &entry[end..]))
}

// ---------------------------------------------------------------------------
// MurmurHash3
// ---------------------------------------------------------------------------

/// The seed Kafka Streams' `Murmur3.hash128(byte[])` uses
/// (`Murmur3.DEFAULT_SEED`).
const KAFKA_MURMUR3_SEED: i32 = 104_729;

/// MurmurHash3 x64 128 (Austin Appleby's `MurmurHash3_x64_128`) as Kafka
/// Streams computes it (`org.apache.kafka.streams.state.internals.Murmur3
/// .hash128`, from Hive): little-endian 16-byte blocks, the int seed
/// sign-extended into both halves. Returns (h1, h2).
fn murmur3_x64_128(data: &[u8], seed: i32) -> (u64, u64) {
    const C1: u64 = 0x87c3_7b91_1142_53d5;
    const C2: u64 = 0x4cf5_ad43_2745_937f;
    fn fmix64(mut h: u64) -> u64 {
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
    let mix_k1 = |k1: u64| k1.wrapping_mul(C1).rotate_left(31).wrapping_mul(C2);
    let mix_k2 = |k2: u64| k2.wrapping_mul(C2).rotate_left(33).wrapping_mul(C1);

    let mut h1 = seed as i64 as u64;
    let mut h2 = h1;
    let mut blocks = data.chunks_exact(16);
    for b in &mut blocks {
        let k1 = u64::from_le_bytes(b[..8].try_into().expect("8 bytes"));
        let k2 = u64::from_le_bytes(b[8..].try_into().expect("8 bytes"));
        h1 ^= mix_k1(k1);
        h1 = h1
            .rotate_left(27)
            .wrapping_add(h2)
            .wrapping_mul(5)
            .wrapping_add(0x52dc_e729);
        h2 ^= mix_k2(k2);
        h2 = h2
            .rotate_left(31)
            .wrapping_add(h1)
            .wrapping_mul(5)
            .wrapping_add(0x3849_5ab5);
    }
    let tail = blocks.remainder();
    if tail.len() > 8 {
        let k2 = tail[8..]
            .iter()
            .enumerate()
            .fold(0u64, |k, (i, b)| k ^ (u64::from(*b) << (8 * i)));
        h2 ^= mix_k2(k2);
    }
    if !tail.is_empty() {
        let k1 = tail[..tail.len().min(8)]
            .iter()
            .enumerate()
            .fold(0u64, |k, (i, b)| k ^ (u64::from(*b) << (8 * i)));
        h1 ^= mix_k1(k1);
    }
    h1 ^= data.len() as u64;
    h2 ^= data.len() as u64;
    h1 = h1.wrapping_add(h2);
    h2 = h2.wrapping_add(h1);
    h1 = fmix64(h1);
    h2 = fmix64(h2);
    h1 = h1.wrapping_add(h2);
    h2 = h2.wrapping_add(h1);
    (h1, h2)
}

// ---------------------------------------------------------------------------
// Processors
// ---------------------------------------------------------------------------

/// Left side: turns each change of a left row into subscriptions (Kafka
/// Streams' `SubscriptionSendProcessorSupplier`), keeping the row's foreign
/// key and value in the left-values store.
struct RegistrationNode<K, V, KO> {
    foreign_key: Arc<Extractor<V, KO>>,
    left_join: bool,
    store: KvStoreRef,
    name: Arc<str>,
    key_serde: Serde<K>,
    value_serde: Serde<V>,
    fk_serde: Serde<KO>,
    children: Children<Vec<u8>, Subscription>,
    kbuf: Vec<u8>,
    /// The previous entry of the row.
    vbuf: Vec<u8>,
    /// The new entry of the row.
    nbuf: Vec<u8>,
}

impl<K: Data, V: Data, KO: Data> RegistrationNode<K, V, KO> {
    /// Encode the new entry `[fk len][fk][value]` into `nbuf`; returns the
    /// foreign key's length.
    fn encode_entry(&mut self, value: &V) -> Result<usize, String> {
        let fk = (self.foreign_key)(value);
        self.nbuf.clear();
        self.nbuf.extend_from_slice(&[0; 4]);
        self.fk_serde
            .serialize(&fk, &mut self.nbuf)
            .map_err(|e| format!("foreign key serialization failed: {e}"))?;
        let len = self.nbuf.len() - 4;
        let len32 = u32::try_from(len).map_err(|_| "foreign key longer than 4 GiB".to_string())?;
        self.nbuf[..4].copy_from_slice(&len32.to_be_bytes());
        self.value_serde
            .serialize(value, &mut self.nbuf)
            .map_err(|e| format!("value serialization failed: {e}"))?;
        Ok(len)
    }
}

impl<K: Data, V: Data, KO: Data> Node<K, Option<V>> for RegistrationNode<K, V, KO> {
    fn process(&mut self, ctx: &mut ProcessorContext, key: K, value: Option<V>) {
        self.kbuf.clear();
        if let Err(e) = self.key_serde.serialize(&key, &mut self.kbuf) {
            return ctx.dead_letter(format!("key serialization failed: {e}"));
        }
        let found = match self.store.borrow_mut().get_into(&self.kbuf, &mut self.vbuf) {
            Ok(f) => f,
            Err(e) => return ctx.fail(e),
        };
        let old_fk = if found {
            match split_left_entry(&self.name, &self.vbuf) {
                Ok((fk, _)) => Some(fk.to_vec()),
                Err(e) => return ctx.fail(e),
            }
        } else {
            None
        };
        let primary_key = self.kbuf.clone();
        match value {
            Some(v) => {
                let fk_len = match self.encode_entry(&v) {
                    Ok(l) => l,
                    Err(e) => return ctx.dead_letter(e),
                };
                if let Err(e) = self.store.borrow_mut().put(&self.kbuf, &self.nbuf) {
                    return ctx.fail(e);
                }
                let hash = Some(value_hash(&self.nbuf[4 + fk_len..]));
                let new_fk = self.nbuf[4..4 + fk_len].to_vec();
                // A row that moves to another foreign key leaves the old
                // one first (no response: see the module docs).
                if let Some(old_fk) = &old_fk {
                    if *old_fk != new_fk {
                        let unsubscribe = Subscription {
                            hash,
                            instruction: Instruction::DeleteKeyNoPropagate,
                            primary_key: primary_key.clone(),
                        };
                        self.children.forward(ctx, old_fk.clone(), unsubscribe);
                    }
                }
                // An existing row (or any left-join row) must get an answer
                // even if the right row is missing: it replaces the row's
                // previous result.
                let instruction = if old_fk.is_some() || self.left_join {
                    Instruction::PropagateNullIfNoFkValAvailable
                } else {
                    Instruction::PropagateOnlyIfFkValAvailable
                };
                let subscribe = Subscription {
                    hash,
                    instruction,
                    primary_key,
                };
                self.children.forward(ctx, new_fk, subscribe);
            }
            None => {
                // Deleting a row that never existed changes nothing.
                let Some(old_fk) = old_fk else { return };
                if let Err(e) = self.store.borrow_mut().delete(&self.kbuf) {
                    return ctx.fail(e);
                }
                let unsubscribe = Subscription {
                    hash: None,
                    instruction: Instruction::DeleteKeyAndPropagate,
                    primary_key,
                };
                self.children.forward(ctx, old_fk, unsubscribe);
            }
        }
        if self.store.borrow().wants_flush() {
            ctx.request_commit();
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

/// Right side: records or removes a subscription and answers it from the
/// right table's store (Kafka Streams' `SubscriptionReceiveProcessorSupplier`
/// and `SubscriptionJoinProcessorSupplier`). The subscription store maps
/// the combined key (see [`fk_prefix`]) to the subscriber's hash.
struct SubscriptionNode {
    subscriptions: KvStoreRef,
    right: KvStoreRef,
    children: Children<Vec<u8>, Response>,
    kbuf: Vec<u8>,
    vbuf: Vec<u8>,
}

impl Node<Vec<u8>, Subscription> for SubscriptionNode {
    fn process(&mut self, ctx: &mut ProcessorContext, fk: Vec<u8>, s: Subscription) {
        if let Err(e) = fk_prefix(&mut self.kbuf, &fk) {
            return ctx.dead_letter(e);
        }
        self.kbuf.extend_from_slice(&s.primary_key);
        {
            let mut store = self.subscriptions.borrow_mut();
            let written = match s.instruction {
                Instruction::DeleteKeyNoPropagate | Instruction::DeleteKeyAndPropagate => store.delete(&self.kbuf),
                _ => store.put(&self.kbuf, s.hash.as_ref().map_or(&[][..], |h| &h[..])),
            };
            if let Err(e) = written {
                return ctx.fail(e);
            }
            if store.wants_flush() {
                ctx.request_commit();
            }
        }
        let foreign_value = match s.instruction {
            Instruction::DeleteKeyNoPropagate => return,
            Instruction::DeleteKeyAndPropagate => None,
            _ => match self.right.borrow_mut().get_into(&fk, &mut self.vbuf) {
                Ok(true) => Some(self.vbuf.clone()),
                Ok(false) if s.instruction == Instruction::PropagateOnlyIfFkValAvailable => return,
                Ok(false) => None,
                Err(e) => return ctx.fail(e),
            },
        };
        let response = Response {
            hash: s.hash,
            foreign_value,
        };
        self.children.forward(ctx, s.primary_key, response);
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

/// Right side: sends each change of a right row to every left row
/// subscribed to it (Kafka Streams' `ForeignTableJoinProcessorSupplier`).
struct ForeignNode<KO, VO> {
    subscriptions: KvStoreRef,
    fk_serde: Serde<KO>,
    value_serde: Serde<VO>,
    children: Children<Vec<u8>, Response>,
    prefix: Vec<u8>,
}

impl<KO: Data, VO: Data> Node<KO, Option<VO>> for ForeignNode<KO, VO> {
    fn process(&mut self, ctx: &mut ProcessorContext, key: KO, value: Option<VO>) {
        let fk = match self.fk_serde.to_bytes(&key) {
            Ok(b) => b,
            Err(e) => return ctx.dead_letter(format!("foreign key serialization failed: {e}")),
        };
        if let Err(e) = fk_prefix(&mut self.prefix, &fk) {
            return ctx.dead_letter(e);
        }
        let foreign_value = match value.as_ref().map(|v| self.value_serde.to_bytes(v)).transpose() {
            Ok(v) => v,
            Err(e) => return ctx.dead_letter(format!("right value serialization failed: {e}")),
        };
        let end = prefix_end(&self.prefix);
        let upper = end.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
        let subscribers = match self
            .subscriptions
            .borrow_mut()
            .range(Bound::Included(&self.prefix[..]), upper)
        {
            Ok(s) => s,
            Err(e) => return ctx.fail(e),
        };
        for (combined, hash) in subscribers {
            let hash = <ValueHash>::try_from(&hash[..]).ok();
            let response = Response {
                hash,
                foreign_value: foreign_value.clone(),
            };
            self.children
                .forward(ctx, combined[self.prefix.len()..].to_vec(), response);
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

/// Left side: joins a response with the left row's current value if the
/// response answers that value, drops it as stale otherwise (Kafka
/// Streams' `ResponseJoinProcessorSupplier`).
struct ResolverNode<K, V, VO, R> {
    joiner: FkJoiner<V, VO, R>,
    left: KvStoreRef,
    left_name: Arc<str>,
    key_serde: Serde<K>,
    value_serde: Serde<V>,
    right_value_serde: Serde<VO>,
    /// The materialized result: store, name, value serde.
    result: Option<(KvStoreRef, Arc<str>, Serde<R>)>,
    children: Children<K, Option<R>>,
    vbuf: Vec<u8>,
    rbuf: Vec<u8>,
}

impl<K: Data, V: Data, VO: Data, R: Data> Node<Vec<u8>, Response> for ResolverNode<K, V, VO, R> {
    fn process(&mut self, ctx: &mut ProcessorContext, primary_key: Vec<u8>, response: Response) {
        let found = match self.left.borrow_mut().get_into(&primary_key, &mut self.vbuf) {
            Ok(f) => f,
            Err(e) => return ctx.fail(e),
        };
        let current = if found {
            match split_left_entry(&self.left_name, &self.vbuf) {
                Ok((_, value)) => Some(value),
                Err(e) => return ctx.fail(e),
            }
        } else {
            None
        };
        // Stale: the row changed (or was deleted, or re-created) since the
        // subscription this answers was sent.
        if current.map(value_hash) != response.hash {
            return;
        }
        let current = match current
            .map(|b| decode_stored(&self.value_serde, &self.left_name, b))
            .transpose()
        {
            Ok(v) => v,
            Err(e) => return ctx.fail(e),
        };
        let foreign = match response
            .foreign_value
            .as_deref()
            .map(|b| self.right_value_serde.deserialize(b))
            .transpose()
        {
            Ok(v) => v,
            Err(e) => return ctx.dead_letter(format!("right value in response does not decode: {e}")),
        };
        let key = match self.key_serde.deserialize(&primary_key) {
            Ok(k) => k,
            Err(e) => return ctx.dead_letter(format!("left key in response does not decode: {e}")),
        };
        let row = match (&self.joiner, &current, &foreign) {
            (FkJoiner::Inner(f), Some(v), Some(vo)) => Some(f(v, vo)),
            (FkJoiner::Left(f), Some(v), vo) => Some(f(v, vo.as_ref())),
            _ => None,
        };
        let Some((store, _, serde)) = &self.result else {
            return self.children.forward(ctx, key, row);
        };
        // A materialized result is forwarded when its store is flushed.
        let mut store = store.borrow_mut();
        let written = match &row {
            Some(r) => {
                self.rbuf.clear();
                if let Err(e) = serde.serialize(r, &mut self.rbuf) {
                    return ctx.dead_letter(format!("join result serialization failed: {e}"));
                }
                store.put(&primary_key, &self.rbuf)
            }
            None => store.delete(&primary_key),
        };
        if let Err(e) = written {
            return ctx.fail(e);
        }
        if store.wants_flush() {
            ctx.request_commit();
        }
    }
    fn flush(&mut self, ctx: &mut ProcessorContext) {
        if let Some((store, name, serde)) = &self.result {
            forward_flushed(ctx, store, name, &self.key_serde, serde, &mut self.children);
        }
        self.children.flush(ctx)
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

    /// Kafka's `Murmur3Test.testMurmur3_128` (seed 123), from Hive.
    #[test]
    fn murmur3_matches_kafka_test_vectors() {
        let cases: [(&[u8], [i64; 2]); 6] = [
            (b"21", [5857341059704281894, -5288187638297930763]),
            (b"foobar", [-351361463397418609, 8959716011862540668]),
            (b"a-little-bit-long-string", [8836256500583638442, -198172363548498523]),
            (
                b"a-little-bit-longer-string",
                [1838346159335108511, 8794688210320490705],
            ),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                [-4024021876037397259, -1482317706335141238],
            ),
            (b"abc", [1489494923063836066, -5440978547625122829]),
        ];
        for (data, [h1, h2]) in cases {
            assert_eq!(
                murmur3_x64_128(data, 123),
                (h1 as u64, h2 as u64),
                "{:?}",
                String::from_utf8_lossy(data)
            );
        }
    }

    #[test]
    fn subscription_wire_format_round_trips() {
        let s = SubscriptionSerde::serde();
        let hash: ValueHash = core::array::from_fn(|i| i as u8);
        let with_hash = Subscription {
            hash: Some(hash),
            instruction: Instruction::PropagateOnlyIfFkValAvailable,
            primary_key: b"pk".to_vec(),
        };
        let mut want = vec![0x00, 0x03];
        want.extend_from_slice(&hash);
        want.extend_from_slice(b"pk");
        assert_eq!(s.to_bytes(&with_hash).unwrap(), want);
        assert_eq!(s.deserialize(&want).unwrap(), with_hash);
        let delete = Subscription {
            hash: None,
            instruction: Instruction::DeleteKeyAndPropagate,
            primary_key: b"pk".to_vec(),
        };
        assert_eq!(s.to_bytes(&delete).unwrap(), b"\x80\x01pk");
        assert_eq!(s.deserialize(b"\x80\x01pk").unwrap(), delete);
        assert!(s.deserialize(b"\x80\x07pk").is_err());
        assert!(s.deserialize(b"\x01\x01pk").is_err());
        assert!(s.deserialize(b"\x00\x01short").is_err());
    }

    #[test]
    fn response_wire_format_keeps_empty_values_apart_from_absent_ones() {
        let s = ResponseSerde::serde();
        let hash = [7u8; 16];
        for (r, bytes) in [
            (
                Response {
                    hash: Some(hash),
                    foreign_value: Some(b"v".to_vec()),
                },
                [&[0x00][..], &hash, b"v"].concat(),
            ),
            (
                Response {
                    hash: Some(hash),
                    foreign_value: Some(Vec::new()),
                },
                [&[0x00][..], &hash].concat(),
            ),
            (
                Response {
                    hash: Some(hash),
                    foreign_value: None,
                },
                [&[0x40][..], &hash].concat(),
            ),
            (
                Response {
                    hash: None,
                    foreign_value: None,
                },
                vec![0xc0],
            ),
        ] {
            assert_eq!(s.to_bytes(&r).unwrap(), bytes);
            assert_eq!(s.deserialize(&bytes).unwrap(), r);
        }
        assert!(s.deserialize(b"\xc0x").is_err());
        assert!(s.deserialize(b"").is_err());
    }

    #[test]
    fn prefix_end_is_the_next_prefix() {
        assert_eq!(prefix_end(b"\x00\x00\x00\x01a"), Some(b"\x00\x00\x00\x01b".to_vec()));
        assert_eq!(prefix_end(b"a\xff\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff\xff"), None);
    }
}
