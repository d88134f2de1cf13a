//! Grouped streams and their aggregations (count, reduce, aggregate),
//! plain and windowed. Aggregations exist only here, so an ungrouped stream
//! cannot be aggregated: wrong programs do not compile.

use std::sync::Arc;

use crate::context::ProcessorContext;
use crate::kstream::KStream;
use crate::ktable::KTable;
use crate::materialized::Materialized;
use crate::node::{ChildSlot, Children, Node};
use crate::serde::{Serde, Serdes};
use crate::store::{split_window_key, KvStoreRef, StoreError, StoreKind, StoreSpec, WindowStoreRef};
use crate::topology::NodeKind;
use crate::windows::{SessionWindows, TimeWindows, Window, Windowed};
use crate::Data;

/// The per-record step of an aggregation: the new aggregate from the key,
/// the record's value and the old aggregate (`None` for a new key/window).
pub(crate) type Step<K, V, A> = Arc<dyn Fn(&K, V, Option<A>) -> A + Send + Sync>;

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
        let store = self.stream.graph.borrow().store_name(materialized, kind);
        let stream = if self.stream.repartition_required {
            self.stream
                .clone()
                .repartition(&store, self.key_serde.clone(), self.value_serde.clone())
        } else {
            self.stream.clone()
        };
        (stream, store)
    }

    /// The number of records per key.
    pub fn count(self, materialized: Materialized) -> KTable<K, u64> {
        self.aggregate_with(
            "KSTREAM-AGGREGATE",
            materialized,
            Serdes::u64(),
            Arc::new(|_, _, old| old.unwrap_or(0) + 1),
        )
    }

    /// Combine the values of a key with `reducer(old, new)`.
    pub fn reduce(
        self,
        reducer: impl Fn(V, V) -> V + Send + Sync + 'static,
        materialized: Materialized,
    ) -> KTable<K, V> {
        let serde = self.value_serde.clone();
        self.aggregate_with(
            "KSTREAM-REDUCE",
            materialized,
            serde,
            Arc::new(move |_, v, old| match old {
                Some(o) => reducer(o, v),
                None => v,
            }),
        )
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
            Arc::new(move |k, v, old| aggregator(k, v, old.unwrap_or_else(&init))),
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
            g.add_store(StoreSpec {
                name: store.clone(),
                kind: StoreKind::KeyValue,
                logged: materialized.logged,
            });
            let id = g.add_node(kind, NodeKind::Processor, vec![input.node]);
            g.connect_store(id, &store);
            g.store_formats
                .push((store.clone(), self.key_serde.name(), aggregate_serde.name()));
            id
        };
        let out = ChildSlot::<K, Option<A>>::new();
        let (out2, store2, kserde, aserde) = (
            out.clone(),
            store.clone(),
            self.key_serde.clone(),
            aggregate_serde.clone(),
        );
        input.attach(Arc::new(move |ictx| {
            Ok(Box::new(KvAggregateNode {
                store: ictx.key_value_store(&store2)?,
                name: Arc::from(store2.as_str()),
                key_serde: kserde.clone(),
                agg_serde: aserde.clone(),
                step: step.clone(),
                children: out2.instantiate(ictx)?,
                kbuf: Vec::new(),
                vbuf: Vec::new(),
                nbuf: Vec::new(),
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

    /// Window the grouped stream: `TimeWindows` (tumbling or hopping) or
    /// `SessionWindows`.
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
        TimeWindowedKStream { grouped, windows: self }
    }
}

impl<K: Data, V: Data> WindowSpec<K, V> for SessionWindows {
    type Windowed = SessionWindowedKStream<K, V>;
    fn apply(self, grouped: KGroupedStream<K, V>) -> SessionWindowedKStream<K, V> {
        SessionWindowedKStream { grouped, windows: self }
    }
}

/// A grouped stream in time windows.
pub struct TimeWindowedKStream<K, V> {
    pub(crate) grouped: KGroupedStream<K, V>,
    pub(crate) windows: TimeWindows,
}

/// A grouped stream in session windows.
pub struct SessionWindowedKStream<K, V> {
    pub(crate) grouped: KGroupedStream<K, V>,
    pub(crate) windows: SessionWindows,
}

impl<K: Data, V: Data> TimeWindowedKStream<K, V> {
    /// The number of records per key and window.
    pub fn count(self, materialized: Materialized) -> KTable<Windowed<K>, u64> {
        self.aggregate_with(
            "KSTREAM-AGGREGATE",
            materialized,
            Serdes::u64(),
            Arc::new(|_, _, old| old.unwrap_or(0) + 1),
        )
    }

    /// Combine the values of a key within each window.
    pub fn reduce(
        self,
        reducer: impl Fn(V, V) -> V + Send + Sync + 'static,
        materialized: Materialized,
    ) -> KTable<Windowed<K>, V> {
        let serde = self.grouped.value_serde.clone();
        self.aggregate_with(
            "KSTREAM-REDUCE",
            materialized,
            serde,
            Arc::new(move |_, v, old| match old {
                Some(o) => reducer(o, v),
                None => v,
            }),
        )
    }

    /// Fold the values of a key within each window.
    pub fn aggregate<A: Data>(
        self,
        init: impl Fn() -> A + Send + Sync + 'static,
        aggregator: impl Fn(&K, V, A) -> A + Send + Sync + 'static,
        aggregate_serde: Serde<A>,
        materialized: Materialized,
    ) -> KTable<Windowed<K>, A> {
        self.aggregate_with(
            "KSTREAM-AGGREGATE",
            materialized,
            aggregate_serde,
            Arc::new(move |k, v, old| aggregator(k, v, old.unwrap_or_else(&init))),
        )
    }

    fn aggregate_with<A: Data>(
        self,
        kind: &str,
        materialized: Materialized,
        aggregate_serde: Serde<A>,
        step: Step<K, V, A>,
    ) -> KTable<Windowed<K>, A> {
        let (input, store) = self.grouped.input(&materialized, kind);
        let w = self.windows;
        let retention = (w.size_ms + w.grace_ms).max(materialized.retention_ms.unwrap_or(0));
        let id = {
            let mut g = input.graph.borrow_mut();
            g.add_store(StoreSpec {
                name: store.clone(),
                kind: StoreKind::Window {
                    retention_ms: retention,
                },
                logged: materialized.logged,
            });
            let id = g.add_node(kind, NodeKind::Processor, vec![input.node]);
            g.connect_store(id, &store);
            // Queryable by record key (`/stores/{store}?key=`): the daemon
            // decodes the window prefix of the store key itself.
            g.store_formats
                .push((store.clone(), self.grouped.key_serde.name(), aggregate_serde.name()));
            id
        };
        let out = ChildSlot::<Windowed<K>, Option<A>>::new();
        let kserde = self.grouped.key_serde.clone();
        let (out2, store2, kserde2, aserde) = (out.clone(), store.clone(), kserde.clone(), aggregate_serde.clone());
        input.attach(Arc::new(move |ictx| {
            Ok(Box::new(WindowAggregateNode {
                store: ictx.window_store(&store2)?,
                name: Arc::from(store2.as_str()),
                windows: w,
                retention_ms: retention,
                last_purge: i64::MIN,
                key_serde: kserde2.clone(),
                agg_serde: aserde.clone(),
                step: step.clone(),
                children: out2.instantiate(ictx)?,
                kbuf: Vec::new(),
                vbuf: Vec::new(),
            }) as Box<dyn Node<K, V>>)
        }));
        KTable::new(
            input.graph.clone(),
            id,
            out,
            Some(store),
            Serdes::windowed(kserde),
            Some(aggregate_serde),
            Some(w.grace_ms),
        )
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

struct KvAggregateNode<K, V, A> {
    store: KvStoreRef,
    name: Arc<str>,
    key_serde: Serde<K>,
    agg_serde: Serde<A>,
    step: Step<K, V, A>,
    children: Children<K, Option<A>>,
    kbuf: Vec<u8>,
    vbuf: Vec<u8>,
    /// The new aggregate's bytes (see `KeyValueStore::update`).
    nbuf: Vec<u8>,
}

impl<K: Data, V: Data, A: Data> Node<K, V> for KvAggregateNode<K, V, A> {
    #[inline]
    fn process(&mut self, ctx: &mut ProcessorContext, key: K, value: V) {
        self.kbuf.clear();
        if let Err(e) = self.key_serde.serialize(&key, &mut self.kbuf) {
            return ctx.dead_letter(format!("key serialization failed: {e}"));
        }
        let mut store = self.store.borrow_mut();
        // One read-modify-write: a cached key is looked up once.
        let (step, agg_serde, name) = (&self.step, &self.agg_serde, &self.name);
        let mut value = Some(value);
        let mut failed: Option<Result<String, StoreError>> = None;
        let r = store.update(&self.kbuf, &mut self.vbuf, &mut self.nbuf, &mut |old, out| {
            let old = match old.map(|b| decode_stored(agg_serde, name, b)).transpose() {
                Ok(a) => a,
                Err(e) => {
                    failed = Some(Err(e));
                    return false;
                }
            };
            let Some(value) = value.take() else { return false };
            let new = step(&key, value, old);
            if let Err(e) = agg_serde.serialize(&new, out) {
                failed = Some(Ok(format!("aggregate serialization failed: {e}")));
                return false;
            }
            true
        });
        match failed {
            Some(Err(e)) => return ctx.fail(e),
            Some(Ok(msg)) => return ctx.dead_letter(msg),
            None => {}
        }
        if let Err(e) = r {
            return ctx.fail(e);
        }
        if store.wants_flush() {
            ctx.request_commit();
        }
    }

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

struct WindowAggregateNode<K, V, A> {
    store: WindowStoreRef,
    name: Arc<str>,
    windows: TimeWindows,
    retention_ms: i64,
    last_purge: i64,
    key_serde: Serde<K>,
    agg_serde: Serde<A>,
    step: Step<K, V, A>,
    children: Children<Windowed<K>, Option<A>>,
    kbuf: Vec<u8>,
    vbuf: Vec<u8>,
}

impl<K: Data, V: Data, A: Data> WindowAggregateNode<K, V, A> {
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
}

impl<K: Data, V: Data, A: Data> Node<K, V> for WindowAggregateNode<K, V, A> {
    fn process(&mut self, ctx: &mut ProcessorContext, key: K, value: V) {
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
                let old = match store.get_into(&self.kbuf, start, &mut self.vbuf) {
                    Ok(true) => match decode_stored(&self.agg_serde, &self.name, &self.vbuf) {
                        Ok(a) => Some(a),
                        Err(e) => return ctx.fail(e),
                    },
                    Ok(false) => None,
                    Err(e) => return ctx.fail(e),
                };
                let new = (self.step)(&key, value.clone(), old);
                self.vbuf.clear();
                if let Err(e) = self.agg_serde.serialize(&new, &mut self.vbuf) {
                    return ctx.dead_letter(format!("aggregate serialization failed: {e}"));
                }
                if let Err(e) = store.put(&self.kbuf, start, &self.vbuf) {
                    return ctx.fail(e);
                }
            }
            if store.wants_flush() {
                ctx.request_commit();
            }
        }
        if !accepted {
            ctx.counters.late_records_dropped += 1;
        }
    }

    fn flush(&mut self, ctx: &mut ProcessorContext) {
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
