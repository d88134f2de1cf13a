//! `weir run`: resolve the settings, build the topologies, start the broker
//! (when none is given), the HTTP server, the apps' services and
//! generators, then run the stream threads until a signal.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use weir_connectors::kafka::stream::{self, AppSpec, Guarantee, RunConfig, RunStatus};
use weir_connectors::kafka::ClientSettings;
use weir_runtime::metrics::Metrics;
use weir_state::SLED_CACHE_BYTES;

use super::app::{AppParts, Context};
use super::cli::{stop_on_signals, RunArgs};
use super::config::{check_rate, merge_kafka, parse_guarantee, parse_kafka_flag, FileConfig};
use super::{generate, http, Daemon};

/// Settings after flags, environment, config file and defaults.
struct Settings {
    brokers: Option<String>,
    /// Where the embedded broker listens and keeps its data (no --brokers).
    broker_listen: Option<std::net::SocketAddr>,
    broker_dir: PathBuf,
    state_dir: PathBuf,
    data_dir: PathBuf,
    threads: usize,
    commit_interval: Duration,
    /// `None`: stream time moves with records only.
    idle_advance: Option<Duration>,
    delivery_timeout: Duration,
    instance_id: Option<String>,
    guarantee: Guarantee,
    cache_max_bytes: usize,
    /// sled's page cache, one per instance.
    state_cache_bytes: u64,
    /// librdkafka properties for every client: `[kafka]`, then `--kafka`.
    kafka: Vec<(String, String)>,
    http: String,
    /// `--generate` / `--no-generate`, which win over the file.
    generate: Option<bool>,
    /// `--rate`, which wins over the file.
    rate: Option<f64>,
}

fn resolve(args: &RunArgs, file: &FileConfig) -> anyhow::Result<Settings> {
    // The command line's choice; the file's are applied per topology (its
    // `[topologies.NAME]` value first, then the top-level one).
    let rate = match args.rate {
        Some(r) => Some(check_rate(r, "--rate")?),
        None => None,
    };
    let generate = if args.generate {
        Some(true)
    } else if args.no_generate {
        Some(false)
    } else {
        None
    };
    let guarantee = match (args.guarantee, &file.guarantee) {
        (Some(g), _) => g,
        (None, Some(g)) => parse_guarantee(g).map_err(|e| anyhow::anyhow!("guarantee: {e}"))?,
        (None, None) => Guarantee::AtLeastOnce,
    };
    // Exactly-once commits are transactions: Kafka Streams' 100 ms keeps
    // outputs as prompt as at-least-once's 1 s makes them look.
    let default_interval = match guarantee {
        Guarantee::AtLeastOnce => 1000,
        Guarantee::ExactlyOnce => 100,
    };
    let kafka_flags = args
        .kafka
        .iter()
        .map(|a| parse_kafka_flag(a))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let kafka = merge_kafka(file.kafka_properties()?, kafka_flags);
    // The flag's lower bound is clap's (`RunArgs`), the file's
    // `FileConfig::parse`'s.
    let state_cache_bytes = args
        .state_cache_bytes
        .or(file.state_cache_bytes)
        .unwrap_or(SLED_CACHE_BYTES);
    let commit_interval = Duration::from_millis(
        args.commit_interval_ms
            .or(file.commit_interval_ms)
            .unwrap_or(default_interval),
    );
    Ok(Settings {
        brokers: args
            .brokers
            .clone()
            .or_else(|| file.brokers.clone())
            .filter(|b| !b.trim().is_empty()),
        broker_listen: args.broker_listen.or(file.broker_listen),
        broker_dir: args
            .broker_dir
            .clone()
            .or_else(|| file.broker_dir.clone())
            .unwrap_or_else(|| PathBuf::from("./weir-broker")),
        state_dir: args
            .state_dir
            .clone()
            .or_else(|| file.state_dir.clone())
            .unwrap_or_else(|| PathBuf::from("./weir-state")),
        data_dir: args
            .data_dir
            .clone()
            .or_else(|| file.data_dir.clone())
            .unwrap_or_else(|| PathBuf::from("./data")),
        threads: args.threads.or(file.threads).unwrap_or(1) as usize,
        commit_interval,
        idle_advance: match args.idle_advance_ms.or(file.idle_advance_ms) {
            Some(0) => None,
            Some(ms) => Some(Duration::from_millis(ms)),
            None => stream::default_idle_advance(commit_interval),
        },
        delivery_timeout: args
            .delivery_timeout_ms
            .or(file.delivery_timeout_ms)
            .map_or(stream::DEFAULT_DELIVERY_TIMEOUT, Duration::from_millis),
        instance_id: match args.instance_id.clone() {
            Some(id) => match stream::check_instance_id(&id) {
                Some(why) => anyhow::bail!("--instance-id {why}"),
                None => Some(id),
            },
            None => file.instance_id.clone(),
        },
        guarantee,
        cache_max_bytes: args
            .cache_max_bytes
            .or(file.cache_max_bytes)
            .unwrap_or(10 * 1024 * 1024),
        state_cache_bytes,
        kafka,
        http: args
            .http
            .clone()
            .or_else(|| file.http.clone())
            .unwrap_or_else(|| "127.0.0.1:9898".to_string()),
        generate,
        rate,
    })
}

/// A service or generator, ready to start on its own thread.
type Work = Box<dyn FnOnce() -> anyhow::Result<()> + Send>;

/// One app ready to run.
struct Prepared {
    name: String,
    description: String,
    parts: AppParts,
    rate: Option<f64>,
    generate: Option<bool>,
}

pub(crate) fn run(daemon: Daemon, args: RunArgs) -> anyhow::Result<()> {
    let file = match &args.config {
        Some(p) => FileConfig::load(p)?,
        None => FileConfig::default(),
    };
    if let Some(name) = file.unknown_topology(&daemon.names()) {
        bail!(
            "unknown topology {name:?} in [topologies] of the config (registered: {})",
            daemon.names().join(", ")
        );
    }
    let settings = resolve(&args, &file)?;
    // Parameters of topologies not run now are checked too: a typo in the
    // file is found today, not on the day that topology is started.
    for name in file.topologies.keys() {
        if !args.names.contains(name) {
            let tc = file.topology(name)?;
            (daemon.find(name)?.build)(&tc.params).with_context(|| format!("topology {name:?}"))?;
        }
    }

    // Every name and parameter is checked before anything starts.
    let mut prepared = Vec::with_capacity(args.names.len());
    for (i, name) in args.names.iter().enumerate() {
        let app = daemon.find(name)?;
        if args.names[..i].contains(name) {
            bail!("topology {name:?} is given twice");
        }
        let tc = file.topology(name)?;
        let parts = (app.build)(&tc.params).with_context(|| format!("topology {name:?}"))?;
        prepared.push(Prepared {
            name: app.name.clone(),
            description: app.description.clone(),
            parts,
            rate: tc.rate,
            generate: tc.generate,
        });
    }
    let mut paths: Vec<&str> = Vec::new();
    for p in &prepared {
        for r in &p.parts.routes {
            if http::is_builtin(&r.path) || paths.contains(&r.path.as_str()) {
                bail!("route {} of topology {:?} is already taken", r.path, p.name);
            }
            paths.push(&r.path);
        }
    }

    let listener = http::bind(&settings.http)?;
    let stop = stop_on_signals()?;
    let mut _embedded = None;
    let brokers = match &settings.brokers {
        Some(b) => b.clone(),
        None => {
            let broker_settings = weir_broker::BrokerSettings {
                default_partitions: stream::EMBEDDED_PARTITIONS,
                ..Default::default()
            };
            let broker = super::broker::start(
                &settings.broker_dir,
                settings.broker_listen,
                broker_settings,
                "--broker-listen",
            )?;
            let addr = broker.addr().to_string();
            println!("embedded Kafka broker at {addr}");
            eprintln!(
                "weir: embedded broker data in {} (a single-node broker for development and tests; \
                 use --brokers for a Kafka cluster)",
                settings.broker_dir.display()
            );
            _embedded = Some(broker);
            addr
        }
    };
    let generate_default = _embedded.is_some();
    let client = client_settings(&brokers, &settings);
    let status = Arc::new(RunStatus::default());
    let metrics = Arc::new(Metrics::new());
    let ctx = Arc::new(Context::new(
        brokers.clone(),
        client,
        status.clone(),
        metrics.clone(),
        settings.data_dir.clone(),
        stop.clone(),
    ));

    let mut infos = Vec::new();
    let mut routes = Vec::new();
    let mut specs = Vec::new();
    let mut workers: Vec<(String, Work)> = Vec::new();
    for p in prepared {
        let topology = p.parts.topology;
        let generating = settings
            .generate
            .or(p.generate)
            .or(file.generate)
            .unwrap_or(generate_default);
        let gen_rate = settings.rate.or(p.rate).or(file.rate);
        infos.push(http::TopologyInfo {
            name: p.name.clone(),
            description: p.description.clone(),
            describe: topology.describe(&p.name),
            internal_topics: topology.internal_topics(&p.name),
            store_formats: queryable_stores(&topology),
            window_stores: topology
                .stores()
                .iter()
                .filter(|s| matches!(s.kind, weir_topology::store::StoreKind::Window { .. }))
                .map(|s| s.name.clone())
                .collect(),
            versioned_stores: topology
                .stores()
                .iter()
                .filter(|s| matches!(s.kind, weir_topology::store::StoreKind::Versioned { .. }))
                .map(|s| s.name.clone())
                .collect(),
            routes: p.parts.routes.iter().map(|r| r.path.clone()).collect(),
            generating: generating && p.parts.generator.is_some(),
        });
        routes.extend(p.parts.routes);
        for f in p.parts.feeds {
            ctx.start_feed(f);
        }
        for s in p.parts.services {
            let ctx = ctx.clone();
            let run = s.run;
            workers.push((format!("{}/{}", p.name, s.name), Box::new(move || run(ctx))));
        }
        if let (true, Some(g)) = (generating, p.parts.generator) {
            let rate = gen_rate.unwrap_or(g.default_rate);
            let ctx = ctx.clone();
            let name = p.name.clone();
            let topics = g.topics;
            let make = g.make;
            workers.push((
                format!("{}/generator", p.name),
                Box::new(move || generate::run(ctx, name, topics, rate, make())),
            ));
        }
        specs.push(AppSpec {
            application_id: p.name,
            topology,
        });
    }

    let bound = http::serve_on(
        listener,
        http::HttpState {
            metrics: metrics.clone(),
            status: status.clone(),
            topologies: infos,
            routes,
            ctx: Some(ctx.clone()),
            kafka: http::KafkaInfo {
                brokers: brokers.clone(),
                embedded: _embedded.is_some(),
            },
        },
    )?;
    eprintln!("HTTP on http://{bound}");
    eprintln!("weir: dashboard at http://{bound}/, metrics at http://{bound}/metrics");

    let mut handles = Vec::new();
    for (name, work) in workers {
        let ctx = ctx.clone();
        let thread_name = name.clone();
        handles.push((
            name.clone(),
            std::thread::Builder::new().name(thread_name).spawn(move || {
                let r = work();
                if let Err(e) = &r {
                    tracing::error!(service = %name, error = %format!("{e:#}"), "stopping the daemon");
                    ctx.request_stop();
                }
                r
            })?,
        ));
    }

    let config = RunConfig {
        brokers: Some(brokers),
        state_dir: settings.state_dir,
        threads: settings.threads,
        commit_interval: settings.commit_interval,
        idle_advance: settings.idle_advance,
        delivery_timeout: settings.delivery_timeout,
        cache_max_bytes: settings.cache_max_bytes,
        instance_id: settings.instance_id,
        guarantee: settings.guarantee,
        stop: stop.clone(),
        kafka_properties: settings.kafka.clone(),
        state_cache_bytes: settings.state_cache_bytes,
    };
    let result = stream::run_with(specs, config, status, metrics);
    ctx.request_stop();
    let mut first_error = result.err().map(anyhow::Error::from);
    for (name, h) in handles {
        match h.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                first_error.get_or_insert(e.context(name));
            }
            Err(_) => {
                first_error.get_or_insert(anyhow::anyhow!("{name} panicked"));
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// The client settings of the daemon's own clients (services,
/// generators, queries): weir's tuning plus the run's librdkafka
/// properties.
fn client_settings(brokers: &str, settings: &Settings) -> ClientSettings {
    let mut client = ClientSettings::new(brokers);
    client.overrides = settings.kafka.clone();
    client
}

/// The stores `/stores/..` can read, with the serdes to read them by: every
/// store whose serdes the topology recorded, global stores included (each
/// instance holds a global store whole, registered under partition -1).
fn queryable_stores(topology: &weir_topology::Topology) -> Vec<(String, weir_topology::QueryCodec)> {
    let names = topology
        .stores()
        .iter()
        .map(|s| s.name.as_str())
        .chain(topology.global_stores().iter().map(|g| g.store.as_str()));
    names
        .filter_map(|name| topology.query_codec(name).map(|c| (name.to_string(), c.clone())))
        .collect()
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use weir_topology::{Materialized, Serdes, StreamsBuilder};

    use super::super::cli::RunArgs;
    use super::super::config::FileConfig;

    #[derive(Parser)]
    struct Args {
        #[command(flatten)]
        run: RunArgs,
    }

    fn args(flags: &[&str]) -> RunArgs {
        let mut argv = vec!["weir", "user-clicks"];
        argv.extend_from_slice(flags);
        Args::try_parse_from(argv).unwrap().run
    }

    fn resolve_err(flags: &[&str], file: &str) -> String {
        let file = FileConfig::parse(file).unwrap();
        match super::resolve(&args(flags), &file) {
            Ok(_) => panic!("{flags:?} resolved"),
            Err(e) => format!("{e:#}"),
        }
    }

    #[test]
    fn client_settings_carry_the_kafka_properties_flags_first() {
        let file =
            FileConfig::parse("[kafka]\n\"queued.min.messages\" = 5000\n\"queue.buffering.max.messages\" = 200000\n")
                .unwrap();
        let settings = super::resolve(
            &args(&["--kafka", "queued.min.messages=1000", "--kafka", "linger.ms=20"]),
            &file,
        )
        .unwrap();
        let client = super::client_settings("b:1", &settings);
        assert_eq!(client.brokers, "b:1");
        let consumer = client.consumer_config("app");
        assert_eq!(consumer.get("queued.min.messages"), Some("1000"), "the flag wins");
        assert_eq!(consumer.get("group.id"), Some("app"));
        let producer = client.producer_config();
        assert_eq!(producer.get("queue.buffering.max.messages"), Some("200000"));
        assert_eq!(producer.get("linger.ms"), Some("20"));
        assert_eq!(producer.get("enable.idempotence"), Some("true"));

        let defaults = super::resolve(&args(&[]), &FileConfig::default()).unwrap();
        assert!(super::client_settings("b:1", &defaults).overrides.is_empty());
        assert_eq!(defaults.state_cache_bytes, 64 * 1024 * 1024);
    }

    #[test]
    fn state_cache_bytes_flag_beats_file() {
        let file = FileConfig::parse("state_cache_bytes = 33554432\n").unwrap();
        assert_eq!(super::resolve(&args(&[]), &file).unwrap().state_cache_bytes, 32 << 20);
        let flag = args(&["--state-cache-bytes", "16777216"]);
        assert_eq!(super::resolve(&flag, &file).unwrap().state_cache_bytes, 16 << 20);
        let e = Args::try_parse_from(["weir", "x", "--state-cache-bytes", "1000"])
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("1000 is not in 1048576.."), "{e}");
    }

    #[test]
    fn bad_kafka_flags_stop_the_run_with_one_line() {
        assert_eq!(
            resolve_err(&["--kafka", "queued.min.messages"], ""),
            "--kafka queued.min.messages: expected KEY=VALUE, a librdkafka property and its value"
        );
        assert_eq!(
            resolve_err(&["--kafka", "queued.min.mesages=5"], ""),
            "--kafka queued.min.mesages=5: No such configuration property: \"queued.min.mesages\""
        );
        assert_eq!(
            resolve_err(&["--kafka", "group.id=mine"], ""),
            "--kafka group.id=mine: weir sets it: each topology's consumer group is its application id \
             (the topology's name)"
        );
    }

    #[test]
    fn global_stores_are_queryable_with_their_serdes() {
        let mut b = StreamsBuilder::new();
        let customers = b.global_table::<String, String>(
            "customers",
            Serdes::string(),
            Serdes::string(),
            Materialized::named("customers-by-id"),
        );
        b.stream::<String, String>("orders", Serdes::string(), Serdes::string())
            .join_global(
                &customers,
                |_, order| order.clone(),
                |_, order, name| format!("{order}/{name}"),
            )
            .to("orders-named", Serdes::string(), Serdes::string());
        b.table::<String, u64>("totals", Serdes::string(), Serdes::u64(), Materialized::named("totals"));
        let topology = b.build().unwrap();
        let stores = super::queryable_stores(&topology);
        let names: Vec<&str> = stores.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["totals", "customers-by-id"]);
        let (_, codec) = &stores[1];
        assert_eq!(codec.parse_key("c-7").unwrap(), b"c-7".to_vec());
        assert_eq!(codec.value_json(b"Ann"), serde_json::json!("Ann"));
    }
}
