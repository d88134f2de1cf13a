//! weir's runtime: tasks (the unit of work and state), the task manager
//! that runs them over any [`transport::Transport`] (assignment, the task
//! lifecycle, restore, the commit protocol), an in-memory transport, and
//! the [`testing::TopologyTestDriver`] that runs a topology in-process with
//! no broker. The Kafka stream threads (weir-connectors) are the rdkafka
//! implementation of the transport plus a poll loop.

pub mod checkpoint;
pub mod dead_letter;
pub mod global;
pub mod local;
pub mod manager;
pub mod memory;
pub mod metrics;
pub mod partitioner;
pub mod plan;
pub mod task;
pub mod testing;
pub mod transport;

pub use manager::TaskManager;
pub use plan::Plan;
pub use task::{Origin, Task, TaskCheckpoint, TaskConfig, TaskId};
pub use transport::Transport;

use std::time::Duration;

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
    /// A task failed: its processors, its stores, or its restore.
    #[error("task {task}: {reason}")]
    Task {
        /// The task id, `{subtopology}_{partition}`.
        task: String,
        /// What failed.
        reason: String,
    },
    /// Data weir wrote earlier does not read back (a checkpoint that does
    /// not decode): never papered over.
    #[error("corrupt data: {0}")]
    Corrupt(String),
    /// A commit was refused because something failed before it: committing
    /// then could move a checkpoint past records whose outputs were never
    /// delivered.
    #[error("not committing: {0}")]
    CommitRefused(String),
    /// Work stopped half-way because the process was told to stop; nothing
    /// was committed past it.
    #[error("{0}")]
    Interrupted(String),
    /// A condition did not become true in time.
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout {
        /// What was being waited for.
        what: String,
        /// How long weir waited.
        after: Duration,
    },
    /// The transport (Kafka, or the in-memory one) failed: a send, a
    /// delivery, a read. The message names the call and the topic.
    #[error("{0}")]
    Transport(String),
    /// Another member took this one's place (its transactional producer
    /// was fenced, or its group generation is over): its tasks are not its
    /// own any more, and nothing it has not committed ever will be.
    #[error("fenced: {0}")]
    Fenced(String),
}

impl RuntimeError {
    /// A task error: `reason` says what failed in task `task`.
    pub fn task(task: TaskId, reason: impl std::fmt::Display) -> RuntimeError {
        RuntimeError::Task {
            task: task.to_string(),
            reason: reason.to_string(),
        }
    }
}
