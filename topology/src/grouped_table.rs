//! Re-grouping a table: [`KTable::group_by`] and the aggregations of a
//! [`KGroupedTable`] (count, reduce, aggregate).
//!
//! A table row belongs to one group at a time. When it changes, its old
//! value must leave its old group (the *subtractor*) and its new value
//! join its new group (the *adder*); a deleted row only leaves. This is
//! Kafka Streams' `KTable#groupBy` (`KTableRepartitionMap`,
//! `KTableAggregate`, `KTableReduce` in apache/kafka trunk of October 2024,
//! 4.0.0-SNAPSHOT, commit 1eb7644):
//!
//! 1. The group-by node (`KTABLE-SELECT`) maps each change of the input
//!    table to `(group key, value)` with the selector and sends, through
//!    an internal repartition topic `{store}-repartition` (always: the
//!    grouping key is a new key), the pair "subtract the old value, add the
//!    new value" as a [`GroupChange`]: one record `{new, old}` when the row stays
//!    in its group, else `{old}` to the old group followed by `{new}` to
//!    the new group (a delete sends only `{old}`, a new row only `{new}`).
//!    See [`GroupChangeSerde`] for the wire format.
//! 2. The aggregation node, in the sub-topology reading that topic, first
//!    subtracts the old value from the group's aggregate (if both exist),
//!    then adds the new value (starting from the initializer, or for reduce
//!    from the value itself, when the group has no aggregate). Its result
//!    is a materialized table that forwards its changes at commit.
//!
//! The old value is not part of a table change inside weir (a change flows
//! as `(K, Option<V>)`), and the input table's store has already been
//! overwritten when the change is forwarded (tables forward at flush). So
//! the group-by node keeps what it needs itself: a logged key-value store
//! `{store}-groupby-previous` of the last `(group key, value)` it sent per
//! input key. Keeping the selected pair rather than the input value means
//! the input table need not be materialized nor have a value serde, the
//! selector runs once per change, and a restore from the changelog brings
//! back exactly what was last added to each group.
//!
//! A count that drops to 0 stays, as 0 (Kafka Streams' count subtractor is
//! `count - 1`). A group is deleted (a tombstone is emitted) only when the
//! subtractor says so by returning `None` and no new value is added — the
//! counterpart of a Kafka Streams subtractor returning `null`.

use std::marker::PhantomData;
use std::sync::Arc;

use crate::builder::Graph;
use crate::context::ProcessorContext;
use crate::grouped::{aggregate_step, count_step, declare_kv_store, decode_stored, reduce_step, Step};
use crate::kstream::KStream;
use crate::ktable::{KTable, TableState};
use crate::materialized::Materialized;
use crate::node::{ChildSlot, Children, Node};
use crate::serde::{Serde, SerdeError, SerdeImpl, Serdes};
use crate::store::{KvStoreRef, StoreError, StoreKind, StoreSpec};
use crate::table_join::forward_flushed;
use crate::topology::NodeKind;
use crate::Data;

/// What the repartition topic of a grouped table carries per record: the
/// value to subtract from the record key's group (`old`) and the value to
/// add to it (`new`); at least one is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupChange<V> {
    pub new: Option<V>,
    pub old: Option<V>,
}

/// The wire format of [`GroupChange`] in a grouped table's repartition topic:
///
/// * byte 0: flags — `0x01` the new value is present, `0x02` the old value
///   is present (at least one is; other bits must be 0);
/// * both present: the new value's length (4 bytes, big-endian), the new
///   value, then the old value (to the end);
/// * one present: that value.
///
/// Values are encoded with the grouped value serde.
pub struct GroupChangeSerde<V> {
    inner: Serde<V>,
}

impl<V: 'static> GroupChangeSerde<V> {
    /// The serde of changes of values written with `inner`.
    pub fn serde(inner: Serde<V>) -> Serde<GroupChange<V>> {
        Serde::new(GroupChangeSerde { inner })
    }
}

const NEW: u8 = 0x01;
const OLD: u8 = 0x02;

impl<V: 'static> SerdeImpl<GroupChange<V>> for GroupChangeSerde<V> {
    fn serialize(&self, value: &GroupChange<V>, out: &mut Vec<u8>) -> Result<(), SerdeError> {
        let flags = if value.new.is_some() { NEW } else { 0 } | if value.old.is_some() { OLD } else { 0 };
        if flags == 0 {
            return Err(SerdeError("a change needs a new or an old value".into()));
        }
        out.push(flags);
        match (&value.new, &value.old) {
            (Some(new), Some(old)) => {
                let mark = out.len();
                out.extend_from_slice(&[0; 4]);
                self.inner.serialize(new, out)?;
                let len = u32::try_from(out.len() - mark - 4)
                    .map_err(|_| SerdeError("new value longer than 4 GiB".into()))?;
                out[mark..mark + 4].copy_from_slice(&len.to_be_bytes());
                self.inner.serialize(old, out)
            }
            (Some(v), None) | (None, Some(v)) => self.inner.serialize(v, out),
            (None, None) => Ok(()),
        }
    }

    fn deserialize(&self, bytes: &[u8]) -> Result<GroupChange<V>, SerdeError> {
        let Some((&flags, rest)) = bytes.split_first() else {
            return Err(SerdeError("empty change record".into()));
        };
        match flags {
            NEW => Ok(GroupChange {
                new: Some(self.inner.deserialize(rest)?),
                old: None,
            }),
            OLD => Ok(GroupChange {
                new: None,
                old: Some(self.inner.deserialize(rest)?),
            }),
            f if f == NEW | OLD => {
                let truncated = || SerdeError("change record truncated".into());
                let len: [u8; 4] = rest.get(..4).ok_or_else(truncated)?.try_into().expect("4 bytes");
                let len = u32::from_be_bytes(len) as usize;
                let new = rest.get(4..4 + len).ok_or_else(truncated)?;
                Ok(GroupChange {
                    new: Some(self.inner.deserialize(new)?),
                    old: Some(self.inner.deserialize(&rest[4 + len..])?),
                })
            }
            f => Err(SerdeError(format!("invalid change flags {f:#04x}"))),
        }
    }

    fn name(&self) -> &'static str {
        "change"
    }
}

/// Adds the group-by node when the aggregation (which names the stores
/// and topic) is defined: given the aggregation's store name and whether
/// to log, returns the stream of changes keyed by group.
type Select<KR, VR> = Box<dyn FnOnce(&str, bool) -> KStream<KR, GroupChange<VR>>>;

/// A table re-grouped by [`KTable::group_by`], ready to aggregate.
pub struct KGroupedTable<KR, VR> {
    graph: Graph,
    select: Select<KR, VR>,
    key_serde: Serde<KR>,
    value_serde: Serde<VR>,
}

impl<K: Data, V: Data, S: TableState> KTable<K, V, S> {
    /// Group the rows of this table by a new key: `selector` maps each row
    /// to `(group key, value)`. An aggregation of the result keeps one row
    /// per group and follows every change of this table: a changed row's
    /// old value is subtracted from its old group and its new value added
    /// to its new group; a deleted row is subtracted. The rows are
    /// repartitioned by group key through an internal topic written with
    /// these serdes (see the module docs for what is sent).
    ///
    /// ```
    /// # use weir_topology::*;
    /// let mut b = StreamsBuilder::new();
    /// b.table::<String, String>("user-regions", Serdes::string(), Serdes::string(), Materialized::unnamed())
    ///     .group_by(|_user, region| (region.clone(), ()), Serdes::string(), Serdes::unit())
    ///     .count(Materialized::named("users-per-region"))
    ///     .to("users-per-region", Serdes::string(), Serdes::u64());
    /// assert!(b.build()?.describe("app").contains("(topic: app-users-per-region-repartition)"));
    /// # Ok::<(), TopologyError>(())
    /// ```
    pub fn group_by<KR: Data, VR: Data>(
        &self,
        selector: impl Fn(&K, &V) -> (KR, VR) + Send + Sync + 'static,
        key_serde: Serde<KR>,
        value_serde: Serde<VR>,
    ) -> KGroupedTable<KR, VR> {
        let table = self.clone();
        let selector: Arc<Selector<K, V, KR, VR>> = Arc::new(selector);
        let (ks, vs) = (key_serde.clone(), value_serde.clone());
        let select: Select<KR, VR> = Box::new(move |store: &str, logged: bool| {
            let previous = format!("{store}-groupby-previous");
            let id = {
                let mut g = table.graph.borrow_mut();
                let id = g.add_node("KTABLE-SELECT", NodeKind::Processor, vec![table.node]);
                g.add_store(StoreSpec {
                    name: previous.clone(),
                    kind: StoreKind::KeyValue,
                    logged,
                });
                g.connect_store(id, &previous);
                id
            };
            let out = ChildSlot::<KR, GroupChange<VR>>::new();
            let out2 = out.clone();
            let in_key_serde = table.key_serde.clone();
            table.slot.push(Arc::new(move |ictx| {
                Ok(Box::new(SelectNode {
                    selector: selector.clone(),
                    store: ictx.key_value_store(&previous)?,
                    name: Arc::from(previous.as_str()),
                    in_key_serde: in_key_serde.clone(),
                    key_serde: ks.clone(),
                    value_serde: vs.clone(),
                    children: out2.instantiate(ictx)?,
                    kbuf: Vec::new(),
                    vbuf: Vec::new(),
                    nbuf: Vec::new(),
                }) as Box<dyn Node<K, Option<V>>>)
            }));
            KStream {
                graph: table.graph.clone(),
                node: id,
                slot: out,
                repartition_required: true,
                _marker: PhantomData,
            }
        });
        KGroupedTable {
            graph: self.graph.clone(),
            select,
            key_serde,
            value_serde,
        }
    }
}

type Selector<K, V, KR, VR> = dyn Fn(&K, &V) -> (KR, VR) + Send + Sync;
/// Add a value to a group's aggregate (`None`: the group has none yet):
/// the step of a stream aggregation.
type Adder<K, V, A> = Step<K, V, A>;
/// Subtract a value from a group's aggregate; `None` deletes the group.
type Subtractor<K, V, A> = Arc<dyn Fn(&K, V, A) -> Option<A> + Send + Sync>;

impl<KR: Data, VR: Data> KGroupedTable<KR, VR> {
    /// The number of rows per group. A group whose rows all left keeps the
    /// count 0 (as in Kafka Streams).
    pub fn count(self, materialized: Materialized) -> KTable<KR, u64> {
        self.aggregate_with(
            "KTABLE-AGGREGATE",
            materialized,
            Serdes::u64(),
            count_step(),
            Arc::new(|_, _, n| Some(n.saturating_sub(1))),
        )
    }

    /// Combine the values of each group: `adder(aggregate, value)` when a
    /// value joins the group (the first value is the aggregate as is), and
    /// `subtractor(aggregate, value)` when it leaves; a subtractor returning
    /// `None` deletes the group (unless a value joins it in the same
    /// change), as a Kafka Streams subtractor returning `null` does.
    pub fn reduce(
        self,
        adder: impl Fn(VR, VR) -> VR + Send + Sync + 'static,
        subtractor: impl Fn(VR, VR) -> Option<VR> + Send + Sync + 'static,
        materialized: Materialized,
    ) -> KTable<KR, VR> {
        let serde = self.value_serde.clone();
        self.aggregate_with(
            "KTABLE-REDUCE",
            materialized,
            serde,
            reduce_step(adder),
            Arc::new(move |_, v, agg| subtractor(agg, v)),
        )
    }

    /// Fold the values of each group into an aggregate that starts at
    /// `init()`: `adder(key, value, aggregate)` when a value joins the
    /// group, `subtractor(key, value, aggregate)` when it leaves; a
    /// subtractor returning `None` deletes the group (unless a value joins
    /// it in the same change).
    pub fn aggregate<A: Data>(
        self,
        init: impl Fn() -> A + Send + Sync + 'static,
        adder: impl Fn(&KR, VR, A) -> A + Send + Sync + 'static,
        subtractor: impl Fn(&KR, VR, A) -> Option<A> + Send + Sync + 'static,
        aggregate_serde: Serde<A>,
        materialized: Materialized,
    ) -> KTable<KR, A> {
        self.aggregate_with(
            "KTABLE-AGGREGATE",
            materialized,
            aggregate_serde,
            aggregate_step(init, adder),
            Arc::new(subtractor),
        )
    }

    fn aggregate_with<A: Data>(
        self,
        kind: &str,
        materialized: Materialized,
        aggregate_serde: Serde<A>,
        add: Adder<KR, VR, A>,
        subtract: Subtractor<KR, VR, A>,
    ) -> KTable<KR, A> {
        let store = self.graph.borrow_mut().store_name(&materialized, kind);
        let selected = (self.select)(&store, materialized.logged);
        let input = selected.repartition(
            &store,
            self.key_serde.clone(),
            GroupChangeSerde::serde(self.value_serde),
        );
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
        let out = ChildSlot::<KR, Option<A>>::new();
        let (out2, store2, kserde, aserde) = (
            out.clone(),
            store.clone(),
            self.key_serde.clone(),
            aggregate_serde.clone(),
        );
        input.attach(Arc::new(move |ictx| {
            Ok(Box::new(TableAggregateNode {
                store: ictx.key_value_store(&store2)?,
                name: Arc::from(store2.as_str()),
                key_serde: kserde.clone(),
                agg_serde: aserde.clone(),
                add: add.clone(),
                subtract: subtract.clone(),
                children: out2.instantiate(ictx)?,
                kbuf: Vec::new(),
                vbuf: Vec::new(),
            }) as Box<dyn Node<KR, GroupChange<VR>>>)
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
}

/// Maps table changes to group changes (see the module docs), keeping the
/// last `(group key, value)` sent per input key in `store`, encoded as the
/// group key's length (4 bytes, big-endian), the group key, the value.
struct SelectNode<K, V, KR, VR> {
    selector: Arc<Selector<K, V, KR, VR>>,
    store: KvStoreRef,
    name: Arc<str>,
    in_key_serde: Serde<K>,
    key_serde: Serde<KR>,
    value_serde: Serde<VR>,
    children: Children<KR, GroupChange<VR>>,
    kbuf: Vec<u8>,
    vbuf: Vec<u8>,
    nbuf: Vec<u8>,
}

impl<K: Data, V: Data, KR: Data, VR: Data> SelectNode<K, V, KR, VR> {
    /// Encode `(key, value)` into `nbuf`; returns the key's length.
    fn encode(&mut self, key: &KR, value: &VR) -> Result<usize, String> {
        self.nbuf.clear();
        self.nbuf.extend_from_slice(&[0; 4]);
        self.key_serde
            .serialize(key, &mut self.nbuf)
            .map_err(|e| format!("group key serialization failed: {e}"))?;
        let klen = self.nbuf.len() - 4;
        let len = u32::try_from(klen).map_err(|_| "group key longer than 4 GiB".to_string())?;
        self.nbuf[..4].copy_from_slice(&len.to_be_bytes());
        self.value_serde
            .serialize(value, &mut self.nbuf)
            .map_err(|e| format!("group value serialization failed: {e}"))?;
        Ok(klen)
    }

    /// Decode the stored previous pair in `vbuf`, with the group key bytes'
    /// range.
    fn decode_previous(&self) -> Result<(KR, VR, std::ops::Range<usize>), StoreError> {
        let corrupt = |m: String| StoreError::new(&*self.name, m);
        let len: [u8; 4] = self
            .vbuf
            .get(..4)
            .ok_or_else(|| corrupt("previous value shorter than 4 bytes".into()))?
            .try_into()
            .expect("4 bytes");
        let end = 4 + u32::from_be_bytes(len) as usize;
        let kb = self
            .vbuf
            .get(4..end)
            .ok_or_else(|| corrupt("previous value truncated".into()))?;
        let key = self
            .key_serde
            .deserialize(kb)
            .map_err(|e| corrupt(format!("stored group key does not decode: {e}")))?;
        let value = decode_stored(&self.value_serde, &self.name, &self.vbuf[end..])?;
        Ok((key, value, 4..end))
    }
}

impl<K: Data, V: Data, KR: Data, VR: Data> Node<K, Option<V>> for SelectNode<K, V, KR, VR> {
    fn process(&mut self, ctx: &mut ProcessorContext, key: K, value: Option<V>) {
        self.kbuf.clear();
        if let Err(e) = self.in_key_serde.serialize(&key, &mut self.kbuf) {
            return ctx.dead_letter(format!("key serialization failed: {e}"));
        }
        let found = match self.store.borrow_mut().get_into(&self.kbuf, &mut self.vbuf) {
            Ok(f) => f,
            Err(e) => return ctx.fail(e),
        };
        let old = if found {
            match self.decode_previous() {
                Ok(p) => Some(p),
                Err(e) => return ctx.fail(e),
            }
        } else {
            None
        };
        let new = value.map(|v| (self.selector)(&key, &v));
        // Remember the new pair (or forget the row) before sending.
        let mut same_group = false;
        let written = match &new {
            Some((nk, nv)) => {
                let klen = match self.encode(nk, nv) {
                    Ok(l) => l,
                    Err(e) => return ctx.dead_letter(e),
                };
                if let Some((_, _, range)) = &old {
                    same_group = self.vbuf[range.clone()] == self.nbuf[4..4 + klen];
                }
                self.store.borrow_mut().put(&self.kbuf, &self.nbuf)
            }
            None if old.is_some() => self.store.borrow_mut().delete(&self.kbuf),
            None => Ok(()),
        };
        if let Err(e) = written {
            return ctx.fail(e);
        }
        if self.store.borrow().wants_flush() {
            ctx.request_commit();
        }
        // The old value leaves its group before the new one joins, as in
        // Kafka Streams; one record if the group stays the same.
        match (old, new) {
            (Some((_, ov, _)), Some((nk, nv))) if same_group => self.children.forward(
                ctx,
                nk,
                GroupChange {
                    new: Some(nv),
                    old: Some(ov),
                },
            ),
            (old, new) => {
                if let Some((ok, ov, _)) = old {
                    self.children.forward(
                        ctx,
                        ok,
                        GroupChange {
                            new: None,
                            old: Some(ov),
                        },
                    );
                }
                if let Some((nk, nv)) = new {
                    self.children.forward(
                        ctx,
                        nk,
                        GroupChange {
                            new: Some(nv),
                            old: None,
                        },
                    );
                }
            }
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

/// Applies group changes to the groups' aggregates (subtract, then add)
/// and forwards the aggregates' changes at flush.
struct TableAggregateNode<K, V, A> {
    store: KvStoreRef,
    name: Arc<str>,
    key_serde: Serde<K>,
    agg_serde: Serde<A>,
    add: Adder<K, V, A>,
    subtract: Subtractor<K, V, A>,
    children: Children<K, Option<A>>,
    kbuf: Vec<u8>,
    vbuf: Vec<u8>,
}

impl<K: Data, V: Data, A: Data> Node<K, GroupChange<V>> for TableAggregateNode<K, V, A> {
    fn process(&mut self, ctx: &mut ProcessorContext, key: K, change: GroupChange<V>) {
        self.kbuf.clear();
        if let Err(e) = self.key_serde.serialize(&key, &mut self.kbuf) {
            return ctx.dead_letter(format!("key serialization failed: {e}"));
        }
        let mut store = self.store.borrow_mut();
        let old_agg = match store.get_into(&self.kbuf, &mut self.vbuf) {
            Ok(true) => match decode_stored(&self.agg_serde, &self.name, &self.vbuf) {
                Ok(a) => Some(a),
                Err(e) => return ctx.fail(e),
            },
            Ok(false) => None,
            Err(e) => return ctx.fail(e),
        };
        let agg = match (change.old, old_agg) {
            (Some(old), Some(agg)) => (self.subtract)(&key, old, agg),
            (_, agg) => agg,
        };
        let agg = match change.new {
            Some(new) => Some((self.add)(&key, new, agg)),
            None => agg,
        };
        let written = match agg {
            Some(agg) => {
                self.vbuf.clear();
                if let Err(e) = self.agg_serde.serialize(&agg, &mut self.vbuf) {
                    return ctx.dead_letter(format!("aggregate serialization failed: {e}"));
                }
                store.put(&self.kbuf, &self.vbuf)
            }
            None => store.delete(&self.kbuf),
        };
        if let Err(e) = written {
            return ctx.fail(e);
        }
        if store.wants_flush() {
            ctx.request_commit();
        }
    }

    fn flush(&mut self, ctx: &mut ProcessorContext) {
        forward_flushed(
            ctx,
            &self.store,
            &self.name,
            &self.key_serde,
            &self.agg_serde,
            &mut self.children,
        );
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
    use super::*;

    #[test]
    fn change_wire_format_round_trips() {
        let s = GroupChangeSerde::serde(Serdes::string());
        for (c, bytes) in [
            (
                GroupChange {
                    new: Some("ab".to_string()),
                    old: Some("c".to_string()),
                },
                b"\x03\x00\x00\x00\x02abc".to_vec(),
            ),
            (
                GroupChange {
                    new: Some("ab".to_string()),
                    old: None,
                },
                b"\x01ab".to_vec(),
            ),
            (
                GroupChange {
                    new: None,
                    old: Some(String::new()),
                },
                b"\x02".to_vec(),
            ),
        ] {
            assert_eq!(s.to_bytes(&c).unwrap(), bytes);
            assert_eq!(s.deserialize(&bytes).unwrap(), c);
        }
        assert!(s.to_bytes(&GroupChange { new: None, old: None }).is_err());
        assert_eq!(s.deserialize(b"\x07").unwrap_err().0, "invalid change flags 0x07");
        assert_eq!(
            s.deserialize(b"\x03\x00\x00\x00\x09ab").unwrap_err().0,
            "change record truncated"
        );
    }
}
