//! Default serdes (`DefaultSerde`), the parameter objects (`Consumed`,
//! `Produced`, `Grouped`) and the text/JSON forms of the serdes that
//! interactive queries read stores through (`QueryCodec`).

use weir_topology::*;

/// A default serde is the explicit one: same name, same bytes.
#[test]
fn defaults_are_the_explicit_serdes() {
    fn same<T: DefaultSerde + std::fmt::Debug + PartialEq>(explicit: Serde<T>, v: T) {
        let d = T::default_serde();
        assert_eq!(d.name(), explicit.name());
        assert_eq!(d.to_bytes_opt(&v).unwrap(), explicit.to_bytes_opt(&v).unwrap());
        assert_eq!(
            d.deserialize_opt(explicit.to_bytes_opt(&v).unwrap().as_deref())
                .unwrap(),
            v
        );
    }
    same(Serdes::string(), "héllo".to_string());
    same(Serdes::u32(), 258u32);
    same(Serdes::u64(), u64::MAX);
    same(Serdes::i64(), -7i64);
    same(Serdes::bytes(), vec![0u8, 255]);
    same(Serdes::unit(), ());
    same(Serdes::optional(Serdes::string()), None);
    same(Serdes::optional(Serdes::string()), Some(String::new()));
    same(
        Serdes::windowed(Serdes::u32()),
        Windowed {
            key: 5u32,
            window: Window { start: 0, end: 10 },
        },
    );
    // None of an optional default is a Kafka null, not an empty value.
    assert_eq!(<Option<String>>::default_serde().to_bytes_opt(&None).unwrap(), None);
}

/// The short forms build the same graph as the explicit ones: same
/// describe(), same stores, same topics.
#[test]
fn short_forms_build_the_same_topology_as_explicit_serdes() {
    let mut short = StreamsBuilder::new();
    short
        .stream_of::<String, String>("words")
        .select_key(|_, w| w.clone())
        .group_by_key_default()
        .count(Materialized::named("counts"))
        .to_stream()
        .to_topic("out");
    let mut explicit = StreamsBuilder::new();
    explicit
        .stream::<String, String>("words", Serdes::string(), Serdes::string())
        .select_key(|_, w| w.clone())
        .group_by_key(Serdes::string(), Serdes::string())
        .count(Materialized::named("counts"))
        .to_stream()
        .to("out", Serdes::string(), Serdes::u64());
    let (short, explicit) = (short.build().unwrap(), explicit.build().unwrap());
    assert_eq!(short.describe("app"), explicit.describe("app"));
    assert_eq!(short.internal_topics("app"), explicit.internal_topics("app"));
    assert_eq!(short.store_format("counts"), Some(("string", "u64")));
}

#[test]
fn parameter_objects_name_processors_and_the_repartition_topic() {
    let mut b = StreamsBuilder::new();
    b.stream_with(
        "clicks",
        Consumed::<String, u64>::new()
            .with_name("read-clicks")
            .with_timestamp_extractor(|_, v, _| *v as i64),
    )
    .select_key(|_, v| *v)
    .group_by_key_with(Grouped::new().with_name("by-value"))
    .count(Materialized::named("per-value"))
    .to_stream()
    .to_with(
        "out",
        Produced::with(Serdes::u64(), Serdes::u64()).with_name("write-out"),
    );
    let t = b.build().unwrap();
    let names: Vec<&str> = t.nodes().iter().map(|n| n.name.as_str()).collect();
    assert!(names.contains(&"read-clicks"), "{names:?}");
    assert!(names.contains(&"write-out"), "{names:?}");
    assert!(
        t.internal_topics("app")
            .contains(&"app-by-value-repartition".to_string()),
        "{:?}",
        t.internal_topics("app")
    );
    // The grouping name is only used when grouping repartitions.
    let mut b = StreamsBuilder::new();
    b.stream_of::<String, String>("in")
        .group_by_key_with(Grouped::new().with_name("unused"))
        .count(Materialized::named("c"));
    let t = b.build().unwrap();
    assert!(!t.internal_topics("app").iter().any(|n| n.contains("unused")));
}

#[test]
fn bad_processor_names_and_table_extractors_are_build_errors() {
    let mut b = StreamsBuilder::new();
    b.stream_with("a", Consumed::<String, String>::new().with_name("src"))
        .to_topic("x");
    b.stream_with("b", Consumed::<String, String>::new().with_name("src"))
        .to_topic("y");
    let e = b.build().unwrap_err().to_string();
    assert!(e.contains("the processor name \"src\" is already used"), "{e}");

    let mut b = StreamsBuilder::new();
    b.stream_of::<String, String>("a")
        .to_with("x", Produced::new().with_name("bad name"));
    assert!(b.build().is_err());

    let mut b = StreamsBuilder::new();
    b.table_with(
        "t",
        Consumed::<String, String>::new().with_timestamp_extractor(|_, _, t| t),
        Materialized::named("t-store"),
    )
    .to_topic("out");
    let e = b.build().unwrap_err().to_string();
    assert!(e.contains("a table source takes no timestamp extractor"), "{e}");
}

#[test]
fn serdes_parse_text_and_render_json() {
    assert_eq!(Serdes::u32().parse_text("17").unwrap(), 17);
    assert_eq!(Serdes::u32().parse_text("-1").unwrap_err().0, "\"-1\" is not a u32");
    assert_eq!(Serdes::u64().parse_text("18446744073709551615").unwrap(), u64::MAX);
    assert_eq!(Serdes::i64().parse_text("-5").unwrap(), -5);
    assert_eq!(Serdes::u32_string().parse_text("9").unwrap(), 9);
    assert_eq!(Serdes::string().parse_text("#rust").unwrap(), "#rust");
    assert_eq!(Serdes::bytes().parse_text("ab").unwrap(), b"ab".to_vec());
    assert_eq!(Serdes::optional(Serdes::u32()).parse_text("3").unwrap(), Some(3));
    assert_eq!(Serdes::json::<Vec<u32>>().parse_text("[1,2]").unwrap(), vec![1, 2]);
    Serdes::unit().parse_text("").unwrap();
    assert!(Serdes::unit().parse_text("x").is_err());

    use serde_json::json;
    assert_eq!(Serdes::u64().to_json(&42), json!(42));
    assert_eq!(Serdes::i64().to_json(&-1), json!(-1));
    assert_eq!(Serdes::string().to_json(&"hi".into()), json!("hi"));
    assert_eq!(Serdes::bytes().to_json(&vec![0xff, 0]), json!({"hex": "ff00"}));
    assert_eq!(Serdes::bytes().to_json(&b"ok".to_vec()), json!("ok"));
    assert_eq!(Serdes::optional(Serdes::u32()).to_json(&None), json!(null));
    assert_eq!(Serdes::unit().to_json(&()), json!(null));
    assert_eq!(Serdes::json::<Vec<u32>>().to_json(&vec![1]), json!([1]));
}

/// A serde of the user's own: the store is queryable through it.
struct Celsius;
impl SerdeImpl<f64> for Celsius {
    fn serialize(&self, v: &f64, out: &mut Vec<u8>) -> Result<(), SerdeError> {
        out.extend_from_slice(format!("{v}C").as_bytes());
        Ok(())
    }
    fn deserialize(&self, b: &[u8]) -> Result<f64, SerdeError> {
        std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.strip_suffix('C'))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| SerdeError("not a temperature".into()))
    }
    fn name(&self) -> &'static str {
        "celsius"
    }
    fn parse_text(&self, text: &str) -> Result<f64, SerdeError> {
        text.trim_end_matches('C')
            .parse()
            .map_err(|_| SerdeError(format!("{text:?} is not a temperature")))
    }
    fn to_json(&self, v: &f64) -> serde_json::Value {
        serde_json::json!({ "celsius": v })
    }
}

#[test]
fn the_topology_keeps_each_stores_real_serdes_for_queries() {
    let mut b = StreamsBuilder::new();
    b.table_with(
        "readings",
        Consumed::with(Serdes::string(), Serde::new(Celsius)),
        Materialized::named("latest-reading"),
    );
    b.stream_of::<String, String>("words")
        .group_by_key_default()
        .count(Materialized::named("word-counts"));
    let t = b.build().unwrap();
    let c = t.query_codec("latest-reading").unwrap();
    assert_eq!((c.key_serde_name(), c.value_serde_name()), ("string", "celsius"));
    assert_eq!(c.parse_key("oslo").unwrap(), b"oslo".to_vec());
    assert_eq!(c.value_json(b"21.5C"), serde_json::json!({"celsius": 21.5}));
    assert_eq!(
        c.value_json(b"warm"),
        serde_json::json!({"hex": "7761726d", "error": "not a temperature"})
    );
    let w = t.query_codec("word-counts").unwrap();
    assert_eq!(w.value_json(&3u64.to_be_bytes()), serde_json::json!(3));
    assert!(t.query_codec("nope").is_none());
}

/// `named` names any operator: describe() keeps the name when operators are
/// added before it, and a name used twice is a build() error.
#[test]
fn named_operators_keep_their_names() {
    fn build(extra_step: bool) -> Result<Topology, TopologyError> {
        let mut b = StreamsBuilder::new();
        let mut s = b.stream::<String, String>("in", Serdes::string(), Serdes::string());
        if extra_step {
            s = s.peek(|_, _| {});
        }
        s.filter(|_, v| !v.is_empty())
            .named("non-empty")
            .map_values(|_, v| v.to_uppercase())
            .named("shout")
            .to("out", Serdes::string(), Serdes::string());
        b.table::<String, String>(
            "names",
            Serdes::string(),
            Serdes::string(),
            Materialized::named("names"),
        )
        .map_values(|_, v| v.len() as u64)
        .named("name-length")
        .to_stream()
        .to("lengths", Serdes::string(), Serdes::u64());
        b.build()
    }
    for extra_step in [false, true] {
        let text = build(extra_step).unwrap().describe("app");
        for name in ["non-empty", "shout", "name-length"] {
            assert!(text.contains(&format!("Processor: {name} ")), "{name} in:\n{text}");
        }
    }

    let mut b = StreamsBuilder::new();
    b.stream::<String, String>("in", Serdes::string(), Serdes::string())
        .filter(|_, _| true)
        .named("step")
        .map_values(|_, v| v)
        .named("step")
        .to("out", Serdes::string(), Serdes::string());
    let err = b.build().unwrap_err().to_string();
    assert!(
        err.contains("the processor name \"step\" is already used by another processor"),
        "{err}"
    );
}
