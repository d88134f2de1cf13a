// A stream–table join looks each key up in the table's store: a filtered
// table has none.
use weir_topology::*;

fn main() {
    let mut b = StreamsBuilder::new();
    let users = b
        .table::<String, String>("users", Serdes::string(), Serdes::string(), Materialized::named("users"))
        .filter(|_, v| !v.is_empty());
    b.stream::<String, String>("clicks", Serdes::string(), Serdes::string())
        .left_join(&users, |_, click, _user| click)
        .to("out", Serdes::string(), Serdes::string());
}
