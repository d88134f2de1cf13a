//! The crate's error type.

use std::time::Duration;

/// Everything that can go wrong in weir-connectors.
///
/// librdkafka's own errors are kept as the source and wrapped with what weir
/// was doing at the time, because "Local: Broker transport failure" alone does
/// not tell a user which call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A librdkafka call failed.
    #[error("{context}: {source}")]
    Kafka {
        /// What weir was doing.
        context: String,
        /// The librdkafka error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// Records could not be delivered to the cluster.
    #[error("{failed} record(s) to topic {topic:?} were not delivered; first error: {first_error}")]
    Delivery {
        /// The topic written to.
        topic: String,
        /// How many records failed.
        failed: u64,
        /// The first delivery error reported by librdkafka.
        first_error: String,
    },
    /// The cluster refused to create a topic.
    #[error("could not create topic {topic:?}: {reason}")]
    TopicCreation {
        /// The topic.
        topic: String,
        /// Why, as the cluster (or weir) said it.
        reason: String,
    },
    /// A topic weir needs does not exist.
    #[error("topic {0:?} does not exist")]
    UnknownTopic(String),
    /// A topology's source topic does not exist on a real cluster (weir
    /// creates only its internal topics there, as Kafka Streams does).
    #[error("source topic {topic:?} of {application} does not exist; create it first")]
    MissingSourceTopic {
        /// The topic.
        topic: String,
        /// The application that reads it.
        application: String,
    },
    /// A task failed: its processors or its stores.
    #[error("task {task}: {reason}")]
    Task {
        /// The task id, `{subtopology}_{partition}`.
        task: String,
        /// What failed.
        reason: String,
    },
    /// A commit was refused because something failed before it (a send, a
    /// delivery, an earlier commit step): committing then could move the
    /// checkpoint past records whose outputs were never delivered.
    #[error("not committing: {0}")]
    CommitRefused(String),
    /// Work stopped half-way because the daemon was told to stop; nothing
    /// was committed past it.
    #[error("{0}")]
    Interrupted(String),
    /// Data weir wrote earlier does not read back (a checkpoint record that
    /// does not decode): never papered over.
    #[error("corrupt data: {0}")]
    Corrupt(String),
    /// The local state store (sled) could not be read or written.
    #[error("local state: {0}")]
    State(String),
    /// An argument was out of range or malformed.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A condition did not become true in time.
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout {
        /// What was being waited for.
        what: String,
        /// How long weir waited.
        after: Duration,
    },
    /// The [`EmbeddedBroker`](crate::kafka::EmbeddedBroker) failed to start.
    #[error("embedded broker: {0}")]
    EmbeddedBroker(String),
    /// Reading input or writing output failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The cluster failed a call of the task manager's (a send, a
    /// delivery, a read); the message names the call and the topic.
    #[error("{0}")]
    Transport(String),
    /// Anything else the runtime reported (a topology or store error).
    #[error(transparent)]
    Runtime(weir_runtime::RuntimeError),
}

impl From<weir_runtime::RuntimeError> for Error {
    /// The runtime's errors keep their kind: an interrupted commit stays
    /// [`Error::Interrupted`] (a clean stop), a task error stays
    /// [`Error::Task`].
    fn from(e: weir_runtime::RuntimeError) -> Error {
        use weir_runtime::RuntimeError as R;
        match e {
            R::Task { task, reason } => Error::Task { task, reason },
            R::Corrupt(s) => Error::Corrupt(s),
            R::CommitRefused(s) => Error::CommitRefused(s),
            R::Interrupted(s) => Error::Interrupted(s),
            R::Timeout { what, after } => Error::Timeout { what, after },
            R::Transport(s) => Error::Transport(s),
            R::Store(e) => Error::State(e.to_string()),
            R::UnknownTopic(t) => Error::UnknownTopic(t),
            other => Error::Runtime(other),
        }
    }
}

impl From<Error> for weir_runtime::RuntimeError {
    /// What the Kafka transport reports to the task manager.
    fn from(e: Error) -> weir_runtime::RuntimeError {
        use weir_runtime::RuntimeError as R;
        match e {
            Error::Interrupted(s) => R::Interrupted(s),
            Error::Timeout { what, after } => R::Timeout { what, after },
            Error::Corrupt(s) => R::Corrupt(s),
            Error::Runtime(r) => r,
            other => R::Transport(other.to_string()),
        }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps a librdkafka error with what weir was doing.
    pub(crate) fn kafka(context: impl Into<String>, source: rdkafka::error::KafkaError) -> Self {
        Error::Kafka {
            context: context.into(),
            source,
        }
    }
}
