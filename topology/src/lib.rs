//! weir's DSL: describe a stream processing topology in typed Rust.
//!
//! ```
//! use weir_topology::*;
//!
//! let mut b = StreamsBuilder::new();
//! b.stream::<String, String>("words", Serdes::string(), Serdes::string())
//!     .select_key(|_, w| w.to_lowercase())
//!     .group_by_key(Serdes::string(), Serdes::string())
//!     .count(Materialized::named("word-counts"))
//!     .to_stream()
//!     .to("word-counts-out", Serdes::string(), Serdes::u64());
//! let topology = b.build()?;
//! assert!(topology.describe("app").contains("Sub-topology: 1"));
//! # Ok::<(), TopologyError>(())
//! ```
//!
//! This crate does no I/O: it builds a [`Topology`] that `weir-runtime`
//! runs on Kafka and that `weir_runtime::testing::TopologyTestDriver` runs
//! in-process.

mod builder;
mod context;
mod error;
mod grouped;
mod join;
mod kstream;
mod ktable;
mod materialized;
pub mod names;
mod node;
mod process;
pub mod serde;
mod session;
pub mod store;
mod topology;
mod windows;

// Operators added for the DSL-parity work (issue 13); each module
// re-exports its public types through the glob below.
mod cogroup;
mod fk_join;
mod global_table;
mod grouped_table;
mod produced;
mod sliding;
mod table_join;
pub use cogroup::*;
#[allow(unused_imports)]
pub use fk_join::*;
#[allow(unused_imports)]
pub use global_table::*;
pub use grouped_table::*;
#[allow(unused_imports)]
pub use produced::*;
pub use sliding::*;
pub use table_join::*;

pub use builder::StreamsBuilder;
pub use context::{
    DeadLetter, Destination, Headers, InitContext, OutRecord, ProcessorContext, PunctuationType, RecordCollector,
    StoreRef, TaskCounters, DYNAMIC_TOPIC, WEIR_HEADER_PREFIX,
};
pub use error::TopologyError;
pub use grouped::{KGroupedStream, SessionWindowedKStream, TimeWindowedKStream, WindowSpec};
pub use join::{Joined, StreamJoined};
pub use kstream::{BranchedKStream, KStream, StreamPartitioner, TopicNameExtractor};
pub use ktable::{Derived, Joinable, KTable, Stored, Suppressible, TableState, WindowStored};
pub use materialized::{Materialized, Suppressed};
pub use node::{Children, Node};
pub use process::{KeyValueStoreHandle, KeyValueStoreView, Processor, ProcessorApi, StoreToken};
pub use serde::{Serde, SerdeError, SerdeImpl, Serdes};
pub use topology::{NodeInfo, NodeKind, SourceNode, SubTopology, TaskNodes, TopicDef, Topology};
pub use windows::{JoinWindows, SessionWindows, TimeWindows, Window, Windowed};

/// What keys and values must be: cloneable (a record fans out to several
/// operators) and owned.
pub trait Data: Clone + 'static {}
impl<T: Clone + 'static> Data for T {}

/// Everything a topology author needs, in one import.
pub mod prelude {
    pub use crate::{
        CogroupedKStream, Consumed, Data, DefaultSerde, Derived, EmitStrategy, FkJoined, GlobalKTable, Grouped,
        Headers, InitContext, JoinWindows, Joined, KGroupedStream, KGroupedTable, KStream, KTable, KeyValueStoreHandle,
        KeyValueStoreView, Materialized, Processor, ProcessorApi, Produced, PunctuationType, Serde, Serdes,
        SessionWindows, SlidingWindows, StoreToken, Stored, StreamJoined, StreamsBuilder, Suppressed, TableJoined,
        TimeWindows, Topology, TopologyError, Window, WindowStored, Windowed,
    };
}
