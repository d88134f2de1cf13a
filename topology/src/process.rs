//! `KStream::process`: a user [`Processor`] for whatever the DSL does not
//! express, with access to declared state stores and punctuation.
//!
//! ```
//! use weir_topology::prelude::*;
//! use weir_topology::store::StoreToken;
//!
//! /// Counts records per key in a store and forwards the running count.
//! struct Counter {
//!     counts: StoreToken<String, u64>,
//! }
//!
//! impl Processor<String, String> for Counter {
//!     type KeyOut = String;
//!     type ValueOut = u64;
//!     fn process(&mut self, ctx: &mut ProcessorApi<'_, String, u64>, key: String, _value: String) {
//!         let counts = ctx.store(&self.counts);
//!         let result = counts.get(&key).and_then(|n| {
//!             let n = n.unwrap_or(0) + 1;
//!             counts.put(&key, &n).map(|()| n)
//!         });
//!         match result {
//!             Ok(n) => ctx.forward(key, n),
//!             Err(e) => ctx.fail(e),
//!         }
//!     }
//! }
//!
//! let mut b = StreamsBuilder::new();
//! // The store's name, key type and value type, given once.
//! let counts = b.add_key_value_store_typed("counts", Serdes::string(), Serdes::u64());
//! let token = counts.clone();
//! b.stream::<String, String>("in", Serdes::string(), Serdes::string())
//!     .process(move || Counter { counts: token.clone() }, &[counts.name()])
//!     .to("out", Serdes::string(), Serdes::u64());
//! let topology = b.build()?;
//! assert!(topology.describe("app").contains("(stores: [counts])"));
//! // Registered with its serdes, the store is queryable.
//! assert_eq!(topology.store_format("counts"), Some(("string", "u64")));
//! # Ok::<(), TopologyError>(())
//! ```
//!
//! A processor may also open a store once in [`Processor::init`] with
//! [`InitContext::store`], which gives an owned [`KeyValueStoreHandle`]
//! (the untyped [`KeyValueStoreHandle::new`] by name stays for stores
//! declared with `add_key_value_store` / `add_state_store`).

use std::marker::PhantomData;
use std::ops::Bound;
use std::sync::Arc;

use crate::context::{Headers, InitContext, ProcessorContext, PunctuationType};
use crate::error::TopologyError;
use crate::grouped::decode_stored;
use crate::kstream::KStream;
use crate::node::{ChildSlot, Children, Node};
use crate::serde::Serde;
use crate::store::{KvStoreRef, StoreError, StoreKind};
use crate::topology::NodeKind;
use crate::Data;

/// A user-defined processor: receives the records of a stream one by one
/// and forwards any number of records, possibly with new keys and types.
///
/// One instance is created per task (from the supplier given to
/// [`KStream::process`]), so a processor may keep plain in-memory state;
/// state that must survive a restart or move between instances belongs in a
/// declared store (see [`KeyValueStoreHandle`]).
pub trait Processor<K, V>: 'static {
    type KeyOut: Data;
    type ValueOut: Data;

    /// Called once when the task is created: open stores, and ask for
    /// punctuation with [`InitContext::schedule`].
    fn init(&mut self, _ctx: &mut InitContext<'_>) -> Result<(), TopologyError> {
        Ok(())
    }

    /// Handle one record.
    fn process(&mut self, ctx: &mut ProcessorApi<'_, Self::KeyOut, Self::ValueOut>, key: K, value: V);

    /// A scheduled punctuation fired: `time` is the stream time or wall
    /// clock (per `kind`) that reached the deadline. Records forwarded here
    /// carry `time` as their timestamp.
    fn punctuate(
        &mut self,
        _ctx: &mut ProcessorApi<'_, Self::KeyOut, Self::ValueOut>,
        _kind: PunctuationType,
        _time: i64,
    ) {
    }

    /// The task is closing.
    fn close(&mut self) {}
}

/// What a [`Processor`] can do while it handles a record or a punctuation:
/// forward records, see the current record's metadata and open its stores.
pub struct ProcessorApi<'a, KO, VO> {
    ctx: &'a mut ProcessorContext,
    children: &'a mut Children<KO, VO>,
    /// The key-value stores connected to the processor's node, opened when
    /// the task was created.
    stores: &'a [(Arc<str>, KvStoreRef)],
}

impl<'a, KO, VO> ProcessorApi<'a, KO, VO> {
    /// The typed view of the store `token` stands for (see
    /// [`StoreToken`]). The store must be connected to this processor
    /// (its name listed in [`KStream::process`]); otherwise every operation
    /// of the view fails with a [`StoreError`] that says so.
    pub fn store<'s, K: 'static, V: 'static>(&self, token: &'s StoreToken<K, V>) -> KeyValueStoreView<'s, K, V>
    where
        'a: 's,
    {
        let store = self.stores.iter().find(|(n, _)| **n == *token.name).map(|(_, s)| s);
        KeyValueStoreView { store, token }
    }
}

impl<KO: Data, VO: Data> ProcessorApi<'_, KO, VO> {
    /// Send a record downstream, with the current timestamp.
    pub fn forward(&mut self, key: KO, value: VO) {
        self.children.forward(self.ctx, key, value)
    }
    /// The timestamp of the record being processed (the punctuation time
    /// inside [`Processor::punctuate`]).
    pub fn timestamp(&self) -> i64 {
        self.ctx.timestamp()
    }
    /// Stamp the records forwarded from here on with `ts` (until the call
    /// returns).
    pub fn set_timestamp(&mut self, ts: i64) {
        self.ctx.set_timestamp(ts)
    }
    /// The largest record timestamp the task has seen.
    pub fn stream_time(&self) -> i64 {
        self.ctx.stream_time()
    }
    pub fn wall_clock_ms(&self) -> i64 {
        self.ctx.wall_clock_ms()
    }
    pub fn partition(&self) -> i32 {
        self.ctx.partition()
    }
    /// The source offset of the record being processed.
    pub fn offset(&self) -> i64 {
        self.ctx.offset()
    }
    /// The headers of the record being processed (those of the consumed
    /// record, as changed upstream); none inside
    /// [`Processor::punctuate`].
    pub fn headers(&self) -> &Headers {
        self.ctx.headers()
    }
    /// Change the headers of the record being processed: records forwarded
    /// from here on carry them (Kafka Streams' `context.headers().add(..)`).
    /// Inside [`Processor::punctuate`], the headers of the records it
    /// forwards (cleared after each punctuation).
    pub fn headers_mut(&mut self) -> &mut Headers {
        self.ctx.headers_mut()
    }
    pub fn application_id(&self) -> &str {
        self.ctx.application_id()
    }
    /// Reject the current record: it goes to the dead-letter topic with
    /// `error` and processing goes on.
    pub fn dead_letter(&mut self, error: impl Into<String>) {
        self.ctx.dead_letter(error)
    }
    /// A store failed: the task stops without committing, so that its input
    /// is replayed on restart instead of being lost.
    pub fn fail(&mut self, err: StoreError) {
        self.ctx.fail(err)
    }
}

/// A key-value store registered with its key and value serdes
/// ([`StreamsBuilder::add_key_value_store_typed`](crate::StreamsBuilder::add_key_value_store_typed)):
/// the name, key type and value type of the store, written once, that a
/// processor opens with [`ProcessorApi::store`] or [`InitContext::store`].
/// The view it gives has the token's types, so a mismatch does not compile:
///
/// ```compile_fail,E0308
/// use weir_topology::prelude::*;
/// use weir_topology::store::{KeyValueStoreView, StoreToken};
///
/// fn open(api: &ProcessorApi<'_, String, u64>, counts: &StoreToken<String, u64>) {
///     let _store: KeyValueStoreView<'_, u32, u64> = api.store(counts);
/// }
/// ```
///
/// while the same code with the token's own types does:
///
/// ```
/// use weir_topology::prelude::*;
/// use weir_topology::store::{KeyValueStoreView, StoreToken};
///
/// fn open(api: &ProcessorApi<'_, String, u64>, counts: &StoreToken<String, u64>) {
///     let _store: KeyValueStoreView<'_, String, u64> = api.store(counts);
/// }
/// ```
pub struct StoreToken<K, V> {
    name: Arc<str>,
    key_serde: Serde<K>,
    value_serde: Serde<V>,
}

impl<K, V> Clone for StoreToken<K, V> {
    fn clone(&self) -> Self {
        StoreToken {
            name: self.name.clone(),
            key_serde: self.key_serde.clone(),
            value_serde: self.value_serde.clone(),
        }
    }
}

impl<K: 'static, V: 'static> std::fmt::Debug for StoreToken<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreToken")
            .field("name", &&*self.name)
            .field("key_serde", &self.key_serde.name())
            .field("value_serde", &self.value_serde.name())
            .finish()
    }
}

impl<K: 'static, V: 'static> StoreToken<K, V> {
    /// Only the builder hands out tokens, so a token always names a
    /// declared store.
    pub(crate) fn new(name: &str, key_serde: Serde<K>, value_serde: Serde<V>) -> Self {
        StoreToken {
            name: Arc::from(name),
            key_serde,
            value_serde,
        }
    }

    /// The store's name, as listed in [`KStream::process`].
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn key_serde(&self) -> &Serde<K> {
        &self.key_serde
    }

    pub fn value_serde(&self) -> &Serde<V> {
        &self.value_serde
    }
}

impl InitContext<'_> {
    /// The task's instance of the store `token` stands for, typed: for a
    /// processor that keeps its store from [`Processor::init`] on.
    pub fn store<K: 'static, V: 'static>(
        &mut self,
        token: &StoreToken<K, V>,
    ) -> Result<KeyValueStoreHandle<K, V>, TopologyError> {
        Ok(KeyValueStoreHandle {
            store: self.key_value_store(token.name())?,
            token: token.clone(),
        })
    }
}

/// A typed view of a key-value store ([`ProcessorApi::store`]): keys and
/// values go through the serdes of the store's [`StoreToken`], so the store
/// stays bytes-level (and its changelog readable by any instance with the
/// same serdes).
pub struct KeyValueStoreView<'s, K, V> {
    /// `None` if the store is not connected to the processor.
    store: Option<&'s KvStoreRef>,
    token: &'s StoreToken<K, V>,
}

impl<K, V> Clone for KeyValueStoreView<'_, K, V> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<K, V> Copy for KeyValueStoreView<'_, K, V> {}

impl<'s, K: 'static, V: 'static> KeyValueStoreView<'s, K, V> {
    pub fn name(&self) -> &'s str {
        &self.token.name
    }

    /// The untyped store underneath (`None` if it is not connected).
    pub fn raw(&self) -> Option<&'s KvStoreRef> {
        self.store
    }

    fn store(&self) -> Result<&'s KvStoreRef, StoreError> {
        self.store.ok_or_else(|| {
            StoreError::new(
                self.name(),
                "not connected to this processor (list it in `process(..)`)",
            )
        })
    }

    fn key_bytes(&self, key: &K) -> Result<Vec<u8>, StoreError> {
        self.token
            .key_serde
            .to_bytes(key)
            .map_err(|e| StoreError::new(self.name(), format!("key does not serialize: {e}")))
    }

    fn decode_entry(&self, k: &[u8], v: &[u8]) -> Result<(K, V), StoreError> {
        let key = self
            .token
            .key_serde
            .deserialize(k)
            .map_err(|e| StoreError::new(self.name(), format!("stored key does not decode: {e}")))?;
        Ok((key, decode_stored(&self.token.value_serde, self.name(), v)?))
    }

    pub fn get(&self, key: &K) -> Result<Option<V>, StoreError> {
        let store = self.store()?;
        let k = self.key_bytes(key)?;
        match store.borrow_mut().get(&k)? {
            Some(v) => Ok(Some(decode_stored(&self.token.value_serde, self.name(), &v)?)),
            None => Ok(None),
        }
    }

    pub fn put(&self, key: &K, value: &V) -> Result<(), StoreError> {
        let store = self.store()?;
        let k = self.key_bytes(key)?;
        let v = self
            .token
            .value_serde
            .to_bytes(value)
            .map_err(|e| StoreError::new(self.name(), format!("value does not serialize: {e}")))?;
        store.borrow_mut().put(&k, &v)
    }

    pub fn delete(&self, key: &K) -> Result<(), StoreError> {
        let store = self.store()?;
        let k = self.key_bytes(key)?;
        store.borrow_mut().delete(&k)
    }

    /// The entries whose keys are within the bounds, in key **byte** order
    /// (the order of the serialized keys, which is the order of `K` only if
    /// the key serde preserves it, as the string serde does).
    pub fn range(&self, from: Bound<&K>, to: Bound<&K>) -> Result<Vec<(K, V)>, StoreError> {
        let store = self.store()?;
        let encode = |b: Bound<&K>| -> Result<Bound<Vec<u8>>, StoreError> {
            Ok(match b {
                Bound::Included(k) => Bound::Included(self.key_bytes(k)?),
                Bound::Excluded(k) => Bound::Excluded(self.key_bytes(k)?),
                Bound::Unbounded => Bound::Unbounded,
            })
        };
        let (from, to) = (encode(from)?, encode(to)?);
        let entries = store
            .borrow_mut()
            .range(from.as_ref().map(|k| k.as_slice()), to.as_ref().map(|k| k.as_slice()))?;
        entries.iter().map(|(k, v)| self.decode_entry(k, v)).collect()
    }

    /// Every entry, in key byte order.
    pub fn all(&self) -> Result<Vec<(K, V)>, StoreError> {
        self.range(Bound::Unbounded, Bound::Unbounded)
    }
}

/// Typed access to a declared key-value store that a processor keeps (from
/// [`InitContext::store`], or by name with [`KeyValueStoreHandle::new`]);
/// its operations are those of [`KeyValueStoreView`].
pub struct KeyValueStoreHandle<K, V> {
    store: KvStoreRef,
    token: StoreToken<K, V>,
}

impl<K, V> Clone for KeyValueStoreHandle<K, V> {
    fn clone(&self) -> Self {
        KeyValueStoreHandle {
            store: self.store.clone(),
            token: self.token.clone(),
        }
    }
}

impl<K: 'static, V: 'static> KeyValueStoreHandle<K, V> {
    /// The task's instance of the key-value store `name` (declared with
    /// `StreamsBuilder::add_key_value_store` and listed in `process(..)`).
    pub fn new(
        ctx: &mut InitContext<'_>,
        name: &str,
        key_serde: Serde<K>,
        value_serde: Serde<V>,
    ) -> Result<Self, TopologyError> {
        Ok(Self::from_ref(ctx.key_value_store(name)?, name, key_serde, value_serde))
    }

    /// Wrap a store reference obtained elsewhere.
    pub fn from_ref(store: KvStoreRef, name: &str, key_serde: Serde<K>, value_serde: Serde<V>) -> Self {
        KeyValueStoreHandle {
            store,
            token: StoreToken::new(name, key_serde, value_serde),
        }
    }

    /// The untyped store underneath.
    pub fn raw(&self) -> &KvStoreRef {
        &self.store
    }

    /// The store's operations, borrowed.
    pub fn view(&self) -> KeyValueStoreView<'_, K, V> {
        KeyValueStoreView {
            store: Some(&self.store),
            token: &self.token,
        }
    }

    pub fn get(&self, key: &K) -> Result<Option<V>, StoreError> {
        self.view().get(key)
    }

    pub fn put(&self, key: &K, value: &V) -> Result<(), StoreError> {
        self.view().put(key, value)
    }

    pub fn delete(&self, key: &K) -> Result<(), StoreError> {
        self.view().delete(key)
    }

    /// See [`KeyValueStoreView::range`].
    pub fn range(&self, from: Bound<&K>, to: Bound<&K>) -> Result<Vec<(K, V)>, StoreError> {
        self.view().range(from, to)
    }

    /// Every entry, in key byte order.
    pub fn all(&self) -> Result<Vec<(K, V)>, StoreError> {
        self.view().all()
    }
}

impl<K: Data, V: Data> KStream<K, V> {
    /// Run a user [`Processor`] on every record. `supplier` creates one
    /// instance per task; `stores` names the declared stores it uses, which
    /// puts them in this node's sub-topology (an unknown name makes
    /// `build()` fail) and opens the key-value ones for
    /// [`ProcessorApi::store`] (list a [`StoreToken`] by its
    /// [`name`](StoreToken::name)). The result may have new keys, so
    /// grouping it repartitions.
    pub fn process<P: Processor<K, V>>(
        self,
        supplier: impl Fn() -> P + Send + Sync + 'static,
        stores: &[&str],
    ) -> KStream<P::KeyOut, P::ValueOut> {
        let id = {
            let mut g = self.graph.borrow_mut();
            let id = g.add_node("KSTREAM-PROCESSOR", NodeKind::Processor, vec![self.node]);
            for s in stores {
                g.connect_store(id, s);
            }
            id
        };
        let out = ChildSlot::<P::KeyOut, P::ValueOut>::new();
        let out2 = out.clone();
        let supplier = Arc::new(supplier);
        let store_names: Vec<String> = stores.iter().map(|s| s.to_string()).collect();
        self.attach(Arc::new(move |ictx| {
            let children = out2.instantiate(ictx)?;
            // Open the connected key-value stores (in the order listed,
            // which is the order a processor opening them in `init` used).
            let mut stores = Vec::new();
            for name in &store_names {
                let is_kv = matches!(ictx.topology.store(name), Some(spec) if spec.kind == StoreKind::KeyValue);
                if is_kv && !stores.iter().any(|(n, _): &(Arc<str>, KvStoreRef)| **n == **name) {
                    stores.push((Arc::from(name.as_str()), ictx.key_value_store(name)?));
                }
            }
            let mut processor = supplier();
            let first = ictx.schedules.len();
            processor.init(ictx)?;
            let schedules = ictx
                .schedules
                .drain(first..)
                .map(|s| Punctuator {
                    interval_ms: s.interval_ms,
                    kind: s.kind,
                    next: None,
                })
                .collect();
            Ok(Box::new(ProcessNode {
                processor,
                children,
                stores,
                schedules,
                _marker: PhantomData,
            }) as Box<dyn Node<K, V>>)
        }));
        self.derive(id, out, true)
    }
}

/// One scheduled punctuation of a processor.
struct Punctuator {
    interval_ms: i64,
    kind: PunctuationType,
    /// The next deadline; `None` until the node first sees a time of this
    /// kind (there is none at init: stream time starts with the first
    /// record, and the wall clock comes with the first call).
    next: Option<i64>,
}

impl Punctuator {
    fn now(&self, ctx: &ProcessorContext) -> Option<i64> {
        match self.kind {
            PunctuationType::StreamTime => (ctx.stream_time() != i64::MIN).then(|| ctx.stream_time()),
            PunctuationType::WallClockTime => Some(ctx.wall_clock_ms()),
        }
    }

    /// Set the first deadline if this is the first time seen.
    fn observe(&mut self, ctx: &ProcessorContext) {
        if self.next.is_none() {
            if let Some(now) = self.now(ctx) {
                self.next = Some(now.saturating_add(self.interval_ms));
            }
        }
    }
}

struct ProcessNode<K, V, P: Processor<K, V>> {
    processor: P,
    children: Children<P::KeyOut, P::ValueOut>,
    stores: Vec<(Arc<str>, KvStoreRef)>,
    schedules: Vec<Punctuator>,
    _marker: PhantomData<fn(K, V)>,
}

impl<K, V, P: Processor<K, V>> Node<K, V> for ProcessNode<K, V, P> {
    fn process(&mut self, ctx: &mut ProcessorContext, key: K, value: V) {
        for s in &mut self.schedules {
            s.observe(ctx);
        }
        let mut api = ProcessorApi {
            ctx,
            children: &mut self.children,
            stores: &self.stores,
        };
        let ts = api.ctx.timestamp();
        self.processor.process(&mut api, key, value);
        ctx.set_timestamp(ts);
    }

    fn flush(&mut self, ctx: &mut ProcessorContext) {
        self.children.flush(ctx)
    }

    /// Fire each schedule whose deadline the current time reached, once
    /// (a long pause does not replay the missed intervals), then let the
    /// children punctuate.
    fn punctuate(&mut self, ctx: &mut ProcessorContext) {
        let ts = ctx.timestamp();
        for i in 0..self.schedules.len() {
            let s = &mut self.schedules[i];
            let Some(now) = s.now(ctx) else { continue };
            match s.next {
                None => s.next = Some(now.saturating_add(s.interval_ms)),
                Some(next) if now >= next => {
                    s.next = Some(now.saturating_add(s.interval_ms));
                    let kind = s.kind;
                    ctx.set_timestamp(now);
                    // A punctuation has no input record: no headers but
                    // those the processor sets.
                    ctx.headers.clear();
                    ctx.punctuation_headers = true;
                    let mut api = ProcessorApi {
                        ctx,
                        children: &mut self.children,
                        stores: &self.stores,
                    };
                    self.processor.punctuate(&mut api, kind, now);
                    ctx.punctuation_headers = false;
                    ctx.headers.clear();
                }
                Some(_) => {}
            }
        }
        ctx.set_timestamp(ts);
        self.children.punctuate(ctx)
    }

    fn close(&mut self, ctx: &mut ProcessorContext) {
        self.processor.close();
        self.children.close(ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Serdes, StreamsBuilder};

    struct Pass;
    impl Processor<String, String> for Pass {
        type KeyOut = String;
        type ValueOut = String;
        fn process(&mut self, ctx: &mut ProcessorApi<'_, String, String>, key: String, value: String) {
            ctx.forward(key, value)
        }
    }

    #[test]
    fn an_unknown_store_name_fails_the_build() {
        let mut b = StreamsBuilder::new();
        b.add_key_value_store("known");
        b.stream::<String, String>("in", Serdes::string(), Serdes::string())
            .process(|| Pass, &["known", "missing"])
            .to("out", Serdes::string(), Serdes::string());
        let err = b.build().unwrap_err();
        assert_eq!(err, TopologyError::UnknownStore("missing".into()));
        assert!(err.to_string().starts_with("unknown store \"missing\""), "{err}");
    }

    #[test]
    fn stores_may_be_declared_after_process_and_join_its_sub_topology() {
        let mut b = StreamsBuilder::new();
        b.stream::<String, String>("in", Serdes::string(), Serdes::string())
            .process(|| Pass, &["late-declared"])
            .to("out", Serdes::string(), Serdes::string());
        b.add_key_value_store("late-declared");
        let t = b.build().unwrap();
        assert_eq!(t.subtopologies().len(), 1);
        assert_eq!(t.subtopologies()[0].stores, vec!["late-declared".to_string()]);
    }
}
