//! The `weir` command: list, describe and (soon) run the registered
//! topologies, and benchmark the engine.

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
    }
}
