// Only a table straight from a windowed aggregation can be suppressed: a
// mapped windowed table still has windowed keys but no grace period.
use std::time::Duration;
use weir_topology::*;

fn main() {
    let mut b = StreamsBuilder::new();
    b.stream::<String, String>("events", Serdes::string(), Serdes::string())
        .group_by_key(Serdes::string(), Serdes::string())
        .windowed_by(TimeWindows::of(Duration::from_secs(60)).unwrap())
        .count(Materialized::named("counts"))
        .map_values(|_, n| n * 2)
        .suppress(Suppressed::until_window_closes())
        .to_stream()
        .to("out", Serdes::windowed(Serdes::string()), Serdes::u64());
}
