//! The `weir` command: list, describe and (soon) run the registered
//! topologies, and benchmark the engine.

mod bench;
mod scenarios;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "weir",
    version,
    about = "Kafka Streams-style stream processing: run, inspect and benchmark topologies"
)]
struct Cli {
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
    /// Measure throughput; see BENCHMARKS.md.
    Bench {
        #[command(subcommand)]
        workload: BenchWorkload,
    },
}

#[derive(Subcommand)]
enum BenchWorkload {
    /// Records through the topologies in-process (sled stores, write cache,
    /// no broker), next to a hand-written loop doing the same work.
    Engine {
        /// Number of input records per topology.
        #[arg(long, default_value_t = 5_000_000, value_parser = clap::value_parser!(u64).range(1..))]
        events: u64,
        /// Topologies to run (repeat the flag); default: user-clicks and emoji-stream.
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weir: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::List => {
            for s in scenarios::all() {
                println!("{:<22} {}", s.name, s.description);
            }
            Ok(())
        }
        Command::Describe { name } => {
            let s =
                scenarios::find(&name).ok_or_else(|| anyhow::anyhow!("unknown topology {name:?} (see `weir list`)"))?;
            let t = (s.build)()?;
            print!("{}", t.describe());
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
                    vec!["user-clicks".to_string(), "emoji-stream".to_string()]
                } else {
                    topologies
                };
                let opts = bench::EngineOptions {
                    events,
                    topologies,
                    commit_interval: std::time::Duration::from_millis(commit_interval_ms),
                    cache_max_bytes,
                };
                if !json {
                    eprintln!(
                        "weir bench engine: {events} events per topology (inputs are generated first, then timed)"
                    );
                }
                let results = bench::run_engine(&opts)?;
                if json {
                    for r in &results {
                        println!("{}", serde_json::to_string(r)?);
                    }
                } else {
                    bench::print_table(&results);
                }
                Ok(())
            }
        },
    }
}
