//! Errors of building and instantiating topologies.

use crate::store::StoreError;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopologyError {
    #[error("invalid window: {0}")]
    InvalidWindow(String),
    #[error("invalid name {name:?}: {reason}")]
    InvalidName { name: String, reason: String },
    #[error("store {0:?} is declared twice")]
    DuplicateStore(String),
    #[error("unknown store {0:?}: declare it with StreamsBuilder::add_state_store first")]
    UnknownStore(String),
    #[error("topology has no source topic")]
    Empty,
    #[error("{0}")]
    Store(#[from] StoreError),
}
