//! A daemon of your own: one topology, registered by name, with the whole
//! `weir` command line (run, list, describe, dev-broker, produce, tail),
//! the HTTP API, metrics and the dashboard.
//!
//! ```sh
//! cargo run -p shouting -- run shouting        # on an embedded broker
//! ```

use weir::prelude::*;

/// Every line of `chat` upper-cased to `chat-shouted`, and a running count
/// of lines per speaker (the key), queryable at `/stores/lines-per-speaker`.
pub fn shouting() -> Result<Topology, TopologyError> {
    let mut b = StreamsBuilder::new();
    let lines = b.stream::<String, String>("chat", Serdes::string(), Serdes::string());
    lines
        .clone()
        .map_values(|_, line| line.to_uppercase())
        .to("chat-shouted", Serdes::string(), Serdes::string());
    lines
        .group_by_key(Serdes::string(), Serdes::string())
        .count(Materialized::named("lines-per-speaker"));
    b.build()
}

fn main() -> std::process::ExitCode {
    weir::Daemon::new()
        .register(
            "shouting",
            "upper-cases every chat line and counts lines per speaker",
            shouting,
        )
        .main()
}
