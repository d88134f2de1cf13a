//! Joins: stream–table (inner and left) and windowed stream–stream (inner,
//! left and outer).
//!
//! Both kinds need the two sides' records of a key in the same task, so
//! both require co-partitioned inputs. A stream whose key was changed
//! upstream is repartitioned automatically, as in Kafka Streams, when the
//! join has its serdes: stream–stream joins always do ([`StreamJoined`]),
//! stream–table joins through [`KStream::join_with`] /
//! [`KStream::left_join_with`] ([`Joined`]). The repartition topics are
//! named after the join (`{name}-repartition` for a stream–table join,
//! `{name}-left-repartition` / `{name}-right-repartition` for a
//! stream–stream join). The plain [`KStream::join`] / [`KStream::left_join`]
//! cannot repartition (no serdes): on a re-keyed stream they fail at
//! `build()` with an error that points to `join_with`, rather than silently
//! joining the wrong partitions.
//!
//! The source topics of the two sides must also have the same partition
//! count; the runtime's plan gives a repartition topic the partition count
//! of the external topics its reader also reads (see `weir_runtime::Plan`).
//!
//! * Stream–table: each stream record looks its key up in the table's
//!   store. Table updates do not trigger output (the table is the "lookup"
//!   side), as in Kafka Streams. A versioned table
//!   ([`Materialized::versioned`](crate::Materialized::versioned), KIP-914)
//!   is looked up as of the stream record's timestamp: the version valid
//!   then, so that an out-of-order stream record joins the table value of
//!   its own time (none if that is older than the table's history
//!   retention).
//! * Stream–stream: each side's records are kept in a window store for the
//!   join window; a record joins the other side's records of its key whose
//!   timestamps fall in the window, whichever side arrives first. Left and
//!   outer joins (Kafka Streams 3.1+ semantics) keep the records that have
//!   not found a partner yet in a third, logged key-value store and emit
//!   them as `X - null` only once their window has closed, so a record is
//!   never reported unjoined while a partner can still arrive in time.
//!   (As in Kafka Streams, a partner arriving later than that, more than
//!   the grace period after the window's end but not yet late for the
//!   other side's store, still joins: the record then appears twice, once
//!   unjoined and once joined.)
//!
//! Nulls: as in Kafka Streams, a record whose value is null (its serde's
//! [`Serde::is_null`], e.g. `None` of [`Serdes::optional`]) is no record in
//! Kafka's key-value model and is skipped by every join; a null key can
//! match nothing, so inner joins skip it and left/outer joins emit the
//! record at once with no partner (KIP-962). Skips are counted in
//! `TaskCounters::null_records_skipped`. A stream–stream join recognises
//! nulls with its [`StreamJoined`] serdes; a stream–table join recognises
//! null values with the value serde of the stream's source, if the values
//! reached the join unchanged (see `GraphBuilder::null_values`), and null
//! keys with the table's key serde.
//!
//! [`Serdes::optional`]: crate::Serdes::optional

use std::cell::RefCell;
use std::ops::Bound;
use std::rc::Rc;
use std::sync::Arc;

use crate::builder::NullCheck;
use crate::context::ProcessorContext;
use crate::grouped::decode_stored;
use crate::kstream::KStream;
use crate::ktable::{Joinable, KTable};
use crate::node::{ChildSlot, Children, Node};
use crate::serde::Serde;
use crate::store::{
    decode_window_start, encode_window_start, KvStoreRef, StoreError, StoreKind, StoreSpec, VersionedStoreRef,
    WindowStoreRef,
};
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
    /// `{name}-other-join-store` (and so their changelog topics), and the
    /// repartition topics of re-keyed sides `{name}-left-repartition` /
    /// `{name}-right-repartition`, instead of deriving them from the
    /// operator's position, so that they stay the same when operators are
    /// added before the join.
    pub fn with_store_name(self, name: &str) -> Self {
        StreamJoined {
            store_name: Some(name.to_string()),
            ..self
        }
    }
}

/// The serdes of a stream–table join (Kafka Streams' `Joined`): the key,
/// the stream's values and the table's values. A stream whose key was
/// changed upstream is repartitioned with them before the join, through
/// `{application_id}-{name}-repartition` (see [`Joined::with_name`]).
///
/// ```
/// # use weir_topology::prelude::*;
/// let mut b = StreamsBuilder::new();
/// let users = b.table::<String, String>("users", Serdes::string(), Serdes::string(), Materialized::named("users"));
/// b.stream::<String, String>("clicks", Serdes::string(), Serdes::string())
///     .select_key(|_, user| user.clone())
///     .join_with(
///         &users,
///         |_, click, name| format!("{click} by {name}"),
///         Joined::with(Serdes::string(), Serdes::string(), Serdes::string()).with_name("clicks-users"),
///     )
///     .to("enriched", Serdes::string(), Serdes::string());
/// assert!(b.build()?.describe("app").contains("(topic: app-clicks-users-repartition)"));
/// # Ok::<(), TopologyError>(())
/// ```
pub struct Joined<K, V, VT> {
    pub(crate) key_serde: Serde<K>,
    pub(crate) value_serde: Serde<V>,
    /// The table's value serde: the table reads its values with its own
    /// (its store is already materialized); kept for Kafka Streams' shape
    /// of `Joined.with(key, value, otherValue)`.
    #[allow(dead_code)]
    pub(crate) other_value_serde: Serde<VT>,
    pub(crate) name: Option<String>,
}

impl<K, V, VT> Clone for Joined<K, V, VT> {
    fn clone(&self) -> Self {
        Joined {
            key_serde: self.key_serde.clone(),
            value_serde: self.value_serde.clone(),
            other_value_serde: self.other_value_serde.clone(),
            name: self.name.clone(),
        }
    }
}

impl<K, V, VT> Joined<K, V, VT> {
    /// The key serde, the stream's value serde and the table's value serde.
    pub fn with(key_serde: Serde<K>, value_serde: Serde<V>, other_value_serde: Serde<VT>) -> Self {
        Joined {
            key_serde,
            value_serde,
            other_value_serde,
            name: None,
        }
    }

    /// Name the join's repartition topic `{name}-repartition` instead of
    /// deriving it from the operator's position
    /// (`KSTREAM-JOIN-{index}-repartition`), so that it stays the same when
    /// operators are added before the join.
    pub fn with_name(self, name: &str) -> Self {
        Joined {
            name: Some(name.to_string()),
            ..self
        }
    }
}

const REPARTITION_FIRST: &str =
    "the stream's key was changed upstream, so it must be repartitioned before the join (both sides partitioned \
     by the same key, co-partitioned): use join_with(..) / left_join_with(..) with Joined::with(key_serde, \
     value_serde, table_value_serde), which repartitions it automatically, or call repartition(..) before joining";

impl<K: Data, V: Data> KStream<K, V> {
    /// Inner stream–table join: each record of this stream whose key is in
    /// `table` leaves as `joiner(key, value, table_value)`; records whose key
    /// is absent are dropped. The table must be materialized (a source
    /// table or an aggregation result).
    pub fn join<VT: Data, VO: Data, ST: Joinable>(
        self,
        table: &KTable<K, VT, ST>,
        joiner: impl Fn(&K, V, VT) -> VO + Send + Sync + 'static,
    ) -> KStream<K, VO> {
        self.table_join("KSTREAM-JOIN", false, table, None, move |k, v, vt: Option<VT>| {
            vt.map(|vt| joiner(k, v, vt))
        })
    }

    /// Left stream–table join: every record of this stream leaves as
    /// `joiner(key, value, table_value)`, with `None` when the table has no
    /// value for the key.
    pub fn left_join<VT: Data, VO: Data, ST: Joinable>(
        self,
        table: &KTable<K, VT, ST>,
        joiner: impl Fn(&K, V, Option<VT>) -> VO + Send + Sync + 'static,
    ) -> KStream<K, VO> {
        self.table_join("KSTREAM-LEFTJOIN", true, table, None, move |k, v, vt| {
            Some(joiner(k, v, vt))
        })
    }

    /// [`join`](Self::join) with the stream's serdes (Kafka Streams'
    /// `join(table, joiner, Joined)`): if the stream's key was changed
    /// upstream, it is repartitioned by its new key first, through the
    /// internal topic `{application_id}-{name}-repartition` (`name` from
    /// [`Joined::with_name`], or `KSTREAM-JOIN-{index}`), so that each
    /// record meets the table partition holding its key. Without a key
    /// change it is exactly `join`.
    pub fn join_with<VT: Data, VO: Data, ST: Joinable>(
        self,
        table: &KTable<K, VT, ST>,
        joiner: impl Fn(&K, V, VT) -> VO + Send + Sync + 'static,
        joined: Joined<K, V, VT>,
    ) -> KStream<K, VO> {
        self.table_join(
            "KSTREAM-JOIN",
            false,
            table,
            Some(joined),
            move |k, v, vt: Option<VT>| vt.map(|vt| joiner(k, v, vt)),
        )
    }

    /// [`left_join`](Self::left_join) with the stream's serdes, repartitioning
    /// a re-keyed stream first as [`join_with`](Self::join_with) does
    /// (default topic name `KSTREAM-LEFTJOIN-{index}-repartition`).
    pub fn left_join_with<VT: Data, VO: Data, ST: Joinable>(
        self,
        table: &KTable<K, VT, ST>,
        joiner: impl Fn(&K, V, Option<VT>) -> VO + Send + Sync + 'static,
        joined: Joined<K, V, VT>,
    ) -> KStream<K, VO> {
        self.table_join("KSTREAM-LEFTJOIN", true, table, Some(joined), move |k, v, vt| {
            Some(joiner(k, v, vt))
        })
    }

    /// This stream, repartitioned through `{name}-repartition` if its key
    /// was changed upstream (the automatic repartition before a join).
    fn repartitioned_for_join(self, name: String, key_serde: Serde<K>, value_serde: Serde<V>) -> KStream<K, V> {
        if self.repartition_required {
            self.repartition(&name, key_serde, value_serde)
        } else {
            self
        }
    }

    fn table_join<VT: Data, VO: Data, ST: Joinable>(
        self,
        kind: &str,
        left: bool,
        table: &KTable<K, VT, ST>,
        joined: Option<Joined<K, V, VT>>,
        joiner: impl Fn(&K, V, Option<VT>) -> Option<VO> + Send + Sync + 'static,
    ) -> KStream<K, VO> {
        let this = match joined {
            Some(j) => {
                let name = j
                    .name
                    .unwrap_or_else(|| format!("{kind}-{:010}", self.graph.borrow().next_index()));
                self.repartitioned_for_join(name, j.key_serde, j.value_serde)
            }
            None => self,
        };
        this.table_join_node(kind, left, table, joiner)
    }

    fn table_join_node<VT: Data, VO: Data, ST: Joinable>(
        self,
        kind: &str,
        left: bool,
        table: &KTable<K, VT, ST>,
        joiner: impl Fn(&K, V, Option<VT>) -> Option<VO> + Send + Sync + 'static,
    ) -> KStream<K, VO> {
        let mut versioned = false;
        let id = {
            let mut g = self.graph.borrow_mut();
            let id = g.add_node(kind, NodeKind::Processor, vec![self.node]);
            if self.repartition_required {
                g.node_error(id, REPARTITION_FIRST);
            }
            // `ST: Joinable`: a `Stored` table has a key-value store and a
            // value serde; the errors below guard that invariant (user code
            // cannot reach them, see topology/tests/ui/).
            match (&table.store, &table.value_serde) {
                (Some(store), Some(_)) => {
                    let kind = g.stores.iter().find(|s| &s.name == store).map(|s| s.kind);
                    versioned = matches!(kind, Some(StoreKind::Versioned { .. }));
                    if let Some(StoreKind::Window { .. }) = kind {
                        g.node_error(
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
                _ => g.node_error(
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
            let value_is_null = self.graph.borrow().null_check::<V>(self.node);
            let joiner = Arc::new(joiner);
            let out2 = out.clone();
            self.attach(Arc::new(move |ictx| {
                let lookup = if versioned {
                    TableLookup::AsOf(ictx.versioned_store(&store)?)
                } else {
                    TableLookup::Latest(ictx.key_value_store(&store)?)
                };
                Ok(Box::new(TableJoinNode {
                    store: lookup,
                    name: Arc::from(store.as_str()),
                    key_serde: key_serde.clone(),
                    value_serde: value_serde.clone(),
                    value_is_null: value_is_null.clone(),
                    left,
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
    ///
    /// Records whose key or value is a Kafka null (per the `serdes`, see
    /// [`Serde::is_null`]) are skipped and counted in
    /// `TaskCounters::null_records_skipped`: a null value is no record in
    /// Kafka's key-value model, and a null key cannot equal any key.
    pub fn join_stream<V2: Data, VO: Data>(
        self,
        other: KStream<K, V2>,
        joiner: impl Fn(&K, &V, &V2) -> VO + Send + Sync + 'static,
        windows: JoinWindows,
        serdes: StreamJoined<K, V, V2>,
    ) -> KStream<K, VO> {
        let joiner: Arc<StreamJoiner<K, V, V2, VO>> = Arc::new(move |k, v, v2| match (v, v2) {
            (Some(v), Some(v2)) => Some(joiner(k, v, v2)),
            _ => None,
        });
        self.stream_join(other, false, false, joiner, windows, serdes)
    }

    /// Windowed left stream–stream join, with Kafka Streams' (3.1+)
    /// semantics: joins as [`join_stream`](Self::join_stream); in addition
    /// a record of this stream that found no partner leaves as
    /// `joiner(key, value, None)`, stamped with its own timestamp, once its
    /// window has closed, that is when stream time passes its timestamp +
    /// after + grace (never earlier: no "spurious" `X - null` result that a
    /// partner arriving in time would contradict). A record that joined is
    /// never emitted unjoined. As in Kafka Streams, closed windows are
    /// checked when a newer record reaches the join (either side): without
    /// input, nothing is emitted.
    ///
    /// Records waiting for their window to close are kept in a logged
    /// key-value store (`KSTREAM-OUTERSHARED-STORE-..`, or
    /// `{name}-outer-join-store` with [`StreamJoined::with_store_name`]),
    /// so none is lost or emitted twice across a crash. A record that
    /// arrives after its window has already closed, without a partner,
    /// leaves at once (if it is not late, see `join_stream`).
    ///
    /// Null values are skipped and counted as in `join_stream`. A record of
    /// this stream with a null key and a value cannot match anything: it
    /// leaves at once as `joiner(key, value, None)` (Kafka Streams 3.7+,
    /// KIP-962); a null-keyed record of `other` is skipped.
    pub fn left_join_stream<V2: Data, VO: Data>(
        self,
        other: KStream<K, V2>,
        joiner: impl Fn(&K, &V, Option<&V2>) -> VO + Send + Sync + 'static,
        windows: JoinWindows,
        serdes: StreamJoined<K, V, V2>,
    ) -> KStream<K, VO> {
        let joiner: Arc<StreamJoiner<K, V, V2, VO>> = Arc::new(move |k, v, v2| v.map(|v| joiner(k, v, v2)));
        self.stream_join(other, true, false, joiner, windows, serdes)
    }

    /// Windowed outer stream–stream join: as
    /// [`left_join_stream`](Self::left_join_stream) on both sides. A record
    /// of `other` without a partner leaves as `joiner(key, None,
    /// Some(value))` when stream time passes its timestamp + before +
    /// grace (its window reaches `before` forward in time). The joiner
    /// always gets at least one value.
    pub fn outer_join_stream<V2: Data, VO: Data>(
        self,
        other: KStream<K, V2>,
        joiner: impl Fn(&K, Option<&V>, Option<&V2>) -> VO + Send + Sync + 'static,
        windows: JoinWindows,
        serdes: StreamJoined<K, V, V2>,
    ) -> KStream<K, VO> {
        let joiner: Arc<StreamJoiner<K, V, V2, VO>> = Arc::new(move |k, v, v2| match (v, v2) {
            (None, None) => None,
            (v, v2) => Some(joiner(k, v, v2)),
        });
        self.stream_join(other, true, true, joiner, windows, serdes)
    }

    /// The three stream–stream joins: `left_outer` / `right_outer` say
    /// whether records of this / the other stream without a partner are
    /// emitted when their window closes.
    fn stream_join<V2: Data, VO: Data>(
        self,
        other: KStream<K, V2>,
        left_outer: bool,
        right_outer: bool,
        joiner: Arc<StreamJoiner<K, V, V2, VO>>,
        windows: JoinWindows,
        serdes: StreamJoined<K, V, V2>,
    ) -> KStream<K, VO> {
        // A side whose key was changed upstream is repartitioned by its new
        // key first (Kafka Streams does the same), through
        // `{name}-left-repartition` / `{name}-right-repartition`, `name`
        // being the join's store name (`StreamJoined::with_store_name`) or
        // `KSTREAM-JOIN-{index}`.
        let (this, other) = if self.repartition_required || other.repartition_required {
            let name = serdes
                .store_name
                .clone()
                .unwrap_or_else(|| format!("KSTREAM-JOIN-{:010}", self.graph.borrow().next_index()));
            let this = self.repartitioned_for_join(
                format!("{name}-left"),
                serdes.key_serde.clone(),
                serdes.this_value_serde.clone(),
            );
            let other = other.repartitioned_for_join(
                format!("{name}-right"),
                serdes.key_serde.clone(),
                serdes.other_value_serde.clone(),
            );
            (this, other)
        } else {
            (self, other)
        };
        this.stream_join_nodes(other, left_outer, right_outer, joiner, windows, serdes)
    }

    fn stream_join_nodes<V2: Data, VO: Data>(
        self,
        other: KStream<K, V2>,
        left_outer: bool,
        right_outer: bool,
        joiner: Arc<StreamJoiner<K, V, V2, VO>>,
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
        // Kafka Streams' node names: a side whose records may leave
        // unjoined is an "OUTER" side.
        let this_kind = if right_outer {
            "KSTREAM-OUTERTHIS"
        } else {
            "KSTREAM-JOINTHIS"
        };
        let other_kind = if left_outer {
            "KSTREAM-OUTEROTHER"
        } else {
            "KSTREAM-JOINOTHER"
        };
        let (merge, this_store, other_store, outer_store) = {
            let mut g = self.graph.borrow_mut();
            let index = g.next_index();
            let (this_store, other_store, outer_store) = match &serdes.store_name {
                Some(n) => (
                    format!("{n}-this-join-store"),
                    format!("{n}-other-join-store"),
                    format!("{n}-outer-join-store"),
                ),
                None => (
                    format!("{this_kind}-STORE-{index:010}"),
                    format!("{other_kind}-STORE-{index:010}"),
                    format!("KSTREAM-OUTERSHARED-STORE-{index:010}"),
                ),
            };
            let this_side = g.add_node(this_kind, NodeKind::Processor, vec![self.node]);
            let other_side = g.add_node(other_kind, NodeKind::Processor, vec![other.node]);
            let merge = g.add_node("KSTREAM-MERGE", NodeKind::Processor, vec![this_side, other_side]);
            if self.repartition_required || other.repartition_required {
                g.node_error(this_side, REPARTITION_FIRST);
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
            let outer_store = (left_outer || right_outer).then(|| {
                g.add_store(StoreSpec {
                    name: outer_store.clone(),
                    kind: StoreKind::KeyValue,
                    logged: true,
                });
                g.connect_store(this_side, &outer_store);
                g.connect_store(other_side, &outer_store);
                outer_store
            });
            (merge, this_store, other_store, outer_store)
        };
        let out = ChildSlot::<K, VO>::new();
        // One join core per task, shared by the two side nodes.
        let make_core = {
            let (out, this_store, other_store, serdes, joiner) = (out.clone(), this_store, other_store, serdes, joiner);
            Arc::new(move |ictx: &mut crate::context::InitContext<'_>| {
                let outer = match &outer_store {
                    Some(name) => Some(OuterStore {
                        store: ictx.key_value_store(name)?,
                        name: Arc::from(name.as_str()),
                        min_time: None,
                    }),
                    None => None,
                };
                let core = JoinCore {
                    this_store: ictx.window_store(&this_store)?,
                    this_name: Arc::from(this_store.as_str()),
                    other_store: ictx.window_store(&other_store)?,
                    other_name: Arc::from(other_store.as_str()),
                    windows,
                    late_after_ms: late_after,
                    keep_ms: keep,
                    last_purge: i64::MIN,
                    left_outer,
                    right_outer,
                    outer,
                    observed_time: i64::MIN,
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
/// How a stream–table join reads the table: its current value, or, for a
/// versioned table, the value it had at the stream record's timestamp.
enum TableLookup {
    Latest(KvStoreRef),
    AsOf(VersionedStoreRef),
}

impl TableLookup {
    /// The table's value of `key` for a stream record at `timestamp`, into
    /// `out`; false if there is none.
    fn get(&self, key: &[u8], timestamp: i64, out: &mut Vec<u8>) -> Result<bool, StoreError> {
        match self {
            TableLookup::Latest(s) => s.borrow_mut().get_into(key, out),
            TableLookup::AsOf(s) => Ok(s.borrow_mut().get_as_of(key, timestamp, out)?.is_some()),
        }
    }
}

struct TableJoinNode<K, V, VT, VO, F> {
    store: TableLookup,
    name: Arc<str>,
    key_serde: Serde<K>,
    value_serde: Serde<VT>,
    /// Recognises the stream's null values, if it may have any.
    value_is_null: Option<NullCheck<V>>,
    /// A left join: a null-keyed record with a value still leaves.
    left: bool,
    joiner: Arc<F>,
    children: Children<K, VO>,
    kbuf: Vec<u8>,
    vbuf: Vec<u8>,
}

impl<K, V, VT, VO, F> Node<K, V> for TableJoinNode<K, V, VT, VO, F>
where
    K: Data,
    V: Data,
    VT: Data,
    VO: Data,
    F: Fn(&K, V, Option<VT>) -> Option<VO>,
{
    fn process(&mut self, ctx: &mut ProcessorContext, key: K, value: V) {
        // As Kafka Streams: a null value is no record, so nothing to join;
        // a null key matches no table key (a left join still emits the
        // record with no table value, KIP-962).
        if self.value_is_null.as_ref().is_some_and(|is_null| is_null(&value)) {
            ctx.counters.null_records_skipped += 1;
            return;
        }
        if self.key_serde.is_null(&key) {
            if !self.left {
                ctx.counters.null_records_skipped += 1;
                return;
            }
            if let Some(out) = (self.joiner)(&key, value, None) {
                self.children.forward(ctx, key, out);
            }
            return;
        }
        self.kbuf.clear();
        if let Err(e) = self.key_serde.serialize(&key, &mut self.kbuf) {
            return ctx.dead_letter(format!("join key serialization failed: {e}"));
        }
        let found = match self.store.get(&self.kbuf, ctx.timestamp(), &mut self.vbuf) {
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

/// A stream–stream joiner as the core calls it: `None` for a missing side;
/// returns `None` when the join kind emits nothing for that combination.
type StreamJoiner<K, V, V2, VO> = dyn Fn(&K, Option<&V>, Option<&V2>) -> Option<VO> + Send + Sync;

/// Which input of a stream–stream join a record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    This,
    Other,
}

impl Side {
    fn byte(self) -> u8 {
        match self {
            Side::This => 0,
            Side::Other => 1,
        }
    }
}

/// The records of a left or outer join that have not found a partner yet,
/// waiting for their window to close. Keys are the record's timestamp
/// (8 bytes, ordered), the side (one byte, this = 0) and the record key,
/// so a scan is in timestamp order; values are the length-prefixed list of
/// that side's values at that key and time.
struct OuterStore {
    store: KvStoreRef,
    name: Arc<str>,
    /// No entry is older than this (`None`: not known since the task
    /// started, so the next check scans).
    min_time: Option<i64>,
}

fn outer_key(ts: i64, side: Side, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(9 + key.len());
    k.extend_from_slice(&encode_window_start(ts));
    k.push(side.byte());
    k.extend_from_slice(key);
    k
}

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
    /// Records of this (left) side without a partner are emitted.
    left_outer: bool,
    /// Records of the other (right) side without a partner are emitted.
    right_outer: bool,
    outer: Option<OuterStore>,
    /// The largest timestamp of the records that reached the join (either
    /// side, null ones included): the join's stream time, as Kafka Streams
    /// keeps it for emitting unjoined records.
    observed_time: i64,
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

    /// How long after its timestamp the window of a record of `side` stays
    /// open to partners arriving later: a left record at t matches right
    /// records up to t + after, a right record at t left records up to
    /// t + before.
    fn look_ahead(&self, side: Side) -> i64 {
        match side {
            Side::This => self.windows.after_ms,
            Side::Other => self.windows.before_ms,
        }
    }

    /// What happens to a record before it is joined: the join's time, a
    /// null key or value, lateness, and the emission of unjoined records
    /// whose window closed. `None`: the record is done with (skipped,
    /// late or failed); otherwise what to do with it (for `Join`, its key
    /// is serialized in `kbuf`).
    fn admit(&mut self, ctx: &mut ProcessorContext, side: Side, key: &K, value_is_null: bool) -> Option<Admit> {
        // A null record still moves the join's time, as in Kafka Streams.
        self.observed_time = self.observed_time.max(ctx.timestamp);
        if value_is_null {
            ctx.counters.null_records_skipped += 1;
            return None;
        }
        if self.serdes.key_serde.is_null(key) {
            let outer = match side {
                Side::This => self.left_outer,
                Side::Other => self.right_outer,
            };
            if outer {
                // Nothing can join it: it leaves at once (KIP-962).
                return Some(Admit::Unjoinable);
            }
            ctx.counters.null_records_skipped += 1;
            return None;
        }
        if ctx.timestamp.saturating_add(self.late_after_ms) < ctx.stream_time {
            ctx.counters.late_records_dropped += 1;
            return None;
        }
        self.kbuf.clear();
        if let Err(e) = self.serdes.key_serde.serialize(key, &mut self.kbuf) {
            ctx.dead_letter(format!("join key serialization failed: {e}"));
            return None;
        }
        // Records whose window has closed leave unjoined first (only when
        // this record is the newest: otherwise time has not moved since the
        // last check), as Kafka Streams does before joining the record.
        if ctx.timestamp == self.observed_time {
            self.emit_non_joined(ctx);
        }
        Some(Admit::Join)
    }

    /// Forward every record of the outer store whose window has closed
    /// (stream time past its timestamp + look-ahead + grace) as an
    /// unjoined result stamped with its own timestamp, oldest first, and
    /// delete it.
    fn emit_non_joined(&mut self, ctx: &mut ProcessorContext) {
        let Some(outer) = &self.outer else { return };
        let grace = self.windows.grace_ms;
        let min_ahead = self.windows.before_ms.min(self.windows.after_ms);
        // Entries with ts + min_ahead + grace < observed may be due.
        let cutoff = self.observed_time.saturating_sub(min_ahead).saturating_sub(grace);
        if outer.min_time.is_some_and(|m| m >= cutoff) {
            return;
        }
        let bound = encode_window_start(cutoff);
        let entries = match outer
            .store
            .borrow_mut()
            .range(Bound::Unbounded, Bound::Excluded(&bound[..]))
        {
            Ok(e) => e,
            Err(e) => return ctx.fail(e),
        };
        let name = outer.name.clone();
        let store = outer.store.clone();
        let mut min_left = cutoff;
        let ts = ctx.timestamp;
        for (store_key, bytes) in entries {
            let corrupt = || StoreError::new(&*name, "outer join store key is truncated");
            if store_key.len() < 9 {
                return ctx.fail(corrupt());
            }
            let t = decode_window_start(store_key[..8].try_into().expect("8 bytes"));
            let side = if store_key[8] == 0 { Side::This } else { Side::Other };
            if t.saturating_add(self.look_ahead(side)).saturating_add(grace) >= self.observed_time {
                min_left = min_left.min(t);
                continue;
            }
            let key = match decode_stored(&self.serdes.key_serde, &name, &store_key[9..]) {
                Ok(k) => k,
                Err(e) => return ctx.fail(e),
            };
            ctx.timestamp = t;
            match side {
                Side::This => {
                    let values = match decode_values(&name, &self.serdes.this_value_serde, &bytes) {
                        Ok(v) => v,
                        Err(e) => return ctx.fail(e),
                    };
                    for v in &values {
                        if let Some(out) = (self.joiner)(&key, Some(v), None) {
                            self.children.forward(ctx, key.clone(), out);
                        }
                    }
                }
                Side::Other => {
                    let values = match decode_values(&name, &self.serdes.other_value_serde, &bytes) {
                        Ok(v) => v,
                        Err(e) => return ctx.fail(e),
                    };
                    for v2 in &values {
                        if let Some(out) = (self.joiner)(&key, None, Some(v2)) {
                            self.children.forward(ctx, key.clone(), out);
                        }
                    }
                }
            }
            ctx.timestamp = ts;
            if let Err(e) = store.borrow_mut().delete(&store_key) {
                return ctx.fail(e);
            }
        }
        ctx.timestamp = ts;
        if let Some(outer) = &mut self.outer {
            outer.min_time = Some(min_left);
        }
    }

    /// A record of `side` that found no partner: it leaves when its window
    /// closes, through the outer store, or at once if it already has.
    fn no_partner(&mut self, ctx: &mut ProcessorContext, side: Side, bytes: Result<Vec<u8>, String>) -> bool {
        let ts = ctx.timestamp;
        if ts
            .saturating_add(self.look_ahead(side))
            .saturating_add(self.windows.grace_ms)
            < self.observed_time
        {
            return true;
        }
        let Some(outer) = &mut self.outer else { return false };
        let bytes = match bytes {
            Ok(b) => b,
            Err(e) => {
                ctx.dead_letter(format!("join value serialization failed: {e}"));
                return false;
            }
        };
        let k = outer_key(ts, side, &self.kbuf);
        let mut store = outer.store.borrow_mut();
        let mut list = Vec::new();
        if let Err(e) = store.get_into(&k, &mut list) {
            ctx.fail(e);
            return false;
        }
        list.extend_from_slice(&bytes);
        if let Err(e) = store.put(&k, &list) {
            ctx.fail(e);
            return false;
        }
        if store.wants_flush() {
            ctx.request_commit();
        }
        outer.min_time = Some(outer.min_time.map_or(ts, |m| m.min(ts)));
        false
    }

    /// A partner of side `side` at `t` was found: its outer store entry (if
    /// any) must never leave unjoined.
    fn joined(&mut self, ctx: &mut ProcessorContext, side: Side, t: i64) {
        let outer_side = match side {
            Side::This => self.left_outer,
            Side::Other => self.right_outer,
        };
        let Some(outer) = &self.outer else { return };
        if !outer_side {
            return;
        }
        // Read first: most partners were never waiting (they had partners
        // of their own), and a blind delete would log a tombstone for each.
        let k = outer_key(t, side, &self.kbuf);
        let mut store = outer.store.borrow_mut();
        match store.get_into(&k, &mut self.vbuf) {
            Ok(true) => {
                if let Err(e) = store.delete(&k) {
                    ctx.fail(e);
                }
            }
            Ok(false) => {}
            Err(e) => ctx.fail(e),
        }
    }

    /// A record of this (left) side.
    fn process_this(&mut self, ctx: &mut ProcessorContext, key: K, value: V) {
        let is_null = self.serdes.this_value_serde.is_null(&value);
        match self.admit(ctx, Side::This, &key, is_null) {
            None => return,
            Some(Admit::Unjoinable) => {
                if let Some(out) = (self.joiner)(&key, Some(&value), None) {
                    self.children.forward(ctx, key, out);
                }
                return;
            }
            Some(Admit::Join) => {}
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
        let partnerless = matches.is_empty();
        for (t2, bytes) in matches {
            let others = match decode_values(&self.other_name, &self.serdes.other_value_serde, &bytes) {
                Ok(o) => o,
                Err(e) => return ctx.fail(e),
            };
            self.joined(ctx, Side::Other, t2);
            for v2 in others {
                if let Some(out) = (self.joiner)(&key, Some(&value), Some(&v2)) {
                    ctx.timestamp = ts.max(t2);
                    self.children.forward(ctx, key.clone(), out);
                }
            }
        }
        ctx.timestamp = ts;
        if partnerless && self.left_outer {
            let mut bytes = Vec::new();
            let encoded = append_value(&mut bytes, &self.serdes.this_value_serde, &value).map(|_| bytes);
            if self.no_partner(ctx, Side::This, encoded) {
                if let Some(out) = (self.joiner)(&key, Some(&value), None) {
                    self.children.forward(ctx, key, out);
                }
            }
        }
        self.maybe_purge(ctx);
    }

    /// A record of the other (right) side.
    fn process_other(&mut self, ctx: &mut ProcessorContext, key: K, value: V2) {
        let is_null = self.serdes.other_value_serde.is_null(&value);
        match self.admit(ctx, Side::Other, &key, is_null) {
            None => return,
            Some(Admit::Unjoinable) => {
                if let Some(out) = (self.joiner)(&key, None, Some(&value)) {
                    self.children.forward(ctx, key, out);
                }
                return;
            }
            Some(Admit::Join) => {}
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
        let partnerless = matches.is_empty();
        for (t1, bytes) in matches {
            let these = match decode_values(&self.this_name, &self.serdes.this_value_serde, &bytes) {
                Ok(o) => o,
                Err(e) => return ctx.fail(e),
            };
            self.joined(ctx, Side::This, t1);
            for v1 in these {
                if let Some(out) = (self.joiner)(&key, Some(&v1), Some(&value)) {
                    ctx.timestamp = ts.max(t1);
                    self.children.forward(ctx, key.clone(), out);
                }
            }
        }
        ctx.timestamp = ts;
        if partnerless && self.right_outer {
            let mut bytes = Vec::new();
            let encoded = append_value(&mut bytes, &self.serdes.other_value_serde, &value).map(|_| bytes);
            if self.no_partner(ctx, Side::Other, encoded) {
                if let Some(out) = (self.joiner)(&key, None, Some(&value)) {
                    self.children.forward(ctx, key, out);
                }
            }
        }
        self.maybe_purge(ctx);
    }
}

/// What [`JoinCore::admit`] decided for a record.
enum Admit {
    /// Join it.
    Join,
    /// Its key is null on an outer side: it leaves at once, unjoined.
    Unjoinable,
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
