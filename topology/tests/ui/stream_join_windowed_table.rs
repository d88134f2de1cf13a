// A windowed aggregation's table has a window store: not joinable by key.
use std::time::Duration;
use weir_topology::*;

fn main() {
    let mut b = StreamsBuilder::new();
    let counts = b
        .stream::<String, String>("events", Serdes::string(), Serdes::string())
        .group_by_key(Serdes::string(), Serdes::string())
        .windowed_by(TimeWindows::of(Duration::from_secs(1)).unwrap())
        .count(Materialized::named("counts"));
    b.stream::<String, String>("clicks", Serdes::string(), Serdes::string())
        .map(|k, v| (Windowed { key: k, window: Window { start: 0, end: 1000 } }, v))
        .repartition("w", Serdes::windowed(Serdes::string()), Serdes::string())
        .join(&counts, |_, click, n| format!("{click}{n}"))
        .to("out", Serdes::windowed(Serdes::string()), Serdes::string());
}
