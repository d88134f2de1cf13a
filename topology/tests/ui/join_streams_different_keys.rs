// A stream–stream join matches records by key: both streams need the same
// key type (re-key one with select_key / map first).
use std::time::Duration;
use weir_topology::*;

fn main() {
    let mut b = StreamsBuilder::new();
    let orders = b.stream::<String, String>("orders", Serdes::string(), Serdes::string());
    let payments = b.stream::<u64, String>("payments", Serdes::u64(), Serdes::string());
    orders
        .join_stream(
            payments,
            |_, o, p| format!("{o}{p}"),
            JoinWindows::of(Duration::from_secs(60)).unwrap(),
            StreamJoined::with(Serdes::string(), Serdes::string(), Serdes::string()),
        )
        .to("out", Serdes::string(), Serdes::string());
}
