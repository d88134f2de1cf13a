//! The five built-in scenarios (../shared/SCENARIOS.md), each a topology
//! written with the public DSL only, registered by name.

pub mod clickstream_parquet;
pub mod emoji_stream;
pub mod hashtag_trends;
pub mod sms_delivery;
pub mod user_clicks;

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
    vec![
        Scenario {
            name: emoji_stream::NAME,
            description: emoji_stream::DESCRIPTION,
            build: || emoji_stream::topology(&emoji_stream::Params::default()),
        },
        Scenario {
            name: hashtag_trends::NAME,
            description: hashtag_trends::DESCRIPTION,
            build: || hashtag_trends::topology(&hashtag_trends::Params::default()),
        },
        Scenario {
            name: clickstream_parquet::NAME,
            description: clickstream_parquet::DESCRIPTION,
            build: || clickstream_parquet::topology(&clickstream_parquet::Params::default()),
        },
        Scenario {
            name: sms_delivery::NAME,
            description: sms_delivery::DESCRIPTION,
            build: || sms_delivery::topology(&sms_delivery::Params::default()),
        },
        Scenario {
            name: user_clicks::NAME,
            description: user_clicks::DESCRIPTION,
            build: || user_clicks::topology(&user_clicks::Params::default()),
        },
    ]
}

/// The scenario called `name`.
pub fn find(name: &str) -> Option<Scenario> {
    all().into_iter().find(|s| s.name == name)
}
