//! Cogrouping (KIP-150): several grouped streams with the same key type and
//! different value types, aggregated into one table through one store.
//! [`CogroupedKStream`] has an example.
//!
//! Why not aggregate each stream and join the tables: that needs one store
//! per stream plus the join's, and every update of one side re-emits the
//! joined row computed from possibly stale other sides. A cogroup keeps one
//! aggregate per key (or window) that every input updates in place, in the
//! order the task processes the records.
//!
//! # Layout in the graph
//!
//! Each input gets its own aggregation node connected to the shared store
//! (repartitioned first, through `{store}-cogroup-{i}-repartition`, if its
//! key was changed upstream); a merge node after them is where the table
//! comes out. All inputs so end up in one sub-topology: their topics (or
//! repartition topics) must be co-partitioned. In a task the input nodes
//! share one aggregation core (store, emit state, children) and differ only
//! by their aggregator.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use crate::builder::Graph;
use crate::context::{InitContext, ProcessorContext};
use crate::error::TopologyError;
use crate::grouped::{
    aggregate_step, declare_kv_store, Aggregates, KGroupedStream, KvAggCore, KvAggSetup, TimeWindowAggCore,
    WindowAggSetup, WindowedAgg,
};
use crate::kstream::KStream;
use crate::ktable::{KTable, WindowStored};
use crate::materialized::Materialized;
use crate::node::{ChildSlot, Node};
use crate::serde::Serde;
use crate::session::{aggregate_fold, SessionAggCore};
use crate::sliding::{SlidingAggCore, SlidingWindows};
use crate::topology::NodeKind;
use crate::windows::{EmitStrategy, SessionWindows, TimeWindows, Windowed};
use crate::Data;

type Aggregator<K, V, A> = Arc<dyn Fn(&K, V, A) -> A + Send + Sync>;
type Init<A> = Arc<dyn Fn() -> A + Send + Sync>;
type Merger<K, A> = Arc<dyn Fn(&K, A, A) -> A + Send + Sync>;
/// Gets (or creates, for the first input node of a task) the task's one
/// shared aggregation core.
type SharedFactory<C> = Arc<dyn Fn(&mut InitContext<'_>) -> Result<Rc<RefCell<C>>, TopologyError> + Send + Sync>;

const KIND: &str = "COGROUPKSTREAM-AGGREGATE";

impl<K: Data, V: Data> KGroupedStream<K, V> {
    /// Start a cogroup: this stream's records are folded into the shared
    /// aggregate (of type `A`) with `aggregator`. Add more streams with
    /// [`CogroupedKStream::cogroup`], then aggregate (optionally windowed).
    pub fn cogroup<A: Data>(
        self,
        aggregator: impl Fn(&K, V, A) -> A + Send + Sync + 'static,
    ) -> CogroupedKStream<K, A> {
        CogroupedKStream {
            graph: self.stream.graph.clone(),
            key_serde: self.key_serde.clone(),
            inputs: vec![Box::new(TypedInput {
                grouped: self,
                aggregator: Arc::new(aggregator),
                stream: None,
            })],
        }
    }
}

/// Grouped streams of one key type being aggregated together into one
/// aggregate of type `A` per key (or window), through one store: each
/// input folds its records in with its own aggregator. Started by
/// [`KGroupedStream::cogroup`].
///
/// ```
/// # use weir_topology::*;
/// let mut b = StreamsBuilder::new();
/// let clicks = b
///     .stream::<String, u32>("clicks", Serdes::string(), Serdes::u32())
///     .group_by_key(Serdes::string(), Serdes::u32());
/// let purchases = b
///     .stream::<String, String>("purchases", Serdes::string(), Serdes::string())
///     .group_by_key(Serdes::string(), Serdes::string());
/// let summary: KTable<String, String> = clicks
///     .cogroup(|_, n, acc: String| format!("{acc}c{n}"))
///     .cogroup(purchases, |_, item, acc| format!("{acc}p:{item}"))
///     .aggregate(String::new, Serdes::string(), Materialized::named("customer-summary"));
/// # b.build()?;
/// # Ok::<(), TopologyError>(())
/// ```
pub struct CogroupedKStream<K, A> {
    graph: Graph,
    key_serde: Serde<K>,
    inputs: Vec<Box<dyn ErasedInput<K, A>>>,
}

impl<K: Data, A: Data> CogroupedKStream<K, A> {
    /// Add a grouped stream (of any value type) whose records are folded
    /// into the same aggregate with `aggregator`.
    pub fn cogroup<V: Data>(
        mut self,
        grouped: KGroupedStream<K, V>,
        aggregator: impl Fn(&K, V, A) -> A + Send + Sync + 'static,
    ) -> Self {
        if !Rc::ptr_eq(&grouped.stream.graph, &self.graph) {
            self.graph.borrow_mut().errors.push(TopologyError::InvalidOperation {
                node: grouped.stream.node_name(),
                reason: "cogroup of a stream from another StreamsBuilder".into(),
            });
        }
        self.inputs.push(Box::new(TypedInput {
            grouped,
            aggregator: Arc::new(aggregator),
            stream: None,
        }));
        self
    }

    /// The aggregate per key of every input, starting from `init()`.
    pub fn aggregate(
        mut self,
        init: impl Fn() -> A + Send + Sync + 'static,
        aggregate_serde: Serde<A>,
        materialized: Materialized,
    ) -> KTable<K, A> {
        let (inputs, store, nodes, merge) = self.add_nodes(&materialized);
        declare_kv_store(
            &mut self.graph.borrow_mut(),
            &nodes,
            &store,
            materialized.logged,
            &self.key_serde,
            &aggregate_serde,
        );
        let setup = KvAggSetup {
            store: store.clone(),
            key_serde: self.key_serde.clone(),
            agg_serde: aggregate_serde.clone(),
            out: ChildSlot::new(),
        };
        let out = setup.out.clone();
        let factory = shared_factory(merge, move |ictx| setup.make_core(ictx));
        let init: Init<A> = Arc::new(init);
        for input in inputs {
            input.attach(CoreFactory::Kv(factory.clone()), init.clone());
        }
        KTable::new(
            self.graph.clone(),
            merge,
            out,
            Some(store),
            self.key_serde,
            Some(aggregate_serde),
            None,
        )
    }

    /// Aggregate in windows: [`TimeWindows`], [`SlidingWindows`] or
    /// [`SessionWindows`].
    pub fn windowed_by<W: CogroupWindowSpec<K, A>>(self, windows: W) -> W::Windowed {
        windows.apply(self)
    }

    /// Phase one of every aggregate: the input nodes (after their
    /// repartitions), then the merge node the table comes out of. Returns
    /// the inputs, the store name, the input node ids and the merge node id.
    #[allow(clippy::type_complexity)]
    fn add_nodes(
        &mut self,
        materialized: &Materialized,
    ) -> (Vec<Box<dyn ErasedInput<K, A>>>, String, Vec<usize>, usize) {
        let store = self.graph.borrow_mut().store_name(materialized, KIND);
        let mut inputs = std::mem::take(&mut self.inputs);
        let nodes: Vec<usize> = inputs
            .iter_mut()
            .enumerate()
            .map(|(i, input)| input.add_node(&format!("{store}-cogroup-{i}")))
            .collect();
        let merge = self
            .graph
            .borrow_mut()
            .add_node("COGROUPKSTREAM-MERGE", NodeKind::Processor, nodes.clone());
        (inputs, store, nodes, merge)
    }

    /// A windowed aggregate in windows `windows` (time, sliding or
    /// session): every input feeds the one task-side core, which `core`
    /// wraps with what its inputs need.
    fn windowed_aggregate<W: WindowedAgg<K, A>>(
        mut self,
        windows: W,
        emit: EmitStrategy,
        materialized: Materialized,
        aggregate_serde: Serde<A>,
        init: Init<A>,
        core: impl Fn(SharedFactory<W::Core>) -> CoreFactory<K, A>,
    ) -> KTable<Windowed<K>, A, WindowStored> {
        let (inputs, store, nodes, merge) = self.add_nodes(&materialized);
        let graph = self.graph.clone();
        let setup = WindowAggSetup::declare(
            &mut graph.borrow_mut(),
            &nodes,
            store,
            windows,
            &materialized,
            emit,
            self.key_serde.clone(),
            aggregate_serde,
        );
        let table = setup.table(graph, merge);
        let factory = shared_factory(merge, move |ictx| setup.make_core(ictx));
        for input in inputs {
            input.attach(core(factory.clone()), init.clone());
        }
        table
    }
}

/// The factory of the core shared by the input nodes of the cogroup whose
/// merge node is `merge`: the first input node of a task makes it.
fn shared_factory<C: 'static>(
    merge: usize,
    make: impl Fn(&mut InitContext<'_>) -> Result<C, TopologyError> + Send + Sync + 'static,
) -> SharedFactory<C> {
    Arc::new(move |ictx| ictx.shared(merge, |ictx| Ok(Rc::new(RefCell::new(make(ictx)?)))))
}

/// A window specification a cogrouped stream can be windowed by.
pub trait CogroupWindowSpec<K, A> {
    type Windowed;
    fn apply(self, cogrouped: CogroupedKStream<K, A>) -> Self::Windowed;
}

impl<K: Data, A: Data> CogroupWindowSpec<K, A> for TimeWindows {
    type Windowed = TimeWindowedCogroupedKStream<K, A>;
    fn apply(self, cogrouped: CogroupedKStream<K, A>) -> Self::Windowed {
        TimeWindowedCogroupedKStream {
            cogrouped,
            windows: self,
            emit: EmitStrategy::default(),
        }
    }
}

impl<K: Data, A: Data> CogroupWindowSpec<K, A> for SlidingWindows {
    type Windowed = SlidingWindowedCogroupedKStream<K, A>;
    fn apply(self, cogrouped: CogroupedKStream<K, A>) -> Self::Windowed {
        SlidingWindowedCogroupedKStream {
            cogrouped,
            windows: self,
            emit: EmitStrategy::default(),
        }
    }
}

impl<K: Data, A: Data> CogroupWindowSpec<K, A> for SessionWindows {
    type Windowed = SessionWindowedCogroupedKStream<K, A>;
    fn apply(self, cogrouped: CogroupedKStream<K, A>) -> Self::Windowed {
        SessionWindowedCogroupedKStream {
            cogrouped,
            windows: self,
            emit: EmitStrategy::default(),
        }
    }
}

/// Cogrouped streams in time windows (tumbling or hopping).
pub struct TimeWindowedCogroupedKStream<K, A> {
    cogrouped: CogroupedKStream<K, A>,
    windows: TimeWindows,
    emit: EmitStrategy,
}

impl<K: Data, A: Data> TimeWindowedCogroupedKStream<K, A> {
    /// Forward every update (default) or each window once when it closes.
    pub fn emit_strategy(self, emit: EmitStrategy) -> Self {
        TimeWindowedCogroupedKStream { emit, ..self }
    }

    /// The aggregate per key and window of every input, each window
    /// starting from `init()`.
    pub fn aggregate(
        self,
        init: impl Fn() -> A + Send + Sync + 'static,
        aggregate_serde: Serde<A>,
        materialized: Materialized,
    ) -> KTable<Windowed<K>, A, WindowStored> {
        self.cogrouped.windowed_aggregate(
            self.windows,
            self.emit,
            materialized,
            aggregate_serde,
            Arc::new(init),
            CoreFactory::Window,
        )
    }
}

/// Cogrouped streams in sliding windows.
pub struct SlidingWindowedCogroupedKStream<K, A> {
    cogrouped: CogroupedKStream<K, A>,
    windows: SlidingWindows,
    emit: EmitStrategy,
}

impl<K: Data, A: Data> SlidingWindowedCogroupedKStream<K, A> {
    /// Forward every update (default) or each window once when it closes.
    pub fn emit_strategy(self, emit: EmitStrategy) -> Self {
        SlidingWindowedCogroupedKStream { emit, ..self }
    }

    /// The aggregate per key and sliding window of every input.
    pub fn aggregate(
        self,
        init: impl Fn() -> A + Send + Sync + 'static,
        aggregate_serde: Serde<A>,
        materialized: Materialized,
    ) -> KTable<Windowed<K>, A, WindowStored> {
        self.cogrouped.windowed_aggregate(
            self.windows,
            self.emit,
            materialized,
            aggregate_serde,
            Arc::new(init),
            CoreFactory::Sliding,
        )
    }
}

/// Cogrouped streams in session windows.
pub struct SessionWindowedCogroupedKStream<K, A> {
    cogrouped: CogroupedKStream<K, A>,
    windows: SessionWindows,
    emit: EmitStrategy,
}

impl<K: Data, A: Data> SessionWindowedCogroupedKStream<K, A> {
    /// Forward every update (default) or each session once when it closes.
    pub fn emit_strategy(self, emit: EmitStrategy) -> Self {
        SessionWindowedCogroupedKStream { emit, ..self }
    }

    /// The aggregate per key and session of every input. When a record
    /// bridges sessions, their aggregates are first combined with
    /// `merger(key, acc, session)` starting from `init()`, oldest session
    /// first, then the record is folded in with its input's aggregator (as
    /// for a single stream's session `aggregate`).
    pub fn aggregate(
        self,
        init: impl Fn() -> A + Send + Sync + 'static,
        merger: impl Fn(&K, A, A) -> A + Send + Sync + 'static,
        aggregate_serde: Serde<A>,
        materialized: Materialized,
    ) -> KTable<Windowed<K>, A, WindowStored> {
        let merger: Merger<K, A> = Arc::new(merger);
        self.cogrouped.windowed_aggregate(
            self.windows,
            self.emit,
            materialized,
            aggregate_serde,
            Arc::new(init),
            move |f| CoreFactory::Session(f, merger.clone()),
        )
    }
}

/// The task-side core every input of one cogroup feeds.
enum CoreFactory<K, A> {
    Kv(SharedFactory<KvAggCore<K, A>>),
    Window(SharedFactory<TimeWindowAggCore<K, A>>),
    Sliding(SharedFactory<SlidingAggCore<K, A>>),
    Session(SharedFactory<SessionAggCore<K, A>>, Merger<K, A>),
}

/// One input of a cogroup with its value type erased, so that inputs of
/// different value types fit in one list.
trait ErasedInput<K, A> {
    /// Add the input's aggregation node (after a repartition through
    /// `{repartition_name}-repartition` if its key changed); its id.
    fn add_node(&mut self, repartition_name: &str) -> usize;
    /// Attach the task-side node that feeds this input's records into the
    /// shared core.
    fn attach(self: Box<Self>, core: CoreFactory<K, A>, init: Init<A>);
}

struct TypedInput<K, V, A> {
    grouped: KGroupedStream<K, V>,
    aggregator: Aggregator<K, V, A>,
    stream: Option<KStream<K, V>>,
}

impl<K: Data, V: Data, A: Data> ErasedInput<K, A> for TypedInput<K, V, A> {
    fn add_node(&mut self, repartition_name: &str) -> usize {
        let stream = self.grouped.input_via(repartition_name);
        let id = stream
            .graph
            .borrow_mut()
            .add_node(KIND, NodeKind::Processor, vec![stream.node]);
        self.stream = Some(stream);
        id
    }

    fn attach(self: Box<Self>, core: CoreFactory<K, A>, init: Init<A>) {
        let stream = self.stream.expect("add_node runs first");
        let aggregator = self.aggregator;
        let init = move || init();
        let aggregator = move |k: &K, v: V, acc: A| aggregator(k, v, acc);
        match core {
            CoreFactory::Kv(f) => attach_shared(&stream, f, aggregate_step(init, aggregator)),
            CoreFactory::Window(f) => attach_shared(&stream, f, aggregate_step(init, aggregator)),
            CoreFactory::Sliding(f) => attach_shared(&stream, f, aggregate_step(init, aggregator)),
            CoreFactory::Session(f, merger) => {
                let merger = move |k: &K, acc: A, s: A| merger(k, acc, s);
                attach_shared(&stream, f, aggregate_fold(init, aggregator, merger))
            }
        }
    }
}

fn attach_shared<K: Data, V: Data, C, S>(stream: &KStream<K, V>, core: SharedFactory<C>, step: S)
where
    C: Aggregates<K, V, S>,
    S: Clone + Send + Sync + 'static,
{
    stream.attach(Arc::new(move |ictx| {
        Ok(Box::new(SharedAggNode {
            core: core(ictx)?,
            step: step.clone(),
        }) as Box<dyn Node<K, V>>)
    }));
}

/// One input's node in a task: its records go into the shared core with
/// its own step. Flushing goes to the core from every input (the core's
/// flush is idempotent within a commit).
struct SharedAggNode<C, S> {
    core: Rc<RefCell<C>>,
    step: S,
}

impl<K, V, C: Aggregates<K, V, S>, S> Node<K, V> for SharedAggNode<C, S> {
    #[inline]
    fn process(&mut self, ctx: &mut ProcessorContext, key: K, value: V) {
        self.core.borrow_mut().aggregate(ctx, key, value, &self.step)
    }
    fn flush(&mut self, ctx: &mut ProcessorContext) {
        self.core.borrow_mut().flush(ctx)
    }
    fn punctuate(&mut self, ctx: &mut ProcessorContext) {
        self.core.borrow_mut().punctuate(ctx)
    }
    fn close(&mut self, ctx: &mut ProcessorContext) {
        self.core.borrow_mut().close(ctx)
    }
}
