//! weir's runtime: tasks (the unit of work and state), and the
//! [`testing::TopologyTestDriver`] that runs a topology in-process with no
//! broker. The Kafka stream threads build on the same [`task::Task`].

pub mod dead_letter;
pub mod local;
pub mod metrics;
pub mod task;
pub mod testing;

pub use task::{Origin, Task, TaskCheckpoint, TaskConfig, TaskId};

use weir_topology::store::StoreError;
use weir_topology::TopologyError;

/// Errors of running a topology.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Topology(#[from] TopologyError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("unknown topic {0:?}: the topology neither reads nor writes it")]
    UnknownTopic(String),
    #[error("unknown store {0:?}")]
    UnknownStore(String),
    #[error("{0}")]
    Io(String),
}
