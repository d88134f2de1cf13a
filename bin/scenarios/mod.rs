//! The five built-in scenarios (../shared/SCENARIOS.md), each a topology
//! written with the public DSL only, registered by name.

use weir::{Topology, TopologyError};

/// A registered topology: its name (also its application id), a one-line
/// description and how to build it with default parameters.
pub struct Scenario {
    pub name: &'static str,
    pub description: &'static str,
    pub build: fn() -> Result<Topology, TopologyError>,
}

/// Every built-in scenario, in the order of SCENARIOS.md.
pub fn all() -> Vec<Scenario> {
    vec![]
}

/// The scenario called `name`.
pub fn find(name: &str) -> Option<Scenario> {
    all().into_iter().find(|s| s.name == name)
}
