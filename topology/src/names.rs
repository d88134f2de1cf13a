//! The one place that names an application's internal topics: every
//! other crate (the run plan, the test driver, `describe`, `/stats`, the
//! HTTP API) asks here, so a name never has to be guessed from a prefix.
//!
//! | topic | name |
//! |---|---|
//! | repartition | `{application_id}-{name}` (e.g. `…-counts-repartition`) |
//! | changelog of a store | `{application_id}-{store}-changelog` |
//! | dead letters | `{application_id}-dlq` |
//! | checkpoints | `{application_id}-checkpoints` |

/// An internal topic of the topology (a repartition topic) whose
/// topology-level name is `name`.
pub fn internal_topic(application_id: &str, name: &str) -> String {
    format!("{application_id}-{name}")
}

/// The changelog topic of `store`.
pub fn changelog_topic(application_id: &str, store: &str) -> String {
    format!("{application_id}-{store}-changelog")
}

/// The dead-letter topic.
pub fn dlq_topic(application_id: &str) -> String {
    format!("{application_id}-dlq")
}

/// The checkpoints topic.
pub fn checkpoints_topic(application_id: &str) -> String {
    format!("{application_id}-checkpoints")
}
