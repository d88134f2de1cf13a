//! Errors of building and instantiating topologies.

use crate::store::StoreError;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopologyError {
    #[error("invalid window: {0}")]
    InvalidWindow(String),
    #[error("invalid name {name:?}: {reason}")]
    InvalidName { name: String, reason: String },
    /// An operator used where it cannot work (e.g. a join of a re-keyed
    /// stream that was not repartitioned); names the graph node.
    #[error("{node}: {reason}")]
    InvalidOperation { node: String, reason: String },
    #[error("store {0:?} is declared twice")]
    DuplicateStore(String),
    #[error("unknown store {0:?}: declare it with StreamsBuilder::add_state_store first")]
    UnknownStore(String),
    #[error("topology has no source topic")]
    Empty,
    #[error("{0}")]
    Store(#[from] StoreError),
}
