//! GlobalKTable and stream–global-table joins, through the test driver and
//! the in-memory cluster's `Member`.
//!
//! The topology: `orders` (order id → "customer,item") joined with the
//! global table `customers` (customer id → name) on the customer id taken
//! from the order's value, as in Kafka Streams'
//! `KStream#join(GlobalKTable, KeyValueMapper, ValueJoiner)`.

use std::sync::Arc;

use weir_runtime::memory::{Member, MemoryCluster};
use weir_runtime::testing::{TestDriverConfig, TestRecord, TopologyTestDriver};
use weir_runtime::TaskConfig;
use weir_state::StateDb;
use weir_topology::prelude::*;

fn customer_of(order: &str) -> String {
    order.split(',').next().unwrap_or_default().to_string()
}

/// Inner join to `enriched`, left join to `enriched-left`.
fn topology() -> Topology {
    let mut b = StreamsBuilder::new();
    let customers = b.global_table::<String, String>(
        "customers",
        Serdes::string(),
        Serdes::string(),
        Materialized::named("customers-store"),
    );
    let orders = b.stream::<String, String>("orders", Serdes::string(), Serdes::string());
    orders
        .clone()
        .join_global(
            &customers,
            |_, v| customer_of(v),
            |_, v, name| format!("{v} for {name}"),
        )
        .to("enriched", Serdes::string(), Serdes::string());
    orders
        .left_join_global(
            &customers,
            |_, v| customer_of(v),
            |_, v, name: Option<String>| format!("{v} for {}", name.as_deref().unwrap_or("?")),
        )
        .to("enriched-left", Serdes::string(), Serdes::string());
    b.build().unwrap()
}

fn rec(key: &str, value: &str, timestamp: i64) -> TestRecord<String, String> {
    TestRecord {
        key: key.to_string(),
        value: value.to_string(),
        timestamp,
    }
}

struct Fixture {
    driver: TopologyTestDriver,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture {
            driver: TopologyTestDriver::new(topology(), TestDriverConfig::default()).unwrap(),
        }
    }
    fn customer(&self, id: &str, name: Option<&str>, ts: i64) {
        self.driver
            .pipe_raw("customers", Some(id.as_bytes()), name.map(str::as_bytes), ts)
            .unwrap();
    }
    fn order(&self, id: &str, value: &str, ts: i64) {
        self.driver
            .input_topic("orders", Serdes::string(), Serdes::string())
            .pipe_input(id.to_string(), value.to_string(), ts)
            .unwrap();
    }
    fn inner(&self) -> Vec<TestRecord<String, String>> {
        self.driver
            .output_topic("enriched", Serdes::string(), Serdes::string())
            .read_records()
    }
    fn left(&self) -> Vec<TestRecord<String, String>> {
        self.driver
            .output_topic("enriched-left", Serdes::string(), Serdes::string())
            .read_records()
    }
}

#[test]
fn inner_and_left_joins_emit_exactly_these_records() {
    let f = Fixture::new();
    f.customer("c1", Some("Alice"), 1);
    f.customer("c2", Some("Bob"), 2);
    // Table updates alone produce nothing.
    assert_eq!(f.inner(), vec![]);
    assert_eq!(f.left(), vec![]);
    f.order("o1", "c1,book", 10);
    f.order("o2", "c2,pen", 11);
    // The key selector names a customer the table does not have.
    f.order("o3", "c9,ink", 12);
    // The stream's key and timestamp are kept.
    assert_eq!(
        f.inner(),
        vec![rec("o1", "c1,book for Alice", 10), rec("o2", "c2,pen for Bob", 11)]
    );
    assert_eq!(
        f.left(),
        vec![
            rec("o1", "c1,book for Alice", 10),
            rec("o2", "c2,pen for Bob", 11),
            rec("o3", "c9,ink for ?", 12),
        ]
    );
}

#[test]
fn a_table_update_is_seen_by_the_next_stream_record() {
    let f = Fixture::new();
    f.customer("c1", Some("Alice"), 1);
    f.order("o1", "c1,book", 10);
    f.customer("c1", Some("Alicia"), 11);
    f.order("o2", "c1,pen", 12);
    // An order for a customer added later joins once the customer is there.
    f.order("o3", "c2,ink", 13);
    f.customer("c2", Some("Bob"), 14);
    f.order("o4", "c2,cup", 15);
    assert_eq!(
        f.inner(),
        vec![
            rec("o1", "c1,book for Alice", 10),
            rec("o2", "c1,pen for Alicia", 12),
            rec("o4", "c2,cup for Bob", 15),
        ]
    );
    assert_eq!(
        f.left(),
        vec![
            rec("o1", "c1,book for Alice", 10),
            rec("o2", "c1,pen for Alicia", 12),
            rec("o3", "c2,ink for ?", 13),
            rec("o4", "c2,cup for Bob", 15),
        ]
    );
}

#[test]
fn a_tombstone_deletes_the_entry() {
    let f = Fixture::new();
    f.customer("c1", Some("Alice"), 1);
    f.customer("c2", Some("Bob"), 2);
    let store = f
        .driver
        .key_value_store("customers-store", Serdes::string(), Serdes::string())
        .unwrap();
    assert_eq!(store.get(&"c1".to_string()), Some("Alice".to_string()));
    f.customer("c1", None, 3);
    assert_eq!(store.get(&"c1".to_string()), None);
    assert_eq!(store.all(), vec![("c2".to_string(), "Bob".to_string())]);
    f.order("o1", "c1,book", 10);
    assert_eq!(f.inner(), vec![]);
    assert_eq!(f.left(), vec![rec("o1", "c1,book for ?", 10)]);
}

#[test]
fn a_rekeyed_stream_joins_without_a_repartition() {
    let mut b = StreamsBuilder::new();
    let customers =
        b.global_table::<String, String>("customers", Serdes::string(), Serdes::string(), Materialized::unnamed());
    b.stream::<String, String>("orders", Serdes::string(), Serdes::string())
        // Re-keyed by item: a KTable join would now need repartition(..).
        .select_key(|_, v| v.split(',').nth(1).unwrap_or_default().to_string())
        .join_global(
            &customers,
            |_, v| customer_of(v),
            |item, v, name| format!("{item}: {v} for {name}"),
        )
        .to("enriched", Serdes::string(), Serdes::string());
    let t = b.build().expect("a global join needs no co-partitioning");
    assert_eq!(t.subtopologies().len(), 1);
    assert!(
        t.internal_topics("app").iter().all(|n| !n.ends_with("-repartition")),
        "{:?}",
        t.internal_topics("app")
    );
    assert_eq!(customers.store_name(), "GLOBALKTABLE-STATE-STORE-0000000000");
    let d = TopologyTestDriver::new(t, TestDriverConfig::default()).unwrap();
    d.pipe_raw("customers", Some(b"c1"), Some(b"Alice"), 1).unwrap();
    d.input_topic("orders", Serdes::string(), Serdes::string())
        .pipe_input("o1".into(), "c1,book".into(), 10)
        .unwrap();
    assert_eq!(
        d.output_topic("enriched", Serdes::string(), Serdes::string())
            .read_records(),
        vec![rec("book", "book: c1,book for Alice", 10)]
    );
}

#[test]
fn null_stream_values_and_null_selected_keys() {
    let mut b = StreamsBuilder::new();
    let table = b.global_table::<Option<String>, String>(
        "customers",
        Serdes::optional(Serdes::string()),
        Serdes::string(),
        Materialized::named("customers-store"),
    );
    let orders = b.stream::<String, Option<String>>("orders", Serdes::string(), Serdes::optional(Serdes::string()));
    let select = |_: &String, v: &Option<String>| v.as_deref().map(customer_of).filter(|c| !c.is_empty());
    orders
        .clone()
        .join_global(&table, select, |_, v, name| {
            format!("{} for {name}", v.unwrap_or_default())
        })
        .to("enriched", Serdes::string(), Serdes::string());
    orders
        .left_join_global(&table, select, |_, v, name: Option<String>| {
            format!("{} for {}", v.unwrap_or_default(), name.as_deref().unwrap_or("?"))
        })
        .to("enriched-left", Serdes::string(), Serdes::string());
    let d = TopologyTestDriver::new(b.build().unwrap(), TestDriverConfig::default()).unwrap();
    d.pipe_raw("customers", Some(b"c1"), Some(b"Alice"), 1).unwrap();
    // A null value: no record, skipped by both joins.
    d.pipe_raw("orders", Some(b"o1"), None, 10).unwrap();
    // The selector finds no customer (None, a null key): the inner join
    // skips it, the left join emits it with no table value.
    d.pipe_raw("orders", Some(b"o2"), Some(b",ink"), 11).unwrap();
    d.pipe_raw("orders", Some(b"o3"), Some(b"c1,pen"), 12).unwrap();
    let out = |topic: &str| d.output_topic(topic, Serdes::string(), Serdes::string()).read_records();
    assert_eq!(out("enriched"), vec![rec("o3", "c1,pen for Alice", 12)]);
    assert_eq!(
        out("enriched-left"),
        vec![rec("o2", ",ink for ?", 11), rec("o3", "c1,pen for Alice", 12)]
    );
    // o1 twice (both joins), o2 once (the inner join).
    assert_eq!(d.null_records_skipped(), 3);
}

#[test]
fn describe_lists_the_global_store_and_its_source() {
    let text = topology().describe("app");
    let expected = "Global stores:\n   Global store: customers-store (key-value; not logged: its source topic \
                    customers is its changelog; every instance reads every partition; no tasks)\n    Source: \
                    KSTREAM-GLOBALSOURCE-0000000000 (topics: [customers])\n      --> \
                    KTABLE-GLOBALSOURCE-0000000000\n    Processor: KTABLE-GLOBALSOURCE-0000000000 (stores: \
                    [customers-store])\n      --> none\n      <-- KSTREAM-GLOBALSOURCE-0000000000\n\n";
    assert!(text.contains(expected), "{text}");
    // The joins read the store without belonging to it: one sub-topology,
    // and the global store is not among the tasks' stores.
    assert!(text.contains("   Sub-topology: 0\n"), "{text}");
    assert!(!text.contains("Sub-topology: 1"), "{text}");
    assert!(
        text.contains("    Processor: KSTREAM-JOIN-0000000001 (stores: [])\n"),
        "{text}"
    );
    assert!(
        text.contains("    Processor: KSTREAM-LEFTJOIN-0000000003 (stores: [])\n"),
        "{text}"
    );
    assert!(!text.contains("Stores:"), "{text}");
    assert!(!text.contains("customers-store-changelog"), "{text}");
}

#[test]
fn a_global_topic_read_as_a_stream_too_is_refused() {
    let mut b = StreamsBuilder::new();
    let g = b.global_table::<String, String>("customers", Serdes::string(), Serdes::string(), Materialized::unnamed());
    b.stream::<String, String>("customers", Serdes::string(), Serdes::string())
        .join_global(&g, |k, _| k.clone(), |_, v, n| format!("{v}{n}"))
        .to("out", Serdes::string(), Serdes::string());
    let e = b.build().unwrap_err().to_string();
    assert!(e.contains("customers"), "{e}");
}

#[test]
fn records_that_do_not_decode_are_not_stored() {
    let mut b = StreamsBuilder::new();
    let g = b.global_table::<String, u64>("prices", Serdes::string(), Serdes::u64(), Materialized::named("prices"));
    b.stream::<String, String>("orders", Serdes::string(), Serdes::string())
        .left_join_global(&g, |_, v| v.clone(), |_, v, p: Option<u64>| format!("{v}={p:?}"))
        .to("out", Serdes::string(), Serdes::string());
    let d = TopologyTestDriver::new(b.build().unwrap(), TestDriverConfig::default()).unwrap();
    d.pipe_raw("prices", Some(b"a"), Some(&7u64.to_be_bytes()), 1).unwrap();
    d.pipe_raw("prices", Some(b"b"), Some(b"not 8 bytes"), 2).unwrap();
    d.pipe_raw("orders", Some(b"o1"), Some(b"a"), 3).unwrap();
    d.pipe_raw("orders", Some(b"o2"), Some(b"b"), 4).unwrap();
    assert_eq!(
        d.output_topic("out", Serdes::string(), Serdes::string()).read_values(),
        vec!["a=Some(7)".to_string(), "b=None".to_string()]
    );
}

/// On a cluster, with a 3-partition global topic and a 2-partition stream:
/// the global store holds every partition before the first stream record
/// is processed, and a member started again on the same state reads on
/// from its positions instead of the whole topic.
#[test]
fn members_restore_every_partition_before_processing_and_restart_from_their_positions() {
    let cluster = MemoryCluster::new();
    cluster.create_topic("customers", 3);
    cluster.create_topic("orders", 2);
    cluster.create_topic("enriched", 2);
    cluster.create_topic("enriched-left", 2);
    for (p, id, name) in [
        (0, "c0", "Zoe"),
        (1, "c1", "Alice"),
        (2, "c2", "Bob"),
        (2, "c3", "Carl"),
    ] {
        cluster.produce("customers", p, Some(id.as_bytes()), Some(name.as_bytes()), 1);
    }
    for (p, id, order) in [
        (0, "o1", "c1,book"),
        (1, "o2", "c2,pen"),
        (1, "o3", "c0,cup"),
        (0, "o4", "c3,ink"),
    ] {
        cluster.produce("orders", p, Some(id.as_bytes()), Some(order.as_bytes()), 10);
    }
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(StateDb::open(dir.path()).unwrap());
    let mut member = Member::new(&cluster, &topology(), "app", db.clone(), TaskConfig::default(), None).unwrap();
    member.assign_all().unwrap();
    member.run_until_idle(100, 0).unwrap();
    let mut joined: Vec<(String, String)> = ["enriched"]
        .iter()
        .flat_map(|t| cluster.all_records(t))
        .map(|r| {
            (
                String::from_utf8(r.key.unwrap()).unwrap(),
                String::from_utf8(r.value.unwrap()).unwrap(),
            )
        })
        .collect();
    joined.sort();
    assert_eq!(
        joined,
        vec![
            ("o1".to_string(), "c1,book for Alice".to_string()),
            ("o2".to_string(), "c2,pen for Bob".to_string()),
            ("o3".to_string(), "c0,cup for Zoe".to_string()),
            ("o4".to_string(), "c3,ink for Carl".to_string()),
        ]
    );
    let g = member.global().unwrap();
    assert_eq!(g.applied(), 4);
    assert_eq!(g.position("customers", 2), Some(2));
    member.manager.close_all();
    drop(member);

    // Again on the same state: nothing is read again; a new record is.
    cluster.produce("customers", 0, Some(b"c0"), Some(b"Zora"), 20);
    let mut member = Member::new(&cluster, &topology(), "app", db, TaskConfig::default(), None).unwrap();
    member.assign_all().unwrap();
    member.run_until_idle(100, 0).unwrap();
    let g = member.global().unwrap();
    assert_eq!(g.applied(), 1, "only the new record is read");
    assert_eq!(
        g.assignment(),
        vec![
            ("customers".to_string(), 0, 2),
            ("customers".to_string(), 1, 1),
            ("customers".to_string(), 2, 2),
        ]
    );
    let mut out = Vec::new();
    use weir_topology::store::GlobalStore as _;
    assert!(g.store("customers-store").unwrap().get_into(b"c0", &mut out).unwrap());
    assert_eq!(out, b"Zora");
    member.manager.close_all();
}

/// The test driver's cluster starts empty every time: a driver on a reused
/// state directory keeps the global store's data (local state is all there
/// is) and reads the new cluster's global topic from its start.
#[test]
fn a_driver_on_a_reused_state_directory_keeps_the_global_store() {
    let dir = tempfile::tempdir().unwrap();
    let config = || TestDriverConfig {
        state_dir: Some(dir.path().to_path_buf()),
        ..TestDriverConfig::default()
    };
    {
        let d = TopologyTestDriver::new(topology(), config()).unwrap();
        d.pipe_raw("customers", Some(b"c1"), Some(b"Alice"), 1).unwrap();
        d.pipe_raw("customers", Some(b"c2"), Some(b"Bob"), 2).unwrap();
        d.flush_state_to_disk().unwrap();
    }
    let f = Fixture {
        driver: TopologyTestDriver::new(topology(), config()).unwrap(),
    };
    f.order("o1", "c1,book", 10);
    f.customer("c2", Some("Bert"), 11);
    f.order("o2", "c2,pen", 12);
    assert_eq!(
        f.inner(),
        vec![rec("o1", "c1,book for Alice", 10), rec("o2", "c2,pen for Bert", 12)]
    );
}
