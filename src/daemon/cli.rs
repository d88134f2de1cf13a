//! The daemon's command line: list, describe and run the registered
//! topologies on Kafka, run a standalone embedded broker, produce and tail
//! topics, and benchmark the engine.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use signal_hook::consts::{SIGINT, SIGTERM};
use weir_connectors::kafka::stream::Guarantee;
use weir_connectors::kafka::{self, TailLimit};

use super::Daemon;
use crate::bench;

#[derive(Parser)]
#[command(
    name = "weir",
    version,
    about = "Kafka Streams-style stream processing: run, inspect and benchmark topologies"
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List the registered topologies with a one-line description each.
    List,
    /// Print a topology's sub-topologies, sources, processors, stores and sinks.
    Describe {
        /// The registered topology name (see `weir list`).
        name: String,
    },
    /// Run one or more topologies on Kafka until SIGINT or SIGTERM.
    ///
    /// Each topology runs as its own application (its name is the
    /// application id and consumer group). Without --brokers weir starts its
    /// own broker in this process (persistent, single node) and prints its
    /// address.
    Run(Box<RunArgs>),
    /// Run weir's Kafka-protocol broker on its own until SIGINT or SIGTERM.
    ///
    /// A persistent single-node broker for development and tests: topics,
    /// committed offsets and producer ids are kept in --broker-dir and
    /// survive a restart (or a crash). Prints `embedded Kafka broker at
    /// HOST:PORT` as the first line on stdout; give that address to
    /// `weir run --brokers`, `weir produce`, `weir tail`, kcat or any Kafka
    /// client. Not a cluster: one node, no replication, no security.
    DevBroker {
        /// Partition count of topics created without an explicit one (created
        /// by a client's first metadata request, or CreateTopics with -1).
        #[arg(long, env = "WEIR_PARTITIONS", default_value_t = 3, value_name = "N",
              value_parser = clap::value_parser!(i32).range(1..=i64::from(kafka::MAX_PARTITIONS)))]
        partitions: i32,
        /// Address to listen on. If the default port is taken, a free port is
        /// used and named on stderr; an address given here must be free.
        /// Port 0 picks a free one. [default: 127.0.0.1:9092]
        #[arg(long, env = "WEIR_BROKER_LISTEN", value_name = "HOST:PORT")]
        listen: Option<std::net::SocketAddr>,
        /// Directory of the broker's data.
        #[arg(long, env = "WEIR_BROKER_DIR", value_name = "DIR", default_value = "weir-broker")]
        broker_dir: PathBuf,
    },
    /// Produce the lines of stdin to a topic, one record per line.
    ///
    /// Empty lines are skipped. A missing topic is created with the
    /// cluster's default partition count. Prints the number of records
    /// delivered on stderr.
    Produce {
        /// The topic to write to.
        topic: String,
        #[command(flatten)]
        brokers: BrokersArg,
        /// Split each line at its first TAB into key and value; a line
        /// without a TAB is a value with no key.
        #[arg(long, env = "WEIR_KEY_TAB")]
        key_tab: bool,
    },
    /// Print a topic's records on stdout, one per line.
    ///
    /// Each record prints as `key<TAB>value`, or the value alone when the key
    /// is null; a repartition topic's record prints its value without the
    /// envelope that carries weir's origin. Reads every partition without
    /// joining a consumer group (nothing is committed); waits for the topic
    /// if it does not exist yet (and then prints it from its first record,
    /// all of it being new). Runs until SIGINT/SIGTERM or one of the limits
    /// below.
    Tail {
        /// The topic to read.
        topic: String,
        #[command(flatten)]
        brokers: BrokersArg,
        /// Start at the oldest record instead of only printing the records
        /// appended after the tail started.
        #[arg(long, env = "WEIR_FROM_BEGINNING")]
        from_beginning: bool,
        /// Stop after printing this many records.
        #[arg(long, env = "WEIR_MAX_RECORDS", value_name = "N")]
        max_records: Option<u64>,
        /// Stop this many milliseconds after starting.
        #[arg(long, env = "WEIR_TIMEOUT_MS", value_name = "MS")]
        timeout_ms: Option<u64>,
    },
    /// Measure throughput; see BENCHMARKS.md.
    Bench {
        #[command(subcommand)]
        workload: BenchWorkload,
    },
}

/// `--brokers` for the commands that need a cluster.
#[derive(Args)]
struct BrokersArg {
    /// Kafka bootstrap servers, `host:port[,host:port...]` (for example the
    /// address `weir dev-broker` printed).
    #[arg(long, env = "WEIR_BROKERS", value_name = "HOST:PORT")]
    brokers: Option<String>,
}

impl BrokersArg {
    fn required(self) -> anyhow::Result<String> {
        match self.brokers {
            Some(b) if !b.trim().is_empty() => Ok(b),
            _ => bail!(
                "no Kafka cluster given: pass --brokers HOST:PORT or set WEIR_BROKERS \
                 (`weir dev-broker` starts a local one and prints its address)"
            ),
        }
    }
}

/// `weir run`'s flags. Settings left out here come from `--config`, then
/// from the defaults named in each flag's help.
#[derive(Args)]
pub(crate) struct RunArgs {
    /// The topologies to run (see `weir list`); each is its own application.
    #[arg(required = true, value_name = "NAME")]
    pub names: Vec<String>,
    /// A TOML file with these settings (same names, with `_` for `-`) and
    /// per-topology parameters under `[topologies.NAME]`; flags and
    /// environment variables win over it. See the README.
    #[arg(long, env = "WEIR_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Kafka bootstrap servers, `host:port[,host:port...]`. Without it weir
    /// starts its own broker in this process (a persistent single-node
    /// broker for development; see --broker-listen and --broker-dir).
    #[arg(long, env = "WEIR_BROKERS", value_name = "HOST:PORT")]
    pub brokers: Option<String>,
    /// Without --brokers: the address the embedded broker listens on. If
    /// the default port is taken, a free port is used and named on stderr;
    /// an address given here must be free. Port 0 picks a free one.
    /// [default: 127.0.0.1:9092]
    #[arg(long, env = "WEIR_BROKER_LISTEN", value_name = "HOST:PORT")]
    pub broker_listen: Option<std::net::SocketAddr>,
    /// Without --brokers: the directory of the embedded broker's data
    /// (topics, committed offsets), kept across restarts. [default: ./weir-broker]
    #[arg(long, env = "WEIR_BROKER_DIR", value_name = "DIR")]
    pub broker_dir: Option<PathBuf>,
    /// Directory of the local state stores (sled); rebuilt from the
    /// changelog topics when missing. [default: ./weir-state]
    #[arg(long, env = "WEIR_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Directory of the files topologies write (clickstream-parquet's
    /// Parquet files go under DIR/parquet/). [default: ./data]
    #[arg(long, env = "WEIR_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Stream threads per topology (each one consumer in the group). [default: 1]
    #[arg(long, env = "WEIR_THREADS", value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub threads: Option<u32>,
    /// Commit (flush stores, their changelogs and the producer, then commit
    /// offsets) this often, in milliseconds. [default: 1000; 100 with
    /// --guarantee exactly-once]
    #[arg(long, env = "WEIR_COMMIT_INTERVAL_MS", value_name = "MS",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub commit_interval_ms: Option<u64>,
    /// After a partition has had no record for this long, in milliseconds,
    /// its stream time follows the wall clock, so that the windows of a
    /// quiet topic still close and emit (a live dashboard wants that). 0
    /// turns it off: stream time then moves with records only, as in Kafka
    /// Streams, and a window closes only when a later record arrives.
    /// [default: the commit interval, at least 1000]
    #[arg(long, env = "WEIR_IDLE_ADVANCE_MS", value_name = "MS")]
    pub idle_advance_ms: Option<u64>,
    /// How long weir waits for the cluster to take a commit's records, in
    /// milliseconds. A broker outage shorter than this is ridden out
    /// (`/readyz` answers 503 meanwhile, and the log says so once); past
    /// it the daemon exits 1, with nothing committed past the undelivered
    /// records, so a restart replays them. [default: 600000, ten minutes]
    #[arg(long, env = "WEIR_DELIVERY_TIMEOUT_MS", value_name = "MS",
          value_parser = clap::value_parser!(u64).range(1000..=2_147_483_647))]
    pub delivery_timeout_ms: Option<u64>,
    /// Static group membership (Kafka's KIP-345): this instance's stream
    /// threads join their groups as `ID-0`, `ID-1`, ... so that, restarted
    /// within the session timeout (a deploy, a crash and restart), it gets
    /// its partitions back without a rebalance of the other instances.
    /// Give every instance its own ID, the same across its restarts (e.g.
    /// the host or pod name); two live instances with one ID fence each
    /// other out. The session timeout becomes 30 s: an instance that stops for good holds
    /// its partitions that long before the others take them over. 1-200 ASCII letters, digits, '.', '_' or '-'. [default: none:
    /// dynamic membership]
    #[arg(long, env = "WEIR_INSTANCE_ID", value_name = "ID")]
    pub instance_id: Option<String>,
    /// What a commit promises about outputs: `at-least-once` (state is
    /// exact after a crash; outputs written since the last commit may be
    /// written again) or `exactly-once` (Kafka transactions, as Kafka
    /// Streams' exactly_once_v2: each commit's outputs, state changes and
    /// input offsets become visible together or not at all, so a
    /// `read_committed` reader sees every output once; needs a cluster
    /// with transactions, and the commit interval defaults to 100 ms).
    /// See the README's "What is guaranteed". [default: at-least-once]
    #[arg(long, env = "WEIR_GUARANTEE", value_name = "GUARANTEE",
          value_parser = super::config::parse_guarantee)]
    pub guarantee: Option<Guarantee>,
    /// Write-cache limit of each store of each task, in bytes; a task with
    /// a store past it commits early. [default: 10485760, 10 MiB]
    #[arg(long, env = "WEIR_CACHE_MAX_BYTES", value_name = "BYTES")]
    pub cache_max_bytes: Option<usize>,
    /// Size of the state stores' page cache (sled's), in bytes: one cache
    /// for the whole instance, shared by all tasks, holding the pages of
    /// the stores read or written lately. At least 1048576.
    /// [default: 67108864, 64 MiB]
    #[arg(long, env = "WEIR_STATE_CACHE_BYTES", value_name = "BYTES",
          value_parser = clap::value_parser!(u64).range(super::config::MIN_STATE_CACHE_BYTES..))]
    pub state_cache_bytes: Option<u64>,
    /// A librdkafka property for every Kafka client weir creates (consumers,
    /// producers, admin), applied after weir's own tuning; repeat the flag
    /// for several. Wins over the config file's `[kafka]` table for the
    /// same key. Checked by librdkafka at start-up. For example
    /// `queued.min.messages=20000` (records a stream thread's consumer
    /// pre-fetches; weir's default, librdkafka's is 100000),
    /// `queued.max.messages.kbytes` (its pre-fetch payload; default 16384),
    /// `queue.buffering.max.messages` (the producer's queue; default
    /// 1000000), `compression.type=zstd`, or `sasl.*` with
    /// `security.protocol=SASL_PLAINTEXT` (weir's librdkafka has no TLS).
    /// weir sets `bootstrap.servers`, `group.id`, `group.instance.id`,
    /// `transactional.id`, `enable.idempotence`, `isolation.level`,
    /// `enable.auto.commit`, `enable.auto.offset.store` and
    /// `message.timeout.ms` itself (see --brokers, --instance-id,
    /// --guarantee, --delivery-timeout-ms). [default: none]
    #[arg(long = "kafka", value_name = "KEY=VALUE")]
    pub kafka: Vec<String>,
    /// Address of the HTTP API and dashboard (`/`, `/metrics`, `/healthz`,
    /// `/readyz`, `/topologies`, `/stores/...` and each topology's routes);
    /// port 0 picks a free port (the bound address is printed on stderr as
    /// `HTTP on http://ADDR`). [default: 127.0.0.1:9898]
    #[arg(long, env = "WEIR_HTTP", value_name = "HOST:PORT")]
    pub http: Option<String>,
    /// Run the topologies' data generators (the default on the embedded
    /// broker; off against --brokers unless given).
    #[arg(long, env = "WEIR_GENERATE", overrides_with = "no_generate")]
    pub generate: bool,
    /// Do not run the data generators, even on the embedded broker.
    #[arg(long, env = "WEIR_NO_GENERATE", overrides_with = "generate")]
    pub no_generate: bool,
    /// Events per second of every generator (default: each topology's own,
    /// e.g. 1/s for user-clicks; `[topologies.NAME] rate` sets one).
    #[arg(long, env = "WEIR_RATE", value_name = "N")]
    pub rate: Option<f64>,
}

#[derive(Subcommand)]
enum BenchWorkload {
    /// Records through the topologies in-process (sled stores, write cache,
    /// no broker), next to a hand-written loop doing the same work.
    Engine {
        /// Number of input records per topology.
        #[arg(long, default_value_t = 5_000_000, value_parser = clap::value_parser!(u64).range(1..))]
        events: u64,
        /// Topologies to run (repeat the flag); default: user-clicks, emoji-stream and hashtag-trends.
        #[arg(long = "topology", value_name = "NAME")]
        topologies: Vec<String>,
        /// Commit (flush caches, write sled) this often, in milliseconds.
        #[arg(long, default_value_t = 1000)]
        commit_interval_ms: u64,
        /// Write-cache limit per store, in bytes.
        #[arg(long, default_value_t = 10 * 1024 * 1024)]
        cache_max_bytes: usize,
        /// Print one JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Records pre-produced to a `weir dev-broker` (started and stopped by
    /// the bench, in its own process), consumed by the topology on Kafka
    /// until all input is committed and all output delivered, next to a
    /// plain rdkafka consume-and-produce loop on the same records.
    E2e {
        /// Number of input records per topology.
        #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
        events: u64,
        /// Topologies to run (repeat the flag): user-clicks, emoji-stream, or
        /// windowed-count (1 M page views on 4 partitions counted per user in
        /// 10 s windows, no repartition). Default: user-clicks and emoji-stream.
        #[arg(long = "topology", value_name = "NAME")]
        topologies: Vec<String>,
        /// weir's commit interval (and the ceiling's), in milliseconds.
        /// [default: 1000; 100 with --guarantee exactly-once]
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        commit_interval_ms: Option<u64>,
        /// weir's guarantee (`at-least-once` or `exactly-once`; the
        /// ceilings stay plain consume-and-produce loops). Exactly-once
        /// needs a broker with transactions: see --brokers.
        #[arg(long, default_value = "at-least-once", value_parser = super::config::parse_guarantee)]
        guarantee: Guarantee,
        /// Run on the cluster at HOST:PORT (it must be empty, e.g. a fresh
        /// noida-db; one --topology) instead of a dev broker per topology.
        #[arg(long, value_name = "HOST:PORT")]
        brokers: Option<String>,
        /// Print one JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One topology of `weir bench e2e` in its own process, started by the
    /// bench (which measures its time and memory); runs until its standard
    /// input closes.
    #[command(hide = true)]
    E2eRun {
        #[arg(long)]
        topology: String,
        #[arg(long, value_name = "HOST:PORT")]
        brokers: String,
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        commit_interval_ms: u64,
        #[arg(long, value_parser = super::config::parse_guarantee)]
        guarantee: Guarantee,
    },
    /// End-to-end latency of user-clicks on a `weir dev-broker` at a steady
    /// input rate: from each output's timestamp (its newest input's send
    /// time) to its arrival at a consumer, per commit interval.
    Latency {
        /// Input records per second.
        #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
        rate: u64,
        /// Measured seconds per commit interval (after a 3 s warm-up).
        #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
        seconds: u64,
        /// Commit intervals to measure, in milliseconds (repeat the flag); default: 100 and 1000.
        #[arg(long = "commit-interval-ms", value_name = "MS")]
        commit_intervals_ms: Vec<u64>,
        /// weir's guarantee (`at-least-once` or `exactly-once`); exactly-once
        /// needs a broker with transactions: see --brokers.
        #[arg(long, default_value = "at-least-once", value_parser = super::config::parse_guarantee)]
        guarantee: Guarantee,
        /// Run on the cluster at HOST:PORT (it must be empty, e.g. a fresh
        /// noida-db; one --commit-interval-ms) instead of a dev broker.
        #[arg(long, value_name = "HOST:PORT")]
        brokers: Option<String>,
        /// Print one JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// A store of N keys rebuilt from its changelog on a `weir dev-broker`
    /// into an empty state directory, next to fetching the same records.
    Restore {
        /// Distinct keys (changelog records).
        #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..=4_000_000))]
        keys: u64,
        /// Print one JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Records produced to and consumed back from weir's broker (`weir
    /// dev-broker`) and librdkafka's mock cluster, each in its own process,
    /// with weir's client settings; every record is checked. The mock keeps
    /// 5 MiB per partition, so it runs in rounds (weir's broker too, for
    /// comparison, and once in a single round).
    Broker {
        /// Records produced and consumed per run.
        #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
        records: u64,
        /// Bytes of each record's value (no key).
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(8..=900_000))]
        record_bytes: u64,
        /// Partition counts of the topic, comma-separated; one run per count and broker.
        #[arg(long, value_delimiter = ',', default_value = "1,8", value_name = "N,...",
              value_parser = clap::value_parser!(i32).range(1..=i64::from(kafka::MAX_PARTITIONS)))]
        partitions: Vec<i32>,
        /// Print one JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
        /// Serve librdkafka's mock cluster with topic `bench` of N partitions
        /// until SIGINT/SIGTERM (the bench's mock broker process).
        #[arg(long, hide = true, value_name = "N",
              value_parser = clap::value_parser!(i32).range(1..=i64::from(kafka::MAX_PARTITIONS)))]
        serve_mock: Option<i32>,
    },
    /// Put/get operations per second on weir's sled store with and without
    /// the write cache, next to raw sled.
    State {
        /// Puts (and then gets) per variant.
        #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(10..))]
        ops: u64,
        /// Distinct keys the operations draw from.
        #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
        keys: u64,
        /// Print one JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// Logs go to stderr (stdout carries data: the broker address, tailed
/// records). `RUST_LOG` overrides the default level: info for the
/// long-running commands, warnings only for the others.
pub(crate) fn init_logging(cli: &Cli) {
    let default = match &cli.command {
        Command::Run(_) | Command::DevBroker { .. } => "info",
        _ => "warn",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .try_init();
}

pub(crate) fn run(daemon: Daemon, cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::List => {
            for app in &daemon.apps {
                println!("{:<22} {}", app.name, app.description);
            }
            Ok(())
        }
        Command::Describe { name } => {
            let app = daemon.find(&name)?;
            let parts = (app.build)(&toml::Table::new())?;
            print!("{}", parts.topology.describe(&app.name));
            Ok(())
        }
        Command::Run(args) => super::run::run(daemon, *args),
        Command::DevBroker {
            partitions,
            listen,
            broker_dir,
        } => dev_broker(partitions, listen, broker_dir),
        Command::Produce {
            topic,
            brokers,
            key_tab,
        } => {
            let brokers = brokers.required()?;
            let stdin = std::io::stdin();
            let n = kafka::produce_lines(&brokers, &topic, stdin.lock(), key_tab)
                .with_context(|| format!("producing to {topic:?} on {brokers}"))?;
            eprintln!("weir: produced {n} record(s) to {topic:?}");
            Ok(())
        }
        Command::Tail {
            topic,
            brokers,
            from_beginning,
            max_records,
            timeout_ms,
        } => {
            let brokers = brokers.required()?;
            let stop = stop_on_signals()?;
            let limit = TailLimit {
                max_records,
                timeout: timeout_ms.map(Duration::from_millis),
                stop: Some(stop),
                positioned: None,
            };
            let stdout = std::io::stdout();
            kafka::tail(&brokers, &topic, from_beginning, stdout.lock(), Some(limit))
                .with_context(|| format!("tailing {topic:?} on {brokers}"))?;
            Ok(())
        }
        Command::Bench { workload } => match workload {
            BenchWorkload::Engine {
                events,
                topologies,
                commit_interval_ms,
                cache_max_bytes,
                json,
            } => {
                let topologies = if topologies.is_empty() {
                    vec![
                        "user-clicks".to_string(),
                        "emoji-stream".to_string(),
                        "hashtag-trends".to_string(),
                    ]
                } else {
                    topologies
                };
                let opts = bench::EngineOptions {
                    events,
                    topologies,
                    commit_interval: Duration::from_millis(commit_interval_ms),
                    cache_max_bytes,
                };
                if !json {
                    eprintln!(
                        "weir bench engine: {events} events per topology (inputs are generated first, then timed)"
                    );
                }
                let results = bench::run_engine(&opts)?;
                print_results(&results, json)
            }
            BenchWorkload::E2e {
                events,
                topologies,
                commit_interval_ms,
                guarantee,
                brokers,
                json,
            } => {
                let commit_interval_ms = commit_interval_ms.unwrap_or(match guarantee {
                    Guarantee::AtLeastOnce => 1000,
                    Guarantee::ExactlyOnce => 100,
                });
                let topologies = if topologies.is_empty() {
                    vec!["user-clicks".to_string(), "emoji-stream".to_string()]
                } else {
                    topologies
                };
                if !json {
                    eprintln!(
                        "weir bench e2e: {events} events per topology, pre-produced to {}; the rdkafka ceiling \
                         first, then weir ({guarantee:?}, {commit_interval_ms} ms commits)",
                        brokers.as_deref().unwrap_or("a dev broker in its own process")
                    );
                }
                let opts = bench::e2e::E2eOptions {
                    events,
                    topologies,
                    commit_interval: Duration::from_millis(commit_interval_ms),
                    guarantee,
                    brokers,
                    verbose: !json,
                };
                let results = bench::e2e::run_e2e(&opts)?;
                print_results(&results, json)
            }
            BenchWorkload::E2eRun {
                topology,
                brokers,
                commit_interval_ms,
                guarantee,
            } => bench::e2e::serve_run(
                &topology,
                &brokers,
                Duration::from_millis(commit_interval_ms),
                guarantee,
            ),
            BenchWorkload::Latency {
                rate,
                seconds,
                commit_intervals_ms,
                guarantee,
                brokers,
                json,
            } => {
                let intervals = if commit_intervals_ms.is_empty() {
                    vec![100, 1000]
                } else {
                    commit_intervals_ms
                };
                let opts = bench::latency::LatencyOptions {
                    rate,
                    seconds,
                    commit_intervals: intervals.into_iter().map(Duration::from_millis).collect(),
                    guarantee,
                    brokers,
                    verbose: !json,
                };
                let results = bench::latency::run_latency(&opts)?;
                print_results(&results, json)
            }
            BenchWorkload::Restore { keys, json } => {
                let results = bench::restore::run_restore(&bench::restore::RestoreOptions { keys, verbose: !json })?;
                print_results(&results, json)
            }
            BenchWorkload::Broker {
                records,
                record_bytes,
                partitions,
                json,
                serve_mock,
            } => {
                if let Some(partitions) = serve_mock {
                    return bench::broker::serve_mock(partitions);
                }
                if !json {
                    eprintln!(
                        "weir bench broker: {records} records of {record_bytes} bytes per run, on weir's broker and \
                         librdkafka's mock, each in its own process"
                    );
                }
                let opts = bench::broker::BrokerOptions {
                    records,
                    record_bytes: usize::try_from(record_bytes)?,
                    partitions,
                    verbose: !json,
                };
                let results = bench::broker::run_broker(&opts)?;
                if json {
                    for r in &results {
                        println!("{}", serde_json::to_string(r)?);
                    }
                } else {
                    bench::broker::print_table(&results);
                }
                Ok(())
            }
            BenchWorkload::State { ops, keys, json } => {
                let results = bench::state::run_state(&bench::state::StateOptions { ops, keys })?;
                print_results(&results, json)
            }
        },
    }
}

/// A benchmark's results: one JSON object per line, or the table.
fn print_results(results: &[bench::BenchResult], json: bool) -> anyhow::Result<()> {
    if json {
        for r in results {
            println!("{}", serde_json::to_string(r)?);
        }
    } else {
        bench::print_table(results);
    }
    Ok(())
}

/// A flag that SIGINT and SIGTERM set. A second SIGINT or SIGTERM while the
/// first is being handled exits at once (status 1), so a stuck shutdown can
/// always be interrupted.
pub(crate) fn stop_on_signals() -> anyhow::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [SIGINT, SIGTERM] {
        // Registered first, so it sees the flag as it was before this signal.
        signal_hook::flag::register_conditional_shutdown(signal, 1, Arc::clone(&stop))
            .context("installing a signal handler")?;
        signal_hook::flag::register(signal, Arc::clone(&stop)).context("installing a signal handler")?;
    }
    Ok(stop)
}

fn dev_broker(partitions: i32, listen: Option<std::net::SocketAddr>, dir: PathBuf) -> anyhow::Result<()> {
    // Handlers first: a signal that arrives while the broker starts still
    // stops it cleanly.
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM]).context("installing signal handlers")?;
    let settings = weir_broker::BrokerSettings {
        default_partitions: partitions,
        ..Default::default()
    };
    let broker = super::broker::start(&dir, listen, settings, "--listen")?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "embedded Kafka broker at {}", broker.addr())?;
        out.flush()?;
    }
    eprintln!("weir: broker data in {}", dir.display());
    let signal = signals.forever().next();
    tracing::info!(?signal, "stopping the broker");
    broker.stop();
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::{Cli, Command};

    fn run_args(argv: &[&str]) -> Result<super::RunArgs, clap::Error> {
        match Cli::try_parse_from(argv)?.command {
            Command::Run(args) => Ok(*args),
            _ => panic!("not `weir run`"),
        }
    }

    #[test]
    fn kafka_flags_repeat_and_keep_their_text() {
        let args = run_args(&[
            "weir",
            "run",
            "user-clicks",
            "--kafka",
            "queued.min.messages=5000",
            "--kafka=compression.type=zstd",
            "--state-cache-bytes",
            "16777216",
        ])
        .unwrap();
        assert_eq!(args.names, ["user-clicks"]);
        assert_eq!(args.kafka, ["queued.min.messages=5000", "compression.type=zstd"]);
        assert_eq!(args.state_cache_bytes, Some(16 << 20));
        let args = run_args(&["weir", "run", "user-clicks"]).unwrap();
        assert!(args.kafka.is_empty());
        assert_eq!(args.state_cache_bytes, None);
    }

    #[test]
    fn a_kafka_flag_without_a_value_is_refused() {
        // Without `=`, the text reaches `parse_kafka_flag`, which names it
        // (see run.rs); without any text clap refuses the flag itself.
        let args = run_args(&["weir", "run", "user-clicks", "--kafka", "foo"]).unwrap();
        assert_eq!(
            format!(
                "{:#}",
                super::super::config::parse_kafka_flag(&args.kafka[0]).unwrap_err()
            ),
            "--kafka foo: expected KEY=VALUE, a librdkafka property and its value"
        );
        let e = run_args(&["weir", "run", "user-clicks", "--kafka"]).err().unwrap();
        assert_eq!(e.kind(), clap::error::ErrorKind::InvalidValue, "{e}");
    }
}
