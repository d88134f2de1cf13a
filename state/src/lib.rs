//! weir's state stores: sled-backed key-value and window stores with a
//! write cache, committed atomically with the task's checkpoint.
//!
//! # Shape
//!
//! * [`StateDb`]: one sled database per instance, under its state dir.
//! * [`TaskState`]: the state of one task, one sled tree holding all of the
//!   task's stores (keys prefixed by store name) and its checkpoint (bytes
//!   of weir-runtime's checkpoint codec).
//!   It is the task's [`StoreSupplier`].
//! * [`SledKeyValueStore`], [`SledWindowStore`], [`SledVersionedStore`]:
//!   per-store write caches over the tree, implementing the traits of
//!   `weir_topology::store` (re-exported here) that processors are written
//!   against. The versioned store keeps each key's versions (KIP-889) for
//!   as-of reads, and is the current state of its table as a
//!   [`KeyValueStore`]; [`TaskState::read_versioned`] and
//!   [`TaskState::scan_versioned`] read it for interactive queries.
//!
//! # The commit protocol, as the stores see it
//!
//! Processors read and write through the caches. At commit time the
//! runtime calls [`StateStore::flush`] on each store, which stages the
//! store's changes into the task's pending batch and returns its changelog
//! records; it sends those, then calls [`TaskState::commit`] with the input
//! offsets, which writes all staged changes and the checkpoint in one
//! atomic sled batch. Whatever was not committed is gone after a crash, and
//! the checkpoint says exactly which input the committed data reflects.
//!
//! Rebuilding after a loss replays changelog records with
//! [`TaskState::restore`], which bypasses the caches.

mod cache;
mod core;
mod global;
mod kv;
mod layout;
mod task;
mod versioned;
mod window;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod versioned_tests;

pub use global::{GlobalPositions, SledGlobalStore};
pub use kv::SledKeyValueStore;
pub use task::{KvEntries, StateDb, StoreReader, TaskState, SLED_CACHE_BYTES};
pub use versioned::SledVersionedStore;
pub use weir_topology::store::*;
pub use window::SledWindowStore;
