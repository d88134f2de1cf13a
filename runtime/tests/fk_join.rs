//! Foreign-key table–table joins (`KTable::fk_join`, `fk_left_join`)
//! through the test driver.
//!
//! The driver feeds internal topics synchronously: a record piped into a
//! table runs the subscription through the right side and the response
//! back through the left side before `pipe_input` returns, so every
//! expected output below follows the input that caused it. A stale
//! response (one that answers a left value that has changed since) cannot
//! arise by itself in that order; it is constructed by replaying an
//! earlier response record into the response topic.
//!
//! Expected semantics: Kafka Streams' (see `topology/src/fk_join.rs`),
//! with four tests transcribed from apache/kafka's
//! `KTableKTableForeignKeyJoinIntegrationTest` (trunk of October 2024,
//! commit 1eb7644). That test reads each step's output as a map (the last
//! value per key); here every record is checked, tombstones included.

use serde::{Deserialize, Serialize};
use weir_runtime::testing::{RawRecord, TestDriverConfig, TopologyTestDriver};
use weir_topology::prelude::*;
use weir_topology::FkJoined;

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Order {
    customer: String,
    amount: u64,
}

fn order(customer: &str, amount: u64) -> Order {
    Order {
        customer: customer.to_string(),
        amount,
    }
}

/// (key, value or tombstone, timestamp) of the raw records of `topic` from
/// `from` on, with string keys and values.
fn strings(d: &TopologyTestDriver, topic: &str, from: usize) -> Vec<(String, Option<String>, i64)> {
    d.topic_records(topic)[from..]
        .iter()
        .map(|r: &RawRecord| {
            (
                String::from_utf8(r.key.clone().unwrap()).unwrap(),
                r.value.as_ref().map(|v| String::from_utf8(v.clone()).unwrap()),
                r.timestamp,
            )
        })
        .collect()
}

/// Reads a topic's new records at each call.
struct Reader<'a> {
    d: &'a TopologyTestDriver,
    topic: &'a str,
    read: usize,
}

impl<'a> Reader<'a> {
    fn new(d: &'a TopologyTestDriver, topic: &'a str) -> Self {
        Reader { d, topic, read: 0 }
    }
    fn next(&mut self) -> Vec<(String, Option<String>, i64)> {
        let out = strings(self.d, self.topic, self.read);
        self.read += out.len();
        out
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Join {
    Inner,
    Left,
}

/// Orders (order id → {customer, amount}, JSON) joined to customers
/// (customer id → name) by the order's customer, written to "out"; the
/// result materialized in "orders-with-names" if asked.
fn orders_topology(join: Join, materialized: bool) -> Topology {
    let mut b = StreamsBuilder::new();
    let orders = b.table::<String, Order>(
        "orders",
        Serdes::string(),
        Serdes::json(),
        Materialized::named("orders"),
    );
    let customers = b.table::<String, String>(
        "customers",
        Serdes::string(),
        Serdes::string(),
        Materialized::named("customers"),
    );
    let joined = if materialized {
        FkJoined::materialized(Materialized::named("orders-with-names"), Serdes::string()).into_derived()
    } else {
        FkJoined::unmaterialized()
    }
    .named("orders-customers");
    let customer = |o: &Order| o.customer.clone();
    let result = match join {
        Join::Inner => orders.fk_join(
            &customers,
            customer,
            |o, name| format!("{} for {name}", o.amount),
            joined,
        ),
        Join::Left => orders.fk_left_join(
            &customers,
            customer,
            |o, name| format!("{} for {}", o.amount, name.map_or("nobody", String::as_str)),
            joined,
        ),
    };
    assert_eq!(result.store_name(), materialized.then_some("orders-with-names"));
    result.to("out", Serdes::string(), Serdes::string());
    b.build().unwrap()
}

const SUBSCRIPTIONS: &str = "app-orders-customers-subscription-registration";
const RESPONSES: &str = "app-orders-customers-subscription-response";

/// The classic example, step by step: the exact records of "out" after
/// each input (key, value or tombstone, timestamp = the input's), inner
/// and left join, materialized or not.
#[test]
fn orders_join_customers_by_foreign_key() {
    for join in [Join::Inner, Join::Left] {
        for materialized in [false, true] {
            let d = TopologyTestDriver::new(
                orders_topology(join, materialized),
                TestDriverConfig::with_application_id("app"),
            )
            .unwrap();
            let orders = d.input_topic("orders", Serdes::string(), Serdes::json::<Order>());
            let customers = d.input_topic("customers", Serdes::string(), Serdes::string());
            let mut out = Reader::new(&d, "out");
            let inner = join == Join::Inner;
            let row = |k: &str, v: &str, ts: i64| (k.to_string(), Some(v.to_string()), ts);
            let tombstone = |k: &str, ts: i64| (k.to_string(), None, ts);
            let ctx = format!("{join:?} join, materialized: {materialized}");

            // A new order of an unknown customer: no row for the inner
            // join, a half row for the left join.
            orders.pipe_input("o1".into(), order("c1", 10), 1).unwrap();
            let want = if inner {
                vec![]
            } else {
                vec![row("o1", "10 for nobody", 1)]
            };
            assert_eq!(out.next(), want, "{ctx}: order of an unknown customer");

            // The customer arrives: the order joins.
            customers.pipe_input("c1".into(), "Alice".into(), 2).unwrap();
            assert_eq!(
                out.next(),
                vec![row("o1", "10 for Alice", 2)],
                "{ctx}: customer arrives"
            );

            // A second order of the same customer.
            orders.pipe_input("o2".into(), order("c1", 20), 3).unwrap();
            assert_eq!(out.next(), vec![row("o2", "20 for Alice", 3)], "{ctx}: second order");

            // The customer is renamed: every order of hers is re-emitted
            // (in the subscription store's order: by order id).
            customers.pipe_input("c1".into(), "Alicia".into(), 4).unwrap();
            assert_eq!(
                out.next(),
                vec![row("o1", "10 for Alicia", 4), row("o2", "20 for Alicia", 4)],
                "{ctx}: customer renamed"
            );

            // A customer nobody references: nothing.
            customers.pipe_input("c2".into(), "Bob".into(), 5).unwrap();
            assert_eq!(out.next(), vec![], "{ctx}: unreferenced customer");

            // o1 moves to Bob: one row, from the new customer.
            orders.pipe_input("o1".into(), order("c2", 10), 6).unwrap();
            assert_eq!(
                out.next(),
                vec![row("o1", "10 for Bob", 6)],
                "{ctx}: order changes customer"
            );

            // Renaming the old customer no longer touches o1.
            customers.pipe_input("c1".into(), "Al".into(), 7).unwrap();
            assert_eq!(
                out.next(),
                vec![row("o2", "20 for Al", 7)],
                "{ctx}: old customer renamed"
            );

            // An order deleted: a tombstone.
            d.pipe_raw("orders", Some(b"o2"), None, 8).unwrap();
            assert_eq!(out.next(), vec![tombstone("o2", 8)], "{ctx}: order deleted");

            // ... and its customer no longer has subscribers.
            customers.pipe_input("c1".into(), "A".into(), 9).unwrap();
            assert_eq!(out.next(), vec![], "{ctx}: customer without orders renamed");

            // A customer deleted: its orders lose their row (inner) or
            // their customer (left).
            d.pipe_raw("customers", Some(b"c2"), None, 10).unwrap();
            let want = if inner {
                vec![tombstone("o1", 10)]
            } else {
                vec![row("o1", "10 for nobody", 10)]
            };
            assert_eq!(out.next(), want, "{ctx}: customer deleted");

            // The customer comes back: the row comes back.
            customers.pipe_input("c2".into(), "Robert".into(), 11).unwrap();
            assert_eq!(out.next(), vec![row("o1", "10 for Robert", 11)], "{ctx}: customer back");

            // An update of the order that keeps its customer: one row.
            orders.pipe_input("o1".into(), order("c2", 15), 12).unwrap();
            assert_eq!(
                out.next(),
                vec![row("o1", "15 for Robert", 12)],
                "{ctx}: amount changed"
            );

            // Deleting an order that never existed: nothing.
            d.pipe_raw("orders", Some(b"o9"), None, 13).unwrap();
            assert_eq!(out.next(), vec![], "{ctx}: unknown order deleted");

            if materialized {
                let store = d
                    .key_value_store("orders-with-names", Serdes::string(), Serdes::string())
                    .unwrap();
                assert_eq!(
                    store.all(),
                    vec![("o1".to_string(), "15 for Robert".to_string())],
                    "{ctx}"
                );
            }
            // Who subscribes to whom: (customer, order) per entry of the
            // subscription store, whose key is the customer's length (4
            // bytes, big-endian), the customer, the order; the value the
            // 16-byte hash of the order's current JSON.
            let subscriptions = d
                .key_value_store("orders-customers-subscription-store", Serdes::bytes(), Serdes::bytes())
                .unwrap()
                .all();
            assert_eq!(subscriptions.len(), 1, "{ctx}");
            assert_eq!(subscriptions[0].0, b"\x00\x00\x00\x02c2o1".to_vec(), "{ctx}");
            assert_eq!(subscriptions[0].1.len(), 16, "{ctx}");
            let left = d
                .key_value_store("orders-customers-left-values", Serdes::string(), Serdes::bytes())
                .unwrap()
                .all();
            assert_eq!(
                left,
                vec![(
                    "o1".to_string(),
                    b"\x00\x00\x00\x02c2{\"customer\":\"c2\",\"amount\":15}".to_vec()
                )],
                "{ctx}"
            );
        }
    }
}

/// What crosses the internal topics for the first steps of the example:
/// subscriptions keyed by customer (flags, instruction, hash, order id),
/// responses keyed by order (flags, hash, customer name).
#[test]
fn subscription_and_response_wire_formats() {
    let d = TopologyTestDriver::new(
        orders_topology(Join::Inner, false),
        TestDriverConfig::with_application_id("app"),
    )
    .unwrap();
    let orders = d.input_topic("orders", Serdes::string(), Serdes::json::<Order>());
    let customers = d.input_topic("customers", Serdes::string(), Serdes::string());
    orders.pipe_input("o1".into(), order("c1", 10), 1).unwrap();
    customers.pipe_input("c1".into(), "Alice".into(), 2).unwrap();
    orders.pipe_input("o1".into(), order("c2", 10), 3).unwrap();
    d.pipe_raw("orders", Some(b"o1"), None, 4).unwrap();

    let subs: Vec<(Vec<u8>, Vec<u8>)> = d
        .topic_records(SUBSCRIPTIONS)
        .into_iter()
        .map(|r| (r.key.unwrap(), r.value.unwrap()))
        .collect();
    // Same value, same hash; a different value, a different hash.
    let h1 = subs[0].1[2..18].to_vec();
    let h2 = subs[1].1[2..18].to_vec();
    assert_ne!(h1, h2);
    let sub = |flags_instruction: &[u8], hash: &[u8]| [flags_instruction, hash, b"o1"].concat();
    assert_eq!(
        subs,
        vec![
            // New inner-join row: respond only if the customer exists.
            (b"c1".to_vec(), sub(&[0x00, 0x03], &h1)),
            // Moved to c2: leave c1 silently, then subscribe to c2 with
            // "respond even without a customer".
            (b"c1".to_vec(), sub(&[0x00, 0x00], &h2)),
            (b"c2".to_vec(), sub(&[0x00, 0x02], &h2)),
            // Deleted: no hash, leave c2 and respond (the tombstone).
            (b"c2".to_vec(), sub(&[0x80, 0x01], &[])),
        ]
    );
    let responses: Vec<(Vec<u8>, Vec<u8>)> = d
        .topic_records(RESPONSES)
        .into_iter()
        .map(|r| (r.key.unwrap(), r.value.unwrap()))
        .collect();
    assert_eq!(
        responses,
        vec![
            // Alice arrives: sent to her subscriber with its hash.
            (b"o1".to_vec(), [&[0x00][..], &h1, b"Alice"].concat()),
            // c2 does not exist: no value (0x40).
            (b"o1".to_vec(), [&[0x40][..], &h2].concat()),
            // The delete: no hash, no value.
            (b"o1".to_vec(), vec![0xc0]),
        ]
    );
}

/// A response that answers an old left value is dropped: the left row
/// changed (or was deleted) after the subscription was sent. In the
/// driver the response to a subscription is processed before the next
/// input, so the late response is constructed by replaying an earlier
/// response record into the response topic.
#[test]
fn stale_responses_are_dropped() {
    for join in [Join::Inner, Join::Left] {
        let d = TopologyTestDriver::new(
            orders_topology(join, false),
            TestDriverConfig::with_application_id("app"),
        )
        .unwrap();
        let orders = d.input_topic("orders", Serdes::string(), Serdes::json::<Order>());
        let customers = d.input_topic("customers", Serdes::string(), Serdes::string());
        let mut out = Reader::new(&d, "out");
        customers.pipe_input("c1".into(), "Alice".into(), 1).unwrap();
        customers.pipe_input("c2".into(), "Bob".into(), 2).unwrap();
        let last_response = || d.topic_records(RESPONSES).pop().unwrap();

        orders.pipe_input("o1".into(), order("c1", 10), 3).unwrap();
        let for_alice = last_response();
        assert_eq!(out.next(), vec![("o1".into(), Some("10 for Alice".into()), 3)]);

        // o1 moves to Bob before Alice's answer "arrives".
        orders.pipe_input("o1".into(), order("c2", 10), 4).unwrap();
        let for_bob = last_response();
        assert_eq!(out.next(), vec![("o1".into(), Some("10 for Bob".into()), 4)]);
        d.pipe_raw(RESPONSES, for_alice.key.as_deref(), for_alice.value.as_deref(), 5)
            .unwrap();
        assert_eq!(
            out.next(),
            vec![],
            "{join:?}: the response for the old customer is stale"
        );

        // The same customer but another amount: the old answer is stale
        // too (the hash is of the whole value, not of the foreign key).
        orders.pipe_input("o1".into(), order("c2", 11), 6).unwrap();
        assert_eq!(out.next(), vec![("o1".into(), Some("11 for Bob".into()), 6)]);
        let current = last_response();
        d.pipe_raw(RESPONSES, for_bob.key.as_deref(), for_bob.value.as_deref(), 7)
            .unwrap();
        assert_eq!(out.next(), vec![], "{join:?}: the response for the old amount is stale");

        // The current answer is not stale: replayed, it emits the row again
        // (the check is the hash, not the record's age).
        d.pipe_raw(RESPONSES, current.key.as_deref(), current.value.as_deref(), 8)
            .unwrap();
        assert_eq!(out.next(), vec![("o1".into(), Some("11 for Bob".into()), 8)]);

        // After a delete, every earlier answer is stale.
        d.pipe_raw("orders", Some(b"o1"), None, 9).unwrap();
        assert_eq!(out.next(), vec![("o1".into(), None, 9)]);
        d.pipe_raw(RESPONSES, current.key.as_deref(), current.value.as_deref(), 10)
            .unwrap();
        assert_eq!(out.next(), vec![], "{join:?}: a response for a deleted row is stale");
        assert!(d.dead_letters().is_empty());
    }
}

// ---------------------------------------------------------------------------
// KTableKTableForeignKeyJoinIntegrationTest
// ---------------------------------------------------------------------------

/// `getTopology`: `left_table` and `right_table` (strings), the foreign key
/// the part after `|` of the left value, the joiner `(left,right)`
/// (`null` for a missing right value); the result materialized in
/// "store" if asked, written to "output-topic".
fn kafka_topology(left_join: bool, materialized: bool) -> Topology {
    let mut b = StreamsBuilder::new();
    let left = b.table::<String, String>(
        "left_table",
        Serdes::string(),
        Serdes::string(),
        Materialized::unnamed(),
    );
    let right = b.table::<String, String>(
        "right_table",
        Serdes::string(),
        Serdes::string(),
        Materialized::unnamed(),
    );
    let joined = if materialized {
        FkJoined::materialized(Materialized::named("store"), Serdes::string()).into_derived()
    } else {
        FkJoined::unmaterialized()
    };
    let fk = |v: &String| v.split('|').nth(1).unwrap_or_default().to_string();
    let result = if left_join {
        left.fk_left_join(
            &right,
            fk,
            |l, r| format!("({l},{})", r.map_or("null", String::as_str)),
            joined,
        )
    } else {
        left.fk_join(&right, fk, |l, r| format!("({l},{r})"), joined)
    };
    result.to("output-topic", Serdes::string(), Serdes::string());
    b.build().unwrap()
}

/// One Kafka test, for every (left join, materialized) combination:
/// `steps` gets the driver, the join kind and the materialized store's
/// contents reader.
fn kafka_case(steps: impl Fn(&KafkaCase)) {
    for left_join in [true, false] {
        for materialized in [true, false] {
            let d =
                TopologyTestDriver::new(kafka_topology(left_join, materialized), TestDriverConfig::default()).unwrap();
            steps(&KafkaCase {
                d: &d,
                left_join,
                materialized,
                read: std::cell::Cell::new(0),
            });
        }
    }
}

struct KafkaCase<'a> {
    d: &'a TopologyTestDriver,
    left_join: bool,
    materialized: bool,
    read: std::cell::Cell<usize>,
}

type Expected<'e> = &'e [(&'e str, Option<&'e str>)];

impl KafkaCase<'_> {
    fn left(&self, key: &str, value: Option<&str>, ts: i64) {
        self.d
            .pipe_raw("left_table", Some(key.as_bytes()), value.map(str::as_bytes), ts)
            .unwrap();
    }
    fn right(&self, key: &str, value: Option<&str>, ts: i64) {
        self.d
            .pipe_raw("right_table", Some(key.as_bytes()), value.map(str::as_bytes), ts)
            .unwrap();
    }
    /// The exact output records since the last check, and (materialized)
    /// the store's contents.
    fn expect(&self, step: &str, output: Expected<'_>, store: Expected<'_>) {
        let ctx = format!(
            "{step} (left join: {}, materialized: {})",
            self.left_join, self.materialized
        );
        let got: Vec<(String, Option<String>)> = strings(self.d, "output-topic", self.read.get())
            .into_iter()
            .map(|(k, v, _)| (k, v))
            .collect();
        self.read.set(self.read.get() + got.len());
        let want: Vec<(String, Option<String>)> = output
            .iter()
            .map(|(k, v)| (k.to_string(), v.map(str::to_string)))
            .collect();
        assert_eq!(got, want, "output: {ctx}");
        if self.materialized {
            let all = self
                .d
                .key_value_store("store", Serdes::string(), Serdes::string())
                .unwrap()
                .all();
            let want: Vec<(String, String)> = store
                .iter()
                .map(|(k, v)| (k.to_string(), v.unwrap().to_string()))
                .collect();
            assert_eq!(all, want, "store: {ctx}");
        }
    }
    /// `a` for the left join, `b` for the inner join.
    fn pick<'e>(&self, a: Expected<'e>, b: Expected<'e>) -> Expected<'e> {
        if self.left_join {
            a
        } else {
            b
        }
    }
}

#[test]
fn kafka_do_join_from_left_then_delete_left_entity() {
    kafka_case(|c| {
        c.right("rhs1", Some("rhsValue1"), 0);
        c.right("rhs2", Some("rhsValue2"), 1);
        c.right("rhs3", Some("rhsValue3"), 2); // never referenced
        c.expect("right rows only", &[], &[]);

        c.left("lhs1", Some("lhsValue1|rhs1"), 3);
        c.left("lhs2", Some("lhsValue2|rhs2"), 4);
        let both = [
            ("lhs1", Some("(lhsValue1|rhs1,rhsValue1)")),
            ("lhs2", Some("(lhsValue2|rhs2,rhsValue2)")),
        ];
        c.expect("two left rows", &both, &both);

        // Another reference to an existing foreign key.
        c.left("lhs3", Some("lhsValue3|rhs1"), 5);
        c.expect(
            "a second reference",
            &[("lhs3", Some("(lhsValue3|rhs1,rhsValue1)"))],
            &[both[0], both[1], ("lhs3", Some("(lhsValue3|rhs1,rhsValue1)"))],
        );

        // Delete one left row: one tombstone.
        c.left("lhs1", None, 6);
        c.expect(
            "left row deleted",
            &[("lhs1", None)],
            &[both[1], ("lhs3", Some("(lhsValue3|rhs1,rhsValue1)"))],
        );
    });
}

#[test]
fn kafka_do_join_from_right_then_delete_right_entity() {
    kafka_case(|c| {
        c.left("lhs1", Some("lhsValue1|rhs1"), 0);
        c.left("lhs2", Some("lhsValue2|rhs2"), 1);
        c.left("lhs3", Some("lhsValue3|rhs1"), 2);
        let halves = [
            ("lhs1", Some("(lhsValue1|rhs1,null)")),
            ("lhs2", Some("(lhsValue2|rhs2,null)")),
            ("lhs3", Some("(lhsValue3|rhs1,null)")),
        ];
        c.expect("left rows only", c.pick(&halves, &[]), c.pick(&halves, &[]));

        c.right("rhs1", Some("rhsValue1"), 3);
        let rhs1 = [
            ("lhs1", Some("(lhsValue1|rhs1,rhsValue1)")),
            ("lhs3", Some("(lhsValue3|rhs1,rhsValue1)")),
        ];
        c.expect("rhs1 arrives", &rhs1, c.pick(&[rhs1[0], halves[1], rhs1[1]], &rhs1));

        c.right("rhs2", Some("rhsValue2"), 4);
        let all = [rhs1[0], ("lhs2", Some("(lhsValue2|rhs2,rhsValue2)")), rhs1[1]];
        c.expect("rhs2 arrives", &[all[1]], &all);

        c.right("rhs3", Some("rhsValue3"), 5); // never referenced
        c.expect("unreferenced right row", &[], &all);

        // Delete the right row: every left row referencing it changes.
        c.right("rhs1", None, 6);
        let left_rows = [
            ("lhs1", Some("(lhsValue1|rhs1,null)")),
            ("lhs3", Some("(lhsValue3|rhs1,null)")),
        ];
        c.expect(
            "rhs1 deleted",
            c.pick(&left_rows, &[("lhs1", None), ("lhs3", None)]),
            c.pick(&[left_rows[0], all[1], left_rows[1]], &[all[1]]),
        );
    });
}

#[test]
fn kafka_tombstones_when_deleting_non_joining_and_non_existing_records() {
    // shouldEmitTombstoneWhenDeletingNonJoiningRecords
    kafka_case(|c| {
        c.left("lhs1", Some("lhsValue1|rhs1"), 0);
        let half = [("lhs1", Some("(lhsValue1|rhs1,null)"))];
        c.expect("non-joining row", c.pick(&half, &[]), c.pick(&half, &[]));
        // The inner join's tombstone is unnecessary (no row was emitted)
        // but the left side cannot know; the left join's is necessary.
        c.left("lhs1", None, 1);
        c.expect("non-joining row deleted", &[("lhs1", None)], &[]);
        // Deleting a record that does not exist is idempotent.
        c.left("lhs1", None, 2);
        c.expect("deleted again", &[], &[]);
    });
    // shouldNotEmitTombstonesWhenDeletingNonExistingRecords
    kafka_case(|c| {
        c.left("lhs1", None, 0);
        c.expect("a record that never existed deleted", &[], &[]);
    });
}

#[test]
fn kafka_join_should_produce_nulls_when_value_has_non_matching_foreign_key() {
    kafka_case(|c| {
        c.left("lhs1", Some("lhsValue1|rhs1"), 0);
        let rhs1_half = [("lhs1", Some("(lhsValue1|rhs1,null)"))];
        c.expect("no right row", c.pick(&rhs1_half, &[]), c.pick(&rhs1_half, &[]));

        // Moving to another missing foreign key: an unnecessary tombstone
        // for the inner join (the left side cannot know whether the old
        // one existed), a necessary update for the left join.
        c.left("lhs1", Some("lhsValue1|rhs2"), 1);
        let rhs2_half = [("lhs1", Some("(lhsValue1|rhs2,null)"))];
        c.expect(
            "moved to rhs2",
            c.pick(&rhs2_half, &[("lhs1", None)]),
            c.pick(&rhs2_half, &[]),
        );
        c.left("lhs1", Some("lhsValue1|rhs3"), 2);
        let rhs3_half = [("lhs1", Some("(lhsValue1|rhs3,null)"))];
        c.expect(
            "moved to rhs3",
            c.pick(&rhs3_half, &[("lhs1", None)]),
            c.pick(&rhs3_half, &[]),
        );

        // A right row that was referenced but is not now: nothing.
        c.right("rhs1", Some("rhsValue1"), 3);
        c.expect("rhs1 arrives", &[], c.pick(&rhs3_half, &[]));

        // Moving to an existing foreign key completes the join.
        c.left("lhs1", Some("lhsValue1|rhs1"), 4);
        let joined = [("lhs1", Some("(lhsValue1|rhs1,rhsValue1)"))];
        c.expect("moved to rhs1", &joined, &joined);

        // And away to a missing one again.
        c.left("lhs1", Some("lhsValue1|rhs2"), 5);
        c.expect(
            "moved to rhs2 again",
            c.pick(&rhs2_half, &[("lhs1", None)]),
            c.pick(&rhs2_half, &[]),
        );
    });
}

#[test]
fn kafka_should_unsubscribe_old_foreign_key_if_left_side_is_updated() {
    kafka_case(|c| {
        c.right("rhs1", Some("rhsValue1"), 0);
        c.right("rhs2", Some("rhsValue2"), 1);
        c.expect("right rows only", &[], &[]);

        c.left("lhs1", Some("lhsValue1|rhs1"), 2);
        let rhs1 = [("lhs1", Some("(lhsValue1|rhs1,rhsValue1)"))];
        c.expect("joined to rhs1", &rhs1, &rhs1);

        // Kafka Streams' left join emits "(lhsValue1|rhs2,null)" first (its
        // unsubscription from rhs1 responds); weir's does not (see the
        // module docs of fk_join.rs). The last value per key is the same.
        c.left("lhs1", Some("lhsValue1|rhs2"), 3);
        let rhs2 = [("lhs1", Some("(lhsValue1|rhs2,rhsValue2)"))];
        c.expect("moved to rhs2", &rhs2, &rhs2);

        // An update of the old foreign key: nothing.
        c.right("rhs1", Some("rhsValue1Delta"), 4);
        c.expect("old right row updated", &[], &rhs2);
    });
}

// ---------------------------------------------------------------------------
// Topology
// ---------------------------------------------------------------------------

#[test]
fn describe_shows_the_internal_topics_stores_and_nodes() {
    let t = orders_topology(Join::Inner, true);
    // The left side (orders, registration, responses, resolver) and the
    // right side (customers, subscriptions) run in separate sub-topologies:
    // the tables need not be co-partitioned.
    assert_eq!(t.subtopologies().len(), 2);
    let text = t.describe("app");
    for part in [
        "Processor: KTABLE-FK-JOIN-SUBSCRIPTION-REGISTRATION-0000000002 (stores: [orders-customers-left-values])",
        "Sink: KSTREAM-SINK-0000000003 (topic: app-orders-customers-subscription-registration)",
        "Source: KSTREAM-SOURCE-0000000004 (topics: [app-orders-customers-subscription-registration])",
        "Processor: KTABLE-FK-JOIN-SUBSCRIPTION-PROCESSOR-0000000005 (stores: [orders-customers-subscription-store, customers])",
        "Sink: KSTREAM-SINK-0000000006 (topic: app-orders-customers-subscription-response)",
        "Processor: KTABLE-FK-JOIN-FOREIGN-PROCESSOR-0000000007 (stores: [orders-customers-subscription-store])",
        "Sink: KSTREAM-SINK-0000000008 (topic: app-orders-customers-subscription-response)",
        "Source: KSTREAM-SOURCE-0000000009 (topics: [app-orders-customers-subscription-response])",
        "Processor: KTABLE-FK-JOIN-SUBSCRIPTION-RESPONSE-RESOLVER-0000000010 (stores: [orders-customers-left-values, orders-with-names])",
        "orders-customers-left-values (key-value; changelog app-orders-customers-left-values-changelog)",
        "orders-customers-subscription-store (key-value; changelog app-orders-customers-subscription-store-changelog)",
        "orders-with-names (key-value; changelog app-orders-with-names-changelog)",
    ] {
        assert!(text.contains(part), "{part:?} not in:\n{text}");
    }
    let internal = t.internal_topics("app");
    for topic in [SUBSCRIPTIONS, RESPONSES] {
        assert!(internal.contains(&topic.to_string()), "{topic} not in {internal:?}");
    }
    // Without a name, the result store's name is the base; without a
    // result store either, the operator's position.
    let text = kafka_topology(false, true).describe("app");
    assert!(text.contains("(topic: app-store-subscription-registration)"), "{text}");
    assert!(text.contains("store-subscription-store (key-value;"), "{text}");
    let text = kafka_topology(false, false).describe("app");
    assert!(
        text.contains("(topic: app-KTABLE-FK-JOIN-0000000002-subscription-response)"),
        "{text}"
    );
}

/// A right table without a store does not compile (see
/// topology/tests/ui/fk_join_filtered_right_table.rs); a left table without
/// a value serde is a build error.
#[test]
fn the_left_table_must_have_a_value_serde() {
    let mut b = StreamsBuilder::new();
    let left = b
        .table::<String, String>("left", Serdes::string(), Serdes::string(), Materialized::unnamed())
        .map_values(|_, v| v.len() as u64);
    let right = b.table::<u64, String>("right", Serdes::u64(), Serdes::string(), Materialized::unnamed());
    left.fk_join(&right, |n| *n, |_, r| r.clone(), FkJoined::unmaterialized())
        .to("out", Serdes::string(), Serdes::string());
    let err = b.build().unwrap_err().to_string();
    assert!(err.contains("the left table has no value serde"), "{err}");
}

/// A table joined to itself by a value (employees and their managers):
/// both sides in one sub-topology, whose two internal topics it both
/// writes and reads.
#[test]
fn a_table_joined_to_itself() {
    let mut b = StreamsBuilder::new();
    let staff = b.table::<String, String>(
        "staff",
        Serdes::string(),
        Serdes::string(),
        Materialized::named("staff"),
    );
    // Value "name|manager id".
    staff
        .fk_join(
            &staff,
            |v| v.split('|').nth(1).unwrap_or_default().to_string(),
            |e, m| {
                format!(
                    "{} reports to {}",
                    e.split('|').next().unwrap(),
                    m.split('|').next().unwrap()
                )
            },
            FkJoined::unmaterialized().named("reports"),
        )
        .to("out", Serdes::string(), Serdes::string());
    let t = b.build().unwrap();
    assert_eq!(t.subtopologies().len(), 1);
    let d = TopologyTestDriver::new(t, TestDriverConfig::default()).unwrap();
    let staff = d.input_topic("staff", Serdes::string(), Serdes::string());
    let mut out = Reader::new(&d, "out");
    staff.pipe_input("e1".into(), "Ann|e0".into(), 1).unwrap();
    assert_eq!(out.next(), vec![]);
    staff.pipe_input("e0".into(), "Zed|e0".into(), 2).unwrap();
    assert_eq!(
        out.next(),
        vec![
            ("e1".into(), Some("Ann reports to Zed".into()), 2),
            ("e0".into(), Some("Zed reports to Zed".into()), 2),
        ]
    );
}

/// The routing on real partitions: orders on 3 partitions, customers on 2
/// (not co-partitioned), run by a member of the in-memory cluster, where
/// every topic has its own partition count and the internal topics take
/// theirs from the plan. A subscription must reach the customer's
/// partition and a response the order's, or rows go missing (a response
/// in the wrong task finds no order there and is dropped as stale).
#[test]
fn orders_and_customers_on_different_partition_counts() {
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use weir_runtime::memory::{Member, MemoryCluster};
    use weir_runtime::partitioner::default_partitioner;
    use weir_runtime::TaskConfig;
    use weir_state::StateDb;

    for join in [Join::Inner, Join::Left] {
        let cluster = MemoryCluster::new();
        for (topic, n) in [("orders", 3), ("customers", 2), ("out", 3)] {
            cluster.create_topic(topic, n);
        }
        let produce = |topic: &str, n: i32, key: &str, value: Option<Vec<u8>>, ts: i64| {
            let p = default_partitioner(key.as_bytes(), n);
            cluster.produce(topic, p, Some(key.as_bytes()), value.as_deref(), ts);
        };
        let json = |o: &Order| serde_json::to_vec(o).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(StateDb::open(dir.path()).unwrap());
        let topology = orders_topology(join, false);
        let mut m = Member::new(&cluster, &topology, "app", db, TaskConfig::default(), None).unwrap();
        for (topic, n) in [(SUBSCRIPTIONS, 2), (RESPONSES, 3)] {
            assert_eq!(cluster.partitions(topic), Some(n), "{topic}");
        }
        m.assign_all().unwrap();

        // The model: orders and customers as they end up.
        let mut orders: BTreeMap<String, Order> = BTreeMap::new();
        let mut customers: BTreeMap<String, String> = BTreeMap::new();
        let mut ts = 0;
        let mut step = |m: &mut Member, topic: &str, key: String, value: Option<Vec<u8>>| {
            ts += 1;
            let n = if topic == "orders" { 3 } else { 2 };
            produce(topic, n, &key, value, ts);
            m.run_until_idle(1, 0).unwrap();
        };
        for c in 0..6 {
            let (key, name) = (format!("c{c}"), format!("name{c}"));
            customers.insert(key.clone(), name.clone());
            step(&mut m, "customers", key, Some(name.into_bytes()));
        }
        // Orders of customers c0–c6 (c6 does not exist).
        for o in 0..20u64 {
            let order = order(&format!("c{}", o % 7), o);
            step(&mut m, "orders", format!("o{o}"), Some(json(&order)));
            orders.insert(format!("o{o}"), order);
        }
        // Renames, moves, deletes of both sides.
        for c in [1, 3] {
            let (key, name) = (format!("c{c}"), format!("renamed{c}"));
            customers.insert(key.clone(), name.clone());
            step(&mut m, "customers", key, Some(name.into_bytes()));
        }
        for o in [2u64, 5, 9, 16] {
            let order = order(&format!("c{}", (o + 3) % 7), o * 10);
            step(&mut m, "orders", format!("o{o}"), Some(json(&order)));
            orders.insert(format!("o{o}"), order);
        }
        for o in [0u64, 7, 13] {
            orders.remove(&format!("o{o}"));
            step(&mut m, "orders", format!("o{o}"), None);
        }
        customers.remove("c4");
        step(&mut m, "customers", "c4".to_string(), None);
        customers.insert("c1".into(), "again1".into());
        step(&mut m, "customers", "c1".to_string(), Some(b"again1".to_vec()));

        let mut got: BTreeMap<String, String> = BTreeMap::new();
        for p in 0..3 {
            for r in cluster.records("out", p) {
                let key = String::from_utf8(r.key.unwrap()).unwrap();
                assert_eq!(
                    default_partitioner(key.as_bytes(), 3),
                    p,
                    "{key} written to its partition"
                );
                match r.value {
                    Some(v) => got.insert(key, String::from_utf8(v).unwrap()),
                    None => got.remove(&key),
                };
            }
        }
        let want: BTreeMap<String, String> = orders
            .iter()
            .filter_map(|(k, o)| match (customers.get(&o.customer), join) {
                (Some(name), _) => Some((k.clone(), format!("{} for {name}", o.amount))),
                (None, Join::Left) => Some((k.clone(), format!("{} for nobody", o.amount))),
                (None, Join::Inner) => None,
            })
            .collect();
        assert_eq!(got, want, "{join:?} join");
        m.revoke_all().unwrap();
        m.manager.close_all();
    }
}
