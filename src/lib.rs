//! weir: Kafka Streams–style stream processing for Rust.
//!
//! This facade re-exports the DSL ([`weir_topology`]), the state stores
//! ([`weir_state`]) and the runtime with its test driver
//! ([`weir_runtime`]). Write topologies with `use weir::prelude::*;`.

// The scenarios are written against the public `weir::` paths, exactly as
// a user's crate would be.
extern crate self as weir;

pub mod bench;
pub mod daemon;
pub mod scenarios;

pub use daemon::Daemon;
pub use weir_connectors as connectors;
pub use weir_runtime as runtime;
pub use weir_state as state;
pub use weir_topology as topology;
pub use weir_topology::*;

/// Run topologies in-process, with no broker (for tests).
pub mod testing {
    pub use weir_runtime::testing::*;
}

pub mod prelude {
    pub use weir_topology::prelude::*;
}

/// The README's code blocks are compiled and run as doctests, so the front
/// door never shows code that does not work.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
