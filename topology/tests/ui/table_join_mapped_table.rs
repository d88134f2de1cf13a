// A table–table join looks every update up in the other table's store: a
// map_values table has none.
use weir_topology::*;

fn main() {
    let mut b = StreamsBuilder::new();
    let left = b.table::<u64, String>("left", Serdes::u64(), Serdes::string(), Materialized::named("left"));
    let right = b
        .table::<u64, String>("right", Serdes::u64(), Serdes::string(), Materialized::named("right"))
        .map_values(|_, v| v.len() as u64);
    left.join(&right, |l, r| format!("{l}{r}"), TableJoined::unmaterialized())
        .to("out", Serdes::u64(), Serdes::string());
}
