// A foreign-key join answers subscriptions from the right table's store: a
// filtered right table has none.
use weir_topology::*;

fn main() {
    let mut b = StreamsBuilder::new();
    let orders = b.table::<String, String>("orders", Serdes::string(), Serdes::string(), Materialized::unnamed());
    let customers = b
        .table::<String, String>("customers", Serdes::string(), Serdes::string(), Materialized::unnamed())
        .filter(|_, v| !v.is_empty());
    orders
        .fk_join(&customers, String::clone, |o, c| format!("{o}{c}"), FkJoined::unmaterialized())
        .to("out", Serdes::string(), Serdes::string());
}
