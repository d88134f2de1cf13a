//! weir's connectors: everything that talks to the outside world.
//!
//! For now this is the Kafka plumbing ([`kafka`]): the tuned client
//! configurations, topic administration, the `weir produce` / `weir tail`
//! helpers, Kafka's default partitioner and an embedded broker for tests;
//! and the Parquet sink ([`parquet`]). HTTP ingress and generators come
//! later.

pub mod error;
pub mod kafka;
pub mod parquet;

pub use error::{Error, Result};
