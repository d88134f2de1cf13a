// Aggregations are on grouped streams: a KStream must be grouped first
// (group_by_key / group_by), which also says how it is repartitioned.
use weir_topology::*;

fn main() {
    let mut b = StreamsBuilder::new();
    b.stream::<String, String>("events", Serdes::string(), Serdes::string())
        .count(Materialized::named("counts"))
        .to_stream()
        .to("out", Serdes::string(), Serdes::u64());
}
