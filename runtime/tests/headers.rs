//! Record headers: a consumed record's headers follow it through the
//! operators to the sinks (repartition topics included), processors read
//! and change them, and what is emitted with no input record (cached
//! aggregates at a commit) carries none. Run by a member on an in-memory
//! cluster, whose records keep their headers.

use std::sync::{Arc, Mutex};

use weir_runtime::manager::unwrap_repartition_value;
use weir_runtime::memory::{Member, MemoryCluster};
use weir_runtime::partitioner::default_partitioner;
use weir_runtime::TaskConfig;
use weir_state::StateDb;
use weir_topology::prelude::*;

type Pairs = Vec<(String, Vec<u8>)>;

fn pairs(h: &[(&str, &[u8])]) -> Pairs {
    h.iter().map(|(k, v)| (k.to_string(), v.to_vec())).collect()
}

fn run(cluster: &MemoryCluster, topology: &Topology) {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(StateDb::open(dir.path()).unwrap());
    let mut m = Member::new(cluster, topology, "app", db, TaskConfig::default(), None).unwrap();
    m.assign_all().unwrap();
    m.run_until_idle(100, 1_000).unwrap();
    m.manager.close_all();
}

/// (key, value, headers) of every record of a topic.
fn records(cluster: &MemoryCluster, topic: &str) -> Vec<(String, String, Pairs)> {
    cluster
        .all_records(topic)
        .into_iter()
        .map(|r| {
            (
                String::from_utf8(r.key.unwrap_or_default()).unwrap(),
                String::from_utf8(r.value.unwrap_or_default()).unwrap(),
                r.headers,
            )
        })
        .collect()
}

const TRACE: (&str, &[u8]) = ("trace-id", b"t-1");
const TENANT: (&str, &[u8]) = ("tenant", b"acme");
/// A repeated name and a binary value: kept as they are, in order.
const BLOB: (&str, &[u8]) = ("trace-id", &[0, 255, 7]);

#[test]
fn headers_pass_unchanged_through_stateless_operators() {
    let cluster = MemoryCluster::new();
    cluster.create_topic("in", 1);
    cluster.create_topic("out", 1);
    let mut b = StreamsBuilder::new();
    b.stream::<String, String>("in", Serdes::string(), Serdes::string())
        .filter(|_, v| !v.is_empty())
        .map_values(|_, v| v.to_uppercase())
        .select_key(|_, v| format!("key-{v}"))
        .peek(|_, _| {})
        .to("out", Serdes::string(), Serdes::string());
    let topology = b.build().unwrap();
    cluster.produce_with_headers("in", 0, Some(b"a"), Some(b"x"), 1, &[TRACE, TENANT, BLOB]);
    // Filtered out: its headers go nowhere.
    cluster.produce_with_headers("in", 0, Some(b"b"), Some(b""), 2, &[TENANT]);
    // No headers: none on the output (not the previous record's).
    cluster.produce("in", 0, Some(b"c"), Some(b"y"), 3);
    cluster.produce_with_headers("in", 0, Some(b"d"), Some(b"z"), 4, &[TENANT]);
    run(&cluster, &topology);
    assert_eq!(
        records(&cluster, "out"),
        vec![
            ("key-X".to_string(), "X".to_string(), pairs(&[TRACE, TENANT, BLOB])),
            ("key-Y".to_string(), "Y".to_string(), vec![]),
            ("key-Z".to_string(), "Z".to_string(), pairs(&[TENANT])),
        ]
    );
}

/// Adds `seen-by: tagger` and the number of headers it was given; drops
/// `tenant`.
struct Tagger {
    seen: Arc<Mutex<Vec<Pairs>>>,
}

impl Processor<String, String> for Tagger {
    type KeyOut = String;
    type ValueOut = String;
    fn process(&mut self, ctx: &mut ProcessorApi<'_, String, String>, key: String, value: String) {
        let got: Pairs = ctx.headers().iter().map(|(k, v)| (k.to_string(), v.to_vec())).collect();
        assert_eq!(
            ctx.headers().last("trace-id"),
            got.iter().rev().find(|(k, _)| k == "trace-id").map(|(_, v)| &v[..])
        );
        let n = got.len().to_string();
        self.seen.lock().unwrap().push(got);
        ctx.headers_mut().remove("tenant");
        ctx.headers_mut().add("seen-by", b"tagger");
        ctx.headers_mut().set("given", n.as_bytes());
        // weir's own headers are the runtime's: a sink leaves this out.
        ctx.headers_mut().add("weir.origin", b"forged");
        ctx.forward(key, value);
    }
}

#[test]
fn a_processor_reads_and_changes_the_headers() {
    let cluster = MemoryCluster::new();
    cluster.create_topic("in", 1);
    cluster.create_topic("out", 1);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    let mut b = StreamsBuilder::new();
    b.stream::<String, String>("in", Serdes::string(), Serdes::string())
        .process(move || Tagger { seen: seen2.clone() }, &[])
        .map_values(|_, v| format!("{v}!"))
        .to("out", Serdes::string(), Serdes::string());
    let topology = b.build().unwrap();
    cluster.produce_with_headers("in", 0, Some(b"a"), Some(b"x"), 1, &[TRACE, TENANT]);
    cluster.produce("in", 0, Some(b"b"), Some(b"y"), 2);
    run(&cluster, &topology);
    assert_eq!(*seen.lock().unwrap(), vec![pairs(&[TRACE, TENANT]), vec![]]);
    assert_eq!(
        records(&cluster, "out"),
        vec![
            (
                "a".to_string(),
                "x!".to_string(),
                pairs(&[TRACE, ("seen-by", b"tagger"), ("given", b"2")])
            ),
            (
                "b".to_string(),
                "y!".to_string(),
                pairs(&[("seen-by", b"tagger"), ("given", b"0")])
            ),
        ]
    );
}

/// Records what it is given and passes it on.
struct Spy {
    seen: Arc<Mutex<Vec<Pairs>>>,
}

impl Processor<String, String> for Spy {
    type KeyOut = String;
    type ValueOut = String;
    fn process(&mut self, ctx: &mut ProcessorApi<'_, String, String>, key: String, value: String) {
        let got = ctx.headers().iter().map(|(k, v)| (k.to_string(), v.to_vec())).collect();
        self.seen.lock().unwrap().push(got);
        ctx.forward(key, value);
    }
}

#[test]
fn a_repartition_carries_the_headers_but_hides_its_own() {
    let cluster = MemoryCluster::new();
    cluster.create_topic("in", 2);
    cluster.create_topic("out", 2);
    cluster.create_topic("counts", 2);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    let mut b = StreamsBuilder::new();
    let by_value = b
        .stream::<String, String>("in", Serdes::string(), Serdes::string())
        .select_key(|_, v| v.clone())
        .repartition("by-value", Serdes::string(), Serdes::string())
        .process(move || Spy { seen: seen2.clone() }, &[]);
    by_value.clone().to("out", Serdes::string(), Serdes::string());
    // An aggregate is forwarded from the cache at the commit, with no input
    // record: no headers.
    by_value
        .group_by_key(Serdes::string(), Serdes::string())
        .count(Materialized::named("counts"))
        .to_stream()
        .map_values(|_, n| n.to_string())
        .to("counts", Serdes::string(), Serdes::string());
    let topology = b.build().unwrap();
    cluster.produce_with_headers("in", 0, Some(b"a"), Some(b"x"), 1, &[TRACE]);
    cluster.produce_with_headers("in", 1, Some(b"b"), Some(b"y"), 2, &[TENANT, BLOB]);
    run(&cluster, &topology);

    // The repartition records carry the input's headers and nothing of
    // weir's: their origin is in the value's envelope.
    // (key, header names, value, has an origin)
    type Repartitioned = (String, Vec<String>, Option<Vec<u8>>, bool);
    let mut repartitioned: Vec<Repartitioned> = cluster
        .all_records("app-by-value-repartition")
        .into_iter()
        .map(|r| {
            let (origin, value) = unwrap_repartition_value(r.value.as_deref()).expect("a value envelope");
            (
                String::from_utf8(r.key.unwrap()).unwrap(),
                r.headers.iter().map(|(k, _)| k.clone()).collect(),
                value.map(<[u8]>::to_vec),
                origin.is_some(),
            )
        })
        .collect();
    repartitioned.sort();
    assert_eq!(
        repartitioned,
        vec![
            ("x".to_string(), vec!["trace-id".to_string()], Some(b"x".to_vec()), true),
            (
                "y".to_string(),
                vec!["tenant".to_string(), "trace-id".to_string()],
                Some(b"y".to_vec()),
                true
            ),
        ]
    );
    // Downstream of the repartition, processors and sinks see the user's
    // headers only.
    let mut seen = seen.lock().unwrap().clone();
    seen.sort();
    assert_eq!(seen, vec![pairs(&[TENANT, BLOB]), pairs(&[TRACE])]);
    let mut out = records(&cluster, "out");
    out.sort();
    assert_eq!(
        out,
        vec![
            ("x".to_string(), "x".to_string(), pairs(&[TRACE])),
            ("y".to_string(), "y".to_string(), pairs(&[TENANT, BLOB])),
        ]
    );
    let mut counts = records(&cluster, "counts");
    counts.sort();
    assert_eq!(
        counts,
        vec![
            ("x".to_string(), "1".to_string(), vec![]),
            ("y".to_string(), "1".to_string(), vec![]),
        ]
    );
}

/// Forwards, at each wall-clock punctuation, one record with a header of
/// its own.
struct Ticker;

impl Processor<String, String> for Ticker {
    type KeyOut = String;
    type ValueOut = String;
    fn init(&mut self, ctx: &mut InitContext<'_>) -> Result<(), TopologyError> {
        ctx.schedule(1_000, PunctuationType::WallClockTime);
        Ok(())
    }
    fn process(&mut self, ctx: &mut ProcessorApi<'_, String, String>, key: String, value: String) {
        ctx.forward(key, value);
    }
    fn punctuate(&mut self, ctx: &mut ProcessorApi<'_, String, String>, _kind: PunctuationType, time: i64) {
        // No input record: no headers but those set here.
        assert!(ctx.headers().is_empty());
        ctx.headers_mut().add("tick", time.to_string().as_bytes());
        ctx.forward("tick".to_string(), time.to_string());
    }
}

#[test]
fn a_punctuation_forwards_the_headers_it_sets() {
    let cluster = MemoryCluster::new();
    cluster.create_topic("in", 1);
    cluster.create_topic("out", 1);
    let mut b = StreamsBuilder::new();
    b.stream::<String, String>("in", Serdes::string(), Serdes::string())
        .process(|| Ticker, &[])
        .to("out", Serdes::string(), Serdes::string());
    let topology = b.build().unwrap();
    cluster.produce_with_headers("in", 0, Some(b"a"), Some(b"x"), 1, &[TRACE]);
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(StateDb::open(dir.path()).unwrap());
    let mut m = Member::new(&cluster, &topology, "app", db, TaskConfig::default(), None).unwrap();
    m.assign_all().unwrap();
    m.run_until_idle(100, 1_000).unwrap();
    m.run_until_idle(100, 2_500).unwrap();
    m.manager.close_all();
    assert_eq!(
        records(&cluster, "out"),
        vec![
            ("a".to_string(), "x".to_string(), pairs(&[TRACE])),
            ("tick".to_string(), "2500".to_string(), pairs(&[("tick", b"2500")])),
        ]
    );
}

#[test]
fn a_join_output_carries_the_stream_records_headers_through_the_automatic_repartition() {
    let cluster = MemoryCluster::new();
    cluster.create_topic("users", 2);
    cluster.create_topic("clicks", 2);
    cluster.create_topic("enriched", 2);
    let mut b = StreamsBuilder::new();
    let users = b.table::<String, String>(
        "users",
        Serdes::string(),
        Serdes::string(),
        Materialized::named("users"),
    );
    b.stream::<String, String>("clicks", Serdes::string(), Serdes::string())
        .select_key(|_, user| user.clone())
        .join_with(
            &users,
            |_, user, name| format!("{user} is {name}"),
            Joined::with(Serdes::string(), Serdes::string(), Serdes::string()).with_name("clicks"),
        )
        .to("enriched", Serdes::string(), Serdes::string());
    let topology = b.build().unwrap();
    // The table's record has headers of its own: a join output has the
    // stream record's.
    // (The table's topic is partitioned by key, as the repartition is.)
    for (user, name) in [("u1", "Ann"), ("u2", "Bob")] {
        let p = default_partitioner(user.as_bytes(), 2);
        cluster.produce_with_headers(
            "users",
            p,
            Some(user.as_bytes()),
            Some(name.as_bytes()),
            1,
            &[("from", b"users")],
        );
    }
    cluster.produce_with_headers("clicks", 0, Some(b"c1"), Some(b"u1"), 2, &[TRACE]);
    cluster.produce_with_headers("clicks", 1, Some(b"c2"), Some(b"u2"), 3, &[TENANT]);
    run(&cluster, &topology);
    let mut out = records(&cluster, "enriched");
    out.sort();
    assert_eq!(
        out,
        vec![
            ("u1".to_string(), "u1 is Ann".to_string(), pairs(&[TRACE])),
            ("u2".to_string(), "u2 is Bob".to_string(), pairs(&[TENANT])),
        ]
    );
}
