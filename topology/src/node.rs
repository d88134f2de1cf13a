//! The typed processor tree that a task runs.
//!
//! Each DSL operator becomes a factory of [`Node`]s; a task calls the
//! factories to build its own tree of typed nodes, so records pass from node
//! to node as plain Rust values (no boxing, no `Any`, no serialization
//! inside a sub-topology) through one virtual call per hop.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::{Arc, Mutex};

use crate::context::{InitContext, ProcessorContext};
use crate::error::TopologyError;

/// A processor instance of one task, typed by the records it receives.
pub trait Node<K, V> {
    fn process(&mut self, ctx: &mut ProcessorContext, key: K, value: V);

    /// Commit time: forward what this node cached, stage its stores'
    /// changes, then flush the children.
    fn flush(&mut self, ctx: &mut ProcessorContext);

    /// Time moved (stream time after a batch, or the wall clock): emit what
    /// is due, then punctuate the children.
    fn punctuate(&mut self, ctx: &mut ProcessorContext);

    /// The task is closing; release what the node holds.
    fn close(&mut self, ctx: &mut ProcessorContext);
}

/// The downstream nodes of one output of a node.
pub struct Children<K, V> {
    list: Vec<Box<dyn Node<K, V>>>,
}

impl<K: Clone, V: Clone> Children<K, V> {
    pub(crate) fn new(list: Vec<Box<dyn Node<K, V>>>) -> Self {
        Children { list }
    }

    /// Pass a record to every child; clones only for all but the last.
    #[inline]
    pub fn forward(&mut self, ctx: &mut ProcessorContext, key: K, value: V) {
        match self.list.len() {
            0 => {}
            1 => self.list[0].process(ctx, key, value),
            n => {
                for child in &mut self.list[..n - 1] {
                    child.process(ctx, key.clone(), value.clone());
                }
                self.list[n - 1].process(ctx, key, value);
            }
        }
    }

    pub fn flush(&mut self, ctx: &mut ProcessorContext) {
        for c in &mut self.list {
            c.flush(ctx);
        }
    }
    pub fn punctuate(&mut self, ctx: &mut ProcessorContext) {
        for c in &mut self.list {
            c.punctuate(ctx);
        }
    }
    pub fn close(&mut self, ctx: &mut ProcessorContext) {
        for c in &mut self.list {
            c.close(ctx);
        }
    }
}

/// Creates one node instance for a task.
pub type NodeFactory<K, V> =
    Arc<dyn Fn(&mut InitContext<'_>) -> Result<Box<dyn Node<K, V>>, TopologyError> + Send + Sync>;

/// The children factories of one output of a graph node. Operators added
/// later append to it, so it is shared between the node's factory (which
/// reads it when a task is created) and the DSL handle (which appends).
pub struct ChildSlot<K, V>(Mutex<Vec<NodeFactory<K, V>>>);

impl<K: Clone + 'static, V: Clone + 'static> ChildSlot<K, V> {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(ChildSlot(Mutex::new(Vec::new())))
    }
    pub(crate) fn push(&self, f: NodeFactory<K, V>) {
        self.0.lock().expect("child slot poisoned").push(f);
    }
    /// Build this output's children for a task.
    pub(crate) fn instantiate(&self, ictx: &mut InitContext<'_>) -> Result<Children<K, V>, TopologyError> {
        let factories: Vec<NodeFactory<K, V>> = self.0.lock().expect("child slot poisoned").clone();
        let mut list = Vec::with_capacity(factories.len());
        for f in factories {
            list.push(f(ictx)?);
        }
        Ok(Children::new(list))
    }
}

/// A fan-in target (merge): several parents forward into the same children
/// instance of a task.
pub(crate) struct SharedChildren<K, V>(pub(crate) Rc<RefCell<Children<K, V>>>);

impl<K: Clone, V: Clone> Node<K, V> for SharedChildren<K, V> {
    #[inline]
    fn process(&mut self, ctx: &mut ProcessorContext, key: K, value: V) {
        self.0.borrow_mut().forward(ctx, key, value)
    }
    fn flush(&mut self, ctx: &mut ProcessorContext) {
        self.0.borrow_mut().flush(ctx)
    }
    fn punctuate(&mut self, ctx: &mut ProcessorContext) {
        self.0.borrow_mut().punctuate(ctx)
    }
    fn close(&mut self, ctx: &mut ProcessorContext) {
        self.0.borrow_mut().close(ctx)
    }
}

/// A stateless node: `f` gets each record and the children to forward to.
/// Most stateless operators (filter, map, peek, ...) are this with a
/// different closure.
pub(crate) struct FnNode<K, V, KO, VO, F> {
    pub(crate) f: Arc<F>,
    pub(crate) children: Children<KO, VO>,
    pub(crate) _marker: std::marker::PhantomData<fn(K, V)>,
}

impl<K, V, KO, VO, F> Node<K, V> for FnNode<K, V, KO, VO, F>
where
    KO: Clone,
    VO: Clone,
    F: Fn(&mut ProcessorContext, K, V, &mut Children<KO, VO>),
{
    #[inline]
    fn process(&mut self, ctx: &mut ProcessorContext, key: K, value: V) {
        (self.f)(ctx, key, value, &mut self.children)
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
