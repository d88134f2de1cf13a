//! Kafka through rdkafka (librdkafka 2.12): tuned client configurations,
//! topic administration, line-based produce and tail, the one producer
//! context ([`DeliveryTracker`]), Kafka's default partitioner, and
//! [`EmbeddedBroker`], weir's broker with throw-away data for tests.
//!
//! Everything here is synchronous: weir's stream threads poll librdkafka
//! from plain threads, and the admin calls block on their (rare) futures.

mod admin;
mod broker;
mod clients;
mod config;
mod console;
pub mod delivery;
pub mod stream;

pub use admin::{validate_topic, Admin, TopicSpec};
pub use broker::{EmbeddedBroker, MAX_PARTITIONS};
pub use clients::{assign_at, flush_producer, serve_deliveries_after};
pub use config::{AssignmentStrategy, ClientSettings};
pub use console::{produce_lines, produce_lines_with, tail, tail_with, TailLimit, TailRecord};
pub use delivery::{DeliveryTracker, Tracked, UNTRACKED};
/// Kafka's default partitioner (murmur2), which weir's task manager uses
/// too; it lives in weir-runtime.
pub use weir_runtime::partitioner::{default_partitioner, murmur2};

/// The rdkafka crate weir is built on, re-exported so that users (and
/// weir's own crates) name the exact same types.
pub use rdkafka;
