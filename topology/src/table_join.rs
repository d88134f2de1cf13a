//! Table–table joins: [`KTable::join`], [`KTable::left_join`] and
//! [`KTable::outer_join`].
//!
//! Each update of either table looks its key up in the other table's store
//! and emits the new joined value, or a tombstone when the joined row no
//! longer exists. The semantics are Kafka Streams' for unversioned stores
//! with caching disabled, which is what weir's test driver runs (it
//! flushes after every record): `KTableKTableInnerJoin`,
//! `KTableKTableLeftJoin`, `KTableKTableRightJoin`, `KTableKTableOuterJoin`
//! and the expected results of `TableTableJoinIntegrationTest` in
//! apache/kafka trunk of October 2024 (4.0.0-SNAPSHOT, commit 1eb7644):
//!
//! | join  | update of a side, the other side absent | other side present |
//! |-------|-----------------------------------------|--------------------|
//! | inner | nothing                                 | `joiner(this, other)`, or a tombstone if this side was deleted |
//! | left, left side  | `joiner(left, None)`; on a delete a tombstone only if there was a row | `joiner(left, Some(right))`, or a tombstone |
//! | left, right side | nothing                         | `joiner(left, right)` (`None` for a deleted right) |
//! | outer | `joiner(this, None)`; on a delete a tombstone only if there was a row | `joiner(this, other)` (`None` for a deleted side) |
//!
//! "Only if there was a row" is Kafka Streams' `sendOldValues`: with the
//! other side absent, a delete of a key that had no value emits nothing.
//! (With the other side present Kafka Streams does not look at the old
//! value: an inner or left join emits a tombstone even if no row existed,
//! and so does weir.) weir's tables do not carry old
//! values (a change flows as `(K, Option<V>)`, and the input's store is
//! overwritten before the change is forwarded at flush), so the join keeps
//! what it needs itself: whether a joined row exists for a key. A
//! materialized join reads that from its result store; a non-materialized
//! left or outer join keeps a small logged store of the keys that have a
//! row (empty values). That is exact: the row of a key exists before a
//! delete of this side with the other side absent iff this side had a
//! value, which is what Kafka Streams tests with the old value.
//!
//! Timestamps differ from Kafka Streams on purpose: weir's stores do not
//! keep a timestamp per row, and a table forwards its changes at flush
//! stamped with the task's stream time, so joined rows carry that time
//! (Kafka Streams stamps them with the larger of the two rows' timestamps;
//! the two agree while records arrive in timestamp order).

use std::cell::RefCell;
use std::marker::PhantomData;
use std::rc::Rc;
use std::sync::Arc;

use crate::builder::GraphBuilder;
use crate::context::ProcessorContext;
use crate::grouped::decode_stored;
use crate::ktable::{Derived, Joinable, KTable, Stored, TableState};
use crate::materialized::Materialized;
use crate::node::{ChildSlot, Children, Node};
use crate::serde::Serde;
use crate::store::{KvStoreRef, StoreError, StoreKind, StoreSpec};
use crate::topology::NodeKind;
use crate::Data;

/// How a table–table join keeps its result: in a queryable store, or not
/// at all (the result table then cannot be joined or looked up itself).
/// `S` is the state of the result table: [`Stored`] for
/// [`TableJoined::materialized`], [`Derived`] for
/// [`TableJoined::unmaterialized`].
pub struct TableJoined<R, S: TableState = Stored> {
    store: Option<(Materialized, Serde<R>)>,
    _state: PhantomData<S>,
}

impl<R: 'static> TableJoined<R, Stored> {
    /// Materialize the join result in the store `materialized` describes,
    /// its values written with `value_serde`. The result then forwards its
    /// changes at commit (like every materialized table) and can be queried
    /// and joined.
    pub fn materialized(materialized: Materialized, value_serde: Serde<R>) -> Self {
        TableJoined {
            store: Some((materialized, value_serde)),
            _state: PhantomData,
        }
    }

    /// The same materialization, typed as a [`Derived`] result: for a
    /// program that chooses at run time whether to materialize (both
    /// branches then have one type). The result keeps its store (and
    /// [`KTable::store_name`]) but cannot be joined.
    pub fn into_derived(self) -> TableJoined<R, Derived> {
        TableJoined {
            store: self.store,
            _state: PhantomData,
        }
    }
}

impl<R: 'static> TableJoined<R, Derived> {
    /// Do not materialize the result: each joined row is forwarded as it is
    /// computed. A left or outer join still keeps a small store of the keys
    /// that have a row (see the module docs).
    pub fn unmaterialized() -> Self {
        TableJoined {
            store: None,
            _state: PhantomData,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum JoinKind {
    Inner,
    Left,
    Outer,
}

impl JoinKind {
    /// (name of the node of updates of this table, of the other table,
    /// store-name prefix), after Kafka Streams' processor names.
    fn names(self) -> (&'static str, &'static str, &'static str) {
        match self {
            JoinKind::Inner => ("KTABLE-JOINTHIS", "KTABLE-JOINOTHER", "KTABLE-JOIN"),
            JoinKind::Left => ("KTABLE-LEFTJOINTHIS", "KTABLE-LEFTJOINOTHER", "KTABLE-LEFTJOIN"),
            JoinKind::Outer => ("KTABLE-OUTERJOINTHIS", "KTABLE-OUTERJOINOTHER", "KTABLE-OUTERJOIN"),
        }
    }

    /// Whether a joined row cannot exist without the other side when
    /// `this_side` (the table `join` was called on) is updated: then an
    /// update finding the other side absent emits nothing.
    fn needs_other(self, this_side: bool) -> bool {
        match self {
            JoinKind::Inner => true,
            JoinKind::Left => !this_side,
            JoinKind::Outer => false,
        }
    }
}

/// The user's joiner, by kind; `apply` gives the joined row of the two
/// current values, `None` if no row exists for them.
enum Joiner<V, VO, R> {
    Inner(Arc<InnerJoiner<V, VO, R>>),
    Left(Arc<LeftJoiner<V, VO, R>>),
    Outer(Arc<OuterJoiner<V, VO, R>>),
}

type InnerJoiner<V, VO, R> = dyn Fn(&V, &VO) -> R + Send + Sync;
type LeftJoiner<V, VO, R> = dyn Fn(&V, Option<&VO>) -> R + Send + Sync;
type OuterJoiner<V, VO, R> = dyn Fn(Option<&V>, Option<&VO>) -> R + Send + Sync;

impl<V, VO, R> Clone for Joiner<V, VO, R> {
    fn clone(&self) -> Self {
        match self {
            Joiner::Inner(f) => Joiner::Inner(f.clone()),
            Joiner::Left(f) => Joiner::Left(f.clone()),
            Joiner::Outer(f) => Joiner::Outer(f.clone()),
        }
    }
}

impl<V, VO, R> Joiner<V, VO, R> {
    fn kind(&self) -> JoinKind {
        match self {
            Joiner::Inner(_) => JoinKind::Inner,
            Joiner::Left(_) => JoinKind::Left,
            Joiner::Outer(_) => JoinKind::Outer,
        }
    }

    fn apply(&self, this: Option<&V>, other: Option<&VO>) -> Option<R> {
        match (self, this, other) {
            (Joiner::Inner(f), Some(a), Some(b)) => Some(f(a, b)),
            (Joiner::Left(f), Some(a), b) => Some(f(a, b)),
            (Joiner::Outer(f), a, b) if a.is_some() || b.is_some() => Some(f(a, b)),
            _ => None,
        }
    }
}

/// The store-name of a table, checked for a table–table join: the table
/// must be a materialized key-value table of the same builder. Both sides
/// are `S: Joinable` ([`Stored`]), so the errors here guard the invariant
/// that a `Stored` table has a key-value store and a value serde; user code
/// cannot reach them (see tests/ui/).
fn joinable_store<K, V, S: TableState>(
    g: &GraphBuilder,
    table: &KTable<K, V, S>,
    side: &str,
) -> Result<String, String> {
    let (Some(store), Some(_)) = (&table.store, &table.value_serde) else {
        return Err(format!(
            "the {side} table is not materialized: a table-table join looks every update up in the other \
             table's store, so both tables must have one (join source tables or aggregation results)"
        ));
    };
    match g.stores.iter().find(|s| &s.name == store).map(|s| s.kind) {
        Some(StoreKind::Window { .. }) => Err(format!(
            "the {side} table's store {store:?} is a window store: only key-value tables can be joined"
        )),
        _ => Ok(store.clone()),
    }
}

impl<K: Data, V: Data, S: TableState> KTable<K, V, S> {
    /// Inner table–table join: a row `joiner(this_value, other_value)` for
    /// every key present in both tables, updated (or deleted with a
    /// tombstone) whenever either table changes. Both tables must be
    /// materialized (source tables, aggregation results or materialized
    /// joins) and co-partitioned (same key, same partition count).
    ///
    /// ```
    /// # use weir_topology::*;
    /// let mut b = StreamsBuilder::new();
    /// let users = b.table("users", Serdes::string(), Serdes::string(), Materialized::named("users"));
    /// let plans = b.table("plans", Serdes::string(), Serdes::string(), Materialized::named("plans"));
    /// let joined = TableJoined::materialized(Materialized::named("user-plans"), Serdes::string());
    /// users
    ///     .join(&plans, |user, plan| format!("{user}:{plan}"), joined)
    ///     .to("user-plans", Serdes::string(), Serdes::string());
    /// assert!(b.build()?.describe("app").contains("KTABLE-JOINTHIS-"));
    /// # Ok::<(), TopologyError>(())
    /// ```
    pub fn join<VO: Data, R: Data, SO: Joinable, SR: TableState>(
        &self,
        other: &KTable<K, VO, SO>,
        joiner: impl Fn(&V, &VO) -> R + Send + Sync + 'static,
        joined: TableJoined<R, SR>,
    ) -> KTable<K, R, SR>
    where
        S: Joinable,
    {
        self.table_join(other, Joiner::Inner(Arc::new(joiner)), joined)
    }

    /// Left table–table join: a row `joiner(this_value, other_value)` for
    /// every key of this table, with `None` while the other table has no
    /// value for it. Requirements as for [`KTable::join`].
    pub fn left_join<VO: Data, R: Data, SO: Joinable, SR: TableState>(
        &self,
        other: &KTable<K, VO, SO>,
        joiner: impl Fn(&V, Option<&VO>) -> R + Send + Sync + 'static,
        joined: TableJoined<R, SR>,
    ) -> KTable<K, R, SR>
    where
        S: Joinable,
    {
        self.table_join(other, Joiner::Left(Arc::new(joiner)), joined)
    }

    /// Outer table–table join: a row `joiner(this_value, other_value)` for
    /// every key of either table, with `None` for the side that has no
    /// value (never both). Requirements as for [`KTable::join`].
    pub fn outer_join<VO: Data, R: Data, SO: Joinable, SR: TableState>(
        &self,
        other: &KTable<K, VO, SO>,
        joiner: impl Fn(Option<&V>, Option<&VO>) -> R + Send + Sync + 'static,
        joined: TableJoined<R, SR>,
    ) -> KTable<K, R, SR>
    where
        S: Joinable,
    {
        self.table_join(other, Joiner::Outer(Arc::new(joiner)), joined)
    }

    fn table_join<VO: Data, R: Data, SO: Joinable, SR: TableState>(
        &self,
        other: &KTable<K, VO, SO>,
        joiner: Joiner<V, VO, R>,
        joined: TableJoined<R, SR>,
    ) -> KTable<K, R, SR> {
        let kind = joiner.kind();
        let (this_kind, other_kind, store_kind) = kind.names();
        let (merge, stores, materialized_store) = {
            let mut g = self.graph.borrow_mut();
            let this_side = g.add_node(this_kind, NodeKind::Processor, vec![self.node]);
            let other_side = g.add_node(other_kind, NodeKind::Processor, vec![other.node]);
            let merge = g.add_node("KTABLE-MERGE", NodeKind::Processor, vec![this_side, other_side]);
            let fail = |g: &mut GraphBuilder, node: usize, reason: String| g.node_error(node, reason);
            let same_builder = Rc::ptr_eq(&self.graph, &other.graph);
            if !same_builder {
                fail(
                    &mut g,
                    this_side,
                    "the other table belongs to another StreamsBuilder".to_string(),
                );
            }
            let this_store = joinable_store(&g, self, "left").map_err(|e| fail(&mut g, this_side, e));
            let other_store = joinable_store(&g, other, "right").map_err(|e| fail(&mut g, other_side, e));
            // The result's store: the materialized result, or (left and
            // outer joins) the keys that have a row; see the module docs.
            let result = match &joined.store {
                Some((m, serde)) => {
                    let name = g.store_name(m, store_kind);
                    g.add_store(StoreSpec {
                        name: name.clone(),
                        kind: StoreKind::KeyValue,
                        logged: m.logged,
                    });
                    g.record_store_format(&name, &self.key_serde, serde);
                    Some(name)
                }
                None if kind != JoinKind::Inner => {
                    let name = format!("{store_kind}-ROWS-STORE-{merge:010}");
                    g.add_store(StoreSpec {
                        name: name.clone(),
                        kind: StoreKind::KeyValue,
                        logged: true,
                    });
                    Some(name)
                }
                None => None,
            };
            // Each side reads the other's store (and both write the
            // result's): the join and both tables are in one sub-topology,
            // hence one task per partition.
            for side in [this_side, other_side] {
                for store in [this_store.as_ref().ok(), other_store.as_ref().ok(), result.as_ref()]
                    .into_iter()
                    .flatten()
                {
                    g.connect_store(side, store);
                }
            }
            let materialized_store = result.clone().filter(|_| joined.store.is_some());
            let stores = match (this_store, other_store) {
                (Ok(t), Ok(o)) if same_builder => Some((t, o, result)),
                _ => None,
            };
            (merge, stores, materialized_store)
        };
        let out = ChildSlot::<K, Option<R>>::new();
        let result_serde = joined.store.as_ref().map(|(_, s)| s.clone());
        if let (Some((this_store, other_store, result)), Some(this_serde), Some(other_serde)) =
            (stores, self.value_serde.clone(), other.value_serde.clone())
        {
            let key_serde = self.key_serde.clone();
            let result_serde2 = result_serde.clone();
            let out2 = out.clone();
            let make_core = Arc::new(move |ictx: &mut crate::context::InitContext<'_>| {
                let result = match &result {
                    Some(name) => Some(ResultStore {
                        store: ictx.key_value_store(name)?,
                        name: Arc::from(name.as_str()),
                        serde: result_serde2.clone(),
                    }),
                    None => None,
                };
                let core = JoinCore {
                    joiner: joiner.clone(),
                    this_store: ictx.key_value_store(&this_store)?,
                    this_name: Arc::from(this_store.as_str()),
                    this_serde: this_serde.clone(),
                    other_store: ictx.key_value_store(&other_store)?,
                    other_name: Arc::from(other_store.as_str()),
                    other_serde: other_serde.clone(),
                    key_serde: key_serde.clone(),
                    result,
                    children: out2.instantiate(ictx)?,
                    kbuf: Vec::new(),
                    vbuf: Vec::new(),
                };
                Ok(Rc::new(RefCell::new(core)))
            });
            let mk = make_core.clone();
            self.slot.push(Arc::new(move |ictx| {
                let mk = mk.clone();
                let core = ictx.shared(merge, move |ictx| mk(ictx))?;
                Ok(Box::new(ThisSide { core }) as Box<dyn Node<K, Option<V>>>)
            }));
            let mk = make_core;
            other.slot.push(Arc::new(move |ictx| {
                let mk = mk.clone();
                let core = ictx.shared(merge, move |ictx| mk(ictx))?;
                Ok(Box::new(OtherSide { core }) as Box<dyn Node<K, Option<VO>>>)
            }));
        }
        KTable::new(
            self.graph.clone(),
            merge,
            out,
            materialized_store,
            self.key_serde.clone(),
            result_serde,
            None,
        )
    }
}

/// The join's own store: the materialized result (`serde` set), or the
/// keys that have a row (empty values).
struct ResultStore<R> {
    store: KvStoreRef,
    name: Arc<str>,
    serde: Option<Serde<R>>,
}

/// The per-task state of a table–table join, shared by its two sides.
struct JoinCore<K, V, VO, R> {
    joiner: Joiner<V, VO, R>,
    this_store: KvStoreRef,
    this_name: Arc<str>,
    this_serde: Serde<V>,
    other_store: KvStoreRef,
    other_name: Arc<str>,
    other_serde: Serde<VO>,
    key_serde: Serde<K>,
    result: Option<ResultStore<R>>,
    children: Children<K, Option<R>>,
    kbuf: Vec<u8>,
    vbuf: Vec<u8>,
}

/// The current value of `key` (serialized in `kbuf`) in a table's store.
fn lookup<T: 'static>(
    store: &KvStoreRef,
    name: &str,
    serde: &Serde<T>,
    kbuf: &[u8],
    vbuf: &mut Vec<u8>,
) -> Result<Option<T>, StoreError> {
    if store.borrow_mut().get_into(kbuf, vbuf)? {
        decode_stored(serde, name, vbuf).map(Some)
    } else {
        Ok(None)
    }
}

impl<K: Data, V: Data, VO: Data, R: Data> JoinCore<K, V, VO, R> {
    /// An update of this table (`this_side`) or of the other table: the
    /// new value of the updated side; the other side is read from its
    /// store.
    fn update(&mut self, ctx: &mut ProcessorContext, key: K, this_side: bool, this: Option<V>, other: Option<VO>) {
        let kind = self.joiner.kind();
        let (this_present, other_present) = (this.is_some(), other.is_some());
        let (updated, looked_up) = if this_side {
            (this_present, other_present)
        } else {
            (other_present, this_present)
        };
        if !looked_up {
            if kind.needs_other(this_side) {
                return;
            }
            // A delete with the other side absent: a tombstone only if the
            // key had a row (Kafka Streams' old-value check).
            if !updated {
                let had_row = match &self.result {
                    Some(r) => match r.store.borrow_mut().get_into(&self.kbuf, &mut self.vbuf) {
                        Ok(found) => found,
                        Err(e) => return ctx.fail(e),
                    },
                    None => false,
                };
                if !had_row {
                    return;
                }
            }
        }
        let row = self.joiner.apply(this.as_ref(), other.as_ref());
        let Some(result) = &self.result else {
            return self.children.forward(ctx, key, row);
        };
        let mut store = result.store.borrow_mut();
        let written = match (&row, &result.serde) {
            (Some(r), Some(serde)) => {
                self.vbuf.clear();
                if let Err(e) = serde.serialize(r, &mut self.vbuf) {
                    return ctx.dead_letter(format!("join result serialization failed: {e}"));
                }
                store.put(&self.kbuf, &self.vbuf)
            }
            (Some(_), None) => store.put(&self.kbuf, &[]),
            (None, _) => store.delete(&self.kbuf),
        };
        if let Err(e) = written {
            return ctx.fail(e);
        }
        if store.wants_flush() {
            ctx.request_commit();
        }
        drop(store);
        // A materialized result is forwarded when its store is flushed.
        if result.serde.is_none() {
            self.children.forward(ctx, key, row);
        }
    }

    fn process_this(&mut self, ctx: &mut ProcessorContext, key: K, value: Option<V>) {
        if !self.key_bytes(ctx, &key) {
            return;
        }
        match lookup(
            &self.other_store,
            &self.other_name,
            &self.other_serde,
            &self.kbuf,
            &mut self.vbuf,
        ) {
            Ok(other) => self.update(ctx, key, true, value, other),
            Err(e) => ctx.fail(e),
        }
    }

    fn process_other(&mut self, ctx: &mut ProcessorContext, key: K, value: Option<VO>) {
        if !self.key_bytes(ctx, &key) {
            return;
        }
        match lookup(
            &self.this_store,
            &self.this_name,
            &self.this_serde,
            &self.kbuf,
            &mut self.vbuf,
        ) {
            Ok(this) => self.update(ctx, key, false, this, value),
            Err(e) => ctx.fail(e),
        }
    }

    fn key_bytes(&mut self, ctx: &mut ProcessorContext, key: &K) -> bool {
        self.kbuf.clear();
        if let Err(e) = self.key_serde.serialize(key, &mut self.kbuf) {
            ctx.dead_letter(format!("join key serialization failed: {e}"));
            return false;
        }
        true
    }

    /// Forward the materialized result's changes (if any), then flush the
    /// children. Both sides call it: whichever table is flushed last, its
    /// updates leave in the same commit.
    fn flush(&mut self, ctx: &mut ProcessorContext) {
        if let Some(ResultStore {
            store,
            name,
            serde: Some(serde),
        }) = &self.result
        {
            forward_flushed(ctx, store, name, &self.key_serde, serde, &mut self.children);
        }
        self.children.flush(ctx);
    }
}

/// Flush a materialized table's store and forward its changes (latest
/// value per key since the last flush, `None` for deletes), stamped with
/// stream time, staging them as changelog records. The common commit-time
/// half of every materialized table (see `KvAggregateNode::flush`).
pub(crate) fn forward_flushed<K: Data, V: Data>(
    ctx: &mut ProcessorContext,
    store: &KvStoreRef,
    name: &Arc<str>,
    key_serde: &Serde<K>,
    value_serde: &Serde<V>,
    children: &mut Children<K, Option<V>>,
) {
    let records = match store.borrow_mut().flush() {
        Ok(r) => r,
        Err(e) => return ctx.fail(e),
    };
    let ts = ctx.timestamp;
    ctx.timestamp = ctx.stream_time.max(ts);
    for rec in records {
        let key = match key_serde.deserialize(&rec.key) {
            Ok(k) => k,
            Err(e) => {
                ctx.fail(StoreError::new(&**name, format!("stored key does not decode: {e}")));
                break;
            }
        };
        let value = match rec
            .value
            .as_deref()
            .map(|b| decode_stored(value_serde, name, b))
            .transpose()
        {
            Ok(v) => v,
            Err(e) => {
                ctx.fail(e);
                break;
            }
        };
        ctx.changelog.push((name.clone(), rec));
        children.forward(ctx, key, value);
    }
    ctx.timestamp = ts;
}

/// Updates of the table `join` was called on. This side punctuates and
/// closes the shared children (once per task); both sides flush them.
struct ThisSide<K, V, VO, R> {
    core: Rc<RefCell<JoinCore<K, V, VO, R>>>,
}

impl<K: Data, V: Data, VO: Data, R: Data> Node<K, Option<V>> for ThisSide<K, V, VO, R> {
    fn process(&mut self, ctx: &mut ProcessorContext, key: K, value: Option<V>) {
        self.core.borrow_mut().process_this(ctx, key, value)
    }
    fn flush(&mut self, ctx: &mut ProcessorContext) {
        self.core.borrow_mut().flush(ctx)
    }
    fn punctuate(&mut self, ctx: &mut ProcessorContext) {
        self.core.borrow_mut().children.punctuate(ctx)
    }
    fn close(&mut self, ctx: &mut ProcessorContext) {
        self.core.borrow_mut().children.close(ctx)
    }
}

/// Updates of the other table.
struct OtherSide<K, V, VO, R> {
    core: Rc<RefCell<JoinCore<K, V, VO, R>>>,
}

impl<K: Data, V: Data, VO: Data, R: Data> Node<K, Option<VO>> for OtherSide<K, V, VO, R> {
    fn process(&mut self, ctx: &mut ProcessorContext, key: K, value: Option<VO>) {
        self.core.borrow_mut().process_other(ctx, key, value)
    }
    /// The other table may be flushed after this one: its updates of this
    /// commit must not wait for the next commit.
    fn flush(&mut self, ctx: &mut ProcessorContext) {
        self.core.borrow_mut().flush(ctx)
    }
    fn punctuate(&mut self, _ctx: &mut ProcessorContext) {}
    fn close(&mut self, _ctx: &mut ProcessorContext) {}
}
