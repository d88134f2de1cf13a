// The result of an unmaterialized join has no store: it cannot be the left
// side of another join.
use weir_topology::*;

fn main() {
    let mut b = StreamsBuilder::new();
    let a = b.table::<u64, String>("a", Serdes::u64(), Serdes::string(), Materialized::named("a"));
    let c = b.table::<u64, String>("c", Serdes::u64(), Serdes::string(), Materialized::named("c"));
    let ac = a.join(&c, |x, y| format!("{x}{y}"), TableJoined::unmaterialized());
    ac.left_join(&c, |x, _| x.clone(), TableJoined::unmaterialized())
        .to("out", Serdes::u64(), Serdes::string());
}
